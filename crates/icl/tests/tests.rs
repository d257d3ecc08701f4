//! strata-icl: closed forms against independent computations, the models against the closed forms,
//! gradient checks, a short training run, and bad configs.

mod optimum;

use strata_icl::model::{LsaModel, ModelConfig, Parameterization, TrainConfig, train};
use strata_icl::task::{Covariance, Shift, TaskConfig, WeightPrior, haar_orthogonal, sample};
use strata_icl::theory::*;
use tensor::ndarray::{Array1, Array2};
use tensor::{Params, no_grad, seeded};

fn random_matrix(d: usize, scale: f64, seed: u64) -> Array2<f64> {
    tensor::normal::<f64>(&[d, d], 0.0, scale, &mut seeded(seed)).into_shape_with_order((d, d)).unwrap()
}

fn spd_with_spectrum(eigs: &[f64], seed: u64) -> Array2<f64> {
    let u = haar_orthogonal(eigs.len(), &mut seeded(seed));
    u.dot(&Array2::from_diag(&Array1::from(eigs.to_vec()))).dot(&u.t())
}

#[test]
fn closed_form_equals_iteration() {
    for (d, n, layers, seed) in [(3, 10, 1, 1), (5, 20, 4, 2), (6, 4, 3, 3), (4, 40, 8, 4)] {
        let task = TaskConfig::isotropic(d, n);
        let prompts = sample(&task, 3, &mut seeded(seed)).unwrap();
        let preconds: Vec<Array2<f64>> = (0..layers).map(|l| random_matrix(d, 0.3, seed * 10 + l as u64)).collect();
        for b in 0..3 {
            let (x, y, xq) = prompts.prompt(b);
            let it = gd_predict(&preconds, &x, &y, &xq);
            let cf = gd_predict_closed_form(&preconds, &x, &y, &xq).unwrap();
            assert!((it - cf).abs() < 1e-9 * it.abs().max(1.0), "d={d} n={n} L={layers}: {it} vs {cf}");
        }
    }
}

#[test]
fn restricted_model_runs_preconditioned_gd_exactly() {
    for (looped, depth) in [(true, 5), (false, 3)] {
        let (d, n) = (4, 12);
        let params = Params::<f64>::new();
        let cfg = ModelConfig { d, depth, looped, parameterization: Parameterization::Restricted, init_std: 0.0 };
        let model = LsaModel::new(&cfg, &params, &mut seeded(0)).unwrap();
        // Random (non-symmetric) A per layer and u = 0.
        let count = if looped { 1 } else { depth };
        let mut a_mats = Vec::new();
        for l in 0..count {
            let a = random_matrix(d, 0.4, 50 + l as u64);
            params.get(&format!("layers.{l}.a")).unwrap().set(a.clone().into_dyn());
            a_mats.push(a);
        }
        // A non-isotropic Sigma (condition number 20 in a random basis): under an isotropic one, A and A^T
        // precondition alike in expectation, so the convention would go untested.
        let task = TaskConfig {
            covariance: Covariance::Fixed { eigenvalues: vec![0.1, 0.4, 1.0, 2.0], basis_seed: 3 },
            ..TaskConfig::isotropic(d, n)
        };
        let prompts = sample(&task, 4, &mut seeded(9)).unwrap();
        let preds = no_grad(|| model.predictions(&prompts.tokens::<f64>(), depth));
        let mut transposed_gap = 0.0f64;
        for (l, pred) in preds.iter().enumerate() {
            // The Q block A preconditions with A^T.
            let pick = |i: usize| &a_mats[if looped { 0 } else { i }];
            let preconds: Vec<Array2<f64>> = (0..=l).map(|i| pick(i).t().to_owned()).collect();
            let untransposed: Vec<Array2<f64>> = (0..=l).map(|i| pick(i).clone()).collect();
            for b in 0..4 {
                let (x, y, xq) = prompts.prompt(b);
                let want = gd_predict_closed_form(&preconds, &x, &y, &xq).unwrap();
                let got = pred.value()[[b]];
                assert!((got - want).abs() < 1e-10 * want.abs().max(1.0), "looped={looped} layer {l}: {got} vs {want}");
                let other = gd_predict_closed_form(&untransposed, &x, &y, &xq).unwrap();
                transposed_gap = transposed_gap.max((got - other).abs() / want.abs().max(1.0));
            }
        }
        assert!(transposed_gap > 1e-3, "A and A^T must give different predictions here ({transposed_gap})");
    }
}

