//! Batching for language models: contiguous windows of a token stream, drawn either at random offsets
//! (nanoGPT's `get_batch`) or as a seeded shuffle of non-overlapping windows, epoch after epoch.
//!
//! Batch number `i` is a pure function of `(seed, i)`: the random stream of each batch (or each epoch's
//! permutation) is derived from the seed and the index. The whole position in the stream is therefore the
//! number of batches drawn, [`BatcherState`], which a trainer stores in its checkpoint; restoring it continues
//! with exactly the batches an uninterrupted run would have seen.

use std::sync::Arc;

use rand::{RngExt, SeedableRng};
use rand_chacha::ChaCha8Rng;
use serde::{Deserialize, Serialize};

use crate::{Result, format_err};

/// How windows are chosen.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum WindowSampling {
    /// Independent uniform start offsets (windows may overlap; nanoGPT).
    Random,
    /// Non-overlapping windows, shuffled once per epoch.
    Shuffled,
}

/// One batch: `inputs[b, t]` and `targets[b, t] = inputs[b, t + 1]` in the stream, row-major.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LmBatch {
    pub inputs: Vec<usize>,
    pub targets: Vec<usize>,
    pub batch: usize,
    pub context: usize,
}

/// Where a batcher stands; part of a training checkpoint.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct BatcherState {
    pub seed: u64,
    pub batches_drawn: u64,
}

/// Windows of `context + 1` tokens from a token stream.
#[derive(Debug, Clone)]
pub struct LmBatcher {
    tokens: Arc<[u32]>,
    context: usize,
    batch: usize,
    sampling: WindowSampling,
    seed: u64,
    drawn: u64,
    /// Window starts this batcher draws from (`None`: every offset, or every non-overlapping window).
    selected: Option<Arc<[usize]>>,
}

impl LmBatcher {
    /// The stream must hold more than `context` tokens (at least one full window with its targets).
    pub fn new(
        tokens: impl Into<Arc<[u32]>>,
        context: usize,
        batch: usize,
        sampling: WindowSampling,
        seed: u64,
    ) -> Result<Self> {
        let tokens = tokens.into();
        let here = std::path::Path::new("<batcher>");
        if context == 0 || batch == 0 {
            return Err(format_err(here, format!("context {context} and batch {batch} must be positive")));
        }
        if tokens.len() <= context {
            return Err(format_err(
                here,
                format!("a stream of {} tokens has no window of {} (+1 target)", tokens.len(), context),
            ));
        }
        Ok(LmBatcher { tokens, context, batch, sampling, seed, drawn: 0, selected: None })
    }

    pub fn context(&self) -> usize {
        self.context
    }

    pub fn batch_size(&self) -> usize {
        self.batch
    }

    pub fn tokens(&self) -> &[u32] {
        &self.tokens
    }

    /// Non-overlapping windows in the stream (the epoch length of [`WindowSampling::Shuffled`], in windows);
    /// for a selection, the number of selected windows.
    pub fn windows_per_epoch(&self) -> usize {
        match &self.selected {
            Some(s) => s.len(),
            None => (self.tokens.len() - 1) / self.context,
        }
    }

    /// A batcher over the same stream that draws only the windows starting at `starts` (data selection: e.g.
    /// SALT's "hard but learnable" sequences). [`WindowSampling::Random`] picks a selected window uniformly for
    /// every row; [`WindowSampling::Shuffled`] walks a fresh permutation of the selection every epoch. The
    /// selection is part of the configuration, not of [`BatcherState`]: a resumed run selects again.
    pub fn select_windows(&self, starts: Vec<usize>, sampling: WindowSampling, seed: u64) -> Result<Self> {
        let here = std::path::Path::new("<batcher>");
        if starts.is_empty() {
            return Err(format_err(here, "an empty window selection".to_string()));
        }
        if let Some(&bad) = starts.iter().find(|&&s| s + self.context >= self.tokens.len()) {
            return Err(format_err(
                here,
                format!(
                    "selected window start {bad} + context {} runs past the stream of {} tokens",
                    self.context,
                    self.tokens.len()
                ),
            ));
        }
        Ok(LmBatcher { tokens: self.tokens.clone(), sampling, seed, drawn: 0, selected: Some(starts.into()), ..*self })
    }

    /// The same stream, selection, sampling and seed with `batch` windows per batch, at position 0.
    pub fn resized(&self, batch: usize) -> Result<Self> {
        if batch == 0 {
            return Err(format_err(std::path::Path::new("<batcher>"), "batch must be positive".to_string()));
        }
        Ok(LmBatcher { batch, drawn: 0, ..self.clone() })
    }

    /// The selected window starts, if this batcher draws from a selection.
    pub fn selection(&self) -> Option<&[usize]> {
        self.selected.as_deref()
    }

