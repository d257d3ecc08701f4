//! The [`Experiment`] interface every reproduction implements, and its type-erased form for runners.

use serde::Serialize;
use serde::de::DeserializeOwned;
use serde_json::Value;

use crate::{Error, Report, RunCtx, Scale};

/// Any error an experiment returns, for a runner that holds experiments of every crate.
pub type RunError = Box<dyn std::error::Error + Send + Sync + 'static>;

/// A config's preset scales.
pub trait Presets: Sized {
    /// Seconds: tiny sizes and few steps, so every code path runs in CI (claims may come out not measured).
    fn smoke() -> Self;
    /// Minutes on 2 cores.
    fn quick() -> Self;
    /// The paper-scale CPU reproduction (under about an hour on 2 cores).
    fn full() -> Self;

    fn for_scale(scale: Scale) -> Self {
        match scale {
            Scale::Smoke => Self::smoke(),
            Scale::Quick => Self::quick(),
            Scale::Full => Self::full(),
        }
    }
}

/// A reproduction: a serde config in, a [`Report`] out. Every setting that changes a result lives in the
/// config, so a config printed as JSON and run again gives the same metrics.
///
/// ```
/// use serde::{Deserialize, Serialize};
/// use strata_report::{Check, DynExperiment, Experiment, Presets, Report, RunCtx, Scale};
///
/// #[derive(Debug, Clone, Serialize, Deserialize)]
/// #[serde(deny_unknown_fields)]
/// struct Config { terms: usize }
/// impl Presets for Config {
///     fn smoke() -> Self { Config { terms: 10 } }
///     fn quick() -> Self { Config { terms: 1_000 } }
///     fn full() -> Self { Config { terms: 100_000 } }
/// }
///
/// struct Basel;
/// impl Experiment for Basel {
///     type Config = Config;
///     type Error = strata_report::Error;
///     const ID: &'static str = "demo/basel";
///     const ABOUT: &'static str = "sum of 1/k^2 approaches pi^2/6";
///     fn run(&self, ctx: &RunCtx, cfg: &Config) -> Result<Report, Self::Error> {
///         let mut report = Report::new(ctx, cfg);
///         let sum: f64 = (1..=cfg.terms).map(|k| 1.0 / (k * k) as f64).sum();
///         report.metric("sum", sum);
///         let gap = std::f64::consts::PI.powi(2) / 6.0 - sum;
///         report.check("converges", "the partial sums approach pi^2/6", "gap", gap, Check::Below(0.2));
///         Ok(report)
///     }
/// }
///
/// let dir = tempfile::tempdir().unwrap();
/// let ctx = RunCtx::new(Basel::ID, 0, Scale::Smoke, dir.path().to_path_buf());
/// let json = Basel.config_json(Scale::Smoke);                     // what `--print-config --smoke` prints
/// let report = Basel.run_json(&ctx, &json).unwrap();              // what `--config FILE` runs
/// assert_eq!(report.config, json);
/// assert!(Basel.parse_config(r#"{"terms": 5, "term": 1}"#).unwrap_err().to_string().contains("term"));
/// ```
pub trait Experiment: Send + Sync {
    type Config: Presets + Serialize + DeserializeOwned;
    type Error: std::error::Error + Send + Sync + 'static;
    /// `family/name`, as `strata reproduce <id>` takes it.
    const ID: &'static str;
    /// One line: what the reproduction checks.
    const ABOUT: &'static str;

    fn run(&self, ctx: &RunCtx, config: &Self::Config) -> Result<Report, Self::Error>;
}

/// [`Experiment`] with its config as JSON, so a runner can hold the experiments of every crate in one list.
pub trait DynExperiment: Send + Sync {
    fn id(&self) -> &'static str;
    fn about(&self) -> &'static str;
    /// The preset config of a scale, as JSON.
    fn config_json(&self, scale: Scale) -> Value;
    /// Parses a config (JSON text) into this experiment's config type and back to JSON; an unknown or
    /// ill-typed field is an [`Error::Config`] naming its path.
    fn parse_config(&self, text: &str) -> Result<Value, Error>;
    /// Runs with a config given as JSON (parsed as in [`DynExperiment::parse_config`]).
    fn run_json(&self, ctx: &RunCtx, config: &Value) -> Result<Report, RunError>;
}

fn parse<C: DeserializeOwned>(text: &str) -> Result<C, Error> {
    let de = &mut serde_json::Deserializer::from_str(text);
    let config: C = serde_path_to_error::deserialize(de).map_err(|e| {
        let path = e.path().to_string();
        Error::Config {
            path: if path == "." { "(top level)".into() } else { path },
            message: e.into_inner().to_string(),
        }
    })?;
    Ok(config)
}

impl<E: Experiment> DynExperiment for E {
    fn id(&self) -> &'static str {
        E::ID
    }

    fn about(&self) -> &'static str {
        E::ABOUT
    }

    fn config_json(&self, scale: Scale) -> Value {
        serde_json::to_value(E::Config::for_scale(scale)).expect("configs serialize")
    }

    fn parse_config(&self, text: &str) -> Result<Value, Error> {
        let config: E::Config = parse(text)?;
        Ok(serde_json::to_value(config).expect("configs serialize"))
    }

    fn run_json(&self, ctx: &RunCtx, config: &Value) -> Result<Report, RunError> {
        let config: E::Config = parse(&config.to_string())?;
        Ok(self.run(ctx, &config)?)
    }
}
