//! SALT: the mixed loss and its gradient, the phase switch, teacher FLOPs, SALT_DS scores and selection,
//! bit-exact equivalence with the plain run at weight 0, and resuming a distillation run.

use proptest::prelude::*;
use strata_salt::data::batch::WindowSampling;
use strata_salt::tensor::gradcheck;
use strata_salt::tensor::optim::AdamConfig;
use strata_salt::tensor::{Schedule, Tensor};
use strata_salt::train::lm::{Corpus, LmConfig, LmObjective};
use strata_salt::train::{Hook, Objective, Optimizer, StepRecord, TrainConfig, Trainer};
use strata_salt::transformer::{Decoder, DecoderConfig, flops};
use strata_salt::{
    DistillConfig, KdSchedule, SaltObjective, SelectionConfig, mixed_loss, select, select_top, sequence_score,
    token_losses,
};

fn student_lm(steps: u64, checkpoint_interval: u64) -> LmConfig {
    LmConfig {
        model: DecoderConfig {
            vocab_size: 0,
            context: 16,
            d_model: 16,
            n_layers: 2,
            n_heads: 2,
            ..DecoderConfig::default()
        },
        model_seed: 4,
        corpus: Corpus::Synthetic { tokens: 6_000, vocab: 12, seed: 1 },
        batch: 4,
        sampling: WindowSampling::Random,
        data_seed: 2,
        eval_batches: 2,
        train: TrainConfig {
            steps,
            optimizer: AdamConfig::adamw(3e-3, 0.1).into(),
            schedule: Schedule::WarmupCosine { warmup: 2, total: steps, min_factor: 0.1 },
            grad_clip: Some(1.0),
            eval_interval: 0,
            checkpoint_interval,
            log_interval: 1,
            seed: 5,
            progress: false,
        },
    }
}

fn teacher() -> Decoder<f32> {
    let cfg =
        DecoderConfig { vocab_size: 12, context: 16, d_model: 8, n_layers: 1, n_heads: 1, ..DecoderConfig::default() };
    Decoder::new(&cfg, 11).unwrap()
}

fn salt(lm: &LmConfig, schedule: KdSchedule) -> SaltObjective {
    let distill = DistillConfig { schedule, temperature: 2.0 };
    SaltObjective::new(LmObjective::new(lm, None).unwrap(), teacher(), distill).unwrap()
}

fn flat(t: &Tensor<f64>) -> Vec<f64> {
    t.value().iter().copied().collect()
}

/// The mixed loss computed independently, row by row in f64.
fn mixed_reference(logits: &[f64], teacher: &[f64], targets: &[usize], vocab: usize, w: f64, tau: f64) -> f64 {
    let log_softmax = |row: &[f64], scale: f64| {
        let z: Vec<f64> = row.iter().map(|v| v / scale).collect();
        let m = z.iter().copied().fold(f64::NEG_INFINITY, f64::max);
        let lse = m + z.iter().map(|v| (v - m).exp()).sum::<f64>().ln();
        z.iter().map(|v| v - lse).collect::<Vec<_>>()
    };
    let rows = targets.len();
    let mut total = 0.0;
    for r in 0..rows {
        let s = &logits[r * vocab..(r + 1) * vocab];
        let t = &teacher[r * vocab..(r + 1) * vocab];
        let ce = -log_softmax(s, 1.0)[targets[r]];
        let (ls, lt) = (log_softmax(s, tau), log_softmax(t, tau));
        let kd: f64 = -lt.iter().zip(&ls).map(|(a, b)| a.exp() * b).sum::<f64>() * tau * tau;
        total += (1.0 - w) * ce + w * kd;
    }
    total / rows as f64
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(24))]

    /// Value against an independent computation, gradient against central differences (f64); the teacher's
    /// logits get no gradient.
    #[test]
    fn mixed_loss_value_and_gradient(
        rows in 1usize..4, vocab in 2usize..6, w in 0.0f64..=1.0, tau in 0.5f64..3.0, seed in 0u64..1000,
    ) {
        let mut rng = strata_salt::tensor::seeded(seed);
        let logits = strata_salt::tensor::normal::<f64>(&[rows, vocab], 0.0, 1.5, &mut rng);
        let teacher = strata_salt::tensor::normal::<f64>(&[rows, vocab], 0.0, 1.5, &mut rng);
        let targets: Vec<usize> = (0..rows).map(|r| (r * 7 + seed as usize) % vocab).collect();
        let t = Tensor::new(teacher.clone());
        let value = mixed_loss(&Tensor::new(logits.clone()), &targets, &t, w, tau).item();
        let expected = mixed_reference(
            logits.as_slice().unwrap(), teacher.as_slice().unwrap(), &targets, vocab, w, tau,
        );
        prop_assert!((value - expected).abs() < 1e-10 * expected.abs().max(1.0), "{value} vs {expected}");
        let check = gradcheck::check(std::slice::from_ref(&logits), 1e-5, |x| mixed_loss(&x[0], &targets, &t, w, tau));
        prop_assert!(check.max_error < gradcheck::TOLERANCE, "{check:?}");
        let student = Tensor::leaf(logits);
        let teacher_leaf = Tensor::leaf(teacher);
        let grads = mixed_loss(&student, &targets, &teacher_leaf, w, tau).backward();
        let teacher_grad = grads.get(&teacher_leaf).map(|g| g.iter().map(|v| v.abs()).sum::<f64>()).unwrap_or(0.0);
        prop_assert_eq!(teacher_grad, 0.0);
    }
}

