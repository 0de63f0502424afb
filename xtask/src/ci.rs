//! `cargo xtask ci`: the project's CI checks, run in order, stopping at the first failure.
//!
//! To add a check, append a [`Step`] to the list in [`steps`].

use std::ffi::OsString;
use std::path::PathBuf;
use std::process::Command;
use std::time::Instant;

use anyhow::{Context, bail};

pub(crate) const LONG_HELP: &str = "\
Run every CI check in order, stopping at the first failure:

   1. data    fetch MNIST and Fashion-MNIST (`cargo xtask data` minus the synthetic speech set,
             which only `experiments --medium/--full` use)
   2. engines cargo xtask sdk onnxruntime + cargo xtask sdk xnnpack (idempotent), then the
             ONNX Runtime and XNNPACK backends' tests (conformance within their declared
             tolerance, measured exactness) with LASTMILE_REQUIRE_ENGINES=1
   3. fmt     cargo fmt --all -- --check
   4. bindgen cargo xtask bindgen --check: the committed bindings match their headers (the plugin
             C ABI, XNNPACK's xnnpack.h); installs libclang-dev first when missing, as root
   5. clippy  cargo clippy --workspace --all-targets -- -D warnings
   6. test    cargo test --workspace, with LASTMILE_REQUIRE_DATA=1 (real-data tests must run)
             and LASTMILE_DATA set to the data directory of step 1
   7. experiments  cargo xtask experiments --quick: MNIST -> Fashion-MNIST transfer and step memory
             at a small budget (release build, a few minutes); fails unless QZO-FF-LP 16w8a beats
             zero-shot, 16w8a stays within 3 points of FF fp32, and FF scratch memory is below BP's
   8. readme  cargo run --release -- demo: the README's first command, exactly as written
   9. clippy-aarch64  cargo clippy --target aarch64-unknown-linux-gnu -p lastmile-backend-neon
             --all-targets -- -D warnings (the NEON kernels compile only for aarch64)
  10. aarch64 cargo xtask test --target aarch64-unknown-linux-gnu --install: the suites under
             qemu-aarch64 on the neon, dotprod and i8mm tiers + the bit-identical training check
  11. armv7   cargo xtask test --target armv7-unknown-linux-gnueabihf --install (qemu-arm)
  12. thumbv7em  cargo xtask test --target thumbv7em-none-eabihf --install: the no_std crates
             build for a Cortex-M4F, and the firmware examples/mcu-adapt trains on it under
             qemu-system-arm (accuracy must rise, weights bit-identical to the host, RAM shown)

Steps 9-12 install a missing cross toolchain (rustup target add, apt-get install -y) first.

Uses the cargo from $CARGO (set by `cargo run`), else `cargo` from PATH. The data directory is
$LASTMILE_DATA, else <workspace>/data. Incremental compilation is off (CARGO_INCREMENTAL=0
unless set): CI builds each crate once, and the caches would only take disk. `.ci/run` runs
exactly this command.";

/// What every step can see.
struct Ctx {
    /// Workspace root; cargo commands run here.
    root: PathBuf,
    /// The cargo binary to run.
    cargo: OsString,
    /// Absolute data directory (fetched by step 1, read by the tests).
    data_dir: PathBuf,
}

impl Ctx {
    /// Runs `cargo <args>` in the workspace root with extra environment variables.
    fn cargo(&self, args: &[&str], env: &[(&str, OsString)]) -> anyhow::Result<()> {
        let mut cmd = Command::new(&self.cargo);
        cmd.args(args).current_dir(&self.root);
        for (k, v) in env {
            cmd.env(k, v);
        }
        let shown = format!("cargo {}", args.join(" "));
        let status = cmd
            .status()
            .with_context(|| format!("could not start `{shown}`"))?;
        if !status.success() {
            bail!("`{shown}` failed ({status})");
        }
        Ok(())
    }
}

/// The body of a step.
type StepFn = Box<dyn Fn(&Ctx) -> anyhow::Result<()>>;

/// One named CI check.
struct Step {
    name: &'static str,
    /// Shown in the step header.
    what: &'static str,
    run: StepFn,
}

impl Step {
    fn new(
        name: &'static str,
        what: &'static str,
        run: impl Fn(&Ctx) -> anyhow::Result<()> + 'static,
    ) -> Step {
        Step {
            name,
            what,
            run: Box::new(run),
        }
    }

    /// A step that runs one cargo command.
    fn cargo(name: &'static str, what: &'static str, args: &'static [&'static str]) -> Step {
        Step::new(name, what, move |ctx| ctx.cargo(args, &[]))
    }
}

