//! # strata-train
//!
//! The training loop for Strata's language models and for the crates built on them (growth, SALT, grafting),
//! and the language-model reproductions. The ICL, saliency and datamodels crates keep their own small loops:
//! their models train on fresh synthetic batches or in many-model blocks, where a checkpointing trainer has
//! nothing to add.
//!
//! - [`Trainer`] runs an [`Objective`] (anything with parameters and a loss per step) under a serde
//!   [`TrainConfig`]: any optimizer ([`OptimizerConfig`]: AdamW, Adam, SGD with momentum; or your own through
//!   [`Trainer::with_optimizer`]) with a learning-rate [`Schedule`], global-norm clipping, evaluation and
//!   checkpoint intervals, a progress bar (loss, tokens/s, ETA), metrics as JSON lines (`metrics.jsonl`, every
//!   line with the run's matrix-product FLOPs and tokens so far), and a [`TrainReport`] at the end.
//! - A NaN or infinite loss (or gradient) stops training with [`Error::Diverged`] naming the step.
//! - Checkpoints hold the model, the optimizer state, and the trainer and data position
//!   (`checkpoints/step-N/{model,optimizer}.safetensors`, `state.json`). A step directory is complete before
//!   the `checkpoints/latest` pointer is atomically switched to it, so a kill at any moment leaves a loadable
//!   checkpoint. Per-step randomness (dropout) is derived from `(seed, step)` and batches from
//!   `(data seed, batches drawn)`, so [`Trainer::resume`] continues to the same final weights bit for bit.
//! - [`Hook`]s run before and after every step with mutable access to the objective and the optimizer (as
//!   `&mut dyn Optimizer`), so growth schedules, layer sampling and distillation plug in without forking the
//!   loop. After a model edit, `optimizer.state_mut().apply_renames(&renames)` keeps each layer's own moments.
//! - [`lm`]: [`lm::LmObjective`] and [`lm::LmConfig`], a whole LM run as one JSON file (model, corpus,
//!   batching, training); the `strata-train --config lm.json --out DIR` binary (in `strata-runner`) runs it.
//! - [`experiments`]: the reproductions `lm/shakespeare-char` and `lm/wikitext2`.
//!
//! ```
//! use strata_train::lm::{Corpus, LmConfig, LmObjective};
//! use strata_train::tensor::{Schedule, optim::SgdConfig};
//! use strata_train::transformer::DecoderConfig;
//! use strata_train::{TrainConfig, Trainer};
//!
//! let config = LmConfig {
//!     model: DecoderConfig { vocab_size: 0, context: 16, d_model: 32, n_layers: 2, n_heads: 4, ..DecoderConfig::default() },
//!     model_seed: 0,
//!     corpus: Corpus::Synthetic { tokens: 5_000, vocab: 16, seed: 1 },
//!     batch: 4,
//!     sampling: strata_train::data::batch::WindowSampling::Shuffled,
//!     data_seed: 2,
//!     eval_batches: 2,
//!     train: TrainConfig {
//!         steps: 20,
//!         optimizer: SgdConfig { lr: 0.3, momentum: 0.9, ..SgdConfig::default() }.into(),
//!         schedule: Schedule::Constant,
//!         grad_clip: Some(1.0),
//!         eval_interval: 0,
//!         checkpoint_interval: 0,
//!         log_interval: 10,
//!         seed: 3,
//!         progress: false,
//!     },
//! };
//! let dir = tempfile::tempdir().unwrap();
//! let objective = LmObjective::new(&config, None)?;
//! let mut trainer = Trainer::new(config.train.clone(), objective, Some(dir.path()))?;
//! trainer.resume()?; // continues from <dir>/checkpoints/latest when there is one
//! let report = trainer.run()?;
//! assert!(report.final_eval["val_loss"].is_finite() && report.flops_total == trainer.flops_run());
//! # Ok::<(), strata_train::Error>(())
//! ```

