//! Training through a backend gives the reference's weights: a short QZO-FF run (sign
//! SPSA, 2 Gaussian draws, stochastic rounding, seed 9) on the embedded digits trains a
//! PTQ-quantized `digits-cnn` on `cpu-ref` and on each backend, for 8w8a and 16w8a,
//! training every layer (every trainable tensor changes after every perturbation and
//! update) and only the head (the frozen prefix is prepared once). Bit-exact backends
//! must end with byte-identical weights.
//!
//! Needs the `training` feature (on by default).

use lastmile_backend_cpu_ref::CpuRef;
use lastmile_core::QuantModel;
use lastmile_core::backend::Backend;
use lastmile_core::quant::{ActQuant, WeightBits};
use lastmile_core::{ptq, zoo};
use lastmile_data::{Dataset, Split, digits_split};
use lastmile_train::{Distribution, Estimator, Rounding, StepConfig, Trainer};

/// Every image of `d` as `f32` pixels ([`Dataset::image_f32`]), sample after sample.
pub fn pixels(d: &Dataset) -> Vec<f32> {
    let mut v = vec![0f32; d.len() * d.sample_len()];
    for i in 0..d.len() {
        d.image_f32(i, &mut v[i * d.sample_len()..(i + 1) * d.sample_len()]);
    }
    v
}

/// Runs `steps` QZO-FF steps of `t` at learning rate `lr` on batches of `batch_size` images of
/// `train` (quantized with `q_in`), in a fresh order every epoch (epoch `e` shuffled with
/// seed `e`, as [`Dataset::batches`]), a short last batch included.
///
/// # Panics
///
/// If a step fails.
pub fn train_steps(
    t: &mut Trainer,
    train: &Dataset,
    q_in: ActQuant,
    batch_size: usize,
    steps: usize,
    lr: f64,
) {
    let len = train.sample_len();
    let x_all: Vec<i8> = pixels(train).iter().map(|&v| q_in.quantize(v)).collect();
    let mut s = 0;
    'outer: for epoch in 0.. {
        for batch in train.batches(batch_size, Some(epoch)) {
            if s == steps {
                break 'outer;
            }
            let x: Vec<i8> = batch
                .iter()
                .flat_map(|&i| x_all[i * len..(i + 1) * len].iter().copied())
                .collect();
            let y: Vec<u8> = batch.iter().map(|&i| train.labels[i]).collect();
            t.step(&x, &y, lr).unwrap();
            s += 1;
        }
    }
}

/// `digits-cnn` (10 classes, float init seed 5) PTQ-quantized at `bits` on 256 training
/// images of the embedded digits.
pub fn digits_cnn(bits: WeightBits) -> QuantModel {
    let train = digits_split(Split::Train);
    let (topology, specs) = zoo::digits_cnn(10);
    let float = zoo::init_float(topology, specs, 5);
    let calib = pixels(&train);
    ptq::quantize(&float, &calib[..256 * 64], 256, bits)
        .expect("digits-cnn quantizes")
        .0
}

/// `steps` QZO-FF steps of batch 32 on the embedded digits through `backend`, training
/// the head (`fc*`) or every layer; returns the trained model.
///
/// # Panics
///
/// If the trainer cannot be built or a step fails.
pub fn train_digits(
    backend: &dyn Backend,
    mut model: QuantModel,
    head_only: bool,
    steps: usize,
) -> QuantModel {
    let train = digits_split(Split::Train);
    if head_only {
        model.set_trainable(|s| s.name.starts_with("fc"));
    } else {
        model.set_trainable(|_| true);
    }
    let bits = model.weight_bits;
    let q_in = model.act[0];
    let cfg = StepConfig {
        seed: 9,
        draws: 2,
        estimator: Estimator::SignSpsa,
        distribution: Distribution::Gaussian,
        epsilon_lsb: if bits == WeightBits::W16 { 256 } else { 2 },
        lr: 0.0,
        rounding: Rounding::Stochastic,
        ..StepConfig::default()
    };
    let lr = if bits == WeightBits::W16 { 1000.0 } else { 8.0 };
    let mut t = Trainer::new(backend, model, cfg).unwrap();
    train_steps(&mut t, &train, q_in, 32, steps, lr);
    t.into_model()
}

/// For 8w8a and 16w8a, all layers and head only: trains `steps` steps on `cpu-ref`
/// (which must move the weights) and on each `(label, backend)`, and asserts the trained
/// models are identical.
///
/// # Panics
///
/// On the first difference, naming the width, the label and the training mode.
pub fn assert_identical_to_reference(backends: &[(&str, &dyn Backend)], steps: usize) {
    for bits in [WeightBits::W8, WeightBits::W16] {
        let start = digits_cnn(bits);
        for head_only in [false, true] {
            let want = train_digits(&CpuRef, start.clone(), head_only, steps);
            assert_ne!(
                want.params,
                start.params,
                "{} head_only={head_only}: training must move weights",
                bits.scheme()
            );
            for &(label, backend) in backends {
                let got = train_digits(backend, start.clone(), head_only, steps);
                assert!(
                    got == want,
                    "{} {label} head_only={head_only}: weights trained on {label} differ from cpu-ref",
                    bits.scheme()
                );
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn head_only_training_moves_only_the_head_and_repeats_exactly() {
        let start = digits_cnn(WeightBits::W8);
        let a = train_digits(&CpuRef, start.clone(), true, 3);
        let b = train_digits(&CpuRef, start.clone(), true, 3);
        assert!(a == b, "a run is a pure function of seed and data");
        for (p, q) in a.params.iter().zip(&start.params) {
            if !p.spec.name.starts_with("fc") {
                assert_eq!(p.data, q.data, "{} is frozen", p.spec.name);
            }
        }
        assert_identical_to_reference(&[("cpu-ref", &CpuRef)], 2);
    }
}
