//! Vectorized requantization, bit-exact with `QuantMultiplier::requantize`:
//! `out = clamp(⌊(acc·M + 2^(n−1)) / 2^n⌋ + zp, lo, hi)` per lane, with per-lane
//! (per output channel) `M ∈ [2^30, 2^31)` and `n ∈ [1, 62]`.
//!
//! * `i32` accumulators (8w8a): `|acc·M| < 2^62`, so the product plus the rounding term
//!   fits `i64` exactly; even and odd lanes are multiplied separately (`vpmuldq`).
//! * `i64` accumulators (16w8a, `|acc| < 2^41`): the product needs up to 72 bits, so
//!   `acc = a_hi·2^21 + a_lo` (`0 ≤ a_lo < 2^21`) and
//!   `⌊(acc·M + 2^(n−1)) / 2^n⌋ = ⌊(a_hi·M + ⌊(a_lo·M + 2^(n−1)) / 2^21⌋) / 2^(n−21)⌋`
//!   (nested floor divisions by powers of two), every term within `i64`. Needs `n ≥ 22`;
//!   the caller routes layers with a smaller shift to the scalar spec function.
//!
//! * `i32` accumulators whose shifts are all `n ≥ 33` (the common case: effective scales
//!   below 2^−2): with `k = n − 32 ≥ 1` and `H = ⌊acc·M / 2^32⌋` (the high dword of the
//!   exact 64-bit product), `⌊(acc·M + 2^(n−1)) / 2^n⌋ = ⌊(H + 2^(k−1)) / 2^k⌋` — adding
//!   `2^(n−1) = 2^32·2^(k−1)` does not change the low dword, and nested floor divisions
//!   by powers of two are exact. `|acc·M| < 2^62`, so `|H| ≤ 2^30` and `H + 2^(k−1)`
//!   (`k ≤ 30`) fits `i32`; so does the result, and the rest runs on 32-bit lanes. Checked
//!   per vector; a vector with a smaller shift takes the 64-bit path.
//!
//! AVX2 has no 64-bit arithmetic right shift: `v >> s` is computed as
//! `((v + 2^62) >>> s) − (2^62 >>> s)` (logical shifts), exact for `−2^62 ≤ v < 3·2^62`
//! and `s ≤ 62`, which every use below satisfies.

use core::arch::x86_64::*;

const TWO62: i64 = 1 << 62;

/// Per-layer constants shared by all lanes.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Clamp {
    pub zp: i32,
    pub lo: i32,
    pub hi: i32,
}

/// Rows of `i32` accumulators: row `r < rows` is `len` values at `acc + r·len`, written
/// to `out + r·out_stride`; `corr`, `mult`, `shift` are per column (`len` each).
#[derive(Clone, Copy, Debug)]
pub(super) struct Rows32 {
    pub rows: usize,
    pub len: usize,
    pub acc: *const i32,
    pub corr: *const i32,
    pub mult: *const i32,
    pub shift: *const i32,
    pub out: *mut i8,
    pub out_stride: usize,
}

/// `i32` accumulators, AVX-512: `rows` rows of `len` lanes (a multiple of 16).
///
/// # Safety
/// CPU has avx512f+avx512bw; `acc` readable for `rows·len` elements, `corr`, `mult`,
/// `shift` for `len`, `out + r·out_stride` writable for `len` bytes per row; `len % 16 == 0`.
#[target_feature(enable = "avx512f,avx512bw,avx512vl")]
pub(super) unsafe fn requant32_zmm(p: Rows32, q: Clamp) {
    // Channels outer, rows inner: the per-channel constants are loaded (and derived) once
    // per 16 channels of the tile.
    let mut c = 0;
    while c < p.len {
        // SAFETY: `c + 16 ≤ len`; the loads of `corr`/`mult`/`shift` at `c` and of row `r`'s
        // accumulators at `r·len + c`, and the 16-byte stores at `r·out_stride + c`, are in
        // bounds by the function contract; features enabled by the attribute.
        unsafe {
            let corr = _mm512_loadu_si512(p.corr.add(c) as *const __m512i);
            let m = _mm512_loadu_si512(p.mult.add(c) as *const __m512i);
            let s = _mm512_loadu_si512(p.shift.add(c) as *const __m512i);
            let k = Rq32Zmm::new(m, s, q);
            for r in 0..p.rows {
                let acc = _mm512_loadu_si512(p.acc.add(r * p.len + c) as *const __m512i);
                let y = k.apply(_mm512_add_epi32(acc, corr));
                _mm_storeu_si128(p.out.add(r * p.out_stride + c) as *mut __m128i, y);
            }
        }
        c += 16;
    }
}

