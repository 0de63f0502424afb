//! The float oracle: the integer reference checked against real arithmetic.
//!
//! Bit-exactness against `cpu-ref` says nothing if `cpu-ref` itself is wrong. This
//! module checks every node of a model **independently**: it takes the node's
//! integer inputs as the reference computed them, dequantizes them and the node's
//! parameters ([`ptq::dequantize`]), runs the node in f32 with
//! [`float_exec::forward`] (activation removed), applies the output clamp in real
//! space — the integer clamp range of
//! [`Activation::clamp_range`](lastmile_core::Activation::clamp_range) mapped to
//! reals, `[s·(lo − zp), s·(hi − zp)]` — and asserts
//! `|s_out·(y_int − zp) − y_float| ≤ bound`. The bounds are derived in
//! `docs/conformance.md`; per output element:
//!
//! | op | bound |
//! |---|---|
//! | conv2d, linear | `s_out/2 + (2^−30 + 2^−52)·A + (K+4)·2^−23·A` |
//! | add | `s_out/2 + 2^−19·max(s_a, s_b) + (2^−29 + 2^−22)·(|a| + |b|)` |
//! | avg pool, global avg pool | `s/2 + (count+4)·2^−23·A` |
//! | max pool, flatten | `0` (identical to the dequantized input) |
//!
//! where `A = Σ|x_k·w_k| + |b|` (or the mean of `|x|` for pools) is computed by
//! running the same float node on absolute values, `K` is the reduction length,
//! and `|a|, |b|` are the add's real inputs. The first term is the one rounding of
//! the spec, the second the multiplier's relative error, the last the f32
//! reference's own accumulation error (which the integer side does not have).

use core::fmt;

use lastmile_core::ValueId;
use lastmile_core::float_exec;
use lastmile_core::graph::{Node, Op, ParamId, Topology};
use lastmile_core::model::{FloatModel, QuantModel};
use lastmile_core::plan::{NodePlan, Plan};
use lastmile_core::ptq;
use lastmile_core::quant::Activation;

use crate::case::{Case, op_name};

/// `2^e` as f64.
fn p2(e: i32) -> f64 {
    (e as f64).exp2()
}

/// The terms of one element's bound, in real units.
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct Bound {
    /// The spec's single rounding: half an output step (0 for max pool / flatten).
    pub rounding: f64,
    /// Error of the fixed-point multiplier(s) and, for add, the input rescale roundings.
    pub fixed_point: f64,
    /// Error of the f32 reference computation itself.
    pub float: f64,
}

impl Bound {
    /// The total.
    pub fn total(&self) -> f64 {
        self.rounding + self.fixed_point + self.float
    }
}

/// How much the oracle checked and how sharp it was.
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct OracleStats {
    /// Output elements checked (all nodes).
    pub elements: usize,
    /// Elements whose bound is below ¾ of an output step: there a code off by one
    /// in the direction away from the float value is always detected.
    pub tight: usize,
    /// Largest `|error| / bound` seen (≤ 1 when the check passes).
    pub worst_ratio: f64,
}

impl OracleStats {
    /// Adds another run's counts.
    pub fn merge(&mut self, o: OracleStats) {
        self.elements += o.elements;
        self.tight += o.tight;
        self.worst_ratio = self.worst_ratio.max(o.worst_ratio);
    }
}

/// An output element farther from the float value than the bound allows.
#[derive(Clone, Debug, PartialEq)]
pub struct OracleViolation {
    /// Node index.
    pub node: usize,
    /// Node name.
    pub name: String,
    /// Op name.
    pub op: &'static str,
    /// Flat index into the node's output (`[n, ...shape]`).
    pub index: usize,
    /// The integer output code.
    pub code: i8,
    /// Its real value `s·(code − zp)`.
    pub int_real: f64,
    /// The float reference after the real-space clamp.
    pub float_real: f64,
    /// The bound that was exceeded.
    pub bound: Bound,
    /// The output step `s_out`.
    pub lsb: f64,
}

impl fmt::Display for OracleViolation {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let err = (self.int_real - self.float_real).abs();
        write!(
            f,
            "node {} '{}' ({}), output element {}: integer code {} = {:e}, float reference {:e}; \
             |error| = {:e} = {:.3} LSB exceeds the bound {:e} = {:.3} LSB \
             (rounding {:e} + fixed point {:e} + float {:e})",
            self.node,
            self.name,
            self.op,
            self.index,
            self.code,
            self.int_real,
            self.float_real,
            err,
            err / self.lsb,
            self.bound.total(),
            self.bound.total() / self.lsb,
            self.bound.rounding,
            self.bound.fixed_point,
            self.bound.float
        )
    }
}

impl std::error::Error for OracleViolation {}

