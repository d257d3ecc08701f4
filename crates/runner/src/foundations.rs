//! `tensor/foundations`: evidence that the tensor crate is sound, as a report anyone can regenerate.
//! Gradient checks of every op family (`strata_tensor::gradcheck::cases`, the list the tensor tests run: f64
//! central differences on seeded random shapes and inputs), two small nets that must learn, and the same
//! training run under 1 and 2 threads giving identical numbers.

use report::figure::{Chart, Series};
use report::{Check, DynExperiment, Experiment, Presets, Report, RunCtx};
use serde::{Deserialize, Serialize};
use tensor::gradcheck::{TOLERANCE, cases, check_case};
use tensor::ndarray::{ArrayD, IxDyn};
use tensor::nn::{Activation, Conv2d, Linear, Mlp, Module};
use tensor::optim::{Adam, AdamConfig, Optimizer, Sgd, SgdConfig};
use tensor::{Conv2dSpec, Params, Rng, Tensor, argmax_rows, normal, seeded, uniform};

pub fn all() -> Vec<Box<dyn DynExperiment>> {
    vec![Box::new(Foundations)]
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    /// Random draws per op family in the gradient sweep.
    pub gradcheck_draws: usize,
    pub xor_steps: usize,
    /// Adam's learning rate for the XOR MLP.
    pub xor_lr: f64,
    pub conv_samples: usize,
    pub conv_steps: usize,
    /// SGD's learning rate and momentum for the bars conv net.
    pub conv_lr: f64,
    pub conv_momentum: f64,
}

impl Presets for Config {
    fn smoke() -> Self {
        Config { gradcheck_draws: 1, xor_steps: 50, conv_samples: 16, conv_steps: 5, ..Self::quick() }
    }
    fn quick() -> Self {
        Config {
            gradcheck_draws: 3,
            xor_steps: 300,
            xor_lr: 0.05,
            conv_samples: 64,
            conv_steps: 60,
            conv_lr: 0.05,
            conv_momentum: 0.9,
        }
    }
    fn full() -> Self {
        Config { gradcheck_draws: 20, xor_steps: 1000, conv_samples: 256, conv_steps: 150, ..Self::quick() }
    }
}

pub struct Foundations;

impl Experiment for Foundations {
    type Config = Config;
    type Error = report::Error;
    const ID: &'static str = "tensor/foundations";
    const ABOUT: &'static str =
        "gradient checks of every op family, XOR and a toy conv net learning, determinism across thread counts";

    fn run(&self, ctx: &RunCtx, cfg: &Config) -> report::Result<Report> {
        let mut report = Report::new(ctx, cfg);
        gradient_checks(ctx, cfg, &mut report);
        let xor_curve = xor(ctx, cfg, &mut report);
        let conv_curve = conv_and_determinism(ctx, cfg, &mut report);
        let chart = Chart::new("Training loss of the foundation checks", "step", "cross-entropy")
            .log_y()
            .series(Series::line("XOR MLP (Adam)", xor_curve))
            .series(Series::line("bars conv net (SGD)", conv_curve));
        report.line_figure(ctx, "loss.png", "Training loss of the XOR MLP and the toy conv net", &chart)?;
        Ok(report)
    }
}

fn gradient_checks(ctx: &RunCtx, cfg: &Config, report: &mut Report) {
    let mut rng = ctx.rng("gradient checks");
    let mut worst = 0.0f64;
    let mut per_op = serde_json::Map::new();
    let cases = cases();
    let bar = ctx.progress(cases.len() as u64, "gradient checks");
    for case in &cases {
        let op_worst = (0..cfg.gradcheck_draws).map(|_| check_case(case, &mut rng).max_error).fold(0.0, f64::max);
        per_op.insert(case.name.to_string(), op_worst.into());
        worst = worst.max(op_worst);
        bar.inc(1);
    }
    bar.finish_and_clear();
    report.metric("gradcheck_max_error_by_op", &per_op);
    report.metric("gradcheck_op_families", cases.len());
    let draws = if cfg.gradcheck_draws == 0 { f64::NAN } else { worst };
    report.check(
        "gradients-correct",
        "analytic gradients of every op family match f64 central differences",
        "max relative error",
        draws,
        Check::Below(TOLERANCE),
    );
}

fn xor(ctx: &RunCtx, cfg: &Config, report: &mut Report) -> Vec<(f64, f64)> {
    let (curve, acc) = xor_run(cfg.xor_steps, cfg.xor_lr, ctx.seed_for("xor"));
    report.metric("xor_accuracy", acc);
    report.metric("xor_final_loss", curve.last().map(|p| p.1));
    report.check("xor-learned", "a 2-8-2 tanh MLP trained with Adam fits XOR", "accuracy", acc, Check::Equals(1.0));
    curve
}

