use std::collections::BTreeMap;

use data::text::Labelled;
use proptest::prelude::*;
use strata_grafting::mask::{Mask, Weights, set_weights, weights_under};
use strata_grafting::model::{Evaluation, few_shot};
use strata_grafting::{Error, Relaxation};
use strata_grafting::{data, tensor, train, transformer};
use tensor::ndarray::{Array2, ArrayD, IxDyn};
use tensor::no_grad;
use transformer::{BertConfig, ClassifierHead, Encoder};

fn tiny_bert() -> BertConfig {
    serde_json::from_value(serde_json::json!({
        "vocab_size": 40, "hidden_size": 8, "num_hidden_layers": 2, "num_attention_heads": 2,
        "intermediate_size": 16, "max_position_embeddings": 16, "type_vocab_size": 2,
        "hidden_act": "gelu", "layer_norm_eps": 1e-12, "hidden_dropout_prob": 0.0,
        "attention_probs_dropout_prob": 0.0
    }))
    .unwrap()
}

fn perturbed(w: &Weights, seed: u64, size: f32) -> Weights {
    let mut rng = tensor::seeded(seed);
    w.iter().map(|(n, a)| (n.clone(), a + &tensor::normal::<f32>(a.shape(), 0.0, size as f64, &mut rng))).collect()
}

#[test]
fn the_full_mask_is_the_fine_tuned_model_and_the_empty_mask_the_pretrained_one_exactly() {
    let enc = Encoder::<f32>::new(&tiny_bert(), 1).unwrap();
    let head = ClassifierHead::new(&enc, 2, 1);
    let ids: Vec<usize> = (0..12).map(|i| (i * 7 + 3) % 40).collect();
    let mask = vec![true; 12];
    let outputs = || no_grad(|| head.forward(&enc.forward(&ids, &mask, None, 2, 6, None).unwrap(), &mask).to_vec());
    let pre = weights_under(&enc.params, "encoder.layer");
    let pre_out = outputs();
    let ft = perturbed(&pre, 2, 0.05);
    set_weights(&enc.params, &ft).unwrap();
    let ft_out = outputs();
    assert_ne!(pre_out, ft_out);
    let total: usize = pre.values().map(|w| w.len()).sum();
    let full = Mask::top_delta(&pre, &ft, total).unwrap();
    assert_eq!((full.count(), full.fraction()), (total, 1.0));
    set_weights(&enc.params, &full.graft(&pre, &ft).unwrap()).unwrap();
    assert_eq!(outputs(), ft_out, "gamma = 1 is the fine-tuned model, bit for bit");
    set_weights(&enc.params, &Mask::empty(&pre).graft(&pre, &ft).unwrap()).unwrap();
    assert_eq!(outputs(), pre_out, "gamma = 0 is the pretrained model, bit for bit");
    // The relaxation rounds to its base at the start (b = 10), in both directions.
    let half = Mask::top_delta(&pre, &ft, total / 2).unwrap();
    let relax = Relaxation::new(&half, 10.0, &mut tensor::seeded(3));
    assert_eq!(relax.rounded(), half);
    assert_eq!(relax.rounded_within(total), half);
    // Scores pushed past b add coordinates; the budget keeps the count and prefers the largest gamma.
    let mut pushed = relax.clone();
    let grow: Weights = pushed.scores.iter().map(|(n, s)| (n.clone(), s.mapv(|_| -1.0f32))).collect();
    pushed.step(&grow, 30.0); // every S = U[0,1) + 30: base coordinates drop to ~0, the others rise to ~1
    let flipped = pushed.rounded();
    assert_eq!(flipped.count(), total - half.count());
    let within = pushed.rounded_within(half.count());
    assert_eq!(within.count(), half.count());
    assert_eq!(within.overlap(&flipped), 1.0, "a subset of the rounded mask");
}

