//! Experiment 3: keyword spotting on SYNTHETIC speech (the paper's audio analogue). A small
//! DS-CNN (`kws-dscnn`) is BP-pretrained on log-mels of espeak-ng source speakers, then adapted
//! with K labelled clips per word of unseen target speakers (other accents and voices).

use std::path::PathBuf;

use anyhow::{Context, Result};
use lastmile_core::model::FloatModel;
use lastmile_core::{Backend, WeightBits};
use lastmile_data::{Dataset, Split};
use serde::Serialize;

use crate::Budget;
use crate::common::{
    BpSettings, Depth, FfSettings, RunResult, Stat, bar, eval_float, ncm_head, par_seeds,
    pretrain_arch, quantize, run_bp, run_qzo,
};

/// Architecture of this experiment.
pub const ARCH: &str = "kws-dscnn";

/// The methods (rows), in table order.
pub const METHODS: [&str; 7] = [
    "zero-shot (source model)",
    "zero-shot (NCM head)",
    "BP-LP fp32",
    "BP-FT fp32",
    "QZO-FF-LP 16w8a",
    "QZO-FF-FT 16w8a",
    "QZO-FF-FT 8w8a",
];

/// One (method, K, seed) result.
#[derive(Debug, Serialize)]
pub struct Cell {
    /// Row.
    pub method: String,
    /// Examples per word.
    pub k: usize,
    /// Seed.
    pub seed: u64,
    /// The run.
    pub run: RunResult,
}

/// All results of experiment 3.
#[derive(Debug, Serialize)]
pub struct Kws {
    /// Source speakers' held-out accuracy of the pretrained model.
    pub source_acc: f64,
    /// Pretraining clips.
    pub pretrain_clips: usize,
    /// Held-out source clips.
    pub source_test: usize,
    /// Pretraining epochs.
    pub pretrain_epochs: usize,
    /// Target pool (few-shot examples are drawn from it) and test sizes.
    pub target_pool: usize,
    /// Target test clips.
    pub target_test: usize,
    /// The data's manifest (speakers, versions), as generated.
    pub manifest: String,
    /// Settings.
    pub ff: FfSettings,
    /// BP settings.
    pub bp_lp: BpSettings,
    /// BP settings.
    pub bp_ft: BpSettings,
    /// Every run.
    pub cells: Vec<Cell>,
}

impl Kws {
    /// Accuracy statistic of `method` at `k`.
    pub fn stat(&self, method: &str, k: usize) -> Stat {
        let v: Vec<f64> = self
            .cells
            .iter()
            .filter(|c| c.method == method && c.k == k)
            .map(|c| c.run.acc)
            .collect();
        Stat::of(&v)
    }

    /// The K values run, ascending.
    pub fn ks(&self) -> Vec<usize> {
        let mut ks: Vec<usize> = self.cells.iter().map(|c| c.k).collect();
        ks.sort_unstable();
        ks.dedup();
        ks
    }

    /// Trainable elements of `method` (first run of it).
    pub fn trainable(&self, method: &str) -> u64 {
        self.cells
            .iter()
            .find(|c| c.method == method)
            .map_or(0, |c| c.run.trainable)
    }

    /// The manifest line starting with `part:` (speakers of that part).
    pub fn speakers(&self, part: &str) -> String {
        self.manifest
            .lines()
            .find_map(|l| l.strip_prefix(&format!("{part}: ")))
            .unwrap_or("?")
            .to_string()
    }
}

fn open(name: &str, split: Split) -> Result<Dataset> {
    lastmile_data::open(name, split).with_context(|| {
        format!(
            "cannot open {name} ({}) under '{}': run `cargo xtask data` to generate the \
             synthetic speech set (needs espeak-ng, installed with apt)",
            split.as_str(),
            lastmile_data::data_dir().display()
        )
    })
}

/// FNV-1a of the manifest's first line (the generator version), for the cache key.
fn version_tag(manifest: &str) -> u32 {
    let line = manifest.lines().next().unwrap_or("");
    line.bytes().fold(0x811c_9dc5u32, |h, b| {
        (h ^ u32::from(b)).wrapping_mul(0x0100_0193)
    })
}

