//! One conformance problem: a quantized model, an input batch, and the weight
//! updates the training contract is checked with.

use core::fmt;

use lastmile_core::graph::{Op, OpKind, ParamId};
use lastmile_core::model::{QData, QParam, QuantModel};
use lastmile_core::plan::{NodePlan, Plan};

/// The op families of the suite; each is one `#[test]` of [`crate::conformance_suite!`].
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Family {
    /// Conv2d with `groups == 1`.
    Conv2d,
    /// Grouped conv (`1 < groups < C_in`).
    ConvGrouped,
    /// Depthwise conv (`groups == C_in`, channel multiplier 1–2).
    Depthwise,
    /// Fully connected.
    Linear,
    /// Elementwise add with rescaling.
    Add,
    /// Max pooling.
    MaxPool,
    /// Average pooling.
    AvgPool,
    /// Global average pooling.
    GlobalAvgPool,
    /// Flatten.
    Flatten,
    /// Small multi-node graphs (conv→pool→flatten→linear, residual blocks, ...).
    SmallGraphs,
    /// Several trainable tensors changed between forwards, weights and biases.
    WeightUpdates,
    /// Malformed forward arguments and invalid models must be rejected, never panic.
    BadInput,
}

impl Family {
    /// Every family, in report order.
    pub const ALL: [Family; 12] = [
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
        Family::WeightUpdates,
        Family::BadInput,
    ];

    /// Stable snake_case name (the name of the generated `#[test]`).
    pub const fn name(self) -> &'static str {
        match self {
            Family::Conv2d => "conv2d",
            Family::ConvGrouped => "conv_grouped",
            Family::Depthwise => "depthwise",
            Family::Linear => "linear",
            Family::Add => "add",
            Family::MaxPool => "maxpool",
            Family::AvgPool => "avgpool",
            Family::GlobalAvgPool => "global_avgpool",
            Family::Flatten => "flatten",
            Family::SmallGraphs => "small_graphs",
            Family::WeightUpdates => "weight_updates",
            Family::BadInput => "bad_input",
        }
    }

    /// Ops a backend must declare for the family to run at all. Cases that use
    /// further ops the backend does not declare are skipped one by one.
    pub const fn primary_ops(self) -> &'static [OpKind] {
        match self {
            Family::Conv2d => &[OpKind::Conv2d],
            Family::ConvGrouped | Family::Depthwise => &[OpKind::Conv2dGrouped],
            Family::Linear => &[OpKind::Linear],
            Family::Add => &[OpKind::Add],
            Family::MaxPool => &[OpKind::MaxPool],
            Family::AvgPool => &[OpKind::AvgPool],
            Family::GlobalAvgPool => &[OpKind::GlobalAvgPool],
            Family::Flatten => &[OpKind::Flatten],
            Family::SmallGraphs => &[OpKind::Conv2d, OpKind::Linear],
            Family::WeightUpdates | Family::BadInput => &[],
        }
    }
}

impl fmt::Display for Family {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// New contents of some trainable tensors (codes only: scales are fixed at `prepare`).
#[derive(Clone, PartialEq)]
pub struct Update {
    /// `(parameter, new codes)`; every parameter listed is marked trainable in the case's model.
    pub tensors: Vec<(ParamId, QData)>,
}

impl fmt::Debug for Update {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut l = f.debug_list();
        for (p, d) in &self.tensors {
            l.entry(&format_args!("#{} ({} {} codes)", p.0, d.len(), d.dtype()));
        }
        l.finish()
    }
}

/// A conformance problem.
#[derive(Clone)]
pub struct Case {
    /// The family that generated it.
    pub family: Family,
    /// The model, built directly with explicit codes, scales and zero points.
    pub model: QuantModel,
    /// `n · Π input_shape` input codes.
    pub input: Vec<i8>,
    /// Batch size.
    pub n: usize,
    /// Trainable-tensor changes applied between forwards, each relative to the
    /// original parameters (the suite restores the originals at the end).
    pub updates: Vec<Update>,
}

impl Case {
    /// The parameter list with `update` applied (the trainer's in-place change).
    pub fn params_after(&self, update: &Update) -> Vec<QParam> {
        let mut params = self.model.params.clone();
        for (pid, data) in &update.tensors {
            params[pid.index()].data = data.clone();
        }
        params
    }

    /// The model with `update` applied (what a fresh reference run uses).
    pub fn model_after(&self, update: &Update) -> QuantModel {
        let mut m = self.model.clone();
        m.params = self.params_after(update);
        m
    }

    /// Names of the nodes' ops, e.g. `"conv2d→maxpool→flatten→linear"`.
    pub fn ops_summary(&self) -> String {
        self.model
            .topology
            .nodes
            .iter()
            .map(|n| op_name(&n.op))
            .collect::<Vec<_>>()
            .join("→")
    }
}

/// Short name of an op for reports.
pub fn op_name(op: &Op) -> &'static str {
    match op {
        Op::Conv2d(c) if c.groups > 1 => "conv2d(grouped)",
        Op::Conv2d(_) => "conv2d",
        Op::Linear(_) => "linear",
        Op::Add { .. } => "add",
        Op::MaxPool(_) => "maxpool",
        Op::AvgPool(_) => "avgpool",
        Op::GlobalAvgPool => "global_avgpool",
        Op::Flatten => "flatten",
        _ => "op",
    }
}

