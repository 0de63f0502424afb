//! `cargo xtask test --target <triple> [--tier ...]`: the test suites for one target, under
//! qemu-user once per CPU tier, plus the bit-identical training check against the host.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::Instant;

use anyhow::{Context, bail};

use crate::build::{cargo_for, target_dir};
use crate::toolchain::{Kind, Tier, Toolchain, run};

pub(crate) const LONG_HELP: &str = "\
Run the test suites for one target, configured by toolchains/<triple>.toml:

  Linux cross targets (aarch64, armv7): builds the test binaries once, then for every selected
  tier runs them under qemu-user with QEMU_CPU = the tier's CPU model and the tier's
  environment (LASTMILE_NEON_TIER pins the NEON backend to the tier):
    - the [test] per_tier_packages on every tier (the NEON conformance suite and kernel tests);
    - the [test] packages once, on the first selected tier (core, data, train, cpu-ref, ...);
    - the training fingerprint: a short QZO-FF run on the digits whose trained weights' SHA-256
      must equal the host's (cpu-ref on x86_64), bit for bit, on every tier.
  thumbv7em-none-eabihf: a build check of the no_std crates (--no-default-features), then the
  [test.firmware]: examples/mcu-adapt trains a pretrained 16w8a digits-cnn with QZO-FF on a
  Cortex-M4F under qemu-system-arm (mps2-an386, semihosting). Fails unless held-out accuracy
  rises and the trained weights are bit-identical (SHA-256) to the same run on the host's
  reference backend; prints the RAM the firmware measured (static + heap + stack high-water).
  The host: cargo test for the same packages, natively.

Emulated runs use fewer generated cases (the file's [test] env, e.g.
LASTMILE_CONFORMANCE_CASES) and --test-threads from the file; variables already set in your
environment win. --install installs a missing toolchain first (as root).";

/// One line of a fingerprint file: `<backend>/<tier> <scheme> <initial-sha256> <final-sha256>`.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Print {
    who: String,
    scheme: String,
    initial: String,
    trained: String,
}

fn read_prints(path: &Path) -> anyhow::Result<Vec<Print>> {
    let text = std::fs::read_to_string(path).with_context(|| {
        format!(
            "the fingerprint test did not write {} (did it run?)",
            path.display()
        )
    })?;
    let mut v = Vec::new();
    for line in text.lines().filter(|l| !l.trim().is_empty()) {
        let f: Vec<&str> = line.split_whitespace().collect();
        if f.len() != 4 {
            bail!("{}: malformed line {line:?}", path.display());
        }
        v.push(Print {
            who: f[0].into(),
            scheme: f[1].into(),
            initial: f[2].into(),
            trained: f[3].into(),
        });
    }
    if v.is_empty() {
        bail!("{} is empty", path.display());
    }
    Ok(v)
}

fn fingerprint_dir() -> PathBuf {
    target_dir().join("fingerprints")
}

/// Environment for the emulated runs of one tier: file `[test] env`, then the tier's, then
/// `QEMU_CPU`; a variable already set by the user is left alone.
fn tier_env(t: &Toolchain, tier: &Tier) -> BTreeMap<String, String> {
    let mut env = BTreeMap::new();
    for (k, v) in t.test.env.iter().chain(&tier.env) {
        env.insert(k.clone(), v.clone());
    }
    if let Some(cpu) = &tier.qemu_cpu {
        env.insert("QEMU_CPU".into(), cpu.clone());
    }
    env.retain(|k, _| std::env::var_os(k).is_none());
    env
}

fn elapsed(t: Instant) -> String {
    let s = t.elapsed().as_secs_f64();
    if s >= 60.0 {
        format!("{}m{:02}s", s as u64 / 60, s as u64 % 60)
    } else {
        format!("{s:.1}s")
    }
}

/// The host's fingerprint (cpu-ref, native), computed by the same test binary.
fn host_prints(t: &Toolchain) -> anyhow::Result<Option<Vec<Print>>> {
    let Some(fp) = &t.test.fingerprint else {
        return Ok(None);
    };
    let host = Toolchain::load(&crate::toolchain::host_triple())?;
    let file = fingerprint_dir().join("host.txt");
    std::fs::create_dir_all(fingerprint_dir())?;
    let _ = std::fs::remove_file(&file);
    println!("\n==> training fingerprint on the host (cpu-ref, native)");
    let mut c = cargo_for(&host, "test", false);
    c.args(["-p", &fp.package, "--test", &fp.test, "--", "--nocapture"])
        .env("LASTMILE_FINGERPRINT_FILE", &file)
        .env("LASTMILE_FINGERPRINT_BACKENDS", "cpu-ref");
    run(&mut c)?;
    Ok(Some(read_prints(&file)?))
}

