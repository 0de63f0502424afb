//! Single-layer models at the edges of every kernel, on every tier this CPU supports,
//! compared bit for bit with the reference backend:
//!
//! * reduction lengths around every granularity (1, 3, 4, 15, 16, 17, … 129, 257, 1000),
//! * output channels around the panel widths (1, 7, 8, 9, 15, 16, 17, 31, 32, 33, 48),
//! * batch sizes that leave partial tiles, extreme zero points (−128, 127) and codes,
//! * `K = MAX_K` with every product at its extreme for 8w8a and 16w8a,
//! * depthwise with channel tails and, for 16-bit weights, more than 256 taps,
//! * multipliers small enough (shift < 22) to take the scalar requantization path.

use lastmile_backend_x86::{Tier, X86};
use lastmile_conformance::{OneLayer, one_layer_model};
use lastmile_core::backend::Backend;
use lastmile_core::graph::{Conv2d, Linear, Op, ParamId};
use lastmile_core::model::{QData, QuantModel};
use lastmile_core::quant::{Activation, MAX_K, WeightBits};

struct Rng(u64);
impl Rng {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }
    fn range(&mut self, lo: i64, hi: i64) -> i64 {
        lo + (self.next() % (hi - lo + 1) as u64) as i64
    }
}

fn tiers() -> Vec<X86> {
    let v: Vec<X86> = X86::available_tiers()
        .into_iter()
        .filter(|t| *t != Tier::Scalar)
        .map(|t| X86::with_tier(t).expect("listed as available"))
        .collect();
    if v.is_empty() {
        eprintln!("no SIMD tier on this CPU: only the scalar tier is checked (by conformance)");
    }
    v
}

/// Weight codes: mostly random, some runs at ±qmax.
fn weights(rng: &mut Rng, bits: WeightBits, len: usize, extreme: bool) -> QData {
    let q = bits.qmax() as i64;
    let codes: Vec<i64> = (0..len)
        .map(|_| {
            if extreme {
                if rng.next().is_multiple_of(2) { q } else { -q }
            } else {
                match rng.next() % 8 {
                    0 => q,
                    1 => -q,
                    _ => rng.range(-q, q),
                }
            }
        })
        .collect();
    match bits {
        WeightBits::W8 => QData::I8(codes.iter().map(|&c| c as i8).collect()),
        WeightBits::W16 => QData::I16(codes.iter().map(|&c| c as i16).collect()),
    }
}

/// Per-channel weight scales giving multipliers from tiny to large (shift 1..62 range);
/// `typical` is a typical |accumulator|.
fn scales(rng: &mut Rng, n: usize, typical: f64) -> Vec<f32> {
    (0..n)
        .map(|c| {
            let r = match c % 5 {
                0 => 40.0 / typical,
                1 => 3.0 / typical,
                2 => 300.0 / typical,
                3 => 2f64.powi(-32) * 1.5,
                _ => 400.0, // shift < 22 ⇒ scalar requantization for 16w8a
            };
            (r * (0.75 + (rng.next() % 1000) as f64 / 2000.0)) as f32
        })
        .collect()
}

fn bias(rng: &mut Rng, bits: WeightBits, n: usize) -> Vec<i32> {
    let b = bits.max_abs_bias();
    (0..n)
        .map(|i| match i % 4 {
            0 => b as i32,
            1 => -(b as i32),
            _ => rng.range(-1000, 1000) as i32,
        })
        .collect()
}

/// A one-node model named `layer` (scale-1 activations, frozen), validated.
#[allow(clippy::too_many_arguments)]
fn model(
    input_shape: Vec<usize>,
    op: Op,
    weight_shape: Vec<usize>,
    weights: QData,
    bias: Vec<i32>,
    scales: Vec<f32>,
    zp_in: i32,
    zp_out: i32,
) -> QuantModel {
    let m = one_layer_model(OneLayer {
        name: "layer",
        input_shape,
        op,
        weight_shape,
        weights,
        bias,
        scales,
        zero_points: [zp_in, zp_out],
    });
    m.validate().expect("test model is valid");
    m
}

