//! Datamodels through Fourier analysis (P10).
//!
//! A datamodel predicts a test output f (e.g. a model's margin on one test point) from which training points were
//! in the training subset. Encoding a subset as x in {-1, +1}^N with x_i = +1 w.p. p (the p-biased measure mu_p),
//! the best linear datamodel is exactly f_hat(empty) + sum_i f_hat({i}) phi_i, its residual error is the Fourier
//! weight above level 1, and that residual can be estimated from models trained on rho-correlated subset pairs
//! through noise stability, with no regression at all.
//!
//! - [`boolean`]: the fast Walsh-Hadamard transform (in place, cache-blocked, parallel, f32/f64), the p-biased
//!   transform and its inverse, level weights, influences, noise stability, standard functions.
//! - [`fit`]: exact p-weighted least squares by enumeration, sampled least squares, LASSO paths, the Fourier
//!   characterisation, the pairs-based residual estimate with its bounds, group effects.
//! - [`store`]: MadryLab-style `.npy` arrays (`masks.npy`, `margins.npy`, `done.npy`) written by resumable
//!   workers that each own a row range, [`read_matrix`]/[`write_npy`] for anyone's arrays, and shard merges.
//! - [`runs`]: the models a many-model run trains on each subset (logistic regression, a small MLP on a binary
//!   MNIST task); [`train_logistic_many`] trains logistic models in blocks that share the pool, two matrix
//!   products per step for a whole block (the workers and reproductions use it; [`train_mlp_many`] is the MLP
//!   analogue, slower than one MLP per task on a CPU).
//! - [`analyze`]: from `(masks, outputs)` arrays to per-output datamodels, level-0/1 weights, residuals with
//!   intervals and, for correlated pairs, the noise-stability estimate (the `strata-datamodels analyze` CLI).
//! - [`experiments`]: the reproductions `datamodels/exact`, `datamodels/estimate`, `datamodels/groups`.
//!
//! The Fourier side, on a function known exactly:
//!
//! ```
//! use strata_datamodels::{LinearDatamodel, StandardFunction, exact_least_squares, level_weights, p_biased_transform};
//! let mut f = StandardFunction::Majority.table(5)?;
//! let table = f.clone();
//! p_biased_transform(&mut f, 0.5)?;                     // f now holds f_hat(S)
//! let w = level_weights(&f)?;
//! let residual: f64 = w[2..].iter().sum();              // what no linear datamodel can explain
//! let best = LinearDatamodel::from_fourier(&f, 0.5)?;
//! let brute = exact_least_squares(&table, 0.5)?;        // the same model, by brute force
//! assert!((best.weights[0] - brute.weights[0]).abs() < 1e-9 && residual > 0.0);
//! # Ok::<(), strata_datamodels::Error>(())
//! ```
//!
//! The library path for your own runs (what `cargo xtask datamodels analyze` does): read the masks and outputs
//! (MadryLab's released `.npy` arrays: bool or 0/1 masks `[models, N]`, f16/f32/f64 outputs `[models, T]`),
//! then [`analyze`]:
//!
//! ```
//! use strata_datamodels::{AnalyzeOptions, Dtype, analyze, read_matrix, write_npy};
//! let dir = tempfile::tempdir().unwrap();
//! // 200 models on subsets of 4 points; the output is 1 + 2 [point 0 in] - [point 3 in], exactly linear.
//! let masks: Vec<f64> = (0..200 * 4).map(|i: usize| ((i * i * 31 + i * 7 + 3) % 11 < 5) as u8 as f64).collect();
//! let outputs: Vec<f64> = masks.chunks(4).map(|m| 1.0 + 2.0 * m[0] - m[3]).collect();
//! write_npy(&dir.path().join("masks.npy"), Dtype::Bool, &[200, 4], &masks)?;
//! write_npy(&dir.path().join("margins.npy"), Dtype::F32, &[200, 1], &outputs)?;
//! let masks = read_matrix(&dir.path().join("masks.npy"))?;
//! let outputs = read_matrix(&dir.path().join("margins.npy"))?;
//! let analysis = analyze(&masks, &outputs, &AnalyzeOptions::default())?;
//! let datamodel = &analysis.outputs[0];
//! assert!((datamodel.weights[0] - 2.0).abs() < 1e-4 && (datamodel.weights[3] + 1.0).abs() < 1e-4);
//! assert!(datamodel.r2 > 0.999);
//! # Ok::<(), strata_datamodels::Error>(())
//! ```
//!
//! The lower crates are re-exported ([`tensor`], [`data`], [`report`]) so that one dependency suffices.

pub mod analyze;
pub mod boolean;
pub mod experiments;
pub mod fit;
pub mod runs;
pub mod store;

pub use analyze::{Analysis, AnalyzeOptions, OutputAnalysis, analyze};
pub use boolean::{
    StandardFunction, influences, level_weights, noise_stability, p_biased_inverse, p_biased_transform, wht_in_place,
};
pub use fit::{
    LassoPoint, LinearDatamodel, ResidualEstimate, exact_least_squares, group_effect, lasso_path, least_squares,
    residual_from_pairs,
};
pub use runs::{BinaryTask, LogisticConfig, MlpConfig, train_logistic, train_logistic_many, train_mlp, train_mlp_many};
pub use store::{Dtype, Matrix, Sampling, Store, StoreMeta, read_matrix, write_npy};
pub use {data, report, tensor};

/// Errors: shapes, arguments, non-finite values, numerical failures, files.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    #[error("shape mismatch: {0}")]
    Shape(String),
    #[error("invalid argument: {0}")]
    InvalidArgument(String),
    #[error("non-finite values in {0}")]
    NonFinite(String),
    #[error("numerical failure: {0}")]
    Numerical(String),
    #[error("{path}: {message}")]
    File { path: std::path::PathBuf, message: String },
    #[error(transparent)]
    Tensor(#[from] tensor::Error),
    #[error(transparent)]
    Data(#[from] data::Error),
    #[error(transparent)]
    Report(#[from] report::Error),
}

pub type Result<T, E = Error> = std::result::Result<T, E>;
