//! # strata-icl
//!
//! Linear self-attention (LSA) transformers that learn linear regression in context, and the closed forms
//! they are compared with (P1: arXiv 2410.21698, P3: arXiv 2410.08292).
//!
//! - [`task`]: seeded prompt samplers: fixed covariance (P3: `x ~ N(0, Sigma)`, `w* ~ N(0, Sigma^-1)`),
//!   per-prompt random covariances with condition number up to `kappa` (P1), label noise, shifted test
//!   distributions. A batch becomes the token matrix `Z` of shape `[batch, d+1, n+1]`, query last.
//! - [`model`]: LSA layers `Z <- Z - (1/n) P Z M (Z^T Q Z)` in the restricted (`A`, `u`), feature-update
//!   (`A`, `B`, `u`: the x-rows change too, the labels stay out of the attention scores) and unrestricted
//!   (`P`, `Q`) parameterizations, multilayer or looped, evaluated at any depth; prediction `-Z[d, n]`.
//!   [`model::train`] runs Adam with clipping on fresh prompts and can keep the best weights on a held-out
//!   validation set.
//! - [`experiments`]: the reproductions `icl/looped-gd`, `icl/depth-vs-kappa`, `icl/robustness` and
//!   `icl/monotonicity` (`cargo xtask reproduce icl/<id> [--quick]`).
//! - [`theory`] (f64, independent of the models): the L-step preconditioned gradient-descent predictor (by
//!   iteration and in closed form), Chebyshev step sizes on `[1, kappa]` and Newton-Schulz iteration with
//!   their error rates.
//!
//! ```no_run
//! use strata_icl::model::{LsaModel, ModelConfig, Parameterization, TrainConfig, train};
//! use strata_icl::task::{Covariance, TaskConfig};
//! let task = TaskConfig { covariance: Covariance::RandomCondition { kappa: 10.0 }, ..TaskConfig::isotropic(5, 20) };
//! let cfg =
//!     ModelConfig { d: 5, depth: 4, looped: true, parameterization: Parameterization::Restricted, init_std: 0.02 };
//! let model = LsaModel::<f64>::new(&cfg, &tensor::Params::new(), &mut tensor::seeded(0))?;
//! let log = train(&model, &task, &TrainConfig::new(1000, 256, 3e-3), &mut tensor::seeded(1))?;
//! println!("final loss {}", log.losses.last().unwrap());
//! # Ok::<(), strata_icl::IclError>(())
//! ```
//!
//! Convention: a restricted layer whose `Q` block is `A` runs gradient descent preconditioned by `A^T`
//! (identical for the symmetric `A` that training finds); see `model::tests` and `tests/tests.rs`.

mod error;
pub mod experiments;
mod kernel;
pub mod model;
pub mod task;
pub mod theory;

pub use error::{IclError, Result};
