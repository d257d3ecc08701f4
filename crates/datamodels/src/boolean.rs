//! Boolean-function analysis under the p-biased measure.
//!
//! Conventions: a point x in {-1, +1}^N is the integer whose bit i is 1 when x_i = +1 (training point i is in the
//! subset); a function is its table of 2^N values in that order. A Fourier coefficient f_hat(S) sits at the
//! integer whose bits are S. Under mu_p each x_i = +1 with probability p; mu = 2p - 1, sigma = 2 sqrt(p(1 - p)),
//! phi_i = (x_i - mu) / sigma and chi_S = prod_{i in S} phi_i (orthonormal under mu_p).

use rayon::prelude::*;

use crate::{Error, Result};

/// Elements transformed inside one cache-resident block in the first pass (2^13 f64 = 64 KiB).
const BLOCK_LOG2: u32 = 13;
/// Width (elements) of the column strips of the second pass.
const STRIP: usize = 32;

/// Checks that `len` is a power of two and returns its log2.
pub fn log2_len(len: usize) -> Result<u32> {
    if len == 0 || !len.is_power_of_two() {
        return Err(Error::Shape(format!("length {len} is not a power of two")));
    }
    Ok(len.trailing_zeros())
}

/// A float the transforms run on.
pub trait Real:
    Copy + Send + Sync + std::ops::Add<Output = Self> + std::ops::Sub<Output = Self> + std::ops::Mul<Output = Self>
{
    fn from_f64(v: f64) -> Self;
}
impl Real for f32 {
    fn from_f64(v: f64) -> Self {
        v as f32
    }
}
impl Real for f64 {
    fn from_f64(v: f64) -> Self {
        v
    }
}

/// A 2x2 per-coordinate map applied to every pair (x_i = -1, x_i = +1): (lo, hi) -> (a lo + b hi, c lo + d hi).
#[derive(Debug, Clone, Copy)]
struct Butterfly<T> {
    a: T,
    b: T,
    c: T,
    d: T,
    /// The Hadamard butterfly (1, 1, 1, -1): adds and subtracts without multiplying.
    hadamard: bool,
}

impl<T: Real> Butterfly<T> {
    #[inline(always)]
    fn apply(&self, lo: &mut [T], hi: &mut [T]) {
        if self.hadamard {
            for (l, h) in lo.iter_mut().zip(hi.iter_mut()) {
                let (x, y) = (*l, *h);
                *l = x + y;
                *h = x - y;
            }
        } else {
            let Butterfly { a, b, c, d, .. } = *self;
            for (l, h) in lo.iter_mut().zip(hi.iter_mut()) {
                let (x, y) = (*l, *h);
                *l = a * x + b * y;
                *h = c * x + d * y;
            }
        }
    }
}

/// All stages with half-width below `block.len()` on one contiguous block.
fn transform_block<T: Real>(block: &mut [T], bf: &Butterfly<T>) {
    let n = block.len();
    let mut h = 1;
    while h < n {
        for pair in block.chunks_exact_mut(2 * h) {
            let (lo, hi) = pair.split_at_mut(h);
            bf.apply(lo, hi);
        }
        h *= 2;
    }
}

struct SharedPtr<T>(*mut T);
unsafe impl<T> Send for SharedPtr<T> {}
unsafe impl<T> Sync for SharedPtr<T> {}

/// Applies the butterfly along every coordinate: a tensor-product transform in two passes over memory. Pass one
/// does the low coordinates inside cache-sized blocks; pass two does the high coordinates on column strips of the
/// `[rows, block]` view, each strip small enough to stay in cache. Parallel over blocks and strips; no reductions,
/// so the result does not depend on the thread count.
fn tensor_transform<T: Real>(x: &mut [T], bf: Butterfly<T>) -> Result<()> {
    let n_log2 = log2_len(x.len())?;
    let block_log2 = BLOCK_LOG2.min(n_log2);
    let block = 1usize << block_log2;
    x.par_chunks_mut(block).for_each(|b| transform_block(b, &bf));
    let rows = x.len() / block;
    if rows == 1 {
        return Ok(());
    }
    let strip = STRIP.min(block);
    let base = SharedPtr(x.as_mut_ptr());
    let base = &base;
    (0..block / strip).into_par_iter().for_each(|s| {
        let col = s * strip;
        let mut h = 1;
        while h < rows {
            for start in (0..rows).step_by(2 * h) {
                for r in start..start + h {
                    // SAFETY: strips cover disjoint columns, so no two threads touch the same element; rows r and
                    // r + h are distinct and in bounds (r + h < rows), and each slice spans `strip` elements of one row.
                    let (lo, hi) = unsafe {
                        (
                            std::slice::from_raw_parts_mut(base.0.add(r * block + col), strip),
                            std::slice::from_raw_parts_mut(base.0.add((r + h) * block + col), strip),
                        )
                    };
                    bf.apply(lo, hi);
                }
            }
            h *= 2;
        }
    });
    Ok(())
}

