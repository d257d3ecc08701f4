//! `icl/robustness` (P1): test error under spectrum shifts of growing size, multilayer against looped models,
//! for the restricted and feature-update parameterizations.

use report::figure::{Chart, Series};
use report::{Check, Experiment, Presets, Report, RunCtx};
use serde::{Deserialize, Serialize};

use super::p1::{FAMILIES, P1Task, P1Training, validate};
use super::{eval_mse, norm_factor};
use crate::model::Parameterization;
use crate::optimum::{FamilyOptimum, draw_prompt_spectra};
use crate::task::{Prompts, WeightPrior, sample};
use crate::{Error, Result};

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RobustnessConfig {
    pub task: P1Task,
    /// Condition number of the training distribution.
    pub kappa: f64,
    /// Depths trained (those below 2 are skipped: one layer is both looped and multilayer).
    pub depths: Vec<usize>,
    /// Test-time spectrum shifts: every eigenvalue scaled by `1 + delta`, so the top of the spectrum leaves the
    /// training range `[1/kappa, 1]` from above (where a learned step-size polynomial can grow fast). Starts at
    /// 0 (in distribution).
    pub shifts: Vec<f64>,
    pub training: P1Training,
    pub eval_prompts: usize,
    /// A model is stable in distribution when its normalised loss at shift 0 is at most this.
    pub stable_loss: f64,
    /// Prompts for the restricted optimum (fitted in distribution, then scored under every shift).
    #[serde(default = "default_optimum_prompts")]
    pub optimum_prompts: usize,
}

fn default_optimum_prompts() -> usize {
    20_000
}

impl Presets for RobustnessConfig {
    fn smoke() -> Self {
        RobustnessConfig {
            task: P1Task { d: 2, n: 8, prior: WeightPrior::Isotropic },
            depths: vec![2],
            shifts: vec![0.0, 0.5],
            training: P1Training::smoke(),
            eval_prompts: 200,
            optimum_prompts: 300,
            ..Self::quick()
        }
    }
    fn quick() -> Self {
        RobustnessConfig {
            task: P1Task { d: 4, n: 30, prior: WeightPrior::Isotropic },
            kappa: 10.0,
            depths: vec![1, 2, 4, 6],
            shifts: vec![0.0, 0.1, 0.25, 0.5],
            training: P1Training::quick(),
            eval_prompts: 20000,
            stable_loss: 1.0,
            optimum_prompts: default_optimum_prompts(),
        }
    }
    fn full() -> Self {
        RobustnessConfig {
            task: P1Task { d: 5, n: 40, prior: WeightPrior::Isotropic },
            depths: vec![1, 2, 4, 6, 8, 12],
            shifts: vec![0.0, 0.05, 0.1, 0.25, 0.5, 1.0],
            training: P1Training::full(),
            eval_prompts: 40000,
            optimum_prompts: 40_000,
            ..Self::quick()
        }
    }
}

/// `icl/robustness`.
#[derive(Debug, Clone, Copy)]
pub struct Robustness;

impl Experiment for Robustness {
    type Config = RobustnessConfig;
    type Error = Error;
    const ID: &'static str = "icl/robustness";
    const ABOUT: &'static str = "P1: error under spectrum shifts, multilayer against looped";

