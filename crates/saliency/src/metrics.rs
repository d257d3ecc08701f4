//! Metrics behind one trait: P9's completeness and soundness, and the Quantus-style metrics users expect
//! (deletion/insertion, sparseness, localisation against ground truth).

use serde::{Deserialize, Serialize};
use tensor::ndarray::{ArrayD, Axis};

use crate::{Classifier, Error, Replacement, Result, check_finite, check_images, check_labels, probabilities};

/// What a metric sees: the model, the images and labels, the maps for those labels, and optionally maps for wrong
/// labels (soundness) and ground-truth evidence regions (localisation).
pub struct MetricInput<'a> {
    pub model: &'a dyn Classifier,
    pub images: &'a ArrayD<f32>,
    pub labels: &'a [usize],
    pub maps: &'a ArrayD<f32>,
    pub wrong: Option<(&'a [usize], &'a ArrayD<f32>)>,
    pub regions: Option<&'a ArrayD<bool>>,
    /// Largest forward batch.
    pub max_batch: usize,
}

impl<'a> MetricInput<'a> {
    pub fn new(
        model: &'a dyn Classifier,
        images: &'a ArrayD<f32>,
        labels: &'a [usize],
        maps: &'a ArrayD<f32>,
    ) -> Result<Self> {
        check_images(model, images)?;
        check_labels(model, labels, images.shape()[0])?;
        check_maps(images, maps)?;
        Ok(MetricInput { model, images, labels, maps, wrong: None, regions: None, max_batch: 256 })
    }

    /// Adds maps computed by the same method for (wrong) labels `labels`.
    pub fn with_wrong(mut self, labels: &'a [usize], maps: &'a ArrayD<f32>) -> Result<Self> {
        check_labels(self.model, labels, self.images.shape()[0])?;
        check_maps(self.images, maps)?;
        if let Some(i) = labels.iter().zip(self.labels).position(|(w, y)| w == y) {
            return Err(Error::InvalidArgument(format!("wrong label of image {i} equals its true label")));
        }
        self.wrong = Some((labels, maps));
        Ok(self)
    }

    /// Adds ground-truth evidence regions `[B, H, W]`.
    pub fn with_regions(mut self, regions: &'a ArrayD<bool>) -> Result<Self> {
        let s = self.images.shape();
        if regions.shape() != [s[0], s[2], s[3]] {
            return Err(Error::Shape(format!("regions {:?} for images {:?}", regions.shape(), s)));
        }
        self.regions = Some(regions);
        Ok(self)
    }
}

fn check_maps(images: &ArrayD<f32>, maps: &ArrayD<f32>) -> Result<()> {
    let s = images.shape();
    if maps.shape() != [s[0], s[2], s[3]] {
        return Err(Error::Shape(format!("maps {:?} for images {:?} (want [B, H, W])", maps.shape(), s)));
    }
    check_finite(maps, "saliency maps")
}

/// A metric's value, and its curve where it has one (`(x, y)` points).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct MetricResult {
    pub metric: String,
    pub value: f64,
    pub higher_is_better: bool,
    pub curve: Vec<(f64, f64)>,
}