/// `cargo xtask test`.
pub(crate) fn run_test(triple: &str, tiers: &str, install: bool) -> anyhow::Result<()> {
    let t = Toolchain::load(triple)?;
    crate::doctor::ensure(&t, install)?;
    let start = Instant::now();
    match t.kind {
        Kind::BareMetal => {
            let mut c = cargo_for(&t, "build", false);
            for p in &t.build.packages {
                c.args(["-p", p]);
            }
            if t.build.no_default_features {
                c.arg("--no-default-features");
            }
            run(&mut c)?;
            println!(
                "\n==> {triple}: build check of {} passed in {} (no_std)",
                t.build.packages.join(", "),
                elapsed(start)
            );
            if let Some(fw) = &t.test.firmware {
                let summary = crate::mcu::run_firmware(&t, fw)?;
                println!("\n==> {triple}: passed in {}", elapsed(start));
                for line in summary {
                    println!("  {line}");
                }
            }
            Ok(())
        }
        Kind::Host => {
            let mut c = cargo_for(&t, "test", false);
            for p in t.test.packages.iter().chain(&t.test.per_tier_packages) {
                c.args(["-p", p]);
            }
            run(&mut c)?;
            println!("\n==> {triple}: tests passed in {}", elapsed(start));
            Ok(())
        }
        Kind::Linux => run_emulated(&t, tiers, start),
    }
}

/// A test executable from `cargo test --no-run --message-format=json`.
#[derive(Debug)]
struct TestExe {
    package: String,
    name: String,
    path: PathBuf,
    /// The package's directory (cargo runs tests there).
    dir: PathBuf,
}

/// Package name from a cargo package id: `path+file:///x/backends/neon#lastmile-backend-neon@0.1.0`
/// or `path+file:///x/crates/lastmile-core#0.1.0`.
fn package_name(id: &str) -> String {
    let (url, frag) = id.split_once('#').unwrap_or((id, ""));
    match frag.split_once('@') {
        Some((name, _)) => name.to_string(),
        None => url.rsplit('/').next().unwrap_or(url).to_string(),
    }
}

/// Builds the test binaries of `packages` and lists them.
fn build_tests(t: &Toolchain, packages: &[&String]) -> anyhow::Result<Vec<TestExe>> {
    let mut c = cargo_for(t, "test", false);
    c.args(["--no-run", "--message-format=json-render-diagnostics"]);
    for p in packages {
        c.args(["-p", p]);
    }
    println!("$ {}", crate::toolchain::shown(&c));
    let out = c
        .stderr(std::process::Stdio::inherit())
        .output()
        .context("could not start cargo")?;
    if !out.status.success() {
        bail!(
            "building the {} test binaries failed ({})",
            t.triple,
            out.status
        );
    }
    let mut exes = Vec::new();
    for line in String::from_utf8_lossy(&out.stdout).lines() {
        let Ok(v) = serde_json::from_str::<serde_json::Value>(line) else {
            continue;
        };
        let (Some(path), Some(id), Some(manifest)) = (
            v["executable"].as_str(),
            v["package_id"].as_str(),
            v["manifest_path"].as_str(),
        ) else {
            continue;
        };
        exes.push(TestExe {
            package: package_name(id),
            name: v["target"]["name"].as_str().unwrap_or("?").to_string(),
            path: path.into(),
            dir: Path::new(manifest)
                .parent()
                .unwrap_or(Path::new("."))
                .to_path_buf(),
        });
    }
    Ok(exes)
}

