//! Thin, `#[inline(always)]` wrappers over the intrinsics one GEMM tile needs, so the tile
//! loop ([`super::gemm`]) is written once and instantiated per tier.
//!
//! Every function here is `unsafe` with the same two-part contract:
//!
//! 1. **CPU features.** It must only run inside a `#[target_feature]` function that
//!    enables the features of its type (documented on the type), entered only after
//!    [`super::Token`] detected them. `#[inline(always)]` makes the body part of that
//!    function, so the intrinsics are compiled with its features.
//! 2. **Pointers.** Loads read exactly the bytes stated (`LANES·4` for a vector, 4 for a
//!    broadcast), stores write `LANES` `i32`s; the caller guarantees they are in bounds.
//!    No alignment is required (unaligned loads/stores throughout).

use core::arch::x86_64::*;

/// A vector of `LANES` `i32` accumulators, loaded as `LANES` dword groups.
pub(super) trait Simd {
    /// The register type.
    type V: Copy;
    /// `i32` lanes per register (output channels per vector).
    const LANES: usize;
    /// All zeros.
    unsafe fn zero() -> Self::V;
    /// Loads `LANES·4` bytes from `p`.
    unsafe fn load(p: *const u8) -> Self::V;
    /// Broadcasts the 4 bytes at `p` to every lane.
    unsafe fn bcast(p: *const u8) -> Self::V;
    /// Stores `LANES` `i32`s to `p`.
    unsafe fn store(p: *mut i32, v: Self::V);
}

/// One 4-way dot-product step of a tile: `acc += a·w` lane-wise over dword groups.
pub(super) trait Dot {
    /// Register file it runs on.
    type S: Simd;
    /// `acc + Σ_j a[j]·w[j]` per lane (`a` broadcast from the activation row, `w` a
    /// weight vector).
    unsafe fn dot(
        acc: <Self::S as Simd>::V,
        a: <Self::S as Simd>::V,
        w: <Self::S as Simd>::V,
    ) -> <Self::S as Simd>::V;
}

/// 512-bit registers (features: `avx512f`).
#[derive(Clone, Copy, Debug)]
pub(super) struct Zmm;

impl Simd for Zmm {
    type V = __m512i;
    const LANES: usize = 16;
    #[inline(always)]
    unsafe fn zero() -> __m512i {
        // SAFETY: contract 1 of the module docs (avx512f enabled by the caller).
        unsafe { _mm512_setzero_si512() }
    }
    #[inline(always)]
    unsafe fn load(p: *const u8) -> __m512i {
        // SAFETY: contract 1 (avx512f) and 2 (64 readable bytes at `p`).
        unsafe { _mm512_loadu_si512(p as *const __m512i) }
    }
    #[inline(always)]
    unsafe fn bcast(p: *const u8) -> __m512i {
        // SAFETY: contract 1 (avx512f) and 2 (4 readable bytes at `p`).
        unsafe { _mm512_set1_epi32((p as *const i32).read_unaligned()) }
    }
    #[inline(always)]
    unsafe fn store(p: *mut i32, v: __m512i) {
        // SAFETY: contract 1 (avx512f) and 2 (16 writable i32 at `p`).
        unsafe { _mm512_storeu_si512(p as *mut __m512i, v) }
    }
}

/// 256-bit registers (features: `avx2`).
#[derive(Clone, Copy, Debug)]
pub(super) struct Ymm;

impl Simd for Ymm {
    type V = __m256i;
    const LANES: usize = 8;
    #[inline(always)]
    unsafe fn zero() -> __m256i {
        // SAFETY: contract 1 of the module docs (avx2 enabled by the caller).
        unsafe { _mm256_setzero_si256() }
    }
    #[inline(always)]
    unsafe fn load(p: *const u8) -> __m256i {
        // SAFETY: contract 1 (avx2) and 2 (32 readable bytes at `p`).
        unsafe { _mm256_loadu_si256(p as *const __m256i) }
    }
    #[inline(always)]
    unsafe fn bcast(p: *const u8) -> __m256i {
        // SAFETY: contract 1 (avx2) and 2 (4 readable bytes at `p`).
        unsafe { _mm256_set1_epi32((p as *const i32).read_unaligned()) }
    }
    #[inline(always)]
    unsafe fn store(p: *mut i32, v: __m256i) {
        // SAFETY: contract 1 (avx2) and 2 (8 writable i32 at `p`).
        unsafe { _mm256_storeu_si256(p as *mut __m256i, v) }
    }
}

/// AVX-512 VNNI, activations unsigned: `acc += Σ u8(a)·s8(w)` (`vpdpbusd zmm`, the
/// non-saturating form: exact modulo 2^32). Features: `avx512f,avx512vnni`.
#[derive(Clone, Copy, Debug)]
pub(super) struct ZmmActU8;

impl Dot for ZmmActU8 {
    type S = Zmm;
    #[inline(always)]
    unsafe fn dot(acc: __m512i, a: __m512i, w: __m512i) -> __m512i {
        // SAFETY: contract 1 (avx512vnni enabled by the caller).
        unsafe { _mm512_dpbusd_epi32(acc, a, w) }
    }
}

/// AVX-VNNI (VEX-encoded, 256-bit), activations unsigned. Features: `avx2,avxvnni`.
#[derive(Clone, Copy, Debug)]
pub(super) struct YmmActU8;

impl Dot for YmmActU8 {
    type S = Ymm;
    #[inline(always)]
    unsafe fn dot(acc: __m256i, a: __m256i, w: __m256i) -> __m256i {
        // SAFETY: contract 1 (avxvnni enabled by the caller).
        unsafe { _mm256_dpbusd_avx_epi32(acc, a, w) }
    }
}

/// AVX2 without VNNI: dword groups are two `i16`, `acc += a0·w0 + a1·w1` (`vpmaddwd`,
/// exact: no operand is −32768, so no pair sum overflows). Features: `avx2`.
#[derive(Clone, Copy, Debug)]
pub(super) struct YmmMaddI16;

impl Dot for YmmMaddI16 {
    type S = Ymm;
    #[inline(always)]
    unsafe fn dot(acc: __m256i, a: __m256i, w: __m256i) -> __m256i {
        // SAFETY: contract 1 (avx2 enabled by the caller).
        unsafe { _mm256_add_epi32(acc, _mm256_madd_epi16(a, w)) }
    }
}
