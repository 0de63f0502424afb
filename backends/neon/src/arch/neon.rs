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
    let (mut a, mut b) = (a, b);
    for _ in 0..kp / 16 {
        // SAFETY: step s reads bytes [64·s, 64·s + 64) of each panel; the caller guarantees
        // 4·kp bytes and there are kp/16 steps.
        let (va, vb) = unsafe {
            (
                [
                    vld1q_s8(a),
                    vld1q_s8(a.add(16)),
                    vld1q_s8(a.add(32)),
                    vld1q_s8(a.add(48)),
                ],
                [
                    vld1q_s8(b),
                    vld1q_s8(b.add(16)),
                    vld1q_s8(b.add(32)),
                    vld1q_s8(b.add(48)),
                ],
            )
        };
        for i in 0..4 {
            for j in 0..4 {
                let p = vmull_s8(vget_low_s8(va[i]), vget_low_s8(vb[j]));
                let p = vmlal_high_s8(p, va[i], vb[j]);
                acc[4 * i + j] = vpadalq_s16(acc[4 * i + j], p);
            }
        }
        a = a.wrapping_add(64);
        b = b.wrapping_add(64);
    }
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
    let (mut a, mut b) = (a, b);
    for _ in 0..kp / 16 {
        // SAFETY: as in `tile_4x4_paired`.
        let (va, vb) = unsafe {
            (
                [
                    vld1q_s8(a),
                    vld1q_s8(a.add(16)),
                    vld1q_s8(a.add(32)),
                    vld1q_s8(a.add(48)),
                ],
                [
                    vld1q_s8(b),
                    vld1q_s8(b.add(16)),
                    vld1q_s8(b.add(32)),
                    vld1q_s8(b.add(48)),
                ],
            )
        };
        for i in 0..4 {
            for j in 0..4 {
                let lo = vmull_s8(vget_low_s8(va[i]), vget_low_s8(vb[j]));
                let hi = vmull_high_s8(va[i], vb[j]);
                acc[4 * i + j] = vpadalq_s16(vpadalq_s16(acc[4 * i + j], lo), hi);
            }
        }
        a = a.wrapping_add(64);
        b = b.wrapping_add(64);
    }
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
