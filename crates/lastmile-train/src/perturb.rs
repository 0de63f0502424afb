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

/// `δ = round(k·unit·zq / 2^(5+16))`, half up, for `zq` = z in Q16 (z times its
/// kernel-norm gain, or the momentum-guided mixture).
#[inline]
fn delta(k: i64, unit: i64, zq: i64) -> i64 {
    let sh = Z_SHIFT + GAIN_SHIFT;
    (k * unit * zq + (1 << (sh - 1))) >> sh
}

/// Largest |z| of a momentum-guided mixture, in Q16 (the clip of Gaussian codes, ±127).
const GUIDED_CLIP: i64 = 127 << GAIN_SHIFT;

/// Momentum-guided sampling, read-only for the duration of a step (see
/// [`crate::momentum`]): each draw's z becomes
/// `zq = clip(round((fresh·z·g + s_d·along·M_e·n_slot) / 2^15))`, where `M_e` is the
/// momentum of element `e` (Q8 z-units), `n_slot` its tensor's Q16 normalization gain
/// (RMS of the normalized momentum = 32, like z), and `s_d = ±1` a per-draw random sign.
#[derive(Clone, Copy, Debug)]
pub struct Guide<'a> {
    /// Momentum per trainable element, in the global numbering of z (Q8 z-units).
    pub state: &'a [i16],
    /// Per slot: Q16 gain normalizing the momentum to RMS 32 (0 = no momentum yet: plain z).
    pub gains: &'a [i64],
    /// `√(1 − mix)` in Q15.
    pub fresh: i64,
    /// `√mix` in Q15.
    pub along: i64,
}

impl Guide<'_> {
    #[inline]
    fn at(&self, slot: &Slot, i: usize) -> i16 {
        self.state[slot.offset as usize + i]
    }
}

/// The random sign `s_d` of draw `draw`'s momentum component (zero-mean z, as in guided ES).
pub fn guide_sign(seed: u64, step: u64, draw: u32) -> i64 {
    if mix(seed ^ 0x6d6f_6d65_6e74_756d, step, draw as u64) & 1 == 1 {
        1
    } else {
        -1
    }
}

/// One draw's effective z over one tensor, element by element, in Q16.
struct SlotZ {
    z: ZStream,
    kernel: Vec<i64>,
    per: usize,
    /// `(fresh, s_d·along, normalization gain)` when the momentum mixes in.
    mix: Option<(i64, i64, i64)>,
}

impl SlotZ {
    #[allow(clippy::too_many_arguments)]
    fn new(
        slot: &Slot,
        si: usize,
        seed: u64,
        step: u64,
        draw: u32,
        dist: Distribution,
        kernel_norm: bool,
        guide: Option<&Guide<'_>>,
    ) -> Self {
        let mut kernel = Vec::new();
        gains(slot, seed, step, draw, dist, kernel_norm, &mut kernel);
        let mix = guide.and_then(|g| {
            let n = g.gains[si];
            (n != 0).then(|| (g.fresh, guide_sign(seed, step, draw) * g.along, n))
        });
        SlotZ {
            z: ZStream::new(seed, step, draw, dist, slot.offset),
            kernel,
            per: slot.per_channel().max(1),
            mix,
        }
    }

    /// The next element's `zq` (`i` is its index in the tensor, `m` its momentum).
    #[inline]
    fn next(&mut self, i: usize, m: i16) -> i64 {
        let f = self.z.next_z() as i64 * gain_at(&self.kernel, i / self.per);
        match self.mix {
            None => f,
            Some((a, b, n)) => {
                ((a * f + b * m as i64 * n + (1 << 14)) >> 15).clamp(-GUIDED_CLIP, GUIDED_CLIP)
            }
        }
    }
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
    perturb_guided(params, layout, key, None, k, sign, log)
}

