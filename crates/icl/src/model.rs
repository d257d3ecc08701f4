//! Linear self-attention models: `Z <- Z - (1/n) P Z M (Z^T Q Z)`, prediction `-Z[d, n]`.

use serde::{Deserialize, Serialize};
use tensor::ndarray::{ArrayD, IxDyn};
use tensor::optim::{Adam, AdamConfig, Optimizer};
use tensor::{Float, Params, Rng, Tensor, Var, check_loss, normal};

use crate::error::{Result, invalid};
pub use crate::kernel::lsa_layer_fused;
use crate::task::{TaskConfig, sample};

/// Which weights a layer has.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Parameterization {
    /// `Q = [[A, 0], [0, 0]]`, `P = [[0, 0], [u^T, 1]]`: trainable `A` (d x d) and `u` (d) (P3).
    Restricted,
    /// Full `(d+1) x (d+1)` `P` and `Q` (P1). Labels enter the attention scores, so a prompt with large
    /// labels is amplified cubically from layer to layer; in practice such models are unstable at depth >= 4.
    Unrestricted,
    /// Unrestricted on the feature block: `Q = [[A, 0], [0, 0]]`, `P = [[B, 0], [u^T, 1]]`. The x-rows are
    /// updated too (`X <- X - (1/n) B X M X^T A X`), which is what the `log(kappa)`-depth constructions of P1
    /// need (the features are re-conditioned from layer to layer, Newton-Schulz style), while the labels
    /// stay out of the scores and so enter the output linearly. Restricted is the case `B = 0`.
    FeatureUpdate,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ModelConfig {
    pub d: usize,
    /// Layers used in training (a looped model can be run for any number of loops after).
    pub depth: usize,
    /// One set of weights applied `depth` times, instead of `depth` distinct layers.
    pub looped: bool,
    pub parameterization: Parameterization,
    /// Standard deviation of the (small) initial weights.
    pub init_std: f64,
}

impl ModelConfig {
    pub fn validate(&self) -> Result<()> {
        if self.d == 0 || self.depth == 0 {
            return Err(invalid(format!("d = {} and depth = {} must be at least 1", self.d, self.depth)));
        }
        if !(self.init_std.is_finite() && self.init_std >= 0.0) {
            return Err(invalid(format!("init_std must be finite and >= 0, got {}", self.init_std)));
        }
        Ok(())
    }
}

enum LayerVars<F: Float> {
    Restricted { a: Var<F>, u: Var<F> },
    FeatureUpdate { a: Var<F>, b: Var<F>, u: Var<F> },
    Unrestricted { p: Var<F>, q: Var<F> },
}

/// A multilayer or looped LSA model whose weights live in `params` as `layers.<i>.{a,u}` or `layers.<i>.{p,q}`.
pub struct LsaModel<F: Float = f32> {
    pub config: ModelConfig,
    pub params: Params<F>,
    layers: Vec<LayerVars<F>>,
}

impl<F: Float> LsaModel<F> {
    /// A model with small random weights (or the weights already in `params` under the same names).
    pub fn new(config: &ModelConfig, params: &Params<F>, rng: &mut Rng) -> Result<Self> {
        config.validate()?;
        let d = config.d;
        let std = config.init_std;
        let count = if config.looped { 1 } else { config.depth };
        let layers = (0..count)
            .map(|i| {
                let p = params.root().sub("layers").sub(i);
                match config.parameterization {
                    Parameterization::Restricted => LayerVars::Restricted {
                        a: p.var("a", &[d, d], || normal(&[d, d], 0.0, std, rng)),
                        u: p.var("u", &[d], || normal(&[d], 0.0, std, rng)),
                    },
                    Parameterization::FeatureUpdate => LayerVars::FeatureUpdate {
                        a: p.var("a", &[d, d], || normal(&[d, d], 0.0, std, rng)),
                        b: p.var("b", &[d, d], || normal(&[d, d], 0.0, std, rng)),
                        u: p.var("u", &[d], || normal(&[d], 0.0, std, rng)),
                    },
                    Parameterization::Unrestricted => LayerVars::Unrestricted {
                        p: p.var("p", &[d + 1, d + 1], || normal(&[d + 1, d + 1], 0.0, std, rng)),
                        q: p.var("q", &[d + 1, d + 1], || normal(&[d + 1, d + 1], 0.0, std, rng)),
                    },
                }
            })
            .collect();
        Ok(LsaModel { config: config.clone(), params: params.clone(), layers })
    }

