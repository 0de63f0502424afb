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
    /// Output channels (`shape[0]`); elements of a channel are contiguous.
    pub channels: usize,
    /// Sparse update: only these elements are perturbed and updated (`None` = all).
    pub mask: Option<Mask>,
}

/// Which elements of a tensor train (sparse update).
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Mask {
    /// One flag per output channel.
    Channels(Vec<bool>),
    /// One bit per element (bit `i % 64` of word `i / 64`).
    Elements(Vec<u64>),
}

impl Slot {
    /// Elements per output channel.
    pub fn per_channel(&self) -> usize {
        self.len / self.channels.max(1)
    }

    /// Whether element `i` trains.
    #[inline]
    pub fn active(&self, i: usize) -> bool {
        match &self.mask {
            None => true,
            Some(Mask::Channels(c)) => c[i / self.per_channel().max(1)],
            Some(Mask::Elements(bits)) => bits[i / 64] >> (i % 64) & 1 == 1,
        }
    }

    /// Number of elements that train.
    pub fn active_len(&self) -> usize {
        (0..self.len).filter(|&i| self.active(i)).count()
    }
}

/// Sparse-update selection, applied per trainable weight tensor (biases stay dense).
#[derive(Clone, Copy, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct Sparsity {
    /// Train a seeded random fraction of each tensor's output channels.
    pub channel_fraction: Option<f64>,
    /// Train only this fraction of each tensor's weights, the smallest in magnitude
    /// (ties broken by index), as in Sparse-MeZO.
    pub magnitude_fraction: Option<f64>,
    /// Seed of the channel choice.
    pub seed: u64,
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
                channels: p.spec.shape.first().copied().unwrap_or(1),
                mask: None,
            });
            total += p.spec.numel() as u64;
        }
        TrainableLayout { slots, total }
    }

    /// Like [`TrainableLayout::new`], restricted by a sparse-update selection. The global
    /// element numbering (hence `z`) is the same as the dense layout's.
    pub fn sparse(model: &QuantModel, sparsity: Sparsity) -> Self {
        let mut layout = Self::new(model);
        for slot in &mut layout.slots {
            let p = &model.params[slot.param];
            if p.spec.role != ParamRole::Weight {
                continue;
            }
            if let Some(f) = sparsity.channel_fraction {
                let keep = (libm::ceil(f.clamp(0.0, 1.0) * slot.channels as f64) as usize).max(1);
                // A seeded, portable choice: rank channels by a hash of (seed, param, channel).
                let mut order: Vec<(u64, usize)> = (0..slot.channels)
                    .map(|c| (mix(sparsity.seed, slot.param as u64, c as u64), c))
                    .collect();
                order.sort_unstable();
                let mut flags = alloc::vec![false; slot.channels];
                for &(_, c) in order.iter().take(keep) {
                    flags[c] = true;
                }
                slot.mask = Some(Mask::Channels(flags));
            }
            if let Some(f) = sparsity.magnitude_fraction {
                let keep = (libm::ceil(f.clamp(0.0, 1.0) * slot.len as f64) as usize).max(1);
                let mut order: Vec<(i64, usize)> = (0..slot.len)
                    .map(|i| (p.data.get(i).abs() as i64, i))
                    .collect();
                order.sort_unstable();
                let mut bits = alloc::vec![0u64; slot.len.div_ceil(64)];
                let mut kept = 0;
                for &(_, i) in &order {
                    if kept == keep {
                        break;
                    }
                    // Within the chosen channels, if a channel mask is set too.
                    if slot.active(i) {
                        bits[i / 64] |= 1 << (i % 64);
                        kept += 1;
                    }
                }
                slot.mask = Some(Mask::Elements(bits));
            }
        }
        layout
    }

    /// Elements that actually train (after masks).
    pub fn active(&self) -> u64 {
        self.slots.iter().map(|s| s.active_len() as u64).sum()
    }
}

/// SplitMix64 finalizer over three words: a portable hash for seeded choices.
fn mix(a: u64, b: u64, c: u64) -> u64 {
    let mut z = a ^ b.rotate_left(21) ^ c.rotate_left(42) ^ 0x9E37_79B9_7F4A_7C15;
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
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
    /// Kernel-wise normalization: scale z per output channel to RMS exactly 32.
    pub kernel_norm: bool,
}

/// Fractional bits of kernel-wise gains.
const GAIN_SHIFT: u32 = 16;

