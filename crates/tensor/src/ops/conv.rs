//! Images in NCHW layout (as PyTorch): conv2d as one im2col + GEMM per image (the image's columns stay in cache
//! and its product lands in NCHW order), max/avg pooling, nearest and bilinear upsampling.

use ndarray::{ArrayD, IxDyn};
use rayon::prelude::*;

use super::matmul::{gemm_into, gemm_serial};
use crate::{Float, Tensor};

/// Stride and zero padding of a 2-D convolution.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Conv2dSpec {
    pub stride: usize,
    pub padding: usize,
}

impl Default for Conv2dSpec {
    fn default() -> Self {
        Conv2dSpec { stride: 1, padding: 0 }
    }
}

#[derive(Clone, Copy)]
struct Geom {
    c: usize,
    h: usize,
    w: usize,
    kh: usize,
    kw: usize,
    oh: usize,
    ow: usize,
    stride: usize,
    pad: usize,
}

impl Geom {
    fn cols(&self) -> usize {
        self.c * self.kh * self.kw
    }
    fn positions(&self) -> usize {
        self.oh * self.ow
    }
}

/// Output columns `lo..hi` whose input column `ox * stride + kx - pad` lies inside `0..w` (the rest read padding).
fn valid_columns(g: Geom, kx: usize) -> (usize, usize) {
    let hi = if g.w + g.pad > kx { (g.w + g.pad - kx).div_ceil(g.stride).min(g.ow) } else { 0 };
    let lo = if kx >= g.pad { 0 } else { (g.pad - kx).div_ceil(g.stride) };
    (lo.min(hi), hi)
}

/// The input row read by output row `oy` at kernel row `ky`, if it is not padding.
fn input_row(g: Geom, oy: usize, ky: usize) -> Option<usize> {
    (oy * g.stride + ky).checked_sub(g.pad).filter(|&iy| iy < g.h)
}

/// The kernel taps `(channel, ky, kx)` in the order of the weight's `[c, kh, kw]` axes (the rows of im2col).
fn kernel_taps(g: Geom) -> impl Iterator<Item = (usize, usize, usize)> {
    (0..g.c).flat_map(move |ch| (0..g.kh).flat_map(move |ky| (0..g.kw).map(move |kx| (ch, ky, kx))))
}

/// One image's im2col, one row per kernel tap and one column per output position: `[c * kh * kw, oh * ow]`
/// (so `weight [o, c * kh * kw] @ cols` is the image's output in NCHW order). With stride 1 each output row is a
/// contiguous copy of an input row.
fn im2col_image<F: Float>(xb: &[F], g: Geom, cols: &mut [F]) {
    let p = g.positions();
    let taps = cols.chunks_mut(p);
    for (row, (ch, ky, kx)) in taps.zip(kernel_taps(g)) {
        let plane = &xb[ch * g.h * g.w..(ch + 1) * g.h * g.w];
        let (lo, hi) = valid_columns(g, kx);
        for (oy, dst) in row.chunks_mut(g.ow).enumerate() {
            let Some(iy) = input_row(g, oy, ky) else {
                dst.fill(F::zero());
                continue;
            };
            let src = &plane[iy * g.w..(iy + 1) * g.w];
            dst[..lo].fill(F::zero());
            dst[hi..].fill(F::zero());
            if g.stride == 1 {
                let first = lo + kx - g.pad;
                dst[lo..hi].copy_from_slice(&src[first..first + hi - lo]);
            } else {
                for (ox, d) in dst[lo..hi].iter_mut().enumerate() {
                    *d = src[(lo + ox) * g.stride + kx - g.pad];
                }
            }
        }
    }
}

/// Adjoint of [`im2col_image`]: adds each tap's column gradients back into the image gradient `xb`.
fn col2im_image_add<F: Float>(cols: &[F], g: Geom, xb: &mut [F]) {
    let p = g.positions();
    for (row, (ch, ky, kx)) in cols.chunks(p).zip(kernel_taps(g)) {
        let plane = &mut xb[ch * g.h * g.w..(ch + 1) * g.h * g.w];
        let (lo, hi) = valid_columns(g, kx);
        for (oy, src) in row.chunks(g.ow).enumerate() {
            let Some(iy) = input_row(g, oy, ky) else { continue };
            let dst = &mut plane[iy * g.w..(iy + 1) * g.w];
            if g.stride == 1 {
                let first = lo + kx - g.pad;
                dst[first..first + hi - lo].iter_mut().zip(&src[lo..hi]).for_each(|(d, &v)| *d += v);
            } else {
                for (ox, &v) in src[lo..hi].iter().enumerate() {
                    dst[(lo + ox) * g.stride + kx - g.pad] += v;
                }
            }
        }
    }
}

