//! Baseline AArch64 Advanced SIMD kernels (no run-time detection needed: NEON is part of
//! the aarch64 base ISA).

use core::arch::aarch64::*;

/// `out[4i + j] = Σ_k a_i[k]·b_j[k]` for a 4×4 tile, pairing two products per `i16` lane
/// before widening: `smull` (8 products) + `smlal2` (8 more, added lane-wise) + `sadalp`
/// (pairwise widen-accumulate into `i32`) = 3 instructions per 16 MACs.
///
/// # Safety
///
/// `a` and `b` point to `4·kp` readable bytes each, packed in 16-byte chunks per row
/// (`pack.rs`, chunk 16), `kp % 16 == 0`; **no byte of `b` is −128**, so every pair of
/// products fits an `i16` lane (`|x·w| ≤ 128·127`, and `2·16 256 < 32 768`).
#[target_feature(enable = "neon")]
#[inline(never)]
pub(super) unsafe fn tile_4x4_paired(kp: usize, a: *const i8, b: *const i8, out: &mut [i32; 16]) {
    let mut acc = [vdupq_n_s32(0); 16];
    panel_loop!(kp / 16, a, b, acc, |c, x, y| vpadalq_s16(
        c,
        vmlal_high_s8(vmull_s8(vget_low_s8(x), vget_low_s8(y)), x, y)
    ));
    for (o, v) in out.iter_mut().zip(acc) {
        *o = vaddvq_s32(v);
    }
}

/// As [`tile_4x4_paired`] for any bytes (the 16w8a split has −128 on both sides):
/// `smull` + `sadalp` + `smull2` + `sadalp` = 4 instructions per 16 MACs.
///
/// # Safety
///
/// `a` and `b` point to `4·kp` readable bytes each, packed in 16-byte chunks per row,
/// `kp % 16 == 0`.
#[target_feature(enable = "neon")]
#[inline(never)]
pub(super) unsafe fn tile_4x4(kp: usize, a: *const i8, b: *const i8, out: &mut [i32; 16]) {
    let mut acc = [vdupq_n_s32(0); 16];
    panel_loop!(kp / 16, a, b, acc, |c, x, y| {
        let lo = vmull_s8(vget_low_s8(x), vget_low_s8(y));
        vpadalq_s16(vpadalq_s16(c, lo), vmull_high_s8(x, y))
    });
    for (o, v) in out.iter_mut().zip(acc) {
        *o = vaddvq_s32(v);
    }
}

/// Depthwise, 8-bit weights: for `c` in `0..c16` step 16,
/// `acc[c..c+16] = Σ_taps (x[xo+c..] − zp) · w[wo+c..]` with `ssubl` (exact `i16`
/// differences in `[−255, 255]`), `sxtl` of the weights and `smlal`/`smlal2` into `i32`.
///
/// # Safety
///
/// For every `(xo, wo)` in `taps`: `x + xo + c16` and `w + wo + c16` stay within their
/// allocations; `acc` has `c16` writable `i32`; `c16 % 16 == 0`.
#[target_feature(enable = "neon")]
#[inline(never)]
pub(super) unsafe fn depthwise_w8(
    x: *const i8,
    w: *const i8,
    taps: &[(usize, usize)],
    zp: i16,
    c16: usize,
    acc: *mut i32,
) {
    let zp8 = vdupq_n_s8(zp as i8);
    let mut c = 0;
    while c < c16 {
        let mut s = [vdupq_n_s32(0); 4];
        for &(xo, wo) in taps {
            // SAFETY: `xo + c + 16 ≤ xo + c16` and `wo + c + 16 ≤ wo + c16` are in bounds.
            let (xv, wv) = unsafe { (vld1q_s8(x.add(xo + c)), vld1q_s8(w.add(wo + c))) };
            let xl = vsubl_s8(vget_low_s8(xv), vget_low_s8(zp8));
            let xh = vsubl_high_s8(xv, zp8);
            let wl = vmovl_s8(vget_low_s8(wv));
            let wh = vmovl_high_s8(wv);
            s[0] = vmlal_s16(s[0], vget_low_s16(xl), vget_low_s16(wl));
            s[1] = vmlal_high_s16(s[1], xl, wl);
            s[2] = vmlal_s16(s[2], vget_low_s16(xh), vget_low_s16(wh));
            s[3] = vmlal_high_s16(s[3], xh, wh);
        }
        for (q, v) in s.into_iter().enumerate() {
            // SAFETY: `c + 4q + 4 ≤ c + 16 ≤ c16` `i32` are writable.
            unsafe { vst1q_s32(acc.add(c + 4 * q), v) };
        }
        c += 16;
    }
}

