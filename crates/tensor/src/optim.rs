//! Optimizers whose state is keyed by parameter name, so growth and grafting can copy, reset or drop it
//! per parameter; learning-rate schedules.

use std::collections::{BTreeMap, HashMap};
use std::path::Path;

use ndarray::ArrayD;
use serde::{Deserialize, Serialize};

use crate::checkpoint::{StoredTensor, read_safetensors, write_safetensors};
use crate::var::in_prefix;
use crate::{Error, Float, Grads, Params, Result};

/// Per-parameter optimizer state.
#[derive(Debug, Clone, PartialEq)]
pub struct ParamState<F: Float = f32> {
    /// Updates applied to this parameter so far (Adam's bias correction uses it, so a parameter added
    /// mid-training starts its own count).
    pub step: u64,
    /// Named buffers: `momentum` for SGD, `m` and `v` for Adam.
    pub buffers: BTreeMap<String, ArrayD<F>>,
}

impl<F: Float> Default for ParamState<F> {
    fn default() -> Self {
        ParamState { step: 0, buffers: BTreeMap::new() }
    }
}

/// State of all parameters, by name.
#[derive(Debug, Clone, Default)]
pub struct OptimizerState<F: Float = f32> {
    pub per_param: HashMap<String, ParamState<F>>,
}

impl<F: Float> OptimizerState<F> {
    pub fn get(&self, name: &str) -> Option<&ParamState<F>> {
        self.per_param.get(name)
    }

    /// Forgets a parameter's state (its next update starts fresh).
    pub fn reset(&mut self, name: &str) {
        self.per_param.remove(name);
    }

    /// Resets every parameter under `prefix`.
    pub fn reset_prefix(&mut self, prefix: &str) {
        self.per_param.retain(|n, _| !in_prefix(n, prefix));
    }

    /// Copies state from one parameter to another (e.g. to a layer copy).
    pub fn copy(&mut self, from: &str, to: &str) -> Result<()> {
        let s = self.per_param.get(from).cloned().ok_or_else(|| Error::UnknownParam(from.to_string()))?;
        self.per_param.insert(to.to_string(), s);
        Ok(())
    }

    /// Copies the state of every parameter under `from` to the same suffix under `to` (the moments of a copied
    /// layer, when a growth operator chooses to copy them rather than start fresh). Returns the new names.
    pub fn copy_prefix(&mut self, from: &str, to: &str) -> Result<Vec<String>> {
        let copies: Vec<(String, ParamState<F>)> = self
            .per_param
            .iter()
            .filter(|(n, _)| in_prefix(n, from))
            .map(|(n, s)| (format!("{to}{}", &n[from.len()..]), s.clone()))
            .collect();
        if let Some((taken, _)) = copies.iter().find(|(n, _)| self.per_param.contains_key(n)) {
            return Err(Error::DuplicateParam(taken.clone()));
        }
        let mut names: Vec<String> = copies.iter().map(|(n, _)| n.clone()).collect();
        names.sort();
        self.per_param.extend(copies);
        Ok(names)
    }

    /// Moves the state of every parameter under `from` to the same suffix under `to`, as
    /// [`Params::rename_prefix`] moves the parameters. A target that already has state and is not itself
    /// being moved is an error (state is never silently overwritten).
    pub fn rename_prefix(&mut self, from: &str, to: &str) -> Result<()> {
        let moves: Vec<(String, String)> = self
            .per_param
            .keys()
            .filter(|n| in_prefix(n, from))
            .map(|n| (n.clone(), format!("{to}{}", &n[from.len()..])))
            .collect();
        for (_, new) in &moves {
            if self.per_param.contains_key(new) && !moves.iter().any(|(old, _)| old == new) {
                return Err(Error::DuplicateParam(new.clone()));
            }
        }
        let taken: Vec<(String, ParamState<F>)> =
            moves.iter().map(|(old, new)| (new.clone(), self.per_param.remove(old).expect("listed"))).collect();
        self.per_param.extend(taken);
        Ok(())
    }

    /// Applies, in order, the `(old, new)` prefix renames that a model edit returned (for example
    /// `Decoder::insert_layer_copy`), so every parameter keeps its own moments after layers shift.
    pub fn apply_renames(&mut self, renames: &[(String, String)]) -> Result<()> {
        renames.iter().try_for_each(|(old, new)| self.rename_prefix(old, new))
    }

