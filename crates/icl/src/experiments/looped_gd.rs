//! `icl/looped-gd` (P3): a looped restricted LSA model trained on `x ~ N(0, Sigma)`, `w* ~ N(0, Sigma^-1)`
//! learns preconditioned gradient descent: `u -> 0`, `A Sigma -> I` as n grows, its loss equals the closed form
//! of GD with its own preconditioner, and it is close to the best preconditioner.

use report::figure::{Chart, Series};
use report::{Check, Experiment, Presets, Report, RunCtx, fraction, max_or_nan};
use serde::{Deserialize, Serialize};
use tensor::ndarray::{Array1, Array2};

use super::{eval_gd, eval_mse, train_model};
use crate::model::{ModelConfig, Parameterization, TrainConfig};
use crate::task::{Covariance, Prompts, Shift, TaskConfig, WeightPrior, haar_orthogonal, sample};
use crate::theory::optimal_preconditioner;
use crate::{Error, Result};

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LoopedGdConfig {
    pub d_values: Vec<usize>,
    pub n_values: Vec<usize>,
    pub depths: Vec<usize>,
    /// Eigenvalues of the fixed input covariance are log-spaced in `[lo, hi]`, in a random basis.
    pub spectrum: (f64, f64),
    pub steps: usize,
    pub batch: usize,
    pub lr: f64,
    pub clip: Option<f64>,
    pub init_std: f64,
    /// Loop curriculum for models at least `curriculum_min_depth` deep (see `TrainConfig::curriculum`).
    pub curriculum: f64,
    pub curriculum_min_depth: usize,
    pub eval_prompts: usize,
    /// Prompts and Adam iterations of the direct minimisation of the closed-form loss over the preconditioner.
    pub optimal_prompts: usize,
    pub optimal_iters: usize,
    /// Test-time rotation of `Sigma` (radians, in one random plane) for the adaptation check.
    pub rotation_angle: f64,
}

impl Presets for LoopedGdConfig {
    fn smoke() -> Self {
        LoopedGdConfig {
            d_values: vec![2],
            n_values: vec![4, 8],
            depths: vec![1, 2],
            steps: 30,
            batch: 32,
            eval_prompts: 200,
            optimal_prompts: 100,
            optimal_iters: 10,
            ..Self::quick()
        }
    }
    fn quick() -> Self {
        LoopedGdConfig {
            d_values: vec![5],
            n_values: vec![10, 20, 40],
            depths: vec![1, 2, 4],
            spectrum: (0.5, 2.0),
            steps: 1500,
            batch: 256,
            lr: 0.01,
            clip: Some(1.0),
            init_std: 0.01,
            curriculum: 0.3,
            curriculum_min_depth: 4,
            eval_prompts: 4000,
            optimal_prompts: 2000,
            optimal_iters: 300,
            rotation_angle: std::f64::consts::FRAC_PI_2,
        }
    }
    fn full() -> Self {
        LoopedGdConfig {
            d_values: vec![5, 10],
            depths: vec![1, 2, 4, 8],
            steps: 3000,
            lr: 0.005,
            eval_prompts: 10000,
            optimal_prompts: 4000,
            optimal_iters: 600,
            ..Self::quick()
        }
    }
}

/// `icl/looped-gd`.
#[derive(Debug, Clone, Copy)]
pub struct LoopedGd;

impl Experiment for LoopedGd {
    type Config = LoopedGdConfig;
    type Error = Error;
    const ID: &'static str = "icl/looped-gd";
    const ABOUT: &'static str = "P3: looped restricted LSA learns preconditioned GD (u -> 0, A Sigma -> I, closed form, optimal preconditioner)";

    fn run(&self, ctx: &RunCtx, cfg: &LoopedGdConfig) -> Result<Report> {
        if [&cfg.d_values, &cfg.n_values, &cfg.depths].iter().any(|v| v.is_empty() || v.contains(&0)) {
            return Err(crate::error::invalid(format!("d, n and depth lists must be non-empty and positive: {cfg:?}")));
        }
        let mut report = Report::new(ctx, cfg);
        report
            .note("The restricted layer with Q-block A runs GD preconditioned by A^T; spectra are of sym(A^T Sigma).");
        let rows = measure(ctx, cfg)?;
        report.metric("rows", &rows);
        claims(&mut report, cfg, &rows);
        figures(ctx, &mut report, cfg, &rows)?;
        Ok(report)
    }
}

/// One trained model (dimension `d`, `n` examples, `depth` loops) and what was measured on it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct LoopedGdRow {
    pub d: usize,
    pub n: usize,
    pub depth: usize,
    pub model_loss: f64,
    /// GD with the model's own preconditioner `A^T`, `depth` steps, computed from the formula.
    pub closed_form_loss: f64,
    pub loss_2x_loops: f64,
    pub loss_4x_loops: f64,
    /// GD with the preconditioner that minimises the closed-form loss directly.
    pub optimal_loss: f64,
    /// Loss with the test covariance rotated by `rotation_angle` (same spectrum, other eigenvectors).
    pub rotated_loss: f64,
    pub u_over_a: f64,
    pub a_sigma_eigenvalues: Vec<f64>,
}

