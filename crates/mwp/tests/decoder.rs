use strata_mwp::backend::{Backend, Finish, Message, Request};
use strata_mwp::decoder::DecoderBackend;
use strata_mwp::transformer::{Decoder, DecoderConfig, Sampling};

fn byte_model() -> Decoder<f32> {
    let config = DecoderConfig {
        vocab_size: 256,
        context: 64,
        d_model: 16,
        n_layers: 1,
        n_heads: 2,
        ..DecoderConfig::default()
    };
    Decoder::new(&config, 5).unwrap()
}

#[test]
fn generate_until_stops_at_the_first_stop_sequence() {
    let model = byte_model();
    let prompt = vec![72, 105, 33];
    let full = model.generate(&prompt, 24, Sampling::Greedy, &mut strata_mwp::transformer::tensor::seeded(0)).unwrap();
    let generated = &full[prompt.len()..];
    let stop = generated[4..6].to_vec();
    let first = (0..generated.len() - 1).find(|&i| generated[i..i + 2] == stop[..]).unwrap();
    let (out, stopped) = model
        .generate_until(&prompt, 24, Sampling::Greedy, &mut strata_mwp::transformer::tensor::seeded(0), &[vec![], stop])
        .unwrap();
    assert!(stopped);
    assert_eq!(out, [&prompt[..], &generated[..first]].concat());
    // A stop sequence that never comes: the same as generate.
    let absent: Vec<usize> = (0..256).find(|t| !generated.contains(t)).into_iter().collect();
    let (out, stopped) = model
        .generate_until(&prompt, 24, Sampling::Greedy, &mut strata_mwp::transformer::tensor::seeded(0), &[absent])
        .unwrap();
    assert!(!stopped);
    assert_eq!(out, full);
}

#[test]
fn decoder_backend_applies_stop_strings() {
    let backend = DecoderBackend::new(byte_model(), Box::new(strata_mwp::data::tokenize::ByteTokenizer), "test");
    let mut request =
        Request { messages: vec![Message::user("Q: 1 + 1?")], max_tokens: 20, temperature: 0.0, stop: vec![], seed: 3 };
    let free = backend.generate(&request).unwrap();
    assert_eq!((free.finish, free.tokens), (Finish::Length, Some(20)));
    // Two ASCII characters are two byte tokens wherever they occur (no multi-byte character holds one).
    let chars: Vec<char> = free.text.chars().collect();
    let Some(at) = (1..chars.len().saturating_sub(1)).find(|&i| chars[i].is_ascii() && chars[i + 1].is_ascii()) else {
        panic!("no two ASCII characters in a row in {:?}", free.text);
    };
    let stop: String = chars[at..at + 2].iter().collect();
    request.stop = vec![stop.clone()];
    let stopped = backend.generate(&request).unwrap();
    assert_eq!(stopped.finish, Finish::Stop);
    assert_eq!(stopped.text, free.text[..free.text.find(&stop).unwrap()]);
    assert!(backend.identity().contains("test"));
}

/// A saved decoder answers the whole evaluation through `DecoderBackend::load` (it scores near zero: the
/// point is the plumbing, and that replies are cut at the stop strings).
#[test]
fn saved_decoder_runs_the_evaluation() {
    let dir = tempfile::tempdir().unwrap();
    let weights = dir.path().join("model.safetensors");
    byte_model().save(&weights).unwrap();
    let backend = DecoderBackend::load(&weights, &strata_mwp::decoder::TokenizerSpec::Bytes).unwrap();
    assert!(backend.identity().contains("sha256="));
    let p = strata_mwp::data::text::SvampProblem {
        id: "d-1".into(),
        body: "Tom has 3 pens and buys 4 more.".into(),
        question: "How many pens?".into(),
        equation: "( 3.0 + 4.0 )".into(),
        answer: 7.0,
        kind: "Addition".into(),
    };
    let problems = vec![strata_mwp::symbolic::symbolize(&p, strata_mwp::VariableStyle::Wxyz).unwrap()];
    let generation = strata_mwp::eval::Generation {
        max_tokens: 12,
        answer_tokens: 6,
        temperature: 0.0,
        stop: vec!["Q".into()],
        concurrency: 2,
    };
    let prompts = strata_mwp::prompts::PromptSet::default();
    let rows = strata_mwp::eval::evaluate(&backend, &problems, &prompts, &generation, 0, 8, &|| {}).unwrap();
    assert_eq!(rows.len(), 1);
    assert!(!rows[0].numeric.reasoning.contains('Q'));
    let again = strata_mwp::eval::evaluate(&backend, &problems, &prompts, &generation, 0, 8, &|| {}).unwrap();
    assert_eq!(rows, again, "greedy decoding repeats");
    let missing =
        DecoderBackend::load(&dir.path().join("nope.safetensors"), &strata_mwp::decoder::TokenizerSpec::Bytes);
    assert!(missing.unwrap_err().to_string().contains("nope.safetensors"));
}