    fn run(&self, ctx: &RunCtx, cfg: &RobustnessConfig) -> Result<Report> {
        validate(&cfg.task, &cfg.depths, &cfg.training, cfg.eval_prompts)?;
        if cfg.shifts.len() < 2 || cfg.shifts[0] != 0.0 {
            return Err(crate::error::invalid(format!(
                "shifts must start at 0 and have a nonzero one, got {:?}",
                cfg.shifts
            )));
        }
        let mut report = Report::new(ctx, cfg);
        report.note("Shift: every eigenvalue lambda in [1/kappa, 1] is scaled by (1 + delta), pushing the top of the spectrum above the training range. Ratio = (loss / E[y_q^2]) at delta over the same at 0. (Shrinking the small eigenvalues instead, lambda -> lambda^(1+delta), made the task relatively easier for every model in a first run.) The fully unrestricted families are not trained stably at depth >= 4 (labels enter the attention scores cubically; see icl/depth-vs-kappa) and are left out.");
        if cfg.optimum_prompts == 0 {
            return Err(crate::error::invalid("optimum_prompts must be positive"));
        }
        let optima = optima_under_shift(ctx, cfg)?;
        report.metric("optima", &optima);
        report.note("Optimum: the restricted families' best models (u = 0, scalar steps; `strata_icl::optimum`), fitted in distribution and scored exactly under every shift: how robust the best multilayer and looped models of the family are, free of the optimiser.");
        let (rows, retries) = measure(ctx, cfg)?;
        report.metric("rows", &rows);
        report.metric("divergence_retries", &retries);
        claims(&mut report, cfg, &rows);
        optimum_claims(&mut report, cfg, &optima);
        figures(ctx, &mut report, cfg, &rows)?;
        optimum_figure(ctx, &mut report, cfg, &optima)?;
        Ok(report)
    }
}

/// One model's normalised loss at every shift (`None`: left out after diverging twice). A model whose
/// predictions overflow has an infinite loss (serialised as `null` inside `losses`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ShiftRow {
    pub family: String,
    pub depth: usize,
    pub losses: Option<Vec<f64>>,
}

/// The restricted optima at one depth: normalised loss at every shift.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct OptimumShiftRow {
    pub depth: usize,
    pub multilayer: Vec<f64>,
    pub looped: Vec<f64>,
}

fn optima_under_shift(ctx: &RunCtx, cfg: &RobustnessConfig) -> Result<Vec<OptimumShiftRow>> {
    let fit = draw_prompt_spectra(&cfg.task.at(cfg.kappa, 0.0), cfg.optimum_prompts, &mut ctx.rng("optimum fit"))?;
    let held: Vec<(crate::optimum::PromptSpectra, f64)> = cfg
        .shifts
        .iter()
        .map(|&s| {
            let task = cfg.task.at(cfg.kappa, s);
            let spectra = draw_prompt_spectra(&task, cfg.optimum_prompts, &mut ctx.rng(&format!("optimum shift {s}")))?;
            Ok((spectra, norm_factor(&task)))
        })
        .collect::<Result<_>>()?;
    cfg.depths
        .iter()
        .copied()
        .filter(|&l| l >= 2)
        .map(|depth| {
            let best = FamilyOptimum::fit(&fit, depth)?;
            Ok(OptimumShiftRow {
                depth,
                multilayer: held.iter().map(|(s, n)| best.multilayer_loss(s) / n).collect(),
                looped: held.iter().map(|(s, n)| best.looped_loss(s, depth) / n).collect(),
            })
        })
        .collect()
}

fn optimum_claims(report: &mut Report, cfg: &RobustnessConfig, optima: &[OptimumShiftRow]) {
    let Some(deepest) = optima.last() else { return };
    for (size, shift) in [("slight", 1), ("large", cfg.shifts.len() - 1)] {
        let ratio = |v: &[f64]| v[shift] / v[0];
        report.check(
            &format!("looped-more-robust-optimum-{size}"),
            &format!(
                "the best looped restricted model degrades less than the best multilayer one under the {size} shift \
                 (delta = {}; P1's claim asked of the family optima)",
                cfg.shifts[shift]
            ),
            &format!("ratio(looped optimum) / ratio(multilayer optimum) at L = {}", deepest.depth),
            ratio(&deepest.looped) / ratio(&deepest.multilayer),
            Check::AtMost(1.0),
        );
    }
}

fn optimum_figure(ctx: &RunCtx, report: &mut Report, cfg: &RobustnessConfig, optima: &[OptimumShiftRow]) -> Result<()> {
    let mut chart = Chart::new("Restricted optima under shift", "shift delta", "normalised loss(delta) / at 0").log_y();
    for row in optima {
        for (kind, v) in [("multilayer", &row.multilayer), ("looped", &row.looped)] {
            let pts = cfg.shifts.iter().zip(v).map(|(&s, &x)| (s, x / v[0])).collect();
            chart = chart.series(Series::line(&format!("{kind} optimum L = {}", row.depth), pts));
        }
    }
    report.line_figure(ctx, "robustness_optima.png", "the restricted family optima under shift", &chart)?;
    Ok(())
}

