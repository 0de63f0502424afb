//! Measures how far XNNPACK's output codes are from the reference, per op family
//! (generated cases of the conformance suite, fixed seed) and on PTQ-quantized zoo
//! models ([`lastmile_conformance::exactness`]), prints the table (`--nocapture`) and
//! checks the declared tolerance ([`MAX_LSB`]). Skips when the library is absent unless
//! LASTMILE_REQUIRE_ENGINES=1. Cases per family: LASTMILE_EXACTNESS_CASES (default 100).

use std::collections::BTreeSet;

use lastmile_backend_xnnpack::{MAX_LSB, Xnnpack};
use lastmile_conformance::{exactness, load_engine};
use lastmile_core::backend::PreparedModel;

#[test]
fn measured_difference_is_within_the_declared_tolerance() {
    let backend = match load_engine(Xnnpack::new(), "XNNPACK") {
        Ok(b) => b,
        Err(e) => {
            eprintln!("skipped: {e}");
            return;
        }
    };
    let cases = exactness::cases_from_env();
    let (mut dot_layers, mut fallbacks) = (0, 0);
    let mut reasons = BTreeSet::new();
    let report = exactness::measure(cases, |model, input, n| {
        let mut p = backend.prepare_xnn(model).expect("prepare");
        dot_layers += model
            .topology
            .nodes
            .iter()
            .filter(|n| !n.op.params().is_empty())
            .count();
        fallbacks += p.fallback_layers().len();
        // "node 0 'conv': xnn_create_...: unsupported parameter" → the status.
        reasons.extend(p.fallback_layers().iter().map(|f| f.to_string()));
        let mut out = Vec::new();
        p.forward(&model.params, input, n, &mut out)
            .expect("forward");
        out
    });
    eprintln!(
        "\nXNNPACK vs cpu-ref, 8w8a, {cases} generated cases per family:\n{}",
        report.table()
    );
    eprintln!(
        "conv/linear layers run on the reference kernel (XNNPACK rejected their parameters): \
         {fallbacks} of {dot_layers}"
    );
    eprintln!("XNNPACK's reasons: {reasons:?}");
    let worst = report.worst();
    assert!(
        worst <= MAX_LSB as i32,
        "measured max |Δ| = {worst} exceeds the declared {MAX_LSB} LSB"
    );
}
