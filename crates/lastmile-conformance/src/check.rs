//! The comparison: a backend against the reference, on one case.

use core::fmt;
use std::panic::{AssertUnwindSafe, catch_unwind};

use lastmile_core::backend::{Backend, BackendError, Exactness, PreparedModel, WeightUpdates};
use lastmile_core::model::{QParam, QuantModel};

use crate::case::Case;

/// What went wrong.
#[derive(Clone, Debug, PartialEq)]
pub enum Problem {
    /// Output codes differ from the reference beyond the declared exactness.
    Outputs {
        /// Per-sample output shape.
        shape: Vec<usize>,
        /// Batch size.
        n: usize,
        /// The reference's codes.
        expected: Vec<i8>,
        /// The backend's codes.
        found: Vec<i8>,
        /// Allowed |difference| (0 for bit-exact).
        max_lsb: u8,
    },
    /// The output buffer has the wrong length.
    OutputLength {
        /// `n · Π output_shape`.
        expected: usize,
        /// What the backend wrote.
        found: usize,
    },
    /// `PreparedModel::output_shape` disagrees with the reference.
    OutputShape {
        /// The reference's per-sample shape.
        expected: Vec<usize>,
        /// The backend's.
        found: Vec<usize>,
    },
    /// The backend failed where it should have succeeded.
    Error(BackendError),
    /// The backend returned `Unsupported` for a model whose ops and width it declares.
    UnsupportedButDeclared(String),
    /// The backend panicked.
    Panic(String),
    /// Bad forward arguments were not rejected with `InvalidInput`.
    NotRejected {
        /// What was wrong with the arguments.
        what: String,
        /// What the backend did instead.
        got: String,
    },
    /// An invalid model was prepared without error.
    InvalidModelAccepted {
        /// What was wrong with the model.
        what: String,
    },
    /// The reference itself failed on the case: a generator or spec bug, not the backend's.
    Reference(String),
}

/// A failed check, with everything needed to read and reproduce it.
#[derive(Clone, Debug, PartialEq)]
pub struct Mismatch {
    /// `name/tier` of the backend under test.
    pub backend: String,
    /// The case, as printed by [`Case`]'s `Display` (op, shapes, quant params).
    pub case: String,
    /// Which call of the check failed, e.g. "forward after update 1".
    pub stage: String,
    /// What went wrong (boxed: output buffers can be large).
    pub problem: Box<Problem>,
}

impl Mismatch {
    pub(crate) fn new(backend: &dyn Backend, case: &Case, stage: &str, problem: Problem) -> Self {
        Mismatch {
            backend: format!("{}/{}", backend.name(), backend.tier()),
            case: case.to_string(),
            stage: stage.into(),
            problem: Box::new(problem),
        }
    }
}

/// Result of a check that ran to completion.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Outcome {
    /// Every comparison held.
    Passed,
    /// The case uses an op or width the backend does not declare, and the backend said so.
    Skipped(String),
}

/// Checks `backend` against the reference `CpuRef` on `case`; see [`check_case_outcome`].
/// A case the backend does not declare support for counts as passed.
pub fn check_case(backend: &dyn Backend, case: &Case) -> Result<(), Mismatch> {
    check_case_outcome(backend, case).map(|_| ())
}

pub(crate) fn panic_message(p: Box<dyn std::any::Any + Send>) -> String {
    if let Some(s) = p.downcast_ref::<&str>() {
        (*s).to_string()
    } else if let Some(s) = p.downcast_ref::<String>() {
        s.clone()
    } else {
        "(non-string panic payload)".into()
    }
}

/// Runs `f`, turning a panic into `Problem::Panic`.
pub(crate) fn guarded<T>(f: impl FnOnce() -> T) -> Result<T, Problem> {
    catch_unwind(AssertUnwindSafe(f)).map_err(|p| Problem::Panic(panic_message(p)))
}

