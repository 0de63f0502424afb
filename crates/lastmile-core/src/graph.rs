//! The graph IR: a topologically ordered list of nodes over per-sample tensors.
//!
//! * Tensors are **NHWC**; shapes here exclude the batch dimension:
//!   `[H, W, C]` for feature maps, `[F]` for vectors.
//! * Value 0 is the graph input; node `i` produces value `i + 1`; the graph
//!   output is the last node's value. A node may only read earlier values, so
//!   the node list *is* a valid execution order.
//! * Conv weights are `[C_out, KH, KW, C_in / groups]` (OHWI), linear weights
//!   `[out, in]`, biases `[C_out]`. Every weight is used by exactly one node.
//! * `Flatten` of `[H, W, C]` yields `[H·W·C]` in H, W, C order.
//! * `GlobalAvgPool` of `[H, W, C]` yields `[C]`.

use alloc::format;
use alloc::string::{String, ToString};
use alloc::vec;
use alloc::vec::Vec;
use serde::{Deserialize, Serialize};

use crate::quant::{Activation, MAX_K};

/// Index of a value (0 = graph input, `i + 1` = output of node `i`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(transparent)]
pub struct ValueId(pub u32);

impl ValueId {
    /// The graph input.
    pub const INPUT: ValueId = ValueId(0);
    /// The value produced by node `i`.
    pub fn of_node(i: usize) -> ValueId {
        ValueId(i as u32 + 1)
    }
    /// As an index into per-value tables.
    pub fn index(self) -> usize {
        self.0 as usize
    }
}

/// Index of a parameter tensor in the model's parameter list.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(transparent)]
pub struct ParamId(pub u32);

impl ParamId {
    /// As an index into the parameter list.
    pub fn index(self) -> usize {
        self.0 as usize
    }
}

/// What a parameter tensor is for.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ParamRole {
    /// Conv / linear weights (quantized symmetric per output channel).
    Weight,
    /// Bias (quantized to i32 at `s_in · s_w`).
    Bias,
}

/// Description of one parameter tensor, shared by float and quantized models.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ParamSpec {
    /// Unique name, e.g. `"conv1.weight"`.
    pub name: String,
    /// Shape (OHWI for conv weights, `[out, in]` for linear, `[C_out]` for bias).
    pub shape: Vec<usize>,
    /// Weight or bias.
    pub role: ParamRole,
    /// Whether training may change it. Frozen tensors may be packed once by a backend.
    pub trainable: bool,
}

impl ParamSpec {
    /// Number of elements.
    pub fn numel(&self) -> usize {
        self.shape.iter().product()
    }
}

/// 2-D convolution attributes (incl. grouped and depthwise).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Conv2d {
    /// `[C_out, KH, KW, C_in / groups]`.
    pub weight: ParamId,
    /// `[C_out]`, optional.
    pub bias: Option<ParamId>,
    /// `[stride_h, stride_w]`, each ≥ 1.
    pub stride: [usize; 2],
    /// `[top, left, bottom, right]` zero padding (real zero, i.e. the input zero point).
    pub padding: [usize; 4],
    /// `[dilation_h, dilation_w]`, each ≥ 1.
    pub dilation: [usize; 2],
    /// Groups; `groups == C_in == C_out / multiplier` is depthwise.
    pub groups: usize,
    /// Fused activation.
    pub activation: Activation,
}

/// Fully connected layer attributes: `y = W x + b`, input `[F]`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Linear {
    /// `[out, in]`.
    pub weight: ParamId,
    /// `[out]`, optional.
    pub bias: Option<ParamId>,
    /// Fused activation.
    pub activation: Activation,
}

/// Window attributes for max / average pooling.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Pool2d {
    /// `[KH, KW]`.
    pub kernel: [usize; 2],
    /// `[stride_h, stride_w]`.
    pub stride: [usize; 2],
    /// `[top, left, bottom, right]`; padded positions are *excluded* (not counted,
    /// not compared). Each must be smaller than the kernel extent.
    pub padding: [usize; 4],
}

