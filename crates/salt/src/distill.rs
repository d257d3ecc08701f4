//! The distillation objective: `(1 - w) CE(labels, student) + w tau^2 CE(softmax(teacher / tau), softmax(student / tau))`
//! with a weight `w` that follows a [`KdSchedule`] over steps.

use serde::{Deserialize, Serialize};
use tensor::{Float, Tensor};

use crate::{Error, Result};

/// The distillation weight `w` as a function of the step.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case", deny_unknown_fields)]
pub enum KdSchedule {
    /// No distillation: plain cross-entropy (the baseline; the teacher is never run).
    Off,
    /// The same weight at every step (distillation for the whole run).
    Constant { weight: f64 },
    /// `weight` for steps `< until`, then 0 (SALT's two phases with a step transition).
    Step { weight: f64, until: u64 },
    /// `weight` for steps `< from`, then linearly down to 0 at `until`, 0 after (an annealed transition).
    Linear { weight: f64, from: u64, until: u64 },
}

impl KdSchedule {
    /// The weight at step `step` (0-based).
    pub fn weight(&self, step: u64) -> f64 {
        match *self {
            KdSchedule::Off => 0.0,
            KdSchedule::Constant { weight } => weight,
            KdSchedule::Step { weight, until } => {
                if step < until {
                    weight
                } else {
                    0.0
                }
            }
            KdSchedule::Linear { weight, from, until } => {
                if step < from {
                    weight
                } else if step >= until {
                    0.0
                } else {
                    weight * (until - step) as f64 / (until - from) as f64
                }
            }
        }
    }

    /// Steps (of a run of `total`) on which the teacher runs (weight above 0).
    pub fn kd_steps(&self, total: u64) -> u64 {
        (0..total).filter(|&s| self.weight(s) > 0.0).count() as u64
    }

    pub fn validate(&self) -> Result<()> {
        let weight = match *self {
            KdSchedule::Off => return Ok(()),
            KdSchedule::Constant { weight } | KdSchedule::Step { weight, .. } => weight,
            KdSchedule::Linear { weight, from, until } => {
                if until <= from {
                    return Err(Error::Config(format!("linear KD schedule: until {until} must exceed from {from}")));
                }
                weight
            }
        };
        if !(0.0..=1.0).contains(&weight) {
            return Err(Error::Config(format!("KD weight {weight} outside [0, 1]")));
        }
        Ok(())
    }
}

/// Distillation settings.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DistillConfig {
    pub schedule: KdSchedule,
    /// Softmax temperature `tau` of both teacher and student in the distillation term.
    pub temperature: f64,
}

impl DistillConfig {
    pub fn validate(&self) -> Result<()> {
        self.schedule.validate()?;
        if !(self.temperature > 0.0 && self.temperature.is_finite()) {
            return Err(Error::Config(format!("temperature {} must be positive and finite", self.temperature)));
        }
        Ok(())
    }
}

/// `(1 - weight) CE(targets, logits) + weight tau^2 CE(softmax(teacher / tau), softmax(logits / tau))` for
/// `[rows, vocab]` logits; the teacher gets no gradient. At `weight` 0 this is exactly the cross-entropy (the
/// distillation term is not computed) and at 1 exactly the distillation term.
pub fn mixed_loss<F: Float>(
    logits: &Tensor<F>,
    targets: &[usize],
    teacher_logits: &Tensor<F>,
    weight: f64,
    temperature: f64,
) -> Tensor<F> {
    if weight == 0.0 {
        return logits.cross_entropy(targets);
    }
    let kd = logits.distillation_loss(teacher_logits, temperature);
    if weight == 1.0 {
        return kd;
    }
    logits.cross_entropy(targets).mul_scalar(F::of(1.0 - weight)).add(&kd.mul_scalar(F::of(weight)))
}
