//! `lastmile adapt`: QZO-FF fixed-point forward-gradient adaptation on any backend,
//! with atomic checkpoints and bit-identical resume.

use std::path::{Path, PathBuf};
use std::time::Instant;

use anyhow::{Context, Result, anyhow, bail};
use clap::{Args, ValueEnum};
use lastmile_core::QuantModel;
use lastmile_core::format::AnyModel;
use lastmile_core::model::ParamRole;
use lastmile_data::{Corruption, Dataset};
use lastmile_train::{Distribution, Estimator, MomentumConfig, Rounding, StepConfig, Trainer};
use serde::{Deserialize, Serialize};

use crate::evaluate::pick_backend;
use crate::util::{self, check_compatible, images_f32};
use crate::{JsonFlag, SplitArg, Ui};

/// Metadata key holding the training state of a checkpoint.
pub const STATE_KEY: &str = "train.state";
/// Metadata key holding the momentum buffer of a checkpoint (momentum-guided sampling):
/// lowercase hex of the little-endian `i16` codes, in the trainer's element order.
pub const MOMENTUM_KEY: &str = "train.momentum";

/// `i16` codes as lowercase hex of their little-endian bytes.
fn momentum_to_hex(state: &[i16]) -> String {
    const HEX: &[u8; 16] = b"0123456789abcdef";
    let mut s = String::with_capacity(state.len() * 4);
    for v in state {
        for b in v.to_le_bytes() {
            s.push(HEX[(b >> 4) as usize] as char);
            s.push(HEX[(b & 15) as usize] as char);
        }
    }
    s
}

/// The inverse of [`momentum_to_hex`].
fn momentum_from_hex(s: &str) -> Result<Vec<i16>, String> {
    if !s.len().is_multiple_of(4) || !s.is_ascii() {
        return Err(format!(
            "{} characters is not a whole number of codes",
            s.len()
        ));
    }
    (0..s.len() / 4)
        .map(|i| {
            let b = |j: usize| u8::from_str_radix(&s[i * 4 + j..i * 4 + j + 2], 16);
            match (b(0), b(2)) {
                (Ok(lo), Ok(hi)) => Ok(i16::from_le_bytes([lo, hi])),
                _ => Err(format!("code {i} is not hex")),
            }
        })
        .collect()
}

