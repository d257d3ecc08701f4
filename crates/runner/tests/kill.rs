//! The binaries under a real SIGKILL: a killed `strata-train` run and a killed `strata-datamodels` worker each
//! resume to exactly the files an uninterrupted run writes.

use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

use tensor::Schedule;
use tensor::optim::AdamConfig;
use train::TrainConfig;
use train::lm::{Corpus, LmConfig};
use transformer::{DecoderConfig, Positions};

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
        train: TrainConfig {
            steps,
            optimizer: AdamConfig { decay_matrices_only: true, ..AdamConfig::adamw(3e-3, 0.1) }.into(),
            schedule: Schedule::WarmupCosine { warmup: 5, total: steps, min_factor: 0.1 },
            grad_clip: Some(1.0),
            eval_interval: 10,
            checkpoint_interval,
            log_interval: 1,
            seed: 5,
            progress: false,
        },
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

fn files(dir: &Path) -> Vec<Vec<u8>> {
    ["masks.npy", "margins.npy", "done.npy"].iter().map(|f| std::fs::read(dir.join(f)).unwrap()).collect()
}

/// Runs `strata-train` once cleanly and once killed with SIGKILL after a checkpoint at step >= `kill_after`,
/// then resumed; the final weights must be identical byte for byte, and so must the logged losses.
fn kill_and_resume(cfg: &LmConfig, growth: Option<&growth::GrowthConfig>, kill_after: u64) {
    let bin = env!("CARGO_BIN_EXE_strata-train");
    let work = tempfile::tempdir().unwrap();
    let cfg_path = work.path().join("lm.json");
    std::fs::write(&cfg_path, serde_json::to_string_pretty(cfg).unwrap()).unwrap();
    let growth_path = work.path().join("growth.json");
    if let Some(g) = growth {
        std::fs::write(&growth_path, serde_json::to_string_pretty(g).unwrap()).unwrap();
    }
    let run = |out: &Path, resume: bool| {
        let mut c = Command::new(bin);
        c.arg("--config").arg(&cfg_path).arg("--out").arg(out);
        if growth.is_some() {
            c.arg("--growth").arg(&growth_path);
        }
        if resume {
            c.arg("--resume");
        }
        c
    };
    let clean = work.path().join("clean");
    let out = run(&clean, false).output().unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));

    let killed = work.path().join("killed");
    let mut child = run(&killed, false).spawn().unwrap();
    let latest = killed.join("checkpoints").join("latest");
    let step_of = |name: &str| name.trim().trim_start_matches("step-").parse::<u64>().unwrap_or(0);
    let deadline = Instant::now() + Duration::from_secs(300);
    while std::fs::read_to_string(&latest).map_or(true, |n| step_of(&n) < kill_after) {
        assert!(Instant::now() < deadline, "no checkpoint at step {kill_after} appeared");
        assert!(child.try_wait().unwrap().is_none(), "the run ended before it could be killed");
        std::thread::sleep(Duration::from_millis(2));
    }
    child.kill().unwrap(); // SIGKILL
    child.wait().unwrap();
    assert!(!killed.join("model.safetensors").exists(), "the run finished before the kill");
    let at = std::fs::read_to_string(&latest).unwrap();
    assert_ne!(step_of(&at), cfg.train.steps, "killed after the last checkpoint");

    let out = run(&killed, true).output().unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    assert!(String::from_utf8_lossy(&out.stderr).contains("resumed at step"));
    let a = std::fs::read(clean.join("model.safetensors")).unwrap();
    let b = std::fs::read(killed.join("model.safetensors")).unwrap();
    assert!(a == b, "final weights differ after kill + resume");
    assert_eq!(read_metric_losses(&clean), read_metric_losses(&killed), "logged losses differ");
}

/// Kills a real `strata-train` process mid-run, resumes it, and compares the final weights byte for byte.
#[test]
fn resume_after_a_real_kill_gives_the_same_final_weights() {
    kill_and_resume(&lm_config(300, 20, 64), None, 0);
}

/// The same for a run that grows (1 -> 2 -> 3 layers, MIDAS, Prop-1 stages starting at steps 40 and 120), killed
/// after its first growth: the resumed process replays the plan to the checkpoint's depth.
#[test]
fn a_grown_run_killed_mid_run_resumes_to_the_same_final_weights() {
    let mut cfg = lm_config(240, 20, 32);
    cfg.model.n_layers = 1;
    let growth = growth::GrowthConfig {
        stage_layers: vec![1, 2, 3],
        lengths: growth::StageLengths::PropAlpha { alpha: 1.0 },
        operator: growth::Operator::CopyMiddle,
        block: 1,
        moments: growth::MomentPolicy::Fresh,
        seed: 7,
    };
    assert_eq!(growth.plan(240).unwrap().starts, [0, 40, 120]);
    kill_and_resume(&cfg, Some(&growth), 60);
}

