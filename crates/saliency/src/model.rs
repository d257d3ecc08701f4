//! The classifiers saliency methods explain: a trait any image classifier implements, and a configurable conv net
//! with training, evaluation and checkpoints.

use std::collections::HashMap;
use std::path::Path;

use serde::{Deserialize, Serialize};
use tensor::ndarray::{ArrayD, Axis, IxDyn};
use tensor::nn::{Conv2d, Linear, Module};
use tensor::optim::{Adam, AdamConfig, Optimizer};
use tensor::{Conv2dSpec, Params, Tensor, argmax_rows, no_grad};

use crate::{Error, LabelledImages, Result};

/// An image classifier: `[B, C, H, W]` images in, `[B, classes]` logits out. Grad-CAM also needs the split at the
/// last convolutional feature maps; nets without one return `None` from [`Classifier::features`].
pub trait Classifier: Send + Sync {
    fn logits(&self, images: &Tensor<f32>) -> Tensor<f32>;
    fn num_classes(&self) -> usize;
    /// `[C, H, W]` of one input image.
    fn input_shape(&self) -> [usize; 3];
    /// The last conv layer's (post-activation) feature maps `[B, K, h, w]`.
    fn features(&self, _images: &Tensor<f32>) -> Option<Tensor<f32>> {
        None
    }
    /// The rest of the net from [`Classifier::features`] to the logits.
    fn head(&self, _features: &Tensor<f32>) -> Option<Tensor<f32>> {
        None
    }
}

/// One conv layer: 3x3 kernel, `out` channels, zero padding, ReLU, then an optional 2x2 max-pool.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ConvLayer {
    pub out: usize,
    pub padding: usize,
    pub pool: bool,
}

/// A conv net: conv layers, flatten, one hidden dense layer with ReLU, the class logits.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ConvNetConfig {
    pub in_channels: usize,
    pub height: usize,
    pub width: usize,
    pub convs: Vec<ConvLayer>,
    pub hidden: usize,
    pub classes: usize,
}

impl ConvNetConfig {
    /// A small, fast net: conv(16, same)-pool-conv(32, same)-pool-dense(128)-dense(classes).
    pub fn small(in_channels: usize, height: usize, width: usize, classes: usize) -> Self {
        ConvNetConfig {
            in_channels,
            height,
            width,
            convs: vec![ConvLayer { out: 16, padding: 1, pool: true }, ConvLayer { out: 32, padding: 1, pool: true }],
            hidden: 128,
            classes,
        }
    }

    /// The classic Keras MNIST net of the benchmark anchor (W3): conv(32, valid)-conv(64, valid)-pool-dense(128)-dense(10).
    pub fn keras_mnist() -> Self {
        ConvNetConfig {
            in_channels: 1,
            height: 28,
            width: 28,
            convs: vec![ConvLayer { out: 32, padding: 0, pool: false }, ConvLayer { out: 64, padding: 0, pool: true }],
            hidden: 128,
            classes: 10,
        }
    }

    fn validate(&self) -> Result<()> {
        let (mut c, mut h, mut w) = (self.in_channels, self.height, self.width);
        if c == 0 || h == 0 || w == 0 || self.classes < 2 || self.hidden == 0 || self.convs.is_empty() {
            return Err(Error::Config(format!("degenerate conv net config {self:?}")));
        }
        for l in &self.convs {
            if h + 2 * l.padding < 3 || w + 2 * l.padding < 3 || l.out == 0 {
                return Err(Error::Config(format!("conv layer {l:?} does not fit a {c}x{h}x{w} input")));
            }
            (c, h, w) = (l.out, h + 2 * l.padding - 2, w + 2 * l.padding - 2);
            if l.pool {
                (h, w) = (h / 2, w / 2);
            }
            if h == 0 || w == 0 {
                return Err(Error::Config(format!("conv stack shrinks the input to nothing: {self:?}")));
            }
        }
        Ok(())
    }

    fn flat_features(&self) -> usize {
        let (mut h, mut w) = (self.height, self.width);
        for l in &self.convs {
            (h, w) = (h + 2 * l.padding - 2, w + 2 * l.padding - 2);
            if l.pool {
                (h, w) = (h / 2, w / 2);
            }
        }
        self.convs.last().map_or(0, |l| l.out) * h * w
    }
}

/// A [`ConvNetConfig`] built on a [`Params`] store (parameter names `conv{i}.weight`, `fc1.*`, `fc2.*`).
pub struct ConvNet {
    pub config: ConvNetConfig,
    pub params: Params<f32>,
    convs: Vec<Conv2d<f32>>,
    fc1: Linear<f32>,
    fc2: Linear<f32>,
}

impl std::fmt::Debug for ConvNet {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ConvNet").field("config", &self.config).finish_non_exhaustive()
    }
}

impl ConvNet {
    pub fn new(config: ConvNetConfig, seed: u64) -> Result<Self> {
        config.validate()?;
        let params = Params::new();
        let root = params.root();
        let mut rng = tensor::seeded(seed);
        let mut c = config.in_channels;
        let mut convs = Vec::new();
        for (i, l) in config.convs.iter().enumerate() {
            let spec = Conv2dSpec { stride: 1, padding: l.padding };
            convs.push(Conv2d::new(&root.sub(format!("conv{i}")), c, l.out, 3, spec, true, &mut rng));
            c = l.out;
        }
        let fc1 = Linear::new(&root.sub("fc1"), config.flat_features(), config.hidden, true, &mut rng);
        let fc2 = Linear::new(&root.sub("fc2"), config.hidden, config.classes, true, &mut rng);
        Ok(ConvNet { config, params, convs, fc1, fc2 })
    }

