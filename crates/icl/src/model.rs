//! Linear self-attention models: `Z <- Z - (1/n) P Z M (Z^T Q Z)`, prediction `-Z[d, n]`.

use serde::{Deserialize, Serialize};
use tensor::ndarray::{ArrayD, IxDyn};
use tensor::optim::{Adam, AdamConfig, Optimizer};
use tensor::{Float, Params, Rng, Tensor, Var, check_loss, normal};

use crate::error::{Result, invalid};
use crate::task::{TaskConfig, sample};

/// Which weights a layer has.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Parameterization {
    /// `Q = [[A, 0], [0, 0]]`, `P = [[0, 0], [u^T, 1]]`: trainable `A` (d x d) and `u` (d) (P3).
    Restricted,
    /// Full `(d+1) x (d+1)` `P` and `Q` (P1).
    Unrestricted,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ModelConfig {
    pub d: usize,
    /// Layers used in training (a looped model can be run for any number of loops after).
    pub depth: usize,
    /// One set of weights applied `depth` times, instead of `depth` distinct layers.
    pub looped: bool,
    pub parameterization: Parameterization,
    /// Standard deviation of the (small) initial weights.
    pub init_std: f64,
}

impl ModelConfig {
    pub fn validate(&self) -> Result<()> {
        if self.d == 0 || self.depth == 0 {
            return Err(invalid(format!("d = {} and depth = {} must be at least 1", self.d, self.depth)));
        }
        if !(self.init_std.is_finite() && self.init_std >= 0.0) {
            return Err(invalid(format!("init_std must be finite and >= 0, got {}", self.init_std)));
        }
        Ok(())
    }
}

enum LayerVars<F: Float> {
    Restricted { a: Var<F>, u: Var<F> },
    Unrestricted { p: Var<F>, q: Var<F> },
}

/// A multilayer or looped LSA model whose weights live in `params` as `layers.<i>.{a,u}` or `layers.<i>.{p,q}`.
pub struct LsaModel<F: Float = f32> {
    pub config: ModelConfig,
    pub params: Params<F>,
    layers: Vec<LayerVars<F>>,
}

impl<F: Float> LsaModel<F> {
    /// A model with small random weights (or the weights already in `params` under the same names).
    pub fn new(config: &ModelConfig, params: &Params<F>, rng: &mut Rng) -> Result<Self> {
        config.validate()?;
        let d = config.d;
        let std = config.init_std;
        let count = if config.looped { 1 } else { config.depth };
        let layers = (0..count)
            .map(|i| {
                let p = params.root().sub("layers").sub(i);
                match config.parameterization {
                    Parameterization::Restricted => LayerVars::Restricted {
                        a: p.var("a", &[d, d], || normal(&[d, d], 0.0, std, rng)),
                        u: p.var("u", &[d], || normal(&[d], 0.0, std, rng)),
                    },
                    Parameterization::Unrestricted => LayerVars::Unrestricted {
                        p: p.var("p", &[d + 1, d + 1], || normal(&[d + 1, d + 1], 0.0, std, rng)),
                        q: p.var("q", &[d + 1, d + 1], || normal(&[d + 1, d + 1], 0.0, std, rng)),
                    },
                }
            })
            .collect();
        Ok(LsaModel { config: config.clone(), params: params.clone(), layers })
    }

    /// `(P, Q)` of the layer applied at step `l` (0-based).
    pub fn layer_pq(&self, l: usize) -> (Tensor<F>, Tensor<F>) {
        let d = self.config.d;
        let layer = &self.layers[if self.config.looped { 0 } else { l }];
        match layer {
            LayerVars::Unrestricted { p, q } => (p.tensor(), q.tensor()),
            LayerVars::Restricted { a, u } => {
                let zeros = |r, c| Tensor::zeros(&[r, c]);
                let q = Tensor::concat(&[&Tensor::concat(&[&a.tensor(), &zeros(d, 1)], 1), &zeros(1, d + 1)], 0);
                let last = Tensor::concat(&[&u.tensor().reshape(&[1, d]), &Tensor::ones(&[1, 1])], 1);
                let p = Tensor::concat(&[&zeros(d, d + 1), &last], 0);
                (p, q)
            }
        }
    }

    /// How many layers can be evaluated: any number for a looped model, at most `depth` otherwise.
    pub fn max_depth(&self) -> Option<usize> {
        (!self.config.looped).then_some(self.config.depth)
    }

    /// Token matrices after each of the first `depth` layers (`z: [batch, d+1, n+1]`).
    #[track_caller]
    pub fn forward_all(&self, z: &Tensor<F>, depth: usize) -> Vec<Tensor<F>> {
        assert!(
            self.max_depth().is_none_or(|m| depth <= m),
            "a multilayer model of depth {} run for {depth} layers",
            self.config.depth
        );
        assert_eq!(z.shape()[1], self.config.d + 1, "tokens {:?} for d = {}", z.shape(), self.config.d);
        let mut out = Vec::with_capacity(depth);
        let mut z = z.clone();
        for l in 0..depth {
            let (p, q) = self.layer_pq(l);
            z = lsa_layer_fused(&z, &p, &q);
            out.push(z.clone());
        }
        out
    }

