//! Named architectures ("the zoo") and their deterministic initialization.
//!
//! Each architecture is a function returning a [`Topology`] and its
//! [`ParamSpec`]s, built with [`TopologyBuilder`]; [`by_name`] looks one up by the
//! name the CLI uses. Every parameter starts frozen (`trainable = false`);
//! whoever quantizes the model decides what to train.
//!
//! | name          | input         | layers                                                                 |
//! |---------------|---------------|------------------------------------------------------------------------|
//! | `digits-cnn`  | `[8, 8, 1]`   | conv3×3 p1 8 relu → conv3×3 p1 s2 16 relu → flatten → linear 256→C    |
//! | `mnist-cnn`   | `[28, 28, 1]` | conv3×3 s2 16 relu → conv3×3 s2 32 relu → dw3×3 relu → pw1×1 64 relu → GAP → linear 64→C |
//! | `resnet-tiny` | any `[H, W, C]` | stem conv3×3 16 relu → 2 × (conv-conv-add relu) → GAP → linear 16→C  |
//! | `resnet18`    | any square `[H, H, C]` (default `[32, 32, 3]`) | CIFAR ResNet-18: stem conv3×3 64 relu → 4 stages × 2 BasicBlocks (64/128/256/512, stride 2 + 1×1 shortcut at stages 2–4) → GAP → linear 512→C; no BatchNorm |
//! | `kws-dscnn`   | `[49, 32, 1]` | keyword spotting on log-mels (DS-CNN, Hello Edge style): conv3×3 s2 16 relu → 3 × (dw3×3 relu → pw1×1 relu; 32/64/64 ch, dw strides 2/1/2) → GAP → linear 64→C |
//!
//! [`init_float`] fills a topology with **He-uniform** weights
//! (`U(−√(6/fan_in), +√(6/fan_in))`) and zero biases, drawn from [`SplitMix64`] so a
//! seed gives the same model bit for bit on every target (integer PRNG, IEEE `f64`
//! arithmetic, correctly rounded `sqrt`).

use alloc::collections::BTreeMap;
use alloc::format;
use alloc::string::ToString;
use alloc::vec::Vec;

use crate::graph::{Op, ParamRole, ParamSpec, Topology, TopologyBuilder, ValueId};
use crate::model::{FloatModel, FloatParam};
use crate::quant::Activation;

/// Names accepted by [`by_name`], in the order of the table in the module docs.
pub const NAMES: [&str; 5] = [
    "digits-cnn",
    "mnist-cnn",
    "resnet-tiny",
    "resnet18",
    "kws-dscnn",
];

/// The input shape an architecture requires, or `None` if it adapts to any
/// `[H, W, C]` input (`resnet-tiny`, `resnet18`: square). `None` for unknown names too; check
/// [`NAMES`] first.
pub fn fixed_input_shape(name: &str) -> Option<[usize; 3]> {
    match name {
        "digits-cnn" => Some([8, 8, 1]),
        "mnist-cnn" => Some([28, 28, 1]),
        "kws-dscnn" => Some(KWS_INPUT),
        _ => None,
    }
}

/// One-line description of an architecture, for `--help` and `info`.
pub fn describe(name: &str) -> Option<&'static str> {
    Some(match name {
        "digits-cnn" => "8x8x1 → conv3x3 8 relu → conv3x3/2 16 relu → flatten → linear 256→classes",
        "mnist-cnn" => {
            "28x28x1 → conv3x3/2 16 → conv3x3/2 32 → dw3x3 + pw1x1 64 → global avg pool → linear 64→classes"
        }
        "resnet-tiny" => {
            "HxWxC → conv3x3 16 → 2 residual blocks (conv-conv-add relu) → global avg pool → linear 16→classes"
        }
        "resnet18" => {
            "HxHxC (default 32x32x3) → CIFAR ResNet-18 without BatchNorm: conv3x3 64 → 4 stages of 2 basic blocks (64/128/256/512) → global avg pool → linear 512→classes (11.2M params)"
        }
        "kws-dscnn" => {
            "49x32x1 log-mel (frames x mel bands) → conv3x3/2 16 → 3 × (dw3x3 + pw1x1: 32, 64, 64) → global avg pool → linear 64→classes"
        }
        _ => return None,
    })
}