#[test]
fn weight_zero_is_plain_cross_entropy_and_one_is_pure_distillation() {
    let logits = Tensor::from_vec(vec![0.3, -1.0, 2.0, 0.5, 0.1, -0.4], &[2, 3]);
    let teacher = Tensor::from_vec(vec![1.0, 0.0, -1.0, 0.2, 0.2, 0.9], &[2, 3]);
    let ce = logits.cross_entropy(&[2, 0]);
    assert_eq!(flat(&mixed_loss(&logits, &[2, 0], &teacher, 0.0, 2.0)), flat(&ce));
    let kd = logits.distillation_loss(&teacher, 2.0);
    assert_eq!(flat(&mixed_loss(&logits, &[2, 0], &teacher, 1.0, 2.0)), flat(&kd));
}

#[test]
fn schedules_switch_at_their_steps_and_bad_configs_are_errors() {
    let step = KdSchedule::Step { weight: 0.6, until: 3 };
    assert_eq!((0..5).map(|s| step.weight(s)).collect::<Vec<_>>(), [0.6, 0.6, 0.6, 0.0, 0.0]);
    assert_eq!(step.kd_steps(10), 3);
    let linear = KdSchedule::Linear { weight: 0.8, from: 2, until: 6 };
    let w: Vec<f64> = (0..8).map(|s| linear.weight(s)).collect();
    assert_eq!(w, [0.8, 0.8, 0.8, 0.6000000000000001, 0.4, 0.2, 0.0, 0.0]);
    assert_eq!(KdSchedule::Constant { weight: 0.5 }.kd_steps(7), 7);
    assert_eq!(KdSchedule::Off.kd_steps(7), 0);
    assert!(KdSchedule::Step { weight: 1.5, until: 2 }.validate().is_err());
    assert!(KdSchedule::Linear { weight: 0.5, from: 4, until: 4 }.validate().is_err());
    assert!(DistillConfig { schedule: KdSchedule::Off, temperature: 0.0 }.validate().is_err());
    assert!(DistillConfig { schedule: KdSchedule::Off, temperature: f64::NAN }.validate().is_err());
    // A teacher with another vocabulary is refused.
    let lm = student_lm(2, 0);
    let other = Decoder::new(&DecoderConfig { vocab_size: 13, ..teacher().config.clone() }, 0).unwrap();
    let distill = DistillConfig { schedule: KdSchedule::Off, temperature: 1.0 };
    let err = SaltObjective::new(LmObjective::new(&lm, None).unwrap(), other, distill).unwrap_err();
    assert!(err.to_string().contains("vocabulary 13"), "{err}");
}

