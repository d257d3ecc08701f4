//! A sentence classifier on a pretrained encoder with no trained head of its own, its few-shot fine-tuning (as a
//! [`train::Objective`], so the shared trainer's SGD/AdamW, schedules and checkpoints apply), and evaluation
//! (accuracy, binned ECE, the reliability diagram's bins).
//!
//! The head is the default of this crate: logits = `scale * cosine(pooled, e_c)`, where `pooled` is the
//! L2-normalised masked mean of the encoder's last hidden states (differentiable; the sentence-transformers
//! embedding) and `e_c` the pretrained encoder's embedding of class c's description (`"It was terrible."`,
//! `"It was great."` for sentiment: LM-BFF's template with its label words). all-MiniLM-L6-v2 has no masked-LM
//! head, so this is the closest analogue of P8's prompt-based fine-tuning: nothing in the head is trained, and
//! the pretrained model already classifies zero-shot.

use std::collections::BTreeMap;

use data::hf::{EncodedBatch, HfTokenizer};
use data::text::Labelled;
use serde::{Deserialize, Serialize};
use tensor::ndarray::{Array1, Array2, ArrayD, Axis};
use tensor::{Params, Rng, Tensor, no_grad};
use train::Objective;
use transformer::{Encoder, mean_pool};

use crate::mask::Weights;
use crate::{Error, Result};

/// Parameters a grafting region ranges over (the transformer layers; embeddings and head excluded, as in P8).
pub const REGION_PREFIX: &str = "encoder.layer";

/// How a head's class weights are chosen (none of them is trained with the encoder).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, Default)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub enum HeadKind {
    /// The default: `scale * cosine(pooled, e_c)` with `e_c` the pretrained embedding of class c's description.
    #[default]
    Cosine,
    /// A multinomial logistic regression on the pretrained encoder's unit pooled embeddings of the few-shot set
    /// (L2 penalty `l2`, `steps` full-batch gradient steps in f64), then frozen.
    LinearProbe { l2: f64, steps: usize },
}

/// A parameter-free head: `logits = scale * unit(pooled) . W^T + b`, fixed before fine-tuning. The cosine head
/// has unit description embeddings as `W` and no bias; a linear probe fits `W` and `b` on frozen features.
#[derive(Debug, Clone)]
pub struct PromptHead {
    pub kind: HeadKind,
    pub descriptions: Vec<String>,
    /// `[classes, hidden]` (unit rows for the cosine head).
    pub class_weights: Array2<f32>,
    pub bias: Array1<f32>,
    pub scale: f32,
}

impl PromptHead {
    /// The cosine head over the pretrained embeddings of `descriptions`.
    pub fn new(enc: &Encoder<f32>, tok: &HfTokenizer, descriptions: &[String], scale: f32) -> Result<PromptHead> {
        if descriptions.len() < 2 || !(scale > 0.0 && scale.is_finite()) {
            return Err(Error::Config(format!(
                "a head needs at least 2 class descriptions and a positive scale (got {} and {scale})",
                descriptions.len()
            )));
        }
        let texts: Vec<&str> = descriptions.iter().map(String::as_str).collect();
        let batch = tok.encode_batch(&texts, true, data::hf::MINILM_MAX_LEN)?;
        let e = enc.embed(&batch)?;
        let class_weights: Array2<f32> = e.into_dimensionality().map_err(|e| Error::Config(e.to_string()))?;
        let bias = Array1::zeros(class_weights.nrows());
        Ok(PromptHead { kind: HeadKind::Cosine, descriptions: descriptions.to_vec(), class_weights, bias, scale })
    }

