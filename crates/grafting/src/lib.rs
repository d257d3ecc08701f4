//! # strata-grafting
//!
//! Skill localization by grafting (P8): after fine-tuning, a tiny region of the parameters carries the new skill.
//! Grafting the fine-tuned values of just that region onto the pretrained model recovers most of the fine-tuned
//! accuracy, with better calibration. The parts, each usable on its own model:
//!
//! - [`mask::Mask`]: a region as sorted flat indices per parameter name; top-|delta|, random and rounded-relaxed
//!   masks; [`mask::Mask::graft`] selects values (`mask ? theta_ft : theta_pre`, so the full mask is the
//!   fine-tuned model and the empty one the pretrained model, exactly); overlaps; safetensors save/load by name.
//! - [`relax::Relaxation`]: `gamma = base + (1 - 2 base) sigmoid(S - b)` and its exact score gradient from the
//!   model's ordinary parameter gradients; [`search::learn_mask`] steps it, rounds, and keeps the best mask.
//! - [`model`]: a sentence classifier on a pretrained encoder whose head has no trained parameters (scaled cosine
//!   to the embeddings of class descriptions), few-shot sampling, fine-tuning as a [`train::Objective`] (SGD or
//!   AdamW from the shared trainer, optional L1 on the delta), and evaluation (accuracy, binned ECE, the
//!   reliability diagram's bins).
//! - [`experiments`]: `grafting/localize` (all-MiniLM-L6-v2 on SST-2, CR out of distribution).
//!
//! ```
//! use std::collections::BTreeMap;
//! use strata_grafting::mask::{Mask, Weights};
//! use strata_grafting::tensor::ndarray::{ArrayD, IxDyn};
//!
//! let w = |v: Vec<f32>| ArrayD::from_shape_vec(IxDyn(&[2, 2]), v).unwrap();
//! let pre: Weights = BTreeMap::from([("layer.w".to_string(), w(vec![0.0, 0.0, 0.0, 0.0]))]);
//! let ft: Weights = BTreeMap::from([("layer.w".to_string(), w(vec![0.1, -0.9, 0.2, 0.0]))]);
//! let mask = Mask::top_delta(&pre, &ft, 2)?; // the two largest |ft - pre|
//! assert_eq!(mask.regions["layer.w"].1, vec![1, 2]);
//! let grafted = mask.graft(&pre, &ft)?;
//! assert_eq!(grafted["layer.w"].as_slice().unwrap(), &[0.0, -0.9, 0.2, 0.0]);
//! assert_eq!(mask.fraction(), 0.5);
//! # Ok::<(), strata_grafting::Error>(())
//! ```

pub mod experiments;
pub mod mask;
pub mod model;
pub mod relax;
pub mod search;

pub use mask::{Mask, Weights};
pub use model::{Classifier, Evaluation, FinetuneObjective, PromptHead};
pub use relax::Relaxation;
pub use search::{SearchConfig, learn_mask};
pub use {data, report, tensor, train, transformer};

use std::path::PathBuf;

/// Errors: configs and masks that do not fit the model, bad mask files, and failures of the layers below.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    #[error("grafting: {0}")]
    Config(String),
    #[error("{path}: {message}")]
    File { path: PathBuf, message: String },
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
    #[error(transparent)]
    Stats(#[from] report::stats::StatsError),
}

pub type Result<T, E = Error> = std::result::Result<T, E>;
