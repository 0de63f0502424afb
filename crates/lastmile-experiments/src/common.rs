//! Shared plumbing: data, pretraining, quantization, evaluation, and one adaptation
//! run of each method (QZO-FF fixed point, FF float, BP float).

use std::time::Instant;

use anyhow::{Context, Result, anyhow, bail};
use lastmile_bp::{BpConfig, Budget as BpBudget, LrSchedule, Optimizer, Samples, Scope};
use lastmile_core::model::{FloatModel, QuantModel};
use lastmile_core::{Backend, ParamRole, WeightBits, float_exec, ptq, zoo};
use lastmile_data::{Dataset, Split};
use lastmile_train::float::{FloatPrecision, FloatTrainer, float_cross_entropy};
use lastmile_train::loss::cross_entropy;
use lastmile_train::{Estimator, Rounding, Sparsity, StepConfig, Trainer};
use serde::Serialize;

/// Mean and sample standard deviation.
#[derive(Clone, Copy, Debug, Default, Serialize)]
pub struct Stat {
    /// Mean.
    pub mean: f64,
    /// Sample standard deviation (n − 1); 0 for one value.
    pub std: f64,
    /// Number of values.
    pub n: usize,
}

impl Stat {
    /// Of `v`.
    pub fn of(v: &[f64]) -> Stat {
        let n = v.len();
        if n == 0 {
            return Stat {
                mean: f64::NAN,
                std: f64::NAN,
                n,
            };
        }
        let mean = v.iter().sum::<f64>() / n as f64;
        let var = if n > 1 {
            v.iter().map(|x| (x - mean).powi(2)).sum::<f64>() / (n - 1) as f64
        } else {
            0.0
        };
        Stat {
            mean,
            std: var.sqrt(),
            n,
        }
    }

    /// `12.34 ± 0.56` in percent.
    pub fn pct(&self) -> String {
        if self.mean.is_nan() {
            return "—".into();
        }
        format!("{:.2} ± {:.2}", self.mean * 100.0, self.std * 100.0)
    }
}

/// The datasets every experiment uses (test sets possibly subsampled).
#[derive(Debug)]
pub struct Data {
    /// MNIST training set (possibly a seeded subset).
    pub mnist_train: Dataset,
    /// MNIST test set (possibly a seeded subset).
    pub mnist_test: Dataset,
    /// Fashion-MNIST training set (full: the few-shot sets are drawn from it).
    pub fashion_train: Dataset,
    /// Fashion-MNIST test set (possibly a seeded subset).
    pub fashion_test: Dataset,
}

fn open(name: &str, split: Split) -> Result<Dataset> {
    let dir = lastmile_data::data_dir();
    lastmile_data::open(name, split).with_context(|| {
        format!(
            "cannot open {name} ({}) under '{}' (set LASTMILE_DATA or run `cargo xtask data` to fetch MNIST and Fashion-MNIST)",
            split.as_str(),
            dir.display()
        )
    })
}

/// A seeded stratified subset of `n` images (all of them if `n ≥ len`).
pub fn subsample(d: &Dataset, n: usize, seed: u64) -> Dataset {
    if n >= d.len() {
        return d.clone();
    }
    d.split(n as f64 / d.len() as f64, seed).0
}

impl Data {
    /// Loads MNIST and Fashion-MNIST from the data directory.
    pub fn load(mnist_train: usize, test: usize) -> Result<Data> {
        Ok(Data {
            mnist_train: subsample(&open("mnist", Split::Train)?, mnist_train, 11),
            mnist_test: subsample(&open("mnist", Split::Test)?, test, 12),
            fashion_train: open("fashion-mnist", Split::Train)?,
            fashion_test: subsample(&open("fashion-mnist", Split::Test)?, test, 13),
        })
    }
}

/// Every image normalized to `[0, 1]`.
pub fn inputs(d: &Dataset) -> Vec<f32> {
    lastmile_bp::dataset_inputs(d)
}

