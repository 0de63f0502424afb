//! The safe GEMM driver behind conv2d (im2col) and linear: packs blocks of A rows, runs the
//! tier's micro-kernel over every (A panel, B panel) tile, and folds the zero point and the
//! 16w8a byte split back in, exactly, in `i64`.

use lastmile_backend_cpu_ref::kernels::DotQuant;
use lastmile_core::graph::Conv2d;

use crate::arch::Micro;
use crate::pack::{PackedB, PanelShape, pack_rows};

/// Rows of A packed and multiplied at a time (a multiple of every `mr`): bounds the scratch
/// to `ROW_BLOCK · kp` bytes and keeps the A block in L1/L2 while B streams past it.
const ROW_BLOCK: usize = 64;

/// Reusable buffers of the driver.
#[derive(Debug, Default)]
pub(crate) struct Scratch {
    a: Vec<i8>,
    row: Vec<i8>,
    c: Vec<i32>,
    row_sums: Vec<i64>,
    tile: Vec<i32>,
}

/// The weights of one GEMM (one conv group or one linear layer), packed.
#[derive(Debug)]
pub(crate) struct Gemm<'a> {
    pub micro: Micro,
    /// 16w8a (B holds two byte-plane rows per channel).
    pub wide: bool,
    pub b: &'a PackedB,
    /// Output channels.
    pub n: usize,
    /// Reduction length.
    pub k: usize,
}

impl Gemm<'_> {
    /// For every row `i < m` and channel `c < n`, calls `emit(i, c, Σ_k (a_i[k] − zp)·w_c[k])`
    /// with the exact sum, where `fill(i, row)` writes row `i`'s `K` raw input codes
    /// (padded conv taps as `zp`, so they cancel).
    pub(crate) fn run(
        &self,
        m: usize,
        zp: i32,
        scratch: &mut Scratch,
        mut fill: impl FnMut(usize, &mut [i8]),
        mut emit: impl FnMut(usize, usize, i64),
    ) {
        let micro = self.micro;
        let (mr, nr) = (micro.mr(), micro.nr());
        let sa = PanelShape::a(micro, self.k);
        let sb = PanelShape::b(micro, self.k);
        let kp = sa.kp;
        let b_rows = if self.wide { 2 * self.n } else { self.n };
        let b_panels = sb.panels(b_rows);
        debug_assert_eq!(self.b.panels.len(), sb.len(b_rows));
        let zp = zp as i64;
        scratch.tile.resize(mr * nr, 0);
        let mut m0 = 0;
        while m0 < m {
            let mb = ROW_BLOCK.min(m - m0);
            scratch.row_sums.clear();
            let sums = &mut scratch.row_sums;
            let wide = self.wide;
            pack_rows(&mut scratch.a, sa, mb, &mut scratch.row, |i, row| {
                fill(m0 + i, row);
                if wide {
                    sums.push(row.iter().map(|&v| v as i64).sum());
                }
            });
            scratch.c.clear();
            scratch.c.resize(mb * b_rows, 0);
            for pa in 0..sa.panels(mb) {
                let a = &scratch.a[pa * sa.panel_len()..][..sa.panel_len()];
                for pb in 0..b_panels {
                    let b = &self.b.panels[pb * sb.panel_len()..][..sb.panel_len()];
                    micro.tile(kp, a, b, !self.wide, &mut scratch.tile);
                    for i in 0..mr.min(mb - pa * mr) {
                        let row = pa * mr + i;
                        let cols = nr.min(b_rows - pb * nr);
                        scratch.c[row * b_rows + pb * nr..][..cols]
                            .copy_from_slice(&scratch.tile[i * nr..i * nr + cols]);
                    }
                }
            }
            for i in 0..mb {
                let c_row = &scratch.c[i * b_rows..(i + 1) * b_rows];
                for c in 0..self.n {
                    let xw = if self.wide {
                        // Σ x·w = 256·Σ x·hi + Σ x·(lo − 128) + 128·Σ x.
                        256 * c_row[2 * c] as i64
                            + c_row[2 * c + 1] as i64
                            + 128 * scratch.row_sums[i]
                    } else {
                        c_row[c] as i64
                    };
                    emit(m0 + i, c, xw - zp * self.b.sum_w[c]);
                }
            }
            m0 += mb;
        }
    }
}

