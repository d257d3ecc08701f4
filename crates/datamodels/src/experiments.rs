//! Reproductions of P10: `datamodels/exact`, `datamodels/estimate`, `datamodels/groups`.

use std::path::Path;

use rayon::prelude::*;
use report::figure::{Chart, Series, line_chart};
use report::{Report, RunCtx};
use serde::{Deserialize, Serialize};

use crate::boolean::{
    StandardFunction, correlated_partners, influences, level_weights, noise_operator, noise_stability, p_biased_basis,
    p_biased_transform, p_biased_weights, sample_points,
};
use crate::fit::{LinearDatamodel, exact_least_squares, group_effect, least_squares, residual_from_pairs};
use crate::runs::{BinaryTask, LogisticConfig, train_logistic};
use crate::{Error, Result};

fn mask_of(x: usize, n: usize) -> Vec<bool> {
    (0..n).map(|i| (x >> i) & 1 == 1).collect()
}

/// The table of test margins of a logistic regression trained on every subset of the `n`-point pool, one table
/// per test point.
pub fn trained_tables(task: &BinaryTask, cfg: &LogisticConfig, ctx: &RunCtx) -> Result<Vec<Vec<f64>>> {
    let n = task.n_train();
    let len = 1usize << n;
    let bar = ctx.progress(len as u64, "train every subset");
    let rows: Vec<Vec<f64>> = (0..len)
        .into_par_iter()
        .map(|x| {
            let r = train_logistic(task, &mask_of(x, n), cfg);
            bar.inc(1);
            r
        })
        .collect::<Result<_>>()?;
    bar.finish_and_clear();
    Ok((0..task.test_y.len()).map(|t| rows.iter().map(|r| r[t]).collect()).collect())
}

/// Configuration of `datamodels/exact`.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ExactConfig {
    /// Coordinates of the synthetic functions.
    pub n_synthetic: u32,
    /// Training pool size for the trained-model tables (2^n models).
    pub n_trained: usize,
    pub test_points: usize,
    pub ps: Vec<f64>,
    pub rho: f64,
    pub mc_pairs: usize,
    pub logistic: LogisticConfig,
}

impl ExactConfig {
    pub fn quick() -> Self {
        ExactConfig {
            n_synthetic: 17,
            n_trained: 12,
            test_points: 3,
            ps: vec![0.5, 0.3],
            rho: 0.5,
            mc_pairs: 100_000,
            logistic: LogisticConfig::default(),
        }
    }
    pub fn full() -> Self {
        ExactConfig { n_synthetic: 19, n_trained: 14, test_points: 5, mc_pairs: 1_000_000, ..Self::quick() }
    }
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
    let residual_direct: f64 = (0..table.len())
        .map(|x| {
            let e = table[x] - brute.predict(&mask_of(x, n as usize));
            weights[x] * e * e
        })
        .sum();
    let residual: f64 = w[2..].iter().sum();
    let mut t = table.to_vec();
    noise_operator(&mut t, p, rho)?;
    let stab_direct = inner(table, &t);
    let stab = noise_stability(&w, rho);
    let inf = influences(&coef)?;
    let (_, sigma, _, _) = p_biased_basis(p)?;
    let influence_identity = (0..n as usize)
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
        .fold(0.0, f64::max);
    let mut rng = tensor::seeded(seed);
    let xs = sample_points(n, p, mc_pairs, &mut rng);
    let ys = correlated_partners(&xs, n, p, rho, &mut rng);
    let prods: Vec<f64> = xs.iter().zip(&ys).map(|(&x, &y)| table[x] * table[y]).collect();
    let mean = prods.iter().sum::<f64>() / prods.len() as f64;
    let se = (prods.iter().map(|v| (v - mean).powi(2)).sum::<f64>() / (prods.len() as f64 - 1.0)).sqrt()
        / (prods.len() as f64).sqrt();
    Ok(IdentityCheck {
        function: name.into(),
        p,
        n,
        level_weights: w.clone(),
        fourier_vs_least_squares,
        residual_identity: (residual_direct - residual).abs(),
        stability_identity: (stab_direct - stab).abs(),
        influence_identity,
        stability_sampled: (mean, stab, se),
        residual,
        scale: inner(table, table).max(1e-300),
    })
}

