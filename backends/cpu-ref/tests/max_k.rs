//! The largest reduction the accumulation bound allows, at the extremes of every
//! operand: the accumulator must be exact (no wrap, no saturation) and the
//! output must equal an independent `i128` evaluation of the spec's formula.

use lastmile_backend_cpu_ref::run;
use lastmile_conformance::one_linear_model;
use lastmile_core::ValueId;
use lastmile_core::graph::{Conv2d, Node, Op, ParamId, ParamRole, Topology};
use lastmile_core::model::{ParamSpec, QData, QParam, QuantModel};
use lastmile_core::quant::{
    ActQuant, Activation, MAX_ABS_BIAS_8W, MAX_K, QuantMultiplier, WeightBits,
};

fn spec(name: &str, shape: Vec<usize>, role: ParamRole) -> ParamSpec {
    ParamSpec {
        name: name.into(),
        shape,
        role,
        trainable: false,
    }
}

/// A linear `[k] → [out]`, every weight of channel `c` equal to `w[c]`.
fn linear(bits: WeightBits, k: usize, w: &[i32], b: &[i32], s_w: f32, zp_out: i32) -> QuantModel {
    let codes: Vec<i32> = w.iter().flat_map(|&v| std::iter::repeat_n(v, k)).collect();
    one_linear_model(bits, k, &codes, b, s_w, [-128, zp_out], false)
}

/// The spec's requantization, written out: `⌊(acc·M + 2^(n−1)) / 2^n⌋`, then
/// `clamp(y + zp, −128, 127)`. `>>` on `i128` is a floor division.
fn requantize(acc: i128, m: i128, n: u32, zp: i128) -> (i128, i8) {
    let y = (acc * m + (1i128 << (n - 1))) >> n;
    (y, (y + zp).clamp(-128, 127) as i8)
}

#[test]
fn k_max_8w8a_extremes_are_exact() {
    let k = MAX_K; // 65 536
    let bias = MAX_ABS_BIAS_8W as i32; // 2^24
    // Inputs all 127 with zp_in = −128 ⇒ x' = 255 for every term.
    // ch0: w = +127, b = +2^24; ch1: the negation (w = −127, b = −2^24).
    // acc = ±(65536·255·127 + 2^24) = ±2 139 160 576 — within i32 (2 147 483 647) by 0.4 %.
    let acc: i128 = k as i128 * 255 * 127 + bias as i128;
    assert_eq!(acc, 2_139_160_576);
    assert!(acc <= i32::MAX as i128);

    // s_in = s_out = 1, s_w = 3·2^−26 (exact in f32) ⇒ r = 1.5·2^−25
    // ⇒ M = 1.5·2^30 = 3·2^29, n = 30 + 25 = 55 (worked by hand from r's binary form).
    let s_w = 3.0 * 2f32.powi(-26);
    let (m, n) = (3i128 << 29, 55u32);
    assert_eq!(
        QuantMultiplier::from_real(s_w as f64).unwrap(),
        QuantMultiplier {
            multiplier: 3 << 29,
            shift: 55
        }
    );
    // y = ⌊(±3·acc + 2^25) / 2^26⌋: +95.628 ⇒ 96, −95.628 ⇒ −96.
    let (y0, out0) = requantize(acc, m, n, 0);
    let (y1, out1) = requantize(-acc, m, n, 0);
    assert_eq!((y0, y1), (96, -96));

    let model = linear(WeightBits::W8, k, &[127, -127], &[bias, -bias], s_w, 0);
    model
        .validate()
        .expect("K = MAX_K with the 8w8a bias bound is legal");
    let input = vec![127i8; k];
    assert_eq!(run(&model, &input, 1).unwrap(), vec![out0, out1]);
}

#[test]
fn k_max_conv_8w8a_sums_over_taps_and_channels() {
    // The same bound reached as KH·KW·C_in = 4·4·4096 = 65 536 in a conv (one output position).
    let (kh, kw, c) = (4usize, 4usize, 4096usize);
    assert_eq!(kh * kw * c, MAX_K);
    let bias = MAX_ABS_BIAS_8W as i32;
    let s_w = 3.0 * 2f32.powi(-26);
    let mut codes = vec![127i8; MAX_K];
    codes.extend(std::iter::repeat_n(-127i8, MAX_K));
    let model = QuantModel {
        topology: Topology {
            input_shape: vec![kh, kw, c],
            nodes: vec![Node {
                name: "conv".into(),
                op: Op::Conv2d(Conv2d {
                    weight: ParamId(0),
                    bias: Some(ParamId(1)),
                    stride: [1, 1],
                    padding: [0; 4],
                    dilation: [1, 1],
                    groups: 1,
                    activation: Activation::None,
                }),
                inputs: vec![ValueId::INPUT],
            }],
        },
        weight_bits: WeightBits::W8,
        params: vec![
            QParam {
                spec: spec("conv.weight", vec![2, kh, kw, c], ParamRole::Weight),
                data: QData::I8(codes),
                scales: vec![s_w; 2],
            },
            QParam {
                spec: spec("conv.bias", vec![2], ParamRole::Bias),
                data: QData::I32(vec![bias, -bias]),
                scales: Vec::new(),
            },
        ],
        act: vec![
            ActQuant {
                scale: 1.0,
                zero_point: -128,
            },
            ActQuant {
                scale: 1.0,
                zero_point: 0,
            },
        ],
        metadata: Default::default(),
    };
    model.validate().unwrap();
    // Same accumulator and multiplier as the linear case ⇒ [96, −96].
    assert_eq!(run(&model, &vec![127i8; MAX_K], 1).unwrap(), vec![96, -96]);
}

