//! `lastmile` — the command-line tool of the lastmile workspace.
//!
//! Subcommands live one per module; shared plumbing (model files, datasets,
//! progress bars, tables) in [`util`], and the evaluation loop shared by
//! `eval`, `new` and `quantize` in [`evaluate`].
#![forbid(unsafe_code)]

mod adapt;
mod backends_cmd;
mod demo;
mod evaluate;
mod info;
mod new;
mod pretrain;
mod quantize;
mod ridge;
mod step_bench;
mod util;

use std::io::IsTerminal;

/// Counts heap bytes so commands can report measured memory (see `lastmile-memory`).
#[global_allocator]
static ALLOC: lastmile_memory::CountingAlloc = lastmile_memory::CountingAlloc;
use std::process::ExitCode;

use clap::{Args, Parser, Subcommand, ValueEnum};

const ABOUT: &str = "Adapt a pre-trained quantized model on an inference-only chip with fixed-point forward gradients.";

const LONG_ABOUT: &str = "\
lastmile adapts a pre-trained quantized (8w8a/16w8a) model to local data on an inference-only chip
with fixed-point forward gradients: two forward calls per random weight perturbation give a loss
difference that replaces backpropagation (no backward kernels, no stored activations).";

const AFTER_HELP: &str = "\
Start here:
  lastmile demo

Examples:
  lastmile new --arch digits-cnn --data digits -o float.lmm
  lastmile quantize --model float.lmm --data digits --bits 16 -o model.lmm
  lastmile info model.lmm
  lastmile eval --model model.lmm --data digits --backend cpu-ref
  lastmile adapt --model model.lmm --data digits --corrupt rotate@3 -o adapted.lmm
  lastmile backends --json";

/// The command line.
#[derive(Debug, Parser)]
#[command(
    name = "lastmile",
    version,
    about = ABOUT,
    long_about = LONG_ABOUT,
    after_help = AFTER_HELP,
    propagate_version = true
)]
pub struct Cli {
    #[command(flatten)]
    global: GlobalArgs,
    #[command(subcommand)]
    command: Command,
}

/// Options every subcommand accepts.
#[derive(Debug, Args)]
struct GlobalArgs {
    /// No progress bars (they are also hidden when stdout is not a terminal, and with --json).
    #[arg(short, long, global = true)]
    quiet: bool,
    /// Load a vendor backend plugin (a shared library speaking lastmile's plugin C ABI); its
    /// name becomes a valid --backend. Repeatable; adds to $LASTMILE_PLUGINS (':'-separated).
    #[arg(long, value_name = "PATH", global = true)]
    plugin: Vec<std::path::PathBuf>,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Show a model file: metadata, quantization, one row per node, parameter and memory totals.
    #[command(after_help = "Example:\n  lastmile info model.lmm --json")]
    Info(info::InfoArgs),
    /// Measure top-1 accuracy and cross-entropy of a model on a dataset.
    #[command(
        after_help = "Example:\n  lastmile eval --model model.lmm --data digits --split test --backend cpu-ref"
    )]
    Eval(evaluate::EvalArgs),
    /// List the backends of this build, whether each can run here, and what it supports.
    #[command(
        after_help = "Examples:\n  lastmile backends --json\n  lastmile backends --plugin ./libmy_npu.so\n  LASTMILE_PLUGINS=/opt/a.so:/opt/b.so lastmile backends"
    )]
    Backends(backends_cmd::BackendsArgs),
    /// Create a float model: seeded random conv features plus a closed-form ridge-regression head.
    #[command(
        long_about = "Create a float model from a named architecture: the convolutions keep their seeded \
He-uniform random weights and the final linear layer is fitted in closed form by ridge regression \
on the training split (then temperature-scaled for a sensible softmax). This is the zero-setup float \
model until a backprop pretrainer lands; it is not backprop-pretrained.",
        after_help = "Example:\n  lastmile new --arch digits-cnn --data digits --seed 0 -o float.lmm"
    )]
    New(new::NewArgs),
    /// Post-training-quantize a float model to 8w8a or 16w8a and mark what training may change.
    #[command(
        after_help = "Example:\n  lastmile quantize --model float.lmm --data digits --bits 16 -o model.lmm"
    )]
    Quantize(quantize::QuantizeArgs),
    /// Adapt a quantized model to local data with fixed-point forward gradients (QZO-FF).
    #[command(
        long_about = "Adapt a quantized model to local data with QZO-FF: for each of m random directions z \
(regenerated from the seed, never stored) the trainable weights are perturbed in place by ±ε·z, the \
backend runs two forward calls, and the weights move along z in fixed point according to the loss \
difference. Only Backend::forward is used; the frozen prefix runs once per batch.",
        after_help = "Examples:\n  lastmile adapt --model model.lmm --data digits --corrupt rotate@3 --steps 300 -o adapted.lmm\n  \
lastmile adapt --model model.lmm --trainable all --draws 1 --rounding stochastic --json\n  \
lastmile adapt --model model.lmm --checkpoint run.lmm --resume\n  \
lastmile adapt --config adapt.toml --steps 50   (flags override the file)"
    )]
    Adapt(Box<adapt::AdaptArgs>),
    /// Train a float model with backpropagation (candle, CPU) from a seeded initialization.
    #[command(
        after_help = "Example:\n  lastmile pretrain --arch digits-cnn --data digits --epochs 6 -o float.lmm"
    )]
    Pretrain(pretrain::PretrainArgs),
    /// The main job, zero set-up: pretrain (BP), quantize (16w8a), adapt to a last-mile shift
    /// with QZO-FF vs BP, memory of both, and a PNG of the curves.
    #[command(after_help = "Example:\n  lastmile demo --out target/demo")]
    Demo(demo::DemoArgs),
    /// Time and peak memory of one training step, QZO-FF vs backprop, on the same model and batch.
    #[command(
        name = "step-bench",
        after_help = "Example:\n  lastmile step-bench --arch digits-cnn,resnet-tiny --batch 32 --scope ft"
    )]
    StepBench(step_bench::StepBenchArgs),
}

