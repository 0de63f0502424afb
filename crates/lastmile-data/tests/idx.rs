//! idx reader: round trips, a table of corruptions with their exact messages, and a seeded
//! mutation run (the in-test stand-in for fuzzing).

mod common;

use std::path::Path;

use common::{gzip, idx, idx_typed, images, temp_dir};
use lastmile_data::{DataError, IdxArray, load_idx_pair, load_mnist, read_idx, read_idx_bytes};
use rand_chacha::ChaCha8Rng;
use rand_chacha::rand_core::{RngCore, SeedableRng};

fn digit_names() -> Vec<String> {
    (0..10).map(|d| d.to_string()).collect()
}

#[test]
fn round_trip_raw_and_gzip() {
    let dir = temp_dir("roundtrip");
    let cases: Vec<(Vec<u32>, Vec<u8>)> = vec![
        (vec![5], vec![1, 2, 3, 4, 5]),
        (vec![0], vec![]),
        (vec![2, 3], (0..6).collect()),
        (vec![3, 4, 5], images(3, 4, 5)),
        (vec![2, 2, 2, 2], (0..16).collect()),
        (vec![2, 0, 7], vec![]),
    ];
    for (i, (dims, data)) in cases.iter().enumerate() {
        let bytes = idx(dims, data);
        let want = IdxArray {
            dims: dims.iter().map(|&d| d as usize).collect(),
            data: data.clone(),
        };
        let raw = dir.write(&format!("case{i}"), &bytes);
        let gz = dir.write(&format!("case{i}.gz"), &gzip(&bytes));
        assert_eq!(read_idx(&raw).unwrap(), want, "raw case {i}");
        assert_eq!(read_idx(&gz).unwrap(), want, "gzip case {i}");
        assert_eq!(
            read_idx_bytes(&bytes, &raw).unwrap(),
            want,
            "in-memory case {i}"
        );
        // gzip is detected by magic, not by name
        let gz_no_ext = dir.write(&format!("case{i}-gz-no-ext"), &gzip(&bytes));
        assert_eq!(
            read_idx(&gz_no_ext).unwrap(),
            want,
            "gzip without .gz case {i}"
        );
    }
}

#[test]
fn concatenated_gzip_members_are_one_stream() {
    let bytes = idx(&[2, 3], &[1, 2, 3, 4, 5, 6]);
    let mut two = gzip(&bytes[..7]);
    two.extend_from_slice(&gzip(&bytes[7..]));
    let got = read_idx_bytes(&two, Path::new("two-members.gz")).unwrap();
    assert_eq!(got.dims, vec![2, 3]);
    assert_eq!(got.data, vec![1, 2, 3, 4, 5, 6]);
}

#[test]
fn idx_pair_round_trip_and_mnist_layout() {
    let dir = temp_dir("pair");
    let (n, h, w) = (6, 4, 3);
    let pix = images(n, h, w);
    let labels = [0u8, 9, 3, 3, 1, 0];
    // MNIST layout: raw train files, gzip'd test files (both must be accepted).
    dir.write("train-images-idx3-ubyte", &idx(&[6, 4, 3], &pix));
    dir.write("train-labels-idx1-ubyte", &idx(&[6], &labels));
    dir.write(
        "t10k-images-idx3-ubyte.gz",
        &gzip(&idx(&[2, 4, 3], &pix[..24])),
    );
    dir.write("t10k-labels-idx1-ubyte.gz", &gzip(&idx(&[2], &labels[..2])));

    let train = load_mnist(dir.path(), lastmile_data::Split::Train).unwrap();
    assert_eq!(train.name, "mnist-train");
    assert_eq!(
        (train.len(), train.height, train.width, train.channels),
        (6, 4, 3, 1)
    );
    assert_eq!(train.max_value, 255);
    assert_eq!(train.pixels, pix);
    assert_eq!(train.labels, labels);
    assert_eq!(train.image(1), &pix[12..24]);
    assert_eq!(train.class_counts(), vec![2, 1, 0, 2, 0, 0, 0, 0, 0, 1]);

    let test = load_mnist(dir.path(), lastmile_data::Split::Test).unwrap();
    assert_eq!(test.name, "mnist-test");
    assert_eq!(test.len(), 2);

    let fashion =
        lastmile_data::load_fashion_mnist(dir.path(), lastmile_data::Split::Test).unwrap();
    assert_eq!(fashion.class_names[0], "T-shirt/top");
    assert_eq!(fashion.class_names[9], "Ankle boot");
}

