//! # lastmile-backend-onnxruntime — training on ONNX Runtime's CPU execution provider
//!
//! The quantized graph is emitted as an ONNX model (`QLinearConv`, `QGemm` for linear,
//! QDQ, integer `MaxPool`) whose **trainable** weights and biases are graph *inputs*, so
//! the trainer changes them between forwards without a new session. The library is
//! `libonnxruntime.so.1.32.0` from the PyPI wheel `onnxruntime==1.32.0`, loaded at run
//! time through the `ort` crate (`load-dynamic`, default features off):
//!
//! * [`ENV_ORT_LIB`] (`LASTMILE_ORT_LIB`) names the library file; otherwise
//!   [`default_lib_path`] (`target/sdk/onnxruntime/`, filled by
//!   `cargo xtask sdk onnxruntime`, sha256-checked).
//! * A missing or broken library is [`BackendError::Unavailable`] naming the path,
//!   the problem and the command that fixes it — never a panic.
//!
//! ## Exactness (measured: `tests/exactness.rs`, `tests/ties.rs`)
//!
//! ORT's `QLinearConv` requantizes with an `f32` multiplier and rounds half to **even**;
//! the spec uses a 31-bit fixed-point multiplier and rounds half **up**, and computes
//! add with two 20-bit fixed-point rescales where the emitted QDQ add works in `f32`.
//! Average pools are emitted with an exact round-half-away-from-zero in `f32`, so
//! they match. Measured on ORT 1.32.0 (300 generated cases per conformance family,
//! 8w8a, ~350 000 output codes, plus two PTQ'd zoo models): **0 codes differ**. At an
//! exact requantization tie (`acc·r = k + ½`, e.g. power-of-two scale ratios) ORT
//! gives the even neighbour: 1 LSB below the spec for half of the ties. Hence
//! [`Exactness::WithinLsb`] `{ max_lsb: 1 }`. 16w8a is unsupported (ORT's QLinear ops
//! take 8-bit weights only) and declared so.
#![deny(unsafe_code)]
#![warn(missing_docs)]

mod emit;
#[allow(unsafe_code)]
mod ffi;
pub mod onnx;

use std::borrow::Cow;
use std::path::{Path, PathBuf};
use std::sync::OnceLock;

use lastmile_core::backend::{
    Backend, BackendError, Capabilities, Exactness, PreparedModel, WeightUpdates,
    check_forward_args,
};
use lastmile_core::graph::OpKind;
use lastmile_core::model::{QData, QParam, QuantModel};
use lastmile_core::plan::Plan;
use lastmile_core::quant::WeightBits;
use ort::session::builder::GraphOptimizationLevel;
use ort::session::{Session, SessionInputValue};
use ort::value::TensorRef;

/// Environment variable naming the ONNX Runtime shared library to load.
pub const ENV_ORT_LIB: &str = "LASTMILE_ORT_LIB";
/// Environment variable setting intra-op threads per forward (default 1).
pub const ENV_THREADS: &str = "LASTMILE_THREADS";
/// The ONNX Runtime release this backend is built and measured against.
pub const ORT_VERSION: &str = "1.32.0";
/// The library file name inside the wheel and the SDK directory.
pub const ORT_LIB_FILE: &str = "libonnxruntime.so.1.32.0";
/// The command that installs the library.
pub const INSTALL_COMMAND: &str = "cargo xtask sdk onnxruntime";

/// Largest |output code − reference| measured (see the crate docs).
pub const MAX_LSB: u8 = 1;

/// Where `cargo xtask sdk onnxruntime` puts the library: `<workspace>/target/sdk/onnxruntime/`.
pub fn default_lib_path() -> PathBuf {
    let manifest = Path::new(env!("CARGO_MANIFEST_DIR"));
    let root = manifest.parent().and_then(Path::parent).unwrap_or(manifest);
    root.join("target")
        .join("sdk")
        .join("onnxruntime")
        .join(ORT_LIB_FILE)
}

/// The library this process loads: [`ENV_ORT_LIB`] if set, else [`default_lib_path`].
pub fn lib_path() -> PathBuf {
    match std::env::var_os(ENV_ORT_LIB) {
        Some(p) if !p.is_empty() => PathBuf::from(p),
        _ => default_lib_path(),
    }
}

