//! The model as the plain C structs of the ABI (`LmGraph` and its arrays), owned here so
//! every pointer stays valid while a [`GraphDesc`] is borrowed. No `unsafe`: building raw
//! pointers is safe; only the plugin dereferences them.

use std::ffi::CString;

use lastmile_core::backend::BackendError;
use lastmile_core::graph::{Op, ParamRole};
use lastmile_core::model::{QData, QuantModel};
use lastmile_core::plan::{NodePlan, Plan};
use lastmile_core::quant::{ADD_LEFT_SHIFT, QuantMultiplier};

use crate::bindings::{
    LM_DTYPE_I8, LM_DTYPE_I16, LM_DTYPE_I32, LM_OP_ADD, LM_OP_AVG_POOL, LM_OP_CONV2D,
    LM_OP_FLATTEN, LM_OP_GLOBAL_AVG_POOL, LM_OP_LINEAR, LM_OP_MAX_POOL, LM_ROLE_BIAS,
    LM_ROLE_WEIGHT, LmGraph, LmMultiplier, LmNode, LmParam, LmValue,
};

/// Owned storage behind an `LmGraph`.
#[derive(Debug)]
pub(crate) struct GraphDesc {
    weight_bits: u32,
    values: Vec<LmValue>,
    nodes: Vec<LmNode>,
    params: Vec<LmParam>,
    // Pointed to by `nodes` / `params`; never mutated after construction.
    _names: Vec<CString>,
    _multipliers: Vec<Vec<LmMultiplier>>,
    _scales: Vec<Vec<f32>>,
}

// `GraphDesc` holds raw pointers into its own heap buffers (Vec/CString
// contents do not move when the struct moves), so it is neither `Send` nor `Sync` — it
// lives only on the stack of `prepare`.

fn mult(m: &QuantMultiplier) -> LmMultiplier {
    LmMultiplier {
        multiplier: m.multiplier,
        shift: m.shift,
    }
}

fn u32_of(v: usize, what: &str) -> Result<u32, BackendError> {
    u32::try_from(v).map_err(|_| {
        BackendError::Unsupported(format!("{what} = {v} exceeds the plugin ABI's u32"))
    })
}

fn cstring(s: &str) -> CString {
    // Names with an interior NUL (impossible from a validated model file, but cheap to
    // handle) lose everything from the NUL on.
    CString::new(s.split('\0').next().unwrap_or("")).unwrap_or_default()
}

const ZERO_MULT: LmMultiplier = LmMultiplier {
    multiplier: 0,
    shift: 0,
};