fn conv_and_determinism(ctx: &RunCtx, cfg: &Config, report: &mut Report) -> Vec<(f64, f64)> {
    let seed = ctx.seed_for("bars conv net");
    let pool = |threads| rayon::ThreadPoolBuilder::new().num_threads(threads).build().expect("thread pool");
    let (curve, acc, bits_2) = pool(2).install(|| conv_run(cfg, seed));
    let (_, _, bits_1) = pool(1).install(|| conv_run(cfg, seed));
    report.metric("conv_accuracy", acc);
    report.metric("conv_final_loss", curve.last().map(|p| p.1));
    report.check(
        "conv-separates",
        "a one-conv-layer net separates vertical from horizontal bars in noise",
        "training accuracy",
        acc,
        Check::Equals(1.0),
    );
    let differing = bits_1.iter().zip(&bits_2).filter(|(a, b)| a != b).count() + bits_1.len().abs_diff(bits_2.len());
    report.metric("determinism_differing_weights", differing);
    report.check(
        "thread-count-deterministic",
        "the same seed gives bit-identical weights with 1 and 2 rayon threads",
        "differing weights",
        differing as f64,
        Check::Equals(0.0),
    );
    curve
}

fn xor_run(steps: usize, lr: f64, seed: u64) -> (Vec<(f64, f64)>, f64) {
    let params = Params::<f32>::new();
    let mut rng = seeded(seed);
    let mlp = Mlp::new(&params.root().sub("mlp"), &[2, 8, 2], Activation::Tanh, &mut rng);
    let x = Tensor::from_vec(vec![0.0, 0.0, 0.0, 1.0, 1.0, 0.0, 1.0, 1.0], &[4, 2]);
    let labels = [0, 1, 1, 0];
    let mut opt = Adam::new(AdamConfig::adam(lr));
    let mut curve = Vec::new();
    for step in 0..steps {
        let loss = mlp.forward(&x).cross_entropy(&labels);
        curve.push((step as f64, loss.item() as f64));
        let grads = loss.backward();
        opt.step(&params, &grads);
    }
    let pred = argmax_rows(mlp.forward(&x).value());
    let acc = pred.iter().zip(labels).filter(|(p, l)| **p == *l).count() as f64 / 4.0;
    (curve, acc)
}

/// Bars (class 0 vertical, class 1 horizontal) at random positions in noise; returns the loss curve,
/// training accuracy, and the final parameters' bit patterns (for the determinism check).
fn conv_run(cfg: &Config, seed: u64) -> (Vec<(f64, f64)>, f64, Vec<u32>) {
    let (samples, steps) = (cfg.conv_samples, cfg.conv_steps);
    let mut rng = seeded(seed);
    let side = 12;
    let mut images = vec![0f32; samples * side * side];
    let labels: Vec<usize> = (0..samples).map(|i| i % 2).collect();
    for i in 0..samples {
        let pos = 1 + (rand_index(&mut rng, side - 2));
        let start = rand_index(&mut rng, side / 2);
        for j in start..start + side / 2 {
            let (y, x) = if labels[i] == 0 { (j, pos) } else { (pos, j) };
            images[i * side * side + y * side + x] = 1.0;
        }
    }
    let noise = normal::<f32>(&[samples, 1, side, side], 0.0, 0.3, &mut rng);
    let x = Tensor::new(ArrayD::from_shape_vec(IxDyn(&[samples, 1, side, side]), images).expect("size") + noise);
    let params = Params::<f32>::new();
    let root = params.root();
    let conv = Conv2d::new(&root.sub("conv"), 1, 8, 3, Conv2dSpec { stride: 1, padding: 1 }, true, &mut rng);
    let fc = Linear::new(&root.sub("fc"), 8 * 6 * 6, 2, true, &mut rng);
    let forward = |x: &Tensor<f32>| fc.forward(&conv.forward(x).relu().max_pool2d(2, 2).flatten_from(1));
    let mut opt = Sgd::new(SgdConfig { lr: cfg.conv_lr, momentum: cfg.conv_momentum, ..Default::default() });
    let mut curve = Vec::new();
    for step in 0..steps {
        let loss = forward(&x).cross_entropy(&labels);
        curve.push((step as f64, loss.item() as f64));
        let grads = loss.backward();
        opt.step(&params, &grads);
    }
    let pred = argmax_rows(forward(&x).value());
    let acc = pred.iter().zip(&labels).filter(|(p, l)| *p == *l).count() as f64 / samples as f64;
    let bits =
        params.iter().iter().flat_map(|(_, v)| v.value().iter().map(|x| x.to_bits()).collect::<Vec<_>>()).collect();
    (curve, acc, bits)
}

fn rand_index(rng: &mut Rng, n: usize) -> usize {
    use tensor::Float;
    let u: f64 = uniform::<f64>(&[1], 0.0, 1.0, rng).iter().next().copied().unwrap_or(0.0).to_f64_lossy();
    ((u * n as f64) as usize).min(n - 1)
}
