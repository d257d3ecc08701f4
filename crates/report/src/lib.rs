//! # strata-report
//!
//! What every Strata reproduction shares. An [`Experiment`] is data in, a report out: an id, a one-line
//! description, a serde config (printable, loadable from JSON, with [`Presets`] `smoke`/`quick`/`full`) and
//! `run(&RunCtx, &Config) -> Report`. A [`Report`] holds the exact config it ran, deterministic metrics
//! (measured rows), machine-dependent timings, the paper's **claims checked on the measurements** (each a
//! [`Check`] that states its threshold once and computes the verdict; a NaN, infinite or empty measurement is
//! *not measured*, never "holds"), notes and PNG figures. It is written to `<out>/<experiment>/report.json`
//! and `report.md`.
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
//! use strata_report::{Check, Verdict};
//! let ctx = RunCtx::new("demo/doc", 0, Scale::Quick, dir.path().to_path_buf());
//! let mut report = Report::new(&ctx, &serde_json::json!({"steps": 10}));
//! let losses: Vec<(f64, f64)> = (0..10).map(|i| (i as f64, 1.0 / (1.0 + i as f64))).collect();
//! report.metric("final_loss", losses[9].1);
//! let v = report.check("loss-falls", "training lowers the loss", "final loss", losses[9].1, Check::Below(0.2));
//! assert_eq!(v, Verdict::Holds);
//! assert_eq!(report.check("x", "never measured", "ratio", f64::NAN, Check::Below(1.0)), Verdict::NotMeasured);
//! let chart = Chart::new("loss", "step", "loss").series(Series::line("train", losses));
//! report.line_figure(&ctx, "loss.png", "Training loss", &chart).unwrap();
//! report.finish(&ctx).unwrap();
//! assert!(dir.path().join("demo/doc/report.json").exists());
//! ```

mod experiment;
pub mod figure;
pub mod stats;

pub use experiment::{DynExperiment, Experiment, Presets, RunError};

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
    /// A config that does not parse or does not fit the experiment; `path` is the field (`steps`, `kappas[2]`).
    #[error("config: {path}: {message}")]
    Config { path: String, message: String },
}

pub type Result<T, E = Error> = std::result::Result<T, E>;

/// How big a run is: `Smoke` runs every code path in seconds (its claims may come out not measured), `Quick`
/// fits in minutes on 2 cores, `Full` is the paper-scale CPU reproduction.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Scale {
    Smoke,
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

    /// The seed of the random stream named `label` (`"eval prompts"`, `format!("model {family} L{depth}")`):
    /// a hash of the run seed and the label, so streams never collide by arithmetic and adding a stream
    /// changes no other.
    pub fn seed_for(&self, label: &str) -> u64 {
        // FNV-1a over the label, then SplitMix64 finalisation with the run seed: stable across platforms and
        // Rust versions (unlike `DefaultHasher`).
        let mut h: u64 = 0xcbf2_9ce4_8422_2325;
        for b in label.bytes() {
            h = (h ^ b as u64).wrapping_mul(0x0000_0100_0000_01b3);
        }
        let mut z = h ^ self.seed.wrapping_mul(0x9e37_79b9_7f4a_7c15);
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }

    /// The random stream named `label` (a ChaCha8 generator, the type `strata_tensor::Rng` is).
    pub fn rng(&self, label: &str) -> rand_chacha::ChaCha8Rng {
        use rand_chacha::rand_core::SeedableRng;
        rand_chacha::ChaCha8Rng::seed_from_u64(self.seed_for(label))
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

/// The condition a claim's measured number must meet, stated once: it writes the claim's "expected" text and
/// decides the verdict.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Check {
    /// `measured < x`
    Below(f64),
    /// `measured <= x`
    AtMost(f64),
    /// `measured > x`
    Above(f64),
    /// `measured >= x`
    AtLeast(f64),
    /// `measured == x` (for counts and fractions that are exact)
    Equals(f64),
    /// `|measured - target| <= tolerance`
    Within { target: f64, tolerance: f64 },
    /// `low <= measured <= high`
    Between(f64, f64),
}

impl Check {
    pub fn holds(&self, v: f64) -> bool {
        match *self {
            Check::Below(x) => v < x,
            Check::AtMost(x) => v <= x,
            Check::Above(x) => v > x,
            Check::AtLeast(x) => v >= x,
            Check::Equals(x) => v == x,
            Check::Within { target, tolerance } => (v - target).abs() <= tolerance,
            Check::Between(lo, hi) => lo <= v && v <= hi,
        }
    }

    /// The condition in words, with the quantity's name (`"max |u| / |A| < 0.05"`).
    pub fn describe(&self, quantity: &str) -> String {
        let n = fmt_threshold;
        match *self {
            Check::Below(x) => format!("{quantity} < {}", n(x)),
            Check::AtMost(x) => format!("{quantity} <= {}", n(x)),
            Check::Above(x) => format!("{quantity} > {}", n(x)),
            Check::AtLeast(x) => format!("{quantity} >= {}", n(x)),
            Check::Equals(x) => format!("{quantity} = {}", n(x)),
            Check::Within { target, tolerance } => format!("{quantity} within {} of {}", n(tolerance), n(target)),
            Check::Between(lo, hi) => format!("{} <= {quantity} <= {}", n(lo), n(hi)),
        }
    }
}

/// What the measurement says about a claim.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Verdict {
    Holds,
    Fails,
    /// The data cannot decide: the measured value is NaN or infinite (an empty range, a target never reached,
    /// every model left out). Never counted as holding.
    NotMeasured,
}

/// A statement from the paper, checked on a measured number.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct Claim {
    pub id: String,
    pub statement: String,
    /// The condition, in words (`"ratio < 1.1"`).
    pub expected: String,
    /// `None` when the measurement was NaN or infinite.
    pub measured: Option<f64>,
    pub verdict: Verdict,
}

