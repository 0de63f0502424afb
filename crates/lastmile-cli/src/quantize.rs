//! `lastmile quantize`: post-training quantization of a float model.

use std::path::PathBuf;

use anyhow::{Result, anyhow};
use clap::{Args, ValueEnum};
use lastmile_core::{WeightBits, ptq};
use lastmile_data::{Split, permutation};
use serde::Serialize;

use crate::evaluate::{Score, eval_float, eval_quant, first_indices, pick_backend};
use crate::util::{self, check_compatible, images_f32, open_dataset};
use crate::{JsonFlag, Ui};

/// Which parameters the quantized model marks trainable.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum Trainable {
    /// The final layer with weights (linear probing, "LP").
    Head,
    /// Every weight and bias (full fine-tuning, "FT").
    All,
    /// Nothing (inference only).
    None,
}

impl Trainable {
    fn as_str(self) -> &'static str {
        match self {
            Trainable::Head => "head",
            Trainable::All => "all",
            Trainable::None => "none",
        }
    }
}

fn parse_bits(s: &str) -> Result<WeightBits, String> {
    WeightBits::parse(s).ok_or_else(|| format!("'{s}' is not a weight width; use 8 or 16"))
}

/// Arguments of `lastmile quantize`.
#[derive(Debug, Args)]
pub struct QuantizeArgs {
    /// Float model file (.lmm), e.g. from `lastmile new`.
    #[arg(long, short = 'm', value_name = "MODEL")]
    pub model: PathBuf,
    /// Dataset for calibration (train split) and the accuracy check (test split)
    /// [default: the model's `dataset` metadata].
    #[arg(long, short = 'd', value_name = "DATA")]
    pub data: Option<String>,
    /// Calibration images (a seeded random subset of the training split).
    #[arg(long, default_value_t = 256, value_parser = clap::value_parser!(u64).range(1..))]
    pub calib: u64,
    /// Seed choosing the calibration images.
    #[arg(long, default_value_t = 0)]
    pub calib_seed: u64,
    /// Weight width: 8 (8w8a) or 16 (16w8a).
    #[arg(long, value_parser = parse_bits, value_name = "8|16")]
    pub bits: WeightBits,
    /// What training may change: the final layer, everything, or nothing.
    #[arg(long, value_enum, default_value_t = Trainable::Head)]
    pub trainable: Trainable,
    /// Backend for the quantized accuracy check [default: the best available].
    #[arg(long, short = 'b', value_name = "BACKEND")]
    pub backend: Option<String>,
    /// Output model file (.lmm).
    #[arg(long, short = 'o', value_name = "FILE")]
    pub output: PathBuf,
    #[command(flatten)]
    pub json: JsonFlag,
}

#[derive(Debug, Serialize)]
struct AccJson {
    samples: usize,
    correct: usize,
    accuracy: f64,
    loss: f64,
}

impl From<&Score> for AccJson {
    fn from(s: &Score) -> Self {
        AccJson {
            samples: s.total,
            correct: s.correct,
            accuracy: s.accuracy(),
            loss: s.loss(),
        }
    }
}

#[derive(Debug, Serialize)]
struct QuantizeJson {
    output: String,
    scheme: &'static str,
    dataset: String,
    calibration_samples: usize,
    clamped_biases: usize,
    zero_channels: usize,
    trainable: &'static str,
    params: usize,
    trainable_params: usize,
    backend: String,
    tier: String,
    float: AccJson,
    quantized: AccJson,
}

/// `lastmile quantize`.
pub fn run(args: &QuantizeArgs, ui: Ui) -> Result<()> {
    let backend = pick_backend(args.backend.as_deref())?;
    let float = util::load_float_model(&args.model)?;
    util::check_output(&args.output, ui)?;
    let data_name = util::dataset_name(args.data.as_deref(), &float.metadata)?;
    let train = open_dataset(&data_name, Split::Train)?;
    let test = open_dataset(&data_name, Split::Test)?;
    let shapes = float
        .validate()
        .map_err(|e| anyhow!("model '{}' is invalid: {e}", args.model.display()))?;
    check_compatible(
        &float.topology.input_shape,
        shapes.last().map(Vec::as_slice).unwrap_or(&[]),
        &train,
    )?;

    let n = train.len().min(args.calib as usize);
    let calib: Vec<usize> = permutation(train.len(), args.calib_seed)
        .into_iter()
        .take(n)
        .collect();
    let inputs = images_f32(&train, &calib);
    let (mut q, report) = ptq::quantize(&float, &inputs, n, args.bits)
        .map_err(|e| anyhow!("cannot quantize '{}': {e}", args.model.display()))?;

    let head_params: Vec<usize> = (0..q.topology.nodes.len())
        .rev()
        .find(|&i| q.node_has_weights(i))
        .map(|i| {
            q.topology.nodes[i]
                .op
                .params()
                .iter()
                .map(|(p, _)| p.index())
                .collect()
        })
        .unwrap_or_default();
    let names: Vec<String> = head_params
        .iter()
        .map(|&i| q.params[i].spec.name.clone())
        .collect();
    q.set_trainable(|s| match args.trainable {
        Trainable::All => true,
        Trainable::None => false,
        Trainable::Head => names.contains(&s.name),
    });
    q.metadata
        .insert("trainable".into(), args.trainable.as_str().into());
    q.metadata.insert("dataset".into(), data_name.clone());
    q.validate()
        .map_err(|e| anyhow!("the quantized model is invalid: {e}"))?;

    let test_idx = first_indices(&test, None);
    let s_float = eval_float(&float, &test, &test_idx, 256, ui, "float")?;
    let s_quant = eval_quant(&q, backend.as_ref(), &test, &test_idx, 64, ui, "quantized")?;
    util::save_quant_model(&args.output, &q)?;

    let scheme = args.bits.scheme();
    if ui.json {
        let j = QuantizeJson {
            output: args.output.display().to_string(),
            scheme,
            dataset: data_name,
            calibration_samples: report.calibration_samples,
            clamped_biases: report.clamped_biases,
            zero_channels: report.zero_channels,
            trainable: args.trainable.as_str(),
            params: q.num_params(),
            trainable_params: q.num_trainable(),
            backend: backend.name().to_string(),
            tier: backend.tier().to_string(),
            float: (&s_float).into(),
            quantized: (&s_quant).into(),
        };
        println!("{}", serde_json::to_string_pretty(&j)?);
    } else {
        println!(
            "ptq {scheme} on {} calibration images of {}: {} clamped biases, {} all-zero weight channels",
            report.calibration_samples, train.name, report.clamped_biases, report.zero_channels
        );
        println!(
            "trainable: {} ({} of {} parameters)",
            args.trainable.as_str(),
            q.num_trainable(),
            q.num_params()
        );
        println!("float   test {}", s_float.summary());
        println!(
            "{scheme:<7} test {} (backend {}/{}; {:+.2} points)",
            s_quant.summary(),
            backend.name(),
            backend.tier(),
            100.0 * (s_quant.accuracy() - s_float.accuracy())
        );
        println!("wrote {}", args.output.display());
    }
    Ok(())
}
