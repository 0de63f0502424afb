//! The NEON kernel table for the shared CPU executor ([`lastmile_backend_cpu_ref::exec`]):
//! weights packed for the tier's micro-kernel (frozen ones once, trainable ones on every
//! forward), the GEMM for conv2d (any groups) and linear, the depthwise kernel, and the
//! add / pool kernels of [`crate::eltwise`].

use lastmile_backend_cpu_ref::exec::{
    ConvArgs, Executor, KernelTable, LinearArgs, NodeInfo, PoolArgs,
};
use lastmile_backend_cpu_ref::kernels::AddQuant;
use lastmile_core::backend::BackendError;
use lastmile_core::graph::{Conv2d, Op};
use lastmile_core::model::{QData, QParam, QuantModel};

use crate::Tier;
use crate::arch::Micro;
use crate::depthwise::{self, DwWeights};
use crate::eltwise;
use crate::gemm;
use crate::pack::{PackedB, PanelShape, pack_b8, pack_b16};

/// How one node's weights are laid out for its kernel.
#[derive(Debug)]
pub(crate) enum Packed {
    /// No weights (add, pools, flatten).
    None,
    /// Conv (one entry per group) or linear (one entry) through the GEMM.
    Gemm(Vec<PackedB>),
    /// Depthwise, tap-major.
    Depthwise(DwWeights),
}

/// Scratch buffers shared by all nodes.
#[derive(Debug, Default)]
pub(crate) struct Scratch {
    gemm: gemm::Scratch,
    dw: depthwise::Scratch,
    pool: eltwise::Scratch,
    pack: Vec<i8>,
}

/// The kernel table of one NEON tier.
#[derive(Debug)]
pub(crate) struct Table {
    micro: Micro,
    wide: bool,
}

/// A model prepared for a NEON tier.
pub(crate) type Prepared = Executor<Table>;

/// Prepares `model` for `tier` (not `Scalar`, which is cpu-ref itself).
pub(crate) fn prepare(model: &QuantModel, tier: Tier) -> Result<Prepared, BackendError> {
    let micro = Micro::for_tier(tier).ok_or_else(|| {
        BackendError::Unavailable(format!("the {tier} tier cannot run on this CPU"))
    })?;
    let wide = model.weight_bits == lastmile_core::quant::WeightBits::W16;
    Executor::new(Table { micro, wide }, model)
}

fn is_depthwise(c: &Conv2d, in_shape: &[usize], w_shape: &[usize]) -> bool {
    c.groups > 1 && c.groups == in_shape[2] && w_shape[3] == 1
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

impl KernelTable for Table {
    type NodeState = Packed;
    type Scratch = Scratch;

    fn prepare_node(
        &self,
        info: NodeInfo<'_>,
        params: &[QParam],
        scratch: &mut Scratch,
    ) -> Result<Packed, BackendError> {
        Ok(pack(
            self.micro,
            &info.node.op,
            info.in_shape,
            params,
            None,
            &mut scratch.pack,
        ))
    }

    fn refresh(
        &self,
        info: NodeInfo<'_>,
        state: &mut Packed,
        params: &[QParam],
        scratch: &mut Scratch,
    ) -> Result<(), BackendError> {
        // Only a trainable weight needs re-packing: the bias is read from `params` by every
        // forward.
        let Some((w, _)) = info.dot_params() else {
            return Ok(());
        };
        if params[w].spec.trainable {
            let old = core::mem::replace(state, Packed::None);
            *state = pack(
                self.micro,
                &info.node.op,
                info.in_shape,
                params,
                Some(old),
                &mut scratch.pack,
            );
        }
        Ok(())
    }

    fn conv2d(
        &self,
        state: &mut Packed,
        scratch: &mut Scratch,
        a: &ConvArgs<'_>,
        y: &mut [i8],
    ) -> Result<(), BackendError> {
        match state {
            Packed::Depthwise(w) => depthwise::depthwise(
                a.attrs,
                &a.q,
                a.x,
                a.in_shape,
                a.w_shape,
                w,
                a.bias,
                a.out_shape,
                a.n,
                y,
                &mut scratch.dw,
            ),
            Packed::Gemm(packs) => gemm::conv2d(
                self.micro,
                self.wide,
                a.attrs,
                &a.q,
                a.x,
                a.in_shape,
                a.w_shape,
                packs,
                a.bias,
                a.out_shape,
                a.n,
                y,
                &mut scratch.gemm,
            ),
            // Every conv is packed at prepare time.
            Packed::None => a.reference(y),
        }
        Ok(())
    }

    fn linear(
        &self,
        state: &mut Packed,
        scratch: &mut Scratch,
        a: &LinearArgs<'_>,
        y: &mut [i8],
    ) -> Result<(), BackendError> {
        match state {
            Packed::Gemm(packs) if packs.len() == 1 => gemm::linear(
                self.micro,
                self.wide,
                &a.q,
                a.x,
                a.f,
                &packs[0],
                a.out,
                a.bias,
                a.n,
                y,
                &mut scratch.gemm,
            ),
            _ => a.reference(y),
        }
        Ok(())
    }

    fn add(
        &self,
        _state: &mut Packed,
        _scratch: &mut Scratch,
        q: AddQuant,
        a: &[i8],
        b: &[i8],
        y: &mut [i8],
    ) -> Result<(), BackendError> {
        eltwise::add(q, a, b, y);
        Ok(())
    }

    fn max_pool(
        &self,
        _state: &mut Packed,
        scratch: &mut Scratch,
        a: &PoolArgs<'_>,
        y: &mut [i8],
    ) -> Result<(), BackendError> {
        eltwise::pool2d(
            a.attrs,
            a.x,
            a.in_shape,
            a.out_shape,
            a.n,
            true,
            y,
            &mut scratch.pool,
        );
        Ok(())
    }

    fn avg_pool(
        &self,
        _state: &mut Packed,
        scratch: &mut Scratch,
        a: &PoolArgs<'_>,
        y: &mut [i8],
    ) -> Result<(), BackendError> {
        eltwise::pool2d(
            a.attrs,
            a.x,
            a.in_shape,
            a.out_shape,
            a.n,
            false,
            y,
            &mut scratch.pool,
        );
        Ok(())
    }

    fn global_avg_pool(
        &self,
        _state: &mut Packed,
        scratch: &mut Scratch,
        x: &[i8],
        in_shape: &[usize],
        n: usize,
        y: &mut [i8],
    ) -> Result<(), BackendError> {
        eltwise::global_avg_pool(x, in_shape, n, y, &mut scratch.pool);
        Ok(())
    }
}
