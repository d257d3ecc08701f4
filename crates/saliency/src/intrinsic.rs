//! P9's own completeness and soundness (the authors' `utils.completeness` / `utils.soundness` and their evaluation
//! loop), the primary metrics of this crate.
//!
//! For an image x, a label a and the map the method gives *for a*: keep the top fraction f of pixels by the map,
//! replace the rest, and read the softmax probability p_a of the masked image, for f on an even grid ending at 1
//! (`levels` points: 1/levels, 2/levels, ..., 1). AUC_a is the plain mean of those probabilities. With p_a(x) the
//! clean image's probability and a floor `epsilon`:
//!
//! - completeness(a) = min(max(epsilon, AUC_a) / p_a(x), 1): the map's evidence for a keeps a's probability;
//! - soundness(a) = min(max(epsilon, p_a(x)) / AUC_a, 1): the map does not manufacture more evidence for a than
//!   the image holds.
//!
//! Both are intrinsic (only the net and the data). The reference label is the net's prediction; reported per
//! method: completeness at the prediction, mean soundness over the other labels, the worst soundness over them,
//! soundness at the runner-up label, and the worst completeness over the other labels ([`Aggregates`]).

use serde::{Deserialize, Serialize};
use tensor::ndarray::{Array2, ArrayD, Axis, IxDyn};

use crate::{Classifier, Error, Replacement, Result, check_finite, check_images, probabilities};

/// `min(max(epsilon, auc) / clean, 1)` (1 when the clean probability is 0).
pub fn completeness_ratio(auc: f64, clean: f64, epsilon: f64) -> f64 {
    if clean <= 0.0 { 1.0 } else { (auc.max(epsilon) / clean).min(1.0) }
}

/// `min(max(epsilon, clean) / auc, 1)` (1 when the masked images never give the label any probability).
pub fn soundness_ratio(auc: f64, clean: f64, epsilon: f64) -> f64 {
    if auc <= 0.0 { 1.0 } else { (clean.max(epsilon) / auc).min(1.0) }
}

/// How the scores are computed: the keep-fraction grid, the floor, and what removed pixels become.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct IntrinsicScores {
    /// Points of the even keep-fraction grid (the authors use 28: 1/28 ... 1).
    pub levels: usize,
    /// The floor of both ratios (the authors use 0.1).
    pub epsilon: f64,
    pub replacement: Replacement,
    /// Largest forward batch.
    pub max_batch: usize,
}

impl IntrinsicScores {
    /// The authors' settings: 28 levels, epsilon 0.1.
    pub fn p9(replacement: Replacement) -> Self {
        IntrinsicScores { levels: 28, epsilon: 0.1, replacement, max_batch: 512 }
    }

    /// The keep fractions `1/levels, ..., 1`.
    pub fn keep_fractions(&self) -> Vec<f64> {
        (1..=self.levels).map(|i| i as f64 / self.levels as f64).collect()
    }

    /// Scores every label of every image: `maps[a]` is the `[B, H, W]` maps the method gave for label `a`.
    pub fn score(
        &self,
        model: &dyn Classifier,
        images: &ArrayD<f32>,
        maps: &[ArrayD<f32>],
    ) -> Result<Vec<ImageScores>> {
        check_images(model, images)?;
        let classes = model.num_classes();
        if self.levels == 0 || !(self.epsilon >= 0.0 && self.epsilon < 1.0) || self.max_batch == 0 {
            return Err(Error::Config(format!("intrinsic scores: {self:?} (levels >= 1, epsilon in [0, 1))")));
        }
        if maps.len() != classes {
            return Err(Error::InvalidArgument(format!("{} label maps for a {classes}-class model", maps.len())));
        }
        let s = images.shape().to_vec();
        let (b, c, hw) = (s[0], s[1], s[2] * s[3]);
        for (a, m) in maps.iter().enumerate() {
            if m.shape() != [b, s[2], s[3]] {
                return Err(Error::Shape(format!("maps for label {a}: {:?} for images {s:?}", m.shape())));
            }
            check_finite(m, "saliency maps")?;
        }
        let clean = probabilities(model, images, self.max_batch);
        let fill = self.replacement.fill(images);
        let (src, fill) = (images.as_standard_layout(), fill.as_standard_layout());
        let (src, fill) = (src.as_slice().expect("standard"), fill.as_slice().expect("standard"));
        let counts: Vec<usize> = self.keep_fractions().iter().map(|f| (f * hw as f64).round() as usize).collect();
        let mut auc = Array2::<f64>::zeros((b, classes));
        // Every (image, level) composite of a label, in chunks of at most max_batch images.
        let pairs: Vec<(usize, usize)> = (0..b).flat_map(|i| (0..counts.len()).map(move |l| (i, l))).collect();
        for (a, m) in maps.iter().enumerate() {
            let orders = crate::metrics::rankings(m);
            for chunk in pairs.chunks(self.max_batch) {
                let mut batch = ArrayD::<f32>::zeros(IxDyn(&[chunk.len(), c, s[2], s[3]]));
                let dst = batch.as_slice_mut().expect("fresh array");
                for (k, &(i, l)) in chunk.iter().enumerate() {
                    let (img, out) = (i * c * hw, k * c * hw);
                    dst[out..out + c * hw].copy_from_slice(&fill[img..img + c * hw]);
                    for &p in &orders[i][..counts[l]] {
                        for ch in 0..c {
                            dst[out + ch * hw + p] = src[img + ch * hw + p];
                        }
                    }
                }
                let p = probabilities(model, &batch, self.max_batch);
                for (k, &(i, _)) in chunk.iter().enumerate() {
                    auc[[i, a]] += p[[k, a]] as f64 / counts.len() as f64;
                }
            }
        }
        Ok((0..b)
            .map(|i| {
                let clean: Vec<f64> = clean.index_axis(Axis(0), i).iter().map(|&v| v as f64).collect();
                let auc: Vec<f64> = auc.row(i).to_vec();
                let mut order: Vec<usize> = (0..classes).collect();
                order.sort_by(|&x, &y| clean[y].total_cmp(&clean[x]).then(x.cmp(&y)));
                ImageScores {
                    prediction: order[0],
                    runner_up: order[1],
                    completeness: (0..classes).map(|a| completeness_ratio(auc[a], clean[a], self.epsilon)).collect(),
                    soundness: (0..classes).map(|a| soundness_ratio(auc[a], clean[a], self.epsilon)).collect(),
                    clean,
                    auc,
                }
            })
            .collect())
    }
}

