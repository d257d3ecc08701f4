//! Prompt samplers for in-context linear regression.

use serde::{Deserialize, Serialize};
use tensor::ndarray::{Array1, Array2, Array3, s};
use tensor::{Float, Rng, Tensor};

use crate::error::{Result, invalid};

/// How each prompt's input covariance is drawn.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case", deny_unknown_fields)]
pub enum Covariance {
    /// `Sigma = I`.
    Identity,
    /// One fixed `Sigma` for every prompt (P3), given by its eigenvalues in a random but fixed basis
    /// drawn from `basis_seed`.
    Fixed { eigenvalues: Vec<f64>, basis_seed: u64 },
    /// Per prompt: `Sigma = U diag(lambda) U^T`, `U` Haar, `lambda` log-uniform in `[1/kappa, 1]` with both
    /// endpoints pinned (P1: condition number exactly `kappa`). The spectrum is scaled so its top is 1
    /// rather than its bottom: the condition number is what the theory depends on, and unit-scale inputs
    /// keep the cubic LSA layers trainable at `kappa = 100`.
    RandomCondition { kappa: f64 },
}

/// A test-time distribution shift.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case", deny_unknown_fields)]
pub enum Shift {
    None,
    /// Pushes the spectrum outside the training range: eigenvalues `lambda -> lambda^(1 + delta)` (for the
    /// `[1/kappa, 1]` spectra of [`Covariance::RandomCondition`] the smallest becomes `kappa^-(1+delta)`).
    Spectrum {
        delta: f64,
    },
    /// Scales every eigenvalue by `factor`.
    Scale {
        factor: f64,
    },
    /// Rotates the whole prompt distribution (covariance basis, and `w*` with it) by `angle` radians in one
    /// plane, drawn once from `seed`: `Sigma -> R Sigma R^T`. Tests whether a learned preconditioner is
    /// adapted to `Sigma` itself rather than to its spectrum.
    Rotate {
        angle: f64,
        seed: u64,
    },
}

/// Where the regression weights come from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum WeightPrior {
    /// `w* ~ N(0, I)` (P1).
    Isotropic,
    /// `w* ~ N(0, Sigma^-1)` (P3): then `y` has unit variance whatever `Sigma`.
    InverseCovariance,
}

/// The distribution of prompts.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TaskConfig {
    pub d: usize,
    /// In-context examples per prompt.
    pub n: usize,
    pub covariance: Covariance,
    pub prior: WeightPrior,
    /// Standard deviation of label noise (0 for noiseless).
    pub noise_std: f64,
    pub shift: Shift,
}

impl TaskConfig {
    /// P3's setting: isotropic inputs, `w* ~ N(0, I)`, no noise.
    pub fn isotropic(d: usize, n: usize) -> Self {
        TaskConfig {
            d,
            n,
            covariance: Covariance::Identity,
            prior: WeightPrior::InverseCovariance,
            noise_std: 0.0,
            shift: Shift::None,
        }
    }

    /// Checks sizes and values; every sampler calls this first.
    pub fn validate(&self) -> Result<()> {
        if self.d == 0 {
            return Err(invalid("d must be at least 1"));
        }
        if self.n == 0 {
            return Err(invalid("n must be at least 1"));
        }
        if !(self.noise_std.is_finite() && self.noise_std >= 0.0) {
            return Err(invalid(format!("noise_std must be finite and >= 0, got {}", self.noise_std)));
        }
        match &self.covariance {
            Covariance::Identity => {}
            Covariance::Fixed { eigenvalues, .. } => {
                if eigenvalues.len() != self.d {
                    return Err(invalid(format!("{} eigenvalues for d = {}", eigenvalues.len(), self.d)));
                }
                if eigenvalues.iter().any(|l| !(l.is_finite() && *l > 0.0)) {
                    return Err(invalid("covariance eigenvalues must be finite and positive"));
                }
            }
            Covariance::RandomCondition { kappa } => {
                if !(kappa.is_finite() && *kappa >= 1.0) {
                    return Err(invalid(format!("kappa must be finite and >= 1, got {kappa}")));
                }
            }
        }
        match self.shift {
            Shift::None => {}
            Shift::Spectrum { delta } if delta.is_finite() && delta > -1.0 => {}
            Shift::Scale { factor } if factor.is_finite() && factor > 0.0 => {}
            Shift::Rotate { angle, .. } if angle.is_finite() && self.d >= 2 => {}
            other => return Err(invalid(format!("invalid shift {other:?}"))),
        }
        Ok(())
    }
}