/// The architecture called `name` (one of [`NAMES`]) for `classes` outputs.
///
/// `input_shape`, if given, must be `[H, W, C]`; fixed-input architectures
/// (see [`fixed_input_shape`]) accept only their own shape, `resnet-tiny` any
/// (default `[8, 8, 1]`). Returns `None` for an unknown name, a zero class count
/// or an input shape the architecture cannot take.
pub fn by_name(
    name: &str,
    input_shape: Option<&[usize]>,
    classes: usize,
) -> Option<(Topology, Vec<ParamSpec>)> {
    if classes == 0 {
        return None;
    }
    let hwc: Option<[usize; 3]> = match input_shape {
        None => None,
        Some(&[h, w, c]) if h > 0 && w > 0 && c > 0 => Some([h, w, c]),
        Some(_) => return None,
    };
    if let (Some(fixed), Some(given)) = (fixed_input_shape(name), hwc)
        && fixed != given
    {
        return None;
    }
    match name {
        "digits-cnn" => Some(digits_cnn(classes)),
        "mnist-cnn" => Some(mnist_cnn(classes)),
        "kws-dscnn" => Some(kws_dscnn(classes)),
        "resnet-tiny" => {
            let [h, w, c] = hwc.unwrap_or([8, 8, 1]);
            if h != w {
                return None;
            }
            Some(resnet_tiny(h, c, classes))
        }
        "resnet18" => {
            let [h, w, c] = hwc.unwrap_or([32, 32, 3]);
            if h != w {
                return None;
            }
            Some(resnet18(h, c, classes))
        }
        _ => None,
    }
}

#[allow(clippy::too_many_arguments)]
fn conv(
    b: &mut TopologyBuilder,
    name: &str,
    input: ValueId,
    c_in: usize,
    c_out: usize,
    k: usize,
    stride: usize,
    groups: usize,
    activation: Activation,
) -> ValueId {
    let p = k / 2;
    b.conv2d(
        name,
        input,
        c_in,
        c_out,
        [k, k],
        [stride, stride],
        [p, p, p, p],
        groups,
        activation,
    )
}

/// For sklearn's 8×8 digits: conv3×3 pad 1 → 8 ch relu, conv3×3 pad 1 stride 2
/// → 16 ch relu (`[4, 4, 16]`), flatten (256), linear 256 → `classes`.
/// 1 248 + 257·`classes` parameters (3 818 for 10 classes).
pub fn digits_cnn(classes: usize) -> (Topology, Vec<ParamSpec>) {
    let mut b = TopologyBuilder::new(&[8, 8, 1]);
    let x = conv(
        &mut b,
        "conv1",
        ValueId::INPUT,
        1,
        8,
        3,
        1,
        1,
        Activation::Relu,
    );
    let x = conv(&mut b, "conv2", x, 8, 16, 3, 2, 1, Activation::Relu);
    let x = b.node("flatten", Op::Flatten, &[x]);
    b.linear("fc", x, 4 * 4 * 16, classes, Activation::None);
    b.finish()
}

