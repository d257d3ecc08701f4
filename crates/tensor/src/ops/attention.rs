//! Multi-head scaled dot-product attention as one op: `softmax(scale * q k^T, mask) v` per (batch, head), forward
//! and backward together. Heads are read and written in place through strides, so the projections' outputs
//! (`[b, t, d]` with heads side by side, or a fused `[b, t, 3d]` qkv) need no split, permute or merge copies;
//! the attention probabilities are the only saved activation. Each (batch, head) is one task of single-threaded
//! products, so results do not depend on the thread count.

use ndarray::ArrayD;
use rayon::prelude::*;

use super::matmul::{count_flops, runtime_setup};
use super::{row_major, simd, zero_vec, zeros};
use crate::{Float, Tensor};

/// Which keys each query may see.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AttentionMask<'a> {
    /// Every key.
    All,
    /// Query `i` of `t` sees keys `0..=i + (s - t)` of `s` (the queries are the last `t` positions: with a cache
    /// of earlier keys, `s > t`).
    Causal,
    /// `[b, s]` row-major, `true` for real tokens: padding keys are never seen. A query whose keys are all
    /// padding gets zeros.
    KeyPadding(&'a [bool]),
}

/// Where head `h` of batch element `b` starts in a flat buffer, and the distance between its rows.
#[derive(Debug, Clone, Copy)]
struct HeadLayout {
    base: usize,
    batch_stride: usize,
    head_stride: usize,
    row_stride: usize,
}

impl HeadLayout {
    /// `[b, h, rows, dh]` in standard layout.
    fn split(heads: usize, rows: usize, dh: usize) -> Self {
        HeadLayout { base: 0, batch_stride: heads * rows * dh, head_stride: rows * dh, row_stride: dh }
    }

    /// Head `h` is columns `offset + h * dh ..` of a `[b, rows, width]` array.
    fn interleaved(rows: usize, width: usize, offset: usize, dh: usize) -> Self {
        HeadLayout { base: offset, batch_stride: rows * width, head_stride: dh, row_stride: width }
    }

    fn at(&self, b: usize, h: usize) -> usize {
        self.base + b * self.batch_stride + h * self.head_stride
    }
}

#[derive(Debug, Clone, Copy)]
struct Dims {
    batch: usize,
    heads: usize,
    t: usize,
    s: usize,
    dh: usize,
}

/// A pointer that tasks share to write disjoint regions (every (batch, head) owns its rows' head columns).
#[derive(Clone, Copy)]
struct SharedMut<F>(*mut F);
// SAFETY: used only to write regions that no two tasks share (see each use).
unsafe impl<F: Send> Send for SharedMut<F> {}
unsafe impl<F: Send> Sync for SharedMut<F> {}

impl<F> SharedMut<F> {
    /// A method, so closures capture the whole (Send) wrapper rather than its raw field.
    fn ptr(self) -> *mut F {
        self.0
    }
}

#[derive(Debug, Clone)]
enum OwnedMask {
    All,
    Causal,
    KeyPadding(Vec<bool>),
}

impl OwnedMask {
    fn of(m: AttentionMask<'_>) -> Self {
        match m {
            AttentionMask::All => OwnedMask::All,
            AttentionMask::Causal => OwnedMask::Causal,
            AttentionMask::KeyPadding(r) => OwnedMask::KeyPadding(r.to_vec()),
        }
    }

    /// The keys query `i` of batch element `b` may see, as a range of allowed indices plus (for padding) a filter.
    fn visible(&self, d: &Dims, b: usize, i: usize) -> (usize, Option<&[bool]>) {
        match self {
            OwnedMask::All => (d.s, None),
            OwnedMask::Causal => ((i + 1 + d.s - d.t).min(d.s), None),
            OwnedMask::KeyPadding(real) => (d.s, Some(&real[b * d.s..(b + 1) * d.s])),
        }
    }

    /// Blocks of query rows `(first, end, keys)`: `keys` is how many leading keys any query of the block may see.
    /// Under a causal mask the rows go in blocks of [`CAUSAL_QUERY_BLOCK`], so the products skip the hidden
    /// upper triangle (about 40% of the work at 128 positions); otherwise one block covers every row.
    fn query_blocks(&self, d: &Dims) -> impl Iterator<Item = (usize, usize, usize)> + use<> {
        let (t, s) = (d.t, d.s);
        let causal = matches!(self, OwnedMask::Causal);
        let rows = if causal { CAUSAL_QUERY_BLOCK } else { t.max(1) };
        (0..t).step_by(rows).map(move |r0| {
            let r1 = (r0 + rows).min(t);
            (r0, r1, if causal { (r1 + s - t).min(s) } else { s })
        })
    }
}