/// The per-channel constants of the exact `i32` requantization of 16 lanes, derived once
/// and applied to many rows: the high-dword path when every shift is ≥ 33 (module docs),
/// else 64-bit products ([`rq32_wide_zmm`]).
#[derive(Clone, Copy)]
struct Rq32Zmm {
    m: __m512i,
    s: __m512i,
    /// `M` of the odd lanes, moved to the even positions `vpmuldq` reads.
    m_odd: __m512i,
    /// `k = n − 32` and `2^(k−1)` (high-dword path).
    k: __m512i,
    rnd: __m512i,
    high: bool,
    q: Clamp,
}

impl Rq32Zmm {
    #[inline(always)]
    unsafe fn new(m: __m512i, s: __m512i, q: Clamp) -> Self {
        // SAFETY: only called from functions with avx512f enabled; register-only.
        unsafe {
            let one = _mm512_set1_epi32(1);
            let k = _mm512_sub_epi32(s, _mm512_set1_epi32(32));
            Rq32Zmm {
                m,
                s,
                m_odd: _mm512_srli_epi64::<32>(m),
                k,
                rnd: _mm512_sllv_epi32(one, _mm512_sub_epi32(k, one)),
                high: _mm512_cmplt_epi32_mask(s, _mm512_set1_epi32(33)) == 0,
                q,
            }
        }
    }

    /// `clamp(⌊(a·M + 2^(n−1)) / 2^n⌋ + zp)` per lane, as 16 bytes.
    #[inline(always)]
    unsafe fn apply(&self, a: __m512i) -> __m128i {
        // SAFETY: only called from functions with avx512f/bw enabled; register-only.
        unsafe {
            if !self.high {
                return rq32_wide_zmm(a, self.m, self.s, self.q);
            }
            let pe = _mm512_mul_epi32(a, self.m);
            let po = _mm512_mul_epi32(_mm512_srli_epi64::<32>(a), self.m_odd);
            // Even lanes ← the high dword of their product (dword 2i+1 of `pe`); odd lanes
            // keep the high dword of theirs, already in place in `po`.
            let h = _mm512_mask_shuffle_epi32::<_MM_PERM_DDBB>(po, 0x5555, pe);
            let y = _mm512_srav_epi32(_mm512_add_epi32(h, self.rnd), self.k);
            let y = _mm512_add_epi32(y, _mm512_set1_epi32(self.q.zp));
            let y = _mm512_max_epi32(y, _mm512_set1_epi32(self.q.lo));
            let y = _mm512_min_epi32(y, _mm512_set1_epi32(self.q.hi));
            _mm512_cvtepi32_epi8(y)
        }
    }
}

/// 16 `i32` accumulators (with their corrections added) requantized through 64-bit
/// products, for any shift in `[1, 62]`.
#[inline(always)]
unsafe fn rq32_wide_zmm(a: __m512i, m: __m512i, s: __m512i, q: Clamp) -> __m128i {
    // SAFETY: only called from functions with avx512f/bw enabled; register-only.
    unsafe {
        let low32 = _mm512_set1_epi64(0xFFFF_FFFF);
        let one = _mm512_set1_epi64(1);
        let zp = _mm512_set1_epi64(q.zp as i64);
        let lo = _mm512_set1_epi64(q.lo as i64);
        let hi = _mm512_set1_epi64(q.hi as i64);
        let se = _mm512_and_si512(s, low32);
        let so = _mm512_srli_epi64::<32>(s);
        let pe = _mm512_mul_epi32(a, m);
        let po = _mm512_mul_epi32(_mm512_srli_epi64::<32>(a), _mm512_srli_epi64::<32>(m));
        let re = _mm512_sllv_epi64(one, _mm512_sub_epi64(se, one));
        let ro = _mm512_sllv_epi64(one, _mm512_sub_epi64(so, one));
        let ye = _mm512_srav_epi64(_mm512_add_epi64(pe, re), se);
        let yo = _mm512_srav_epi64(_mm512_add_epi64(po, ro), so);
        let ye = _mm512_min_epi64(_mm512_max_epi64(_mm512_add_epi64(ye, zp), lo), hi);
        let yo = _mm512_min_epi64(_mm512_max_epi64(_mm512_add_epi64(yo, zp), lo), hi);
        let r = _mm512_or_si512(_mm512_and_si512(ye, low32), _mm512_slli_epi64::<32>(yo));
        _mm512_cvtepi32_epi8(r)
    }
}

