//! The x86 kernel table for the shared CPU executor ([`lastmile_backend_cpu_ref::exec`]):
//! per node, a packed GEMM layer (conv with one group, linear), a packed depthwise layer, or
//! nothing (the reference kernel: grouped convs other than depthwise); the vectorized
//! residual add for every add; the reference for pools. Trainable weights are re-packed
//! (and the zero-point corrections / bias re-folded) on every forward.

use lastmile_backend_cpu_ref::exec::{
    ConvArgs, Executor, KernelTable, LinearArgs, NodeInfo, bias_codes, weights,
};
use lastmile_backend_cpu_ref::kernels::{AddQuant, Weights};
use lastmile_core::backend::BackendError;
use lastmile_core::graph::Op;
use lastmile_core::model::{QParam, QuantModel};
use lastmile_core::plan::NodePlan;
use lastmile_core::quant::WeightBits;

use crate::depthwise::{DwLayer, DwScratch};
use crate::direct::Direct;
use crate::gather::{ConvGeom, Rows};
use crate::gemm::{GemmLayer, Requant, Scratch, Source};
use crate::kernels::{AddConsts, Clamp, Token};
use crate::pack::{Corrections, PackedWeights, Scheme};
use crate::workers::Workers;

/// Which params a packed node reads, and which of them may change between forwards.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Params {
    weight: usize,
    bias: Option<usize>,
    weight_trainable: bool,
    bias_trainable: bool,
}

impl Params {
    fn of(model_params: &[QParam], weight: usize, bias: Option<usize>) -> Self {
        Params {
            weight,
            bias,
            weight_trainable: model_params[weight].spec.trainable,
            bias_trainable: bias.is_some_and(|b| model_params[b].spec.trainable),
        }
    }
}

/// Per-node state.
#[derive(Debug)]
pub(crate) enum Exec {
    Gemm(Box<GemmLayer>, Params),
    Depthwise(Box<DwLayer>, Params),
    Reference,
}

/// Per-thread scratch buffers.
#[derive(Debug, Default)]
pub(crate) struct Scratches {
    gemm: Vec<Scratch>,
    dw: Vec<DwScratch>,
}

/// The kernel table of one SIMD tier.
#[derive(Debug)]
pub(crate) struct Table {
    tok: Token,
    threads: usize,
    workers: Workers,
    bits: WeightBits,
}

/// A model prepared for a SIMD tier.
pub(crate) type Prepared = Executor<Table>;