/// Arguments of `lastmile adapt`. Every option can also come from `--config FILE`
/// (flags given here override the file); the defaults apply when neither sets one.
#[derive(Debug, Args)]
pub struct AdaptArgs {
    /// Read settings from a TOML (or, with a .json name, JSON) file whose keys are the long
    /// option names (`steps = 300`, `corrupt = "rotate@3"`, `kernel-norm = true`); flags on the
    /// command line override it; paths in it are relative to the file.
    #[arg(long, value_name = "FILE")]
    pub config: Option<PathBuf>,
    /// Quantized model to adapt (from `lastmile quantize`) [required, here or in --config].
    #[arg(long, value_name = "FILE")]
    pub model: Option<PathBuf>,
    /// Dataset: digits, mnist, fashion-mnist [default: the model's dataset].
    #[arg(long, value_name = "NAME")]
    pub data: Option<String>,
    /// A synthetic last-mile shift applied to the real images, as NAME@SEVERITY (1-5):
    /// gaussian-noise, blur, contrast, rotate, shift, brightness, invert. E.g. rotate@3.
    #[arg(long, value_name = "NAME@S", value_parser = parse_corruption)]
    pub corrupt: Option<(Corruption, u8)>,
    /// Split to adapt on [default: train].
    #[arg(long, value_enum)]
    pub split: Option<SplitArg>,
    /// Split to measure accuracy on [default: test].
    #[arg(long, value_enum)]
    pub eval_split: Option<SplitArg>,
    /// Use only the first N adaptation samples (few-shot budgets).
    #[arg(long, value_name = "N")]
    pub limit: Option<usize>,
    /// Backend running the forward calls (see `lastmile backends`) [default: the best available].
    #[arg(long, value_name = "NAME")]
    pub backend: Option<String>,
    /// Training steps [default: 300].
    #[arg(long, value_name = "N")]
    pub steps: Option<u64>,
    /// Samples per step [default: 32].
    #[arg(long, value_name = "N")]
    pub batch: Option<usize>,
    /// Perturbations averaged per step (m): each costs two forward calls [default: 3].
    #[arg(long, value_name = "M")]
    pub draws: Option<u32>,
    /// Gradient estimator [default: sign-spsa].
    #[arg(long, value_enum)]
    pub estimator: Option<EstimatorArg>,
    /// Distribution of the perturbation z [default: gaussian].
    #[arg(long, value_enum)]
    pub dist: Option<DistArg>,
    /// Perturbation size ε: weight LSBs (e.g. 64) or percent of the largest weight code
    /// (e.g. 1.5%) [default: 1%].
    #[arg(long, value_parser = parse_amount)]
    pub epsilon: Option<Amount>,
    /// Learning rate: expected update in weight LSBs per step (e.g. 2000) or percent of the
    /// largest weight code (e.g. 0.3%) [default: 0.3%].
    #[arg(long, value_parser = parse_amount)]
    pub lr: Option<Amount>,
    /// Learning-rate schedule over the run [default: constant].
    #[arg(long, value_enum)]
    pub schedule: Option<ScheduleArg>,
    /// Rounding of fixed-point updates to whole LSBs [default: nearest].
    #[arg(long, value_enum)]
    pub rounding: Option<RoundingArg>,
    /// Sharpness-aware perturbation: ascend RHO (LSBs or %) before estimating (doubles the forwards).
    #[arg(long, value_parser = parse_amount)]
    pub sharpness: Option<Amount>,
    /// Kernel-wise normalization of z: every output channel gets a perturbation of RMS exactly 32.
    #[arg(long)]
    pub kernel_norm: bool,
    /// Sparse update: train a seeded random fraction of each weight tensor's output channels (0-1].
    #[arg(long, value_name = "F")]
    pub sparse_channels: Option<f64>,
    /// Sparse update: train only this fraction of each weight tensor's weights, the smallest in
    /// magnitude (0-1].
    #[arg(long, value_name = "F")]
    pub sparse_magnitude: Option<f64>,
    /// Momentum-guided sampling: draw z partly along a running momentum (decay BETA in (0,1))
    /// of past update directions. Costs 2 bytes per trainable weight; kept in checkpoints.
    #[arg(long, value_name = "BETA")]
    pub momentum: Option<f64>,
    /// Fraction of z's energy along the momentum, in [0,1) [default: 0.25; needs --momentum].
    #[arg(long, value_name = "F")]
    pub momentum_mix: Option<f64>,
    /// What to train: head (last conv/linear layer), all, bias, or a comma list of layer names
    /// [default: keep, the model's own trainable flags].
    #[arg(long, value_name = "SCOPE")]
    pub trainable: Option<String>,
    /// Seed of the perturbations and the data order [default: 0].
    #[arg(long, value_name = "N")]
    pub seed: Option<u64>,
    /// Measure accuracy every N steps (and at the start and end) [default: 100].
    #[arg(long, value_name = "N")]
    pub eval_every: Option<u64>,
    /// Write the adapted model here.
    #[arg(short, long, value_name = "FILE")]
    pub output: Option<PathBuf>,
    /// Checkpoint file, written atomically every --checkpoint-every steps.
    #[arg(long, value_name = "FILE")]
    pub checkpoint: Option<PathBuf>,
    /// Steps between checkpoints [default: 50].
    #[arg(long, value_name = "N")]
    pub checkpoint_every: Option<u64>,
    /// Continue from --checkpoint; the result is bit-identical to an uninterrupted run.
    #[arg(long)]
    pub resume: bool,
    /// Stop after this many steps in this invocation (time-boxed sessions on a device);
    /// the checkpoint records where, and --resume continues. Needs --checkpoint.
    #[arg(long, value_name = "N")]
    pub stop_after: Option<u64>,
    /// Guard: at each evaluation, if the loss exceeds F × the best seen, roll the weights back
    /// to the best evaluated point (costs one copy of the model in memory; not kept in
    /// checkpoints, so a resumed run starts the guard afresh; the momentum restarts from zero).
    #[arg(long, value_name = "F")]
    pub rollback: Option<f64>,
    #[command(flatten)]
    pub json: JsonFlag,
}

/// The settings of a run: command line over `--config` over defaults.
#[derive(Debug, Clone)]
pub struct Settings {
    model: PathBuf,
    data: Option<String>,
    corrupt: Option<(Corruption, u8)>,
    split: SplitArg,
    eval_split: SplitArg,
    limit: Option<usize>,
    backend: Option<String>,
    steps: u64,
    batch: usize,
    draws: u32,
    estimator: EstimatorArg,
    dist: DistArg,
    epsilon: Amount,
    lr: Amount,
    schedule: ScheduleArg,
    rounding: RoundingArg,
    sharpness: Option<Amount>,
    kernel_norm: bool,
    sparse_channels: Option<f64>,
    sparse_magnitude: Option<f64>,
    momentum: Option<MomentumConfig>,
    trainable: String,
    seed: u64,
    eval_every: u64,
    output: Option<PathBuf>,
    checkpoint: Option<PathBuf>,
    checkpoint_every: u64,
    resume: bool,
    stop_after: Option<u64>,
    rollback: Option<f64>,
    json: bool,
}

/// The keys a `--config` file may hold (the long option names).
pub const CONFIG_KEYS: [&str; 32] = [
    "model",
    "data",
    "corrupt",
    "split",
    "eval-split",
    "limit",
    "backend",
    "steps",
    "batch",
    "draws",
    "estimator",
    "dist",
    "epsilon",
    "lr",
    "schedule",
    "rounding",
    "sharpness",
    "kernel-norm",
    "sparse-channels",
    "sparse-magnitude",
    "momentum",
    "momentum-mix",
    "trainable",
    "seed",
    "eval-every",
    "output",
    "checkpoint",
    "checkpoint-every",
    "resume",
    "stop-after",
    "rollback",
    "json",
];

