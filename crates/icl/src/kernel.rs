//! The LSA layer as one fused op, forward and backward written out for the small matrices of in-context
//! regression (`d + 1` around 5-11, `n + 1` around 20-41), where a general tensor graph spends most of its
//! time on overhead.
//!
//! Prompts are processed in fixed blocks of [`BLOCK`] on rayon, so the `P`, `Q` gradient sums (and every
//! value) do not depend on the thread count. On x86-64 CPUs with AVX2 the same code is compiled a second
//! time with AVX2 enabled and picked at run time; the arithmetic (order included) is the same, so both
//! paths give bit-identical results.

use tensor::ndarray::{ArrayD, IxDyn};
use tensor::rayon::prelude::*;
use tensor::{Float, Tensor};

/// Prompts per parallel task.
const BLOCK: usize = 16;

/// `Z - (1/n) P (Z M Z^T) Q Z` for `z: [batch, d+1, n+1]` (query last, `M` masks it out of keys and
/// values), with `P`, `Q` of shape `[d+1, d+1]`. Same value and gradients as [`crate::model::lsa_layer`]
/// (tested to 1e-12 in f64), several times faster at these shapes.
#[track_caller]
pub fn lsa_layer_fused<F: Float>(z: &Tensor<F>, p: &Tensor<F>, q: &Tensor<F>) -> Tensor<F> {
    assert_eq!(z.ndim(), 3, "lsa_layer_fused: tokens {:?} must be [batch, d+1, n+1]", z.shape());
    let (b, d1, n1) = (z.shape()[0], z.shape()[1], z.shape()[2]);
    assert!(
        p.shape() == [d1, d1] && q.shape() == [d1, d1],
        "lsa_layer_fused: P {:?}, Q {:?} for d+1 = {d1}",
        p.shape(),
        q.shape()
    );
    let shape = Shape { d1, n1, inv_n: F::of(1.0 / (n1 - 1).max(1) as f64) };
    let zv = z.value().as_standard_layout().into_owned();
    let (pv, qv) = (p.value().as_standard_layout().into_owned(), q.value().as_standard_layout().into_owned());
    let (ps, qs) = (pv.as_slice().expect("standard").to_vec(), qv.as_slice().expect("standard").to_vec());
    let per = d1 * n1;
    let zs = zv.as_slice().expect("standard");
    let mut out = vec![F::zero(); zs.len()];
    // G, P G and H of every prompt, kept for the backward pass.
    let cached = 3 * d1 * d1;
    let mut cache = vec![F::zero(); b * cached];
    out.par_chunks_mut(per * BLOCK)
        .zip(zs.par_chunks(per * BLOCK))
        .zip(cache.par_chunks_mut(cached * BLOCK))
        .for_each(|((o, zb), c)| forward_block(zb, &ps, &qs, shape, o, c));
    let value = ArrayD::from_shape_vec(IxDyn(&[b, d1, n1]), out).expect("size");
    Tensor::custom_op(value, &[z, p, q], move |g, needs| {
        let zs = zv.as_slice().expect("standard");
        let g = g.as_standard_layout();
        let gs = g.as_slice().expect("standard");
        let (pt, qt) = (transpose(&ps, d1), transpose(&qs, d1));
        let mut dz = vec![F::zero(); zs.len()];
        // Per block of prompts: (dP, dQ), summed in block order below.
        let parts: Vec<(Vec<F>, Vec<F>)> = dz
            .par_chunks_mut(per * BLOCK)
            .zip(zs.par_chunks(per * BLOCK))
            .zip(gs.par_chunks(per * BLOCK))
            .zip(cache.par_chunks(cached * BLOCK))
            .map(|(((dzb, zb), gb), cb)| backward_block(zb, gb, cb, (&pt, &qt), shape, dzb))
            .collect();
        let mut dp = vec![F::zero(); d1 * d1];
        let mut dq = vec![F::zero(); d1 * d1];
        for (p_part, q_part) in parts {
            add_into(&mut dp, &p_part);
            add_into(&mut dq, &q_part);
        }
        vec![
            needs[0].then(|| ArrayD::from_shape_vec(IxDyn(&[b, d1, n1]), dz).expect("size")),
            needs[1].then(|| ArrayD::from_shape_vec(IxDyn(&[d1, d1]), dp).expect("size")),
            needs[2].then(|| ArrayD::from_shape_vec(IxDyn(&[d1, d1]), dq).expect("size")),
        ]
    })
}

#[derive(Clone, Copy)]
struct Shape<F> {
    d1: usize,
    n1: usize,
    inv_n: F,
}

