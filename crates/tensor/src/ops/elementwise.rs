//! Broadcasting arithmetic and elementwise functions.

use std::ops::{Add, Div, Mul, Neg, Sub};

use ndarray::{ArrayD, IxDyn};

use super::{broadcast_or_panic, map, sum_to_shape, zip_map, zip3_map};
use crate::{Float, Tensor};

/// Which formula `gelu` uses.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub enum GeluApprox {
    /// `x * Phi(x)` with the exact normal CDF (PyTorch's default).
    Erf,
    /// `0.5 x (1 + tanh(sqrt(2/pi) (x + 0.044715 x^3)))` (GPT-2, JAX's default).
    Tanh,
}

#[track_caller]
fn binary<F: Float>(
    op: &str,
    a: &Tensor<F>,
    b: &Tensor<F>,
    f: impl Fn(F, F) -> F + Sync + Send,
    backward: impl Fn(&ArrayD<F>, &ArrayD<F>, &ArrayD<F>, &[bool]) -> (Option<ArrayD<F>>, Option<ArrayD<F>>)
    + Send
    + Sync
    + 'static,
) -> Tensor<F> {
    broadcast_or_panic(op, a.shape(), b.shape());
    let value = zip_map(a.value(), b.value(), f);
    let (ac, bc) = (a.clone(), b.clone());
    Tensor::from_op(value, &[a, b], move |g, needs| {
        let (ga, gb) = backward(g, ac.value(), bc.value(), needs);
        let fit = |x: ArrayD<F>, shape: &[usize]| if x.shape() == shape { x } else { sum_to_shape(&x, shape) };
        vec![ga.map(|x| fit(x, ac.shape())), gb.map(|x| fit(x, bc.shape()))]
    })
}

fn unary<F: Float>(
    x: &Tensor<F>,
    f: impl Fn(F) -> F + Sync + Send,
    df: impl Fn(F) -> F + Sync + Send + 'static,
) -> Tensor<F> {
    let value = map(x.value(), f);
    let xc = x.clone();
    Tensor::from_op(value, &[x], move |g, _| vec![Some(zip_map(g, xc.value(), |g, x| g * df(x)))])
}

impl<F: Float> Tensor<F> {
    #[track_caller]
    pub fn add(&self, other: &Tensor<F>) -> Tensor<F> {
        binary(
            "add",
            self,
            other,
            |x, y| x + y,
            |g, _, _, n| (n[0].then(|| super::copy(g)), n[1].then(|| super::copy(g))),
        )
    }

    #[track_caller]
    pub fn sub(&self, other: &Tensor<F>) -> Tensor<F> {
        binary(
            "sub",
            self,
            other,
            |x, y| x - y,
            |g, _, _, n| (n[0].then(|| super::copy(g)), n[1].then(|| map(g, |v| -v))),
        )
    }

    #[track_caller]
    pub fn mul(&self, other: &Tensor<F>) -> Tensor<F> {
        binary(
            "mul",
            self,
            other,
            |x, y| x * y,
            |g, a, b, n| (n[0].then(|| zip_map(g, b, |g, b| g * b)), n[1].then(|| zip_map(g, a, |g, a| g * a))),
        )
    }

    #[track_caller]
    pub fn div(&self, other: &Tensor<F>) -> Tensor<F> {
        binary(
            "div",
            self,
            other,
            |x, y| x / y,
            |g, a, b, n| {
                let ga = n[0].then(|| zip_map(g, b, |g, b| g / b));
                let gb = n[1].then(|| {
                    let gab = zip_map(g, a, |g, a| g * a);
                    zip_map(&gab, b, |ga, b| -ga / (b * b))
                });
                (ga, gb)
            },
        )
    }

    /// Elementwise maximum (the gradient goes to `self` on ties).
    #[track_caller]
    pub fn maximum(&self, other: &Tensor<F>) -> Tensor<F> {
        binary(
            "maximum",
            self,
            other,
            |x, y| if x >= y { x } else { y },
            |g, a, b, n| {
                let shape = g.shape().to_vec();
                let av = a.broadcast(IxDyn(&shape)).expect("broadcast").to_owned();
                let bv = b.broadcast(IxDyn(&shape)).expect("broadcast").to_owned();
                let ga = n[0].then(|| zip3_map(g, &av, &bv, |g, a, b| if a >= b { g } else { F::zero() }));
                let gb = n[1].then(|| zip3_map(g, &av, &bv, |g, a, b| if a >= b { F::zero() } else { g }));
                (ga, gb)
            },
        )
    }

