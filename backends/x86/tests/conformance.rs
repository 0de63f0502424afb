//! The shared conformance suite on every tier this CPU supports (a tier the CPU lacks
//! prints `skipped: <reason>`), plus the best tier with several threads.

use lastmile_backend_x86::{Tier, X86};

mod scalar {
    use super::*;
    lastmile_conformance::conformance_suite!(fallible: X86::with_tier(Tier::Scalar));
}

mod avx2 {
    use super::*;
    lastmile_conformance::conformance_suite!(fallible: X86::with_tier(Tier::Avx2));
}

mod avx_vnni {
    use super::*;
    lastmile_conformance::conformance_suite!(fallible: X86::with_tier(Tier::AvxVnni));
}

mod avx512_vnni {
    use super::*;
    lastmile_conformance::conformance_suite!(fallible: X86::with_tier(Tier::Avx512Vnni));
}

mod amx {
    use super::*;
    lastmile_conformance::conformance_suite!(fallible: X86::with_tier(Tier::Amx));
}

/// Row- and column-split threading must not change a single bit.
mod threaded {
    use super::*;
    lastmile_conformance::conformance_suite!(fallible: X86::best().map(|b| b.with_threads(3)));
}
