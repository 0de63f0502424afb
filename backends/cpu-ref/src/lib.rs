//! # lastmile-backend-cpu-ref — the executable specification
//!
//! Portable scalar Rust for every op of the integer spec in `lastmile_core::quant`.
//! Clarity over speed: one loop nest per op ([`kernels`]), `i64` accumulation,
//! constants taken from the shared [`lastmile_core::plan::Plan`]. The graph walk is
//! [`exec::Executor`], shared by every CPU backend: optimized tiers plug their kernels
//! into its op-level [`exec::KernelTable`] and keep the reference for the rest. Every other
//! backend is tested bit-for-bit against this one by `lastmile-conformance`.
//!
//! `no_std` + `alloc`, so the same code runs on a microcontroller.
#![no_std]
#![forbid(unsafe_code)]
#![warn(missing_docs)]

extern crate alloc;

pub mod exec;
pub mod kernels;

use alloc::boxed::Box;
use alloc::vec;
use alloc::vec::Vec;

use lastmile_core::backend::{
    Backend, BackendError, Capabilities, Exactness, PreparedModel, WeightUpdates,
};
use lastmile_core::graph::OpKind;
use lastmile_core::model::{QParam, QuantModel};
use lastmile_core::plan::Plan;
use lastmile_core::quant::WeightBits;

use exec::{Executor, Reference};

/// The reference backend.
#[derive(Clone, Copy, Debug, Default)]
pub struct CpuRef;

impl CpuRef {
    /// The backend's registry name.
    pub const NAME: &'static str = "cpu-ref";
}

impl Backend for CpuRef {
    fn name(&self) -> &str {
        Self::NAME
    }

    fn tier(&self) -> &str {
        "scalar"
    }

    fn capabilities(&self) -> Capabilities {
        Capabilities {
            ops: OpKind::ALL.to_vec(),
            weight_bits: vec![WeightBits::W8, WeightBits::W16],
            weight_updates: WeightUpdates::ReadsHostMemory,
            exactness: Exactness::BitExact,
            threads: 1,
        }
    }

    fn prepare(&self, model: &QuantModel) -> Result<Box<dyn PreparedModel>, BackendError> {
        Ok(Box::new(Prepared::new(model)?))
    }
}

/// A model prepared for the reference backend: the shared [`exec::Executor`] with the
/// [`exec::Reference`] kernel table (the plan plus reusable value buffers).
#[derive(Debug)]
pub struct Prepared {
    exec: Executor<Reference>,
}

impl Prepared {
    /// Validates the model and derives its plan. Parameter data is *not* kept for
    /// use: every forward reads the parameters it is given.
    pub fn new(model: &QuantModel) -> Result<Self, BackendError> {
        Ok(Prepared {
            exec: Executor::new(Reference, model)?,
        })
    }

    /// The derived plan.
    pub fn plan(&self) -> &Plan {
        self.exec.plan()
    }

    /// Runs the graph and returns every value (index 0 = input), for debugging and
    /// for the conformance suite's per-layer diffs.
    pub fn forward_values(
        &mut self,
        params: &[QParam],
        input: &[i8],
        n: usize,
    ) -> Result<&[Vec<i8>], BackendError> {
        self.exec.run(params, input, n)?;
        self.exec.keep_input(input);
        Ok(self.exec.values())
    }
}

impl PreparedModel for Prepared {
    fn forward(
        &mut self,
        params: &[QParam],
        input: &[i8],
        n: usize,
        output: &mut Vec<i8>,
    ) -> Result<(), BackendError> {
        self.exec.forward(params, input, n, output)
    }

    fn output_shape(&self) -> &[usize] {
        self.exec.output_shape()
    }
}

/// Convenience: prepare `model` on the reference backend and run one batch.
pub fn run(model: &QuantModel, input: &[i8], n: usize) -> Result<Vec<i8>, BackendError> {
    let mut p = Prepared::new(model)?;
    let mut out = Vec::new();
    p.forward(&model.params, input, n, &mut out)?;
    Ok(out)
}