/// Prepares `model` for the tier `tok` with `threads` workers.
pub(crate) fn prepare(
    tok: Token,
    model: &QuantModel,
    threads: usize,
) -> Result<Prepared, BackendError> {
    let threads = threads.max(1);
    let table = Table {
        tok,
        threads,
        workers: Workers::new(threads).map_err(BackendError::Unavailable)?,
        bits: model.weight_bits,
    };
    Executor::new(table, model)
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

impl KernelTable for Table {
    type NodeState = Exec;
    type Scratch = Scratches;

    fn prepare_node(
        &self,
        info: NodeInfo<'_>,
        params: &[QParam],
        scratch: &mut Scratches,
    ) -> Result<Exec, BackendError> {
        if scratch.gemm.len() < self.threads {
            scratch.gemm.resize_with(self.threads, Scratch::default);
            scratch.dw.resize_with(self.threads, DwScratch::default);
        }
        let NodePlan::Dot {
            multipliers,
            zp_in,
            zp_out,
            lo,
            hi,
            ..
        } = info.plan
        else {
            return Ok(Exec::Reference);
        };
        let (tok, bits) = (self.tok, self.bits);
        let clamp = Clamp {
            zp: *zp_out,
            lo: *lo,
            hi: *hi,
        };
        let (inp, out) = (info.in_shape, info.out_shape);
        Ok(match &info.node.op {
            Op::Conv2d(c) => {
                let wp = &params[c.weight.index()];
                let ws = &wp.spec.shape;
                let geom = conv_geom(c, ws, inp, out);
                let p = Params::of(params, c.weight.index(), c.bias.map(|b| b.index()));
                let bias = c.bias.map(|b| bias_codes(&params[b.index()]));
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
                    Exec::Gemm(Box::new(layer), p)
                } else if ws[3] == 1 && ws[0] == inp[2] {
                    let wide = bits == WeightBits::W16;
                    let mut layer = DwLayer::new(geom, *zp_in, wide, multipliers, clamp);
                    layer.pack(weights(wp));
                    layer.set_bias(bias);
                    Exec::Depthwise(Box::new(layer), p)
                } else {
                    Exec::Reference
                }
            }
            Op::Linear(l) => {
                let wp = &params[l.weight.index()];
                let (n, k) = (wp.spec.shape[0], wp.spec.shape[1]);
                let p = Params::of(params, l.weight.index(), l.bias.map(|b| b.index()));
                let bias = l.bias.map(|b| bias_codes(&params[b.index()]));
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
                Exec::Gemm(Box::new(layer), p)
            }
            _ => Exec::Reference,
        })
    }

    fn refresh(
        &self,
        _info: NodeInfo<'_>,
        state: &mut Exec,
        params: &[QParam],
        _scratch: &mut Scratches,
    ) -> Result<(), BackendError> {
        match state {
            Exec::Gemm(layer, p) => {
                if p.weight_trainable {
                    layer.packed.pack(weights(&params[p.weight]));
                }
                if p.weight_trainable || p.bias_trainable {
                    let bias = p.bias.map(|b| bias_codes(&params[b]));
                    let zp = layer.zp_in;
                    layer.corr.update(&layer.packed, zp, bias);
                }
            }
            Exec::Depthwise(layer, p) => {
                if p.weight_trainable {
                    layer.pack(weights(&params[p.weight]));
                }
                if p.bias_trainable {
                    layer.set_bias(p.bias.map(|b| bias_codes(&params[b])));
                }
            }
            Exec::Reference => {}
        }
        Ok(())
    }

    fn conv2d(
        &self,
        state: &mut Exec,
        scratch: &mut Scratches,
        a: &ConvArgs<'_>,
        y: &mut [i8],
    ) -> Result<(), BackendError> {
        match state {
            Exec::Gemm(layer, _) => {
                let m = a.n * layer.source.rows_per_sample();
                layer.run(self.tok, a.x, m, y, &mut scratch.gemm, &self.workers);
            }
            Exec::Depthwise(layer, _) => {
                layer.run(self.tok, a.x, a.n, y, &mut scratch.dw, &self.workers)
            }
            Exec::Reference => a.reference(y),
        }
        Ok(())
    }

    fn linear(
        &self,
        state: &mut Exec,
        scratch: &mut Scratches,
        a: &LinearArgs<'_>,
        y: &mut [i8],
    ) -> Result<(), BackendError> {
        match state {
            Exec::Gemm(layer, _) => {
                layer.run(self.tok, a.x, a.n, y, &mut scratch.gemm, &self.workers)
            }
            _ => a.reference(y),
        }
        Ok(())
    }

    fn add(
        &self,
        _state: &mut Exec,
        _scratch: &mut Scratches,
        q: AddQuant,
        a: &[i8],
        b: &[i8],
        y: &mut [i8],
    ) -> Result<(), BackendError> {
        let m = |q: lastmile_core::quant::QuantMultiplier| (q.multiplier, q.shift);
        let consts = AddConsts {
            zp_a: q.zp_a,
            zp_b: q.zp_b,
            m_a: m(q.mult_a),
            m_b: m(q.mult_b),
            m_o: m(q.mult_out),
            zp_o: q.zp_out,
            lo: q.lo,
            hi: q.hi,
        };
        self.tok.add(a, b, consts, y);
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
    let direct = match &rows {
        Rows::Conv(g) if matches!(packed.scheme, Scheme::Vnni8 | Scheme::Vnni16) => Direct::new(g),
        _ => None,
    };
    GemmLayer {
        source: direct.map_or(Source::Gathered(rows), Source::Direct),
        sweeps: Default::default(),
        zp_in,
        packed,
        corr,
        requant,
    }
}
