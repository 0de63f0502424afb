//! `lastmile-experiments`: the paper's experiments on real data, with fixed seeds —
//! cross-domain few-shot transfer (MNIST → Fashion-MNIST), OOD adaptation to synthetic
//! corruptions of MNIST, ablations, memory, a loss landscape, and the claims table.
//! Writes a Markdown report, PNG plots and raw JSON. Run it as
//! `cargo xtask experiments [--quick | --full]`.
#![forbid(unsafe_code)]

mod ablation;
mod common;
mod kws;
mod landscape;
mod memory;
mod ood;
mod report;
mod transfer;

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Instant;

use anyhow::{Context, Result, bail};
use clap::builder::PossibleValuesParser;
use clap::{Parser, ValueEnum};
use lastmile_core::model::FloatModel;
use serde::Serialize;

/// Counts heap bytes: the memory experiment measures training steps with it.
#[global_allocator]
static ALLOC: lastmile_memory::CountingAlloc = lastmile_memory::CountingAlloc;

/// Budget presets.
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Preset {
    /// A few minutes: small budgets, asserts the direction of the central claims (CI).
    Quick,
    /// Between quick and full.
    Medium,
    /// The budget of the committed docs/results.md (≈ 40 min on 2 cores).
    Full,
}

/// Every budget knob, fixed by the preset.
#[derive(Clone, Debug, Serialize)]
pub struct Budget {
    /// Preset name.
    pub preset: Preset,
    /// Seeds (each a full repetition of every adaptation run).
    pub seeds: Vec<u64>,
    /// MNIST training images for pretraining the backbone.
    pub pretrain_images: usize,
    /// Pretraining epochs.
    pub pretrain_epochs: usize,
    /// Test images per evaluation (MNIST and Fashion-MNIST test sets, stratified subset).
    pub test_images: usize,
    /// Examples per class for transfer (`None` = full training set).
    pub ks: Vec<Option<usize>>,
    /// Adaptation steps (FF and BP alike, batch 32).
    pub ff_steps: u64,
    /// FF / QZO-FF learning rate, % of the largest weight code.
    pub lr_pct: f64,
    /// OOD: corruptions (name, severity); empty = skip.
    pub ood: Vec<(String, u8)>,
    /// OOD: adaptation steps (BP and QZO-FF alike).
    pub ood_steps: u64,
    /// OOD: training images per class of the corrupted training set.
    pub ood_per_class: usize,
    /// Transfer: only the LP rows (zero-shot, BP-LP, FF-LP fp32, QZO-FF-LP 16w8a / 8w8a).
    pub lp_only: bool,
    /// Transfer: the K values at which FF-FT fp32 runs (its float executor is the slowest
    /// trainer here); other cells of that row are "not run".
    pub ff_ft_fp32_ks: Vec<Option<usize>>,
    /// Transfer: only the QZO-FF rows (exploration runs; never in a report budget).
    pub qzo_only: bool,
    /// Ablations: run them.
    pub ablations: bool,
    /// Loss landscape grid side (0 = skip).
    pub landscape_grid: usize,
    /// Memory: also measure the large architectures (ResNet-18, minutes on 2 cores).
    pub memory_large: bool,
    /// Keyword spotting (synthetic speech): K values (clips per word); empty = skip (Quick:
    /// CI must not need espeak-ng).
    pub kws_ks: Vec<usize>,
    /// Keyword spotting: BP pretraining epochs on the source speakers.
    pub kws_pretrain_epochs: usize,
    /// Keyword spotting: BP adaptation steps (fewer than FF's: a candle BP-FT step of the
    /// depthwise DS-CNN took 0.5-0.9 s on 2 busy cores, ~10x a QZO-FF step).
    pub kws_bp_steps: u64,
}