fn run_emulated(t: &Toolchain, tiers: &str, start: Instant) -> anyhow::Result<()> {
    let selected = t.select_tiers(tiers)?;
    let host = host_prints(t)?;
    let all_packages: Vec<&String> = t
        .test
        .per_tier_packages
        .iter()
        .chain(&t.test.packages)
        .collect();

    // Build every test binary once. The first tier runs `cargo test` over the same package
    // set (so nothing is rebuilt: a smaller set would unify features differently), which
    // adds the doctests; later tiers run the per-tier packages' binaries directly.
    println!("\n==> building the test binaries for {}", t.triple);
    let build_start = Instant::now();
    let exes = build_tests(t, &all_packages)?;
    let build_time = elapsed(build_start);
    let runner = t
        .runner
        .as_ref()
        .map(|r| r.command.clone())
        .unwrap_or_default();

    let threads = t.test.test_threads.unwrap_or(1).to_string();
    let mut summary = Vec::new();
    for (i, tier) in selected.iter().enumerate() {
        let mut env = tier_env(t, tier);
        let packages: Vec<&String> = if i == 0 {
            all_packages.clone()
        } else {
            t.test.per_tier_packages.iter().collect()
        };
        if packages.is_empty() {
            continue;
        }
        println!(
            "\n==> {} tier {} (QEMU_CPU={}): {}",
            t.triple,
            tier.name,
            tier.qemu_cpu.as_deref().unwrap_or("default"),
            packages
                .iter()
                .map(|s| s.as_str())
                .collect::<Vec<_>>()
                .join(", ")
        );
        let tier_start = Instant::now();
        let print_file = fingerprint_dir().join(format!("{}-{}.txt", t.triple, tier.name));
        let fingerprinted = t
            .test
            .fingerprint
            .as_ref()
            .is_some_and(|fp| packages.contains(&&fp.package));
        if let Some(fp) = t.test.fingerprint.as_ref().filter(|_| fingerprinted) {
            std::fs::create_dir_all(fingerprint_dir())?;
            let _ = std::fs::remove_file(&print_file);
            env.insert(
                "LASTMILE_FINGERPRINT_FILE".into(),
                print_file.display().to_string(),
            );
            let backends = if fp.backend == "cpu-ref" {
                "cpu-ref".to_string()
            } else {
                format!("{},cpu-ref", fp.backend)
            };
            env.insert("LASTMILE_FINGERPRINT_BACKENDS".into(), backends);
        }
        if i == 0 {
            let mut c = cargo_for(t, "test", false);
            for p in &packages {
                c.args(["-p", p]);
            }
            c.envs(&env).args(["--", "--test-threads", &threads]);
            run(&mut c).with_context(|| format!("{} tier {}", t.triple, tier.name))?;
        } else {
            let data = std::env::var_os("LASTMILE_DATA")
                .unwrap_or_else(|| crate::workspace_root().join("data").into_os_string());
            for exe in exes.iter().filter(|e| packages.contains(&&e.package)) {
                let Some((program, args)) = runner.split_first() else {
                    bail!("{} has no [runner]", t.triple);
                };
                println!("  {} / {}", exe.package, exe.name);
                let mut c = std::process::Command::new(program);
                c.args(args)
                    .arg(&exe.path)
                    .args(["--test-threads", &threads])
                    .current_dir(&exe.dir)
                    .envs(&env)
                    .env("CARGO_MANIFEST_DIR", &exe.dir)
                    .env("LASTMILE_DATA", &data);
                run(&mut c).with_context(|| {
                    format!(
                        "{} tier {}: {} {}",
                        t.triple, tier.name, exe.package, exe.name
                    )
                })?;
            }
        }
        let mut verdict = String::from("no fingerprint");
        if let (Some(host), true) = (&host, fingerprinted) {
            let target = read_prints(&print_file)?;
            verdict = compare(host, &target, &tier.name)?;
        }
        summary.push((tier.name.clone(), elapsed(tier_start), verdict));
    }
    println!(
        "\n==> {}: all selected tiers passed in {} (test build {build_time})",
        t.triple,
        elapsed(start)
    );
    for (name, time, verdict) in summary {
        println!("  tier {name:<10} {time:>8}   {verdict}");
    }
    Ok(())
}

/// Every target line must have the host's trained weights for its scheme.
fn compare(host: &[Print], target: &[Print], tier: &str) -> anyhow::Result<String> {
    let mut ok = Vec::new();
    for p in target {
        let Some(h) = host.iter().find(|h| h.scheme == p.scheme) else {
            bail!("the host has no {} fingerprint", p.scheme);
        };
        if p.initial != h.initial {
            bail!(
                "tier {tier}: {} {}: the quantized starting model differs from the host's \
                 ({} vs {}): post-training quantization is not portable",
                p.who,
                p.scheme,
                &p.initial[..16.min(p.initial.len())],
                &h.initial[..16.min(h.initial.len())]
            );
        }
        if p.trained != h.trained {
            bail!(
                "tier {tier}: {} {}: trained weights differ from the host's {} \
                 (sha256 {} vs {}): the training run is not bit-identical",
                p.who,
                p.scheme,
                h.who,
                &p.trained[..16.min(p.trained.len())],
                &h.trained[..16.min(h.trained.len())]
            );
        }
        ok.push(format!("{} {}", p.who, p.scheme));
    }
    Ok(format!(
        "trained weights bit-identical to host cpu-ref: {}",
        ok.join(", ")
    ))
}

/// `cargo clippy --target <triple> -p <package> --all-targets -- -D warnings`: code behind
/// `cfg(target_arch)` is invisible to the host's clippy.
pub(crate) fn clippy_cross(triple: &str, package: &str) -> anyhow::Result<()> {
    let t = Toolchain::load(triple)?;
    crate::doctor::ensure(&t, true)?;
    let mut c = cargo_for(&t, "clippy", false);
    c.args(["-p", package, "--all-targets", "--", "-D", "warnings"]);
    run(&mut c)
}

#[cfg(test)]
mod tests {
    use super::package_name;

    #[test]
    fn package_names_from_cargo_ids() {
        assert_eq!(
            package_name("path+file:///w/backends/neon#lastmile-backend-neon@0.1.0"),
            "lastmile-backend-neon"
        );
        assert_eq!(
            package_name("path+file:///w/crates/lastmile-core#0.1.0"),
            "lastmile-core"
        );
    }
}
