//! Growth operators: add `block` layers to a decoder by layer index, moving the optimizer state with the
//! parameters so that every layer keeps its own moments.

use serde::{Deserialize, Serialize};
use tensor::OptimizerState;
use transformer::Decoder;

use crate::{Error, Result};

/// Where the new layers come from and where they go, for a model of `n` layers growing by a block of `b`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Operator {
    /// Gradual stacking: copy the top block `[n-b, n)` and put the copy on top.
    CopyTop,
    /// MIDAS: copy the middle block `[m, m+b)`, `m = (n-b)/2`, and insert the copy right after it.
    CopyMiddle,
    /// Copy the bottom block `[0, b)` and insert the copy right after it.
    CopyBottom,
    /// Copy each layer of the top block and insert each copy right after its original (`.., l, l', l+1, (l+1)', ..`).
    Interleave,
    /// Freshly initialised layers on top.
    FreshTop,
    /// Freshly initialised layers where MIDAS would put its copies (the control for "copying helps").
    FreshMiddle,
}

impl Operator {
    /// Every operator, for pools of candidates (LAG).
    pub const ALL: [Operator; 6] = [
        Operator::CopyTop,
        Operator::CopyMiddle,
        Operator::CopyBottom,
        Operator::Interleave,
        Operator::FreshTop,
        Operator::FreshMiddle,
    ];

    pub fn name(&self) -> &'static str {
        match self {
            Operator::CopyTop => "copy top (stacking)",
            Operator::CopyMiddle => "copy middle (MIDAS)",
            Operator::CopyBottom => "copy bottom",
            Operator::Interleave => "interleave",
            Operator::FreshTop => "fresh top",
            Operator::FreshMiddle => "fresh middle",
        }
    }

    /// `(source, insert at)` of each new layer, in the order they are inserted, for a model of `n` layers;
    /// `source` is `None` for a fresh layer. Each insertion position is in the model as it is after the earlier
    /// insertions; every source sits below its insertion point, so inserting never moves a source.
    pub fn placements(&self, n: usize, block: usize) -> Vec<(Option<usize>, usize)> {
        let middle = (n - block) / 2;
        (0..block)
            .map(|j| match self {
                Operator::CopyTop => (Some(n - block + j), n + j),
                Operator::CopyMiddle => (Some(middle + j), middle + block + j),
                Operator::CopyBottom => (Some(j), block + j),
                Operator::Interleave => (Some(n - block + 2 * j), n - block + 2 * j + 1),
                Operator::FreshTop => (None, n + j),
                Operator::FreshMiddle => (None, middle + block + j),
            })
            .collect()
    }
}

/// The optimizer state a new layer starts with.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum MomentPolicy {
    /// No state: the new layer's first update is Adam's first step (P4's choice).
    Fresh,
    /// A copy of its source layer's state (fresh layers still start empty).
    Copy,
}

/// What one growth did.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct GrowthEvent {
    pub operator: Operator,
    pub from_layers: usize,
    pub to_layers: usize,
    /// Indices of the new layers in the grown model.
    pub new_layers: Vec<usize>,
    /// `(old, new)` parameter-prefix renames, in the order they were applied (model and optimizer state).
    pub renames: Vec<(String, String)>,
}

/// Grows `model` by `block` layers with `operator`, applying every parameter rename to `state` in order so that
/// shifted layers keep their own moments; new layers get state per `moments`. Fresh layers are drawn from
/// `seed` (one stream per inserted layer).
pub fn grow(
    model: &mut Decoder<f32>,
    state: &mut OptimizerState<f32>,
    operator: Operator,
    block: usize,
    moments: MomentPolicy,
    seed: u64,
) -> Result<GrowthEvent> {
    let n = model.n_layers();
    if block == 0 || block > n {
        return Err(Error::Config(format!("a block of {block} layers from a {n}-layer model")));
    }
    let mut renames = Vec::new();
    let mut new_layers = Vec::new();
    for (j, (source, at)) in operator.placements(n, block).into_iter().enumerate() {
        let step = match source {
            Some(from) => model.insert_layer_copy(from, at)?,
            None => model.insert_layer_fresh(at, layer_seed(seed, j))?,
        };
        state.apply_renames(&step)?;
        if let (Some(from), MomentPolicy::Copy) = (source, moments) {
            state.copy_prefix(&Decoder::<f32>::layer_prefix(from), &Decoder::<f32>::layer_prefix(at))?;
        }
        // Earlier new layers at or above this insertion point moved up by one.
        new_layers.iter_mut().filter(|l| **l >= at).for_each(|l| *l += 1);
        new_layers.push(at);
        renames.extend(step);
    }
    new_layers.sort_unstable();
    Ok(GrowthEvent { operator, from_layers: n, to_layers: model.n_layers(), new_layers, renames })
}

/// The seed of the `j`-th fresh layer of one growth: a SplitMix64 mix, so layers never share a stream.
fn layer_seed(seed: u64, j: usize) -> u64 {
    let mut z = seed ^ (j as u64 + 1).wrapping_mul(0x9e37_79b9_7f4a_7c15);
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}