#[test]
fn at_weight_zero_a_run_equals_the_plain_run_bit_for_bit() {
    let lm = student_lm(6, 0);
    let mut plain = Trainer::new(lm.train.clone(), LmObjective::new(&lm, None).unwrap(), None).unwrap();
    plain.run().unwrap();
    for schedule in [KdSchedule::Off, KdSchedule::Step { weight: 0.0, until: 6 }] {
        let mut run = Trainer::new(lm.train.clone(), salt(&lm, schedule), None).unwrap();
        run.run().unwrap();
        for (name, var) in plain.objective.model.params.iter() {
            let other = run.objective.student.model.params.get(&name).unwrap();
            assert_eq!(var.value().as_slice(), other.value().as_slice(), "{name} with {schedule:?}");
        }
        assert_eq!(run.flops_run(), plain.flops_run());
        assert_eq!(run.objective.teacher_flops(), 0);
    }
    // A positive weight changes the weights.
    let mut kd = Trainer::new(lm.train.clone(), salt(&lm, KdSchedule::Constant { weight: 0.5 }), None).unwrap();
    kd.run().unwrap();
    let changed = plain.objective.model.params.iter().into_iter().filter(|(name, var)| {
        var.value().as_slice() != kd.objective.student.model.params.get(name).unwrap().value().as_slice()
    });
    assert!(changed.count() > 0);
}

/// Records each step's FLOPs and the batchers' positions after it.
struct Recorder(std::rc::Rc<std::cell::RefCell<Vec<(u64, u64, u64, u64)>>>);

impl Hook<SaltObjective> for Recorder {
    fn after_step(
        &mut self,
        r: &StepRecord,
        o: &mut SaltObjective,
        _: &mut dyn Optimizer<f32>,
    ) -> strata_salt::train::Result<()> {
        let selected = o.selected.as_ref().map_or(0, |b| b.state().batches_drawn);
        self.0.borrow_mut().push((r.flops, o.teacher_flops(), o.student.train.state().batches_drawn, selected));
        Ok(())
    }
}

#[test]
fn the_phase_switch_happens_at_the_configured_step_with_teacher_flops_and_selected_batches() {
    let lm = student_lm(6, 0);
    let objective = salt(&lm, KdSchedule::Step { weight: 0.5, until: 3 });
    let starts = vec![0, 160, 320, 480];
    let batcher = objective.student.train.select_windows(starts.clone(), WindowSampling::Random, 8).unwrap();
    let objective = objective.with_selection(batcher).unwrap();
    let mut trainer = Trainer::new(lm.train.clone(), objective, None).unwrap();
    let log = std::rc::Rc::new(std::cell::RefCell::new(Vec::new()));
    trainer.add_hook(Box::new(Recorder(log.clone())));
    trainer.run().unwrap();
    let cfg = trainer.objective.student.model.config.clone();
    let student_step = flops::decoder_step(&cfg, 4, 16, 2).total();
    let teacher_forward = flops::decoder_forward(&teacher().config, 4, 16, 1);
    let log = log.borrow();
    for (i, &(step_flops, teacher_total, drawn, selected)) in log.iter().enumerate() {
        let kd = i < 3;
        assert_eq!(step_flops, student_step + if kd { teacher_forward } else { 0 }, "step {i}");
        assert_eq!(teacher_total, teacher_forward * (i as u64 + 1).min(3), "step {i}");
        assert_eq!((drawn, selected), (i.saturating_sub(2) as u64, (i as u64 + 1).min(3)), "step {i}");
    }
    assert_eq!(trainer.flops_run(), 6 * student_step + 3 * teacher_forward);
}

