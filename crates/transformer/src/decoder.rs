//! GPT-style decoder: token (+ learned position) embeddings, pre-LN blocks `x + attn(LN(x))`,
//! `x + mlp(LN(x))`, a final LN and a (tied or separate) output head.
//!
//! Parameter names: `tok_emb.weight`, `pos_emb.weight` (learned positions), `layers.{i}.{ln1, attn.qkv,
//! attn.proj, ln2, mlp.fc, mlp.proj}.{weight, bias}`, `ln_f.{weight, bias}`, `head.weight` (untied).

use rand::RngExt;
use serde::{Deserialize, Serialize};
use tensor::nn::{Activation, Embedding, LayerNorm, Linear, Module};
use tensor::{AttentionMask, Float, Params, Rng, Tensor, no_grad};

use crate::attention::{Rope, merge_heads, split_heads};
use crate::{Error, Result};

/// How positions enter the model.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Positions {
    /// A learned `[context, d_model]` table added to the token embeddings (GPT-2).
    Learned,
    /// Rotary embeddings applied to queries and keys in every layer (base 10,000).
    Rotary,
}

/// Sizes and options of a decoder. `Default` is nanoGPT's GPT-2 layout at toy size.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DecoderConfig {
    pub vocab_size: usize,
    /// Longest sequence (the learned position table's length).
    pub context: usize,
    pub d_model: usize,
    pub n_layers: usize,
    pub n_heads: usize,
    /// MLP hidden size; 0 means `4 * d_model`.
    pub d_ff: usize,
    pub positions: Positions,
    /// Share the output head with the token embedding.
    pub tie_embeddings: bool,
    /// Biases in linear layers and layer norms (nanoGPT's `bias`; false freezes LN shifts at zero).
    pub bias: bool,
    pub activation: Activation,
    pub dropout: f64,
    pub ln_eps: f64,
    /// Standard deviation of weight initialisation; residual projections get `init_std / sqrt(2 n_layers)`.
    pub init_std: f64,
}

impl Default for DecoderConfig {
    fn default() -> Self {
        DecoderConfig {
            vocab_size: 256,
            context: 64,
            d_model: 64,
            n_layers: 2,
            n_heads: 4,
            d_ff: 0,
            positions: Positions::Learned,
            tie_embeddings: true,
            bias: true,
            activation: Activation::Gelu,
            dropout: 0.0,
            ln_eps: 1e-5,
            init_std: 0.02,
        }
    }
}

impl DecoderConfig {
    /// A rotary-position decoder of the given shape whose vocabulary is the tokenizer's (`vocab_size` 0), the
    /// other settings at their defaults: the shape of the growth and SALT reproductions.
    pub fn rotary(context: usize, d_model: usize, n_layers: usize, n_heads: usize) -> Self {
        DecoderConfig {
            vocab_size: 0,
            context,
            d_model,
            n_layers,
            n_heads,
            positions: Positions::Rotary,
            ..Self::default()
        }
    }

    /// nanoGPT's CPU `shakespeare_char` baseline: 4 layers, 4 heads, width 128, context 64, no bias, dropout 0.
    pub fn nanogpt_shakespeare_char(vocab_size: usize) -> Self {
        DecoderConfig { vocab_size, context: 64, d_model: 128, n_layers: 4, n_heads: 4, bias: false, ..Self::default() }
    }

    /// MLP hidden size with the default resolved.
    pub fn ff(&self) -> usize {
        if self.d_ff == 0 { 4 * self.d_model } else { self.d_ff }
    }

    pub fn head_dim(&self) -> usize {
        self.d_model / self.n_heads.max(1)
    }

