//! Weight re-packing with gathers: one panel of `LANES` consecutive output channels,
//! dword group `g` = `vpgatherdd` of `row_l[g·G .. g·G + G]` for every lane `l`.
//! Only whole groups (`g·G + G ≤ k`) of full panels go through here; the caller packs
//! the K tail and ragged panels with scalar code (same layout, see `crate::pack`).

use core::arch::x86_64::*;

/// Raw arguments: `rows` source rows of `k` elements each, consecutive from `src`.
#[derive(Clone, Copy, Debug)]
pub(super) struct RawPack {
    /// First source row (element type per function).
    pub src: *const u8,
    /// Bytes per source row.
    pub row_bytes: usize,
    /// Whole dword groups to write.
    pub groups: usize,
    /// Panel output (`groups · LANES · 4` bytes written).
    pub dst: *mut u8,
    /// Vnni16: the `lo'` panel output (same size).
    pub dst_lo: *mut u8,
}

/// Byte shuffles splitting the two dwords `[l0 h0 l1 h1]`, `[l2 h2 l3 h3]` of each lane
/// into `[h0 h1 h2 h3]` (`HI_*`) and `[l0 l1 l2 l3]` (`LO_*`), per 128-bit lane.
const HI_A: [i8; 16] = [1, 3, -1, -1, 5, 7, -1, -1, 9, 11, -1, -1, 13, 15, -1, -1];
const HI_B: [i8; 16] = [-1, -1, 1, 3, -1, -1, 5, 7, -1, -1, 9, 11, -1, -1, 13, 15];
const LO_A: [i8; 16] = [0, 2, -1, -1, 4, 6, -1, -1, 8, 10, -1, -1, 12, 14, -1, -1];
const LO_B: [i8; 16] = [-1, -1, 0, 2, -1, -1, 4, 6, -1, -1, 8, 10, -1, -1, 12, 14];

/// A 16-byte shuffle table in every 128-bit lane.
#[inline(always)]
unsafe fn bc512(t: &[i8; 16]) -> __m512i {
    // SAFETY: `t` is 16 readable bytes; callers run with avx512f.
    unsafe { _mm512_broadcast_i32x4(_mm_loadu_si128(t.as_ptr() as *const __m128i)) }
}

#[inline(always)]
unsafe fn bc256(t: &[i8; 16]) -> __m256i {
    // SAFETY: `t` is 16 readable bytes; callers run with avx2.
    unsafe { _mm256_broadcastsi128_si256(_mm_loadu_si128(t.as_ptr() as *const __m128i)) }
}

/// `[row·row_bytes + off]` for rows 0..16 as `i32` lanes.
#[inline(always)]
unsafe fn rows16(row_bytes: usize) -> __m512i {
    // SAFETY: register-only; callers run with avx512f.
    unsafe {
        _mm512_mullo_epi32(
            _mm512_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15),
            _mm512_set1_epi32(row_bytes as i32),
        )
    }
}

#[inline(always)]
unsafe fn rows8(row_bytes: usize) -> __m256i {
    // SAFETY: register-only; callers run with avx2.
    unsafe {
        _mm256_mullo_epi32(
            _mm256_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7),
            _mm256_set1_epi32(row_bytes as i32),
        )
    }
}

/// 8-bit weights, 16 lanes: group `g` of lane `l` = bytes `4g .. 4g+4` of row `l`.
///
/// # Safety
/// CPU has avx512f; rows `0..16` readable for `4·groups` bytes from `src + l·row_bytes`;
/// `dst` writable for `groups·64` bytes; `16·row_bytes < 2^31`.
#[target_feature(enable = "avx512f,avx512bw")]
pub(super) unsafe fn vnni8_zmm(p: RawPack) {
    // SAFETY: lane `l` of gather `g` reads 4 bytes at `src + l·row_bytes + 4g`, inside row
    // `l`'s first `4·groups` bytes; each store writes 64 bytes at `dst + 64g` (contract).
    unsafe {
        let idx = rows16(p.row_bytes);
        for g in 0..p.groups {
            let v = _mm512_i32gather_epi32::<1>(idx, p.src.add(4 * g) as *const i32);
            _mm512_storeu_si512(p.dst.add(64 * g) as *mut __m512i, v);
        }
    }
}

