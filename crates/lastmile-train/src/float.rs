//! The same forward-gradient algorithm in floating point — the paper's "FF fp" rows.
//!
//! To make "QZO-FF 16w8a vs FF fp" an apples-to-apples comparison, the float path uses
//! the *same* `z` (the integer codes of [`crate::z`] divided by 32), the same ε and
//! learning rate in the same units — "LSBs" of a virtual per-output-channel scale
//! `s_c = max|w_c| / 32767` frozen at the start, exactly as 16-bit quantization would
//! pick — and the same estimators. What differs is only that weights and activations are
//! not quantized (and, with [`FloatPrecision::F16`], weights are rounded to IEEE half
//! after every change, via the `half` crate).
//!
//! Perturbations are applied in place and undone by subtracting the same amount; in
//! floating point that can leave a last-bit drift (as in MeZO). The fixed-point path
//! has no such drift.

use alloc::vec::Vec;
use serde::{Deserialize, Serialize};

use lastmile_core::float_exec;
use lastmile_core::graph::{GraphError, ParamRole};
use lastmile_core::model::FloatModel;

use crate::step::{Estimator, StepConfig, StepReport, check_config};
use crate::z::{Z_STD, ZStream};

/// Storage precision of float weights.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum FloatPrecision {
    /// IEEE single.
    #[default]
    F32,
    /// IEEE half: weights rounded to f16 after every change (compute stays f32).
    F16,
}

/// Forward-gradient training of a float model with the float executor.
#[derive(Debug)]
pub struct FloatTrainer {
    model: FloatModel,
    config: StepConfig,
    precision: FloatPrecision,
    /// Per trainable tensor: (param index, global offset, per-channel virtual scale).
    slots: Vec<(usize, u64, Vec<f32>)>,
    step: u64,
    classes: usize,
}

impl FloatTrainer {
    /// Prepares `model`; the trainable tensors are those marked trainable.
    pub fn new(
        model: FloatModel,
        config: StepConfig,
        precision: FloatPrecision,
    ) -> Result<Self, GraphError> {
        let shapes = model.validate()?;
        check_config(&config).map_err(|m| GraphError {
            location: "step configuration".into(),
            message: m.into(),
        })?;
        if config.momentum.is_some() {
            return Err(GraphError {
                location: "step configuration".into(),
                message: "momentum-guided sampling is implemented for the fixed-point trainer only"
                    .into(),
            });
        }
        let classes = shapes.last().map_or(0, |s| s.iter().product());
        let mut slots = Vec::new();
        let mut offset = 0u64;
        // A bias borrows the virtual scale of its layer's weights (weight-equivalent units).
        let weight_scale = |pi: usize| -> Vec<f32> {
            let p = &model.params[pi];
            let c = p.spec.shape.first().copied().unwrap_or(1).max(1);
            let per = p.data.len() / c;
            (0..c)
                .map(|k| {
                    p.data[k * per..(k + 1) * per]
                        .iter()
                        .fold(0f32, |m, v| m.max(v.abs()))
                        .max(1e-8)
                        / 32767.0
                })
                .collect()
        };
        for (i, p) in model.params.iter().enumerate() {
            if p.spec.trainable {
                let scales = match p.spec.role {
                    ParamRole::Weight => weight_scale(i),
                    ParamRole::Bias => {
                        let user = model.topology.nodes.iter().find_map(|n| {
                            let ps = n.op.params();
                            ps.iter()
                                .any(|(q, _)| q.index() == i)
                                .then(|| ps[0].0.index())
                        });
                        user.map(weight_scale)
                            .unwrap_or_else(|| alloc::vec![1.0 / 32767.0; p.data.len()])
                    }
                };
                slots.push((i, offset, scales));
                offset += p.data.len() as u64;
            }
        }
        let mut t = FloatTrainer {
            model,
            config,
            precision,
            slots,
            step: 0,
            classes,
        };
        t.round_storage();
        Ok(t)
    }

    fn round_storage(&mut self) {
        if self.precision == FloatPrecision::F16 {
            for &(pi, _, _) in &self.slots {
                for v in &mut self.model.params[pi].data {
                    *v = half::f16::from_f32(*v).to_f32();
                }
            }
        }
    }

    /// Adds `amount · s_c · z_d / 32` (summed over `(draw, amount)` pairs) to every trainable weight.
    fn add_along(&mut self, draws: &[(u32, f64)]) {
        for (pi, offset, scales) in &self.slots {
            let data = &mut self.model.params[*pi].data;
            let per = data.len() / scales.len().max(1);
            let mut streams: Vec<(ZStream, f64)> = draws
                .iter()
                .map(|&(d, a)| {
                    (
                        ZStream::new(
                            self.config.seed,
                            self.step,
                            d,
                            self.config.distribution,
                            *offset,
                        ),
                        a,
                    )
                })
                .collect();
            for (i, w) in data.iter_mut().enumerate() {
                let mut g = 0f64;
                for (z, a) in &mut streams {
                    g += *a * z.next_z() as f64 / Z_STD as f64;
                }
                *w += (g * scales[(i / per.max(1)).min(scales.len() - 1)] as f64) as f32;
            }
        }
        self.round_storage();
    }

    fn loss(&self, input: &[f32], labels: &[u8]) -> Result<(f64, usize), GraphError> {
        let y = float_exec::forward(&self.model, input, labels.len())?;
        Ok(float_cross_entropy(&y, labels, self.classes))
    }

    /// One forward-gradient step at learning rate `lr` (in virtual LSBs, as for QZO-FF).
    pub fn step(
        &mut self,
        input: &[f32],
        labels: &[u8],
        lr: f64,
    ) -> Result<StepReport, GraphError> {
        let eps = self.config.epsilon_lsb as f64;
        let m = self.config.draws;
        let mut report = StepReport::default();
        let mut coeffs = Vec::with_capacity(m as usize);
        for d in 0..m {
            self.add_along(&[(d, eps)]);
            let lp = self.loss(input, labels)?.0;
            self.add_along(&[(d, -2.0 * eps)]);
            let lm = self.loss(input, labels)?.0;
            self.add_along(&[(d, eps)]);
            report.forwards += 2;
            report.losses.push((lp, lm));
            let c = match self.config.estimator {
                Estimator::SignSpsa => (lp - lm).signum() * ((lp != lm) as u8 as f64),
                Estimator::Spsa => (lp - lm) / (2.0 * eps),
            };
            coeffs.push((d, -lr * c / m as f64));
        }
        self.add_along(&coeffs);
        self.step += 1;
        Ok(report)
    }

    /// Loss and correct count on a batch.
    pub fn evaluate(&self, input: &[f32], labels: &[u8]) -> Result<(f64, usize), GraphError> {
        self.loss(input, labels)
    }

    /// The trained model.
    pub fn model(&self) -> &FloatModel {
        &self.model
    }
}

/// Mean softmax cross-entropy and correct count from float logits (`libm`, `f64`):
/// [`crate::loss::cross_entropy_f32`].
pub fn float_cross_entropy(logits: &[f32], labels: &[u8], classes: usize) -> (f64, usize) {
    crate::loss::cross_entropy_f32(logits, labels, classes)
}
