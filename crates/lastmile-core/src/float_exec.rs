//! A plain f32 executor of the IR: the float counterpart of the integer spec.
//!
//! Used for post-training calibration, for the "FF fp" path, and as the float
//! oracle the conformance suite checks the integer reference against.
//! Same layout rules as the integer ops (NHWC, OHWI, padding = real zero,
//! pooling excludes padded positions).

use alloc::vec;
use alloc::vec::Vec;

use crate::graph::{Conv2d, GraphError, Op, Pool2d, ValueId};
use crate::model::FloatModel;

/// Runs `n` samples through `model`; calls `observe(value, data)` for every value
/// (input included) as it is produced. Returns the output (`n · Π out_shape`).
pub fn forward_observed(
    model: &FloatModel,
    input: &[f32],
    n: usize,
    observe: &mut dyn FnMut(ValueId, &[f32]),
) -> Result<Vec<f32>, GraphError> {
    let shapes = model.validate()?;
    let in_len: usize = shapes[0].iter().product();
    if input.len() != n * in_len {
        return Err(GraphError {
            location: "graph input".into(),
            message: alloc::format!(
                "got {} values, expected {n} samples × {in_len}",
                input.len()
            ),
        });
    }
    let mut values: Vec<Vec<f32>> = Vec::with_capacity(shapes.len());
    values.push(input.to_vec());
    observe(ValueId::INPUT, input);
    for (i, node) in model.topology.nodes.iter().enumerate() {
        let xs = &shapes[node.inputs[0].index()];
        let x = &values[node.inputs[0].index()];
        let out_len: usize = shapes[i + 1].iter().product();
        let mut y = vec![0f32; n * out_len];
        match &node.op {
            Op::Conv2d(c) => {
                let w = &model.params[c.weight.index()];
                let b = c.bias.map(|b| model.params[b.index()].data.as_slice());
                conv2d_f32(
                    c,
                    &w.data,
                    &w.spec.shape,
                    b,
                    x,
                    xs,
                    &shapes[i + 1],
                    n,
                    &mut y,
                );
            }
            Op::Linear(l) => {
                let w = &model.params[l.weight.index()];
                let b = l.bias.map(|b| model.params[b.index()].data.as_slice());
                let (o, f) = (w.spec.shape[0], w.spec.shape[1]);
                for s in 0..n {
                    for j in 0..o {
                        let mut acc = b.map_or(0.0, |b| b[j]);
                        for k in 0..f {
                            acc += x[s * f + k] * w.data[j * f + k];
                        }
                        y[s * o + j] = l.activation.apply_f32(acc);
                    }
                }
            }
            Op::Add { activation } => {
                let b = &values[node.inputs[1].index()];
                for (j, v) in y.iter_mut().enumerate() {
                    *v = activation.apply_f32(x[j] + b[j]);
                }
            }
            Op::MaxPool(p) => pool_f32(p, x, xs, &shapes[i + 1], n, &mut y, true),
            Op::AvgPool(p) => pool_f32(p, x, xs, &shapes[i + 1], n, &mut y, false),
            Op::GlobalAvgPool => {
                let (hw, c) = (xs[0] * xs[1], xs[2]);
                for s in 0..n {
                    for ch in 0..c {
                        let sum: f32 = (0..hw).map(|p| x[s * hw * c + p * c + ch]).sum();
                        y[s * c + ch] = sum / hw as f32;
                    }
                }
            }
            Op::Flatten => y.copy_from_slice(x),
        }
        observe(ValueId::of_node(i), &y);
        values.push(y);
    }
    Ok(values.pop().unwrap_or_default())
}

/// [`forward_observed`] without an observer.
pub fn forward(model: &FloatModel, input: &[f32], n: usize) -> Result<Vec<f32>, GraphError> {
    forward_observed(model, input, n, &mut |_, _| {})
}

#[allow(clippy::too_many_arguments)]
fn conv2d_f32(
    c: &Conv2d,
    w: &[f32],
    ws: &[usize],
    b: Option<&[f32]>,
    x: &[f32],
    xs: &[usize],
    ys: &[usize],
    n: usize,
    y: &mut [f32],
) {
    let (h, wd, cin) = (xs[0], xs[1], xs[2]);
    let (ho, wo, cout) = (ys[0], ys[1], ys[2]);
    let (kh, kw, cpg) = (ws[1], ws[2], ws[3]);
    let opg = cout / c.groups;
    for s in 0..n {
        for oy in 0..ho {
            for ox in 0..wo {
                for co in 0..cout {
                    let g = co / opg;
                    let mut acc = b.map_or(0.0, |b| b[co]);
                    for ky in 0..kh {
                        let iy = (oy * c.stride[0] + ky * c.dilation[0]) as isize
                            - c.padding[0] as isize;
                        if iy < 0 || iy >= h as isize {
                            continue;
                        }
                        for kx in 0..kw {
                            let ix = (ox * c.stride[1] + kx * c.dilation[1]) as isize
                                - c.padding[1] as isize;
                            if ix < 0 || ix >= wd as isize {
                                continue;
                            }
                            let xb = ((s * h + iy as usize) * wd + ix as usize) * cin + g * cpg;
                            let wb = ((co * kh + ky) * kw + kx) * cpg;
                            for ci in 0..cpg {
                                acc += x[xb + ci] * w[wb + ci];
                            }
                        }
                    }
                    y[((s * ho + oy) * wo + ox) * cout + co] = c.activation.apply_f32(acc);
                }
            }
        }
    }
}

fn pool_f32(p: &Pool2d, x: &[f32], xs: &[usize], ys: &[usize], n: usize, y: &mut [f32], max: bool) {
    let (h, w, c) = (xs[0], xs[1], xs[2]);
    let (ho, wo) = (ys[0], ys[1]);
    for s in 0..n {
        for oy in 0..ho {
            for ox in 0..wo {
                for ch in 0..c {
                    let mut acc = if max { f32::NEG_INFINITY } else { 0.0 };
                    let mut count = 0usize;
                    for ky in 0..p.kernel[0] {
                        let iy = (oy * p.stride[0] + ky) as isize - p.padding[0] as isize;
                        if iy < 0 || iy >= h as isize {
                            continue;
                        }
                        for kx in 0..p.kernel[1] {
                            let ix = (ox * p.stride[1] + kx) as isize - p.padding[1] as isize;
                            if ix < 0 || ix >= w as isize {
                                continue;
                            }
                            let v = x[((s * h + iy as usize) * w + ix as usize) * c + ch];
                            acc = if max { acc.max(v) } else { acc + v };
                            count += 1;
                        }
                    }
                    y[((s * ho + oy) * wo + ox) * c + ch] =
                        if max { acc } else { acc / count.max(1) as f32 };
                }
            }
        }
    }
}
