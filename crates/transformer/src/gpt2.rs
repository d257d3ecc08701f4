//! HuggingFace GPT-2 checkpoints: a Strata decoder written as `config.json` and `model.safetensors` under GPT-2's
//! names, which `transformers.GPT2LMHeadModel.from_pretrained(dir)` loads, and read back.
//!
//! GPT-2 can express a Strata decoder with learned positions (rotary positions are refused, naming the feature):
//! pre-LN blocks, fused QKV, any of its activations (`gelu_new` is Strata's `GeluTanh`, `gelu` its exact `Gelu`),
//! a tied or untied head, any MLP width. GPT-2 stores linear weights as `[in, out]` (its `Conv1D`), Strata as
//! `[out, in]`; a decoder without biases gets zero biases.

use std::collections::HashMap;
use std::path::Path;

use tensor::StoredTensor;
use tensor::ndarray::{ArrayD, Ix2};
use tensor::nn::Activation;

use crate::decoder::{Decoder, DecoderConfig, Positions};
use crate::{Error, Result};

fn activation_name(a: Activation) -> &'static str {
    match a {
        Activation::GeluTanh => "gelu_new",
        Activation::Gelu => "gelu",
        Activation::Relu => "relu",
        Activation::Tanh => "tanh",
        Activation::Sigmoid => "sigmoid",
        Activation::Identity => "linear",
    }
}

fn activation_of(name: &str) -> Option<Activation> {
    Some(match name {
        "gelu_new" | "gelu_pytorch_tanh" | "gelu_fast" => Activation::GeluTanh,
        "gelu" => Activation::Gelu,
        "relu" => Activation::Relu,
        "tanh" => Activation::Tanh,
        "sigmoid" => Activation::Sigmoid,
        "linear" => Activation::Identity,
        _ => return None,
    })
}

/// The GPT-2 `config.json` of a decoder (the features GPT-2 cannot express are an error naming them).
pub fn hf_config(c: &DecoderConfig) -> Result<serde_json::Value> {
    if c.positions == Positions::Rotary {
        return Err(Error::Config(
            "GPT-2 cannot express rotary positions (it has a learned position table); export a decoder with \
             `positions: learned`"
                .into(),
        ));
    }
    Ok(serde_json::json!({
        "architectures": ["GPT2LMHeadModel"],
        "model_type": "gpt2",
        "vocab_size": c.vocab_size,
        "n_positions": c.context,
        "n_ctx": c.context,
        "n_embd": c.d_model,
        "n_layer": c.n_layers,
        "n_head": c.n_heads,
        "n_inner": c.ff(),
        "activation_function": activation_name(c.activation),
        "layer_norm_epsilon": c.ln_eps,
        "initializer_range": c.init_std,
        "resid_pdrop": c.dropout,
        "embd_pdrop": c.dropout,
        "attn_pdrop": c.dropout,
        "tie_word_embeddings": c.tie_embeddings,
        "scale_attn_weights": true,
        "torch_dtype": "float32",
    }))
}

/// Strata parameter name -> (GPT-2 name, transpose): every tensor GPT-2 has, given the config.
fn name_map(c: &DecoderConfig) -> Vec<(String, String, bool)> {
    let mut m = vec![
        ("tok_emb.weight".into(), "wte.weight".into(), false),
        ("pos_emb.weight".into(), "wpe.weight".into(), false),
        ("ln_f.weight".into(), "ln_f.weight".into(), false),
        ("ln_f.bias".into(), "ln_f.bias".into(), false),
    ];
    for i in 0..c.n_layers {
        let (s, h) = (format!("layers.{i}"), format!("h.{i}"));
        for (a, b, t) in [
            ("ln1.weight", "ln_1.weight", false),
            ("ln1.bias", "ln_1.bias", false),
            ("attn.qkv.weight", "attn.c_attn.weight", true),
            ("attn.qkv.bias", "attn.c_attn.bias", false),
            ("attn.proj.weight", "attn.c_proj.weight", true),
            ("attn.proj.bias", "attn.c_proj.bias", false),
            ("ln2.weight", "ln_2.weight", false),
            ("ln2.bias", "ln_2.bias", false),
            ("mlp.fc.weight", "mlp.c_fc.weight", true),
            ("mlp.fc.bias", "mlp.c_fc.bias", false),
            ("mlp.proj.weight", "mlp.c_proj.weight", true),
            ("mlp.proj.bias", "mlp.c_proj.bias", false),
        ] {
            m.push((format!("{s}.{a}"), format!("{h}.{b}"), t));
        }
    }
    if !c.tie_embeddings {
        m.push(("head.weight".into(), "lm_head.weight".into(), false));
    }
    m
}

/// The zero bias GPT-2 needs where a bias-free Strata layer has none: its length is the weight's output size.
fn zero_bias_len(decoder: &Decoder<f32>, strata_name: &str) -> Option<usize> {
    let weight = strata_name.strip_suffix(".bias")?.to_string() + ".weight";
    let shape = decoder.params.get(&weight)?.shape();
    Some(shape[0])
}

