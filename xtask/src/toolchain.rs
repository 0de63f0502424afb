//! `toolchains/<triple>.toml`: what a target needs and how to build and run for it.
//!
//! The schema is documented in `toolchains/README.md`; [`Toolchain`] is its executable form
//! (unknown keys are errors, so a typo cannot silently drop a setting).

use std::collections::BTreeMap;
use std::ffi::OsString;
use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::{Context, bail};
use serde::Deserialize;

/// What kind of target a file describes.
#[derive(Clone, Copy, Debug, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "kebab-case")]
pub(crate) enum Kind {
    /// The machine xtask runs on: native build, native tests.
    Host,
    /// A hosted Linux target: cross-linked, tests run under qemu-user.
    Linux,
    /// No OS (`no_std`): `test` is a build check of the libraries, plus the `[test.firmware]`
    /// run under qemu-system when the file has one.
    BareMetal,
}

/// One `toolchains/<triple>.toml`.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct Toolchain {
    pub triple: String,
    pub description: String,
    pub kind: Kind,
    pub rustup_target: String,
    #[serde(default)]
    pub apt_packages: Vec<String>,
    /// Linker for the target (`CARGO_TARGET_<T>_LINKER`); `None` = rustc's default (rust-lld).
    pub linker: Option<String>,
    /// C compiler for `cc`-built code (`CC_<t>`).
    pub cc: Option<String>,
    /// Archiver for `cc`-built code (`AR_<t>`).
    pub ar: Option<String>,
    /// Strips the artifacts copied to `target/dist/<triple>/`.
    pub strip: Option<String>,
    /// Disassembler (`cargo xtask asm-report`).
    pub objdump: Option<String>,
    /// The cross libc root (informational; the runner passes it to qemu with `-L`).
    pub sysroot: Option<String>,
    /// Extra rustc flags for target artifacts (`CARGO_TARGET_<T>_RUSTFLAGS`).
    #[serde(default)]
    pub rustflags: Vec<String>,
    pub runner: Option<Runner>,
    pub build: BuildSpec,
    #[serde(default)]
    pub test: TestSpec,
    pub tiers: Vec<Tier>,
}

/// `[runner]`: the emulator that runs target binaries on this host.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct Runner {
    /// Program and arguments; the binary to run is appended (cargo's runner convention).
    pub command: Vec<String>,
}

/// `[build]`: what `cargo xtask build` builds and copies to `target/dist/<triple>/`.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct BuildSpec {
    pub packages: Vec<String>,
    #[serde(default)]
    pub no_default_features: bool,
    /// Binaries to copy (Linux targets).
    #[serde(default)]
    pub bins: Vec<String>,
    /// Library crate names whose `lib<name>.rlib` / `.a` to copy (no_std targets).
    #[serde(default)]
    pub libs: Vec<String>,
}

/// `[test]`: what `cargo xtask test` runs.
#[derive(Clone, Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct TestSpec {
    /// Run once (under the first tier's CPU model).
    #[serde(default)]
    pub packages: Vec<String>,
    /// Run once per tier.
    #[serde(default)]
    pub per_tier_packages: Vec<String>,
    /// The bit-identical training check.
    pub fingerprint: Option<Fingerprint>,
    /// `--test-threads` for emulated runs.
    pub test_threads: Option<u32>,
    /// Extra environment for every test run of this target.
    #[serde(default)]
    pub env: BTreeMap<String, String>,
    /// Bare-metal targets: the firmware that trains on the target under qemu-system.
    pub firmware: Option<Firmware>,
}

/// `[test.firmware]`: a firmware in its own cargo workspace that runs a training job under
/// the `[runner]` (qemu-system) and whose result must match a host reference run
/// (`cargo xtask test`, see `xtask/src/mcu.rs`).
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct Firmware {
    /// The firmware's cargo workspace, relative to the repository root.
    pub workspace: String,
    /// Host binary package: `<bin> <assets-dir>` writes the firmware's inputs there, runs the
    /// reference and prints the result line.
    pub host_package: String,
    /// Firmware binary package (built for the target, run under the runner).
    pub package: String,
    /// Seconds the emulated run may take before it is killed and the test fails.
    pub timeout_secs: u64,
}

