//! BERT-style encoder (post-LN), with HuggingFace's parameter names so `BertModel` checkpoints load as they
//! are: `embeddings.{word,position,token_type}_embeddings`, `embeddings.LayerNorm`,
//! `encoder.layer.{i}.attention.self.{query,key,value}`, `encoder.layer.{i}.attention.output.{dense,LayerNorm}`,
//! `encoder.layer.{i}.intermediate.dense`, `encoder.layer.{i}.output.{dense,LayerNorm}`.

use std::path::Path;

use serde::{Deserialize, Serialize};
use tensor::ndarray::{ArrayD, Axis, IxDyn};
use tensor::nn::{Activation, Embedding, LayerNorm, Linear, Module};
use tensor::{AttentionMask, Float, Params, Rng, Tensor, no_grad};

use crate::{Error, Result};

/// HuggingFace `BertConfig` (the fields the forward pass uses; others in `config.json` are ignored).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct BertConfig {
    pub vocab_size: usize,
    pub hidden_size: usize,
    pub num_hidden_layers: usize,
    pub num_attention_heads: usize,
    pub intermediate_size: usize,
    #[serde(default = "default_act")]
    pub hidden_act: String,
    pub max_position_embeddings: usize,
    #[serde(default = "default_types")]
    pub type_vocab_size: usize,
    #[serde(default = "default_eps")]
    pub layer_norm_eps: f64,
    #[serde(default)]
    pub hidden_dropout_prob: f64,
}

fn default_act() -> String {
    "gelu".into()
}
fn default_types() -> usize {
    2
}
fn default_eps() -> f64 {
    1e-12
}

impl BertConfig {
    /// Reads `config.json`.
    pub fn from_file(path: &Path) -> Result<Self> {
        let text = std::fs::read_to_string(path)
            .map_err(|e| Error::File { path: path.to_path_buf(), message: e.to_string() })?;
        let c: BertConfig = serde_json::from_str(&text)
            .map_err(|e| Error::File { path: path.to_path_buf(), message: e.to_string() })?;
        c.validate()?;
        Ok(c)
    }

    pub fn activation(&self) -> Result<Activation> {
        match self.hidden_act.as_str() {
            "gelu" => Ok(Activation::Gelu),
            "gelu_new" | "gelu_pytorch_tanh" => Ok(Activation::GeluTanh),
            "relu" => Ok(Activation::Relu),
            other => Err(Error::Config(format!("hidden_act `{other}` is not supported (gelu, gelu_new, relu)"))),
        }
    }

    pub fn validate(&self) -> Result<()> {
        let h = self.hidden_size;
        if self.vocab_size == 0 || h == 0 || self.num_attention_heads == 0 || self.max_position_embeddings == 0 {
            return Err(Error::Config(format!("BERT config has a zero size: {self:?}")));
        }
        if h % self.num_attention_heads != 0 {
            return Err(Error::Config(format!("hidden_size {h} not divisible by {} heads", self.num_attention_heads)));
        }
        if !(0.0..1.0).contains(&self.hidden_dropout_prob) || !(self.layer_norm_eps > 0.0) {
            return Err(Error::Config(format!(
                "dropout {} or layer_norm_eps {} out of range",
                self.hidden_dropout_prob, self.layer_norm_eps
            )));
        }
        self.activation().map(|_| ())
    }
}

/// One post-LN encoder block under `encoder.layer.{i}.`.
#[derive(Debug, Clone)]
pub struct EncoderLayer<F: Float = f32> {
    pub query: Linear<F>,
    pub key: Linear<F>,
    pub value: Linear<F>,
    pub attn_out: Linear<F>,
    pub attn_ln: LayerNorm<F>,
    pub intermediate: Linear<F>,
    pub output: Linear<F>,
    pub output_ln: LayerNorm<F>,
}

impl<F: Float> EncoderLayer<F> {
    fn new(p: &tensor::ParamPath<F>, c: &BertConfig, rng: &mut Rng) -> Self {
        let (h, f, std) = (c.hidden_size, c.intermediate_size, 0.02);
        let att = p.sub("attention");
        EncoderLayer {
            query: Linear::normal(&att.sub("self").sub("query"), h, h, true, std, rng),
            key: Linear::normal(&att.sub("self").sub("key"), h, h, true, std, rng),
            value: Linear::normal(&att.sub("self").sub("value"), h, h, true, std, rng),
            attn_out: Linear::normal(&att.sub("output").sub("dense"), h, h, true, std, rng),
            attn_ln: LayerNorm::new(&att.sub("output").sub("LayerNorm"), h, c.layer_norm_eps),
            intermediate: Linear::normal(&p.sub("intermediate").sub("dense"), h, f, true, std, rng),
            output: Linear::normal(&p.sub("output").sub("dense"), f, h, true, std, rng),
            output_ln: LayerNorm::new(&p.sub("output").sub("LayerNorm"), h, c.layer_norm_eps),
        }
    }