/// Every value of the model on the case's input, computed by the reference
/// (index 0 = input).
pub fn reference_values(case: &Case) -> Vec<Vec<i8>> {
    let mut p = lastmile_backend_cpu_ref::Prepared::new(&case.model)
        .unwrap_or_else(|e| panic!("cpu-ref rejected a generated case: {e}\n{case}"));
    p.forward_values(&case.model.params, &case.input, case.n)
        .unwrap_or_else(|e| panic!("cpu-ref failed on a generated case: {e}\n{case}"))
        .to_vec()
}

/// Checks the reference's values of `case` against the float oracle.
pub fn check_case(case: &Case) -> Result<OracleStats, OracleViolation> {
    check_values(&case.model, case.n, &reference_values(case))
}

/// The one-node model of node `i` reading graph input 0, its parameters renumbered.
fn single_node(model: &QuantModel, i: usize, in_shape: &[usize]) -> QuantModel {
    let node = &model.topology.nodes[i];
    let mut params = Vec::new();
    let mut op = node.op.clone();
    let mut take = |pid: ParamId| -> ParamId {
        params.push(model.params[pid.index()].clone());
        ParamId(params.len() as u32 - 1)
    };
    match &mut op {
        Op::Conv2d(c) => {
            c.weight = take(c.weight);
            c.bias = c.bias.map(&mut take);
            c.activation = Activation::None;
        }
        Op::Linear(l) => {
            l.weight = take(l.weight);
            l.bias = l.bias.map(&mut take);
            l.activation = Activation::None;
        }
        _ => {}
    }
    QuantModel {
        topology: Topology {
            input_shape: in_shape.to_vec(),
            nodes: vec![Node {
                name: node.name.clone(),
                op,
                inputs: vec![ValueId::INPUT],
            }],
        },
        weight_bits: model.weight_bits,
        params,
        act: vec![model.act[node.inputs[0].index()], model.act[i + 1]],
        metadata: Default::default(),
    }
}

fn abs_model(m: &FloatModel) -> FloatModel {
    let mut m = m.clone();
    for p in &mut m.params {
        for v in &mut p.data {
            *v = v.abs();
        }
    }
    m
}

fn float_run(m: &FloatModel, x: &[f32], n: usize) -> Vec<f32> {
    float_exec::forward(m, x, n)
        .unwrap_or_else(|e| panic!("float executor rejected a single-node model: {e}"))
}

/// The float reference of one node: per output element, the float value after the
/// real-space clamp and its error bound.
#[derive(Clone, Debug, PartialEq)]
pub struct NodeReference {
    /// Float values (clamped to the activation range in real space).
    pub float: Vec<f64>,
    /// Bound per element.
    pub bounds: Vec<Bound>,
    /// Max pool / flatten: the integer value must equal the f32 dequantization
    /// of the code exactly (compare [`ActQuant::dequantize`](lastmile_core::ActQuant::dequantize)).
    pub exact: bool,
    /// The output step `s_out`.
    pub lsb: f64,
}

impl NodeReference {
    /// The real value the oracle compares for output code `code` of this node.
    pub fn int_real(&self, model: &QuantModel, node: usize, code: i8) -> f64 {
        let q = model.act[node + 1];
        if self.exact {
            q.dequantize(code) as f64
        } else {
            q.scale as f64 * (code as i32 - q.zero_point) as f64
        }
    }
}

/// Per element `(float value before the clamp, bound)`, and the integer clamp range.
type Unclamped = (Vec<(f64, Bound)>, Option<(i32, i32)>);