    /// A linear probe fitted on `features` (`[n, hidden]`, unit rows: the pretrained encoder's embeddings of the
    /// training sentences) and their `labels`: multinomial logistic regression with `l2 * ||W||^2 / 2`, plain
    /// gradient descent from zero in f64 (deterministic; step 1, stable because the features have unit norm).
    pub fn linear_probe(
        features: &Array2<f32>,
        labels: &[usize],
        classes: usize,
        l2: f64,
        steps: usize,
    ) -> Result<PromptHead> {
        let (n, hidden) = features.dim();
        if n == 0 || n != labels.len() || classes < 2 || labels.iter().any(|&l| l >= classes) {
            return Err(Error::Config(format!(
                "a linear probe needs one label in 0..{classes} per feature row ({n} rows, {} labels)",
                labels.len()
            )));
        }
        if !(l2 >= 0.0 && l2.is_finite()) || steps == 0 {
            return Err(Error::Config(format!("probe l2 ({l2}) must be >= 0 and steps ({steps}) positive")));
        }
        if features.iter().any(|v| !v.is_finite()) {
            return Err(Error::Config("a probe feature is not finite".into()));
        }
        let x = features.mapv(f64::from);
        let mut w = Array2::<f64>::zeros((classes, hidden));
        let mut b = Array1::<f64>::zeros(classes);
        let lr = 1.0 / (1.0 + l2);
        for _ in 0..steps {
            let mut logits = x.dot(&w.t()) + &b;
            for mut row in logits.rows_mut() {
                let m = row.fold(f64::NEG_INFINITY, |a, &v| a.max(v));
                row.mapv_inplace(|v| (v - m).exp());
                let z = row.sum();
                row.mapv_inplace(|v| v / z);
            }
            for (mut row, &l) in logits.rows_mut().into_iter().zip(labels) {
                row[l] -= 1.0;
            }
            let residual = logits / n as f64;
            let gw = residual.t().dot(&x) + &(&w * l2);
            let gb = residual.sum_axis(Axis(0));
            w.scaled_add(-lr, &gw);
            b.scaled_add(-lr, &gb);
        }
        Ok(PromptHead {
            kind: HeadKind::LinearProbe { l2, steps },
            descriptions: Vec::new(),
            class_weights: w.mapv(|v| v as f32),
            bias: b.mapv(|v| v as f32),
            scale: 1.0,
        })
    }

    /// Builds the head `kind` asks for; a probe is fitted on `train` embedded by `enc`.
    pub fn build(
        kind: &HeadKind,
        enc: &Encoder<f32>,
        tok: &HfTokenizer,
        descriptions: &[String],
        scale: f32,
        train: &[Labelled],
        max_len: usize,
    ) -> Result<PromptHead> {
        match kind {
            HeadKind::Cosine => PromptHead::new(enc, tok, descriptions, scale),
            HeadKind::LinearProbe { l2, steps } => {
                let texts: Vec<&str> = train.iter().map(|e| e.text.as_str()).collect();
                let mut features = Array2::<f32>::zeros((texts.len(), enc.config.hidden_size));
                for (chunk, mut rows) in texts.chunks(32).zip(features.axis_chunks_iter_mut(Axis(0), 32)) {
                    let e = enc.embed(&tok.encode_batch(chunk, true, max_len)?)?;
                    rows.assign(
                        &e.into_dimensionality::<tensor::ndarray::Ix2>().map_err(|e| Error::Config(e.to_string()))?,
                    );
                }
                let labels: Vec<usize> = train.iter().map(|e| e.label as usize).collect();
                PromptHead::linear_probe(&features, &labels, descriptions.len(), *l2, *steps)
            }
        }
    }

    pub fn classes(&self) -> usize {
        self.class_weights.nrows()
    }

    /// Logits `[batch, classes]` from hidden states `[batch, t, hidden]`.
    pub fn logits(&self, h: &Tensor<f32>, mask: &[bool]) -> Tensor<f32> {
        let pooled = mean_pool(h, mask);
        let norm = pooled.square().sum(&[1], true).add_scalar(1e-12).sqrt();
        let unit = pooled.div(&norm);
        let w = Tensor::new(self.class_weights.t().to_owned().into_dyn());
        let logits = unit.matmul(&w).mul_scalar(self.scale);
        if self.bias.iter().all(|&v| v == 0.0) {
            logits
        } else {
            logits.add(&Tensor::new(self.bias.clone().insert_axis(Axis(0)).into_dyn()))
        }
    }
}

/// An encoder, its tokenizer and a head: everything that turns sentences into class probabilities.
#[derive(Debug, Clone)]
pub struct Classifier {
    pub encoder: Encoder<f32>,
    pub tokenizer: HfTokenizer,
    pub head: PromptHead,
    pub max_len: usize,
}

impl Classifier {
    pub fn encode(&self, texts: &[&str]) -> Result<EncodedBatch> {
        Ok(self.tokenizer.encode_batch(texts, true, self.max_len)?)
    }

