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

mod primitives {
    use strata_growth::primitives::{Primitive, Split, generate_set, solve};

    fn kinds() -> Vec<Primitive> {
        let mut k: Vec<Primitive> =
            (0..3).flat_map(|depth| [false, true].map(|code| Primitive::Assignment { depth, code })).collect();
        k.extend([Primitive::Induction, Primitive::Arithmetic]);
        k
    }

    #[test]
    fn generated_answers_agree_with_brute_force_solvers() {
        for split in [Split::Train, Split::Test] {
            for (kind, ex) in generate_set(&kinds(), 200, split, &mut tensor::seeded(7)) {
                assert_eq!(solve(kind, &ex.prompt).as_deref(), Some(ex.answer.as_str()), "{kind:?}: {ex:?}");
            }
        }
        // The solvers do read the prompt: a changed literal changes the answer.
        assert_eq!(
            solve(Primitive::Assignment { depth: 1, code: false }, "a=12, b=a, c=13, b=?").as_deref(),
            Some("12")
        );
        assert_eq!(solve(Primitive::Arithmetic, "40+2=").as_deref(), Some("42"));
        assert_eq!(solve(Primitive::Induction, "ABCDEFBC").as_deref(), Some("D"));
    }

    #[test]
    fn assignment_depth_is_the_number_of_hops() {
        let mut rng = tensor::seeded(1);
        for depth in 0..3 {
            let ex = Primitive::Assignment { depth, code: false }.generate(Split::Train, &mut rng);
            // depth + 1 statements per chain, two chains.
            assert_eq!(ex.prompt.matches('=').count() - 1, 2 * (depth + 1), "{ex:?}");
        }
        let code = Primitive::Assignment { depth: 2, code: true }.generate(Split::Test, &mut rng);
        assert!(code.prompt.contains("print(") && code.prompt.ends_with("# "), "{code:?}");
    }

    #[test]
    fn test_sets_share_no_names_or_values_with_training() {
        let train = generate_set(&kinds(), 300, Split::Train, &mut tensor::seeded(2));
        let test = generate_set(&kinds(), 300, Split::Test, &mut tensor::seeded(3));
        let names = |set: &[(Primitive, strata_growth::primitives::Example)]| -> std::collections::BTreeSet<char> {
            set.iter()
                .flat_map(|(_, e)| e.prompt.chars().filter(|c| c.is_ascii_alphabetic()).collect::<Vec<_>>())
                .collect()
        };
        let numbers = |set: &[(Primitive, strata_growth::primitives::Example)]| -> std::collections::BTreeSet<u32> {
            set.iter()
                .filter(|(k, _)| !matches!(k, Primitive::Arithmetic))
                .flat_map(|(_, e)| {
                    e.prompt.split(|c: char| !c.is_ascii_digit()).filter_map(|n| n.parse().ok()).collect::<Vec<_>>()
                })
                .collect()
        };
        // `print` is the code form's keyword, shared on purpose.
        let shared: Vec<char> =
            names(&train).intersection(&names(&test)).copied().filter(|c| !"print".contains(*c)).collect();
        assert!(shared.is_empty(), "names in both: {shared:?}");
        assert!(numbers(&train).is_disjoint(&numbers(&test)));
        let addends = |set: &[(Primitive, strata_growth::primitives::Example)]| -> Vec<u32> {
            set.iter()
                .filter(|(k, _)| matches!(k, Primitive::Arithmetic))
                .flat_map(|(_, e)| {
                    e.prompt.trim_end_matches('=').split('+').map(|n| n.parse::<u32>().unwrap()).collect::<Vec<_>>()
                })
                .collect()
        };
        assert!(addends(&train).iter().all(|&a| a < 55) && addends(&test).iter().all(|&a| a >= 55));
    }
}

mod isoplot {
    use strata_growth::experiments::midas::{CurvePoint, RunRow, isoplot_gap};
    use strata_growth::primitives::{all_kinds, byte_tokens, mix_into_bytes};

    fn row(points: &[(f64, f64)]) -> RunRow {
        RunRow {
            method: "m".into(),
            operator: None,
            replicate: 0,
            curve: points
                .iter()
                .enumerate()
                .map(|(i, &(l, a))| CurvePoint {
                    step: i as u64,
                    flops: i as f64,
                    val_loss: l,
                    primitive_accuracy: Some(a),
                })
                .collect(),
            final_val_loss: points.last().unwrap().0,
            flops_total: points.len() as u64,
            stage_start_flops: vec![],
        }
    }