    pub fn validate(&self) -> Result<()> {
        let bad = |m: String| Err(Error::Config(m));
        if self.vocab_size == 0 || self.context == 0 || self.d_model == 0 || self.n_heads == 0 {
            return bad(format!(
                "vocab_size {}, context {}, d_model {} and n_heads {} must be positive",
                self.vocab_size, self.context, self.d_model, self.n_heads
            ));
        }
        if self.d_model % self.n_heads != 0 {
            return bad(format!("d_model {} is not divisible by n_heads {}", self.d_model, self.n_heads));
        }
        if self.positions == Positions::Rotary && self.head_dim() % 2 != 0 {
            return bad(format!("rotary positions need an even head dim, got {}", self.head_dim()));
        }
        if !(0.0..1.0).contains(&self.dropout) {
            return bad(format!("dropout {} outside [0, 1)", self.dropout));
        }
        if !(self.ln_eps > 0.0) || !(self.init_std > 0.0) || !self.init_std.is_finite() {
            return bad(format!("ln_eps {} and init_std {} must be positive", self.ln_eps, self.init_std));
        }
        Ok(())
    }
}

/// One pre-LN block; parameters under `layers.{i}.`.
#[derive(Debug, Clone)]
pub struct DecoderLayer<F: Float = f32> {
    pub ln1: LayerNorm<F>,
    pub qkv: Linear<F>,
    pub proj: Linear<F>,
    pub ln2: LayerNorm<F>,
    pub fc: Linear<F>,
    pub out: Linear<F>,
}

/// Keys and values of the positions seen so far, per layer (`[b, h, s, dh]` each).
#[derive(Debug, Clone, Default)]
pub struct KvCache<F: Float = f32> {
    layers: Vec<Option<(Tensor<F>, Tensor<F>)>>,
    len: usize,
}

impl<F: Float> KvCache<F> {
    /// Positions cached.
    pub fn len(&self) -> usize {
        self.len
    }

    pub fn is_empty(&self) -> bool {
        self.len == 0
    }
}

impl<F: Float> DecoderLayer<F> {
    fn new(p: &tensor::ParamPath<F>, c: &DecoderConfig, rng: &mut Rng) -> Self {
        let resid_std = c.init_std / (2.0 * c.n_layers.max(1) as f64).sqrt();
        let ln = |name: &str| {
            let l = LayerNorm::new(&p.sub(name), c.d_model, c.ln_eps);
            if !c.bias {
                l.bias.set_trainable(false);
            }
            l
        };
        DecoderLayer {
            ln1: ln("ln1"),
            qkv: Linear::normal(&p.sub("attn").sub("qkv"), c.d_model, 3 * c.d_model, c.bias, c.init_std, rng),
            proj: Linear::normal(&p.sub("attn").sub("proj"), c.d_model, c.d_model, c.bias, resid_std, rng),
            ln2: ln("ln2"),
            fc: Linear::normal(&p.sub("mlp").sub("fc"), c.d_model, c.ff(), c.bias, c.init_std, rng),
            out: Linear::normal(&p.sub("mlp").sub("proj"), c.ff(), c.d_model, c.bias, resid_std, rng),
        }
    }