    fn forward(
        &self,
        x: &Tensor<F>,
        c: &BertConfig,
        mask: AttentionMask<'_>,
        mut dropout: Option<&mut Rng>,
    ) -> Tensor<F> {
        let heads = c.num_attention_heads;
        let p = c.hidden_dropout_prob;
        let mut drop = |y: Tensor<F>| match dropout.as_deref_mut() {
            Some(r) if p > 0.0 => y.dropout(p, r),
            _ => y,
        };
        let (q, k, v) = (self.query.forward(x), self.key.forward(x), self.value.forward(x));
        let y = Tensor::multi_head_attention(&q, &k, &v, heads, mask);
        let x = self.attn_ln.forward(&(x + drop(self.attn_out.forward(&y))));
        let act = c.activation().expect("validated");
        let m = self.output.forward(&act.apply(&self.intermediate.forward(&x)));
        self.output_ln.forward(&(&x + drop(m)))
    }
}

/// A BERT encoder.
#[derive(Debug, Clone)]
pub struct Encoder<F: Float = f32> {
    pub config: BertConfig,
    pub params: Params<F>,
    pub word: Embedding<F>,
    pub position: Embedding<F>,
    pub token_type: Embedding<F>,
    pub emb_ln: LayerNorm<F>,
    pub layers: Vec<EncoderLayer<F>>,
}

impl<F: Float> Encoder<F> {
    /// Randomly initialised (`N(0, 0.02^2)` weights, as BERT).
    pub fn new(config: &BertConfig, seed: u64) -> Result<Self> {
        config.validate()?;
        Ok(Self::build(config, Params::new(), seed))
    }

    fn build(c: &BertConfig, params: Params<F>, seed: u64) -> Self {
        let root = params.root();
        let emb = root.sub("embeddings");
        let mut rng = tensor::derived(seed, 0);
        let h = c.hidden_size;
        let word = Embedding::new(&emb.sub("word_embeddings"), c.vocab_size, h, 0.02, &mut rng);
        let position = Embedding::new(&emb.sub("position_embeddings"), c.max_position_embeddings, h, 0.02, &mut rng);
        let token_type = Embedding::new(&emb.sub("token_type_embeddings"), c.type_vocab_size, h, 0.02, &mut rng);
        let emb_ln = LayerNorm::new(&emb.sub("LayerNorm"), h, c.layer_norm_eps);
        let layers = (0..c.num_hidden_layers)
            .map(|i| {
                EncoderLayer::new(&root.sub("encoder").sub("layer").sub(i), c, &mut tensor::derived(seed, 1 + i as u64))
            })
            .collect();
        Encoder { config: c.clone(), params, word, position, token_type, emb_ln, layers }
    }

    /// Loads a HuggingFace BERT directory (`config.json` + `model.safetensors`). Names may carry the `bert.`
    /// prefix of HF's task models (`BertForMaskedLM`, ...). Every encoder parameter must be in the file; entries
    /// the encoder does not use (`pooler.*`, `cls.*`, `embeddings.position_ids`) are ignored.
    pub fn from_pretrained(dir: &Path) -> Result<Self> {
        let config = BertConfig::from_file(&dir.join("config.json"))?;
        let enc = Self::build(&config, Params::new(), 0);
        let weights = dir.join("model.safetensors");
        let stored = tensor::read_safetensors(&weights)?;
        let bad = |message: String| Error::File { path: weights.clone(), message };
        let mut seen = std::collections::HashSet::new();
        let mut half = 0;
        for (name, t) in &stored.tensors {
            let name = name.strip_prefix("bert.").unwrap_or(name);
            let Some(var) = enc.params.get(name) else { continue };
            half += matches!(t, tensor::StoredTensor::Half(_)) as usize;
            let value = t.to_float::<F>().map_err(|e| bad(format!("`{name}`: {e}")))?;
            if value.shape() != var.shape().as_slice() {
                return Err(bad(format!("`{name}` has shape {:?}, the config gives {:?}", value.shape(), var.shape())));
            }
            var.set(value);
            seen.insert(name.to_string());
        }
        let missing: Vec<String> = enc.params.names().into_iter().filter(|n| !seen.contains(n)).collect();
        if !missing.is_empty() {
            return Err(bad(format!("missing encoder parameters: {}", missing.join(", "))));
        }
        if half > 0 {
            // Published checkpoints are often f16; accepted, but never silently.
            eprintln!(
                "warning: {half} tensors of {} are stored in half precision (f16/bf16); the {} encoder holds them \
                 with half precision only",
                weights.display(),
                F::DTYPE_NAME
            );
        }
        Ok(enc)
    }