/// A parsed `--config` file: key → JSON value (TOML is converted).
struct ConfigFile {
    path: PathBuf,
    values: serde_json::Map<String, serde_json::Value>,
}

impl ConfigFile {
    fn load(path: &Path) -> Result<Self> {
        let text = std::fs::read_to_string(path).map_err(|e| {
            anyhow!(
                "cannot read config '{}': {}",
                path.display(),
                util::io_msg(&e)
            )
        })?;
        let value: serde_json::Value = if path.extension().is_some_and(|e| e == "json") {
            serde_json::from_str(&text)
                .with_context(|| format!("config '{}' is not valid JSON", path.display()))?
        } else {
            let table: toml::Table = toml::from_str(&text)
                .with_context(|| format!("config '{}' is not valid TOML", path.display()))?;
            serde_json::to_value(table)?
        };
        let serde_json::Value::Object(values) = value else {
            bail!(
                "config '{}' must be a table of settings (key = value)",
                path.display()
            );
        };
        for key in values.keys() {
            if !CONFIG_KEYS.contains(&key.as_str()) {
                bail!(
                    "config '{}': unknown key '{key}'; valid keys: {}",
                    path.display(),
                    CONFIG_KEYS.join(", ")
                );
            }
        }
        Ok(ConfigFile {
            path: path.to_path_buf(),
            values,
        })
    }

    fn err(&self, key: &str, msg: impl std::fmt::Display) -> anyhow::Error {
        anyhow!("config '{}': key '{key}': {msg}", self.path.display())
    }

    fn raw(&self, key: &str) -> Option<&serde_json::Value> {
        self.values.get(key)
    }

    /// A typed value (numbers, booleans, strings).
    fn get<T: serde::de::DeserializeOwned>(&self, key: &str) -> Result<Option<T>> {
        self.raw(key)
            .map(|v| serde_json::from_value(v.clone()).map_err(|e| self.err(key, e)))
            .transpose()
    }

    fn string(&self, key: &str) -> Result<Option<String>> {
        self.get::<String>(key)
    }

    /// A value parsed like its command-line flag.
    fn parsed<T>(&self, key: &str, parse: impl Fn(&str) -> Result<T, String>) -> Result<Option<T>> {
        match self.raw(key) {
            None => Ok(None),
            Some(serde_json::Value::String(s)) => parse(s).map(Some).map_err(|e| self.err(key, e)),
            Some(serde_json::Value::Number(n)) => parse(&n.to_string())
                .map(Some)
                .map_err(|e| self.err(key, e)),
            Some(v) => Err(self.err(key, format!("expected a string, found {v}"))),
        }
    }

    fn choice<T: ValueEnum>(&self, key: &str) -> Result<Option<T>> {
        self.parsed(key, |s| {
            T::from_str(s, false).map_err(|_| {
                let valid: Vec<String> = T::value_variants()
                    .iter()
                    .filter_map(|v| v.to_possible_value().map(|p| p.get_name().to_string()))
                    .collect();
                format!("'{s}' is not one of {}", valid.join(", "))
            })
        })
    }

    /// A path, relative to the config file's directory.
    fn path(&self, key: &str) -> Result<Option<PathBuf>> {
        Ok(self.string(key)?.map(|p| {
            let p = PathBuf::from(p);
            match self.path.parent() {
                Some(dir) if p.is_relative() => dir.join(p),
                _ => p,
            }
        }))
    }
}

