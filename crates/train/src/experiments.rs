//! Language-model reproductions: `lm/shakespeare-char` (nanoGPT's CPU baseline) and `lm/wikitext2` (a small
//! BPE model on WikiText-2 with its validation-perplexity curve).

use std::path::Path;

use data::batch::WindowSampling;
use report::figure::{Chart, Series};
use report::{Check, DynExperiment, Experiment, Presets, Report, RunCtx};
use serde::{Deserialize, Serialize};
use tensor::Schedule;
use tensor::optim::AdamConfig;
use transformer::{DecoderConfig, Positions};

use crate::lm::{Corpus, LmConfig, LmObjective, TokenizerChoice};
use crate::{Error, Result, TrainConfig, TrainReport, Trainer};

/// The reproductions of this crate, for the `strata` runner.
pub fn all() -> Vec<Box<dyn DynExperiment>> {
    vec![Box::new(ShakespeareChar), Box::new(Wikitext2)]
}

/// nanoGPT README, "I only have a macbook" (CPU) baseline: validation loss about 1.88 after 2,000 iterations.
/// It is one 20-batch estimate, as noisy as +-0.01 (see [`NANOGPT_MEASURED_VAL_LOSS`]); it is drawn on the
/// figure, not checked.
pub const NANOGPT_CPU_VAL_LOSS: f64 = 1.88;

/// nanoGPT itself trained here with its README's CPU command (../shared/design/anchors/README.md): the
/// validation loss over every non-overlapping 64-character window of the validation split, the definition
/// Strata's trainer uses. One seed (1337).
pub const NANOGPT_MEASURED_VAL_LOSS: f64 = 1.898;

/// Settings of `lm/shakespeare-char`.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ShakespeareConfig {
    /// The training run. Its seeds (`model_seed`, `data_seed`, `train.seed`) are replaced per run by the
    /// run's seed, derived from `--seed` and the run index.
    pub lm: LmConfig,
    /// Independent runs (seeds); the claim is checked on their mean validation loss.
    pub runs: usize,
    /// nanoGPT's `estimate_loss`: random validation batches per estimate.
    pub estimate_batches: u64,
    /// The measured nanoGPT reference and how far the mean may be from it: three times the seed-to-seed
    /// standard deviation of Strata's own runs (about 0.01), since the reference is a single seed.
    pub reference_val_loss: f64,
    pub tolerance: f64,
    /// Characters sampled from the trained model for the report.
    pub sample_chars: usize,
}

impl Presets for ShakespeareConfig {
    fn smoke() -> Self {
        let mut lm = shakespeare_char_config(0);
        lm.model = DecoderConfig { n_layers: 1, d_model: 32, n_heads: 2, ..lm.model };
        lm.train = TrainConfig {
            steps: 10,
            schedule: Schedule::WarmupCosine { warmup: 2, total: 10, min_factor: 0.1 },
            eval_interval: 5,
            checkpoint_interval: 5,
            progress: false,
            ..lm.train
        };
        lm.eval_batches = 4;
        ShakespeareConfig { lm, runs: 1, estimate_batches: 2, sample_chars: 20, ..Self::quick() }
    }
    fn quick() -> Self {
        ShakespeareConfig {
            lm: shakespeare_char_config(0),
            runs: 1,
            estimate_batches: 20,
            reference_val_loss: NANOGPT_MEASURED_VAL_LOSS,
            tolerance: 0.03,
            sample_chars: 300,
        }
    }
    fn full() -> Self {
        ShakespeareConfig { runs: 3, ..Self::quick() }
    }
}

/// `lm/shakespeare-char`.
#[derive(Debug, Clone, Copy)]
pub struct ShakespeareChar;

impl Experiment for ShakespeareChar {
    type Config = ShakespeareConfig;
    type Error = Error;
    const ID: &'static str = "lm/shakespeare-char";
    const ABOUT: &'static str = "nanoGPT's CPU baseline (4x128, context 64, batch 12, 2,000 iters): validation loss \
                                 against nanoGPT trained at the same settings; tokens/s";

    fn run(&self, ctx: &RunCtx, cfg: &ShakespeareConfig) -> Result<Report> {
        shakespeare_char(ctx, cfg)
    }
}

/// Settings of `lm/wikitext2`.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Wikitext2Config {
    /// The training run (its seeds are replaced by the run's seed, derived from `--seed`).
    pub lm: LmConfig,
    /// Tokens sampled from the trained model for the report.
    pub sample_tokens: usize,
}