    pub fn state(&self) -> BatcherState {
        BatcherState { seed: self.seed, batches_drawn: self.drawn }
    }

    /// Continues from a saved position. The seed must match the one this batcher was built with.
    pub fn restore(&mut self, state: BatcherState) -> Result<()> {
        if state.seed != self.seed {
            return Err(format_err(
                std::path::Path::new("<batcher>"),
                format!("checkpoint was written with data seed {} but this run uses {}", state.seed, self.seed),
            ));
        }
        self.drawn = state.batches_drawn;
        Ok(())
    }

    /// The next batch (advances the position).
    pub fn next_batch(&mut self) -> LmBatch {
        let b = self.batch_at(self.drawn);
        self.drawn += 1;
        b
    }

    /// Batch number `index`, without moving the position.
    pub fn batch_at(&self, index: u64) -> LmBatch {
        let starts: Vec<usize> = match self.sampling {
            WindowSampling::Random => {
                let mut rng = ChaCha8Rng::seed_from_u64(self.seed);
                rng.set_stream(index);
                match &self.selected {
                    Some(sel) => (0..self.batch).map(|_| sel[rng.random_range(0..sel.len())]).collect(),
                    None => {
                        let hi = self.tokens.len() - self.context;
                        (0..self.batch).map(|_| rng.random_range(0..hi)).collect()
                    }
                }
            }
            WindowSampling::Shuffled => {
                let per_epoch = self.windows_per_epoch() as u64;
                (0..self.batch as u64)
                    .map(|j| {
                        let k = index * self.batch as u64 + j;
                        let (epoch, slot) = (k / per_epoch, (k % per_epoch) as usize);
                        let window = self.epoch_order(epoch)[slot];
                        match &self.selected {
                            Some(sel) => sel[window],
                            None => window * self.context,
                        }
                    })
                    .collect()
            }
        };
        self.windows(&starts)
    }

    /// The windows starting at `starts`, as one batch.
    fn windows(&self, starts: &[usize]) -> LmBatch {
        let mut inputs = Vec::with_capacity(starts.len() * self.context);
        let mut targets = Vec::with_capacity(starts.len() * self.context);
        for &s in starts {
            inputs.extend(self.tokens[s..s + self.context].iter().map(|&t| t as usize));
            targets.extend(self.tokens[s + 1..s + self.context + 1].iter().map(|&t| t as usize));
        }
        LmBatch { inputs, targets, batch: starts.len(), context: self.context }
    }

    fn epoch_order(&self, epoch: u64) -> Vec<usize> {
        // Fisher-Yates with a stream per epoch (the top bit keeps these streams apart from Random's).
        let mut rng = ChaCha8Rng::seed_from_u64(self.seed);
        rng.set_stream(epoch | (1 << 63));
        let mut order: Vec<usize> = (0..self.windows_per_epoch()).collect();
        for i in (1..order.len()).rev() {
            let j = rng.random_range(0..=i);
            order.swap(i, j);
        }
        order
    }

    /// Every non-overlapping window (or every selected one) in order, in batches (evaluation over a whole
    /// split, scoring for selection), built as they are consumed. The last batch may be smaller.
    pub fn sequential_batches(&self) -> impl Iterator<Item = LmBatch> + '_ {
        let n = self.windows_per_epoch();
        (0..n).step_by(self.batch).map(move |first| {
            let starts: Vec<usize> = (first..n.min(first + self.batch))
                .map(|w| self.selected.as_ref().map_or(w * self.context, |s| s[w]))
                .collect();
            self.windows(&starts)
        })
    }

    /// A batcher over the same token stream and selection (shared, not copied) with another sampling and seed,
    /// at position 0.
    pub fn resampled(&self, sampling: WindowSampling, seed: u64) -> Self {
        LmBatcher { tokens: self.tokens.clone(), sampling, seed, drawn: 0, selected: self.selected.clone(), ..*self }
    }
}

/// Pads token sequences to the longest (at most `max_len`, longer ones truncated) with `pad_id`; returns the ids
/// and the mask of real tokens, both `[batch, len]` row-major, and `len`.
pub fn pad_sequences(seqs: &[Vec<u32>], pad_id: u32, max_len: usize) -> (Vec<u32>, Vec<bool>, usize) {
    let len = seqs.iter().map(|s| s.len().min(max_len)).max().unwrap_or(0);
    let mut ids = vec![pad_id; seqs.len() * len];
    let mut mask = vec![false; seqs.len() * len];
    for (i, s) in seqs.iter().enumerate() {
        let n = s.len().min(max_len);
        ids[i * len..i * len + n].copy_from_slice(&s[..n]);
        mask[i * len..i * len + n].fill(true);
    }
    (ids, mask, len)
}
