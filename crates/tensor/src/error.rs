//! Typed errors for data and I/O (shape mistakes in op code are panics, see the crate docs).

use std::path::PathBuf;

/// What can go wrong reading or writing checkpoints, loading parameters, or in linear algebra.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    #[error("{path}: {source}")]
    Io { path: PathBuf, source: std::io::Error },
    #[error("{path}: not a valid safetensors file: {reason}")]
    BadCheckpoint { path: PathBuf, reason: String },
    #[error("{path}: tensor `{name}` has dtype {dtype}, which Strata does not read")]
    UnsupportedDtype { path: PathBuf, name: String, dtype: String },
    #[error("parameter `{name}`: shape {found:?} in the checkpoint, {expected:?} in the model")]
    ShapeMismatch { name: String, expected: Vec<usize>, found: Vec<usize> },
    #[error("checkpoint is missing parameters: {0:?}")]
    MissingParams(Vec<String>),
    #[error("checkpoint has parameters the model does not: {0:?}")]
    UnexpectedParams(Vec<String>),
    #[error("unknown parameter `{0}`")]
    UnknownParam(String),
    #[error("parameter `{0}` already exists")]
    DuplicateParam(String),
    #[error("tensor `{name}`: {reason}")]
    BadValue { name: String, reason: String },
    #[error("linear algebra: {0}")]
    Linalg(String),
    #[error("training diverged at step {step}: loss is {value}")]
    Diverged { step: u64, value: f64 },
}

/// Stops training on a non-finite loss, naming the step (every Strata trainer calls this once per step).
pub fn check_loss(step: u64, loss: f64) -> Result<f64> {
    if loss.is_finite() { Ok(loss) } else { Err(Error::Diverged { step, value: loss }) }
}

pub type Result<T, E = Error> = std::result::Result<T, E>;
