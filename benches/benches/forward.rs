//! Forward throughput of every available backend on single layers at shapes from
//! real models. Reports multiply-accumulates per second (criterion "elements").
//!
//! Run: `cargo bench -p lastmile-benches` (add `-- --quick` for a short run).

use criterion::{BenchmarkId, Criterion, Throughput, criterion_group, criterion_main};
use lastmile_benches::{conv_model, linear_model, uniform};
use lastmile_core::QuantModel;
use lastmile_core::quant::WeightBits;

fn macs(model: &QuantModel, n: usize) -> u64 {
    let plan = lastmile_core::plan::Plan::derive(model).expect("valid");
    let mut total = 0u64;
    for (i, p) in plan.nodes.iter().enumerate() {
        if let lastmile_core::plan::NodePlan::Dot { k, .. } = p {
            total += (*k * plan.shapes[i + 1].iter().product::<usize>()) as u64;
        }
    }
    total * n as u64
}

fn bench_layers(c: &mut Criterion) {
    let cases: Vec<(&str, QuantModel, usize)> = [WeightBits::W8, WeightBits::W16]
        .into_iter()
        .flat_map(|bits| {
            let s = bits.scheme();
            [
                (
                    format!("conv3x3_16x16x32_{s}"),
                    conv_model(16, 16, 32, 32, 3, 1, bits),
                    1,
                ),
                (
                    format!("dwconv3x3_28x28x64_{s}"),
                    conv_model(28, 28, 64, 64, 3, 64, bits),
                    1,
                ),
                (
                    format!("linear_1024x1024_{s}"),
                    linear_model(1024, 1024, bits),
                    8,
                ),
            ]
        })
        .map(|(name, m, n)| (Box::leak(name.into_boxed_str()) as &str, m, n))
        .collect();
    for entry in lastmile_backends::all() {
        let Ok(backend) = entry.status else { continue };
        let mut group = c.benchmark_group(format!("{}/{}", entry.name, entry.tier));
        group.sample_size(10);
        for (name, model, n) in &cases {
            let mut prepared = backend.prepare(model).expect("prepare");
            let sample: usize = model.topology.input_shape.iter().product();
            let input: Vec<i8> = uniform(n * sample, 7)
                .iter()
                .map(|v| (v * 127.0) as i8)
                .collect();
            let mut out = Vec::new();
            group.throughput(Throughput::Elements(macs(model, *n)));
            group.bench_with_input(BenchmarkId::from_parameter(name), name, |b, _| {
                b.iter(|| {
                    prepared
                        .forward(&model.params, &input, *n, &mut out)
                        .expect("forward")
                })
            });
        }
        group.finish();
    }
}

criterion_group!(benches, bench_layers);
criterion_main!(benches);