/// For 28×28 MNIST-style images: conv3×3 s2 16 relu (`14×14`), conv3×3 s2 32 relu
/// (`7×7`), depthwise 3×3 relu + pointwise 1×1 64 relu, global average pool,
/// linear 64 → `classes` (all convs padded by 1 where 3×3).
pub fn mnist_cnn(classes: usize) -> (Topology, Vec<ParamSpec>) {
    let mut b = TopologyBuilder::new(&[28, 28, 1]);
    let x = conv(
        &mut b,
        "conv1",
        ValueId::INPUT,
        1,
        16,
        3,
        2,
        1,
        Activation::Relu,
    );
    let x = conv(&mut b, "conv2", x, 16, 32, 3, 2, 1, Activation::Relu);
    let x = conv(&mut b, "dw3", x, 32, 32, 3, 1, 32, Activation::Relu);
    let x = conv(&mut b, "pw3", x, 32, 64, 1, 1, 1, Activation::Relu);
    let x = b.node("gap", Op::GlobalAvgPool, &[x]);
    b.linear("fc", x, 64, classes, Activation::None);
    b.finish()
}

/// Input of [`kws_dscnn`]: 49 frames (1 s, 20 ms hop) × 32 mel bands × 1.
pub const KWS_INPUT: [usize; 3] = [49, 32, 1];

/// A small depthwise-separable CNN for keyword spotting on `[49, 32, 1]` log-mel images
/// (the DS-CNN of Zhang et al., "Hello Edge", 2017, scaled down; a CRNN needs a recurrent op
/// the spec does not have): conv3×3 s2 16 relu (`25×16`), then depthwise 3×3 relu +
/// pointwise 1×1 relu blocks to 32 (dw stride 2: `13×8`), 64 (stride 1) and 64 channels
/// (stride 2: `7×4`), global average pool, linear 64 → `classes`.
/// 8 096 + 65·`classes` parameters; about 0.5 M multiply-adds per clip.
pub fn kws_dscnn(classes: usize) -> (Topology, Vec<ParamSpec>) {
    let mut b = TopologyBuilder::new(&KWS_INPUT);
    let mut x = conv(
        &mut b,
        "conv1",
        ValueId::INPUT,
        1,
        16,
        3,
        2,
        1,
        Activation::Relu,
    );
    let mut c_in = 16;
    for (i, (c, stride)) in [(32, 2), (64, 1), (64, 2)].into_iter().enumerate() {
        let dw = format!("dw{}", i + 1);
        x = conv(
            &mut b,
            &dw,
            x,
            c_in,
            c_in,
            3,
            stride,
            c_in,
            Activation::Relu,
        );
        let pw = format!("pw{}", i + 1);
        x = conv(&mut b, &pw, x, c_in, c, 1, 1, 1, Activation::Relu);
        c_in = c;
    }
    let x = b.node("gap", Op::GlobalAvgPool, &[x]);
    b.linear("fc", x, c_in, classes, Activation::None);
    b.finish()
}

/// A ResNet-style net for `input_hw × input_hw × channels_in` inputs: a 3×3 stem
/// to 16 channels (stride 2 when `input_hw ≥ 16`, else 1), then two residual
/// blocks `relu(x + conv(relu(conv(x))))` at 16 channels, global average pool,
/// linear 16 → `classes`.
pub fn resnet_tiny(
    input_hw: usize,
    channels_in: usize,
    classes: usize,
) -> (Topology, Vec<ParamSpec>) {
    const C: usize = 16;
    let mut b = TopologyBuilder::new(&[input_hw, input_hw, channels_in]);
    let stem_stride = if input_hw >= 16 { 2 } else { 1 };
    let mut x = conv(
        &mut b,
        "stem",
        ValueId::INPUT,
        channels_in,
        C,
        3,
        stem_stride,
        1,
        Activation::Relu,
    );
    for blk in 1..=2 {
        let y = conv(
            &mut b,
            &format!("block{blk}.conv1"),
            x,
            C,
            C,
            3,
            1,
            1,
            Activation::Relu,
        );
        let y = conv(
            &mut b,
            &format!("block{blk}.conv2"),
            y,
            C,
            C,
            3,
            1,
            1,
            Activation::None,
        );
        x = b.node(
            &format!("block{blk}.add"),
            Op::Add {
                activation: Activation::Relu,
            },
            &[x, y],
        );
    }
    let x = b.node("gap", Op::GlobalAvgPool, &[x]);
    b.linear("fc", x, C, classes, Activation::None);
    b.finish()
}

