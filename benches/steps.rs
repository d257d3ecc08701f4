//! Whole training steps of the reference workloads (the same models, shapes and optimizers as the JAX
//! anchors): LM tokens/s, CNN images/s, saliency images/s.

use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use std::hint::black_box;
use strata_benches::{CnnWorkload, IclWorkload, LmWorkload};

fn lm(c: &mut Criterion) {
    let mut g = c.benchmark_group("lm_step");
    g.sample_size(10);
    let mut w = LmWorkload::new(16, 128);
    g.throughput(Throughput::Elements(w.tokens_per_step() as u64));
    g.bench_function("gpt_4x256_b16_t128_adamw_train", |b| b.iter(|| black_box(w.train_step())));
    g.bench_function("gpt_4x256_b16_t128_forward", |b| b.iter(|| tensor::no_grad(|| black_box(w.loss().item()))));
    g.finish();
}

/// The reference LM step (W2 shapes) inside the full trainer: batching, schedule, clipping check, AdamW,
/// metrics line every step written to disk.
fn lm_trainer(c: &mut Criterion) {
    let mut g = c.benchmark_group("lm_trainer");
    g.sample_size(10);
    let dir = std::env::temp_dir().join(format!("strata-bench-lm-{}", std::process::id()));
    let mut t = strata_benches::lm_trainer_w2(&dir);
    g.throughput(Throughput::Elements(strata_benches::LM_W2_TOKENS_PER_STEP));
    g.bench_function("gpt_4x256_b16_t128_trainer_step", |b| b.iter(|| black_box(t.logged_step().unwrap().loss)));
    g.finish();
    let _ = std::fs::remove_dir_all(&dir);
}

/// One trainer step of each stage of `growth/midas` quick (2, 4 and 6 layers of width 128, context 64, batch 12):
/// the time of a stage relative to the full model's should follow the layers run.
fn growth_stages(c: &mut Criterion) {
    let mut g = c.benchmark_group("growth_stage_step");
    g.sample_size(20);
    g.throughput(Throughput::Elements(12 * 64));
    for layers in [2, 4, 6] {
        let mut t = strata_benches::growth_stage_trainer(layers);
        g.bench_function(format!("gpt_{layers}x128_b12_t64_trainer_step"), |b| {
            b.iter(|| black_box(t.train_step().unwrap().loss))
        });
    }
    g.finish();
}

fn cnn(c: &mut Criterion) {
    let mut g = c.benchmark_group("cnn_step");
    g.sample_size(10);
    let mut w = CnnWorkload::new(128);
    g.throughput(Throughput::Elements(w.batch() as u64));
    g.bench_function("mnist_cnn_b128_sgd_train", |b| b.iter(|| black_box(w.train_step())));
    let frozen = CnnWorkload::new(128).frozen();
    g.bench_function("mnist_cnn_b128_input_gradient", |b| b.iter(|| black_box(frozen.saliency())));
    g.finish();
}

fn icl(c: &mut Criterion) {
    let mut g = c.benchmark_group("icl_step");
    g.sample_size(20);
    g.throughput(Throughput::Elements(1));
    for (name, looped) in [("looped_d10_n40_l8_b256_adam", true), ("distinct_d10_n40_l8_b256_adam", false)] {
        let mut w = IclWorkload::new(looped);
        g.bench_function(name, |b| b.iter(|| black_box(w.train_step())));
    }
    g.finish();
}

criterion_group! {
    name = benches;
    // No plots: plotters' SVG text needs system fonts, which minimal machines lack.
    config = Criterion::default().without_plots();
    targets = lm, lm_trainer, growth_stages, cnn, icl
}
criterion_main!(benches);