/// An operation.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
#[non_exhaustive]
pub enum Op {
    /// 2-D convolution, input `[H, W, C]`.
    Conv2d(Conv2d),
    /// Fully connected, input `[F]`.
    Linear(Linear),
    /// Elementwise sum of two same-shape inputs, each rescaled to the output scale.
    Add {
        /// Fused activation.
        activation: Activation,
    },
    /// Max pooling, input `[H, W, C]`; output quantization equals the input's.
    MaxPool(Pool2d),
    /// Average pooling, input `[H, W, C]`; output quantization equals the input's.
    AvgPool(Pool2d),
    /// Mean over H and W: `[H, W, C] → [C]`; output quantization equals the input's.
    GlobalAvgPool,
    /// `[H, W, C] → [H·W·C]`; output quantization equals the input's.
    Flatten,
}

impl Op {
    /// Short name of the op kind.
    pub fn kind(&self) -> OpKind {
        match self {
            Op::Conv2d(c) if c.groups > 1 => OpKind::Conv2dGrouped,
            Op::Conv2d(_) => OpKind::Conv2d,
            Op::Linear(_) => OpKind::Linear,
            Op::Add { .. } => OpKind::Add,
            Op::MaxPool(_) => OpKind::MaxPool,
            Op::AvgPool(_) => OpKind::AvgPool,
            Op::GlobalAvgPool => OpKind::GlobalAvgPool,
            Op::Flatten => OpKind::Flatten,
        }
    }

    /// Number of inputs the op takes.
    pub fn arity(&self) -> usize {
        match self {
            Op::Add { .. } => 2,
            _ => 1,
        }
    }

    /// The parameters this op reads, in (weight, bias) order.
    pub fn params(&self) -> Vec<(ParamId, ParamRole)> {
        let (w, b) = match self {
            Op::Conv2d(c) => (c.weight, c.bias),
            Op::Linear(l) => (l.weight, l.bias),
            _ => return Vec::new(),
        };
        let mut v = vec![(w, ParamRole::Weight)];
        if let Some(b) = b {
            v.push((b, ParamRole::Bias));
        }
        v
    }

    /// Whether the output has its own quantization (requantizing ops) or must
    /// reuse the input's (pass-through ops: pools and flatten).
    pub fn requantizes(&self) -> bool {
        matches!(self, Op::Conv2d(_) | Op::Linear(_) | Op::Add { .. })
    }
}

/// Op kinds, for capability declarations.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum OpKind {
    /// Conv2d with groups == 1.
    Conv2d,
    /// Conv2d with groups > 1 (incl. depthwise).
    Conv2dGrouped,
    /// Linear.
    Linear,
    /// Add.
    Add,
    /// MaxPool.
    MaxPool,
    /// AvgPool.
    AvgPool,
    /// GlobalAvgPool.
    GlobalAvgPool,
    /// Flatten.
    Flatten,
}

impl OpKind {
    /// Every op kind of the spec.
    pub const ALL: [OpKind; 8] = [
        OpKind::Conv2d,
        OpKind::Conv2dGrouped,
        OpKind::Linear,
        OpKind::Add,
        OpKind::MaxPool,
        OpKind::AvgPool,
        OpKind::GlobalAvgPool,
        OpKind::Flatten,
    ];
}

/// One node of the graph.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Node {
    /// Unique, human-readable name (used in every error about this node).
    pub name: String,
    /// The operation.
    pub op: Op,
    /// Input values (earlier values only).
    pub inputs: Vec<ValueId>,
}

/// The structure of a network without its numbers.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Topology {
    /// Per-sample input shape (`[H, W, C]` or `[F]`).
    pub input_shape: Vec<usize>,
    /// Nodes in execution order; the last one's value is the output.
    pub nodes: Vec<Node>,
}

/// A graph that failed validation; names the node (or parameter) and the mismatch.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct GraphError {
    /// Where: `node 3 'conv2'`, `parameter 'fc.bias'`, `graph input`, ...
    pub location: String,
    /// What is wrong, with expected and found values.
    pub message: String,
}