/// A saliency metric.
pub trait SaliencyMetric {
    fn name(&self) -> String;
    fn evaluate(&self, input: &MetricInput<'_>) -> Result<MetricResult>;
}

/// For each image, pixel indices ordered from most to least salient (ties by index, so the order is deterministic).
pub(crate) fn rankings(maps: &ArrayD<f32>) -> Vec<Vec<usize>> {
    maps.outer_iter()
        .map(|m| {
            let flat: Vec<f32> = m.iter().copied().collect();
            let mut order: Vec<usize> = (0..flat.len()).collect();
            order.sort_by(|&a, &b| flat[b].total_cmp(&flat[a]).then(a.cmp(&b)));
            order
        })
        .collect()
}

/// Each image's pixels whose rank (0 = most salient) passes `keep`, the others taken from `fill`.
fn compose(
    images: &ArrayD<f32>,
    fill: &ArrayD<f32>,
    order: &[Vec<usize>],
    keep: impl Fn(usize) -> bool,
) -> ArrayD<f32> {
    let s = images.shape();
    let (c, hw) = (s[1], s[2] * s[3]);
    let mut out = fill.as_standard_layout().into_owned();
    let src = images.as_standard_layout();
    let src = src.as_slice().expect("standard layout");
    let dst = out.as_slice_mut().expect("standard layout");
    for (b, ord) in order.iter().enumerate() {
        for (rank, &p) in ord.iter().enumerate() {
            if keep(rank) {
                for ch in 0..c {
                    let i = (b * c + ch) * hw + p;
                    dst[i] = src[i];
                }
            }
        }
    }
    out
}

fn check_fraction(k: f64) -> Result<()> {
    if !(0.0..=1.0).contains(&k) {
        return Err(Error::InvalidArgument(format!("fraction of pixels k = {k} is outside [0, 1]")));
    }
    Ok(())
}

/// Keeps the top `k` fraction of pixels of each image by its map and replaces the rest with `replacement`.
pub fn keep_top_k(images: &ArrayD<f32>, maps: &ArrayD<f32>, k: f64, replacement: Replacement) -> Result<ArrayD<f32>> {
    check_fraction(k)?;
    check_maps(images, maps)?;
    let s = images.shape();
    let count = (k * (s[2] * s[3]) as f64).round() as usize;
    Ok(compose(images, &replacement.fill(images), &rankings(maps), |rank| rank < count))
}

/// A random wrong label for each image, uniform over the other classes.
pub fn random_wrong_labels(labels: &[usize], classes: usize, seed: u64) -> Vec<usize> {
    let u = tensor::uniform::<f64>(&[labels.len()], 0.0, 1.0, &mut tensor::seeded(seed));
    labels
        .iter()
        .zip(u.iter())
        .map(|(&y, &u)| (y + 1 + ((u * (classes - 1) as f64) as usize).min(classes - 2)) % classes)
        .collect()
}

/// The area under a curve over its x range, divided by that range (a mean height; the single y for one point).
fn normalised_auc(curve: &[(f64, f64)]) -> f64 {
    if curve.len() == 1 {
        return curve[0].1;
    }
    let area: f64 = curve.windows(2).map(|w| (w[1].0 - w[0].0) * (w[0].1 + w[1].1) / 2.0).sum();
    area / (curve.last().expect("non-empty").0 - curve[0].0)
}

fn check_ks(ks: &[f64]) -> Result<()> {
    if ks.is_empty() || ks.windows(2).any(|w| w[1] <= w[0]) {
        return Err(Error::InvalidArgument(format!("k values {ks:?} must be non-empty and increasing")));
    }
    ks.iter().try_for_each(|&k| check_fraction(k))
}

/// Fraction of masked images classified as `targets`, and the mean probability of the target.
fn hit_rate(model: &dyn Classifier, masked: &ArrayD<f32>, targets: &[usize], max_batch: usize) -> (f64, f64) {
    let p = probabilities(model, masked, max_batch);
    let predicted = tensor::argmax_rows(&p);
    let hits = predicted.iter().zip(targets).filter(|(a, b)| a == b).count();
    let prob: f64 = targets.iter().enumerate().map(|(i, &t)| p[[i, t]] as f64).sum();
    (hits as f64 / targets.len().max(1) as f64, prob / targets.len().max(1) as f64)
}

fn kept_curve(
    input: &MetricInput<'_>,
    maps: &ArrayD<f32>,
    targets: &[usize],
    ks: &[f64],
    replacement: Replacement,
) -> Result<Vec<(f64, f64)>> {
    check_ks(ks)?;
    let fill = replacement.fill(input.images);
    let order = rankings(maps);
    let s = input.images.shape();
    Ok(ks
        .iter()
        .map(|&k| {
            let count = (k * (s[2] * s[3]) as f64).round() as usize;
            let masked = compose(input.images, &fill, &order, |rank| rank < count);
            (k, hit_rate(input.model, &masked, targets, input.max_batch).0)
        })
        .collect())
}

/// P9's completeness: keep the top-k pixels of the true-label map, replace the rest; the fraction of images still
/// classified as their label, over k. The value is the curve's normalised area.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Completeness {
    pub ks: Vec<f64>,
    pub replacement: Replacement,
}

impl Completeness {
    pub fn new(ks: Vec<f64>, replacement: Replacement) -> Self {
        Completeness { ks, replacement }
    }
}

impl SaliencyMetric for Completeness {
    fn name(&self) -> String {
        "completeness".into()
    }
    fn evaluate(&self, input: &MetricInput<'_>) -> Result<MetricResult> {
        let curve = kept_curve(input, input.maps, input.labels, &self.ks, self.replacement)?;
        Ok(MetricResult { metric: self.name(), value: normalised_auc(&curve), higher_is_better: true, curve })
    }
}