pub fn exact(ctx: &RunCtx) -> Result<Report> {
    exact_with(ctx, &if ctx.is_quick() { ExactConfig::quick() } else { ExactConfig::full() })
}

pub fn exact_with(ctx: &RunCtx, cfg: &ExactConfig) -> Result<Report> {
    let mut report = Report::new(ctx, cfg);
    let n = cfg.n_synthetic;
    let functions = [
        StandardFunction::Majority,
        StandardFunction::Parity,
        StandardFunction::Dictator,
        StandardFunction::Tribes { width: 3 },
        StandardFunction::Junta { k: 6, seed: ctx.seed },
    ];
    let mut tables: Vec<(String, Vec<f64>)> = Vec::new();
    for f in &functions {
        tables.push((f.name(), f.table(n)?));
    }
    let dir = data::resolve("mnist", ctx.data_dir.as_deref())?;
    let mnist = data::mnist::Mnist::load(&dir)?;
    let task = BinaryTask::mnist(&mnist, 3, 8, cfg.n_trained, cfg.test_points)?;
    let started = std::time::Instant::now();
    let trained = trained_tables(&task, &cfg.logistic, ctx)?;
    let models = 1usize << cfg.n_trained;
    report.metric("trained_models", models);
    report.metric("trained_models_per_second", models as f64 / started.elapsed().as_secs_f64());
    for (t, table) in trained.into_iter().enumerate() {
        tables.push((format!("logistic margin, test point {t}"), table));
    }
    let mut checks = Vec::new();
    for (k, (name, table)) in tables.iter().enumerate() {
        for &p in &cfg.ps {
            checks.push(check_identities(name, table, p, cfg.rho, cfg.mc_pairs, ctx.seed.wrapping_add(k as u64))?);
        }
    }
    let identities: [(&str, &str, &str, fn(&IdentityCheck) -> f64); 4] = [
        (
            "fourier-equals-least-squares",
            "the p-weighted least-squares datamodel equals the degree-0/1 Fourier expansion",
            "max |difference| / max(1, E f^2) < 1e-9",
            |c| c.fourier_vs_least_squares,
        ),
        (
            "residual-is-high-degree-weight",
            "the datamodel's residual error equals the Fourier weight above level 1",
            "max |E[(f - fit)^2] - sum_{k>=2} W_k| / max(1, E f^2) < 1e-9",
            |c| c.residual_identity,
        ),
        (
            "stability-is-weighted-spectrum",
            "Stab_rho = sum_k rho^k W_k",
            "max |E[f T_rho f] - sum rho^k W_k| / max(1, E f^2) < 1e-9",
            |c| c.stability_identity,
        ),
        (
            "influence-identity",
            "Inf_i = sum_{S containing i} f_hat(S)^2 = E[(D_i f)^2]",
            "max discrepancy / max(1, E f^2) < 1e-9",
            |c| c.influence_identity,
        ),
    ];
    for (id, statement, expected, discrepancy) in identities {
        let worst = checks.iter().map(|c| discrepancy(c) / c.scale.max(1.0)).fold(0.0, f64::max);
        report.claim(id, statement, expected, worst, |v| v < 1e-9);
    }
    let worst_z = checks
        .iter()
        .map(|c| (c.stability_sampled.0 - c.stability_sampled.1).abs() / c.stability_sampled.2.max(1e-300))
        .fold(0.0, f64::max);
    report.claim(
        "sampled-stability-agrees",
        "Stab_rho estimated from sampled rho-correlated pairs agrees with the exact value",
        "max |z| over all functions and p < 4.5",
        worst_z,
        |z| z < 4.5,
    );
    let mut chart =
        Chart::new(&format!("Fourier weight by level (p = {})", cfg.ps[0]), "level k", "W_k / E[f^2]").log_y();
    for c in checks.iter().filter(|c| c.p == cfg.ps[0]) {
        let pts = c
            .level_weights
            .iter()
            .enumerate()
            .filter(|(_, w)| **w / c.scale > 1e-12)
            .map(|(k, w)| (k as f64, w / c.scale))
            .collect();
        chart = chart.series(Series::line(&c.function, pts));
    }
    report.figure(ctx, "level_weights.png", "Fourier weight by level of each function", |p: &Path| {
        line_chart(p, &chart)
    })?;
    report.metric("checks", &checks);
    report.note(format!(
        "Trained-model tables: L2-regularised logistic regression (MNIST 3 vs 8, {} pool images, {} GD steps) on \
         each of the 2^{} subsets; output = margin on each of {} test images. The empty subset is the untrained \
         model (margin 0). Residual, stability and influence are checked against direct enumeration on function \
         values (the noise operator acts on values, not on coefficients).",
        cfg.n_trained, cfg.logistic.steps, cfg.n_trained, cfg.test_points
    ));
    Ok(report)
}