/// 8-bit weights, 8 lanes (AVX-VNNI layout).
///
/// # Safety
/// CPU has avx2; rows `0..8` readable for `4·groups` bytes; `dst` writable for
/// `groups·32` bytes; `8·row_bytes < 2^31`.
#[target_feature(enable = "avx2")]
pub(super) unsafe fn vnni8_ymm(p: RawPack) {
    // SAFETY: as `vnni8_zmm` with 8 lanes of 4 bytes and 32-byte stores.
    unsafe {
        let idx = rows8(p.row_bytes);
        for g in 0..p.groups {
            let v = _mm256_i32gather_epi32::<1>(p.src.add(4 * g) as *const i32, idx);
            _mm256_storeu_si256(p.dst.add(32 * g) as *mut __m256i, v);
        }
    }
}

/// 16-bit weights split into `hi` / `lo' = lo ^ 0x80` bytes, 16 lanes: group `g` of lane
/// `l` = elements `4g .. 4g+4` of row `l` (8 bytes, two gathers).
///
/// # Safety
/// CPU has avx512f+avx512bw; rows `0..16` readable for `8·groups` bytes; `dst` and
/// `dst_lo` writable for `groups·64` bytes; `16·row_bytes < 2^31`.
#[target_feature(enable = "avx512f,avx512bw")]
pub(super) unsafe fn vnni16_zmm(p: RawPack) {
    // SAFETY: lane `l` of the two gathers of group `g` reads bytes `8g .. 8g+8` of row `l`
    // (inside its first `8·groups` bytes); stores write 64 bytes at `+64g` of each panel.
    unsafe {
        let idx = rows16(p.row_bytes);
        let (hi_a, hi_b, lo_a, lo_b) = (bc512(&HI_A), bc512(&HI_B), bc512(&LO_A), bc512(&LO_B));
        let flip = _mm512_set1_epi8(-128);
        for g in 0..p.groups {
            let a = _mm512_i32gather_epi32::<1>(idx, p.src.add(8 * g) as *const i32);
            let b = _mm512_i32gather_epi32::<1>(idx, p.src.add(8 * g + 4) as *const i32);
            let hi = _mm512_or_si512(_mm512_shuffle_epi8(a, hi_a), _mm512_shuffle_epi8(b, hi_b));
            let lo = _mm512_or_si512(_mm512_shuffle_epi8(a, lo_a), _mm512_shuffle_epi8(b, lo_b));
            _mm512_storeu_si512(p.dst.add(64 * g) as *mut __m512i, hi);
            _mm512_storeu_si512(
                p.dst_lo.add(64 * g) as *mut __m512i,
                _mm512_xor_si512(lo, flip),
            );
        }
    }
}

/// 16-bit weights split, 8 lanes (AVX-VNNI layout).
///
/// # Safety
/// CPU has avx2; rows `0..8` readable for `8·groups` bytes; `dst` and `dst_lo` writable
/// for `groups·32` bytes; `8·row_bytes < 2^31`.
#[target_feature(enable = "avx2")]
pub(super) unsafe fn vnni16_ymm(p: RawPack) {
    // SAFETY: as `vnni16_zmm` with 8 lanes and 32-byte stores.
    unsafe {
        let idx = rows8(p.row_bytes);
        let (hi_a, hi_b, lo_a, lo_b) = (bc256(&HI_A), bc256(&HI_B), bc256(&LO_A), bc256(&LO_B));
        let flip = _mm256_set1_epi8(-128);
        for g in 0..p.groups {
            let a = _mm256_i32gather_epi32::<1>(p.src.add(8 * g) as *const i32, idx);
            let b = _mm256_i32gather_epi32::<1>(p.src.add(8 * g + 4) as *const i32, idx);
            let hi = _mm256_or_si256(_mm256_shuffle_epi8(a, hi_a), _mm256_shuffle_epi8(b, hi_b));
            let lo = _mm256_or_si256(_mm256_shuffle_epi8(a, lo_a), _mm256_shuffle_epi8(b, lo_b));
            _mm256_storeu_si256(p.dst.add(32 * g) as *mut __m256i, hi);
            _mm256_storeu_si256(
                p.dst_lo.add(32 * g) as *mut __m256i,
                _mm256_xor_si256(lo, flip),
            );
        }
    }
}

