//! # mcu-adapt — one QZO-FF adaptation run, for a Cortex-M4F and for the host
//!
//! The firmware (`firmware/`, `thumbv7em-none-eabihf`) and the host reference (`host/`) both
//! call [`run`] on the same two byte strings — a lastmile model file and a labelled set in the
//! [`set`] format — with the same [`Settings`]. The training itself is
//! [`lastmile_train::Trainer`] on [`lastmile_backend_cpu_ref::CpuRef`]: nothing of the
//! algorithm is copied here, this crate only feeds batches and counts. Because the trainer is
//! bit-exact by construction (portable `z`, integer updates, `libm` loss), the trained weights
//! hash the same on both; `cargo xtask test --target thumbv7em-none-eabihf` checks that.
//!
//! `no_std` + `alloc`.
#![no_std]
#![deny(unsafe_code)] // one exception: the SMLAD `asm!` in `dsp`
#![warn(missing_docs)]

extern crate alloc;

pub mod dsp;
pub mod set;

use alloc::format;
use alloc::string::String;
use alloc::vec::Vec;
use core::fmt;

use lastmile_backend_cpu_ref::CpuRef;
use lastmile_core::format::quant_from_bytes;
use lastmile_core::model::{QData, QuantModel};
use lastmile_train::{Distribution, StepConfig, Trainer};
use sha2::{Digest, Sha256};

pub use set::LabelledSet;

/// Prefix of every line the run prints; `cargo xtask test` parses the [`RESULT_TAG`] line.
pub const TAG: &str = "mcu-adapt:";
/// Prefix of the machine-readable result line (see [`Outcome`]'s `Display`).
pub const RESULT_TAG: &str = "mcu-adapt result:";
/// Prefix of the DSP kernel check's line (see [`check_dsp`]).
pub const DSP_TAG: &str = "mcu-adapt dsp:";

/// What one run does. [`Settings::default`] is the run CI checks.
#[derive(Clone, Debug, PartialEq)]
pub struct Settings {
    /// QZO-FF steps.
    pub steps: u32,
    /// Samples per step (and per evaluation chunk, so one set of buffers serves both).
    pub batch: usize,
    /// Print the mean loss every this many steps (0 = never).
    pub log_every: u32,
    /// The step configuration handed to the trainer.
    pub config: StepConfig,
}

/// Steps of the default run: 40, or `$MCU_ADAPT_STEPS` at build time (the xtask builds the
/// host reference and the firmware in one environment, so both see the same value; `0` shows
/// the test failing when accuracy does not rise).
pub fn default_steps() -> u32 {
    option_env!("MCU_ADAPT_STEPS")
        .and_then(|s| s.trim().parse().ok())
        .unwrap_or(40)
}

impl Default for Settings {
    fn default() -> Self {
        // 16w8a: qmax = 32767 LSBs. ε = 1% and lr = 0.3% of qmax, m = 3 (as `lastmile demo`).
        Settings {
            steps: default_steps(),
            batch: 16,
            log_every: 5,
            config: StepConfig {
                seed: 8,
                draws: 3,
                distribution: Distribution::Gaussian,
                epsilon_lsb: 328,
                lr: 98.0,
                ..StepConfig::default()
            },
        }
    }
}

/// Where a run is when it calls its `log` callback.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Phase {
    /// Model and set parsed.
    Loaded,
    /// Trainer prepared and the pretrained model evaluated: everything inference needs.
    Baseline,
    /// After this many training steps.
    Step(u32),
    /// Trained model evaluated.
    Done,
}

/// Loss and top-1 count over a set.
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct Score {
    /// Correct top-1 predictions.
    pub correct: usize,
    /// Samples.
    pub total: usize,
    /// Mean cross-entropy.
    pub loss: f64,
}

impl Score {
    /// Accuracy in percent.
    pub fn percent(&self) -> f64 {
        if self.total == 0 {
            0.0
        } else {
            100.0 * self.correct as f64 / self.total as f64
        }
    }
}

