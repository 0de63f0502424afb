//! # lastmile-backend-x86 — SIMD kernels for x86_64, bit-exact with `cpu-ref`
//!
//! One backend, several **tiers** chosen at run time:
//!
//! | tier | needs | dot product |
//! |---|---|---|
//! | `avx512-vnni` | AVX-512 F/BW/VL + AVX512-VNNI | `vpdpbusd zmm`: 64 `u8×s8` MACs per instruction |
//! | `avx-vnni` | AVX2 + AVX-VNNI | `vpdpbusd ymm` (VEX): 32 MACs per instruction |
//! | `avx2` | AVX2 | `vpmaddwd ymm` on `i16`: 16 MACs per instruction |
//! | `scalar` | — | the `cpu-ref` kernels |
//!
//! [`X86::best`] picks the first tier of that list the CPU supports; the environment
//! variable [`ENV_TIER`] (`LASTMILE_X86_TIER=scalar|avx2|avx-vnni|avx512-vnni`) forces
//! one (an unsupported one is [`BackendError::Unavailable`], never a fallback).
//! [`ENV_THREADS`] (`LASTMILE_THREADS`) sets worker threads per forward (default 1).
//!
//! Conv2d (groups = 1) and linear run as one blocked GEMM over packed weights;
//! depthwise conv has its own kernel; requantization is vectorized and exact; every
//! other op (grouped conv, add, pools, flatten) calls `cpu-ref`'s kernels. How each tier
//! stays exact — the `u8` offset trick with per-channel corrections, the 16-bit weight
//! split, the `i64` widening — is documented in `gemm` and `docs/backends/x86.md`.
//!
//! Frozen weights are packed at `prepare`; trainable ones are re-packed on every
//! forward (see [`Capabilities::weight_updates`](lastmile_core::Capabilities)).
//!
//! `unsafe` code lives only in the `kernels` module (`#[target_feature]` functions
//! behind a safe, bounds-checked API). On other architectures the crate compiles to a
//! shell whose constructors return `Unavailable("not an x86_64 build")`.
#![deny(unsafe_code)]
#![warn(missing_docs)]

use core::fmt;
use core::str::FromStr;

use lastmile_core::backend::{
    Backend, BackendError, Capabilities, Exactness, PreparedModel, WeightUpdates,
};
use lastmile_core::graph::OpKind;
use lastmile_core::model::QuantModel;
use lastmile_core::quant::WeightBits;

#[cfg(target_arch = "x86_64")]
mod depthwise;
#[cfg(target_arch = "x86_64")]
mod direct;
#[cfg(target_arch = "x86_64")]
mod gather;
#[cfg(target_arch = "x86_64")]
mod gemm;
#[cfg(target_arch = "x86_64")]
#[allow(unsafe_code)]
mod kernels;
#[cfg(target_arch = "x86_64")]
mod pack;
#[cfg(target_arch = "x86_64")]
mod prepared;
#[cfg(target_arch = "x86_64")]
mod workers;

#[cfg(target_arch = "x86_64")]
pub mod bench_support;

/// Environment variable forcing the tier [`X86::best`] returns.
pub const ENV_TIER: &str = "LASTMILE_X86_TIER";
/// Environment variable setting the worker threads per forward (default 1).
pub const ENV_THREADS: &str = "LASTMILE_THREADS";

/// A kernel tier.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Tier {
    /// The reference kernels (no SIMD).
    Scalar,
    /// AVX2: `i16` multiply-add.
    Avx2,
    /// AVX2 + AVX-VNNI (VEX-encoded `vpdpbusd` on 256-bit registers).
    AvxVnni,
    /// AVX-512 F/BW/VL + AVX512-VNNI.
    Avx512Vnni,
    /// AVX-512 VNNI plus AMX-INT8 tile registers for the GEMM tiles (Linux: the tile
    /// state is requested from the kernel).
    Amx,
}

impl Tier {
    /// Every tier, most preferred first.
    pub const PREFERENCE: [Tier; 5] = [
        Tier::Amx,
        Tier::Avx512Vnni,
        Tier::AvxVnni,
        Tier::Avx2,
        Tier::Scalar,
    ];

