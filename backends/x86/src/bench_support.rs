//! Hooks for `benches/` to time internal paths directly. Not a stable API.

use lastmile_backend_cpu_ref::kernels::Weights;
use lastmile_core::backend::BackendError;
use lastmile_core::model::QData;
use lastmile_core::quant::WeightBits;

use crate::Tier;
use crate::kernels::Token;
use crate::pack::{Corrections, PackedWeights};

/// The per-forward work for one trainable conv/linear weight tensor: re-pack into the
/// tier's panel layout and recompute the per-channel corrections.
#[derive(Debug)]
pub struct Repack {
    packed: PackedWeights,
    corr: Corrections,
}

impl Repack {
    /// Buffers for an `n × k` weight matrix of width `bits` on `tier`.
    pub fn new(tier: Tier, bits: WeightBits, n: usize, k: usize) -> Result<Repack, BackendError> {
        let isa = tier.isa().ok_or_else(|| {
            BackendError::Unsupported("the scalar tier reads weights in place".into())
        })?;
        let tok = Token::new(isa).ok_or_else(|| {
            BackendError::Unavailable(tier.unavailable_reason().unwrap_or_default())
        })?;
        Ok(Repack {
            packed: PackedWeights::new(tok, bits, n, k, false),
            corr: Corrections::default(),
        })
    }

    /// Re-packs `w` (`n·k` codes of the width given to [`Repack::new`]) and recomputes
    /// the corrections for input zero point `zp`.
    pub fn run(&mut self, w: &QData, bias: &[i32], zp: i32) {
        let w = match w {
            QData::I8(v) => Weights::I8(v),
            QData::I16(v) => Weights::I16(v),
            QData::I32(_) => panic!("weights are i8 or i16"),
        };
        self.packed.pack(w);
        self.corr.update(&self.packed, zp, Some(bias));
    }

    /// Weights per call.
    pub fn weights(&self) -> usize {
        self.packed.weights()
    }
}
