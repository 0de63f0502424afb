//! One QZO-FF step: `2m` forward calls (or `4m` with sharpness-aware perturbation),
//! then the fused fixed-point update. Backend-agnostic: the caller supplies a loss
//! closure that runs the current parameters forward on the current batch.

use alloc::vec::Vec;
use serde::{Deserialize, Serialize};

use lastmile_core::model::QParam;

use crate::momentum::{Momentum, MomentumConfig, direction_weights};
use crate::perturb::{
    self, COEFF_SHIFT, DrawKey, Guide, Rounding, SatLog, Sparsity, TrainableLayout, UpdateKey,
    UpdateStats,
};
use crate::z::{Distribution, MAX_DRAWS, Z_SHIFT};

/// How a draw's loss difference becomes its update coefficient.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Estimator {
    /// `ĝ = (L⁺ − L⁻) / (2k) · z` — the two-point SPSA estimate (loss per LSB).
    Spsa,
    /// `ĝ = sign(L⁺ − L⁻) · z` — scale-free, exactly representable (the paper's sign-m-SPSA
    /// when averaged over m draws).
    #[default]
    SignSpsa,
}

/// Everything that defines a QZO-FF step.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct StepConfig {
    /// Run seed: with the data order, it fixes the whole trajectory.
    pub seed: u64,
    /// Perturbations averaged per step (m).
    pub draws: u32,
    /// SPSA or sign-SPSA.
    pub estimator: Estimator,
    /// Distribution of z.
    pub distribution: Distribution,
    /// ε in weight LSBs (k ≥ 1): a weight moves by `round(k·z/32)` in each perturbation.
    pub epsilon_lsb: u32,
    /// Learning rate: expected |update| in weight LSBs per unit of normalized gradient
    /// (for sign-SPSA with m = 1, the update is `lr·z/32`).
    pub lr: f64,
    /// Rounding of updates.
    pub rounding: Rounding,
    /// Sharpness-aware perturbation: ascend `rho` LSBs along the first estimate, take the
    /// gradient there, apply it at the original weights. `None` = off.
    pub sharpness_rho: Option<f64>,
    /// Kernel-wise normalization: rescale z per output channel to RMS exactly 32, so
    /// every kernel is perturbed by the same relative amount.
    #[serde(default)]
    pub kernel_norm: bool,
    /// Sparse update: which weights train (applied when the trainer lays out tensors).
    #[serde(default)]
    pub sparsity: Sparsity,
    /// Momentum-guided sampling: draw z partly along a running momentum of past update
    /// directions (an extra `i16` per trainable element; see [`crate::momentum`]).
    /// `None` = off.
    #[serde(default)]
    pub momentum: Option<MomentumConfig>,
}

impl Default for StepConfig {
    fn default() -> Self {
        StepConfig {
            seed: 0,
            draws: 1,
            estimator: Estimator::SignSpsa,
            distribution: Distribution::Gaussian,
            epsilon_lsb: 1,
            lr: 1.0,
            rounding: Rounding::Nearest,
            sharpness_rho: None,
            kernel_norm: false,
            sparsity: Sparsity::default(),
            momentum: None,
        }
    }
}

/// Why a step could not be taken.
#[derive(Debug)]
pub enum StepError<E> {
    /// The configuration is unusable (says which field and why).
    Config(&'static str),
    /// The loss closure failed.
    Loss(E),
    /// A loss was NaN or infinite; the weights were restored before returning.
    NonFinite {
        /// Draw at which it happened.
        draw: u32,
    },
}

impl<E: core::fmt::Display> core::fmt::Display for StepError<E> {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        match self {
            StepError::Config(m) => write!(f, "invalid step configuration: {m}"),
            StepError::Loss(e) => write!(f, "forward failed: {e}"),
            StepError::NonFinite { draw } => {
                write!(f, "loss is not finite at draw {draw}; weights restored")
            }
        }
    }
}

/// What one step did.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct StepReport {
    /// `(L⁺, L⁻)` per draw (of the final estimate when sharpness-aware).
    pub losses: Vec<(f64, f64)>,
    /// Q16 coefficients applied, per draw.
    pub coeffs: Vec<(u32, i64)>,
    /// Codes that saturated while perturbing (restored exactly).
    pub perturb_saturations: u64,
    /// Changed / saturated codes of the update.
    pub update: UpdateStats,
    /// Forward calls made.
    pub forwards: u32,
}

