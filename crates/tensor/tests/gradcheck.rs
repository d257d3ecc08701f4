//! Central-difference checks in f64 of every differentiable op: the crate's one list of cases
//! (`gradcheck::cases`, also run by the `tensor/foundations` reproduction) under proptest seeds, so every run
//! draws new shapes (broadcasting edge cases included) and values. Reference values and fused-vs-composed
//! equalities follow.

use proptest::prelude::*;
use strata_tensor::gradcheck::{TOLERANCE, cases, check_case};
use strata_tensor::ndarray::{ArrayD, Dimension, IxDyn};
use strata_tensor::{AttentionMask, Conv2dSpec, GeluApprox, Tensor, seeded};

use crate::arr;

proptest! {
    #![proptest_config(ProptestConfig { cases: 24, ..ProptestConfig::default() })]

    #[test]
    fn every_op_case_matches_central_differences(seed in any::<u64>()) {
        for case in cases() {
            let r = check_case(&case, &mut seeded(seed));
            prop_assert!(r.max_error < TOLERANCE, "{}: {r:?} (seed {seed})", case.name);
        }
    }

    #[test]
    fn fused_masked_softmax_equals_the_composition(a in (1usize..4, 1usize..5, 1usize..6).prop_map(|(x, y, z)| [x, y, z]), scale in 0.1f64..2.0, seed in any::<u64>()) {
        let values = strata_tensor::uniform::<f64>(&a, -3.0, 3.0, &mut seeded(seed));
        let mask = ArrayD::from_shape_fn(IxDyn(&[1, a[1], a[2]]), |ix| (ix.slice().iter().sum::<usize>() as u64 + seed) % 3 == 0);
        let fused = Tensor::new(values.clone()).scaled_masked_softmax(scale, Some(&mask));
        let composed = Tensor::new(values).mul_scalar(scale).masked_fill(&mask, f64::NEG_INFINITY).softmax(-1);
        // Equal where a row keeps at least one entry; a fully masked row is 0 (fused) instead of NaN.
        for (f, c) in fused.value().iter().zip(composed.value().iter()) {
            prop_assert!((f - c).abs() < 1e-12 || (c.is_nan() && *f == 0.0) || (*c == 0.0 && *f == 0.0), "{f} vs {c}");
        }
    }

    #[test]
    fn fused_attention_equals_the_composition(
        // Lengths past 32 take the causal mask's blocked path (several query blocks, each seeing fewer keys).
        (b, h, t, extra, dh) in (1usize..3, 1usize..4, prop_oneof![1usize..6, 30usize..72], 0usize..3, 1usize..5),
        mask_kind in 0usize..3,
        seed in any::<u64>(),
    ) {
        let s = t + extra;
        let d = h * dh;
        let rng = &mut seeded(seed);
        let q = Tensor::leaf(strata_tensor::normal::<f64>(&[b, t, d], 0.0, 1.0, rng));
        let k = Tensor::leaf(strata_tensor::normal::<f64>(&[b, s, d], 0.0, 1.0, rng));
        let v = Tensor::leaf(strata_tensor::normal::<f64>(&[b, s, d], 0.0, 1.0, rng));
        // Padding that can hide every key of a row (the fused op gives zeros there, as the composition does).
        let real: Vec<bool> = (0..b * s).map(|i| (i as u64 * 7 + seed) % 3 != 0).collect();
        let (mask, dense) = match mask_kind {
            0 => (AttentionMask::All, None),
            1 => (AttentionMask::Causal, Some(ArrayD::from_shape_fn(IxDyn(&[1, 1, t, s]), |ix| ix[3] > ix[2] + s - t))),
            _ => (AttentionMask::KeyPadding(&real), Some(ArrayD::from_shape_fn(IxDyn(&[b, 1, 1, s]), |ix| !real[ix[0] * s + ix[3]]))),
        };
        let heads = |x: &Tensor<f64>, len| x.reshape(&[b, len, h, dh]).permute(&[0, 2, 1, 3]);
        let composed = heads(&q, t)
            .matmul(&heads(&k, s).t())
            .scaled_masked_softmax(1.0 / (dh as f64).sqrt(), dense.as_ref())
            .matmul(&heads(&v, s))
            .permute(&[0, 2, 1, 3])
            .reshape(&[b, t, d]);
        let fused = Tensor::multi_head_attention(&q, &k, &v, h, mask);
        let split = Tensor::attention(&heads(&q, t), &heads(&k, s), &heads(&v, s), 1.0 / (dh as f64).sqrt(), mask)
            .permute(&[0, 2, 1, 3])
            .reshape(&[b, t, d]);
        let weights = Tensor::new(strata_tensor::normal::<f64>(&[b, t, d], 0.0, 1.0, rng));
        let gc = (&composed * &weights).sum_all().backward();
        let gf = (&fused * &weights).sum_all().backward();
        let gs = (&split * &weights).sum_all().backward();
        let close = |a: &ArrayD<f64>, c: &ArrayD<f64>| a.iter().zip(c.iter()).all(|(x, y)| (x - y).abs() < 1e-12);
        prop_assert!(close(fused.value(), composed.value()), "forward: {:?} vs {:?}", fused.value(), composed.value());
        prop_assert!(close(split.value(), composed.value()));
        for x in [&q, &k, &v] {
            let (f, c, sp) = (gf.get(x).expect("tracked"), gc.get(x).expect("tracked"), gs.get(x).expect("tracked"));
            prop_assert!(close(f, c), "gradient: {f:?} vs {c:?}");
            prop_assert!(close(sp, c));
        }
        if s == t && mask_kind != 2 {
            // The fused-qkv form of the same self-attention.
            let qkv = Tensor::leaf(strata_tensor::ndarray::concatenate(
                strata_tensor::ndarray::Axis(2),
                &[q.value().view(), k.value().view(), v.value().view()],
            ).expect("same batch and length"));
            let f = qkv.fused_self_attention(h, mask);
            prop_assert!(close(f.value(), composed.value()));
            let g = (&f * &weights).sum_all().backward();
            let expect = strata_tensor::ndarray::concatenate(
                strata_tensor::ndarray::Axis(2),
                &[gc.get(&q).expect("q").view(), gc.get(&k).expect("k").view(), gc.get(&v).expect("v").view()],
            ).expect("same shapes");
            prop_assert!(close(g.get(&qkv).expect("tracked"), &expect));
        }
    }
}