#[test]
fn layers_gradcheck() {
    for par in [Parameterization::Restricted, Parameterization::FeatureUpdate, Parameterization::Unrestricted] {
        for looped in [true, false] {
            let params = Params::<f64>::new();
            let cfg = ModelConfig { d: 3, depth: 3, looped, parameterization: par, init_std: 0.3 };
            let model = LsaModel::new(&cfg, &params, &mut seeded(1)).unwrap();
            let prompts = sample(&TaskConfig::isotropic(3, 5), 2, &mut seeded(2)).unwrap();
            let (z, t) = (prompts.tokens::<f64>(), prompts.targets::<f64>());
            let (r, name) = tensor::gradcheck::check_params(&params, 1e-6, 50, || model.predict(&z, 3).mse(&t));
            assert!(r.max_error < 1e-6, "{par:?} looped={looped}: {name} {r:?}");
        }
    }
}

/// The feature-update layer with `B = 0` is the restricted layer; with `B != 0` its x-rows follow
/// `X <- X - (1/n) B (Xm Xm^T) A X`, computed here directly with ndarray.
#[test]
fn feature_update_layer() {
    let (d, n) = (3, 6);
    let prompts = sample(&TaskConfig::isotropic(d, n), 3, &mut seeded(5)).unwrap();
    let z = prompts.tokens::<f64>();
    let restricted = Params::<f64>::new();
    let cfg = |parameterization| ModelConfig { d, depth: 1, looped: false, parameterization, init_std: 0.4 };
    let r = LsaModel::new(&cfg(Parameterization::Restricted), &restricted, &mut seeded(1)).unwrap();
    let featured = Params::<f64>::new();
    for name in ["layers.0.a", "layers.0.u"] {
        featured.insert(name, restricted.get(name).unwrap().value()).unwrap();
    }
    featured.insert("layers.0.b", tensor::ndarray::ArrayD::zeros(tensor::ndarray::IxDyn(&[d, d]))).unwrap();
    let f = LsaModel::new(&cfg(Parameterization::FeatureUpdate), &featured, &mut seeded(1)).unwrap();
    let (zr, zf) = (&r.forward_all(&z, 1)[0], &f.forward_all(&z, 1)[0]);
    assert_eq!(zr.value(), zf.value(), "B = 0 must give the restricted layer");

    let b = tensor::normal::<f64>(&[d, d], 0.0, 0.5, &mut seeded(9));
    featured.get("layers.0.b").unwrap().set(b.clone());
    let f = LsaModel::new(&cfg(Parameterization::FeatureUpdate), &featured, &mut seeded(1)).unwrap();
    let out = f.forward_all(&z, 1)[0].value().to_owned();
    let a = featured.get("layers.0.a").unwrap().value().into_shape_with_order((d, d)).unwrap();
    let b = b.into_shape_with_order((d, d)).unwrap();
    for p in 0..3 {
        let x: Array2<f64> = prompts.x.slice(tensor::ndarray::s![p, .., ..]).t().to_owned(); // d x (n+1)
        let xm = x.slice(tensor::ndarray::s![.., ..n]).to_owned();
        let want = &x - &(b.dot(&xm.dot(&xm.t())).dot(&a).dot(&x) / n as f64);
        for i in 0..d {
            for c in 0..=n {
                let got = out[[p, i, c]];
                assert!((got - want[[i, c]]).abs() < 1e-12, "prompt {p} x[{i}, {c}]: {got} vs {}", want[[i, c]]);
            }
        }
    }
}

