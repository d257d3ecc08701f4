use std::collections::BTreeMap;
use std::path::Path;

use strata_train::lm::{Corpus, LmConfig, LmObjective};
use strata_train::{Error, Hook, Objective, Result, StepRecord, TrainConfig, Trainer};
use tensor::optim::{AdamConfig, Optimizer, SgdConfig};
use tensor::{Params, Rng, Schedule, Tensor};
use transformer::{DecoderConfig, Positions};

fn train_config(steps: u64, checkpoint_interval: u64) -> TrainConfig {
    TrainConfig {
        steps,
        optimizer: AdamConfig { decay_matrices_only: true, ..AdamConfig::adamw(3e-3, 0.1) }.into(),
        schedule: Schedule::WarmupCosine { warmup: 5, total: steps, min_factor: 0.1 },
        grad_clip: Some(1.0),
        eval_interval: 10,
        checkpoint_interval,
        log_interval: 1,
        seed: 5,
        progress: false,
    }
}

fn lm_config(steps: u64, checkpoint_interval: u64, d_model: usize) -> LmConfig {
    LmConfig {
        model: DecoderConfig {
            vocab_size: 0,
            context: 32,
            d_model,
            n_layers: 2,
            n_heads: 4,
            positions: Positions::Rotary,
            dropout: 0.1,
            ..DecoderConfig::default()
        },
        model_seed: 1,
        corpus: Corpus::Synthetic { tokens: 20_000, vocab: 24, seed: 3 },
        batch: 8,
        sampling: data::batch::WindowSampling::Shuffled,
        data_seed: 2,
        eval_batches: 4,
        train: train_config(steps, checkpoint_interval),
    }
}

#[test]
fn lm_training_learns_and_in_process_resume_is_bit_exact() {
    let cfg = lm_config(30, 15, 32);
    let straight_dir = tempfile::tempdir().unwrap();
    let mut straight =
        Trainer::new(cfg.train.clone(), LmObjective::new(&cfg, None).unwrap(), Some(straight_dir.path())).unwrap();
    let report = straight.run().unwrap();
    let first = report.train_loss[0].1;
    assert!(report.final_eval["val_loss"] < first - 0.3, "loss {first} -> {:?}", report.final_eval);
    assert!(report.tokens_per_second > 0.0 && report.matmul_flops_per_second > 0.0);

    // Half, then a fresh process-like trainer that resumes from the checkpoint.
    let dir = tempfile::tempdir().unwrap();
    let half = TrainConfig { ..cfg.train.clone() };
    let mut a = Trainer::new(half, LmObjective::new(&cfg, None).unwrap(), Some(dir.path())).unwrap();
    for _ in 0..15 {
        a.train_step().unwrap();
    }
    a.save_checkpoint().unwrap();
    drop(a);
    let mut b = Trainer::new(cfg.train.clone(), LmObjective::new(&cfg, None).unwrap(), Some(dir.path())).unwrap();
    assert!(b.resume().unwrap());
    assert_eq!(b.step_count(), 15);
    assert_eq!(b.flops_run(), 15 * b.objective.flops_per_step(), "running FLOPs are carried across a resume");
    b.run().unwrap();
    assert_eq!(b.objective.model.params.snapshot(), straight.objective.model.params.snapshot());

    // A checkpoint from another config is refused.
    let other = LmConfig { train: TrainConfig { seed: 99, ..cfg.train.clone() }, ..cfg.clone() };
    let mut c = Trainer::new(other.train.clone(), LmObjective::new(&other, None).unwrap(), Some(dir.path())).unwrap();
    assert!(c.resume().unwrap_err().to_string().contains("another training config"));
}

/// A one-parameter objective whose loss turns NaN at a chosen step.
struct Poisoned {
    params: Params<f32>,
    nan_at: u64,
}

impl Objective for Poisoned {
    fn params(&self) -> &Params<f32> {
        &self.params
    }
    fn train_loss(&mut self, step: u64, _rng: &mut Rng) -> Result<Tensor<f32>> {
        let w = self.params.get("w").unwrap().tensor();
        let l = w.square().sum_all();
        Ok(if step + 1 == self.nan_at { l.mul_scalar(f32::NAN) } else { l })
    }
    fn evaluate(&mut self) -> Result<BTreeMap<String, f64>> {
        Ok(BTreeMap::new())
    }
    fn tokens_per_step(&self) -> u64 {
        1
    }
    fn flops_per_step(&self) -> u64 {
        0
    }
    fn data_state(&self) -> serde_json::Value {
        serde_json::Value::Null
    }
    fn restore_data_state(&mut self, _: &serde_json::Value) -> Result<()> {
        Ok(())
    }
}

