//! # lastmile-train — fixed-point forward-gradient training (QZO-FF)
//!
//! Trains a quantized model using nothing but [`lastmile_core::Backend`] forward
//! calls: for each of `m` random directions `z`, perturb the trainable weights in
//! place by `±k·z`, run two forwards, and from the two losses update the weights in
//! fixed point — with `z` regenerated from `(seed, step, draw, element)` every time
//! it is needed, so neither `z` nor a gradient is ever stored.
//!
//! * [`z`] — the portable counter-based perturbation generator.
//! * [`perturb`] — in-place `±k·z` with bit-identical restore; the fused update.
//! * [`step`] — one QZO-FF step (SPSA / sign-SPSA, m draws, sharpness-aware).
//! * [`momentum`] — momentum-guided sampling (opt-in; the one extra buffer).
//! * [`loss`] — softmax cross-entropy from dequantized logits (`libm`: identical everywhere).
//! * [`split`] — frozen prefix (once per batch) / trainable suffix (2m times per step).
//! * [`trainer`] — the loop over a prepared backend.
//! * [`float`] — the same algorithm in f32 / f16 (the paper's "FF fp" rows).
//!
//! The step logic is `no_std` + `alloc`.
#![no_std]
#![forbid(unsafe_code)]
#![warn(missing_docs)]

extern crate alloc;
#[cfg(feature = "std")]
extern crate std;

pub mod float;
pub mod loss;
pub mod momentum;
pub mod perturb;
pub mod split;
pub mod step;
pub mod trainer;
pub mod z;

pub use momentum::{Momentum, MomentumConfig};
pub use perturb::{Rounding, Sparsity, TrainableLayout};
pub use step::{Estimator, StepConfig, StepReport, qzo_step, qzo_step_guided};
pub use trainer::Trainer;
pub use z::Distribution;
