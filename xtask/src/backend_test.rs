//! `cargo xtask test --backend <name|library>`: the tests of one backend on the host — its
//! conformance suite first of all. What docs/adding-a-backend.md tells a vendor to run.

use std::path::{Path, PathBuf};

use anyhow::{Context, bail};

use crate::toolchain::{cargo, run as run_cmd};

pub(crate) const HELP: &str = "\
With --backend:
  cargo xtask test --backend <name>           cargo test -p <package of backends/<name>>
                                              (e.g. template, example-npu, x86, cpu-ref)
  cargo xtask test --backend ./libvendor.so   the conformance suite on that plugin library,
                                              through the plugin ABI loader";

/// Is `s` a plugin library rather than a backend name?
fn is_library(s: &str) -> bool {
    let p = Path::new(s);
    s.contains(std::path::MAIN_SEPARATOR)
        || matches!(
            p.extension().and_then(|e| e.to_str()),
            Some("so" | "dylib" | "dll")
        )
}

/// The package name in `dir/Cargo.toml` (`[package] name = "..."`).
fn package_name(dir: &Path) -> anyhow::Result<String> {
    let manifest = dir.join("Cargo.toml");
    let text = std::fs::read_to_string(&manifest)
        .with_context(|| format!("cannot read {}", manifest.display()))?;
    let value: toml::Table = toml::from_str(&text)
        .with_context(|| format!("{} is not valid TOML", manifest.display()))?;
    value
        .get("package")
        .and_then(|p| p.get("name"))
        .and_then(|n| n.as_str())
        .map(str::to_string)
        .with_context(|| format!("{} has no [package] name", manifest.display()))
}

/// The test command for `backend`.
pub(crate) fn run(backend: &str) -> anyhow::Result<()> {
    if is_library(backend) {
        let path = PathBuf::from(backend);
        let path = if path.is_absolute() {
            path
        } else {
            std::env::current_dir()?.join(path)
        };
        if !path.is_file() {
            bail!("plugin library {} does not exist", path.display());
        }
        let mut c = cargo();
        c.args([
            "test",
            "-p",
            "lastmile-backend-plugin",
            "--test",
            "external",
        ])
        .env("LASTMILE_PLUGIN_UNDER_TEST", &path);
        println!("==> conformance suite on plugin {}", path.display());
        return run_cmd(&mut c);
    }
    let root = crate::workspace_root();
    let dir = root.join("backends").join(backend);
    if !dir.join("Cargo.toml").is_file() {
        let known: Vec<String> = std::fs::read_dir(root.join("backends"))
            .map(|d| {
                d.filter_map(|e| e.ok())
                    .filter(|e| e.path().join("Cargo.toml").is_file())
                    .map(|e| e.file_name().to_string_lossy().into_owned())
                    .collect()
            })
            .unwrap_or_default();
        bail!(
            "no backend crate backends/{backend}/ (have: {}); for a plugin library pass its path",
            known.join(", ")
        );
    }
    let package = package_name(&dir)?;
    println!("==> tests of backend {backend} (package {package})");
    run_cmd(cargo().args(["test", "-p", &package]))
}