/// The `i64` requantization of 8 lanes (see the module docs), AVX-512.
#[inline(always)]
unsafe fn rq64_zmm(a: __m512i, m: __m512i, s: __m512i, q: Clamp) -> __m128i {
    // SAFETY: only called from functions with avx512f/bw/vl enabled; register-only.
    unsafe { rq64_zmm_with(a, m, Rq64Zmm::new(s, q)) }
}

/// The per-channel constants of [`rq64_zmm`], hoisted out of row loops.
#[derive(Clone, Copy)]
struct Rq64Zmm {
    /// `2^(n−1)`.
    rnd: __m512i,
    /// `n − 21`.
    sh: __m512i,
    zp: __m512i,
    lo: __m512i,
    hi: __m512i,
}

impl Rq64Zmm {
    #[inline(always)]
    unsafe fn new(s: __m512i, q: Clamp) -> Self {
        // SAFETY: only called from functions with avx512f enabled; register-only.
        unsafe {
            let one = _mm512_set1_epi64(1);
            Rq64Zmm {
                rnd: _mm512_sllv_epi64(one, _mm512_sub_epi64(s, one)),
                sh: _mm512_sub_epi64(s, _mm512_set1_epi64(21)),
                zp: _mm512_set1_epi64(q.zp as i64),
                lo: _mm512_set1_epi64(q.lo as i64),
                hi: _mm512_set1_epi64(q.hi as i64),
            }
        }
    }
}

/// [`rq64_zmm`] with its constants precomputed.
#[inline(always)]
unsafe fn rq64_zmm_with(a: __m512i, m: __m512i, k: Rq64Zmm) -> __m128i {
    // SAFETY: only called from functions with avx512f/bw/vl enabled; register-only.
    unsafe {
        let a_hi = _mm512_srai_epi64::<21>(a);
        let a_lo = _mm512_and_si512(a, _mm512_set1_epi64((1 << 21) - 1));
        let x = _mm512_mul_epi32(a_hi, m);
        let y = _mm512_add_epi64(_mm512_mul_epu32(a_lo, m), k.rnd);
        let t = _mm512_add_epi64(x, _mm512_srli_epi64::<21>(y));
        let r = _mm512_srav_epi64(t, k.sh);
        let r = _mm512_add_epi64(r, k.zp);
        let r = _mm512_max_epi64(r, k.lo);
        let r = _mm512_min_epi64(r, k.hi);
        _mm512_cvtepi64_epi8(r)
    }
}

/// `i64` accumulators, AVX-512: `len` lanes (a multiple of 8); every shift ≥ 22 and
/// `|acc| < 2^41` (else the result is wrong, never undefined).
///
/// # Safety
/// CPU has avx512f+avx512bw+avx512vl; `acc` readable for `len` `i64`, `mult`/`shift`
/// for `len` `i32`, `out` writable for `len` bytes, `len % 8 == 0`.
#[target_feature(enable = "avx512f,avx512bw,avx512vl")]
pub(super) unsafe fn requant64_zmm(
    len: usize,
    acc: *const i64,
    mult: *const i32,
    shift: *const i32,
    q: Clamp,
    out: *mut i8,
) {
    let mut c = 0;
    while c < len {
        // SAFETY: `c + 8 ≤ len`: 64-byte load of `acc`, 32-byte loads of `mult`/`shift`,
        // 8-byte store, all in bounds by the function contract.
        unsafe {
            let a = _mm512_loadu_si512(acc.add(c) as *const __m512i);
            let m = _mm512_cvtepi32_epi64(_mm256_loadu_si256(mult.add(c) as *const __m256i));
            let s = _mm512_cvtepi32_epi64(_mm256_loadu_si256(shift.add(c) as *const __m256i));
            _mm_storel_epi64(out.add(c) as *mut __m128i, rq64_zmm(a, m, s, q));
        }
        c += 8;
    }
}

