//! `mcu-adapt-host <dir>`: builds the firmware's inputs and runs the host reference.
//!
//! 1. A pretrained 16w8a `digits-cnn`: seeded random conv features (`zoo::init_float`) and a
//!    ridge-regression head fitted on the clean digits training split (the recipe of
//!    `lastmile new`), then post-training quantization (`ptq::quantize`, 16-bit weights), every
//!    parameter marked trainable. Written to `<dir>/model.lmm`.
//! 2. The "last mile": the device's camera has 60% less contrast (`contrast@4`, a synthetic
//!    shift of the real digits). 256 shifted training images to adapt on and the 360 shifted
//!    test images to measure on, quantized to the model's input codes. Written to
//!    `<dir>/set.bin` (format: `mcu_adapt::set`).
//! 3. The reference run: [`mcu_adapt::run`] on the bytes just written, on the host with
//!    cpu-ref — the same call the firmware makes. Its result line goes to stdout and to
//!    `<dir>/host-result.txt`.
//!
//! Everything is deterministic: the same files and the same result on every run.

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use lastmile_core::graph::Op;
use lastmile_core::model::FloatModel;
use lastmile_core::quant::WeightBits;
use lastmile_core::{float_exec, format, ptq, zoo};
use lastmile_data::{Corruption, Dataset, Split, digits_split, permutation};

/// Seed of the random conv features and of the data choices.
const SEED: u64 = 0;
/// The shift and its severity.
const SHIFT: (Corruption, u8) = (Corruption::Contrast, 4);
/// Shifted training images the device adapts on.
const ADAPT_SAMPLES: usize = 256;
/// Ridge strength relative to the mean feature energy (as `lastmile new`'s default).
const RIDGE: f64 = 1e-2;

fn images(d: &Dataset, idx: &[usize]) -> Vec<f32> {
    let s = d.sample_len();
    let mut out = vec![0f32; idx.len() * s];
    for (k, &i) in idx.iter().enumerate() {
        d.image_f32(i, &mut out[k * s..(k + 1) * s]);
    }
    out
}

/// Solves the symmetric positive definite `a × a` system `G X = B` (`k` columns) by Cholesky.
fn cholesky_solve(
    mut g: Vec<f64>,
    a: usize,
    mut b: Vec<f64>,
    k: usize,
) -> Result<Vec<f64>, String> {
    for j in 0..a {
        let mut d = g[j * a + j];
        for p in 0..j {
            d -= g[j * a + p] * g[j * a + p];
        }
        if !(d.is_finite() && d > 0.0) {
            return Err(format!(
                "ridge normal equations not positive definite at pivot {j}"
            ));
        }
        let l = d.sqrt();
        g[j * a + j] = l;
        for i in j + 1..a {
            let mut s = g[i * a + j];
            for p in 0..j {
                s -= g[i * a + p] * g[j * a + p];
            }
            g[i * a + j] = s / l;
        }
    }
    for c in 0..k {
        for i in 0..a {
            let mut s = b[i * k + c];
            for p in 0..i {
                s -= g[i * a + p] * b[p * k + c];
            }
            b[i * k + c] = s / g[i * a + i];
        }
        for i in (0..a).rev() {
            let mut s = b[i * k + c];
            for p in i + 1..a {
                s -= g[p * a + i] * b[p * k + c];
            }
            b[i * k + c] = s / g[i * a + i];
        }
    }
    Ok(b)
}

