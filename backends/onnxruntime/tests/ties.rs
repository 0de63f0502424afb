//! Where ONNX Runtime rounds differently from the spec: a requantization that lands
//! exactly on a tie (`acc · r = k + ½`). The spec rounds half up; this test records what
//! ORT does, and checks the difference stays within the declared 1 LSB.

use lastmile_backend_onnxruntime::{MAX_LSB, OnnxRuntime};
use lastmile_core::backend::Backend;
use lastmile_core::graph::{TopologyBuilder, ValueId};
use lastmile_core::model::{QData, QParam};
use lastmile_core::quant::{ActQuant, Activation, WeightBits};

#[test]
fn requantization_ties() {
    let backend = match OnnxRuntime::new() {
        Ok(b) => b,
        Err(e) if std::env::var("LASTMILE_REQUIRE_ENGINES").is_ok_and(|v| v == "1") => {
            panic!("LASTMILE_REQUIRE_ENGINES=1 but ONNX Runtime is unavailable: {e}")
        }
        Err(e) => {
            eprintln!("skipped: {e}");
            return;
        }
    };
    // y = x · 1 with r = s_in·s_w/s_out = 0.5: odd x lands on a tie.
    let mut b = TopologyBuilder::new(&[1]);
    b.linear("fc", ValueId::INPUT, 1, 1, Activation::None);
    let (topology, specs) = b.finish();
    let params: Vec<QParam> = specs
        .into_iter()
        .map(|spec| {
            let (data, scales) = match spec.role {
                lastmile_core::ParamRole::Weight => (QData::I8(vec![1]), vec![0.5]),
                lastmile_core::ParamRole::Bias => (QData::I32(vec![0]), vec![]),
            };
            QParam { spec, data, scales }
        })
        .collect();
    let q = ActQuant::new(1.0, 0).unwrap();
    let model = lastmile_core::QuantModel {
        topology,
        weight_bits: WeightBits::W8,
        params,
        act: vec![q, q],
        metadata: Default::default(),
    };
    let input: Vec<i8> = (-9..=9).collect();
    let n = input.len();
    let want = lastmile_backend_cpu_ref::run(&model, &input, n).unwrap();
    let mut p = backend.prepare(&model).unwrap();
    let mut got = Vec::new();
    p.forward(&model.params, &input, n, &mut got).unwrap();
    let mut differ = 0;
    for ((x, w), g) in input.iter().zip(&want).zip(&got) {
        eprintln!(
            "x = {x:>3}: x/2 = {:>5}  spec {w:>3}  onnxruntime {g:>3}",
            *x as f32 / 2.0
        );
        assert!((*w as i32 - *g as i32).abs() <= MAX_LSB as i32);
        // What ORT 1.32 does: round half to even (the spec: half up).
        assert_eq!(*g as f32, (*x as f32 / 2.0).round_ties_even(), "x = {x}");
        differ += (w != g) as usize;
    }
    eprintln!("{differ} of {n} codes differ (the ties whose half-up and half-even results differ)");
    assert_eq!(differ, 5, "x = -7, -3, 1, 5, 9");
}