/// The 16w8a epilogue of a VNNI tile, AVX-512: for row `r < rows` (its `hi`/`lo'` sums at
/// `p.hi`/`p.lo` advanced by `r·t_stride` `i32`) and channel `c < len`,
/// `acc = 256·(hi + c_hi) + (lo + c_lo) + c64 + row_terms[r]` — the two `i32` sums
/// wrapping (their true values fit `i32`) — requantized into `out + r·out_stride`; the
/// per-channel constants are loaded once per 16 channels.
///
/// **`i32` fast path, proven per vector.** With `H' = hi + c_hi`, `L' = lo + c_lo` and
/// `E = c64 + row`, `acc = 256·H' + L' + E`, and the caller guarantees
/// `|L'| + |E| ≤ i32::MAX − 256·h_limit` for every value the layer can produce. So when
/// all 16 lanes have `|H'| ≤ h_limit`, every `acc` fits `i32`: it is formed in wrapping
/// `i32` (`E` as `c64_32 + row`, both modulo 2^32 — exact, the true values fit) and
/// requantized like 8w8a. Otherwise (or `h_limit < 0`) the 16 lanes take the `i64` path.
/// `h_limit = i32::MAX` means the caller has proven that every accumulator of the layer
/// fits `i32` (the narrow bound on the actual weights), so every vector takes the `i32` path.
/// Real layers' `|H'|` is far below the limit almost always (it is `≈ |acc| / 256`).
///
/// The `i64` path needs every shift ≥ 22 and `|acc| < 2^41` (as [`rq64_zmm`]); else the
/// result is wrong, never undefined.
///
/// # Safety
/// CPU has avx512f+avx512bw+avx512vl; for every row `r < rows`, `p.hi`/`p.lo` advanced by
/// `r·t_stride` readable for `len` `i32` and `out + r·out_stride` writable for `len` bytes;
/// `c_hi`, `c_lo`, `mult`, `shift`, `fast.c64_32` readable for `len` `i32`, `c64` for `len`
/// `i64`, `row_terms` for `rows` `i64`; `len` a multiple of 16.
#[allow(clippy::too_many_arguments)]
#[target_feature(enable = "avx512f,avx512bw,avx512vl")]
pub(super) unsafe fn requant_hilo_rows_zmm(
    len: usize,
    rows: usize,
    p: HiLo,
    fast: HiLoFast,
    t_stride: usize,
    row_terms: *const i64,
    q: Clamp,
    out: *mut i8,
    out_stride: usize,
) {
    let mut c = 0;
    while c < len {
        // SAFETY: `c + 16 ≤ len`: 64-byte loads of the `i32` inputs of every row and of the
        // per-channel `i32` constants, 32-byte loads of their 8-lane halves, 64-byte loads
        // of `c64` at `c` and `c + 8`, 16- and 8-byte stores, all in bounds by the function
        // contract.
        unsafe {
            // Macros, not closures: a closure would not inherit this function's target
            // features, so it would not inline and would pass vectors through memory.
            macro_rules! ld16 {
                ($ptr:expr) => {
                    _mm512_loadu_si512($ptr as *const __m512i)
                };
            }
            macro_rules! ld8 {
                ($ptr:expr) => {
                    _mm256_loadu_si256($ptr as *const __m256i)
                };
            }
            let (c_hi, c_lo, e32) = (
                ld16!(p.c_hi.add(c)),
                ld16!(p.c_lo.add(c)),
                ld16!(fast.c64_32.add(c)),
            );
            let rq32 = Rq32Zmm::new(ld16!(p.mult.add(c)), ld16!(p.shift.add(c)), q);
            let limit = _mm512_set1_epi32(fast.h_limit);
            let narrow = fast.h_limit >= 0;
            // The `i64` path's per-half constants.
            macro_rules! half {
                ($h:expr) => {{
                    let c64 = _mm512_loadu_si512(p.c64.add(c + $h) as *const __m512i);
                    let m = _mm512_cvtepi32_epi64(ld8!(p.mult.add(c + $h)));
                    let k = Rq64Zmm::new(_mm512_cvtepi32_epi64(ld8!(p.shift.add(c + $h))), q);
                    (
                        ld8!(p.c_hi.add(c + $h)),
                        ld8!(p.c_lo.add(c + $h)),
                        c64,
                        m,
                        k,
                    )
                }};
            }
            let halves = [half!(0), half!(8)];
            for r in 0..rows {
                let o = r * t_stride + c;
                let row = *row_terms.add(r);
                let h = _mm512_add_epi32(ld16!(p.hi.add(o)), c_hi);
                let fits = _mm512_cmpgt_epu32_mask(_mm512_abs_epi32(h), limit) == 0;
                if narrow && fits {
                    let e = _mm512_add_epi32(e32, _mm512_set1_epi32(row as i32));
                    let l = _mm512_add_epi32(ld16!(p.lo.add(o)), c_lo);
                    let a = _mm512_add_epi32(_mm512_add_epi32(_mm512_slli_epi32::<8>(h), l), e);
                    let y = rq32.apply(a);
                    _mm_storeu_si128(out.add(r * out_stride + c) as *mut __m128i, y);
                    continue;
                }
                for (j, &(c_hi, c_lo, c64, m, k)) in halves.iter().enumerate() {
                    let o = o + 8 * j;
                    let h = _mm512_cvtepi32_epi64(_mm256_add_epi32(ld8!(p.hi.add(o)), c_hi));
                    let l = _mm512_cvtepi32_epi64(_mm256_add_epi32(ld8!(p.lo.add(o)), c_lo));
                    let a = _mm512_add_epi64(
                        _mm512_add_epi64(_mm512_slli_epi64::<8>(h), l),
                        _mm512_add_epi64(c64, _mm512_set1_epi64(row)),
                    );
                    let y = rq64_zmm_with(a, m, k);
                    let dst = out.add(r * out_stride + c + 8 * j);
                    _mm_storel_epi64(dst as *mut __m128i, y);
                }
            }
        }
        c += 16;
    }
}

