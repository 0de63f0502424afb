//! Bad input: malformed forward arguments must give `Err(InvalidInput(..))` and
//! invalid models must fail `prepare` — never a panic, never a silent success.

use lastmile_core::backend::{Backend, BackendError, PreparedModel};
use lastmile_core::graph::{Linear, Node, Op, ParamId, ParamRole, Topology};
use lastmile_core::model::{ParamSpec, QData, QParam, QuantModel};
use lastmile_core::quant::{MAX_K, WeightBits};

use crate::case::Case;
use crate::check::{Mismatch, Outcome, Problem, guarded, reference_output};

/// A forward call with corrupted arguments.
struct BadForward {
    what: String,
    params: Vec<QParam>,
    input: Vec<i8>,
    n: usize,
}

/// An invalid model.
struct BadModel {
    what: String,
    model: QuantModel,
}

fn resized(data: &QData, len: usize) -> QData {
    match data {
        QData::I8(v) => QData::I8((0..len).map(|i| v.get(i).copied().unwrap_or(1)).collect()),
        QData::I16(v) => QData::I16((0..len).map(|i| v.get(i).copied().unwrap_or(1)).collect()),
        QData::I32(v) => QData::I32((0..len).map(|i| v.get(i).copied().unwrap_or(1)).collect()),
    }
}

fn other_width(data: &QData) -> QData {
    match data {
        QData::I8(v) => QData::I16(v.iter().map(|&x| x as i16).collect()),
        QData::I16(v) => QData::I8(v.iter().map(|&x| x.clamp(-127, 127) as i8).collect()),
        QData::I32(v) => QData::I16(v.iter().map(|&x| x.clamp(-32767, 32767) as i16).collect()),
    }
}

/// `p` with its first dimension grown by one (data grown to match, so only the shape is wrong).
fn grown(p: &QParam) -> QParam {
    let mut q = p.clone();
    q.spec.shape[0] += 1;
    q.data = resized(&p.data, q.spec.numel());
    if !q.scales.is_empty() {
        q.scales.push(q.scales[0]);
    }
    q
}

fn bad_forwards(case: &Case) -> Vec<BadForward> {
    let params = &case.model.params;
    let (input, n) = (&case.input, case.n);
    let mut v = Vec::new();
    let mut push = |what: String, params: Vec<QParam>, input: Vec<i8>, n: usize| {
        v.push(BadForward {
            what,
            params,
            input,
            n,
        })
    };
    let mut longer = input.clone();
    longer.push(0);
    push(
        format!("input of {} codes for n = {n} (one too many)", longer.len()),
        params.clone(),
        longer,
        n,
    );
    push(
        format!(
            "input of {} codes for n = {n} (one too few)",
            input.len() - 1
        ),
        params.clone(),
        input[..input.len() - 1].to_vec(),
        n,
    );
    push(
        format!("n = {} with an input of {} samples", n + 1, n),
        params.clone(),
        input.clone(),
        n + 1,
    );
    push(
        format!("n = 0 with an input of {} codes", input.len()),
        params.clone(),
        input.clone(),
        0,
    );
    if let Some(last) = params.last() {
        push(
            format!(
                "{} parameter tensors instead of {} (last one missing)",
                params.len() - 1,
                params.len()
            ),
            params[..params.len() - 1].to_vec(),
            input.clone(),
            n,
        );
        let mut extra = params.clone();
        extra.push(last.clone());
        push(
            format!(
                "{} parameter tensors instead of {} (one extra)",
                extra.len(),
                params.len()
            ),
            extra,
            input.clone(),
            n,
        );
    } else {
        let dummy = QParam {
            spec: ParamSpec {
                name: "extra.bias".into(),
                shape: vec![1],
                role: ParamRole::Bias,
                trainable: false,
            },
            data: QData::I32(vec![0]),
            scales: Vec::new(),
        };
        push(
            "1 parameter tensor for a model with none".into(),
            vec![dummy],
            input.clone(),
            n,
        );
    }
    let trainable = params.iter().position(|p| p.spec.trainable);
    let frozen = params.iter().position(|p| !p.spec.trainable);
    for (i, kind) in [(trainable, "trainable"), (frozen, "frozen")] {
        let Some(i) = i else { continue };
        let mut ps = params.clone();
        ps[i] = grown(&params[i]);
        push(
            format!(
                "{kind} parameter '{}' with shape {:?} instead of {:?}",
                params[i].spec.name, ps[i].spec.shape, params[i].spec.shape
            ),
            ps,
            input.clone(),
            n,
        );
    }
    if let Some(i) = trainable {
        let p = &params[i];
        let mut ps = params.clone();
        ps[i].data = resized(&p.data, p.data.len() - 1);
        push(
            format!(
                "trainable parameter '{}' with {} codes for shape {:?}",
                p.spec.name,
                p.data.len() - 1,
                p.spec.shape
            ),
            ps,
            input.clone(),
            n,
        );
        let mut ps = params.clone();
        ps[i].data = other_width(&p.data);
        push(
            format!(
                "trainable parameter '{}' holding {} codes instead of {}",
                p.spec.name,
                ps[i].data.dtype(),
                p.data.dtype()
            ),
            ps,
            input.clone(),
            n,
        );
    }
    v
}

