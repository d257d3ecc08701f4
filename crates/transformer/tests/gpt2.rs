//! Export to HuggingFace GPT-2 form, checked against an independent numpy forward pass written from the GPT-2
//! definition (`gpt2_reference.py`), and the import that reads it back.

use std::path::Path;
use std::process::Command;

use strata_transformer::gpt2::{export_hf_gpt2, import_hf_gpt2};
use strata_transformer::{Decoder, DecoderConfig, Positions};
use tensor::nn::Activation;

/// A decoder whose every parameter (biases and layer-norm gains included) is perturbed away from its
/// initialisation, so that a misplaced or transposed tensor shows in the logits.
fn random_decoder(config: &DecoderConfig, seed: u64) -> Decoder<f32> {
    let d = Decoder::new(config, seed).unwrap();
    let mut rng = tensor::seeded(seed + 1);
    for (_, var) in d.params.iter() {
        let noise = tensor::normal::<f32>(&var.shape(), 0.0, 0.2, &mut rng);
        var.set(&var.value() + &noise);
    }
    d
}

fn numpy_available(test: &str) -> bool {
    let ok = Command::new("python3").args(["-c", "import numpy"]).output().is_ok_and(|o| o.status.success());
    if !ok {
        assert!(
            std::env::var("STRATA_REQUIRE_NUMPY").map_or(true, |v| v != "1"),
            "{test}: STRATA_REQUIRE_NUMPY=1 but python3 has no numpy"
        );
        eprintln!("SKIPPED {test}: python3 has no numpy (pip install numpy)");
    }
    ok
}

fn reference_logits(dir: &Path, ids: &[usize]) -> Vec<Vec<f64>> {
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/gpt2_reference.py");
    let out = Command::new("python3")
        .arg(script)
        .arg(dir)
        .arg(serde_json::to_string(ids).unwrap())
        .output()
        .expect("runs python3");
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    serde_json::from_slice(&out.stdout).unwrap()
}

fn strata_logits(d: &Decoder<f32>, ids: &[usize]) -> Vec<Vec<f64>> {
    let l = d.forward(ids, 1, ids.len()).unwrap();
    let v = d.config.vocab_size;
    let flat: Vec<f64> = l.value().iter().map(|&x| x as f64).collect();
    flat.chunks(v).map(|c| c.to_vec()).collect()
}

fn max_diff(a: &[Vec<f64>], b: &[Vec<f64>]) -> f64 {
    a.iter().flatten().zip(b.iter().flatten()).map(|(x, y)| (x - y).abs()).fold(0.0, f64::max)
}

#[test]
fn export_matches_numpy_gpt2_and_imports_back() {
    let base = DecoderConfig {
        vocab_size: 37,
        context: 16,
        d_model: 24,
        n_layers: 2,
        n_heads: 3,
        positions: Positions::Learned,
        activation: Activation::GeluTanh,
        ..DecoderConfig::default()
    };
    let variants = [
        base.clone(),
        // No biases (exported as zeros), an untied head, exact GELU and a narrower MLP.
        DecoderConfig { bias: false, tie_embeddings: false, activation: Activation::Gelu, d_ff: 40, ..base.clone() },
    ];
    let ids: Vec<usize> = (0..11).map(|i| (i * 7 + 3) % 37).collect();
    let check = numpy_available("transformer::gpt2::export_matches_numpy_gpt2_and_imports_back");
    for (k, config) in variants.iter().enumerate() {
        let model = random_decoder(config, 10 + k as u64);
        let dir = tempfile::tempdir().unwrap();
        export_hf_gpt2(&model, dir.path()).unwrap();
        let cfg: serde_json::Value =
            serde_json::from_str(&std::fs::read_to_string(dir.path().join("config.json")).unwrap()).unwrap();
        assert_eq!(cfg["model_type"], "gpt2");
        let ours = strata_logits(&model, &ids);
        if check {
            let theirs = reference_logits(dir.path(), &ids);
            let diff = max_diff(&ours, &theirs);
            assert!(diff < 1e-4, "variant {k}: logits differ from numpy GPT-2 by {diff}");
        }
        let back = import_hf_gpt2(dir.path()).unwrap();
        let diff = max_diff(&ours, &strata_logits(&back, &ids));
        assert!(diff < 1e-6, "variant {k}: export then import changed the logits by {diff}");
        // Saved and loaded by Strata's own format, the imported model round-trips too.
        let file = dir.path().join("strata.safetensors");
        back.save(&file).unwrap();
        assert!(max_diff(&ours, &strata_logits(&Decoder::load(&file).unwrap(), &ids)) < 1e-6);
    }
}

#[test]
fn features_gpt2_cannot_express_are_named() {
    let rotary = Decoder::new(&DecoderConfig { positions: Positions::Rotary, ..DecoderConfig::default() }, 0).unwrap();
    let dir = tempfile::tempdir().unwrap();
    let err = export_hf_gpt2(&rotary, dir.path()).unwrap_err().to_string();
    assert!(err.contains("rotary"), "{err}");
    assert!(!dir.path().join("model.safetensors").exists());
    assert!(import_hf_gpt2(dir.path()).unwrap_err().to_string().contains("config.json"));
}
