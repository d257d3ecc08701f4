//! RaPTr (P6): progressive subnetworks. The whole model is kept; every step trains a random path of its layers
//! (skipped layers are the identity on the residual stream and get no gradient, so Adam neither moves nor decays
//! them), and the path length grows in stages. The full, unscaled model is what is evaluated.

use rand::RngExt;
use serde::{Deserialize, Serialize};
use train::lm::LmObjective;
use train::{Hook, Optimizer};

use crate::schedule::StageLengths;
use crate::{Error, Result};

/// How a step's path is drawn.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum PathSampler {
    /// Exactly the stage's path length: a uniform subset of the candidate layers (RaPTr).
    FixedSize,
    /// Each candidate layer kept independently with the stage's keep probability (layer dropping); the length
    /// varies around the stage's.
    Bernoulli,
}

/// How kept layers' residual branches are scaled during training.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum PathScaling {
    /// Unscaled: a kept layer computes exactly what it does in the full model.
    None,
    /// By `1 / keep probability` (stochastic depth's inverse rule): each layer's expected contribution to the
    /// residual stream equals its full-model contribution, so the full model evaluated later sees the stream
    /// scale it was trained for. Always-kept layers get 1. This is the rule Strata uses as RaPTr's default; the
    /// paper's own rule could not be checked here (no public code) and is not offered under its name.
    InverseKeep,
}

/// A RaPTr schedule as data.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RaptrConfig {
    /// Layers of the (whole) model.
    pub n_layers: usize,
    /// Path length of each stage, increasing; the last is usually `n_layers` (the full model).
    pub path_lengths: Vec<usize>,
    /// How steps are split between stages (`PropAlpha { alpha: 0 }`: equal stages, the paper's choice).
    pub lengths: StageLengths,
    pub sampler: PathSampler,
    /// Keep the first and last layers on every path (the paper's choice).
    pub keep_first_last: bool,
    pub scaling: PathScaling,
    /// Seed of the per-step path streams (a path is a function of `(seed, step)`, so a resumed run draws the same).
    pub seed: u64,
}

/// A [`RaptrConfig`] resolved for a run length.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RaptrPlan {
    pub config: RaptrConfig,
    /// Start step of each stage.
    pub starts: Vec<u64>,
}

impl RaptrConfig {
    pub fn plan(&self, total_steps: u64) -> Result<RaptrPlan> {
        let (l, k) = (self.n_layers, self.path_lengths.len());
        let min = if self.keep_first_last { 2.min(l) } else { 1 };
        let ok = l > 0
            && k > 0
            && self.path_lengths.windows(2).all(|w| w[0] < w[1])
            && self.path_lengths.iter().all(|&p| p >= min && p <= l);
        if !ok {
            return Err(Error::Config(format!(
                "path lengths {:?} must increase within [{min}, {l}] for a {l}-layer model",
                self.path_lengths
            )));
        }
        Ok(RaptrPlan { config: self.clone(), starts: self.lengths.starts(k, total_steps)? })
    }
}

impl RaptrPlan {
    pub fn stage_at(&self, step: u64) -> usize {
        self.starts.iter().rposition(|&s| s <= step).unwrap_or(0)
    }

    /// The layers a path may leave out, and those it always keeps.
    fn candidates(&self) -> (Vec<usize>, Vec<usize>) {
        let l = self.config.n_layers;
        if self.config.keep_first_last && l >= 2 {
            ((1..l - 1).collect(), vec![0, l - 1])
        } else {
            ((0..l).collect(), Vec::new())
        }
    }

    /// Keep probability of each layer in stage `stage` (1 for always-kept layers).
    pub fn keep_probabilities(&self, stage: usize) -> Vec<f64> {
        let (candidates, fixed) = self.candidates();
        let len = self.config.path_lengths[stage];
        let p = if candidates.is_empty() { 1.0 } else { (len - fixed.len()) as f64 / candidates.len() as f64 };
        (0..self.config.n_layers).map(|i| if fixed.contains(&i) { 1.0 } else { p }).collect()
    }

    /// The path `(layer, scale)` of step `step`, in layer order.
    pub fn path_at(&self, step: u64) -> Vec<(usize, f64)> {
        let stage = self.stage_at(step);
        let probs = self.keep_probabilities(stage);
        let (mut candidates, fixed) = self.candidates();
        let mut rng = tensor::derived(self.config.seed ^ 0x5241_5054, step);
        let mut kept = fixed;
        match self.config.sampler {
            PathSampler::FixedSize => {
                let take = self.config.path_lengths[stage] - kept.len();
                for i in 0..take {
                    let j = rng.random_range(i..candidates.len());
                    candidates.swap(i, j);
                }
                kept.extend(&candidates[..take]);
            }
            PathSampler::Bernoulli => kept.extend(candidates.into_iter().filter(|&c| rng.random::<f64>() < probs[c])),
        }
        kept.sort_unstable();
        kept.into_iter()
            .map(|l| {
                let scale = match self.config.scaling {
                    PathScaling::None => 1.0,
                    PathScaling::InverseKeep => 1.0 / probs[l],
                };
                (l, scale)
            })
            .collect()
    }

    /// Expected layers run per step in stage `stage` (for FLOP estimates; the trainer counts the actual ones).
    pub fn expected_path_length(&self, stage: usize) -> f64 {
        self.keep_probabilities(stage).iter().sum()
    }
}

/// Sets the LM objective's training path before every step (and clears it when the path is the full unscaled
/// model). Stateless, so a resumed run draws the same paths.
#[derive(Debug, Clone)]
pub struct RaptrHook {
    pub plan: RaptrPlan,
}

impl Hook<LmObjective> for RaptrHook {
    fn before_step(&mut self, step: u64, objective: &mut LmObjective, _: &mut dyn Optimizer<f32>) -> train::Result<()> {
        if objective.model.n_layers() != self.plan.config.n_layers {
            return Err(train::Error::Config(format!(
                "RaPTr plan for {} layers on a {}-layer model",
                self.plan.config.n_layers,
                objective.model.n_layers()
            )));
        }
        let path = self.plan.path_at(step);
        let full = path.len() == self.plan.config.n_layers && path.iter().all(|&(_, s)| s == 1.0);
        objective.path = if full { None } else { Some(path) };
        Ok(())
    }
}
