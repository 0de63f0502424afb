//! `lastmile backends` and `--backend` with FFI plugins: the example C plugin is listed with
//! its version, capabilities and exactness; broken plugins are listed as unavailable with the
//! library, the problem and the fix; nothing else is disturbed; a plugin found through
//! `LASTMILE_PLUGINS` or `--plugin` can run `eval` and agrees with the reference.

use std::path::PathBuf;
use std::process::Command;

use lastmile_core::quant::WeightBits;
use lastmile_core::{ptq, zoo};
use lastmile_example_npu::{Broken, PLUGIN};
use serde_json::Value;

fn bin() -> Command {
    let mut c = Command::new(env!("CARGO_BIN_EXE_lastmile"));
    c.env_remove("LASTMILE_PLUGINS").env_remove("LASTMILE_DATA");
    c
}

fn run(cmd: &mut Command) -> String {
    let out = cmd.output().expect("lastmile runs");
    assert!(
        out.status.success(),
        "{cmd:?} failed:\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap()
}

fn entries(cmd: &mut Command) -> Vec<Value> {
    let v: Value = serde_json::from_str(&run(cmd.args(["backends", "--json"]))).unwrap();
    v.as_array().unwrap().clone()
}

fn find<'a>(list: &'a [Value], name: &str) -> &'a Value {
    list.iter()
        .find(|e| e["name"] == name)
        .unwrap_or_else(|| panic!("{name} not listed in {list:#?}"))
}

#[test]
fn plugins_from_the_environment_are_listed_with_capabilities_or_why_not() {
    let paths = std::env::join_paths([
        PLUGIN,
        Broken::AbiVersion.path(),
        Broken::NoEntryPoint.path(),
        "/nonexistent/libvendor_npu.so",
    ])
    .unwrap();
    let list = entries(bin().env("LASTMILE_PLUGINS", &paths));

    let good = find(&list, "example-npu");
    assert_eq!(good["available"], true);
    assert_eq!(good["tier"], "1.0.0");
    assert_eq!(good["plugin"], PLUGIN);
    let caps = &good["capabilities"];
    assert_eq!(caps["exactness"]["kind"], "bit_exact");
    assert_eq!(caps["weight_updates"]["kind"], "uploads_every_forward");
    assert_eq!(caps["weight_bits"].as_array().unwrap().len(), 2);
    assert_eq!(caps["ops"].as_array().unwrap().len(), 8);

    let abi = find(&list, "lastmile_example_npu_bad_abi");
    assert_eq!(abi["available"], false);
    let why = abi["reason"].as_str().unwrap();
    assert!(
        why.contains(Broken::AbiVersion.path()) && why.contains("ABI version 99"),
        "{why}"
    );
    assert!(why.contains("to fix: rebuild the plugin"), "{why}");

    let sym = find(&list, "lastmile_example_npu_no_entry");
    let why = sym["reason"].as_str().unwrap();
    assert!(
        why.contains("missing symbol") && why.contains("lastmile_backend_v1"),
        "{why}"
    );

    let missing = find(&list, "vendor_npu");
    let why = missing["reason"].as_str().unwrap();
    assert!(
        why.contains("no such file") && why.contains("cargo build -p"),
        "{why}"
    );

    // The other backends are untouched.
    assert_eq!(find(&list, "cpu-ref")["available"], true);
}

#[test]
fn plugin_flag_adds_a_backend_and_the_text_table_explains_failures() {
    let text = run(bin()
        .args(["backends", "--plugin", PLUGIN, "--plugin"])
        .arg(Broken::CreateFails.path()));
    assert!(text.contains("example-npu"), "{text}");
    assert!(text.contains("bit-exact"), "{text}");
    assert!(text.contains("unavailable (see below)"), "{text}");
    assert!(
        text.contains("lastmile_example_npu_fail_create is unavailable: plugin ")
            && text.contains("NPU_E_DEVICE"),
        "{text}"
    );
    assert!(text.contains("cpu-ref"), "{text}");
}

fn q8_model(dir: &std::path::Path) -> PathBuf {
    let train = lastmile_data::digits_split(lastmile_data::Split::Train);
    let mut calib = vec![0f32; 128 * train.sample_len()];
    for i in 0..128 {
        train.image_f32(i, &mut calib[i * 64..(i + 1) * 64]);
    }
    let (topology, specs) = zoo::digits_cnn(10);
    let float = zoo::init_float(topology, specs, 1);
    let q = ptq::quantize(&float, &calib, 128, WeightBits::W8)
        .unwrap()
        .0;
    let path = dir.join("q8.lmm");
    lastmile_core::format::save_quant(&path, &q).unwrap();
    path
}

#[test]
fn eval_through_the_plugin_matches_the_reference() {
    let dir = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("backends_plugins");
    std::fs::create_dir_all(&dir).unwrap();
    let model = q8_model(&dir);
    let eval = |backend: &str, cmd: &mut Command| -> Value {
        let out = run(cmd
            .args([
                "eval",
                "--json",
                "--data",
                "digits",
                "--backend",
                backend,
                "--model",
            ])
            .arg(&model));
        serde_json::from_str(&out).unwrap()
    };
    let want = eval("cpu-ref", &mut bin());
    let via_flag = eval("example-npu", bin().args(["--plugin", PLUGIN]));
    let via_env = eval("example-npu", bin().env("LASTMILE_PLUGINS", PLUGIN));
    for got in [&via_flag, &via_env] {
        assert_eq!(got["backend"], "example-npu");
        assert_eq!(got["accuracy"], want["accuracy"]);
        assert_eq!(got["loss"], want["loss"]);
    }
    // A broken plugin named as --backend fails with the reason, not a crash.
    let out = bin()
        .args([
            "eval",
            "--data",
            "digits",
            "--backend",
            "lastmile_example_npu_bad_abi",
            "--plugin",
        ])
        .arg(Broken::AbiVersion.path())
        .arg("--model")
        .arg(&model)
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("ABI version 99") && err.contains(Broken::AbiVersion.path()),
        "{err}"
    );
}
