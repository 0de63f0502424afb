//! `cargo xtask demo`: the main job, end to end, on the embedded digits (no set-up).

use std::path::Path;
use std::process::Command;

use anyhow::{Context, bail};

pub(crate) const LONG_HELP: &str = "\
Run the main job end to end on the embedded 8x8 digits, with no set-up beyond cargo:

  1. build the `lastmile` binary (release)
  2. lastmile new       a float digits CNN (random conv features + ridge-regression head)
  3. lastmile quantize  post-training quantization to 16w8a (and 8w8a)
  4. lastmile info      the quantized model's layers, shapes and sizes
  5. lastmile eval      accuracy and loss on the held-out digits, on the reference backend

Files go to target/demo/.";

pub(crate) fn run() -> anyhow::Result<()> {
    let root = crate::workspace_root();
    let cargo = std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
    let status = Command::new(&cargo)
        .args(["build", "--release", "-q", "-p", "lastmile-cli"])
        .current_dir(&root)
        .status()
        .context("could not start cargo build")?;
    if !status.success() {
        bail!("building lastmile failed ({status})");
    }
    let bin = root.join("target/release/lastmile");
    let dir = root.join("target/demo");
    std::fs::create_dir_all(&dir).with_context(|| format!("cannot create {}", dir.display()))?;
    let f32_model = dir.join("digits-f32.lmm");
    let q16 = dir.join("digits-16w8a.lmm");
    let q8 = dir.join("digits-8w8a.lmm");
    let p = |x: &Path| x.display().to_string();
    let steps: Vec<Vec<String>> = vec![
        vec![
            "new".into(),
            "--arch".into(),
            "digits-cnn".into(),
            "--data".into(),
            "digits".into(),
            "-o".into(),
            p(&f32_model),
        ],
        vec![
            "quantize".into(),
            "--model".into(),
            p(&f32_model),
            "--data".into(),
            "digits".into(),
            "--bits".into(),
            "16".into(),
            "-o".into(),
            p(&q16),
        ],
        vec![
            "quantize".into(),
            "--model".into(),
            p(&f32_model),
            "--data".into(),
            "digits".into(),
            "--bits".into(),
            "8".into(),
            "-o".into(),
            p(&q8),
        ],
        vec!["info".into(), p(&q16)],
        vec![
            "eval".into(),
            "--model".into(),
            p(&q16),
            "--data".into(),
            "digits".into(),
            "--backend".into(),
            "cpu-ref".into(),
        ],
        vec![
            "eval".into(),
            "--model".into(),
            p(&q8),
            "--data".into(),
            "digits".into(),
            "--backend".into(),
            "cpu-ref".into(),
        ],
    ];
    for args in steps {
        println!("\n$ lastmile {}", args.join(" "));
        let status = Command::new(&bin)
            .args(&args)
            .status()
            .with_context(|| format!("could not start {}", bin.display()))?;
        if !status.success() {
            bail!("`lastmile {}` failed ({status})", args.join(" "));
        }
    }
    Ok(())
}
