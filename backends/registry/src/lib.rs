//! # lastmile-backends — which backends this machine can run
//!
//! One place that knows every backend compiled into this build, asks each
//! whether it can run here, and reports why not when it cannot (missing CPU
//! feature, missing SDK library, wrong ABI version). Nothing here panics:
//! an unavailable backend is listed with its reason.
#![forbid(unsafe_code)]
#![warn(missing_docs)]

use lastmile_backend_cpu_ref::CpuRef;
use lastmile_core::backend::{Backend, Capabilities};

/// A backend known to this build, available or not.
#[derive(Debug)]
pub struct Entry {
    /// Registry name (what `--backend` takes).
    pub name: String,
    /// Kernel tier or engine variant.
    pub tier: String,
    /// One-line description.
    pub description: String,
    /// The backend, or why it cannot run here.
    pub status: Result<Box<dyn Backend>, String>,
    /// The shared library, for backends loaded through the plugin C ABI.
    pub plugin: Option<std::path::PathBuf>,
}

impl Entry {
    fn available(backend: Box<dyn Backend>, description: &str) -> Self {
        Entry {
            name: backend.name().to_string(),
            tier: backend.tier().to_string(),
            description: description.into(),
            status: Ok(backend),
            plugin: None,
        }
    }

    /// A backend of this build that cannot run here, and why.
    fn unavailable(name: &str, tier: &str, description: &str, reason: String) -> Self {
        Entry {
            name: name.into(),
            tier: tier.into(),
            description: description.into(),
            status: Err(reason),
            plugin: None,
        }
    }

    /// Capabilities, if available.
    pub fn capabilities(&self) -> Option<Capabilities> {
        self.status.as_ref().ok().map(|b| b.capabilities())
    }
}

/// Every backend of this build, in preference order (fastest exact first, reference last).
pub fn all() -> Vec<Entry> {
    let mut all = x86();
    all.extend(neon());
    all.push(Entry::available(
        Box::new(CpuRef),
        "portable scalar reference: the executable specification",
    ));
    all.extend(engines());
    // An in-tree vendor backend registers like this (behind its own cargo feature).
    #[cfg(feature = "template")]
    all.push(match lastmile_backend_template::Template::new() {
        Ok(b) => Entry::available(Box::new(b), "the backend template: delegates to cpu-ref"),
        Err(e) => Entry::unavailable("template", "-", "the backend template", e.to_string()),
    });
    all.extend(plugins());
    all
}

/// Vendor engines loaded at run time (after the reference: not bit-exact, never `best()`),
/// each available with its version or with why not and the command that fixes it.
fn engines() -> Vec<Entry> {
    use lastmile_backend_onnxruntime::OnnxRuntime;
    let reason = |e: lastmile_core::BackendError| match e {
        lastmile_core::BackendError::Unavailable(why) => why,
        e => e.to_string(),
    };
    use lastmile_backend_xnnpack::Xnnpack;
    const ORT: &str =
        "ONNX Runtime CPU EP (QLinearConv/QDQ model, libonnxruntime loaded at run time)";
    const XNN: &str =
        "XNNPACK qc8 conv/linear operators per layer (libXNNPACK.so.0 loaded at run time)";
    vec![
        match OnnxRuntime::new() {
            Ok(b) => Entry::available(Box::new(b), ORT),
            Err(e) => Entry::unavailable(OnnxRuntime::NAME, "-", ORT, reason(e)),
        },
        match Xnnpack::new() {
            Ok(b) => Entry::available(Box::new(b), XNN),
            Err(e) => Entry::unavailable(Xnnpack::NAME, "-", XNN, reason(e)),
        },
    ]
}

/// Plugin libraries added at run time (the CLI's `--plugin PATH`), after `LASTMILE_PLUGINS`.
static EXTRA_PLUGINS: std::sync::Mutex<Vec<std::path::PathBuf>> = std::sync::Mutex::new(Vec::new());

/// Adds plugin libraries (the CLI's `--plugin PATH`) to those of `LASTMILE_PLUGINS`: from
/// now on [`all`], [`get`] and [`plugins`] list them too.
pub fn add_plugins(paths: &[std::path::PathBuf]) {
    let mut extra = EXTRA_PLUGINS.lock().unwrap_or_else(|p| p.into_inner());
    for p in paths {
        if !extra.contains(p) {
            extra.push(p.clone());
        }
    }
}

