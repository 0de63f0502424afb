//! Conv2d (groups = 1) and linear as one blocked GEMM:
//! `y[m, c] = requant_c(bias_c + Σ_k (a[m, k] − zp)·w[c, k])`.
//!
//! ## Exactness per scheme (see `pack::Scheme`)
//!
//! All tile sums are wrapping `i32`. A wrapping sum is exact whenever the true value
//! fits `i32`, whatever the intermediate values — so it suffices to bound the *final*
//! value of every sum formed:
//!
//! * **Vnni8** — `S = Σ (x+128)·w`, `|S| ≤ K·255·127 ≤ 2 122 383 360 < 2^31` for
//!   `K ≤ MAX_K`; `S + corr = bias + Σ (x−zp)·w` is the spec's `i32`-exact accumulator.
//!   `vpdpbusd` (not `vpdpbusds`) never saturates, so nothing else can go wrong.
//! * **Vnni16** — `w = 256·hi + lo' + 128` with `hi = w >> 8` and `lo' = (w & 255) − 128`
//!   both in `[−128, 127]`, packed as two panels of one `u8 × s8` tile. `H = Σ (x+128)·hi`,
//!   `L = Σ (x+128)·lo'`, and `H − (zp+128)·Σhi = Σ (x−zp)·hi`, `L − (zp+128)·Σlo'` are
//!   all bounded by `K·255·128 ≤ 2 139 095 040 < 2^31`, so exact in wrapping `i32` for
//!   every legal K — no intermediate flush. The rest is formed in `i64`:
//!   `acc = 256·(H − …) + (L − …) + 128·(S_m − K·(zp+128)) + bias` with the per-row sum
//!   `S_m = Σ_k (x_k + 128)` (padding taps hold `zp + 128`, as in the tile).
//!   When `K·255·32767 + max|bias| ≤ 2^31 − 1` (small K, e.g. 1×1 convs over ≤ 257
//!   channels) the whole accumulator fits `i32`: the combination is done in wrapping
//!   `i32` and requantized like 8w8a (the "narrow" path, decided per forward).
//! * **Madd8** — `Σ (x−zp)·w` with `i16` operands: the spec's `i32` bound.
//! * **Madd16** — `|(x−zp)·w| ≤ 255·32767`, so 256 products fit `i32`; each tile call
//!   reduces at most [`MADD16_CHUNK`] dword groups (256 elements) and is widened to `i64`.
//!
//! ## Blocking
//!
//! Rows are processed in blocks whose activation rows (`kg·4` bytes each) fit in about
//! [`A_BLOCK_BYTES`]; per block the rows are gathered once, then every group of `nb`
//! weight panels sweeps the block tile by tile, so one panel group stays in L1 while
//! the block streams from L2. Threads take disjoint row ranges (or, when there are
//! fewer blocks than threads, disjoint panel groups).

use lastmile_core::quant::QuantMultiplier;

use crate::direct::{Direct, DirectInput};
use crate::gather::{AFormat, Rows};
use crate::kernels::{AlignedBytes, Clamp, HiLoCorr, TileArgs, TileOp, Token};
use crate::pack::{Corrections, PackedWeights, Scheme};
use crate::workers::Workers;

/// Dword groups per Madd16 tile call: 128 groups = 256 elements, so every `i32` lane sum
/// is at most `256·255·32767 < 2^31`.
pub(crate) const MADD16_CHUNK: usize = 128;

/// Target size of one block of gathered activation rows.
pub(crate) const A_BLOCK_BYTES: usize = 96 * 1024;

/// Largest tile: `rows · nb · lanes` `i32` (AMX 16·4·16; VNNI 8·2·16, 6·4·16, 6·2·8).
const TILE_MAX: usize = 1024;
/// Largest tile height (AMX).
const MR_MAX: usize = 16;
/// Largest `nr` (output channels per tile).
const NR_MAX: usize = 64;
/// Largest `rows · nr` of a Madd16 tile (6 · 16).
const TILE64_MAX: usize = 96;

/// Per-channel requantization constants, padded to the packed channel count.
#[derive(Clone, Debug)]
pub(crate) struct Requant {
    /// `M_c` (padding: 2^30).
    pub mult: Vec<i32>,
    /// `n_c` (padding: 31).
    pub shift: Vec<i32>,
    /// The plan's multipliers (unpadded), for the scalar path.
    pub multipliers: Vec<QuantMultiplier>,
    pub clamp: Clamp,
    /// Every shift ≥ 22: the vector `i64` requantization is exact (see `kernels::requant`).
    pub wide_ok: bool,
}