/// `i16` pairs from 16-bit weights, 8 lanes (AVX2 layout): group `g` of lane `l` = bytes
/// `4g .. 4g+4` of row `l` (elements `2g, 2g+1`), a plain dword gather.
///
/// # Safety
/// CPU has avx2; rows `0..8` readable for `4·groups` bytes; `dst` writable for
/// `groups·32` bytes; `8·row_bytes < 2^31`.
#[target_feature(enable = "avx2")]
pub(super) unsafe fn madd16_ymm(p: RawPack) {
    // SAFETY: as `vnni8_ymm`: lane `l` of gather `g` reads 4 bytes inside row `l`.
    unsafe {
        let idx = rows8(p.row_bytes);
        for g in 0..p.groups {
            let v = _mm256_i32gather_epi32::<1>(p.src.add(4 * g) as *const i32, idx);
            _mm256_storeu_si256(p.dst.add(32 * g) as *mut __m256i, v);
        }
    }
}

/// `i16` pairs from 8-bit weights, 8 lanes (AVX2 layout): group `g` of lane `l` = bytes
/// `2g, 2g+1` of row `l`, sign-extended. Two groups per iteration (one dword gather gives
/// 4 bytes = 2 groups), so `groups` must be even.
///
/// # Safety
/// CPU has avx2; rows `0..8` readable for `2·groups` bytes; `dst` writable for
/// `groups·32` bytes; `groups` even; `8·row_bytes < 2^31`.
#[target_feature(enable = "avx2")]
pub(super) unsafe fn madd8_ymm(p: RawPack) {
    // SAFETY: lane `l` of gather `j` reads bytes `4j .. 4j+4 = 2·(2j) .. 2·(2j+2)` of row
    // `l`, inside its first `2·groups` bytes; each iteration stores groups `2j` and `2j+1`
    // (64 bytes) at `dst + 64j`.
    unsafe {
        let idx = rows8(p.row_bytes);
        // Bytes 0,1 of every dword (group 2j), then bytes 2,3 (group 2j+1), per 128-bit lane.
        let lo = _mm256_setr_epi8(
            0, 1, 4, 5, 8, 9, 12, 13, 2, 3, 6, 7, 10, 11, 14, 15, 0, 1, 4, 5, 8, 9, 12, 13, 2, 3,
            6, 7, 10, 11, 14, 15,
        );
        for j in 0..p.groups / 2 {
            let v = _mm256_i32gather_epi32::<1>(p.src.add(4 * j) as *const i32, idx);
            // lane 0: rows 0–3 [g0 bytes | g1 bytes], lane 1: rows 4–7.
            let v = _mm256_shuffle_epi8(v, lo);
            // [rows 0–3 g0, rows 4–7 g0] and [rows 0–3 g1, rows 4–7 g1] as 16 bytes each.
            let v = _mm256_permute4x64_epi64::<0b11_01_10_00>(v);
            let g0 = _mm256_cvtepi8_epi16(_mm256_castsi256_si128(v));
            let g1 = _mm256_cvtepi8_epi16(_mm256_extracti128_si256::<1>(v));
            _mm256_storeu_si256(p.dst.add(64 * j) as *mut __m256i, g0);
            _mm256_storeu_si256(p.dst.add(64 * j + 32) as *mut __m256i, g1);
        }
    }
}
