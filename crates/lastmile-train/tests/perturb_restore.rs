//! In-place perturbation and the SAM ascent must be undone bit-identically —
//! saturation included — or training would drift away from the recorded trajectory.

use lastmile_core::graph::{TopologyBuilder, ValueId};
use lastmile_core::model::{QData, QParam, QuantModel};
use lastmile_core::quant::{ActQuant, Activation, WeightBits};
use lastmile_train::perturb::{
    self, DrawKey, Rounding, SatLog, Sparsity, TrainableLayout, UpdateKey,
};
use lastmile_train::z::Distribution;
use proptest::prelude::*;

/// A 2-layer MLP whose codes come from `codes` (cycled), all tensors trainable.
fn model(bits: WeightBits, codes: &[i32], bias_codes: &[i32]) -> QuantModel {
    let mut b = TopologyBuilder::new(&[7]);
    let h = b.linear("fc1", ValueId::INPUT, 7, 5, Activation::Relu);
    b.linear("fc2", h, 5, 3, Activation::None);
    let (topology, specs) = b.finish();
    let qmax = bits.qmax();
    let params = specs
        .into_iter()
        .map(|mut spec| {
            spec.trainable = true;
            let n = spec.numel();
            let (data, scales) = match spec.role {
                lastmile_core::model::ParamRole::Weight => {
                    let v: Vec<i32> = (0..n)
                        .map(|i| codes[i % codes.len()].clamp(-qmax, qmax))
                        .collect();
                    let d = match bits {
                        WeightBits::W8 => QData::I8(v.iter().map(|&c| c as i8).collect()),
                        WeightBits::W16 => QData::I16(v.iter().map(|&c| c as i16).collect()),
                    };
                    (d, vec![0.01; spec.shape[0]])
                }
                lastmile_core::model::ParamRole::Bias => {
                    let bound = bits.max_abs_bias();
                    (
                        QData::I32(
                            (0..n)
                                .map(|i| {
                                    (bias_codes[i % bias_codes.len()] as i64).clamp(-bound, bound)
                                        as i32
                                })
                                .collect(),
                        ),
                        vec![],
                    )
                }
            };
            QParam { spec, data, scales }
        })
        .collect();
    let act = vec![
        ActQuant {
            scale: 0.02,
            zero_point: -3
        };
        3
    ];
    let m = QuantModel {
        topology,
        weight_bits: bits,
        params,
        act,
        metadata: Default::default(),
    };
    m.validate().expect("test model is valid");
    m
}

fn layout_for(m: &QuantModel, sparse: bool) -> TrainableLayout {
    if sparse {
        TrainableLayout::sparse(
            m,
            Sparsity {
                channel_fraction: Some(0.5),
                magnitude_fraction: Some(0.5),
                seed: 9,
            },
        )
    } else {
        TrainableLayout::new(m)
    }
}

fn dist_strategy() -> impl Strategy<Value = Distribution> {
    prop_oneof![
        Just(Distribution::Rademacher),
        Just(Distribution::Gaussian),
        Just(Distribution::IntGaussian)
    ]
}

fn bits_strategy() -> impl Strategy<Value = WeightBits> {
    prop_oneof![Just(WeightBits::W8), Just(WeightBits::W16)]
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(256))]

    #[test]
    fn perturb_then_restore_is_bit_identical(
        bits in bits_strategy(),
        dist in dist_strategy(),
        // Codes biased to the extremes so saturation happens often.
        codes in prop::collection::vec(prop_oneof![Just(i32::MAX), Just(-i32::MAX), -200i32..200, any::<i16>().prop_map(i32::from)], 1..40),
        bias in prop::collection::vec(any::<i32>(), 1..8),
        k in prop_oneof![1i64..4, 100i64..5000],
        seed in any::<u64>(), step in 0u64..1_000_000, draw in 0u32..200, sign in prop_oneof![Just(1i64), Just(-1i64)], kernel_norm in any::<bool>(), sparse in any::<bool>(),
    ) {
        let mut m = model(bits, &codes, &bias);
        let before = m.params.clone();
        let layout = layout_for(&m, sparse);
        let key = DrawKey { seed, step, draw, dist, kernel_norm };
        let mut log = SatLog::default();
        let sat = perturb::perturb(&mut m.params, &layout, key, k, sign, &mut log);
        prop_assert_eq!(sat, log.len());
        perturb::restore(&mut m.params, &layout, key, k, sign, &log);
        prop_assert_eq!(&m.params, &before);
    }

    #[test]
    fn update_then_revert_is_bit_identical(
        bits in bits_strategy(),
        dist in dist_strategy(),
        codes in prop::collection::vec(prop_oneof![Just(i32::MAX), Just(-i32::MAX), -300i32..300], 1..40),
        coeffs in prop::collection::vec(-(1i64 << 24)..(1i64 << 24), 1..4),
        stochastic in any::<bool>(), seed in any::<u64>(), step in 0u64..1000, kernel_norm in any::<bool>(), sparse in any::<bool>(),
    ) {
        let mut m = model(bits, &codes, &[5, -9, 1 << 20]);
        let before = m.params.clone();
        let layout = layout_for(&m, sparse);
        let coeffs: Vec<(u32, i64)> = coeffs.into_iter().enumerate().map(|(d, a)| (d as u32, a)).collect();
        let rounding = if stochastic { Rounding::Stochastic } else { Rounding::Nearest };
        let key = UpdateKey { seed, step, dist, coeffs: &coeffs, rounding, round_step: step, kernel_norm };
        let mut log = SatLog::default();
        perturb::apply_update(&mut m.params, &layout, key, -1, Some(&mut log));
        perturb::revert_update(&mut m.params, &layout, key, -1, &log);
        prop_assert_eq!(&m.params, &before);
    }
}

