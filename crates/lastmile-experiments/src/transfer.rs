//! Experiment 1: cross-domain few-shot transfer, MNIST → Fashion-MNIST (the analogue of
//! the paper's few-shot vision and VWW tables).

use anyhow::Result;
use lastmile_core::model::FloatModel;
use lastmile_core::{Backend, WeightBits};
use serde::Serialize;

use crate::Budget;
use crate::common::{
    BpSettings, Data, Depth, FfSettings, RunResult, Stat, bar, eval_float, ncm_head, par_seeds,
    quantize, run_bp, run_ff_float, run_qzo,
};

/// The methods (rows), in table order.
pub const METHODS: [&str; 9] = [
    "zero-shot (NCM head)",
    "BP-LP fp32",
    "BP-FT fp32",
    "FF-LP fp32",
    "FF-FT fp32",
    "QZO-FF-LP 16w8a",
    "QZO-FF-FT 16w8a",
    "QZO-FF-LP 8w8a",
    "QZO-FF-FT 8w8a",
];

/// One (method, K, seed) result.
#[derive(Debug, Serialize)]
pub struct Cell {
    /// Row.
    pub method: String,
    /// Examples per class (`None` = the full training set).
    pub k: Option<usize>,
    /// Seed.
    pub seed: u64,
    /// The run.
    pub run: RunResult,
}

/// All results of experiment 1.
#[derive(Debug, Serialize)]
pub struct Transfer {
    /// Pretrained backbone's MNIST test accuracy.
    pub backbone_mnist_acc: f64,
    /// Settings.
    pub ff: FfSettings,
    /// BP settings.
    pub bp_lp: BpSettings,
    /// BP settings.
    pub bp_ft: BpSettings,
    /// Every run.
    pub cells: Vec<Cell>,
}

impl Transfer {
    /// Accuracy statistic of `method` at `k`.
    pub fn stat(&self, method: &str, k: Option<usize>) -> Stat {
        let v: Vec<f64> = self
            .cells
            .iter()
            .filter(|c| c.method == method && c.k == k)
            .map(|c| c.run.acc)
            .collect();
        Stat::of(&v)
    }

    /// Per-seed accuracies of `method` at `k`, in seed order.
    pub fn accs(&self, method: &str, k: Option<usize>) -> Vec<f64> {
        self.cells
            .iter()
            .filter(|c| c.method == method && c.k == k)
            .map(|c| c.run.acc)
            .collect()
    }

    /// Starting accuracy (after PTQ) of `method` at `k`.
    pub fn start_stat(&self, method: &str, k: Option<usize>) -> Stat {
        let v: Vec<f64> = self
            .cells
            .iter()
            .filter(|c| c.method == method && c.k == k)
            .map(|c| c.run.start_acc)
            .collect();
        Stat::of(&v)
    }
}

/// Runs experiment 1.
pub fn run(
    b: &Budget,
    data: &Data,
    backbone: &FloatModel,
    backbone_acc: f64,
    backend: &dyn Backend,
) -> Result<Transfer> {
    let ff = FfSettings {
        steps: b.ff_steps,
        lr_pct: b.lr_pct,
        ..FfSettings::default()
    };
    let (bp_lp, bp_ft) = (BpSettings::lp(b.ff_steps), BpSettings::ft(b.ff_steps));
    let per = if b.lp_only { 5 } else { METHODS.len() };
    let total = (b.ks.len() * b.seeds.len() * per) as u64;
    let pb = bar(total, "transfer");
    let mut cells = Vec::new();
    for &k in &b.ks {
        let per_seed = par_seeds(&b.seeds, |seed| -> Result<Vec<Cell>> {
            let mut cells = Vec::new();
            let support = match k {
                Some(k) => data.fashion_train.per_class(k, seed)?,
                None => data.fashion_train.clone(),
            };
            let test = &data.fashion_test;
            // Zero-shot: the MNIST backbone with a nearest-class-mean head from the examples.
            let ncm = ncm_head(backbone, &support)?;
            let zero = eval_float(&ncm, test)?;
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
            let depths: &[Depth] = if b.lp_only {
                &[Depth::Head]
            } else {
                &[Depth::Head, Depth::All]
            };
            for (i, &depth) in depths.iter().enumerate() {
                let mut m = ncm.clone();
                depth.apply_float(&mut m);
                let s = if depth == Depth::Head { &bp_lp } else { &bp_ft };
                let r = run_bp(&mut m.clone(), &support, test, s, seed)?;
                push(METHODS[1 + i], r);
                if depth == Depth::All && !b.ff_ft_fp32_ks.contains(&k) {
                    pb.inc(1);
                    continue;
                }
                let r = run_ff_float(&m, &support, test, &ff, seed)?;
                push(METHODS[3 + i], r);
            }
            for (bi, bits) in [WeightBits::W16, WeightBits::W8].into_iter().enumerate() {
                let q = quantize(&ncm, &support, bits)?;
                for (i, &depth) in depths.iter().enumerate() {
                    let mut qm = q.clone();
                    depth.apply_quant(&mut qm);
                    let r = run_qzo(backend, &qm, &support, test, &ff, seed, None)?;
                    push(METHODS[5 + 2 * bi + i], r);
                }
            }
            Ok(cells)
        })?;
        cells.extend(per_seed);
    }
    pb.finish_and_clear();
    Ok(Transfer {
        backbone_mnist_acc: backbone_acc,
        ff,
        bp_lp,
        bp_ft,
        cells,
    })
}

/// `5`, `20`, ..., `full`.
pub fn k_label(k: Option<usize>) -> String {
    k.map_or("full".into(), |k| k.to_string())
}