/// The unnormalised Walsh-Hadamard transform in place: y[s] = sum_x f[x] (-1)^popcount(s & x) (the Sylvester
/// ordering numpy/scipy's `hadamard` uses). Applying it twice multiplies by 2^N.
pub fn wht_in_place<T: Real>(x: &mut [T]) -> Result<()> {
    let (one, neg) = (T::from_f64(1.0), T::from_f64(-1.0));
    tensor_transform(x, Butterfly { a: one, b: one, c: one, d: neg, hadamard: true })
}

/// p-biased measure parameters (mu, sigma) and phi at x_i = -1 and +1.
pub fn p_biased_basis(p: f64) -> Result<(f64, f64, f64, f64)> {
    if !(p > 0.0 && p < 1.0) {
        return Err(Error::InvalidArgument(format!("p = {p} must lie in (0, 1)")));
    }
    let mu = 2.0 * p - 1.0;
    let sigma = 2.0 * (p * (1.0 - p)).sqrt();
    Ok((mu, sigma, (-1.0 - mu) / sigma, (1.0 - mu) / sigma))
}

/// The p-biased Fourier coefficients of a function table, in place: f_hat(S) = E_{mu_p}[f chi_S].
pub fn p_biased_transform(f: &mut [f64], p: f64) -> Result<()> {
    let (_, _, phi_lo, phi_hi) = p_biased_basis(p)?;
    let q = 1.0 - p;
    tensor_transform(f, Butterfly { a: q, b: p, c: q * phi_lo, d: p * phi_hi, hadamard: false })
}

/// The inverse: a function table from its p-biased coefficients, f(x) = sum_S f_hat(S) chi_S(x).
pub fn p_biased_inverse(coefficients: &mut [f64], p: f64) -> Result<()> {
    let (_, _, phi_lo, phi_hi) = p_biased_basis(p)?;
    tensor_transform(coefficients, Butterfly { a: 1.0, b: phi_lo, c: 1.0, d: phi_hi, hadamard: false })
}

/// Fourier weight by level: W_k = sum_{|S| = k} f_hat(S)^2, k = 0..=N.
pub fn level_weights(coefficients: &[f64]) -> Result<Vec<f64>> {
    let n = log2_len(coefficients.len())? as usize;
    let mut w = vec![0.0; n + 1];
    for (s, c) in coefficients.iter().enumerate() {
        w[s.count_ones() as usize] += c * c;
    }
    Ok(w)
}

/// Influence of each coordinate: Inf_i = sum_{S containing i} f_hat(S)^2 (= E[Var_{x_i} f] / Var(phi_i), the
/// expected variance of f over x_i alone, in units of the coordinate's own variance).
pub fn influences(coefficients: &[f64]) -> Result<Vec<f64>> {
    let n = log2_len(coefficients.len())? as usize;
    let mut inf = vec![0.0; n];
    for (s, c) in coefficients.iter().enumerate() {
        let c2 = c * c;
        let mut bits = s;
        while bits != 0 {
            inf[bits.trailing_zeros() as usize] += c2;
            bits &= bits - 1;
        }
    }
    Ok(inf)
}

/// Noise stability from the spectrum: Stab_rho = sum_k rho^k W_k.
pub fn noise_stability(level_weights: &[f64], rho: f64) -> f64 {
    level_weights.iter().enumerate().map(|(k, w)| rho.powi(k as i32) * w).sum()
}

/// Probability weight mu_p(x) of every point, as a table.
pub fn p_biased_weights(n: u32, p: f64) -> Vec<f64> {
    let len = 1usize << n;
    (0..len)
        .into_par_iter()
        .map(|x| {
            let ones = (x as u64).count_ones() as i32;
            p.powi(ones) * (1.0 - p).powi(n as i32 - ones)
        })
        .collect()
}

/// Standard Boolean functions with values in {-1, +1}, as tables over N coordinates.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum StandardFunction {
    /// Sign of the sum (N odd).
    Majority,
    /// Product of all coordinates.
    Parity,
    /// x_0.
    Dictator,
    /// OR of ANDs over consecutive blocks of `width` coordinates (a trailing partial block is ignored).
    Tribes { width: usize },
    /// A random function of the first `k` coordinates (seeded truth table).
    Junta { k: usize, seed: u64 },
}

