//! Saliency methods behind one trait. Every method works on chunks of at most `max_batch` images (or image
//! variants) at a time, so memory stays bounded for any batch; the maps do not depend on the chunk size.

use std::sync::Arc;

use tensor::ndarray::{ArrayD, Axis, IxDyn, Slice, s};
use tensor::optim::{Adam, AdamConfig, Optimizer};
use tensor::{Params, Tensor, no_grad};

use crate::{Classifier, Error, Replacement, Result, check_finite, check_images, check_labels, map_zeros};

/// A saliency method: for each image and its target label, a map `[H, W]` (higher = more evidence for the target).
pub trait SaliencyMethod: Send + Sync {
    /// A short name for reports and figures.
    fn name(&self) -> String;
    /// Maps `[B, H, W]` for `images` `[B, C, H, W]` and one target label per image.
    fn attribute(&self, model: &dyn Classifier, images: &ArrayD<f32>, targets: &[usize]) -> Result<ArrayD<f32>>;
}

fn validate(model: &dyn Classifier, images: &ArrayD<f32>, targets: &[usize]) -> Result<()> {
    check_images(model, images)?;
    check_labels(model, targets, images.shape()[0])
}

fn rows(a: &ArrayD<f32>, start: usize, len: usize) -> ArrayD<f32> {
    a.slice_axis(Axis(0), Slice::from(start..start + len)).to_owned()
}

/// Gradient of each image's target logit with respect to the image, `[B, C, H, W]` (one backward pass for the
/// batch: the images do not interact, so the gradient of the sum is each image's own gradient).
pub fn input_gradient(model: &dyn Classifier, images: &ArrayD<f32>, targets: &[usize]) -> ArrayD<f32> {
    let x = Tensor::leaf(images.clone());
    let logits = model.logits(&x);
    let picked = (&logits * &Tensor::<f32>::one_hot(targets, model.num_classes())).sum_all();
    let grads = picked.backward();
    grads.get(&x).cloned().unwrap_or_else(|| ArrayD::zeros(images.raw_dim()))
}

/// Runs `per_chunk` over chunks of `max_batch` images and stacks the maps.
fn chunked(
    images: &ArrayD<f32>,
    targets: &[usize],
    max_batch: usize,
    mut per_chunk: impl FnMut(&ArrayD<f32>, &[usize]) -> Result<ArrayD<f32>>,
) -> Result<ArrayD<f32>> {
    let n = images.shape()[0];
    let mut maps = map_zeros(images);
    let step = max_batch.max(1);
    for start in (0..n).step_by(step) {
        let len = step.min(n - start);
        let m = per_chunk(&rows(images, start, len), &targets[start..start + len])?;
        maps.slice_axis_mut(Axis(0), Slice::from(start..start + len)).assign(&m);
    }
    check_finite(&maps, "saliency maps")?;
    Ok(maps)
}

/// Sums `[B, C, H, W]` over channels (of absolute values when `abs`).
fn channel_sum(a: &ArrayD<f32>, abs: bool) -> ArrayD<f32> {
    if abs { a.mapv(f32::abs).sum_axis(Axis(1)) } else { a.sum_axis(Axis(1)) }
}

/// Vanilla gradient (Simonyan et al.): |d logit_target / d x|, as Captum's `Saliency` with `abs=True`.
#[derive(Debug, Clone)]
pub struct VanillaGradient {
    pub abs: bool,
    pub max_batch: usize,
}

impl Default for VanillaGradient {
    fn default() -> Self {
        VanillaGradient { abs: true, max_batch: 128 }
    }
}

impl SaliencyMethod for VanillaGradient {
    fn name(&self) -> String {
        "gradient".into()
    }
    fn attribute(&self, model: &dyn Classifier, images: &ArrayD<f32>, targets: &[usize]) -> Result<ArrayD<f32>> {
        validate(model, images, targets)?;
        chunked(images, targets, self.max_batch, |x, t| Ok(channel_sum(&input_gradient(model, x, t), self.abs)))
    }
}

/// Gradient x input (signed).
#[derive(Debug, Clone)]
pub struct GradientXInput {
    pub max_batch: usize,
}