/// A batch of prompts: `x[b, i, :]` for `i < n` are the examples and `i = n` the query.
#[derive(Debug, Clone)]
pub struct Prompts {
    pub x: Array3<f64>,
    /// Labels, the query's included (`y[b, n]` is the target).
    pub y: Array2<f64>,
    pub d: usize,
    pub n: usize,
}

impl Prompts {
    /// Token matrices `Z: [batch, d+1, n+1]`, query last with its label hidden (zero).
    pub fn tokens<F: Float>(&self) -> Tensor<F> {
        let (b, n1, d) = self.x.dim();
        let mut z = Vec::with_capacity(b * (d + 1) * n1);
        for bi in 0..b {
            for r in 0..d {
                z.extend((0..n1).map(|c| F::of(self.x[[bi, c, r]])));
            }
            z.extend((0..n1).map(|c| if c + 1 < n1 { F::of(self.y[[bi, c]]) } else { F::zero() }));
        }
        Tensor::from_vec(z, &[b, d + 1, n1])
    }

    /// The query labels, `[batch]`.
    pub fn targets<F: Float>(&self) -> Tensor<F> {
        let t: Vec<F> = self.y.column(self.n).iter().map(|&v| F::of(v)).collect();
        Tensor::from_vec(t, &[self.y.nrows()])
    }

    pub fn batch(&self) -> usize {
        self.x.dim().0
    }

    /// Examples `X: [n, d]`, labels `y: [n]` and query `x_q: [d]` of prompt `b` (for the closed forms).
    pub fn prompt(&self, b: usize) -> (Array2<f64>, Array1<f64>, Array1<f64>) {
        let x = self.x.slice(s![b, ..self.n, ..]).to_owned();
        let y = self.y.slice(s![b, ..self.n]).to_owned();
        let xq = self.x.slice(s![b, self.n, ..]).to_owned();
        (x, y, xq)
    }
}

fn gaussian(rng: &mut Rng) -> f64 {
    use rand_distr::Distribution;
    rand_distr::StandardNormal.sample(rng)
}

/// A Haar-random orthogonal matrix (Gram-Schmidt of a Gaussian matrix, which is Haar with positive
/// diagonal of R).
pub fn haar_orthogonal(d: usize, rng: &mut Rng) -> Array2<f64> {
    let mut q = Array2::from_shape_fn((d, d), |_| gaussian(rng));
    for j in 0..d {
        for k in 0..j {
            let dot = q.column(j).dot(&q.column(k));
            let col_k = q.column(k).to_owned();
            q.column_mut(j).scaled_add(-dot, &col_k);
        }
        let norm = q.column(j).dot(&q.column(j)).sqrt();
        q.column_mut(j).mapv_inplace(|v| v / norm);
    }
    q
}

/// `d` eigenvalues log-uniform in `[1, kappa]` with 1 and `kappa` included (d >= 2), sorted ascending.
pub fn log_uniform_spectrum(d: usize, kappa: f64, rng: &mut Rng) -> Vec<f64> {
    let mut l: Vec<f64> = (0..d)
        .map(|i| match i {
            0 => 1.0,
            1 => kappa,
            _ => kappa.powf(tensor::uniform::<f64>(&[1], 0.0, 1.0, rng)[[0]]),
        })
        .collect();
    l.sort_by(f64::total_cmp);
    l
}

pub(crate) fn apply_shift(lambda: &mut [f64], shift: Shift) {
    match shift {
        Shift::None => {}
        Shift::Spectrum { delta } => lambda.iter_mut().for_each(|l| *l = l.powf(1.0 + delta)),
        Shift::Scale { factor } => lambda.iter_mut().for_each(|l| *l *= factor),
        Shift::Rotate { .. } => {}
    }
}

