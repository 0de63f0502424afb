//! Momentum-guided sampling: draw the perturbation partly along a running momentum of
//! past update directions, so the two forward calls probe where the gradient has been
//! pointing (guided evolution strategies, Maheswaranathan et al. 2019, with the
//! momentum as the guiding subspace). The paper names the enhancement but the sources
//! available to us do not describe it; this fixed-point design is ours.
//!
//! For draw `d` at step `t`, element `e` of trainable tensor `p`:
//!
//! ```text
//! z'_e = clip₁₂₇( √(1−μ) · z_e  +  s_d · √μ · M_e · n_p )
//! ```
//!
//! * `z_e` — the fresh code of [`crate::z`] (with its kernel-norm gain, if on);
//! * `M_e` — the momentum, an `i16` per trainable element in Q8 z-units;
//! * `n_p` — a per-tensor gain making the momentum's RMS 32 (the RMS of `z`), recomputed
//!   once per step from the buffer (integer sum of squares, one correctly rounded `f64`
//!   `sqrt` and division: portable); while a tensor's momentum is all zero, `z' = z`;
//! * `s_d = ±1` — a per-draw random sign from `(seed, step, d)`, so `z'` stays zero-mean
//!   (the estimator is then the guided-ES one: biased towards the momentum subspace);
//! * `μ` — the mixing fraction (`--momentum-mix`, energy of `z'` along the momentum).
//!
//! `z'` is regenerated from `(seed, step, d, e)` and the momentum, which does not change
//! during a step, so perturb / restore / update stay bit-identical. After the update,
//! `M ← β·M + (1−β)·q` with `q = Σ_d w_d z'_d`, `w_d = c_d / Σ|c_d|` (the step's
//! normalized update direction in z-units), all in integers (see
//! [`crate::perturb::momentum_pass`]).
//!
//! **Memory**: this is the one extra buffer of the trainer, 2 bytes per trainable element
//! (the same as the 16-bit weights themselves; BP needs 4 for the gradient plus 4–8 for its
//! optimizer state). It is opt-in, and saved in checkpoints so `--resume` stays exact.

use alloc::vec::Vec;
use serde::{Deserialize, Serialize};

use crate::perturb::{Guide, TrainableLayout, UpdateKey, momentum_pass};
use crate::z::Z_STD;

/// Settings of momentum-guided sampling.
#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MomentumConfig {
    /// Decay β of the momentum's running average, in `(0, 1)`.
    pub beta: f64,
    /// Fraction μ of the perturbation's energy along the momentum, in `[0, 1)`.
    #[serde(default = "default_mix")]
    pub mix: f64,
}

/// The default mixing fraction: half the energy along the momentum.
pub const DEFAULT_MIX: f64 = 0.5;

fn default_mix() -> f64 {
    DEFAULT_MIX
}

impl MomentumConfig {
    /// Checks the ranges.
    pub fn check(&self) -> Result<(), &'static str> {
        if !(self.beta > 0.0 && self.beta < 1.0) {
            return Err("momentum beta must be in (0, 1)");
        }
        if !(self.mix >= 0.0 && self.mix < 1.0) {
            return Err("momentum mix must be in [0, 1)");
        }
        Ok(())
    }
}

/// Fractional bits of the momentum codes (z-units).
pub const MOMENTUM_SHIFT: u32 = 8;

/// The momentum buffer and its fixed-point constants.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Momentum {
    beta_q16: i64,
    fresh_q15: i64,
    along_q15: i64,
    state: Vec<i16>,
    gains: Vec<i64>,
}

