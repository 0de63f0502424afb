//! # lastmile-backend-neon — the aarch64 NEON backend
//!
//! Bit-exact with the reference (`cpu-ref`) on every tier, with NEON kernels for every op:
//! per tier for the ops that carry the multiply-accumulates (**conv2d** incl. grouped,
//! **depthwise conv**, **linear**), and one plain-NEON set for the **residual add** (exact
//! `QuantMultiplier` rescaling in `i64` lanes via `smull` + `srshl`), **max pool** (`smax`),
//! **average** and **global average pool** (exact lane sums; the rounded division stays
//! scalar). Channel tails (`C mod 16`) and add tails (`len mod 8`) use the reference
//! arithmetic ([`lastmile_backend_cpu_ref::kernels`]); flatten is a copy. Every
//! requantization constant comes from [`lastmile_core::plan::Plan::derive`].
//!
//! ## Tiers
//!
//! | [`Tier`] | needs | conv/linear inner loop | MACs per arithmetic instruction |
//! |---|---|---|---|
//! | `scalar` | — | the reference kernels (for A/B runs) | — |
//! | `neon` | aarch64 (always) | `smull` + `smlal2` + `sadalp` (8w8a), `smull`/`smull2` + 2×`sadalp` (16w8a) | 16/3, 16/4 |
//! | `dotprod` | `FEAT_DotProd` (Cortex-A55/A76+) | `sdot` (inline `asm!`: `vdotq_s32` is unstable on Rust 1.95) | 16 |
//! | `i8mm` | `FEAT_I8MM` (Cortex-A510/A710+, Neoverse V1/N2) | `smmla` (inline `asm!`) | 32 |
//!
//! [`Neon::best`] picks the highest tier `std::arch::is_aarch64_feature_detected!` reports;
//! the environment variable **`LASTMILE_NEON_TIER=scalar|neon|dotprod|i8mm`** overrides it
//! (for qemu runs, A/B benches and tests). Depthwise convolution vectorizes across channels
//! with widening NEON multiplies on every tier (the dot-product instructions reduce along a
//! contiguous axis, which a 3×3 depthwise tap set does not have).
//!
//! ## Exactness without a wide accumulator
//!
//! The spec accumulates `Σ (x − zp)·w` with `x − zp ∈ [−255, 255]`, which does not fit
//! `s8`, the operand type of `smull`/`sdot`/`smmla`. The kernels feed the raw code `x` and
//! fold the zero point in afterwards, per output channel `c`:
//! `Σ (x − zp)·w_c = Σ x·w_c − zp·Σ w_c` (`Σ w_c` is computed when the weights are packed;
//! padded conv taps hold `x = zp`, so they cancel exactly). 16w8a weights are split into
//! bytes, `w = 256·hi + (lo − 128) + 128` with `hi, lo − 128 ∈ [−128, 127]`, so
//! `Σ x·w = 256·Σ x·hi + Σ x·(lo − 128) + 128·Σ x`: two int8 dot products and a row sum,
//! each bounded by `2^30` in `i32` for every legal K (≤ 65 536), recombined in `i64`.
//! See `docs/targets.md`.
//!
//! On other architectures the crate is an empty shell: the constructors return
//! [`BackendError::Unavailable`]`("not an aarch64 build")`.
//!
//! `unsafe` lives only in `src/arch/` (the kernels), each block with a `// SAFETY:` comment.
#![deny(unsafe_op_in_unsafe_fn)]
#![deny(clippy::undocumented_unsafe_blocks)]
#![warn(missing_docs)]

use core::fmt;

use lastmile_core::backend::{Backend, BackendError, Capabilities, PreparedModel};
use lastmile_core::model::QuantModel;

#[cfg(target_arch = "aarch64")]
mod arch;
#[cfg(target_arch = "aarch64")]
mod depthwise;
#[cfg(target_arch = "aarch64")]
mod eltwise;
#[cfg(target_arch = "aarch64")]
mod gemm;
pub mod kernels;
#[cfg(target_arch = "aarch64")]
mod pack;
#[cfg(target_arch = "aarch64")]
mod prepared;