    /// Saves the state as safetensors (`<name>/<buffer>` tensors, step counts in the metadata).
    pub fn save(&self, path: &Path) -> Result<()> {
        let mut names: Vec<&String> = self.per_param.keys().collect();
        names.sort();
        let mut tensors = Vec::new();
        let mut steps = BTreeMap::new();
        for n in names {
            let s = &self.per_param[n];
            steps.insert(n.clone(), s.step);
            for (b, a) in &s.buffers {
                tensors.push((format!("{n}/{b}"), StoredTensor::from_float(a)));
            }
        }
        let meta = HashMap::from([("steps".to_string(), serde_json::to_string(&steps).expect("json"))]);
        write_safetensors(path, &tensors, Some(meta))
    }

    pub fn load(path: &Path) -> Result<Self> {
        let stored = read_safetensors(path)?;
        let bad = |reason: String| Error::BadCheckpoint { path: path.to_path_buf(), reason };
        let steps: BTreeMap<String, u64> =
            serde_json::from_str(stored.metadata.get("steps").ok_or_else(|| bad("no `steps` metadata".into()))?)
                .map_err(|e| bad(format!("`steps` metadata: {e}")))?;
        let mut per_param: HashMap<String, ParamState<F>> =
            steps.into_iter().map(|(n, step)| (n, ParamState { step, buffers: BTreeMap::new() })).collect();
        for (key, t) in stored.tensors {
            let (n, b) =
                key.rsplit_once('/').ok_or_else(|| bad(format!("tensor `{key}` is not `<param>/<buffer>`")))?;
            let a = t.to_float::<F>().map_err(|r| bad(format!("`{key}`: {r}")))?;
            per_param
                .get_mut(n)
                .ok_or_else(|| bad(format!("`{key}` has no step count")))?
                .buffers
                .insert(b.to_string(), a);
        }
        Ok(OptimizerState { per_param })
    }
}

impl<F: Float> OptimizerState<F> {
    /// Checks loaded state against the parameters it will update: every entry names a parameter, every buffer
    /// has its parameter's shape, and an entry that has taken steps holds every buffer in `required` (a lost
    /// buffer would otherwise restart from zero moments without a word). The error names the parameter.
    pub fn check_against(&self, params: &Params<F>, required: &[&str]) -> std::result::Result<(), String> {
        let mut names: Vec<&String> = self.per_param.keys().collect();
        names.sort();
        for name in names {
            let st = &self.per_param[name];
            let var = params.get(name).ok_or_else(|| format!("optimizer state for `{name}`, which the model lacks"))?;
            let shape = var.shape();
            for (buffer, a) in &st.buffers {
                if a.shape() != shape.as_slice() {
                    return Err(format!(
                        "optimizer buffer `{name}/{buffer}` has shape {:?}, the parameter {shape:?}",
                        a.shape()
                    ));
                }
            }
            if st.step > 0 {
                if let Some(missing) = required.iter().find(|b| !st.buffers.contains_key(**b)) {
                    return Err(format!(
                        "optimizer state of `{name}` ({} steps) lacks its `{missing}` buffer",
                        st.step
                    ));
                }
            }
        }
        Ok(())
    }
}

/// An optimizer updates the trainable parameters of a [`Params`] from gradients.
pub trait Optimizer<F: Float = f32> {
    /// Applies one update with the current learning rate. Frozen parameters and parameters without a
    /// gradient are left alone (and so is their state).
    fn step(&mut self, params: &Params<F>, grads: &Grads<F>);
    fn lr(&self) -> f64;
    fn set_lr(&mut self, lr: f64);
    fn state(&self) -> &OptimizerState<F>;
    fn state_mut(&mut self) -> &mut OptimizerState<F>;
    /// The buffers every stepped parameter's state must hold (checked when state is loaded).
    fn required_buffers(&self) -> Vec<&'static str> {
        Vec::new()
    }
}

/// Stochastic gradient descent with momentum, Nesterov and L2 weight decay (PyTorch's semantics).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SgdConfig {
    pub lr: f64,
    pub momentum: f64,
    pub weight_decay: f64,
    pub nesterov: bool,
}

