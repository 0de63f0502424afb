//! The one CPU executor every CPU backend shares: the graph walk over a [`Plan`], driven by
//! an op-level [`KernelTable`].
//!
//! The executor owns what is the same for every CPU tier — argument checks, the value
//! buffers, per-node dispatch on `(Op, NodePlan)`, building each op's arguments from the plan
//! and the forward's parameters, and calling [`KernelTable::refresh`] for nodes whose
//! parameters are trainable (they may change between forwards). A tier supplies a table: one
//! slot per op (conv2d, linear, add, max/avg/global pool), each defaulting to the reference
//! kernel in [`crate::kernels`], plus its per-node prepared state (packed weights, folded
//! constants) and its scratch buffers. This is tract's pattern: a portable table, with tiers
//! overriding the slots they accelerate.
//!
//! [`Reference`] is the table with every slot at its default: the executable specification.

use alloc::format;
use alloc::vec;
use alloc::vec::Vec;
use core::fmt::Debug;

use lastmile_core::backend::{BackendError, PreparedModel, check_forward_args};
use lastmile_core::graph::{Conv2d, Node, Op, Pool2d};
use lastmile_core::model::{QData, QParam, QuantModel};
use lastmile_core::plan::{NodePlan, Plan};
use lastmile_core::quant::ActQuant;

use crate::kernels::{self, AddQuant, DotQuant, Weights};

/// What the executor knows about one node, for [`KernelTable::prepare_node`] and
/// [`KernelTable::refresh`].
#[derive(Clone, Copy, Debug)]
pub struct NodeInfo<'a> {
    /// Position in `topology.nodes`.
    pub index: usize,
    /// The node.
    pub node: &'a Node,
    /// Its integer constants.
    pub plan: &'a NodePlan,
    /// Per-sample shape of its first input.
    pub in_shape: &'a [usize],
    /// Per-sample shape of its output.
    pub out_shape: &'a [usize],
    /// Quantization of its first input (for engines that take float scales rather than
    /// the plan's fixed-point multipliers).
    pub in_act: ActQuant,
    /// Quantization of its output.
    pub out_act: ActQuant,
}

impl<'a> NodeInfo<'a> {
    /// Node `index` of `model`, whose plan is `plan`.
    fn new(model: &'a QuantModel, plan: &'a Plan, index: usize) -> Self {
        let node = &model.topology.nodes[index];
        let x = node.inputs[0].index();
        NodeInfo {
            index,
            node,
            plan: &plan.nodes[index],
            in_shape: &plan.shapes[x],
            out_shape: &plan.shapes[index + 1],
            in_act: model.act[x],
            out_act: model.act[index + 1],
        }
    }

    /// The node's weight and bias parameter indices (conv2d / linear), else `None`.
    pub fn dot_params(&self) -> Option<(usize, Option<usize>)> {
        match &self.node.op {
            Op::Conv2d(c) => Some((c.weight.index(), c.bias.map(|b| b.index()))),
            Op::Linear(l) => Some((l.weight.index(), l.bias.map(|b| b.index()))),
            _ => None,
        }
    }
}

/// The arguments of a conv2d slot (NHWC input, OHWI weights).
#[derive(Clone, Copy, Debug)]
pub struct ConvArgs<'a> {
    /// Stride, padding, dilation, groups.
    pub attrs: &'a Conv2d,
    /// Requantization constants.
    pub q: DotQuant<'a>,
    /// Input codes, `n · Π in_shape`.
    pub x: &'a [i8],
    /// Per-sample input shape `[h, w, c_in]`.
    pub in_shape: &'a [usize],
    /// This forward's weight codes.
    pub weights: Weights<'a>,
    /// Weight shape `[c_out, kh, kw, c_in / groups]`.
    pub w_shape: &'a [usize],
    /// This forward's bias codes.
    pub bias: Option<&'a [i32]>,
    /// Per-sample output shape `[ho, wo, c_out]`.
    pub out_shape: &'a [usize],
    /// Batch size.
    pub n: usize,
}

impl ConvArgs<'_> {
    /// The reference kernel ([`kernels::conv2d`]).
    pub fn reference(&self, y: &mut [i8]) {
        kernels::conv2d(
            self.attrs,
            self.q,
            self.x,
            self.in_shape,
            self.weights,
            self.w_shape,
            self.bias,
            self.out_shape,
            self.n,
            y,
        )
    }
}

