//! Depthwise convolution (one input channel per output channel) over a run of output
//! pixels that share the same valid taps: for pixel `p < pixels` and channel `c`,
//! `acc[p][c] = Σ_taps (x[base0 + p·step + x_rel[t] + c] − zp) · w[w_off[t] + c]`,
//! vectorized over channels.
//!
//! Weights are packed tap-major as `i32` lanes holding the code in the low 16 bits and zero
//! in the high 16 (`[tap][c_pad]`, zero in the padding lanes). A centered input lane
//! `x − zp ∈ [−255, 255]` sign-extended to `i32` has the same value in its low 16 bits, so
//! `vpmaddwd` / `vpdpwssd` of the two is exactly `(x − zp)·w` (the high halves multiply
//! to 0): one instruction per product instead of `vpmulld`'s two, and one code path for
//! 8- and 16-bit weights: every product fits `i32` (`255 · 32767 < 2^23`). Sums over at most 256 taps fit `i32` for 16-bit weights
//! (`256 · 255 · 32767 < 2^31`); the caller splits longer tap lists. For 8-bit weights
//! the spec's accumulation bound makes any tap count exact.

use core::arch::x86_64::*;

use super::requant::Clamp;

/// Raw arguments of one run of pixels.
#[derive(Clone, Copy, Debug)]
pub(super) struct RawDw {
    /// Input base pointer.
    pub x: *const i8,
    /// Offset of pixel 0's window origin in `x`.
    pub base0: usize,
    /// Offset between consecutive pixels' window origins.
    pub step: usize,
    /// Pixels in the run.
    pub pixels: usize,
    /// Per tap: offset of channel 0 of the tap's input pixel from the window origin.
    pub x_rel: *const usize,
    /// Per tap: offset of the tap's weight row (`c_pad` `i32`) in `w`.
    pub w_off: *const usize,
    /// Number of taps.
    pub taps: usize,
    /// Packed weights.
    pub w: *const i32,
    /// Channels.
    pub c: usize,
    /// Channels padded to a multiple of 16 (accumulator row length).
    pub c_pad: usize,
    /// Input zero point.
    pub zp: i32,
    /// Output: `pixels × c_pad` accumulators.
    pub acc: *mut i32,
}

/// `NV` vectors of 16 channels from `c0` for the pixel whose window origin is `xb`, kept
/// in registers across all taps, then stored.
///
/// # Safety
/// As [`dw_zmm`], for this pixel, with `c0 + 16·NV ≤ c_pad`.
#[inline(always)]
unsafe fn chunk_zmm<const NV: usize>(r: &RawDw, p: usize, xb: usize, c0: usize) {
    // SAFETY: register setup only; the CPU features come from the caller (`dw_zmm`).
    let (zp, mut acc) = unsafe { (_mm512_set1_epi32(r.zp), [_mm512_setzero_si512(); NV]) };
    let mut masks = [0u16; NV];
    for (v, m) in masks.iter_mut().enumerate() {
        let valid = r.c.saturating_sub(c0 + 16 * v).min(16);
        *m = if valid == 16 {
            u16::MAX
        } else {
            (1u16 << valid) - 1
        };
    }
    for t in 0..r.taps {
        // SAFETY: tap `t < taps` ⇒ both offset entries readable; the masked byte loads
        // touch only channels `< c` of the tap's input pixel (masked-off bytes are not
        // accessed); weight loads stay below `c0 + 16·NV ≤ c_pad` of the tap's row.
        unsafe {
            let xp = r.x.add(xb + *r.x_rel.add(t) + c0);
            let wp = r.w.add(*r.w_off.add(t) + c0);
            for (v, a) in acc.iter_mut().enumerate() {
                let xv = _mm512_cvtepi8_epi32(_mm_maskz_loadu_epi8(masks[v], xp.add(16 * v)));
                let wv = _mm512_loadu_si512(wp.add(16 * v) as *const __m512i);
                *a = _mm512_add_epi32(*a, _mm512_madd_epi16(_mm512_sub_epi32(xv, zp), wv));
            }
        }
    }
    for (v, a) in acc.iter().enumerate() {
        // SAFETY: `c0 + 16v + 16 ≤ c_pad`: inside pixel `p`'s accumulator row.
        unsafe { _mm512_storeu_si512(r.acc.add(p * r.c_pad + c0 + 16 * v) as *mut __m512i, *a) };
    }
}

