//! Quantization parameters and the integer arithmetic specification.
//!
//! This module *is* the spec (mirrored in `docs/integer-spec.md`). Every CPU
//! backend must produce bit-identical results to these functions.
//!
//! ## Number formats
//!
//! * **Activations**: `i8`, per-tensor asymmetric: `real = scale · (q − zero_point)`,
//!   `zero_point ∈ [−128, 127]`.
//! * **Weights**: symmetric, per-output-channel scale, stored as `i8` (8w8a,
//!   `q ∈ [−127, 127]`) or `i16` (16w8a, `q ∈ [−32767, 32767]`); `real = scale_c · q`.
//!   The most negative code (−128 / −32768) is never produced, so negation is exact.
//! * **Bias**: `i32` at scale `s_in · s_w[c]`, zero point 0.
//!
//! ## Accumulation (exact, never wraps)
//!
//! `acc = bias + Σ_k (x_k − zp_in) · w_k`, with `|x − zp| ≤ 255`.
//! The graph validator enforces, per node, `K ≤` [`MAX_K`] terms and, for 8w8a,
//! `|bias| ≤` [`MAX_ABS_BIAS_8W`]. Hence:
//!
//! * 8w8a: `|acc| ≤ 65536·255·127 + 2^24 = 2 139 160 576 < 2^31 − 1` — an `i32`
//!   accumulator is exact.
//! * 16w8a: `|acc| ≤ 65536·255·32767 + (2^31 − 1) < 2^40` — accumulate in `i64`,
//!   or split `w = 256·hi + lo` (`hi ∈ [−128,127]`, `lo ∈ [0,255]`): the `hi`
//!   partial sums fit `i32` for any legal K; the `lo` partial sums fit `i32` for
//!   up to 33 025 terms and must be widened before that.
//!
//! ## Requantization (one rounding rule)
//!
//! A real multiplier `r = s_in·s_w[c] / s_out` is turned once into
//! `(M, n)` with `M ∈ [2^30, 2^31)`, `n ∈ [1, 62]`, `r ≈ M·2^−n`
//! ([`QuantMultiplier::from_real`], pure integer bit manipulation of the `f64`).
//! Then `y = ⌊(acc·M + 2^(n−1)) / 2^n⌋` computed exactly (the product needs up to
//! 71 bits for 16w8a, so the reference uses `i128`): **round half up**
//! (ties toward +∞), a single rounding step — the rule TFLite calls
//! `TFLITE_SINGLE_ROUNDING`. Finally `out = clamp(y + zp_out, lo, hi)` where
//! `[lo, hi]` is `[−128, 127]` narrowed by the fused activation.

use serde::{Deserialize, Serialize};

/// Largest reduction length K (terms in one dot product) any node may have.
pub const MAX_K: usize = 65_536;
/// Largest |bias| allowed in an 8w8a model, so that `i32` accumulation is exact.
pub const MAX_ABS_BIAS_8W: i64 = 1 << 24;
/// Largest |x − zp| for an int8 activation.
pub const MAX_ABS_CENTERED_ACT: i64 = 255;
/// Left shift applied to both inputs of an `Add` before rescaling (TFLite's value).
pub const ADD_LEFT_SHIFT: u32 = 20;

/// Weight storage width.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum WeightBits {
    /// int8 weights ("8w8a").
    W8,
    /// int16 weights ("16w8a").
    W16,
}

impl WeightBits {
    /// Largest representable weight code (symmetric range `[−qmax, qmax]`).
    pub const fn qmax(self) -> i32 {
        match self {
            WeightBits::W8 => 127,
            WeightBits::W16 => 32_767,
        }
    }
    /// Bits per stored weight.
    pub const fn bits(self) -> u32 {
        match self {
            WeightBits::W8 => 8,
            WeightBits::W16 => 16,
        }
    }
    /// Bytes per stored weight.
    pub const fn bytes(self) -> usize {
        match self {
            WeightBits::W8 => 1,
            WeightBits::W16 => 2,
        }
    }
    /// The scheme name used in the paper and our docs ("8w8a" / "16w8a").
    pub const fn scheme(self) -> &'static str {
        match self {
            WeightBits::W8 => "8w8a",
            WeightBits::W16 => "16w8a",
        }
    }
    /// Largest |bias| legal for this width (see the module docs).
    pub const fn max_abs_bias(self) -> i64 {
        match self {
            WeightBits::W8 => MAX_ABS_BIAS_8W,
            WeightBits::W16 => i32::MAX as i64,
        }
    }
    /// Parse "8", "16", "8w8a", "16w8a".
    pub fn parse(s: &str) -> Option<Self> {
        match s {
            "8" | "8w8a" | "w8" => Some(WeightBits::W8),
            "16" | "16w8a" | "w16" => Some(WeightBits::W16),
            _ => None,
        }
    }
}

