//! Closed-form ridge regression for the final linear layer (`lastmile new`).
//!
//! Features `x ∈ R^d` are augmented with a constant 1 (the bias); the normal
//! equations `(XᵀX + λ·diag(1,…,1,0)) W = XᵀY` (the bias is not penalized) are
//! accumulated in `f64` and solved by a hand-written Cholesky factorization.
//! Then a single temperature `T` (logits `T·z`) is fitted by golden-section
//! search on the training cross-entropy, so the head's softmax is calibrated
//! rather than regressing to 0/1 targets. Argmax is unchanged by `T`.

use anyhow::{Result, bail};

use lastmile_train::loss::cross_entropy_f32_row as cross_entropy;

/// Accumulates `XᵀX` and `XᵀY` one sample at a time.
#[derive(Debug)]
pub struct NormalEquations {
    d: usize,
    classes: usize,
    /// `(d+1)²`, row-major, full (both triangles kept in sync at solve time).
    gram: Vec<f64>,
    /// `(d+1) × classes`.
    rhs: Vec<f64>,
    samples: usize,
}

/// A fitted linear head: `logits = W x + b`.
#[derive(Debug, Clone)]
pub struct Head {
    /// `[classes, d]`, row-major (the linear layer's `[out, in]`).
    pub weight: Vec<f32>,
    /// `[classes]`.
    pub bias: Vec<f32>,
    /// The ridge strength actually used.
    pub lambda: f64,
    /// The fitted softmax temperature (already folded into `weight` and `bias`).
    pub temperature: f64,
}

impl NormalEquations {
    /// Empty equations for `d` features and `classes` one-hot targets.
    pub fn new(d: usize, classes: usize) -> Self {
        let a = d + 1;
        NormalEquations {
            d,
            classes,
            gram: vec![0.0; a * a],
            rhs: vec![0.0; a * classes],
            samples: 0,
        }
    }

    /// Adds one sample (features `x`, label `y < classes`). Only the upper triangle
    /// of the Gram matrix is accumulated.
    pub fn add(&mut self, x: &[f32], y: usize) {
        debug_assert_eq!(x.len(), self.d);
        let a = self.d + 1;
        let xa = |i: usize| if i < self.d { f64::from(x[i]) } else { 1.0 };
        for i in 0..a {
            let xi = xa(i);
            if xi == 0.0 {
                continue; // ReLU features are often exactly zero
            }
            let row = &mut self.gram[i * a..(i + 1) * a];
            for (j, g) in row.iter_mut().enumerate().skip(i) {
                *g += xi * xa(j);
            }
            self.rhs[i * self.classes + y] += xi;
        }
        self.samples += 1;
    }

    /// Solves with `λ = rel_lambda · trace(XᵀX)/d` on the feature diagonal.
    pub fn solve(mut self, rel_lambda: f64) -> Result<Head> {
        if self.samples == 0 {
            bail!("ridge regression needs at least one training sample");
        }
        let (d, a, k) = (self.d, self.d + 1, self.classes);
        let trace: f64 = (0..d).map(|i| self.gram[i * a + i]).sum();
        let mut lambda = rel_lambda * trace / d.max(1) as f64;
        if !(lambda.is_finite() && lambda > 0.0) {
            lambda = 1e-6; // all features dead: still positive definite, W = 0
        }
        for i in 0..a {
            for j in 0..i {
                self.gram[i * a + j] = self.gram[j * a + i];
            }
            if i < d {
                self.gram[i * a + i] += lambda;
            }
        }
        cholesky_in_place(&mut self.gram, a)?;
        let mut sol = self.rhs;
        cholesky_solve(&self.gram, a, &mut sol, k);
        // sol is (d+1) × k; the head wants [k, d] and [k].
        let mut weight = vec![0f32; k * d];
        let mut bias = vec![0f32; k];
        for c in 0..k {
            for i in 0..d {
                weight[c * d + i] = sol[i * k + c] as f32;
            }
            bias[c] = sol[d * k + c] as f32;
        }
        Ok(Head {
            weight,
            bias,
            lambda,
            temperature: 1.0,
        })
    }
}

/// Lower-triangular Cholesky factor `L` (`A = L Lᵀ`) written over the lower
/// triangle of the symmetric `n × n` matrix `m`.
pub fn cholesky_in_place(m: &mut [f64], n: usize) -> Result<()> {
    for j in 0..n {
        let mut diag = m[j * n + j];
        for p in 0..j {
            diag -= m[j * n + p] * m[j * n + p];
        }
        if !(diag.is_finite() && diag > 0.0) {
            bail!("ridge normal equations are not positive definite (pivot {j} = {diag:e})");
        }
        let ljj = diag.sqrt();
        m[j * n + j] = ljj;
        for i in j + 1..n {
            let mut s = m[i * n + j];
            for p in 0..j {
                s -= m[i * n + p] * m[j * n + p];
            }
            m[i * n + j] = s / ljj;
        }
    }
    Ok(())
}

