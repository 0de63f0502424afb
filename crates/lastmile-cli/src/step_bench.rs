//! `lastmile step-bench`: time and peak memory of one training step, QZO-FF vs BP,
//! side by side on the same model and batch.

use std::time::Instant;

use anyhow::{Context, Result, anyhow, bail};
use clap::{Args, ValueEnum};
use lastmile_bp::{BpConfig, Budget, LrSchedule, Optimizer, Samples, Scope};
use lastmile_core::{WeightBits, ptq, zoo};
use lastmile_train::{StepConfig, Trainer};
use serde::Serialize;

use crate::Ui;
use crate::adapt::apply_scope;
use crate::evaluate::pick_backend;
use crate::util;

/// Arguments of `lastmile step-bench`.
#[derive(Debug, Args)]
pub struct StepBenchArgs {
    /// Architectures to measure (comma list).
    #[arg(long, default_value = "digits-cnn,resnet-tiny", value_delimiter = ',')]
    pub arch: Vec<String>,
    /// Input images for resnet-tiny (H = W); digits-cnn is 8×8, mnist-cnn 28×28.
    #[arg(long, default_value_t = 32)]
    pub size: usize,
    /// Samples per step.
    #[arg(long, default_value_t = 32)]
    pub batch: usize,
    /// Timed steps per method (the median is reported).
    #[arg(long, default_value_t = 10)]
    pub steps: usize,
    /// Scope: ft (all parameters) or lp (head only).
    #[arg(long, value_enum, default_value = "ft")]
    pub scope: ScopeArg,
    /// Perturbations per QZO-FF step.
    #[arg(long, default_value_t = 1)]
    pub draws: u32,
    /// Backend for QZO-FF forwards.
    #[arg(long)]
    pub backend: Option<String>,
    /// Print JSON.
    #[arg(long)]
    pub json: bool,
}

/// `--scope`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum ScopeArg {
    /// Full fine-tuning.
    Ft,
    /// Linear probing (head only).
    Lp,
}

#[derive(Debug, Serialize)]
struct Row {
    arch: String,
    input: Vec<usize>,
    batch: usize,
    scope: ScopeArg,
    trainable_params: usize,
    ff_method: String,
    ff_ms_per_step: f64,
    ff_peak_heap_bytes: usize,
    ff_setup_and_step_heap_bytes: usize,
    ff_analytic_bytes: usize,
    bp_method: String,
    bp_ms_per_step: f64,
    bp_peak_heap_bytes: usize,
    bp_analytic_bytes: usize,
    bp_threads: String,
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}

