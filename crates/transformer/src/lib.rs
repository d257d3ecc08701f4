//! # strata-transformer
//!
//! The transformer stack, written on `strata-tensor` autodiff: the language models of `strata-train`, and the
//! base the depth experiments (stacking, MIDAS, RaPTr, LAG, SALT, grafting; their crates are still to come) are
//! to build on:
//!
//! - [`Decoder`]: GPT-style, pre-LN, learned or rotary positions, optionally tied embeddings; training loss,
//!   greedy / temperature / top-k sampling with a KV cache.
//! - [`Encoder`]: BERT-style (post-LN), loads HuggingFace checkpoints by their own parameter names
//!   ([`Encoder::from_pretrained`] on `all-MiniLM-L6-v2`), sentence embeddings (masked mean pooling + L2
//!   normalisation, as sentence-transformers), a masked-LM head and a classification head.
//! - Layers are a list: layer `i` owns every parameter under `layers.{i}.` (decoder) or `encoder.layer.{i}.`
//!   (encoder). [`Decoder::forward_layers`] runs any subset or sequence of layers (layer dropping, RaPTr), and
//!   [`Decoder::insert_layer_copy`] / [`Decoder::remove_layer`] grow or shrink a model in place (stacking).
//! - [`flops`]: exact matrix-product FLOPs of a forward and a backward pass for the layers actually run,
//!   checked in the tests against `strata_tensor::matmul_flops`, the counter inside the GEMM calls.
//! - [`Decoder::deep_copy`] / [`Encoder::deep_copy`]: independent models (their own parameter store), for
//!   growing or fine-tuning several candidates from one trained model; `clone` shares the weights.
//!
//! The lower crates are re-exported ([`tensor`], [`data`]) so that one dependency suffices.
//!
//! ```
//! use strata_transformer::{Decoder, DecoderConfig};
//! let config = DecoderConfig { vocab_size: 65, context: 16, d_model: 32, n_layers: 2, n_heads: 4, ..DecoderConfig::default() };
//! let model: Decoder = Decoder::new(&config, 0).unwrap();
//! let ids: Vec<usize> = (0..16).collect();
//! let next: Vec<usize> = (1..17).collect();
//! let logits = model.forward(&ids, 2, 8).unwrap(); // [2, 8, 65]
//! assert_eq!(logits.shape(), [2, 8, 65]);
//! let loss = model.loss(&ids, &next, 2, 8, None).unwrap();
//! assert!((loss.item() - 65f32.ln()).abs() < 0.2); // near uniform at init
//! ```

mod attention;
pub mod decoder;
pub mod encoder;
pub mod flops;
pub mod gpt2;

pub use attention::Rope;
pub use decoder::{Decoder, DecoderConfig, DecoderLayer, KvCache, Positions, Sampling};
pub use encoder::{BertConfig, ClassifierHead, Encoder, EncoderLayer, MlmHead, mean_pool};
pub use flops::FlopCount;
pub use {data, tensor};

/// Errors from configs, inputs and checkpoints.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    #[error("invalid config: {0}")]
    Config(String),
    #[error("invalid input: {0}")]
    Input(String),
    #[error(transparent)]
    Tensor(#[from] tensor::Error),
    #[error(transparent)]
    Data(#[from] data::Error),
    #[error("{path}: {message}")]
    File { path: std::path::PathBuf, message: String },
}

pub type Result<T, E = Error> = std::result::Result<T, E>;