/// The CIFAR variant of ResNet-18 (He et al. 2016, as in the common CIFAR code) for
/// `input_hw × input_hw × channels_in` inputs, without BatchNorm (the spec has none:
/// plain convs with bias). Stem conv3×3 64 relu (no max pool); 4 stages of 2 BasicBlocks
/// `relu(shortcut(x) + conv3×3(relu(conv3×3(x))))` with 64/128/256/512 channels; the first
/// block of stages 2–4 has stride 2 and a 1×1 stride-2 conv shortcut; global average pool,
/// linear 512 → `classes`. 11 164 032 + 513·`classes` parameters.
pub fn resnet18(input_hw: usize, channels_in: usize, classes: usize) -> (Topology, Vec<ParamSpec>) {
    let mut b = TopologyBuilder::new(&[input_hw, input_hw, channels_in]);
    let mut x = conv(
        &mut b,
        "stem",
        ValueId::INPUT,
        channels_in,
        64,
        3,
        1,
        1,
        Activation::Relu,
    );
    let mut c_in = 64;
    for (stage, c) in [64usize, 128, 256, 512].into_iter().enumerate() {
        for blk in 0..2 {
            let name = format!("layer{}.{blk}", stage + 1);
            let stride = if stage > 0 && blk == 0 { 2 } else { 1 };
            let y = conv(
                &mut b,
                &format!("{name}.conv1"),
                x,
                c_in,
                c,
                3,
                stride,
                1,
                Activation::Relu,
            );
            let y = conv(
                &mut b,
                &format!("{name}.conv2"),
                y,
                c,
                c,
                3,
                1,
                1,
                Activation::None,
            );
            let shortcut = if stride != 1 || c_in != c {
                conv(
                    &mut b,
                    &format!("{name}.shortcut"),
                    x,
                    c_in,
                    c,
                    1,
                    stride,
                    1,
                    Activation::None,
                )
            } else {
                x
            };
            x = b.node(
                &format!("{name}.add"),
                Op::Add {
                    activation: Activation::Relu,
                },
                &[shortcut, y],
            );
            c_in = c;
        }
    }
    let x = b.node("gap", Op::GlobalAvgPool, &[x]);
    b.linear("fc", x, 512, classes, Activation::None);
    b.finish()
}

/// SplitMix64 (Steele, Lea & Flood 2014; the seeding generator of Java's
/// `SplittableRandom` and of xoshiro): a 64-bit counter advanced by the golden
/// ratio `0x9E3779B97F4A7C15`, each output a bijective mix of the counter
/// (`xor-shift 30, ×0xBF58476D1CE4E5B9, xor-shift 27, ×0x94D049BB133111EB,
/// xor-shift 31`). Pure wrapping integer arithmetic, so identical everywhere.
/// Good enough for initialization; *not* the trainer's perturbation generator.
#[derive(Clone, Debug)]
pub struct SplitMix64 {
    state: u64,
}

impl SplitMix64 {
    /// A generator whose first output mixes `seed + γ`.
    pub const fn new(seed: u64) -> Self {
        SplitMix64 { state: seed }
    }

