//! Dense linear algebra in f64 for the theory crates (LAPACK through ndarray-linalg). Singular,
//! non-symmetric-where-it-matters or non-finite inputs are errors, never NaNs.

use ndarray::{Array1, Array2};
use ndarray_linalg::{Cholesky, Eigh, SVD, Solve, UPLO};

use crate::{Error, Result};

fn check(name: &str, a: &Array2<f64>, square: bool) -> Result<()> {
    // Single-threaded OpenBLAS also for LAPACK: its threaded LU recurses with large stack buffers and overflows the
    // 2 MiB stacks of rayon workers (a crash seen when fits run inside `par_iter`).
    crate::ops::matmul::runtime_setup();
    if a.iter().any(|x| !x.is_finite()) {
        return Err(Error::Linalg(format!("{name}: input has non-finite entries")));
    }
    if square && a.nrows() != a.ncols() {
        return Err(Error::Linalg(format!("{name}: needs a square matrix, got {}x{}", a.nrows(), a.ncols())));
    }
    Ok(())
}

/// Eigenvalues (ascending) and eigenvectors (columns) of a symmetric matrix (the lower triangle is read).
pub fn eigh(a: &Array2<f64>) -> Result<(Array1<f64>, Array2<f64>)> {
    check("eigh", a, true)?;
    a.eigh(UPLO::Lower).map_err(|e| Error::Linalg(format!("eigh: {e}")))
}

/// Solves `a x = b` for a square, non-singular `a`.
pub fn solve(a: &Array2<f64>, b: &Array1<f64>) -> Result<Array1<f64>> {
    check("solve", a, true)?;
    if b.len() != a.nrows() || b.iter().any(|x| !x.is_finite()) {
        return Err(Error::Linalg(format!(
            "solve: right-hand side of length {} for a {}x{} matrix (or non-finite)",
            b.len(),
            a.nrows(),
            a.ncols()
        )));
    }
    let x = a.solve(b).map_err(|e| Error::Linalg(format!("solve: matrix is singular ({e})")))?;
    if x.iter().any(|v| !v.is_finite()) {
        return Err(Error::Linalg("solve: matrix is numerically singular".into()));
    }
    Ok(x)
}

/// Solves `a X = B` column by column.
pub fn solve_matrix(a: &Array2<f64>, b: &Array2<f64>) -> Result<Array2<f64>> {
    let mut x = Array2::zeros((a.ncols(), b.ncols()));
    for (j, col) in b.columns().into_iter().enumerate() {
        x.column_mut(j).assign(&solve(a, &col.to_owned())?);
    }
    Ok(x)
}

/// Moore-Penrose pseudo-inverse through the SVD; singular values below `rcond * max` count as zero.
pub fn pinv(a: &Array2<f64>, rcond: f64) -> Result<Array2<f64>> {
    check("pinv", a, false)?;
    let (u, s, vt) = a.svd(true, true).map_err(|e| Error::Linalg(format!("pinv: {e}")))?;
    let (u, vt) = (u.expect("asked for u"), vt.expect("asked for vt"));
    let cutoff = rcond * s.iter().copied().fold(0.0, f64::max);
    let k = s.len();
    let mut out = Array2::zeros((a.ncols(), a.nrows()));
    for i in 0..k {
        if s[i] > cutoff {
            let vi = vt.row(i);
            let ui = u.column(i);
            for r in 0..a.ncols() {
                for c in 0..a.nrows() {
                    out[[r, c]] += vi[r] * ui[c] / s[i];
                }
            }
        }
    }
    Ok(out)
}

/// Lower-triangular Cholesky factor `L` with `a = L L^T`; an error if `a` is not positive definite.
pub fn cholesky(a: &Array2<f64>) -> Result<Array2<f64>> {
    check("cholesky", a, true)?;
    a.cholesky(UPLO::Lower).map_err(|e| Error::Linalg(format!("cholesky: matrix is not positive definite ({e})")))
}