/// AVX-512: all `c_pad` accumulators of every pixel (padding lanes read masked-off input).
///
/// # Safety
/// CPU has avx512f+avx512bw+avx512vl. For every pixel `p < pixels` and tap `t < taps`:
/// `x + base0 + p·step + x_rel[t] .. + c` readable, `w + w_off[t] .. + c_pad` readable;
/// `x_rel`/`w_off` hold `taps` entries; `acc .. + pixels·c_pad` writable; `c ≤ c_pad`,
/// `c_pad % 16 == 0`.
#[target_feature(enable = "avx512f,avx512bw,avx512vl")]
pub(super) unsafe fn dw_zmm(r: RawDw) {
    for p in 0..r.pixels {
        let xb = r.base0 + p * r.step;
        let mut c0 = 0;
        while c0 < r.c_pad {
            let nv = ((r.c_pad - c0) / 16).min(4);
            // SAFETY: forwarded contract; `c0 + 16·nv ≤ c_pad`.
            unsafe {
                match nv {
                    4 => chunk_zmm::<4>(&r, p, xb, c0),
                    3 => chunk_zmm::<3>(&r, p, xb, c0),
                    2 => chunk_zmm::<2>(&r, p, xb, c0),
                    _ => chunk_zmm::<1>(&r, p, xb, c0),
                }
            }
            c0 += 16 * nv;
        }
    }
}

/// `NV` vectors of 8 channels from `c0` (all below `⌊c/8⌋·8`), AVX2.
///
/// # Safety
/// As [`dw_ymm`], for this pixel, with `c0 + 8·NV ≤ ⌊c/8⌋·8`.
#[inline(always)]
unsafe fn chunk_ymm<const NV: usize>(r: &RawDw, p: usize, xb: usize, c0: usize) {
    // SAFETY: register setup only; the CPU features come from the caller (`dw_ymm`).
    let (zp, mut acc) = unsafe { (_mm256_set1_epi32(r.zp), [_mm256_setzero_si256(); NV]) };
    for t in 0..r.taps {
        // SAFETY: tap `t < taps` ⇒ both offset entries readable; vector `v < NV` covers
        // channels `c0 + 8v .. + 8 ≤ ⌊c/8⌋·8 ≤ c` of the tap's input pixel and weight row.
        unsafe {
            let xp = r.x.add(xb + *r.x_rel.add(t) + c0);
            let wp = r.w.add(*r.w_off.add(t) + c0);
            for (v, a) in acc.iter_mut().enumerate() {
                let xv = _mm256_cvtepi8_epi32(_mm_loadl_epi64(xp.add(8 * v) as *const __m128i));
                let wv = _mm256_loadu_si256(wp.add(8 * v) as *const __m256i);
                *a = _mm256_add_epi32(*a, _mm256_madd_epi16(_mm256_sub_epi32(xv, zp), wv));
            }
        }
    }
    for (v, a) in acc.iter().enumerate() {
        // SAFETY: `c0 + 8v + 8 ≤ ⌊c/8⌋·8 ≤ c_pad`: inside pixel `p`'s accumulator row.
        unsafe { _mm256_storeu_si256(r.acc.add(p * r.c_pad + c0 + 8 * v) as *mut __m256i, *a) };
    }
}

/// AVX2: the first `⌊c/8⌋·8` accumulators of every pixel (the caller computes the rest).
///
/// # Safety
/// CPU has avx2. For every pixel `p < pixels` and tap `t < taps`:
/// `x + base0 + p·step + x_rel[t] .. + c` readable, `w + w_off[t] .. + ⌊c/8⌋·8` readable;
/// `x_rel`/`w_off` hold `taps` entries; `acc .. + pixels·c_pad` writable; `c ≤ c_pad`.
#[target_feature(enable = "avx2")]
pub(super) unsafe fn dw_ymm(r: RawDw) {
    let c_main = r.c / 8 * 8;
    for p in 0..r.pixels {
        let xb = r.base0 + p * r.step;
        let mut c0 = 0;
        while c0 < c_main {
            let nv = ((c_main - c0) / 8).min(4);
            // SAFETY: forwarded contract; `c0 + 8·nv ≤ c_main`.
            unsafe {
                match nv {
                    4 => chunk_ymm::<4>(&r, p, xb, c0),
                    3 => chunk_ymm::<3>(&r, p, xb, c0),
                    2 => chunk_ymm::<2>(&r, p, xb, c0),
                    _ => chunk_ymm::<1>(&r, p, xb, c0),
                }
            }
            c0 += 8 * nv;
        }
    }
}

