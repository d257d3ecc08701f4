use proptest::prelude::*;
use strata_datamodels::boolean::*;
use strata_datamodels::fit::*;

fn random_table(n: u32, seed: u64) -> Vec<f64> {
    tensor::normal::<f64>(&[1 << n], 0.0, 1.0, &mut tensor::seeded(seed)).iter().copied().collect()
}

/// The O(4^N) definition: y[s] = sum_x f[x] (-1)^popcount(s & x).
fn wht_definition(f: &[f64]) -> Vec<f64> {
    (0..f.len())
        .map(|s| f.iter().enumerate().map(|(x, v)| if (s & x).count_ones() % 2 == 0 { *v } else { -*v }).sum())
        .collect()
}

/// A textbook radix-2 transform, for sizes where the definition is too slow.
fn wht_textbook(f: &[f64]) -> Vec<f64> {
    let mut x = f.to_vec();
    let mut h = 1;
    while h < x.len() {
        for i in (0..x.len()).step_by(2 * h) {
            for j in i..i + h {
                let (a, b) = (x[j], x[j + h]);
                x[j] = a + b;
                x[j + h] = a - b;
            }
        }
        h *= 2;
    }
    x
}

/// p-biased coefficients by the definition: f_hat(S) = sum_x mu_p(x) f(x) chi_S(x).
fn p_biased_definition(f: &[f64], p: f64) -> Vec<f64> {
    let n = f.len().trailing_zeros();
    let (_, _, lo, hi) = p_biased_basis(p).unwrap();
    let w = p_biased_weights(n, p);
    (0..f.len())
        .map(|s| {
            (0..f.len())
                .map(|x| {
                    let chi: f64 =
                        (0..n).filter(|i| (s >> i) & 1 == 1).map(|i| if (x >> i) & 1 == 1 { hi } else { lo }).product();
                    w[x] * f[x] * chi
                })
                .sum()
        })
        .collect()
}

fn max_diff(a: &[f64], b: &[f64]) -> f64 {
    a.iter().zip(b).map(|(x, y)| (x - y).abs()).fold(0.0, f64::max)
}

#[test]
fn wht_matches_the_definition_and_the_textbook_transform() {
    for n in 1..=9 {
        let f = random_table(n, n as u64);
        let mut y = f.clone();
        wht_in_place(&mut y).unwrap();
        assert!(max_diff(&y, &wht_definition(&f)) < 1e-9, "N = {n}");
    }
    // Sizes that use the second (strided) pass.
    for n in [14, 16, 18] {
        let f = random_table(n, 7);
        let mut y = f.clone();
        wht_in_place(&mut y).unwrap();
        assert!(max_diff(&y, &wht_textbook(&f)) < 1e-8, "N = {n}");
        let mut yf: Vec<f32> = f.iter().map(|v| *v as f32).collect();
        wht_in_place(&mut yf).unwrap();
        let scale = (1u64 << (n / 2)) as f64;
        assert!(yf.iter().zip(&y).all(|(a, b)| (*a as f64 - b).abs() < 1e-4 * scale), "f32, N = {n}");
        // Involution up to 2^N.
        wht_in_place(&mut y).unwrap();
        let back: Vec<f64> = y.iter().map(|v| v / (1u64 << n) as f64).collect();
        assert!(max_diff(&back, &f) < 1e-9);
    }
    assert!(wht_in_place(&mut [1.0f64, 2.0, 3.0]).is_err());
}

#[test]
fn p_biased_transform_matches_the_definition_and_inverts() {
    for (n, p) in [(3, 0.5), (5, 0.3), (6, 0.85), (15, 0.2)] {
        let f = random_table(n, 11);
        let mut c = f.clone();
        p_biased_transform(&mut c, p).unwrap();
        if n <= 6 {
            assert!(max_diff(&c, &p_biased_definition(&f, p)) < 1e-10);
        }
        // Parseval: sum of squared coefficients = E[f^2].
        let energy: f64 = c.iter().map(|v| v * v).sum();
        assert!((energy - p_biased_inner(&f, &f, p).unwrap()).abs() < 1e-9 * energy.max(1.0));
        p_biased_inverse(&mut c, p).unwrap();
        assert!(max_diff(&c, &f) < 1e-9);
    }
    assert!(p_biased_transform(&mut [0.0; 4], 1.0).is_err());
}

