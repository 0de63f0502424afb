//! Post-training quantization: float model + calibration data → 8w8a or 16w8a.
//!
//! * Weights: symmetric per output channel, `s_c = max|w_c| / qmax`, codes by
//!   round-half-even with saturation (an all-zero channel borrows the tensor's scale).
//! * Activations: static per-tensor asymmetric ranges, the min/max seen over the
//!   calibration inputs (widened to include 0). Pools and flatten reuse their
//!   input's parameters (they do not requantize).
//! * Biases: `rint(b / (s_in · s_w[c]))`, clamped to the width's bias bound; the
//!   number of clamped values is reported.

use alloc::format;
use alloc::string::ToString;
use alloc::vec;
use alloc::vec::Vec;

use crate::float_exec;
use crate::graph::{GraphError, ParamRole, ValueId};
use crate::model::{FloatModel, FloatParam, QData, QParam, QuantModel};
use crate::quant::{ActQuant, WeightBits, quantize_weight};

/// What quantization did, for the user.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct PtqReport {
    /// Observed `[min, max]` per value.
    pub ranges: Vec<(f32, f32)>,
    /// Bias values that had to be clamped to the bias bound.
    pub clamped_biases: usize,
    /// Weight channels that were all zero.
    pub zero_channels: usize,
    /// Calibration samples used.
    pub calibration_samples: usize,
}

/// Quantizes `model` to `bits`, calibrating activation ranges on `n` samples in `inputs`.
pub fn quantize(
    model: &FloatModel,
    inputs: &[f32],
    n: usize,
    bits: WeightBits,
) -> Result<(QuantModel, PtqReport), GraphError> {
    let shapes = model.validate()?;
    if n == 0 {
        return Err(GraphError {
            location: "calibration data".into(),
            message: "is empty; at least one sample is needed".into(),
        });
    }
    let sample: usize = shapes[0].iter().product();
    if inputs.len() != n * sample {
        return Err(GraphError {
            location: "calibration data".into(),
            message: format!(
                "has {} values, expected {n} samples × {sample}",
                inputs.len()
            ),
        });
    }
    let mut ranges = vec![(f32::INFINITY, f32::NEG_INFINITY); shapes.len()];
    const CHUNK: usize = 64; // bounds calibration memory for large sets
    for start in (0..n).step_by(CHUNK) {
        let m = CHUNK.min(n - start);
        float_exec::forward_observed(
            model,
            &inputs[start * sample..(start + m) * sample],
            m,
            &mut |v: ValueId, d: &[f32]| {
                let r = &mut ranges[v.index()];
                for &x in d {
                    r.0 = r.0.min(x);
                    r.1 = r.1.max(x);
                }
            },
        )?;
    }

    let mut act: Vec<ActQuant> = Vec::with_capacity(shapes.len());
    act.push(ActQuant::from_range(ranges[0].0, ranges[0].1));
    for (i, node) in model.topology.nodes.iter().enumerate() {
        let q = if node.op.requantizes() {
            ActQuant::from_range(ranges[i + 1].0, ranges[i + 1].1)
        } else {
            act[node.inputs[0].index()]
        };
        act.push(q);
    }

    let mut report = PtqReport {
        ranges,
        calibration_samples: n,
        ..Default::default()
    };
    let mut params: Vec<Option<QParam>> = vec![None; model.params.len()];
    for node in &model.topology.nodes {
        let node_params = node.op.params();
        let Some(&(wid, _)) = node_params.first() else {
            continue;
        };
        let s_in = act[node.inputs[0].index()].scale;
        let w = &model.params[wid.index()];
        let (qw, scales) = quantize_weights(w, bits, &mut report);
        for &(pid, role) in &node_params {
            let p = &model.params[pid.index()];
            params[pid.index()] = Some(match role {
                ParamRole::Weight => QParam {
                    spec: p.spec.clone(),
                    data: qw.clone(),
                    scales: scales.clone(),
                },
                ParamRole::Bias => {
                    let bound = bits.max_abs_bias() as f64;
                    let data = p
                        .data
                        .iter()
                        .zip(&scales)
                        .map(|(&b, &s_w)| {
                            let q = libm::rint(b as f64 / (s_in as f64 * s_w as f64));
                            if q.abs() > bound {
                                report.clamped_biases += 1;
                            }
                            q.clamp(-bound, bound) as i32
                        })
                        .collect();
                    QParam {
                        spec: p.spec.clone(),
                        data: QData::I32(data),
                        scales: Vec::new(),
                    }
                }
            });
        }
    }
    let params = params
        .into_iter()
        .enumerate()
        .map(|(i, p)| {
            p.ok_or_else(|| GraphError {
                location: format!("parameter '{}'", model.params[i].spec.name),
                message: "is not used by any node".into(),
            })
        })
        .collect::<Result<Vec<_>, _>>()?;
    let mut metadata = model.metadata.clone();
    metadata.insert(
        "quantization".into(),
        format!("ptq {} on {n} calibration samples", bits.scheme()),
    );
    if report.clamped_biases > 0 {
        metadata.insert(
            "ptq.clamped_biases".into(),
            report.clamped_biases.to_string(),
        );
    }
    let q = QuantModel {
        topology: model.topology.clone(),
        weight_bits: bits,
        params,
        act,
        metadata,
    };
    q.validate()?;
    Ok((q, report))
}