impl StandardFunction {
    pub fn name(&self) -> String {
        match self {
            StandardFunction::Majority => "majority".into(),
            StandardFunction::Parity => "parity".into(),
            StandardFunction::Dictator => "dictator".into(),
            StandardFunction::Tribes { width } => format!("tribes (width {width})"),
            StandardFunction::Junta { k, .. } => format!("random {k}-junta"),
        }
    }

    /// The table over N coordinates.
    pub fn table(&self, n: u32) -> Result<Vec<f64>> {
        if n == 0 || n > 30 {
            return Err(Error::InvalidArgument(format!("N = {n} coordinates (1..=30 supported for tables)")));
        }
        let len = 1usize << n;
        let sign = |b: bool| if b { 1.0 } else { -1.0 };
        Ok(match *self {
            StandardFunction::Majority => {
                if n % 2 == 0 {
                    return Err(Error::InvalidArgument(format!("majority needs an odd N, got {n}")));
                }
                (0..len).map(|x| sign(2 * (x as u64).count_ones() > n)).collect()
            }
            StandardFunction::Parity => (0..len).map(|x| sign((n - (x as u64).count_ones()) % 2 == 0)).collect(),
            StandardFunction::Dictator => (0..len).map(|x| sign(x & 1 == 1)).collect(),
            StandardFunction::Tribes { width } => {
                if width == 0 || width > n as usize {
                    return Err(Error::InvalidArgument(format!("tribes width {width} for N = {n}")));
                }
                let tribes = n as usize / width;
                let mask = (1usize << width) - 1;
                (0..len).map(|x| sign((0..tribes).any(|t| (x >> (t * width)) & mask == mask))).collect()
            }
            StandardFunction::Junta { k, seed } => {
                if k == 0 || k > n as usize {
                    return Err(Error::InvalidArgument(format!("junta on {k} of N = {n} coordinates")));
                }
                let truth = tensor::uniform::<f64>(&[1 << k], 0.0, 1.0, &mut tensor::seeded(seed));
                (0..len).map(|x| sign(truth[x & ((1 << k) - 1)] < 0.5)).collect()
            }
        })
    }
}

/// Applies the noise operator to a function table in place, working on values (not coefficients):
/// (T_rho f)(x) = E[f(y)] where each y_i equals x_i with probability rho and is otherwise redrawn from mu_p.
/// Then Stab_rho(f) = E_{mu_p}[f T_rho f] is computed without any Fourier transform.
pub fn noise_operator(table: &mut [f64], p: f64, rho: f64) -> Result<()> {
    p_biased_basis(p)?;
    if !(0.0..=1.0).contains(&rho) {
        return Err(Error::InvalidArgument(format!("rho = {rho} must lie in [0, 1]")));
    }
    let q = 1.0 - p;
    let fresh = 1.0 - rho;
    tensor_transform(
        table,
        Butterfly { a: rho + fresh * q, b: fresh * p, c: fresh * q, d: rho + fresh * p, hadamard: false },
    )
}

/// E_{mu_p}[f g] by enumeration.
pub fn p_biased_inner(f: &[f64], g: &[f64], p: f64) -> Result<f64> {
    let n = log2_len(f.len())?;
    if g.len() != f.len() {
        return Err(Error::Shape(format!("tables of {} and {} values", f.len(), g.len())));
    }
    let w = p_biased_weights(n, p);
    Ok(f.iter().zip(g).zip(&w).map(|((a, b), w)| a * b * w).sum())
}

/// Draws `count` points from mu_p on N coordinates, as integers (bit i = x_i is +1).
pub fn sample_points(n: u32, p: f64, count: usize, rng: &mut tensor::Rng) -> Vec<usize> {
    let u = tensor::uniform::<f64>(&[count, n as usize], 0.0, 1.0, rng);
    (0..count).map(|k| (0..n as usize).filter(|&i| u[[k, i]] < p).map(|i| 1usize << i).sum()).collect()
}

/// A rho-correlated partner of each point: each coordinate kept with probability rho, else redrawn from mu_p.
pub fn correlated_partners(points: &[usize], n: u32, p: f64, rho: f64, rng: &mut tensor::Rng) -> Vec<usize> {
    let u = tensor::uniform::<f64>(&[points.len(), n as usize, 2], 0.0, 1.0, rng);
    points
        .iter()
        .enumerate()
        .map(|(k, &x)| {
            (0..n as usize)
                .map(|i| {
                    let bit = if u[[k, i, 0]] < rho { (x >> i) & 1 } else { (u[[k, i, 1]] < p) as usize };
                    bit << i
                })
                .sum()
        })
        .collect()
}
