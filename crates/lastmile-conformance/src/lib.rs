//! # lastmile-conformance — the one suite every backend runs
//!
//! A backend adds one file, `tests/conformance.rs`, with one line:
//!
//! ```text
//! lastmile_conformance::conformance_suite!(my_backend::MyBackend::new());
//! ```
//!
//! That expands to one `#[test]` per op family ([`Family::ALL`]: conv2d,
//! conv_grouped, depthwise, linear, add, maxpool, avgpool, global_avgpool,
//! flatten, small_graphs, weight_updates, bad_input). Each runs a property test
//! over the family's generated problems ([`strategies`]) at both weight widths
//! (8w8a and 16w8a) and compares the backend's raw `i8` outputs with the
//! reference backend `cpu-ref` ([`check_case`]): bit for bit for
//! [`Exactness::BitExact`](lastmile_core::Exactness::BitExact), within the
//! declared LSBs otherwise. It also checks the training contract (trainable
//! tensors changed between forwards must be seen; restoring them restores the
//! output) and that bad input is rejected with an error, never a panic.
//!
//! * `LASTMILE_CONFORMANCE_CASES` — cases per family and width (default 64);
//! * `LASTMILE_CONFORMANCE_SEED` — the base seed to reproduce a failing run
//!   (printed with every failure; random by default);
//! * `LASTMILE_CONFORMANCE_SHRINK_ITERS` — shrinking budget (default 512).
//!
//! For tools, [`run_all`] runs everything and returns a [`Report`] instead of
//! panicking. The [`oracle`] module checks the reference itself against real
//! arithmetic with derived error bounds. See `docs/conformance.md`.
//!
//! Shared by backends' own tests: [`ties::probe`] (requantization ties),
//! [`exactness::measure`] (how far a tolerant backend is from the reference),
//! `training::assert_identical_to_reference` (QZO-FF through a backend gives the
//! reference's weights; feature `training`, on by default) and [`load_engine`] (skip
//! when a run-time engine library is absent, unless `LASTMILE_REQUIRE_ENGINES=1`), and
//! [`one_linear_model`] and [`one_layer_model`] (hand-built one-layer models for kernel and
//! contract tests).
#![forbid(unsafe_code)]
#![warn(missing_docs)]

pub mod bad_input;
pub mod case;
pub mod check;
pub mod engine;
pub mod exactness;
pub mod fixtures;
pub mod oracle;
pub mod runner;
pub mod strategies;
pub mod ties;
#[cfg(feature = "training")]
pub mod training;

pub use bad_input::check_bad_input;
pub use case::{Case, Family, Update};
pub use check::{Mismatch, Outcome, Problem, check_case, check_case_outcome};
pub use engine::load_engine;
pub use fixtures::{OneLayer, one_layer_model, one_linear_model};
pub use runner::{
    DEFAULT_CASES, FamilyReport, Report, Settings, Status, run_all, run_all_with, run_family,
    run_family_test,
};

/// What [`conformance_suite!`] accepts: a backend value, or anything that derefs to
/// `dyn Backend` (`Box<dyn Backend>`, `Arc<dyn Backend>`), found by method-call
/// auto-deref.
pub trait AsBackend {
    /// The backend as a trait object.
    fn as_backend(&self) -> &dyn lastmile_core::Backend;
}

impl<B: lastmile_core::Backend> AsBackend for B {
    fn as_backend(&self) -> &dyn lastmile_core::Backend {
        self
    }
}

impl AsBackend for dyn lastmile_core::Backend {
    fn as_backend(&self) -> &dyn lastmile_core::Backend {
        self
    }
}

/// Expands to one `#[test]` per [`Family`], each running
/// [`run_family_test`] on the backend built by the expression.
///
/// * `conformance_suite!(expr)` — `expr` is a backend value (a backend struct,
///   `Box<dyn Backend>`, `Arc<dyn Backend>`: see [`AsBackend`]). It is evaluated
///   once per test.
/// * `conformance_suite!(fallible: expr)` — `expr` is a `Result<B, E>` with
///   `E: Display`; on `Err` (say `BackendError::Unavailable`: the SDK is not
///   installed) every test passes after printing `skipped: <reason>`.
///
/// Invoke it once per test file (the tests are named after the families); to run
/// several tiers, wrap each invocation in its own `mod`.
#[macro_export]
macro_rules! conformance_suite {
    (fallible: $ctor:expr) => {
        $crate::__conformance_tests!(@fallible ($ctor)
            conv2d Conv2d, conv_grouped ConvGrouped, depthwise Depthwise, linear Linear,
            add Add, maxpool MaxPool, avgpool AvgPool, global_avgpool GlobalAvgPool,
            flatten Flatten, small_graphs SmallGraphs, weight_updates WeightUpdates,
            bad_input BadInput);
    };
    ($ctor:expr) => {
        $crate::__conformance_tests!(@plain ($ctor)
            conv2d Conv2d, conv_grouped ConvGrouped, depthwise Depthwise, linear Linear,
            add Add, maxpool MaxPool, avgpool AvgPool, global_avgpool GlobalAvgPool,
            flatten Flatten, small_graphs SmallGraphs, weight_updates WeightUpdates,
            bad_input BadInput);
    };
}

#[doc(hidden)]
#[macro_export]
macro_rules! __conformance_tests {
    (@plain ($ctor:expr) $($name:ident $family:ident),* $(,)?) => {
        $(
            #[test]
            fn $name() {
                use $crate::AsBackend as _;
                let backend = $ctor;
                $crate::run_family_test(backend.as_backend(), $crate::Family::$family);
            }
        )*
    };
    (@fallible ($ctor:expr) $($name:ident $family:ident),* $(,)?) => {
        $(
            #[test]
            fn $name() {
                use $crate::AsBackend as _;
                match $ctor {
                    ::core::result::Result::Ok(backend) => {
                        $crate::run_family_test(backend.as_backend(), $crate::Family::$family)
                    }
                    ::core::result::Result::Err(e) => {
                        ::std::eprintln!("{}: skipped: {}", ::core::stringify!($name), e)
                    }
                }
            }
        )*
    };
}
