//! Neural-network ops with fused backward passes: softmax, log-softmax, layer norm, dropout.

use ndarray::{ArrayD, Axis, IxDyn, Zip};
use rand::RngExt;
use rayon::prelude::*;

use super::{PAR_THRESHOLD, axis_index};
use crate::{Float, Tensor};

fn softmax_lane<F: Float>(src: ndarray::ArrayView1<F>, mut dst: ndarray::ArrayViewMut1<F>, log: bool) {
    let m = src.iter().copied().fold(F::neg_infinity(), F::max);
    if m == F::neg_infinity() {
        // A fully masked row: uniform (softmax) / -inf (log-softmax) would poison training; use zeros.
        dst.fill(if log { F::neg_infinity() } else { F::zero() });
        return;
    }
    let mut sum = F::zero();
    for (d, &s) in dst.iter_mut().zip(src.iter()) {
        let e = (s - m).exp();
        *d = e;
        sum += e;
    }
    if log {
        let lse = m + sum.ln();
        for (d, &s) in dst.iter_mut().zip(src.iter()) {
            *d = s - lse;
        }
    } else {
        let inv = F::one() / sum;
        dst.mapv_inplace(|e| e * inv);
    }
}

/// Backward of `y = softmax(scale * x)` along `axis`: `dx = scale * y * (g - sum(g * y))`.
fn softmax_grad<F: Float>(g: &ArrayD<F>, y: &ArrayD<F>, axis: usize, scale: F) -> ArrayD<F> {
    let mut dx = ArrayD::<F>::zeros(g.raw_dim());
    let z = Zip::from(dx.lanes_mut(Axis(axis))).and(g.lanes(Axis(axis))).and(y.lanes(Axis(axis)));
    let f = |mut d: ndarray::ArrayViewMut1<F>, g: ndarray::ArrayView1<F>, y: ndarray::ArrayView1<F>| {
        let dot: F = g.iter().zip(y.iter()).map(|(&g, &y)| g * y).sum();
        Zip::from(&mut d).and(&g).and(&y).for_each(|d, &g, &y| *d = scale * y * (g - dot));
    };
    if g.len() >= PAR_THRESHOLD {
        z.par_for_each(f)
    } else {
        z.for_each(f)
    }
    dx
}

fn softmax_array<F: Float>(x: &ArrayD<F>, axis: usize, log: bool) -> ArrayD<F> {
    let mut out = ArrayD::<F>::zeros(x.raw_dim());
    let z = Zip::from(out.lanes_mut(Axis(axis))).and(x.lanes(Axis(axis)));
    if x.len() >= PAR_THRESHOLD {
        z.par_for_each(|d, s| softmax_lane(s, d, log));
    } else {
        z.for_each(|d, s| softmax_lane(s, d, log));
    }
    out
}

impl<F: Float> Tensor<F> {
    /// Softmax along `axis` (rows that are all `-inf` give zeros).
    #[track_caller]
    pub fn softmax(&self, axis: isize) -> Tensor<F> {
        let a = axis_index("softmax", axis, self.ndim());
        let y = softmax_array(self.value(), a, false);
        let yc = y.clone();
        Tensor::from_op(y, &[self], move |g, _| vec![Some(softmax_grad(g, &yc, a, F::one()))])
    }

    /// Log-softmax along `axis`.
    #[track_caller]
    pub fn log_softmax(&self, axis: isize) -> Tensor<F> {
        let a = axis_index("log_softmax", axis, self.ndim());
        let y = softmax_array(self.value(), a, true);
        let yc = y.clone();
        Tensor::from_op(y, &[self], move |g, _| {
            // dx = g - softmax * sum(g)
            let mut dx = ArrayD::<F>::zeros(g.raw_dim());
            let z = Zip::from(dx.lanes_mut(Axis(a))).and(g.lanes(Axis(a))).and(yc.lanes(Axis(a)));
            let f = |mut d: ndarray::ArrayViewMut1<F>, g: ndarray::ArrayView1<F>, y: ndarray::ArrayView1<F>| {
                let s: F = g.sum();
                Zip::from(&mut d).and(&g).and(&y).for_each(|d, &g, &y| *d = g - y.exp() * s);
            };
            if g.len() >= PAR_THRESHOLD {
                z.par_for_each(f)
            } else {
                z.for_each(f)
            }
            vec![Some(dx)]
        })
    }

