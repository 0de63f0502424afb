//! The ops without multiply-accumulates, vectorized across channels: the residual add
//! (exact `QuantMultiplier` rescaling in widening `i64` lanes), max pool (`smax`), average
//! and global average pool (exact sums in `i16`/`i32` lanes; the half-away-from-zero
//! division by the window's valid-tap count stays scalar, one `sdiv` per output element).
//! Channels past the last multiple of 16 (and the last `len % 8` add elements) use the
//! reference arithmetic. The same kernels serve every NEON tier.

use lastmile_backend_cpu_ref::kernels::{self as reference, AddQuant};
use lastmile_core::graph::Pool2d;
use lastmile_core::quant::rounded_div_half_away;

use crate::arch::{self, AddConsts};
use crate::gemm::tap;

/// Reusable buffers.
#[derive(Debug, Default)]
pub(crate) struct Scratch {
    offs: Vec<usize>,
    acc: Vec<i32>,
}

/// Elementwise add with rescaling, bit-exact with [`reference::add`].
pub(crate) fn add(q: AddQuant, a: &[i8], b: &[i8], y: &mut [i8]) {
    let m = |m: lastmile_core::quant::QuantMultiplier| (m.multiplier, m.shift);
    let consts = AddConsts {
        zp_a: q.zp_a as i16,
        zp_b: q.zp_b as i16,
        m_a: m(q.mult_a),
        m_b: m(q.mult_b),
        m_o: m(q.mult_out),
        zp_o: q.zp_out,
        lo: q.lo,
        hi: q.hi,
    };
    let len = y.len();
    // Zero points are int8 codes in every validated model; anything else takes the reference.
    let int8 = |zp: i32| (-128..=127).contains(&zp);
    let done = if int8(q.zp_a) && int8(q.zp_b) {
        arch::add(a, b, consts, y)
    } else {
        0
    };
    reference::add(q, &a[done..len], &b[done..len], &mut y[done..]);
}

/// Max (`max = true`) or average pooling over NHWC, bit-exact with [`reference::pool2d`].
#[allow(clippy::too_many_arguments)]
pub(crate) fn pool2d(
    p: &Pool2d,
    x: &[i8],
    in_shape: &[usize],
    out_shape: &[usize],
    n: usize,
    max: bool,
    y: &mut [i8],
    scratch: &mut Scratch,
) {
    let (h, w, c) = (in_shape[0], in_shape[1], in_shape[2]);
    let (ho, wo) = (out_shape[0], out_shape[1]);
    let c16 = c / 16 * 16;
    scratch.acc.resize(c, 0);
    for s in 0..n {
        for oy in 0..ho {
            for ox in 0..wo {
                scratch.offs.clear();
                for ky in 0..p.kernel[0] {
                    let Some(iy) = tap(oy, ky, p.stride[0], 1, p.padding[0], h) else {
                        continue;
                    };
                    for kx in 0..p.kernel[1] {
                        let Some(ix) = tap(ox, kx, p.stride[1], 1, p.padding[1], w) else {
                            continue;
                        };
                        scratch.offs.push(((s * h + iy) * w + ix) * c);
                    }
                }
                let base = ((s * ho + oy) * wo + ox) * c;
                reduce(
                    x,
                    &scratch.offs,
                    c,
                    c16,
                    max,
                    &mut scratch.acc,
                    &mut y[base..base + c],
                );
            }
        }
    }
}

/// Global average pooling `[n, h, w, c] → [n, c]`, bit-exact with
/// [`reference::global_avg_pool`].
pub(crate) fn global_avg_pool(
    x: &[i8],
    in_shape: &[usize],
    n: usize,
    y: &mut [i8],
    scratch: &mut Scratch,
) {
    let (hw, c) = (in_shape[0] * in_shape[1], in_shape[2]);
    let c16 = c / 16 * 16;
    scratch.acc.resize(c, 0);
    for s in 0..n {
        scratch.offs.clear();
        scratch.offs.extend((0..hw).map(|p| (s * hw + p) * c));
        reduce(
            x,
            &scratch.offs,
            c,
            c16,
            false,
            &mut scratch.acc,
            &mut y[s * c..(s + 1) * c],
        );
    }
}

/// One output pixel: the max or the rounded average over the taps `offs` of every channel.
/// Validation guarantees padding < kernel, so a window has at least one valid tap.
fn reduce(
    x: &[i8],
    offs: &[usize],
    c: usize,
    c16: usize,
    max: bool,
    acc: &mut [i32],
    y: &mut [i8],
) {
    if max {
        if c16 > 0 {
            arch::max_taps(x, offs, c16, y);
        }
        for (ch, v) in y.iter_mut().enumerate().take(c).skip(c16) {
            *v = offs.iter().map(|&o| x[o + ch]).fold(i8::MIN, i8::max);
        }
    } else {
        if c16 > 0 {
            arch::sum_taps(x, offs, c16, acc);
        }
        for (ch, a) in acc.iter_mut().enumerate().take(c).skip(c16) {
            *a = offs.iter().map(|&o| x[o + ch] as i32).sum();
        }
        let count = offs.len().max(1) as i64;
        for (v, &a) in y.iter_mut().zip(acc.iter()) {
            *v = rounded_div_half_away(a as i64, count) as i8;
        }
    }
}
