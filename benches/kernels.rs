//! Kernel benchmarks: matmul (square and transformer shapes), batched matmul, softmax, layer norm,
//! attention forward+backward, conv2d forward+backward. FLOP or element throughput, fixed seeds.

use criterion::{BenchmarkId, Criterion, Throughput, criterion_group, criterion_main};
use std::hint::black_box;
use tensor::nn::{Module, MultiHeadAttention};
use tensor::{Conv2dSpec, Params, Tensor, no_grad, normal, seeded};

fn t(shape: &[usize], seed: u64) -> Tensor<f32> {
    Tensor::new(normal(shape, 0.0, 1.0, &mut seeded(seed)))
}

fn leaf(shape: &[usize], seed: u64) -> Tensor<f32> {
    Tensor::leaf(normal(shape, 0.0, 1.0, &mut seeded(seed)))
}

fn matmul(c: &mut Criterion) {
    let mut g = c.benchmark_group("matmul");
    g.sample_size(10);
    for n in [256usize, 512, 1024, 2048] {
        let (a, b) = (t(&[n, n], 1), t(&[n, n], 2));
        g.throughput(Throughput::Elements(2 * (n * n * n) as u64));
        g.bench_with_input(BenchmarkId::new("square_f32", n), &n, |bench, _| {
            bench.iter(|| no_grad(|| black_box(a.matmul(&b))))
        });
    }
    // The reference LM's linear layers: [B*T, in] x [in, out]^T.
    for (name, rows, i, o) in [
        ("qkv_2048x256x768", 2048, 256, 768),
        ("fc_2048x256x1024", 2048, 256, 1024),
        ("proj_2048x1024x256", 2048, 1024, 256),
    ] {
        let (x, w) = (t(&[rows, i], 3), t(&[o, i], 4));
        g.throughput(Throughput::Elements(2 * (rows * i * o) as u64));
        g.bench_function(BenchmarkId::new("linear", name), |bench| {
            bench.iter(|| no_grad(|| black_box(x.linear(&w, None))))
        });
    }
    // Attention scores: [B, H, T, Dh] x [B, H, Dh, T].
    let (q, k) = (t(&[16, 4, 128, 64], 5), t(&[16, 4, 64, 128], 6));
    g.throughput(Throughput::Elements(2 * 64 * 128 * 64 * 128));
    g.bench_function("batched_16x4x128x64x128", |bench| bench.iter(|| no_grad(|| black_box(q.matmul(&k)))));
    g.finish();
}

fn rows_ops(c: &mut Criterion) {
    let mut g = c.benchmark_group("rows");
    g.sample_size(20);
    let x = t(&[16 * 4 * 128, 128], 7);
    g.throughput(Throughput::Elements(x.len() as u64));
    g.bench_function("softmax_8192x128", |bench| bench.iter(|| no_grad(|| black_box(x.softmax(-1)))));
    let (h, w, b) = (leaf(&[2048, 256], 8), leaf(&[256], 9), leaf(&[256], 10));
    g.throughput(Throughput::Elements(h.len() as u64));
    g.bench_function("layer_norm_2048x256_fwd", |bench| {
        bench.iter(|| no_grad(|| black_box(h.layer_norm(&w, &b, 1e-5))))
    });
    g.bench_function("layer_norm_2048x256_fwd_bwd", |bench| {
        bench.iter(|| black_box(h.layer_norm(&w, &b, 1e-5).sum_all().backward()))
    });
    g.finish();
}

fn attention(c: &mut Criterion) {
    let mut g = c.benchmark_group("attention");
    g.sample_size(10);
    let params = Params::<f32>::new();
    let attn = MultiHeadAttention::new(&params.root(), 256, 4, true, 0.02, &mut seeded(0));
    let x = leaf(&[16, 128, 256], 11);
    g.throughput(Throughput::Elements(16 * 128));
    g.bench_function("causal_b16_t128_d256_fwd", |bench| bench.iter(|| no_grad(|| black_box(attn.forward(&x)))));
    g.bench_function("causal_b16_t128_d256_fwd_bwd", |bench| {
        bench.iter(|| black_box(attn.forward(&x).sum_all().backward()))
    });
    g.finish();
}

fn conv(c: &mut Criterion) {
    let mut g = c.benchmark_group("conv2d");
    g.sample_size(10);
    let spec = Conv2dSpec { stride: 1, padding: 0 };
    for (name, n, ci, hw, co) in [("b128_1x28_to_32", 128, 1, 28, 32), ("b128_32x26_to_64", 128, 32, 26, 64)] {
        let x = leaf(&[n, ci, hw, hw], 12);
        let w = leaf(&[co, ci, 3, 3], 13);
        let o = hw - 2;
        g.throughput(Throughput::Elements(2 * (n * o * o * co * ci * 9) as u64));
        g.bench_function(BenchmarkId::new("fwd", name), |bench| {
            bench.iter(|| no_grad(|| black_box(x.conv2d(&w, None, spec))))
        });
        g.bench_function(BenchmarkId::new("fwd_bwd", name), |bench| {
            bench.iter(|| black_box(x.conv2d(&w, None, spec).sum_all().backward()))
        });
    }
    g.finish();
}

criterion_group! {
    name = benches;
    // No plots: plotters' SVG text needs system fonts, which minimal machines lack.
    config = Criterion::default().without_plots();
    targets = matmul, rows_ops, attention, conv
}
criterion_main!(benches);
