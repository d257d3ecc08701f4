//! Matrix products: 2-D through BLAS, `[.., m, k] @ [k, n]` as one flattened BLAS call, and batched
//! products (batch dims broadcast) as a parallel loop of single-threaded GEMMs.

use ndarray::{ArrayD, Ix2, IxDyn, linalg::general_mat_mul};
use rayon::prelude::*;

use super::{broadcast_shapes, sum_to_shape};
use crate::{Float, Tensor};

unsafe extern "C" {
    fn openblas_set_num_threads(n: std::os::raw::c_int);
}

#[cfg(all(target_os = "linux", target_env = "gnu"))]
unsafe extern "C" {
    fn mallopt(param: std::os::raw::c_int, value: std::os::raw::c_int) -> std::os::raw::c_int;
}

/// One-time process setup before the first product (idempotent; Strata's own products call it, and code that calls
/// BLAS through ndarray directly, such as the datamodels crate's batched training, should call it first). Both
/// settings change the whole process, so a host program can opt out of each with an environment variable:
/// - OpenBLAS runs single-threaded (`openblas_set_num_threads(1)`; skipped when `STRATA_KEEP_BLAS_THREADS` is
///   set): Strata parallelises GEMMs itself on rayon's pool, so BLAS worker threads never spin against rayon
///   workers for the same cores. This also changes BLAS calls the host makes itself.
/// - On glibc, arrays up to 32 MiB are served from the heap instead of fresh `mmap`s and the heap is trimmed
///   only above 1 GiB free (`mallopt`; skipped when `STRATA_KEEP_MALLOC` is set), so the activations of a
///   training step reuse memory instead of page-faulting it in every step (PyTorch's caching allocator solves
///   the same problem). The host's process keeps more freed memory as a result.
pub fn runtime_setup() {
    static ONCE: std::sync::Once = std::sync::Once::new();
    ONCE.call_once(|| {
        if std::env::var_os("STRATA_KEEP_BLAS_THREADS").is_none() {
            // SAFETY: `openblas_set_num_threads` takes a plain int, has no preconditions and is thread-safe in
            // OpenBLAS's pthread build (the one linked); it only changes how many threads later calls use.
            unsafe { openblas_set_num_threads(1) };
        }
        #[cfg(all(target_os = "linux", target_env = "gnu"))]
        if std::env::var_os("STRATA_KEEP_MALLOC").is_none() {
            const M_TRIM_THRESHOLD: i32 = -1;
            const M_MMAP_THRESHOLD: i32 = -3;
            // SAFETY: `mallopt` takes two ints and only tunes glibc's allocator thresholds; it is documented as
            // safe to call at any time, and invalid values are rejected with a 0 return (ignored: tuning only).
            unsafe {
                mallopt(M_MMAP_THRESHOLD, 32 << 20);
                mallopt(M_TRIM_THRESHOLD, 1 << 30);
            }
        }
    });
}

static MATMUL_FLOPS: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);

/// Floating-point operations (`2 m n k` per product) of every matrix product run so far in this process,
/// forward and backward. FLOP accounting elsewhere is checked against this counter.
pub fn matmul_flops() -> u64 {
    MATMUL_FLOPS.load(std::sync::atomic::Ordering::Relaxed)
}

pub(crate) fn count_flops(m: usize, n: usize, k: usize) {
    MATMUL_FLOPS.fetch_add(2 * (m * n * k) as u64, std::sync::atomic::Ordering::Relaxed);
}

/// Rows (or columns) per parallel block: at least 4 blocks and at most 512 per block. A function of the
/// shape only, never of the thread count, so every output entry comes from the same BLAS call shape and
/// results do not depend on the number of threads.
fn block_len(len: usize) -> usize {
    let blocks = len.div_ceil(512).max(4);
    len.div_ceil(blocks).next_multiple_of(16)
}

/// `c = a @ b + beta * c` for 2-D views through BLAS; large products are split into blocks of output rows
/// computed in parallel (a wide output is handled as its transpose, `c^T = b^T a^T`, so its columns split).
pub(crate) fn gemm_into<F: Float>(
    a: ndarray::ArrayView2<F>,
    b: ndarray::ArrayView2<F>,
    beta: F,
    mut c: ndarray::ArrayViewMut2<F>,
) {
    runtime_setup();
    count_flops(a.nrows(), b.ncols(), a.ncols());
    gemm_blocks(a, b, beta, c.view_mut());
}

