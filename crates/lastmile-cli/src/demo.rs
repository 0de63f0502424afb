//! `lastmile demo`: the main job end to end, zero set-up, under a minute.
//!
//! 1. Pretrain a small CNN with backprop (candle) on the embedded digits (clean).
//! 2. Quantize it to 16w8a (PTQ).
//! 3. The last mile: the deployed device's camera has 60 % less contrast than the
//!    training data (`contrast@4`, a synthetic shift of the real images). Measure the
//!    zero-shot accuracy there.
//! 4. Adapt with QZO-FF (fixed-point forward gradients, only forward calls) on the
//!    device-local training images, and — for comparison — with float backprop (BP-FT)
//!    from the same pretrained weights on the same data and step budget.
//! 5. Report accuracy, peak memory of one step of each (measured with the counting
//!    allocator, and analytic), and write a PNG of the training curves.

use std::path::PathBuf;
use std::time::Instant;

use anyhow::{Context, Result, anyhow};
use clap::Args;
use lastmile_backend_cpu_ref::CpuRef;
use lastmile_bp::{BpConfig, Budget, LrSchedule, Optimizer, Samples, Scope, dataset_inputs};
use lastmile_core::{WeightBits, ptq, zoo};
use lastmile_data::{Corruption, Split, digits_split};
use lastmile_plot::{HLine, LineChart, Series};
use lastmile_train::{StepConfig, Trainer};
use serde::Serialize;

use crate::Ui;
use crate::util::images_f32;

/// Arguments of `lastmile demo`.
#[derive(Debug, Args)]
pub struct DemoArgs {
    /// Adaptation steps (QZO-FF and BP alike).
    #[arg(long, default_value_t = 300)]
    pub steps: u64,
    /// Directory for the models and the plot.
    #[arg(long, value_name = "DIR", default_value = "target/demo")]
    pub out: PathBuf,
    /// Seed of everything.
    #[arg(long, default_value_t = 1)]
    pub seed: u64,
    /// Print one JSON document instead of text.
    #[arg(long)]
    pub json: bool,
}

const SHIFT: (Corruption, u8) = (Corruption::Contrast, 4);
const BATCH: usize = 32;
const EVAL_EVERY: u64 = 25;

#[derive(Debug, Serialize)]
struct Memory {
    measured_peak_bytes: usize,
    analytic_bytes: usize,
    analytic_note: String,
}

#[derive(Debug, Serialize)]
struct DemoJson {
    pretrained_float_accuracy: f64,
    quantized_16w8a_accuracy: f64,
    shift: String,
    zero_shot_accuracy: f64,
    qzo_ff_16w8a_accuracy: f64,
    bp_ft_f32_accuracy: f64,
    qzo_ff_curve: Vec<(u64, f64)>,
    qzo_ff_memory: Memory,
    bp_memory: Memory,
    plot: String,
    seconds: f64,
}

fn say(ui: Ui, s: &str) {
    if !ui.json {
        println!("{s}");
    }
}