impl Claim {
    pub fn holds(&self) -> bool {
        self.verdict == Verdict::Holds
    }
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
    /// The exact config that ran: `strata reproduce <id> --config` on it reproduces `metrics`.
    pub config: Value,
    /// Deterministic measurements: the same seed and config give the same values on any machine.
    pub metrics: BTreeMap<String, Value>,
    /// Machine-dependent measurements (throughput, seconds): not expected to repeat.
    #[serde(default)]
    pub timings: BTreeMap<String, Value>,
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
            timings: BTreeMap::new(),
            claims: Vec::new(),
            figures: Vec::new(),
            wall_seconds: 0.0,
            notes: Vec::new(),
        }
    }

    /// Records a deterministic measured value (any serializable: a number, a curve, a table of rows).
    pub fn metric(&mut self, name: &str, value: impl Serialize) {
        self.metrics.insert(name.to_string(), serde_json::to_value(value).unwrap_or(Value::Null));
    }

    /// Records a machine-dependent measurement (tokens per second, seconds, GFLOP/s).
    pub fn timing(&mut self, name: &str, value: impl Serialize) {
        self.timings.insert(name.to_string(), serde_json::to_value(value).unwrap_or(Value::Null));
    }

    /// Checks a claim: `quantity` names what was measured, `check` the condition it must meet. A non-finite
    /// `measured` is [`Verdict::NotMeasured`].
    pub fn check(&mut self, id: &str, statement: &str, quantity: &str, measured: f64, check: Check) -> Verdict {
        let verdict = if !measured.is_finite() {
            Verdict::NotMeasured
        } else if check.holds(measured) {
            Verdict::Holds
        } else {
            Verdict::Fails
        };
        self.claims.push(Claim {
            id: id.into(),
            statement: statement.into(),
            expected: check.describe(quantity),
            measured: measured.is_finite().then_some(measured),
            verdict,
        });
        verdict
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

    /// Draws `chart` as `<out>/<file>`, or, when no series has a point it can draw (every model left out,
    /// every value NaN, nothing positive on a log axis), adds a note saying so instead of failing.
    pub fn line_figure(&mut self, ctx: &RunCtx, file: &str, caption: &str, chart: &figure::Chart) -> Result<()> {
        if chart.has_drawable_points() {
            self.figure(ctx, file, caption, |p| figure::line_chart(p, chart))
        } else {
            self.note(format!("{file} ({caption}) not drawn: nothing finite to draw."));
            Ok(())
        }
    }

    /// Number of claims that hold, and total.
    pub fn claims_held(&self) -> (usize, usize) {
        (self.claims.iter().filter(|c| c.holds()).count(), self.claims.len())
    }

    /// Number of claims the data could not decide.
    pub fn claims_not_measured(&self) -> usize {
        self.claims.iter().filter(|c| c.verdict == Verdict::NotMeasured).count()
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

    /// The markdown summary: claims table, metrics, timings, figures inline.
    pub fn markdown(&self) -> String {
        let mut s = format!("# {}\n\n", self.experiment);
        s += &format!(
            "seed {} · scale {:?} · {} threads · git {} · {:.1} s\n\n",
            self.seed, self.scale, self.threads, self.git_rev, self.wall_seconds
        );
        let (held, total) = self.claims_held();
        let unmeasured = self.claims_not_measured();
        let unmeasured_text = if unmeasured > 0 { format!(", {unmeasured} not measured") } else { String::new() };
        s += &format!(
            "## Claims ({held} of {total} hold{unmeasured_text})\n\n| claim | statement | expected | measured | holds |\n|---|---|---|---|---|\n"
        );
        for c in &self.claims {
            s += &format!(
                "| {} | {} | {} | {} | {} |\n",
                c.id,
                c.statement,
                c.expected,
                c.measured.map(fmt_num).unwrap_or_else(|| "—".into()),
                match c.verdict {
                    Verdict::Holds => "yes",
                    Verdict::Fails => "**no**",
                    Verdict::NotMeasured => "not measured",
                }
            );
        }
        for (title, map) in [("Metrics", &self.metrics), ("Timings (this machine)", &self.timings)] {
            if map.is_empty() {
                continue;
            }
            s += &format!("\n## {title}\n\n| metric | value |\n|---|---|\n");
            for (k, v) in map {
                let text = match v {
                    Value::Number(n) => fmt_num(n.as_f64().unwrap_or(f64::NAN)),
                    other => {
                        let t = other.to_string();
                        if t.chars().count() > 120 {
                            format!("{}… (see report.json)", t.chars().take(120).collect::<String>())
                        } else {
                            t
                        }
                    }
                };
                s += &format!("| {k} | {} |\n", text.replace('|', "\\|"));
            }
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

/// The largest value, or NaN for none: a maximum over an empty set is not a measurement.
pub fn max_or_nan(values: impl IntoIterator<Item = f64>) -> f64 {
    values
        .into_iter()
        .fold(None, |m: Option<f64>, v| Some(m.map_or(v, |m| if v > m || v.is_nan() { v } else { m })))
        .unwrap_or(f64::NAN)
}

/// `count / total`, or NaN when `total` is 0 (a fraction of nothing is not a measurement).
pub fn fraction(count: usize, total: usize) -> f64 {
    if total == 0 { f64::NAN } else { count as f64 / total as f64 }
}

/// A threshold as written by hand: `0.05`, `1`, `1e-6`.
fn fmt_threshold(x: f64) -> String {
    if x == 0.0 || (1e-3..1e6).contains(&x.abs()) { format!("{x}") } else { format!("{x:e}") }
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
