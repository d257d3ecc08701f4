//! Optimizers against hand-computed updates; schedules; state by name.

use strata_tensor::optim::{Adam, AdamConfig, Optimizer, OptimizerState, Sgd, SgdConfig};
use strata_tensor::{Params, Schedule};

use crate::arr;

fn grads_for(params: &Params<f64>, g: &[(&str, Vec<f64>)]) -> strata_tensor::Grads<f64> {
    let mut grads = strata_tensor::Grads::default();
    for (n, v) in g {
        let var = params.get(n).unwrap();
        grads.insert(var.id(), arr(&[v.len()], v.clone()));
    }
    grads
}

#[test]
fn sgd_momentum_and_weight_decay_match_pytorch_rule() {
    let params = Params::<f64>::new();
    params.insert("w", arr(&[2], vec![1.0, -2.0])).unwrap();
    let mut opt = Sgd::new(SgdConfig { lr: 0.1, momentum: 0.9, weight_decay: 0.01, nesterov: false });
    let g = grads_for(&params, &[("w", vec![0.5, 0.5])]);
    opt.step(&params, &g);
    // d = g + wd p = [0.51, 0.48]; buf = d; p -= lr d
    let p1 = [1.0 - 0.1 * 0.51, -2.0 - 0.1 * 0.48];
    let w = params.get("w").unwrap().value();
    assert!((w[0] - p1[0]).abs() < 1e-12 && (w[1] - p1[1]).abs() < 1e-12);
    opt.step(&params, &g);
    let d = [0.5 + 0.01 * p1[0], 0.5 + 0.01 * p1[1]];
    let buf = [0.9 * 0.51 + d[0], 0.9 * 0.48 + d[1]];
    let w = params.get("w").unwrap().value();
    assert!((w[0] - (p1[0] - 0.1 * buf[0])).abs() < 1e-12);
    assert!((w[1] - (p1[1] - 0.1 * buf[1])).abs() < 1e-12);
}

#[test]
fn adamw_matches_hand_computation() {
    let params = Params::<f64>::new();
    params.insert("w", arr(&[1], vec![1.0])).unwrap();
    let mut opt = Adam::new(AdamConfig::adamw(0.01, 0.1));
    let mut p = 1.0f64;
    let (mut m, mut v) = (0.0f64, 0.0f64);
    for t in 1..=3 {
        let g = 0.3 * t as f64;
        opt.step(&params, &grads_for(&params, &[("w", vec![g])]));
        p *= 1.0 - 0.01 * 0.1;
        m = 0.9 * m + 0.1 * g;
        v = 0.999 * v + 0.001 * g * g;
        let mhat = m / (1.0 - 0.9f64.powi(t));
        let vhat = v / (1.0 - 0.999f64.powi(t));
        p -= 0.01 * mhat / (vhat.sqrt() + 1e-8);
        let w = params.get("w").unwrap().value()[0];
        assert!((w - p).abs() < 1e-12, "step {t}: {w} vs {p}");
    }
}

#[test]
fn state_is_addressable_by_name_and_round_trips() {
    let params = Params::<f64>::new();
    params.insert("a", arr(&[2], vec![1.0, 2.0])).unwrap();
    params.insert("b", arr(&[1], vec![3.0])).unwrap();
    let mut opt = Adam::new(AdamConfig::adam(0.1));
    opt.step(&params, &grads_for(&params, &[("a", vec![1.0, 1.0]), ("b", vec![2.0])]));
    assert_eq!(opt.state().get("a").unwrap().step, 1);
    opt.state_mut().copy("b", "c").unwrap();
    assert_eq!(opt.state().get("c").unwrap().buffers["m"], opt.state().get("b").unwrap().buffers["m"]);
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("opt.safetensors");
    opt.state().save(&path).unwrap();
    let back = OptimizerState::<f64>::load(&path).unwrap();
    assert_eq!(back.per_param, opt.state().per_param);
    opt.state_mut().reset("a");
    assert!(opt.state().get("a").is_none());
    // A frozen parameter is not updated and keeps no new state.
    params.get("b").unwrap().set_trainable(false);
    let before = params.get("b").unwrap().value();
    opt.step(&params, &grads_for(&params, &[("a", vec![1.0, 1.0])]));
    assert_eq!(params.get("b").unwrap().value(), before);
}

#[test]
fn schedules() {
    let s = Schedule::WarmupCosine { warmup: 10, total: 110, min_factor: 0.1 };
    assert!((s.factor(0) - 0.1).abs() < 1e-12);
    assert!((s.factor(9) - 1.0).abs() < 1e-12);
    assert!((s.factor(10) - 1.0).abs() < 1e-12);
    assert!((s.factor(60) - 0.55).abs() < 1e-12);
    assert!((s.factor(110) - 0.1).abs() < 1e-12);
    assert!((s.factor(1000) - 0.1).abs() < 1e-12);
    let l = Schedule::WarmupLinear { warmup: 0, total: 100, min_factor: 0.0 };
    assert!((l.factor(50) - 0.5).abs() < 1e-12);
    assert_eq!(Schedule::Constant.factor(7), 1.0);
    let json = serde_json::to_string(&s).unwrap();
    assert_eq!(serde_json::from_str::<Schedule>(&json).unwrap(), s);
}
