//! Experiment 5: memory of one training step — BP vs FF, FT vs LP, fp32 vs 16w8a —
//! measured with the counting allocator and computed analytically.

use anyhow::{Context, Result, anyhow};
use lastmile_bp::candle::{DType, Tensor};
use lastmile_bp::{BpConfig, BpModel, Budget as BpBudget, LrSchedule, Optimizer, Samples};
use lastmile_core::model::FloatModel;
use lastmile_core::{WeightBits, ptq, zoo};
use lastmile_train::float::{FloatPrecision, FloatTrainer};
use lastmile_train::{StepConfig, Trainer};
use serde::Serialize;
use std::time::Instant;

use crate::Budget;
use crate::common::Depth;

/// Batch of every measured step.
pub const BATCH: usize = 32;

/// One measured architecture.
#[derive(Debug, Clone, Copy)]
pub struct Arch {
    /// Zoo name.
    pub name: &'static str,
    /// Per-sample input `[H, W, C]`.
    pub input: [usize; 3],
    /// Heavy (ResNet-18: minutes per configuration on 2 cores): only measured when
    /// `Budget::memory_large` is set, with one measured warm step instead of three.
    pub large: bool,
}

/// The measured architectures, in table order. The paper's audio CRNN cannot be expressed
/// (the spec has no recurrent op); a DS-CNN keyword-spotting model stands in for audio.
pub const ARCHS: &[Arch] = &[
    Arch {
        name: "mnist-cnn",
        input: [28, 28, 1],
        large: false,
    },
    Arch {
        name: "resnet-tiny",
        input: [28, 28, 1],
        large: false,
    },
    // The audio stand-in: 49 frames × 32 log-mel bands of one second of (synthetic) speech.
    Arch {
        name: "kws-dscnn",
        input: [49, 32, 1],
        large: false,
    },
    Arch {
        name: "resnet18",
        input: [32, 32, 3],
        large: true,
    },
];

/// One configuration.
#[derive(Debug, Clone, Serialize)]
pub struct Row {
    /// Architecture.
    pub arch: String,
    /// Per-sample input `[H, W, C]`.
    pub input: [usize; 3],
    /// `BP` or `FF`.
    pub method: String,
    /// `FT` or `LP`.
    pub scope: String,
    /// `fp32` or `16w8a`.
    pub precision: String,
    /// Trainable parameters.
    pub trainable: usize,
    /// Weights as stored (all parameters).
    pub weight_bytes: usize,
    /// Analytic scratch: BP = gradients + AdamW state + max(activations saved for backward,
    /// the f32 forward's transient activation peak);
    /// FF = peak live activations of one inference-style forward (no gradients, no state).
    pub analytic_scratch: usize,
    /// Measured heap peak during a warm step (weights already allocated): scratch.
    pub measured_scratch: usize,
    /// Measured heap peak of set-up + one step: BP = `lastmile_bp::train` for one step
    /// (building the candle graph, copying the weights into it, AdamW state, the step);
    /// FF = building the trainer (its own copy of the weights, prepared backend buffers)
    /// and its first step.
    pub measured_setup_and_step: Option<usize>,
    /// Note on what the measurement includes.
    pub note: String,
}

impl Row {
    /// Analytic total = weights + scratch.
    pub fn analytic_total(&self) -> usize {
        self.weight_bytes + self.analytic_scratch
    }
    /// Measured total = weights + measured scratch.
    pub fn measured_total(&self) -> usize {
        self.weight_bytes + self.measured_scratch
    }
}

/// Results of experiment 5.
#[derive(Debug, Serialize)]
pub struct Memory {
    /// Batch size.
    pub batch: usize,
    /// Rows.
    pub rows: Vec<Row>,
    /// Wall time per measured architecture, seconds (all six rows).
    pub seconds: Vec<(String, f64)>,
    /// Architectures of [`ARCHS`] not measured at this budget.
    pub skipped: Vec<String>,
}

impl Memory {
    /// The measured architectures, in table order.
    pub fn archs(&self) -> Vec<&str> {
        let mut v: Vec<&str> = Vec::new();
        for r in &self.rows {
            if !v.contains(&r.arch.as_str()) {
                v.push(&r.arch);
            }
        }
        v
    }