impl Default for SgdConfig {
    fn default() -> Self {
        SgdConfig { lr: 0.01, momentum: 0.0, weight_decay: 0.0, nesterov: false }
    }
}

#[derive(Debug, Clone)]
pub struct Sgd<F: Float = f32> {
    pub config: SgdConfig,
    state: OptimizerState<F>,
}

impl<F: Float> Sgd<F> {
    pub fn new(config: SgdConfig) -> Self {
        Sgd { config, state: OptimizerState::default() }
    }
}

impl<F: Float> Optimizer<F> for Sgd<F> {
    fn step(&mut self, params: &Params<F>, grads: &Grads<F>) {
        let c = &self.config;
        let (lr, mu, wd) = (F::of(c.lr), F::of(c.momentum), F::of(c.weight_decay));
        for (name, var) in params.iter() {
            if !var.is_trainable() {
                continue;
            }
            let Some(g) = grads.get_id(var.id()) else { continue };
            let st = self.state.per_param.entry(name).or_default();
            st.step += 1;
            let first = st.step == 1;
            var.update(|p| {
                let mut d = g.clone();
                if c.weight_decay != 0.0 {
                    d.zip_mut_with(p, |d, &p| *d += wd * p);
                }
                if c.momentum != 0.0 {
                    let buf = st.buffers.entry("momentum".into()).or_insert_with(|| d.clone());
                    if !first {
                        buf.zip_mut_with(&d, |b, &d| *b = mu * *b + d);
                    }
                    if c.nesterov {
                        d.zip_mut_with(buf, |d, &b| *d += mu * b);
                    } else {
                        d.assign(buf);
                    }
                }
                p.zip_mut_with(&d, |p, &d| *p -= lr * d);
            });
        }
    }
    fn lr(&self) -> f64 {
        self.config.lr
    }
    fn set_lr(&mut self, lr: f64) {
        self.config.lr = lr
    }
    fn state(&self) -> &OptimizerState<F> {
        &self.state
    }
    fn state_mut(&mut self) -> &mut OptimizerState<F> {
        &mut self.state
    }
    fn required_buffers(&self) -> Vec<&'static str> {
        if self.config.momentum != 0.0 { vec!["momentum"] } else { Vec::new() }
    }
}

/// Adam / AdamW. `decoupled = true` is AdamW (weight decay applied to the weights, Loshchilov & Hutter);
/// `false` adds L2 decay to the gradient (classic Adam).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AdamConfig {
    pub lr: f64,
    pub beta1: f64,
    pub beta2: f64,
    pub eps: f64,
    pub weight_decay: f64,
    pub decoupled: bool,
    /// Decay only parameters with 2 or more axes (weight matrices and embeddings), not biases or norm scales
    /// (GPT-2 / nanoGPT practice).
    #[serde(default)]
    pub decay_matrices_only: bool,
}

impl AdamConfig {
    /// Adam with PyTorch's defaults.
    pub fn adam(lr: f64) -> Self {
        AdamConfig {
            lr,
            beta1: 0.9,
            beta2: 0.999,
            eps: 1e-8,
            weight_decay: 0.0,
            decoupled: false,
            decay_matrices_only: false,
        }
    }

    /// AdamW with the given decoupled weight decay.
    pub fn adamw(lr: f64, weight_decay: f64) -> Self {
        AdamConfig {
            lr,
            beta1: 0.9,
            beta2: 0.999,
            eps: 1e-8,
            weight_decay,
            decoupled: true,
            decay_matrices_only: false,
        }
    }
}

#[derive(Debug, Clone)]
pub struct Adam<F: Float = f32> {
    pub config: AdamConfig,
    state: OptimizerState<F>,
}

impl<F: Float> Adam<F> {
    pub fn new(config: AdamConfig) -> Self {
        Adam { config, state: OptimizerState::default() }
    }
}

