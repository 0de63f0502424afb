//! Emitting a lastmile graph as an ONNX model.
//!
//! * Activations are **uint8** inside the model (`u = q + 128`, zero point `zp + 128`):
//!   the same real values and the same integer arithmetic, but ONNX Runtime's fast
//!   x86 kernels (MLAS) are written for u8 activations × s8 weights; s8 × s8 takes a
//!   slow path. The host flips the sign bit of the input and output codes.
//! * Feature maps live in ONNX's NCHW inside the model: the NHWC graph input is
//!   transposed once at the start, 3-D outputs once at the end, and `Flatten`
//!   transposes back to NHWC before reshaping (our flatten order is H, W, C).
//! * Conv2d → `QLinearConv` (per-channel `w_scale`, zero `w_zero_point`, i32 bias at
//!   `s_in·s_w`), padding with the input zero point, `group` for grouped/depthwise.
//! * Linear → `com.microsoft` `QGemm` (bias input, per-column scales, `transB = 1` on our
//!   `[out, in]` weights): the standard `QLinearMatMul` has no bias input, and our bias
//!   must be added before the single requantization.
//! * Fused ReLU/ReLU6 → `Clip` on the int8 codes with the spec's `[lo, hi]`.
//! * Add, AvgPool, GlobalAvgPool → QDQ: `DequantizeLinear` → float op →
//!   `QuantizeLinear` (ORT may fuse these into its QLinear contrib kernels).
//! * MaxPool → int8 `MaxPool` (padding never wins, as in the spec).
//! * **Trainable** weights and biases become graph *inputs* fed on every forward;
//!   frozen ones are initializers. Changing trainable tensors therefore needs no new
//!   session.

use lastmile_core::graph::Op;
use lastmile_core::model::{QData, QParam, QuantModel};
use lastmile_core::plan::{NodePlan, Plan};

use crate::onnx::{Attr, DataType, Dim, Graph};

/// A trainable tensor fed to the session on every forward.
#[derive(Clone, Debug)]
pub(crate) struct Feed {
    /// Graph input name.
    pub name: String,
    /// Index in the model's parameter list.
    pub pid: usize,
    /// ONNX dims of the input.
    pub dims: Vec<usize>,
    /// `Some([C_out, KH, KW, C_in/g])`: conv weights, transposed OHWI → OIHW on the host.
    pub ohwi: Option<[usize; 4]>,
}

/// The emitted model.
#[derive(Debug)]
pub(crate) struct Emitted {
    /// Serialized `ModelProto`.
    pub bytes: Vec<u8>,
    /// Trainable tensors, in graph-input order after `x`.
    pub feeds: Vec<Feed>,
}

/// `[C_out, KH, KW, C_in/g]` → `[C_out, C_in/g, KH, KW]`.
pub(crate) fn ohwi_to_oihw(w: &[i8], [co, kh, kw, ci]: [usize; 4], out: &mut Vec<i8>) {
    out.clear();
    out.resize(w.len(), 0);
    for o in 0..co {
        let src = &w[o * kh * kw * ci..(o + 1) * kh * kw * ci];
        let dst = &mut out[o * kh * kw * ci..(o + 1) * kh * kw * ci];
        for y in 0..kh {
            for x in 0..kw {
                for i in 0..ci {
                    dst[(i * kh + y) * kw + x] = src[(y * kw + x) * ci + i];
                }
            }
        }
    }
}

fn codes_i8(p: &QParam) -> Result<&[i8], String> {
    match &p.data {
        QData::I8(v) => Ok(v),
        d => Err(format!(
            "parameter '{}' holds {} codes; ONNX Runtime's QLinearConv takes int8 weights only",
            p.spec.name,
            d.dtype()
        )),
    }
}

struct Emitter<'m> {
    g: Graph,
    feeds: Vec<Feed>,
    model: &'m QuantModel,
    /// Whether the unit-scale constants of [`Emitter::codes_to_f32`] exist.
    unit: bool,
    /// Whether a `com.microsoft` op (QGemm) is used.
    ms_domain: bool,
}