impl Default for GradientXInput {
    fn default() -> Self {
        GradientXInput { max_batch: 128 }
    }
}

impl SaliencyMethod for GradientXInput {
    fn name(&self) -> String {
        "grad x input".into()
    }
    fn attribute(&self, model: &dyn Classifier, images: &ArrayD<f32>, targets: &[usize]) -> Result<ArrayD<f32>> {
        validate(model, images, targets)?;
        chunked(images, targets, self.max_batch, |x, t| Ok(channel_sum(&(input_gradient(model, x, t) * x), false)))
    }
}

/// Integrated gradients (Sundararajan et al.): (x - b) times the mean gradient along the straight path from the
/// baseline b to x, by the midpoint rule with `steps` points. Completeness: the attributions sum to
/// logit(x) - logit(b) up to the quadrature error.
#[derive(Debug, Clone)]
pub struct IntegratedGradients {
    pub steps: usize,
    pub baseline: Replacement,
    /// Largest number of path points evaluated at once.
    pub max_batch: usize,
}

impl Default for IntegratedGradients {
    fn default() -> Self {
        IntegratedGradients { steps: 32, baseline: Replacement::zero(), max_batch: 512 }
    }
}

impl IntegratedGradients {
    /// Per-channel attributions `[B, C, H, W]`.
    pub fn attribute_input(
        &self,
        model: &dyn Classifier,
        images: &ArrayD<f32>,
        targets: &[usize],
    ) -> Result<ArrayD<f32>> {
        validate(model, images, targets)?;
        if self.steps == 0 {
            return Err(Error::InvalidArgument("integrated gradients needs at least 1 step".into()));
        }
        let n = images.shape()[0];
        let baseline = self.baseline.fill(images);
        let mut out = ArrayD::zeros(images.raw_dim());
        let per_chunk = (self.max_batch / self.steps).max(1);
        for start in (0..n).step_by(per_chunk) {
            let len = per_chunk.min(n - start);
            let x = rows(images, start, len);
            let b = rows(&baseline, start, len);
            let diff = &x - &b;
            // Path points: image-major, step-minor.
            let mut shape = images.shape().to_vec();
            shape[0] = len * self.steps;
            let mut path = ArrayD::zeros(IxDyn(&shape));
            let mut path_targets = Vec::with_capacity(len * self.steps);
            for i in 0..len {
                for k in 0..self.steps {
                    let alpha = (k as f32 + 0.5) / self.steps as f32;
                    let point = &b.index_axis(Axis(0), i) + &(&diff.index_axis(Axis(0), i) * alpha);
                    path.index_axis_mut(Axis(0), i * self.steps + k).assign(&point);
                    path_targets.push(targets[start + i]);
                }
            }
            let g = input_gradient(model, &path, &path_targets);
            let mut shape_grouped = vec![len, self.steps];
            shape_grouped.extend_from_slice(&images.shape()[1..]);
            let mean_grad = g.into_shape_with_order(IxDyn(&shape_grouped)).expect("grouped").mean_axis(Axis(1));
            let attr = mean_grad.expect("steps >= 1") * &diff;
            out.slice_axis_mut(Axis(0), Slice::from(start..start + len)).assign(&attr);
        }
        Ok(out)
    }
}

impl SaliencyMethod for IntegratedGradients {
    fn name(&self) -> String {
        format!("integrated gradients ({})", self.steps)
    }
    fn attribute(&self, model: &dyn Classifier, images: &ArrayD<f32>, targets: &[usize]) -> Result<ArrayD<f32>> {
        let maps = channel_sum(&self.attribute_input(model, images, targets)?, false);
        check_finite(&maps, "saliency maps")?;
        Ok(maps)
    }
}

/// SmoothGrad (Smilkov et al.): the mean of another method's maps over `samples` noisy copies of each image, noise
/// N(0, (sigma * (max - min))^2) with max - min the image's value range. Seeded: the same call gives the same maps.
#[derive(Clone)]
pub struct SmoothGrad {
    pub inner: Arc<dyn SaliencyMethod>,
    pub samples: usize,
    pub sigma: f32,
    pub seed: u64,
}