impl Budget {
    fn of(p: Preset) -> Budget {
        let ood = |v: &[(&str, u8)]| v.iter().map(|(n, s)| (n.to_string(), *s)).collect();
        match p {
            Preset::Quick => Budget {
                preset: p,
                seeds: vec![0, 1, 2],
                pretrain_images: 12_000,
                pretrain_epochs: 2,
                test_images: 1000,
                ks: vec![Some(20)],
                lp_only: true,
                ff_ft_fp32_ks: vec![],
                ff_steps: 1000,
                lr_pct: 0.3,
                ood: vec![],
                ood_per_class: 50,
                ood_steps: 0,
                ablations: false,
                qzo_only: false,
                landscape_grid: 0,
                memory_large: false,
                kws_ks: vec![],
                kws_pretrain_epochs: 0,
                kws_bp_steps: 0,
            },
            Preset::Medium => Budget {
                preset: p,
                seeds: vec![0, 1, 2],
                pretrain_images: 30_000,
                pretrain_epochs: 2,
                test_images: 2000,
                ks: vec![Some(5), Some(20), Some(100), None],
                lp_only: false,
                ff_ft_fp32_ks: vec![Some(20)],
                ff_steps: 500,
                lr_pct: 0.3,
                ood: ood(&[("gaussian-noise", 5), ("contrast", 4)]),
                ood_per_class: 100,
                ood_steps: 300,
                ablations: true,
                qzo_only: false,
                landscape_grid: 21,
                memory_large: true,
                kws_ks: vec![5, 20],
                kws_pretrain_epochs: 20,
                kws_bp_steps: 100,
            },
            Preset::Full => Budget {
                preset: p,
                seeds: vec![0, 1, 2],
                pretrain_images: 60_000,
                pretrain_epochs: 3,
                test_images: 5000,
                ks: vec![Some(5), Some(20), Some(100), None],
                lp_only: false,
                ff_ft_fp32_ks: vec![Some(5), Some(20), Some(100), None],
                ff_steps: 1000,
                lr_pct: 0.3,
                ood: ood(&[
                    ("gaussian-noise", 5),
                    ("blur", 5),
                    ("contrast", 4),
                    ("rotate", 4),
                    ("brightness", 4),
                ]),
                ood_per_class: 100,
                ood_steps: 500,
                ablations: true,
                qzo_only: false,
                landscape_grid: 31,
                memory_large: true,
                kws_ks: vec![5, 20],
                kws_pretrain_epochs: 20,
                kws_bp_steps: 100,
            },
        }
    }
}

/// Sections `--only` can select, in run order.
pub const SECTIONS: [&str; 6] = ["memory", "transfer", "ood", "kws", "ablations", "landscape"];

/// Sections that need the MNIST data and the pretrained `mnist-cnn` backbone.
pub const BACKBONE_SECTIONS: [&str; 4] = ["transfer", "ood", "ablations", "landscape"];

/// Command line.
#[derive(Debug, Parser)]
#[command(
    name = "lastmile-experiments",
    about = "Reproduce the paper's claims on real data: transfer, OOD, ablations, memory, loss landscape, claims table"
)]
struct Cli {
    /// Budget preset.
    #[arg(long, value_enum, default_value = "quick")]
    preset: Preset,
    /// Where docs go: <out>/results.md, <out>/img/results-*.png, <out>/results/*.json
    /// [default: target/experiments-<preset>].
    #[arg(long, value_name = "DIR")]
    out: Option<PathBuf>,
    /// Assert the direction of the central claims (non-zero exit otherwise).
    #[arg(long)]
    check: bool,
    /// Override the adaptation steps of the preset (exploration; the report says so).
    #[arg(long, hide = true)]
    steps: Option<u64>,
    /// Override the FF/QZO-FF learning rate (% of the largest code).
    #[arg(long, hide = true)]
    lr_pct: Option<f64>,
    /// Override K (comma list; 0 = full).
    #[arg(long, hide = true, value_delimiter = ',')]
    ks: Option<Vec<usize>>,
    /// Skip OOD, ablations and landscape.
    #[arg(long, hide = true)]
    transfer_only: bool,
    /// Transfer: only the QZO-FF rows (exploration).
    #[arg(long, hide = true)]
    qzo_only: bool,
    /// Run only these sections (comma list); the report lists the others as not run.
    #[arg(long, hide = true, value_delimiter = ',', value_parser = PossibleValuesParser::new(SECTIONS))]
    only: Option<Vec<String>>,
}

