//! A model prepared for one SIMD tier: per node, a packed GEMM layer, a packed depthwise
//! layer, the vectorized residual add, or the reference kernel (grouped convs other than
//! depthwise, pools, flatten).

use lastmile_backend_cpu_ref::kernels::{self, AddQuant, DotQuant, Weights};
use lastmile_core::backend::{BackendError, PreparedModel, check_forward_args};
use lastmile_core::graph::Op;
use lastmile_core::model::{QData, QParam, QuantModel};
use lastmile_core::plan::{NodePlan, Plan};
use lastmile_core::quant::WeightBits;

use crate::depthwise::{DwLayer, DwScratch};
use crate::gather::{ConvGeom, Rows};
use crate::gemm::{GemmLayer, Requant, Scratch};
use crate::kernels::{AddConsts, Clamp, Token};
use crate::pack::{Corrections, PackedWeights};

/// Which params a packed node reads, and which of them may change between forwards.
#[derive(Clone, Copy, Debug)]
struct Params {
    weight: usize,
    bias: Option<usize>,
    weight_trainable: bool,
    bias_trainable: bool,
}

impl Params {
    fn of(model: &QuantModel, weight: usize, bias: Option<usize>) -> Self {
        Params {
            weight,
            bias,
            weight_trainable: model.params[weight].spec.trainable,
            bias_trainable: bias.is_some_and(|b| model.params[b].spec.trainable),
        }
    }
}

#[derive(Debug)]
enum Exec {
    Gemm(Box<GemmLayer>, Params),
    Depthwise(Box<DwLayer>, Params),
    Add(AddConsts),
    Reference,
}

/// A model prepared for a SIMD tier.
#[derive(Debug)]
pub(crate) struct Prepared {
    /// Structure only (parameter data emptied).
    model: QuantModel,
    plan: Plan,
    tok: Token,
    exec: Vec<Exec>,
    values: Vec<Vec<i8>>,
    gemm_scratch: Vec<Scratch>,
    dw_scratch: Vec<DwScratch>,
}

fn weights(p: &QParam) -> Weights<'_> {
    match &p.data {
        QData::I8(v) => Weights::I8(v),
        QData::I16(v) => Weights::I16(v),
        // Checked by validation / `check_forward_args`: weights are never i32.
        QData::I32(_) => Weights::I8(&[]),
    }
}

fn bias_codes(p: &QParam) -> &[i32] {
    match &p.data {
        QData::I32(v) => v,
        _ => &[],
    }
}

fn conv_geom(
    c: &lastmile_core::graph::Conv2d,
    w_shape: &[usize],
    inp: &[usize],
    out: &[usize],
) -> ConvGeom {
    ConvGeom {
        h: inp[0],
        w: inp[1],
        c_in: inp[2],
        kh: w_shape[1],
        kw: w_shape[2],
        stride: c.stride,
        dilation: c.dilation,
        pad: [c.padding[0], c.padding[1]],
        ho: out[0],
        wo: out[1],
    }
}