/// Depthwise, 16-bit weights: as [`depthwise_w8`] with `i16` weights (`|(x−zp)·w| < 2^23`).
///
/// # Safety
///
/// As [`depthwise_w8`], with `w + wo + c16` counted in `i16` elements.
#[target_feature(enable = "neon")]
#[inline(never)]
pub(super) unsafe fn depthwise_w16(
    x: *const i8,
    w: *const i16,
    taps: &[(usize, usize)],
    zp: i16,
    c16: usize,
    acc: *mut i32,
) {
    let zp8 = vdupq_n_s8(zp as i8);
    let mut c = 0;
    while c < c16 {
        let mut s = [vdupq_n_s32(0); 4];
        for &(xo, wo) in taps {
            // SAFETY: `xo + c + 16 ≤ xo + c16` bytes and `wo + c + 16 ≤ wo + c16` `i16`
            // are in bounds.
            let (xv, wl, wh) = unsafe {
                (
                    vld1q_s8(x.add(xo + c)),
                    vld1q_s16(w.add(wo + c)),
                    vld1q_s16(w.add(wo + c + 8)),
                )
            };
            let xl = vsubl_s8(vget_low_s8(xv), vget_low_s8(zp8));
            let xh = vsubl_high_s8(xv, zp8);
            s[0] = vmlal_s16(s[0], vget_low_s16(xl), vget_low_s16(wl));
            s[1] = vmlal_high_s16(s[1], xl, wl);
            s[2] = vmlal_s16(s[2], vget_low_s16(xh), vget_low_s16(wh));
            s[3] = vmlal_high_s16(s[3], xh, wh);
        }
        for (q, v) in s.into_iter().enumerate() {
            // SAFETY: `c + 4q + 4 ≤ c16` `i32` are writable.
            unsafe { vst1q_s32(acc.add(c + 4 * q), v) };
        }
        c += 16;
    }
}

/// The spec's `M(v) = ⌊(v·M + 2^(n−1)) / 2^n⌋` on 4 `i32` lanes, as two `i64x2` halves:
/// `smull`/`smull2` give the exact 63-bit products, `srshl` by `−n` adds `2^(n−1)` and
/// shifts arithmetically with unbounded intermediate precision (Arm ARM `SRSHL`), i.e.
/// exactly round half up, for every `n ∈ 1..=62`.
#[target_feature(enable = "neon")]
#[inline]
fn apply4(v: int32x4_t, m: int32x2_t, neg_shift: int64x2_t) -> (int64x2_t, int64x2_t) {
    (
        vrshlq_s64(vmull_s32(vget_low_s32(v), m), neg_shift),
        vrshlq_s64(vmull_high_s32(v, vcombine_s32(m, m)), neg_shift),
    )
}

/// Constants of the residual add, in the kernel's form: `(M, n)` per rescale.
#[derive(Clone, Copy, Debug)]
pub(crate) struct AddConsts {
    pub(crate) zp_a: i16,
    pub(crate) zp_b: i16,
    pub(crate) m_a: (i32, u32),
    pub(crate) m_b: (i32, u32),
    pub(crate) m_o: (i32, u32),
    pub(crate) zp_o: i32,
    pub(crate) lo: i32,
    pub(crate) hi: i32,
}

/// Residual add on `len` elements (a multiple of 8), 8 per step:
/// `out = clamp(M_o(M_a((a − zp_a) << 20) + M_b((b − zp_b) << 20)) + zp_o, lo, hi)`.
/// `ssubl` → `sxtl` + `shl #20` (exact in `i32`: `|a − zp| ≤ 255`), [`apply4`] per input, the sum
/// narrowed to `i32` (`xtn`), [`apply4`] again, `+ zp_o` in `i64`, saturating narrow
/// (`sqxtn`, which commutes with the clamp to `[lo, hi] ⊂ [−128, 127]`), `smax`/`smin`,
/// narrow to bytes.
///
/// # Safety
///
/// `a`, `b` readable and `out` writable for `len` bytes; `len % 8 == 0`; every shift in
/// `1..=62`; `|M_a(v)| + |M_b(w)| ≤ i32::MAX` for every `|v|, |w| ≤ 255·2^20` (the caller
/// checks it; true for every plan `Plan::derive` makes, where `M_a, M_b ≤ ½`).
#[target_feature(enable = "neon")]
#[inline(never)]
pub(super) unsafe fn add(len: usize, a: *const i8, b: *const i8, q: AddConsts, out: *mut i8) {
    let zp_a = vdup_n_s8(q.zp_a as i8);
    let zp_b = vdup_n_s8(q.zp_b as i8);
    let (ma, mb, mo) = (
        vdup_n_s32(q.m_a.0),
        vdup_n_s32(q.m_b.0),
        vdup_n_s32(q.m_o.0),
    );
    let (sa, sb, so) = (
        vdupq_n_s64(-(q.m_a.1 as i64)),
        vdupq_n_s64(-(q.m_b.1 as i64)),
        vdupq_n_s64(-(q.m_o.1 as i64)),
    );
    let zp_o = vdupq_n_s64(q.zp_o as i64);
    let (lo, hi) = (vdupq_n_s32(q.lo), vdupq_n_s32(q.hi));
    let mut i = 0;
    while i < len {
        // SAFETY: `i + 8 ≤ len`: the 8-byte loads and the store are in bounds (contract).
        let (va, vb) = unsafe { (vld1_s8(a.add(i)), vld1_s8(b.add(i))) };
        // (x − zp) in i16 lanes: exact, |x − zp| ≤ 255.
        let da = vsubl_s8(va, zp_a);
        let db = vsubl_s8(vb, zp_b);
        let mut res = [vdupq_n_s32(0); 2];
        for (h, r) in res.iter_mut().enumerate() {
            let (xa, xb) = if h == 0 {
                (vmovl_s16(vget_low_s16(da)), vmovl_s16(vget_low_s16(db)))
            } else {
                (vmovl_high_s16(da), vmovl_high_s16(db))
            };
            // << 20: exact in i32 (|x − zp|·2^20 < 2^28).
            let (xa, xb) = (vshlq_n_s32::<20>(xa), vshlq_n_s32::<20>(xb));
            let (a0, a1) = apply4(xa, ma, sa);
            let (b0, b1) = apply4(xb, mb, sb);
            // The sum fits i32 (contract): `xtn` is exact.
            let sum = vcombine_s32(vmovn_s64(vaddq_s64(a0, b0)), vmovn_s64(vaddq_s64(a1, b1)));
            let (y0, y1) = apply4(sum, mo, so);
            let y = vcombine_s32(
                vqmovn_s64(vaddq_s64(y0, zp_o)),
                vqmovn_s64(vaddq_s64(y1, zp_o)),
            );
            *r = vminq_s32(vmaxq_s32(y, lo), hi);
        }
        let bytes = vmovn_s16(vcombine_s16(vmovn_s32(res[0]), vmovn_s32(res[1])));
        // SAFETY: as above.
        unsafe { vst1_s8(out.add(i), bytes) };
        i += 8;
    }
}