impl core::fmt::Display for GraphError {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        write!(f, "{}: {}", self.location, self.message)
    }
}

impl core::error::Error for GraphError {}

fn node_err(i: usize, node: &Node, message: String) -> GraphError {
    GraphError {
        location: format!("node {i} '{}'", node.name),
        message,
    }
}

/// Output size of a strided window along one axis, or `None` if the window
/// does not fit even once.
pub fn window_out(
    input: usize,
    pad_lo: usize,
    pad_hi: usize,
    kernel: usize,
    dilation: usize,
    stride: usize,
) -> Option<usize> {
    let padded = input.checked_add(pad_lo)?.checked_add(pad_hi)?;
    let extent = dilation
        .checked_mul(kernel.checked_sub(1)?)?
        .checked_add(1)?;
    if padded < extent || stride == 0 {
        return None;
    }
    Some((padded - extent) / stride + 1)
}

/// Largest tensor (elements per sample) we accept, to keep index math far from overflow.
pub const MAX_TENSOR_ELEMENTS: usize = 1 << 28;

impl Topology {
    /// Number of values (input + one per node).
    pub fn num_values(&self) -> usize {
        self.nodes.len() + 1
    }

    /// The output value.
    pub fn output(&self) -> ValueId {
        ValueId(self.nodes.len() as u32)
    }

    /// Infers every value's per-sample shape and validates the whole graph against
    /// the parameter specs: arity, value order, every parameter used once and in
    /// its role, weight/bias shapes, strides, padding, groups, the accumulation
    /// bound `K ≤ MAX_K`. The error names the node and the mismatch.
    pub fn infer_shapes(&self, params: &[ParamSpec]) -> Result<Vec<Vec<usize>>, GraphError> {
        if self.nodes.is_empty() {
            return Err(GraphError {
                location: "graph".into(),
                message: "has no nodes".into(),
            });
        }
        check_shape_sane(&self.input_shape).map_err(|m| GraphError {
            location: "graph input".into(),
            message: m,
        })?;
        let mut used: Vec<Option<String>> = vec![None; params.len()];
        let mut names: Vec<&str> = Vec::with_capacity(self.nodes.len());
        let mut shapes: Vec<Vec<usize>> = Vec::with_capacity(self.num_values());
        shapes.push(self.input_shape.clone());

        for (i, node) in self.nodes.iter().enumerate() {
            let err = |m: String| node_err(i, node, m);
            if node.name.is_empty() {
                return Err(err("has an empty name".into()));
            }
            if names.contains(&node.name.as_str()) {
                return Err(err("name is used by an earlier node".into()));
            }
            names.push(&node.name);
            if node.inputs.len() != node.op.arity() {
                return Err(err(format!(
                    "{:?} takes {} input(s), found {}",
                    node.op.kind(),
                    node.op.arity(),
                    node.inputs.len()
                )));
            }
            for v in &node.inputs {
                if v.index() > i {
                    return Err(err(format!(
                        "reads value {} which is not computed before it (only values 0..={i} are)",
                        v.0
                    )));
                }
            }
            for (pid, role) in node.op.params() {
                let Some(spec) = params.get(pid.index()) else {
                    return Err(err(format!(
                        "refers to parameter #{} but the model has {} parameters",
                        pid.0,
                        params.len()
                    )));
                };
                if spec.role != role {
                    return Err(err(format!(
                        "uses parameter '{}' as a {role:?} but it is declared a {:?}",
                        spec.name, spec.role
                    )));
                }
                if let Some(other) = &used[pid.index()] {
                    return Err(err(format!(
                        "uses parameter '{}' which node '{other}' already uses",
                        spec.name
                    )));
                }
                used[pid.index()] = Some(node.name.clone());
            }
            let x = &shapes[node.inputs[0].index()];
            let out = infer_node(node, x, &shapes, params).map_err(err)?;
            check_shape_sane(&out).map_err(|m| err(format!("output {m}")))?;
            shapes.push(out);
        }
        if let Some(unused) = used.iter().position(|u| u.is_none()) {
            return Err(GraphError {
                location: format!("parameter '{}'", params[unused].name),
                message: "is not used by any node".into(),
            });
        }
        Ok(shapes)
    }
}