impl fmt::Debug for Case {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // proptest prints failing values with `{:?}`: print the readable summary,
        // not thousands of codes.
        fmt::Display::fmt(self, f)
    }
}

fn code_range(d: &QData) -> (i32, i32) {
    (0..d.len()).fold((i32::MAX, i32::MIN), |(lo, hi), i| {
        let v = d.get(i);
        (lo.min(v), hi.max(v))
    })
}

fn short_list<T: fmt::Display>(v: &[T], max: usize) -> String {
    let mut s: Vec<String> = v.iter().take(max).map(|x| x.to_string()).collect();
    if v.len() > max {
        s.push(format!("… ({} total)", v.len()));
    }
    format!("[{}]", s.join(", "))
}

impl fmt::Display for Case {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let m = &self.model;
        writeln!(
            f,
            "{} case: {} ({}), batch n = {}",
            self.family,
            self.ops_summary(),
            m.weight_bits.scheme(),
            self.n
        )?;
        let plan = Plan::derive(m);
        let shapes = m.topology.infer_shapes(&m.specs()).ok();
        let shape_of = |v: usize| -> String {
            shapes
                .as_ref()
                .and_then(|s| s.get(v))
                .map_or_else(|| "?".into(), |s| format!("{s:?}"))
        };
        let act_of = |v: usize| -> String {
            m.act.get(v).map_or_else(
                || "?".into(),
                |q| format!("s = {:e}, zp = {}", q.scale, q.zero_point),
            )
        };
        let (xlo, xhi) = self
            .input
            .iter()
            .fold((i8::MAX, i8::MIN), |(l, h), &v| (l.min(v), h.max(v)));
        writeln!(
            f,
            "  input: shape {} ({}), codes in [{xlo}, {xhi}]",
            shape_of(0),
            act_of(0)
        )?;
        for (i, node) in m.topology.nodes.iter().enumerate() {
            let inputs: Vec<String> = node.inputs.iter().map(|v| format!("v{}", v.0)).collect();
            write!(
                f,
                "  node {i} '{}': {} ({}) → v{}",
                node.name,
                op_name(&node.op),
                inputs.join(", "),
                i + 1
            )?;
            match &node.op {
                Op::Conv2d(c) => write!(
                    f,
                    ", stride {:?}, dilation {:?}, padding [t, l, b, r] = {:?}, groups {}, {:?}",
                    c.stride, c.dilation, c.padding, c.groups, c.activation
                )?,
                Op::Linear(l) => write!(f, ", {:?}", l.activation)?,
                Op::Add { activation } => write!(f, ", {activation:?}")?,
                Op::MaxPool(p) | Op::AvgPool(p) => write!(
                    f,
                    ", kernel {:?}, stride {:?}, padding [t, l, b, r] = {:?}",
                    p.kernel, p.stride, p.padding
                )?,
                _ => {}
            }
            writeln!(f)?;
            writeln!(
                f,
                "      output shape {} ({})",
                shape_of(i + 1),
                act_of(i + 1)
            )?;
            for (pid, _) in node.op.params() {
                let Some(p) = m.params.get(pid.index()) else {
                    continue;
                };
                let (lo, hi) = code_range(&p.data);
                write!(
                    f,
                    "      '{}' {:?} {}{}: codes in [{lo}, {hi}]",
                    p.spec.name,
                    p.spec.shape,
                    p.data.dtype(),
                    if p.spec.trainable { " (trainable)" } else { "" },
                )?;
                if !p.scales.is_empty() {
                    write!(f, ", scales {}", short_list(&p.scales, 4))?;
                }
                writeln!(f)?;
            }
            if let Ok(plan) = &plan {
                match &plan.nodes[i] {
                    NodePlan::Dot {
                        multipliers,
                        lo,
                        hi,
                        k,
                        ..
                    } => {
                        let ms: Vec<String> = multipliers
                            .iter()
                            .map(|q| format!("{}·2^-{}", q.multiplier, q.shift))
                            .collect();
                        writeln!(
                            f,
                            "      K = {k}, clamp [{lo}, {hi}], multipliers {}",
                            short_list(&ms, 3)
                        )?;
                    }
                    NodePlan::Add {
                        mult_a,
                        mult_b,
                        mult_out,
                        lo,
                        hi,
                        ..
                    } => writeln!(
                        f,
                        "      clamp [{lo}, {hi}], M_a {}·2^-{}, M_b {}·2^-{}, M_o {}·2^-{}",
                        mult_a.multiplier,
                        mult_a.shift,
                        mult_b.multiplier,
                        mult_b.shift,
                        mult_out.multiplier,
                        mult_out.shift
                    )?,
                    NodePlan::PassThrough => {}
                }
            }
        }
        if let Err(e) = &plan {
            writeln!(f, "  (no plan: {e})")?;
        }
        for (u, up) in self.updates.iter().enumerate() {
            let names: Vec<String> = up
                .tensors
                .iter()
                .map(|(pid, d)| {
                    let name = m
                        .params
                        .get(pid.index())
                        .map_or("?", |p| p.spec.name.as_str());
                    let changed = m.params.get(pid.index()).map_or(0, |p| {
                        (0..p.data.len().min(d.len()))
                            .filter(|&i| p.data.get(i) != d.get(i))
                            .count()
                    });
                    format!("'{name}' ({changed} codes changed)")
                })
                .collect();
            writeln!(f, "  update {}: {}", u + 1, names.join(", "))?;
        }
        Ok(())
    }
}
