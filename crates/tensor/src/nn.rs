//! Layers as plain structs built from a [`ParamPath`], so every parameter has a stable hierarchical name
//! (`blocks.3.attn.q.weight`). Building a layer where the names exist already reuses those parameters
//! (after loading a checkpoint, or after a growth operator copied a layer).

use ndarray::{ArrayD, IxDyn};
use serde::{Deserialize, Serialize};

use crate::{Conv2dSpec, Float, GeluApprox, ParamPath, Rng, Tensor, Var, rng};

/// A layer with one input and one output.
pub trait Module<F: Float = f32> {
    fn forward(&self, x: &Tensor<F>) -> Tensor<F>;
}

/// Elementwise nonlinearity.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Activation {
    Relu,
    Gelu,
    GeluTanh,
    Tanh,
    Sigmoid,
    Identity,
}

impl Activation {
    pub fn apply<F: Float>(self, x: &Tensor<F>) -> Tensor<F> {
        match self {
            Activation::Relu => x.relu(),
            Activation::Gelu => x.gelu(GeluApprox::Erf),
            Activation::GeluTanh => x.gelu(GeluApprox::Tanh),
            Activation::Tanh => x.tanh(),
            Activation::Sigmoid => x.sigmoid(),
            Activation::Identity => x.clone(),
        }
    }
}

/// `y = x W^T + b`, weight `[out, in]` (PyTorch's layout, so HuggingFace weights load unchanged).
#[derive(Debug, Clone)]
pub struct Linear<F: Float = f32> {
    pub weight: Var<F>,
    pub bias: Option<Var<F>>,
}

impl<F: Float> Linear<F> {
    /// PyTorch's default init: `U(-1/sqrt(in), 1/sqrt(in))` for weight and bias.
    pub fn new(p: &ParamPath<F>, in_features: usize, out_features: usize, bias: bool, rng: &mut Rng) -> Self {
        let a = 1.0 / (in_features.max(1) as f64).sqrt();
        Self::with_std(p, in_features, out_features, bias, None, a, rng)
    }

    /// Weight `N(0, std^2)` (GPT-2 style), zero bias.
    pub fn normal(
        p: &ParamPath<F>,
        in_features: usize,
        out_features: usize,
        bias: bool,
        std: f64,
        rng: &mut Rng,
    ) -> Self {
        Self::with_std(p, in_features, out_features, bias, Some(std), 0.0, rng)
    }

    fn with_std(p: &ParamPath<F>, i: usize, o: usize, bias: bool, std: Option<f64>, bound: f64, rng: &mut Rng) -> Self {
        let weight = p.var("weight", &[o, i], || match std {
            Some(s) => rng::normal(&[o, i], 0.0, s, rng),
            None => rng::uniform(&[o, i], -bound, bound, rng),
        });
        let bias = bias.then(|| {
            p.var("bias", &[o], || match std {
                Some(_) => ArrayD::zeros(IxDyn(&[o])),
                None => rng::uniform(&[o], -bound, bound, rng),
            })
        });
        Linear { weight, bias }
    }
}

impl<F: Float> Module<F> for Linear<F> {
    fn forward(&self, x: &Tensor<F>) -> Tensor<F> {
        let b = self.bias.as_ref().map(|b| b.tensor());
        x.linear(&self.weight.tensor(), b.as_ref())
    }
}

/// Lookup table `[num, dim]`.
#[derive(Debug, Clone)]
pub struct Embedding<F: Float = f32> {
    pub weight: Var<F>,
}

impl<F: Float> Embedding<F> {
    pub fn new(p: &ParamPath<F>, num: usize, dim: usize, std: f64, rng: &mut Rng) -> Self {
        Embedding { weight: p.var("weight", &[num, dim], || rng::normal(&[num, dim], 0.0, std, rng)) }
    }

    /// Rows for `ids`, shaped `[ids_shape.., dim]`.
    #[track_caller]
    pub fn forward_ids(&self, ids: &[usize], ids_shape: &[usize]) -> Tensor<F> {
        let w = self.weight.tensor();
        let dim = w.shape()[1];
        let mut shape = ids_shape.to_vec();
        shape.push(dim);
        w.index_select(0, ids).reshape(&shape)
    }
}

/// Layer normalisation over the last axis, with scale and shift.
#[derive(Debug, Clone)]
pub struct LayerNorm<F: Float = f32> {
    pub weight: Var<F>,
    pub bias: Var<F>,
    pub eps: f64,
}

impl<F: Float> LayerNorm<F> {
    pub fn new(p: &ParamPath<F>, dim: usize, eps: f64) -> Self {
        LayerNorm {
            weight: p.var("weight", &[dim], || ArrayD::ones(IxDyn(&[dim]))),
            bias: p.var("bias", &[dim], || ArrayD::zeros(IxDyn(&[dim]))),
            eps,
        }
    }
}

