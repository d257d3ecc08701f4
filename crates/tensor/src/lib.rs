//! # strata-tensor
//!
//! The tensor every Strata crate stands on: n-dimensional arrays (backed by `ndarray`) with reverse-mode
//! automatic differentiation, neural-network layers with stable hierarchical parameter names, optimizers
//! whose state is addressable by name, safetensors checkpoints, f64 linear algebra and seeded randomness.
//!
//! ## Design
//! - **Element type.** [`Tensor<F>`] is generic over [`Float`] (`f32` or `f64`), defaulting to `f32`.
//!   Training uses `f32`; gradient checks and theory run the *same op code* in `f64`.
//! - **Autodiff.** A tensor is a cheap `Arc` handle. An op records its inputs and a backward closure only
//!   when gradients are enabled ([`no_grad`]) and an input is tracked, so inference builds no graph.
//!   [`Tensor::backward`] sorts the graph, runs the closures in reverse, and returns [`Grads`] keyed by
//!   tensor id. Dropping the loss frees the graph. Each op's forward and backward sit together in one
//!   function under `src/ops/`.
//! - **Parameters** are [`Var`]s in a [`Params`] store under dotted names (`blocks.3.attn.q.weight`),
//!   registered through a [`ParamPath`]. Freezing, masking, copying a layer, saving and loading all go by
//!   name; optimizer state ([`OptimizerState`]) is keyed by the same names.
//! - **Errors.** Shape mistakes in model code are programmer errors: ops panic with a message naming the op
//!   and shapes (`#[track_caller]`), like `ndarray`. Files, checkpoints and linear algebra return
//!   [`Result`] with the typed [`Error`].
//! - **Speed.** 2-D products go to BLAS (OpenBLAS); `[.., m, k] @ [k, n]` is flattened into one BLAS call;
//!   batched products run single-threaded GEMMs in parallel over the batch; large elementwise ops and row
//!   ops run on rayon. Parallel work never splits a floating-point reduction in a thread-count-dependent
//!   way, so results do not depend on the number of threads.
//!
//! ## Modules
//! - [`nn`]: layers with named parameters (linear, embedding, layer norm, MLP, attention, transformer block,
//!   conv2d) behind [`nn::Module`].
//! - [`optim`]: SGD, Adam and AdamW with per-parameter state keyed by name ([`OptimizerState`]: rename, copy and
//!   reset it when a model changes shape), [`OptimizerConfig`] to build one from a config, LR [`Schedule`]s.
//! - [`linalg`]: f64 linear algebra on `ndarray` (symmetric eigendecomposition, solves, pseudo-inverse, Cholesky)
//!   with typed errors.
//! - [`gradcheck`]: finite-difference gradient checks in f64, and the list of op cases every check runs over.
//! - Checkpoints: [`read_safetensors`] / [`write_safetensors`] (atomic), and [`Params::save`] / [`Params::load`].
//!
//! ## Example
//! ```
//! use strata_tensor::{nn::{Linear, Module}, optim::{Adam, AdamConfig, Optimizer}, seeded, Params, Tensor};
//!
//! let params = Params::<f32>::new();
//! let mut rng = seeded(0);
//! let layer = Linear::new(&params.root().sub("fc"), 3, 1, true, &mut rng);
//! let x = Tensor::from_vec(vec![1.0, 2.0, 3.0, 4.0, 5.0, 6.0], &[2, 3]);
//! let y = Tensor::from_vec(vec![1.0, -1.0], &[2, 1]);
//! let mut opt = Adam::new(AdamConfig::adam(0.1));
//! for _ in 0..100 {
//!     let loss = layer.forward(&x).mse(&y);
//!     let grads = loss.backward();
//!     opt.step(&params, &grads);
//! }
//! assert!(layer.forward(&x).mse(&y).item() < 1e-3);
//! assert_eq!(params.names(), ["fc.weight", "fc.bias"]);
//! ```

// Links OpenBLAS for ndarray's BLAS-backed products and ndarray-linalg's LAPACK calls.
extern crate blas_src;
extern crate openblas_src;

mod checkpoint;
mod error;
mod float;
pub mod gradcheck;
pub mod linalg;
pub mod nn;
mod ops;
pub mod optim;
mod rng;
mod tensor;
mod var;

pub use checkpoint::{
    StoredTensor, StoredTensors, parse_safetensors, read_safetensors, write_atomic, write_safetensors,
};
pub use error::{Error, Result, check_loss};
pub use float::Float;
pub use ndarray;
pub use ops::{
    AttentionMask, Conv2dSpec, GeluApprox, broadcast_shapes,
    loss::argmax_rows,
    matmul::{GemmBackend, gemm_backend, openblas_core, runtime_setup, set_gemm_backend},
    matmul_flops, set_simd_kernels, simd_kernels,
};
pub use optim::{Optimizer, OptimizerConfig, OptimizerState, Schedule};
pub use rayon;
pub use rng::{
    Rng, derived, fans, kaiming_normal, kaiming_uniform, normal, permutation, seeded, uniform, xavier_normal,
    xavier_uniform,
};
pub use tensor::{Grads, Tensor, TensorId, grad_enabled, live_graph_nodes, no_grad};
pub use var::{LoadReport, ParamPath, Params, Var};