/// The arguments of a linear slot.
#[derive(Clone, Copy, Debug)]
pub struct LinearArgs<'a> {
    /// Requantization constants.
    pub q: DotQuant<'a>,
    /// Input codes, `[n, f]`.
    pub x: &'a [i8],
    /// Input features.
    pub f: usize,
    /// This forward's weight codes, `[out, f]`.
    pub weights: Weights<'a>,
    /// Output features.
    pub out: usize,
    /// This forward's bias codes.
    pub bias: Option<&'a [i32]>,
    /// Batch size.
    pub n: usize,
}

impl LinearArgs<'_> {
    /// The reference kernel ([`kernels::linear`]).
    pub fn reference(&self, y: &mut [i8]) {
        kernels::linear(
            self.q,
            self.x,
            self.f,
            self.weights,
            self.out,
            self.bias,
            self.n,
            y,
        )
    }
}

/// The arguments of a max / average pool slot.
#[derive(Clone, Copy, Debug)]
pub struct PoolArgs<'a> {
    /// Kernel, stride, padding.
    pub attrs: &'a Pool2d,
    /// Input codes, `n · Π in_shape`.
    pub x: &'a [i8],
    /// Per-sample input shape `[h, w, c]`.
    pub in_shape: &'a [usize],
    /// Per-sample output shape `[ho, wo, c]`.
    pub out_shape: &'a [usize],
    /// Batch size.
    pub n: usize,
}

impl PoolArgs<'_> {
    /// The reference kernel ([`kernels::pool2d`]), max (`max = true`) or average.
    pub fn reference(&self, max: bool, y: &mut [i8]) {
        kernels::pool2d(
            self.attrs,
            self.x,
            self.in_shape,
            self.out_shape,
            self.n,
            max,
            y,
        )
    }
}

/// An op-level kernel table: one slot per op, each defaulting to the reference kernel.
///
/// Every slot must write all of `y` (the executor reuses output buffers without clearing
/// them) and be bit-exact with its default.
///
/// Every slot returns a `Result`, so a tier that runs foreign code (a C library, an
/// accelerator) can report a failure; the defaults cannot fail. Like a
/// [`KernelTable::refresh`] error, a slot error stops the forward — no later node runs —
/// and [`Executor::run`] returns it as is, so it should name the node (keep
/// `node {index} '{name}'` from [`KernelTable::prepare_node`]'s `info` in the node state).
pub trait KernelTable: Debug + Send {
    /// What the tier keeps per node between forwards (packed weights, folded constants).
    type NodeState: Debug + Send;
    /// Buffers shared by all nodes (im2col rows, accumulators, ...).
    type Scratch: Debug + Send + Default;

    /// Prepares one node from the model's parameters (`params` = the model's, at prepare
    /// time). Called once per node, in order.
    fn prepare_node(
        &self,
        info: NodeInfo<'_>,
        params: &[QParam],
        scratch: &mut Self::Scratch,
    ) -> Result<Self::NodeState, BackendError>;

    /// Called before a node runs when its weight or bias is trainable: bring `state` up to
    /// date with this forward's `params`. The default keeps nothing, so does nothing.
    ///
    /// An error (say, a foreign library failing to re-create an operator) stops the forward:
    /// [`Executor::run`] returns it as is, so it should name the node (`info.index`,
    /// `info.node.name`).
    fn refresh(
        &self,
        info: NodeInfo<'_>,
        state: &mut Self::NodeState,
        params: &[QParam],
        scratch: &mut Self::Scratch,
    ) -> Result<(), BackendError> {
        let _ = (info, state, params, scratch);
        Ok(())
    }

    /// 2-D convolution (any groups).
    fn conv2d(
        &self,
        state: &mut Self::NodeState,
        scratch: &mut Self::Scratch,
        args: &ConvArgs<'_>,
        y: &mut [i8],
    ) -> Result<(), BackendError> {
        let _ = (state, scratch);
        args.reference(y);
        Ok(())
    }

    /// Fully connected.
    fn linear(
        &self,
        state: &mut Self::NodeState,
        scratch: &mut Self::Scratch,
        args: &LinearArgs<'_>,
        y: &mut [i8],
    ) -> Result<(), BackendError> {
        let _ = (state, scratch);
        args.reference(y);
        Ok(())
    }

    /// Elementwise add with rescaling (`a`, `b` at least `y.len()` long).
    fn add(
        &self,
        state: &mut Self::NodeState,
        scratch: &mut Self::Scratch,
        q: AddQuant,
        a: &[i8],
        b: &[i8],
        y: &mut [i8],
    ) -> Result<(), BackendError> {
        let _ = (state, scratch);
        kernels::add(q, a, b, y);
        Ok(())
    }

