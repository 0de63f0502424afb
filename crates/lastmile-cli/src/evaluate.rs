//! `lastmile eval`, and the evaluation loop `new` and `quantize` reuse.
//!
//! Quantized models run on a backend (`prepare` once, then `forward` batch by
//! batch); float models run on the f32 executor. Either way the loss is computed
//! on the host from (dequantized) logits with `libm`, log-sum-exp stabilized, in
//! `f64` — the same arithmetic on every target.

use std::path::PathBuf;
use std::time::Instant;

use anyhow::{Context, Result, anyhow};
use clap::Args;
use lastmile_core::format::AnyModel;
use lastmile_core::{Backend, FloatModel, QuantModel, float_exec};
use lastmile_data::Dataset;
use lastmile_train::loss::cross_entropy_f32_row;
use serde::Serialize;

use crate::util::{self, check_compatible, images_f32, open_dataset, progress};
use crate::{JsonFlag, SplitArg, Ui};

/// Arguments of `lastmile eval`.
#[derive(Debug, Args)]
pub struct EvalArgs {
    /// Model file (.lmm), float or quantized.
    #[arg(long, short = 'm', value_name = "MODEL")]
    pub model: PathBuf,
    /// Dataset: digits, mnist or fashion-mnist [default: the model's `dataset` metadata].
    #[arg(long, short = 'd', value_name = "DATA")]
    pub data: Option<String>,
    /// Which split to evaluate on.
    #[arg(long, value_enum, default_value_t = SplitArg::Test)]
    pub split: SplitArg,
    /// Backend for quantized models (see `lastmile backends`) [default: the best available].
    /// Float models always run on the f32 executor.
    #[arg(long, short = 'b', value_name = "BACKEND")]
    pub backend: Option<String>,
    /// Samples per forward call.
    #[arg(long, default_value_t = 64, value_parser = clap::value_parser!(u32).range(1..))]
    pub batch: u32,
    /// Evaluate only the first N samples of the split.
    #[arg(long, value_name = "N", value_parser = clap::value_parser!(u64).range(1..))]
    pub limit: Option<u64>,
    #[command(flatten)]
    pub json: JsonFlag,
}

/// Accuracy and loss over a set of samples.
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct Score {
    /// Samples whose argmax logit equals the label.
    pub correct: usize,
    /// Samples seen.
    pub total: usize,
    /// Sum of per-sample cross-entropies (nats).
    pub loss_sum: f64,
    /// Wall time of the forward passes and scoring.
    pub seconds: f64,
}

impl Score {
    /// Top-1 accuracy in `[0, 1]`.
    pub fn accuracy(&self) -> f64 {
        if self.total == 0 {
            0.0
        } else {
            self.correct as f64 / self.total as f64
        }
    }

    /// Mean cross-entropy.
    pub fn loss(&self) -> f64 {
        if self.total == 0 {
            0.0
        } else {
            self.loss_sum / self.total as f64
        }
    }

    fn add_row(&mut self, logits: &[f32], label: usize) {
        // The trainer's own loss, so `eval` and `adapt` score identically.
        let (loss, arg) = cross_entropy_f32_row(logits, label);
        self.loss_sum += loss;
        self.correct += usize::from(arg == label);
        self.total += 1;
    }

    /// `accuracy 93.21% (335/359), loss 0.2512`.
    pub fn summary(&self) -> String {
        format!(
            "accuracy {:.2}% ({}/{}), loss {:.4}",
            100.0 * self.accuracy(),
            self.correct,
            self.total,
            self.loss()
        )
    }
}

/// Sample indices `0..min(limit, len)`.
pub fn first_indices(data: &Dataset, limit: Option<u64>) -> Vec<usize> {
    let n = limit.map_or(data.len(), |l| data.len().min(l as usize));
    (0..n).collect()
}

/// Runs a quantized model on `backend` over `indices` of `data`.
pub fn eval_quant(
    model: &QuantModel,
    backend: &dyn Backend,
    data: &Dataset,
    indices: &[usize],
    batch: usize,
    ui: Ui,
    label: &str,
) -> Result<Score> {
    let start = Instant::now();
    let mut prepared = backend
        .prepare(model)
        .map_err(|e| anyhow!("backend '{}' cannot prepare the model: {e}", backend.name()))?;
    check_compatible(&model.topology.input_shape, prepared.output_shape(), data)?;
    let logits_n = prepared.output_shape()[0];
    let in_q = model.act[0];
    let out_q = *model
        .act
        .last()
        .context("model has no activation quantization")?;
    let bar = progress(ui, indices.len(), label);
    let mut score = Score::default();
    let mut codes = Vec::new();
    let mut out = Vec::new();
    let mut logits = vec![0f32; logits_n];
    for chunk in indices.chunks(batch.max(1)) {
        let x = images_f32(data, chunk);
        codes.clear();
        codes.extend(x.iter().map(|&v| in_q.quantize(v)));
        prepared
            .forward(&model.params, &codes, chunk.len(), &mut out)
            .map_err(|e| anyhow!("backend '{}' forward failed: {e}", backend.name()))?;
        if out.len() != chunk.len() * logits_n {
            return Err(anyhow!(
                "backend '{}' returned {} outputs for {} samples × {logits_n} logits",
                backend.name(),
                out.len(),
                chunk.len()
            ));
        }
        for (k, &i) in chunk.iter().enumerate() {
            for (l, &q) in logits
                .iter_mut()
                .zip(&out[k * logits_n..(k + 1) * logits_n])
            {
                *l = out_q.dequantize(q);
            }
            score.add_row(&logits, usize::from(data.labels[i]));
        }
        bar.inc(chunk.len() as u64);
    }
    bar.finish_and_clear();
    score.seconds = start.elapsed().as_secs_f64();
    Ok(score)
}

