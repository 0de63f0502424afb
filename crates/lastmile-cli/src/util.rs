//! Shared plumbing: model files, datasets, input checks, progress bars, tables.

use std::path::Path;
use std::time::Duration;

use anyhow::{Context, Result, anyhow, bail};
use indicatif::{ProgressBar, ProgressDrawTarget, ProgressState, ProgressStyle};
use lastmile_core::format::{self, AnyModel};
use lastmile_core::{FloatModel, QuantModel};
use lastmile_data::{Dataset, Split};

use crate::Ui;

/// `FormatError` without its file name (the CLI names the file itself).
fn format_msg(e: &format::FormatError) -> String {
    if e.field == "file" {
        e.message.clone()
    } else {
        format!("{}: {}", e.field, e.message)
    }
}

/// An I/O error as the OS words it, without the ` (os error N)` suffix.
pub fn io_msg(e: &std::io::Error) -> String {
    let s = e.to_string();
    match s.rfind(" (os error ") {
        Some(i) if s.ends_with(')') => s[..i].to_string(),
        _ => s,
    }
}

/// Reads any model file (float or quantized); the format validates it.
pub fn load_model(path: &Path) -> Result<AnyModel> {
    let bytes = std::fs::read(path)
        .map_err(|e| anyhow!("cannot read model '{}': {}", path.display(), io_msg(&e)))?;
    format::from_bytes(&bytes)
        .map_err(|e| anyhow!("cannot read model '{}': {}", path.display(), format_msg(&e)))
}

/// Reads a model file that must hold a float model.
pub fn load_float_model(path: &Path) -> Result<FloatModel> {
    match load_model(path)? {
        AnyModel::Float(m) => Ok(m),
        AnyModel::Quantized(m) => bail!(
            "model '{}' is already quantized ({}); this command takes a float model (see `lastmile new`)",
            path.display(),
            m.weight_bits.scheme()
        ),
    }
}

/// Writes a float model (atomically).
pub fn save_float_model(path: &Path, model: &FloatModel) -> Result<()> {
    format::save_float(path, model).map_err(|e| {
        anyhow!(
            "cannot write model '{}': {}",
            path.display(),
            format_msg(&e)
        )
    })
}

/// Writes a quantized model (atomically).
pub fn save_quant_model(path: &Path, model: &QuantModel) -> Result<()> {
    format::save_quant(path, model).map_err(|e| {
        anyhow!(
            "cannot write model '{}': {}",
            path.display(),
            format_msg(&e)
        )
    })
}

/// Checks early that an output file can be created where asked (its directory
/// exists), and notes (on stderr) when it lacks the model extension.
pub fn check_output(path: &Path, ui: Ui) -> Result<()> {
    if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty())
        && !dir.is_dir()
    {
        bail!(
            "cannot write model '{}': directory '{}' does not exist",
            path.display(),
            dir.display()
        );
    }
    if path.is_dir() {
        bail!("cannot write model '{}': it is a directory", path.display());
    }
    let ok = path
        .extension()
        .is_some_and(|e| e == format::FILE_EXTENSION);
    if !ok && !ui.json {
        eprintln!(
            "note: '{}' does not end in .{}",
            path.display(),
            format::FILE_EXTENSION
        );
    }
    Ok(())
}

/// The dataset to use: `--data` if given, else the model's `dataset` metadata.
pub fn dataset_name(
    arg: Option<&str>,
    metadata: &lastmile_core::model::Metadata,
) -> Result<String> {
    if let Some(a) = arg {
        return Ok(a.to_string());
    }
    metadata.get("dataset").cloned().ok_or_else(|| {
        anyhow!(
            "--data is required: the model does not record a dataset (valid names: {})",
            lastmile_data::DATASET_NAMES.join(", ")
        )
    })
}

/// Opens `name`'s `split`, naming the dataset in the error.
pub fn open_dataset(name: &str, split: Split) -> Result<Dataset> {
    let ds = lastmile_data::open(name, split)
        .with_context(|| format!("cannot open dataset '{name}' ({} split)", split.as_str()))?;
    if ds.is_empty() {
        bail!("dataset '{name}' ({} split) has no images", split.as_str());
    }
    Ok(ds)
}