/// `lastmile demo`.
pub fn run(args: &DemoArgs, ui: Ui) -> Result<()> {
    let start = Instant::now();
    std::fs::create_dir_all(&args.out)
        .with_context(|| format!("cannot create --out directory '{}'", args.out.display()))?;
    let (train, test) = (digits_split(Split::Train), digits_split(Split::Test));
    let (c, sev) = SHIFT;
    let (dev_train, dev_test) = (
        train.corrupted(c, sev, args.seed),
        test.corrupted(c, sev, args.seed ^ 0x5eed),
    );

    // 1. Pretrain with backprop on clean data.
    let shape = [train.height, train.width, train.channels];
    let (topology, specs) =
        zoo::by_name("digits-cnn", Some(&shape), 10).context("digits-cnn is in the zoo")?;
    let mut float = zoo::init_float(topology, specs, args.seed);
    Scope::All.apply(&mut float);
    let (xtr, xte) = (dataset_inputs(&train), dataset_inputs(&test));
    let pre = BpConfig {
        optimizer: Optimizer::adamw(1e-4),
        lr: 1e-2,
        schedule: LrSchedule::Cosine,
        budget: Budget::Epochs(6),
        batch_size: BATCH,
        seed: args.seed,
        log_every: None,
    };
    let report = lastmile_bp::train(
        &mut float,
        Samples::new(&xtr, &train.labels),
        Some(Samples::new(&xte, &test.labels)),
        &pre,
    )
    .map_err(|e| anyhow!("pretraining failed: {e}"))?;
    let float_acc = report.final_test.map_or(0.0, |s| s.accuracy as f64);
    say(
        ui,
        &format!(
            "1. pretrained digits-cnn with backprop on clean digits: test accuracy {:.2}% ({:.1} s)",
            float_acc * 100.0,
            report.seconds
        ),
    );

    // 2. PTQ to 16w8a.
    let calib_idx: Vec<usize> = (0..train.len().min(512)).collect();
    let (mut q16, _) = ptq::quantize(
        &float,
        &images_f32(&train, &calib_idx),
        calib_idx.len(),
        WeightBits::W16,
    )
    .map_err(|e| anyhow!("quantization failed: {e}"))?;
    q16.set_trainable(|_| true);
    let q_in = q16.act[0];
    let accuracy = |t: &mut Trainer, d: &lastmile_data::Dataset| -> Result<f64> {
        let x: Vec<i8> = images_f32(d, &(0..d.len()).collect::<Vec<_>>())
            .iter()
            .map(|&v| q_in.quantize(v))
            .collect();
        let (_, correct) = t.evaluate(&x, &d.labels).map_err(|e| anyhow!(e))?;
        Ok(correct as f64 / d.len() as f64)
    };
    let lsb = |pct: f64| pct / 100.0 * WeightBits::W16.qmax() as f64;
    let cfg = StepConfig {
        seed: args.seed,
        draws: 3,
        epsilon_lsb: lsb(1.0).round() as u32,
        lr: lsb(0.3),
        ..StepConfig::default()
    };
    let mut trainer = Trainer::new(&CpuRef, q16.clone(), cfg.clone()).map_err(|e| anyhow!(e))?;
    let q_acc = accuracy(&mut trainer, &test)?;
    say(
        ui,
        &format!(
            "2. quantized to 16w8a (PTQ): clean test accuracy {:.2}%",
            q_acc * 100.0
        ),
    );

    // 3. The last mile.
    let zero = accuracy(&mut trainer, &dev_test)?;
    say(
        ui,
        &format!(
            "3. on the device the camera has 60% less contrast ({}, synthetic shift of real digits): zero-shot accuracy {:.2}%",
            dev_test.name,
            zero * 100.0
        ),
    );

    // 4a. QZO-FF, fixed point, forward calls only.
    let x_dev: Vec<i8> = images_f32(&dev_train, &(0..dev_train.len()).collect::<Vec<_>>())
        .iter()
        .map(|&v| q_in.quantize(v))
        .collect();
    let sample = dev_train.sample_len();
    let batches: Vec<Vec<usize>> = (0..)
        .flat_map(|e| dev_train.batches(BATCH, Some(args.seed + e)))
        .take(args.steps as usize)
        .collect();
    let mut curve = vec![(0u64, zero)];
    let mut ff_loss = Vec::new();
    let mut ff_peak = 0usize;
    let ff_start = Instant::now();
    for (s, batch) in batches.iter().enumerate() {
        let x: Vec<i8> = batch
            .iter()
            .flat_map(|&i| x_dev[i * sample..(i + 1) * sample].iter().copied())
            .collect();
        let y: Vec<u8> = batch.iter().map(|&i| dev_train.labels[i]).collect();
        let (r, usage) = lastmile_memory::measure(|| trainer.step(&x, &y, cfg.lr));
        let r = r.map_err(|e| anyhow!(e))?;
        if s > 0 {
            ff_peak = ff_peak.max(usage.peak); // step 0 sizes the reusable buffers
        }
        ff_loss.push(((s + 1) as f64, r.mean_loss()));
        if (s as u64 + 1).is_multiple_of(EVAL_EVERY) || s + 1 == batches.len() {
            curve.push((s as u64 + 1, accuracy(&mut trainer, &dev_test)?));
        }
    }
    let ff_secs = ff_start.elapsed().as_secs_f64();
    let ff_acc = curve.last().map_or(zero, |p| p.1);
    lastmile_core::format::save_quant(
        &args.out.join("demo-16w8a-adapted.lmm"),
        &trainer.into_model(),
    )
    .map_err(|e| anyhow!("{e}"))?;
    say(
        ui,
        &format!(
            "4. QZO-FF 16w8a (m=3 sign-SPSA, all {} params, {} steps = {} forward calls, {:.1} s): accuracy {:.2}% -> {:.2}%",
            q16.num_trainable(),
            args.steps,
            args.steps * 6,
            ff_secs,
            zero * 100.0,
            ff_acc * 100.0
        ),
    );

    // 4b. BP-FT from the same pretrained weights, same data and budget, float32.
    let mut bp_model = float.clone();
    Scope::All.apply(&mut bp_model);
    let (xdtr, xdte) = (dataset_inputs(&dev_train), dataset_inputs(&dev_test));
    let bp_cfg = BpConfig {
        optimizer: Optimizer::adamw(1e-4),
        lr: 1e-3,
        schedule: LrSchedule::Constant,
        budget: Budget::Steps(args.steps as usize),
        batch_size: BATCH,
        seed: args.seed,
        log_every: Some(10),
    };
    let bp = lastmile_bp::train(
        &mut bp_model,
        Samples::new(&xdtr, &dev_train.labels),
        Some(Samples::new(&xdte, &dev_test.labels)),
        &bp_cfg,
    )
    .map_err(|e| anyhow!("BP adaptation failed: {e}"))?;
    let bp_acc = bp.final_test.map_or(0.0, |s| s.accuracy as f64);
    // One BP step, measured: model set-up, forward with saved activations, backward, AdamW.
    let one = BpConfig {
        budget: Budget::Steps(1),
        log_every: None,
        ..bp_cfg.clone()
    };
    let mut scratch = float.clone();
    Scope::All.apply(&mut scratch);
    let xb: Vec<f32> = xdtr[..BATCH * sample].to_vec();
    let (res, bp_usage) = lastmile_memory::measure(|| {
        lastmile_bp::train(
            &mut scratch,
            Samples::new(&xb, &dev_train.labels[..BATCH]),
            None,
            &one,
        )
    });
    res.map_err(|e| anyhow!("{e}"))?;
    say(
        ui,
        &format!(
            "   BP-FT float32 (AdamW, same data and {} steps, {:.1} s): accuracy {:.2}%",
            args.steps,
            bp.seconds,
            bp_acc * 100.0
        ),
    );

    // 5. Memory.
    let est = lastmile_bp::step_memory_estimate(&float, BATCH, &bp_cfg.optimizer)
        .map_err(|e| anyhow!("{e}"))?;
    let ff_analytic = lastmile_memory::parameter_bytes(&q16)
        + lastmile_memory::inference_activation_peak(&q16, BATCH);
    let ff_mem = Memory {
        measured_peak_bytes: ff_peak,
        analytic_bytes: ff_analytic,
        analytic_note: format!(
            "int16 weights {} B + int8 activations (inference peak) {} B; no gradients, no optimizer state, z regenerated",
            lastmile_memory::parameter_bytes(&q16),
            lastmile_memory::inference_activation_peak(&q16, BATCH)
        ),
    };
    let bp_mem = Memory {
        measured_peak_bytes: bp_usage.peak,
        analytic_bytes: est.total(),
        analytic_note: format!(
            "f32 weights {} B + gradients {} B + AdamW state {} B + saved activations {} B + transient forward activations {} B",
            est.weights,
            est.gradients,
            est.optimizer_state,
            est.activations_saved,
            est.activations_transient
        ),
    };
    say(
        ui,
        &format!(
            "5. memory of one training step, batch {BATCH}: QZO-FF {} B of heap during a warm step (measured), {} B weights + activations (analytic); BP {} B of heap for a step incl. building its graph (measured), {} B weights + gradients + AdamW + saved activations (analytic)",
            ff_mem.measured_peak_bytes,
            ff_mem.analytic_bytes,
            bp_mem.measured_peak_bytes,
            bp_mem.analytic_bytes
        ),
    );

    // Plot.
    let plot = args.out.join("demo-curves.png");
    let acc_panel = LineChart {
        title: format!(
            "digits, {} (synthetic shift): test accuracy",
            dev_test.name.split('+').nth(1).unwrap_or("")
        ),
        x_label: "adaptation step".into(),
        y_label: "accuracy".into(),
        series: vec![Series {
            name: "QZO-FF 16w8a".into(),
            points: curve.iter().map(|&(s, a)| (s as f64, a)).collect(),
            color: 0,
        }],
        hlines: vec![
            HLine {
                name: format!("BP-FT f32 after {} steps", args.steps),
                y: bp_acc,
                color: 1,
            },
            HLine {
                name: "zero-shot 16w8a".into(),
                y: zero,
                color: 5,
            },
        ],
        y_range: Some((0.0, 1.0)),
    };
    let smooth = |v: &[(f64, f64)]| -> Vec<(f64, f64)> {
        let mut m = f64::NAN;
        v.iter()
            .map(|&(x, y)| {
                m = if m.is_nan() { y } else { 0.9 * m + 0.1 * y };
                (x, m)
            })
            .collect()
    };
    let loss_panel = LineChart {
        title: "training loss (QZO-FF: mean of L+ and L-, smoothed)".into(),
        x_label: "adaptation step".into(),
        y_label: "cross-entropy".into(),
        series: vec![
            Series {
                name: "QZO-FF 16w8a".into(),
                points: smooth(&ff_loss),
                color: 0,
            },
            Series {
                name: "BP-FT f32".into(),
                points: bp
                    .log
                    .iter()
                    .map(|s| (s.step as f64, s.train.loss as f64))
                    .collect(),
                color: 1,
            },
        ],
        hlines: vec![],
        y_range: None,
    };
    lastmile_plot::line_charts(&plot, &[acc_panel, loss_panel], 1200, 420)
        .map_err(|e| anyhow!("{e}"))?;
    let note = if lastmile_plot::fonts_available() {
        ""
    } else {
        " (no system font found: drawn without text; apt-get install fonts-dejavu-core)"
    };
    say(ui, &format!("wrote {}{note}", plot.display()));
    let seconds = start.elapsed().as_secs_f64();
    say(ui, &format!("done in {:.1} s", seconds));
    if ui.json {
        let j = DemoJson {
            pretrained_float_accuracy: float_acc,
            quantized_16w8a_accuracy: q_acc,
            shift: dev_test.name.clone(),
            zero_shot_accuracy: zero,
            qzo_ff_16w8a_accuracy: ff_acc,
            bp_ft_f32_accuracy: bp_acc,
            qzo_ff_curve: curve,
            qzo_ff_memory: ff_mem,
            bp_memory: bp_mem,
            plot: plot.display().to_string(),
            seconds,
        };
        println!("{}", serde_json::to_string_pretty(&j)?);
    }
    Ok(())
}
