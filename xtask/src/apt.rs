//! The one way xtask installs Debian packages (`sdk xnnpack`, `bindgen`, `data`, and
//! `build|test --install` for cross toolchains): only what is missing, as root, a dry run
//! first, and never anything that would remove a package.

use std::process::Command;

use anyhow::{Context, bail};

use crate::toolchain::{on_path, run};

/// Whether the Debian package `pkg` is installed (`dpkg-query`).
pub(crate) fn installed(pkg: &str) -> bool {
    Command::new("dpkg-query")
        .args(["-W", "-f=${Status}", pkg])
        .output()
        .is_ok_and(|o| String::from_utf8_lossy(&o.stdout).contains("install ok installed"))
}

/// Whether xtask runs as root (`id -u` avoids a libc dependency).
pub(crate) fn is_root() -> bool {
    Command::new("id")
        .arg("-u")
        .output()
        .is_ok_and(|o| o.status.success() && String::from_utf8_lossy(&o.stdout).trim() == "0")
}

/// Installs the Debian packages `debs` that are missing (idempotent; `what` names who
/// needs them in messages): a dry run first (after `apt-get update` if the package lists
/// do not know them), refusing anything that would remove a package. Without apt-get or
/// without root, fails with the command to run.
pub(crate) fn install(what: &str, debs: &[&str]) -> anyhow::Result<()> {
    let missing: Vec<&str> = debs.iter().copied().filter(|p| !installed(p)).collect();
    if missing.is_empty() {
        println!("{what}: {} already installed", debs.join(", "));
        return Ok(());
    }
    if !on_path("apt-get") {
        bail!(
            "{what} needs the Debian packages {} and apt-get is not available (not Debian or Ubuntu?)",
            missing.join(" ")
        );
    }
    if !is_root() {
        bail!(
            "{what} needs the Debian packages {}, and installing them needs root:\n  \
             sudo apt-get update && sudo apt-get install -y --no-install-recommends {}",
            missing.join(", "),
            missing.join(" ")
        );
    }
    let simulate = |update_first: bool| -> anyhow::Result<std::process::Output> {
        if update_first {
            println!("{what}: apt-get update ...");
            run(Command::new("apt-get")
                .args(["update", "-qq"])
                .env("DEBIAN_FRONTEND", "noninteractive"))?;
        }
        Command::new("apt-get")
            .args(["install", "-s", "--no-install-recommends"])
            .args(&missing)
            .output()
            .context("could not run apt-get install -s")
    };
    // Dry run first (after an update if the package lists do not know the packages yet:
    // a fresh machine may have empty lists).
    let mut sim = simulate(false)?;
    if !sim.status.success() {
        sim = simulate(true)?;
    }
    if !sim.status.success() {
        bail!(
            "apt-get cannot install {}: {}",
            missing.join(" "),
            String::from_utf8_lossy(&sim.stderr).trim()
        );
    }
    // Never remove packages behind the user's back: Debian's cross compilers conflict
    // with the `gcc-multilib` metapackage, for one.
    let removals: Vec<String> = String::from_utf8_lossy(&sim.stdout)
        .lines()
        .filter_map(|l| l.strip_prefix("Remv "))
        .map(|l| l.split_whitespace().next().unwrap_or(l).to_string())
        .collect();
    if !removals.is_empty() {
        bail!(
            "installing {} would REMOVE installed packages ({}): a Debian conflict, e.g. \
             gcc-multilib vs a cross gcc (`gcc -m32` keeps working through gcc-12-multilib). \
             xtask never removes packages; if that is acceptable, run:\n  apt-get install -y {}",
            missing.join(" "),
            removals.join(", "),
            missing.join(" ")
        );
    }
    println!("{what}: apt-get install -y {} ...", missing.join(" "));
    run(Command::new("apt-get")
        .args(["install", "-y", "-qq", "--no-install-recommends"])
        .args(&missing)
        .env("DEBIAN_FRONTEND", "noninteractive"))?;
    let still: Vec<&str> = debs.iter().copied().filter(|p| !installed(p)).collect();
    if !still.is_empty() {
        bail!("{} still not installed after apt-get", still.join(", "));
    }
    println!("{what}: installed {}", debs.join(", "));
    Ok(())
}
