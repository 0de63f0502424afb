//! Kernel-level tests of the GEMM path (packing, micro-kernel, zero-point and 16w8a
//! byte-split recombination) against plain `i64` arithmetic, on every tier under test:
//! K around every kernel granularity (1 … 129), tile and row-block edges in M and N,
//! extreme zero points and weights, and K = MAX_K at the saturation bound. Then the same
//! bound end to end: a MAX_K linear layer through the backend against cpu-ref.

use lastmile_backend_cpu_ref::kernels::Weights;
use lastmile_backend_neon::kernels::dot_products;
use lastmile_backend_neon::{Neon, Tier};
use lastmile_conformance::one_linear_model;
use lastmile_core::Backend;
use lastmile_core::model::QuantModel;
use lastmile_core::quant::{MAX_ABS_BIAS_8W, MAX_K, WeightBits};

const KS: [usize; 15] = [1, 4, 8, 15, 16, 17, 31, 32, 33, 63, 64, 65, 127, 128, 129];

struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }
    fn range(&mut self, lo: i64, hi: i64) -> i64 {
        lo + (self.next() % (hi - lo + 1) as u64) as i64
    }
    /// Mostly uniform, one in four an extreme of the range.
    fn code(&mut self, lo: i64, hi: i64) -> i64 {
        match self.next() % 8 {
            0 => lo,
            1 => hi,
            _ => self.range(lo, hi),
        }
    }
}

fn reference(x: &[i8], m: usize, zp: i32, w: Weights<'_>, n: usize, k: usize) -> Vec<i64> {
    let mut out = vec![0i64; m * n];
    for i in 0..m {
        for c in 0..n {
            let mut acc = 0i64;
            for kk in 0..k {
                let wv = match w {
                    Weights::I8(v) => v[c * k + kk] as i64,
                    Weights::I16(v) => v[c * k + kk] as i64,
                };
                acc += (x[i * k + kk] as i64 - zp as i64) * wv;
            }
            out[i * n + c] = acc;
        }
    }
    out
}

fn tiers() -> Vec<Tier> {
    let t = Neon::tiers_under_test();
    if t.is_empty() {
        eprintln!("skipped: no NEON tier under test here (not aarch64, or none pinned)");
    }
    t
}

fn check(tier: Tier, m: usize, n: usize, k: usize, zp: i32, rng: &mut Rng) {
    let x: Vec<i8> = (0..m * k).map(|_| rng.code(-128, 127) as i8).collect();
    let w8: Vec<i8> = (0..n * k).map(|_| rng.code(-127, 127) as i8).collect();
    let w16: Vec<i16> = (0..n * k)
        .map(|_| match rng.next() % 6 {
            // The byte-split corners: hi = −128, lo − 128 = −128 / +127, ...
            0 => [-32767i16, 32767, -32512, -256, 255, 0][rng.range(0, 5) as usize],
            _ => rng.range(-32767, 32767) as i16,
        })
        .collect();
    for w in [Weights::I8(&w8), Weights::I16(&w16)] {
        let got = dot_products(tier, &x, m, zp, w, n, k).expect("tier under test runs");
        let want = reference(&x, m, zp, w, n, k);
        assert_eq!(
            got,
            want,
            "tier {tier}, m = {m}, n = {n}, k = {k}, zp = {zp}, {} weights",
            if matches!(w, Weights::I8(_)) { 8 } else { 16 }
        );
    }
}

#[test]
fn k_around_every_kernel_granularity() {
    for tier in tiers() {
        let mut rng = Rng(0x5eed ^ tier as u64);
        for k in KS {
            for (m, n) in [(1, 1), (3, 5), (4, 4), (8, 8), (9, 13), (17, 2)] {
                let zp = [-128, 127, 0, rng.range(-128, 127) as i32][k % 4];
                check(tier, m, n, k, zp, &mut rng);
            }
        }
    }
}

#[test]
fn row_blocks_and_panels_at_their_edges() {
    // 64-row blocks, 4/8-row A panels and 4/8-row B panels (16w8a doubles the B rows).
    for tier in tiers() {
        let mut rng = Rng(7 + tier as u64);
        for (m, n) in [(63, 3), (64, 7), (65, 9), (129, 4), (2, 33)] {
            check(tier, m, n, 33, -7, &mut rng);
        }
    }
}

#[test]
fn k_max_saturating_extremes_are_exact() {
    // K = 65 536 with |x − zp| = 255 and the extreme weights: the largest sums the spec
    // allows (8w8a: 65 536·255·127 = 2 122 383 360, within 0.2 % of i32::MAX).
    let k = MAX_K;
    let (m, n) = (9, 9);
    for tier in tiers() {
        for (xv, zp) in [(127i8, -128i32), (-128, 127)] {
            let x = vec![xv; m * k];
            let w8: Vec<i8> = (0..n)
                .flat_map(|c| std::iter::repeat_n([127i8, -127, 1, 0, -1][c % 5], k))
                .collect();
            let w16: Vec<i16> = (0..n)
                .flat_map(|c| std::iter::repeat_n([32767i16, -32767, -32512, 255, -256][c % 5], k))
                .collect();
            for w in [Weights::I8(&w8), Weights::I16(&w16)] {
                let got = dot_products(tier, &x, m, zp, w, n, k).unwrap();
                assert_eq!(got, reference(&x, m, zp, w, n, k), "tier {tier}");
            }
            let w8_max = 255i64 * 127 * k as i64;
            assert!(w8_max <= i32::MAX as i64);
        }
    }
}

fn linear_model(bits: WeightBits, k: usize, w: &[i32], b: &[i32], zp_in: i32) -> QuantModel {
    let codes: Vec<i32> = w.iter().flat_map(|&v| std::iter::repeat_n(v, k)).collect();
    one_linear_model(bits, k, &codes, b, 3.0 * 2f32.powi(-26), [zp_in, 0], false)
}

#[test]
fn k_max_linear_through_the_backend_matches_cpu_ref() {
    let k = MAX_K;
    let b8 = MAX_ABS_BIAS_8W as i32;
    for tier in tiers() {
        let neon = Neon::with_tier(tier).unwrap();
        for (bits, w, b) in [
            (WeightBits::W8, vec![127, -127, 5], vec![b8, -b8, 0]),
            (
                WeightBits::W16,
                vec![32767, -32767, -32512],
                vec![i32::MAX, i32::MIN + 1, 12345],
            ),
        ] {
            for (xv, zp) in [(127i8, -128), (-128i8, 127)] {
                let model = linear_model(bits, k, &w, &b, zp);
                model.validate().expect("a legal MAX_K model");
                let input = vec![xv; 2 * k];
                let want = lastmile_backend_cpu_ref::run(&model, &input, 2).unwrap();
                let mut p = neon.prepare(&model).unwrap();
                let mut got = Vec::new();
                p.forward(&model.params, &input, 2, &mut got).unwrap();
                assert_eq!(got, want, "tier {tier}, {bits:?}, x = {xv}, zp = {zp}");
            }
        }
    }
}

#[test]
fn other_architectures_get_an_empty_shell() {
    if cfg!(target_arch = "aarch64") {
        assert!(Neon::available_tiers().contains(&Tier::Neon));
        return;
    }
    let e = Neon::best().unwrap_err().to_string();
    assert!(e.contains("not an aarch64 build"), "{e}");
    assert!(Neon::with_tier(Tier::Scalar).is_err());
    assert!(Neon::available_tiers().is_empty());
}
