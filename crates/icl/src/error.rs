/// Invalid configurations and inputs of the ICL crate.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    #[error("invalid config: {0}")]
    InvalidConfig(String),
    #[error(transparent)]
    Tensor(#[from] tensor::Error),
    #[error(transparent)]
    Report(#[from] report::Error),
}

pub type Result<T, E = Error> = std::result::Result<T, E>;

pub(crate) fn invalid(msg: impl Into<String>) -> Error {
    Error::InvalidConfig(msg.into())
}