    /// Logits for an encoded batch (with gradients when they are enabled).
    pub fn logits(&self, batch: &EncodedBatch) -> Result<Tensor<f32>> {
        let h = self.encoder.forward(&batch.ids_usize(), &batch.mask, None, batch.batch, batch.len, None)?;
        Ok(self.head.logits(&h, &batch.mask))
    }

    /// Mean cross-entropy of `examples`.
    pub fn loss(&self, examples: &[&Labelled]) -> Result<Tensor<f32>> {
        let texts: Vec<&str> = examples.iter().map(|e| e.text.as_str()).collect();
        let labels: Vec<usize> = examples.iter().map(|e| e.label as usize).collect();
        Ok(self.logits(&self.encode(&texts)?)?.cross_entropy(&labels))
    }

    /// Class probabilities `[n, classes]`, in batches of `batch`, without gradients.
    pub fn probabilities(&self, texts: &[&str], batch: usize) -> Result<Array2<f32>> {
        let classes = self.head.classes();
        let mut out = Array2::<f32>::zeros((texts.len(), classes));
        for (chunk, rows) in texts.chunks(batch.max(1)).zip(out.axis_chunks_iter_mut(Axis(0), batch.max(1))) {
            let enc = self.encode(chunk)?;
            let p = no_grad(|| self.logits(&enc).map(|l| l.softmax(-1)))?;
            let p = p
                .value()
                .view()
                .into_dimensionality::<tensor::ndarray::Ix2>()
                .map_err(|e| Error::Config(e.to_string()))?;
            let mut rows = rows;
            rows.assign(&p);
        }
        Ok(out)
    }

    /// Accuracy and calibration on `examples`.
    pub fn evaluate(&self, examples: &[Labelled], batch: usize) -> Result<Evaluation> {
        let texts: Vec<&str> = examples.iter().map(|e| e.text.as_str()).collect();
        Evaluation::from_probabilities(&self.probabilities(&texts, batch)?, examples)
    }

    /// The values of the region's parameters.
    pub fn region_weights(&self) -> Weights {
        crate::mask::weights_under(&self.encoder.params, REGION_PREFIX)
    }
}

/// Accuracy, binned ECE (10 bins) and the reliability diagram of one model on one set.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Evaluation {
    pub n: usize,
    pub accuracy: f64,
    pub ece: f64,
    pub mean_confidence: f64,
    pub bins: Vec<report::stats::CalibrationBin>,
    /// Per example, whether the top class was right (kept out of reports; paired comparisons use it).
    #[serde(skip)]
    pub correct: Vec<bool>,
    /// Per example, the top class's probability (kept out of reports; paired ECE intervals use it).
    #[serde(skip)]
    pub confidence: Vec<f64>,
}

impl Evaluation {
    pub fn from_probabilities(p: &Array2<f32>, examples: &[Labelled]) -> Result<Evaluation> {
        if p.nrows() != examples.len() || examples.is_empty() {
            return Err(Error::Config(format!("{} probability rows for {} examples", p.nrows(), examples.len())));
        }
        let mut confidence = Vec::with_capacity(p.nrows());
        let mut correct = Vec::with_capacity(p.nrows());
        for (row, e) in p.rows().into_iter().zip(examples) {
            if row.iter().any(|v| !v.is_finite()) {
                return Err(Error::Config("a probability is not finite (the model diverged)".into()));
            }
            let (best, conf) =
                row.iter().enumerate().fold((0, f32::MIN), |a, (i, &v)| if v > a.1 { (i, v) } else { a });
            confidence.push(conf.clamp(0.0, 1.0) as f64);
            correct.push(best == e.label as usize);
        }
        let cal = report::stats::calibration(&confidence, &correct, 10)?;
        Ok(Evaluation {
            n: examples.len(),
            accuracy: correct.iter().filter(|&&c| c).count() as f64 / correct.len() as f64,
            ece: cal.ece,
            mean_confidence: confidence.iter().sum::<f64>() / confidence.len() as f64,
            bins: cal.bins,
            correct,
            confidence,
        })
    }
}

