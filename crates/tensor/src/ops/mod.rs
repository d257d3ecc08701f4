//! Differentiable ops. Each op is one function that computes its value and records, next to it, the
//! closure that turns the output's gradient into its inputs' gradients. Gradient checks live in
//! `tests/gradcheck.rs`, one per op.

pub(crate) mod attention;
pub(crate) mod conv;
pub(crate) mod elementwise;
pub mod loss;
pub(crate) mod matmul;
pub use matmul::matmul_flops;
pub(crate) mod nn;
pub(crate) mod reduce;
pub(crate) mod shape;

pub use attention::AttentionMask;
pub use conv::Conv2dSpec;
pub use elementwise::GeluApprox;

use ndarray::{ArrayD, Axis, IxDyn, Zip};
use rayon::prelude::*;

use crate::Float;

/// Below this many elements, elementwise work stays on the calling thread.
pub(crate) const PAR_THRESHOLD: usize = 1 << 15;

/// NumPy broadcasting of two shapes; `None` if incompatible.
pub fn broadcast_shapes(a: &[usize], b: &[usize]) -> Option<Vec<usize>> {
    let n = a.len().max(b.len());
    let mut out = vec![0; n];
    for i in 0..n {
        let da = if i + a.len() >= n { a[i + a.len() - n] } else { 1 };
        let db = if i + b.len() >= n { b[i + b.len() - n] } else { 1 };
        out[i] = match (da, db) {
            (x, y) if x == y => x,
            (1, y) => y,
            (x, 1) => x,
            _ => return None,
        };
    }
    Some(out)
}

#[track_caller]
pub(crate) fn broadcast_or_panic(op: &str, a: &[usize], b: &[usize]) -> Vec<usize> {
    // A `match`, not `unwrap_or_else(|| panic!(..))`: a closure would be the panic's location, not the caller.
    match broadcast_shapes(a, b) {
        Some(shape) => shape,
        None => panic!("{op}: shapes {a:?} and {b:?} do not broadcast"),
    }
}

/// Sums a gradient of a broadcast result back to the shape of the input that was broadcast.
pub(crate) fn sum_to_shape<F: Float>(g: &ArrayD<F>, shape: &[usize]) -> ArrayD<F> {
    if g.shape() == shape {
        return copy(g);
    }
    let mut out = g.clone();
    while out.ndim() > shape.len() {
        out = out.sum_axis(Axis(0));
    }
    for (i, &d) in shape.iter().enumerate() {
        if d == 1 && out.shape()[i] != 1 {
            out = out.sum_axis(Axis(i)).insert_axis(Axis(i));
        }
    }
    out
}

/// Runs `f` compiled for AVX2 and FMA when the CPU has them (else as built). The crate is built for baseline
/// x86-64 (SSE2) so that its binaries run anywhere; the elementwise loops inlined into `f` then vectorise 8 lanes
/// wide instead of 4. Floating-point results are the same bit for bit: Rust never reassociates or contracts
/// float arithmetic, so only the width of the instructions changes.
#[inline(always)]
pub(crate) fn simd<R>(f: impl FnOnce() -> R) -> R {
    #[cfg(target_arch = "x86_64")]
    {
        #[target_feature(enable = "avx2,fma")]
        fn avx2<R>(f: impl FnOnce() -> R) -> R {
            f()
        }
        if simd_kernels() {
            // SAFETY: the CPU has the features `avx2` was compiled for (checked just above).
            return unsafe { avx2(f) };
        }
    }
    f()
}

static SIMD_KERNELS: std::sync::atomic::AtomicU8 = std::sync::atomic::AtomicU8::new(0);