/// BP-pretrains `mnist-cnn` on `train` (AdamW, cosine); returns the model and its test accuracy.
pub fn pretrain(
    train: &Dataset,
    test: &Dataset,
    epochs: usize,
    seed: u64,
) -> Result<(FloatModel, f64)> {
    pretrain_arch("mnist-cnn", train, test, epochs, seed)
}

/// Peak learning rate of BP pretraining (AdamW, cosine schedule); the report quotes it.
pub const PRETRAIN_LR: f64 = 1e-2;

/// BP-pretrains the zoo architecture `arch` on `train` (AdamW, cosine); returns the model and
/// its test accuracy.
pub fn pretrain_arch(
    arch: &str,
    train: &Dataset,
    test: &Dataset,
    epochs: usize,
    seed: u64,
) -> Result<(FloatModel, f64)> {
    let shape = [train.height, train.width, train.channels];
    let (t, s) = zoo::by_name(arch, Some(&shape), train.num_classes)
        .with_context(|| format!("{arch} is not in the zoo or does not take {shape:?} inputs"))?;
    let mut m = zoo::init_float(t, s, seed);
    Scope::All.apply(&mut m);
    let cfg = BpConfig {
        optimizer: Optimizer::adamw(1e-4),
        lr: PRETRAIN_LR,
        schedule: LrSchedule::Cosine,
        budget: BpBudget::Epochs(epochs),
        batch_size: 64,
        seed,
        log_every: None,
    };
    let (x, tx) = (inputs(train), inputs(test));
    let r = lastmile_bp::train(
        &mut m,
        Samples::new(&x, &train.labels),
        Some(Samples::new(&tx, &test.labels)),
        &cfg,
    )
    .map_err(|e| anyhow!("pretraining failed: {e}"))?;
    Ok((m, r.final_test.map_or(0.0, |s| s.accuracy as f64)))
}

/// Post-training quantization calibrated on (up to 512 of) `calib`.
pub fn quantize(model: &FloatModel, calib: &Dataset, bits: WeightBits) -> Result<QuantModel> {
    let n = calib.len().min(512);
    let idx: Vec<usize> = (0..n).collect();
    let x = inputs(&calib.subset(&idx));
    let (q, _) = ptq::quantize(model, &x, n, bits).map_err(|e| anyhow!("quantization: {e}"))?;
    Ok(q)
}

/// Input codes of every image of `d` for `q`.
pub fn quant_inputs(q: &QuantModel, d: &Dataset) -> Vec<i8> {
    let a = q.act[0];
    inputs(d).iter().map(|&v| a.quantize(v)).collect()
}

/// (loss, accuracy) of a quantized model on `d`.
pub fn eval_quant(backend: &dyn Backend, q: &QuantModel, d: &Dataset) -> Result<(f64, f64)> {
    let mut p = backend.prepare(q).map_err(|e| anyhow!("prepare: {e}"))?;
    let x = quant_inputs(q, d);
    let sample = d.sample_len();
    let classes: usize = p.output_shape().iter().product();
    let quant = *q.act.last().context("no output quantization")?;
    let (mut loss, mut correct) = (0.0, 0usize);
    let mut out = Vec::new();
    for start in (0..d.len()).step_by(256) {
        let end = (start + 256).min(d.len());
        p.forward(
            &q.params,
            &x[start * sample..end * sample],
            end - start,
            &mut out,
        )
        .map_err(|e| anyhow!("forward: {e}"))?;
        let (l, c) = cross_entropy(&out, quant, &d.labels[start..end], classes);
        loss += l * (end - start) as f64;
        correct += c;
    }
    Ok((loss / d.len() as f64, correct as f64 / d.len() as f64))
}

