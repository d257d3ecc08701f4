//! `icl/monotonicity` (P1): loss against evaluation depth, up to the training depth and, for looped models,
//! beyond it.

use report::figure::{Chart, Series};
use report::{Check, Experiment, Presets, Report, RunCtx, fraction};
use serde::{Deserialize, Serialize};

use super::norm_factor;
use super::p1::{FAMILIES, P1Task, P1Training, validate};
use crate::optimum::{FamilyOptimum, draw_prompt_spectra};
use crate::task::{WeightPrior, sample};
use crate::{Error, Result};

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MonotonicityConfig {
    pub task: P1Task,
    pub kappa: f64,
    /// The training depth of every model.
    pub depth: usize,
    /// Looped models are also run for `loop_factor * depth` loops.
    pub loop_factor: usize,
    /// A rise counts only when the loss grows by more than this fraction (sampling noise).
    pub rise_tolerance: f64,
    /// A model is stable when its normalised loss at the training depth is at most this; unstable ones are
    /// listed and left out of the claims.
    pub stable_loss: f64,
    pub training: P1Training,
    pub eval_prompts: usize,
    /// Prompts for the restricted optimum at the training depth (fitted on one draw, scored on another).
    #[serde(default = "default_optimum_prompts")]
    pub optimum_prompts: usize,
}

fn default_optimum_prompts() -> usize {
    20_000
}

impl Presets for MonotonicityConfig {
    fn smoke() -> Self {
        MonotonicityConfig {
            task: P1Task { d: 2, n: 8, prior: WeightPrior::Isotropic },
            depth: 2,
            training: P1Training::smoke(),
            eval_prompts: 200,
            optimum_prompts: 300,
            ..Self::quick()
        }
    }
    fn quick() -> Self {
        MonotonicityConfig {
            task: P1Task { d: 4, n: 30, prior: WeightPrior::Isotropic },
            kappa: 10.0,
            depth: 6,
            loop_factor: 2,
            rise_tolerance: 0.01,
            stable_loss: 1.0,
            training: P1Training::quick(),
            eval_prompts: 20000,
            optimum_prompts: default_optimum_prompts(),
        }
    }
    fn full() -> Self {
        MonotonicityConfig {
            task: P1Task { d: 5, n: 40, prior: WeightPrior::Isotropic },
            depth: 12,
            training: P1Training::full(),
            eval_prompts: 40000,
            optimum_prompts: 40_000,
            ..Self::quick()
        }
    }
}

/// `icl/monotonicity`.
#[derive(Debug, Clone, Copy)]
pub struct Monotonicity;

impl Experiment for Monotonicity {
    type Config = MonotonicityConfig;
    type Error = Error;
    const ID: &'static str = "icl/monotonicity";
    const ABOUT: &'static str = "P1: loss against evaluation depth (and loops beyond training depth)";

    fn run(&self, ctx: &RunCtx, cfg: &MonotonicityConfig) -> Result<Report> {
        validate(&cfg.task, &[cfg.depth], &cfg.training, cfg.eval_prompts)?;
        if cfg.loop_factor == 0 {
            return Err(crate::error::invalid("loop_factor must be at least 1"));
        }
        if cfg.optimum_prompts == 0 {
            return Err(crate::error::invalid("optimum_prompts must be positive"));
        }
        let mut report = Report::new(ctx, cfg);
        let (rows, retries) = measure(ctx, cfg)?;
        report.metric("rows", &rows);
        report.metric("divergence_retries", &retries);
        let optimum = optimum_curve(ctx, cfg)?;
        report.metric("optimum", &optimum);
        claims(&mut report, cfg, &rows);
        optimum_claims(&mut report, cfg, &rows, &optimum);
        figures(ctx, &mut report, cfg, &rows, &optimum)?;
        Ok(report)
    }
}

/// One family's normalised loss after each layer or loop (`None`: left out after diverging twice).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct DepthCurve {
    pub family: String,
    pub looped: bool,
    /// `(evaluation depth, normalised loss)`.
    pub points: Option<Vec<(f64, f64)>>,
}

impl DepthCurve {
    fn stable(&self, cfg: &MonotonicityConfig) -> bool {
        self.points.as_ref().is_some_and(|p| p[cfg.depth - 1].1 <= cfg.stable_loss)
    }
}

fn measure(ctx: &RunCtx, cfg: &MonotonicityConfig) -> Result<(Vec<DepthCurve>, Vec<String>)> {
    let mut retries = Vec::new();
    let task = cfg.task.at(cfg.kappa, 0.0);
    let eval = sample(&task, cfg.eval_prompts, &mut ctx.rng("eval prompts"))?;
    let (tokens, targets, scale) = (eval.tokens::<f64>(), eval.targets::<f64>(), norm_factor(&task));
    let mut rows = Vec::new();
    for family in FAMILIES {
        let model = cfg.training.train(ctx, family, &task, cfg.kappa, cfg.depth, &mut retries)?;
        let points = model.map(|m| {
            let max_eval = if family.looped { cfg.loop_factor * cfg.depth } else { cfg.depth };
            let mse = |p: &tensor::Tensor<f64>| tensor::no_grad(|| p.mse(&targets).item()) / scale;
            m.predictions(&tokens, max_eval).iter().enumerate().map(|(l, p)| (l as f64 + 1.0, mse(p))).collect()
        });
        rows.push(DepthCurve { family: family.name(), looped: family.looped, points });
    }
    Ok((rows, retries))
}

/// The restricted optima at the training depth: the multilayer optimum's loss, and the looped optimum (its step
/// fitted for the training depth) run for every number of loops up to `loop_factor * depth`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct OptimumCurve {
    pub multilayer: f64,
    pub looped_step: f64,
    pub looped: Vec<(f64, f64)>,
}