impl Momentum {
    /// A zero momentum for `layout` (one `i16` per element of its global numbering).
    pub fn new(cfg: &MomentumConfig, layout: &TrainableLayout) -> Result<Self, &'static str> {
        Self::with_state(cfg, layout, alloc::vec![0; layout.total as usize])
    }

    /// A momentum restored from a checkpoint (see [`Momentum::state`]).
    pub fn with_state(
        cfg: &MomentumConfig,
        layout: &TrainableLayout,
        state: Vec<i16>,
    ) -> Result<Self, &'static str> {
        cfg.check()?;
        if state.len() as u64 != layout.total {
            return Err("the momentum state does not match the trainable elements");
        }
        let q = |x: f64, bits: u32| libm::rint(x * (1u64 << bits) as f64) as i64;
        let mut m = Momentum {
            beta_q16: q(cfg.beta, 16),
            fresh_q15: q(libm::sqrt(1.0 - cfg.mix), 15),
            along_q15: q(libm::sqrt(cfg.mix), 15),
            state,
            gains: Vec::new(),
        };
        m.refresh(layout);
        Ok(m)
    }

    /// The buffer: one Q8 code per trainable element, in the global numbering of z.
    pub fn state(&self) -> &[i16] {
        &self.state
    }

    /// Bytes of the buffer (the cost of the switch).
    pub fn bytes(&self) -> usize {
        self.state.len() * 2
    }

    /// The read-only view a step perturbs with.
    pub fn guide(&self) -> Guide<'_> {
        Guide {
            state: &self.state,
            gains: &self.gains,
            fresh: self.fresh_q15,
            along: self.along_q15,
        }
    }

    /// Recomputes the per-tensor normalization gains: `round(2^16·32·√n / √Σ M²)` over the
    /// active elements, clamped to `[1, 2^28]`; 0 while a tensor's momentum is all zero.
    fn refresh(&mut self, layout: &TrainableLayout) {
        self.gains.clear();
        for slot in &layout.slots {
            let off = slot.offset as usize;
            let (mut ss, mut n) = (0i64, 0u64);
            for i in 0..slot.len {
                if slot.active(i) {
                    let m = self.state[off + i] as i64;
                    ss += m * m;
                    n += 1;
                }
            }
            let g = if ss == 0 {
                0
            } else {
                libm::rint(
                    (1u64 << 16) as f64 * Z_STD as f64 * libm::sqrt(n as f64)
                        / libm::sqrt(ss as f64),
                )
                .clamp(1.0, (1u64 << 28) as f64) as i64
            };
            self.gains.push(g);
        }
    }

    /// After a step's update with `key` (its `coeffs` replaced by the Q15 direction weights
    /// `w_d`, see [`direction_weights`]): folds the step's direction into the momentum.
    pub fn advance(&mut self, layout: &TrainableLayout, key: UpdateKey<'_>) {
        momentum_pass(
            &mut self.state,
            &self.gains,
            self.fresh_q15,
            self.along_q15,
            self.beta_q16,
            layout,
            key,
        );
        self.refresh(layout);
    }
}

/// Q15 weights `w_d = round(2^15 · c_d / Σ|c_d|)` of the draws' raw coefficients
/// (`sign(ΔL)` or `ΔL/2k`): the step's direction with the learning rate and the SPSA
/// scale divided out. All zero when every `c_d` is.
pub fn direction_weights(c: &[(u32, f64)]) -> Vec<(u32, i64)> {
    let total: f64 = c.iter().map(|(_, v)| libm::fabs(*v)).sum();
    c.iter()
        .map(|&(d, v)| {
            let w = if total > 0.0 {
                libm::rint(v / total * (1u64 << 15) as f64) as i64
            } else {
                0
            };
            (d, w)
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn direction_weights_sum_to_one_in_magnitude() {
        let w = direction_weights(&[(0, 1.0), (1, -1.0), (2, 0.0), (3, 1.0)]);
        assert_eq!(w, alloc::vec![(0, 10923), (1, -10923), (2, 0), (3, 10923)]);
        assert!(direction_weights(&[(0, 0.0)]).iter().all(|&(_, w)| w == 0));
    }

    #[test]
    fn config_ranges_are_checked() {
        let ok = MomentumConfig {
            beta: 0.9,
            mix: 0.5,
        };
        assert!(ok.check().is_ok());
        for (beta, mix) in [
            (0.0, 0.5),
            (1.0, 0.5),
            (0.9, 1.0),
            (0.9, -0.1),
            (f64::NAN, 0.5),
        ] {
            assert!(
                MomentumConfig { beta, mix }.check().is_err(),
                "{beta} {mix}"
            );
        }
    }
}