/// (loss, accuracy) of a float model on pre-normalized inputs.
pub fn eval_float_x(m: &FloatModel, x: &[f32], labels: &[u8]) -> Result<(f64, f64)> {
    let shapes = m.validate().map_err(|e| anyhow!("{e}"))?;
    let sample: usize = shapes[0].iter().product();
    let classes: usize = shapes.last().map_or(0, |s| s.iter().product());
    let n = labels.len();
    let (mut loss, mut correct) = (0.0, 0usize);
    for start in (0..n).step_by(256) {
        let end = (start + 256).min(n);
        let y = float_exec::forward(m, &x[start * sample..end * sample], end - start)
            .map_err(|e| anyhow!("{e}"))?;
        let (l, c) = float_cross_entropy(&y, &labels[start..end], classes);
        loss += l * (end - start) as f64;
        correct += c;
    }
    Ok((loss / n.max(1) as f64, correct as f64 / n.max(1) as f64))
}

/// (loss, accuracy) of a float model on `d`.
pub fn eval_float(m: &FloatModel, d: &Dataset) -> Result<(f64, f64)> {
    eval_float_x(m, &inputs(d), &d.labels)
}

/// Index of the last node with weights (the classifier head).
pub fn head_node(t: &lastmile_core::Topology) -> usize {
    (0..t.nodes.len())
        .rev()
        .find(|&i| !t.nodes[i].op.params().is_empty())
        .unwrap_or(0)
}

/// The features entering the head, for every image of `d`: `(features, dim)`.
pub fn head_features(m: &FloatModel, d: &Dataset) -> Result<(Vec<f32>, usize)> {
    let h = head_node(&m.topology);
    let v = m.topology.nodes[h].inputs[0];
    let x = inputs(d);
    let sample = d.sample_len();
    let mut feats = Vec::new();
    for start in (0..d.len()).step_by(256) {
        let end = (start + 256).min(d.len());
        float_exec::forward_observed(
            m,
            &x[start * sample..end * sample],
            end - start,
            &mut |id, data| {
                if id == v {
                    feats.extend_from_slice(data);
                }
            },
        )
        .map_err(|e| anyhow!("{e}"))?;
    }
    let dim = feats.len() / d.len().max(1);
    Ok((feats, dim))
}

/// Replaces the head of `m` (for `classes` outputs) by the nearest-class-mean classifier
/// of the labelled examples `d`: `logits_c = T·(2·μ_c·f − |μ_c|²)` (= −T·|f − μ_c|² up to a
/// per-sample constant), `T` fitted by a log-grid + golden-section search on the examples'
/// cross-entropy (argmax does not depend on `T`).
pub fn ncm_head(m: &FloatModel, d: &Dataset) -> Result<FloatModel> {
    let (f, dim) = head_features(m, d)?;
    let classes = d.num_classes;
    let mut mu = vec![0f64; classes * dim];
    let mut count = vec![0usize; classes];
    for (i, &y) in d.labels.iter().enumerate() {
        count[y as usize] += 1;
        for j in 0..dim {
            mu[y as usize * dim + j] += f[i * dim + j] as f64;
        }
    }
    for c in 0..classes {
        for j in 0..dim {
            mu[c * dim + j] /= count[c].max(1) as f64;
        }
    }
    let w: Vec<f64> = mu.iter().map(|v| 2.0 * v).collect();
    let b: Vec<f64> = (0..classes)
        .map(|c| -(0..dim).map(|j| mu[c * dim + j].powi(2)).sum::<f64>())
        .collect();
    let ce = |t: f64| -> f64 {
        let mut tot = 0.0;
        for (i, &y) in d.labels.iter().enumerate() {
            let z: Vec<f64> = (0..classes)
                .map(|c| {
                    t * ((0..dim)
                        .map(|j| w[c * dim + j] * f[i * dim + j] as f64)
                        .sum::<f64>()
                        + b[c])
                })
                .collect();
            let mx = z.iter().cloned().fold(f64::NEG_INFINITY, f64::max);
            let lse = mx + z.iter().map(|v| (v - mx).exp()).sum::<f64>().ln();
            tot += lse - z[y as usize];
        }
        tot / d.len().max(1) as f64
    };
    // Coarse log-grid, then golden section around the best point.
    let mut best = (f64::INFINITY, 0.0);
    for k in -40..=20 {
        let lt = k as f64 * 0.25;
        let l = ce(lt.exp());
        if l < best.0 {
            best = (l, lt);
        }
    }
    let (mut a, mut bb) = (best.1 - 0.25, best.1 + 0.25);
    let g = (5f64.sqrt() - 1.0) / 2.0;
    for _ in 0..30 {
        let (c1, c2) = (bb - g * (bb - a), a + g * (bb - a));
        if ce(c1.exp()) < ce(c2.exp()) {
            bb = c2;
        } else {
            a = c1;
        }
    }
    let t = ((a + bb) / 2.0).exp();
    let mut out = m.clone();
    let h = head_node(&out.topology);
    let ps = out.topology.nodes[h].op.params();
    for (pid, role) in ps {
        let p = &mut out.params[pid.index()];
        match role {
            ParamRole::Weight => {
                if p.data.len() != classes * dim {
                    bail!(
                        "head weight has {} values, expected {classes} × {dim}",
                        p.data.len()
                    );
                }
                p.data = w.iter().map(|v| (v * t) as f32).collect();
            }
            ParamRole::Bias => p.data = b.iter().map(|v| (v * t) as f32).collect(),
        }
    }
    Ok(out)
}