/// The reference's output for `model` on `input`.
pub(crate) fn reference_output(
    model: &QuantModel,
    input: &[i8],
    n: usize,
) -> Result<Vec<i8>, Problem> {
    match guarded(|| lastmile_backend_cpu_ref::run(model, input, n)) {
        Ok(Ok(v)) => Ok(v),
        Ok(Err(e)) => Err(Problem::Reference(format!("cpu-ref failed: {e}"))),
        Err(Problem::Panic(m)) => Err(Problem::Reference(format!("cpu-ref panicked: {m}"))),
        Err(p) => Err(p),
    }
}

/// The full check of one case:
///
/// 1. prepare on the backend (and on the reference `CpuRef`); `Unsupported` is accepted only
///    if the backend's [`Capabilities`](lastmile_core::Capabilities) do not list
///    every op and the width of the model;
/// 2. forward, compare raw `i8` outputs (exactly for `BitExact`, within
///    `max_lsb` for `WithinLsb`) and the output shape;
/// 3. for each of the case's updates: change the trainable tensors, forward again
///    (re-preparing first if the backend declares `Reprepare`) and compare with a
///    fresh reference run of the changed model;
/// 4. forward with the original parameters again (restoring must restore the output);
/// 5. if the batch has more than one sample, forward just the first sample on the
///    same prepared model (batch size may change between calls).
///
/// Panics inside the backend are caught and reported.
pub fn check_case_outcome(backend: &dyn Backend, case: &Case) -> Result<Outcome, Mismatch> {
    let fail = |stage: &str, p: Problem| Mismatch::new(backend, case, stage, p);
    let caps = guarded(|| backend.capabilities()).map_err(|p| fail("capabilities", p))?;
    let declared = caps.check_model(&case.model);
    let max_lsb = match caps.exactness {
        Exactness::BitExact => 0,
        Exactness::WithinLsb { max_lsb, .. } => max_lsb,
    };

    let expected0 = reference_output(&case.model, &case.input, case.n)
        .map_err(|p| fail("reference forward", p))?;
    let ref_shape = lastmile_backend_cpu_ref::Prepared::new(&case.model)
        .map(|p| p.output_shape().to_vec())
        .map_err(|e| fail("reference prepare", Problem::Reference(e.to_string())))?;

    let prepare =
        |model: &QuantModel, stage: &str| -> Result<Option<Box<dyn PreparedModel>>, Mismatch> {
            match guarded(|| backend.prepare(model)) {
                Err(p) => Err(fail(stage, p)),
                Ok(Ok(p)) => Ok(Some(p)),
                Ok(Err(BackendError::Unsupported(why))) => match &declared {
                    Err(_) => Ok(None),
                    Ok(()) => Err(fail(stage, Problem::UnsupportedButDeclared(why))),
                },
                Ok(Err(e)) => Err(fail(stage, Problem::Error(e))),
            }
        };
    let Some(mut prepared) = prepare(&case.model, "prepare")? else {
        let why = declared.err().map(|e| e.to_string()).unwrap_or_default();
        return Ok(Outcome::Skipped(why));
    };

    let found_shape =
        guarded(|| prepared.output_shape().to_vec()).map_err(|p| fail("output_shape", p))?;
    if found_shape != ref_shape {
        return Err(fail(
            "output_shape after prepare",
            Problem::OutputShape {
                expected: ref_shape,
                found: found_shape,
            },
        ));
    }

    let compare = |stage: &str,
                   prepared: &mut Box<dyn PreparedModel>,
                   params: &[QParam],
                   input: &[i8],
                   n: usize,
                   expected: &[i8]|
     -> Result<(), Mismatch> {
        let mut out = Vec::new();
        match guarded(|| prepared.forward(params, input, n, &mut out)) {
            Err(p) => return Err(fail(stage, p)),
            Ok(Err(e)) => return Err(fail(stage, Problem::Error(e))),
            Ok(Ok(())) => {}
        }
        if out.len() != expected.len() {
            return Err(fail(
                stage,
                Problem::OutputLength {
                    expected: expected.len(),
                    found: out.len(),
                },
            ));
        }
        let bad = out
            .iter()
            .zip(expected)
            .any(|(&f, &e)| (f as i32 - e as i32).unsigned_abs() > max_lsb as u32);
        if bad {
            return Err(fail(
                stage,
                Problem::Outputs {
                    shape: ref_shape.clone(),
                    n,
                    expected: expected.to_vec(),
                    found: out,
                    max_lsb,
                },
            ));
        }
        Ok(())
    };

    compare(
        "first forward",
        &mut prepared,
        &case.model.params,
        &case.input,
        case.n,
        &expected0,
    )?;

    let reprepare = matches!(caps.weight_updates, WeightUpdates::Reprepare { .. });
    for (u, update) in case.updates.iter().enumerate() {
        let stage = format!("forward after update {} of the trainable tensors", u + 1);
        let model_u = case.model_after(update);
        let expected_u =
            reference_output(&model_u, &case.input, case.n).map_err(|p| fail(&stage, p))?;
        if reprepare {
            match prepare(&model_u, &format!("re-prepare for update {}", u + 1))? {
                Some(p) => prepared = p,
                None => return Ok(Outcome::Skipped("unsupported after update".into())),
            }
        }
        compare(
            &stage,
            &mut prepared,
            &model_u.params,
            &case.input,
            case.n,
            &expected_u,
        )?;
    }

    if !case.updates.is_empty() {
        if reprepare
            && let Some(p) = prepare(&case.model, "re-prepare with the original parameters")?
        {
            prepared = p;
        }
        compare(
            "forward after restoring the original parameters",
            &mut prepared,
            &case.model.params,
            &case.input,
            case.n,
            &expected0,
        )?;
    }

    if case.n > 1 {
        let per_in = case.input.len() / case.n;
        let per_out = expected0.len() / case.n;
        compare(
            "forward of a smaller batch (n = 1) on the same prepared model",
            &mut prepared,
            &case.model.params,
            &case.input[..per_in],
            1,
            &expected0[..per_out],
        )?;
    }
    Ok(Outcome::Passed)
}

