//! Seeded randomness: one ChaCha generator type, passed explicitly, and parameter initialisers.

use ndarray::{ArrayD, IxDyn};
use rand::{RngExt, SeedableRng};
use rand_distr::{Distribution, StandardNormal};

use crate::Float;

/// The generator used everywhere in Strata: ChaCha8, seeded explicitly (never from the OS).
pub type Rng = rand_chacha::ChaCha8Rng;

/// A generator from a seed.
pub fn seeded(seed: u64) -> Rng {
    Rng::seed_from_u64(seed)
}

/// An independent stream derived from `seed` and a label (e.g. per worker, per model index).
pub fn derived(seed: u64, stream: u64) -> Rng {
    let mut r = Rng::seed_from_u64(seed);
    r.set_stream(stream);
    r
}

/// `N(mean, std^2)` entries.
pub fn normal<F: Float>(shape: &[usize], mean: f64, std: f64, rng: &mut Rng) -> ArrayD<F> {
    ArrayD::from_shape_simple_fn(IxDyn(shape), || {
        let z: f64 = StandardNormal.sample(rng);
        F::of(mean + std * z)
    })
}

/// `U[low, high)` entries.
pub fn uniform<F: Float>(shape: &[usize], low: f64, high: f64, rng: &mut Rng) -> ArrayD<F> {
    ArrayD::from_shape_simple_fn(IxDyn(shape), || F::of(rng.random_range(low..high)))
}

/// A uniformly random permutation of `0..n` (the order of `n` uniform keys: shuffles, random subsets).
pub fn permutation(n: usize, rng: &mut Rng) -> Vec<usize> {
    let keys = uniform::<f64>(&[n], 0.0, 1.0, rng);
    let mut order: Vec<usize> = (0..n).collect();
    order.sort_by(|&a, &b| keys[a].total_cmp(&keys[b]));
    order
}

/// `(fan_in, fan_out)` of a weight: `[out, in]` for linear layers stored as `[in, out]`-agnostic 2-D, and
/// `[out, in, kh, kw]` for convolutions (receptive field counted in both).
pub fn fans(shape: &[usize]) -> (usize, usize) {
    match shape.len() {
        0 => (1, 1),
        1 => (shape[0], shape[0]),
        2 => (shape[0], shape[1]),
        _ => {
            let field: usize = shape[2..].iter().product();
            (shape[1] * field, shape[0] * field)
        }
    }
}

/// Glorot/Xavier uniform: `U(-a, a)`, `a = gain * sqrt(6 / (fan_in + fan_out))`.
pub fn xavier_uniform<F: Float>(shape: &[usize], gain: f64, rng: &mut Rng) -> ArrayD<F> {
    let (fi, fo) = fans(shape);
    let a = gain * (6.0 / (fi + fo) as f64).sqrt();
    uniform(shape, -a, a, rng)
}

/// Glorot/Xavier normal: `std = gain * sqrt(2 / (fan_in + fan_out))`.
pub fn xavier_normal<F: Float>(shape: &[usize], gain: f64, rng: &mut Rng) -> ArrayD<F> {
    let (fi, fo) = fans(shape);
    normal(shape, 0.0, gain * (2.0 / (fi + fo) as f64).sqrt(), rng)
}

/// He/Kaiming normal for ReLU nets: `std = sqrt(2 / fan_in)`.
pub fn kaiming_normal<F: Float>(shape: &[usize], fan_in: usize, rng: &mut Rng) -> ArrayD<F> {
    normal(shape, 0.0, (2.0 / fan_in as f64).sqrt(), rng)
}

/// He/Kaiming uniform: `U(-a, a)`, `a = sqrt(6 / fan_in)`.
pub fn kaiming_uniform<F: Float>(shape: &[usize], fan_in: usize, rng: &mut Rng) -> ArrayD<F> {
    let a = (6.0 / fan_in as f64).sqrt();
    uniform(shape, -a, a, rng)
}