fn first_weight(m: &QuantModel) -> Option<usize> {
    m.params
        .iter()
        .position(|p| p.spec.role == ParamRole::Weight)
}

fn bad_models(case: &Case) -> Vec<BadModel> {
    let m = &case.model;
    let bits = m.weight_bits;
    let mut v = Vec::new();
    let mut push = |what: &str, model: QuantModel| {
        v.push(BadModel {
            what: what.into(),
            model,
        })
    };
    if let Some(w) = first_weight(m) {
        let mut bad = m.clone();
        let p = &mut bad.params[w];
        let last = p.spec.shape.len() - 1;
        p.spec.shape[last] += 1;
        p.data = resized(&p.data, p.spec.numel());
        push(
            "weight shape does not match the input channels / features",
            bad,
        );

        let mut bad = m.clone();
        bad.params[w].data = match &bad.params[w].data {
            QData::I8(d) => {
                let mut d = d.clone();
                d[0] = i8::MIN;
                QData::I8(d)
            }
            QData::I16(d) => {
                let mut d = d.clone();
                d[0] = i16::MIN;
                QData::I16(d)
            }
            other => other.clone(),
        };
        push("weight code −qmax − 1 (outside the symmetric range)", bad);

        let mut bad = m.clone();
        bad.params[w].data = other_width(&bad.params[w].data);
        push("weights stored at the other width", bad);

        let mut bad = m.clone();
        bad.params[w].scales[0] = 0.0;
        push("weight scale 0", bad);

        let mut bad = m.clone();
        bad.params[w].scales.pop();
        push("one weight scale missing", bad);
    }
    if let Some(b) = m.params.iter().position(|p| p.spec.role == ParamRole::Bias) {
        let mut bad = m.clone();
        if let QData::I32(d) = &mut bad.params[b].data {
            d[0] = match bits {
                WeightBits::W8 => (lastmile_core::quant::MAX_ABS_BIAS_8W + 1) as i32,
                WeightBits::W16 => i32::MIN,
            };
        }
        push("bias beyond the width's bound", bad);
    }
    let mut bad = m.clone();
    bad.act.pop();
    push("one activation quantization entry missing", bad);

    let mut bad = m.clone();
    bad.act[0].scale = 0.0;
    push("input scale 0", bad);

    let mut bad = m.clone();
    let last = bad.act.len() - 1;
    bad.act[last].scale = f32::NAN;
    bad.act[last].zero_point = 128;
    push("output scale NaN and zero point 128", bad);

    if let Some(i) = m.topology.nodes.iter().position(|n| !n.op.requantizes()) {
        let mut bad = m.clone();
        bad.act[i + 1].scale *= 2.0;
        // A later consumer may have derived constants from it; only the mismatch matters.
        push(
            "a pass-through op whose output quantization differs from its input's",
            bad,
        );
    }
    if let Some(i) = m.topology.nodes.iter().position(|n| n.op.requantizes()) {
        let mut bad = m.clone();
        bad.act[i + 1].scale = 1e-30;
        push(
            "output scale so small that the requantization multiplier is ≥ 2^30",
            bad,
        );
    }
    let mut bad = m.clone();
    bad.params.push(QParam {
        spec: ParamSpec {
            name: "unused.bias".into(),
            shape: vec![1],
            role: ParamRole::Bias,
            trainable: false,
        },
        data: QData::I32(vec![0]),
        scales: Vec::new(),
    });
    push("a parameter no node uses", bad);

    let mut bad = m.clone();
    bad.topology.nodes[0].inputs =
        vec![lastmile_core::ValueId(1); bad.topology.nodes[0].op.arity()];
    push("node 0 reads its own output", bad);

    // A linear layer one term past the accumulation bound.
    let k = MAX_K + 1;
    let data = match bits {
        WeightBits::W8 => QData::I8(vec![1; k]),
        WeightBits::W16 => QData::I16(vec![1; k]),
    };
    let model = QuantModel {
        topology: Topology {
            input_shape: vec![k],
            nodes: vec![Node {
                name: "fc".into(),
                op: Op::Linear(Linear {
                    weight: ParamId(0),
                    bias: None,
                    activation: Default::default(),
                }),
                inputs: vec![lastmile_core::ValueId::INPUT],
            }],
        },
        weight_bits: bits,
        params: vec![QParam {
            spec: ParamSpec {
                name: "fc.weight".into(),
                shape: vec![1, k],
                role: ParamRole::Weight,
                trainable: false,
            },
            data,
            scales: vec![1e-3],
        }],
        act: vec![m.act[0], m.act[0]],
        metadata: Default::default(),
    };
    push("a linear layer with K = MAX_K + 1", model);
    v
}

