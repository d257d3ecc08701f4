//! Closed forms in f64, independent of the trained models: preconditioned gradient descent on the prompt's
//! least-squares problem, the optimal step-size polynomial on `[1, kappa]` (Chebyshev) and the Newton-Schulz
//! iteration, each with its error rate.

use tensor::linalg::pinv;
use tensor::ndarray::{Array1, Array2};

use crate::error::{Result, invalid};
use crate::task::{TaskConfig, sample};

/// Weights after one preconditioned GD step per entry of `preconds` from `w = 0`:
/// `w <- w + (1/n) A_l X^T (y - X w)` (a looped model repeats one `A`).
pub fn gd_weights(preconds: &[Array2<f64>], x: &Array2<f64>, y: &Array1<f64>) -> Array1<f64> {
    let n = x.nrows() as f64;
    let mut w = Array1::zeros(x.ncols());
    for a in preconds {
        let residual = y - &x.dot(&w);
        w = &w + &(a.dot(&x.t().dot(&residual)) / n);
    }
    w
}

/// The prediction `x_q^T w_L` of [`gd_weights`].
pub fn gd_predict(preconds: &[Array2<f64>], x: &Array2<f64>, y: &Array1<f64>, xq: &Array1<f64>) -> f64 {
    xq.dot(&gd_weights(preconds, x, y))
}

/// The same prediction in closed form: `x_q^T [I - prod_l (I - A_l S)] S^+ X^T y / n` with `S = X^T X / n`
/// (pseudo-inverse: exact also when `n < d`, because `X^T y` lies in the range of `S`).
pub fn gd_predict_closed_form(
    preconds: &[Array2<f64>],
    x: &Array2<f64>,
    y: &Array1<f64>,
    xq: &Array1<f64>,
) -> Result<f64> {
    let (n, d) = x.dim();
    let s = x.t().dot(x) / n as f64;
    let mut product = Array2::<f64>::eye(d);
    // Later steps multiply on the left: w_L = sum_t (prod_{l>t} (I - A_l S)) A_t X^T y / n.
    for a in preconds {
        product = (Array2::<f64>::eye(d) - a.dot(&s)).dot(&product);
    }
    let s_pinv = pinv(&s, 1e-12)?;
    let w = (Array2::<f64>::eye(d) - product).dot(&s_pinv).dot(&x.t().dot(y)) / n as f64;
    Ok(xq.dot(&w))
}

/// Population loss `E[(prediction - y_q)^2]` of the GD predictor, estimated on `prompts` fresh prompts.
pub fn population_loss(
    preconds: &[Array2<f64>],
    task: &TaskConfig,
    prompts: usize,
    rng: &mut tensor::Rng,
) -> Result<f64> {
    if prompts == 0 {
        return Err(invalid("population_loss needs at least one prompt"));
    }
    let batch = sample(task, prompts, rng)?;
    let mut total = 0.0;
    for b in 0..prompts {
        let (x, y, xq) = batch.prompt(b);
        let err = gd_predict(preconds, &x, &y, &xq) - batch.y[[b, task.n]];
        total += err * err;
    }
    Ok(total / prompts as f64)
}

/// Chebyshev polynomial `T_L(x)` (any real `x`).
pub fn chebyshev_t(l: usize, x: f64) -> f64 {
    if x.abs() <= 1.0 {
        (l as f64 * x.acos()).cos()
    } else if x > 1.0 {
        (l as f64 * x.acosh()).cosh()
    } else {
        let v = (l as f64 * (-x).acosh()).cosh();
        if l % 2 == 0 { v } else { -v }
    }
}

/// Smallest possible `max_{lambda in [1, kappa]} |p(lambda)|` over polynomials of degree `l` with `p(0) = 1`
/// (the error factor of the best `l`-step GD with scalar step sizes): `1 / T_l((kappa+1)/(kappa-1))`.
pub fn chebyshev_rate(kappa: f64, l: usize) -> f64 {
    if kappa <= 1.0 {
        return if l == 0 { 1.0 } else { 0.0 };
    }
    1.0 / chebyshev_t(l, (kappa + 1.0) / (kappa - 1.0))
}

/// The step sizes that realise [`chebyshev_rate`]: `eta_i = 1 / lambda_i` at the Chebyshev nodes of `[1, kappa]`.
pub fn chebyshev_step_sizes(kappa: f64, l: usize) -> Vec<f64> {
    (1..=l)
        .map(|i| {
            let node = ((2 * i - 1) as f64 * std::f64::consts::PI / (2 * l) as f64).cos();
            1.0 / ((kappa + 1.0) / 2.0 + (kappa - 1.0) / 2.0 * node)
        })
        .collect()
}

