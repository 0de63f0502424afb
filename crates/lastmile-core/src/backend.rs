//! The graph-level backend contract.
//!
//! A vendor NPU runs whole compiled graphs, so the contract is: **prepare a
//! quantized model once, then `forward` batches again and again** while the
//! trainer changes trainable weights between calls. That is all a backend must
//! do for lastmile to train on it.
//!
//! ## How a backend sees changed weights
//!
//! The trainer owns the one host copy of the parameters (a `&[QParam]`, the
//! model's own list) and changes *trainable* tensors in place. Every
//! [`PreparedModel::forward`] call receives that list:
//!
//! * frozen tensors are guaranteed unchanged since `prepare` (a backend may have
//!   packed or uploaded them once and may ignore them here);
//! * trainable tensors may differ on every call; the backend declares in
//!   [`Capabilities::weight_updates`] how it picks them up — read host memory in
//!   place, upload/re-pack per call, or re-prepare — and what that costs.
//!
//! The trait is object-safe: `Box<dyn Backend>` is chosen at run time.

use alloc::boxed::Box;
use alloc::format;
use alloc::string::String;
use alloc::vec::Vec;
use serde::{Deserialize, Serialize};

use crate::graph::{GraphError, OpKind};
use crate::model::{QParam, QuantModel};
use crate::quant::WeightBits;

/// How trainable-weight changes reach the engine.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum WeightUpdates {
    /// The engine reads the host tensors on every forward; a change costs nothing.
    ReadsHostMemory,
    /// Trainable tensors are converted/uploaded on every forward; `cost` says what that is.
    UploadsEveryForward {
        /// Human-readable cost, e.g. "re-packs trainable weights: ~2 ns/weight".
        cost: String,
    },
    /// The whole model must be prepared again after a change.
    Reprepare {
        /// Human-readable cost.
        cost: String,
    },
}

/// Numerical agreement with the reference backend.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum Exactness {
    /// Every output code identical to the reference. Required of CPU backends.
    BitExact,
    /// Output codes within `max_lsb` of the reference (SDKs that round differently).
    WithinLsb {
        /// Largest allowed |difference| in output codes.
        max_lsb: u8,
        /// Where and why it differs.
        note: String,
    },
}

/// What a backend can run and how.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Capabilities {
    /// Supported op kinds.
    pub ops: Vec<OpKind>,
    /// Supported weight widths.
    pub weight_bits: Vec<WeightBits>,
    /// How trainable-weight changes are picked up.
    pub weight_updates: WeightUpdates,
    /// Agreement with the reference.
    pub exactness: Exactness,
    /// Worker threads a forward may use (1 = single-threaded).
    pub threads: usize,
}

impl Capabilities {
    /// Checks that `model` only uses supported ops and widths; the error names the first
    /// unsupported node.
    pub fn check_model(&self, model: &QuantModel) -> Result<(), BackendError> {
        if !self.weight_bits.contains(&model.weight_bits) {
            return Err(BackendError::Unsupported(format!(
                "{} weights are not supported",
                model.weight_bits.scheme()
            )));
        }
        for (i, node) in model.topology.nodes.iter().enumerate() {
            if !self.ops.contains(&node.op.kind()) {
                return Err(BackendError::Unsupported(format!(
                    "node {i} '{}': op {:?} is not supported",
                    node.name,
                    node.op.kind()
                )));
            }
        }
        Ok(())
    }
}

/// Why a backend call failed.
#[derive(Clone, Debug, PartialEq)]
pub enum BackendError {
    /// The backend cannot run on this machine (missing SDK, CPU feature, library version).
    Unavailable(String),
    /// The model uses something this backend does not support.
    Unsupported(String),
    /// The model failed validation.
    InvalidModel(GraphError),
    /// The forward arguments do not match the prepared model.
    InvalidInput(String),
    /// The engine reported an error.
    Engine(String),
}

impl core::fmt::Display for BackendError {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        match self {
            BackendError::Unavailable(r) => write!(f, "backend unavailable: {r}"),
            BackendError::Unsupported(r) => write!(f, "unsupported: {r}"),
            BackendError::InvalidModel(e) => write!(f, "invalid model: {e}"),
            BackendError::InvalidInput(r) => write!(f, "invalid input: {r}"),
            BackendError::Engine(r) => write!(f, "engine error: {r}"),
        }
    }
}

impl core::error::Error for BackendError {}

impl From<GraphError> for BackendError {
    fn from(e: GraphError) -> Self {
        BackendError::InvalidModel(e)
    }
}

/// An inference engine that can run a quantized graph forward.
pub trait Backend: Send + Sync + core::fmt::Debug {
    /// Short stable name, e.g. `"cpu-ref"`.
    fn name(&self) -> &str;

    /// Kernel tier or engine variant, e.g. `"scalar"`, `"avx512-vnni"`, `"ort-1.32.0"`.
    fn tier(&self) -> &str;

    /// What this backend supports.
    fn capabilities(&self) -> Capabilities;

    /// Validates `model`, derives its constants, packs frozen weights.
    fn prepare(&self, model: &QuantModel) -> Result<Box<dyn PreparedModel>, BackendError>;
}

/// A model prepared by a backend.
pub trait PreparedModel: Send + core::fmt::Debug {
    /// Runs `n` samples (`input.len() == n · Π input_shape`, quantized with the model's
    /// input quantization) and writes `n · Π output_shape` codes to `output`
    /// (resized as needed). `params` is the model's parameter list with the current
    /// trainable values (see the module docs).
    fn forward(
        &mut self,
        params: &[QParam],
        input: &[i8],
        n: usize,
        output: &mut Vec<i8>,
    ) -> Result<(), BackendError>;

