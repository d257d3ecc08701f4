//! `datamodels/exact` (P10): by enumeration over every subset, the least-squares datamodel is the degree-0/1
//! Fourier expansion, its residual is the weight above level 1, `Stab_rho = sum_k rho^k W_k`, and the influence
//! identity holds, on standard Boolean functions and on tables of trained logistic regressions.

use report::figure::{Chart, Series};
use report::{Check, Experiment, Presets, Report, RunCtx, max_or_nan};
use serde::{Deserialize, Serialize};

use super::{mask_of, mnist_task, trained_tables};
use crate::boolean::{
    StandardFunction, correlated_partners, influences, level_weights, noise_operator, noise_stability, p_biased_basis,
    p_biased_transform, p_biased_weights, sample_points,
};
use crate::fit::{LinearDatamodel, exact_least_squares};
use crate::runs::LogisticConfig;
use crate::{Error, Result};

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ExactConfig {
    /// Coordinates of the synthetic functions.
    pub n_synthetic: u32,
    /// Width of the tribes function and size of the random junta.
    pub tribes_width: usize,
    pub junta_size: usize,
    /// Training pool size for the trained-model tables (2^n models).
    pub n_trained: usize,
    pub test_points: usize,
    /// The binary MNIST task: positive and negative digit.
    pub digits: (u8, u8),
    pub ps: Vec<f64>,
    pub rho: f64,
    /// Sampled rho-correlated pairs for the Monte Carlo stability estimate.
    pub mc_pairs: usize,
    pub logistic: LogisticConfig,
}

impl Presets for ExactConfig {
    fn smoke() -> Self {
        ExactConfig { n_synthetic: 9, n_trained: 5, test_points: 1, mc_pairs: 2000, ..Self::quick() }
    }
    fn quick() -> Self {
        ExactConfig {
            n_synthetic: 17,
            tribes_width: 3,
            junta_size: 6,
            n_trained: 12,
            test_points: 3,
            digits: (3, 8),
            ps: vec![0.5, 0.3],
            rho: 0.5,
            mc_pairs: 100_000,
            logistic: LogisticConfig::default(),
        }
    }
    fn full() -> Self {
        ExactConfig { n_synthetic: 19, n_trained: 14, test_points: 5, mc_pairs: 1_000_000, ..Self::quick() }
    }
}

/// `datamodels/exact`.
#[derive(Debug, Clone, Copy)]
pub struct Exact;

impl Experiment for Exact {
    type Config = ExactConfig;
    type Error = Error;
    const ID: &'static str = "datamodels/exact";
    const ABOUT: &'static str = "P10: by enumeration, least-squares datamodel = Fourier levels 0/1, residual = weight above 1, Stab_rho, influences";

    fn run(&self, ctx: &RunCtx, cfg: &ExactConfig) -> Result<Report> {
        if cfg.ps.is_empty() || cfg.junta_size as u32 > cfg.n_synthetic || cfg.mc_pairs < 2 {
            return Err(Error::InvalidArgument(format!("exact config {cfg:?}")));
        }
        let mut report = Report::new(ctx, cfg);
        let tables = tables(ctx, cfg, &mut report)?;
        let mut checks = Vec::new();
        for (name, table) in &tables {
            for &p in &cfg.ps {
                let seed = ctx.seed_for(&format!("stability pairs {name} p {p}"));
                checks.push(check_identities(name, table, p, cfg.rho, cfg.mc_pairs, seed)?);
            }
        }
        report.metric("checks", &checks);
        claims(&mut report, &checks);
        figures(ctx, &mut report, cfg, &checks)?;
        report.note(format!(
            "Trained-model tables: L2-regularised logistic regression (MNIST {} vs {}, {} pool images, {} GD steps) \
             on each of the 2^{} subsets; output = margin on each of {} test images. The empty subset is the \
             untrained model (margin 0). Residual, stability and influence are checked against direct enumeration \
             on function values (the noise operator acts on values, not on coefficients).",
            cfg.digits.0, cfg.digits.1, cfg.n_trained, cfg.logistic.steps, cfg.n_trained, cfg.test_points
        ));
        Ok(report)
    }
}