#[test]
fn chebyshev_rate_matches_direct_maximum() {
    for kappa in [2.0, 10.0, 100.0] {
        for l in [1, 2, 4, 8] {
            let steps = chebyshev_step_sizes(kappa, l);
            let direct = max_residual(&steps, kappa, 20_000);
            let formula = chebyshev_rate(kappa, l);
            assert!(
                (direct - formula).abs() < 1e-6 * formula.max(1e-12) + 1e-12,
                "kappa {kappa} L {l}: {direct} vs {formula}"
            );
            // Never worse than L steps of the best constant step size 2/(1+kappa).
            assert!(formula <= ((kappa - 1.0) / (kappa + 1.0)).powi(l as i32) + 1e-12);
        }
    }
    // The rate in the familiar form 2 / (rho^L + rho^-L), rho = (sqrt k + 1)/(sqrt k - 1).
    let (kappa, l) = (50.0f64, 6usize);
    let rho = (kappa.sqrt() + 1.0) / (kappa.sqrt() - 1.0);
    assert!((chebyshev_rate(kappa, l) - 2.0 / (rho.powi(l as i32) + rho.powi(-(l as i32)))).abs() < 1e-12);
}

#[test]
fn newton_schulz_error_squares() {
    let kappa = 30.0;
    let s = spd_with_spectrum(&[1.0, 3.0, 7.5, 30.0], 4);
    let iterates = newton_schulz(&s, 2.0 / (1.0 + kappa), 5);
    for (k, x) in iterates.iter().enumerate() {
        let err = symmetric_norm(&(Array2::<f64>::eye(4) - s.dot(x))).unwrap();
        let want = newton_schulz_rate(kappa, k + 1);
        assert!((err - want).abs() < 1e-9, "step {}: {err} vs {want}", k + 1);
    }
}

#[test]
fn samplers_are_seeded_and_follow_their_priors() {
    let task = TaskConfig {
        d: 3,
        n: 1,
        covariance: Covariance::Fixed { eigenvalues: vec![0.5, 2.0, 8.0], basis_seed: 1 },
        prior: WeightPrior::InverseCovariance,
        noise_std: 0.0,
        shift: Shift::None,
    };
    let a = sample(&task, 4, &mut seeded(3)).unwrap();
    let b = sample(&task, 4, &mut seeded(3)).unwrap();
    assert_eq!(a.x, b.x);
    // With w* ~ N(0, Sigma^-1), E[y^2] = tr(Sigma Sigma^-1) = d, whatever Sigma.
    let big = sample(&task, 20_000, &mut seeded(4)).unwrap();
    let mean_sq = big.y.iter().map(|v| v * v).sum::<f64>() / big.y.len() as f64;
    assert!((mean_sq - 3.0).abs() < 0.15, "E[y^2] = {mean_sq}");
    // Token layout: features in the first d rows, labels in the last, query label hidden.
    let z = a.tokens::<f64>();
    assert_eq!(z.shape(), [4, 4, 2]);
    assert_eq!(z.value()[[0, 3, 1]], 0.0);
    assert_eq!(z.value()[[0, 3, 0]], a.y[[0, 0]]);
    assert_eq!(z.value()[[0, 1, 1]], a.x[[0, 1, 1]]);
}

#[test]
fn short_training_recovers_a_sigma_near_identity() {
    let (d, n) = (3, 30);
    let task = TaskConfig {
        d,
        n,
        covariance: Covariance::Fixed { eigenvalues: vec![0.5, 1.0, 2.0], basis_seed: 7 },
        prior: WeightPrior::InverseCovariance,
        noise_std: 0.0,
        shift: Shift::None,
    };
    let params = Params::<f64>::new();
    let cfg = ModelConfig { d, depth: 2, looped: true, parameterization: Parameterization::Restricted, init_std: 0.01 };
    let model = LsaModel::new(&cfg, &params, &mut seeded(0)).unwrap();
    let losses =
        train(&model, &task, &TrainConfig { clip: Some(10.0), ..TrainConfig::new(400, 64, 0.02) }, &mut seeded(1))
            .unwrap()
            .losses;
    let early: f64 = losses[..20].iter().sum::<f64>() / 20.0;
    let late: f64 = losses[380..].iter().sum::<f64>() / 20.0;
    assert!(late < 0.5 * early, "loss {early} -> {late}");
    let (a, u) = model.restricted_weights(0).unwrap();
    let a = a.into_shape_with_order((d, d)).unwrap();
    let sigma = spd_with_spectrum(&[0.5, 1.0, 2.0], 7);
    // The learned preconditioner is A^T; (A^T Sigma) should be close to I up to a factor (1 +- c) with c small at n = 30.
    let m = a.t().dot(&sigma);
    let sym = (&m + &m.t()) / 2.0;
    let (eigs, _) = tensor::linalg::eigh(&sym).unwrap();
    assert!(eigs.iter().all(|&e| (0.6..1.3).contains(&e)), "eigenvalues of A^T Sigma: {eigs}");
    assert!(u.iter().map(|v| v * v).sum::<f64>().sqrt() < 0.1, "u should vanish: {u}");
}

