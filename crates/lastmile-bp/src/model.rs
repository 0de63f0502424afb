//! [`BpModel`]: any [`FloatModel`] of the IR as a differentiable candle graph.
//!
//! See the crate docs ("How the IR becomes a candle graph") for the lowering.

use candle_core::{DType, Device, Tensor, Var};
use lastmile_core::graph::{Conv2d, Op};
use lastmile_core::model::FloatModel;
use lastmile_core::quant::Activation;
use lastmile_core::{ParamId, Topology};

use crate::BpError;

/// One parameter of a [`BpModel`], in the IR's layout (OHWI / `[out, in]` / `[C]`).
#[derive(Debug)]
pub enum BpParam {
    /// `spec.trainable`: a candle [`Var`] the optimizer updates.
    Trainable(Var),
    /// Frozen: a plain tensor (no gradient is computed for it).
    Frozen(Tensor),
}

impl BpParam {
    /// The value as a tensor (for a `Var`, the tracked tensor).
    pub fn tensor(&self) -> &Tensor {
        match self {
            BpParam::Trainable(v) => v.as_tensor(),
            BpParam::Frozen(t) => t,
        }
    }

    /// Whether this parameter is trained.
    pub fn is_trainable(&self) -> bool {
        matches!(self, BpParam::Trainable(_))
    }
}

/// Per-node constants of a windowed op, built once.
#[derive(Debug, Clone)]
struct Window {
    /// `[Ho·Wo·KH·KW]` u32 input positions (`H·W` = the sentinel row).
    index: Tensor,
    /// Taps per window (`KH·KW`).
    taps: usize,
    /// Output positions (`Ho·Wo`).
    positions: usize,
    /// For `AvgPool`: `[Ho·Wo, 1]` count of valid taps per window.
    counts: Option<Tensor>,
}

/// A [`FloatModel`] translated to candle: parameters as `Var`s (trainable) or
/// tensors (frozen) and a forward pass with the exact semantics of
/// [`lastmile_core::float_exec::forward`].
///
/// Which parameters are `Var`s is decided by each `ParamSpec::trainable` flag
/// *at construction*: set the flags on the `FloatModel` first (see
/// [`crate::Scope`]).
#[derive(Debug)]
pub struct BpModel {
    topology: Topology,
    /// Per-sample shape of every value (index 0 = graph input).
    shapes: Vec<Vec<usize>>,
    params: Vec<BpParam>,
    /// Per node: the gather table of conv / pool nodes.
    windows: Vec<Option<Window>>,
    device: Device,
    dtype: DType,
}

impl BpModel {
    /// Translates `model` (validated first) into an f32 candle graph on the CPU.
    pub fn new(model: &FloatModel) -> Result<Self, BpError> {
        Self::with_dtype(model, DType::F32)
    }

    /// As [`BpModel::new`] with another float dtype (`F64` is used by the
    /// gradient-check tests; training uses `F32`).
    pub fn with_dtype(model: &FloatModel, dtype: DType) -> Result<Self, BpError> {
        if !dtype.is_float() {
            return Err(BpError::Input(format!(
                "BpModel needs a float dtype, got {dtype:?}"
            )));
        }
        let shapes = model.validate()?;
        let device = Device::Cpu;
        let mut params = Vec::with_capacity(model.params.len());
        for p in &model.params {
            let t =
                Tensor::from_slice(&p.data, p.spec.shape.as_slice(), &device)?.to_dtype(dtype)?;
            params.push(if p.spec.trainable {
                BpParam::Trainable(Var::from_tensor(&t)?)
            } else {
                BpParam::Frozen(t)
            });
        }
        let mut windows = Vec::with_capacity(model.topology.nodes.len());
        for (i, node) in model.topology.nodes.iter().enumerate() {
            let x = &shapes[node.inputs[0].index()];
            let y = &shapes[i + 1];
            let geom = match &node.op {
                Op::Conv2d(c) => {
                    let w = &model.params[c.weight.index()].spec.shape;
                    Some(([w[1], w[2]], c.stride, c.padding, c.dilation, false))
                }
                Op::MaxPool(p) => Some((p.kernel, p.stride, p.padding, [1, 1], false)),
                Op::AvgPool(p) => Some((p.kernel, p.stride, p.padding, [1, 1], true)),
                _ => None,
            };
            windows.push(match geom {
                None => None,
                Some((kernel, stride, padding, dilation, avg)) => {
                    let (index, counts) = gather_table(
                        [x[0], x[1]],
                        [y[0], y[1]],
                        kernel,
                        stride,
                        padding,
                        dilation,
                    );
                    let positions = y[0] * y[1];
                    let counts = if avg {
                        Some(Tensor::from_vec(counts, (positions, 1), &device)?.to_dtype(dtype)?)
                    } else {
                        None
                    };
                    Some(Window {
                        index: Tensor::from_vec(index, positions * kernel[0] * kernel[1], &device)?,
                        taps: kernel[0] * kernel[1],
                        positions,
                        counts,
                    })
                }
            });
        }
        Ok(BpModel {
            topology: model.topology.clone(),
            shapes,
            params,
            windows,
            device,
            dtype,
        })
    }

