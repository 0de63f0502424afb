//! The NEON micro-kernels: the only `unsafe` code of the crate.
//!
//! Each kernel is an `unsafe fn` in [`neon`], [`dotprod`] or [`i8mm`] whose contract is
//! (a) the CPU has the tier's feature and (b) the pointers cover the documented panel sizes.
//! The safe wrappers here establish both: a [`Micro`] can only be built after run-time
//! feature detection, and every wrapper checks the slice lengths before the call.

/// The loop every GEMM micro-kernel shares: `$steps` times, load 64 bytes of each panel
/// as four vectors `a[0..4]`, `b[0..4]` (`vld1q_s8`), set `$acc[4i + j] = $step` with
/// `$c = $acc[4i + j]`, `$x = a[i]`, `$y = b[j]` for the 16 pairs, and advance both panels
/// by 64 bytes. Only the instruction(s) of `$step` differ between tiers.
///
/// Expanded inside the kernels' `unsafe fn`s, whose contracts guarantee `64·$steps`
/// readable bytes at `$a` and at `$b`.
macro_rules! panel_loop {
    ($steps:expr, $a:expr, $b:expr, $acc:ident, |$c:ident, $x:ident, $y:ident| $step:expr) => {{
        let (mut a, mut b) = ($a, $b);
        for _ in 0..$steps {
            // SAFETY: step s reads bytes [64·s, 64·s + 64) of each panel, inside the
            // `64·steps` bytes the expanding kernel's contract guarantees.
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
                    let ($c, $x, $y) = ($acc[4 * i + j], va[i], vb[j]);
                    $acc[4 * i + j] = $step;
                }
            }
            a = a.wrapping_add(64);
            b = b.wrapping_add(64);
        }
    }};
}

mod dotprod;
mod i8mm;
mod neon;

use crate::Tier;

pub(crate) use neon::AddConsts;

/// Granularity of the packed reduction axis: every kernel consumes K in steps of 16 bytes
/// (`i8mm` in two 8-byte halves).
pub(crate) const K_ALIGN: usize = 16;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Kind {
    Neon,
    Dotprod,
    I8mm,
}

/// A GEMM micro-kernel whose CPU feature has been detected.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Micro {
    kind: Kind,
}

impl Micro {
    /// The micro-kernel of `tier`, if this CPU supports it (`Scalar` has none).
    pub(crate) fn for_tier(tier: Tier) -> Option<Micro> {
        let kind = match tier {
            Tier::Scalar => return None,
            Tier::Neon => Kind::Neon,
            Tier::Dotprod => Kind::Dotprod,
            Tier::I8mm => Kind::I8mm,
        };
        tier.is_supported().then_some(Micro { kind })
    }

    /// Rows of A per tile (and per packed A panel).
    pub(crate) const fn mr(self) -> usize {
        match self.kind {
            Kind::Neon | Kind::Dotprod => 4,
            Kind::I8mm => 8,
        }
    }

    /// Rows of B (output channels) per tile (and per packed B panel).
    pub(crate) const fn nr(self) -> usize {
        match self.kind {
            Kind::Neon | Kind::Dotprod => 4,
            Kind::I8mm => 8,
        }
    }

    /// Bytes of one row that are stored together in a panel before the next row's
    /// (16: one q-register per row; 8: `smmla` takes two rows × 8 bytes per register).
    pub(crate) const fn chunk(self) -> usize {
        match self.kind {
            Kind::Neon | Kind::Dotprod => 16,
            Kind::I8mm => 8,
        }
    }

