//! Statistics that reproductions compute claims from: rank correlations (Spearman, Kendall's tau-b), percentile
//! bootstrap intervals, binned calibration error (ECE), and where a training curve first reaches a loss.
//!
//! Every function returns a [`StatsError`] when the data cannot give the number (too few points, a constant
//! input, a NaN, lengths that differ): a claim built on such a value is *not measured*, never silently 0.
//!
//! ```
//! use strata_report::stats::{bootstrap, kendall_tau_b, spearman};
//!
//! let loss_at_k = [0.9, 1.4, 1.1, 2.0, 1.6];
//! let final_loss = [0.5, 0.8, 0.7, 1.2, 0.75];
//! assert!((spearman(&loss_at_k, &final_loss).unwrap() - 0.9).abs() < 1e-12);
//! assert_eq!(kendall_tau_b(&loss_at_k, &final_loss).unwrap(), 0.8);
//! // A 90% interval for Spearman's rho over resampled candidates (resamples with a constant side are skipped).
//! let ci = bootstrap(loss_at_k.len(), 2000, 0.9, 7, |idx| {
//!     let x: Vec<f64> = idx.iter().map(|&i| loss_at_k[i]).collect();
//!     let y: Vec<f64> = idx.iter().map(|&i| final_loss[i]).collect();
//!     spearman(&x, &y).unwrap_or(f64::NAN)
//! })
//! .unwrap();
//! assert!(ci.low <= ci.estimate && ci.estimate <= ci.high);
//! ```

use serde::{Deserialize, Serialize};

/// Why a statistic could not be computed.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[non_exhaustive]
pub enum StatsError {
    #[error("the inputs have different lengths ({0} and {1})")]
    LengthMismatch(usize, usize),
    #[error("{needed} or more points are needed, got {got}")]
    TooFew { needed: usize, got: usize },
    #[error("value {index} is not finite")]
    NotFinite { index: usize },
    #[error("an input is constant, so the statistic is undefined")]
    Constant,
    #[error("{0}")]
    Invalid(String),
}

pub type Result<T, E = StatsError> = std::result::Result<T, E>;

fn check_pair(x: &[f64], y: &[f64]) -> Result<()> {
    if x.len() != y.len() {
        return Err(StatsError::LengthMismatch(x.len(), y.len()));
    }
    if x.len() < 2 {
        return Err(StatsError::TooFew { needed: 2, got: x.len() });
    }
    for v in [x, y] {
        if let Some(index) = v.iter().position(|a| !a.is_finite()) {
            return Err(StatsError::NotFinite { index });
        }
    }
    Ok(())
}

/// 1-based ranks; tied values share the mean of the ranks they span.
pub fn ranks(x: &[f64]) -> Vec<f64> {
    let mut order: Vec<usize> = (0..x.len()).collect();
    order.sort_by(|&a, &b| x[a].total_cmp(&x[b]));
    let mut r = vec![0.0; x.len()];
    let mut i = 0;
    while i < order.len() {
        let mut j = i;
        while j + 1 < order.len() && x[order[j + 1]] == x[order[i]] {
            j += 1;
        }
        let mean_rank = (i + j) as f64 / 2.0 + 1.0;
        for &k in &order[i..=j] {
            r[k] = mean_rank;
        }
        i = j + 1;
    }
    r
}

/// Pearson's correlation coefficient.
pub fn pearson(x: &[f64], y: &[f64]) -> Result<f64> {
    check_pair(x, y)?;
    let n = x.len() as f64;
    let (mx, my) = (x.iter().sum::<f64>() / n, y.iter().sum::<f64>() / n);
    let (mut sxy, mut sxx, mut syy) = (0.0, 0.0, 0.0);
    for (a, b) in x.iter().zip(y) {
        sxy += (a - mx) * (b - my);
        sxx += (a - mx) * (a - mx);
        syy += (b - my) * (b - my);
    }
    if sxx == 0.0 || syy == 0.0 {
        return Err(StatsError::Constant);
    }
    Ok((sxy / (sxx * syy).sqrt()).clamp(-1.0, 1.0))
}

/// Spearman's rank correlation: Pearson's on the ranks, ties taking mean ranks (as `scipy.stats.spearmanr`).
pub fn spearman(x: &[f64], y: &[f64]) -> Result<f64> {
    check_pair(x, y)?;
    pearson(&ranks(x), &ranks(y))
}