pub mod experiments;
pub mod lm;

pub use tensor::optim::{Optimizer, OptimizerConfig};
pub use tensor::{OptimizerState, Schedule};
pub use {data, report, tensor, transformer};

use std::collections::BTreeMap;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::time::Instant;

use serde::{Deserialize, Serialize};
use tensor::{Params, Rng, Tensor, write_atomic};

/// Errors from training.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    #[error("invalid training config: {0}")]
    Config(String),
    #[error("training diverged at step {step}: {what} is {value}")]
    Diverged { step: u64, what: &'static str, value: f64 },
    #[error("checkpoint {path}: {message}")]
    Checkpoint { path: PathBuf, message: String },
    #[error("{path}: {source}")]
    Io { path: PathBuf, source: std::io::Error },
    #[error(transparent)]
    Tensor(#[from] tensor::Error),
    #[error(transparent)]
    Model(#[from] transformer::Error),
    #[error(transparent)]
    Data(#[from] data::Error),
    #[error(transparent)]
    Report(#[from] report::Error),
    #[error("{0}")]
    Other(String),
}

pub type Result<T, E = Error> = std::result::Result<T, E>;

fn io_err(path: &Path) -> impl FnOnce(std::io::Error) -> Error + '_ {
    move |source| Error::Io { path: path.to_path_buf(), source }
}

/// What is trained: parameters, a loss per step, an evaluation, and a data position to checkpoint.
pub trait Objective {
    fn params(&self) -> &Params<f32>;
    /// Loss of the next training batch (advances the data position). `rng` is this step's own stream.
    fn train_loss(&mut self, step: u64, rng: &mut Rng) -> Result<Tensor<f32>>;
    /// Evaluation metrics, computed without gradients (e.g. `val_loss`).
    fn evaluate(&mut self) -> Result<BTreeMap<String, f64>>;
    /// Tokens (or examples) consumed per step, for throughput.
    fn tokens_per_step(&self) -> u64;
    /// Matrix-product FLOPs of the step that was just run (forward + backward).
    fn flops_per_step(&self) -> u64;
    /// The data position, saved in checkpoints.
    fn data_state(&self) -> serde_json::Value;
    fn restore_data_state(&mut self, state: &serde_json::Value) -> Result<()>;
}

/// One step's numbers, passed to hooks and logged.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct StepRecord {
    /// Steps completed, this one included (1-based).
    pub step: u64,
    pub loss: f64,
    pub lr: f64,
    /// Gradient global norm before clipping.
    pub grad_norm: f64,
    pub seconds: f64,
    /// Matrix-product FLOPs of this step (forward and backward of the model as it was when the step ran).
    pub flops: u64,
    /// Matrix-product FLOPs of the whole run so far, this step included (carried across resumes).
    pub flops_total: u64,
    /// Tokens (or examples) of the whole run so far, this step included.
    pub tokens_total: u64,
}

/// Runs at step boundaries with mutable access to the objective (to grow a model, pick layers, set a teacher)
/// and the optimizer, whichever it is (to move, copy or reset its per-parameter state).
pub trait Hook<O: Objective> {
    /// Before step `step` (0-based: the number of steps completed so far).
    fn before_step(&mut self, _step: u64, _objective: &mut O, _optimizer: &mut dyn Optimizer<f32>) -> Result<()> {
        Ok(())
    }
    fn after_step(
        &mut self,
        _record: &StepRecord,
        _objective: &mut O,
        _optimizer: &mut dyn Optimizer<f32>,
    ) -> Result<()> {
        Ok(())
    }
}

/// Training settings (serde; unknown fields are errors).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TrainConfig {
    pub steps: u64,
    /// The optimizer (`{"kind": "adam", ...}` or `{"kind": "sgd", ...}`); its `lr` is the peak learning rate.
    pub optimizer: OptimizerConfig,
    pub schedule: Schedule,
    /// Clip the global gradient norm to this (None: no clipping).
    pub grad_clip: Option<f64>,
    /// Evaluate every this many steps (and at the end); 0: only at the end.
    pub eval_interval: u64,
    /// Checkpoint every this many steps (and at the end); 0: never.
    pub checkpoint_interval: u64,
    /// Write a `train` metrics line every this many steps.
    pub log_interval: u64,
    /// Seed of the per-step random streams (dropout).
    pub seed: u64,
    /// Show a progress bar on stderr.
    #[serde(default)]
    pub progress: bool,
}

impl TrainConfig {
    pub fn validate(&self) -> Result<()> {
        let bad = |m: String| Err(Error::Config(m));
        if self.steps == 0 {
            return bad("steps must be positive".into());
        }
        self.optimizer.validate().map_err(|m| Error::Config(format!("optimizer: {m}")))?;
        self.schedule.validate().map_err(|m| Error::Config(format!("schedule: {m}")))?;
        if let Some(c) = self.grad_clip {
            if !(c > 0.0) {
                return bad(format!("grad_clip {c} must be positive"));
            }
        }
        if self.log_interval == 0 {
            return bad("log_interval must be positive".into());
        }
        Ok(())
    }
}

/// What a run measured.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct TrainReport {
    pub steps: u64,
    /// Steps this process ran (fewer than `steps` after a resume).
    pub steps_run: u64,
    /// `(step, loss)` at every logged step of this process.
    pub train_loss: Vec<(u64, f64)>,
    /// `(step, metrics)` of every evaluation of this process.
    pub evals: Vec<(u64, BTreeMap<String, f64>)>,
    pub final_eval: BTreeMap<String, f64>,
    /// Seconds spent in training steps (evaluation and checkpoints excluded).
    pub train_seconds: f64,
    pub wall_seconds: f64,
    pub tokens_per_second: f64,
    pub matmul_flops_per_second: f64,
    /// Matrix-product FLOPs of the whole run (all processes, across resumes).
    pub flops_total: u64,
    /// Tokens (or examples) of the whole run.
    pub tokens_total: u64,
}

