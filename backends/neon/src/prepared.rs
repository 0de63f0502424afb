//! A model prepared for the NEON backend: the shared plan, weights packed for the tier's
//! micro-kernel (frozen ones once, trainable ones on every forward), and the per-node loop.

use lastmile_backend_cpu_ref::kernels::{self as reference, AddQuant, DotQuant};
use lastmile_core::backend::{BackendError, PreparedModel, check_forward_args};
use lastmile_core::graph::{Conv2d, Op, ParamId};
use lastmile_core::model::{QData, QParam, QuantModel};
use lastmile_core::plan::{NodePlan, Plan};

use crate::Tier;
use crate::arch::Micro;
use crate::depthwise::{self, DwWeights};
use crate::gemm;
use crate::pack::{PackedB, PanelShape, pack_b8, pack_b16};

/// How one node's weights are laid out for its kernel.
#[derive(Debug)]
enum Packed {
    /// No weights (add, pools, flatten).
    None,
    /// Conv (one entry per group) or linear (one entry) through the GEMM.
    Gemm(Vec<PackedB>),
    /// Depthwise, tap-major.
    Depthwise(DwWeights),
}

#[derive(Debug)]
struct NodePack {
    packed: Packed,
    /// Repack from the forward's parameters on every call.
    trainable: bool,
}

/// The prepared model.
#[derive(Debug)]
pub(crate) struct Prepared {
    model: QuantModel,
    plan: Plan,
    micro: Micro,
    nodes: Vec<NodePack>,
    values: Vec<Vec<i8>>,
    gemm_scratch: gemm::Scratch,
    dw_scratch: depthwise::Scratch,
    pack_scratch: Vec<i8>,
}

fn is_depthwise(c: &Conv2d, in_shape: &[usize], w_shape: &[usize]) -> bool {
    c.groups > 1 && c.groups == in_shape[2] && w_shape[3] == 1
}

