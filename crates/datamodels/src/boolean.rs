//! Boolean-function analysis under the p-biased measure.
//!
//! Conventions: a point x in {-1, +1}^N is the integer whose bit i is 1 when x_i = +1 (training point i is in the
//! subset); a function is its table of 2^N values in that order. A Fourier coefficient f_hat(S) sits at the
//! integer whose bits are S. Under mu_p each x_i = +1 with probability p; mu = 2p - 1, sigma = 2 sqrt(p(1 - p)),
//! phi_i = (x_i - mu) / sigma and chi_S = prod_{i in S} phi_i (orthonormal under mu_p).

use rayon::prelude::*;

use crate::{Error, Result};

/// log2 of the contiguous blocks of the first pass (2^12 values: 16 KiB of f32, 32 KiB of f64, inside L1/L2).
const FIRST_PASS_BITS: u32 = 12;
/// Coordinates handled per later pass: 2^7 rows of a column strip stay in cache while all 8 stages run.
const LATER_PASS_BITS: u32 = 7;
/// Width (values) of a column strip in the later passes: whole cache lines, long enough to vectorise.
const STRIP: usize = 64;

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

/// The per-coordinate 2x2 map of a tensor-product transform, applied to pairs (x_i = -1, x_i = +1) of values.
trait Kernel<T: Real>: Sync {
    fn pair(&self, x: T, y: T) -> (T, T);

    /// One stage over two equally long runs of values.
    #[inline(always)]
    fn apply(&self, lo: &mut [T], hi: &mut [T]) {
        let n = lo.len().min(hi.len());
        let (lo, hi) = (&mut lo[..n], &mut hi[..n]);
        for i in 0..n {
            (lo[i], hi[i]) = self.pair(lo[i], hi[i]);
        }
    }

    /// Two stages (half-widths h and 2h) over four runs a, b, c, d at offsets 0, h, 2h, 3h: one load and store of
    /// each value instead of two.
    #[inline(always)]
    fn apply4(&self, a: &mut [T], b: &mut [T], c: &mut [T], d: &mut [T]) {
        let n = a.len().min(b.len()).min(c.len()).min(d.len());
        let (a, b, c, d) = (&mut a[..n], &mut b[..n], &mut c[..n], &mut d[..n]);
        for i in 0..n {
            let (a1, b1) = self.pair(a[i], b[i]);
            let (c1, d1) = self.pair(c[i], d[i]);
            (a[i], c[i]) = self.pair(a1, c1);
            (b[i], d[i]) = self.pair(b1, d1);
        }
    }

    /// The first three stages on 8 consecutive values, in registers.
    #[inline(always)]
    fn radix8(&self, v: &mut [T]) {
        let mut r = [v[0], v[1], v[2], v[3], v[4], v[5], v[6], v[7]];
        for h in [1, 2, 4] {
            for base in (0..8).step_by(2 * h) {
                for j in base..base + h {
                    (r[j], r[j + h]) = self.pair(r[j], r[j + h]);
                }
            }
        }
        v.copy_from_slice(&r);
    }
}

/// (lo, hi) -> (lo + hi, lo - hi).
struct Hadamard;

impl<T: Real> Kernel<T> for Hadamard {
    #[inline(always)]
    fn pair(&self, x: T, y: T) -> (T, T) {
        (x + y, x - y)
    }
}

/// (lo, hi) -> (a lo + b hi, c lo + d hi).
struct General<T> {
    a: T,
    b: T,
    c: T,
    d: T,
}

impl<T: Real> Kernel<T> for General<T> {
    #[inline(always)]
    fn pair(&self, x: T, y: T) -> (T, T) {
        (self.a * x + self.b * y, self.c * x + self.d * y)
    }
}

/// All stages of one contiguous block (a transform over its low log2(len) coordinates).
fn transform_block<T: Real, K: Kernel<T>>(block: &mut [T], k: &K) {
    let n = block.len();
    let mut h = 1;
    if n >= 8 {
        block.chunks_exact_mut(8).for_each(|c| k.radix8(c));
        h = 8;
    }
    while 4 * h <= n {
        for quad in block.chunks_exact_mut(4 * h) {
            let (ab, cd) = quad.split_at_mut(2 * h);
            let (a, b) = ab.split_at_mut(h);
            let (c, d) = cd.split_at_mut(h);
            k.apply4(a, b, c, d);
        }
        h *= 4;
    }
    while h < n {
        for pair in block.chunks_exact_mut(2 * h) {
            let (lo, hi) = pair.split_at_mut(h);
            k.apply(lo, hi);
        }
        h *= 2;
    }
}