/// Defines `$name`, which runs `$portable` compiled a second time with AVX2 (`$avx2`) when the CPU has it,
/// and as is otherwise. The arithmetic is the same, so both give bit-identical results.
macro_rules! dispatch_avx2 {
    ($name:ident, $avx2:ident, $portable:ident, ($($arg:ident: $ty:ty),*) $(-> $ret:ty)?) => {
        fn $name<F: Float>($($arg: $ty),*) $(-> $ret)? {
            #[cfg(target_arch = "x86_64")]
            if std::is_x86_feature_detected!("avx2") {
                // SAFETY: the CPU has AVX2 (checked just above), the only requirement of the AVX2 build.
                return unsafe { $avx2($($arg),*) };
            }
            $portable($($arg),*)
        }

        #[cfg(target_arch = "x86_64")]
        #[target_feature(enable = "avx2")]
        unsafe fn $avx2<F: Float>($($arg: $ty),*) $(-> $ret)? {
            $portable($($arg),*)
        }
    };
}

dispatch_avx2!(forward_block, forward_block_avx2, forward_block_portable,
    (z: &[F], p: &[F], q: &[F], s: Shape<F>, out: &mut [F], cache: &mut [F]));
dispatch_avx2!(backward_block, backward_block_avx2, backward_block_portable,
    (z: &[F], g: &[F], cache: &[F], transposes: (&[F], &[F]), s: Shape<F>, dz: &mut [F]) -> (Vec<F>, Vec<F>));

/// Forward of a block of prompts: `o = Z - (1/n) H Z` with `H = P G Q`, `G = Z M Z^T`.
#[inline(always)]
fn forward_block_portable<F: Float>(z: &[F], p: &[F], q: &[F], s: Shape<F>, out: &mut [F], cache: &mut [F]) {
    let Shape { d1, n1, inv_n } = s;
    let dd = d1 * d1;
    let prompts = z.chunks_exact(d1 * n1).zip(out.chunks_exact_mut(d1 * n1)).zip(cache.chunks_exact_mut(3 * dd));
    for ((zb, o), c) in prompts {
        let (g, rest) = c.split_at_mut(dd);
        let (pg, h) = rest.split_at_mut(dd);
        gram(zb, d1, n1, g);
        small_mm(p, g, d1, pg);
        small_mm(pg, q, d1, h);
        // Row updates: an axpy over the tokens vectorises, a dot product over k would not.
        o.copy_from_slice(zb);
        for (orow, hrow) in o.chunks_exact_mut(n1).zip(h.chunks_exact(d1)) {
            for (&hik, zrow) in hrow.iter().zip(zb.chunks_exact(n1)) {
                axpy(orow, -(inv_n * hik), zrow);
            }
        }
    }
}

/// Backward of a block of prompts from their cached `G`, `P G`, `H`: writes `dz` and returns the block's
/// `(dP, dQ)`.
#[inline(always)]
fn backward_block_portable<F: Float>(
    z: &[F],
    g: &[F],
    cache: &[F],
    (pt, qt): (&[F], &[F]),
    s: Shape<F>,
    dz: &mut [F],
) -> (Vec<F>, Vec<F>) {
    let Shape { d1, n1, inv_n } = s;
    let dd = d1 * d1;
    let per = d1 * n1;
    let mut dp = vec![F::zero(); dd];
    let mut dq = vec![F::zero(); dd];
    // Scratch: dH, (P G)^T, d(P G), dG, and a product buffer.
    let mut scratch = vec![F::zero(); 5 * dd];
    let (dh, rest) = scratch.split_at_mut(dd);
    let (pgt, rest) = rest.split_at_mut(dd);
    let (dpg, rest) = rest.split_at_mut(dd);
    let (dg, prod) = rest.split_at_mut(dd);
    let prompts = z.chunks_exact(per).zip(g.chunks_exact(per)).zip(cache.chunks_exact(3 * dd));
    for (((zb, gb), c), dzb) in prompts.zip(dz.chunks_exact_mut(per)) {
        let (gram_, pg, h) = (&c[..dd], &c[dd..2 * dd], &c[2 * dd..]);
        // Y = Z - (1/n) H Z: dZ = dY - (1/n) H^T dY, dH = -(1/n) dY Z^T.
        dzb.copy_from_slice(gb);
        for (hrow, grow) in h.chunks_exact(d1).zip(gb.chunks_exact(n1)) {
            for (&hik, dzrow) in hrow.iter().zip(dzb.chunks_exact_mut(n1)) {
                axpy(dzrow, -(hik * inv_n), grow);
            }
        }
        for (dhrow, grow) in dh.chunks_exact_mut(d1).zip(gb.chunks_exact(n1)) {
            for (v, zrow) in dhrow.iter_mut().zip(zb.chunks_exact(n1)) {
                *v = -inv_n * dot(grow, zrow);
            }
        }
        // H = (P G) Q: dQ += (P G)^T dH, d(PG) = dH Q^T.
        transpose_into(pg, d1, pgt);
        small_mm(pgt, dh, d1, prod);
        add_into(&mut dq, prod);
        small_mm(dh, qt, d1, dpg);
        // PG = P G: dP += d(PG) G^T = d(PG) G (G symmetric), dG = P^T d(PG).
        small_mm(dpg, gram_, d1, prod);
        add_into(&mut dp, prod);
        small_mm(pt, dpg, d1, dg);
        // G = Zm Z^T: dZ[i, c] += sum_j (dG[i, j] + dG[j, i]) Z[j, c] for the example columns c < n.
        for i in 0..d1 {
            let dzrow = &mut dzb[i * n1..i * n1 + n1 - 1];
            for (j, zrow) in zb.chunks_exact(n1).enumerate() {
                axpy(dzrow, dg[i * d1 + j] + dg[j * d1 + i], &zrow[..n1 - 1]);
            }
        }
    }
    (dp, dq)
}