impl AdaptArgs {
    /// Merges the command line over `--config` over the defaults.
    pub fn resolve(&self) -> Result<Settings> {
        let file = self.config.as_deref().map(ConfigFile::load).transpose()?;
        let f = file.as_ref();
        macro_rules! pick {
            ($cli:expr, $file:expr) => {
                match $cli.clone() {
                    Some(v) => Some(v),
                    None => match f {
                        Some(f) => $file(f)?,
                        None => None,
                    },
                }
            };
        }
        let get_u64 = |k: &'static str| move |f: &ConfigFile| f.get::<u64>(k);
        let flag = |cli: bool, k: &str| -> Result<bool> {
            Ok(cli
                || f.map(|f| f.get::<bool>(k))
                    .transpose()?
                    .flatten()
                    .unwrap_or(false))
        };
        let model = pick!(self.model, |f: &ConfigFile| f.path("model")).context(
            "--model is required (on the command line or as `model = \"FILE\"` in --config)",
        )?;
        let momentum_beta: Option<f64> = pick!(self.momentum, |f: &ConfigFile| f.get("momentum"));
        let momentum_mix: Option<f64> =
            pick!(self.momentum_mix, |f: &ConfigFile| f.get("momentum-mix"));
        let momentum = match (momentum_beta, momentum_mix) {
            (Some(beta), mix) => Some(MomentumConfig {
                beta,
                mix: mix.unwrap_or(DEFAULT_MOMENTUM_MIX),
            }),
            (None, Some(_)) => bail!("--momentum-mix needs --momentum BETA"),
            (None, None) => None,
        };
        if let Some(m) = &momentum {
            m.check()
                .map_err(|e| anyhow!("--momentum/--momentum-mix: {e}"))?;
        }
        let s = Settings {
            model,
            data: pick!(self.data, |f: &ConfigFile| f.string("data")),
            corrupt: pick!(self.corrupt, |f: &ConfigFile| f
                .parsed("corrupt", parse_corruption)),
            split: pick!(self.split, |f: &ConfigFile| f.choice("split")).unwrap_or(SplitArg::Train),
            eval_split: pick!(self.eval_split, |f: &ConfigFile| f.choice("eval-split"))
                .unwrap_or(SplitArg::Test),
            limit: pick!(self.limit, |f: &ConfigFile| f.get("limit")),
            backend: pick!(self.backend, |f: &ConfigFile| f.string("backend")),
            steps: pick!(self.steps, get_u64("steps")).unwrap_or(300),
            batch: pick!(self.batch, |f: &ConfigFile| f.get("batch")).unwrap_or(32),
            draws: pick!(self.draws, |f: &ConfigFile| f.get("draws")).unwrap_or(3),
            estimator: pick!(self.estimator, |f: &ConfigFile| f.choice("estimator"))
                .unwrap_or(EstimatorArg::SignSpsa),
            dist: pick!(self.dist, |f: &ConfigFile| f.choice("dist")).unwrap_or(DistArg::Gaussian),
            epsilon: pick!(self.epsilon, |f: &ConfigFile| f
                .parsed("epsilon", parse_amount))
            .unwrap_or(Amount::Fraction(0.01)),
            lr: pick!(self.lr, |f: &ConfigFile| f.parsed("lr", parse_amount))
                .unwrap_or(Amount::Fraction(0.003)),
            schedule: pick!(self.schedule, |f: &ConfigFile| f.choice("schedule"))
                .unwrap_or(ScheduleArg::Constant),
            rounding: pick!(self.rounding, |f: &ConfigFile| f.choice("rounding"))
                .unwrap_or(RoundingArg::Nearest),
            sharpness: pick!(self.sharpness, |f: &ConfigFile| f
                .parsed("sharpness", parse_amount)),
            kernel_norm: flag(self.kernel_norm, "kernel-norm")?,
            sparse_channels: pick!(self.sparse_channels, |f: &ConfigFile| f
                .get("sparse-channels")),
            sparse_magnitude: pick!(self.sparse_magnitude, |f: &ConfigFile| f
                .get("sparse-magnitude")),
            momentum,
            trainable: pick!(self.trainable, |f: &ConfigFile| f.string("trainable"))
                .unwrap_or_else(|| "keep".into()),
            seed: pick!(self.seed, get_u64("seed")).unwrap_or(0),
            eval_every: pick!(self.eval_every, get_u64("eval-every")).unwrap_or(100),
            output: pick!(self.output, |f: &ConfigFile| f.path("output")),
            checkpoint: pick!(self.checkpoint, |f: &ConfigFile| f.path("checkpoint")),
            checkpoint_every: pick!(self.checkpoint_every, get_u64("checkpoint-every"))
                .unwrap_or(50),
            resume: flag(self.resume, "resume")?,
            stop_after: pick!(self.stop_after, get_u64("stop-after")),
            rollback: pick!(self.rollback, |f: &ConfigFile| f.get("rollback")),
            json: flag(self.json.json, "json")?,
        };
        if s.resume && s.checkpoint.is_none() {
            bail!("--resume needs --checkpoint FILE");
        }
        if s.stop_after.is_some() && s.checkpoint.is_none() {
            bail!("--stop-after needs --checkpoint FILE (to continue from with --resume)");
        }
        Ok(s)
    }
}

/// Default `--momentum-mix`.
pub const DEFAULT_MOMENTUM_MIX: f64 = 0.25;

/// `--estimator`.
#[derive(Debug, Clone, Copy, ValueEnum)]
pub enum EstimatorArg {
    /// sign(L+ − L−)·z averaged over m draws (sign-m-SPSA).
    SignSpsa,
    /// (L+ − L−)/2ε·z averaged over m draws.
    Spsa,
}

/// `--dist`.
#[derive(Debug, Clone, Copy, ValueEnum)]
pub enum DistArg {
    /// Standard normal, quantized to int8 codes.
    Gaussian,
    /// ±1.
    Rademacher,
    /// Integer-only approximate normal (for FPU-less targets).
    IntGaussian,
}

