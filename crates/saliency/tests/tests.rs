use std::sync::Arc;

use proptest::prelude::*;
use strata_saliency::synthetic::{ShapesConfig, generate};
use strata_saliency::*;
use tensor::Tensor;
use tensor::ndarray::{ArrayD, Axis, IxDyn};

/// logits = W vec(x) + b: every method has a closed form on it.
struct LinearClassifier {
    w: ArrayD<f32>,
    b: ArrayD<f32>,
    shape: [usize; 3],
}

impl LinearClassifier {
    fn new(classes: usize, shape: [usize; 3], seed: u64) -> Self {
        let d = shape.iter().product();
        let mut rng = tensor::seeded(seed);
        LinearClassifier {
            w: tensor::normal(&[classes, d], 0.0, 1.0, &mut rng),
            b: tensor::normal(&[classes], 0.0, 1.0, &mut rng),
            shape,
        }
    }
}

impl Classifier for LinearClassifier {
    fn logits(&self, images: &Tensor<f32>) -> Tensor<f32> {
        images.flatten_from(1).linear(&Tensor::new(self.w.clone()), Some(&Tensor::new(self.b.clone())))
    }
    fn num_classes(&self) -> usize {
        self.w.shape()[0]
    }
    fn input_shape(&self) -> [usize; 3] {
        self.shape
    }
}

fn images(n: usize, shape: [usize; 3], seed: u64) -> ArrayD<f32> {
    tensor::uniform(&[n, shape[0], shape[1], shape[2]], 0.0, 1.0, &mut tensor::seeded(seed))
}

fn weight_map(model: &LinearClassifier, class: usize) -> ArrayD<f32> {
    let [c, h, w] = model.shape;
    model.w.index_axis(Axis(0), class).to_owned().into_shape_with_order(IxDyn(&[c, h, w])).unwrap().sum_axis(Axis(0))
}

fn close(a: &ArrayD<f32>, b: &ArrayD<f32>, tol: f32) -> bool {
    a.shape() == b.shape() && a.iter().zip(b.iter()).all(|(x, y)| (x - y).abs() <= tol * (1.0 + y.abs()))
}

fn small_cnn() -> ConvNet {
    let net = ConvNet::new(
        ConvNetConfig {
            in_channels: 1,
            height: 8,
            width: 8,
            convs: vec![ConvLayer { out: 4, padding: 1, pool: true }, ConvLayer { out: 6, padding: 1, pool: false }],
            hidden: 16,
            classes: 3,
        },
        3,
    )
    .unwrap();
    net.freeze();
    net
}

#[test]
fn gradient_of_a_linear_model_is_its_weight() {
    let model = LinearClassifier::new(4, [2, 5, 6], 1);
    let x = images(3, [2, 5, 6], 2);
    let targets = [0, 3, 1];
    let maps = VanillaGradient { abs: false, max_batch: 2 }.attribute(&model, &x, &targets).unwrap();
    for (i, &t) in targets.iter().enumerate() {
        assert!(close(&maps.index_axis(Axis(0), i).to_owned(), &weight_map(&model, t), 1e-5));
    }
}

#[test]
fn integrated_gradients_equals_gradient_times_input_on_a_linear_model() {
    let model = LinearClassifier::new(3, [1, 6, 6], 4);
    let x = images(5, [1, 6, 6], 5);
    let targets = [0, 1, 2, 0, 1];
    let ig =
        IntegratedGradients { steps: 7, max_batch: 9, ..Default::default() }.attribute(&model, &x, &targets).unwrap();
    let gxi = GradientXInput::default().attribute(&model, &x, &targets).unwrap();
    assert!(close(&ig, &gxi, 1e-5));
}