/// Raw arguments of a run of output pixels whose three kernel columns (`kw = 3`, column
/// dilation 1) are all inside the image: for pixel `p < pixels`, used kernel row `r < rows`
/// and column `kx < 3`, the input codes of channels `0 .. c` are at
/// `x + base0 + p·step + row_off[r] + kx·c` and the weights at `w + w_off[r] + kx·c_pad`.
#[derive(Clone, Copy, Debug)]
pub(super) struct RawDw3 {
    /// Input base pointer.
    pub x: *const i8,
    /// Offset of pixel 0's window origin (kernel column 0) in `x`.
    pub base0: usize,
    /// Offset between consecutive pixels' window origins (`stride · c`); must equal
    /// `S · c` for the kernel's `S`.
    pub step: usize,
    /// Pixels in the run.
    pub pixels: usize,
    /// Per used kernel row: offset of its input row from the window origin.
    pub row_off: *const usize,
    /// Per used kernel row: offset of its tap `kx = 0` weight row in `w`.
    pub w_off: *const usize,
    /// Per used kernel row: offset in `wsum` of its per-channel `Σ_kx w` (`c_pad` values).
    pub sum_off: *const usize,
    /// Weight sums per kernel row (signed).
    pub wsum: *const i32,
    /// Used kernel rows.
    pub rows: usize,
    /// Packed weights (low 16 bits of each lane, high 16 zero).
    pub w: *const i32,
    /// Channels.
    pub c: usize,
    /// Channels padded to a multiple of 16 (weight and accumulator row length).
    pub c_pad: usize,
    /// Input zero point.
    pub zp: i32,
    /// Where the results go.
    pub out: Dw3Out,
}

/// The destination of [`RawDw3`].
#[derive(Clone, Copy, Debug)]
pub(super) enum Dw3Out {
    /// `pixels × c_pad` raw accumulators `Σ (x − zp)·w` (lanes `≥ c` unspecified).
    Acc(*mut i32),
    /// Requantized codes: pixel `p`'s `c` codes at `y + p·c`, from `bias + Σ (x − zp)·w`
    /// with per-channel `mult`/`shift` (`c_pad` each; the shifts of channels `< c` in
    /// `33..=62`, padding lanes compute values that are never stored).
    Codes {
        y: *mut i8,
        bias: *const i32,
        mult: *const i32,
        shift: *const i32,
        q: Clamp,
    },
}

/// The vector operations of the 3-wide depthwise kernel on one register file.
///
/// Contract of every method: called only inside a `#[target_feature]` function enabling
/// the features named on the implementing type; loads read exactly the bytes stated,
/// stores write exactly the bytes stated, all in bounds (the caller's guarantee).
trait DwVec {
    type V: Copy;
    /// `i32` lanes (channels) per register.
    const L: usize;
    unsafe fn zero() -> Self::V;
    unsafe fn splat(v: i32) -> Self::V;
    /// `L` codes at `p`, sign-extended.
    unsafe fn load_x(p: *const i8) -> Self::V;
    /// The first `n < L` codes at `p` (only those bytes are read), sign-extended; 0 above.
    unsafe fn load_x_part(p: *const i8, n: usize) -> Self::V;
    /// `L` `i32` at `p`.
    unsafe fn load(p: *const i32) -> Self::V;
    unsafe fn add(a: Self::V, b: Self::V) -> Self::V;
    unsafe fn sub(a: Self::V, b: Self::V) -> Self::V;
    /// Wrapping `i32` product.
    unsafe fn mullo(a: Self::V, b: Self::V) -> Self::V;
    /// Per-lane logical left shift (`b < 32`).
    unsafe fn sllv(a: Self::V, b: Self::V) -> Self::V;
    /// `acc + lo16(x)·lo16(w) + hi16(x)·hi16(w)` per lane (`vpdpwssd` / `vpmaddwd`).
    unsafe fn dot(acc: Self::V, x: Self::V, w: Self::V) -> Self::V;
    unsafe fn store(p: *mut i32, v: Self::V);
    /// `clamp(⌊(a·M + 2^(n−1)) / 2^n⌋ + zp, lo, hi)` per lane for shifts `n ∈ 33..=62`
    /// (the high-dword form of `super::requant`), given `m = M`, `k = n − 32` and
    /// `rnd = 2^(k−1)`; `zlh` = splats of `zp`, `lo`, `hi`.
    unsafe fn requant_hi(
        a: Self::V,
        m: Self::V,
        k: Self::V,
        rnd: Self::V,
        zlh: [Self::V; 3],
    ) -> Self::V;
    /// Stores the low bytes of the first `n ≤ L` lanes (each in `[−128, 127]`) to `p`.
    unsafe fn store_i8(p: *mut i8, v: Self::V, n: usize);
}