/// Query rows per block under a causal mask: small enough to skip most of the hidden triangle, large enough for
/// the products to run at speed.
const CAUSAL_QUERY_BLOCK: usize = 32;

/// `c = alpha * a @ b + beta * c` with explicit strides (with `beta` 0, `c` is not read).
///
/// # Safety
/// The pointers with their strides must address `m x k`, `k x n` and `m x n` elements inside their buffers, and
/// `c` must not be written by anyone else meanwhile.
#[allow(clippy::too_many_arguments)]
unsafe fn gemm<F: Float>(
    (m, k, n): (usize, usize, usize),
    alpha: F,
    a: (*const F, usize, usize),
    b: (*const F, usize, usize),
    beta: F,
    c: (*mut F, usize),
) {
    // SAFETY: forwarded contract.
    unsafe {
        F::gemm_raw(
            m,
            k,
            n,
            alpha,
            a.0,
            a.1 as isize,
            a.2 as isize,
            b.0,
            b.1 as isize,
            b.2 as isize,
            beta,
            c.0,
            c.1 as isize,
            1,
        )
    }
}

/// Forward for every (batch, head): `probs` (`[b, h, t, s]`) gets the attention weights, `out` the result.
#[allow(clippy::too_many_arguments)]
fn forward<F: Float>(
    d: Dims,
    scale: F,
    mask: &OwnedMask,
    (q, ql): (&[F], HeadLayout),
    (k, kl): (&[F], HeadLayout),
    (v, vl): (&[F], HeadLayout),
    (out, ol): (&mut [F], HeadLayout),
    probs: &mut [F],
) {
    runtime_setup();
    count_flops(d.batch * d.heads * d.t, d.s, d.dh);
    count_flops(d.batch * d.heads * d.t, d.dh, d.s);
    let out_ptr = SharedMut(out.as_mut_ptr());
    let work = |(i, p): (usize, &mut [F])| {
        simd(|| {
            let (b, h) = (i / d.heads, i % d.heads);
            for (r0, r1, keys) in mask.query_blocks(&d) {
                let rows = r1 - r0;
                // SAFETY: the layouts address this head's rows inside q, k, v and out (checked by the callers' shapes);
                // p is this task's own t x s block; out's head block is written by this task only.
                unsafe {
                    gemm(
                        (rows, d.dh, keys),
                        scale,
                        (q.as_ptr().add(ql.at(b, h) + r0 * ql.row_stride), ql.row_stride, 1),
                        (k.as_ptr().add(kl.at(b, h)), 1, kl.row_stride),
                        F::zero(),
                        (p.as_mut_ptr().add(r0 * d.s), d.s),
                    );
                }
                for row in r0..r1 {
                    softmax_row(&mut p[row * d.s..(row + 1) * d.s], mask.visible(&d, b, row));
                }
                // SAFETY: as above.
                unsafe {
                    gemm(
                        (rows, keys, d.dh),
                        F::one(),
                        (p.as_ptr().add(r0 * d.s), d.s, 1),
                        (v.as_ptr().add(vl.at(b, h)), vl.row_stride, 1),
                        F::zero(),
                        (out_ptr.ptr().add(ol.at(b, h) + r0 * ol.row_stride), ol.row_stride),
                    );
                }
            }
        })
    };
    for_each_head(&d, probs.chunks_mut(d.t * d.s).enumerate(), work);
}

/// Runs `work` on every (batch, head) block, in parallel when there are several and enough work to share.
fn for_each_head<T: Send>(d: &Dims, blocks: impl Iterator<Item = T>, work: impl Fn(T) + Sync + Send) {
    if d.batch * d.heads > 1 && d.batch * d.heads * d.t * d.s * d.dh >= 1 << 15 {
        blocks.collect::<Vec<_>>().into_par_iter().for_each(work);
    } else {
        blocks.for_each(work);
    }
}