impl<F: Float> Optimizer<F> for Adam<F> {
    fn step(&mut self, params: &Params<F>, grads: &Grads<F>) {
        let c = self.config.clone();
        for (name, var) in params.iter() {
            if !var.is_trainable() {
                continue;
            }
            let Some(g) = grads.get_id(var.id()) else { continue };
            let st = self.state.per_param.entry(name).or_default();
            st.step += 1;
            let t = st.step as i32;
            let bc1 = 1.0 - c.beta1.powi(t);
            let bc2 = 1.0 - c.beta2.powi(t);
            let (b1, b2) = (F::of(c.beta1), F::of(c.beta2));
            let step_size = F::of(c.lr / bc1);
            let inv_sqrt_bc2 = F::of(1.0 / bc2.sqrt());
            let eps = F::of(c.eps);
            let weight_decay = if c.decay_matrices_only && var.shape().len() < 2 { 0.0 } else { c.weight_decay };
            let wd = F::of(weight_decay);
            let decay = F::of(1.0 - c.lr * weight_decay);
            let shape = g.raw_dim();
            let mut m = st.buffers.remove("m").unwrap_or_else(|| ArrayD::zeros(shape.clone()));
            let mut v = st.buffers.remove("v").unwrap_or_else(|| ArrayD::zeros(shape));
            let (decoupled_decay, l2) = (c.decoupled && weight_decay != 0.0, !c.decoupled && weight_decay != 0.0);
            // One pass per element; elementwise, so running it in parallel changes no result.
            let update = |p: &mut F, m: &mut F, v: &mut F, &g: &F| {
                if decoupled_decay {
                    *p *= decay;
                }
                let g = if l2 { g + wd * *p } else { g };
                *m = b1 * *m + (F::one() - b1) * g;
                *v = b2 * *v + (F::one() - b2) * g * g;
                *p -= step_size * *m / ((*v).sqrt() * inv_sqrt_bc2 + eps);
            };
            var.update(|p| {
                let contiguous = (p.is_standard_layout() && g.is_standard_layout())
                    .then_some(())
                    .and_then(|_| Some((p.as_slice_mut()?, m.as_slice_mut()?, v.as_slice_mut()?, g.as_slice()?)));
                match contiguous {
                    // Slices in fixed chunks, each compiled for AVX2 where the CPU has it (sqrt and division are
                    // most of the cost).
                    Some((p, m, v, g)) => {
                        const CHUNK: usize = 1 << 14;
                        let chunk = |(((p, m), v), g): (((&mut [F], &mut [F]), &mut [F]), &[F])| {
                            crate::ops::simd(|| {
                                for (((p, m), v), g) in p.iter_mut().zip(m.iter_mut()).zip(v.iter_mut()).zip(g) {
                                    update(p, m, v, g);
                                }
                            })
                        };
                        use rayon::prelude::*;
                        if g.len() >= 1 << 15 {
                            let parts =
                                p.par_chunks_mut(CHUNK).zip(m.par_chunks_mut(CHUNK)).zip(v.par_chunks_mut(CHUNK));
                            parts.zip(g.par_chunks(CHUNK)).for_each(chunk)
                        } else {
                            let parts = p.chunks_mut(CHUNK).zip(m.chunks_mut(CHUNK)).zip(v.chunks_mut(CHUNK));
                            parts.zip(g.chunks(CHUNK)).for_each(chunk)
                        }
                    }
                    None => {
                        let zip = ndarray::Zip::from(p).and(&mut m).and(&mut v).and(g);
                        if g.len() >= 1 << 15 { zip.par_for_each(update) } else { zip.for_each(update) }
                    }
                }
            });
            st.buffers.insert("m".into(), m);
            st.buffers.insert("v".into(), v);
        }
    }
    fn lr(&self) -> f64 {
        self.config.lr
    }
    fn set_lr(&mut self, lr: f64) {
        self.config.lr = lr
    }
    fn state(&self) -> &OptimizerState<F> {
        &self.state
    }
    fn state_mut(&mut self) -> &mut OptimizerState<F> {
        &mut self.state
    }
    fn required_buffers(&self) -> Vec<&'static str> {
        vec!["m", "v"]
    }
}

/// Which optimizer to build, as data (`{"kind": "adam", "lr": ..., ...}` or `{"kind": "sgd", ...}` in JSON), so a
/// training config names its optimizer and a trainer can build any of them.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum OptimizerConfig {
    /// Adam or AdamW ([`AdamConfig::decoupled`]).
    Adam(AdamConfig),
    Sgd(SgdConfig),
}

impl OptimizerConfig {
    /// The (peak) learning rate.
    pub fn lr(&self) -> f64 {
        match self {
            OptimizerConfig::Adam(c) => c.lr,
            OptimizerConfig::Sgd(c) => c.lr,
        }
    }

