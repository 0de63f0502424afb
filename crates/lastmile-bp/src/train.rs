//! Training by backpropagation: softmax cross-entropy, SGD (+ momentum) or AdamW.

use std::time::Instant;

use candle_core::backprop::GradStore;
use candle_core::{D, DType, Tensor, Var};
use candle_nn::optim::{AdamW, Optimizer as _, ParamsAdamW};
use lastmile_core::model::FloatModel;

use crate::{BpError, BpModel};

/// Which optimizer updates the trainable parameters.
#[derive(Clone, Debug, PartialEq)]
pub enum Optimizer {
    /// `v ← μ·v + g + λ·w; w ← w − lr·v` (PyTorch's SGD; `momentum = 0` is plain
    /// SGD and keeps no state).
    Sgd {
        /// μ, in `[0, 1)`.
        momentum: f64,
        /// λ, L2 penalty added to the gradient.
        weight_decay: f64,
    },
    /// AdamW (decoupled weight decay), `candle_nn::optim::AdamW`.
    AdamW {
        /// β₁.
        beta1: f64,
        /// β₂.
        beta2: f64,
        /// ε.
        eps: f64,
        /// Decoupled weight decay.
        weight_decay: f64,
    },
}

impl Optimizer {
    /// Plain SGD.
    pub const fn sgd() -> Self {
        Optimizer::Sgd {
            momentum: 0.0,
            weight_decay: 0.0,
        }
    }

    /// SGD with momentum `m`.
    pub const fn sgd_momentum(m: f64) -> Self {
        Optimizer::Sgd {
            momentum: m,
            weight_decay: 0.0,
        }
    }

    /// AdamW with β = (0.9, 0.999), ε = 1e-8 and the given weight decay.
    pub const fn adamw(weight_decay: f64) -> Self {
        Optimizer::AdamW {
            beta1: 0.9,
            beta2: 0.999,
            eps: 1e-8,
            weight_decay,
        }
    }

    /// f32 values of optimizer state per trainable parameter: 0 (plain SGD),
    /// 1 (SGD momentum buffer) or 2 (Adam's two moments).
    pub fn state_per_param(&self) -> usize {
        match self {
            Optimizer::Sgd { momentum, .. } if *momentum == 0.0 => 0,
            Optimizer::Sgd { .. } => 1,
            Optimizer::AdamW { .. } => 2,
        }
    }
}

/// How long to train.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Budget {
    /// Full passes over the training set.
    Epochs(usize),
    /// Optimizer steps (batches), continuing into new epochs as needed; the
    /// last epoch may be partial.
    Steps(usize),
}

/// Learning-rate schedule over the whole budget.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum LrSchedule {
    /// `lr` throughout.
    Constant,
    /// Cosine decay from `lr` to 0 over the total number of steps.
    Cosine,
}

/// Configuration of [`train`].
///
/// **Scope (LP / FT)** is not part of the config: it is the `trainable` flag of
/// each `ParamSpec` of the model passed to [`train`]. Set the flags first, e.g.
/// with [`crate::Scope::apply`] (`Scope::Head` = LP, `Scope::All` = FT).
#[derive(Clone, Debug, PartialEq)]
pub struct BpConfig {
    /// Optimizer.
    pub optimizer: Optimizer,
    /// (Peak) learning rate.
    pub lr: f64,
    /// Schedule of the learning rate.
    pub schedule: LrSchedule,
    /// Training length.
    pub budget: Budget,
    /// Samples per step (the last batch of an epoch may be smaller).
    pub batch_size: usize,
    /// Seed of the data order: epoch `e` visits the samples in the order
    /// `lastmile_data::permutation(n, seed + e)` — exactly
    /// `Dataset::batches(batch_size, Some(seed + e))` on the same data.
    pub seed: u64,
    /// Also record the mean train loss / accuracy every this many steps
    /// ([`BpReport::log`]); `None` = per epoch only.
    pub log_every: Option<usize>,
}

impl Default for BpConfig {
    /// AdamW (weight decay 1e-4), lr 1e-2 constant, 10 epochs, batch 32, seed 0.
    fn default() -> Self {
        BpConfig {
            optimizer: Optimizer::adamw(1e-4),
            lr: 1e-2,
            schedule: LrSchedule::Constant,
            budget: Budget::Epochs(10),
            batch_size: 32,
            seed: 0,
            log_every: None,
        }
    }
}

