//! The element type: `f32` for training, `f64` for gradient checks and theory.

use std::fmt::{Debug, Display};
use std::iter::Sum;
use std::ops::{AddAssign, DivAssign, MulAssign, SubAssign};

use ndarray::{LinalgScalar, ScalarOperand};

/// Floating-point element of a [`crate::Tensor`]. Implemented for `f32` and `f64` only.
pub trait Float:
    num_traits::Float
    + num_traits::FromPrimitive
    + LinalgScalar
    + ScalarOperand
    + Sum
    + AddAssign
    + SubAssign
    + MulAssign
    + DivAssign
    + Default
    + Debug
    + Display
    + Send
    + Sync
    + 'static
{
    /// The safetensors dtype name of this element.
    const DTYPE_NAME: &'static str;

    /// Lossy conversion from `f64` (used for constants in op code).
    fn of(x: f64) -> Self;

    /// Conversion to `f64`.
    fn to_f64_lossy(self) -> f64;

    /// The error function.
    fn erf(self) -> Self;

    /// `e^x` for finite inputs, written to vectorise: for `f32` a branch-free range reduction and a degree-6
    /// polynomial (relative error below 3e-7 over the whole range, saturating to ~1e-38 below -87 and
    /// ~1.7e38 above 88); for `f64` it is `exp`. Used on hot paths whose inputs are finite.
    #[inline(always)]
    fn exp_fast(self) -> Self {
        self.exp()
    }

    /// `C = alpha * A B + beta * C` for row/column-strided matrices; single-threaded
    /// (used inside parallel loops over batches, where a threaded BLAS would oversubscribe).
    ///
    /// # Safety
    /// Pointers and strides must describe valid, non-overlapping (for `c`) matrices of the given sizes.
    #[allow(clippy::missing_safety_doc)]
    unsafe fn gemm_raw(
        m: usize,
        k: usize,
        n: usize,
        alpha: Self,
        a: *const Self,
        rsa: isize,
        csa: isize,
        b: *const Self,
        rsb: isize,
        csb: isize,
        beta: Self,
        c: *mut Self,
        rsc: isize,
        csc: isize,
    );
}

impl Float for f32 {
    const DTYPE_NAME: &'static str = "F32";
    #[inline(always)]
    fn exp_fast(self) -> Self {
        const LOG2E: f32 = std::f32::consts::LOG2_E;
        const LN2_HI: f32 = 0.693_145_75;
        const LN2_LO: f32 = 1.428_606_8e-6;
        let x = self.clamp(-87.0, 88.0);
        // Round to nearest by adding and subtracting 1.5 * 2^23 (no `floor` call on baseline x86-64).
        const SHIFTER: f32 = 12_582_912.0;
        let shifted = x * LOG2E + SHIFTER;
        let k = shifted - SHIFTER;
        let r = x - k * LN2_HI - k * LN2_LO;
        let p =
            1.0 + r * (1.0 + r * (0.5 + r * (1.0 / 6.0 + r * (1.0 / 24.0 + r * (1.0 / 120.0 + r * (1.0 / 720.0))))));
        // k as an integer read from the bits (ulp 1 in [2^23, 2^24)): `k as i32` is a saturating conversion
        // that keeps loops over this function from vectorising.
        let k_int = shifted.to_bits().wrapping_sub(SHIFTER.to_bits()) as i32;
        p * f32::from_bits(((k_int + 127) as u32) << 23)
    }
    #[inline]
    fn of(x: f64) -> Self {
        x as f32
    }
    #[inline]
    fn to_f64_lossy(self) -> f64 {
        self as f64
    }
    /// Abramowitz & Stegun 7.1.26 (1.5e-7) in f32 arithmetic: absolute error below 6e-7, branch-free so
    /// GELU over a tensor vectorises; libm's `erff` was a tenth of a small GPT's step.
    #[inline]
    fn erf(self) -> Self {
        let a = self.abs();
        let t = 1.0 / (1.0 + 0.327_591_1 * a);
        let poly = t * (0.254_829_6 + t * (-0.284_496_74 + t * (1.421_413_8 + t * (-1.453_152 + t * 1.061_405_4))));
        (1.0 - poly * (-a * a).exp_fast()).copysign(self)
    }
    unsafe fn gemm_raw(
        m: usize,
        k: usize,
        n: usize,
        alpha: Self,
        a: *const Self,
        rsa: isize,
        csa: isize,
        b: *const Self,
        rsb: isize,
        csb: isize,
        beta: Self,
        c: *mut Self,
        rsc: isize,
        csc: isize,
    ) {
        // SAFETY: forwarded contract.
        unsafe { matrixmultiply::sgemm(m, k, n, alpha, a, rsa, csa, b, rsb, csb, beta, c, rsc, csc) }
    }
}

impl Float for f64 {
    const DTYPE_NAME: &'static str = "F64";
    #[inline]
    fn of(x: f64) -> Self {
        x
    }
    #[inline]
    fn to_f64_lossy(self) -> f64 {
        self
    }
    #[inline]
    fn erf(self) -> Self {
        libm::erf(self)
    }
    unsafe fn gemm_raw(
        m: usize,
        k: usize,
        n: usize,
        alpha: Self,
        a: *const Self,
        rsa: isize,
        csa: isize,
        b: *const Self,
        rsb: isize,
        csb: isize,
        beta: Self,
        c: *mut Self,
        rsc: isize,
        csc: isize,
    ) {
        // SAFETY: forwarded contract.
        unsafe { matrixmultiply::dgemm(m, k, n, alpha, a, rsa, csa, b, rsb, csb, beta, c, rsc, csc) }
    }
}
