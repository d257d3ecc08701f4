//! Pieces of the decoder's attention outside the fused op (`Tensor::attention`): head reshapes for the rotary and
//! cached paths, and rotary position embeddings.

use tensor::{Float, Tensor};

/// `[b, t, h * dh] -> [b, h, t, dh]`.
pub(crate) fn split_heads<F: Float>(x: &Tensor<F>, b: usize, t: usize, h: usize) -> Tensor<F> {
    let d = x.shape()[2];
    x.reshape(&[b, t, h, d / h]).permute(&[0, 2, 1, 3])
}

/// `[b, h, t, dh] -> [b, t, h * dh]`.
pub(crate) fn merge_heads<F: Float>(x: &Tensor<F>) -> Tensor<F> {
    let (b, h, t, dh) = (x.shape()[0], x.shape()[1], x.shape()[2], x.shape()[3]);
    x.permute(&[0, 2, 1, 3]).reshape(&[b, t, h * dh])
}

/// Rotary position embeddings (RoFormer; the half-split "NeoX" layout): the two halves of each head vector
/// are rotated by position-dependent angles `pos * base^(-2i/dh)`.
#[derive(Debug, Clone)]
pub struct Rope {
    half: usize,
    max_len: usize,
    cos: Vec<f64>,
    sin: Vec<f64>,
}

impl Rope {
    /// `head_dim` must be even.
    pub fn new(head_dim: usize, max_len: usize, base: f64) -> Self {
        let half = head_dim / 2;
        let mut cos = Vec::with_capacity(max_len * half);
        let mut sin = Vec::with_capacity(max_len * half);
        for p in 0..max_len {
            for i in 0..half {
                let angle = p as f64 * base.powf(-2.0 * i as f64 / head_dim as f64);
                cos.push(angle.cos());
                sin.push(angle.sin());
            }
        }
        Rope { half, max_len, cos, sin }
    }

    /// Rotates `x: [b, h, t, dh]` whose first position is `start`.
    pub fn apply<F: Float>(&self, x: &Tensor<F>, start: usize) -> Tensor<F> {
        let t = x.shape()[2];
        assert!(start + t <= self.max_len, "rope: positions {start}..{} beyond table {}", start + t, self.max_len);
        let table = |src: &[f64]| {
            let v = src[start * self.half..(start + t) * self.half].iter().map(|&c| F::of(c)).collect();
            Tensor::from_vec(v, &[t, self.half])
        };
        let (cos, sin) = (table(&self.cos), table(&self.sin));
        let x1 = x.narrow(3, 0, self.half);
        let x2 = x.narrow(3, self.half, self.half);
        let r1 = &(&x1 * &cos) - &(&x2 * &sin);
        let r2 = &(&x1 * &sin) + &(&x2 * &cos);
        Tensor::concat(&[&r1, &r2], 3)
    }
}