/// The relaxation's score gradient (from the model's parameter gradients) against central finite differences
/// of the loss as a function of the scores, computed in f64 with gamma written out independently.
#[test]
fn the_score_gradient_matches_finite_differences_through_a_small_model() {
    let enc = Encoder::<f64>::new(&tiny_bert(), 4).unwrap();
    let head = ClassifierHead::new(&enc, 2, 4);
    let ids: Vec<usize> = (0..12).map(|i| (i * 5 + 1) % 40).collect();
    let mask = vec![true, true, true, true, true, false, true, true, true, true, true, true];
    let loss = || head.forward(&enc.forward(&ids, &mask, None, 2, 6, None).unwrap(), &mask).cross_entropy(&[1, 0]);
    let names: Vec<String> = enc.params.under("encoder.layer").into_iter().map(|(n, _)| n).collect();
    let to32 = |a: &ArrayD<f64>| a.mapv(|x| x as f32);
    let pre: Weights = names.iter().map(|n| (n.clone(), to32(&enc.params.get(n).unwrap().value()))).collect();
    let ft = perturbed(&pre, 5, 0.3);
    let total: usize = pre.values().map(|w| w.len()).sum();
    let base = Mask::top_delta(&pre, &ft, total / 3).unwrap();
    let bias = 1.5f32; // a moderate b keeps sigmoid' large enough for f64 differences to see
    let relax = Relaxation::new(&base, bias, &mut tensor::seeded(6));
    let set64 = |w: &Weights| {
        for (n, a) in w {
            enc.params.get(n).unwrap().set(a.mapv(|x| x as f64));
        }
    };
    // Analytic: dL/dtheta at the relaxed weights, through the chain rule of the relaxation.
    set64(&relax.grafted(&pre, &ft).unwrap());
    let grads = loss().backward();
    let theta_grad: Weights =
        names.iter().map(|n| (n.clone(), to32(grads.get_id(enc.params.get(n).unwrap().id()).unwrap()))).collect();
    let analytic = relax.score_gradient(&theta_grad, &pre, &ft).unwrap();
    // Numeric, in f64: theta(S) = pre + gamma(S) (ft - pre), gamma = base + (1 - 2 base) sigmoid(S - b).
    let dense = base.to_dense();
    let loss_at = |name: &str, i: usize, ds: f64| -> f64 {
        for n in &names {
            let (p, f, b, s) = (&pre[n], &ft[n], &dense[n], &relax.scores[n]);
            let mut theta = ArrayD::<f64>::zeros(p.raw_dim());
            for (j, t) in theta.iter_mut().enumerate() {
                let (p, f, b) =
                    (p.as_slice().unwrap()[j] as f64, f.as_slice().unwrap()[j] as f64, b.as_slice().unwrap()[j] as f64);
                let s = s.as_slice().unwrap()[j] as f64 + if n == name && j == i { ds } else { 0.0 };
                let gamma = b + (1.0 - 2.0 * b) / (1.0 + (-(s - bias as f64)).exp());
                *t = p + gamma * (f - p);
            }
            enc.params.get(n).unwrap().set(theta);
        }
        no_grad(|| loss().item())
    };
    let mut checked = 0;
    for (k, name) in names.iter().enumerate().step_by(3) {
        let len = pre[name].len();
        for i in [0, len / 2, len - 1] {
            let h = 1e-4;
            let numeric = (loss_at(name, i, h) - loss_at(name, i, -h)) / (2.0 * h);
            let a = analytic[name].as_slice().unwrap()[i] as f64;
            assert!(
                (a - numeric).abs() <= 2e-4 * numeric.abs().max(1e-3),
                "{name}[{i}] (#{k}): analytic {a}, numeric {numeric}"
            );
            checked += 1;
        }
    }
    assert!(checked >= 9);
}

#[test]
fn ece_and_accuracy_on_hand_made_predictions() {
    // Confidences 0.9 (right), 0.9 (wrong), 0.6 (right), 0.6 (right): bins (0.8, 0.9] and (0.5, 0.6] each hold
    // half the examples with gaps |0.5 - 0.9| and |1 - 0.6|, so ECE = 0.5 * 0.4 + 0.5 * 0.4 = 0.4.
    let p = Array2::from_shape_vec((4, 2), vec![0.1f32, 0.9, 0.9, 0.1, 0.4, 0.6, 0.6, 0.4]).unwrap();
    let ex = |label| Labelled { text: String::new(), label };
    let e = Evaluation::from_probabilities(&p, &[ex(1), ex(1), ex(1), ex(0)]).unwrap();
    assert_eq!(e.accuracy, 0.75);
    assert!((e.ece - 0.4).abs() < 1e-6, "{}", e.ece);
    assert!((e.mean_confidence - 0.75).abs() < 1e-6);
    assert_eq!(e.bins.iter().map(|b| b.count).sum::<usize>(), 4);
    // A perfectly calibrated set: confidence 1 and always right.
    let sure = Array2::from_shape_vec((2, 2), vec![0.0f32, 1.0, 1.0, 0.0]).unwrap();
    assert_eq!(Evaluation::from_probabilities(&sure, &[ex(1), ex(0)]).unwrap().ece, 0.0);
    // NaN probabilities (a diverged model) and a length mismatch are errors.
    let nan = Array2::from_shape_vec((1, 2), vec![f32::NAN, f32::NAN]).unwrap();
    assert!(Evaluation::from_probabilities(&nan, &[ex(0)]).is_err());
    assert!(Evaluation::from_probabilities(&sure, &[ex(0)]).is_err());
}