impl Requant {
    pub(crate) fn new(multipliers: &[QuantMultiplier], n_pad: usize, clamp: Clamp) -> Self {
        let mut mult = vec![1 << 30; n_pad];
        let mut shift = vec![31; n_pad];
        for (c, m) in multipliers.iter().enumerate() {
            mult[c] = m.multiplier;
            shift[c] = m.shift as i32;
        }
        Requant {
            mult,
            shift,
            multipliers: multipliers.to_vec(),
            clamp,
            wide_ok: multipliers.iter().all(|m| m.shift >= 22),
        }
    }

    /// The Vnni16 epilogue of a tile's `row_terms.len()` rows (see
    /// [`Token::requant_hilo_rows`]): row `i` of `t` is `nr` `hi` then `nr` `lo'` sums.
    #[allow(clippy::too_many_arguments)]
    fn hilo_rows(
        &self,
        tok: Token,
        t: &[i32],
        corr: HiLoCorr<'_>,
        row_terms: &[i64],
        c0: usize,
        valid: usize,
        out: &mut [i8],
        out_stride: usize,
    ) {
        let nr = t.len() / (2 * row_terms.len());
        // The vector epilogue needs shifts ≥ 22 only on its `i64` path, which a narrow
        // layer (every vector on the `i32` path) never takes.
        if self.wide_ok || corr.h_limit == i32::MAX {
            let (m, s) = (&self.mult[c0..c0 + nr], &self.shift[c0..c0 + nr]);
            tok.requant_hilo_rows(t, corr, row_terms, m, s, self.clamp, out, out_stride);
        } else {
            let q = self.clamp;
            let ms = &self.multipliers[c0..c0 + valid];
            for (i, &row) in row_terms.iter().enumerate() {
                let (hi, lo) = t[i * 2 * nr..(i + 1) * 2 * nr].split_at(nr);
                for (j, m) in ms.iter().enumerate() {
                    let acc = ((hi[j].wrapping_add(corr.c_hi[j]) as i64) << 8)
                        + lo[j].wrapping_add(corr.c_lo[j]) as i64
                        + corr.c64[j]
                        + row;
                    out[i * out_stride + j] = m.requantize(acc, q.zp, q.lo, q.hi);
                }
            }
        }
    }

    /// Requantizes one row of `i64` accumulators for channels `c0 ..` into `out`
    /// (`out.len()` a multiple of the tier's lanes; only the first `valid` are meaningful).
    pub(crate) fn row64(&self, tok: Token, acc: &[i64], c0: usize, valid: usize, out: &mut [i8]) {
        let len = out.len();
        if self.wide_ok {
            tok.requant64(
                &acc[..len],
                &self.mult[c0..c0 + len],
                &self.shift[c0..c0 + len],
                self.clamp,
                out,
            );
        } else {
            let q = self.clamp;
            let ms = &self.multipliers[c0..c0 + valid];
            for ((o, m), &a) in out.iter_mut().zip(ms).zip(acc) {
                *o = m.requantize(a, q.zp, q.lo, q.hi);
            }
        }
    }
}

/// Where a GEMM layer's activation rows come from.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) enum Source {
    /// Gathered block by block into scratch (im2col, or a linear layer's rows).
    Gathered(Rows),
    /// Read in place from a padded copy of the input (VNNI convolutions, [`Direct`]).
    Direct(Direct),
}

impl Source {
    /// GEMM rows per input sample.
    pub(crate) fn rows_per_sample(&self) -> usize {
        match self {
            Source::Gathered(Rows::Conv(g)) => g.ho * g.wo,
            Source::Gathered(Rows::Dense { .. }) => 1,
            Source::Direct(d) => d.geom().ho * d.geom().wo,
        }
    }
}

/// A conv/linear layer prepared for the GEMM path.
#[derive(Clone, Debug)]
pub(crate) struct GemmLayer {
    pub source: Source,
    pub zp_in: i32,
    pub packed: PackedWeights,
    pub corr: Corrections,
    pub requant: Requant,
    /// Forwards run so far (their parity sets the panel sweep direction).
    pub sweeps: Sweeps,
}

/// A forward counter that clones as a fresh copy (layers are cloned with their models).
#[derive(Debug, Default)]
pub(crate) struct Sweeps(std::sync::atomic::AtomicUsize);

impl Sweeps {
    /// This forward's number (counting from 0).
    fn next(&self) -> usize {
        self.0.fetch_add(1, std::sync::atomic::Ordering::Relaxed)
    }
}

impl Clone for Sweeps {
    fn clone(&self) -> Self {
        Sweeps(self.0.load(std::sync::atomic::Ordering::Relaxed).into())
    }
}

