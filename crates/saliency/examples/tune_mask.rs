//! Sweeps the simple method's cell size, TV and L1 weights on a trained MNIST net (from a complete-sound run) and
//! prints completeness and soundness areas: `cargo run --release -p strata-saliency --example tune_mask -- <run dir>`.
use strata_saliency::Result;
use strata_saliency::*;

fn main() -> Result<()> {
    let dir = std::path::PathBuf::from(std::env::args().nth(1).expect("run dir with mnist_cnn.safetensors"));
    let net = ConvNet::load(ConvNetConfig::small(1, 28, 28, 10), &dir.join("mnist_cnn.safetensors"))?;
    net.freeze();
    let root = std::env::var_os("STRATA_DATA").map(std::path::PathBuf::from);
    let mnist = data::mnist::Mnist::load(&data::resolve_unverified("mnist", root.as_deref())?)?;
    let eval = LabelledImages::from_mnist(&mnist.test.truncated(100));
    let mean = mnist.train.mean_pixel();
    let wrong = random_wrong_labels(&eval.labels, 10, 7);
    let ks = vec![0.02, 0.05, 0.1, 0.15, 0.2, 0.3, 0.5];
    for (cell, tv, l1) in [
        (4, 1.0, 10.0),
        (4, 1.0, 20.0),
        (4, 3.0, 10.0),
        (7, 1.0, 10.0),
        (1, 0.0, 10.0),
        (1, 0.0, 20.0),
        (4, 0.0, 10.0),
        (1, 1.0, 10.0),
    ] {
        let m = MaskOptimisation { cell, tv, l1, ..MaskOptimisation::p9(Replacement::Constant(mean)) };
        let maps = m.attribute(&net, &eval.images, &eval.labels)?;
        let wmaps = m.attribute(&net, &eval.images, &wrong)?;
        let input = MetricInput::new(&net, &eval.images, &eval.labels, &maps)?.with_wrong(&wrong, &wmaps)?;
        let c = Completeness::new(ks.clone(), Replacement::Constant(mean)).evaluate(&input)?;
        let s = Soundness::new(ks.clone(), Replacement::Constant(mean)).evaluate(&input)?;
        println!("cell {cell:2} tv {tv} l1 {l1}: completeness {:.3} soundness {:.3}", c.value, s.value);
    }
    Ok(())
}