/// Every plugin path: `LASTMILE_PLUGINS` (separated like `PATH`), then [`add_plugins`]'.
pub fn plugin_paths() -> Vec<std::path::PathBuf> {
    let mut paths = lastmile_backend_plugin::paths_from_env();
    for p in EXTRA_PLUGINS
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .iter()
    {
        if !paths.contains(p) {
            paths.push(p.clone());
        }
    }
    paths
}

/// One entry per plugin library of [`plugin_paths`] (plugin C ABI, loaded with
/// `libloading`): the loaded backend, or why it cannot be used with the fix. A library that
/// fails to load is listed under its file name (`liblastmile_example_npu.so` →
/// `lastmile_example_npu`).
pub fn plugins() -> Vec<Entry> {
    use lastmile_backend_plugin::{Plugin, name_from_path};
    plugin_paths()
        .into_iter()
        .map(|path| match Plugin::load(&path) {
            Ok(p) => {
                let d = format!(
                    "{} [FFI plugin {}, C ABI v{}]",
                    p.description(),
                    path.display(),
                    lastmile_backend_plugin::ABI_VERSION
                );
                Entry {
                    plugin: Some(path),
                    ..Entry::available(Box::new(p), &d)
                }
            }
            Err(e) => {
                let why = match e {
                    lastmile_core::BackendError::Unavailable(why) => why,
                    e => e.to_string(),
                };
                let d = format!("FFI plugin {}", path.display());
                Entry {
                    plugin: Some(path.clone()),
                    ..Entry::unavailable(&name_from_path(&path), "-", &d, why)
                }
            }
        })
        .collect()
}

/// The x86_64 SIMD backend: its best tier here first (`LASTMILE_X86_TIER` pins one), then
/// every other SIMD tier, available or with the CPU features it lacks.
fn x86() -> Vec<Entry> {
    use lastmile_backend_x86::{Tier, X86};
    const WHAT: &str = "x86_64 SIMD kernels (avx2 / avx-vnni / avx512-vnni / amx tiers), bit-exact";
    let what = |t: Tier| t.description();
    let reason = |e: lastmile_core::BackendError| match e {
        lastmile_core::BackendError::Unavailable(why) => why,
        e => e.to_string(),
    };
    let mut out = Vec::new();
    let best = X86::best();
    let best_tier = best.as_ref().ok().map(|b| b.kernel_tier());
    out.push(match best {
        Ok(b) => {
            let d = what(b.kernel_tier());
            Entry::available(Box::new(b), d)
        }
        Err(e) => Entry::unavailable(X86::NAME, "-", WHAT, reason(e)),
    });
    for tier in [Tier::Amx, Tier::Avx512Vnni, Tier::AvxVnni, Tier::Avx2] {
        if Some(tier) == best_tier || !cfg!(target_arch = "x86_64") {
            continue;
        }
        out.push(match X86::with_tier(tier) {
            Ok(b) => Entry::available(Box::new(b), what(tier)),
            Err(e) => Entry::unavailable(X86::NAME, tier.name(), what(tier), reason(e)),
        });
    }
    out
}

/// The aarch64 NEON backend: its best tier here first (`LASTMILE_NEON_TIER` pins one), then
/// every other SIMD tier, available or with the CPU feature it lacks. On other
/// architectures, one entry saying so.
fn neon() -> Vec<Entry> {
    use lastmile_backend_neon::{Neon, Tier};
    const WHAT: &str = "aarch64 NEON kernels (neon / dotprod / i8mm tiers), bit-exact";
    let reason = |e: lastmile_core::BackendError| match e {
        lastmile_core::BackendError::Unavailable(why) => why,
        e => e.to_string(),
    };
    let best = Neon::best();
    let best_tier = best.as_ref().ok().map(|b| b.kernel_tier());
    let mut out = vec![match best {
        Ok(b) => Entry::available(Box::new(b), WHAT),
        Err(e) => Entry::unavailable(Neon::NAME, "-", WHAT, reason(e)),
    }];
    if cfg!(target_arch = "aarch64") {
        for tier in [Tier::I8mm, Tier::Dotprod, Tier::Neon] {
            if Some(tier) != best_tier {
                out.push(match Neon::with_tier(tier) {
                    Ok(b) => Entry::available(Box::new(b), WHAT),
                    Err(e) => Entry::unavailable(Neon::NAME, tier.name(), WHAT, reason(e)),
                });
            }
        }
    }
    out
}

