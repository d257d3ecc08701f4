//! `strata`: the reproduction runner. `cargo xtask reproduce ...` builds it in release mode and calls it.
//!
//! ```text
//! strata reproduce --list
//! strata reproduce <id>|all [--smoke|--quick] [--seed N] [--out DIR] [--data DIR] [--verify-config]
//! strata reproduce <id> [--smoke|--quick] --print-config > cfg.json
//! strata reproduce <id> --config cfg.json [--seed N] [--out DIR] [--data DIR]
//! strata reproduce <id> [--smoke|--quick|--config F] --set section.field=value ...
//! strata reproduce all --skip <id> ...
//! strata data list [--data DIR] [--verify]
//! strata data fetch <name>...|all [--into DIR]
//! ```
//!
//! The experiments come from each domain crate's `experiments::all()`; this binary holds no list of its own.

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::{Context, Result, bail};
use clap::{Parser, Subcommand};
use report::{DynExperiment, Report, RunCtx, Scale, Verdict};

#[derive(Parser)]
#[command(name = "strata", about = "Strata: reproductions of results on depth and layers")]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run one reproduction (or `all`) and write its report.
    Reproduce(ReproduceArgs),
    /// The registered datasets: where they are found, and fetching them.
    #[command(subcommand)]
    Data(DataCommand),
}

#[derive(Subcommand)]
enum DataCommand {
    /// Every registered dataset: size, license, and the folder it is found in (or "missing").
    List {
        /// Look only in this folder (as `reproduce --data` does).
        #[arg(long)]
        data: Option<PathBuf>,
        /// Check every found file's SHA-256 too (reads them all).
        #[arg(long)]
        verify: bool,
    },
    /// Download datasets (checked against their SHA-256) into the user cache or a folder. STRATA_DATA_URL sets a
    /// mirror laid out like a data folder; STRATA_OFFLINE=1 forbids the network.
    Fetch {
        /// Dataset names, or `all`.
        #[arg(required = true)]
        names: Vec<String>,
        /// Into DIR/<name>/ instead of the user cache.
        #[arg(long)]
        into: Option<PathBuf>,
    },
}