/// The trainer and data position stored beside the weights.
#[derive(Debug, Clone, Serialize, Deserialize)]
struct TrainerState {
    step: u64,
    seed: u64,
    data: serde_json::Value,
    config: TrainConfig,
    #[serde(default)]
    flops_run: u64,
    #[serde(default)]
    tokens_run: u64,
    /// Everything else that determines the run (see [`Trainer::set_run_config`]).
    #[serde(default)]
    run_config: Option<serde_json::Value>,
    /// SHA-256 of each file of the checkpoint, verified on resume (absent in checkpoints of older versions).
    #[serde(default)]
    sha256: BTreeMap<String, String>,
}

/// The files of a checkpoint directory besides `state.json`.
const CHECKPOINT_FILES: [&str; 2] = ["model.safetensors", "optimizer.safetensors"];

fn sha256_file(path: &Path) -> Result<String> {
    use sha2::Digest;
    let bytes = std::fs::read(path).map_err(io_err(path))?;
    Ok(format!("{:x}", sha2::Sha256::digest(&bytes)))
}

/// The dotted paths at which two JSON values differ (`"batch"`, `"model.context"`).
fn differing_paths(a: &serde_json::Value, b: &serde_json::Value, prefix: &str, out: &mut Vec<String>) {
    match (a, b) {
        (serde_json::Value::Object(x), serde_json::Value::Object(y)) => {
            let keys: std::collections::BTreeSet<&String> = x.keys().chain(y.keys()).collect();
            for k in keys {
                let path = if prefix.is_empty() { k.clone() } else { format!("{prefix}.{k}") };
                match (x.get(k), y.get(k)) {
                    (Some(u), Some(v)) => differing_paths(u, v, &path, out),
                    _ => out.push(path),
                }
            }
        }
        _ if a != b => out.push(if prefix.is_empty() { "(whole config)".into() } else { prefix.to_string() }),
        _ => {}
    }
}