#[test]
fn the_case_list_catches_a_wrong_gradient() {
    // A deliberately wrong op (forward x^2, "gradient" of x^3 by detaching part of it) must fail the check.
    let wrong = strata_tensor::gradcheck::check(&[arr(&[3], vec![0.5, 1.0, 2.0])], 1e-6, |t| &t[0] * &t[0].detach());
    assert!(wrong.max_error > 0.1, "{wrong:?}");
    assert!(cases().len() >= 20, "every op family is listed");
}

#[test]
fn cross_entropy_matches_composition() {
    let logits = arr(&[3, 4], (0..12).map(|i| (i as f64 * 0.37).sin() * 3.0).collect());
    let labels = [2, 0, 3];
    let fused = Tensor::new(logits.clone()).cross_entropy(&labels).item();
    let onehot = Tensor::<f64>::one_hot(&labels, 4);
    let composed = Tensor::new(logits).cross_entropy_soft(&onehot).item();
    assert!((fused - composed).abs() < 1e-12, "{fused} vs {composed}");
}

#[test]
fn gelu_forms_agree_with_references() {
    // Reference values from the defining formulas evaluated independently (scipy.special.erf / numpy tanh).
    let x = Tensor::<f64>::from_vec(vec![-2.0, -0.5, 0.0, 0.5, 2.0], &[5]);
    let erf = x.gelu(GeluApprox::Erf).to_vec();
    let want_erf = [-0.04550026389635842, -0.15426876936299347, 0.0, 0.3457312306370065, 1.9544997361036416];
    for (a, b) in erf.iter().zip(want_erf) {
        assert!((a - b).abs() < 1e-12, "gelu erf {a} vs {b}");
    }
    let tanh = x.gelu(GeluApprox::Tanh).to_vec();
    let want_tanh = [-0.04540230591222494, -0.15428599017485606, 0.0, 0.34571400982514394, 1.954597694087775];
    for (a, b) in tanh.iter().zip(want_tanh) {
        assert!((a - b).abs() < 1e-12, "gelu tanh {a} vs {b}");
    }
}

