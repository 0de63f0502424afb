//! The reference integer kernels: one plain loop nest per op of the spec.
//!
//! Public so that optimized backends can fall back to them op by op. Every
//! function here is the definition other backends are tested against.
//! Accumulation is in `i64` for both widths: exact for every legal shape
//! (see `lastmile_core::quant`).

use lastmile_core::graph::{Conv2d, Pool2d};
use lastmile_core::quant::{ADD_LEFT_SHIFT, QuantMultiplier, rounded_div_half_away};

/// Weight codes of either width.
#[derive(Clone, Copy, Debug)]
pub enum Weights<'a> {
    /// 8w8a.
    I8(&'a [i8]),
    /// 16w8a.
    I16(&'a [i16]),
}

/// Requantization constants of a conv/linear node (from `lastmile_core::plan::NodePlan::Dot`).
#[derive(Clone, Copy, Debug)]
pub struct DotQuant<'a> {
    /// Per-output-channel multipliers.
    pub multipliers: &'a [QuantMultiplier],
    /// Input zero point.
    pub zp_in: i32,
    /// Output zero point.
    pub zp_out: i32,
    /// Lower output clamp.
    pub lo: i32,
    /// Upper output clamp.
    pub hi: i32,
}

/// 2-D convolution, NHWC input `[n, h, w, c_in]`, OHWI weights, output `[n, ho, wo, c_out]`.
#[allow(clippy::too_many_arguments)]
pub fn conv2d(
    attrs: &Conv2d,
    q: DotQuant<'_>,
    x: &[i8],
    in_shape: &[usize],
    weights: Weights<'_>,
    w_shape: &[usize],
    bias: Option<&[i32]>,
    out_shape: &[usize],
    n: usize,
    y: &mut [i8],
) {
    match weights {
        Weights::I8(w) => conv2d_generic(attrs, q, x, in_shape, w, w_shape, bias, out_shape, n, y),
        Weights::I16(w) => conv2d_generic(attrs, q, x, in_shape, w, w_shape, bias, out_shape, n, y),
    }
}

#[allow(clippy::too_many_arguments)]
fn conv2d_generic<W: Copy + Into<i64>>(
    attrs: &Conv2d,
    q: DotQuant<'_>,
    x: &[i8],
    in_shape: &[usize],
    w: &[W],
    w_shape: &[usize],
    bias: Option<&[i32]>,
    out_shape: &[usize],
    n: usize,
    y: &mut [i8],
) {
    let (h, wd, cin) = (in_shape[0], in_shape[1], in_shape[2]);
    let (ho, wo, cout) = (out_shape[0], out_shape[1], out_shape[2]);
    let (kh, kw, cpg) = (w_shape[1], w_shape[2], w_shape[3]);
    let opg = cout / attrs.groups;
    let zp = q.zp_in as i64;
    for s in 0..n {
        for oy in 0..ho {
            for ox in 0..wo {
                let out_base = ((s * ho + oy) * wo + ox) * cout;
                for co in 0..cout {
                    let g = co / opg;
                    let mut acc: i64 = bias.map_or(0, |b| b[co] as i64);
                    for ky in 0..kh {
                        // Padded taps hold real zero (= zp_in), so they contribute nothing.
                        let Some(iy) = tap(
                            oy,
                            ky,
                            attrs.stride[0],
                            attrs.dilation[0],
                            attrs.padding[0],
                            h,
                        ) else {
                            continue;
                        };
                        for kx in 0..kw {
                            let Some(ix) = tap(
                                ox,
                                kx,
                                attrs.stride[1],
                                attrs.dilation[1],
                                attrs.padding[1],
                                wd,
                            ) else {
                                continue;
                            };
                            let xb = ((s * h + iy) * wd + ix) * cin + g * cpg;
                            let wb = ((co * kh + ky) * kw + kx) * cpg;
                            for ci in 0..cpg {
                                acc += (x[xb + ci] as i64 - zp) * w[wb + ci].into();
                            }
                        }
                    }
                    y[out_base + co] = q.multipliers[co].requantize(acc, q.zp_out, q.lo, q.hi);
                }
            }
        }
    }
}

/// Input coordinate of output position `o`, kernel tap `k`, or `None` if it falls in padding.
#[inline]
fn tap(
    o: usize,
    k: usize,
    stride: usize,
    dilation: usize,
    pad: usize,
    size: usize,
) -> Option<usize> {
    let i = (o * stride + k * dilation).checked_sub(pad)?;
    (i < size).then_some(i)
}