/// A test that trains a model and writes the SHA-256 of its trained weights to
/// `$LASTMILE_FINGERPRINT_FILE`, one line per backend of `$LASTMILE_FINGERPRINT_BACKENDS`.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct Fingerprint {
    /// Package holding the test.
    pub package: String,
    /// The integration test (`--test <name>`).
    pub test: String,
    /// The backend the target run uses (the host run always uses `cpu-ref`).
    pub backend: String,
}

/// `[[tiers]]`: one CPU tier and the qemu model that provides it.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct Tier {
    pub name: String,
    /// `$QEMU_CPU` for this tier's runs.
    pub qemu_cpu: Option<String>,
    /// Extra environment for this tier's runs.
    #[serde(default)]
    pub env: BTreeMap<String, String>,
}

/// `toolchains/` in the workspace.
pub(crate) fn dir() -> PathBuf {
    crate::workspace_root().join("toolchains")
}

/// Every triple with a toolchain file, sorted.
pub(crate) fn known_triples() -> Vec<String> {
    let mut v: Vec<String> = std::fs::read_dir(dir())
        .into_iter()
        .flatten()
        .flatten()
        .filter_map(|e| {
            let name = e.file_name().into_string().ok()?;
            name.strip_suffix(".toml").map(str::to_string)
        })
        .collect();
    v.sort();
    v
}

/// The triple of the machine xtask runs on (xtask is always built for the host).
pub(crate) fn host_triple() -> String {
    // `std::env::consts` has no triple; the toolchain files name the host explicitly.
    format!("{}-unknown-linux-gnu", std::env::consts::ARCH)
}

impl Toolchain {
    /// Loads `toolchains/<triple>.toml`.
    pub(crate) fn load(triple: &str) -> anyhow::Result<Toolchain> {
        let path = dir().join(format!("{triple}.toml"));
        if !path.exists() {
            bail!(
                "no toolchain file for '{triple}': {} does not exist (known: {})",
                path.display(),
                known_triples().join(", ")
            );
        }
        Self::load_path(&path)
    }

    pub(crate) fn load_path(path: &Path) -> anyhow::Result<Toolchain> {
        let text = std::fs::read_to_string(path)
            .with_context(|| format!("cannot read {}", path.display()))?;
        let t: Toolchain =
            toml::from_str(&text).with_context(|| format!("{} is malformed", path.display()))?;
        let stem = path.file_stem().and_then(|s| s.to_str()).unwrap_or("");
        if t.triple != stem {
            bail!(
                "{}: triple = \"{}\" does not match the file name",
                path.display(),
                t.triple
            );
        }
        if t.tiers.is_empty() {
            bail!("{}: needs at least one [[tiers]] entry", path.display());
        }
        Ok(t)
    }

    /// `AARCH64_UNKNOWN_LINUX_GNU` (cargo's `CARGO_TARGET_<T>_*` spelling).
    pub(crate) fn env_upper(&self) -> String {
        self.triple.to_uppercase().replace(['-', '.'], "_")
    }

    /// `aarch64_unknown_linux_gnu` (the `cc` crate's `CC_<t>` spelling).
    pub(crate) fn env_lower(&self) -> String {
        self.triple.replace(['-', '.'], "_")
    }

    pub(crate) fn is_host(&self) -> bool {
        self.kind == Kind::Host
    }

    /// Environment for every cargo invocation for this target: linker, runner, C toolchain,
    /// rustflags. (Empty for the host: a native build needs none of it.)
    pub(crate) fn cargo_env(&self) -> Vec<(String, OsString)> {
        let mut env = Vec::new();
        if self.is_host() {
            return env;
        }
        let up = self.env_upper();
        let lo = self.env_lower();
        if let Some(l) = &self.linker {
            env.push((format!("CARGO_TARGET_{up}_LINKER"), l.into()));
        }
        if let Some(r) = &self.runner {
            env.push((
                format!("CARGO_TARGET_{up}_RUNNER"),
                r.command.join(" ").into(),
            ));
        }
        if let Some(cc) = &self.cc {
            env.push((format!("CC_{lo}"), cc.into()));
        }
        if let Some(ar) = &self.ar {
            env.push((format!("AR_{lo}"), ar.into()));
        }
        if !self.rustflags.is_empty() {
            env.push((
                format!("CARGO_TARGET_{up}_RUSTFLAGS"),
                self.rustflags.join(" ").into(),
            ));
        }
        env
    }