/// AVX-512 with VNNI (features `avx512f,avx512bw,avx512vl,avx512vnni`).
struct ZmmDw;

impl DwVec for ZmmDw {
    type V = __m512i;
    const L: usize = 16;
    #[inline(always)]
    unsafe fn zero() -> __m512i {
        // SAFETY: trait contract (features enabled by the caller).
        unsafe { _mm512_setzero_si512() }
    }
    #[inline(always)]
    unsafe fn splat(v: i32) -> __m512i {
        // SAFETY: trait contract.
        unsafe { _mm512_set1_epi32(v) }
    }
    #[inline(always)]
    unsafe fn load_x(p: *const i8) -> __m512i {
        // SAFETY: trait contract: 16 readable bytes at `p`.
        unsafe { _mm512_cvtepi8_epi32(_mm_loadu_si128(p as *const __m128i)) }
    }
    #[inline(always)]
    unsafe fn load_x_part(p: *const i8, n: usize) -> __m512i {
        // SAFETY: trait contract: `n` readable bytes at `p`; masked-off bytes are not
        // accessed (avx512bw+vl masked load).
        unsafe { _mm512_cvtepi8_epi32(_mm_maskz_loadu_epi8(((1u32 << n) - 1) as u16, p)) }
    }
    #[inline(always)]
    unsafe fn load(p: *const i32) -> __m512i {
        // SAFETY: trait contract: 16 readable i32 at `p`.
        unsafe { _mm512_loadu_si512(p as *const __m512i) }
    }
    #[inline(always)]
    unsafe fn add(a: __m512i, b: __m512i) -> __m512i {
        // SAFETY: trait contract.
        unsafe { _mm512_add_epi32(a, b) }
    }
    #[inline(always)]
    unsafe fn sub(a: __m512i, b: __m512i) -> __m512i {
        // SAFETY: trait contract.
        unsafe { _mm512_sub_epi32(a, b) }
    }
    #[inline(always)]
    unsafe fn mullo(a: __m512i, b: __m512i) -> __m512i {
        // SAFETY: trait contract.
        unsafe { _mm512_mullo_epi32(a, b) }
    }
    #[inline(always)]
    unsafe fn sllv(a: __m512i, b: __m512i) -> __m512i {
        // SAFETY: trait contract.
        unsafe { _mm512_sllv_epi32(a, b) }
    }
    #[inline(always)]
    unsafe fn dot(acc: __m512i, x: __m512i, w: __m512i) -> __m512i {
        // SAFETY: trait contract (avx512vnni).
        unsafe { _mm512_dpwssd_epi32(acc, x, w) }
    }
    #[inline(always)]
    unsafe fn store(p: *mut i32, v: __m512i) {
        // SAFETY: trait contract: 16 writable i32 at `p`.
        unsafe { _mm512_storeu_si512(p as *mut __m512i, v) }
    }
    #[inline(always)]
    unsafe fn requant_hi(
        a: __m512i,
        m: __m512i,
        k: __m512i,
        rnd: __m512i,
        [zp, lo, hi]: [__m512i; 3],
    ) -> __m512i {
        // SAFETY: trait contract; register-only.
        unsafe {
            let pe = _mm512_mul_epi32(a, m);
            let po = _mm512_mul_epi32(_mm512_srli_epi64::<32>(a), _mm512_srli_epi64::<32>(m));
            // Even lanes ← the high dword of their product; odd lanes keep theirs.
            let h = _mm512_mask_shuffle_epi32::<_MM_PERM_DDBB>(po, 0x5555, pe);
            let y = _mm512_srav_epi32(_mm512_add_epi32(h, rnd), k);
            _mm512_min_epi32(_mm512_max_epi32(_mm512_add_epi32(y, zp), lo), hi)
        }
    }
    #[inline(always)]
    unsafe fn store_i8(p: *mut i8, v: __m512i, n: usize) {
        // SAFETY: trait contract: `n ≤ 16` writable bytes at `p`; masked-off bytes are not
        // written.
        unsafe { _mm512_mask_cvtepi32_storeu_epi8(p, ((1u32 << n) - 1) as u16, v) }
    }
}

