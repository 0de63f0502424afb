//! Running families of generated cases against a backend, with shrinking and reports.

use core::fmt;
use std::hash::{BuildHasher, Hasher};

use proptest::strategy::{Strategy, ValueTree};
use proptest::test_runner::{Config, TestRunner};

use lastmile_core::backend::Backend;
use lastmile_core::graph::OpKind;
use lastmile_core::quant::WeightBits;

use crate::bad_input::check_bad_input;
use crate::case::{Case, Family};
use crate::check::{Mismatch, Outcome, Problem, check_case_outcome, guarded};
use crate::strategies::{rng_from_seed, splitmix64, strategy};

/// Cases per family and width when `LASTMILE_CONFORMANCE_CASES` is not set.
pub const DEFAULT_CASES: u32 = 64;
/// Shrinking steps when `LASTMILE_CONFORMANCE_SHRINK_ITERS` is not set.
pub const DEFAULT_SHRINK_ITERS: u32 = 512;

/// Environment variable: cases per family and weight width.
pub const ENV_CASES: &str = "LASTMILE_CONFORMANCE_CASES";
/// Environment variable: base seed (decimal or `0x` hex) to reproduce a run.
pub const ENV_SEED: &str = "LASTMILE_CONFORMANCE_SEED";
/// Environment variable: the most shrinking steps spent on a failure.
pub const ENV_SHRINK_ITERS: &str = "LASTMILE_CONFORMANCE_SHRINK_ITERS";

/// How many cases to run, from which seed.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Settings {
    /// Cases per family and weight width.
    pub cases: u32,
    /// Base seed; each family and width derives its own from it.
    pub seed: u64,
    /// Most shrinking steps spent on a failure.
    pub max_shrink_iters: u32,
}

fn parse_u64(s: &str) -> Option<u64> {
    let s = s.trim();
    match s.strip_prefix("0x").or_else(|| s.strip_prefix("0X")) {
        Some(hex) => u64::from_str_radix(hex, 16).ok(),
        None => s.parse().ok(),
    }
}

fn env_u64(name: &str) -> Option<u64> {
    let v = std::env::var(name).ok()?;
    let parsed = parse_u64(&v);
    if parsed.is_none() {
        eprintln!("lastmile-conformance: ignoring {name}={v:?} (not an unsigned integer)");
    }
    parsed
}

fn random_seed() -> u64 {
    // `RandomState` is seeded from the OS: a fresh seed per run without another dependency.
    let mut h = std::collections::hash_map::RandomState::new().build_hasher();
    h.write_u64(std::process::id() as u64);
    h.finish()
}

impl Settings {
    /// `LASTMILE_CONFORMANCE_CASES` (default [`DEFAULT_CASES`]),
    /// `LASTMILE_CONFORMANCE_SEED` (default: random, printed on failure) and
    /// `LASTMILE_CONFORMANCE_SHRINK_ITERS` (default [`DEFAULT_SHRINK_ITERS`]).
    pub fn from_env() -> Self {
        Settings {
            cases: env_u64(ENV_CASES).map_or(DEFAULT_CASES, |c| c.min(u32::MAX as u64) as u32),
            seed: env_u64(ENV_SEED).unwrap_or_else(random_seed),
            max_shrink_iters: env_u64(ENV_SHRINK_ITERS)
                .map_or(DEFAULT_SHRINK_ITERS, |c| c.min(u32::MAX as u64) as u32),
        }
    }

    /// `cases` per family; seed and shrinking from the environment as in [`Settings::from_env`].
    pub fn with_cases(cases: u32) -> Self {
        Settings {
            cases,
            ..Settings::from_env()
        }
    }
}

/// Whether a family ran.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Status {
    /// Cases were generated and checked.
    Ran,
    /// Not run: the reason (e.g. "not supported: 16w8a").
    Skipped(String),
}

/// The first failure of a family, after shrinking.
#[derive(Clone, Debug, PartialEq)]
pub struct Failure {
    /// The (shrunk) mismatch.
    pub mismatch: Mismatch,
    /// Which generated case (0-based) failed first.
    pub case_number: u32,
    /// Shrinking steps taken.
    pub shrink_steps: u32,
}