/// `--rounding`.
#[derive(Debug, Clone, Copy, ValueEnum)]
pub enum RoundingArg {
    /// Round half up.
    Nearest,
    /// Unbiased stochastic rounding.
    Stochastic,
}

/// `--schedule`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ScheduleArg {
    /// The same rate every step.
    Constant,
    /// Cosine decay to zero over the run.
    Cosine,
}

/// A size given in weight LSBs or as a fraction of the largest code.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Amount {
    /// Weight LSBs.
    Lsb(f64),
    /// Fraction of `qmax` (127 or 32767).
    Fraction(f64),
}

impl Amount {
    /// In LSBs for weights of `qmax`.
    pub fn lsb(self, qmax: i32) -> f64 {
        match self {
            Amount::Lsb(v) => v,
            Amount::Fraction(f) => f * qmax as f64,
        }
    }
}

fn parse_amount(s: &str) -> Result<Amount, String> {
    let (num, pct) = match s.strip_suffix('%') {
        Some(n) => (n, true),
        None => (s, false),
    };
    let v: f64 = num
        .trim()
        .parse()
        .map_err(|_| format!("'{s}' is not a number of LSBs or a percentage like 1.5%"))?;
    if !(v.is_finite() && v >= 0.0) {
        return Err(format!("'{s}' must be finite and ≥ 0"));
    }
    Ok(if pct {
        Amount::Fraction(v / 100.0)
    } else {
        Amount::Lsb(v)
    })
}

fn parse_corruption(s: &str) -> Result<(Corruption, u8), String> {
    let (name, sev) = s.split_once('@').unwrap_or((s, "3"));
    let c = Corruption::parse(name).ok_or_else(|| {
        format!(
            "unknown corruption '{name}'; valid: {}",
            Corruption::ALL.map(|c| c.name()).join(", ")
        )
    })?;
    let sev: u8 = sev
        .parse()
        .ok()
        .filter(|v| (1..=5).contains(v))
        .ok_or_else(|| format!("severity '{sev}' must be 1 to 5"))?;
    Ok((c, sev))
}

/// Everything that determines the trajectory; stored in checkpoints and checked on resume.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RunState {
    /// Steps completed.
    pub step: u64,
    /// Total steps of the run.
    pub steps: u64,
    /// Step configuration (seed, m, estimator, ε, rounding, ...).
    pub config: StepConfig,
    /// Base learning rate in LSBs.
    pub lr_lsb: f64,
    /// Schedule.
    pub schedule: ScheduleArg,
    /// Batch size.
    pub batch: usize,
    /// Dataset name including any corruption.
    pub data: String,
    /// Adaptation samples.
    pub samples: usize,
}

impl RunState {
    fn lr_at(&self, step: u64) -> f64 {
        match self.schedule {
            ScheduleArg::Constant => self.lr_lsb,
            ScheduleArg::Cosine => {
                let t = step as f64 / self.steps.max(1) as f64;
                self.lr_lsb * 0.5 * (1.0 + libm::cos(core::f64::consts::PI * t))
            }
        }
    }
}

/// Marks the trainable parameters for `--trainable`.
pub fn apply_scope(model: &mut QuantModel, scope: &str) -> Result<()> {
    match scope {
        "keep" => {}
        "all" => model.set_trainable(|_| true),
        "bias" => model.set_trainable(|s| s.role == ParamRole::Bias),
        "head" => {
            let last = (0..model.topology.nodes.len())
                .rev()
                .find(|&i| model.node_has_weights(i))
                .context("the model has no conv/linear layer")?;
            let name = model.topology.nodes[last].name.clone();
            model.set_trainable(|s| s.name.split('.').next() == Some(name.as_str()));
        }
        list => {
            let names: Vec<&str> = list.split(',').map(str::trim).collect();
            for n in &names {
                if !model
                    .topology
                    .nodes
                    .iter()
                    .any(|node| node.name == *n && !node.op.params().is_empty())
                {
                    let valid: Vec<&str> = model
                        .topology
                        .nodes
                        .iter()
                        .filter(|n| !n.op.params().is_empty())
                        .map(|n| n.name.as_str())
                        .collect();
                    bail!(
                        "--trainable: no layer with weights is called '{n}'; layers: {}; or use head, all, bias",
                        valid.join(", ")
                    );
                }
            }
            model.set_trainable(|s| names.contains(&s.name.split('.').next().unwrap_or("")));
        }
    }
    if model.num_trainable() == 0 {
        bail!(
            "--trainable {scope}: nothing is trainable in this model; use head, all, bias or layer names"
        );
    }
    Ok(())
}

fn corrupt(d: Dataset, c: Option<(Corruption, u8)>, seed: u64) -> Dataset {
    match c {
        Some((c, s)) => d.corrupted(c, s, seed),
        None => d,
    }
}