/// The source model: BP-pretrained on the source speakers, cached under
/// target/experiments-cache/ (keyed by the data's version and size, and the epochs).
fn source_model(
    train: &Dataset,
    test: &Dataset,
    epochs: usize,
    manifest: &str,
) -> Result<(FloatModel, f64)> {
    let cache = PathBuf::from(format!(
        "target/experiments-cache/{ARCH}-speech-synthetic-{:08x}-{}clips-{epochs}ep-seed7.lmm",
        version_tag(manifest),
        train.len()
    ));
    if let Ok(m) = lastmile_core::format::load_float(&cache) {
        println!("(kws source model loaded from {})", cache.display());
        let acc = eval_float(&m, test)?.1;
        return Ok((m, acc));
    }
    let r = pretrain_arch(ARCH, train, test, epochs, 7)?;
    if let Some(dir) = cache.parent() {
        let _ = std::fs::create_dir_all(dir);
    }
    let _ = lastmile_core::format::save_float(&cache, &r.0);
    Ok(r)
}

/// Runs experiment 3.
pub fn run(b: &Budget, backend: &dyn Backend) -> Result<Kws> {
    let src_train = open("speech-synthetic-source", Split::Train)?;
    let src_test = open("speech-synthetic-source", Split::Test)?;
    let pool = open("speech-synthetic-target", Split::Train)?;
    let test = open("speech-synthetic-target", Split::Test)?;
    let manifest_path = lastmile_data::data_dir().join("speech-synthetic/MANIFEST.txt");
    let manifest = std::fs::read_to_string(&manifest_path).unwrap_or_default();
    let (source, source_acc) =
        source_model(&src_train, &src_test, b.kws_pretrain_epochs, &manifest)?;
    println!(
        "kws: {ARCH} BP-pretrained on {} synthetic source clips, {} epochs: source test accuracy {:.2}%",
        src_train.len(),
        b.kws_pretrain_epochs,
        source_acc * 100.0
    );
    let ff = FfSettings {
        steps: b.ff_steps,
        lr_pct: b.lr_pct,
        ..FfSettings::default()
    };
    let (bp_lp, bp_ft) = (
        BpSettings::lp(b.kws_bp_steps),
        BpSettings::ft(b.kws_bp_steps),
    );
    let zero = eval_float(&source, &test)?;
    let pb = bar(
        (b.kws_ks.len() * b.seeds.len() * METHODS.len()) as u64,
        "kws",
    );
    let mut cells = Vec::new();
    for &k in &b.kws_ks {
        let per_seed = par_seeds(&b.seeds, |seed| -> Result<Vec<Cell>> {
            let mut cells = Vec::new();
            let support = pool.per_class(k, seed)?;
            let mut push = |method: &str, run: RunResult| {
                cells.push(Cell {
                    method: method.into(),
                    k,
                    seed,
                    run,
                });
                pb.inc(1);
            };
            push(METHODS[0], RunResult::untrained(zero));
            push(
                METHODS[1],
                RunResult::untrained(eval_float(&ncm_head(&source, &support)?, &test)?),
            );
            // Same label set on both sides: every trained row starts from the source model.
            for (i, depth) in [Depth::Head, Depth::All].into_iter().enumerate() {
                let mut m = source.clone();
                depth.apply_float(&mut m);
                let s = if depth == Depth::Head { &bp_lp } else { &bp_ft };
                push(METHODS[2 + i], run_bp(&mut m, &support, &test, s, seed)?);
            }
            for (bits, depth, row) in [
                (WeightBits::W16, Depth::Head, 4),
                (WeightBits::W16, Depth::All, 5),
                (WeightBits::W8, Depth::All, 6),
            ] {
                let mut q = quantize(&source, &support, bits)?;
                depth.apply_quant(&mut q);
                push(
                    METHODS[row],
                    run_qzo(backend, &q, &support, &test, &ff, seed, None)?,
                );
            }
            Ok(cells)
        })?;
        cells.extend(per_seed);
    }
    pb.finish_and_clear();
    Ok(Kws {
        source_acc,
        pretrain_clips: src_train.len(),
        source_test: src_test.len(),
        pretrain_epochs: b.kws_pretrain_epochs,
        target_pool: pool.len(),
        target_test: test.len(),
        manifest,
        ff,
        bp_lp,
        bp_ft,
        cells,
    })
}

