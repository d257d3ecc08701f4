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