/// The training loop. See the crate docs.
pub struct Trainer<O: Objective> {
    pub config: TrainConfig,
    pub objective: O,
    pub optimizer: Box<dyn Optimizer<f32>>,
    step: u64,
    out_dir: Option<PathBuf>,
    hooks: Vec<Box<dyn Hook<O>>>,
    report: TrainReport,
    flops_run: u64,
    tokens_run: u64,
    train_seconds: f64,
    /// Tokens and seconds since the last metrics line.
    window: (u64, f64),
    bar: Option<indicatif::ProgressBar>,
    run_config: Option<serde_json::Value>,
}

impl<O: Objective> std::fmt::Debug for Trainer<O> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Trainer").field("step", &self.step).field("out_dir", &self.out_dir).finish()
    }
}

impl<O: Objective> Trainer<O> {
    /// `out_dir` receives `metrics.jsonl` and `checkpoints/`; `None` trains in memory only. The optimizer is
    /// built from `config.optimizer`.
    pub fn new(config: TrainConfig, objective: O, out_dir: Option<&Path>) -> Result<Self> {
        let optimizer = config.optimizer.build();
        Self::with_optimizer(config, objective, optimizer, out_dir)
    }

    /// As [`Trainer::new`], with an optimizer of the caller's (any [`Optimizer`]; it may already hold state).
    /// The schedule scales `config.optimizer.lr()`, which should equal the optimizer's own learning rate.
    pub fn with_optimizer(
        config: TrainConfig,
        objective: O,
        optimizer: Box<dyn Optimizer<f32>>,
        out_dir: Option<&Path>,
    ) -> Result<Self> {
        config.validate()?;
        if let Some(d) = out_dir {
            std::fs::create_dir_all(d).map_err(io_err(d))?;
        }
        Ok(Trainer {
            report: TrainReport {
                steps: config.steps,
                steps_run: 0,
                train_loss: Vec::new(),
                evals: Vec::new(),
                final_eval: BTreeMap::new(),
                train_seconds: 0.0,
                wall_seconds: 0.0,
                tokens_per_second: 0.0,
                matmul_flops_per_second: 0.0,
                flops_total: 0,
                tokens_total: 0,
            },
            config,
            objective,
            optimizer,
            step: 0,
            out_dir: out_dir.map(Path::to_path_buf),
            hooks: Vec::new(),
            flops_run: 0,
            tokens_run: 0,
            train_seconds: 0.0,
            window: (0, 0.0),
            run_config: None,
            bar: None,
        })
    }

    pub fn add_hook(&mut self, hook: Box<dyn Hook<O>>) {
        self.hooks.push(hook);
    }

    /// Steps completed.
    pub fn step_count(&self) -> u64 {
        self.step
    }

    /// Continues the step count from `step` (the learning-rate schedule and per-step random streams with it), for
    /// a run forked from another at that step (growth-operator candidates). FLOP and token totals stay this
    /// trainer's own.
    pub fn start_at(&mut self, step: u64) -> Result<()> {
        if step >= self.config.steps {
            return Err(Error::Config(format!("cannot start at step {step} of a {}-step run", self.config.steps)));
        }
        self.step = step;
        Ok(())
    }

    /// Matrix-product FLOPs (forward and backward) of every step run so far, across resumes: the compute axis
    /// that growth and distillation comparisons are plotted against. An objective's extra work that is not a
    /// step of the trained model (a teacher's forward pass, a selection pass) is its own to add with
    /// [`Trainer::add_flops`].
    pub fn flops_run(&self) -> u64 {
        self.flops_run
    }

    /// Tokens (or examples) consumed so far, across resumes.
    pub fn tokens_run(&self) -> u64 {
        self.tokens_run
    }

