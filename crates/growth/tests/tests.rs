//! Growth operators, schedules, FLOP accounting and resuming a grown run.

use strata_growth::train::lm::{Corpus, LmConfig, LmObjective};
use strata_growth::train::{TrainConfig, Trainer};
use strata_growth::transformer::{Decoder, DecoderConfig, flops};
use strata_growth::{
    GrowthConfig, GrowthHook, MomentPolicy, Operator, StageLengths, flops_to_reach, grow, prop_alpha_layer_fraction,
    prop_alpha_lengths,
};
use tensor::optim::AdamConfig;
use tensor::{OptimizerState, Schedule};

fn lm(layers: usize, steps: u64, checkpoint_interval: u64) -> LmConfig {
    LmConfig {
        model: DecoderConfig {
            vocab_size: 0,
            context: 16,
            d_model: 16,
            n_layers: layers,
            n_heads: 2,
            ..DecoderConfig::default()
        },
        model_seed: 4,
        corpus: Corpus::Synthetic { tokens: 6_000, vocab: 12, seed: 1 },
        batch: 4,
        sampling: strata_growth::data::batch::WindowSampling::Shuffled,
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

fn growth(operator: Operator, stage_layers: Vec<usize>, block: usize) -> GrowthConfig {
    GrowthConfig {
        stage_layers,
        lengths: StageLengths::PropAlpha { alpha: 1.0 },
        operator,
        block,
        moments: MomentPolicy::Fresh,
        seed: 9,
    }
}

/// A model trained a few steps, with Adam state for every parameter.
fn trained(layers: usize) -> (Decoder<f32>, OptimizerState<f32>) {
    let cfg = lm(layers, 3, 0);
    let mut t = Trainer::new(cfg.train.clone(), LmObjective::new(&cfg, None).unwrap(), None).unwrap();
    t.run().unwrap();
    (t.objective.model.clone(), t.optimizer.state().clone())
}

fn layer_values(model: &Decoder<f32>, layer: usize) -> Vec<(String, Vec<f32>)> {
    model
        .params
        .under(&Decoder::<f32>::layer_prefix(layer))
        .into_iter()
        .map(|(n, v)| {
            (n.split_once('.').unwrap().1.split_once('.').unwrap().1.to_string(), v.value().iter().copied().collect())
        })
        .collect()
}

fn moment(state: &OptimizerState<f32>, layer: usize) -> Option<Vec<f32>> {
    state.get(&format!("layers.{layer}.mlp.fc.weight")).map(|s| s.buffers["m"].iter().copied().collect())
}

#[test]
fn each_operator_puts_copies_where_it_says_and_moves_the_moments_with_their_layers() {
    // 4 layers, block 2. Expected final order (by original index; c = copy of, f = fresh):
    let expected: [(Operator, [&str; 6]); 6] = [
        (Operator::CopyTop, ["0", "1", "2", "3", "c2", "c3"]),
        (Operator::CopyMiddle, ["0", "1", "2", "c1", "c2", "3"]),
        (Operator::CopyBottom, ["0", "1", "c0", "c1", "2", "3"]),
        (Operator::Interleave, ["0", "1", "2", "c2", "3", "c3"]),
        (Operator::FreshTop, ["0", "1", "2", "3", "f", "f"]),
        (Operator::FreshMiddle, ["0", "1", "2", "f", "f", "3"]),
    ];
    let (base, base_state) = trained(4);
    for (op, order) in expected {
        let mut model = base.deep_copy();
        let mut state = base_state.clone();
        let event = grow(&mut model, &mut state, op, 2, MomentPolicy::Fresh, 1).unwrap();
        assert_eq!((event.from_layers, event.to_layers, model.n_layers()), (4, 6, 6), "{op:?}");
        assert_eq!(model.params.len(), base.params.len() + 2 * (base.params.under("layers.0").len()), "{op:?}");
        let new: Vec<usize> =
            order.iter().enumerate().filter(|(_, o)| o.starts_with(['c', 'f'])).map(|(i, _)| i).collect();
        assert_eq!(event.new_layers, new, "{op:?}");
        for (i, o) in order.iter().enumerate() {
            if let Some(src) = o.strip_prefix('c') {
                let src: usize = src.parse().unwrap();
                assert_eq!(layer_values(&model, i), layer_values(&base, src), "{op:?}: layer {i} copies {src}");
                assert_eq!(moment(&state, i), None, "{op:?}: a new layer starts with fresh moments");
            } else if *o == "f" {
                assert_ne!(layer_values(&model, i), layer_values(&base, 3), "{op:?}: fresh");
                assert_eq!(moment(&state, i), None);
            } else {
                let src: usize = o.parse().unwrap();
                assert_eq!(layer_values(&model, i), layer_values(&base, src), "{op:?}: layer {i} is old {src}");
                assert_eq!(moment(&state, i), moment(&base_state, src), "{op:?}: layer {i} keeps {src}'s moments");
            }
        }
        // Every parameter's state is under a name the grown model has.
        assert!(state.per_param.keys().all(|n| model.params.contains(n)), "{op:?}");
    }
    // Copied moments are a choice.
    let mut model = base.deep_copy();
    let mut state = base_state.clone();
    grow(&mut model, &mut state, Operator::CopyMiddle, 2, MomentPolicy::Copy, 1).unwrap();
    assert_eq!(moment(&state, 3), moment(&base_state, 1));
    assert!(
        grow(&mut model, &mut state, Operator::CopyTop, 7, MomentPolicy::Fresh, 1).is_err(),
        "block larger than the model"
    );
}

#[test]
fn a_copied_block_with_zeroed_residual_outputs_leaves_the_function_unchanged() {
    let (base, _) = trained(4);
    let ids: Vec<usize> = (0..32).map(|i| (i * 5 + 3) % 12).collect();
    let before = base.forward(&ids, 2, 16).unwrap().to_vec();
    for op in Operator::ALL {
        let mut model = base.deep_copy();
        let event = grow(&mut model, &mut OptimizerState::default(), op, 2, MomentPolicy::Fresh, 3).unwrap();
        for &l in &event.new_layers {
            for name in ["attn.proj.weight", "attn.proj.bias", "mlp.proj.weight", "mlp.proj.bias"] {
                if let Some(v) = model.params.get(&format!("layers.{l}.{name}")) {
                    v.set(v.value().mapv(|_| 0.0));
                }
            }
        }
        let after = model.forward(&ids, 2, 16).unwrap().to_vec();
        let worst = before.iter().zip(&after).map(|(a, b)| (a - b).abs()).fold(0.0f32, f32::max);
        assert!(worst < 1e-5, "{op:?}: {worst}");
    }
}

#[test]
fn prop_alpha_stages_sum_to_the_total() {
    assert_eq!(prop_alpha_lengths(3, 1.0, 12), [2, 4, 6]);
    assert_eq!(prop_alpha_lengths(3, 0.0, 10).iter().sum::<u64>(), 10);
    for (k, alpha, total) in [(4, 1.0, 1600), (6, 1.0, 1001), (3, 2.0, 7), (5, 0.5, 999)] {
        let l = prop_alpha_lengths(k, alpha, total);
        assert_eq!(l.iter().sum::<u64>(), total, "{k} {alpha} {total}");
        assert!(l.windows(2).all(|w| alpha == 0.0 || w[1] >= w[0]), "{l:?}");
    }
    // P4: Prop-1 with k stages costs (2k + 1) / (3k) of the full model's layer FLOPs (0.72 at k = 6).
    for k in 1..8 {
        assert!((prop_alpha_layer_fraction(k, 1.0) - (2 * k + 1) as f64 / (3 * k) as f64).abs() < 1e-12);
    }
    let plan = growth(Operator::CopyTop, vec![2, 4, 6], 2).plan(600).unwrap();
    assert_eq!(plan.starts, [0, 100, 300]);
    assert_eq!((plan.layers_at(99), plan.layers_at(100), plan.layers_at(599)), (2, 4, 6));
    assert!(growth(Operator::CopyTop, vec![2, 3], 2).plan(100).is_err(), "3 - 2 is not a multiple of the block");
    assert!(growth(Operator::CopyTop, vec![2, 4, 6], 2).plan(2).is_err(), "too few steps for three stages");
}

#[test]
fn the_flops_of_a_grown_run_are_the_sum_over_its_stages() {
    let cfg = lm(1, 12, 0);
    let plan = growth(Operator::CopyMiddle, vec![1, 2, 3], 1).plan(12).unwrap();
    assert_eq!(plan.starts, [0, 2, 6]);
    let mut t = Trainer::new(cfg.train.clone(), LmObjective::new(&cfg, None).unwrap(), None).unwrap();
    t.add_hook(Box::new(GrowthHook::new(plan)));
    t.run().unwrap();
    let model = t.objective.model.config.clone();
    let f = |layers: usize| flops::decoder_step(&model, 4, 16, layers).total();
    assert_eq!(t.flops_run(), 2 * f(1) + 4 * f(2) + 6 * f(3));
    assert_eq!(t.objective.model.n_layers(), 3);
}

#[test]
fn flops_to_reach_interpolates_and_says_when_never() {
    let curve = [(0.0, 4.0), (10.0, 3.0), (20.0, 2.0), (30.0, 1.5)];
    assert_eq!(flops_to_reach(&curve, 2.5), Some(15.0));
    assert_eq!(flops_to_reach(&curve, 2.0), Some(20.0));
    assert_eq!(flops_to_reach(&curve, 5.0), Some(0.0));
    assert_eq!(flops_to_reach(&curve, 1.0), None);
}

/// A grown run checkpointed mid-stage and at a stage boundary, then resumed in a fresh trainer whose model
/// starts small again, ends with the weights and optimizer state of the uninterrupted run, bit for bit.
#[test]
fn a_grown_run_resumes_bit_exactly() {
    let steps = 24;
    let cfg = lm(1, steps, 0);
    let plan = growth(Operator::CopyMiddle, vec![1, 2, 3], 1).plan(steps).unwrap();
    assert_eq!(plan.starts, [0, 4, 12]);
    let straight = {
        let mut t = Trainer::new(cfg.train.clone(), LmObjective::new(&cfg, None).unwrap(), None).unwrap();
        t.add_hook(Box::new(GrowthHook::new(plan.clone())));
        t.run().unwrap();
        (t.objective.model.params.snapshot(), t.optimizer.state().per_param.clone(), t.flops_run())
    };
    for stop in [7, 12, 4] {
        let dir = tempfile::tempdir().unwrap();
        let with_checkpoints =
            LmConfig { train: TrainConfig { checkpoint_interval: 1000, ..cfg.train.clone() }, ..cfg.clone() };
        let mut a =
            Trainer::new(with_checkpoints.train.clone(), LmObjective::new(&cfg, None).unwrap(), Some(dir.path()))
                .unwrap();
        a.add_hook(Box::new(GrowthHook::new(plan.clone())));
        for _ in 0..stop {
            a.train_step().unwrap();
        }
        a.save_checkpoint().unwrap();
        drop(a);
        let mut b =
            Trainer::new(with_checkpoints.train.clone(), LmObjective::new(&cfg, None).unwrap(), Some(dir.path()))
                .unwrap();
        assert!(strata_growth::resume(&mut b, &plan).unwrap());
        assert_eq!(b.step_count(), stop);
        b.add_hook(Box::new(GrowthHook::new(plan.clone())));
        b.run().unwrap();
        assert_eq!(b.objective.model.params.snapshot(), straight.0, "stopped at {stop}");
        assert_eq!(b.optimizer.state().per_param, straight.1, "stopped at {stop}");
        assert_eq!(b.flops_run(), straight.2, "stopped at {stop}");
    }
}