    /// Max pool.
    fn max_pool(
        &self,
        state: &mut Self::NodeState,
        scratch: &mut Self::Scratch,
        args: &PoolArgs<'_>,
        y: &mut [i8],
    ) -> Result<(), BackendError> {
        let _ = (state, scratch);
        args.reference(true, y);
        Ok(())
    }

    /// Average pool (padding excluded, round half away from zero).
    fn avg_pool(
        &self,
        state: &mut Self::NodeState,
        scratch: &mut Self::Scratch,
        args: &PoolArgs<'_>,
        y: &mut [i8],
    ) -> Result<(), BackendError> {
        let _ = (state, scratch);
        args.reference(false, y);
        Ok(())
    }

    /// Global average pool `[n, h, w, c] → [n, c]`.
    #[allow(clippy::too_many_arguments)]
    fn global_avg_pool(
        &self,
        state: &mut Self::NodeState,
        scratch: &mut Self::Scratch,
        x: &[i8],
        in_shape: &[usize],
        n: usize,
        y: &mut [i8],
    ) -> Result<(), BackendError> {
        let _ = (state, scratch);
        kernels::global_avg_pool(x, in_shape, n, y);
        Ok(())
    }
}

/// The reference table: every slot at its default, no prepared state.
#[derive(Clone, Copy, Debug, Default)]
pub struct Reference;

impl KernelTable for Reference {
    type NodeState = ();
    type Scratch = ();

    fn prepare_node(
        &self,
        _info: NodeInfo<'_>,
        _params: &[QParam],
        _scratch: &mut (),
    ) -> Result<(), BackendError> {
        Ok(())
    }
}

/// A parameter tensor's weight codes.
pub fn weights(p: &QParam) -> Weights<'_> {
    match &p.data {
        QData::I8(v) => Weights::I8(v),
        QData::I16(v) => Weights::I16(v),
        // Validation / `check_forward_args` ran first: weights are never i32.
        QData::I32(_) => Weights::I8(&[]),
    }
}

/// A parameter tensor's bias codes (empty if it is not `i32`).
pub fn bias_codes(p: &QParam) -> &[i32] {
    match &p.data {
        QData::I32(v) => v,
        _ => &[],
    }
}

/// A model prepared for one kernel table: the plan, the table's per-node state and scratch,
/// and reusable value buffers.
#[derive(Debug)]
pub struct Executor<T: KernelTable> {
    table: T,
    /// Structure only (parameter data emptied): every forward brings its parameters.
    model: QuantModel,
    plan: Plan,
    states: Vec<T::NodeState>,
    /// Per node: its weight or bias is trainable (refresh before running it).
    trainable: Vec<bool>,
    scratch: T::Scratch,
    /// Value buffers; index 0 (the input) stays empty: the input is read in place.
    values: Vec<Vec<i8>>,
}

impl<T: KernelTable> Executor<T> {
    /// Validates the model, derives its plan and prepares every node with `table`.
    pub fn new(table: T, model: &QuantModel) -> Result<Self, BackendError> {
        model.validate()?;
        let plan = Plan::derive(model)?;
        let mut scratch = T::Scratch::default();
        let mut states = Vec::with_capacity(model.topology.nodes.len());
        let mut trainable = Vec::with_capacity(model.topology.nodes.len());
        for index in 0..model.topology.nodes.len() {
            let info = NodeInfo::new(model, &plan, index);
            trainable.push(info.dot_params().is_some_and(|(w, b)| {
                model.params[w].spec.trainable || b.is_some_and(|b| model.params[b].spec.trainable)
            }));
            states.push(table.prepare_node(info, &model.params, &mut scratch)?);
        }
        let mut model = model.clone();
        for p in &mut model.params {
            p.data = match p.data {
                QData::I8(_) => QData::I8(Vec::new()),
                QData::I16(_) => QData::I16(Vec::new()),
                QData::I32(_) => QData::I32(Vec::new()),
            };
        }
        Ok(Executor {
            table,
            values: vec![Vec::new(); plan.shapes.len()],
            model,
            plan,
            states,
            trainable,
            scratch,
        })
    }

    /// The derived plan.
    pub fn plan(&self) -> &Plan {
        &self.plan
    }

    /// The kernel table.
    pub fn table(&self) -> &T {
        &self.table
    }

    /// Every value of the last [`Executor::run`]; index 0 (the input) is empty.
    pub fn values(&self) -> &[Vec<i8>] {
        &self.values
    }

