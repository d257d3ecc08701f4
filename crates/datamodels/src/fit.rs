//! Linear datamodels: fitting them (exact p-weighted least squares by enumeration, sampled least squares, LASSO
//! with a regularisation path), their exact Fourier characterisation, the residual estimate from rho-correlated
//! pairs, and group effects.

use rayon::prelude::*;
use serde::{Deserialize, Serialize};
use tensor::ndarray::{Array1, Array2};

use crate::boolean::{log2_len, p_biased_basis, p_biased_weights};
use crate::{Error, Result};

/// A linear datamodel in 0/1 coding: f(z) ~ bias + sum_i weights[i] z_i, z_i = 1 when point i is in the subset.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct LinearDatamodel {
    pub bias: f64,
    pub weights: Vec<f64>,
}

impl LinearDatamodel {
    pub fn predict(&self, z: &[bool]) -> f64 {
        self.bias + z.iter().zip(&self.weights).filter(|(zi, _)| **zi).map(|(_, w)| w).sum::<f64>()
    }

    /// The best linear datamodel under mu_p from the degree-0 and degree-1 p-biased coefficients:
    /// f ~ f_hat(0) + sum_i f_hat(i) phi_i, phi_i = (2 z_i - 1 - mu) / sigma, so weight_i = 2 f_hat(i) / sigma.
    pub fn from_fourier(coefficients: &[f64], p: f64) -> Result<Self> {
        let n = log2_len(coefficients.len())? as usize;
        let (mu, sigma, _, _) = p_biased_basis(p)?;
        let weights: Vec<f64> = (0..n).map(|i| 2.0 * coefficients[1 << i] / sigma).collect();
        let bias = coefficients[0] - (0..n).map(|i| coefficients[1 << i] * (1.0 + mu) / sigma).sum::<f64>();
        Ok(LinearDatamodel { bias, weights })
    }
}

/// Solves the (N+1)x(N+1) normal equations of a weighted least-squares fit on rows `[1, z]`.
fn solve_normal(gram: Array2<f64>, rhs: Array1<f64>) -> Result<LinearDatamodel> {
    let x = tensor::linalg::solve(&gram, &rhs).map_err(|e| Error::Numerical(format!("least squares: {e}")))?;
    Ok(LinearDatamodel { bias: x[0], weights: x.iter().skip(1).copied().collect() })
}

/// Exact p-weighted least squares over all 2^N subsets (N <= 24): the population-optimal linear datamodel, computed
/// by brute force (independently of the Fourier transform).
pub fn exact_least_squares(table: &[f64], p: f64) -> Result<LinearDatamodel> {
    let n = log2_len(table.len())? as usize;
    if n > 24 {
        return Err(Error::InvalidArgument(format!("exact least squares enumerates 2^{n} points (N <= 24)")));
    }
    p_biased_basis(p)?;
    let dim = n + 1;
    let weights = p_biased_weights(n as u32, p);
    // Fixed chunks reduced in order: the result does not depend on the thread count.
    let chunk = 1usize << n.saturating_sub(6).min(14);
    let partials: Vec<(Array2<f64>, Array1<f64>)> = table
        .par_chunks(chunk)
        .enumerate()
        .map(|(c, vals)| {
            let mut g = Array2::<f64>::zeros((dim, dim));
            let mut r = Array1::<f64>::zeros(dim);
            let mut row = vec![0.0; dim];
            for (k, &f) in vals.iter().enumerate() {
                let x = c * chunk + k;
                let w = weights[x];
                row[0] = 1.0;
                for i in 0..n {
                    row[i + 1] = ((x >> i) & 1) as f64;
                }
                for a in 0..dim {
                    if row[a] == 0.0 {
                        continue;
                    }
                    r[a] += w * f;
                    for b in 0..dim {
                        if row[b] != 0.0 {
                            g[[a, b]] += w;
                        }
                    }
                }
            }
            (g, r)
        })
        .collect();
    let mut gram = Array2::<f64>::zeros((dim, dim));
    let mut rhs = Array1::<f64>::zeros(dim);
    for (g, r) in partials {
        gram += &g;
        rhs += &r;
    }
    solve_normal(gram, rhs)
}

fn check_samples(masks: &[Vec<bool>], outputs: &[f64]) -> Result<usize> {
    if masks.is_empty() || masks.len() != outputs.len() {
        return Err(Error::Shape(format!("{} masks for {} outputs", masks.len(), outputs.len())));
    }
    let n = masks[0].len();
    if let Some(i) = masks.iter().position(|m| m.len() != n) {
        return Err(Error::Shape(format!("mask {i} has {} entries, mask 0 has {n}", masks[i].len())));
    }
    if let Some(i) = outputs.iter().position(|v| !v.is_finite()) {
        return Err(Error::NonFinite(format!("output of model {i}")));
    }
    Ok(n)
}