/// Softmax over the visible entries of one row of scores (already scaled); the others become 0. Without padding
/// the visible keys are a prefix, so the passes are branch-free and vectorise; sums use 8 fixed lanes (the same
/// order on every machine and thread count).
#[inline(always)]
fn softmax_row<F: Float>(row: &mut [F], (end, real): (usize, Option<&[bool]>)) {
    let (live, hidden) = row.split_at_mut(end);
    hidden.iter_mut().for_each(|x| *x = F::zero());
    if let Some(real) = real {
        let real = &real[..end];
        if !real.iter().any(|&r| r) {
            live.iter_mut().for_each(|x| *x = F::zero());
            return;
        }
        let mx =
            live.iter().zip(real).filter(|(_, r)| **r).fold(F::neg_infinity(), |m, (&x, _)| if x > m { x } else { m });
        live.iter_mut().zip(real).for_each(|(x, &r)| *x = if r { (*x - mx).exp_fast() } else { F::zero() });
    } else {
        if live.is_empty() {
            return;
        }
        let mx = live.iter().fold(F::neg_infinity(), |m, &x| if x > m { x } else { m });
        live.iter_mut().for_each(|x| *x = (*x - mx).exp_fast());
    }
    let mut lanes = [F::zero(); 8];
    let mut chunks = live.chunks_exact(8);
    for c in &mut chunks {
        for (l, &x) in lanes.iter_mut().zip(c) {
            *l += x;
        }
    }
    let tail: F = chunks.remainder().iter().copied().sum();
    let sum = lanes.iter().copied().sum::<F>() + tail;
    let inv = F::one() / sum;
    live.iter_mut().for_each(|x| *x *= inv);
}

/// Backward for every (batch, head), from the saved `probs`: writes dq, dk, dv (each region once).
#[allow(clippy::too_many_arguments)]
fn backward<F: Float>(
    d: Dims,
    scale: F,
    mask: &OwnedMask,
    probs: &[F],
    (g, gl): (&[F], HeadLayout),
    (q, ql): (&[F], HeadLayout),
    (k, kl): (&[F], HeadLayout),
    (v, vl): (&[F], HeadLayout),
    grads: [(SharedMut<F>, HeadLayout); 3],
) {
    // FLOPs are counted as the full products (as FLOP counters and MFU estimates count causal attention).
    count_flops(4 * d.batch * d.heads * d.t, d.s, d.dh);
    let [(dq, dql), (dk, dkl), (dv, dvl)] = grads;
    let work = |(i, p): (usize, &[F])| {
        simd(|| {
            let (b, h) = (i / d.heads, i % d.heads);
            let mut ds = vec![F::zero(); d.t * d.s];
            // dV and dK sum over query blocks: their buffers start at zero and each block adds to the keys it sees.
            for (r0, r1, keys) in mask.query_blocks(&d) {
                let rows = r1 - r0;
                let (g_rows, p_rows) = (gl.at(b, h) + r0 * gl.row_stride, r0 * d.s);
                // SAFETY: the layouts address this head's rows inside their buffers; dq, dk and dv's head blocks are
                // written by this task only; ds is this task's own buffer.
                unsafe {
                    // dP = dO V^T
                    gemm(
                        (rows, d.dh, keys),
                        F::one(),
                        (g.as_ptr().add(g_rows), gl.row_stride, 1),
                        (v.as_ptr().add(vl.at(b, h)), 1, vl.row_stride),
                        F::zero(),
                        (ds.as_mut_ptr().add(p_rows), d.s),
                    );
                    // dV += P^T dO
                    gemm(
                        (keys, rows, d.dh),
                        F::one(),
                        (p.as_ptr().add(p_rows), 1, d.s),
                        (g.as_ptr().add(g_rows), gl.row_stride, 1),
                        F::one(),
                        (dv.ptr().add(dvl.at(b, h)), dvl.row_stride),
                    );
                }
                // dS = P (dP - rowsum(P dP)); hidden entries have P = 0 and get no gradient.
                for row in r0..r1 {
                    let (dr, pr) = (&mut ds[row * d.s..row * d.s + keys], &p[row * d.s..row * d.s + keys]);
                    let dot: F = dr.iter().zip(pr).map(|(&a, &b)| a * b).sum();
                    dr.iter_mut().zip(pr).for_each(|(x, &pv)| *x = pv * (*x - dot));
                }
                // SAFETY: as above.
                unsafe {
                    // dQ = scale dS K, dK += scale dS^T Q
                    gemm(
                        (rows, keys, d.dh),
                        scale,
                        (ds.as_ptr().add(p_rows), d.s, 1),
                        (k.as_ptr().add(kl.at(b, h)), kl.row_stride, 1),
                        F::zero(),
                        (dq.ptr().add(dql.at(b, h) + r0 * dql.row_stride), dql.row_stride),
                    );
                    gemm(
                        (keys, rows, d.dh),
                        scale,
                        (ds.as_ptr().add(p_rows), 1, d.s),
                        (q.as_ptr().add(ql.at(b, h) + r0 * ql.row_stride), ql.row_stride, 1),
                        F::one(),
                        (dk.ptr().add(dkl.at(b, h)), dkl.row_stride),
                    );
                }
            }
        })
    };
    for_each_head(&d, probs.chunks(d.t * d.s).enumerate(), work);
}