    /// The device tensors live on (always the CPU).
    pub fn device(&self) -> &Device {
        &self.device
    }

    /// The float dtype of every parameter and activation.
    pub fn dtype(&self) -> DType {
        self.dtype
    }

    /// Per-sample input shape (`[H, W, C]` or `[F]`).
    pub fn input_shape(&self) -> &[usize] {
        &self.shapes[0]
    }

    /// Per-sample output shape.
    pub fn output_shape(&self) -> &[usize] {
        &self.shapes[self.shapes.len() - 1]
    }

    /// Per-sample shape of every value of the graph (index 0 = input).
    pub fn value_shapes(&self) -> &[Vec<usize>] {
        &self.shapes
    }

    /// The parameters, indexed like `FloatModel::params`.
    pub fn params(&self) -> &[BpParam] {
        &self.params
    }

    /// The `Var`s of every trainable parameter, in parameter order.
    pub fn trainable_vars(&self) -> Vec<Var> {
        self.params
            .iter()
            .filter_map(|p| match p {
                BpParam::Trainable(v) => Some(v.clone()),
                BpParam::Frozen(_) => None,
            })
            .collect()
    }

    /// Writes the current value of every **trainable** parameter back into
    /// `model` (which must be the model this was built from, or one with the
    /// same parameter shapes). Frozen parameters are left untouched.
    pub fn export_into(&self, model: &mut FloatModel) -> Result<(), BpError> {
        if model.params.len() != self.params.len() {
            return Err(BpError::Input(format!(
                "export: the model has {} parameters, the BpModel {}",
                model.params.len(),
                self.params.len()
            )));
        }
        for (dst, src) in model.params.iter_mut().zip(&self.params) {
            if let BpParam::Trainable(v) = src {
                let data = v
                    .as_tensor()
                    .flatten_all()?
                    .to_dtype(DType::F32)?
                    .to_vec1::<f32>()?;
                if data.len() != dst.data.len() {
                    return Err(BpError::Input(format!(
                        "export: parameter '{}' has {} values, the BpModel {}",
                        dst.spec.name,
                        dst.data.len(),
                        data.len()
                    )));
                }
                dst.data = data;
            }
        }
        Ok(())
    }

    /// Makes an `[n, input_shape…]` tensor of this model's dtype from `n`
    /// samples of row-major (NHWC) `f32` data.
    pub fn input_tensor(&self, data: &[f32], n: usize) -> Result<Tensor, BpError> {
        let per: usize = self.shapes[0].iter().product();
        if data.len() != n * per {
            return Err(BpError::Input(format!(
                "got {} input values, expected {n} samples × {per}",
                data.len()
            )));
        }
        let mut dims = Vec::with_capacity(self.shapes[0].len() + 1);
        dims.push(n);
        dims.extend_from_slice(&self.shapes[0]);
        Ok(Tensor::from_slice(data, dims, &self.device)?.to_dtype(self.dtype)?)
    }

    fn p(&self, id: ParamId) -> &Tensor {
        self.params[id.index()].tensor()
    }