    /// An independent encoder with the same config and weights (its own parameter store), head weights
    /// included: build a head over the copy (`ClassifierHead::new(&copy, ..)`) and it binds to the copied
    /// head weights. `clone` instead gives a second handle on the same weights.
    pub fn deep_copy(&self) -> Self {
        Self::build(&self.config, self.params.deep_copy(), 0)
    }

    pub fn n_layers(&self) -> usize {
        self.layers.len()
    }

    /// The parameter-name prefix of layer `i`.
    pub fn layer_prefix(i: usize) -> String {
        format!("encoder.layer.{i}")
    }

    /// Last hidden states `[batch, t, hidden]` for `ids` and the `[batch, t]` mask of real tokens; token types
    /// default to 0. `dropout = Some(rng)` trains with dropout.
    pub fn forward(
        &self,
        ids: &[usize],
        mask: &[bool],
        type_ids: Option<&[usize]>,
        batch: usize,
        t: usize,
        mut dropout: Option<&mut Rng>,
    ) -> Result<Tensor<F>> {
        let c = &self.config;
        if batch == 0 || t == 0 || ids.len() != batch * t || mask.len() != ids.len() {
            return Err(Error::Input(format!(
                "{} ids and {} mask entries for batch {batch} x length {t}",
                ids.len(),
                mask.len()
            )));
        }
        if t > c.max_position_embeddings {
            return Err(Error::Input(format!("length {t} exceeds {} positions", c.max_position_embeddings)));
        }
        if let Some(&bad) = ids.iter().find(|&&i| i >= c.vocab_size) {
            return Err(Error::Input(format!("token id {bad} outside the vocabulary of {}", c.vocab_size)));
        }
        let zeros = vec![0usize; ids.len()];
        let types = type_ids.unwrap_or(&zeros);
        if types.len() != ids.len() || types.iter().any(|&ty| ty >= c.type_vocab_size) {
            return Err(Error::Input(format!("token types must be {} entries below {}", ids.len(), c.type_vocab_size)));
        }
        let pos: Vec<usize> = (0..t).collect();
        let x = &(&self.word.forward_ids(ids, &[batch, t]) + &self.position.forward_ids(&pos, &[t]))
            + &self.token_type.forward_ids(types, &[batch, t]);
        let mut h = self.emb_ln.forward(&x);
        if let Some(r) = dropout.as_deref_mut() {
            if c.hidden_dropout_prob > 0.0 {
                h = h.dropout(c.hidden_dropout_prob, r);
            }
        }
        let m = if mask.iter().all(|&r| r) { AttentionMask::All } else { AttentionMask::KeyPadding(mask) };
        for layer in &self.layers {
            h = layer.forward(&h, c, m, dropout.as_deref_mut());
        }
        Ok(h)
    }

    /// Sentence embeddings as sentence-transformers computes them: the mean of the last hidden states over real
    /// tokens, L2-normalised. Returns `[batch, hidden]`.
    pub fn embed(&self, batch: &data::hf::EncodedBatch) -> Result<ArrayD<F>> {
        let ids = batch.ids_usize();
        let types: Vec<usize> = batch.type_ids.iter().map(|&t| t as usize).collect();
        let h = no_grad(|| self.forward(&ids, &batch.mask, Some(&types), batch.batch, batch.len, None))?;
        Ok(mean_pool_normalize(h.value(), &batch.mask))
    }
}

/// Masked mean over the time axis of `[b, t, d]`, then L2 normalisation of each row.
pub fn mean_pool_normalize<F: Float>(h: &ArrayD<F>, mask: &[bool]) -> ArrayD<F> {
    let (b, t, d) = (h.shape()[0], h.shape()[1], h.shape()[2]);
    let mut out = ArrayD::<F>::zeros(IxDyn(&[b, d]));
    for i in 0..b {
        let rows = h.index_axis(Axis(0), i);
        let mut acc = vec![0f64; d];
        let n = (0..t).filter(|&j| mask[i * t + j]).count().max(1);
        for j in (0..t).filter(|&j| mask[i * t + j]) {
            for (a, &v) in acc.iter_mut().zip(rows.index_axis(Axis(0), j).iter()) {
                *a += v.to_f64_lossy();
            }
        }
        let norm = acc.iter().map(|a| (a / n as f64).powi(2)).sum::<f64>().sqrt().max(1e-12);
        for (k, a) in acc.iter().enumerate() {
            out[[i, k]] = F::of(a / n as f64 / norm);
        }
    }
    out
}