fn weights(seed: u64) -> Weights {
    let mut rng = tensor::seeded(seed);
    BTreeMap::from([
        ("encoder.layer.0.w".to_string(), tensor::normal::<f32>(&[3, 5], 0.0, 1.0, &mut rng)),
        ("encoder.layer.1.b".to_string(), tensor::normal::<f32>(&[7], 0.0, 1.0, &mut rng)),
    ])
}

#[test]
fn masks_round_trip_through_safetensors_by_name_and_bad_files_are_errors() {
    let (pre, ft) = (weights(1), weights(2));
    let dir = tempfile::tempdir().unwrap();
    for mask in [
        Mask::top_delta(&pre, &ft, 6).unwrap(),
        Mask::random(&pre, 9, &mut tensor::seeded(3)).unwrap(),
        Mask::empty(&pre),
    ] {
        let path = dir.path().join("mask.safetensors");
        mask.save(&path).unwrap();
        assert_eq!(Mask::load(&path).unwrap(), mask);
    }
    // Not a mask file, and a truncated one.
    let params = tensor::Params::<f32>::new();
    params.insert("w", ArrayD::zeros(IxDyn(&[2]))).unwrap();
    let other = dir.path().join("weights.safetensors");
    params.save(&other, None).unwrap();
    assert!(matches!(Mask::load(&other), Err(Error::File { .. })));
    let path = dir.path().join("mask.safetensors");
    Mask::top_delta(&pre, &ft, 6).unwrap().save(&path).unwrap();
    let bytes = std::fs::read(&path).unwrap();
    std::fs::write(&path, &bytes[..bytes.len() - 3]).unwrap();
    assert!(Mask::load(&path).is_err());
    // A mask naming a parameter the model lacks cannot graft.
    let mut stray = Mask::top_delta(&pre, &ft, 2).unwrap();
    stray.regions.insert("nope".into(), (vec![2], vec![0]));
    assert!(stray.graft(&pre, &ft).is_err());
}

proptest! {
    #[test]
    fn top_delta_masks_hold_the_largest_deltas_and_random_masks_the_asked_count(k in 0usize..=22, seed in 0u64..50) {
        let (pre, ft) = (weights(seed), weights(seed + 100));
        let top = Mask::top_delta(&pre, &ft, k).unwrap();
        prop_assert_eq!(top.count(), k);
        let mut deltas: Vec<f32> = pre.iter().flat_map(|(n, p)| p.iter().zip(ft[n].iter()).map(|(a, b)| (b - a).abs()).collect::<Vec<_>>()).collect();
        deltas.sort_by(|a, b| b.total_cmp(a));
        let mut chosen: Vec<f32> = top.regions.iter().flat_map(|(n, (_, idx))| idx.iter().map(|&i| (ft[n].as_slice().unwrap()[i] - pre[n].as_slice().unwrap()[i]).abs()).collect::<Vec<_>>()).collect();
        chosen.sort_by(|a, b| b.total_cmp(a));
        prop_assert_eq!(&chosen[..], &deltas[..k]);
        let random = Mask::random(&pre, k, &mut tensor::seeded(seed)).unwrap();
        prop_assert_eq!(random.count(), k);
        prop_assert!(random.regions.values().all(|(_, idx)| idx.windows(2).all(|w| w[0] < w[1])));
        // Overlap of a mask with itself is 1; with the empty mask's complement logic: |top & empty| / |empty| = 1.
        prop_assert_eq!(top.overlap(&top), 1.0);
        prop_assert!(Mask::top_delta(&pre, &ft, 23).is_err());
    }
}

