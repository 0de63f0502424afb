//! Random models of the IR for the equivalence and gradient tests.
#![allow(dead_code)]

use lastmile_core::graph::{Conv2d, Linear, Node, Op, ParamRole, ParamSpec, Pool2d, Topology};
use lastmile_core::model::{FloatModel, FloatParam};
use lastmile_core::quant::Activation;
use lastmile_core::zoo::SplitMix64;
use lastmile_core::{ParamId, ValueId};

/// A small seeded generator of ranges.
pub struct Rng(SplitMix64);

impl Rng {
    pub fn new(seed: u64) -> Self {
        Rng(SplitMix64::new(seed))
    }
    /// Uniform in `lo..=hi`.
    pub fn range(&mut self, lo: usize, hi: usize) -> usize {
        lo + (self.0.next_u64() % (hi - lo + 1) as u64) as usize
    }
    pub fn f32(&mut self, lo: f32, hi: f32) -> f32 {
        lo + (hi - lo) * self.0.next_f64() as f32
    }
    pub fn chance(&mut self, p: f64) -> bool {
        self.0.next_f64() < p
    }
    pub fn act(&mut self) -> Activation {
        match self.range(0, 2) {
            0 => Activation::None,
            1 => Activation::Relu,
            _ => Activation::Relu6,
        }
    }
}

/// Builds a graph op by op, keeping only ops whose shapes validate.
pub struct Gen {
    pub nodes: Vec<Node>,
    pub specs: Vec<ParamSpec>,
    pub input: Vec<usize>,
    pub shapes: Vec<Vec<usize>>,
}

impl Gen {
    pub fn new(input: Vec<usize>) -> Self {
        Gen {
            nodes: Vec::new(),
            specs: Vec::new(),
            shapes: vec![input.clone()],
            input,
        }
    }

    pub fn last(&self) -> ValueId {
        ValueId(self.nodes.len() as u32)
    }

    pub fn shape(&self, v: ValueId) -> &[usize] {
        &self.shapes[v.index()]
    }

    /// Tries to append `op` reading `inputs` with `new_specs`; returns the value or
    /// `None` (and rolls back) if the graph does not validate.
    pub fn try_push(
        &mut self,
        op: impl FnOnce(u32) -> Op,
        inputs: &[ValueId],
        new_specs: Vec<(Vec<usize>, ParamRole)>,
    ) -> Option<ValueId> {
        let base = self.specs.len() as u32;
        let i = self.nodes.len();
        for (k, (shape, role)) in new_specs.into_iter().enumerate() {
            self.specs.push(ParamSpec {
                name: format!("n{i}.p{k}"),
                shape,
                role,
                trainable: false,
            });
        }
        self.nodes.push(Node {
            name: format!("n{i}"),
            op: op(base),
            inputs: inputs.to_vec(),
        });
        let topo = Topology {
            input_shape: self.input.clone(),
            nodes: self.nodes.clone(),
        };
        match topo.infer_shapes(&self.specs) {
            Ok(s) => {
                self.shapes = s;
                Some(self.last())
            }
            Err(_) => {
                self.nodes.pop();
                self.specs.truncate(base as usize);
                None
            }
        }
    }

    #[allow(clippy::too_many_arguments)]
    pub fn conv(
        &mut self,
        x: ValueId,
        c_out: usize,
        kernel: [usize; 2],
        stride: [usize; 2],
        padding: [usize; 4],
        dilation: [usize; 2],
        groups: usize,
        bias: bool,
        activation: Activation,
    ) -> Option<ValueId> {
        let c_in = *self.shape(x).last()?;
        if groups == 0 || !c_in.is_multiple_of(groups) || !c_out.is_multiple_of(groups) {
            return None;
        }
        let mut specs = vec![(
            vec![c_out, kernel[0], kernel[1], c_in / groups],
            ParamRole::Weight,
        )];
        if bias {
            specs.push((vec![c_out], ParamRole::Bias));
        }
        self.try_push(
            |b| {
                Op::Conv2d(Conv2d {
                    weight: ParamId(b),
                    bias: bias.then_some(ParamId(b + 1)),
                    stride,
                    padding,
                    dilation,
                    groups,
                    activation,
                })
            },
            &[x],
            specs,
        )
    }

    pub fn linear(
        &mut self,
        x: ValueId,
        out: usize,
        bias: bool,
        activation: Activation,
    ) -> Option<ValueId> {
        let f = self.shape(x).iter().product::<usize>();
        let mut specs = vec![(vec![out, f], ParamRole::Weight)];
        if bias {
            specs.push((vec![out], ParamRole::Bias));
        }
        self.try_push(
            |b| {
                Op::Linear(Linear {
                    weight: ParamId(b),
                    bias: bias.then_some(ParamId(b + 1)),
                    activation,
                })
            },
            &[x],
            specs,
        )
    }

