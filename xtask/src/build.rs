//! `cargo xtask build --target <triple> [--release]`: a cross build driven by
//! `toolchains/<triple>.toml`, with the stripped artifacts copied to `target/dist/<triple>/`.

use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::{Context, bail};

use crate::toolchain::{Kind, Toolchain, cargo, run};

pub(crate) const LONG_HELP: &str = "\
Cross-build for one target, configured by toolchains/<triple>.toml:

  - checks the rustup target, the Debian packages and the programs it needs (with --install,
    as root, installs what is missing: rustup target add / apt-get install -y)
  - sets CARGO_TARGET_<T>_LINKER, CARGO_TARGET_<T>_RUNNER, CC_<t>, AR_<t> and
    CARGO_TARGET_<T>_RUSTFLAGS from the file
  - builds the file's [build] packages (the `lastmile` CLI for Linux targets; the no_std crates
    with --no-default-features for thumbv7em-none-eabihf)
  - copies the stripped artifacts to target/dist/<triple>/ and prints them with their sizes

Example: cargo xtask build --target aarch64-unknown-linux-gnu --release
then:    qemu-aarch64 -L /usr/aarch64-linux-gnu target/dist/aarch64-unknown-linux-gnu/lastmile backends";

/// The cargo target directory (`$CARGO_TARGET_DIR`, else `<workspace>/target`).
pub(crate) fn target_dir() -> PathBuf {
    match std::env::var_os("CARGO_TARGET_DIR") {
        Some(d) => {
            let d = PathBuf::from(d);
            if d.is_absolute() {
                d
            } else {
                crate::workspace_root().join(d)
            }
        }
        None => crate::workspace_root().join("target"),
    }
}

/// Where cargo puts this target's artifacts for a profile.
pub(crate) fn artifact_dir(t: &Toolchain, release: bool) -> PathBuf {
    let profile = if release { "release" } else { "debug" };
    if t.is_host() {
        target_dir().join(profile)
    } else {
        target_dir().join(&t.triple).join(profile)
    }
}

/// `cargo <subcommand> [--target T] [--release] -p ... [--no-default-features]` with the
/// toolchain's environment. The host builds without `--target`, sharing `target/<profile>`.
pub(crate) fn cargo_for(t: &Toolchain, subcommand: &str, release: bool) -> Command {
    let mut c = cargo();
    c.arg(subcommand);
    if !t.is_host() {
        c.args(["--target", &t.triple]);
    }
    if release {
        c.arg("--release");
    }
    for (k, v) in t.cargo_env() {
        c.env(k, v);
    }
    c
}

fn human(bytes: u64) -> String {
    if bytes >= 1 << 20 {
        format!("{:.1} MiB", bytes as f64 / (1u64 << 20) as f64)
    } else if bytes >= 1 << 10 {
        format!("{:.1} KiB", bytes as f64 / 1024.0)
    } else {
        format!("{bytes} B")
    }
}

/// Strips `src` into `dst` (`strip_debug_only` for libraries, whose symbols must stay).
fn strip_into(t: &Toolchain, src: &Path, dst: &Path, strip_debug_only: bool) -> anyhow::Result<()> {
    let Some(strip) = &t.strip else {
        std::fs::copy(src, dst)
            .with_context(|| format!("copying {} to {}", src.display(), dst.display()))?;
        return Ok(());
    };
    let mut c = Command::new(strip);
    if strip_debug_only {
        c.arg("--strip-debug");
    }
    c.arg("-o").arg(dst).arg(src);
    let out = c.output().with_context(|| {
        format!("could not start {strip} (is it installed? see `cargo xtask doctor`)")
    })?;
    if !out.status.success() {
        bail!(
            "{strip} failed on {}: {}",
            src.display(),
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    Ok(())
}

/// `cargo xtask build`.
pub(crate) fn run_build(triple: &str, release: bool, install: bool) -> anyhow::Result<()> {
    let t = Toolchain::load(triple)?;
    crate::doctor::ensure(&t, install)?;
    let mut c = cargo_for(&t, "build", release);
    for p in &t.build.packages {
        c.args(["-p", p]);
    }
    if t.build.no_default_features {
        c.arg("--no-default-features");
    }
    run(&mut c)?;

    let from = artifact_dir(&t, release);
    let dist = target_dir().join("dist").join(&t.triple);
    std::fs::create_dir_all(&dist).with_context(|| format!("cannot create {}", dist.display()))?;
    let mut produced = Vec::new();
    for bin in &t.build.bins {
        let src = from.join(bin);
        let dst = dist.join(bin);
        if !src.exists() {
            bail!("the build did not produce {}", src.display());
        }
        strip_into(&t, &src, &dst, false)?;
        produced.push((dst, std::fs::metadata(&src)?.len()));
    }
    for lib in &t.build.libs {
        let mut found = false;
        for ext in ["rlib", "a"] {
            let name = format!("lib{lib}.{ext}");
            let src = from.join(&name);
            if src.exists() {
                let dst = dist.join(&name);
                strip_into(&t, &src, &dst, true)?;
                produced.push((dst, std::fs::metadata(&src)?.len()));
                found = true;
            }
        }
        if !found {
            bail!(
                "the build did not produce lib{lib}.rlib in {}",
                from.display()
            );
        }
    }
    let kind = match t.kind {
        Kind::Host => "native",
        Kind::Linux => "cross, Linux",
        Kind::BareMetal => "cross, no_std",
    };
    println!(
        "\n==> {} ({kind}, {}): stripped artifacts in {}",
        t.triple,
        if release { "release" } else { "debug" },
        dist.display()
    );
    for (path, unstripped) in &produced {
        let size = std::fs::metadata(path)?.len();
        println!(
            "  {:<36} {:>10}   (unstripped {})",
            path.file_name().unwrap_or_default().to_string_lossy(),
            human(size),
            human(*unstripped)
        );
    }
    if let (Kind::Linux, Some(r), Some(bin)) = (t.kind, &t.runner, t.build.bins.first()) {
        println!(
            "run it: {} {}/{bin} --help",
            r.command.join(" "),
            dist.display()
        );
    }
    Ok(())
}