    /// Query predictions `-Z_l[:, d, n]` after each of the first `depth` layers, each `[batch]`.
    pub fn predictions(&self, z: &Tensor<F>, depth: usize) -> Vec<Tensor<F>> {
        self.forward_all(z, depth).iter().map(|zl| read_out(zl)).collect()
    }

    /// The query prediction after `depth` layers, `[batch]`.
    pub fn predict(&self, z: &Tensor<F>, depth: usize) -> Tensor<F> {
        self.predictions(z, depth).pop().unwrap_or_else(|| Tensor::zeros(&[z.shape()[0]]))
    }

    /// `A` and `u` of a restricted layer (`None` for the unrestricted parameterization).
    pub fn restricted_weights(&self, layer: usize) -> Option<(ArrayD<F>, ArrayD<F>)> {
        match self.layers.get(layer)? {
            LayerVars::Restricted { a, u } => Some((a.value(), u.value())),
            LayerVars::Unrestricted { .. } => None,
        }
    }
}

/// One LSA layer: `Z - (1/n) P (Z M Z^T) Q Z`, which equals `Z - (1/n) P Z M (Z^T Q Z)` and costs
/// `O((d+1)^2 (n+1))` per prompt instead of `O((d+1) (n+1)^2)`.
pub fn lsa_layer<F: Float>(z: &Tensor<F>, p: &Tensor<F>, q: &Tensor<F>) -> Tensor<F> {
    let n1 = z.shape()[2];
    let n = (n1 - 1).max(1);
    let mask =
        Tensor::new(ArrayD::from_shape_fn(IxDyn(&[1, 1, n1]), |ix| if ix[2] + 1 < n1 { F::one() } else { F::zero() }));
    let zmzt = (z * &mask).matmul(&z.transpose(-2, -1));
    let update = p.matmul(&zmzt).matmul(q).matmul(z);
    z - &update.mul_scalar(F::of(1.0 / n as f64))
}

/// `-Z[:, d, n]`: the negated last entry of the query token.
pub fn read_out<F: Float>(z: &Tensor<F>) -> Tensor<F> {
    let (b, d1, n1) = (z.shape()[0], z.shape()[1], z.shape()[2]);
    z.narrow(1, d1 - 1, 1).narrow(2, n1 - 1, 1).reshape(&[b]).neg()
}

/// Training settings: Adam with gradient clipping, fresh prompts every step.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TrainConfig {
    pub steps: usize,
    pub batch: usize,
    pub lr: f64,
    /// Global gradient-norm clip (`None` for no clipping).
    pub clip: Option<f64>,
    /// Loop curriculum for looped models: the depth grows linearly from 1 to the model's depth over the
    /// first `curriculum` fraction of the steps (0 for none).
    pub curriculum: f64,
}

/// Trains `model` on prompts from `task`; returns the loss per step. A non-finite loss is an error naming
/// the step.
pub fn train<F: Float>(model: &LsaModel<F>, task: &TaskConfig, cfg: &TrainConfig, rng: &mut Rng) -> Result<Vec<f64>> {
    task.validate()?;
    if task.d != model.config.d {
        return Err(invalid(format!("task d = {} but model d = {}", task.d, model.config.d)));
    }
    if cfg.batch == 0 || !(cfg.lr.is_finite() && cfg.lr > 0.0) {
        return Err(invalid(format!("batch {} and lr {} must be positive", cfg.batch, cfg.lr)));
    }
    let mut opt = Adam::new(AdamConfig::adam(cfg.lr));
    let mut losses = Vec::with_capacity(cfg.steps);
    for step in 0..cfg.steps {
        let prompts = sample(task, cfg.batch, rng)?;
        let ramp = (cfg.curriculum * cfg.steps as f64).max(1.0);
        let depth = if model.config.looped && cfg.curriculum > 0.0 {
            (1 + (step as f64 / ramp * model.config.depth as f64) as usize).min(model.config.depth)
        } else {
            model.config.depth
        };
        let loss = model.predict(&prompts.tokens::<F>(), depth).mse(&prompts.targets::<F>());
        losses.push(check_loss(step as u64, loss.item().to_f64_lossy())?);
        let mut grads = loss.backward();
        if let Some(c) = cfg.clip {
            grads.clip_global_norm(c);
        }
        opt.step(&model.params, &grads);
    }
    Ok(losses)
}

