//! The shared conformance suite: every op family at 8w8a and 16w8a, bit for bit against the
//! reference, the weight-update contract and bad input. VENDOR: keep this file as it is
//! (with your type's name); `cargo xtask test --backend <name>` runs it.

lastmile_conformance::conformance_suite!(fallible: lastmile_backend_template::Template::new());