/// Per-channel Q16 gains making each channel's z have RMS exactly [`crate::z::Z_STD`]
/// (left empty, meaning all `1.0`, without kernel norm; see [`gain_at`]). Needs one extra regeneration pass per tensor.
/// `f64` `sqrt` is correctly rounded under IEEE 754, so gains are identical everywhere.
fn gains(
    slot: &Slot,
    seed: u64,
    step: u64,
    draw: u32,
    dist: Distribution,
    kernel_norm: bool,
    out: &mut Vec<i64>,
) {
    out.clear();
    let per = slot.per_channel();
    if !kernel_norm || per <= 1 {
        return; // empty = every gain is 1.0 (no allocation on the common path)
    }
    let mut z = ZStream::new(seed, step, draw, dist, slot.offset);
    for _ in 0..slot.channels {
        let ss: i64 = (0..per).map(|_| z.next_z() as i64).map(|v| v * v).sum();
        let g = if ss == 0 {
            1 << GAIN_SHIFT
        } else {
            libm::rint(
                (1u64 << GAIN_SHIFT) as f64 * crate::z::Z_STD as f64 * libm::sqrt(per as f64)
                    / libm::sqrt(ss as f64),
            ) as i64
        };
        out.push(g.clamp(1, 1 << (GAIN_SHIFT + 8)));
    }
}

/// The gain of channel `c` from a [`gains`] table.
#[inline]
fn gain_at(g: &[i64], c: usize) -> i64 {
    if g.is_empty() { 1 << GAIN_SHIFT } else { g[c] }
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

/// `δ = round(k·unit·z·gain / 2^(5+16))`, half up.
#[inline]
fn delta(k: i64, unit: i64, z: i32, gain: i64) -> i64 {
    let sh = Z_SHIFT + GAIN_SHIFT;
    (k * unit * z as i64 * gain + (1 << (sh - 1))) >> sh
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
    let mut g = Vec::new();
    for (si, slot) in layout.slots.iter().enumerate() {
        gains(
            slot,
            key.seed,
            key.step,
            key.draw,
            key.dist,
            key.kernel_norm,
            &mut g,
        );
        let per = slot.per_channel().max(1);
        let mut z = ZStream::new(key.seed, key.step, key.draw, key.dist, slot.offset);
        let data = &mut params[slot.param].data;
        for i in 0..slot.len {
            let zi = z.next_z();
            if !slot.active(i) {
                continue;
            }
            let w = get(data, i);
            let v = w + sign * delta(k, slot.unit, zi, gain_at(&g, i / per));
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
    let mut g = Vec::new();
    for slot in &layout.slots {
        gains(
            slot,
            key.seed,
            key.step,
            key.draw,
            key.dist,
            key.kernel_norm,
            &mut g,
        );
        let per = slot.per_channel().max(1);
        let mut z = ZStream::new(key.seed, key.step, key.draw, key.dist, slot.offset);
        let data = &mut params[slot.param].data;
        for i in 0..slot.len {
            let zi = z.next_z();
            if !slot.active(i) {
                continue;
            }
            let v = get(data, i) - sign * delta(k, slot.unit, zi, gain_at(&g, i / per));
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
    /// Kernel-wise normalization of z (must match the perturbation's).
    pub kernel_norm: bool,
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
    let mut streams: Vec<(ZStream, i64, Vec<i64>)> = Vec::with_capacity(key.coeffs.len());
    for (si, slot) in layout.slots.iter().enumerate() {
        streams.clear();
        for &(d, a) in key.coeffs {
            let mut g = Vec::new();
            gains(
                slot,
                key.seed,
                key.step,
                d,
                key.dist,
                key.kernel_norm,
                &mut g,
            );
            streams.push((
                ZStream::new(key.seed, key.step, d, key.dist, slot.offset),
                a,
                g,
            ));
        }
        let per = slot.per_channel().max(1);
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
            for (z, a, gain) in streams.iter_mut() {
                // a·z ≤ 2^37 and gain ≤ 2^24 keep the product inside i64; the shift is
                // exact when the gain is 1.0.
                g += (*a * z.next_z() as i64 * gain_at(gain, i / per)) >> GAIN_SHIFT;
            }
            let noise_word = noise.next_u32();
            if !slot.active(i) {
                continue;
            }
            g *= slot.unit;
            let r = match key.rounding {
                Rounding::Nearest => 1i64 << (COEFF_SHIFT - 1),
                Rounding::Stochastic => (noise_word >> (32 - COEFF_SHIFT)) as i64,
            };
            let u = (g + r) >> COEFF_SHIFT;
            if u != 0 {
                visit(si, i, data, u);
            }
        }
    }
}
