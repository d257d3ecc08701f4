//! Runs a few reference training steps for profiling (`perf record target/release/examples/profile_step lm`).
fn main() {
    let which = std::env::args().nth(1).unwrap_or_else(|| "lm".into());
    let steps: usize = std::env::args().nth(2).and_then(|s| s.parse().ok()).unwrap_or(5);
    let t0 = std::time::Instant::now();
    match which.as_str() {
        "icl" => {
            let mut w = strata_benches::IclWorkload::new(true);
            for _ in 0..steps {
                w.train_step();
            }
        }
        "lm-fwd" => {
            let w = strata_benches::LmWorkload::new(16, 128);
            for _ in 0..steps {
                tensor::no_grad(|| w.loss());
            }
        }
        "lm" => {
            let mut w = strata_benches::LmWorkload::new(16, 128);
            for _ in 0..steps {
                w.train_step();
            }
        }
        _ => {
            let mut w = strata_benches::CnnWorkload::new(128);
            for _ in 0..steps {
                w.train_step();
            }
        }
    }
    eprintln!("{which}: {:.1} ms/step", t0.elapsed().as_secs_f64() * 1e3 / steps as f64);
}
