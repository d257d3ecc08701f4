//! Compute read off training curves.

/// The compute at which a curve of `(flops, loss)` points (in training order) first reaches `target`,
/// interpolating linearly between the evaluation before and the one that reached it; `None` when it never does.
pub use report::stats::first_reach as flops_to_reach;

/// Layer FLOPs of a Prop-alpha schedule relative to training the final model throughout, for stages of equal
/// depth increments (stage `i` of `k` runs `i/k` of the layers): `sum_i (i/k) T_i / sum_i T_i`. For alpha 1
/// this is `(2k + 1) / (3k)` (P4).
pub fn prop_alpha_layer_fraction(k: usize, alpha: f64) -> f64 {
    let weights: Vec<f64> = (1..=k).map(|i| (i as f64).powf(alpha)).collect();
    let total: f64 = weights.iter().sum();
    weights.iter().enumerate().map(|(i, w)| (i + 1) as f64 / k as f64 * w).sum::<f64>() / total
}
