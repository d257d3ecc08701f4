//! # strata-growth
//!
//! Growing a transformer's depth during pretraining (P4: gradual stacking and MIDAS), as a drop-in part of a
//! `strata-train` run, with compute counted exactly.
//!
//! - [`operators`]: [`grow`] adds a block of layers to a [`Decoder`](transformer::Decoder) with an
//!   [`Operator`] (copy the top block: gradual stacking; copy the middle block next to itself: MIDAS; copy the
//!   bottom block; interleave copies; fresh layers on top or in the middle), renaming the optimizer state with
//!   the parameters so that shifted layers keep their own Adam moments; new layers start with fresh moments or
//!   their source's ([`MomentPolicy`]).
//! - [`schedule`]: a [`GrowthConfig`] (stage depths, Prop-alpha or explicit stage lengths, operator, block) as
//!   data, resolved into a [`GrowthPlan`] for a run's length. The learning-rate schedule stays the run's one
//!   global schedule.
//! - [`hook`]: [`GrowthHook`] grows the model of an LM run at each stage start; [`resume`] rebuilds a killed
//!   grown run's shape from its checkpoint step and continues it bit for bit.
//! - [`compute`]: FLOPs to reach a loss, read off a run's `(flops, loss)` curve; the trainer counts the
//!   matrix-product FLOPs of the layers actually run on every metrics line.
//! - [`lag`]: LAG (P5): [`grow_candidates`] grows independent forks of a run with each operator of a pool and
//!   trains them for a lag; [`pick`] takes the lowest validation loss at the chosen lag; [`run_adaptive`] applies
//!   the choice at every stage (adaptive gradual stacking) with the candidates' FLOPs charged to the run.
//! - [`raptr`]: RaPTr (P6): a [`RaptrPlan`] draws each step's random path of layers (fixed size or Bernoulli,
//!   first and last layers kept or not, kept layers rescaled or not) with path lengths growing in stages; the
//!   [`RaptrHook`] hands it to the LM objective, which runs only those layers (`Decoder::forward_path`), so the
//!   trainer counts the FLOPs of the layers run and skipped layers get no update.
//! - [`primitives`]: reasoning primitives (variable assignment of depth k in math and code forms, induction
//!   copying, arithmetic) from a seed, with disjoint train/test names and values and brute-force solvers.
//! - [`experiments`]: the `growth/midas` reproduction.
//!
//! ```
//! use strata_growth::{GrowthConfig, GrowthHook, MomentPolicy, Operator, StageLengths};
//! use strata_growth::train::lm::{Corpus, LmConfig, LmObjective};
//! use strata_growth::train::{TrainConfig, Trainer};
//! use strata_growth::tensor::{Schedule, optim::AdamConfig};
//! use strata_growth::transformer::DecoderConfig;
//!
//! let growth = GrowthConfig {
//!     stage_layers: vec![1, 2, 3],
//!     lengths: StageLengths::PropAlpha { alpha: 1.0 },
//!     operator: Operator::CopyMiddle,
//!     block: 1,
//!     moments: MomentPolicy::Fresh,
//!     seed: 0,
//! };
//! let plan = growth.plan(12)?; // stages of 2, 4 and 6 steps
//! assert_eq!(plan.starts, [0, 2, 6]);
//! let lm = LmConfig {
//!     model: DecoderConfig { vocab_size: 0, context: 16, d_model: 32, n_layers: 1, n_heads: 4, ..DecoderConfig::default() },
//!     model_seed: 0,
//!     corpus: Corpus::Synthetic { tokens: 4_000, vocab: 16, seed: 1 },
//!     batch: 4,
//!     sampling: strata_growth::data::batch::WindowSampling::Shuffled,
//!     data_seed: 2,
//!     eval_batches: 2,
//!     train: TrainConfig {
//!         steps: 12,
//!         optimizer: AdamConfig::adamw(3e-3, 0.0).into(),
//!         schedule: Schedule::Constant,
//!         grad_clip: Some(1.0),
//!         eval_interval: 0,
//!         checkpoint_interval: 0,
//!         log_interval: 1,
//!         seed: 3,
//!         progress: false,
//!     },
//! };
//! let mut trainer = Trainer::new(lm.train.clone(), LmObjective::new(&lm, None)?, None)?;
//! trainer.add_hook(Box::new(GrowthHook::new(plan)));
//! trainer.run()?;
//! assert_eq!(trainer.objective.model.n_layers(), 3);
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```
//!
//! The lower crates are re-exported ([`tensor`], [`transformer`], [`train`], [`data`], [`report`]).

pub mod compute;
pub mod experiments;
pub mod hook;
pub mod lag;
pub mod operators;
pub mod primitives;
pub mod raptr;
pub mod schedule;

pub use compute::{flops_to_reach, prop_alpha_layer_fraction};
pub use hook::{GrowthHook, resume};
pub use lag::{Candidate, LagChoice, LagConfig, adaptive_stage, grow_candidates, pick, run_adaptive};
pub use operators::{GrowthEvent, MomentPolicy, Operator, grow};
pub use raptr::{PathSampler, PathScaling, RaptrConfig, RaptrHook, RaptrPlan};
pub use schedule::{GrowthConfig, GrowthPlan, StageLengths, prop_alpha_lengths};
pub use {data, report, tensor, train, transformer};

/// Errors: configs that cannot be grown, and failures of the layers below.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    #[error("invalid growth config: {0}")]
    Config(String),
    #[error(transparent)]
    Model(#[from] transformer::Error),
    #[error(transparent)]
    Tensor(#[from] tensor::Error),
    #[error(transparent)]
    Train(#[from] train::Error),
    #[error(transparent)]
    Report(#[from] report::Error),
}

pub type Result<T, E = Error> = std::result::Result<T, E>;