impl Prepared {
    pub(crate) fn new(
        tok: Token,
        model: &QuantModel,
        threads: usize,
    ) -> Result<Self, BackendError> {
        model.validate()?;
        let plan = Plan::derive(model)?;
        let bits = model.weight_bits;
        let mut exec = Vec::with_capacity(model.topology.nodes.len());
        for (i, node) in model.topology.nodes.iter().enumerate() {
            if let NodePlan::Add {
                mult_a,
                mult_b,
                mult_out,
                zp_a,
                zp_b,
                zp_out,
                lo,
                hi,
            } = &plan.nodes[i]
            {
                let m = |q: &lastmile_core::quant::QuantMultiplier| (q.multiplier, q.shift);
                exec.push(Exec::Add(AddConsts {
                    zp_a: *zp_a,
                    zp_b: *zp_b,
                    m_a: m(mult_a),
                    m_b: m(mult_b),
                    m_o: m(mult_out),
                    zp_o: *zp_out,
                    lo: *lo,
                    hi: *hi,
                }));
                continue;
            }
            let NodePlan::Dot {
                multipliers,
                zp_in,
                zp_out,
                lo,
                hi,
                ..
            } = &plan.nodes[i]
            else {
                exec.push(Exec::Reference);
                continue;
            };
            let clamp = Clamp {
                zp: *zp_out,
                lo: *lo,
                hi: *hi,
            };
            let inp = &plan.shapes[node.inputs[0].index()];
            let out = &plan.shapes[i + 1];
            let e = match &node.op {
                Op::Conv2d(c) => {
                    let wp = &model.params[c.weight.index()];
                    let ws = &wp.spec.shape;
                    let geom = conv_geom(c, ws, inp, out);
                    let params = Params::of(model, c.weight.index(), c.bias.map(|b| b.index()));
                    let bias = c.bias.map(|b| bias_codes(&model.params[b.index()]));
                    if c.groups == 1 {
                        let (n, k) = (ws[0], ws[1] * ws[2] * ws[3]);
                        let layer = gemm_layer(
                            tok,
                            bits,
                            Rows::Conv(geom),
                            n,
                            k,
                            *zp_in,
                            weights(wp),
                            bias,
                            multipliers,
                            clamp,
                        );
                        Exec::Gemm(Box::new(layer), params)
                    } else if ws[3] == 1 && ws[0] == inp[2] {
                        let c_pad = ws[0].div_ceil(16) * 16;
                        let mut layer = DwLayer {
                            geom,
                            zp_in: *zp_in,
                            wide: bits == WeightBits::W16,
                            c_pad,
                            w: Vec::new(),
                            bias32: Vec::new(),
                            requant: Requant::new(multipliers, c_pad, clamp),
                        };
                        layer.pack(weights(wp));
                        layer.set_bias(bias);
                        Exec::Depthwise(Box::new(layer), params)
                    } else {
                        Exec::Reference
                    }
                }
                Op::Linear(l) => {
                    let wp = &model.params[l.weight.index()];
                    let (n, k) = (wp.spec.shape[0], wp.spec.shape[1]);
                    let params = Params::of(model, l.weight.index(), l.bias.map(|b| b.index()));
                    let bias = l.bias.map(|b| bias_codes(&model.params[b.index()]));
                    let layer = gemm_layer(
                        tok,
                        bits,
                        Rows::Dense { f: k },
                        n,
                        k,
                        *zp_in,
                        weights(wp),
                        bias,
                        multipliers,
                        clamp,
                    );
                    Exec::Gemm(Box::new(layer), params)
                }
                _ => Exec::Reference,
            };
            exec.push(e);
        }
        let mut model = model.clone();
        for p in &mut model.params {
            p.data = match p.data {
                QData::I8(_) => QData::I8(Vec::new()),
                QData::I16(_) => QData::I16(Vec::new()),
                QData::I32(_) => QData::I32(Vec::new()),
            };
        }
        let threads = threads.max(1);
        Ok(Prepared {
            values: vec![Vec::new(); plan.shapes.len()],
            model,
            plan,
            tok,
            exec,
            gemm_scratch: (0..threads).map(|_| Scratch::default()).collect(),
            dw_scratch: (0..threads).map(|_| DwScratch::default()).collect(),
        })
    }

