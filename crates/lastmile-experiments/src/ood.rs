//! Experiment 2: in-domain OOD adaptation — the CIFAR10-C analogue: a clean-MNIST model
//! adapted to synthetic corruptions of real MNIST images, at several depths and with
//! sparse updates.

use anyhow::{Result, anyhow};
use lastmile_core::model::FloatModel;
use lastmile_core::{Backend, WeightBits};
use lastmile_data::Corruption;
use lastmile_train::Sparsity;
use serde::Serialize;

use crate::Budget;
use crate::common::{
    BpSettings, Data, Depth, FfSettings, RunResult, Stat, bar, eval_float, eval_quant, par_seeds,
    quantize, run_bp, run_qzo,
};

enum Item {
    Zero((String, u64, f64, f64)),
    Run(Cell),
}

/// One OOD variant (a row of the table).
#[derive(Debug, Clone, Serialize)]
pub struct Variant {
    /// Label.
    pub name: String,
    /// BP (fp32) or QZO-FF (16w8a).
    pub bp: bool,
    /// Adapted depth.
    pub depth: Depth,
    /// Sparse update (QZO-FF only).
    pub sparsity: Sparsity,
}

/// The rows, in order.
pub fn variants() -> Vec<Variant> {
    let mut v = Vec::new();
    for depth in [Depth::Head, Depth::Last2, Depth::All] {
        v.push(Variant {
            name: format!("BP fp32, {}", depth.label()),
            bp: true,
            depth,
            sparsity: Sparsity::default(),
        });
    }
    for depth in [Depth::Head, Depth::Last2, Depth::All] {
        v.push(Variant {
            name: format!("QZO-FF 16w8a, {}", depth.label()),
            bp: false,
            depth,
            sparsity: Sparsity::default(),
        });
    }
    for f in [0.5, 0.25] {
        v.push(Variant {
            name: format!("QZO-FF 16w8a, FT, sparse: {:.0}% of channels", f * 100.0),
            bp: false,
            depth: Depth::All,
            sparsity: Sparsity {
                channel_fraction: Some(f),
                ..Sparsity::default()
            },
        });
    }
    v.push(Variant {
        name: "QZO-FF 16w8a, FT, sparse: 25% smallest weights".into(),
        bp: false,
        depth: Depth::All,
        sparsity: Sparsity {
            magnitude_fraction: Some(0.25),
            ..Sparsity::default()
        },
    });
    v
}

/// One result.
#[derive(Debug, Serialize)]
pub struct Cell {
    /// Corruption `name@severity`.
    pub shift: String,
    /// Row.
    pub variant: String,
    /// Seed.
    pub seed: u64,
    /// The run.
    pub run: RunResult,
}

/// Results of experiment 2.
#[derive(Debug, Serialize)]
pub struct Ood {
    /// Clean MNIST test accuracy of the 16w8a model.
    pub clean_acc_16w8a: f64,
    /// Corruptions.
    pub shifts: Vec<String>,
    /// Zero-shot accuracy per (shift, seed): (fp32, 16w8a).
    pub zero_shot: Vec<(String, u64, f64, f64)>,
    /// Rows.
    pub variants: Vec<Variant>,
    /// Runs.
    pub cells: Vec<Cell>,
    /// QZO-FF settings.
    pub ff: FfSettings,
    /// BP settings.
    pub bp: BpSettings,
}

impl Ood {
    /// Accuracy of `variant` on `shift`.
    pub fn stat(&self, shift: &str, variant: &str) -> Stat {
        let v: Vec<f64> = self
            .cells
            .iter()
            .filter(|c| c.shift == shift && c.variant == variant)
            .map(|c| c.run.acc)
            .collect();
        Stat::of(&v)
    }
    /// Mean over shifts of the per-shift mean accuracy of `variant`.
    pub fn avg(&self, variant: &str) -> f64 {
        let m: Vec<f64> = self
            .shifts
            .iter()
            .map(|s| self.stat(s, variant).mean)
            .collect();
        m.iter().sum::<f64>() / m.len().max(1) as f64
    }
    /// Zero-shot 16w8a accuracy on `shift` (quantized model, no training).
    pub fn zero(&self, shift: &str) -> Stat {
        let v: Vec<f64> = self
            .zero_shot
            .iter()
            .filter(|z| z.0 == shift)
            .map(|z| z.3)
            .collect();
        Stat::of(&v)
    }
    /// Trainable elements of `variant` (first run).
    pub fn trainable(&self, variant: &str) -> u64 {
        self.cells
            .iter()
            .find(|c| c.variant == variant)
            .map_or(0, |c| c.run.trainable)
    }
}

/// Runs experiment 2.
pub fn run(b: &Budget, data: &Data, backbone: &FloatModel, backend: &dyn Backend) -> Result<Ood> {
    let ff = FfSettings {
        steps: b.ood_steps,
        lr_pct: b.lr_pct,
        ..FfSettings::default()
    };
    // One lr for every adapted depth (LP, last 2, FT): the FT setting.
    let bp = BpSettings::ft(b.ood_steps);
    let q = quantize(backbone, &data.mnist_train, WeightBits::W16)?;
    let clean_acc_16w8a = eval_quant(backend, &q, &data.mnist_test)?.1;
    let vars = variants();
    let pb = bar((b.ood.len() * b.seeds.len() * vars.len()) as u64, "ood");
    let mut cells = Vec::new();
    let mut zero_shot = Vec::new();
    let mut shifts = Vec::new();
    for (name, sev) in &b.ood {
        let c = Corruption::parse(name).ok_or_else(|| anyhow!("unknown corruption {name}"))?;
        let shift = format!("{name}@{sev}");
        shifts.push(shift.clone());
        let per_seed = par_seeds(&b.seeds, |seed| -> Result<Vec<Item>> {
            let mut items = Vec::new();
            let train = data
                .mnist_train
                .per_class(b.ood_per_class, seed)?
                .corrupted(c, *sev, seed);
            let test = data.mnist_test.corrupted(c, *sev, 1_000 + seed);
            let zf = eval_float(backbone, &test)?.1;
            let zq = eval_quant(backend, &q, &test)?.1;
            items.push(Item::Zero((shift.clone(), seed, zf, zq)));
            for v in &vars {
                let run = if v.bp {
                    let mut m = backbone.clone();
                    v.depth.apply_float(&mut m);
                    run_bp(&mut m, &train, &test, &bp, seed)?
                } else {
                    let mut qm = q.clone();
                    v.depth.apply_quant(&mut qm);
                    let s = FfSettings {
                        sparsity: v.sparsity,
                        ..ff.clone()
                    };
                    run_qzo(backend, &qm, &train, &test, &s, seed, None)?
                };
                items.push(Item::Run(Cell {
                    shift: shift.clone(),
                    variant: v.name.clone(),
                    seed,
                    run,
                }));
                pb.inc(1);
            }
            Ok(items)
        })?;
        for it in per_seed {
            match it {
                Item::Zero(z) => zero_shot.push(z),
                Item::Run(c) => cells.push(c),
            }
        }
    }
    pb.finish_and_clear();
    Ok(Ood {
        clean_acc_16w8a,
        shifts,
        zero_shot,
        variants: vars,
        cells,
        ff,
        bp,
    })
}