#[test]
fn integrated_gradients_completeness_axiom_on_a_cnn() {
    let net = small_cnn();
    let x = images(4, [1, 8, 8], 6);
    let targets = [0, 1, 2, 1];
    let ig = IntegratedGradients { steps: 256, ..Default::default() };
    let attr = ig.attribute_input(&net, &x, &targets).unwrap();
    let logits = tensor::no_grad(|| net.logits(&Tensor::new(x.clone())));
    let base = tensor::no_grad(|| net.logits(&Tensor::zeros(x.shape())));
    for (i, &t) in targets.iter().enumerate() {
        let total: f32 = attr.index_axis(Axis(0), i).sum();
        let diff = logits.value()[[i, t]] - base.value()[[i, t]];
        // Midpoint rule on a piecewise-linear path: error well under 1% of the logit change at 256 steps.
        assert!((total - diff).abs() <= 0.01 * diff.abs() + 1e-3, "image {i}: sum {total} vs {diff}");
    }
}

#[test]
fn occlusion_of_a_linear_model_is_the_mean_patch_effect() {
    // With window 1 the drop from zeroing pixel p is w_p x_p: occlusion equals gradient x input.
    let model = LinearClassifier::new(3, [1, 5, 5], 7);
    let x = images(2, [1, 5, 5], 8);
    let occ =
        Occlusion { window: 1, stride: 1, max_batch: 7, ..Default::default() }.attribute(&model, &x, &[2, 0]).unwrap();
    let gxi = GradientXInput::default().attribute(&model, &x, &[2, 0]).unwrap();
    assert!(close(&occ, &gxi, 1e-4));
}

#[test]
fn grad_cam_needs_features_and_is_non_negative() {
    let model = LinearClassifier::new(3, [1, 5, 5], 7);
    let x = images(2, [1, 5, 5], 8);
    assert!(matches!(GradCam::default().attribute(&model, &x, &[0, 1]), Err(Error::InvalidArgument(_))));
    let net = small_cnn();
    let x = images(3, [1, 8, 8], 9);
    let cam = GradCam::default().attribute(&net, &x, &[0, 1, 2]).unwrap();
    assert_eq!(cam.shape(), &[3, 8, 8]);
    assert!(cam.iter().all(|&v| v >= 0.0));
}

#[test]
fn maps_do_not_depend_on_the_chunk_size_and_are_seeded() {
    let net = small_cnn();
    let x = images(5, [1, 8, 8], 10);
    let t = [0, 1, 2, 0, 1];
    let methods: Vec<(Arc<dyn SaliencyMethod>, Arc<dyn SaliencyMethod>)> = vec![
        (
            Arc::new(IntegratedGradients { steps: 8, max_batch: 8, ..Default::default() }),
            Arc::new(IntegratedGradients { steps: 8, max_batch: 1000, ..Default::default() }),
        ),
        (Arc::new(Occlusion { max_batch: 3, ..Default::default() }), Arc::new(Occlusion::default())),
        (
            Arc::new(MaskOptimisation { steps: 5, max_batch: 2, ..MaskOptimisation::p9(Replacement::zero()) }),
            Arc::new(MaskOptimisation { steps: 5, ..MaskOptimisation::p9(Replacement::zero()) }),
        ),
    ];
    for (a, b) in methods {
        let (ma, mb) = (a.attribute(&net, &x, &t).unwrap(), b.attribute(&net, &x, &t).unwrap());
        assert!(close(&ma, &mb, 1e-4), "{}", a.name());
    }
    let sg = SmoothGrad { samples: 4, ..SmoothGrad::new(Arc::new(VanillaGradient::default())) };
    assert_eq!(sg.attribute(&net, &x, &t).unwrap(), sg.attribute(&net, &x, &t).unwrap());
    let other = SmoothGrad { seed: 1, ..sg.clone() };
    assert_ne!(sg.attribute(&net, &x, &t).unwrap(), other.attribute(&net, &x, &t).unwrap());
}