/// What a corruption case feeds the loader.
enum Input {
    /// A single idx file read with `read_idx`.
    Single(Vec<u8>),
    /// An (images, labels) pair read with `load_idx_pair`; `blame_labels` says which file the
    /// error must name.
    Pair {
        images: Vec<u8>,
        labels: Vec<u8>,
        blame_labels: bool,
    },
}

struct Case {
    name: &'static str,
    input: Input,
    /// The file name used on disk (".gz" or not does not matter to the reader).
    file: &'static str,
    /// Fragments the error message must contain (besides the file name).
    expect: Vec<String>,
}

fn single(name: &'static str, file: &'static str, bytes: Vec<u8>, expect: &[&str]) -> Case {
    Case {
        name,
        input: Input::Single(bytes),
        file,
        expect: expect.iter().map(|s| s.to_string()).collect(),
    }
}

fn corruption_cases() -> Vec<Case> {
    let good = idx(&[2, 3, 3], &images(2, 3, 3)); // 16-byte header + 18 data bytes
    let good_labels = idx(&[2], &[1, 2]);
    let mut cases = Vec::new();

    let mut bad_magic = good.clone();
    bad_magic[0] = 0x12;
    bad_magic[1] = 0x34;
    cases.push(single(
        "bad magic byte 0",
        "bad-magic",
        bad_magic,
        &["byte 0: bad idx magic: expected 0x00 0x00 <type> <ndims>, found 0x12 0x34 0x08 0x03"],
    ));

    let mut bad_magic1 = good.clone();
    bad_magic1[1] = 0x01;
    cases.push(single(
        "bad magic byte 1",
        "bad-magic1",
        bad_magic1,
        &["byte 1: bad idx magic"],
    ));

    cases.push(single(
        "PNG file",
        "image.png",
        b"\x89PNG\r\n\x1a\n rest".to_vec(),
        &["byte 0: bad idx magic", "found 0x89 0x50 0x4e 0x47"],
    ));

    cases.push(single(
        "unsupported type int32",
        "int32-idx3-ubyte",
        idx_typed(0x0c, &[1, 1, 1], &[0, 0, 0, 1]),
        &["byte 2: idx data type 0x0c (int32) is not supported, expected 0x08 (unsigned byte)"],
    ));

    cases.push(single(
        "unsupported type float32 (gzip)",
        "float-idx.gz",
        gzip(&idx_typed(0x0d, &[1], &[0, 0, 0, 0])),
        &["byte 2: idx data type 0x0d (float32) is not supported"],
    ));

    cases.push(single(
        "unknown type",
        "weird-type",
        idx_typed(0x42, &[1], &[0]),
        &["byte 2: idx data type 0x42 (unknown type) is not supported"],
    ));

    cases.push(single(
        "ndims 0",
        "ndims0",
        vec![0, 0, 8, 0],
        &["byte 3: idx ndims 0 is not supported, expected 1..=4"],
    ));

    let mut nd9 = vec![0, 0, 8, 9];
    nd9.extend_from_slice(&[0, 0, 0, 1].repeat(9));
    nd9.push(7);
    cases.push(single(
        "ndims 9",
        "ndims9",
        nd9,
        &["byte 3: idx ndims 9 is not supported"],
    ));

    cases.push(single(
        "empty file",
        "empty",
        vec![],
        &["byte 0: file ends inside the idx header: magic, type and ndims need 4 bytes, found 0"],
    ));

    cases.push(single(
        "truncated before ndims",
        "short-header",
        vec![0, 0, 8],
        &["byte 3: file ends inside the idx header: magic, type and ndims need 4 bytes, found 3"],
    ));

    cases.push(single(
        "truncated inside dims",
        "short-dims",
        good[..10].to_vec(),
        &["byte 10: file ends inside the idx header: 3 dimensions need 16 bytes, found 10"],
    ));

    cases.push(single(
        "truncated inside dims (gzip)",
        "short-dims.gz",
        gzip(&good[..10]),
        &["byte 10: file ends inside the idx header: 3 dimensions need 16 bytes, found 10"],
    ));

    cases.push(single(
        "truncated data",
        "short-data",
        good[..good.len() - 1].to_vec(),
        &["byte 33: data truncated: dims 2×3×3 need 18 data bytes after the 16-byte header, found 17"],
    ));

    cases.push(single(
        "truncated data (gzip)",
        "short-data.gz",
        gzip(&good[..20]),
        &[
            "byte 20: data truncated: dims 2×3×3 need 18 data bytes",
            "found 4",
        ],
    ));

    let mut trailing = good.clone();
    trailing.extend_from_slice(&[1, 2, 3]);
    cases.push(single(
        "trailing bytes",
        "trailing",
        trailing.clone(),
        &["byte 34: 3 trailing bytes after the 18 data bytes that dims 2×3×3 describe"],
    ));
    cases.push(single(
        "trailing bytes (gzip)",
        "trailing.gz",
        gzip(&trailing),
        &["byte 34: 3 trailing bytes"],
    ));

    // Tiny array whose header read already swallows the trailing bytes.
    cases.push(single(
        "trailing bytes after 1-D (gzip)",
        "trailing1d.gz",
        gzip(&idx(&[2], &[1, 2, 3, 4, 5, 6, 7])),
        &["byte 10: 5 trailing bytes after the 2 data bytes that dims 2 describe"],
    ));

    // (2^32-1)^2 fits in u64 but (2^32-1)^3 does not; on 32-bit the second dim overflows.
    let overflow_at = if usize::BITS == 64 {
        "byte 12:"
    } else {
        "byte 8:"
    };
    cases.push(single(
        "dims overflow",
        "huge-dims",
        idx(&[u32::MAX; 4], &[]),
        &[
            overflow_at,
            "overflow: the element count does not fit in usize",
        ],
    ));

    let gz = gzip(&good);
    cases.push(single(
        "gzip truncated",
        "cut.gz",
        gz[..gz.len() / 2].to_vec(),
        &["gzip stream error"],
    ));

    let mut bad_crc = gz.clone();
    let crc_pos = bad_crc.len() - 8;
    bad_crc[crc_pos] ^= 0xff;
    cases.push(single(
        "gzip bad CRC",
        "bad-crc.gz",
        bad_crc,
        &["byte 34 of the decompressed stream: gzip stream error"],
    ));

    let mut bad_len = gz.clone();
    let len_pos = bad_len.len() - 4;
    bad_len[len_pos] ^= 0x01;
    cases.push(single(
        "gzip bad length trailer",
        "bad-isize.gz",
        bad_len,
        &["gzip stream error"],
    ));

    let mut garbage = gz.clone();
    for b in &mut garbage[10..gz.len() - 8] {
        *b = 0xff;
    }
    cases.push(single(
        "gzip garbage deflate data",
        "garbage.gz",
        garbage,
        &["byte 0 of the decompressed stream: gzip stream error"],
    ));

    let mut gz_trailing_garbage = gz.clone();
    gz_trailing_garbage.extend_from_slice(b"not gzip");
    cases.push(single(
        "garbage after gzip member",
        "tail-garbage.gz",
        gz_trailing_garbage,
        &["byte 34 of the decompressed stream: gzip stream error"],
    ));

    cases.push(single(
        "gzip header only",
        "magic-only.gz",
        vec![0x1f, 0x8b],
        &["byte 0 of the decompressed stream: gzip stream error"],
    ));

    cases.push(Case {
        name: "labels count mismatch",
        input: Input::Pair {
            images: good.clone(),
            labels: idx(&[3], &[1, 2, 3]),
            blame_labels: true,
        },
        file: "mismatch-labels-idx1-ubyte",
        expect: vec!["byte 4: labels file has 3 labels, expected 2 to match images file".into()],
    });

    cases.push(Case {
        name: "label out of range",
        input: Input::Pair {
            images: good.clone(),
            labels: idx(&[2], &[3, 10]),
            blame_labels: true,
        },
        file: "range-labels-idx1-ubyte",
        expect: vec![
            "byte 9: label 10 of example 1 is out of range, expected < 10 (number of classes)"
                .into(),
        ],
    });

    cases.push(Case {
        name: "image file with 2 dims",
        input: Input::Pair {
            images: idx(&[2, 9], &images(2, 3, 3)),
            labels: good_labels.clone(),
            blame_labels: false,
        },
        file: "flat-images-idx2-ubyte",
        expect: vec![
            "byte 3: images file has 2 dimension(s), expected 3 (count, height, width)".into(),
        ],
    });

    cases.push(Case {
        name: "labels file with 2 dims",
        input: Input::Pair {
            images: good.clone(),
            labels: idx(&[2, 1], &[1, 2]),
            blame_labels: true,
        },
        file: "2d-labels-idx1-ubyte",
        expect: vec!["byte 3: labels file has 2 dimension(s), expected 1 (count)".into()],
    });

    cases.push(Case {
        name: "zero-width images",
        input: Input::Pair {
            images: idx(&[2, 3, 0], &[]),
            labels: good_labels,
            blame_labels: false,
        },
        file: "thin-images-idx3-ubyte",
        expect: vec!["byte 12: image size 3×0 is empty".into()],
    });

    cases
}

