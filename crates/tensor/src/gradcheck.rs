//! Finite-difference gradient checks in f64, for this crate's ops and for any model built on it, and
//! [`cases`]: the one list of op families that the crate's property tests and the `tensor/foundations`
//! reproduction both check.

use ndarray::{ArrayD, Dimension};
use rand::RngExt;

use crate::{Conv2dSpec, GeluApprox, Rng, Tensor, no_grad, normal, uniform};

/// The worst disagreement between analytic and numerical gradients.
#[derive(Debug, Clone, Copy)]
pub struct GradCheck {
    /// max |analytic - numeric| / max(1, |numeric|) over all input entries.
    pub max_error: f64,
    /// Which input and flat index it was at.
    pub at: (usize, usize),
    pub analytic: f64,
    pub numeric: f64,
}

/// Compares the gradient of `f` at `inputs` with central differences of step `eps`.
///
/// `f` maps leaf tensors to any tensor; a non-scalar output is reduced as `sum(out * w)` with fixed
/// pseudo-random weights `w`, so every output entry is checked.
pub fn check(inputs: &[ArrayD<f64>], eps: f64, f: impl Fn(&[Tensor<f64>]) -> Tensor<f64>) -> GradCheck {
    let weights = |shape: &[usize]| {
        let n: usize = shape.iter().product();
        // A fixed, irregular weighting: no symmetry can hide a wrong sign or a transposition.
        let w: Vec<f64> = (0..n).map(|i| 0.5 + ((i * 7919 + 13) % 101) as f64 / 101.0).collect();
        Tensor::from_vec(w, shape)
    };
    let scalar = |ts: &[Tensor<f64>]| {
        let out = f(ts);
        if out.len() == 1 { out.sum_all() } else { (&out * &weights(out.shape())).sum_all() }
    };
    let leaves: Vec<Tensor<f64>> = inputs.iter().map(|a| Tensor::leaf(a.clone())).collect();
    let grads = scalar(&leaves).backward();
    let mut worst = GradCheck { max_error: 0.0, at: (0, 0), analytic: 0.0, numeric: 0.0 };
    for (i, input) in inputs.iter().enumerate() {
        let analytic = grads.get(&leaves[i]).cloned().unwrap_or_else(|| ArrayD::zeros(input.raw_dim()));
        for j in 0..input.len() {
            let eval = |delta: f64| {
                let ts: Vec<Tensor<f64>> = inputs
                    .iter()
                    .enumerate()
                    .map(|(k, a)| {
                        let mut a = a.clone();
                        if k == i {
                            a.as_slice_mut().expect("standard")[j] += delta;
                        }
                        Tensor::new(a)
                    })
                    .collect();
                no_grad(|| scalar(&ts).item())
            };
            let numeric = (eval(eps) - eval(-eps)) / (2.0 * eps);
            let a = analytic.as_standard_layout().as_slice().expect("standard")[j];
            let err = (a - numeric).abs() / numeric.abs().max(1.0);
            if err > worst.max_error || err.is_nan() {
                worst = GradCheck { max_error: err, at: (i, j), analytic: a, numeric };
            }
        }
    }
    worst
}

/// Checks the gradients of a scalar `loss()` with respect to every trainable parameter in `params`
/// (every entry of tensors up to `max_entries`, an even spread of entries beyond).
pub fn check_params(
    params: &crate::Params<f64>,
    eps: f64,
    max_entries: usize,
    loss: impl Fn() -> Tensor<f64>,
) -> (GradCheck, String) {
    let grads = loss().backward();
    let mut worst = GradCheck { max_error: 0.0, at: (0, 0), analytic: 0.0, numeric: 0.0 };
    let mut worst_name = String::new();
    for (pi, (name, var)) in params.iter().into_iter().enumerate() {
        if !var.is_trainable() {
            continue;
        }
        let analytic = grads.get_id(var.id()).cloned().unwrap_or_else(|| ArrayD::zeros(ndarray::IxDyn(&var.shape())));
        let analytic = analytic.as_standard_layout().into_owned();
        let n = var.len();
        let stride = n.div_ceil(max_entries.max(1)).max(1);
        for j in (0..n).step_by(stride) {
            let original = var.value();
            let eval = |delta: f64| {
                let mut a = original.clone();
                a.as_slice_mut().expect("standard")[j] += delta;
                var.set(a);
                no_grad(|| loss().item())
            };
            let numeric = (eval(eps) - eval(-eps)) / (2.0 * eps);
            var.set(original);
            let a = analytic.as_slice().expect("standard")[j];
            let err = (a - numeric).abs() / numeric.abs().max(1.0);
            if err > worst.max_error || err.is_nan() {
                worst = GradCheck { max_error: err, at: (pi, j), analytic: a, numeric };
                worst_name = name.clone();
            }
        }
    }
    (worst, worst_name)
}

