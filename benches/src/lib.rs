//! Shared fixtures for the criterion benches: deterministic quantized models at
//! the shapes we care about. The benches themselves live in `benches/`.
#![forbid(unsafe_code)]

use lastmile_core::QuantModel;
use lastmile_core::graph::{TopologyBuilder, ValueId};
use lastmile_core::model::{FloatModel, FloatParam};
use lastmile_core::ptq;
use lastmile_core::quant::{Activation, WeightBits};

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