impl Presets for Wikitext2Config {
    fn smoke() -> Self {
        let mut lm = wikitext2_config(0, true);
        lm.model = DecoderConfig { n_layers: 1, d_model: 32, n_heads: 2, context: 32, ..lm.model };
        lm.corpus = Corpus::Wikitext2 { tokenizer: TokenizerChoice::Bytes };
        lm.eval_batches = 4;
        lm.batch = 4;
        lm.train = TrainConfig {
            steps: 10,
            schedule: Schedule::WarmupCosine { warmup: 1, total: 10, min_factor: 0.1 },
            eval_interval: 5,
            checkpoint_interval: 5,
            progress: false,
            ..lm.train
        };
        Wikitext2Config { lm, sample_tokens: 10 }
    }
    fn quick() -> Self {
        Wikitext2Config { lm: wikitext2_config(0, true), sample_tokens: 60 }
    }
    fn full() -> Self {
        Wikitext2Config { lm: wikitext2_config(0, false), sample_tokens: 60 }
    }
}

/// `lm/wikitext2`.
#[derive(Debug, Clone, Copy)]
pub struct Wikitext2;

impl Experiment for Wikitext2 {
    type Config = Wikitext2Config;
    type Error = Error;
    const ID: &'static str = "lm/wikitext2";
    const ABOUT: &'static str =
        "small BPE GPT on WikiText-2: validation perplexity curve against a unigram baseline; tokens/s";

    fn run(&self, ctx: &RunCtx, cfg: &Wikitext2Config) -> Result<Report> {
        wikitext2(ctx, cfg)
    }
}

/// nanoGPT's `train_shakespeare_char.py` with the README's CPU overrides (`--block_size=64 --batch_size=12
/// --n_layer=4 --n_head=4 --n_embd=128 --max_iters=2000 --lr_decay_iters=2000 --dropout=0.0`): AdamW lr 1e-3,
/// betas (0.9, 0.99), weight decay 0.1 on matrices, 100 warmup steps, cosine to 1e-4, clipping at 1.0, tied
/// embeddings, no biases, exact GELU.
pub fn shakespeare_char_config(seed: u64) -> LmConfig {
    LmConfig {
        model: DecoderConfig::nanogpt_shakespeare_char(0),
        model_seed: seed,
        corpus: Corpus::Shakespeare { val_fraction: 0.1, tokenizer: TokenizerChoice::Chars },
        batch: 12,
        sampling: WindowSampling::Random,
        data_seed: seed,
        eval_batches: 0,
        train: TrainConfig {
            steps: 2000,
            optimizer: AdamConfig { beta2: 0.99, decay_matrices_only: true, ..AdamConfig::adamw(1e-3, 0.1) }.into(),
            schedule: Schedule::WarmupCosine { warmup: 100, total: 2000, min_factor: 0.1 },
            grad_clip: Some(1.0),
            eval_interval: 250,
            checkpoint_interval: 500,
            log_interval: 10,
            seed,
            progress: true,
        },
    }
}

/// A small GPT on WikiText-2 with a byte-level BPE vocabulary trained on the train split.
pub fn wikitext2_config(seed: u64, quick: bool) -> LmConfig {
    let steps = if quick { 800 } else { 5000 };
    LmConfig {
        model: DecoderConfig {
            vocab_size: 0,
            context: 128,
            d_model: 128,
            n_layers: 4,
            n_heads: 4,
            positions: Positions::Rotary,
            ..DecoderConfig::default()
        },
        model_seed: seed,
        corpus: Corpus::Wikitext2 { tokenizer: TokenizerChoice::Bpe { vocab_size: if quick { 2048 } else { 8192 } } },
        batch: 16,
        sampling: WindowSampling::Shuffled,
        data_seed: seed,
        eval_batches: if quick { 40 } else { 0 },
        train: TrainConfig {
            steps,
            optimizer: AdamConfig { beta2: 0.99, decay_matrices_only: true, ..AdamConfig::adamw(2e-3, 0.1) }.into(),
            schedule: Schedule::WarmupCosine { warmup: steps / 20, total: steps, min_factor: 0.1 },
            grad_clip: Some(1.0),
            eval_interval: steps / 10,
            checkpoint_interval: steps / 4,
            log_interval: 10,
            seed,
            progress: true,
        },
    }
}

fn curves(run: &TrainReport, key: &str) -> (Vec<(f64, f64)>, Vec<(f64, f64)>) {
    let train = run.train_loss.iter().map(|&(s, l)| (s as f64, l)).collect();
    let eval = run.evals.iter().filter_map(|(s, m)| m.get(key).map(|&v| (*s as f64, v))).collect();
    (train, eval)
}

fn train_lm(ctx: &RunCtx, config: &LmConfig, out: &Path) -> Result<(LmObjective, TrainReport)> {
    std::fs::create_dir_all(out).map_err(|source| crate::Error::Io { path: out.to_path_buf(), source })?;
    let objective = LmObjective::with_save_dir(config, ctx.data_dir.as_deref(), Some(out))?;
    let mut trainer = Trainer::new(config.train.clone(), objective, Some(out))?;
    let report = trainer.run()?;
    trainer.objective.model.save(&out.join("model.safetensors"))?;
    Ok((trainer.objective, report))
}