fn inputs(rng: &mut Rng, len: usize, zp: i32, extreme: bool) -> Vec<i8> {
    (0..len)
        .map(|_| {
            if extreme {
                // |x − zp| = 255 when zp is ∓128/127.
                if zp < 0 { 127 } else { -128 }
            } else {
                match rng.next() % 8 {
                    0 => 127,
                    1 => -128,
                    _ => rng.next() as i8,
                }
            }
        })
        .collect()
}

fn check(model: &QuantModel, input: &[i8], n: usize, what: &str) {
    let want = lastmile_backend_cpu_ref::run(model, input, n).expect("reference runs");
    for b in tiers() {
        let mut p = b.prepare(model).expect("prepare");
        let mut got = Vec::new();
        p.forward(&model.params, input, n, &mut got)
            .expect("forward");
        if got != want {
            let i = got.iter().zip(&want).position(|(a, b)| a != b).unwrap();
            panic!(
                "{} {what}: first difference at output {i}: got {} want {}",
                b.tier(),
                got[i],
                want[i]
            );
        }
    }
}

fn linear_op() -> Op {
    Op::Linear(Linear {
        weight: ParamId(0),
        bias: Some(ParamId(1)),
        activation: Activation::None,
    })
}

#[test]
fn linear_every_k_granularity_and_channel_count() {
    let mut rng = Rng(11);
    let ks = [
        1, 2, 3, 4, 5, 7, 8, 9, 15, 16, 17, 31, 32, 33, 63, 64, 65, 127, 128, 129, 255, 256, 257,
        1000,
    ];
    for bits in [WeightBits::W8, WeightBits::W16] {
        for &k in &ks {
            for &out in &[1usize, 7, 8, 9, 15, 16, 17, 31, 32, 33, 48, 64, 65, 100] {
                let zp_in = [-128, 127, rng.range(-128, 127) as i32][(k + out) % 3];
                let n = [1usize, 5, 13][(k * 7 + out) % 3];
                let typical = (k as f64).sqrt() * 100.0 * bits.qmax() as f64 / 2.0;
                let m = model(
                    vec![k],
                    linear_op(),
                    vec![out, k],
                    weights(&mut rng, bits, out * k, false),
                    bias(&mut rng, bits, out),
                    scales(&mut rng, out, typical),
                    zp_in,
                    rng.range(-128, 127) as i32,
                );
                let x = inputs(&mut rng, n * k, zp_in, false);
                check(
                    &m,
                    &x,
                    n,
                    &format!("{} linear k={k} out={out} n={n}", bits.scheme()),
                );
            }
        }
    }
}

#[allow(clippy::too_many_arguments)]
fn conv_op(stride: [usize; 2], padding: [usize; 4], dilation: [usize; 2], groups: usize) -> Op {
    Op::Conv2d(Conv2d {
        weight: ParamId(0),
        bias: Some(ParamId(1)),
        stride,
        padding,
        dilation,
        groups,
        activation: Activation::Relu,
    })
}

/// (kh, kw, cin, cout, stride, padding t/l/b/r, dilation).
type ConvShape = (
    usize,
    usize,
    usize,
    usize,
    [usize; 2],
    [usize; 4],
    [usize; 2],
);