/// Accuracy and loss of the trainer's current weights on all of `data`.
fn measure(t: &mut Trainer, data: &Dataset, q: lastmile_core::ActQuant) -> Result<(f64, f64)> {
    let idx: Vec<usize> = (0..data.len()).collect();
    let (mut loss, mut correct) = (0.0, 0usize);
    for chunk in idx.chunks(256) {
        let x: Vec<i8> = images_f32(data, chunk)
            .iter()
            .map(|&v| q.quantize(v))
            .collect();
        let y: Vec<u8> = chunk.iter().map(|&i| data.labels[i]).collect();
        let (l, c) = t.evaluate(&x, &y).map_err(|e| anyhow!(e))?;
        loss += l * chunk.len() as f64;
        correct += c;
    }
    Ok((correct as f64 / data.len() as f64, loss / data.len() as f64))
}

#[derive(Debug, Serialize)]
struct EvalPoint {
    step: u64,
    accuracy: f64,
    loss: f64,
    forwards: u64,
    seconds: f64,
}

#[derive(Debug, Serialize)]
struct AdaptJson<'a> {
    model: String,
    backend: String,
    data: &'a str,
    samples: usize,
    trainable_params: u64,
    frozen_prefix_nodes: usize,
    state: &'a RunState,
    zero_shot_accuracy: f64,
    adapted_accuracy: f64,
    curve: &'a [EvalPoint],
    forwards: u64,
    forwards_per_second: f64,
    perturb_saturations: u64,
    rollbacks: u64,
    update_saturations: u64,
    seconds: f64,
    output: Option<String>,
}

