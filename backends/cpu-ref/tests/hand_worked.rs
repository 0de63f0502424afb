//! Hand-worked integer cases: small models whose every output code is computed in
//! the comments from the spec (`docs/integer-spec.md`), independently of the code.
//!
//! Notation: `x' = x − zp_in`, `acc = bias + Σ x'·w`, requantization
//! `y = ⌊(acc·M + 2^(n−1)) / 2^n⌋` (round half up), `out = clamp(y + zp_out, lo, hi)`.

use lastmile_backend_cpu_ref::{Prepared, run};
use lastmile_core::ValueId;
use lastmile_core::graph::{Conv2d, Linear, Node, Op, ParamId, ParamRole, Pool2d, Topology};
use lastmile_core::model::{ParamSpec, QData, QParam, QuantModel};
use lastmile_core::plan::NodePlan;
use lastmile_core::quant::{ActQuant, Activation, QuantMultiplier, WeightBits};

fn aq(scale: f32, zero_point: i32) -> ActQuant {
    ActQuant { scale, zero_point }
}

fn weight(name: &str, shape: Vec<usize>, data: QData, scales: Vec<f32>) -> QParam {
    QParam {
        spec: ParamSpec {
            name: name.into(),
            shape,
            role: ParamRole::Weight,
            trainable: false,
        },
        data,
        scales,
    }
}

fn bias(name: &str, b: Vec<i32>) -> QParam {
    QParam {
        spec: ParamSpec {
            name: name.into(),
            shape: vec![b.len()],
            role: ParamRole::Bias,
            trainable: false,
        },
        data: QData::I32(b),
        scales: Vec::new(),
    }
}

fn node(name: &str, op: Op, inputs: &[u32]) -> Node {
    Node {
        name: name.into(),
        op,
        inputs: inputs.iter().map(|&v| ValueId(v)).collect(),
    }
}

fn model(
    bits: WeightBits,
    input_shape: &[usize],
    nodes: Vec<Node>,
    params: Vec<QParam>,
    act: Vec<ActQuant>,
) -> QuantModel {
    let m = QuantModel {
        topology: Topology {
            input_shape: input_shape.to_vec(),
            nodes,
        },
        weight_bits: bits,
        params,
        act,
        metadata: Default::default(),
    };
    m.validate().expect("hand-worked model is valid");
    m
}

/// A linear layer `[f] → [out]` with i8 weights given row by row.
fn linear8(
    w: &[&[i8]],
    s_w: f32,
    b: Option<Vec<i32>>,
    inq: ActQuant,
    outq: ActQuant,
    act: Activation,
) -> QuantModel {
    let (out, f) = (w.len(), w[0].len());
    let data: Vec<i8> = w.iter().flat_map(|r| r.iter().copied()).collect();
    let mut params = vec![weight(
        "fc.weight",
        vec![out, f],
        QData::I8(data),
        vec![s_w; out],
    )];
    let bias_id = b.map(|b| {
        params.push(bias("fc.bias", b));
        ParamId(1)
    });
    let op = Op::Linear(Linear {
        weight: ParamId(0),
        bias: bias_id,
        activation: act,
    });
    model(
        WeightBits::W8,
        &[f],
        vec![node("fc", op, &[0])],
        params,
        vec![inq, outq],
    )
}

fn multipliers(m: &QuantModel, node: usize) -> Vec<QuantMultiplier> {
    match &Prepared::new(m).unwrap().plan().nodes[node] {
        NodePlan::Dot { multipliers, .. } => multipliers.clone(),
        p => panic!("not a dot node: {p:?}"),
    }
}