#[test]
fn nan_loss_stops_training_naming_the_step() {
    let params = Params::new();
    params.insert("w", tensor::ndarray::ArrayD::from_elem(tensor::ndarray::IxDyn(&[3]), 1.0)).unwrap();
    let mut t = Trainer::new(train_config(10, 0), Poisoned { params, nan_at: 7 }, None).unwrap();
    match t.run() {
        Err(Error::Diverged { step: 7, what: "loss", .. }) => {}
        other => panic!("expected divergence at step 7, got {other:?}"),
    }
    assert_eq!(t.step_count(), 6, "the diverged step is not applied");
    let message = Error::Diverged { step: 7, what: "loss", value: f64::NAN }.to_string();
    assert!(message.contains("step 7") && message.contains("NaN"), "{message}");
}

#[test]
fn bad_configs_are_errors() {
    let ok = train_config(10, 0);
    for bad in [
        TrainConfig { steps: 0, ..ok.clone() },
        TrainConfig { optimizer: AdamConfig::adamw(f64::NAN, 0.0).into(), ..ok.clone() },
        TrainConfig { optimizer: AdamConfig { beta2: 1.0, ..AdamConfig::adam(1e-3) }.into(), ..ok.clone() },
        TrainConfig { optimizer: SgdConfig { momentum: 1.5, ..SgdConfig::default() }.into(), ..ok.clone() },
        TrainConfig { optimizer: SgdConfig { lr: -1.0, ..SgdConfig::default() }.into(), ..ok.clone() },
        TrainConfig { grad_clip: Some(0.0), ..ok.clone() },
        TrainConfig { log_interval: 0, ..ok.clone() },
        TrainConfig { schedule: Schedule::WarmupCosine { warmup: 2, total: 10, min_factor: -0.5 }, ..ok.clone() },
        TrainConfig { schedule: Schedule::WarmupLinear { warmup: 2, total: 10, min_factor: f64::NAN }, ..ok.clone() },
        TrainConfig { schedule: Schedule::WarmupLinear { warmup: 2, total: 10, min_factor: 1.5 }, ..ok.clone() },
    ] {
        assert!(bad.validate().is_err(), "{bad:?}");
    }
    // Unknown fields are rejected at every depth: the run, its train section, the schedule, the optimizer.
    for (section, field) in
        [(None, "stepz"), (Some("train"), "stepz"), (Some("schedule"), "warmpu"), (Some("optimizer"), "lrr")]
    {
        let mut json = serde_json::to_value(lm_config(5, 0, 32)).unwrap();
        match section {
            None => json[field] = serde_json::json!(3),
            Some("train") => json["train"][field] = serde_json::json!(3),
            Some(s) => json["train"][s][field] = serde_json::json!(3),
        }
        let err = serde_json::from_value::<LmConfig>(json).unwrap_err().to_string();
        assert!(err.contains(field), "{section:?}.{field}: {err}");
    }
    let small_vocab =
        LmConfig { model: DecoderConfig { vocab_size: 5, ..lm_config(5, 0, 32).model }, ..lm_config(5, 0, 32) };
    assert!(LmObjective::new(&small_vocab, None).unwrap_err().to_string().contains("vocab_size"));
    let bad_split = LmConfig {
        corpus: Corpus::Shakespeare { val_fraction: 1.5, tokenizer: strata_train::lm::TokenizerChoice::Chars },
        ..lm_config(5, 0, 32)
    };
    assert!(LmObjective::new(&bad_split, None).unwrap_err().to_string().contains("val_fraction"));
}

/// Grows the model by one layer (a copy of the top layer) at a given step, as a stacking schedule would.
struct GrowAt {
    step: u64,
    seen: Vec<u64>,
}

impl Hook<LmObjective> for GrowAt {
    fn before_step(
        &mut self,
        step: u64,
        objective: &mut LmObjective,
        optimizer: &mut dyn Optimizer<f32>,
    ) -> Result<()> {
        if step == self.step {
            let top = objective.model.n_layers() - 1;
            objective.model.insert_layer_copy(top, top + 1)?;
            // The new layer's optimizer state starts fresh; the others keep theirs.
            optimizer.state_mut().reset_prefix(&transformer::Decoder::<f32>::layer_prefix(top + 1));
        }
        Ok(())
    }
    fn after_step(&mut self, record: &StepRecord, _: &mut LmObjective, _: &mut dyn Optimizer<f32>) -> Result<()> {
        self.seen.push(record.step);
        Ok(())
    }
}