impl std::fmt::Debug for SmoothGrad {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "SmoothGrad({}, {} samples, sigma {})", self.inner.name(), self.samples, self.sigma)
    }
}

impl SmoothGrad {
    pub fn new(inner: Arc<dyn SaliencyMethod>) -> Self {
        SmoothGrad { inner, samples: 16, sigma: 0.15, seed: 0 }
    }
}

impl SaliencyMethod for SmoothGrad {
    fn name(&self) -> String {
        format!("smoothgrad({})", self.inner.name())
    }
    fn attribute(&self, model: &dyn Classifier, images: &ArrayD<f32>, targets: &[usize]) -> Result<ArrayD<f32>> {
        validate(model, images, targets)?;
        if self.samples == 0 || !(self.sigma >= 0.0) {
            return Err(Error::InvalidArgument(format!("SmoothGrad samples {} sigma {}", self.samples, self.sigma)));
        }
        let n = images.shape()[0];
        let ranges: Vec<f32> = (0..n)
            .map(|i| {
                let img = images.index_axis(Axis(0), i);
                let (lo, hi) = img.iter().fold((f32::INFINITY, f32::NEG_INFINITY), |(a, b), &v| (a.min(v), b.max(v)));
                (hi - lo).max(1e-6)
            })
            .collect();
        let mut total = map_zeros(images);
        for s in 0..self.samples {
            let mut rng = tensor::derived(self.seed, s as u64);
            let mut noisy = tensor::normal::<f32>(images.shape(), 0.0, self.sigma as f64, &mut rng);
            for (i, mut img) in noisy.axis_iter_mut(Axis(0)).enumerate() {
                img *= ranges[i];
            }
            noisy += images;
            total += &self.inner.attribute(model, &noisy, targets)?;
        }
        Ok(total / self.samples as f32)
    }
}

/// Occlusion (Zeiler and Fergus): slide a `window` x `window` patch of the replacement over the image with `stride`;
/// a pixel's attribution is the mean drop of the target logit over the patches covering it.
#[derive(Debug, Clone)]
pub struct Occlusion {
    pub window: usize,
    pub stride: usize,
    pub replacement: Replacement,
    /// Largest number of occluded variants evaluated at once.
    pub max_batch: usize,
}

impl Default for Occlusion {
    fn default() -> Self {
        Occlusion { window: 4, stride: 2, replacement: Replacement::zero(), max_batch: 512 }
    }
}

fn window_starts(size: usize, window: usize, stride: usize) -> Vec<usize> {
    let last = size.saturating_sub(window);
    let mut v: Vec<usize> = (0..=last).step_by(stride.max(1)).collect();
    if v.last() != Some(&last) {
        v.push(last); // the final patch touches the edge, so every pixel is covered
    }
    v
}

