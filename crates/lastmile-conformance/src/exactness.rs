//! How far a backend's output codes are from the reference: per op family (generated
//! cases of the suite, fixed seeds) and on PTQ-quantized zoo models. Backends that
//! declare a tolerance ([`Exactness::WithinLsb`](lastmile_core::Exactness)) print the
//! table ([`ExactnessReport::table`]) and assert [`ExactnessReport::worst`] against it.

use lastmile_core::backend::Backend;
use lastmile_core::model::QuantModel;
use lastmile_core::quant::WeightBits;
use proptest::strategy::{Strategy, ValueTree};
use proptest::test_runner::{Config, TestRunner};

use crate::Family;
use crate::strategies::{rng_from_seed, splitmix64, strategy};

/// Cases per family when `LASTMILE_EXACTNESS_CASES` is unset or unparsable.
pub const DEFAULT_EXACTNESS_CASES: u32 = 100;

/// `LASTMILE_EXACTNESS_CASES`, else [`DEFAULT_EXACTNESS_CASES`].
pub fn cases_from_env() -> u32 {
    std::env::var("LASTMILE_EXACTNESS_CASES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(DEFAULT_EXACTNESS_CASES)
}

/// Differences over some runs.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Stats {
    /// Runs compared.
    pub cases: usize,
    /// Output codes compared.
    pub codes: usize,
    /// Output codes that differ.
    pub off: usize,
    /// The largest `|got - want|`.
    pub max: i32,
}

impl Stats {
    /// Adds one run.
    ///
    /// # Panics
    ///
    /// If the lengths differ.
    pub fn add(&mut self, got: &[i8], want: &[i8]) {
        assert_eq!(got.len(), want.len(), "output lengths differ");
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

    /// A markdown table row named `name`.
    pub fn row(&self, name: &str) -> String {
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

/// What [`measure`] found: one row per op family, then one per zoo model.
#[derive(Debug, Clone, Default)]
pub struct ExactnessReport {
    /// Generated cases per family.
    pub cases_per_family: u32,
    /// (row name, its statistics).
    pub rows: Vec<(String, Stats)>,
}

impl ExactnessReport {
    /// The largest `|got - want|` over every row.
    pub fn worst(&self) -> i32 {
        self.rows.iter().map(|(_, s)| s.max).max().unwrap_or(0)
    }

    /// The markdown table: header, separator, one line per row.
    pub fn table(&self) -> String {
        let mut t = String::from(
            "| family | cases | output codes | codes off by ≥ 1 | max |Δ| |\n|---|---:|---:|---:|---:|",
        );
        for (name, st) in &self.rows {
            t.push('\n');
            t.push_str(&st.row(name));
        }
        t
    }
}

/// Prepares `model` on `backend` and runs one forward.
///
/// # Panics
///
/// If either fails.
pub fn forward(backend: &dyn Backend, model: &QuantModel, input: &[i8], n: usize) -> Vec<i8> {
    let mut p = backend.prepare(model).expect("prepare");
    let mut out = Vec::new();
    p.forward(&model.params, input, n, &mut out)
        .expect("forward");
    out
}

/// Runs `cases` generated 8w8a cases of every family except `bad_input` (seed
/// `0x0E7A_C7E5 ^ family`), then `digits-cnn` and `resnet-tiny` (16×16×3) PTQ-quantized
/// on random non-negative inputs (16 samples, logits), through `run(model, input, n)`
/// and through `cpu-ref`.
///
/// # Panics
///
/// If the reference fails, or `run` does.
pub fn measure(
    cases: u32,
    mut run: impl FnMut(&QuantModel, &[i8], usize) -> Vec<i8>,
) -> ExactnessReport {
    let mut rows = Vec::new();
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
            st.add(&run(&case.model, &case.input, case.n), &want);
        }
        rows.push((family.name().to_string(), st));
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
            s = splitmix64(s);
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
        st.add(&run(&model, &input, n), &want);
        rows.push((format!("model {name} (n = {n}, logits)"), st));
    }
    ExactnessReport {
        cases_per_family: cases,
        rows,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use lastmile_backend_cpu_ref::CpuRef;

    #[test]
    fn the_reference_against_itself_is_exact_and_counts_every_code() {
        let r = measure(2, |m, x, n| forward(&CpuRef, m, x, n));
        // Every family but bad_input, then the two zoo models.
        assert_eq!(r.rows.len(), Family::ALL.len() - 1 + 2);
        assert_eq!(r.worst(), 0);
        for (name, st) in &r.rows {
            assert!(st.codes > 0 && st.off == 0, "{name}: {st:?}");
        }
        assert_eq!(r.table().lines().count(), 2 + r.rows.len());
    }

    #[test]
    fn a_backend_one_lsb_off_is_measured() {
        let r = measure(1, |m, x, n| {
            let mut y = forward(&CpuRef, m, x, n);
            y[0] = y[0].wrapping_add(1);
            if y[0] == i8::MIN {
                y[0] = 126; // 127 + 1 would wrap: stay 1 LSB away
            }
            y
        });
        assert_eq!(r.worst(), 1);
        assert!(r.rows.iter().all(|(_, st)| st.off == 1));
    }
}
