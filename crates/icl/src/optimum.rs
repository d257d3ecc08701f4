//! The best model of the restricted LSA families, computed without training (f64, independent of the model code).
//!
//! With `u = 0` a restricted layer is one step of preconditioned GD, so `L` layers with `A_l = eta_l I` predict
//! `x_q^T (I - p(S)) S^+ X^T y / n` with `S = X^T X / n` and the residual polynomial
//! `p(lambda) = prod_l (1 - eta_l lambda)` (`p(0) = 1`). For noise-free labels `y = X w` the error is
//! `-x_q^T p(S) w` whatever the rank of `S`, so given the prompt's `Sigma` and `X` the loss is exact:
//! `E[err^2 | Sigma, X] = tr(p(S) Sigma p(S) W)`, `W = E[w w^T]`. In the eigenbasis `V` of `S` (eigenvalues
//! `s_i`) that is `p(s)^T M p(s)` with `M = (V^T Sigma V) o (V^T W V)`: a quadratic form in the values of `p`.
//!
//! - **Multilayer** (distinct `eta_l`): any degree-`L` polynomial with `p(0) = 1` whose roots are real is
//!   reachable (`eta_l = 1 / root_l`). Averaged over many prompts the loss is a convex quadratic in `p`'s
//!   coefficients, minimised by one linear solve ([`best_polynomial`]); [`ResidualPolynomial::real_roots`]
//!   says whether the minimiser lies inside the family.
//! - **Looped** (one `eta`): `p(lambda) = (1 - eta lambda)^L`, minimised over `eta` by a log grid and
//!   golden-section refinement ([`best_looped_step`]).
//!
//! Matrix preconditioners are not searched: prompts have Haar-random eigenbases, so the distribution is
//! rotation invariant and scalar `A_l` are the natural candidates; the trained models' losses are compared
//! with these optima, and a trained model that beats one (ratio below 1) would show a better matrix solution.
//! The feature-update and unrestricted families contain the restricted one (`B = 0`), so these optima are upper
//! bounds on their optima too.

use tensor::ndarray::{Array1, Array2};

use crate::error::{Result, invalid};
use crate::task::{
    Covariance, Shift, TaskConfig, WeightPrior, apply_shift, haar_orthogonal, log_uniform_spectrum, plane_rotation,
};

/// Per prompt, the eigenvalues of `S = X^T X / n` and the matrix `M` of the exact loss `p(s)^T M p(s)`.
#[derive(Debug, Clone)]
pub struct PromptSpectra {
    pub eigenvalues: Vec<Array1<f64>>,
    pub weights: Vec<Array2<f64>>,
    /// The largest eigenvalue over all prompts (the polynomial basis is scaled to it).
    pub top: f64,
}

/// `Sigma` and `W = E[w w^T]` of one prompt of `task` (the sampler's law: per-prompt Haar basis and
/// log-uniform spectrum for [`Covariance::RandomCondition`], shifts applied).
fn draw_covariance(task: &TaskConfig, rng: &mut tensor::Rng) -> (Array2<f64>, Array2<f64>) {
    let d = task.d;
    let (mut basis, mut lambda) = match &task.covariance {
        Covariance::Identity => (Array2::eye(d), vec![1.0; d]),
        Covariance::Fixed { eigenvalues, basis_seed } => {
            (haar_orthogonal(d, &mut tensor::seeded(*basis_seed)), eigenvalues.clone())
        }
        Covariance::RandomCondition { kappa } => {
            let basis = haar_orthogonal(d, rng);
            (basis, log_uniform_spectrum(d, *kappa, rng).into_iter().map(|l| l / kappa).collect())
        }
    };
    // The sampler's own spectrum shifts; a rotation turns the basis.
    apply_shift(&mut lambda, task.shift);
    if let Shift::Rotate { angle, seed } = task.shift {
        basis = plane_rotation(d, angle, seed).dot(&basis);
    }
    let with = |f: &dyn Fn(f64) -> f64| {
        let scaled = Array2::from_shape_fn((d, d), |(i, j)| basis[[i, j]] * f(lambda[j]));
        scaled.dot(&basis.t())
    };
    let sigma = with(&|l| l);
    let w = match task.prior {
        WeightPrior::Isotropic => Array2::eye(d),
        WeightPrior::InverseCovariance => with(&|l| 1.0 / l),
    };
    (sigma, w)
}