/// Writes `dir/config.json` and `dir/model.safetensors` (atomically) in HuggingFace GPT-2 form.
pub fn export_hf_gpt2(decoder: &Decoder<f32>, dir: &Path) -> Result<()> {
    let c = &decoder.config;
    let config = hf_config(c)?;
    std::fs::create_dir_all(dir).map_err(|e| Error::File { path: dir.to_path_buf(), message: e.to_string() })?;
    let mut tensors = Vec::new();
    for (strata, hf, transpose) in name_map(c) {
        let value: ArrayD<f32> = match decoder.params.get(&strata) {
            Some(v) => v.value(),
            None => match zero_bias_len(decoder, &strata) {
                Some(n) => ArrayD::zeros(tensor::ndarray::IxDyn(&[n])),
                None => return Err(Error::Config(format!("the decoder has no `{strata}` for GPT-2's `{hf}`"))),
            },
        };
        let value = if transpose {
            let m = value.into_dimensionality::<Ix2>().map_err(|e| Error::Config(format!("{strata}: {e}")))?;
            m.t().as_standard_layout().to_owned().into_dyn()
        } else {
            value
        };
        tensors.push((hf, StoredTensor::F32(value)));
    }
    let meta = HashMap::from([("format".to_string(), "pt".to_string())]);
    tensor::write_safetensors(&dir.join("model.safetensors"), &tensors, Some(meta))?;
    let text = serde_json::to_string_pretty(&config).expect("json");
    tensor::write_atomic(&dir.join("config.json"), text.as_bytes())?;
    Ok(())
}

/// Reads a HuggingFace GPT-2 checkpoint folder (`config.json`, `model.safetensors`; names with or without the
/// `transformer.` prefix) into a Strata decoder. A GPT-2 without biases cannot be told apart from zero biases,
/// so the decoder keeps them (`bias: true`).
pub fn import_hf_gpt2(dir: &Path) -> Result<Decoder<f32>> {
    let cfg_path = dir.join("config.json");
    let text = std::fs::read_to_string(&cfg_path)
        .map_err(|e| Error::File { path: cfg_path.clone(), message: e.to_string() })?;
    let v: serde_json::Value =
        serde_json::from_str(&text).map_err(|e| Error::File { path: cfg_path.clone(), message: e.to_string() })?;
    let bad = |m: String| Error::File { path: cfg_path.clone(), message: m };
    let get = |k: &str| v[k].as_u64().map(|x| x as usize).ok_or_else(|| bad(format!("no integer `{k}`")));
    let d_model = get("n_embd")?;
    let act = v["activation_function"].as_str().unwrap_or("gelu_new");
    let config = DecoderConfig {
        vocab_size: get("vocab_size")?,
        context: get("n_positions")?,
        d_model,
        n_layers: get("n_layer")?,
        n_heads: get("n_head")?,
        d_ff: v["n_inner"].as_u64().map(|x| x as usize).unwrap_or(4 * d_model),
        positions: Positions::Learned,
        tie_embeddings: v["tie_word_embeddings"].as_bool().unwrap_or(true),
        bias: true,
        activation: activation_of(act).ok_or_else(|| bad(format!("activation `{act}` has no Strata counterpart")))?,
        dropout: 0.0,
        ln_eps: v["layer_norm_epsilon"].as_f64().unwrap_or(1e-5),
        init_std: v["initializer_range"].as_f64().unwrap_or(0.02),
    };
    config.validate()?;
    let decoder = Decoder::new(&config, 0)?;
    let weights = dir.join("model.safetensors");
    let stored = tensor::read_safetensors(&weights)?;
    let found: HashMap<String, &StoredTensor> =
        stored.tensors.iter().map(|(n, t)| (n.strip_prefix("transformer.").unwrap_or(n).to_string(), t)).collect();
    let wbad = |m: String| Error::File { path: weights.clone(), message: m };
    for (strata, hf, transpose) in name_map(&config) {
        let t = found.get(&hf).ok_or_else(|| wbad(format!("missing `{hf}`")))?;
        let value = t.to_float::<f32>().map_err(|e| wbad(format!("`{hf}`: {e}")))?;
        let value = if transpose {
            let m = value.into_dimensionality::<Ix2>().map_err(|e| wbad(format!("`{hf}`: {e}")))?;
            m.t().as_standard_layout().to_owned().into_dyn()
        } else {
            value
        };
        let var = decoder.params.get(&strata).ok_or_else(|| wbad(format!("the decoder has no `{strata}`")))?;
        if var.shape() != value.shape() {
            return Err(wbad(format!("`{hf}` has shape {:?}, the config gives {:?}", value.shape(), var.shape())));
        }
        var.set(value);
    }
    Ok(decoder)
}
