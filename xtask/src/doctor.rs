//! `cargo xtask doctor [--target <triple>]`: what each target still needs, and the exact
//! command that installs it. Also the `--install` logic shared by `build` and `test`.

use std::path::Path;
use std::process::Command;

use anyhow::bail;

use crate::toolchain::{Toolchain, known_triples, on_path, run};

pub(crate) const LONG_HELP: &str = "\
For every target in toolchains/ (or just --target), check what a cross build and a qemu run
need and print what is missing with the exact command that installs it:

  - the rustup target (`rustup target add <triple>`)
  - the Debian packages of the toolchain file (`apt-get install -y ...`)
  - the programs the build runs (linker, C compiler, strip, qemu)

Exits non-zero if something is missing. `cargo xtask build|test --install` installs it.";

/// What one target is missing.
#[derive(Debug, Default)]
pub(crate) struct Missing {
    pub rustup_target: Option<String>,
    pub apt: Vec<String>,
    /// (role, program) not on PATH after the packages are accounted for.
    pub programs: Vec<(String, String)>,
}

impl Missing {
    pub(crate) fn is_empty(&self) -> bool {
        self.rustup_target.is_none() && self.apt.is_empty() && self.programs.is_empty()
    }

    /// The commands that fix it, one per line.
    pub(crate) fn commands(&self) -> Vec<String> {
        let mut v = Vec::new();
        if let Some(t) = &self.rustup_target {
            v.push(format!("rustup target add {t}"));
        }
        if !self.apt.is_empty() {
            let sudo = if crate::apt::is_root() { "" } else { "sudo " };
            v.push(format!(
                "{sudo}apt-get update && {sudo}apt-get install -y {}",
                self.apt.join(" ")
            ));
        }
        v
    }
}

fn installed_rustup_targets() -> Vec<String> {
    Command::new("rustup")
        .args(["target", "list", "--installed"])
        .current_dir(crate::workspace_root()) // the pinned toolchain
        .output()
        .map(|o| {
            String::from_utf8_lossy(&o.stdout)
                .lines()
                .map(|l| l.trim().to_string())
                .collect()
        })
        .unwrap_or_default()
}

/// What `t` is missing on this machine.
pub(crate) fn check(t: &Toolchain) -> Missing {
    let mut m = Missing::default();
    if !installed_rustup_targets().contains(&t.rustup_target) {
        m.rustup_target = Some(t.rustup_target.clone());
    }
    m.apt = t
        .apt_packages
        .iter()
        .filter(|p| !crate::apt::installed(p))
        .cloned()
        .collect();
    // Programs count as missing only when no missing package would bring them.
    if m.apt.is_empty() {
        m.programs = t
            .programs()
            .into_iter()
            .filter(|(_, p)| !on_path(p))
            .map(|(r, p)| (r.to_string(), p.to_string()))
            .collect();
        if let Some(root) = t.sysroot.as_deref().filter(|r| !Path::new(r).is_dir()) {
            m.programs
                .push(("sysroot (cross libc)".into(), root.to_string()));
        }
    }
    m
}

/// Fails with the install commands if `t` is missing something; with `install`, installs
/// it first (root only for apt), idempotently, saying what it did.
pub(crate) fn ensure(t: &Toolchain, install: bool) -> anyhow::Result<()> {
    let m = check(t);
    if m.is_empty() {
        return Ok(());
    }
    if !install {
        bail!(
            "the {} toolchain is incomplete:\n{}\ninstall it with:\n  {}\n(or rerun with --install, as root)",
            t.triple,
            describe(&m),
            m.commands().join("\n  ")
        );
    }
    if let Some(target) = &m.rustup_target {
        println!("==> installing the rustup target {target}");
        run(Command::new("rustup")
            .args(["target", "add", target])
            .current_dir(crate::workspace_root()))?;
    }
    if !m.apt.is_empty() {
        println!(
            "==> installing Debian packages for {}: {}",
            t.triple,
            m.apt.join(" ")
        );
        let debs: Vec<&str> = m.apt.iter().map(String::as_str).collect();
        crate::apt::install(&format!("the {} toolchain", t.triple), &debs)?;
    }
    let after = check(t);
    if !after.is_empty() {
        bail!(
            "{} is still incomplete after installing:\n{}",
            t.triple,
            describe(&after)
        );
    }
    println!("==> the {} toolchain is complete", t.triple);
    Ok(())
}

fn describe(m: &Missing) -> String {
    let mut lines = Vec::new();
    if let Some(t) = &m.rustup_target {
        lines.push(format!("  missing rustup target: {t}"));
    }
    if !m.apt.is_empty() {
        lines.push(format!("  missing Debian packages: {}", m.apt.join(", ")));
    }
    for (role, p) in &m.programs {
        lines.push(format!("  missing {role}: {p} is not installed"));
    }
    lines.join("\n")
}

/// `cargo xtask doctor`.
pub(crate) fn run_doctor(target: Option<&str>) -> anyhow::Result<()> {
    let triples = match target {
        Some(t) => vec![t.to_string()],
        None => known_triples(),
    };
    let mut incomplete = Vec::new();
    for triple in &triples {
        let t = Toolchain::load(triple)?;
        let m = check(&t);
        if m.is_empty() {
            println!("ok       {triple:<32} {}", t.description);
        } else {
            println!("MISSING  {triple:<32} {}", t.description);
            println!("{}", describe(&m));
            for c in m.commands() {
                println!("  fix: {c}");
            }
            if !m.programs.is_empty() && m.apt.is_empty() {
                println!(
                    "  fix: the packages are installed but the programs are not on PATH; check PATH"
                );
            }
            incomplete.push(triple.clone());
        }
    }
    if !incomplete.is_empty() {
        bail!(
            "{} target(s) incomplete: {} (or run `cargo xtask build|test --target <t> --install` as root)",
            incomplete.len(),
            incomplete.join(", ")
        );
    }
    println!("all {} target(s) ready", triples.len());
    Ok(())
}