/// Max over taps for the channels `0..c16` (a multiple of 16):
/// `out[c] = max(i8::MIN, max_(o ∈ offs) x[o + c])`, one `smax` per tap and 16 channels.
///
/// # Safety
///
/// For every `o` in `offs`, `x + o + c16` stays within the allocation; `out` has `c16`
/// writable bytes; `c16 % 16 == 0`.
#[target_feature(enable = "neon")]
#[inline(never)]
pub(super) unsafe fn max_taps(x: *const i8, offs: &[usize], c16: usize, out: *mut i8) {
    let mut c = 0;
    while c < c16 {
        let mut m = vdupq_n_s8(i8::MIN);
        for &o in offs {
            // SAFETY: `o + c + 16 ≤ o + c16` is in bounds.
            m = vmaxq_s8(m, unsafe { vld1q_s8(x.add(o + c)) });
        }
        // SAFETY: `c + 16 ≤ c16` bytes are writable.
        unsafe { vst1q_s8(out.add(c), m) };
        c += 16;
    }
}

/// Taps summed in `i16` lanes before widening: `256·128 = 2^15` (−128·256 is `i16::MIN`,
/// 127·256 < 2^15), so the partial sums are exact.
const SUM_TAPS_PER_FLUSH: usize = 256;

/// Sum over taps for the channels `0..c16` (a multiple of 16):
/// `acc[c] = Σ_(o ∈ offs) x[o + c]`, exactly in `i32` (`saddw`/`saddw2` into `i16` for up to
/// 256 taps, then `saddw`/`saddw2` into `i32`). Exact for fewer than 2^24 taps.
///
/// # Safety
///
/// For every `o` in `offs`, `x + o + c16` stays within the allocation; `acc` has `c16`
/// writable `i32`; `c16 % 16 == 0`.
#[target_feature(enable = "neon")]
#[inline(never)]
pub(super) unsafe fn sum_taps(x: *const i8, offs: &[usize], c16: usize, acc: *mut i32) {
    let mut c = 0;
    while c < c16 {
        let mut s = [vdupq_n_s32(0); 4];
        for chunk in offs.chunks(SUM_TAPS_PER_FLUSH) {
            let (mut l, mut h) = (vdupq_n_s16(0), vdupq_n_s16(0));
            for &o in chunk {
                // SAFETY: `o + c + 16 ≤ o + c16` is in bounds.
                let v = unsafe { vld1q_s8(x.add(o + c)) };
                l = vaddw_s8(l, vget_low_s8(v));
                h = vaddw_high_s8(h, v);
            }
            s[0] = vaddw_s16(s[0], vget_low_s16(l));
            s[1] = vaddw_high_s16(s[1], l);
            s[2] = vaddw_s16(s[2], vget_low_s16(h));
            s[3] = vaddw_high_s16(s[3], h);
        }
        for (q, v) in s.into_iter().enumerate() {
            // SAFETY: `c + 4q + 4 ≤ c + 16 ≤ c16` `i32` are writable.
            unsafe { vst1q_s32(acc.add(c + 4 * q), v) };
        }
        c += 16;
    }
}
