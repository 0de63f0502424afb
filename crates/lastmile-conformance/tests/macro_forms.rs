//! Every form of `conformance_suite!` compiles and runs.

/// A boxed trait object chosen at run time.
mod boxed {
    use lastmile_core::Backend;
    lastmile_conformance::conformance_suite!(
        Box::new(lastmile_backend_cpu_ref::CpuRef) as Box<dyn Backend>
    );
}

/// A constructor that can fail: here it succeeds.
mod fallible_ok {
    lastmile_conformance::conformance_suite!(
        fallible: Ok::<_, lastmile_core::BackendError>(lastmile_backend_cpu_ref::CpuRef)
    );
}

/// A missing SDK: every test passes after printing "skipped".
mod fallible_unavailable {
    lastmile_conformance::conformance_suite!(
        fallible: Err::<lastmile_backend_cpu_ref::CpuRef, _>(
            lastmile_core::BackendError::Unavailable("no SDK on this machine".into())
        )
    );
}