/// What is trained.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
pub enum Depth {
    /// The head only (LP).
    Head,
    /// The last two layers with weights.
    Last2,
    /// Every layer (FT).
    All,
}

impl Depth {
    /// Short label.
    pub fn label(self) -> &'static str {
        match self {
            Depth::Head => "LP (last 1 layer)",
            Depth::Last2 => "last 2 layers",
            Depth::All => "FT (all layers)",
        }
    }

    /// Names of the trained layers of `t`.
    fn layers(self, t: &lastmile_core::Topology) -> Vec<String> {
        let with: Vec<&str> = t
            .nodes
            .iter()
            .filter(|n| !n.op.params().is_empty())
            .map(|n| n.name.as_str())
            .collect();
        let k = match self {
            Depth::Head => 1,
            Depth::Last2 => 2,
            Depth::All => with.len(),
        };
        with[with.len() - k.min(with.len())..]
            .iter()
            .map(|s| s.to_string())
            .collect()
    }

    /// Marks the trainable parameters of a quantized model.
    pub fn apply_quant(self, q: &mut QuantModel) {
        let names = self.layers(&q.topology);
        q.set_trainable(|s| names.iter().any(|n| layer_of(&s.name) == n));
    }

    /// Marks the trainable parameters of a float model.
    pub fn apply_float(self, m: &mut FloatModel) {
        let names = self.layers(&m.topology);
        lastmile_bp::set_trainable(m, |s| names.iter().any(|n| layer_of(&s.name) == n));
    }
}

/// The layer a parameter belongs to: its name without the last `.weight` / `.bias` part
/// (`block1.conv1.weight` → `block1.conv1`).
fn layer_of(param: &str) -> &str {
    param.rsplit_once('.').map_or(param, |p| p.0)
}

/// Settings of a forward-gradient run (QZO-FF or FF float), sizes in percent of the
/// 16-bit (or 8-bit) largest code, as `lastmile adapt` takes them.
#[derive(Clone, Debug, Serialize)]
pub struct FfSettings {
    /// Perturbations per step.
    pub draws: u32,
    /// SPSA or sign-SPSA.
    pub estimator: Estimator,
    /// ε in % of qmax.
    pub eps_pct: f64,
    /// Learning rate in % of qmax (for SPSA: an absolute lr in LSB² per loss unit is
    /// derived, see `spsa_lr`).
    pub lr_pct: f64,
    /// Update rounding.
    pub rounding: Rounding,
    /// Sharpness-aware ascent in % of qmax.
    pub sharpness_pct: Option<f64>,
    /// Kernel-wise normalization of z.
    pub kernel_norm: bool,
    /// Sparse update.
    pub sparsity: Sparsity,
    /// Momentum-guided sampling.
    pub momentum: Option<lastmile_train::momentum::MomentumConfig>,
    /// Steps.
    pub steps: u64,
    /// Batch size.
    pub batch: usize,
    /// For SPSA: the lr (in LSBs per unit of `ΔL/2k`) is this × the sign-SPSA lr
    /// divided by the median |ΔL/2k| of a calibration step at the start.
    pub spsa_match: bool,
}