/// A synthetic "test output" over N training points with a known spectrum: linear part (W_1 = 1), random pair
/// interactions (W_2 = `pair_weight`) and independent per-model noise (training-seed noise, variance `noise`).
#[derive(Debug, Clone)]
pub struct SyntheticOutput {
    pub n: usize,
    pub p: f64,
    pub linear: Vec<f64>,
    pub pairs: Vec<(usize, usize, f64)>,
    pub noise: f64,
}

impl SyntheticOutput {
    pub fn new(n: usize, p: f64, pair_weight: f64, noise: f64, seed: u64) -> Self {
        let mut rng = tensor::seeded(seed);
        let a = tensor::normal::<f64>(&[n], 0.0, 1.0 / (n as f64).sqrt(), &mut rng);
        let ij = tensor::uniform::<f64>(&[n, 2], 0.0, n as f64, &mut rng);
        let b = tensor::normal::<f64>(&[n], 0.0, (pair_weight / n as f64).sqrt(), &mut rng);
        let pairs = (0..n)
            .filter_map(|k| {
                let (i, j) = ((ij[[k, 0]] as usize).min(n - 1), (ij[[k, 1]] as usize).min(n - 1));
                (i != j).then_some((i, j, b[k]))
            })
            .collect();
        SyntheticOutput { n, p, linear: a.iter().copied().collect(), pairs, noise }
    }

    /// Value at a subset with a fresh noise draw `eps` (standard normal).
    pub fn eval(&self, x: &[bool], eps: f64) -> f64 {
        let (_, _, lo, hi) = p_biased_basis(self.p).expect("valid p");
        let phi = |i: usize| if x[i] { hi } else { lo };
        let lin: f64 = self.linear.iter().enumerate().map(|(i, a)| a * phi(i)).sum();
        let quad: f64 = self.pairs.iter().map(|&(i, j, b)| b * phi(i) * phi(j)).sum();
        lin + quad + self.noise.sqrt() * eps
    }

    /// The residual of the best linear datamodel: sum of squared pair coefficients plus the noise variance.
    pub fn residual(&self) -> f64 {
        self.pairs.iter().map(|p| p.2 * p.2).sum::<f64>() + self.noise
    }

    /// The pairs estimator's population target: sum_{k>=2} (1 - rho^{k-1}) W_k + noise.
    pub fn pairs_target(&self, rho: f64) -> f64 {
        (1.0 - rho) * self.pairs.iter().map(|p| p.2 * p.2).sum::<f64>() + self.noise
    }
}

/// Configuration of `datamodels/estimate`.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct EstimateConfig {
    pub ns: Vec<usize>,
    pub model_counts: Vec<usize>,
    pub trials: usize,
    pub p: f64,
    pub rho: f64,
    pub pair_weight: f64,
    pub noise: f64,
    /// Relative accuracy that defines "models needed".
    pub tolerance: f64,
}

