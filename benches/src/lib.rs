//! The reference workloads benchmarked against the JAX anchors (`../shared/design/anchors`), built from
//! strata-tensor's layers (the LM from strata-transformer's `Decoder`) with the anchors' exact shapes and optimizers.

use tensor::ndarray::{ArrayD, IxDyn};
use tensor::nn::{Activation, Conv2d, Linear, Module};
use tensor::optim::{Adam, AdamConfig, Optimizer, Sgd, SgdConfig};
use tensor::{Conv2dSpec, Params, Rng, Tensor, seeded};

/// The W2 model (`jax_lm.py`): GPT-style decoder, pre-LN, 4 layers, d_model 256, 4 heads, MLP 1024 (GELU,
/// tanh form), fused qkv, learned positions, vocab 256, untied head without bias, for sequences of `seq`.
pub fn w2_decoder_config(seq: usize) -> transformer::DecoderConfig {
    transformer::DecoderConfig {
        vocab_size: LmWorkload::VOCAB,
        context: seq,
        d_model: 256,
        n_layers: 4,
        n_heads: 4,
        d_ff: 1024,
        positions: transformer::Positions::Learned,
        tie_embeddings: false,
        bias: true,
        activation: Activation::GeluTanh,
        ..transformer::DecoderConfig::default()
    }
}

/// W2: the [`w2_decoder_config`] model on one fixed random batch, AdamW lr 3e-4, weight decay 0.1.
pub struct LmWorkload {
    pub model: transformer::Decoder<f32>,
    pub opt: Adam<f32>,
    pub inputs: Vec<usize>,
    pub targets: Vec<usize>,
    pub batch: usize,
    pub seq: usize,
}

impl LmWorkload {
    pub const VOCAB: usize = 256;

    pub fn new(batch: usize, seq: usize) -> Self {
        let model = transformer::Decoder::new(&w2_decoder_config(seq), 0).expect("valid W2 config");
        let data: Vec<usize> = random_tokens(batch * (seq + 1), &mut seeded(1));
        let mut inputs = Vec::with_capacity(batch * seq);
        let mut targets = Vec::with_capacity(batch * seq);
        for b in 0..batch {
            let row = &data[b * (seq + 1)..(b + 1) * (seq + 1)];
            inputs.extend_from_slice(&row[..seq]);
            targets.extend_from_slice(&row[1..]);
        }
        LmWorkload { model, opt: Adam::new(AdamConfig::adamw(3e-4, 0.1)), inputs, targets, batch, seq }
    }

    pub fn loss(&self) -> Tensor<f32> {
        self.model.loss(&self.inputs, &self.targets, self.batch, self.seq, None).expect("ids in range")
    }

    /// Forward, backward and an AdamW update; returns the loss.
    pub fn train_step(&mut self) -> f32 {
        let loss = self.loss();
        let grads = loss.backward();
        self.opt.step(&self.model.params, &grads);
        loss.item()
    }

    pub fn tokens_per_step(&self) -> usize {
        self.batch * self.seq
    }
}

fn random_tokens(n: usize, rng: &mut Rng) -> Vec<usize> {
    tensor::uniform::<f64>(&[n], 0.0, LmWorkload::VOCAB as f64, rng)
        .iter()
        .map(|&u| (u as usize).min(LmWorkload::VOCAB - 1))
        .collect()
}

/// W3: conv3x3(32)-relu-conv3x3(64)-relu-maxpool2-dense(128)-relu-dense(10) on 28x28x1, SGD lr 0.01.
pub struct CnnWorkload {
    pub params: Params<f32>,
    c1: Conv2d<f32>,
    c2: Conv2d<f32>,
    d1: Linear<f32>,
    d2: Linear<f32>,
    pub opt: Sgd<f32>,
    pub images: ArrayD<f32>,
    pub labels: Vec<usize>,
}