/// Ordinary least squares on sampled (mask, output) pairs, with a tiny ridge `ridge` for rank-deficient designs.
pub fn least_squares(masks: &[Vec<bool>], outputs: &[f64], ridge: f64) -> Result<LinearDatamodel> {
    let n = check_samples(masks, outputs)?;
    let dim = n + 1;
    let mut gram = Array2::<f64>::zeros((dim, dim));
    let mut rhs = Array1::<f64>::zeros(dim);
    let mut active = Vec::with_capacity(dim);
    for (m, &f) in masks.iter().zip(outputs) {
        active.clear();
        active.push(0);
        active.extend(m.iter().enumerate().filter(|(_, z)| **z).map(|(i, _)| i + 1));
        for &a in &active {
            rhs[a] += f;
            for &b in &active {
                gram[[a, b]] += 1.0;
            }
        }
    }
    for i in 1..dim {
        gram[[i, i]] += ridge;
    }
    solve_normal(gram, rhs)
}

/// One point of a LASSO path.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct LassoPoint {
    pub lambda: f64,
    pub model: LinearDatamodel,
    pub nonzero: usize,
    /// Mean squared error on the held-out rows.
    pub validation_mse: f64,
}

/// LASSO by cyclic coordinate descent on standardised columns (as in the datamodels papers' `fast_l1`), over a
/// geometric path of `steps` lambdas from lambda_max down to lambda_max * `min_ratio`, warm-started; the last
/// `holdout` fraction of rows scores each point. Returns the path; `best` picks the lowest validation error.
pub fn lasso_path(
    masks: &[Vec<bool>],
    outputs: &[f64],
    steps: usize,
    min_ratio: f64,
    holdout: f64,
) -> Result<Vec<LassoPoint>> {
    let n = check_samples(masks, outputs)?;
    if steps == 0 || !(min_ratio > 0.0 && min_ratio < 1.0) || !(0.0..1.0).contains(&holdout) {
        return Err(Error::InvalidArgument(format!("lasso steps {steps}, min_ratio {min_ratio}, holdout {holdout}")));
    }
    let m_train = ((masks.len() as f64) * (1.0 - holdout)).round().max(2.0) as usize;
    let m_train = m_train.min(masks.len());
    let rows = &masks[..m_train];
    let y: Vec<f64> = outputs[..m_train].to_vec();
    let m = rows.len() as f64;
    // Column means and scales of the 0/1 design.
    let means: Vec<f64> = (0..n).map(|i| rows.iter().filter(|r| r[i]).count() as f64 / m).collect();
    let scales: Vec<f64> = means.iter().map(|&q| (q * (1.0 - q)).sqrt().max(1e-12)).collect();
    let y_mean = y.iter().sum::<f64>() / m;
    let cols: Vec<Vec<f64>> =
        (0..n).map(|i| rows.iter().map(|r| ((r[i] as u8 as f64) - means[i]) / scales[i]).collect()).collect();
    let mut resid: Vec<f64> = y.iter().map(|v| v - y_mean).collect();
    let lambda_max =
        cols.iter().map(|c| c.iter().zip(&resid).map(|(a, b)| a * b).sum::<f64>().abs() / m).fold(0.0, f64::max);
    let mut beta = vec![0.0; n];
    let mut path = Vec::with_capacity(steps);
    for s in 0..steps {
        let lambda = lambda_max * min_ratio.powf(s as f64 / (steps.max(2) - 1) as f64);
        for _sweep in 0..200 {
            let mut max_change = 0.0f64;
            for i in 0..n {
                let col = &cols[i];
                let rho: f64 = col.iter().zip(&resid).map(|(a, r)| a * r).sum::<f64>() / m + beta[i];
                let new = rho.signum() * (rho.abs() - lambda).max(0.0);
                let delta = new - beta[i];
                if delta != 0.0 {
                    for (r, a) in resid.iter_mut().zip(col) {
                        *r -= delta * a;
                    }
                    beta[i] = new;
                    max_change = max_change.max(delta.abs());
                }
            }
            if max_change < 1e-9 {
                break;
            }
        }
        // Back to the 0/1 coding.
        let weights: Vec<f64> = beta.iter().zip(&scales).map(|(b, s)| b / s).collect();
        let bias = y_mean - weights.iter().zip(&means).map(|(w, q)| w * q).sum::<f64>();
        let model = LinearDatamodel { bias, weights };
        let held: Vec<usize> = (m_train..masks.len()).collect();
        let validation_mse = if held.is_empty() {
            f64::NAN
        } else {
            held.iter().map(|&k| (model.predict(&masks[k]) - outputs[k]).powi(2)).sum::<f64>() / held.len() as f64
        };
        path.push(LassoPoint { lambda, nonzero: beta.iter().filter(|b| **b != 0.0).count(), model, validation_mse });
    }
    Ok(path)
}

