//! Depthwise convolution (`groups == C_in`, one input channel per group, channel
//! multiplier `opg ≥ 1`), vectorized across channels: NHWC keeps the channels of a pixel
//! contiguous, so one tap of 16 channels is two 16-byte loads and four widening
//! multiply-accumulates. The same kernel serves every NEON tier.

use lastmile_backend_cpu_ref::kernels::DotQuant;
use lastmile_core::graph::Conv2d;

use crate::arch;
use crate::gemm::{requantize, tap};

/// Depthwise weights repacked tap-major: `[m][ky·kw + kx][c]` for multiplier index `m`
/// (output channel `c·opg + m`), so the channels of one tap are contiguous like NHWC input.
#[derive(Debug)]
pub(crate) enum DwWeights {
    W8(Vec<i8>),
    W16(Vec<i16>),
}

/// Taps summed in `i32` before widening for 16w8a: `256·255·32767 < 2^31`.
const W16_TAPS_PER_FLUSH: usize = 256;

/// Repacks OHWI depthwise weights (`[C_out, KH, KW, 1]`) into `out` (reusing its buffer).
pub(crate) fn pack<W: Copy + Default>(
    out: &mut Vec<W>,
    w: &[W],
    cin: usize,
    opg: usize,
    taps: usize,
) {
    out.clear();
    out.resize(opg * taps * cin, W::default());
    for c in 0..cin {
        for m in 0..opg {
            let co = c * opg + m;
            for t in 0..taps {
                out[(m * taps + t) * cin + c] = w[co * taps + t];
            }
        }
    }
}

/// Reusable buffers.
#[derive(Debug, Default)]
pub(crate) struct Scratch {
    taps: Vec<(usize, usize)>,
    acc32: Vec<i32>,
    acc64: Vec<i64>,
}

#[allow(clippy::too_many_arguments)]
pub(crate) fn depthwise(
    attrs: &Conv2d,
    q: &DotQuant<'_>,
    x: &[i8],
    in_shape: &[usize],
    w_shape: &[usize],
    weights: &DwWeights,
    bias: Option<&[i32]>,
    out_shape: &[usize],
    n: usize,
    y: &mut [i8],
    scratch: &mut Scratch,
) {
    let (h, wd, cin) = (in_shape[0], in_shape[1], in_shape[2]);
    let (ho, wo, cout) = (out_shape[0], out_shape[1], out_shape[2]);
    let (kh, kw) = (w_shape[1], w_shape[2]);
    let opg = cout / cin;
    let kk = kh * kw;
    let c16 = cin / 16 * 16;
    let zp = q.zp_in;
    scratch.acc32.resize(cin, 0);
    scratch.acc64.resize(cin, 0);
    for s in 0..n {
        for oy in 0..ho {
            for ox in 0..wo {
                // The valid taps of this output position: (input pixel offset, tap index).
                scratch.taps.clear();
                for ky in 0..kh {
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
                        scratch
                            .taps
                            .push((((s * h + iy) * wd + ix) * cin, (ky * kw + kx) * cin));
                    }
                }
                let out_base = ((s * ho + oy) * wo + ox) * cout;
                for m in 0..opg {
                    match weights {
                        DwWeights::W8(w) => {
                            let w = &w[m * kk * cin..(m + 1) * kk * cin];
                            let acc = &mut scratch.acc32;
                            if c16 > 0 {
                                arch::depthwise_w8(x, w, &scratch.taps, zp, c16, acc);
                            }
                            for (c, a) in acc.iter_mut().enumerate().skip(c16) {
                                *a = scratch
                                    .taps
                                    .iter()
                                    .map(|&(xo, wo)| (x[xo + c] as i32 - zp) * w[wo + c] as i32)
                                    .sum();
                            }
                            for (c, &a) in acc.iter().enumerate() {
                                let co = c * opg + m;
                                y[out_base + co] = requantize(q, bias, co, a as i64);
                            }
                        }
                        DwWeights::W16(w) => {
                            let w = &w[m * kk * cin..(m + 1) * kk * cin];
                            scratch.acc64.fill(0);
                            for taps in scratch.taps.chunks(W16_TAPS_PER_FLUSH) {
                                let acc = &mut scratch.acc32;
                                if c16 > 0 {
                                    arch::depthwise_w16(x, w, taps, zp, c16, acc);
                                }
                                for (c, a) in acc.iter_mut().enumerate().skip(c16) {
                                    *a = taps
                                        .iter()
                                        .map(|&(xo, wo)| (x[xo + c] as i32 - zp) * w[wo + c] as i32)
                                        .sum();
                                }
                                for (s64, &a) in scratch.acc64.iter_mut().zip(acc.iter()) {
                                    *s64 += a as i64;
                                }
                            }
                            for (c, &a) in scratch.acc64.iter().enumerate() {
                                let co = c * opg + m;
                                y[out_base + co] = requantize(q, bias, co, a);
                            }
                        }
                    }
                }
            }
        }
    }
}
