//! # strata-salt
//!
//! Small-model-assisted pretraining (P2, SALT): a small language model helps train a larger one. For the first
//! part of training the large model (student) also learns from the small model's (teacher's) soft labels; then
//! it trains on the data alone. Optionally the teacher picks "hard but learnable" windows for that first phase
//! (SALT_DS).
//!
//! - [`distill`]: [`mixed_loss`] `(1 - w) CE + w tau^2 KD` (the teacher detached) and the weight's
//!   [`KdSchedule`] over steps: off, constant, a step to 0 at `n_KD`, or a linear anneal.
//! - [`objective`]: [`SaltObjective`] wraps a student [`LmObjective`](train::lm::LmObjective) and a teacher
//!   [`Decoder`](transformer::Decoder) as an [`Objective`](train::Objective) for the shared
//!   [`Trainer`](train::Trainer): the teacher's logits are computed on the fly under `no_grad` (a corpus's
//!   logits do not fit in memory), only on distillation steps, and its forward FLOPs are counted in every step
//!   that runs it, so the trainer's compute axis is "teacher included". With the weight at 0 a step is exactly
//!   the plain language-model step.
//! - [`select`]: SALT_DS scores (median teacher loss over tokens whose target is in the teacher's top k) and
//!   the top-fraction selection, drawn from by a selection batcher during the distillation phase.
//! - [`experiments`]: the `salt/kd-phase` reproduction.
//!
//! ```
//! use strata_salt::{DistillConfig, KdSchedule, SaltObjective};
//! use strata_salt::train::lm::{Corpus, LmConfig, LmObjective};
//! use strata_salt::train::{TrainConfig, Trainer};
//! use strata_salt::tensor::{Schedule, optim::AdamConfig};
//! use strata_salt::transformer::{Decoder, DecoderConfig};
//!
//! let student = LmConfig {
//!     model: DecoderConfig { vocab_size: 0, context: 16, d_model: 32, n_layers: 2, n_heads: 4, ..DecoderConfig::default() },
//!     model_seed: 0,
//!     corpus: Corpus::Synthetic { tokens: 4_000, vocab: 16, seed: 1 },
//!     batch: 4,
//!     sampling: strata_salt::data::batch::WindowSampling::Shuffled,
//!     data_seed: 2,
//!     eval_batches: 2,
//!     train: TrainConfig {
//!         steps: 10,
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
//! // A (here untrained) one-layer teacher with the student's vocabulary.
//! let teacher = Decoder::new(&DecoderConfig { vocab_size: 16, d_model: 16, n_layers: 1, n_heads: 2, ..student.model.clone() }, 7)?;
//! let distill = DistillConfig { schedule: KdSchedule::Step { weight: 0.5, until: 4 }, temperature: 1.0 };
//! let objective = SaltObjective::new(LmObjective::new(&student, None)?, teacher, distill)?;
//! let mut trainer = Trainer::new(student.train.clone(), objective, None)?;
//! trainer.run()?;
//! // The teacher ran on the first 4 steps only, and its FLOPs are inside the trainer's count.
//! let teacher_flops = trainer.objective.teacher_flops();
//! assert!(teacher_flops > 0 && trainer.flops_run() > teacher_flops);
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```
//!
//! The lower crates are re-exported ([`tensor`], [`transformer`], [`train`], [`data`], [`report`]).

pub mod distill;
pub mod experiments;
pub mod objective;
pub mod select;

pub use distill::{DistillConfig, KdSchedule, mixed_loss};
pub use objective::SaltObjective;
pub use select::{Selection, SelectionConfig, select, select_top, sequence_score, token_losses};
pub use {data, report, tensor, train, transformer};

/// Errors: configs that do not fit, and failures of the layers below.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    #[error("invalid SALT config: {0}")]
    Config(String),
    #[error(transparent)]
    Model(#[from] transformer::Error),
    #[error(transparent)]
    Tensor(#[from] tensor::Error),
    #[error(transparent)]
    Train(#[from] train::Error),
    #[error(transparent)]
    Data(#[from] data::Error),
    #[error(transparent)]
    Report(#[from] report::Error),
}

pub type Result<T, E = Error> = std::result::Result<T, E>;
