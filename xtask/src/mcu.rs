//! The bare-metal part of `cargo xtask test`: train on a microcontroller under qemu-system and
//! check the result against the host.
//!
//! For a toolchain file with `[test.firmware]` (thumbv7em-none-eabihf: `examples/mcu-adapt`):
//!
//! 0. run the firmware workspace's host tests (`cargo test --workspace --exclude <firmware>`:
//!    the shared crate's set format and the DSP kernel table under the conformance suite);
//! 1. build and run the host package: it writes the firmware's inputs (a pretrained 16w8a model
//!    file and a labelled set) to `target/<workspace name>/assets/` and runs the same adaptation
//!    on the host with the reference backend, printing its result line;
//! 2. build the firmware for the target with `MCU_ADAPT_ASSETS` pointing at those files (they
//!    are `include_bytes!`-ed into flash);
//! 3. run it under the file's `[runner]` (qemu-system-arm, semihosting), with a timeout;
//! 4. require: exit code 0, held-out accuracy above the pretrained baseline, the same starting
//!    weights and **bit-identical trained weights** (SHA-256) as the host run — in fact the
//!    whole result line (accuracies, losses, counts) must be identical — and report the RAM
//!    the firmware measured against the 256 KiB budget.

use std::collections::BTreeMap;
use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use anyhow::{Context, bail};

use crate::build::target_dir;
use crate::toolchain::{Firmware, Toolchain, cargo, run, shown};

/// Prefix of the result line both runs print (`mcu_adapt::RESULT_TAG`).
const RESULT_TAG: &str = "mcu-adapt result:";
/// Prefix of the firmware's RAM line.
const RAM_TAG: &str = "mcu-adapt ram:";
/// Prefix of the DSP kernel check's line (`mcu_adapt::DSP_TAG`).
const DSP_TAG: &str = "mcu-adapt dsp:";

/// `key=value` fields after `tag` on the last line that starts with it.
fn fields(output: &str, tag: &str) -> Option<BTreeMap<String, String>> {
    let line = output
        .lines()
        .rev()
        .find_map(|l| l.trim().strip_prefix(tag))?;
    Some(
        line.split_whitespace()
            .filter_map(|f| f.split_once('='))
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect(),
    )
}

fn field<'a>(f: &'a BTreeMap<String, String>, key: &str, who: &str) -> anyhow::Result<&'a str> {
    f.get(key)
        .map(String::as_str)
        .with_context(|| format!("the {who} result line has no '{key}=' field"))
}

/// `C/N` → (C, N).
fn fraction(s: &str) -> anyhow::Result<(u64, u64)> {
    let (c, n) = s
        .split_once('/')
        .with_context(|| format!("'{s}' is not correct/total"))?;
    Ok((c.parse()?, n.parse()?))
}

fn number(f: &BTreeMap<String, String>, key: &str) -> anyhow::Result<u64> {
    field(f, key, "firmware RAM")?
        .parse()
        .with_context(|| format!("RAM field {key} is not a number"))
}

fn percent((c, n): (u64, u64)) -> f64 {
    if n == 0 {
        0.0
    } else {
        100.0 * c as f64 / n as f64
    }
}

/// The checks of step 4 on the two outputs; returns the summary line.
fn verdict(host: &str, target: &str) -> anyhow::Result<String> {
    let h = fields(host, RESULT_TAG)
        .with_context(|| format!("the host run printed no '{RESULT_TAG}' line"))?;
    let t = fields(target, RESULT_TAG)
        .with_context(|| format!("the firmware printed no '{RESULT_TAG}' line"))?;
    let before = fraction(field(&t, "before", "firmware")?)?;
    let after = fraction(field(&t, "after", "firmware")?)?;
    if after.0 <= before.0 {
        bail!(
            "on the MCU, adaptation did not raise accuracy above the pretrained baseline: \
             {}/{} -> {}/{}",
            before.0,
            before.1,
            after.0,
            after.1
        );
    }
    let short = |s: &str| s.chars().take(16).collect::<String>();
    let (hi, ti) = (
        field(&h, "initial_sha256", "host")?,
        field(&t, "initial_sha256", "firmware")?,
    );
    if hi != ti {
        bail!(
            "the firmware started from different weights than the host (sha256 {} vs {}): \
             the model file was not read identically",
            short(ti),
            short(hi)
        );
    }
    let (hw, tw) = (
        field(&h, "trained_sha256", "host")?,
        field(&t, "trained_sha256", "firmware")?,
    );
    if hw != tw {
        bail!(
            "trained weights differ: firmware sha256 {} vs host cpu-ref {}: the MCU training \
             run is not bit-identical to the host's",
            short(tw),
            short(hw)
        );
    }
    let differing: Vec<String> = h
        .keys()
        .chain(t.keys())
        .filter(|k| h.get(*k) != t.get(*k))
        .map(|k| {
            format!(
                "{k}: firmware {} vs host {}",
                t.get(k).map_or("-", String::as_str),
                h.get(k).map_or("-", String::as_str)
            )
        })
        .collect();
    if !differing.is_empty() {
        bail!(
            "same trained weights, but the result lines differ: {}",
            differing.join("; ")
        );
    }
    Ok(format!(
        "accuracy {:.2}% -> {:.2}% on {} held-out samples after {} steps ({} forward calls); \
         trained weights bit-identical to the host cpu-ref run (sha256 {})",
        percent(before),
        percent(after),
        before.1,
        field(&t, "steps", "firmware")?,
        field(&t, "forwards", "firmware")?,
        short(tw)
    ))
}

