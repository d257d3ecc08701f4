//! The AVX2 build of the elementwise loops (`set_simd_kernels`) gives the same numbers, bit for bit, as the
//! baseline build: a transformer block's forward, backward and AdamW step in f32 and f64, with both settings.
//! A binary of its own: the setting is process-wide. (On a CPU without AVX2 both runs take the same path.)

use strata_tensor::nn::{LayerNorm, Linear, Module};
use strata_tensor::optim::{Adam, AdamConfig};
use strata_tensor::{AttentionMask, Float, GeluApprox, Optimizer, Params, Tensor, normal, seeded, set_simd_kernels};

fn block_step<F: Float>() -> Vec<Vec<F>> {
    let params = Params::<F>::new();
    let root = params.root();
    let rng = &mut seeded(7);
    let (b, t, d, heads) = (2, 40, 48, 4);
    let ln = LayerNorm::new(&root.sub("ln"), d, 1e-5);
    let qkv = Linear::normal(&root.sub("qkv"), d, 3 * d, true, 0.1, rng);
    let fc = Linear::normal(&root.sub("fc"), d, 4 * d, true, 0.1, rng);
    let out = Linear::normal(&root.sub("out"), 4 * d, d, true, 0.1, rng);
    let x = Tensor::leaf(normal::<F>(&[b, t, d], 0.0, 1.0, rng));
    let h = &x + &qkv.forward(&ln.forward(&x)).fused_self_attention(heads, AttentionMask::Causal);
    let y = &h + &out.forward(&fc.forward(&h).gelu(GeluApprox::Tanh));
    let loss = (&y * &y).softmax(-1).sum_all();
    let grads = loss.backward();
    let mut opt = Adam::new(AdamConfig::adamw(1e-2, 0.1));
    opt.step(&params, &grads);
    let mut all = vec![loss.to_vec(), y.to_vec(), grads.get(&x).expect("x").iter().copied().collect()];
    all.extend(params.iter().into_iter().map(|(_, v)| v.value().iter().copied().collect::<Vec<F>>()));
    all
}

fn both<F: Float>() -> (Vec<Vec<F>>, Vec<Vec<F>>) {
    set_simd_kernels(false);
    assert!(!strata_tensor::simd_kernels());
    let plain = block_step::<F>();
    set_simd_kernels(true);
    let wide = block_step::<F>();
    (plain, wide)
}

#[test]
fn avx2_loops_give_the_same_bits() {
    let (plain, wide) = both::<f32>();
    for (p, w) in plain.iter().zip(&wide) {
        assert!(p.iter().zip(w).all(|(a, b)| a.to_bits() == b.to_bits()), "f32 results differ");
    }
    let (plain, wide) = both::<f64>();
    for (p, w) in plain.iter().zip(&wide) {
        assert!(p.iter().zip(w).all(|(a, b)| a.to_bits() == b.to_bits()), "f64 results differ");
    }
}
