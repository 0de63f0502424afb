//! BP on the embedded 8×8 digits with the zoo's `digits-cnn`: FT reaches high
//! accuracy, LP beats the untrained head, and the exported float model survives
//! 16w8a post-training quantization on the integer reference backend.

use lastmile_bp::{
    BpConfig, Budget, LrSchedule, Optimizer, Samples, Scope, dataset_inputs, evaluate,
    step_memory_estimate, train,
};
use lastmile_core::model::{FloatModel, QuantModel};
use lastmile_core::quant::WeightBits;
use lastmile_core::{ptq, zoo};
use lastmile_data::{Split, digits_split};

struct Digits {
    train_x: Vec<f32>,
    train_y: Vec<u8>,
    test_x: Vec<f32>,
    test_y: Vec<u8>,
}

fn digits() -> Digits {
    let train = digits_split(Split::Train);
    let test = digits_split(Split::Test);
    Digits {
        train_x: dataset_inputs(&train),
        train_y: train.labels.clone(),
        test_x: dataset_inputs(&test),
        test_y: test.labels.clone(),
    }
}

fn fresh_model(seed: u64) -> FloatModel {
    let (t, p) = zoo::digits_cnn(10);
    zoo::init_float(t, p, seed)
}

/// Accuracy of a quantized model on the integer reference backend.
fn quant_accuracy(q: &QuantModel, x: &[f32], y: &[u8]) -> f32 {
    let xq: Vec<i8> = x.iter().map(|&v| q.act[0].quantize(v)).collect();
    let logits = lastmile_backend_cpu_ref::run(q, &xq, y.len()).unwrap();
    let classes = logits.len() / y.len();
    let correct = logits
        .chunks_exact(classes)
        .zip(y)
        .filter(|(row, label)| {
            let best = (0..classes).max_by_key(|&c| (row[c], std::cmp::Reverse(c)));
            best == Some(usize::from(**label))
        })
        .count();
    correct as f32 / y.len() as f32
}

#[test]
fn ft_adamw_reaches_high_accuracy_and_survives_16w8a_ptq() {
    let d = digits();
    let mut model = fresh_model(1);
    Scope::All.apply(&mut model);
    let (_, acc0) = evaluate(&model, &d.test_x, &d.test_y).unwrap();
    let cfg = BpConfig {
        optimizer: Optimizer::adamw(1e-4),
        lr: 1e-2,
        schedule: LrSchedule::Cosine,
        budget: Budget::Epochs(6),
        batch_size: 32,
        seed: 7,
        log_every: Some(50),
    };
    let report = train(
        &mut model,
        Samples::new(&d.train_x, &d.train_y),
        Some(Samples::new(&d.test_x, &d.test_y)),
        &cfg,
    )
    .unwrap();
    for e in &report.epochs {
        println!(
            "epoch {}: train loss {:.4} acc {:.3}, test acc {:.3}",
            e.epoch,
            e.train.loss,
            e.train.accuracy,
            e.test.unwrap().accuracy
        );
    }
    let steps_per_epoch = d.train_y.len().div_ceil(32);
    assert_eq!(report.steps, 6 * steps_per_epoch);
    assert_eq!(report.epochs.len(), 6);
    assert_eq!(report.trainable_params, 3818);
    assert_eq!(report.log.len(), report.steps.div_ceil(50));
    assert!(report.epochs[5].train.loss < report.epochs[0].train.loss);

    // The export is what `evaluate` sees.
    let (_, acc) = evaluate(&model, &d.test_x, &d.test_y).unwrap();
    let final_test = report.final_test.unwrap().accuracy;
    assert!((acc - final_test).abs() < 1e-6, "{acc} vs {final_test}");
    println!(
        "FT AdamW: test accuracy {acc0:.3} → {acc:.3} in {:.2} s",
        report.seconds
    );
    assert!(acc >= 0.94, "FT test accuracy {acc}");

    // 16w8a PTQ (calibrated on 512 training images) keeps it within a few points.
    let calib = 512;
    let (q, _) = ptq::quantize(&model, &d.train_x[..calib * 64], calib, WeightBits::W16).unwrap();
    let qacc = quant_accuracy(&q, &d.test_x, &d.test_y);
    println!("16w8a PTQ on cpu-ref: test accuracy {qacc:.3}");
    assert!(qacc >= acc - 0.03, "16w8a accuracy {qacc} vs float {acc}");
}