fn arr2<F: Float>(v: &[F], r: usize, c: usize) -> ndarray::ArrayView2<'_, F> {
    ndarray::ArrayView2::from_shape((r, c), v).expect("size")
}

fn arr2_mut<F: Float>(v: &mut [F], r: usize, c: usize) -> ndarray::ArrayViewMut2<'_, F> {
    ndarray::ArrayViewMut2::from_shape((r, c), v).expect("size")
}

/// Images per task of the weight-gradient sum: partial sums over fixed groups, added in order, so the result
/// does not depend on the thread count.
const WEIGHT_GRAD_GROUP: usize = 8;

/// With this many images or more, each image is one task with single-threaded products; below it the images
/// run in turn and each product is split across threads (a function of the shape only: deterministic).
const IMAGES_PER_TASK_FROM: usize = 4;

/// `c = a @ b + beta * c`, single-threaded when the caller parallelises over images.
fn conv_gemm<F: Float>(
    per_image_tasks: bool,
    a: ndarray::ArrayView2<F>,
    b: ndarray::ArrayView2<F>,
    beta: F,
    c: ndarray::ArrayViewMut2<F>,
) {
    if per_image_tasks { gemm_serial(a, b, beta, c) } else { gemm_into(a, b, beta, c) }
}

/// Runs `f(image index, image's chunk, scratch)` over `out`'s chunks of `chunk` elements: one task per image
/// (with its own scratch buffer of `scratch` elements) when `parallel`, else in order.
fn for_each_image<F: Float>(
    out: &mut [F],
    chunk: usize,
    scratch: usize,
    parallel: bool,
    f: impl Fn(usize, &mut [F], &mut Vec<F>) + Sync + Send,
) {
    if parallel {
        out.par_chunks_mut(chunk.max(1))
            .enumerate()
            .for_each_init(|| vec![F::zero(); scratch], |buf, (b, o)| f(b, o, buf));
    } else {
        let mut buf = vec![F::zero(); scratch];
        out.chunks_mut(chunk.max(1)).enumerate().for_each(|(b, o)| f(b, o, &mut buf));
    }
}