/// Draws `prompts` prompts of `task` (noise-free) and keeps what the exact loss needs.
pub fn draw_prompt_spectra(task: &TaskConfig, prompts: usize, rng: &mut tensor::Rng) -> Result<PromptSpectra> {
    task.validate()?;
    if task.noise_std != 0.0 || prompts == 0 {
        return Err(invalid(format!(
            "the exact loss is for noise-free prompts (noise_std {}) and needs prompts > 0 ({prompts})",
            task.noise_std
        )));
    }
    use rand_distr::Distribution;
    let (d, n) = (task.d, task.n);
    let mut out = PromptSpectra { eigenvalues: Vec::with_capacity(prompts), weights: Vec::new(), top: 0.0 };
    for _ in 0..prompts {
        let (sigma, w) = draw_covariance(task, rng);
        let root = tensor::linalg::cholesky(&sigma)?;
        let g = Array2::from_shape_fn((n, d), |_| rand_distr::StandardNormal.sample(rng));
        let x: Array2<f64> = g.dot(&root.t());
        let s = x.t().dot(&x) / n as f64;
        let (vals, v) = tensor::linalg::eigh(&s)?;
        let (sv, wv) = (v.t().dot(&sigma).dot(&v), v.t().dot(&w).dot(&v));
        let vals = vals.mapv(|l| l.max(0.0));
        out.top = out.top.max(vals.iter().copied().fold(0.0, f64::max));
        out.eigenvalues.push(vals);
        out.weights.push(&sv * &wv);
    }
    Ok(out)
}

impl PromptSpectra {
    /// Mean exact loss `E[(x_q^T p(S) w)^2]` of the residual polynomial `p` over these prompts.
    pub fn loss(&self, p: impl Fn(f64) -> f64) -> f64 {
        let total: f64 = self
            .eigenvalues
            .iter()
            .zip(&self.weights)
            .map(|(s, m)| {
                let v = s.mapv(&p);
                v.dot(&m.dot(&v))
            })
            .sum();
        total / self.eigenvalues.len() as f64
    }
}

/// A residual polynomial `p(lambda) = 1 + sum_k c_k lambda T_{k-1}(2 lambda / top - 1)` (Chebyshev basis on
/// `[0, top]`, well conditioned where monomials up to degree 12 are not).
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct ResidualPolynomial {
    pub coefficients: Vec<f64>,
    pub top: f64,
}

impl ResidualPolynomial {
    fn basis(degree: usize, top: f64, lambda: f64) -> Vec<f64> {
        let t = 2.0 * lambda / top - 1.0;
        let (mut prev, mut cur) = (1.0, t);
        (0..degree)
            .map(|k| {
                let value = match k {
                    0 => 1.0,
                    1 => t,
                    _ => {
                        let next = 2.0 * t * cur - prev;
                        prev = cur;
                        cur = next;
                        next
                    }
                };
                lambda * value
            })
            .collect()
    }

    pub fn degree(&self) -> usize {
        self.coefficients.len()
    }

    pub fn eval(&self, lambda: f64) -> f64 {
        let b = Self::basis(self.degree(), self.top, lambda);
        1.0 + b.iter().zip(&self.coefficients).map(|(b, c)| b * c).sum::<f64>()
    }

    /// The roots on `(0, limit]` found by sign changes on a fine grid and bisection; `Some` only when all
    /// `degree` roots are found there (then `p(lambda) = prod (1 - lambda / r)` and GD steps `1 / r` realise it).
    /// A double root or two roots closer than the grid spacing count as not found.
    pub fn real_roots(&self, limit: f64) -> Option<Vec<f64>> {
        let grid = 4_000 * self.degree().max(1);
        let at = |i: usize| limit * i as f64 / grid as f64;
        let mut roots = Vec::new();
        let mut prev = 1.0; // p(0)
        for i in 1..=grid {
            let value = self.eval(at(i));
            if value == 0.0 || (value < 0.0) != (prev < 0.0) {
                let (mut a, mut b) = (at(i - 1), at(i));
                for _ in 0..80 {
                    let mid = 0.5 * (a + b);
                    if (self.eval(mid) < 0.0) == (self.eval(a) < 0.0) { a = mid } else { b = mid }
                }
                roots.push(0.5 * (a + b));
            }
            prev = value;
        }
        (roots.len() == self.degree()).then_some(roots)
    }
}