    fn window(&self, i: usize) -> candle_core::Result<&Window> {
        self.windows[i]
            .as_ref()
            .ok_or_else(|| candle_core::Error::Msg(format!("node {i} has no gather table")))
    }

    /// Runs the graph on a batch. `x` is `[n, H, W, C]` (or `[n, F]`); any
    /// `[n, …]` tensor with as many values per sample as the input shape is
    /// accepted and reshaped. Returns `[n, F]` (or `[n, H, W, C]` for a graph
    /// whose output is a feature map), matching
    /// [`lastmile_core::float_exec::forward`] up to float rounding.
    pub fn forward(&self, x: &Tensor) -> candle_core::Result<Tensor> {
        let n = x.dim(0)?;
        let in_shape = &self.shapes[0];
        let per: usize = in_shape.iter().product();
        if x.elem_count() != n * per {
            candle_core::bail!(
                "graph input: got shape {:?}, expected [{n}, {}]",
                x.dims(),
                in_shape
                    .iter()
                    .map(ToString::to_string)
                    .collect::<Vec<_>>()
                    .join(", ")
            );
        }
        let x = x.to_dtype(self.dtype)?;
        let x0 = match in_shape[..] {
            [h, w, c] => x.reshape((n, h * w, c))?,
            _ => x.reshape((n, per))?,
        };
        // Values in internal layout ([n, H·W, C] or [n, F]).
        let mut values: Vec<Tensor> = Vec::with_capacity(self.shapes.len());
        values.push(x0);
        for (i, node) in self.topology.nodes.iter().enumerate() {
            let xin = &values[node.inputs[0].index()];
            let y = match &node.op {
                Op::Conv2d(c) => {
                    let y = self.conv2d(xin, c, self.window(i)?)?;
                    let y = match c.bias {
                        Some(b) => y.broadcast_add(self.p(b))?,
                        None => y,
                    };
                    activation(&y, c.activation)?
                }
                Op::Linear(l) => {
                    let y = xin.matmul(&self.p(l.weight).t()?)?;
                    let y = match l.bias {
                        Some(b) => y.broadcast_add(self.p(b))?,
                        None => y,
                    };
                    activation(&y, l.activation)?
                }
                Op::Add { activation: a } => {
                    let other = &values[node.inputs[1].index()];
                    activation(&(xin + other)?, *a)?
                }
                Op::MaxPool(_) => {
                    let win = self.window(i)?;
                    let cols = columns(xin, win, f64::NEG_INFINITY)?; // [n, L·K², C]
                    let c = cols.dim(2)?;
                    let cols = cols.reshape((n, win.positions, win.taps, c))?;
                    // Select one maximum per window (argmax, then gather) rather than
                    // `max(2)`, whose backward gives *every* tied maximum the full
                    // gradient: ties are common (equal biases over blank regions,
                    // zeros after ReLU) and would over-count.
                    let arg = cols.argmax_keepdim(2)?;
                    cols.gather(&arg, 2)?.squeeze(2)?
                }
                Op::AvgPool(_) => {
                    let win = self.window(i)?;
                    let cols = columns(xin, win, 0.0)?;
                    let c = cols.dim(2)?;
                    let counts = win
                        .counts
                        .as_ref()
                        .ok_or_else(|| candle_core::Error::Msg("avg-pool count map".into()))?;
                    cols.reshape((n, win.positions, win.taps, c))?
                        .sum(2)?
                        .broadcast_div(counts)?
                }
                Op::GlobalAvgPool => xin.mean(1)?,
                Op::Flatten => xin.reshape((n, ()))?,
                other => candle_core::bail!(
                    "node {i} '{}': op {:?} is not supported by lastmile-bp",
                    node.name,
                    other.kind()
                ),
            };
            values.push(y);
        }
        let out = values
            .pop()
            .unwrap_or_else(|| unreachable!("graph has nodes"));
        match self.shapes[self.shapes.len() - 1][..] {
            [h, w, c] => out.reshape((n, h, w, c)),
            _ => Ok(out),
        }
    }

