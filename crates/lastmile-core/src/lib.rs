//! # lastmile-core
//!
//! The fixed-point contract every part of lastmile stands on:
//!
//! * [`quant`] — quantization parameters (int8 activations, int8/int16 symmetric
//!   per-channel weights) and the **integer arithmetic spec**: exact accumulation
//!   bounds, fixed-point requantization with one rounding rule, saturation, fused
//!   ReLU/ReLU6.
//! * [`graph`] — the graph IR (conv2d incl. depthwise, linear, add, pools,
//!   flatten) with shape inference and validation.
//! * [`model`] — float and quantized models built on that IR, with every weight
//!   marked frozen or trainable.
//! * [`float_exec`] — a plain f32 executor of the IR (calibration and oracles).
//! * [`ptq`] — post-training quantization to 8w8a / 16w8a.
//! * [`plan`] — the per-node integer constants (requant multipliers, clamps)
//!   derived *once* from float scales, shared by every backend.
//! * [`backend`] — the graph-level [`backend::Backend`] trait.
//! * [`format`] — the versioned model file format.
//!
//! `no_std` + `alloc`: the same code runs on a Cortex-M4F.
#![no_std]
#![forbid(unsafe_code)]
#![warn(missing_docs)]

extern crate alloc;
#[cfg(feature = "std")]
extern crate std;

pub mod backend;
pub mod float_exec;
pub mod format;
pub mod graph;
pub mod model;
pub mod plan;
pub mod ptq;
pub mod quant;
pub mod tensor;
pub mod zoo;

pub use backend::{Backend, BackendError, Capabilities, Exactness, PreparedModel, WeightUpdates};
pub use graph::{Node, Op, ParamId, Topology, ValueId};
pub use model::{FloatModel, ParamRole, ParamSpec, QData, QParam, QuantModel};
pub use quant::{ActQuant, Activation, QuantMultiplier, WeightBits};
