//! Requantization ties, which random scales almost never produce: with `s_in·s_w/s_out`
//! exactly 1/2 or 1/4 (`M = 2^30`), odd accumulators land exactly on .5 (and .25/.75), and
//! the spec rounds half *up* (toward +∞) — including for negative values. The shared
//! conformance suite did not catch a plugin rounding half *down* even with 3000 cases per
//! family, so the example plugin is checked here directly against the reference.

use lastmile_backend_plugin::Plugin;
use lastmile_core::backend::Backend;
use lastmile_core::graph::{Linear, Node, Op, ParamRole, ParamSpec, Topology, ValueId};
use lastmile_core::model::{QData, QParam, QuantModel};
use lastmile_core::quant::{ActQuant, Activation, WeightBits};

fn spec(name: &str, shape: Vec<usize>, role: ParamRole) -> ParamSpec {
    ParamSpec {
        name: name.into(),
        shape,
        role,
        trainable: true,
    }
}

/// `y = W x + b` with `f` inputs and `out` outputs, every real multiplier = `s_w`.
fn linear(bits: WeightBits, f: usize, out: usize, s_w: f32, w: QData, b: Vec<i32>) -> QuantModel {
    let m = QuantModel {
        topology: Topology {
            input_shape: vec![f],
            nodes: vec![Node {
                name: "fc".into(),
                op: Op::Linear(Linear {
                    weight: lastmile_core::graph::ParamId(0),
                    bias: Some(lastmile_core::graph::ParamId(1)),
                    activation: Activation::None,
                }),
                inputs: vec![ValueId::INPUT],
            }],
        },
        weight_bits: bits,
        params: vec![
            QParam {
                spec: spec("fc.weight", vec![out, f], ParamRole::Weight),
                data: w,
                scales: vec![s_w; out],
            },
            QParam {
                spec: spec("fc.bias", vec![out], ParamRole::Bias),
                data: QData::I32(b),
                scales: Vec::new(),
            },
        ],
        act: vec![
            ActQuant::new(1.0, 3).unwrap(),
            ActQuant::new(1.0, -2).unwrap(),
        ],
        metadata: Default::default(),
    };
    m.validate().expect("valid model");
    m
}

#[test]
fn ties_round_half_up_like_the_reference() {
    let plugin = Plugin::load(lastmile_example_npu::PLUGIN).expect("the example plugin loads");
    let (f, out, n) = (3, 8, 64);
    for bits in [WeightBits::W8, WeightBits::W16] {
        for s_w in [0.5f32, 0.25, 0.125] {
            // Small weights and inputs so accumulators are small odd and even numbers of
            // both signs: many exact ties, nothing saturates.
            let w: Vec<i32> = (0..out * f).map(|i| (i as i32 % 7) - 3).collect();
            let wd = match bits {
                WeightBits::W8 => QData::I8(w.iter().map(|&v| v as i8).collect()),
                WeightBits::W16 => QData::I16(w.iter().map(|&v| v as i16).collect()),
            };
            let b: Vec<i32> = (0..out as i32).map(|c| c - 4).collect();
            let m = linear(bits, f, out, s_w, wd, b);
            let x: Vec<i8> = (0..n * f).map(|i| ((i * 5) % 13) as i8 - 3).collect();
            let want = lastmile_backend_cpu_ref::run(&m, &x, n).unwrap();
            let mut got = Vec::new();
            plugin
                .prepare(&m)
                .unwrap()
                .forward(&m.params, &x, n, &mut got)
                .unwrap();
            assert_eq!(got, want, "{} s_w = {s_w}", bits.scheme());
        }
    }
}
