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

#[test]
fn momentum_run_resumes_bit_identically_and_checkpoints_its_buffer() {
    let (q16, _) = models();
    let common = [
        "adapt",
        "--model",
        q16,
        "--corrupt",
        "contrast@4",
        "--steps",
        "24",
        "--seed",
        "3",
        "--trainable",
        "all",
        "--momentum",
        "0.5",
    ];
    ok(&[&common[..], &["-o", "m-uninterrupted.lmm"]].concat());
    ok(&[
        &common[..],
        &["--checkpoint", "mck.lmm", "--stop-after", "9"],
    ]
    .concat());
    let ck = format::load_quant(&dir().join("mck.lmm")).unwrap();
    let hex = ck.metadata.get("train.momentum").expect("momentum saved");
    let trainable: usize = ck
        .params
        .iter()
        .filter(|p| p.spec.trainable)
        .map(|p| p.spec.numel())
        .sum();
    assert_eq!(
        hex.len(),
        trainable * 4,
        "one i16 (4 hex digits) per weight"
    );
    assert!(hex.chars().any(|c| c != '0'), "the momentum moved");
    ok(&[
        &common[..],
        &["--checkpoint", "mck.lmm", "--resume", "-o", "m-resumed.lmm"],
    ]
    .concat());
    let a = format::load_quant(&dir().join("m-uninterrupted.lmm")).unwrap();
    let b = format::load_quant(&dir().join("m-resumed.lmm")).unwrap();
    for (pa, pb) in a.params.iter().zip(&b.params) {
        assert_eq!(pa.data, pb.data, "tensor {}", pa.spec.name);
    }
    // Without the momentum the trajectory differs: the switch does something.
    ok(&[&common[..11], &["-o", "m-plain.lmm"]].concat());
    let plain = format::load_quant(&dir().join("m-plain.lmm")).unwrap();
    assert_ne!(plain.params, a.params);
    // A checkpoint whose buffer is missing cannot be resumed silently.
    let mut broken = ck.clone();
    broken.metadata.remove("train.momentum");
    format::save_quant(&dir().join("mck-broken.lmm"), &broken).unwrap();
    let e = fails(&[&common[..], &["--checkpoint", "mck-broken.lmm", "--resume"]].concat());
    assert!(
        e.contains("momentum") && e.contains("mck-broken.lmm"),
        "{e}"
    );
}

#[test]
fn momentum_guided_lp_raises_accuracy() {
    let j = adapt_json(&[
        "--trainable",
        "head",
        "--steps",
        "100",
        "--eval-every",
        "100",
        "--momentum",
        "0.5",
    ]);
    let (zero, adapted) = (j_zero(&j), j["adapted_accuracy"].as_f64().unwrap());
    eprintln!(
        "momentum LP: {:.1}% -> {:.1}%",
        zero * 100.0,
        adapted * 100.0
    );
    assert!(adapted > zero + 0.2, "{zero} -> {adapted}");
    assert_eq!(j["state"]["config"]["momentum"]["beta"], 0.5);
    assert_eq!(j["state"]["config"]["momentum"]["mix"], 0.25);
}

fn write(name: &str, text: &str) -> String {
    std::fs::write(dir().join(name), text).unwrap();
    name.into()
}