/// The standard functions' tables and one table per test point of logistic regressions trained on every subset.
fn tables(ctx: &RunCtx, cfg: &ExactConfig, report: &mut Report) -> Result<Vec<(String, Vec<f64>)>> {
    let functions = [
        StandardFunction::Majority,
        StandardFunction::Parity,
        StandardFunction::Dictator,
        StandardFunction::Tribes { width: cfg.tribes_width },
        StandardFunction::Junta { k: cfg.junta_size, seed: ctx.seed_for("junta") },
    ];
    let mut tables = Vec::new();
    for f in &functions {
        tables.push((f.name(), f.table(cfg.n_synthetic)?));
    }
    let task = mnist_task(ctx, cfg.digits, cfg.n_trained, cfg.test_points)?;
    let started = std::time::Instant::now();
    let trained = trained_tables(&task, &cfg.logistic, ctx)?;
    let models = 1usize << cfg.n_trained;
    report.metric("trained_models", models);
    report.timing("trained_models_per_second", models as f64 / started.elapsed().as_secs_f64());
    for (t, table) in trained.into_iter().enumerate() {
        tables.push((format!("logistic margin, test point {t}"), table));
    }
    Ok(tables)
}

/// Discrepancies of the four identities for one function.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct IdentityCheck {
    pub function: String,
    pub p: f64,
    pub n: u32,
    pub level_weights: Vec<f64>,
    /// max |Fourier datamodel - brute-force weighted least squares| over bias and weights.
    pub fourier_vs_least_squares: f64,
    /// |E[(f - fit)^2] - sum_{k>=2} W_k|.
    pub residual_identity: f64,
    /// |E[f T_rho f] - sum_k rho^k W_k|.
    pub stability_identity: f64,
    /// max_i |Inf_i - E[(D_i f)^2]|.
    pub influence_identity: f64,
    /// Monte Carlo Stab_rho from sampled pairs, its exact value, and the sample's standard error.
    pub stability_sampled: (f64, f64, f64),
    pub residual: f64,
    pub scale: f64,
}

/// Checks the identities on one table (values by enumeration, independently of the transform where possible).
pub fn check_identities(
    name: &str,
    table: &[f64],
    p: f64,
    rho: f64,
    mc_pairs: usize,
    seed: u64,
) -> Result<IdentityCheck> {
    let n = table.len().trailing_zeros();
    let mut coef = table.to_vec();
    p_biased_transform(&mut coef, p)?;
    let w = level_weights(&coef)?;
    let fourier = LinearDatamodel::from_fourier(&coef, p)?;
    let brute = exact_least_squares(table, p)?;
    let fourier_vs_least_squares = fourier
        .weights
        .iter()
        .zip(&brute.weights)
        .map(|(a, b)| (a - b).abs())
        .fold((fourier.bias - brute.bias).abs(), f64::max);
    let weights = p_biased_weights(n, p);
    let inner = |f: &[f64], g: &[f64]| -> f64 { f.iter().zip(g).zip(&weights).map(|((a, b), w)| a * b * w).sum() };
    let residual_direct: f64 =
        (0..table.len()).map(|x| weights[x] * (table[x] - brute.predict(&mask_of(x, n as usize))).powi(2)).sum();
    let residual: f64 = w[2..].iter().sum();
    let mut t = table.to_vec();
    noise_operator(&mut t, p, rho)?;
    let stability_identity = (inner(table, &t) - noise_stability(&w, rho)).abs();
    let influence_identity = influence_discrepancy(table, &coef, &weights, p)?;
    Ok(IdentityCheck {
        function: name.into(),
        p,
        n,
        level_weights: w.clone(),
        fourier_vs_least_squares,
        residual_identity: (residual_direct - residual).abs(),
        stability_identity,
        influence_identity,
        stability_sampled: sampled_stability(table, &w, p, rho, mc_pairs, seed),
        residual,
        scale: inner(table, table).max(1e-300),
    })
}

