use std::path::PathBuf;

use proptest::prelude::*;
use strata_transformer::{
    BertConfig, ClassifierHead, Decoder, DecoderConfig, Encoder, MlmHead, Positions, Sampling, flops,
};
use tensor::{Tensor, gradcheck, no_grad, seeded};

fn shared_data(test: &str, datasets: &[&str]) -> Option<PathBuf> {
    data::testing::shared_data(test, datasets)
}

fn tiny(positions: Positions, bias: bool, tied: bool) -> DecoderConfig {
    DecoderConfig {
        vocab_size: 11,
        context: 12,
        d_model: 8,
        n_layers: 2,
        n_heads: 2,
        d_ff: 12,
        positions,
        tie_embeddings: tied,
        bias,
        init_std: 0.3,
        ..DecoderConfig::default()
    }
}

fn ids(n: usize, vocab: usize, seed: u64) -> Vec<usize> {
    tensor::uniform::<f64>(&[n], 0.0, vocab as f64, &mut seeded(seed))
        .iter()
        .map(|&u| (u as usize).min(vocab - 1))
        .collect()
}

fn tiny_bert() -> BertConfig {
    BertConfig {
        vocab_size: 13,
        hidden_size: 8,
        num_hidden_layers: 2,
        num_attention_heads: 2,
        intermediate_size: 12,
        hidden_act: "gelu".into(),
        max_position_embeddings: 10,
        type_vocab_size: 2,
        layer_norm_eps: 1e-12,
        hidden_dropout_prob: 0.0,
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(12))]

    /// A position's logits do not change when later tokens change.
    #[test]
    fn decoder_is_causal(seed in 0u64..1000, cut in 1usize..11, rotary in any::<bool>()) {
        let c = tiny(if rotary { Positions::Rotary } else { Positions::Learned }, true, true);
        let m = Decoder::<f64>::new(&c, seed).unwrap();
        let a = ids(24, c.vocab_size, seed);
        let mut b = a.clone();
        for row in 0..2 {
            for j in cut..12 {
                b[row * 12 + j] = (b[row * 12 + j] + 1 + j % (c.vocab_size - 1)) % c.vocab_size;
            }
        }
        let la = no_grad(|| m.forward(&a, 2, 12)).unwrap();
        let lb = no_grad(|| m.forward(&b, 2, 12)).unwrap();
        let v = c.vocab_size;
        for row in 0..2 {
            for j in 0..12 {
                let off = (row * 12 + j) * v;
                let same = la.value().as_slice().unwrap()[off..off + v] == lb.value().as_slice().unwrap()[off..off + v];
                prop_assert_eq!(same, j < cut, "row {} position {} (cut {})", row, j, cut);
            }
        }
    }

    /// Gradients of whole decoders (every block parameter, embeddings, head) against central differences.
    #[test]
    fn decoder_gradients_match_finite_differences(seed in 0u64..1000, rotary in any::<bool>(), bias in any::<bool>(), tied in any::<bool>()) {
        let c = tiny(if rotary { Positions::Rotary } else { Positions::Learned }, bias, tied);
        let c = DecoderConfig { context: 5, ..c };
        let m = Decoder::<f64>::new(&c, seed).unwrap();
        let x = ids(10, c.vocab_size, seed + 1);
        let y = ids(10, c.vocab_size, seed + 2);
        let (worst, name) = gradcheck::check_params(&m.params, 1e-5, 24, || m.loss(&x, &y, 2, 5, None).unwrap());
        prop_assert!(worst.max_error < 1e-6, "{name}: {worst:?}");
    }
}

