//! strata-tensor's integration tests, one binary (see `mod`s below).

mod autodiff;
mod checkpoint;
mod gradcheck;
mod linalg;
mod nn;
mod optim;

use strata_tensor::ndarray::{ArrayD, IxDyn};

pub fn arr(shape: &[usize], values: Vec<f64>) -> ArrayD<f64> {
    ArrayD::from_shape_vec(IxDyn(shape), values).expect("shape matches values")
}