#[test]
fn k_max_16w8a_extremes_need_and_get_a_wide_accumulator() {
    let k = MAX_K;
    // Weights ±32767, bias ±i32::MAX (the 16w8a bias bound), x' = 255:
    // acc = ±(65536·255·32767 + 2 147 483 647) = ±549 739 102 207 — far past i32, < 2^40.
    let acc: i128 = k as i128 * 255 * 32767 + i32::MAX as i128;
    assert_eq!(acc, 549_739_102_207);
    assert!(acc > i32::MAX as i128 && acc < 1i128 << 40);

    // The smallest legal multiplier, r = 2^−32 ⇒ M = 2^30, n = 62:
    //   y = ⌊(acc·2^30 + 2^61)/2^62⌋ = ⌊(acc + 2^31)/2^32⌋ = ⌊128.496⌋ = 128,
    //   and −acc ⇒ ⌊−127.496⌋ = −128.
    // Even at the smallest multiplier |y| ≥ 128, so each sign is checked unclamped with
    // its own output zero point: zp = −1 shows y = 128 as code 127, zp = 0 shows −128.
    let s_w = 2f32.powi(-32);
    let (m, n) = (1i128 << 30, 62u32);
    assert_eq!(
        QuantMultiplier::from_real(s_w as f64).unwrap(),
        QuantMultiplier {
            multiplier: 1 << 30,
            shift: 62
        }
    );
    let input = vec![127i8; k];
    for (w, b, zp) in [(32767i32, i32::MAX, -1i32), (-32767, -i32::MAX, 0)] {
        let sign = w.signum() as i128;
        let (y, out) = requantize(sign * acc, m, n, zp as i128);
        assert_eq!(y, 128 * sign);
        assert!((-128..=127).contains(&(y + zp as i128)), "not clamped");
        let model = linear(WeightBits::W16, k, &[w], &[b], s_w, zp);
        model
            .validate()
            .expect("K = MAX_K with an i32 bias is legal at 16w8a");
        assert_eq!(
            run(&model, &input, 1).unwrap(),
            vec![out],
            "w = {w}, bias = {b}"
        );
    }
}

#[test]
fn k_past_the_bound_is_rejected_at_load_time() {
    // Linear with K = MAX_K + 1.
    let m = linear(WeightBits::W8, MAX_K + 1, &[1], &[0], 1e-6, 0);
    let e = m.topology.infer_shapes(&m.specs()).unwrap_err();
    assert!(e.message.contains("MAX_K"), "{e}");
    assert!(e.location.contains("'fc'"), "{e}");
    // ...and exactly MAX_K is accepted.
    let m = linear(WeightBits::W8, MAX_K, &[1], &[0], 1e-6, 0);
    assert!(m.topology.infer_shapes(&m.specs()).is_ok());

    // Conv: K = KH·KW·C_in/groups = 3·3·7282 = 65 538 > MAX_K.
    let conv = |kh: usize, kw: usize, cin: usize, groups: usize| {
        let specs = vec![spec(
            "c.weight",
            vec![groups, kh, kw, cin / groups],
            ParamRole::Weight,
        )];
        let topo = Topology {
            input_shape: vec![kh, kw, cin],
            nodes: vec![Node {
                name: "c".into(),
                op: Op::Conv2d(Conv2d {
                    weight: ParamId(0),
                    bias: None,
                    stride: [1, 1],
                    padding: [0; 4],
                    dilation: [1, 1],
                    groups,
                    activation: Activation::None,
                }),
                inputs: vec![ValueId::INPUT],
            }],
        };
        topo.infer_shapes(&specs)
    };
    assert!(conv(3, 3, 7282, 1).unwrap_err().message.contains("MAX_K"));
    assert!(conv(4, 4, 4096, 1).is_ok());
    // Grouped: K counts channels per group only: 2 groups of 65 536 = 131 072 channels is fine
    // per group... but one more channel per group is not.
    assert!(conv(1, 1, 2 * MAX_K, 2).is_ok());
    assert!(conv(1, 1, 2 * (MAX_K + 1), 2).is_err());

    // Global average pooling over more than MAX_K positions.
    let topo = Topology {
        input_shape: vec![257, 256, 1],
        nodes: vec![Node {
            name: "gap".into(),
            op: Op::GlobalAvgPool,
            inputs: vec![ValueId::INPUT],
        }],
    };
    assert!(
        topo.infer_shapes(&[])
            .unwrap_err()
            .message
            .contains("MAX_K")
    );
}