#[test]
fn classifier_heads_under_different_prefixes_do_not_share_parameters() {
    let c = tiny_bert();
    let enc = Encoder::<f64>::new(&c, 3).unwrap();
    let before = enc.params.names().len();
    let a = ClassifierHead::with_prefix(&enc, "heads.sst2", 2, 1);
    let b = ClassifierHead::with_prefix(&enc, "heads.trec", 6, 1);
    let names = enc.params.names();
    assert_eq!(names.len(), before + 4);
    for n in ["heads.sst2.weight", "heads.sst2.bias", "heads.trec.weight", "heads.trec.bias"] {
        assert!(names.iter().any(|m| m == n), "{n} in {names:?}");
    }
    // Changing one head's weights leaves the other's outputs alone.
    let x = ids(12, c.vocab_size, 5);
    let mask = vec![true; 12];
    let h = no_grad(|| enc.forward(&x, &mask, None, 2, 6, None).unwrap());
    let before_b = b.forward(&h, &mask).to_vec();
    a.out.weight.update(|w| w.mapv_inplace(|v| v + 1.0));
    assert_eq!(b.forward(&h, &mask).to_vec(), before_b);
    assert_eq!((a.prefix.as_str(), ClassifierHead::new(&enc, 2, 0).prefix.as_str()), ("heads.sst2", "classifier"));
}

#[test]
fn encoder_and_heads_gradients_match_finite_differences() {
    let c = tiny_bert();
    let enc = Encoder::<f64>::new(&c, 3).unwrap();
    let mlm = MlmHead::new(&enc, 3);
    let cls = ClassifierHead::new(&enc, 3, 3);
    let x = ids(12, c.vocab_size, 5);
    let mask = vec![true, true, true, true, true, false, true, true, true, true, true, true];
    let labels: Vec<Option<usize>> = (0..12).map(|i| (i % 3 == 0).then_some(i % c.vocab_size)).collect();
    let loss = || {
        let h = enc.forward(&x, &mask, None, 2, 6, None).unwrap();
        let l1 = mlm.loss(&enc, &h, &labels).unwrap();
        let l2 = cls.forward(&h, &mask).cross_entropy(&[0, 2]);
        &l1 + &l2
    };
    let (worst, name) = gradcheck::check_params(&enc.params, 1e-5, 16, loss);
    assert!(worst.max_error < 1e-6, "{name}: {worst:?}");
}

#[test]
fn padding_does_not_change_real_token_states() {
    let c = tiny_bert();
    let enc = Encoder::<f64>::new(&c, 1).unwrap();
    let short = [1usize, 4, 5, 2];
    let padded = [1usize, 4, 5, 2, 0, 0, 7];
    let a = no_grad(|| enc.forward(&short, &[true; 4], None, 1, 4, None)).unwrap();
    let mask = [true, true, true, true, false, false, false];
    let b = no_grad(|| enc.forward(&padded, &mask, None, 1, 7, None)).unwrap();
    let b4 = b.narrow(1, 0, 4);
    let diff = a.value().iter().zip(b4.value().iter()).map(|(x, y)| (x - y).abs()).fold(0.0, f64::max);
    assert!(diff < 1e-12, "padding leaked into real tokens: {diff}");
}

#[test]
fn kv_cache_generation_equals_full_recomputation() {
    for positions in [Positions::Learned, Positions::Rotary] {
        let c = tiny(positions, true, false);
        let m = Decoder::<f32>::new(&c, 9).unwrap();
        let prompt = [1usize, 5, 3];
        for sampling in [Sampling::Greedy, Sampling::Temperature { temperature: 1.5, top_k: Some(5) }] {
            // 3 + 20 tokens crosses the context of 12: the tail exercises the cropped recomputation.
            let cached = m.generate(&prompt, 20, sampling, &mut seeded(4)).unwrap();
            let full = m.generate_uncached(&prompt, 20, sampling, &mut seeded(4)).unwrap();
            assert_eq!(cached, full, "{positions:?} {sampling:?}");
            assert_eq!(cached.len(), 23);
        }
        // Cached logits match the last row of a full forward pass.
        let seq = ids(9, c.vocab_size, 2);
        let mut cache = Default::default();
        m.forward_cached(&seq[..5], 1, 5, &mut cache).unwrap();
        let mut last = None;
        for j in 5..9 {
            last = Some(m.forward_cached(&seq[j..j + 1], 1, 1, &mut cache).unwrap());
        }
        let full = no_grad(|| m.forward(&seq, 1, 9)).unwrap();
        let v = c.vocab_size;
        let reference = &full.value().as_slice().unwrap()[8 * v..9 * v];
        let cached = last.unwrap().to_vec();
        let diff = reference.iter().zip(&cached).map(|(a, b)| (a - b).abs()).fold(0.0f32, f32::max);
        assert!(diff < 1e-5, "{positions:?}: cached logits differ by {diff}");
        assert!(m.forward_cached(&seq[..9], 1, 9, &mut cache).is_err(), "9 + 9 exceeds the context");
    }
}