fn check_shape_sane(shape: &[usize]) -> Result<(), String> {
    if shape.is_empty() || shape.len() > 3 {
        return Err(format!(
            "shape {shape:?} must have 1 ([F]) or 3 ([H, W, C]) dimensions"
        ));
    }
    if shape.len() == 2 {
        return Err(format!(
            "shape {shape:?} has 2 dimensions; use [F] or [H, W, C]"
        ));
    }
    if shape.contains(&0) {
        return Err(format!("shape {shape:?} has a zero dimension"));
    }
    let mut n: usize = 1;
    for &d in shape {
        n = n
            .checked_mul(d)
            .filter(|&n| n <= MAX_TENSOR_ELEMENTS)
            .ok_or_else(|| {
                format!("shape {shape:?} has more than {MAX_TENSOR_ELEMENTS} elements")
            })?;
    }
    Ok(())
}

fn expect_hwc(x: &[usize], what: &str) -> Result<(usize, usize, usize), String> {
    match *x {
        [h, w, c] => Ok((h, w, c)),
        _ => Err(format!(
            "{what} needs an [H, W, C] input, found shape {x:?}"
        )),
    }
}

fn check_bias(bias: Option<ParamId>, params: &[ParamSpec], c_out: usize) -> Result<(), String> {
    if let Some(b) = bias {
        let spec = &params[b.index()];
        if spec.shape != [c_out] {
            return Err(format!(
                "bias '{}' has shape {:?}, expected [{c_out}]",
                spec.name, spec.shape
            ));
        }
    }
    Ok(())
}

fn check_window(
    kernel: [usize; 2],
    stride: [usize; 2],
    dilation: [usize; 2],
) -> Result<(), String> {
    if kernel.contains(&0) || stride.contains(&0) || dilation.contains(&0) {
        return Err(format!(
            "kernel {kernel:?}, stride {stride:?} and dilation {dilation:?} must all be ≥ 1"
        ));
    }
    Ok(())
}

