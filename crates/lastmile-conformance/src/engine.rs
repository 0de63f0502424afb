//! Backends whose engine is a library found at run time (ONNX Runtime, XNNPACK): their
//! tests skip when it is absent, unless `LASTMILE_REQUIRE_ENGINES=1` (CI with the SDKs
//! installed), where a missing engine is a failure.

use core::fmt::Display;

/// Whether `LASTMILE_REQUIRE_ENGINES=1` is set.
pub fn engines_required() -> bool {
    std::env::var("LASTMILE_REQUIRE_ENGINES").is_ok_and(|v| v == "1")
}

/// The backend, or why it is unavailable (for a `skipped: <reason>` line).
///
/// # Panics
///
/// When the constructor failed and `LASTMILE_REQUIRE_ENGINES=1`: the message names
/// `engine` and quotes the error.
///
/// ```text
/// let backend = match load_engine(OnnxRuntime::new(), "ONNX Runtime") {
///     Ok(b) => b,
///     Err(e) => {
///         eprintln!("skipped: {e}");
///         return;
///     }
/// };
/// ```
#[track_caller]
pub fn load_engine<B, E: Display>(result: Result<B, E>, engine: &str) -> Result<B, String> {
    match result {
        Ok(b) => Ok(b),
        Err(e) if engines_required() => {
            panic!("LASTMILE_REQUIRE_ENGINES=1 but {engine} is unavailable: {e}")
        }
        Err(e) => Err(e.to_string()),
    }
}
