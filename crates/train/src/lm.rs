//! Language-model training: a [`Decoder`] on a tokenized corpus, as an [`Objective`] for the [`Trainer`].
//!
//! [`LmConfig`] is the whole run as data (model, corpus and tokenizer, batching, training). Corpora are the
//! registered TinyShakespeare (nanoGPT's character vocabulary and 90/10 split) and WikiText-2 (its own
//! train/valid files; byte-level BPE trained on the train split, or raw bytes), or a synthetic stream for tests
//! and benchmarks that needs no files.

use std::collections::BTreeMap;
use std::path::Path;

use data::batch::{BatcherState, LmBatcher, WindowSampling};
use serde::{Deserialize, Serialize};
use tensor::{Params, Rng, Tensor, no_grad};
use transformer::{Decoder, DecoderConfig, flops};

use crate::{Error, Objective, Result, TrainConfig};

/// Tokenization of a text corpus.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case", deny_unknown_fields)]
pub enum TokenizerChoice {
    /// UTF-8 bytes (vocabulary 256).
    Bytes,
    /// Sorted distinct characters of the corpus (nanoGPT `shakespeare_char`).
    Chars,
    /// Byte-level BPE trained on the training split (HuggingFace `tokenizers`), saved as `tokenizer.json`.
    Bpe { vocab_size: usize },
}

/// The corpus.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case", deny_unknown_fields)]
pub enum Corpus {
    /// TinyShakespeare; the last `val_fraction` of the text is the validation split (nanoGPT: 0.1).
    Shakespeare { val_fraction: f64, tokenizer: TokenizerChoice },
    /// WikiText-2 (raw files), train and valid splits.
    Wikitext2 { tokenizer: TokenizerChoice },
    /// A seeded order-2 Markov stream over `vocab` symbols (learnable; no files needed).
    Synthetic { tokens: usize, vocab: usize, seed: u64 },
}

/// A language-model run.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LmConfig {
    /// `vocab_size` 0 takes the tokenizer's size.
    pub model: DecoderConfig,
    pub model_seed: u64,
    pub corpus: Corpus,
    pub batch: usize,
    pub sampling: WindowSampling,
    pub data_seed: u64,
    /// Validation batches per evaluation (consecutive windows from the start of the split); 0: the whole split.
    pub eval_batches: usize,
    pub train: TrainConfig,
}

impl LmConfig {
    /// The small-scale pretraining run the growth and SALT reproductions share: batches of 12 random windows,
    /// AdamW (lr 2e-3, beta2 0.99, weight decay 0.1 on matrices only), 5% warmup then cosine to 0.1x, gradient
    /// clipping at 1, an evaluation every 5% of the run, a metrics line every 10 steps, no checkpoints; every
    /// seed 0 (set them with [`LmConfig::with_seed`]).
    pub fn small_pretraining(model: DecoderConfig, corpus: Corpus, steps: u64, eval_batches: usize) -> LmConfig {
        LmConfig {
            model,
            model_seed: 0,
            corpus,
            batch: 12,
            sampling: WindowSampling::Random,
            data_seed: 0,
            eval_batches,
            train: TrainConfig {
                steps,
                optimizer: tensor::optim::AdamConfig {
                    beta2: 0.99,
                    decay_matrices_only: true,
                    ..tensor::optim::AdamConfig::adamw(2e-3, 0.1)
                }
                .into(),
                schedule: tensor::Schedule::WarmupCosine { warmup: steps / 20, total: steps, min_factor: 0.1 },
                grad_clip: Some(1.0),
                eval_interval: (steps / 20).max(1),
                checkpoint_interval: 0,
                log_interval: 10,
                seed: 0,
                progress: false,
            },
        }
    }

    /// The same run with every seed (model initialisation, data order, per-step streams) set to `seed`.
    pub fn with_seed(&self, seed: u64) -> LmConfig {
        LmConfig {
            model_seed: seed,
            data_seed: seed,
            train: TrainConfig { seed, ..self.train.clone() },
            ..self.clone()
        }
    }
}

/// Token streams and their vocabulary.
#[derive(Debug, Clone)]
pub struct TokenizedCorpus {
    pub train: Vec<u32>,
    pub valid: Vec<u32>,
    pub vocab_size: usize,
    /// Turns ids back into text (for samples).
    pub decoder: TextDecoder,
}

