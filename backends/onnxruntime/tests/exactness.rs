//! Measures how far ONNX Runtime's output codes are from the reference, per op family
//! (generated cases of the conformance suite, fixed seed) and on PTQ-quantized zoo
//! models, prints the table (`--nocapture`) and checks the declared tolerance
//! ([`MAX_LSB`]). Skips when the library is absent unless LASTMILE_REQUIRE_ENGINES=1.
//! Cases per family: LASTMILE_EXACTNESS_CASES (default 100).

use lastmile_backend_onnxruntime::{MAX_LSB, OnnxRuntime};
use lastmile_conformance::Family;
use lastmile_conformance::strategies::{rng_from_seed, strategy};
use lastmile_core::backend::Backend;
use lastmile_core::model::QuantModel;
use lastmile_core::quant::WeightBits;
use proptest::strategy::{Strategy, ValueTree};
use proptest::test_runner::{Config, TestRunner};

#[derive(Default)]
struct Stats {
    cases: usize,
    codes: usize,
    off: usize,
    max: i32,
}

impl Stats {
    fn add(&mut self, got: &[i8], want: &[i8]) {
        assert_eq!(got.len(), want.len());
        self.cases += 1;
        self.codes += want.len();
        for (&g, &w) in got.iter().zip(want) {
            let d = (g as i32 - w as i32).abs();
            if d != 0 {
                self.off += 1;
                self.max = self.max.max(d);
            }
        }
    }
    fn row(&self, name: &str) -> String {
        format!(
            "| {name} | {} | {} | {} ({:.3}%) | {} |",
            self.cases,
            self.codes,
            self.off,
            100.0 * self.off as f64 / self.codes.max(1) as f64,
            self.max
        )
    }
}

fn run(backend: &OnnxRuntime, model: &QuantModel, input: &[i8], n: usize) -> Vec<i8> {
    let mut p = backend.prepare(model).expect("prepare");
    let mut out = Vec::new();
    p.forward(&model.params, input, n, &mut out)
        .expect("forward");
    out
}

#[test]
fn measured_difference_is_within_the_declared_tolerance() {
    let backend = match OnnxRuntime::new() {
        Ok(b) => b,
        Err(e) if std::env::var("LASTMILE_REQUIRE_ENGINES").is_ok_and(|v| v == "1") => {
            panic!("LASTMILE_REQUIRE_ENGINES=1 but ONNX Runtime is unavailable: {e}")
        }
        Err(e) => {
            eprintln!("skipped: {e}");
            return;
        }
    };
    let cases: u32 = std::env::var("LASTMILE_EXACTNESS_CASES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(100);
    let mut rows = Vec::new();
    let mut worst = 0;
    for family in Family::ALL {
        if matches!(family, Family::BadInput) {
            continue;
        }
        let strat = strategy(family, WeightBits::W8);
        let mut runner = TestRunner::new_with_rng(
            Config::default(),
            rng_from_seed(0x0E7A_C7E5 ^ family as u64),
        );
        let mut st = Stats::default();
        for _ in 0..cases {
            let case = strat.new_tree(&mut runner).expect("case").current();
            let want = lastmile_backend_cpu_ref::run(&case.model, &case.input, case.n).unwrap();
            st.add(&run(&backend, &case.model, &case.input, case.n), &want);
        }
        worst = worst.max(st.max);
        rows.push(st.row(family.name()));
    }
    // Realistic models: PTQ-quantized zoo architectures on random non-negative inputs.
    for (name, input) in [
        ("digits-cnn", None),
        ("resnet-tiny", Some(&[16usize, 16, 3][..])),
    ] {
        let (topology, specs) = lastmile_core::zoo::by_name(name, input, 10).unwrap();
        let float = lastmile_core::zoo::init_float(topology, specs, 3);
        let sample: usize = float.topology.input_shape.iter().product();
        let mut s = 0x5EEDu64;
        let mut rnd = || {
            s = lastmile_conformance::strategies::splitmix64(s);
            (s >> 40) as f32 / (1u64 << 24) as f32
        };
        let calib: Vec<f32> = (0..8 * sample).map(|_| rnd()).collect();
        let (model, _) = lastmile_core::ptq::quantize(&float, &calib, 8, WeightBits::W8).unwrap();
        let n = 16;
        let q = model.act[0];
        let input: Vec<i8> = (0..n * sample)
            .map(|_| ((rnd() / q.scale).round() as i32 + q.zero_point).clamp(-128, 127) as i8)
            .collect();
        let want = lastmile_backend_cpu_ref::run(&model, &input, n).unwrap();
        let mut st = Stats::default();
        st.add(&run(&backend, &model, &input, n), &want);
        worst = worst.max(st.max);
        rows.push(st.row(&format!("model {name} (n = {n}, logits)")));
    }
    eprintln!(
        "\nONNX Runtime {} vs cpu-ref, 8w8a, {cases} generated cases per family:\n\
         | family | cases | output codes | codes off by ≥ 1 | max |Δ| |\n|---|---:|---:|---:|---:|",
        backend.version()
    );
    for r in &rows {
        eprintln!("{r}");
    }
    assert!(
        worst <= MAX_LSB as i32,
        "measured max |Δ| = {worst} exceeds the declared {MAX_LSB} LSB"
    );
}