impl StepReport {
    /// Mean of `(L⁺ + L⁻)/2` over draws: a cheap estimate of the loss at the weights.
    pub fn mean_loss(&self) -> f64 {
        if self.losses.is_empty() {
            return f64::NAN;
        }
        self.losses.iter().map(|(a, b)| (a + b) / 2.0).sum::<f64>() / self.losses.len() as f64
    }
}

/// Validates a configuration.
pub fn check_config(cfg: &StepConfig) -> Result<(), &'static str> {
    if cfg.draws == 0 {
        return Err("draws (m) must be at least 1");
    }
    let needed = if cfg.sharpness_rho.is_some() {
        2 * cfg.draws
    } else {
        cfg.draws
    };
    if needed > MAX_DRAWS - 1 {
        return Err("too many draws per step (at most 127 with sharpness-aware, 254 without)");
    }
    if cfg.epsilon_lsb == 0 {
        return Err("epsilon must be at least 1 LSB");
    }
    if !(cfg.lr.is_finite() && cfg.lr >= 0.0) {
        return Err("learning rate must be finite and ≥ 0");
    }
    for f in [
        cfg.sparsity.channel_fraction,
        cfg.sparsity.magnitude_fraction,
    ]
    .into_iter()
    .flatten()
    {
        if !(f > 0.0 && f <= 1.0) {
            return Err("sparse-update fractions must be in (0, 1]");
        }
    }
    if let Some(rho) = cfg.sharpness_rho
        && !(rho.is_finite() && rho > 0.0)
    {
        return Err("sharpness rho must be finite and > 0");
    }
    if let Some(m) = &cfg.momentum {
        m.check()?;
    }
    Ok(())
}

/// Estimates the gradient from draws `first..first+m` at the current weights: runs
/// `2m` forwards, restoring the weights exactly after each. Returns per-draw losses.
#[allow(clippy::too_many_arguments)] // the step's state, threaded through explicitly
fn estimate<E>(
    params: &mut [QParam],
    layout: &TrainableLayout,
    guide: Option<&Guide<'_>>,
    cfg: &StepConfig,
    step: u64,
    first: u32,
    log: &mut SatLog,
    report: &mut StepReport,
    loss: &mut impl FnMut(&[QParam]) -> Result<f64, E>,
) -> Result<Vec<(f64, f64)>, StepError<E>> {
    let k = cfg.epsilon_lsb as i64;
    let mut losses = Vec::with_capacity(cfg.draws as usize);
    for d in first..first + cfg.draws {
        let key = DrawKey {
            seed: cfg.seed,
            step,
            draw: d,
            dist: cfg.distribution,
            kernel_norm: cfg.kernel_norm,
        };
        let mut pair = [0.0f64; 2];
        for (j, sign) in [1i64, -1].into_iter().enumerate() {
            report.perturb_saturations +=
                perturb::perturb_guided(params, layout, key, guide, k, sign, log) as u64;
            let l = loss(params);
            perturb::restore_guided(params, layout, key, guide, k, sign, log);
            report.forwards += 1;
            let l = l.map_err(StepError::Loss)?;
            if !l.is_finite() {
                return Err(StepError::NonFinite { draw: d });
            }
            pair[j] = l;
        }
        losses.push((pair[0], pair[1]));
    }
    Ok(losses)
}

/// Raw per-draw coefficients `c_d`: `sign(L⁺ − L⁻)` or `(L⁺ − L⁻) / 2k`.
fn raw_coefficients(cfg: &StepConfig, first: u32, losses: &[(f64, f64)]) -> Vec<(u32, f64)> {
    losses
        .iter()
        .enumerate()
        .map(|(i, &(lp, lm))| {
            let c = match cfg.estimator {
                Estimator::SignSpsa => {
                    if lp > lm {
                        1.0
                    } else if lp < lm {
                        -1.0
                    } else {
                        0.0
                    }
                }
                Estimator::Spsa => (lp - lm) / (2.0 * cfg.epsilon_lsb as f64),
            };
            (first + i as u32, c)
        })
        .collect()
}