#[test]
fn bilinear_matches_pytorch_align_corners_false() {
    // torch.nn.functional.interpolate(x, size=(4, 4), mode="bilinear", align_corners=False) of [[1, 2], [3, 4]]
    let x = Tensor::<f64>::from_vec(vec![1.0, 2.0, 3.0, 4.0], &[1, 1, 2, 2]);
    let y = x.upsample_bilinear2d(4, 4).to_vec();
    let want = [1.0, 1.25, 1.75, 2.0, 1.5, 1.75, 2.25, 2.5, 2.5, 2.75, 3.25, 3.5, 3.0, 3.25, 3.75, 4.0];
    assert_eq!(y, want);
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 32, ..ProptestConfig::default() })]
    /// conv2d against the definition, over batch sizes on both sides of the one-task-per-image threshold,
    /// strides, paddings and non-square kernels.
    #[test]
    fn conv2d_matches_direct_sum(
        n in 1usize..7, c in 1usize..4, o in 1usize..4, h in 2usize..8, w in 2usize..8,
        kh in 1usize..4, kw in 1usize..4, stride in 1usize..4, pad in 0usize..3, seed in any::<u64>(),
    ) {
        prop_assume!(h + 2 * pad >= kh && w + 2 * pad >= kw);
        let mut rng = seeded(seed);
        let x = strata_tensor::normal::<f64>(&[n, c, h, w], 0.0, 1.0, &mut rng);
        let wt = strata_tensor::normal::<f64>(&[o, c, kh, kw], 0.0, 1.0, &mut rng);
        let bias = strata_tensor::normal::<f64>(&[o], 0.0, 1.0, &mut rng);
        let spec = Conv2dSpec { stride, padding: pad };
        let y = Tensor::new(x.clone()).conv2d(&Tensor::new(wt.clone()), Some(&Tensor::new(bias.clone())), spec);
        let (oh, ow) = ((h + 2 * pad - kh) / stride + 1, (w + 2 * pad - kw) / stride + 1);
        prop_assert_eq!(y.shape(), &[n, o, oh, ow][..]);
        for b in 0..n {
            for oc in 0..o {
                for oy in 0..oh {
                    for ox in 0..ow {
                        let mut s = bias[[oc]];
                        for ic in 0..c {
                            for ky in 0..kh {
                                for kx in 0..kw {
                                    let (iy, ix) = ((oy * stride + ky) as isize - pad as isize, (ox * stride + kx) as isize - pad as isize);
                                    if iy >= 0 && ix >= 0 && iy < h as isize && ix < w as isize {
                                        s += x[[b, ic, iy as usize, ix as usize]] * wt[[oc, ic, ky, kx]];
                                    }
                                }
                            }
                        }
                        prop_assert!((y.value()[[b, oc, oy, ox]] - s).abs() < 1e-12);
                    }
                }
            }
        }
    }
}

#[test]
fn fast_exp_is_accurate_for_f32() {
    use strata_tensor::Float;
    let mut worst = 0.0f64;
    let mut x = -87.0f32;
    while x < 88.0 {
        let want = (x as f64).exp();
        let got = x.exp_fast() as f64;
        worst = worst.max((got - want).abs() / want);
        x += 0.0137;
    }
    assert!(worst < 3e-7, "worst relative error {worst}");
    assert!(200.0f32.exp_fast().is_finite() && (-200.0f32).exp_fast() >= 0.0);
}

#[test]
fn f32_erf_approximation_is_within_f32_resolution() {
    use strata_tensor::Float;
    let mut worst = 0.0f64;
    for i in -60_000..=60_000 {
        let x = i as f64 * 1e-4;
        let got = Float::erf(x as f32) as f64;
        worst = worst.max((got - libm::erf(x as f32 as f64)).abs());
    }
    assert!(worst < 6e-7, "max |erf_f32 - erf| = {worst}");
    assert!(Float::erf(f32::NAN).is_nan());
}
