//! Building the activation rows of a GEMM block (im2col for convolutions, a copy for
//! linear layers) in the format the tier's tile reads.
//!
//! Row `m` is the `K` input codes output position `m` reduces over, in `(ky, kx, c_in)`
//! order (matching OHWI weights), padded with zero bytes to `kg` dword groups:
//!
//! * [`AFormat::U8`] — `x + 128` as `u8` (`x ^ 0x80`); padding taps hold `zp + 128`, so
//!   they contribute exactly what the correction term subtracts (net zero, as the spec's
//!   "padding is real zero" requires);
//! * [`AFormat::I16`] — `x − zp` as `i16`; padding taps hold 0.
//!
//! The K padding after the last real element may hold anything: its weights are zero.

/// Geometry of a convolution's input windows.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct ConvGeom {
    pub h: usize,
    pub w: usize,
    pub c_in: usize,
    pub kh: usize,
    pub kw: usize,
    pub stride: [usize; 2],
    pub dilation: [usize; 2],
    /// Top and left padding (bottom/right only shape the output size).
    pub pad: [usize; 2],
    pub ho: usize,
    pub wo: usize,
}

impl ConvGeom {
    /// Input row of output row `o` and kernel row `k`, if inside the image.
    #[inline]
    pub(crate) fn iy(&self, o: usize, k: usize) -> Option<usize> {
        (o * self.stride[0] + k * self.dilation[0])
            .checked_sub(self.pad[0])
            .filter(|&i| i < self.h)
    }

    /// The kernel columns `[lo, hi)` whose input column is inside the image, for output
    /// column `ox` (valid taps are contiguous): `0 ≤ ox·s + kx·d − pad < w`.
    #[inline]
    pub(crate) fn kx_range(&self, ox: usize) -> (usize, usize) {
        let (s, d, p) = (self.stride[1], self.dilation[1], self.pad[1]);
        let start = ox * s;
        if start >= self.w + p {
            return (0, 0);
        }
        let hi = (self.w + p - start).div_ceil(d).min(self.kw);
        let lo = p.saturating_sub(start).div_ceil(d).min(hi);
        (lo, hi)
    }
}

/// Where GEMM rows come from.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) enum Rows {
    /// im2col of a convolution (groups = 1); rows are `(sample, oy, ox)` in order.
    Conv(ConvGeom),
    /// A linear layer: row `m` is `x[m·f .. (m+1)·f]`.
    Dense { f: usize },
}

/// Element format of the rows.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum AFormat {
    U8,
    I16,
}

/// Writes rows `m0 .. m0 + count` as `u8` codes (`x ^ 0x80`), `stride` bytes apart.
/// Call through `Token::gather_u8` to compile it with the tier's features.
#[inline(always)]
pub(crate) fn gather_u8(
    rows: &Rows,
    x: &[i8],
    m0: usize,
    count: usize,
    zp: i32,
    stride: usize,
    dst: &mut [u8],
) {
    let pad = (zp as i8 as u8) ^ 0x80;
    let copy = |d: &mut [u8], s: &[i8]| {
        for (d, &s) in d.iter_mut().zip(s) {
            *d = (s as u8) ^ 0x80;
        }
    };
    gather(rows, x, m0, count, stride, dst, pad, 0, copy);
}

/// Writes rows `m0 .. m0 + count` as centered `i16` (`x − zp`), `stride` elements apart.
/// Call through `Token::gather_i16` to compile it with the tier's features.
#[inline(always)]
pub(crate) fn gather_i16(
    rows: &Rows,
    x: &[i8],
    m0: usize,
    count: usize,
    zp: i32,
    stride: usize,
    dst: &mut [i16],
) {
    let zp = zp as i16;
    let copy = |d: &mut [i16], s: &[i8]| {
        for (d, &s) in d.iter_mut().zip(s) {
            *d = s as i16 - zp;
        }
    };
    gather(rows, x, m0, count, stride, dst, 0, 0, copy);
}

#[allow(clippy::too_many_arguments)]
#[inline(always)]
fn gather<T: Copy>(
    rows: &Rows,
    x: &[i8],
    m0: usize,
    count: usize,
    stride: usize,
    dst: &mut [T],
    pad: T,
    zero: T,
    copy: impl Fn(&mut [T], &[i8]),
) {
    match rows {
        Rows::Dense { f } => {
            let f = *f;
            for r in 0..count {
                let m = m0 + r;
                let row = &mut dst[r * stride..(r + 1) * stride];
                copy(&mut row[..f], &x[m * f..(m + 1) * f]);
                row[f..].fill(zero);
            }
        }
        Rows::Conv(g) => {
            let hw = g.ho * g.wo;
            let cin = g.c_in;
            let k = g.kh * g.kw * cin;
            // Output position of row m0, then advanced row by row (no divisions per row).
            let (mut s, mut oy, mut ox) = (m0 / hw, m0 % hw / g.wo, m0 % g.wo);
            for r in 0..count {
                let row = &mut dst[r * stride..(r + 1) * stride];
                let (kx_lo, kx_hi) = g.kx_range(ox);
                let mut pos = 0;
                for ky in 0..g.kh {
                    let seg = &mut row[pos..pos + g.kw * cin];
                    pos += g.kw * cin;
                    let Some(iy) = g.iy(oy, ky) else {
                        seg.fill(pad);
                        continue;
                    };
                    seg[..kx_lo * cin].fill(pad);
                    seg[kx_hi * cin..].fill(pad);
                    let base = (s * g.h + iy) * g.w;
                    if g.dilation[1] == 1 && kx_hi > kx_lo {
                        // Valid taps of one kernel row are adjacent pixels: one run.
                        let ix0 = ox * g.stride[1] + kx_lo - g.pad[1];
                        let src = &x[(base + ix0) * cin..(base + ix0 + kx_hi - kx_lo) * cin];
                        copy(&mut seg[kx_lo * cin..kx_hi * cin], src);
                    } else {
                        for kx in kx_lo..kx_hi {
                            let ix = ox * g.stride[1] + kx * g.dilation[1] - g.pad[1];
                            let src = &x[(base + ix) * cin..(base + ix + 1) * cin];
                            copy(&mut seg[kx * cin..(kx + 1) * cin], src);
                        }
                    }
                }
                row[k..].fill(zero);
                ox += 1;
                if ox == g.wo {
                    ox = 0;
                    oy += 1;
                    if oy == g.ho {
                        oy = 0;
                        s += 1;
                    }
                }
            }
        }
    }
}