    /// The row for `(arch, method, scope, precision)`.
    pub fn get(&self, arch: &str, method: &str, scope: &str, precision: &str) -> Option<&Row> {
        self.rows.iter().find(|r| {
            r.arch == arch && r.method == method && r.scope == scope && r.precision == precision
        })
    }
}

/// One warm BP step (SGD): forward keeping activations, cross-entropy, backward, update.
fn bp_warm_step(bp: &BpModel, x: &[f32], y: &[u8]) -> Result<()> {
    let xt = bp.input_tensor(x, y.len()).map_err(|e| anyhow!("{e}"))?;
    let yt = Tensor::from_vec(
        y.iter().map(|&v| u32::from(v)).collect::<Vec<_>>(),
        y.len(),
        bp.device(),
    )?;
    let logits = bp.forward(&xt)?;
    let loss = candle_nn::loss::cross_entropy(&logits, &yt)?;
    let grads = loss.backward()?;
    for v in bp.trainable_vars() {
        if let Some(g) = grads.get(v.as_tensor()) {
            let upd = (v.as_tensor() - (g * 1e-3)?)?;
            v.set(&upd)?;
        }
    }
    let _ = loss.to_dtype(DType::F32)?.to_scalar::<f32>()?;
    Ok(())
}

fn measure_arch(a: &Arch, rows: &mut Vec<Row>) -> Result<()> {
    let (arch, shape) = (a.name, a.input);
    // Three measured warm steps (max of the peaks) for small models; one for large ones,
    // whose steps are deterministic in size and take tens of seconds.
    let reps = if a.large { 1 } else { 3 };
    let (t, s) = zoo::by_name(arch, Some(&shape), 10)
        .with_context(|| format!("zoo architecture '{arch}' for input {shape:?}"))?;
    let base = zoo::init_float(t, s, 7);
    let sample: usize = shape.iter().product();
    let x: Vec<f32> = (0..BATCH * sample)
        .map(|i| ((i * 2_654_435_761) % 1000) as f32 / 1000.0)
        .collect();
    let y: Vec<u8> = (0..BATCH).map(|i| (i % 10) as u8).collect();
    let (q0, _) = ptq::quantize(&base, &x, BATCH, WeightBits::W16).map_err(|e| anyhow!("{e}"))?;
    let f32_weights: usize = base.params.iter().map(|p| p.data.len() * 4).sum();
    for (depth, scope) in [(Depth::All, "FT"), (Depth::Head, "LP")] {
        let mut fm: FloatModel = base.clone();
        depth.apply_float(&mut fm);
        let trainable: usize = fm
            .params
            .iter()
            .filter(|p| p.spec.trainable)
            .map(|p| p.data.len())
            .sum();
        // BP fp32.
        let opt = Optimizer::adamw(1e-4);
        let est =
            lastmile_bp::step_memory_estimate(&fm, BATCH, &opt).map_err(|e| anyhow!("{e}"))?;
        let bp_forward_peak = lastmile_memory::inference_activation_peak(&q0, BATCH);
        let bp = BpModel::new(&fm).map_err(|e| anyhow!("{e}"))?;
        bp_warm_step(&bp, &x, &y)?; // warm-up
        let mut warm = 0;
        for _ in 0..reps {
            let (r, u) = lastmile_memory::measure(|| bp_warm_step(&bp, &x, &y));
            r?;
            warm = warm.max(u.peak);
        }
        let cfg = BpConfig {
            optimizer: opt.clone(),
            lr: 1e-3,
            schedule: LrSchedule::Constant,
            budget: BpBudget::Steps(1),
            batch_size: BATCH,
            seed: 0,
            log_every: None,
        };
        let mut m = fm.clone();
        let (r, setup) = lastmile_memory::measure(|| {
            lastmile_bp::train(&mut m, Samples::new(&x, &y), None, &cfg)
        });
        r.map_err(|e| anyhow!("{e}"))?;
        rows.push(Row {
            arch: arch.into(),
            input: shape,
            method: "BP".into(),
            scope: scope.into(),
            precision: "fp32".into(),
            trainable,
            weight_bytes: f32_weights,
            // BP runs the same forward as FF first, so it needs at least FF's transient
            // activation peak (in f32) even when it saves little for the backward (LP).
            analytic_scratch: est.gradients
                + est.optimizer_state
                + est.activations_saved.max(4 * bp_forward_peak),
            measured_scratch: warm,
            measured_setup_and_step: Some(setup.peak),
            note: "warm step: candle forward + backward + SGD update on a prepared BpModel (candle adds im2col columns and activation-gradient temporaries); analytic with AdamW state".into(),
        });
        // FF fp32 (float executor).
        let cfg = StepConfig {
            draws: 1,
            epsilon_lsb: 328,
            lr: 98.0,
            ..StepConfig::default()
        };
        let fm2 = fm.clone();
        let (ft, ff_setup) = lastmile_memory::measure(|| -> Result<FloatTrainer> {
            let mut ft = FloatTrainer::new(fm2, cfg.clone(), FloatPrecision::F32)
                .map_err(|e| anyhow!("{e}"))?;
            ft.step(&x, &y, 98.0).map_err(|e| anyhow!("{e}"))?;
            Ok(ft)
        });
        let mut ft = ft?;
        let mut peak = 0;
        for _ in 0..reps {
            let (r, u) = lastmile_memory::measure(|| ft.step(&x, &y, 98.0));
            r.map_err(|e| anyhow!("{e}"))?;
            peak = peak.max(u.peak);
        }
        let mut q = q0.clone();
        depth.apply_quant(&mut q);
        let act_i8 = lastmile_memory::inference_activation_peak(&q, BATCH);
        rows.push(Row {
            arch: arch.into(),
            input: shape,
            method: "FF".into(),
            scope: scope.into(),
            precision: "fp32".into(),
            trainable,
            weight_bytes: f32_weights,
            analytic_scratch: act_i8 * 4,
            measured_scratch: peak,
            measured_setup_and_step: Some(ff_setup.peak),
            note: "warm step of FloatTrainer (m = 1); its float executor keeps every value of the graph alive during a forward, so measured > analytic".into(),
        });
        // QZO-FF 16w8a.
        let backend = lastmile_backends::best();
        let xq: Vec<i8> = x.iter().map(|&v| q.act[0].quantize(v)).collect();
        let (tr, q_setup) = lastmile_memory::measure(|| -> Result<Trainer> {
            let mut tr =
                Trainer::new(backend.as_ref(), q.clone(), cfg.clone()).map_err(|e| anyhow!(e))?;
            tr.step(&xq, &y, 98.0).map_err(|e| anyhow!(e))?;
            Ok(tr)
        });
        let mut tr = tr?;
        let mut peak = 0;
        for _ in 0..reps {
            let (r, u) = lastmile_memory::measure(|| tr.step(&xq, &y, 98.0));
            r.map_err(|e| anyhow!(e))?;
            peak = peak.max(u.peak);
        }
        rows.push(Row {
            arch: arch.into(),
            input: shape,
            method: "FF".into(),
            scope: scope.into(),
            precision: "16w8a".into(),
            trainable,
            weight_bytes: lastmile_memory::parameter_bytes(&q),
            analytic_scratch: act_i8,
            measured_scratch: peak,
            measured_setup_and_step: Some(q_setup.peak),
            note: format!(
                "warm QZO-FF step (m = 1) on {}/{}: the trainer's buffers (prefix features, logits) are sized at step 0 and reused, so a warm step allocates almost nothing",
                backend.name(),
                backend.tier()
            ),
        });
    }
    Ok(())
}

/// Runs experiment 5: every architecture of [`ARCHS`] (the large ones only when
/// `b.memory_large`).
pub fn run(b: &Budget) -> Result<Memory> {
    let mut rows = Vec::new();
    let mut seconds = Vec::new();
    let mut skipped = Vec::new();
    for a in ARCHS {
        if a.large && !b.memory_large {
            skipped.push(a.name.to_string());
            continue;
        }
        let t = Instant::now();
        measure_arch(a, &mut rows)?;
        let s = t.elapsed().as_secs_f64();
        println!("    memory {}: {s:.1} s", a.name);
        seconds.push((a.name.to_string(), s));
    }
    Ok(Memory {
        batch: BATCH,
        rows,
        seconds,
        skipped,
    })
}

/// An empty result, for runs that skip this section.
pub fn not_run() -> Memory {
    Memory {
        batch: BATCH,
        rows: Vec::new(),
        seconds: Vec::new(),
        skipped: Vec::new(),
    }
}
