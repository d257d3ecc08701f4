use std::collections::BTreeMap;
use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

use strata_train::lm::{Corpus, LmConfig, LmObjective};
use strata_train::{Error, Hook, Objective, Result, StepRecord, TrainConfig, Trainer};
use tensor::optim::{Adam, AdamConfig};
use tensor::{Params, Rng, Schedule, Tensor};
use transformer::{DecoderConfig, Positions};

fn train_config(steps: u64, checkpoint_interval: u64) -> TrainConfig {
    TrainConfig {
        steps,
        optimizer: AdamConfig { decay_matrices_only: true, ..AdamConfig::adamw(3e-3, 0.1) },
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

fn read_metric_losses(dir: &Path) -> Vec<(u64, f64)> {
    std::fs::read_to_string(dir.join("metrics.jsonl"))
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str::<serde_json::Value>(l).unwrap())
        .filter(|v| v["kind"] == "train")
        .map(|v| (v["step"].as_u64().unwrap(), v["loss"].as_f64().unwrap()))
        .collect()
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
    b.run().unwrap();
    assert_eq!(b.objective.model.params.snapshot(), straight.objective.model.params.snapshot());

    // A checkpoint from another config is refused.
    let other = LmConfig { train: TrainConfig { seed: 99, ..cfg.train.clone() }, ..cfg.clone() };
    let mut c = Trainer::new(other.train.clone(), LmObjective::new(&other, None).unwrap(), Some(dir.path())).unwrap();
    assert!(c.resume().unwrap_err().to_string().contains("another training config"));
}

/// Kills a real `strata-train` process mid-run, resumes it, and compares the final weights byte for byte.
#[test]
fn resume_after_a_real_kill_gives_the_same_final_weights() {
    let bin = env!("CARGO_BIN_EXE_strata-train");
    let work = tempfile::tempdir().unwrap();
    let cfg = lm_config(300, 20, 64);
    let cfg_path = work.path().join("lm.json");
    std::fs::write(&cfg_path, serde_json::to_string_pretty(&cfg).unwrap()).unwrap();
    let run = |out: &Path, resume: bool| {
        let mut c = Command::new(bin);
        c.arg("--config").arg(&cfg_path).arg("--out").arg(out);
        if resume {
            c.arg("--resume");
        }
        c
    };
    let clean = work.path().join("clean");
    assert!(run(&clean, false).status().unwrap().success());

    let killed = work.path().join("killed");
    let mut child = run(&killed, false).spawn().unwrap();
    let latest = killed.join("checkpoints").join("latest");
    let deadline = Instant::now() + Duration::from_secs(120);
    while !latest.exists() {
        assert!(Instant::now() < deadline, "no checkpoint appeared");
        assert!(child.try_wait().unwrap().is_none(), "the run ended before it could be killed");
        std::thread::sleep(Duration::from_millis(2));
    }
    child.kill().unwrap(); // SIGKILL
    child.wait().unwrap();
    assert!(!killed.join("model.safetensors").exists(), "the run finished before the kill");
    let at = std::fs::read_to_string(&latest).unwrap();
    assert_ne!(at.trim(), "step-00000300", "killed after the last checkpoint");

    let out = run(&killed, true).output().unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    assert!(String::from_utf8_lossy(&out.stderr).contains("resumed at step"));
    let a = std::fs::read(clean.join("model.safetensors")).unwrap();
    let b = std::fs::read(killed.join("model.safetensors")).unwrap();
    assert!(a == b, "final weights differ after kill + resume");
    assert_eq!(read_metric_losses(&clean), read_metric_losses(&killed), "logged losses differ");
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
        TrainConfig { optimizer: AdamConfig::adamw(f64::NAN, 0.0), ..ok.clone() },
        TrainConfig { optimizer: AdamConfig { beta2: 1.0, ..AdamConfig::adam(1e-3) }, ..ok.clone() },
        TrainConfig { grad_clip: Some(0.0), ..ok.clone() },
        TrainConfig { log_interval: 0, ..ok.clone() },
    ] {
        assert!(bad.validate().is_err(), "{bad:?}");
    }
    let mut json = serde_json::to_value(lm_config(5, 0, 32)).unwrap();
    json["train"]["stepz"] = serde_json::json!(3);
    assert!(serde_json::from_value::<LmConfig>(json).is_err(), "unknown fields are rejected");
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
    fn before_step(&mut self, step: u64, objective: &mut LmObjective, optimizer: &mut Adam<f32>) -> Result<()> {
        if step == self.step {
            let top = objective.model.n_layers() - 1;
            objective.model.insert_layer_copy(top, top + 1)?;
            // The new layer's optimizer state starts fresh; the others keep theirs.
            use tensor::optim::Optimizer;
            optimizer.state_mut().reset_prefix(&transformer::Decoder::<f32>::layer_prefix(top + 1));
        }
        Ok(())
    }
    fn after_step(&mut self, record: &StepRecord, _: &mut LmObjective, _: &mut Adam<f32>) -> Result<()> {
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
    t.objective.layers = Some(vec![0, 2]);
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