#[test]
fn bad_configs_are_errors() {
    let bad_tasks = [
        TaskConfig::isotropic(0, 5),
        TaskConfig::isotropic(3, 0),
        TaskConfig { covariance: Covariance::RandomCondition { kappa: 0.5 }, ..TaskConfig::isotropic(3, 5) },
        TaskConfig { noise_std: f64::NAN, ..TaskConfig::isotropic(3, 5) },
        TaskConfig {
            covariance: Covariance::Fixed { eigenvalues: vec![1.0, -1.0, 1.0], basis_seed: 0 },
            ..TaskConfig::isotropic(3, 5)
        },
        TaskConfig { shift: Shift::Scale { factor: f64::INFINITY }, ..TaskConfig::isotropic(3, 5) },
    ];
    for t in &bad_tasks {
        assert!(sample(t, 2, &mut seeded(0)).is_err(), "{t:?} should be rejected");
    }
    let params = Params::<f32>::new();
    let cfg =
        ModelConfig { d: 0, depth: 2, looped: true, parameterization: Parameterization::Restricted, init_std: 0.01 };
    assert!(LsaModel::new(&cfg, &params, &mut seeded(0)).is_err());
    let cfg =
        ModelConfig { d: 3, depth: 2, looped: true, parameterization: Parameterization::Restricted, init_std: 0.01 };
    let model = LsaModel::new(&cfg, &params, &mut seeded(0)).unwrap();
    let diverging = TrainConfig { clip: None, ..TrainConfig::new(50, 8, 1e6) };
    let err = train(&model, &TaskConfig::isotropic(3, 5), &diverging, &mut seeded(0))
        .expect_err("lr 1e6 without clipping must diverge");
    assert!(err.to_string().contains("diverged at step"), "{err}");
}

#[test]
fn fused_layer_matches_composition_and_gradients() {
    use strata_icl::model::{lsa_layer, lsa_layer_fused};
    let mut rng = seeded(11);
    // 20 prompts: more than one parallel block of prompts.
    let z = tensor::normal::<f64>(&[20, 4, 6], 0.0, 1.0, &mut rng);
    let p = tensor::normal::<f64>(&[4, 4], 0.0, 0.5, &mut rng);
    let q = tensor::normal::<f64>(&[4, 4], 0.0, 0.5, &mut rng);
    let (zt, pt, qt) = (tensor::Tensor::new(z.clone()), tensor::Tensor::new(p.clone()), tensor::Tensor::new(q.clone()));
    let fused = lsa_layer_fused(&zt, &pt, &qt);
    let composed = lsa_layer(&zt, &pt, &qt);
    for (a, b) in fused.value().iter().zip(composed.value().iter()) {
        assert!((a - b).abs() < 1e-12, "{a} vs {b}");
    }
    let r = tensor::gradcheck::check(&[z, p, q], 1e-6, |t| lsa_layer_fused(&t[0], &t[1], &t[2]));
    assert!(r.max_error < 1e-6, "{r:?}");
}

