//! Training many small models on subsets of a training set and recording their test outputs (the raw material
//! of datamodels). The models, trained through strata-tensor on two MNIST digits: L2-regularised logistic
//! regression (full-batch gradient descent from zero) and a one-hidden-layer MLP (full-batch AdamW from a fixed
//! seeded init). A model's output on a test point is its margin (the correct class's logit minus the other's).

use serde::{Deserialize, Serialize};
use tensor::ndarray::{ArrayD, Axis, IxDyn};
use tensor::{Tensor, Var};

use crate::{Error, Result};

/// A binary task: flattened images in [0, 1] with labels +-1.
#[derive(Debug, Clone)]
pub struct BinaryTask {
    /// `[N, D]` training pool the subsets are drawn from.
    pub train_x: ArrayD<f32>,
    pub train_y: Vec<f32>,
    /// `[T, D]` test points whose margins are recorded.
    pub test_x: ArrayD<f32>,
    pub test_y: Vec<f32>,
}

impl BinaryTask {
    /// The first `n_train` training and `n_test` test images of digits `positive` and `negative`.
    pub fn mnist(
        mnist: &data::mnist::Mnist,
        positive: u8,
        negative: u8,
        n_train: usize,
        n_test: usize,
    ) -> Result<Self> {
        let pick = |set: &data::mnist::ImageSet, n: usize| -> Result<(ArrayD<f32>, Vec<f32>)> {
            let idx: Vec<usize> =
                (0..set.len()).filter(|&i| set.labels[i] == positive || set.labels[i] == negative).take(n).collect();
            if idx.len() < n {
                return Err(Error::InvalidArgument(format!(
                    "only {} images of digits {positive}/{negative}",
                    idx.len()
                )));
            }
            let (x, _) = set.batch(&idx);
            let d = set.rows * set.cols;
            let x = x.into_shape_with_order(IxDyn(&[n, d])).expect("flatten");
            Ok((x, idx.iter().map(|&i| if set.labels[i] == positive { 1.0 } else { -1.0 }).collect()))
        };
        let (train_x, train_y) = pick(&mnist.train, n_train)?;
        let (test_x, test_y) = pick(&mnist.test, n_test)?;
        Ok(BinaryTask { train_x, train_y, test_x, test_y })
    }

    pub fn n_train(&self) -> usize {
        self.train_y.len()
    }

    /// The training inputs `[k, D]` and labels `[k, 1]` of the subset `mask`, or `None` for the empty subset.
    fn subset(&self, mask: &[bool]) -> Result<Option<(Tensor<f32>, Tensor<f32>)>> {
        if mask.len() != self.n_train() {
            return Err(Error::Shape(format!("mask of {} for a pool of {}", mask.len(), self.n_train())));
        }
        let idx: Vec<usize> = (0..mask.len()).filter(|&i| mask[i]).collect();
        if idx.is_empty() {
            return Ok(None);
        }
        let x = Tensor::new(self.train_x.select(Axis(0), &idx));
        let y = Tensor::from_vec(idx.iter().map(|&i| self.train_y[i]).collect(), &[idx.len(), 1]);
        Ok(Some((x, y)))
    }

    /// Margins y_t * logit(x_t) on the test points, for a `[T, D] -> [T, 1]` logit function.
    fn margins(&self, logit: impl FnOnce(&Tensor<f32>) -> Tensor<f32>) -> Vec<f64> {
        let logits = tensor::no_grad(|| logit(&Tensor::new(self.test_x.clone())));
        logits.value().iter().zip(&self.test_y).map(|(z, y)| (*z * *y) as f64).collect()
    }
}

/// The logistic loss log(1 + exp(-y z)), averaged.
fn logistic_loss(logits: &Tensor<f32>, y: &Tensor<f32>) -> Tensor<f32> {
    (logits * y).neg().softplus().mean_all()
}

/// Logistic-regression training settings.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LogisticConfig {
    pub steps: usize,
    pub lr: f64,
    pub l2: f64,
}

impl Default for LogisticConfig {
    fn default() -> Self {
        LogisticConfig { steps: 60, lr: 0.5, l2: 1e-2 }
    }
}