/// Kendall's tau-b: (concordant - discordant) / sqrt((n0 - ties in x) (n0 - ties in y)) over all pairs, which
/// is `scipy.stats.kendalltau`'s default. O(n^2): meant for the tens to thousands of points a reproduction has.
pub fn kendall_tau_b(x: &[f64], y: &[f64]) -> Result<f64> {
    check_pair(x, y)?;
    let (mut concordant, mut discordant, mut tied_x, mut tied_y) = (0i64, 0i64, 0i64, 0i64);
    for i in 0..x.len() {
        for j in i + 1..x.len() {
            let (dx, dy) = (x[i].total_cmp(&x[j]) as i64, y[i].total_cmp(&y[j]) as i64);
            match (dx, dy) {
                (0, 0) => {
                    tied_x += 1;
                    tied_y += 1;
                }
                (0, _) => tied_x += 1,
                (_, 0) => tied_y += 1,
                _ if dx == dy => concordant += 1,
                _ => discordant += 1,
            }
        }
    }
    let n0 = (x.len() * (x.len() - 1) / 2) as i64;
    let denominator = (((n0 - tied_x) * (n0 - tied_y)) as f64).sqrt();
    if denominator == 0.0 {
        return Err(StatsError::Constant);
    }
    Ok((concordant - discordant) as f64 / denominator)
}

/// A point estimate with a confidence interval.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct Interval {
    /// The statistic on the whole sample.
    pub estimate: f64,
    pub low: f64,
    pub high: f64,
    /// The nominal coverage (0.95 for a 95% interval).
    pub confidence: f64,
    /// Resamples whose statistic was finite (the interval is computed from these).
    pub resamples: usize,
}

impl Interval {
    pub fn contains(&self, v: f64) -> bool {
        self.low <= v && v <= self.high
    }
}

/// Percentile bootstrap: `statistic` is called with the indices of the whole sample (`0..n`, for the estimate)
/// and then with `resamples` draws of `n` indices with replacement; the interval is the `(1 - confidence) / 2`
/// and `(1 + confidence) / 2` quantiles (linear interpolation, numpy's default) of the finite resampled
/// values. Resampling indices rather than values lets paired data (x and y of a correlation, several seeds'
/// rows) stay paired. Deterministic in `seed`, whatever the thread count.
pub fn bootstrap(
    n: usize,
    resamples: usize,
    confidence: f64,
    seed: u64,
    statistic: impl Fn(&[usize]) -> f64,
) -> Result<Interval> {
    if n == 0 {
        return Err(StatsError::TooFew { needed: 1, got: 0 });
    }
    if !(confidence > 0.0 && confidence < 1.0) || resamples < 2 {
        return Err(StatsError::Invalid(format!(
            "confidence {confidence} must be in (0, 1) and resamples {resamples} at least 2"
        )));
    }
    let all: Vec<usize> = (0..n).collect();
    let estimate = statistic(&all);
    if !estimate.is_finite() {
        return Err(StatsError::NotFinite { index: 0 });
    }
    let mut rng = SplitMix64(seed);
    let mut idx = vec![0; n];
    let mut values: Vec<f64> = (0..resamples)
        .filter_map(|_| {
            idx.iter_mut().for_each(|i| *i = rng.below(n));
            Some(statistic(&idx)).filter(|v| v.is_finite())
        })
        .collect();
    if values.len() < 2 {
        return Err(StatsError::TooFew { needed: 2, got: values.len() });
    }
    values.sort_by(f64::total_cmp);
    let tail = (1.0 - confidence) / 2.0;
    Ok(Interval {
        estimate,
        low: quantile_sorted(&values, tail),
        high: quantile_sorted(&values, 1.0 - tail),
        confidence,
        resamples: values.len(),
    })
}

/// The bootstrap interval of a sample mean.
pub fn bootstrap_mean(values: &[f64], resamples: usize, confidence: f64, seed: u64) -> Result<Interval> {
    if let Some(index) = values.iter().position(|v| !v.is_finite()) {
        return Err(StatsError::NotFinite { index });
    }
    bootstrap(values.len(), resamples, confidence, seed, |idx| {
        idx.iter().map(|&i| values[i]).sum::<f64>() / idx.len() as f64
    })
}

