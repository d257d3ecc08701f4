//! Finite-difference gradient checks in f64, for this crate's ops and for any model built on it.

use ndarray::ArrayD;

use crate::{Tensor, no_grad};

/// The worst disagreement between analytic and numerical gradients.
#[derive(Debug, Clone, Copy)]
pub struct GradCheck {
    /// max |analytic - numeric| / max(1, |numeric|) over all input entries.
    pub max_error: f64,
    /// Which input and flat index it was at.
    pub at: (usize, usize),
    pub analytic: f64,
    pub numeric: f64,
}

/// Compares the gradient of `f` at `inputs` with central differences of step `eps`.
///
/// `f` maps leaf tensors to any tensor; a non-scalar output is reduced as `sum(out * w)` with fixed
/// pseudo-random weights `w`, so every output entry is checked.
pub fn check(inputs: &[ArrayD<f64>], eps: f64, f: impl Fn(&[Tensor<f64>]) -> Tensor<f64>) -> GradCheck {
    let weights = |shape: &[usize]| {
        let n: usize = shape.iter().product();
        // A fixed, irregular weighting: no symmetry can hide a wrong sign or a transposition.
        let w: Vec<f64> = (0..n).map(|i| 0.5 + ((i * 7919 + 13) % 101) as f64 / 101.0).collect();
        Tensor::from_vec(w, shape)
    };
    let scalar = |ts: &[Tensor<f64>]| {
        let out = f(ts);
        if out.len() == 1 { out.sum_all() } else { (&out * &weights(out.shape())).sum_all() }
    };
    let leaves: Vec<Tensor<f64>> = inputs.iter().map(|a| Tensor::leaf(a.clone())).collect();
    let grads = scalar(&leaves).backward();
    let mut worst = GradCheck { max_error: 0.0, at: (0, 0), analytic: 0.0, numeric: 0.0 };
    for (i, input) in inputs.iter().enumerate() {
        let analytic = grads.get(&leaves[i]).cloned().unwrap_or_else(|| ArrayD::zeros(input.raw_dim()));
        for j in 0..input.len() {
            let eval = |delta: f64| {
                let ts: Vec<Tensor<f64>> = inputs
                    .iter()
                    .enumerate()
                    .map(|(k, a)| {
                        let mut a = a.clone();
                        if k == i {
                            a.as_slice_mut().expect("standard")[j] += delta;
                        }
                        Tensor::new(a)
                    })
                    .collect();
                no_grad(|| scalar(&ts).item())
            };
            let numeric = (eval(eps) - eval(-eps)) / (2.0 * eps);
            let a = analytic.as_standard_layout().as_slice().expect("standard")[j];
            let err = (a - numeric).abs() / numeric.abs().max(1.0);
            if err > worst.max_error || err.is_nan() {
                worst = GradCheck { max_error: err, at: (i, j), analytic: a, numeric };
            }
        }
    }
    worst
}

/// Checks the gradients of a scalar `loss()` with respect to every trainable parameter in `params`
/// (every entry of tensors up to `max_entries`, an even spread of entries beyond).
pub fn check_params(
    params: &crate::Params<f64>,
    eps: f64,
    max_entries: usize,
    loss: impl Fn() -> Tensor<f64>,
) -> (GradCheck, String) {
    let grads = loss().backward();
    let mut worst = GradCheck { max_error: 0.0, at: (0, 0), analytic: 0.0, numeric: 0.0 };
    let mut worst_name = String::new();
    for (pi, (name, var)) in params.iter().into_iter().enumerate() {
        if !var.is_trainable() {
            continue;
        }
        let analytic = grads.get_id(var.id()).cloned().unwrap_or_else(|| ArrayD::zeros(ndarray::IxDyn(&var.shape())));
        let analytic = analytic.as_standard_layout().into_owned();
        let n = var.len();
        let stride = n.div_ceil(max_entries.max(1)).max(1);
        for j in (0..n).step_by(stride) {
            let original = var.value();
            let eval = |delta: f64| {
                let mut a = original.clone();
                a.as_slice_mut().expect("standard")[j] += delta;
                var.set(a);
                no_grad(|| loss().item())
            };
            let numeric = (eval(eps) - eval(-eps)) / (2.0 * eps);
            var.set(original);
            let a = analytic.as_slice().expect("standard")[j];
            let err = (a - numeric).abs() / numeric.abs().max(1.0);
            if err > worst.max_error || err.is_nan() {
                worst = GradCheck { max_error: err, at: (pi, j), analytic: a, numeric };
                worst_name = name.clone();
            }
        }
    }
    (worst, worst_name)
}