    /// Conv2d of `[n, H·W, C_in]` → `[n, Ho·Wo, C_out]` (no bias, no activation).
    fn conv2d(&self, x: &Tensor, c: &Conv2d, win: &Window) -> candle_core::Result<Tensor> {
        let w = self.p(c.weight); // OHWI
        let (cout, kh, kw, cpg) = w.dims4()?;
        let k2 = kh * kw;
        let (n, _, cin) = x.dims3()?;
        let l = win.positions;
        let cols = columns(x, win, 0.0)?; // [n, L·K², C_in], tap-major then channel
        let g = c.groups;
        if g == 1 {
            // OHWI flattened is [O, K²·C_in] in exactly the columns' order.
            let cols = cols.reshape((n * l, k2 * cin))?;
            let y = cols.matmul(&w.reshape((cout, k2 * cin))?.t()?)?;
            return y.reshape((n, l, cout));
        }
        if cpg == 1 {
            // Depthwise (C_in = G, multiplier m = C_out / C_in): output channel
            // g·m + j reads input channel g only.
            let m = cout / cin;
            let cols = cols.reshape((n * l, k2, cin, 1))?;
            let wd = w.reshape((cin, m, k2))?.permute((2, 0, 1))?; // [K², C, m]
            let y = cols.broadcast_mul(&wd)?.sum(1)?; // [n·L, C, m]
            return y.reshape((n, l, cout));
        }
        let opg = cout / g;
        let cols = cols
            .reshape((n * l, k2, g, cpg))?
            .permute((2, 0, 1, 3))? // [G, n·L, K², cpg]
            .reshape((g, n * l, k2 * cpg))?;
        let wg = w.reshape((g, opg, k2 * cpg))?.transpose(1, 2)?; // [G, K²·cpg, opg]
        let y = cols.matmul(&wg)?; // [G, n·L, opg]
        y.permute((1, 0, 2))?.reshape((n, l, cout))
    }
}

/// The gather table of a windowed op and its count of valid taps per window.
///
/// Entry `(oy·Wo + ox)·KH·KW + ky·KW + kx` is the row `iy·W + ix` of the input
/// pixel that tap reads, or `H·W` (the sentinel row) if it is padding.
fn gather_table(
    [h, w]: [usize; 2],
    [ho, wo]: [usize; 2],
    kernel: [usize; 2],
    stride: [usize; 2],
    padding: [usize; 4],
    dilation: [usize; 2],
) -> (Vec<u32>, Vec<f32>) {
    let sentinel = (h * w) as u32;
    let mut index = Vec::with_capacity(ho * wo * kernel[0] * kernel[1]);
    let mut counts = Vec::with_capacity(ho * wo);
    for oy in 0..ho {
        for ox in 0..wo {
            let mut valid = 0usize;
            for ky in 0..kernel[0] {
                let iy = (oy * stride[0] + ky * dilation[0]) as isize - padding[0] as isize;
                for kx in 0..kernel[1] {
                    let ix = (ox * stride[1] + kx * dilation[1]) as isize - padding[1] as isize;
                    if iy >= 0 && (iy as usize) < h && ix >= 0 && (ix as usize) < w {
                        index.push((iy as usize * w + ix as usize) as u32);
                        valid += 1;
                    } else {
                        index.push(sentinel);
                    }
                }
            }
            counts.push(valid as f32);
        }
    }
    (index, counts)
}

/// `[n, H·W, C]` → `[n, L·K², C]`: the input rows each window tap reads, with
/// `pad` where the tap falls on padding.
fn columns(x: &Tensor, win: &Window, pad: f64) -> candle_core::Result<Tensor> {
    let (n, _, c) = x.dims3()?;
    let sentinel = Tensor::full(pad, (n, 1, c), x.device())?.to_dtype(x.dtype())?;
    Tensor::cat(&[x, &sentinel], 1)?.index_select(&win.index, 1)
}

fn activation(x: &Tensor, a: Activation) -> candle_core::Result<Tensor> {
    match a {
        Activation::None => Ok(x.clone()),
        Activation::Relu => x.relu(),
        Activation::Relu6 => x.clamp(0f32, 6f32),
    }
}