impl Default for FfSettings {
    fn default() -> Self {
        FfSettings {
            draws: 3,
            estimator: Estimator::SignSpsa,
            eps_pct: 1.0,
            lr_pct: 0.3,
            rounding: Rounding::Nearest,
            sharpness_pct: None,
            kernel_norm: false,
            sparsity: Sparsity::default(),
            momentum: None,
            steps: 200,
            batch: 32,
            spsa_match: true,
        }
    }
}

impl FfSettings {
    fn step_config(&self, bits: WeightBits, seed: u64) -> StepConfig {
        let lsb = |pct: f64| pct / 100.0 * bits.qmax() as f64;
        StepConfig {
            seed,
            draws: self.draws,
            estimator: self.estimator,
            epsilon_lsb: (lsb(self.eps_pct).round() as u32).max(1),
            lr: lsb(self.lr_pct),
            rounding: self.rounding,
            sharpness_rho: self.sharpness_pct.map(lsb),
            kernel_norm: self.kernel_norm,
            sparsity: Sparsity {
                seed,
                ..self.sparsity
            },
            momentum: self.momentum,
            ..StepConfig::default()
        }
    }
}

/// Points of a training-loss curve kept in the raw JSON.
pub const CURVE_POINTS: usize = 64;

/// Evenly spaced indices `i·(len−1)/(CURVE_POINTS−1)` (first and last included).
fn thin<T: Clone>(curve: &[T]) -> Vec<T> {
    if curve.len() <= CURVE_POINTS {
        return curve.to_vec();
    }
    (0..CURVE_POINTS)
        .map(|i| curve[i * (curve.len() - 1) / (CURVE_POINTS - 1)].clone())
        .collect()
}

fn serialize_thinned<S: serde::Serializer>(
    curve: &[(u64, f64)],
    ser: S,
) -> Result<S::Ok, S::Error> {
    serde::Serialize::serialize(&thin(curve), ser)
}

/// What one adaptation run gave.
#[derive(Clone, Debug, Default, Serialize)]
pub struct RunResult {
    /// Test accuracy before training.
    pub start_acc: f64,
    /// Test accuracy after training.
    pub acc: f64,
    /// Test loss after training.
    pub loss: f64,
    /// Training-batch loss per step (FF: mean of L+ and L−; BP: logged mean). The raw JSON
    /// keeps [`CURVE_POINTS`] evenly spaced points of it, so the file stays small.
    #[serde(serialize_with = "serialize_thinned")]
    pub train_loss: Vec<(u64, f64)>,
    /// Trained elements.
    pub trainable: u64,
    /// Wall time of the training loop.
    pub seconds: f64,
    /// Forward calls (FF) or steps (BP).
    pub forwards: u64,
    /// Codes clamped by updates (QZO-FF).
    pub update_saturations: u64,
    /// Updates that changed a code (QZO-FF), summed over steps.
    pub changed_codes: u64,
}

impl RunResult {
    /// A row that trains nothing (zero-shot): its `(loss, accuracy)` before and after.
    pub fn untrained((loss, acc): (f64, f64)) -> Self {
        RunResult {
            start_acc: acc,
            acc,
            loss,
            ..Default::default()
        }
    }
}