fn infer_node(
    node: &Node,
    x: &[usize],
    shapes: &[Vec<usize>],
    params: &[ParamSpec],
) -> Result<Vec<usize>, String> {
    match &node.op {
        Op::Conv2d(c) => {
            let (h, w, cin) = expect_hwc(x, "conv2d")?;
            let ws = &params[c.weight.index()];
            let [cout, kh, kw, cpg] = ws.shape[..] else {
                return Err(format!(
                    "weight '{}' has shape {:?}, expected 4-D [C_out, KH, KW, C_in/groups]",
                    ws.name, ws.shape
                ));
            };
            check_window([kh, kw], c.stride, c.dilation)?;
            if c.groups == 0 || cin % c.groups != 0 || cout % c.groups != 0 {
                return Err(format!(
                    "groups = {} must divide C_in = {cin} and C_out = {cout}",
                    c.groups
                ));
            }
            if cpg != cin / c.groups {
                return Err(format!(
                    "weight '{}' has shape {:?} but the input has {cin} channels in {} group(s): expected [{cout}, {kh}, {kw}, {}]",
                    ws.name,
                    ws.shape,
                    c.groups,
                    cin / c.groups
                ));
            }
            let k = kh * kw * cpg;
            if k > MAX_K {
                return Err(format!(
                    "reduction length K = {k} exceeds the accumulation bound MAX_K = {MAX_K}"
                ));
            }
            check_bias(c.bias, params, cout)?;
            let [pt, pl, pb, pr] = c.padding;
            let ho = window_out(h, pt, pb, kh, c.dilation[0], c.stride[0]);
            let wo = window_out(w, pl, pr, kw, c.dilation[1], c.stride[1]);
            match (ho, wo) {
                (Some(ho), Some(wo)) => Ok(vec![ho, wo, cout]),
                _ => Err(format!(
                    "a {kh}x{kw} kernel (dilation {:?}) does not fit the {h}x{w} input with padding {:?}",
                    c.dilation, c.padding
                )),
            }
        }
        Op::Linear(l) => {
            let [f] = *x else {
                return Err(format!(
                    "linear needs a [F] input, found shape {x:?} (insert a flatten)"
                ));
            };
            let ws = &params[l.weight.index()];
            let [out, inp] = ws.shape[..] else {
                return Err(format!(
                    "weight '{}' has shape {:?}, expected 2-D [out, in]",
                    ws.name, ws.shape
                ));
            };
            if inp != f {
                return Err(format!(
                    "weight '{}' has shape {:?} but the input has {f} features: expected [{out}, {f}]",
                    ws.name, ws.shape
                ));
            }
            if f > MAX_K {
                return Err(format!(
                    "reduction length K = {f} exceeds the accumulation bound MAX_K = {MAX_K}"
                ));
            }
            check_bias(l.bias, params, out)?;
            Ok(vec![out])
        }
        Op::Add { .. } => {
            let y = &shapes[node.inputs[1].index()];
            if x != y.as_slice() {
                return Err(format!(
                    "inputs have shapes {x:?} and {y:?}; add needs equal shapes"
                ));
            }
            Ok(x.to_vec())
        }
        Op::MaxPool(p) | Op::AvgPool(p) => {
            let (h, w, c) = expect_hwc(x, "pooling")?;
            check_window(p.kernel, p.stride, [1, 1])?;
            let [pt, pl, pb, pr] = p.padding;
            if pt.max(pb) >= p.kernel[0] || pl.max(pr) >= p.kernel[1] {
                return Err(format!(
                    "padding {:?} must be smaller than the kernel {:?}",
                    p.padding, p.kernel
                ));
            }
            match (
                window_out(h, pt, pb, p.kernel[0], 1, p.stride[0]),
                window_out(w, pl, pr, p.kernel[1], 1, p.stride[1]),
            ) {
                (Some(ho), Some(wo)) => Ok(vec![ho, wo, c]),
                _ => Err(format!(
                    "a {:?} window does not fit the {h}x{w} input with padding {:?}",
                    p.kernel, p.padding
                )),
            }
        }
        Op::GlobalAvgPool => {
            let (h, w, c) = expect_hwc(x, "global average pooling")?;
            if h * w > MAX_K {
                return Err(format!("window H·W = {} exceeds MAX_K = {MAX_K}", h * w));
            }
            Ok(vec![c])
        }
        Op::Flatten => Ok(vec![x.iter().product()]),
    }
}

/// Convenience for building topologies in code and tests.
#[derive(Debug, Default)]
pub struct TopologyBuilder {
    topo_input: Vec<usize>,
    nodes: Vec<Node>,
    params: Vec<ParamSpec>,
}

impl TopologyBuilder {
    /// Starts a graph with the given per-sample input shape.
    pub fn new(input_shape: &[usize]) -> Self {
        TopologyBuilder {
            topo_input: input_shape.to_vec(),
            nodes: Vec::new(),
            params: Vec::new(),
        }
    }

    /// The value produced by the last node (or the input).
    pub fn last(&self) -> ValueId {
        ValueId(self.nodes.len() as u32)
    }

    fn param(&mut self, name: String, shape: Vec<usize>, role: ParamRole) -> ParamId {
        self.params.push(ParamSpec {
            name,
            shape,
            role,
            trainable: false,
        });
        ParamId(self.params.len() as u32 - 1)
    }

    /// Adds a node and returns its value.
    pub fn node(&mut self, name: &str, op: Op, inputs: &[ValueId]) -> ValueId {
        self.nodes.push(Node {
            name: name.to_string(),
            op,
            inputs: inputs.to_vec(),
        });
        self.last()
    }