#[test]
fn layers_can_be_run_in_any_order_copied_and_removed() {
    let c = DecoderConfig { n_layers: 3, ..tiny(Positions::Learned, true, true) };
    let mut m = Decoder::<f64>::new(&c, 2).unwrap();
    let x = ids(12, c.vocab_size, 1);
    let reference = no_grad(|| m.forward_layers(&x, 1, 12, &[0, 1, 1, 2], None)).unwrap();
    let renames = m.insert_layer_copy(1, 2).unwrap();
    assert_eq!(renames, vec![("layers.2".to_string(), "layers.3".to_string())]);
    assert_eq!(m.n_layers(), 4);
    assert!(m.params.contains("layers.3.mlp.proj.weight"));
    let grown = no_grad(|| m.forward(&x, 1, 12)).unwrap();
    assert_eq!(grown.value(), reference.value(), "a copied layer computes what running layer 1 twice does");
    // The copy is independent: changing it leaves layer 1 alone.
    m.params.get("layers.2.mlp.fc.weight").unwrap().update(|w| w.fill(0.0));
    assert!(m.params.get("layers.1.mlp.fc.weight").unwrap().value().iter().any(|&w| w != 0.0));
    m.remove_layer(2).unwrap();
    let back = no_grad(|| m.forward(&x, 1, 12)).unwrap();
    let original = no_grad(|| Decoder::<f64>::new(&c, 2).unwrap().forward(&x, 1, 12)).unwrap();
    assert_eq!(back.value(), original.value());
    assert!(m.forward_layers(&x, 1, 12, &[3], None).is_err());
    assert!(m.insert_layer_copy(5, 0).is_err());
}

#[test]
fn explicit_paths_with_scales_skip_and_rescale_layers_and_have_exact_gradients() {
    let c = DecoderConfig { n_layers: 4, ..tiny(Positions::Rotary, true, true) };
    let m = Decoder::<f64>::new(&c, 3).unwrap();
    let x = ids(10, c.vocab_size, 2);
    let all: Vec<(usize, f64)> = (0..4).map(|l| (l, 1.0)).collect();
    let full = no_grad(|| m.forward(&x, 1, 10)).unwrap();
    assert_eq!(no_grad(|| m.forward_path(&x, 1, 10, &all, None)).unwrap().value(), full.value());
    // Scale 0 is the identity on the residual stream: the same as leaving the layer out.
    let zeroed = no_grad(|| m.forward_path(&x, 1, 10, &[(0, 1.0), (1, 0.0), (2, 1.0), (3, 1.0)], None)).unwrap();
    let skipped = no_grad(|| m.forward_layers(&x, 1, 10, &[0, 2, 3], None)).unwrap();
    assert_eq!(zeroed.value(), skipped.value());
    // A scaled path's gradient, by finite differences; skipped layers get none.
    let y = ids(10, c.vocab_size, 5);
    let path = [(0, 1.0), (2, 1.5), (3, 1.0)];
    let (worst, name) =
        gradcheck::check_params(&m.params, 1e-5, 24, || m.loss_path(&x, &y, 1, 10, &path, None).unwrap());
    assert!(worst.max_error < 1e-6, "{name}: {worst:?}");
    let loss = m.loss_path(&x, &y, 1, 10, &path, None).unwrap();
    let grads = loss.backward();
    let layer1 = m.params.get("layers.1.attn.qkv.weight").unwrap();
    assert!(grads.get_id(layer1.id()).is_none(), "a skipped layer has no gradient");
    assert!(grads.get_id(m.params.get("layers.2.attn.qkv.weight").unwrap().id()).is_some());
    assert!(m.forward_path(&x, 1, 10, &[(0, f64::NAN)], None).is_err());
    assert!(m.forward_path(&x, 1, 10, &[(4, 1.0)], None).is_err());
}

