//! Forward throughput of every available backend **and every x86 tier** on single layers
//! at shapes from real models (ResNet-18 stages, MobileNet depthwise, a 1024² linear) and
//! on whole zoo models; plus the cost of re-packing trainable weights.
//!
//! Criterion ids: group `<backend>/<tier>`, function = shape, parameter = scheme
//! (`8w8a`/`16w8a`); throughput in multiply-accumulates ("elements"), so criterion's
//! elem/s is MAC/s. Re-pack: group `repack/<tier>`, throughput in weights.
//!
//! Run: `cargo xtask bench [--quick] [--backend x86/avx2]`, which also writes
//! `target/bench/summary.md`; or `cargo bench -p lastmile-benches -- --quick`.
//! Single-threaded unless `LASTMILE_THREADS` says otherwise.

use std::time::Duration;

use criterion::{BenchmarkId, Criterion, Throughput, criterion_group, criterion_main};
use lastmile_benches::{
    backend_selected, conv_model, input_codes, linear_model, macs, uniform, zoo_model,
};
use lastmile_core::QuantModel;
use lastmile_core::quant::WeightBits;

/// (shape name, model, batch).
type Case = (&'static str, QuantModel, usize);

/// The cases at one weight width. Batches keep one iteration in the millisecond range.
fn cases(bits: WeightBits) -> Vec<Case> {
    vec![
        (
            "conv3x3_16x16x32",
            conv_model(16, 16, 32, 32, 3, 1, bits),
            1,
        ),
        // ResNet-18 stages 1–3 (3×3, stride 1, pad 1, C_in = C_out).
        (
            "conv3x3_56x56x64",
            conv_model(56, 56, 64, 64, 3, 1, bits),
            1,
        ),
        (
            "conv3x3_28x28x128",
            conv_model(28, 28, 128, 128, 3, 1, bits),
            1,
        ),
        (
            "conv3x3_14x14x256",
            conv_model(14, 14, 256, 256, 3, 1, bits),
            1,
        ),
        (
            "conv1x1_28x28x128",
            conv_model(28, 28, 128, 128, 1, 1, bits),
            1,
        ),
        (
            "dwconv3x3_28x28x64",
            conv_model(28, 28, 64, 64, 3, 64, bits),
            1,
        ),
        ("linear_1024x1024", linear_model(1024, 1024, bits), 8),
        ("model_digits_cnn", zoo_model("digits-cnn", None, bits), 32),
        (
            "model_resnet_tiny_32x32x3",
            zoo_model("resnet-tiny", Some(&[32, 32, 3]), bits),
            8,
        ),
    ]
}

fn bench_forward(c: &mut Criterion) {
    let all: Vec<(WeightBits, Vec<Case>)> = [WeightBits::W8, WeightBits::W16]
        .into_iter()
        .map(|b| (b, cases(b)))
        .collect();
    for entry in lastmile_backends::all() {
        let Ok(backend) = entry.status else { continue };
        if !backend_selected(&entry.name, &entry.tier) {
            continue;
        }
        let mut group = c.benchmark_group(format!("{}/{}", entry.name, entry.tier));
        group
            .sample_size(10)
            .warm_up_time(Duration::from_millis(500))
            .measurement_time(Duration::from_secs(2));
        for (bits, cases) in &all {
            for (name, model, n) in cases {
                // A backend that does not take this width or op (ONNX Runtime: 16w8a) skips it.
                if backend.capabilities().check_model(model).is_err() {
                    continue;
                }
                let mut prepared = backend.prepare(model).expect("prepare");
                let input = input_codes(model, *n);
                let mut out = Vec::new();
                group.throughput(Throughput::Elements(macs(model, *n)));
                group.bench_with_input(BenchmarkId::new(*name, bits.scheme()), name, |b, _| {
                    b.iter(|| {
                        prepared
                            .forward(&model.params, &input, *n, &mut out)
                            .expect("forward")
                    })
                });
            }
        }
        group.finish();
    }
}

/// Re-packing one trainable weight tensor (what every forward does for trainable
/// conv/linear weights), per tier. Throughput = weights, so elem/s ⇒ ns/weight.
#[cfg(target_arch = "x86_64")]
fn bench_repack(c: &mut Criterion) {
    use lastmile_backend_x86::bench_support::Repack;
    use lastmile_backend_x86::{Tier, X86};
    use lastmile_core::model::QData;
    for tier in X86::available_tiers() {
        if tier == Tier::Scalar || !backend_selected(X86::NAME, tier.name()) {
            continue;
        }
        let mut group = c.benchmark_group(format!("repack/{tier}"));
        group
            .sample_size(10)
            .warm_up_time(Duration::from_millis(300))
            .measurement_time(Duration::from_secs(1));
        for bits in [WeightBits::W8, WeightBits::W16] {
            for (name, n, k) in [
                ("conv3x3_64to64", 64usize, 576usize),
                ("conv3x3_256to256", 256, 2304),
                ("linear_1024x1024", 1024, 1024),
                ("linear_256to10", 10, 256),
            ] {
                let q = bits.qmax() as f32;
                let codes = uniform(n * k, 9);
                let w = match bits {
                    WeightBits::W8 => QData::I8(codes.iter().map(|v| (v * q) as i8).collect()),
                    WeightBits::W16 => QData::I16(codes.iter().map(|v| (v * q) as i16).collect()),
                };
                let bias = vec![0i32; n];
                let mut r = Repack::new(tier, bits, n, k).expect("tier available");
                group.throughput(Throughput::Elements(r.weights() as u64));
                group.bench_function(BenchmarkId::new(name, bits.scheme()), |b| {
                    b.iter(|| r.run(&w, &bias, -3))
                });
            }
        }
        group.finish();
    }
}

#[cfg(not(target_arch = "x86_64"))]
fn bench_repack(_: &mut Criterion) {}

criterion_group!(benches, bench_forward, bench_repack);
criterion_main!(benches);
