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
//!   `icl/monotonicity` (`cargo xtask reproduce icl/<id> [--smoke|--quick]`), one file each: a serde config,
//!   rows measured, claims and figures computed from the rows.
//! - [`LsaModel::test_mse`]: the test loss of a model on a batch of prompts, in its own float type.
//! - [`theory`] (f64, independent of the models): the L-step preconditioned gradient-descent predictor (by
//!   iteration and in closed form), Chebyshev step sizes on `[1, kappa]` and Newton-Schulz iteration with
//!   their error rates.
//! - [`optimum`] (f64, no training): the restricted families' best models (the exact loss given each prompt's
//!   Sigma and X is quadratic in the residual polynomial's values: the best multilayer polynomial by one linear
//!   solve, the best looped step by a 1-D search), and the population `E[y_q^2]` that normalises P1's losses.
//!
//! ```
//! use strata_icl::{Covariance, LsaModel, ModelConfig, Parameterization, TaskConfig, TrainConfig, sample, train};
//! use strata_icl::tensor::{Params, seeded};
//!
//! let task = TaskConfig { covariance: Covariance::RandomCondition { kappa: 10.0 }, ..TaskConfig::isotropic(3, 10) };
//! let cfg =
//!     ModelConfig { d: 3, depth: 2, looped: true, parameterization: Parameterization::Restricted, init_std: 0.02 };
//! let model = LsaModel::<f64>::new(&cfg, &Params::new(), &mut seeded(0))?;
//! let test = sample(&task, 256, &mut seeded(9))?;
//! let before = model.test_mse(&test, 2);
//! let log = train(&model, &task, &TrainConfig::new(60, 64, 1e-2), &mut seeded(1))?;
//! assert!(model.test_mse(&test, 2) < before && log.losses.len() == 60);
//! # Ok::<(), strata_icl::Error>(())
//! ```
//!
//! Convention: a restricted layer whose `Q` block is `A` runs gradient descent preconditioned by `A^T`. Trained
//! `A` need not be symmetric (with `Sigma = I` and 4 or more loops training finds a clearly non-symmetric one),
//! so the transpose matters; `tests/tests.rs` checks the convention with a non-isotropic `Sigma`, which an
//! isotropic one could not tell apart.
//!
//! The lower crates are re-exported ([`tensor`], [`report`]) so that one dependency on `strata-icl` suffices.

mod error;
pub mod experiments;
mod kernel;
pub mod model;
pub mod optimum;
pub mod task;
pub mod theory;

pub use error::{Error, Result};
pub use model::{LsaModel, ModelConfig, Parameterization, TrainConfig, TrainLog, train};
pub use task::{Covariance, Prompts, Shift, TaskConfig, WeightPrior, sample};
pub use {report, tensor};