impl<F: Float> Tensor<F> {
    /// 2-D convolution (cross-correlation) of `self: [n, c, h, w]` with `weight: [o, c, kh, kw]` and optional
    /// `bias: [o]`. Returns `[n, o, oh, ow]`.
    #[track_caller]
    pub fn conv2d(&self, weight: &Tensor<F>, bias: Option<&Tensor<F>>, spec: Conv2dSpec) -> Tensor<F> {
        assert!(
            self.ndim() == 4 && weight.ndim() == 4,
            "conv2d: input {:?}, weight {:?} must be 4-d",
            self.shape(),
            weight.shape()
        );
        let (n, c, h, w) = (self.shape()[0], self.shape()[1], self.shape()[2], self.shape()[3]);
        let (o, wc, kh, kw) = (weight.shape()[0], weight.shape()[1], weight.shape()[2], weight.shape()[3]);
        assert_eq!(c, wc, "conv2d: input has {c} channels, weight expects {wc}");
        assert!(spec.stride > 0, "conv2d: stride 0");
        assert!(h + 2 * spec.padding >= kh && w + 2 * spec.padding >= kw, "conv2d: kernel larger than padded input");
        if let Some(b) = bias {
            assert_eq!(b.shape(), [o], "conv2d: bias shape {:?} for {o} output channels", b.shape());
        }
        let oh = (h + 2 * spec.padding - kh) / spec.stride + 1;
        let ow = (w + 2 * spec.padding - kw) / spec.stride + 1;
        let g = Geom { c, h, w, kh, kw, oh, ow, stride: spec.stride, pad: spec.padding };
        let (p, taps, image) = (g.positions(), g.cols(), c * h * w);
        let per_image_tasks = n >= IMAGES_PER_TASK_FROM;
        let x = super::row_major(self);
        let wmat = weight.value().as_standard_layout().into_owned();
        let bias_v = bias.map(|b| b.value().as_slice().expect("1-d").to_vec());
        let mut y = vec![F::zero(); n * o * p];
        {
            let (xs, ws) = (x.value().as_slice().expect("standard"), wmat.as_slice().expect("standard"));
            // Per image: y_b [o, p] = W [o, taps] @ cols_b [taps, p] (+ bias per output channel); y starts at zero,
            // so the product is added (beta 1) instead of BLAS zeroing it again.
            for_each_image(&mut y, o * p, taps * p, per_image_tasks, |b, yb, cols| {
                im2col_image(&xs[b * image..(b + 1) * image], g, cols);
                conv_gemm(per_image_tasks, arr2(ws, o, taps), arr2(cols, taps, p), F::one(), arr2_mut(yb, o, p));
                if let Some(bv) = &bias_v {
                    yb.chunks_mut(p).zip(bv).for_each(|(plane, &bias)| plane.iter_mut().for_each(|v| *v += bias));
                }
            });
        }
        let v = ArrayD::from_shape_vec(IxDyn(&[n, o, oh, ow]), y).expect("size");
        let mut inputs = vec![self, weight];
        if let Some(b) = bias {
            inputs.push(b);
        }
        let has_bias = bias.is_some();
        let w_shape = weight.shape().to_vec();
        // The weight gradient recomputes each image's columns instead of keeping all of them.
        let keep_x = if weight.is_tracked() { Some(x) } else { None };
        Tensor::from_op(v, &inputs, move |gy, needs| {
            let gy = gy.as_standard_layout();
            let gs = gy.as_slice().expect("standard");
            let ws = wmat.as_slice().expect("standard");
            let gx = needs[0].then(|| {
                // Per image: dcols_b [taps, p] = W^T [taps, o] @ dy_b [o, p], then scattered back.
                let mut dx = vec![F::zero(); n * image];
                for_each_image(&mut dx, image, taps * p, per_image_tasks, |b, dxb, dcols| {
                    let gb = arr2(&gs[b * o * p..(b + 1) * o * p], o, p);
                    conv_gemm(per_image_tasks, arr2(ws, o, taps).t(), gb, F::zero(), arr2_mut(dcols, taps, p));
                    col2im_image_add(dcols, g, dxb);
                });
                ArrayD::from_shape_vec(IxDyn(&[n, c, h, w]), dx).expect("size")
            });
            let gw = needs[1].then(|| {
                // dW = sum_b dy_b [o, p] @ cols_b^T [p, taps], in fixed groups of images.
                let xs = keep_x.as_ref().expect("kept for weight grad").value().as_slice().expect("standard");
                let group_sum = |first: usize| {
                    let mut acc = vec![F::zero(); o * taps];
                    let mut cols = vec![F::zero(); taps * p];
                    for b in first..(first + WEIGHT_GRAD_GROUP).min(n) {
                        im2col_image(&xs[b * image..(b + 1) * image], g, &mut cols);
                        let gb = arr2(&gs[b * o * p..(b + 1) * o * p], o, p);
                        conv_gemm(per_image_tasks, gb, arr2(&cols, taps, p).t(), F::one(), arr2_mut(&mut acc, o, taps));
                    }
                    acc
                };
                let firsts: Vec<usize> = (0..n).step_by(WEIGHT_GRAD_GROUP).collect();
                let partial: Vec<Vec<F>> = if per_image_tasks {
                    firsts.into_par_iter().map(group_sum).collect()
                } else {
                    firsts.into_iter().map(group_sum).collect()
                };
                let mut total = vec![F::zero(); o * taps];
                for part in partial {
                    total.iter_mut().zip(&part).for_each(|(t, &v)| *t += v);
                }
                ArrayD::from_shape_vec(IxDyn(&w_shape), total).expect("size")
            });
            let mut out = vec![gx, gw];
            if has_bias {
                out.push(needs[2].then(|| {
                    // Per-image channel sums in parallel, then added over images in order.
                    let per_image: Vec<Vec<F>> = gs
                        .par_chunks(o * p)
                        .map(|img| img.chunks(p).map(|plane| plane.iter().copied().sum::<F>()).collect())
                        .collect();
                    let mut gb = vec![F::zero(); o];
                    for sums in per_image {
                        gb.iter_mut().zip(&sums).for_each(|(t, &v)| *t += v);
                    }
                    ArrayD::from_shape_vec(IxDyn(&[o]), gb).expect("size")
                }));
            }
            out
        })
    }