#[test]
fn lp_improves_over_the_untrained_head() {
    let d = digits();
    let mut model = fresh_model(3);
    Scope::Head.apply(&mut model);
    let frozen_before: Vec<Vec<f32>> = model.params.iter().map(|p| p.data.clone()).collect();
    let (loss0, acc0) = evaluate(&model, &d.test_x, &d.test_y).unwrap();
    let cfg = BpConfig {
        optimizer: Optimizer::sgd_momentum(0.9),
        lr: 0.05,
        schedule: LrSchedule::Constant,
        budget: Budget::Epochs(3),
        batch_size: 32,
        seed: 11,
        log_every: None,
    };
    let report = train(
        &mut model,
        Samples::new(&d.train_x, &d.train_y),
        Some(Samples::new(&d.test_x, &d.test_y)),
        &cfg,
    )
    .unwrap();
    assert_eq!(report.trainable_params, 256 * 10 + 10);
    let (loss, acc) = evaluate(&model, &d.test_x, &d.test_y).unwrap();
    println!("LP SGD-momentum: test loss {loss0:.3} → {loss:.3}, accuracy {acc0:.3} → {acc:.3}");
    assert!(
        loss < loss0 && acc >= 0.85 && acc >= acc0 + 0.3,
        "LP: {acc0} → {acc}"
    );
    for (p, before) in model.params.iter().zip(&frozen_before) {
        assert_eq!(
            p.data != *before,
            p.spec.trainable,
            "{}: only the head may change",
            p.spec.name
        );
    }
}

#[test]
fn step_budget_and_same_seed_same_order() {
    let d = digits();
    let run = |seed: u64| {
        let mut m = fresh_model(5);
        Scope::All.apply(&mut m);
        let cfg = BpConfig {
            optimizer: Optimizer::sgd(),
            lr: 0.05,
            budget: Budget::Steps(60),
            batch_size: 16,
            seed,
            ..BpConfig::default()
        };
        let r = train(&mut m, Samples::new(&d.train_x, &d.train_y), None, &cfg).unwrap();
        (m, r)
    };
    let (a, ra) = run(1);
    let (b, _) = run(1);
    let (c, _) = run(2);
    assert_eq!(ra.steps, 60);
    assert_eq!(ra.epochs.len(), 1); // 1438 / 16 = 90 steps per epoch
    assert!(ra.final_test.is_none());
    let diff = |x: &FloatModel, y: &FloatModel| {
        x.params
            .iter()
            .zip(&y.params)
            .flat_map(|(p, q)| p.data.iter().zip(&q.data).map(|(u, v)| (u - v).abs()))
            .fold(0f32, f32::max)
    };
    assert!(diff(&a, &b) < 1e-4, "same seed, same trajectory");
    assert!(diff(&a, &c) > 1e-3, "another seed, another data order");
}

#[test]
fn bad_inputs_are_clear_errors() {
    let d = digits();
    let mut m = fresh_model(1);
    let cfg = BpConfig::default();
    let s = Samples::new(&d.train_x, &d.train_y);
    let e = train(&mut m, s, None, &cfg).unwrap_err().to_string();
    assert!(e.contains("no parameter is trainable"), "{e}");
    Scope::All.apply(&mut m);
    let e = train(
        &mut m,
        Samples::new(&d.train_x[1..], &d.train_y),
        None,
        &cfg,
    )
    .unwrap_err()
    .to_string();
    assert!(e.contains("training set"), "{e}");
    let bad = vec![10u8; d.train_y.len()];
    let e = train(&mut m, Samples::new(&d.train_x, &bad), None, &cfg)
        .unwrap_err()
        .to_string();
    assert!(e.contains("label #0 = 10"), "{e}");
    let zero = BpConfig {
        batch_size: 0,
        ..BpConfig::default()
    };
    assert!(train(&mut m, s, None, &zero).is_err());
}

#[test]
fn memory_estimate_of_digits_cnn() {
    let mut m = fresh_model(1);
    Scope::All.apply(&mut m);
    let ft = step_memory_estimate(&m, 32, &Optimizer::adamw(0.0)).unwrap();
    // Values: input 64, conv1 512, conv2 256, flatten 256, logits 10.
    assert_eq!(ft.saved_values, vec![0, 1, 2, 3, 4]);
    assert_eq!(ft.activations_saved, (64 + 512 + 256 + 256 + 10) * 32 * 4);
    assert_eq!(ft.weights, 3818 * 4);
    assert_eq!(ft.gradients, 3818 * 4);
    assert_eq!(ft.optimizer_state, 2 * 3818 * 4);
    assert_eq!(ft.activations_transient, 0, "FT saves every value");
    assert_eq!(ft.total(), 3818 * 16 + 1098 * 128);

    Scope::Head.apply(&mut m);
    let lp = step_memory_estimate(&m, 32, &Optimizer::sgd_momentum(0.9)).unwrap();
    assert_eq!(lp.saved_values, vec![3, 4]);
    assert_eq!(lp.activations_saved, (256 + 10) * 32 * 4);
    // The frozen backbone still runs forward: its peak is conv1's output (512) and conv2's
    // (256) alive together while conv2 runs; 768 − 266 saved floats per sample on top.
    assert_eq!(lp.activations_transient, (512 + 256 - 266) * 32 * 4);
    assert_eq!(
        lp.total(),
        3818 * 4 + 2570 * 8 + 768 * 32 * 4,
        "weights + grads + momentum + the forward peak"
    );
    assert!(lp.total() < ft.total());
    assert_eq!(lp.gradients, 2570 * 4);
    assert_eq!(lp.optimizer_state, 2570 * 4);
    let plain = step_memory_estimate(&m, 32, &Optimizer::sgd()).unwrap();
    assert_eq!(plain.optimizer_state, 0);
}