    /// `(P, Q)` of the layer applied at step `l` (0-based).
    pub fn layer_pq(&self, l: usize) -> (Tensor<F>, Tensor<F>) {
        let layer = &self.layers[if self.config.looped { 0 } else { l }];
        match layer {
            LayerVars::Unrestricted { p, q } => (p.tensor(), q.tensor()),
            LayerVars::Restricted { a, u } => restricted_pq(&a.tensor(), None, &u.tensor()),
            LayerVars::FeatureUpdate { a, b, u } => restricted_pq(&a.tensor(), Some(&b.tensor()), &u.tensor()),
        }
    }

    /// How many layers can be evaluated: any number for a looped model, at most `depth` otherwise.
    pub fn max_depth(&self) -> Option<usize> {
        (!self.config.looped).then_some(self.config.depth)
    }

    /// Token matrices after each of the first `depth` layers (`z: [batch, d+1, n+1]`).
    #[track_caller]
    pub fn forward_all(&self, z: &Tensor<F>, depth: usize) -> Vec<Tensor<F>> {
        assert!(
            self.max_depth().is_none_or(|m| depth <= m),
            "a multilayer model of depth {} run for {depth} layers",
            self.config.depth
        );
        assert_eq!(z.shape()[1], self.config.d + 1, "tokens {:?} for d = {}", z.shape(), self.config.d);
        let mut out = Vec::with_capacity(depth);
        let mut z = z.clone();
        for l in 0..depth {
            let (p, q) = self.layer_pq(l);
            z = lsa_layer_fused(&z, &p, &q);
            out.push(z.clone());
        }
        out
    }

    /// Query predictions `-Z_l[:, d, n]` after each of the first `depth` layers, each `[batch]`.
    pub fn predictions(&self, z: &Tensor<F>, depth: usize) -> Vec<Tensor<F>> {
        self.forward_all(z, depth).iter().map(|zl| read_out(zl)).collect()
    }

    /// The query prediction after `depth` layers, `[batch]`.
    pub fn predict(&self, z: &Tensor<F>, depth: usize) -> Tensor<F> {
        self.predictions(z, depth).pop().unwrap_or_else(|| Tensor::zeros(&[z.shape()[0]]))
    }

    /// Mean squared error of the query predictions after `depth` layers on a batch of prompts (the test
    /// loss of P1 and P3), computed without building a graph, in this model's float type.
    pub fn test_mse(&self, prompts: &crate::task::Prompts, depth: usize) -> f64 {
        tensor::no_grad(|| self.predict(&prompts.tokens::<F>(), depth).mse(&prompts.targets::<F>()).item())
            .to_f64_lossy()
    }

    /// Adds `steps[l] * I` to the `A` block of every restricted or feature-update layer (a looped model takes
    /// `steps[0]`): the model starts as GD with these step sizes (plus its small random weights), instead of
    /// near zero. Deep restricted models need per-layer steps up to ~10x the inverse spectrum top, which a
    /// small initialisation and a small learning rate do not reach (issue 24).
    pub fn add_scalar_steps(&self, steps: &[f64]) -> Result<()> {
        if steps.len() != self.layers.len() || steps.iter().any(|s| !s.is_finite()) {
            return Err(invalid(format!("{} finite steps for {} layers", steps.len(), self.layers.len())));
        }
        for (layer, &step) in self.layers.iter().zip(steps) {
            let a = match layer {
                LayerVars::Restricted { a, .. } | LayerVars::FeatureUpdate { a, .. } => a,
                LayerVars::Unrestricted { .. } => {
                    return Err(invalid("scalar steps initialise restricted or feature-update layers only"));
                }
            };
            let mut value = a.value();
            let d = value.shape()[0];
            for i in 0..d {
                value[[i, i]] += F::of(step);
            }
            a.set(value);
        }
        Ok(())
    }