/// Per-tensor asymmetric int8 activation quantization.
#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize)]
pub struct ActQuant {
    /// Real value of one step. Finite and > 0.
    pub scale: f32,
    /// Code of real zero, in `[−128, 127]`.
    pub zero_point: i32,
}

impl ActQuant {
    /// Creates parameters, checking `scale` is finite and positive and the zero
    /// point fits int8.
    pub fn new(scale: f32, zero_point: i32) -> Result<Self, &'static str> {
        let q = ActQuant { scale, zero_point };
        q.check()?;
        Ok(q)
    }

    /// Checks the invariants; returns a static description of the violation.
    pub fn check(&self) -> Result<(), &'static str> {
        if !(self.scale.is_finite() && self.scale > 0.0) {
            return Err("activation scale must be finite and > 0");
        }
        if !(-128..=127).contains(&self.zero_point) {
            return Err("activation zero point must be in [-128, 127]");
        }
        Ok(())
    }

    /// Asymmetric parameters covering `[lo, hi]` (widened to include 0, as real
    /// zero must be exactly representable for padding and ReLU).
    pub fn from_range(lo: f32, hi: f32) -> Self {
        let lo = if lo.is_finite() { lo.min(0.0) } else { 0.0 };
        let hi = if hi.is_finite() { hi.max(0.0) } else { 0.0 };
        let span = hi - lo;
        // A degenerate (all-zero) range still needs a valid scale.
        let scale = if span > 0.0 {
            span / 255.0
        } else {
            1.0 / 255.0
        };
        let zp = libm::rintf(-128.0 - lo / scale) as i32;
        ActQuant {
            scale,
            zero_point: zp.clamp(-128, 127),
        }
    }

    /// `clamp(rint(x / scale) + zp, −128, 127)`, ties to even. NaN maps to the zero point.
    pub fn quantize(&self, x: f32) -> i8 {
        let v = libm::rintf(x / self.scale);
        if v.is_nan() {
            return self.zero_point as i8;
        }
        let v = (v as i64).saturating_add(self.zero_point as i64);
        v.clamp(-128, 127) as i8
    }

    /// `scale · (q − zp)`.
    pub fn dequantize(&self, q: i8) -> f32 {
        self.scale * (q as i32 - self.zero_point) as f32
    }
}

/// Fused activation applied as a clamp after requantization.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Activation {
    /// No clamp beyond int8 saturation.
    #[default]
    None,
    /// `max(x, 0)`.
    Relu,
    /// `min(max(x, 0), 6)`.
    Relu6,
}

impl Activation {
    /// The float function (used by the float executor).
    pub fn apply_f32(self, x: f32) -> f32 {
        match self {
            Activation::None => x,
            Activation::Relu => x.max(0.0),
            Activation::Relu6 => x.clamp(0.0, 6.0),
        }
    }

    /// The integer clamp range `[lo, hi]` on output codes for output quantization `q`.
    ///
    /// ReLU: `lo = max(zp, −128)`. ReLU6: additionally `hi = min(127, zp + rint(6 / scale))`
    /// with the division done in `f64` (exact inputs, IEEE-rounded: identical on every target).
    pub fn clamp_range(self, q: ActQuant) -> (i32, i32) {
        match self {
            Activation::None => (-128, 127),
            Activation::Relu => (q.zero_point.max(-128), 127),
            Activation::Relu6 => {
                let six = libm::rint(6.0 / q.scale as f64);
                let six = if six > 512.0 { 512 } else { six as i32 };
                (q.zero_point.max(-128), (q.zero_point + six).min(127))
            }
        }
    }
}

/// Why a real multiplier cannot be represented.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum MultiplierError {
    /// Not finite or not > 0.
    NotPositiveFinite(f64),
    /// Smaller than 2^−32: the output would be constant; almost surely a broken scale.
    TooSmall(f64),
    /// 2^30 or larger.
    TooLarge(f64),
}

impl core::fmt::Display for MultiplierError {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        match self {
            MultiplierError::NotPositiveFinite(r) => {
                write!(
                    f,
                    "requantization multiplier {r} is not a finite positive number"
                )
            }
            MultiplierError::TooSmall(r) => {
                write!(
                    f,
                    "requantization multiplier {r:e} is below 2^-32 (output would be constant)"
                )
            }
            MultiplierError::TooLarge(r) => {
                write!(f, "requantization multiplier {r:e} is 2^30 or larger")
            }
        }
    }
}

impl core::error::Error for MultiplierError {}