#[test]
fn mask_optimisation_finds_the_evidence_of_a_linear_model() {
    // Class 1's logit rises only with the pixels of the left half; the mask should keep those and drop the rest.
    let (h, w) = (4, 4);
    let mut wts = ArrayD::<f32>::zeros(IxDyn(&[2, h * w]));
    for p in 0..h * w {
        if p % w < 2 {
            wts[[1, p]] = 3.0;
        }
    }
    let model = LinearClassifier { w: wts, b: ArrayD::zeros(IxDyn(&[2])), shape: [1, h, w] };
    let x = ArrayD::from_elem(IxDyn(&[1, 1, h, w]), 1.0f32);
    let mask = MaskOptimisation { steps: 200, l1: 1.0, tv: 0.0, cell: 1, ..MaskOptimisation::p9(Replacement::zero()) };
    let m = mask.attribute(&model, &x, &[1]).unwrap();
    let (mut evidence, mut background) = (f32::INFINITY, 0.0f32);
    for p in 0..h * w {
        let v = m[[0, p / w, p % w]];
        if p % w < 2 { evidence = evidence.min(v) } else { background = background.max(v) }
    }
    // L1 keeps only as much evidence as the loss needs, spread evenly over the (symmetric) evidence pixels.
    assert!(evidence > 0.1 && background < 0.02, "evidence >= {evidence}, background <= {background}");
}

#[test]
fn keep_top_k_keeps_exactly_the_top_pixels() {
    let x = ArrayD::from_shape_vec(IxDyn(&[1, 1, 2, 2]), vec![1.0f32, 2.0, 3.0, 4.0]).unwrap();
    let map = ArrayD::from_shape_vec(IxDyn(&[1, 2, 2]), vec![0.1f32, 0.9, 0.5, 0.2]).unwrap();
    let kept = keep_top_k(&x, &map, 0.5, Replacement::Constant(-1.0)).unwrap();
    assert_eq!(kept.iter().copied().collect::<Vec<_>>(), vec![-1.0, 2.0, 3.0, -1.0]);
    assert_eq!(keep_top_k(&x, &map, 0.0, Replacement::zero()).unwrap().sum(), 0.0);
    assert_eq!(keep_top_k(&x, &map, 1.0, Replacement::zero()).unwrap(), x);
    assert!(matches!(keep_top_k(&x, &map, 1.5, Replacement::zero()), Err(Error::InvalidArgument(_))));
    assert!(matches!(keep_top_k(&x, &map, -0.1, Replacement::zero()), Err(Error::InvalidArgument(_))));
    let wrong_shape = ArrayD::<f32>::zeros(IxDyn(&[1, 3, 2]));
    assert!(matches!(keep_top_k(&x, &wrong_shape, 0.5, Replacement::zero()), Err(Error::Shape(_))));
}

/// Class c's logit is 10 * (sum of the pixels in quadrant c): the evidence of each class is one known quadrant.
fn quadrant_model() -> LinearClassifier {
    let (h, w) = (4, 4);
    let mut wts = ArrayD::<f32>::zeros(IxDyn(&[4, h * w]));
    for p in 0..h * w {
        let q = (p / w / 2) * 2 + (p % w) / 2;
        wts[[q, p]] = 10.0;
    }
    LinearClassifier { w: wts, b: ArrayD::zeros(IxDyn(&[4])), shape: [1, h, w] }
}

fn quadrant_map(classes: &[usize]) -> ArrayD<f32> {
    let mut m = ArrayD::<f32>::zeros(IxDyn(&[classes.len(), 4, 4]));
    for (i, &c) in classes.iter().enumerate() {
        for p in 0..16 {
            if (p / 4 / 2) * 2 + (p % 4) / 2 == c {
                m[[i, p / 4, p % 4]] = 1.0;
            }
        }
    }
    m
}

