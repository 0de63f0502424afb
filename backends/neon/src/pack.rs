//! Packing rows of the reduction axis into the panels the micro-kernels read.
//!
//! A **panel** holds `r` rows (A: output positions or samples; B: output channels, or for
//! 16w8a their `hi`/`lo` byte planes) of `kp` bytes, `kp = K` rounded up to
//! [`K_ALIGN`](crate::arch::K_ALIGN) with zeros. Within a panel, the rows are interleaved in
//! chunks of `chunk` bytes: for each chunk index `t`, row 0's bytes `[t·chunk, (t+1)·chunk)`,
//! then row 1's, ... Rows past the end of the matrix are zero. Zero padding contributes
//! nothing to any dot product, so a kernel may always run whole tiles.

use crate::arch::{K_ALIGN, Micro};

/// `k` rounded up to the kernels' K granularity.
pub(crate) fn padded_k(k: usize) -> usize {
    k.div_ceil(K_ALIGN).max(1) * K_ALIGN
}

/// Shape of the panels of one matrix for one micro-kernel.
#[derive(Clone, Copy, Debug)]
pub(crate) struct PanelShape {
    /// Rows per panel.
    pub r: usize,
    /// Bytes per row stored together.
    pub chunk: usize,
    /// Padded row length.
    pub kp: usize,
}

impl PanelShape {
    pub(crate) fn a(micro: Micro, k: usize) -> Self {
        PanelShape {
            r: micro.mr(),
            chunk: micro.chunk(),
            kp: padded_k(k),
        }
    }

    pub(crate) fn b(micro: Micro, k: usize) -> Self {
        PanelShape {
            r: micro.nr(),
            chunk: micro.chunk(),
            kp: padded_k(k),
        }
    }

    /// Bytes of one panel.
    pub(crate) fn panel_len(self) -> usize {
        self.r * self.kp
    }

    /// Panels needed for `rows` rows.
    pub(crate) fn panels(self, rows: usize) -> usize {
        rows.div_ceil(self.r)
    }

    /// Bytes for `rows` rows, padded to whole panels.
    pub(crate) fn len(self, rows: usize) -> usize {
        self.panels(rows) * self.panel_len()
    }
}

/// Packs `rows` rows into `dst` (resized to whole panels). `fill(i, row)` writes row `i`
/// into `row` (`kp` bytes, zeroed beforehand; only the first `K` need writing).
pub(crate) fn pack_rows(
    dst: &mut Vec<i8>,
    shape: PanelShape,
    rows: usize,
    scratch: &mut Vec<i8>,
    mut fill: impl FnMut(usize, &mut [i8]),
) {
    dst.clear();
    dst.resize(shape.len(rows), 0);
    scratch.clear();
    scratch.resize(shape.kp, 0);
    let chunks = shape.kp / shape.chunk;
    for i in 0..rows {
        scratch.fill(0);
        fill(i, scratch);
        let panel = &mut dst[(i / shape.r) * shape.panel_len()..][..shape.panel_len()];
        let lane = i % shape.r;
        for t in 0..chunks {
            let at = (t * shape.r + lane) * shape.chunk;
            panel[at..at + shape.chunk]
                .copy_from_slice(&scratch[t * shape.chunk..(t + 1) * shape.chunk]);
        }
    }
}

/// Weight rows for the GEMM of one group: `rows` output channels of `k` codes each.
#[derive(Debug, Default)]
pub(crate) struct PackedB {
    /// Panels (8w8a: one row per channel; 16w8a: rows `2c` = high bytes, `2c+1` = low
    /// bytes − 128, of channel `c`).
    pub panels: Vec<i8>,
    /// `Σ_k w[c, k]` per channel of the group (exact; the zero-point correction).
    pub sum_w: Vec<i64>,
}

/// 16w8a byte split: `w = 256·hi + lo`, `hi = w >> 8 ∈ [−128, 127]`,
/// `lo = w & 255 ∈ [0, 255]`, stored as `lo − 128 ∈ [−128, 127]`.
#[inline]
pub(crate) fn split16(w: i16) -> (i8, i8) {
    let hi = (w >> 8) as i8;
    let lo = ((w as i32 & 0xff) - 128) as i8;
    (hi, lo)
}

/// Packs 8w8a weights `w[c·k .. (c+1)·k]` for `c < n`.
pub(crate) fn pack_b8(
    dst: &mut PackedB,
    shape: PanelShape,
    w: &[i8],
    n: usize,
    k: usize,
    scratch: &mut Vec<i8>,
) {
    pack_rows(&mut dst.panels, shape, n, scratch, |c, row| {
        row[..k].copy_from_slice(&w[c * k..(c + 1) * k]);
    });
    dst.sum_w.clear();
    dst.sum_w
        .extend((0..n).map(|c| w[c * k..(c + 1) * k].iter().map(|&v| v as i64).sum::<i64>()));
}

/// Packs 16w8a weights as `2n` byte-plane rows (see [`PackedB::panels`]).
pub(crate) fn pack_b16(
    dst: &mut PackedB,
    shape: PanelShape,
    w: &[i16],
    n: usize,
    k: usize,
    scratch: &mut Vec<i8>,
) {
    pack_rows(&mut dst.panels, shape, 2 * n, scratch, |r, row| {
        let src = &w[(r / 2) * k..(r / 2 + 1) * k];
        let take_hi = r % 2 == 0;
        for (d, &v) in row[..k].iter_mut().zip(src) {
            let (hi, lo) = split16(v);
            *d = if take_hi { hi } else { lo };
        }
    });
    dst.sum_w.clear();
    dst.sum_w
        .extend((0..n).map(|c| w[c * k..(c + 1) * k].iter().map(|&v| v as i64).sum::<i64>()));
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn split16_recombines_exactly_over_the_whole_range() {
        for w in -32767i16..=32767 {
            let (hi, lo) = split16(w);
            assert_eq!(256 * hi as i32 + lo as i32 + 128, w as i32, "w = {w}");
        }
    }

    #[test]
    fn panels_interleave_chunks_and_pad_with_zeros() {
        let shape = PanelShape {
            r: 2,
            chunk: 8,
            kp: 16,
        };
        let mut dst = Vec::new();
        let mut scratch = Vec::new();
        // 3 rows of K = 10: row i holds i*16 + k.
        pack_rows(&mut dst, shape, 3, &mut scratch, |i, row| {
            for (k, v) in row[..10].iter_mut().enumerate() {
                *v = (i * 16 + k) as i8;
            }
        });
        assert_eq!(dst.len(), 2 * 32);
        // Panel 0, chunk 0: row 0 bytes 0..8, then row 1 bytes 0..8.
        assert_eq!(&dst[0..8], &[0, 1, 2, 3, 4, 5, 6, 7]);
        assert_eq!(&dst[8..16], &[16, 17, 18, 19, 20, 21, 22, 23]);
        // Chunk 1: row 0 bytes 8..16 (8, 9, then zero padding).
        assert_eq!(&dst[16..24], &[8, 9, 0, 0, 0, 0, 0, 0]);
        // Panel 1: row 2, then an all-zero row.
        assert_eq!(&dst[32..40], &[32, 33, 34, 35, 36, 37, 38, 39]);
        assert!(dst[40..48].iter().all(|&v| v == 0));
    }
}