#[test]
fn few_shot_sets_are_balanced_seeded_and_respect_the_word_minimum() {
    let pool: Vec<Labelled> =
        (0..200).map(|i| Labelled { text: "w ".repeat(1 + i % 9).trim().to_string(), label: (i % 2) as u32 }).collect();
    let a = few_shot(&pool, 2, 5, 4, 42).unwrap();
    assert_eq!(a.len(), 10);
    assert_eq!(a.iter().filter(|e| e.label == 1).count(), 5);
    assert!(a.iter().all(|e| e.text.split_whitespace().count() >= 4));
    assert_eq!(a, few_shot(&pool, 2, 5, 4, 42).unwrap());
    assert_ne!(a, few_shot(&pool, 2, 5, 4, 13).unwrap());
    assert!(few_shot(&pool, 2, 500, 4, 42).is_err());
}

#[test]
fn few_shot_fine_tuning_of_minilm_moves_only_the_layers_and_fits_the_training_set() {
    use strata_grafting::model::{Classifier, FinetuneObjective, PromptHead};
    let Some(root) = data::testing::shared_data("few_shot_fine_tuning_of_minilm", &["all-MiniLM-L6-v2"]) else {
        return;
    };
    let dir = data::resolve("all-MiniLM-L6-v2", Some(&root)).unwrap();
    let encoder = Encoder::<f32>::from_pretrained(&dir).unwrap();
    let tokenizer = data::hf::HfTokenizer::from_file(&dir.join("tokenizer.json")).unwrap();
    let descriptions = vec!["It was terrible.".to_string(), "It was great.".to_string()];
    let head = PromptHead::new(&encoder, &tokenizer, &descriptions, 20.0).unwrap();
    let model = Classifier { encoder, tokenizer, head, max_len: 32 };
    let train: Vec<Labelled> = [
        ("a dull , lifeless and boring film", 0),
        ("the plot is a mess and the acting is worse", 0),
        ("a warm , funny and moving story", 1),
        ("one of the best films of the year", 1),
    ]
    .into_iter()
    .map(|(t, l)| Labelled { text: t.into(), label: l })
    .collect();
    let before = model.evaluate(&train, 4).unwrap();
    let embeddings = weights_under(&model.encoder.params, "embeddings");
    let layers = weights_under(&model.encoder.params, "encoder.layer");
    let loss_of = |m: &Classifier| no_grad(|| m.loss(&train.iter().collect::<Vec<_>>()).unwrap().item());
    let start_loss = loss_of(&model);
    model.encoder.params.set_trainable("embeddings", false);
    let config = train::TrainConfig {
        steps: 6,
        optimizer: tensor::optim::SgdConfig { lr: 1e-2, ..Default::default() }.into(),
        schedule: tensor::Schedule::Constant,
        grad_clip: None,
        eval_interval: 0,
        checkpoint_interval: 0,
        log_interval: 6,
        seed: 0,
        progress: false,
    };
    let objective = FinetuneObjective::new(model.clone(), train.clone(), 2, 0, 0.0).unwrap();
    train::Trainer::new(config, objective, None).unwrap().run().unwrap();
    assert!(loss_of(&model) < start_loss, "{} -> {}", start_loss, loss_of(&model));
    assert_eq!(weights_under(&model.encoder.params, "embeddings"), embeddings, "embeddings stay frozen");
    assert_ne!(weights_under(&model.encoder.params, "encoder.layer"), layers);
    assert!(before.accuracy >= 0.5, "the pretrained cosine head classifies these: {}", before.accuracy);

    // Two tasks on one encoder: one batch of each per step; the data position is one entry per task.
    use strata_grafting::model::MultitaskObjective;
    use train::Objective;
    let subj_head =
        PromptHead::new(&model.encoder, &model.tokenizer, &["It is a fact.".into(), "It is an opinion.".into()], 20.0)
            .unwrap();
    let subj = Classifier { head: subj_head, ..model.clone() };
    let a = FinetuneObjective::new(model.clone(), train.clone(), 2, 1, 0.0).unwrap();
    let b = FinetuneObjective::new(subj, train.clone(), 2, 2, 0.0).unwrap();
    let mut multi = MultitaskObjective::new(vec![("sst2".into(), a), ("subj".into(), b)]).unwrap();
    let loss = multi.train_loss(0, &mut tensor::seeded(0)).unwrap();
    assert!(loss.item().is_finite());
    let state = multi.data_state();
    assert_eq!(state, serde_json::json!([{"drawn": 1}, {"drawn": 1}]));
    assert!(multi.restore_data_state(&serde_json::json!([{"drawn": 3}])).is_err());
    multi.restore_data_state(&serde_json::json!([{"drawn": 3}, {"drawn": 4}])).unwrap();
    // A classifier on another encoder cannot join.
    let other = Classifier { encoder: model.encoder.deep_copy(), ..model.clone() };
    let c = FinetuneObjective::new(model.clone(), train.clone(), 2, 1, 0.0).unwrap();
    let d = FinetuneObjective::new(other, train, 2, 1, 0.0).unwrap();
    assert!(MultitaskObjective::new(vec![("a".into(), c), ("b".into(), d)]).is_err());
}

