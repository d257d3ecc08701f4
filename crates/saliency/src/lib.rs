//! Saliency maps and their intrinsic evaluation (P9: "staying intrinsic, complete and sound").
//!
//! Methods implement [`SaliencyMethod`] (images, a [`Classifier`], target labels -> one map per image, `[B, H, W]`,
//! higher = more important); metrics implement [`SaliencyMetric`] (maps for the true labels, and for wrong labels
//! where soundness needs them -> a curve and a scalar). What Captum and Quantus users expect is here (vanilla
//! gradient, gradient x input, integrated gradients, SmoothGrad, occlusion, Grad-CAM; deletion/insertion, sparseness,
//! localisation), plus P9's own completeness and soundness ([`intrinsic`]: the primary metrics, after the authors'
//! code) and its simple masking method as the authors run it ([`SimpleMask`]).
//!
//! ```
//! use strata_saliency::intrinsic::{Aggregates, IntrinsicScores, maps_for_every_label};
//! use strata_saliency::tensor::ndarray::ArrayD;
//! use strata_saliency::{
//!     Completeness, ConvNet, ConvNetConfig, MetricInput, Replacement, SaliencyMethod, SaliencyMetric, VanillaGradient,
//! };
//! let images = ArrayD::from_shape_fn(vec![2, 1, 28, 28], |ix| ((ix[2] * 28 + ix[3]) % 17) as f32 / 17.0);
//! let labels = vec![3, 7];
//! let net = ConvNet::new(ConvNetConfig::small(1, 28, 28, 10), 0)?; // then `net.train(...)` or `ConvNet::load`
//! net.freeze();
//! let maps = VanillaGradient::default().attribute(&net, &images, &labels)?; // [2, 28, 28]
//! let input = MetricInput::new(&net, &images, &labels, &maps)?;
//! let completeness = Completeness::new(vec![0.05, 0.1, 0.2], Replacement::Constant(0.13)).evaluate(&input)?;
//! assert!(maps.shape() == [2, 28, 28] && completeness.value.is_finite());
//! // P9's metrics: a map for every label, scored against the net's own prediction.
//! let every = maps_for_every_label(&VanillaGradient::default(), &net, &images)?; // 10 x [2, 28, 28]
//! let scores = IntrinsicScores::p9(Replacement::Constant(0.13)).score(&net, &images, &every)?;
//! let p9 = Aggregates::all(&scores); // completeness at the prediction, mean/worst/runner-up soundness, ...
//! assert!((0.0..=1.0).contains(&p9.completeness) && (0.0..=1.0).contains(&p9.mean_soundness));
//! # Ok::<(), strata_saliency::Error>(())
//! ```
//!
//! - [`experiments`]: the `saliency/complete-sound` reproduction (measure -> rows -> claims -> figures).
//! - [`synthetic`]: a shapes task whose evidence is known pixel by pixel, for localisation metrics.
//! - Training: [`ConvNet::train`] with a [`TrainConfig`] (`TrainConfig::default()` is the reproduction's).
//!
//! The lower crates are re-exported ([`tensor`], [`data`], [`report`]) so that one dependency suffices.
//!
//! Maps are per pixel: methods that attribute each channel sum over channels (absolute values for gradient
//! magnitudes), because every metric here ranks pixels.

pub mod experiments;
pub mod intrinsic;
mod methods;
mod metrics;
mod model;
pub mod synthetic;

pub use methods::{
    DataTerm, GradCam, GradientXInput, IntegratedGradients, MaskFill, MaskOptimisation, Occlusion, SaliencyMethod,
    SimpleMask, SmoothGrad, VanillaGradient, input_gradient,
};
pub use metrics::{
    Completeness, Deletion, Insertion, LabelSensitivity, MetricInput, MetricResult, RelevanceMassAccuracy,
    RelevanceRankAccuracy, SaliencyMetric, Soundness, Sparseness, keep_top_k, random_wrong_labels,
};
pub use model::{Classifier, ConvLayer, ConvNet, ConvNetConfig, TrainConfig, accuracy, probabilities};

pub use {data, report, tensor};

use serde::{Deserialize, Serialize};
use tensor::ndarray::{ArrayD, Axis, IxDyn};

