//! Central-difference checks in f64 of every differentiable op, with proptest over shapes and values
//! (broadcasting edge cases included).

use proptest::prelude::*;
use strata_tensor::gradcheck::check;
use strata_tensor::ndarray::{ArrayD, Dimension, IxDyn};
use strata_tensor::{Conv2dSpec, GeluApprox, Tensor, seeded};

use crate::arr;

const EPS: f64 = 1e-6;
const TOL: f64 = 1e-6;

#[track_caller]
fn assert_grad(inputs: &[ArrayD<f64>], f: impl Fn(&[Tensor<f64>]) -> Tensor<f64>) {
    let r = check(inputs, EPS, f);
    assert!(
        r.max_error < TOL,
        "gradient mismatch: {r:?} (input shapes {:?})",
        inputs.iter().map(|a| a.shape()).collect::<Vec<_>>()
    );
}

/// A shape of rank 1..=max_rank with dims 1..=max_dim and values in [lo, hi].
fn array(max_rank: usize, max_dim: usize, lo: f64, hi: f64) -> impl Strategy<Value = ArrayD<f64>> {
    prop::collection::vec(1..=max_dim, 1..=max_rank).prop_flat_map(move |shape| {
        let n: usize = shape.iter().product();
        prop::collection::vec(lo..hi, n).prop_map(move |v| arr(&shape, v))
    })
}

/// Values whose magnitude is in [lo, hi] with random sign (away from kinks and poles).
fn away_from_zero(shape: Vec<usize>, lo: f64, hi: f64) -> impl Strategy<Value = ArrayD<f64>> {
    let n: usize = shape.iter().product();
    prop::collection::vec((lo..hi, any::<bool>()), n)
        .prop_map(move |v| arr(&shape, v.into_iter().map(|(x, s)| if s { x } else { -x }).collect()))
}

/// Two shapes that broadcast: `b` drops some leading axes of `a` and sets some others to 1.
fn broadcast_pair() -> impl Strategy<Value = (Vec<usize>, Vec<usize>)> {
    (prop::collection::vec(1usize..4, 1..4), any::<u8>(), 0usize..3).prop_map(|(a, ones, drop)| {
        let drop = drop.min(a.len() - 1);
        let b: Vec<usize> =
            a[drop..].iter().enumerate().map(|(i, &d)| if ones >> i & 1 == 1 { 1 } else { d }).collect();
        if ones & 0x80 != 0 { (b, a) } else { (a, b) }
    })
}

