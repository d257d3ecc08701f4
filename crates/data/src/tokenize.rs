//! Simple tokenizers: bytes (vocabulary 256, lossless for any text) and characters (nanoGPT's
//! `shakespeare_char` vocabulary: the sorted distinct characters of a corpus).

use std::collections::BTreeSet;

use serde::{Deserialize, Serialize};

use crate::{Error, Result};

/// UTF-8 bytes as tokens 0..256.
#[derive(Debug, Clone, Copy, Default)]
pub struct ByteTokenizer;

impl ByteTokenizer {
    pub const VOCAB: usize = 256;

    pub fn encode(&self, text: &str) -> Vec<u32> {
        text.bytes().map(u32::from).collect()
    }

    /// Decodes tokens; ids above 255 or byte sequences that are not UTF-8 are errors.
    pub fn decode(&self, ids: &[u32]) -> Result<String> {
        let bytes = ids
            .iter()
            .enumerate()
            .map(|(i, &t)| u8::try_from(t).map_err(|_| invalid(format!("token {t} at position {i} is not a byte"))))
            .collect::<Result<Vec<u8>>>()?;
        String::from_utf8(bytes).map_err(|e| invalid(format!("not UTF-8 at byte {}", e.utf8_error().valid_up_to())))
    }
}

fn invalid(message: String) -> Error {
    Error::Format { path: "<tokens>".into(), message }
}

/// A character vocabulary: id = rank of the character among the corpus's distinct characters.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CharVocab {
    pub chars: Vec<char>,
}

impl CharVocab {
    pub fn from_corpus(text: &str) -> Self {
        CharVocab { chars: text.chars().collect::<BTreeSet<_>>().into_iter().collect() }
    }

    pub fn len(&self) -> usize {
        self.chars.len()
    }

    pub fn is_empty(&self) -> bool {
        self.chars.is_empty()
    }

    /// Encodes text; a character outside the vocabulary is an error naming it and its position.
    pub fn encode(&self, text: &str) -> Result<Vec<u32>> {
        text.chars()
            .enumerate()
            .map(|(i, c)| {
                self.chars
                    .binary_search(&c)
                    .map(|k| k as u32)
                    .map_err(|_| invalid(format!("character {c:?} at position {i} is not in the vocabulary")))
            })
            .collect()
    }

    pub fn decode(&self, ids: &[u32]) -> Result<String> {
        ids.iter()
            .enumerate()
            .map(|(i, &t)| {
                self.chars.get(t as usize).copied().ok_or_else(|| {
                    invalid(format!("token {t} at position {i} is outside a vocabulary of {}", self.chars.len()))
                })
            })
            .collect()
    }
}
