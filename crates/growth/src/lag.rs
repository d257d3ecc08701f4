//! LAG (P5): choose the growth operator by the loss after a short lag. Each operator of a pool grows an
//! independent fork of the run (weights deep-copied, optimizer state and data position copied), each fork trains
//! for `pick_lag` steps on the run's own schedule, and the operator whose fork has the lowest validation loss
//! then is applied to the run. [`run_adaptive`] does this at every stage of a [`GrowthPlan`] (adaptive gradual
//! stacking) and counts the candidates' training FLOPs in the run's compute.

use serde::{Deserialize, Serialize};
use train::lm::LmObjective;
use train::{TrainReport, Trainer};

use crate::operators::{MomentPolicy, Operator, grow};
use crate::schedule::GrowthPlan;
use crate::{Error, Result};

/// LAG settings.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LagConfig {
    /// The pool of growth operators.
    pub operators: Vec<Operator>,
    /// The lag (steps after growing) whose validation loss ranks the candidates; 0 ranks by function
    /// preservation alone.
    pub pick_lag: u64,
    pub moments: MomentPolicy,
    /// Seed of fresh layers (the `g`-th growth of stage `s` uses `seed ^ (s << 32 | g)`, as the growth hook does).
    pub seed: u64,
}

/// One grown fork.
#[derive(Debug)]
pub struct Candidate {
    pub operator: Operator,
    /// The fork's trainer, at the last lag it was trained to.
    pub trainer: Trainer<LmObjective>,
    /// `(steps after growing, validation loss)` at each recorded lag.
    pub losses: Vec<(u64, f64)>,
}

impl Candidate {
    pub fn loss_at(&self, lag: u64) -> Option<f64> {
        self.losses.iter().find(|(k, _)| *k == lag).map(|(_, l)| *l)
    }
}

/// Grows `model` by `growths` blocks of `block` layers with `operator` (renaming the optimizer state along).
fn grow_by(
    objective: &mut LmObjective,
    state: &mut tensor::OptimizerState<f32>,
    operator: Operator,
    block: usize,
    growths: usize,
    moments: MomentPolicy,
    stage: usize,
    seed: u64,
) -> Result<()> {
    for g in 0..growths {
        let seed = seed ^ ((stage as u64) << 32 | g as u64);
        grow(&mut objective.model, state, operator, block, moments, seed)?;
    }
    Ok(())
}

/// One fork of `run` per operator, grown by `growths` blocks of `block` layers, each trained for the largest of
/// `lags` steps (continuing `run`'s step count, so its learning-rate schedule), with the validation loss recorded
/// at every lag (0: right after growing). Forks share no storage with `run` or with each other.
pub fn grow_candidates(
    run: &Trainer<LmObjective>,
    cfg: &LagConfig,
    stage: usize,
    block: usize,
    growths: usize,
    lags: &[u64],
) -> Result<Vec<Candidate>> {
    let longest = lags.iter().copied().max().unwrap_or(0);
    if run.step_count() + longest >= run.config.steps || cfg.operators.is_empty() {
        return Err(Error::Config(format!(
            "a lag of {longest} steps from step {} does not fit a {}-step run, or the operator pool is empty",
            run.step_count(),
            run.config.steps
        )));
    }
    let mut out = Vec::with_capacity(cfg.operators.len());
    for &operator in &cfg.operators {
        let mut objective = run.objective.fork();
        let mut optimizer = run.config.optimizer.build();
        *optimizer.state_mut() = run.optimizer.state().clone();
        grow_by(&mut objective, optimizer.state_mut(), operator, block, growths, cfg.moments, stage, cfg.seed)?;
        let mut trainer = Trainer::with_optimizer(run.config.clone(), objective, optimizer, None)?;
        trainer.start_at(run.step_count())?;
        let mut losses = Vec::new();
        for k in 0..=longest {
            if lags.contains(&k) {
                losses.push((k, trainer.objective.validation_loss()?));
            }
            if k < longest {
                trainer.train_step()?;
            }
        }
        out.push(Candidate { operator, trainer, losses });
    }
    Ok(out)
}

/// The index of the candidate with the lowest loss at `lag` (ties: the earlier in the pool).
pub fn pick(candidates: &[Candidate], lag: u64) -> Result<usize> {
    let mut best: Option<(usize, f64)> = None;
    for (i, c) in candidates.iter().enumerate() {
        let l = c.loss_at(lag).ok_or_else(|| Error::Config(format!("candidate {i} has no loss at lag {lag}")))?;
        if !l.is_finite() {
            return Err(Error::Config(format!(
                "candidate {} has a non-finite loss {l} at lag {lag}",
                c.operator.name()
            )));
        }
        if best.is_none_or(|(_, b)| l < b) {
            best = Some((i, l));
        }
    }
    best.map(|(i, _)| i).ok_or_else(|| Error::Config("no candidates".into()))
}

/// What LAG did at one stage.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct LagChoice {
    pub step: u64,
    pub picked: Operator,
    /// `(operator, validation loss at the pick lag)` of every candidate.
    pub losses: Vec<(Operator, f64)>,
    /// Training FLOPs of all candidates' lag steps, added to the run's compute.
    pub selection_flops: u64,
}

/// Grows `run` by `growths` blocks with the operator LAG picks: every candidate trains `pick_lag` steps, then the
/// run itself is grown with the winner (exactly as its fork was) and charged the candidates' FLOPs.
pub fn adaptive_stage(
    run: &mut Trainer<LmObjective>,
    cfg: &LagConfig,
    stage: usize,
    block: usize,
    growths: usize,
) -> Result<LagChoice> {
    let candidates = grow_candidates(run, cfg, stage, block, growths, &[cfg.pick_lag])?;
    let best = pick(&candidates, cfg.pick_lag)?;
    let selection_flops: u64 = candidates.iter().map(|c| c.trainer.flops_run()).sum();
    let picked = candidates[best].operator;
    let losses = candidates.iter().map(|c| (c.operator, c.loss_at(cfg.pick_lag).unwrap_or(f64::NAN))).collect();
    let step = run.step_count();
    let (objective, optimizer) = (&mut run.objective, &mut run.optimizer);
    grow_by(objective, optimizer.state_mut(), picked, block, growths, cfg.moments, stage, cfg.seed)?;
    run.add_flops(selection_flops);
    Ok(LagChoice { step, picked, losses, selection_flops })
}

/// Adaptive gradual stacking: trains `run` (whose model has the plan's first depth) to the end, applying LAG at
/// every stage start of `plan` (the plan's operator is ignored; its depths, block and starts are used).
pub fn run_adaptive(
    run: &mut Trainer<LmObjective>,
    plan: &GrowthPlan,
    cfg: &LagConfig,
) -> Result<(TrainReport, Vec<LagChoice>)> {
    let c = &plan.config;
    if run.objective.model.n_layers() != c.stage_layers[0] || plan.total_steps != run.config.steps {
        return Err(Error::Config(format!(
            "the run ({} layers, {} steps) does not start the plan ({} layers, {} steps)",
            run.objective.model.n_layers(),
            run.config.steps,
            c.stage_layers[0],
            plan.total_steps
        )));
    }
    let mut choices = Vec::new();
    for stage in 1..plan.starts.len() {
        while run.step_count() < plan.starts[stage] {
            run.logged_step()?;
        }
        let growths = (c.stage_layers[stage] - c.stage_layers[stage - 1]) / c.block;
        choices.push(adaptive_stage(run, cfg, stage, c.block, growths)?);
    }
    Ok((run.run()?, choices))
}