#[test]
fn conv_kernel_shapes_strides_padding_dilation() {
    let mut rng = Rng(12);
    let shapes: &[ConvShape] = &[
        // (kh, kw, cin, cout, stride, padding t/l/b/r, dilation)
        (1, 1, 16, 8, [1, 1], [0; 4], [1, 1]),
        (1, 1, 3, 17, [2, 2], [0; 4], [1, 1]),
        (3, 3, 1, 8, [1, 1], [1; 4], [1, 1]),
        (3, 3, 3, 16, [2, 2], [1; 4], [1, 1]),
        (3, 3, 5, 33, [1, 2], [2, 0, 1, 2], [1, 1]),
        (3, 3, 16, 32, [1, 1], [1; 4], [2, 2]),
        (5, 5, 4, 9, [1, 1], [2; 4], [1, 1]),
        (2, 3, 17, 31, [1, 1], [0, 1, 1, 0], [1, 3]),
        (7, 7, 3, 16, [2, 2], [3; 4], [1, 1]),
        (3, 3, 64, 64, [1, 1], [1; 4], [1, 1]),
        // Output channels for 3- and 4-panel tiles with ragged ends.
        (3, 3, 8, 48, [1, 1], [1; 4], [1, 1]),
        (1, 1, 16, 80, [1, 1], [0; 4], [1, 1]),
        (3, 3, 4, 100, [2, 1], [1; 4], [1, 1]),
        (1, 1, 33, 129, [1, 1], [0; 4], [1, 1]),
    ];
    for bits in [WeightBits::W8, WeightBits::W16] {
        for (i, &(kh, kw, cin, cout, stride, pad, dil)) in shapes.iter().enumerate() {
            let (h, w) = (9 + i % 3, 8 + i % 4);
            let k = kh * kw * cin;
            let zp_in = [-128, 127, 3][i % 3];
            let typical = (k as f64).sqrt() * 100.0 * bits.qmax() as f64 / 2.0;
            let m = model(
                vec![h, w, cin],
                conv_op(stride, pad, dil, 1),
                vec![cout, kh, kw, cin],
                weights(&mut rng, bits, cout * k, false),
                bias(&mut rng, bits, cout),
                scales(&mut rng, cout, typical),
                zp_in,
                rng.range(-128, 127) as i32,
            );
            let n = 1 + i % 3;
            let x = inputs(&mut rng, n * h * w * cin, zp_in, false);
            check(&m, &x, n, &format!("{} conv #{i}", bits.scheme()));
        }
    }
}

#[test]
fn depthwise_channel_tails_and_long_tap_lists() {
    let mut rng = Rng(13);
    for bits in [WeightBits::W8, WeightBits::W16] {
        for &c in &[1usize, 7, 8, 9, 15, 16, 17, 33, 64, 65] {
            for &(k, stride, pad, extreme) in &[
                (3usize, 1usize, 1usize, false),
                (3, 2, 1, false),
                (5, 1, 0, false),
                // 17×17 = 289 taps at |x−zp| = 255, |w| = 32767: 2.4e9 > i32 for 16w8a.
                (17, 1, 0, true),
            ] {
                let (h, w) = if k == 17 { (18, 17) } else { (7, 6) };
                let zp_in = if extreme { -128 } else { [127, -128, 5][c % 3] };
                let typical = if extreme {
                    (k * k) as f64 * 255.0 * bits.qmax() as f64
                } else {
                    (k as f64) * 100.0 * bits.qmax() as f64
                };
                let w_codes = if extreme {
                    // Same sign within a channel: the sum really reaches 289·255·qmax.
                    let q = bits.qmax() as i64;
                    let codes = (0..c * k * k).map(|i| if (i / (k * k)) % 2 == 0 { q } else { -q });
                    match bits {
                        WeightBits::W8 => QData::I8(codes.map(|v| v as i8).collect()),
                        WeightBits::W16 => QData::I16(codes.map(|v| v as i16).collect()),
                    }
                } else {
                    weights(&mut rng, bits, c * k * k, false)
                };
                let m = model(
                    vec![h, w, c],
                    conv_op([stride, stride], [pad; 4], [1, 1], c),
                    vec![c, k, k, 1],
                    w_codes,
                    bias(&mut rng, bits, c),
                    scales(&mut rng, c, typical),
                    zp_in,
                    rng.range(-128, 127) as i32,
                );
                let x = inputs(&mut rng, 2 * h * w * c, zp_in, extreme);
                check(
                    &m,
                    &x,
                    2,
                    &format!("{} depthwise c={c} k={k}", bits.scheme()),
                );
            }
        }
    }
}

#[test]
fn grouped_and_channel_multiplier_convs_fall_back_exactly() {
    let mut rng = Rng(14);
    for bits in [WeightBits::W8, WeightBits::W16] {
        // groups = 2 (not depthwise) and a depthwise channel multiplier of 2.
        for &(cin, cout, groups) in &[(8usize, 6usize, 2usize), (4, 8, 4)] {
            let cpg = cin / groups;
            let m = model(
                vec![5, 5, cin],
                conv_op([1, 1], [1; 4], [1, 1], groups),
                vec![cout, 3, 3, cpg],
                weights(&mut rng, bits, cout * 9 * cpg, false),
                bias(&mut rng, bits, cout),
                scales(&mut rng, cout, 3000.0 * bits.qmax() as f64),
                -3,
                7,
            );
            let x = inputs(&mut rng, 2 * 25 * cin, -3, false);
            check(&m, &x, 2, &format!("{} groups={groups}", bits.scheme()));
        }
    }
}