    #[test]
    fn accuracy_is_compared_at_the_lowest_loss_both_reach() {
        let base = row(&[(3.0, 0.0), (2.0, 0.2), (1.5, 0.4)]);
        let midas = row(&[(3.0, 0.0), (2.5, 0.3), (1.8, 0.5)]);
        // Matched loss 1.8: the baseline is interpolated between (2.0, 0.2) and (1.5, 0.4): 0.28.
        assert!((isoplot_gap(&base, &midas, 0.05) - (0.5 - 0.28)).abs() < 1e-12);
        // Both at chance: not measured.
        let flat = row(&[(3.0, 0.0), (2.0, 0.01)]);
        assert!(isoplot_gap(&flat, &flat, 0.05).is_nan());
    }

    #[test]
    fn the_mix_has_the_requested_share_of_primitive_tokens() {
        let base: Vec<u32> = byte_tokens(&"the quick brown fox. ".repeat(5000));
        let mixed = mix_into_bytes(&base, &all_kinds(), 0.15, &mut tensor::seeded(0));
        let share = (mixed.len() - base.len()) as f64 / mixed.len() as f64;
        assert!((share - 0.15).abs() < 0.01, "{share}");
        assert!(mixed.iter().all(|&t| t < 256));
    }
}

#[test]
fn an_answer_probe_scores_teacher_forced_exact_match() {
    use strata_growth::train::lm::AnswerProbe;
    // A model trained on one repeated sentence answers a prompt from it exactly.
    let mut cfg = lm(2, 150, 0);
    cfg.model.d_model = 32;
    cfg.model.n_heads = 4;
    let text = "abcdefgh".repeat(2000);
    let corpus = strata_growth::train::lm::TokenizedCorpus {
        train: text.bytes().map(u32::from).collect(),
        valid: text.bytes().map(u32::from).collect(),
        vocab_size: 256,
        decoder: strata_growth::train::lm::TextDecoder::Bytes,
    };
    let mut objective = LmObjective::from_corpus(&cfg, corpus).unwrap();
    let probe = AnswerProbe {
        name: "copy".into(),
        examples: vec![(b"abcdef".map(u32::from).to_vec(), b"gh".map(u32::from).to_vec())],
    };
    let wrong = AnswerProbe {
        name: "wrong".into(),
        examples: vec![(b"abcdef".map(u32::from).to_vec(), b"xy".map(u32::from).to_vec())],
    };
    objective.probes = vec![probe.clone(), wrong];
    let mut t = Trainer::new(cfg.train.clone(), objective, None).unwrap();
    let report = t.run().unwrap();
    assert_eq!(report.final_eval["copy_accuracy"], 1.0, "{:?}", report.final_eval);
    assert_eq!(report.final_eval["wrong_accuracy"], 0.0);
    let too_long = AnswerProbe { name: "long".into(), examples: vec![(vec![97; 16], vec![98])] };
    assert!(too_long.accuracy(&t.objective.model).is_err(), "17 tokens in a 16-token context");
}

mod raptr {
    use super::lm;
    use strata_growth::train::Trainer;
    use strata_growth::train::lm::LmObjective;
    use strata_growth::transformer::flops;
    use strata_growth::{PathSampler, PathScaling, RaptrConfig, RaptrHook, StageLengths};

    fn config(n_layers: usize, path_lengths: Vec<usize>, sampler: PathSampler, fixed: bool) -> RaptrConfig {
        RaptrConfig {
            n_layers,
            path_lengths,
            lengths: StageLengths::PropAlpha { alpha: 0.0 },
            sampler,
            keep_first_last: fixed,
            scaling: PathScaling::InverseKeep,
            seed: 3,
        }
    }

    #[test]
    fn the_full_path_unscaled_is_the_full_model_exactly() {
        let cfg = lm(3, 6, 0);
        let mut plain = Trainer::new(cfg.train.clone(), LmObjective::new(&cfg, None).unwrap(), None).unwrap();
        plain.run().unwrap();
        let mut full = Trainer::new(cfg.train.clone(), LmObjective::new(&cfg, None).unwrap(), None).unwrap();
        let plan = config(3, vec![3], PathSampler::FixedSize, true).plan(6).unwrap();
        assert_eq!(plan.path_at(4), vec![(0, 1.0), (1, 1.0), (2, 1.0)]);
        full.add_hook(Box::new(RaptrHook { plan }));
        full.run().unwrap();
        for (name, var) in plain.objective.model.params.iter() {
            let other = full.objective.model.params.get(&name).unwrap();
            assert_eq!(var.value().as_slice(), other.value().as_slice(), "{name}");
        }
        assert_eq!(plain.flops_run(), full.flops_run());
    }

