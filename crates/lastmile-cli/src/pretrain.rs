//! `lastmile pretrain`: float backpropagation (candle) from a seeded initialization.

use std::path::PathBuf;

use anyhow::{Result, anyhow, bail};
use clap::{Args, ValueEnum};
use lastmile_bp::{BpConfig, Budget, LrSchedule, Optimizer, Samples, Scope, dataset_inputs};
use lastmile_core::zoo;
use serde::Serialize;

use crate::util;
use crate::{JsonFlag, Ui};

/// Arguments of `lastmile pretrain`.
#[derive(Debug, Args)]
pub struct PretrainArgs {
    /// Architecture (see `lastmile new --help` for the list).
    #[arg(long, default_value = "digits-cnn")]
    pub arch: String,
    /// Dataset: digits, mnist, fashion-mnist.
    #[arg(long, default_value = "digits")]
    pub data: String,
    /// Full passes over the training split.
    #[arg(long, default_value_t = 6)]
    pub epochs: usize,
    /// Peak learning rate (cosine decay to 0).
    #[arg(long, default_value_t = 1e-2)]
    pub lr: f64,
    /// Optimizer.
    #[arg(long, value_enum, default_value = "adamw")]
    pub optimizer: OptimizerArg,
    /// Samples per step.
    #[arg(long, default_value_t = 32)]
    pub batch: usize,
    /// Seed of the weight initialization and the data order.
    #[arg(long, default_value_t = 1)]
    pub seed: u64,
    /// Use only the first N training images.
    #[arg(long, value_name = "N")]
    pub limit: Option<usize>,
    /// Output float model.
    #[arg(short, long, value_name = "FILE")]
    pub output: PathBuf,
    #[command(flatten)]
    pub json: JsonFlag,
}

/// `--optimizer`.
#[derive(Debug, Clone, Copy, ValueEnum)]
pub enum OptimizerArg {
    /// AdamW, weight decay 1e-4.
    Adamw,
    /// SGD with momentum 0.9.
    Sgd,
}

impl OptimizerArg {
    /// The optimizer.
    pub fn optimizer(self) -> Optimizer {
        match self {
            OptimizerArg::Adamw => Optimizer::adamw(1e-4),
            OptimizerArg::Sgd => Optimizer::sgd_momentum(0.9),
        }
    }
}

#[derive(Serialize)]
struct PretrainJson {
    arch: String,
    data: String,
    epochs: usize,
    steps: usize,
    test_accuracy: f64,
    test_loss: f64,
    per_epoch_test_accuracy: Vec<f64>,
    seconds: f64,
    output: String,
}

/// `lastmile pretrain`.
pub fn run(args: &PretrainArgs, ui: Ui) -> Result<()> {
    util::check_output(&args.output, ui)?;
    if args.batch == 0 || args.epochs == 0 {
        bail!("--batch and --epochs must be at least 1");
    }
    let train = util::open_dataset(&args.data, lastmile_data::Split::Train)?;
    let train = match args.limit {
        Some(n) => train.subset(&(0..n.min(train.len())).collect::<Vec<_>>()),
        None => train,
    };
    let test = util::open_dataset(&args.data, lastmile_data::Split::Test)?;
    let shape = [train.height, train.width, train.channels];
    let (topology, specs) =
        zoo::by_name(&args.arch, Some(&shape), train.num_classes).ok_or_else(|| {
            anyhow!(
                "--arch: unknown architecture '{}' for {}x{}x{} images; valid: {}",
                args.arch,
                shape[0],
                shape[1],
                shape[2],
                zoo::NAMES.join(", ")
            )
        })?;
    let mut model = zoo::init_float(topology, specs, args.seed);
    Scope::All.apply(&mut model);
    let (xtr, xte) = (dataset_inputs(&train), dataset_inputs(&test));
    let cfg = BpConfig {
        optimizer: args.optimizer.optimizer(),
        lr: args.lr,
        schedule: LrSchedule::Cosine,
        budget: Budget::Epochs(args.epochs),
        batch_size: args.batch,
        seed: args.seed,
        log_every: None,
    };
    if !ui.json {
        eprintln!(
            "pretraining {} on {} ({} images) with backprop: {} epochs, batch {}, lr {} cosine",
            args.arch,
            train.name,
            train.len(),
            args.epochs,
            args.batch,
            args.lr
        );
    }
    let report = lastmile_bp::train(
        &mut model,
        Samples::new(&xtr, &train.labels),
        Some(Samples::new(&xte, &test.labels)),
        &cfg,
    )
    .map_err(|e| anyhow!("backprop training failed: {e}"))?;
    let final_test = report
        .final_test
        .ok_or_else(|| anyhow!("no test evaluation was recorded"))?;
    model.metadata.insert("arch".into(), args.arch.clone());
    model.metadata.insert("dataset".into(), args.data.clone());
    model
        .metadata
        .insert("class_names".into(), train.class_names.join(","));
    model
        .metadata
        .insert("name".into(), format!("{}-{}", args.arch, args.data));
    model.metadata.insert(
        "provenance".into(),
        format!(
            "backprop (candle) {} epochs on {} ({} images), seed {}; test accuracy {:.2}%",
            args.epochs,
            train.name,
            train.len(),
            args.seed,
            final_test.accuracy * 100.0
        ),
    );
    util::save_float_model(&args.output, &model)?;
    if ui.json {
        let j = PretrainJson {
            arch: args.arch.clone(),
            data: args.data.clone(),
            epochs: args.epochs,
            steps: report.steps,
            test_accuracy: final_test.accuracy as f64,
            test_loss: final_test.loss as f64,
            per_epoch_test_accuracy: report
                .epochs
                .iter()
                .filter_map(|e| e.test.map(|t| t.accuracy as f64))
                .collect(),
            seconds: report.seconds,
            output: args.output.display().to_string(),
        };
        println!("{}", serde_json::to_string_pretty(&j)?);
    } else {
        for e in &report.epochs {
            if let Some(t) = e.test {
                println!(
                    "epoch {:>2}: train loss {:.4}, test accuracy {:.2}%",
                    e.epoch + 1,
                    e.train.loss,
                    t.accuracy * 100.0
                );
            }
        }
        println!(
            "float test accuracy {:.2}%, loss {:.4} ({} steps, {})",
            final_test.accuracy * 100.0,
            final_test.loss,
            report.steps,
            util::secs(report.seconds)
        );
        println!("wrote {}", args.output.display());
    }
    Ok(())
}
