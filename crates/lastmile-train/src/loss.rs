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

#[cfg(test)]
mod tests {
    use super::*;

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