    /// Chi-square goodness of fit of per-layer keep counts against the keep probabilities (critical value at
    /// p = 0.001 for the degrees of freedom used), fixed layers always kept, fixed-size paths of exact length.
    #[test]
    fn sampled_paths_keep_layers_at_their_probabilities() {
        let draws = 4000u64;
        // 8 layers, path 5: with fixed ends 3 of the 6 middle layers (p = 0.5); without, 5 of 8 (p = 0.625).
        for (sampler, fixed) in [
            (PathSampler::FixedSize, true),
            (PathSampler::FixedSize, false),
            (PathSampler::Bernoulli, true),
            (PathSampler::Bernoulli, false),
        ] {
            let plan = config(8, vec![5, 8], sampler, fixed).plan(2 * draws).unwrap();
            let probs = plan.keep_probabilities(0);
            let mut counts = [0u64; 8];
            for step in 0..draws {
                let path = plan.path_at(step);
                if sampler == PathSampler::FixedSize {
                    assert_eq!(path.len(), 5);
                }
                if fixed {
                    assert!(path.first().unwrap().0 == 0 && path.last().unwrap().0 == 7);
                }
                for (l, scale) in path {
                    counts[l] += 1;
                    assert!((scale - 1.0 / probs[l]).abs() < 1e-12);
                }
            }
            let free: Vec<usize> = (0..8).filter(|&l| probs[l] < 1.0).collect();
            // Each layer's keep count is binomial(draws, p): sum of squared z-scores over the free layers.
            let chi2: f64 = free
                .iter()
                .map(|&l| {
                    let expected = draws as f64 * probs[l];
                    (counts[l] as f64 - expected).powi(2) / (expected * (1.0 - probs[l]))
                })
                .sum();
            // Critical values at p = 0.001: 22.46 (6 dof), 26.12 (8 dof).
            let critical = if free.len() == 6 { 22.46 } else { 26.12 };
            assert!(chi2 < critical, "{sampler:?} fixed {fixed}: chi2 {chi2} counts {counts:?} probs {probs:?}");
            // The last stage runs every layer unscaled.
            assert_eq!(plan.path_at(2 * draws - 1), (0..8).map(|l| (l, 1.0)).collect::<Vec<_>>());
        }
        assert!(config(8, vec![1, 8], PathSampler::FixedSize, true).plan(10).is_err());
        assert!(config(8, vec![6, 5], PathSampler::FixedSize, true).plan(10).is_err());
        assert!(config(8, vec![9], PathSampler::FixedSize, true).plan(10).is_err());
    }

    #[test]
    fn skipped_layers_and_their_moments_are_untouched_and_flops_count_the_layers_run() {
        let cfg = lm(4, 8, 0);
        let mut t = Trainer::new(cfg.train.clone(), LmObjective::new(&cfg, None).unwrap(), None).unwrap();
        for _ in 0..3 {
            t.train_step().unwrap(); // every layer has Adam moments now
        }
        let before_params = t.objective.model.params.deep_copy();
        let before_state = t.optimizer.state().clone();
        t.objective.path = Some(vec![(0, 1.0), (2, 2.0), (3, 1.0)]);
        let flops_before = t.flops_run();
        t.train_step().unwrap();
        let c = t.objective.model.config.clone();
        assert_eq!(t.flops_run() - flops_before, flops::decoder_step(&c, 4, 16, 3).total());
        for (name, var) in t.objective.model.params.iter() {
            let old = before_params.get(&name).unwrap().value();
            let moved = var.value() != old;
            assert_eq!(moved, !name.starts_with("layers.1."), "{name}");
            let (a, b) = (&t.optimizer.state().per_param[&name], &before_state.per_param[&name]);
            if name.starts_with("layers.1.") {
                assert_eq!(a.step, b.step, "{name}: step count");
                assert_eq!(a.buffers, b.buffers, "{name}: moments");
            } else {
                assert_eq!(a.step, b.step + 1, "{name}");
            }
        }
    }
}