/// `per_class` examples of each class, drawn by `seed` from `pool` among those with at least `min_words` words
/// (GLUE's SST-2 train split is mostly phrases; P8's few-shot sets are sentences).
pub fn few_shot(
    pool: &[Labelled],
    classes: u32,
    per_class: usize,
    min_words: usize,
    seed: u64,
) -> Result<Vec<Labelled>> {
    let mut rng = tensor::seeded(seed);
    let order = tensor::permutation(pool.len(), &mut rng);
    let mut out = Vec::new();
    for c in 0..classes {
        let chosen: Vec<Labelled> = order
            .iter()
            .map(|&i| &pool[i])
            .filter(|e| e.label == c && e.text.split_whitespace().count() >= min_words)
            .take(per_class)
            .cloned()
            .collect();
        if chosen.len() < per_class {
            return Err(Error::Config(format!("only {} examples of class {c} (asked {per_class})", chosen.len())));
        }
        out.extend(chosen);
    }
    // Interleave the classes in a seeded order so a batch of 2 is not always one class.
    let order = tensor::permutation(out.len(), &mut rng);
    Ok(order.into_iter().map(|i| out[i].clone()).collect())
}

/// `n` examples drawn by `seed` (all of them when `n` is at least the set's size), in a fixed order.
pub fn subsample(set: &[Labelled], n: usize, seed: u64) -> Vec<Labelled> {
    if n >= set.len() {
        return set.to_vec();
    }
    let mut idx = tensor::permutation(set.len(), &mut tensor::seeded(seed));
    idx.truncate(n);
    idx.sort_unstable();
    idx.into_iter().map(|i| set[i].clone()).collect()
}

/// Few-shot fine-tuning as a trainer objective: batches of `batch` examples cycling through the training set in
/// a seeded order per epoch; the trainer updates every trainable parameter (freeze with
/// `params.set_trainable(prefix, false)`); `l1` adds `l1 * sum |theta - theta_pre|` over the region (P8's
/// AdamW + L1 comparison).
pub struct FinetuneObjective {
    pub model: Classifier,
    pub train: Vec<Labelled>,
    pub batch: usize,
    pub seed: u64,
    pub l1: f64,
    pretrained: BTreeMap<String, Tensor<f32>>,
    drawn: u64,
}

impl FinetuneObjective {
    pub fn new(model: Classifier, train: Vec<Labelled>, batch: usize, seed: u64, l1: f64) -> Result<Self> {
        if train.is_empty() || batch == 0 || batch > train.len() || !(l1 >= 0.0 && l1.is_finite()) {
            return Err(Error::Config(format!(
                "fine-tuning needs 1 <= batch ({batch}) <= examples ({}) and l1 >= 0 ({l1})",
                train.len()
            )));
        }
        let pretrained = if l1 > 0.0 {
            model.region_weights().into_iter().map(|(n, w)| (n, Tensor::new(w))).collect()
        } else {
            BTreeMap::new()
        };
        Ok(FinetuneObjective { model, train, batch, seed, l1, pretrained, drawn: 0 })
    }

    fn next_batch(&mut self) -> Vec<&Labelled> {
        let n = self.train.len();
        let per_epoch = n / self.batch;
        let epoch = self.drawn / per_epoch as u64;
        let order = tensor::permutation(n, &mut tensor::derived(self.seed, epoch));
        let start = (self.drawn % per_epoch as u64) as usize * self.batch;
        self.drawn += 1;
        order[start..start + self.batch].iter().map(|&i| &self.train[i]).collect()
    }
}

impl Objective for FinetuneObjective {
    fn params(&self) -> &Params<f32> {
        &self.model.encoder.params
    }

    fn train_loss(&mut self, _step: u64, _rng: &mut Rng) -> train::Result<Tensor<f32>> {
        let batch: Vec<Labelled> = self.next_batch().into_iter().cloned().collect();
        let refs: Vec<&Labelled> = batch.iter().collect();
        let mut loss = self.model.loss(&refs).map_err(|e| train::Error::Other(e.to_string()))?;
        if self.l1 > 0.0 {
            for (name, var) in self.model.encoder.params.under(REGION_PREFIX) {
                let delta = var.tensor().sub(&self.pretrained[&name]);
                loss = loss.add(&delta.abs().sum_all().mul_scalar(self.l1 as f32));
            }
        }
        Ok(loss)
    }

    fn evaluate(&mut self) -> train::Result<BTreeMap<String, f64>> {
        let e = self.model.evaluate(&self.train, 32).map_err(|e| train::Error::Other(e.to_string()))?;
        Ok(BTreeMap::from([("train_accuracy".to_string(), e.accuracy)]))
    }

