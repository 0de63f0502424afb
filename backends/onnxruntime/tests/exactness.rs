//! Measures how far ONNX Runtime's output codes are from the reference, per op family
//! (generated cases of the conformance suite, fixed seed) and on PTQ-quantized zoo
//! models ([`lastmile_conformance::exactness`]), prints the table (`--nocapture`) and
//! checks the declared tolerance ([`MAX_LSB`]). Skips when the library is absent unless
//! LASTMILE_REQUIRE_ENGINES=1. Cases per family: LASTMILE_EXACTNESS_CASES (default 100).

use lastmile_backend_onnxruntime::{MAX_LSB, OnnxRuntime};
use lastmile_conformance::{exactness, load_engine};

#[test]
fn measured_difference_is_within_the_declared_tolerance() {
    let backend = match load_engine(OnnxRuntime::new(), "ONNX Runtime") {
        Ok(b) => b,
        Err(e) => {
            eprintln!("skipped: {e}");
            return;
        }
    };
    let cases = exactness::cases_from_env();
    let report = exactness::measure(cases, |model, input, n| {
        exactness::forward(&backend, model, input, n)
    });
    eprintln!(
        "\nONNX Runtime {} vs cpu-ref, 8w8a, {cases} generated cases per family:\n{}",
        backend.version(),
        report.table()
    );
    let worst = report.worst();
    assert!(
        worst <= MAX_LSB as i32,
        "measured max |Δ| = {worst} exceeds the declared {MAX_LSB} LSB"
    );
}
