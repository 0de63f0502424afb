//! `lastmile info`: what is in a model file.

use std::collections::BTreeMap;
use std::path::PathBuf;

use anyhow::{Result, anyhow};
use clap::Args;
use lastmile_core::format::AnyModel;
use lastmile_core::graph::Op;
use lastmile_core::{ActQuant, Activation, ParamRole, ParamSpec, Topology, WeightBits};
use serde::Serialize;

use crate::util::{self, shape_str, table};
use crate::{JsonFlag, Ui};

/// Arguments of `lastmile info`.
#[derive(Debug, Args)]
pub struct InfoArgs {
    /// Model file (.lmm), float or quantized.
    #[arg(value_name = "MODEL")]
    pub model: PathBuf,
    #[command(flatten)]
    pub json: JsonFlag,
}

#[derive(Debug, Serialize)]
struct QuantJson {
    scale: f32,
    zero_point: i32,
}

impl From<ActQuant> for QuantJson {
    fn from(q: ActQuant) -> Self {
        QuantJson {
            scale: q.scale,
            zero_point: q.zero_point,
        }
    }
}

#[derive(Debug, Serialize)]
struct NodeJson {
    index: usize,
    name: String,
    op: &'static str,
    attrs: String,
    inputs: Vec<u32>,
    output_shape: Vec<usize>,
    output_quant: Option<QuantJson>,
    params: usize,
    param_names: Vec<String>,
    /// "yes", "no", "partial" or "-" (no parameters).
    trainable: &'static str,
}

#[derive(Debug, Serialize)]
struct ActivationJson {
    value: usize,
    node: String,
    shape: Vec<usize>,
    elements: usize,
    bytes_int8: usize,
    bytes_f32: usize,
}

#[derive(Debug, Serialize)]
struct TotalsJson {
    params: usize,
    trainable_params: usize,
    weight_params: usize,
    bias_params: usize,
    /// Weights at 1 byte + biases at 4 bytes.
    bytes_8w: usize,
    /// Weights at 2 bytes + biases at 4 bytes.
    bytes_16w: usize,
    /// Float storage (4 bytes per parameter).
    bytes_f32: usize,
    largest_activation: ActivationJson,
    /// Sum over every value (input included), int8, per sample.
    all_activations_bytes_int8: usize,
}

#[derive(Debug, Serialize)]
struct InfoJson {
    file: String,
    file_bytes: Option<u64>,
    kind: &'static str,
    scheme: Option<&'static str>,
    metadata: BTreeMap<String, String>,
    input_shape: Vec<usize>,
    input_quant: Option<QuantJson>,
    output_shape: Vec<usize>,
    output_quant: Option<QuantJson>,
    nodes: Vec<NodeJson>,
    totals: TotalsJson,
}

fn op_name(op: &Op, in_channels: Option<usize>) -> &'static str {
    match op {
        Op::Conv2d(c) if c.groups > 1 && Some(c.groups) == in_channels => "dwconv2d",
        Op::Conv2d(c) if c.groups > 1 => "gconv2d",
        Op::Conv2d(_) => "conv2d",
        Op::Linear(_) => "linear",
        Op::Add { .. } => "add",
        Op::MaxPool(_) => "maxpool",
        Op::AvgPool(_) => "avgpool",
        Op::GlobalAvgPool => "globalavgpool",
        Op::Flatten => "flatten",
        _ => "other",
    }
}

fn act_str(a: Activation) -> &'static str {
    match a {
        Activation::None => "",
        Activation::Relu => " relu",
        Activation::Relu6 => " relu6",
    }
}

fn pad_str(p: [usize; 4]) -> String {
    if p.iter().all(|&v| v == p[0]) {
        format!("p{}", p[0])
    } else {
        format!("p{:?}", p)
    }
}