impl CnnWorkload {
    pub fn new(batch: usize) -> Self {
        let params = Params::new();
        let mut rng = seeded(0);
        let root = params.root();
        let valid = Conv2dSpec { stride: 1, padding: 0 };
        let c1 = Conv2d::new(&root.sub("c1"), 1, 32, 3, valid, true, &mut rng);
        let c2 = Conv2d::new(&root.sub("c2"), 32, 64, 3, valid, true, &mut rng);
        let d1 = Linear::new(&root.sub("d1"), 9216, 128, true, &mut rng);
        let d2 = Linear::new(&root.sub("d2"), 128, 10, true, &mut rng);
        let mut data_rng = seeded(1);
        let images = tensor::uniform(&[batch, 1, 28, 28], 0.0, 1.0, &mut data_rng);
        let labels =
            tensor::uniform::<f64>(&[batch], 0.0, 10.0, &mut data_rng).iter().map(|&u| (u as usize).min(9)).collect();
        CnnWorkload {
            params,
            c1,
            c2,
            d1,
            d2,
            opt: Sgd::new(SgdConfig { lr: 0.01, ..Default::default() }),
            images,
            labels,
        }
    }

    pub fn forward(&self, x: &Tensor<f32>) -> Tensor<f32> {
        let h = self.c2.forward(&self.c1.forward(x).relu()).relu().max_pool2d(2, 2).flatten_from(1);
        self.d2.forward(&self.d1.forward(&h).relu())
    }

    pub fn train_step(&mut self) -> f32 {
        let loss = self.forward(&Tensor::new(self.images.clone())).cross_entropy(&self.labels);
        let grads = loss.backward();
        self.opt.step(&self.params, &grads);
        loss.item()
    }

    /// Freezes the weights: saliency needs only the input gradient (as JAX's `grad` with respect to `x`).
    pub fn frozen(self) -> Self {
        self.params.set_trainable("", false);
        self
    }

    /// Gradient of the sum of each image's label logit with respect to the images (a saliency batch).
    pub fn saliency(&self) -> ArrayD<f32> {
        let x = Tensor::leaf(self.images.clone());
        let logits = self.forward(&x);
        let n = self.labels.len();
        let onehot = Tensor::<f32>::one_hot(&self.labels, 10);
        let grads = (&logits * &onehot).sum_all().backward();
        grads.get(&x).cloned().unwrap_or_else(|| ArrayD::zeros(IxDyn(&[n, 1, 28, 28])))
    }

    pub fn batch(&self) -> usize {
        self.labels.len()
    }
}

/// W1: looped (or per-layer) linear self-attention for in-context regression, d = 10, n = 40, L = 8,
/// batch 256, full `P`, `Q` initialised `N(0, 0.05^2)`, Adam lr 1e-3, one fixed batch with
/// `x ~ N(0, I)`, `w ~ N(0, I)` (as `jax_icl.py`).
pub struct IclWorkload {
    pub model: icl::model::LsaModel<f32>,
    pub opt: Adam<f32>,
    pub tokens: Tensor<f32>,
    pub targets: Tensor<f32>,
}

impl IclWorkload {
    pub fn new(looped: bool) -> Self {
        use icl::model::{LsaModel, ModelConfig, Parameterization};
        use icl::task::{Covariance, Shift, TaskConfig, WeightPrior, sample};
        let cfg =
            ModelConfig { d: 10, depth: 8, looped, parameterization: Parameterization::Unrestricted, init_std: 0.05 };
        let model = LsaModel::new(&cfg, &Params::new(), &mut seeded(1)).expect("valid config");
        let task = TaskConfig {
            d: 10,
            n: 40,
            covariance: Covariance::Identity,
            prior: WeightPrior::Isotropic,
            noise_std: 0.0,
            shift: Shift::None,
        };
        let prompts = sample(&task, 256, &mut seeded(0)).expect("valid task");
        IclWorkload {
            model,
            opt: Adam::new(AdamConfig::adam(1e-3)),
            tokens: prompts.tokens(),
            targets: prompts.targets(),
        }
    }

