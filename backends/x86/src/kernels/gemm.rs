//! The GEMM tile: `MR` activation rows × `NB` weight panels of `LANES` output channels,
//! reduced over `kg` dword groups, written once per tier-independent loop
//! ([`tile`]) and instantiated per tier by `#[target_feature]` entry points.
//!
//! Data layout (produced by `crate::pack` and `crate::gather`):
//!
//! * activation row `i`: `nseg` segments of `kg` dword groups, segment `s` at
//!   `a + i·a_stride + segs[s]` (4 `u8`/`i8` codes per group for VNNI, 2 `i16` for AVX2).
//!   Gathered (im2col) rows are one segment at offset 0; a direct convolution reads each
//!   kernel row's window of a padded input in place, one segment per kernel row;
//! * weight panel `j`: `nseg·kg` groups of `LANES` dwords at `w + j·panel_stride`, group
//!   `s·kg + g` of lane `l` holding the same 4 (or 2) `k` of output channel `l` as group `g`
//!   of the row's segment `s`;
//! * output: `MR × NB·LANES` `i32` at `out`, row stride `out_stride` (in `i32`).
//!
//! Accumulation is in wrapping `i32`; see `crate::gemm` for why every sum a tier
//! forms is exact modulo 2^32 and small enough to be exact outright.

use core::arch::x86_64::{_MM_HINT_T0, _mm_prefetch};

use super::simd::{Dot, Simd, YmmActU8, YmmMaddI16, ZmmActU8};

/// Raw arguments of one tile call; see the module docs for the layout.
#[derive(Clone, Copy, Debug)]
pub(super) struct RawTile {
    /// Dword groups per segment.
    pub kg: usize,
    /// Byte offsets of the `nseg` segments of a row.
    pub segs: *const usize,
    pub nseg: usize,
    pub a: *const u8,
    pub a_stride: usize,
    pub w: *const u8,
    pub panel_stride: usize,
    pub out: *mut i32,
    pub out_stride: usize,
    /// Prefetch the weights [`PREFETCH_BYTES`] ahead: for tiles whose weights stream
    /// from L3 (linear layers, each weight used by one tile), not for convolutions,
    /// whose panels sit in L1 (there the extra instructions cost ~4 %).
    pub prefetch: bool,
}

/// How far ahead a streaming tile prefetches its panels: ~32 dword groups, about the
/// L3 latency at the tile's pace (measured best of 1–8 KB on the 16-bit 1024² linear).
const PREFETCH_BYTES: usize = 2048;

/// The tile loop.
///
/// # Safety
/// * CPU: the caller runs with the features of `D` enabled (module docs of `simd`).
/// * Memory: `segs .. + nseg` are readable `usize`; for `i < MR` and `s < nseg`, bytes
///   `a + i·a_stride + segs[s] .. + kg·4` are readable; for `j < NB`, bytes
///   `w + j·panel_stride .. + nseg·kg·LANES·4` are readable; for `i < MR`, the `NB·LANES`
///   `i32` at `out + i·out_stride` are writable.
#[inline(always)]
unsafe fn tile<D: Dot, const MR: usize, const NB: usize>(t: RawTile) {
    // SAFETY: forwarded contract (the loop is instantiated with and without prefetches).
    unsafe {
        if t.prefetch {
            tile_loop::<D, MR, NB, true>(t)
        } else {
            tile_loop::<D, MR, NB, false>(t)
        }
    }
}

/// [`tile`] with or without weight prefetches (same contract).
#[inline(always)]
unsafe fn tile_loop<D: Dot, const MR: usize, const NB: usize, const PF: bool>(t: RawTile) {
    let lanes = <D::S as Simd>::LANES;
    // SAFETY: every load below stays inside the ranges of the function contract: group
    // `g < kg` of segment `s < nseg` of row `i` is at `a + i·a_stride + segs[s] + 4g`
    // (4 bytes), of panel `j` at `w + j·panel_stride + (s·kg + g)·LANES·4` (LANES·4 bytes);
    // stores write row `i`, panel `j` at `out + i·out_stride + j·LANES`. Prefetch hints
    // never fault; their addresses are formed with `wrapping_add`, never dereferenced.
    // CPU features: function contract.
    unsafe {
        let zero = <D::S as Simd>::zero();
        let mut acc = [[zero; NB]; MR];
        let mut wp = t.w;
        for s in 0..t.nseg {
            let mut ap = t.a.add(*t.segs.add(s));
            for _ in 0..t.kg {
                let mut wv = [zero; NB];
                for (j, v) in wv.iter_mut().enumerate() {
                    *v = <D::S as Simd>::load(wp.add(j * t.panel_stride));
                    if PF {
                        let ahead = wp.wrapping_add(j * t.panel_stride + PREFETCH_BYTES);
                        _mm_prefetch::<_MM_HINT_T0>(ahead as *const i8);
                    }
                }
                for (i, row) in acc.iter_mut().enumerate() {
                    let av = <D::S as Simd>::bcast(ap.add(i * t.a_stride));
                    for (j, c) in row.iter_mut().enumerate() {
                        *c = D::dot(*c, av, wv[j]);
                    }
                }
                ap = ap.add(4);
                wp = wp.add(lanes * 4);
            }
        }
        for (i, row) in acc.iter().enumerate() {
            for (j, c) in row.iter().enumerate() {
                <D::S as Simd>::store(t.out.add(i * t.out_stride + j * lanes), *c);
            }
        }
    }
}