    /// The name used by [`ENV_TIER`], the registry and benches.
    pub const fn name(self) -> &'static str {
        match self {
            Tier::Scalar => "scalar",
            Tier::Avx2 => "avx2",
            Tier::AvxVnni => "avx-vnni",
            Tier::Avx512Vnni => "avx512-vnni",
            Tier::Amx => "amx",
        }
    }

    /// One line on how the tier computes (for `lastmile backends`).
    pub const fn description(self) -> &'static str {
        match self {
            Tier::Scalar => "x86_64 build of the reference kernels (no SIMD)",
            Tier::Avx2 => "x86_64 AVX2: vpmaddwd on i16, exact i64 widening for 16w8a; bit-exact",
            Tier::AvxVnni => {
                "x86_64 AVX-VNNI: VEX vpdpbusd ymm with the u8 offset trick; bit-exact"
            }
            Tier::Avx512Vnni => {
                "x86_64 AVX-512 VNNI: vpdpbusd zmm with the u8 offset trick; bit-exact"
            }
            Tier::Amx => {
                "x86_64 AMX-INT8: tdpbusd tiles for conv/linear GEMMs (K per kernel row a \
                 multiple of 64), AVX-512 VNNI elsewhere; bit-exact"
            }
        }
    }

    /// Parses a tier name (case-insensitive; `_` and `-` interchangeable).
    pub fn parse(s: &str) -> Option<Tier> {
        let s = s.trim().to_ascii_lowercase().replace('_', "-");
        Tier::PREFERENCE.into_iter().find(|t| t.name() == s)
    }

    /// Why this tier cannot run here, or `None` if it can.
    pub fn unavailable_reason(self) -> Option<String> {
        #[cfg(target_arch = "x86_64")]
        {
            let missing = match self.isa() {
                None => return None,
                Some(isa) => isa.missing_features(),
            };
            if self == Tier::Amx && missing.is_empty() {
                let why = kernels::Token::amx_unusable_reason();
                return why.map(|why| format!("{}: {why}", self.name()));
            }
            if missing.is_empty() {
                None
            } else {
                Some(format!("{}: CPU lacks {}", self.name(), missing.join(", ")))
            }
        }
        #[cfg(not(target_arch = "x86_64"))]
        {
            Some(NOT_X86.into())
        }
    }

    /// Whether this tier can run here.
    pub fn is_available(self) -> bool {
        self.unavailable_reason().is_none()
    }

    #[cfg(target_arch = "x86_64")]
    fn isa(self) -> Option<kernels::Isa> {
        match self {
            Tier::Scalar => None,
            Tier::Avx2 => Some(kernels::Isa::Avx2),
            Tier::AvxVnni => Some(kernels::Isa::AvxVnni),
            Tier::Avx512Vnni | Tier::Amx => Some(kernels::Isa::Avx512Vnni),
        }
    }

    /// Measured cost of re-packing one trainable weight on every forward, 8w8a and 16w8a
    /// (`cargo xtask bench`, group `repack/*`, on the development machine; see
    /// `docs/backends/x86.md`). Channels in a ragged last panel cost a few times more.
    fn repack_cost(self) -> (&'static str, &'static str) {
        match self {
            Tier::Scalar => ("0", "0"),
            Tier::Avx2 => ("0.1", "0.2"),
            Tier::AvxVnni => ("0.1", "0.3"),
            Tier::Avx512Vnni | Tier::Amx => ("0.1", "0.3"),
        }
    }
}

impl fmt::Display for Tier {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

impl FromStr for Tier {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Tier::parse(s).ok_or_else(|| {
            format!("unknown x86 tier '{s}'; expected one of scalar, avx2, avx-vnni, avx512-vnni")
        })
    }
}

#[cfg(not(target_arch = "x86_64"))]
const NOT_X86: &str = "not an x86_64 build";

/// The x86_64 SIMD backend at one tier.
#[derive(Clone, Debug)]
pub struct X86 {
    tier: Tier,
    threads: usize,
    #[cfg(target_arch = "x86_64")]
    token: Option<kernels::Token>,
}

impl X86 {
    /// The backend's registry name.
    pub const NAME: &'static str = "x86";

