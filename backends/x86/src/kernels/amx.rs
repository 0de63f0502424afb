//! Intel AMX (`amx-tile` + `amx-int8`): the GEMM tile on tile registers.
//!
//! `tdpbusd tmmC, tmmA, tmmB` adds, for every row `m < 16` and column `n < 16` of an `i32`
//! tile, `Σ_{k<16} Σ_{j<4} u8 A[m][4k+j] · s8 B[k][4n+j]` — the same `u8 × s8` 4-way dot
//! product as `vpdpbusd`, 16 × 16 × 64 of them per instruction, accumulated **without
//! saturation** (wrapping; checked on this machine by overflowing an accumulator on
//! purpose). So every exactness argument of the VNNI tiers (`crate::gemm`) holds unchanged.
//!
//! The layouts already match: a VNNI weight panel (16 channels, one dword of 4 `k` per
//! channel per group) is, 16 groups at a time, exactly a `B` tile (16 rows of 64 bytes,
//! stride 64); an activation row's 16 groups are one `A` tile row, with any row stride —
//! so the direct convolution's in-place windows load straight into `A`.
//!
//! One call computes `rows ≤ 16` rows × `nb ≤ 4` panels over `nseg` segments of `kg`
//! groups each (`kg` a multiple of 16): `C` tiles in `tmm0..tmm3`, `A` in `tmm4`, `B`
//! rotating through `tmm5..tmm7`. It loads its own tile configuration first and releases
//! the tile state at the end, so it never depends on state left by other code (another
//! library in the process may use AMX with another configuration).
//!
//! Linux grants AMX state per process on request (`arch_prctl(ARCH_REQ_XCOMP_PERM,
//! XFEATURE_XTILEDATA)`); [`usable`] makes that request once. Rust's AMX intrinsics and
//! feature detection are unstable, so this module uses `cpuid` and inline assembly.

use core::arch::asm;
use core::arch::x86_64::__cpuid_count;
use std::sync::OnceLock;

use super::gemm::RawTile;

/// `arch_prctl` code requesting permission for an extended state component.
#[cfg(target_os = "linux")]
const ARCH_REQ_XCOMP_PERM: libc::c_ulong = 0x1023;
/// The AMX tile data state component.
#[cfg(target_os = "linux")]
const XFEATURE_XTILEDATA: libc::c_ulong = 18;

/// Why AMX cannot run here, or `None` if it can: CPUID must report `amx-tile` and
/// `amx-int8`, and the kernel must grant this process the tile state (asked once).
pub(crate) fn unusable_reason() -> Option<&'static str> {
    static REASON: OnceLock<Option<&'static str>> = OnceLock::new();
    *REASON.get_or_init(|| {
        // Leaf 7 sub-leaf 0 is defined on every x86_64 CPU (zeros where unsupported).
        let leaf7 = __cpuid_count(7, 0);
        let (tile, int8) = (leaf7.edx & (1 << 24) != 0, leaf7.edx & (1 << 25) != 0);
        if !(tile && int8) {
            return Some("CPU lacks amx-tile, amx-int8");
        }
        request_tile_state()
    })
}

/// Asks Linux for the AMX tile state; the reason on refusal.
#[cfg(target_os = "linux")]
fn request_tile_state() -> Option<&'static str> {
    // SAFETY: a plain system call with integer arguments; it only changes which extended
    // states the kernel lets this process use.
    let granted = unsafe {
        libc::syscall(
            libc::SYS_arch_prctl,
            ARCH_REQ_XCOMP_PERM,
            XFEATURE_XTILEDATA,
        )
    } == 0;
    (!granted).then_some("the kernel refused the AMX tile state (ARCH_REQ_XCOMP_PERM)")
}

/// Other systems: the permission request is Linux's; not implemented elsewhere.
#[cfg(not(target_os = "linux"))]
fn request_tile_state() -> Option<&'static str> {
    Some("AMX tile state is requested only on Linux")
}

/// The 64-byte tile configuration (palette 1): `C` tiles `tmm0..3` and `A` (`tmm4`) with
/// `rows` rows, `B` tiles (`tmm5..7`) with 16; every row 64 bytes.
#[repr(C, align(64))]
struct TileConfig([u8; 64]);

