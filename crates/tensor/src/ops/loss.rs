//! Losses: cross-entropy with integer labels (fused) and soft targets, distillation, mean squared error.

use ndarray::{ArrayD, Axis, IxDyn};
use rayon::prelude::*;

use crate::{Float, Tensor};

impl<F: Float> Tensor<F> {
    /// Mean cross-entropy of `logits: [.., classes]` against integer `labels` (one per row).
    /// Rows whose label equals `ignore_index` (if given) count neither in the loss nor in the mean.
    ///
    /// # Panics
    /// If the number of labels differs from the number of rows, or a label is out of range.
    #[track_caller]
    pub fn cross_entropy_with_ignore(&self, labels: &[usize], ignore_index: Option<usize>) -> Tensor<F> {
        let c = *self.shape().last().expect("cross_entropy on a 0-d tensor");
        // Kept for the backward pass as a handle, not a copy.
        let x = super::row_major(self);
        let rows = x.len() / c.max(1);
        assert_eq!(labels.len(), rows, "cross_entropy: {} labels for {rows} rows of {:?}", labels.len(), self.shape());
        for &l in labels {
            assert!(l < c || Some(l) == ignore_index, "cross_entropy: label {l} out of range for {c} classes");
        }
        let xs = x.value().as_slice().expect("standard");
        let counted = labels.iter().filter(|&&l| Some(l) != ignore_index).count().max(1);
        // Per-row log-sum-exp, kept for the backward pass.
        let lse: Vec<F> = xs
            .par_chunks(c)
            .map(|r| {
                let m = r.iter().copied().fold(F::neg_infinity(), F::max);
                m + r.iter().map(|&v| (v - m).exp()).sum::<F>().ln()
            })
            .collect();
        let mut total = 0.0f64;
        for (r, (&l, &z)) in labels.iter().zip(&lse).enumerate() {
            if Some(l) != ignore_index {
                total += (z - xs[r * c + l]).to_f64_lossy();
            }
        }
        let v = ArrayD::from_elem(IxDyn(&[]), F::of(total / counted as f64));
        let in_shape = self.shape().to_vec();
        let labels = labels.to_vec();
        Tensor::from_op(v, &[self], move |g, _| {
            let scale = g.iter().next().copied().unwrap_or(F::zero()) / F::of(counted as f64);
            let xs = x.value().as_slice().expect("standard");
            let mut dx = vec![F::zero(); xs.len()];
            dx.par_chunks_mut(c).zip(xs.par_chunks(c)).enumerate().for_each(|(r, (d, xr))| {
                if Some(labels[r]) == ignore_index {
                    return;
                }
                for j in 0..c {
                    d[j] = (xr[j] - lse[r]).exp() * scale;
                }
                d[labels[r]] -= scale;
            });
            vec![Some(ArrayD::from_shape_vec(IxDyn(&in_shape), dx).expect("size"))]
        })
    }

    /// Mean cross-entropy against integer labels (see [`Tensor::cross_entropy_with_ignore`]).
    #[track_caller]
    pub fn cross_entropy(&self, labels: &[usize]) -> Tensor<F> {
        self.cross_entropy_with_ignore(labels, None)
    }

    /// Mean over rows of `-sum_c targets_c * log_softmax(logits)_c` for soft targets (probabilities,
    /// same shape as the logits). Gradients flow to both.
    #[track_caller]
    pub fn cross_entropy_soft(&self, targets: &Tensor<F>) -> Tensor<F> {
        assert_eq!(
            self.shape(),
            targets.shape(),
            "cross_entropy_soft: logits {:?} vs targets {:?}",
            self.shape(),
            targets.shape()
        );
        let rows = (self.len() / self.shape().last().copied().unwrap_or(1).max(1)).max(1);
        let per_row = (targets * self.log_softmax(-1)).sum(&[-1], false);
        per_row.sum_all().mul_scalar(-F::one() / F::of(rows as f64))
    }

    /// Distillation loss: cross-entropy between the teacher's and the student's softmax at temperature `tau`,
    /// `CE(softmax(teacher / tau), softmax(self / tau))`, scaled by `tau^2` so gradient magnitudes do not
    /// depend on `tau` (Hinton et al.). The teacher gets no gradient.
    pub fn distillation_loss(&self, teacher_logits: &Tensor<F>, tau: f64) -> Tensor<F> {
        let inv = F::of(1.0 / tau);
        let targets = teacher_logits.detach().mul_scalar(inv).softmax(-1).detach();
        self.mul_scalar(inv).cross_entropy_soft(&targets).mul_scalar(F::of(tau * tau))
    }

    /// Mean squared error against `target` (broadcast).
    #[track_caller]
    pub fn mse(&self, target: &Tensor<F>) -> Tensor<F> {
        (self - target).square().mean_all()
    }
}

/// Index of the largest entry of each row of a `[rows, classes]` array.
pub fn argmax_rows<F: Float>(x: &ArrayD<F>) -> Vec<usize> {
    x.map_axis(Axis(x.ndim() - 1), |r| {
        let mut best = 0;
        for (i, &v) in r.iter().enumerate() {
            if v > r[best] {
                best = i;
            }
        }
        best
    })
    .iter()
    .copied()
    .collect()
}