impl SaliencyMethod for Occlusion {
    fn name(&self) -> String {
        format!("occlusion ({}/{})", self.window, self.stride)
    }
    fn attribute(&self, model: &dyn Classifier, images: &ArrayD<f32>, targets: &[usize]) -> Result<ArrayD<f32>> {
        validate(model, images, targets)?;
        let [_, h, w] = model.input_shape();
        if self.window == 0 || self.window > h.min(w) || self.stride == 0 {
            return Err(Error::InvalidArgument(format!("occlusion window {} stride {}", self.window, self.stride)));
        }
        let fill = self.replacement.fill(images);
        let patches: Vec<(usize, usize)> = window_starts(h, self.window, self.stride)
            .into_iter()
            .flat_map(|y| window_starts(w, self.window, self.stride).into_iter().map(move |x| (y, x)))
            .collect();
        let mut coverage = ArrayD::<f32>::zeros(IxDyn(&[h, w]));
        for &(y, x) in &patches {
            coverage.slice_mut(s![y..y + self.window, x..x + self.window]).mapv_inplace(|c| c + 1.0);
        }
        let target_logit = |batch: ArrayD<f32>, t: &[usize]| -> Vec<f32> {
            let logits = no_grad(|| model.logits(&Tensor::new(batch)));
            t.iter().enumerate().map(|(i, &c)| logits.value()[[i, c]]).collect()
        };
        let n = images.shape()[0];
        let mut maps = map_zeros(images);
        let per_chunk = (self.max_batch / (patches.len() + 1)).max(1);
        for start in (0..n).step_by(per_chunk) {
            let len = per_chunk.min(n - start);
            let mut shape = images.shape().to_vec();
            shape[0] = len * (patches.len() + 1);
            let mut variants = ArrayD::zeros(IxDyn(&shape));
            let mut var_targets = Vec::with_capacity(shape[0]);
            for i in 0..len {
                let img = images.index_axis(Axis(0), start + i);
                let base = i * (patches.len() + 1);
                variants.index_axis_mut(Axis(0), base).assign(&img);
                var_targets.push(targets[start + i]);
                for (p, &(y, x)) in patches.iter().enumerate() {
                    let mut v = variants.index_axis_mut(Axis(0), base + 1 + p);
                    v.assign(&img);
                    v.slice_mut(s![.., y..y + self.window, x..x + self.window]).assign(
                        &fill.index_axis(Axis(0), start + i).slice(s![.., y..y + self.window, x..x + self.window]),
                    );
                    var_targets.push(targets[start + i]);
                }
            }
            let scores = target_logit(variants, &var_targets);
            for i in 0..len {
                let base = i * (patches.len() + 1);
                let mut m = maps.index_axis_mut(Axis(0), start + i);
                for (p, &(y, x)) in patches.iter().enumerate() {
                    let drop = scores[base] - scores[base + 1 + p];
                    m.slice_mut(s![y..y + self.window, x..x + self.window]).mapv_inplace(|v| v + drop);
                }
                m /= &coverage;
            }
        }
        check_finite(&maps, "saliency maps")?;
        Ok(maps)
    }
}

/// Grad-CAM (Selvaraju et al.): ReLU of the last conv layer's feature maps weighted by their spatially averaged
/// target-logit gradients, bilinearly upsampled to the image. Needs [`Classifier::features`].
#[derive(Debug, Clone)]
pub struct GradCam {
    pub max_batch: usize,
}

impl Default for GradCam {
    fn default() -> Self {
        GradCam { max_batch: 128 }
    }
}

impl SaliencyMethod for GradCam {
    fn name(&self) -> String {
        "grad-cam".into()
    }
    fn attribute(&self, model: &dyn Classifier, images: &ArrayD<f32>, targets: &[usize]) -> Result<ArrayD<f32>> {
        validate(model, images, targets)?;
        let [_, h, w] = model.input_shape();
        chunked(images, targets, self.max_batch, |x, t| {
            let features = no_grad(|| model.features(&Tensor::new(x.clone())))
                .ok_or_else(|| Error::InvalidArgument("Grad-CAM needs a model with conv features".into()))?;
            let a = Tensor::leaf(features.value().clone());
            let logits = model.head(&a).ok_or_else(|| Error::InvalidArgument("model has no head".into()))?;
            let picked = (&logits * &Tensor::<f32>::one_hot(t, model.num_classes())).sum_all();
            let grads = picked.backward();
            let da = grads.get(&a).cloned().unwrap_or_else(|| ArrayD::zeros(a.value().raw_dim()));
            let weights = da.mean_axis(Axis(3)).and_then(|m| m.mean_axis(Axis(2))).expect("non-empty feature maps");
            let fs = a.value().shape().to_vec();
            let mut cam = ArrayD::<f32>::zeros(IxDyn(&[fs[0], 1, fs[2], fs[3]]));
            for b in 0..fs[0] {
                for k in 0..fs[1] {
                    let wk = weights[[b, k]];
                    let fk = a.value().slice(s![b, k, .., ..]);
                    cam.slice_mut(s![b, 0, .., ..]).zip_mut_with(&fk, |c, &f| *c += wk * f);
                }
            }
            cam.mapv_inplace(|v| v.max(0.0));
            let up = no_grad(|| Tensor::new(cam).upsample_bilinear2d(h, w));
            Ok(up.value().index_axis(Axis(1), 0).to_owned())
        })
    }
}