    /// `x: [b, t, d]` at absolute positions `start..start + t`. With a cache, attends to the cached keys too
    /// and appends this call's keys and values. `branch_scale` multiplies both residual branches (attention and
    /// MLP) before they are added to the stream; at 1 no multiplication is done.
    fn forward(
        &self,
        x: &Tensor<F>,
        c: &DecoderConfig,
        rope: Option<&Rope>,
        start: usize,
        cache: Option<&mut Option<(Tensor<F>, Tensor<F>)>>,
        mut dropout: Option<&mut Rng>,
        branch_scale: f64,
    ) -> Tensor<F> {
        let (b, t, d) = (x.shape()[0], x.shape()[1], x.shape()[2]);
        let h = c.n_heads;
        let mut drop = |y: Tensor<F>| {
            let y = match dropout.as_deref_mut() {
                Some(r) if c.dropout > 0.0 => y.dropout(c.dropout, r),
                _ => y,
            };
            if branch_scale == 1.0 { y } else { y.mul_scalar(F::of(branch_scale)) }
        };
        let qkv = self.qkv.forward(&self.ln1.forward(x));
        let y = match (rope, cache) {
            // Training and full-sequence scoring: heads are read from the fused projection in place.
            (None, None) => qkv.fused_self_attention(h, AttentionMask::Causal),
            (rope, cache) => {
                let parts = qkv.split(2, &[d, d, d]);
                let (mut q, mut k, v) =
                    (split_heads(&parts[0], b, t, h), split_heads(&parts[1], b, t, h), split_heads(&parts[2], b, t, h));
                if let Some(r) = rope {
                    q = r.apply(&q, start);
                    k = r.apply(&k, start);
                }
                let (k, v) = match cache {
                    Some(slot) => {
                        let (k, v) = match slot.take() {
                            Some((pk, pv)) => (Tensor::concat(&[&pk, &k], 2), Tensor::concat(&[&pv, &v], 2)),
                            None => (k, v),
                        };
                        *slot = Some((k.detach(), v.detach()));
                        (k, v)
                    }
                    None => (k, v),
                };
                // The queries are the last t of the s positions, so causal masking covers the cache too.
                let scale = 1.0 / (c.head_dim() as f64).sqrt();
                merge_heads(&Tensor::attention(&q, &k, &v, scale, AttentionMask::Causal))
            }
        };
        let x = x + drop(self.proj.forward(&y));
        let m = self.out.forward(&c.activation.apply(&self.fc.forward(&self.ln2.forward(&x))));
        &x + drop(m)
    }
}

/// How [`Decoder::generate`] picks the next token.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case", deny_unknown_fields)]
pub enum Sampling {
    Greedy,
    /// Softmax of `logits / temperature`, restricted to the `top_k` largest logits when given.
    Temperature {
        temperature: f64,
        top_k: Option<usize>,
    },
}

/// A GPT-style decoder. Its parameters live in [`Decoder::params`].
#[derive(Debug, Clone)]
pub struct Decoder<F: Float = f32> {
    pub config: DecoderConfig,
    pub params: Params<F>,
    pub tok_emb: Embedding<F>,
    pub pos_emb: Option<Embedding<F>>,
    pub layers: Vec<DecoderLayer<F>>,
    pub ln_f: LayerNorm<F>,
    pub head: Option<Linear<F>>,
    rope: Option<Rope>,
    seed: u64,
}

impl<F: Float> Decoder<F> {
    /// A freshly initialised decoder (deterministic in `seed`).
    pub fn new(config: &DecoderConfig, seed: u64) -> Result<Self> {
        config.validate()?;
        Ok(Self::build(config, Params::new(), seed))
    }

    /// Builds the layer structs over `params`, creating (from `seed`) only the parameters that do not exist.
    fn build(config: &DecoderConfig, params: Params<F>, seed: u64) -> Self {
        let c = config;
        let root = params.root();
        let mut rng = tensor::derived(seed, 0);
        let tok_emb = Embedding::new(&root.sub("tok_emb"), c.vocab_size, c.d_model, c.init_std, &mut rng);
        let pos_emb = (c.positions == Positions::Learned)
            .then(|| Embedding::new(&root.sub("pos_emb"), c.context, c.d_model, c.init_std, &mut rng));
        let layers = (0..c.n_layers)
            .map(|i| DecoderLayer::new(&root.sub("layers").sub(i), c, &mut tensor::derived(seed, 1 + i as u64)))
            .collect();
        let ln_f = LayerNorm::new(&root.sub("ln_f"), c.d_model, c.ln_eps);
        if !c.bias {
            ln_f.bias.set_trainable(false);
        }
        let head = (!c.tie_embeddings)
            .then(|| Linear::normal(&root.sub("head"), c.d_model, c.vocab_size, false, c.init_std, &mut rng));
        let rope = (c.positions == Positions::Rotary).then(|| Rope::new(c.head_dim(), c.context, 10_000.0));
        Decoder { config: c.clone(), params, tok_emb, pos_emb, layers, ln_f, head, rope, seed }
    }