/// Random conv features + a ridge-regression head (bias unpenalized), with the softmax
/// temperature picked from a log grid by training cross-entropy.
fn pretrain(train: &Dataset) -> Result<FloatModel, String> {
    let (topology, specs) = zoo::digits_cnn(train.num_classes);
    let mut model = zoo::init_float(topology, specs, SEED);
    let last = model
        .topology
        .nodes
        .last()
        .ok_or("digits-cnn has no nodes")?;
    let Op::Linear(head) = &last.op else {
        return Err("digits-cnn does not end in a linear layer".into());
    };
    let (w_id, b_id) = (head.weight, head.bias.ok_or("the head has no bias")?);
    let feat = last.inputs[0];
    let (n, k) = (train.len(), train.num_classes);
    let idx: Vec<usize> = (0..n).collect();
    let mut x = Vec::new();
    float_exec::forward_observed(&model, &images(train, &idx), n, &mut |v, data| {
        if v == feat {
            x.extend_from_slice(data);
        }
    })
    .map_err(|e| format!("float forward: {e}"))?;
    let d = x.len() / n;
    let a = d + 1;
    let (mut g, mut rhs) = (vec![0f64; a * a], vec![0f64; a * k]);
    for (row, &y) in x.chunks_exact(d).zip(&train.labels) {
        let xa = |i: usize| if i < d { f64::from(row[i]) } else { 1.0 };
        for i in 0..a {
            for j in 0..a {
                g[i * a + j] += xa(i) * xa(j);
            }
            rhs[i * k + y as usize] += xa(i);
        }
    }
    let lambda = RIDGE * (0..d).map(|i| g[i * a + i]).sum::<f64>() / d as f64;
    for i in 0..d {
        g[i * a + i] += lambda;
    }
    let sol = cholesky_solve(g, a, rhs, k)?;
    let logits = |t: f64, row: &[f32], c: usize| -> f64 {
        t * ((0..d)
            .map(|i| sol[i * k + c] * f64::from(row[i]))
            .sum::<f64>()
            + sol[d * k + c])
    };
    let xent = |t: f64| -> f64 {
        let mut sum = 0.0;
        for (row, &y) in x.chunks_exact(d).zip(&train.labels) {
            let z: Vec<f64> = (0..k).map(|c| logits(t, row, c)).collect();
            let m = z.iter().cloned().fold(f64::NEG_INFINITY, f64::max);
            let lse = m + z.iter().map(|v| (v - m).exp()).sum::<f64>().ln();
            sum += lse - z[y as usize];
        }
        sum / n as f64
    };
    let t = (0..=40)
        .map(|i| 10f64.powf(-1.0 + 3.0 * f64::from(i) / 40.0))
        .min_by(|&p, &q| xent(p).total_cmp(&xent(q)))
        .unwrap_or(1.0);
    let w = &mut model.params[w_id.index()].data;
    for c in 0..k {
        for i in 0..d {
            w[c * d + i] = (t * sol[i * k + c]) as f32;
        }
    }
    let bias = &mut model.params[b_id.index()].data;
    for (c, b) in bias.iter_mut().enumerate() {
        *b = (t * sol[d * k + c]) as f32;
    }
    let md = &mut model.metadata;
    md.insert("name".into(), "digits-cnn-digits".into());
    md.insert("arch".into(), "digits-cnn".into());
    md.insert(
        "provenance".into(),
        format!(
            "random conv features (seed {SEED}) + ridge-regression head (lambda {lambda:.4e}, \
             temperature {t:.3}) on digits-train; built by examples/mcu-adapt/host"
        ),
    );
    model
        .validate()
        .map_err(|e| format!("the pretrained model is invalid: {e}"))?;
    Ok(model)
}

/// Top-1 accuracy (%) of `q` on `d` with the reference backend.
fn clean_accuracy(q: &lastmile_core::QuantModel, d: &Dataset) -> Result<f64, String> {
    use lastmile_core::Backend;
    let idx: Vec<usize> = (0..d.len()).collect();
    let x: Vec<i8> = images(d, &idx)
        .iter()
        .map(|&v| q.act[0].quantize(v))
        .collect();
    let mut p = lastmile_backend_cpu_ref::CpuRef
        .prepare(q)
        .map_err(|e| format!("preparing the model: {e}"))?;
    let mut logits = Vec::new();
    p.forward(&q.params, &x, d.len(), &mut logits)
        .map_err(|e| format!("forward: {e}"))?;
    let out = *q.act.last().ok_or("the model has no output quantization")?;
    let (_, correct) = lastmile_train::loss::cross_entropy(&logits, out, &d.labels, d.num_classes);
    Ok(100.0 * correct as f64 / d.len().max(1) as f64)
}