/// nanoGPT's `estimate_loss`: the mean loss of `batches` random validation batches. Returns the mean and its
/// standard error across batches.
fn nanogpt_val_estimate(objective: &LmObjective, batches: u64, seed: u64) -> Result<(f64, f64)> {
    let (v, model) = (&objective.valid, &objective.model);
    let random = v.resampled(WindowSampling::Random, seed);
    let mut losses = Vec::new();
    for i in 0..batches {
        let b = random.batch_at(i);
        losses.push(tensor::no_grad(|| model.loss(&b.inputs, &b.targets, b.batch, b.context, None))?.item() as f64);
    }
    let n = losses.len() as f64;
    let mean = losses.iter().sum::<f64>() / n;
    let var = losses.iter().map(|l| (l - mean).powi(2)).sum::<f64>() / (n - 1.0);
    Ok((mean, (var / n).sqrt()))
}

fn common_metrics(report: &mut Report, objective: &LmObjective, run: &TrainReport) {
    report.metric("parameters", objective.model.num_parameters());
    report.metric("flops_total", run.flops_total);
    report.metric("final_eval", &run.final_eval);
    report.metric("evals", &run.evals);
    report.timing("train_seconds", run.train_seconds);
    report.timing("tokens_per_second", run.tokens_per_second);
    report.timing("matmul_gflops_per_second", run.matmul_flops_per_second / 1e9);
}

const JAX_REFERENCE: &str = "python3 benches/anchors/jax_lm_shapes.py --vocab 65 --d 128 --heads 4 --layers 4 --ctx 64 --batch 12 --tied --no-bias";

/// `lm/shakespeare-char`: nanoGPT's CPU baseline at its own settings, `cfg.runs` seeds; the claim is checked on
/// the mean validation loss against nanoGPT trained here at the same settings.
pub fn shakespeare_char(ctx: &RunCtx, cfg: &ShakespeareConfig) -> Result<Report> {
    if cfg.runs == 0 || cfg.estimate_batches < 2 {
        return Err(Error::Config(format!("runs {} and estimate_batches {} (>= 2)", cfg.runs, cfg.estimate_batches)));
    }
    let mut report = Report::new(ctx, cfg);
    let mut per_run = Vec::new();
    let mut first = None;
    for i in 0..cfg.runs {
        let seed = ctx.seed_for(&format!("run {i}"));
        let out = if cfg.runs == 1 { ctx.out_dir()? } else { ctx.out_dir()?.join(format!("run-{i}")) };
        let (objective, run) = train_lm(ctx, &cfg.lm.with_seed(seed), &out)?;
        let estimate_seed = ctx.seed_for(&format!("run {i} estimate"));
        let (estimate, se) = nanogpt_val_estimate(&objective, cfg.estimate_batches, estimate_seed)?;
        per_run.push(serde_json::json!({
            "run": i, "seed": seed, "val_loss": run.final_eval["val_loss"],
            "train_loss_last": run.train_loss.last().map(|p| p.1),
            "val_loss_nanogpt_estimate": estimate, "nanogpt_estimate_standard_error": se,
        }));
        report.timing(&format!("run_{i}_tokens_per_second"), run.tokens_per_second);
        first.get_or_insert((objective, run));
    }
    let (objective, run) = first.expect("runs >= 1");
    common_metrics(&mut report, &objective, &run);
    report.metric("per_run", &per_run);
    let val = per_run.iter().map(|s| s["val_loss"].as_f64().unwrap_or(f64::NAN)).sum::<f64>() / cfg.runs as f64;
    report.metric("mean_val_loss", val);
    report.check(
        "val-loss-matches-nanogpt",
        &format!(
            "at nanoGPT's CPU settings (4 layers, 4 heads, d 128, context 64, batch 12, 2,000 iterations, dropout 0) \
             the validation loss (mean over the runs) matches nanoGPT trained here at the same settings ({})",
            cfg.reference_val_loss
        ),
        "mean validation loss",
        val,
        Check::Within { target: cfg.reference_val_loss, tolerance: cfg.tolerance },
    );
    shakespeare_figure(ctx, &mut report, cfg, &run)?;
    let prompt = objective.train.tokens()[..32.min(objective.train.tokens().len())].to_vec();
    let sample = objective.sample(&prompt, cfg.sample_chars, 0.8, ctx.seed_for("sample"))?;
    report.metric("sample", &sample);
    report.note(format!(
        "Validation loss is the mean over every non-overlapping 64-character window of the last 10% of the text, \
         the definition under which nanoGPT's own run here gave {} (its README's ~1.88 is one 20-batch estimate; \
         ten fresh estimates of the same checkpoint ranged 1.886-1.922). nanoGPT's 20-batch estimate on our model \
         is in `per_run` with its standard error. Throughput is of the whole trainer; the JAX reference at the \
         same shapes is measured with `{JAX_REFERENCE}` in the same session; see docs/reproductions.md. Sample \
         (temperature 0.8, KV cache):\n\n```\n{sample}\n```",
        cfg.reference_val_loss
    ));
    Ok(report)
}

