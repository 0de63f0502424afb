//! In-place perturbation `w ← sat(w ± δ)` with bit-identical restore, and the
//! fused update `w ← sat(w − u)` that regenerates `z` instead of storing a gradient.
//!
//! `δ_e = ⌊(k·m_p·z_e + 16) / 32⌋` (round half up), where `k` is ε in weight LSBs
//! and `m_p` a per-tensor multiplier (1 for weights; for biases the number of bias
//! LSBs in one weight LSB at unit input, see [`TrainableLayout`]). When `w ± δ`
//! saturates, the original code goes to a [`SatLog`] so `restore` is exact.

use alloc::vec::Vec;
use serde::{Deserialize, Serialize};

use lastmile_core::model::{ParamRole, QData, QParam, QuantModel};

use crate::z::{Distribution, ROUNDING_DRAW, Z_SHIFT, ZStream};

/// One trainable tensor in the global element numbering of `z`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Slot {
    /// Index into the model's parameter list.
    pub param: usize,
    /// Global index of its first element.
    pub offset: u64,
    /// Element count.
    pub len: usize,
    /// Multiplier on `k` and on the update (1 for weights, ≥ 1 for biases).
    pub unit: i64,
    /// Saturation bound: codes stay in `[−bound, bound]`.
    pub bound: i64,
}

/// The trainable tensors of a model, laid out end to end.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct TrainableLayout {
    /// Trainable tensors in parameter order.
    pub slots: Vec<Slot>,
    /// Total trainable elements.
    pub total: u64,
}

impl TrainableLayout {
    /// Lays out every parameter marked trainable. Bias units: one weight LSB of
    /// channel `c` at a unit real input is `1 / s_in` bias LSBs, so a bias moves by
    /// `round(1 / s_in)` LSBs where a weight moves by one (at least 1).
    pub fn new(model: &QuantModel) -> Self {
        let mut slots = Vec::new();
        let mut total = 0u64;
        for (i, p) in model.params.iter().enumerate() {
            if !p.spec.trainable {
                continue;
            }
            let (unit, bound) = match p.spec.role {
                ParamRole::Weight => (1, model.weight_bits.qmax() as i64),
                ParamRole::Bias => {
                    let s_in = model
                        .user_of(lastmile_core::ParamId(i as u32))
                        .map(|n| model.act[model.topology.nodes[n].inputs[0].index()].scale)
                        .unwrap_or(1.0);
                    let unit = libm::rint(1.0 / s_in as f64).clamp(1.0, 65_536.0) as i64;
                    (unit, model.weight_bits.max_abs_bias())
                }
            };
            slots.push(Slot {
                param: i,
                offset: total,
                len: p.spec.numel(),
                unit,
                bound,
            });
            total += p.spec.numel() as u64;
        }
        TrainableLayout { slots, total }
    }
}

/// Originals of codes that saturated during a perturbation.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct SatLog {
    entries: Vec<(u32, u32, i32)>,
}

impl SatLog {
    /// Number of saturated codes recorded.
    pub fn len(&self) -> usize {
        self.entries.len()
    }
    /// Whether nothing saturated.
    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }
    /// Forgets all entries (keeps the allocation).
    pub fn clear(&mut self) {
        self.entries.clear();
    }
}

/// Which `z` to use.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct DrawKey {
    /// Run seed.
    pub seed: u64,
    /// Training step.
    pub step: u64,
    /// Draw within the step.
    pub draw: u32,
    /// Distribution.
    pub dist: Distribution,
}

#[inline]
fn get(data: &QData, i: usize) -> i64 {
    data.get(i) as i64
}

#[inline]
fn set(data: &mut QData, i: usize, v: i64) {
    match data {
        QData::I8(d) => d[i] = v as i8,
        QData::I16(d) => d[i] = v as i16,
        QData::I32(d) => d[i] = v as i32,
    }
}

#[inline]
fn delta(k: i64, unit: i64, z: i32) -> i64 {
    (k * unit * z as i64 + (1 << (Z_SHIFT - 1))) >> Z_SHIFT
}

/// `w ← sat(w + sign·δ)` for every trainable code; saturated originals go to `log`
/// (which is cleared first). Returns the number of saturated codes.
pub fn perturb(
    params: &mut [QParam],
    layout: &TrainableLayout,
    key: DrawKey,
    k: i64,
    sign: i64,
    log: &mut SatLog,
) -> usize {
    log.clear();
    for (si, slot) in layout.slots.iter().enumerate() {
        let mut z = ZStream::new(key.seed, key.step, key.draw, key.dist, slot.offset);
        let data = &mut params[slot.param].data;
        for i in 0..slot.len {
            let w = get(data, i);
            let v = w + sign * delta(k, slot.unit, z.next_z());
            if v.abs() > slot.bound {
                log.entries.push((si as u32, i as u32, w as i32));
                set(data, i, v.clamp(-slot.bound, slot.bound));
            } else {
                set(data, i, v);
            }
        }
    }
    log.len()
}

