//! Experiment 6: the loss landscape of the trainable layer around the starting point,
//! with BP and QZO-FF trajectories projected onto it.
//!
//! Task: Fashion-MNIST, K = 100 per class, linear probing (the head on the frozen
//! MNIST backbone, initialised as the nearest-class-mean head). The surface is the
//! training cross-entropy on the labelled examples' (float) features.

use std::path::Path;

use anyhow::{Result, anyhow};
use lastmile_core::model::FloatModel;
use lastmile_core::zoo::SplitMix64;
use lastmile_core::{Backend, ParamRole, WeightBits, ptq};
use lastmile_plot::{Heatmap, Series};
use serde::Serialize;

use crate::Budget;
use crate::common::{
    Data, Depth, FfSettings, batch_plan, head_features, head_node, ncm_head, quantize, run_qzo,
};

/// Results of experiment 6.
#[derive(Debug, Serialize)]
pub struct Landscape {
    /// Task description.
    pub task: String,
    /// Grid side.
    pub grid: usize,
    /// Parameters of the trained layer.
    pub params: usize,
    /// Panels: random filter-normalised directions, and the trajectories' top-2 PCA directions.
    pub panels: Vec<Panel>,
    /// Training loss along the BP trajectory `(step, loss)`.
    pub bp_loss: Vec<(u64, f64)>,
    /// Training loss along the QZO-FF trajectory `(step, loss)`, at its dequantized weights.
    pub ff_loss: Vec<(u64, f64)>,
    /// Distance travelled from the start (L2 of the head's parameters): BP, QZO-FF.
    pub distance: (f64, f64),
    /// The plot.
    pub plot: String,
}

/// One projection.
#[derive(Debug, Serialize)]
pub struct Panel {
    /// Name.
    pub name: String,
    /// Grid coordinates.
    pub coords: Vec<f64>,
    /// Loss, row-major over (β, α).
    pub loss: Vec<f64>,
    /// Projected BP trajectory.
    pub bp: Vec<(f64, f64)>,
    /// Projected QZO-FF trajectory.
    pub ff: Vec<(f64, f64)>,
    /// Fraction of each trajectory's final displacement captured by the plane: BP, FF.
    pub captured: (f64, f64),
}

/// The head's parameters as one vector (weight row-major, then bias).
fn head_vec(m: &FloatModel) -> Vec<f64> {
    let h = head_node(&m.topology);
    let mut v = Vec::new();
    for role in [ParamRole::Weight, ParamRole::Bias] {
        for (pid, r) in m.topology.nodes[h].op.params() {
            if r == role {
                v.extend(m.params[pid.index()].data.iter().map(|&x| x as f64));
            }
        }
    }
    v
}

struct Surface<'a> {
    f: &'a [f32],
    y: &'a [u8],
    dim: usize,
    classes: usize,
}

impl Surface<'_> {
    /// Mean cross-entropy (and gradient if asked) of head `theta` on rows `idx`.
    fn loss(&self, theta: &[f64], idx: Option<&[usize]>, grad: Option<&mut Vec<f64>>) -> f64 {
        let (d, c) = (self.dim, self.classes);
        let all: Vec<usize>;
        let idx = match idx {
            Some(i) => i,
            None => {
                all = (0..self.y.len()).collect();
                &all
            }
        };
        let mut g = grad;
        if let Some(g) = g.as_deref_mut() {
            g.clear();
            g.resize(theta.len(), 0.0);
        }
        let mut tot = 0.0;
        let mut z = vec![0f64; c];
        for &i in idx {
            let x = &self.f[i * d..(i + 1) * d];
            for (k, zk) in z.iter_mut().enumerate() {
                *zk =
                    theta[c * d + k] + (0..d).map(|j| theta[k * d + j] * x[j] as f64).sum::<f64>();
            }
            let mx = z.iter().cloned().fold(f64::NEG_INFINITY, f64::max);
            let se: f64 = z.iter().map(|v| (v - mx).exp()).sum();
            tot += mx + se.ln() - z[self.y[i] as usize];
            if let Some(g) = g.as_deref_mut() {
                for k in 0..c {
                    let p = (z[k] - mx).exp() / se - (k == self.y[i] as usize) as u8 as f64;
                    g[c * d + k] += p / idx.len() as f64;
                    for j in 0..d {
                        g[k * d + j] += p * x[j] as f64 / idx.len() as f64;
                    }
                }
            }
        }
        tot / idx.len().max(1) as f64
    }
}

fn gaussian(rng: &mut SplitMix64) -> f64 {
    let u1 = rng.next_f64().max(1e-300);
    let u2 = rng.next_f64();
    (-2.0 * u1.ln()).sqrt() * (std::f64::consts::TAU * u2).cos()
}

fn dot(a: &[f64], b: &[f64]) -> f64 {
    a.iter().zip(b).map(|(x, y)| x * y).sum()
}