/// `c = a @ b + beta * c` as one single-threaded product, for callers that run many independent products in
/// parallel themselves (the convolution, one image per task).
pub(crate) fn gemm_serial<F: Float>(
    a: ndarray::ArrayView2<F>,
    b: ndarray::ArrayView2<F>,
    beta: F,
    c: ndarray::ArrayViewMut2<F>,
) {
    runtime_setup();
    count_flops(a.nrows(), b.ncols(), a.ncols());
    gemm_one(gemm_backend(), a, b, beta, c);
}

fn gemm_blocks<F: Float>(
    a: ndarray::ArrayView2<F>,
    b: ndarray::ArrayView2<F>,
    beta: F,
    mut c: ndarray::ArrayViewMut2<F>,
) {
    let (m, k, n) = (a.nrows(), a.ncols(), b.ncols());
    let backend = gemm_backend();
    if m * n * k < 1 << 21 || m.max(n) < 64 {
        gemm_one(backend, a, b, beta, c);
    } else if m < n {
        gemm_blocks(b.reversed_axes(), a.reversed_axes(), beta, c.reversed_axes());
    } else {
        let rows = block_len(m);
        let a_blocks: Vec<_> = a.axis_chunks_iter(ndarray::Axis(0), rows).collect();
        c.axis_chunks_iter_mut(ndarray::Axis(0), rows)
            .into_par_iter()
            .zip(a_blocks.into_par_iter())
            .for_each(|(cb, ab)| gemm_one(backend, ab, b, beta, cb));
    }
}

/// One single-threaded product `c = a @ b + beta * c` on the chosen backend.
fn gemm_one<F: Float>(
    backend: GemmBackend,
    a: ndarray::ArrayView2<F>,
    b: ndarray::ArrayView2<F>,
    beta: F,
    mut c: ndarray::ArrayViewMut2<F>,
) {
    match backend {
        GemmBackend::OpenBlas => general_mat_mul(F::one(), &a, &b, beta, &mut c),
        GemmBackend::MatrixMultiply => {
            let (m, k, n) = (a.nrows(), a.ncols(), b.ncols());
            let (sa, sb) = (a.strides(), b.strides());
            let (rsc, csc) = (c.strides()[0], c.strides()[1]);
            // SAFETY: the views' pointers and element strides describe m x k, k x n and m x n matrices that
            // live as long as the views; `c` is borrowed mutably, so nothing else writes it.
            unsafe {
                F::gemm_raw(
                    m,
                    k,
                    n,
                    F::one(),
                    a.as_ptr(),
                    sa[0],
                    sa[1],
                    b.as_ptr(),
                    sb[0],
                    sb[1],
                    beta,
                    c.as_mut_ptr(),
                    rsc,
                    csc,
                )
            }
        }
    }
}

/// Which library runs the single-threaded products of the linear layers and convolutions (Strata parallelises
/// over blocks of the output itself, so either gives results that do not depend on the thread count; the two
/// differ from each other in rounding). Batched products (attention) always use matrixmultiply.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum GemmBackend {
    /// The system OpenBLAS (its kernels are chosen at load time from the CPU, or by `OPENBLAS_CORETYPE`).
    OpenBlas,
    /// The `matrixmultiply` crate, with its AVX-512 / AVX2+FMA kernels chosen from the CPU at run time.
    MatrixMultiply,
}

static GEMM_BACKEND: std::sync::atomic::AtomicU8 = std::sync::atomic::AtomicU8::new(0);

/// The backend in use: set by [`set_gemm_backend`], else by `STRATA_GEMM=openblas|matrixmultiply`, else OpenBLAS.
/// OpenBLAS stays the default by measurement (docs/performance.md, `gemm_backends`): on the workloads' shapes it
/// was as fast or faster than matrixmultiply, also with `OPENBLAS_CORETYPE=Haswell` on an AVX-512 machine.
pub fn gemm_backend() -> GemmBackend {
    use std::sync::atomic::Ordering;
    match GEMM_BACKEND.load(Ordering::Relaxed) {
        1 => return GemmBackend::OpenBlas,
        2 => return GemmBackend::MatrixMultiply,
        _ => {}
    }
    let chosen = match std::env::var("STRATA_GEMM").ok().as_deref() {
        Some("matrixmultiply") => GemmBackend::MatrixMultiply,
        _ => GemmBackend::OpenBlas,
    };
    set_gemm_backend(chosen);
    chosen
}