/// The LSA layer as one fused op: `Z - (1/n) P (Z M Z^T) Q Z` for `z: [batch, d+1, n+1]`, forward and
/// backward written out for small matrices and run in parallel over prompts. Same value and gradients as
/// [`lsa_layer`] (tested), several times faster at these shapes. `P` and `Q` gradients are summed over
/// fixed blocks of prompts, so results do not depend on the thread count.
#[track_caller]
pub fn lsa_layer_fused<F: Float>(z: &Tensor<F>, p: &Tensor<F>, q: &Tensor<F>) -> Tensor<F> {
    use tensor::rayon::prelude::*;
    assert_eq!(z.ndim(), 3, "lsa_layer_fused: tokens {:?} must be [batch, d+1, n+1]", z.shape());
    let (b, d1, n1) = (z.shape()[0], z.shape()[1], z.shape()[2]);
    assert!(
        p.shape() == [d1, d1] && q.shape() == [d1, d1],
        "lsa_layer_fused: P {:?}, Q {:?} for d+1 = {d1}",
        p.shape(),
        q.shape()
    );
    let inv_n = F::of(1.0 / (n1 - 1).max(1) as f64);
    let zv = z.value().as_standard_layout().into_owned();
    let (pv, qv) = (p.value().as_standard_layout().into_owned(), q.value().as_standard_layout().into_owned());
    let (ps, qs) = (pv.as_slice().expect("standard").to_vec(), qv.as_slice().expect("standard").to_vec());
    let per = d1 * n1;
    let zs = zv.as_slice().expect("standard");
    let mut out = vec![F::zero(); zs.len()];
    // G, P G and H of every prompt, kept for the backward pass.
    let cached = 3 * d1 * d1;
    let mut cache = vec![F::zero(); b * cached];
    out.par_chunks_mut(per)
        .zip(zs.par_chunks(per))
        .zip(cache.par_chunks_mut(cached))
        .for_each(|((o, zb), c)| lsa_forward(zb, &ps, &qs, d1, n1, inv_n, o, c));
    let value = ArrayD::from_shape_vec(IxDyn(&[b, d1, n1]), out).expect("size");
    Tensor::custom_op(value, &[z, p, q], move |g, needs| {
        let zs = zv.as_slice().expect("standard");
        let g = g.as_standard_layout();
        let gs = g.as_slice().expect("standard");
        const BLOCK: usize = 16;
        let (pt, qt) = (transpose(&ps, d1), transpose(&qs, d1));
        // Per block of prompts: (dZ of the block, dP, dQ).
        let parts: Vec<(Vec<F>, Vec<F>, Vec<F>)> = zs
            .par_chunks(per * BLOCK)
            .zip(gs.par_chunks(per * BLOCK))
            .zip(cache.par_chunks(cached * BLOCK))
            .map(|((zblock, gblock), cblock)| {
                let mut dz = vec![F::zero(); zblock.len()];
                let mut dp = vec![F::zero(); d1 * d1];
                let mut dq = vec![F::zero(); d1 * d1];
                let prompts = zblock.chunks(per).zip(gblock.chunks(per)).zip(cblock.chunks(cached));
                for (((zb, gb), cb), dzb) in prompts.zip(dz.chunks_mut(per)) {
                    lsa_backward(zb, gb, cb, (&pt, &qt), d1, n1, inv_n, dzb, &mut dp, &mut dq);
                }
                (dz, dp, dq)
            })
            .collect();
        let mut dz = Vec::with_capacity(zs.len());
        let mut dp = vec![F::zero(); d1 * d1];
        let mut dq = vec![F::zero(); d1 * d1];
        for (z_part, p_part, q_part) in parts {
            dz.extend_from_slice(&z_part);
            add_into(&mut dp, &p_part);
            add_into(&mut dq, &q_part);
        }
        vec![
            needs[0].then(|| ArrayD::from_shape_vec(IxDyn(&[b, d1, n1]), dz).expect("size")),
            needs[1].then(|| ArrayD::from_shape_vec(IxDyn(&[d1, d1]), dp).expect("size")),
            needs[2].then(|| ArrayD::from_shape_vec(IxDyn(&[d1, d1]), dq).expect("size")),
        ]
    })
}

/// Forward of one prompt: `o = Z - (1/n) H Z`, as row updates (axpy over the tokens vectorises; a dot
/// product would not).
#[allow(clippy::too_many_arguments)]
fn lsa_forward<F: Float>(zb: &[F], p: &[F], q: &[F], d1: usize, n1: usize, inv_n: F, o: &mut [F], cache: &mut [F]) {
    let g = lsa_g(zb, d1, n1);
    let pg = small_mm(p, &g, d1);
    let h = small_mm(&pg, q, d1);
    o.copy_from_slice(zb);
    for i in 0..d1 {
        let row = &mut o[i * n1..(i + 1) * n1];
        for k in 0..d1 {
            let w = inv_n * h[i * d1 + k];
            row.iter_mut().zip(&zb[k * n1..(k + 1) * n1]).for_each(|(r, &z)| *r -= w * z);
        }
    }
    let dd = d1 * d1;
    cache[..dd].copy_from_slice(&g);
    cache[dd..2 * dd].copy_from_slice(&pg);
    cache[2 * dd..].copy_from_slice(&h);
}

