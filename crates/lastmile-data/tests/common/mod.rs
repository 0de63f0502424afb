//! Helpers shared by the integration tests: idx encoding and unique temp files.
#![allow(dead_code)] // each test binary uses a different subset

use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};

use flate2::Compression;
use flate2::write::GzEncoder;

/// Encodes an idx file with element type `data_type` (normally 0x08).
pub fn idx_typed(data_type: u8, dims: &[u32], data: &[u8]) -> Vec<u8> {
    let mut out = vec![0, 0, data_type, dims.len() as u8];
    for d in dims {
        out.extend_from_slice(&d.to_be_bytes());
    }
    out.extend_from_slice(data);
    out
}

/// Encodes an unsigned-byte idx file.
pub fn idx(dims: &[u32], data: &[u8]) -> Vec<u8> {
    idx_typed(0x08, dims, data)
}

/// Gzip-compresses `bytes` (one member).
pub fn gzip(bytes: &[u8]) -> Vec<u8> {
    let mut enc = GzEncoder::new(Vec::new(), Compression::default());
    enc.write_all(bytes).unwrap();
    enc.finish().unwrap()
}

/// A fresh, empty directory under the system temp dir, unique per process and call.
pub fn temp_dir(tag: &str) -> TempDir {
    static COUNTER: AtomicUsize = AtomicUsize::new(0);
    let n = COUNTER.fetch_add(1, Ordering::Relaxed);
    let dir = std::env::temp_dir().join(format!(
        "lastmile-data-test-{}-{tag}-{n}",
        std::process::id()
    ));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    TempDir(dir)
}

/// Removes the directory when dropped (best effort).
pub struct TempDir(pub PathBuf);

impl TempDir {
    pub fn path(&self) -> &Path {
        &self.0
    }

    /// Writes `bytes` to `<dir>/<name>` and returns the path.
    pub fn write(&self, name: &str, bytes: &[u8]) -> PathBuf {
        let p = self.0.join(name);
        std::fs::write(&p, bytes).unwrap();
        p
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// A small deterministic image set: `n` images of `h`×`w`, pixel value depends on position.
pub fn images(n: usize, h: usize, w: usize) -> Vec<u8> {
    (0..n * h * w).map(|i| (i * 7 % 256) as u8).collect()
}