    /// Counts compute spent outside the trained model's steps (e.g. training candidates that were discarded),
    /// so that every later metrics line and [`Trainer::flops_run`] include it.
    pub fn add_flops(&mut self, flops: u64) {
        self.flops_run += flops;
    }

    fn checkpoint_root(&self) -> Option<PathBuf> {
        self.out_dir.as_ref().map(|d| d.join("checkpoints"))
    }

    /// The step of the latest checkpoint in the output directory, without loading it (`None`: no checkpoint).
    /// A model whose shape changes during training (a growth schedule) is rebuilt to that step's shape before
    /// [`Trainer::resume`] loads the weights into it.
    pub fn checkpoint_step(&self) -> Result<Option<u64>> {
        let Some(root) = self.checkpoint_root() else { return Ok(None) };
        let latest = root.join("latest");
        if !latest.exists() {
            return Ok(None);
        }
        let name = std::fs::read_to_string(&latest).map_err(io_err(&latest))?;
        let state_path = root.join(name.trim()).join("state.json");
        let text = std::fs::read_to_string(&state_path).map_err(io_err(&state_path))?;
        let state: TrainerState = serde_json::from_str(&text)
            .map_err(|e| Error::Checkpoint { path: state_path.clone(), message: format!("state.json: {e}") })?;
        Ok(Some(state.step))
    }

    /// Records everything that determines the run beyond [`TrainConfig`] (for an LM run: the whole
    /// `LmConfig`: model, corpus, batch, sampling, seeds). It is stored in every checkpoint, and
    /// [`Trainer::resume`] refuses a checkpoint whose recorded config differs, naming the fields.
    pub fn set_run_config(&mut self, config: serde_json::Value) {
        self.run_config = Some(config);
    }

    /// Loads the latest checkpoint in the output directory, if there is one; returns whether it did. The
    /// checkpoint's training config must equal this run's (except `progress`), and so must the run config
    /// when both record one; every file must match the SHA-256 recorded with it, and the state must be
    /// consistent (its step within the run).
    pub fn resume(&mut self) -> Result<bool> {
        let Some(root) = self.checkpoint_root() else { return Ok(false) };
        let latest = root.join("latest");
        if !latest.exists() {
            return Ok(false);
        }
        let name = std::fs::read_to_string(&latest).map_err(io_err(&latest))?;
        let dir = root.join(name.trim());
        let bad = |message: String| Error::Checkpoint { path: dir.clone(), message };
        let state_path = dir.join("state.json");
        let text = std::fs::read_to_string(&state_path).map_err(io_err(&state_path))?;
        let state: TrainerState = serde_json::from_str(&text).map_err(|e| bad(format!("state.json: {e}")))?;
        let (mut saved, mut ours) = (state.config.clone(), self.config.clone());
        saved.progress = false;
        ours.progress = false;
        if saved != ours {
            return Err(bad(format!(
                "written by a run with another training config ({}); resume with the same config",
                serde_json::to_string(&state.config).unwrap_or_default()
            )));
        }
        if let (Some(saved), Some(ours)) = (&state.run_config, &self.run_config) {
            let mut fields = Vec::new();
            differing_paths(saved, ours, "", &mut fields);
            // The progress bar does not change the run.
            fields.retain(|f| !f.ends_with("progress"));
            if !fields.is_empty() {
                return Err(bad(format!(
                    "written by a run with another config (differing: {}); resume with the same config",
                    fields.join(", ")
                )));
            }
        }
        if state.step > self.config.steps {
            return Err(bad(format!(
                "state.json is at step {}, beyond this run's {} steps (an edited or foreign state)",
                state.step, self.config.steps
            )));
        }
        for file in CHECKPOINT_FILES {
            if let Some(expected) = state.sha256.get(file) {
                let found = sha256_file(&dir.join(file))?;
                if &found != expected {
                    return Err(bad(format!(
                        "{file}: SHA-256 {found} differs from the {expected} recorded when it was written \
                         (a corrupt or replaced file)"
                    )));
                }
            }
        }
        self.objective.params().load(&dir.join("model.safetensors"))?;
        let moments = tensor::OptimizerState::load(&dir.join("optimizer.safetensors"))?;
        moments
            .check_against(self.objective.params(), &self.optimizer.required_buffers())
            .map_err(|m| bad(format!("optimizer.safetensors: {m}")))?;
        *self.optimizer.state_mut() = moments;
        self.objective.restore_data_state(&state.data)?;
        self.step = state.step;
        self.flops_run = state.flops_run;
        self.tokens_run = state.tokens_run;
        self.truncate_metrics()?;
        Ok(true)
    }