    /// An independent model with the same config and weights (its own [`Params`] store, see
    /// [`Params::deep_copy`]); `clone` instead gives a second handle on the same weights.
    pub fn deep_copy(&self) -> Self {
        Self::build(&self.config, self.params.deep_copy(), self.seed)
    }

    pub fn n_layers(&self) -> usize {
        self.layers.len()
    }

    /// Every layer index, in order (the default path through the model).
    pub fn all_layers(&self) -> Vec<usize> {
        (0..self.layers.len()).collect()
    }

    /// Writes the weights as safetensors (atomically) with the config as JSON in the metadata (`config`), so
    /// [`Decoder::load`] needs nothing else.
    pub fn save(&self, path: &std::path::Path) -> Result<()> {
        let config = serde_json::to_string(&self.config).expect("config serializes");
        self.params.save(path, Some(std::collections::HashMap::from([("config".to_string(), config)])))?;
        Ok(())
    }

    /// Loads a decoder written by [`Decoder::save`]: the config from the metadata, then every weight (a missing
    /// or extra tensor, or a shape mismatch, is an error).
    pub fn load(path: &std::path::Path) -> Result<Self> {
        let stored = tensor::read_safetensors(path)?;
        let bad = |message: String| Error::File { path: path.to_path_buf(), message };
        let text =
            stored.metadata.get("config").ok_or_else(|| bad("no `config` in the safetensors metadata".into()))?;
        let config: DecoderConfig = serde_json::from_str(text).map_err(|e| bad(format!("config metadata: {e}")))?;
        config.validate()?;
        let model = Self::build(&config, Params::new(), 0);
        model.params.load(path)?;
        Ok(model)
    }

    /// The parameter-name prefix of layer `i`.
    pub fn layer_prefix(i: usize) -> String {
        format!("layers.{i}")
    }

    /// Trainable parameter count.
    pub fn num_parameters(&self) -> usize {
        self.params.num_trainable()
    }

    fn check_ids(&self, ids: &[usize], batch: usize, t: usize) -> Result<()> {
        if batch == 0 || t == 0 || ids.len() != batch * t {
            return Err(Error::Input(format!("{} ids for batch {batch} x length {t}", ids.len())));
        }
        if t > self.config.context {
            return Err(Error::Input(format!("length {t} exceeds the context {}", self.config.context)));
        }
        if let Some(&bad) = ids.iter().find(|&&i| i >= self.config.vocab_size) {
            return Err(Error::Input(format!("token id {bad} outside the vocabulary of {}", self.config.vocab_size)));
        }
        Ok(())
    }

    fn embed(&self, ids: &[usize], batch: usize, t: usize, start: usize) -> Tensor<F> {
        let x = self.tok_emb.forward_ids(ids, &[batch, t]);
        match &self.pos_emb {
            Some(p) => {
                let pos: Vec<usize> = (start..start + t).collect();
                &x + &p.forward_ids(&pos, &[t])
            }
            None => x,
        }
    }

    fn logits_from(&self, h: &Tensor<F>) -> Tensor<F> {
        let h = self.ln_f.forward(h);
        match &self.head {
            Some(head) => head.forward(&h),
            None => h.linear(&self.tok_emb.weight.tensor(), None),
        }
    }

    /// Logits `[batch, t, vocab]` for `ids` (`[batch, t]` row-major).
    pub fn forward(&self, ids: &[usize], batch: usize, t: usize) -> Result<Tensor<F>> {
        self.forward_layers(ids, batch, t, &self.all_layers(), None)
    }

    /// Logits running only `layers` (indices, in the order given, repeats allowed): layer dropping, looped
    /// depth. `dropout = Some(rng)` trains with dropout drawn from `rng`.
    pub fn forward_layers(
        &self,
        ids: &[usize],
        batch: usize,
        t: usize,
        layers: &[usize],
        dropout: Option<&mut Rng>,
    ) -> Result<Tensor<F>> {
        let path: Vec<(usize, f64)> = layers.iter().map(|&l| (l, 1.0)).collect();
        self.forward_path(ids, batch, t, &path, dropout)
    }