    /// Max pooling over `k x k` windows with the given stride (no padding); NCHW.
    #[track_caller]
    pub fn max_pool2d(&self, k: usize, stride: usize) -> Tensor<F> {
        self.pool2d(k, stride, true)
    }

    /// Average pooling over `k x k` windows with the given stride (no padding); NCHW.
    #[track_caller]
    pub fn avg_pool2d(&self, k: usize, stride: usize) -> Tensor<F> {
        self.pool2d(k, stride, false)
    }

    #[track_caller]
    fn pool2d(&self, k: usize, stride: usize, max: bool) -> Tensor<F> {
        assert_eq!(self.ndim(), 4, "pool2d: input {:?} must be NCHW", self.shape());
        assert!(k > 0 && stride > 0, "pool2d: kernel and stride must be positive");
        let (n, c, h, w) = (self.shape()[0], self.shape()[1], self.shape()[2], self.shape()[3]);
        assert!(h >= k && w >= k, "pool2d: kernel {k} larger than {h}x{w}");
        let (oh, ow) = ((h - k) / stride + 1, (w - k) / stride + 1);
        let x = self.value().as_standard_layout();
        let xs = x.as_slice().expect("standard");
        let planes = n * c;
        let mut out = vec![F::zero(); planes * oh * ow];
        let mut arg = vec![0usize; if max { planes * oh * ow } else { 0 }];
        let inv = F::one() / F::of((k * k) as f64);
        if max {
            out.par_chunks_mut(oh * ow).zip(arg.par_chunks_mut(oh * ow)).enumerate().for_each(|(p, (o, a))| {
                let plane = &xs[p * h * w..(p + 1) * h * w];
                for oy in 0..oh {
                    for ox in 0..ow {
                        let mut best = (oy * stride) * w + ox * stride;
                        for ky in 0..k {
                            for kx in 0..k {
                                let idx = (oy * stride + ky) * w + ox * stride + kx;
                                if plane[idx] > plane[best] {
                                    best = idx;
                                }
                            }
                        }
                        o[oy * ow + ox] = plane[best];
                        a[oy * ow + ox] = best;
                    }
                }
            });
        } else {
            out.par_chunks_mut(oh * ow).enumerate().for_each(|(p, o)| {
                let plane = &xs[p * h * w..(p + 1) * h * w];
                for oy in 0..oh {
                    for ox in 0..ow {
                        let mut s = F::zero();
                        for ky in 0..k {
                            for kx in 0..k {
                                s += plane[(oy * stride + ky) * w + ox * stride + kx];
                            }
                        }
                        o[oy * ow + ox] = s * inv;
                    }
                }
            });
        }
        let v = ArrayD::from_shape_vec(IxDyn(&[n, c, oh, ow]), out).expect("size");
        Tensor::from_op(v, &[self], move |g, _| {
            let g = g.as_standard_layout();
            let gs = g.as_slice().expect("standard");
            let mut dx = vec![F::zero(); planes * h * w];
            dx.par_chunks_mut(h * w).enumerate().for_each(|(p, d)| {
                let gp = &gs[p * oh * ow..(p + 1) * oh * ow];
                if max {
                    let ap = &arg[p * oh * ow..(p + 1) * oh * ow];
                    for (i, &gv) in gp.iter().enumerate() {
                        d[ap[i]] += gv;
                    }
                } else {
                    for oy in 0..oh {
                        for ox in 0..ow {
                            let gv = gp[oy * ow + ox] * inv;
                            for ky in 0..k {
                                for kx in 0..k {
                                    d[(oy * stride + ky) * w + ox * stride + kx] += gv;
                                }
                            }
                        }
                    }
                }
            });
            vec![Some(ArrayD::from_shape_vec(IxDyn(&[n, c, h, w]), dx).expect("size"))]
        })
    }

