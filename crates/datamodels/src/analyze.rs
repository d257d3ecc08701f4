//! The analyzer: datamodels, their quality and their limits from anyone's (masks, outputs) arrays, MadryLab's
//! released format included (bool or 0/1 masks `[models, N]`, outputs `[models, T]` in f16/f32/f64).

use serde::{Deserialize, Serialize};
use tensor::ndarray::{Array1, Array2};

use crate::fit::{ResidualEstimate, residual_from_pairs};
use crate::store::Matrix;
use crate::{Error, Result};

/// Analyzer options.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct AnalyzeOptions {
    /// Ridge added to the normal equations (relative to the number of models).
    pub ridge: f64,
    /// When set, rows 2k and 2k+1 are rho-correlated pairs and the pairs-based residual estimate is added.
    pub pairs_rho: Option<f64>,
    /// Test outputs to analyze (all when `None`).
    pub max_outputs: Option<usize>,
}

impl Default for AnalyzeOptions {
    fn default() -> Self {
        AnalyzeOptions { ridge: 1e-6, pairs_rho: None, max_outputs: None }
    }
}

/// The datamodel of one test output and what the data say about its quality.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct OutputAnalysis {
    pub output: usize,
    /// 0/1-coded linear datamodel: output ~ bias + sum_i weights[i] [i in subset].
    pub bias: f64,
    pub weights: Vec<f64>,
    pub mean: f64,
    pub variance: f64,
    /// Level-0 weight (mean^2) and level-1 weight (variance explained by the linear datamodel).
    pub w0: f64,
    pub w1: f64,
    /// Residual variance of the fit, corrected for the N + 1 fitted parameters (SSE / (m - N - 1)).
    pub residual: f64,
    /// 95% interval of the residual (normal-errors chi-square approximation).
    pub residual_ci95: (f64, f64),
    pub r2: f64,
    /// From rho-correlated pairs, when the rows are pairs.
    pub pairs: Option<ResidualEstimate>,
}

/// The analysis of a whole run.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Analysis {
    pub models: usize,
    pub points: usize,
    /// Fraction of points per subset, averaged (the p of the p-biased measure these masks approximate).
    pub p_hat: f64,
    pub outputs: Vec<OutputAnalysis>,
}

/// Checks the two arrays against each other: 0/1 masks, finite outputs, same number of rows.
pub fn validate(masks: &Matrix, outputs: &Matrix) -> Result<()> {
    if masks.rows != outputs.rows {
        return Err(Error::Shape(format!("{} mask rows but {} output rows", masks.rows, outputs.rows)));
    }
    if let Some(i) = masks.data.iter().position(|&v| v != 0.0 && v != 1.0) {
        return Err(Error::InvalidArgument(format!(
            "mask entry (row {}, column {}) is {}, not 0/1",
            i / masks.cols,
            i % masks.cols,
            masks.data[i]
        )));
    }
    if let Some(i) = outputs.data.iter().position(|v| !v.is_finite()) {
        return Err(Error::NonFinite(format!("outputs (row {}, column {})", i / outputs.cols, i % outputs.cols)));
    }
    if masks.rows <= masks.cols + 1 {
        return Err(Error::InvalidArgument(format!(
            "{} models for {} points: a linear datamodel needs more models than points + 1",
            masks.rows, masks.cols
        )));
    }
    Ok(())
}