/// Trains on the subset `mask` of the pool and returns the margins y_t * logit(x_t) on the test points. An empty
/// subset gives the untrained model (all margins 0). A NaN/inf loss is an error naming the step.
pub fn train_logistic(task: &BinaryTask, mask: &[bool], cfg: &LogisticConfig) -> Result<Vec<f64>> {
    let d = task.train_x.shape()[1];
    let w = Var::new(ArrayD::<f32>::zeros(IxDyn(&[d, 1])));
    let b = Var::new(ArrayD::<f32>::zeros(IxDyn(&[1])));
    if let Some((x, y)) = task.subset(mask)? {
        for step in 0..cfg.steps {
            let (wt, bt) = (w.tensor(), b.tensor());
            let z = &x.matmul(&wt) + &bt;
            let loss = logistic_loss(&z, &y) + (&wt * &wt).sum_all().mul_scalar(cfg.l2 as f32 / 2.0);
            tensor::check_loss(step as u64, loss.item() as f64)?;
            let grads = loss.backward();
            for v in [&w, &b] {
                if let Some(g) = grads.get_id(v.id()) {
                    let g = g.clone();
                    v.update(|val| val.scaled_add(-cfg.lr as f32, &g));
                }
            }
        }
    }
    Ok(task.margins(|x| &x.matmul(&w.tensor()) + &b.tensor()))
}

/// Models per block in [`train_logistic_many`]: wide enough that the pool products run at matrix-product speed,
/// narrow enough that blocks spread over the cores.
pub const LOGISTIC_BLOCK: usize = 256;

/// [`train_logistic`] for many subsets at once: the same models (to float rounding), trained as blocks of
/// [`LOGISTIC_BLOCK`] models that share the pool, so that a gradient step of a whole block is two matrix
/// products, `Z = X W` (`[pool, models]`) and `X^T R` (`[features, models]`) with `R` the masked, per-model scaled
/// residuals, instead of one small product per model. Blocks run in parallel; a model's numbers depend on
/// neither the block it is in nor the thread count. Returns one row of test margins per mask.
pub fn train_logistic_many(task: &BinaryTask, masks: &[Vec<bool>], cfg: &LogisticConfig) -> Result<Vec<Vec<f64>>> {
    use rayon::prelude::*;
    let blocks: Vec<Vec<Vec<f64>>> =
        masks.par_chunks(LOGISTIC_BLOCK).map(|block| train_logistic_block(task, block, cfg)).collect::<Result<_>>()?;
    Ok(blocks.into_iter().flatten().collect())
}

/// One block (at most [`LOGISTIC_BLOCK`] masks) of [`train_logistic_many`], in a single thread.
pub fn train_logistic_block(task: &BinaryTask, masks: &[Vec<bool>], cfg: &LogisticConfig) -> Result<Vec<Vec<f64>>> {
    use tensor::ndarray::{Array1, Array2, Zip};
    // Single-threaded BLAS under rayon, and heap (not mmap) for the per-step arrays: as for Strata's own products.
    tensor::runtime_setup();
    let block = Block::new(task, masks)?;
    let (n, d, b, x) = (task.n_train(), block.x.ncols(), LOGISTIC_BLOCK, block.x);
    let (lr, l2) = (cfg.lr as f32, cfg.l2 as f32);
    let mut w = Array2::<f32>::zeros((d, b));
    let mut bias = Array1::<f32>::zeros(b);
    let mut residual = Array2::<f32>::zeros((n, b));
    let mut losses = vec![0.0f64; b];
    for step in 0..cfg.steps {
        let z = x.dot(&w) + &bias;
        block.residuals(&z, &mut residual, &mut losses);
        for (j, loss) in losses.iter().enumerate() {
            let penalty = w.column(j).iter().map(|&v| (v * v) as f64).sum::<f64>() * cfg.l2 / 2.0;
            tensor::check_loss(step as u64, loss + penalty)
                .map_err(|e| Error::Numerical(format!("model {j} of the block: {e}")))?;
        }
        let grad_w = x.t().dot(&residual);
        let grad_b = residual.sum_axis(tensor::ndarray::Axis(0));
        Zip::from(&mut w).and(&grad_w).for_each(|w, &g| *w -= lr * (g + l2 * *w));
        bias.scaled_add(-lr, &grad_b);
    }
    Ok(block.margins(&(block.test.dot(&w) + &bias)))
}

/// `(softplus(a), sigmoid(a))` without overflow: the logistic loss at margin `-a` and its derivative's factor.
fn logistic_terms(a: f32) -> (f32, f32) {
    let softplus = a.max(0.0) + (-a.abs()).exp().ln_1p();
    let sigmoid = if a >= 0.0 { 1.0 / (1.0 + (-a).exp()) } else { a.exp() / (1.0 + a.exp()) };
    (softplus, sigmoid)
}