/// `prod_i (1 - eta_i lambda)`: the residual factor of GD with these step sizes on an eigenvalue `lambda`.
pub fn residual_polynomial(steps: &[f64], lambda: f64) -> f64 {
    steps.iter().map(|eta| 1.0 - eta * lambda).product()
}

/// `max |residual_polynomial|` over a fine grid of `[1, kappa]` (a direct computation of the rate).
pub fn max_residual(steps: &[f64], kappa: f64, grid: usize) -> f64 {
    (0..=grid)
        .map(|i| residual_polynomial(steps, 1.0 + (kappa - 1.0) * i as f64 / grid as f64).abs())
        .fold(0.0, f64::max)
}

/// Newton-Schulz iterates for `S^-1`: `X_0 = alpha I`, `X_{k+1} = X_k (2I - S X_k)`; returns `X_1..X_iters`.
pub fn newton_schulz(s: &Array2<f64>, alpha: f64, iters: usize) -> Vec<Array2<f64>> {
    let d = s.nrows();
    let mut x = Array2::<f64>::eye(d) * alpha;
    (0..iters)
        .map(|_| {
            x = x.dot(&(Array2::<f64>::eye(d) * 2.0 - s.dot(&x)));
            x.clone()
        })
        .collect()
}

/// Error `||I - S X_k||_2` of Newton-Schulz for a spectrum in `[1, kappa]` started at `alpha = 2/(1+kappa)`:
/// `((kappa-1)/(kappa+1))^(2^k)` (the error squares each step, so `O(log kappa)` steps suffice).
pub fn newton_schulz_rate(kappa: f64, k: usize) -> f64 {
    ((kappa - 1.0) / (kappa + 1.0)).powf(2f64.powi(k as i32))
}

/// Spectral norm of a symmetric matrix (largest absolute eigenvalue).
pub fn symmetric_norm(a: &Array2<f64>) -> Result<f64> {
    let (vals, _) = tensor::linalg::eigh(a)?;
    Ok(vals.iter().fold(0.0f64, |m, v| m.max(v.abs())))
}

/// The best single preconditioner for `steps` GD steps, found by direct minimisation (Adam, f64) of the
/// closed-form loss on a fixed sample of `prompts` prompts. The GD iteration is written with tensor ops
/// here, independently of the LSA model code.
pub fn optimal_preconditioner(
    task: &TaskConfig,
    steps: usize,
    prompts: usize,
    iters: usize,
    rng: &mut tensor::Rng,
) -> Result<Array2<f64>> {
    use tensor::optim::{Adam, AdamConfig, Optimizer};
    use tensor::{Params, Tensor};
    let batch = sample(task, prompts, rng)?;
    let (d, n) = (task.d, task.n);
    let x = Tensor::<f64>::new(batch.x.slice(tensor::ndarray::s![.., ..n, ..]).to_owned().into_dyn());
    let xt = x.transpose(-2, -1);
    let y = Tensor::<f64>::new(
        batch
            .y
            .slice(tensor::ndarray::s![.., ..n])
            .to_owned()
            .into_shape_with_order((prompts, n, 1))
            .expect("size")
            .into_dyn(),
    );
    let xq = Tensor::<f64>::new(
        batch
            .x
            .slice(tensor::ndarray::s![.., n, ..])
            .to_owned()
            .into_shape_with_order((prompts, 1, d))
            .expect("size")
            .into_dyn(),
    );
    let yq = Tensor::<f64>::new(
        batch.y.column(n).to_owned().into_shape_with_order((prompts, 1, 1)).expect("size").into_dyn(),
    );
    let params = Params::<f64>::new();
    // Start from the scaled identity that one GD step would use.
    let a = params.insert("a", (Array2::<f64>::eye(d) * 0.5).into_dyn())?;
    let mut opt = Adam::new(AdamConfig::adam(0.02));
    let loss_of = |a: &Tensor<f64>| {
        let mut w = Tensor::<f64>::zeros(&[prompts, d, 1]);
        for _ in 0..steps {
            let residual = &y - &x.matmul(&w);
            w = &w + &a.matmul(&xt.matmul(&residual)).mul_scalar(1.0 / n as f64);
        }
        (&xq.matmul(&w) - &yq).square().mean_all()
    };
    for step in 0..iters {
        let loss = loss_of(&a.tensor());
        tensor::check_loss(step as u64, loss.item())?;
        let grads = loss.backward();
        opt.step(&params, &grads);
        if step == iters * 3 / 4 {
            opt.set_lr(0.004);
        }
    }
    Ok(a.value().into_shape_with_order((d, d)).expect("d x d"))
}