impl<F: Float> Module<F> for LayerNorm<F> {
    fn forward(&self, x: &Tensor<F>) -> Tensor<F> {
        x.layer_norm(&self.weight.tensor(), &self.bias.tensor(), self.eps)
    }
}

/// A stack of linear layers with an activation between them (none after the last).
#[derive(Debug, Clone)]
pub struct Mlp<F: Float = f32> {
    pub layers: Vec<Linear<F>>,
    pub activation: Activation,
}

impl<F: Float> Mlp<F> {
    /// `dims = [in, hidden.., out]`; layers are named `0`, `1`, ...
    pub fn new(p: &ParamPath<F>, dims: &[usize], activation: Activation, rng: &mut Rng) -> Self {
        assert!(dims.len() >= 2, "Mlp needs at least input and output sizes");
        let layers = dims.windows(2).enumerate().map(|(i, w)| Linear::new(&p.sub(i), w[0], w[1], true, rng)).collect();
        Mlp { layers, activation }
    }
}

impl<F: Float> Module<F> for Mlp<F> {
    fn forward(&self, x: &Tensor<F>) -> Tensor<F> {
        let mut h = x.clone();
        for (i, l) in self.layers.iter().enumerate() {
            h = l.forward(&h);
            if i + 1 < self.layers.len() {
                h = self.activation.apply(&h);
            }
        }
        h
    }
}

/// Multi-head scaled dot-product attention with projections `q`, `k`, `v`, `o`.
#[derive(Debug, Clone)]
pub struct MultiHeadAttention<F: Float = f32> {
    pub q: Linear<F>,
    pub k: Linear<F>,
    pub v: Linear<F>,
    pub o: Linear<F>,
    pub n_heads: usize,
    pub causal: bool,
}

impl<F: Float> MultiHeadAttention<F> {
    pub fn new(p: &ParamPath<F>, d_model: usize, n_heads: usize, causal: bool, init_std: f64, rng: &mut Rng) -> Self {
        assert!(n_heads > 0 && d_model % n_heads == 0, "attention: d_model {d_model} not divisible by {n_heads} heads");
        MultiHeadAttention {
            q: Linear::normal(&p.sub("q"), d_model, d_model, true, init_std, rng),
            k: Linear::normal(&p.sub("k"), d_model, d_model, true, init_std, rng),
            v: Linear::normal(&p.sub("v"), d_model, d_model, true, init_std, rng),
            o: Linear::normal(&p.sub("o"), d_model, d_model, true, init_std, rng),
            n_heads,
            causal,
        }
    }

    /// `x: [batch, time, d_model]`; `key_padding: [batch, time]`, `true` for real tokens (keys marked
    /// `false` receive no attention).
    #[track_caller]
    pub fn forward_masked(&self, x: &Tensor<F>, key_padding: Option<&ArrayD<bool>>) -> Tensor<F> {
        assert_eq!(x.ndim(), 3, "attention input {:?} must be [batch, time, d_model]", x.shape());
        let (b, t, d) = (x.shape()[0], x.shape()[1], x.shape()[2]);
        let h = self.n_heads;
        let dh = d / h;
        let heads = |y: Tensor<F>| y.reshape(&[b, t, h, dh]).permute(&[0, 2, 1, 3]);
        let q = heads(self.q.forward(x));
        let k = heads(self.k.forward(x));
        let v = heads(self.v.forward(x));
        let mask = attention_mask(b, t, self.causal, key_padding);
        let attn = q.matmul(&k.t()).scaled_masked_softmax(1.0 / (dh as f64).sqrt(), mask.as_ref());
        let y = attn.matmul(&v).permute(&[0, 2, 1, 3]).reshape(&[b, t, d]);
        self.o.forward(&y)
    }
}

/// `[batch, 1, time, time]` mask, `true` where attention is forbidden.
fn attention_mask(b: usize, t: usize, causal: bool, key_padding: Option<&ArrayD<bool>>) -> Option<ArrayD<bool>> {
    if !causal && key_padding.is_none() {
        return None;
    }
    if let Some(kp) = key_padding {
        assert_eq!(kp.shape(), [b, t], "key padding mask {:?} for batch {b}, time {t}", kp.shape());
    }
    let mut mask = vec![false; b * t * t];
    for (bi, plane) in mask.chunks_mut(t * t).enumerate() {
        for (qi, row) in plane.chunks_mut(t).enumerate() {
            for (ki, m) in row.iter_mut().enumerate() {
                *m = (causal && ki > qi) || key_padding.is_some_and(|kp| !kp[[bi, ki]]);
            }
        }
    }
    Some(ArrayD::from_shape_vec(IxDyn(&[b, 1, t, t]), mask).expect("size"))
}