#[test]
fn scores_on_a_hand_made_example() {
    // Vocabulary 4; top-2. Row 0: target 0 is the top logit; row 1: target 3 is third (not learnable);
    // row 2: target 1 ties for second (learnable).
    let logits = [3.0f32, 1.0, 0.0, 0.0, /**/ 2.0, 1.0, 0.5, 0.0, /**/ 1.0, 0.0, 0.0, -1.0];
    let t = token_losses(&logits, 4, &[0, 3, 1], 2);
    let nll = |row: &[f32], target: usize| {
        let z: f64 = row.iter().map(|&v| (v as f64).exp()).sum();
        z.ln() - row[target] as f64
    };
    assert!((t[0].0 - nll(&logits[0..4], 0)).abs() < 1e-12 && t[0].1);
    assert!(!t[1].1);
    assert!((t[2].0 - nll(&logits[8..12], 1)).abs() < 1e-12 && t[2].1);
    // Median over the learnable tokens: rows 0 and 2 (even count: the mean of the two).
    let median = sequence_score(&t).unwrap();
    assert!((median - (t[0].0 + t[2].0) / 2.0).abs() < 1e-12);
    assert_eq!(sequence_score(&[(2.0, false)]), None);
    assert_eq!(sequence_score(&[(1.0, true), (5.0, true), (2.0, true)]), Some(2.0));
}

#[test]
fn the_selected_subset_is_the_top_fraction() {
    let scores = [Some(0.5), None, Some(2.0), Some(1.0), Some(2.0), Some(0.1), None, Some(0.7)];
    assert_eq!(select_top(&scores, 0.25), vec![2, 4]);
    assert_eq!(select_top(&scores, 0.5), vec![2, 4, 3, 7]);
    assert_eq!(select_top(&scores, 1.0), vec![2, 4, 3, 7, 0, 5]);
    // Through the teacher on a real pool.
    let lm = student_lm(2, 0);
    let objective = LmObjective::new(&lm, None).unwrap();
    let cfg = SelectionConfig { top_k: 3, keep_fraction: 0.3, pool_windows: 40, score_batch: 7 };
    let s = select(&teacher(), &objective.train, &cfg, 3).unwrap();
    assert_eq!(s.pool.len(), 40);
    assert_eq!(s.selected.len(), 12);
    assert!(s.pool.windows(2).all(|w| w[0] < w[1] && w[1] - w[0] >= 16));
    let score_of = |start: usize| s.scores[s.pool.iter().position(|&p| p == start).unwrap()];
    let threshold = s.selected.iter().map(|&p| score_of(p).unwrap()).fold(f64::INFINITY, f64::min);
    for (p, score) in s.pool.iter().zip(&s.scores) {
        if !s.selected.contains(p) {
            assert!(score.is_none_or(|v| v <= threshold), "unselected window {p} scores {score:?} > {threshold}");
        }
    }
    assert_eq!(s.flops, 40 * flops::decoder_forward(&teacher().config, 1, 16, 1));
    assert!(select(&teacher(), &objective.train, &SelectionConfig { keep_fraction: 0.0, ..cfg }, 3).is_err());
}

#[test]
fn a_killed_distillation_run_resumes_bit_for_bit() {
    let lm = student_lm(8, 2);
    let make = || {
        let objective = salt(&lm, KdSchedule::Step { weight: 0.5, until: 5 });
        let batcher =
            objective.student.train.select_windows(vec![16, 64, 256, 512, 1024], WindowSampling::Shuffled, 1).unwrap();
        objective.with_selection(batcher).unwrap()
    };
    let whole = tempfile::tempdir().unwrap();
    let mut reference = Trainer::new(lm.train.clone(), make(), Some(whole.path())).unwrap();
    reference.run().unwrap();
    let dir = tempfile::tempdir().unwrap();
    {
        let mut first = Trainer::new(lm.train.clone(), make(), Some(dir.path())).unwrap();
        for _ in 0..3 {
            first.logged_step().unwrap(); // checkpoint at step 2, inside the distillation phase
        }
    }
    let mut resumed = Trainer::new(lm.train.clone(), make(), Some(dir.path())).unwrap();
    assert!(resumed.resume().unwrap());
    assert_eq!(resumed.step_count(), 2);
    resumed.run().unwrap();
    for (name, var) in reference.objective.params().iter() {
        let other = resumed.objective.params().get(&name).unwrap();
        assert_eq!(var.value().as_slice(), other.value().as_slice(), "{name}");
    }
    assert_eq!(resumed.flops_run(), reference.flops_run());
    // A plain run's checkpoint does not resume a run with a selection.
    let mut plain = Trainer::new(lm.train.clone(), salt(&lm, KdSchedule::Off), Some(dir.path())).unwrap();
    assert!(plain.resume().is_err());
}