    /// One `mr × nr` tile: `out[i·nr + j] = Σ_k a_i[k]·b_j[k]` over `kp` bytes, exactly in
    /// `i32` (callers keep `|sum| ≤ 2^31 − 1`; every operand may be any `i8`).
    ///
    /// `a` and `b` are packed panels (see `pack.rs`) of `mr·kp` and `nr·kp` bytes.
    /// `b_no_min`: no byte of `b` is −128, which lets the plain-NEON tier pair two
    /// products in an `i16` lane (`|x·w| ≤ 128·127`, so two fit) before widening.
    #[inline]
    pub(crate) fn tile(self, kp: usize, a: &[i8], b: &[i8], b_no_min: bool, out: &mut [i32]) {
        assert!(
            kp.is_multiple_of(K_ALIGN),
            "kp = {kp} is not a multiple of {K_ALIGN}"
        );
        assert!(a.len() >= self.mr() * kp, "A panel too short");
        assert!(b.len() >= self.nr() * kp, "B panel too short");
        assert!(out.len() >= self.mr() * self.nr(), "tile output too short");
        let (a, b) = (a.as_ptr(), b.as_ptr());
        match self.kind {
            Kind::Neon => {
                let out: &mut [i32; 16] = (&mut out[..16]).try_into().expect("16 lanes");
                if b_no_min {
                    // SAFETY: NEON is baseline on aarch64; `a`/`b` cover 4·kp bytes each
                    // (checked above) and kp is a multiple of 16.
                    unsafe { neon::tile_4x4_paired(kp, a, b, out) }
                } else {
                    // SAFETY: as above.
                    unsafe { neon::tile_4x4(kp, a, b, out) }
                }
            }
            Kind::Dotprod => {
                let out: &mut [i32; 16] = (&mut out[..16]).try_into().expect("16 lanes");
                // SAFETY: a `Micro` of this kind exists only if `dotprod` was detected
                // (`for_tier`); the panels cover 4·kp bytes each (checked above).
                unsafe { dotprod::tile_4x4(kp, a, b, out) }
            }
            Kind::I8mm => {
                let out: &mut [i32; 64] = (&mut out[..64]).try_into().expect("64 lanes");
                // SAFETY: a `Micro` of this kind exists only if `i8mm` was detected; the
                // panels cover 8·kp bytes each (checked above), kp is a multiple of 16.
                unsafe { i8mm::tile_8x8(kp, a, b, out) }
            }
        }
    }
}

/// Depthwise accumulation for one output position over the channels `0..c16` (a multiple
/// of 16): `acc[c] = Σ_(xo, wo) ∈ taps (x[xo + c] − zp) · w[wo + c]`, exactly in `i32`.
/// 8-bit weights; callers keep the sum within `i32` (true for every legal K).
pub(crate) fn depthwise_w8(
    x: &[i8],
    w: &[i8],
    taps: &[(usize, usize)],
    zp: i32,
    c16: usize,
    acc: &mut [i32],
) {
    assert!(c16.is_multiple_of(16) && acc.len() >= c16);
    assert!((-128..=127).contains(&zp));
    for &(xo, wo) in taps {
        assert!(
            xo + c16 <= x.len() && wo + c16 <= w.len(),
            "tap out of bounds"
        );
    }
    // SAFETY: NEON is baseline on aarch64; every load `x[xo + c .. xo + c + 16]`,
    // `w[wo + c .. wo + c + 16]` with `c + 16 ≤ c16` is in bounds (checked above), as is
    // every store `acc[c .. c + 16]`.
    unsafe {
        neon::depthwise_w8(
            x.as_ptr(),
            w.as_ptr(),
            taps,
            zp as i16,
            c16,
            acc.as_mut_ptr(),
        )
    }
}

/// As [`depthwise_w8`] for 16-bit weights; callers keep the tap count ≤ 256 so the `i32`
/// partial sums stay exact (`256·255·32767 < 2^31`).
pub(crate) fn depthwise_w16(
    x: &[i8],
    w: &[i16],
    taps: &[(usize, usize)],
    zp: i32,
    c16: usize,
    acc: &mut [i32],
) {
    assert!(c16.is_multiple_of(16) && acc.len() >= c16);
    assert!((-128..=127).contains(&zp));
    assert!(taps.len() <= 256, "too many taps for i32 partial sums");
    for &(xo, wo) in taps {
        assert!(
            xo + c16 <= x.len() && wo + c16 <= w.len(),
            "tap out of bounds"
        );
    }
    // SAFETY: as in `depthwise_w8`, with `w` read as 16 `i16` per step.
    unsafe {
        neon::depthwise_w16(
            x.as_ptr(),
            w.as_ptr(),
            taps,
            zp as i16,
            c16,
            acc.as_mut_ptr(),
        )
    }
}