#[test]
fn requantization_ties_go_toward_plus_infinity() {
    // s_in = 1, s_w = 0.5, s_out = 1 ⇒ r = 0.5 exactly ⇒ M = 2^30, n = 31.
    // One input x = 5 with zp_in = 2 ⇒ x' = 3.
    //   ch0: w = +1, b =  0: acc =  3 ⇒ ⌊( 3·2^30 + 2^30)/2^31⌋ = ⌊ 4·2^30/2^31⌋ =  2  ( 1.5 →  2)
    //   ch1: w = −1, b =  0: acc = −3 ⇒ ⌊(−3·2^30 + 2^30)/2^31⌋ = ⌊−2·2^30/2^31⌋ = −1  (−1.5 → −1, not −2)
    //   ch2: w = +1, b =  4: acc =  7 ⇒ ⌊( 7·2^30 + 2^30)/2^31⌋ =  4                  ( 3.5 →  4)
    //   ch3: w = −1, b = −4: acc = −7 ⇒ ⌊(−7·2^30 + 2^30)/2^31⌋ = ⌊−3⌋ = −3          (−3.5 → −3)
    // zp_out = −10 ⇒ [−8, −11, −6, −13].
    let m = linear8(
        &[&[1], &[-1], &[1], &[-1]],
        0.5,
        Some(vec![0, 0, 4, -4]),
        aq(1.0, 2),
        aq(1.0, -10),
        Activation::None,
    );
    assert_eq!(
        multipliers(&m, 0)[0],
        QuantMultiplier {
            multiplier: 1 << 30,
            shift: 31
        }
    );
    assert_eq!(run(&m, &[5], 1).unwrap(), vec![-8, -11, -6, -13]);
}

#[test]
fn a_non_power_of_two_multiplier_is_not_a_tie() {
    // s_w = 0.3f32 = 5033165·2^−24 exactly, s_in = s_out = 1 ⇒ r = 5033165·2^−24 ∈ [2^−2, 2^−1)
    // ⇒ n = 32, M = r·2^32 = 5033165·2^8 = 1 288 490 240 (exact, no rounding needed).
    // x' = ±5 (x = ±5, zp 0), w = 1:
    //   acc =  5: ⌊( 5·1288490240 + 2^31)/2^32⌋ = ⌊ 8589934848/2^32⌋ = ⌊ 2.00000006⌋ =  2
    //                       (5·r = 1.50000006: above the tie, rounds up)
    //   acc = −5: ⌊(−5·1288490240 + 2^31)/2^32⌋ = ⌊−4294967552/2^32⌋ = ⌊−1.00000006⌋ = −2
    //                       (−5·r = −1.50000006: *below* the tie, so it rounds down to −2)
    let m = linear8(&[&[1]], 0.3, None, aq(1.0, 0), aq(1.0, 0), Activation::None);
    assert_eq!(
        multipliers(&m, 0)[0],
        QuantMultiplier {
            multiplier: 1_288_490_240,
            shift: 32
        }
    );
    assert_eq!(run(&m, &[5, -5], 2).unwrap(), vec![2, -2]);
}

#[test]
fn padded_conv_taps_contribute_zero() {
    // Input 2×2×1, zp_in = 10, codes [[11, 12], [13, 14]] ⇒ x' = [[1, 2], [3, 4]].
    // 3×3 kernel w[ky][kx] = 1..9 row-major, padding 1 on every side, stride 1 ⇒ 2×2 output.
    // r = 1 (all scales 1) ⇒ M = 2^30, n = 30; zp_out = 0; no bias.
    // A padded tap holds real zero (code zp_in), so it adds (zp_in − zp_in)·w = 0.
    //   out(0,0): valid taps ky,kx ∈ {1,2}: 5·1 + 6·2 + 8·3 + 9·4 = 5+12+24+36 = 77
    //   out(0,1): ky ∈ {1,2}, kx ∈ {0,1}:   4·1 + 5·2 + 7·3 + 8·4 = 4+10+21+32 = 67
    //   out(1,0): ky ∈ {0,1}, kx ∈ {1,2}:   2·1 + 3·2 + 5·3 + 6·4 = 2+ 6+15+24 = 47
    //   out(1,1): ky ∈ {0,1}, kx ∈ {0,1}:   1·1 + 2·2 + 4·3 + 5·4 = 1+ 4+12+20 = 37
    // (Treating padding as code 0 instead would add (0 − 10)·w for every padded tap.)
    let w: Vec<i8> = (1..=9).collect();
    let op = Op::Conv2d(Conv2d {
        weight: ParamId(0),
        bias: None,
        stride: [1, 1],
        padding: [1, 1, 1, 1],
        dilation: [1, 1],
        groups: 1,
        activation: Activation::None,
    });
    let m = model(
        WeightBits::W8,
        &[2, 2, 1],
        vec![node("conv", op, &[0])],
        vec![weight(
            "conv.weight",
            vec![1, 3, 3, 1],
            QData::I8(w),
            vec![1.0],
        )],
        vec![aq(1.0, 10), aq(1.0, 0)],
    );
    assert_eq!(run(&m, &[11, 12, 13, 14], 1).unwrap(), vec![77, 67, 47, 37]);
}