/// P9's soundness: the method is asked for a map for a wrong label y'; keeping its top-k pixels must not make the net
/// answer y'. The curve is 1 - (fraction of images classified as y'), over k; the value its normalised area.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Soundness {
    pub ks: Vec<f64>,
    pub replacement: Replacement,
}

impl Soundness {
    pub fn new(ks: Vec<f64>, replacement: Replacement) -> Self {
        Soundness { ks, replacement }
    }
}

impl SaliencyMetric for Soundness {
    fn name(&self) -> String {
        "soundness".into()
    }
    fn evaluate(&self, input: &MetricInput<'_>) -> Result<MetricResult> {
        let (wrong, maps) =
            input.wrong.ok_or_else(|| Error::InvalidArgument("soundness needs maps for wrong labels".into()))?;
        let success = kept_curve(input, maps, wrong, &self.ks, self.replacement)?;
        let curve: Vec<(f64, f64)> = success.iter().map(|&(k, s)| (k, 1.0 - s)).collect();
        Ok(MetricResult { metric: self.name(), value: normalised_auc(&curve), higher_is_better: true, curve })
    }
}

fn probability_curve(
    input: &MetricInput<'_>,
    steps: usize,
    replacement: Replacement,
    insert: bool,
) -> Result<Vec<(f64, f64)>> {
    if steps == 0 {
        return Err(Error::InvalidArgument("deletion/insertion needs at least 1 step".into()));
    }
    let fill = replacement.fill(input.images);
    let order = rankings(input.maps);
    let s = input.images.shape();
    let hw = s[2] * s[3];
    Ok((0..=steps)
        .map(|i| {
            let f = i as f64 / steps as f64;
            let count = (f * hw as f64).round() as usize;
            let masked = if insert {
                compose(input.images, &fill, &order, |rank| rank < count)
            } else {
                compose(input.images, &fill, &order, |rank| rank >= count)
            };
            (f, hit_rate(input.model, &masked, input.labels, input.max_batch).1)
        })
        .collect())
}

/// Deletion (pixel flipping; Petsiuk et al.): remove the most salient pixels first; the mean target probability over
/// the fraction removed. Lower area is better.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Deletion {
    pub steps: usize,
    pub replacement: Replacement,
}

impl SaliencyMetric for Deletion {
    fn name(&self) -> String {
        "deletion".into()
    }
    fn evaluate(&self, input: &MetricInput<'_>) -> Result<MetricResult> {
        let curve = probability_curve(input, self.steps, self.replacement, false)?;
        Ok(MetricResult { metric: self.name(), value: normalised_auc(&curve), higher_is_better: false, curve })
    }
}

/// Insertion: start from the replacement and insert the most salient pixels first. Higher area is better.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Insertion {
    pub steps: usize,
    pub replacement: Replacement,
}

impl SaliencyMetric for Insertion {
    fn name(&self) -> String {
        "insertion".into()
    }
    fn evaluate(&self, input: &MetricInput<'_>) -> Result<MetricResult> {
        let curve = probability_curve(input, self.steps, self.replacement, true)?;
        Ok(MetricResult { metric: self.name(), value: normalised_auc(&curve), higher_is_better: true, curve })
    }
}

/// Gini index of |map| (Chalasani et al., Quantus' `Sparseness`): 0 for a flat map, near 1 for a single pixel.
#[derive(Debug, Clone, Copy, Default)]
pub struct Sparseness;

/// Gini index of the absolute values of `v`.
pub(crate) fn gini(v: &[f32]) -> f64 {
    let mut a: Vec<f64> = v.iter().map(|x| x.abs() as f64).collect();
    a.sort_by(f64::total_cmp);
    let n = a.len() as f64;
    let total: f64 = a.iter().sum();
    if total <= 0.0 {
        return 0.0;
    }
    a.iter().enumerate().map(|(i, &x)| (2.0 * (i as f64 + 1.0) - n - 1.0) * x).sum::<f64>() / (n * total)
}

