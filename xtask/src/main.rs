//! `cargo xtask`: project automation (fetching datasets, running the CI checks).
//!
//! `cargo xtask` is an alias (see `.cargo/config.toml`) for
//! `cargo run --quiet --package xtask --`.

mod apt;
mod asm_report;
mod backend_test;
mod bench;
mod bindgen;
mod build;
mod ci;
mod data;
mod demo;
mod doctor;
mod experiments;
mod mcu;
mod sdk;
mod test;
mod toolchain;

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use clap::{Parser, Subcommand};

#[derive(Debug, Parser)]
#[command(
    name = "cargo xtask",
    bin_name = "cargo xtask",
    about = "Project automation for lastmile",
    long_about = "Project automation for lastmile.\n\n\
                  Run from anywhere inside the workspace as `cargo xtask <command>`."
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Fetch MNIST and Fashion-MNIST, generate synthetic speech (idempotent).
    #[command(long_about = data::LONG_HELP)]
    Data {
        /// Data root to fill [default: $LASTMILE_DATA, else <workspace>/data].
        #[arg(long, value_name = "DIR")]
        dir: Option<PathBuf>,
    },
    /// Run every CI check in order, stopping at the first failure.
    #[command(long_about = ci::LONG_HELP)]
    Ci,
    /// Run the main job end to end on the embedded digits (no set-up needed).
    #[command(long_about = demo::LONG_HELP)]
    Demo,
    /// Run the paper's experiments on real data; write docs/results.md, plots and JSON.
    #[command(long_about = experiments::LONG_HELP)]
    Experiments {
        /// A few minutes; asserts the central claims; writes target/experiments-quick (default).
        #[arg(long, conflicts_with_all = ["medium", "full"])]
        quick: bool,
        /// Every section at a medium budget (~15 min); writes docs/.
        #[arg(long, conflicts_with = "full")]
        medium: bool,
        /// The full budget (~40 min on 2 cores); writes docs/.
        #[arg(long)]
        full: bool,
        /// Output directory instead of the preset's.
        #[arg(long, value_name = "DIR")]
        out: Option<PathBuf>,
    },
    /// Cross-build for a target (toolchains/<triple>.toml); stripped artifacts to target/dist/.
    #[command(long_about = build::LONG_HELP)]
    Build {
        /// Target triple (a file in toolchains/).
        #[arg(long, value_name = "TRIPLE")]
        target: String,
        /// Build with the release profile.
        #[arg(long)]
        release: bool,
        /// Install a missing rustup target / Debian packages first (apt needs root).
        #[arg(long)]
        install: bool,
    },
    /// Run the test suites for a target (under qemu once per CPU tier), or for one backend.
    #[command(long_about = test::LONG_HELP, after_help = backend_test::HELP)]
    Test {
        /// Target triple (a file in toolchains/).
        #[arg(long, value_name = "TRIPLE", required_unless_present = "backend")]
        target: Option<String>,
        /// Instead: the conformance suite (and other tests) of one backend — an in-tree crate
        /// `backends/<NAME>`, or a plugin library path (`.so`).
        #[arg(long, value_name = "NAME|LIBRARY", conflicts_with = "target")]
        backend: Option<String>,
        /// CPU tier(s) to run, comma-separated (aarch64: neon, dotprod, i8mm), or all.
        #[arg(long, value_name = "TIER", default_value = "all")]
        tier: String,
        /// Install a missing rustup target / Debian packages first (apt needs root).
        #[arg(long)]
        install: bool,
    },
    /// Say what each target still needs, with the command that installs it.
    #[command(long_about = doctor::LONG_HELP)]
    Doctor {
        /// Check only this target [default: every file in toolchains/].
        #[arg(long, value_name = "TRIPLE")]
        target: Option<String>,
    },
    /// Run the criterion benches and write target/bench/summary.md (GMAC/s per tier).
    #[command(long_about = bench::LONG_HELP)]
    Bench {
        /// Criterion's quick mode.
        #[arg(long)]
        quick: bool,
        /// Only these backends: comma-separated `name`, `name/tier` or `tier`.
        #[arg(long, value_name = "LIST")]
        backend: Option<String>,
        /// Criterion benchmark filter (regex).
        #[arg(long, value_name = "REGEX")]
        filter: Option<String>,
    },
    /// Generate backends/plugin/src/bindings.rs from the plugin C header (bindgen).
    #[command(long_about = bindgen::LONG_HELP)]
    Bindgen {
        /// Fail if the committed bindings differ from freshly generated ones.
        #[arg(long)]
        check: bool,
    },
    /// Install a vendor engine for the FFI backends (onnxruntime | xnnpack), idempotently.
    #[command(long_about = sdk::LONG_HELP)]
    Sdk {
        /// Which engine.
        #[arg(value_parser = ["onnxruntime", "xnnpack"])]
        engine: String,
    },
    /// Instructions per multiply-accumulate in the NEON GEMM inner loops, per tier (objdump).
    #[command(long_about = asm_report::LONG_HELP)]
    AsmReport {
        /// Install a missing rustup target / Debian packages first (apt needs root).
        #[arg(long)]
        install: bool,
        /// Also replace the report block in docs/targets.md.
        #[arg(long)]
        write: bool,
    },
}

/// The workspace root: this crate lives in `<root>/xtask`.
pub(crate) fn workspace_root() -> PathBuf {
    let manifest = Path::new(env!("CARGO_MANIFEST_DIR"));
    manifest.parent().unwrap_or(manifest).to_path_buf()
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let result = match cli.command {
        Command::Data { dir } => data::all(&dir.unwrap_or_else(data::default_dir)),
        Command::Ci => ci::run(),
        Command::Demo => demo::run(),
        Command::Experiments {
            quick: _,
            medium,
            full,
            out,
        } => experiments::run(
            if full {
                experiments::Preset::Full
            } else if medium {
                experiments::Preset::Medium
            } else {
                experiments::Preset::Quick
            },
            out,
            None,
        ),
        Command::Build {
            target,
            release,
            install,
        } => build::run_build(&target, release, install),
        Command::Test {
            backend: Some(backend),
            ..
        } => backend_test::run(&backend),
        Command::Test {
            target,
            tier,
            install,
            ..
        } => test::run_test(target.as_deref().unwrap_or_default(), &tier, install),
        Command::Doctor { target } => doctor::run_doctor(target.as_deref()),
        Command::Bindgen { check } => bindgen::run(check),
        Command::Sdk { engine } => match engine.as_str() {
            "onnxruntime" => sdk::onnxruntime(),
            _ => sdk::xnnpack(),
        },
        Command::AsmReport { install, write } => asm_report::run(install, write),
        Command::Bench {
            quick,
            backend,
            filter,
        } => bench::run(&bench::Options {
            quick,
            backend,
            filter,
        }),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::FAILURE
        }
    }
}
