//! `datamodels/groups` (P10): linear (additive) predictions of group effects against exact group effects as
//! groups grow, on outputs whose points interact (redundant clusters), on random groups, and on a trained
//! logistic regression.

use report::figure::{Chart, Series};
use report::{Check, Experiment, Presets, Report, RunCtx};
use serde::{Deserialize, Serialize};

use super::synthetic::redundant_clusters_table;
use super::{mnist_task, trained_tables};
use crate::boolean::{level_weights, p_biased_transform};
use crate::fit::{LinearDatamodel, exact_least_squares, group_effect};
use crate::runs::LogisticConfig;
use crate::{Error, Result};

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct GroupsConfig {
    pub n: u32,
    /// Points per cluster of near-duplicates (structured groups are filled cluster by cluster).
    pub cluster: usize,
    /// A cluster's contribution is `strength * (1 - decay^present)`, strengths uniform in `strength_range`; the
    /// last cluster's points enter linearly with `slope * strength` each.
    pub decay: f64,
    pub slope: f64,
    pub strength_range: (f64, f64),
    pub p: f64,
    pub max_group: usize,
    pub random_groups: usize,
    pub n_trained: usize,
    /// The binary MNIST task of the trained model: positive and negative digit.
    pub digits: (u8, u8),
    pub logistic: LogisticConfig,
}

impl Presets for GroupsConfig {
    fn smoke() -> Self {
        GroupsConfig { n: 8, max_group: 4, random_groups: 3, n_trained: 5, ..Self::quick() }
    }
    fn quick() -> Self {
        GroupsConfig {
            n: 16,
            cluster: 4,
            decay: 0.5,
            slope: 0.25,
            strength_range: (0.5, 1.5),
            p: 0.5,
            max_group: 8,
            random_groups: 20,
            n_trained: 12,
            digits: (3, 8),
            logistic: LogisticConfig::default(),
        }
    }
    fn full() -> Self {
        GroupsConfig { n: 20, random_groups: 50, n_trained: 14, ..Self::quick() }
    }
}

/// `datamodels/groups`.
#[derive(Debug, Clone, Copy)]
pub struct Groups;

impl Experiment for Groups {
    type Config = GroupsConfig;
    type Error = Error;
    const ID: &'static str = "datamodels/groups";
    const ABOUT: &'static str = "P10: linear group-effect predictions against exact group effects as groups grow";

    fn run(&self, ctx: &RunCtx, cfg: &GroupsConfig) -> Result<Report> {
        let n = cfg.n as usize;
        if cfg.cluster == 0 || n % cfg.cluster != 0 || cfg.max_group > n || cfg.max_group < 2 || cfg.random_groups == 0
        {
            return Err(Error::InvalidArgument(format!("groups config {cfg:?}")));
        }
        let mut report = Report::new(ctx, cfg);
        let curves = measure(ctx, cfg)?;
        report.metric("structured", &curves.structured);
        report.metric("random", &curves.random);
        report.metric("trained_random", &curves.trained_random);
        report.metric("independent_group_error", curves.independent);
        report.metric("trained_level_weights", &curves.trained_level_weights);
        claims(&mut report, &curves);
        figures(ctx, &mut report, &curves)?;
        report.note(
            "Group effect = E[f(x with G all in) - f(x with G all out)] over the other coordinates under mu_p, exact \
             by enumeration; prediction = sum of the group's 0/1 datamodel weights. Synthetic output: clusters of \
             near-duplicate points whose contribution saturates (1 - decay^present), plus one cluster of purely \
             linear points. Errors are in units of sd(f) under mu_p. At p = 1/2 groups of one or two points are \
             predicted exactly even with interactions (a pair interaction splits evenly between the two weights).",
        );
        Ok(report)
    }
}

/// Prediction errors (in sd(f) units) against group size.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct GroupCurves {
    /// Groups filled cluster by cluster (redundant points together).
    pub structured: Vec<(f64, f64)>,
    /// Random groups of the synthetic output, averaged over `random_groups` draws.
    pub random: Vec<(f64, f64)>,
    /// Random groups of a trained logistic regression's pool.
    pub trained_random: Vec<(f64, f64)>,
    /// The error for the last (purely linear) cluster.
    pub independent: f64,
    pub trained_level_weights: Vec<f64>,
}

/// A table with its exact least-squares datamodel and output scale.
struct Fitted {
    table: Vec<f64>,
    model: LinearDatamodel,
    sd: f64,
}