/// Solves `L Lᵀ X = B` in place for `k` right-hand sides (`b` is `n × k`).
pub fn cholesky_solve(l: &[f64], n: usize, b: &mut [f64], k: usize) {
    for c in 0..k {
        // forward: L y = b
        for i in 0..n {
            let mut s = b[i * k + c];
            for p in 0..i {
                s -= l[i * n + p] * b[p * k + c];
            }
            b[i * k + c] = s / l[i * n + i];
        }
        // backward: Lᵀ x = y
        for i in (0..n).rev() {
            let mut s = b[i * k + c];
            for p in i + 1..n {
                s -= l[p * n + i] * b[p * k + c];
            }
            b[i * k + c] = s / l[i * n + i];
        }
    }
}

/// Fits the temperature `T ∈ [0.01, 1000]` minimizing the mean cross-entropy of
/// `T · logits` (rows of `classes`), by golden-section search on `ln T` (the loss is
/// convex in `T`). Returns `T`.
pub fn fit_temperature(logits: &[f32], labels: &[usize], classes: usize) -> f64 {
    let loss = |t: f64| -> f64 {
        let mut row = vec![0f32; classes];
        let mut sum = 0.0;
        for (r, &y) in logits.chunks_exact(classes).zip(labels) {
            for (o, &z) in row.iter_mut().zip(r) {
                *o = (f64::from(z) * t) as f32;
            }
            sum += cross_entropy(&row, y).0;
        }
        sum
    };
    let (mut lo, mut hi) = (0.01f64.ln(), 1000f64.ln());
    let g = (5f64.sqrt() - 1.0) / 2.0;
    let mut a = hi - g * (hi - lo);
    let mut b = lo + g * (hi - lo);
    let (mut fa, mut fb) = (loss(a.exp()), loss(b.exp()));
    for _ in 0..60 {
        if fa <= fb {
            hi = b;
            b = a;
            fb = fa;
            a = hi - g * (hi - lo);
            fa = loss(a.exp());
        } else {
            lo = a;
            a = b;
            fa = fb;
            b = lo + g * (hi - lo);
            fb = loss(b.exp());
        }
        if hi - lo < 1e-4 {
            break;
        }
    }
    ((lo + hi) / 2.0).exp()
}

impl Head {
    /// Logits of one feature row (before temperature if not yet applied).
    pub fn logits(&self, x: &[f32], out: &mut [f32]) {
        let d = x.len();
        for (c, o) in out.iter_mut().enumerate() {
            let w = &self.weight[c * d..(c + 1) * d];
            let mut s = f64::from(self.bias[c]);
            for (wi, xi) in w.iter().zip(x) {
                s += f64::from(*wi) * f64::from(*xi);
            }
            *o = s as f32;
        }
    }

    /// Multiplies weight and bias by `t` and records it.
    pub fn apply_temperature(&mut self, t: f64) {
        for v in self.weight.iter_mut().chain(self.bias.iter_mut()) {
            *v = (f64::from(*v) * t) as f32;
        }
        self.temperature = t;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cholesky_solves_a_known_system() {
        // A = [[4, 2], [2, 3]], b = [2, 1] → x = [0.5, 0]
        let mut a = vec![4.0, 2.0, 2.0, 3.0];
        cholesky_in_place(&mut a, 2).unwrap();
        let mut b = vec![2.0, 1.0];
        cholesky_solve(&a, 2, &mut b, 1);
        assert!((b[0] - 0.5).abs() < 1e-12 && b[1].abs() < 1e-12, "{b:?}");
        let mut bad = vec![1.0, 2.0, 2.0, 1.0];
        assert!(cholesky_in_place(&mut bad, 2).is_err());
    }

    #[test]
    fn ridge_separates_a_linear_problem() {
        // class = x0 > x1
        let mut ne = NormalEquations::new(2, 2);
        let mut rows = Vec::new();
        let mut s = 1u64;
        for _ in 0..400 {
            s = s
                .wrapping_mul(6364136223846793005)
                .wrapping_add(1442695040888963407);
            let a = (s >> 40) as f32 / (1u64 << 24) as f32;
            s = s
                .wrapping_mul(6364136223846793005)
                .wrapping_add(1442695040888963407);
            let b = (s >> 40) as f32 / (1u64 << 24) as f32;
            let y = usize::from(a > b);
            ne.add(&[a, b], y);
            rows.push(([a, b], y));
        }
        let mut head = ne.solve(1e-3).unwrap();
        let mut logits = Vec::new();
        let mut out = [0f32; 2];
        let mut correct = 0;
        for (x, y) in &rows {
            head.logits(x, &mut out);
            correct += usize::from(cross_entropy(&out, *y).1 == *y);
            logits.extend_from_slice(&out);
        }
        assert!(correct >= 390, "{correct}/400");
        let labels: Vec<usize> = rows.iter().map(|r| r.1).collect();
        let t = fit_temperature(&logits, &labels, 2);
        assert!(
            t > 1.0,
            "a separable problem wants sharper logits, got T = {t}"
        );
        head.apply_temperature(t);
        assert_eq!(head.temperature, t);
    }
}