/// BERT's masked-LM head (`cls.predictions.*`): dense + activation + LayerNorm, then the word embeddings
/// (tied) plus a bias.
#[derive(Debug, Clone)]
pub struct MlmHead<F: Float = f32> {
    pub dense: Linear<F>,
    pub ln: LayerNorm<F>,
    pub bias: tensor::Var<F>,
}

impl<F: Float> MlmHead<F> {
    pub fn new(enc: &Encoder<F>, seed: u64) -> Self {
        let c = &enc.config;
        let p = enc.params.root().sub("cls").sub("predictions");
        let mut rng = tensor::derived(seed, 1 << 32);
        MlmHead {
            dense: Linear::normal(&p.sub("transform").sub("dense"), c.hidden_size, c.hidden_size, true, 0.02, &mut rng),
            ln: LayerNorm::new(&p.sub("transform").sub("LayerNorm"), c.hidden_size, c.layer_norm_eps),
            bias: p.var("bias", &[c.vocab_size], || ArrayD::zeros(IxDyn(&[c.vocab_size]))),
        }
    }

    /// Vocabulary logits `[.., vocab]` from hidden states.
    pub fn forward(&self, enc: &Encoder<F>, h: &Tensor<F>) -> Tensor<F> {
        let act = enc.config.activation().expect("validated");
        let z = self.ln.forward(&act.apply(&self.dense.forward(h)));
        z.linear(&enc.word.weight.tensor(), Some(&self.bias.tensor()))
    }

    /// Mean cross-entropy over the positions whose label is not `ignore` (HF's -100 convention as `None`).
    pub fn loss(&self, enc: &Encoder<F>, h: &Tensor<F>, labels: &[Option<usize>]) -> Result<Tensor<F>> {
        let v = enc.config.vocab_size;
        let n = h.len() / enc.config.hidden_size;
        if labels.len() != n || labels.iter().flatten().any(|&l| l >= v) {
            return Err(Error::Input(format!("{} MLM labels (< {v}) for {n} positions", labels.len())));
        }
        let logits = self.forward(enc, h).reshape(&[n, v]);
        let flat: Vec<usize> = labels.iter().map(|l| l.unwrap_or(v)).collect();
        Ok(logits.cross_entropy_with_ignore(&flat, Some(v)))
    }
}

/// Masked mean over the time axis, differentiable: `[batch, t, hidden]` hidden states and the `[batch, t]` mask of
/// real tokens give `[batch, hidden]` (a row without real tokens gives zeros).
pub fn mean_pool<F: Float>(h: &Tensor<F>, mask: &[bool]) -> Tensor<F> {
    let (b, t) = (h.shape()[0], h.shape()[1]);
    let weights: Vec<F> = (0..b)
        .flat_map(|i| {
            let n = (0..t).filter(|&j| mask[i * t + j]).count().max(1) as f64;
            (0..t).map(move |j| if mask[i * t + j] { F::of(1.0 / n) } else { F::zero() })
        })
        .collect();
    let w = Tensor::from_vec(weights, &[b, 1, t]);
    w.matmul(h).reshape(&[b, h.shape()[2]])
}

/// Sequence classification head: masked mean pooling, then a linear layer to the classes. Its parameters live
/// under its own prefix (`classifier.*` by default), so several heads on one encoder (one per task) never share
/// parameters.
#[derive(Debug, Clone)]
pub struct ClassifierHead<F: Float = f32> {
    pub out: Linear<F>,
    pub prefix: String,
}

impl<F: Float> ClassifierHead<F> {
    /// A head under `classifier.*`.
    pub fn new(enc: &Encoder<F>, classes: usize, seed: u64) -> Self {
        Self::with_prefix(enc, "classifier", classes, seed)
    }

    /// A head under `<prefix>.*` (for example `heads.sst2`), initialised from `seed`.
    pub fn with_prefix(enc: &Encoder<F>, prefix: &str, classes: usize, seed: u64) -> Self {
        let mut rng = tensor::derived(seed, 2 << 32);
        let mut path = enc.params.root();
        for part in prefix.split('.') {
            path = path.sub(part);
        }
        ClassifierHead {
            out: Linear::normal(&path, enc.config.hidden_size, classes, true, 0.02, &mut rng),
            prefix: prefix.to_string(),
        }
    }

    /// Class logits `[batch, classes]` from hidden states `[batch, t, hidden]` and the real-token mask.
    pub fn forward(&self, h: &Tensor<F>, mask: &[bool]) -> Tensor<F> {
        self.out.forward(&mean_pool(h, mask))
    }
}