impl SaliencyMetric for Sparseness {
    fn name(&self) -> String {
        "sparseness".into()
    }
    fn evaluate(&self, input: &MetricInput<'_>) -> Result<MetricResult> {
        let values: Vec<f64> = input.maps.outer_iter().map(|m| gini(&m.iter().copied().collect::<Vec<_>>())).collect();
        Ok(MetricResult {
            metric: self.name(),
            value: values.iter().sum::<f64>() / values.len().max(1) as f64,
            higher_is_better: true,
            curve: Vec::new(),
        })
    }
}

fn regions<'a>(input: &MetricInput<'a>) -> Result<&'a ArrayD<bool>> {
    input.regions.ok_or_else(|| Error::InvalidArgument("localisation needs ground-truth regions".into()))
}

/// Relevance rank accuracy (Arras et al.): with K the size of the ground-truth region, the fraction of the K most
/// salient pixels that fall inside it.
#[derive(Debug, Clone, Copy, Default)]
pub struct RelevanceRankAccuracy;

impl SaliencyMetric for RelevanceRankAccuracy {
    fn name(&self) -> String {
        "relevance rank accuracy".into()
    }
    fn evaluate(&self, input: &MetricInput<'_>) -> Result<MetricResult> {
        let gt = regions(input)?;
        let order = rankings(input.maps);
        let mut total = 0.0;
        for (b, ord) in order.iter().enumerate() {
            let region: Vec<bool> = gt.index_axis(Axis(0), b).iter().copied().collect();
            let k = region.iter().filter(|&&r| r).count();
            if k == 0 {
                return Err(Error::InvalidArgument(format!("ground-truth region of image {b} is empty")));
            }
            total += ord[..k].iter().filter(|&&p| region[p]).count() as f64 / k as f64;
        }
        Ok(MetricResult {
            metric: self.name(),
            value: total / order.len().max(1) as f64,
            higher_is_better: true,
            curve: Vec::new(),
        })
    }
}

/// Relevance mass accuracy (Arras et al.): the share of the positive saliency mass inside the ground-truth region.
#[derive(Debug, Clone, Copy, Default)]
pub struct RelevanceMassAccuracy;

impl SaliencyMetric for RelevanceMassAccuracy {
    fn name(&self) -> String {
        "relevance mass accuracy".into()
    }
    fn evaluate(&self, input: &MetricInput<'_>) -> Result<MetricResult> {
        let gt = regions(input)?;
        let n = input.maps.shape()[0];
        let mut total = 0.0;
        for b in 0..n {
            let (mut inside, mut all) = (0.0f64, 0.0f64);
            for (&v, &r) in input.maps.index_axis(Axis(0), b).iter().zip(gt.index_axis(Axis(0), b).iter()) {
                let v = v.max(0.0) as f64;
                all += v;
                if r {
                    inside += v;
                }
            }
            total += if all > 0.0 { inside / all } else { 0.0 };
        }
        Ok(MetricResult {
            metric: self.name(),
            value: total / n.max(1) as f64,
            higher_is_better: true,
            curve: Vec::new(),
        })
    }
}

/// How much a method's map depends on the label asked about: 1 - the mean Jaccard overlap of the top-`k` pixel sets
/// of the true-label and wrong-label maps. A label-blind method (0) cannot justify a wrong label, so it scores as
/// sound while explaining nothing label-specific; read soundness beside this.
#[derive(Debug, Clone, Copy)]
pub struct LabelSensitivity {
    pub k: f64,
}

impl SaliencyMetric for LabelSensitivity {
    fn name(&self) -> String {
        "label sensitivity".into()
    }
    fn evaluate(&self, input: &MetricInput<'_>) -> Result<MetricResult> {
        check_fraction(self.k)?;
        let (_, wrong_maps) = input
            .wrong
            .ok_or_else(|| Error::InvalidArgument("label sensitivity needs maps for wrong labels".into()))?;
        let (a, b) = (rankings(input.maps), rankings(wrong_maps));
        let s = input.images.shape();
        let count = ((self.k * (s[2] * s[3]) as f64).round() as usize).max(1);
        let mut total = 0.0;
        for (ra, rb) in a.iter().zip(&b) {
            let set: std::collections::HashSet<usize> = ra[..count].iter().copied().collect();
            let inter = rb[..count].iter().filter(|p| set.contains(p)).count();
            total += 1.0 - inter as f64 / (2 * count - inter) as f64;
        }
        Ok(MetricResult {
            metric: self.name(),
            value: total / a.len().max(1) as f64,
            higher_is_better: true,
            curve: Vec::new(),
        })
    }
}
