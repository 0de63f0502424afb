//! The loss, on the host, from dequantized logits — `libm` only, so it is
//! bit-identical on every target (x86, aarch64, Cortex-M).

use lastmile_core::quant::ActQuant;

/// Mean softmax cross-entropy (natural log) and the number of correct top-1
/// predictions. `logits` is `n × classes` codes; ties in argmax go to the lower class.
/// Computed in `f64` (log-sum-exp, max-shifted) so tiny loss differences keep their sign.
pub fn cross_entropy(
    logits: &[i8],
    quant: ActQuant,
    labels: &[u8],
    classes: usize,
) -> (f64, usize) {
    let n = labels.len();
    if n == 0 || classes == 0 {
        return (0.0, 0);
    }
    let mut total = 0.0f64;
    let mut correct = 0usize;
    for (s, &label) in labels.iter().enumerate() {
        let row = &logits[s * classes..(s + 1) * classes];
        let mut best = 0usize;
        for (c, &q) in row.iter().enumerate() {
            if q > row[best] {
                best = c;
            }
        }
        if best == label as usize {
            correct += 1;
        }
        let x = |q: i8| quant.scale as f64 * (q as i32 - quant.zero_point) as f64;
        let max = x(row[best]);
        let sum: f64 = row.iter().map(|&q| libm::exp(x(q) - max)).sum();
        let lse = max + libm::log(sum);
        let target = row.get(label as usize).map_or(max, |&q| x(q));
        total += lse - target;
    }
    (total / n as f64, correct)
}

/// Softmax cross-entropy (natural log) of one row of float logits against `label`, and
/// the row's argmax (ties go to the lower class): `log Σ exp(x − max) + max − x_label` in
/// `f64` with `libm`. A label outside the row counts as the max logit (loss `log Σ`).
pub fn cross_entropy_f32_row(row: &[f32], label: usize) -> (f64, usize) {
    let mut best = 0usize;
    for (c, &v) in row.iter().enumerate() {
        if v > row[best] {
            best = c;
        }
    }
    let Some(&top) = row.get(best) else {
        return (0.0, 0);
    };
    let max = top as f64;
    let lse = max + libm::log(row.iter().map(|&v| libm::exp(v as f64 - max)).sum::<f64>());
    (lse - row.get(label).map_or(max, |&v| v as f64), best)
}

/// Mean softmax cross-entropy and correct top-1 count of `n × classes` float logits.
pub fn cross_entropy_f32(logits: &[f32], labels: &[u8], classes: usize) -> (f64, usize) {
    if labels.is_empty() || classes == 0 {
        return (0.0, 0);
    }
    let mut total = 0.0;
    let mut correct = 0;
    for (s, &label) in labels.iter().enumerate() {
        let (l, best) =
            cross_entropy_f32_row(&logits[s * classes..(s + 1) * classes], label as usize);
        total += l;
        correct += (best == label as usize) as usize;
    }
    (total / labels.len() as f64, correct)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn f32_rows_are_stable_and_correct() {
        let (l, a) = cross_entropy_f32_row(&[0.0, 0.0], 1);
        assert!((l - core::f64::consts::LN_2).abs() < 1e-12);
        assert_eq!(a, 0);
        let (l, a) = cross_entropy_f32_row(&[1000.0, 0.0, -1000.0], 0);
        assert!(l.abs() < 1e-12, "{l}");
        assert_eq!(a, 0);
        let (l, _) = cross_entropy_f32_row(&[1000.0, 0.0], 1);
        assert!((l - 1000.0).abs() < 1e-9);
        let (l, c) = cross_entropy_f32(&[0.0, 5.0, 5.0, 0.0], &[1, 1], 2);
        assert_eq!(c, 1);
        assert!((l - 2.5).abs() < 0.01, "{l}");
    }

    #[test]
    fn f32_and_quantized_losses_agree() {
        let q = ActQuant {
            scale: 0.1,
            zero_point: 2,
        };
        let codes = [10i8, -20, 30, 0];
        let f: alloc::vec::Vec<f32> = codes
            .iter()
            .map(|&c| (q.scale as f64 * (c as i32 - 2) as f64) as f32)
            .collect();
        let (a, ca) = cross_entropy(&codes, q, &[2, 0], 2);
        let (b, cb) = cross_entropy_f32(&f, &[2, 0], 2);
        assert_eq!(ca, cb);
        assert!((a - b).abs() < 1e-6, "{a} vs {b}");
    }

    #[test]
    fn uniform_logits_give_ln_classes() {
        let q = ActQuant {
            scale: 0.1,
            zero_point: 0,
        };
        let (l, _) = cross_entropy(&[5; 10], q, &[3], 10);
        assert!((l - libm::log(10.0)).abs() < 1e-12);
    }

    #[test]
    fn confident_correct_is_low_and_counted() {
        let q = ActQuant {
            scale: 0.1,
            zero_point: 0,
        };
        let mut row = [0i8; 4];
        row[2] = 100;
        let (l, c) = cross_entropy(&row, q, &[2], 4);
        assert!(l < 1e-3 && c == 1);
        let (l2, c2) = cross_entropy(&row, q, &[1], 4);
        assert!(l2 > 9.9 && c2 == 0);
    }
}