/// The `i32` fast path's inputs of [`requant_hilo_rows_zmm`].
#[derive(Clone, Copy, Debug)]
pub(super) struct HiLoFast {
    /// `c64` modulo 2^32, per channel.
    pub c64_32: *const i32,
    /// Largest `|H'|` for which every accumulator provably fits `i32`; negative: never;
    /// `i32::MAX`: always (the layer is narrow).
    pub h_limit: i32,
}

/// Pointers of a 16w8a tile-row epilogue (see `requant_hilo_*`).
#[derive(Clone, Copy, Debug)]
pub(super) struct HiLo {
    pub hi: *const i32,
    pub lo: *const i32,
    pub c_hi: *const i32,
    pub c_lo: *const i32,
    pub c64: *const i64,
    pub mult: *const i32,
    pub shift: *const i32,
}

/// `v >> s` (arithmetic) for `−2^62 ≤ v < 3·2^62`, `0 ≤ s ≤ 62`, with AVX2 logical shifts.
#[inline(always)]
unsafe fn sra64_avx2(v: __m256i, s: __m256i) -> __m256i {
    // SAFETY: only called from functions with avx2 enabled.
    unsafe {
        let off = _mm256_set1_epi64x(TWO62);
        _mm256_sub_epi64(
            _mm256_srlv_epi64(_mm256_add_epi64(v, off), s),
            _mm256_srlv_epi64(off, s),
        )
    }
}

/// `clamp(v + zp, lo, hi)` on `i64` lanes with AVX2 compares.
#[inline(always)]
unsafe fn clamp64_avx2(v: __m256i, zp: __m256i, lo: __m256i, hi: __m256i) -> __m256i {
    // SAFETY: only called from functions with avx2 enabled.
    unsafe {
        let v = _mm256_add_epi64(v, zp);
        let v = _mm256_blendv_epi8(v, lo, _mm256_cmpgt_epi64(lo, v));
        _mm256_blendv_epi8(v, hi, _mm256_cmpgt_epi64(v, hi))
    }
}

/// `i32` accumulators, AVX2: `rows` rows of `len` lanes (a multiple of 8).
///
/// # Safety
/// CPU has avx2; `acc` readable for `rows·len` elements, `corr`, `mult`, `shift` for
/// `len`, `out + r·out_stride` writable for `len` bytes per row; `len % 8 == 0`.
#[target_feature(enable = "avx2")]
pub(super) unsafe fn requant32_ymm(p: Rows32, q: Clamp) {
    for r in 0..p.rows {
        // SAFETY: row `r` of the contract.
        unsafe {
            requant32_row_ymm(
                p.len,
                p.acc.add(r * p.len),
                p.corr,
                p.mult,
                p.shift,
                q,
                p.out.add(r * p.out_stride),
            )
        }
    }
}

#[inline(always)]
unsafe fn requant32_row_ymm(
    len: usize,
    acc: *const i32,
    corr: *const i32,
    mult: *const i32,
    shift: *const i32,
    q: Clamp,
    out: *mut i8,
) {
    let mut c = 0;
    while c < len {
        // SAFETY: `c + 8 ≤ len`: 32-byte loads and the 8-byte store are in bounds by the
        // function contract; the caller has avx2.
        unsafe {
            let a = _mm256_add_epi32(
                _mm256_loadu_si256(acc.add(c) as *const __m256i),
                _mm256_loadu_si256(corr.add(c) as *const __m256i),
            );
            let m = _mm256_loadu_si256(mult.add(c) as *const __m256i);
            let s = _mm256_loadu_si256(shift.add(c) as *const __m256i);
            _mm_storel_epi64(out.add(c) as *mut __m128i, rq32_ymm(a, m, s, q));
        }
        c += 8;
    }
}

