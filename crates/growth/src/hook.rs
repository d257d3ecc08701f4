//! Growth as a trainer hook, and resuming a grown run.

use train::lm::LmObjective;
use train::{Hook, Optimizer, Trainer};

use crate::operators::{GrowthEvent, grow};
use crate::schedule::GrowthPlan;
use crate::{Error, Result};

/// Grows the LM objective's model at each stage start of a [`GrowthPlan`]. Stateless: it acts on the step it is
/// given, so a resumed run (see [`resume`]) continues the plan.
#[derive(Debug, Clone)]
pub struct GrowthHook {
    pub plan: GrowthPlan,
    /// Every growth this hook did, in order.
    pub events: Vec<(u64, GrowthEvent)>,
}

impl GrowthHook {
    pub fn new(plan: GrowthPlan) -> Self {
        GrowthHook { plan, events: Vec::new() }
    }

    /// Grows the model from stage `stage - 1`'s depth to stage `stage`'s.
    fn enter_stage(
        &self,
        stage: usize,
        objective: &mut LmObjective,
        optimizer: &mut dyn Optimizer<f32>,
    ) -> Result<Vec<GrowthEvent>> {
        let c = &self.plan.config;
        let (from, to) = (c.stage_layers[stage - 1], c.stage_layers[stage]);
        if objective.model.n_layers() != from {
            return Err(Error::Config(format!(
                "stage {stage} grows a {from}-layer model, but the model has {} layers",
                objective.model.n_layers()
            )));
        }
        (0..(to - from) / c.block)
            .map(|g| {
                let seed = c.seed ^ ((stage as u64) << 32 | g as u64);
                grow(&mut objective.model, optimizer.state_mut(), c.operator, c.block, c.moments, seed)
            })
            .collect()
    }

    /// Rebuilds the model's shape at `step` (every stage that began before it), as a killed run had it.
    pub fn replay(&self, step: u64, objective: &mut LmObjective, optimizer: &mut dyn Optimizer<f32>) -> Result<()> {
        for stage in 1..self.plan.starts.len() {
            if self.plan.starts[stage] < step {
                self.enter_stage(stage, objective, optimizer)?;
            }
        }
        Ok(())
    }
}

impl Hook<LmObjective> for GrowthHook {
    fn before_step(
        &mut self,
        step: u64,
        objective: &mut LmObjective,
        optimizer: &mut dyn Optimizer<f32>,
    ) -> train::Result<()> {
        if let Some(stage) = self.plan.stage_starting_at(step) {
            let events =
                self.enter_stage(stage, objective, optimizer).map_err(|e| train::Error::Other(e.to_string()))?;
            self.events.extend(events.into_iter().map(|e| (step, e)));
        }
        Ok(())
    }
}

/// [`Trainer::resume`] for a run that grows: rebuilds the model to the shape it had at the latest checkpoint
/// (replaying the plan), then loads the checkpoint. Returns whether there was one.
pub fn resume(trainer: &mut Trainer<LmObjective>, plan: &GrowthPlan) -> Result<bool> {
    let Some(step) = trainer.checkpoint_step()? else { return Ok(false) };
    let hook = GrowthHook::new(plan.clone());
    let Trainer { objective, optimizer, .. } = trainer;
    hook.replay(step, objective, optimizer.as_mut())?;
    Ok(trainer.resume()?)
}
