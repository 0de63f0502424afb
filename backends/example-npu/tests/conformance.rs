//! The shared conformance suite on the example C plugin, through the loader: every op
//! family at 8w8a and 16w8a, bit for bit against the reference (it declares `BitExact`),
//! the weight-update contract (its weights live in its own OIHW layout and must be
//! uploaded after every change) and bad input.

use lastmile_backend_plugin::Plugin;

lastmile_conformance::conformance_suite!(
    Plugin::load(lastmile_example_npu::PLUGIN).expect("the example plugin must load")
);
