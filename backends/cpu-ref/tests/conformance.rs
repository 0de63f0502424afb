//! The reference against itself: proves the suite runs and its contract checks hold.
lastmile_conformance::conformance_suite!(lastmile_backend_cpu_ref::CpuRef);
