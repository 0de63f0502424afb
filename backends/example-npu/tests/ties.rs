//! Requantization ties, which random scales almost never produce (see
//! [`lastmile_conformance::ties`]). The shared conformance suite did not catch a plugin
//! rounding half *down* even with 3000 cases per family, so the example plugin is checked
//! here directly against the reference: bit for bit, at 8w8a and 16w8a.

use lastmile_backend_plugin::Plugin;
use lastmile_conformance::ties;

#[test]
fn ties_round_half_up_like_the_reference() {
    let plugin = Plugin::load(lastmile_example_npu::PLUGIN).expect("the example plugin loads");
    let report = ties::probe(&plugin);
    assert_eq!(report.grid.len(), 6, "both widths, three multipliers");
    for case in report.cases() {
        assert!(
            case.ties() > 0,
            "{}: the probe must produce ties",
            case.label
        );
        assert_eq!(case.got, case.spec, "{}", case.label);
    }
}