fn families() -> impl Iterator<Item = super::Family> {
    FAMILIES.into_iter().filter(|f| f.parameterization != Parameterization::Unrestricted)
}

fn measure(ctx: &RunCtx, cfg: &RobustnessConfig) -> Result<(Vec<ShiftRow>, Vec<String>)> {
    let mut retries = Vec::new();
    let evals: Vec<(Prompts, f64)> = cfg
        .shifts
        .iter()
        .map(|&s| {
            let shifted = cfg.task.at(cfg.kappa, s);
            let prompts = sample(&shifted, cfg.eval_prompts, &mut ctx.rng(&format!("eval prompts shift {s}")))?;
            Ok((prompts, norm_factor(&shifted)))
        })
        .collect::<Result<_>>()?;
    let task = cfg.task.at(cfg.kappa, 0.0);
    let mut rows = Vec::new();
    for family in families() {
        for depth in cfg.depths.iter().copied().filter(|&l| l >= 2) {
            // Normalised by each distribution's E[y^2]: shifting eigenvalues also scales the labels.
            let model = cfg.training.train(ctx, family, &task, cfg.kappa, depth, &mut retries)?;
            let losses = model.map(|m| {
                let loss = |(e, scale): &(Prompts, f64)| eval_mse(&m, e, depth) / scale;
                evals.iter().map(loss).map(|v| if v.is_finite() { v } else { f64::INFINITY }).collect()
            });
            rows.push(ShiftRow { family: family.name(), depth, losses });
        }
    }
    Ok((rows, retries))
}

fn claims(report: &mut Report, cfg: &RobustnessConfig, rows: &[ShiftRow]) {
    let losses = |family: &str, depth: usize| {
        rows.iter().find(|r| r.family == family && r.depth == depth).and_then(|r| r.losses.clone())
    };
    let stable = |family: &str, depth: usize| losses(family, depth).is_some_and(|l| l[0] <= cfg.stable_loss);
    // Compared at the largest depth where both the multilayer and the looped model are stable in
    // distribution, at the smallest and the largest shift.
    for par in ["restricted", "feature-update"] {
        let (multi, looped) = (format!("{par} multilayer"), format!("{par} looped"));
        let at =
            cfg.depths.iter().rev().copied().filter(|&l| l >= 2).find(|&l| stable(&multi, l) && stable(&looped, l));
        report.metric(&format!("compared_depth_{par}"), at);
        for (size, shift) in [("slight", 1), ("large", cfg.shifts.len() - 1)] {
            let ratio = |family: &str, l: usize| losses(family, l).map(|v| v[shift] / v[0]).unwrap_or(f64::NAN);
            report.check(
                &format!("looped-more-robust-{par}-{size}"),
                &format!(
                    "{par}: looped models degrade less than multilayer ones under the {size} shift (delta = {})",
                    cfg.shifts[shift]
                ),
                "ratio(looped) / ratio(multilayer) at the largest depth where both are stable",
                at.map(|l| ratio(&looped, l) / ratio(&multi, l)).unwrap_or(f64::NAN),
                Check::AtMost(1.0),
            );
        }
    }
}

fn figures(ctx: &RunCtx, report: &mut Report, cfg: &RobustnessConfig, rows: &[ShiftRow]) -> Result<()> {
    for family in families() {
        let title = format!("{}: error ratio under shift", family.name());
        let mut chart = Chart::new(&title, "shift delta", "normalised loss(delta) / at 0").log_y();
        for row in rows.iter().filter(|r| r.family == family.name()) {
            if let Some(l) = &row.losses {
                let pts = cfg.shifts.iter().zip(l).map(|(&s, &v)| (s, v / l[0])).collect();
                chart = chart.series(Series::line(&format!("L = {}", row.depth), pts));
            }
        }
        let file = format!("robustness_{}.png", family.name().replace(' ', "_"));
        report.line_figure(ctx, &file, &format!("{} under shift", family.name()), &chart)?;
    }
    Ok(())
}