impl Emitter<'_> {
    fn weight(
        &mut self,
        pid: usize,
        dims: Vec<usize>,
        ohwi: Option<[usize; 4]>,
    ) -> Result<String, String> {
        let p = &self.model.params[pid];
        let name = format!("p{pid}");
        let codes = codes_i8(p)?;
        if p.spec.trainable {
            let d: Vec<Dim> = dims.iter().map(|&d| Dim::Value(d)).collect();
            self.g.input(&name, DataType::I8, &d);
            self.feeds.push(Feed {
                name: name.clone(),
                pid,
                dims: dims.clone(),
                ohwi,
            });
        } else {
            let mut t = Vec::new();
            match ohwi {
                Some(s) => ohwi_to_oihw(codes, s, &mut t),
                None => t.extend_from_slice(codes),
            }
            self.g.init_i8(&name, &dims, &t);
        }
        let c_out = dims[0];
        self.g.init_f32(&format!("{name}_s"), &[c_out], &p.scales);
        self.g
            .init_i8(&format!("{name}_z"), &[c_out], &vec![0; c_out]);
        Ok(name)
    }

    fn bias(&mut self, pid: usize) -> Result<String, String> {
        let p = &self.model.params[pid];
        let name = format!("p{pid}");
        let QData::I32(codes) = &p.data else {
            return Err(format!("bias '{}' is not i32", p.spec.name));
        };
        if p.spec.trainable {
            self.g
                .input(&name, DataType::I32, &[Dim::Value(codes.len())]);
            self.feeds.push(Feed {
                name: name.clone(),
                pid,
                dims: vec![codes.len()],
                ohwi: None,
            });
        } else {
            self.g.init_i32(&name, &[codes.len()], codes);
        }
        Ok(name)
    }

    /// `Clip(pre, lo, hi) → out` when the clamp is narrower than int8.
    fn clip(&mut self, pre: &str, out: &str, lo: i32, hi: i32) {
        if lo > -128 || hi < 127 {
            let (l, h) = (format!("{out}_lo"), format!("{out}_hi"));
            self.g.init_u8(&l, &[], &[(lo + 128) as u8]);
            self.g.init_u8(&h, &[], &[(hi + 128) as u8]);
            self.g.node("Clip", "", &[pre, &l, &h], &[out], &[]);
        } else {
            self.g.node("Identity", "", &[pre], &[out], &[]);
        }
    }

    fn reshape(&mut self, x: &str, out: &str, shape: &[i64]) {
        let s = format!("{out}_shape");
        self.g.init_i64(&s, &[shape.len()], shape);
        self.g.node("Reshape", "", &[x, &s], &[out], &[]);
    }

    /// `DequantizeLinear(x, s_v, z_v) → out` (float).
    fn dq(&mut self, x: &str, v: usize, out: &str) {
        let (s, z) = (format!("s{v}"), format!("z{v}"));
        self.g
            .node("DequantizeLinear", "", &[x, &s, &z], &[out], &[]);
    }

    /// The raw int8 codes as `f32` (exact): `DequantizeLinear` of the u8 codes with scale 1,
    /// zero point 128.
    fn codes_to_f32(&mut self, x: &str, out: &str) {
        if !self.unit {
            self.g.init_f32("one_f", &[], &[1.0]);
            self.g.init_u8("offset_u8", &[], &[128]);
            self.g.init_f32("half_f", &[], &[0.5]);
            self.unit = true;
        }
        self.g.node(
            "DequantizeLinear",
            "",
            &[x, "one_f", "offset_u8"],
            &[out],
            &[],
        );
    }

    /// The spec's average-pool rounding on an `f32` mean of raw codes: round half away
    /// from zero, `sign(v)·floor(|v| + 0.5)`, then to int8 (already integral, so
    /// `QuantizeLinear` with scale 1 does not round). Exact: the mean of at most
    /// `MAX_K` int8 codes is within `f32` error of a tie only when it *is* a tie.
    fn round_half_away(&mut self, v: &str, out: &str) {
        let [a, h, fl, sg, r] = ["abs", "h", "fl", "sg", "r"].map(|t| format!("{out}_{t}"));
        self.g.node("Abs", "", &[v], &[&a], &[]);
        self.g.node("Add", "", &[&a, "half_f"], &[&h], &[]);
        self.g.node("Floor", "", &[&h], &[&fl], &[]);
        self.g.node("Sign", "", &[v], &[&sg], &[]);
        self.g.node("Mul", "", &[&fl, &sg], &[&r], &[]);
        self.g.node(
            "QuantizeLinear",
            "",
            &[&r, "one_f", "offset_u8"],
            &[out],
            &[],
        );
    }

    fn q(&mut self, x: &str, v: usize, out: &str) {
        let (s, z) = (format!("s{v}"), format!("z{v}"));
        self.g.node("QuantizeLinear", "", &[x, &s, &z], &[out], &[]);
    }
}