#[derive(clap::Args)]
struct ReproduceArgs {
    /// Experiment id (see --list), or `all`.
    id: Option<String>,
    /// List the experiments.
    #[arg(long)]
    list: bool,
    /// The seconds-long configuration that runs every code path (claims may be not measured).
    #[arg(long, conflicts_with = "quick")]
    smoke: bool,
    /// The small configuration (minutes on 2 cores) instead of the full one.
    #[arg(long)]
    quick: bool,
    /// Print the configuration (of the chosen scale, or of --config) as JSON and exit.
    #[arg(long)]
    print_config: bool,
    /// Run with this configuration (JSON, as --print-config writes it) instead of a preset.
    #[arg(long, conflicts_with_all = ["smoke", "quick"])]
    config: Option<PathBuf>,
    #[arg(long, default_value_t = 0)]
    seed: u64,
    /// Output root; each experiment writes to <out>/<id>/.
    #[arg(long, default_value = "out")]
    out: PathBuf,
    /// Dataset folder (overrides STRATA_DATA).
    #[arg(long)]
    data: Option<PathBuf>,
    /// After each run, print its config as JSON, run again from that text (as --config would) into
    /// <out>/verify/<id>/, and fail if any metric differs.
    #[arg(long)]
    verify_config: bool,
    /// Override one config field: a dotted path and a value (JSON, else taken as a string), e.g.
    /// `--set backend.base_url=http://gpu-box:8000/v1 --set backend.model=qwen2.5-7b`. Repeatable; one
    /// experiment id only.
    #[arg(long = "set", value_name = "PATH=VALUE")]
    overrides: Vec<String>,
    /// With `all`: leave this experiment out (repeatable).
    #[arg(long, value_name = "ID")]
    skip: Vec<String>,
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
    let args = match cli.command {
        Command::Reproduce(args) => args,
        Command::Data(command) => return data_command(command),
    };
    let all = strata_runner::experiments();
    if args.list || args.id.is_none() {
        for e in &all {
            println!("{:28} {}", e.id(), e.about());
        }
        return Ok(ExitCode::SUCCESS);
    }
    let id = args.id.clone().expect("checked");
    let chosen: Vec<&dyn DynExperiment> = if id == "all" {
        if args.config.is_some() || args.print_config {
            bail!("--config and --print-config take one experiment id, not `all`");
        }
        for s in &args.skip {
            if !all.iter().any(|e| e.id() == s) {
                bail!("--skip {s}: no such experiment; `strata reproduce --list` shows them");
            }
        }
        if !args.overrides.is_empty() {
            bail!("--set takes one experiment id, not `all` (configs differ)");
        }
        all.iter().filter(|e| !args.skip.contains(&e.id().to_string())).map(|e| e.as_ref()).collect()
    } else {
        match all.iter().find(|e| e.id() == id) {
            Some(e) => vec![e.as_ref()],
            None => bail!("unknown experiment `{id}`; `strata reproduce --list` shows them"),
        }
    };
    let scale = if args.smoke {
        Scale::Smoke
    } else if args.quick {
        Scale::Quick
    } else {
        Scale::Full
    };
    let file_config = match &args.config {
        Some(path) => {
            let text = std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?;
            Some(chosen[0].parse_config(&text).with_context(|| format!("{} is not a config of {id}", path.display()))?)
        }
        None => None,
    };
    let file_config = if args.overrides.is_empty() {
        file_config
    } else {
        let mut config = file_config.unwrap_or_else(|| chosen[0].config_json(scale));
        for o in &args.overrides {
            apply_override(&mut config, o)?;
        }
        Some(chosen[0].parse_config(&config.to_string()).with_context(|| format!("the config of {id} after --set"))?)
    };
    if args.print_config {
        let config = file_config.unwrap_or_else(|| chosen[0].config_json(scale));
        // A closed pipe (`--print-config | head`) is not an error worth a panic.
        use std::io::Write;
        let text = serde_json::to_string_pretty(&config)?;
        match writeln!(std::io::stdout(), "{text}") {
            Err(e) if e.kind() != std::io::ErrorKind::BrokenPipe => return Err(e.into()),
            _ => {}
        }
        return Ok(ExitCode::SUCCESS);
    }
    let (mut failed_claims, mut unmeasured) = (0, 0);
    let mut failed_runs: Vec<&str> = Vec::new();
    for e in chosen {
        let config = file_config.clone().unwrap_or_else(|| e.config_json(scale));
        let ctx = context(&args, e.id(), scale, args.out.clone());
        eprintln!("== {} ({:?}, seed {})", e.id(), scale, args.seed);
        let report = match e.run_json(&ctx, &config).map_err(|err| anyhow::anyhow!(err)) {
            Ok(r) => r,
            // With `all`, one experiment's failure (e.g. a dataset that is not on this machine) does not stop the
            // others; the exit code still reports it.
            Err(err) if id == "all" => {
                eprintln!("  error: experiment {}: {err:#}", e.id());
                failed_runs.push(e.id());
                continue;
            }
            Err(err) => return Err(err.context(format!("experiment {}", e.id()))),
        };
        print_claims(&report);
        let (held, total) = report.claims_held();
        failed_claims += total - held - report.claims_not_measured();
        unmeasured += report.claims_not_measured();
        if args.verify_config {
            verify_config(&args, e, scale, &report)?;
        }
        let dir = report.finish(&ctx).with_context(|| format!("writing the report of {}", e.id()))?;
        eprintln!("  {held}/{total} claims hold; report in {}", dir.join("report.md").display());
    }
    // Claims that do not hold are results, not errors: the exit code stays 0 and the report says so.
    if failed_claims + unmeasured > 0 {
        eprintln!("{failed_claims} claim(s) did not hold and {unmeasured} were not measured (see the reports)");
    }
    if !failed_runs.is_empty() {
        bail!("{} experiment(s) could not run: {}", failed_runs.len(), failed_runs.join(", "));
    }
    Ok(ExitCode::SUCCESS)
}