    pub fn add_scalar(&self, s: F) -> Tensor<F> {
        unary(self, move |x| x + s, |_| F::one())
    }

    pub fn mul_scalar(&self, s: F) -> Tensor<F> {
        unary(self, move |x| x * s, move |_| s)
    }

    pub fn neg(&self) -> Tensor<F> {
        self.mul_scalar(-F::one())
    }

    /// `x^p` for a constant exponent.
    pub fn powf(&self, p: F) -> Tensor<F> {
        unary(self, move |x| x.powf(p), move |x| p * x.powf(p - F::one()))
    }

    pub fn square(&self) -> Tensor<F> {
        unary(self, |x| x * x, |x| x + x)
    }

    pub fn exp(&self) -> Tensor<F> {
        unary(self, |x| x.exp(), |x| x.exp())
    }

    /// Natural logarithm.
    pub fn ln(&self) -> Tensor<F> {
        unary(self, |x| x.ln(), |x| x.recip())
    }

    pub fn sqrt(&self) -> Tensor<F> {
        unary(self, |x| x.sqrt(), |x| F::of(0.5) / x.sqrt())
    }

    /// `|x|` (subgradient 0 at 0).
    pub fn abs(&self) -> Tensor<F> {
        unary(
            self,
            |x| x.abs(),
            |x| {
                if x > F::zero() {
                    F::one()
                } else if x < F::zero() {
                    -F::one()
                } else {
                    F::zero()
                }
            },
        )
    }

    pub fn tanh(&self) -> Tensor<F> {
        unary(
            self,
            |x| x.tanh(),
            |x| {
                let t = x.tanh();
                F::one() - t * t
            },
        )
    }

    pub fn sigmoid(&self) -> Tensor<F> {
        unary(self, sigmoid, |x| {
            let s = sigmoid(x);
            s * (F::one() - s)
        })
    }

    pub fn relu(&self) -> Tensor<F> {
        unary(self, |x| if x > F::zero() { x } else { F::zero() }, |x| if x > F::zero() { F::one() } else { F::zero() })
    }

    pub fn gelu(&self, approx: GeluApprox) -> Tensor<F> {
        match approx {
            GeluApprox::Erf => unary(self, gelu_erf, gelu_erf_grad),
            GeluApprox::Tanh => unary(self, gelu_tanh, gelu_tanh_grad),
        }
    }

    /// `ln(1 + e^x)`, computed stably.
    pub fn softplus(&self) -> Tensor<F> {
        unary(self, |x| x.max(F::zero()) + (-x.abs()).exp().ln_1p(), sigmoid)
    }

    /// Clamps into `[min, max]`; the gradient is zero outside.
    pub fn clamp(&self, min: F, max: F) -> Tensor<F> {
        unary(self, move |x| x.max(min).min(max), move |x| if x >= min && x <= max { F::one() } else { F::zero() })
    }

    /// `mask ? on_true : on_false`, all three broadcast together.
    #[track_caller]
    pub fn where_cond(mask: &ArrayD<bool>, on_true: &Tensor<F>, on_false: &Tensor<F>) -> Tensor<F> {
        let shape = broadcast_or_panic("where", on_true.shape(), on_false.shape());
        let shape = broadcast_or_panic("where", &shape, mask.shape());
        let dim = IxDyn(&shape);
        let m = mask.broadcast(dim.clone()).expect("broadcast");
        let t = on_true.value().broadcast(dim.clone()).expect("broadcast");
        let f = on_false.value().broadcast(dim).expect("broadcast");
        let value = ndarray::Zip::from(&m).and(&t).and(&f).par_map_collect(|&m, &t, &f| if m { t } else { f });
        let (ts, fs) = (on_true.shape().to_vec(), on_false.shape().to_vec());
        let mask = mask.clone();
        Tensor::from_op(value, &[on_true, on_false], move |g, n| {
            let m = mask.broadcast(g.raw_dim()).expect("broadcast");
            let pick = |keep: bool| {
                ndarray::Zip::from(g).and(&m).par_map_collect(|&g, &m| if m == keep { g } else { F::zero() })
            };
            vec![n[0].then(|| sum_to_shape(&pick(true), &ts)), n[1].then(|| sum_to_shape(&pick(false), &fs))]
        })
    }

    /// Replaces the entries where `mask` (broadcast to this shape) is true by `value`.
    #[track_caller]
    pub fn masked_fill(&self, mask: &ArrayD<bool>, value: F) -> Tensor<F> {
        let fill = Tensor::full(&[], value);
        Tensor::where_cond(mask, &fill, self)
    }
}