/// Checks that `path` is an ONNX Runtime library this backend can use and returns its
/// version, without loading it into `ort` (which happens once per process). The error
/// names the path, the problem and the fix.
pub fn probe(path: &Path) -> Result<String, String> {
    let fix = format!("run `{INSTALL_COMMAND}` or set {ENV_ORT_LIB} to a libonnxruntime.so ≥ 1.24");
    if !path.exists() {
        return Err(format!(
            "ONNX Runtime library not found at {} ({fix})",
            path.display()
        ));
    }
    if !path.is_file() {
        return Err(format!("{} is not a file ({fix})", path.display()));
    }
    let version = ffi::library_version(path).map_err(|e| format!("{e} ({fix})"))?;
    let minor: u32 = version
        .split('.')
        .nth(1)
        .and_then(|m| m.parse().ok())
        .unwrap_or(0);
    if !version.starts_with("1.") || minor < 24 {
        return Err(format!(
            "{} is ONNX Runtime {version}; this backend needs ≥ 1.24 (built against {ORT_VERSION}) ({fix})",
            path.display()
        ));
    }
    Ok(version)
}

struct Runtime {
    env: ort::environment::Environment,
    version: String,
}

static RUNTIME: OnceLock<Result<Runtime, String>> = OnceLock::new();

fn load() -> Result<Runtime, String> {
    let path = lib_path();
    let version = probe(&path)?;
    let fix = format!("run `{INSTALL_COMMAND}` or set {ENV_ORT_LIB} to a libonnxruntime.so ≥ 1.24");
    let builder = ort::init_from(&path).map_err(|e| {
        format!(
            "cannot load ONNX Runtime from {}: {e} ({fix})",
            path.display()
        )
    })?;
    let env = builder
        .with_name("lastmile")
        .with_telemetry(false)
        .build()
        .map_err(|e| format!("ONNX Runtime at {} failed to start: {e}", path.display()))?;
    Ok(Runtime { env, version })
}

fn runtime() -> Result<&'static Runtime, BackendError> {
    RUNTIME
        .get_or_init(load)
        .as_ref()
        .map_err(|e| BackendError::Unavailable(e.clone()))
}

fn engine(what: &str, e: impl std::fmt::Display) -> BackendError {
    BackendError::Engine(format!("onnxruntime: {what}: {e}"))
}

/// The ONNX Runtime backend (CPU execution provider).
#[derive(Clone, Debug)]
pub struct OnnxRuntime {
    tier: String,
    threads: usize,
}

impl OnnxRuntime {
    /// The backend's registry name.
    pub const NAME: &'static str = "onnxruntime";

    /// Loads the library (once per process); threads from [`ENV_THREADS`] (default 1).
    pub fn new() -> Result<Self, BackendError> {
        let threads = match std::env::var(ENV_THREADS) {
            Ok(v) if !v.trim().is_empty() => match v.trim().parse::<usize>() {
                Ok(n) if n >= 1 => n,
                _ => {
                    return Err(BackendError::Unavailable(format!(
                        "{ENV_THREADS}={v}: expected a positive integer"
                    )));
                }
            },
            _ => 1,
        };
        Self::with_threads(threads)
    }

    /// Loads the library (once per process); `threads` intra-op threads per forward.
    pub fn with_threads(threads: usize) -> Result<Self, BackendError> {
        let rt = runtime()?;
        Ok(OnnxRuntime {
            tier: format!("ort-{}", rt.version),
            threads: threads.max(1),
        })
    }

    /// The loaded ONNX Runtime version (e.g. "1.32.0").
    pub fn version(&self) -> &str {
        self.tier.trim_start_matches("ort-")
    }

    /// Serialized ONNX model of `model` (for inspection with other tools).
    pub fn onnx_bytes(model: &QuantModel) -> Result<Vec<u8>, BackendError> {
        model.validate()?;
        let plan = Plan::derive(model)?;
        emit::emit(model, &plan)
            .map(|e| e.bytes)
            .map_err(BackendError::Unsupported)
    }
}

impl Backend for OnnxRuntime {
    fn name(&self) -> &str {
        Self::NAME
    }

    fn tier(&self) -> &str {
        &self.tier
    }