/// `ymm` operations shared by the AVX2 and AVX-VNNI variants (features `avx2`).
macro_rules! ymm_dw {
    ($name:ident, $doc:literal, |$acc:ident, $x:ident, $w:ident| $dot:expr) => {
        #[doc = $doc]
        struct $name;

        impl DwVec for $name {
            type V = __m256i;
            const L: usize = 8;
            #[inline(always)]
            unsafe fn zero() -> __m256i {
                // SAFETY: trait contract (features enabled by the caller).
                unsafe { _mm256_setzero_si256() }
            }
            #[inline(always)]
            unsafe fn splat(v: i32) -> __m256i {
                // SAFETY: trait contract.
                unsafe { _mm256_set1_epi32(v) }
            }
            #[inline(always)]
            unsafe fn load_x(p: *const i8) -> __m256i {
                // SAFETY: trait contract: 8 readable bytes at `p`.
                unsafe { _mm256_cvtepi8_epi32(_mm_loadl_epi64(p as *const __m128i)) }
            }
            #[inline(always)]
            unsafe fn load_x_part(p: *const i8, n: usize) -> __m256i {
                let mut t = [0i8; 8];
                // SAFETY: trait contract: `n < 8` readable bytes at `p`, copied into a
                // local buffer of 8.
                unsafe {
                    core::ptr::copy_nonoverlapping(p, t.as_mut_ptr(), n);
                    _mm256_cvtepi8_epi32(_mm_loadl_epi64(t.as_ptr() as *const __m128i))
                }
            }
            #[inline(always)]
            unsafe fn load(p: *const i32) -> __m256i {
                // SAFETY: trait contract: 8 readable i32 at `p`.
                unsafe { _mm256_loadu_si256(p as *const __m256i) }
            }
            #[inline(always)]
            unsafe fn add(a: __m256i, b: __m256i) -> __m256i {
                // SAFETY: trait contract.
                unsafe { _mm256_add_epi32(a, b) }
            }
            #[inline(always)]
            unsafe fn sub(a: __m256i, b: __m256i) -> __m256i {
                // SAFETY: trait contract.
                unsafe { _mm256_sub_epi32(a, b) }
            }
            #[inline(always)]
            unsafe fn mullo(a: __m256i, b: __m256i) -> __m256i {
                // SAFETY: trait contract.
                unsafe { _mm256_mullo_epi32(a, b) }
            }
            #[inline(always)]
            unsafe fn sllv(a: __m256i, b: __m256i) -> __m256i {
                // SAFETY: trait contract.
                unsafe { _mm256_sllv_epi32(a, b) }
            }
            #[inline(always)]
            unsafe fn dot($acc: __m256i, $x: __m256i, $w: __m256i) -> __m256i {
                // SAFETY: trait contract (the type's features).
                unsafe { $dot }
            }
            #[inline(always)]
            unsafe fn store(p: *mut i32, v: __m256i) {
                // SAFETY: trait contract: 8 writable i32 at `p`.
                unsafe { _mm256_storeu_si256(p as *mut __m256i, v) }
            }
            #[inline(always)]
            unsafe fn requant_hi(
                a: __m256i,
                m: __m256i,
                k: __m256i,
                rnd: __m256i,
                [zp, lo, hi]: [__m256i; 3],
            ) -> __m256i {
                // SAFETY: trait contract; register-only.
                unsafe {
                    let pe = _mm256_mul_epi32(a, m);
                    let po =
                        _mm256_mul_epi32(_mm256_srli_epi64::<32>(a), _mm256_srli_epi64::<32>(m));
                    // Even lanes ← the high dword of their product; odd lanes keep theirs.
                    let h = _mm256_blend_epi32::<0b1010_1010>(_mm256_shuffle_epi32::<0xF5>(pe), po);
                    let y = _mm256_srav_epi32(_mm256_add_epi32(h, rnd), k);
                    _mm256_min_epi32(_mm256_max_epi32(_mm256_add_epi32(y, zp), lo), hi)
                }
            }
            #[inline(always)]
            unsafe fn store_i8(p: *mut i8, v: __m256i, n: usize) {
                // SAFETY: trait contract: `n ≤ 8` writable bytes at `p`; only those are
                // written (a partial vector goes through a local buffer).
                unsafe {
                    // Lanes are in [−128, 127]: saturating packs are exact.
                    let p16 = _mm256_packs_epi32(v, v); // [v0..v3 v0..v3 | v4..v7 v4..v7]
                    let p8 = _mm256_packs_epi16(p16, p16); // dword 0 = v0..v3, dword 4 = v4..v7
                    let p8 =
                        _mm256_permutevar8x32_epi32(p8, _mm256_setr_epi32(0, 4, 0, 0, 0, 0, 0, 0));
                    let lo = _mm256_castsi256_si128(p8);
                    if n == 8 {
                        _mm_storel_epi64(p as *mut __m128i, lo);
                    } else {
                        let mut t = [0i8; 16];
                        _mm_storeu_si128(t.as_mut_ptr() as *mut __m128i, lo);
                        core::ptr::copy_nonoverlapping(t.as_ptr(), p, n);
                    }
                }
            }
        }
    };
}

