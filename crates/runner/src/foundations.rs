//! `tensor/foundations`: evidence that the tensor crate is sound, as a report anyone can regenerate.
//! Gradient checks of every op family (`strata_tensor::gradcheck::cases`, the list the tensor tests run: f64
//! central differences on seeded random shapes and inputs), two small nets
//! that must learn, and the same training run under 1 and 2 threads giving identical numbers.

use anyhow::Result;
use report::figure::{Chart, Series, line_chart};
use report::{Report, RunCtx};
use serde::Serialize;
use tensor::gradcheck::{TOLERANCE, cases, check_case};
use tensor::ndarray::{ArrayD, IxDyn};
use tensor::nn::{Activation, Conv2d, Linear, Mlp, Module};
use tensor::optim::{Adam, AdamConfig, Optimizer, Sgd, SgdConfig};
use tensor::{Conv2dSpec, Params, Rng, Tensor, argmax_rows, normal, seeded, uniform};

#[derive(Debug, Clone, Serialize)]
pub struct Config {
    /// Random draws per op family in the gradient sweep.
    pub gradcheck_draws: usize,
    pub xor_steps: usize,
    pub conv_samples: usize,
    pub conv_steps: usize,
}

impl Config {
    pub fn quick() -> Self {
        Config { gradcheck_draws: 3, xor_steps: 300, conv_samples: 64, conv_steps: 60 }
    }
    pub fn full() -> Self {
        Config { gradcheck_draws: 20, xor_steps: 1000, conv_samples: 256, conv_steps: 150 }
    }
}

fn xor_run(steps: usize, seed: u64) -> (Vec<(f64, f64)>, f64) {
    let params = Params::<f32>::new();
    let mut rng = seeded(seed);
    let mlp = Mlp::new(&params.root().sub("mlp"), &[2, 8, 2], Activation::Tanh, &mut rng);
    let x = Tensor::from_vec(vec![0.0, 0.0, 0.0, 1.0, 1.0, 0.0, 1.0, 1.0], &[4, 2]);
    let labels = [0, 1, 1, 0];
    let mut opt = Adam::new(AdamConfig::adam(0.05));
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
fn conv_run(samples: usize, steps: usize, seed: u64) -> (Vec<(f64, f64)>, f64, Vec<u32>) {
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
    let mut opt = Sgd::new(SgdConfig { lr: 0.05, momentum: 0.9, ..Default::default() });
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

pub fn run(ctx: &RunCtx) -> Result<Report> {
    let cfg = if ctx.is_quick() { Config::quick() } else { Config::full() };
    let mut report = Report::new(ctx, &cfg);

    let mut rng = seeded(ctx.seed);
    let mut worst = 0.0f64;
    let mut per_op = serde_json::Map::new();
    let cases = cases();
    let bar = ctx.progress(cases.len() as u64, "gradient checks");
    for case in &cases {
        let mut op_worst = 0.0f64;
        for _ in 0..cfg.gradcheck_draws {
            op_worst = op_worst.max(check_case(case, &mut rng).max_error);
        }
        per_op.insert(case.name.to_string(), op_worst.into());
        worst = worst.max(op_worst);
        bar.inc(1);
    }
    bar.finish_and_clear();
    report.metric("gradcheck_max_error_by_op", &per_op);
    report.metric("gradcheck_op_families", cases.len());
    report.claim(
        "gradients-correct",
        "analytic gradients of every op family match f64 central differences",
        "max relative error < 1e-6",
        worst,
        |e| e < TOLERANCE,
    );

    let (xor_curve, xor_acc) = xor_run(cfg.xor_steps, ctx.seed);
    report.metric("xor_accuracy", xor_acc);
    report.metric("xor_final_loss", xor_curve.last().map(|p| p.1));
    report.claim("xor-learned", "a 2-8-2 tanh MLP trained with Adam fits XOR", "accuracy = 1", xor_acc, |a| a == 1.0);

    let pool = |threads| rayon::ThreadPoolBuilder::new().num_threads(threads).build().expect("thread pool");
    let (conv_curve, conv_acc, bits_2) = pool(2).install(|| conv_run(cfg.conv_samples, cfg.conv_steps, ctx.seed));
    let (_, _, bits_1) = pool(1).install(|| conv_run(cfg.conv_samples, cfg.conv_steps, ctx.seed));
    report.metric("conv_accuracy", conv_acc);
    report.metric("conv_final_loss", conv_curve.last().map(|p| p.1));
    report.claim(
        "conv-separates",
        "a one-conv-layer net separates vertical from horizontal bars in noise",
        "training accuracy = 1",
        conv_acc,
        |a| a == 1.0,
    );
    let differing = bits_1.iter().zip(&bits_2).filter(|(a, b)| a != b).count() + bits_1.len().abs_diff(bits_2.len());
    report.metric("determinism_differing_weights", differing);
    report.claim(
        "thread-count-deterministic",
        "the same seed gives bit-identical weights with 1 and 2 rayon threads",
        "differing weights = 0",
        differing as f64,
        |d| d == 0.0,
    );

    let chart = Chart::new("Training loss of the foundation checks", "step", "cross-entropy")
        .log_y()
        .series(Series::line("XOR MLP (Adam)", xor_curve))
        .series(Series::line("bars conv net (SGD)", conv_curve));
    report.figure(ctx, "loss.png", "Training loss of the XOR MLP and the toy conv net", |p| line_chart(p, &chart))?;
    Ok(report)
}
