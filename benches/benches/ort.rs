//! ONNX Runtime side by side with our x86 8w8a kernels, on the same shapes in the same run,
//! single-threaded and with every core.
//!
//! Criterion ids: group `vs-ort/<threads>t`, function = shape, parameter = contender:
//!
//! * `x86` — our best x86 tier, frozen weights (packed at prepare);
//! * `x86-vnni` — the AVX-512 VNNI tier, when the best tier is AMX (ORT's kernels here
//!   are AVX-512 VNNI, so this is the like-for-like instruction set);
//! * `ort` — ONNX Runtime running the model `lastmile-backend-onnxruntime` emits
//!   (`QLinearConv`; linear as `QGemm`), frozen weights as initializers (ORT pre-packs them);
//! * `ort-qlinearmatmul` — a bare `QLinearMatMul` (linear only; no bias, per-tensor scale);
//! * `x86-trainable`, `ort-trainable` — every weight trainable: x86 re-packs per forward,
//!   ORT takes the weights as session inputs (the training scenario);
//! * `xnnpack`, `xnnpack-trainable` — XNNPACK qc8 operators (single thread only; the
//!   trainable variant re-creates, i.e. re-packs, the operator every forward).
//!
//! Skipped (with a message) when ONNX Runtime is not installed (`cargo xtask sdk onnxruntime`).
//! `cargo xtask bench` runs it and writes the ratios to `target/bench/summary.md`.

use std::time::Duration;

use criterion::{BenchmarkId, Criterion, Throughput, criterion_group, criterion_main};
use lastmile_backend_onnxruntime::OnnxRuntime;
use lastmile_backend_onnxruntime::bench_support::{RawSession, qlinear_matmul_model};
use lastmile_backend_x86::{Tier, X86};
use lastmile_benches::{conv_model, input_codes, linear_model, macs, uniform};
use lastmile_core::QuantModel;
use lastmile_core::backend::Backend;
use lastmile_core::quant::WeightBits;

fn shapes() -> Vec<(&'static str, QuantModel, usize)> {
    let b = WeightBits::W8;
    vec![
        // ResNet-18 stage 1 and stage 3 (3×3, stride 1, pad 1).
        ("conv3x3_56x56x64", conv_model(56, 56, 64, 64, 3, 1, b), 1),
        (
            "conv3x3_14x14x256",
            conv_model(14, 14, 256, 256, 3, 1, b),
            1,
        ),
        (
            "dwconv3x3_56x56x128",
            conv_model(56, 56, 128, 128, 3, 128, b),
            1,
        ),
        ("linear_1024x1024", linear_model(1024, 1024, b), 8),
    ]
}

fn bench_vs_ort(c: &mut Criterion) {
    let ort_ok = match OnnxRuntime::with_threads(1) {
        Ok(_) => true,
        Err(e) => {
            eprintln!("vs-ort: skipped: {e}");
            false
        }
    };
    let x86_best = match X86::best() {
        Ok(x) => x,
        Err(e) => {
            eprintln!("vs-ort: skipped: x86 backend unavailable: {e}");
            return;
        }
    };
    if !ort_ok {
        return;
    }
    let x86_vnni = (x86_best.kernel_tier() == Tier::Amx)
        .then(|| X86::with_tier(Tier::Avx512Vnni).ok())
        .flatten();
    let all = std::thread::available_parallelism().map_or(1, |n| n.get());
    let mut threads = vec![1];
    if all > 1 {
        threads.push(all);
    }
    for t in threads {
        let mut group = c.benchmark_group(format!("vs-ort/{t}t"));
        group
            .sample_size(10)
            .warm_up_time(Duration::from_millis(500))
            .measurement_time(Duration::from_secs(2));
        for (name, model, n) in shapes() {
            let input = input_codes(&model, n);
            let mut trainable = model.clone();
            trainable.set_trainable(|_| true);
            let x86 = x86_best.clone().with_threads(t);
            let ort = OnnxRuntime::with_threads(t).expect("loaded above");
            group.throughput(Throughput::Elements(macs(&model, n)));
            let contenders: [(&str, &dyn Backend, &QuantModel); 4] = [
                ("x86", &x86, &model),
                ("ort", &ort, &model),
                ("x86-trainable", &x86, &trainable),
                ("ort-trainable", &ort, &trainable),
            ];
            let xnn = lastmile_backend_xnnpack::Xnnpack::new()
                .ok()
                .filter(|_| t == 1);
            let mut extra: Vec<(&str, &dyn Backend, &QuantModel)> = match &xnn {
                Some(x) => vec![("xnnpack", x, &model), ("xnnpack-trainable", x, &trainable)],
                None => Vec::new(),
            };
            let vnni = x86_vnni.clone().map(|v| v.with_threads(t));
            if let Some(v) = &vnni {
                extra.push(("x86-vnni", v, &model));
            }
            for (who, backend, m) in contenders.into_iter().chain(extra) {
                let mut p = backend.prepare(m).expect("prepare");
                let mut out = Vec::new();
                group.bench_function(BenchmarkId::new(name, who), |b| {
                    b.iter(|| p.forward(&m.params, &input, n, &mut out).expect("forward"))
                });
            }
            if name.starts_with("linear") {
                let (k, m) = (1024, 1024);
                let w: Vec<i8> = uniform(k * m, 11)
                    .iter()
                    .map(|v| (v * 127.0) as i8)
                    .collect();
                let mut s = RawSession::new(&qlinear_matmul_model(k, m, &w), t).expect("session");
                let input: Vec<u8> = input.iter().map(|&q| q as u8 ^ 0x80).collect();
                let mut out = Vec::new();
                group.bench_function(BenchmarkId::new(name, "ort-qlinearmatmul"), |b| {
                    b.iter(|| s.run(&[n, k], &input, &mut out).expect("run"))
                });
            }
        }
        group.finish();
    }
}

criterion_group!(benches, bench_vs_ort);
criterion_main!(benches);
