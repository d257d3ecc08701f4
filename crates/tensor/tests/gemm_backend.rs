//! Both matrix-product backends against a direct sum, through every blocked path (plain, transposed output,
//! linear with bias, its backward), and each independent of the thread count. A binary of its own: the backend
//! is process-wide state.

use strata_tensor::ndarray::{ArrayD, IxDyn};
use strata_tensor::{GemmBackend, Tensor, normal, seeded, set_gemm_backend};

fn direct(a: &ArrayD<f64>, b: &ArrayD<f64>) -> ArrayD<f64> {
    let (m, k, n) = (a.shape()[0], a.shape()[1], b.shape()[1]);
    ArrayD::from_shape_fn(IxDyn(&[m, n]), |ix| (0..k).map(|p| a[[ix[0], p]] * b[[p, ix[1]]]).sum())
}

fn run_all(a: &ArrayD<f64>, b: &ArrayD<f64>) -> Vec<ArrayD<f64>> {
    let (ta, tb) = (Tensor::leaf(a.clone()), Tensor::leaf(b.clone()));
    let y = ta.matmul(&tb);
    let bias = Tensor::leaf(ArrayD::from_elem(IxDyn(&[b.shape()[1]]), 0.5));
    let lin = ta.linear(&Tensor::new(b.t().to_owned()), Some(&bias));
    let grads = (&y * &y).sum_all().backward();
    vec![y.value().clone(), lin.value().clone(), grads.get(&ta).expect("a").clone(), grads.get(&tb).expect("b").clone()]
}

#[test]
fn both_backends_agree_with_a_direct_sum_and_ignore_the_thread_count() {
    // Small (one call), tall (row blocks: m n k >= 2^21) and wide (transposed, column blocks) products.
    for (m, k, n) in [(7, 5, 3), (600, 64, 90), (90, 64, 600)] {
        let a: ArrayD<f64> = normal(&[m, k], 0.0, 1.0, &mut seeded(m as u64));
        let b: ArrayD<f64> = normal(&[k, n], 0.0, 1.0, &mut seeded(n as u64));
        let expect = direct(&a, &b);
        let mut per_backend = vec![];
        for backend in [GemmBackend::OpenBlas, GemmBackend::MatrixMultiply] {
            set_gemm_backend(backend);
            assert_eq!(strata_tensor::gemm_backend(), backend);
            let two = rayon::ThreadPoolBuilder::new().num_threads(2).build().unwrap().install(|| run_all(&a, &b));
            let one = rayon::ThreadPoolBuilder::new().num_threads(1).build().unwrap().install(|| run_all(&a, &b));
            assert_eq!(one, two, "{backend:?} {m}x{k}x{n}: results depend on the thread count");
            let err = (&two[0] - &expect).iter().fold(0.0f64, |e, x| e.max(x.abs()));
            assert!(err < 1e-10, "{backend:?} {m}x{k}x{n}: error {err}");
            let lin_err = (&two[1] - &expect).iter().fold(0.0f64, |e, x| e.max((x - 0.5).abs()));
            assert!(lin_err < 1e-10, "{backend:?} linear: error {lin_err}");
            per_backend.push(two);
        }
        for (x, y) in per_backend[0].iter().zip(&per_backend[1]) {
            let err = (x - y).iter().fold(0.0f64, |e, d| e.max(d.abs()));
            assert!(err < 1e-9, "{m}x{k}x{n}: backends differ by {err}");
        }
    }
}