// ---------------------------------------------------------------- display

fn multi_index(shape: &[usize], n: usize, flat: usize) -> Vec<usize> {
    let mut dims = vec![n];
    dims.extend_from_slice(shape);
    let mut idx = vec![0; dims.len()];
    let mut rem = flat;
    for d in (0..dims.len()).rev() {
        let size = dims[d].max(1);
        idx[d] = rem % size;
        rem /= size;
    }
    idx
}

const MAX_LISTED: usize = 8;
const GRID_ROWS: usize = 8;
const GRID_COLS: usize = 12;

fn write_grid(
    f: &mut fmt::Formatter<'_>,
    title: &str,
    rows: usize,
    cols: usize,
    at: &dyn Fn(usize, usize) -> Option<usize>,
    expected: &[i8],
    found: &[i8],
) -> fmt::Result {
    let rs = rows.min(GRID_ROWS);
    let cs = cols.min(GRID_COLS);
    writeln!(f, "  {title}")?;
    write!(f, "    {:>5} |", "")?;
    for c in 0..cs {
        write!(f, " {c:>4}")?;
    }
    if cols > cs {
        write!(f, "  …")?;
    }
    writeln!(f)?;
    for r in 0..rs {
        write!(f, "    {r:>5} |")?;
        for c in 0..cs {
            match at(r, c) {
                Some(i) => write!(f, " {:>4}", expected[i])?,
                None => write!(f, "     ")?,
            }
        }
        write!(f, "   expected\n          |")?;
        for c in 0..cs {
            let Some(i) = at(r, c) else {
                write!(f, "     ")?;
                continue;
            };
            let d = found[i] as i32 - expected[i] as i32;
            if d == 0 {
                write!(f, " {:>4}", ".")?;
            } else {
                write!(f, " {d:>+4}")?;
            }
        }
        writeln!(f, "   found − expected")?;
    }
    if rows > rs {
        writeln!(f, "    … {} more rows", rows - rs)?;
    }
    Ok(())
}