/// How sampled ids become text.
#[derive(Debug, Clone)]
pub enum TextDecoder {
    Bytes,
    Chars(data::tokenize::CharVocab),
    Bpe(Box<data::hf::HfTokenizer>),
    Symbols,
}

impl TextDecoder {
    pub fn decode(&self, ids: &[u32]) -> String {
        match self {
            TextDecoder::Bytes => String::from_utf8_lossy(&ids.iter().map(|&i| i as u8).collect::<Vec<_>>()).into(),
            TextDecoder::Chars(v) => v.decode(ids).unwrap_or_default(),
            TextDecoder::Bpe(t) => t.decode(ids, false).unwrap_or_default(),
            TextDecoder::Symbols => ids.iter().map(|i| i.to_string()).collect::<Vec<_>>().join(" "),
        }
    }
}

fn tokenize(
    train_text: &str,
    valid_text: &str,
    choice: &TokenizerChoice,
    save_dir: Option<&Path>,
) -> Result<TokenizedCorpus> {
    match choice {
        TokenizerChoice::Bytes => {
            let t = data::tokenize::ByteTokenizer;
            Ok(TokenizedCorpus {
                train: t.encode(train_text),
                valid: t.encode(valid_text),
                vocab_size: 256,
                decoder: TextDecoder::Bytes,
            })
        }
        TokenizerChoice::Chars => {
            // nanoGPT builds the vocabulary from the whole text, so validation characters are known.
            let v = data::tokenize::CharVocab::from_corpus(&format!("{train_text}{valid_text}"));
            Ok(TokenizedCorpus {
                train: v.encode(train_text)?,
                valid: v.encode(valid_text)?,
                vocab_size: v.len(),
                decoder: TextDecoder::Chars(v),
            })
        }
        TokenizerChoice::Bpe { vocab_size } => {
            let lines = train_text.lines().filter(|l| !l.trim().is_empty());
            let t = data::hf::HfTokenizer::train_bpe(lines, *vocab_size, &["<|endoftext|>"])?;
            if let Some(d) = save_dir {
                t.save(&d.join("tokenizer.json"))?;
            }
            Ok(TokenizedCorpus {
                train: t.encode(train_text, false)?,
                valid: t.encode(valid_text, false)?,
                vocab_size: t.vocab_size(),
                decoder: TextDecoder::Bpe(Box::new(t)),
            })
        }
    }
}

/// A learnable synthetic stream: each token depends on the two before it through a seeded table (with 10%
/// uniform noise), so the achievable loss is well below `ln vocab`.
pub fn synthetic_stream(tokens: usize, vocab: usize, seed: u64) -> Vec<u32> {
    use rand::RngExt;
    let mut rng = tensor::seeded(seed);
    let table: Vec<u32> = (0..vocab * vocab).map(|_| rng.random_range(0..vocab as u32)).collect();
    let mut out = vec![0u32, 1 % vocab as u32];
    while out.len() < tokens {
        let (a, b) = (out[out.len() - 2] as usize, out[out.len() - 1] as usize);
        let next = if rng.random::<f64>() < 0.1 { rng.random_range(0..vocab as u32) } else { table[a * vocab + b] };
        out.push(next);
    }
    out.truncate(tokens);
    out
}

impl Corpus {
    /// Reads and tokenizes the corpus (`data_dir` as for `strata_data::resolve`); a BPE tokenizer is saved to
    /// `save_dir` when given.
    pub fn load(&self, data_dir: Option<&Path>, save_dir: Option<&Path>) -> Result<TokenizedCorpus> {
        match self {
            Corpus::Shakespeare { val_fraction, tokenizer } => {
                if !(0.0 < *val_fraction && *val_fraction < 1.0) {
                    return Err(Error::Config(format!("val_fraction {val_fraction} outside (0, 1)")));
                }
                let text = data::text::tinyshakespeare(&data::fetch::obtain("tinyshakespeare", data_dir)?)?;
                let chars: Vec<char> = text.chars().collect();
                let cut = ((1.0 - val_fraction) * chars.len() as f64) as usize;
                let train: String = chars[..cut].iter().collect();
                let valid: String = chars[cut..].iter().collect();
                tokenize(&train, &valid, tokenizer, save_dir)
            }
            Corpus::Wikitext2 { tokenizer } => {
                let w = data::text::wikitext2(&data::fetch::obtain("wikitext-2", data_dir)?)?;
                tokenize(&w.train, &w.valid, tokenizer, save_dir)
            }
            Corpus::Synthetic { tokens, vocab, seed } => {
                if *vocab < 2 || *tokens < 100 {
                    return Err(Error::Config(format!(
                        "synthetic corpus needs vocab >= 2, tokens >= 100; got {vocab}, {tokens}"
                    )));
                }
                let all = synthetic_stream(*tokens, *vocab, *seed);
                let cut = all.len() * 9 / 10;
                Ok(TokenizedCorpus {
                    train: all[..cut].to_vec(),
                    valid: all[cut..].to_vec(),
                    vocab_size: *vocab,
                    decoder: TextDecoder::Symbols,
                })
            }
        }
    }
}