/// The task at one `(d, n)`: the fixed covariance, its matrix, and the evaluation prompts (plain and rotated).
struct Setting {
    task: TaskConfig,
    sigma: Array2<f64>,
    eval: Prompts,
    eval_rotated: Prompts,
}

fn setting(ctx: &RunCtx, cfg: &LoopedGdConfig, d: usize, n: usize) -> Result<Setting> {
    let eigenvalues: Vec<f64> = (0..d)
        .map(|i| cfg.spectrum.0 * (cfg.spectrum.1 / cfg.spectrum.0).powf(i as f64 / (d.max(2) - 1) as f64))
        .collect();
    let basis_seed = ctx.seed_for(&format!("covariance basis d {d}"));
    let u = haar_orthogonal(d, &mut tensor::seeded(basis_seed));
    let sigma = u.dot(&Array2::from_diag(&Array1::from(eigenvalues.clone()))).dot(&u.t());
    let task = TaskConfig {
        d,
        n,
        covariance: Covariance::Fixed { eigenvalues, basis_seed },
        prior: WeightPrior::InverseCovariance,
        noise_std: 0.0,
        shift: Shift::None,
    };
    let rotation = Shift::Rotate { angle: cfg.rotation_angle, seed: ctx.seed_for(&format!("rotation d {d}")) };
    let eval = sample(&task, cfg.eval_prompts, &mut ctx.rng(&format!("eval prompts d {d} n {n}")))?;
    let rotated = TaskConfig { shift: rotation, ..task.clone() };
    let eval_rotated = sample(&rotated, cfg.eval_prompts, &mut ctx.rng(&format!("rotated eval prompts d {d} n {n}")))?;
    Ok(Setting { task, sigma, eval, eval_rotated })
}

fn measure(ctx: &RunCtx, cfg: &LoopedGdConfig) -> Result<Vec<LoopedGdRow>> {
    let mut rows = Vec::new();
    let bar = ctx.progress((cfg.d_values.len() * cfg.n_values.len() * cfg.depths.len()) as u64, "configs");
    for &d in &cfg.d_values {
        for &n in &cfg.n_values {
            let s = setting(ctx, cfg, d, n)?;
            for &depth in &cfg.depths {
                rows.push(train_and_measure(ctx, cfg, &s, depth)?);
                bar.inc(1);
            }
        }
    }
    bar.finish_and_clear();
    Ok(rows)
}

fn train_and_measure(ctx: &RunCtx, cfg: &LoopedGdConfig, s: &Setting, depth: usize) -> Result<LoopedGdRow> {
    let (d, n) = (s.task.d, s.task.n);
    let model_cfg =
        ModelConfig { d, depth, looped: true, parameterization: Parameterization::Restricted, init_std: cfg.init_std };
    let train_cfg = TrainConfig {
        steps: cfg.steps,
        batch: cfg.batch,
        lr: cfg.lr,
        clip: cfg.clip,
        curriculum: if depth >= cfg.curriculum_min_depth { cfg.curriculum } else { 0.0 },
        validate_every: 0,
        validation_prompts: 0,
        final_lr: None,
    };
    let model =
        train_model(&model_cfg, &s.task, &train_cfg, ctx.seed_for(&format!("model d {d} n {n} depth {depth}")), None)?;
    model.params.save(&ctx.out_dir()?.join(format!("weights_d{d}_n{n}_L{depth}.safetensors")), None)?;
    let (a, u) = model.restricted_weights(0).expect("a restricted model");
    let a = a.into_shape_with_order((d, d)).expect("d x d");
    let precond = a.t().to_owned();
    let m = precond.dot(&s.sigma);
    let (spectrum, _) = tensor::linalg::eigh(&((&m + &m.t()) / 2.0))?;
    let mut rng = ctx.rng(&format!("optimal preconditioner d {d} n {n} depth {depth}"));
    let a_opt = optimal_preconditioner(&s.task, depth, cfg.optimal_prompts, cfg.optimal_iters, &mut rng)?;
    let norm = |x: &tensor::ndarray::ArrayD<f64>| x.iter().map(|v| v * v).sum::<f64>().sqrt();
    Ok(LoopedGdRow {
        d,
        n,
        depth,
        model_loss: eval_mse(&model, &s.eval, depth),
        closed_form_loss: eval_gd(&vec![precond; depth], &s.eval),
        loss_2x_loops: eval_mse(&model, &s.eval, 2 * depth),
        loss_4x_loops: eval_mse(&model, &s.eval, 4 * depth),
        optimal_loss: eval_gd(&vec![a_opt; depth], &s.eval),
        rotated_loss: eval_mse(&model, &s.eval_rotated, depth),
        u_over_a: norm(&u) / norm(&a.into_dyn()),
        a_sigma_eigenvalues: spectrum.to_vec(),
    })
}