/// A real worker process killed with SIGKILL mid-run, then restarted, ends with the same files as a clean run.
#[test]
fn killed_worker_process_resumes_to_identical_files() {
    let test = "killed_worker_process_resumes_to_identical_files";
    let Some(data) = data::testing::shared_data(test, &["mnist"]) else { return };
    let bin = env!("CARGO_BIN_EXE_strata-datamodels");
    let tmp = tempfile::tempdir().unwrap();
    let args = |store: &Path| {
        let mut c = Command::new(bin);
        c.args(["run", "--models", "400", "--pool", "30", "--outputs", "3", "--seed", "4", "--store"])
            .arg(store)
            .arg("--data")
            .arg(&data)
            .env("RAYON_NUM_THREADS", "2");
        c
    };
    let clean = tmp.path().join("clean");
    assert!(args(&clean).status().unwrap().success());
    let killed = tmp.path().join("killed");
    let mut child = args(&killed).spawn().unwrap();
    // Kill once some rows are done (or the worker finished first: then the resume has nothing to do).
    let started = std::time::Instant::now();
    loop {
        let done =
            std::fs::read(killed.join("done.npy")).map(|b| b.iter().rev().take(400).filter(|&&x| x == 1).count());
        if done.is_ok_and(|d| d >= 40) || started.elapsed().as_secs() > 60 {
            break;
        }
        if child.try_wait().unwrap().is_some() {
            break;
        }
        std::thread::sleep(std::time::Duration::from_millis(5));
    }
    let _ = child.kill();
    child.wait().unwrap();
    assert!(args(&killed).status().unwrap().success());
    assert_eq!(files(&killed), files(&clean));
}

/// Run hygiene of `strata-train`: a used output folder, a resume with another config, a corrupt or edited
/// checkpoint, and a folder another process holds are each refused with an error that says what is wrong.
#[test]
fn strata_train_refuses_unsafe_resumes_and_shared_folders() {
    let bin = env!("CARGO_BIN_EXE_strata-train");
    let work = tempfile::tempdir().unwrap();
    let write_cfg = |name: &str, cfg: &LmConfig| {
        let p = work.path().join(name);
        std::fs::write(&p, serde_json::to_string_pretty(cfg).unwrap()).unwrap();
        p
    };
    let cfg = lm_config(20, 10, 16);
    let cfg_path = write_cfg("lm.json", &cfg);
    let out = work.path().join("run");
    let train = |cfg: &Path, extra: &[&str]| {
        Command::new(bin).arg("--config").arg(cfg).arg("--out").arg(&out).args(extra).output().unwrap()
    };
    let err = |o: &std::process::Output| String::from_utf8_lossy(&o.stderr).into_owned();
    let first = train(&cfg_path, &[]);
    assert!(first.status.success(), "{}", err(&first));
    assert!(!out.join(".lock").exists(), "the lock is released at exit");

    // A fresh run into a used folder: refused, then allowed with --overwrite.
    let again = train(&cfg_path, &[]);
    assert!(!again.status.success() && err(&again).contains("--overwrite"), "{}", err(&again));
    assert!(train(&cfg_path, &["--overwrite"]).status.success());

    // Resuming with another batch size or context (outside the `train` section): refused, naming the fields.
    let mut other = cfg.clone();
    other.batch = 4;
    other.model.context = 16;
    let o = train(&write_cfg("other.json", &other), &["--resume"]);
    assert!(!o.status.success(), "a resume with another config was accepted");
    assert!(err(&o).contains("batch") && err(&o).contains("model.context"), "{}", err(&o));

    // A flipped byte in the checkpoint's model file: refused by its SHA-256.
    let latest = std::fs::read_to_string(out.join("checkpoints/latest")).unwrap();
    let ckpt = out.join("checkpoints").join(latest.trim());
    let model = ckpt.join("model.safetensors");
    let mut bytes = std::fs::read(&model).unwrap();
    let n = bytes.len();
    bytes[n - 3] ^= 0x10;
    std::fs::write(&model, &bytes).unwrap();
    let o = train(&cfg_path, &["--resume"]);
    assert!(!o.status.success() && err(&o).contains("SHA-256"), "{}", err(&o));
    bytes[n - 3] ^= 0x10;
    std::fs::write(&model, &bytes).unwrap();

    // A hand-edited state beyond the run's end: refused (not "done" without training).
    let state_path = ckpt.join("state.json");
    let state = std::fs::read_to_string(&state_path).unwrap();
    let mut v: serde_json::Value = serde_json::from_str(&state).unwrap();
    v["step"] = 500.into();
    std::fs::write(&state_path, v.to_string()).unwrap();
    let o = train(&cfg_path, &["--resume"]);
    assert!(!o.status.success() && err(&o).contains("beyond"), "{}", err(&o));
    std::fs::write(&state_path, state).unwrap();
    let o = train(&cfg_path, &["--resume"]);
    assert!(o.status.success(), "the restored checkpoint resumes: {}", err(&o));

    // A folder held by a live process (this test's own pid) is refused; a stale lock is taken over.
    std::fs::write(out.join(".lock"), std::process::id().to_string()).unwrap();
    let o = train(&cfg_path, &["--resume"]);
    assert!(!o.status.success() && err(&o).contains("another process"), "{}", err(&o));
    std::fs::write(out.join(".lock"), "999999999").unwrap();
    let o = train(&cfg_path, &["--resume"]);
    assert!(o.status.success(), "{}", err(&o));
}