impl EstimateConfig {
    pub fn quick() -> Self {
        EstimateConfig {
            ns: vec![25, 50, 100, 200, 400],
            model_counts: vec![100, 200, 400, 800, 1600, 3200, 6400, 12800],
            trials: 10,
            p: 0.5,
            rho: 0.5,
            pair_weight: 0.25,
            noise: 0.05,
            tolerance: 0.15,
        }
    }
    pub fn full() -> Self {
        EstimateConfig {
            ns: vec![25, 50, 100, 200, 400, 800],
            model_counts: vec![100, 200, 400, 800, 1600, 3200, 6400, 12800, 25600, 51200],
            trials: 20,
            ..Self::quick()
        }
    }
}

/// Mean relative errors of both residual estimates over the model-count grid, and R and the pairs' target.
fn relative_errors(cfg: &EstimateConfig, n: usize, seed: u64) -> Result<(Vec<f64>, Vec<f64>, f64, f64)> {
    if n < 2 || !(cfg.p > 0.0 && cfg.p < 1.0) || !(cfg.rho > 0.0 && cfg.rho < 1.0) || cfg.trials == 0 {
        return Err(Error::InvalidArgument(format!(
            "N = {n}, p = {}, rho = {}, trials = {}",
            cfg.p, cfg.rho, cfg.trials
        )));
    }
    let f = SyntheticOutput::new(n, cfg.p, cfg.pair_weight, cfg.noise, seed);
    let (r, target) = (f.residual(), f.pairs_target(cfg.rho));
    let mut reg_err = vec![0.0; cfg.model_counts.len()];
    let mut pair_err = vec![0.0; cfg.model_counts.len()];
    for trial in 0..cfg.trials {
        for (k, &m) in cfg.model_counts.iter().enumerate() {
            let mut rng = tensor::derived(seed, (trial * 1000 + k) as u64);
            // Regression: 80% of the models fit the datamodel, 20% measure its held-out error (the residual).
            let m_fit = m * 4 / 5;
            let sample = |count: usize, rng: &mut tensor::Rng| -> (Vec<Vec<bool>>, Vec<f64>) {
                let u = tensor::uniform::<f64>(&[count, n], 0.0, 1.0, rng);
                let eps = tensor::normal::<f64>(&[count], 0.0, 1.0, rng);
                let masks: Vec<Vec<bool>> =
                    u.outer_iter().map(|row| row.iter().map(|v| *v < cfg.p).collect()).collect();
                let out = masks.iter().zip(eps.iter()).map(|(m, e)| f.eval(m, *e)).collect();
                (masks, out)
            };
            let (masks, out) = sample(m_fit, &mut rng);
            let (test_masks, test_out) = sample(m - m_fit, &mut rng);
            let fit = least_squares(&masks, &out, 1e-6)?;
            let mse = test_masks.iter().zip(&test_out).map(|(z, y)| (fit.predict(z) - y).powi(2)).sum::<f64>()
                / test_out.len() as f64;
            reg_err[k] += (mse - r).abs() / r / cfg.trials as f64;
            // Pairs: m models = m/2 rho-correlated pairs.
            let pairs = m / 2;
            let (xs, ys) = correlated_pairs(n, cfg.p, cfg.rho, pairs, &mut rng);
            let e = tensor::normal::<f64>(&[pairs, 2], 0.0, 1.0, &mut rng);
            let fx: Vec<f64> = xs.iter().enumerate().map(|(i, x)| f.eval(x, e[[i, 0]])).collect();
            let fy: Vec<f64> = ys.iter().enumerate().map(|(i, y)| f.eval(y, e[[i, 1]])).collect();
            let est = residual_from_pairs(&fx, &fy, cfg.rho)?;
            pair_err[k] += (est.residual_lower - target).abs() / r / cfg.trials as f64;
        }
    }
    Ok((reg_err, pair_err, r, target))
}

fn correlated_pairs(
    n: usize,
    p: f64,
    rho: f64,
    count: usize,
    rng: &mut tensor::Rng,
) -> (Vec<Vec<bool>>, Vec<Vec<bool>>) {
    let u = tensor::uniform::<f64>(&[count, n, 3], 0.0, 1.0, rng);
    let mut xs = Vec::with_capacity(count);
    let mut ys = Vec::with_capacity(count);
    for k in 0..count {
        let x: Vec<bool> = (0..n).map(|i| u[[k, i, 0]] < p).collect();
        let y: Vec<bool> = (0..n).map(|i| if u[[k, i, 1]] < rho { x[i] } else { u[[k, i, 2]] < p }).collect();
        xs.push(x);
        ys.push(y);
    }
    (xs, ys)
}