#[test]
fn hooks_run_at_step_boundaries_and_can_grow_the_model() {
    let cfg = lm_config(12, 0, 32);
    let mut t = Trainer::new(cfg.train.clone(), LmObjective::new(&cfg, None).unwrap(), None).unwrap();
    t.add_hook(Box::new(GrowAt { step: 6, seen: Vec::new() }));
    let report = t.run().unwrap();
    assert_eq!(t.objective.model.n_layers(), 3);
    assert!(t.objective.model.params.contains("layers.2.attn.qkv.weight"));
    assert!(report.final_eval["val_loss"].is_finite());
    // Layer subsets for the next steps (layer dropping) go through the objective.
    t.objective.path = Some(vec![(0, 1.0), (2, 2.0)]);
    let mut rng = tensor::seeded(0);
    assert!(t.objective.train_loss(0, &mut rng).unwrap().item().is_finite());
    assert_eq!(
        t.objective.flops_per_step(),
        transformer::flops::decoder_step(&t.objective.model.config, 8, 32, 2).total()
    );
}

#[test]
fn training_is_identical_under_one_and_two_threads() {
    let cfg = lm_config(6, 0, 32);
    let train_with = |threads: usize| {
        let pool = rayon::ThreadPoolBuilder::new().num_threads(threads).build().unwrap();
        pool.install(|| {
            let mut t = Trainer::new(cfg.train.clone(), LmObjective::new(&cfg, None).unwrap(), None).unwrap();
            t.run().unwrap();
            t.objective.model.params.snapshot()
        })
    };
    assert_eq!(train_with(1), train_with(2));
}

/// The metrics lines of a run, parsed.
fn metric_lines(dir: &Path) -> Vec<serde_json::Value> {
    std::fs::read_to_string(dir.join("metrics.jsonl"))
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect()
}

#[test]
fn metrics_carry_running_flops_and_tokens_also_across_growth() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = lm_config(12, 0, 32);
    let mut t = Trainer::new(cfg.train.clone(), LmObjective::new(&cfg, None).unwrap(), Some(dir.path())).unwrap();
    t.add_hook(Box::new(GrowAt { step: 6, seen: Vec::new() }));
    let report = t.run().unwrap();
    // Steps 1-6 ran the 2-layer model, steps 7-12 the 3-layer one (batch 8, length 32).
    let model = t.objective.model.config.clone();
    let per_step = |layers: usize| transformer::flops::decoder_step(&model, 8, 32, layers).total();
    let expected = 6 * per_step(2) + 6 * per_step(3);
    assert_eq!(t.flops_run(), expected);
    assert_eq!(report.flops_total, expected);
    assert_eq!(t.tokens_run(), 12 * 8 * 32);
    let lines = metric_lines(dir.path());
    let train: Vec<&serde_json::Value> = lines.iter().filter(|l| l["kind"] == "train").collect();
    assert_eq!(train.len(), 12);
    for (i, l) in train.iter().enumerate() {
        let step = i as u64 + 1;
        let flops = step.min(6) * per_step(2) + step.saturating_sub(6) * per_step(3);
        assert_eq!(l["flops"].as_u64(), Some(flops), "step {step}");
        assert_eq!(l["tokens"].as_u64(), Some(step * 8 * 32), "step {step}");
    }
    let last_eval = lines.iter().rev().find(|l| l["kind"] == "eval").unwrap();
    assert_eq!(last_eval["flops"].as_u64(), Some(expected));
    t.add_flops(1000);
    assert_eq!(t.flops_run(), expected + 1000);
}

/// Records what the optimizer holds after each step, through the trait object hooks receive.
struct SeeOptimizer {
    momentum_buffers: Vec<usize>,
}

impl Hook<LmObjective> for SeeOptimizer {
    fn after_step(&mut self, _: &StepRecord, _: &mut LmObjective, optimizer: &mut dyn Optimizer<f32>) -> Result<()> {
        let n = optimizer.state().per_param.values().filter(|s| s.buffers.contains_key("momentum")).count();
        self.momentum_buffers.push(n);
        Ok(())
    }
}

