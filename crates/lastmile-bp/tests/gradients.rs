//! candle's backward through the translated graph equals central finite
//! differences (in f64) for every parameter and the input, on the every-op model
//! and on random models: strided/dilated/grouped convs, padded pools with
//! kernel ≠ stride, per-axis strides all differentiate correctly.

mod common;

use common::{Rng, every_op_model, random_inputs, random_model};
use lastmile_bp::candle::{DType, Tensor, Var};
use lastmile_bp::{BpModel, BpParam, Scope};
use lastmile_core::model::FloatModel;

/// Loss = Σ out · r for a fixed random r (a smooth functional of the output).
fn loss(bp: &BpModel, x: &Tensor, r: &Tensor) -> Tensor {
    (bp.forward(x).unwrap() * r).unwrap().sum_all().unwrap()
}

fn scalar(t: &Tensor) -> f64 {
    t.to_scalar::<f64>().unwrap()
}

/// Checks up to `per_tensor` elements of every gradient against finite differences.
fn check(model: &mut FloatModel, seed: u64, per_tensor: usize) {
    check_at(model, None, seed, per_tensor)
}

/// [`check`] at a given input (2 samples) or a random one. The input gradient
/// is checked only for a random input: a given one may sit on tied maxima,
/// where moving one input breaks the tie and the finite difference is one-sided.
fn check_at(model: &mut FloatModel, input: Option<Vec<f32>>, seed: u64, per_tensor: usize) {
    let with_input = input.is_none();
    Scope::All.apply(model);
    let n = 2;
    let bp = BpModel::with_dtype(model, DType::F64).unwrap();
    let input = input.unwrap_or_else(|| random_inputs(model, n, seed));
    let x = Var::from_tensor(&bp.input_tensor(&input, n).unwrap()).unwrap();
    let out_dims = bp.forward(x.as_tensor()).unwrap().dims().to_vec();
    let mut rng = Rng::new(seed ^ 0xABCD);
    let rv: Vec<f64> = (0..out_dims.iter().product::<usize>())
        .map(|_| rng.f32(-1.0, 1.0) as f64)
        .collect();
    let r = Tensor::from_vec(rv, out_dims.as_slice(), bp.device()).unwrap();
    let grads = loss(&bp, x.as_tensor(), &r).backward().unwrap();

    let mut vars: Vec<(String, Var)> = bp
        .params()
        .iter()
        .zip(&model.params)
        .map(|(p, fp)| match p {
            BpParam::Trainable(v) => (fp.spec.name.clone(), v.clone()),
            BpParam::Frozen(_) => unreachable!("Scope::All"),
        })
        .collect();
    if with_input {
        vars.push(("input".into(), x.clone()));
    }
    let eps = 1e-6;
    for (name, var) in &vars {
        let g = grads
            .get(var.as_tensor())
            .unwrap_or_else(|| panic!("no gradient for {name}"))
            .flatten_all()
            .unwrap()
            .to_vec1::<f64>()
            .unwrap();
        let base = var.as_tensor().copy().unwrap();
        let flat = base.flatten_all().unwrap().to_vec1::<f64>().unwrap();
        let picks: Vec<usize> = if flat.len() <= per_tensor {
            (0..flat.len()).collect()
        } else {
            (0..per_tensor)
                .map(|_| rng.range(0, flat.len() - 1))
                .collect()
        };
        for i in picks {
            let eval = |delta: f64| {
                let mut v = flat.clone();
                v[i] += delta;
                var.set(&Tensor::from_vec(v, base.dims(), bp.device()).unwrap())
                    .unwrap();
                scalar(&loss(&bp, x.as_tensor(), &r))
            };
            let fd = (eval(eps) - eval(-eps)) / (2.0 * eps);
            var.set(&base).unwrap();
            let tol = 1e-6 + 1e-5 * fd.abs().max(g[i].abs());
            assert!(
                (fd - g[i]).abs() <= tol,
                "seed {seed}: d loss / d {name}[{i}]: backward {} vs finite difference {fd}",
                g[i]
            );
        }
    }
}

#[test]
fn every_op_model_gradients_match_finite_differences() {
    for seed in 0..3 {
        check(&mut every_op_model(seed), seed, 40);
    }
}

#[test]
fn random_model_gradients_match_finite_differences() {
    for seed in 0..64 {
        check(&mut random_model(seed), seed, 12);
    }
}

#[test]
fn frozen_parameters_get_no_gradient() {
    let mut m = every_op_model(1);
    Scope::Head.apply(&mut m);
    let trainable: Vec<&str> = m
        .params
        .iter()
        .filter(|p| p.spec.trainable)
        .map(|p| p.spec.name.as_str())
        .collect();
    let last = m.topology.nodes.last().unwrap().name.clone();
    assert!(!trainable.is_empty());
    assert!(trainable.iter().all(|n| n.starts_with(&format!("{last}."))));
    let bp = BpModel::new(&m).unwrap();
    assert_eq!(bp.trainable_vars().len(), trainable.len());
    let x = bp.input_tensor(&random_inputs(&m, 2, 1), 2).unwrap();
    let grads = bp
        .forward(&x)
        .unwrap()
        .sum_all()
        .unwrap()
        .backward()
        .unwrap();
    for p in bp.params() {
        assert_eq!(grads.get(p.tensor()).is_some(), p.is_trainable());
    }
}

