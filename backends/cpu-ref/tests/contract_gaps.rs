//! The forward contract covers the *ranges* of trainable codes, not only their shapes
//! (a gap found while writing the conformance suite, now closed in
//! `backend::check_forward_args`).
//!
//! Before, `Prepared::forward` checked the *shapes* of the parameters, not the
//! *ranges* of trainable codes. `QuantModel::validate`
//! enforces `|w| ≤ qmax` and, for 8w8a, `|bias| ≤ 2^24` — the bound that makes an
//! `i32` accumulator exact — but only at `prepare`. After a trainer update the
//! reference silently computes with an out-of-range bias in `i64`, while an 8w8a
//! backend that relies on the documented bound (i32 accumulation) wraps: the two
//! disagree and neither reports an error. Either the trainer must guarantee the
//! ranges (and the `Backend` docs say so), or `forward` must reject them with
//! `InvalidInput`. We chose the second option; this test holds it.

use lastmile_backend_cpu_ref::Prepared;
use lastmile_core::ValueId;
use lastmile_core::backend::{BackendError, PreparedModel};
use lastmile_core::graph::{Linear, Node, Op, ParamId, ParamRole, Topology};
use lastmile_core::model::{ParamSpec, QData, QParam, QuantModel};
use lastmile_core::quant::{ActQuant, Activation, MAX_K, WeightBits};

#[test]
fn forward_rejects_trainable_codes_outside_the_validated_ranges() {
    let k = MAX_K;
    let spec = |name: &str, shape: Vec<usize>, role| ParamSpec {
        name: name.into(),
        shape,
        role,
        trainable: true,
    };
    let model = QuantModel {
        topology: Topology {
            input_shape: vec![k],
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
        weight_bits: WeightBits::W8,
        params: vec![
            QParam {
                spec: spec("fc.weight", vec![1, k], ParamRole::Weight),
                data: QData::I8(vec![127; k]),
                scales: vec![2f32.powi(-32)],
            },
            QParam {
                spec: spec("fc.bias", vec![1], ParamRole::Bias),
                data: QData::I32(vec![0]),
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
    let mut p = Prepared::new(&model).expect("the model itself is valid");
    let input = vec![127i8; k]; // x' = 255
    let mut out = Vec::new();

    // A bias update to i32::MAX (> 2^24): acc = 65536·255·127 + (2^31 − 1) = 4 269 867 007,
    // which wraps an i32 accumulator to −25 100 289.
    let mut params = model.params.clone();
    params[1].data = QData::I32(vec![i32::MAX]);
    let r = p.forward(&params, &input, 1, &mut out);
    assert!(
        matches!(r, Err(BackendError::InvalidInput(_))),
        "out-of-range 8w8a bias accepted: {r:?} → {out:?}"
    );

    // A weight update to −128, the code the spec says is never used (so −w is exact).
    let mut params = model.params.clone();
    params[0].data = QData::I8(vec![-128; k]);
    let r = p.forward(&params, &input, 1, &mut out);
    assert!(
        matches!(r, Err(BackendError::InvalidInput(_))),
        "weight code −128 accepted: {r:?}"
    );
}