#[test]
fn perturbation_actually_moves_weights_and_respects_bounds() {
    let mut m = model(WeightBits::W8, &[127, -127, 0, 5], &[0]);
    let before = m.params.clone();
    let layout = TrainableLayout::new(&m);
    let key = DrawKey {
        seed: 1,
        step: 0,
        draw: 0,
        dist: Distribution::Rademacher,
        kernel_norm: false,
    };
    let mut log = SatLog::default();
    let sat = perturb::perturb(&mut m.params, &layout, key, 3, 1, &mut log);
    assert!(sat > 0, "codes at ±127 moved by ±3 must saturate sometimes");
    assert_ne!(m.params, before);
    for p in &m.params {
        if let QData::I8(v) = &p.data {
            assert!(
                v.iter().all(|&c| c != i8::MIN),
                "the symmetric range excludes -128"
            );
        }
    }
}

#[test]
fn stochastic_rounding_moves_small_updates_in_expectation() {
    // An update of 0.25 LSB per code vanishes with nearest rounding but not stochastic.
    let mut nearest = model(WeightBits::W8, &[0], &[0]);
    // Weights only: a bias moves 1/s_in = 50 times further per unit of gradient.
    nearest.set_trainable(|s| s.role == lastmile_core::model::ParamRole::Weight);
    let mut stoch = nearest.clone();
    let layout = TrainableLayout::new(&nearest);
    // a = 0.25 LSB · 2^16 / (z≈32) ≈ 512 per unit of z... use Rademacher so |z| = 32 exactly.
    let coeffs = [(0u32, 512i64)]; // u = 512·32 / 2^16 = 0.25
    let mk = |rounding| UpdateKey {
        seed: 3,
        step: 0,
        dist: Distribution::Rademacher,
        coeffs: &coeffs,
        rounding,
        round_step: 0,
        kernel_norm: false,
    };
    let s1 = perturb::apply_update(&mut nearest.params, &layout, mk(Rounding::Nearest), 1, None);
    let s2 = perturb::apply_update(
        &mut stoch.params,
        &layout,
        mk(Rounding::Stochastic),
        1,
        None,
    );
    assert_eq!(s1.changed, 0);
    let frac = s2.changed as f64 / layout.total as f64;
    assert!(
        (0.1..0.45).contains(&frac),
        "about a quarter of the codes should move, got {frac}"
    );
}

#[test]
fn sparse_masks_leave_the_rest_untouched() {
    let mut m = model(WeightBits::W16, &[1000, -2000, 3, -4, 500], &[0]);
    m.set_trainable(|s| s.role == lastmile_core::model::ParamRole::Weight);
    let before = m.params.clone();
    let layout = TrainableLayout::sparse(
        &m,
        Sparsity {
            channel_fraction: Some(0.4),
            magnitude_fraction: None,
            seed: 1,
        },
    );
    let active = layout.active();
    assert!(
        active > 0 && active < layout.total,
        "{active} of {}",
        layout.total
    );
    let coeffs = [(0u32, 1i64 << 20)];
    let key = UpdateKey {
        seed: 2,
        step: 0,
        dist: Distribution::Gaussian,
        coeffs: &coeffs,
        rounding: Rounding::Nearest,
        round_step: 0,
        kernel_norm: true,
    };
    perturb::apply_update(&mut m.params, &layout, key, 1, None);
    let mut changed = 0;
    for slot in &layout.slots {
        for i in 0..slot.len {
            let (a, b) = (
                before[slot.param].data.get(i),
                m.params[slot.param].data.get(i),
            );
            if !slot.active(i) {
                assert_eq!(
                    a, b,
                    "masked element {i} of {} moved",
                    m.params[slot.param].spec.name
                );
            } else if a != b {
                changed += 1;
            }
        }
    }
    assert!(
        changed > active as usize / 2,
        "{changed} of {active} active codes moved"
    );
    // Magnitude mask keeps the smallest codes.
    let layout = TrainableLayout::sparse(
        &m,
        Sparsity {
            channel_fraction: None,
            magnitude_fraction: Some(0.4),
            seed: 1,
        },
    );
    let slot = &layout.slots[0];
    let max_active = (0..slot.len)
        .filter(|&i| slot.active(i))
        .map(|i| m.params[slot.param].data.get(i).abs())
        .max()
        .unwrap();
    let min_inactive = (0..slot.len)
        .filter(|&i| !slot.active(i))
        .map(|i| m.params[slot.param].data.get(i).abs())
        .min()
        .unwrap();
    assert!(max_active <= min_inactive);
}

