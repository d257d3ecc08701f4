//! HuggingFace `tokenizer.json` tokenizers through the `tokenizers` crate: loading a pretrained tokenizer
//! (MiniLM's WordPiece), batch encoding with padding masks, and training a byte-level BPE tokenizer on a corpus
//! (GPT-2's scheme) for the decoder.
//!
//! A `tokenizer.json` may switch on truncation and fixed padding (MiniLM's pads every input to 128). Loading
//! turns both off: [`HfTokenizer::encode_batch`] pads to the longest input of the batch and truncates only to
//! the `max_len` it is given, which is what a caller choosing its own sequence length expects. For
//! all-MiniLM-L6-v2 pass [`MINILM_MAX_LEN`] (256, its `sentence_bert_config.json` `max_seq_length`: the length
//! sentence-transformers truncates to and the model was trained with; its position table has 512 rows).

use std::path::Path;

use tokenizers::models::TrainerWrapper;
use tokenizers::models::bpe::{BPE, BpeTrainerBuilder};
use tokenizers::pre_tokenizers::byte_level::ByteLevel;
use tokenizers::{AddedToken, Tokenizer};

use crate::{Error, Result, format_err};

/// The `max_len` to encode with for all-MiniLM-L6-v2 (sentence-transformers' `max_seq_length` for it).
pub const MINILM_MAX_LEN: usize = 256;

/// A tokenizer from a `tokenizer.json` file (or trained here).
#[derive(Clone)]
pub struct HfTokenizer {
    inner: Tokenizer,
    pad_id: u32,
}

impl std::fmt::Debug for HfTokenizer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("HfTokenizer").field("vocab_size", &self.vocab_size()).field("pad_id", &self.pad_id).finish()
    }
}

/// Token ids of a batch padded to a common length, with the mask of real tokens.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EncodedBatch {
    /// Row-major `[batch, len]`.
    pub ids: Vec<u32>,
    /// `true` for real tokens, `false` for padding; `[batch, len]`.
    pub mask: Vec<bool>,
    /// Segment ids (BERT's token types), `[batch, len]`.
    pub type_ids: Vec<u32>,
    pub batch: usize,
    pub len: usize,
}

impl EncodedBatch {
    /// Ids as `usize` (for embedding lookups).
    pub fn ids_usize(&self) -> Vec<usize> {
        self.ids.iter().map(|&i| i as usize).collect()
    }

    /// The real (unpadded) ids of row `i`.
    pub fn row(&self, i: usize) -> Vec<u32> {
        let r = i * self.len..(i + 1) * self.len;
        self.ids[r.clone()].iter().zip(&self.mask[r]).filter(|(_, m)| **m).map(|(&t, _)| t).collect()
    }
}

fn tok_err(path: &Path, e: impl std::fmt::Display) -> Error {
    format_err(path, format!("tokenizer: {e}"))
}

impl HfTokenizer {
    /// Loads `tokenizer.json`. Truncation and padding configured in the file are switched off.
    pub fn from_file(path: &Path) -> Result<Self> {
        if !path.is_file() {
            return Err(Error::Io {
                path: path.to_path_buf(),
                source: std::io::Error::new(std::io::ErrorKind::NotFound, "tokenizer file not found"),
            });
        }
        let mut inner = Tokenizer::from_file(path).map_err(|e| tok_err(path, e))?;
        inner.with_truncation(None).map_err(|e| tok_err(path, e))?;
        inner.with_padding(None);
        let pad_id = ["[PAD]", "<pad>", "<|pad|>"].iter().find_map(|t| inner.token_to_id(t)).unwrap_or(0);
        Ok(HfTokenizer { inner, pad_id })
    }

    /// Trains a byte-level BPE tokenizer (GPT-2's pre-tokenizer and byte alphabet, so any text round-trips) of
    /// at most `vocab_size` entries on `texts`. `special_tokens` get the first ids. Training is deterministic.
    pub fn train_bpe<S: AsRef<str> + Send>(
        texts: impl Iterator<Item = S> + Send,
        vocab_size: usize,
        special_tokens: &[&str],
    ) -> Result<Self> {
        let here = Path::new("<bpe training>");
        if vocab_size < 256 + special_tokens.len() {
            return Err(format_err(
                here,
                format!(
                    "vocab_size {vocab_size} is below the 256-byte alphabet plus {} specials",
                    special_tokens.len()
                ),
            ));
        }
        let mut inner = Tokenizer::new(BPE::default());
        inner.with_pre_tokenizer(Some(ByteLevel::new(false, true, true)));
        inner.with_decoder(Some(ByteLevel::new(false, true, true)));
        let mut trainer: TrainerWrapper = BpeTrainerBuilder::new()
            .vocab_size(vocab_size)
            .min_frequency(2)
            .show_progress(false)
            .special_tokens(special_tokens.iter().map(|t| AddedToken::from(t.to_string(), true)).collect())
            .initial_alphabet(ByteLevel::alphabet().into_iter().collect())
            .build()
            .into();
        inner.train(&mut trainer, texts).map_err(|e| tok_err(here, e))?;
        let pad_id = special_tokens.iter().find_map(|t| inner.token_to_id(t)).unwrap_or(0);
        Ok(HfTokenizer { inner, pad_id })
    }

