//! The sigmoid relaxation of a mask (P8): `gamma = base + (1 - 2 base) * sigmoid(S - b)`, with `base` a binary
//! starting mask (top-|delta|), `S ~ U[0, 1)` and `b` large (10), so gamma starts at `base` to within
//! `sigmoid(1 - b)`. The grafted model `theta = pre + gamma * delta` is differentiable in `S`:
//! `dL/dS = dL/dtheta * delta * (1 - 2 base) * sigmoid'(S - b)`, so one backward pass through the model (its
//! ordinary parameter gradients) gives the step. After each step, gamma rounded at 1/2 (within the size budget) is
//! a binary mask.

use tensor::ndarray::{ArrayD, Zip};

use crate::mask::{Mask, Weights};
use crate::{Error, Result};

/// A relaxed mask being optimised.
#[derive(Debug, Clone)]
pub struct Relaxation {
    pub base: Weights,
    pub scores: Weights,
    pub bias: f32,
}

fn sigmoid(x: f32) -> f32 {
    1.0 / (1.0 + (-x).exp())
}

impl Relaxation {
    /// Starts from `base` with scores drawn from U[0, 1) and bias `b`.
    pub fn new(base: &Mask, bias: f32, rng: &mut tensor::Rng) -> Relaxation {
        let base = base.to_dense();
        let scores = base.iter().map(|(n, b)| (n.clone(), tensor::uniform::<f32>(b.shape(), 0.0, 1.0, rng))).collect();
        Relaxation { base, scores, bias }
    }

    /// The current gamma, per parameter.
    pub fn gamma(&self) -> Weights {
        self.base
            .iter()
            .map(|(n, base)| {
                let g = Zip::from(base)
                    .and(&self.scores[n])
                    .map_collect(|&b, &s| b + (1.0 - 2.0 * b) * sigmoid(s - self.bias));
                (n.clone(), g)
            })
            .collect()
    }

    /// `pre + gamma * (ft - pre)`.
    pub fn grafted(&self, pre: &Weights, ft: &Weights) -> Result<Weights> {
        let gamma = self.gamma();
        let mut out = Weights::new();
        for (n, g) in &gamma {
            let (p, f) = match (pre.get(n), ft.get(n)) {
                (Some(p), Some(f)) if p.shape() == g.shape() && f.shape() == g.shape() => (p, f),
                _ => return Err(Error::Config(format!("`{n}`: missing or misshapen in the weights"))),
            };
            out.insert(n.clone(), Zip::from(p).and(f).and(g).map_collect(|&p, &f, &g| p + g * (f - p)));
        }
        Ok(out)
    }

    /// `dL/dS` from `dL/dtheta` (the model's gradients at the grafted weights), per parameter.
    pub fn score_gradient(&self, theta_grad: &Weights, pre: &Weights, ft: &Weights) -> Result<Weights> {
        let mut out = Weights::new();
        for (n, base) in &self.base {
            let g = theta_grad.get(n).ok_or_else(|| Error::Config(format!("no gradient for `{n}`")))?;
            let d: ArrayD<f32> = &ft[n] - &pre[n];
            let s = &self.scores[n];
            let grad = Zip::from(g).and(&d).and(base).and(s).map_collect(|&g, &d, &b, &s| {
                let sig = sigmoid(s - self.bias);
                g * d * (1.0 - 2.0 * b) * sig * (1.0 - sig)
            });
            out.insert(n.clone(), grad);
        }
        Ok(out)
    }

    /// `S -= lr * dL/dS`.
    pub fn step(&mut self, score_grad: &Weights, lr: f32) {
        for (n, s) in self.scores.iter_mut() {
            if let Some(g) = score_grad.get(n) {
                s.zip_mut_with(g, |s, &g| *s -= lr * g);
            }
        }
    }

    /// gamma rounded at 1/2.
    pub fn rounded(&self) -> Mask {
        Mask::from_dense(&self.gamma())
    }

    /// gamma rounded at 1/2, keeping at most `budget` coordinates: the constraint `||gamma||_0 <= s` of P8's
    /// definition. Base coordinates still at or above 1/2 are kept first; coordinates that joined fill the slots
    /// left, largest gamma first (ties by name, then index). So the mask changes only by exchanging base
    /// coordinates that the gradient pushed out for new ones it pulled in.
    pub fn rounded_within(&self, budget: usize) -> Mask {
        let gamma = self.gamma();
        let names: Vec<&String> = gamma.keys().collect();
        // (base?, gamma, name index, flat index), best first.
        let mut kept: Vec<(bool, f32, usize, usize)> = Vec::new();
        for (ni, (n, g)) in gamma.iter().enumerate() {
            let base = &self.base[n];
            kept.extend(
                g.iter()
                    .zip(base.iter())
                    .enumerate()
                    .filter(|(_, (v, _))| **v >= 0.5)
                    .map(|(i, (&v, &b))| (b > 0.5, v, ni, i)),
            );
        }
        if kept.len() > budget {
            let order = |a: &(bool, f32, usize, usize), b: &(bool, f32, usize, usize)| {
                b.0.cmp(&a.0).then(b.1.total_cmp(&a.1)).then((a.2, a.3).cmp(&(b.2, b.3)))
            };
            if budget > 0 {
                kept.select_nth_unstable_by(budget - 1, order);
            }
            kept.truncate(budget);
        }
        let mut mask = Mask::default();
        for (n, g) in &gamma {
            mask.regions.insert(n.clone(), (g.shape().to_vec(), Vec::new()));
        }
        for (_, _, ni, i) in kept {
            mask.regions.get_mut(names[ni]).expect("listed").1.push(i);
        }
        mask.regions.values_mut().for_each(|(_, idx)| idx.sort_unstable());
        mask
    }
}