/// The `q`-quantile of sorted values, interpolating linearly between order statistics.
pub fn quantile_sorted(sorted: &[f64], q: f64) -> f64 {
    let pos = q.clamp(0.0, 1.0) * (sorted.len() - 1) as f64;
    let (lo, hi) = (pos.floor() as usize, pos.ceil() as usize);
    sorted[lo] + (sorted[hi] - sorted[lo]) * (pos - lo as f64)
}

/// One bin of a reliability diagram.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct CalibrationBin {
    pub lower: f64,
    pub upper: f64,
    pub count: usize,
    /// Fraction correct in the bin (0 when empty).
    pub accuracy: f64,
    /// Mean confidence in the bin (0 when empty).
    pub confidence: f64,
}

/// Binned calibration of confidences against correctness.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Calibration {
    /// Expected calibration error: sum over bins of (count / n) |accuracy - confidence|.
    pub ece: f64,
    /// Maximum calibration error over the non-empty bins.
    pub mce: f64,
    pub bins: Vec<CalibrationBin>,
}

/// Expected calibration error with `bins` equal-width bins on [0, 1] (Guo et al. 2017): bin `b` holds the
/// confidences in `(b / bins, (b + 1) / bins]`, and a confidence of exactly 0 goes to the first bin.
/// `confidence` is usually the top-class probability and `correct` whether the top class was right.
pub fn calibration(confidence: &[f64], correct: &[bool], bins: usize) -> Result<Calibration> {
    if confidence.len() != correct.len() {
        return Err(StatsError::LengthMismatch(confidence.len(), correct.len()));
    }
    if confidence.is_empty() || bins == 0 {
        return Err(StatsError::TooFew { needed: 1, got: confidence.len().min(bins) });
    }
    if let Some(index) = confidence.iter().position(|c| !(0.0..=1.0).contains(c)) {
        return Err(StatsError::Invalid(format!("confidence {index} is {}, not in [0, 1]", confidence[index])));
    }
    let mut sums = vec![(0usize, 0.0f64, 0.0f64); bins];
    for (&c, &ok) in confidence.iter().zip(correct) {
        let b = ((c * bins as f64).ceil() as usize).clamp(1, bins) - 1;
        sums[b].0 += 1;
        sums[b].1 += ok as u8 as f64;
        sums[b].2 += c;
    }
    let n = confidence.len() as f64;
    let (mut ece, mut mce) = (0.0, 0.0f64);
    let bins_out = sums
        .iter()
        .enumerate()
        .map(|(b, &(count, hits, conf))| {
            let (accuracy, confidence) =
                if count > 0 { (hits / count as f64, conf / count as f64) } else { (0.0, 0.0) };
            if count > 0 {
                let gap = (accuracy - confidence).abs();
                ece += count as f64 / n * gap;
                mce = mce.max(gap);
            }
            CalibrationBin {
                lower: b as f64 / bins as f64,
                upper: (b + 1) as f64 / bins as f64,
                count,
                accuracy,
                confidence,
            }
        })
        .collect();
    Ok(Calibration { ece, mce, bins: bins_out })
}

/// SplitMix64 (Steele et al.): a tiny, well-mixed generator, so resampling needs no RNG dependency here.
struct SplitMix64(u64);

impl SplitMix64 {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }

    /// Uniform in `0..n` (Lemire's multiply-shift; the bias is below 2^-40 for any n a sample has).
    fn below(&mut self, n: usize) -> usize {
        ((self.next() as u128 * n as u128) >> 64) as usize
    }
}

/// The `x` (steps, FLOPs, seconds) at which a curve of `(x, loss)` points in training order first reaches
/// `target`, interpolated linearly between the point before and the one that reached it; `None` when it never
/// does (then the cost to reach it is not measured, only bounded below by the curve's last `x`).
pub fn first_reach(curve: &[(f64, f64)], target: f64) -> Option<f64> {
    let first = curve.iter().position(|&(_, l)| l <= target)?;
    if first == 0 {
        return Some(curve[0].0);
    }
    let ((x0, l0), (x1, l1)) = (curve[first - 1], curve[first]);
    Some(x0 + (x1 - x0) * (l0 - target) / (l0 - l1))
}
