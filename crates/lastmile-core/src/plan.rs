//! Integer constants derived **once** from a model's float scales.
//!
//! Every backend executes the same [`Plan`], so none of them re-derives a
//! multiplier in its own way (the classic source of off-by-one-LSB mismatches).

use alloc::format;
use alloc::vec::Vec;

use crate::graph::{GraphError, Op};
use crate::model::QuantModel;
use crate::quant::{ADD_LEFT_SHIFT, ActQuant, Activation, QuantMultiplier};

/// Integer constants for one node.
#[derive(Clone, Debug, PartialEq)]
pub enum NodePlan {
    /// Conv2d / linear: `out[c] = clamp(M_c(acc_c) + zp_out, lo, hi)`.
    Dot {
        /// One multiplier per output channel: `s_in · s_w[c] / s_out`.
        multipliers: Vec<QuantMultiplier>,
        /// Input zero point (subtracted from every input code).
        zp_in: i32,
        /// Output zero point.
        zp_out: i32,
        /// Lower clamp (activation and saturation).
        lo: i32,
        /// Upper clamp.
        hi: i32,
        /// Reduction length.
        k: usize,
    },
    /// Add: `out = clamp(M_o(M_a((a − zp_a) << 20) + M_b((b − zp_b) << 20)) + zp_out, lo, hi)`.
    Add {
        /// `s_a / (2·max(s_a, s_b))`.
        mult_a: QuantMultiplier,
        /// `s_b / (2·max(s_a, s_b))`.
        mult_b: QuantMultiplier,
        /// `2·max(s_a, s_b) / (2^20 · s_out)`.
        mult_out: QuantMultiplier,
        /// Zero point of input a.
        zp_a: i32,
        /// Zero point of input b.
        zp_b: i32,
        /// Output zero point.
        zp_out: i32,
        /// Lower clamp.
        lo: i32,
        /// Upper clamp.
        hi: i32,
    },
    /// Pools and flatten: no requantization (output quantization = input's).
    PassThrough,
}

/// Shapes and integer constants for a whole model.
#[derive(Clone, Debug, PartialEq)]
pub struct Plan {
    /// Per-value per-sample shapes.
    pub shapes: Vec<Vec<usize>>,
    /// One entry per node.
    pub nodes: Vec<NodePlan>,
}

impl Plan {
    /// Derives the plan. Fails (naming the node) if a multiplier is out of the
    /// representable range, which means broken scales.
    pub fn derive(model: &QuantModel) -> Result<Plan, GraphError> {
        let shapes = model.topology.infer_shapes(&model.specs())?;
        let mut nodes = Vec::with_capacity(model.topology.nodes.len());
        for (i, node) in model.topology.nodes.iter().enumerate() {
            let err = |m: alloc::string::String| GraphError {
                location: format!("node {i} '{}'", node.name),
                message: m,
            };
            if model.act.len() <= i + 1 {
                return Err(err("has no activation quantization".into()));
            }
            let out = model.act[i + 1];
            let inp = model.act[node.inputs[0].index()];
            let plan = match &node.op {
                Op::Conv2d(c) => dot_plan(
                    model,
                    c.weight,
                    c.activation,
                    inp,
                    out,
                    &shapes[node.inputs[0].index()],
                    &node.op,
                )
                .map_err(err)?,
                Op::Linear(l) => dot_plan(
                    model,
                    l.weight,
                    l.activation,
                    inp,
                    out,
                    &shapes[node.inputs[0].index()],
                    &node.op,
                )
                .map_err(err)?,
                Op::Add { activation } => {
                    let b = model.act[node.inputs[1].index()];
                    let twice_max = 2.0 * (inp.scale as f64).max(b.scale as f64);
                    let m = |r: f64, what: &str| {
                        QuantMultiplier::from_real(r).map_err(|e| err(format!("{what}: {e}")))
                    };
                    let (lo, hi) = activation.clamp_range(out);
                    NodePlan::Add {
                        mult_a: m(inp.scale as f64 / twice_max, "input a rescale")?,
                        mult_b: m(b.scale as f64 / twice_max, "input b rescale")?,
                        mult_out: m(
                            twice_max / ((1u64 << ADD_LEFT_SHIFT) as f64 * out.scale as f64),
                            "output rescale",
                        )?,
                        zp_a: inp.zero_point,
                        zp_b: b.zero_point,
                        zp_out: out.zero_point,
                        lo,
                        hi,
                    }
                }
                _ => NodePlan::PassThrough,
            };
            nodes.push(plan);
        }
        Ok(Plan { shapes, nodes })
    }

    /// Output shape per sample.
    pub fn output_shape(&self) -> &[usize] {
        self.shapes.last().map(|s| s.as_slice()).unwrap_or(&[])
    }
}

fn dot_plan(
    model: &QuantModel,
    weight: crate::ParamId,
    activation: Activation,
    inp: ActQuant,
    out: ActQuant,
    in_shape: &[usize],
    op: &Op,
) -> Result<NodePlan, alloc::string::String> {
    let w = &model.params[weight.index()];
    let k = match op {
        Op::Conv2d(c) => w.spec.shape[1] * w.spec.shape[2] * (in_shape[2] / c.groups),
        _ => in_shape[0],
    };
    let mut multipliers = Vec::with_capacity(w.scales.len());
    for (c, &s_w) in w.scales.iter().enumerate() {
        let r = inp.scale as f64 * s_w as f64 / out.scale as f64;
        multipliers
            .push(QuantMultiplier::from_real(r).map_err(|e| format!("output channel {c}: {e}"))?);
    }
    let (lo, hi) = activation.clamp_range(out);
    Ok(NodePlan::Dot {
        multipliers,
        zp_in: inp.zero_point,
        zp_out: out.zero_point,
        lo,
        hi,
        k,
    })
}
