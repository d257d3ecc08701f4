//! The matrix-product backends on the workloads' own shapes: GFLOP/s of Strata's blocked product (row blocks on
//! rayon, one single-threaded product each) with OpenBLAS and with matrixmultiply, and of one OpenBLAS call with
//! its own 2 threads, interleaved per shape (median of the rounds). Run with and without
//! `OPENBLAS_CORETYPE=Haswell` to see what the environment's kernel choice costs.
//!
//! usage: gemm_backends [rounds]
use std::hint::black_box;
use std::time::Instant;

use tensor::ndarray::{Array2, linalg::general_mat_mul};
use tensor::{GemmBackend, Tensor, no_grad, set_gemm_backend};

unsafe extern "C" {
    fn openblas_set_num_threads(n: std::os::raw::c_int);
}

/// (name, m, k, n) as the forward and backward passes call them (`x @ w^T`, `g @ w`, `x^T @ g`).
const SHAPES: [(&str, usize, usize, usize); 12] = [
    ("W2 qkv fwd", 2048, 256, 768),
    ("W2 fc fwd", 2048, 256, 1024),
    ("W2 out fwd / fc dX", 2048, 1024, 256),
    ("W2 qkv dX", 2048, 768, 256),
    ("W2 fc dW", 1024, 2048, 256),
    ("W2 qkv dW", 768, 2048, 256),
    ("MiniLM ffn fwd", 2048, 384, 1536),
    ("MiniLM ffn dW", 1536, 2048, 384),
    ("nanoGPT fc fwd", 768, 128, 512),
    ("nanoGPT fc dW", 512, 768, 128),
    ("CNN conv2 im2col", 73728, 288, 64),
    ("square 2048", 2048, 2048, 2048),
];

fn main() {
    let rounds: usize = std::env::args().nth(1).and_then(|s| s.parse().ok()).unwrap_or(3);
    tensor::runtime_setup();
    println!(
        "# OpenBLAS core {}, rayon threads {}, OPENBLAS_CORETYPE {}",
        tensor::openblas_core(),
        rayon::current_num_threads(),
        std::env::var("OPENBLAS_CORETYPE").unwrap_or_else(|_| "unset".into())
    );
    println!("| shape (m x k x n) | Strata + OpenBLAS | Strata + matrixmultiply | OpenBLAS, 2 threads, one call |");
    println!("|---|---|---|---|");
    for (name, m, k, n) in SHAPES {
        let a = Tensor::<f32>::new(tensor::normal(&[m, k], 0.0, 1.0, &mut tensor::seeded(0)));
        let b = Tensor::<f32>::new(tensor::normal(&[k, n], 0.0, 1.0, &mut tensor::seeded(1)));
        let flop = 2.0 * (m * k * n) as f64;
        let reps = ((2e9 / flop).ceil() as usize).clamp(3, 200);
        let mut samples = [vec![], vec![], vec![]];
        let av = a.value().view().into_dimensionality::<tensor::ndarray::Ix2>().expect("2-d").to_owned();
        let bv = b.value().view().into_dimensionality::<tensor::ndarray::Ix2>().expect("2-d").to_owned();
        let mut c = Array2::<f32>::zeros((m, n));
        for _ in 0..rounds {
            for (i, backend) in [GemmBackend::OpenBlas, GemmBackend::MatrixMultiply].into_iter().enumerate() {
                set_gemm_backend(backend);
                samples[i].push(rate(flop, reps, || drop(black_box(no_grad(|| a.matmul(&b))))));
            }
            // SAFETY: plain int setter of OpenBLAS's thread count; restored to 1 (Strata's setting) below.
            unsafe { openblas_set_num_threads(2) };
            samples[2].push(rate(flop, reps, || general_mat_mul(1.0, &av, &bv, 0.0, &mut c)));
            // SAFETY: as above.
            unsafe { openblas_set_num_threads(1) };
        }
        let med = |v: &mut Vec<f64>| {
            v.sort_by(f64::total_cmp);
            v[v.len() / 2]
        };
        let [s0, s1, s2] = &mut samples;
        println!("| {name} ({m} x {k} x {n}) | {:.0} | {:.0} | {:.0} |", med(s0), med(s1), med(s2));
    }
}

/// GFLOP/s of the median of `reps` calls after one warm-up call.
fn rate(flop: f64, reps: usize, mut f: impl FnMut()) -> f64 {
    f();
    let mut t: Vec<f64> = (0..reps)
        .map(|_| {
            let t0 = Instant::now();
            f();
            t0.elapsed().as_secs_f64()
        })
        .collect();
    t.sort_by(f64::total_cmp);
    flop / t[reps / 2] / 1e9
}
