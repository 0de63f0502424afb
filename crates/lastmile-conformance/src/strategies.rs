//! Problem generators: proptest [`Strategy`]s of [`Case`]s, one per [`Family`].
//!
//! Models are built **directly** — explicit codes, scales and zero points, never
//! via PTQ — so the generators reach corners PTQ never produces:
//!
//! * shapes: odd sizes, batch 1–3, reduction lengths `K` at and around kernel
//!   granularities ([`K_SET`], reached through channel/kernel factorizations),
//!   strides 1–3, dilations 1–2, asymmetric padding (conv padding may exceed the
//!   kernel, so whole windows fall in padding);
//! * quantization: zero points −128, 0, 127 and anything between; scales from
//!   `2^−12` to `2^3`; per-channel weight scales spread over a factor 4; weight codes
//!   uniform, all `±qmax`, tiny, or mixed; input codes uniform, all −128/127, near the
//!   zero point, or mixed; biases zero, typical, or at the width's bound;
//! * requantization regimes: *typical* (outputs spread over the int8 range),
//!   *saturating* (multipliers `2^3`–`2^10` larger, outputs clamp), *tiny*
//!   (`r ≈ 2^−20`, outputs sit at the zero point). The real multiplier
//!   `r = s_in·s_w/s_out` always stays in `[2^−20, 2^4]`, so
//!   [`QuantMultiplier::from_real`](lastmile_core::QuantMultiplier::from_real) accepts it;
//! * all three fused activations.
//!
//! Large buffers (codes) are filled from a seeded ChaCha generator rather than
//! generated element by element: shrinking then works on shapes and modes, which
//! is what makes a failing case small and readable.

use proptest::prelude::*;
use proptest::sample::{Index, select};
use proptest::test_runner::{RngAlgorithm, TestRng};

use lastmile_core::ValueId;
use lastmile_core::graph::{Conv2d, Linear, Node, Op, ParamId, ParamRole, Pool2d, Topology};
use lastmile_core::model::{Metadata, ParamSpec, QData, QParam, QuantModel};
use lastmile_core::quant::{ActQuant, Activation, WeightBits};

use crate::case::{Case, Family, Update};

/// Reduction lengths around the kernel granularities of SIMD backends (1, 4, 8, 16,
/// 32, 64, 128 lanes and their neighbours).
pub const K_SET: [usize; 19] = [
    1, 3, 4, 5, 7, 8, 9, 15, 16, 17, 31, 32, 33, 63, 64, 65, 127, 128, 129,
];

/// Channel counts used for outputs and pool/flatten inputs (odd sizes and lane edges).
const CHANNELS: [usize; 11] = [1, 2, 3, 4, 5, 7, 8, 9, 15, 16, 17];

/// How a buffer of codes is filled.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Fill {
    /// Uniform over the whole legal range.
    Uniform,
    /// Only the extremes: `±qmax` for weights, −128/127 for activations.
    Extremes,
    /// Tiny values (weights in `[−2, 2]`, activations within 3 of the zero point).
    Small,
    /// Half extremes, half uniform.
    Mixed,
}

/// Where the requantization multiplier sits relative to the accumulator's magnitude.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Regime {
    /// Outputs spread over the int8 range.
    Typical,
    /// Multipliers `2^3`–`2^10` too large: outputs clamp at the ends.
    Saturating,
    /// `r ≈ 2^−20`: outputs sit at the zero point, rounding of tiny values.
    Tiny,
    /// `r` an exact power of two (`s_out = s_in`, `s_w = 2^−j`), so odd accumulators land
    /// exactly on .5 (and .25, .75): catches a backend rounding ties the wrong way
    /// (half-down, half-even, or half-away-from-zero on negatives), which random scales
    /// almost never exercise.
    Ties,
}

/// How biases are chosen.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum BiasMode {
    /// No bias tensor.
    Absent,
    /// All zero.
    Zero,
    /// Of the accumulator's typical magnitude.
    Typical,
    /// `±` the width's bias bound (`2^24` for 8w8a, `i32::MAX` for 16w8a).
    Extreme,
    /// Per channel, one of the above.
    Mixed,
}

/// Quantization choices of one requantizing node (plus the fills of its data).
#[derive(Clone, Debug)]
struct Quant {
    s_in: f32,
    zp_in: i32,
    s_out: f32,
    zp_out: i32,
    act: Activation,
    regime: Regime,
    x_fill: Fill,
    w_fill: Fill,
    bias: BiasMode,
    seed: u64,
}

fn scale() -> impl Strategy<Value = f32> {
    // (1 + f/1024)·2^e, exactly representable; e ∈ [−12, 2] spans four orders of magnitude.
    (-12i32..=2, 0u32..1024).prop_map(|(e, f)| (1.0 + f as f32 / 1024.0) * 2f32.powi(e))
}

fn zero_point() -> impl Strategy<Value = i32> {
    prop_oneof![1 => Just(0), 1 => Just(-128), 1 => Just(127), 5 => -128..=127i32]
}

fn activation() -> impl Strategy<Value = Activation> {
    prop_oneof![
        Just(Activation::None),
        Just(Activation::Relu),
        Just(Activation::Relu6)
    ]
}

fn fill() -> impl Strategy<Value = Fill> {
    prop_oneof![
        4 => Just(Fill::Uniform),
        1 => Just(Fill::Extremes),
        1 => Just(Fill::Small),
        2 => Just(Fill::Mixed),
    ]
}