#[test]
fn a_linear_probe_is_the_optimum_of_l2_regularised_logistic_regression_and_bad_inputs_are_errors() {
    use strata_grafting::model::PromptHead;
    let (n, hidden, classes, l2) = (12, 5, 3, 0.1);
    let mut x: Array2<f32> =
        tensor::normal::<f32>(&[n, hidden], 0.0, 1.0, &mut tensor::seeded(3)).into_dimensionality().unwrap();
    for mut row in x.rows_mut() {
        let norm = row.dot(&row).sqrt();
        row.mapv_inplace(|v| v / norm);
    }
    let labels: Vec<usize> = (0..n).map(|i| i % classes).collect();
    let probe = PromptHead::linear_probe(&x, &labels, classes, l2, 4000).unwrap();
    // The objective, written out independently: mean cross-entropy + l2/2 ||W||^2 (bias not penalised).
    let objective = |w: &[f64], b: &[f64]| -> f64 {
        let mut total = 0.0;
        for (i, &label) in labels.iter().enumerate() {
            let logits: Vec<f64> = (0..classes)
                .map(|c| (0..hidden).map(|j| w[c * hidden + j] * x[[i, j]] as f64).sum::<f64>() + b[c])
                .collect();
            let m = logits.iter().cloned().fold(f64::MIN, f64::max);
            let lse = m + logits.iter().map(|v| (v - m).exp()).sum::<f64>().ln();
            total += lse - logits[label];
        }
        total / n as f64 + 0.5 * l2 * w.iter().map(|v| v * v).sum::<f64>()
    };
    let w: Vec<f64> = probe.class_weights.iter().map(|&v| v as f64).collect();
    let b: Vec<f64> = probe.bias.iter().map(|&v| v as f64).collect();
    let at = objective(&w, &b);
    let h = 1e-4;
    for k in 0..w.len() + b.len() {
        let (mut wp, mut bp, mut wm, mut bm) = (w.clone(), b.clone(), w.clone(), b.clone());
        if k < w.len() {
            wp[k] += h;
            wm[k] -= h;
        } else {
            bp[k - w.len()] += h;
            bm[k - w.len()] -= h;
        }
        let slope = (objective(&wp, &bp) - objective(&wm, &bm)) / (2.0 * h);
        assert!(slope.abs() < 1e-3, "coordinate {k}: the objective's slope is {slope} at the probe");
        assert!(objective(&wp, &bp) >= at - 1e-9 && objective(&wm, &bm) >= at - 1e-9);
    }
    assert_eq!(probe.classes(), classes);
    assert!(PromptHead::linear_probe(&x, &labels[..3], classes, l2, 10).is_err(), "labels per row");
    assert!(PromptHead::linear_probe(&x, &vec![5; n], classes, l2, 10).is_err(), "label out of range");
    assert!(PromptHead::linear_probe(&x, &labels, classes, -1.0, 10).is_err(), "negative l2");
    let mut nan = x.clone();
    nan[[0, 0]] = f32::NAN;
    assert!(PromptHead::linear_probe(&nan, &labels, classes, l2, 10).is_err(), "non-finite features");
}