#[test]
fn reproductions_run_end_to_end_at_smoke_scale() {
    use report::{Experiment, Presets, Verdict};
    use strata_icl::experiments::*;
    let dir = tempfile::tempdir().unwrap();
    let ctx = report::RunCtx::new("icl/tiny", 0, report::Scale::Smoke, dir.path().to_path_buf());
    let r = LoopedGd.run(&ctx, &LoopedGdConfig::smoke()).unwrap();
    assert_eq!(r.claims.len(), 7);
    // The learned weights are saved beside the report and load back by name.
    let saved = tensor::read_safetensors(&dir.path().join("icl/tiny/weights_d2_n4_L1.safetensors")).unwrap();
    assert!(saved.get("layers.0.a").is_some() && saved.get("layers.0.u").is_some());
    assert!(r.claims.iter().all(|c| c.measured.is_some()));
    let reports = [
        DepthVsKappa.run(&ctx, &DepthVsKappaConfig::smoke()).unwrap(),
        Robustness.run(&ctx, &RobustnessConfig::smoke()).unwrap(),
        Monotonicity.run(&ctx, &MonotonicityConfig::smoke()).unwrap(),
    ];
    for r in &reports {
        assert!(!r.claims.is_empty() && !r.figures.is_empty(), "{}", r.experiment);
    }
    // Models that diverge even at a quarter of the learning rate are left out and recorded, not fatal; no
    // claim can hold without models.
    let exploding = P1Training { lr: 1e60, ..P1Training::smoke() };
    let reports = [
        DepthVsKappa
            .run(&ctx, &DepthVsKappaConfig { training: exploding.clone(), ..DepthVsKappaConfig::smoke() })
            .unwrap(),
        Robustness.run(&ctx, &RobustnessConfig { training: exploding.clone(), ..RobustnessConfig::smoke() }).unwrap(),
        Monotonicity.run(&ctx, &MonotonicityConfig { training: exploding, ..MonotonicityConfig::smoke() }).unwrap(),
    ];
    // Claims read from the family optima (ids with "optimum-") need no trained model; every other one does.
    let about_models = |c: &&report::Claim| !c.id.contains("optimum-");
    for r in &reports {
        let retries = r.metrics.get("divergence_retries").expect("recorded").to_string();
        assert!(retries.contains("left out"), "{retries}");
        assert!(r.claims.iter().filter(about_models).all(|c| !c.holds()), "nothing can hold without models");
        assert!(r.claims.iter().any(|c| !about_models(&c)), "{}: the optimum claims are there", r.experiment);
    }
    // Robustness and monotonicity have nothing to compare: their claims are not measured, not failed.
    for r in &reports[1..] {
        assert!(
            r.claims.iter().filter(about_models).all(|c| c.verdict == Verdict::NotMeasured),
            "{}: {:?}",
            r.experiment,
            r.claims
        );
    }
}

/// With validation on, the weights kept are the ones with the lowest logged validation loss.
#[test]
fn validation_keeps_the_best_weights() {
    let task = TaskConfig { covariance: Covariance::RandomCondition { kappa: 10.0 }, ..TaskConfig::isotropic(3, 8) };
    let cfg = ModelConfig {
        d: 3,
        depth: 3,
        looped: false,
        parameterization: Parameterization::FeatureUpdate,
        init_std: 0.05,
    };
    let model = LsaModel::<f64>::new(&cfg, &Params::new(), &mut seeded(0)).unwrap();
    let tcfg = TrainConfig { validate_every: 7, validation_prompts: 64, ..TrainConfig::new(60, 32, 0.05) };
    let rng = seeded(4);
    let log = train(&model, &task, &tcfg, &mut rng.clone()).unwrap();
    // Validation happens every 7 steps and at the last one.
    let steps: Vec<usize> = log.validation.iter().map(|v| v.0).collect();
    assert_eq!(steps, vec![7, 14, 21, 28, 35, 42, 49, 56, 60]);
    let (best_step, best) = log
        .validation
        .iter()
        .filter(|v| v.1.is_finite())
        .fold((0, f64::INFINITY), |a, v| if v.1 < a.1 { (v.0, v.1) } else { a });
    assert_eq!(log.best_step, Some(best_step));
    // The validation set is the first draw from the training rng.
    let val = sample(&task, 64, &mut rng.clone()).unwrap();
    let now = no_grad(|| model.predict(&val.tokens::<f64>(), 3).mse(&val.targets::<f64>()).item());
    assert_eq!(now, best, "restored weights must give the best validation loss");
    let bad = TrainConfig { validate_every: 5, ..TrainConfig::new(10, 8, 0.01) };
    assert!(train(&model, &task, &bad, &mut seeded(0)).is_err(), "validation without prompts is an error");
}