fn data_command(command: DataCommand) -> Result<ExitCode> {
    match command {
        DataCommand::List { data: explicit, verify } => {
            println!("{:18} {:>9}  {:44} location", "dataset", "MB", "license");
            for ds in data::REGISTRY {
                let bytes: u64 = ds.files.iter().map(|f| f.bytes).sum();
                let location = match data::resolve_unverified(ds.name, explicit.as_deref()) {
                    Ok(dir) if verify => match data::verify(ds, &dir) {
                        Ok(()) => format!("{} (sha256 ok)", dir.display()),
                        Err(e) => format!("{} (BAD: {e})", dir.display()),
                    },
                    Ok(dir) => dir.display().to_string(),
                    Err(_) => "missing".into(),
                };
                let license: String = ds.license.chars().take(44).collect();
                println!("{:18} {:>9.1}  {license:44} {location}", ds.name, bytes as f64 / 1e6);
            }
            let roots = data::search_roots(explicit.as_deref());
            let roots: Vec<String> = roots.iter().map(|r| r.display().to_string()).collect();
            println!("\nlooked in: {}", if explicit.is_some() { &roots[..1] } else { &roots[..] }.join(", "));
            if let Some(cache) = data::cache_root() {
                println!("`strata data fetch <name>` downloads into {}", cache.display());
            }
            Ok(ExitCode::SUCCESS)
        }
        DataCommand::Fetch { names, into } => {
            let chosen: Vec<&data::Dataset> = if names.iter().any(|n| n == "all") {
                data::REGISTRY.iter().collect()
            } else {
                names.iter().map(|n| data::dataset(n)).collect::<Result<_, _>>()?
            };
            let root = match into {
                Some(dir) => dir,
                None => data::cache_root().context("neither XDG_CACHE_HOME nor HOME is set; pass --into DIR")?,
            };
            let fetcher = data::fetch::Fetcher::from_env()?;
            for ds in chosen {
                let source = match fetcher.mirror() {
                    Some(m) => format!("mirror {m}"),
                    None => "canonical URLs".into(),
                };
                eprintln!("{} -> {} ({source})", ds.name, root.join(ds.name).display());
                let report = fetcher.fetch(ds, &root).with_context(|| format!("fetching {}", ds.name))?;
                let present = report.files.iter().filter(|(_, o)| *o == data::fetch::FileOutcome::Present).count();
                eprintln!("  {} file(s) checked, {present} already there", report.files.len());
            }
            Ok(ExitCode::SUCCESS)
        }
    }
}

/// Applies `path=value` to a config: every segment of the dotted path must exist (a typo is an error that
/// lists the keys there); the value is parsed as JSON, else taken as a string.
fn apply_override(config: &mut serde_json::Value, spec: &str) -> Result<()> {
    let (path, raw) = spec.split_once('=').with_context(|| format!("--set {spec}: expected PATH=VALUE"))?;
    let value: serde_json::Value =
        serde_json::from_str(raw).unwrap_or_else(|_| serde_json::Value::String(raw.to_string()));
    let mut node = config;
    let segments: Vec<&str> = path.split('.').collect();
    for (i, seg) in segments.iter().enumerate() {
        let obj = node
            .as_object_mut()
            .with_context(|| format!("--set {path}: `{}` is not a section", segments[..i].join(".")))?;
        if !obj.contains_key(*seg) {
            let keys: Vec<&String> = obj.keys().collect();
            bail!("--set {path}: no field `{seg}` here (fields: {keys:?})");
        }
        node = obj.get_mut(*seg).expect("checked");
    }
    *node = value;
    Ok(())
}

fn context(args: &ReproduceArgs, id: &str, scale: Scale, out: PathBuf) -> RunCtx {
    let mut ctx = RunCtx::new(id, args.seed, scale, out);
    if let Some(d) = &args.data {
        ctx.data_dir = Some(d.clone());
    }
    ctx
}

fn print_claims(report: &Report) {
    for c in &report.claims {
        let tag = match c.verdict {
            Verdict::Holds => "ok",
            Verdict::Fails => "FAIL",
            Verdict::NotMeasured => "n/m",
        };
        let measured = c.measured.map(|m| format!("{m:.4e}")).unwrap_or_else(|| "not measured".into());
        eprintln!("  [{tag}] {}: {measured} (expected {})", c.id, c.expected);
    }
}

/// Runs `e` again from its report's config printed as JSON text, and compares the metrics.
fn verify_config(args: &ReproduceArgs, e: &dyn DynExperiment, scale: Scale, first: &Report) -> Result<()> {
    let text = serde_json::to_string_pretty(&first.config)?;
    let config = e.parse_config(&text).with_context(|| format!("{}: its own config does not parse back", e.id()))?;
    let ctx = context(args, e.id(), scale, args.out.join("verify"));
    let second = e.run_json(&ctx, &config).map_err(|err| anyhow::anyhow!(err))?;
    let differing: Vec<&String> = first
        .metrics
        .iter()
        .filter(|(k, v)| second.metrics.get(*k) != Some(*v))
        .map(|(k, _)| k)
        .chain(second.metrics.keys().filter(|k| !first.metrics.contains_key(*k)))
        .collect();
    if !differing.is_empty() {
        bail!("{}: rerun from its printed config gave other metrics: {differing:?}", e.id());
    }
    eprintln!("  config round trip: {} metrics identical", first.metrics.len());
    Ok(())
}
