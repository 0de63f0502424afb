//! Deliberately broken plugins each give a clear error naming the library and the problem,
//! and loading them disturbs nothing: the working plugin and the reference still run.

use lastmile_backend_cpu_ref::CpuRef;
use lastmile_backend_plugin::Plugin;
use lastmile_core::backend::{Backend, BackendError};
use lastmile_core::quant::WeightBits;
use lastmile_core::{QuantModel, ptq, zoo};
use lastmile_example_npu::{Broken, PLUGIN};

fn unavailable(path: &str) -> String {
    match Plugin::load(path) {
        Ok(p) => panic!("{path} loaded: {p:?}"),
        Err(BackendError::Unavailable(why)) => {
            assert!(
                why.contains(path),
                "the reason must name the library: {why}"
            );
            assert!(
                why.contains("to fix:"),
                "the reason must say how to fix it: {why}"
            );
            why
        }
        Err(e) => panic!("expected Unavailable, got {e:?}"),
    }
}

fn model() -> QuantModel {
    let (topology, specs) = zoo::digits_cnn(10);
    let float = zoo::init_float(topology, specs, 3);
    let calib: Vec<f32> = (0..64 * 64)
        .map(|i| ((i * 37) % 17) as f32 / 16.0)
        .collect();
    let mut q = ptq::quantize(&float, &calib, 64, WeightBits::W8).unwrap().0;
    q.set_trainable(|_| true);
    q
}

fn input(m: &QuantModel, n: usize) -> Vec<i8> {
    let len: usize = m.topology.input_shape.iter().product();
    (0..n * len).map(|i| ((i * 31) % 256) as u8 as i8).collect()
}

#[test]
fn wrong_abi_version() {
    let why = unavailable(Broken::AbiVersion.path());
    assert!(why.contains("ABI version 99"), "{why}");
    assert!(why.contains("speaks version 1"), "{why}");
    assert!(why.contains("lastmile_backend.h"), "{why}");
}

#[test]
fn missing_entry_point() {
    let why = unavailable(Broken::NoEntryPoint.path());
    assert!(why.contains("lastmile_backend_v1"), "{why}");
    assert!(why.contains("missing symbol"), "{why}");
    assert!(why.contains("nm -D"), "{why}");
}

#[test]
fn null_function_pointer() {
    let why = unavailable(Broken::NullForward.path());
    assert!(why.contains("NULL `forward` function pointer"), "{why}");
}

#[test]
fn struct_size_mismatch() {
    let why = unavailable(Broken::StructSize.path());
    assert!(why.contains("sizeof(LmNode)"), "{why}");
}

#[test]
fn create_returns_an_error_with_the_plugins_own_code_and_message() {
    let why = unavailable(Broken::CreateFails.path());
    assert!(why.contains("create failed with code 1002"), "{why}");
    assert!(why.contains("NPU_E_DEVICE"), "{why}");
    assert!(why.contains("/dev/example-npu0"), "{why}");
}

#[test]
fn missing_file() {
    let path = std::env::temp_dir().join("lastmile-no-such-plugin.so");
    let why = unavailable(path.to_str().unwrap());
    assert!(why.contains("no such file"), "{why}");
    assert!(why.contains("LASTMILE_PLUGINS"), "{why}");
}

#[test]
fn not_a_shared_object() {
    let dir = std::path::Path::new(env!("CARGO_TARGET_TMPDIR"));
    let path = dir.join("not-a-plugin.so");
    std::fs::write(&path, "this is a text file, not an ELF shared object\n").unwrap();
    let why = unavailable(path.to_str().unwrap());
    assert!(
        why.contains("cannot be loaded as a shared library"),
        "{why}"
    );
    assert!(why.contains("file "), "{why}");
}

#[test]
fn prepare_error_names_the_library_and_the_plugins_message() {
    let p = Plugin::load(Broken::PrepareFails.path()).expect("loads; only prepare fails");
    let m = model();
    match p.prepare(&m) {
        Err(BackendError::Engine(e)) => {
            assert!(e.contains(Broken::PrepareFails.path()), "{e}");
            assert!(e.contains("prepare failed with code 1003"), "{e}");
            assert!(e.contains("NPU_E_COMPILE"), "{e}");
            assert!(e.contains("conv1"), "the plugin names the node: {e}");
        }
        other => panic!("expected an engine error, got {other:?}"),
    }
    // The reference still runs the same model.
    assert!(CpuRef.prepare(&m).is_ok());
}

#[test]
fn forward_error_midway_is_reported_and_the_model_recovers_nothing_silently() {
    let p = Plugin::load(Broken::ForwardFails.path()).expect("loads; only forward #3 fails");
    let good = Plugin::load(PLUGIN).unwrap();
    let m = model();
    let x = input(&m, 4);
    let mut prepared = p.prepare(&m).unwrap();
    let mut reference = good.prepare(&m).unwrap();
    let (mut y, mut want) = (Vec::new(), Vec::new());
    reference.forward(&m.params, &x, 4, &mut want).unwrap();
    for _ in 0..2 {
        prepared.forward(&m.params, &x, 4, &mut y).unwrap();
        assert_eq!(y, want);
    }
    match prepared.forward(&m.params, &x, 4, &mut y) {
        Err(BackendError::Engine(e)) => {
            assert!(e.contains(Broken::ForwardFails.path()), "{e}");
            assert!(e.contains("forward failed with code 1006"), "{e}");
            assert!(e.contains("NPU_E_DEVICE_LOST"), "{e}");
        }
        other => panic!("expected an engine error, got {other:?}"),
    }
    // Other backends (and other plugin instances) keep working.
    reference.forward(&m.params, &x, 4, &mut y).unwrap();
    assert_eq!(y, want);
    assert_eq!(lastmile_backend_cpu_ref::run(&m, &x, 4).unwrap(), want);
}

#[test]
fn every_broken_variant_fails_cleanly_and_the_good_plugin_still_loads() {
    for b in Broken::ALL {
        let r = Plugin::load(b.path()).and_then(|p| {
            let m = model();
            let mut pm = p.prepare(&m)?;
            let mut y = Vec::new();
            for _ in 0..3 {
                pm.forward(&m.params, &input(&m, 2), 2, &mut y)?;
            }
            Ok(())
        });
        let e = r.expect_err(&format!("{b:?} must fail"));
        assert!(e.to_string().contains(b.path()), "{b:?}: {e}");
    }
    assert!(Plugin::load(PLUGIN).is_ok());
}
