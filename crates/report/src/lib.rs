//! # strata-report
//!
//! What every Strata reproduction shares: a [`RunCtx`] (seed, scale, output folder, threads) in, a
//! [`Report`] out. A report holds the config, measured metrics, the paper's **claims checked on the
//! measurements** (`holds` is computed by a predicate, never written by hand), and PNG figures. It is written
//! to `<out>/<experiment>/report.json` and `report.md`.
//!
//! - [`figure`]: line/scatter charts and image grids as PNG (plotters, with a bundled font, so figures render
//!   anywhere).
//! - [`stats`]: rank correlations, bootstrap intervals and calibration error, with errors where the data cannot
//!   give a number.
//!
//! ```
//! use strata_report::{figure::{line_chart, Chart, Series}, Report, RunCtx, Scale};
//!
//! let dir = tempfile::tempdir().unwrap();
//! let ctx = RunCtx::new("demo/doc", 0, Scale::Quick, dir.path().to_path_buf());
//! let mut report = Report::new(&ctx, &serde_json::json!({"steps": 10}));
//! let losses: Vec<(f64, f64)> = (0..10).map(|i| (i as f64, 1.0 / (1.0 + i as f64))).collect();
//! report.metric("final_loss", losses[9].1);
//! report.claim("loss-falls", "training lowers the loss", "final < 0.2", losses[9].1, |v| v < 0.2);
//! let chart = Chart::new("loss", "step", "loss").series(Series::line("train", losses));
//! report.figure(&ctx, "loss.png", "Training loss", |path| line_chart(path, &chart)).unwrap();
//! report.finish(&ctx).unwrap();
//! assert!(dir.path().join("demo/doc/report.json").exists());
//! ```

pub mod figure;
pub mod stats;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::Instant;

use serde::{Deserialize, Serialize};
use serde_json::Value;

/// Errors writing reports and figures.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    #[error("{path}: {source}")]
    Io { path: PathBuf, source: std::io::Error },
    #[error("figure {path}: {reason}")]
    Figure { path: PathBuf, reason: String },
}

pub type Result<T, E = Error> = std::result::Result<T, E>;

/// How big a run is: `Quick` fits in minutes on 2 cores, `Full` is the paper-scale CPU reproduction.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Scale {
    Quick,
    Full,
}

/// Everything a reproduction needs to know about where and how it runs.
#[derive(Debug, Clone)]
pub struct RunCtx {
    pub experiment: String,
    pub seed: u64,
    pub scale: Scale,
    /// The root output folder; this experiment writes under `out_root/<experiment>/`.
    pub out_root: PathBuf,
    pub threads: usize,
    /// Where datasets live (`--data`, else `STRATA_DATA`), if known.
    pub data_dir: Option<PathBuf>,
    started: Instant,
}

impl RunCtx {
    pub fn new(experiment: &str, seed: u64, scale: Scale, out_root: PathBuf) -> Self {
        RunCtx {
            experiment: experiment.to_string(),
            seed,
            scale,
            out_root,
            threads: rayon_threads(),
            data_dir: std::env::var_os("STRATA_DATA").map(PathBuf::from),
            started: Instant::now(),
        }
    }

    /// `<out_root>/<experiment>/`, created on demand.
    pub fn out_dir(&self) -> Result<PathBuf> {
        let dir = self.out_root.join(&self.experiment);
        std::fs::create_dir_all(&dir).map_err(|source| Error::Io { path: dir.clone(), source })?;
        Ok(dir)
    }

    pub fn is_quick(&self) -> bool {
        self.scale == Scale::Quick
    }

    pub fn elapsed_seconds(&self) -> f64 {
        self.started.elapsed().as_secs_f64()
    }

    /// A progress bar for `len` units of work (hidden when stderr is not a terminal).
    pub fn progress(&self, len: u64, what: &str) -> indicatif::ProgressBar {
        let bar = indicatif::ProgressBar::new(len);
        bar.set_style(
            indicatif::ProgressStyle::with_template(
                "{prefix} [{elapsed_precise}] {bar:30} {pos}/{len} {msg} (eta {eta})",
            )
            .expect("valid template"),
        );
        bar.set_prefix(format!("{} {what}", self.experiment));
        bar
    }
}

fn rayon_threads() -> usize {
    std::env::var("RAYON_NUM_THREADS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or_else(|| std::thread::available_parallelism().map(|n| n.get()).unwrap_or(1))
}

/// A statement from the paper, checked on a measured number.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct Claim {
    pub id: String,
    pub statement: String,
    /// The condition, in words (`"ratio < 1.1"`).
    pub expected: String,
    pub measured: f64,
    /// Computed by the claim's predicate on `measured`.
    pub holds: bool,
}

/// A figure written next to the report.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct FigureRef {
    pub file: String,
    pub caption: String,
}

/// The result of one reproduction (serialized as `report.json`).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Report {
    pub experiment: String,
    pub git_rev: String,
    pub seed: u64,
    pub scale: Scale,
    pub threads: usize,
    pub config: Value,
    pub metrics: BTreeMap<String, Value>,
    pub claims: Vec<Claim>,
    pub figures: Vec<FigureRef>,
    pub wall_seconds: f64,
    /// Free-form notes: choices made where the paper is ambiguous, caveats.
    pub notes: Vec<String>,
}