/// `G = Z M Z^T` (the query column excluded) of one prompt, row-major `d1 x d1`.
#[inline(always)]
fn gram<F: Float>(zb: &[F], d1: usize, n1: usize, g: &mut [F]) {
    for i in 0..d1 {
        for j in 0..=i {
            let s = dot(&zb[i * n1..i * n1 + n1 - 1], &zb[j * n1..j * n1 + n1 - 1]);
            g[i * d1 + j] = s;
            g[j * d1 + i] = s;
        }
    }
}

/// Dot product with eight independent accumulators, so the compiler can vectorise it (a single running
/// sum is a serial dependency chain). The summation order is fixed, so results are reproducible.
#[inline(always)]
fn dot<F: Float>(a: &[F], b: &[F]) -> F {
    let mut acc = [F::zero(); 8];
    let (ca, cb) = (a.chunks_exact(8), b.chunks_exact(8));
    let (ra, rb) = (ca.remainder(), cb.remainder());
    for (x, y) in ca.zip(cb) {
        for l in 0..8 {
            acc[l] += x[l] * y[l];
        }
    }
    let mut s = ((acc[0] + acc[4]) + (acc[1] + acc[5])) + ((acc[2] + acc[6]) + (acc[3] + acc[7]));
    for (&x, &y) in ra.iter().zip(rb) {
        s += x * y;
    }
    s
}

/// `y += a x`.
#[inline(always)]
fn axpy<F: Float>(y: &mut [F], a: F, x: &[F]) {
    y.iter_mut().zip(x).for_each(|(y, &x)| *y += a * x);
}

#[inline(always)]
fn add_into<F: Float>(acc: &mut [F], x: &[F]) {
    acc.iter_mut().zip(x).for_each(|(a, &b)| *a += b);
}

fn transpose<F: Float>(a: &[F], d: usize) -> Vec<F> {
    let mut t = vec![F::zero(); d * d];
    transpose_into(a, d, &mut t);
    t
}

#[inline(always)]
fn transpose_into<F: Float>(a: &[F], d: usize, t: &mut [F]) {
    for i in 0..d {
        for j in 0..d {
            t[j * d + i] = a[i * d + j];
        }
    }
}

/// `c = a b` for row-major `d x d` matrices, as row axpys.
#[inline(always)]
fn small_mm<F: Float>(a: &[F], b: &[F], d: usize, c: &mut [F]) {
    for (crow, arow) in c.chunks_exact_mut(d).zip(a.chunks_exact(d)) {
        crow.fill(F::zero());
        for (&aik, brow) in arow.iter().zip(b.chunks_exact(d)) {
            axpy(crow, aik, brow);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The AVX2 build and the portable build of the kernels give bit-identical results.
    #[test]
    fn dispatch_paths_agree() {
        let (d1, n1, b) = (6, 13, BLOCK);
        let s = Shape { d1, n1, inv_n: 1.0f32 / 12.0 };
        let mut rng = tensor::seeded(3);
        let z = tensor::normal::<f32>(&[b * d1 * n1], 0.0, 1.0, &mut rng).into_raw_vec_and_offset().0;
        let p = tensor::normal::<f32>(&[d1 * d1], 0.0, 0.3, &mut rng).into_raw_vec_and_offset().0;
        let q = tensor::normal::<f32>(&[d1 * d1], 0.0, 0.3, &mut rng).into_raw_vec_and_offset().0;
        let g = tensor::normal::<f32>(&[b * d1 * n1], 0.0, 1.0, &mut rng).into_raw_vec_and_offset().0;
        let run = |portable: bool| {
            let mut out = vec![0.0; z.len()];
            let mut cache = vec![0.0; b * 3 * d1 * d1];
            let mut dz = vec![0.0; z.len()];
            let (pt, qt) = (transpose(&p, d1), transpose(&q, d1));
            let grads = if portable {
                forward_block_portable(&z, &p, &q, s, &mut out, &mut cache);
                backward_block_portable(&z, &g, &cache, (&pt, &qt), s, &mut dz)
            } else {
                forward_block(&z, &p, &q, s, &mut out, &mut cache);
                backward_block(&z, &g, &cache, (&pt, &qt), s, &mut dz)
            };
            (out, dz, grads)
        };
        assert_eq!(run(true), run(false));
    }
}
