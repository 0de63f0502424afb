//! The GEMM tile: `MR` activation rows × `NB` weight panels of `LANES` output channels,
//! reduced over `kg` dword groups, written once per tier-independent loop
//! ([`tile`]) and instantiated per tier by `#[target_feature]` entry points.
//!
//! Data layout (produced by `crate::pack` and `crate::gather`):
//!
//! * activation row `i`: `kg` dword groups at `a + i·a_stride` (4 `u8`/`i8` codes per
//!   group for VNNI, 2 `i16` for AVX2);
//! * weight panel `j`: `kg` groups of `LANES` dwords at `w + j·panel_stride`, group `g`
//!   of lane `l` holding the same 4 (or 2) `k` of output channel `l` as the row's group `g`;
//! * output: `MR × NB·LANES` `i32` at `out`, row stride `out_stride` (in `i32`).
//!
//! Accumulation is in wrapping `i32`; see `crate::gemm` for why every sum a tier
//! forms is exact modulo 2^32 and small enough to be exact outright.

use super::simd::{Dot, Simd, YmmActU8, YmmMaddI16, ZmmActU8};

/// Raw arguments of one tile call; see the module docs for the layout.
#[derive(Clone, Copy, Debug)]
pub(super) struct RawTile {
    pub kg: usize,
    pub a: *const u8,
    pub a_stride: usize,
    pub w: *const u8,
    pub panel_stride: usize,
    pub out: *mut i32,
    pub out_stride: usize,
}

/// The tile loop.
///
/// # Safety
/// * CPU: the caller runs with the features of `D` enabled (module docs of `simd`).
/// * Memory: for `i < MR`, bytes `a + i·a_stride .. + kg·4` are readable; for `j < NB`,
///   bytes `w + j·panel_stride .. + kg·LANES·4` are readable; for `i < MR`, the `NB·LANES`
///   `i32` at `out + i·out_stride` are writable.
#[inline(always)]
unsafe fn tile<D: Dot, const MR: usize, const NB: usize>(t: RawTile) {
    let lanes = <D::S as Simd>::LANES;
    // SAFETY: every load below stays inside the ranges of the function contract: group
    // `g < kg` of row `i` is at `a + i·a_stride + 4g` (4 bytes), of panel `j` at
    // `w + j·panel_stride + g·LANES·4` (LANES·4 bytes); stores write row `i`, panel `j`
    // at `out + i·out_stride + j·LANES`. CPU features: function contract.
    unsafe {
        let zero = <D::S as Simd>::zero();
        let mut acc = [[zero; NB]; MR];
        let mut ap = t.a;
        let mut wp = t.w;
        for _ in 0..t.kg {
            let mut wv = [zero; NB];
            for (j, v) in wv.iter_mut().enumerate() {
                *v = <D::S as Simd>::load(wp.add(j * t.panel_stride));
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
