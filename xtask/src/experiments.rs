//! `cargo xtask experiments [--quick | --medium | --full]`: the paper's experiments on real
//! data (crates/lastmile-experiments), in release mode.

use std::path::PathBuf;
use std::process::Command;

use anyhow::{Context, bail};

pub(crate) const LONG_HELP: &str = "\
Run the paper's experiments on real data (MNIST, Fashion-MNIST; `cargo xtask data` fetches them)
and on SYNTHETIC speech (espeak-ng; --medium/--full generate it first if missing) with fixed seeds, and write a Markdown report with tables (mean ± std over 3 seeds), PNG plots
and raw JSON:

  1. cross-domain few-shot transfer MNIST -> Fashion-MNIST (zero-shot, BP, FF fp32, QZO-FF 16w8a/8w8a)
  2. OOD adaptation to synthetic corruptions of MNIST (depth, sparse update)
  3. keyword spotting on SYNTHETIC speech: a DS-CNN (kws-dscnn) BP-pretrained on log-mels of
     espeak-ng source speakers, adapted to unseen accents/voices with K clips per word
     (zero-shot, BP-LP/FT fp32, QZO-FF 16w8a LP/FT, QZO-FF 8w8a FT); --medium and --full only
  4. ablations (m, sign-SPSA vs SPSA, sharpness-aware, kernel-norm, rounding, random init)
  5. memory of one step (BP vs FF, FT vs LP, fp32 vs 16w8a; measured and analytic)
  6. loss landscape with BP and QZO-FF trajectories
  7. the claims table of paper-notes §9

--quick   (default) a few minutes; writes target/experiments-quick/ and ASSERTS the direction of
          the central claims (FF-LP 16w8a beats zero-shot; 16w8a within 3 points of FF fp32;
          QZO-FF scratch memory below BP's), failing otherwise. Part of `cargo xtask ci`.
--medium  ~15 minutes, all sections, writes docs/ (labelled as a medium budget).
--full    ~40 minutes on 2 cores, writes docs/results.md, docs/img/results-*.png and
          docs/results/experiments.json.

Builds `lastmile-experiments` with the release profile (sharing cargo's release artifacts).";

/// Budget preset.
#[derive(Clone, Copy, Debug)]
pub(crate) enum Preset {
    Quick,
    Medium,
    Full,
}

/// Builds and runs `lastmile-experiments`; `data` overrides the data directory
/// (default `$LASTMILE_DATA`, else `<workspace>/data`).
pub(crate) fn run(
    preset: Preset,
    out: Option<PathBuf>,
    data: Option<PathBuf>,
) -> anyhow::Result<()> {
    let root = crate::workspace_root();
    let cargo = std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
    let status = Command::new(&cargo)
        .args(["build", "--release", "-q", "-p", "lastmile-experiments"])
        .current_dir(&root)
        .status()
        .context("could not start cargo build")?;
    if !status.success() {
        bail!("building lastmile-experiments failed ({status})");
    }
    let bin = root.join("target/release/lastmile-experiments");
    let (name, default_out, check) = match preset {
        Preset::Quick => ("quick", root.join("target/experiments-quick"), true),
        Preset::Medium => ("medium", root.join("docs"), false),
        Preset::Full => ("full", root.join("docs"), false),
    };
    let out = out.unwrap_or(default_out);
    let data = data.unwrap_or_else(crate::data::default_dir);
    if !matches!(preset, Preset::Quick) {
        // Section 3 needs the synthetic speech set (quick, i.e. CI, does not).
        crate::data::speech(&data).context(
            "section 3 needs the synthetic speech set: run `cargo xtask data` (installs \
             espeak-ng with apt and generates it)",
        )?;
    }
    let mut cmd = Command::new(&bin);
    cmd.current_dir(&root)
        .args(["--preset", name, "--out"])
        .arg(&out);
    if check {
        cmd.arg("--check");
    }
    cmd.env("LASTMILE_DATA", &data);
    let status = cmd
        .status()
        .with_context(|| format!("could not start {}", bin.display()))?;
    if !status.success() {
        bail!("`lastmile-experiments --preset {name}` failed ({status})");
    }
    Ok(())
}