/// `lastmile adapt`.
pub fn run(args: &AdaptArgs, ui: Ui) -> Result<()> {
    let args = &args.resolve()?;
    let ui = Ui {
        json: args.json,
        progress: ui.progress && !args.json,
    };
    if args.batch == 0 {
        bail!("--batch must be at least 1");
    }
    let source = if args.resume {
        args.checkpoint
            .clone()
            .context("--resume needs --checkpoint")?
    } else {
        args.model.clone()
    };
    let mut model = match util::load_model(&source)? {
        AnyModel::Quantized(m) => m,
        AnyModel::Float(_) => bail!(
            "model '{}' is a float model; quantize it first (`lastmile quantize`)",
            source.display()
        ),
    };
    let qmax = model.weight_bits.qmax();
    let data_name = util::dataset_name(args.data.as_deref(), &model.metadata)?;
    let train = util::open_dataset(&data_name, args.split.into())?;
    let train = match args.limit {
        Some(n) => train.subset(&(0..n.min(train.len())).collect::<Vec<_>>()),
        None => train,
    };
    let train = corrupt(train, args.corrupt, args.seed);
    let eval = corrupt(
        util::open_dataset(&data_name, args.eval_split.into())?,
        args.corrupt,
        args.seed ^ 0x5eed,
    );

    let config = StepConfig {
        seed: args.seed,
        draws: args.draws,
        estimator: match args.estimator {
            EstimatorArg::SignSpsa => Estimator::SignSpsa,
            EstimatorArg::Spsa => Estimator::Spsa,
        },
        distribution: match args.dist {
            DistArg::Gaussian => Distribution::Gaussian,
            DistArg::Rademacher => Distribution::Rademacher,
            DistArg::IntGaussian => Distribution::IntGaussian,
        },
        epsilon_lsb: libm::rint(args.epsilon.lsb(qmax)).max(1.0) as u32,
        lr: args.lr.lsb(qmax),
        rounding: match args.rounding {
            RoundingArg::Nearest => Rounding::Nearest,
            RoundingArg::Stochastic => Rounding::Stochastic,
        },
        sharpness_rho: args.sharpness.map(|r| r.lsb(qmax)),
        kernel_norm: args.kernel_norm,
        sparsity: lastmile_train::Sparsity {
            channel_fraction: args.sparse_channels,
            magnitude_fraction: args.sparse_magnitude,
            seed: args.seed,
        },
        momentum: args.momentum,
    };
    let mut state = RunState {
        step: 0,
        steps: args.steps,
        config: config.clone(),
        lr_lsb: args.lr.lsb(qmax),
        schedule: args.schedule,
        batch: args.batch,
        data: train.name.clone(),
        samples: train.len(),
    };
    if args.resume {
        let saved: RunState = model
            .metadata
            .get(STATE_KEY)
            .context("the checkpoint has no training state (was it written by `lastmile adapt --checkpoint`?)")
            .and_then(|s| serde_json::from_str(s).context("the checkpoint's training state is not valid JSON"))
            .with_context(|| format!("cannot resume from '{}'", source.display()))?;
        let mut expect = saved.clone();
        expect.step = 0;
        if expect != state {
            bail!(
                "cannot resume from '{}': it was written by a run with different settings\n  checkpoint: {}\n  this run:   {}",
                source.display(),
                serde_json::to_string(&expect)?,
                serde_json::to_string(&state)?
            );
        }
        state.step = saved.step;
    } else {
        apply_scope(&mut model, &args.trainable)?;
    }

    let backend = pick_backend(args.backend.as_deref())?;
    let q_in = model.act[0];
    let mut trainer = Trainer::new(backend.as_ref(), model.clone(), config)
        .map_err(|e| anyhow!("cannot train on backend '{}': {e}", backend.name()))?;
    if trainer.classes() < train.num_classes {
        bail!(
            "dataset '{}' has {} classes but the model has {} outputs",
            train.name,
            train.num_classes,
            trainer.classes()
        );
    }
    check_compatible(&model.topology.input_shape, &[trainer.classes()], &train)?;
    trainer.set_steps(state.step);
    if args.resume && state.config.momentum.is_some() {
        let hex = model.metadata.get(MOMENTUM_KEY).with_context(|| {
            format!(
                "cannot resume from '{}': it has no momentum buffer ('{MOMENTUM_KEY}')",
                source.display()
            )
        })?;
        momentum_from_hex(hex)
            .and_then(|m| trainer.set_momentum_state(m))
            .map_err(|e| {
                anyhow!(
                    "cannot resume from '{}': bad momentum buffer: {e}",
                    source.display()
                )
            })?;
    }

    let start = Instant::now();
    let (zero_acc, zero_loss) = measure(&mut trainer, &eval, q_in)?;
    let mut curve = vec![EvalPoint {
        step: state.step,
        accuracy: zero_acc,
        loss: zero_loss,
        forwards: 0,
        seconds: 0.0,
    }];
    if !ui.json {
        let what = if args.resume {
            format!("resumed at step {}", state.step)
        } else {
            "zero-shot".into()
        };
        eprintln!(
            "adapting {} params ({} of {} nodes frozen in the prefix) on {} ({} samples) with {} on {}/{}",
            trainer.trainable_elements(),
            trainer.prefix_nodes(),
            model.topology.nodes.len(),
            train.name,
            train.len(),
            describe(&state.config),
            backend.name(),
            backend.tier()
        );
        eprintln!(
            "{what}: accuracy {:.2}%, loss {:.4} on {}",
            zero_acc * 100.0,
            zero_loss,
            eval.name
        );
    }
    let bar = util::progress(
        ui,
        (state.steps - state.step.min(state.steps)) as usize,
        "adapt",
    );
    let x_all: Vec<i8> = images_f32(&train, &(0..train.len()).collect::<Vec<_>>())
        .iter()
        .map(|&v| q_in.quantize(v))
        .collect();
    let sample = train.sample_len();
    let per_epoch = train.len().div_ceil(args.batch) as u64;
    let mut order: Option<(u64, Vec<Vec<usize>>)> = None;
    let (mut forwards, mut psat, mut usat) = (0u64, 0u64, 0u64);
    let mut running = f64::NAN;
    // Rollback guard: the best evaluated weights so far (only kept when --rollback is set).
    let mut best: Option<(f64, QuantModel)> = args.rollback.map(|_| (zero_loss, trainer.model()));
    let mut rollbacks = 0u64;
    let stop_at = args
        .stop_after
        .map_or(state.steps, |n| state.steps.min(state.step + n));
    while state.step < stop_at {
        let (epoch, pos) = (state.step / per_epoch, (state.step % per_epoch) as usize);
        if order.as_ref().map(|(e, _)| *e) != Some(epoch) {
            order = Some((
                epoch,
                train
                    .batches(args.batch, Some(args.seed.wrapping_add(epoch)))
                    .collect(),
            ));
        }
        let batch = &order.as_ref().expect("set above").1[pos];
        let x: Vec<i8> = batch
            .iter()
            .flat_map(|&i| x_all[i * sample..(i + 1) * sample].iter().copied())
            .collect();
        let y: Vec<u8> = batch.iter().map(|&i| train.labels[i]).collect();
        let report = trainer
            .step(&x, &y, state.lr_at(state.step))
            .map_err(|e| anyhow!(e))?;
        forwards += report.forwards as u64;
        psat += report.perturb_saturations;
        usat += report.update.saturated;
        let l = report.mean_loss();
        running = if running.is_nan() {
            l
        } else {
            0.9 * running + 0.1 * l
        };
        state.step += 1;
        bar.inc(1);
        let rate = forwards as f64 / start.elapsed().as_secs_f64().max(1e-9);
        bar.set_message(format!("loss {running:.3}, {rate:.0} fwd/s"));
        if state.step.is_multiple_of(args.eval_every.max(1)) || state.step == stop_at {
            let (acc, loss) = measure(&mut trainer, &eval, q_in)?;
            curve.push(EvalPoint {
                step: state.step,
                accuracy: acc,
                loss,
                forwards,
                seconds: start.elapsed().as_secs_f64(),
            });
            if !ui.json {
                bar.suspend(|| {
                    eprintln!(
                        "step {:>5}: accuracy {:.2}%, loss {:.4}, train loss {running:.4}",
                        state.step,
                        acc * 100.0,
                        loss
                    )
                });
            }
            if let (Some(f), Some((best_loss, best_model))) = (args.rollback, best.as_mut()) {
                if loss.is_finite() && loss <= *best_loss {
                    *best_loss = loss;
                    *best_model = trainer.model();
                } else if !loss.is_finite() || loss > f * *best_loss {
                    // The loss exploded: continue from the best weights (same step counter, so
                    // the run stays a pure function of its settings).
                    trainer =
                        Trainer::new(backend.as_ref(), best_model.clone(), state.config.clone())
                            .map_err(|e| anyhow!("rollback failed: {e}"))?;
                    trainer.set_steps(state.step);
                    rollbacks += 1;
                    // The curve records the weights the run continues from.
                    let (acc, loss) = measure(&mut trainer, &eval, q_in)?;
                    if let Some(p) = curve.last_mut() {
                        p.accuracy = acc;
                        p.loss = loss;
                    }
                    if !ui.json {
                        bar.suspend(|| {
                            eprintln!(
                                "step {:>5}: loss {loss:.4} > {f} x best {:.4}: rolled back",
                                state.step, *best_loss
                            )
                        });
                    }
                }
            }
        }
        if let Some(ck) = &args.checkpoint
            && (state.step.is_multiple_of(args.checkpoint_every.max(1)) || state.step == stop_at)
        {
            let mut m = trainer.model();
            m.metadata
                .insert(STATE_KEY.into(), serde_json::to_string(&state)?);
            m.metadata.remove(MOMENTUM_KEY);
            if let Some(mo) = trainer.momentum_state() {
                m.metadata.insert(MOMENTUM_KEY.into(), momentum_to_hex(mo));
            }
            util::save_quant_model(ck, &m)?;
        }
    }
    bar.finish_and_clear();
    let seconds = start.elapsed().as_secs_f64();
    let last = curve.last().map_or(zero_acc, |p| p.accuracy);
    let (trainable_params, frozen_prefix_nodes) =
        (trainer.trainable_elements(), trainer.prefix_nodes());
    let mut adapted = trainer.into_model();
    adapted.metadata.remove(STATE_KEY);
    adapted.metadata.remove(MOMENTUM_KEY);
    adapted.metadata.insert(
        "adapted".into(),
        format!(
            "{} steps of {} on {}",
            state.steps,
            describe(&state.config),
            train.name
        ),
    );
    if let Some(out) = &args.output {
        util::save_quant_model(out, &adapted)?;
    }
    if ui.json {
        let j = AdaptJson {
            model: source.display().to_string(),
            backend: format!("{}/{}", backend.name(), backend.tier()),
            data: &train.name,
            samples: train.len(),
            trainable_params,
            frozen_prefix_nodes,
            state: &state,
            zero_shot_accuracy: zero_acc,
            adapted_accuracy: last,
            curve: &curve,
            forwards,
            forwards_per_second: forwards as f64 / seconds.max(1e-9),
            perturb_saturations: psat,
            update_saturations: usat,
            rollbacks,
            seconds,
            output: args.output.as_ref().map(|p| p.display().to_string()),
        };
        println!("{}", serde_json::to_string_pretty(&j)?);
    } else {
        println!(
            "accuracy {:.2}% -> {:.2}% on {} after {} steps ({} forward calls, {:.0}/s, {})",
            curve[0].accuracy * 100.0,
            last * 100.0,
            eval.name,
            state.step,
            forwards,
            forwards as f64 / seconds.max(1e-9),
            util::secs(seconds)
        );
        if rollbacks > 0 {
            println!("rollback guard: {rollbacks} rollback(s) to the best evaluated weights");
        }
        if psat + usat > 0 {
            println!(
                "saturation: {psat} perturbed codes (restored exactly), {usat} updated codes clamped"
            );
        }
        if let Some(out) = &args.output {
            println!("wrote {}", out.display());
        }
    }
    Ok(())
}

fn describe(c: &StepConfig) -> String {
    let est = match c.estimator {
        Estimator::SignSpsa => "sign-SPSA",
        Estimator::Spsa => "SPSA",
    };
    let mut s = format!(
        "QZO-FF {est} m={} ε={} LSB lr={:.0} LSB",
        c.draws, c.epsilon_lsb, c.lr
    );
    if c.rounding == Rounding::Stochastic {
        s.push_str(" stochastic rounding");
    }
    if let Some(r) = c.sharpness_rho {
        s.push_str(&format!(" sharpness ρ={r:.0}"));
    }
    if c.kernel_norm {
        s.push_str(" kernel-norm");
    }
    if let Some(m) = &c.momentum {
        s.push_str(&format!(" momentum β={} mix={}", m.beta, m.mix));
    }
    if let Some(f) = c.sparsity.channel_fraction {
        s.push_str(&format!(" sparse-channels={f}"));
    }
    if let Some(f) = c.sparsity.magnitude_fraction {
        s.push_str(&format!(" sparse-magnitude={f}"));
    }
    s
}