    pub fn train_step(&mut self) -> f32 {
        let loss = self.model.predict(&self.tokens, 8).mse(&self.targets);
        let grads = loss.backward();
        self.opt.step(&self.model.params, &grads);
        loss.item()
    }
}

/// The encoder fine-tuning workload (`grafting` fine-tunes this model): all-MiniLM-L6-v2's shapes (6 layers,
/// width 384, 12 heads, MLP 1536, vocabulary 30,522, post-LN BERT, exact GELU), randomly initialised (speed does
/// not depend on the weights, so the benchmark needs no data), batch 32 x sequence 64 of real tokens, masked mean
/// pooling and a 2-class linear head, cross-entropy, AdamW lr 2e-5 on every parameter (embeddings included).
/// `benches/anchors/torch_minilm.py` is the same step in PyTorch.
pub struct EncoderWorkload {
    pub encoder: transformer::Encoder<f32>,
    pub head: transformer::encoder::ClassifierHead<f32>,
    pub opt: Adam<f32>,
    pub ids: Vec<usize>,
    pub mask: Vec<bool>,
    pub labels: Vec<usize>,
    pub batch: usize,
    pub seq: usize,
}

impl EncoderWorkload {
    pub fn minilm_config() -> transformer::BertConfig {
        transformer::BertConfig {
            vocab_size: 30522,
            hidden_size: 384,
            num_hidden_layers: 6,
            num_attention_heads: 12,
            intermediate_size: 1536,
            hidden_act: "gelu".into(),
            max_position_embeddings: 512,
            type_vocab_size: 2,
            layer_norm_eps: 1e-12,
            hidden_dropout_prob: 0.0,
        }
    }

    pub fn new(batch: usize, seq: usize) -> Self {
        let config = Self::minilm_config();
        let encoder = transformer::Encoder::new(&config, 0).expect("valid MiniLM config");
        let head = transformer::encoder::ClassifierHead::new(&encoder, 2, 0);
        let mut rng = seeded(1);
        let ids = tensor::uniform::<f64>(&[batch * seq], 0.0, config.vocab_size as f64, &mut rng)
            .iter()
            .map(|&u| (u as usize).min(config.vocab_size - 1))
            .collect();
        let labels = (0..batch).map(|i| i % 2).collect();
        EncoderWorkload {
            encoder,
            head,
            opt: Adam::new(AdamConfig::adamw(2e-5, 0.01)),
            ids,
            mask: vec![true; batch * seq],
            labels,
            batch,
            seq,
        }
    }

    pub fn loss(&self) -> Tensor<f32> {
        let h = self.encoder.forward(&self.ids, &self.mask, None, self.batch, self.seq, None).expect("valid batch");
        self.head.forward(&h, &self.mask).cross_entropy(&self.labels)
    }

    pub fn train_step(&mut self) -> f32 {
        let loss = self.loss();
        let grads = loss.backward();
        self.opt.step(&self.encoder.params, &grads);
        loss.item()
    }
}

/// The nanoGPT CPU shapes (`shakespeare_char` on a laptop: 4 layers, width 128, 4 heads, context 64, no bias,
/// tied head) with a 65-symbol vocabulary, batch 12, as a `strata-train` run on a random stream: AdamW 1e-3,
/// betas (0.9, 0.99), weight decay 0.1 on matrices, clipping at 1.0 (nanoGPT's settings, and
/// `benches/anchors/jax_lm_shapes.py --tied --no-bias`'s).
pub fn nanogpt_cpu_trainer() -> train::Trainer<train::lm::LmObjective> {
    let adamw = AdamConfig { beta2: 0.99, decay_matrices_only: true, ..AdamConfig::adamw(1e-3, 0.1) };
    synthetic_lm_trainer(transformer::DecoderConfig::nanogpt_shakespeare_char(65), 65, 12, adamw, Some(1.0), None)
}