#[track_caller]
fn check_mask(mask: AttentionMask<'_>, d: &Dims) {
    if let AttentionMask::KeyPadding(real) = mask {
        assert_eq!(
            real.len(),
            d.batch * d.s,
            "attention: padding mask has {} entries for [{}, {}]",
            real.len(),
            d.batch,
            d.s
        );
    }
    if mask == AttentionMask::Causal {
        assert!(d.s >= d.t, "attention: causal mask needs at least as many keys ({}) as queries ({})", d.s, d.t);
    }
}

fn owned<F: Float>(x: &ArrayD<F>) -> std::borrow::Cow<'_, [F]> {
    match x.as_slice() {
        Some(s) => std::borrow::Cow::Borrowed(s),
        None => std::borrow::Cow::Owned(x.iter().copied().collect()),
    }
}

/// The op for separate q, k, v tensors: `lq` is the layout of q and of the output (shaped `out_shape`), `lk` of
/// k and v.
#[allow(clippy::too_many_arguments)]
fn attend_separate<F: Float>(
    q: &Tensor<F>,
    k: &Tensor<F>,
    v: &Tensor<F>,
    d: Dims,
    (lq, lk): (HeadLayout, HeadLayout),
    out_shape: &[usize],
    scale: F,
    mask: AttentionMask<'_>,
) -> Tensor<F> {
    // Kept for the backward pass as handles, not copies.
    let (qa, ka, va) = (row_major(q), row_major(k), row_major(v));
    let mut out = zeros::<F>(out_shape);
    let mut probs = zero_vec::<F>(d.batch * d.heads * d.t * d.s);
    let mask = OwnedMask::of(mask);
    let (qsl, ksl, vsl) = (
        qa.value().as_slice().expect("standard"),
        ka.value().as_slice().expect("standard"),
        va.value().as_slice().expect("standard"),
    );
    forward(d, scale, &mask, (qsl, lq), (ksl, lk), (vsl, lk), (out.as_slice_mut().expect("fresh"), lq), &mut probs);
    Tensor::from_op(out, &[q, k, v], move |g, _| {
        let g = owned(g);
        let mut dq = zeros::<F>(qa.shape());
        let mut dk = zeros::<F>(ka.shape());
        let mut dv = zeros::<F>(va.shape());
        let ptr = |a: &mut ArrayD<F>| SharedMut(a.as_mut_ptr());
        let grads = [(ptr(&mut dq), lq), (ptr(&mut dk), lk), (ptr(&mut dv), lk)];
        let (qsl, ksl, vsl) = (
            qa.value().as_slice().expect("standard"),
            ka.value().as_slice().expect("standard"),
            va.value().as_slice().expect("standard"),
        );
        backward(d, scale, &mask, &probs, (&g, lq), (qsl, lq), (ksl, lk), (vsl, lk), grads);
        vec![Some(dq), Some(dk), Some(dv)]
    })
}

impl<F: Float> Tensor<F> {
    /// `softmax(scale * q k^T, mask) v` for `q: [b, h, t, dh]` and `k, v: [b, h, s, dh]`; returns `[b, h, t, dh]`.
    #[track_caller]
    pub fn attention(q: &Tensor<F>, k: &Tensor<F>, v: &Tensor<F>, scale: f64, mask: AttentionMask<'_>) -> Tensor<F> {
        let (qs, ks, vs) = (q.shape(), k.shape(), v.shape());
        assert!(
            qs.len() == 4 && ks.len() == 4 && ks == vs && qs[0] == ks[0] && qs[1] == ks[1] && qs[3] == ks[3],
            "attention: q {qs:?}, k {ks:?}, v {vs:?} must be [b, h, t, dh], [b, h, s, dh], [b, h, s, dh]"
        );
        let d = Dims { batch: qs[0], heads: qs[1], t: qs[2], s: ks[2], dh: qs[3] };
        check_mask(mask, &d);
        let (lq, lk) = (HeadLayout::split(d.heads, d.t, d.dh), HeadLayout::split(d.heads, d.s, d.dh));
        attend_separate(q, k, v, d, (lq, lk), &[d.batch, d.heads, d.t, d.dh], F::of(scale), mask)
    }