/// Environment variable that pins the tier (`scalar`, `neon`, `dotprod`, `i8mm`).
pub const ENV_TIER: &str = "LASTMILE_NEON_TIER";

/// A kernel tier of this backend, lowest first.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Tier {
    /// The reference kernels (no SIMD): a baseline for A/B comparisons.
    Scalar,
    /// Baseline AArch64 Advanced SIMD: `smull`/`smlal2`/`sadalp`.
    Neon,
    /// `FEAT_DotProd`: `sdot`, 16 MACs per instruction.
    Dotprod,
    /// `FEAT_I8MM`: `smmla`, 32 MACs per instruction.
    I8mm,
}

impl Tier {
    /// Every tier, lowest first.
    pub const ALL: [Tier; 4] = [Tier::Scalar, Tier::Neon, Tier::Dotprod, Tier::I8mm];

    /// Stable name (what `LASTMILE_NEON_TIER` takes, and the backend's `tier()`).
    pub const fn name(self) -> &'static str {
        match self {
            Tier::Scalar => "scalar",
            Tier::Neon => "neon",
            Tier::Dotprod => "dotprod",
            Tier::I8mm => "i8mm",
        }
    }

    /// Parses a tier name.
    pub fn parse(s: &str) -> Option<Tier> {
        Tier::ALL.into_iter().find(|t| t.name() == s.trim())
    }

    /// Whether this CPU (or qemu `-cpu` model) can run the tier.
    pub fn is_supported(self) -> bool {
        #[cfg(target_arch = "aarch64")]
        {
            match self {
                Tier::Scalar | Tier::Neon => true,
                Tier::Dotprod => std::arch::is_aarch64_feature_detected!("dotprod"),
                Tier::I8mm => std::arch::is_aarch64_feature_detected!("i8mm"),
            }
        }
        #[cfg(not(target_arch = "aarch64"))]
        {
            false
        }
    }

    /// The CPU feature the tier needs, for messages.
    #[cfg_attr(not(target_arch = "aarch64"), allow(dead_code))]
    const fn feature(self) -> &'static str {
        match self {
            Tier::Scalar | Tier::Neon => "asimd",
            Tier::Dotprod => "dotprod (FEAT_DotProd)",
            Tier::I8mm => "i8mm (FEAT_I8MM)",
        }
    }
}

impl fmt::Display for Tier {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// Why this build cannot run NEON kernels at all.
#[cfg(not(target_arch = "aarch64"))]
const NOT_AARCH64: &str = "not an aarch64 build";

/// The NEON backend at one tier.
#[derive(Clone, Copy, Debug)]
pub struct Neon {
    tier: Tier,
}

impl Neon {
    /// The backend's registry name.
    pub const NAME: &'static str = "neon";

    /// The tier named by `LASTMILE_NEON_TIER`, if set: `Ok(None)` when unset,
    /// an error for an unknown name.
    pub fn tier_from_env() -> Result<Option<Tier>, BackendError> {
        match std::env::var(ENV_TIER) {
            Err(_) => Ok(None),
            Ok(v) if v.trim().is_empty() => Ok(None),
            Ok(v) => Tier::parse(&v).map(Some).ok_or_else(|| {
                BackendError::Unavailable(format!(
                    "{ENV_TIER}={v:?} is not a tier (scalar, neon, dotprod, i8mm)"
                ))
            }),
        }
    }