/// The base of a slice that parallel tasks write through, each to its own disjoint part (see the SAFETY note in
/// [`tensor_transform`]).
struct SharedPtr<T>(*mut T);
// SAFETY: only the values behind the pointer cross threads, so sending or sharing the pointer is sound exactly
// when `T` itself may be sent between threads (`T: Send`); that disjoint tasks never touch the same value is
// argued where the pointer is dereferenced. `Sync` needs `T: Send` too, not `T: Sync`: no `&T` is shared, each
// value is written by one thread.
unsafe impl<T: Send> Send for SharedPtr<T> {}
// SAFETY: as above.
unsafe impl<T: Send> Sync for SharedPtr<T> {}

/// Applies the kernel along every coordinate (a tensor-product transform) in few passes over memory: the first
/// pass transforms the low 12 coordinates inside contiguous cache-sized blocks; each later pass takes the next 7
/// coordinates and, for each strip of 64 columns of the `[outer, 2^8 rows, inner]` view, runs all 8 stages while
/// the strip's 2^8 rows sit in cache. 2^26 values take 3 passes instead of 26; stages go two at a time (radix 4).
/// Parallel over blocks and strips; no reductions, so the result does not depend on the thread count.
fn tensor_transform<T: Real, K: Kernel<T>>(x: &mut [T], k: K) -> Result<()> {
    let n_log2 = log2_len(x.len())?;
    let first = FIRST_PASS_BITS.min(n_log2);
    x.par_chunks_mut(1 << first).for_each(|b| transform_block(b, &k));
    let mut lo = first;
    while lo < n_log2 {
        let bits = LATER_PASS_BITS.min(n_log2 - lo);
        let (inner, rows) = (1usize << lo, 1usize << bits);
        let strip = STRIP.min(inner);
        let strips_per_outer = inner / strip;
        let outer_len = inner * rows;
        let tasks = (x.len() / outer_len) * strips_per_outer;
        let base = SharedPtr(x.as_mut_ptr());
        let base = &base;
        // SAFETY (for `row` below): tasks cover disjoint (outer block, column strip) pairs, so no two threads touch
        // the same value; every row index used is below `rows`, so the run lies inside this task's outer block,
        // and distinct row indices give non-overlapping runs of `strip` values.
        let row =
            |origin: usize, r: usize| unsafe { std::slice::from_raw_parts_mut(base.0.add(origin + r * inner), strip) };
        (0..tasks).into_par_iter().for_each(|task| {
            let origin = (task / strips_per_outer) * outer_len + (task % strips_per_outer) * strip;
            let mut h = 1;
            while 4 * h <= rows {
                for start in (0..rows).step_by(4 * h) {
                    for r in start..start + h {
                        k.apply4(row(origin, r), row(origin, r + h), row(origin, r + 2 * h), row(origin, r + 3 * h));
                    }
                }
                h *= 4;
            }
            while h < rows {
                for start in (0..rows).step_by(2 * h) {
                    for r in start..start + h {
                        k.apply(row(origin, r), row(origin, r + h));
                    }
                }
                h *= 2;
            }
        });
        lo += bits;
    }
    Ok(())
}

/// The unnormalised Walsh-Hadamard transform in place: y[s] = sum_x f[x] (-1)^popcount(s & x) (the Sylvester
/// ordering numpy/scipy's `hadamard` uses). Applying it twice multiplies by 2^N.
pub fn wht_in_place<T: Real>(x: &mut [T]) -> Result<()> {
    tensor_transform(x, Hadamard)
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
    tensor_transform(f, General { a: q, b: p, c: q * phi_lo, d: p * phi_hi })
}

/// The inverse: a function table from its p-biased coefficients, f(x) = sum_S f_hat(S) chi_S(x).
pub fn p_biased_inverse(coefficients: &mut [f64], p: f64) -> Result<()> {
    let (_, _, phi_lo, phi_hi) = p_biased_basis(p)?;
    tensor_transform(coefficients, General { a: 1.0, b: phi_lo, c: 1.0, d: phi_hi })
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
    tensor_transform(table, General { a: rho + fresh * q, b: fresh * p, c: fresh * q, d: rho + fresh * p })
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