/// 8 `i32` accumulators (corrections added) requantized exactly for any shifts in
/// `[1, 62]`: the high-dword path when every shift is ≥ 33 (module docs), else 64-bit
/// products. The 8 result bytes are the low 64 bits.
#[inline(always)]
unsafe fn rq32_ymm(a: __m256i, m: __m256i, s: __m256i, q: Clamp) -> __m128i {
    // SAFETY: only called from functions with avx2 enabled; register-only. The shifted
    // value `acc·M + 2^(n−1)` is in (−2^62, 3·2^61), inside `sra64_avx2`'s exact range.
    unsafe {
        // Values end in [−128, 127]: narrow 8 × i32 to 8 × i8 in lane order. (A macro: a
        // closure would not inherit the caller's target features.)
        macro_rules! narrow {
            ($y:expr) => {{
                let y = $y;
                let p16 = _mm256_packs_epi32(y, y); // [y0..y3 y0..y3 | y4..y7 y4..y7] as i16
                let p8 = _mm256_packs_epi16(p16, p16); // dword 0 = y0..y3, dword 4 = y4..y7
                let gather = _mm256_setr_epi32(0, 4, 1, 5, 2, 6, 3, 7);
                _mm256_castsi256_si128(_mm256_permutevar8x32_epi32(p8, gather))
            }};
        }
        if _mm256_movemask_epi8(_mm256_cmpgt_epi32(_mm256_set1_epi32(33), s)) == 0 {
            // Every n ≥ 33: the high-dword path (module docs).
            let one32 = _mm256_set1_epi32(1);
            let pe = _mm256_mul_epi32(a, m);
            let po = _mm256_mul_epi32(_mm256_srli_epi64::<32>(a), _mm256_srli_epi64::<32>(m));
            // Even lanes ← the high dword of their product; odd lanes keep theirs.
            let h = _mm256_blend_epi32::<0b1010_1010>(_mm256_shuffle_epi32::<0xF5>(pe), po);
            let k = _mm256_sub_epi32(s, _mm256_set1_epi32(32));
            let rnd = _mm256_sllv_epi32(one32, _mm256_sub_epi32(k, one32));
            let y = _mm256_srav_epi32(_mm256_add_epi32(h, rnd), k);
            let y = _mm256_add_epi32(y, _mm256_set1_epi32(q.zp));
            let y = _mm256_max_epi32(y, _mm256_set1_epi32(q.lo));
            return narrow!(_mm256_min_epi32(y, _mm256_set1_epi32(q.hi)));
        }
        let one = _mm256_set1_epi64x(1);
        let (zp, lo, hi) = (
            _mm256_set1_epi64x(q.zp as i64),
            _mm256_set1_epi64x(q.lo as i64),
            _mm256_set1_epi64x(q.hi as i64),
        );
        let se = _mm256_and_si256(s, _mm256_set1_epi64x(0xFFFF_FFFF));
        let so = _mm256_srli_epi64::<32>(s);
        let pe = _mm256_mul_epi32(a, m);
        let po = _mm256_mul_epi32(_mm256_srli_epi64::<32>(a), _mm256_srli_epi64::<32>(m));
        let re = _mm256_sllv_epi64(one, _mm256_sub_epi64(se, one));
        let ro = _mm256_sllv_epi64(one, _mm256_sub_epi64(so, one));
        let ye = sra64_avx2(_mm256_add_epi64(pe, re), se);
        let yo = sra64_avx2(_mm256_add_epi64(po, ro), so);
        let ye = clamp64_avx2(ye, zp, lo, hi);
        let yo = clamp64_avx2(yo, zp, lo, hi);
        // Even channels in the low dwords, odd channels in the high dwords.
        narrow!(_mm256_blend_epi32::<0b1010_1010>(
            ye,
            _mm256_slli_epi64::<32>(yo)
        ))
    }
}