/// A real multiplier `r ≈ multiplier · 2^−shift` in fixed point.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct QuantMultiplier {
    /// Mantissa in `[2^30, 2^31)`.
    pub multiplier: i32,
    /// Total right shift, in `[1, 62]`.
    pub shift: u32,
}

impl QuantMultiplier {
    /// Derives `(M, n)` from `r` by integer manipulation of the `f64` bits, so the
    /// result is identical on every target (no libm, no FPU rounding mode).
    /// The 53-bit mantissa is rounded half-up to 31 bits.
    pub fn from_real(r: f64) -> Result<Self, MultiplierError> {
        if !(r.is_finite() && r > 0.0) {
            return Err(MultiplierError::NotPositiveFinite(r));
        }
        let bits = r.to_bits();
        let biased_exp = ((bits >> 52) & 0x7ff) as i64;
        if biased_exp == 0 {
            return Err(MultiplierError::TooSmall(r)); // subnormal
        }
        let mantissa = (bits & ((1u64 << 52) - 1)) | (1u64 << 52); // r = mantissa · 2^(e − 52)
        let mut exp = biased_exp - 1023; // r = (mantissa / 2^52) · 2^exp, mantissa/2^52 ∈ [1, 2)
        let mut m = (mantissa + (1u64 << 21)) >> 22; // ∈ [2^30, 2^31]
        if m == 1u64 << 31 {
            m >>= 1;
            exp += 1;
        }
        // r ≈ m · 2^(exp − 30)  ⇒  n = 30 − exp
        let n = 30 - exp;
        if n < 1 {
            return Err(MultiplierError::TooLarge(r));
        }
        if n > 62 {
            return Err(MultiplierError::TooSmall(r));
        }
        Ok(QuantMultiplier {
            multiplier: m as i32,
            shift: n as u32,
        })
    }

    /// The real value represented.
    pub fn to_real(self) -> f64 {
        self.multiplier as f64 / libm::exp2(self.shift as f64)
    }

    /// `⌊(acc·M + 2^(n−1)) / 2^n⌋`, exact: round half up (ties toward +∞).
    /// Saturates to the `i64` range, which only large multipliers (> 2^23) with
    /// extreme accumulators can reach — cases where the int8 output saturates anyway.
    #[inline]
    pub fn apply(self, acc: i64) -> i64 {
        let prod = acc as i128 * self.multiplier as i128;
        let round = 1i128 << (self.shift - 1);
        ((prod + round) >> self.shift).clamp(i64::MIN as i128, i64::MAX as i128) as i64
    }

    /// Requantize one accumulator to an int8 code:
    /// `clamp(apply(acc) + zp_out, lo, hi)`.
    #[inline]
    pub fn requantize(self, acc: i64, zp_out: i32, lo: i32, hi: i32) -> i8 {
        let y = self.apply(acc).saturating_add(zp_out as i64);
        y.clamp(lo as i64, hi as i64) as i8
    }
}

/// Integer average with round-half-away-from-zero: the pooling rule.
#[inline]
pub fn rounded_div_half_away(sum: i64, count: i64) -> i64 {
    debug_assert!(count > 0);
    if sum >= 0 {
        (sum + count / 2) / count
    } else {
        (sum - count / 2) / count
    }
}