#[test]
fn standard_functions_have_their_known_spectra() {
    // Parity: all weight at level N. Dictator: all at level 1. Majority of 3: W1 = 3/4, W3 = 1/4.
    let spectrum = |f: &StandardFunction, n| {
        let mut t = f.table(n).unwrap();
        p_biased_transform(&mut t, 0.5).unwrap();
        level_weights(&t).unwrap()
    };
    let parity = spectrum(&StandardFunction::Parity, 5);
    assert!((parity[5] - 1.0).abs() < 1e-12 && parity[..5].iter().all(|w| w.abs() < 1e-12));
    let dictator = spectrum(&StandardFunction::Dictator, 4);
    assert!((dictator[1] - 1.0).abs() < 1e-12);
    let maj = spectrum(&StandardFunction::Majority, 3);
    assert!((maj[1] - 0.75).abs() < 1e-12 && (maj[3] - 0.25).abs() < 1e-12);
    assert!(StandardFunction::Majority.table(4).is_err());
    assert!(StandardFunction::Tribes { width: 0 }.table(4).is_err());
    let junta = StandardFunction::Junta { k: 3, seed: 1 }.table(6).unwrap();
    let mut c = junta.clone();
    p_biased_transform(&mut c, 0.5).unwrap();
    // A 3-junta has no weight on sets touching coordinates 3..5.
    assert!(c.iter().enumerate().all(|(s, v)| s < 8 || v.abs() < 1e-12));
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(24))]

    /// The best linear datamodel equals the degree <= 1 Fourier expansion; its residual is the weight above level 1;
    /// the 0/1 weight of i is the mean effect of including i.
    #[test]
    fn fourier_characterisation_of_least_squares(seed in 0u64..10_000, n in 2u32..8, p in 0.1f64..0.9) {
        let f = random_table(n, seed);
        let mut c = f.clone();
        p_biased_transform(&mut c, p).unwrap();
        let fourier = LinearDatamodel::from_fourier(&c, p).unwrap();
        let brute = exact_least_squares(&f, p).unwrap();
        prop_assert!((fourier.bias - brute.bias).abs() < 1e-9);
        prop_assert!(max_diff(&fourier.weights, &brute.weights) < 1e-9);
        let fit: Vec<f64> = (0..f.len()).map(|x| {
            let z: Vec<bool> = (0..n).map(|i| (x >> i) & 1 == 1).collect();
            brute.predict(&z)
        }).collect();
        let resid: Vec<f64> = f.iter().zip(&fit).map(|(a, b)| a - b).collect();
        let r = p_biased_inner(&resid, &resid, p).unwrap();
        let w = level_weights(&c).unwrap();
        prop_assert!((r - w[2..].iter().sum::<f64>()).abs() < 1e-9);
        for i in 0..n as usize {
            let (actual, predicted) = group_effect(&f, p, &[i], &brute).unwrap();
            prop_assert!((actual - predicted).abs() < 1e-9);
        }
    }

    /// Stab_rho from the spectrum equals E[f T_rho f] computed on values; influences equal E[(D_i f)^2].
    #[test]
    fn stability_and_influence_identities(seed in 0u64..10_000, n in 1u32..9, p in 0.1f64..0.9, rho in 0.0f64..1.0) {
        let f = random_table(n, seed);
        let mut c = f.clone();
        p_biased_transform(&mut c, p).unwrap();
        let w = level_weights(&c).unwrap();
        let mut tf = f.clone();
        noise_operator(&mut tf, p, rho).unwrap();
        let direct = p_biased_inner(&f, &tf, p).unwrap();
        prop_assert!((noise_stability(&w, rho) - direct).abs() < 1e-9 * (1.0 + direct.abs()));
        let inf = influences(&c).unwrap();
        let (_, sigma, _, _) = p_biased_basis(p).unwrap();
        let weights = p_biased_weights(n, p);
        for i in 0..n as usize {
            let d2: f64 = (0..f.len()).map(|x| {
                let d = sigma / 2.0 * (f[x | (1 << i)] - f[x & !(1 << i)]);
                weights[x] * d * d
            }).sum();
            prop_assert!((inf[i] - d2).abs() < 1e-9 * (1.0 + d2));
        }
    }
}