    /// `A` and `u` of a restricted layer (`None` for the other parameterizations).
    pub fn restricted_weights(&self, layer: usize) -> Option<(ArrayD<F>, ArrayD<F>)> {
        match self.layers.get(layer)? {
            LayerVars::Restricted { a, u } => Some((a.value(), u.value())),
            _ => None,
        }
    }
}

/// `Q = [[A, 0], [0, 0]]` and `P = [[B, 0], [u^T, 1]]` (`B = 0` when absent).
fn restricted_pq<F: Float>(a: &Tensor<F>, b: Option<&Tensor<F>>, u: &Tensor<F>) -> (Tensor<F>, Tensor<F>) {
    let d = a.shape()[0];
    let zeros = |r, c| Tensor::zeros(&[r, c]);
    let q = Tensor::concat(&[&Tensor::concat(&[a, &zeros(d, 1)], 1), &zeros(1, d + 1)], 0);
    let last = Tensor::concat(&[&u.reshape(&[1, d]), &Tensor::ones(&[1, 1])], 1);
    let top = match b {
        Some(b) => Tensor::concat(&[b, &zeros(d, 1)], 1),
        None => zeros(d, d + 1),
    };
    (Tensor::concat(&[&top, &last], 0), q)
}

/// One LSA layer: `Z - (1/n) P (Z M Z^T) Q Z`, which equals `Z - (1/n) P Z M (Z^T Q Z)` and costs
/// `O((d+1)^2 (n+1))` per prompt instead of `O((d+1) (n+1)^2)`.
pub fn lsa_layer<F: Float>(z: &Tensor<F>, p: &Tensor<F>, q: &Tensor<F>) -> Tensor<F> {
    let n1 = z.shape()[2];
    let n = (n1 - 1).max(1);
    let mask =
        Tensor::new(ArrayD::from_shape_fn(IxDyn(&[1, 1, n1]), |ix| if ix[2] + 1 < n1 { F::one() } else { F::zero() }));
    let zmzt = (z * &mask).matmul(&z.transpose(-2, -1));
    let update = p.matmul(&zmzt).matmul(q).matmul(z);
    z - &update.mul_scalar(F::of(1.0 / n as f64))
}

/// `-Z[:, d, n]`: the negated last entry of the query token.
pub fn read_out<F: Float>(z: &Tensor<F>) -> Tensor<F> {
    let (b, d1, n1) = (z.shape()[0], z.shape()[1], z.shape()[2]);
    z.narrow(1, d1 - 1, 1).narrow(2, n1 - 1, 1).reshape(&[b]).neg()
}

/// Training settings: Adam with gradient clipping, fresh prompts every step.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TrainConfig {
    pub steps: usize,
    pub batch: usize,
    pub lr: f64,
    /// Global gradient-norm clip (`None` for no clipping).
    pub clip: Option<f64>,
    /// Loop curriculum for looped models: the depth grows linearly from 1 to the model's depth over the
    /// first `curriculum` fraction of the steps (0 for none).
    pub curriculum: f64,
    /// Keep the best weights: every `validate_every` steps (0: never) the loss on a fixed held-out set of
    /// `validation_prompts` prompts (drawn once, before training) is measured at the training depth, and
    /// the weights with the lowest finite validation loss are restored at the end. Deep cubic LSA models
    /// sit near a cliff where rare prompts blow up, so the last iterate can be much worse than the run.
    #[serde(default)]
    pub validate_every: usize,
    #[serde(default)]
    pub validation_prompts: usize,
    /// Cosine decay of the learning rate from `lr` to this over the run (`None`: constant).
    #[serde(default)]
    pub final_lr: Option<f64>,
}

impl TrainConfig {
    /// Adam at `lr` with clipping at 1 and no curriculum or validation.
    pub fn new(steps: usize, batch: usize, lr: f64) -> Self {
        TrainConfig {
            steps,
            batch,
            lr,
            clip: Some(1.0),
            curriculum: 0.0,
            validate_every: 0,
            validation_prompts: 0,
            final_lr: None,
        }
    }
}