/// Names of every backend of this build.
pub fn names() -> Vec<String> {
    let mut names: Vec<String> = all().into_iter().map(|e| e.name).collect();
    names.dedup();
    names
}

/// The backend called `name`, or an error listing the valid names or saying why it is unavailable.
pub fn get(name: &str) -> Result<Box<dyn Backend>, String> {
    let entries = all();
    let mut valid: Vec<String> = entries.iter().map(|e| e.name.clone()).collect();
    valid.dedup();
    // `name` picks the preferred entry of that name; `name/tier` a specific tier.
    match entries
        .into_iter()
        .find(|e| e.name == name || format!("{}/{}", e.name, e.tier) == name)
    {
        Some(Entry { status: Ok(b), .. }) => Ok(b),
        Some(Entry {
            status: Err(why), ..
        }) => Err(format!(
            "backend '{name}' is not available on this machine: {why}"
        )),
        None => Err(format!(
            "unknown backend '{name}'; this build has: {}",
            valid.join(", ")
        )),
    }
}

/// The preferred available backend (the first available entry of [`all`]).
pub fn best() -> Box<dyn Backend> {
    all()
        .into_iter()
        .find_map(|e| e.status.ok())
        .unwrap_or_else(|| Box::new(CpuRef))
}

#[cfg(test)]
mod tests {
    #[test]
    fn reference_is_always_available() {
        assert!(super::get("cpu-ref").is_ok());
        let e = super::get("nope").unwrap_err();
        assert!(e.contains("cpu-ref"), "{e}");
    }

    #[test]
    #[cfg(target_arch = "x86_64")]
    fn x86_is_preferred_and_every_tier_is_listed() {
        let all = super::all();
        assert_eq!(all[0].name, "x86");
        let tiers: Vec<&str> = all
            .iter()
            .filter(|e| e.name == "x86")
            .map(|e| e.tier.as_str())
            .collect();
        for t in ["avx2", "avx-vnni", "avx512-vnni", "amx"] {
            assert!(
                tiers.contains(&t) || all[0].tier == "scalar",
                "{t} missing from {tiers:?}"
            );
        }
        for e in all.iter().filter(|e| e.name == "x86") {
            match &e.status {
                Ok(_) => assert!(super::get(&format!("x86/{}", e.tier)).is_ok()),
                Err(why) => assert!(why.contains("lacks") || why.contains("AMX"), "{why}"),
            }
        }
    }

    #[test]
    fn ffi_engines_are_listed_with_a_version_or_the_fix() {
        let all = super::all();
        for (name, fix) in [
            ("onnxruntime", "cargo xtask sdk onnxruntime"),
            ("xnnpack", "cargo xtask sdk xnnpack"),
        ] {
            let e = all.iter().find(|e| e.name == name).expect("listed");
            match &e.status {
                Ok(b) => assert!(!b.capabilities().weight_bits.is_empty()),
                Err(why) => assert!(why.contains(fix), "{why}"),
            }
        }
        let best = super::best();
        assert!(!["onnxruntime", "xnnpack"].contains(&best.name()));
    }

    #[test]
    fn neon_is_listed_with_its_tiers_or_why_not() {
        let all = super::all();
        let neon: Vec<&super::Entry> = all.iter().filter(|e| e.name == "neon").collect();
        if cfg!(target_arch = "aarch64") {
            assert!(neon[0].status.is_ok(), "NEON is baseline on aarch64");
            assert!(
                all.iter().position(|e| e.name == "neon")
                    < all.iter().position(|e| e.name == "cpu-ref")
            );
            assert!(neon.len() >= 3, "best tier + the others");
        } else {
            assert_eq!(neon.len(), 1);
            let why = neon[0].status.as_ref().unwrap_err();
            assert!(why.contains("not an aarch64 build"), "{why}");
        }
    }
}