fn describe(r: &Result<(), BackendError>) -> String {
    match r {
        Ok(()) => "Ok(())".into(),
        Err(e) => format!("Err({e:?})"),
    }
}

/// Runs every bad-input check on `case`:
///
/// * forward with an input one code too long / too short, `n` off by one, `n = 0`,
///   a parameter tensor missing / extra, a trainable and a frozen tensor with the
///   wrong shape, a trainable tensor with too few codes or the other integer width —
///   each must return `Err(BackendError::InvalidInput(..))`;
/// * after all of them, a valid forward must still match the reference;
/// * `prepare` of invalid models (weight shape mismatch, weight code −128/−32768,
///   weights at the other width, zero or missing scales, bias beyond the bound,
///   missing activation entry, zero/NaN scales, zero point 128, pass-through op
///   with its own quantization, a multiplier ≥ 2^30, an unused parameter, a cycle,
///   K = MAX_K + 1) must return `Err`.
///
/// Panics are caught and reported.
pub fn check_bad_input(backend: &dyn Backend, case: &Case) -> Result<Outcome, Mismatch> {
    let fail = |stage: &str, p: Problem| Mismatch::new(backend, case, stage, p);
    let caps = guarded(|| backend.capabilities()).map_err(|p| fail("capabilities", p))?;
    let declared = caps.check_model(&case.model);
    let max_lsb = match caps.exactness {
        lastmile_core::Exactness::BitExact => 0,
        lastmile_core::Exactness::WithinLsb { max_lsb, .. } => max_lsb,
    };

    let mut prepared: Box<dyn PreparedModel> = match guarded(|| backend.prepare(&case.model)) {
        Err(p) => return Err(fail("prepare (valid model)", p)),
        Ok(Ok(p)) => p,
        Ok(Err(BackendError::Unsupported(why))) => {
            return match declared {
                Err(e) => Ok(Outcome::Skipped(e.to_string())),
                Ok(()) => Err(fail(
                    "prepare (valid model)",
                    Problem::UnsupportedButDeclared(why),
                )),
            };
        }
        Ok(Err(e)) => return Err(fail("prepare (valid model)", Problem::Error(e))),
    };

    for bad in bad_forwards(case) {
        let stage = format!("forward with bad arguments: {}", bad.what);
        let mut out = Vec::new();
        let r = guarded(|| prepared.forward(&bad.params, &bad.input, bad.n, &mut out))
            .map_err(|p| fail(&stage, p))?;
        if !matches!(r, Err(BackendError::InvalidInput(_))) {
            return Err(fail(
                &stage,
                Problem::NotRejected {
                    what: bad.what,
                    got: describe(&r),
                },
            ));
        }
    }

    let stage = "valid forward after the rejected calls";
    let expected =
        reference_output(&case.model, &case.input, case.n).map_err(|p| fail(stage, p))?;
    let mut out = Vec::new();
    match guarded(|| prepared.forward(&case.model.params, &case.input, case.n, &mut out)) {
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
    let within = out
        .iter()
        .zip(&expected)
        .all(|(&f, &e)| (f as i32 - e as i32).unsigned_abs() <= max_lsb as u32);
    if !within {
        let shape = prepared.output_shape().to_vec();
        return Err(fail(
            stage,
            Problem::Outputs {
                shape,
                n: case.n,
                expected,
                found: out,
                max_lsb,
            },
        ));
    }

    for bad in bad_models(case) {
        let stage = format!("prepare of an invalid model: {}", bad.what);
        let r = guarded(|| backend.prepare(&bad.model).map(|_| ())).map_err(|p| fail(&stage, p))?;
        if r.is_ok() {
            return Err(fail(
                &stage,
                Problem::InvalidModelAccepted { what: bad.what },
            ));
        }
    }
    Ok(Outcome::Passed)
}
