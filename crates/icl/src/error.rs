/// Invalid configurations and inputs of the ICL crate.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum IclError {
    #[error("invalid config: {0}")]
    InvalidConfig(String),
    #[error(transparent)]
    Tensor(#[from] tensor::Error),
    #[error(transparent)]
    Report(#[from] report::Error),
}

pub type Result<T, E = IclError> = std::result::Result<T, E>;

pub(crate) fn invalid(msg: impl Into<String>) -> IclError {
    IclError::InvalidConfig(msg.into())
}
