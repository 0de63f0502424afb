//! Kernel-level entry points, for tests and benches: the GEMM path of one tier without the
//! graph around it.

use lastmile_backend_cpu_ref::kernels::Weights;
use lastmile_core::backend::BackendError;

use crate::{Neon, Tier};

/// `out[i·n + c] = Σ_k (x[i·k + kk] − zp) · w[c·k + kk]` for `i < m`, `c < n`, computed by
/// `tier`'s packing, micro-kernel and zero-point / byte-split recombination (exactly as
/// conv2d and linear use them). `zp ∈ [−128, 127]`; 8-bit weights must avoid −128 (the
/// spec's symmetric range). `Unavailable` if this CPU (or build) cannot run `tier`.
pub fn dot_products(
    tier: Tier,
    x: &[i8],
    m: usize,
    zp: i32,
    w: Weights<'_>,
    n: usize,
    k: usize,
) -> Result<Vec<i64>, BackendError> {
    Neon::with_tier(tier)?;
    let wlen = match w {
        Weights::I8(v) => v.len(),
        Weights::I16(v) => v.len(),
    };
    if x.len() != m * k || wlen != n * k || !(-128..=127).contains(&zp) {
        return Err(BackendError::InvalidInput(format!(
            "dot_products: x has {} codes (m·k = {}), w has {wlen} (n·k = {}), zp = {zp}",
            x.len(),
            m * k,
            n * k
        )));
    }
    if let Weights::I8(v) = w
        && v.contains(&i8::MIN)
    {
        return Err(BackendError::InvalidInput(
            "dot_products: 8-bit weights must be in [-127, 127] (the spec's symmetric range)"
                .into(),
        ));
    }
    #[cfg(target_arch = "aarch64")]
    {
        if let Some(micro) = crate::arch::Micro::for_tier(tier) {
            return Ok(gemm_path(micro, x, m, zp, w, n, k));
        }
    }
    // The scalar tier: the reference's arithmetic.
    let mut out = vec![0i64; m * n];
    for i in 0..m {
        for c in 0..n {
            out[i * n + c] = (0..k)
                .map(|kk| {
                    let wv = match w {
                        Weights::I8(v) => v[c * k + kk] as i64,
                        Weights::I16(v) => v[c * k + kk] as i64,
                    };
                    (x[i * k + kk] as i64 - zp as i64) * wv
                })
                .sum();
        }
    }
    Ok(out)
}

#[cfg(target_arch = "aarch64")]
fn gemm_path(
    micro: crate::arch::Micro,
    x: &[i8],
    m: usize,
    zp: i32,
    w: Weights<'_>,
    n: usize,
    k: usize,
) -> Vec<i64> {
    use crate::pack::{PackedB, PanelShape, pack_b8, pack_b16};
    let mut b = PackedB::default();
    let mut scratch = Vec::new();
    let shape = PanelShape::b(micro, k);
    let wide = match w {
        Weights::I8(v) => {
            pack_b8(&mut b, shape, v, n, k, &mut scratch);
            false
        }
        Weights::I16(v) => {
            pack_b16(&mut b, shape, v, n, k, &mut scratch);
            true
        }
    };
    let gemm = crate::gemm::Gemm {
        micro,
        wide,
        b: &b,
        n,
        k,
    };
    let mut out = vec![0i64; m * n];
    gemm.run(
        m,
        zp,
        &mut crate::gemm::Scratch::default(),
        |i, row| row[..k].copy_from_slice(&x[i * k..(i + 1) * k]),
        |i, c, acc| out[i * n + c] = acc,
    );
    out
}