/// Batches of indices for `steps` steps, epoch after epoch (seeded).
pub fn batch_plan(d: &Dataset, batch: usize, steps: u64, seed: u64) -> Vec<Vec<usize>> {
    let b = batch.min(d.len()).max(1);
    (0..)
        .flat_map(|e| d.batches(b, Some(seed.wrapping_mul(1000) + e)))
        .take(steps as usize)
        .collect()
}

/// A snapshot callback: `(step, current quantized model)`.
pub type QSnap<'a> = &'a mut dyn FnMut(u64, &Trainer);

/// QZO-FF on a quantized model whose trainable flags are set.
pub fn run_qzo(
    backend: &dyn Backend,
    q: &QuantModel,
    train: &Dataset,
    test: &Dataset,
    s: &FfSettings,
    seed: u64,
    mut snap: Option<QSnap<'_>>,
) -> Result<RunResult> {
    let mut cfg = s.step_config(q.weight_bits, seed);
    let start_acc = eval_quant(backend, q, test)?.1;
    let x = quant_inputs(q, train);
    let sample = train.sample_len();
    let plan = batch_plan(train, s.batch, s.steps, seed);
    let gather = |b: &[usize]| -> (Vec<i8>, Vec<u8>) {
        (
            b.iter()
                .flat_map(|&i| x[i * sample..(i + 1) * sample].iter().copied())
                .collect(),
            b.iter().map(|&i| train.labels[i]).collect(),
        )
    };
    if s.estimator == Estimator::Spsa && s.spsa_match {
        // Calibrate: a step at lr 0 on the first batch gives |ΔL| / 2k.
        let mut t = Trainer::new(backend, q.clone(), cfg.clone()).map_err(|e| anyhow!(e))?;
        let (bx, by) = gather(&plan[0]);
        let r = t.step(&bx, &by, 0.0).map_err(|e| anyhow!(e))?;
        let mut c: Vec<f64> = r
            .losses
            .iter()
            .map(|(a, b)| (a - b).abs() / (2.0 * cfg.epsilon_lsb as f64))
            .collect();
        c.sort_by(f64::total_cmp);
        let med = c[c.len() / 2].max(1e-12);
        cfg.lr /= med;
    }
    let mut t = Trainer::new(backend, q.clone(), cfg.clone()).map_err(|e| anyhow!(e))?;
    let trainable = t.trainable_elements();
    let mut res = RunResult {
        start_acc,
        trainable,
        ..Default::default()
    };
    if let Some(f) = snap.as_mut() {
        f(0, &t);
    }
    let t0 = Instant::now();
    for (i, b) in plan.iter().enumerate() {
        let (bx, by) = gather(b);
        let r = t.step(&bx, &by, cfg.lr).map_err(|e| anyhow!(e))?;
        res.forwards += r.forwards as u64;
        res.update_saturations += r.update.saturated;
        res.changed_codes += r.update.changed;
        res.train_loss.push((i as u64 + 1, r.mean_loss()));
        if let Some(f) = snap.as_mut() {
            f(i as u64 + 1, &t);
        }
    }
    res.seconds = t0.elapsed().as_secs_f64();
    let (loss, acc) = eval_quant(backend, &t.model(), test)?;
    res.loss = loss;
    res.acc = acc;
    Ok(res)
}

