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
use lastmile_conformance::one_linear_model;
use lastmile_core::backend::{BackendError, PreparedModel};
use lastmile_core::model::QData;
use lastmile_core::quant::{MAX_K, WeightBits};

#[test]
fn forward_rejects_trainable_codes_outside_the_validated_ranges() {
    let k = MAX_K;
    let model = one_linear_model(
        WeightBits::W8,
        k,
        &vec![127; k],
        &[0],
        2f32.powi(-32),
        [-128, 0],
        true,
    );
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