#[test]
fn config_file_sets_every_switch_and_flags_override_it() {
    let (q16, _) = models();
    let toml = write(
        "run.toml",
        &format!(
            r#"# every adapt switch may live here
model = "{q16}"
data = "digits"
corrupt = "contrast@4"
split = "train"
eval-split = "test"
limit = 200
backend = "cpu-ref"
steps = 6
batch = 16
draws = 2
estimator = "spsa"
dist = "rademacher"
epsilon = 300
lr = "0.5%"
schedule = "cosine"
rounding = "stochastic"
sharpness = "0.1%"
kernel-norm = true
sparse-channels = 0.5
momentum = 0.7
momentum-mix = 0.3
trainable = "all"
seed = 9
eval-every = 3
checkpoint-every = 2
json = true
"#
        ),
    );
    let from_file: Value = serde_json::from_str(&ok(&["adapt", "--config", &toml])).unwrap();
    let st = &from_file["state"];
    assert_eq!(st["steps"], 6);
    assert_eq!(st["batch"], 16);
    assert_eq!(st["samples"], 200);
    assert_eq!(st["schedule"], "cosine");
    assert_eq!(st["config"]["draws"], 2);
    assert_eq!(st["config"]["estimator"], "spsa");
    assert_eq!(st["config"]["distribution"], "rademacher");
    assert_eq!(st["config"]["epsilon_lsb"], 300);
    assert_eq!(st["config"]["rounding"], "stochastic");
    assert_eq!(st["config"]["kernel_norm"], true);
    assert_eq!(st["config"]["seed"], 9);
    assert_eq!(st["config"]["sparsity"]["channel_fraction"], 0.5);
    assert_eq!(st["config"]["momentum"]["beta"], 0.7);
    assert_eq!(st["config"]["momentum"]["mix"], 0.3);
    assert!(st["config"]["sharpness_rho"].as_f64().unwrap() > 0.0);
    assert_eq!(
        from_file["curve"].as_array().unwrap().len(),
        3,
        "eval-every 3"
    );
    // The same run from flags gives the same trajectory.
    let flags = [
        "adapt",
        "--model",
        q16,
        "--data",
        "digits",
        "--corrupt",
        "contrast@4",
        "--limit",
        "200",
        "--backend",
        "cpu-ref",
        "--steps",
        "6",
        "--batch",
        "16",
        "--draws",
        "2",
        "--estimator",
        "spsa",
        "--dist",
        "rademacher",
        "--epsilon",
        "300",
        "--lr",
        "0.5%",
        "--schedule",
        "cosine",
        "--rounding",
        "stochastic",
        "--sharpness",
        "0.1%",
        "--kernel-norm",
        "--sparse-channels",
        "0.5",
        "--momentum",
        "0.7",
        "--momentum-mix",
        "0.3",
        "--trainable",
        "all",
        "--seed",
        "9",
        "--eval-every",
        "3",
        "--json",
    ];
    let from_flags: Value = serde_json::from_str(&ok(&flags)).unwrap();
    assert_eq!(from_flags["state"], from_file["state"]);
    assert_eq!(
        from_flags["curve"][2]["loss"],
        from_file["curve"][2]["loss"]
    );
    // Flags override the file.
    let over: Value = serde_json::from_str(&ok(&[
        "adapt",
        "--config",
        &toml,
        "--steps",
        "4",
        "--draws",
        "1",
        "--momentum-mix",
        "0.1",
    ]))
    .unwrap();
    assert_eq!(over["state"]["steps"], 4);
    assert_eq!(over["state"]["config"]["draws"], 1);
    assert_eq!(over["state"]["config"]["momentum"]["beta"], 0.7);
    assert_eq!(over["state"]["config"]["momentum"]["mix"], 0.1);
    assert_eq!(
        over["state"]["batch"], 16,
        "unset flags keep the file's value"
    );
}

#[test]
fn json_config_files_work_too() {
    let (q16, _) = models();
    let json = write(
        "run.json",
        &format!(
            r#"{{"model": "{q16}", "corrupt": "contrast@4", "steps": 2, "draws": 1, "json": true, "lr": 100}}"#
        ),
    );
    let j: Value = serde_json::from_str(&ok(&["adapt", "--config", &json])).unwrap();
    assert_eq!(j["state"]["steps"], 2);
    assert_eq!(j["state"]["lr_lsb"], 100.0);
    assert_eq!(j["forwards"], 4);
}

#[test]
fn config_errors_name_the_file_and_the_key() {
    let (q16, _) = models();
    let bad = write("bad.toml", &format!("model = \"{q16}\"\nstep = 5\n"));
    let e = fails(&["adapt", "--config", &bad]);
    assert!(
        e.contains("bad.toml") && e.contains("unknown key 'step'") && e.contains("steps"),
        "{e}"
    );
    let bad = write(
        "badval.toml",
        &format!("model = \"{q16}\"\ndist = \"uniform\"\n"),
    );
    let e = fails(&["adapt", "--config", &bad]);
    assert!(
        e.contains("badval.toml") && e.contains("'dist'") && e.contains("rademacher"),
        "{e}"
    );
    let bad = write(
        "badtype.toml",
        &format!("model = \"{q16}\"\nsteps = \"many\"\n"),
    );
    let e = fails(&["adapt", "--config", &bad]);
    assert!(e.contains("badtype.toml") && e.contains("'steps'"), "{e}");
    let bad = write("syntax.toml", "steps = = 3\n");
    assert!(fails(&["adapt", "--config", &bad]).contains("syntax.toml"));
    assert!(fails(&["adapt", "--config", "nope.toml"]).contains("nope.toml"));
    let e = fails(&["adapt", "--steps", "3"]);
    assert!(e.contains("--model is required"), "{e}");
    let e = fails(&["adapt", "--model", q16, "--momentum-mix", "0.2"]);
    assert!(e.contains("--momentum"), "{e}");
    let e = fails(&["adapt", "--model", q16, "--momentum", "1.5"]);
    assert!(e.contains("beta"), "{e}");
    let e = fails(&["adapt", "--model", q16, "--resume"]);
    assert!(e.contains("--checkpoint"), "{e}");
}