    /// Adds a conv2d reading `input` with `c_in` channels; weights `name.weight`, bias `name.bias`.
    #[allow(clippy::too_many_arguments)]
    pub fn conv2d(
        &mut self,
        name: &str,
        input: ValueId,
        c_in: usize,
        c_out: usize,
        kernel: [usize; 2],
        stride: [usize; 2],
        padding: [usize; 4],
        groups: usize,
        activation: Activation,
    ) -> ValueId {
        let weight = self.param(
            format!("{name}.weight"),
            vec![c_out, kernel[0], kernel[1], c_in / groups.max(1)],
            ParamRole::Weight,
        );
        let bias = Some(self.param(format!("{name}.bias"), vec![c_out], ParamRole::Bias));
        let op = Op::Conv2d(Conv2d {
            weight,
            bias,
            stride,
            padding,
            dilation: [1, 1],
            groups,
            activation,
        });
        self.node(name, op, &[input])
    }

    /// Adds a linear layer.
    pub fn linear(
        &mut self,
        name: &str,
        input: ValueId,
        f_in: usize,
        f_out: usize,
        activation: Activation,
    ) -> ValueId {
        let weight = self.param(
            format!("{name}.weight"),
            vec![f_out, f_in],
            ParamRole::Weight,
        );
        let bias = Some(self.param(format!("{name}.bias"), vec![f_out], ParamRole::Bias));
        self.node(
            name,
            Op::Linear(Linear {
                weight,
                bias,
                activation,
            }),
            &[input],
        )
    }

    /// Finishes: the topology and its parameter specs (all frozen).
    pub fn finish(self) -> (Topology, Vec<ParamSpec>) {
        (
            Topology {
                input_shape: self.topo_input,
                nodes: self.nodes,
            },
            self.params,
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn small() -> (Topology, Vec<ParamSpec>) {
        let mut b = TopologyBuilder::new(&[8, 8, 1]);
        let c1 = b.conv2d(
            "conv1",
            ValueId::INPUT,
            1,
            4,
            [3, 3],
            [1, 1],
            [1, 1, 1, 1],
            1,
            Activation::Relu,
        );
        let p = b.node(
            "pool",
            Op::MaxPool(Pool2d {
                kernel: [2, 2],
                stride: [2, 2],
                padding: [0; 4],
            }),
            &[c1],
        );
        let f = b.node("flatten", Op::Flatten, &[p]);
        b.linear("fc", f, 64, 10, Activation::None);
        b.finish()
    }

    #[test]
    fn shapes_are_inferred() {
        let (t, p) = small();
        let s = t.infer_shapes(&p).unwrap();
        assert_eq!(
            s,
            vec![
                vec![8, 8, 1],
                vec![8, 8, 4],
                vec![4, 4, 4],
                vec![64],
                vec![10]
            ]
        );
    }

    #[test]
    fn errors_name_the_node_and_mismatch() {
        let (t, mut p) = small();
        p[2].shape = vec![10, 63];
        let e = t.infer_shapes(&p).unwrap_err();
        assert_eq!(e.location, "node 3 'fc'");
        assert!(e.message.contains("expected [10, 64]"), "{e}");

        let (mut t, p) = small();
        t.nodes[1].inputs = vec![ValueId(4)];
        let e = t.infer_shapes(&p).unwrap_err();
        assert!(e.to_string().contains("node 1 'pool'"), "{e}");
    }

    #[test]
    fn k_bound_is_enforced() {
        let mut b = TopologyBuilder::new(&[MAX_K + 1]);
        b.linear("fc", ValueId::INPUT, MAX_K + 1, 2, Activation::None);
        let (t, p) = b.finish();
        assert!(t.infer_shapes(&p).unwrap_err().message.contains("MAX_K"));
        let mut b = TopologyBuilder::new(&[MAX_K]);
        b.linear("fc", ValueId::INPUT, MAX_K, 2, Activation::None);
        let (t, p) = b.finish();
        assert!(t.infer_shapes(&p).is_ok());
    }

    #[test]
    fn window_math() {
        assert_eq!(window_out(8, 1, 1, 3, 1, 1), Some(8));
        assert_eq!(window_out(7, 0, 0, 3, 2, 2), Some(2));
        assert_eq!(window_out(2, 0, 0, 3, 1, 1), None);
        assert_eq!(window_out(5, 0, 0, 0, 1, 1), None);
    }
}
