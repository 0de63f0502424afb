//! # lastmile-bp
//!
//! Float backpropagation on [candle](https://github.com/huggingface/candle)
//! (CPU): the **"BP" baseline** rows of the paper's tables and the
//! **pretrainer** that produces the float models lastmile quantizes.
//!
//! * [`BpModel`] translates *any* [`FloatModel`] of the IR (not a hard-coded
//!   architecture) into a differentiable candle graph whose forward pass equals
//!   [`lastmile_core::float_exec::forward`] up to float rounding (tested on
//!   random graphs covering every op; see below for how the NHWC IR is
//!   lowered).
//! * [`train`] runs softmax cross-entropy with SGD (+ momentum) or AdamW and
//!   writes the trained parameters back into the `FloatModel`, ready for
//!   [`lastmile_core::ptq::quantize`] or `lastmile_core::format::save_float`.
//! * [`evaluate`] gives loss and accuracy.
//! * [`step_memory_estimate`] is the analytic memory of one BP step (weights,
//!   gradients, optimizer state, saved activations), to set beside the
//!   forward-gradient trainer's.
//!
//! ## How the IR becomes a candle graph
//!
//! candle's `conv2d` / pools are NCHW, the IR is NHWC. Rather than permuting
//! between the two, `BpModel` stays in the IR's layout and lowers every windowed
//! op to **gather + matmul** (im2col), which also makes per-axis strides and
//! dilations, asymmetric padding and padding-excluding pools exact by
//! construction:
//!
//! * a `[H, W, C]` value lives as `[n, H·W, C]` (NHWC with H and W merged), an
//!   `[F]` value as `[n, F]`; parameters keep the IR's layout (OHWI,
//!   `[out, in]`), so export is a plain copy;
//! * each conv / pool node gets, at construction, a `u32` table of
//!   `Ho·Wo·KH·KW` input positions — row `oy·Wo + ox`, tap `ky·KW + kx` reads
//!   input pixel `(oy·s_h + ky·d_h − pad_top, ox·s_w + kx·d_w − pad_left)`, or a
//!   **sentinel** row appended after the `H·W` real ones when that pixel is
//!   padding. The sentinel is 0 for convs and average pools and −∞ for max
//!   pools, so padding never wins a max;
//! * `index_select` of that table gives the columns `[n, Ho·Wo·K², C]`; its
//!   backward is one scatter-add (`index_add`).
//!
//! | IR op | candle |
//! |-------|--------|
//! | `Conv2d`, `groups = 1` | columns `[n·L, K²·C]` (tap-major, channel-minor = OHWI order) `matmul` `W[O, K²·C]ᵀ` → `[n, L, O]` |
//! | `Conv2d`, `groups = C_in` (depthwise, any multiplier) | columns `[n·L, K², C, 1]` × `W[K², C, m]`, summed over taps |
//! | `Conv2d`, other groups | per-group batched `matmul` (`[G, n·L, K²·cpg] × [G, K²·cpg, opg]`) |
//! | `Linear` | `x · Wᵀ + b` |
//! | `Add` | `+` |
//! | `MaxPool` | columns (sentinel −∞) → `gather` of the `argmax` over taps (one maximum gets the gradient, as in PyTorch) |
//! | `AvgPool` | columns (sentinel 0) → `sum` over taps → ÷ precomputed count of *valid* taps per window |
//! | `GlobalAvgPool` | `mean` over H·W |
//! | `Flatten` | `reshape` (already H, W, C order) |
//! | fused ReLU / ReLU6 | `relu` / `clamp(0, 6)` |
//!
//! Why not candle's own `conv2d`, `max_pool2d` and `max`:
//!
//! * a training step through candle's `conv2d` (NCHW permutes, its backward a
//!   direct transposed convolution) measured 4–7× slower here (`resnet-tiny`,
//!   28×28, batch 64: ~0.5–0.8 s vs ~0.12–0.2 s per step);
//! * in candle 0.11 the backward of `max_pool2d` scales the gradient by
//!   (number of maxima / window size) instead of 1 / (number of maxima): 4× too
//!   small for 2×2 windows;
//! * the backward of `max` over a dimension gives *every* tied maximum the full
//!   gradient. Ties are common (zeros after ReLU, equal biases over blank image
//!   regions), so max pooling would over-count.
//!
//! `tests/gradients.rs` checks every op's gradient (and the tie case) against
//! central finite differences in f64; `tests/forward_equivalence.rs` checks the
//! forward pass against `float_exec` on random graphs.
//!
//! ## Scope: LP and FT
//!
//! What is trained is decided by each parameter's `spec.trainable` flag **on the
//! model you pass in** — set it before calling [`train`] / [`BpModel::new`].
//! [`Scope::Head`] (LP, linear probing) marks only the last layer's weight and
//! bias, [`Scope::All`] (FT) every parameter; any other predicate works via
//! [`set_trainable`]. Frozen parameters become plain tensors: no gradient is
//! computed or stored for them.
//!
//! ## Threads
//!
//! candle runs its CPU kernels on rayon's global pool and gemm's threads; this
//! crate adds nothing. Set `RAYON_NUM_THREADS=1` in the environment for
//! single-thread numbers.
//!
//! ## Example: pretrain `digits-cnn` (FT), then quantize
//!
//! ```no_run
//! use lastmile_bp::{BpConfig, Budget, Samples, Scope, dataset_inputs, train};
//! use lastmile_core::{ptq, quant::WeightBits, zoo};
//! use lastmile_data::{Split, digits_split};
//!
//! let (train_set, test_set) = (digits_split(Split::Train), digits_split(Split::Test));
//! let (x, tx) = (dataset_inputs(&train_set), dataset_inputs(&test_set));
//! let (topo, specs) = zoo::digits_cnn(10);
//! let mut model = zoo::init_float(topo, specs, 1);
//! Scope::All.apply(&mut model); // FT; Scope::Head for LP
//! let cfg = BpConfig { budget: Budget::Epochs(6), ..BpConfig::default() };
//! let report = train(
//!     &mut model,
//!     Samples::new(&x, &train_set.labels),
//!     Some(Samples::new(&tx, &test_set.labels)),
//!     &cfg,
//! )?;
//! println!("test accuracy {:.3}", report.final_test.unwrap().accuracy);
//! let (q, _) = ptq::quantize(&model, &x[..512 * 64], 512, WeightBits::W16)?;
//! # let _ = q;
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```
#![forbid(unsafe_code)]
#![warn(missing_docs)]

mod memory;
mod model;
mod train;

pub use memory::{MemoryBreakdown, step_memory_estimate};
pub use model::{BpModel, BpParam};
pub use train::{
    BpConfig, BpReport, Budget, EpochStats, LrSchedule, Optimizer, Samples, Stats, StepStats,
    evaluate, evaluate_bp, train,
};

/// Re-export of the candle crate this is built on, so callers can build
/// tensors for [`BpModel::forward`] without naming the version.
pub use candle_core as candle;

use lastmile_core::graph::{GraphError, Op, ParamSpec};
use lastmile_core::model::FloatModel;

/// Errors of this crate.
#[derive(Debug)]
#[non_exhaustive]
pub enum BpError {
    /// The model's graph or parameters are invalid.
    Graph(GraphError),
    /// candle failed (shape or dtype mismatch inside the graph, ...).
    Candle(candle_core::Error),
    /// Bad arguments: data length, labels, config values.
    Input(String),
    /// The training loss became NaN or infinite.
    Diverged {
        /// Step at which it happened (0-based).
        step: usize,
        /// The mean batch loss seen.
        loss: f64,
    },
}

impl core::fmt::Display for BpError {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        match self {
            BpError::Graph(e) => write!(f, "invalid model: {e}"),
            BpError::Candle(e) => write!(f, "candle: {e}"),
            BpError::Input(m) => f.write_str(m),
            BpError::Diverged { step, loss } => write!(
                f,
                "training diverged at step {step} (loss {loss}); lower the learning rate"
            ),
        }
    }
}

impl std::error::Error for BpError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            BpError::Graph(e) => Some(e),
            BpError::Candle(e) => Some(e),
            _ => None,
        }
    }
}

impl From<GraphError> for BpError {
    fn from(e: GraphError) -> Self {
        BpError::Graph(e)
    }
}

impl From<candle_core::Error> for BpError {
    fn from(e: candle_core::Error) -> Self {
        BpError::Candle(e)
    }
}

/// Which parameters to train (sets `spec.trainable`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Scope {
    /// LP: only the parameters of the last node that has parameters (the
    /// classifier head).
    Head,
    /// FT: every parameter.
    All,
}

impl Scope {
    /// Sets `trainable` on every parameter of `model` for this scope (others
    /// become frozen).
    pub fn apply(self, model: &mut FloatModel) {
        match self {
            Scope::All => set_trainable(model, |_| true),
            Scope::Head => {
                let head: Vec<usize> = model
                    .topology
                    .nodes
                    .iter()
                    .rev()
                    .find(|n| matches!(n.op, Op::Conv2d(_) | Op::Linear(_)))
                    .map(|n| n.op.params().iter().map(|(p, _)| p.index()).collect())
                    .unwrap_or_default();
                for (i, p) in model.params.iter_mut().enumerate() {
                    p.spec.trainable = head.contains(&i);
                }
            }
        }
    }
}

/// Marks parameters trainable by a predicate on their spec; the others become frozen.
pub fn set_trainable(model: &mut FloatModel, mut pred: impl FnMut(&ParamSpec) -> bool) {
    for p in &mut model.params {
        p.spec.trainable = pred(&p.spec);
    }
}

/// Every image of `ds` normalized to `[0, 1]` (`Dataset::image_f32`), one
/// after another: the `inputs` of a [`Samples`] whose `labels` are `ds.labels`.
pub fn dataset_inputs(ds: &lastmile_data::Dataset) -> Vec<f32> {
    let per = ds.sample_len();
    let mut out = vec![0f32; ds.len() * per];
    for (i, chunk) in out.chunks_exact_mut(per.max(1)).enumerate().take(ds.len()) {
        ds.image_f32(i, chunk);
    }
    out
}
