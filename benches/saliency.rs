//! Saliency throughput (images/s), batch 128: vanilla gradient on the anchor's Keras MNIST net (the same network and
//! batch as `jax_cnn.py`'s input-gradient figure), and vanilla gradient, integrated gradients (32 steps) and P9's
//! simple mask (100 Adam steps) on the small MNIST CNN the saliency reproduction trains. Random weights and inputs:
//! throughput does not depend on training.

use std::time::Duration;

use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use saliency::{
    ConvNet, ConvNetConfig, IntegratedGradients, MaskOptimisation, Replacement, SaliencyMethod, VanillaGradient,
};
use std::hint::black_box;

const BATCH: usize = 128;

fn batch() -> (tensor::ndarray::ArrayD<f32>, Vec<usize>) {
    let mut rng = tensor::seeded(1);
    let x = tensor::uniform(&[BATCH, 1, 28, 28], 0.0, 1.0, &mut rng);
    let y = (0..BATCH).map(|i| i % 10).collect();
    (x, y)
}

fn saliency_throughput(c: &mut Criterion) {
    let (x, y) = batch();
    let mut g = c.benchmark_group("saliency");
    g.sample_size(10);
    g.throughput(Throughput::Elements(BATCH as u64));
    let keras = ConvNet::new(ConvNetConfig::keras_mnist(), 0).unwrap();
    keras.freeze();
    let small = ConvNet::new(ConvNetConfig::small(1, 28, 28, 10), 0).unwrap();
    small.freeze();
    let vanilla = VanillaGradient::default();
    g.bench_function("keras_mnist_b128_vanilla_gradient", |b| {
        b.iter(|| black_box(vanilla.attribute(&keras, &x, &y).unwrap()))
    });
    g.bench_function("small_cnn_b128_vanilla_gradient", |b| {
        b.iter(|| black_box(vanilla.attribute(&small, &x, &y).unwrap()))
    });
    g.measurement_time(Duration::from_secs(20));
    let ig = IntegratedGradients { steps: 32, ..Default::default() };
    g.bench_function("small_cnn_b128_integrated_gradients_32", |b| {
        b.iter(|| black_box(ig.attribute(&small, &x, &y).unwrap()))
    });
    let mask = MaskOptimisation::p9(Replacement::Constant(0.13));
    g.bench_function("small_cnn_b128_simple_mask_100", |b| {
        b.iter(|| black_box(mask.attribute(&small, &x, &y).unwrap()))
    });
    g.finish();
}

criterion_group! {
    name = benches;
    // No plots: plotters' SVG text needs system fonts, which minimal machines lack.
    config = Criterion::default().without_plots();
    targets = saliency_throughput
}
criterion_main!(benches);