/// The residual add on the first `len / 8 · 8` elements of `out` (the caller finishes the
/// tail with the reference). Returns how many elements it wrote: 0 when the constants
/// break the kernel's `i32` bound on the rescaled inputs (never for a derived plan), so the
/// caller runs the reference on everything.
pub(crate) fn add(a: &[i8], b: &[i8], q: AddConsts, out: &mut [i8]) -> usize {
    const _: () = assert!(lastmile_core::quant::ADD_LEFT_SHIFT == 20);
    let len = out.len();
    assert!(a.len() >= len && b.len() >= len, "add: short input");
    for m in [q.m_a, q.m_b, q.m_o] {
        if !(1..=62).contains(&m.1) {
            return 0;
        }
    }
    // |M(v)| is largest at |v| = 255·2^20 (M is monotone): the kernel's sum must fit i32.
    let bound = |(multiplier, shift): (i32, u32)| {
        let m = lastmile_core::quant::QuantMultiplier { multiplier, shift };
        let v = 255i64 << 20;
        m.apply(v).abs().max(m.apply(-v).abs())
    };
    if bound(q.m_a) + bound(q.m_b) > i32::MAX as i64 || q.m_a.0 < 0 || q.m_b.0 < 0 {
        return 0;
    }
    assert!((-128..=127).contains(&q.zp_a) && (-128..=127).contains(&q.zp_b));
    let main = len / 8 * 8;
    // SAFETY: NEON is baseline on aarch64; `main ≤ len` is a multiple of 8 and within all
    // three slices (asserted above); shifts are in 1..=62 and the i32 bound holds (checked).
    unsafe { neon::add(main, a.as_ptr(), b.as_ptr(), q, out.as_mut_ptr()) };
    main
}

/// Checks that every `o + c16` is within `len`.
fn check_offsets(offs: &[usize], c16: usize, len: usize) {
    assert!(c16.is_multiple_of(16));
    for &o in offs {
        assert!(
            o.checked_add(c16).is_some_and(|e| e <= len),
            "tap out of bounds"
        );
    }
}

/// `out[c] = max(i8::MIN, max_(o ∈ offs) x[o + c])` for `c < c16` (a multiple of 16).
pub(crate) fn max_taps(x: &[i8], offs: &[usize], c16: usize, out: &mut [i8]) {
    check_offsets(offs, c16, x.len());
    assert!(out.len() >= c16);
    // SAFETY: NEON is baseline on aarch64; every load `x[o + c .. o + c + 16]` with
    // `c + 16 ≤ c16` is in bounds (checked above), as is every store `out[c .. c + 16]`.
    unsafe { neon::max_taps(x.as_ptr(), offs, c16, out.as_mut_ptr()) }
}

/// `acc[c] = Σ_(o ∈ offs) x[o + c]` exactly, for `c < c16` (a multiple of 16).
pub(crate) fn sum_taps(x: &[i8], offs: &[usize], c16: usize, acc: &mut [i32]) {
    check_offsets(offs, c16, x.len());
    assert!(acc.len() >= c16);
    assert!(offs.len() < 1 << 24, "too many taps for i32 sums");
    // SAFETY: NEON is baseline on aarch64; every load `x[o + c .. o + c + 16]` with
    // `c + 16 ≤ c16` is in bounds (checked above), as is every store `acc[c .. c + 16]`.
    unsafe { neon::sum_taps(x.as_ptr(), offs, c16, acc.as_mut_ptr()) }
}
