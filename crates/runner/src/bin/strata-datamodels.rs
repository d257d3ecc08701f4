//! `strata-datamodels`: train many models on subsets into a store, merge stores, analyze anyone's datamodel runs.
//!
//! ```text
//! strata-datamodels run --store DIR [--rows 0..1000 | --shard auto|K/N [--shards N]] [--models M --pool N
//!                       --outputs T --sampling iid|alpha|pairs --p P --alpha A --rho R --seed S --data DIR]
//! strata-datamodels merge --into DIR SHARD_DIR...
//! strata-datamodels analyze --masks masks.npy --outputs margins.npy [--pairs-rho R] [--max-outputs K] [--out a.json]
//! ```
//! `run` is one worker. In a job array, `--shard auto` takes the task's index and count from Slurm
//! (`SLURM_ARRAY_TASK_ID`, `SLURM_ARRAY_TASK_COUNT`) or a Kubernetes Indexed Job (`JOB_COMPLETION_INDEX`, with
//! `--shards N`), computes its share of the rows into `--store/shard-K-of-N`, and one command line serves every
//! task; `merge` joins the shards (docs/cluster.md). Rerunning a killed worker continues where it stopped.

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::{Context, Result, bail};
use clap::{Parser, Subcommand, ValueEnum};
use datamodels::analyze::{AnalyzeOptions, analyze};
use datamodels::runs::{BinaryTask, LOGISTIC_BLOCK, LogisticConfig, MlpConfig, train_logistic_block, train_mlp};
use datamodels::store::{Sampling, Shard, Store, StoreMeta, read_matrix};

#[derive(Parser)]
#[command(name = "strata-datamodels", about = "Datamodels: many-model runs, merging, analysis")]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Clone, Copy, ValueEnum)]
enum ModelKind {
    Logistic,
    Mlp,
}

#[derive(Clone, Copy, ValueEnum)]
enum SamplingKind {
    Iid,
    Alpha,
    Pairs,
}

#[derive(Subcommand)]
enum Command {
    /// Train models (MNIST 3 vs 8) on the subsets of rows `--rows` and store their test margins.
    Run {
        #[arg(long)]
        store: PathBuf,
        /// Logistic regression, or a one-hidden-layer MLP (32 ReLU units, Adam).
        #[arg(long, value_enum, default_value = "logistic")]
        model: ModelKind,
        /// Row range `start..end` this worker computes (default: all).
        #[arg(long, conflicts_with = "shard")]
        rows: Option<String>,
        /// This worker is task K of N of a job array (`K/N`), or `auto` (from the scheduler's variables); it
        /// writes its rows into `--store/shard-K-of-N`.
        #[arg(long)]
        shard: Option<String>,
        /// The number of tasks, for `--shard auto` under schedulers that do not export it (Kubernetes).
        #[arg(long)]
        shards: Option<usize>,
        #[arg(long, default_value_t = 2000)]
        models: usize,
        #[arg(long, default_value_t = 100)]
        pool: usize,
        #[arg(long, default_value_t = 10)]
        outputs: usize,
        #[arg(long, value_enum, default_value = "iid")]
        sampling: SamplingKind,
        #[arg(long, default_value_t = 0.5)]
        p: f64,
        #[arg(long, default_value_t = 0.5)]
        alpha: f64,
        #[arg(long, default_value_t = 0.5)]
        rho: f64,
        #[arg(long, default_value_t = 0)]
        seed: u64,
        /// Dataset root (else STRATA_DATA, else the user cache).
        #[arg(long)]
        data: Option<PathBuf>,
    },
    /// Copy the done rows of shard stores into one store (created with the shards' metadata if missing).
    Merge {
        #[arg(long)]
        into: PathBuf,
        shards: Vec<PathBuf>,
    },
    /// Fit a datamodel per output and report its quality as JSON.
    Analyze {
        #[arg(long)]
        masks: PathBuf,
        #[arg(long)]
        outputs: PathBuf,
        /// Rows 2k, 2k+1 are rho-correlated pairs: add the noise-stability residual estimate.
        #[arg(long)]
        pairs_rho: Option<f64>,
        #[arg(long)]
        max_outputs: Option<usize>,
        #[arg(long, default_value_t = 1e-6)]
        ridge: f64,
        /// Write the JSON here (default: stdout).
        #[arg(long)]
        out: Option<PathBuf>,
    },
}

fn main() -> ExitCode {
    match run(Cli::parse()) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e}");
            for cause in e.chain().skip(1) {
                eprintln!("  caused by: {cause}");
            }
            ExitCode::from(2)
        }
    }
}

fn parse_range(s: &str, models: usize) -> Result<std::ops::Range<usize>> {
    let (a, b) = s.split_once("..").with_context(|| format!("--rows {s}: expected start..end"))?;
    let (a, b): (usize, usize) = (a.parse()?, b.parse()?);
    if a > b || b > models {
        bail!("--rows {s}: outside 0..{models}");
    }
    Ok(a..b)
}