/// Per-thread scratch: gathered activation rows (and their sums for Vnni16), plus a
/// private output for column-split threading.
#[derive(Debug, Default)]
pub(crate) struct Scratch {
    a: AlignedBytes,
    row_sums: Vec<u64>,
    pub(crate) out: Vec<i8>,
    /// The padded input of a direct convolution (used in the first thread's scratch,
    /// shared read-only by all threads).
    direct: DirectInput,
}

impl GemmLayer {
    fn format(&self) -> AFormat {
        match self.packed.scheme {
            Scheme::Vnni8 | Scheme::Vnni16 => AFormat::U8,
            Scheme::Madd8 | Scheme::Madd16 => AFormat::I16,
        }
    }

    /// Rows per tile: 16 when the tiles run on AMX (VNNI schemes whose row segments are
    /// whole multiples of 16 dword groups), else the tier's register-tile height.
    fn mr(&self, tok: Token) -> usize {
        match self.packed.scheme {
            Scheme::Vnni8 | Scheme::Vnni16 => {
                let kg = match &self.source {
                    Source::Direct(d) => d.kg,
                    Source::Gathered(_) => self.packed.kg,
                };
                tok.mr_for(self.packed.nb, kg)
            }
            Scheme::Madd8 | Scheme::Madd16 => tok.mr(self.packed.nb),
        }
    }

    /// Rows per block: a multiple of the tile height, about [`A_BLOCK_BYTES`] of rows.
    /// A direct convolution's blocks are whole output rows (its tiles never cross one).
    fn block_rows(&self, tok: Token) -> usize {
        let mr = self.mr(tok);
        let stride = self.packed.kg * 4;
        match &self.source {
            Source::Direct(d) => {
                let wo = d.geom().wo;
                (A_BLOCK_BYTES / stride.max(1) / wo).max(1) * wo
            }
            Source::Gathered(_) => (A_BLOCK_BYTES / stride.max(1) / mr).max(1) * mr,
        }
    }

    /// Runs the layer on `m_total` rows of input `x`, writing `y` (`m_total × n`).
    pub(crate) fn run(
        &self,
        tok: Token,
        x: &[i8],
        m_total: usize,
        y: &mut [i8],
        scratch: &mut [Scratch],
        workers: &Workers,
    ) {
        let n = self.packed.n;
        assert_eq!(y.len(), m_total * n);
        let mb = self.block_rows(tok);
        let blocks = m_total.div_ceil(mb);
        let groups = self.packed.n_pad / self.packed.nr;
        let threads = scratch.len().max(1);
        // Taken out of the first scratch so every thread can read it.
        let mut direct_in = std::mem::take(&mut scratch[0].direct);
        if let Source::Direct(d) = &self.source {
            let samples = m_total / self.source.rows_per_sample().max(1);
            let sums = self.packed.scheme == Scheme::Vnni16;
            d.fill(tok, x, samples, self.zp_in, sums, &mut direct_in);
        }
        let din = &direct_in;
        let sweep = self.sweeps.next();
        if threads == 1 || (blocks < 2 && groups < 2) {
            self.run_rows(
                tok,
                x,
                din,
                sweep,
                0,
                m_total,
                0..groups,
                y,
                n,
                0,
                &mut scratch[0],
            );
        } else if blocks >= threads || blocks >= groups {
            // Disjoint row ranges, whole blocks each.
            let per = blocks.div_ceil(threads) * mb;
            workers.scope(|s| {
                for ((i, ys), sc) in y.chunks_mut(per * n).enumerate().zip(scratch.iter_mut()) {
                    s.spawn(move |_| {
                        self.run_rows(
                            tok,
                            x,
                            din,
                            sweep,
                            i * per,
                            ys.len() / n,
                            0..groups,
                            ys,
                            n,
                            0,
                            sc,
                        )
                    });
                }
            });
        } else {
            // Few rows, many channels: disjoint panel groups into private outputs.
            let per = groups.div_ceil(threads);
            let nr = self.packed.nr;
            workers.scope(|s| {
                for (t, sc) in scratch.iter_mut().enumerate() {
                    let g0 = (t * per).min(groups);
                    let g1 = ((t + 1) * per).min(groups);
                    if g0 == g1 {
                        sc.out.clear();
                        continue;
                    }
                    let cols = (g1 * nr).min(n) - g0 * nr;
                    s.spawn(move |_| {
                        let mut out = std::mem::take(&mut sc.out);
                        out.clear();
                        out.resize(m_total * cols, 0);
                        let (y, c0) = (&mut out, g0 * nr);
                        self.run_rows(tok, x, din, sweep, 0, m_total, g0..g1, y, cols, c0, sc);
                        sc.out = out;
                    });
                }
            });
            for (t, sc) in scratch.iter().enumerate() {
                if sc.out.is_empty() {
                    continue;
                }
                let c0 = t * per * nr;
                let cols = sc.out.len() / m_total;
                for (m, row) in sc.out.chunks_exact(cols).enumerate() {
                    y[m * n + c0..m * n + c0 + cols].copy_from_slice(row);
                }
            }
        }
        scratch[0].direct = direct_in;
    }