/// `lastmile step-bench`.
pub fn run(args: &StepBenchArgs, ui: Ui) -> Result<()> {
    if args.batch == 0 || args.steps == 0 {
        bail!("--batch and --steps must be at least 1");
    }
    if !lastmile_memory::is_counting() {
        bail!("the counting allocator is not installed in this binary; memory cannot be measured");
    }
    let backend = pick_backend(args.backend.as_deref())?;
    let mut rows = Vec::new();
    for arch in &args.arch {
        let shape: Vec<usize> = match arch.as_str() {
            "digits-cnn" => vec![8, 8, 1],
            "mnist-cnn" => vec![28, 28, 1],
            _ => vec![args.size, args.size, 3],
        };
        let (topology, specs) = zoo::by_name(arch, Some(&shape), 10).ok_or_else(|| {
            anyhow!(
                "--arch: unknown architecture '{arch}'; valid: {}",
                zoo::NAMES.join(", ")
            )
        })?;
        let mut float = zoo::init_float(topology, specs, 7);
        let sample: usize = shape.iter().product();
        // Synthetic inputs: timing and memory do not depend on the pixel values.
        let x: Vec<f32> = (0..args.batch * sample)
            .map(|i| ((i * 2_654_435_761) % 1000) as f32 / 1000.0)
            .collect();
        let y: Vec<u8> = (0..args.batch).map(|i| (i % 10) as u8).collect();
        let (mut q, _) =
            ptq::quantize(&float, &x, args.batch, WeightBits::W16).map_err(|e| anyhow!("{e}"))?;
        apply_scope(
            &mut q,
            if args.scope == ScopeArg::Ft {
                "all"
            } else {
                "head"
            },
        )?;
        match args.scope {
            ScopeArg::Ft => Scope::All.apply(&mut float),
            ScopeArg::Lp => Scope::Head.apply(&mut float),
        }

        // QZO-FF.
        let cfg = StepConfig {
            draws: args.draws,
            epsilon_lsb: 328,
            lr: 98.0,
            ..StepConfig::default()
        };
        let xq: Vec<i8> = x.iter().map(|&v| q.act[0].quantize(v)).collect();
        // Set-up + first step, measured like a BP step (which builds its graph every time).
        let (t, setup) = lastmile_memory::measure(|| -> Result<Trainer> {
            let mut t =
                Trainer::new(backend.as_ref(), q.clone(), cfg.clone()).map_err(|e| anyhow!(e))?;
            t.step(&xq, &y, 98.0).map_err(|e| anyhow!(e))?;
            Ok(t)
        });
        let mut t = t?;
        let mut times = Vec::new();
        let mut ff_peak = 0;
        for _ in 0..args.steps {
            let s = Instant::now();
            let (r, u) = lastmile_memory::measure(|| t.step(&xq, &y, 98.0));
            times.push(s.elapsed().as_secs_f64() * 1e3);
            r.map_err(|e| anyhow!(e))?;
            ff_peak = ff_peak.max(u.peak);
        }
        let ff_ms = median(times);
        let act = lastmile_memory::inference_activation_peak(&q, args.batch);
        let ff_analytic = lastmile_memory::parameter_bytes(&q) + act;

        // BP: each timed call is one full step (set-up, forward keeping activations, backward, AdamW).
        let opt = Optimizer::adamw(1e-4);
        let bp_cfg = BpConfig {
            optimizer: opt.clone(),
            lr: 1e-3,
            schedule: LrSchedule::Constant,
            budget: Budget::Steps(1),
            batch_size: args.batch,
            seed: 0,
            log_every: None,
        };
        let mut times = Vec::new();
        let mut bp_peak = 0;
        for i in 0..=args.steps {
            let mut m = float.clone();
            let s = Instant::now();
            let (r, u) = lastmile_memory::measure(|| {
                lastmile_bp::train(&mut m, Samples::new(&x, &y), None, &bp_cfg)
            });
            let dt = s.elapsed().as_secs_f64() * 1e3;
            r.map_err(|e| anyhow!("BP step failed: {e}"))?;
            if i > 0 {
                times.push(dt);
                bp_peak = bp_peak.max(u.peak);
            }
        }
        let est = lastmile_bp::step_memory_estimate(&float, args.batch, &opt)
            .map_err(|e| anyhow!("{e}"))?;
        rows.push(Row {
            arch: arch.clone(),
            input: shape.clone(),
            batch: args.batch,
            scope: args.scope,
            trainable_params: q.num_trainable(),
            ff_method: format!(
                "QZO-FF 16w8a m={} on {}/{}",
                args.draws,
                backend.name(),
                backend.tier()
            ),
            ff_ms_per_step: ff_ms,
            ff_peak_heap_bytes: ff_peak,
            ff_setup_and_step_heap_bytes: setup.peak,
            ff_analytic_bytes: ff_analytic,
            bp_method: "BP f32 AdamW (candle)".into(),
            bp_ms_per_step: median(times),
            bp_peak_heap_bytes: bp_peak,
            bp_analytic_bytes: est.total(),
            bp_threads: std::env::var("RAYON_NUM_THREADS").unwrap_or_else(|_| "all cores".into()),
        });
    }
    if ui.json {
        println!("{}", serde_json::to_string_pretty(&rows)?);
        return Ok(());
    }
    let kb = |b: usize| format!("{:.1} kB", b as f64 / 1024.0);
    let table: Vec<Vec<String>> = rows
        .iter()
        .map(|r| {
            vec![
                format!("{} {}", r.arch, util::shape_str(&r.input)),
                r.trainable_params.to_string(),
                format!("{:.2}", r.ff_ms_per_step),
                format!("{:.2}", r.bp_ms_per_step),
                kb(r.ff_peak_heap_bytes),
                kb(r.ff_setup_and_step_heap_bytes),
                kb(r.bp_peak_heap_bytes),
                kb(r.ff_analytic_bytes),
                kb(r.bp_analytic_bytes),
            ]
        })
        .collect();
    println!(
        "{}",
        util::table(
            &[
                "model",
                "trainable",
                "FF ms/step",
                "BP ms/step",
                "FF step heap",
                "FF set-up+step heap",
                "BP set-up+step heap",
                "FF analytic",
                "BP analytic"
            ],
            &table
        )
    );
    let first = rows.first().context("no architecture measured")?;
    println!(
        "batch {}, scope {:?}; FF = {}; BP = {} on {} (set RAYON_NUM_THREADS=1 for single-thread BP).\n\
         Heap columns are measured by the counting allocator: bytes allocated beyond those live \
         before the call. FF step heap: one warm step. Set-up+step: preparing the model (a copy \
         of its weights, value buffers) plus one step — what BP pays on every call here, as it \
         builds its graph each time. Analytic: FF = weights + inference activation peak; BP = \
         f32 weights + gradients + AdamW state + activations saved for backward.",
        first.batch, first.scope, first.ff_method, first.bp_method, first.bp_threads
    );
    Ok(())
}
