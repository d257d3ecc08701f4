//! FLOP accounting against the counter inside the GEMM calls. Its own test binary: the counter is process-wide,
//! so nothing else may run products concurrently.

use strata_transformer::{BertConfig, Decoder, DecoderConfig, Encoder, Positions, flops};
use tensor::{matmul_flops, no_grad};

fn counted<R>(f: impl FnOnce() -> R) -> u64 {
    let before = matmul_flops();
    let _ = f();
    matmul_flops() - before
}

#[test]
fn accounting_equals_the_products_actually_run() {
    for (positions, tied) in [(Positions::Learned, true), (Positions::Rotary, false)] {
        let c = DecoderConfig {
            vocab_size: 37,
            context: 16,
            d_model: 24,
            n_layers: 3,
            n_heads: 3,
            d_ff: 40,
            positions,
            tie_embeddings: tied,
            ..DecoderConfig::default()
        };
        let m = Decoder::<f32>::new(&c, 0).unwrap();
        let (b, t) = (2, 16);
        let x: Vec<usize> = (0..b * t).map(|i| i % 37).collect();
        for layers in [vec![0, 1, 2], vec![2, 0], vec![1, 1, 1, 1]] {
            let fwd = counted(|| no_grad(|| m.forward_layers(&x, b, t, &layers, None).unwrap()));
            assert_eq!(fwd, flops::decoder_forward(&c, b, t, layers.len()), "{positions:?} {layers:?}");
            let step = counted(|| m.loss_layers(&x, &x, b, t, &layers, None).unwrap().backward());
            assert_eq!(step, flops::decoder_step(&c, b, t, layers.len()).total(), "{positions:?} {layers:?}");
        }
    }
    let bc = BertConfig {
        vocab_size: 50,
        hidden_size: 16,
        num_hidden_layers: 2,
        num_attention_heads: 4,
        intermediate_size: 32,
        hidden_act: "gelu".into(),
        max_position_embeddings: 20,
        type_vocab_size: 2,
        layer_norm_eps: 1e-12,
        hidden_dropout_prob: 0.0,
    };
    let enc = Encoder::<f32>::new(&bc, 0).unwrap();
    let ids: Vec<usize> = (0..30).map(|i| i % 50).collect();
    let fwd = counted(|| no_grad(|| enc.forward(&ids, &[true; 30], None, 3, 10, None).unwrap()));
    assert_eq!(fwd, flops::encoder_forward(&bc, 3, 10, 2));
}