#[test]
fn the_trainer_runs_sgd_with_momentum_and_hooks_see_it() {
    let mut cfg = lm_config(30, 0, 32);
    cfg.train.optimizer = SgdConfig { lr: 0.3, momentum: 0.9, ..SgdConfig::default() }.into();
    cfg.train.schedule = Schedule::Constant;
    let json = serde_json::to_value(&cfg.train.optimizer).unwrap();
    assert_eq!(json["kind"], "sgd", "{json}");
    let mut t = Trainer::new(cfg.train.clone(), LmObjective::new(&cfg, None).unwrap(), None).unwrap();
    let before = t.objective.evaluate().unwrap()["val_loss"];
    let trainable = t.objective.params().iter().iter().filter(|(_, v)| v.is_trainable()).count();
    let mut t2 = Trainer::new(cfg.train.clone(), LmObjective::new(&cfg, None).unwrap(), None).unwrap();
    t.add_hook(Box::new(SeeOptimizer { momentum_buffers: Vec::new() }));
    let report = t.run().unwrap();
    assert!(report.final_eval["val_loss"] < before - 0.1, "{before} -> {:?}", report.final_eval);
    let state = t.optimizer.state();
    assert_eq!(state.per_param.len(), trainable);
    assert!(state.per_param.values().all(|s| s.buffers.contains_key("momentum") && !s.buffers.contains_key("m")));
    // The same config trains the same way a second time (the optimizer is built from the config).
    t2.run().unwrap();
    assert_eq!(t.objective.model.params.snapshot(), t2.objective.model.params.snapshot());
}

#[test]
fn an_unknown_optimizer_field_or_kind_is_an_error_naming_it() {
    let mut json = serde_json::to_value(lm_config(5, 0, 32)).unwrap();
    json["train"]["optimizer"]["betaa"] = serde_json::json!(0.5);
    let e = serde_json::from_value::<LmConfig>(json).unwrap_err().to_string();
    assert!(e.contains("betaa"), "{e}");
    let mut json = serde_json::to_value(lm_config(5, 0, 32)).unwrap();
    json["train"]["optimizer"]["kind"] = serde_json::json!("lion");
    let e = serde_json::from_value::<LmConfig>(json).unwrap_err().to_string();
    assert!(e.contains("lion"), "{e}");
}

#[test]
fn inserting_a_layer_in_the_middle_keeps_each_layers_own_adam_moments() {
    let mut cfg = lm_config(4, 0, 32);
    cfg.model.n_layers = 3;
    let mut t = Trainer::new(cfg.train.clone(), LmObjective::new(&cfg, None).unwrap(), None).unwrap();
    t.run().unwrap();
    let before = t.optimizer.state().clone();
    let moments = |s: &tensor::OptimizerState<f32>, layer: usize| {
        let name = format!("layers.{layer}.mlp.fc.weight");
        s.get(&name).map(|p| (p.step, p.buffers["m"].clone(), p.buffers["v"].clone()))
    };
    // Copy layer 0 to index 1: old layers 1 and 2 move to 2 and 3.
    let renames = t.objective.model.insert_layer_copy(0, 1).unwrap();
    t.optimizer.state_mut().apply_renames(&renames).unwrap();
    let after = t.optimizer.state();
    assert_eq!(moments(after, 0), moments(&before, 0));
    assert_eq!(moments(after, 1), None, "the new layer starts with fresh moments");
    assert_eq!(moments(after, 2), moments(&before, 1));
    assert_eq!(moments(after, 3), moments(&before, 2));
    assert_eq!(after.per_param.len(), before.per_param.len());
    // Training continues with every parameter's own state; the new layer's count starts at 1.
    t.config.steps = 5;
    t.run().unwrap();
    assert_eq!(t.optimizer.state().get("layers.1.mlp.fc.weight").unwrap().step, 1);
    assert_eq!(t.optimizer.state().get("layers.2.mlp.fc.weight").unwrap().step, 5);
    // Copying moments instead is an explicit choice.
    let mut s = before.clone();
    s.apply_renames(&renames).unwrap();
    s.copy_prefix("layers.0", "layers.1").unwrap();
    assert_eq!(moments(&s, 1), moments(&before, 0));
    assert!(s.copy_prefix("layers.0", "layers.1").is_err(), "state is never silently overwritten");
}

