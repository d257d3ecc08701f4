//! Times one reference workload and prints one JSON line; `cargo xtask bench --compare` runs it in a fresh
//! process per measurement, interleaved with the JAX/PyTorch anchors, and takes medians over rounds.
//!
//! usage: bench_workload <workload> [reps]
//! workloads: w2-train, w2-forward, nanogpt-train, cnn-train, cnn-saliency, icl-looped, icl-distinct,
//! minilm-train, gemm-2048
//!
//! Protocol (the anchors' `median_time`): 3 untimed calls, then `reps` timed ones; the median is reported, with the
//! matrix-product FLOPs of one call counted by `tensor::matmul_flops`.
use std::hint::black_box;
use std::time::Instant;

use strata_benches::{CnnWorkload, EncoderWorkload, IclWorkload, LmWorkload};

fn main() {
    let mut args = std::env::args().skip(1);
    let Some(which) = args.next() else {
        eprintln!("usage: bench_workload <workload> [reps]");
        std::process::exit(2);
    };
    let reps: Option<usize> = args.next().map(|s| s.parse().unwrap_or_else(|_| fail(&format!("bad reps {s:?}"))));
    let (per_call, unit, default_reps, mut call): (usize, &str, usize, Box<dyn FnMut()>) = match which.as_str() {
        "w2-train" => {
            let mut w = LmWorkload::new(16, 128);
            (
                w.tokens_per_step(),
                "tokens",
                10,
                Box::new(move || {
                    black_box(w.train_step());
                }),
            )
        }
        "w2-forward" => {
            let w = LmWorkload::new(16, 128);
            (
                w.tokens_per_step(),
                "tokens",
                20,
                Box::new(move || {
                    black_box(tensor::no_grad(|| w.loss().item()));
                }),
            )
        }
        "nanogpt-train" => {
            let mut t = strata_benches::nanogpt_cpu_trainer();
            (
                12 * 64,
                "tokens",
                30,
                Box::new(move || {
                    black_box(t.train_step().expect("finite loss").loss);
                }),
            )
        }
        "cnn-train" => {
            let mut w = CnnWorkload::new(128);
            (
                128,
                "images",
                20,
                Box::new(move || {
                    black_box(w.train_step());
                }),
            )
        }
        "cnn-saliency" => {
            let w = CnnWorkload::new(128).frozen();
            (
                128,
                "images",
                20,
                Box::new(move || {
                    black_box(w.saliency());
                }),
            )
        }
        "icl-looped" | "icl-distinct" => {
            let mut w = IclWorkload::new(which == "icl-looped");
            (
                1,
                "steps",
                50,
                Box::new(move || {
                    black_box(w.train_step());
                }),
            )
        }
        "minilm-train" => {
            let mut w = EncoderWorkload::new(32, 64);
            (
                32 * 64,
                "tokens",
                10,
                Box::new(move || {
                    black_box(w.train_step());
                }),
            )
        }
        "gemm-2048" => {
            let n = 2048;
            let a = tensor::Tensor::<f32>::new(tensor::normal(&[n, n], 0.0, 1.0, &mut tensor::seeded(0)));
            let b = tensor::Tensor::<f32>::new(tensor::normal(&[n, n], 0.0, 1.0, &mut tensor::seeded(1)));
            (
                1,
                "products",
                20,
                Box::new(move || {
                    black_box(tensor::no_grad(|| a.matmul(&b)));
                }),
            )
        }
        other => fail(&format!("unknown workload {other:?}")),
    };
    let reps = reps.unwrap_or(default_reps).max(1);
    let flops_before = tensor::matmul_flops();
    call();
    let flops = tensor::matmul_flops() - flops_before;
    call();
    call();
    let mut times: Vec<f64> = (0..reps)
        .map(|_| {
            let t0 = Instant::now();
            call();
            t0.elapsed().as_secs_f64()
        })
        .collect();
    times.sort_by(f64::total_cmp);
    let median = if reps % 2 == 1 { times[reps / 2] } else { 0.5 * (times[reps / 2 - 1] + times[reps / 2]) };
    let core = tensor::openblas_core();
    println!(
        "{{\"workload\":\"{which}\",\"ms\":{:.4},\"per_call\":{per_call},\"unit\":\"{unit}\",\"reps\":{reps},\
         \"matmul_gflop\":{:.4},\"threads\":{},\"openblas_core\":\"{core}\"}}",
        median * 1e3,
        flops as f64 / 1e9,
        rayon::current_num_threads()
    );
}

fn fail(msg: &str) -> ! {
    eprintln!("bench_workload: {msg}");
    std::process::exit(2)
}
