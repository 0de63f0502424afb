//! Datasets for lastmile: idx files (MNIST, Fashion-MNIST), scikit-learn's 8×8 digits embedded
//! in the crate, and seeded, target-independent shuffling, splitting and batching.
//!
//! ```
//! use lastmile_data::{Split, digits_split};
//!
//! let train = digits_split(Split::Train);
//! assert_eq!((train.len(), train.height, train.width), (1438, 8, 8));
//! let mut x = vec![0.0f32; train.sample_len()];
//! for batch in train.batches(32, Some(1)) {
//!     for &i in &batch {
//!         train.image_f32(i, &mut x); // values in [0, 1]
//!         let _label = train.labels[i];
//!     }
//! }
//! ```
//!
//! Downloaded datasets live under [`data_dir`] (`LASTMILE_DATA`, default `./data`) and are
//! fetched by `cargo xtask data`. All randomness goes through [`permutation`]'s rule (see the
//! `shuffle` module docs), so a seed means the same thing on x86_64, aarch64, armv7 and Cortex-M.
#![forbid(unsafe_code)]

mod corrupt;
mod digits;
mod error;
mod idx;
mod shuffle;
mod sources;
pub mod speech;

pub use corrupt::Corruption;
pub use digits::{DIGITS_SPLIT_SEED, DIGITS_TRAIN_FRACTION, digits, digits_split};
pub use error::DataError;
pub use idx::{IdxArray, read_idx, read_idx_bytes};
pub use shuffle::permutation;
pub use sources::{
    DATASET_NAMES, FASHION_CLASS_NAMES, Split, data_dir, load_fashion_mnist, load_idx_pair,
    load_mnist, load_speech, open, open_in,
};

/// `"0"` .. `"9"`, the class names of digits and MNIST.
fn digit_class_names() -> Vec<String> {
    (0..10).map(|d: u8| d.to_string()).collect()
}

/// An in-memory labelled image dataset.
///
/// Images are stored one after another, each as height × width × channels bytes in HWC order
/// (so the whole buffer is NHWC). Invariants (upheld by every constructor in this crate; the
/// fields are public for convenience, so code that edits them must keep them):
/// `pixels.len() == len() * sample_len()`, every pixel `<= max_value`, every label
/// `< num_classes`, and `class_names.len() == num_classes`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Dataset {
    /// Short name such as `digits`, `mnist-train` or `fashion-mnist-test`.
    pub name: String,
    /// Image height in pixels.
    pub height: usize,
    /// Image width in pixels.
    pub width: usize,
    /// Channels per pixel (1 for every dataset currently provided).
    pub channels: usize,
    /// Raw pixel values `0..=max_value`, `len() * sample_len()` bytes.
    pub pixels: Vec<u8>,
    /// Largest possible pixel value: 16 for sklearn digits, 255 for (Fashion-)MNIST.
    pub max_value: u8,
    /// One label per image, `< num_classes`.
    pub labels: Vec<u8>,
    /// Number of classes.
    pub num_classes: usize,
    /// Human-readable class names, indexed by label.
    pub class_names: Vec<String>,
}

impl Dataset {
    /// Number of images.
    pub fn len(&self) -> usize {
        self.labels.len()
    }

    /// True if the dataset holds no images.
    pub fn is_empty(&self) -> bool {
        self.labels.is_empty()
    }

    /// Bytes per image: `height * width * channels`.
    pub fn sample_len(&self) -> usize {
        self.height * self.width * self.channels
    }

    /// The raw pixels of image `i` (HWC).
    ///
    /// # Panics
    ///
    /// If `i >= len()`.
    pub fn image(&self, i: usize) -> &[u8] {
        let s = self.sample_len();
        &self.pixels[i * s..(i + 1) * s]
    }

    /// Writes image `i` normalised to `[0, 1]` (`v as f32 / max_value as f32`) into `out`.
    ///
    /// Uses a true division (not a multiplication by the reciprocal), so results are correctly
    /// rounded and identical on every IEEE-754 target. A `max_value` of 0 yields zeros.
    ///
    /// # Panics
    ///
    /// If `i >= len()` or `out.len() != sample_len()`.
    pub fn image_f32(&self, i: usize, out: &mut [f32]) {
        let img = self.image(i);
        assert_eq!(
            out.len(),
            img.len(),
            "image_f32: output buffer length must equal sample_len()"
        );
        if self.max_value == 0 {
            out.fill(0.0);
            return;
        }
        let max = f32::from(self.max_value);
        for (o, &v) in out.iter_mut().zip(img) {
            *o = f32::from(v) / max;
        }
    }

    /// A new dataset holding the images at `indices`, in that order (repeats allowed).
    /// Keeps the name and class metadata.
    ///
    /// # Panics
    ///
    /// If an index is `>= len()`.
    pub fn subset(&self, indices: &[usize]) -> Dataset {
        let mut pixels = Vec::with_capacity(indices.len() * self.sample_len());
        let mut labels = Vec::with_capacity(indices.len());
        for &i in indices {
            pixels.extend_from_slice(self.image(i));
            labels.push(self.labels[i]);
        }
        Dataset {
            name: self.name.clone(),
            height: self.height,
            width: self.width,
            channels: self.channels,
            pixels,
            max_value: self.max_value,
            labels,
            num_classes: self.num_classes,
            class_names: self.class_names.clone(),
        }
    }