/// A Slurm-style job array of four `strata-datamodels run --shard auto` processes (one killed with SIGKILL
/// mid-range and rerun), merged, equals a single-process run byte for byte: no row lost or written twice.
#[test]
fn a_job_array_with_a_killed_task_merges_to_the_single_process_store() {
    let test = "a_job_array_with_a_killed_task_merges_to_the_single_process_store";
    let Some(data) = data::testing::shared_data(test, &["mnist"]) else { return };
    let bin = env!("CARGO_BIN_EXE_strata-datamodels");
    let tmp = tempfile::tempdir().unwrap();
    let worker = |store: &Path, task: Option<usize>| {
        let mut c = Command::new(bin);
        c.args(["run", "--models", "1200", "--pool", "30", "--outputs", "3", "--seed", "6", "--store"])
            .arg(store)
            .arg("--data")
            .arg(&data)
            .env("RAYON_NUM_THREADS", "1")
            .env_remove("SLURM_ARRAY_TASK_MIN");
        if let Some(k) = task {
            c.args(["--shard", "auto"]).env("SLURM_ARRAY_TASK_ID", k.to_string()).env("SLURM_ARRAY_TASK_COUNT", "4");
        }
        c
    };
    let whole = tmp.path().join("whole");
    assert!(worker(&whole, None).status().unwrap().success());

    let array = tmp.path().join("array");
    let mut killed = worker(&array, Some(1)).spawn().unwrap();
    let others: Vec<_> = [0, 2, 3].iter().map(|&k| worker(&array, Some(k)).spawn().unwrap()).collect();
    // Kill task 1 once its store exists (mid-range: it has 300 rows, two blocks), or as soon as it can be.
    let started = Instant::now();
    while !array.join("shard-1-of-4").join("meta.json").exists() && started.elapsed() < Duration::from_secs(60) {
        if killed.try_wait().unwrap().is_some() {
            break;
        }
        std::thread::sleep(Duration::from_millis(2));
    }
    let _ = killed.kill();
    killed.wait().unwrap();
    for mut o in others {
        assert!(o.wait().unwrap().success());
    }
    assert!(worker(&array, Some(1)).status().unwrap().success(), "the rerun of the killed task");
    let merged = tmp.path().join("merged");
    let mut merge = Command::new(bin);
    merge.args(["merge", "--into"]).arg(&merged);
    for k in 0..4 {
        merge.arg(array.join(format!("shard-{k}-of-4")));
    }
    let out = merge.output().unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    assert!(String::from_utf8_lossy(&out.stderr).contains("copied 1200 rows"));
    assert_eq!(files(&merged), files(&whole), "the merged array differs from the single-process run");
}

/// `strata-train export`: a trained run's weights as a HuggingFace GPT-2 folder that reads back to the same
/// decoder; a rotary model is refused, naming the feature.
#[test]
fn strata_train_exports_a_run_as_hf_gpt2() {
    let bin = env!("CARGO_BIN_EXE_strata-train");
    let work = tempfile::tempdir().unwrap();
    let mut cfg = lm_config(4, 0, 16);
    cfg.model.positions = Positions::Learned;
    let cfg_path = work.path().join("lm.json");
    std::fs::write(&cfg_path, serde_json::to_string(&cfg).unwrap()).unwrap();
    let run = work.path().join("run");
    let out = Command::new(bin).arg("--config").arg(&cfg_path).arg("--out").arg(&run).output().unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let hf = work.path().join("hf");
    let export = |weights: &Path| {
        Command::new(bin)
            .args(["export", "--format", "hf-gpt2", "--weights"])
            .arg(weights)
            .arg("--out")
            .arg(&hf)
            .output()
            .unwrap()
    };
    let out = export(&run.join("model.safetensors"));
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let back = transformer::gpt2::import_hf_gpt2(&hf).unwrap();
    let ours = transformer::Decoder::<f32>::load(&run.join("model.safetensors")).unwrap();
    let ids: Vec<usize> = (0..8).map(|i| i % 20).collect();
    let a = ours.forward(&ids, 1, 8).unwrap().value().clone();
    let b = back.forward(&ids, 1, 8).unwrap().value().clone();
    assert!(a.iter().zip(b.iter()).all(|(x, y)| (x - y).abs() < 1e-5));
    // A rotary model cannot be GPT-2.
    let rotary = work.path().join("rotary.safetensors");
    let rotary_cfg = DecoderConfig { vocab_size: 24, ..lm_config(4, 0, 16).model };
    transformer::Decoder::<f32>::new(&rotary_cfg, 0).unwrap().save(&rotary).unwrap();
    let out = export(&rotary);
    assert!(!out.status.success() && String::from_utf8_lossy(&out.stderr).contains("rotary"));
}