/// Whether elementwise loops run their AVX2 build: the CPU has AVX2 and FMA, `STRATA_SIMD=off` is not set and
/// [`set_simd_kernels`] did not turn them off.
pub fn simd_kernels() -> bool {
    use std::sync::atomic::Ordering;
    match SIMD_KERNELS.load(Ordering::Relaxed) {
        1 => true,
        2 => false,
        _ => {
            let on = std::env::var("STRATA_SIMD").map_or(true, |v| v != "off") && cpu_has_avx2();
            SIMD_KERNELS.store(if on { 1 } else { 2 }, Ordering::Relaxed);
            on
        }
    }
}

/// Turns the AVX2 build of the elementwise loops on (where the CPU has it) or off, for the rest of the process
/// (results are the same either way; tests and benchmarks compare the two).
pub fn set_simd_kernels(enabled: bool) {
    let on = enabled && cpu_has_avx2();
    SIMD_KERNELS.store(if on { 1 } else { 2 }, std::sync::atomic::Ordering::Relaxed);
}

fn cpu_has_avx2() -> bool {
    #[cfg(target_arch = "x86_64")]
    {
        std::is_x86_feature_detected!("avx2") && std::is_x86_feature_detected!("fma")
    }
    #[cfg(not(target_arch = "x86_64"))]
    {
        false
    }
}

/// Chunk length of the slice kernels: large enough to amortise scheduling, small enough to balance.
const CHUNK: usize = 1 << 14;

/// Fills a fresh vector of length `n` with `f(chunk_start, chunk)` over fixed-size chunks, in parallel for
/// large `n`, with no zero-fill pass before.
///
/// # Safety
/// `f` must initialise every element of every chunk it is given; the vector's length is set to `n` after it
/// returns, so an element left uninitialised would be read as a value.
pub(crate) unsafe fn fill_vec<F: Float>(
    n: usize,
    f: impl Fn(usize, &mut [std::mem::MaybeUninit<F>]) + Sync + Send,
) -> Vec<F> {
    let mut out: Vec<F> = Vec::with_capacity(n);
    let spare = &mut out.spare_capacity_mut()[..n];
    if n >= PAR_THRESHOLD {
        spare.par_chunks_mut(CHUNK).enumerate().for_each(|(i, c)| simd(|| f(i * CHUNK, c)));
    } else {
        spare.chunks_mut(CHUNK).enumerate().for_each(|(i, c)| simd(|| f(i * CHUNK, c)));
    }
    // SAFETY: the capacity is `n`, and the caller's contract is that `f` initialised all `n` elements.
    unsafe { out.set_len(n) };
    out
}

/// A zero array, filled in parallel (a serial memset of a large buffer would idle the other cores).
pub(crate) fn zeros<F: Float>(shape: &[usize]) -> ArrayD<F> {
    ArrayD::from_shape_vec(IxDyn(shape), zero_vec(shape.iter().product())).expect("size")
}

/// `n` zeros, filled in parallel for large `n`.
pub(crate) fn zero_vec<F: Float>(n: usize) -> Vec<F> {
    // SAFETY: the closure writes every element of its chunk.
    unsafe {
        fill_vec(n, |_, c| {
            c.iter_mut().for_each(|o| {
                o.write(F::zero());
            })
        })
    }
}

/// `x` itself when its value is row-major (a handle: nothing is copied), else a row-major copy as a constant.
/// Ops that keep an input for their backward pass keep it this way.
pub(crate) fn row_major<F: Float>(x: &crate::Tensor<F>) -> crate::Tensor<F> {
    if x.value().is_standard_layout() { x.clone() } else { crate::Tensor::new(copy(x.value())) }
}

/// A standard-layout (row-major) copy of any array or view, in parallel for large arrays.
pub(crate) fn copy<F: Float>(x: &ArrayD<F>) -> ArrayD<F> {
    if x.as_slice().is_some() { map(x, |v| v) } else { standard_copy(x.view()) }
}