/// What a run did.
#[derive(Clone, Debug, PartialEq)]
pub struct Outcome {
    /// Held-out accuracy of the pretrained model.
    pub before: Score,
    /// Held-out accuracy after adaptation.
    pub after: Score,
    /// Steps taken.
    pub steps: u64,
    /// Forward calls made by the steps (evaluation not included).
    pub forwards: u64,
    /// Trainable elements.
    pub trainable: u64,
    /// SHA-256 of the starting weights (see [`weights_sha256`]).
    pub initial_sha256: [u8; 32],
    /// SHA-256 of the trained weights.
    pub trained_sha256: [u8; 32],
    /// Weight and bias codes that differ from the starting model.
    pub changed: usize,
}

impl Outcome {
    /// Whether adaptation raised held-out accuracy above the pretrained baseline.
    pub fn improved(&self) -> bool {
        self.after.correct > self.before.correct
    }
}

struct Hex<'a>(&'a [u8]);

impl fmt::Display for Hex<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.0.iter().try_for_each(|b| write!(f, "{b:02x}"))
    }
}

/// The machine-readable result line: `mcu-adapt result: before=C/N after=C/N ...`.
impl fmt::Display for Outcome {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{RESULT_TAG} before={}/{} after={}/{} loss_before={:.6} loss_after={:.6} steps={} \
             forwards={} trainable={} changed={} initial_sha256={} trained_sha256={}",
            self.before.correct,
            self.before.total,
            self.after.correct,
            self.after.total,
            self.before.loss,
            self.after.loss,
            self.steps,
            self.forwards,
            self.trainable,
            self.changed,
            Hex(&self.initial_sha256),
            Hex(&self.trained_sha256),
        )
    }
}

/// SHA-256 of every parameter's codes in parameter order, little-endian at their storage
/// width (i8 / i16 weights, i32 biases): identical bytes ⇔ identical weights.
pub fn weights_sha256(model: &QuantModel) -> [u8; 32] {
    let mut h = Sha256::new();
    for p in &model.params {
        match &p.data {
            QData::I8(v) => v.iter().for_each(|x| h.update(x.to_le_bytes())),
            QData::I16(v) => v.iter().for_each(|x| h.update(x.to_le_bytes())),
            QData::I32(v) => v.iter().for_each(|x| h.update(x.to_le_bytes())),
        }
    }
    h.finalize().into()
}

fn changed_codes(a: &QuantModel, b: &QuantModel) -> usize {
    a.params
        .iter()
        .zip(&b.params)
        .map(|(p, q)| {
            (0..p.data.len())
                .filter(|&i| p.data.get(i) != q.data.get(i))
                .count()
        })
        .sum()
}

/// Loss and accuracy of the trainer's current weights on `x`/`y`, in chunks of `batch`.
fn evaluate(
    trainer: &mut Trainer,
    set: &LabelledSet<'_>,
    batch: usize,
    buf: &mut Vec<i8>,
) -> Result<Score, String> {
    let mut score = Score {
        total: set.test_len(),
        ..Score::default()
    };
    let mut loss_sum = 0.0f64;
    let mut start = 0;
    while start < set.test_len() {
        let end = (start + batch).min(set.test_len());
        set.test_codes(start..end, buf);
        let labels = set.test_labels(start..end);
        let (loss, correct) = trainer
            .evaluate(buf, labels)
            .map_err(|e| format!("evaluating test samples {start}..{end}: {e}"))?;
        loss_sum += loss * labels.len() as f64;
        score.correct += correct;
        start = end;
    }
    score.loss = if score.total == 0 {
        0.0
    } else {
        loss_sum / score.total as f64
    };
    Ok(score)
}

/// Parses the model file (must be quantized, with trainable parameters marked).
pub fn parse_model(model: &[u8]) -> Result<QuantModel, String> {
    quant_from_bytes(model).map_err(|e| format!("the embedded model file: {e}"))
}

