//! Experiment 4: ablations of QZO-FF's switches, on the Fashion-MNIST transfer task
//! (K = 100 per class).

use anyhow::Result;
use lastmile_core::model::FloatModel;
use lastmile_core::{Backend, WeightBits, zoo};
use lastmile_train::{Estimator, Rounding};
use serde::Serialize;

use crate::Budget;
use crate::common::{
    Data, Depth, FfSettings, RunResult, Stat, bar, ncm_head, par_seeds, quantize, run_qzo,
};

/// Examples per class of the ablation task.
pub const K: usize = 100;

/// One variant.
#[derive(Debug, Clone, Serialize)]
pub struct Variant {
    /// Label.
    pub name: String,
    /// Group (what is compared).
    pub group: String,
    /// Weight width.
    pub bits: u8,
    /// Depth.
    pub depth: Depth,
    /// Settings.
    pub ff: FfSettings,
    /// Start from a random-init (not pretrained) backbone.
    pub random_init: bool,
    /// Whether it runs.
    pub ran: bool,
}

/// The variants.
pub fn variants(steps: u64, lr_pct: f64) -> Vec<Variant> {
    let base = FfSettings {
        steps,
        lr_pct,
        ..FfSettings::default()
    };
    let v = |name: &str, group: &str, bits: u8, depth: Depth, ff: FfSettings| Variant {
        name: name.into(),
        group: group.into(),
        bits,
        depth,
        ff,
        random_init: false,
        ran: true,
    };
    let mut out = vec![
        v(
            "baseline: m=3, sign-SPSA, nearest",
            "baseline",
            16,
            Depth::All,
            base.clone(),
        ),
        v(
            "m=1",
            "m = 1 vs 3",
            16,
            Depth::All,
            FfSettings {
                draws: 1,
                ..base.clone()
            },
        ),
        v(
            "SPSA (not sign), m=3",
            "sign-SPSA vs SPSA",
            16,
            Depth::All,
            FfSettings {
                estimator: Estimator::Spsa,
                ..base.clone()
            },
        ),
        v(
            "sharpness-aware, rho=0.3%",
            "sharpness-aware",
            16,
            Depth::All,
            FfSettings {
                sharpness_pct: Some(0.3),
                ..base.clone()
            },
        ),
        v(
            "kernel-wise normalization",
            "kernel-norm",
            16,
            Depth::All,
            FfSettings {
                kernel_norm: true,
                ..base.clone()
            },
        ),
        v(
            "stochastic rounding",
            "rounding",
            16,
            Depth::All,
            FfSettings {
                rounding: Rounding::Stochastic,
                ..base.clone()
            },
        ),
    ];
    for depth in [Depth::All, Depth::Head] {
        for r in [Rounding::Nearest, Rounding::Stochastic] {
            let sc = if depth == Depth::All { "FT" } else { "LP" };
            let rn = if r == Rounding::Nearest {
                "nearest"
            } else {
                "stochastic"
            };
            out.push(v(
                &format!("8w8a {sc}, {rn} rounding"),
                "8w8a rounding",
                8,
                depth,
                FfSettings {
                    rounding: r,
                    ..base.clone()
                },
            ));
        }
    }
    let mut ri = v(
        "random-init backbone (no pretraining)",
        "initialisation",
        16,
        Depth::All,
        base.clone(),
    );
    ri.random_init = true;
    out.push(ri);
    out.push(v(
        "momentum-guided sampling (beta 0.9, mix 0.25)",
        "momentum",
        16,
        Depth::All,
        FfSettings {
            momentum: Some(lastmile_train::MomentumConfig {
                beta: 0.9,
                mix: 0.25,
            }),
            ..base
        },
    ));
    out
}

/// One run.
#[derive(Debug, Serialize)]
pub struct Cell {
    /// Variant.
    pub variant: String,
    /// Seed.
    pub seed: u64,
    /// Run.
    pub run: RunResult,
}

/// Results of experiment 4.
#[derive(Debug, Serialize)]
pub struct Ablation {
    /// Task.
    pub task: String,
    /// Variants.
    pub variants: Vec<Variant>,
    /// Runs.
    pub cells: Vec<Cell>,
}

impl Ablation {
    /// Accuracy of a variant.
    pub fn stat(&self, variant: &str) -> Stat {
        Stat::of(&self.accs(variant))
    }
    /// Per-seed accuracies.
    pub fn accs(&self, variant: &str) -> Vec<f64> {
        self.cells
            .iter()
            .filter(|c| c.variant == variant)
            .map(|c| c.run.acc)
            .collect()
    }
    /// Start accuracy of a variant.
    pub fn start(&self, variant: &str) -> Stat {
        let v: Vec<f64> = self
            .cells
            .iter()
            .filter(|c| c.variant == variant)
            .map(|c| c.run.start_acc)
            .collect();
        Stat::of(&v)
    }
}

/// Runs experiment 4.
pub fn run(
    b: &Budget,
    data: &Data,
    backbone: &FloatModel,
    backend: &dyn Backend,
) -> Result<Ablation> {
    let vars = variants(b.ff_steps, b.lr_pct);
    let ran = vars.iter().filter(|v| v.ran).count();
    let pb = bar((ran * b.seeds.len()) as u64, "ablations");
    let shape = [28usize, 28, 1];
    let (t, s) =
        zoo::by_name("mnist-cnn", Some(&shape), 10).ok_or_else(|| anyhow::anyhow!("zoo"))?;
    let random = zoo::init_float(t, s, 7);
    let cells = par_seeds(&b.seeds, |seed| -> Result<Vec<Cell>> {
        let mut cells = Vec::new();
        let support = data.fashion_train.per_class(K, seed)?;
        let test = &data.fashion_test;
        let ncm = ncm_head(backbone, &support)?;
        let ncm_random = ncm_head(&random, &support)?;
        for v in vars.iter().filter(|v| v.ran) {
            let bits = if v.bits == 8 {
                WeightBits::W8
            } else {
                WeightBits::W16
            };
            let src = if v.random_init { &ncm_random } else { &ncm };
            let mut q = quantize(src, &support, bits)?;
            v.depth.apply_quant(&mut q);
            let run = run_qzo(backend, &q, &support, test, &v.ff, seed, None)?;
            cells.push(Cell {
                variant: v.name.clone(),
                seed,
                run,
            });
            pb.inc(1);
        }
        Ok(cells)
    })?;
    pb.finish_and_clear();
    Ok(Ablation {
        task: format!(
            "Fashion-MNIST, K = {K} per class, MNIST-pretrained mnist-cnn with NCM head, QZO-FF FT (all layers) unless noted, {} steps of batch 32",
            b.ff_steps
        ),
        variants: vars,
        cells,
    })
}
