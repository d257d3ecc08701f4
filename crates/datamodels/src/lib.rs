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
//!
//! ```
//! use strata_datamodels::{boolean, fit};
//! let mut f = boolean::StandardFunction::Majority.table(5)?;
//! let table = f.clone();
//! boolean::p_biased_transform(&mut f, 0.5)?;            // f now holds f_hat(S)
//! let w = boolean::level_weights(&f)?;
//! let residual: f64 = w[2..].iter().sum();              // what no linear datamodel can explain
//! let best = fit::LinearDatamodel::from_fourier(&f, 0.5)?;
//! let brute = fit::exact_least_squares(&table, 0.5)?;   // the same model, by brute force
//! assert!((best.weights[0] - brute.weights[0]).abs() < 1e-9 && residual > 0.0);
//! # Ok::<(), strata_datamodels::Error>(())
//! ```

pub mod analyze;
pub mod boolean;
pub mod experiments;
pub mod fit;
pub mod runs;
pub mod store;

/// Errors: shapes, arguments, non-finite values, numerical failures, files.
#[derive(Debug, thiserror::Error)]
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