/// What a block of models shares: the pool and test points, and per model the weight of each pool point in its
/// loss. Blocks are padded with empty (untrained) models to the full width, so every block has the same product
/// shapes and a model's arithmetic does not depend on how many models share its block (BLAS picks kernels by
/// shape).
struct Block<'a> {
    x: tensor::ndarray::ArrayView2<'a, f32>,
    test: tensor::ndarray::ArrayView2<'a, f32>,
    test_y: &'a [f32],
    y: &'a [f32],
    /// `weight[i, j] = 1 / |S_j|` for `i` in model `j`'s subset (its loss is the mean over it), 0 elsewhere.
    weight: tensor::ndarray::Array2<f32>,
    /// Models with a non-empty subset (an empty one keeps its init, as in the one-model paths).
    trained: Vec<bool>,
    /// Models that are not padding.
    real: usize,
}

impl<'a> Block<'a> {
    fn new(task: &'a BinaryTask, masks: &[Vec<bool>]) -> Result<Self> {
        use tensor::ndarray::Ix2;
        let n = task.n_train();
        if let Some(bad) = masks.iter().find(|m| m.len() != n) {
            return Err(Error::Shape(format!("mask of {} for a pool of {n}", bad.len())));
        }
        if masks.len() > LOGISTIC_BLOCK {
            return Err(Error::InvalidArgument(format!(
                "a block of {} models (at most {LOGISTIC_BLOCK})",
                masks.len()
            )));
        }
        let x = task.train_x.view().into_dimensionality::<Ix2>().map_err(|e| Error::Shape(format!("pool: {e}")))?;
        let test = task.test_x.view().into_dimensionality::<Ix2>().map_err(|e| Error::Shape(format!("test: {e}")))?;
        let mut weight = tensor::ndarray::Array2::<f32>::zeros((n, LOGISTIC_BLOCK));
        let mut trained = vec![false; LOGISTIC_BLOCK];
        for (j, m) in masks.iter().enumerate() {
            let k = m.iter().filter(|&&v| v).count();
            trained[j] = k > 0;
            for i in (0..n).filter(|&i| m[i]) {
                weight[[i, j]] = 1.0 / k as f32;
            }
        }
        Ok(Block { x, test, test_y: &task.test_y, y: &task.train_y, weight, trained, real: masks.len() })
    }

    /// For logits `z` (`[pool, models]`): `dLoss_j/dz_ij = weight_ij (-y_i) sigmoid(-y_i z_ij)` into `residual`,
    /// and each model's loss `sum_i weight_ij softplus(-y_i z_ij)` into `losses`.
    fn residuals(
        &self,
        z: &tensor::ndarray::Array2<f32>,
        residual: &mut tensor::ndarray::Array2<f32>,
        losses: &mut [f64],
    ) {
        losses.iter_mut().for_each(|l| *l = 0.0);
        tensor::ndarray::Zip::indexed(residual).and(z).and(&self.weight).for_each(|(i, j), r, &zij, &wij| {
            if wij == 0.0 {
                *r = 0.0;
                return;
            }
            let (softplus, sigmoid) = logistic_terms(-self.y[i] * zij);
            losses[j] += (wij * softplus) as f64;
            *r = wij * -self.y[i] * sigmoid;
        });
    }

    /// Test margins `y_t z_tj` of the real models from test logits `[tests, models]`.
    fn margins(&self, logits: &tensor::ndarray::Array2<f32>) -> Vec<Vec<f64>> {
        (0..self.real)
            .map(|j| logits.column(j).iter().zip(self.test_y).map(|(z, y)| (z * y) as f64).collect())
            .collect()
    }
}

/// Small-MLP training settings: one hidden ReLU layer, full-batch Adam from a seeded init.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MlpConfig {
    pub hidden: usize,
    pub steps: usize,
    pub lr: f64,
    pub l2: f64,
    /// Initialisation seed: fixed across subsets, so differences between rows come from the data only.
    pub seed: u64,
}

impl Default for MlpConfig {
    fn default() -> Self {
        MlpConfig { hidden: 32, steps: 60, lr: 1e-2, l2: 1e-3, seed: 0 }
    }
}