#[test]
fn bad_configs_and_inputs_are_errors() {
    let ok = tiny(Positions::Learned, true, true);
    for bad in [
        DecoderConfig { d_model: 0, ..ok.clone() },
        DecoderConfig { n_heads: 3, ..ok.clone() },
        DecoderConfig { dropout: 1.0, ..ok.clone() },
        DecoderConfig { init_std: f64::NAN, ..ok.clone() },
        DecoderConfig { d_model: 6, n_heads: 2, positions: Positions::Rotary, ..ok.clone() },
    ] {
        assert!(Decoder::<f32>::new(&bad, 0).is_err(), "{bad:?}");
    }
    let m = Decoder::<f32>::new(&ok, 0).unwrap();
    assert!(m.forward(&[1, 2, 3], 2, 2).is_err(), "wrong id count");
    assert!(m.forward(&[99, 1], 1, 2).is_err(), "id outside the vocabulary");
    assert!(m.forward(&[1; 13], 1, 13).is_err(), "longer than the context");
    assert!(m.loss(&[1, 2], &[1, 99], 1, 2, None).is_err());
    assert!(m.generate(&[], 3, Sampling::Greedy, &mut seeded(0)).is_err());
    let temp0 = Sampling::Temperature { temperature: 0.0, top_k: None };
    assert!(m.generate(&[1], 3, temp0, &mut seeded(0)).is_err());
    assert!(Encoder::<f32>::new(&BertConfig { num_attention_heads: 3, ..tiny_bert() }, 0).is_err());
    assert!(Encoder::<f32>::new(&BertConfig { hidden_act: "swish".into(), ..tiny_bert() }, 0).is_err());
    let enc = Encoder::<f32>::new(&tiny_bert(), 0).unwrap();
    assert!(enc.forward(&[1, 2], &[true], None, 1, 2, None).is_err());
    assert!(enc.forward(&[1, 2], &[true, true], Some(&[0, 5]), 1, 2, None).is_err());
    let dir = tempfile::tempdir().unwrap();
    assert!(Encoder::<f32>::from_pretrained(dir.path()).unwrap_err().to_string().contains("config.json"));
}

#[test]
fn training_a_tiny_decoder_lowers_the_loss() {
    let c = tiny(Positions::Rotary, false, true);
    let m = Decoder::<f32>::new(&c, 0).unwrap();
    // A repeating pattern is learnable in context.
    let seq: Vec<usize> = (0..13).map(|i| (i * 3) % 7).collect();
    let (x, y) = (&seq[..12], &seq[1..13]);
    let mut opt = tensor::optim::Adam::new(tensor::optim::AdamConfig::adam(0.02));
    use tensor::optim::Optimizer;
    let first = m.loss(x, y, 1, 12, None).unwrap().item();
    for _ in 0..60 {
        let g = m.loss(x, y, 1, 12, None).unwrap().backward();
        opt.step(&m.params, &g);
    }
    let last = m.loss(x, y, 1, 12, None).unwrap().item();
    assert!(last < 0.2 * first, "loss {first} -> {last}");
    assert!(
        m.params.get("layers.0.ln1.bias").unwrap().value().iter().all(|&b| b == 0.0),
        "bias = false freezes LN shifts"
    );
}

