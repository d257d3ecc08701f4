//! When a model grows: stages of increasing depth and the step at which each starts.

use serde::{Deserialize, Serialize};

use crate::operators::{MomentPolicy, Operator};
use crate::{Error, Result};

/// How the training steps are split between stages.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case", deny_unknown_fields)]
pub enum StageLengths {
    /// Stage `i` (1-based) gets steps in proportion to `i^alpha` (P4's Prop-alpha; alpha 0 is equal stages).
    PropAlpha { alpha: f64 },
    /// Explicit start steps of stages 2, 3, ... (stage 1 starts at 0).
    Starts { starts: Vec<u64> },
}

/// A growth plan as data: the depth of each stage, how steps are split between stages, and how each growth
/// is done.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct GrowthConfig {
    /// Layers in each stage, increasing (`[2, 4, 6]`); the model starts with the first.
    pub stage_layers: Vec<usize>,
    pub lengths: StageLengths,
    pub operator: Operator,
    /// Layers added per operator application (a stage that adds `k * block` layers applies it `k` times).
    pub block: usize,
    pub moments: MomentPolicy,
    /// Seed of freshly initialised layers.
    pub seed: u64,
}

/// A plan resolved against a run's length: the step at which each stage starts.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct GrowthPlan {
    pub config: GrowthConfig,
    /// `starts[i]`: steps completed when stage `i` begins (`starts[0] = 0`).
    pub starts: Vec<u64>,
    pub total_steps: u64,
}

impl GrowthConfig {
    /// Resolves the stage starts for a run of `total_steps`.
    pub fn plan(&self, total_steps: u64) -> Result<GrowthPlan> {
        let k = self.stage_layers.len();
        let bad = |m: String| Err(Error::Config(m));
        if k == 0 || self.stage_layers[0] == 0 || self.block == 0 {
            return bad(format!("stage_layers {:?} and block {} must be positive", self.stage_layers, self.block));
        }
        for w in self.stage_layers.windows(2) {
            if w[1] <= w[0] || (w[1] - w[0]) % self.block != 0 || self.block > w[0] {
                return bad(format!(
                    "stage_layers {:?}: each stage must add a positive multiple of block {} to a model at least that deep",
                    self.stage_layers, self.block
                ));
            }
        }
        let starts = self.lengths.starts(k, total_steps)?;
        Ok(GrowthPlan { config: self.clone(), starts, total_steps })
    }
}

impl StageLengths {
    /// The start step of each of `k` stages in a run of `total_steps` (the first is 0).
    pub fn starts(&self, k: usize, total_steps: u64) -> Result<Vec<u64>> {
        let bad = |m: String| Err(Error::Config(m));
        let starts = match self {
            StageLengths::PropAlpha { alpha } => {
                if !alpha.is_finite() || *alpha < 0.0 {
                    return bad(format!("alpha {alpha} must be finite and non-negative"));
                }
                let lengths = prop_alpha_lengths(k, *alpha, total_steps);
                lengths.iter().scan(0, |acc, l| Some(std::mem::replace(acc, *acc + l))).collect()
            }
            StageLengths::Starts { starts } => {
                let all: Vec<u64> = std::iter::once(0).chain(starts.iter().copied()).collect();
                if all.len() != k || all.windows(2).any(|w| w[1] <= w[0]) || all[k - 1] >= total_steps {
                    return bad(format!(
                        "{k} stages need {} increasing starts below {total_steps}, got {starts:?}",
                        k - 1
                    ));
                }
                all
            }
        };
        if starts.windows(2).any(|w| w[1] <= w[0]) {
            return bad(format!("{total_steps} steps are too few for {k} stages ({starts:?})"));
        }
        Ok(starts)
    }
}

/// Stage lengths proportional to `i^alpha` (i = 1..=k) summing exactly to `total` (largest remainders get the
/// leftover steps).
pub fn prop_alpha_lengths(k: usize, alpha: f64, total: u64) -> Vec<u64> {
    let weights: Vec<f64> = (1..=k).map(|i| (i as f64).powf(alpha)).collect();
    let sum: f64 = weights.iter().sum();
    let exact: Vec<f64> = weights.iter().map(|w| w / sum * total as f64).collect();
    let mut lengths: Vec<u64> = exact.iter().map(|e| e.floor() as u64).collect();
    let mut order: Vec<usize> = (0..k).collect();
    order.sort_by(|&a, &b| (exact[b] - exact[b].floor()).total_cmp(&(exact[a] - exact[a].floor())).then(a.cmp(&b)));
    let short = total - lengths.iter().sum::<u64>();
    for &i in order.iter().take(short as usize) {
        lengths[i] += 1;
    }
    lengths
}

impl GrowthPlan {
    /// The stage a run is in after `step` steps.
    pub fn stage_at(&self, step: u64) -> usize {
        self.starts.iter().rposition(|&s| s <= step).unwrap_or(0)
    }

    /// The depth of the model while it runs step `step + 1`.
    pub fn layers_at(&self, step: u64) -> usize {
        self.config.stage_layers[self.stage_at(step)]
    }

    /// The stage that begins exactly when `step` steps are done, if any (never stage 0).
    pub fn stage_starting_at(&self, step: u64) -> Option<usize> {
        self.starts.iter().skip(1).position(|&s| s == step).map(|i| i + 1)
    }
}