fn attrs(op: &Op, specs: &[ParamSpec], inputs: &[u32]) -> String {
    match op {
        Op::Conv2d(c) => {
            let ws = &specs[c.weight.index()].shape;
            let mut s = format!(
                "{}x{} s{} {}",
                ws[1],
                ws[2],
                if c.stride[0] == c.stride[1] {
                    c.stride[0].to_string()
                } else {
                    format!("{:?}", c.stride)
                },
                pad_str(c.padding)
            );
            if c.groups > 1 {
                s.push_str(&format!(" g{}", c.groups));
            }
            if c.dilation != [1, 1] {
                s.push_str(&format!(" d{:?}", c.dilation));
            }
            s.push_str(act_str(c.activation));
            s
        }
        Op::Linear(l) => {
            let ws = &specs[l.weight.index()].shape;
            format!("{}->{}{}", ws[1], ws[0], act_str(l.activation))
        }
        Op::Add { activation } => format!(
            "v{} + v{}{}",
            inputs.first().copied().unwrap_or(0),
            inputs.get(1).copied().unwrap_or(0),
            act_str(*activation)
        ),
        Op::MaxPool(p) | Op::AvgPool(p) => format!(
            "{}x{} s{} {}",
            p.kernel[0],
            p.kernel[1],
            p.stride[0],
            pad_str(p.padding)
        ),
        _ => String::new(),
    }
}

/// Four significant digits, scientific below 1e-3.
fn sig(x: f32) -> String {
    let a = x.abs();
    if a != 0.0 && !(1e-3..1e5).contains(&a) {
        format!("{x:.3e}")
    } else {
        let decimals = if a == 0.0 {
            0
        } else {
            (3 - a.log10().floor() as i32).max(0) as usize
        };
        format!("{x:.decimals$}")
    }
}

struct View<'a> {
    topology: &'a Topology,
    specs: Vec<ParamSpec>,
    act: Option<&'a [ActQuant]>,
    metadata: &'a BTreeMap<String, String>,
    kind: &'static str,
    bits: Option<WeightBits>,
}

/// `lastmile info`.
pub fn run(args: &InfoArgs, ui: Ui) -> Result<()> {
    let model = util::load_model(&args.model)?;
    let view = match &model {
        AnyModel::Float(m) => View {
            topology: &m.topology,
            specs: m.specs(),
            act: None,
            metadata: &m.metadata,
            kind: "float",
            bits: None,
        },
        AnyModel::Quantized(m) => View {
            topology: &m.topology,
            specs: m.specs(),
            act: Some(&m.act),
            metadata: &m.metadata,
            kind: "quantized",
            bits: Some(m.weight_bits),
        },
    };
    let shapes = view
        .topology
        .infer_shapes(&view.specs)
        .map_err(|e| anyhow!("model '{}' is invalid: {e}", args.model.display()))?;
    let info = build(args, &view, &shapes);
    if ui.json {
        println!("{}", serde_json::to_string_pretty(&info)?);
    } else {
        print_text(&info);
    }
    Ok(())
}

fn build(args: &InfoArgs, v: &View<'_>, shapes: &[Vec<usize>]) -> InfoJson {
    let nodes: Vec<NodeJson> = v
        .topology
        .nodes
        .iter()
        .enumerate()
        .map(|(i, node)| {
            let inputs: Vec<u32> = node.inputs.iter().map(|x| x.0).collect();
            let pids: Vec<usize> = node.op.params().iter().map(|(p, _)| p.index()).collect();
            let ps: Vec<&ParamSpec> = pids.iter().map(|&p| &v.specs[p]).collect();
            let n_tr = ps.iter().filter(|s| s.trainable).count();
            let in_c = shapes[node.inputs[0].index()].get(2).copied();
            NodeJson {
                index: i,
                name: node.name.clone(),
                op: op_name(&node.op, in_c),
                attrs: attrs(&node.op, &v.specs, &inputs),
                inputs,
                output_shape: shapes[i + 1].clone(),
                output_quant: v.act.map(|a| a[i + 1].into()),
                params: ps.iter().map(|s| s.numel()).sum(),
                param_names: ps.iter().map(|s| s.name.clone()).collect(),
                trainable: match (ps.len(), n_tr) {
                    (0, _) => "-",
                    (_, 0) => "no",
                    (n, t) if n == t => "yes",
                    _ => "partial",
                },
            }
        })
        .collect();
    let sum = |f: &dyn Fn(&ParamSpec) -> bool| -> usize {
        v.specs.iter().filter(|s| f(s)).map(ParamSpec::numel).sum()
    };
    let weight_params = sum(&|s| s.role == ParamRole::Weight);
    let bias_params = sum(&|s| s.role == ParamRole::Bias);
    let (big_v, big_shape) = shapes
        .iter()
        .enumerate()
        .max_by_key(|(i, s)| (s.iter().product::<usize>(), std::cmp::Reverse(*i)))
        .map(|(i, s)| (i, s.clone()))
        .unwrap_or_default();
    let elements: usize = big_shape.iter().product();
    let big_node = if big_v == 0 {
        "input".to_string()
    } else {
        v.topology.nodes[big_v - 1].name.clone()
    };
    InfoJson {
        file: args.model.display().to_string(),
        file_bytes: std::fs::metadata(&args.model).ok().map(|m| m.len()),
        kind: v.kind,
        scheme: v.bits.map(WeightBits::scheme),
        metadata: v.metadata.clone(),
        input_shape: shapes[0].clone(),
        input_quant: v.act.map(|a| a[0].into()),
        output_shape: shapes.last().cloned().unwrap_or_default(),
        output_quant: v.act.and_then(|a| a.last().copied()).map(Into::into),
        nodes,
        totals: TotalsJson {
            params: weight_params + bias_params,
            trainable_params: sum(&|s| s.trainable),
            weight_params,
            bias_params,
            bytes_8w: weight_params + 4 * bias_params,
            bytes_16w: 2 * weight_params + 4 * bias_params,
            bytes_f32: 4 * (weight_params + bias_params),
            largest_activation: ActivationJson {
                value: big_v,
                node: big_node,
                shape: big_shape,
                elements,
                bytes_int8: elements,
                bytes_f32: 4 * elements,
            },
            all_activations_bytes_int8: shapes.iter().map(|s| s.iter().product::<usize>()).sum(),
        },
    }
}