/// Chooses the backend for the rest of the process (benchmarks compare them this way).
pub fn set_gemm_backend(backend: GemmBackend) {
    let code = match backend {
        GemmBackend::OpenBlas => 1,
        GemmBackend::MatrixMultiply => 2,
    };
    GEMM_BACKEND.store(code, std::sync::atomic::Ordering::Relaxed);
}

unsafe extern "C" {
    fn openblas_get_corename() -> *const std::os::raw::c_char;
}

/// The name of the kernel set OpenBLAS runs (`Cooperlake`, `SkylakeX`, `Haswell`, ...).
pub fn openblas_core() -> String {
    // SAFETY: returns a pointer to a static NUL-terminated string owned by OpenBLAS.
    unsafe { std::ffi::CStr::from_ptr(openblas_get_corename()) }.to_string_lossy().into_owned()
}

/// `a @ b` for 2-D arrays through BLAS (ndarray picks sgemm/dgemm for contiguous or transposed layouts).
pub(crate) fn mm2<F: Float>(a: ndarray::ArrayView2<F>, b: ndarray::ArrayView2<F>) -> ndarray::Array2<F> {
    let mut c = super::zeros::<F>(&[a.nrows(), b.ncols()]).into_dimensionality::<Ix2>().expect("2-d");
    // `c` is already zero: beta 1 adds the product to it, where beta 0 would make BLAS zero it a second time.
    gemm_into(a, b, F::one(), c.view_mut());
    c
}

fn view2<F: Float>(x: &ArrayD<F>) -> ndarray::ArrayView2<'_, F> {
    x.view().into_dimensionality::<Ix2>().expect("2-D")
}

/// Batched `a @ b` with `a: [batch.., m, k]`, `b: [batch.., k, n]` (batch dims broadcast);
/// `trans_a`/`trans_b` read the last two axes transposed. Returns `[batch.., m, n]`.
pub(crate) fn batched_mm<F: Float>(a: &ArrayD<F>, b: &ArrayD<F>, trans_a: bool, trans_b: bool) -> ArrayD<F> {
    runtime_setup();
    let a = a.as_standard_layout();
    let b = b.as_standard_layout();
    let (ra, rb) = (a.ndim(), b.ndim());
    let (a0, a1) = (a.shape()[ra - 2], a.shape()[ra - 1]);
    let (b0, b1) = (b.shape()[rb - 2], b.shape()[rb - 1]);
    let (m, k) = if trans_a { (a1, a0) } else { (a0, a1) };
    let (k2, n) = if trans_b { (b1, b0) } else { (b0, b1) };
    assert_eq!(k, k2, "matmul: inner dimensions {k} and {k2} differ");
    let batch = broadcast_shapes(&a.shape()[..ra - 2], &b.shape()[..rb - 2]).expect("matmul: batch dims broadcast");
    let count: usize = batch.iter().product();
    count_flops(count * m, n, k);
    let offsets = |shape: &[usize], mat: usize| -> Vec<usize> {
        // Offset of each broadcast batch element into a standard-layout array with batch dims `shape`.
        let pad = batch.len() - shape.len();
        let mut strides = vec![0usize; batch.len()];
        let mut s = mat;
        for i in (0..shape.len()).rev() {
            strides[pad + i] = if shape[i] == 1 { 0 } else { s };
            s *= shape[i];
        }
        (0..count)
            .map(|mut flat| {
                let mut off = 0;
                for i in (0..batch.len()).rev() {
                    off += (flat % batch[i]) * strides[i];
                    flat /= batch[i];
                }
                off
            })
            .collect()
    };
    let off_a = offsets(&a.shape()[..ra - 2], a0 * a1);
    let off_b = offsets(&b.shape()[..rb - 2], b0 * b1);
    let (sa, sb) = (a.as_slice().expect("standard"), b.as_slice().expect("standard"));
    let (rsa, csa) = if trans_a { (1, a1 as isize) } else { (a1 as isize, 1) };
    let (rsb, csb) = if trans_b { (1, b1 as isize) } else { (b1 as isize, 1) };
    let mut out_shape = batch.clone();
    out_shape.extend([m, n]);
    let mut out = ArrayD::<F>::zeros(IxDyn(&out_shape));
    if m * n == 0 {
        return out;
    }
    let work = |(i, c): (usize, &mut [F])| {
        // SAFETY: offsets and strides stay inside the standard-layout slices; `c` is this batch's m*n block.
        unsafe {
            F::gemm_raw(
                m,
                k,
                n,
                F::one(),
                sa.as_ptr().add(off_a[i]),
                rsa,
                csa,
                sb.as_ptr().add(off_b[i]),
                rsb,
                csb,
                F::zero(),
                c.as_mut_ptr(),
                n as isize,
                1,
            )
        }
    };
    let chunks = out.as_slice_mut().expect("fresh array").chunks_mut(m * n).enumerate();
    if count > 1 && count * m * n * k >= 1 << 16 {
        chunks.par_bridge_ordered(work);
    } else {
        chunks.for_each(work);
    }
    out
}