    /// The tiers selected by `--tier` (`all` = every tier, in file order).
    pub(crate) fn select_tiers(&self, which: &str) -> anyhow::Result<Vec<&Tier>> {
        if which == "all" {
            return Ok(self.tiers.iter().collect());
        }
        let mut out = Vec::new();
        for name in which.split(',') {
            match self.tiers.iter().find(|t| t.name == name) {
                Some(t) => out.push(t),
                None => bail!(
                    "{} has no tier '{name}' (tiers: {}, or all)",
                    self.triple,
                    self.tiers
                        .iter()
                        .map(|t| t.name.as_str())
                        .collect::<Vec<_>>()
                        .join(", ")
                ),
            }
        }
        Ok(out)
    }

    /// Programs this toolchain runs (linker, strip, qemu, ...), for `doctor`.
    pub(crate) fn programs(&self) -> Vec<(&'static str, &str)> {
        let mut v = Vec::new();
        if !self.is_host() {
            if let Some(l) = &self.linker {
                v.push(("linker", l.as_str()));
            }
            if let Some(c) = &self.cc
                && self.cc != self.linker
            {
                v.push(("cc", c.as_str()));
            }
            if let Some(a) = &self.ar {
                v.push(("ar", a.as_str()));
            }
        }
        if let Some(s) = &self.strip {
            v.push(("strip", s.as_str()));
        }
        if let Some(r) = self.runner.as_ref().and_then(|r| r.command.first()) {
            v.push(("runner", r.as_str()));
        }
        v
    }
}

/// Whether `program` is on `PATH` (or is an existing path).
pub(crate) fn on_path(program: &str) -> bool {
    if program.contains('/') {
        return Path::new(program).is_file();
    }
    std::env::var_os("PATH").is_some_and(|paths| {
        std::env::split_paths(&paths).any(|d| {
            let p = d.join(program);
            p.is_file()
        })
    })
}

/// A `Command` shown as the user would type it.
pub(crate) fn shown(cmd: &Command) -> String {
    let mut s = String::new();
    for (k, v) in cmd.get_envs() {
        if let Some(v) = v {
            s.push_str(&format!("{}={} ", k.to_string_lossy(), v.to_string_lossy()));
        }
    }
    s.push_str(&cmd.get_program().to_string_lossy());
    for a in cmd.get_args() {
        let a = a.to_string_lossy();
        if a.contains(' ') || a.is_empty() {
            s.push_str(&format!(" '{a}'"));
        } else {
            s.push(' ');
            s.push_str(&a);
        }
    }
    s
}

/// Runs `cmd`, echoing it; fails naming the command.
pub(crate) fn run(cmd: &mut Command) -> anyhow::Result<()> {
    let s = shown(cmd);
    println!("$ {s}");
    let status = cmd
        .status()
        .with_context(|| format!("could not start `{s}`"))?;
    if !status.success() {
        bail!("`{s}` failed ({status})");
    }
    Ok(())
}

/// The cargo to run: `$CARGO` (set by `cargo run`), else `cargo`.
pub(crate) fn cargo() -> Command {
    let mut c = Command::new(std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into()));
    c.current_dir(crate::workspace_root());
    c
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_toolchain_file_parses() {
        let triples = known_triples();
        assert!(triples.len() >= 4, "{triples:?}");
        for t in triples {
            let tc = Toolchain::load(&t).unwrap();
            assert_eq!(tc.triple, t);
            if tc.kind == Kind::Linux {
                assert!(
                    tc.runner.is_some(),
                    "{t}: a Linux cross target needs a runner"
                );
                assert!(tc.linker.is_some(), "{t}: needs a linker");
                assert!(!tc.build.bins.is_empty(), "{t}");
            }
        }
    }

    #[test]
    fn env_names_follow_cargo_and_cc() {
        let t = Toolchain::load("aarch64-unknown-linux-gnu").unwrap();
        let env = t.cargo_env();
        let keys: Vec<&str> = env.iter().map(|(k, _)| k.as_str()).collect();
        assert!(keys.contains(&"CARGO_TARGET_AARCH64_UNKNOWN_LINUX_GNU_LINKER"));
        assert!(keys.contains(&"CARGO_TARGET_AARCH64_UNKNOWN_LINUX_GNU_RUNNER"));
        assert!(keys.contains(&"CC_aarch64_unknown_linux_gnu"));
        assert_eq!(t.select_tiers("all").unwrap().len(), 3);
        assert_eq!(
            t.select_tiers("dotprod").unwrap()[0].qemu_cpu.as_deref(),
            Some("cortex-a76")
        );
        assert!(t.select_tiers("avx2").is_err());
    }
}
