//! Direct convolution: GEMM rows read in place from a padded copy of the input instead of
//! being gathered (im2col).
//!
//! For a convolution with column dilation 1, the `kw·c_in` codes one kernel row reduces
//! over are adjacent in an NHWC image: pixels `ox·sx .. ox·sx + kw` of one input row. So
//! once the input is copied — as `x + 128` (`x ^ 0x80`), the VNNI tiles' activation
//! format — into a buffer padded with `zp + 128` on every side the windows can reach, row
//! `m = (sample, oy, ox)` of the GEMM is `kh` **segments** of that buffer, segment `ky` at
//! `((sample·hp + oy·sy + ky·dy)·wp + ox·sx)·c_in`, and consecutive output columns are
//! `sx·c_in` bytes apart. The tile reads the segments in place
//! (`Token::tile_segments`); a tile stays within one output row.
//!
//! The copy moves each input byte once; the im2col gather it replaces writes `kh·kw` bytes
//! per input byte (for a 3×3 conv about a fifth of the forward). The codes the tile sees
//! are exactly the gathered ones, so results are bit-identical.
//!
//! Eligible: VNNI schemes (the `u8` format), column dilation 1, and `kw·c_in` a multiple
//! of 4 so every segment starts on a dword group (then `K = kh·kw·c_in` needs no K
//! padding and the packed weights' groups are the segments' groups in order).

use crate::gather::ConvGeom;
use crate::kernels::{AlignedBytes, Token};

/// The geometry of a direct convolution (see the module docs).
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct Direct {
    g: ConvGeom,
    /// Padded input rows and columns per sample: exactly the ones some window reads.
    hp: usize,
    wp: usize,
    /// Byte offset of kernel row `ky`'s segment from the window's first byte.
    pub segs: Vec<usize>,
    /// Dword groups per segment: `kw·c_in / 4`.
    pub kg: usize,
    /// Bytes between the windows of adjacent output columns: `sx·c_in`.
    pub a_stride: usize,
}

/// The padded input of one forward (and, for 16-bit weights, its per-pixel code sums).
#[derive(Debug, Default)]
pub(crate) struct DirectInput {
    padded: AlignedBytes,
    len: usize,
    /// `Σ_c (x + 128)` per padded pixel; filled only when asked for.
    pixel_sums: Vec<u64>,
    /// `Σ` of `pixel_sums` over the `kw` pixels of a kernel row starting at each padded
    /// pixel (0 where the row would run past the padded row's end).
    window_sums: Vec<u64>,
}

impl DirectInput {
    /// The padded codes.
    pub(crate) fn codes(&self) -> &[u8] {
        &self.padded.as_slice()[..self.len]
    }
}

impl Direct {
    /// The convolution's geometry.
    pub(crate) fn geom(&self) -> &ConvGeom {
        &self.g
    }

    /// The direct form of `g`, if eligible (see the module docs).
    pub(crate) fn new(g: &ConvGeom) -> Option<Direct> {
        if g.dilation[1] != 1 || !(g.kw * g.c_in).is_multiple_of(4) || g.ho == 0 || g.wo == 0 {
            return None;
        }
        let hp = (g.ho - 1) * g.stride[0] + (g.kh - 1) * g.dilation[0] + 1;
        let wp = (g.wo - 1) * g.stride[1] + g.kw;
        let segs = (0..g.kh)
            .map(|ky| ky * g.dilation[0] * wp * g.c_in)
            .collect();
        Some(Direct {
            g: g.clone(),
            hp,
            wp,
            segs,
            kg: g.kw * g.c_in / 4,
            a_stride: g.stride[1] * g.c_in,
        })
    }