/// What [`train`] measured.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct TrainLog {
    /// Training loss per step (each on fresh prompts).
    pub losses: Vec<f64>,
    /// `(step, loss)` on the validation set (steps counted after the update; non-finite values kept).
    pub validation: Vec<(usize, f64)>,
    /// Step whose weights were kept (`None`: the last ones, no validation).
    pub best_step: Option<usize>,
}

/// Trains `model` on prompts from `task`. A non-finite training loss is an error naming the step.
pub fn train<F: Float>(model: &LsaModel<F>, task: &TaskConfig, cfg: &TrainConfig, rng: &mut Rng) -> Result<TrainLog> {
    task.validate()?;
    if task.d != model.config.d {
        return Err(invalid(format!("task d = {} but model d = {}", task.d, model.config.d)));
    }
    if cfg.batch == 0 || !(cfg.lr.is_finite() && cfg.lr > 0.0) {
        return Err(invalid(format!("batch {} and lr {} must be positive", cfg.batch, cfg.lr)));
    }
    if cfg.final_lr.is_some_and(|f| !(f.is_finite() && f > 0.0 && f <= cfg.lr)) {
        return Err(invalid(format!("final_lr {:?} must be in (0, lr = {}]", cfg.final_lr, cfg.lr)));
    }
    if cfg.validate_every > 0 && cfg.validation_prompts == 0 {
        return Err(invalid("validate_every > 0 needs validation_prompts > 0"));
    }
    let validation = if cfg.validate_every > 0 {
        let prompts = sample(task, cfg.validation_prompts, rng)?;
        Some((prompts.tokens::<F>(), prompts.targets::<F>()))
    } else {
        None
    };
    let validate = |step: usize, log: &mut TrainLog, best: &mut Option<(f64, _)>| {
        if let Some((z, t)) = &validation {
            let loss = tensor::no_grad(|| model.predict(z, model.config.depth).mse(t).item().to_f64_lossy());
            log.validation.push((step, loss));
            if loss.is_finite() && best.as_ref().is_none_or(|(b, _)| loss < *b) {
                *best = Some((loss, model.params.snapshot()));
                log.best_step = Some(step);
            }
        }
    };
    let mut opt = Adam::new(AdamConfig::adam(cfg.lr));
    let mut log = TrainLog { losses: Vec::with_capacity(cfg.steps), ..TrainLog::default() };
    let mut best = None;
    for step in 0..cfg.steps {
        if let Some(last) = cfg.final_lr {
            let progress = step as f64 / cfg.steps.max(2).saturating_sub(1) as f64;
            opt.set_lr(last + 0.5 * (cfg.lr - last) * (1.0 + (std::f64::consts::PI * progress).cos()));
        }
        let prompts = sample(task, cfg.batch, rng)?;
        let ramp = (cfg.curriculum * cfg.steps as f64).max(1.0);
        let depth = if model.config.looped && cfg.curriculum > 0.0 {
            (1 + (step as f64 / ramp * model.config.depth as f64) as usize).min(model.config.depth)
        } else {
            model.config.depth
        };
        let loss = model.predict(&prompts.tokens::<F>(), depth).mse(&prompts.targets::<F>());
        log.losses.push(check_loss(step as u64, loss.item().to_f64_lossy())?);
        let mut grads = loss.backward();
        if let Some(c) = cfg.clip {
            grads.clip_global_norm(c);
        }
        opt.step(&model.params, &grads);
        // Only full-depth weights are candidates (a curriculum's early weights are for fewer loops).
        let full_depth = depth == model.config.depth;
        if full_depth && cfg.validate_every > 0 && ((step + 1) % cfg.validate_every == 0 || step + 1 == cfg.steps) {
            validate(step + 1, &mut log, &mut best);
        }
    }
    if let Some((_, weights)) = best {
        model.params.restore(&weights)?;
    }
    Ok(log)
}