pub fn estimate(ctx: &RunCtx) -> Result<Report> {
    estimate_with(ctx, &if ctx.is_quick() { EstimateConfig::quick() } else { EstimateConfig::full() })
}

pub fn estimate_with(ctx: &RunCtx, cfg: &EstimateConfig) -> Result<Report> {
    let mut report = Report::new(ctx, cfg);
    #[derive(Serialize)]
    struct Row {
        n: usize,
        residual: f64,
        pairs_target: f64,
        regression_rel_error: Vec<f64>,
        pairs_rel_error: Vec<f64>,
        regression_models_needed: Option<usize>,
        pairs_models_needed: Option<usize>,
    }
    let bar = ctx.progress(cfg.ns.len() as u64, "N");
    let rows: Vec<Row> = cfg
        .ns
        .par_iter()
        .map(|&n| {
            let (reg, pairs, r, target) = relative_errors(cfg, n, ctx.seed.wrapping_add(n as u64))?;
            let needed = |errs: &[f64]| errs.iter().position(|e| *e <= cfg.tolerance).map(|k| cfg.model_counts[k]);
            bar.inc(1);
            Ok(Row {
                n,
                residual: r,
                pairs_target: target,
                regression_models_needed: needed(&reg),
                pairs_models_needed: needed(&pairs),
                regression_rel_error: reg,
                pairs_rel_error: pairs,
            })
        })
        .collect::<Result<_>>()?;
    bar.finish_and_clear();
    let never = *cfg.model_counts.last().expect("non-empty") as f64 * 2.0;
    let needed = |v: Option<usize>| v.map_or(never, |m| m as f64);
    let (first, last) = (rows.first().expect("ns non-empty"), rows.last().expect("ns non-empty"));
    report.claim(
        "pairs-need-does-not-grow",
        "the stability estimate needs no more models as N grows",
        "models needed (largest N) / models needed (smallest N) <= 2",
        needed(last.pairs_models_needed) / needed(first.pairs_models_needed),
        |r| r <= 2.0,
    );
    report.claim(
        "regression-need-grows",
        "the regression's residual estimate needs more models as N grows (about N)",
        &format!("models needed (N = {}) / models needed (N = {}) >= {}", last.n, first.n, last.n / first.n / 2),
        needed(last.regression_models_needed) / needed(first.regression_models_needed),
        |r| r >= (last.n / first.n / 2) as f64,
    );
    let mut chart = Chart::new(
        &format!("Relative error of the residual estimate (p = {}, rho = {})", cfg.p, cfg.rho),
        "models trained",
        "|estimate - target| / R",
    )
    .log_x()
    .log_y();
    for r in &rows {
        let pts = |e: &[f64]| cfg.model_counts.iter().zip(e).map(|(m, e)| (*m as f64, e.max(1e-4))).collect();
        chart = chart.series(Series::line(&format!("regression, N = {}", r.n), pts(&r.regression_rel_error)));
        chart = chart.series(Series::line(&format!("pairs, N = {}", r.n), pts(&r.pairs_rel_error)));
    }
    report.figure(ctx, "estimate_error.png", "residual estimates against models trained, per N", |p: &Path| {
        line_chart(p, &chart)
    })?;
    let mut need = Chart::new("Models needed for the tolerance", "N (training points)", "models").log_x().log_y();
    need = need.series(Series::line(
        "regression",
        rows.iter().map(|r| (r.n as f64, needed(r.regression_models_needed))).collect(),
    ));
    need =
        need.series(Series::line("pairs", rows.iter().map(|r| (r.n as f64, needed(r.pairs_models_needed))).collect()));
    report.figure(
        ctx,
        "models_needed.png",
        "models needed to estimate the residual within the tolerance",
        |p: &Path| line_chart(p, &need),
    )?;
    report.metric("rows", &rows);
    report.note(format!(
        "Synthetic outputs with a known spectrum: linear part (W1 = 1), N random pair interactions (W2 = {}) and \
         independent per-model noise (variance {}), so the residual R = W2 + noise is known. Regression: least \
         squares on 80% of the models, residual = held-out MSE on the other 20%. Pairs: m/2 rho-correlated pairs, \
         R_hat = Var f - (Stab_rho - W0)/rho, compared with its population value (1 - rho) W2 + noise (a lower \
         bound: R_hat <= R <= R_hat/(1 - rho)). Errors are relative to R, averaged over {} trials; 'needed' = the \
         first model count in the grid with error <= {} ({} when none).",
        cfg.pair_weight, cfg.noise, cfg.trials, cfg.tolerance, never
    ));
    Ok(report)
}