ymm_dw!(
    YmmVnniDw,
    "AVX-VNNI, VEX `vpdpwssd` (features `avx2,avxvnni`).",
    |acc, x, w| _mm256_dpwssd_avx_epi32(acc, x, w)
);
ymm_dw!(
    YmmDw,
    "AVX2: `vpmaddwd` + `vpaddd` (features `avx2`).",
    |acc, x, w| _mm256_add_epi32(acc, _mm256_madd_epi16(x, w))
);

/// `P` pixels from `p0` × `NV` vectors of channels from `c0` (the last one holding only
/// `part` channels when `part > 0`), accumulated in registers over every used kernel row
/// and its three columns; each input column is loaded once and feeds every pixel whose
/// window covers it (stride `S`). The codes are multiplied uncentered (`Σ x·w`); the
/// `−zp·Σw` term (and for [`Dw3Out::Codes`] the bias) is added once at the end — all
/// wrapping `i32`, exact because the true total fits.
///
/// # Safety
/// The contract of [`dw3_zmm`] for the features of `O`; `p0 + P ≤ pixels`;
/// `c0 + L·NV ≤ c_pad`, and `c0 + L·NV ≤ c` unless `part > 0`, then `c0 + L·(NV−1) + part
/// = c`.
#[inline(always)]
unsafe fn dw3_block<O: DwVec, const NV: usize, const P: usize, const S: usize>(
    r: &RawDw3,
    p0: usize,
    c0: usize,
    part: usize,
) {
    // SAFETY: register setup only (the caller enables `O`'s features).
    let (mut acc, mut wsum) = unsafe { ([[O::zero(); NV]; P], [O::zero(); NV]) };
    for t in 0..r.rows {
        // SAFETY: `t < rows`: the offset tables hold `rows` entries. Pixel `p0 + p` reads
        // columns `kx < 3` of its window, i.e. input bytes `origin + (p·S + kx)·c + ch`
        // for `ch < c` (`part` limits the last vector to `ch < c`), and weights
        // `w_off[t] + kx·c_pad + c0 .. + L·NV ≤ c_pad` of the row, sums likewise: in
        // bounds by contract.
        unsafe {
            let xo = r.x.add(r.base0 + p0 * r.step + *r.row_off.add(t) + c0);
            let wo = r.w.add(*r.w_off.add(t) + c0);
            let w: [[O::V; NV]; 3] = core::array::from_fn(|kx| {
                core::array::from_fn(|v| O::load(wo.add(kx * r.c_pad + v * O::L)))
            });
            let so = r.wsum.add(*r.sum_off.add(t) + c0);
            for (v, s) in wsum.iter_mut().enumerate() {
                *s = O::add(*s, O::load(so.add(v * O::L)));
            }
            for j in 0..(P - 1) * S + 3 {
                let xj = xo.add(j * r.c);
                let xv: [O::V; NV] = core::array::from_fn(|v| {
                    if part > 0 && v == NV - 1 {
                        O::load_x_part(xj.add(v * O::L), part)
                    } else {
                        O::load_x(xj.add(v * O::L))
                    }
                });
                for (kx, wk) in w.iter().enumerate() {
                    if j >= kx && (j - kx) % S == 0 && (j - kx) / S < P {
                        let p = (j - kx) / S;
                        for ((a, &x), &wv) in acc[p].iter_mut().zip(&xv).zip(wk) {
                            *a = O::dot(*a, x, wv);
                        }
                    }
                }
            }
        }
    }
    // SAFETY: register-only.
    let zp = unsafe { O::splat(-r.zp) };
    match r.out {
        Dw3Out::Acc(out) => {
            for v in 0..NV {
                // SAFETY: register-only.
                let corr = unsafe { O::mullo(zp, wsum[v]) };
                for (p, a) in acc.iter().enumerate() {
                    // SAFETY: `p0 + p < pixels` and `c0 + L·v + L ≤ c_pad`: inside `out`.
                    unsafe {
                        O::store(
                            out.add((p0 + p) * r.c_pad + c0 + v * O::L),
                            O::add(a[v], corr),
                        )
                    };
                }
            }
        }
        Dw3Out::Codes {
            y,
            bias,
            mult,
            shift,
            q,
        } => {
            // SAFETY: register setup; per-channel loads at `c0 + L·v + L ≤ c_pad` of the
            // `c_pad`-long tables; stores of `n` codes at pixel `p0 + p < pixels`, channels
            // `c0 + L·v + n ≤ c` of its `c` (contract).
            unsafe {
                let zlh = [O::splat(q.zp), O::splat(q.lo), O::splat(q.hi)];
                let (one, s32) = (O::splat(1), O::splat(32));
                for v in 0..NV {
                    let ch = c0 + v * O::L;
                    let corr = O::add(O::load(bias.add(ch)), O::mullo(zp, wsum[v]));
                    let m = O::load(mult.add(ch));
                    let k = O::sub(O::load(shift.add(ch)), s32);
                    let rnd = O::sllv(one, O::sub(k, one));
                    let n = if part > 0 && v == NV - 1 { part } else { O::L };
                    for (p, a) in acc.iter().enumerate() {
                        let y8 = O::requant_hi(O::add(a[v], corr), m, k, rnd, zlh);
                        O::store_i8(y.add((p0 + p) * r.c + ch), y8, n);
                    }
                }
            }
        }
    }
}