    fn capabilities(&self) -> Capabilities {
        Capabilities {
            ops: OpKind::ALL.to_vec(),
            weight_bits: vec![WeightBits::W8],
            weight_updates: WeightUpdates::UploadsEveryForward {
                cost: "trainable tensors are session inputs fed every forward (conv weights \
                       transposed on the host; ORT packs non-constant weights inside each run)"
                    .into(),
            },
            exactness: Exactness::WithinLsb {
                max_lsb: MAX_LSB,
                note: "ORT rounds requantization ties half to even (spec: half up); \
                       measured 0 codes off in ~350k random conformance codes"
                    .into(),
            },
            threads: self.threads,
        }
    }

    fn prepare(&self, model: &QuantModel) -> Result<Box<dyn PreparedModel>, BackendError> {
        model.validate()?;
        self.capabilities().check_model(model)?;
        let plan = Plan::derive(model)?;
        let emitted = emit::emit(model, &plan).map_err(BackendError::Unsupported)?;
        let rt = runtime()?;
        let session = Session::builder(&rt.env)
            .map_err(|e| engine("session builder", e))?
            .with_optimization_level(GraphOptimizationLevel::All)
            .map_err(|e| engine("optimization level", e))?
            .with_intra_threads(self.threads)
            .map_err(|e| engine("intra-op threads", e))?
            .with_inter_threads(1)
            .map_err(|e| engine("inter-op threads", e))?
            .commit_from_memory(&emitted.bytes)
            .map_err(|e| engine("loading the emitted model", e))?;
        let mut structure = model.clone();
        for p in &mut structure.params {
            p.data = match p.data {
                QData::I8(_) => QData::I8(Vec::new()),
                QData::I16(_) => QData::I16(Vec::new()),
                QData::I32(_) => QData::I32(Vec::new()),
            };
        }
        let bufs = vec![Vec::new(); emitted.feeds.len()];
        Ok(Box::new(Prepared {
            model: structure,
            session,
            feeds: emitted.feeds,
            bufs,
            x_u8: Vec::new(),
            shapes: plan.shapes,
        }))
    }
}

/// A model prepared on ONNX Runtime: one session, fed the trainable tensors per forward.
pub struct Prepared {
    model: QuantModel,
    session: Session,
    feeds: Vec<emit::Feed>,
    bufs: Vec<Vec<i8>>,
    x_u8: Vec<u8>,
    shapes: Vec<Vec<usize>>,
}

impl std::fmt::Debug for Prepared {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("onnxruntime::Prepared")
            .field("nodes", &self.model.topology.nodes.len())
            .field("trainable_inputs", &self.feeds.len())
            .finish()
    }
}

impl PreparedModel for Prepared {
    fn forward(
        &mut self,
        params: &[QParam],
        input: &[i8],
        n: usize,
        output: &mut Vec<i8>,
    ) -> Result<(), BackendError> {
        let sample: usize = self.shapes[0].iter().product();
        check_forward_args(&self.model, params, input.len(), sample, n)?;
        output.clear();
        if n == 0 {
            return Ok(());
        }
        for (f, buf) in self.feeds.iter().zip(self.bufs.iter_mut()) {
            if let (Some(s), QData::I8(w)) = (f.ohwi, &params[f.pid].data) {
                emit::ohwi_to_oihw(w, s, buf);
            }
        }
        let mut xdims = vec![n];
        xdims.extend_from_slice(&self.shapes[0]);
        // int8 code q ↔ uint8 q + 128: flip the sign bit.
        self.x_u8.clear();
        self.x_u8.extend(input.iter().map(|&q| q as u8 ^ 0x80));
        let input = self.x_u8.as_slice();
        let mut inputs: Vec<(Cow<'_, str>, SessionInputValue<'_>)> =
            Vec::with_capacity(1 + self.feeds.len());
        inputs.push((
            Cow::Borrowed("x"),
            TensorRef::from_array_view((xdims, input))
                .map_err(|e| engine("input tensor", e))?
                .into(),
        ));
        for (f, buf) in self.feeds.iter().zip(&self.bufs) {
            let v = match (&params[f.pid].data, f.ohwi) {
                (QData::I8(_), Some(_)) => {
                    TensorRef::from_array_view((f.dims.clone(), buf.as_slice())).map(Into::into)
                }
                (QData::I8(w), None) => {
                    TensorRef::from_array_view((f.dims.clone(), w.as_slice())).map(Into::into)
                }
                (QData::I32(b), _) => {
                    TensorRef::from_array_view((f.dims.clone(), b.as_slice())).map(Into::into)
                }
                (d, _) => {
                    return Err(BackendError::InvalidInput(format!(
                        "parameter '{}' holds {} codes",
                        params[f.pid].spec.name,
                        d.dtype()
                    )));
                }
            };
            let v: SessionInputValue<'_> = v.map_err(|e| engine(&f.name, e))?;
            inputs.push((Cow::Borrowed(f.name.as_str()), v));
        }
        let outputs = self.session.run(inputs).map_err(|e| engine("run", e))?;
        let y = outputs
            .get("y")
            .ok_or_else(|| engine("run", "no output 'y'"))?;
        let (_, codes) = y
            .try_extract_tensor::<u8>()
            .map_err(|e| engine("reading the output", e))?;
        output.extend(codes.iter().map(|&u| (u ^ 0x80) as i8));
        Ok(())
    }

