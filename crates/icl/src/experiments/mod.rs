//! The reproductions `icl/looped-gd` (P3), `icl/depth-vs-kappa`, `icl/robustness` and `icl/monotonicity`
//! (P1), one file each. Each trains small models in f64 on fresh prompts, measures into rows, states the
//! papers' claims on the rows, and draws figures from the rows. [`p1`] holds what the three P1 reproductions
//! share: the six model families and training with a divergence retry.

pub mod depth_vs_kappa;
pub mod looped_gd;
pub mod monotonicity;
pub mod p1;
pub mod robustness;

use report::DynExperiment;
use tensor::ndarray::Array2;
use tensor::{Params, seeded};

pub use depth_vs_kappa::{DepthVsKappa, DepthVsKappaConfig};
pub use looped_gd::{LoopedGd, LoopedGdConfig};
pub use monotonicity::{Monotonicity, MonotonicityConfig};
pub use p1::{Family, P1Training};
pub use robustness::{Robustness, RobustnessConfig};

use crate::Result;
use crate::model::{LsaModel, ModelConfig, TrainConfig, train};
use crate::task::{Prompts, TaskConfig};
use crate::theory::gd_predict;

/// The reproductions of this crate, for the `strata` runner.
pub fn all() -> Vec<Box<dyn DynExperiment>> {
    vec![Box::new(LoopedGd), Box::new(DepthVsKappa), Box::new(Robustness), Box::new(Monotonicity)]
}

/// Mean squared error of the model's prediction after `depth` layers on `prompts`.
pub fn eval_mse(model: &LsaModel<f64>, prompts: &Prompts, depth: usize) -> f64 {
    model.test_mse(prompts, depth)
}

/// Mean squared error of the GD predictor with per-step preconditioners `preconds` on `prompts`.
pub fn eval_gd(preconds: &[Array2<f64>], prompts: &Prompts) -> f64 {
    let total: f64 = (0..prompts.batch())
        .map(|b| {
            let (x, y, xq) = prompts.prompt(b);
            (gd_predict(preconds, &x, &y, &xq) - prompts.y[[b, prompts.n]]).powi(2)
        })
        .sum();
    total / prompts.batch() as f64
}

/// The population `E[y_q^2]` of `task` (the loss of predicting zero), which normalises P1's losses: exact, so
/// every depth and family is divided by the same number and no estimate's noise enters the ratios.
pub fn norm_factor(task: &TaskConfig) -> f64 {
    crate::optimum::label_second_moment(task)
}

/// A model from `seed`, started at GD with `steps` when given (see [`LsaModel::add_scalar_steps`]), trained.
fn train_model(
    cfg: &ModelConfig,
    task: &TaskConfig,
    train_cfg: &TrainConfig,
    seed: u64,
    steps: Option<&[f64]>,
) -> Result<LsaModel<f64>> {
    let model = LsaModel::new(cfg, &Params::new(), &mut seeded(seed))?;
    if let Some(steps) = steps {
        model.add_scalar_steps(steps)?;
    }
    train(&model, task, train_cfg, &mut tensor::derived(seed, 1))?;
    Ok(model)
}