/// P9's simple method: per image, optimise a mask m = sigmoid(upsample(g)) over a low-resolution grid g to minimise
/// -log p_target(m * x + (1 - m) * r) + l1 * mean(m) + tv * TV(m), r the replacement. `cell` is the grid cell size in
/// pixels (1 = a pixel-level mask, no upsampling); `tv` = 0 turns total-variation regularisation off. Adam, `steps`
/// iterations from g = 0; the map is the final mask.
#[derive(Debug, Clone)]
pub struct MaskOptimisation {
    pub steps: usize,
    pub lr: f64,
    pub l1: f32,
    pub tv: f32,
    pub cell: usize,
    pub replacement: Replacement,
    pub max_batch: usize,
}

impl MaskOptimisation {
    /// The method as P9 describes it: a grid of 4-pixel cells, TV on, a strong sparsity weight (on MNIST, l1 = 10
    /// keeps completeness and raises soundness well above l1 = 1; `examples/tune_mask.rs` sweeps these).
    pub fn p9(replacement: Replacement) -> Self {
        MaskOptimisation { steps: 100, lr: 0.1, l1: 10.0, tv: 1.0, cell: 4, replacement, max_batch: 128 }
    }

    /// The ablation without TV or upsampling: a free pixel-level mask.
    pub fn pixel(replacement: Replacement) -> Self {
        MaskOptimisation { tv: 0.0, cell: 1, ..Self::p9(replacement) }
    }

    fn check(&self) -> Result<()> {
        if self.steps == 0 || self.cell == 0 || !(self.lr > 0.0) || !(self.l1 >= 0.0) || !(self.tv >= 0.0) {
            return Err(Error::InvalidArgument(format!("mask optimisation config {self:?}")));
        }
        Ok(())
    }

    fn mask(&self, grid: &Tensor<f32>, h: usize, w: usize) -> Tensor<f32> {
        let g = if self.cell > 1 { grid.upsample_bilinear2d(h, w) } else { grid.clone() };
        g.sigmoid()
    }
}

/// Anisotropic total variation of masks `[B, 1, H, W]`: per image, the mean absolute difference of vertical and of
/// horizontal neighbours, summed over the batch.
fn total_variation(m: &Tensor<f32>) -> Tensor<f32> {
    let s = m.shape().to_vec();
    let (b, h, w) = (s[0], s[2], s[3]);
    let mut tv = Tensor::scalar(0.0);
    if h > 1 {
        let dv = (m.narrow(2, 1, h - 1) - m.narrow(2, 0, h - 1)).abs();
        tv = tv + dv.mean_all().mul_scalar(b as f32);
    }
    if w > 1 {
        let dh = (m.narrow(3, 1, w - 1) - m.narrow(3, 0, w - 1)).abs();
        tv = tv + dh.mean_all().mul_scalar(b as f32);
    }
    tv
}

impl SaliencyMethod for MaskOptimisation {
    fn name(&self) -> String {
        format!("mask (cell {}, tv {})", self.cell, self.tv)
    }
    fn attribute(&self, model: &dyn Classifier, images: &ArrayD<f32>, targets: &[usize]) -> Result<ArrayD<f32>> {
        validate(model, images, targets)?;
        self.check()?;
        let [_, h, w] = model.input_shape();
        let (gh, gw) = (h.div_ceil(self.cell), w.div_ceil(self.cell));
        chunked(images, targets, self.max_batch, |x, t| {
            let b = x.shape()[0];
            let fill = self.replacement.fill(x);
            let delta = Tensor::new(x - &fill);
            let fill = Tensor::new(fill);
            let params = Params::new();
            let grid = params.insert("grid", ArrayD::zeros(IxDyn(&[b, 1, gh, gw])))?;
            let mut opt = Adam::new(AdamConfig::adam(self.lr));
            for step in 0..self.steps {
                let m = self.mask(&grid.tensor(), h, w);
                // m * x + (1 - m) * r = r + m * (x - r); the mask broadcasts over channels.
                let masked = &fill + &(&m * &delta);
                let ce = model.logits(&masked).cross_entropy(t).mul_scalar(b as f32);
                let loss = ce + m.mean_all().mul_scalar(self.l1 * b as f32) + total_variation(&m).mul_scalar(self.tv);
                tensor::check_loss(step as u64, loss.item() as f64)?;
                let grads = loss.backward();
                opt.step(&params, &grads);
            }
            let m = no_grad(|| self.mask(&grid.tensor(), h, w));
            Ok(m.value().index_axis(Axis(1), 0).to_owned())
        })
    }
}