/// Loss and accuracy over a span of training or over a whole set.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Stats {
    /// Mean softmax cross-entropy.
    pub loss: f32,
    /// Fraction of correct argmax predictions, in `[0, 1]`.
    pub accuracy: f32,
    /// Samples it was measured on.
    pub samples: usize,
}

/// One epoch of [`train`].
#[derive(Clone, Debug, PartialEq)]
pub struct EpochStats {
    /// 0-based epoch.
    pub epoch: usize,
    /// Optimizer steps done by the end of this epoch (cumulative).
    pub steps: usize,
    /// Running mean over this epoch's batches, measured *during* training
    /// (each batch before its update).
    pub train: Stats,
    /// On the test set after the epoch, if one was given.
    pub test: Option<Stats>,
}

/// A point of the step log ([`BpConfig::log_every`]).
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct StepStats {
    /// Steps done.
    pub step: usize,
    /// Learning rate of the last step.
    pub lr: f64,
    /// Mean over the batches since the previous log point.
    pub train: Stats,
}

/// What [`train`] did.
#[derive(Clone, Debug, PartialEq)]
pub struct BpReport {
    /// Per epoch (the last may be partial under [`Budget::Steps`]).
    pub epochs: Vec<EpochStats>,
    /// Every `log_every` steps, if asked.
    pub log: Vec<StepStats>,
    /// Optimizer steps done.
    pub steps: usize,
    /// Trainable parameter count (elements).
    pub trainable_params: usize,
    /// Test-set loss / accuracy of the exported model, if a test set was given.
    pub final_test: Option<Stats>,
    /// Wall time of the training loop (seconds); informational only.
    pub seconds: f64,
}

/// A labelled set as plain slices: `inputs` is `n × Π input_shape` values
/// (already normalized, NHWC per sample), `labels` has `n` class indices.
#[derive(Clone, Copy, Debug)]
pub struct Samples<'a> {
    /// Row-major inputs.
    pub inputs: &'a [f32],
    /// One class index per sample.
    pub labels: &'a [u8],
}

impl<'a> Samples<'a> {
    /// Pairs inputs with labels.
    pub fn new(inputs: &'a [f32], labels: &'a [u8]) -> Self {
        Samples { inputs, labels }
    }

    /// Number of samples.
    pub fn len(&self) -> usize {
        self.labels.len()
    }

    /// Whether there are no samples.
    pub fn is_empty(&self) -> bool {
        self.labels.is_empty()
    }

    fn check(&self, bp: &BpModel, what: &str) -> Result<usize, BpError> {
        let per: usize = bp.input_shape().iter().product();
        let n = self.labels.len();
        if self.inputs.len() != n * per {
            return Err(BpError::Input(format!(
                "{what}: {} input values for {n} labels, expected {n} × {per}",
                self.inputs.len()
            )));
        }
        let classes = bp.output_shape().iter().product::<usize>();
        if bp.output_shape().len() != 1 {
            return Err(BpError::Input(format!(
                "{what}: the model's output has shape {:?}; classification needs [classes]",
                bp.output_shape()
            )));
        }
        if let Some(i) = self.labels.iter().position(|&l| l as usize >= classes) {
            return Err(BpError::Input(format!(
                "{what}: label #{i} = {} but the model has {classes} outputs",
                self.labels[i]
            )));
        }
        Ok(per)
    }
}

enum Opt {
    Sgd {
        vars: Vec<Var>,
        bufs: Vec<Option<Tensor>>,
        momentum: f64,
        weight_decay: f64,
        lr: f64,
    },
    AdamW(AdamW),
}

impl Opt {
    fn new(vars: Vec<Var>, cfg: &BpConfig) -> Result<Self, BpError> {
        Ok(match cfg.optimizer {
            Optimizer::Sgd {
                momentum,
                weight_decay,
            } => {
                if !(0.0..1.0).contains(&momentum) {
                    return Err(BpError::Input(format!(
                        "SGD momentum {momentum} must be in [0, 1)"
                    )));
                }
                Opt::Sgd {
                    bufs: vec![None; vars.len()],
                    vars,
                    momentum,
                    weight_decay,
                    lr: cfg.lr,
                }
            }
            Optimizer::AdamW {
                beta1,
                beta2,
                eps,
                weight_decay,
            } => Opt::AdamW(AdamW::new(
                vars,
                ParamsAdamW {
                    lr: cfg.lr,
                    beta1,
                    beta2,
                    eps,
                    weight_decay,
                },
            )?),
        })
    }

