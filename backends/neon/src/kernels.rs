//! Kernel-level entry points, for tests and benches: the GEMM path, the residual add and the
//! pools of one tier without the graph around it.

use lastmile_backend_cpu_ref::kernels::{self as reference, AddQuant, Weights};
use lastmile_core::backend::BackendError;
use lastmile_core::graph::Pool2d;

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

/// `tier`'s residual add (the reference's for `scalar`), on `a.len()` elements.
/// `Unavailable` if this CPU (or build) cannot run `tier`.
pub fn add(tier: Tier, q: AddQuant, a: &[i8], b: &[i8]) -> Result<Vec<i8>, BackendError> {
    Neon::with_tier(tier)?;
    if a.len() != b.len() || !(-128..=127).contains(&q.zp_a) || !(-128..=127).contains(&q.zp_b) {
        return Err(BackendError::InvalidInput(format!(
            "add: {} and {} codes, zero points {} and {}",
            a.len(),
            b.len(),
            q.zp_a,
            q.zp_b
        )));
    }
    let mut y = vec![0i8; a.len()];
    #[cfg(target_arch = "aarch64")]
    {
        if tier != Tier::Scalar {
            crate::eltwise::add(q, a, b, &mut y);
            return Ok(y);
        }
    }
    reference::add(q, a, b, &mut y);
    Ok(y)
}

/// `tier`'s max (`max = true`) or average pool over NHWC `x` of per-sample shape
/// `in_shape = [h, w, c]`, `n` samples (the reference's for `scalar`). The pool attributes must
/// be valid (padding < kernel, output at least 1×1). `Unavailable` if this CPU (or build)
/// cannot run `tier`.
pub fn pool2d(
    tier: Tier,
    p: &Pool2d,
    x: &[i8],
    in_shape: [usize; 3],
    n: usize,
    max: bool,
) -> Result<Vec<i8>, BackendError> {
    Neon::with_tier(tier)?;
    let [h, w, c] = in_shape;
    let [pt, pl, pb, pr] = p.padding;
    let valid = (0..2).all(|d| p.kernel[d] > 0 && p.stride[d] > 0)
        && pt.max(pb) < p.kernel[0]
        && pl.max(pr) < p.kernel[1]
        && h + pt + pb >= p.kernel[0]
        && w + pl + pr >= p.kernel[1]
        && x.len() == n * h * w * c;
    if !valid {
        return Err(BackendError::InvalidInput(format!(
            "pool2d: {p:?} on {in_shape:?} × {n} with {} codes",
            x.len()
        )));
    }
    let out = [
        (h + pt + pb - p.kernel[0]) / p.stride[0] + 1,
        (w + pl + pr - p.kernel[1]) / p.stride[1] + 1,
        c,
    ];
    let mut y = vec![0i8; n * out.iter().product::<usize>()];
    #[cfg(target_arch = "aarch64")]
    {
        if tier != Tier::Scalar {
            let mut scratch = crate::eltwise::Scratch::default();
            crate::eltwise::pool2d(p, x, &in_shape, &out, n, max, &mut y, &mut scratch);
            return Ok(y);
        }
    }
    reference::pool2d(p, x, &in_shape, &out, n, max, &mut y);
    Ok(y)
}

/// `tier`'s global average pool over NHWC `x` of per-sample shape `[h, w, c]`, `n` samples
/// (the reference's for `scalar`). `Unavailable` if this CPU (or build) cannot run `tier`.
pub fn global_avg_pool(
    tier: Tier,
    x: &[i8],
    in_shape: [usize; 3],
    n: usize,
) -> Result<Vec<i8>, BackendError> {
    Neon::with_tier(tier)?;
    if x.len() != n * in_shape.iter().product::<usize>() || in_shape[0] * in_shape[1] == 0 {
        return Err(BackendError::InvalidInput(format!(
            "global_avg_pool: {in_shape:?} × {n} with {} codes",
            x.len()
        )));
    }
    let mut y = vec![0i8; n * in_shape[2]];
    #[cfg(target_arch = "aarch64")]
    {
        if tier != Tier::Scalar {
            let mut scratch = crate::eltwise::Scratch::default();
            crate::eltwise::global_avg_pool(x, &in_shape, n, &mut y, &mut scratch);
            return Ok(y);
        }
    }
    reference::global_avg_pool(x, &in_shape, n, &mut y);
    Ok(y)
}