    /// Logits running an explicit path of `(layer, scale)`: each listed layer runs in order with both residual
    /// branches multiplied by its scale; unlisted layers are skipped (the identity on the residual stream) and
    /// get no gradient. RaPTr's random paths with rescaled kept layers. Scale 1 everywhere is
    /// [`Decoder::forward_layers`] exactly.
    pub fn forward_path(
        &self,
        ids: &[usize],
        batch: usize,
        t: usize,
        path: &[(usize, f64)],
        mut dropout: Option<&mut Rng>,
    ) -> Result<Tensor<F>> {
        self.check_ids(ids, batch, t)?;
        if let Some(&(bad, _)) = path.iter().find(|&&(l, _)| l >= self.layers.len()) {
            return Err(Error::Input(format!("layer {bad} of a {}-layer model", self.layers.len())));
        }
        if let Some(&(l, s)) = path.iter().find(|&&(_, s)| !s.is_finite()) {
            return Err(Error::Input(format!("layer {l} has a non-finite scale {s}")));
        }
        let mut h = self.embed(ids, batch, t, 0);
        if let Some(r) = dropout.as_deref_mut() {
            if self.config.dropout > 0.0 {
                h = h.dropout(self.config.dropout, r);
            }
        }
        for &(l, scale) in path {
            h = self.layers[l].forward(&h, &self.config, self.rope.as_ref(), 0, None, dropout.as_deref_mut(), scale);
        }
        Ok(self.logits_from(&h))
    }

    /// Mean next-token cross-entropy of `targets` given `inputs` (both `[batch, t]`).
    pub fn loss(
        &self,
        inputs: &[usize],
        targets: &[usize],
        batch: usize,
        t: usize,
        dropout: Option<&mut Rng>,
    ) -> Result<Tensor<F>> {
        self.loss_layers(inputs, targets, batch, t, &self.all_layers(), dropout)
    }

    /// [`Decoder::loss`] running only `layers`.
    pub fn loss_layers(
        &self,
        inputs: &[usize],
        targets: &[usize],
        batch: usize,
        t: usize,
        layers: &[usize],
        dropout: Option<&mut Rng>,
    ) -> Result<Tensor<F>> {
        let path: Vec<(usize, f64)> = layers.iter().map(|&l| (l, 1.0)).collect();
        self.loss_path(inputs, targets, batch, t, &path, dropout)
    }

    /// [`Decoder::loss`] over an explicit path of `(layer, scale)` (see [`Decoder::forward_path`]).
    pub fn loss_path(
        &self,
        inputs: &[usize],
        targets: &[usize],
        batch: usize,
        t: usize,
        path: &[(usize, f64)],
        dropout: Option<&mut Rng>,
    ) -> Result<Tensor<F>> {
        if targets.len() != inputs.len() {
            return Err(Error::Input(format!("{} targets for {} inputs", targets.len(), inputs.len())));
        }
        if let Some(&bad) = targets.iter().find(|&&i| i >= self.config.vocab_size) {
            return Err(Error::Input(format!("target id {bad} outside the vocabulary of {}", self.config.vocab_size)));
        }
        let logits = self.forward_path(inputs, batch, t, path, dropout)?;
        Ok(logits.reshape(&[batch * t, self.config.vocab_size]).cross_entropy(targets))
    }

    /// Logits of the last position for new tokens `ids` (`[batch, t]`), using and extending `cache`.
    pub fn forward_cached(&self, ids: &[usize], batch: usize, t: usize, cache: &mut KvCache<F>) -> Result<Tensor<F>> {
        self.check_ids(ids, batch, t)?;
        let start = cache.len;
        if start + t > self.config.context {
            return Err(Error::Input(format!(
                "{} cached + {t} new positions exceed the context {}",
                start, self.config.context
            )));
        }
        cache.layers.resize(self.layers.len(), None);
        let logits = no_grad(|| {
            let mut h = self.embed(ids, batch, t, start);
            for (layer, slot) in self.layers.iter().zip(cache.layers.iter_mut()) {
                h = layer.forward(&h, &self.config, self.rope.as_ref(), start, Some(slot), None, 1.0);
            }
            self.logits_from(&h.narrow(1, t - 1, 1))
        });
        cache.len += t;
        Ok(logits.reshape(&[batch, self.config.vocab_size]))
    }

