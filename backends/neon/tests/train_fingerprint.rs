//! The cross-target training check: a short QZO-FF run (20 steps, every layer trainable)
//! of a small CNN — conv, depthwise conv, strided conv, linear — on the embedded digits,
//! at 16w8a and 8w8a, on each backend of `LASTMILE_FINGERPRINT_BACKENDS` (default: cpu-ref,
//! plus every NEON tier under test). The run is a pure function of seed and data, so the
//! trained weights must be **bit-identical** across backends and targets.
//!
//! The test asserts that all backends here agree, and writes one line per backend and scheme
//! to `$LASTMILE_FINGERPRINT_FILE` (if set):
//! `<backend>/<tier> <scheme> <sha256 of the quantized start> <sha256 of the trained weights>`.
//! `cargo xtask test --target aarch64-unknown-linux-gnu` runs it on the x86_64 host (cpu-ref)
//! and on aarch64 under qemu (NEON, each tier) and compares the files.

use lastmile_backend_cpu_ref::CpuRef;
use lastmile_backend_neon::Neon;
use lastmile_conformance::training::{pixels, train_steps};
use lastmile_core::graph::{TopologyBuilder, ValueId};
use lastmile_core::model::QData;
use lastmile_core::quant::{Activation, WeightBits};
use lastmile_core::{Backend, Op, QuantModel, ptq, zoo};
use lastmile_data::{Dataset, Split, digits_split};
use lastmile_train::{Distribution, Estimator, Rounding, StepConfig, Trainer};
use sha2::{Digest, Sha256};

const STEPS: usize = 20;
const BATCH: usize = 32;

/// 8×8×1 → conv3×3 8 relu → depthwise3×3 relu → conv3×3/2 16 relu → flatten → linear 10.
fn model(bits: WeightBits, train: &Dataset) -> QuantModel {
    let mut b = TopologyBuilder::new(&[8, 8, 1]);
    let pad = [1, 1, 1, 1];
    let x = b.conv2d(
        "conv1",
        ValueId::INPUT,
        1,
        8,
        [3, 3],
        [1, 1],
        pad,
        1,
        Activation::Relu,
    );
    let x = b.conv2d("dw", x, 8, 8, [3, 3], [1, 1], pad, 8, Activation::Relu);
    let x = b.conv2d("conv2", x, 8, 16, [3, 3], [2, 2], pad, 1, Activation::Relu);
    let x = b.node("flatten", Op::Flatten, &[x]);
    b.linear("fc", x, 256, 10, Activation::None);
    let (topology, specs) = b.finish();
    let float = zoo::init_float(topology, specs, 2024);
    let calib = pixels(train);
    let (mut q, _) = ptq::quantize(&float, &calib[..256 * 64], 256, bits).unwrap();
    q.set_trainable(|_| true);
    q
}

fn sha256_of_params(m: &QuantModel) -> String {
    let mut h = Sha256::new();
    for p in &m.params {
        h.update(p.spec.name.as_bytes());
        match &p.data {
            QData::I8(v) => v.iter().for_each(|x| h.update(x.to_le_bytes())),
            QData::I16(v) => v.iter().for_each(|x| h.update(x.to_le_bytes())),
            QData::I32(v) => v.iter().for_each(|x| h.update(x.to_le_bytes())),
        }
    }
    h.finalize().iter().map(|b| format!("{b:02x}")).collect()
}

fn config(bits: WeightBits) -> (StepConfig, f64) {
    let (eps, lr) = match bits {
        WeightBits::W16 => (512, 2000.0),
        WeightBits::W8 => (2, 8.0),
    };
    let cfg = StepConfig {
        seed: 11,
        draws: 2,
        estimator: Estimator::SignSpsa,
        distribution: Distribution::Gaussian,
        epsilon_lsb: eps,
        rounding: Rounding::Stochastic,
        ..StepConfig::default()
    };
    (cfg, lr)
}

/// Trains `STEPS` steps on `backend`; returns (start hash, trained hash).
fn train(backend: &dyn Backend, bits: WeightBits) -> (String, String) {
    let train = digits_split(Split::Train);
    let start = model(bits, &train);
    let q_in = start.act[0];
    let (cfg, lr) = config(bits);
    let mut t = Trainer::new(backend, start.clone(), cfg).unwrap();
    train_steps(&mut t, &train, q_in, BATCH, STEPS, lr);
    let trained = t.model();
    assert_ne!(
        sha256_of_params(&start),
        sha256_of_params(&trained),
        "training moved no weight"
    );
    (sha256_of_params(&start), sha256_of_params(&trained))
}

fn backends() -> Vec<Box<dyn Backend>> {
    let list = std::env::var("LASTMILE_FINGERPRINT_BACKENDS").ok();
    let mut out: Vec<Box<dyn Backend>> = Vec::new();
    match list.as_deref() {
        Some(list) => {
            for name in list.split(',').map(str::trim).filter(|s| !s.is_empty()) {
                match name {
                    "cpu-ref" => out.push(Box::new(CpuRef)),
                    "neon" => out.push(Box::new(
                        Neon::best().unwrap_or_else(|e| panic!("neon requested: {e}")),
                    )),
                    other => panic!("LASTMILE_FINGERPRINT_BACKENDS: unknown backend {other:?}"),
                }
            }
        }
        None => {
            out.push(Box::new(CpuRef));
            for tier in Neon::tiers_under_test() {
                out.push(Box::new(Neon::with_tier(tier).unwrap()));
            }
        }
    }
    out
}

#[test]
fn trained_weights_are_bit_identical_across_backends() {
    let mut lines = Vec::new();
    for bits in [WeightBits::W16, WeightBits::W8] {
        let mut first: Option<(String, String, String)> = None;
        for b in backends() {
            let who = format!("{}/{}", b.name(), b.tier());
            let (start, trained) = train(b.as_ref(), bits);
            eprintln!(
                "{who:<16} {} start {start} trained {trained}",
                bits.scheme()
            );
            lines.push(format!("{who} {} {start} {trained}", bits.scheme()));
            match &first {
                None => first = Some((who, start, trained)),
                Some((w0, s0, t0)) => {
                    assert_eq!(&start, s0, "{who} vs {w0}: different starting model");
                    assert_eq!(&trained, t0, "{who} vs {w0}: trained weights differ");
                }
            }
        }
    }
    if let Some(path) = std::env::var_os("LASTMILE_FINGERPRINT_FILE") {
        std::fs::write(&path, lines.join("\n") + "\n").unwrap();
    }
}
