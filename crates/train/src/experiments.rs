//! Language-model reproductions: `lm/shakespeare-char` (nanoGPT's CPU baseline) and `lm/wikitext2` (a small
//! BPE model on WikiText-2 with its validation-perplexity curve).

use std::path::Path;

use data::batch::WindowSampling;
use report::figure::{Chart, Series, line_chart};
use report::{Report, RunCtx};
use serde::Serialize;
use tensor::Schedule;
use tensor::optim::AdamConfig;
use transformer::{DecoderConfig, Positions};

use crate::lm::{Corpus, LmConfig, LmObjective, TokenizerChoice};
use crate::{Result, TrainConfig, TrainReport, Trainer};

/// nanoGPT README, "I only have a macbook" (CPU) baseline: validation loss about 1.88 after 2,000 iterations.
pub const NANOGPT_CPU_VAL_LOSS: f64 = 1.88;

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

#[derive(Serialize)]
struct ExperimentConfig<'a> {
    lm: &'a LmConfig,
    jax_reference: &'a str,
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
    report.metric("train_seconds", run.train_seconds);
    report.metric("tokens_per_second", run.tokens_per_second);
    report.metric("matmul_gflops_per_second", run.matmul_flops_per_second / 1e9);
    report.metric("final_eval", &run.final_eval);
    report.metric("evals", &run.evals);
}

/// `lm/shakespeare-char`: nanoGPT's CPU baseline at its own settings. Quick trains one seed (the whole 2,000
/// iterations fit the quick budget); full trains three seeds and checks the claim on their mean.
pub fn shakespeare_char(ctx: &RunCtx) -> Result<Report> {
    let config = shakespeare_char_config(ctx.seed);
    let jax = "python3 benches/anchors/jax_lm_shapes.py --vocab 65 --d 128 --heads 4 --layers 4 --ctx 64 --batch 12 --tied --no-bias";
    let mut report = Report::new(ctx, &ExperimentConfig { lm: &config, jax_reference: jax });
    let seeds: Vec<u64> = if ctx.is_quick() { vec![ctx.seed] } else { (0..3).map(|i| ctx.seed + i).collect() };
    let mut per_seed = Vec::new();
    let mut first = None;
    for &seed in &seeds {
        let out = if seeds.len() == 1 { ctx.out_dir()? } else { ctx.out_dir()?.join(format!("seed-{seed}")) };
        let (objective, run) = train_lm(ctx, &shakespeare_char_config(seed), &out)?;
        let (estimate, se) = nanogpt_val_estimate(&objective, 20, seed + 1000)?;
        per_seed.push(serde_json::json!({
            "seed": seed, "val_loss": run.final_eval["val_loss"], "train_loss_last": run.train_loss.last().map(|p| p.1),
            "val_loss_nanogpt_estimate": estimate, "nanogpt_estimate_standard_error": se,
            "tokens_per_second": run.tokens_per_second,
        }));
        if first.is_none() {
            first = Some((objective, run));
        }
    }
    let (objective, run) = first.expect("at least one seed");
    common_metrics(&mut report, &objective, &run);
    report.metric("per_seed", &per_seed);
    let val = per_seed.iter().map(|s| s["val_loss"].as_f64().unwrap_or(f64::NAN)).sum::<f64>() / seeds.len() as f64;
    report.metric("mean_val_loss", val);
    report.claim(
        "val-loss-at-most-nanogpt",
        "at nanoGPT's CPU settings (4 layers, 4 heads, d 128, context 64, batch 12, 2,000 iterations, dropout 0) \
         the validation loss (mean over the seeds run) is at most nanoGPT's reported ~1.88",
        "val loss <= 1.88",
        val,
        |v| v <= NANOGPT_CPU_VAL_LOSS,
    );
    let (train, eval) = curves(&run, "val_loss");
    let chart = Chart::new("TinyShakespeare, character level", "step", "cross-entropy (nats)")
        .series(Series::line("train (batch)", train))
        .series(Series::scatter("validation", eval))
        .series(Series::reference("nanoGPT CPU 1.88", vec![(0.0, 1.88), (config.train.steps as f64, 1.88)]));
    report.figure(
        ctx,
        "loss.png",
        "training and validation loss; the dashed line is nanoGPT's reported 1.88",
        |p: &Path| line_chart(p, &chart),
    )?;
    let prompt = objective.train.tokens()[..32].to_vec();
    let sample = objective.sample(&prompt, 300, 0.8, ctx.seed)?;
    report.metric("sample", &sample);
    report.note(format!(
        "Validation loss is the mean over every non-overlapping 64-character window of the last 10% of the text. \
         nanoGPT's CPU run estimates it from 20 random batches of 12 windows (`--eval_iters=20`); the same \
         estimate on our model is in `per_seed` with its standard error, the size of the noise in the 1.88. \
         Throughput is of the whole trainer (batching, schedule, clipping, logging, checkpoints excluded from the \
         timed steps). The JAX reference at the same shapes is measured with `{jax}` in the same session; see \
         docs/reproductions.md. Sample (temperature 0.8, KV cache):\n\n```\n{sample}\n```"
    ));
    Ok(report)
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
pub fn wikitext2(ctx: &RunCtx) -> Result<Report> {
    let config = wikitext2_config(ctx.seed, ctx.is_quick());
    let mut report = Report::new(ctx, &ExperimentConfig { lm: &config, jax_reference: "-" });
    let (objective, run) = train_lm(ctx, &config, &ctx.out_dir()?)?;
    common_metrics(&mut report, &objective, &run);
    let vocab = objective.model.config.vocab_size;
    let unigram = unigram_loss(objective.train.tokens(), objective.valid.tokens(), vocab);
    report.metric("unigram_val_perplexity", unigram.exp());
    report.metric("train_tokens", objective.train.tokens().len());
    report.metric("valid_tokens", objective.valid.tokens().len());
    let (_, ppl) = curves(&run, "val_perplexity");
    let first = ppl.first().map(|p| p.1).unwrap_or(f64::NAN);
    let last = run.final_eval["val_perplexity"];
    report.claim(
        "beats-unigram",
        "the trained model's validation perplexity is below the unigram (context-free) perplexity of the same \
         tokenization",
        "val perplexity < unigram perplexity",
        last / unigram.exp(),
        |r| r < 1.0,
    );
    report.claim(
        "perplexity-falls",
        "validation perplexity keeps falling after the first evaluation",
        "final / first evaluated perplexity < 0.9",
        last / first,
        |r| r < 0.9,
    );
    let chart = Chart::new("WikiText-2, BPE", "step", "validation perplexity")
        .log_y()
        .series(Series::line("validation", ppl))
        .series(Series::reference("unigram", vec![(0.0, unigram.exp()), (config.train.steps as f64, unigram.exp())]));
    report.figure(
        ctx,
        "val_perplexity.png",
        "validation perplexity against steps (unigram baseline dashed)",
        |p: &Path| line_chart(p, &chart),
    )?;
    let prompt = objective.valid.tokens()[..16].to_vec();
    let sample = objective.sample(&prompt, 60, 0.8, ctx.seed)?;
    report.metric("sample", &sample);
    report.note(format!(
        "Byte-level BPE ({} entries incl. one special token) trained on the train split with HuggingFace \
         tokenizers; {} train and {} validation tokens. Perplexity is per BPE token{}.",
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