    /// Stops tracking the weights: explaining a trained net needs input gradients only.
    pub fn freeze(&self) {
        self.params.set_trainable("", false);
    }

    /// Runs the conv layers, returning the last one's activation before its pool (Grad-CAM's feature maps).
    fn conv_stack(&self, x: &Tensor<f32>) -> Tensor<f32> {
        let mut h = x.clone();
        let last = self.convs.len() - 1;
        for (i, (conv, l)) in self.convs.iter().zip(&self.config.convs).enumerate() {
            h = conv.forward(&h).relu();
            if l.pool && i != last {
                h = h.max_pool2d(2, 2);
            }
        }
        h
    }

    fn head_from_features(&self, features: &Tensor<f32>) -> Tensor<f32> {
        let h =
            if self.config.convs.last().is_some_and(|l| l.pool) { features.max_pool2d(2, 2) } else { features.clone() };
        self.fc2.forward(&self.fc1.forward(&h.flatten_from(1)).relu())
    }

    /// Trains with Adam on shuffled mini-batches; a NaN or inf loss is an error naming the step.
    pub fn train(&self, data: &LabelledImages, config: &TrainConfig, mut on_step: impl FnMut(u64, f32)) -> Result<()> {
        data.check_for(self)?;
        if config.batch == 0 || config.epochs == 0 || !(config.lr > 0.0) {
            return Err(Error::Config(format!("invalid training config {config:?}")));
        }
        self.params.set_trainable("", true);
        let mut opt = Adam::new(AdamConfig::adam(config.lr));
        let mut rng = tensor::seeded(config.seed);
        let n = data.len();
        let mut step = 0u64;
        for _ in 0..config.epochs {
            let order = tensor::permutation(n, &mut rng);
            for chunk in order.chunks(config.batch) {
                let (x, y) = data.batch(chunk);
                let loss = self.logits(&Tensor::new(x)).cross_entropy(&y);
                let value = tensor::check_loss(step, loss.item() as f64)?;
                let grads = loss.backward();
                opt.step(&self.params, &grads);
                on_step(step, value as f32);
                step += 1;
            }
        }
        Ok(())
    }

    /// Saves the weights as safetensors, with the config in the metadata.
    pub fn save(&self, path: &Path) -> Result<()> {
        let meta = HashMap::from([("config".to_string(), serde_json::to_string(&self.config).expect("serializes"))]);
        Ok(self.params.save(path, Some(meta))?)
    }

    /// Loads weights saved by [`ConvNet::save`] for the same config.
    pub fn load(config: ConvNetConfig, path: &Path) -> Result<Self> {
        let stored = tensor::read_safetensors(path)?;
        let saved: Option<ConvNetConfig> = stored.metadata.get("config").and_then(|c| serde_json::from_str(c).ok());
        if saved.as_ref() != Some(&config) {
            return Err(Error::Config(format!("{} holds a net for config {saved:?}, not {config:?}", path.display())));
        }
        let net = ConvNet::new(config, 0)?;
        net.params.load(path)?;
        Ok(net)
    }
}

/// Mini-batch training settings (Adam).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TrainConfig {
    pub epochs: usize,
    pub batch: usize,
    pub lr: f64,
    pub seed: u64,
}

impl Default for TrainConfig {
    /// What the P9 reproduction uses for its MNIST and shapes nets: 3 epochs of batch 64 at lr 1e-3.
    fn default() -> Self {
        TrainConfig { epochs: 3, batch: 64, lr: 1e-3, seed: 0 }
    }
}

impl Classifier for ConvNet {
    fn logits(&self, images: &Tensor<f32>) -> Tensor<f32> {
        self.head_from_features(&self.conv_stack(images))
    }
    fn num_classes(&self) -> usize {
        self.config.classes
    }
    fn input_shape(&self) -> [usize; 3] {
        [self.config.in_channels, self.config.height, self.config.width]
    }
    fn features(&self, images: &Tensor<f32>) -> Option<Tensor<f32>> {
        Some(self.conv_stack(images))
    }
    fn head(&self, features: &Tensor<f32>) -> Option<Tensor<f32>> {
        Some(self.head_from_features(features))
    }
}

/// Class probabilities `[B, classes]` without recording a graph, in chunks of `max_batch`.
pub fn probabilities(model: &dyn Classifier, images: &ArrayD<f32>, max_batch: usize) -> ArrayD<f32> {
    let n = images.shape()[0];
    let mut out = ArrayD::zeros(IxDyn(&[n, model.num_classes()]));
    no_grad(|| {
        for start in (0..n).step_by(max_batch.max(1)) {
            let len = max_batch.max(1).min(n - start);
            let x = images.slice_axis(Axis(0), (start..start + len).into()).to_owned();
            let p = model.logits(&Tensor::new(x)).softmax(-1);
            out.slice_axis_mut(Axis(0), (start..start + len).into()).assign(p.value());
        }
    });
    out
}

/// Accuracy of `model` on `data`.
pub fn accuracy(model: &dyn Classifier, data: &LabelledImages, max_batch: usize) -> f64 {
    let predicted = argmax_rows(&probabilities(model, &data.images, max_batch));
    predicted.iter().zip(&data.labels).filter(|(p, y)| p == y).count() as f64 / data.len().max(1) as f64
}