/// What the masked-out part of the image holds while a [`SimpleMask`] is optimised.
#[derive(Debug, Clone)]
pub enum MaskFill {
    /// A fixed replacement (the dataset mean, zero, a blur).
    Replacement(Replacement),
    /// At every step, `per_step` images drawn at random from `pool` (`[N, C, H, W]`, e.g. training images) for each
    /// image; the class probabilities of the composites are averaged (P9's authors: about 10 per step).
    Images { pool: Arc<ArrayD<f32>>, per_step: usize },
}

/// The data term of the mask objective, on the fill-averaged probabilities `p` of the target `t`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum DataTerm {
    /// `-log p_t`.
    LogProbability,
    /// Cross-entropy with the probabilities taken as logits, `-p_t + log sum_c exp(p_c)`: bounded, as in the
    /// authors' code (`nn.CrossEntropyLoss` applied to averaged probabilities), and the default of
    /// [`SimpleMask::p9`]. Its gradient fades as `p_t` nears 0, so a mask for a label the image holds no evidence
    /// for shrinks under the l1 term instead of manufacturing evidence: on MNIST this roughly doubles the mean
    /// soundness over `LogProbability` (see docs/reproductions.md).
    BoundedCrossEntropy,
}

/// P9's simple masking method as its authors run it (`certificate_methods.learn_masks_for_batch_Kcert`): per image
/// and target, mask = upsample_bilinear(sigmoid(w)) with `w` on a grid `scale` times coarser than the image,
/// minimise `data(p_t) + l1 * sum(mask) + tv * sum of squared neighbour differences of the mask` with Adam, the
/// masked-out region filled per [`MaskFill`]. Weights are in the authors' sum form (per image, summed over
/// pixels), so they scale with the image size.
#[derive(Debug, Clone)]
pub struct SimpleMask {
    pub steps: usize,
    pub lr: f64,
    pub l1: f32,
    pub tv: f32,
    /// Grid cell in pixels (1: a free pixel-level mask).
    pub scale: usize,
    pub fill: MaskFill,
    pub data_term: DataTerm,
    /// Seed of the fill draws.
    pub seed: u64,
    pub max_batch: usize,
}

impl SimpleMask {
    /// The authors' ImageNet settings (224 px, `reg_l1 = 2e-5`, `reg_tv = 0.01`, Adam lr 0.05, cell 4) moved to
    /// images of `h x w`: the l1 sum grows with the pixel count, so its weight is scaled by 224^2 / (h w); the TV
    /// sum of a sharp-edged mask grows with the side, so its weight is scaled by 224 / sqrt(h w). On MNIST
    /// (28 px) that is l1 = 1.28e-3 and tv = 0.08; a cell of 2 px is the closest analogue of 4 px on 224.
    pub fn p9(h: usize, w: usize, fill: MaskFill, steps: usize) -> Self {
        let pixels = (h * w) as f32;
        SimpleMask {
            steps,
            lr: 0.05,
            l1: 2e-5 * 224.0 * 224.0 / pixels,
            tv: 0.01 * 224.0 / pixels.sqrt(),
            scale: 2,
            fill,
            data_term: DataTerm::BoundedCrossEntropy,
            seed: 0,
            max_batch: 64,
        }
    }

    fn check(&self) -> Result<()> {
        let fill_ok = match &self.fill {
            MaskFill::Replacement(_) => true,
            MaskFill::Images { pool, per_step } => *per_step > 0 && pool.ndim() == 4 && pool.shape()[0] > 0,
        };
        if self.steps == 0 || self.scale == 0 || !(self.lr > 0.0) || !(self.l1 >= 0.0) || !(self.tv >= 0.0) || !fill_ok
        {
            return Err(Error::InvalidArgument(format!("simple mask config {self:?}")));
        }
        Ok(())
    }

