//! SALT_DS data selection: score each training window with the teacher and keep the "hard but learnable" ones
//! for the distillation phase.
//!
//! A window's score is the median per-token teacher loss over the tokens whose target is among the teacher's
//! top-`k` predictions (learnable: the teacher ranks the answer highly; hard: it is still unsure). Windows with
//! no such token have no score and are never selected. The top `keep_fraction` of the scored pool is selected.

use data::batch::{LmBatcher, WindowSampling};
use rand::RngExt;
use serde::{Deserialize, Serialize};
use tensor::no_grad;
use transformer::{Decoder, flops};

use crate::{Error, Result};

/// How SALT_DS selects windows.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SelectionConfig {
    /// A token is learnable when its target is among the teacher's top `top_k` predictions (the paper: 10).
    pub top_k: usize,
    /// Share of the scored pool kept for the distillation phase.
    pub keep_fraction: f64,
    /// Non-overlapping windows scored (drawn without replacement); 0 scores every window of the split.
    pub pool_windows: usize,
    /// Windows per teacher forward pass while scoring.
    pub score_batch: usize,
}

impl SelectionConfig {
    pub fn validate(&self) -> Result<()> {
        if self.top_k == 0 || self.score_batch == 0 || !(self.keep_fraction > 0.0 && self.keep_fraction <= 1.0) {
            return Err(Error::Config(format!(
                "selection needs top_k and score_batch positive and keep_fraction in (0, 1]; got {}, {}, {}",
                self.top_k, self.score_batch, self.keep_fraction
            )));
        }
        Ok(())
    }
}

/// Per-token teacher loss (`-log p(target)`) and whether the target is in the top `k`, for `[rows, vocab]`
/// logits. Ties count in the target's favour: it is in the top `k` when fewer than `k` logits exceed its own.
pub fn token_losses(logits: &[f32], vocab: usize, targets: &[usize], k: usize) -> Vec<(f64, bool)> {
    logits
        .chunks(vocab)
        .zip(targets)
        .map(|(row, &t)| {
            let m = row.iter().copied().fold(f32::NEG_INFINITY, f32::max) as f64;
            let lse = m + row.iter().map(|&v| (v as f64 - m).exp()).sum::<f64>().ln();
            let above = row.iter().filter(|&&v| v > row[t]).count();
            (lse - row[t] as f64, above < k)
        })
        .collect()
}

/// The median loss over the learnable tokens (`None` when there are none).
pub fn sequence_score(tokens: &[(f64, bool)]) -> Option<f64> {
    let mut losses: Vec<f64> = tokens.iter().filter(|(_, learnable)| *learnable).map(|(l, _)| *l).collect();
    if losses.is_empty() {
        return None;
    }
    losses.sort_by(f64::total_cmp);
    Some(report::stats::quantile_sorted(&losses, 0.5))
}

/// Indices of the top `fraction` of `scores` (rounded up, at least one when any window has a score), highest
/// first, ties by index; windows without a score are never chosen.
pub fn select_top(scores: &[Option<f64>], fraction: f64) -> Vec<usize> {
    let mut scored: Vec<(usize, f64)> = scores.iter().enumerate().filter_map(|(i, s)| Some((i, (*s)?))).collect();
    scored.sort_by(|a, b| b.1.total_cmp(&a.1).then(a.0.cmp(&b.0)));
    let keep = ((fraction * scores.len() as f64).ceil() as usize).min(scored.len());
    scored.into_iter().take(keep).map(|(i, _)| i).collect()
}

/// What a selection pass did.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Selection {
    /// Start offsets of the scored windows.
    pub pool: Vec<usize>,
    /// Their scores (`None`: no learnable token).
    pub scores: Vec<Option<f64>>,
    /// Start offsets of the selected windows, best first.
    pub selected: Vec<usize>,
    /// Matrix-product FLOPs of the teacher's scoring passes.
    pub flops: u64,
}

impl Selection {
    /// A batcher drawing only the selected windows, with `sampling` and `seed`.
    pub fn batcher(&self, train: &LmBatcher, sampling: WindowSampling, seed: u64) -> Result<LmBatcher> {
        Ok(train.select_windows(self.selected.clone(), sampling, seed)?)
    }
}

/// Scores a pool of non-overlapping windows of `train`'s stream with `teacher` and selects the top fraction.
/// The pool is drawn with `seed` (the whole split when `pool_windows` is 0 or exceeds it).
pub fn select(teacher: &Decoder<f32>, train: &LmBatcher, cfg: &SelectionConfig, seed: u64) -> Result<Selection> {
    cfg.validate()?;
    let context = train.context();
    if teacher.config.context < context {
        return Err(Error::Config(format!(
            "the teacher's context {} is shorter than the windows ({context})",
            teacher.config.context
        )));
    }
    let n = (train.tokens().len() - 1) / context;
    let mut windows: Vec<usize> = (0..n).collect();
    if cfg.pool_windows > 0 && cfg.pool_windows < n {
        // Partial Fisher-Yates: the first pool_windows entries are a uniform sample without replacement.
        let mut rng = tensor::seeded(seed);
        for i in 0..cfg.pool_windows {
            let j = rng.random_range(i..n);
            windows.swap(i, j);
        }
        windows.truncate(cfg.pool_windows);
        windows.sort_unstable();
    }
    let pool: Vec<usize> = windows.iter().map(|w| w * context).collect();
    let scorer = train.select_windows(pool.clone(), WindowSampling::Shuffled, 0)?.resized(cfg.score_batch)?;
    let vocab = teacher.config.vocab_size;
    let (mut scores, mut total_flops) = (Vec::with_capacity(pool.len()), 0u64);
    for b in scorer.sequential_batches() {
        if let Some(&bad) = b.targets.iter().find(|&&t| t >= vocab) {
            return Err(Error::Config(format!("token {bad} outside the teacher's vocabulary of {vocab}")));
        }
        let logits = no_grad(|| teacher.forward(&b.inputs, b.batch, b.context))?;
        total_flops += flops::decoder_forward(&teacher.config, b.batch, b.context, teacher.n_layers());
        let values = logits.value().as_standard_layout().into_owned();
        let flat = values.as_slice().expect("standard layout");
        let tokens = token_losses(flat, vocab, &b.targets, cfg.top_k);
        scores.extend(tokens.chunks(b.context).map(sequence_score));
    }
    let selected = select_top(&scores, cfg.keep_fraction).into_iter().map(|i| pool[i]).collect();
    Ok(Selection { pool, scores, selected, flops: total_flops })
}
