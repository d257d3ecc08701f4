//! Exact FLOPs of the matrix products of a step, for the layers actually run.
//!
//! Counted: every matrix product, `2 m n k` each, forward and backward; this is what the GEMM calls execute
//! and what `strata_tensor::matmul_flops` counts, which the tests compare against. Not counted: embedding
//! lookups, layer norms, softmax, activations and the optimizer update, all `O(tokens * width)` against the
//! products' `O(tokens * width^2)` (the convention of the PaLM / Chinchilla FLOP counts).
//!
//! In a training step every product's inputs are tracked, so the backward pass computes both input gradients
//! of every product: backward = 2 x forward.

use serde::{Deserialize, Serialize};

use crate::{BertConfig, DecoderConfig};

/// FLOPs of one step.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
pub struct FlopCount {
    pub forward: u64,
    pub backward: u64,
}

impl FlopCount {
    pub fn total(&self) -> u64 {
        self.forward + self.backward
    }

    /// Forward only (inference).
    pub fn inference(forward: u64) -> Self {
        FlopCount { forward, backward: 0 }
    }

    /// Forward plus a full backward pass.
    pub fn training(forward: u64) -> Self {
        FlopCount { forward, backward: 2 * forward }
    }
}

fn mm(m: usize, n: usize, k: usize) -> u64 {
    2 * (m as u64) * (n as u64) * (k as u64)
}

/// Forward FLOPs of one attention + MLP block on `tokens = batch * t` tokens attending over `t` keys each.
fn block_forward(batch: usize, t: usize, d: usize, ff: usize, qkv_fused: bool) -> u64 {
    let n = batch * t;
    let projections = if qkv_fused { mm(n, 3 * d, d) } else { 3 * mm(n, d, d) };
    projections + 2 * mm(batch * t, t, d) + mm(n, d, d) + mm(n, ff, d) + mm(n, d, ff)
}

/// Forward FLOPs of a decoder on `[batch, t]` tokens running `layers_run` layers, logits included.
pub fn decoder_forward(c: &DecoderConfig, batch: usize, t: usize, layers_run: usize) -> u64 {
    layers_run as u64 * block_forward(batch, t, c.d_model, c.ff(), true) + mm(batch * t, c.vocab_size, c.d_model)
}

/// A decoder training step (loss + backward).
pub fn decoder_step(c: &DecoderConfig, batch: usize, t: usize, layers_run: usize) -> FlopCount {
    FlopCount::training(decoder_forward(c, batch, t, layers_run))
}

/// Forward FLOPs of an encoder on `[batch, t]` tokens (hidden states, no head).
pub fn encoder_forward(c: &BertConfig, batch: usize, t: usize, layers_run: usize) -> u64 {
    layers_run as u64 * block_forward(batch, t, c.hidden_size, c.intermediate_size, false)
}