fn claims(report: &mut Report, cfg: &LoopedGdConfig, rows: &[LoopedGdRow]) {
    let row = |d: usize, n: usize, l: usize| rows.iter().find(|r| r.d == d && r.n == n && r.depth == l);
    report.check(
        "u-vanishes",
        "the trained u goes to zero",
        "max ||u|| / ||A||",
        max_or_nan(rows.iter().map(|r| r.u_over_a)),
        Check::Below(0.05),
    );
    report.check(
        "trained-equals-closed-form",
        "the trained model's loss equals the closed-form GD loss for its learned A",
        "max relative gap",
        max_or_nan(rows.iter().map(|r| (r.model_loss - r.closed_form_loss).abs() / r.closed_form_loss)),
        Check::Below(0.02),
    );
    let (mut falls, mut pairs, mut concentrates, mut spectra) = (0, 0, 0, 0);
    for &d in &cfg.d_values {
        for &n in &cfg.n_values {
            let by_l: Vec<f64> = cfg.depths.iter().filter_map(|&l| row(d, n, l)).map(|r| r.model_loss).collect();
            pairs += 1;
            falls += by_l.windows(2).all(|w| w[1] < w[0]) as usize;
        }
        for &l in &cfg.depths {
            let spread = |n: usize| {
                row(d, n, l).map_or(f64::NAN, |r| max_or_nan(r.a_sigma_eigenvalues.iter().map(|e| (e - 1.0).abs())))
            };
            spectra += 1;
            concentrates += (spread(cfg.n_values[cfg.n_values.len() - 1]) < spread(cfg.n_values[0])) as usize;
        }
    }
    // One depth cannot show a fall, one n no concentration: those fractions are not measured.
    let when = |enough: bool, v: f64| if enough { v } else { f64::NAN };
    report.check(
        "loss-falls-with-depth",
        "the loss falls as the number of loops L grows",
        "fraction of (d, n) strictly decreasing",
        when(cfg.depths.len() > 1, fraction(falls, pairs)),
        Check::Equals(1.0),
    );
    report.check(
        "spectrum-concentrates",
        "the spectrum of A Sigma concentrates near 1 as n grows",
        "fraction of (d, L) with max|lambda - 1| smaller at the largest n than the smallest",
        when(cfg.n_values.len() > 1, fraction(concentrates, spectra)),
        Check::Equals(1.0),
    );
    report.check(
        "more-loops-help",
        "running 2x more loops at test time lowers the loss",
        "fraction of configs",
        fraction(rows.iter().filter(|r| r.loss_2x_loops < r.model_loss).count(), rows.len()),
        Check::AtLeast(0.8),
    );
    report.check(
        "preconditioner-adapted",
        "the learned preconditioner is adapted to Sigma itself, not only its spectrum: rotating Sigma at test time raises the loss",
        "fraction of configs with loss(rotated Sigma) > loss(Sigma)",
        fraction(rows.iter().filter(|r| r.rotated_loss > r.model_loss).count(), rows.len()),
        Check::Equals(1.0),
    );
    report.check(
        "near-optimal-preconditioner",
        "the trained model matches the optimal preconditioner found by minimising the closed form",
        "max loss ratio trained / optimal",
        max_or_nan(rows.iter().map(|r| r.model_loss / r.optimal_loss)),
        Check::Below(1.1),
    );
}

fn figures(ctx: &RunCtx, report: &mut Report, cfg: &LoopedGdConfig, rows: &[LoopedGdRow]) -> Result<()> {
    for &d in &cfg.d_values {
        let mut chart =
            Chart::new(&format!("Looped restricted LSA, d = {d}: loss vs loops"), "loops L", "test MSE").log_y();
        for &n in &cfg.n_values {
            let pts = |f: fn(&LoopedGdRow) -> f64| {
                rows.iter().filter(|r| r.d == d && r.n == n).map(|r| (r.depth as f64, f(r))).collect::<Vec<_>>()
            };
            chart = chart
                .series(Series::line(&format!("trained, n = {n}"), pts(|r| r.model_loss)))
                .series(Series::scatter(&format!("closed form of learned A, n = {n}"), pts(|r| r.closed_form_loss)))
                .series(Series::reference(&format!("optimal preconditioner, n = {n}"), pts(|r| r.optimal_loss)));
        }
        report.line_figure(ctx, &format!("loss_vs_loops_d{d}.png"), &format!("Loss against loops, d = {d}"), &chart)?;
        let l0 = cfg.depths[0];
        let title = format!("Eigenvalues of A Sigma, d = {d}, L = {l0}");
        let mut spectrum = Chart::new(&title, "n (in-context examples)", "eigenvalue");
        for k in 0..d {
            let pts = rows
                .iter()
                .filter(|r| r.d == d && r.depth == l0)
                .map(|r| (r.n as f64, r.a_sigma_eigenvalues[k]))
                .collect();
            spectrum = spectrum.series(Series::line(&format!("lambda_{k}"), pts));
        }
        let caption = format!("Spectrum of A Sigma against n, d = {d}");
        report.line_figure(ctx, &format!("spectrum_d{d}.png"), &caption, &spectrum)?;
    }
    Ok(())
}
