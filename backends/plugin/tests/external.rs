//! The conformance suite on any plugin library named by `LASTMILE_PLUGIN_UNDER_TEST`, through
//! the loader: what `cargo xtask test --backend path/to/libvendor.so` runs. Without the
//! variable every test prints `skipped: ...` (the example plugin is tested in its own crate).

use lastmile_backend_plugin::Plugin;

fn plugin() -> Result<Plugin, String> {
    let path = std::env::var_os("LASTMILE_PLUGIN_UNDER_TEST")
        .ok_or("LASTMILE_PLUGIN_UNDER_TEST is not set (cargo xtask test --backend <library>)")?;
    // A library that does not load must fail the run, not skip it.
    Ok(Plugin::load(&path).unwrap_or_else(|e| panic!("{e}")))
}

lastmile_conformance::conformance_suite!(fallible: plugin());