/// Symmetric weight quantization of one value with scale `s` to `bits`: ties to even, saturating.
pub fn quantize_weight(x: f32, scale: f32, bits: WeightBits) -> i32 {
    let q = libm::rintf(x / scale);
    if q.is_nan() {
        return 0;
    }
    let qmax = bits.qmax() as f32;
    q.clamp(-qmax, qmax) as i32
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn multiplier_of_one_half_and_powers() {
        let m = QuantMultiplier::from_real(0.5).unwrap();
        assert_eq!(
            m,
            QuantMultiplier {
                multiplier: 1 << 30,
                shift: 31
            }
        );
        assert_eq!(m.apply(3), 2); // 1.5 rounds half up
        assert_eq!(m.apply(-3), -1); // -1.5 rounds half up (toward +inf)
        assert_eq!(m.apply(-4), -2);
        let one = QuantMultiplier::from_real(1.0).unwrap();
        assert_eq!(one.apply(123_456_789), 123_456_789);
    }

    #[test]
    fn multiplier_rounding_carry() {
        // Mantissa of all ones rounds up to 2^31 and must renormalise.
        let r = f64::from_bits(0x3FEF_FFFF_FFFF_FFFF); // just below 1.0
        let m = QuantMultiplier::from_real(r).unwrap();
        assert_eq!(
            m,
            QuantMultiplier {
                multiplier: 1 << 30,
                shift: 30
            }
        );
    }

    #[test]
    fn multiplier_rejects_bad_values() {
        assert!(QuantMultiplier::from_real(0.0).is_err());
        assert!(QuantMultiplier::from_real(-1.0).is_err());
        assert!(QuantMultiplier::from_real(f64::NAN).is_err());
        assert!(QuantMultiplier::from_real(1e-12).is_err());
        assert!(QuantMultiplier::from_real(2f64.powi(30)).is_err());
        assert!(QuantMultiplier::from_real(2f64.powi(30) * 0.99).is_ok());
        assert!(QuantMultiplier::from_real(2f64.powi(-32)).is_ok());
    }

    #[test]
    fn multiplier_relative_error_is_below_2_pow_minus_30() {
        for i in 1..2000 {
            let r = i as f64 * 0.000_731_7;
            let m = QuantMultiplier::from_real(r).unwrap();
            assert!(((m.to_real() - r) / r).abs() <= 2f64.powi(-30), "r = {r}");
            assert!((1 << 30..=i32::MAX).contains(&m.multiplier));
        }
    }

    #[test]
    fn worst_case_16w8a_accumulator_does_not_overflow_in_apply() {
        let acc = (MAX_K as i64) * 255 * 32_767 + i32::MAX as i64;
        let m = QuantMultiplier {
            multiplier: i32::MAX,
            shift: 1,
        };
        assert_eq!(m.apply(acc), i64::MAX); // saturates instead of wrapping
        let small = QuantMultiplier {
            multiplier: i32::MAX,
            shift: 62,
        };
        assert_eq!(
            small.apply(acc) as i128,
            (acc as i128 * i32::MAX as i128 + (1 << 61)) >> 62
        );
        assert_eq!(m.requantize(acc, 0, -128, 127), 127);
        assert_eq!(m.requantize(-acc, 0, -128, 127), -128);
    }

    #[test]
    fn the_8w8a_bound_fits_i32() {
        let worst = MAX_K as i64 * MAX_ABS_CENTERED_ACT * 127 + MAX_ABS_BIAS_8W;
        assert!(worst <= i32::MAX as i64);
        // ...and one more term would not: the bound is tight to a few percent.
        assert!((MAX_K as i64 * 2) * MAX_ABS_CENTERED_ACT * 127 > i32::MAX as i64);
    }

    #[test]
    fn act_quant_round_trip_and_clamps() {
        let q = ActQuant::new(0.1, -5).unwrap();
        assert_eq!(q.quantize(0.0), -5);
        assert_eq!(q.quantize(1.0), 5);
        assert_eq!(q.quantize(1e9), 127);
        assert_eq!(q.quantize(-1e9), -128);
        assert_eq!(q.quantize(f32::NAN), -5);
        assert!((q.dequantize(5) - 1.0).abs() < 1e-6);
        assert!(ActQuant::new(0.0, 0).is_err());
        assert!(ActQuant::new(1.0, 128).is_err());
    }

    #[test]
    fn from_range_represents_zero_exactly() {
        let q = ActQuant::from_range(0.0, 6.0);
        assert_eq!(q.zero_point, -128);
        let q = ActQuant::from_range(-1.0, 1.0);
        assert!((q.dequantize(q.quantize(0.0))).abs() < 1e-7);
    }

    #[test]
    fn activation_clamps() {
        let q = ActQuant {
            scale: 0.05,
            zero_point: -100,
        };
        assert_eq!(Activation::None.clamp_range(q), (-128, 127));
        assert_eq!(Activation::Relu.clamp_range(q), (-100, 127));
        assert_eq!(Activation::Relu6.clamp_range(q), (-100, 20)); // 6/0.05 = 120
    }

    #[test]
    fn pooling_division_rounds_half_away_from_zero() {
        assert_eq!(rounded_div_half_away(5, 2), 3);
        assert_eq!(rounded_div_half_away(-5, 2), -3);
        assert_eq!(rounded_div_half_away(4, 3), 1);
        assert_eq!(rounded_div_half_away(-4, 3), -1);
        assert_eq!(rounded_div_half_away(0, 7), 0);
    }

    #[test]
    fn weight_quantization_is_symmetric_and_saturating() {
        assert_eq!(quantize_weight(1.0, 0.01, WeightBits::W8), 100);
        assert_eq!(quantize_weight(-10.0, 0.01, WeightBits::W8), -127);
        assert_eq!(quantize_weight(10.0, 0.0001, WeightBits::W16), 32_767);
        assert_eq!(quantize_weight(1.25, 0.5, WeightBits::W8), 2); // 2.5: tie to even
        assert_eq!(quantize_weight(0.75, 0.5, WeightBits::W8), 2); // 1.5: tie to even
    }
}