    fn tokens_per_step(&self) -> u64 {
        self.batch as u64
    }

    fn flops_per_step(&self) -> u64 {
        0
    }

    fn data_state(&self) -> serde_json::Value {
        serde_json::json!({ "drawn": self.drawn })
    }

    fn restore_data_state(&mut self, state: &serde_json::Value) -> train::Result<()> {
        self.drawn = state["drawn"]
            .as_u64()
            .ok_or_else(|| train::Error::Other(format!("data state {state} has no `drawn` count")))?;
        Ok(())
    }
}

/// The gradient of `model`'s loss on `examples` with respect to the region's parameters, in chunks of `batch`
/// (averaged over all examples).
pub fn region_gradient(model: &Classifier, examples: &[Labelled], batch: usize) -> Result<(f64, Weights)> {
    let vars = model.encoder.params.under(REGION_PREFIX);
    let mut total: Weights = vars.iter().map(|(n, v)| (n.clone(), ArrayD::zeros(v.value().raw_dim()))).collect();
    let mut loss_sum = 0.0;
    for chunk in examples.chunks(batch.max(1)) {
        let refs: Vec<&Labelled> = chunk.iter().collect();
        let loss = model.loss(&refs)?;
        let w = chunk.len() as f32 / examples.len() as f32;
        loss_sum += loss.item() as f64 * w as f64;
        let grads = loss.backward();
        for (name, var) in &vars {
            if let Some(g) = grads.get_id(var.id()) {
                total.get_mut(name).expect("listed").scaled_add(w, g);
            }
        }
    }
    Ok((loss_sum, total))
}

/// Several tasks fine-tuned at once on one encoder: each task is a [`FinetuneObjective`] whose classifier shares
/// the encoder's parameters (an `Encoder` clone shares its `Params`); a step's loss is the mean of one batch of
/// every task.
pub struct MultitaskObjective {
    pub tasks: Vec<(String, FinetuneObjective)>,
}

impl MultitaskObjective {
    pub fn new(tasks: Vec<(String, FinetuneObjective)>) -> Result<Self> {
        let Some((_, first)) = tasks.first() else { return Err(Error::Config("no tasks".into())) };
        if tasks.iter().any(|(_, t)| !t.model.encoder.params.same_store(&first.model.encoder.params)) {
            return Err(Error::Config("multi-task classifiers must share one encoder".into()));
        }
        Ok(MultitaskObjective { tasks })
    }
}

impl Objective for MultitaskObjective {
    fn params(&self) -> &Params<f32> {
        self.tasks[0].1.params()
    }

    fn train_loss(&mut self, step: u64, rng: &mut Rng) -> train::Result<Tensor<f32>> {
        let n = self.tasks.len() as f32;
        let mut total: Option<Tensor<f32>> = None;
        for (_, task) in &mut self.tasks {
            let loss = task.train_loss(step, rng)?.mul_scalar(1.0 / n);
            total = Some(match total {
                Some(t) => t.add(&loss),
                None => loss,
            });
        }
        total.ok_or_else(|| train::Error::Other("no tasks".into()))
    }

    fn evaluate(&mut self) -> train::Result<BTreeMap<String, f64>> {
        let mut out = BTreeMap::new();
        for (name, task) in &mut self.tasks {
            for (k, v) in task.evaluate()? {
                out.insert(format!("{name}_{k}"), v);
            }
        }
        Ok(out)
    }

    fn tokens_per_step(&self) -> u64 {
        self.tasks.iter().map(|(_, t)| t.tokens_per_step()).sum()
    }

    fn flops_per_step(&self) -> u64 {
        0
    }

    fn data_state(&self) -> serde_json::Value {
        serde_json::Value::Array(self.tasks.iter().map(|(_, t)| t.data_state()).collect())
    }

    fn restore_data_state(&mut self, state: &serde_json::Value) -> train::Result<()> {
        let states = state.as_array().filter(|a| a.len() == self.tasks.len()).ok_or_else(|| {
            train::Error::Other(format!("data state {state} is not one entry per task ({})", self.tasks.len()))
        })?;
        for ((_, t), s) in self.tasks.iter_mut().zip(states) {
            t.restore_data_state(s)?;
        }
        Ok(())
    }
}
