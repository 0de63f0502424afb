//! `cargo xtask`: project automation (fetching datasets, running the CI checks).
//!
//! `cargo xtask` is an alias (see `.cargo/config.toml`) for
//! `cargo run --quiet --package xtask --`.

mod ci;
mod data;
mod demo;

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
    /// Fetch MNIST and Fashion-MNIST into the data directory (idempotent).
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
}

/// The workspace root: this crate lives in `<root>/xtask`.
pub(crate) fn workspace_root() -> PathBuf {
    let manifest = Path::new(env!("CARGO_MANIFEST_DIR"));
    manifest.parent().unwrap_or(manifest).to_path_buf()
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let result = match cli.command {
        Command::Data { dir } => data::run(&dir.unwrap_or_else(data::default_dir)),
        Command::Ci => ci::run(),
        Command::Demo => demo::run(),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::FAILURE
        }
    }
}
