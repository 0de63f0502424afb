//! scikit-learn's 8×8 handwritten digits, embedded in the binary (zero-setup default dataset).
//!
//! Provenance and licence: `assets/DIGITS-LICENSE.md` (UCI Optical Recognition of Handwritten
//! Digits, Alpaydin & Kaynak 1998, CC BY 4.0; file as shipped in scikit-learn 1.9.1, BSD-3-Clause).

use std::io::Read;
use std::sync::OnceLock;

use flate2::read::GzDecoder;

use crate::{Dataset, Split, digit_class_names};

/// `sklearn/datasets/data/digits.csv.gz` from the scikit-learn 1.9.1 wheel, byte for byte.
static DIGITS_CSV_GZ: &[u8] = include_bytes!("../assets/digits.csv.gz");

const SIDE: usize = 8;
const PIXELS: usize = SIDE * SIDE;
const ROWS: usize = 1797;

/// Seed of the fixed train/test split returned by [`digits_split`].
pub const DIGITS_SPLIT_SEED: u64 = 0;
/// Fraction of each class that goes to the training part in [`digits_split`].
pub const DIGITS_TRAIN_FRACTION: f64 = 0.8;

/// All 1797 sklearn digits: 8×8×1 images with values `0..=16` and labels `0..=9`, in file order.
///
/// Parsed once on first use (about 2 ms) and cloned afterwards.
///
/// # Panics
///
/// Only if the embedded asset is corrupt, which the crate's tests rule out.
pub fn digits() -> Dataset {
    static CACHE: OnceLock<Dataset> = OnceLock::new();
    CACHE
        .get_or_init(|| parse(DIGITS_CSV_GZ).expect("embedded assets/digits.csv.gz is corrupt"))
        .clone()
}

/// The fixed split of [`digits`] used everywhere in the project:
/// `digits().split(0.8, 0)`, i.e. stratified by class, `round(0.8 * class count)` examples of
/// each class (chosen with seed 0) go to [`Split::Train`] and the rest to [`Split::Test`].
/// Both parts keep the original file order. That gives 1438 training and 359 test images.
///
/// The parts are named `digits-train` and `digits-test`.
pub fn digits_split(split: Split) -> Dataset {
    let (train, test) = digits().split(DIGITS_TRAIN_FRACTION, DIGITS_SPLIT_SEED);
    let mut part = match split {
        Split::Train => train,
        Split::Test => test,
    };
    part.name = format!("digits-{}", split.as_str());
    part
}

/// Decompresses and parses the CSV: one row per image, 64 pixels then the label.
fn parse(gz: &[u8]) -> Result<Dataset, String> {
    let mut text = String::new();
    GzDecoder::new(gz)
        .read_to_string(&mut text)
        .map_err(|e| format!("gzip: {e}"))?;
    let mut pixels = Vec::with_capacity(ROWS * PIXELS);
    let mut labels = Vec::with_capacity(ROWS);
    for (row, line) in text.lines().enumerate() {
        let mut fields = 0;
        for field in line.split(',') {
            let v: u8 = field
                .trim()
                .parse()
                .map_err(|e| format!("row {row}: field {field:?}: {e}"))?;
            if fields < PIXELS {
                if v > 16 {
                    return Err(format!("row {row}: pixel {v} > 16"));
                }
                pixels.push(v);
            } else {
                if v > 9 {
                    return Err(format!("row {row}: label {v} > 9"));
                }
                labels.push(v);
            }
            fields += 1;
        }
        if fields != PIXELS + 1 {
            return Err(format!(
                "row {row}: {fields} fields, expected {}",
                PIXELS + 1
            ));
        }
    }
    if labels.len() != ROWS {
        return Err(format!("{} rows, expected {ROWS}", labels.len()));
    }
    Ok(Dataset {
        name: "digits".to_owned(),
        height: SIDE,
        width: SIDE,
        channels: 1,
        pixels,
        max_value: 16,
        labels,
        num_classes: 10,
        class_names: digit_class_names(),
    })
}
