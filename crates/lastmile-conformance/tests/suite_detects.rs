//! The suite must be able to fail: deliberately broken backends ("mutants"
//! wrapping the reference) are caught by the right family, reported readably,
//! and never take the runner down.

use lastmile_backend_cpu_ref::CpuRef;
use lastmile_conformance::{
    Family, Problem, Settings, Status, check_case, run_all_with, run_family,
};
use lastmile_core::backend::{
    Backend, BackendError, Capabilities, Exactness, PreparedModel, WeightUpdates,
};
use lastmile_core::graph::{Op, OpKind};
use lastmile_core::model::{QParam, QuantModel};
use lastmile_core::quant::WeightBits;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Bug {
    /// Adds `delta` to one output code of every conv2d (groups 1) model.
    ConvOffBy(i8),
    /// Uses the parameters seen at `prepare`, ignoring changes.
    StaleWeights,
    /// No argument checks: wrong lengths are "run" anyway.
    NoArgChecks,
    /// Declares every op but refuses Add.
    RefusesAdd,
    /// Panics on max pooling.
    PanicsOnMaxPool,
    /// Accepts any model at prepare (no validation).
    NoValidation,
    /// Declares only Linear at 8w8a.
    LinearOnly,
    /// Correct, but declares a tolerance of 1 LSB and uses it on conv outputs.
    Tolerant,
}

#[derive(Debug)]
struct Mutant(Bug);

#[derive(Debug)]
struct MutantPrepared {
    bug: Bug,
    model: QuantModel,
    inner: Option<Box<dyn PreparedModel>>,
    out_shape: Vec<usize>,
}

impl Backend for Mutant {
    fn name(&self) -> &str {
        "mutant"
    }
    fn tier(&self) -> &str {
        "test"
    }
    fn capabilities(&self) -> Capabilities {
        let mut c = CpuRef.capabilities();
        match self.0 {
            Bug::LinearOnly => {
                c.ops = vec![OpKind::Linear];
                c.weight_bits = vec![WeightBits::W8];
            }
            Bug::Tolerant => {
                c.exactness = Exactness::WithinLsb {
                    max_lsb: 1,
                    note: "test".into(),
                }
            }
            Bug::StaleWeights => {
                c.weight_updates = WeightUpdates::UploadsEveryForward {
                    cost: "claims to".into(),
                }
            }
            _ => {}
        }
        c
    }
    fn prepare(&self, model: &QuantModel) -> Result<Box<dyn PreparedModel>, BackendError> {
        self.capabilities().check_model(model)?;
        if self.0 == Bug::RefusesAdd
            && model
                .topology
                .nodes
                .iter()
                .any(|n| matches!(n.op, Op::Add { .. }))
        {
            return Err(BackendError::Unsupported("add".into()));
        }
        let inner = if self.0 == Bug::NoValidation {
            CpuRef.prepare(model).ok()
        } else {
            Some(CpuRef.prepare(model)?)
        };
        let out_shape = inner
            .as_ref()
            .map(|p| p.output_shape().to_vec())
            .unwrap_or_default();
        Ok(Box::new(MutantPrepared {
            bug: self.0,
            model: model.clone(),
            inner,
            out_shape,
        }))
    }
}

impl PreparedModel for MutantPrepared {
    fn forward(
        &mut self,
        params: &[QParam],
        input: &[i8],
        n: usize,
        output: &mut Vec<i8>,
    ) -> Result<(), BackendError> {
        let Some(inner) = self.inner.as_mut() else {
            return Ok(());
        };
        if self.bug == Bug::PanicsOnMaxPool
            && self
                .model
                .topology
                .nodes
                .iter()
                .any(|n| matches!(n.op, Op::MaxPool(_)))
        {
            panic!("mutant: max pool not implemented");
        }
        if self.bug == Bug::NoArgChecks {
            let sample: usize = self.model.topology.input_shape.iter().product();
            if input.len() != n * sample || params.len() != self.model.params.len() {
                output.clear();
                output.resize(n * self.out_shape.iter().product::<usize>(), 0);
                return Ok(());
            }
        }
        let params = if self.bug == Bug::StaleWeights {
            &self.model.params[..]
        } else {
            params
        };
        inner.forward(params, input, n, output)?;
        let is_conv = matches!(&self.model.topology.nodes[0].op, Op::Conv2d(c) if c.groups == 1)
            && self.model.topology.nodes.len() == 1;
        let delta = match self.bug {
            Bug::ConvOffBy(d) => d,
            Bug::Tolerant => 1,
            _ => 0,
        };
        if is_conv && delta != 0 {
            let i = output.len() / 2;
            output[i] = output[i]
                .checked_add(delta)
                .unwrap_or_else(|| output[i] - delta);
        }
        Ok(())
    }
    fn output_shape(&self) -> &[usize] {
        &self.out_shape
    }
}

fn settings() -> Settings {
    Settings {
        cases: 24,
        seed: 0x1a57_a11e,
        max_shrink_iters: 256,
    }
}

fn run(bug: Bug, family: Family, bits: WeightBits) -> lastmile_conformance::FamilyReport {
    run_family(&Mutant(bug), family, bits, &settings())
}