fn values(shape: Vec<usize>, lo: f64, hi: f64) -> impl Strategy<Value = ArrayD<f64>> {
    let n: usize = shape.iter().product();
    prop::collection::vec(lo..hi, n).prop_map(move |v| arr(&shape, v))
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 24, ..ProptestConfig::default() })]

    #[test]
    fn broadcasting_arithmetic((a, b) in broadcast_pair().prop_flat_map(|(sa, sb)| (values(sa, -2.0, 2.0), away_from_zero(sb, 0.5, 2.0)))) {
        assert_grad(&[a.clone(), b.clone()], |t| &t[0] + &t[1]);
        assert_grad(&[a.clone(), b.clone()], |t| &t[0] - &t[1]);
        assert_grad(&[a.clone(), b.clone()], |t| &t[0] * &t[1]);
        assert_grad(&[a.clone(), b.clone()], |t| &t[0] / &t[1]);
        assert_grad(&[b.clone(), a.clone()], |t| &t[0] / &t[1].exp());
        assert_grad(&[a, b], |t| t[0].maximum(&t[1]));
    }

    #[test]
    fn same_tensor_used_twice(a in array(3, 4, -2.0, 2.0)) {
        assert_grad(&[a.clone()], |t| &t[0] * &t[0]);
        assert_grad(&[a], |t| (&t[0] + &t[0].tanh()) * &t[0].sigmoid());
    }

    #[test]
    fn smooth_unary(a in array(3, 4, -3.0, 3.0)) {
        assert_grad(&[a.clone()], |t| t[0].exp());
        assert_grad(&[a.clone()], |t| t[0].tanh());
        assert_grad(&[a.clone()], |t| t[0].sigmoid());
        assert_grad(&[a.clone()], |t| t[0].gelu(GeluApprox::Erf));
        assert_grad(&[a.clone()], |t| t[0].gelu(GeluApprox::Tanh));
        assert_grad(&[a.clone()], |t| t[0].softplus());
        assert_grad(&[a.clone()], |t| t[0].square());
        assert_grad(&[a.clone()], |t| -&t[0]);
        assert_grad(&[a.clone()], |t| t[0].add_scalar(0.7).mul_scalar(-1.3));
        assert_grad(&[a], |t| (&t[0] * 2.0 + 1.0) / 3.0 - 0.5);
    }

    #[test]
    fn positive_domain_unary(a in array(3, 4, 0.2, 3.0)) {
        assert_grad(&[a.clone()], |t| t[0].ln());
        assert_grad(&[a.clone()], |t| t[0].sqrt());
        assert_grad(&[a.clone()], |t| t[0].powf(1.7));
        assert_grad(&[a], |t| t[0].powf(-0.5));
    }

    #[test]
    fn kinked_unary(shape in prop::collection::vec(1usize..4, 1..4).prop_flat_map(|s| away_from_zero(s, 0.05, 2.0))) {
        assert_grad(&[shape.clone()], |t| t[0].abs());
        assert_grad(&[shape.clone()], |t| t[0].relu());
        // Clamp bounds chosen away from the generated magnitudes' grid.
        assert_grad(&[shape], |t| t[0].clamp(-1.013, 1.017));
    }

    #[test]
    fn where_and_masked_fill(a in array(3, 4, -2.0, 2.0), seed in any::<u64>()) {
        let mask = ArrayD::from_shape_fn(a.raw_dim(), |ix| (ix.slice().iter().sum::<usize>() as u64 + seed) % 3 == 0);
        let b = a.mapv(|x| x * 0.5 + 1.0);
        let m2 = mask.clone();
        assert_grad(&[a.clone(), b], move |t| Tensor::where_cond(&m2, &t[0], &t[1]));
        assert_grad(&[a], move |t| t[0].masked_fill(&mask, -3.0));
    }

    #[test]
    fn reductions(a in array(4, 4, -2.0, 2.0), keep in any::<bool>(), pick in any::<u32>()) {
        let nd = a.ndim() as isize;
        let ax = (pick as isize) % nd;
        let ax2 = ((pick / 7) as isize) % nd;
        assert_grad(&[a.clone()], |t| t[0].sum_all());
        assert_grad(&[a.clone()], |t| t[0].mean_all());
        assert_grad(&[a.clone()], move |t| t[0].sum(&[ax, ax2], keep));
        assert_grad(&[a.clone()], move |t| t[0].mean(&[ax - nd], keep));
        assert_grad(&[a.clone()], move |t| t[0].logsumexp(ax, keep));
        assert_grad(&[a], move |t| t[0].max(ax, keep));
    }

    #[test]
    fn shape_ops(a in array(4, 4, -2.0, 2.0), pick in any::<u32>()) {
        let nd = a.ndim();
        let shape = a.shape().to_vec();
        let n = a.len();
        assert_grad(&[a.clone()], move |t| t[0].reshape(&[n]));
        assert_grad(&[a.clone()], |t| t[0].reshape(&[usize::MAX]).unsqueeze(0));
        let mut perm: Vec<usize> = (0..nd).collect();
        perm.rotate_left(pick as usize % nd);
        let p2 = perm.clone();
        let p3 = perm.clone();
        assert_grad(&[a.clone()], move |t| t[0].permute(&p2));
        // Results are row-major, so any op can follow a permute (a reshape needs it).
        assert_grad(&[a.clone()], move |t| t[0].permute(&p3).reshape(&[usize::MAX]).exp());
        if nd >= 2 {
            assert_grad(&[a.clone()], |t| t[0].t());
        }
        let ax = pick as usize % nd;
        let len = shape[ax];
        let start = (pick as usize / 3) % len;
        assert_grad(&[a.clone()], move |t| t[0].narrow(ax as isize, start, len - start));
        let mut big = vec![2];
        big.extend(&shape);
        assert_grad(&[a.clone()], move |t| t[0].broadcast_to(&big));
        assert_grad(&[a.clone(), a.mapv(|x| x * 2.0)], move |t| Tensor::concat(&[&t[0], &t[1], &t[0]], ax as isize));
        assert_grad(&[a.clone(), a.mapv(|x| -x)], move |t| Tensor::stack(&[&t[0], &t[1]], ax));
        let idx: Vec<usize> = (0..5).map(|i| (i * 7 + pick as usize) % len).collect();
        assert_grad(&[a.clone()], move |t| t[0].index_select(ax as isize, &idx));
        let gidx = ArrayD::from_shape_fn(IxDyn(&shape), |ix| (ix.slice().iter().sum::<usize>() * 3 + pick as usize) % len);
        assert_grad(&[a], move |t| t[0].gather(ax as isize, &gidx));
    }

    #[test]
    fn matmul_2d(m in 1usize..5, k in 1usize..5, n in 1usize..5, seed in any::<u64>()) {
        let mut rng = seeded(seed);
        let a = strata_tensor::normal(&[m, k], 0.0, 1.0, &mut rng);
        let b = strata_tensor::normal(&[k, n], 0.0, 1.0, &mut rng);
        assert_grad(&[a, b], |t| t[0].matmul(&t[1]));
    }

    #[test]
    fn matmul_batched(batch in prop::collection::vec(1usize..4, 1..3), m in 1usize..4, k in 1usize..4, n in 1usize..4, bcast in 0u8..4, seed in any::<u64>()) {
        let mut rng = seeded(seed);
        let mut sa = batch.clone();
        sa.extend([m, k]);
        let mut sb: Vec<usize> = match bcast {
            0 => batch.clone(),
            1 => batch.iter().map(|_| 1).collect(),
            2 => vec![],
            _ => batch[1..].to_vec(),
        };
        sb.extend([k, n]);
        let a = strata_tensor::normal(&sa, 0.0, 1.0, &mut rng);
        let b = strata_tensor::normal(&sb, 0.0, 1.0, &mut rng);
        assert_grad(&[a.clone(), b.clone()], |t| t[0].matmul(&t[1]));
        // A 2-D left operand against a batched right one.
        let c = strata_tensor::normal(&[n, m], 0.0, 1.0, &mut rng);
        assert_grad(&[c, a], |t| t[0].matmul(&t[1]));
    }

    #[test]
    fn linear_layer(rows in prop::collection::vec(1usize..4, 1..3), i in 1usize..5, o in 1usize..5, bias in any::<bool>(), seed in any::<u64>()) {
        let mut rng = seeded(seed);
        let mut sx = rows.clone();
        sx.push(i);
        let x = strata_tensor::normal(&sx, 0.0, 1.0, &mut rng);
        let w = strata_tensor::normal(&[o, i], 0.0, 1.0, &mut rng);
        let b = strata_tensor::normal(&[o], 0.0, 1.0, &mut rng);
        if bias {
            assert_grad(&[x, w, b], |t| t[0].linear(&t[1], Some(&t[2])));
        } else {
            assert_grad(&[x, w], |t| t[0].linear(&t[1], None));
        }
    }

    #[test]
    fn softmax_family(a in array(3, 5, -3.0, 3.0), pick in any::<u32>()) {
        let ax = (pick as usize % a.ndim()) as isize;
        assert_grad(&[a.clone()], move |t| t[0].softmax(ax));
        assert_grad(&[a], move |t| t[0].log_softmax(ax - 1));
    }

    #[test]
    fn scaled_masked_softmax(a in array(4, 5, -3.0, 3.0), scale in 0.1f64..2.0, seed in any::<u64>()) {
        let shape = a.shape().to_vec();
        // A mask broadcast over the leading axis, with some rows fully masked.
        let mut mshape = shape.clone();
        mshape[0] = 1;
        let mask = ArrayD::from_shape_fn(IxDyn(&mshape), |ix| (ix.slice().iter().sum::<usize>() as u64 + seed) % 3 == 0);
        let m2 = mask.clone();
        assert_grad(&[a.clone()], move |t| t[0].scaled_masked_softmax(scale, Some(&m2)));
        assert_grad(&[a.clone()], move |t| t[0].scaled_masked_softmax(scale, None));
        // Equal to the unfused composition where a row keeps at least one entry.
        let fused = Tensor::new(a.clone()).scaled_masked_softmax(scale, Some(&mask));
        let composed = Tensor::new(a).mul_scalar(scale).masked_fill(&mask, f64::NEG_INFINITY).softmax(-1);
        for (f, c) in fused.value().iter().zip(composed.value().iter()) {
            prop_assert!((f - c).abs() < 1e-12 || (c.is_nan() && *f == 0.0) || (*c == 0.0 && *f == 0.0), "{f} vs {c}");
        }
    }

    #[test]
    fn layer_norm(rows in prop::collection::vec(1usize..4, 0..3), d in 2usize..7, seed in any::<u64>()) {
        let mut rng = seeded(seed);
        let mut sx = rows.clone();
        sx.push(d);
        let x = strata_tensor::normal(&sx, 0.3, 1.5, &mut rng);
        let w = strata_tensor::normal(&[d], 1.0, 0.5, &mut rng);
        let b = strata_tensor::normal(&[d], 0.0, 0.5, &mut rng);
        assert_grad(&[x, w, b], |t| t[0].layer_norm(&t[1], &t[2], 1e-5));
    }

    #[test]
    fn dropout_seeded(a in array(3, 5, -2.0, 2.0), seed in any::<u64>()) {
        assert_grad(&[a], move |t| t[0].dropout(0.3, &mut seeded(seed)));
    }

    #[test]
    fn conv2d(n in 1usize..3, c in 1usize..3, o in 1usize..3, h in 3usize..6, w in 3usize..6, k in 1usize..4, stride in 1usize..3, pad in 0usize..2, bias in any::<bool>(), seed in any::<u64>()) {
        let mut rng = seeded(seed);
        let x = strata_tensor::normal(&[n, c, h, w], 0.0, 1.0, &mut rng);
        let wt = strata_tensor::normal(&[o, c, k, k], 0.0, 1.0, &mut rng);
        let b = strata_tensor::normal(&[o], 0.0, 1.0, &mut rng);
        let spec = Conv2dSpec { stride, padding: pad };
        if bias {
            assert_grad(&[x, wt, b], move |t| t[0].conv2d(&t[1], Some(&t[2]), spec));
        } else {
            assert_grad(&[x, wt], move |t| t[0].conv2d(&t[1], None, spec));
        }
    }

    #[test]
    fn pooling_and_upsampling(n in 1usize..3, c in 1usize..3, h in 2usize..7, w in 2usize..7, k in 1usize..3, stride in 1usize..3, f in 1usize..4, oh in 1usize..9, ow in 1usize..9, seed in any::<u64>()) {
        let mut rng = seeded(seed);
        let x = strata_tensor::normal(&[n, c, h, w], 0.0, 1.0, &mut rng);
        let k = k.min(h).min(w);
        assert_grad(&[x.clone()], move |t| t[0].max_pool2d(k, stride));
        assert_grad(&[x.clone()], move |t| t[0].avg_pool2d(k, stride));
        assert_grad(&[x.clone()], move |t| t[0].upsample_nearest2d(f));
        assert_grad(&[x], move |t| t[0].upsample_bilinear2d(oh, ow));
    }

    #[test]
    fn losses(rows in 1usize..6, classes in 2usize..6, tau in 0.5f64..4.0, seed in any::<u64>()) {
        let mut rng = seeded(seed);
        let logits = strata_tensor::normal(&[rows, classes], 0.0, 2.0, &mut rng);
        let other = strata_tensor::normal(&[rows, classes], 0.0, 2.0, &mut rng);
        let labels: Vec<usize> = (0..rows).map(|r| (r * 7 + seed as usize % 5) % classes).collect();
        let l2 = labels.clone();
        assert_grad(&[logits.clone()], move |t| t[0].cross_entropy(&l2));
        let l3 = labels.clone();
        let ignore = labels[0];
        assert_grad(&[logits.clone()], move |t| t[0].cross_entropy_with_ignore(&l3, Some(ignore)));
        assert_grad(&[logits.clone(), other.clone()], |t| t[0].cross_entropy_soft(&t[1].softmax(-1)));
        // The teacher is detached by design: only the student gets a gradient.
        let teacher = Tensor::new(other.clone());
        assert_grad(&[logits.clone()], move |t| t[0].distillation_loss(&teacher, tau));
        assert_grad(&[logits, other], |t| t[0].mse(&t[1]));
    }
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

#[test]
fn conv2d_matches_direct_sum() {
    let mut rng = seeded(3);
    let x = strata_tensor::normal::<f64>(&[2, 3, 5, 6], 0.0, 1.0, &mut rng);
    let w = strata_tensor::normal::<f64>(&[4, 3, 3, 2], 0.0, 1.0, &mut rng);
    let spec = Conv2dSpec { stride: 2, padding: 1 };
    let y = Tensor::new(x.clone()).conv2d(&Tensor::new(w.clone()), None, spec);
    let (oh, ow) = (y.shape()[2], y.shape()[3]);
    for b in 0..2 {
        for o in 0..4 {
            for oy in 0..oh {
                for ox in 0..ow {
                    let mut s = 0.0;
                    for c in 0..3 {
                        for ky in 0..3 {
                            for kx in 0..2 {
                                let (iy, ix) = ((oy * 2 + ky) as isize - 1, (ox * 2 + kx) as isize - 1);
                                if iy >= 0 && ix >= 0 && iy < 5 && ix < 6 {
                                    s += x[[b, c, iy as usize, ix as usize]] * w[[o, c, ky, kx]];
                                }
                            }
                        }
                    }
                    assert!((y.value()[[b, o, oy, ox]] - s).abs() < 1e-12);
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