    /// Per-sample output shape.
    fn output_shape(&self) -> &[usize];
}

/// Index of the first code with `|code| > bound`. Runs on every trainable tensor before every
/// forward, so it is a branch-free pass in the tensor's own type, which vectorizes (an
/// element-by-element `QData::get` scan cost ~0.6 ns per code, more than re-packing the
/// weights), and looks for the index only when some code is out of range.
fn first_out_of_range(data: &crate::model::QData, bound: i64) -> Option<usize> {
    // In the codes' own type: for `0 ≤ b ≤ T::MAX`, `|x| > b` ⇔ `x > b || x < −b` (−b is
    // representable); a bound above `T::MAX` admits every code, since `|T::MIN| = T::MAX + 1`.
    // OR-ing the comparisons into a byte is a reduction LLVM vectorizes.
    macro_rules! scan {
        ($codes:expr, $t:ty) => {{
            let codes: &[$t] = $codes;
            if bound > <$t>::MAX as i64 {
                return None;
            }
            let b = bound.max(0) as $t;
            let out = |x: $t| (x > b) | (x < -b);
            let mut any = 0u8;
            for &x in codes {
                any |= out(x) as u8;
            }
            if any == 0 {
                return None;
            }
            codes.iter().position(|&x| out(x))
        }};
    }
    match data {
        crate::model::QData::I8(v) => scan!(v, i8),
        crate::model::QData::I16(v) => scan!(v, i16),
        crate::model::QData::I32(v) => scan!(v, i32),
    }
}

/// Common argument checks for [`PreparedModel::forward`] implementations.
///
/// `prepared` is the model as given to `prepare` (its parameter *data* is not read).
/// Checks the parameter count, every tensor's shape and storage type, the input
/// length, and — for trainable tensors, which may have changed since `prepare` — that
/// every code is in the range [`QuantModel::validate`] guarantees (`|w| ≤ qmax`; for
/// biases the width's bias bound, which keeps 8w8a accumulation exact in `i32`).
/// Cost: one pass over the trainable codes, far below the forward itself.
pub fn check_forward_args(
    prepared: &QuantModel,
    params: &[QParam],
    input_len: usize,
    sample_len: usize,
    n: usize,
) -> Result<(), BackendError> {
    if params.len() != prepared.params.len() {
        return Err(BackendError::InvalidInput(format!(
            "got {} parameter tensors, the prepared model has {}",
            params.len(),
            prepared.params.len()
        )));
    }
    let bits = prepared.weight_bits;
    for (p, s) in params.iter().zip(&prepared.params) {
        let s = &s.spec;
        if p.spec.shape != s.shape || p.data.len() != s.numel() {
            return Err(BackendError::InvalidInput(format!(
                "parameter '{}' has shape {:?} ({} values), the prepared model expects {:?}",
                p.spec.name,
                p.spec.shape,
                p.data.len(),
                s.shape
            )));
        }
        let (ok_type, bound) = match (s.role, &p.data) {
            (crate::graph::ParamRole::Weight, crate::model::QData::I8(_)) => {
                (bits == WeightBits::W8, bits.qmax() as i64)
            }
            (crate::graph::ParamRole::Weight, crate::model::QData::I16(_)) => {
                (bits == WeightBits::W16, bits.qmax() as i64)
            }
            (crate::graph::ParamRole::Bias, crate::model::QData::I32(_)) => {
                (true, bits.max_abs_bias())
            }
            _ => (false, 0),
        };
        if !ok_type {
            return Err(BackendError::InvalidInput(format!(
                "parameter '{}' holds {} codes, which a {} {:?} cannot hold",
                p.spec.name,
                p.data.dtype(),
                bits.scheme(),
                s.role
            )));
        }
        if s.trainable
            && let Some(i) = first_out_of_range(&p.data, bound)
        {
            return Err(BackendError::InvalidInput(format!(
                "trainable parameter '{}' code #{i} = {} is outside [-{bound}, {bound}]",
                p.spec.name,
                p.data.get(i)
            )));
        }
    }
    if n.checked_mul(sample_len) != Some(input_len) {
        return Err(BackendError::InvalidInput(format!(
            "input has {input_len} codes, expected {n} samples × {sample_len}"
        )));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::first_out_of_range;
    use crate::model::QData;
    use alloc::vec;

    #[test]
    fn out_of_range_codes_are_found_at_their_index() {
        let mut w8 = vec![127i8; 1000];
        assert_eq!(first_out_of_range(&QData::I8(w8.clone()), 127), None);
        w8[700] = i8::MIN;
        w8[900] = i8::MIN;
        assert_eq!(first_out_of_range(&QData::I8(w8), 127), Some(700));
        let mut w16 = vec![-32767i16; 33];
        assert_eq!(first_out_of_range(&QData::I16(w16.clone()), 32767), None);
        w16[32] = i16::MIN;
        assert_eq!(first_out_of_range(&QData::I16(w16), 32767), Some(32));
        let b = QData::I32(vec![0, 5, -6, 5]);
        assert_eq!(first_out_of_range(&b, 5), Some(2));
        assert_eq!(first_out_of_range(&b, 6), None);
        assert_eq!(first_out_of_range(&QData::I8(vec![i8::MIN]), 128), None);
        assert_eq!(first_out_of_range(&QData::I8(vec![1, -2]), 0), Some(0));
    }
}