#[test]
fn completeness_soundness_and_localisation_have_known_values_on_a_constructed_case() {
    let model = quadrant_model();
    // Image i is bright in quadrant labels[i] and nowhere else.
    let labels = vec![0, 1, 2, 3];
    let x = quadrant_map(&labels).insert_axis(Axis(1));
    // The exact map: the label's quadrant. Keeping it (k = 1/4) keeps the answer: completeness 1.
    let maps = quadrant_map(&labels);
    // Wrong-label maps that point at the wrong label's (empty) quadrant: keeping them shows nothing of y'.
    let wrong = vec![1, 2, 3, 0];
    let wrong_maps = quadrant_map(&wrong);
    let regions = maps.mapv(|v| v > 0.5);
    let input = MetricInput::new(&model, &x, &labels, &maps)
        .unwrap()
        .with_wrong(&wrong, &wrong_maps)
        .unwrap()
        .with_regions(&regions)
        .unwrap();
    let c = Completeness::new(vec![0.25, 0.5], Replacement::zero()).evaluate(&input).unwrap();
    assert_eq!(c.curve, vec![(0.25, 1.0), (0.5, 1.0)]);
    // Keeping the wrong quadrant alone gives all-zero logits (argmax ties to class 0 for image 3's y' = 0), so
    // only image 3 "succeeds": soundness 3/4 at k = 1/4.
    let s = Soundness::new(vec![0.25], Replacement::zero()).evaluate(&input).unwrap();
    assert_eq!(s.value, 0.75);
    assert_eq!(RelevanceRankAccuracy.evaluate(&input).unwrap().value, 1.0);
    assert_eq!(RelevanceMassAccuracy.evaluate(&input).unwrap().value, 1.0);
    assert_eq!(LabelSensitivity { k: 0.25 }.evaluate(&input).unwrap().value, 1.0);
    // Deletion of the evidence first drops the probability to chance at once; insertion restores it at once.
    let del = Deletion { steps: 4, replacement: Replacement::zero() }.evaluate(&input).unwrap();
    assert!((del.curve[1].1 - 0.25).abs() < 1e-6, "{:?}", del.curve);
    let ins = Insertion { steps: 4, replacement: Replacement::zero() }.evaluate(&input).unwrap();
    assert!(ins.curve[1].1 > 0.99 && (ins.curve[0].1 - 0.25).abs() < 1e-6, "{:?}", ins.curve);
    // Gini: a map with one active quadrant of four has sparseness 3/4.
    assert!((Sparseness.evaluate(&input).unwrap().value - 0.75).abs() < 1e-9);
    // Soundness without wrong-label maps, localisation without regions: errors.
    let bare = MetricInput::new(&model, &x, &labels, &maps).unwrap();
    assert!(Soundness::new(vec![0.25], Replacement::zero()).evaluate(&bare).is_err());
    assert!(RelevanceRankAccuracy.evaluate(&bare).is_err());
    assert!(Completeness::new(vec![0.5, 0.25], Replacement::zero()).evaluate(&bare).is_err());
}

#[test]
fn bad_inputs_are_errors() {
    let model = quadrant_model();
    let x = images(2, [1, 4, 4], 1);
    let maps = ArrayD::<f32>::zeros(IxDyn(&[2, 4, 4]));
    let mut nan = x.clone();
    nan[[1, 0, 2, 2]] = f32::NAN;
    assert!(matches!(VanillaGradient::default().attribute(&model, &nan, &[0, 1]), Err(Error::NonFinite(_))));
    assert!(matches!(VanillaGradient::default().attribute(&model, &x, &[0]), Err(Error::Shape(_))));
    assert!(matches!(VanillaGradient::default().attribute(&model, &x, &[0, 9]), Err(Error::InvalidArgument(_))));
    let wrong_size = images(2, [1, 5, 4], 1);
    assert!(matches!(GradientXInput::default().attribute(&model, &wrong_size, &[0, 1]), Err(Error::Shape(_))));
    assert!(matches!(MetricInput::new(&model, &x, &[0, 1], &maps.clone().insert_axis(Axis(1))), Err(Error::Shape(_))));
    let mut nan_maps = maps.clone();
    nan_maps[[0, 0, 0]] = f32::NAN;
    assert!(matches!(MetricInput::new(&model, &x, &[0, 1], &nan_maps), Err(Error::NonFinite(_))));
    let input = MetricInput::new(&model, &x, &[0, 1], &maps).unwrap();
    assert!(input.with_wrong(&[0, 2], &maps).is_err(), "a 'wrong' label equal to the true one");
    assert!(IntegratedGradients { steps: 0, ..Default::default() }.attribute(&model, &x, &[0, 1]).is_err());
    assert!(
        MaskOptimisation { cell: 0, ..MaskOptimisation::p9(Replacement::zero()) }
            .attribute(&model, &x, &[0, 1])
            .is_err()
    );
    assert!(Occlusion { window: 9, ..Default::default() }.attribute(&model, &x, &[0, 1]).is_err());
    assert!(ConvNet::new(ConvNetConfig { convs: vec![], ..ConvNetConfig::small(1, 8, 8, 3) }, 0).is_err());
    assert!(LabelledImages::new(images(2, [1, 4, 4], 1), vec![0]).is_err());
}