/// Checks that `data` can be fed to a model with `input_shape` and `logits` outputs.
/// A model with a flat `[F]` input accepts images of `F` pixels.
pub fn check_compatible(
    input_shape: &[usize],
    output_shape: &[usize],
    data: &Dataset,
) -> Result<()> {
    let img = [data.height, data.width, data.channels];
    let fits =
        input_shape == img || (input_shape.len() == 1 && input_shape[0] == data.sample_len());
    if !fits {
        bail!(
            "dataset '{}' has images of shape {:?} (H, W, C) but the model's input shape is {:?}",
            data.name,
            img,
            input_shape
        );
    }
    let [logits] = *output_shape else {
        bail!(
            "the model's output has shape {output_shape:?}; evaluation needs a vector of logits [classes]"
        );
    };
    if logits < data.num_classes {
        bail!(
            "dataset '{}' has {} classes but the model has only {logits} outputs",
            data.name,
            data.num_classes
        );
    }
    Ok(())
}

/// Normalized `[0, 1]` pixels of the images at `indices`, concatenated.
pub fn images_f32(data: &Dataset, indices: &[usize]) -> Vec<f32> {
    let s = data.sample_len();
    let mut out = vec![0f32; indices.len() * s];
    for (k, &i) in indices.iter().enumerate() {
        data.image_f32(i, &mut out[k * s..(k + 1) * s]);
    }
    out
}

/// A progress bar over `len` items (samples), hidden unless `ui.progress`.
pub fn progress(ui: Ui, len: usize, message: &str) -> ProgressBar {
    if !ui.progress {
        return ProgressBar::hidden();
    }
    let bar = ProgressBar::with_draw_target(Some(len as u64), ProgressDrawTarget::stderr());
    let style = ProgressStyle::with_template(
        "{msg:>10} [{bar:30}] {pos}/{len} samples, {rate} samples/s, eta {eta}",
    )
    .map(|s| {
        s.progress_chars("=> ").with_key(
            "rate",
            |st: &ProgressState, w: &mut dyn std::fmt::Write| {
                let _ = write!(w, "{:.0}", st.per_sec());
            },
        )
    })
    .unwrap_or_else(|_| ProgressStyle::default_bar());
    bar.set_style(style);
    bar.set_message(message.to_string());
    bar.enable_steady_tick(Duration::from_millis(200));
    bar
}

/// Left-aligned text table with a header row (numbers right-aligned).
pub fn table(header: &[&str], rows: &[Vec<String>]) -> String {
    let cols = header.len();
    let mut width: Vec<usize> = header.iter().map(|h| h.chars().count()).collect();
    for r in rows {
        for (c, cell) in r.iter().enumerate().take(cols) {
            width[c] = width[c].max(cell.chars().count());
        }
    }
    let numeric = |c: usize| {
        rows.iter().all(|r| {
            r.get(c)
                .is_none_or(|v| v.parse::<f64>().is_ok() || v == "-" || v.is_empty())
        })
    };
    let right: Vec<bool> = (0..cols).map(numeric).collect();
    let mut out = String::new();
    let mut line = |cells: &[String]| {
        let mut l = String::new();
        for (c, w) in width.iter().enumerate() {
            let cell = cells.get(c).map(String::as_str).unwrap_or("");
            let pad = w - cell.chars().count();
            if c > 0 {
                l.push_str("  ");
            }
            if right[c] {
                l.push_str(&" ".repeat(pad));
                l.push_str(cell);
            } else {
                l.push_str(cell);
                if c + 1 < cols {
                    l.push_str(&" ".repeat(pad));
                }
            }
        }
        out.push_str(l.trim_end());
        out.push('\n');
    };
    line(&header.iter().map(|h| h.to_string()).collect::<Vec<_>>());
    for r in rows {
        line(r);
    }
    out
}

/// A shape as `8x8x1` (or `[64]` style `64` for vectors).
pub fn shape_str(shape: &[usize]) -> String {
    shape
        .iter()
        .map(|d| d.to_string())
        .collect::<Vec<_>>()
        .join("x")
}

/// A duration in seconds, short: `0.84 s`, `12.3 s`.
pub fn secs(s: f64) -> String {
    if s < 10.0 {
        format!("{s:.2} s")
    } else {
        format!("{s:.1} s")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn table_aligns_text_left_and_numbers_right() {
        let t = table(
            &["name", "n"],
            &[
                vec!["a".into(), "1".into()],
                vec!["long".into(), "100".into()],
            ],
        );
        assert_eq!(t, "name    n\na       1\nlong  100\n");
    }

    #[test]
    fn shapes_print_compactly() {
        assert_eq!(shape_str(&[8, 8, 1]), "8x8x1");
        assert_eq!(shape_str(&[10]), "10");
    }
}
