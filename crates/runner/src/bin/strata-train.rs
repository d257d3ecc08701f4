//! `strata-train`: train a language model from a JSON config (see `train::lm::LmConfig`).
//!
//! ```text
//! strata-train --config lm.json --out runs/lm [--data DIR] [--resume] [--progress]
//! ```
//! Writes `metrics.jsonl`, `checkpoints/`, `report.json` and the final weights `model.safetensors` to `--out`.
//! With `--resume`, a run that was killed continues from its latest checkpoint to the same final weights.

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
}

fn main() -> Result<()> {
    let args = Args::parse();
    let text = std::fs::read_to_string(&args.config).with_context(|| format!("reading {}", args.config.display()))?;
    let mut config: LmConfig =
        serde_json::from_str(&text).with_context(|| format!("parsing {}", args.config.display()))?;
    config.train.progress |= args.progress;
    std::fs::create_dir_all(&args.out).with_context(|| format!("creating {}", args.out.display()))?;
    let objective = LmObjective::with_save_dir(&config, args.data.as_deref(), Some(&args.out))
        .context("building the model and data")?;
    let mut trainer = Trainer::new(config.train.clone(), objective, Some(&args.out))?;
    if args.resume && trainer.resume().context("resuming")? {
        eprintln!("resumed at step {}", trainer.step_count());
    }
    let report = trainer.run().context("training")?;
    trainer.objective.model.save(&args.out.join("model.safetensors"))?;
    tensor::write_atomic(&args.out.join("report.json"), serde_json::to_string_pretty(&report)?.as_bytes())?;
    eprintln!("done: {} steps, final {:?}, {:.0} tokens/s", report.steps, report.final_eval, report.tokens_per_second);
    Ok(())
}
