//! End-to-end tests of the `lastmile` binary on the embedded digits dataset:
//! `new` → `quantize` (16w8a and 8w8a) → `info` → `eval`, their `--json` output,
//! and clear, non-zero-exit errors for bad input.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::sync::OnceLock;

use serde_json::Value;

/// Points of accuracy PTQ may lose against the float model on digits test.
/// (Measured: float 96.66%, 16w8a 96.66%, 8w8a 96.66%.)
const MAX_PTQ_DROP: f64 = 0.03;

/// The binary, run in a scratch directory (so a stray relative `-o` lands there)
/// with no `LASTMILE_DATA` from the environment.
fn bin() -> Command {
    static CWD: OnceLock<PathBuf> = OnceLock::new();
    let cwd = CWD.get_or_init(|| temp_dir("cwd"));
    let mut c = Command::new(env!("CARGO_BIN_EXE_lastmile"));
    c.env_remove("LASTMILE_DATA").current_dir(cwd);
    c
}

/// A fresh directory for one test.
fn temp_dir(name: &str) -> PathBuf {
    let d = Path::new(env!("CARGO_TARGET_TMPDIR"))
        .join("lastmile-cli-tests")
        .join(format!("{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&d);
    std::fs::create_dir_all(&d).unwrap();
    d
}

fn run(cmd: &mut Command) -> Output {
    cmd.output().expect("cannot run lastmile")
}

fn ok(cmd: &mut Command) -> String {
    let out = run(cmd);
    assert!(
        out.status.success(),
        "{cmd:?} failed ({}):\nstdout: {}\nstderr: {}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap()
}

fn json(cmd: &mut Command) -> Value {
    let s = ok(cmd);
    serde_json::from_str(&s).unwrap_or_else(|e| panic!("not JSON ({e}):\n{s}"))
}

/// Runs a command that must fail; returns stderr.
fn fails(cmd: &mut Command) -> String {
    let out = run(cmd);
    let err = String::from_utf8_lossy(&out.stderr).into_owned();
    assert!(
        !out.status.success(),
        "{cmd:?} should have failed; stdout: {}",
        String::from_utf8_lossy(&out.stdout)
    );
    assert!(!err.contains("panicked"), "{cmd:?} panicked: {err}");
    assert!(err.starts_with("error"), "{cmd:?}: {err}");
    err
}

fn keys(v: &Value, expected: &[&str]) {
    for k in expected {
        assert!(v.get(k).is_some(), "missing key '{k}' in {v:#}");
    }
}

fn f(v: &Value, path: &[&str]) -> f64 {
    let mut x = v;
    for p in path {
        x = &x[*p];
    }
    x.as_f64()
        .unwrap_or_else(|| panic!("{path:?} is not a number in {v:#}"))
}

struct Models {
    dir: PathBuf,
    float: PathBuf,
    /// `new --json` output.
    new_report: Value,
}

/// The float digits model, created once per test binary.
fn models() -> &'static Models {
    static M: OnceLock<Models> = OnceLock::new();
    M.get_or_init(|| {
        let dir = temp_dir("shared");
        let float = dir.join("float.lmm");
        let new_report = json(
            bin()
                .args(["new", "--arch", "digits-cnn", "--data", "digits"])
                .args(["--seed", "0", "--json", "-o"])
                .arg(&float),
        );
        Models {
            dir,
            float,
            new_report,
        }
    })
}

fn quantize_once(bits: &str) -> (PathBuf, Value) {
    let m = models();
    let out = m.dir.join(format!("q{bits}.lmm"));
    let report = json(
        bin()
            .args(["quantize", "--model"])
            .arg(&m.float)
            .args([
                "--data", "digits", "--calib", "256", "--bits", bits, "--json", "-o",
            ])
            .arg(&out),
    );
    (out, report)
}

/// The quantized model (`"8"` or `"16"`) and its `quantize --json` report, made once.
fn quantize(bits: &str) -> (PathBuf, Value) {
    static Q8: OnceLock<(PathBuf, Value)> = OnceLock::new();
    static Q16: OnceLock<(PathBuf, Value)> = OnceLock::new();
    let cell = if bits == "8" { &Q8 } else { &Q16 };
    cell.get_or_init(|| quantize_once(bits)).clone()
}

#[test]
fn new_fits_a_useful_float_model() {
    let r = &models().new_report;
    keys(
        r,
        &[
            "output",
            "arch",
            "dataset",
            "seed",
            "params",
            "lambda",
            "temperature",
            "train",
            "test",
        ],
    );
    assert_eq!(r["params"], 3818);
    assert_eq!(r["train"]["samples"], 1438);
    assert_eq!(r["test"]["samples"], 359);
    let test = f(r, &["test", "accuracy"]);
    assert!(test >= 0.90, "float test accuracy {test}");
    assert!(f(r, &["train", "accuracy"]) >= test - 0.01);
    assert!(f(r, &["test", "loss"]) < 0.5);
}

#[test]
fn new_is_deterministic_in_its_seed() {
    let dir = temp_dir("seed");
    let make = |seed: &str, name: &str| {
        let p = dir.join(name);
        ok(bin()
            .args(["new", "--arch", "digits-cnn", "--seed", seed, "-o"])
            .arg(&p));
        std::fs::read(p).unwrap()
    };
    let a = make("3", "a.lmm");
    let b = make("3", "b.lmm");
    let c = make("4", "c.lmm");
    assert_eq!(a, b, "same seed must give the same file");
    assert_ne!(a, c);
}

#[test]
fn quantized_16w8a_keeps_the_float_accuracy_and_evaluates_identically() {
    let float_acc = f(&models().new_report, &["test", "accuracy"]);
    let (q16, r) = quantize("16");
    keys(
        &r,
        &[
            "output",
            "scheme",
            "calibration_samples",
            "clamped_biases",
            "zero_channels",
            "trainable",
            "params",
            "trainable_params",
            "float",
            "quantized",
        ],
    );
    assert_eq!(r["scheme"], "16w8a");
    assert_eq!(r["calibration_samples"], 256);
    assert_eq!(r["clamped_biases"], 0);
    assert_eq!(f(&r, &["float", "accuracy"]), float_acc);
    let q_acc = f(&r, &["quantized", "accuracy"]);
    assert!(q_acc >= 0.80, "16w8a accuracy {q_acc}");
    assert!(
        q_acc >= float_acc - MAX_PTQ_DROP,
        "16w8a {q_acc} vs float {float_acc}"
    );

    let e = json(bin().args(["eval", "--model"]).arg(&q16).args([
        "--data",
        "digits",
        "--backend",
        "cpu-ref",
        "--json",
    ]));
    keys(
        &e,
        &[
            "model", "kind", "scheme", "dataset", "split", "samples", "correct", "accuracy",
            "loss", "backend", "tier", "seconds",
        ],
    );
    assert_eq!(e["backend"], "cpu-ref");
    assert_eq!(e["split"], "test");
    assert_eq!(e["samples"], 359);
    assert_eq!(f(&e, &["accuracy"]), q_acc, "eval and quantize must agree");
    assert_eq!(f(&e, &["loss"]), f(&r, &["quantized", "loss"]));

    // Batch size does not change the result; text output has the documented shape.
    let text = ok(bin()
        .args(["eval", "-q", "--batch", "7", "--model"])
        .arg(&q16)
        .args(["--data", "digits", "--backend", "cpu-ref"]));
    let correct = e["correct"].as_u64().unwrap();
    let expected = format!(
        "accuracy {:.2}% ({correct}/359), loss {:.4}, backend cpu-ref/scalar, ",
        100.0 * q_acc,
        f(&e, &["loss"])
    );
    assert!(text.starts_with(&expected), "{text:?} vs {expected:?}");

    // --limit and the train split.
    let lim = json(
        bin()
            .args([
                "eval", "--limit", "50", "--split", "train", "--json", "--model",
            ])
            .arg(&q16),
    );
    assert_eq!(lim["samples"], 50);
    assert_eq!(lim["split"], "train");
    assert_eq!(
        lim["dataset"], "digits",
        "dataset defaults to the model's metadata"
    );
}

#[test]
fn quantized_8w8a_works_too() {
    let float_acc = f(&models().new_report, &["test", "accuracy"]);
    let (q8, r) = quantize("8");
    assert_eq!(r["scheme"], "8w8a");
    let q_acc = f(&r, &["quantized", "accuracy"]);
    assert!(
        q_acc >= float_acc - MAX_PTQ_DROP,
        "8w8a {q_acc} vs float {float_acc}"
    );
    let e = json(bin().args(["eval", "--json", "--model"]).arg(&q8));
    assert_eq!(e["scheme"], "8w8a");
    assert_eq!(f(&e, &["accuracy"]), q_acc);
    let i = json(bin().args(["info", "--json"]).arg(&q8));
    assert_eq!(i["scheme"], "8w8a");
    assert_eq!(i["totals"]["bytes_8w"], 3784 + 4 * 34);
}

#[test]
fn info_reports_structure_and_totals() {
    let (q16, _) = quantize("16");
    let i = json(bin().args(["info", "--json"]).arg(&q16));
    keys(
        &i,
        &[
            "file",
            "kind",
            "scheme",
            "metadata",
            "input_shape",
            "input_quant",
            "output_shape",
            "nodes",
            "totals",
        ],
    );
    assert_eq!(i["kind"], "quantized");
    assert_eq!(i["scheme"], "16w8a");
    assert_eq!(i["input_shape"], serde_json::json!([8, 8, 1]));
    assert_eq!(i["output_shape"], serde_json::json!([10]));
    assert!(i["input_quant"]["scale"].as_f64().unwrap() > 0.0);
    let md = &i["metadata"];
    assert_eq!(md["arch"], "digits-cnn");
    assert_eq!(md["dataset"], "digits");
    assert_eq!(md["class_names"], "0,1,2,3,4,5,6,7,8,9");
    assert!(
        md["provenance"]
            .as_str()
            .unwrap()
            .contains("ridge-regression head")
    );

    let nodes = i["nodes"].as_array().unwrap();
    let names: Vec<&str> = nodes.iter().map(|n| n["name"].as_str().unwrap()).collect();
    assert_eq!(names, ["conv1", "conv2", "flatten", "fc"]);
    let params: Vec<u64> = nodes
        .iter()
        .map(|n| n["params"].as_u64().unwrap())
        .collect();
    assert_eq!(params, [80, 1168, 0, 2570]);
    let trainable: Vec<&str> = nodes
        .iter()
        .map(|n| n["trainable"].as_str().unwrap())
        .collect();
    assert_eq!(trainable, ["no", "no", "-", "yes"]);
    assert_eq!(nodes[1]["output_shape"], serde_json::json!([4, 4, 16]));
    assert!(nodes[3]["output_quant"]["scale"].as_f64().unwrap() > 0.0);

    let t = &i["totals"];
    assert_eq!(t["params"], 3818);
    assert_eq!(t["trainable_params"], 2570);
    assert_eq!(t["weight_params"], 3784);
    assert_eq!(t["bias_params"], 34);
    assert_eq!(t["bytes_8w"], 3784 + 4 * 34);
    assert_eq!(t["bytes_16w"], 2 * 3784 + 4 * 34);
    assert_eq!(t["largest_activation"]["bytes_int8"], 8 * 8 * 8);
    assert_eq!(t["largest_activation"]["node"], "conv1");

    let text = ok(bin().arg("info").arg(&q16));
    for needle in [
        "quantized 16w8a",
        "conv1",
        "fc",
        "256->10",
        "3818",
        "2570",
        "512 bytes/sample",
    ] {
        assert!(text.contains(needle), "'{needle}' not in:\n{text}");
    }
}

#[test]
fn trainable_modes_and_float_files() {
    let m = models();
    let all = m.dir.join("all.lmm");
    let r = json(
        bin()
            .args([
                "quantize",
                "--bits",
                "8",
                "--trainable",
                "all",
                "--json",
                "--model",
            ])
            .arg(&m.float)
            .arg("-o")
            .arg(&all),
    );
    assert_eq!(r["trainable_params"], 3818);
    let none = m.dir.join("none.lmm");
    let r = json(
        bin()
            .args([
                "quantize",
                "--bits",
                "8",
                "--trainable",
                "none",
                "--json",
                "--model",
            ])
            .arg(&m.float)
            .arg("-o")
            .arg(&none),
    );
    assert_eq!(r["trainable_params"], 0);

    let i = json(bin().args(["info", "--json"]).arg(&m.float));
    assert_eq!(i["kind"], "float");
    assert_eq!(i["scheme"], Value::Null);
    assert_eq!(i["totals"]["params"], 3818);
    assert_eq!(i["totals"]["trainable_params"], 0);
    let e = json(bin().args(["eval", "--json", "--model"]).arg(&m.float));
    assert_eq!(e["backend"], "float32");
    assert_eq!(
        f(&e, &["accuracy"]),
        f(&m.new_report, &["test", "accuracy"])
    );
}

#[test]
fn backends_lists_the_reference() {
    let v = json(bin().args(["backends", "--json"]));
    let list = v.as_array().unwrap();
    let r = list
        .iter()
        .find(|e| e["name"] == "cpu-ref")
        .expect("cpu-ref listed");
    keys(r, &["name", "tier", "available", "reason", "capabilities"]);
    assert_eq!(r["available"], true);
    let caps = &r["capabilities"];
    keys(
        caps,
        &[
            "ops",
            "weight_bits",
            "weight_updates",
            "exactness",
            "threads",
        ],
    );
    assert_eq!(caps["exactness"]["kind"], "bit_exact");
    let text = ok(bin().arg("backends"));
    assert!(
        text.contains("cpu-ref") && text.contains("bit-exact"),
        "{text}"
    );
}

#[test]
fn help_explains_the_tool() {
    let h = ok(bin().arg("--help"));
    for needle in [
        "inference-only",
        "two forward calls",
        "info",
        "eval",
        "backends",
        "new",
        "quantize",
        "Examples",
    ] {
        assert!(h.contains(needle), "'{needle}' not in --help:\n{h}");
    }
    let h = ok(bin().args(["new", "--help"]));
    assert!(h.contains("backprop pretrainer"), "{h}");
}

#[test]
fn missing_and_truncated_model_files_name_the_file() {
    let dir = temp_dir("badfiles");
    let missing = dir.join("missing.lmm");
    let e = fails(bin().arg("info").arg(&missing));
    assert!(
        e.contains(&format!("cannot read model '{}'", missing.display()))
            && e.contains("No such file"),
        "{e}"
    );
    let e = fails(bin().args(["eval", "--model"]).arg(&missing));
    assert!(e.contains("missing.lmm"), "{e}");

    let bytes = std::fs::read(&models().float).unwrap();
    let half = dir.join("half.lmm");
    std::fs::write(&half, &bytes[..bytes.len() / 2]).unwrap();
    for args in [
        vec!["info"],
        vec!["eval", "--model"],
        vec!["quantize", "--bits", "8", "-o", "x.lmm", "--model"],
    ] {
        let e = fails(bin().current_dir(&dir).args(&args).arg(&half));
        assert!(
            e.contains("cannot read model") && e.contains("half.lmm"),
            "{args:?}: {e}"
        );
    }
    assert!(!dir.join("x.lmm").exists());

    let garbage = dir.join("garbage.lmm");
    std::fs::write(&garbage, b"definitely not a model file, just some text").unwrap();
    let e = fails(bin().arg("info").arg(&garbage));
    assert!(e.contains("garbage.lmm"), "{e}");
}

#[test]
fn bad_arguments_are_named() {
    let (q16, _) = quantize("16");
    let e = fails(
        bin()
            .args(["eval", "--backend", "warp-drive", "--model"])
            .arg(&q16),
    );
    assert!(
        e.contains("--backend") && e.contains("warp-drive") && e.contains("cpu-ref"),
        "{e}"
    );

    let e = fails(
        bin()
            .args(["eval", "--data", "cifar-1000", "--model"])
            .arg(&q16),
    );
    assert!(
        e.contains("cifar-1000") && e.contains("digits") && e.contains("fashion-mnist"),
        "{e}"
    );

    let m = models();
    let e = fails(
        bin()
            .args(["quantize", "--bits", "8", "-o", "y.lmm", "--model"])
            .arg(&q16),
    );
    assert!(e.contains("already quantized"), "{e}");
    let e = fails(
        bin()
            .args(["quantize", "--bits", "4", "-o", "y.lmm", "--model"])
            .arg(&m.float),
    );
    assert!(e.contains("--bits"), "{e}");
    let e = fails(
        bin()
            .args(["quantize", "--bits", "8", "--model"])
            .arg(&m.float)
            .arg("-o")
            .arg(m.dir.join("no-such-dir").join("q.lmm")),
    );
    assert!(
        e.contains("no-such-dir") && e.contains("does not exist"),
        "{e}"
    );
    let e = fails(bin().args(["new", "--arch", "vgg", "-o", "z.lmm"]));
    assert!(e.contains("--arch") && e.contains("digits-cnn"), "{e}");
    let e = fails(bin().args([
        "new",
        "--arch",
        "mnist-cnn",
        "--data",
        "digits",
        "-o",
        "z.lmm",
    ]));
    assert!(e.contains("28x28x1") && e.contains("8x8x1"), "{e}");
}

#[test]
fn mnist_missing_says_where_it_looked() {
    let (q16, _) = quantize("16");
    let empty = temp_dir("empty-data");
    let e = fails(
        bin()
            .env("LASTMILE_DATA", &empty)
            .args(["eval", "--data", "mnist", "--model"])
            .arg(&q16),
    );
    assert!(
        e.contains("mnist") && e.contains(&empty.display().to_string()),
        "{e}"
    );
    assert!(e.contains("cargo xtask data"), "{e}");
}

/// Writes a tiny idx-format "MNIST" (`n` blank 28×28 images) under `root/mnist`.
fn fake_mnist(root: &Path, n: u32) {
    let dir = root.join("mnist");
    std::fs::create_dir_all(&dir).unwrap();
    for prefix in ["train", "t10k"] {
        let mut img = vec![0, 0, 8, 3];
        for d in [n, 28, 28] {
            img.extend_from_slice(&d.to_be_bytes());
        }
        img.resize(img.len() + (n * 28 * 28) as usize, 0);
        std::fs::write(dir.join(format!("{prefix}-images-idx3-ubyte")), img).unwrap();
        let mut lab = vec![0, 0, 8, 1];
        lab.extend_from_slice(&n.to_be_bytes());
        lab.extend((0..n).map(|i| (i % 10) as u8));
        std::fs::write(dir.join(format!("{prefix}-labels-idx1-ubyte")), lab).unwrap();
    }
}

#[test]
fn shape_mismatch_explains_both_shapes() {
    let (q16, _) = quantize("16");
    let root = temp_dir("fake-mnist");
    fake_mnist(&root, 4);
    let e = fails(
        bin()
            .env("LASTMILE_DATA", &root)
            .args(["eval", "--data", "mnist", "--model"])
            .arg(&q16),
    );
    assert!(e.contains("[28, 28, 1]") && e.contains("[8, 8, 1]"), "{e}");
    let e = fails(
        bin()
            .env("LASTMILE_DATA", &root)
            .args([
                "quantize", "--bits", "8", "--data", "mnist", "-o", "w.lmm", "--model",
            ])
            .arg(&models().float),
    );
    assert!(e.contains("[28, 28, 1]") && e.contains("[8, 8, 1]"), "{e}");
}
