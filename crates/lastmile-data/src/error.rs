//! The crate's single error type.

use std::path::PathBuf;

use thiserror::Error;

/// Everything that can go wrong while loading or slicing a dataset.
///
/// Every variant that comes from a file names that file. Format problems also give the byte
/// offset at which the problem was found; for gzip-compressed files that offset is in the
/// *decompressed* stream (the idx header starts at byte 0 of the decompressed data).
#[derive(Debug, Error)]
#[non_exhaustive]
pub enum DataError {
    /// The operating system could not read the file (permissions, I/O error, ...).
    #[error("{}: {source}", path.display())]
    Io {
        /// The file that could not be read.
        path: PathBuf,
        /// The underlying error.
        #[source]
        source: std::io::Error,
    },

    /// A dataset file (or its directory) does not exist.
    #[error("{}: not found{}; {hint}", path.display(), also_tried_text(also_tried))]
    Missing {
        /// The file or directory that was looked for first.
        path: PathBuf,
        /// Other names that were tried too (e.g. the `.gz` variant).
        also_tried: Vec<PathBuf>,
        /// What to do about it, e.g. "run `cargo xtask data` ...".
        hint: String,
    },

    /// The bytes do not form a valid idx file (or the idx files do not fit together).
    #[error("{}: byte {offset}: {message}", path.display())]
    Format {
        /// The offending file.
        path: PathBuf,
        /// Byte offset of the problem, in the decompressed stream for `.gz` files.
        offset: u64,
        /// What was expected and what was found.
        message: String,
    },

    /// The gzip layer failed (corrupt deflate data, bad CRC, stream cut short, ...).
    #[error("{}: byte {offset} of the decompressed stream: gzip stream error: {source}", path.display())]
    Gzip {
        /// The offending file.
        path: PathBuf,
        /// How many bytes had been decompressed successfully when the error occurred.
        offset: u64,
        /// The error reported by the decompressor.
        #[source]
        source: std::io::Error,
    },

    /// [`crate::Dataset::per_class`] was asked for more examples than a class has.
    #[error(
        "dataset {dataset}: class {class} ({class_name}) has {have} examples, {want} requested"
    )]
    NotEnoughExamples {
        /// Name of the dataset.
        dataset: String,
        /// The class that is too small.
        class: usize,
        /// Its human-readable name.
        class_name: String,
        /// How many examples the class has.
        have: usize,
        /// How many were requested.
        want: usize,
    },

    /// [`crate::open`] was given a name it does not know.
    #[error("unknown dataset {name:?}; valid names: {}", valid.join(", "))]
    UnknownDataset {
        /// The name that was asked for.
        name: String,
        /// The names that are accepted.
        valid: Vec<&'static str>,
    },
}

fn also_tried_text(also: &[PathBuf]) -> String {
    if also.is_empty() {
        String::new()
    } else {
        let names: Vec<String> = also.iter().map(|p| p.display().to_string()).collect();
        format!(" (also tried {})", names.join(", "))
    }
}