/// Q16 coefficients `a_d` so that the update is `u = lr · mean_d(c_d · z_d / 32)`.
fn coefficients(cfg: &StepConfig, first: u32, losses: &[(f64, f64)], lr: f64) -> Vec<(u32, i64)> {
    let m = losses.len() as f64;
    let scale = lr * (1u64 << (COEFF_SHIFT - Z_SHIFT)) as f64 / m;
    raw_coefficients(cfg, first, losses)
        .into_iter()
        .map(|(d, c)| {
            let a = libm::rint(c * scale);
            (d, a.clamp(-(1i64 << 30) as f64, (1i64 << 30) as f64) as i64)
        })
        .collect()
}

/// One QZO-FF step on the trainable tensors of `params` (laid out by `layout`).
///
/// `loss(params)` must run the model forward on the step's batch and return the mean
/// loss; it is called `2m` times (`4m` when sharpness-aware), each time with the
/// weights perturbed in place. On return the weights hold `w − u` (or are unchanged on
/// error: every perturbation is undone bit-identically first).
///
/// With `cfg.momentum` set use [`qzo_step_guided`], which takes the momentum buffer.
pub fn qzo_step<E>(
    params: &mut [QParam],
    layout: &TrainableLayout,
    cfg: &StepConfig,
    step: u64,
    lr: f64,
    loss: impl FnMut(&[QParam]) -> Result<f64, E>,
) -> Result<StepReport, StepError<E>> {
    qzo_step_guided(params, layout, cfg, step, lr, None, loss)
}

/// [`qzo_step`] with momentum-guided sampling: `momentum` (required when
/// `cfg.momentum` is set) guides every draw's z and is advanced after the update.
#[allow(clippy::too_many_arguments)]
pub fn qzo_step_guided<E>(
    params: &mut [QParam],
    layout: &TrainableLayout,
    cfg: &StepConfig,
    step: u64,
    lr: f64,
    momentum: Option<&mut Momentum>,
    mut loss: impl FnMut(&[QParam]) -> Result<f64, E>,
) -> Result<StepReport, StepError<E>> {
    check_config(cfg).map_err(StepError::Config)?;
    if cfg.momentum.is_some() != momentum.is_some() {
        return Err(StepError::Config(
            "momentum-guided sampling needs exactly one momentum buffer (and only with `momentum` set)",
        ));
    }
    let mut report = StepReport::default();
    let mut log = SatLog::default();
    let m = cfg.draws;
    let guide = momentum.as_deref().map(Momentum::guide);
    let guide = guide.as_ref();
    let losses = estimate(
        params,
        layout,
        guide,
        cfg,
        step,
        0,
        &mut log,
        &mut report,
        &mut loss,
    )?;
    let coeffs = coefficients(cfg, 0, &losses, lr);
    let (first, losses, coeffs) = match cfg.sharpness_rho {
        None => (0, losses, coeffs),
        Some(rho) => {
            // Ascend ρ LSBs along the first estimate (w + ρ·ĝ₀), deterministic rounding so
            // it can be reverted exactly, estimate again there with fresh draws m..2m.
            let ascent = coefficients(cfg, 0, &losses, rho);
            let akey = UpdateKey {
                seed: cfg.seed,
                step,
                dist: cfg.distribution,
                coeffs: &ascent,
                rounding: Rounding::Nearest,
                round_step: step,
                kernel_norm: cfg.kernel_norm,
            };
            let mut alog = SatLog::default();
            perturb::apply_update_guided(params, layout, akey, guide, -1, Some(&mut alog));
            let second = estimate(
                params,
                layout,
                guide,
                cfg,
                step,
                m,
                &mut log,
                &mut report,
                &mut loss,
            );
            perturb::revert_update_guided(params, layout, akey, guide, -1, &alog);
            let second = second?;
            let c = coefficients(cfg, m, &second, lr);
            (m, second, c)
        }
    };
    let ukey = UpdateKey {
        seed: cfg.seed,
        step,
        dist: cfg.distribution,
        coeffs: &coeffs,
        rounding: cfg.rounding,
        round_step: step,
        kernel_norm: cfg.kernel_norm,
    };
    report.update = perturb::apply_update_guided(params, layout, ukey, guide, 1, None);
    if let Some(mo) = momentum {
        let w = direction_weights(&raw_coefficients(cfg, first, &losses));
        mo.advance(layout, UpdateKey { coeffs: &w, ..ukey });
    }
    report.losses = losses;
    report.coeffs = coeffs;
    Ok(report)
}