#[test]
fn shapes_regions_hold_the_ink_and_classes_balance() {
    let d = generate(&ShapesConfig::default(), 40, 3).unwrap();
    assert_eq!(d.data.images.shape(), &[40, 1, 28, 28]);
    for c in 0..4 {
        assert_eq!(d.data.labels.iter().filter(|&&l| l == c).count(), 10);
    }
    for i in 0..40 {
        let region = d.regions.index_axis(Axis(0), i);
        assert_eq!(region.iter().filter(|&&r| r).count(), 81);
        // The brightest pixels (the ink) lie inside the region.
        let img = d.data.images.index_axis(Axis(0), i).index_axis(Axis(0), 0).to_owned();
        let brightest = img.iter().enumerate().max_by(|a, b| a.1.total_cmp(b.1)).unwrap().0;
        assert!(region.iter().nth(brightest).copied().unwrap());
    }
    assert_eq!(
        generate(&ShapesConfig::default(), 8, 3).unwrap().data.images,
        generate(&ShapesConfig::default(), 8, 3).unwrap().data.images
    );
    assert!(generate(&ShapesConfig { shape_size: 40, ..Default::default() }, 4, 0).is_err());
}

#[test]
fn conv_net_trains_saves_and_loads() {
    let d = generate(&ShapesConfig { size: 12, shape_size: 5, ..Default::default() }, 256, 1).unwrap();
    let net = ConvNet::new(ConvNetConfig::small(1, 12, 12, 4), 0).unwrap();
    let mut losses = Vec::new();
    net.train(&d.data, &TrainConfig { epochs: 12, batch: 32, lr: 5e-3, seed: 0 }, |_, l| losses.push(l)).unwrap();
    let first: f32 = losses[..8].iter().sum::<f32>() / 8.0;
    let last: f32 = losses[losses.len() - 8..].iter().sum::<f32>() / 8.0;
    assert!(last < 0.7 * first, "loss {first} -> {last}");
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("net.safetensors");
    net.save(&path).unwrap();
    let loaded = ConvNet::load(ConvNetConfig::small(1, 12, 12, 4), &path).unwrap();
    assert_eq!(probabilities(&net, &d.data.images, 64), probabilities(&loaded, &d.data.images, 64));
    assert!(ConvNet::load(ConvNetConfig::small(1, 12, 12, 3), &path).is_err(), "config mismatch");
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(16))]
    /// IG completeness holds exactly (up to float error) on linear models for any step count and baseline.
    #[test]
    fn ig_completeness_on_linear_models(seed in 0u64..1000, steps in 1usize..12, base in -1.0f32..1.0) {
        let model = LinearClassifier::new(3, [2, 3, 3], seed);
        let x = images(3, [2, 3, 3], seed + 1);
        let ig = IntegratedGradients { steps, baseline: Replacement::Constant(base), max_batch: 5 };
        let attr = ig.attribute(&model, &x, &[0, 1, 2]).unwrap();
        let logits = tensor::no_grad(|| model.logits(&Tensor::new(x.clone())));
        let b = tensor::no_grad(|| model.logits(&Tensor::full(x.shape(), base)));
        for i in 0..3 {
            let total: f32 = attr.index_axis(Axis(0), i).sum();
            let diff = logits.value()[[i, i]] - b.value()[[i, i]];
            prop_assert!((total - diff).abs() <= 1e-3 * (1.0 + diff.abs()));
        }
    }

    /// Gini index: 0 for constant maps, (n-1)/n for one-hot maps, always in [0, 1).
    #[test]
    fn sparseness_bounds(n in 2usize..50, hot in 0usize..50, scale in 0.1f32..10.0) {
        let hot = hot % n;
        let flat = vec![scale; n];
        let mut one = vec![0.0; n];
        one[hot] = scale;
        let m = |v: Vec<f32>| ArrayD::from_shape_vec(IxDyn(&[1, 1, n]), v).unwrap();
        let model = LinearClassifier::new(2, [1, 1, n], 0);
        let x = ArrayD::<f32>::zeros(IxDyn(&[1, 1, 1, n]));
        let (flat, one) = (m(flat), m(one));
        let g_flat = Sparseness.evaluate(&MetricInput::new(&model, &x, &[0], &flat).unwrap()).unwrap().value;
        let g_one = Sparseness.evaluate(&MetricInput::new(&model, &x, &[0], &one).unwrap()).unwrap().value;
        prop_assert!(g_flat.abs() < 1e-9);
        prop_assert!((g_one - (n as f64 - 1.0) / n as f64).abs() < 1e-6);
    }
}