/// max_i |Inf_i from the coefficients - E[(D_i f)^2] from the values|.
fn influence_discrepancy(table: &[f64], coef: &[f64], weights: &[f64], p: f64) -> Result<f64> {
    let n = table.len().trailing_zeros() as usize;
    let inf = influences(coef)?;
    let (_, sigma, _, _) = p_biased_basis(p)?;
    Ok((0..n)
        .map(|i| {
            let d2: f64 = (0..table.len())
                .filter(|x| (x >> i) & 1 == 0)
                .map(|x| {
                    let d = sigma / 2.0 * (table[x | (1 << i)] - table[x]);
                    // x and x | bit i share this derivative: their weights sum to the weight of the rest.
                    (weights[x] + weights[x | (1 << i)]) * d * d
                })
                .sum();
            (inf[i] - d2).abs()
        })
        .fold(0.0, f64::max))
}

/// Monte Carlo `E[f(x) f(y)]` over rho-correlated pairs: (mean, exact Stab_rho, standard error).
fn sampled_stability(table: &[f64], w: &[f64], p: f64, rho: f64, pairs: usize, seed: u64) -> (f64, f64, f64) {
    let n = table.len().trailing_zeros();
    let mut rng = tensor::seeded(seed);
    let xs = sample_points(n, p, pairs, &mut rng);
    let ys = correlated_partners(&xs, n, p, rho, &mut rng);
    let prods: Vec<f64> = xs.iter().zip(&ys).map(|(&x, &y)| table[x] * table[y]).collect();
    let m = prods.len() as f64;
    let mean = prods.iter().sum::<f64>() / m;
    let se = (prods.iter().map(|v| (v - mean).powi(2)).sum::<f64>() / (m - 1.0)).sqrt() / m.sqrt();
    (mean, noise_stability(w, rho), se)
}

fn claims(report: &mut Report, checks: &[IdentityCheck]) {
    let identities: [(&str, &str, &str, fn(&IdentityCheck) -> f64); 4] = [
        (
            "fourier-equals-least-squares",
            "the p-weighted least-squares datamodel equals the degree-0/1 Fourier expansion",
            "max |difference| / max(1, E f^2)",
            |c| c.fourier_vs_least_squares,
        ),
        (
            "residual-is-high-degree-weight",
            "the datamodel's residual error equals the Fourier weight above level 1",
            "max |E[(f - fit)^2] - sum_{k>=2} W_k| / max(1, E f^2)",
            |c| c.residual_identity,
        ),
        (
            "stability-is-weighted-spectrum",
            "Stab_rho = sum_k rho^k W_k",
            "max |E[f T_rho f] - sum rho^k W_k| / max(1, E f^2)",
            |c| c.stability_identity,
        ),
        (
            "influence-identity",
            "Inf_i = sum_{S containing i} f_hat(S)^2 = E[(D_i f)^2]",
            "max discrepancy / max(1, E f^2)",
            |c| c.influence_identity,
        ),
    ];
    for (id, statement, quantity, discrepancy) in identities {
        let worst = max_or_nan(checks.iter().map(|c| discrepancy(c) / c.scale.max(1.0)));
        report.check(id, statement, quantity, worst, Check::Below(1e-9));
    }
    let z =
        |c: &IdentityCheck| (c.stability_sampled.0 - c.stability_sampled.1).abs() / c.stability_sampled.2.max(1e-300);
    report.check(
        "sampled-stability-agrees",
        "Stab_rho estimated from sampled rho-correlated pairs agrees with the exact value",
        "max |z| over all functions and p",
        max_or_nan(checks.iter().map(z)),
        Check::Below(4.5),
    );
}

fn figures(ctx: &RunCtx, report: &mut Report, cfg: &ExactConfig, checks: &[IdentityCheck]) -> Result<()> {
    let p0 = cfg.ps[0];
    let mut chart = Chart::new(&format!("Fourier weight by level (p = {p0})"), "level k", "W_k / E[f^2]").log_y();
    for c in checks.iter().filter(|c| c.p == p0) {
        let significant = |(_, w): &(usize, &f64)| **w / c.scale > 1e-12;
        let pts =
            c.level_weights.iter().enumerate().filter(significant).map(|(k, w)| (k as f64, w / c.scale)).collect();
        chart = chart.series(Series::line(&c.function, pts));
    }
    report.line_figure(ctx, "level_weights.png", "Fourier weight by level of each function", &chart)?;
    Ok(())
}