    /// The same images in the order of [`permutation`]`(len(), seed)`.
    pub fn shuffled(&self, seed: u64) -> Dataset {
        self.subset(&permutation(self.len(), seed))
    }

    /// Indices of each class, ascending. Has `max(num_classes, largest label + 1)` entries so
    /// that no image is ever dropped, even if the public fields were edited inconsistently.
    fn indices_by_class(&self) -> Vec<Vec<usize>> {
        let slots = self
            .labels
            .iter()
            .map(|&l| usize::from(l) + 1)
            .max()
            .unwrap_or(0);
        let mut by_class = vec![Vec::new(); slots.max(self.num_classes)];
        for (i, &l) in self.labels.iter().enumerate() {
            by_class[usize::from(l)].push(i);
        }
        by_class
    }

    /// Stratified, seeded split into two parts.
    ///
    /// For each class in label order, the class's indices are shuffled (one generator seeded
    /// with `seed`, shared across classes in that order) and the first
    /// `round(first_fraction * class_count)` go to the first part, the rest to the second.
    /// Both parts keep the original order of the images (shuffle later with
    /// [`Dataset::batches`] or [`Dataset::shuffled`]).
    ///
    /// # Panics
    ///
    /// If `first_fraction` is not within `0.0..=1.0`.
    pub fn split(&self, first_fraction: f64, seed: u64) -> (Dataset, Dataset) {
        assert!(
            (0.0..=1.0).contains(&first_fraction),
            "split: first_fraction must be within 0.0..=1.0, got {first_fraction}"
        );
        let mut rng = shuffle::rng(seed);
        let mut first = Vec::new();
        let mut second = Vec::new();
        for mut idx in self.indices_by_class() {
            shuffle::shuffle_with(&mut idx, &mut rng);
            // f64 multiply and round are exact IEEE operations: same count on every target.
            let k = ((idx.len() as f64 * first_fraction).round() as usize).min(idx.len());
            first.extend_from_slice(&idx[..k]);
            second.extend_from_slice(&idx[k..]);
        }
        first.sort_unstable();
        second.sort_unstable();
        (self.subset(&first), self.subset(&second))
    }

    /// Few-shot subset: exactly `k` examples of each of the `num_classes` classes, chosen with
    /// the same per-class shuffle as [`Dataset::split`], returned in original order.
    ///
    /// Fails with [`DataError::NotEnoughExamples`] if some class has fewer than `k` examples.
    pub fn per_class(&self, k: usize, seed: u64) -> Result<Dataset, DataError> {
        let mut rng = shuffle::rng(seed);
        let mut chosen = Vec::with_capacity(k * self.num_classes);
        for (class, mut idx) in self.indices_by_class().into_iter().enumerate() {
            if class >= self.num_classes {
                break; // labels outside the declared classes are not a class to sample
            }
            if idx.len() < k {
                return Err(DataError::NotEnoughExamples {
                    dataset: self.name.clone(),
                    class,
                    class_name: self.class_names.get(class).cloned().unwrap_or_default(),
                    have: idx.len(),
                    want: k,
                });
            }
            shuffle::shuffle_with(&mut idx, &mut rng);
            chosen.extend_from_slice(&idx[..k]);
        }
        chosen.sort_unstable();
        Ok(self.subset(&chosen))
    }

    /// Iterator over batches of image indices, `batch_size` at a time; the last batch may be
    /// shorter. `seed = None` keeps dataset order, `Some(s)` uses [`permutation`]`(len(), s)`.
    ///
    /// # Panics
    ///
    /// If `batch_size == 0`.
    pub fn batches(&self, batch_size: usize, seed: Option<u64>) -> Batches {
        assert!(batch_size > 0, "batches: batch_size must be > 0");
        let order = match seed {
            Some(s) => permutation(self.len(), s),
            None => (0..self.len()).collect(),
        };
        Batches {
            order,
            batch_size,
            pos: 0,
        }
    }

    /// Number of images per class; `num_classes` entries (more only if a label is out of range).
    pub fn class_counts(&self) -> Vec<usize> {
        self.indices_by_class().iter().map(Vec::len).collect()
    }
}

/// Iterator returned by [`Dataset::batches`]: yields `Vec<usize>` index batches.
#[derive(Debug, Clone)]
pub struct Batches {
    order: Vec<usize>,
    batch_size: usize,
    pos: usize,
}

impl Iterator for Batches {
    type Item = Vec<usize>;

    fn next(&mut self) -> Option<Vec<usize>> {
        if self.pos >= self.order.len() {
            return None;
        }
        let end = (self.pos + self.batch_size).min(self.order.len());
        let batch = self.order[self.pos..end].to_vec();
        self.pos = end;
        Some(batch)
    }

    fn size_hint(&self) -> (usize, Option<usize>) {
        let n = (self.order.len() - self.pos).div_ceil(self.batch_size);
        (n, Some(n))
    }
}

impl ExactSizeIterator for Batches {}
impl std::iter::FusedIterator for Batches {}