fn regime() -> impl Strategy<Value = Regime> {
    prop_oneof![
        6 => Just(Regime::Typical),
        2 => Just(Regime::Saturating),
        1 => Just(Regime::Tiny),
        2 => Just(Regime::Ties),
    ]
}

fn bias_mode() -> impl Strategy<Value = BiasMode> {
    prop_oneof![
        Just(BiasMode::Typical),
        Just(BiasMode::Absent),
        Just(BiasMode::Zero),
        Just(BiasMode::Extreme),
        Just(BiasMode::Mixed),
    ]
}

fn quant() -> impl Strategy<Value = Quant> {
    (
        scale(),
        zero_point(),
        scale(),
        zero_point(),
        activation(),
        regime(),
        fill(),
        fill(),
        bias_mode(),
        any::<u64>(),
    )
        .prop_map(
            |(s_in, zp_in, s_out, zp_out, act, regime, x_fill, w_fill, bias, seed)| Quant {
                s_in,
                zp_in,
                s_out,
                zp_out,
                act,
                regime,
                x_fill,
                w_fill,
                bias,
                seed,
            },
        )
}

/// A deterministic generator for the bulk data of a case.
pub fn rng_from_seed(seed: u64) -> TestRng {
    let mut bytes = [0u8; 32];
    for (i, chunk) in bytes.chunks_mut(8).enumerate() {
        let v = splitmix64(seed.wrapping_add(i as u64));
        chunk.copy_from_slice(&v.to_le_bytes());
    }
    TestRng::from_seed(RngAlgorithm::ChaCha, &bytes)
}