    /// The next 64 random bits.
    pub fn next_u64(&mut self) -> u64 {
        self.state = self.state.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.state;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    /// Uniform in `[0, 1)`: the top 53 bits times `2^-53` (exact in `f64`).
    pub fn next_f64(&mut self) -> f64 {
        (self.next_u64() >> 11) as f64 * (1.0 / (1u64 << 53) as f64)
    }
}

/// The generator for parameter number `index` under `seed`: each tensor has its
/// own stream, so adding a layer never changes the values of the others.
fn param_rng(seed: u64, index: usize) -> SplitMix64 {
    let mut mixer = SplitMix64::new(seed ^ (index as u64).wrapping_mul(0xD1B5_4A32_D192_ED03));
    SplitMix64::new(mixer.next_u64())
}

/// Fan-in of a weight tensor: `KH·KW·C_in/groups` for conv (OHWI), `in` for linear.
fn fan_in(spec: &ParamSpec) -> usize {
    spec.shape.iter().skip(1).product::<usize>().max(1)
}

/// A float model for `topology` with He-uniform weights and zero biases.
///
/// Weight tensor `p` (parameter index `p`) draws `numel` values in row-major
/// order from `SplitMix64(s_p)` where `s_p` is the first output of
/// `SplitMix64(seed ^ p·0xD1B54A32D192ED03)`; value = `(2u − 1)·√(6/fan_in)`
/// computed in `f64` and rounded once to `f32`. Metadata records the rule and seed.
pub fn init_float(topology: Topology, specs: Vec<ParamSpec>, seed: u64) -> FloatModel {
    let params = specs
        .into_iter()
        .enumerate()
        .map(|(i, spec)| {
            let data = match spec.role {
                ParamRole::Bias => alloc::vec![0.0f32; spec.numel()],
                ParamRole::Weight => {
                    let bound = libm::sqrt(6.0 / fan_in(&spec) as f64);
                    let mut rng = param_rng(seed, i);
                    (0..spec.numel())
                        .map(|_| ((2.0 * rng.next_f64() - 1.0) * bound) as f32)
                        .collect()
                }
            };
            FloatParam { spec, data }
        })
        .collect();
    let mut metadata = BTreeMap::new();
    metadata.insert(
        "init".to_string(),
        format!("he-uniform weights, zero biases (splitmix64, seed {seed})"),
    );
    FloatModel {
        topology,
        params,
        metadata,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::float_exec;

    #[test]
    fn every_architecture_validates() {
        for (name, shape, out) in [
            ("digits-cnn", [8, 8, 1], 10),
            ("mnist-cnn", [28, 28, 1], 10),
            ("resnet-tiny", [8, 8, 1], 10),
            ("resnet-tiny", [28, 28, 1], 3),
            ("resnet-tiny", [32, 32, 3], 7),
            ("resnet18", [32, 32, 3], 10),
            ("resnet18", [28, 28, 1], 10),
            ("resnet18", [7, 7, 3], 4),
            ("kws-dscnn", [49, 32, 1], 10),
        ] {
            let (t, p) = by_name(name, Some(&shape), out).unwrap();
            let shapes = t.infer_shapes(&p).unwrap();
            assert_eq!(shapes.last().unwrap(), &[out], "{name}");
            assert!(describe(name).is_some());
        }
        assert_eq!(NAMES.len(), 5);
    }

    #[test]
    fn kws_dscnn_shapes_and_param_count() {
        let (t, p) = by_name("kws-dscnn", None, 10).unwrap();
        let n: usize = p.iter().map(ParamSpec::numel).sum();
        let dw = |c: usize| 9 * c + c;
        let pw = |i: usize, o: usize| i * o + o;
        let expect = (9 * 16 + 16)
            + dw(16)
            + pw(16, 32)
            + dw(32)
            + pw(32, 64)
            + dw(64)
            + pw(64, 64)
            + (64 * 10 + 10);
        assert_eq!(n, expect);
        assert_eq!(n, 8096 + 650);
        let shapes = t.infer_shapes(&p).unwrap();
        assert!(shapes.iter().any(|s| s == &[25, 16, 16]));
        assert!(shapes.iter().any(|s| s == &[7, 4, 64]));
        assert!(by_name("kws-dscnn", Some(&[28, 28, 1]), 10).is_none());
    }

    #[test]
    fn digits_cnn_param_count() {
        let (_, p) = digits_cnn(10);
        let n: usize = p.iter().map(ParamSpec::numel).sum();
        assert_eq!(n, (72 + 8) + (8 * 9 * 16 + 16) + (256 * 10 + 10));
        assert_eq!(n, 3818);
        assert!(p.iter().all(|s| !s.trainable));
    }

    #[test]
    fn resnet18_param_count_and_shapes() {
        let (t, p) = by_name("resnet18", None, 10).unwrap();
        let n: usize = p.iter().map(ParamSpec::numel).sum();
        let c3 = |i: usize, o: usize| 9 * i * o + o;
        let c1 = |i: usize, o: usize| i * o + o;
        let stem = c3(3, 64);
        let stage1 = 4 * c3(64, 64);
        let down = |i: usize, o: usize| c3(i, o) + c3(o, o) + c1(i, o) + 2 * c3(o, o);
        let fc = 512 * 10 + 10;
        assert_eq!(
            n,
            stem + stage1 + down(64, 128) + down(128, 256) + down(256, 512) + fc
        );
        // By hand: 1 792 + 147 712 + 524 928 + 2 098 432 + 8 391 168 + 5 130.
        assert_eq!(n, 11_169_162);
        // 20 convs (stem, 16 in blocks, 3 shortcuts) + fc, each weight + bias.
        assert_eq!(p.len(), 2 * 21);
        let shapes = t.infer_shapes(&p).unwrap();
        assert_eq!(t.input_shape, [32, 32, 3]);
        assert!(shapes.iter().any(|s| s == &[4, 4, 512]));
        assert_eq!(shapes.last().unwrap(), &[10]);
        let m = init_float(t, p, 3);
        m.validate().unwrap();
        assert!(by_name("resnet18", Some(&[32, 16, 3]), 10).is_none());
    }

    #[test]
    fn by_name_rejects_bad_requests() {
        assert!(by_name("nope", None, 10).is_none());
        assert!(by_name("digits-cnn", Some(&[28, 28, 1]), 10).is_none());
        assert!(by_name("digits-cnn", None, 0).is_none());
        assert!(by_name("resnet-tiny", Some(&[64]), 10).is_none());
        assert!(by_name("resnet-tiny", Some(&[8, 6, 1]), 10).is_none());
        assert!(by_name("mnist-cnn", None, 10).is_some());
    }

    #[test]
    fn splitmix64_reference_values() {
        // First outputs for seed 1234567 from the reference C implementation.
        let mut r = SplitMix64::new(1_234_567);
        assert_eq!(r.next_u64(), 6_457_827_717_110_365_317);
        assert_eq!(r.next_u64(), 3_203_168_211_198_807_973);
        assert_eq!(r.next_u64(), 9_817_491_932_198_370_423);
        let mut r = SplitMix64::new(0);
        for _ in 0..1000 {
            let u = r.next_f64();
            assert!((0.0..1.0).contains(&u));
        }
    }

    #[test]
    fn init_is_deterministic_he_uniform() {
        let (t, p) = digits_cnn(10);
        let a = init_float(t.clone(), p.clone(), 7);
        let b = init_float(t.clone(), p.clone(), 7);
        let c = init_float(t, p, 8);
        assert_eq!(a, b);
        assert_ne!(a.params[0].data, c.params[0].data);
        a.validate().unwrap();
        for fp in &a.params {
            match fp.spec.role {
                ParamRole::Bias => assert!(fp.data.iter().all(|&v| v == 0.0)),
                ParamRole::Weight => {
                    let bound = libm::sqrt(6.0 / fan_in(&fp.spec) as f64) as f32;
                    assert!(fp.data.iter().all(|v| v.abs() <= bound));
                    let mean: f32 = fp.data.iter().sum::<f32>() / fp.data.len() as f32;
                    assert!(mean.abs() < bound / 4.0, "{}: mean {mean}", fp.spec.name);
                }
            }
        }
        let out = float_exec::forward(&a, &[0.5; 64 * 2], 2).unwrap();
        assert_eq!(out.len(), 20);
        assert!(out.iter().all(|v| v.is_finite()));
    }
}