/// Trains a one-hidden-layer MLP (ReLU, logistic loss) on the subset `mask` and returns the test margins.
pub fn train_mlp(task: &BinaryTask, mask: &[bool], cfg: &MlpConfig) -> Result<Vec<f64>> {
    use tensor::nn::{Linear, Module};
    use tensor::optim::{Adam, AdamConfig, Optimizer};
    if cfg.hidden == 0 || !(cfg.lr > 0.0) {
        return Err(Error::InvalidArgument(format!("MLP config {cfg:?}")));
    }
    let d = task.train_x.shape()[1];
    let params = tensor::Params::<f32>::new();
    let mut rng = tensor::seeded(cfg.seed);
    let fc1 = Linear::new(&params.root().sub("fc1"), d, cfg.hidden, true, &mut rng);
    let fc2 = Linear::new(&params.root().sub("fc2"), cfg.hidden, 1, true, &mut rng);
    let forward = |x: &Tensor<f32>| fc2.forward(&fc1.forward(x).relu());
    if let Some((x, y)) = task.subset(mask)? {
        let mut opt = Adam::new(AdamConfig::adamw(cfg.lr, cfg.l2));
        for step in 0..cfg.steps {
            let loss = logistic_loss(&forward(&x), &y);
            tensor::check_loss(step as u64, loss.item() as f64)?;
            opt.step(&params, &loss.backward());
        }
    }
    Ok(task.margins(forward))
}

/// [`train_mlp`] for many subsets at once, in blocks of [`LOGISTIC_BLOCK`] models trained in parallel: every model
/// starts from the same seeded init, and a block's hidden layers are one `[features, models x hidden]` weight
/// matrix, so the forward product and the first layer's gradient are single matrix products over the shared pool.
/// AdamW is applied elementwise exactly as [`tensor::optim::Adam`] does. Equal to the one-model path to float
/// rounding (tested); a model's numbers do not depend on its block or the thread count. On a CPU it is slower than
/// [`train_mlp`] one model per task (143 against 321 models/s on the 100-image benchmark): each model's products
/// are already matrix-sized there, and the block computes over the whole pool instead of each subset's rows; the
/// workers therefore keep the per-model path for MLPs.
pub fn train_mlp_many(task: &BinaryTask, masks: &[Vec<bool>], cfg: &MlpConfig) -> Result<Vec<Vec<f64>>> {
    use rayon::prelude::*;
    let blocks: Vec<Vec<Vec<f64>>> =
        masks.par_chunks(LOGISTIC_BLOCK).map(|block| train_mlp_block(task, block, cfg)).collect::<Result<_>>()?;
    Ok(blocks.into_iter().flatten().collect())
}

