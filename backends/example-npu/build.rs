//! Compiles `c/example_npu.c` into shared libraries in `OUT_DIR` with the C compiler the `cc`
//! crate picks for the target: the working plugin and the deliberately broken variants the
//! loader's tests need. Their paths reach the crate as `LASTMILE_EXAMPLE_NPU_*` variables.

use std::path::PathBuf;
use std::process::Command;

/// (environment variable, library file stem, extra defines)
const VARIANTS: &[(&str, &str, &[&str])] = &[
    ("LASTMILE_EXAMPLE_NPU", "lastmile_example_npu", &[]),
    (
        "LASTMILE_EXAMPLE_NPU_BAD_ABI",
        "lastmile_example_npu_bad_abi",
        &["EXAMPLE_NPU_BAD_ABI"],
    ),
    (
        "LASTMILE_EXAMPLE_NPU_NO_ENTRY",
        "lastmile_example_npu_no_entry",
        &["EXAMPLE_NPU_NO_ENTRY"],
    ),
    (
        "LASTMILE_EXAMPLE_NPU_NULL_FORWARD",
        "lastmile_example_npu_null_forward",
        &["EXAMPLE_NPU_NULL_FORWARD"],
    ),
    (
        "LASTMILE_EXAMPLE_NPU_BAD_SIZES",
        "lastmile_example_npu_bad_sizes",
        &["EXAMPLE_NPU_BAD_SIZES"],
    ),
    (
        "LASTMILE_EXAMPLE_NPU_FAIL_CREATE",
        "lastmile_example_npu_fail_create",
        &["EXAMPLE_NPU_FAIL_CREATE"],
    ),
    (
        "LASTMILE_EXAMPLE_NPU_FAIL_PREPARE",
        "lastmile_example_npu_fail_prepare",
        &["EXAMPLE_NPU_FAIL_PREPARE"],
    ),
    (
        "LASTMILE_EXAMPLE_NPU_FAIL_FORWARD",
        "lastmile_example_npu_fail_forward",
        &["EXAMPLE_NPU_FAIL_FORWARD"],
    ),
];

fn main() {
    let manifest = PathBuf::from(std::env::var("CARGO_MANIFEST_DIR").expect("CARGO_MANIFEST_DIR"));
    let out = PathBuf::from(std::env::var("OUT_DIR").expect("OUT_DIR"));
    let source = manifest.join("c/example_npu.c");
    let include = manifest.join("../plugin/include");
    println!("cargo:rerun-if-changed={}", source.display());
    println!(
        "cargo:rerun-if-changed={}",
        include.join("lastmile_backend.h").display()
    );

    let target = std::env::var("TARGET").unwrap_or_default();
    let (prefix, ext) = if target.contains("windows") {
        ("", "dll")
    } else if target.contains("apple") {
        ("lib", "dylib")
    } else {
        ("lib", "so")
    };
    // The C compiler (and its target flags) that `cc` chooses; we only add the flags for a
    // shared library, since `cc::Build::compile` makes static archives.
    let compiler = cc::Build::new()
        .cargo_metadata(false)
        .opt_level(2)
        .pic(true)
        .warnings(true)
        .extra_warnings(true)
        .flag_if_supported("-std=c11")
        .get_compiler();
    for (var, stem, defines) in VARIANTS {
        let lib = out.join(format!("{prefix}{stem}.{ext}"));
        let mut cmd: Command = compiler.to_command();
        cmd.arg("-shared")
            .arg("-fvisibility=hidden")
            .arg("-I")
            .arg(&include);
        for d in *defines {
            cmd.arg(format!("-D{d}"));
        }
        cmd.arg(&source).arg("-o").arg(&lib);
        let status = cmd
            .status()
            .unwrap_or_else(|e| panic!("could not run the C compiler {:?}: {e}", compiler.path()));
        assert!(
            status.success(),
            "compiling {} into {} failed ({status}): {cmd:?}",
            source.display(),
            lib.display()
        );
        println!("cargo:rustc-env={var}={}", lib.display());
    }
}
