//! `strata-train`: train a language model from a JSON config (see `train::lm::LmConfig`).
//!
//! ```text
//! strata-train --config lm.json --out runs/lm [--data DIR] [--resume] [--progress] [--growth growth.json]
//! ```
//! `strata-train export --weights DIR/model.safetensors --format hf-gpt2 --out HF_DIR [--tokenizer DIR/tokenizer.json]`
//! writes the decoder as a HuggingFace GPT-2 checkpoint (`GPT2LMHeadModel.from_pretrained(HF_DIR)` loads it;
//! rotary positions are refused, GPT-2 has none).
//! `--growth` grows the model during the run (a `strata_growth::GrowthConfig`: stage depths, Prop-alpha or
//! explicit stage starts, operator); the model config's `n_layers` must be the first stage's depth. A killed
//! grown run resumes like any other (the plan is replayed to the checkpoint's depth).
//! Writes `metrics.jsonl`, `checkpoints/`, `report.json` and the final weights `model.safetensors` to `--out`.
//! With `--resume`, a run that was killed continues from its latest checkpoint to the same final weights; the
//! checkpoint must come from the same config (any differing field is named). A fresh run refuses an output
//! folder that already holds a run unless `--overwrite`; two processes never share one (`--out/.lock`).

use std::path::PathBuf;

use anyhow::{Context, Result};
use clap::Parser;
use train::Trainer;
use train::lm::{LmConfig, LmObjective};

#[derive(Parser)]
#[command(name = "strata-train", about = "Train a Strata language model from a JSON config")]
struct Args {
    /// Run config (JSON, `LmConfig`).
    #[arg(long)]
    config: PathBuf,
    /// Output directory.
    #[arg(long)]
    out: PathBuf,
    /// Dataset root (else STRATA_DATA, else the user cache).
    #[arg(long)]
    data: Option<PathBuf>,
    /// Continue from the latest checkpoint in --out.
    #[arg(long)]
    resume: bool,
    /// Show a progress bar.
    #[arg(long)]
    progress: bool,
    /// Grow the model during the run (JSON, `strata_growth::GrowthConfig`).
    #[arg(long)]
    growth: Option<PathBuf>,
    /// Start afresh in an --out that already holds a run (its metrics and checkpoints are replaced).
    #[arg(long, conflicts_with = "resume")]
    overwrite: bool,
}

/// `strata-train export --weights model.safetensors --format hf-gpt2 --out DIR [--tokenizer tokenizer.json]`
#[derive(Parser)]
#[command(name = "strata-train export", about = "Write a trained decoder in another framework's checkpoint format")]
struct ExportArgs {
    /// Weights written by strata-train (`model.safetensors`, config in its metadata).
    #[arg(long)]
    weights: PathBuf,
    /// `hf-gpt2`: HuggingFace GPT-2 (`config.json`, `model.safetensors`), for `GPT2LMHeadModel.from_pretrained`.
    #[arg(long, default_value = "hf-gpt2")]
    format: String,
    #[arg(long)]
    out: PathBuf,
    /// A `tokenizer.json` to copy beside the export (a `bpe` run writes one in its --out).
    #[arg(long)]
    tokenizer: Option<PathBuf>,
}

fn export(args: ExportArgs) -> Result<()> {
    if args.format != "hf-gpt2" {
        anyhow::bail!("unknown --format {} (supported: hf-gpt2)", args.format);
    }
    let model = transformer::Decoder::<f32>::load(&args.weights)
        .with_context(|| format!("loading {}", args.weights.display()))?;
    transformer::gpt2::export_hf_gpt2(&model, &args.out).context("exporting")?;
    if let Some(t) = &args.tokenizer {
        std::fs::copy(t, args.out.join("tokenizer.json")).with_context(|| format!("copying {}", t.display()))?;
    }
    eprintln!("wrote {} (config.json, model.safetensors)", args.out.display());
    Ok(())
}

fn main() -> Result<()> {
    if std::env::args().nth(1).as_deref() == Some("export") {
        return export(ExportArgs::parse_from(std::env::args().skip(1)));
    }
    let args = Args::parse();
    let text = std::fs::read_to_string(&args.config).with_context(|| format!("reading {}", args.config.display()))?;
    let mut config: LmConfig =
        serde_json::from_str(&text).with_context(|| format!("parsing {}", args.config.display()))?;
    config.train.progress |= args.progress;
    let _lock = train::OutputLock::acquire(&args.out).context("locking the output folder")?;
    let used = ["metrics.jsonl", "checkpoints"].iter().any(|f| args.out.join(f).exists());
    if used && !args.resume {
        if !args.overwrite {
            anyhow::bail!(
                "{} already holds a run (metrics.jsonl or checkpoints/): pass --resume to continue it or \
                 --overwrite to start afresh",
                args.out.display()
            );
        }
        for f in ["metrics.jsonl", "checkpoints", "model.safetensors", "report.json"] {
            let p = args.out.join(f);
            let removed = if p.is_dir() { std::fs::remove_dir_all(&p) } else { std::fs::remove_file(&p) };
            if let Err(e) = removed
                && e.kind() != std::io::ErrorKind::NotFound
            {
                return Err(e).with_context(|| format!("removing {}", p.display()));
            }
        }
    }
    let objective = LmObjective::with_save_dir(&config, args.data.as_deref(), Some(&args.out))
        .context("building the model and data")?;
    let mut trainer = Trainer::new(config.train.clone(), objective, Some(&args.out))?;
    let growth: Option<growth::GrowthConfig> = match &args.growth {
        Some(path) => {
            let text = std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?;
            Some(serde_json::from_str(&text).with_context(|| format!("parsing {}", path.display()))?)
        }
        None => None,
    };
    let plan = match &growth {
        Some(g) => {
            if g.stage_layers.first() != Some(&config.model.n_layers) {
                anyhow::bail!(
                    "the growth plan starts at {:?} layers but the model config has n_layers = {}",
                    g.stage_layers.first(),
                    config.model.n_layers
                );
            }
            Some(g.plan(config.train.steps).context("the growth plan")?)
        }
        None => None,
    };
    let mut fingerprint = config.clone();
    fingerprint.train.progress = false;
    trainer.set_run_config(serde_json::json!({ "lm": fingerprint, "growth": growth }));
    let resumed = match &plan {
        Some(plan) if args.resume => growth::resume(&mut trainer, plan).context("resuming")?,
        None if args.resume => trainer.resume().context("resuming")?,
        _ => false,
    };
    if resumed {
        eprintln!("resumed at step {}", trainer.step_count());
    }
    if let Some(plan) = plan {
        trainer.add_hook(Box::new(growth::GrowthHook::new(plan)));
    }
    let report = trainer.run().context("training")?;
    trainer.objective.model.save(&args.out.join("model.safetensors"))?;
    tensor::write_atomic(&args.out.join("report.json"), serde_json::to_string_pretty(&report)?.as_bytes())?;
    eprintln!("done: {} steps, final {:?}, {:.0} tokens/s", report.steps, report.final_eval, report.tokens_per_second);
    Ok(())
}
