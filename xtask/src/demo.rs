//! `cargo xtask demo`: the main job, end to end, on the embedded digits (no set-up).

use std::path::Path;

fn path(p: &Path) -> String {
    p.display().to_string()
}
use std::process::Command;

use anyhow::{Context, bail};

pub(crate) const LONG_HELP: &str = "\
Run the main job end to end on the embedded 8x8 digits, with no set-up beyond cargo:

  1. build the `lastmile` binary (release)
  2. lastmile new       a float digits CNN (random conv features + ridge-regression head)
  3. lastmile quantize  post-training quantization to 16w8a (and 8w8a)
  4. lastmile info      the quantized model's layers, shapes and sizes
  5. lastmile eval      accuracy and loss on the held-out digits, on the reference backend
  6. lastmile adapt     QZO-FF on a last-mile shift (the device's sensor has 60% less contrast
                        than the training data): zero-shot vs adapted accuracy, 8w8a and 16w8a

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
    let adapted = dir.join("digits-16w8a-adapted.lmm");
    let (f, q16, q8, adapted) = (path(&f32_model), path(&q16), path(&q8), path(&adapted));
    let steps: Vec<Vec<&str>> = vec![
        vec!["new", "--arch", "digits-cnn", "--data", "digits", "-o", &f],
        vec![
            "quantize", "--model", &f, "--data", "digits", "--bits", "16", "-o", &q16,
        ],
        vec![
            "quantize", "--model", &f, "--data", "digits", "--bits", "8", "-o", &q8,
        ],
        vec!["info", &q16],
        vec![
            "eval",
            "--model",
            &q16,
            "--data",
            "digits",
            "--backend",
            "cpu-ref",
        ],
        vec![
            "eval",
            "--model",
            &q8,
            "--data",
            "digits",
            "--backend",
            "cpu-ref",
        ],
        // The last mile: the device's sensor has 60% less contrast than the training data.
        vec![
            "adapt",
            "--model",
            &q16,
            "--corrupt",
            "contrast@4",
            "--trainable",
            "all",
            "--steps",
            "300",
            "-o",
            &adapted,
        ],
        vec![
            "adapt",
            "--model",
            &q8,
            "--corrupt",
            "contrast@4",
            "--trainable",
            "all",
            "--steps",
            "300",
        ],
        vec![
            "adapt",
            "--model",
            &q8,
            "--corrupt",
            "contrast@4",
            "--trainable",
            "all",
            "--steps",
            "300",
            "--rounding",
            "stochastic",
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
