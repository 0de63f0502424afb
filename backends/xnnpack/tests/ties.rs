//! Where XNNPACK rounds differently from the spec: a requantization that lands
//! exactly on a tie (`acc · r = k + ½`). The spec rounds half up; this test records what
//! XNNPACK does, and checks the difference stays within the declared 1 LSB and only on
//! ties ([`lastmile_conformance::ties`]).

use lastmile_backend_xnnpack::{MAX_LSB, Xnnpack};
use lastmile_conformance::{load_engine, ties};

#[test]
fn requantization_ties() {
    let backend = match load_engine(Xnnpack::new(), "XNNPACK") {
        Ok(b) => b,
        Err(e) => {
            eprintln!("skipped: {e}");
            return;
        }
    };
    let report = ties::probe(&backend);
    eprint!("{report}");
    assert!(report.max_lsb() <= MAX_LSB as i32, "{report}");
    let off = report.off_tie_differences();
    assert!(off.is_empty(), "differences off ties: {off:#?}");
    // What XNNPACK (Debian 2022-02 snapshot) does: round half to even (the spec: half up).
    let s = &report.sweep;
    for (x, g) in s.input.iter().zip(&s.got) {
        assert_eq!(*g as f32, (*x as f32 / 2.0).round_ties_even(), "x = {x}");
    }
    assert_eq!(s.differing(), 5, "x = -7, -3, 1, 5, 9");
}
