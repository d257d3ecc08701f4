//! `report::stats` against values computed by hand (the working is in the comments).

use strata_report::stats::{
    StatsError, bootstrap, bootstrap_mean, calibration, kendall_tau_b, pearson, quantile_sorted, ranks, spearman,
};

fn close(a: f64, b: f64) -> bool {
    (a - b).abs() < 1e-12
}

#[test]
fn ranks_share_the_mean_rank_of_ties() {
    assert_eq!(ranks(&[10.0, 30.0, 20.0, 30.0]), [1.0, 3.5, 2.0, 3.5]);
    assert_eq!(ranks(&[5.0, 5.0, 5.0]), [2.0, 2.0, 2.0]);
}

#[test]
fn spearman_matches_hand_computed_values() {
    // No ties: d = (0, 1, 1, 0), rho = 1 - 6 * 2 / (4 * 15) = 0.8.
    assert!(close(spearman(&[1.0, 2.0, 3.0, 4.0], &[1.0, 3.0, 2.0, 4.0]).unwrap(), 0.8));
    // Any monotone map gives 1; reversal gives -1.
    assert!(close(spearman(&[1.0, 2.0, 3.0], &[1.0, 8.0, 27.0]).unwrap(), 1.0));
    assert!(close(spearman(&[1.0, 2.0, 3.0], &[3.0, 2.0, 1.0]).unwrap(), -1.0));
    // Ties in y: ranks (1, 2, 3) and (1.5, 1.5, 3); centred (-1, 0, 1) and (-0.5, -0.5, 1);
    // rho = 1.5 / sqrt(2 * 1.5) = sqrt(3) / 2.
    assert!(close(spearman(&[1.0, 2.0, 3.0], &[1.0, 1.0, 2.0]).unwrap(), 3f64.sqrt() / 2.0));
}

#[test]
fn kendall_tau_b_matches_hand_computed_values() {
    // 6 pairs, only (2, 3) discordant: (5 - 1) / 6.
    assert!(close(kendall_tau_b(&[1.0, 2.0, 3.0, 4.0], &[1.0, 3.0, 2.0, 4.0]).unwrap(), 4.0 / 6.0));
    // 3 pairs: one tied in y, two concordant: 2 / sqrt(3 * 2).
    assert!(close(kendall_tau_b(&[1.0, 2.0, 3.0], &[1.0, 1.0, 2.0]).unwrap(), 2.0 / 6f64.sqrt()));
    // Ties in both: x = (1, 1, 2, 3), y = (1, 2, 2, 3). Pairs: (0,1) tie x; (1,2) tie y; the other 4
    // concordant. tau_b = 4 / sqrt((6 - 1) (6 - 1)) = 0.8.
    assert!(close(kendall_tau_b(&[1.0, 1.0, 2.0, 3.0], &[1.0, 2.0, 2.0, 3.0]).unwrap(), 0.8));
    assert!(close(kendall_tau_b(&[1.0, 2.0, 3.0], &[3.0, 2.0, 1.0]).unwrap(), -1.0));
}

#[test]
fn undefined_correlations_are_errors_not_numbers() {
    assert_eq!(spearman(&[1.0, 2.0], &[3.0]), Err(StatsError::LengthMismatch(2, 1)));
    assert_eq!(spearman(&[1.0], &[3.0]), Err(StatsError::TooFew { needed: 2, got: 1 }));
    assert_eq!(kendall_tau_b(&[1.0, 1.0, 1.0], &[1.0, 2.0, 3.0]), Err(StatsError::Constant));
    assert_eq!(pearson(&[1.0, 2.0, 3.0], &[4.0, 4.0, 4.0]), Err(StatsError::Constant));
    assert_eq!(spearman(&[1.0, f64::NAN, 3.0], &[1.0, 2.0, 3.0]), Err(StatsError::NotFinite { index: 1 }));
}

#[test]
fn quantiles_interpolate_like_numpy() {
    let v = [1.0, 2.0, 3.0, 4.0];
    // numpy.quantile([1, 2, 3, 4], [0, 0.25, 0.5, 1]) = [1, 1.75, 2.5, 4].
    assert_eq!([0.0, 0.25, 0.5, 1.0].map(|q| quantile_sorted(&v, q)), [1.0, 1.75, 2.5, 4.0]);
}

