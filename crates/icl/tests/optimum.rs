// The restricted families' optimum (`strata_icl::optimum`) against independent computations.

use strata_icl::optimum::{best_looped_step, best_polynomial, draw_prompt_spectra, label_second_moment};
use strata_icl::tensor::{ndarray::Array2, seeded};
use strata_icl::theory::{chebyshev_step_sizes, population_loss, residual_polynomial};
use strata_icl::{Covariance, Shift, TaskConfig, WeightPrior, sample};

fn task(kappa: f64, prior: WeightPrior) -> TaskConfig {
    TaskConfig {
        d: 3,
        n: 10,
        covariance: Covariance::RandomCondition { kappa },
        prior,
        noise_std: 0.0,
        shift: Shift::None,
    }
}

#[test]
fn the_exact_loss_matches_a_monte_carlo_of_the_gd_predictor() {
    for prior in [WeightPrior::InverseCovariance, WeightPrior::Isotropic] {
        let t = task(10.0, prior);
        let steps = [0.8, 1.7];
        let spectra = draw_prompt_spectra(&t, 40_000, &mut seeded(1)).unwrap();
        let exact = spectra.loss(|l| residual_polynomial(&steps, l));
        let preconds: Vec<Array2<f64>> = steps.iter().map(|s| Array2::eye(3) * *s).collect();
        let sampled = population_loss(&preconds, &t, 40_000, &mut seeded(2)).unwrap();
        assert!((exact / sampled - 1.0).abs() < 0.06, "{prior:?}: exact {exact} vs sampled {sampled}");
    }
}

#[test]
fn the_best_polynomial_is_the_minimum_beats_population_chebyshev_and_its_roots_are_gd_steps() {
    let kappa = 10.0;
    let spectra = draw_prompt_spectra(&task(kappa, WeightPrior::InverseCovariance), 4_000, &mut seeded(3)).unwrap();
    for degree in [1, 2, 4] {
        let best = best_polynomial(&spectra, degree).unwrap();
        let at_best = spectra.loss(|l| best.eval(l));
        // A convex quadratic's minimiser: every coordinate perturbation raises the loss.
        for k in 0..degree {
            for h in [-1e-3, 1e-3] {
                let mut p = best.clone();
                p.coefficients[k] += h;
                assert!(spectra.loss(|l| p.eval(l)) >= at_best, "degree {degree}, coefficient {k}");
            }
        }
        // Chebyshev steps for the population spectrum [1/kappa, 1] are one member of the family.
        let cheb: Vec<f64> = chebyshev_step_sizes(kappa, degree).iter().map(|s| s * kappa).collect();
        assert!(at_best <= spectra.loss(|l| residual_polynomial(&cheb, l)));
        let roots = best.real_roots(4.0 * spectra.top).expect("real roots at these degrees");
        let steps: Vec<f64> = roots.iter().map(|r| 1.0 / r).collect();
        for lambda in [0.05, 0.3, 1.0, 1.9] {
            let (p, q) = (best.eval(lambda), residual_polynomial(&steps, lambda));
            assert!((p - q).abs() < 1e-8 * (1.0 + p.abs()), "degree {degree} at {lambda}: {p} vs {q}");
        }
    }
    // Degree 1 is the looped model with one loop: both searches agree.
    let (eta, looped) = best_looped_step(&spectra, 1);
    let linear = best_polynomial(&spectra, 1).unwrap();
    assert!((looped / spectra.loss(|l| linear.eval(l)) - 1.0).abs() < 1e-9);
    assert!((eta * linear.real_roots(10.0).unwrap()[0] - 1.0).abs() < 1e-6);
    // More loops at the best step never hurt, and the best looped step beats nearby ones.
    let (eta3, loss3) = best_looped_step(&spectra, 3);
    assert!(loss3 < looped);
    for f in [0.95, 1.05] {
        assert!(spectra.loss(|l| (1.0 - f * eta3 * l).powi(3)) >= loss3);
    }
    // The multilayer family contains the looped one.
    let cubic = best_polynomial(&spectra, 3).unwrap();
    assert!(spectra.loss(|l| cubic.eval(l)) <= loss3 + 1e-12);
}

#[test]
fn label_second_moments_match_sampled_labels_and_bad_tasks_are_errors() {
    for (t, tol) in [
        (task(10.0, WeightPrior::Isotropic), 0.02),
        (task(100.0, WeightPrior::Isotropic), 0.02),
        (task(10.0, WeightPrior::InverseCovariance), 0.03),
        (TaskConfig { shift: Shift::Spectrum { delta: 0.5 }, ..task(10.0, WeightPrior::Isotropic) }, 0.02),
        (TaskConfig { shift: Shift::Scale { factor: 2.0 }, ..task(10.0, WeightPrior::Isotropic) }, 0.02),
    ] {
        let p = sample(&t, 100_000, &mut seeded(5)).unwrap();
        let sampled = p.y.column(t.n).iter().map(|v| v * v).sum::<f64>() / p.batch() as f64;
        let exact = label_second_moment(&t);
        assert!((sampled / exact - 1.0).abs() < tol, "{t:?}: sampled {sampled} vs {exact}");
    }
    let noisy = TaskConfig { noise_std: 0.1, ..task(10.0, WeightPrior::Isotropic) };
    assert!(draw_prompt_spectra(&noisy, 10, &mut seeded(0)).is_err());
    assert!(draw_prompt_spectra(&task(10.0, WeightPrior::Isotropic), 0, &mut seeded(0)).is_err());
}