#[test]
fn pairs_estimate_brackets_the_residual() {
    let n = 12;
    let p = 0.5;
    let rho: f64 = 0.5;
    let f = StandardFunction::Tribes { width: 3 }.table(n).unwrap();
    let mut c = f.clone();
    p_biased_transform(&mut c, p).unwrap();
    let w = level_weights(&c).unwrap();
    let r: f64 = w[2..].iter().sum();
    let population_hat: f64 = w.iter().enumerate().skip(2).map(|(k, wk)| (1.0 - rho.powi(k as i32 - 1)) * wk).sum();
    let mut zs = Vec::new();
    for seed in 0..8 {
        let mut rng = tensor::seeded(seed);
        let xs = sample_points(n, p, 100_000, &mut rng);
        let ys = correlated_partners(&xs, n, p, rho, &mut rng);
        let fx: Vec<f64> = xs.iter().map(|&x| f[x]).collect();
        let fy: Vec<f64> = ys.iter().map(|&y| f[y]).collect();
        let est = residual_from_pairs(&fx, &fy, rho).unwrap();
        zs.push((est.residual_lower - population_hat) / ((est.ci95.1 - est.ci95.0) / 3.92));
    }
    // The estimate is unbiased to O(1/m) and its interval calibrated: z-scores look standard normal.
    assert!(zs.iter().all(|z| z.abs() < 3.5), "{zs:?}");
    let mean_sq = zs.iter().map(|z| z * z).sum::<f64>() / zs.len() as f64;
    assert!(mean_sq < 4.0, "{zs:?}");
    let fx = vec![0.0, 1.0, 2.0];
    let fy = vec![0.0, 1.0, 2.0];
    assert!(population_hat <= r && r <= population_hat / (1.0 - rho));
    assert!(residual_from_pairs(&fx[..3], &fy[..2], rho).is_err());
    assert!(residual_from_pairs(&fx, &fy, 1.0).is_err());
}

#[test]
fn sampled_fits_recover_linear_and_sparse_functions() {
    let n = 30;
    let mut rng = tensor::seeded(5);
    let true_w: Vec<f64> = (0..n).map(|i| if i % 6 == 0 { 1.0 + i as f64 / 10.0 } else { 0.0 }).collect();
    let pts = sample_points(n as u32, 0.5, 600, &mut rng);
    let noise = tensor::normal::<f64>(&[pts.len()], 0.0, 0.05, &mut rng);
    let masks: Vec<Vec<bool>> = pts.iter().map(|&x| (0..n).map(|i| (x >> i) & 1 == 1).collect()).collect();
    let outputs: Vec<f64> = masks
        .iter()
        .zip(noise.iter())
        .map(|(m, e)| 0.5 + m.iter().zip(&true_w).filter(|(z, _)| **z).map(|(_, w)| w).sum::<f64>() + e)
        .collect();
    let ls = least_squares(&masks, &outputs, 1e-9).unwrap();
    assert!(max_diff(&ls.weights, &true_w) < 0.03, "{:?}", ls.weights);
    let path = lasso_path(&masks, &outputs, 20, 1e-3, 0.2).unwrap();
    assert!(path.windows(2).all(|w| w[1].lambda < w[0].lambda));
    assert_eq!(path[0].nonzero, 0, "lambda_max zeroes every weight");
    let chosen = best(&path).unwrap();
    assert!(max_diff(&chosen.model.weights, &true_w) < 0.05, "{:?}", chosen.model.weights);
    assert!(least_squares(&masks[..3], &outputs, 0.0).is_err());
    let mut bad = outputs.clone();
    bad[4] = f64::NAN;
    assert!(least_squares(&masks, &bad, 0.0).is_err());
}

