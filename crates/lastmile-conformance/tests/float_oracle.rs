//! The reference checked against real arithmetic: every node of random cases
//! within the bounds derived in `docs/conformance.md`, and proof that the check
//! has teeth (a code moved one step away from the float value is caught).

use proptest::strategy::{Strategy, ValueTree};
use proptest::test_runner::{Config, TestRunner};

use lastmile_conformance::oracle::{self, OracleStats, node_reference, reference_values};
use lastmile_conformance::strategies;
use lastmile_conformance::{Case, Family};
use lastmile_core::plan::Plan;
use lastmile_core::quant::WeightBits;

fn cases(strategy: impl Strategy<Value = Case>, count: usize, seed: u8) -> Vec<Case> {
    let mut runner = TestRunner::new_with_rng(
        Config::default(),
        proptest::test_runner::TestRng::from_seed(
            proptest::test_runner::RngAlgorithm::ChaCha,
            &[seed; 32],
        ),
    );
    (0..count)
        .map(|_| strategy.new_tree(&mut runner).unwrap().current())
        .collect()
}

fn count() -> usize {
    std::env::var("LASTMILE_CONFORMANCE_CASES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(64)
}

fn check_family(family: Family, bits: WeightBits, seed: u8) -> OracleStats {
    let mut stats = OracleStats::default();
    for case in cases(strategies::strategy(family, bits), count(), seed) {
        match oracle::check_case(&case) {
            Ok(s) => stats.merge(s),
            Err(v) => panic!("float oracle violated: {v}\n{case}"),
        }
    }
    stats
}

#[test]
fn every_op_family_is_within_the_float_bound() {
    let families = [
        Family::Conv2d,
        Family::ConvGrouped,
        Family::Depthwise,
        Family::Linear,
        Family::Add,
        Family::MaxPool,
        Family::AvgPool,
        Family::GlobalAvgPool,
        Family::Flatten,
        Family::SmallGraphs,
    ];
    for (i, family) in families.into_iter().enumerate() {
        for bits in [WeightBits::W8, WeightBits::W16] {
            let s = check_family(family, bits, i as u8 + 10 * bits.bytes() as u8);
            eprintln!(
                "{family} {}: {} elements, {:.1}% with a bound below 3/4 LSB, worst |error|/bound = {:.3}",
                bits.scheme(),
                s.elements,
                100.0 * s.tight as f64 / s.elements.max(1) as f64,
                s.worst_ratio
            );
            assert!(s.worst_ratio <= 1.0);
            // The check must be sharp where it matters: most elements' bounds are
            // below 3/4 LSB, so a 1-LSB error away from the float value is caught.
            assert!(
                s.tight * 10 >= s.elements * 6,
                "{family} {}: only {} of {} elements have a tight bound",
                bits.scheme(),
                s.tight,
                s.elements
            );
        }
    }
}

/// Moves one output code of the last node one step *away* from its float value
/// (where the bound is tight and the move stays a legal code) and expects the
/// oracle to fail. Returns whether a perturbation was possible.
fn perturbation_is_caught(case: &Case, pick: usize) -> Option<bool> {
    let mut values = reference_values(case);
    let plan = Plan::derive(&case.model).unwrap();
    let last = case.model.topology.nodes.len() - 1;
    let r = node_reference(&case.model, &plan, case.n, &values, last);
    let y = &values[last + 1];
    let len = y.len();
    let candidates: Vec<(usize, i8)> = (0..len)
        .filter_map(|j| {
            let code = y[j];
            if r.bounds[j].total() >= 0.5 * r.lsb + 0.25 * r.lsb {
                return None;
            }
            let up = r.int_real(&case.model, last, code) >= r.float[j];
            let new = if up {
                code.checked_add(1)?
            } else {
                code.checked_sub(1)?
            };
            Some((j, new))
        })
        .collect();
    if candidates.is_empty() {
        return None;
    }
    let (j, new) = candidates[pick % candidates.len()];
    values[last + 1][j] = new;
    Some(oracle::check_values(&case.model, case.n, &values).is_err())
}

#[test]
fn the_oracle_catches_a_code_one_step_off() {
    for family in [
        Family::Conv2d,
        Family::Depthwise,
        Family::Linear,
        Family::Add,
        Family::AvgPool,
        Family::GlobalAvgPool,
        Family::MaxPool,
        Family::Flatten,
    ] {
        let mut tried = 0;
        for (i, case) in cases(strategies::strategy(family, WeightBits::W8), 48, 99)
            .iter()
            .enumerate()
        {
            if let Some(caught) = perturbation_is_caught(case, i * 7) {
                tried += 1;
                assert!(caught, "{family}: an off-by-one went unnoticed\n{case}");
            }
        }
        assert!(
            tried >= 10,
            "{family}: only {tried} cases could be perturbed"
        );
    }
}

#[test]
fn a_violation_names_the_node_and_the_bound() {
    let case = cases(strategies::linear(WeightBits::W16), 40, 3)
        .into_iter()
        .find(|c| perturbation_is_caught(c, 0) == Some(true))
        .expect("some linear case can be perturbed");
    let mut values = reference_values(&case);
    let plan = Plan::derive(&case.model).unwrap();
    let r = node_reference(&case.model, &plan, case.n, &values, 0);
    let j = (0..values[1].len())
        .find(|&j| r.bounds[j].total() < 0.75 * r.lsb && values[1][j] < 120 && values[1][j] > -120)
        .expect("a tight, unclamped element");
    values[1][j] += if r.int_real(&case.model, 0, values[1][j]) >= r.float[j] {
        2
    } else {
        -2
    };
    let v = oracle::check_values(&case.model, case.n, &values).unwrap_err();
    let text = v.to_string();
    assert!(text.contains("node 0 'fc' (linear)"), "{text}");
    assert!(text.contains("exceeds the bound"), "{text}");
    assert!(text.contains("LSB"), "{text}");
}