/// FF in float (fp32, the paper's "FF fp" rows) on a float model with trainable flags set.
///
/// When only the head is trainable, the frozen backbone's features are computed once and
/// the head is trained as a one-layer model on them: the same computation, without
/// re-running the frozen layers `2m` times per step (what the fixed-point trainer's frozen
/// prefix does too).
pub fn run_ff_float(
    m: &FloatModel,
    train: &Dataset,
    test: &Dataset,
    s: &FfSettings,
    seed: u64,
) -> Result<RunResult> {
    let cfg = s.step_config(WeightBits::W16, seed);
    let h = head_node(&m.topology);
    let head_params: Vec<usize> = m.topology.nodes[h]
        .op
        .params()
        .iter()
        .map(|p| p.0.index())
        .collect();
    let head_only = m
        .params
        .iter()
        .enumerate()
        .all(|(i, p)| p.spec.trainable == head_params.contains(&i));
    let (model, x, tx, sample) = if head_only {
        let (fx, dim) = head_features(m, train)?;
        let (ftx, _) = head_features(m, test)?;
        let mut b = lastmile_core::graph::TopologyBuilder::new(&[dim]);
        b.linear(
            "fc",
            lastmile_core::ValueId::INPUT,
            dim,
            train.num_classes,
            lastmile_core::Activation::None,
        );
        let (topo, specs) = b.finish();
        let mut hm = zoo::init_float(topo, specs, 0);
        for (dst, &src) in hm.params.iter_mut().zip(&head_params) {
            if dst.data.len() != m.params[src].data.len() {
                bail!("head shape mismatch");
            }
            dst.data = m.params[src].data.clone();
            dst.spec.trainable = true;
        }
        (hm, fx, ftx, dim)
    } else {
        (m.clone(), inputs(train), inputs(test), train.sample_len())
    };
    let m = &model;
    let start_acc = eval_float_x(m, &tx, &test.labels)?.1;
    let mut t = FloatTrainer::new(m.clone(), cfg.clone(), FloatPrecision::F32)
        .map_err(|e| anyhow!("{e}"))?;
    let trainable = m
        .params
        .iter()
        .filter(|p| p.spec.trainable)
        .map(|p| p.data.len() as u64)
        .sum();
    let mut res = RunResult {
        start_acc,
        trainable,
        ..Default::default()
    };
    let t0 = Instant::now();
    for (i, b) in batch_plan(train, s.batch, s.steps, seed).iter().enumerate() {
        let bx: Vec<f32> = b
            .iter()
            .flat_map(|&i| x[i * sample..(i + 1) * sample].iter().copied())
            .collect();
        let by: Vec<u8> = b.iter().map(|&i| train.labels[i]).collect();
        let r = t.step(&bx, &by, cfg.lr).map_err(|e| anyhow!("{e}"))?;
        res.forwards += r.forwards as u64;
        res.train_loss.push((i as u64 + 1, r.mean_loss()));
    }
    res.seconds = t0.elapsed().as_secs_f64();
    let (loss, acc) = eval_float_x(t.model(), &tx, &test.labels)?;
    res.loss = loss;
    res.acc = acc;
    Ok(res)
}

/// BP settings.
#[derive(Clone, Debug, Serialize)]
pub struct BpSettings {
    /// Learning rate (AdamW, weight decay 1e-4, constant).
    pub lr: f64,
    /// Steps.
    pub steps: u64,
    /// Batch size.
    pub batch: usize,
}

impl BpSettings {
    /// Linear probing (head only): AdamW lr 1e-2, batch 32.
    pub fn lp(steps: u64) -> Self {
        BpSettings {
            lr: 1e-2,
            steps,
            batch: 32,
        }
    }

    /// Full fine-tuning: AdamW lr 1e-3, batch 32.
    pub fn ft(steps: u64) -> Self {
        BpSettings {
            lr: 1e-3,
            steps,
            batch: 32,
        }
    }
}

/// BP (float32, AdamW) on a float model with trainable flags set; the trained model is
/// written back into `m`.
pub fn run_bp(
    m: &mut FloatModel,
    train: &Dataset,
    test: &Dataset,
    s: &BpSettings,
    seed: u64,
) -> Result<RunResult> {
    let (x, tx) = (inputs(train), inputs(test));
    let start_acc = eval_float_x(m, &tx, &test.labels)?.1;
    let cfg = BpConfig {
        optimizer: Optimizer::adamw(1e-4),
        lr: s.lr,
        schedule: LrSchedule::Constant,
        budget: BpBudget::Steps(s.steps as usize),
        batch_size: s.batch.min(train.len()),
        seed: seed.wrapping_mul(1000),
        log_every: Some(10),
    };
    let r = lastmile_bp::train(m, Samples::new(&x, &train.labels), None, &cfg)
        .map_err(|e| anyhow!("BP: {e}"))?;
    let (loss, acc) = eval_float_x(m, &tx, &test.labels)?;
    Ok(RunResult {
        start_acc,
        acc,
        loss,
        train_loss: r
            .log
            .iter()
            .map(|l| (l.step as u64, l.train.loss as f64))
            .collect(),
        trainable: r.trainable_params as u64,
        seconds: r.seconds,
        forwards: r.steps as u64,
        ..Default::default()
    })
}

