//! The graph is freed after every step: over thousands of training steps the number of live graph nodes
//! returns to zero and the process does not grow. (Its own binary: the node counter is process-wide.)

use strata_tensor::nn::{Activation, Mlp, Module};
use strata_tensor::optim::{Adam, AdamConfig, Optimizer};
use strata_tensor::{Params, Tensor, live_graph_nodes, normal, seeded};

#[test]
fn graph_is_freed_every_step() {
    let params = Params::<f32>::new();
    let mut rng = seeded(0);
    let mlp = Mlp::new(&params.root(), &[16, 32, 4], Activation::Relu, &mut rng);
    let x = Tensor::new(normal(&[8, 16], 0.0, 1.0, &mut rng));
    let labels = [0, 1, 2, 3, 0, 1, 2, 3];
    let mut opt = Adam::new(AdamConfig::adam(1e-3));
    for step in 0..3000 {
        let loss = mlp.forward(&x).cross_entropy(&labels);
        assert!(live_graph_nodes() > 0);
        let grads = loss.backward();
        drop(loss);
        assert_eq!(live_graph_nodes(), 0, "graph nodes leaked at step {step}");
        opt.step(&params, &grads);
    }
}
