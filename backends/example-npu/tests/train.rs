//! A short QZO-FF run on the embedded digits through the example C plugin gives
//! byte-identical final weights to the reference backend, for 8w8a and 16w8a, training
//! every layer (every trainable tensor is uploaded again after every perturbation and
//! update, in the plugin's own layout) and only the head (the frozen prefix is uploaded once).

use lastmile_backend_cpu_ref::CpuRef;
use lastmile_backend_plugin::Plugin;
use lastmile_core::QuantModel;
use lastmile_core::backend::Backend;
use lastmile_core::quant::WeightBits;
use lastmile_core::{ptq, zoo};
use lastmile_data::{Dataset, Split, digits_split};
use lastmile_train::{Distribution, Estimator, Rounding, StepConfig, Trainer};

fn pixels(d: &Dataset) -> Vec<f32> {
    let mut v = vec![0f32; d.len() * d.sample_len()];
    for i in 0..d.len() {
        d.image_f32(i, &mut v[i * d.sample_len()..(i + 1) * d.sample_len()]);
    }
    v
}

fn digits_cnn(bits: WeightBits, train: &Dataset) -> QuantModel {
    let (topology, specs) = zoo::digits_cnn(10);
    let float = zoo::init_float(topology, specs, 5);
    let calib = pixels(train);
    ptq::quantize(&float, &calib[..256 * 64], 256, bits)
        .unwrap()
        .0
}

fn run(backend: &dyn Backend, mut model: QuantModel, head_only: bool, steps: usize) -> QuantModel {
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
    t.model()
}

#[test]
fn ten_steps_give_the_reference_weights_bit_for_bit() {
    let plugin = Plugin::load(lastmile_example_npu::PLUGIN).expect("the example plugin loads");
    let train = digits_split(Split::Train);
    for bits in [WeightBits::W8, WeightBits::W16] {
        let start = digits_cnn(bits, &train);
        for head_only in [false, true] {
            let want = run(&CpuRef, start.clone(), head_only, 10);
            assert_ne!(
                want.params,
                start.params,
                "{} head_only={head_only}: training must move weights",
                bits.scheme()
            );
            let got = run(&plugin, start.clone(), head_only, 10);
            assert!(
                got == want,
                "{} head_only={head_only}: weights trained through the C plugin differ from cpu-ref",
                bits.scheme()
            );
        }
    }
}
