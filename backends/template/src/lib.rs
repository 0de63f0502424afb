//! # lastmile-backend-template — the backend a vendor copies
//!
//! Day one, it compiles, delegates every op to the reference backend (`cpu-ref`) and passes
//! the conformance suite. Then, step by step (see `docs/adding-a-backend.md`):
//!
//! 1. copy `backends/template` to `backends/<name>` and rename (`Template` → your type,
//!    `"template"` → your name, `lastmile-backend-template` → `lastmile-backend-<name>`);
//! 2. in [`Backend::prepare`], hand the graph and the integer constants of
//!    [`Plan`] to your SDK's compiler (never derive multipliers yourself: `Plan` does it once,
//!    the same way for every backend);
//! 3. in [`PreparedModel::forward`], upload the trainable tensors that changed, run the
//!    compiled graph, copy out the `i8` codes;
//! 4. declare honestly in [`Capabilities`] what you run, how weight changes reach the device
//!    and how exact you are (`BitExact`, or `WithinLsb` with the measured bound);
//! 5. register the backend and run `cargo xtask test --backend <name>` and
//!    `cargo xtask bench --backend <name>`.
//!
//! Every place to change is marked `VENDOR:`.
#![forbid(unsafe_code)] // VENDOR: an SDK binding needs `unsafe`: keep it in one `ffi` module.
#![warn(missing_docs)]

use lastmile_backend_cpu_ref::Prepared as Reference;
use lastmile_core::backend::{
    Backend, BackendError, Capabilities, Exactness, PreparedModel, WeightUpdates,
    check_forward_args,
};
use lastmile_core::graph::OpKind;
use lastmile_core::model::{QData, QParam, QuantModel};
use lastmile_core::plan::Plan;
use lastmile_core::quant::WeightBits;

/// The backend. VENDOR: rename; hold your SDK's context (device handle, options) here.
#[derive(Clone, Debug, Default)]
pub struct Template {
    _private: (),
}

impl Template {
    /// The registry name (what `--backend` takes). VENDOR: your backend's name.
    pub const NAME: &'static str = "template";

    /// Opens the backend. VENDOR: open the device / load the SDK here and return
    /// `Err(BackendError::Unavailable(reason))` — never panic — when it is missing, with
    /// the reason and the command that fixes it.
    pub fn new() -> Result<Template, BackendError> {
        Ok(Template { _private: () })
    }
}

impl Backend for Template {
    fn name(&self) -> &str {
        Self::NAME
    }

    fn tier(&self) -> &str {
        // VENDOR: your SDK / engine version, e.g. "sdk-2.4.1".
        "reference-delegate"
    }

    fn capabilities(&self) -> Capabilities {
        Capabilities {
            // VENDOR: only the ops and widths your SDK runs (the conformance suite skips the
            // rest, and `prepare` refuses models that use them).
            ops: OpKind::ALL.to_vec(),
            weight_bits: vec![WeightBits::W8, WeightBits::W16],
            // VENDOR: how changed trainable weights reach your device, and what it costs.
            weight_updates: WeightUpdates::UploadsEveryForward {
                cost: "copies changed trainable tensors (template: host copy)".into(),
            },
            // VENDOR: `BitExact` only if the conformance suite passes bit for bit; else
            // `WithinLsb { max_lsb, note }` with the bound you measured and where it differs.
            exactness: Exactness::BitExact,
            threads: 1,
        }
    }

    fn prepare(&self, model: &QuantModel) -> Result<Box<dyn PreparedModel>, BackendError> {
        model.validate()?;
        self.capabilities().check_model(model)?;
        // Every integer constant, derived once and identically for every backend.
        let plan = Plan::derive(model)?;
        for (node, np) in model.topology.nodes.iter().zip(&plan.nodes) {
            // VENDOR: translate each node for your SDK's graph compiler. `np` (a `NodePlan`) has the
            // per-output-channel (M, n) multipliers, zero points and clamp bounds.
            let _ = (node, np);
        }
        // VENDOR: compile the graph and upload every parameter once (frozen ones never change).
        let reference = Reference::new(model)?;
        let device_copy = model.params.iter().map(|p| p.data.clone()).collect();
        Ok(Box::new(TemplateModel {
            structure: structure_of(model),
            output_shape: plan.output_shape().to_vec(),
            sample_len: plan.shapes[0].iter().product(),
            reference,
            device_copy,
        }))
    }
}

/// The model without parameter data, for [`check_forward_args`].
fn structure_of(model: &QuantModel) -> QuantModel {
    let mut s = model.clone();
    for p in &mut s.params {
        p.data = match p.data {
            QData::I8(_) => QData::I8(Vec::new()),
            QData::I16(_) => QData::I16(Vec::new()),
            QData::I32(_) => QData::I32(Vec::new()),
        };
    }
    s
}

/// A prepared model. VENDOR: hold your SDK's compiled-graph handle instead of `reference`.
#[derive(Debug)]
pub struct TemplateModel {
    structure: QuantModel,
    output_shape: Vec<usize>,
    sample_len: usize,
    reference: Reference,
    /// What the "device" holds: the codes of every parameter as last uploaded.
    device_copy: Vec<QData>,
}

impl PreparedModel for TemplateModel {
    fn forward(
        &mut self,
        params: &[QParam],
        input: &[i8],
        n: usize,
        output: &mut Vec<i8>,
    ) -> Result<(), BackendError> {
        // Checks shapes, types, ranges and the input length before anything reaches the SDK.
        check_forward_args(&self.structure, params, input.len(), self.sample_len, n)?;
        for (i, p) in params.iter().enumerate() {
            if p.spec.trainable && self.device_copy[i] != p.data {
                // VENDOR: upload the changed tensor (re-layout it for your device here).
                self.device_copy[i] = p.data.clone();
            }
        }
        // VENDOR: run the compiled graph on the device and copy the i8 codes to `output`;
        // map your SDK's error codes to `BackendError::Engine("what failed: message")`.
        let mut device_params = params.to_vec();
        for (p, d) in device_params.iter_mut().zip(&self.device_copy) {
            p.data = d.clone();
        }
        self.reference.forward(&device_params, input, n, output)
    }

    fn output_shape(&self) -> &[usize] {
        &self.output_shape
    }
}
