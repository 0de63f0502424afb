//! A short QZO-FF run on the embedded digits through the example C plugin gives
//! byte-identical final weights to the reference backend, for 8w8a and 16w8a, training
//! every layer (every trainable tensor is uploaded again after every perturbation and
//! update, in the plugin's own layout) and only the head (the frozen prefix is uploaded
//! once): [`lastmile_conformance::training`].

use lastmile_backend_plugin::Plugin;

#[test]
fn ten_steps_give_the_reference_weights_bit_for_bit() {
    let plugin = Plugin::load(lastmile_example_npu::PLUGIN).expect("the example plugin loads");
    lastmile_conformance::training::assert_identical_to_reference(&[("the C plugin", &plugin)], 10);
}