/// One image's scores for every label.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ImageScores {
    /// The net's top label on the clean image (the reference label) and its second.
    pub prediction: usize,
    pub runner_up: usize,
    /// Per label: clean probability, AUC of the masked probabilities, completeness, soundness.
    pub clean: Vec<f64>,
    pub auc: Vec<f64>,
    pub completeness: Vec<f64>,
    pub soundness: Vec<f64>,
}

/// The five numbers P9 reports, averaged over images.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Aggregates {
    pub images: usize,
    /// Completeness at the prediction.
    pub completeness: f64,
    /// Mean soundness over the labels other than the prediction.
    pub mean_soundness: f64,
    /// Worst soundness over the other labels.
    pub worst_soundness: f64,
    /// Soundness at the runner-up label.
    pub runner_up_soundness: f64,
    /// Worst completeness over the other labels.
    pub worst_wrong_completeness: f64,
}

impl Aggregates {
    /// Averages over the images `keep` selects (NaN fields when it selects none).
    pub fn of(scores: &[ImageScores], keep: impl Fn(&ImageScores) -> bool) -> Aggregates {
        let chosen: Vec<&ImageScores> = scores.iter().filter(|s| keep(s)).collect();
        let mean = |f: &dyn Fn(&ImageScores) -> f64| {
            if chosen.is_empty() { f64::NAN } else { chosen.iter().map(|s| f(s)).sum::<f64>() / chosen.len() as f64 }
        };
        let others = |s: &ImageScores, v: &[f64]| -> Vec<f64> {
            v.iter().enumerate().filter(|(a, _)| *a != s.prediction).map(|(_, &x)| x).collect()
        };
        let min = |v: Vec<f64>| v.into_iter().fold(f64::INFINITY, f64::min);
        Aggregates {
            images: chosen.len(),
            completeness: mean(&|s| s.completeness[s.prediction]),
            mean_soundness: mean(&|s| {
                let o = others(s, &s.soundness);
                o.iter().sum::<f64>() / o.len().max(1) as f64
            }),
            worst_soundness: mean(&|s| min(others(s, &s.soundness))),
            runner_up_soundness: mean(&|s| s.soundness[s.runner_up]),
            worst_wrong_completeness: mean(&|s| min(others(s, &s.completeness))),
        }
    }

    /// Over every image.
    pub fn all(scores: &[ImageScores]) -> Aggregates {
        Aggregates::of(scores, |_| true)
    }
}

/// The maps a method gives for every label of every image, as one batched call (images repeated once per label):
/// `result[a]` is `[B, H, W]`, the maps for label `a`.
pub fn maps_for_every_label(
    method: &dyn crate::SaliencyMethod,
    model: &dyn Classifier,
    images: &ArrayD<f32>,
) -> Result<Vec<ArrayD<f32>>> {
    check_images(model, images)?;
    let (b, classes) = (images.shape()[0], model.num_classes());
    let index: Vec<usize> = (0..classes).flat_map(|_| 0..b).collect();
    let repeated = images.select(Axis(0), &index);
    let targets: Vec<usize> = (0..classes).flat_map(|a| std::iter::repeat_n(a, b)).collect();
    let maps = method.attribute(model, &repeated, &targets)?;
    Ok((0..classes).map(|a| maps.slice_axis(Axis(0), (a * b..(a + 1) * b).into()).to_owned()).collect())
}