/// The degree-`degree` residual polynomial with the smallest mean exact loss on `spectra` (one linear solve of
/// the normal equations of the quadratic).
pub fn best_polynomial(spectra: &PromptSpectra, degree: usize) -> Result<ResidualPolynomial> {
    if degree == 0 || spectra.eigenvalues.is_empty() || !(spectra.top > 0.0) {
        return Err(invalid(format!("best_polynomial: degree {degree} >= 1 and a non-empty, non-zero spectrum")));
    }
    let mut h = Array2::<f64>::zeros((degree, degree));
    let mut g = Array1::<f64>::zeros(degree);
    for (s, m) in spectra.eigenvalues.iter().zip(&spectra.weights) {
        let d = s.len();
        let mut b = Array2::<f64>::zeros((d, degree));
        for (i, mut row) in b.rows_mut().into_iter().enumerate() {
            row.assign(&Array1::from(ResidualPolynomial::basis(degree, spectra.top, s[i])));
        }
        let mb = m.dot(&b);
        h = h + b.t().dot(&mb);
        g = g + mb.t().dot(&Array1::<f64>::ones(d));
    }
    let c = tensor::linalg::solve(&h, &(-g))?;
    Ok(ResidualPolynomial { coefficients: c.to_vec(), top: spectra.top })
}

/// The single step `eta` minimising the mean exact loss of `(1 - eta lambda)^loops`, and that loss.
pub fn best_looped_step(spectra: &PromptSpectra, loops: usize) -> (f64, f64) {
    let loss = |eta: f64| spectra.loss(|l| (1.0 - eta * l).powi(loops as i32));
    // Steps from 1e-3 to 1e3 in units of 1/top on a log grid, then golden-section search around the best.
    let grid: Vec<f64> = (0..=600).map(|i| 10f64.powf(-3.0 + 6.0 * i as f64 / 600.0) / spectra.top).collect();
    let best = (0..grid.len()).min_by(|&a, &b| loss(grid[a]).total_cmp(&loss(grid[b]))).expect("non-empty grid");
    let (mut a, mut b) = (grid[best.saturating_sub(1)], grid[(best + 1).min(grid.len() - 1)]);
    let ratio = (5f64.sqrt() - 1.0) / 2.0;
    for _ in 0..100 {
        let (x1, x2) = (b - ratio * (b - a), a + ratio * (b - a));
        if loss(x1) < loss(x2) { b = x2 } else { a = x1 }
    }
    let eta = 0.5 * (a + b);
    (eta, loss(eta))
}

/// Both restricted optima at one depth, fitted on one draw of prompts: reusable on other (e.g. shifted) draws.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct FamilyOptimum {
    pub depth: usize,
    pub polynomial: ResidualPolynomial,
    pub looped_step: f64,
}

impl FamilyOptimum {
    pub fn fit(spectra: &PromptSpectra, depth: usize) -> Result<FamilyOptimum> {
        Ok(FamilyOptimum {
            depth,
            polynomial: best_polynomial(spectra, depth)?,
            looped_step: best_looped_step(spectra, depth).0,
        })
    }

    /// The multilayer optimum's mean exact loss on `spectra`.
    pub fn multilayer_loss(&self, spectra: &PromptSpectra) -> f64 {
        spectra.loss(|l| self.polynomial.eval(l))
    }

    /// The looped optimum's mean exact loss on `spectra` when run for `loops` loops.
    pub fn looped_loss(&self, spectra: &PromptSpectra, loops: usize) -> f64 {
        spectra.loss(|l| (1.0 - self.looped_step * l).powi(loops as i32))
    }
}

/// `E[y_q^2]` of `task` in closed form (the population normaliser of the test loss).
pub fn label_second_moment(task: &TaskConfig) -> f64 {
    let d = task.d as f64;
    let noise = task.noise_std * task.noise_std;
    // E[w^T Sigma w] = tr(Sigma W): d for w ~ N(0, Sigma^-1) whatever the spectrum and shift.
    if task.prior == WeightPrior::InverseCovariance {
        return d + noise;
    }
    // Isotropic prior: E[tr Sigma] = the mean sum of the (shifted) eigenvalues.
    let power = match task.shift {
        Shift::Spectrum { delta } => 1.0 + delta,
        _ => 1.0,
    };
    let factor = match task.shift {
        Shift::Scale { factor } => factor,
        _ => 1.0,
    };
    let trace = match &task.covariance {
        Covariance::Identity => d,
        Covariance::Fixed { eigenvalues, .. } => eigenvalues.iter().map(|l| l.powf(power)).sum(),
        Covariance::RandomCondition { kappa } => {
            // Eigenvalues 1/kappa and 1 pinned (d >= 2), the rest kappa^(U - 1) with U uniform on [0, 1].
            let k = *kappa;
            let free = if k > 1.0 { (1.0 - k.powf(-power)) / (power * k.ln()) } else { 1.0 };
            if task.d == 1 { k.powf(-power) } else { k.powf(-power) + 1.0 + (d - 2.0) * free }
        }
    };
    trace * factor + noise
}