/// The adaptation run: evaluate the pretrained model on the set's test part, take
/// `settings.steps` QZO-FF steps over its adaptation part (batches in order, wrapping
/// around), evaluate again, hash the weights. `log` receives human-readable progress lines
/// with the phase they close. Returns the outcome and the trained model.
pub fn run(
    model_file: &[u8],
    set_file: &[u8],
    settings: &Settings,
    log: &mut dyn FnMut(Phase, fmt::Arguments<'_>),
) -> Result<(Outcome, QuantModel), String> {
    let set = LabelledSet::parse(set_file)?;
    let model = parse_model(model_file)?;
    let sample: usize = model.topology.input_shape.iter().product();
    if sample != set.sample_len() {
        return Err(format!(
            "the set has {}-code samples but the model's input {:?} takes {sample}",
            set.sample_len(),
            model.topology.input_shape
        ));
    }
    if settings.batch == 0 || settings.batch > set.train_len() {
        return Err(format!(
            "batch {} must be in 1..={} (the adaptation samples)",
            settings.batch,
            set.train_len()
        ));
    }
    let initial_sha256 = weights_sha256(&model);
    let name = model
        .metadata
        .get("name")
        .map_or("(unnamed)", String::as_str);
    log(
        Phase::Loaded,
        format_args!(
            "{TAG} model {name}, {}, {} of {} parameters trainable; set {}: {} adaptation / {} test samples",
            model.weight_bits.scheme(),
            model.num_trainable(),
            model.num_params(),
            set.name(),
            set.train_len(),
            set.test_len()
        ),
    );
    let mut trainer = Trainer::new(&CpuRef, model, settings.config.clone())?;
    let mut buf: Vec<i8> = Vec::new();
    let before = evaluate(&mut trainer, &set, settings.batch, &mut buf)?;
    log(
        Phase::Baseline,
        format_args!(
            "{TAG} before: accuracy {:.2}% ({}/{}), loss {:.4}",
            before.percent(),
            before.correct,
            before.total,
            before.loss
        ),
    );
    let batches = set.train_len() / settings.batch;
    let mut forwards = 0u64;
    let mut loss_sum = 0.0;
    for s in 0..settings.steps {
        let b = s as usize % batches;
        let range = b * settings.batch..(b + 1) * settings.batch;
        set.train_codes(range.clone(), &mut buf);
        let report = trainer.step(&buf, set.train_labels(range), settings.config.lr)?;
        forwards += u64::from(report.forwards);
        loss_sum += report.mean_loss();
        if settings.log_every > 0 && (s + 1) % settings.log_every == 0 {
            log(
                Phase::Step(s + 1),
                format_args!(
                    "{TAG} step {:>4}: mean loss of the last {} steps {:.4}",
                    s + 1,
                    settings.log_every,
                    loss_sum / f64::from(settings.log_every)
                ),
            );
            loss_sum = 0.0;
        }
    }
    let after = evaluate(&mut trainer, &set, settings.batch, &mut buf)?;
    log(
        Phase::Done,
        format_args!(
            "{TAG} after {} steps ({forwards} forward calls): accuracy {:.2}% ({}/{}), loss {:.4}",
            trainer.steps(),
            after.percent(),
            after.correct,
            after.total,
            after.loss
        ),
    );
    let trainable = trainer.trainable_elements();
    let steps = trainer.steps();
    let trained = trainer.into_model();
    let trained_sha256 = weights_sha256(&trained);
    // The starting weights are re-read from the file rather than kept during training.
    let changed = changed_codes(&parse_model(model_file)?, &trained);
    let outcome = Outcome {
        before,
        after,
        steps,
        forwards,
        trainable,
        initial_sha256,
        trained_sha256,
        changed,
    };
    Ok((outcome, trained))
}

/// The DSP kernel path against the reference: every output code of the set's test samples,
/// for the starting and the trained weights, from [`dsp::CortexMDsp`] and from cpu-ref. Returns
/// the line to print (`mcu-adapt dsp: backend=... tier=... codes=N identical`), or the first
/// difference.
pub fn check_dsp(
    model_file: &[u8],
    set_file: &[u8],
    trained: &QuantModel,
) -> Result<String, String> {
    use lastmile_core::backend::Backend;
    let set = LabelledSet::parse(set_file)?;
    let mut x = Vec::new();
    set.test_codes(0..set.test_len(), &mut x);
    let mut codes = 0;
    for (what, model) in [
        ("starting", &parse_model(model_file)?),
        ("trained", trained),
    ] {
        codes += dsp::compare_with_reference(model, &x, set.test_len(), 16)
            .map_err(|e| format!("{what} weights: {e}"))?;
    }
    let b = dsp::CortexMDsp;
    Ok(format!(
        "{DSP_TAG} backend={} tier={} codes={codes} identical to cpu-ref (test set, starting and trained weights)",
        b.name(),
        b.tier()
    ))
}