/// `G = Z M Z^T` (the query column excluded) of one prompt, row-major `d1 x d1`.
fn lsa_g<F: Float>(zb: &[F], d1: usize, n1: usize) -> Vec<F> {
    let mut g = vec![F::zero(); d1 * d1];
    for i in 0..d1 {
        for j in 0..=i {
            let s = dot(&zb[i * n1..i * n1 + n1 - 1], &zb[j * n1..j * n1 + n1 - 1]);
            g[i * d1 + j] = s;
            g[j * d1 + i] = s;
        }
    }
    g
}

/// Dot product with eight independent accumulators, so the compiler can vectorise it (a single running
/// sum is a serial dependency chain). The summation order is fixed, so results are reproducible.
#[inline]
fn dot<F: Float>(a: &[F], b: &[F]) -> F {
    let mut acc = [F::zero(); 8];
    let (ca, cb) = (a.chunks_exact(8), b.chunks_exact(8));
    let (ra, rb) = (ca.remainder(), cb.remainder());
    for (x, y) in ca.zip(cb) {
        for l in 0..8 {
            acc[l] += x[l] * y[l];
        }
    }
    let mut s = ((acc[0] + acc[4]) + (acc[1] + acc[5])) + ((acc[2] + acc[6]) + (acc[3] + acc[7]));
    for (&x, &y) in ra.iter().zip(rb) {
        s += x * y;
    }
    s
}

fn add_into<F: Float>(acc: &mut [F], x: &[F]) {
    acc.iter_mut().zip(x).for_each(|(a, &b)| *a += b);
}

fn transpose<F: Float>(a: &[F], d: usize) -> Vec<F> {
    (0..d * d).map(|ij| a[(ij % d) * d + ij / d]).collect()
}

fn small_mm<F: Float>(a: &[F], b: &[F], d: usize) -> Vec<F> {
    let mut c = vec![F::zero(); d * d];
    for i in 0..d {
        for k in 0..d {
            let aik = a[i * d + k];
            for j in 0..d {
                c[i * d + j] += aik * b[k * d + j];
            }
        }
    }
    c
}

/// Backward of one prompt from its cached `G`, `P G`, `H`: adds into `dz` (this prompt's slot), `dp` and `dq`.
#[allow(clippy::too_many_arguments)]
fn lsa_backward<F: Float>(
    zb: &[F],
    gb: &[F],
    cache: &[F],
    transposes: (&[F], &[F]),
    d1: usize,
    n1: usize,
    inv_n: F,
    dz: &mut [F],
    dp: &mut [F],
    dq: &mut [F],
) {
    let dd = d1 * d1;
    let (g, pg, h) = (&cache[..dd], &cache[dd..2 * dd], &cache[2 * dd..]);
    // Y = Z - (1/n) H Z: dZ = dY - (1/n) H^T dY, dH = -(1/n) dY Z^T.
    dz.copy_from_slice(gb);
    for k in 0..d1 {
        for i in 0..d1 {
            let hik = h[i * d1 + k] * inv_n;
            for c in 0..n1 {
                dz[k * n1 + c] -= hik * gb[i * n1 + c];
            }
        }
    }
    let mut dh = vec![F::zero(); d1 * d1];
    for i in 0..d1 {
        for k in 0..d1 {
            let s = dot(&gb[i * n1..(i + 1) * n1], &zb[k * n1..(k + 1) * n1]);
            dh[i * d1 + k] = -inv_n * s;
        }
    }
    // H = (P G) Q: dQ += (P G)^T dH = G P^T dH (G symmetric), d(PG) = dH Q^T.
    let (pt, qt) = transposes;
    let pgt = transpose(pg, d1);
    add_into(dq, &small_mm(&pgt, &dh, d1));
    let dpg = small_mm(&dh, qt, d1);
    // PG = P G: dP += d(PG) G^T = d(PG) G, dG = P^T d(PG).
    add_into(dp, &small_mm(&dpg, g, d1));
    let dg = small_mm(pt, &dpg, d1);
    // G = Zm Z^T: dZ[i, c] += sum_j (dG[i, j] + dG[j, i]) Z[j, c] for the example columns c < n.
    for i in 0..d1 {
        for j in 0..d1 {
            let w = dg[i * d1 + j] + dg[j * d1 + i];
            for c in 0..n1 - 1 {
                dz[i * n1 + c] += w * zb[j * n1 + c];
            }
        }
    }
}