    fn mask(&self, grid: &Tensor<f32>, h: usize, w: usize) -> Tensor<f32> {
        let m = grid.sigmoid();
        if self.scale > 1 { m.upsample_bilinear2d(h, w) } else { m }
    }
}

/// Sum over the batch of squared differences of vertical and horizontal neighbours of masks `[B, 1, H, W]`.
fn squared_total_variation(m: &Tensor<f32>) -> Tensor<f32> {
    let (h, w) = (m.shape()[2], m.shape()[3]);
    let mut tv = Tensor::scalar(0.0);
    if h > 1 {
        tv = tv + (m.narrow(2, 1, h - 1) - m.narrow(2, 0, h - 1)).square().sum_all();
    }
    if w > 1 {
        tv = tv + (m.narrow(3, 1, w - 1) - m.narrow(3, 0, w - 1)).square().sum_all();
    }
    tv
}

impl SaliencyMethod for SimpleMask {
    fn name(&self) -> String {
        format!("simple mask (cell {}, tv {})", self.scale, self.tv)
    }

    fn attribute(&self, model: &dyn Classifier, images: &ArrayD<f32>, targets: &[usize]) -> Result<ArrayD<f32>> {
        validate(model, images, targets)?;
        self.check()?;
        if let MaskFill::Images { pool, .. } = &self.fill {
            if pool.shape()[1..] != images.shape()[1..] {
                return Err(Error::Shape(format!("fill pool {:?} for images {:?}", pool.shape(), images.shape())));
            }
        }
        let [_, h, w] = model.input_shape();
        let (gh, gw) = (h.div_ceil(self.scale), w.div_ceil(self.scale));
        let classes = model.num_classes();
        let mut chunk_index = 0u64;
        chunked(images, targets, self.max_batch, |x, t| {
            let b = x.shape()[0];
            let mut rng = tensor::derived(self.seed, chunk_index);
            chunk_index += 1;
            let xt = Tensor::new(x.clone());
            let params = Params::new();
            let grid = params.insert("grid", ArrayD::zeros(IxDyn(&[b, 1, gh, gw])))?;
            let mut opt = Adam::new(AdamConfig::adam(self.lr));
            for step in 0..self.steps {
                let m = self.mask(&grid.tensor(), h, w);
                // m * x + (1 - m) * n = n + m * (x - n) for each fill n; probabilities averaged over the fills.
                let fills: Vec<ArrayD<f32>> = match &self.fill {
                    MaskFill::Replacement(r) => vec![r.fill(x)],
                    MaskFill::Images { pool, per_step } => (0..*per_step)
                        .map(|_| {
                            let idx: Vec<usize> = (0..b)
                                .map(|_| {
                                    let u = tensor::uniform::<f64>(&[1], 0.0, 1.0, &mut rng)[[0]];
                                    ((u * pool.shape()[0] as f64) as usize).min(pool.shape()[0] - 1)
                                })
                                .collect();
                            pool.select(Axis(0), &idx)
                        })
                        .collect(),
                };
                let composites: Vec<Tensor<f32>> = fills
                    .iter()
                    .map(|n| {
                        let n = Tensor::new(n.clone());
                        &n + &(&m * &(&xt - &n))
                    })
                    .collect();
                let refs: Vec<&Tensor<f32>> = composites.iter().collect();
                let k = refs.len();
                let p = model.logits(&Tensor::concat(&refs, 0)).softmax(-1).reshape(&[k, b, classes]).mean(&[0], false);
                let data = match self.data_term {
                    DataTerm::LogProbability => p.add_scalar(1e-12).ln().cross_entropy(t),
                    DataTerm::BoundedCrossEntropy => p.cross_entropy(t),
                };
                let loss = data.mul_scalar(b as f32)
                    + m.sum_all().mul_scalar(self.l1)
                    + squared_total_variation(&m).mul_scalar(self.tv);
                tensor::check_loss(step as u64, loss.item() as f64)?;
                let grads = loss.backward();
                opt.step(&params, &grads);
            }
            let m = no_grad(|| self.mask(&grid.tensor(), h, w));
            Ok(m.value().index_axis(Axis(1), 0).to_owned())
        })
    }
}