/// Fully connected: `x` is `[n, f]`, weights `[out, f]`, output `[n, out]`.
#[allow(clippy::too_many_arguments)]
pub fn linear(
    q: DotQuant<'_>,
    x: &[i8],
    f: usize,
    weights: Weights<'_>,
    out: usize,
    bias: Option<&[i32]>,
    n: usize,
    y: &mut [i8],
) {
    match weights {
        Weights::I8(w) => linear_generic(q, x, f, w, out, bias, n, y),
        Weights::I16(w) => linear_generic(q, x, f, w, out, bias, n, y),
    }
}

#[allow(clippy::too_many_arguments)]
fn linear_generic<W: Copy + Into<i64>>(
    q: DotQuant<'_>,
    x: &[i8],
    f: usize,
    w: &[W],
    out: usize,
    bias: Option<&[i32]>,
    n: usize,
    y: &mut [i8],
) {
    let zp = q.zp_in as i64;
    for s in 0..n {
        let xs = &x[s * f..(s + 1) * f];
        for j in 0..out {
            let ws = &w[j * f..(j + 1) * f];
            let mut acc: i64 = bias.map_or(0, |b| b[j] as i64);
            for k in 0..f {
                acc += (xs[k] as i64 - zp) * ws[k].into();
            }
            y[s * out + j] = q.multipliers[j].requantize(acc, q.zp_out, q.lo, q.hi);
        }
    }
}

/// Constants of an add node (from `lastmile_core::plan::NodePlan::Add`).
#[derive(Clone, Copy, Debug)]
pub struct AddQuant {
    /// Rescale of input a.
    pub mult_a: QuantMultiplier,
    /// Rescale of input b.
    pub mult_b: QuantMultiplier,
    /// Rescale of the sum to the output scale.
    pub mult_out: QuantMultiplier,
    /// Zero point of a.
    pub zp_a: i32,
    /// Zero point of b.
    pub zp_b: i32,
    /// Output zero point.
    pub zp_out: i32,
    /// Lower clamp.
    pub lo: i32,
    /// Upper clamp.
    pub hi: i32,
}

/// Elementwise add with rescaling: both inputs are shifted left by 20 bits, brought
/// to a common scale, summed, and requantized to the output.
pub fn add(q: AddQuant, a: &[i8], b: &[i8], y: &mut [i8]) {
    for ((y, &a), &b) in y.iter_mut().zip(a).zip(b) {
        let sa = q.mult_a.apply((a as i64 - q.zp_a as i64) << ADD_LEFT_SHIFT);
        let sb = q.mult_b.apply((b as i64 - q.zp_b as i64) << ADD_LEFT_SHIFT);
        *y = q.mult_out.requantize(sa + sb, q.zp_out, q.lo, q.hi);
    }
}

/// Max (`max = true`) or average pooling over NHWC. Padded positions are excluded;
/// the average divides by the number of valid positions with round-half-away-from-zero.
pub fn pool2d(
    p: &Pool2d,
    x: &[i8],
    in_shape: &[usize],
    out_shape: &[usize],
    n: usize,
    max: bool,
    y: &mut [i8],
) {
    let (h, w, c) = (in_shape[0], in_shape[1], in_shape[2]);
    let (ho, wo) = (out_shape[0], out_shape[1]);
    for s in 0..n {
        for oy in 0..ho {
            for ox in 0..wo {
                for ch in 0..c {
                    let mut best = i8::MIN;
                    let mut sum = 0i64;
                    let mut count = 0i64;
                    for ky in 0..p.kernel[0] {
                        let Some(iy) = tap(oy, ky, p.stride[0], 1, p.padding[0], h) else {
                            continue;
                        };
                        for kx in 0..p.kernel[1] {
                            let Some(ix) = tap(ox, kx, p.stride[1], 1, p.padding[1], w) else {
                                continue;
                            };
                            let v = x[((s * h + iy) * w + ix) * c + ch];
                            best = best.max(v);
                            sum += v as i64;
                            count += 1;
                        }
                    }
                    // Validation guarantees padding < kernel, so every window has a valid tap.
                    y[((s * ho + oy) * wo + ox) * c + ch] = if max {
                        best
                    } else {
                        rounded_div_half_away(sum, count.max(1)) as i8
                    };
                }
            }
        }
    }
}

/// Global average pooling `[n, h, w, c] → [n, c]`, round half away from zero.
pub fn global_avg_pool(x: &[i8], in_shape: &[usize], n: usize, y: &mut [i8]) {
    let (hw, c) = (in_shape[0] * in_shape[1], in_shape[2]);
    for s in 0..n {
        for ch in 0..c {
            let sum: i64 = (0..hw).map(|p| x[(s * hw + p) * c + ch] as i64).sum();
            y[s * c + ch] = rounded_div_half_away(sum, hw as i64) as i8;
        }
    }
}