    /// Nearest-neighbour upsampling by an integer factor; NCHW.
    #[track_caller]
    pub fn upsample_nearest2d(&self, factor: usize) -> Tensor<F> {
        assert_eq!(self.ndim(), 4, "upsample_nearest2d: input {:?} must be NCHW", self.shape());
        assert!(factor > 0, "upsample_nearest2d: factor 0");
        let (n, c, h, w) = (self.shape()[0], self.shape()[1], self.shape()[2], self.shape()[3]);
        let (oh, ow) = (h * factor, w * factor);
        let x = self.value().as_standard_layout();
        let xs = x.as_slice().expect("standard");
        let mut out = vec![F::zero(); n * c * oh * ow];
        out.par_chunks_mut(oh * ow).enumerate().for_each(|(p, o)| {
            for y in 0..oh {
                for xx in 0..ow {
                    o[y * ow + xx] = xs[p * h * w + (y / factor) * w + xx / factor];
                }
            }
        });
        let v = ArrayD::from_shape_vec(IxDyn(&[n, c, oh, ow]), out).expect("size");
        Tensor::from_op(v, &[self], move |g, _| {
            let g = g.as_standard_layout();
            let gs = g.as_slice().expect("standard");
            let mut dx = vec![F::zero(); n * c * h * w];
            dx.par_chunks_mut(h * w).enumerate().for_each(|(p, d)| {
                for y in 0..oh {
                    for xx in 0..ow {
                        d[(y / factor) * w + xx / factor] += gs[p * oh * ow + y * ow + xx];
                    }
                }
            });
            vec![Some(ArrayD::from_shape_vec(IxDyn(&[n, c, h, w]), dx).expect("size"))]
        })
    }

    /// Bilinear resize to `out_h x out_w` (PyTorch's `align_corners=False` convention); NCHW.
    #[track_caller]
    pub fn upsample_bilinear2d(&self, out_h: usize, out_w: usize) -> Tensor<F> {
        assert_eq!(self.ndim(), 4, "upsample_bilinear2d: input {:?} must be NCHW", self.shape());
        assert!(out_h > 0 && out_w > 0, "upsample_bilinear2d: empty output");
        let (n, c, h, w) = (self.shape()[0], self.shape()[1], self.shape()[2], self.shape()[3]);
        // For each output coordinate: (low index, high index, weight of high).
        let taps = |out: usize, inp: usize| -> Vec<(usize, usize, f64)> {
            let scale = inp as f64 / out as f64;
            (0..out)
                .map(|o| {
                    let src = ((o as f64 + 0.5) * scale - 0.5).max(0.0);
                    let lo = (src.floor() as usize).min(inp - 1);
                    let hi = (lo + 1).min(inp - 1);
                    (lo, hi, src - lo as f64)
                })
                .collect()
        };
        let (ty, tx) = (taps(out_h, h), taps(out_w, w));
        let x = self.value().as_standard_layout();
        let xs = x.as_slice().expect("standard");
        let mut out = vec![F::zero(); n * c * out_h * out_w];
        out.par_chunks_mut(out_h * out_w).enumerate().for_each(|(p, o)| {
            let plane = &xs[p * h * w..(p + 1) * h * w];
            for (oy, &(y0, y1, wy)) in ty.iter().enumerate() {
                for (ox, &(x0, x1, wx)) in tx.iter().enumerate() {
                    let (wy, wx) = (F::of(wy), F::of(wx));
                    let top = plane[y0 * w + x0] * (F::one() - wx) + plane[y0 * w + x1] * wx;
                    let bot = plane[y1 * w + x0] * (F::one() - wx) + plane[y1 * w + x1] * wx;
                    o[oy * out_w + ox] = top * (F::one() - wy) + bot * wy;
                }
            }
        });
        let v = ArrayD::from_shape_vec(IxDyn(&[n, c, out_h, out_w]), out).expect("size");
        Tensor::from_op(v, &[self], move |g, _| {
            let g = g.as_standard_layout();
            let gs = g.as_slice().expect("standard");
            let mut dx = vec![F::zero(); n * c * h * w];
            dx.par_chunks_mut(h * w).enumerate().for_each(|(p, d)| {
                let gp = &gs[p * out_h * out_w..(p + 1) * out_h * out_w];
                for (oy, &(y0, y1, wy)) in ty.iter().enumerate() {
                    for (ox, &(x0, x1, wx)) in tx.iter().enumerate() {
                        let gv = gp[oy * out_w + ox];
                        let (wy, wx) = (F::of(wy), F::of(wx));
                        d[y0 * w + x0] += gv * (F::one() - wy) * (F::one() - wx);
                        d[y0 * w + x1] += gv * (F::one() - wy) * wx;
                        d[y1 * w + x0] += gv * wy * (F::one() - wx);
                        d[y1 * w + x1] += gv * wy * wx;
                    }
                }
            });
            vec![Some(ArrayD::from_shape_vec(IxDyn(&[n, c, h, w]), dx).expect("size"))]
        })
    }
}
