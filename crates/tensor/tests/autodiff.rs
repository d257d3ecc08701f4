//! The engine: what is recorded, accumulation, no-grad scopes, detaching.

use strata_tensor::{Params, Tensor, no_grad};

use crate::arr;

#[test]
fn constants_record_nothing() {
    let a = Tensor::<f64>::from_vec(vec![1.0, 2.0], &[2]);
    let b = a.exp().sum_all();
    assert!(!b.is_tracked());
    assert!(b.backward().is_empty());
}

#[test]
fn no_grad_scope_records_nothing_and_restores() {
    let x = Tensor::<f64>::leaf(arr(&[2], vec![1.0, 2.0]));
    let y = no_grad(|| x.square().sum_all());
    assert!(!y.is_tracked());
    assert!(strata_tensor::grad_enabled());
    assert!(x.square().sum_all().is_tracked());
}

#[test]
fn gradient_accumulates_over_paths() {
    // f = x*y + x^2 + sin-free chain reusing x three times: df/dx = y + 2x + 1
    let x = Tensor::<f64>::leaf(arr(&[], vec![3.0]));
    let y = Tensor::<f64>::leaf(arr(&[], vec![-2.0]));
    let f = &(&x * &y) + &(&x * &x) + x.clone();
    let g = f.backward();
    assert_eq!(g.get(&x).unwrap().iter().next().copied(), Some(-2.0 + 6.0 + 1.0));
    assert_eq!(g.get(&y).unwrap().iter().next().copied(), Some(3.0));
}

#[test]
fn detach_stops_gradient() {
    let x = Tensor::<f64>::leaf(arr(&[], vec![2.0]));
    let f = &x * &x.detach();
    assert_eq!(f.backward().get(&x).unwrap().iter().next().copied(), Some(2.0));
}

#[test]
fn frozen_params_get_no_gradient() {
    let params = Params::<f64>::new();
    let a = params.insert("a", arr(&[2], vec![1.0, 2.0])).unwrap();
    let b = params.insert("b", arr(&[2], vec![3.0, 4.0])).unwrap();
    params.set_trainable("b", false);
    let loss = (&a.tensor() * &b.tensor()).sum_all();
    let g = loss.backward();
    assert_eq!(g.get_id(a.id()).unwrap().to_owned(), arr(&[2], vec![3.0, 4.0]));
    assert!(g.get_id(b.id()).is_none());
}

#[test]
fn deep_chain_drops_without_stack_overflow() {
    let x = Tensor::<f32>::leaf(strata_tensor::ndarray::ArrayD::ones(strata_tensor::ndarray::IxDyn(&[4])));
    let mut y = x.clone();
    for _ in 0..200_000 {
        y = y.mul_scalar(1.0);
    }
    let g = y.sum_all().backward();
    assert_eq!(g.get(&x).unwrap().sum(), 4.0);
    drop(y);
}

#[test]
fn grads_clip_by_global_norm() {
    let x = Tensor::<f64>::leaf(arr(&[2], vec![3.0, 4.0]));
    let mut g = x.square().sum_all().mul_scalar(0.5).backward();
    assert!((g.global_norm() - 5.0).abs() < 1e-12);
    let before = g.clip_global_norm(1.0);
    assert!((before - 5.0).abs() < 1e-12);
    assert!((g.global_norm() - 1.0).abs() < 1e-9);
}

#[test]
fn divergence_is_an_error_naming_the_step() {
    assert_eq!(strata_tensor::check_loss(3, 0.5).unwrap(), 0.5);
    let err = strata_tensor::check_loss(41, f64::NAN).unwrap_err();
    assert!(err.to_string().contains("step 41"), "{err}");
    assert!(strata_tensor::check_loss(2, f64::INFINITY).is_err());
}

#[test]
fn outputs_are_row_major() {
    // Large enough for the parallel paths.
    let x = Tensor::<f32>::new(strata_tensor::normal(&[64, 32, 48], 0.0, 1.0, &mut strata_tensor::seeded(0)));
    for y in [
        x.permute(&[2, 0, 1]),
        x.transpose(0, 2).exp(),
        x.permute(&[1, 2, 0]).reshape(&[32, usize::MAX]),
        x.t().sigmoid(),
    ] {
        assert!(y.value().is_standard_layout(), "shape {:?}", y.shape());
    }
    let p = x.permute(&[2, 0, 1]);
    assert_eq!(p.value()[[5, 7, 3]], x.value()[[7, 3, 5]]);
}