/// The rotation by `angle` in the plane of two orthonormal vectors `a`, `b` drawn from `seed`:
/// `R = I + (cos t - 1)(a a^T + b b^T) + sin t (b a^T - a b^T)`.
pub fn plane_rotation(d: usize, angle: f64, seed: u64) -> Array2<f64> {
    let basis = haar_orthogonal(d, &mut tensor::seeded(seed));
    let (a, b) = (basis.column(0).to_owned(), basis.column(1).to_owned());
    let outer = |u: &Array1<f64>, v: &Array1<f64>| Array2::from_shape_fn((d, d), |(i, j)| u[i] * v[j]);
    Array2::eye(d)
        + (outer(&a, &a) + outer(&b, &b)) * (angle.cos() - 1.0)
        + (outer(&b, &a) - outer(&a, &b)) * angle.sin()
}

/// Draws `batch` fresh prompts.
pub fn sample(cfg: &TaskConfig, batch: usize, rng: &mut Rng) -> Result<Prompts> {
    cfg.validate()?;
    let (d, n) = (cfg.d, cfg.n);
    let rotation = match cfg.shift {
        Shift::Rotate { angle, seed } => Some(plane_rotation(d, angle, seed)),
        _ => None,
    };
    let rotate = |basis: Array2<f64>| match &rotation {
        Some(r) => r.dot(&basis),
        None => basis,
    };
    // Bases shared by every prompt are rotated once here; per-prompt bases in the loop.
    let fixed_basis = match &cfg.covariance {
        Covariance::Fixed { basis_seed, .. } => Some(rotate(haar_orthogonal(d, &mut tensor::seeded(*basis_seed)))),
        _ => None,
    };
    let identity = rotate(Array2::eye(d));
    let mut x = Array3::zeros((batch, n + 1, d));
    let mut y = Array2::zeros((batch, n + 1));
    let mut g = Array1::zeros(d);
    for b in 0..batch {
        let random_basis;
        let (u, mut lambda) = match &cfg.covariance {
            Covariance::Identity => (&identity, vec![1.0; d]),
            Covariance::Fixed { eigenvalues, .. } => (fixed_basis.as_ref().expect("built above"), eigenvalues.clone()),
            Covariance::RandomCondition { kappa } => {
                random_basis = rotate(haar_orthogonal(d, rng));
                let spectrum = log_uniform_spectrum(d, *kappa, rng).into_iter().map(|l| l / kappa).collect();
                (&random_basis, spectrum)
            }
        };
        apply_shift(&mut lambda, cfg.shift);
        let sqrt_lambda: Vec<f64> = lambda.iter().map(|l| l.sqrt()).collect();
        // w in the eigenbasis: N(0, I) or N(0, diag(1/lambda)).
        let w_eig: Array1<f64> = Array1::from_shape_fn(d, |i| {
            let g = gaussian(rng);
            match cfg.prior {
                WeightPrior::Isotropic => g,
                WeightPrior::InverseCovariance => g / sqrt_lambda[i],
            }
        });
        let w = match cfg.prior {
            // Isotropic w is rotation invariant (also under a rotation shift): draw it directly.
            WeightPrior::Isotropic => w_eig,
            WeightPrior::InverseCovariance => u.dot(&w_eig),
        };
        for i in 0..=n {
            g.iter_mut().zip(&sqrt_lambda).for_each(|(g, s)| *g = gaussian(rng) * s);
            let mut xi = x.slice_mut(s![b, i, ..]);
            tensor::ndarray::linalg::general_mat_vec_mul(1.0, u, &g, 0.0, &mut xi);
            let noise = if cfg.noise_std > 0.0 { cfg.noise_std * gaussian(rng) } else { 0.0 };
            y[[b, i]] = xi.dot(&w) + noise;
        }
    }
    Ok(Prompts { x, y, d, n })
}
