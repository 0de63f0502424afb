//! The add and pool kernels of every tier under test against the reference (`cpu-ref`):
//! every length around the 8-element add step and the 16-channel pool step, add constants
//! from ordinary to extreme (shifts 1 and 62, multipliers at the bound of the `i32`
//! fast path and past it), extreme codes, padding, strides, and global pools with more
//! taps than one `i16` flush (256) holds.

use lastmile_backend_cpu_ref::kernels::{self as reference, AddQuant};
use lastmile_backend_neon::kernels::{add, global_avg_pool, pool2d};
use lastmile_backend_neon::{Neon, Tier};
use lastmile_core::graph::Pool2d;
use lastmile_core::quant::QuantMultiplier;

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
    /// Mostly uniform, one in four an extreme.
    fn code(&mut self) -> i8 {
        match self.next() % 8 {
            0 => -128,
            1 => 127,
            _ => self.range(-128, 127) as i8,
        }
    }
    fn codes(&mut self, n: usize) -> Vec<i8> {
        (0..n).map(|_| self.code()).collect()
    }
}

fn tiers() -> Vec<Tier> {
    let t = Neon::tiers_under_test();
    eprintln!("tiers under test: {t:?}");
    t
}

fn m(r: f64) -> QuantMultiplier {
    QuantMultiplier::from_real(r).unwrap()
}

#[test]
fn add_matches_reference() {
    let mut rng = Rng(7);
    // (r_a, r_b, r_out): a derived plan has r_a, r_b ≤ ½; the last rows leave the i32 fast
    // path (r = 8: |M(255·2^20)| ≥ 2^31) and must fall back exactly.
    let consts = [
        (0.5, 0.5, 1.0 / (1u64 << 20) as f64),
        (0.5, 0.123_456, 3.7e-6),
        (0.031_25, 0.5, 0.25),
        (0.5, 2.0f64.powi(-32), 2.0f64.powi(29)),
        (0.499_999_9, 0.333_333, 2.0f64.powi(-32)),
        (0.5, 0.5, 2.0f64.powi(-31)),
        (0.999, 0.999, 1e-6),
        (8.0, 8.0, 1e-7),
        (8.0, 0.5, 2.0f64.powi(-30)),
    ];
    for tier in tiers() {
        for (ci, &(ra, rb, ro)) in consts.iter().enumerate() {
            for len in (0..=40).chain([255, 1024, 1031]) {
                for rep in 0..3 {
                    let zp = |rng: &mut Rng| match rep {
                        0 => rng.range(-128, 127) as i32,
                        1 => -128,
                        _ => 127,
                    };
                    let q = AddQuant {
                        mult_a: m(ra),
                        mult_b: m(rb),
                        mult_out: m(ro),
                        zp_a: zp(&mut rng),
                        zp_b: zp(&mut rng),
                        zp_out: rng.range(-128, 127) as i32,
                        lo: if rep == 1 {
                            rng.range(-128, 0) as i32
                        } else {
                            -128
                        },
                        hi: if rep == 2 {
                            rng.range(0, 127) as i32
                        } else {
                            127
                        },
                    };
                    let (a, b) = (rng.codes(len), rng.codes(len));
                    let mut want = vec![0i8; len];
                    reference::add(q, &a, &b, &mut want);
                    let got = add(tier, q, &a, &b).unwrap();
                    assert_eq!(got, want, "{tier}: consts #{ci}, len {len}, {q:?}");
                }
            }
        }
    }
}

#[test]
fn pools_match_reference() {
    let mut rng = Rng(11);
    let windows = [
        ([2, 2], [2, 2], [0, 0, 0, 0]),
        ([3, 3], [1, 1], [1, 1, 1, 1]),
        ([3, 3], [2, 2], [1, 0, 2, 1]),
        ([1, 1], [1, 1], [0, 0, 0, 0]),
        ([5, 2], [3, 1], [4, 1, 2, 0]),
        ([17, 17], [1, 1], [16, 16, 16, 16]),
    ];
    for tier in tiers() {
        for &(kernel, stride, padding) in &windows {
            let p = Pool2d {
                kernel,
                stride,
                padding,
            };
            for c in [1, 3, 8, 15, 16, 17, 32, 33, 48] {
                let (h, w, n) = (
                    rng.range(kernel[0] as i64 - 2, kernel[0] as i64 + 6).max(1) as usize,
                    rng.range(kernel[1] as i64 - 2, kernel[1] as i64 + 6).max(1) as usize,
                    rng.range(1, 2) as usize,
                );
                for fill in 0..3 {
                    let x: Vec<i8> = match fill {
                        0 => rng.codes(n * h * w * c),
                        1 => vec![-128; n * h * w * c],
                        _ => vec![127; n * h * w * c],
                    };
                    for max in [false, true] {
                        // A window larger than the padded input is not a valid pool.
                        let Ok(want) = pool2d(Tier::Scalar, &p, &x, [h, w, c], n, max) else {
                            assert!(
                                h + padding[0] + padding[2] < kernel[0]
                                    || w + padding[1] + padding[3] < kernel[1]
                            );
                            continue;
                        };
                        let got = pool2d(tier, &p, &x, [h, w, c], n, max).unwrap();
                        assert_eq!(
                            got, want,
                            "{tier}: {p:?} on {h}x{w}x{c} × {n}, max {max}, fill {fill}"
                        );
                    }
                }
            }
        }
    }
}

#[test]
fn global_avg_pool_matches_reference() {
    let mut rng = Rng(13);
    for tier in tiers() {
        for (h, w) in [(1, 1), (2, 3), (7, 7), (16, 16), (17, 16), (23, 29)] {
            for c in [1, 5, 16, 17, 31, 64] {
                for fill in 0..4 {
                    let len = 2 * h * w * c;
                    let x: Vec<i8> = match fill {
                        0 => rng.codes(len),
                        1 => vec![-128; len],
                        2 => vec![127; len],
                        // Sums landing on exact halves: alternate values around zero.
                        _ => (0..len).map(|i| if i % 3 == 0 { -1 } else { 1 }).collect(),
                    };
                    let want = global_avg_pool(Tier::Scalar, &x, [h, w, c], 2).unwrap();
                    let got = global_avg_pool(tier, &x, [h, w, c], 2).unwrap();
                    assert_eq!(got, want, "{tier}: {h}x{w}x{c}, fill {fill}");
                }
            }
        }
    }
}