/// Prompts with known answers, scored at every evaluation by teacher-forced exact match: an example counts when
/// the model's most likely next token is the answer's at every answer position, given the prompt and the
/// answer's earlier tokens.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct AnswerProbe {
    /// Reported as `<name>_accuracy`.
    pub name: String,
    /// `(prompt tokens, answer tokens)`; together at most the model's context.
    pub examples: Vec<(Vec<u32>, Vec<u32>)>,
}

impl AnswerProbe {
    /// The fraction of examples answered exactly (NaN for no examples).
    pub fn accuracy(&self, model: &Decoder<f32>) -> Result<f64> {
        if self.examples.is_empty() {
            return Ok(f64::NAN);
        }
        let mut correct = 0;
        for (prompt, answer) in &self.examples {
            let ids: Vec<usize> = prompt.iter().chain(answer).map(|&t| t as usize).collect();
            if prompt.is_empty() || answer.is_empty() || ids.len() > model.config.context {
                return Err(Error::Config(format!(
                    "probe {}: a prompt of {} and an answer of {} tokens for a context of {}",
                    self.name,
                    prompt.len(),
                    answer.len(),
                    model.config.context
                )));
            }
            let logits = tensor::no_grad(|| model.forward(&ids, 1, ids.len()))?;
            let v = model.config.vocab_size;
            let rows =
                tensor::argmax_rows(&logits.value().to_shape((ids.len(), v)).expect("[1, t, v]").into_dyn().to_owned());
            correct += answer.iter().enumerate().all(|(j, &a)| rows[prompt.len() - 1 + j] == a as usize) as usize;
        }
        Ok(correct as f64 / self.examples.len() as f64)
    }
}

/// A decoder trained on next-token prediction.
#[derive(Debug)]
pub struct LmObjective {
    pub model: Decoder<f32>,
    pub train: LmBatcher,
    pub valid: LmBatcher,
    pub eval_batches: usize,
    /// The path of `(layer, branch scale)` the next training steps run (`None`: every layer, in order, unscaled);
    /// hooks set it for layer dropping or RaPTr. Evaluation always runs the full, unscaled model.
    pub path: Option<Vec<(usize, f64)>>,
    pub decoder: TextDecoder,
    /// Exact-match probes scored at every evaluation (none by default).
    pub probes: Vec<AnswerProbe>,
    last_layers_run: usize,
}

impl LmObjective {
    /// Loads and tokenizes the corpus and builds the model.
    pub fn new(config: &LmConfig, data_dir: Option<&Path>) -> Result<Self> {
        Self::with_save_dir(config, data_dir, None)
    }

    pub fn with_save_dir(config: &LmConfig, data_dir: Option<&Path>, save_dir: Option<&Path>) -> Result<Self> {
        config.train.validate()?;
        let corpus = config.corpus.load(data_dir, save_dir)?;
        Self::from_corpus(config, corpus)
    }