/// Fits every output's datamodel with one Cholesky factorisation of the shared Gram matrix.
pub fn analyze(masks: &Matrix, outputs: &Matrix, opts: &AnalyzeOptions) -> Result<Analysis> {
    if !(opts.ridge >= 0.0 && opts.ridge.is_finite()) {
        return Err(Error::InvalidArgument(format!("ridge {} must be finite and >= 0", opts.ridge)));
    }
    if let Some(rho) = opts.pairs_rho
        && !(rho > 0.0 && rho <= 1.0)
    {
        return Err(Error::InvalidArgument(format!("pairs rho {rho} must be in (0, 1]")));
    }
    if opts.max_outputs == Some(0) {
        return Err(Error::InvalidArgument("max_outputs must be at least 1".into()));
    }
    validate(masks, outputs)?;
    let (m, n) = (masks.rows, masks.cols);
    let t = opts.max_outputs.map_or(outputs.cols, |k| k.min(outputs.cols));
    let dim = n + 1;
    let mut gram = Array2::<f64>::zeros((dim, dim));
    let mut rhs = Array2::<f64>::zeros((dim, t));
    let mut active = Vec::with_capacity(dim);
    for r in 0..m {
        active.clear();
        active.push(0);
        active.extend(masks.row(r).iter().enumerate().filter(|(_, v)| **v != 0.0).map(|(i, _)| i + 1));
        let out = &outputs.row(r)[..t];
        for &a in &active {
            for &b in &active {
                gram[[a, b]] += 1.0;
            }
            for (j, o) in out.iter().enumerate() {
                rhs[[a, j]] += o;
            }
        }
    }
    for i in 1..dim {
        gram[[i, i]] += opts.ridge * m as f64;
    }
    let l = tensor::linalg::cholesky(&gram).map_err(|e| Error::Numerical(format!("Gram matrix: {e}")))?;
    let p_hat = masks.data.iter().sum::<f64>() / (m * n) as f64;
    let mut results = Vec::with_capacity(t);
    for j in 0..t {
        let x = cholesky_solve(&l, &rhs.column(j).to_owned());
        let y: Vec<f64> = (0..m).map(|r| outputs.row(r)[j]).collect();
        let pred: Vec<f64> =
            (0..m).map(|r| x[0] + masks.row(r).iter().zip(x.iter().skip(1)).map(|(z, w)| z * w).sum::<f64>()).collect();
        // Squares are taken in units of the largest |output| and scaled back after averaging, so outputs near
        // 1e160 give finite statistics whenever the statistic itself fits in f64.
        let scale = y.iter().chain(&pred).fold(0.0f64, |a, v| a.max(v.abs())).max(f64::MIN_POSITIVE);
        let mean_sq = |pairs: &mut dyn Iterator<Item = (f64, f64)>| {
            pairs.map(|(a, b)| ((a - b) / scale).powi(2)).sum::<f64>() / m as f64 * scale * scale
        };
        let mean = y.iter().map(|v| v / m as f64).sum::<f64>();
        let variance = mean_sq(&mut y.iter().map(|&v| (v, mean)));
        let pmean = pred.iter().map(|v| v / m as f64).sum::<f64>();
        let w1 = mean_sq(&mut pred.iter().map(|&v| (v, pmean)));
        let mse = mean_sq(&mut y.iter().zip(&pred).map(|(&a, &b)| (a, b)));
        let dof = (m - dim) as f64;
        let residual = mse * (m as f64 / dof);
        let r2 = if variance > 0.0 { 1.0 - mse / variance } else { f64::NAN };
        for (name, v) in
            [("mean", mean), ("variance", variance), ("w1", w1), ("residual", residual), ("w0", mean * mean)]
        {
            if !v.is_finite() {
                return Err(Error::Numerical(format!(
                    "output {j}: the {name} does not fit in f64 (outputs up to {scale:e}); rescale the outputs"
                )));
            }
        }
        let half = 1.96 * residual * (2.0 / dof).sqrt();
        let pairs = match opts.pairs_rho {
            Some(rho) => {
                let k = m / 2;
                let fx: Vec<f64> = (0..k).map(|i| y[2 * i]).collect();
                let fy: Vec<f64> = (0..k).map(|i| y[2 * i + 1]).collect();
                Some(residual_from_pairs(&fx, &fy, rho)?)
            }
            None => None,
        };
        results.push(OutputAnalysis {
            output: j,
            bias: x[0],
            weights: x.iter().skip(1).copied().collect(),
            mean,
            variance,
            w0: mean * mean,
            w1,
            residual,
            residual_ci95: (residual - half, residual + half),
            r2,
            pairs,
        });
    }
    Ok(Analysis { models: m, points: n, p_hat, outputs: results })
}

/// Solves (L L^T) x = b by forward and back substitution.
fn cholesky_solve(l: &Array2<f64>, b: &Array1<f64>) -> Vec<f64> {
    let n = b.len();
    let mut y = vec![0.0; n];
    for i in 0..n {
        let s: f64 = (0..i).map(|k| l[[i, k]] * y[k]).sum();
        y[i] = (b[i] - s) / l[[i, i]];
    }
    let mut x = vec![0.0; n];
    for i in (0..n).rev() {
        let s: f64 = (i + 1..n).map(|k| l[[k, i]] * x[k]).sum();
        x[i] = (y[i] - s) / l[[i, i]];
    }
    x
}