/// Least-squares coordinates of `v` in span(d1, d2).
fn project(v: &[f64], d1: &[f64], d2: &[f64]) -> (f64, f64) {
    let (a, b, c) = (dot(d1, d1), dot(d1, d2), dot(d2, d2));
    let (p, q) = (dot(v, d1), dot(v, d2));
    let det = a * c - b * b;
    if det.abs() < 1e-300 {
        return (0.0, 0.0);
    }
    ((c * p - b * q) / det, (a * q - b * p) / det)
}

/// Runs experiment 6 and writes `<img>/results-landscape.png`.
pub fn run(
    b: &Budget,
    data: &Data,
    backbone: &FloatModel,
    backend: &dyn Backend,
    img: &Path,
) -> Result<Landscape> {
    let seed = b.seeds.first().copied().unwrap_or(0);
    let support = data.fashion_train.per_class(100, seed)?;
    let ncm = ncm_head(backbone, &support)?;
    let (f, dim) = head_features(&ncm, &support)?;
    let classes = support.num_classes;
    let s = Surface {
        f: &f,
        y: &support.labels,
        dim,
        classes,
    };
    let theta0 = head_vec(&ncm);
    let every = (b.ff_steps / 40).max(1);
    // BP-LP: exact gradient of the head (backprop through the one trained layer), Adam
    // (β = 0.9, 0.999, lr 1e-2 as BP-LP in the transfer table), the same batches as QZO-FF.
    let plan = batch_plan(&support, 32, b.ff_steps, seed);
    let mut th = theta0.clone();
    let (mut m1, mut m2) = (vec![0f64; th.len()], vec![0f64; th.len()]);
    let mut g = Vec::new();
    let mut bp_traj = vec![th.clone()];
    let mut bp_loss = vec![(0, s.loss(&th, None, None))];
    for (t, batch) in plan.iter().enumerate() {
        s.loss(&th, Some(batch), Some(&mut g));
        let t1 = (t + 1) as i32;
        for i in 0..th.len() {
            m1[i] = 0.9 * m1[i] + 0.1 * g[i];
            m2[i] = 0.999 * m2[i] + 0.001 * g[i] * g[i];
            let mh = m1[i] / (1.0 - 0.9f64.powi(t1));
            let vh = m2[i] / (1.0 - 0.999f64.powi(t1));
            th[i] -= 1e-2 * (mh / (vh.sqrt() + 1e-8) + 1e-4 * th[i]);
        }
        if (t as u64 + 1).is_multiple_of(every) {
            bp_traj.push(th.clone());
            bp_loss.push((t as u64 + 1, s.loss(&th, None, None)));
        }
    }
    // QZO-FF-LP 16w8a: the head at its dequantized weights every `every` steps.
    let mut q = quantize(&ncm, &support, WeightBits::W16)?;
    Depth::Head.apply_quant(&mut q);
    let mut ff_traj = Vec::new();
    let mut ff_loss = Vec::new();
    let ff = FfSettings {
        steps: b.ff_steps,
        lr_pct: b.lr_pct,
        ..FfSettings::default()
    };
    {
        let mut snap = |step: u64, t: &lastmile_train::Trainer| {
            if step.is_multiple_of(every) {
                let v = head_vec(&ptq::dequantize(&t.model()));
                ff_loss.push((step, s.loss(&v, None, None)));
                ff_traj.push(v);
            }
        };
        run_qzo(backend, &q, &support, &support, &ff, seed, Some(&mut snap))?;
    }
    let disp = |tr: &[Vec<f64>]| -> Vec<Vec<f64>> {
        tr.iter()
            .map(|v| v.iter().zip(&theta0).map(|(a, b)| a - b).collect())
            .collect()
    };
    let (bp_d, ff_d) = (disp(&bp_traj), disp(&ff_traj));
    let norm = |v: &[f64]| dot(v, v).sqrt();
    let distance = (
        bp_d.last().map_or(0.0, |v| norm(v)),
        ff_d.last().map_or(0.0, |v| norm(v)),
    );
    // Directions. (a) Random Gaussian, filter-normalised per output row of the weight
    // (bias direction 0, as in Li et al. 2018).
    let mut rng = SplitMix64::new(0x1a4d_5ca9e ^ seed);
    let wlen = classes * dim;
    let mut rand_dir = || -> Vec<f64> {
        let mut d: Vec<f64> = (0..theta0.len()).map(|_| gaussian(&mut rng)).collect();
        for k in 0..classes {
            let row = k * dim..(k + 1) * dim;
            let (wn, dn) = (norm(&theta0[row.clone()]), norm(&d[row.clone()]));
            for x in &mut d[row] {
                *x *= wn / dn.max(1e-300);
            }
        }
        for x in &mut d[wlen..] {
            *x = 0.0;
        }
        d
    };
    let (r1, r2) = (rand_dir(), rand_dir());
    // (b) Top-2 principal directions of all displacements (uncentred, from the start),
    // by power iteration on the Gram matrix of the snapshots.
    let all: Vec<&Vec<f64>> = bp_d.iter().chain(ff_d.iter()).collect();
    let pca = |deflate: Option<&Vec<f64>>| -> Vec<f64> {
        let mut v: Vec<f64> = (0..theta0.len())
            .map(|i| ((i * 7919) % 13) as f64 - 6.0)
            .collect();
        for _ in 0..200 {
            let mut w = vec![0f64; v.len()];
            for x in &all {
                let c = dot(x, &v);
                for (wi, xi) in w.iter_mut().zip(x.iter()) {
                    *wi += c * xi;
                }
            }
            if let Some(p) = deflate {
                let c = dot(&w, p);
                for (wi, pi) in w.iter_mut().zip(p) {
                    *wi -= c * pi;
                }
            }
            let n = norm(&w).max(1e-300);
            v = w.iter().map(|x| x / n).collect();
        }
        v
    };
    let p1 = pca(None);
    let p2 = pca(Some(&p1));
    let grid = b.landscape_grid.max(3);
    let mut panels = Vec::new();
    for (name, d1, d2, min_half) in [
        ("random filter-normalised directions", &r1, &r2, 1.0),
        ("top-2 PCA directions of the trajectories", &p1, &p2, 0.0),
    ] {
        let bp: Vec<(f64, f64)> = bp_d.iter().map(|v| project(v, d1, d2)).collect();
        let ffp: Vec<(f64, f64)> = ff_d.iter().map(|v| project(v, d1, d2)).collect();
        let reach = bp
            .iter()
            .chain(ffp.iter())
            .fold(0f64, |m, p| m.max(p.0.abs()).max(p.1.abs()));
        let half = (reach * 1.25).max(min_half).max(1e-6);
        let coords: Vec<f64> = (0..grid)
            .map(|i| -half + 2.0 * half * i as f64 / (grid - 1) as f64)
            .collect();
        let mut loss = Vec::with_capacity(grid * grid);
        for &bt in &coords {
            for &al in &coords {
                let th: Vec<f64> = (0..theta0.len())
                    .map(|i| theta0[i] + al * d1[i] + bt * d2[i])
                    .collect();
                loss.push(s.loss(&th, None, None));
            }
        }
        let captured = |traj: &[Vec<f64>], pr: &[(f64, f64)]| -> f64 {
            match (traj.last(), pr.last()) {
                (Some(v), Some(&(a, bb))) => {
                    let p: Vec<f64> = (0..v.len()).map(|i| a * d1[i] + bb * d2[i]).collect();
                    norm(&p) / norm(v).max(1e-300)
                }
                _ => 0.0,
            }
        };
        panels.push(Panel {
            name: name.into(),
            captured: (captured(&bp_d, &bp), captured(&ff_d, &ffp)),
            coords,
            loss,
            bp,
            ff: ffp,
        });
    }
    let plot = img.join("results-landscape.png");
    let maps: Vec<Heatmap> = panels
        .iter()
        .map(|p| Heatmap {
            title: format!("LP head, Fashion K=100: {}", p.name),
            x_label: "direction 1".into(),
            y_label: "direction 2".into(),
            xs: p.coords.clone(),
            ys: p.coords.clone(),
            z: p.loss.clone(),
            paths: vec![
                Series {
                    name: "BP (Adam)".into(),
                    points: p.bp.clone(),
                    color: 0,
                },
                Series {
                    name: "QZO-FF 16w8a".into(),
                    points: p.ff.clone(),
                    color: 1,
                },
            ],
        })
        .collect();
    lastmile_plot::heatmaps(&plot, &maps, 1300, 600).map_err(|e| anyhow!("{e}"))?;
    Ok(Landscape {
        task: format!(
            "Fashion-MNIST K = 100 (seed {seed}), LP: the head ({} parameters) on the frozen MNIST backbone, from the NCM head; surface = training cross-entropy on the examples' fp32 features; {} steps of batch 32, snapshots every {every}",
            theta0.len(),
            b.ff_steps
        ),
        grid,
        params: theta0.len(),
        panels,
        bp_loss,
        ff_loss,
        distance,
        plot: plot.display().to_string(),
    })
}

#[cfg(test)]
mod tests {
    use super::project;

    #[test]
    fn projection_recovers_coordinates_in_a_skewed_basis() {
        let d1 = [1.0, 0.0, 0.0];
        let d2 = [1.0, 1.0, 0.0];
        let v = [2.0 * 1.0 + 3.0, 3.0, 0.5]; // 2·d1 + 3·d2 + off-plane part
        let (a, b) = project(&v, &d1, &d2);
        assert!((a - 2.0).abs() < 1e-12 && (b - 3.0).abs() < 1e-12);
    }
}