impl Prepared {
    pub(crate) fn new(model: &QuantModel, tier: Tier) -> Result<Self, BackendError> {
        model.validate()?;
        let plan = Plan::derive(model)?;
        let micro = Micro::for_tier(tier).ok_or_else(|| {
            BackendError::Unavailable(format!("the {tier} tier cannot run on this CPU"))
        })?;
        let mut nodes = Vec::with_capacity(model.topology.nodes.len());
        let mut pack_scratch = Vec::new();
        for node in &model.topology.nodes {
            let weight = match &node.op {
                Op::Conv2d(c) => Some(c.weight),
                Op::Linear(l) => Some(l.weight),
                _ => None,
            };
            let trainable = weight.is_some_and(|w| model.params[w.index()].spec.trainable);
            let mut np = NodePack {
                packed: Packed::None,
                trainable,
            };
            if weight.is_some() {
                let in_shape = &plan.shapes[node.inputs[0].index()];
                np.packed = Self::pack(
                    micro,
                    &node.op,
                    in_shape,
                    &model.params,
                    None,
                    &mut pack_scratch,
                );
            }
            nodes.push(np);
        }
        // Keep only the structure: frozen data lives packed, trainable data comes with
        // every forward.
        let mut model = model.clone();
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
            micro,
            nodes,
            values,
            gemm_scratch: gemm::Scratch::default(),
            dw_scratch: depthwise::Scratch::default(),
            pack_scratch,
        })
    }

    /// Packs the weights of a conv/linear `op` from `params` (reusing `reuse`'s buffers).
    fn pack(
        micro: Micro,
        op: &Op,
        in_shape: &[usize],
        params: &[QParam],
        reuse: Option<Packed>,
        scratch: &mut Vec<i8>,
    ) -> Packed {
        let (weight, groups) = match op {
            Op::Conv2d(c) => (c.weight, c.groups),
            Op::Linear(l) => (l.weight, 1),
            _ => return Packed::None,
        };
        let p = &params[weight.index()];
        let shape = &p.spec.shape;
        if let Op::Conv2d(c) = op
            && is_depthwise(c, in_shape, shape)
        {
            let cin = in_shape[2];
            let taps = shape[1] * shape[2];
            let opg = shape[0] / cin;
            let mut dw = match reuse {
                Some(Packed::Depthwise(d)) => d,
                _ => match &p.data {
                    QData::I16(_) => DwWeights::W16(Vec::new()),
                    _ => DwWeights::W8(Vec::new()),
                },
            };
            match (&mut dw, &p.data) {
                (DwWeights::W16(out), QData::I16(w)) => depthwise::pack(out, w, cin, opg, taps),
                (DwWeights::W8(out), QData::I8(w)) => depthwise::pack(out, w, cin, opg, taps),
                // `check_forward_args` / `validate` ran first: the widths match the model.
                _ => {}
            }
            return Packed::Depthwise(dw);
        }
        let cout = shape[0];
        let k: usize = shape[1..].iter().product();
        let opg = cout / groups;
        let sb = PanelShape::b(micro, k);
        let mut packs = match reuse {
            Some(Packed::Gemm(v)) if v.len() == groups => v,
            _ => (0..groups).map(|_| PackedB::default()).collect(),
        };
        for (g, dst) in packs.iter_mut().enumerate() {
            let range = g * opg * k..(g + 1) * opg * k;
            match &p.data {
                QData::I8(w) => pack_b8(dst, sb, &w[range], opg, k, scratch),
                QData::I16(w) => pack_b16(dst, sb, &w[range], opg, k, scratch),
                QData::I32(_) => {}
            }
        }
        Packed::Gemm(packs)
    }

    fn run(&mut self, params: &[QParam], input: &[i8], n: usize) -> Result<(), BackendError> {
        let sample: usize = self.plan.shapes[0].iter().product();
        check_forward_args(&self.model, params, input.len(), sample, n)?;
        self.values[0].clear();
        self.values[0].extend_from_slice(input);
        let wide = self.model.weight_bits == lastmile_core::quant::WeightBits::W16;
        for (i, node) in self.model.topology.nodes.iter().enumerate() {
            if self.nodes[i].trainable {
                let in_shape = &self.plan.shapes[node.inputs[0].index()];
                let old = core::mem::replace(&mut self.nodes[i].packed, Packed::None);
                self.nodes[i].packed = Self::pack(
                    self.micro,
                    &node.op,
                    in_shape,
                    params,
                    Some(old),
                    &mut self.pack_scratch,
                );
            }
            let out_len = n * self.plan.shapes[i + 1].iter().product::<usize>();
            let mut y = core::mem::take(&mut self.values[i + 1]);
            y.clear();
            y.resize(out_len, 0);
            let xi = node.inputs[0].index();
            let x = &self.values[xi];
            let xs = &self.plan.shapes[xi];
            let os = &self.plan.shapes[i + 1];
            match (&node.op, &self.plan.nodes[i], &self.nodes[i].packed) {
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
                    packed,
                ) => {
                    let q = DotQuant {
                        multipliers,
                        zp_in: *zp_in,
                        zp_out: *zp_out,
                        lo: *lo,
                        hi: *hi,
                    };
                    let w_shape = &params[c.weight.index()].spec.shape;
                    let bias = bias_codes(params, c.bias);
                    match packed {
                        Packed::Depthwise(w) => depthwise::depthwise(
                            c,
                            &q,
                            x,
                            xs,
                            w_shape,
                            w,
                            bias,
                            os,
                            n,
                            &mut y,
                            &mut self.dw_scratch,
                        ),
                        Packed::Gemm(packs) => gemm::conv2d(
                            self.micro,
                            wide,
                            c,
                            &q,
                            x,
                            xs,
                            w_shape,
                            packs,
                            bias,
                            os,
                            n,
                            &mut y,
                            &mut self.gemm_scratch,
                        ),
                        Packed::None => return Err(internal(i)),
                    }
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
                    Packed::Gemm(packs),
                ) if packs.len() == 1 => {
                    let q = DotQuant {
                        multipliers,
                        zp_in: *zp_in,
                        zp_out: *zp_out,
                        lo: *lo,
                        hi: *hi,
                    };
                    let out = params[l.weight.index()].spec.shape[0];
                    let bias = bias_codes(params, l.bias);
                    gemm::linear(
                        self.micro,
                        wide,
                        &q,
                        x,
                        xs[0],
                        &packs[0],
                        out,
                        bias,
                        n,
                        &mut y,
                        &mut self.gemm_scratch,
                    );
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
                    _,
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
                    reference::add(q, x, &self.values[node.inputs[1].index()], &mut y);
                }
                (Op::MaxPool(p), _, _) => reference::pool2d(p, x, xs, os, n, true, &mut y),
                (Op::AvgPool(p), _, _) => reference::pool2d(p, x, xs, os, n, false, &mut y),
                (Op::GlobalAvgPool, _, _) => reference::global_avg_pool(x, xs, n, &mut y),
                (Op::Flatten, _, _) => y.copy_from_slice(x),
                (op, _, _) => {
                    return Err(BackendError::Unsupported(format!(
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

fn internal(node: usize) -> BackendError {
    BackendError::Engine(format!(
        "node {node}: weights were not packed (internal error)"
    ))
}

fn bias_codes(params: &[QParam], id: Option<ParamId>) -> Option<&[i32]> {
    id.map(|b| match &params[b.index()].data {
        QData::I32(v) => v.as_slice(),
        _ => &[],
    })
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