    fn set_lr(&mut self, new_lr: f64) {
        match self {
            Opt::Sgd { lr, .. } => *lr = new_lr,
            Opt::AdamW(a) => a.set_learning_rate(new_lr),
        }
    }

    fn step(&mut self, grads: &GradStore) -> candle_core::Result<()> {
        match self {
            Opt::AdamW(a) => a.step(grads),
            Opt::Sgd {
                vars,
                bufs,
                momentum,
                weight_decay,
                lr,
            } => {
                for (var, buf) in vars.iter().zip(bufs.iter_mut()) {
                    let Some(g) = grads.get(var) else { continue };
                    let mut g = g.clone();
                    if *weight_decay != 0.0 {
                        g = (g + (var.as_tensor() * *weight_decay)?)?;
                    }
                    if *momentum != 0.0 {
                        let v = match buf.take() {
                            Some(v) => ((v * *momentum)? + g)?,
                            None => g,
                        };
                        g = v.clone();
                        *buf = Some(v);
                    }
                    var.set(&(var.as_tensor() - (g * *lr)?)?)?;
                }
                Ok(())
            }
        }
    }
}

/// Sum of losses and count of correct predictions of one batch.
struct BatchOut {
    loss: Tensor,
    loss_sum: f64,
    correct: usize,
}

fn batch_loss(bp: &BpModel, x: &Tensor, y: &Tensor) -> candle_core::Result<BatchOut> {
    let logits = bp.forward(x)?;
    let loss = candle_nn::loss::cross_entropy(&logits, y)?;
    let n = y.dim(0)?;
    let loss_sum = loss.to_dtype(DType::F64)?.to_scalar::<f64>()? * n as f64;
    let pred = logits.argmax(D::Minus1)?;
    let correct = pred
        .eq(y)?
        .to_dtype(DType::U32)?
        .sum_all()?
        .to_scalar::<u32>()? as usize;
    Ok(BatchOut {
        loss,
        loss_sum,
        correct,
    })
}

fn gather(
    bp: &BpModel,
    data: &Samples<'_>,
    per: usize,
    idx: &[usize],
) -> Result<(Tensor, Tensor), BpError> {
    let mut xs = Vec::with_capacity(idx.len() * per);
    let mut ys = Vec::with_capacity(idx.len());
    for &i in idx {
        xs.extend_from_slice(&data.inputs[i * per..(i + 1) * per]);
        ys.push(u32::from(data.labels[i]));
    }
    let x = bp.input_tensor(&xs, idx.len())?;
    let y = Tensor::from_vec(ys, idx.len(), bp.device())?;
    Ok((x, y))
}

/// Accumulates loss and accuracy.
#[derive(Default)]
struct Meter {
    loss: f64,
    correct: usize,
    samples: usize,
}

impl Meter {
    fn add(&mut self, b: &BatchOut, n: usize) {
        self.loss += b.loss_sum;
        self.correct += b.correct;
        self.samples += n;
    }
    fn stats(&self) -> Stats {
        let d = self.samples.max(1) as f64;
        Stats {
            loss: (self.loss / d) as f32,
            accuracy: (self.correct as f64 / d) as f32,
            samples: self.samples,
        }
    }
}

/// Loss and accuracy of `bp` on `data` (no gradients), in chunks of 256.
pub fn evaluate_bp(bp: &BpModel, data: Samples<'_>) -> Result<Stats, BpError> {
    let per = data.check(bp, "evaluation set")?;
    let mut m = Meter::default();
    let idx: Vec<usize> = (0..data.len()).collect();
    for chunk in idx.chunks(256) {
        let (x, y) = gather(bp, &data, per, chunk)?;
        let b = batch_loss(bp, &x, &y)?;
        m.add(&b, chunk.len());
    }
    Ok(m.stats())
}

/// Mean softmax cross-entropy and accuracy (in `[0, 1]`) of `model` on
/// `n` samples: `inputs` (`n × Π input_shape`, normalized) and `labels`.
pub fn evaluate(model: &FloatModel, inputs: &[f32], labels: &[u8]) -> Result<(f32, f32), BpError> {
    let bp = BpModel::new(model)?;
    let s = evaluate_bp(&bp, Samples::new(inputs, labels))?;
    Ok((s.loss, s.accuracy))
}

