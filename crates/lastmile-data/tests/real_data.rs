//! Checks on the real MNIST and Fashion-MNIST files fetched by `cargo xtask data`.
//!
//! With `LASTMILE_REQUIRE_DATA=1` (set by `cargo xtask ci`) the data must be present; otherwise
//! missing data makes these tests print `skipped: run cargo xtask data` and pass.
//!
//! Data root: `LASTMILE_DATA` if set (that is what [`lastmile_data::data_dir`] reads), otherwise
//! `<workspace>/data`, because `cargo test` runs in the crate directory while `cargo xtask data`
//! fills the workspace root's `data/`.

use std::path::{Path, PathBuf};

use lastmile_data::{DataError, Dataset, Split, open_in};

fn root() -> PathBuf {
    if std::env::var_os("LASTMILE_DATA").is_some_and(|v| !v.is_empty()) {
        lastmile_data::data_dir()
    } else {
        // <workspace>/crates/lastmile-data -> <workspace>/data
        let crate_dir = Path::new(env!("CARGO_MANIFEST_DIR"));
        crate_dir
            .parent()
            .and_then(Path::parent)
            .unwrap_or(crate_dir)
            .join("data")
    }
}

fn required() -> bool {
    std::env::var("LASTMILE_REQUIRE_DATA").is_ok_and(|v| v == "1")
}

/// Loads a dataset, or returns None (after printing why) when data is optional and absent.
/// Corrupt data always fails, required or not.
fn load(name: &str, split: Split) -> Option<Dataset> {
    match open_in(&root(), name, split) {
        Ok(d) => Some(d),
        Err(e @ DataError::Missing { .. }) if !required() => {
            println!("skipped: run cargo xtask data ({e})");
            None
        }
        Err(e) => panic!("{name} {split:?} did not load: {e}"),
    }
}

fn check_shape(d: &Dataset, n: usize) {
    assert_eq!(d.len(), n, "{}", d.name);
    assert_eq!((d.height, d.width, d.channels), (28, 28, 1), "{}", d.name);
    assert_eq!(d.pixels.len(), n * 784, "{}", d.name);
    assert_eq!(d.max_value, 255);
    assert_eq!(d.num_classes, 10);
}

#[test]
fn mnist_train() {
    let Some(d) = load("mnist", Split::Train) else {
        return;
    };
    check_shape(&d, 60_000);
    assert_eq!(d.name, "mnist-train");
    assert_eq!(
        d.class_counts(),
        vec![5923, 6742, 5958, 6131, 5842, 5421, 5918, 6265, 5851, 5949]
    );
    assert_eq!(d.labels[..10], [5, 0, 4, 1, 9, 2, 1, 3, 1, 4]);
    // Canonical mean pixel 33.32 (0.1307 * 255).
    let mean = d.pixels.iter().map(|&p| u64::from(p)).sum::<u64>() as f64 / d.pixels.len() as f64;
    assert!((mean - 33.32).abs() < 0.01, "mean pixel {mean}");
}

#[test]
fn mnist_test() {
    let Some(d) = load("mnist", Split::Test) else {
        return;
    };
    check_shape(&d, 10_000);
    assert_eq!(d.name, "mnist-test");
    assert_eq!(
        d.class_counts(),
        vec![980, 1135, 1032, 1010, 982, 892, 958, 1028, 974, 1009]
    );
    assert_eq!(d.labels[..10], [7, 2, 1, 0, 4, 1, 4, 9, 5, 9]);
}

#[test]
fn fashion_mnist_train() {
    let Some(d) = load("fashion-mnist", Split::Train) else {
        return;
    };
    check_shape(&d, 60_000);
    assert_eq!(d.name, "fashion-mnist-train");
    assert_eq!(d.class_counts(), vec![6000; 10]);
    assert_eq!(d.class_names[0], "T-shirt/top");
    // Canonical mean pixel 72.94 (0.2860 * 255).
    let mean = d.pixels.iter().map(|&p| u64::from(p)).sum::<u64>() as f64 / d.pixels.len() as f64;
    assert!((mean - 72.94).abs() < 0.01, "mean pixel {mean}");
}

#[test]
fn fashion_mnist_test() {
    let Some(d) = load("fashion-mnist", Split::Test) else {
        return;
    };
    check_shape(&d, 10_000);
    assert_eq!(d.name, "fashion-mnist-test");
    assert_eq!(d.class_counts(), vec![1000; 10]);
}