    /// Rows `m0 .. m0 + count`, panel groups `groups`, into `y` (row stride `y_stride`,
    /// column `col0` of the layer at column 0 of `y`).
    #[allow(clippy::too_many_arguments)]
    fn run_rows(
        &self,
        tok: Token,
        x: &[i8],
        din: &DirectInput,
        sweep: usize,
        m0: usize,
        count: usize,
        groups: core::ops::Range<usize>,
        y: &mut [i8],
        y_stride: usize,
        col0: usize,
        sc: &mut Scratch,
    ) {
        let p = &self.packed;
        let mr = self.mr(tok);
        let mb = self.block_rows(tok);
        let stride = p.kg * 4;
        let nr = p.nr;
        let group_bytes = p.group_bytes();
        let rq = &self.requant;
        let corr = &self.corr;
        let mut t32 = [0i32; TILE_MAX];
        let mut t64 = [0i64; TILE64_MAX];
        let mut o8t = [0i8; TILE_MAX];
        let mut o8 = [0i8; NR_MAX];
        // Linear layers: every weight is used by one tile per block, so the panels
        // stream (from L3 when they outgrow L2) and the tile prefetches them.
        let streaming = matches!(self.source, Source::Gathered(Rows::Dense { .. }));
        let mut b0 = 0;
        while b0 < count {
            let rows = mb.min(count - b0);
            match (&self.source, self.format()) {
                (Source::Direct(d), _) => {
                    if p.scheme == Scheme::Vnni16 {
                        sc.row_sums.clear();
                        d.row_sums(din, m0 + b0, rows, &mut sc.row_sums);
                    }
                }
                (Source::Gathered(source), AFormat::U8) => {
                    sc.a.ensure(mb * stride);
                    let a = &mut sc.a.as_mut_slice()[..rows * stride];
                    tok.gather_u8(source, x, m0 + b0, rows, self.zp_in, stride, a);
                    if p.scheme == Scheme::Vnni16 {
                        // 128·Σ_k (x_k + 128) per row (the K padding holds zeros).
                        sc.row_sums.clear();
                        tok.row_sums(a, stride, rows, p.k, &mut sc.row_sums);
                    }
                }
                (Source::Gathered(source), AFormat::I16) => {
                    sc.a.ensure(mb * stride);
                    let a = &mut sc.a.as_mut_i16()[..rows * stride / 2];
                    tok.gather_i16(source, x, m0 + b0, rows, self.zp_in, stride / 2, a);
                }
            }
            let a = sc.a.as_slice();
            // Sweep the panel groups in alternating directions (per block, and per
            // forward): the groups used last are still in cache when the next sweep
            // starts with them. Groups write disjoint channels, so the order is free.
            let reverse = (sweep + b0 / mb) % 2 == 1;
            let ng = groups.len();
            for gi in 0..ng {
                let g = if reverse {
                    groups.end - 1 - gi
                } else {
                    groups.start + gi
                };
                let c0 = g * nr;
                let valid = nr.min(p.n - c0);
                let w_main = &p.main.as_slice()[g * group_bytes..(g + 1) * group_bytes];
                let mut mt = 0;
                while mt < rows {
                    // The tile's rows: gathered in `a`, or read in place (direct).
                    let (r, a_t, a_stride, segs, kg) = match &self.source {
                        Source::Direct(d) => {
                            let (at, r) = d.tile_at(m0 + b0 + mt, rows - mt, mr);
                            (r, &din.codes()[at..], d.a_stride, &d.segs[..], d.kg)
                        }
                        Source::Gathered(_) => {
                            (mr.min(rows - mt), &a[mt * stride..], stride, &[0][..], p.kg)
                        }
                    };
                    let tile_args = TileArgs {
                        a_stride,
                        segs,
                        kg,
                        panel_stride: p.panel_stride,
                        nb: p.nb,
                        // Later tiles of the block find the panels in L1.
                        prefetch: streaming && mt == 0,
                    };
                    match p.scheme {
                        Scheme::Vnni8 | Scheme::Madd8 => {
                            let op = if p.scheme == Scheme::Vnni8 {
                                TileOp::ActU8
                            } else {
                                TileOp::MaddI16
                            };
                            tok.tile_segments(op, a_t, r, w_main, tile_args, &mut t32);
                            let yo = (b0 + mt) * y_stride + c0 - col0;
                            emit_rows(y, yo, y_stride, r, valid, nr, &mut o8t, |out, stride| {
                                tok.requant32_rows(
                                    &t32[..r * nr],
                                    &corr.c32[c0..c0 + nr],
                                    &rq.mult[c0..c0 + nr],
                                    &rq.shift[c0..c0 + nr],
                                    rq.clamp,
                                    out,
                                    stride,
                                    r,
                                )
                            });
                        }
                        Scheme::Vnni16 => {
                            // One pass: panel 0 = hi, panel 1 = lo' of the same channels.
                            tok.tile_segments(TileOp::ActU8, a_t, r, w_main, tile_args, &mut t32);
                            let mut row_terms = [0i64; MR_MAX];
                            for (i, t) in row_terms[..r].iter_mut().enumerate() {
                                *t = 128 * sc.row_sums[mt + i] as i64;
                            }
                            let hl = HiLoCorr {
                                c_hi: &corr.c32[c0..c0 + nr],
                                c_lo: &corr.c32_lo[c0..c0 + nr],
                                c64: &corr.c64[c0..c0 + nr],
                                c64_32: &corr.c64_32[c0..c0 + nr],
                                h_limit: corr.h_limit,
                            };
                            let t = &t32[..r * 2 * nr];
                            let yo = (b0 + mt) * y_stride + c0 - col0;
                            emit_rows(y, yo, y_stride, r, valid, nr, &mut o8t, |out, stride| {
                                rq.hilo_rows(tok, t, hl, &row_terms[..r], c0, valid, out, stride)
                            });
                        }
                        Scheme::Madd16 => {
                            let mut kg0 = 0;
                            while kg0 < p.kg {
                                let kgn = MADD16_CHUNK.min(p.kg - kg0);
                                tok.tile(
                                    TileOp::MaddI16,
                                    &a_t[kg0 * 4..],
                                    stride,
                                    r,
                                    kgn,
                                    &w_main[kg0 * p.lanes * 4..],
                                    p.panel_stride,
                                    p.nb,
                                    &mut t32,
                                );
                                for (acc, &s) in t64[..r * nr].iter_mut().zip(&t32[..r * nr]) {
                                    if kg0 == 0 {
                                        *acc = s as i64;
                                    } else {
                                        *acc += s as i64;
                                    }
                                }
                                kg0 += kgn;
                            }
                            for i in 0..r {
                                let acc = &mut t64[i * nr..(i + 1) * nr];
                                for (j, acc) in acc.iter_mut().enumerate() {
                                    *acc += corr.c64[c0 + j];
                                }
                                let yo = (b0 + mt + i) * y_stride + c0 - col0;
                                emit(y, yo, valid, nr, &mut o8, |out| {
                                    rq.row64(tok, acc, c0, valid, out)
                                });
                            }
                        }
                    }
                    mt += r;
                }
            }
            b0 += rows;
        }
    }
}