/// Every channel of `P` pixels from `p0`: blocks of `NV` full vectors, then single
/// vectors, then the partial last vector.
///
/// # Safety
/// As [`dw3_block`] for the pixels; channels are derived from `r.c`.
#[inline(always)]
unsafe fn dw3_pixels<O: DwVec, const NV: usize, const P: usize, const S: usize>(
    r: &RawDw3,
    p0: usize,
) {
    let full = r.c / O::L;
    let part = r.c % O::L;
    let mut v0 = 0;
    // SAFETY (all three calls): the vectors `v0 .. v0 + n` passed are full (`< full`) or
    // the partial last one with `part` channels; `c0 + L·n ≤ ⌈c/L⌉·L ≤ c_pad`.
    while v0 + NV <= full {
        unsafe { dw3_block::<O, NV, P, S>(r, p0, v0 * O::L, 0) };
        v0 += NV;
    }
    while v0 < full {
        unsafe { dw3_block::<O, 1, P, S>(r, p0, v0 * O::L, 0) };
        v0 += 1;
    }
    if part > 0 {
        unsafe { dw3_block::<O, 1, P, S>(r, p0, v0 * O::L, part) };
    }
}

/// All pixels of the run, `PB` at a time (the last block smaller).
///
/// # Safety
/// As [`dw3_zmm`], for `O`'s features; `step == S·c`; `PB ≤ 8`.
#[inline(always)]
unsafe fn dw3_run<O: DwVec, const NV: usize, const PB: usize, const S: usize>(r: &RawDw3) {
    let mut p0 = 0;
    while p0 < r.pixels {
        let n = (r.pixels - p0).min(PB);
        // SAFETY: `p0 + n ≤ pixels`; the rest is forwarded.
        unsafe {
            match n {
                8 => dw3_pixels::<O, NV, 8, S>(r, p0),
                7 => dw3_pixels::<O, NV, 7, S>(r, p0),
                6 => dw3_pixels::<O, NV, 6, S>(r, p0),
                5 => dw3_pixels::<O, NV, 5, S>(r, p0),
                4 => dw3_pixels::<O, NV, 4, S>(r, p0),
                3 => dw3_pixels::<O, NV, 3, S>(r, p0),
                2 => dw3_pixels::<O, NV, 2, S>(r, p0),
                _ => dw3_pixels::<O, NV, 1, S>(r, p0),
            }
        }
        p0 += n;
    }
}

