//! Seeded shuffling that gives the same result on every target.
//!
//! # The rule (do not change without updating the pinned test vectors)
//!
//! 1. The generator is `ChaCha8Rng::seed_from_u64(seed)` (`rand_chacha` 0.9). Its output stream is
//!    defined by the ChaCha spec and its seed expansion by `rand_core`, so it does not depend on
//!    the target's pointer width or endianness.
//! 2. Every random draw is a full `u64` from `next_u64`, never a `usize`: 32-bit targets (armv7,
//!    thumbv7em) would otherwise consume the stream differently from 64-bit ones.
//! 3. A draw is reduced to `0..n` with Lemire's multiply-shift method on `u64`/`u128` with
//!    rejection, which is exactly uniform and uses only integer arithmetic.
//! 4. Fisher–Yates runs from the last position down: for `i` in `(1..len).rev()`, draw
//!    `j` in `0..=i` and swap positions `i` and `j`.
//!
//! Code that needs several shuffles from one seed (e.g. per-class shuffles in a stratified
//! split) uses one generator and shuffles in a fixed, documented order.

use rand_chacha::ChaCha8Rng;
use rand_chacha::rand_core::{RngCore, SeedableRng};

/// The crate's seeded generator (see the module docs for why it is fixed).
pub(crate) fn rng(seed: u64) -> ChaCha8Rng {
    ChaCha8Rng::seed_from_u64(seed)
}

/// Uniform draw from `0..n` (Lemire 2019, "Fast Random Integer Generation in an Interval").
/// `n` must be non-zero.
fn below(rng: &mut ChaCha8Rng, n: u64) -> u64 {
    debug_assert!(n > 0);
    let mut m = u128::from(rng.next_u64()) * u128::from(n);
    let mut low = m as u64;
    if low < n {
        // 2^64 mod n: the size of the biased zone that must be rejected.
        let threshold = n.wrapping_neg() % n;
        while low < threshold {
            m = u128::from(rng.next_u64()) * u128::from(n);
            low = m as u64;
        }
    }
    (m >> 64) as u64
}

/// Fisher–Yates shuffle of `items` with the rule from the module docs.
pub(crate) fn shuffle_with<T>(items: &mut [T], rng: &mut ChaCha8Rng) {
    for i in (1..items.len()).rev() {
        // `j <= i < items.len()`, so the cast back to usize cannot truncate.
        let j = below(rng, i as u64 + 1) as usize;
        items.swap(i, j);
    }
}

/// A seeded permutation of `0..n`, identical on every target for the same `(n, seed)`.
///
/// ```
/// let p = lastmile_data::permutation(5, 7);
/// let mut sorted = p.clone();
/// sorted.sort();
/// assert_eq!(sorted, vec![0, 1, 2, 3, 4]);
/// assert_eq!(p, lastmile_data::permutation(5, 7));
/// ```
pub fn permutation(n: usize, seed: u64) -> Vec<usize> {
    let mut p: Vec<usize> = (0..n).collect();
    shuffle_with(&mut p, &mut rng(seed));
    p
}
