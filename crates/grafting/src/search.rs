//! Learning a mask (P8's optimisation): gradient steps on the relaxation's scores through the grafted model,
//! rounding after every step (keeping at most as many coordinates as the starting mask, so the region's size is
//! the budget it was given) and keeping the best binary mask by training accuracy (then training loss).

use data::text::Labelled;
use serde::{Deserialize, Serialize};

use crate::mask::{Mask, Weights, set_weights};
use crate::model::{Classifier, region_gradient};
use crate::relax::Relaxation;
use crate::{Error, Result};

/// How a mask is learned.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SearchConfig {
    /// Gradient steps on the scores.
    pub steps: usize,
    /// Plain step size on the scores (large: `sigmoid'(S - b)` is about 5e-5 at the start; P8 uses 1e7 for
    /// RoBERTa's deltas).
    pub lr: f32,
    /// `b` in `sigmoid(S - b)`.
    pub bias: f32,
    /// Examples per forward/backward chunk (the gradient is over the whole training set).
    pub batch: usize,
}

impl SearchConfig {
    pub fn validate(&self) -> Result<()> {
        if self.batch == 0 || !(self.lr > 0.0 && self.lr.is_finite()) || !self.bias.is_finite() {
            return Err(Error::Config(format!(
                "mask search: batch {} > 0, lr {} > 0, finite bias",
                self.batch, self.lr
            )));
        }
        Ok(())
    }
}

/// One step of a search: the rounded mask's size and training numbers.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SearchPoint {
    pub step: usize,
    pub selected: usize,
    pub train_accuracy: f64,
    pub train_loss: f64,
    /// Loss of the relaxed (continuous) model, whose gradient made this step.
    pub relaxed_loss: f64,
}

/// The best mask found and the trace.
#[derive(Debug, Clone)]
pub struct Search {
    pub best: Mask,
    pub best_step: usize,
    pub trace: Vec<SearchPoint>,
}

/// Learns a mask starting from `base` on `train`. Leaves the model holding `pre` grafted with the best mask.
pub fn learn_mask(
    model: &Classifier,
    pre: &Weights,
    ft: &Weights,
    base: &Mask,
    train: &[Labelled],
    cfg: &SearchConfig,
    rng: &mut tensor::Rng,
) -> Result<Search> {
    cfg.validate()?;
    let score = |mask: &Mask| -> Result<(f64, f64)> {
        set_weights(&model.encoder.params, &mask.graft(pre, ft)?)?;
        let e = model.evaluate(train, cfg.batch)?;
        let (loss, _) = tensor::no_grad(|| -> Result<(f64, ())> {
            let refs: Vec<&Labelled> = train.iter().collect();
            Ok((model.loss(&refs)?.item() as f64, ()))
        })?;
        Ok((e.accuracy, loss))
    };
    let (acc, loss) = score(base)?;
    let mut trace = vec![SearchPoint {
        step: 0,
        selected: base.count(),
        train_accuracy: acc,
        train_loss: loss,
        relaxed_loss: loss,
    }];
    let mut best = (base.clone(), 0usize, acc, loss);
    let mut relax = Relaxation::new(base, cfg.bias, rng);
    for step in 1..=cfg.steps {
        set_weights(&model.encoder.params, &relax.grafted(pre, ft)?)?;
        let (relaxed_loss, theta_grad) = region_gradient(model, train, cfg.batch)?;
        if !relaxed_loss.is_finite() {
            return Err(Error::Config(format!("mask search diverged at step {step}: loss {relaxed_loss}")));
        }
        let g = relax.score_gradient(&theta_grad, pre, ft)?;
        relax.step(&g, cfg.lr);
        let mask = relax.rounded_within(base.count());
        let (acc, loss) = score(&mask)?;
        trace.push(SearchPoint { step, selected: mask.count(), train_accuracy: acc, train_loss: loss, relaxed_loss });
        if acc > best.2 || (acc == best.2 && loss < best.3) {
            best = (mask, step, acc, loss);
        }
    }
    set_weights(&model.encoder.params, &best.0.graft(pre, ft)?)?;
    Ok(Search { best: best.0, best_step: best.1, trace })
}
