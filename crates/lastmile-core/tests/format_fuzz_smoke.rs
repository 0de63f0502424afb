//! A deterministic stand-in for `cargo fuzz run model_file` (which needs nightly): mutate valid
//! model files thousands of times and check the reader never panics, and that whatever it
//! accepts re-encodes to a model that decodes to itself.

#[path = "format_common.rs"]
mod common;

use std::panic::{AssertUnwindSafe, catch_unwind};

use common::{Lcg, float_model, quant_model};
use lastmile_core::WeightBits;
use lastmile_core::format::{self, AnyModel};

const ITERATIONS: usize = 3000;

/// Mutates a file: either the raw bytes (the header length then usually disagrees with the
/// rest), or only the JSON header text with the length fixed up, so the mutation reaches the
/// metadata, graph and tensor checks behind the container.
fn mutate(rng: &mut Lcg, bytes: &mut Vec<u8>) -> String {
    let n = u64::from_le_bytes(bytes[..8].try_into().unwrap()) as usize;
    if rng.below(2) == 0 {
        return format!("raw: {}", mutate_buf(rng, bytes, true));
    }
    let mut header = bytes[8..8 + n].to_vec();
    let log = mutate_buf(rng, &mut header, false);
    let data = bytes.split_off(8 + n);
    bytes.clear();
    bytes.extend_from_slice(&(header.len() as u64).to_le_bytes());
    bytes.extend_from_slice(&header);
    bytes.extend_from_slice(&data);
    format!("header: {log}")
}

/// One to three random mutations of `bytes`; `len_edits` allows rewriting the first 8 bytes as
/// a header length.
fn mutate_buf(rng: &mut Lcg, bytes: &mut Vec<u8>, len_edits: bool) -> String {
    let mut log = String::new();
    for _ in 0..1 + rng.below(3) {
        let pos = rng.below(bytes.len().max(1));
        match rng.below(10) {
            0 if !bytes.is_empty() => {
                let bit = rng.below(8);
                let p = pos.min(bytes.len() - 1);
                bytes[p] ^= 1 << bit;
                log += &format!("flip bit {bit} at {p}; ");
            }
            1 if !bytes.is_empty() => {
                let v = [0u8, 0xFF, 0x7F, 0x80, b'0', b'9', b'-', b'"', b'{', b']'][rng.below(10)];
                let p = pos.min(bytes.len() - 1);
                bytes[p] = v;
                log += &format!("set {p} = {v:#04x}; ");
            }
            2 => {
                bytes.truncate(pos);
                log += &format!("truncate to {pos}; ");
            }
            3 => {
                let n = 1 + rng.below(16);
                let fill: Vec<u8> = (0..n).map(|_| rng.below(256) as u8).collect();
                let p = pos.min(bytes.len());
                bytes.splice(p..p, fill);
                log += &format!("insert {n} bytes at {p}; ");
            }
            4 if len_edits && bytes.len() >= 8 => {
                let old = u64::from_le_bytes(bytes[..8].try_into().unwrap());
                let new = match rng.below(4) {
                    0 => old.wrapping_add(1 + rng.below(64) as u64),
                    1 => old.wrapping_sub(1 + rng.below(64) as u64),
                    2 => u64::MAX - rng.below(16) as u64,
                    _ => rng.next_u64() % (bytes.len() as u64 + 16),
                };
                bytes[..8].copy_from_slice(&new.to_le_bytes());
                log += &format!("header length {old} -> {new}; ");
            }
            5 | 6 => {
                // Change a digit: shapes, offsets, strides, zero points, scales, versions...
                let digits: Vec<usize> = (0..bytes.len())
                    .filter(|&i| bytes[i].is_ascii_digit())
                    .collect();
                if !digits.is_empty() {
                    let p = digits[rng.below(digits.len())];
                    let d = b'0' + rng.below(10) as u8;
                    bytes[p] = d;
                    log += &format!("digit at {p} = {}; ", d as char);
                }
            }
            7 if !bytes.is_empty() => {
                let n = 1 + rng.below(8);
                let p = pos.min(bytes.len() - 1);
                bytes.drain(p..(p + n).min(bytes.len()));
                log += &format!("delete {n} at {p}; ");
            }
            8 if !bytes.is_empty() => {
                // Duplicate a chunk (repeats JSON fragments and tensor bytes).
                let p = pos.min(bytes.len() - 1);
                let n = (1 + rng.below(32)).min(bytes.len() - p);
                let chunk = bytes[p..p + n].to_vec();
                let q = rng.below(bytes.len() + 1);
                bytes.splice(q..q, chunk);
                log += &format!("copy {n} from {p} to {q}; ");
            }
            _ => {
                // Swap two bytes (moves quotes, brackets and digits around).
                if bytes.len() >= 2 {
                    let q = rng.below(bytes.len());
                    bytes.swap(pos, q);
                    log += &format!("swap {pos} and {q}; ");
                }
            }
        }
    }
    log
}

#[test]
fn mutated_model_files_never_panic_the_reader() {
    let seeds = [
        format::quant_to_bytes(&quant_model(WeightBits::W8)).unwrap(),
        format::quant_to_bytes(&quant_model(WeightBits::W16)).unwrap(),
        format::float_to_bytes(&float_model()).unwrap(),
    ];
    let mut rng = Lcg(0x5eed_1a57_0f00_d5e1);
    let (mut accepted, mut rejected) = (0usize, 0usize);
    for i in 0..ITERATIONS {
        let mut bytes = seeds[i % seeds.len()].clone();
        let log = mutate(&mut rng, &mut bytes);
        let result = catch_unwind(AssertUnwindSafe(|| format::from_bytes(&bytes)));
        match result {
            Err(_) => panic!("iteration {i}: from_bytes panicked after: {log}"),
            Ok(Err(e)) => {
                assert!(
                    !e.field.is_empty() && !e.message.is_empty(),
                    "iteration {i}: empty error {e:?}"
                );
                rejected += 1;
            }
            Ok(Ok(model)) => {
                // Accepted: it is a valid model, so it re-encodes and decodes to itself.
                let again = model.to_bytes().unwrap_or_else(|e| {
                    panic!("iteration {i}: accepted model does not re-encode: {e} ({log})")
                });
                let back: AnyModel = format::from_bytes(&again).unwrap();
                assert_eq!(back, model, "iteration {i}: {log}");
                accepted += 1;
            }
        }
    }
    // Sanity: the mutations are neither all harmless nor all trivially fatal.
    assert!(
        rejected > ITERATIONS / 2,
        "accepted {accepted}, rejected {rejected}"
    );
}

/// `LASTMILE_FUZZ_SEEDS=<dir> cargo test -p lastmile-core --test format_fuzz_smoke` writes the
/// valid model files used above into `<dir>` (e.g. `fuzz/corpus/model_file`) as a fuzz corpus.
#[test]
fn write_fuzz_seeds_if_asked() {
    let Some(dir) = std::env::var_os("LASTMILE_FUZZ_SEEDS") else {
        return;
    };
    let dir = std::path::PathBuf::from(dir);
    std::fs::create_dir_all(&dir).unwrap();
    let files = [
        (
            "tiny-8w8a.lmm",
            format::quant_to_bytes(&quant_model(WeightBits::W8)).unwrap(),
        ),
        (
            "tiny-16w8a.lmm",
            format::quant_to_bytes(&quant_model(WeightBits::W16)).unwrap(),
        ),
        (
            "tiny-float.lmm",
            format::float_to_bytes(&float_model()).unwrap(),
        ),
    ];
    for (name, bytes) in files {
        std::fs::write(dir.join(name), bytes).unwrap();
    }
}
