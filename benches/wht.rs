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

criterion_group! {
    name = benches;
    // No plots: plotters' SVG text needs system fonts, which minimal machines lack.
    config = Criterion::default().without_plots();
    targets = wht
}
criterion_main!(benches);