/// A momentum-guided view over `m` with the given momentum codes (cycled) and constants.
fn guide_for<'a>(
    layout: &TrainableLayout,
    state: &'a mut Vec<i16>,
    gains: &'a mut Vec<i64>,
    codes: &[i16],
    gain: i64,
) -> perturb::Guide<'a> {
    *state = (0..layout.total as usize)
        .map(|i| codes[i % codes.len()])
        .collect();
    *gains = vec![gain; layout.slots.len()];
    perturb::Guide {
        state,
        gains,
        fresh: 28378, // √0.75 in Q15
        along: 16384, // √0.25 in Q15
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(128))]

    #[test]
    fn guided_perturb_restore_and_update_revert_are_bit_identical(
        bits in bits_strategy(),
        dist in dist_strategy(),
        codes in prop::collection::vec(prop_oneof![Just(i32::MAX), Just(-i32::MAX), -300i32..300], 1..40),
        momentum in prop::collection::vec(any::<i16>(), 1..16),
        gain in prop_oneof![Just(0i64), 1i64..(1 << 28)],
        coeffs in prop::collection::vec(-(1i64 << 24)..(1i64 << 24), 1..4),
        k in prop_oneof![1i64..4, 100i64..5000],
        seed in any::<u64>(), step in 0u64..1000, kernel_norm in any::<bool>(), sparse in any::<bool>(),
    ) {
        let mut m = model(bits, &codes, &[5, -9, 1 << 20]);
        let before = m.params.clone();
        let layout = layout_for(&m, sparse);
        let (mut state, mut gains) = (Vec::new(), Vec::new());
        let guide = guide_for(&layout, &mut state, &mut gains, &momentum, gain);
        let key = DrawKey { seed, step, draw: 1, dist, kernel_norm };
        let mut log = SatLog::default();
        perturb::perturb_guided(&mut m.params, &layout, key, Some(&guide), k, -1, &mut log);
        perturb::restore_guided(&mut m.params, &layout, key, Some(&guide), k, -1, &log);
        prop_assert_eq!(&m.params, &before);
        let coeffs: Vec<(u32, i64)> = coeffs.into_iter().enumerate().map(|(d, a)| (d as u32, a)).collect();
        let ukey = UpdateKey { seed, step, dist, coeffs: &coeffs, rounding: Rounding::Stochastic, round_step: step, kernel_norm };
        perturb::apply_update_guided(&mut m.params, &layout, ukey, Some(&guide), 1, Some(&mut log));
        perturb::revert_update_guided(&mut m.params, &layout, ukey, Some(&guide), 1, &log);
        prop_assert_eq!(&m.params, &before);
    }
}

#[test]
fn a_zero_gain_guide_is_plain_z_and_a_nonzero_one_is_not() {
    let m0 = model(WeightBits::W16, &[100, -200, 300], &[0]);
    let layout = TrainableLayout::new(&m0);
    let key = DrawKey {
        seed: 4,
        step: 2,
        draw: 0,
        dist: Distribution::Gaussian,
        kernel_norm: false,
    };
    let run = |guide: Option<&perturb::Guide<'_>>| {
        let mut m = m0.clone();
        let mut log = SatLog::default();
        perturb::perturb_guided(&mut m.params, &layout, key, guide, 500, 1, &mut log);
        m.params
    };
    let (mut s, mut g) = (Vec::new(), Vec::new());
    let off = guide_for(&layout, &mut s, &mut g, &[1000, -700], 0);
    assert_eq!(
        run(Some(&off)),
        run(None),
        "gain 0 = no momentum yet = plain z"
    );
    let (mut s2, mut g2) = (Vec::new(), Vec::new());
    let on = guide_for(&layout, &mut s2, &mut g2, &[1000, -700], 1 << 16);
    assert_ne!(run(Some(&on)), run(None));
}
