//! # lastmile-example-npu — an example vendor plugin written in C
//!
//! `c/example_npu.c` behaves like a typical NPU SDK behind lastmile's plugin C ABI v1
//! (`backends/plugin/include/lastmile_backend.h`): its own weight layout (OIHW, int32
//! "device words"; weights are *uploaded* after every change), its own error codes
//! (`NPU_E_*`, reported through `last_error`), and the integer spec in C with `int64`
//! accumulation and the same round-half-up requantization, so it is bit-exact with the
//! reference. `build.rs` compiles it (with the C compiler the `cc` crate picks) into shared
//! libraries; this crate only exposes their paths:
//!
//! ```text
//! LASTMILE_PLUGINS=$(cargo run -q -p lastmile-example-npu) lastmile backends
//! ```
//!
//! The broken variants exist for the loader's tests: each must give a clear error.
#![forbid(unsafe_code)]
#![warn(missing_docs)]

/// The working plugin.
pub const PLUGIN: &str = env!("LASTMILE_EXAMPLE_NPU");

/// A deliberately broken build of the same plugin.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Broken {
    /// Reports ABI version 99.
    AbiVersion,
    /// Exports no `lastmile_backend_v1`.
    NoEntryPoint,
    /// Its table has a NULL `forward`.
    NullForward,
    /// Reports a different `sizeof(LmNode)`.
    StructSize,
    /// `create` fails (the device cannot be opened).
    CreateFails,
    /// `prepare` fails (the graph compiler rejects the graph).
    PrepareFails,
    /// The third `forward` fails (device lost).
    ForwardFails,
}

impl Broken {
    /// Every variant.
    pub const ALL: [Broken; 7] = [
        Broken::AbiVersion,
        Broken::NoEntryPoint,
        Broken::NullForward,
        Broken::StructSize,
        Broken::CreateFails,
        Broken::PrepareFails,
        Broken::ForwardFails,
    ];

    /// Path of the shared library.
    pub fn path(self) -> &'static str {
        match self {
            Broken::AbiVersion => env!("LASTMILE_EXAMPLE_NPU_BAD_ABI"),
            Broken::NoEntryPoint => env!("LASTMILE_EXAMPLE_NPU_NO_ENTRY"),
            Broken::NullForward => env!("LASTMILE_EXAMPLE_NPU_NULL_FORWARD"),
            Broken::StructSize => env!("LASTMILE_EXAMPLE_NPU_BAD_SIZES"),
            Broken::CreateFails => env!("LASTMILE_EXAMPLE_NPU_FAIL_CREATE"),
            Broken::PrepareFails => env!("LASTMILE_EXAMPLE_NPU_FAIL_PREPARE"),
            Broken::ForwardFails => env!("LASTMILE_EXAMPLE_NPU_FAIL_FORWARD"),
        }
    }
}
