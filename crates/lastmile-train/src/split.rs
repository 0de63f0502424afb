//! Splitting a model into a frozen prefix (run once per batch) and a trainable
//! suffix (run `2m` times per step).

use alloc::format;
use alloc::string::String;
use alloc::vec::Vec;

use lastmile_core::graph::{Node, Op, ParamId, Topology, ValueId};
use lastmile_core::model::{QParam, QuantModel};

/// A model cut in two at a single value.
#[derive(Clone, Debug)]
pub struct Split {
    /// Nodes before the cut (`None` when the first node is already trainable).
    pub prefix: Option<QuantModel>,
    /// Nodes from the cut on; its input is the prefix's output.
    pub suffix: QuantModel,
    /// For each suffix parameter, its index in the original model.
    pub suffix_param_origin: Vec<usize>,
}

/// The earliest node index at which the model can be cut so that every trainable
/// parameter is in the suffix and exactly one value crosses the cut.
pub fn frozen_prefix_len(model: &QuantModel) -> usize {
    let first = model
        .trainable_nodes()
        .first()
        .copied()
        .unwrap_or(model.topology.nodes.len());
    (0..=first)
        .rev()
        .find(|&c| crossing_ok(&model.topology, c))
        .unwrap_or(0)
}

/// Whether cutting before node `c` leaves only value `c` crossing.
fn crossing_ok(t: &Topology, c: usize) -> bool {
    t.nodes[c..]
        .iter()
        .all(|n| n.inputs.iter().all(|v| v.index() >= c))
}

/// Cuts before node `cut` (`0 < cut ≤ nodes`); `cut == 0` gives no prefix.
pub fn split_at(model: &QuantModel, cut: usize) -> Result<Split, String> {
    let t = &model.topology;
    if cut > t.nodes.len() || cut == t.nodes.len() {
        return Err(format!(
            "cannot cut a {}-node model before node {cut}: the suffix would be empty",
            t.nodes.len()
        ));
    }
    if !crossing_ok(t, cut) {
        return Err(format!(
            "node {cut} '{}' is crossed by more than one value (a residual connection)",
            t.nodes[cut].name
        ));
    }
    let shapes = model.validate().map_err(|e| format!("{e}"))?;
    let (prefix, _) = if cut == 0 {
        (None, Vec::new())
    } else {
        let (m, origin) = sub_model(model, 0, cut, t.input_shape.clone());
        (Some(m), origin)
    };
    let (suffix, suffix_param_origin) = sub_model(model, cut, t.nodes.len(), shapes[cut].clone());
    Ok(Split {
        prefix,
        suffix,
        suffix_param_origin,
    })
}

/// Nodes `lo..hi` as a model whose input is value `lo`; parameters renumbered.
fn sub_model(
    model: &QuantModel,
    lo: usize,
    hi: usize,
    input_shape: Vec<usize>,
) -> (QuantModel, Vec<usize>) {
    let mut origin: Vec<usize> = Vec::new();
    let mut params: Vec<QParam> = Vec::new();
    let mut remap = |p: ParamId| -> ParamId {
        let idx = origin
            .iter()
            .position(|&o| o == p.index())
            .unwrap_or_else(|| {
                origin.push(p.index());
                params.push(model.params[p.index()].clone());
                origin.len() - 1
            });
        ParamId(idx as u32)
    };
    let nodes: Vec<Node> = model.topology.nodes[lo..hi]
        .iter()
        .map(|n| {
            let mut op = n.op.clone();
            match &mut op {
                Op::Conv2d(c) => {
                    c.weight = remap(c.weight);
                    c.bias = c.bias.map(&mut remap);
                }
                Op::Linear(l) => {
                    l.weight = remap(l.weight);
                    l.bias = l.bias.map(&mut remap);
                }
                _ => {}
            }
            Node {
                name: n.name.clone(),
                op,
                inputs: n
                    .inputs
                    .iter()
                    .map(|v| ValueId((v.index() - lo) as u32))
                    .collect(),
            }
        })
        .collect();
    let sub = QuantModel {
        topology: Topology { input_shape, nodes },
        weight_bits: model.weight_bits,
        params,
        act: model.act[lo..=hi].to_vec(),
        metadata: model.metadata.clone(),
    };
    (sub, origin)
}