/// Tokens per step of the W2 LM workload (batch 16 x 128).
pub const LM_W2_TOKENS_PER_STEP: u64 = 16 * 128;

/// The W2 LM workload ([`w2_decoder_config`], T 128, B 16, AdamW 3e-4 / wd 0.1) as a `strata-train` run on a random byte stream, writing its
/// metrics under `dir`. Each `logged_step` is one full trainer step.
pub fn lm_trainer_w2(dir: &std::path::Path) -> train::Trainer<train::lm::LmObjective> {
    synthetic_lm_trainer(w2_decoder_config(128), 256, 16, AdamConfig::adamw(3e-4, 0.1), None, Some(dir))
}

/// A trainer for the `growth/midas` quick shapes (width 128, 4 heads, rotary, context 64, batch 12) at `layers`
/// layers, on a random byte stream: one stage of a grown run. Step time should scale with the layers run.
pub fn growth_stage_trainer(layers: usize) -> train::Trainer<train::lm::LmObjective> {
    growth_stage_trainer_at(layers, 64)
}

/// [`growth_stage_trainer`] at another context length (the full `growth/midas` config uses 128).
pub fn growth_stage_trainer_at(layers: usize, context: usize) -> train::Trainer<train::lm::LmObjective> {
    let model = transformer::DecoderConfig {
        vocab_size: 0,
        context,
        d_model: 128,
        n_layers: layers,
        n_heads: 4,
        positions: transformer::Positions::Rotary,
        ..transformer::DecoderConfig::default()
    };
    synthetic_lm_trainer(model, 256, 12, AdamConfig::adamw(2e-3, 0.1), Some(1.0), None)
}

/// A `strata-train` LM run of `model` on a random stream of `vocab` symbols: constant learning rate, no evaluation
/// or checkpoints, a metrics line every step (under `dir` when given).
fn synthetic_lm_trainer(
    model: transformer::DecoderConfig,
    vocab: usize,
    batch: usize,
    optimizer: AdamConfig,
    grad_clip: Option<f64>,
    dir: Option<&std::path::Path>,
) -> train::Trainer<train::lm::LmObjective> {
    use train::lm::{Corpus, LmConfig, LmObjective};
    let config = LmConfig {
        model,
        model_seed: 0,
        corpus: Corpus::Synthetic { tokens: 1 << 20, vocab, seed: 1 },
        batch,
        sampling: data::batch::WindowSampling::Random,
        data_seed: 0,
        eval_batches: 1,
        train: train::TrainConfig {
            steps: u64::MAX,
            optimizer: optimizer.into(),
            schedule: tensor::Schedule::Constant,
            grad_clip,
            eval_interval: 0,
            checkpoint_interval: 0,
            log_interval: 1,
            seed: 0,
            progress: false,
        },
    };
    let objective = LmObjective::new(&config, None).expect("synthetic corpus needs no files");
    train::Trainer::new(config.train.clone(), objective, dir).expect("valid config")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lm_workload_starts_near_uniform_and_learns() {
        let mut w = LmWorkload::new(2, 16);
        let first = w.train_step();
        assert!((first - (LmWorkload::VOCAB as f32).ln()).abs() < 0.1, "initial loss {first} should be near ln 256");
        let mut last = first;
        for _ in 0..20 {
            last = w.train_step();
        }
        assert!(last < first - 0.5, "a fixed batch must be fit: {first} -> {last}");
    }

    #[test]
    fn cnn_saliency_has_image_shape_and_signal() {
        let w = CnnWorkload::new(4).frozen();
        let s = w.saliency();
        assert_eq!(s.shape(), [4, 1, 28, 28]);
        assert!(s.iter().any(|&v| v != 0.0) && s.iter().all(|v| v.is_finite()));
    }
}