    /// Copies the `n` samples of `x` into `dst` as `x ^ 0x80`, padded with `zp + 128`;
    /// with `sums`, also the per-pixel code sums (for [`Direct::row_sums`]).
    pub(crate) fn fill(
        &self,
        tok: Token,
        x: &[i8],
        n: usize,
        zp: i32,
        sums: bool,
        dst: &mut DirectInput,
    ) {
        let g = &self.g;
        let c = g.c_in;
        let row_bytes = self.wp * c;
        let len = n * self.hp * row_bytes;
        dst.padded.ensure(len);
        dst.len = len;
        let pad = (zp as i8 as u8) ^ 0x80;
        // Padded column px holds input column px − pad_left.
        let left = g.pad[1].min(self.wp);
        let right = (g.pad[1] + g.w).min(self.wp);
        let buf = &mut dst.padded.as_mut_slice()[..len];
        for (i, row) in buf.chunks_exact_mut(row_bytes).enumerate() {
            let (s, py) = (i / self.hp, i % self.hp);
            let iy = py.checked_sub(g.pad[0]).filter(|&iy| iy < g.h);
            let Some(iy) = iy.filter(|_| right > left) else {
                row.fill(pad);
                continue;
            };
            row[..left * c].fill(pad);
            row[right * c..].fill(pad);
            let src0 = ((s * g.h + iy) * g.w + left - g.pad[1]) * c;
            let src = &x[src0..src0 + (right - left) * c];
            for (d, &v) in row[left * c..right * c].iter_mut().zip(src) {
                *d = (v as u8) ^ 0x80;
            }
        }
        dst.pixel_sums.clear();
        dst.window_sums.clear();
        if sums {
            tok.row_sums(buf, c, len / c, c, &mut dst.pixel_sums);
            dst.window_sums.resize(dst.pixel_sums.len(), 0);
            let kw = g.kw;
            let rows = dst.pixel_sums.chunks_exact(self.wp);
            for (p, w) in rows.zip(dst.window_sums.chunks_exact_mut(self.wp)) {
                for (x, w) in w[..self.wp + 1 - kw].iter_mut().enumerate() {
                    *w = p[x..x + kw].iter().sum();
                }
            }
        }
    }

    /// GEMM row `m`: the byte offset of its window in the padded input, and how many
    /// rows from `m` on stay in the same output row (a tile must not cross one).
    #[inline]
    pub(crate) fn window(&self, m: usize) -> (usize, usize) {
        let g = &self.g;
        let hw = g.ho * g.wo;
        let (s, oy, ox) = (m / hw, m % hw / g.wo, m % g.wo);
        let pixel = (s * self.hp + oy * g.stride[0]) * self.wp + ox * g.stride[1];
        (pixel * g.c_in, g.wo - ox)
    }

    /// The tile starting at GEMM row `m` with `rows_left` rows left in the block and
    /// tiles of at most `mr` rows: its window offset and height. The rest of the output
    /// row is split into equal tiles (14 = 5+5+4, not 6+6+2: short tiles run below peak).
    #[inline]
    pub(crate) fn tile_at(&self, m: usize, rows_left: usize, mr: usize) -> (usize, usize) {
        let (at, left) = self.window(m);
        let left = left.min(rows_left);
        (at, left.div_ceil(left.div_ceil(mr)))
    }

    /// Appends `Σ_k (x_k + 128)` of rows `m0 .. m0 + count` (padding taps included, as
    /// the gathered rows' sums) to `out`; needs [`Direct::fill`] with `sums`.
    pub(crate) fn row_sums(&self, din: &DirectInput, m0: usize, count: usize, out: &mut Vec<u64>) {
        let g = &self.g;
        let w = &din.window_sums;
        let row_step = g.dilation[0] * self.wp;
        let mut m = m0;
        while m < m0 + count {
            // One output row at a time: its windows are `sx` pixels apart.
            let (base, left) = self.window(m);
            let pixel = base / g.c_in;
            for i in 0..left.min(m0 + count - m) {
                let p = pixel + i * g.stride[1];
                out.push((0..g.kh).map(|ky| w[p + ky * row_step]).sum());
            }
            m += left;
        }
    }
}
