//! Hand-built models for backends' own tests, where a generated [`Case`](crate::Case)
//! would hide the one thing the test is about (a tie, the accumulation bound, a range
//! check).

use lastmile_core::graph::{Linear, Node, Op, ParamId, ParamRole, Topology, ValueId};
use lastmile_core::model::{ParamSpec, QData, QParam, QuantModel};
use lastmile_core::quant::{ActQuant, Activation, WeightBits};

/// One linear layer `[in_features] → [bias.len()]` named `fc` (`fc.weight`, `fc.bias`),
/// no activation: `y = W (x − zp_in) + b`, requantized with the real multiplier `s_w`.
///
/// * `weights` — the `out × in_features` weight codes, row by row (one row per output),
///   stored at the width of `bits` (`as i8` / `as i16`);
/// * `bias` — one `i32` code per output (its length is the number of outputs);
/// * `s_w` — every output channel's weight scale;
/// * `zero_points` — `[input, output]` zero points; both activations have scale 1, so the
///   requantization multiplier is exactly `s_w`;
/// * `trainable` — both tensors' flag (backends refresh trainable tensors on every
///   forward and may pack frozen ones once).
///
/// Not validated: a test may build an illegal model on purpose (say `K > MAX_K`).
///
/// # Panics
///
/// If `weights.len() != bias.len() · in_features`.
pub fn one_linear_model(
    bits: WeightBits,
    in_features: usize,
    weights: &[i32],
    bias: &[i32],
    s_w: f32,
    zero_points: [i32; 2],
    trainable: bool,
) -> QuantModel {
    let out = bias.len();
    assert_eq!(
        weights.len(),
        out * in_features,
        "one_linear_model: weights must be out × in_features codes"
    );
    let data = match bits {
        WeightBits::W8 => QData::I8(weights.iter().map(|&c| c as i8).collect()),
        WeightBits::W16 => QData::I16(weights.iter().map(|&c| c as i16).collect()),
    };
    let op = Op::Linear(Linear {
        weight: ParamId(0),
        bias: Some(ParamId(1)),
        activation: Activation::None,
    });
    let layer = OneLayer {
        name: "fc",
        input_shape: vec![in_features],
        op,
        weight_shape: vec![out, in_features],
        weights: data,
        bias: bias.to_vec(),
        scales: vec![s_w; out],
        zero_points,
    };
    let mut m = one_layer_model(layer);
    m.set_trainable(|_| trainable);
    m
}

/// The parts of [`one_layer_model`].
#[derive(Clone, Debug)]
pub struct OneLayer {
    /// The node's name; its tensors are `{name}.weight` and `{name}.bias`.
    pub name: &'static str,
    /// Per-sample input shape (`[f]` for a linear layer, `[h, w, c]` for a convolution).
    pub input_shape: Vec<usize>,
    /// A conv2d or linear op reading its weight from `ParamId(0)` and its bias from
    /// `ParamId(1)`.
    pub op: Op,
    /// `[out, in]` or `[out, kh, kw, in / groups]`.
    pub weight_shape: Vec<usize>,
    /// `I8` or `I16` codes; the width sets the model's weight bits.
    pub weights: QData,
    /// One `i32` code per output channel.
    pub bias: Vec<i32>,
    /// Per output channel weight scale.
    pub scales: Vec<f32>,
    /// `[input, output]` zero points; both activations have scale 1, so each channel's
    /// requantization multiplier is exactly its weight scale.
    pub zero_points: [i32; 2],
}

/// One conv2d or linear node on the graph input, frozen tensors: the model kernel tests
/// build at the edges of a kernel (shapes, zero points, extreme codes, `K = MAX_K`).
///
/// Not validated (see [`one_linear_model`]).
///
/// # Panics
///
/// If the weights are `I32` codes.
pub fn one_layer_model(layer: OneLayer) -> QuantModel {
    let OneLayer {
        name,
        input_shape,
        op,
        weight_shape,
        weights,
        bias,
        scales,
        zero_points: [zp_in, zp_out],
    } = layer;
    let weight_bits = match &weights {
        QData::I8(_) => WeightBits::W8,
        QData::I16(_) => WeightBits::W16,
        QData::I32(_) => panic!("one_layer_model: weights must be I8 or I16 codes"),
    };
    let spec = |suffix: &str, shape: Vec<usize>, role| ParamSpec {
        name: format!("{name}.{suffix}"),
        shape,
        role,
        trainable: false,
    };
    let out = bias.len();
    QuantModel {
        topology: Topology {
            input_shape,
            nodes: vec![Node {
                name: name.into(),
                op,
                inputs: vec![ValueId::INPUT],
            }],
        },
        weight_bits,
        params: vec![
            QParam {
                spec: spec("weight", weight_shape, ParamRole::Weight),
                data: weights,
                scales,
            },
            QParam {
                spec: spec("bias", vec![out], ParamRole::Bias),
                data: QData::I32(bias),
                scales: Vec::new(),
            },
        ],
        act: vec![
            ActQuant {
                scale: 1.0,
                zero_point: zp_in,
            },
            ActQuant {
                scale: 1.0,
                zero_point: zp_out,
            },
        ],
        metadata: Default::default(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn builds_the_one_node_graph_the_tests_wrote_by_hand() {
        let m = one_linear_model(
            WeightBits::W16,
            3,
            &[1, -2, 3, -4, 5, -6],
            &[7, -8],
            0.25,
            [3, -2],
            true,
        );
        m.validate().expect("a legal model");
        let spec = |name: &str, shape: Vec<usize>, role| ParamSpec {
            name: name.into(),
            shape,
            role,
            trainable: true,
        };
        let want = QuantModel {
            topology: Topology {
                input_shape: vec![3],
                nodes: vec![Node {
                    name: "fc".into(),
                    op: Op::Linear(Linear {
                        weight: ParamId(0),
                        bias: Some(ParamId(1)),
                        activation: Activation::None,
                    }),
                    inputs: vec![ValueId::INPUT],
                }],
            },
            weight_bits: WeightBits::W16,
            params: vec![
                QParam {
                    spec: spec("fc.weight", vec![2, 3], ParamRole::Weight),
                    data: QData::I16(vec![1, -2, 3, -4, 5, -6]),
                    scales: vec![0.25; 2],
                },
                QParam {
                    spec: spec("fc.bias", vec![2], ParamRole::Bias),
                    data: QData::I32(vec![7, -8]),
                    scales: Vec::new(),
                },
            ],
            act: vec![
                ActQuant::new(1.0, 3).unwrap(),
                ActQuant::new(1.0, -2).unwrap(),
            ],
            metadata: Default::default(),
        };
        assert_eq!(m, want);
        let frozen = one_linear_model(WeightBits::W8, 1, &[1], &[0], 0.5, [0, 0], false);
        assert!(frozen.params.iter().all(|p| !p.spec.trainable));
        assert_eq!(frozen.params[0].data, QData::I8(vec![1]));
    }
}