    fn output_shape(&self) -> &[usize] {
        self.shapes.last().map(|s| s.as_slice()).unwrap_or(&[])
    }
}

pub mod bench_support {
    //! Hooks for `benches/`: run a hand-built ONNX model (e.g. a bare `QLinearMatMul`)
    //! on the same loaded library. Not a stable API.

    use super::*;

    /// A session over one int8 input `x` and int8 output `y`.
    pub struct RawSession {
        session: Session,
    }

    impl std::fmt::Debug for RawSession {
        fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
            f.write_str("RawSession")
        }
    }

    impl RawSession {
        /// Loads `model` (serialized `ModelProto`) with `threads` intra-op threads.
        pub fn new(model: &[u8], threads: usize) -> Result<Self, BackendError> {
            let rt = runtime()?;
            let session = Session::builder(&rt.env)
                .map_err(|e| engine("session builder", e))?
                .with_optimization_level(GraphOptimizationLevel::All)
                .map_err(|e| engine("optimization level", e))?
                .with_intra_threads(threads.max(1))
                .map_err(|e| engine("intra-op threads", e))?
                .commit_from_memory(model)
                .map_err(|e| engine("loading the model", e))?;
            Ok(RawSession { session })
        }

        /// Runs with input `x` of shape `dims`, writing `y` to `out`.
        pub fn run(
            &mut self,
            dims: &[usize],
            x: &[u8],
            out: &mut Vec<u8>,
        ) -> Result<(), BackendError> {
            let t =
                TensorRef::from_array_view((dims.to_vec(), x)).map_err(|e| engine("input", e))?;
            let outputs = self
                .session
                .run(vec![(Cow::Borrowed("x"), SessionInputValue::from(t))])
                .map_err(|e| engine("run", e))?;
            let (_, y) = outputs
                .get("y")
                .ok_or_else(|| engine("run", "no output 'y'"))?
                .try_extract_tensor::<u8>()
                .map_err(|e| engine("output", e))?;
            out.clear();
            out.extend_from_slice(y);
            Ok(())
        }
    }

    /// A bare `QLinearMatMul` `[N, k] × [k, m]`, u8 activations × s8 weights (ORT's fast
    /// path), per-tensor scales, the weights an initializer (no bias: it has none).
    pub fn qlinear_matmul_model(k: usize, m: usize, w_km: &[i8]) -> Vec<u8> {
        use crate::onnx::{DataType, Dim, Graph};
        let mut g = Graph::default();
        g.input("x", DataType::U8, &[Dim::Param("N"), Dim::Value(k)]);
        g.init_f32("xs", &[], &[0.02]);
        g.init_u8("xz", &[], &[125]);
        g.init_i8("w", &[k, m], w_km);
        g.init_f32("ws", &[], &[0.01]);
        g.init_i8("wz", &[], &[0]);
        g.init_f32("ys", &[], &[0.05]);
        g.init_u8("yz", &[], &[129]);
        g.node(
            "QLinearMatMul",
            "",
            &["x", "xs", "xz", "w", "ws", "wz", "ys", "yz"],
            &["y"],
            &[],
        );
        g.output("y", DataType::U8, &[Dim::Param("N"), Dim::Value(m)]);
        g.into_model("qlinear_matmul", false)
    }
}