#[test]
fn a_deep_copy_trains_independently_of_its_original() {
    let cfg = lm_config(3, 0, 32);
    let mut t = Trainer::new(cfg.train.clone(), LmObjective::new(&cfg, None).unwrap(), None).unwrap();
    let original = t.objective.model.deep_copy();
    let shared = t.objective.model.clone();
    assert!(!original.params.same_store(&t.objective.model.params));
    assert!(shared.params.same_store(&t.objective.model.params));
    let values = original.params.snapshot();
    t.run().unwrap();
    assert_eq!(original.params.snapshot(), values, "training the trainer's model left the copy alone");
    assert_ne!(shared.params.snapshot(), values, "a clone is another handle on the same weights");
    let trainable =
        |p: &tensor::Params<f32>| p.iter().iter().map(|(n, v)| (n.clone(), v.is_trainable())).collect::<Vec<_>>();
    assert_eq!(trainable(&original.params), trainable(&t.objective.model.params));
    let ids: Vec<usize> = (0..32).map(|i| i % 7).collect();
    assert!(original.forward(&ids, 1, 32).is_ok());
}

/// A checkpoint whose optimizer state does not fit the model (a transposed or wrongly shaped buffer, a lost
/// buffer, state for a parameter the model lacks) is refused on resume with the parameter named, never a panic
/// inside the update or a silent restart from zero moments.
#[test]
fn resuming_with_damaged_optimizer_state_is_an_error_naming_the_parameter() {
    let cfg = lm_config(6, 3, 32);
    let dir = tempfile::tempdir().unwrap();
    let mut t = Trainer::new(cfg.train.clone(), LmObjective::new(&cfg, None).unwrap(), Some(dir.path())).unwrap();
    for _ in 0..3 {
        t.logged_step().unwrap();
    }
    let latest = std::fs::read_to_string(dir.path().join("checkpoints/latest")).unwrap();
    let path = dir.path().join("checkpoints").join(latest.trim()).join("optimizer.safetensors");
    let original = tensor::OptimizerState::<f32>::load(&path).unwrap();
    let name = "layers.0.mlp.fc.weight";
    assert!(original.per_param.contains_key(name));
    let transposed = |st: &mut tensor::OptimizerState<f32>| {
        let m = st.per_param.get_mut(name).unwrap().buffers.get_mut("m").unwrap();
        *m = m.t().to_owned();
    };
    let lost = |st: &mut tensor::OptimizerState<f32>| {
        st.per_param.get_mut(name).unwrap().buffers.remove("v");
    };
    let stranger = |st: &mut tensor::OptimizerState<f32>| {
        let copy = st.per_param[name].clone();
        st.per_param.insert("layers.9.mlp.fc.weight".into(), copy);
    };
    // With the checksums recorded at save time, any rewrite of the file is caught first.
    let mut st = original.clone();
    transposed(&mut st);
    st.save(&path).unwrap();
    let mut resumed = Trainer::new(cfg.train.clone(), LmObjective::new(&cfg, None).unwrap(), Some(dir.path())).unwrap();
    let err = resumed.resume().unwrap_err().to_string();
    assert!(err.contains("SHA-256") && err.contains("optimizer.safetensors"), "{err}");
    // Without them (a checkpoint of an older version, or a writer's bug), the state itself is checked.
    let state_path = path.with_file_name("state.json");
    let mut state: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(&state_path).unwrap()).unwrap();
    state.as_object_mut().unwrap().remove("sha256");
    std::fs::write(&state_path, state.to_string()).unwrap();
    for (damage, expect) in [
        (&transposed as &dyn Fn(&mut tensor::OptimizerState<f32>), "has shape"),
        (&lost, "lacks its `v` buffer"),
        (&stranger, "which the model lacks"),
    ] {
        let mut st = original.clone();
        damage(&mut st);
        st.save(&path).unwrap();
        let mut resumed =
            Trainer::new(cfg.train.clone(), LmObjective::new(&cfg, None).unwrap(), Some(dir.path())).unwrap();
        let err = resumed.resume().unwrap_err().to_string();
        assert!(err.contains(expect) && err.contains("optimizer.safetensors"), "{err}");
    }
    original.save(&path).unwrap();
    let mut resumed = Trainer::new(cfg.train.clone(), LmObjective::new(&cfg, None).unwrap(), Some(dir.path())).unwrap();
    assert!(resumed.resume().unwrap());
}
