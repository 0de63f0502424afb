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
}

impl Entry {
    fn available(backend: Box<dyn Backend>, description: &str) -> Self {
        Entry {
            name: backend.name().to_string(),
            tier: backend.tier().to_string(),
            description: description.into(),
            status: Ok(backend),
        }
    }

    /// Capabilities, if available.
    pub fn capabilities(&self) -> Option<Capabilities> {
        self.status.as_ref().ok().map(|b| b.capabilities())
    }
}

/// Every backend of this build, in preference order (fastest exact first, reference last).
pub fn all() -> Vec<Entry> {
    vec![Entry::available(
        Box::new(CpuRef),
        "portable scalar reference: the executable specification",
    )]
}

/// Names of every backend of this build.
pub fn names() -> Vec<String> {
    all().into_iter().map(|e| e.name).collect()
}

/// The backend called `name`, or an error listing the valid names or saying why it is unavailable.
pub fn get(name: &str) -> Result<Box<dyn Backend>, String> {
    let entries = all();
    let valid: Vec<String> = entries.iter().map(|e| e.name.clone()).collect();
    match entries.into_iter().find(|e| e.name == name) {
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
}