/// Inputs for a gradient check and the function of them to check.
pub type CaseDraw = (Vec<ArrayD<f64>>, Box<dyn Fn(&[Tensor<f64>]) -> Tensor<f64>>);

/// One family of differentiable ops: draws random shapes and values (inside the op's smooth domain: away from
/// kinks, poles and ties) from a seeded stream, so a property test and a report can run the same cases.
#[derive(Debug, Clone, Copy)]
pub struct OpCase {
    pub name: &'static str,
    pub draw: fn(&mut Rng) -> CaseDraw,
}

/// Relative error under which an f64 central-difference check (step 1e-6) passes.
pub const TOLERANCE: f64 = 1e-6;

/// Runs `case` on one draw from `rng`.
pub fn check_case(case: &OpCase, rng: &mut Rng) -> GradCheck {
    let (inputs, f) = (case.draw)(rng);
    check(&inputs, 1e-6, f)
}

fn below(rng: &mut Rng, n: usize) -> usize {
    rng.random_range(0..n)
}

/// A shape of rank `1..=max_rank` with dims `1..=max_dim`.
fn dims(rng: &mut Rng, max_rank: usize, max_dim: usize) -> Vec<usize> {
    (0..1 + below(rng, max_rank)).map(|_| 1 + below(rng, max_dim)).collect()
}

fn n(shape: &[usize], rng: &mut Rng) -> ArrayD<f64> {
    normal(shape, 0.0, 1.0, rng)
}

/// Magnitudes in `[lo, hi]` with random signs.
fn away_from_zero(shape: &[usize], lo: f64, hi: f64, rng: &mut Rng) -> ArrayD<f64> {
    let mut a: ArrayD<f64> = uniform(shape, lo, hi, rng);
    a.iter_mut().for_each(|x| {
        if rng.random::<bool>() {
            *x = -*x
        }
    });
    a
}

/// `len` distinct values in `[-2, 2)` in random order, at least `4 / len` apart (far beyond the difference step).
fn distinct(len: usize, rng: &mut Rng) -> Vec<f64> {
    crate::permutation(len, rng).into_iter().map(|i| i as f64 * 4.0 / len as f64 - 2.0).collect()
}

/// Two shapes that broadcast: one drops some leading axes of the other and sets some others to 1.
fn broadcast_pair(rng: &mut Rng) -> (Vec<usize>, Vec<usize>) {
    let a: Vec<usize> = (0..1 + below(rng, 3)).map(|_| 1 + below(rng, 3)).collect();
    let drop = below(rng, a.len());
    let b: Vec<usize> = a[drop..].iter().map(|&d| if rng.random::<bool>() { 1 } else { d }).collect();
    if rng.random::<bool>() { (b, a) } else { (a, b) }
}

fn case(name: &'static str, draw: fn(&mut Rng) -> CaseDraw) -> OpCase {
    OpCase { name, draw }
}