/// How to talk to the user, decided once from the global flags.
#[derive(Clone, Copy, Debug)]
pub struct Ui {
    /// Machine output on stdout (progress and notes suppressed).
    pub json: bool,
    /// Whether progress bars may be drawn.
    pub progress: bool,
}

impl Ui {
    fn new(global: &GlobalArgs, json: bool) -> Self {
        Ui {
            json,
            progress: !global.quiet && !json && std::io::stdout().is_terminal(),
        }
    }
}

/// `--json` for subcommands that have machine output.
#[derive(Debug, Args, Clone, Copy)]
pub struct JsonFlag {
    /// Print one JSON document on stdout instead of text.
    #[arg(long)]
    pub json: bool,
}

/// `--split`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum SplitArg {
    /// The test split.
    Test,
    /// The training split.
    Train,
}

impl From<SplitArg> for lastmile_data::Split {
    fn from(s: SplitArg) -> Self {
        match s {
            SplitArg::Test => lastmile_data::Split::Test,
            SplitArg::Train => lastmile_data::Split::Train,
        }
    }
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    lastmile_backends::add_plugins(&cli.global.plugin);
    let result = match &cli.command {
        Command::Info(a) => info::run(a, Ui::new(&cli.global, a.json.json)),
        Command::Eval(a) => evaluate::run(a, Ui::new(&cli.global, a.json.json)),
        Command::Backends(a) => backends_cmd::run(a, Ui::new(&cli.global, a.json.json)),
        Command::New(a) => new::run(a, Ui::new(&cli.global, a.json.json)),
        Command::Quantize(a) => quantize::run(a, Ui::new(&cli.global, a.json.json)),
        Command::Adapt(a) => adapt::run(a, Ui::new(&cli.global, a.json.json)),
        Command::Pretrain(a) => pretrain::run(a, Ui::new(&cli.global, a.json.json)),
        Command::Demo(a) => demo::run(a, Ui::new(&cli.global, a.json)),
        Command::StepBench(a) => step_bench::run(a, Ui::new(&cli.global, a.json)),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::FAILURE
        }
    }
}

#[cfg(test)]
mod tests {
    use super::Cli;
    use clap::CommandFactory;

    #[test]
    fn cli_definition_is_valid() {
        Cli::command().debug_assert();
    }
}