/// Runs a float model on the f32 executor over `indices` of `data`.
pub fn eval_float(
    model: &FloatModel,
    data: &Dataset,
    indices: &[usize],
    batch: usize,
    ui: Ui,
    label: &str,
) -> Result<Score> {
    let start = Instant::now();
    let shapes = model
        .validate()
        .map_err(|e| anyhow!("invalid model: {e}"))?;
    let out_shape = shapes.last().cloned().unwrap_or_default();
    check_compatible(&model.topology.input_shape, &out_shape, data)?;
    let logits_n = out_shape[0];
    let bar = progress(ui, indices.len(), label);
    let mut score = Score::default();
    for chunk in indices.chunks(batch.max(1)) {
        let x = images_f32(data, chunk);
        let y = float_exec::forward(model, &x, chunk.len())
            .map_err(|e| anyhow!("float forward failed: {e}"))?;
        for (k, &i) in chunk.iter().enumerate() {
            score.add_row(
                &y[k * logits_n..(k + 1) * logits_n],
                usize::from(data.labels[i]),
            );
        }
        bar.inc(chunk.len() as u64);
    }
    bar.finish_and_clear();
    score.seconds = start.elapsed().as_secs_f64();
    Ok(score)
}

/// The backend for `--backend` (or the best available one).
pub fn pick_backend(name: Option<&str>) -> Result<Box<dyn Backend>> {
    match name {
        Some(n) => lastmile_backends::get(n).map_err(|e| anyhow!("--backend: {e}")),
        None => Ok(lastmile_backends::best()),
    }
}

#[derive(Debug, Serialize)]
struct EvalJson {
    model: String,
    kind: &'static str,
    scheme: Option<&'static str>,
    dataset: String,
    split: &'static str,
    samples: usize,
    correct: usize,
    accuracy: f64,
    loss: f64,
    backend: String,
    tier: String,
    seconds: f64,
    samples_per_second: f64,
}

/// `lastmile eval`.
pub fn run(args: &EvalArgs, ui: Ui) -> Result<()> {
    let model = util::load_model(&args.model)?;
    let metadata = match &model {
        AnyModel::Float(m) => &m.metadata,
        AnyModel::Quantized(m) => &m.metadata,
    };
    let data_name = util::dataset_name(args.data.as_deref(), metadata)?;
    let split: lastmile_data::Split = args.split.into();
    let data = open_dataset(&data_name, split)?;
    let indices = first_indices(&data, args.limit);
    let batch = args.batch as usize;
    let (score, backend, tier, kind, scheme) = match &model {
        AnyModel::Quantized(m) => {
            let b = pick_backend(args.backend.as_deref())?;
            let s = eval_quant(m, b.as_ref(), &data, &indices, batch, ui, "eval").with_context(
                || {
                    format!(
                        "cannot evaluate '{}' on '{data_name}'",
                        args.model.display()
                    )
                },
            )?;
            (
                s,
                b.name().to_string(),
                b.tier().to_string(),
                "quantized",
                Some(m.weight_bits.scheme()),
            )
        }
        AnyModel::Float(m) => {
            if let Some(b) = &args.backend
                && !ui.json
            {
                eprintln!(
                    "note: '{}' is a float model; it runs on the f32 executor, not on --backend {b}",
                    args.model.display()
                );
            }
            let s = eval_float(m, &data, &indices, batch, ui, "eval").with_context(|| {
                format!(
                    "cannot evaluate '{}' on '{data_name}'",
                    args.model.display()
                )
            })?;
            (s, "float32".to_string(), "f32".to_string(), "float", None)
        }
    };
    if ui.json {
        let j = EvalJson {
            model: args.model.display().to_string(),
            kind,
            scheme,
            dataset: data_name,
            split: split.as_str(),
            samples: score.total,
            correct: score.correct,
            accuracy: score.accuracy(),
            loss: score.loss(),
            backend,
            tier,
            seconds: score.seconds,
            samples_per_second: score.total as f64 / score.seconds.max(1e-9),
        };
        println!("{}", serde_json::to_string_pretty(&j)?);
    } else {
        let backend = if kind == "float" {
            backend
        } else {
            format!("{backend}/{tier}")
        };
        println!(
            "{}, backend {backend}, {}",
            score.summary(),
            util::secs(score.seconds)
        );
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn score_summary_formats() {
        let s = Score {
            correct: 335,
            total: 359,
            loss_sum: 0.2512 * 359.0,
            seconds: 1.2,
        };
        assert_eq!(s.summary(), "accuracy 93.31% (335/359), loss 0.2512");
    }
}
