//! QZO-FF on real data (sklearn's 8×8 digits, embedded): accuracy must rise well above
//! the starting point, using only forward calls of the reference backend.

use lastmile_backend_cpu_ref::CpuRef;
use lastmile_core::QuantModel;
use lastmile_core::graph::{TopologyBuilder, ValueId};
use lastmile_core::model::{FloatModel, FloatParam};
use lastmile_core::ptq;
use lastmile_core::quant::{Activation, WeightBits};
use lastmile_data::{Dataset, Split, digits_split};
use lastmile_train::{Distribution, Estimator, Rounding, StepConfig, Trainer};

fn pixels(d: &Dataset) -> Vec<f32> {
    let mut v = vec![0f32; d.len() * d.sample_len()];
    for i in 0..d.len() {
        d.image_f32(i, &mut v[i * d.sample_len()..(i + 1) * d.sample_len()]);
    }
    v
}

/// A small MLP with seeded random weights, quantized on training images; the head is trainable.
fn random_mlp(bits: WeightBits, train: &Dataset) -> QuantModel {
    let mut b = TopologyBuilder::new(&[8, 8, 1]);
    let f = b.node("flatten", lastmile_core::Op::Flatten, &[ValueId::INPUT]);
    let h = b.linear("hidden", f, 64, 32, Activation::Relu);
    b.linear("head", h, 32, 10, Activation::None);
    let (topology, specs) = b.finish();
    let mut state = 12345u64;
    let mut next = || {
        state = state
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        ((state >> 40) as f32 / (1u64 << 24) as f32) * 2.0 - 1.0
    };
    let params = specs
        .into_iter()
        .map(|spec| {
            let fan_in = spec.shape.get(1).copied().unwrap_or(1) as f32;
            let data = (0..spec.numel())
                .map(|_| {
                    if spec.shape.len() == 2 {
                        next() * (3.0 / fan_in).sqrt()
                    } else {
                        0.0
                    }
                })
                .collect();
            FloatParam { spec, data }
        })
        .collect();
    let float = FloatModel {
        topology,
        params,
        metadata: Default::default(),
    };
    let calib = pixels(train);
    let (mut q, _) = ptq::quantize(&float, &calib[..256 * 64], 256, bits).unwrap();
    q.set_trainable(|s| s.name.starts_with("head"));
    q
}

fn accuracy(t: &mut Trainer, d: &Dataset, quant: lastmile_core::ActQuant) -> f64 {
    let x: Vec<i8> = pixels(d).iter().map(|&v| quant.quantize(v)).collect();
    let (_, correct) = t.evaluate(&x, &d.labels).unwrap();
    correct as f64 / d.len() as f64
}

fn train(bits: WeightBits, cfg: StepConfig, steps: usize, lr: f64) -> (f64, f64, QuantModel) {
    let train = digits_split(Split::Train);
    let test = digits_split(Split::Test);
    let model = random_mlp(bits, &train);
    let q_in = model.act[0];
    let mut t = Trainer::new(&CpuRef, model, cfg).unwrap();
    assert_eq!(
        t.prefix_nodes(),
        2,
        "flatten + hidden are frozen and run once per batch"
    );
    let before = accuracy(&mut t, &test, q_in);
    let x_all: Vec<i8> = pixels(&train).iter().map(|&v| q_in.quantize(v)).collect();
    let mut s = 0;
    'outer: for epoch in 0.. {
        for batch in train.batches(32, Some(epoch)) {
            if s == steps {
                break 'outer;
            }
            let x: Vec<i8> = batch
                .iter()
                .flat_map(|&i| x_all[i * 64..(i + 1) * 64].iter().copied())
                .collect();
            let y: Vec<u8> = batch.iter().map(|&i| train.labels[i]).collect();
            t.step(&x, &y, lr).unwrap();
            s += 1;
        }
    }
    let after = accuracy(&mut t, &test, q_in);
    (before, after, t.into_model())
}

// ε and lr in weight LSBs: 512/32767 ≈ 1.6 % and 2000/32767 ≈ 6 % of the largest code.
const EPS: u32 = 512;
const LR: f64 = 2000.0;

fn cfg(seed: u64) -> StepConfig {
    StepConfig {
        seed,
        draws: 3,
        estimator: Estimator::SignSpsa,
        distribution: Distribution::Gaussian,
        epsilon_lsb: EPS,
        lr: 0.0,
        rounding: Rounding::Nearest,
        ..StepConfig::default()
    }
}
#[test]
fn qzo_ff_16w8a_head_learns_digits() {
    let (before, after, _) = train(WeightBits::W16, cfg(1), 400, LR);
    eprintln!(
        "16w8a sign-3-SPSA: {:.1}% -> {:.1}%",
        before * 100.0,
        after * 100.0
    );
    // Seen: 6.1% -> 48.2% in 400 steps (2400 forwards of the head).
    assert!(after > before + 0.25, "accuracy {before} -> {after}");
}