    fn run(&mut self, params: &[QParam], input: &[i8], n: usize) -> Result<(), BackendError> {
        let sample: usize = self.plan.shapes[0].iter().product();
        check_forward_args(&self.model, params, input.len(), sample, n)?;
        let Prepared {
            model,
            plan,
            tok,
            exec,
            values,
            gemm_scratch,
            dw_scratch,
        } = self;
        let tok = *tok;
        for (i, node) in model.topology.nodes.iter().enumerate() {
            let out_len = n * plan.shapes[i + 1].iter().product::<usize>();
            let mut y = core::mem::take(&mut values[i + 1]);
            // Every op writes all of its output: no need to clear a buffer of the right size.
            if y.len() != out_len {
                y.clear();
                y.resize(out_len, 0);
            }
            // Value 0 is the input, read in place (never copied).
            let value = |v: usize| -> &[i8] { if v == 0 { input } else { &values[v] } };
            let xi = node.inputs[0].index();
            let x = value(xi);
            let xs = &plan.shapes[xi];
            match &mut exec[i] {
                Exec::Gemm(layer, p) => {
                    if p.weight_trainable {
                        layer.packed.pack(weights(&params[p.weight]));
                    }
                    if p.weight_trainable || p.bias_trainable {
                        let bias = p.bias.map(|b| bias_codes(&params[b]));
                        let zp = layer.zp_in;
                        layer.corr.update(&layer.packed, zp, bias);
                    }
                    let m = match &layer.rows {
                        Rows::Conv(g) => n * g.ho * g.wo,
                        Rows::Dense { .. } => n,
                    };
                    layer.run(tok, x, m, &mut y, gemm_scratch);
                }
                Exec::Depthwise(layer, p) => {
                    if p.weight_trainable {
                        layer.pack(weights(&params[p.weight]));
                    }
                    if p.bias_trainable {
                        layer.set_bias(p.bias.map(|b| bias_codes(&params[b])));
                    }
                    layer.run(tok, x, n, &mut y, dw_scratch);
                }
                Exec::Add(q) => tok.add(x, value(node.inputs[1].index()), *q, &mut y),
                Exec::Reference => {
                    let second = node.inputs.get(1).map_or(&[][..], |v| value(v.index()));
                    reference(
                        node,
                        &plan.nodes[i],
                        params,
                        second,
                        x,
                        xs,
                        &plan.shapes[i + 1],
                        n,
                        &mut y,
                    )?
                }
            }
            values[i + 1] = y;
        }
        Ok(())
    }
}

#[allow(clippy::too_many_arguments)]
fn gemm_layer(
    tok: Token,
    bits: WeightBits,
    rows: Rows,
    n: usize,
    k: usize,
    zp_in: i32,
    w: Weights<'_>,
    bias: Option<&[i32]>,
    multipliers: &[lastmile_core::quant::QuantMultiplier],
    clamp: Clamp,
) -> GemmLayer {
    let few_rows = matches!(rows, Rows::Dense { .. });
    let mut packed = PackedWeights::new(tok, bits, n, k, few_rows);
    packed.pack(w);
    let mut corr = Corrections::default();
    corr.update(&packed, zp_in, bias);
    let requant = Requant::new(multipliers, packed.n_pad, clamp);
    GemmLayer {
        rows,
        zp_in,
        packed,
        corr,
        requant,
    }
}

/// The reference kernel for a node this backend does not accelerate.
#[allow(clippy::too_many_arguments)]
fn reference(
    node: &lastmile_core::graph::Node,
    plan: &NodePlan,
    params: &[QParam],
    second: &[i8],
    x: &[i8],
    xs: &[usize],
    out_shape: &[usize],
    n: usize,
    y: &mut [i8],
) -> Result<(), BackendError> {
    match (&node.op, plan) {
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
                out_shape,
                n,
                y,
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
            kernels::add(q, x, second, y);
        }
        (Op::MaxPool(p), _) => kernels::pool2d(p, x, xs, out_shape, n, true, y),
        (Op::AvgPool(p), _) => kernels::pool2d(p, x, xs, out_shape, n, false, y),
        (Op::GlobalAvgPool, _) => kernels::global_avg_pool(x, xs, n, y),
        (Op::Flatten, _) => y.copy_from_slice(x),
        (op, _) => {
            return Err(BackendError::Unsupported(format!(
                "node '{}': {:?}",
                node.name,
                op.kind()
            )));
        }
    }
    Ok(())
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
        // Hand the output buffer over instead of copying it; the caller's old buffer is
        // reused as the last value's storage next time.
        if let Some(last) = self.values.last_mut() {
            core::mem::swap(output, last);
        }
        Ok(())
    }

    fn output_shape(&self) -> &[usize] {
        self.plan.output_shape()
    }
}