macro_rules! entry {
    ($(#[$doc:meta])* $name:ident, $features:literal, $dot:ty) => {
        $(#[$doc])*
        /// # Safety
        /// The CPU has the features enabled here, and `t` satisfies the memory contract
        /// of [`tile`].
        #[target_feature(enable = $features)]
        pub(super) unsafe fn $name<const MR: usize, const NB: usize>(t: RawTile) {
            // SAFETY: features enabled by this function's attribute; memory: forwarded contract.
            unsafe { tile::<$dot, MR, NB>(t) }
        }
    };
}

entry!(
    /// AVX-512 VNNI, `u8` activations × `s8` weights.
    zmm_act_u8,
    "avx512f,avx512bw,avx512vl,avx512vnni",
    ZmmActU8
);
entry!(
    /// AVX-VNNI, `u8` activations × `s8` weights.
    ymm_act_u8,
    "avx2,avxvnni",
    YmmActU8
);
entry!(
    /// AVX2, `i16` × `i16` pairs.
    ymm_madd_i16,
    "avx2",
    YmmMaddI16
);

/// Calls `$f::<rows, nb>(t)` for runtime `rows ∈ 1..=MR(nb)` (the listed literals per
/// panel count); the caller has checked both ranges.
macro_rules! dispatch {
    ($f:ident, $rows:expr, $nb:expr, $t:expr,
     1: [$($m1:literal)*], 2: [$($m2:literal)*], 3: [$($m3:literal)*], 4: [$($m4:literal)*]) => {
        match ($nb, $rows) {
            $( (1, $m1) => $f::<$m1, 1>($t), )*
            $( (2, $m2) => $f::<$m2, 2>($t), )*
            $( (3, $m3) => $f::<$m3, 3>($t), )*
            $( (4, $m4) => $f::<$m4, 4>($t), )*
            _ => unreachable!("tile shape checked by the caller"),
        }
    };
}

/// Which tile loop to run.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum TileFn {
    ZmmActU8,
    YmmActU8,
    YmmMaddI16,
}

/// Rows per tile for `nb` panels: as many accumulators as the register file allows
/// (32 `zmm`: 8×2 or 6×4; 16 `ymm`: 6×2 or 4×3, leaving room for weights and a broadcast).
pub(super) const fn max_rows(f: TileFn, nb: usize) -> usize {
    match (f, nb) {
        (TileFn::ZmmActU8, 1 | 2) => 8,
        (TileFn::ZmmActU8, _) => 6,
        (_, 1 | 2) => 6,
        (_, _) => 4,
    }
}

/// Runs the tile `f` with `rows` rows and `nb` panels.
///
/// # Safety
/// The CPU has the features of `f`; `nb ∈ 1..=4`, `rows ∈ 1..=max_rows(f, nb)`; `t`
/// satisfies the memory contract of [`tile`] for `MR = rows`, `NB = nb`.
pub(super) unsafe fn run(f: TileFn, rows: usize, nb: usize, t: RawTile) {
    // SAFETY: forwarded contract; `dispatch!` only maps the runtime (rows, nb) to the same
    // compile-time shape.
    unsafe {
        match f {
            TileFn::ZmmActU8 => dispatch!(zmm_act_u8, rows, nb, t,
                1: [1 2 3 4 5 6 7 8], 2: [1 2 3 4 5 6 7 8], 3: [1 2 3 4 5 6], 4: [1 2 3 4 5 6]),
            TileFn::YmmActU8 => dispatch!(ymm_act_u8, rows, nb, t,
                1: [1 2 3 4 5 6], 2: [1 2 3 4 5 6], 3: [1 2 3 4], 4: [1 2 3 4]),
            TileFn::YmmMaddI16 => dispatch!(ymm_madd_i16, rows, nb, t,
                1: [1 2 3 4 5 6], 2: [1 2 3 4 5 6], 3: [1 2 3 4], 4: [1 2 3 4]),
        }
    }
}