    pub fn pool(&mut self, x: ValueId, max: bool, p: Pool2d) -> Option<ValueId> {
        self.try_push(
            |_| if max { Op::MaxPool(p) } else { Op::AvgPool(p) },
            &[x],
            vec![],
        )
    }

    pub fn simple(&mut self, op: Op, inputs: &[ValueId]) -> Option<ValueId> {
        self.try_push(|_| op, inputs, vec![])
    }

    /// Random float values: weights `U(±1/√fan_in)·2`, biases `U(±0.5)`.
    pub fn finish(self, rng: &mut Rng) -> FloatModel {
        let params = self
            .specs
            .into_iter()
            .map(|spec| {
                let fan_in = spec.shape.iter().skip(1).product::<usize>().max(1);
                let bound = match spec.role {
                    ParamRole::Weight => 2.0 / (fan_in as f32).sqrt(),
                    ParamRole::Bias => 0.5,
                };
                let data = (0..spec.numel()).map(|_| rng.f32(-bound, bound)).collect();
                FloatParam { spec, data }
            })
            .collect();
        let m = FloatModel {
            topology: Topology {
                input_shape: self.input,
                nodes: self.nodes,
            },
            params,
            metadata: Default::default(),
        };
        m.validate().expect("generated model validates");
        m
    }
}

fn random_pad(rng: &mut Rng, max: usize) -> [usize; 4] {
    [
        rng.range(0, max),
        rng.range(0, max),
        rng.range(0, max),
        rng.range(0, max),
    ]
}

/// A random feature-map graph: a few random convs (strides, dilations, groups,
/// asymmetric padding, depthwise), pools with padding, residual adds, then
/// either a GAP / flatten + linear head or (sometimes) a feature-map output.
pub fn random_model(seed: u64) -> FloatModel {
    let mut rng = Rng::new(seed);
    if rng.chance(0.1) {
        // Vector input: an MLP.
        let f = rng.range(1, 24);
        let mut g = Gen::new(vec![f]);
        let mut x = ValueId::INPUT;
        for _ in 0..rng.range(1, 3) {
            let out = rng.range(1, 12);
            let (bias, act) = (rng.chance(0.8), rng.act());
            x = g.linear(x, out, bias, act).unwrap_or(x);
        }
        if g.nodes.is_empty() {
            g.linear(x, 3, true, Activation::None).unwrap();
        }
        return g.finish(&mut rng);
    }
    let (h, w, c) = (rng.range(3, 11), rng.range(3, 11), rng.range(1, 6));
    let mut g = Gen::new(vec![h, w, c]);
    let mut x = ValueId::INPUT;
    let ops = rng.range(2, 6);
    let mut tries = 0;
    while g.nodes.len() < ops && tries < 50 {
        tries += 1;
        let c_in = *g.shape(x).last().unwrap();
        let act = rng.act();
        let y = match rng.range(0, 5) {
            0 => {
                // Grouped (not depthwise) when c_in has a proper divisor > 1.
                let divisors: Vec<usize> = (2..c_in).filter(|&d| c_in.is_multiple_of(d)).collect();
                let groups = if !divisors.is_empty() && rng.chance(0.5) {
                    divisors[rng.range(0, divisors.len() - 1)]
                } else {
                    1
                };
                let c_out = groups * rng.range(1, 3);
                let kernel = [rng.range(1, 3), rng.range(1, 3)];
                let stride = if rng.chance(0.5) {
                    let s = rng.range(1, 2);
                    [s, s]
                } else {
                    [rng.range(1, 3), rng.range(1, 3)]
                };
                let dilation = if rng.chance(0.7) {
                    let d = rng.range(1, 2);
                    [d, d]
                } else {
                    [rng.range(1, 2), rng.range(1, 2)]
                };
                let pad = random_pad(&mut rng, 2);
                let bias = rng.chance(0.8);
                g.conv(x, c_out, kernel, stride, pad, dilation, groups, bias, act)
            }
            1 => {
                // Depthwise, multiplier 1 or 2.
                let mult = rng.range(1, 2);
                let k = [rng.range(1, 3), rng.range(1, 3)];
                let s = rng.range(1, 2);
                let pad = random_pad(&mut rng, 1);
                g.conv(x, c_in * mult, k, [s, s], pad, [1, 1], c_in, true, act)
            }
            2 | 3 => {
                let kernel = [rng.range(1, 3), rng.range(1, 3)];
                let stride = if rng.chance(0.4) {
                    kernel
                } else {
                    [rng.range(1, 3), rng.range(1, 3)]
                };
                let padding = [
                    rng.range(0, kernel[0] - 1),
                    rng.range(0, kernel[1] - 1),
                    rng.range(0, kernel[0] - 1),
                    rng.range(0, kernel[1] - 1),
                ];
                g.pool(
                    x,
                    rng.chance(0.5),
                    Pool2d {
                        kernel,
                        stride,
                        padding,
                    },
                )
            }
            _ => {
                // Residual: add(x, conv_same(x)).
                let k = rng.range(0, 1) * 2 + 1;
                let p = k / 2;
                let y = g.conv(x, c_in, [k, k], [1, 1], [p; 4], [1, 1], 1, true, act);
                y.and_then(|y| {
                    let a = rng.act();
                    g.simple(Op::Add { activation: a }, &[x, y])
                })
            }
        };
        if let Some(y) = y {
            x = y;
        }
    }
    match rng.range(0, 3) {
        0 => {
            let x = g.simple(Op::GlobalAvgPool, &[x]).unwrap();
            g.linear(x, rng.range(2, 6), rng.chance(0.8), Activation::None)
                .unwrap();
        }
        1 | 2 => {
            let x = g.simple(Op::Flatten, &[x]).unwrap();
            g.linear(x, rng.range(2, 6), rng.chance(0.8), Activation::None)
                .unwrap();
        }
        _ => {} // feature-map output
    }
    if g.nodes.is_empty() {
        g.simple(Op::GlobalAvgPool, &[x]).unwrap();
    }
    g.finish(&mut rng)
}

