//! Step time of each stage of a grown run relative to the full model's, measured interleaved: every round times
//! each stage in turn (the order rotating), so drift in the machine's speed reaches all stages alike.
//!
//! `cargo run --release -p strata-benches --example growth_stages -- [context] [rounds] [steps]`
//! (defaults: 64 = the `growth/midas` quick shapes, stages 2-4-6; 128 gives the full config's 2-4-6-8).
use std::time::Instant;

fn median(v: &mut [f64]) -> f64 {
    v.sort_by(f64::total_cmp);
    let n = v.len();
    if n % 2 == 1 { v[n / 2] } else { 0.5 * (v[n / 2 - 1] + v[n / 2]) }
}

fn main() {
    let arg = |i: usize, default: usize| std::env::args().nth(i).and_then(|s| s.parse().ok()).unwrap_or(default);
    let (context, rounds, steps) = (arg(1, 64), arg(2, 5), arg(3, 10));
    let stages: Vec<usize> = if context >= 128 { vec![2, 4, 6, 8] } else { vec![2, 4, 6] };
    let mut trainers: Vec<_> = stages.iter().map(|&l| strata_benches::growth_stage_trainer_at(l, context)).collect();
    for t in &mut trainers {
        for _ in 0..2 {
            t.train_step().expect("warm-up step");
        }
    }
    let mut times = vec![Vec::new(); stages.len()];
    for round in 0..rounds {
        for k in 0..stages.len() {
            let i = (k + round) % stages.len();
            let start = Instant::now();
            for _ in 0..steps {
                std::hint::black_box(trainers[i].train_step().expect("step").loss);
            }
            times[i].push(start.elapsed().as_secs_f64() * 1e3 / steps as f64);
        }
    }
    // Ratios per round (same round, adjacent in time), then their median.
    let full = stages.len() - 1;
    println!("context {context}, batch 12, width 128; {rounds} interleaved rounds of {steps} steps per stage");
    println!("{:>7} {:>12} {:>14} {:>16}", "layers", "median ms", "ratio to full", "layers / full");
    for (i, &layers) in stages.iter().enumerate() {
        let mut ratios: Vec<f64> = times[i].iter().zip(&times[full]).map(|(a, b)| a / b).collect();
        let (lo, hi) =
            (ratios.iter().copied().fold(f64::INFINITY, f64::min), ratios.iter().copied().fold(0.0, f64::max));
        let m = median(&mut times[i].clone());
        println!(
            "{layers:>7} {m:>12.1} {:>8.3} ({lo:.2}-{hi:.2}) {:>10.3}",
            median(&mut ratios),
            layers as f64 / stages[full] as f64
        );
    }
}