/// [`requant_hilo_rows_zmm`] on 256-bit registers (the AVX-VNNI tier), 8 channels at a
/// time: the same per-vector `i32` fast path, else the `i64` path on 4-lane halves.
///
/// # Safety
/// As [`requant_hilo_rows_zmm`], with avx2 instead of AVX-512 and `len` a multiple of 8.
#[allow(clippy::too_many_arguments)]
#[target_feature(enable = "avx2")]
pub(super) unsafe fn requant_hilo_rows_ymm(
    len: usize,
    rows: usize,
    p: HiLo,
    fast: HiLoFast,
    t_stride: usize,
    row_terms: *const i64,
    q: Clamp,
    out: *mut i8,
    out_stride: usize,
) {
    let mut c = 0;
    while c < len {
        // SAFETY: `c + 8 ≤ len`: 32-byte loads of the `i32` inputs of every row and of the
        // per-channel `i32` constants, 16-byte loads of their 4-lane halves, 32-byte loads
        // of `c64` at `c` and `c + 4`, 8-byte stores, all in bounds by the function
        // contract. `rq64_ymm`'s preconditions (shifts ≥ 22, `|acc| < 2^41`) are the
        // caller's.
        unsafe {
            macro_rules! ld8 {
                ($ptr:expr) => {
                    _mm256_loadu_si256($ptr as *const __m256i)
                };
            }
            macro_rules! ld4 {
                ($ptr:expr) => {
                    _mm_loadu_si128($ptr as *const __m128i)
                };
            }
            let (c_hi, c_lo, e32) = (
                ld8!(p.c_hi.add(c)),
                ld8!(p.c_lo.add(c)),
                ld8!(fast.c64_32.add(c)),
            );
            let (m, s) = (ld8!(p.mult.add(c)), ld8!(p.shift.add(c)));
            let limit = _mm256_set1_epi32(fast.h_limit);
            let narrow = fast.h_limit >= 0;
            for r in 0..rows {
                let o = r * t_stride + c;
                let row = *row_terms.add(r);
                let dst = out.add(r * out_stride + c);
                let h = _mm256_add_epi32(ld8!(p.hi.add(o)), c_hi);
                // |H'| ≤ limit, unsigned (|i32::MIN| stays 2^31 > limit): max(|H'|, limit)
                // is the limit in every lane.
                let top = _mm256_max_epu32(_mm256_abs_epi32(h), limit);
                let fits = _mm256_movemask_epi8(_mm256_cmpeq_epi32(top, limit)) == -1;
                if narrow && fits {
                    let e = _mm256_add_epi32(e32, _mm256_set1_epi32(row as i32));
                    let l = _mm256_add_epi32(ld8!(p.lo.add(o)), c_lo);
                    let a = _mm256_add_epi32(_mm256_add_epi32(_mm256_slli_epi32::<8>(h), l), e);
                    _mm_storel_epi64(dst as *mut __m128i, rq32_ymm(a, m, s, q));
                    continue;
                }
                let rowv = _mm256_set1_epi64x(row);
                let mut res = [_mm256_setzero_si256(); 2];
                for (j, y) in res.iter_mut().enumerate() {
                    let (oj, cj) = (o + 4 * j, c + 4 * j);
                    let hv = _mm256_cvtepi32_epi64(_mm_add_epi32(
                        ld4!(p.hi.add(oj)),
                        ld4!(p.c_hi.add(cj)),
                    ));
                    let lv = _mm256_cvtepi32_epi64(_mm_add_epi32(
                        ld4!(p.lo.add(oj)),
                        ld4!(p.c_lo.add(cj)),
                    ));
                    let c64 = _mm256_loadu_si256(p.c64.add(cj) as *const __m256i);
                    let a = _mm256_add_epi64(
                        _mm256_add_epi64(_mm256_slli_epi64::<8>(hv), lv),
                        _mm256_add_epi64(c64, rowv),
                    );
                    let mj = _mm256_cvtepi32_epi64(ld4!(p.mult.add(cj)));
                    let sj = _mm256_cvtepi32_epi64(ld4!(p.shift.add(cj)));
                    *y = rq64_ymm(a, mj, sj, q);
                }
                store8_from_i64_ymm(res[0], res[1], dst);
            }
        }
        c += 8;
    }
}

