//! The shared conformance suite on every tier this CPU (or qemu `-cpu` model) supports,
//! bit-exact against cpu-ref. A tier the CPU lacks — or, under `cargo xtask test`, a tier
//! other than the one `LASTMILE_NEON_TIER` pins — prints `skipped: <reason>`; on other
//! architectures every tier is skipped ("not an aarch64 build").

use lastmile_backend_neon::{Neon, Tier};

mod scalar {
    use super::*;
    lastmile_conformance::conformance_suite!(fallible: Neon::under_test(Tier::Scalar));
}

mod neon {
    use super::*;
    lastmile_conformance::conformance_suite!(fallible: Neon::under_test(Tier::Neon));
}

mod dotprod {
    use super::*;
    lastmile_conformance::conformance_suite!(fallible: Neon::under_test(Tier::Dotprod));
}

mod i8mm {
    use super::*;
    lastmile_conformance::conformance_suite!(fallible: Neon::under_test(Tier::I8mm));
}

/// Under `cargo xtask test` (which pins a tier), that tier must really run here: a qemu
/// `-cpu` model without the feature would otherwise turn the whole suite into skips.
#[test]
fn the_pinned_tier_is_supported() {
    if !cfg!(target_arch = "aarch64") {
        assert!(Neon::best().is_err());
        return;
    }
    if let Ok(Some(t)) = Neon::tier_from_env() {
        assert!(
            Neon::available_tiers().contains(&t),
            "LASTMILE_NEON_TIER={t} but this CPU only supports {:?}",
            Neon::available_tiers()
        );
        assert_eq!(Neon::tiers_under_test(), vec![t]);
    }
    eprintln!("tiers under test: {:?}", Neon::tiers_under_test());
}
