//! The conformance suite on XNNPACK, within its declared tolerance (1 LSB).
//! Skips with a message when the library is absent, unless LASTMILE_REQUIRE_ENGINES=1.

fn backend() -> Result<lastmile_backend_xnnpack::Xnnpack, String> {
    match lastmile_backend_xnnpack::Xnnpack::new() {
        Ok(b) => Ok(b),
        Err(e) if std::env::var("LASTMILE_REQUIRE_ENGINES").is_ok_and(|v| v == "1") => {
            panic!("LASTMILE_REQUIRE_ENGINES=1 but XNNPACK is unavailable: {e}")
        }
        Err(e) => Err(e.to_string()),
    }
}

lastmile_conformance::conformance_suite!(fallible: backend());