/// The DSP kernel check: the firmware must have run the `smlad` tier and found every output
/// code identical to cpu-ref's (a mismatch makes it print an error and exit non-zero).
fn dsp_summary(target: &str) -> anyhow::Result<String> {
    let d = fields(target, DSP_TAG)
        .with_context(|| format!("the firmware printed no '{DSP_TAG}' line"))?;
    let tier = field(&d, "tier", "firmware DSP")?;
    if tier != "smlad" {
        bail!("the firmware's DSP check ran tier '{tier}', not the SMLAD asm! kernels");
    }
    Ok(format!(
        "DSP kernels (SMLAD via asm!, backend {}): {} output codes on the MCU identical to \
         cpu-ref's (test set, starting and trained weights)",
        field(&d, "backend", "firmware DSP")?,
        field(&d, "codes", "firmware DSP")?
    ))
}

/// The firmware's RAM figures, as a sentence.
fn ram_summary(target: &str) -> anyhow::Result<String> {
    let r = fields(target, RAM_TAG)
        .with_context(|| format!("the firmware printed no '{RAM_TAG}' line"))?;
    let total = number(&r, "total")?;
    let budget = number(&r, "budget")?;
    Ok(format!(
        "RAM measured on the MCU: {total} B = static {} B (.data {} + .bss {}) + heap {} B \
         (arena high-water; allocator peak {} B while loading, preparing and evaluating, \
         {} B while training, {} B while hashing) + stack {} B (high-water); \
         {:.1}% of the {} KiB budget, {} B to spare",
        number(&r, "static")?,
        number(&r, "data")?,
        number(&r, "bss")?,
        number(&r, "heap")?,
        number(&r, "heap_setup")?,
        number(&r, "heap_training")?,
        number(&r, "heap_wrapup")?,
        number(&r, "stack")?,
        100.0 * total as f64 / budget as f64,
        budget / 1024,
        budget.saturating_sub(total)
    ))
}

fn elapsed(t: Instant) -> String {
    format!("{:.1}s", t.elapsed().as_secs_f64())
}

/// Runs `cmd` with stdout echoed line by line and returned; kills it after `timeout`.
fn run_captured(cmd: &mut Command, timeout: Duration) -> anyhow::Result<(bool, String)> {
    let s = shown(cmd);
    println!("$ {s}");
    let mut child = cmd
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .with_context(|| format!("could not start `{s}`"))?;
    let stdout = child.stdout.take().context("no stdout pipe")?;
    let (tx, rx) = mpsc::channel();
    let reader = std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines() {
            let Ok(line) = line else { break };
            if tx.send(line).is_err() {
                break;
            }
        }
    });
    let deadline = Instant::now() + timeout;
    let mut out = String::new();
    loop {
        match rx.recv_timeout(Duration::from_millis(200)) {
            Ok(line) => {
                println!("{line}");
                out.push_str(&line);
                out.push('\n');
            }
            Err(mpsc::RecvTimeoutError::Disconnected) => break,
            Err(mpsc::RecvTimeoutError::Timeout) => {}
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            bail!(
                "`{s}` did not finish within {} s and was killed (a hang, or a fault the \
                 firmware could not report)",
                timeout.as_secs()
            );
        }
    }
    let _ = reader.join();
    let status = child.wait().with_context(|| format!("waiting for `{s}`"))?;
    Ok((status.success(), out))
}