#[test]
fn minilm_sentence_embeddings_match_the_numpy_reference() {
    let test = "minilm_sentence_embeddings_match_the_numpy_reference";
    let Some(root) = shared_data(test, &["all-MiniLM-L6-v2"]) else { return };
    let dir = data::resolve("all-MiniLM-L6-v2", Some(&root)).unwrap();
    let enc = Encoder::<f32>::from_pretrained(&dir).unwrap();
    assert_eq!((enc.n_layers(), enc.config.hidden_size), (6, 384));
    let tok = data::hf::HfTokenizer::from_file(&dir.join("tokenizer.json")).unwrap();
    let fixture: serde_json::Value = serde_json::from_str(include_str!("fixtures/minilm_reference.json")).unwrap();
    let sentences = fixture["sentences"].as_array().unwrap();
    let texts: Vec<&str> = sentences.iter().map(|s| s["text"].as_str().unwrap()).collect();
    let batch = tok.encode_batch(&texts, true, 256).unwrap();
    let emb = enc.embed(&batch).unwrap();
    for (i, s) in sentences.iter().enumerate() {
        let want_ids: Vec<u32> = s["ids"].as_array().unwrap().iter().map(|v| v.as_u64().unwrap() as u32).collect();
        assert_eq!(batch.row(i), want_ids, "tokenization of {:?}", texts[i]);
        let want: Vec<f64> = s["embedding"].as_array().unwrap().iter().map(|v| v.as_f64().unwrap()).collect();
        let got: Vec<f64> = emb.index_axis(tensor::ndarray::Axis(0), i).iter().map(|&v| v as f64).collect();
        let cos: f64 = want.iter().zip(&got).map(|(a, b)| a * b).sum::<f64>()
            / (want.iter().map(|a| a * a).sum::<f64>().sqrt() * got.iter().map(|b| b * b).sum::<f64>().sqrt());
        let max_diff = want.iter().zip(&got).map(|(a, b)| (a - b).abs()).fold(0.0, f64::max);
        assert!(1.0 - cos < 1e-4, "{:?}: cosine {cos}", texts[i]);
        assert!(max_diff < 1e-4, "{:?}: max |diff| {max_diff}", texts[i]);
    }
    // Padding the batch (the shorter sentences) did not change their embeddings: the last one was padded most.
    let alone = enc.embed(&tok.encode_batch(&[texts[4]], true, 256).unwrap()).unwrap();
    let d = emb
        .index_axis(tensor::ndarray::Axis(0), 4)
        .iter()
        .zip(alone.iter())
        .map(|(a, b)| (a - b).abs())
        .fold(0.0f32, f32::max);
    assert!(d < 1e-5, "padded vs unpadded: {d}");
}

#[test]
fn flop_counts_in_config_units() {
    // 6 * parameters * tokens plus attention, for a model without embeddings in the count.
    let c = DecoderConfig {
        vocab_size: 256,
        context: 128,
        d_model: 256,
        n_layers: 4,
        n_heads: 4,
        ..DecoderConfig::default()
    };
    let f = flops::decoder_step(&c, 16, 128, 4);
    let tokens = 16 * 128u64;
    let block_params = 12 * 256 * 256u64;
    let expected_fwd = 2 * tokens * (4 * block_params + 256 * 256) + 4 * 2 * 2 * 16 * 128 * 128 * 256;
    assert_eq!(f.forward, expected_fwd);
    assert_eq!(f.backward, 2 * f.forward);
    let _ = Tensor::<f32>::scalar(0.0);
}

