//! Plugins named by `add_plugins` (the CLI's `--plugin`) are listed; one that cannot be
//! loaded is an unavailable entry with the library, the problem and the fix, `get` reports
//! it, and every other backend is unaffected. (The loadable example plugin is exercised by
//! `lastmile-cli`'s tests/backends_plugins.rs and the plugin crates' own tests.)

#[test]
fn an_unloadable_plugin_is_listed_with_why_and_the_rest_keeps_working() {
    let dir = std::path::Path::new(env!("CARGO_TARGET_TMPDIR"));
    let missing = dir.join("libno_such_vendor.so");
    let garbage = dir.join("libgarbage_vendor.so");
    std::fs::write(&garbage, b"not an ELF file").unwrap();
    lastmile_backends::add_plugins(&[missing.clone(), garbage.clone()]);
    lastmile_backends::add_plugins(std::slice::from_ref(&missing)); // idempotent

    let entries = lastmile_backends::plugins();
    let ours: Vec<_> = entries
        .iter()
        .filter(|e| e.plugin.as_deref() == Some(&missing) || e.plugin.as_deref() == Some(&garbage))
        .collect();
    assert_eq!(ours.len(), 2, "{entries:#?}");
    let m = ours.iter().find(|e| e.name == "no_such_vendor").unwrap();
    let why = m.status.as_ref().unwrap_err();
    assert!(
        why.contains(&missing.display().to_string()) && why.contains("no such file"),
        "{why}"
    );
    let g = ours.iter().find(|e| e.name == "garbage_vendor").unwrap();
    let why = g.status.as_ref().unwrap_err();
    assert!(
        why.contains("cannot be loaded as a shared library"),
        "{why}"
    );
    assert!(why.contains("to fix:"), "{why}");

    let e = lastmile_backends::get("garbage_vendor").unwrap_err();
    assert!(
        e.contains("not available") && e.contains("shared library"),
        "{e}"
    );
    assert!(lastmile_backends::get("cpu-ref").is_ok());
    assert!(
        lastmile_backends::all()
            .iter()
            .any(|e| e.name == "cpu-ref" && e.status.is_ok())
    );
}