/// The CI steps, in order. Append new checks here.
fn steps() -> Vec<Step> {
    vec![
        Step::new("data", "cargo xtask data", |ctx| {
            crate::data::run(&ctx.data_dir)
        }),
        Step::new(
            "engines",
            "cargo xtask sdk onnxruntime && cargo xtask sdk xnnpack, then LASTMILE_REQUIRE_ENGINES=1 \
             cargo test -p lastmile-backend-onnxruntime -p lastmile-backend-xnnpack",
            |ctx| {
                crate::sdk::onnxruntime()?;
                crate::sdk::xnnpack()?;
                ctx.cargo(
                    &[
                        "test",
                        "-p",
                        "lastmile-backend-onnxruntime",
                        "-p",
                        "lastmile-backend-xnnpack",
                    ],
                    &[("LASTMILE_REQUIRE_ENGINES", "1".into())],
                )
            },
        ),
        Step::cargo(
            "fmt",
            "cargo fmt --all -- --check",
            &["fmt", "--all", "--", "--check"],
        ),
        Step::new(
            "bindgen",
            "cargo xtask bindgen --check (the plugin ABI and XNNPACK bindings match their headers)",
            |_| crate::bindgen::run(true),
        ),
        Step::cargo(
            "clippy",
            "cargo clippy --workspace --all-targets -- -D warnings",
            &[
                "clippy",
                "--workspace",
                "--all-targets",
                "--",
                "-D",
                "warnings",
            ],
        ),
        Step::new(
            "test",
            "LASTMILE_REQUIRE_DATA=1 cargo test --workspace",
            |ctx| {
                ctx.cargo(
                    &["test", "--workspace"],
                    &[
                        ("LASTMILE_REQUIRE_DATA", "1".into()),
                        ("LASTMILE_DATA", ctx.data_dir.clone().into_os_string()),
                    ],
                )
            },
        ),
        Step::new(
            "experiments",
            "cargo xtask experiments --quick (release; asserts the paper's central claims)",
            |ctx| {
                crate::experiments::run(
                    crate::experiments::Preset::Quick,
                    None,
                    Some(ctx.data_dir.clone()),
                )
            },
        ),
        Step::cargo(
            "readme",
            "cargo run --release -- demo (the README's first command, exactly)",
            &["run", "--release", "--", "demo"],
        ),
        Step::new(
            "clippy-aarch64",
            "cargo clippy --target aarch64-unknown-linux-gnu -p lastmile-backend-neon",
            |_| crate::test::clippy_cross("aarch64-unknown-linux-gnu", "lastmile-backend-neon"),
        ),
        Step::new(
            "aarch64",
            "cargo xtask test --target aarch64-unknown-linux-gnu --install",
            |_| crate::test::run_test("aarch64-unknown-linux-gnu", "all", true),
        ),
        Step::new(
            "armv7",
            "cargo xtask test --target armv7-unknown-linux-gnueabihf --install",
            |_| crate::test::run_test("armv7-unknown-linux-gnueabihf", "all", true),
        ),
        Step::new(
            "thumbv7em",
            "cargo xtask test --target thumbv7em-none-eabihf --install",
            |_| crate::test::run_test("thumbv7em-none-eabihf", "all", true),
        ),
    ]
}

fn elapsed(t: Instant) -> String {
    let s = t.elapsed().as_secs();
    if s >= 60 {
        format!("{}m{:02}s", s / 60, s % 60)
    } else {
        format!("{s}s")
    }
}

/// Runs all steps; returns an error naming the first one that failed.
pub(crate) fn run() -> anyhow::Result<()> {
    // A CI run builds each crate once per profile and target and never rebuilds it, so
    // incremental caches only cost disk (2 GB of a clean run's target/). Every cargo the steps
    // start inherits this process's environment, so re-run it with the cache off once.
    if std::env::var_os("CARGO_INCREMENTAL").is_none() {
        let exe = std::env::current_exe().context("cannot find the xtask executable")?;
        let status = Command::new(&exe)
            .args(std::env::args_os().skip(1))
            .env("CARGO_INCREMENTAL", "0")
            .status()
            .with_context(|| format!("could not re-run {}", exe.display()))?;
        std::process::exit(status.code().unwrap_or(1));
    }
    let root = crate::workspace_root();
    let data_dir = crate::data::default_dir();
    // Absolute, so the tests (which run in each crate's directory) find the same place.
    let data_dir = if data_dir.is_absolute() {
        data_dir
    } else {
        std::env::current_dir()
            .context("cannot read the current directory")?
            .join(data_dir)
    };
    let ctx = Ctx {
        root,
        cargo: std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into()),
        data_dir,
    };
    let steps = steps();
    let total = steps.len();
    let start = Instant::now();
    for (i, step) in steps.iter().enumerate() {
        let n = i + 1;
        println!("\n==> ci step {n}/{total}: {} ({})", step.name, step.what);
        let t = Instant::now();
        if let Err(e) = (step.run)(&ctx) {
            println!(
                "\n==> ci FAILED at step {n}/{total} ({}) after {}",
                step.name,
                elapsed(t)
            );
            bail!("ci step {n}/{total} ({}) failed: {e:#}", step.name);
        }
        println!("==> ci step {n}/{total}: {} ok ({})", step.name, elapsed(t));
    }
    println!("\n==> ci: all {total} steps passed in {}", elapsed(start));
    Ok(())
}
