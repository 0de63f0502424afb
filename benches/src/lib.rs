//! Shared fixtures for the criterion benches: deterministic quantized models at
//! the shapes we care about. The benches themselves live in `benches/`.
#![forbid(unsafe_code)]

use lastmile_core::QuantModel;
use lastmile_core::graph::{TopologyBuilder, ValueId};
use lastmile_core::model::{FloatModel, FloatParam};
use lastmile_core::quant::{Activation, WeightBits};
use lastmile_core::{plan, ptq, zoo};

/// SplitMix64: a tiny portable generator for bench fixtures.
pub fn splitmix(state: &mut u64) -> u64 {
    *state = state.wrapping_add(0x9E37_79B9_7F4A_7C15);
    let mut z = *state;
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

/// Uniform values in [-1, 1).
pub fn uniform(n: usize, seed: u64) -> Vec<f32> {
    let mut s = seed;
    (0..n)
        .map(|_| (splitmix(&mut s) >> 40) as f32 / (1u64 << 23) as f32 - 1.0)
        .collect()
}

/// Quantizes a builder's graph with random weights, calibrated on random inputs.
pub fn quantized(b: TopologyBuilder, bits: WeightBits, seed: u64) -> QuantModel {
    let (topology, specs) = b.finish();
    let params = specs
        .into_iter()
        .enumerate()
        .map(|(i, spec)| {
            let fan_in = spec.shape.iter().skip(1).product::<usize>().max(1) as f32;
            let data = uniform(spec.numel(), seed + i as u64)
                .into_iter()
                .map(|v| v / fan_in.sqrt())
                .collect();
            FloatParam { spec, data }
        })
        .collect();
    let float = FloatModel {
        topology,
        params,
        metadata: Default::default(),
    };
    let sample: usize = float.topology.input_shape.iter().product();
    let calib: Vec<f32> = uniform(8 * sample, seed ^ 0xABCD)
        .into_iter()
        .map(|v| v.abs())
        .collect();
    ptq::quantize(&float, &calib, 8, bits)
        .expect("bench fixture quantizes")
        .0
}

/// One conv layer `h×w×c_in → c_out`, kernel k, padding k/2.
pub fn conv_model(
    h: usize,
    w: usize,
    c_in: usize,
    c_out: usize,
    k: usize,
    groups: usize,
    bits: WeightBits,
) -> QuantModel {
    let mut b = TopologyBuilder::new(&[h, w, c_in]);
    let p = k / 2;
    b.conv2d(
        "conv",
        ValueId::INPUT,
        c_in,
        c_out,
        [k, k],
        [1, 1],
        [p, p, p, p],
        groups,
        Activation::Relu,
    );
    quantized(b, bits, 1)
}

/// One linear layer `f_in → f_out`.
pub fn linear_model(f_in: usize, f_out: usize, bits: WeightBits) -> QuantModel {
    let mut b = TopologyBuilder::new(&[f_in]);
    b.linear("fc", ValueId::INPUT, f_in, f_out, Activation::None);
    quantized(b, bits, 2)
}

/// A zoo architecture (`lastmile_core::zoo`) with He-uniform weights, quantized on
/// random non-negative inputs. `input_hw`/`channels` only matter for `resnet-tiny`.
pub fn zoo_model(name: &str, input: Option<&[usize]>, bits: WeightBits) -> QuantModel {
    let (topology, specs) = zoo::by_name(name, input, 10).expect("known architecture");
    let float = zoo::init_float(topology, specs, 3);
    let sample: usize = float.topology.input_shape.iter().product();
    let calib: Vec<f32> = uniform(8 * sample, 0x5EED)
        .into_iter()
        .map(|v| v.abs())
        .collect();
    ptq::quantize(&float, &calib, 8, bits)
        .expect("zoo model quantizes")
        .0
}

/// Multiply-accumulates of one forward of `n` samples (conv and linear nodes).
pub fn macs(model: &QuantModel, n: usize) -> u64 {
    let plan = plan::Plan::derive(model).expect("valid model");
    let mut total = 0u64;
    for (i, p) in plan.nodes.iter().enumerate() {
        if let plan::NodePlan::Dot { k, .. } = p {
            total += (*k * plan.shapes[i + 1].iter().product::<usize>()) as u64;
        }
    }
    total * n as u64
}

/// Input codes for `n` samples of `model`.
pub fn input_codes(model: &QuantModel, n: usize) -> Vec<i8> {
    let sample: usize = model.topology.input_shape.iter().product();
    uniform(n * sample, 7)
        .iter()
        .map(|v| (v * 127.0) as i8)
        .collect()
}

/// Environment variable restricting the forward bench to some backends: a comma-separated
/// list of `name`, `name/tier` or `tier` (e.g. `x86/avx2,cpu-ref`). Set by `cargo xtask
/// bench --backend`.
pub const ENV_BENCH_BACKEND: &str = "LASTMILE_BENCH_BACKEND";

/// Whether backend `name` at `tier` passes the [`ENV_BENCH_BACKEND`] filter.
pub fn backend_selected(name: &str, tier: &str) -> bool {
    match std::env::var(ENV_BENCH_BACKEND) {
        Ok(v) if !v.trim().is_empty() => v.split(',').map(str::trim).any(|f| {
            f == name || f == tier || f == format!("{name}/{tier}") || f == format!("{name}:{tier}")
        }),
        _ => true,
    }
}