/// Undoes [`perturb`] with the same arguments and its log: bit-identical to before.
pub fn restore(
    params: &mut [QParam],
    layout: &TrainableLayout,
    key: DrawKey,
    k: i64,
    sign: i64,
    log: &SatLog,
) {
    for slot in &layout.slots {
        let mut z = ZStream::new(key.seed, key.step, key.draw, key.dist, slot.offset);
        let data = &mut params[slot.param].data;
        for i in 0..slot.len {
            let v = get(data, i) - sign * delta(k, slot.unit, z.next_z());
            // Saturated entries are overwritten from the log below; clamp keeps the
            // intermediate in range meanwhile.
            set(data, i, v.clamp(-slot.bound, slot.bound));
        }
    }
    for &(si, i, w) in &log.entries {
        let slot = &layout.slots[si as usize];
        set(&mut params[slot.param].data, i as usize, w as i64);
    }
}

/// How the fixed-point update is rounded to whole LSBs.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Rounding {
    /// Round half up.
    #[default]
    Nearest,
    /// Add uniform noise in `[0, 1)` LSB before flooring: unbiased, so small updates
    /// survive in expectation (the suspected cure for 8w8a).
    Stochastic,
}

/// Fractional bits of update coefficients.
pub const COEFF_SHIFT: u32 = 16;

/// Counts from one update.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct UpdateStats {
    /// Codes that changed.
    pub changed: u64,
    /// Codes that hit the saturation bound.
    pub saturated: u64,
}

/// The fused update: for every trainable code,
/// `u = round((Σ_d a_d · m_p · z_d) / 2^16)`, `w ← sat(w − sign·u)`,
/// regenerating each draw's `z` in lock-step — no gradient buffer exists.
/// `coeffs` pairs a draw index with its Q16 coefficient `a_d`.
/// The rounding noise (if stochastic) comes from draw [`ROUNDING_DRAW`] of `round_step`.
/// With `log`, originals of saturated codes are recorded so [`revert_update`] is exact.
#[allow(clippy::too_many_arguments)]
pub fn apply_update(
    params: &mut [QParam],
    layout: &TrainableLayout,
    key: UpdateKey<'_>,
    sign: i64,
    mut log: Option<&mut SatLog>,
) -> UpdateStats {
    let mut stats = UpdateStats::default();
    if let Some(l) = log.as_deref_mut() {
        l.clear();
    }
    update_pass(params, layout, key, |si, i, data, u| {
        let w = get(data, i);
        let bound = layout.slots[si].bound;
        let v = w - sign * u;
        let v = if v.abs() > bound {
            stats.saturated += 1;
            if let Some(l) = log.as_deref_mut() {
                l.entries.push((si as u32, i as u32, w as i32));
            }
            v.clamp(-bound, bound)
        } else {
            v
        };
        if v != w {
            stats.changed += 1;
            set(data, i, v);
        }
    });
    stats
}

/// Undoes [`apply_update`] with the same key, sign and its log: bit-identical.
pub fn revert_update(
    params: &mut [QParam],
    layout: &TrainableLayout,
    key: UpdateKey<'_>,
    sign: i64,
    log: &SatLog,
) {
    update_pass(params, layout, key, |si, i, data, u| {
        let bound = layout.slots[si].bound;
        set(data, i, (get(data, i) + sign * u).clamp(-bound, bound));
    });
    for &(si, i, w) in &log.entries {
        let slot = &layout.slots[si as usize];
        set(&mut params[slot.param].data, i as usize, w as i64);
    }
}

/// Everything that determines an update's per-code step `u`.
#[derive(Clone, Copy, Debug)]
pub struct UpdateKey<'a> {
    /// Run seed.
    pub seed: u64,
    /// Step whose draws the coefficients refer to.
    pub step: u64,
    /// Distribution of `z`.
    pub dist: Distribution,
    /// `(draw, Q16 coefficient)` pairs.
    pub coeffs: &'a [(u32, i64)],
    /// Rounding of `u` to whole LSBs.
    pub rounding: Rounding,
    /// Stream key for stochastic-rounding noise (distinct per update within a step).
    pub round_step: u64,
}

fn update_pass(
    params: &mut [QParam],
    layout: &TrainableLayout,
    key: UpdateKey<'_>,
    mut visit: impl FnMut(usize, usize, &mut QData, i64),
) {
    if key.coeffs.iter().all(|&(_, a)| a == 0) {
        return;
    }
    let mut streams: Vec<(ZStream, i64)> = Vec::with_capacity(key.coeffs.len());
    for (si, slot) in layout.slots.iter().enumerate() {
        streams.clear();
        streams.extend(key.coeffs.iter().map(|&(d, a)| {
            (
                ZStream::new(key.seed, key.step, d, key.dist, slot.offset),
                a,
            )
        }));
        let mut noise = ZStream::new(
            key.seed,
            key.round_step,
            ROUNDING_DRAW,
            Distribution::Rademacher,
            slot.offset,
        );
        let data = &mut params[slot.param].data;
        for i in 0..slot.len {
            let mut g: i64 = 0;
            for (z, a) in streams.iter_mut() {
                g += *a * z.next_z() as i64;
            }
            g *= slot.unit;
            let r = match key.rounding {
                Rounding::Nearest => 1i64 << (COEFF_SHIFT - 1),
                Rounding::Stochastic => (noise.next_u32() >> (32 - COEFF_SHIFT)) as i64,
            };
            let u = (g + r) >> COEFF_SHIFT;
            if u != 0 {
                visit(si, i, data, u);
            }
        }
    }
}