    /// Continues `prompt` by `max_new` tokens. Within the context, a KV cache makes each new token one
    /// position of work; beyond it, each step recomputes the last `context` tokens (as nanoGPT does).
    pub fn generate(&self, prompt: &[usize], max_new: usize, sampling: Sampling, rng: &mut Rng) -> Result<Vec<usize>> {
        Ok(self.generate_impl(prompt, max_new, sampling, rng, true, &[])?.0)
    }

    /// [`Decoder::generate`] that also stops as soon as the new tokens end with one of the `stop` sequences
    /// (as an OpenAI `stop` does); the stop sequence is not returned. Returns the sequence (prompt included)
    /// and whether a stop sequence ended it (false: `max_new` tokens were generated). Empty stop sequences are
    /// ignored.
    pub fn generate_until(
        &self,
        prompt: &[usize],
        max_new: usize,
        sampling: Sampling,
        rng: &mut Rng,
        stop: &[Vec<usize>],
    ) -> Result<(Vec<usize>, bool)> {
        self.generate_impl(prompt, max_new, sampling, rng, true, stop)
    }

    /// [`Decoder::generate`] without the cache: every step runs the whole (cropped) sequence. The reference
    /// the cached path is tested against.
    pub fn generate_uncached(
        &self,
        prompt: &[usize],
        max_new: usize,
        sampling: Sampling,
        rng: &mut Rng,
    ) -> Result<Vec<usize>> {
        Ok(self.generate_impl(prompt, max_new, sampling, rng, false, &[])?.0)
    }

    fn generate_impl(
        &self,
        prompt: &[usize],
        max_new: usize,
        sampling: Sampling,
        rng: &mut Rng,
        cached: bool,
        stop: &[Vec<usize>],
    ) -> Result<(Vec<usize>, bool)> {
        if prompt.is_empty() {
            return Err(Error::Input("generation needs a non-empty prompt".into()));
        }
        if let Sampling::Temperature { temperature, top_k } = sampling {
            if !(temperature > 0.0) || !temperature.is_finite() || top_k == Some(0) {
                return Err(Error::Input(format!("temperature {temperature} and top_k {top_k:?} must be positive")));
            }
        }
        let ctx = self.config.context;
        let mut seq = prompt.to_vec();
        let mut cache = KvCache::default();
        let mut pending = if prompt.len() > ctx { &prompt[prompt.len() - ctx..] } else { prompt }.to_vec();
        for _ in 0..max_new {
            let logits = if cached && cache.len + pending.len() <= ctx {
                let l = self.forward_cached(&pending, 1, pending.len(), &mut cache)?;
                l.value().iter().map(|x| x.to_f64_lossy()).collect::<Vec<f64>>()
            } else {
                let window = &seq[seq.len().saturating_sub(ctx)..];
                let l = no_grad(|| self.forward(window, 1, window.len()))?;
                let v = self.config.vocab_size;
                l.value().iter().skip((window.len() - 1) * v).map(|x| x.to_f64_lossy()).collect()
            };
            let next = pick(&logits, sampling, rng);
            seq.push(next);
            pending = vec![next];
            let generated = &seq[prompt.len()..];
            if let Some(s) = stop.iter().find(|s| !s.is_empty() && generated.ends_with(s)) {
                seq.truncate(seq.len() - s.len());
                return Ok((seq, true));
            }
        }
        Ok((seq, false))
    }