#[test]
fn relu_and_relu6_are_clamps_on_codes() {
    // s_in = s_out = 0.05, s_w = 1 ⇒ r = 1 exactly. x = 20 (zp 0) ⇒ x' = 20 (real 1.0).
    // zp_out = −100. Weights [−1, 7, 3, 127] ⇒ acc = y = [−20, 140, 60, 2540]
    //   ⇒ y + zp_out = [−120, 40, −40, 2440].
    // None:  clamp to [−128, 127]                              ⇒ [−120, 40, −40, 127]
    // ReLU:  lo = zp_out = −100                                ⇒ [−100, 40, −40, 127]
    // ReLU6: hi = −100 + rint(6 / 0.05f32) = −100 + rint(119.999998) = 20
    //                                                          ⇒ [−100, 20, −40, 20]
    let run_with = |act| {
        let m = linear8(
            &[&[-1], &[7], &[3], &[127]],
            1.0,
            None,
            aq(0.05, 0),
            aq(0.05, -100),
            act,
        );
        run(&m, &[20], 1).unwrap()
    };
    assert_eq!(run_with(Activation::None), vec![-120, 40, -40, 127]);
    assert_eq!(run_with(Activation::Relu), vec![-100, 40, -40, 127]);
    assert_eq!(run_with(Activation::Relu6), vec![-100, 20, -40, 20]);
}

#[test]
fn depthwise_channels_only_see_their_own_input_channel() {
    // Input 1×3×2 (H, W, C), zp 0: channel 0 = [1, 2, 3], channel 1 = [−1, −2, −3]
    // (NHWC codes: [1, −1, 2, −2, 3, −3]). Kernel 1×3, groups = C_in = 2.
    // s_in = s_out = 1, s_w = 0.25 ⇒ r = 0.25 ⇒ M = 2^30, n = 32.
    //
    // Multiplier 1: weights ch0 = [1, 1, 1], ch1 = [1, 0, −1]; bias [0, −4].
    //   ch0: acc = 1+2+3 = 6             ⇒ 6/4 = 1.5  ⇒ ⌊(6·2^30 + 2^31)/2^32⌋ = ⌊2⌋ = 2
    //   ch1: acc = −4 + (−1 + 0 + 3) = −2 ⇒ −0.5       ⇒ ⌊(−2·2^30 + 2^31)/2^32⌋ = ⌊0⌋ = 0
    // Multiplier 2 (C_out = 4, output co reads input channel co / 2), no bias:
    //   co0 = [1, 1, 1]  on ch0: 6  ⇒ 1.5  ⇒  2
    //   co1 = [1, 0, 0]  on ch0: 1  ⇒ 0.25 ⇒  0
    //   co2 = [1, 0, −1] on ch1: 2  ⇒ 0.5  ⇒  1 (tie up)
    //   co3 = [0, 0, 1]  on ch1: −3 ⇒ −0.75 ⇒ ⌊(−3·2^30 + 2^31)/2^32⌋ = ⌊−0.25⌋ = −1
    let dw = |w: Vec<i8>, cout: usize, b: Option<Vec<i32>>| {
        let mut params = vec![weight(
            "dw.weight",
            vec![cout, 1, 3, 1],
            QData::I8(w),
            vec![0.25; cout],
        )];
        let bias_id = b.map(|b| {
            params.push(bias("dw.bias", b));
            ParamId(1)
        });
        let op = Op::Conv2d(Conv2d {
            weight: ParamId(0),
            bias: bias_id,
            stride: [1, 1],
            padding: [0; 4],
            dilation: [1, 1],
            groups: 2,
            activation: Activation::None,
        });
        model(
            WeightBits::W8,
            &[1, 3, 2],
            vec![node("dw", op, &[0])],
            params,
            vec![aq(1.0, 0), aq(1.0, 0)],
        )
    };
    let x = [1, -1, 2, -2, 3, -3];
    let m1 = dw(vec![1, 1, 1, 1, 0, -1], 2, Some(vec![0, -4]));
    assert_eq!(run(&m1, &x, 1).unwrap(), vec![2, 0]);
    let m2 = dw(vec![1, 1, 1, 1, 0, 0, 1, 0, -1, 0, 0, 1], 4, None);
    assert_eq!(run(&m2, &x, 1).unwrap(), vec![2, 0, 1, -1]);
}