/// AVX-512 VNNI: for pixel `p < pixels` and channel `ch < c`,
/// `Σ_r Σ_kx (x[…] − zp)·w[…]` (see [`RawDw3`]), wrapping `i32`, to `r.out`.
///
/// # Safety
/// CPU has avx512f+avx512bw+avx512vl+avx512vnni. `step == stride·c` with `stride ∈ {1,2}`;
/// for every pixel `p < pixels` and used row `r < rows`:
/// `x + base0 + p·step + row_off[r] .. + 3·c` readable, `w + w_off[r] .. + 3·c_pad` and
/// `wsum + sum_off[r] .. + c_pad` readable; the three tables hold `rows` entries;
/// `c ≤ c_pad`, `c_pad % 16 == 0`. [`Dw3Out::Acc`]: `pixels·c_pad` writable `i32`;
/// [`Dw3Out::Codes`]: `pixels·c` writable bytes, `bias`/`mult`/`shift` readable for
/// `c_pad` values, the shifts of channels `< c` in `33..=62`.
#[target_feature(enable = "avx512f,avx512bw,avx512vl,avx512vnni")]
pub(super) unsafe fn dw3_zmm(r: RawDw3, stride: usize) {
    // SAFETY: forwarded contract; `step == S·c` for the `S` chosen.
    unsafe {
        if stride == 1 {
            dw3_run::<ZmmDw, 2, 6, 1>(&r)
        } else {
            dw3_run::<ZmmDw, 2, 4, 2>(&r)
        }
    }
}

/// AVX-VNNI: as [`dw3_zmm`] on `ymm` registers.
///
/// # Safety
/// As [`dw3_zmm`] with CPU features avx2+avxvnni.
#[target_feature(enable = "avx2,avxvnni")]
pub(super) unsafe fn dw3_ymm_vnni(r: RawDw3, stride: usize) {
    // SAFETY: forwarded contract.
    unsafe {
        if stride == 1 {
            dw3_run::<YmmVnniDw, 1, 6, 1>(&r)
        } else {
            dw3_run::<YmmVnniDw, 1, 4, 2>(&r)
        }
    }
}

/// AVX2: as [`dw3_zmm`] on `ymm` registers.
///
/// # Safety
/// As [`dw3_zmm`] with CPU feature avx2.
#[target_feature(enable = "avx2")]
pub(super) unsafe fn dw3_ymm(r: RawDw3, stride: usize) {
    // SAFETY: forwarded contract.
    unsafe {
        if stride == 1 {
            dw3_run::<YmmDw, 1, 6, 1>(&r)
        } else {
            dw3_run::<YmmDw, 1, 4, 2>(&r)
        }
    }
}