/// Everything measured, for the report and the JSON.
#[derive(Debug, Serialize)]
pub struct Results {
    /// Budget.
    pub budget: Budget,
    /// Backend of the QZO-FF runs.
    pub backend: String,
    /// Experiment 1.
    pub transfer: transfer::Transfer,
    /// Experiment 2.
    pub ood: Option<ood::Ood>,
    /// Experiment 3 (synthetic speech; `None` when the budget or `--only` skips it).
    pub kws: Option<kws::Kws>,
    /// Experiment 4.
    pub ablation: Option<ablation::Ablation>,
    /// Experiment 5.
    pub memory: memory::Memory,
    /// Experiment 6.
    pub landscape: Option<landscape::Landscape>,
    /// Wall time per section, seconds.
    pub seconds: Vec<(String, f64)>,
    /// Sections skipped by `--only`.
    pub not_run: Vec<String>,
}

impl Results {
    /// Whether `section` (one of [`SECTIONS`]) was selected (not skipped by `--only`).
    pub fn ran(&self, section: &str) -> bool {
        !self.not_run.iter().any(|s| s == section)
    }
}

/// Experiment 1's result when `--only` skips it: no cells, the budget's settings.
fn transfer_not_run(b: &Budget) -> transfer::Transfer {
    transfer::Transfer {
        backbone_mnist_acc: f64::NAN,
        ff: common::FfSettings {
            steps: b.ff_steps,
            lr_pct: b.lr_pct,
            ..common::FfSettings::default()
        },
        bp_lp: common::BpSettings::lp(b.ff_steps),
        bp_ft: common::BpSettings::ft(b.ff_steps),
        cells: Vec::new(),
    }
}