/// A progress bar over `n` runs (drawn on stderr when it is a terminal).
pub fn bar(n: u64, msg: &str) -> indicatif::ProgressBar {
    let b = indicatif::ProgressBar::new(n);
    b.set_style(
        indicatif::ProgressStyle::with_template(
            "{msg:>12} [{bar:30}] {pos}/{len} runs, {elapsed_precise} elapsed, eta {eta}",
        )
        .map(|s| s.progress_chars("=> "))
        .unwrap_or_else(|_| indicatif::ProgressStyle::default_bar()),
    );
    b.set_message(msg.to_string());
    b
}

/// Runs `f` for every seed on its own thread (results in seed order). Seeds are independent
/// and every run is a pure function of its seed, so this changes wall time, not numbers.
pub fn par_seeds<T: Send>(
    seeds: &[u64],
    f: impl Fn(u64) -> Result<Vec<T>> + Sync,
) -> Result<Vec<T>> {
    let f = &f;
    let results: Vec<Result<Vec<T>>> = std::thread::scope(|s| {
        let handles: Vec<_> = seeds.iter().map(|&seed| s.spawn(move || f(seed))).collect();
        handles
            .into_iter()
            .map(|h| {
                h.join()
                    .unwrap_or_else(|_| Err(anyhow!("a worker thread panicked")))
            })
            .collect()
    });
    let mut out = Vec::new();
    for r in results {
        out.extend(r?);
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stat_is_mean_and_sample_std() {
        let s = Stat::of(&[0.5, 0.7, 0.9]);
        assert!((s.mean - 0.7).abs() < 1e-12);
        assert!((s.std - 0.2).abs() < 1e-12);
        assert_eq!(s.pct(), "70.00 ± 20.00");
        assert_eq!(Stat::of(&[]).pct(), "—");
    }

    #[test]
    fn ncm_head_classifies_its_own_class_means() {
        // Two well-separated classes of the digits set: the NCM head of a random
        // digits-cnn must separate its own examples better than chance.
        let d = lastmile_data::digits_split(Split::Train);
        let (t, s) = zoo::digits_cnn(10);
        let m = zoo::init_float(t, s, 3);
        let sub = d.per_class(10, 0).unwrap();
        let h = ncm_head(&m, &sub).unwrap();
        let (_, acc) = eval_float(&h, &sub).unwrap();
        assert!(acc > 0.5, "NCM head accuracy on its own examples {acc}");
    }

    #[test]
    fn depth_marks_whole_layers_with_dotted_names() {
        let (t, s) = zoo::resnet_tiny(28, 1, 10);
        let mut m = zoo::init_float(t, s, 1);
        Depth::All.apply_float(&mut m);
        assert!(m.params.iter().all(|p| p.spec.trainable));
        Depth::Last2.apply_float(&mut m);
        let on: Vec<&str> = m
            .params
            .iter()
            .filter(|p| p.spec.trainable)
            .map(|p| p.spec.name.as_str())
            .collect();
        assert_eq!(
            on,
            [
                "block2.conv2.weight",
                "block2.conv2.bias",
                "fc.weight",
                "fc.bias"
            ]
        );
    }

    #[test]
    fn par_seeds_keeps_seed_order() {
        let v = par_seeds(&[3, 1, 2], |s| Ok(vec![s, s * 10])).unwrap();
        assert_eq!(v, vec![3, 30, 1, 10, 2, 20]);
    }
}
