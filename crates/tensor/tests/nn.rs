//! Layers: gradient checks of composite modules, masks, the parameter store, and small nets that learn.

use strata_tensor::gradcheck::check_params;
use strata_tensor::ndarray::{ArrayD, IxDyn};
use strata_tensor::nn::{
    Activation, BlockConfig, Conv2d, Linear, Mlp, Module, MultiHeadAttention, NormPlacement, TransformerBlock,
};
use strata_tensor::optim::{Adam, AdamConfig, Optimizer, Sgd, SgdConfig};
use strata_tensor::{Conv2dSpec, Params, Tensor, argmax_rows, normal, seeded};

fn block_config(norm: NormPlacement, causal: bool) -> BlockConfig {
    BlockConfig {
        d_model: 8,
        n_heads: 2,
        d_ff: 12,
        causal,
        norm,
        activation: Activation::Gelu,
        dropout: 0.0,
        ln_eps: 1e-5,
        init_std: 0.3,
    }
}

#[test]
fn transformer_blocks_gradcheck() {
    for (norm, causal) in [(NormPlacement::PreLn, true), (NormPlacement::PostLn, false)] {
        let params = Params::<f64>::new();
        let mut rng = seeded(1);
        let block = TransformerBlock::new(&params.root().sub("blocks").sub(0), &block_config(norm, causal), &mut rng);
        let x = Tensor::new(normal(&[2, 3, 8], 0.0, 1.0, &mut rng));
        let w = Tensor::new(normal(&[2, 3, 8], 0.0, 1.0, &mut rng));
        let padding = ArrayD::from_shape_vec(IxDyn(&[2, 3]), vec![true, true, true, true, true, false]).unwrap();
        let (r, name) = check_params(&params, 1e-6, 20, || (&block.forward_t(&x, Some(&padding), None) * &w).sum_all());
        assert!(r.max_error < 1e-6, "{norm:?}: {name} {r:?}");
        // Input gradient too.
        let r = strata_tensor::gradcheck::check(&[x.value().clone()], 1e-6, |t| {
            block.forward_t(&t[0], Some(&padding), None)
        });
        assert!(r.max_error < 1e-6, "{norm:?} input: {r:?}");
    }
}

#[test]
fn small_conv_net_gradcheck() {
    let params = Params::<f64>::new();
    let mut rng = seeded(2);
    let root = params.root();
    let c1 = Conv2d::new(&root.sub("conv1"), 1, 2, 3, Conv2dSpec { stride: 1, padding: 1 }, true, &mut rng);
    let fc = Linear::new(&root.sub("fc"), 2 * 3 * 3, 3, true, &mut rng);
    let x = Tensor::new(normal(&[2, 1, 6, 6], 0.0, 1.0, &mut rng));
    let loss = || fc.forward(&c1.forward(&x).relu().max_pool2d(2, 2).flatten_from(1)).cross_entropy(&[0, 2]);
    let (r, name) = check_params(&params, 1e-6, 30, loss);
    assert!(r.max_error < 1e-6, "{name} {r:?}");
}

#[test]
fn causal_attention_ignores_the_future() {
    let params = Params::<f64>::new();
    let mut rng = seeded(3);
    let attn = MultiHeadAttention::new(&params.root(), 8, 2, true, 0.5, &mut rng);
    let x = normal::<f64>(&[1, 5, 8], 0.0, 1.0, &mut rng);
    let mut x2 = x.clone();
    x2.slice_mut(strata_tensor::ndarray::s![0, 3.., ..]).mapv_inplace(|v| v + 10.0);
    let y1 = attn.forward(&Tensor::new(x));
    let y2 = attn.forward(&Tensor::new(x2));
    for t in 0..3 {
        for d in 0..8 {
            assert!((y1.value()[[0, t, d]] - y2.value()[[0, t, d]]).abs() < 1e-12);
        }
    }
    assert!((y1.value()[[0, 4, 0]] - y2.value()[[0, 4, 0]]).abs() > 1e-6);
}

#[test]
fn padded_keys_are_ignored() {
    let params = Params::<f64>::new();
    let mut rng = seeded(4);
    let attn = MultiHeadAttention::new(&params.root(), 4, 1, false, 0.5, &mut rng);
    let x = normal::<f64>(&[1, 4, 4], 0.0, 1.0, &mut rng);
    let mut x2 = x.clone();
    x2.slice_mut(strata_tensor::ndarray::s![0, 3, ..]).fill(100.0);
    let mask = ArrayD::from_shape_vec(IxDyn(&[1, 4]), vec![true, true, true, false]).unwrap();
    let y1 = attn.forward_masked(&Tensor::new(x), Some(&mask));
    let y2 = attn.forward_masked(&Tensor::new(x2), Some(&mask));
    for t in 0..3 {
        for d in 0..4 {
            assert!((y1.value()[[0, t, d]] - y2.value()[[0, t, d]]).abs() < 1e-12);
        }
    }
}