mod lag {
    use super::lm;
    use strata_growth::train::Trainer;
    use strata_growth::train::lm::LmObjective;
    use strata_growth::transformer::flops;
    use strata_growth::{
        GrowthConfig, LagConfig, MomentPolicy, Operator, StageLengths, adaptive_stage, grow_candidates, pick,
        run_adaptive,
    };

    fn lag_config(pick_lag: u64) -> LagConfig {
        LagConfig {
            operators: vec![Operator::CopyTop, Operator::CopyMiddle, Operator::Interleave, Operator::FreshTop],
            pick_lag,
            moments: MomentPolicy::Fresh,
            seed: 7,
        }
    }

    fn trained_small(steps_before: u64, total: u64) -> Trainer<LmObjective> {
        let cfg = lm(2, total, 0);
        let mut t = Trainer::new(cfg.train.clone(), LmObjective::new(&cfg, None).unwrap(), None).unwrap();
        for _ in 0..steps_before {
            t.train_step().unwrap();
        }
        t
    }

    #[test]
    fn candidates_share_no_storage_and_the_pick_is_the_lowest_loss_at_the_lag() {
        let run = trained_small(4, 20);
        let before = run.objective.validation_loss().unwrap();
        let cands = grow_candidates(&run, &lag_config(3), 1, 1, 2, &[0, 1, 3]).unwrap();
        assert_eq!(cands.len(), 4);
        for c in &cands {
            assert_eq!(c.trainer.objective.model.n_layers(), 4);
            assert_eq!(c.trainer.step_count(), 7);
            assert_eq!(c.losses.iter().map(|x| x.0).collect::<Vec<_>>(), [0, 1, 3]);
            assert!(!c.trainer.objective.model.params.same_store(&run.objective.model.params));
        }
        // Zeroing one fork's weights touches neither the run nor the other forks.
        cands[0].trainer.objective.model.params.get("layers.0.attn.qkv.weight").unwrap().update(|w| w.fill(0.0));
        assert_eq!(run.objective.validation_loss().unwrap(), before);
        let other = cands[1].trainer.objective.model.params.get("layers.0.attn.qkv.weight").unwrap().value();
        assert!(other.iter().any(|&w| w != 0.0));
        assert_eq!(run.step_count(), 4);
        let best = pick(&cands, 3).unwrap();
        let lowest = cands.iter().map(|c| c.loss_at(3).unwrap()).fold(f64::INFINITY, f64::min);
        assert_eq!(cands[best].loss_at(3).unwrap(), lowest);
        assert!(pick(&cands, 2).is_err(), "no loss recorded at lag 2");
    }

    #[test]
    fn the_adaptive_run_grows_exactly_like_the_picked_fork_and_counts_every_candidate() {
        // Stage at step 4, grown once by copying: the run after adaptive_stage is the picked fork at lag 0.
        let mut run = trained_small(4, 20);
        let forks = grow_candidates(&run, &lag_config(3), 1, 1, 2, &[0, 3]).unwrap();
        let choice = adaptive_stage(&mut run, &lag_config(3), 1, 1, 2).unwrap();
        let best = pick(&forks, 3).unwrap();
        assert_eq!(choice.picked, forks[best].operator);
        assert_eq!(run.objective.validation_loss().unwrap(), forks[best].loss_at(0).unwrap());

        // The whole adaptive run's compute: 2-layer steps, every candidate's lag steps at 4 layers, and the rest.
        let cfg = lm(2, 20, 0);
        let mut t = Trainer::new(cfg.train.clone(), LmObjective::new(&cfg, None).unwrap(), None).unwrap();
        let plan = GrowthConfig {
            stage_layers: vec![2, 4],
            lengths: StageLengths::Starts { starts: vec![6] },
            operator: Operator::CopyTop,
            block: 2,
            moments: MomentPolicy::Fresh,
            seed: 0,
        }
        .plan(20)
        .unwrap();
        let (report, choices) = run_adaptive(&mut t, &plan, &lag_config(3)).unwrap();
        assert_eq!(choices.len(), 1);
        assert_eq!(t.objective.model.n_layers(), 4);
        let c = t.objective.model.config.clone();
        let step = |layers| flops::decoder_step(&c, 4, 16, layers).total();
        let expected = 6 * step(2) + 4 * 3 * step(4) + 14 * step(4);
        assert_eq!(choices[0].selection_flops, 4 * 3 * step(4));
        assert_eq!(report.flops_total, expected);
        assert_eq!(t.flops_run(), expected);
    }
}
