//! `strata`: the reproduction runner. `cargo xtask reproduce ...` builds it in release mode and calls it.
//!
//! ```text
//! strata reproduce --list
//! strata reproduce <id>|all [--quick] [--seed N] [--out DIR] [--data DIR]
//! ```

mod foundations;

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::{Context, Result, bail};
use clap::{Parser, Subcommand};
use report::{Report, RunCtx, Scale};

/// One reproduction: an id (`family/name`), a one-line description, and the function that runs it.
struct Experiment {
    id: &'static str,
    about: &'static str,
    run: fn(&RunCtx) -> Result<Report>,
}

fn experiments() -> Vec<Experiment> {
    vec![
        Experiment {
            id: "tensor/foundations",
            about: "gradient checks of every op family, XOR and a toy conv net learning, determinism across thread counts",
            run: foundations::run,
        },
        Experiment {
            id: "icl/looped-gd",
            about: "P3: looped restricted LSA learns preconditioned GD (u -> 0, A Sigma -> I, closed form, optimal preconditioner)",
            run: |c| Ok(icl::experiments::looped_gd(c)?),
        },
        Experiment {
            id: "icl/depth-vs-kappa",
            about: "P1: loss against depth for kappa in {1, 10, 100}, four LSA families, Chebyshev and Newton-Schulz rates",
            run: |c| Ok(icl::experiments::depth_vs_kappa(c)?),
        },
        Experiment {
            id: "icl/robustness",
            about: "P1: error under spectrum shifts, multilayer against looped",
            run: |c| Ok(icl::experiments::robustness(c)?),
        },
        Experiment {
            id: "icl/monotonicity",
            about: "P1: loss against evaluation depth (and loops beyond training depth)",
            run: |c| Ok(icl::experiments::monotonicity(c)?),
        },
        Experiment {
            id: "saliency/complete-sound",
            about: "P9: completeness and soundness of saliency methods on MNIST and synthetic shapes; TV/upsampling ablations",
            run: |c| Ok(saliency::experiments::complete_sound(c)?),
        },
        Experiment {
            id: "lm/shakespeare-char",
            about: "nanoGPT's CPU baseline (4x128, context 64, batch 12, 2,000 iters): validation loss <= 1.88; tokens/s",
            run: |c| Ok(train::experiments::shakespeare_char(c)?),
        },
        Experiment {
            id: "lm/wikitext2",
            about: "small BPE GPT on WikiText-2: validation perplexity curve against a unigram baseline; tokens/s",
            run: |c| Ok(train::experiments::wikitext2(c)?),
        },
        Experiment {
            id: "datamodels/exact",
            about: "P10: by enumeration, least-squares datamodel = Fourier levels 0/1, residual = weight above 1, Stab_rho, influences",
            run: |c| Ok(datamodels::experiments::exact(c)?),
        },
        Experiment {
            id: "datamodels/estimate",
            about: "P10: residual from rho-correlated pairs vs regression, models needed as N grows",
            run: |c| Ok(datamodels::experiments::estimate(c)?),
        },
        Experiment {
            id: "datamodels/groups",
            about: "P10: linear group-effect predictions against exact group effects as groups grow",
            run: |c| Ok(datamodels::experiments::groups(c)?),
        },
    ]
}

#[derive(Parser)]
#[command(name = "strata", about = "Strata: reproductions of results on depth and layers")]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run one reproduction (or `all`) and write its report.
    Reproduce {
        /// Experiment id (see --list), or `all`.
        id: Option<String>,
        /// List the experiments.
        #[arg(long)]
        list: bool,
        /// The small configuration (minutes on 2 cores) instead of the full one.
        #[arg(long)]
        quick: bool,
        #[arg(long, default_value_t = 0)]
        seed: u64,
        /// Output root; each experiment writes to <out>/<id>/.
        #[arg(long, default_value = "out")]
        out: PathBuf,
        /// Dataset folder (overrides STRATA_DATA).
        #[arg(long)]
        data: Option<PathBuf>,
    },
}

fn main() -> ExitCode {
    match run(Cli::parse()) {
        Ok(code) => code,
        Err(e) => {
            eprintln!("error: {e}");
            for cause in e.chain().skip(1) {
                eprintln!("  caused by: {cause}");
            }
            ExitCode::from(2)
        }
    }
}

fn run(cli: Cli) -> Result<ExitCode> {
    let Command::Reproduce { id, list, quick, seed, out, data } = cli.command;
    let all = experiments();
    if list || id.is_none() {
        for e in &all {
            println!("{:28} {}", e.id, e.about);
        }
        return Ok(ExitCode::SUCCESS);
    }
    let id = id.expect("checked");
    let chosen: Vec<&Experiment> = if id == "all" {
        all.iter().collect()
    } else {
        match all.iter().find(|e| e.id == id) {
            Some(e) => vec![e],
            None => bail!("unknown experiment `{id}`; `strata reproduce --list` shows them"),
        }
    };
    let scale = if quick { Scale::Quick } else { Scale::Full };
    let mut failed_claims = 0;
    let mut failed_runs: Vec<&str> = Vec::new();
    for e in chosen {
        let mut ctx = RunCtx::new(e.id, seed, scale, out.clone());
        if let Some(d) = &data {
            ctx.data_dir = Some(d.clone());
        }
        eprintln!("== {} ({:?}, seed {seed})", e.id, scale);
        let report = match (e.run)(&ctx).with_context(|| format!("experiment {}", e.id)) {
            Ok(r) => r,
            // With `all`, one experiment's failure (e.g. a dataset that is not on this machine) does not stop the
            // others; the exit code still reports it.
            Err(err) if id == "all" => {
                eprintln!("  error: {err:#}");
                failed_runs.push(e.id);
                continue;
            }
            Err(err) => return Err(err),
        };
        let (held, total) = report.claims_held();
        for c in &report.claims {
            eprintln!(
                "  [{}] {}: measured {:.4e} (expected {})",
                if c.holds { "ok" } else { "FAIL" },
                c.id,
                c.measured,
                c.expected
            );
        }
        failed_claims += total - held;
        let dir = report.finish(&ctx).with_context(|| format!("writing the report of {}", e.id))?;
        eprintln!("  {held}/{total} claims hold; report in {}", dir.join("report.md").display());
    }
    // Claims that do not hold are results, not errors: the exit code stays 0 and the report says so.
    if failed_claims > 0 {
        eprintln!("{failed_claims} claim(s) did not hold (see the reports)");
    }
    if !failed_runs.is_empty() {
        bail!("{} experiment(s) could not run: {}", failed_runs.len(), failed_runs.join(", "));
    }
    Ok(ExitCode::SUCCESS)
}
