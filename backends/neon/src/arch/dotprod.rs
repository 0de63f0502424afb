//! `FEAT_DotProd` kernels: `sdot` through inline `asm!` (the `vdotq_s32` intrinsic is
//! unstable on Rust 1.95, rust-lang/rust#117224).

use core::arch::aarch64::*;
use core::arch::asm;

/// `acc += sdot(a, b)`: lane `l` gains `Σ_{t<4} a[4l+t]·b[4l+t]` (16 MACs).
macro_rules! sdot {
    ($acc:expr, $a:expr, $b:expr) => {
        // SAFETY: `sdot` only reads and writes the three vector registers; it is expanded
        // only inside `#[target_feature(enable = "dotprod")]` functions, whose callers
        // guarantee the CPU has FEAT_DotProd.
        unsafe {
            asm!(
                "sdot {acc:v}.4s, {a:v}.16b, {b:v}.16b",
                acc = inout(vreg) $acc,
                a = in(vreg) $a,
                b = in(vreg) $b,
                options(pure, nomem, nostack, preserves_flags)
            )
        }
    };
}

/// `out[4i + j] = Σ_k a_i[k]·b_j[k]` for a 4×4 tile: one `sdot` per 16 MACs, the four
/// lanes of each accumulator summed once at the end.
///
/// # Safety
///
/// The CPU has FEAT_DotProd; `a` and `b` point to `4·kp` readable bytes each, packed in
/// 16-byte chunks per row, `kp % 16 == 0`. Any byte values.
#[target_feature(enable = "neon,dotprod")]
#[inline(never)]
pub(super) unsafe fn tile_4x4(kp: usize, a: *const i8, b: *const i8, out: &mut [i32; 16]) {
    let mut acc = [vdupq_n_s32(0); 16];
    panel_loop!(kp / 16, a, b, acc, |c, x, y| {
        let mut c = c;
        sdot!(c, x, y);
        c
    });
    for (o, v) in out.iter_mut().zip(acc) {
        *o = vaddvq_s32(v);
    }
}