fn write_outputs(
    f: &mut fmt::Formatter<'_>,
    shape: &[usize],
    n: usize,
    expected: &[i8],
    found: &[i8],
    max_lsb: u8,
) -> fmt::Result {
    let diffs: Vec<usize> = (0..expected.len())
        .filter(|&i| (found[i] as i32 - expected[i] as i32).unsigned_abs() > max_lsb as u32)
        .collect();
    let worst = diffs
        .iter()
        .map(|&i| (found[i] as i32 - expected[i] as i32).abs())
        .max()
        .unwrap_or(0);
    writeln!(
        f,
        "  {} of {} output codes differ by more than {max_lsb} LSB (largest |Δ| = {worst}); output [n, {}] = [{n}, {}]",
        diffs.len(),
        expected.len(),
        if shape.len() == 3 { "H, W, C" } else { "F" },
        shape
            .iter()
            .map(|d| d.to_string())
            .collect::<Vec<_>>()
            .join(", "),
    )?;
    writeln!(f, "  first differences (index: expected → found):")?;
    for &i in diffs.iter().take(MAX_LISTED) {
        writeln!(
            f,
            "    {:?}: {} → {} ({:+})",
            multi_index(shape, n, i),
            expected[i],
            found[i],
            found[i] as i32 - expected[i] as i32
        )?;
    }
    if diffs.len() > MAX_LISTED {
        writeln!(f, "    … {} more", diffs.len() - MAX_LISTED)?;
    }
    let Some(&first) = diffs.first() else {
        return Ok(());
    };
    let sample_len: usize = shape.iter().product();
    let s = first / sample_len.max(1);
    let base = s * sample_len;
    if let [h, w, c] = *shape {
        let ch = first % c;
        write_grid(
            f,
            &format!("grid of sample {s}, channel {ch} (rows = h, columns = w):"),
            h,
            w,
            &|r, col| Some(base + (r * w + col) * c + ch),
            expected,
            found,
        )
    } else {
        let cols = 16usize;
        let rows = sample_len.div_ceil(cols);
        let row0 = (first - base) / cols;
        let shown = rows - row0;
        write_grid(
            f,
            &format!(
                "grid of sample {s}, features {}.. (16 per row, rows start at feature {}):",
                row0 * cols,
                row0 * cols
            ),
            shown,
            cols.min(sample_len),
            &|r, col| {
                let j = (row0 + r) * cols + col;
                (j < sample_len).then_some(base + j)
            },
            expected,
            found,
        )
    }
}

impl fmt::Display for Mismatch {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(
            f,
            "backend '{}' failed the conformance check at: {}",
            self.backend, self.stage
        )?;
        match &*self.problem {
            Problem::Outputs {
                shape,
                n,
                expected,
                found,
                max_lsb,
            } => write_outputs(f, shape, *n, expected, found, *max_lsb)?,
            Problem::OutputLength { expected, found } => {
                writeln!(f, "  output has {found} codes, expected {expected}")?
            }
            Problem::OutputShape { expected, found } => writeln!(
                f,
                "  output_shape() is {found:?}, the reference says {expected:?}"
            )?,
            Problem::Error(e) => writeln!(f, "  unexpected error: {e}")?,
            Problem::UnsupportedButDeclared(why) => writeln!(
                f,
                "  returned Unsupported ({why}) although its capabilities declare every op and the weight width of this model"
            )?,
            Problem::Panic(m) => writeln!(f, "  panicked: {m}")?,
            Problem::NotRejected { what, got } => {
                writeln!(f, "  {what}: expected Err(InvalidInput(..)), got {got}")?
            }
            Problem::InvalidModelAccepted { what } => {
                writeln!(f, "  prepare accepted an invalid model ({what})")?
            }
            Problem::Reference(m) => writeln!(
                f,
                "  the REFERENCE failed on this case (a generator or spec bug, not the backend's): {m}"
            )?,
        }
        write!(f, "case:\n{}", self.case)
    }
}

impl std::error::Error for Mismatch {}