/// One block (at most [`LOGISTIC_BLOCK`] masks) of [`train_mlp_many`], in a single thread.
pub fn train_mlp_block(task: &BinaryTask, masks: &[Vec<bool>], cfg: &MlpConfig) -> Result<Vec<Vec<f64>>> {
    use tensor::ndarray::{Array1, Array2, Axis, Zip};
    use tensor::nn::Linear;
    tensor::runtime_setup();
    if cfg.hidden == 0 || !(cfg.lr > 0.0) {
        return Err(Error::InvalidArgument(format!("MLP config {cfg:?}")));
    }
    let block = Block::new(task, masks)?;
    let (n, d, b, h, x) = (task.n_train(), block.x.ncols(), LOGISTIC_BLOCK, cfg.hidden, block.x);
    // The one-model path's init, drawn the same way, tiled across the block.
    let params = tensor::Params::<f32>::new();
    let mut rng = tensor::seeded(cfg.seed);
    let fc1 = Linear::new(&params.root().sub("fc1"), d, h, true, &mut rng);
    let fc2 = Linear::new(&params.root().sub("fc2"), h, 1, true, &mut rng);
    let (w1_0, b1_0) = (fc1.weight.value(), fc1.bias.as_ref().expect("bias").value());
    let (w2_0, b2_0) = (fc2.weight.value(), fc2.bias.as_ref().expect("bias").value());
    let mut w1 = Array2::<f32>::from_shape_fn((d, b * h), |(i, c)| w1_0[[c % h, i]]);
    let mut b1 = Array1::<f32>::from_shape_fn(b * h, |c| b1_0[[c % h]]);
    let mut w2 = Array2::<f32>::from_shape_fn((b, h), |(_, k)| w2_0[[0, k]]);
    let mut b2 = Array1::<f32>::from_elem(b, b2_0[[0]]);
    let trained = &block.trained;
    let opt = tensor::optim::AdamConfig::adamw(cfg.lr, cfg.l2);
    let mut moments = [(); 4].map(|_| (Vec::<f32>::new(), Vec::<f32>::new()));
    let (mut dz, mut losses) = (Array2::<f32>::zeros((n, b)), vec![0.0f64; b]);
    let forward = |xs: tensor::ndarray::ArrayView2<f32>,
                   w1: &Array2<f32>,
                   b1: &Array1<f32>,
                   w2: &Array2<f32>,
                   b2: &Array1<f32>| {
        let pre = xs.dot(w1) + b1;
        let act = pre.mapv(|v| v.max(0.0));
        let mut z = Array2::<f32>::zeros((xs.nrows(), b));
        for j in 0..b {
            let block = act.slice(tensor::ndarray::s![.., j * h..(j + 1) * h]);
            z.column_mut(j).assign(&(block.dot(&w2.row(j)) + b2[j]));
        }
        (pre, act, z)
    };
    for step in 0..cfg.steps {
        let (pre, act, z) = forward(x, &w1, &b1, &w2, &b2);
        block.residuals(&z, &mut dz, &mut losses);
        for (j, loss) in losses.iter().enumerate().filter(|(j, _)| trained[*j]) {
            tensor::check_loss(step as u64, *loss)
                .map_err(|e| Error::Numerical(format!("model {j} of the block: {e}")))?;
        }
        let mut d_pre = Array2::<f32>::zeros((n, b * h));
        let mut g_w2 = Array2::<f32>::zeros((b, h));
        for j in 0..b {
            let cols = tensor::ndarray::s![.., j * h..(j + 1) * h];
            let dzj = dz.column(j);
            g_w2.row_mut(j).assign(&act.slice(cols).t().dot(&dzj));
            let mut dp = d_pre.slice_mut(cols);
            Zip::indexed(&mut dp).and(pre.slice(cols)).for_each(|(i, k), g, &p| {
                *g = if p > 0.0 { dzj[i] * w2[[j, k]] } else { 0.0 };
            });
        }
        let g_b2 = dz.sum_axis(Axis(0));
        let g_w1 = x.t().dot(&d_pre);
        let g_b1 = d_pre.sum_axis(Axis(0));
        let t = step as i32 + 1;
        // Model j owns columns j*h..(j+1)*h of w1 and b1, row j of w2, entry j of b2.
        let owner_w1 = |idx: usize| trained[(idx % (b * h)) / h];
        let owner_b1 = |idx: usize| trained[idx / h];
        let owner_w2 = |idx: usize| trained[idx / h];
        let owner_b2 = |idx: usize| trained[idx];
        adamw(
            w1.as_slice_mut().expect("standard"),
            g_w1.as_slice().expect("standard"),
            &mut moments[0],
            &opt,
            t,
            owner_w1,
        );
        adamw(
            b1.as_slice_mut().expect("standard"),
            g_b1.as_slice().expect("standard"),
            &mut moments[1],
            &opt,
            t,
            owner_b1,
        );
        adamw(
            w2.as_slice_mut().expect("standard"),
            g_w2.as_slice().expect("standard"),
            &mut moments[2],
            &opt,
            t,
            owner_w2,
        );
        adamw(
            b2.as_slice_mut().expect("standard"),
            g_b2.as_slice().expect("standard"),
            &mut moments[3],
            &opt,
            t,
            owner_b2,
        );
    }
    let (_, _, z) = forward(block.test, &w1, &b1, &w2, &b2);
    Ok(block.margins(&z))
}

/// One AdamW step on the entries whose model trains, with the arithmetic of [`tensor::optim::Adam`].
fn adamw(
    p: &mut [f32],
    g: &[f32],
    (m, v): &mut (Vec<f32>, Vec<f32>),
    c: &tensor::optim::AdamConfig,
    t: i32,
    trains: impl Fn(usize) -> bool,
) {
    if m.is_empty() {
        *m = vec![0.0; p.len()];
        *v = vec![0.0; p.len()];
    }
    let (bc1, bc2) = (1.0 - c.beta1.powi(t), 1.0 - c.beta2.powi(t));
    let (b1, b2) = (c.beta1 as f32, c.beta2 as f32);
    let step_size = (c.lr / bc1) as f32;
    let inv_sqrt_bc2 = (1.0 / bc2.sqrt()) as f32;
    let (eps, decay) = (c.eps as f32, (1.0 - c.lr * c.weight_decay) as f32);
    for i in (0..p.len()).filter(|&i| trains(i)) {
        p[i] *= decay;
        m[i] = b1 * m[i] + (1.0 - b1) * g[i];
        v[i] = b2 * v[i] + (1.0 - b2) * g[i] * g[i];
        p[i] -= step_size * m[i] / (v[i].sqrt() * inv_sqrt_bc2 + eps);
    }
}