    /// Writes `tokenizer.json` (loadable by HuggingFace `tokenizers` and by [`HfTokenizer::from_file`]).
    pub fn save(&self, path: &Path) -> Result<()> {
        self.inner.save(path, false).map_err(|e| tok_err(path, e))
    }

    /// Vocabulary size including added (special) tokens.
    pub fn vocab_size(&self) -> usize {
        self.inner.get_vocab_size(true)
    }

    pub fn pad_id(&self) -> u32 {
        self.pad_id
    }

    pub fn token_to_id(&self, token: &str) -> Option<u32> {
        self.inner.token_to_id(token)
    }

    /// Ids of one text; `special` adds the post-processor's tokens (`[CLS] .. [SEP]` for BERT).
    pub fn encode(&self, text: &str, special: bool) -> Result<Vec<u32>> {
        let e = self.inner.encode(text, special).map_err(|e| tok_err(Path::new("<encode>"), e))?;
        Ok(e.get_ids().to_vec())
    }

    /// Encodes texts, truncates each to `max_len` tokens (keeping the final special token) and pads to the
    /// longest. An empty batch or `max_len` 0 is an error.
    pub fn encode_batch(&self, texts: &[&str], special: bool, max_len: usize) -> Result<EncodedBatch> {
        self.encode_inputs(texts.iter().map(|&t| tokenizers::EncodeInput::from(t)).collect(), special, max_len)
    }

    /// Encodes sentence pairs as BERT does (`[CLS] a [SEP] b [SEP]`, token types 0 then 1), truncated to
    /// `max_len` (keeping the final `[SEP]`) and padded to the longest.
    pub fn encode_pairs(&self, pairs: &[(&str, &str)], max_len: usize) -> Result<EncodedBatch> {
        self.encode_inputs(pairs.iter().map(|&(a, b)| tokenizers::EncodeInput::from((a, b))).collect(), true, max_len)
    }

    fn encode_inputs(
        &self,
        inputs: Vec<tokenizers::EncodeInput<'_>>,
        special: bool,
        max_len: usize,
    ) -> Result<EncodedBatch> {
        let here = Path::new("<encode_batch>");
        if inputs.is_empty() || max_len == 0 {
            return Err(format_err(here, format!("{} inputs with max_len {max_len}", inputs.len())));
        }
        let n = inputs.len();
        let mut rows = Vec::with_capacity(n);
        for input in inputs {
            let e = self.inner.encode(input, special).map_err(|e| tok_err(here, e))?;
            let (mut ids, mut types) = (e.get_ids().to_vec(), e.get_type_ids().to_vec());
            if ids.len() > max_len {
                let last = (special && !ids.is_empty()).then(|| (ids[ids.len() - 1], types[types.len() - 1]));
                ids.truncate(max_len);
                types.truncate(max_len);
                if let Some((id, ty)) = last {
                    ids[max_len - 1] = id;
                    types[max_len - 1] = ty;
                }
            }
            rows.push((ids, types));
        }
        let len = rows.iter().map(|r| r.0.len()).max().unwrap_or(0).max(1);
        let mut out = EncodedBatch {
            ids: vec![self.pad_id; n * len],
            mask: vec![false; n * len],
            type_ids: vec![0; n * len],
            batch: n,
            len,
        };
        for (i, (ids, types)) in rows.iter().enumerate() {
            out.ids[i * len..i * len + ids.len()].copy_from_slice(ids);
            out.type_ids[i * len..i * len + ids.len()].copy_from_slice(types);
            out.mask[i * len..i * len + ids.len()].fill(true);
        }
        Ok(out)
    }

    /// Text of `ids`; `skip_special` drops special tokens.
    pub fn decode(&self, ids: &[u32], skip_special: bool) -> Result<String> {
        self.inner.decode(ids, skip_special).map_err(|e| tok_err(Path::new("<decode>"), e))
    }
}
