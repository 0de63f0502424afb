//! The conformance suite on ONNX Runtime, within its declared tolerance (1 LSB).
//! Skips with a message when the library is absent, unless LASTMILE_REQUIRE_ENGINES=1.

fn backend() -> Result<lastmile_backend_onnxruntime::OnnxRuntime, String> {
    match lastmile_backend_onnxruntime::OnnxRuntime::new() {
        Ok(b) => Ok(b),
        Err(e) if std::env::var("LASTMILE_REQUIRE_ENGINES").is_ok_and(|v| v == "1") => {
            panic!("LASTMILE_REQUIRE_ENGINES=1 but ONNX Runtime is unavailable: {e}")
        }
        Err(e) => Err(e.to_string()),
    }
}

lastmile_conformance::conformance_suite!(fallible: backend());