/// Steps 1-4 for `t`'s `[test.firmware]`; returns the summary lines.
pub(crate) fn run_firmware(t: &Toolchain, fw: &Firmware) -> anyhow::Result<Vec<String>> {
    let ws = crate::workspace_root().join(&fw.workspace);
    let name = Path::new(&fw.workspace)
        .file_name()
        .context("[test.firmware] workspace has no final path component")?;
    let tdir: PathBuf = target_dir().join(name);
    let assets = tdir.join("assets");
    let manifest = ws.join("Cargo.toml");
    if !manifest.is_file() {
        bail!(
            "[test.firmware] workspace {}: {} does not exist",
            fw.workspace,
            manifest.display()
        );
    }
    let cargo_in_ws = || {
        let mut c = cargo();
        c.current_dir(&ws)
            .arg("build")
            .arg("--release")
            .arg("--target-dir")
            .arg(&tdir);
        c
    };

    println!(
        "\n==> {}: host tests of the firmware workspace ({})",
        t.triple, fw.workspace
    );
    let start = Instant::now();
    let mut c = cargo();
    c.current_dir(&ws)
        .args(["test", "--release", "--workspace", "--exclude", &fw.package])
        .arg("--target-dir")
        .arg(&tdir);
    run(&mut c)?;
    let test_time = elapsed(start);

    println!("\n==> {}: host reference ({})", t.triple, fw.host_package);
    let start = Instant::now();
    run(cargo_in_ws().args(["-p", &fw.host_package]))?;
    let host_bin = tdir.join("release").join(&fw.host_package);
    let (ok, host_out) = run_captured(
        Command::new(&host_bin).arg(&assets),
        Duration::from_secs(fw.timeout_secs),
    )?;
    if !ok {
        bail!(
            "the host reference run `{} {}` failed (its error is above)",
            host_bin.display(),
            assets.display()
        );
    }
    let host_time = elapsed(start);

    println!("\n==> {}: firmware ({})", t.triple, fw.package);
    let start = Instant::now();
    let mut c = cargo_in_ws();
    c.args(["-p", &fw.package, "--target", &t.triple])
        .envs(t.cargo_env())
        .env("MCU_ADAPT_ASSETS", &assets);
    run(&mut c)?;
    let build_time = elapsed(start);
    let elf = tdir.join(&t.triple).join("release").join(&fw.package);

    let runner = t
        .runner
        .as_ref()
        .map(|r| r.command.clone())
        .unwrap_or_default();
    let Some((program, args)) = runner.split_first() else {
        bail!("{} has [test.firmware] but no [runner]", t.triple);
    };
    println!("\n==> {}: training on the MCU under {program}", t.triple);
    let start = Instant::now();
    let (ok, target_out) = run_captured(
        Command::new(program).args(args).arg(&elf),
        Duration::from_secs(fw.timeout_secs),
    )?;
    let run_time = elapsed(start);
    if !ok {
        let reason = target_out
            .lines()
            .rev()
            .find(|l| l.contains("error:"))
            .unwrap_or("no error line; see the output above");
        bail!("the firmware failed under {program} (semihosting exit code non-zero): {reason}");
    }
    let result = verdict(&host_out, &target_out)?;
    let ram = ram_summary(&target_out)?;
    let dsp = dsp_summary(&target_out)?;
    Ok(vec![
        format!(
            "firmware: {result} (host tests {test_time}, host reference {host_time}, firmware \
             build {build_time}, emulated run {run_time})"
        ),
        ram,
        dsp,
    ])
}

#[cfg(test)]
mod tests {
    use super::*;

    const HOST: &str = "mcu-adapt: before ...\n\
        mcu-adapt result: before=10/100 after=40/100 loss_before=2.0 loss_after=1.0 steps=5 \
        forwards=30 initial_sha256=aa trained_sha256=bb\n";

    #[test]
    fn identical_runs_pass_and_differences_fail() {
        let ok = verdict(HOST, HOST).unwrap();
        assert!(ok.contains("10.00% -> 40.00%"), "{ok}");
        let weights = HOST.replace("trained_sha256=bb", "trained_sha256=bc");
        assert!(
            verdict(HOST, &weights)
                .unwrap_err()
                .to_string()
                .contains("not bit-identical")
        );
        let loss = HOST.replace("loss_after=1.0", "loss_after=1.1");
        assert!(
            verdict(HOST, &loss)
                .unwrap_err()
                .to_string()
                .contains("loss_after")
        );
        let start = HOST.replace("initial_sha256=aa", "initial_sha256=ab");
        assert!(
            verdict(HOST, &start)
                .unwrap_err()
                .to_string()
                .contains("different weights")
        );
        let flat = HOST.replace("after=40/100", "after=10/100");
        assert!(
            verdict(&flat, &flat)
                .unwrap_err()
                .to_string()
                .contains("did not raise")
        );
        assert!(verdict(HOST, "mcu-adapt: error: panic").is_err());
    }

    #[test]
    fn ram_line_is_summarized() {
        let line = "mcu-adapt ram: static=112 data=0 bss=112 heap=57328 heap_setup=1 \
                    heap_training=2 heap_wrapup=3 stack=5076 total=62516 budget=262144";
        let s = ram_summary(line).unwrap();
        assert!(s.contains("62516 B") && s.contains("23.8%"), "{s}");
        assert!(ram_summary("mcu-adapt ram: total=1").is_err());
    }

    #[test]
    fn dsp_line_must_name_the_smlad_tier() {
        let ok = "mcu-adapt dsp: backend=cortex-m-dsp tier=smlad codes=7180 identical to cpu-ref";
        assert!(dsp_summary(ok).unwrap().contains("7180 output codes"));
        let host = ok.replace("tier=smlad", "tier=smlad-portable");
        assert!(dsp_summary(&host).is_err());
        assert!(dsp_summary("mcu-adapt: error: DSP kernel path: differs").is_err());
    }
}