#[test]
fn corruptions_give_precise_errors() {
    let dir = temp_dir("corrupt");
    let cases = corruption_cases();
    assert!(cases.len() >= 10);
    let mut failures = Vec::new();
    for case in &cases {
        let (result, blamed) = match &case.input {
            Input::Single(bytes) => {
                let p = dir.write(case.file, bytes);
                // The in-memory parser must agree with the file reader.
                let mem = read_idx_bytes(bytes, &p)
                    .map(|_| ())
                    .map_err(|e| e.to_string());
                let file = read_idx(&p).map(|_| ()).map_err(|e| e.to_string());
                if mem != file {
                    failures.push(format!(
                        "{}: read_idx_bytes {mem:?} != read_idx {file:?}",
                        case.name
                    ));
                }
                (read_idx(&p).map(|_| ()), p)
            }
            Input::Pair {
                images,
                labels,
                blame_labels,
            } => {
                let (img_name, lab_name) = if *blame_labels {
                    (format!("{}-images", case.file), case.file.to_string())
                } else {
                    (case.file.to_string(), format!("{}-labels", case.file))
                };
                let ip = dir.write(&img_name, images);
                let lp = dir.write(&lab_name, labels);
                let r = load_idx_pair(&ip, &lp, "t", digit_names()).map(|_| ());
                (r, if *blame_labels { lp } else { ip })
            }
        };
        let msg = match result {
            Ok(()) => {
                failures.push(format!("{}: loaded without error", case.name));
                continue;
            }
            Err(e) => e.to_string(),
        };
        println!("{:32} -> {msg}", case.name);
        let prefix = format!("{}: ", blamed.display());
        if !msg.starts_with(&prefix) {
            failures.push(format!(
                "{}: message does not start with {prefix:?}: {msg}",
                case.name
            ));
        }
        for frag in &case.expect {
            if !msg.contains(frag.as_str()) {
                failures.push(format!("{}: message lacks {frag:?}: {msg}", case.name));
            }
        }
    }
    assert!(
        failures.is_empty(),
        "{} case(s) failed:\n{}",
        failures.len(),
        failures.join("\n")
    );
}

