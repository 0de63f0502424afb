//! Byte sums (`vpsadbw` against zero): the per-row `Σ (x+128)` of the 16w8a VNNI scheme.

use core::arch::x86_64::*;

/// `Σ p[0..len]` as unsigned bytes, AVX-512.
///
/// # Safety
/// CPU has avx512f+avx512bw; `p .. p + len` readable.
#[inline]
#[target_feature(enable = "avx512f,avx512bw")]
unsafe fn sum_u8_zmm(p: *const u8, len: usize) -> u64 {
    let zero = _mm512_setzero_si512();
    let mut acc = _mm512_setzero_si512();
    let mut i = 0;
    while i + 64 <= len {
        // SAFETY: `i + 64 ≤ len`: the 64-byte load is in bounds (function contract).
        let v = unsafe { _mm512_loadu_si512(p.add(i) as *const __m512i) };
        acc = _mm512_add_epi64(acc, _mm512_sad_epu8(v, zero));
        i += 64;
    }
    let mut s = _mm512_reduce_add_epi64(acc) as u64;
    while i < len {
        // SAFETY: `i < len`.
        s += unsafe { *p.add(i) } as u64;
        i += 1;
    }
    s
}

/// `Σ p[0..len]` as unsigned bytes, AVX2.
///
/// # Safety
/// CPU has avx2; `p .. p + len` readable.
#[inline]
#[target_feature(enable = "avx2")]
unsafe fn sum_u8_ymm(p: *const u8, len: usize) -> u64 {
    let zero = _mm256_setzero_si256();
    let mut acc = _mm256_setzero_si256();
    let mut i = 0;
    while i + 32 <= len {
        // SAFETY: `i + 32 ≤ len`: the 32-byte load is in bounds (function contract).
        let v = unsafe { _mm256_loadu_si256(p.add(i) as *const __m256i) };
        acc = _mm256_add_epi64(acc, _mm256_sad_epu8(v, zero));
        i += 32;
    }
    let mut lanes = [0u64; 4];
    // SAFETY: `lanes` is 32 writable bytes.
    unsafe { _mm256_storeu_si256(lanes.as_mut_ptr() as *mut __m256i, acc) };
    let mut s: u64 = lanes.iter().sum();
    while i < len {
        // SAFETY: `i < len`.
        s += unsafe { *p.add(i) } as u64;
        i += 1;
    }
    s
}

macro_rules! rows {
    ($(#[$doc:meta])* $name:ident, $one:ident, $features:literal) => {
        $(#[$doc])*
        ///
        /// # Safety
        /// The CPU has the features enabled here; for `r < rows`, `p + r·stride .. + len`
        /// is readable and `out + r` writable.
        #[target_feature(enable = $features)]
        pub(super) unsafe fn $name(
            p: *const u8,
            stride: usize,
            rows: usize,
            len: usize,
            out: *mut u64,
        ) {
            for r in 0..rows {
                // SAFETY: row `r` of the function contract; same features (inlined).
                unsafe { *out.add(r) = $one(p.add(r * stride), len) };
            }
        }
    };
}

rows!(
    /// `out[r] = Σ` of the `len` bytes of row `r` (`stride` apart), AVX-512: one call for
    /// many short rows (a direct convolution's pixels), the byte sum inlined.
    sum_rows_u8_zmm,
    sum_u8_zmm,
    "avx512f,avx512bw"
);
rows!(
    /// As [`sum_rows_u8_zmm`], AVX2.
    sum_rows_u8_ymm,
    sum_u8_ymm,
    "avx2"
);