fn run(cli: Cli) -> Result<()> {
    match cli.command {
        Command::Run {
            store,
            model,
            rows,
            shard,
            shards,
            models,
            pool,
            outputs,
            sampling,
            p,
            alpha,
            rho,
            seed,
            data,
        } => {
            let shard = shard
                .map(|spec| Shard::parse(&spec, shards, &|name| std::env::var(name).ok()))
                .transpose()
                .context("--shard")?;
            let store = match shard {
                Some(s) => s.dir(&store),
                None => store,
            };
            let sampling = match sampling {
                SamplingKind::Iid => Sampling::Iid { p },
                SamplingKind::Alpha => Sampling::Alpha { alpha },
                SamplingKind::Pairs => Sampling::Pairs { p, rho },
            };
            let (logistic, mlp) = (LogisticConfig::default(), MlpConfig::default());
            let description = match model {
                ModelKind::Logistic => format!("logistic regression {logistic:?}"),
                ModelKind::Mlp => format!("MLP {mlp:?}"),
            };
            let meta = StoreMeta {
                models,
                pool,
                outputs,
                sampling,
                seed,
                task: format!("{description}, MNIST 3 vs 8; output = test margin"),
            };
            let dir = data::fetch::obtain("mnist", data.as_deref()).context("finding MNIST")?;
            let mnist = data::mnist::Mnist::load(&dir)?;
            let task = BinaryTask::mnist(&mnist, 3, 8, pool, outputs)?;
            let st = Store::create_or_open(&store, meta).with_context(|| format!("store {}", store.display()))?;
            let range = match (rows, shard) {
                (Some(r), _) => parse_range(&r, models)?,
                (None, Some(s)) => s.rows(models),
                (None, None) => 0..models,
            };
            let started = std::time::Instant::now();
            let to_f32 = |margins: Vec<f64>| margins.into_iter().map(|v| v as f32).collect::<Vec<f32>>();
            let computed = match model {
                // Logistic models train a block at a time: two matrix products per step for the whole block.
                ModelKind::Logistic => st.run_blocks(range.clone(), LOGISTIC_BLOCK, |_, masks| {
                    Ok(train_logistic_block(&task, masks, &logistic)?.into_iter().map(to_f32).collect())
                })?,
                // The MLP's per-model products are already matrix-sized (and use only the subset's rows), so one
                // model per task is faster than the batched path here (docs/performance.md).
                ModelKind::Mlp => st.run(range.clone(), |_, mask| Ok(to_f32(train_mlp(&task, mask, &mlp)?)))?,
            };
            let secs = started.elapsed().as_secs_f64();
            let done = st.done()?.iter().filter(|d| **d).count();
            eprintln!(
                "rows {range:?}: trained {computed} models in {secs:.1} s ({:.1} models/s); store {done}/{models} done",
                computed as f64 / secs.max(1e-9)
            );
        }
        Command::Merge { into, shards } => {
            if shards.is_empty() {
                bail!("no shards to merge");
            }
            let opened: Vec<Store> = shards
                .iter()
                .map(|s| Store::open(s).with_context(|| format!("shard {}", s.display())))
                .collect::<Result<_>>()?;
            let target = Store::create_or_open(&into, opened[0].meta.clone())?;
            let copied = target.merge_from(&opened)?;
            let done = target.done()?.iter().filter(|d| **d).count();
            eprintln!("copied {copied} rows; {} now has {done}/{} done", into.display(), target.meta.models);
        }
        Command::Analyze { masks, outputs, pairs_rho, max_outputs, ridge, out } => {
            let mut m = read_matrix(&masks).with_context(|| format!("masks {}", masks.display()))?;
            let mut o = read_matrix(&outputs).with_context(|| format!("outputs {}", outputs.display()))?;
            // A Strata store beside the masks: only its completed rows are data.
            let done_path = masks.with_file_name("done.npy");
            if done_path.exists() {
                let done = read_matrix(&done_path).with_context(|| format!("{}", done_path.display()))?;
                let total = m.rows;
                (m, o) = datamodels::store::completed_rows(&m, &o, &done)
                    .with_context(|| format!("the completion bitmap {}", done_path.display()))?;
                if m.rows < total {
                    eprintln!(
                        "{}: {} of {total} rows are complete; analyzing those only (the rest are pending)",
                        done_path.display(),
                        m.rows
                    );
                }
            }
            let analysis = analyze(&m, &o, &AnalyzeOptions { ridge, pairs_rho, max_outputs })?;
            let json = serde_json::to_string_pretty(&analysis)?;
            match out {
                Some(path) => tensor::write_atomic(&path, json.as_bytes())?,
                None => println!("{json}"),
            }
        }
    }
    Ok(())
}