fn i64s(v: &[usize]) -> Vec<i64> {
    v.iter().map(|&x| x as i64).collect()
}

/// Emits `model` (already validated, `plan` derived from it) as an ONNX model with
/// graph input `x` (`[N, H, W, C]` or `[N, F]`, uint8 = int8 code + 128) and output `y`
/// (the same).
pub(crate) fn emit(model: &QuantModel, plan: &Plan) -> Result<Emitted, String> {
    let mut e = Emitter {
        g: Graph::default(),
        feeds: Vec::new(),
        model,
        unit: false,
        ms_domain: false,
    };
    let batch = || Dim::Param("N");
    let io_dims = |s: &[usize]| -> Vec<Dim> {
        let mut d = vec![batch()];
        d.extend(s.iter().map(|&x| Dim::Value(x)));
        d
    };
    let shapes = &plan.shapes;
    e.g.input("x", DataType::U8, &io_dims(&shapes[0]));
    for (v, q) in model.act.iter().enumerate() {
        e.g.init_f32(&format!("s{v}"), &[], &[q.scale]);
        e.g.init_u8(&format!("z{v}"), &[], &[(q.zero_point + 128) as u8]);
    }
    if shapes[0].len() == 3 {
        e.g.node(
            "Transpose",
            "",
            &["x"],
            &["v0"],
            &[Attr::Ints("perm", vec![0, 3, 1, 2])],
        );
    } else {
        e.g.node("Identity", "", &["x"], &["v0"], &[]);
    }

    for (i, node) in model.topology.nodes.iter().enumerate() {
        let vo = i + 1;
        let vi = node.inputs[0].index();
        let out = format!("v{vo}");
        let x = format!("v{vi}");
        let (s_in, z_in, s_out, z_out) = (
            format!("s{vi}"),
            format!("z{vi}"),
            format!("s{vo}"),
            format!("z{vo}"),
        );
        match (&node.op, &plan.nodes[i]) {
            (Op::Conv2d(c), NodePlan::Dot { lo, hi, .. }) => {
                let pid = c.weight.index();
                let shape = &model.params[pid].spec.shape;
                let [co, kh, kw, ci] = [shape[0], shape[1], shape[2], shape[3]];
                let w = e.weight(pid, vec![co, ci, kh, kw], Some([co, kh, kw, ci]))?;
                let (ws, wz) = (format!("{w}_s"), format!("{w}_z"));
                let mut ins: Vec<String> = vec![x, s_in, z_in, w, ws, wz, s_out, z_out];
                if let Some(b) = c.bias {
                    ins.push(e.bias(b.index())?);
                }
                let ins: Vec<&str> = ins.iter().map(String::as_str).collect();
                let pre = format!("{out}_q");
                let [pt, pl, pb, pr] = c.padding;
                e.g.node(
                    "QLinearConv",
                    "",
                    &ins,
                    &[&pre],
                    &[
                        Attr::Ints("kernel_shape", i64s(&[kh, kw])),
                        Attr::Ints("strides", i64s(&c.stride)),
                        Attr::Ints("pads", i64s(&[pt, pl, pb, pr])),
                        Attr::Ints("dilations", i64s(&c.dilation)),
                        Attr::Int("group", c.groups as i64),
                    ],
                );
                e.clip(&pre, &out, *lo, *hi);
            }
            (Op::Linear(l), NodePlan::Dot { lo, hi, .. }) => {
                // com.microsoft QGemm: y = requant((x − zp)·Wᵀ + bias), per-column scales;
                // the weights stay [out, in] (transB = 1). ORT's MLAS u8×s8 GEMM.
                let pid = l.weight.index();
                let shape = &model.params[pid].spec.shape;
                let (fo, fi) = (shape[0], shape[1]);
                let w = e.weight(pid, vec![fo, fi], None)?;
                let (ws, wz) = (format!("{w}_s"), format!("{w}_z"));
                let bias = match l.bias {
                    Some(b) => e.bias(b.index())?,
                    None => String::new(),
                };
                let ins: [&str; 9] = [&x, &s_in, &z_in, &w, &ws, &wz, &bias, &s_out, &z_out];
                let pre = format!("{out}_q");
                e.g.node(
                    "QGemm",
                    "com.microsoft",
                    &ins,
                    &[&pre],
                    &[Attr::Int("transB", 1)],
                );
                e.ms_domain = true;
                e.clip(&pre, &out, *lo, *hi);
            }
            (Op::Add { .. }, NodePlan::Add { lo, hi, .. }) => {
                let vb = node.inputs[1].index();
                let (fa, fb, fs, pre) = (
                    format!("{out}_fa"),
                    format!("{out}_fb"),
                    format!("{out}_fs"),
                    format!("{out}_q"),
                );
                e.dq(&x, vi, &fa);
                e.dq(&format!("v{vb}"), vb, &fb);
                e.g.node("Add", "", &[&fa, &fb], &[&fs], &[]);
                e.q(&fs, vo, &pre);
                e.clip(&pre, &out, *lo, *hi);
            }
            (Op::MaxPool(p), _) => {
                e.g.node(
                    "MaxPool",
                    "",
                    &[&x],
                    &[&out],
                    &[
                        Attr::Ints("kernel_shape", i64s(&p.kernel)),
                        Attr::Ints("strides", i64s(&p.stride)),
                        Attr::Ints("pads", i64s(&p.padding)),
                    ],
                );
            }
            (Op::AvgPool(p), _) => {
                let (f, fp) = (format!("{out}_f"), format!("{out}_fp"));
                e.codes_to_f32(&x, &f);
                e.g.node(
                    "AveragePool",
                    "",
                    &[&f],
                    &[&fp],
                    &[
                        Attr::Ints("kernel_shape", i64s(&p.kernel)),
                        Attr::Ints("strides", i64s(&p.stride)),
                        Attr::Ints("pads", i64s(&p.padding)),
                        Attr::Int("count_include_pad", 0),
                    ],
                );
                e.round_half_away(&fp, &out);
            }
            (Op::GlobalAvgPool, _) => {
                let (f, fp, q4) = (format!("{out}_f"), format!("{out}_fp"), format!("{out}_q4"));
                e.codes_to_f32(&x, &f);
                e.g.node("GlobalAveragePool", "", &[&f], &[&fp], &[]);
                e.round_half_away(&fp, &q4);
                let c = shapes[vo][0] as i64;
                e.reshape(&q4, &out, &[-1, c]);
            }
            (Op::Flatten, _) => {
                if shapes[vi].len() == 3 {
                    let t = format!("{out}_nhwc");
                    e.g.node(
                        "Transpose",
                        "",
                        &[&x],
                        &[&t],
                        &[Attr::Ints("perm", vec![0, 2, 3, 1])],
                    );
                    e.reshape(&t, &out, &[-1, shapes[vo][0] as i64]);
                } else {
                    e.g.node("Identity", "", &[&x], &[&out], &[]);
                }
            }
            (op, _) => {
                return Err(format!(
                    "node {i} '{}': op {:?} has no ONNX lowering",
                    node.name,
                    op.kind()
                ));
            }
        }
    }
    let last = format!("v{}", model.topology.nodes.len());
    let out_shape = plan.output_shape();
    if out_shape.len() == 3 {
        e.g.node(
            "Transpose",
            "",
            &[&last],
            &["y"],
            &[Attr::Ints("perm", vec![0, 2, 3, 1])],
        );
    } else {
        e.g.node("Identity", "", &[&last], &["y"], &[]);
    }
    e.g.output("y", DataType::U8, &io_dims(out_shape));
    Ok(Emitted {
        bytes: e.g.into_model("lastmile", e.ms_domain),
        feeds: e.feeds,
    })
}

#[cfg(test)]
mod tests {
    #[test]
    fn ohwi_to_oihw_moves_channels_first() {
        // [1, 1, 2, 3]: x = 0..2, i = 0..3 → [1, 3, 1, 2].
        let w: Vec<i8> = (0..6).collect();
        let mut out = Vec::new();
        super::ohwi_to_oihw(&w, [1, 1, 2, 3], &mut out);
        assert_eq!(out, [0, 3, 1, 4, 2, 5]);
    }
}