    /// Layer normalisation over the last axis with affine `weight` and `bias` (shape `[d]`).
    #[track_caller]
    pub fn layer_norm(&self, weight: &Tensor<F>, bias: &Tensor<F>, eps: f64) -> Tensor<F> {
        let d = *self.shape().last().expect("layer_norm on a 0-d tensor");
        assert!(
            weight.shape() == [d] && bias.shape() == [d],
            "layer_norm: weight {:?} / bias {:?} for last dim {d}",
            weight.shape(),
            bias.shape()
        );
        let x = self.value().as_standard_layout();
        let rows = x.len() / d.max(1);
        let xs = x.as_slice().expect("standard");
        let (w, b) = (weight.value().as_slice().expect("1-d").to_vec(), bias.value().as_slice().expect("1-d").to_vec());
        let mut out = vec![F::zero(); x.len()];
        let mut xhat = vec![F::zero(); x.len()];
        let mut rstd = vec![F::zero(); rows];
        let eps = F::of(eps);
        let row_fn = |((o, xh), (xr, r)): ((&mut [F], &mut [F]), (&[F], &mut F))| {
            super::simd(|| layer_norm_row(o, xh, xr, r, (&w, &b), eps))
        };
        #[inline(always)]
        fn layer_norm_row<F: Float>(o: &mut [F], xh: &mut [F], xr: &[F], r: &mut F, (w, b): (&[F], &[F]), eps: F) {
            let d = xr.len();
            let n = F::of(d as f64);
            let mean = xr.iter().copied().sum::<F>() / n;
            let var = xr.iter().map(|&v| (v - mean) * (v - mean)).sum::<F>() / n;
            let rs = F::one() / (var + eps).sqrt();
            *r = rs;
            for j in 0..d {
                let h = (xr[j] - mean) * rs;
                xh[j] = h;
                o[j] = h * w[j] + b[j];
            }
        }
        if x.len() >= PAR_THRESHOLD {
            out.par_chunks_mut(d)
                .zip(xhat.par_chunks_mut(d))
                .zip(xs.par_chunks(d).zip(rstd.par_iter_mut()))
                .for_each(row_fn);
        } else {
            out.chunks_mut(d).zip(xhat.chunks_mut(d)).zip(xs.chunks(d).zip(rstd.iter_mut())).for_each(row_fn);
        }
        let v = ArrayD::from_shape_vec(self.value().raw_dim(), out).expect("size");
        let in_shape = self.shape().to_vec();
        let wc = weight.clone();
        Tensor::from_op(v, &[self, weight, bias], move |g, needs| {
            let g = g.as_standard_layout();
            let gs = g.as_slice().expect("standard");
            let w = wc.value().as_slice().expect("1-d");
            let gx = needs[0].then(|| {
                let mut dx = vec![F::zero(); gs.len()];
                let f = |(dxr, (gr, (xh, &rs))): (&mut [F], (&[F], (&[F], &F)))| {
                    super::simd(|| layer_norm_grad_row(dxr, gr, xh, rs, w))
                };
                #[inline(always)]
                fn layer_norm_grad_row<F: Float>(dxr: &mut [F], gr: &[F], xh: &[F], rs: F, w: &[F]) {
                    let d = gr.len();
                    let n = F::of(d as f64);
                    let mut mean_dxh = F::zero();
                    let mut mean_dxh_xh = F::zero();
                    for j in 0..d {
                        let dxh = gr[j] * w[j];
                        mean_dxh += dxh;
                        mean_dxh_xh += dxh * xh[j];
                    }
                    mean_dxh /= n;
                    mean_dxh_xh /= n;
                    for j in 0..d {
                        dxr[j] = rs * (gr[j] * w[j] - mean_dxh - xh[j] * mean_dxh_xh);
                    }
                }
                if gs.len() >= PAR_THRESHOLD {
                    dx.par_chunks_mut(d).zip(gs.par_chunks(d).zip(xhat.par_chunks(d).zip(rstd.par_iter()))).for_each(f);
                } else {
                    dx.chunks_mut(d).zip(gs.chunks(d).zip(xhat.chunks(d).zip(rstd.iter()))).for_each(f);
                }
                ArrayD::from_shape_vec(IxDyn(&in_shape), dx).expect("size")
            });
            // Parameter gradients: fixed-size row blocks summed in order, so results do not depend on threads.
            let (gw, gb) = if needs[1] || needs[2] {
                let block = 256 * d;
                let partial: Vec<(Vec<F>, Vec<F>)> = gs
                    .par_chunks(block)
                    .zip(xhat.par_chunks(block))
                    .map(|(gb, xb)| {
                        let mut dw = vec![F::zero(); d];
                        let mut db = vec![F::zero(); d];
                        for (gr, xr) in gb.chunks(d).zip(xb.chunks(d)) {
                            for j in 0..d {
                                dw[j] += gr[j] * xr[j];
                                db[j] += gr[j];
                            }
                        }
                        (dw, db)
                    })
                    .collect();
                let mut dw = vec![F::zero(); d];
                let mut db = vec![F::zero(); d];
                for (pw, pb) in partial {
                    for j in 0..d {
                        dw[j] += pw[j];
                        db[j] += pb[j];
                    }
                }
                (
                    needs[1].then(|| ArrayD::from_shape_vec(IxDyn(&[d]), dw).expect("size")),
                    needs[2].then(|| ArrayD::from_shape_vec(IxDyn(&[d]), db).expect("size")),
                )
            } else {
                (None, None)
            };
            vec![gx, gw, gb]
        })
    }