#[test]
fn mlp_learns_xor() {
    let params = Params::<f32>::new();
    let mut rng = seeded(0);
    let mlp = Mlp::new(&params.root().sub("mlp"), &[2, 8, 2], Activation::Tanh, &mut rng);
    let x = Tensor::from_vec(vec![0.0, 0.0, 0.0, 1.0, 1.0, 0.0, 1.0, 1.0], &[4, 2]);
    let labels = [0, 1, 1, 0];
    let mut opt = Adam::new(AdamConfig::adam(0.05));
    for _ in 0..300 {
        let grads = mlp.forward(&x).cross_entropy(&labels).backward();
        opt.step(&params, &grads);
    }
    assert_eq!(argmax_rows(mlp.forward(&x).value()), labels);
    assert_eq!(params.names(), ["mlp.0.weight", "mlp.0.bias", "mlp.1.weight", "mlp.1.bias"]);
}

#[test]
fn conv_net_separates_a_toy_set() {
    // Class 0: a bright vertical bar; class 1: a bright horizontal bar; at random positions, with noise.
    let mut rng = seeded(5);
    let n = 64;
    let mut images = vec![0f32; n * 8 * 8];
    let mut labels = vec![0usize; n];
    for i in 0..n {
        labels[i] = i % 2;
        let pos = 1 + (i * 5) % 6;
        for j in 0..8 {
            let (y, x) = if labels[i] == 0 { (j, pos) } else { (pos, j) };
            images[i * 64 + y * 8 + x] = 1.0;
        }
    }
    let noise = normal::<f32>(&[n, 1, 8, 8], 0.0, 0.2, &mut rng);
    let x = Tensor::new(ArrayD::from_shape_vec(IxDyn(&[n, 1, 8, 8]), images).unwrap() + noise);
    let params = Params::<f32>::new();
    let root = params.root();
    let conv = Conv2d::new(&root.sub("conv"), 1, 4, 3, Conv2dSpec { stride: 1, padding: 1 }, true, &mut rng);
    let fc = Linear::new(&root.sub("fc"), 4 * 4 * 4, 2, true, &mut rng);
    let forward = |x: &Tensor<f32>| fc.forward(&conv.forward(x).relu().max_pool2d(2, 2).flatten_from(1));
    let mut opt = Sgd::new(SgdConfig { lr: 0.1, momentum: 0.9, ..Default::default() });
    for _ in 0..100 {
        let grads = forward(&x).cross_entropy(&labels).backward();
        opt.step(&params, &grads);
    }
    assert_eq!(argmax_rows(forward(&x).value()), labels, "the conv net should fit the toy set exactly");
}

#[test]
fn params_store_by_name() {
    let params = Params::<f32>::new();
    let mut rng = seeded(0);
    let cfg = BlockConfig {
        d_model: 8,
        n_heads: 2,
        d_ff: 16,
        causal: true,
        norm: NormPlacement::PreLn,
        activation: Activation::Gelu,
        dropout: 0.0,
        ln_eps: 1e-5,
        init_std: 0.02,
    };
    for i in 0..2 {
        TransformerBlock::new(&params.root().sub("blocks").sub(i), &cfg, &mut rng);
    }
    assert!(params.contains("blocks.1.attn.q.weight"));
    assert_eq!(params.under("blocks.1").len(), 16);
    // Growth: copy block 1 to block 2, then a model built on the store reuses the copied values.
    params.copy_prefix("blocks.1", "blocks.2").unwrap();
    let grown = TransformerBlock::new(&params.root().sub("blocks").sub(2), &cfg, &mut rng);
    assert_eq!(grown.fc.weight.value(), params.get("blocks.1.mlp.fc.weight").unwrap().value());
    assert!(params.copy_prefix("blocks.1", "blocks.2").is_err(), "copying onto existing names is an error");
    // `blocks.1` must not match `blocks.10`-style names.
    params.insert("blocks.10.x", ArrayD::zeros(IxDyn(&[1]))).unwrap();
    assert_eq!(params.under("blocks.1").len(), 16);
    // Freezing by prefix and counting.
    let total = params.num_elements();
    let frozen = params.set_trainable("blocks.0", false);
    assert_eq!(frozen, 16);
    assert!(params.num_trainable() < total);
    // Masking.
    let name = "blocks.0.ln1.weight";
    params.apply_mask(name, &ArrayD::from_shape_fn(IxDyn(&[8]), |i| if i[0] < 4 { 1.0 } else { 0.0 })).unwrap();
    assert_eq!(params.get(name).unwrap().value().sum(), 4.0);
    assert!(params.apply_mask(name, &ArrayD::zeros(IxDyn(&[3]))).is_err());
    // Renaming keeps the variables.
    let id = params.get("blocks.2.attn.q.weight").unwrap().id();
    params.rename_prefix("blocks.2", "blocks.5").unwrap();
    assert_eq!(params.get("blocks.5.attn.q.weight").unwrap().id(), id);
    assert!(!params.contains("blocks.2.attn.q.weight"));
}
