//! A full QZO-FF step must never allocate anything the size of the trainable weights:
//! z is regenerated, the update is fused with that regeneration, and the perturbation is
//! applied in place. Measured with the counting allocator, so the test fails the day
//! someone adds a gradient buffer.

use lastmile_backend_cpu_ref::CpuRef;
use lastmile_core::graph::{TopologyBuilder, ValueId};
use lastmile_core::model::{FloatModel, FloatParam};
use lastmile_core::ptq;
use lastmile_core::quant::{Activation, WeightBits};
use lastmile_memory::{CountingAlloc, measure, trainable_bytes};
use lastmile_train::{MomentumConfig, StepConfig, Trainer};

#[global_allocator]
static ALLOC: CountingAlloc = CountingAlloc;

#[test]
fn a_step_allocates_far_less_than_the_trainable_weights() {
    // 128 → 512 → 10 MLP, 16w8a, everything trainable: 71 k weights = 142 kB.
    let mut b = TopologyBuilder::new(&[128]);
    let h = b.linear("fc1", ValueId::INPUT, 128, 512, Activation::Relu);
    b.linear("fc2", h, 512, 10, Activation::None);
    let (topology, specs) = b.finish();
    let mut s = 1u64;
    let params = specs
        .into_iter()
        .map(|spec| {
            let data = (0..spec.numel())
                .map(|_| {
                    s = s.wrapping_mul(6364136223846793005).wrapping_add(1);
                    ((s >> 40) as f32 / (1 << 24) as f32 - 0.5) * 0.2
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
    let calib: Vec<f32> = (0..16 * 128).map(|i| (i % 17) as f32 / 17.0).collect();
    let (mut q, _) = ptq::quantize(&float, &calib, 16, WeightBits::W16).unwrap();
    q.set_trainable(|_| true);
    let weights = trainable_bytes(&q);
    let elements = q.num_trainable();
    assert!(weights > 140_000);

    // Plain, then momentum-guided: the momentum buffer (2 B per trainable element) is made
    // once by `Trainer::new`; the step itself must stay as small either way.
    for momentum in [
        None,
        Some(MomentumConfig {
            beta: 0.5,
            mix: 0.25,
        }),
    ] {
        let cfg = StepConfig {
            draws: 3,
            epsilon_lsb: 64,
            momentum,
            ..StepConfig::default()
        };
        let (t, setup) = measure(|| Trainer::new(&CpuRef, q.clone(), cfg).unwrap());
        let mut t = t;
        if momentum.is_some() {
            let buffer = t.momentum_state().unwrap().len() * 2;
            assert_eq!(buffer, 2 * elements, "one i16 per trainable element");
            assert!(setup.peak >= buffer);
        }
        let x: Vec<i8> = (0..8 * 128).map(|i| (i % 251) as i8).collect();
        let y: Vec<u8> = (0..8).map(|i| (i % 10) as u8).collect();
        t.step(&x, &y, 100.0).unwrap(); // warm-up: buffers reach their steady size

        assert!(lastmile_memory::is_counting());
        let (report, usage) = measure(|| t.step(&x, &y, 100.0).unwrap());
        assert_eq!(report.forwards, 6);
        assert!(report.update.changed > 0, "the step must change weights");
        eprintln!(
            "momentum {momentum:?}: trainable {weights} B; step: peak +{} B, largest allocation {} B, {} allocations",
            usage.peak, usage.largest, usage.allocations
        );
        assert!(
            usage.largest < weights / 16,
            "an allocation of {} B in a step with {weights} B of trainable weights",
            usage.largest
        );
        assert!(
            usage.peak < weights / 16,
            "step peak {} B vs {weights} B of weights",
            usage.peak
        );
    }
}
