//! A wrong library file gives a clear error naming the path and the problem (never a panic).

use std::path::Path;

use lastmile_backend_onnxruntime::probe;

#[test]
fn missing_file_names_the_path_and_the_fix() {
    let e = probe(Path::new("/nonexistent/libonnxruntime.so.1.32.0")).unwrap_err();
    assert!(e.contains("/nonexistent/libonnxruntime.so.1.32.0"), "{e}");
    assert!(
        e.contains("not found") && e.contains("cargo xtask sdk onnxruntime"),
        "{e}"
    );
}

#[test]
fn not_a_shared_object() {
    let dir = std::env::temp_dir().join(format!("lastmile-ort-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let f = dir.join("libonnxruntime.so");
    std::fs::write(&f, b"this is not an ELF file").unwrap();
    let e = probe(&f).unwrap_err();
    std::fs::remove_dir_all(&dir).unwrap();
    assert!(e.contains("not a loadable shared library"), "{e}");
    assert!(e.contains("libonnxruntime.so"), "{e}");
}

#[test]
#[cfg(all(target_os = "linux", target_env = "gnu"))]
fn shared_object_without_the_entry_point() {
    // libm is a real shared object without OrtGetApiBase.
    let libm = [
        "/lib/x86_64-linux-gnu/libm.so.6",
        "/lib/aarch64-linux-gnu/libm.so.6",
        "/lib64/libm.so.6",
    ]
    .into_iter()
    .map(Path::new)
    .find(|p| p.is_file());
    let Some(libm) = libm else {
        eprintln!("skipped: no libm.so.6 at the usual paths");
        return;
    };
    let e = probe(libm).unwrap_err();
    assert!(e.contains("does not export OrtGetApiBase"), "{e}");
}

#[test]
fn directory_is_not_a_library() {
    let e = probe(&std::env::temp_dir()).unwrap_err();
    assert!(e.contains("is not a file"), "{e}");
}