    /// The best tier this CPU supports, or the one `LASTMILE_NEON_TIER` pins (an error if
    /// this CPU cannot run it). Unavailable on other architectures.
    pub fn best() -> Result<Neon, BackendError> {
        #[cfg(not(target_arch = "aarch64"))]
        {
            Err(BackendError::Unavailable(NOT_AARCH64.into()))
        }
        #[cfg(target_arch = "aarch64")]
        {
            match Self::tier_from_env()? {
                Some(t) => Self::with_tier(t).map_err(|e| match e {
                    BackendError::Unavailable(why) => {
                        BackendError::Unavailable(format!("{ENV_TIER}={t}: {why}"))
                    }
                    e => e,
                }),
                None => {
                    let tier = *Self::available_tiers()
                        .last()
                        .expect("neon is baseline on aarch64");
                    Ok(Neon { tier })
                }
            }
        }
    }

    /// The backend pinned to `tier`; `Unavailable` if this CPU cannot run it.
    pub fn with_tier(tier: Tier) -> Result<Neon, BackendError> {
        #[cfg(not(target_arch = "aarch64"))]
        {
            let _ = tier;
            Err(BackendError::Unavailable(NOT_AARCH64.into()))
        }
        #[cfg(target_arch = "aarch64")]
        {
            if tier.is_supported() {
                Ok(Neon { tier })
            } else {
                Err(BackendError::Unavailable(format!(
                    "this CPU lacks {} for the {tier} tier",
                    tier.feature()
                )))
            }
        }
    }

    /// Every tier this CPU supports, lowest first (empty on other architectures).
    pub fn available_tiers() -> Vec<Tier> {
        Tier::ALL.into_iter().filter(|t| t.is_supported()).collect()
    }

    /// The tiers tests should run: [`Neon::available_tiers`], narrowed to the one
    /// `LASTMILE_NEON_TIER` names when it is set (so `cargo xtask test` runs each tier once).
    pub fn tiers_under_test() -> Vec<Tier> {
        let env = Self::tier_from_env().ok().flatten();
        Self::available_tiers()
            .into_iter()
            .filter(|t| env.is_none_or(|e| e == *t))
            .collect()
    }

    /// For tests: the backend at `tier`, or why it is not under test here (not supported by
    /// this CPU, or another tier pinned by `LASTMILE_NEON_TIER`).
    pub fn under_test(tier: Tier) -> Result<Neon, BackendError> {
        let neon = Self::with_tier(tier)?;
        match Self::tier_from_env()? {
            Some(e) if e != tier => Err(BackendError::Unavailable(format!(
                "{ENV_TIER}={e} pins another tier"
            ))),
            _ => Ok(neon),
        }
    }

    /// The tier this backend runs (`Backend::tier` gives its name).
    pub fn kernel_tier(&self) -> Tier {
        self.tier
    }
}

impl Backend for Neon {
    fn name(&self) -> &str {
        Self::NAME
    }

    fn tier(&self) -> &str {
        self.tier.name()
    }

    fn capabilities(&self) -> Capabilities {
        use lastmile_core::backend::{Exactness, WeightUpdates};
        use lastmile_core::graph::OpKind;
        use lastmile_core::quant::WeightBits;
        Capabilities {
            ops: OpKind::ALL.to_vec(),
            weight_bits: vec![WeightBits::W8, WeightBits::W16],
            weight_updates: if self.tier == Tier::Scalar {
                WeightUpdates::ReadsHostMemory
            } else {
                WeightUpdates::UploadsEveryForward {
                    cost: "re-packs trainable conv/linear weights, one pass; frozen ones once"
                        .into(),
                }
            },
            exactness: Exactness::BitExact,
            threads: 1,
        }
    }

    fn prepare(&self, model: &QuantModel) -> Result<Box<dyn PreparedModel>, BackendError> {
        #[cfg(target_arch = "aarch64")]
        {
            if self.tier == Tier::Scalar {
                return Ok(Box::new(lastmile_backend_cpu_ref::Prepared::new(model)?));
            }
            Ok(Box::new(prepared::prepare(model, self.tier)?))
        }
        #[cfg(not(target_arch = "aarch64"))]
        {
            let _ = model;
            Err(BackendError::Unavailable(NOT_AARCH64.into()))
        }
    }
}