/// `K = MAX_K`, every term at its extreme: `|x − zp| = 255`, `|w| = qmax`, and the bias at
/// its bound — the largest accumulators the spec allows, for both signs.
#[test]
fn k_max_with_saturating_inputs_both_widths() {
    let mut rng = Rng(15);
    for bits in [WeightBits::W8, WeightBits::W16] {
        let q = bits.qmax();
        let b = bits.max_abs_bias() as i32;
        for zp_in in [-128, 127] {
            let x_code: i8 = if zp_in == -128 { 127 } else { -128 };
            // Channels: all +qmax, all −qmax, alternating, random extremes.
            let out = 4;
            let mut codes: Vec<i32> = Vec::with_capacity(out * MAX_K);
            codes.extend(std::iter::repeat_n(q, MAX_K));
            codes.extend(std::iter::repeat_n(-q, MAX_K));
            codes.extend((0..MAX_K).map(|i| if i % 2 == 0 { q } else { -q }));
            codes.extend((0..MAX_K).map(|_| if rng.next().is_multiple_of(2) { q } else { -q }));
            let w = match bits {
                WeightBits::W8 => QData::I8(codes.iter().map(|&c| c as i8).collect()),
                WeightBits::W16 => QData::I16(codes.iter().map(|&c| c as i16).collect()),
            };
            let acc_max = MAX_K as f64 * 255.0 * q as f64;
            // Multipliers: the smallest legal (2^-32), one that maps ±acc_max to ±100, and
            // a large one (clamps).
            let s_w = vec![
                2f32.powi(-32),
                ((100.0 / acc_max) as f32).max(2f32.powi(-31)),
                ((50.0 / acc_max) as f32).max(2f32.powi(-30)),
                0.01,
            ];
            let m = model(
                vec![MAX_K],
                linear_op(),
                vec![out, MAX_K],
                w,
                vec![b, -b, b, -b],
                s_w,
                zp_in,
                0,
            );
            let x = vec![x_code; MAX_K];
            check(&m, &x, 1, &format!("{} K=MAX_K zp={zp_in}", bits.scheme()));
            let x: Vec<i8> = (0..2 * MAX_K).map(|_| rng.next() as i8).collect();
            check(&m, &x, 2, &format!("{} K=MAX_K random x", bits.scheme()));
        }
    }
}

/// The same bound reached by a convolution: `4·4·4096 = MAX_K`.
#[test]
fn k_max_conv_both_widths() {
    for bits in [WeightBits::W8, WeightBits::W16] {
        let q = bits.qmax();
        let (kh, kw, c) = (4usize, 4usize, 4096usize);
        let mut codes = vec![q; MAX_K];
        codes.extend(std::iter::repeat_n(-q, MAX_K));
        let w = match bits {
            WeightBits::W8 => QData::I8(codes.iter().map(|&c| c as i8).collect()),
            WeightBits::W16 => QData::I16(codes.iter().map(|&c| c as i16).collect()),
        };
        let b = bits.max_abs_bias() as i32;
        let acc_max = MAX_K as f64 * 255.0 * q as f64;
        let m = model(
            vec![kh, kw, c],
            conv_op([1, 1], [0; 4], [1, 1], 1),
            vec![2, kh, kw, c],
            w,
            vec![b, -b],
            vec![((100.0 / acc_max) as f32).max(2f32.powi(-31)); 2],
            -128,
            0,
        );
        check(
            &m,
            &vec![127i8; MAX_K],
            1,
            &format!("{} conv K=MAX_K", bits.scheme()),
        );
    }
}