    /// Multi-head attention on projections with heads side by side: `q: [b, t, h * dh]`, `k, v: [b, s, h * dh]`,
    /// scale `1 / sqrt(dh)`; returns `[b, t, h * dh]` with the heads merged (BERT's self-attention without the
    /// split/merge copies).
    #[track_caller]
    pub fn multi_head_attention(
        q: &Tensor<F>,
        k: &Tensor<F>,
        v: &Tensor<F>,
        heads: usize,
        mask: AttentionMask<'_>,
    ) -> Tensor<F> {
        let (qs, ks, vs) = (q.shape(), k.shape(), v.shape());
        assert!(
            qs.len() == 3
                && ks == vs
                && ks.len() == 3
                && qs[0] == ks[0]
                && qs[2] == ks[2]
                && heads > 0
                && qs[2] % heads == 0,
            "multi_head_attention: q {qs:?}, k {ks:?}, v {vs:?} must be [b, t, d], [b, s, d], [b, s, d] with d divisible by {heads} heads"
        );
        let width = qs[2];
        let d = Dims { batch: qs[0], heads, t: qs[1], s: ks[1], dh: width / heads };
        check_mask(mask, &d);
        let lq = HeadLayout::interleaved(d.t, width, 0, d.dh);
        let lk = HeadLayout::interleaved(d.s, width, 0, d.dh);
        let scale = F::of(1.0 / (d.dh as f64).sqrt());
        attend_separate(q, k, v, d, (lq, lk), &[d.batch, d.t, width], scale, mask)
    }

    /// Multi-head self-attention from a fused projection `[b, t, 3d]` (q, k, v as consecutive `d`-wide blocks, each
    /// `heads` heads side by side; GPT-2's `c_attn` layout), scale `1 / sqrt(d / heads)`; returns `[b, t, d]`.
    #[track_caller]
    pub fn fused_self_attention(&self, heads: usize, mask: AttentionMask<'_>) -> Tensor<F> {
        let s = self.shape();
        assert!(
            s.len() == 3 && s[2] % 3 == 0 && heads > 0 && (s[2] / 3) % heads == 0,
            "fused_self_attention: qkv {s:?} must be [b, t, 3d] with d divisible by {heads} heads"
        );
        let (width, d_model) = (s[2], s[2] / 3);
        let d = Dims { batch: s[0], heads, t: s[1], s: s[1], dh: d_model / heads };
        check_mask(mask, &d);
        let at = |offset| HeadLayout::interleaved(d.t, width, offset, d.dh);
        let (lq, lk, lv) = (at(0), at(d_model), at(2 * d_model));
        let lo = HeadLayout::interleaved(d.t, d_model, 0, d.dh);
        let x = row_major(self);
        let mut out = zeros::<F>(&[d.batch, d.t, d_model]);
        let mut probs = zero_vec::<F>(d.batch * d.heads * d.t * d.s);
        let (mask, scale) = (OwnedMask::of(mask), F::of(1.0 / (d.dh as f64).sqrt()));
        let xs = x.value().as_slice().expect("standard");
        forward(d, scale, &mask, (xs, lq), (xs, lk), (xs, lv), (out.as_slice_mut().expect("fresh"), lo), &mut probs);
        Tensor::from_op(out, &[self], move |g, _| {
            let g = owned(g);
            let mut dx = zeros::<F>(x.shape());
            let p = SharedMut(dx.as_mut_ptr());
            let xs = x.value().as_slice().expect("standard");
            // q, k and v's gradients are disjoint column blocks of one array.
            backward(d, scale, &mask, &probs, (&g, lo), (xs, lq), (xs, lk), (xs, lv), [(p, lq), (p, lk), (p, lv)]);
            vec![Some(dx)]
        })
    }
}