/// Grouped bars: test accuracy per method, one group per K. Returns the PNG written.
pub fn plot(k: &Kws, img: &std::path::Path) -> Result<String> {
    let p = img.join("results-kws.png");
    lastmile_plot::bar_chart(&p, &chart(k), 1200, 480).map_err(|e| anyhow::anyhow!("{e}"))?;
    Ok(p.display().to_string())
}

/// The chart [`plot`] draws. The methods are a few points apart, all far from 0, so the
/// y axis starts near the data ([`lastmile_plot::y_range_near`]: a point of margin, the
/// top third left to the legend) and says that it does not start at 0.
fn chart(k: &Kws) -> lastmile_plot::BarChart {
    let ks = k.ks();
    // The NCM row is in the table; six bars keep the palette's colours distinct.
    let series: Vec<(String, Vec<f64>)> = METHODS
        .iter()
        .filter(|&&m| m != METHODS[1])
        .map(|m| {
            let v = ks.iter().map(|&kk| k.stat(m, kk).mean * 100.0).collect();
            (m.to_string(), v)
        })
        .collect();
    let y_range =
        lastmile_plot::y_range_near(series.iter().flat_map(|s| s.1.iter().copied()), 1.0, 0.35);
    lastmile_plot::BarChart {
        title: "Keyword spotting, SYNTHETIC speech (espeak-ng): unseen speakers".into(),
        y_label: "target test accuracy (%)".into(),
        categories: ks.iter().map(|k| format!("K = {k} per word")).collect(),
        series,
        y_range,
    }
}

