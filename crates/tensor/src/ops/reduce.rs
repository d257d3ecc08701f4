//! Reductions over axes, with `keepdim`.

use ndarray::{ArrayD, Axis, IxDyn, Zip};

use super::axis_index;
use crate::{Float, Tensor};

fn normalise_axes(op: &str, axes: &[isize], ndim: usize) -> Vec<usize> {
    let mut out: Vec<usize> = axes.iter().map(|&a| axis_index(op, a, ndim)).collect();
    out.sort_unstable();
    out.dedup();
    out
}

/// The shape with the reduced axes set to 1.
fn kept_shape(shape: &[usize], axes: &[usize]) -> Vec<usize> {
    shape.iter().enumerate().map(|(i, &d)| if axes.contains(&i) { 1 } else { d }).collect()
}

impl<F: Float> Tensor<F> {
    /// Sum over `axes` (negative counts from the end).
    #[track_caller]
    pub fn sum(&self, axes: &[isize], keepdim: bool) -> Tensor<F> {
        let axes = normalise_axes("sum", axes, self.ndim());
        let mut v = self.value().clone();
        for &a in axes.iter().rev() {
            v = v.sum_axis(Axis(a));
        }
        let kept = kept_shape(self.shape(), &axes);
        if keepdim {
            v = v.into_shape_with_order(IxDyn(&kept)).expect("same size");
        }
        let in_shape = self.shape().to_vec();
        Tensor::from_op(v, &[self], move |g, _| {
            let g = g.view().into_shape_with_order(IxDyn(&kept)).expect("same size");
            vec![Some(g.broadcast(IxDyn(&in_shape)).expect("broadcast").to_owned())]
        })
    }

    /// Sum of all elements, as a 0-d tensor.
    pub fn sum_all(&self) -> Tensor<F> {
        let axes: Vec<isize> = (0..self.ndim() as isize).collect();
        self.sum(&axes, false)
    }

    #[track_caller]
    pub fn mean(&self, axes: &[isize], keepdim: bool) -> Tensor<F> {
        let ax = normalise_axes("mean", axes, self.ndim());
        let count: usize = ax.iter().map(|&a| self.shape()[a]).product();
        self.sum(axes, keepdim).mul_scalar(F::one() / F::of(count as f64))
    }

    pub fn mean_all(&self) -> Tensor<F> {
        self.sum_all().mul_scalar(F::one() / F::of(self.len() as f64))
    }

    /// Maximum over one axis; the gradient goes to the first maximal entry.
    #[track_caller]
    pub fn max(&self, axis: isize, keepdim: bool) -> Tensor<F> {
        let a = axis_index("max", axis, self.ndim());
        let x = self.value();
        let argmax: ArrayD<usize> = x.map_axis(Axis(a), |lane| {
            let mut best = 0;
            for (i, &v) in lane.iter().enumerate() {
                if v > lane[best] || (v.is_nan() && !lane[best].is_nan()) {
                    best = i;
                }
            }
            best
        });
        let mut v = Zip::from(&argmax).and(x.lanes(Axis(a))).map_collect(|&i, lane| lane[i]);
        if keepdim {
            v = v.insert_axis(Axis(a));
        }
        let in_shape = self.shape().to_vec();
        Tensor::from_op(v, &[self], move |g, _| {
            let g = if keepdim { g.index_axis(Axis(a), 0).to_owned() } else { g.clone() };
            let mut out = ArrayD::<F>::zeros(IxDyn(&in_shape));
            Zip::from(out.lanes_mut(Axis(a))).and(&argmax).and(&g).for_each(|mut lane, &i, &gv| lane[i] = gv);
            vec![Some(out)]
        })
    }

    /// `log(sum(exp(x)))` over one axis, computed stably.
    #[track_caller]
    pub fn logsumexp(&self, axis: isize, keepdim: bool) -> Tensor<F> {
        let a = axis_index("logsumexp", axis, self.ndim());
        let x = self.value();
        let lse: ArrayD<F> = x.map_axis(Axis(a), |lane| {
            let m = lane.iter().copied().fold(F::neg_infinity(), F::max);
            if m == F::neg_infinity() {
                return m;
            }
            m + lane.iter().map(|&v| (v - m).exp()).sum::<F>().ln()
        });
        let lse_keep = lse.clone().insert_axis(Axis(a));
        let v = if keepdim { lse_keep.clone() } else { lse };
        let xc = self.clone();
        Tensor::from_op(v, &[self], move |g, _| {
            let g = if keepdim { g.clone() } else { g.clone().insert_axis(Axis(a)) };
            // d lse / dx = softmax(x)
            let mut out = xc.value().clone();
            Zip::from(&mut out)
                .and_broadcast(&lse_keep)
                .and_broadcast(&g)
                .for_each(|o, &l, &g| *o = g * (*o - l).exp());
            vec![Some(out)]
        })
    }
}