#[test]
fn an_off_by_one_conv_is_caught_and_reported_readably() {
    let r = run(Bug::ConvOffBy(1), Family::Conv2d, WeightBits::W8);
    let f = r.failure.as_ref().expect("an off-by-one conv must fail");
    assert!(matches!(*f.mismatch.problem, Problem::Outputs { .. }));
    let text = r.to_string();
    eprintln!("{text}");
    for needle in [
        "first forward",
        "1 of ",
        "expected → found",
        "found − expected",
        "conv2d",
        "K = ",
        "multipliers",
        "LASTMILE_CONFORMANCE_SEED=",
        "zp = ",
    ] {
        assert!(text.contains(needle), "report lacks {needle:?}:\n{text}");
    }
    // Other families are unaffected.
    assert!(
        run(Bug::ConvOffBy(1), Family::Linear, WeightBits::W8)
            .failure
            .is_none()
    );
}

#[test]
fn failures_shrink_to_small_cases() {
    let r = run(Bug::ConvOffBy(3), Family::Conv2d, WeightBits::W16);
    let f = r.failure.expect("must fail");
    assert!(f.shrink_steps > 0, "no shrinking happened");
    // The shrunk case is the minimal batch.
    assert!(
        f.mismatch.case.contains("batch n = 1"),
        "{}",
        f.mismatch.case
    );
}

#[test]
fn declared_tolerance_is_honoured_and_enforced() {
    assert!(
        run(Bug::Tolerant, Family::Conv2d, WeightBits::W8)
            .failure
            .is_none()
    );
    // WithinLsb{1} does not excuse 2 LSB: a Tolerant backend that adds 2 would fail;
    // check the comparison directly.
    let r = run(Bug::ConvOffBy(2), Family::Conv2d, WeightBits::W8);
    assert!(r.failure.is_some());
}

#[test]
fn stale_weights_are_caught_by_the_update_check() {
    let r = run(Bug::StaleWeights, Family::WeightUpdates, WeightBits::W8);
    let f = r.failure.expect("ignoring weight updates must fail");
    assert!(
        f.mismatch.stage.contains("after update"),
        "stage: {}",
        f.mismatch.stage
    );
    let r = run(Bug::StaleWeights, Family::Linear, WeightBits::W16);
    assert!(r.failure.is_some());
}

#[test]
fn missing_argument_checks_are_caught() {
    let r = run(Bug::NoArgChecks, Family::BadInput, WeightBits::W8);
    let f = r.failure.expect("must fail");
    assert!(
        matches!(*f.mismatch.problem, Problem::NotRejected { .. }),
        "{}",
        f.mismatch
    );
    let r = run(Bug::NoValidation, Family::BadInput, WeightBits::W16);
    let f = r.failure.expect("must fail");
    assert!(
        matches!(
            *f.mismatch.problem,
            Problem::InvalidModelAccepted { .. } | Problem::NotRejected { .. }
        ),
        "{}",
        f.mismatch
    );
}

#[test]
fn unsupported_for_a_declared_op_fails_and_undeclared_ops_are_skipped() {
    let r = run(Bug::RefusesAdd, Family::Add, WeightBits::W8);
    let f = r.failure.expect("must fail");
    assert!(matches!(
        *f.mismatch.problem,
        Problem::UnsupportedButDeclared(_)
    ));

    let r = run(Bug::LinearOnly, Family::Conv2d, WeightBits::W8);
    assert!(matches!(r.status, Status::Skipped(_)), "{}", r.summary());
    assert!(r.summary().contains("skipped: not supported"));
    let r = run(Bug::LinearOnly, Family::Linear, WeightBits::W16);
    assert!(matches!(r.status, Status::Skipped(_)), "{}", r.summary());
    let r = run(Bug::LinearOnly, Family::Linear, WeightBits::W8);
    assert_eq!(r.status, Status::Ran);
    assert!(r.failure.is_none(), "{r}");
    // bad_input: only linear-only cases run, the rest are skipped one by one.
    let r = run(Bug::LinearOnly, Family::BadInput, WeightBits::W8);
    assert!(r.failure.is_none(), "{r}");
    assert!(r.skipped > 0);
}

#[test]
fn panics_are_reported_not_propagated() {
    let r = run(Bug::PanicsOnMaxPool, Family::MaxPool, WeightBits::W8);
    let f = r.failure.expect("must fail");
    assert!(matches!(*f.mismatch.problem, Problem::Panic(_)));
    assert!(f.mismatch.to_string().contains("max pool not implemented"));
}

#[test]
fn run_all_reports_every_family_and_width_without_panicking() {
    let s = Settings {
        cases: 4,
        ..settings()
    };
    let report = run_all_with(&Mutant(Bug::PanicsOnMaxPool), &s);
    assert_eq!(report.families.len(), 2 * Family::ALL.len());
    let failed: Vec<_> = report.failures().map(|f| f.family).collect();
    assert!(failed.contains(&Family::MaxPool));
    assert!(!report.is_ok());
    assert!(report.to_string().contains("maxpool 8w8a: FAILED"));

    let ok = run_all_with(&CpuRef, &s);
    assert!(ok.is_ok(), "{ok}");
    assert!(
        ok.families
            .iter()
            .all(|f| f.status == Status::Ran && f.passed == 4)
    );
}

#[test]
fn check_case_accepts_the_reference_on_every_family() {
    use proptest::strategy::{Strategy, ValueTree};
    use proptest::test_runner::TestRunner;
    let mut runner = TestRunner::deterministic();
    for family in Family::ALL {
        if family == Family::BadInput {
            continue;
        }
        for bits in [WeightBits::W8, WeightBits::W16] {
            let strat = lastmile_conformance::strategies::strategy(family, bits);
            for _ in 0..4 {
                let case = strat.new_tree(&mut runner).unwrap().current();
                check_case(&CpuRef, &case).unwrap_or_else(|m| panic!("{m}"));
            }
        }
    }
}
