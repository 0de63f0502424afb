//! Depthwise convolution (one input channel per output channel) over a run of output
//! pixels that share the same valid taps: for pixel `p < pixels` and channel `c`,
//! `acc[p][c] = Σ_taps (x[base0 + p·step + x_rel[t] + c] − zp) · w[w_off[t] + c]`,
//! vectorized over channels.
//!
//! Weights are packed tap-major as `i32` (`[tap][c_pad]`, zero in the padding lanes), so
//! one code path serves 8- and 16-bit weights: every product fits `i32`
//! (`255 · 32767 < 2^23`). Sums over at most 256 taps fit `i32` for 16-bit weights
//! (`256 · 255 · 32767 < 2^31`); the caller splits longer tap lists. For 8-bit weights
//! the spec's accumulation bound makes any tap count exact.

use core::arch::x86_64::*;

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
                *a = _mm512_add_epi32(*a, _mm512_mullo_epi32(_mm512_sub_epi32(xv, zp), wv));
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
                *a = _mm256_add_epi32(*a, _mm256_mullo_epi32(_mm256_sub_epi32(xv, zp), wv));
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