    /// Drops metric lines written after the checkpoint being resumed (they will be written again).
    fn truncate_metrics(&self) -> Result<()> {
        let Some(path) = self.out_dir.as_ref().map(|d| d.join("metrics.jsonl")) else { return Ok(()) };
        if !path.exists() {
            return Ok(());
        }
        let text = std::fs::read_to_string(&path).map_err(io_err(&path))?;
        let kept: String = text
            .lines()
            .filter(|l| {
                serde_json::from_str::<serde_json::Value>(l)
                    .ok()
                    .and_then(|v| v["step"].as_u64())
                    .is_some_and(|s| s <= self.step)
            })
            .map(|l| format!("{l}\n"))
            .collect();
        write_atomic(&path, kept.as_bytes())?;
        Ok(())
    }

    /// Writes a checkpoint of the current step.
    pub fn save_checkpoint(&self) -> Result<()> {
        let Some(root) = self.checkpoint_root() else { return Ok(()) };
        let name = format!("step-{:08}", self.step);
        let tmp = root.join(format!("{name}.tmp"));
        let dir = root.join(&name);
        if tmp.exists() {
            std::fs::remove_dir_all(&tmp).map_err(io_err(&tmp))?;
        }
        std::fs::create_dir_all(&tmp).map_err(io_err(&tmp))?;
        self.objective.params().save(&tmp.join("model.safetensors"), None)?;
        self.optimizer.state().save(&tmp.join("optimizer.safetensors"))?;
        let sha256 =
            CHECKPOINT_FILES.iter().map(|f| Ok((f.to_string(), sha256_file(&tmp.join(f))?))).collect::<Result<_>>()?;
        let state = TrainerState {
            step: self.step,
            seed: self.config.seed,
            data: self.objective.data_state(),
            config: self.config.clone(),
            flops_run: self.flops_run,
            tokens_run: self.tokens_run,
            run_config: self.run_config.clone(),
            sha256,
        };
        write_atomic(&tmp.join("state.json"), serde_json::to_string_pretty(&state).expect("json").as_bytes())?;
        if dir.exists() {
            std::fs::remove_dir_all(&dir).map_err(io_err(&dir))?;
        }
        std::fs::rename(&tmp, &dir).map_err(io_err(&dir))?;
        write_atomic(&root.join("latest"), name.as_bytes())?;
        // Keep the two newest step directories.
        let mut steps: Vec<PathBuf> = std::fs::read_dir(&root)
            .map_err(io_err(&root))?
            .filter_map(|e| e.ok().map(|e| e.path()))
            .filter(|p| p.is_dir() && p.file_name().is_some_and(|n| n.to_string_lossy().starts_with("step-")))
            .filter(|p| p.extension().is_none())
            .collect();
        steps.sort();
        for old in steps.iter().rev().skip(2) {
            let _ = std::fs::remove_dir_all(old);
        }
        Ok(())
    }

    fn write_metric(&self, line: serde_json::Value) -> Result<()> {
        let Some(path) = self.out_dir.as_ref().map(|d| d.join("metrics.jsonl")) else { return Ok(()) };
        let mut f = std::fs::OpenOptions::new().create(true).append(true).open(&path).map_err(io_err(&path))?;
        writeln!(f, "{line}").map_err(io_err(&path))?;
        Ok(())
    }

