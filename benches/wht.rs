//! Walsh-Hadamard transform throughput against this machine's memory bandwidth, measured in the same run.
//!
//! Both groups report bytes as one read plus one write of the array (2 x size), so the ratio of a transform's GB/s
//! to the copy's GB/s says how many passes over memory it costs. The anchor's floor (`wht_numpy.py`) charges one
//! read and write per stage: N passes for 2^N values.

use criterion::{BatchSize, Criterion, Throughput, criterion_group, criterion_main};
use datamodels::boolean::{Real, wht_in_place};
use rayon::prelude::*;
use std::hint::black_box;

fn input<T: Real>(log2: u32) -> Vec<T> {
    tensor::normal::<f64>(&[1 << log2], 0.0, 1.0, &mut tensor::seeded(0)).iter().map(|&v| T::from_f64(v)).collect()
}

fn wht_group<T: Real + Default>(c: &mut Criterion, name: &str) {
    let mut g = c.benchmark_group("wht");
    g.sample_size(10);
    for log2 in [22u32, 26] {
        let x: Vec<T> = input(log2);
        let bytes = (x.len() * std::mem::size_of::<T>()) as u64;
        g.throughput(Throughput::Bytes(2 * bytes));
        g.bench_function(format!("{name}_2^{log2}"), |b| {
            b.iter_batched_ref(
                || x.clone(),
                |v| wht_in_place(black_box(v.as_mut_slice())).unwrap(),
                BatchSize::LargeInput,
            )
        });
        // The bandwidth floor: a parallel copy of the same array (read one, write the other).
        let mut dst = vec![T::default(); x.len()];
        g.bench_function(format!("copy_{name}_2^{log2}"), |b| {
            b.iter(|| {
                dst.par_chunks_mut(1 << 16).zip(x.par_chunks(1 << 16)).for_each(|(d, s)| d.copy_from_slice(s));
                black_box(&dst);
            })
        });
    }
    g.finish();
}

fn wht(c: &mut Criterion) {
    wht_group::<f32>(c, "f32");
    wht_group::<f64>(c, "f64");
}

/// Many-model throughput: logistic regressions (784 features, 60 GD steps) trained per second on half of a pool of
/// 100 MNIST-shaped images, 10 test margins each: the unit of work of a datamodels run, one model per rayon task
/// (the old path) and in blocks (the batched path), beside this run's sgemm at the blocks' shapes. Random pixels:
/// the cost does not depend on the values. Useful FLOPs per model: 60 x (2 x 2 x 100 x 784) = 18.8 MFLOP.
fn many_models(c: &mut Criterion) {
    use datamodels::runs::{
        BinaryTask, LOGISTIC_BLOCK, LogisticConfig, MlpConfig, train_logistic, train_logistic_many, train_mlp,
        train_mlp_many,
    };
    let mut rng = tensor::seeded(3);
    let task = BinaryTask {
        train_x: tensor::uniform(&[100, 784], 0.0, 1.0, &mut rng),
        train_y: (0..100).map(|i| if i % 2 == 0 { 1.0 } else { -1.0 }).collect(),
        test_x: tensor::uniform(&[10, 784], 0.0, 1.0, &mut rng),
        test_y: vec![1.0; 10],
    };
    let masks: Vec<Vec<bool>> =
        (0..64).map(|r| datamodels::store::Sampling::Alpha { alpha: 0.5 }.mask(100, 0, r)).collect();
    let mut g = c.benchmark_group("datamodels");
    g.sample_size(10);
    g.throughput(Throughput::Elements(masks.len() as u64));
    g.bench_function("logistic_pool100_alpha0.5_64_models_parallel", |b| {
        b.iter(|| {
            masks.par_iter().map(|m| train_logistic(&task, m, &LogisticConfig::default()).unwrap()).collect::<Vec<_>>()
        })
    });
    // The batched path on the same workload: blocks of LOGISTIC_BLOCK models, two products per step per block.
    let many: Vec<Vec<bool>> =
        (0..1024).map(|r| datamodels::store::Sampling::Alpha { alpha: 0.5 }.mask(100, 0, r)).collect();
    g.throughput(Throughput::Elements(many.len() as u64));
    g.bench_function("logistic_pool100_alpha0.5_1024_models_batched", |b| {
        b.iter(|| black_box(train_logistic_many(&task, &many, &LogisticConfig::default()).unwrap()))
    });
    // The MLP (32 hidden units, 60 AdamW steps): one model per task, and batched.
    g.throughput(Throughput::Elements(masks.len() as u64));
    g.bench_function("mlp32_pool100_alpha0.5_64_models_parallel", |b| {
        b.iter(|| masks.par_iter().map(|m| train_mlp(&task, m, &MlpConfig::default()).unwrap()).collect::<Vec<_>>())
    });
    g.throughput(Throughput::Elements(512));
    g.bench_function("mlp32_pool100_alpha0.5_512_models_batched", |b| {
        b.iter(|| black_box(train_mlp_many(&task, &many[..512], &MlpConfig::default()).unwrap()))
    });
    g.finish();
    // This run's sgemm at the batched path's shapes (the forward product of one block, one block per core), the
    // ceiling for its useful FLOPs: each model's step is 2 x 100 x 784 x 2 FLOPs (forward and gradient products).
    let x =
        tensor::uniform::<f32>(&[100, 784], 0.0, 1.0, &mut rng).into_dimensionality::<tensor::ndarray::Ix2>().unwrap();
    let w = tensor::uniform::<f32>(&[784, LOGISTIC_BLOCK], 0.0, 1.0, &mut rng)
        .into_dimensionality::<tensor::ndarray::Ix2>()
        .unwrap();
    let mut g = c.benchmark_group("datamodels_sgemm");
    g.sample_size(10);
    let per_core = 2 * 100 * 784 * LOGISTIC_BLOCK as u64;
    g.throughput(Throughput::Elements(per_core * rayon::current_num_threads() as u64));
    g.bench_function("sgemm_100x784x256_per_core_parallel", |b| {
        b.iter(|| (0..rayon::current_num_threads()).into_par_iter().map(|_| black_box(x.dot(&w))).count())
    });
    g.finish();
}

criterion_group! {
    name = benches;
    // No plots: plotters' SVG text needs system fonts, which minimal machines lack.
    config = Criterion::default().without_plots();
    targets = wht, many_models
}
criterion_main!(benches);