fn shakespeare_figure(ctx: &RunCtx, report: &mut Report, cfg: &ShakespeareConfig, run: &TrainReport) -> Result<()> {
    let (train, eval) = curves(run, "val_loss");
    let end = cfg.lm.train.steps as f64;
    let line = |v: f64| vec![(0.0, v), (end, v)];
    let chart = Chart::new("TinyShakespeare, character level", "step", "cross-entropy (nats)")
        .series(Series::line("train (batch)", train))
        .series(Series::scatter("validation", eval))
        .series(Series::reference(&format!("nanoGPT here {}", cfg.reference_val_loss), line(cfg.reference_val_loss)))
        .series(Series::reference("nanoGPT README ~1.88", line(NANOGPT_CPU_VAL_LOSS)));
    report.line_figure(
        ctx,
        "loss.png",
        "training and validation loss; dashed: nanoGPT trained here, and its README's noisy ~1.88",
        &chart,
    )?;
    Ok(())
}

/// Unigram (context-free) cross-entropy of `valid` under add-one-smoothed train frequencies: the loss a model
/// that ignores context would reach.
fn unigram_loss(train: &[u32], valid: &[u32], vocab: usize) -> f64 {
    let mut counts = vec![1.0f64; vocab];
    for &t in train {
        counts[t as usize] += 1.0;
    }
    let total: f64 = counts.iter().sum();
    -valid.iter().map(|&t| (counts[t as usize] / total).ln()).sum::<f64>() / valid.len() as f64
}

/// `lm/wikitext2`: a small BPE GPT on WikiText-2; validation perplexity curve and throughput.
pub fn wikitext2(ctx: &RunCtx, cfg: &Wikitext2Config) -> Result<Report> {
    let config = cfg.lm.with_seed(ctx.seed_for("run 0"));
    let mut report = Report::new(ctx, cfg);
    let (objective, run) = train_lm(ctx, &config, &ctx.out_dir()?)?;
    common_metrics(&mut report, &objective, &run);
    let vocab = objective.model.config.vocab_size;
    let unigram = unigram_loss(objective.train.tokens(), objective.valid.tokens(), vocab);
    report.metric("unigram_val_perplexity", unigram.exp());
    report.metric("train_tokens", objective.train.tokens().len());
    report.metric("valid_tokens", objective.valid.tokens().len());
    let (_, ppl) = curves(&run, "val_perplexity");
    let first = ppl.first().map(|p| p.1).unwrap_or(f64::NAN);
    let last = run.final_eval.get("val_perplexity").copied().unwrap_or(f64::NAN);
    report.check(
        "beats-unigram",
        "the trained model's validation perplexity is below the unigram (context-free) perplexity of the same \
         tokenization",
        "val perplexity / unigram perplexity",
        last / unigram.exp(),
        Check::Below(1.0),
    );
    report.check(
        "perplexity-falls",
        "validation perplexity keeps falling after the first evaluation",
        "final / first evaluated perplexity",
        last / first,
        Check::Below(0.9),
    );
    let end = config.train.steps as f64;
    let chart = Chart::new("WikiText-2, BPE", "step", "validation perplexity")
        .log_y()
        .series(Series::line("validation", ppl))
        .series(Series::reference("unigram", vec![(0.0, unigram.exp()), (end, unigram.exp())]));
    report.line_figure(
        ctx,
        "val_perplexity.png",
        "validation perplexity against steps (unigram baseline dashed)",
        &chart,
    )?;
    let prompt = objective.valid.tokens()[..16.min(objective.valid.tokens().len())].to_vec();
    let sample = objective.sample(&prompt, cfg.sample_tokens, 0.8, ctx.seed_for("sample"))?;
    report.metric("sample", &sample);
    report.note(format!(
        "Tokenizer {:?} ({} entries) trained on the train split; {} train and {} validation tokens. Perplexity is \
         per token{}.",
        match &config.corpus {
            Corpus::Wikitext2 { tokenizer } => format!("{tokenizer:?}"),
            other => format!("{other:?}"),
        },
        vocab,
        objective.train.tokens().len(),
        objective.valid.tokens().len(),
        if config.eval_batches > 0 {
            format!(" over the first {} validation batches", config.eval_batches)
        } else {
            " over the whole validation split".into()
        }
    ));
    Ok(report)
}