/// Trains the trainable parameters of `model` (those with
/// `spec.trainable == true`; set them first — LP: the head only, FT: all) by
/// backpropagation of the mean softmax cross-entropy, then writes them back
/// into `model`. Frozen parameters are not touched and no gradient is
/// computed for them.
///
/// `train` holds the training samples, `test` an optional held-out set
/// evaluated after every epoch and at the end.
///
/// Runs on the CPU with candle's thread pools (rayon + gemm); set
/// `RAYON_NUM_THREADS=1` for single-thread numbers.
pub fn train(
    model: &mut FloatModel,
    train: Samples<'_>,
    test: Option<Samples<'_>>,
    cfg: &BpConfig,
) -> Result<BpReport, BpError> {
    let start = Instant::now();
    let bp = BpModel::new(model)?;
    let per = train.check(&bp, "training set")?;
    if let Some(t) = &test {
        t.check(&bp, "test set")?;
    }
    if train.is_empty() {
        return Err(BpError::Input("training set is empty".into()));
    }
    if cfg.batch_size == 0 {
        return Err(BpError::Input("batch size must be ≥ 1".into()));
    }
    if !(cfg.lr.is_finite() && cfg.lr > 0.0) {
        return Err(BpError::Input(format!(
            "learning rate {} must be finite and positive",
            cfg.lr
        )));
    }
    let vars = bp.trainable_vars();
    if vars.is_empty() {
        return Err(BpError::Input(
            "no parameter is trainable: set spec.trainable on the parameters to train (e.g. Scope::Head.apply)".into(),
        ));
    }
    let trainable_params = vars.iter().map(|v| v.elem_count()).sum();
    let n = train.len();
    let steps_per_epoch = n.div_ceil(cfg.batch_size);
    let total_steps = match cfg.budget {
        Budget::Epochs(e) => e * steps_per_epoch,
        Budget::Steps(s) => s,
    };
    let mut opt = Opt::new(vars, cfg)?;
    let mut report = BpReport {
        epochs: Vec::new(),
        log: Vec::new(),
        steps: 0,
        trainable_params,
        final_test: None,
        seconds: 0.0,
    };
    let mut since_log = Meter::default();
    let mut lr = cfg.lr;
    let mut epoch = 0usize;
    while report.steps < total_steps {
        let order = lastmile_data::permutation(n, cfg.seed.wrapping_add(epoch as u64));
        let mut meter = Meter::default();
        for idx in order.chunks(cfg.batch_size) {
            if report.steps >= total_steps {
                break;
            }
            lr = match cfg.schedule {
                LrSchedule::Constant => cfg.lr,
                LrSchedule::Cosine => {
                    let t = report.steps as f64 / total_steps.max(1) as f64;
                    0.5 * cfg.lr * (1.0 + (std::f64::consts::PI * t).cos())
                }
            };
            opt.set_lr(lr);
            let (x, y) = gather(&bp, &train, per, idx)?;
            let b = batch_loss(&bp, &x, &y)?;
            if !b.loss_sum.is_finite() {
                return Err(BpError::Diverged {
                    step: report.steps,
                    loss: b.loss_sum / idx.len() as f64,
                });
            }
            let grads = b.loss.backward()?;
            opt.step(&grads)?;
            report.steps += 1;
            meter.add(&b, idx.len());
            since_log.add(&b, idx.len());
            if let Some(every) = cfg.log_every
                && every > 0
                && report.steps.is_multiple_of(every)
            {
                report.log.push(StepStats {
                    step: report.steps,
                    lr,
                    train: since_log.stats(),
                });
                since_log = Meter::default();
            }
        }
        let test_stats = match &test {
            Some(t) => Some(evaluate_bp(&bp, *t)?),
            None => None,
        };
        report.epochs.push(EpochStats {
            epoch,
            steps: report.steps,
            train: meter.stats(),
            test: test_stats,
        });
        epoch += 1;
    }
    if let Some(every) = cfg.log_every
        && every > 0
        && since_log.samples > 0
    {
        report.log.push(StepStats {
            step: report.steps,
            lr,
            train: since_log.stats(),
        });
    }
    bp.export_into(model)?;
    report.final_test = report.epochs.last().and_then(|e| e.test);
    if report.final_test.is_none()
        && let Some(t) = test
    {
        report.final_test = Some(evaluate_bp(&bp, t)?);
    }
    report.seconds = start.elapsed().as_secs_f64();
    Ok(report)
}
