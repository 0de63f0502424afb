//! Links with cortex-m-rt's `link.x` and our `memory.x`, and points the firmware at the model
//! and data set it embeds: `$MCU_ADAPT_ASSETS/{model.lmm,set.bin}`, written by
//! `mcu-adapt-host` (`cargo xtask test --target thumbv7em-none-eabihf` runs it first). Default:
//! `<repo>/target/mcu-adapt/assets`.

use std::path::PathBuf;

fn main() {
    let manifest = PathBuf::from(std::env::var_os("CARGO_MANIFEST_DIR").expect("cargo sets it"));
    let out = PathBuf::from(std::env::var_os("OUT_DIR").expect("cargo sets it"));
    std::fs::copy(manifest.join("memory.x"), out.join("memory.x"))
        .expect("copying firmware/memory.x to OUT_DIR");
    println!("cargo:rustc-link-search={}", out.display());
    println!("cargo:rerun-if-changed=memory.x");
    println!("cargo:rustc-link-arg-bins=-Tlink.x");

    println!("cargo:rerun-if-env-changed=MCU_ADAPT_ASSETS");
    let assets = std::env::var_os("MCU_ADAPT_ASSETS")
        .map(PathBuf::from)
        .unwrap_or_else(|| manifest.join("../../../target/mcu-adapt/assets"));
    for (var, file) in [
        ("MCU_ADAPT_MODEL", "model.lmm"),
        ("MCU_ADAPT_SET", "set.bin"),
    ] {
        let path = assets.join(file);
        let Ok(path) = path.canonicalize() else {
            panic!(
                "{} does not exist: the firmware embeds the model and data set that \
                 `mcu-adapt-host <dir>` writes. Run `cargo xtask test --target \
                 thumbv7em-none-eabihf`, or `cargo run --release -p mcu-adapt-host -- <dir>` \
                 in examples/mcu-adapt and set MCU_ADAPT_ASSETS=<dir>",
                path.display()
            );
        };
        println!("cargo:rerun-if-changed={}", path.display());
        println!("cargo:rustc-env={var}={}", path.display());
    }
}