/// The `i64` requantization of 4 lanes (see the module docs), AVX2; returns the clamped
/// results as `i64` lanes (each in `[−128, 127]`).
#[inline(always)]
unsafe fn rq64_ymm(a: __m256i, m: __m256i, s: __m256i, q: Clamp) -> __m256i {
    // SAFETY: only called from functions with avx2 enabled; register-only. `|t| < 2^52` is
    // inside `sra64_avx2`'s exact range.
    unsafe {
        let one = _mm256_set1_epi64x(1);
        // `vpmuldq` reads only bits 0..31 of `a_hi`, i.e. bits 21..52 of `a`, which are the
        // same for a logical and an arithmetic shift; `|a| < 2^41` makes them the exact
        // signed value of `a >> 21`.
        let a_hi = _mm256_srli_epi64::<21>(a);
        let a_lo = _mm256_and_si256(a, _mm256_set1_epi64x((1 << 21) - 1));
        let x = _mm256_mul_epi32(a_hi, m);
        let y = _mm256_add_epi64(
            _mm256_mul_epu32(a_lo, m),
            _mm256_sllv_epi64(one, _mm256_sub_epi64(s, one)),
        );
        let t = _mm256_add_epi64(x, _mm256_srli_epi64::<21>(y));
        let r = sra64_avx2(t, _mm256_sub_epi64(s, _mm256_set1_epi64x(21)));
        clamp64_avx2(
            r,
            _mm256_set1_epi64x(q.zp as i64),
            _mm256_set1_epi64x(q.lo as i64),
            _mm256_set1_epi64x(q.hi as i64),
        )
    }
}

/// Narrows two vectors of 4 `i64` codes (channels 0–3 and 4–7, each in `[−128, 127]`)
/// to 8 bytes in channel order, stored at `out`.
#[inline(always)]
unsafe fn store8_from_i64_ymm(r0: __m256i, r1: __m256i, out: *mut i8) {
    // SAFETY: only called from functions with avx2 enabled; `out` has 8 writable bytes
    // (caller's contract).
    unsafe {
        // Byte 0 of each qword: r0 to bytes 0,1 of each 128-bit lane, r1 to bytes 2,3.
        let p0 = _mm256_setr_epi8(
            0, 8, -1, -1, -1, -1, -1, -1, -1, -1, -1, -1, -1, -1, -1, -1, 0, 8, -1, -1, -1, -1, -1,
            -1, -1, -1, -1, -1, -1, -1, -1, -1,
        );
        let p1 = _mm256_setr_epi8(
            -1, -1, 0, 8, -1, -1, -1, -1, -1, -1, -1, -1, -1, -1, -1, -1, -1, -1, 0, 8, -1, -1, -1,
            -1, -1, -1, -1, -1, -1, -1, -1, -1,
        );
        // lane 0: c0 c1 c4 c5, lane 1: c2 c3 c6 c7 (dword 0 of each lane).
        let v = _mm256_or_si256(_mm256_shuffle_epi8(r0, p0), _mm256_shuffle_epi8(r1, p1));
        let v = _mm256_castsi256_si128(_mm256_permutevar8x32_epi32(
            v,
            _mm256_setr_epi32(0, 4, 0, 0, 0, 0, 0, 0),
        ));
        let v = _mm_shuffle_epi8(
            v,
            _mm_setr_epi8(0, 1, 4, 5, 2, 3, 6, 7, -1, -1, -1, -1, -1, -1, -1, -1),
        );
        _mm_storel_epi64(out as *mut __m128i, v);
    }
}

/// `i64` accumulators, AVX2: `len` lanes (a multiple of 8); every shift ≥ 22 and
/// `|acc| < 2^41` (else wrong, never undefined).
///
/// # Safety
/// CPU has avx2; `acc` readable for `len` `i64`, `mult`/`shift` for `len` `i32`, `out`
/// writable for `len` bytes, `len % 8 == 0`.
#[target_feature(enable = "avx2")]
pub(super) unsafe fn requant64_ymm(
    len: usize,
    acc: *const i64,
    mult: *const i32,
    shift: *const i32,
    q: Clamp,
    out: *mut i8,
) {
    let mut c = 0;
    while c < len {
        // SAFETY: `c + 8 ≤ len`: two 32-byte loads of `acc`, 16-byte loads of `mult`/
        // `shift` at `c` and `c + 4`, 8-byte store, in bounds by the function contract.
        unsafe {
            let mut r = [_mm256_setzero_si256(); 2];
            for (h, r) in r.iter_mut().enumerate() {
                let o = c + 4 * h;
                let a = _mm256_loadu_si256(acc.add(o) as *const __m256i);
                let m = _mm256_cvtepi32_epi64(_mm_loadu_si128(mult.add(o) as *const __m128i));
                let s = _mm256_cvtepi32_epi64(_mm_loadu_si128(shift.add(o) as *const __m128i));
                *r = rq64_ymm(a, m, s, q);
            }
            store8_from_i64_ymm(r[0], r[1], out.add(c));
        }
        c += 8;
    }
}