/// Every differentiable op family of this crate, as gradient-check cases: the list the crate's tests run
/// under proptest and the `tensor/foundations` reproduction reports.
pub fn cases() -> Vec<OpCase> {
    vec![
        case("add/sub (broadcast)", |r| {
            let (sa, sb) = broadcast_pair(r);
            (vec![n(&sa, r), n(&sb, r)], Box::new(|t| &(&t[0] + &t[1]) - &t[1].mul_scalar(0.3)))
        }),
        case("mul/div (broadcast)", |r| {
            let (sa, sb) = broadcast_pair(r);
            (vec![n(&sa, r), away_from_zero(&sb, 0.5, 2.0, r)], Box::new(|t| &(&t[0] * &t[1]) + &(&t[0] / &t[1])))
        }),
        case("maximum (broadcast)", |r| {
            let (sa, sb) = broadcast_pair(r);
            let a = n(&sa, r);
            // Shift b so no pair ties (a tie has no derivative).
            let b = n(&sb, r).mapv(|x| if x.fract().abs() < 0.5 { x + 0.013 } else { x - 0.017 });
            (vec![a, b], Box::new(|t| t[0].maximum(&t[1])))
        }),
        case("same tensor used twice", |r| {
            let s = dims(r, 3, 4);
            (vec![n(&s, r)], Box::new(|t| &(&t[0] * &t[0]) + &((&t[0] + &t[0].tanh()) * &t[0].sigmoid())))
        }),
        case("exp/tanh/sigmoid/softplus/square/neg/scalars", |r| {
            let s = dims(r, 3, 4);
            (
                vec![uniform(&s, -3.0, 3.0, r)],
                Box::new(|t| {
                    let x = &t[0];
                    x.exp().mul_scalar(0.1) + x.tanh() * x.sigmoid() + x.softplus() + x.square()
                        - x.neg().add_scalar(0.7)
                        + (x * 2.0 + 1.0) / 3.0
                }),
            )
        }),
        case("gelu erf/tanh", |r| {
            let s = dims(r, 3, 4);
            (vec![uniform(&s, -3.0, 3.0, r)], Box::new(|t| t[0].gelu(GeluApprox::Erf) + t[0].gelu(GeluApprox::Tanh)))
        }),
        case("ln/sqrt/powf", |r| {
            let s = dims(r, 3, 4);
            (vec![uniform(&s, 0.2, 3.0, r)], Box::new(|t| t[0].ln() + t[0].sqrt() + t[0].powf(1.7) + t[0].powf(-0.5)))
        }),
        case("abs/relu/clamp", |r| {
            let s = dims(r, 3, 4);
            // Clamp bounds away from the magnitudes' grid, values away from the kink at 0.
            (vec![away_from_zero(&s, 0.05, 2.0, r)], Box::new(|t| t[0].abs() + t[0].relu() + t[0].clamp(-1.013, 1.017)))
        }),
        case("where/masked_fill", |r| {
            let s = dims(r, 3, 4);
            let offset = below(r, 3);
            let (a, b) = (n(&s, r), n(&s, r));
            (
                vec![a, b],
                Box::new(move |t| {
                    let mask =
                        ArrayD::from_shape_fn(t[0].shape(), |ix| (ix.slice().iter().sum::<usize>() + offset) % 3 == 0);
                    let other = mask.mapv(|m| !m);
                    Tensor::where_cond(&mask, &t[0], &t[1]).masked_fill(&other, -3.0) + t[1].masked_fill(&mask, 0.5)
                }),
            )
        }),
        case("sum/mean/max/logsumexp (axes, keepdim)", |r| {
            let s = dims(r, 4, 4);
            let nd = s.len() as isize;
            let (ax, ax2, keep) = (below(r, s.len()) as isize, below(r, s.len()) as isize, r.random::<bool>());
            // Distinct values so that max has a unique argmax.
            let a = ArrayD::from_shape_vec(ndarray::IxDyn(&s), distinct(s.iter().product(), r)).expect("shape");
            (
                vec![a],
                Box::new(move |t| {
                    let x = &t[0];
                    x.sum(&[ax, ax2], keep).sum_all()
                        + x.mean(&[ax - nd], keep).sum_all()
                        + x.logsumexp(ax, keep).sum_all()
                        + x.max(ax, keep).sum_all()
                        + x.mean_all()
                }),
            )
        }),
        case("reshape/permute/t/narrow/broadcast_to", |r| {
            let s = dims(r, 4, 4);
            let nd = s.len();
            let mut perm: Vec<usize> = (0..nd).collect();
            perm.rotate_left(below(r, nd));
            let ax = below(r, nd);
            let start = below(r, s[ax]);
            let len = s[ax] - start;
            let mut big = vec![2];
            big.extend(&s);
            (
                vec![n(&s, r)],
                Box::new(move |t| {
                    let x = &t[0];
                    let flat = x.permute(&perm).reshape(&[usize::MAX]).exp().sum_all();
                    let tr = if nd >= 2 { x.t().square().sum_all() } else { x.unsqueeze(0).sum_all() };
                    flat + tr + x.narrow(ax as isize, start, len).tanh().sum_all() + x.broadcast_to(&big).sum_all()
                }),
            )
        }),
        case("concat/stack/index_select/gather", |r| {
            let s = dims(r, 3, 4);
            let ax = below(r, s.len());
            let len = s[ax];
            let idx: Vec<usize> = (0..5).map(|_| below(r, len)).collect();
            let gidx = ArrayD::from_shape_fn(ndarray::IxDyn(&s), |_| 0usize).mapv(|_: usize| below(r, len));
            let a = n(&s, r);
            (
                vec![a.clone(), a.mapv(|x| 2.0 * x - 0.3)],
                Box::new(move |t| {
                    let axi = ax as isize;
                    Tensor::concat(&[&t[0], &t[1], &t[0]], axi).square().sum_all()
                        + Tensor::stack(&[&t[0], &t[1]], ax).tanh().sum_all()
                        + t[0].index_select(axi, &idx).exp().sum_all()
                        + t[1].gather(axi, &gidx).square().sum_all()
                }),
            )
        }),
        case("matmul 2-D", |r| {
            let (m, k, nn) = (1 + below(r, 4), 1 + below(r, 4), 1 + below(r, 4));
            (vec![n(&[m, k], r), n(&[k, nn], r)], Box::new(|t| t[0].matmul(&t[1])))
        }),
        case("matmul batched (broadcast, 2-D left)", |r| {
            let batch: Vec<usize> = (0..1 + below(r, 2)).map(|_| 1 + below(r, 3)).collect();
            let (m, k, nn) = (1 + below(r, 3), 1 + below(r, 3), 1 + below(r, 3));
            let mut sa = batch.clone();
            sa.extend([m, k]);
            let mut sb: Vec<usize> = match below(r, 4) {
                0 => batch.clone(),
                1 => batch.iter().map(|_| 1).collect(),
                2 => vec![],
                _ => batch[1..].to_vec(),
            };
            sb.extend([k, nn]);
            (
                vec![n(&sa, r), n(&sb, r), n(&[nn, m], r)],
                Box::new(|t| {
                    let ab = t[0].matmul(&t[1]);
                    &ab.sum_all() + &t[2].matmul(&t[0]).square().sum_all()
                }),
            )
        }),
        case("linear (with and without bias)", |r| {
            let mut sx: Vec<usize> = (0..1 + below(r, 2)).map(|_| 1 + below(r, 3)).collect();
            let (i, o) = (1 + below(r, 4), 1 + below(r, 4));
            sx.push(i);
            (
                vec![n(&sx, r), n(&[o, i], r), n(&[o], r)],
                Box::new(|t| t[0].linear(&t[1], Some(&t[2])) + t[0].linear(&t[1], None).tanh()),
            )
        }),
        case("softmax/log_softmax", |r| {
            let s = dims(r, 3, 5);
            let ax = below(r, s.len()) as isize;
            (vec![uniform(&s, -3.0, 3.0, r)], Box::new(move |t| t[0].softmax(ax) + t[0].log_softmax(ax - 1)))
        }),
        case("scaled_masked_softmax", |r| {
            let s = dims(r, 4, 5);
            let scale = uniform::<f64>(&[1], 0.1, 2.0, r)[[0]];
            let offset = below(r, 3);
            // A mask broadcast over the leading axis; some rows may be fully masked.
            let mut ms = s.clone();
            ms[0] = 1;
            let mask =
                ArrayD::from_shape_fn(ndarray::IxDyn(&ms), |ix| (ix.slice().iter().sum::<usize>() + offset) % 3 == 0);
            (
                vec![uniform(&s, -3.0, 3.0, r)],
                Box::new(move |t| {
                    t[0].scaled_masked_softmax(scale, Some(&mask)) + t[0].scaled_masked_softmax(scale, None)
                }),
            )
        }),
        case("attention ([b, h, t, dh]; all, causal, key padding)", |r| {
            let (b, h, mut t, dh) = (1 + below(r, 2), 1 + below(r, 2), 1 + below(r, 3), 1 + below(r, 3));
            if r.random::<bool>() {
                // Past 32 queries the causal mask runs in query blocks that see fewer keys.
                t += 32;
            }
            let s = t + below(r, 3);
            let scale = uniform::<f64>(&[1], 0.2, 1.5, r)[[0]];
            // Key 0 of every row is real; rows whose keys are all padding are covered by the equality tests.
            let real: Vec<bool> = (0..b * s).map(|i| i % s == 0 || r.random::<bool>()).collect();
            let inputs = vec![n(&[b, h, t, dh], r), n(&[b, h, s, dh], r), n(&[b, h, s, dh], r)];
            (
                inputs,
                Box::new(move |x| {
                    let att = |m| Tensor::attention(&x[0], &x[1], &x[2], scale, m);
                    &(&att(crate::AttentionMask::All) + &att(crate::AttentionMask::Causal).mul_scalar(0.7))
                        + &att(crate::AttentionMask::KeyPadding(&real)).mul_scalar(1.3)
                }),
            )
        }),
        case("multi_head_attention / fused_self_attention ([b, t, h * dh])", |r| {
            let (b, h, t, dh) = (1 + below(r, 2), 1 + below(r, 3), 1 + below(r, 3), 1 + below(r, 3));
            let (s, d) = (t + below(r, 3), h * dh);
            let real: Vec<bool> = (0..b * s).map(|i| i % s == 0 || r.random::<bool>()).collect();
            let inputs = vec![n(&[b, t, d], r), n(&[b, s, d], r), n(&[b, s, d], r), n(&[b, t, 3 * d], r)];
            (
                inputs,
                Box::new(move |x| {
                    let mha = |m| Tensor::multi_head_attention(&x[0], &x[1], &x[2], h, m);
                    &(&mha(crate::AttentionMask::All) + &mha(crate::AttentionMask::KeyPadding(&real)).mul_scalar(0.6))
                        + &x[3].fused_self_attention(h, crate::AttentionMask::Causal).mul_scalar(1.4)
                }),
            )
        }),
        case("layer_norm", |r| {
            let mut sx: Vec<usize> = (0..below(r, 3)).map(|_| 1 + below(r, 3)).collect();
            let d = 2 + below(r, 5);
            sx.push(d);
            (
                vec![normal(&sx, 0.3, 1.5, r), normal(&[d], 1.0, 0.5, r), normal(&[d], 0.0, 0.5, r)],
                Box::new(|t| t[0].layer_norm(&t[1], &t[2], 1e-5)),
            )
        }),
        case("dropout (seeded)", |r| {
            let s = dims(r, 3, 5);
            let seed = r.random::<u64>();
            (vec![n(&s, r)], Box::new(move |t| t[0].dropout(0.3, &mut crate::seeded(seed))))
        }),
        case("conv2d (stride, padding, bias)", |r| {
            // Batches of 4 or more take the one-task-per-image path, smaller ones the split-product path.
            let (b, c, o) = (1 + below(r, 6), 1 + below(r, 2), 1 + below(r, 2));
            let (h, w, kh, kw) = (3 + below(r, 3), 3 + below(r, 3), 1 + below(r, 3), 1 + below(r, 3));
            let spec = Conv2dSpec { stride: 1 + below(r, 3), padding: below(r, 3) };
            (
                vec![n(&[b, c, h, w], r), n(&[o, c, kh, kw], r), n(&[o], r)],
                Box::new(move |t| t[0].conv2d(&t[1], Some(&t[2]), spec) + t[0].conv2d(&t[1], None, spec).tanh()),
            )
        }),
        case("max/avg pool, nearest/bilinear upsampling", |r| {
            let (b, c, h, w) = (1 + below(r, 2), 1 + below(r, 2), 2 + below(r, 5), 2 + below(r, 5));
            let k = (1 + below(r, 2)).min(h).min(w);
            let stride = 1 + below(r, 2);
            let (f, oh, ow) = (1 + below(r, 3), 1 + below(r, 8), 1 + below(r, 8));
            // Distinct values so that max pooling has a unique argmax.
            let x = ArrayD::from_shape_vec(ndarray::IxDyn(&[b, c, h, w]), distinct(b * c * h * w, r)).expect("shape");
            (
                vec![x],
                Box::new(move |t| {
                    let x = &t[0];
                    x.max_pool2d(k, stride).square().sum_all()
                        + x.avg_pool2d(k, stride).square().sum_all()
                        + x.upsample_nearest2d(f).tanh().sum_all()
                        + x.upsample_bilinear2d(oh, ow).square().sum_all()
                }),
            )
        }),
        case("cross_entropy (labels, ignore, soft), distillation, mse", |r| {
            let (rows, classes) = (1 + below(r, 5), 2 + below(r, 4));
            let labels: Vec<usize> = (0..rows).map(|_| below(r, classes)).collect();
            let tau = uniform::<f64>(&[1], 0.5, 4.0, r)[[0]];
            let teacher = Tensor::new(normal(&[rows, classes], 0.0, 2.0, r));
            (
                vec![normal(&[rows, classes], 0.0, 2.0, r), normal(&[rows, classes], 0.0, 2.0, r)],
                Box::new(move |t| {
                    let ignore = labels[0];
                    // The teacher is a constant: distillation detaches it by design.
                    t[0].cross_entropy(&labels)
                        + t[0].cross_entropy_with_ignore(&labels, Some(ignore))
                        + t[0].cross_entropy_soft(&t[1].softmax(-1))
                        + t[0].distillation_loss(&teacher, tau)
                        + t[0].mse(&t[1])
                }),
            )
        }),
    ]
}