/// `y = clamp(M_c(bias_c + acc) + zp_out)`: the spec's requantization, from the shared plan.
#[inline]
pub(crate) fn requantize(q: &DotQuant<'_>, bias: Option<&[i32]>, c: usize, acc: i64) -> i8 {
    let acc = acc + bias.map_or(0, |b| b[c] as i64);
    q.multipliers[c].requantize(acc, q.zp_out, q.lo, q.hi)
}

/// Input coordinate of output position `o`, kernel tap `k`, or `None` in the padding
/// (the reference's rule).
#[inline]
pub(crate) fn tap(
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

/// Conv2d (any groups) by im2col + GEMM per group. `packed[g]` holds group `g`'s weights.
#[allow(clippy::too_many_arguments)]
pub(crate) fn conv2d(
    micro: Micro,
    wide: bool,
    attrs: &Conv2d,
    q: &DotQuant<'_>,
    x: &[i8],
    in_shape: &[usize],
    w_shape: &[usize],
    packed: &[PackedB],
    bias: Option<&[i32]>,
    out_shape: &[usize],
    n: usize,
    y: &mut [i8],
    scratch: &mut Scratch,
) {
    let (h, wd, cin) = (in_shape[0], in_shape[1], in_shape[2]);
    let (ho, wo, cout) = (out_shape[0], out_shape[1], out_shape[2]);
    let (kh, kw, cpg) = (w_shape[1], w_shape[2], w_shape[3]);
    let opg = cout / attrs.groups;
    let zp = q.zp_in as i8;
    let positions = ho * wo;
    for s in 0..n {
        for (g, b) in packed.iter().enumerate() {
            let gemm = Gemm {
                micro,
                wide,
                b,
                n: opg,
                k: kh * kw * cpg,
            };
            let fill = |p: usize, row: &mut [i8]| {
                let (oy, ox) = (p / wo, p % wo);
                let mut at = 0;
                for ky in 0..kh {
                    let iy = tap(
                        oy,
                        ky,
                        attrs.stride[0],
                        attrs.dilation[0],
                        attrs.padding[0],
                        h,
                    );
                    for kx in 0..kw {
                        let ix = tap(
                            ox,
                            kx,
                            attrs.stride[1],
                            attrs.dilation[1],
                            attrs.padding[1],
                            wd,
                        );
                        let dst = &mut row[at..at + cpg];
                        match (iy, ix) {
                            (Some(iy), Some(ix)) => {
                                let xb = ((s * h + iy) * wd + ix) * cin + g * cpg;
                                dst.copy_from_slice(&x[xb..xb + cpg]);
                            }
                            // Padding is real zero, i.e. the code zp: it cancels exactly.
                            _ => dst.fill(zp),
                        }
                        at += cpg;
                    }
                }
            };
            let out = &mut y[s * positions * cout..(s + 1) * positions * cout];
            gemm.run(positions, q.zp_in, scratch, fill, |p, c, acc| {
                let co = g * opg + c;
                out[p * cout + co] = requantize(q, bias, co, acc);
            });
        }
    }
}

/// Linear: `x` is `[n, f]`, one GEMM with the samples as rows.
#[allow(clippy::too_many_arguments)]
pub(crate) fn linear(
    micro: Micro,
    wide: bool,
    q: &DotQuant<'_>,
    x: &[i8],
    f: usize,
    packed: &PackedB,
    out: usize,
    bias: Option<&[i32]>,
    n: usize,
    y: &mut [i8],
    scratch: &mut Scratch,
) {
    let gemm = Gemm {
        micro,
        wide,
        b: packed,
        n: out,
        k: f,
    };
    gemm.run(
        n,
        q.zp_in,
        scratch,
        |s, row| row[..f].copy_from_slice(&x[s * f..(s + 1) * f]),
        |s, c, acc| y[s * out + c] = requantize(q, bias, c, acc),
    );
}