    /// Copies `input` into value 0, so that [`Executor::values`] holds every value.
    pub fn keep_input(&mut self, input: &[i8]) {
        self.values[0].clear();
        self.values[0].extend_from_slice(input);
    }

    /// Runs the graph on `n` samples with this forward's `params`. Fails on bad arguments
    /// ([`check_forward_args`]), an op the table cannot run, or the first
    /// [`KernelTable::refresh`] or slot error (returned as is; no later node runs).
    pub fn run(&mut self, params: &[QParam], input: &[i8], n: usize) -> Result<(), BackendError> {
        let sample: usize = self.plan.shapes[0].iter().product();
        check_forward_args(&self.model, params, input.len(), sample, n)?;
        let Executor {
            table,
            model,
            plan,
            states,
            trainable,
            scratch,
            values,
        } = self;
        for (i, node) in model.topology.nodes.iter().enumerate() {
            let out_shape = &plan.shapes[i + 1];
            let xi = node.inputs[0].index();
            let xs = &plan.shapes[xi];
            if trainable[i] {
                let info = NodeInfo::new(model, plan, i);
                table.refresh(info, &mut states[i], params, scratch)?;
            }
            let out_len = n * out_shape.iter().product::<usize>();
            // Take the output buffer out so inputs can be borrowed from `values`. Every
            // slot writes all of its output: a buffer of the right size is not cleared.
            let mut y = core::mem::take(&mut values[i + 1]);
            if y.len() != out_len {
                y.clear();
                y.resize(out_len, 0);
            }
            // Value 0 is the input, read in place (never copied).
            let value = |v: usize| -> &[i8] { if v == 0 { input } else { &values[v] } };
            let x = value(xi);
            let state = &mut states[i];
            let ran = match (&node.op, &plan.nodes[i]) {
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
                    let w = &params[c.weight.index()];
                    let args = ConvArgs {
                        attrs: c,
                        q: DotQuant {
                            multipliers,
                            zp_in: *zp_in,
                            zp_out: *zp_out,
                            lo: *lo,
                            hi: *hi,
                        },
                        x,
                        in_shape: xs,
                        weights: weights(w),
                        w_shape: &w.spec.shape,
                        bias: c.bias.map(|b| bias_codes(&params[b.index()])),
                        out_shape,
                        n,
                    };
                    table.conv2d(state, scratch, &args, &mut y)
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
                    let w = &params[l.weight.index()];
                    let args = LinearArgs {
                        q: DotQuant {
                            multipliers,
                            zp_in: *zp_in,
                            zp_out: *zp_out,
                            lo: *lo,
                            hi: *hi,
                        },
                        x,
                        f: xs[0],
                        weights: weights(w),
                        out: w.spec.shape[0],
                        bias: l.bias.map(|b| bias_codes(&params[b.index()])),
                        n,
                    };
                    table.linear(state, scratch, &args, &mut y)
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
                    let b = value(node.inputs[1].index());
                    table.add(state, scratch, q, x, b, &mut y)
                }
                (Op::MaxPool(p) | Op::AvgPool(p), _) => {
                    let args = PoolArgs {
                        attrs: p,
                        x,
                        in_shape: xs,
                        out_shape,
                        n,
                    };
                    if matches!(node.op, Op::MaxPool(_)) {
                        table.max_pool(state, scratch, &args, &mut y)
                    } else {
                        table.avg_pool(state, scratch, &args, &mut y)
                    }
                }
                (Op::GlobalAvgPool, _) => table.global_avg_pool(state, scratch, x, xs, n, &mut y),
                (Op::Flatten, _) => {
                    y.copy_from_slice(x);
                    Ok(())
                }
                (op, _) => Err(BackendError::Unsupported(format!(
                    "node {i} '{}': {:?}",
                    node.name,
                    op.kind()
                ))),
            };
            // Put the buffer back before stopping on an error: the next forward reuses it.
            values[i + 1] = y;
            ran?;
        }
        Ok(())
    }
}

impl<T: KernelTable> PreparedModel for Executor<T> {
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
        match self.values.len() {
            // No nodes: the output is the input.
            0 | 1 => {
                output.clear();
                output.extend_from_slice(input);
            }
            _ => {
                if let Some(last) = self.values.last_mut() {
                    core::mem::swap(output, last);
                }
            }
        }
        Ok(())
    }

    fn output_shape(&self) -> &[usize] {
        self.plan.output_shape()
    }
}