#[test]
fn into_model_returns_the_weights_model_returns() {
    let train = digits_split(Split::Train);
    let start = random_mlp(WeightBits::W16, &train);
    let q_in = start.act[0];
    let mut t = Trainer::new(&CpuRef, start.clone(), cfg(5)).unwrap();
    let x: Vec<i8> = pixels(&train)[..32 * 64]
        .iter()
        .map(|&v| q_in.quantize(v))
        .collect();
    for _ in 0..5 {
        t.step(&x, &train.labels[..32], LR).unwrap();
    }
    let copied = t.model();
    let moved = t.into_model();
    assert_eq!(moved, copied);
    // The head (after a frozen prefix: suffix parameter i is model parameter i + 2) moved;
    // the frozen hidden layer did not.
    assert_ne!(
        moved.params[2..],
        start.params[2..],
        "training must move the head"
    );
    assert_eq!(
        moved.params[..2],
        start.params[..2],
        "the frozen prefix is untouched"
    );
}

#[test]
fn same_seed_same_trajectory_other_seed_other_weights() {
    let (_, _, a) = train(WeightBits::W16, cfg(7), 20, LR);
    let (_, _, b) = train(WeightBits::W16, cfg(7), 20, LR);
    let (_, _, c) = train(WeightBits::W16, cfg(8), 20, LR);
    assert_eq!(a, b, "a run is a pure function of seed and data");
    assert_ne!(a, c);
}

#[test]
fn every_estimator_variant_runs_and_moves_weights() {
    for (estimator, rounding, rho, dist) in [
        (
            Estimator::Spsa,
            Rounding::Nearest,
            None,
            Distribution::Rademacher,
        ),
        (
            Estimator::SignSpsa,
            Rounding::Stochastic,
            None,
            Distribution::IntGaussian,
        ),
        (
            Estimator::SignSpsa,
            Rounding::Nearest,
            Some(256.0),
            Distribution::Gaussian,
        ),
    ] {
        let c = StepConfig {
            estimator,
            rounding,
            sharpness_rho: rho,
            distribution: dist,
            ..cfg(3)
        };
        let lr = if estimator == Estimator::Spsa {
            5e7
        } else {
            LR
        };
        let (_, _, trained) = train(WeightBits::W16, c.clone(), 10, lr);
        let (_, _, untouched) = train(WeightBits::W16, c, 0, lr);
        assert_ne!(
            trained, untouched,
            "{estimator:?} {rounding:?} {rho:?} {dist:?}"
        );
    }
}

#[test]
fn ff_fp32_and_fp16_learn_like_the_fixed_point_path() {
    use lastmile_train::float::{FloatPrecision, FloatTrainer};
    let train = digits_split(Split::Train);
    let test = digits_split(Split::Test);
    // The float model behind random_mlp: dequantizing the 16w8a model gives it back.
    let mut float = lastmile_core::ptq::dequantize(&random_mlp(WeightBits::W16, &train));
    for p in &mut float.params {
        p.spec.trainable = p.spec.name.starts_with("head");
    }
    let x_test = pixels(&test);
    let x_train = pixels(&train);
    for precision in [FloatPrecision::F32, FloatPrecision::F16] {
        let mut t = FloatTrainer::new(float.clone(), cfg(1), precision).unwrap();
        let before = t.evaluate(&x_test, &test.labels).unwrap().1 as f64 / test.len() as f64;
        let mut s = 0;
        'outer: for epoch in 0.. {
            for batch in train.batches(32, Some(epoch)) {
                if s == 400 {
                    break 'outer;
                }
                let x: Vec<f32> = batch
                    .iter()
                    .flat_map(|&i| x_train[i * 64..(i + 1) * 64].iter().copied())
                    .collect();
                let y: Vec<u8> = batch.iter().map(|&i| train.labels[i]).collect();
                t.step(&x, &y, LR).unwrap();
                s += 1;
            }
        }
        let after = t.evaluate(&x_test, &test.labels).unwrap().1 as f64 / test.len() as f64;
        eprintln!(
            "FF {precision:?} sign-3-SPSA: {:.1}% -> {:.1}%",
            before * 100.0,
            after * 100.0
        );
        assert!(after > before + 0.25, "{precision:?}: {before} -> {after}");
    }
}

fn momentum_cfg(seed: u64, beta: f64, mix: f64) -> StepConfig {
    StepConfig {
        momentum: Some(lastmile_train::MomentumConfig { beta, mix }),
        ..cfg(seed)
    }
}

#[test]
fn momentum_guided_sampling_learns_digits() {
    let (before, plain, _) = train(WeightBits::W16, cfg(1), 200, LR);
    let (_, guided, _) = train(WeightBits::W16, momentum_cfg(1, 0.5, 0.25), 200, LR);
    eprintln!(
        "16w8a sign-3-SPSA, 200 steps: {:.1}% -> plain {:.1}%, momentum-guided {:.1}%",
        before * 100.0,
        plain * 100.0,
        guided * 100.0
    );
    // Seen: 6.1% -> plain 27.9%, guided 34.0%. Over seeds 1-5 at 400 steps guided
    // (β 0.5, μ 0.25) averaged 46.4% vs plain 43.7%: within seed noise, not a clear win here.
    assert!(guided > before + 0.2, "accuracy {before} -> {guided}");
}

#[test]
fn momentum_runs_are_a_pure_function_of_the_seed() {
    let (_, _, a) = train(WeightBits::W16, momentum_cfg(7, 0.5, 0.25), 20, LR);
    let (_, _, b) = train(WeightBits::W16, momentum_cfg(7, 0.5, 0.25), 20, LR);
    let (_, _, plain) = train(WeightBits::W16, cfg(7), 20, LR);
    assert_eq!(a, b, "same seed, same momentum: same weights");
    assert_ne!(a, plain, "the momentum changes the trajectory");
}