#[test]
fn group_effects_add_up_exactly_without_interactions() {
    let n = 8;
    // f = linear part + an interaction between points 0 and 1 only.
    let f: Vec<f64> = (0..1usize << n)
        .map(|x| {
            let z = |i: usize| ((x >> i) & 1) as f64;
            (0..n).map(|i| z(i) * (i as f64 + 1.0)).sum::<f64>() - 3.0 * z(0) * z(1)
        })
        .collect();
    // (At p = 1/2 a lone pair interaction happens to cancel in the sum of the two weights, so use p = 0.3.)
    let model = exact_least_squares(&f, 0.3).unwrap();
    let (a, pr) = group_effect(&f, 0.3, &[2, 3, 4], &model).unwrap();
    assert!((a - pr).abs() < 1e-9, "no interaction touches {{2, 3, 4}}: {a} vs {pr}");
    let (a, pr) = group_effect(&f, 0.3, &[0, 1], &model).unwrap();
    // Actual -3 + 3 (linear) = 0; predicted 3 + 2 * 0.3 * (-3) = 1.2.
    assert!((a - 0.0).abs() < 1e-9 && (pr - 1.2).abs() < 1e-9, "the 0-1 interaction breaks additivity: {a} vs {pr}");
    assert!(group_effect(&f, 0.3, &[9], &model).is_err());
}

#[test]
fn small_models_learn_and_are_deterministic() {
    use strata_datamodels::runs::*;
    use tensor::ndarray::{ArrayD, IxDyn};
    // Two separable clusters in 20 dimensions.
    let mut rng = tensor::seeded(8);
    let noise = tensor::normal::<f32>(&[50, 20], 0.0, 0.3, &mut rng);
    let y: Vec<f32> = (0..50).map(|i| if i % 2 == 0 { 1.0 } else { -1.0 }).collect();
    let x = ArrayD::from_shape_fn(IxDyn(&[50, 20]), |ix| noise[[ix[0], ix[1]]] + y[ix[0]] * (ix[1] < 5) as u8 as f32);
    let task = BinaryTask {
        train_x: x.slice(tensor::ndarray::s![..40, ..]).to_owned().into_dyn(),
        train_y: y[..40].to_vec(),
        test_x: x.slice(tensor::ndarray::s![40.., ..]).to_owned().into_dyn(),
        test_y: y[40..].to_vec(),
    };
    let all = vec![true; 40];
    let lr = train_logistic(&task, &all, &LogisticConfig::default()).unwrap();
    let mlp = train_mlp(&task, &all, &MlpConfig::default()).unwrap();
    assert!(lr.iter().all(|m| *m > 0.0), "logistic margins {lr:?}");
    assert!(mlp.iter().filter(|m| **m > 0.0).count() >= 9, "MLP margins {mlp:?}");
    assert_eq!(mlp, train_mlp(&task, &all, &MlpConfig::default()).unwrap());
    assert_eq!(train_logistic(&task, &[false; 40], &LogisticConfig::default()).unwrap(), vec![0.0; 10]);
    assert!(train_mlp(&task, &[true; 3], &MlpConfig::default()).is_err());
}