fn quantize_weights(w: &FloatParam, bits: WeightBits, report: &mut PtqReport) -> (QData, Vec<f32>) {
    let c_out = w.spec.shape[0];
    let per = w.data.len() / c_out.max(1);
    let qmax = bits.qmax() as f32;
    let tensor_max = w.data.iter().fold(0f32, |m, v| m.max(v.abs()));
    let fallback = if tensor_max > 0.0 {
        tensor_max / qmax
    } else {
        1.0 / qmax
    };
    let mut scales = Vec::with_capacity(c_out);
    let mut codes = Vec::with_capacity(w.data.len());
    for c in 0..c_out {
        let row = &w.data[c * per..(c + 1) * per];
        let m = row.iter().fold(0f32, |m, v| m.max(v.abs()));
        let s = if m > 0.0 {
            m / qmax
        } else {
            report.zero_channels += 1;
            fallback
        };
        scales.push(s);
        codes.extend(row.iter().map(|&v| quantize_weight(v, s, bits)));
    }
    let data = match bits {
        WeightBits::W8 => QData::I8(codes.into_iter().map(|c| c as i8).collect()),
        WeightBits::W16 => QData::I16(codes.into_iter().map(|c| c as i16).collect()),
    };
    (data, scales)
}

/// The float model a quantized model represents: weights `q · s_c`, biases
/// `q · s_in · s_w[c]`. Activations are *not* fake-quantized.
pub fn dequantize(model: &QuantModel) -> FloatModel {
    let mut params: Vec<FloatParam> = model
        .params
        .iter()
        .map(|p| FloatParam {
            spec: p.spec.clone(),
            data: (0..p.data.len()).map(|i| p.data.get(i) as f32).collect(),
        })
        .collect();
    for node in &model.topology.nodes {
        let np = node.op.params();
        let Some(&(wid, _)) = np.first() else {
            continue;
        };
        let s_in = model.act[node.inputs[0].index()].scale;
        let scales = &model.params[wid.index()].scales;
        for &(pid, role) in &np {
            let p = &mut params[pid.index()];
            let per = p.data.len() / scales.len().max(1);
            for (i, v) in p.data.iter_mut().enumerate() {
                let s_w = scales[i / per.max(1)];
                *v *= match role {
                    ParamRole::Weight => s_w,
                    ParamRole::Bias => s_in * s_w,
                };
            }
        }
    }
    FloatModel {
        topology: model.topology.clone(),
        params,
        metadata: model.metadata.clone(),
    }
}