/// A rotation shift rotates the covariance: angle 0 changes nothing, the rotation is a rotation, and the
/// empirical covariance of shifted prompts is `R Sigma R^T`.
#[test]
fn rotation_shift() {
    use strata_icl::task::plane_rotation;
    let base = TaskConfig {
        covariance: Covariance::Fixed { eigenvalues: vec![0.25, 1.0, 4.0], basis_seed: 3 },
        ..TaskConfig::isotropic(3, 4)
    };
    let none = sample(&base, 8, &mut seeded(1)).unwrap();
    let zero = sample(&TaskConfig { shift: Shift::Rotate { angle: 0.0, seed: 9 }, ..base.clone() }, 8, &mut seeded(1))
        .unwrap();
    assert!((&none.x - &zero.x).iter().all(|v| v.abs() < 1e-14) && none.y == zero.y);

    let r = plane_rotation(3, 0.7, 9);
    assert!((r.t().dot(&r) - Array2::<f64>::eye(3)).iter().all(|v| v.abs() < 1e-12), "R orthogonal");
    // The rotation angle: trace R = 1 + 2 cos(angle) in 3-D.
    assert!((r.diag().sum() - (1.0 + 2.0 * 0.7f64.cos())).abs() < 1e-12);

    let shifted = TaskConfig { shift: Shift::Rotate { angle: 0.7, seed: 9 }, ..base.clone() };
    let p = sample(&shifted, 20_000, &mut seeded(2)).unwrap();
    let xs = p.x.view().into_shape_with_order((20_000 * 5, 3)).unwrap();
    let emp = xs.t().dot(&xs) / xs.nrows() as f64;
    let u = haar_orthogonal(3, &mut seeded(3));
    let sigma = u.dot(&Array2::from_diag(&Array1::from(vec![0.25, 1.0, 4.0]))).dot(&u.t());
    let want = r.dot(&sigma).dot(&r.t());
    assert!((&emp - &want).iter().all(|v| v.abs() < 0.06), "empirical {emp} vs R Sigma R^T {want}");

    let bad = Shift::Rotate { angle: f64::NAN, seed: 0 };
    assert!(sample(&TaskConfig { shift: bad, ..base.clone() }, 2, &mut seeded(0)).is_err());
    let one_d = TaskConfig { shift: Shift::Rotate { angle: 1.0, seed: 0 }, ..TaskConfig::isotropic(1, 4) };
    assert!(sample(&one_d, 2, &mut seeded(0)).is_err(), "no plane to rotate in d = 1");
}

#[test]
fn scalar_step_initialisation_is_gd_with_those_steps_and_is_checked() {
    let (d, n) = (3, 10);
    let task = TaskConfig { covariance: Covariance::RandomCondition { kappa: 10.0 }, ..TaskConfig::isotropic(d, n) };
    let prompts = sample(&task, 5, &mut seeded(4)).unwrap();
    for par in [Parameterization::Restricted, Parameterization::FeatureUpdate] {
        let steps = [0.7, 2.5, 6.0];
        let cfg = ModelConfig { d, depth: 3, looped: false, parameterization: par, init_std: 0.0 };
        let model = LsaModel::<f64>::new(&cfg, &Params::new(), &mut seeded(0)).unwrap();
        model.add_scalar_steps(&steps).unwrap();
        let pred = no_grad(|| model.predict(&prompts.tokens::<f64>(), 3)).to_vec();
        let preconds: Vec<Array2<f64>> = steps.iter().map(|s| Array2::eye(d) * *s).collect();
        for (b, p) in pred.iter().enumerate() {
            let (x, y, xq) = prompts.prompt(b);
            let gd = gd_predict(&preconds, &x, &y, &xq);
            assert!((p - gd).abs() < 1e-9 * gd.abs().max(1.0), "{par:?} prompt {b}: {p} vs {gd}");
        }
        assert!(model.add_scalar_steps(&[1.0]).is_err(), "one step per layer");
        assert!(model.add_scalar_steps(&[1.0, f64::NAN, 1.0]).is_err());
    }
    let cfg =
        ModelConfig { d, depth: 2, looped: false, parameterization: Parameterization::Unrestricted, init_std: 0.0 };
    let model = LsaModel::<f64>::new(&cfg, &Params::new(), &mut seeded(0)).unwrap();
    assert!(model.add_scalar_steps(&[1.0, 1.0]).is_err(), "unrestricted layers have no A block");
    // A cosine schedule must end at or below the starting rate.
    let bad = TrainConfig { final_lr: Some(1.0), ..TrainConfig::new(10, 8, 0.01) };
    assert!(train(&model, &task, &bad, &mut seeded(1)).is_err());
}