fn write(path: &Path, bytes: &[u8]) -> Result<(), String> {
    std::fs::write(path, bytes).map_err(|e| format!("cannot write {}: {e}", path.display()))
}

fn build(dir: &Path) -> Result<(), String> {
    std::fs::create_dir_all(dir).map_err(|e| format!("cannot create {}: {e}", dir.display()))?;
    let (train, test) = (digits_split(Split::Train), digits_split(Split::Test));
    let float = pretrain(&train)?;
    let calib: Vec<usize> = (0..train.len().min(512)).collect();
    let (mut q, _) = ptq::quantize(
        &float,
        &images(&train, &calib),
        calib.len(),
        WeightBits::W16,
    )
    .map_err(|e| format!("quantization failed: {e}"))?;
    q.set_trainable(|_| true);
    let clean = clean_accuracy(&q, &test)?;
    println!(
        "{} pretrained 16w8a model: accuracy {clean:.2}% on the clean {} ({} images)",
        mcu_adapt::TAG,
        test.name,
        test.len()
    );
    write(
        &dir.join("model.lmm"),
        &format::quant_to_bytes(&q).map_err(|e| format!("encoding the model: {e}"))?,
    )?;

    let (c, sev) = SHIFT;
    let dev_train = train.corrupted(c, sev, SEED);
    let dev_test = test.corrupted(c, sev, SEED ^ 0x5eed);
    let q_in = q.act[0];
    let codes = |d: &Dataset, idx: &[usize]| -> Vec<i8> {
        images(d, idx).iter().map(|&v| q_in.quantize(v)).collect()
    };
    let adapt: Vec<usize> = permutation(dev_train.len(), SEED)
        .into_iter()
        .take(ADAPT_SAMPLES)
        .collect();
    let adapt_y: Vec<u8> = adapt.iter().map(|&i| dev_train.labels[i]).collect();
    let test_idx: Vec<usize> = (0..dev_test.len()).collect();
    let set = mcu_adapt::LabelledSet::encode(
        &format!("{} / {}", dev_train.name, dev_test.name),
        train.sample_len(),
        train.num_classes,
        (&codes(&dev_train, &adapt), &adapt_y),
        (&codes(&dev_test, &test_idx), &dev_test.labels),
    )?;
    write(&dir.join("set.bin"), &set)
}

fn run(dir: &Path) -> Result<bool, String> {
    build(dir)?;
    let read = |name: &str| {
        let p = dir.join(name);
        std::fs::read(&p).map_err(|e| format!("cannot read {}: {e}", p.display()))
    };
    let (model, set) = (read("model.lmm")?, read("set.bin")?);
    println!(
        "{} host reference (x86_64, cpu-ref): model.lmm {} B, set.bin {} B in {}",
        mcu_adapt::TAG,
        model.len(),
        set.len(),
        dir.display()
    );
    let (outcome, trained) = mcu_adapt::run(
        &model,
        &set,
        &mcu_adapt::Settings::default(),
        &mut |_, args| println!("{args}"),
    )?;
    println!("{outcome}");
    write(
        &dir.join("host-result.txt"),
        format!("{outcome}\n").as_bytes(),
    )?;
    println!("{}", mcu_adapt::check_dsp(&model, &set, &trained)?);
    Ok(outcome.improved())
}

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let [dir] = args.as_slice() else {
        eprintln!(
            "usage: mcu-adapt-host <dir>\n  writes <dir>/model.lmm and <dir>/set.bin (the \
             firmware's inputs) and runs the adaptation on the host"
        );
        return ExitCode::from(2);
    };
    // Only errors fail: whether accuracy rose is judged on the firmware's run (the xtask).
    match run(&PathBuf::from(dir)) {
        Ok(true) => ExitCode::SUCCESS,
        Ok(false) => {
            println!(
                "{} note: adaptation did not raise accuracy above the pretrained baseline",
                mcu_adapt::TAG
            );
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("error: {e}");
            ExitCode::FAILURE
        }
    }
}