/// Parallel for-each over an enumerated chunk iterator (each item independent, so the result is
/// deterministic).
trait ParOrdered<'a, F: Send + 'a> {
    fn par_bridge_ordered(self, f: impl Fn((usize, &'a mut [F])) + Sync + Send);
}

impl<'a, F: Send + 'a> ParOrdered<'a, F> for std::iter::Enumerate<std::slice::ChunksMut<'a, F>> {
    fn par_bridge_ordered(self, f: impl Fn((usize, &'a mut [F])) + Sync + Send) {
        let items: Vec<(usize, &'a mut [F])> = self.collect();
        items.into_par_iter().for_each(f);
    }
}

impl<F: Float> Tensor<F> {
    /// Matrix product with NumPy semantics for rank >= 2: `[.., m, k] @ [.., k, n]`, batch dims broadcast.
    ///
    /// # Panics
    /// If either input has rank < 2 or the inner dimensions differ.
    #[track_caller]
    pub fn matmul(&self, other: &Tensor<F>) -> Tensor<F> {
        let (ra, rb) = (self.ndim(), other.ndim());
        assert!(ra >= 2 && rb >= 2, "matmul: needs rank >= 2, got {:?} @ {:?}", self.shape(), other.shape());
        let k = self.shape()[ra - 1];
        assert_eq!(
            k,
            other.shape()[rb - 2],
            "matmul: inner dimensions differ in {:?} @ {:?}",
            self.shape(),
            other.shape()
        );
        if rb == 2 {
            return self.matmul_weight(other);
        }
        assert!(
            broadcast_shapes(&self.shape()[..ra - 2], &other.shape()[..rb - 2]).is_some(),
            "matmul: batch dims of {:?} and {:?} do not broadcast",
            self.shape(),
            other.shape()
        );
        let v = batched_mm(self.value(), other.value(), false, false);
        let (ac, bc) = (self.clone(), other.clone());
        Tensor::from_op(v, &[self, other], move |g, needs| {
            let ga = needs[0].then(|| sum_to_shape(&batched_mm(g, bc.value(), false, true), ac.shape()));
            let gb = needs[1].then(|| sum_to_shape(&batched_mm(ac.value(), g, true, false), bc.shape()));
            vec![ga, gb]
        })
    }

    /// `[.., m, k] @ [k, n]`: the leading dims are flattened into one BLAS call.
    fn matmul_weight(&self, w: &Tensor<F>) -> Tensor<F> {
        let k = w.shape()[0];
        let n = w.shape()[1];
        let rows = self.len() / k.max(1);
        // A contiguous input is used in place (and kept, not copied, for the weight gradient).
        let x = super::row_major(self);
        let y = mm2(x.value().view().into_shape_with_order((rows, k)).expect("standard layout"), view2(w.value()));
        let mut out_shape = self.shape().to_vec();
        *out_shape.last_mut().expect("rank >= 2") = n;
        let v = y.into_dyn().into_shape_with_order(IxDyn(&out_shape)).expect("size");
        let in_shape = self.shape().to_vec();
        let wc = w.clone();
        let x = if w.is_tracked() { Some(x) } else { None };
        Tensor::from_op(v, &[self, w], move |g, needs| {
            let g = g.as_standard_layout();
            let g2 = g.view().into_shape_with_order((rows, n)).expect("standard layout");
            let gx = needs[0].then(|| {
                mm2(g2, view2(wc.value()).t()).into_dyn().into_shape_with_order(IxDyn(&in_shape)).expect("size")
            });
            let gw = needs[1].then(|| {
                let x = x.as_ref().expect("kept for weight grad");
                mm2(x.value().view().into_shape_with_order((rows, k)).expect("standard layout").t(), g2).into_dyn()
            });
            vec![gx, gw]
        })
    }
}

impl<F: Float> Tensor<F> {
    /// `x @ weight^T + bias` with PyTorch's weight layout `[out, in]`; leading dims of `x` are flattened into
    /// one BLAS call and the bias add is fused.
    #[track_caller]
    pub fn linear(&self, weight: &Tensor<F>, bias: Option<&Tensor<F>>) -> Tensor<F> {
        assert_eq!(weight.ndim(), 2, "linear: weight {:?} must be [out, in]", weight.shape());
        let (out_f, in_f) = (weight.shape()[0], weight.shape()[1]);
        assert!(
            self.ndim() >= 1 && *self.shape().last().expect("rank >= 1") == in_f,
            "linear: input {:?} does not end in {in_f} features",
            self.shape()
        );
        if let Some(b) = bias {
            assert_eq!(b.shape(), [out_f], "linear: bias {:?} for {out_f} outputs", b.shape());
        }
        let rows = self.len() / in_f.max(1);
        // A contiguous input is used in place (and kept, not copied, for the weight gradient).
        let x = super::row_major(self);
        fn x2<F: Float>(x: &Tensor<F>, rows: usize, cols: usize) -> ndarray::ArrayView2<'_, F> {
            x.value().view().into_shape_with_order((rows, cols)).expect("standard layout")
        }
        // The output starts as the bias rows (or zeros) and the product is added to it (beta 1), one pass each.
        let mut y = match bias {
            Some(b) => {
                let bv = b.value().as_standard_layout();
                let bs = bv.as_slice().expect("standard");
                // SAFETY: every element of every chunk is written (the bias entry of its column).
                let v = unsafe {
                    super::fill_vec(rows * out_f, |start, c| {
                        let mut col = start % out_f;
                        for o in c {
                            o.write(bs[col]);
                            col = if col + 1 == out_f { 0 } else { col + 1 };
                        }
                    })
                };
                ndarray::Array2::from_shape_vec((rows, out_f), v).expect("size")
            }
            None => super::zeros::<F>(&[rows, out_f]).into_dimensionality::<Ix2>().expect("2-d"),
        };
        gemm_into(x2(&x, rows, in_f), view2(weight.value()).t(), F::one(), y.view_mut());
        let mut out_shape = self.shape().to_vec();
        *out_shape.last_mut().expect("rank >= 1") = out_f;
        let v = y.into_dyn().into_shape_with_order(IxDyn(&out_shape)).expect("size");
        let in_shape = self.shape().to_vec();
        let wc = weight.clone();
        let x = if weight.is_tracked() { Some(x) } else { None };
        let mut inputs = vec![self, weight];
        if let Some(b) = bias {
            inputs.push(b);
        }
        let has_bias = bias.is_some();
        Tensor::from_op(v, &inputs, move |g, needs| {
            let g = g.as_standard_layout();
            let g2v = g.view().into_shape_with_order((rows, out_f)).expect("standard layout");
            let gx = needs[0]
                .then(|| mm2(g2v, view2(wc.value())).into_dyn().into_shape_with_order(IxDyn(&in_shape)).expect("size"));
            let gw =
                needs[1].then(|| mm2(g2v.t(), x2(x.as_ref().expect("kept for weight grad"), rows, in_f)).into_dyn());
            let mut out = vec![gx, gw];
            if has_bias {
                out.push(needs[2].then(|| column_sums(g2v)));
            }
            out
        })
    }
}

/// Sums of the columns of a row-major matrix: fixed row blocks summed in parallel, then in order (the
/// result does not depend on the thread count).
fn column_sums<F: Float>(m: ndarray::ArrayView2<F>) -> ArrayD<F> {
    let cols = m.ncols();
    let partial: Vec<ndarray::Array1<F>> = m
        .axis_chunks_iter(ndarray::Axis(0), 256)
        .into_par_iter()
        .map(|block| block.sum_axis(ndarray::Axis(0)))
        .collect();
    let mut total = ndarray::Array1::<F>::zeros(cols);
    for p in partial {
        total += &p;
    }
    total.into_dyn()
}
