//! Images in NCHW layout (as PyTorch): conv2d via im2col + one BLAS GEMM, max/avg pooling, nearest and
//! bilinear upsampling.

use ndarray::{ArrayD, IxDyn};
use rayon::prelude::*;

use super::matmul::mm2;
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
    n: usize,
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

/// im2col with one row per output position: `[n * oh * ow, c * kh * kw]`.
fn im2col<F: Float>(x: &[F], g: Geom) -> Vec<F> {
    let cols = g.cols();
    let mut out = vec![F::zero(); g.n * g.positions() * cols];
    out.par_chunks_mut(g.positions() * cols).enumerate().for_each(|(b, img)| {
        let xb = &x[b * g.c * g.h * g.w..(b + 1) * g.c * g.h * g.w];
        for oy in 0..g.oh {
            for ox in 0..g.ow {
                let row = &mut img[(oy * g.ow + ox) * cols..(oy * g.ow + ox + 1) * cols];
                let mut j = 0;
                for ch in 0..g.c {
                    for ky in 0..g.kh {
                        let iy = (oy * g.stride + ky) as isize - g.pad as isize;
                        for kx in 0..g.kw {
                            let ix = (ox * g.stride + kx) as isize - g.pad as isize;
                            row[j] = if iy >= 0 && ix >= 0 && (iy as usize) < g.h && (ix as usize) < g.w {
                                xb[(ch * g.h + iy as usize) * g.w + ix as usize]
                            } else {
                                F::zero()
                            };
                            j += 1;
                        }
                    }
                }
            }
        }
    });
    out
}

/// Adjoint of im2col: scatter-adds columns back into an image gradient.
fn col2im<F: Float>(cols_grad: &[F], g: Geom) -> Vec<F> {
    let cols = g.cols();
    let mut out = vec![F::zero(); g.n * g.c * g.h * g.w];
    out.par_chunks_mut(g.c * g.h * g.w).enumerate().for_each(|(b, xb)| {
        let img = &cols_grad[b * g.positions() * cols..(b + 1) * g.positions() * cols];
        for oy in 0..g.oh {
            for ox in 0..g.ow {
                let row = &img[(oy * g.ow + ox) * cols..(oy * g.ow + ox + 1) * cols];
                let mut j = 0;
                for ch in 0..g.c {
                    for ky in 0..g.kh {
                        let iy = (oy * g.stride + ky) as isize - g.pad as isize;
                        for kx in 0..g.kw {
                            let ix = (ox * g.stride + kx) as isize - g.pad as isize;
                            if iy >= 0 && ix >= 0 && (iy as usize) < g.h && (ix as usize) < g.w {
                                xb[(ch * g.h + iy as usize) * g.w + ix as usize] += row[j];
                            }
                            j += 1;
                        }
                    }
                }
            }
        }
    });
    out
}

/// `[n * p, o]` (position-major) to `[n, o, p]` (NCHW), and back.
fn npo_to_nop<F: Float>(y: &[F], _n: usize, p: usize, o: usize) -> Vec<F> {
    let mut out = vec![F::zero(); y.len()];
    out.par_chunks_mut(o * p).enumerate().for_each(|(b, ob)| {
        for pos in 0..p {
            for ch in 0..o {
                ob[ch * p + pos] = y[(b * p + pos) * o + ch];
            }
        }
    });
    out
}

fn nop_to_npo<F: Float>(y: &[F], n: usize, p: usize, o: usize) -> Vec<F> {
    let mut out = vec![F::zero(); y.len()];
    out.par_chunks_mut(o * p).enumerate().for_each(|(b, ob)| {
        for pos in 0..p {
            for ch in 0..o {
                ob[pos * o + ch] = y[(b * o + ch) * p + pos];
            }
        }
    });
    let _ = n;
    out
}

fn arr2<F: Float>(v: &[F], r: usize, c: usize) -> ndarray::ArrayView2<'_, F> {
    ndarray::ArrayView2::from_shape((r, c), v).expect("size")
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
        let g = Geom { n, c, h, w, kh, kw, oh, ow, stride: spec.stride, pad: spec.padding };
        let x = self.value().as_standard_layout();
        let cols = im2col(x.as_slice().expect("standard"), g);
        let wmat = weight.value().as_standard_layout().into_owned();
        let wmat_s = wmat.as_slice().expect("standard");
        // [n*p, cols] @ [cols, o]
        let y = mm2(arr2(&cols, n * g.positions(), g.cols()), arr2(wmat_s, o, g.cols()).t());
        let mut y = npo_to_nop(y.as_slice().expect("standard"), n, g.positions(), o);
        if let Some(b) = bias {
            let bv = b.value().as_slice().expect("1-d").to_vec();
            y.par_chunks_mut(g.positions()).enumerate().for_each(|(i, plane)| {
                let bias = bv[i % o];
                plane.iter_mut().for_each(|v| *v += bias);
            });
        }
        let v = ArrayD::from_shape_vec(IxDyn(&[n, o, oh, ow]), y).expect("size");
        let mut inputs = vec![self, weight];
        if let Some(b) = bias {
            inputs.push(b);
        }
        let has_bias = bias.is_some();
        let w_shape = weight.shape().to_vec();
        let keep_cols = if weight.is_tracked() { Some(cols) } else { None };
        Tensor::from_op(v, &inputs, move |gy, needs| {
            let gy = gy.as_standard_layout();
            let gnpo = nop_to_npo(gy.as_slice().expect("standard"), n, g.positions(), o);
            let gm = arr2(&gnpo, n * g.positions(), o);
            let gx = needs[0].then(|| {
                let wm = arr2(wmat.as_slice().expect("standard"), o, g.cols());
                let gcols = mm2(gm, wm);
                let gimg = col2im(gcols.as_slice().expect("standard"), g);
                ArrayD::from_shape_vec(IxDyn(&[n, c, h, w]), gimg).expect("size")
            });
            let gw = needs[1].then(|| {
                let cols = keep_cols.as_ref().expect("kept for weight grad");
                let gwm = mm2(gm.t(), arr2(cols, n * g.positions(), g.cols()));
                gwm.into_dyn().into_shape_with_order(IxDyn(&w_shape)).expect("size")
            });
            let mut out = vec![gx, gw];
            if has_bias {
                out.push(needs[2].then(|| {
                    let mut gb = vec![F::zero(); o];
                    for (i, plane) in gy.as_slice().expect("standard").chunks(g.positions()).enumerate() {
                        gb[i % o] += plane.iter().copied().sum::<F>();
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
        let x = self.value().as_standard_layout().into_owned();
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
        let x = self.value().as_standard_layout().into_owned();
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
        let x = self.value().as_standard_layout().into_owned();
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