fn pool_model(
    max: bool,
    shape: [usize; 3],
    kernel: [usize; 2],
    stride: [usize; 2],
    padding: [usize; 4],
    q: ActQuant,
) -> QuantModel {
    let p = Pool2d {
        kernel,
        stride,
        padding,
    };
    let op = if max { Op::MaxPool(p) } else { Op::AvgPool(p) };
    model(
        WeightBits::W8,
        &shape,
        vec![node("pool", op, &[0])],
        Vec::new(),
        vec![q, q],
    )
}

#[test]
fn average_pool_ties_round_half_away_from_zero() {
    // Input 1×2×2 (H, W, C), kernel 1×2: one window per channel.
    //   ch0: codes [1, 2]   ⇒ sum  3, count 2 ⇒ ( 3 + 1)/2 =  2   ( 1.5 →  2)
    //   ch1: codes [−1, −2] ⇒ sum −3, count 2 ⇒ (−3 − 1)/2 = −2   (−1.5 → −2: away from
    //        zero, unlike requantization's −1.5 → −1)
    let m = pool_model(false, [1, 2, 2], [1, 2], [1, 1], [0; 4], aq(0.1, 0));
    assert_eq!(run(&m, &[1, -1, 2, -2], 1).unwrap(), vec![2, -2]);

    // Thirds are not ties: [1, 1, 2] ⇒ 4/3 ⇒ (4 + 1)/3 = 1; [−1, −1, −2] ⇒ (−4 − 1)/3 = −1.
    let m = pool_model(false, [1, 3, 2], [1, 3], [1, 1], [0; 4], aq(0.1, 0));
    assert_eq!(run(&m, &[1, -1, 1, -1, 2, -2], 1).unwrap(), vec![1, -1]);

    // Padding is excluded from the count. W = 3 codes [5, 6, −7], kernel 1×2, stride 1,
    // padding left 1 and right 1 ⇒ 4 windows; zp = 50 plays no role (codes are averaged):
    //   [pad, 5] ⇒ 5/1 = 5;  [5, 6] ⇒ 11/2 = 5.5 ⇒ 6;  [6, −7] ⇒ −1/2 = −0.5 ⇒ −1;  [−7, pad] ⇒ −7
    let m = pool_model(false, [1, 3, 1], [1, 2], [1, 1], [0, 1, 0, 1], aq(0.1, 50));
    assert_eq!(run(&m, &[5, 6, -7], 1).unwrap(), vec![5, 6, -1, -7]);
}

#[test]
fn max_pool_excludes_padding() {
    // W = 2 codes [−100, −120], zp = 50, kernel 1×2, stride 1, padding left 1 and right 1:
    //   [pad, −100] ⇒ −100;  [−100, −120] ⇒ −100;  [−120, pad] ⇒ −120.
    // Padding taken as the zero point (50) or as code 0 would win every border window.
    let m = pool_model(true, [1, 2, 1], [1, 2], [1, 1], [0, 1, 0, 1], aq(0.1, 50));
    assert_eq!(run(&m, &[-100, -120], 1).unwrap(), vec![-100, -100, -120]);
}

#[test]
fn global_average_pool_ties() {
    // 2×2×2 input, two samples:
    //   sample 0: ch0 [1, 0, 1, 0] ⇒ 2/4 = 0.5 ⇒ (2 + 2)/4 = 1;  ch1 [−1, 0, −1, 0] ⇒ (−2 − 2)/4 = −1
    //   sample 1: ch0 [3, 3, 0, 0] ⇒ 6/4 = 1.5 ⇒ (6 + 2)/4 = 2;  ch1 [−3, −3, 0, 0] ⇒ (−6 − 2)/4 = −2
    let q = aq(0.5, -3);
    let m = model(
        WeightBits::W8,
        &[2, 2, 2],
        vec![node("gap", Op::GlobalAvgPool, &[0])],
        Vec::new(),
        vec![q, q],
    );
    let x = [
        1, -1, 0, 0, 1, -1, 0, 0, // sample 0, NHWC: (h, w) = (0,0), (0,1), (1,0), (1,1)
        3, -3, 3, -3, 0, 0, 0, 0, // sample 1
    ];
    assert_eq!(run(&m, &x, 2).unwrap(), vec![1, -1, 2, -2]);
}