fn run(cli: &Cli) -> Result<()> {
    let start = Instant::now();
    if !lastmile_memory::is_counting() {
        bail!("the counting allocator is not installed; memory cannot be measured");
    }
    let mut b = Budget::of(cli.preset);
    if let Some(s) = cli.steps {
        b.ff_steps = s;
    }
    if let Some(l) = cli.lr_pct {
        b.lr_pct = l;
    }
    if let Some(ks) = &cli.ks {
        b.ks = ks.iter().map(|&k| (k > 0).then_some(k)).collect();
    }
    b.qzo_only = cli.qzo_only;
    if cli.transfer_only {
        b.ood.clear();
        b.ablations = false;
        b.landscape_grid = 0;
    }
    let out = cli.out.clone().unwrap_or_else(|| {
        PathBuf::from(format!(
            "target/experiments-{}",
            format!("{:?}", cli.preset).to_lowercase()
        ))
    });
    for d in [out.clone(), out.join("img"), out.join("results")] {
        std::fs::create_dir_all(&d).with_context(|| format!("cannot create '{}'", d.display()))?;
    }
    let backend = lastmile_backends::best();
    let backend_name = format!("{}/{}", backend.name(), backend.tier());
    println!(
        "lastmile experiments, {:?} budget: seeds {:?}, {} adaptation steps, QZO-FF on {backend_name}; output in {}",
        b.preset,
        b.seeds,
        b.ff_steps,
        out.display()
    );
    let mut seconds = Vec::new();
    let mut lap = Instant::now();
    let mut tick = |name: &str, seconds: &mut Vec<(String, f64)>| {
        let s = lap.elapsed().as_secs_f64();
        println!("  {name}: {s:.1} s");
        seconds.push((name.to_string(), s));
        lap = Instant::now();
    };
    let runs = |s: &str| cli.only.as_ref().is_none_or(|o| o.iter().any(|x| x == s));
    let not_run: Vec<String> = SECTIONS
        .iter()
        .filter(|s| !runs(s))
        .map(|s| s.to_string())
        .collect();
    if !not_run.is_empty() {
        println!("(--only: not running {})", not_run.join(", "));
    }
    let prepared = if BACKBONE_SECTIONS.iter().any(|s| runs(s)) {
        Some(prepare(&b)?)
    } else {
        None
    };
    if prepared.is_some() {
        tick("pretrain", &mut seconds);
    }
    let memory = if runs("memory") {
        let r = memory::run(&b)?;
        tick("memory", &mut seconds);
        r
    } else {
        memory::not_run()
    };
    let transfer = match &prepared {
        Some((data, backbone, backbone_acc)) if runs("transfer") => {
            let r = transfer::run(&b, data, backbone, *backbone_acc, backend.as_ref())?;
            tick("transfer", &mut seconds);
            r
        }
        _ => transfer_not_run(&b),
    };
    let ood = match &prepared {
        Some((data, backbone, _)) if runs("ood") && !b.ood.is_empty() => {
            let r = ood::run(&b, data, backbone, backend.as_ref())?;
            tick("ood", &mut seconds);
            Some(r)
        }
        _ => None,
    };
    let kws = if runs("kws") && !b.kws_ks.is_empty() {
        let r = kws::run(&b, backend.as_ref())?;
        tick("kws", &mut seconds);
        Some(r)
    } else {
        None
    };
    let ablation = match &prepared {
        Some((data, backbone, _)) if runs("ablations") && b.ablations => {
            let r = ablation::run(&b, data, backbone, backend.as_ref())?;
            tick("ablations", &mut seconds);
            Some(r)
        }
        _ => None,
    };
    let landscape = match &prepared {
        Some((data, backbone, _)) if runs("landscape") && b.landscape_grid > 0 => {
            let r = landscape::run(&b, data, backbone, backend.as_ref(), &out.join("img"))?;
            tick("landscape", &mut seconds);
            Some(r)
        }
        _ => None,
    };
    let results = Results {
        budget: b,
        backend: backend_name,
        transfer,
        ood,
        kws,
        ablation,
        memory,
        landscape,
        seconds,
        not_run,
    };
    let checks = report::checks(&results);
    report::write(&results, &checks, &out, start.elapsed().as_secs_f64())?;
    println!("wrote {}", out.join("results.md").display());
    for c in &checks {
        println!("  [{}] {}", if c.pass { "ok" } else { "FAIL" }, c.text);
    }
    println!("done in {:.1} s", start.elapsed().as_secs_f64());
    if cli.check {
        let failed: Vec<&report::Check> = checks.iter().filter(|c| !c.pass).collect();
        if !failed.is_empty() {
            bail!(
                "{} of {} central-claim checks failed:\n  {}",
                failed.len(),
                checks.len(),
                failed
                    .iter()
                    .map(|c| c.text.as_str())
                    .collect::<Vec<_>>()
                    .join("\n  ")
            );
        }
        println!("all {} central-claim checks passed", checks.len());
    }
    Ok(())
}

/// The MNIST data and the BP-pretrained `mnist-cnn` backbone with its MNIST test accuracy.
fn prepare(b: &Budget) -> Result<(common::Data, FloatModel, f64)> {
    let data = common::Data::load(b.pretrain_images, b.test_images)?;
    // The backbone is cached in target/ (keyed by its budget): pretraining is the slowest
    // single step and does not depend on anything else here.
    let cache = PathBuf::from(format!(
        "target/experiments-cache/mnist-cnn-{}img-{}ep-seed7.lmm",
        b.pretrain_images, b.pretrain_epochs
    ));
    let (backbone, backbone_acc) = match lastmile_core::format::load_float(&cache) {
        Ok(m) => {
            let acc = common::eval_float(&m, &data.mnist_test)?.1;
            println!("(backbone loaded from {})", cache.display());
            (m, acc)
        }
        Err(_) => {
            let r = common::pretrain(&data.mnist_train, &data.mnist_test, b.pretrain_epochs, 7)?;
            if let Some(dir) = cache.parent() {
                let _ = std::fs::create_dir_all(dir);
            }
            let _ = lastmile_core::format::save_float(&cache, &r.0);
            r
        }
    };
    println!(
        "backbone: mnist-cnn BP-pretrained on {} MNIST images, {} epochs: MNIST test accuracy {:.2}%",
        data.mnist_train.len(),
        b.pretrain_epochs,
        backbone_acc * 100.0
    );
    Ok((data, backbone, backbone_acc))
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    match run(&cli) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::FAILURE
        }
    }
}