/// The float reference of node `i` given all integer values of the model
/// (`values[0]` = input, `values[j + 1]` = output of node `j`, `n` samples each).
pub fn node_reference(
    model: &QuantModel,
    plan: &Plan,
    n: usize,
    values: &[Vec<i8>],
    i: usize,
) -> NodeReference {
    let node = &model.topology.nodes[i];
    let xi = node.inputs[0].index();
    let in_q = model.act[xi];
    let out_q = model.act[i + 1];
    let s_out = out_q.scale as f64;
    let x_real: Vec<f32> = values[xi].iter().map(|&q| in_q.dequantize(q)).collect();
    let x_abs: Vec<f32> = x_real.iter().map(|v| v.abs()).collect();

    // (float value before the clamp, bound) per element, and the clamp range.
    let (reference, clamp): Unclamped = match (&node.op, &plan.nodes[i]) {
        (Op::Conv2d(_) | Op::Linear(_), NodePlan::Dot { lo, hi, k, .. }) => {
            let fm = ptq::dequantize(&single_node(model, i, &plan.shapes[xi]));
            let yf = float_run(&fm, &x_real, n);
            let a = float_run(&abs_model(&fm), &x_abs, n);
            let k = *k as f64;
            let r = yf
                .iter()
                .zip(&a)
                .map(|(&v, &a)| {
                    // `a` is itself an f32 sum; 1% covers its own rounding (K·2^−24 ≤ 0.4%).
                    let a = a as f64 * 1.01;
                    (
                        v as f64,
                        Bound {
                            rounding: 0.5 * s_out,
                            fixed_point: (p2(-30) + p2(-52)) * a,
                            float: (k + 4.0) * p2(-23) * a,
                        },
                    )
                })
                .collect();
            (r, Some((*lo, *hi)))
        }
        (Op::Add { .. }, NodePlan::Add { lo, hi, .. }) => {
            let bq = model.act[node.inputs[1].index()];
            let b = &values[node.inputs[1].index()];
            let s_max = (in_q.scale as f64).max(bq.scale as f64);
            let r = values[xi]
                .iter()
                .zip(b)
                .map(|(&qa, &qb)| {
                    let (ra, rb) = (in_q.dequantize(qa), bq.dequantize(qb));
                    let sum = (ra.abs() + rb.abs()) as f64;
                    (
                        (ra + rb) as f64,
                        Bound {
                            rounding: 0.5 * s_out,
                            fixed_point: p2(-19) * s_max + p2(-29) * sum,
                            float: p2(-22) * sum,
                        },
                    )
                })
                .collect();
            (r, Some((*lo, *hi)))
        }
        (Op::AvgPool(_) | Op::GlobalAvgPool, _) => {
            let count = match &node.op {
                Op::AvgPool(p) => (p.kernel[0] * p.kernel[1]) as f64,
                _ => (plan.shapes[xi][0] * plan.shapes[xi][1]) as f64,
            };
            let fm = ptq::dequantize(&single_node(model, i, &plan.shapes[xi]));
            let yf = float_run(&fm, &x_real, n);
            let a = float_run(&fm, &x_abs, n);
            let r = yf
                .iter()
                .zip(&a)
                .map(|(&v, &a)| {
                    (
                        v as f64,
                        Bound {
                            rounding: 0.5 * s_out,
                            fixed_point: 0.0,
                            float: (count + 4.0) * p2(-23) * a as f64 * 1.01,
                        },
                    )
                })
                .collect();
            (r, None)
        }
        (Op::MaxPool(_) | Op::Flatten, _) => {
            let fm = ptq::dequantize(&single_node(model, i, &plan.shapes[xi]));
            let yf = float_run(&fm, &x_real, n);
            (
                yf.iter().map(|&v| (v as f64, Bound::default())).collect(),
                None,
            )
        }
        (op, p) => panic!("oracle: node {i} has op {op:?} with plan {p:?}"),
    };
    let (float, bounds) = reference
        .into_iter()
        .map(|(v, b)| {
            let v = match clamp {
                Some((lo, hi)) => v.clamp(
                    s_out * (lo - out_q.zero_point) as f64,
                    s_out * (hi - out_q.zero_point) as f64,
                ),
                None => v,
            };
            (v, b)
        })
        .unzip();
    NodeReference {
        float,
        bounds,
        exact: matches!(node.op, Op::MaxPool(_) | Op::Flatten),
        lsb: s_out,
    }
}

/// Checks every node of `model` given all its integer values (`values[0]` = input,
/// `values[i + 1]` = output of node `i`, each `n` samples), e.g. from
/// `cpu_ref::Prepared::forward_values`.
pub fn check_values(
    model: &QuantModel,
    n: usize,
    values: &[Vec<i8>],
) -> Result<OracleStats, OracleViolation> {
    let plan = Plan::derive(model).unwrap_or_else(|e| panic!("invalid model: {e}"));
    let mut stats = OracleStats::default();
    for (i, node) in model.topology.nodes.iter().enumerate() {
        let r = node_reference(model, &plan, n, values, i);
        let y = &values[i + 1];
        assert_eq!(r.float.len(), y.len(), "node {i}: value length");
        for (j, &code) in y.iter().enumerate() {
            let int_real = r.int_real(model, i, code);
            let float_real = r.float[j];
            let bound = r.bounds[j];
            let err = (int_real - float_real).abs();
            let total = bound.total();
            stats.elements += 1;
            if total < 0.75 * r.lsb {
                stats.tight += 1;
            }
            let ratio = if total > 0.0 {
                err / total
            } else if err > 0.0 {
                f64::INFINITY
            } else {
                0.0
            };
            stats.worst_ratio = stats.worst_ratio.max(ratio);
            if err > total || err.is_nan() {
                return Err(OracleViolation {
                    node: i,
                    name: node.name.clone(),
                    op: op_name(&node.op),
                    index: j,
                    code,
                    int_real,
                    float_real,
                    bound,
                    lsb: r.lsb,
                });
            }
        }
    }
    Ok(stats)
}