/// Results of one family at one weight width.
#[derive(Clone, Debug, PartialEq)]
pub struct FamilyReport {
    /// The family.
    pub family: Family,
    /// The weight width.
    pub bits: WeightBits,
    /// Ran or skipped.
    pub status: Status,
    /// Cases that passed.
    pub passed: u32,
    /// Cases skipped one by one (they use an op the backend does not declare).
    pub skipped: u32,
    /// The first failure, if any (the family stops at it).
    pub failure: Option<Failure>,
    /// The base seed of the run (set `LASTMILE_CONFORMANCE_SEED` to it to reproduce).
    pub seed: u64,
}

impl FamilyReport {
    /// One line: `conv2d 8w8a: 64 passed`.
    pub fn summary(&self) -> String {
        let head = format!("{} {}", self.family, self.bits.scheme());
        match (&self.status, &self.failure) {
            (Status::Skipped(why), _) => format!("{head}: skipped: {why}"),
            (Status::Ran, None) => {
                let skipped = if self.skipped > 0 {
                    format!(", {} skipped (undeclared ops)", self.skipped)
                } else {
                    String::new()
                };
                format!("{head}: {} passed{skipped}", self.passed)
            }
            (Status::Ran, Some(f)) => format!(
                "{head}: FAILED at case {} after {} passed (shrunk in {} steps)",
                f.case_number, self.passed, f.shrink_steps
            ),
        }
    }
}

impl fmt::Display for FamilyReport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(f, "{}", self.summary())?;
        if let Some(fail) = &self.failure {
            writeln!(f, "{}", fail.mismatch)?;
            writeln!(
                f,
                "reproduce with {ENV_SEED}={:#x} (same {ENV_CASES}) and the test '{}'",
                self.seed, self.family
            )?;
        }
        Ok(())
    }
}

/// Results of [`run_all`].
#[derive(Clone, Debug, PartialEq)]
pub struct Report {
    /// `name/tier` of the backend.
    pub backend: String,
    /// One entry per family and weight width.
    pub families: Vec<FamilyReport>,
}

impl Report {
    /// Whether no family failed.
    pub fn is_ok(&self) -> bool {
        self.families.iter().all(|f| f.failure.is_none())
    }

    /// The families that failed.
    pub fn failures(&self) -> impl Iterator<Item = &FamilyReport> {
        self.families.iter().filter(|f| f.failure.is_some())
    }
}

impl fmt::Display for Report {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(f, "conformance of '{}':", self.backend)?;
        for fam in &self.families {
            writeln!(f, "  {}", fam.summary())?;
        }
        for fam in self.failures() {
            writeln!(f)?;
            write!(f, "{fam}")?;
        }
        Ok(())
    }
}

fn family_seed(base: u64, family: Family, bits: WeightBits) -> u64 {
    let fi = Family::ALL.iter().position(|&x| x == family).unwrap_or(0) as u64;
    splitmix64(base ^ (fi << 8) ^ bits.bits() as u64)
}

/// Checks one case the way its family requires.
pub fn check_for_family(backend: &dyn Backend, case: &Case) -> Result<Outcome, Mismatch> {
    match case.family {
        Family::BadInput => check_bad_input(backend, case),
        _ => check_case_outcome(backend, case),
    }
}

fn shrink(
    backend: &dyn Backend,
    tree: &mut dyn ValueTree<Value = Case>,
    first: Mismatch,
    max_iters: u32,
) -> (Mismatch, u32) {
    let mut best = first;
    let mut steps = 0;
    let mut last_failed = true;
    while steps < max_iters {
        let moved = if last_failed {
            tree.simplify()
        } else {
            tree.complicate()
        };
        if !moved {
            break;
        }
        steps += 1;
        match check_for_family(backend, &tree.current()) {
            Err(m) => {
                best = m;
                last_failed = true;
            }
            Ok(_) => last_failed = false,
        }
    }
    (best, steps)
}

