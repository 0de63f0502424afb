//! Follows docs/adding-a-backend.md section A mechanically, so the guide stays true:
//!
//! 1. copies `backends/template` into a scratch workspace under `target/tmp` that depends on
//!    this workspace's crates by path (like `backends/<name>` would), sharing `target/`;
//! 2. runs the guide's step-1 shell block there (copy + rename to `mynpu` / `MyNpu`);
//! 3. checks no trace of the template's names is left, builds the renamed crate and runs its
//!    conformance suite (`cargo test -p lastmile-backend-mynpu`, a few cases per family);
//! 4. checks that the registration snippet of step 4 is the one in the registry.

use std::path::{Path, PathBuf};
use std::process::Command;

fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
}

fn guide() -> String {
    let path = root().join("docs/adding-a-backend.md");
    std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

/// The fenced blocks of `lang` in section `heading` (up to the next heading of any level).
fn blocks(text: &str, heading: &str, lang: &str) -> Vec<String> {
    let start = text
        .find(heading)
        .unwrap_or_else(|| panic!("the guide has no '{heading}'"));
    let rest = &text[start + heading.len()..];
    let end = rest.find("\n#").unwrap_or(rest.len());
    let section = &rest[..end];
    let fence = format!("```{lang}\n");
    let mut out = Vec::new();
    let mut s = section;
    while let Some(i) = s.find(&fence) {
        let body = &s[i + fence.len()..];
        let j = body.find("```").expect("unterminated code block");
        out.push(body[..j].to_string());
        s = &body[j + 3..];
    }
    out
}

fn copy_dir(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).unwrap();
    for e in std::fs::read_dir(from).unwrap() {
        let e = e.unwrap();
        let (src, dst) = (e.path(), to.join(e.file_name()));
        if e.file_type().unwrap().is_dir() {
            copy_dir(&src, &dst);
        } else {
            std::fs::copy(&src, &dst).unwrap();
        }
    }
}

/// A workspace manifest with this workspace's package settings, lints and dependencies,
/// their `path`s made absolute, and `backends/*` as members.
fn scratch_manifest() -> String {
    let root = root().canonicalize().unwrap();
    let text = std::fs::read_to_string(root.join("Cargo.toml")).unwrap();
    let mut out = String::from("[workspace]\nresolver = \"3\"\nmembers = [\"backends/*\"]\n\n");
    let mut keep = false;
    for line in text.lines() {
        if line.starts_with('[') {
            keep = line.starts_with("[workspace.package]")
                || line.starts_with("[workspace.dependencies]")
                || line.starts_with("[workspace.lints")
                || line.starts_with("[profile");
        }
        if keep {
            let line = match line.find("path = \"") {
                Some(i) => {
                    let (head, tail) = line.split_at(i + "path = \"".len());
                    format!("{head}{}/{tail}", root.display())
                }
                None => line.to_string(),
            };
            out.push_str(&line);
            out.push('\n');
        }
    }
    out
}

/// `target/` of this workspace: the parent of `CARGO_TARGET_TMPDIR` (`target/tmp`).
fn target_dir() -> PathBuf {
    Path::new(env!("CARGO_TARGET_TMPDIR"))
        .parent()
        .expect("CARGO_TARGET_TMPDIR has a parent")
        .to_path_buf()
}

fn run(cmd: &mut Command) {
    let out = cmd.output().unwrap_or_else(|e| panic!("{cmd:?}: {e}"));
    assert!(
        out.status.success(),
        "{cmd:?} failed:\n{}\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

#[test]
fn following_the_guide_gives_a_backend_that_passes_conformance() {
    let text = guide();
    let step1 = blocks(&text, "### 1. Copy and rename", "sh");
    assert_eq!(step1.len(), 1, "step 1 must have exactly one sh block");

    let ws = Path::new(env!("CARGO_TARGET_TMPDIR")).join("guide-check");
    let _ = std::fs::remove_dir_all(ws.join("backends"));
    std::fs::create_dir_all(&ws).unwrap();
    std::fs::write(ws.join("Cargo.toml"), scratch_manifest()).unwrap();
    // Same dependency versions as the workspace, and no network.
    std::fs::copy(root().join("Cargo.lock"), ws.join("Cargo.lock")).unwrap();
    copy_dir(
        &root().join("backends/template"),
        &ws.join("backends/template"),
    );

    run(Command::new("sh")
        .args(["-e", "-c", &step1[0]])
        .current_dir(&ws));
    // The template itself leaves the scratch workspace: only the renamed copy remains.
    std::fs::remove_dir_all(ws.join("backends/template")).unwrap();

    let crate_dir = ws.join("backends/mynpu");
    for f in ["Cargo.toml", "src/lib.rs", "tests/conformance.rs"] {
        let s = std::fs::read_to_string(crate_dir.join(f)).unwrap();
        for old in [
            "lastmile-backend-template",
            "lastmile_backend_template",
            "Template",
        ] {
            assert!(
                !s.contains(old),
                "{f} still mentions {old} after the guide's step 1"
            );
        }
    }
    let lib = std::fs::read_to_string(crate_dir.join("src/lib.rs")).unwrap();
    assert!(lib.contains("\"mynpu\"") && lib.contains("pub struct MyNpu"));

    let cargo = std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
    run(Command::new(cargo)
        .args([
            "test",
            "--offline",
            "-p",
            "lastmile-backend-mynpu",
            "--test",
            "conformance",
        ])
        .current_dir(&ws)
        // This workspace's target directory (like trybuild): the same dependency artifacts
        // (same paths, lock file and profiles), so only the new crate is compiled.
        .env("CARGO_TARGET_DIR", target_dir())
        .env("LASTMILE_CONFORMANCE_CASES", "8"));
}

#[test]
fn the_registration_snippet_is_the_registrys() {
    let text = guide();
    let snippet = blocks(&text, "### 4. Register it", "rust");
    assert_eq!(snippet.len(), 1, "step 4 must have exactly one rust block");
    let registry = std::fs::read_to_string(root().join("backends/registry/src/lib.rs")).unwrap();
    assert!(
        registry.contains(snippet[0].trim_end()),
        "the guide's registration snippet is not in backends/registry/src/lib.rs:\n{}",
        snippet[0]
    );
    let manifest = std::fs::read_to_string(root().join("backends/registry/Cargo.toml")).unwrap();
    assert!(manifest.contains("template = [\"dep:lastmile-backend-template\"]"));
}