#[test]
fn error_variants_carry_offsets() {
    let p = Path::new("x/y-idx1-ubyte");
    match read_idx_bytes(&[0, 0, 0x0c, 1], p) {
        Err(DataError::Format {
            path,
            offset,
            message,
        }) => {
            assert_eq!(path, p);
            assert_eq!(offset, 2);
            assert!(message.contains("int32"), "{message}");
        }
        other => panic!("expected a Format error, got {other:?}"),
    }
    let gz = gzip(&idx(&[4], &[1, 2, 3, 4]));
    match read_idx_bytes(&gz[..gz.len() - 3], p) {
        Err(DataError::Gzip { path, .. }) => assert_eq!(path, p),
        other => panic!("expected a Gzip error, got {other:?}"),
    }
}

#[test]
fn missing_files_name_the_fix() {
    let dir = temp_dir("missing");
    let e = read_idx(&dir.path().join("nope-idx1-ubyte"))
        .unwrap_err()
        .to_string();
    assert!(e.contains("nope-idx1-ubyte: not found"), "{e}");
    let e = load_mnist(&dir.path().join("mnist"), lastmile_data::Split::Train)
        .unwrap_err()
        .to_string();
    assert!(e.contains("train-images-idx3-ubyte: not found"), "{e}");
    assert!(e.contains("also tried"), "{e}");
    assert!(e.contains("train-images-idx3-ubyte.gz"), "{e}");
    assert!(e.contains("does not exist"), "{e}");
    assert!(e.contains("cargo xtask data"), "{e}");
}

