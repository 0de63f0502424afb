//! Float and quantized models: a [`Topology`] plus parameter data.

use alloc::collections::BTreeMap;
use alloc::format;
use alloc::string::String;
use alloc::vec::Vec;

use crate::graph::{GraphError, Op, Topology};
pub use crate::graph::{ParamRole, ParamSpec};
use crate::quant::{ActQuant, WeightBits};

/// Free-form, human-readable metadata (name, dataset, class names, provenance).
pub type Metadata = BTreeMap<String, String>;

/// A float parameter tensor.
#[derive(Clone, Debug, PartialEq)]
pub struct FloatParam {
    /// Name, shape, role, trainable.
    pub spec: ParamSpec,
    /// Row-major values.
    pub data: Vec<f32>,
}

/// A float (f32) model: the source of post-training quantization.
#[derive(Clone, Debug, PartialEq)]
pub struct FloatModel {
    /// Graph structure.
    pub topology: Topology,
    /// Parameters, indexed by [`crate::ParamId`].
    pub params: Vec<FloatParam>,
    /// Metadata carried into the quantized model.
    pub metadata: Metadata,
}

impl FloatModel {
    /// Parameter specs in order.
    pub fn specs(&self) -> Vec<ParamSpec> {
        self.params.iter().map(|p| p.spec.clone()).collect()
    }

    /// Validates the graph and that every tensor has as many values as its shape says
    /// and no NaN/inf; returns per-value shapes.
    pub fn validate(&self) -> Result<Vec<Vec<usize>>, GraphError> {
        let shapes = self.topology.infer_shapes(&self.specs())?;
        for p in &self.params {
            let loc = || format!("parameter '{}'", p.spec.name);
            if p.data.len() != p.spec.numel() {
                return Err(GraphError {
                    location: loc(),
                    message: format!(
                        "has {} values but shape {:?} needs {}",
                        p.data.len(),
                        p.spec.shape,
                        p.spec.numel()
                    ),
                });
            }
            if let Some(i) = p.data.iter().position(|v| !v.is_finite()) {
                return Err(GraphError {
                    location: loc(),
                    message: format!("value #{i} is {} (not finite)", p.data[i]),
                });
            }
        }
        Ok(shapes)
    }
}

/// Quantized parameter storage.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum QData {
    /// 8w8a weights.
    I8(Vec<i8>),
    /// 16w8a weights.
    I16(Vec<i16>),
    /// Biases.
    I32(Vec<i32>),
}

impl QData {
    /// Number of elements.
    pub fn len(&self) -> usize {
        match self {
            QData::I8(v) => v.len(),
            QData::I16(v) => v.len(),
            QData::I32(v) => v.len(),
        }
    }
    /// Whether empty.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
    /// Element type name ("i8", "i16", "i32").
    pub fn dtype(&self) -> &'static str {
        match self {
            QData::I8(_) => "i8",
            QData::I16(_) => "i16",
            QData::I32(_) => "i32",
        }
    }
    /// Bytes of storage.
    pub fn byte_len(&self) -> usize {
        match self {
            QData::I8(v) => v.len(),
            QData::I16(v) => 2 * v.len(),
            QData::I32(v) => 4 * v.len(),
        }
    }
    /// Element `i` widened to i32.
    pub fn get(&self, i: usize) -> i32 {
        match self {
            QData::I8(v) => v[i] as i32,
            QData::I16(v) => v[i] as i32,
            QData::I32(v) => v[i],
        }
    }
}

/// A quantized parameter tensor.
#[derive(Clone, Debug, PartialEq)]
pub struct QParam {
    /// Name, shape, role, trainable.
    pub spec: ParamSpec,
    /// Integer codes.
    pub data: QData,
    /// Per-output-channel scales for weights (`len == shape[0]`); empty for biases,
    /// whose scale is implied (`s_in · s_w[c]`).
    pub scales: Vec<f32>,
}

/// A quantized model: what backends run and the trainer adapts.
#[derive(Clone, Debug, PartialEq)]
pub struct QuantModel {
    /// Graph structure.
    pub topology: Topology,
    /// Weight storage width of every weight tensor.
    pub weight_bits: WeightBits,
    /// Parameters, indexed by [`crate::ParamId`].
    pub params: Vec<QParam>,
    /// Activation quantization per value (index 0 = graph input).
    pub act: Vec<ActQuant>,
    /// Metadata (name, class names, provenance, PTQ report).
    pub metadata: Metadata,
}

impl QuantModel {
    /// Parameter specs in order.
    pub fn specs(&self) -> Vec<ParamSpec> {
        self.params.iter().map(|p| p.spec.clone()).collect()
    }