/// Three classes on a 1 x 4 x 4 image; class c's evidence is the sum of the pixels in its region (pixel 0 for
/// class 0, pixel 1 for class 1, none for class 2), times 8.
fn region_classifier() -> LinearClassifier {
    let mut w = ArrayD::<f32>::zeros(IxDyn(&[3, 16]));
    w[[0, 0]] = 8.0;
    w[[1, 1]] = 8.0;
    LinearClassifier { w, b: ArrayD::zeros(IxDyn(&[3])), shape: [1, 4, 4] }
}

/// A map ranking `first` highest and `last` lowest, the other pixels in index order.
fn map_ranking(first: usize, last: usize) -> ArrayD<f32> {
    let mut m = ArrayD::<f32>::from_shape_fn(IxDyn(&[1, 4, 4]), |ix| -((ix[1] * 4 + ix[2]) as f32));
    m[[0, first / 4, first % 4]] = 100.0;
    m[[0, last / 4, last % 4]] = -100.0;
    m
}

#[test]
fn intrinsic_scores_reward_kept_evidence_and_catch_manufactured_evidence() {
    use strata_saliency::intrinsic::{Aggregates, IntrinsicScores, completeness_ratio, soundness_ratio};
    assert_eq!(completeness_ratio(0.05, 0.5, 0.1), 0.2, "the floor applies to the AUC");
    assert_eq!(completeness_ratio(0.9, 0.5, 0.1), 1.0);
    assert_eq!(soundness_ratio(0.5, 0.01, 0.1), 0.2, "the floor applies to the clean probability");
    assert_eq!(soundness_ratio(0.0, 0.0, 0.1), 1.0);
    let model = region_classifier();
    // Strong evidence for class 0 and a little for class 1.
    let mut image = ArrayD::<f32>::zeros(IxDyn(&[1, 1, 4, 4]));
    image[[0, 0, 0, 0]] = 1.0;
    image[[0, 0, 0, 1]] = 0.4;
    // 16 levels: the first keeps exactly one pixel.
    let scorer = IntrinsicScores { levels: 16, ..IntrinsicScores::p9(Replacement::zero()) };
    // Label 0's map keeps exactly its evidence first; label 1's map keeps pixel 1 first and pixel 0 last (class
    // 1's weak evidence alone, which with class 0's evidence removed makes class 1 the answer at every level but
    // the last); label 2's map keeps pixel 0 first (honest: no evidence for class 2 anywhere).
    let maps = vec![map_ranking(0, 15), map_ranking(1, 0), map_ranking(0, 15)];
    let scores = scorer.score(&model, &image, &maps).unwrap();
    let s = &scores[0];
    assert_eq!((s.prediction, s.runner_up), (0, 1));
    assert!((s.completeness[0] - 1.0).abs() < 1e-9, "a map keeping exactly a's evidence is complete: {s:?}");
    assert!(s.soundness[1] < 0.5, "keeping only the wrong label's weak evidence manufactures it: {s:?}");
    assert!(s.soundness[2] > 0.99, "{s:?}");
    // The AUC is the plain mean over the even grid: label 1's masked probability is the same at every level
    // until pixel 0 comes back at the last, so its AUC is (15 p(pixel 1 alone) + p(clean)) / 16.
    let softmax = |e: [f32; 3]| {
        let z: f32 = e.iter().map(|v| v.exp()).sum();
        e.map(|v| (v.exp() / z) as f64)
    };
    let (alone, clean) = (softmax([0.0, 3.2, 0.0])[1], softmax([8.0, 3.2, 0.0])[1]);
    let expected = (15.0 * alone + clean) / 16.0;
    assert!((s.auc[1] - expected).abs() < 1e-5, "{} vs {expected}", s.auc[1]);
    let agg = Aggregates::all(&scores);
    assert_eq!(agg.images, 1);
    assert!((agg.worst_soundness - s.soundness[1]).abs() < 1e-12);
    assert!((agg.runner_up_soundness - s.soundness[1]).abs() < 1e-12);
    assert!((agg.mean_soundness - (s.soundness[1] + s.soundness[2]) / 2.0).abs() < 1e-12);
    assert!(Aggregates::of(&scores, |_| false).completeness.is_nan());
    // Wrong inputs are errors.
    assert!(scorer.score(&model, &image, &maps[..2]).is_err(), "one map per label");
    assert!(IntrinsicScores { levels: 0, ..scorer.clone() }.score(&model, &image, &maps).is_err());
    let mut nan = maps.clone();
    nan[0][[0, 0, 0]] = f32::NAN;
    assert!(scorer.score(&model, &image, &nan).is_err());
}

