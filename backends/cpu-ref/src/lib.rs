//! # lastmile-backend-cpu-ref — the executable specification
//!
//! Portable scalar Rust for every op of the integer spec in `lastmile_core::quant`.
//! Clarity over speed: one loop nest per op ([`kernels`]), `i64` accumulation,
//! constants taken from the shared [`lastmile_core::plan::Plan`]. Every other
//! backend is tested bit-for-bit against this one by `lastmile-conformance`.
//!
//! `no_std` + `alloc`, so the same code runs on a microcontroller.
#![no_std]
#![forbid(unsafe_code)]
#![warn(missing_docs)]

extern crate alloc;

pub mod kernels;

use alloc::boxed::Box;
use alloc::vec;
use alloc::vec::Vec;

use lastmile_core::backend::{
    Backend, BackendError, Capabilities, Exactness, PreparedModel, WeightUpdates,
    check_forward_args,
};
use lastmile_core::graph::{Op, OpKind};
use lastmile_core::model::{QData, QParam, QuantModel};
use lastmile_core::plan::{NodePlan, Plan};
use lastmile_core::quant::WeightBits;

use kernels::{AddQuant, DotQuant, Weights};

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

/// A model prepared for the reference backend: the plan plus reusable value buffers.
#[derive(Debug)]
pub struct Prepared {
    model: QuantModel,
    plan: Plan,
    values: Vec<Vec<i8>>,
}

impl Prepared {
    /// Validates the model and derives its plan. Parameter data is *not* kept for
    /// use: every forward reads the parameters it is given.
    pub fn new(model: &QuantModel) -> Result<Self, BackendError> {
        model.validate()?;
        let plan = Plan::derive(model)?;
        let mut model = model.clone();
        // Keep only the structure; parameter data comes with every forward.
        for p in &mut model.params {
            p.data = match p.data {
                QData::I8(_) => QData::I8(Vec::new()),
                QData::I16(_) => QData::I16(Vec::new()),
                QData::I32(_) => QData::I32(Vec::new()),
            };
        }
        let values = vec![Vec::new(); plan.shapes.len()];
        Ok(Prepared {
            model,
            plan,
            values,
        })
    }

    /// The derived plan.
    pub fn plan(&self) -> &Plan {
        &self.plan
    }

    /// Runs the graph and returns every value (index 0 = input), for debugging and
    /// for the conformance suite's per-layer diffs.
    pub fn forward_values(
        &mut self,
        params: &[QParam],
        input: &[i8],
        n: usize,
    ) -> Result<&[Vec<i8>], BackendError> {
        self.run(params, input, n)?;
        Ok(&self.values)
    }

    fn run(&mut self, params: &[QParam], input: &[i8], n: usize) -> Result<(), BackendError> {
        let sample: usize = self.plan.shapes[0].iter().product();
        check_forward_args(&self.model, params, input.len(), sample, n)?;
        self.values[0].clear();
        self.values[0].extend_from_slice(input);
        for (i, node) in self.model.topology.nodes.iter().enumerate() {
            let out_len = n * self.plan.shapes[i + 1].iter().product::<usize>();
            // Take the output buffer out so inputs can be borrowed from `values`.
            let mut y = core::mem::take(&mut self.values[i + 1]);
            y.clear();
            y.resize(out_len, 0);
            let xi = node.inputs[0].index();
            let x = &self.values[xi];
            let xs = &self.plan.shapes[xi];
            match (&node.op, &self.plan.nodes[i]) {
                (
                    Op::Conv2d(c),
                    NodePlan::Dot {
                        multipliers,
                        zp_in,
                        zp_out,
                        lo,
                        hi,
                        ..
                    },
                ) => {
                    let q = DotQuant {
                        multipliers,
                        zp_in: *zp_in,
                        zp_out: *zp_out,
                        lo: *lo,
                        hi: *hi,
                    };
                    let w = &params[c.weight.index()];
                    let bias = c.bias.map(|b| bias_codes(&params[b.index()]));
                    kernels::conv2d(
                        c,
                        q,
                        x,
                        xs,
                        weights(w),
                        &w.spec.shape,
                        bias,
                        &self.plan.shapes[i + 1],
                        n,
                        &mut y,
                    );
                }
                (
                    Op::Linear(l),
                    NodePlan::Dot {
                        multipliers,
                        zp_in,
                        zp_out,
                        lo,
                        hi,
                        ..
                    },
                ) => {
                    let q = DotQuant {
                        multipliers,
                        zp_in: *zp_in,
                        zp_out: *zp_out,
                        lo: *lo,
                        hi: *hi,
                    };
                    let w = &params[l.weight.index()];
                    let bias = l.bias.map(|b| bias_codes(&params[b.index()]));
                    kernels::linear(q, x, xs[0], weights(w), w.spec.shape[0], bias, n, &mut y);
                }
                (
                    Op::Add { .. },
                    NodePlan::Add {
                        mult_a,
                        mult_b,
                        mult_out,
                        zp_a,
                        zp_b,
                        zp_out,
                        lo,
                        hi,
                    },
                ) => {
                    let q = AddQuant {
                        mult_a: *mult_a,
                        mult_b: *mult_b,
                        mult_out: *mult_out,
                        zp_a: *zp_a,
                        zp_b: *zp_b,
                        zp_out: *zp_out,
                        lo: *lo,
                        hi: *hi,
                    };
                    kernels::add(q, x, &self.values[node.inputs[1].index()], &mut y);
                }
                (Op::MaxPool(p), _) => {
                    kernels::pool2d(p, x, xs, &self.plan.shapes[i + 1], n, true, &mut y)
                }
                (Op::AvgPool(p), _) => {
                    kernels::pool2d(p, x, xs, &self.plan.shapes[i + 1], n, false, &mut y)
                }
                (Op::GlobalAvgPool, _) => kernels::global_avg_pool(x, xs, n, &mut y),
                (Op::Flatten, _) => y.copy_from_slice(x),
                (op, _) => {
                    return Err(BackendError::Unsupported(alloc::format!(
                        "node {i} '{}': {:?}",
                        node.name,
                        op.kind()
                    )));
                }
            }
            self.values[i + 1] = y;
        }
        Ok(())
    }
}

fn weights(p: &QParam) -> Weights<'_> {
    match &p.data {
        QData::I8(v) => Weights::I8(v),
        QData::I16(v) => Weights::I16(v),
        // `run` checked every tensor's type against the prepared model.
        QData::I32(_) => Weights::I8(&[]),
    }
}

fn bias_codes(p: &QParam) -> &[i32] {
    match &p.data {
        QData::I32(v) => v,
        _ => &[],
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
        self.run(params, input, n)?;
        output.clear();
        output.extend_from_slice(self.values.last().map(|v| v.as_slice()).unwrap_or(&[]));
        Ok(())
    }

    fn output_shape(&self) -> &[usize] {
        self.plan.output_shape()
    }
}

/// Convenience: prepare `model` on the reference backend and run one batch.
pub fn run(model: &QuantModel, input: &[i8], n: usize) -> Result<Vec<i8>, BackendError> {
    let mut p = Prepared::new(model)?;
    let mut out = Vec::new();
    p.forward(&model.params, input, n, &mut out)?;
    Ok(out)
}