/// The path point with the lowest validation error.
pub fn best(path: &[LassoPoint]) -> Option<&LassoPoint> {
    path.iter().filter(|p| p.validation_mse.is_finite()).min_by(|a, b| a.validation_mse.total_cmp(&b.validation_mse))
}

/// The residual estimate from rho-correlated pairs (f(x), f(y)), with its two-sided bound.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ResidualEstimate {
    pub rho: f64,
    pub pairs: usize,
    pub variance: f64,
    pub stability: f64,
    pub w0: f64,
    /// R_hat = Var f - (Stab_rho - W_0) / rho: a lower bound on the residual R.
    pub residual_lower: f64,
    /// R_hat / (1 - rho): an upper bound on R.
    pub residual_upper: f64,
    /// 95% normal-approximation interval of R_hat from the sampling error of the pair statistics.
    pub ci95: (f64, f64),
}

/// Estimates the residual error of the best linear datamodel, R = sum_{|S| >= 2} f_hat(S)^2, from outputs of
/// models trained on rho-correlated subset pairs, without fitting any datamodel. Since
/// R_hat = sum_{k >= 2} (1 - rho^{k-1}) W_k, R_hat <= R <= R_hat / (1 - rho).
pub fn residual_from_pairs(fx: &[f64], fy: &[f64], rho: f64) -> Result<ResidualEstimate> {
    if fx.len() != fy.len() || fx.len() < 2 {
        return Err(Error::Shape(format!("{} and {} pair outputs (need equal, >= 2)", fx.len(), fy.len())));
    }
    if !(rho > 0.0 && rho < 1.0) {
        return Err(Error::InvalidArgument(format!("rho = {rho} must lie in (0, 1)")));
    }
    if let Some(i) = fx.iter().chain(fy).position(|v| !v.is_finite()) {
        return Err(Error::NonFinite(format!("pair output {i}")));
    }
    let m = fx.len() as f64;
    let mean_x = fx.iter().sum::<f64>() / m;
    let mean_y = fy.iter().sum::<f64>() / m;
    // Both halves of a pair are mu_p-distributed: use both for the second moment.
    let second = (fx.iter().map(|v| v * v).sum::<f64>() + fy.iter().map(|v| v * v).sum::<f64>()) / (2.0 * m);
    let stability = fx.iter().zip(fy).map(|(a, b)| a * b).sum::<f64>() / m;
    let w0 = mean_x * mean_y;
    let mean = (mean_x + mean_y) / 2.0;
    let variance = second - mean * mean;
    let r_hat = variance - (stability - w0) / rho;
    // Per-pair contributions to R_hat (delta method around the means), for the interval.
    let per_pair: Vec<f64> = fx
        .iter()
        .zip(fy)
        .map(|(a, b)| (a * a + b * b) / 2.0 - a * b / rho - mean * (a + b) * (1.0 - 1.0 / rho))
        .collect();
    let pm = per_pair.iter().sum::<f64>() / m;
    let sd = (per_pair.iter().map(|v| (v - pm).powi(2)).sum::<f64>() / (m - 1.0)).sqrt() / m.sqrt();
    Ok(ResidualEstimate {
        rho,
        pairs: fx.len(),
        variance,
        stability,
        w0,
        residual_lower: r_hat,
        residual_upper: r_hat / (1.0 - rho),
        ci95: (r_hat - 1.96 * sd, r_hat + 1.96 * sd),
    })
}

/// The effect of a group G of points, exactly over mu_p: E_x[f(x with G in) - f(x with G out)], against the linear
/// datamodel's prediction sum_{i in G} w_i. Returns (actual, predicted).
pub fn group_effect(table: &[f64], p: f64, group: &[usize], model: &LinearDatamodel) -> Result<(f64, f64)> {
    let n = log2_len(table.len())? as usize;
    if let Some(&i) = group.iter().find(|&&i| i >= n) {
        return Err(Error::InvalidArgument(format!("group member {i} of N = {n}")));
    }
    let gmask: usize = group.iter().map(|&i| 1usize << i).fold(0, |a, b| a | b);
    let rest = n - gmask.count_ones() as usize;
    // Average over the coordinates outside G (weighted by mu_p), with G all in versus all out.
    // Sequential on purpose: a fixed summation order keeps the result independent of the thread count.
    let actual: f64 = (0..table.len())
        .filter(|x| x & gmask == 0)
        .map(|x| {
            let ones = (x as u64).count_ones() as i32;
            let w = p.powi(ones) * (1.0 - p).powi(rest as i32 - ones);
            w * (table[x | gmask] - table[x])
        })
        .sum();
    let predicted = group.iter().map(|&i| model.weights[i]).sum();
    Ok((actual, predicted))
}