    /// The best tier this CPU supports, or the one [`ENV_TIER`] names; threads from
    /// [`ENV_THREADS`] (default 1).
    pub fn best() -> Result<X86, BackendError> {
        match std::env::var(ENV_TIER) {
            Ok(v) if !v.trim().is_empty() => {
                let tier = Tier::from_str(&v)
                    .map_err(|e| BackendError::Unavailable(format!("{ENV_TIER}={v}: {e}")))?;
                X86::with_tier(tier)
            }
            _ => {
                let tier = X86::available_tiers()
                    .first()
                    .copied()
                    .ok_or_else(not_x86)?;
                X86::with_tier(tier)
            }
        }
    }

    /// The backend at `tier`; `Unavailable` with the missing CPU features if the CPU
    /// lacks it. Threads from [`ENV_THREADS`] (default 1).
    pub fn with_tier(tier: Tier) -> Result<X86, BackendError> {
        if let Some(why) = tier.unavailable_reason() {
            return Err(BackendError::Unavailable(why));
        }
        let threads = threads_from_env()?;
        #[cfg(target_arch = "x86_64")]
        {
            let token = match tier.isa() {
                None => None,
                Some(isa) => {
                    let token = kernels::Token::new(isa);
                    let token = if tier == Tier::Amx {
                        token.and_then(kernels::Token::with_amx)
                    } else {
                        token
                    };
                    Some(token.ok_or_else(|| {
                        BackendError::Unavailable(format!("{}: feature detection failed", tier))
                    })?)
                }
            };
            Ok(X86 {
                tier,
                threads,
                token,
            })
        }
        #[cfg(not(target_arch = "x86_64"))]
        {
            let _ = threads;
            Err(not_x86())
        }
    }

    /// Every tier this CPU can run, most preferred first (empty off x86_64).
    pub fn available_tiers() -> Vec<Tier> {
        if cfg!(target_arch = "x86_64") {
            Tier::PREFERENCE
                .into_iter()
                .filter(|t| t.is_available())
                .collect()
        } else {
            Vec::new()
        }
    }

    /// The same backend with `threads` worker threads per forward (at least 1).
    pub fn with_threads(mut self, threads: usize) -> X86 {
        self.threads = threads.max(1);
        self
    }

    /// The kernel tier.
    pub fn kernel_tier(&self) -> Tier {
        self.tier
    }

    /// Worker threads per forward.
    pub fn threads(&self) -> usize {
        self.threads
    }
}

fn not_x86() -> BackendError {
    BackendError::Unavailable("not an x86_64 build".into())
}

fn threads_from_env() -> Result<usize, BackendError> {
    match std::env::var(ENV_THREADS) {
        Ok(v) if !v.trim().is_empty() => match v.trim().parse::<usize>() {
            Ok(n) if n >= 1 => Ok(n),
            _ => Err(BackendError::Unavailable(format!(
                "{ENV_THREADS}={v}: expected a positive integer"
            ))),
        },
        _ => Ok(1),
    }
}

impl Backend for X86 {
    fn name(&self) -> &str {
        Self::NAME
    }

    fn tier(&self) -> &str {
        self.tier.name()
    }

    fn capabilities(&self) -> Capabilities {
        Capabilities {
            ops: OpKind::ALL.to_vec(),
            weight_bits: vec![WeightBits::W8, WeightBits::W16],
            weight_updates: if self.tier == Tier::Scalar {
                WeightUpdates::ReadsHostMemory
            } else {
                {
                    let (w8, w16) = self.tier.repack_cost();
                    WeightUpdates::UploadsEveryForward {
                        cost: format!(
                            "re-packs trainable weights: ~{w8} ns/weight at 8w8a, ~{w16} at \
                             16w8a (measured, see benches)"
                        ),
                    }
                }
            },
            exactness: Exactness::BitExact,
            threads: if self.tier == Tier::Scalar {
                1
            } else {
                self.threads
            },
        }
    }

    fn prepare(&self, model: &QuantModel) -> Result<Box<dyn PreparedModel>, BackendError> {
        #[cfg(target_arch = "x86_64")]
        {
            match self.token {
                None => Ok(Box::new(lastmile_backend_cpu_ref::Prepared::new(model)?)),
                Some(tok) => Ok(Box::new(prepared::prepare(tok, model, self.threads)?)),
            }
        }
        #[cfg(not(target_arch = "x86_64"))]
        {
            let _ = model;
            Err(not_x86())
        }
    }
}

#[cfg(all(test, target_arch = "x86_64"))]
mod tests;
