//! `FEAT_I8MM` kernels: `smmla` through inline `asm!` (its intrinsic `vmmlaq_s32` is
//! unstable on Rust 1.95).

use core::arch::aarch64::*;
use core::arch::asm;

/// `acc += smmla(a, b)`: with `a` = rows (r0, r1) × 8 bytes and `b` = rows (c0, c1) × 8
/// bytes, lanes `[r0·c0, r0·c1, r1·c0, r1·c1]` gain an 8-term dot product each (32 MACs).
macro_rules! smmla {
    ($acc:expr, $a:expr, $b:expr) => {
        // SAFETY: `smmla` only reads and writes the three vector registers; it is expanded
        // only inside `#[target_feature(enable = "i8mm")]` functions, whose callers
        // guarantee the CPU has FEAT_I8MM.
        unsafe {
            asm!(
                "smmla {acc:v}.4s, {a:v}.16b, {b:v}.16b",
                acc = inout(vreg) $acc,
                a = in(vreg) $a,
                b = in(vreg) $b,
                options(pure, nomem, nostack, preserves_flags)
            )
        }
    };
}

/// `out[8i + j] = Σ_k a_i[k]·b_j[k]` for an 8×8 tile: per 8 bytes of K, four A registers
/// (row pairs) × four B registers (row pairs) = 16 `smmla`, 512 MACs.
///
/// # Safety
///
/// The CPU has FEAT_I8MM; `a` and `b` point to `8·kp` readable bytes each, packed in 8-byte
/// chunks per row (rows 2p and 2p+1 adjacent), `kp % 16 == 0`. Any byte values.
#[target_feature(enable = "neon,i8mm")]
#[inline(never)]
pub(super) unsafe fn tile_8x8(kp: usize, a: *const i8, b: *const i8, out: &mut [i32; 64]) {
    let mut acc = [vdupq_n_s32(0); 16];
    panel_loop!(kp / 8, a, b, acc, |c, x, y| {
        let mut c = c;
        smmla!(c, x, y);
        c
    });
    for p in 0..4 {
        for q in 0..4 {
            let v = acc[4 * p + q];
            let (r, c) = (2 * p, 2 * q);
            out[r * 8 + c] = vgetq_lane_s32::<0>(v);
            out[r * 8 + c + 1] = vgetq_lane_s32::<1>(v);
            out[(r + 1) * 8 + c] = vgetq_lane_s32::<2>(v);
            out[(r + 1) * 8 + c + 1] = vgetq_lane_s32::<3>(v);
        }
    }
}