#[test]
fn bootstrap_intervals_are_seeded_and_cover_what_they_should() {
    let values: Vec<f64> = (0..40).map(|i| (i % 7) as f64).collect();
    let a = bootstrap_mean(&values, 1000, 0.95, 3).unwrap();
    assert_eq!(a, bootstrap_mean(&values, 1000, 0.95, 3).unwrap(), "same seed, same interval");
    assert_ne!(a, bootstrap_mean(&values, 1000, 0.95, 4).unwrap());
    let mean = values.iter().sum::<f64>() / 40.0;
    assert!(close(a.estimate, mean) && a.contains(mean) && a.low < a.high, "{a:?}");
    // The standard error of the mean is sd / sqrt(40) ~ 0.32 here (sd ~ 2.0): a 95% interval is about
    // +-0.63 wide, so [mean - 1, mean + 1] holds it and [mean - 0.3, mean + 0.3] does not.
    assert!(a.low > mean - 1.0 && a.high < mean + 1.0 && a.high - a.low > 0.6, "{a:?}");
    // A constant sample has a zero-width interval.
    let c = bootstrap_mean(&[2.5; 10], 200, 0.9, 0).unwrap();
    assert_eq!((c.low, c.high), (2.5, 2.5));
    // Two points {0, 1}: resampled means are 0, 0.5, 1 with chances 1/4, 1/2, 1/4; a 95% interval spans [0, 1].
    let two = bootstrap_mean(&[0.0, 1.0], 4000, 0.95, 1).unwrap();
    assert_eq!((two.low, two.high), (0.0, 1.0));
    let halves = bootstrap(2, 4000, 0.5, 1, |idx| idx.iter().sum::<usize>() as f64 / 2.0).unwrap();
    assert_eq!(halves.estimate, 0.5);
}

#[test]
fn bootstrap_skips_undefined_resamples_and_refuses_bad_settings() {
    let x = [1.0, 2.0, 3.0];
    let y = [1.0, 3.0, 2.0];
    let rho = |idx: &[usize]| {
        let (a, b): (Vec<f64>, Vec<f64>) = idx.iter().map(|&i| (x[i], y[i])).unzip();
        spearman(&a, &b).unwrap_or(f64::NAN)
    };
    let ci = bootstrap(3, 900, 0.9, 0, rho).unwrap();
    // 3 draws from 3 repeat one point with chance 3 / 27 = 1/9: about 100 of 900 resamples are constant and
    // skipped (standard deviation about 9).
    assert!(ci.resamples > 760 && ci.resamples < 840, "{}", ci.resamples);
    assert!(close(ci.estimate, 0.5) && ci.low >= -1.0 && ci.high <= 1.0);
    assert!(bootstrap(0, 100, 0.9, 0, |_| 0.0).is_err());
    assert!(bootstrap(3, 100, 1.0, 0, |_| 0.0).is_err());
    assert!(bootstrap(3, 100, 0.9, 0, |_| f64::NAN).is_err());
}

#[test]
fn calibration_error_matches_a_hand_computed_reliability_diagram() {
    // 10 bins. 0.95, 0.95 -> bin 9, accuracy 1/2: gap 0.45, weight 2/5. 0.65, 0.65 -> bin 6, accuracy 1: gap 0.35,
    // weight 2/5. 0.35 -> bin 3, accuracy 0: gap 0.35, weight 1/5. ECE = 0.18 + 0.14 + 0.07 = 0.39; MCE = 0.45.
    let c = calibration(&[0.95, 0.95, 0.65, 0.65, 0.35], &[true, false, true, true, false], 10).unwrap();
    assert!(close(c.ece, 0.39), "{}", c.ece);
    assert!(close(c.mce, 0.45), "{}", c.mce);
    assert_eq!(c.bins.iter().map(|b| b.count).collect::<Vec<_>>(), [0, 0, 0, 1, 0, 0, 2, 0, 0, 2]);
    assert_eq!(c.bins[9].accuracy, 0.5);
    // Perfect calibration: confidence 0.75 and 3 of 4 right.
    assert!(close(calibration(&[0.75; 4], &[true, true, true, false], 15).unwrap().ece, 0.0));
    // Edges: 0 and 1 land in the first and last bins; bin b is (b/B, (b+1)/B].
    let e = calibration(&[0.0, 1.0, 0.5], &[false, true, true], 2).unwrap();
    assert_eq!(e.bins.iter().map(|b| b.count).collect::<Vec<_>>(), [2, 1]);
    assert!(calibration(&[1.2], &[true], 10).is_err());
    assert!(calibration(&[0.5, 0.5], &[true], 10).is_err());
    assert!(calibration(&[], &[], 10).is_err());
}