/// Runs `f` on the output row `y[yo .. yo + nr]` directly when all `nr` channels are
/// valid, else on a scratch row whose first `valid` codes are then copied to `y`.
#[inline]
fn emit(
    y: &mut [i8],
    yo: usize,
    valid: usize,
    nr: usize,
    scratch: &mut [i8],
    f: impl FnOnce(&mut [i8]),
) {
    if valid == nr {
        f(&mut y[yo..yo + nr]);
    } else {
        f(&mut scratch[..nr]);
        y[yo..yo + valid].copy_from_slice(&scratch[..valid]);
    }
}

/// Runs `f(out, stride)` on output rows `yo + i·y_stride` (`i < rows`, `nr` codes each) of
/// `y` directly when all `nr` channels are valid, else on a scratch tile (stride `nr`)
/// whose first `valid` codes per row are then copied to `y`.
#[allow(clippy::too_many_arguments)]
#[inline]
fn emit_rows(
    y: &mut [i8],
    yo: usize,
    y_stride: usize,
    rows: usize,
    valid: usize,
    nr: usize,
    scratch: &mut [i8],
    f: impl FnOnce(&mut [i8], usize),
) {
    if valid == nr {
        f(&mut y[yo..], y_stride);
    } else {
        f(&mut scratch[..rows * nr], nr);
        for i in 0..rows {
            let o = yo + i * y_stride;
            y[o..o + valid].copy_from_slice(&scratch[i * nr..i * nr + valid]);
        }
    }
}
