//! Elementwise residual add, bit-exact with `cpu-ref`'s `kernels::add`:
//! `out = clamp(M_o(M_a((a − zp_a) << 20) + M_b((b − zp_b) << 20)) + zp_o, lo, hi)` where
//! `M(v) = ⌊(v·M + 2^(n−1)) / 2^n⌋`.
//!
//! Every intermediate fits the `i32 × i32 → i64` multiply: `|(a − zp) << 20| ≤ 255·2^20
//! < 2^28`; `M_a, M_b ≤ ½·(1 + 2^−30)` (each input's scale over twice the larger one), so
//! `|a'|, |b'| < 2^27` and `|a' + b'| < 2^28` fit `i32`; every product is below
//! `2^28 · 2^31 = 2^59`, so products plus rounding terms are exact in `i64`.

use core::arch::x86_64::*;

/// Per-tensor constants (`shift` in `1..=62`).
#[derive(Clone, Copy, Debug)]
pub(crate) struct AddConsts {
    pub zp_a: i32,
    pub zp_b: i32,
    pub m_a: (i32, u32),
    pub m_b: (i32, u32),
    pub m_o: (i32, u32),
    pub zp_o: i32,
    pub lo: i32,
    pub hi: i32,
}

/// `M(v)` on 16 `i32` lanes, results as (even, odd) `i64` lane vectors.
#[inline(always)]
unsafe fn apply_zmm(v: __m512i, m: (i32, u32)) -> (__m512i, __m512i) {
    // SAFETY: only called from functions with avx512f enabled; register-only.
    unsafe {
        let mm = _mm512_set1_epi64(m.0 as i64);
        let rnd = _mm512_set1_epi64(1i64 << (m.1 - 1));
        let sh = _mm512_set1_epi64(m.1 as i64);
        let e = _mm512_mul_epi32(v, mm);
        let o = _mm512_mul_epi32(_mm512_srli_epi64::<32>(v), mm);
        (
            _mm512_srav_epi64(_mm512_add_epi64(e, rnd), sh),
            _mm512_srav_epi64(_mm512_add_epi64(o, rnd), sh),
        )
    }
}

/// Re-interleaves (even, odd) `i64` lanes whose values fit `i32` into 16 `i32` lanes.
#[inline(always)]
unsafe fn join_zmm(e: __m512i, o: __m512i) -> __m512i {
    // SAFETY: only called from functions with avx512f enabled; register-only.
    unsafe {
        _mm512_or_si512(
            _mm512_and_si512(e, _mm512_set1_epi64(0xFFFF_FFFF)),
            _mm512_slli_epi64::<32>(o),
        )
    }
}

/// AVX-512: `len` elements (a multiple of 16).
///
/// # Safety
/// CPU has avx512f+avx512bw+avx512vl; `a`, `b` readable and `out` writable for `len`
/// bytes; `len % 16 == 0`; shifts in `1..=62`.
#[target_feature(enable = "avx512f,avx512bw,avx512vl")]
pub(super) unsafe fn add_zmm(len: usize, a: *const i8, b: *const i8, q: AddConsts, out: *mut i8) {
    let zp_a = _mm512_set1_epi32(q.zp_a);
    let zp_b = _mm512_set1_epi32(q.zp_b);
    let zp_o = _mm512_set1_epi64(q.zp_o as i64);
    let lo = _mm512_set1_epi64(q.lo as i64);
    let hi = _mm512_set1_epi64(q.hi as i64);
    let mut i = 0;
    while i < len {
        // SAFETY: `i + 16 ≤ len`: 16-byte loads and store in bounds (function contract);
        // value ranges as in the module docs.
        unsafe {
            let va = _mm512_cvtepi8_epi32(_mm_loadu_si128(a.add(i) as *const __m128i));
            let vb = _mm512_cvtepi8_epi32(_mm_loadu_si128(b.add(i) as *const __m128i));
            let va = _mm512_slli_epi32::<20>(_mm512_sub_epi32(va, zp_a));
            let vb = _mm512_slli_epi32::<20>(_mm512_sub_epi32(vb, zp_b));
            let (ae, ao) = apply_zmm(va, q.m_a);
            let (be, bo) = apply_zmm(vb, q.m_b);
            let sum = join_zmm(_mm512_add_epi64(ae, be), _mm512_add_epi64(ao, bo));
            let (ye, yo) = apply_zmm(sum, q.m_o);
            let ye = _mm512_min_epi64(_mm512_max_epi64(_mm512_add_epi64(ye, zp_o), lo), hi);
            let yo = _mm512_min_epi64(_mm512_max_epi64(_mm512_add_epi64(yo, zp_o), lo), hi);
            let r = join_zmm(ye, yo);
            _mm_storeu_si128(out.add(i) as *mut __m128i, _mm512_cvtepi32_epi8(r));
        }
        i += 16;
    }
}