/// Errors: bad shapes, arguments or configs, non-finite inputs, and failures of the layers below.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    #[error("shape mismatch: {0}")]
    Shape(String),
    #[error("invalid argument: {0}")]
    InvalidArgument(String),
    #[error("non-finite values in {0}")]
    NonFinite(String),
    #[error("invalid config: {0}")]
    Config(String),
    #[error(transparent)]
    Tensor(#[from] tensor::Error),
    #[error(transparent)]
    Data(#[from] data::Error),
    #[error(transparent)]
    Report(#[from] report::Error),
}

pub type Result<T, E = Error> = std::result::Result<T, E>;

/// Images `[N, C, H, W]` with integer labels.
#[derive(Debug, Clone)]
pub struct LabelledImages {
    pub images: ArrayD<f32>,
    pub labels: Vec<usize>,
}

impl LabelledImages {
    pub fn new(images: ArrayD<f32>, labels: Vec<usize>) -> Result<Self> {
        if images.ndim() != 4 || images.shape()[0] != labels.len() {
            return Err(Error::Shape(format!("images {:?} for {} labels", images.shape(), labels.len())));
        }
        check_finite(&images, "images")?;
        Ok(LabelledImages { images, labels })
    }

    /// From an MNIST split (pixels scaled to [0, 1]).
    pub fn from_mnist(set: &data::mnist::ImageSet) -> Self {
        let (images, labels) = set.batch(&(0..set.len()).collect::<Vec<_>>());
        LabelledImages { images, labels }
    }

    pub fn len(&self) -> usize {
        self.labels.len()
    }

    pub fn is_empty(&self) -> bool {
        self.labels.is_empty()
    }

    pub fn batch(&self, indices: &[usize]) -> (ArrayD<f32>, Vec<usize>) {
        (self.images.select(Axis(0), indices), indices.iter().map(|&i| self.labels[i]).collect())
    }

    /// The first `n` examples.
    pub fn head(&self, n: usize) -> Self {
        let idx: Vec<usize> = (0..n.min(self.len())).collect();
        let (images, labels) = self.batch(&idx);
        LabelledImages { images, labels }
    }

    /// Mean pixel value (the "dataset mean" replacement).
    pub fn mean_pixel(&self) -> f32 {
        self.images.mean().unwrap_or(0.0)
    }

    pub(crate) fn check_for(&self, model: &dyn Classifier) -> Result<()> {
        check_images(model, &self.images)?;
        check_labels(model, &self.labels, self.len())
    }
}

/// What removed pixels are replaced with (P9: the choice changes rankings, so it is a parameter).
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Replacement {
    /// A constant, e.g. 0 or the dataset's mean pixel value.
    Constant(f32),
    /// The image itself under a Gaussian blur of this standard deviation (pixels).
    Blur(f32),
}

impl Replacement {
    pub fn zero() -> Self {
        Replacement::Constant(0.0)
    }

    /// The replacement image for each of `images` (`[B, C, H, W]`).
    pub fn fill(&self, images: &ArrayD<f32>) -> ArrayD<f32> {
        match *self {
            Replacement::Constant(v) => ArrayD::from_elem(images.raw_dim(), v),
            Replacement::Blur(sigma) => gaussian_blur(images, sigma),
        }
    }

    pub fn label(&self) -> String {
        match self {
            Replacement::Constant(v) => format!("constant {v:.3}"),
            Replacement::Blur(s) => format!("blur sigma {s}"),
        }
    }
}

/// Separable Gaussian blur of each channel, edges clamped.
pub fn gaussian_blur(images: &ArrayD<f32>, sigma: f32) -> ArrayD<f32> {
    if !(sigma > 0.0) {
        return images.clone();
    }
    let radius = (3.0 * sigma).ceil() as isize;
    let kernel: Vec<f32> = (-radius..=radius).map(|i| (-(i * i) as f32 / (2.0 * sigma * sigma)).exp()).collect();
    let total: f32 = kernel.iter().sum();
    let kernel: Vec<f32> = kernel.iter().map(|k| k / total).collect();
    let s = images.shape();
    let (h, w) = (s[2], s[3]);
    let mut out = images.as_standard_layout().into_owned();
    let mut tmp = out.clone();
    let src = out.as_slice_mut().expect("standard layout");
    let dst = tmp.as_slice_mut().expect("standard layout");
    for (p_src, p_dst) in src.chunks_mut(h * w).zip(dst.chunks_mut(h * w)) {
        blur_pass(p_src, p_dst, &kernel, (h, w), (w, 1)); // rows: h lines w apart, neighbours adjacent
        blur_pass(p_dst, p_src, &kernel, (w, 1), (h, w)); // columns: w lines 1 apart, neighbours w apart
    }
    out
}

/// Convolves the lines of a plane with `kernel`, clamping at the ends, from `src` into `dst`: `(lines, line_step)`
/// says how many lines there are and how far apart they start, `(len, stride)` their length and element spacing.
fn blur_pass(
    src: &[f32],
    dst: &mut [f32],
    kernel: &[f32],
    (lines, line_step): (usize, usize),
    (len, stride): (usize, usize),
) {
    let radius = (kernel.len() / 2) as isize;
    for line in 0..lines {
        let base = line * line_step;
        for i in 0..len as isize {
            let acc: f32 = kernel
                .iter()
                .enumerate()
                .map(|(k, &kv)| kv * src[base + (i + k as isize - radius).clamp(0, len as isize - 1) as usize * stride])
                .sum();
            dst[base + i as usize * stride] = acc;
        }
    }
}

pub(crate) fn check_finite(a: &ArrayD<f32>, what: &str) -> Result<()> {
    match a.iter().position(|v| !v.is_finite()) {
        Some(i) => Err(Error::NonFinite(format!("{what} (flat index {i})"))),
        None => Ok(()),
    }
}

pub(crate) fn check_images(model: &dyn Classifier, images: &ArrayD<f32>) -> Result<()> {
    let [c, h, w] = model.input_shape();
    if images.ndim() != 4 || images.shape()[1..] != [c, h, w] {
        return Err(Error::Shape(format!("images {:?}, the model takes [B, {c}, {h}, {w}]", images.shape())));
    }
    check_finite(images, "images")
}

pub(crate) fn check_labels(model: &dyn Classifier, labels: &[usize], batch: usize) -> Result<()> {
    if labels.len() != batch {
        return Err(Error::Shape(format!("{} labels for a batch of {batch}", labels.len())));
    }
    let classes = model.num_classes();
    match labels.iter().find(|&&l| l >= classes) {
        Some(l) => Err(Error::InvalidArgument(format!("label {l} for a model with {classes} classes"))),
        None => Ok(()),
    }
}

/// Zeros of shape `[B, H, W]` (a map per image).
pub(crate) fn map_zeros(images: &ArrayD<f32>) -> ArrayD<f32> {
    let s = images.shape();
    ArrayD::zeros(IxDyn(&[s[0], s[2], s[3]]))
}