    /// Full validation: graph shapes, data lengths and types, code ranges
    /// (symmetric weights, the bias bound of [`WeightBits::max_abs_bias`]),
    /// scales, per-value activation parameters, pass-through ops keeping their
    /// input's quantization, and derivable requantization constants.
    /// Returns per-value shapes.
    pub fn validate(&self) -> Result<Vec<Vec<usize>>, GraphError> {
        let shapes = self.topology.infer_shapes(&self.specs())?;
        for p in &self.params {
            validate_param(p, self.weight_bits).map_err(|message| GraphError {
                location: format!("parameter '{}'", p.spec.name),
                message,
            })?;
        }
        if self.act.len() != self.topology.num_values() {
            return Err(GraphError {
                location: "activation quantization".into(),
                message: format!(
                    "has {} entries, expected one per value ({})",
                    self.act.len(),
                    self.topology.num_values()
                ),
            });
        }
        for (v, q) in self.act.iter().enumerate() {
            q.check().map_err(|m| GraphError {
                location: format!("activation quantization of value {v}"),
                message: m.into(),
            })?;
        }
        for (i, node) in self.topology.nodes.iter().enumerate() {
            let out = self.act[i + 1];
            let inp = self.act[node.inputs[0].index()];
            if !node.op.requantizes() && out != inp {
                return Err(GraphError {
                    location: format!("node {i} '{}'", node.name),
                    message: format!(
                        "{:?} does not requantize, so its output quantization {out:?} must equal its input's {inp:?}",
                        node.op.kind()
                    ),
                });
            }
        }
        crate::plan::Plan::derive(self)?;
        Ok(shapes)
    }

    /// Total parameter count.
    pub fn num_params(&self) -> usize {
        self.params.iter().map(|p| p.spec.numel()).sum()
    }

    /// Trainable parameter count.
    pub fn num_trainable(&self) -> usize {
        self.params
            .iter()
            .filter(|p| p.spec.trainable)
            .map(|p| p.spec.numel())
            .sum()
    }

    /// Marks parameters trainable by a predicate on their spec; others become frozen.
    pub fn set_trainable(&mut self, mut pred: impl FnMut(&ParamSpec) -> bool) {
        for p in &mut self.params {
            p.spec.trainable = pred(&p.spec);
        }
    }

    /// Indices of nodes that read a trainable parameter.
    pub fn trainable_nodes(&self) -> Vec<usize> {
        self.topology
            .nodes
            .iter()
            .enumerate()
            .filter(|(_, n)| {
                n.op.params()
                    .iter()
                    .any(|(p, _)| self.params[p.index()].spec.trainable)
            })
            .map(|(i, _)| i)
            .collect()
    }

    /// The node that uses parameter `id` (each parameter has exactly one user in a valid model).
    pub fn user_of(&self, id: crate::ParamId) -> Option<usize> {
        self.topology
            .nodes
            .iter()
            .position(|n| n.op.params().iter().any(|(p, _)| *p == id))
    }

    /// Whether node `i` is a conv/linear (has weights).
    pub fn node_has_weights(&self, i: usize) -> bool {
        matches!(self.topology.nodes[i].op, Op::Conv2d(_) | Op::Linear(_))
    }
}

fn validate_param(p: &QParam, bits: WeightBits) -> Result<(), String> {
    if p.data.len() != p.spec.numel() {
        return Err(format!(
            "has {} values but shape {:?} needs {}",
            p.data.len(),
            p.spec.shape,
            p.spec.numel()
        ));
    }
    match p.spec.role {
        crate::graph::ParamRole::Weight => {
            let ok_type = matches!(
                (&p.data, bits),
                (QData::I8(_), WeightBits::W8) | (QData::I16(_), WeightBits::W16)
            );
            if !ok_type {
                return Err(format!(
                    "stores {} weights but the model is {}",
                    p.data.dtype(),
                    bits.scheme()
                ));
            }
            let qmax = bits.qmax();
            if let Some(i) = (0..p.data.len()).find(|&i| p.data.get(i).abs() > qmax) {
                return Err(format!(
                    "weight #{i} = {} is outside the symmetric range [-{qmax}, {qmax}]",
                    p.data.get(i)
                ));
            }
            let c_out = p.spec.shape.first().copied().unwrap_or(0);
            if p.scales.len() != c_out {
                return Err(format!(
                    "has {} scales, expected one per output channel ({c_out})",
                    p.scales.len()
                ));
            }
            if let Some(i) = p.scales.iter().position(|s| !(s.is_finite() && *s > 0.0)) {
                return Err(format!(
                    "scale #{i} = {} is not finite and positive",
                    p.scales[i]
                ));
            }
        }
        crate::graph::ParamRole::Bias => {
            let QData::I32(v) = &p.data else {
                return Err(format!("bias stored as {}, expected i32", p.data.dtype()));
            };
            if !p.scales.is_empty() {
                return Err("bias must not carry scales (its scale is s_in · s_w)".into());
            }
            let bound = bits.max_abs_bias();
            if let Some(i) = v.iter().position(|&b| (b as i64).abs() > bound) {
                return Err(format!(
                    "bias #{i} = {} exceeds the {} bound |bias| ≤ {bound}",
                    v[i],
                    bits.scheme()
                ));
            }
        }
    }
    Ok(())
}