impl GraphDesc {
    /// Builds the C description of a validated `model` with its derived `plan`.
    pub(crate) fn new(model: &QuantModel, plan: &Plan) -> Result<GraphDesc, BackendError> {
        let mut names = Vec::new();
        let mut multipliers = Vec::new();
        let mut scales = Vec::new();

        let mut values = Vec::with_capacity(plan.shapes.len());
        for (v, shape) in plan.shapes.iter().enumerate() {
            let mut s = [0u32; 3];
            for (d, &x) in shape.iter().enumerate().take(3) {
                s[d] = u32_of(x, "a dimension")?;
            }
            let q = model.act[v];
            values.push(LmValue {
                rank: shape.len() as u32,
                shape: s,
                scale: q.scale,
                zero_point: q.zero_point,
            });
        }

        let mut params = Vec::with_capacity(model.params.len());
        for p in &model.params {
            let name = cstring(&p.spec.name);
            let mut shape = [0u32; 4];
            for (d, &x) in p.spec.shape.iter().enumerate().take(4) {
                shape[d] = u32_of(x, "a dimension")?;
            }
            let s: Vec<f32> = p.scales.clone();
            params.push(LmParam {
                name: name.as_ptr(),
                role: match p.spec.role {
                    ParamRole::Weight => LM_ROLE_WEIGHT,
                    ParamRole::Bias => LM_ROLE_BIAS,
                },
                dtype: match p.data {
                    QData::I8(_) => LM_DTYPE_I8,
                    QData::I16(_) => LM_DTYPE_I16,
                    QData::I32(_) => LM_DTYPE_I32,
                },
                trainable: p.spec.trainable as u32,
                rank: p.spec.shape.len() as u32,
                shape,
                numel: p.spec.numel() as u64,
                scales: if s.is_empty() {
                    std::ptr::null()
                } else {
                    s.as_ptr()
                },
            });
            names.push(name);
            scales.push(s);
        }

        let mut nodes = Vec::with_capacity(model.topology.nodes.len());
        for (i, (node, np)) in model.topology.nodes.iter().zip(&plan.nodes).enumerate() {
            let name = cstring(&node.name);
            let mut n = LmNode {
                name: name.as_ptr(),
                op: 0,
                num_inputs: node.inputs.len() as u32,
                inputs: [0; 2],
                weight: -1,
                bias: -1,
                stride: [0; 2],
                padding: [0; 4],
                dilation: [0; 2],
                kernel: [0; 2],
                groups: 0,
                multipliers: std::ptr::null(),
                num_multipliers: 0,
                zp_in: 0,
                zp_out: 0,
                lo: 0,
                hi: 0,
                mult_a: ZERO_MULT,
                mult_b: ZERO_MULT,
                mult_out: ZERO_MULT,
                zp_a: 0,
                zp_b: 0,
            };
            names.push(name);
            for (k, v) in node.inputs.iter().enumerate().take(2) {
                n.inputs[k] = v.0;
            }
            let u = |v: usize| u32_of(v, "an attribute");
            match &node.op {
                Op::Conv2d(c) => {
                    n.op = LM_OP_CONV2D;
                    n.weight = c.weight.0 as i32;
                    n.bias = c.bias.map_or(-1, |b| b.0 as i32);
                    n.stride = [u(c.stride[0])?, u(c.stride[1])?];
                    n.padding = [
                        u(c.padding[0])?,
                        u(c.padding[1])?,
                        u(c.padding[2])?,
                        u(c.padding[3])?,
                    ];
                    n.dilation = [u(c.dilation[0])?, u(c.dilation[1])?];
                    let ws = &model.params[c.weight.index()].spec.shape;
                    n.kernel = [u(ws[1])?, u(ws[2])?];
                    n.groups = u(c.groups)?;
                }
                Op::Linear(l) => {
                    n.op = LM_OP_LINEAR;
                    n.weight = l.weight.0 as i32;
                    n.bias = l.bias.map_or(-1, |b| b.0 as i32);
                }
                Op::Add { .. } => n.op = LM_OP_ADD,
                Op::MaxPool(p) | Op::AvgPool(p) => {
                    n.op = if matches!(node.op, Op::MaxPool(_)) {
                        LM_OP_MAX_POOL
                    } else {
                        LM_OP_AVG_POOL
                    };
                    n.kernel = [u(p.kernel[0])?, u(p.kernel[1])?];
                    n.stride = [u(p.stride[0])?, u(p.stride[1])?];
                    n.padding = [
                        u(p.padding[0])?,
                        u(p.padding[1])?,
                        u(p.padding[2])?,
                        u(p.padding[3])?,
                    ];
                }
                Op::GlobalAvgPool => n.op = LM_OP_GLOBAL_AVG_POOL,
                Op::Flatten => n.op = LM_OP_FLATTEN,
                other => {
                    return Err(BackendError::Unsupported(format!(
                        "node {i} '{}': op {:?} has no plugin ABI v1 encoding",
                        node.name,
                        other.kind()
                    )));
                }
            }
            match np {
                NodePlan::Dot {
                    multipliers: m,
                    zp_in,
                    zp_out,
                    lo,
                    hi,
                    ..
                } => {
                    let m: Vec<LmMultiplier> = m.iter().map(mult).collect();
                    n.multipliers = m.as_ptr();
                    n.num_multipliers = u(m.len())?;
                    n.zp_in = *zp_in;
                    n.zp_out = *zp_out;
                    n.lo = *lo;
                    n.hi = *hi;
                    multipliers.push(m);
                }
                NodePlan::Add {
                    mult_a,
                    mult_b,
                    mult_out,
                    zp_a,
                    zp_b,
                    zp_out,
                    lo,
                    hi,
                } => {
                    n.mult_a = mult(mult_a);
                    n.mult_b = mult(mult_b);
                    n.mult_out = mult(mult_out);
                    n.zp_a = *zp_a;
                    n.zp_b = *zp_b;
                    n.zp_in = *zp_a;
                    n.zp_out = *zp_out;
                    n.lo = *lo;
                    n.hi = *hi;
                }
                NodePlan::PassThrough => {}
            }
            nodes.push(n);
        }
        Ok(GraphDesc {
            weight_bits: model.weight_bits.bits(),
            values,
            nodes,
            params,
            _names: names,
            _multipliers: multipliers,
            _scales: scales,
        })
    }

    /// The `LmGraph` pointing into `self`; valid while `self` is borrowed.
    pub(crate) fn as_c(&self) -> LmGraph {
        LmGraph {
            struct_size: size_of::<LmGraph>() as u32,
            weight_bits: self.weight_bits,
            add_left_shift: ADD_LEFT_SHIFT,
            num_values: self.values.len() as u32,
            values: self.values.as_ptr(),
            num_nodes: self.nodes.len() as u32,
            nodes: self.nodes.as_ptr(),
            num_params: self.params.len() as u32,
            params: self.params.as_ptr(),
        }
    }
}