/// A row-major copy of a strided view. (`Zip::map_collect` would keep the input's memory order, which is
/// not row-major for permuted views.)
pub(crate) fn standard_copy<F: Float>(v: ndarray::ArrayViewD<'_, F>) -> ArrayD<F> {
    let mut out = ArrayD::<F>::uninit(v.raw_dim());
    let z = Zip::from(&mut out).and(&v);
    if v.len() >= PAR_THRESHOLD {
        z.par_for_each(|o, &x| {
            o.write(x);
        });
    } else {
        z.for_each(|o, &x| {
            o.write(x);
        });
    }
    // SAFETY: every element was written above.
    unsafe { out.assume_init() }
}

/// Elementwise `f(x)`, parallel for large arrays (each element independent: deterministic). Contiguous
/// inputs run as plain slice loops, which the compiler vectorises.
pub(crate) fn map<F: Float>(x: &ArrayD<F>, f: impl Fn(F) -> F + Sync + Send) -> ArrayD<F> {
    match x.as_slice() {
        Some(xs) => {
            // SAFETY: the chunk and `xs[start..end]` have the same length, so the zip writes every element.
            let out = unsafe {
                fill_vec(xs.len(), |start, o| {
                    let end = start + o.len();
                    o.iter_mut().zip(&xs[start..end]).for_each(|(o, &v)| {
                        o.write(f(v));
                    })
                })
            };
            ArrayD::from_shape_vec(x.raw_dim(), out).expect("same size")
        }
        None => map(&standard_copy(x.view()), f),
    }
}

/// Elementwise `f(a, b)` of two arrays (broadcast).
pub(crate) fn zip_map<F: Float>(a: &ArrayD<F>, b: &ArrayD<F>, f: impl Fn(F, F) -> F + Sync + Send) -> ArrayD<F> {
    if let (true, Some(xs), Some(ys)) = (a.shape() == b.shape(), a.as_slice(), b.as_slice()) {
        // SAFETY: `xs` and `ys` have the chunk's length over `start..end`, so the zip writes every element.
        let out = unsafe {
            fill_vec(xs.len(), |start, o| {
                let end = start + o.len();
                o.iter_mut().zip(xs[start..end].iter().zip(&ys[start..end])).for_each(|(o, (&x, &y))| {
                    o.write(f(x, y));
                })
            })
        };
        return ArrayD::from_shape_vec(a.raw_dim(), out).expect("same size");
    }
    if a.shape() == b.shape() {
        if a.len() >= PAR_THRESHOLD {
            Zip::from(a).and(b).par_map_collect(|&x, &y| f(x, y))
        } else {
            Zip::from(a).and(b).map_collect(|&x, &y| f(x, y))
        }
    } else {
        let shape = broadcast_shapes(a.shape(), b.shape()).expect("caller checked broadcast");
        let av = a.broadcast(IxDyn(&shape)).expect("broadcast");
        let bv = b.broadcast(IxDyn(&shape)).expect("broadcast");
        if av.len() >= PAR_THRESHOLD {
            Zip::from(&av).and(&bv).par_map_collect(|&x, &y| f(x, y))
        } else {
            Zip::from(&av).and(&bv).map_collect(|&x, &y| f(x, y))
        }
    }
}

/// Elementwise `f(a, b, c)` of three same-shape arrays.
pub(crate) fn zip3_map<F: Float>(
    a: &ArrayD<F>,
    b: &ArrayD<F>,
    c: &ArrayD<F>,
    f: impl Fn(F, F, F) -> F + Sync + Send,
) -> ArrayD<F> {
    if a.len() >= PAR_THRESHOLD {
        Zip::from(a).and(b).and(c).par_map_collect(|&x, &y, &z| f(x, y, z))
    } else {
        Zip::from(a).and(b).and(c).map_collect(|&x, &y, &z| f(x, y, z))
    }
}

/// Normalises a possibly negative axis.
#[track_caller]
pub(crate) fn axis_index(op: &str, axis: isize, ndim: usize) -> usize {
    let a = if axis < 0 { axis + ndim as isize } else { axis };
    assert!(a >= 0 && (a as usize) < ndim, "{op}: axis {axis} out of range for {ndim} dimensions");
    a as usize
}