    /// Runs one step: hooks, loss, backward, divergence check, clipping, scheduled AdamW update, hooks.
    pub fn train_step(&mut self) -> Result<StepRecord> {
        let started = Instant::now();
        let step = self.step;
        for h in self.hooks.iter_mut() {
            h.before_step(step, &mut self.objective, self.optimizer.as_mut())?;
        }
        let mut rng = tensor::derived(self.config.seed, step);
        let loss_t = self.objective.train_loss(step, &mut rng)?;
        let loss = loss_t.item() as f64;
        if !loss.is_finite() {
            return Err(Error::Diverged { step: step + 1, what: "loss", value: loss });
        }
        let mut grads = loss_t.backward();
        drop(loss_t);
        let grad_norm = grads.global_norm();
        if !grad_norm.is_finite() {
            return Err(Error::Diverged { step: step + 1, what: "gradient norm", value: grad_norm });
        }
        if let Some(c) = self.config.grad_clip {
            grads.clip_global_norm(c);
        }
        let lr = self.config.optimizer.lr() * self.config.schedule.factor(step);
        self.optimizer.set_lr(lr);
        self.optimizer.step(self.objective.params(), &grads);
        self.step += 1;
        // Counted before the after-step hooks, which may change the model (a growth stage) for the next step.
        let flops = self.objective.flops_per_step();
        self.flops_run += flops;
        self.tokens_run += self.objective.tokens_per_step();
        let record = StepRecord {
            step: self.step,
            loss,
            lr,
            grad_norm,
            seconds: started.elapsed().as_secs_f64(),
            flops,
            flops_total: self.flops_run,
            tokens_total: self.tokens_run,
        };
        for h in self.hooks.iter_mut() {
            h.after_step(&record, &mut self.objective, self.optimizer.as_mut())?;
        }
        Ok(record)
    }

    fn evaluate(&mut self) -> Result<BTreeMap<String, f64>> {
        let metrics = self.objective.evaluate()?;
        let mut line = serde_json::json!({
            "kind": "eval", "step": self.step, "flops": self.flops_run, "tokens": self.tokens_run,
        });
        for (k, v) in &metrics {
            line[k] = serde_json::json!(v);
        }
        self.write_metric(line)?;
        self.report.evals.push((self.step, metrics.clone()));
        Ok(metrics)
    }

    /// One step as [`Trainer::run`] takes it: [`Trainer::train_step`], then the metrics line (every
    /// `log_interval` steps), evaluation and checkpoint at their intervals and at the last step.
    pub fn logged_step(&mut self) -> Result<StepRecord> {
        let rec = self.train_step()?;
        self.window.0 += self.objective.tokens_per_step();
        self.window.1 += rec.seconds;
        self.train_seconds += rec.seconds;
        let last = rec.step == self.config.steps;
        if rec.step % self.config.log_interval == 0 || last {
            let tps = self.window.0 as f64 / self.window.1.max(1e-12);
            self.write_metric(serde_json::json!({
                "kind": "train", "step": rec.step, "loss": rec.loss, "lr": rec.lr,
                "grad_norm": rec.grad_norm, "tokens_per_s": tps, "elapsed_s": self.train_seconds,
                "flops": rec.flops_total, "tokens": rec.tokens_total,
            }))?;
            self.report.train_loss.push((rec.step, rec.loss));
            if let Some(b) = &self.bar {
                b.set_message(format!("loss {:.4} · {:.0} tok/s", rec.loss, tps));
            }
            self.window = (0, 0.0);
        }
        if let Some(b) = &self.bar {
            b.set_position(rec.step);
        }
        if last || (self.config.eval_interval > 0 && rec.step % self.config.eval_interval == 0) {
            let m = self.evaluate()?;
            if let Some(b) = &self.bar {
                b.println(format!("step {}: {}", rec.step, fmt_metrics(&m)));
            }
            if last {
                self.report.final_eval = m;
            }
        }
        if self.config.checkpoint_interval > 0 && (last || rec.step % self.config.checkpoint_interval == 0) {
            self.save_checkpoint()?;
        }
        Ok(rec)
    }