impl Fitted {
    fn new(table: Vec<f64>, p: f64) -> Result<Self> {
        let model = exact_least_squares(&table, p)?;
        let mut c = table.clone();
        p_biased_transform(&mut c, p)?;
        // Errors in units of the output's standard deviation under mu_p (a relative error blows up where a
        // group's true effect happens to be near zero).
        let sd = c[1..].iter().map(|v| v * v).sum::<f64>().sqrt().max(1e-300);
        Ok(Fitted { table, model, sd })
    }

    fn error(&self, group: &[usize], p: f64) -> Result<f64> {
        let (actual, predicted) = group_effect(&self.table, p, group, &self.model)?;
        Ok((predicted - actual).abs() / self.sd)
    }

    /// Mean error over `draws` random groups of each size up to `max`, from the streams `<label> size s draw g`.
    fn random_curve(
        &self,
        ctx: &RunCtx,
        cfg: &GroupsConfig,
        pool: usize,
        max: usize,
        label: &str,
    ) -> Result<Vec<(f64, f64)>> {
        (1..=max)
            .map(|size| {
                let mut total = 0.0;
                for g in 0..cfg.random_groups {
                    let order = tensor::permutation(pool, &mut ctx.rng(&format!("{label} size {size} draw {g}")));
                    total += self.error(&order[..size], cfg.p)?;
                }
                Ok((size as f64, total / cfg.random_groups as f64))
            })
            .collect()
    }
}

fn measure(ctx: &RunCtx, cfg: &GroupsConfig) -> Result<GroupCurves> {
    let n = cfg.n as usize;
    let clusters = n / cfg.cluster;
    let (lo, hi) = cfg.strength_range;
    let strengths = tensor::uniform::<f64>(&[clusters], lo, hi, &mut ctx.rng("cluster strengths"));
    let table = redundant_clusters_table(n, cfg.cluster, strengths.as_slice().expect("1-D"), cfg.decay, cfg.slope);
    let synthetic = Fitted::new(table, cfg.p)?;
    let structured = (1..=cfg.max_group)
        .map(|size| Ok((size as f64, synthetic.error(&(0..size).collect::<Vec<_>>(), cfg.p)?)))
        .collect::<Result<_>>()?;
    let random = synthetic.random_curve(ctx, cfg, n, cfg.max_group, "random group")?;
    let independent: Vec<usize> = ((clusters - 1) * cfg.cluster..n).collect();
    let task = mnist_task(ctx, cfg.digits, cfg.n_trained, 1)?;
    let trained = Fitted::new(trained_tables(&task, &cfg.logistic, ctx)?.remove(0), cfg.p)?;
    let max = cfg.max_group.min(cfg.n_trained);
    let trained_random = trained.random_curve(ctx, cfg, cfg.n_trained, max, "trained random group")?;
    let mut coef = trained.table.clone();
    p_biased_transform(&mut coef, cfg.p)?;
    Ok(GroupCurves {
        structured,
        random,
        trained_random,
        independent: synthetic.error(&independent, cfg.p)?,
        trained_level_weights: level_weights(&coef)?,
    })
}

fn claims(report: &mut Report, c: &GroupCurves) {
    let last = |v: &[(f64, f64)]| v.last().map_or(f64::NAN, |p| p.1);
    report.check(
        "additive-without-interactions",
        "a group touched by no weight above level 1 adds up exactly",
        "|predicted - actual| / sd(f) for the independent cluster",
        c.independent,
        Check::Below(1e-9),
    );
    report.check(
        "structured-groups-break-additivity",
        "groups of interacting (redundant) points are predicted worse as they grow",
        "error (sd units) at the largest structured group - error at size 2",
        last(&c.structured) - c.structured.get(1).map_or(f64::NAN, |p| p.1),
        Check::Above(0.05),
    );
    report.check(
        "structured-worse-than-random",
        "structured groups are predicted worse than random groups of the same size",
        "error structured / random at the largest size",
        last(&c.structured) / last(&c.random).max(1e-12),
        Check::Above(1.0),
    );
}

fn figures(ctx: &RunCtx, report: &mut Report, c: &GroupCurves) -> Result<()> {
    let floor = |v: &[(f64, f64)]| v.iter().map(|&(s, e)| (s, e.max(1e-12))).collect();
    let chart = Chart::new(
        "Group effect: linear prediction error against group size",
        "group size",
        "|predicted - actual| / sd(f)",
    )
    .log_y()
    .series(Series::line("structured (redundant clusters)", floor(&c.structured)))
    .series(Series::line("random groups", floor(&c.random)))
    .series(Series::line("random groups, trained logistic regression", floor(&c.trained_random)));
    report.line_figure(ctx, "group_error.png", "relative error of linear group-effect predictions", &chart)?;
    Ok(())
}