impl TileConfig {
    fn new(rows: usize) -> TileConfig {
        let mut c = [0u8; 64];
        c[0] = 1; // palette
        for t in 0..8 {
            c[16 + 2 * t] = 64; // bytes per row (u16 little endian)
            c[48 + t] = if t < 5 { rows as u8 } else { 16 };
        }
        TileConfig(c)
    }
}

/// The AMX tile.
///
/// # Safety
/// * CPU: AMX-TILE and AMX-INT8, with the tile state granted ([`unusable_reason`] is
///   `None`).
/// * Shape: `1 ≤ rows ≤ 16`, `1 ≤ nb ≤ 4`, `t.kg` a multiple of 16.
/// * Memory: the contract of `super::gemm::tile` for `MR = rows`, `NB = nb` with 16 lanes:
///   for `i < rows`, `s < nseg`, bytes `a + i·a_stride + segs[s] .. + kg·4` readable; for
///   `j < nb`, bytes `w + j·panel_stride .. + nseg·kg·64` readable; for `i < rows` the
///   `nb·16` `i32` at `out + i·out_stride` writable.
pub(super) unsafe fn tile(t: RawTile, rows: usize, nb: usize) {
    let cfg = TileConfig::new(rows);
    let a_stride = t.a_stride;
    let out_bytes = t.out_stride * 4;
    // SAFETY: (all blocks) CPU and tile state: function contract. `ldtilecfg` reads the
    // 64-byte config above. Every `tileloadd tmm4` reads `rows` rows of 64 bytes at
    // `a + segs[s] + 64·q + i·a_stride` for `q < kg/16`: inside row `i`'s segment `s`
    // (`kg·4` bytes). Every `tileloadd` of B reads 16 rows of 64 bytes at
    // `w + j·panel_stride + (s·kg + 16q)·64`, stride 64: groups `s·kg + 16q ..+16` of
    // panel `j`, inside its `nseg·kg` groups. `tilestored` of `C_j` writes `rows` rows of
    // 64 bytes at `out + 16j` (i32), stride `out_stride` i32: the tile's output rows.
    // The config is loaded in this call and released at its end.
    unsafe {
        asm!("ldtilecfg [{}]", in(reg) cfg.0.as_ptr(), options(nostack, readonly));
        asm!(
            "tilezero tmm0",
            "tilezero tmm1",
            "tilezero tmm2",
            "tilezero tmm3",
            options(nostack, nomem)
        );
        let mut wq = t.w;
        for s in 0..t.nseg {
            let mut aq = t.a.add(*t.segs.add(s));
            for _ in 0..t.kg / 16 {
                asm!("tileloadd tmm4, [{a} + {st}*1]", a = in(reg) aq, st = in(reg) a_stride,
                    options(nostack, readonly));
                macro_rules! panel {
                    ($j:literal, $b:literal, $c:literal) => {
                        if $j < nb {
                            asm!(concat!("tileloadd ", $b, ", [{w} + {st}*1]"),
                                w = in(reg) wq.add($j * t.panel_stride), st = in(reg) 64usize,
                                options(nostack, readonly));
                            asm!(concat!("tdpbusd ", $c, ", tmm4, ", $b),
                                options(nostack, nomem));
                        }
                    };
                }
                panel!(0, "tmm5", "tmm0");
                panel!(1, "tmm6", "tmm1");
                panel!(2, "tmm7", "tmm2");
                panel!(3, "tmm5", "tmm3");
                aq = aq.add(64);
                wq = wq.add(16 * 64);
            }
        }
        macro_rules! store {
            ($j:literal, $c:literal) => {
                if $j < nb {
                    asm!(concat!("tilestored [{o} + {st}*1], ", $c),
                        o = in(reg) t.out.add($j * 16), st = in(reg) out_bytes,
                        options(nostack));
                }
            };
        }
        store!(0, "tmm0");
        store!(1, "tmm1");
        store!(2, "tmm2");
        store!(3, "tmm3");
        asm!("tilerelease", options(nostack, nomem));
    }
}