fn quant_str(q: &Option<QuantJson>) -> String {
    match q {
        Some(q) => format!("scale {}, zero point {}", sig(q.scale), q.zero_point),
        None => "float32".into(),
    }
}

fn print_text(info: &InfoJson) {
    let size = info
        .file_bytes
        .map(|b| format!(" ({b} bytes)"))
        .unwrap_or_default();
    println!("model     {}{size}", info.file);
    println!(
        "kind      {}",
        match info.scheme {
            Some(s) => format!("quantized {s}"),
            None => "float (f32)".into(),
        }
    );
    let mut first = true;
    for (k, v) in &info.metadata {
        let label = if first { "metadata" } else { "" };
        first = false;
        println!("{label:<9} {k} = {v}");
    }
    println!(
        "input     {}, {}",
        shape_str(&info.input_shape),
        quant_str(&info.input_quant)
    );
    println!(
        "output    {}, {}",
        shape_str(&info.output_shape),
        quant_str(&info.output_quant)
    );
    println!();
    let quant = info.scheme.is_some();
    let mut header = vec!["#", "name", "op", "attrs", "output"];
    if quant {
        header.extend(["scale", "zp"]);
    }
    header.extend(["params", "trainable"]);
    let rows: Vec<Vec<String>> = info
        .nodes
        .iter()
        .map(|n| {
            let mut r = vec![
                n.index.to_string(),
                n.name.clone(),
                n.op.to_string(),
                n.attrs.clone(),
                shape_str(&n.output_shape),
            ];
            if let Some(q) = &n.output_quant {
                r.push(sig(q.scale));
                r.push(q.zero_point.to_string());
            }
            r.push(if n.params == 0 {
                "-".into()
            } else {
                n.params.to_string()
            });
            r.push(n.trainable.to_string());
            r
        })
        .collect();
    print!("{}", table(&header, &rows));
    println!();
    let t = &info.totals;
    println!(
        "params    {} ({} weights, {} biases), trainable {}",
        t.params, t.weight_params, t.bias_params, t.trainable_params
    );
    println!(
        "storage   {} bytes at 8w, {} bytes at 16w (weights 1 or 2 bytes, biases 4), {} bytes as f32",
        t.bytes_8w, t.bytes_16w, t.bytes_f32
    );
    let a = &t.largest_activation;
    println!(
        "largest activation  {} bytes/sample int8 (value {} '{}', {}); all values {} bytes/sample",
        a.bytes_int8,
        a.value,
        a.node,
        shape_str(&a.shape),
        t.all_activations_bytes_int8
    );
}

#[cfg(test)]
mod tests {
    use super::sig;

    #[test]
    fn sig_prints_four_significant_digits() {
        assert_eq!(sig(0.003_921_569), "0.003922");
        assert_eq!(sig(0.000_123_4), "1.234e-4");
        assert_eq!(sig(0.123_456), "0.1235");
        assert_eq!(sig(12.345_67), "12.35");
        assert_eq!(sig(0.0), "0");
    }
}