/// SplitMix64 finalizer: a cheap, well-mixed hash of a `u64`.
pub fn splitmix64(x: u64) -> u64 {
    let mut z = x.wrapping_add(0x9E37_79B9_7F4A_7C15);
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

fn weight_codes(rng: &mut TestRng, fill: Fill, bits: WeightBits, len: usize) -> Vec<i32> {
    let q = bits.qmax();
    (0..len)
        .map(|_| match fill {
            Fill::Uniform => rng.random_range(-q..=q),
            Fill::Extremes => {
                if rng.random_bool(0.5) {
                    q
                } else {
                    -q
                }
            }
            Fill::Small => rng.random_range(-2..=2),
            Fill::Mixed => match rng.random_range(0..4) {
                0 => q,
                1 => -q,
                _ => rng.random_range(-q..=q),
            },
        })
        .collect()
}

/// Input codes for a tensor with zero point `zp`.
fn input_codes(rng: &mut TestRng, fill: Fill, zp: i32, len: usize) -> Vec<i8> {
    (0..len)
        .map(|_| match fill {
            Fill::Uniform => rng.random_range(-128..=127i32) as i8,
            Fill::Extremes => {
                if rng.random_bool(0.5) {
                    127
                } else {
                    -128
                }
            }
            Fill::Small => (zp + rng.random_range(-3..=3)).clamp(-128, 127) as i8,
            Fill::Mixed => match rng.random_range(0..4) {
                0 => 127,
                1 => -128,
                _ => rng.random_range(-128..=127i32) as i8,
            },
        })
        .collect()
}

/// Typical |x − zp| of a fill (for choosing multipliers that keep outputs in range).
fn typical_x(fill: Fill) -> f64 {
    match fill {
        Fill::Uniform => 96.0,
        Fill::Extremes => 180.0,
        Fill::Small => 2.0,
        Fill::Mixed => 120.0,
    }
}

/// Typical |w| of a fill.
fn typical_w(fill: Fill, bits: WeightBits) -> f64 {
    let q = bits.qmax() as f64;
    match fill {
        Fill::Uniform => q / 2.0,
        Fill::Extremes => q,
        Fill::Small => 1.2,
        Fill::Mixed => 0.7 * q,
    }
}

const R_MIN: f64 = 1.0 / (1u64 << 20) as f64;
const R_MAX: f64 = 16.0;

/// A real multiplier for a dot product of typical magnitude `typical_acc`.
fn pick_r(rng: &mut TestRng, regime: Regime, typical_acc: f64) -> f64 {
    let base = 32.0 / typical_acc.max(1.0);
    let e: f64 = match regime {
        Regime::Typical => rng.random_range(-2.0..1.5),
        Regime::Saturating => rng.random_range(3.0..10.0),
        Regime::Tiny => return R_MIN * rng.random_range(1.0..4.0),
        // A power of two near the typical multiplier (R_MIN and R_MAX are powers of two).
        Regime::Ties => {
            return (base.log2().floor() + rng.random_range(-2..=0) as f64)
                .exp2()
                .clamp(R_MIN, R_MAX);
        }
    };
    (base * e.exp2()).clamp(R_MIN, R_MAX)
}

/// The regime of a node whose output feeds further ops: ties only where the node is the
/// graph's output. A backend declared within N LSBs (ORT, XNNPACK round ties half to even)
/// is off by 1 LSB at a tie, and a later add or conv rescales that error (an add's output
/// scale may be 4× finer than its inputs'), which the per-output tolerance does not model.
fn upstream(regime: Regime) -> Regime {
    if regime == Regime::Ties {
        Regime::Typical
    } else {
        regime
    }
}

/// In the [`Regime::Ties`] regime the output scale equals the input scale, so that
/// `s_in·s_w/s_out = s_w` is computed exactly and a power-of-two `s_w` gives `M = 2^30`.
fn ties_output(regime: Regime, s_in: f32, out: ActQuant) -> ActQuant {
    if regime == Regime::Ties {
        act_quant(s_in, out.zero_point)
    } else {
        out
    }
}

/// Weight codes, per-channel scales and bias codes of a conv/linear node.
struct DotParams {
    weight: Vec<i32>,
    scales: Vec<f32>,
    bias: Option<Vec<i32>>,
}

#[allow(clippy::too_many_arguments)]
fn dot_params(
    rng: &mut TestRng,
    bits: WeightBits,
    c_out: usize,
    per_channel: usize,
    k: usize,
    x_typ: f64,
    w_fill: Fill,
    regime: Regime,
    bias: BiasMode,
    s_in: f32,
    s_out: f32,
) -> DotParams {
    let weight = weight_codes(rng, w_fill, bits, c_out * per_channel);
    let typical_acc = (k as f64).sqrt() * x_typ * typical_w(w_fill, bits);
    let r0 = pick_r(rng, regime, typical_acc);
    let scales = (0..c_out)
        .map(|_| {
            // Per-channel spread over a factor 4, still inside [R_MIN, R_MAX]; for ties,
            // by whole powers of two so every channel's multiplier stays exact.
            let spread = if regime == Regime::Ties {
                rng.random_range(-1i32..=0) as f64
            } else {
                rng.random_range(-1.0f64..1.0)
            };
            let r = (r0 * spread.exp2()).clamp(R_MIN, R_MAX);
            (r * s_out as f64 / s_in as f64) as f32
        })
        .collect();
    let bound = bits.max_abs_bias();
    let typ = (typical_acc as i64).clamp(1, bound);
    let one = |mode: BiasMode, rng: &mut TestRng| -> i32 {
        match mode {
            BiasMode::Absent | BiasMode::Zero => 0,
            BiasMode::Typical => rng.random_range(-typ..=typ) as i32,
            BiasMode::Extreme => {
                if rng.random_bool(0.5) {
                    bound as i32
                } else {
                    -bound as i32
                }
            }
            BiasMode::Mixed => match rng.random_range(0..4) {
                0 => 0,
                1 => bound as i32,
                2 => -bound as i32,
                _ => rng.random_range(-typ..=typ) as i32,
            },
        }
    };
    let bias = match bias {
        BiasMode::Absent => None,
        m => Some((0..c_out).map(|_| one(m, rng)).collect()),
    };
    DotParams {
        weight,
        scales,
        bias,
    }
}

/// Assembles a model node by node.
struct Builder {
    bits: WeightBits,
    input_shape: Vec<usize>,
    nodes: Vec<Node>,
    params: Vec<QParam>,
    act: Vec<ActQuant>,
}

fn act_quant(scale: f32, zero_point: i32) -> ActQuant {
    ActQuant { scale, zero_point }
}

impl Builder {
    fn new(bits: WeightBits, input_shape: &[usize], input_quant: ActQuant) -> Self {
        Builder {
            bits,
            input_shape: input_shape.to_vec(),
            nodes: Vec::new(),
            params: Vec::new(),
            act: vec![input_quant],
        }
    }

    fn shape(&self, v: ValueId) -> Vec<usize> {
        if v == ValueId::INPUT {
            return self.input_shape.clone();
        }
        let topo = Topology {
            input_shape: self.input_shape.clone(),
            nodes: self.nodes.clone(),
        };
        let specs: Vec<ParamSpec> = self.params.iter().map(|p| p.spec.clone()).collect();
        let shapes = topo
            .infer_shapes(&specs)
            .unwrap_or_else(|e| panic!("conformance generator built an invalid graph: {e}"));
        shapes[v.index()].clone()
    }

    fn quant(&self, v: ValueId) -> ActQuant {
        self.act[v.index()]
    }

    fn param(
        &mut self,
        name: String,
        shape: Vec<usize>,
        role: ParamRole,
        data: QData,
        scales: Vec<f32>,
    ) -> ParamId {
        self.params.push(QParam {
            spec: ParamSpec {
                name,
                shape,
                role,
                trainable: false,
            },
            data,
            scales,
        });
        ParamId(self.params.len() as u32 - 1)
    }

    fn weight_data(&self, codes: Vec<i32>) -> QData {
        match self.bits {
            WeightBits::W8 => QData::I8(codes.into_iter().map(|c| c as i8).collect()),
            WeightBits::W16 => QData::I16(codes.into_iter().map(|c| c as i16).collect()),
        }
    }

    fn push(&mut self, name: &str, op: Op, inputs: &[ValueId], out: ActQuant) -> ValueId {
        self.nodes.push(Node {
            name: name.into(),
            op,
            inputs: inputs.to_vec(),
        });
        self.act.push(out);
        ValueId(self.nodes.len() as u32)
    }

    /// Adds a conv2d; `out` is its output quantization.
    #[allow(clippy::too_many_arguments)]
    fn conv(
        &mut self,
        rng: &mut TestRng,
        name: &str,
        input: ValueId,
        g: &ConvGeom,
        x_typ: f64,
        w_fill: Fill,
        regime: Regime,
        bias: BiasMode,
        out: ActQuant,
        activation: Activation,
    ) -> ValueId {
        let cin = self.shape(input)[2];
        let cpg = cin / g.groups;
        let k = g.kernel[0] * g.kernel[1] * cpg;
        let s_in = self.quant(input).scale;
        let out = ties_output(regime, s_in, out);
        let dp = dot_params(
            rng, self.bits, g.cout, k, k, x_typ, w_fill, regime, bias, s_in, out.scale,
        );
        let wdata = self.weight_data(dp.weight);
        let weight = self.param(
            format!("{name}.weight"),
            vec![g.cout, g.kernel[0], g.kernel[1], cpg],
            ParamRole::Weight,
            wdata,
            dp.scales,
        );
        let bias = dp.bias.map(|b| {
            self.param(
                format!("{name}.bias"),
                vec![g.cout],
                ParamRole::Bias,
                QData::I32(b),
                Vec::new(),
            )
        });
        let op = Op::Conv2d(Conv2d {
            weight,
            bias,
            stride: g.stride,
            padding: g.padding,
            dilation: g.dilation,
            groups: g.groups,
            activation,
        });
        self.push(name, op, &[input], out)
    }

    /// Adds a linear layer.
    #[allow(clippy::too_many_arguments)]
    fn linear(
        &mut self,
        rng: &mut TestRng,
        name: &str,
        input: ValueId,
        out_features: usize,
        x_typ: f64,
        w_fill: Fill,
        regime: Regime,
        bias: BiasMode,
        out: ActQuant,
        activation: Activation,
    ) -> ValueId {
        let f = self.shape(input)[0];
        let s_in = self.quant(input).scale;
        let out = ties_output(regime, s_in, out);
        let dp = dot_params(
            rng,
            self.bits,
            out_features,
            f,
            f,
            x_typ,
            w_fill,
            regime,
            bias,
            s_in,
            out.scale,
        );
        let wdata = self.weight_data(dp.weight);
        let weight = self.param(
            format!("{name}.weight"),
            vec![out_features, f],
            ParamRole::Weight,
            wdata,
            dp.scales,
        );
        let bias = dp.bias.map(|b| {
            self.param(
                format!("{name}.bias"),
                vec![out_features],
                ParamRole::Bias,
                QData::I32(b),
                Vec::new(),
            )
        });
        let op = Op::Linear(Linear {
            weight,
            bias,
            activation,
        });
        self.push(name, op, &[input], out)
    }

    /// Adds a pass-through op (output quantization = input's).
    fn pass(&mut self, name: &str, op: Op, input: ValueId) -> ValueId {
        let q = self.quant(input);
        self.push(name, op, &[input], q)
    }

    fn finish(self) -> QuantModel {
        let mut metadata = Metadata::new();
        metadata.insert("source".into(), "lastmile-conformance generator".into());
        QuantModel {
            topology: Topology {
                input_shape: self.input_shape,
                nodes: self.nodes,
            },
            weight_bits: self.bits,
            params: self.params,
            act: self.act,
            metadata,
        }
    }
}

/// Perturbs a copy of `data` the way a trainer might (and harder): `±k·z` with
/// saturation, random replacement, or a push to the extremes. At least one code
/// always changes.
pub fn perturbed(rng: &mut TestRng, data: &QData, bound: i64) -> QData {
    let len = data.len();
    let mut v: Vec<i64> = (0..len).map(|i| data.get(i) as i64).collect();
    let mode = rng.random_range(0..3);
    let step_max = (bound / 16).max(1);
    for x in v.iter_mut() {
        match mode {
            0 => {
                let k = rng.random_range(1..=step_max);
                let z = rng.random_range(-1..=1i64);
                *x = (*x + k * z).clamp(-bound, bound);
            }
            1 => {
                if rng.random_range(0..4) == 0 {
                    *x = rng.random_range(-bound..=bound);
                }
            }
            _ => {
                if rng.random_range(0..3) == 0 {
                    *x = if rng.random_bool(0.5) { bound } else { -bound };
                }
            }
        }
    }
    if len > 0 && (0..len).all(|i| v[i] == data.get(i) as i64) {
        let i = rng.random_range(0..len);
        v[i] = if v[i] < bound { v[i] + 1 } else { v[i] - 1 };
    }
    match data {
        QData::I8(_) => QData::I8(v.into_iter().map(|x| x as i8).collect()),
        QData::I16(_) => QData::I16(v.into_iter().map(|x| x as i16).collect()),
        QData::I32(_) => QData::I32(v.into_iter().map(|x| x as i32).collect()),
    }
}

fn bound_of(p: &QParam, bits: WeightBits) -> i64 {
    match p.spec.role {
        ParamRole::Weight => bits.qmax() as i64,
        ParamRole::Bias => bits.max_abs_bias(),
    }
}

/// Finishes a case: marks one weight tensor trainable and adds one update of it.
fn with_one_update(
    family: Family,
    mut model: QuantModel,
    input: Vec<i8>,
    n: usize,
    seed: u64,
) -> Case {
    let mut rng = rng_from_seed(splitmix64(seed ^ 0x5EED_0F0D_A7E5));
    let weights: Vec<usize> = (0..model.params.len())
        .filter(|&i| model.params[i].spec.role == ParamRole::Weight)
        .collect();
    let mut updates = Vec::new();
    if !weights.is_empty() {
        let pick = weights[rng.random_range(0..weights.len())];
        model.params[pick].spec.trainable = true;
        let bound = bound_of(&model.params[pick], model.weight_bits);
        let data = perturbed(&mut rng, &model.params[pick].data, bound);
        updates.push(Update {
            tensors: vec![(ParamId(pick as u32), data)],
        });
    }
    Case {
        family,
        model,
        input,
        n,
        updates,
    }
}

/// Geometry of a conv node.
#[derive(Clone, Debug)]
struct ConvGeom {
    n: usize,
    h: usize,
    w: usize,
    cin: usize,
    cout: usize,
    kernel: [usize; 2],
    stride: [usize; 2],
    dilation: [usize; 2],
    padding: [usize; 4],
    groups: usize,
}

/// All `(kh, kw, c)` with `kh·kw·c == k`, `kh, kw ≤ 5`.
fn factorizations(k: usize) -> Vec<(usize, usize, usize)> {
    let mut v = Vec::new();
    for kh in 1..=5 {
        for kw in 1..=5 {
            if k.is_multiple_of(kh * kw) {
                v.push((kh, kw, k / (kh * kw)));
            }
        }
    }
    v
}

/// `(kh, kw, channels per group)`: free small values, or an exact `K` from [`K_SET`].
fn kernel_and_cpg() -> impl Strategy<Value = (usize, usize, usize)> {
    prop_oneof![
        (1usize..=5, 1usize..=5, 1usize..=8),
        (select(K_SET.to_vec()), any::<Index>()).prop_map(|(k, i)| *i.get(&factorizations(k))),
    ]
}

fn spatial() -> impl Strategy<Value = ([usize; 2], [usize; 2], [usize; 4], [usize; 2])> {
    (
        [1usize..=3, 1usize..=3],
        [1usize..=2, 1usize..=2],
        [0usize..=3, 0usize..=3, 0usize..=3, 0usize..=3],
        [0usize..=4, 0usize..=4],
    )
}

/// Smallest input extent such that the window fits, plus `extra`.
fn fit(kernel: usize, dilation: usize, pad_lo: usize, pad_hi: usize, extra: usize) -> usize {
    let extent = dilation * (kernel - 1) + 1;
    extent.saturating_sub(pad_lo + pad_hi).max(1) + extra
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum ConvKind {
    Dense,
    Grouped,
    Depthwise,
}

fn conv_geom(kind: ConvKind) -> BoxedStrategy<ConvGeom> {
    // (kh, kw, cpg, groups, out channels per group)
    let channels: BoxedStrategy<(usize, usize, usize, usize, usize)> = match kind {
        ConvKind::Dense => (kernel_and_cpg(), select(CHANNELS.to_vec()))
            .prop_map(|((kh, kw, cpg), cout)| (kh, kw, cpg, 1, cout))
            .boxed(),
        ConvKind::Grouped => (kernel_and_cpg(), 2usize..=4, 1usize..=3)
            .prop_map(|((kh, kw, cpg), g, opg)| (kh, kw, cpg, g, opg))
            .boxed(),
        ConvKind::Depthwise => (
            1usize..=7,
            1usize..=7,
            prop_oneof![2usize..=9, select(vec![15usize, 16, 17])],
            1usize..=2,
        )
            .prop_map(|(kh, kw, c, mult)| (kh, kw, 1, c, mult))
            .boxed(),
    };
    (channels, 1usize..=3, spatial())
        .prop_map(
            |((kh, kw, cpg, groups, opg), n, (stride, dilation, padding, extra))| {
                let h = fit(kh, dilation[0], padding[0], padding[2], extra[0]);
                let w = fit(kw, dilation[1], padding[1], padding[3], extra[1]);
                ConvGeom {
                    n,
                    h,
                    w,
                    cin: cpg * groups,
                    cout: opg * groups,
                    kernel: [kh, kw],
                    stride,
                    dilation,
                    padding,
                    groups,
                }
            },
        )
        .boxed()
}

fn conv_case(family: Family, bits: WeightBits, g: ConvGeom, q: Quant) -> Case {
    let mut rng = rng_from_seed(q.seed);
    let mut b = Builder::new(bits, &[g.h, g.w, g.cin], act_quant(q.s_in, q.zp_in));
    b.conv(
        &mut rng,
        "conv",
        ValueId::INPUT,
        &g,
        typical_x(q.x_fill),
        q.w_fill,
        q.regime,
        q.bias,
        act_quant(q.s_out, q.zp_out),
        q.act,
    );
    let input = input_codes(&mut rng, q.x_fill, q.zp_in, g.n * g.h * g.w * g.cin);
    with_one_update(family, b.finish(), input, g.n, q.seed)
}

/// Conv2d, `groups == 1`.
pub fn conv2d(bits: WeightBits) -> BoxedStrategy<Case> {
    (conv_geom(ConvKind::Dense), quant())
        .prop_map(move |(g, q)| conv_case(Family::Conv2d, bits, g, q))
        .boxed()
}

/// Grouped conv2d, `groups ∈ 2..=4`, 1–3 output channels per group.
pub fn conv_grouped(bits: WeightBits) -> BoxedStrategy<Case> {
    (conv_geom(ConvKind::Grouped), quant())
        .prop_map(move |(g, q)| conv_case(Family::ConvGrouped, bits, g, q))
        .boxed()
}

/// Depthwise conv2d, `groups == C_in ≥ 2`, channel multiplier 1–2, kernels up to 7×7.
pub fn depthwise(bits: WeightBits) -> BoxedStrategy<Case> {
    (conv_geom(ConvKind::Depthwise), quant())
        .prop_map(move |(g, q)| conv_case(Family::Depthwise, bits, g, q))
        .boxed()
}

/// Linear with `F ∈` [`K_SET`] or `1..=200`, 1–17 outputs.
pub fn linear(bits: WeightBits) -> BoxedStrategy<Case> {
    (
        prop_oneof![select(K_SET.to_vec()), 1usize..=200],
        select(CHANNELS.to_vec()),
        1usize..=3,
        quant(),
    )
        .prop_map(move |(f, out, n, q)| {
            let mut rng = rng_from_seed(q.seed);
            let mut b = Builder::new(bits, &[f], act_quant(q.s_in, q.zp_in));
            b.linear(
                &mut rng,
                "fc",
                ValueId::INPUT,
                out,
                typical_x(q.x_fill),
                q.w_fill,
                q.regime,
                q.bias,
                act_quant(q.s_out, q.zp_out),
                q.act,
            );
            let input = input_codes(&mut rng, q.x_fill, q.zp_in, n * f);
            with_one_update(Family::Linear, b.finish(), input, n, q.seed)
        })
        .boxed()
}

fn hwc() -> impl Strategy<Value = Vec<usize>> {
    (1usize..=7, 1usize..=7, select(CHANNELS.to_vec())).prop_map(|(h, w, c)| vec![h, w, c])
}

/// A scale `base·2^e`, `e` uniform in `[lo, hi)` (continuous).
fn rel_scale(rng: &mut TestRng, base: f32, lo: f64, hi: f64) -> f32 {
    (base as f64 * rng.random_range(lo..hi).exp2()) as f32
}

fn any_zp(rng: &mut TestRng) -> i32 {
    match rng.random_range(0..4) {
        0 => -128,
        1 => 127,
        2 => 0,
        _ => rng.random_range(-128..=127),
    }
}

/// Add. Either `x + x` (one input, `[H, W, C]` or `[F]`), or `x + conv1x1(x)` /
/// `conv1x1(x) + x` so the two inputs have independent scales (ratio up to `2^±6`)
/// and zero points. The output scale is `max(s_a, s_b)·2^[−2, 4)`: below `2·max` sums
/// can saturate.
pub fn add(bits: WeightBits) -> BoxedStrategy<Case> {
    (
        prop_oneof![hwc(), (1usize..=70).prop_map(|f| vec![f])],
        0u8..3,
        1usize..=3,
        quant(),
    )
        .prop_map(move |(shape, variant, n, q)| {
            let mut rng = rng_from_seed(q.seed);
            let variant = if shape.len() == 1 { 0 } else { variant };
            let mut b = Builder::new(bits, &shape, act_quant(q.s_in, q.zp_in));
            let (a, bb) = if variant == 0 {
                (ValueId::INPUT, ValueId::INPUT)
            } else {
                let c = shape[2];
                let g = ConvGeom {
                    n,
                    h: shape[0],
                    w: shape[1],
                    cin: c,
                    cout: c,
                    kernel: [1, 1],
                    stride: [1, 1],
                    dilation: [1, 1],
                    padding: [0; 4],
                    groups: 1,
                };
                let s_b = rel_scale(&mut rng, q.s_in, -6.0, 6.0);
                let zp_b = any_zp(&mut rng);
                let regime = if q.regime == Regime::Saturating {
                    Regime::Typical
                } else {
                    upstream(q.regime)
                };
                let v = b.conv(
                    &mut rng,
                    "branch",
                    ValueId::INPUT,
                    &g,
                    typical_x(q.x_fill),
                    q.w_fill,
                    regime,
                    q.bias,
                    act_quant(s_b, zp_b),
                    Activation::None,
                );
                if variant == 1 {
                    (ValueId::INPUT, v)
                } else {
                    (v, ValueId::INPUT)
                }
            };
            let s_max = b.quant(a).scale.max(b.quant(bb).scale);
            let s_out = rel_scale(&mut rng, s_max, -2.0, 4.0);
            b.push(
                "add",
                Op::Add { activation: q.act },
                &[a, bb],
                act_quant(s_out, q.zp_out),
            );
            let len: usize = shape.iter().product();
            let input = input_codes(&mut rng, q.x_fill, q.zp_in, n * len);
            with_one_update(Family::Add, b.finish(), input, n, q.seed)
        })
        .boxed()
}

fn pool_case(family: Family, bits: WeightBits, max: bool) -> BoxedStrategy<Case> {
    (
        [1usize..=4, 1usize..=4],
        [1usize..=3, 1usize..=3],
        [0usize..4, 0usize..4, 0usize..4, 0usize..4],
        [0usize..=5, 0usize..=5],
        select(CHANNELS.to_vec()),
        1usize..=3,
        quant(),
    )
        .prop_map(move |(kernel, stride, pad, extra, c, n, q)| {
            // Pool padding must be smaller than the kernel.
            let padding = [
                pad[0] % kernel[0],
                pad[1] % kernel[1],
                pad[2] % kernel[0],
                pad[3] % kernel[1],
            ];
            let h = fit(kernel[0], 1, padding[0], padding[2], extra[0]);
            let w = fit(kernel[1], 1, padding[1], padding[3], extra[1]);
            let mut rng = rng_from_seed(q.seed);
            let mut b = Builder::new(bits, &[h, w, c], act_quant(q.s_in, q.zp_in));
            let p = Pool2d {
                kernel,
                stride,
                padding,
            };
            let op = if max { Op::MaxPool(p) } else { Op::AvgPool(p) };
            b.pass("pool", op, ValueId::INPUT);
            let input = input_codes(&mut rng, q.x_fill, q.zp_in, n * h * w * c);
            with_one_update(family, b.finish(), input, n, q.seed)
        })
        .boxed()
}

/// Max pooling: kernels 1–4, strides 1–3, padding (excluded) smaller than the kernel.
pub fn maxpool(bits: WeightBits) -> BoxedStrategy<Case> {
    pool_case(Family::MaxPool, bits, true)
}

/// Average pooling: as [`maxpool`]; all-extreme inputs make many half-way ties.
pub fn avgpool(bits: WeightBits) -> BoxedStrategy<Case> {
    pool_case(Family::AvgPool, bits, false)
}

/// Global average pooling over up to 16×16 positions.
pub fn global_avgpool(bits: WeightBits) -> BoxedStrategy<Case> {
    (
        prop_oneof![3 => (1usize..=9, 1usize..=9), 1 => Just((16usize, 16usize))],
        select(CHANNELS.to_vec()),
        1usize..=3,
        quant(),
    )
        .prop_map(move |((h, w), c, n, q)| {
            let mut rng = rng_from_seed(q.seed);
            let mut b = Builder::new(bits, &[h, w, c], act_quant(q.s_in, q.zp_in));
            b.pass("gap", Op::GlobalAvgPool, ValueId::INPUT);
            let input = input_codes(&mut rng, q.x_fill, q.zp_in, n * h * w * c);
            with_one_update(Family::GlobalAvgPool, b.finish(), input, n, q.seed)
        })
        .boxed()
}

/// Flatten of `[H, W, C]` (or the identity flatten of `[F]`).
pub fn flatten(bits: WeightBits) -> BoxedStrategy<Case> {
    (
        prop_oneof![4 => hwc(), 1 => (1usize..=40).prop_map(|f| vec![f])],
        1usize..=3,
        quant(),
    )
        .prop_map(move |(shape, n, q)| {
            let mut rng = rng_from_seed(q.seed);
            let mut b = Builder::new(bits, &shape, act_quant(q.s_in, q.zp_in));
            b.pass("flatten", Op::Flatten, ValueId::INPUT);
            let len: usize = shape.iter().product();
            let input = input_codes(&mut rng, q.x_fill, q.zp_in, n * len);
            with_one_update(Family::Flatten, b.finish(), input, n, q.seed)
        })
        .boxed()
}

/// Intermediate activations are spread over the int8 range: typical |x − zp|.
const HIDDEN_X: f64 = 64.0;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum GraphKind {
    /// conv(+act) → max/avg pool → flatten → linear.
    ConvPoolLinear,
    /// conv3×3 relu → conv3×3 → add(x, ·) (+act).
    Residual,
    /// conv or depthwise → global avg pool → linear.
    GapHead,
}

fn small_graph_case(
    bits: WeightBits,
    kind: GraphKind,
    dims: [usize; 4],
    q: Quant,
    n: usize,
) -> Case {
    let mut rng = rng_from_seed(q.seed);
    let [h, w, c, out] = dims;
    let mut b = Builder::new(bits, &[h, w, c], act_quant(q.s_in, q.zp_in));
    // Hidden activations follow ReLUs: zero point −128 (range [0, max]) or anywhere below 64.
    let hidden = |rng: &mut TestRng, s: f32| {
        let zp = if rng.random_bool(0.5) {
            -128
        } else {
            rng.random_range(-128..=64)
        };
        act_quant(rel_scale(rng, s, -3.0, 3.0), zp)
    };
    let conv3 = |cin: usize, cout: usize, stride: usize, groups: usize| ConvGeom {
        n,
        h,
        w,
        cin,
        cout,
        kernel: [3, 3],
        stride: [stride, stride],
        dilation: [1, 1],
        padding: [1, 1, 1, 1],
        groups,
    };
    let x_typ = typical_x(q.x_fill);
    match kind {
        GraphKind::ConvPoolLinear => {
            let cq = hidden(&mut rng, q.s_in);
            let stride = rng.random_range(1..=2);
            let act = if rng.random_bool(0.7) {
                Activation::Relu
            } else {
                q.act
            };
            let v = b.conv(
                &mut rng,
                "conv",
                ValueId::INPUT,
                &conv3(c, out.min(8), stride, 1),
                x_typ,
                q.w_fill,
                upstream(q.regime),
                q.bias,
                cq,
                act,
            );
            let s = b.shape(v);
            let k = [2.min(s[0]), 2.min(s[1])];
            let p = Pool2d {
                kernel: k,
                stride: k,
                padding: [
                    0,
                    0,
                    (k[0] > 1 && s[0] % 2 == 1) as usize,
                    (k[1] > 1 && s[1] % 2 == 1) as usize,
                ],
            };
            let v = if rng.random_bool(0.5) {
                b.pass("pool", Op::MaxPool(p), v)
            } else {
                b.pass("pool", Op::AvgPool(p), v)
            };
            let v = b.pass("flatten", Op::Flatten, v);
            let oq = act_quant(rel_scale(&mut rng, cq.scale, -2.0, 4.0), q.zp_out);
            b.linear(
                &mut rng,
                "fc",
                v,
                out,
                HIDDEN_X,
                Fill::Uniform,
                Regime::Typical,
                BiasMode::Typical,
                oq,
                q.act,
            );
        }
        GraphKind::Residual => {
            let q1 = hidden(&mut rng, q.s_in);
            let v1 = b.conv(
                &mut rng,
                "conv1",
                ValueId::INPUT,
                &conv3(c, c, 1, 1),
                x_typ,
                q.w_fill,
                upstream(q.regime),
                q.bias,
                q1,
                Activation::Relu,
            );
            let q2 = hidden(&mut rng, q.s_in);
            let v2 = b.conv(
                &mut rng,
                "conv2",
                v1,
                &conv3(c, c, 1, 1),
                HIDDEN_X,
                Fill::Uniform,
                Regime::Typical,
                BiasMode::Typical,
                q2,
                Activation::None,
            );
            let s_max = q.s_in.max(q2.scale);
            let oq = act_quant(rel_scale(&mut rng, s_max, -2.0, 2.0), q.zp_out);
            b.push(
                "add",
                Op::Add { activation: q.act },
                &[ValueId::INPUT, v2],
                oq,
            );
        }
        GraphKind::GapHead => {
            let depthwise = c > 1 && rng.random_bool(0.5);
            let g = if depthwise {
                conv3(c, c, 1, c)
            } else {
                conv3(c, out.min(8), rng.random_range(1..=2), 1)
            };
            let cq = hidden(&mut rng, q.s_in);
            let v = b.conv(
                &mut rng,
                "conv",
                ValueId::INPUT,
                &g,
                x_typ,
                q.w_fill,
                upstream(q.regime),
                q.bias,
                cq,
                Activation::Relu,
            );
            let v = b.pass("gap", Op::GlobalAvgPool, v);
            let oq = act_quant(rel_scale(&mut rng, cq.scale, -2.0, 4.0), q.zp_out);
            b.linear(
                &mut rng,
                "fc",
                v,
                out,
                HIDDEN_X,
                Fill::Uniform,
                Regime::Typical,
                BiasMode::Typical,
                oq,
                q.act,
            );
        }
    }
    let input = input_codes(&mut rng, q.x_fill, q.zp_in, n * h * w * c);
    with_one_update(Family::SmallGraphs, b.finish(), input, n, q.seed)
}

/// Small multi-node graphs: conv→pool→flatten→linear, a residual block
/// conv→conv→add, and conv/depthwise→global-avg-pool→linear.
pub fn small_graphs(bits: WeightBits) -> BoxedStrategy<Case> {
    (
        prop_oneof![
            Just(GraphKind::ConvPoolLinear),
            Just(GraphKind::Residual),
            Just(GraphKind::GapHead)
        ],
        [2usize..=7, 2usize..=7, 1usize..=5, 1usize..=10],
        quant(),
        1usize..=3,
    )
        .prop_map(move |(kind, dims, q, n)| small_graph_case(bits, kind, dims, q, n))
        .boxed()
}

/// Several trainable tensors (weights and biases, a random subset) and three
/// successive updates: two perturbations and one push to the extremes.
pub fn weight_updates(bits: WeightBits) -> BoxedStrategy<Case> {
    (
        prop_oneof![
            small_graphs(bits),
            conv2d(bits),
            linear(bits),
            depthwise(bits)
        ],
        any::<u64>(),
    )
        .prop_map(|(mut case, seed)| {
            let mut rng = rng_from_seed(seed);
            let bits = case.model.weight_bits;
            let mut chosen: Vec<usize> = (0..case.model.params.len())
                .filter(|_| rng.random_bool(0.6))
                .collect();
            if chosen.is_empty() {
                chosen.push(0); // parameter 0 is always the first node's weight
            }
            for p in &mut case.model.params {
                p.spec.trainable = false;
            }
            for &i in &chosen {
                case.model.params[i].spec.trainable = true;
            }
            case.updates = (0..3)
                .map(|u| Update {
                    tensors: chosen
                        .iter()
                        .map(|&i| {
                            let p = &case.model.params[i];
                            let bound = bound_of(p, bits);
                            let data = if u == 2 {
                                let n = p.data.len();
                                let ext: Vec<i64> = (0..n)
                                    .map(|j| if (j + i) % 2 == 0 { bound } else { -bound })
                                    .collect();
                                match p.data {
                                    QData::I8(_) => {
                                        QData::I8(ext.iter().map(|&x| x as i8).collect())
                                    }
                                    QData::I16(_) => {
                                        QData::I16(ext.iter().map(|&x| x as i16).collect())
                                    }
                                    QData::I32(_) => {
                                        QData::I32(ext.iter().map(|&x| x as i32).collect())
                                    }
                                }
                            } else {
                                perturbed(&mut rng, &p.data, bound)
                            };
                            (ParamId(i as u32), data)
                        })
                        .collect(),
                })
                .collect();
            case.family = Family::WeightUpdates;
            case
        })
        .boxed()
}

/// Valid cases of several families; the bad-input checks corrupt them.
pub fn bad_input(bits: WeightBits) -> BoxedStrategy<Case> {
    prop_oneof![
        linear(bits),
        conv2d(bits),
        depthwise(bits),
        add(bits),
        maxpool(bits),
        global_avgpool(bits),
        small_graphs(bits),
    ]
    .prop_map(|mut c| {
        c.family = Family::BadInput;
        c
    })
    .boxed()
}

/// The strategy of `family` at weight width `bits`.
pub fn strategy(family: Family, bits: WeightBits) -> BoxedStrategy<Case> {
    match family {
        Family::Conv2d => conv2d(bits),
        Family::ConvGrouped => conv_grouped(bits),
        Family::Depthwise => depthwise(bits),
        Family::Linear => linear(bits),
        Family::Add => add(bits),
        Family::MaxPool => maxpool(bits),
        Family::AvgPool => avgpool(bits),
        Family::GlobalAvgPool => global_avgpool(bits),
        Family::Flatten => flatten(bits),
        Family::SmallGraphs => small_graphs(bits),
        Family::WeightUpdates => weight_updates(bits),
        Family::BadInput => bad_input(bits),
    }
}

/// Single-op cases of every single-op family (what the float oracle checks).
pub fn single_op(bits: WeightBits) -> BoxedStrategy<Case> {
    prop_oneof![
        conv2d(bits),
        conv_grouped(bits),
        depthwise(bits),
        linear(bits),
        add(bits),
        maxpool(bits),
        avgpool(bits),
        global_avgpool(bits),
        flatten(bits),
    ]
    .boxed()
}