/// [`perturb`] with momentum-guided z.
pub fn perturb_guided(
    params: &mut [QParam],
    layout: &TrainableLayout,
    key: DrawKey,
    guide: Option<&Guide<'_>>,
    k: i64,
    sign: i64,
    log: &mut SatLog,
) -> usize {
    log.clear();
    for (si, slot) in layout.slots.iter().enumerate() {
        let mut z = SlotZ::new(
            slot,
            si,
            key.seed,
            key.step,
            key.draw,
            key.dist,
            key.kernel_norm,
            guide,
        );
        let data = &mut params[slot.param].data;
        for i in 0..slot.len {
            let zq = z.next(i, guide.map_or(0, |g| g.at(slot, i)));
            if !slot.active(i) {
                continue;
            }
            let w = get(data, i);
            let v = w + sign * delta(k, slot.unit, zq);
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
    restore_guided(params, layout, key, None, k, sign, log)
}

/// Undoes [`perturb_guided`] with the same arguments and its log: bit-identical.
pub fn restore_guided(
    params: &mut [QParam],
    layout: &TrainableLayout,
    key: DrawKey,
    guide: Option<&Guide<'_>>,
    k: i64,
    sign: i64,
    log: &SatLog,
) {
    for (si, slot) in layout.slots.iter().enumerate() {
        let mut z = SlotZ::new(
            slot,
            si,
            key.seed,
            key.step,
            key.draw,
            key.dist,
            key.kernel_norm,
            guide,
        );
        let data = &mut params[slot.param].data;
        for i in 0..slot.len {
            let zq = z.next(i, guide.map_or(0, |g| g.at(slot, i)));
            if !slot.active(i) {
                continue;
            }
            let v = get(data, i) - sign * delta(k, slot.unit, zq);
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
pub fn apply_update(
    params: &mut [QParam],
    layout: &TrainableLayout,
    key: UpdateKey<'_>,
    sign: i64,
    log: Option<&mut SatLog>,
) -> UpdateStats {
    apply_update_guided(params, layout, key, None, sign, log)
}

/// [`apply_update`] with momentum-guided z.
pub fn apply_update_guided(
    params: &mut [QParam],
    layout: &TrainableLayout,
    key: UpdateKey<'_>,
    guide: Option<&Guide<'_>>,
    sign: i64,
    mut log: Option<&mut SatLog>,
) -> UpdateStats {
    let mut stats = UpdateStats::default();
    if let Some(l) = log.as_deref_mut() {
        l.clear();
    }
    update_pass(params, layout, key, guide, |si, i, data, u| {
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
    revert_update_guided(params, layout, key, None, sign, log)
}

/// Undoes [`apply_update_guided`] with the same key, guide, sign and its log: bit-identical.
pub fn revert_update_guided(
    params: &mut [QParam],
    layout: &TrainableLayout,
    key: UpdateKey<'_>,
    guide: Option<&Guide<'_>>,
    sign: i64,
    log: &SatLog,
) {
    update_pass(params, layout, key, guide, |si, i, data, u| {
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
    guide: Option<&Guide<'_>>,
    mut visit: impl FnMut(usize, usize, &mut QData, i64),
) {
    if key.coeffs.iter().all(|&(_, a)| a == 0) {
        return;
    }
    let mut streams: Vec<(SlotZ, i64)> = Vec::with_capacity(key.coeffs.len());
    for (si, slot) in layout.slots.iter().enumerate() {
        streams.clear();
        for &(d, a) in key.coeffs {
            streams.push((
                SlotZ::new(
                    slot,
                    si,
                    key.seed,
                    key.step,
                    d,
                    key.dist,
                    key.kernel_norm,
                    guide,
                ),
                a,
            ));
        }
        let mut noise = ZStream::new(
            key.seed,
            key.round_step,
            ROUNDING_DRAW,
            Distribution::Rademacher,
            slot.offset,
        );
        let data = &mut params[slot.param].data;
        for i in 0..slot.len {
            let m = guide.map_or(0, |g| g.at(slot, i));
            let mut g: i64 = 0;
            for (z, a) in streams.iter_mut() {
                // a·z ≤ 2^37 and the Q16 gain ≤ 2^24 keep the product inside i64; the
                // shift is exact when the gain is 1.0.
                g += (*a * z.next(i, m)) >> GAIN_SHIFT;
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

/// Moves the momentum one step: for every active element,
/// `q_e = round(Σ_d w_d · zq_{d,e} / 2^23)` (Q8 z-units; `w_d` are Q15 weights with
/// `Σ|w_d| ≤ 2^15`) and `M_e ← sat16(round((β·M_e + (2^16 − β)·q_e) / 2^16))` with `β` in
/// Q16. `zq` is regenerated exactly as the update saw it (guided by the old `M_e`), one
/// element at a time, so no buffer is needed beyond the momentum itself.
#[allow(clippy::too_many_arguments)]
pub(crate) fn momentum_pass(
    state: &mut [i16],
    gains: &[i64],
    fresh: i64,
    along: i64,
    beta_q16: i64,
    layout: &TrainableLayout,
    key: UpdateKey<'_>,
) {
    let mut streams: Vec<(SlotZ, i64)> = Vec::with_capacity(key.coeffs.len());
    for (si, slot) in layout.slots.iter().enumerate() {
        streams.clear();
        {
            let guide = Guide {
                state: &*state,
                gains,
                fresh,
                along,
            };
            for &(d, w) in key.coeffs {
                if w != 0 {
                    streams.push((
                        SlotZ::new(
                            slot,
                            si,
                            key.seed,
                            key.step,
                            d,
                            key.dist,
                            key.kernel_norm,
                            Some(&guide),
                        ),
                        w,
                    ));
                }
            }
        }
        let off = slot.offset as usize;
        for i in 0..slot.len {
            let m = state[off + i];
            let mut q: i64 = 0;
            for (z, w) in streams.iter_mut() {
                q += *w * z.next(i, m);
            }
            if !slot.active(i) {
                continue;
            }
            let q = ((q + (1 << 22)) >> 23).clamp(-32767, 32767);
            let v = (beta_q16 * m as i64 + ((1 << 16) - beta_q16) * q + (1 << 15)) >> 16;
            state[off + i] = v.clamp(-32767, 32767) as i16;
        }
    }
}
