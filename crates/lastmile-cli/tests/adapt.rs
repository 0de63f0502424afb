//! `lastmile adapt` end to end on the embedded digits under a synthetic last-mile shift
//! (contrast reduced by 60 % — a dimmer sensor than the training data's): QZO-FF must
//! raise accuracy clearly above zero-shot, and an interrupted run resumed from its
//! checkpoint must end with byte-identical weights.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::OnceLock;

use lastmile_core::format;
use serde_json::Value;

fn dir() -> &'static PathBuf {
    static D: OnceLock<PathBuf> = OnceLock::new();
    D.get_or_init(|| {
        let d = Path::new(env!("CARGO_TARGET_TMPDIR"))
            .join(format!("lastmile-adapt-tests-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&d);
        std::fs::create_dir_all(&d).unwrap();
        d
    })
}

fn lastmile(args: &[&str]) -> std::process::Output {
    Command::new(env!("CARGO_BIN_EXE_lastmile"))
        .args(args)
        .current_dir(dir())
        .env_remove("LASTMILE_DATA")
        .output()
        .expect("runs")
}

fn ok(args: &[&str]) -> String {
    let o = lastmile(args);
    assert!(
        o.status.success(),
        "lastmile {args:?} failed:\n{}",
        String::from_utf8_lossy(&o.stderr)
    );
    String::from_utf8(o.stdout).unwrap()
}

fn fails(args: &[&str]) -> String {
    let o = lastmile(args);
    let err = String::from_utf8_lossy(&o.stderr).into_owned();
    assert!(!o.status.success(), "lastmile {args:?} should fail");
    assert!(!err.contains("panicked"), "{err}");
    err
}

/// A 16w8a and an 8w8a digits model, made once.
fn models() -> &'static (String, String) {
    static M: OnceLock<(String, String)> = OnceLock::new();
    M.get_or_init(|| {
        ok(&[
            "new",
            "--arch",
            "digits-cnn",
            "--data",
            "digits",
            "-o",
            "f32.lmm",
        ]);
        ok(&[
            "quantize", "--model", "f32.lmm", "--bits", "16", "-o", "q16.lmm",
        ]);
        ok(&[
            "quantize", "--model", "f32.lmm", "--bits", "8", "-o", "q8.lmm",
        ]);
        ("q16.lmm".into(), "q8.lmm".into())
    })
}

fn adapt_json(extra: &[&str]) -> Value {
    let (q16, _) = models();
    let mut args = vec!["adapt", "--model", q16, "--corrupt", "contrast@4", "--json"];
    args.extend_from_slice(extra);
    serde_json::from_str(&ok(&args)).unwrap()
}

#[test]
fn lp_and_ft_raise_accuracy_clearly_above_zero_shot() {
    for scope in ["head", "all"] {
        let j = adapt_json(&[
            "--trainable",
            scope,
            "--steps",
            "150",
            "--eval-every",
            "150",
        ]);
        let (zero, adapted) = (
            j["zero_shot_accuracy"].as_f64().unwrap(),
            j["adapted_accuracy"].as_f64().unwrap(),
        );
        eprintln!("{scope}: {:.1}% -> {:.1}%", zero * 100.0, adapted * 100.0);
        // Seen: head 31.8% -> ~80%, all 31.8% -> ~80% at 150 steps.
        assert!(adapted > zero + 0.2, "{scope}: {zero} -> {adapted}");
        assert_eq!(
            j["forwards"].as_u64().unwrap(),
            150 * 2 * 3,
            "2m forwards per step"
        );
    }
}

#[test]
fn interrupted_and_resumed_run_ends_with_identical_weights() {
    let (q16, _) = models();
    let common = [
        "adapt",
        "--model",
        q16,
        "--corrupt",
        "contrast@4",
        "--steps",
        "30",
        "--seed",
        "5",
        "--trainable",
        "all",
    ];
    ok(&[&common[..], &["-o", "uninterrupted.lmm"]].concat());
    ok(&[
        &common[..],
        &["--checkpoint", "ck.lmm", "--stop-after", "11"],
    ]
    .concat());
    ok(&[
        &common[..],
        &["--checkpoint", "ck.lmm", "--stop-after", "7", "--resume"],
    ]
    .concat());
    ok(&[
        &common[..],
        &["--checkpoint", "ck.lmm", "--resume", "-o", "resumed.lmm"],
    ]
    .concat());
    let a = format::load_quant(&dir().join("uninterrupted.lmm")).unwrap();
    let b = format::load_quant(&dir().join("resumed.lmm")).unwrap();
    for (pa, pb) in a.params.iter().zip(&b.params) {
        assert_eq!(pa.data, pb.data, "tensor {}", pa.spec.name);
    }
    let original = format::load_quant(&dir().join(q16)).unwrap();
    assert_ne!(original.params, a.params, "training changed the weights");
}

#[test]
fn resuming_with_other_settings_is_refused() {
    let (q16, _) = models();
    let common = [
        "adapt",
        "--model",
        q16,
        "--corrupt",
        "contrast@4",
        "--steps",
        "10",
    ];
    ok(&[
        &common[..],
        &["--checkpoint", "ck2.lmm", "--stop-after", "3"],
    ]
    .concat());
    let e = fails(
        &[
            &common[..],
            &["--checkpoint", "ck2.lmm", "--resume", "--draws", "5"],
        ]
        .concat(),
    );
    assert!(
        e.contains("different settings") && e.contains("ck2.lmm"),
        "{e}"
    );
}

#[test]
fn bad_arguments_get_clear_errors() {
    let (q16, _) = models();
    assert!(fails(&["adapt", "--model", "f32.lmm"]).contains("float model"));
    assert!(
        fails(&["adapt", "--model", q16, "--corrupt", "fog@2"])
            .contains("unknown corruption 'fog'")
    );
    assert!(fails(&["adapt", "--model", q16, "--lr", "fast"]).contains("not a number"));
    assert!(
        fails(&["adapt", "--model", q16, "--trainable", "nope"])
            .contains("no layer with weights is called 'nope'")
    );
    assert!(fails(&["adapt", "--model", q16, "--draws", "0"]).contains("draws"));
    assert!(fails(&["adapt", "--model", "missing.lmm"]).contains("missing.lmm"));
}

#[test]
fn rollback_guard_recovers_from_an_exploding_learning_rate() {
    let (q16, _) = models();
    let base = [
        "adapt",
        "--model",
        q16,
        "--corrupt",
        "contrast@4",
        "--trainable",
        "all",
        "--lr",
        "40%",
        "--steps",
        "30",
        "--eval-every",
        "10",
        "--json",
    ];
    let wild: Value = serde_json::from_str(&ok(&base)).unwrap();
    let guarded: Value =
        serde_json::from_str(&ok(&[&base[..], &["--rollback", "1.2"]].concat())).unwrap();
    let acc = |j: &Value| j["adapted_accuracy"].as_f64().unwrap();
    assert!(
        acc(&wild) < j_zero(&wild),
        "a 40% learning rate should destroy the model: {wild:#}"
    );
    assert!(guarded["rollbacks"].as_u64().unwrap() > 0);
    assert!(acc(&guarded) >= j_zero(&guarded) - 1e-9, "{guarded:#}");
}

fn j_zero(j: &Value) -> f64 {
    j["zero_shot_accuracy"].as_f64().unwrap()
}