/// Configuration of `datamodels/groups`.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct GroupsConfig {
    pub n: u32,
    /// Points per cluster of near-duplicates (structured groups are filled cluster by cluster).
    pub cluster: usize,
    pub p: f64,
    pub max_group: usize,
    pub random_groups: usize,
    pub n_trained: usize,
    pub logistic: LogisticConfig,
}

impl GroupsConfig {
    pub fn quick() -> Self {
        GroupsConfig {
            n: 16,
            cluster: 4,
            p: 0.5,
            max_group: 8,
            random_groups: 20,
            n_trained: 12,
            logistic: LogisticConfig::default(),
        }
    }
    pub fn full() -> Self {
        GroupsConfig { n: 20, random_groups: 50, n_trained: 14, ..Self::quick() }
    }
}

pub fn groups(ctx: &RunCtx) -> Result<Report> {
    groups_with(ctx, &if ctx.is_quick() { GroupsConfig::quick() } else { GroupsConfig::full() })
}

pub fn groups_with(ctx: &RunCtx, cfg: &GroupsConfig) -> Result<Report> {
    let mut report = Report::new(ctx, cfg);
    let n = cfg.n as usize;
    if cfg.cluster == 0 || n % cfg.cluster != 0 || cfg.max_group > n || cfg.max_group == 0 {
        return Err(Error::InvalidArgument(format!("groups config {cfg:?}")));
    }
    // Clusters of near-duplicates are redundant: a cluster's contribution saturates in how many of its members are
    // present. The last cluster is "independent": its points only enter linearly.
    let clusters = n / cfg.cluster;
    let mut rng = tensor::seeded(ctx.seed);
    let strength = tensor::uniform::<f64>(&[clusters], 0.5, 1.5, &mut rng);
    let table: Vec<f64> = (0..1usize << n)
        .map(|x| {
            (0..clusters)
                .map(|c| {
                    let present = ((x >> (c * cfg.cluster)) & ((1 << cfg.cluster) - 1)).count_ones() as i32;
                    if c + 1 == clusters {
                        strength[c] * present as f64 * 0.25
                    } else {
                        strength[c] * (1.0 - 0.5f64.powi(present))
                    }
                })
                .sum()
        })
        .collect();
    let model = exact_least_squares(&table, cfg.p)?;
    // Errors in units of the output's standard deviation under mu_p (a relative error blows up where a group's
    // true effect happens to be near zero).
    let sd = |t: &[f64]| -> Result<f64> {
        let mut c = t.to_vec();
        p_biased_transform(&mut c, cfg.p)?;
        Ok(c[1..].iter().map(|v| v * v).sum::<f64>().sqrt().max(1e-300))
    };
    let rel_error = |group: &[usize], t: &[f64], m: &LinearDatamodel, scale: f64| -> Result<f64> {
        let (actual, predicted) = group_effect(t, cfg.p, group, m)?;
        Ok((predicted - actual).abs() / scale)
    };
    let table_sd = sd(&table)?;
    let mut structured = Vec::new();
    let mut random = Vec::new();
    for size in 1..=cfg.max_group {
        let group: Vec<usize> = (0..size).collect();
        structured.push((size as f64, rel_error(&group, &table, &model, table_sd)?));
        let mut total = 0.0;
        for g in 0..cfg.random_groups {
            let order = tensor::permutation(n, &mut tensor::derived(ctx.seed, (size * 1000 + g) as u64));
            total += rel_error(&order[..size], &table, &model, table_sd)?;
        }
        random.push((size as f64, total / cfg.random_groups as f64));
    }
    let independent: Vec<usize> = ((clusters - 1) * cfg.cluster..n).collect();
    let independent_error = rel_error(&independent, &table, &model, table_sd)?;
    report.claim(
        "additive-without-interactions",
        "a group touched by no weight above level 1 adds up exactly",
        "|predicted - actual| / sd(f) for the independent cluster < 1e-9",
        independent_error,
        |e| e < 1e-9,
    );
    report.claim(
        "structured-groups-break-additivity",
        "groups of interacting (redundant) points are predicted worse as they grow",
        "error (sd units) at the largest structured group - error at size 2 > 0.05",
        structured.last().expect("sizes").1 - structured[1].1,
        |d| d > 0.05,
    );
    report.claim(
        "structured-worse-than-random",
        "structured groups are predicted worse than random groups of the same size",
        "error structured / random at the largest size > 1",
        structured.last().expect("sizes").1 / random.last().expect("sizes").1.max(1e-12),
        |r| r > 1.0,
    );
    // The same on a trained model: random groups of a logistic regression's pool.
    let dir = data::resolve("mnist", ctx.data_dir.as_deref())?;
    let mnist = data::mnist::Mnist::load(&dir)?;
    let task = BinaryTask::mnist(&mnist, 3, 8, cfg.n_trained, 1)?;
    let trained = trained_tables(&task, &cfg.logistic, ctx)?.remove(0);
    let trained_model = exact_least_squares(&trained, cfg.p)?;
    let trained_sd = sd(&trained)?;
    let mut trained_curve = Vec::new();
    for size in 1..=cfg.max_group.min(cfg.n_trained) {
        let mut total = 0.0;
        for g in 0..cfg.random_groups {
            let order =
                tensor::permutation(cfg.n_trained, &mut tensor::derived(ctx.seed ^ 77, (size * 1000 + g) as u64));
            total += rel_error(&order[..size], &trained, &trained_model, trained_sd)?;
        }
        trained_curve.push((size as f64, total / cfg.random_groups as f64));
    }
    let mut coef = trained.clone();
    p_biased_transform(&mut coef, cfg.p)?;
    let w = level_weights(&coef)?;
    report.metric("trained_level_weights", &w);
    let chart = Chart::new(
        "Group effect: linear prediction error against group size",
        "group size",
        "|predicted - actual| / sd(f)",
    )
    .log_y()
    .series(Series::line(
        "structured (redundant clusters)",
        structured.iter().map(|&(s, e)| (s, e.max(1e-12))).collect(),
    ))
    .series(Series::line("random groups", random.iter().map(|&(s, e)| (s, e.max(1e-12))).collect()))
    .series(Series::line(
        "random groups, trained logistic regression",
        trained_curve.iter().map(|&(s, e)| (s, e.max(1e-12))).collect(),
    ));
    report.figure(ctx, "group_error.png", "relative error of linear group-effect predictions", |p: &Path| {
        line_chart(p, &chart)
    })?;
    report.metric("structured", &structured);
    report.metric("random", &random);
    report.metric("trained_random", &trained_curve);
    report.metric("independent_group_error", independent_error);
    report.note(
        "Group effect = E[f(x with G all in) - f(x with G all out)] over the other coordinates under mu_p, exact by \
         enumeration; prediction = sum of the group's 0/1 datamodel weights. Synthetic output: clusters of \
         near-duplicate points whose contribution saturates (1 - 2^-present), plus one cluster of purely linear points. \
         Errors are in units of sd(f) under mu_p. At p = 1/2 groups of one or two points are predicted exactly even \
         with interactions (a pair interaction splits evenly between the two weights).",
    );
    Ok(report)
}