/// Trainable weights and biases are re-packed on every forward: change them between
/// forwards and compare each output with a fresh reference run.
#[test]
fn trainable_tensors_are_seen_on_every_forward() {
    let mut rng = Rng(16);
    for bits in [WeightBits::W8, WeightBits::W16] {
        let mut m = model(
            vec![6, 6, 5],
            conv_op([1, 1], [1; 4], [1, 1], 1),
            vec![19, 3, 3, 5],
            weights(&mut rng, bits, 19 * 45, false),
            bias(&mut rng, bits, 19),
            scales(&mut rng, 19, 100.0 * 7.0 * bits.qmax() as f64),
            -7,
            2,
        );
        m.set_trainable(|_| true);
        let x = inputs(&mut rng, 3 * 36 * 5, -7, false);
        for b in tiers() {
            let mut p = b.prepare(&m).unwrap();
            let mut params = m.params.clone();
            for step in 0..4 {
                params[0].data = weights(&mut rng, bits, 19 * 45, step == 3);
                params[1].data = QData::I32(bias(&mut rng, bits, 19));
                let mut got = Vec::new();
                p.forward(&params, &x, 3, &mut got).unwrap();
                let mut now = m.clone();
                now.params = params.clone();
                let want = lastmile_backend_cpu_ref::run(&now, &x, 3).unwrap();
                assert_eq!(got, want, "{} {} step {step}", b.tier(), bits.scheme());
            }
        }
    }
}

#[test]
fn tiers_env_and_errors() {
    assert_eq!(Tier::parse("AVX512_VNNI"), Some(Tier::Avx512Vnni));
    assert_eq!(Tier::parse("avx-vnni"), Some(Tier::AvxVnni));
    assert_eq!(Tier::parse("AMX"), Some(Tier::Amx));
    assert_eq!(Tier::parse("neon"), None);
    for t in Tier::PREFERENCE {
        match X86::with_tier(t) {
            Ok(b) => {
                assert!(t.is_available());
                assert_eq!(b.tier(), t.name());
                assert_eq!(b.capabilities().threads, 1);
            }
            Err(e) => {
                let msg = e.to_string();
                let why_ok = if cfg!(target_arch = "x86_64") {
                    // AMX can also be refused by the OS (tile-state permission).
                    let os_refused = t == Tier::Amx && msg.contains("AMX tile state");
                    (msg.contains("lacks") || os_refused) && msg.contains(t.name())
                } else {
                    msg.contains("not an x86_64 build")
                };
                assert!(why_ok, "{msg}");
            }
        }
    }
    if !cfg!(target_arch = "x86_64") {
        let e = X86::best().unwrap_err().to_string();
        assert!(e.contains("not an x86_64 build"), "{e}");
        assert!(X86::available_tiers().is_empty());
        return;
    }
    let best = X86::best().expect("scalar is always available on x86_64");
    assert_eq!(Some(&best.kernel_tier()), X86::available_tiers().first());
    assert_eq!(
        best.clone().with_threads(4).capabilities().threads,
        if best.kernel_tier() == Tier::Scalar {
            1
        } else {
            4
        }
    );
}

/// 16w8a layers whose accumulators provably fit `i32` (`|bias| + 255·Σ|w| ≤ i32::MAX` per
/// channel, checked on the actual weights) take a narrow epilogue: check it at the exact
/// boundary and one past it (wide path), with extreme codes (K = 257) and with moderate
/// codes over a long K (K = 1000, every code ±8000: the bound a K-only rule would refuse).
#[test]
fn narrow_16w8a_epilogue_at_its_boundary() {
    for (k, q) in [(257usize, 32_767i32), (1000, 8000)] {
        narrow_16w8a_boundary(k, q);
    }
}

fn narrow_16w8a_boundary(k: usize, q: i32) {
    let edge = i32::MAX as i64 - k as i64 * 255 * q as i64; // K = 257: 98 302
    for (bias, what) in [(edge, "narrow"), (edge + 1, "wide")] {
        let b = bias as i32;
        let mut codes = vec![q as i16; k];
        codes.extend(std::iter::repeat_n(-q as i16, k));
        let acc_max = k as f64 * 255.0 * q as f64 + bias as f64;
        let m = model(
            vec![k],
            linear_op(),
            vec![2, k],
            QData::I16(codes),
            vec![b, -b],
            vec![(100.0 / acc_max) as f32; 2],
            -128,
            0,
        );
        check(&m, &vec![127i8; k], 1, &format!("16w8a K={k} {what}"));
        let mut rng = Rng(17);
        let x = inputs(&mut rng, 9 * k, -128, false);
        check(&m, &x, 9, &format!("16w8a K={k} {what} random"));
    }
}