#[test]
fn decoder_save_load_round_trip_and_bert_prefixed_checkpoints() {
    let dir = tempfile::tempdir().unwrap();
    let c = tiny(Positions::Rotary, false, false);
    let m = Decoder::<f32>::new(&c, 4).unwrap();
    let path = dir.path().join("decoder.safetensors");
    m.save(&path).unwrap();
    let back = Decoder::<f32>::load(&path).unwrap();
    assert_eq!(back.config, c);
    let x = ids(12, c.vocab_size, 0);
    assert_eq!(no_grad(|| m.forward(&x, 1, 12)).unwrap().value(), no_grad(|| back.forward(&x, 1, 12)).unwrap().value());
    m.params.save(&dir.path().join("bare.safetensors"), None).unwrap();
    assert!(Decoder::<f32>::load(&dir.path().join("bare.safetensors")).unwrap_err().to_string().contains("config"));

    // A BertForMaskedLM-style file: names under `bert.`, plus head tensors the encoder ignores.
    let bc = tiny_bert();
    let enc = Encoder::<f32>::new(&bc, 8).unwrap();
    let mut tensors: Vec<(String, tensor::StoredTensor)> = enc
        .params
        .iter()
        .into_iter()
        .map(|(n, v)| (format!("bert.{n}"), tensor::StoredTensor::from_float(&v.value())))
        .collect();
    tensors.push((
        "cls.predictions.bias".into(),
        tensor::StoredTensor::from_float(&tensor::ndarray::ArrayD::<f32>::zeros(tensor::ndarray::IxDyn(&[13]))),
    ));
    let hf = dir.path().join("hf");
    std::fs::create_dir_all(&hf).unwrap();
    tensor::write_safetensors(&hf.join("model.safetensors"), &tensors, None).unwrap();
    std::fs::write(hf.join("config.json"), serde_json::to_string(&bc).unwrap()).unwrap();
    let loaded = Encoder::<f32>::from_pretrained(&hf).unwrap();
    let x = ids(6, bc.vocab_size, 1);
    let a = no_grad(|| enc.forward(&x, &[true; 6], None, 1, 6, None)).unwrap();
    let b = no_grad(|| loaded.forward(&x, &[true; 6], None, 1, 6, None)).unwrap();
    assert_eq!(a.value(), b.value());
    // A file missing a layer is refused, naming it.
    tensors.retain(|(n, _)| !n.starts_with("bert.encoder.layer.1."));
    tensor::write_safetensors(&hf.join("model.safetensors"), &tensors, None).unwrap();
    assert!(Encoder::<f32>::from_pretrained(&hf).unwrap_err().to_string().contains("encoder.layer.1."));
}

/// Loss and every gradient of a decoder (learned positions: the fused-qkv attention; rotary: the split form) and of
/// an encoder with padding are bit-identical on 1 and 2 threads, at shapes where attention and the products run
/// in parallel.
#[test]
fn training_numbers_do_not_depend_on_the_thread_count() {
    let run = |threads: usize| {
        let pool = tensor::rayon::ThreadPoolBuilder::new().num_threads(threads).build().unwrap();
        pool.install(|| {
            let mut out: Vec<Vec<f32>> = vec![];
            for positions in [Positions::Learned, Positions::Rotary] {
                let c = DecoderConfig {
                    vocab_size: 50,
                    context: 32,
                    d_model: 64,
                    n_layers: 2,
                    n_heads: 4,
                    positions,
                    ..DecoderConfig::default()
                };
                let m = Decoder::<f32>::new(&c, 3).unwrap();
                let x = ids(4 * 32, 50, 1);
                let y = ids(4 * 32, 50, 2);
                let loss = m.loss(&x, &y, 4, 32, None).unwrap();
                let grads = loss.backward();
                out.push(vec![loss.item()]);
                for (_, var) in m.params.iter() {
                    out.push(grads.get(&var.tensor()).map(|g| g.iter().copied().collect()).unwrap_or_default());
                }
            }
            let bert = BertConfig {
                hidden_size: 64,
                num_attention_heads: 4,
                intermediate_size: 96,
                max_position_embeddings: 32,
                ..tiny_bert()
            };
            let enc = Encoder::<f32>::new(&bert, 5).unwrap();
            let head = ClassifierHead::new(&enc, 3, 0);
            let (b, t) = (4, 32);
            let mask: Vec<bool> = (0..b * t).map(|i| i % t < t - 3 * (i / t)).collect();
            let x = ids(b * t, bert.vocab_size, 7);
            let h = enc.forward(&x, &mask, None, b, t, None).unwrap();
            let loss = head.forward(&h, &mask).cross_entropy(&[0, 1, 2, 0]);
            let grads = loss.backward();
            out.push(vec![loss.item()]);
            for (_, var) in enc.params.iter() {
                out.push(grads.get(&var.tensor()).map(|g| g.iter().copied().collect()).unwrap_or_default());
            }
            out
        })
    };
    let (one, two) = (run(1), run(2));
    assert!(one.iter().all(|g| !g.is_empty()) && one.len() > 10, "every parameter has a gradient");
    assert_eq!(one, two, "1 and 2 threads differ");
}