/// Runs `settings.cases` cases of `family` at width `bits`; stops at the first
/// failure, shrinks it, and reports. Never panics on the backend's behalf.
pub fn run_family(
    backend: &dyn Backend,
    family: Family,
    bits: WeightBits,
    settings: &Settings,
) -> FamilyReport {
    let mut report = FamilyReport {
        family,
        bits,
        status: Status::Ran,
        passed: 0,
        skipped: 0,
        failure: None,
        seed: settings.seed,
    };
    let caps = match guarded(|| backend.capabilities()) {
        Ok(c) => c,
        Err(p) => {
            report.failure = Some(Failure {
                mismatch: Mismatch {
                    backend: backend.name().into(),
                    case: "(none)".into(),
                    stage: "capabilities".into(),
                    problem: Box::new(p),
                },
                case_number: 0,
                shrink_steps: 0,
            });
            return report;
        }
    };
    if !caps.weight_bits.contains(&bits) {
        report.status = Status::Skipped(format!("not supported: {} weights", bits.scheme()));
        return report;
    }
    let missing: Vec<OpKind> = family
        .primary_ops()
        .iter()
        .copied()
        .filter(|op| !caps.ops.contains(op))
        .collect();
    if !missing.is_empty() {
        report.status = Status::Skipped(format!("not supported: {missing:?}"));
        return report;
    }

    let strat = strategy(family, bits);
    let config = Config {
        cases: settings.cases,
        failure_persistence: None,
        max_shrink_iters: settings.max_shrink_iters,
        ..Config::default()
    };
    let mut runner = TestRunner::new_with_rng(
        config,
        rng_from_seed(family_seed(settings.seed, family, bits)),
    );
    for i in 0..settings.cases {
        let mut tree = match strat.new_tree(&mut runner) {
            Ok(t) => t,
            Err(reason) => {
                report.failure = Some(Failure {
                    mismatch: Mismatch {
                        backend: backend.name().into(),
                        case: "(generation failed)".into(),
                        stage: "generating a case".into(),
                        problem: Box::new(Problem::Reference(format!(
                            "generator rejected a case: {reason}"
                        ))),
                    },
                    case_number: i,
                    shrink_steps: 0,
                });
                return report;
            }
        };
        match check_for_family(backend, &tree.current()) {
            Ok(Outcome::Passed) => report.passed += 1,
            Ok(Outcome::Skipped(_)) => report.skipped += 1,
            Err(m) => {
                let (mismatch, shrink_steps) =
                    shrink(backend, tree.as_mut(), m, settings.max_shrink_iters);
                report.failure = Some(Failure {
                    mismatch,
                    case_number: i,
                    shrink_steps,
                });
                return report;
            }
        }
    }
    if report.passed == 0 && report.skipped > 0 {
        report.status =
            Status::Skipped("every generated case uses an op the backend does not declare".into());
    }
    report
}

/// Runs every family at both weight widths with `cases_per_family` cases each
/// (seed from `LASTMILE_CONFORMANCE_SEED` or random). For xtask and the CLI:
/// returns counts and failures, never panics on the backend's behalf.
pub fn run_all(backend: &dyn Backend, cases_per_family: u32) -> Report {
    run_all_with(backend, &Settings::with_cases(cases_per_family))
}

/// [`run_all`] with explicit settings.
pub fn run_all_with(backend: &dyn Backend, settings: &Settings) -> Report {
    let mut families = Vec::new();
    for family in Family::ALL {
        for bits in [WeightBits::W8, WeightBits::W16] {
            families.push(run_family(backend, family, bits, settings));
        }
    }
    Report {
        backend: format!("{}/{}", backend.name(), backend.tier()),
        families,
    }
}

/// The body of each `#[test]` generated by [`crate::conformance_suite!`]: runs
/// `family` at both weight widths with [`Settings::from_env`], prints one summary
/// line per width (visible with `--nocapture`), and panics with the full
/// mismatch report if either fails.
pub fn run_family_test(backend: &dyn Backend, family: Family) {
    let settings = Settings::from_env();
    let mut failed = Vec::new();
    for bits in [WeightBits::W8, WeightBits::W16] {
        let r = run_family(backend, family, bits, &settings);
        eprintln!("{}/{}: {}", backend.name(), backend.tier(), r.summary());
        if r.failure.is_some() {
            failed.push(r.to_string());
        }
    }
    if !failed.is_empty() {
        panic!("\n{}", failed.join("\n"));
    }
}