    /// Inserts a copy of layer `from` at index `at` (layers `at..` move up by one), as stacking-style growth
    /// does. Returns the parameter renames `(old, new)` so that optimizer state can follow.
    pub fn insert_layer_copy(&mut self, from: usize, at: usize) -> Result<Vec<(String, String)>> {
        let n = self.layers.len();
        if from >= n || at > n {
            return Err(Error::Input(format!("copy layer {from} to {at} in a {n}-layer model")));
        }
        let tmp = "__copy";
        self.params.copy_prefix(&Self::layer_prefix(from), tmp)?;
        self.insert_staged(tmp, at)
    }

    /// Inserts a freshly initialised layer at index `at` (layers `at..` move up by one), drawn from `seed` with
    /// the initialisation a model of the grown depth gets (residual projections scaled by its layer count).
    /// Returns the parameter renames `(old, new)`.
    pub fn insert_layer_fresh(&mut self, at: usize, seed: u64) -> Result<Vec<(String, String)>> {
        let n = self.layers.len();
        if at > n {
            return Err(Error::Input(format!("insert a layer at {at} in a {n}-layer model")));
        }
        let tmp = "__fresh";
        let grown = DecoderConfig { n_layers: n + 1, ..self.config.clone() };
        DecoderLayer::new(&self.params.root().sub(tmp), &grown, &mut tensor::seeded(seed));
        self.insert_staged(tmp, at)
    }

    /// Moves the layer staged under `tmp` to index `at`, shifting layers `at..` up; rebuilds the layer list.
    fn insert_staged(&mut self, tmp: &str, at: usize) -> Result<Vec<(String, String)>> {
        let n = self.layers.len();
        let mut renames = Vec::new();
        for k in (at..n).rev() {
            let (old, new) = (Self::layer_prefix(k), Self::layer_prefix(k + 1));
            self.params.rename_prefix(&old, &new)?;
            renames.push((old, new));
        }
        self.params.rename_prefix(tmp, &Self::layer_prefix(at))?;
        self.config.n_layers = n + 1;
        *self = Self::build(&self.config, self.params.clone(), self.seed);
        Ok(renames)
    }

    /// Removes layer `i` (layers above move down). Returns the renames `(old, new)`.
    pub fn remove_layer(&mut self, i: usize) -> Result<Vec<(String, String)>> {
        let n = self.layers.len();
        if i >= n || n == 1 {
            return Err(Error::Input(format!("remove layer {i} of a {n}-layer model")));
        }
        for (name, _) in self.params.under(&Self::layer_prefix(i)) {
            self.params.remove(&name);
        }
        let mut renames = Vec::new();
        for k in i + 1..n {
            let (old, new) = (Self::layer_prefix(k), Self::layer_prefix(k - 1));
            self.params.rename_prefix(&old, &new)?;
            renames.push((old, new));
        }
        self.config.n_layers = n - 1;
        *self = Self::build(&self.config, self.params.clone(), self.seed);
        Ok(renames)
    }
}

/// The next token from last-position logits.
fn pick(logits: &[f64], sampling: Sampling, rng: &mut Rng) -> usize {
    let argmax = || logits.iter().enumerate().max_by(|a, b| a.1.total_cmp(b.1)).map(|(i, _)| i).unwrap_or(0);
    match sampling {
        Sampling::Greedy => argmax(),
        Sampling::Temperature { temperature, top_k } => {
            let mut order: Vec<usize> = (0..logits.len()).collect();
            order.sort_by(|&a, &b| logits[b].total_cmp(&logits[a]));
            order.truncate(top_k.unwrap_or(logits.len()).min(logits.len()));
            let m = logits[order[0]];
            let w: Vec<f64> = order.iter().map(|&i| ((logits[i] - m) / temperature).exp()).collect();
            let total: f64 = w.iter().sum();
            let mut u = rng.random::<f64>() * total;
            for (&i, &wi) in order.iter().zip(&w) {
                if u < wi {
                    return i;
                }
                u -= wi;
            }
            order[order.len() - 1]
        }
    }
}