impl Report {
    pub fn new(ctx: &RunCtx, config: &impl Serialize) -> Self {
        Report {
            experiment: ctx.experiment.clone(),
            git_rev: git_rev(),
            seed: ctx.seed,
            scale: ctx.scale,
            threads: ctx.threads,
            config: serde_json::to_value(config).unwrap_or(Value::Null),
            metrics: BTreeMap::new(),
            claims: Vec::new(),
            figures: Vec::new(),
            wall_seconds: 0.0,
            notes: Vec::new(),
        }
    }

    /// Records a measured value (any serializable: a number, a curve, a table).
    pub fn metric(&mut self, name: &str, value: impl Serialize) {
        self.metrics.insert(name.to_string(), serde_json::to_value(value).unwrap_or(Value::Null));
    }

    /// Checks a claim: `holds` is `predicate(measured)` (false for a non-finite measurement).
    pub fn claim(
        &mut self,
        id: &str,
        statement: &str,
        expected: &str,
        measured: f64,
        predicate: impl Fn(f64) -> bool,
    ) -> bool {
        let holds = measured.is_finite() && predicate(measured);
        self.claims.push(Claim {
            id: id.into(),
            statement: statement.into(),
            expected: expected.into(),
            measured,
            holds,
        });
        holds
    }

    pub fn note(&mut self, text: impl Into<String>) {
        self.notes.push(text.into());
    }

    /// Draws a figure into `<out>/<file>` with `draw` and lists it in the report.
    pub fn figure(
        &mut self,
        ctx: &RunCtx,
        file: &str,
        caption: &str,
        draw: impl FnOnce(&Path) -> Result<()>,
    ) -> Result<()> {
        let path = ctx.out_dir()?.join(file);
        draw(&path)?;
        self.figures.push(FigureRef { file: file.into(), caption: caption.into() });
        Ok(())
    }

    /// Number of claims that hold, and total.
    pub fn claims_held(&self) -> (usize, usize) {
        (self.claims.iter().filter(|c| c.holds).count(), self.claims.len())
    }

    /// Stamps the wall time and writes `report.json` and `report.md`; returns the folder.
    pub fn finish(mut self, ctx: &RunCtx) -> Result<PathBuf> {
        self.wall_seconds = ctx.elapsed_seconds();
        let dir = ctx.out_dir()?;
        let json = serde_json::to_string_pretty(&self).expect("report serializes");
        write_file(&dir.join("report.json"), json.as_bytes())?;
        write_file(&dir.join("report.md"), self.markdown().as_bytes())?;
        Ok(dir)
    }

    /// The markdown summary: claims table, metrics, figures inline.
    pub fn markdown(&self) -> String {
        let mut s = format!("# {}\n\n", self.experiment);
        s += &format!(
            "seed {} · scale {:?} · {} threads · git {} · {:.1} s\n\n",
            self.seed, self.scale, self.threads, self.git_rev, self.wall_seconds
        );
        let (held, total) = self.claims_held();
        s += &format!(
            "## Claims ({held} of {total} hold)\n\n| claim | statement | expected | measured | holds |\n|---|---|---|---|---|\n"
        );
        for c in &self.claims {
            s += &format!(
                "| {} | {} | {} | {} | {} |\n",
                c.id,
                c.statement,
                c.expected,
                fmt_num(c.measured),
                if c.holds { "yes" } else { "**no**" }
            );
        }
        s += "\n## Metrics\n\n| metric | value |\n|---|---|\n";
        for (k, v) in &self.metrics {
            let text = match v {
                Value::Number(n) => fmt_num(n.as_f64().unwrap_or(f64::NAN)),
                other => {
                    let t = other.to_string();
                    if t.len() > 120 { format!("{}… (see report.json)", &t[..120]) } else { t }
                }
            };
            s += &format!("| {k} | {} |\n", text.replace('|', "\\|"));
        }
        if !self.figures.is_empty() {
            s += "\n## Figures\n\n";
            for f in &self.figures {
                s += &format!("**{}**\n\n![{}]({})\n\n", f.caption, f.caption, f.file);
            }
        }
        if !self.notes.is_empty() {
            s += "## Notes\n\n";
            for n in &self.notes {
                s += &format!("- {n}\n");
            }
        }
        s += "\n## Config\n\n```json\n";
        s += &serde_json::to_string_pretty(&self.config).unwrap_or_default();
        s += "\n```\n";
        s
    }
}

fn fmt_num(x: f64) -> String {
    if x == 0.0 || (1e-3..1e5).contains(&x.abs()) { format!("{x:.4}") } else { format!("{x:.3e}") }
}

fn write_file(path: &Path, bytes: &[u8]) -> Result<()> {
    let tmp = path.with_extension("tmp");
    std::fs::write(&tmp, bytes)
        .and_then(|_| std::fs::rename(&tmp, path))
        .map_err(|source| Error::Io { path: path.to_path_buf(), source })
}

/// The git revision of the working tree (`STRATA_GIT_REV` overrides), or `"unknown"`.
pub fn git_rev() -> String {
    if let Ok(rev) = std::env::var("STRATA_GIT_REV") {
        return rev;
    }
    std::process::Command::new("git")
        .args(["rev-parse", "--short=12", "HEAD"])
        .output()
        .ok()
        .filter(|o| o.status.success())
        .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_string())
        .unwrap_or_else(|| "unknown".into())
}