/// `M(v)` on 8 `i32` lanes with AVX2, results as (even, odd) `i64` lanes. The arithmetic
/// shift is `((p + 2^62) >>> n) − (2^62 >>> n)`, exact as `|p| < 2^59`.
#[inline(always)]
unsafe fn apply_ymm(v: __m256i, m: (i32, u32)) -> (__m256i, __m256i) {
    // SAFETY: only called from functions with avx2 enabled; register-only.
    unsafe {
        let mm = _mm256_set1_epi64x(m.0 as i64);
        let rnd = _mm256_set1_epi64x((1i64 << (m.1 - 1)) + (1i64 << 62));
        let sh = _mm_cvtsi32_si128(m.1 as i32);
        let off = _mm256_set1_epi64x((1i64 << 62) >> m.1);
        let e = _mm256_mul_epi32(v, mm);
        let o = _mm256_mul_epi32(_mm256_srli_epi64::<32>(v), mm);
        (
            _mm256_sub_epi64(_mm256_srl_epi64(_mm256_add_epi64(e, rnd), sh), off),
            _mm256_sub_epi64(_mm256_srl_epi64(_mm256_add_epi64(o, rnd), sh), off),
        )
    }
}

/// `clamp(y + zp, lo, hi)` on `i64` lanes with AVX2 compares.
#[inline(always)]
unsafe fn clamp_ymm(y: __m256i, zp: __m256i, lo: __m256i, hi: __m256i) -> __m256i {
    // SAFETY: only called from functions with avx2 enabled; register-only.
    unsafe {
        let y = _mm256_add_epi64(y, zp);
        let y = _mm256_blendv_epi8(y, lo, _mm256_cmpgt_epi64(lo, y));
        _mm256_blendv_epi8(y, hi, _mm256_cmpgt_epi64(y, hi))
    }
}

/// AVX2: `len` elements (a multiple of 8).
///
/// # Safety
/// CPU has avx2; `a`, `b` readable and `out` writable for `len` bytes; `len % 8 == 0`;
/// shifts in `1..=62`.
#[target_feature(enable = "avx2")]
pub(super) unsafe fn add_ymm(len: usize, a: *const i8, b: *const i8, q: AddConsts, out: *mut i8) {
    let zp_a = _mm256_set1_epi32(q.zp_a);
    let zp_b = _mm256_set1_epi32(q.zp_b);
    let zp_o = _mm256_set1_epi64x(q.zp_o as i64);
    let lo = _mm256_set1_epi64x(q.lo as i64);
    let hi = _mm256_set1_epi64x(q.hi as i64);
    let gather = _mm256_setr_epi32(0, 4, 1, 5, 2, 6, 3, 7);
    let mut i = 0;
    while i < len {
        // SAFETY: `i + 8 ≤ len`: 8-byte loads and store in bounds (function contract);
        // value ranges as in the module docs.
        unsafe {
            let va = _mm256_cvtepi8_epi32(_mm_loadl_epi64(a.add(i) as *const __m128i));
            let vb = _mm256_cvtepi8_epi32(_mm_loadl_epi64(b.add(i) as *const __m128i));
            let va = _mm256_slli_epi32::<20>(_mm256_sub_epi32(va, zp_a));
            let vb = _mm256_slli_epi32::<20>(_mm256_sub_epi32(vb, zp_b));
            let (ae, ao) = apply_ymm(va, q.m_a);
            let (be, bo) = apply_ymm(vb, q.m_b);
            let sum = _mm256_blend_epi32::<0b1010_1010>(
                _mm256_add_epi64(ae, be),
                _mm256_slli_epi64::<32>(_mm256_add_epi64(ao, bo)),
            );
            let (ye, yo) = apply_ymm(sum, q.m_o);
            let ye = clamp_ymm(ye, zp_o, lo, hi);
            let yo = clamp_ymm(yo, zp_o, lo, hi);
            let r = _mm256_blend_epi32::<0b1010_1010>(ye, _mm256_slli_epi64::<32>(yo));
            let p16 = _mm256_packs_epi32(r, r);
            let p8 = _mm256_permutevar8x32_epi32(_mm256_packs_epi16(p16, p16), gather);
            _mm_storel_epi64(out.add(i) as *mut __m128i, _mm256_castsi256_si128(p8));
        }
        i += 8;
    }
}