fn optimum_curve(ctx: &RunCtx, cfg: &MonotonicityConfig) -> Result<OptimumCurve> {
    let task = cfg.task.at(cfg.kappa, 0.0);
    let fit = draw_prompt_spectra(&task, cfg.optimum_prompts, &mut ctx.rng("optimum fit"))?;
    let held = draw_prompt_spectra(&task, cfg.optimum_prompts, &mut ctx.rng("optimum eval"))?;
    let best = FamilyOptimum::fit(&fit, cfg.depth)?;
    let scale = norm_factor(&task);
    Ok(OptimumCurve {
        multilayer: best.multilayer_loss(&held) / scale,
        looped_step: best.looped_step,
        looped: (1..=cfg.loop_factor * cfg.depth).map(|k| (k as f64, best.looped_loss(&held, k) / scale)).collect(),
    })
}

fn optimum_claims(report: &mut Report, cfg: &MonotonicityConfig, rows: &[DepthCurve], optimum: &OptimumCurve) {
    // How near the trained restricted models are to their family's optimum at the training depth: the claims above
    // say something about P1 only where this is close to 1.
    let at_depth = |family: &str| {
        rows.iter().find(|r| r.family == family).and_then(|r| r.points.as_ref()).map(|p| p[cfg.depth - 1].1)
    };
    let ratios = serde_json::json!({
        "restricted multilayer": at_depth("restricted multilayer").map(|l| l / optimum.multilayer),
        "restricted looped": at_depth("restricted looped").map(|l| l / optimum.looped[cfg.depth - 1].1),
    });
    report.metric("trained_over_optimum", ratios);
    report.check(
        "looped-optimum-monotone-beyond",
        &format!(
            "the best looped restricted model (step fitted for L = {}) keeps improving when run for up to {}x the \
             loops (P1's monotonicity asked of the family optimum)",
            cfg.depth, cfg.loop_factor
        ),
        "1 if the optimum's loss never rises beyond the tolerance over 1 .. factor x L loops, else 0",
        if non_increasing(&optimum.looped, cfg.rise_tolerance) { 1.0 } else { 0.0 },
        Check::Equals(1.0),
    );
}

fn non_increasing(points: &[(f64, f64)], tolerance: f64) -> bool {
    points.windows(2).all(|w| w[1].1 <= w[0].1 * (1.0 + tolerance))
}

fn claims(report: &mut Report, cfg: &MonotonicityConfig, rows: &[DepthCurve]) {
    let stable: Vec<&DepthCurve> = rows.iter().filter(|r| r.stable(cfg)).collect();
    let unstable: Vec<&str> = rows.iter().filter(|r| !r.stable(cfg)).map(|r| r.family.as_str()).collect();
    report.metric("unstable_models", &unstable);
    if !unstable.is_empty() {
        report.note(format!(
            "Left out of the claims as not trained stably (left out in training, or normalised loss > {} at the training depth): {}.",
            cfg.stable_loss,
            unstable.join(", ")
        ));
    }
    let points = |r: &DepthCurve| r.points.clone().unwrap_or_default();
    let within = |r: &DepthCurve| non_increasing(&points(r)[..cfg.depth], cfg.rise_tolerance);
    let beyond = |r: &DepthCurve| non_increasing(&points(r), cfg.rise_tolerance);
    let looped: Vec<&DepthCurve> = stable.iter().copied().filter(|r| r.looped).collect();
    let multi: Vec<&DepthCurve> = stable.iter().copied().filter(|r| !r.looped).collect();
    report.check(
        "looped-monotone",
        "looped models' loss never rises with more loops up to the training depth",
        "fraction of stable looped families monotone",
        fraction(looped.iter().filter(|r| within(r)).count(), looped.len()),
        Check::Equals(1.0),
    );
    report.check(
        "looped-monotone-beyond",
        &format!(
            "looped models' loss keeps falling (or stays) when run for up to {}x the training depth",
            cfg.loop_factor
        ),
        "fraction of stable looped families monotone",
        fraction(looped.iter().filter(|r| beyond(r)).count(), looped.len()),
        Check::Equals(1.0),
    );
    report.check(
        "multilayer-not-monotone",
        "multilayer models are not monotone in evaluation depth",
        "fraction of stable multilayer families with a rise beyond the tolerance",
        fraction(multi.iter().filter(|r| !within(r)).count(), multi.len()),
        Check::Above(0.0),
    );
}

fn figures(
    ctx: &RunCtx,
    report: &mut Report,
    cfg: &MonotonicityConfig,
    rows: &[DepthCurve],
    optimum: &OptimumCurve,
) -> Result<()> {
    let title = format!("Loss against evaluation depth (trained at L = {}, kappa = {})", cfg.depth, cfg.kappa);
    let mut chart = Chart::new(&title, "evaluation depth", "MSE / E[y^2]").log_y();
    for row in rows {
        if let Some(p) = &row.points {
            let name = if row.stable(cfg) { row.family.clone() } else { format!("{} (unstable)", row.family) };
            chart = chart.series(Series::line(&name, p.clone()));
        }
    }
    chart = chart.series(Series::reference("optimum, restricted looped (step for L)", optimum.looped.clone())).series(
        Series::reference(
            "optimum, restricted multilayer at L",
            vec![(cfg.depth as f64, optimum.multilayer.max(1e-12))],
        ),
    );
    report.line_figure(ctx, "loss_vs_eval_depth.png", "Loss against evaluation depth", &chart)?;
    Ok(())
}