    pub fn from_corpus(config: &LmConfig, corpus: TokenizedCorpus) -> Result<Self> {
        let mut model_config = config.model.clone();
        if model_config.vocab_size == 0 {
            model_config.vocab_size = corpus.vocab_size;
        } else if model_config.vocab_size < corpus.vocab_size {
            return Err(Error::Config(format!(
                "model vocab_size {} is smaller than the tokenizer's {}",
                model_config.vocab_size, corpus.vocab_size
            )));
        }
        let ctx = model_config.context;
        let model = Decoder::new(&model_config, config.model_seed)?;
        let train = LmBatcher::new(corpus.train, ctx, config.batch, config.sampling, config.data_seed)?;
        let valid = LmBatcher::new(corpus.valid, ctx, config.batch, WindowSampling::Shuffled, config.data_seed)?;
        let n = model.n_layers();
        Ok(LmObjective {
            model,
            train,
            valid,
            eval_batches: config.eval_batches,
            path: None,
            decoder: corpus.decoder,
            probes: Vec::new(),
            last_layers_run: n,
        })
    }

    /// Mean validation loss over `eval_batches` consecutive batches (all when 0), token-weighted.
    pub fn validation_loss(&self) -> Result<f64> {
        let take = if self.eval_batches == 0 { usize::MAX } else { self.eval_batches };
        let (mut total, mut count) = (0.0, 0usize);
        for b in self.valid.sequential_batches().take(take) {
            let l = no_grad(|| self.model.loss(&b.inputs, &b.targets, b.batch, b.context, None))?;
            total += l.item() as f64 * (b.batch * b.context) as f64;
            count += b.batch * b.context;
        }
        Ok(total / count.max(1) as f64)
    }

    /// An independent copy: the weights deep-copied (no shared storage), the data position and everything else
    /// copied. Growth-operator selection (LAG) trains such forks side by side.
    pub fn fork(&self) -> LmObjective {
        LmObjective {
            model: self.model.deep_copy(),
            train: self.train.clone(),
            valid: self.valid.clone(),
            eval_batches: self.eval_batches,
            path: self.path.clone(),
            decoder: self.decoder.clone(),
            probes: self.probes.clone(),
            last_layers_run: self.last_layers_run,
        }
    }

    /// The path the next training step runs: [`LmObjective::path`], or every layer unscaled.
    pub fn training_path(&self) -> Vec<(usize, f64)> {
        self.path.clone().unwrap_or_else(|| self.model.all_layers().into_iter().map(|l| (l, 1.0)).collect())
    }

    /// A text sample continuing `prompt_ids`.
    pub fn sample(&self, prompt_ids: &[u32], n: usize, temperature: f64, seed: u64) -> Result<String> {
        let prompt: Vec<usize> = prompt_ids.iter().map(|&i| i as usize).collect();
        let s = transformer::Sampling::Temperature { temperature, top_k: Some(200) };
        let out = self.model.generate(&prompt, n, s, &mut tensor::seeded(seed))?;
        Ok(self.decoder.decode(&out.iter().map(|&i| i as u32).collect::<Vec<_>>()))
    }
}

impl Objective for LmObjective {
    fn params(&self) -> &Params<f32> {
        &self.model.params
    }

    fn train_loss(&mut self, _step: u64, rng: &mut Rng) -> Result<Tensor<f32>> {
        let b = self.train.next_batch();
        let path = self.training_path();
        self.last_layers_run = path.len();
        Ok(self.model.loss_path(&b.inputs, &b.targets, b.batch, b.context, &path, Some(rng))?)
    }

    fn evaluate(&mut self) -> Result<BTreeMap<String, f64>> {
        let loss = self.validation_loss()?;
        let mut metrics = BTreeMap::from([("val_loss".to_string(), loss), ("val_perplexity".to_string(), loss.exp())]);
        for probe in &self.probes {
            metrics.insert(format!("{}_accuracy", probe.name), probe.accuracy(&self.model)?);
        }
        Ok(metrics)
    }

    fn tokens_per_step(&self) -> u64 {
        (self.train.batch_size() * self.train.context()) as u64
    }

    fn flops_per_step(&self) -> u64 {
        flops::decoder_step(&self.model.config, self.train.batch_size(), self.train.context(), self.last_layers_run)
            .total()
    }

    fn data_state(&self) -> serde_json::Value {
        serde_json::to_value(self.train.state()).expect("json")
    }

    fn restore_data_state(&mut self, state: &serde_json::Value) -> Result<()> {
        let s: BatcherState = serde_json::from_value(state.clone())
            .map_err(|e| Error::Other(format!("data state in checkpoint: {e}")))?;
        Ok(self.train.restore(s)?)
    }
}