#[inline]
pub(crate) fn sigmoid<F: Float>(x: F) -> F {
    if x >= F::zero() {
        F::one() / (F::one() + (-x).exp())
    } else {
        let e = x.exp();
        e / (F::one() + e)
    }
}

const SQRT_2_OVER_PI: f64 = 0.797_884_560_802_865_4;

fn gelu_erf<F: Float>(x: F) -> F {
    F::of(0.5) * x * (F::one() + (x * F::of(std::f64::consts::FRAC_1_SQRT_2)).erf())
}

fn gelu_erf_grad<F: Float>(x: F) -> F {
    let cdf = F::of(0.5) * (F::one() + (x * F::of(std::f64::consts::FRAC_1_SQRT_2)).erf());
    let pdf = (F::of(-0.5) * x * x).exp_fast() * F::of(0.398_942_280_401_432_7);
    cdf + x * pdf
}

/// `tanh` through one `exp` (libm's `tanhf` costs several times more; this is exact to a few ulps and
/// saturates correctly: `exp` overflowing to infinity gives 1).
#[inline]
fn fast_tanh<F: Float>(x: F) -> F {
    let e = (x + x).exp_fast();
    F::one() - F::of(2.0) / (e + F::one())
}

fn gelu_tanh<F: Float>(x: F) -> F {
    let inner = F::of(SQRT_2_OVER_PI) * (x + F::of(0.044715) * x * x * x);
    F::of(0.5) * x * (F::one() + fast_tanh(inner))
}

fn gelu_tanh_grad<F: Float>(x: F) -> F {
    let inner = F::of(SQRT_2_OVER_PI) * (x + F::of(0.044715) * x * x * x);
    let t = fast_tanh(inner);
    let dinner = F::of(SQRT_2_OVER_PI) * (F::one() + F::of(3.0 * 0.044715) * x * x);
    F::of(0.5) * (F::one() + t) + F::of(0.5) * x * (F::one() - t * t) * dinner
}

macro_rules! binary_operator {
    ($trait:ident, $method:ident, $scalar:expr) => {
        impl<F: Float> $trait<&Tensor<F>> for &Tensor<F> {
            type Output = Tensor<F>;
            #[track_caller]
            fn $method(self, rhs: &Tensor<F>) -> Tensor<F> {
                Tensor::$method(self, rhs)
            }
        }
        impl<F: Float> $trait<Tensor<F>> for Tensor<F> {
            type Output = Tensor<F>;
            #[track_caller]
            fn $method(self, rhs: Tensor<F>) -> Tensor<F> {
                Tensor::$method(&self, &rhs)
            }
        }
        impl<F: Float> $trait<&Tensor<F>> for Tensor<F> {
            type Output = Tensor<F>;
            #[track_caller]
            fn $method(self, rhs: &Tensor<F>) -> Tensor<F> {
                Tensor::$method(&self, rhs)
            }
        }
        impl<F: Float> $trait<Tensor<F>> for &Tensor<F> {
            type Output = Tensor<F>;
            #[track_caller]
            fn $method(self, rhs: Tensor<F>) -> Tensor<F> {
                Tensor::$method(self, &rhs)
            }
        }
        impl<F: Float> $trait<F> for &Tensor<F> {
            type Output = Tensor<F>;
            fn $method(self, rhs: F) -> Tensor<F> {
                #[allow(clippy::redundant_closure_call)]
                ($scalar)(self, rhs)
            }
        }
        impl<F: Float> $trait<F> for Tensor<F> {
            type Output = Tensor<F>;
            fn $method(self, rhs: F) -> Tensor<F> {
                #[allow(clippy::redundant_closure_call)]
                ($scalar)(&self, rhs)
            }
        }
    };
}

binary_operator!(Add, add, |t: &Tensor<F>, s: F| t.add_scalar(s));
binary_operator!(Sub, sub, |t: &Tensor<F>, s: F| t.add_scalar(-s));
binary_operator!(Mul, mul, |t: &Tensor<F>, s: F| t.mul_scalar(s));
binary_operator!(Div, div, |t: &Tensor<F>, s: F| t.mul_scalar(F::one() / s));

impl<F: Float> Neg for &Tensor<F> {
    type Output = Tensor<F>;
    fn neg(self) -> Tensor<F> {
        Tensor::neg(self)
    }
}

impl<F: Float> Neg for Tensor<F> {
    type Output = Tensor<F>;
    fn neg(self) -> Tensor<F> {
        Tensor::neg(&self)
    }
}