#[test]
fn add_rescales_inputs_of_different_scales() {
    // Graph: x (s 0.5, zp 0) → 1×1 conv with w = 1, s_w = 0.5 → b (s 0.25, zp 0);
    //   conv r = 0.5·0.5/0.25 = 1 ⇒ b has the same codes as x (real value halved per code).
    // add(x, b) → out (s 1, zp 5):
    //   t = 2·max(0.5, 0.25) = 1; M_a = 0.5/1 = 0.5 (2^30, 31); M_b = 0.25 (2^30, 32);
    //   M_o = 1/(2^20·1) = 2^−20 (2^30, 50).
    //   x =    3: a' = 3·2^20·0.5 = 1 572 864, b' = 3·2^20·0.25 = 786 432; sum = 2.25·2^20
    //             ⇒ M_o: 2.25 ⇒ 2 ⇒ +5 = 7        (real 3·0.5 + 3·0.25 = 2.25)
    //   x =    2: 1.5·2^20 ⇒ 1.5 ⇒ 2 (tie up) ⇒ 7
    //   x =   −2: −1.5 ⇒ ⌊−1.5 + 0.5⌋ = −1 (tie up) ⇒ 4
    //   x =   −3: −2.25 ⇒ −2 ⇒ 3
    //   x =  127: 127·0.75 = 95.25 ⇒ 95 ⇒ 100
    //   x = −128: −128·0.75 = −96 ⇒ −91
    let conv = Op::Conv2d(Conv2d {
        weight: ParamId(0),
        bias: None,
        stride: [1, 1],
        padding: [0; 4],
        dilation: [1, 1],
        groups: 1,
        activation: Activation::None,
    });
    let m = model(
        WeightBits::W8,
        &[1, 1, 1],
        vec![
            node("branch", conv, &[0]),
            node(
                "add",
                Op::Add {
                    activation: Activation::None,
                },
                &[0, 1],
            ),
        ],
        vec![weight(
            "branch.weight",
            vec![1, 1, 1, 1],
            QData::I8(vec![1]),
            vec![0.5],
        )],
        vec![aq(0.5, 0), aq(0.25, 0), aq(1.0, 5)],
    );
    match &Prepared::new(&m).unwrap().plan().nodes[1] {
        NodePlan::Add {
            mult_a,
            mult_b,
            mult_out,
            ..
        } => {
            let m = |multiplier, shift| QuantMultiplier { multiplier, shift };
            assert_eq!(*mult_a, m(1 << 30, 31));
            assert_eq!(*mult_b, m(1 << 30, 32));
            assert_eq!(*mult_out, m(1 << 30, 50));
        }
        p => panic!("{p:?}"),
    }
    assert_eq!(
        run(&m, &[3, 2, -2, -3, 127, -128], 6).unwrap(),
        vec![7, 7, 4, 3, 100, -91]
    );
}

#[test]
fn weights_at_plus_and_minus_32767_in_16w8a() {
    // Linear 2 → 2, i16 weights; x = [127, 0] with zp_in = −128 ⇒ x' = [255, 128].
    // s_in = s_out = 1, per-channel s_w = [2^−15, 2^−14] ⇒ (M, n) = (2^30, 45), (2^30, 44).
    //   ch0: w = [ 32767, −32767]: acc = 255·32767 − 128·32767 = 127·32767 = 4 161 409
    //        ⇒ ⌊(4161409 + 2^14)/2^15⌋ = ⌊4177793/32768⌋ = ⌊127.49⌋ = 127   (4161409/2^15 = 126.996)
    //   ch1: w = [−32767,  32767]: acc = −4 161 409
    //        ⇒ ⌊(−4161409 + 2^13)/2^14⌋ = ⌊−253.49⌋ = −254 ⇒ saturates to −128
    let w = QData::I16(vec![32767, -32767, -32767, 32767]);
    let op = Op::Linear(Linear {
        weight: ParamId(0),
        bias: None,
        activation: Activation::None,
    });
    let m = model(
        WeightBits::W16,
        &[2],
        vec![node("fc", op, &[0])],
        vec![weight(
            "fc.weight",
            vec![2, 2],
            w,
            vec![2f32.powi(-15), 2f32.powi(-14)],
        )],
        vec![aq(1.0, -128), aq(1.0, 0)],
    );
    let ms = multipliers(&m, 0);
    assert_eq!((ms[0].multiplier, ms[0].shift), (1 << 30, 45));
    assert_eq!((ms[1].multiplier, ms[1].shift), (1 << 30, 44));
    assert_eq!(run(&m, &[127, 0], 1).unwrap(), vec![127, -128]);
}