    /// A fresh optimizer with empty state.
    pub fn build<F: Float>(&self) -> Box<dyn Optimizer<F>> {
        match self {
            OptimizerConfig::Adam(c) => Box::new(Adam::new(c.clone())),
            OptimizerConfig::Sgd(c) => Box::new(Sgd::new(c.clone())),
        }
    }

    /// Checks the settings: a positive finite learning rate, betas and momentum in [0, 1), a positive eps,
    /// non-negative weight decay. The message names the field.
    pub fn validate(&self) -> std::result::Result<(), String> {
        let lr = self.lr();
        if !(lr > 0.0) || !lr.is_finite() {
            return Err(format!("lr {lr} must be positive and finite"));
        }
        let unit = |name: &str, v: f64| {
            if (0.0..1.0).contains(&v) { Ok(()) } else { Err(format!("{name} {v} must be in [0, 1)")) }
        };
        let non_negative = |name: &str, v: f64| {
            if v >= 0.0 && v.is_finite() { Ok(()) } else { Err(format!("{name} {v} must be non-negative")) }
        };
        match self {
            OptimizerConfig::Adam(c) => {
                unit("beta1", c.beta1)?;
                unit("beta2", c.beta2)?;
                non_negative("weight_decay", c.weight_decay)?;
                if !(c.eps > 0.0) {
                    return Err(format!("eps {} must be positive", c.eps));
                }
            }
            OptimizerConfig::Sgd(c) => {
                unit("momentum", c.momentum)?;
                non_negative("weight_decay", c.weight_decay)?;
                if c.nesterov && c.momentum == 0.0 {
                    return Err("nesterov needs a positive momentum".into());
                }
            }
        }
        Ok(())
    }
}

impl From<AdamConfig> for OptimizerConfig {
    fn from(c: AdamConfig) -> Self {
        OptimizerConfig::Adam(c)
    }
}

impl From<SgdConfig> for OptimizerConfig {
    fn from(c: SgdConfig) -> Self {
        OptimizerConfig::Sgd(c)
    }
}

/// Learning-rate multiplier as a function of the step (multiply the base LR by `factor(step)`).
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case", deny_unknown_fields)]
pub enum Schedule {
    Constant,
    /// Linear warmup from 0 over `warmup` steps, then cosine decay to `min_factor` at `total`.
    WarmupCosine {
        warmup: u64,
        total: u64,
        min_factor: f64,
    },
    /// Linear warmup, then linear decay to `min_factor` at `total`.
    WarmupLinear {
        warmup: u64,
        total: u64,
        min_factor: f64,
    },
}

impl Schedule {
    /// `min_factor` in [0, 1] (a negative one would give a negative learning rate; NaN is refused too).
    pub fn validate(&self) -> std::result::Result<(), String> {
        match *self {
            Schedule::Constant => Ok(()),
            Schedule::WarmupCosine { warmup, total, min_factor }
            | Schedule::WarmupLinear { warmup, total, min_factor } => {
                if !(0.0..=1.0).contains(&min_factor) {
                    return Err(format!("min_factor {min_factor} must be in [0, 1]"));
                }
                let _ = (warmup, total);
                Ok(())
            }
        }
    }

    pub fn factor(&self, step: u64) -> f64 {
        let warm =
            |warmup: u64| if warmup > 0 && step < warmup { Some((step + 1) as f64 / warmup as f64) } else { None };
        match *self {
            Schedule::Constant => 1.0,
            Schedule::WarmupCosine { warmup, total, min_factor } => warm(warmup).unwrap_or_else(|| {
                let span = total.saturating_sub(warmup).max(1) as f64;
                let t = ((step - warmup) as f64 / span).min(1.0);
                min_factor + (1.0 - min_factor) * 0.5 * (1.0 + (std::f64::consts::PI * t).cos())
            }),
            Schedule::WarmupLinear { warmup, total, min_factor } => warm(warmup).unwrap_or_else(|| {
                let span = total.saturating_sub(warmup).max(1) as f64;
                let t = ((step - warmup) as f64 / span).min(1.0);
                1.0 - (1.0 - min_factor) * t
            }),
        }
    }
}