/// The batched path trains the same models as the one-at-a-time path (to float rounding: the products sum in
/// another order), and a model's margins depend neither on its block nor on the thread count.
#[test]
fn batched_logistic_training_equals_one_model_at_a_time() {
    use strata_datamodels::runs::{
        BinaryTask, LOGISTIC_BLOCK, LogisticConfig, train_logistic, train_logistic_block, train_logistic_many,
    };
    use strata_datamodels::store::Sampling;
    let mut rng = tensor::seeded(4);
    let task = BinaryTask {
        train_x: tensor::uniform(&[60, 30], 0.0, 1.0, &mut rng),
        train_y: (0..60).map(|i| if (i * 7) % 3 == 0 { 1.0 } else { -1.0 }).collect(),
        test_x: tensor::uniform(&[6, 30], 0.0, 1.0, &mut rng),
        test_y: vec![1.0, -1.0, 1.0, 1.0, -1.0, -1.0],
    };
    let cfg = LogisticConfig { steps: 40, ..LogisticConfig::default() };
    let mut masks: Vec<Vec<bool>> =
        (0..LOGISTIC_BLOCK + 37).map(|r| Sampling::Alpha { alpha: 0.3 }.mask(60, 1, r)).collect();
    masks[5] = vec![false; 60]; // the empty subset: the untrained model
    let many = train_logistic_many(&task, &masks, &cfg).unwrap();
    assert_eq!(many.len(), masks.len());
    assert_eq!(many[5], vec![0.0; 6]);
    for (r, mask) in masks.iter().enumerate().step_by(13) {
        let one = train_logistic(&task, mask, &cfg).unwrap();
        for (a, b) in many[r].iter().zip(&one) {
            assert!((a - b).abs() <= 1e-4 * b.abs().max(1.0), "model {r}: batched {a} vs single {b}");
        }
    }
    // The same model in another block, of another width, is bit-identical.
    let alone = train_logistic_block(&task, &masks[40..41], &cfg).unwrap();
    assert_eq!(alone[0], many[40]);
    let small_blocks: Vec<Vec<f64>> =
        masks.chunks(7).flat_map(|c| train_logistic_block(&task, c, &cfg).unwrap()).collect();
    assert_eq!(small_blocks, many);
    let one_thread = tensor::rayon::ThreadPoolBuilder::new().num_threads(1).build().unwrap();
    assert_eq!(one_thread.install(|| train_logistic_many(&task, &masks, &cfg).unwrap()), many);
    assert!(train_logistic_many(&task, &[vec![true; 59]], &cfg).is_err());
}

/// The batched MLP path trains the same models as the one-at-a-time path (same init, same AdamW arithmetic; the
/// products sum in another order), independently of the block.
#[test]
fn batched_mlp_training_equals_one_model_at_a_time() {
    use strata_datamodels::runs::{BinaryTask, MlpConfig, train_mlp, train_mlp_block, train_mlp_many};
    use strata_datamodels::store::Sampling;
    let mut rng = tensor::seeded(5);
    let task = BinaryTask {
        train_x: tensor::uniform(&[50, 24], 0.0, 1.0, &mut rng),
        train_y: (0..50).map(|i| if (i * 5) % 3 == 0 { 1.0 } else { -1.0 }).collect(),
        test_x: tensor::uniform(&[5, 24], 0.0, 1.0, &mut rng),
        test_y: vec![1.0, -1.0, 1.0, -1.0, -1.0],
    };
    let cfg = MlpConfig { hidden: 8, steps: 30, ..MlpConfig::default() };
    let mut masks: Vec<Vec<bool>> = (0..20).map(|r| Sampling::Alpha { alpha: 0.5 }.mask(50, 2, r)).collect();
    masks[3] = vec![false; 50];
    let many = train_mlp_many(&task, &masks, &cfg).unwrap();
    for (r, mask) in masks.iter().enumerate() {
        let one = train_mlp(&task, mask, &cfg).unwrap();
        for (a, b) in many[r].iter().zip(&one) {
            assert!((a - b).abs() <= 1e-3 * b.abs().max(1.0), "model {r}: batched {a} vs single {b}");
        }
    }
    let alone = train_mlp_block(&task, &masks[7..8], &cfg).unwrap();
    assert_eq!(alone[0], many[7]);
    let small_blocks: Vec<Vec<f64>> = masks.chunks(3).flat_map(|c| train_mlp_block(&task, c, &cfg).unwrap()).collect();
    assert_eq!(small_blocks, many);
    let one_thread = tensor::rayon::ThreadPoolBuilder::new().num_threads(1).build().unwrap();
    assert_eq!(one_thread.install(|| train_mlp_many(&task, &masks, &cfg).unwrap()), many);
    assert!(train_mlp_many(&task, &masks, &MlpConfig { hidden: 0, ..cfg.clone() }).is_err());
}