    /// Inverted dropout: zeroes each entry with probability `p` and scales the rest by `1/(1-p)`.
    /// The mask comes from `rng`, so the same seed gives the same mask.
    #[track_caller]
    pub fn dropout(&self, p: f64, rng: &mut crate::Rng) -> Tensor<F> {
        assert!((0.0..1.0).contains(&p), "dropout: p = {p} outside [0, 1)");
        if p == 0.0 {
            return self.clone();
        }
        let scale = F::of(1.0 / (1.0 - p));
        let mask: ArrayD<F> = ArrayD::from_shape_simple_fn(self.value().raw_dim(), || {
            if rng.random::<f64>() < p { F::zero() } else { scale }
        });
        let v = super::zip_map(self.value(), &mask, |x, m| x * m);
        Tensor::from_op(v, &[self], move |g, _| vec![Some(super::zip_map(g, &mask, |g, m| g * m))])
    }
}

impl<F: Float> Tensor<F> {
    /// `softmax(scale * x)` over the last axis with entries where `mask` (broadcast to `x`) is true excluded:
    /// attention's scaling, masking and normalisation in one pass (rows with every entry masked give zeros).
    #[track_caller]
    pub fn scaled_masked_softmax(&self, scale: f64, mask: Option<&ArrayD<bool>>) -> Tensor<F> {
        let d = *self.shape().last().expect("scaled_masked_softmax on a 0-d tensor");
        let x = self.value().as_standard_layout();
        let mask = mask.map(|m| {
            m.broadcast(x.raw_dim()).unwrap_or_else(|| {
                panic!("scaled_masked_softmax: mask {:?} does not broadcast to {:?}", m.shape(), x.shape())
            })
        });
        let s = F::of(scale);
        let mut y = ArrayD::<F>::zeros(x.raw_dim());
        let row =
            |mut yr: ndarray::ArrayViewMut1<F>, xr: ndarray::ArrayView1<F>, mr: Option<ndarray::ArrayView1<bool>>| {
                let keep = |j: usize| mr.as_ref().is_none_or(|m| !m[j]);
                let mut mx = F::neg_infinity();
                for j in 0..d {
                    if keep(j) {
                        mx = mx.max(xr[j] * s);
                    }
                }
                if mx == F::neg_infinity() {
                    return;
                }
                let mut sum = F::zero();
                for j in 0..d {
                    let e = if keep(j) { (xr[j] * s - mx).exp_fast() } else { F::zero() };
                    yr[j] = e;
                    sum += e;
                }
                let inv = F::one() / sum;
                yr.mapv_inplace(|e| e * inv);
            };
        match &mask {
            Some(m) => {
                Zip::from(y.rows_mut()).and(x.rows()).and(m.rows()).par_for_each(|yr, xr, mr| row(yr, xr, Some(mr)))
            }
            None => Zip::from(y.rows_mut()).and(x.rows()).par_for_each(|yr, xr| row(yr, xr, None)),
        }
        let yc = y.clone();
        // Masked entries have y = 0 and so get no gradient.
        let last = yc.ndim() - 1;
        Tensor::from_op(y, &[self], move |g, _| vec![Some(softmax_grad(g, &yc, last, s))])
    }
}