#[test]
fn maps_for_every_label_batch_the_labels_and_keep_each_labels_maps() {
    use strata_saliency::intrinsic::maps_for_every_label;
    let model = LinearClassifier::new(3, [1, 4, 4], 7);
    let x = images(2, [1, 4, 4], 8);
    let method = GradientXInput::default();
    let all = maps_for_every_label(&method, &model, &x).unwrap();
    assert_eq!(all.len(), 3);
    for (a, maps) in all.iter().enumerate() {
        let direct = method.attribute(&model, &x, &[a, a]).unwrap();
        assert!(close(maps, &direct, 1e-6), "label {a}");
    }
}

#[test]
fn the_simple_mask_finds_the_evidence_with_image_fills_and_both_data_terms() {
    let model = region_classifier();
    let mut image = ArrayD::<f32>::zeros(IxDyn(&[1, 1, 4, 4]));
    image[[0, 0, 0, 0]] = 1.0;
    let pool = Arc::new(images(8, [1, 4, 4], 3).mapv(|v| v * 0.1));
    for data_term in [DataTerm::LogProbability, DataTerm::BoundedCrossEntropy] {
        for scale in [1, 2] {
            let method = SimpleMask {
                steps: 150,
                lr: 0.1,
                l1: 0.05,
                tv: 0.0,
                scale,
                fill: MaskFill::Images { pool: pool.clone(), per_step: 3 },
                data_term,
                seed: 1,
                max_batch: 4,
            };
            let m = method.attribute(&model, &image, &[0]).unwrap();
            let top = m.iter().enumerate().fold((0, f32::MIN), |a, (i, &v)| if v > a.1 { (i, v) } else { a }).0;
            // With a 2-px cell the evidence pixel's whole cell rises together (pixels 0, 1, 4, 5).
            let cell: &[usize] = if scale == 1 { &[0] } else { &[0, 1, 4, 5] };
            assert!(cell.contains(&top), "{data_term:?} cell {scale}: top pixel {top}, mask {m:?}");
            assert!(m[[0, 3, 3]] < m[[0, 0, 0]]);
        }
    }
    let bad = SimpleMask { steps: 0, ..SimpleMask::p9(4, 4, MaskFill::Replacement(Replacement::zero()), 10) };
    assert!(bad.attribute(&model, &image, &[0]).is_err());
    let wrong_pool = SimpleMask::p9(4, 4, MaskFill::Images { pool: Arc::new(images(2, [1, 5, 5], 1)), per_step: 2 }, 5);
    assert!(wrong_pool.attribute(&model, &image, &[0]).is_err(), "fill images of another size");
}