    /// Trains until `config.steps` (from wherever [`Trainer::resume`] left it), evaluating and checkpointing at
    /// the configured intervals, and returns the report.
    pub fn run(&mut self) -> Result<TrainReport> {
        let wall = Instant::now();
        if self.config.progress {
            let bar = indicatif::ProgressBar::new(self.config.steps);
            bar.set_style(
                indicatif::ProgressStyle::with_template("[{elapsed_precise}] {bar:30} {pos}/{len} {msg} (eta {eta})")
                    .expect("valid template"),
            );
            bar.set_position(self.step);
            self.bar = Some(bar);
        }
        let (first_step, seconds_before) = (self.step, self.train_seconds);
        let (flops_before, tokens_before) = (self.flops_run, self.tokens_run);
        while self.step < self.config.steps {
            self.logged_step()?;
        }
        if let Some(b) = self.bar.take() {
            b.finish_and_clear();
        }
        if self.report.final_eval.is_empty() {
            self.report.final_eval = self.evaluate()?;
        }
        let train_seconds = self.train_seconds - seconds_before;
        self.report.steps_run = self.step - first_step;
        self.report.train_seconds = train_seconds;
        self.report.wall_seconds = wall.elapsed().as_secs_f64();
        self.report.tokens_per_second = (self.tokens_run - tokens_before) as f64 / train_seconds.max(1e-12);
        self.report.matmul_flops_per_second = (self.flops_run - flops_before) as f64 / train_seconds.max(1e-12);
        self.report.flops_total = self.flops_run;
        self.report.tokens_total = self.tokens_run;
        Ok(self.report.clone())
    }
}

fn fmt_metrics(m: &BTreeMap<String, f64>) -> String {
    m.iter().map(|(k, v)| format!("{k} {v:.4}")).collect::<Vec<_>>().join(", ")
}

/// An exclusive claim on an output folder: `<dir>/.lock` holding the owner's pid, created atomically and
/// removed when the guard drops. A second process on the same folder is refused while the owner lives; a lock
/// left by a process that died (kill -9) is taken over.
#[derive(Debug)]
pub struct OutputLock {
    path: PathBuf,
}

impl OutputLock {
    pub fn acquire(dir: &Path) -> Result<OutputLock> {
        std::fs::create_dir_all(dir).map_err(io_err(dir))?;
        let path = dir.join(".lock");
        for _ in 0..2 {
            match std::fs::OpenOptions::new().write(true).create_new(true).open(&path) {
                Ok(mut f) => {
                    use std::io::Write;
                    write!(f, "{}", std::process::id()).map_err(io_err(&path))?;
                    return Ok(OutputLock { path });
                }
                Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {
                    let owner = std::fs::read_to_string(&path).unwrap_or_default();
                    let pid: Option<u32> = owner.trim().parse().ok();
                    let alive = pid.is_some_and(|p| Path::new(&format!("/proc/{p}")).exists());
                    if alive && pid != Some(std::process::id()) {
                        return Err(Error::Checkpoint {
                            path: path.clone(),
                            message: format!(
                                "another process (pid {}) is writing to this folder; wait for it or use another",
                                owner.trim()
                            ),
                        });
                    }
                    // The owner is gone: take the lock over.
                    std::fs::remove_file(&path).map_err(io_err(&path))?;
                }
                Err(e) => return Err(io_err(&path)(e)),
            }
        }
        Err(Error::Checkpoint { path, message: "could not take the lock".into() })
    }
}

impl Drop for OutputLock {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.path);
    }
}
