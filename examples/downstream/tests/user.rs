//! A user's first hour, as plain code against the public surfaces: grow a decoder, train it with the shared
//! trainer, compare candidates with rank statistics.

use strata_report::stats::{bootstrap, spearman};
use strata_train::lm::{Corpus, LmConfig, LmObjective};
use strata_train::tensor::Schedule;
use strata_train::tensor::optim::AdamConfig;
use strata_train::transformer::DecoderConfig;
use strata_train::{TrainConfig, Trainer};

fn config(steps: u64) -> LmConfig {
    LmConfig {
        model: DecoderConfig {
            vocab_size: 0,
            context: 16,
            d_model: 32,
            n_layers: 2,
            n_heads: 4,
            ..DecoderConfig::default()
        },
        model_seed: 0,
        corpus: Corpus::Synthetic { tokens: 5_000, vocab: 16, seed: 1 },
        batch: 4,
        sampling: strata_train::data::batch::WindowSampling::Shuffled,
        data_seed: 2,
        eval_batches: 2,
        train: TrainConfig {
            steps,
            optimizer: AdamConfig::adamw(3e-3, 0.0).into(),
            schedule: Schedule::Constant,
            grad_clip: Some(1.0),
            eval_interval: 0,
            checkpoint_interval: 0,
            log_interval: 5,
            seed: 3,
            progress: false,
        },
    }
}

#[test]
fn grow_candidates_from_one_trained_model_and_rank_them() {
    let cfg = config(10);
    let mut base = Trainer::new(cfg.train.clone(), LmObjective::new(&cfg, None).unwrap(), None).unwrap();
    base.run().unwrap();
    let mut early = Vec::new();
    let mut late = Vec::new();
    for (from, at) in [(0, 1), (1, 2), (0, 0), (1, 1)] {
        let mut objective = LmObjective::new(&cfg, None).unwrap();
        objective.model = base.objective.model.deep_copy();
        objective.model.insert_layer_copy(from, at).unwrap();
        let mut t = Trainer::new(TrainConfig { steps: 6, ..cfg.train.clone() }, objective, None).unwrap();
        early.push(t.train_step().unwrap().loss);
        late.push(t.run().unwrap().final_eval["val_loss"]);
    }
    assert_eq!(base.objective.model.n_layers(), 2, "candidates are copies");
    let rho = spearman(&early, &late).unwrap_or(f64::NAN);
    assert!(rho.is_nan() || (-1.0..=1.0).contains(&rho));
    let ci = bootstrap(late.len(), 200, 0.9, 0, |idx| idx.iter().map(|&i| late[i]).sum::<f64>() / idx.len() as f64);
    assert!(ci.unwrap().estimate.is_finite());
}