impl<F: Float> Module<F> for MultiHeadAttention<F> {
    fn forward(&self, x: &Tensor<F>) -> Tensor<F> {
        self.forward_masked(x, None)
    }
}

/// Where a transformer block normalises.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum NormPlacement {
    /// `x + f(LN(x))` (GPT-2 and later).
    PreLn,
    /// `LN(x + f(x))` (the original transformer, BERT).
    PostLn,
}

/// Sizes and options of a transformer block.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct BlockConfig {
    pub d_model: usize,
    pub n_heads: usize,
    pub d_ff: usize,
    pub causal: bool,
    pub norm: NormPlacement,
    pub activation: Activation,
    pub dropout: f64,
    pub ln_eps: f64,
    pub init_std: f64,
}

/// Attention and MLP sub-layers with residual connections: parameters `attn.{q,k,v,o}`, `ln1`, `ln2`,
/// `mlp.fc`, `mlp.proj`.
#[derive(Debug, Clone)]
pub struct TransformerBlock<F: Float = f32> {
    pub attn: MultiHeadAttention<F>,
    pub ln1: LayerNorm<F>,
    pub ln2: LayerNorm<F>,
    pub fc: Linear<F>,
    pub proj: Linear<F>,
    pub config: BlockConfig,
}

impl<F: Float> TransformerBlock<F> {
    pub fn new(p: &ParamPath<F>, config: &BlockConfig, rng: &mut Rng) -> Self {
        let c = config;
        TransformerBlock {
            attn: MultiHeadAttention::new(&p.sub("attn"), c.d_model, c.n_heads, c.causal, c.init_std, rng),
            ln1: LayerNorm::new(&p.sub("ln1"), c.d_model, c.ln_eps),
            ln2: LayerNorm::new(&p.sub("ln2"), c.d_model, c.ln_eps),
            fc: Linear::normal(&p.sub("mlp").sub("fc"), c.d_model, c.d_ff, true, c.init_std, rng),
            proj: Linear::normal(&p.sub("mlp").sub("proj"), c.d_ff, c.d_model, true, c.init_std, rng),
            config: config.clone(),
        }
    }

    /// `dropout_rng = None` evaluates (no dropout); `Some` trains with dropout drawn from it.
    pub fn forward_t(
        &self,
        x: &Tensor<F>,
        key_padding: Option<&ArrayD<bool>>,
        mut dropout_rng: Option<&mut Rng>,
    ) -> Tensor<F> {
        let p = self.config.dropout;
        let mut drop = |y: Tensor<F>| match dropout_rng.as_deref_mut() {
            Some(r) if p > 0.0 => y.dropout(p, r),
            _ => y,
        };
        let mlp = |y: &Tensor<F>| self.proj.forward(&self.config.activation.apply(&self.fc.forward(y)));
        match self.config.norm {
            NormPlacement::PreLn => {
                let x = x + drop(self.attn.forward_masked(&self.ln1.forward(x), key_padding));
                &x + drop(mlp(&self.ln2.forward(&x)))
            }
            NormPlacement::PostLn => {
                let x = self.ln1.forward(&(x + drop(self.attn.forward_masked(x, key_padding))));
                self.ln2.forward(&(&x + drop(mlp(&x))))
            }
        }
    }
}

impl<F: Float> Module<F> for TransformerBlock<F> {
    fn forward(&self, x: &Tensor<F>) -> Tensor<F> {
        self.forward_t(x, None, None)
    }
}

/// 2-D convolution layer, weight `[out, in, k, k]` (Kaiming-uniform init as PyTorch).
#[derive(Debug, Clone)]
pub struct Conv2d<F: Float = f32> {
    pub weight: Var<F>,
    pub bias: Option<Var<F>>,
    pub spec: Conv2dSpec,
}

impl<F: Float> Conv2d<F> {
    pub fn new(
        p: &ParamPath<F>,
        in_ch: usize,
        out_ch: usize,
        kernel: usize,
        spec: Conv2dSpec,
        bias: bool,
        rng: &mut Rng,
    ) -> Self {
        let fan_in = in_ch * kernel * kernel;
        let bound = 1.0 / (fan_in as f64).sqrt();
        Conv2d {
            weight: p.var("weight", &[out_ch, in_ch, kernel, kernel], || {
                rng::uniform(&[out_ch, in_ch, kernel, kernel], -bound, bound, rng)
            }),
            bias: bias.then(|| p.var("bias", &[out_ch], || rng::uniform(&[out_ch], -bound, bound, rng))),
            spec,
        }
    }
}

impl<F: Float> Module<F> for Conv2d<F> {
    fn forward(&self, x: &Tensor<F>) -> Tensor<F> {
        let b = self.bias.as_ref().map(|b| b.tensor());
        x.conv2d(&self.weight.tensor(), b.as_ref(), self.spec)
    }
}
