//! A short QZO-FF run on the embedded digits gives byte-identical final weights on
//! `cpu-ref` and on every x86 tier this CPU supports, for 8w8a and 16w8a, training every
//! layer of a CNN (conv, conv, linear: the packed GEMM path with per-forward re-packing)
//! and, separately, only the head (frozen prefix packed once):
//! [`lastmile_conformance::training`].

use lastmile_backend_x86::{Tier, X86};
use lastmile_core::backend::Backend;

#[test]
fn twenty_steps_give_identical_weights_on_every_tier() {
    let mut backends = Vec::new();
    for tier in X86::available_tiers() {
        for threads in [1, 2] {
            if threads == 2 && tier == Tier::Scalar {
                continue;
            }
            let b = X86::with_tier(tier).unwrap().with_threads(threads);
            backends.push((format!("{tier} threads={threads}"), b));
        }
    }
    let backends: Vec<(&str, &dyn Backend)> = backends
        .iter()
        .map(|(label, b)| (label.as_str(), b as &dyn Backend))
        .collect();
    lastmile_conformance::training::assert_identical_to_reference(&backends, 20);
}