/// One deterministic model containing every op kind and every awkward case:
/// conv with per-axis stride and dilation, asymmetric padding, grouped and
/// depthwise convs, both pools with padding (kernel = stride and kernel ≠
/// stride), residual add, GAP and flatten, linear with and without bias.
pub fn every_op_model(seed: u64) -> FloatModel {
    let mut rng = Rng::new(seed);
    let mut g = Gen::new(vec![11, 9, 2]);
    let r = Activation::Relu;
    let x = ValueId::INPUT;
    let x = g
        .conv(x, 4, [3, 2], [2, 1], [1, 0, 2, 1], [1, 2], 2, true, r)
        .unwrap();
    let x = g
        .conv(
            x,
            6,
            [3, 3],
            [1, 1],
            [2, 1, 0, 1],
            [2, 2],
            2,
            false,
            Activation::Relu6,
        )
        .unwrap();
    let x = g
        .conv(
            x,
            6,
            [3, 3],
            [2, 2],
            [1, 1, 1, 1],
            [1, 1],
            6,
            true,
            Activation::None,
        )
        .unwrap();
    let m = g
        .pool(
            x,
            true,
            Pool2d {
                kernel: [3, 2],
                stride: [2, 1],
                padding: [1, 1, 2, 0],
            },
        )
        .unwrap();
    let a = g
        .pool(
            m,
            false,
            Pool2d {
                kernel: [2, 2],
                stride: [1, 2],
                padding: [1, 0, 1, 1],
            },
        )
        .unwrap();
    let a2 = g
        .pool(
            a,
            false,
            Pool2d {
                kernel: [2, 2],
                stride: [2, 2],
                padding: [1, 1, 0, 0],
            },
        )
        .unwrap();
    let m2 = g
        .pool(
            a2,
            true,
            Pool2d {
                kernel: [2, 2],
                stride: [2, 2],
                padding: [1, 1, 1, 1],
            },
        )
        .unwrap();
    let y = g
        .conv(
            m2,
            6,
            [3, 3],
            [1, 1],
            [1; 4],
            [1, 1],
            1,
            true,
            Activation::None,
        )
        .unwrap();
    let s = g.simple(Op::Add { activation: r }, &[m2, y]).unwrap();
    let gap = g.simple(Op::GlobalAvgPool, &[s]).unwrap();
    let f = g.simple(Op::Flatten, &[s]).unwrap();
    let l1 = g.linear(gap, 5, true, r).unwrap();
    let l2 = g.linear(f, 5, false, Activation::None).unwrap();
    let sum = g
        .simple(
            Op::Add {
                activation: Activation::None,
            },
            &[l1, l2],
        )
        .unwrap();
    g.linear(sum, 4, true, Activation::None).unwrap();
    g.finish(&mut rng)
}

/// `n` random inputs for `model`, uniform in `[-1, 1]`.
pub fn random_inputs(model: &FloatModel, n: usize, seed: u64) -> Vec<f32> {
    let mut rng = Rng::new(seed ^ 0x5EED);
    let per: usize = model.topology.input_shape.iter().product();
    (0..n * per).map(|_| rng.f32(-1.0, 1.0)).collect()
}
