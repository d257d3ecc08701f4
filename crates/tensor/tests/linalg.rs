//! f64 linear algebra, checked by reconstruction.

use strata_tensor::linalg::{cholesky, eigh, pinv, solve};
use strata_tensor::ndarray::{Array2, array};

fn spd() -> Array2<f64> {
    array![[4.0, 1.0, 0.5], [1.0, 3.0, 0.2], [0.5, 0.2, 2.0]]
}

#[test]
fn eigh_reconstructs() {
    let a = spd();
    let (vals, vecs) = eigh(&a).unwrap();
    assert!(vals.windows(2).into_iter().all(|w| w[0] <= w[1]));
    let recon = vecs.dot(&Array2::from_diag(&vals)).dot(&vecs.t());
    assert!((&recon - &a).iter().all(|x| x.abs() < 1e-12));
}

#[test]
fn solve_and_cholesky() {
    let a = spd();
    let b = array![1.0, -2.0, 0.5];
    let x = solve(&a, &b).unwrap();
    assert!((a.dot(&x) - &b).iter().all(|v| v.abs() < 1e-12));
    let l = cholesky(&a).unwrap();
    assert!((l.dot(&l.t()) - &a).iter().all(|v| v.abs() < 1e-12));
}

#[test]
fn pinv_of_rank_deficient() {
    let a = array![[1.0, 2.0], [2.0, 4.0], [0.0, 0.0]];
    let p = pinv(&a, 1e-12).unwrap();
    // Moore-Penrose conditions: A P A = A, P A P = P.
    assert!((a.dot(&p).dot(&a) - &a).iter().all(|v| v.abs() < 1e-12));
    assert!((p.dot(&a).dot(&p) - &p).iter().all(|v| v.abs() < 1e-12));
}

#[test]
fn bad_inputs_are_errors() {
    assert!(solve(&array![[1.0, 2.0], [2.0, 4.0]], &array![1.0, 1.0]).is_err());
    assert!(cholesky(&array![[1.0, 2.0], [2.0, 1.0]]).is_err());
    assert!(eigh(&array![[f64::NAN, 0.0], [0.0, 1.0]]).is_err());
    assert!(eigh(&Array2::zeros((2, 3))).is_err());
}
