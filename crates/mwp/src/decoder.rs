//! The Strata decoder as a [`Backend`]: a model saved by `Decoder::save` (the `strata-train` binary's
//! `model.safetensors`) with the tokenizer it was trained with, generating through
//! `Decoder::generate_until` with the request's stop sequences.

use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};
use transformer::{Decoder, Sampling};

use crate::backend::{Backend, Finish, Reply, Request};
use crate::{Error, Result};

/// Text to token ids and back.
pub trait TextCodec: Send + Sync {
    fn encode(&self, text: &str) -> Result<Vec<u32>>;
    fn decode(&self, ids: &[u32]) -> Result<String>;
}

impl TextCodec for data::tokenize::ByteTokenizer {
    fn encode(&self, text: &str) -> Result<Vec<u32>> {
        Ok(data::tokenize::ByteTokenizer::encode(self, text))
    }

    fn decode(&self, ids: &[u32]) -> Result<String> {
        // A reply cut inside a multi-byte character keeps what decodes.
        let bytes: Vec<u8> = ids.iter().map(|&i| i as u8).collect();
        Ok(String::from_utf8_lossy(&bytes).into_owned())
    }
}

impl TextCodec for data::tokenize::CharVocab {
    fn encode(&self, text: &str) -> Result<Vec<u32>> {
        data::tokenize::CharVocab::encode(self, text).map_err(|e| Error::Backend(format!("tokenizing the prompt: {e}")))
    }

    fn decode(&self, ids: &[u32]) -> Result<String> {
        data::tokenize::CharVocab::decode(self, ids).map_err(|e| Error::Backend(e.to_string()))
    }
}

impl TextCodec for data::hf::HfTokenizer {
    fn encode(&self, text: &str) -> Result<Vec<u32>> {
        data::hf::HfTokenizer::encode(self, text, false).map_err(|e| Error::Backend(e.to_string()))
    }

    fn decode(&self, ids: &[u32]) -> Result<String> {
        data::hf::HfTokenizer::decode(self, ids, false).map_err(|e| Error::Backend(e.to_string()))
    }
}

/// Which tokenizer a saved decoder was trained with.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case", deny_unknown_fields)]
pub enum TokenizerSpec {
    /// UTF-8 bytes (vocabulary 256).
    Bytes,
    /// The sorted distinct characters of a text file (a `chars` run: the whole corpus it was trained on).
    Chars { corpus: PathBuf },
    /// A HuggingFace `tokenizer.json` (a `bpe` run writes one beside its weights).
    Hf { path: PathBuf },
}

impl TokenizerSpec {
    pub fn load(&self) -> Result<Box<dyn TextCodec>> {
        Ok(match self {
            TokenizerSpec::Bytes => Box::new(data::tokenize::ByteTokenizer),
            TokenizerSpec::Chars { corpus } => {
                let text =
                    std::fs::read_to_string(corpus).map_err(|e| Error::Io { path: corpus.clone(), source: e })?;
                Box::new(data::tokenize::CharVocab::from_corpus(&text))
            }
            TokenizerSpec::Hf { path } => {
                Box::new(data::hf::HfTokenizer::from_file(path).map_err(|e| Error::Backend(e.to_string()))?)
            }
        })
    }
}

/// A Strata decoder that answers requests.
pub struct DecoderBackend {
    model: Decoder<f32>,
    codec: Box<dyn TextCodec>,
    name: String,
}

impl std::fmt::Debug for DecoderBackend {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DecoderBackend").field("name", &self.name).finish()
    }
}

impl DecoderBackend {
    /// `name` identifies the weights in cache keys (use something that changes when they do).
    pub fn new(model: Decoder<f32>, codec: Box<dyn TextCodec>, name: impl Into<String>) -> Self {
        DecoderBackend { model, codec, name: name.into() }
    }

    /// Loads `weights` (written by `Decoder::save`) and the tokenizer; the cache identity includes the
    /// weights' SHA-256, so retrained weights never reuse old replies.
    pub fn load(weights: &Path, tokenizer: &TokenizerSpec) -> Result<Self> {
        let model = Decoder::load(weights).map_err(|e| Error::Backend(format!("{}: {e}", weights.display())))?;
        let bytes = std::fs::read(weights).map_err(|e| Error::Io { path: weights.to_path_buf(), source: e })?;
        let digest = {
            use sha2::Digest;
            format!("{:x}", sha2::Sha256::digest(&bytes))
        };
        Ok(Self::new(model, tokenizer.load()?, format!("{} sha256={}", weights.display(), &digest[..16])))
    }
}

impl Backend for DecoderBackend {
    fn identity(&self) -> String {
        format!("strata-decoder {}", self.name)
    }

    fn generate(&self, request: &Request) -> Result<Reply> {
        let prompt: Vec<usize> = self.codec.encode(&request.as_prompt())?.into_iter().map(|i| i as usize).collect();
        let vocab = self.model.config.vocab_size;
        if let Some(bad) = prompt.iter().find(|&&i| i >= vocab) {
            return Err(Error::Backend(format!("token {bad} is outside the model's vocabulary of {vocab}")));
        }
        let stops: Vec<Vec<usize>> = request
            .stop
            .iter()
            .map(|s| self.codec.encode(s).map(|ids| ids.into_iter().map(|i| i as usize).collect()))
            .collect::<Result<_>>()?;
        let sampling = if request.temperature > 0.0 {
            Sampling::Temperature { temperature: request.temperature, top_k: None }
        } else {
            Sampling::Greedy
        };
        let mut rng = tensor::seeded(request.seed);
        let (seq, stopped) = self
            .model
            .generate_until(&prompt, request.max_tokens, sampling, &mut rng, &stops)
            .map_err(|e| Error::Backend(e.to_string()))?;
        let new: Vec<u32> = seq[prompt.len()..].iter().map(|&i| i as u32).collect();
        let mut text = self.codec.decode(&new)?;
        // A stop string can also appear across token boundaries that the token-level check did not see.
        let mut finish = if stopped { Finish::Stop } else { Finish::Length };
        if let Some(cut) = request.stop.iter().filter(|s| !s.is_empty()).filter_map(|s| text.find(s.as_str())).min() {
            text.truncate(cut);
            finish = Finish::Stop;
        }
        Ok(Reply { text, finish, tokens: Some(new.len()) })
    }
}
