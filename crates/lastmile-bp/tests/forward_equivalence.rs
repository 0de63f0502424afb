//! `BpModel::forward` equals `float_exec::forward` on random graphs of every op:
//! the proof that the NHWC IR → NCHW candle translation is right.

mod common;

use common::{every_op_model, random_inputs, random_model};
use lastmile_bp::BpModel;
use lastmile_bp::candle::DType;
use lastmile_core::float_exec;
use lastmile_core::graph::OpKind;
use lastmile_core::model::FloatModel;
use proptest::prelude::*;

/// Max-norm relative error of the candle forward against the float reference.
fn rel_error(model: &FloatModel, n: usize, seed: u64) -> f32 {
    let x = random_inputs(model, n, seed);
    let want = float_exec::forward(model, &x, n).unwrap();
    let bp = BpModel::new(model).unwrap();
    let got = bp
        .forward(&bp.input_tensor(&x, n).unwrap())
        .unwrap()
        .flatten_all()
        .unwrap()
        .to_vec1::<f32>()
        .unwrap();
    assert_eq!(got.len(), want.len());
    let scale = want.iter().fold(0f32, |m, v| m.max(v.abs())).max(1e-3);
    got.iter()
        .zip(&want)
        .map(|(a, b)| (a - b).abs() / scale)
        .fold(0f32, f32::max)
}

#[test]
fn every_op_model_matches_float_exec() {
    let kinds: Vec<OpKind> = every_op_model(0)
        .topology
        .nodes
        .iter()
        .map(|n| n.op.kind())
        .collect();
    for k in OpKind::ALL {
        assert!(kinds.contains(&k), "every_op_model lacks {k:?}");
    }
    for seed in 0..8 {
        let m = every_op_model(seed);
        let e = rel_error(&m, 3, seed);
        assert!(e <= 1e-4, "seed {seed}: relative error {e}");
    }
}

#[test]
fn feature_map_output_is_nhwc() {
    // A graph whose output is a feature map must come back as [n, H, W, C].
    let mut g = common::Gen::new(vec![5, 4, 3]);
    let y = g
        .conv(
            lastmile_core::ValueId::INPUT,
            2,
            [2, 3],
            [1, 2],
            [0, 1, 1, 0],
            [1, 1],
            1,
            true,
            lastmile_core::Activation::None,
        )
        .unwrap();
    let shape = g.shape(y).to_vec();
    let m = g.finish(&mut common::Rng::new(1));
    let bp = BpModel::new(&m).unwrap();
    let x = random_inputs(&m, 2, 1);
    let out = bp.forward(&bp.input_tensor(&x, 2).unwrap()).unwrap();
    assert_eq!(out.dims(), &[2, shape[0], shape[1], shape[2]]);
    assert!(rel_error(&m, 2, 1) <= 1e-4);
}

#[test]
fn f64_model_matches_too() {
    let m = every_op_model(3);
    let x = random_inputs(&m, 2, 3);
    let want = float_exec::forward(&m, &x, 2).unwrap();
    let bp = BpModel::with_dtype(&m, DType::F64).unwrap();
    let got = bp
        .forward(&bp.input_tensor(&x, 2).unwrap())
        .unwrap()
        .flatten_all()
        .unwrap()
        .to_vec1::<f64>()
        .unwrap();
    for (a, b) in got.iter().zip(&want) {
        assert!(
            (a - *b as f64).abs() <= 1e-4 * (1.0 + b.abs() as f64),
            "{a} vs {b}"
        );
    }
}

#[test]
fn wrong_input_shape_is_an_error() {
    let m = every_op_model(0);
    let bp = BpModel::new(&m).unwrap();
    let x = lastmile_bp::candle::Tensor::zeros((2, 5), DType::F32, bp.device()).unwrap();
    let e = bp.forward(&x).unwrap_err().to_string();
    assert!(e.contains("graph input"), "{e}");
    assert!(bp.input_tensor(&[0.0; 7], 1).is_err());
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 96, ..ProptestConfig::default() })]

    #[test]
    fn random_models_match_float_exec(seed in any::<u64>(), n in 1usize..4) {
        let m = random_model(seed);
        let e = rel_error(&m, n, seed);
        prop_assert!(e <= 1e-4, "seed {seed}: relative error {e}\n{:#?}", m.topology);
    }
}

/// The random generator really exercises the awkward cases (so the property
/// test above is not vacuous).
#[test]
fn random_models_cover_every_case() {
    use lastmile_core::graph::Op;
    let mut seen = std::collections::BTreeSet::new();
    for seed in 0..200u64 {
        let m = random_model(seed);
        for n in &m.topology.nodes {
            seen.insert(format!("{:?}", n.op.kind()));
            match &n.op {
                Op::Conv2d(c) => {
                    if c.stride[0] != c.stride[1] {
                        seen.insert("conv per-axis stride".into());
                    }
                    if c.dilation[0] != c.dilation[1] {
                        seen.insert("conv per-axis dilation".into());
                    }
                    if c.dilation == [2, 2] && c.stride == [2, 2] {
                        seen.insert("conv stride 2 dilation 2".into());
                    }
                    let [t, l, b, r] = c.padding;
                    if t != b || l != r {
                        seen.insert("conv asymmetric padding".into());
                    }
                    let c_in = m.params[c.weight.index()].spec.shape[3] * c.groups;
                    if c.groups > 1 && c.groups == c_in {
                        seen.insert("depthwise".into());
                    } else if c.groups > 1 {
                        seen.insert("grouped".into());
                    }
                }
                Op::MaxPool(p) | Op::AvgPool(p) => {
                    let max = matches!(n.op, Op::MaxPool(_));
                    let padded = p.padding.iter().any(|&v| v > 0);
                    let ks = if p.kernel == p.stride { "k=s" } else { "k!=s" };
                    if padded {
                        seen.insert(format!("pool max={max} {ks} padded"));
                    }
                }
                _ => {}
            }
        }
        if m.topology.input_shape.len() == 1 {
            seen.insert("vector input".into());
        }
    }
    for want in [
        "Conv2d",
        "Conv2dGrouped",
        "Linear",
        "Add",
        "MaxPool",
        "AvgPool",
        "GlobalAvgPool",
        "Flatten",
        "conv per-axis stride",
        "conv per-axis dilation",
        "conv stride 2 dilation 2",
        "conv asymmetric padding",
        "depthwise",
        "grouped",
        "pool max=true k=s padded",
        "pool max=true k!=s padded",
        "pool max=false k=s padded",
        "pool max=false k!=s padded",
        "vector input",
    ] {
        assert!(
            seen.contains(want),
            "random models never produce: {want}; saw {seen:?}"
        );
    }
}