/// The Markdown of section 3 (without its heading); `plot` is the relative path of the plot.
pub fn section(k: &Kws, seeds: usize, plot: Option<&str>) -> String {
    use std::fmt::Write as _;
    let mut s = String::new();
    let _ = writeln!(
        s,
        "**All audio here is SYNTHETIC** — espeak-ng text-to-speech, not recordings of people; \
         the paper's audio analogue, not its audio data. Ten Speech Commands words \
         ({}); a speaker is an espeak-ng accent × voice variant, each word said at 3 speeds × \
         3 pitches, centred in 1 s (random shift ≤ 100 ms, low white noise), as a 49 × 32 \
         log-mel image (25 ms Hann window, 20 ms hop, 32 mel bands 20–8000 Hz, rustfft; bytes \
         over −60…40 dB). Generated by `cargo xtask data` into `data/speech-synthetic/`.\n\n\
         - Source speakers (pretraining): {}.\n\
         - Unseen target speakers (other accents, incl. German-accented English, and other \
         voice variants): {}.\n\
         - Model: `{ARCH}` (DS-CNN in the style of Hello Edge: conv3×3/2 16 → 3 depthwise-separable \
         blocks 32/64/64 → GAP → linear; {} parameters). A CRNN is not expressible in the \
         model spec (no recurrent op), so the DS-CNN stands in for it. BP-pretrained on {} \
         source clips for {} epochs (AdamW, cosine, batch 64, seed 7): **{:.2} %** on {} \
         held-out source clips (seen speakers).\n\
         - Adaptation: K clips per word drawn from the target pool ({} clips); test on {} other \
         target clips (same target speakers, other speed/pitch). Every trained row starts from \
         the source model (same 10 words, so its own head); LP = head only, FT = all layers; \
         16w8a / 8w8a by PTQ calibrated on the K-shot clips. QZO-FF: m = {}, sign-SPSA, ε = {} %, \
         lr = {} % of the largest code, {} steps of batch 32; BP: AdamW lr {} (LP) / {} (FT), \
         **{} steps** of batch 32 (fewer than QZO-FF's: a candle BP-FT step of this \
         depthwise DS-CNN took 0.5–0.9 s on 2 busy cores, ~10× a QZO-FF step with its 6 \
         forwards). Zero-shot (NCM head) replaces the head by the nearest-class mean of the \
         K-shot clips' features.\n\nTarget test accuracy (%), mean ± std over {seeds} seeds.\n",
        lastmile_data::speech::SPEECH_WORDS.join(", "),
        k.speakers("source"),
        k.speakers("target"),
        k.trainable("BP-FT fp32"),
        k.pretrain_clips,
        k.pretrain_epochs,
        k.source_acc * 100.0,
        k.source_test,
        k.target_pool,
        k.target_test,
        k.ff.draws,
        k.ff.eps_pct,
        k.ff.lr_pct,
        k.ff.steps,
        k.bp_lp.lr,
        k.bp_ft.lr,
        k.bp_ft.steps,
    );
    let ks = k.ks();
    let mut header = "| method | trained elements |".to_string();
    let mut sep = "|---|---|".to_string();
    for kk in &ks {
        let _ = write!(header, " K = {kk} |");
        sep.push_str("---|");
    }
    let _ = writeln!(s, "{header}\n{sep}");
    for m in METHODS {
        let _ = write!(s, "| {m} | {} |", k.trainable(m));
        for &kk in &ks {
            let _ = write!(s, " {} |", k.stat(m, kk).pct());
        }
        s.push('\n');
    }
    if let Some(p) = plot {
        let _ = writeln!(s, "\n![kws]({p})");
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cell(method: &str, k: usize, seed: u64, acc: f64) -> Cell {
        Cell {
            method: method.into(),
            k,
            seed,
            run: RunResult {
                acc,
                trainable: if method.contains("FT") { 8746 } else { 650 },
                ..Default::default()
            },
        }
    }

    fn kws(cells: Vec<Cell>) -> Kws {
        Kws {
            source_acc: 1.0,
            pretrain_clips: 2400,
            pretrain_epochs: 20,
            source_test: 300,
            target_pool: 800,
            target_test: 640,
            manifest: "v1\nsource: 2 speakers (en-us+m1 en-gb+f2)\ntarget: 1 speakers (de+m5)\n"
                .into(),
            ff: FfSettings::default(),
            bp_lp: BpSettings::lp(100),
            bp_ft: BpSettings::ft(100),
            cells,
        }
    }

    #[test]
    fn section_is_labelled_synthetic_and_tabulates_every_k() {
        let mut cells = Vec::new();
        for k in [20, 5] {
            for seed in 0..3 {
                for m in METHODS {
                    cells.push(cell(m, k, seed, 0.5 + 0.1 * seed as f64));
                }
            }
        }
        let k = kws(cells);
        assert_eq!(k.ks(), vec![5, 20]);
        assert_eq!(k.speakers("target"), "1 speakers (de+m5)");
        let s = section(&k, 3, Some("img/results-kws.png"));
        assert!(s.contains("SYNTHETIC"), "{s}");
        assert!(
            s.contains("| method | trained elements | K = 5 | K = 20 |"),
            "{s}"
        );
        // Mean of 0.5, 0.6, 0.7 and its sample std, in percent.
        assert!(
            s.contains("| QZO-FF-FT 8w8a | 8746 | 60.00 ± 10.00 | 60.00 ± 10.00 |"),
            "{s}"
        );
        assert!(s.contains("![kws](img/results-kws.png)"));
        assert_ne!(version_tag("v1\nx"), version_tag("v2\nx"));
        assert_eq!(version_tag("v1\nx"), version_tag("v1\ny"));
    }

    /// The full-budget means (%) per method at K = 5 and K = 20: a few points apart.
    fn full_budget_means() -> Kws {
        let means = [
            [90.78, 90.78],
            [70.89, 74.74], // NCM: in the table, not in the chart
            [92.45, 94.74],
            [92.29, 94.84],
            [91.72, 92.50],
            [91.51, 92.40],
            [90.52, 90.78],
        ];
        let mut cells = Vec::new();
        for (m, v) in METHODS.iter().zip(means) {
            for (k, acc) in [5, 20].into_iter().zip(v) {
                cells.push(cell(m, k, 0, acc / 100.0));
            }
        }
        kws(cells)
    }

    #[test]
    fn the_chart_axis_starts_near_the_accuracies_not_at_0() {
        let k = full_budget_means();
        let c = chart(&k);
        assert_eq!(c.series.len(), 6);
        // floor(90.52 − 1) = 89 to ceil(89 + (94.84 − 89) / 0.65) = 98.
        assert_eq!(c.y_range, Some((89.0, 98.0)));
        let dir = std::env::temp_dir().join(format!("lastmile-kws-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let p = plot(&k, &dir).unwrap();
        assert_eq!(&std::fs::read(&p).unwrap()[1..4], b"PNG");
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