/// Applies one random mutation to `bytes`.
fn mutate(rng: &mut ChaCha8Rng, bytes: &mut Vec<u8>) {
    let pick = |rng: &mut ChaCha8Rng, n: usize| (rng.next_u64() % n.max(1) as u64) as usize;
    match rng.next_u64() % 7 {
        0 => {
            let at = pick(rng, bytes.len());
            bytes.truncate(at);
        }
        1 if !bytes.is_empty() => {
            let at = pick(rng, bytes.len());
            bytes[at] ^= 1 << (rng.next_u64() % 8);
        }
        2 if !bytes.is_empty() => {
            let at = pick(rng, bytes.len());
            bytes[at] = rng.next_u64() as u8;
        }
        3 => {
            let at = pick(rng, bytes.len() + 1);
            bytes.insert(at, rng.next_u64() as u8);
        }
        4 if !bytes.is_empty() => {
            let at = pick(rng, bytes.len());
            bytes.remove(at);
        }
        5 => {
            // Aim at the header, where the interesting checks are.
            let at = pick(rng, bytes.len().min(20));
            if at < bytes.len() {
                bytes[at] = [0x00, 0x01, 0x08, 0x0c, 0xff, 0x80][pick(rng, 6)];
            }
        }
        _ => bytes.extend((0..pick(rng, 5)).map(|_| rng.next_u64() as u8)),
    }
}

#[test]
fn seeded_mutations_never_panic() {
    let mut rng = ChaCha8Rng::seed_from_u64(0x5eed);
    let bases = [
        idx(&[3, 4, 5], &images(3, 4, 5)),
        idx(&[7], &[1, 2, 3, 4, 5, 6, 7]),
        idx(&[2, 2, 2, 2], &(0..16).collect::<Vec<u8>>()),
    ];
    let path = Path::new("mutant-idx3-ubyte");
    let (mut ok, mut err) = (0, 0);
    for round in 0..3000 {
        let base = &bases[round % bases.len()];
        let compressed = round % 2 == 1;
        let mut bytes = if compressed { gzip(base) } else { base.clone() };
        for _ in 0..=(rng.next_u64() % 4) {
            mutate(&mut rng, &mut bytes);
        }
        match read_idx_bytes(&bytes, path) {
            Ok(a) => {
                ok += 1;
                let want: usize = a.dims.iter().product();
                assert_eq!(
                    a.data.len(),
                    want,
                    "round {round}: data length disagrees with dims"
                );
                assert!((1..=4).contains(&a.dims.len()), "round {round}");
            }
            Err(e) => {
                err += 1;
                let msg = e.to_string();
                assert!(
                    msg.starts_with("mutant-idx3-ubyte: "),
                    "round {round}: {msg}"
                );
            }
        }
    }
    println!("mutations: {ok} parsed, {err} rejected");
    assert!(
        err > 1000,
        "the mutations should mostly break the file ({err} rejected)"
    );
}

mod prop {
    use super::*;
    use proptest::prelude::*;

    proptest! {
        #![proptest_config(ProptestConfig { cases: 512, ..ProptestConfig::default() })]

        /// Arbitrary bytes behind a plausible prefix: parse or fail, never panic.
        #[test]
        fn arbitrary_bytes_never_panic(prefix in 0usize..4, body in proptest::collection::vec(any::<u8>(), 0..64)) {
            let mut bytes = [0u8, 0, 8, 1][..prefix].to_vec();
            bytes.extend_from_slice(&body);
            let p = Path::new("prop-idx");
            if let Ok(a) = read_idx_bytes(&bytes, p) {
                prop_assert_eq!(a.data.len(), a.dims.iter().product::<usize>());
            }
            let gz = gzip(&bytes);
            let raw = read_idx_bytes(&bytes, p).map_err(|e| e.to_string());
            let via_gz = read_idx_bytes(&gz, p).map_err(|e| e.to_string());
            // gzip is transparent: same outcome (errors can differ only if the raw bytes
            // themselves start with the gzip magic, which the prefix rules out when non-empty).
            if prefix > 0 {
                prop_assert_eq!(raw, via_gz);
            }
        }

        /// Valid files of any shape round-trip through raw and gzip.
        #[test]
        fn valid_files_round_trip(dims in proptest::collection::vec(0u32..5, 1..=4), seed in any::<u64>()) {
            let n: usize = dims.iter().map(|&d| d as usize).product();
            let data: Vec<u8> = (0..n).map(|i| (seed as usize).wrapping_add(i * 31) as u8).collect();
            let bytes = idx(&dims, &data);
            let p = Path::new("prop-valid");
            let a = read_idx_bytes(&bytes, p).unwrap();
            prop_assert_eq!(&a.data, &data);
            let b = read_idx_bytes(&gzip(&bytes), p).unwrap();
            prop_assert_eq!(a, b);
        }
    }
}