/// Each op alone (after a 1×1 conv so there is a parameter below it), so a
/// failure names the op: conv strides / dilations / padding / groups, and both
/// pools with kernel = stride and kernel ≠ stride, with and without padding.
#[test]
fn single_op_gradients_match_finite_differences() {
    use lastmile_core::graph::Pool2d;
    use lastmile_core::{Activation, ValueId};
    type ConvCase = ([usize; 2], [usize; 2], [usize; 4], [usize; 2], usize);
    let convs: [ConvCase; 9] = [
        ([3, 3], [1, 1], [0; 4], [1, 1], 1),
        ([3, 3], [2, 2], [0; 4], [1, 1], 1),
        ([3, 3], [2, 1], [0; 4], [1, 1], 1),
        ([3, 2], [1, 2], [0; 4], [1, 2], 1),
        ([1, 2], [2, 1], [0; 4], [1, 1], 1),
        ([3, 3], [1, 1], [1, 0, 2, 1], [1, 1], 1),
        ([3, 3], [1, 1], [0; 4], [1, 1], 2),
        ([3, 3], [2, 2], [1; 4], [2, 2], 2),
        ([2, 3], [1, 2], [2, 1, 0, 1], [2, 1], 2),
    ];
    for (case, (k, s, p, d, g)) in convs.into_iter().enumerate() {
        let mut gg = common::Gen::new(vec![9, 8, 2]);
        gg.conv(ValueId::INPUT, 4, k, s, p, d, g, true, Activation::None)
            .unwrap_or_else(|| panic!("conv case {case} does not validate"));
        check(&mut gg.finish(&mut Rng::new(case as u64)), case as u64, 60);
    }
    type PoolCase = (bool, [usize; 2], [usize; 2], [usize; 4]);
    let pools: [PoolCase; 8] = [
        (true, [2, 2], [2, 2], [0; 4]),
        (true, [2, 2], [2, 2], [1, 1, 1, 0]),
        (true, [3, 2], [2, 1], [0; 4]),
        (true, [3, 2], [2, 1], [1, 1, 2, 0]),
        (false, [2, 2], [2, 2], [0; 4]),
        (false, [2, 2], [2, 2], [1, 1, 1, 0]),
        (false, [3, 2], [2, 1], [0; 4]),
        (false, [3, 2], [2, 1], [1, 1, 2, 0]),
    ];
    for (case, (max, kernel, stride, padding)) in pools.into_iter().enumerate() {
        let mut gg = common::Gen::new(vec![9, 8, 2]);
        let c = gg
            .conv(
                ValueId::INPUT,
                2,
                [1, 1],
                [1, 1],
                [0; 4],
                [1, 1],
                1,
                true,
                Activation::None,
            )
            .unwrap();
        let pool = Pool2d {
            kernel,
            stride,
            padding,
        };
        gg.pool(c, max, pool)
            .unwrap_or_else(|| panic!("pool case {case} does not validate"));
        check(&mut gg.finish(&mut Rng::new(case as u64)), case as u64, 60);
    }
}

/// Max pooling over tied maxima (equal conv outputs over a blank input region)
/// must pass the gradient once, not once per tied element.
#[test]
fn max_pool_ties_pass_the_gradient_once() {
    use lastmile_core::graph::{Op, Pool2d};
    use lastmile_core::{Activation, ValueId};
    let mut g = common::Gen::new(vec![6, 6, 1]);
    let c = g
        .conv(
            ValueId::INPUT,
            3,
            [3, 3],
            [1, 1],
            [1; 4],
            [1, 1],
            1,
            true,
            Activation::Relu,
        )
        .unwrap();
    let p = g
        .pool(
            c,
            true,
            Pool2d {
                kernel: [2, 2],
                stride: [2, 2],
                padding: [0; 4],
            },
        )
        .unwrap();
    let f = g.simple(Op::Flatten, &[p]).unwrap();
    g.linear(f, 4, true, Activation::None).unwrap();
    let mut m = g.finish(&mut Rng::new(9));
    m.params[1].data = vec![0.3, 0.5, 0.7]; // positive biases: relu(bias) over blank regions
    // The top-left 4×4 of the image is blank, so many 2×2 windows are all equal.
    let mut x = random_inputs(&m, 2, 9);
    for s in 0..2 {
        for y in 0..4 {
            for xx in 0..4 {
                x[s * 36 + y * 6 + xx] = 0.0;
            }
        }
    }
    check_at(&mut m, Some(x), 9, 100);
}
