//! Kernel-level tests of every ISA this CPU has, against scalar definitions: the tile
//! against a wrapping scalar dot product, requantization against
//! `QuantMultiplier::requantize` over the whole range of multipliers and shifts.

use lastmile_core::quant::QuantMultiplier;

use crate::kernels::{Clamp, HiLoCorr, Isa, TileOp, Token};

/// Every ISA this CPU has, plus AVX-512 with AMX tiles where usable.
fn tokens() -> Vec<Token> {
    let mut v: Vec<Token> = [Isa::Avx2, Isa::AvxVnni, Isa::Avx512Vnni]
        .into_iter()
        .filter_map(Token::new)
        .collect();
    v.extend(Token::new(Isa::Avx512Vnni).and_then(Token::with_amx));
    v
}

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
}

fn clamps(rng: &mut Rng) -> Clamp {
    let zp = rng.range(-128, 127) as i32;
    match rng.next() % 3 {
        0 => Clamp {
            zp,
            lo: -128,
            hi: 127,
        },
        1 => Clamp {
            zp,
            lo: zp,
            hi: 127,
        },
        _ => Clamp {
            zp,
            lo: zp,
            hi: (zp + rng.range(0, 200) as i32).min(127),
        },
    }
}

fn multiplier(rng: &mut Rng, min_shift: i64) -> QuantMultiplier {
    let m = match rng.next() % 4 {
        0 => 1 << 30,
        1 => i32::MAX,
        _ => rng.range(1 << 30, i32::MAX as i64) as i32,
    };
    QuantMultiplier {
        multiplier: m,
        shift: rng.range(min_shift, 62) as u32,
    }
}

fn acc32(rng: &mut Rng) -> i32 {
    match rng.next() % 6 {
        0 => i32::MIN,
        1 => i32::MAX,
        2 => rng.range(-300, 300) as i32,
        3 => rng.range(-(1 << 20), 1 << 20) as i32,
        _ => rng.next() as i32,
    }
}

#[test]
fn requant32_is_the_spec_for_every_multiplier_and_shift() {
    let mut rng = Rng(1);
    for tok in tokens() {
        for i in 0..6000 {
            let len = 32;
            let acc: Vec<i32> = (0..len).map(|_| acc32(&mut rng)).collect();
            let corr: Vec<i32> = (0..len).map(|_| acc32(&mut rng)).collect();
            // Any shift; or all ≥ 33 (the 32-bit high-dword path), optionally with one
            // lane below (that vector must take the 64-bit path).
            let min_shift = if i % 3 == 0 { 1 } else { 33 };
            let mut ms: Vec<QuantMultiplier> =
                (0..len).map(|_| multiplier(&mut rng, min_shift)).collect();
            if i % 3 == 2 {
                let j = rng.range(0, len as i64 - 1) as usize;
                ms[j].shift = rng.range(1, 32) as u32;
            }
            let mult: Vec<i32> = ms.iter().map(|m| m.multiplier).collect();
            let shift: Vec<i32> = ms.iter().map(|m| m.shift as i32).collect();
            let q = clamps(&mut rng);
            let mut out = vec![0i8; len];
            tok.requant32(&acc, &corr, &mult, &shift, q, &mut out);
            for c in 0..len {
                let a = acc[c].wrapping_add(corr[c]) as i64;
                let want = ms[c].requantize(a, q.zp, q.lo, q.hi);
                assert_eq!(out[c], want, "{tok:?} acc {a} {:?} {q:?}", ms[c]);
            }
        }
    }
}

#[test]
fn requant64_is_the_spec_for_16w8a_accumulators() {
    let mut rng = Rng(2);
    let bound = (1i64 << 41) - 1;
    for tok in tokens() {
        for _ in 0..4000 {
            let len = 32;
            let acc: Vec<i64> = (0..len)
                .map(|_| match rng.next() % 5 {
                    0 => bound,
                    1 => -bound,
                    2 => rng.range(-1000, 1000),
                    _ => rng.range(-bound, bound),
                })
                .collect();
            let ms: Vec<QuantMultiplier> = (0..len).map(|_| multiplier(&mut rng, 22)).collect();
            let mult: Vec<i32> = ms.iter().map(|m| m.multiplier).collect();
            let shift: Vec<i32> = ms.iter().map(|m| m.shift as i32).collect();
            let q = clamps(&mut rng);
            let mut out = vec![0i8; len];
            tok.requant64(&acc, &mult, &shift, q, &mut out);
            for c in 0..len {
                let want = ms[c].requantize(acc[c], q.zp, q.lo, q.hi);
                assert_eq!(out[c], want, "{tok:?} acc {} {:?} {q:?}", acc[c], ms[c]);
            }
        }
    }
}

#[test]
fn requant_hilo_combines_and_requantizes_exactly() {
    let mut rng = Rng(4);
    let bound = 65_536i64 * 255 * 128; // |Σ (x−zp)·hi|, |Σ (x−zp)·lo'| ≤ this
    for tok in tokens() {
        for _ in 0..3000 {
            let len = tok.lanes() * 2;
            let mut hi = vec![0i32; len];
            let mut lo = vec![0i32; len];
            let mut c_hi = vec![0i32; len];
            let mut c_lo = vec![0i32; len];
            let mut want_parts = vec![(0i64, 0i64); len];
            for c in 0..len {
                // True values within the bound; raw sums and corrections wrap arbitrarily.
                let (th, tl) = match rng.next() % 4 {
                    0 => (bound, -bound),
                    1 => (-bound, bound),
                    _ => (rng.range(-bound, bound), rng.range(-bound, bound)),
                };
                c_hi[c] = rng.next() as i32;
                c_lo[c] = rng.next() as i32;
                hi[c] = (th as i32).wrapping_sub(c_hi[c]);
                lo[c] = (tl as i32).wrapping_sub(c_lo[c]);
                want_parts[c] = (th, tl);
            }
            let c64: Vec<i64> = (0..len).map(|_| rng.range(-(1 << 38), 1 << 38)).collect();
            let row = rng.range(0, 128 * 255 * 65_536);
            let ms: Vec<QuantMultiplier> = (0..len).map(|_| multiplier(&mut rng, 22)).collect();
            let mult: Vec<i32> = ms.iter().map(|m| m.multiplier).collect();
            let shift: Vec<i32> = ms.iter().map(|m| m.shift as i32).collect();
            let q = clamps(&mut rng);
            let mut out = vec![0i8; len];
            let mut t = hi.clone();
            t.extend_from_slice(&lo);
            let c64_32: Vec<i32> = c64.iter().map(|&v| v as i32).collect();
            let corr = HiLoCorr {
                c_hi: &c_hi,
                c_lo: &c_lo,
                c64: &c64,
                c64_32: &c64_32,
                h_limit: -1, // the i64 path on every vector
            };
            tok.requant_hilo_rows(&t, corr, &[row], &mult, &shift, q, &mut out, len);
            for c in 0..len {
                let acc = 256 * want_parts[c].0 + want_parts[c].1 + c64[c] + row;
                let want = ms[c].requantize(acc, q.zp, q.lo, q.hi);
                assert_eq!(out[c], want, "{tok:?} acc {acc} {:?}", ms[c]);
            }
        }
    }
}

/// The tile epilogue (rows, hoisted constants, strided output, the per-vector `i32` fast
/// path) is the spec: with full-range values and no fast path, and with values whose
/// `|H'|` straddles a limit the fast path relies on.
#[test]
fn requant_hilo_rows_is_the_spec() {
    let mut rng = Rng(41);
    let wide = 65_536i64 * 255 * 128; // |H'|, |L'| bound of the tile
    for tok in tokens() {
        for case in 0..40 {
            let rows = 1 + case % 16.min(tok.mr_for(4, 16));
            let len = tok.lanes() * 2;
            // Fast-path case: |L'| + |E| ≤ 2^21, so any h_limit ≤ (2^31 − 1 − 2^21)/256 is
            // sound; |H'| drawn from ±2·h_limit so some vectors fit and some do not.
            let fast = case % 2 == 1;
            let h_limit: i32 = if fast { 1 << 22 } else { -1 };
            let (h_bound, l_bound, e_bound) = if fast {
                (2 * h_limit as i64, 1 << 20, 1 << 20)
            } else {
                (wide, wide, 1 << 38)
            };
            let per_channel =
                |rng: &mut Rng| -> Vec<i32> { (0..len).map(|_| rng.next() as i32).collect() };
            let (c_hi, c_lo) = (per_channel(&mut rng), per_channel(&mut rng));
            let mut t = vec![0i32; rows * 2 * len];
            for r in 0..rows {
                // Raw sums wrap; the true H', L' are bounded (as in the combination test).
                let spread = rng.next() % 3; // 0: all small, 1: mixed, 2: all large
                for c in 0..len {
                    let th = match spread {
                        0 => rng.range(-(h_limit.max(0) as i64), h_limit.max(0) as i64),
                        1 => rng.range(-h_bound, h_bound),
                        _ => {
                            let v = rng
                                .range(h_limit.max(0) as i64 + 1, h_bound.max(h_limit as i64 + 1));
                            if rng.next().is_multiple_of(2) { v } else { -v }
                        }
                    };
                    let tl = rng.range(-l_bound, l_bound);
                    t[r * 2 * len + c] = (th as i32).wrapping_sub(c_hi[c]);
                    t[r * 2 * len + len + c] = (tl as i32).wrapping_sub(c_lo[c]);
                }
            }
            // E = c64 + row, |E| ≤ e_bound.
            let c64: Vec<i64> = (0..len)
                .map(|_| rng.range(-e_bound / 2, e_bound / 2))
                .collect();
            let row_terms: Vec<i64> = (0..rows)
                .map(|_| rng.range(-e_bound / 2, e_bound / 2))
                .collect();
            let c64_32: Vec<i32> = c64.iter().map(|&v| v as i32).collect();
            let ms: Vec<QuantMultiplier> = (0..len).map(|_| multiplier(&mut rng, 22)).collect();
            let mult: Vec<i32> = ms.iter().map(|m| m.multiplier).collect();
            let shift: Vec<i32> = ms.iter().map(|m| m.shift as i32).collect();
            let q = clamps(&mut rng);
            let stride = len + 5;
            let mut out = vec![0i8; rows * stride];
            let corr = HiLoCorr {
                c_hi: &c_hi,
                c_lo: &c_lo,
                c64: &c64,
                c64_32: &c64_32,
                h_limit,
            };
            tok.requant_hilo_rows(&t, corr, &row_terms, &mult, &shift, q, &mut out, stride);
            for (r, &row) in row_terms.iter().enumerate() {
                for c in 0..len {
                    let th = t[r * 2 * len + c].wrapping_add(c_hi[c]) as i64;
                    let tl = t[r * 2 * len + len + c].wrapping_add(c_lo[c]) as i64;
                    let acc = 256 * th + tl + c64[c] + row;
                    let want = ms[c].requantize(acc, q.zp, q.lo, q.hi);
                    let got = out[r * stride + c];
                    assert_eq!(got, want, "{tok:?} case {case} row {r} ch {c} acc {acc}");
                }
            }
        }
    }
}

/// The `i32` fast path of the tile epilogue at its exact edge: with `|L'| + |E|` at the
/// guaranteed maximum, `|H'| = h_limit` gives `acc = ±(2^31 − 1)` (fast path, exact) and
/// `|H'| = h_limit + 1` would overflow `i32` (must take the `i64` path).
#[test]
fn requant_hilo_fast_path_edge() {
    let h_limit = 1i32 << 22;
    let rest = i32::MAX as i64 - 256 * h_limit as i64; // 2^30 − 1
    let (tl, e) = (1i64 << 29, rest - (1 << 29));
    for tok in tokens() {
        let len = tok.lanes() * 2;
        let rows = 4;
        let mut t = vec![0i32; rows * 2 * len];
        let signs = [1i64, 1, -1, -1];
        for r in 0..rows {
            let th = signs[r] * (h_limit as i64 + (r % 2) as i64);
            for c in 0..len {
                t[r * 2 * len + c] = th as i32;
                t[r * 2 * len + len + c] = (signs[r] * tl) as i32;
            }
        }
        let zeros = vec![0i32; len];
        let c64 = vec![0i64; len];
        let c64_32 = vec![0i32; len];
        let row_terms: Vec<i64> = signs.iter().map(|s| s * e).collect();
        // ×2^-25 (M = 2^30, n = 55): ±2^31 lands on ±64, inside the clamp.
        let mult = vec![1i32 << 30; len];
        let shift = vec![55i32; len];
        let q = Clamp {
            zp: 0,
            lo: -128,
            hi: 127,
        };
        let stride = len;
        let mut out = vec![0i8; rows * stride];
        let corr = HiLoCorr {
            c_hi: &zeros,
            c_lo: &zeros,
            c64: &c64,
            c64_32: &c64_32,
            h_limit,
        };
        tok.requant_hilo_rows(&t, corr, &row_terms, &mult, &shift, q, &mut out, stride);
        let m = QuantMultiplier {
            multiplier: 1 << 30,
            shift: 55,
        };
        for r in 0..rows {
            let th = signs[r] * (h_limit as i64 + (r % 2) as i64);
            let acc = 256 * th + signs[r] * tl + row_terms[r];
            let want = m.requantize(acc, 0, -128, 127);
            for c in 0..len {
                assert_eq!(out[r * stride + c], want, "{tok:?} row {r} acc {acc}");
            }
        }
    }
}

#[test]
fn requant_ties_round_half_up() {
    // acc·M/2^n exactly k + ½ for both signs: the spec rounds toward +∞.
    let m = QuantMultiplier {
        multiplier: 1 << 30,
        shift: 31,
    }; // ×0.5
    let q = Clamp {
        zp: 0,
        lo: -128,
        hi: 127,
    };
    for tok in tokens() {
        let n = tok.lanes() * 2;
        let acc: Vec<i32> = (0..n as i32).map(|i| 2 * i - n as i32 + 1).collect(); // odd ⇒ .5
        let mut out = vec![0i8; n];
        let mult = vec![m.multiplier; n];
        let shift = vec![m.shift as i32; n];
        tok.requant32(&acc, &vec![0; n], &mult, &shift, q, &mut out);
        for (a, o) in acc.iter().zip(&out) {
            assert_eq!(*o as i32, (a + 1).div_euclid(2), "{tok:?} {a}");
        }
        // ×2^-3 through the n ≥ 33 path: acc = 8j + 4 is a tie.
        let acc8: Vec<i32> = acc.iter().map(|&a| 4 * a).collect();
        tok.requant32(&acc8, &vec![0; n], &mult, &vec![33; n], q, &mut out);
        for (a, o) in acc8.iter().zip(&out) {
            assert_eq!(*o as i32, (a + 4).div_euclid(8), "{tok:?} n=33 {a}");
        }
        let acc64: Vec<i64> = acc.iter().map(|&a| a as i64 * (1 << 20)).collect();
        let shift64 = vec![51; n]; // ×2^-21 ⇒ a·2^20/2^21 = a/2
        tok.requant64(&acc64, &mult, &shift64, q, &mut out);
        for (a, o) in acc.iter().zip(&out) {
            assert_eq!(*o as i32, (a + 1).div_euclid(2), "{tok:?} wide {a}");
        }
    }
}

fn ops(tok: Token) -> Vec<TileOp> {
    match tok.isa() {
        Isa::Avx2 => vec![TileOp::MaddI16],
        _ => vec![TileOp::ActU8],
    }
}

/// The scalar meaning of one dword-group product of a tile.
fn group_dot(op: TileOp, a: &[u8], w: &[u8]) -> i32 {
    match op {
        TileOp::ActU8 => (0..4).map(|j| a[j] as i32 * w[j] as i8 as i32).sum(),
        TileOp::MaddI16 => (0..2)
            .map(|j| {
                let x = i16::from_ne_bytes([a[2 * j], a[2 * j + 1]]) as i32;
                let y = i16::from_ne_bytes([w[2 * j], w[2 * j + 1]]) as i32;
                x * y
            })
            .sum(),
    }
}

#[test]
fn tiles_match_a_scalar_dot_product_for_every_shape() {
    let mut rng = Rng(3);
    for tok in tokens() {
        let lanes = tok.lanes();
        for op in ops(tok) {
            for kg in [1usize, 2, 3, 4, 7, 8, 9, 16, 33, 48] {
                for nb in 1..=4 {
                    for rows in 1..=tok.mr_for(nb, kg) {
                        let a_stride = kg * 4 + 4 * (rng.next() % 3) as usize;
                        let panel_stride = kg * lanes * 4;
                        let mut a: Vec<u8> =
                            (0..rows * a_stride).map(|_| rng.next() as u8).collect();
                        let mut w: Vec<u8> =
                            (0..nb * panel_stride).map(|_| rng.next() as u8).collect();
                        if op == TileOp::MaddI16 {
                            // i16 operands are never −32768 (weights and centered codes).
                            for v in a.chunks_exact_mut(2).chain(w.chunks_exact_mut(2)) {
                                if v == [0x00, 0x80] {
                                    v[1] = 0x7f;
                                }
                            }
                        }
                        let nr = nb * lanes;
                        let mut out = vec![0i32; rows * nr];
                        tok.tile(op, &a, a_stride, rows, kg, &w, panel_stride, nb, &mut out);
                        for i in 0..rows {
                            for c in 0..nr {
                                let (p, l) = (c / lanes, c % lanes);
                                let mut want = 0i32;
                                for g in 0..kg {
                                    let ao = i * a_stride + 4 * g;
                                    let wo = p * panel_stride + (g * lanes + l) * 4;
                                    want = want.wrapping_add(group_dot(
                                        op,
                                        &a[ao..ao + 4],
                                        &w[wo..wo + 4],
                                    ));
                                }
                                assert_eq!(
                                    out[i * nr + c],
                                    want,
                                    "{tok:?} {op:?} kg {kg} row {i} ch {c}"
                                );
                            }
                        }
                    }
                }
            }
        }
    }
}

/// Rows made of segments read in place (the direct convolution's layout): segment `s` of
/// row `i` at `i·a_stride + segs[s]`, weights' groups segment after segment.
#[test]
fn segmented_tiles_match_a_scalar_dot_product() {
    use crate::kernels::TileArgs;
    let mut rng = Rng(31);
    for tok in tokens() {
        let lanes = tok.lanes();
        let op = ops(tok)[0];
        for kg in [3usize, 16, 32] {
            for nseg in 1..=3 {
                for nb in [1, 3, 4] {
                    let rows = tok.mr_for(nb, kg);
                    let a_stride = 4 * (1 + rng.next() % 9) as usize;
                    let seg_gap = kg * 4 + 4 * (rng.next() % 5) as usize;
                    let segs: Vec<usize> =
                        (0..nseg).map(|s| s * (seg_gap + rows * a_stride)).collect();
                    let a_len = segs[nseg - 1] + (rows - 1) * a_stride + kg * 4;
                    let a: Vec<u8> = (0..a_len).map(|_| rng.next() as u8).collect();
                    let panel_stride = nseg * kg * lanes * 4;
                    let w: Vec<u8> = (0..nb * panel_stride).map(|_| rng.next() as u8).collect();
                    let nr = nb * lanes;
                    let mut out = vec![0i32; rows * nr];
                    let t = TileArgs {
                        a_stride,
                        segs: &segs,
                        kg,
                        panel_stride,
                        nb,
                        prefetch: rng.next().is_multiple_of(2),
                    };
                    tok.tile_segments(op, &a, rows, &w, t, &mut out);
                    for i in 0..rows {
                        for c in 0..nr {
                            let (p, l) = (c / lanes, c % lanes);
                            let mut want = 0i32;
                            for (s, &seg) in segs.iter().enumerate() {
                                for g in 0..kg {
                                    let ao = i * a_stride + seg + 4 * g;
                                    let wo = p * panel_stride + ((s * kg + g) * lanes + l) * 4;
                                    let d = group_dot(op, &a[ao..ao + 4], &w[wo..wo + 4]);
                                    want = want.wrapping_add(d);
                                }
                            }
                            assert_eq!(
                                out[i * nr + c],
                                want,
                                "{tok:?} kg {kg} nseg {nseg} row {i} ch {c}"
                            );
                        }
                    }
                }
            }
        }
    }
}

#[test]
#[should_panic(expected = "activations too short")]
fn tile_rejects_short_slices_instead_of_reading_past_them() {
    let Some(tok) = tokens().into_iter().next() else {
        panic!("activations too short (no SIMD tier on this CPU)");
    };
    let op = ops(tok)[0];
    let lanes = tok.lanes();
    let mut out = vec![0; 2 * lanes];
    tok.tile(
        op,
        &[0u8; 7],
        8,
        1,
        2,
        &vec![0u8; 2 * lanes * 4],
        2 * lanes * 4,
        1,
        &mut out,
    );
}

#[test]
fn add_matches_the_reference_for_every_input_pair() {
    use crate::kernels::AddConsts;
    use lastmile_backend_cpu_ref::kernels::{AddQuant, add};
    let mut rng = Rng(5);
    // Every (a, b) pair of codes, in an order that puts all of them in vector lanes.
    let a: Vec<i8> = (0..65536).map(|i| (i & 255) as u8 as i8).collect();
    let b: Vec<i8> = (0..65536).map(|i| (i >> 8) as u8 as i8).collect();
    for tok in tokens() {
        for case in 0..20 {
            // Scales over 8 decades, as the plan derives them (see `lastmile_core::plan`);
            // the first cases are powers of two, where rounding ties are frequent.
            let mut scale = || 10f64.powf(rng.range(-4000, 4000) as f64 / 1000.0) as f32;
            let (s_a, s_b, s_o) = match case {
                0 => (0.5, 0.5, 1.0),
                1 => (0.25, 0.25, 0.25),
                2 => (0.125, 0.25, 1.0),
                3 => (1.0, 1.0, 0.125),
                4 => (0.5, 0.25, 2f32.powi(-10)),
                _ if case % 3 == 0 => (scale(), scale(), 1e-4),
                _ => (scale(), scale(), scale()),
            };
            let t = 2.0 * (s_a as f64).max(s_b as f64);
            let (Ok(m_a), Ok(m_b), Ok(m_o)) = (
                QuantMultiplier::from_real(s_a as f64 / t),
                QuantMultiplier::from_real(s_b as f64 / t),
                QuantMultiplier::from_real(t / ((1u64 << 20) as f64 * s_o as f64)),
            ) else {
                continue;
            };
            let q = clamps(&mut rng);
            let (zp_a, zp_b) = (rng.range(-128, 127) as i32, rng.range(-128, 127) as i32);
            let mut want = vec![0i8; 65536 - 5];
            add(
                AddQuant {
                    mult_a: m_a,
                    mult_b: m_b,
                    mult_out: m_o,
                    zp_a,
                    zp_b,
                    zp_out: q.zp,
                    lo: q.lo,
                    hi: q.hi,
                },
                &a,
                &b,
                &mut want,
            );
            let mut got = vec![0i8; 65536 - 5]; // a ragged tail goes through the reference
            let consts = AddConsts {
                zp_a,
                zp_b,
                m_a: (m_a.multiplier, m_a.shift),
                m_b: (m_b.multiplier, m_b.shift),
                m_o: (m_o.multiplier, m_o.shift),
                zp_o: q.zp,
                lo: q.lo,
                hi: q.hi,
            };
            tok.add(&a, &b, consts, &mut got);
            assert_eq!(got, want, "{tok:?} case {case}: s = {s_a} {s_b} {s_o}");
        }
    }
}

#[test]
fn packing_puts_every_weight_where_the_tile_reads_it() {
    use crate::pack::{PackedWeights, Scheme};
    use lastmile_backend_cpu_ref::kernels::Weights;
    use lastmile_core::quant::WeightBits;
    let mut rng = Rng(6);
    for tok in tokens() {
        for bits in [WeightBits::W8, WeightBits::W16] {
            for (n, k) in [
                (1usize, 1usize),
                (7, 5),
                (16, 4),
                (17, 9),
                (33, 64),
                (64, 13),
                (100, 30),
            ] {
                for few_rows in [false, true] {
                    let codes: Vec<i16> = (0..n * k)
                        .map(|_| rng.range(-(bits.qmax() as i64), bits.qmax() as i64) as i16)
                        .collect();
                    let w8: Vec<i8> = codes.iter().map(|&c| c as i8).collect();
                    let mut p = PackedWeights::new(tok, bits, n, k, few_rows);
                    // Pack twice: re-packing must overwrite, not accumulate.
                    for _ in 0..2 {
                        match bits {
                            WeightBits::W8 => p.pack(Weights::I8(&w8)),
                            WeightBits::W16 => p.pack(Weights::I16(&codes)),
                        }
                    }
                    let bytes = p.main.as_slice();
                    let g_elems = tok.group();
                    for ch in 0..p.n_pad {
                        for g in 0..p.kg {
                            let o = p.offset(ch, g);
                            let d = &bytes[o..o + 4];
                            for j in 0..g_elems {
                                let kk = g * g_elems + j;
                                let w = if ch < n && kk < k {
                                    codes[ch * k + kk] as i32
                                } else {
                                    0
                                };
                                let real = ch < n && kk < k;
                                match p.scheme {
                                    Scheme::Vnni8 => assert_eq!(d[j] as i8 as i32, w),
                                    Scheme::Vnni16 => {
                                        let lo = bytes[o + p.lo_delta() + j] as i8 as i32;
                                        let hi = d[j] as i8 as i32;
                                        if real {
                                            assert_eq!(256 * hi + lo + 128, w, "ch {ch} k {kk}");
                                        } else {
                                            assert_eq!((hi, lo), (0, 0), "padding ch {ch} k {kk}");
                                        }
                                    }
                                    Scheme::Madd8 | Scheme::Madd16 => {
                                        let v = i16::from_ne_bytes([d[2 * j], d[2 * j + 1]]);
                                        assert_eq!(v as i32, w);
                                    }
                                }
                            }
                        }
                    }
                    for ch in 0..n {
                        let row = &codes[ch * k..(ch + 1) * k];
                        match p.scheme {
                            Scheme::Vnni8 => {
                                assert_eq!(
                                    p.sum_main[ch],
                                    row.iter().map(|&v| v as i64).sum::<i64>()
                                )
                            }
                            Scheme::Vnni16 => {
                                let hi: i64 = row.iter().map(|&v| (v >> 8) as i64).sum();
                                let lo: i64 = row.iter().map(|&v| ((v & 0xff) - 128) as i64).sum();
                                let abs: i64 = row.iter().map(|&v| (v as i64).abs()).sum();
                                assert_eq!((p.sum_main[ch], p.sum_lo[ch]), (hi, lo));
                                assert_eq!(p.sum_abs[ch], abs);
                            }
                            _ => {}
                        }
                    }
                }
            }
        }
    }
}

#[test]
fn depthwise_matches_the_reference_on_every_path() {
    use lastmile_backend_cpu_ref::kernels::{DotQuant, Weights, conv2d};
    use lastmile_core::graph::{Conv2d, ParamId};
    use lastmile_core::quant::Activation;

    use crate::depthwise::{DwLayer, DwScratch};
    use crate::gather::ConvGeom;

    let mut rng = Rng(21);
    let (mut fused_seen, mut i64_seen) = ([0usize; 2], 0);
    for tok in tokens() {
        for case in 0..600 {
            let c = [1usize, 5, 8, 13, 16, 24, 32, 40, 48, 64, 72][rng.range(0, 10) as usize];
            let (kh, kw) = [
                (3usize, 3usize),
                (3, 3),
                (3, 3),
                (1, 3),
                (5, 3),
                (3, 5),
                (2, 3),
            ][rng.range(0, 6) as usize];
            let stride = [rng.range(1, 3) as usize, rng.range(1, 3) as usize];
            let dilation = if case % 5 == 0 {
                [2, rng.range(1, 2) as usize]
            } else {
                [1, 1]
            };
            let padding: [usize; 4] = core::array::from_fn(|_| rng.range(0, 2) as usize);
            let (h, w) = (rng.range(1, 6) as usize, rng.range(1, 21) as usize);
            let span = |k: usize, d: usize| d * (k - 1) + 1;
            let (hp, wp) = (h + padding[0] + padding[2], w + padding[1] + padding[3]);
            if hp < span(kh, dilation[0]) || wp < span(kw, dilation[1]) {
                continue;
            }
            let ho = (hp - span(kh, dilation[0])) / stride[0] + 1;
            let wo = (wp - span(kw, dilation[1])) / stride[1] + 1;
            let wide = case % 2 == 1;
            let extreme = case % 7 == 0;
            let qmax: i64 = if wide { 32767 } else { 127 };
            let taps = kh * kw;
            let codes: Vec<i64> = (0..c * taps)
                .map(|i| match (extreme, (i / taps) % 2) {
                    (true, 0) => qmax,
                    (true, _) => -qmax,
                    _ => rng.range(-qmax, qmax),
                })
                .collect();
            let (w8, w16): (Vec<i8>, Vec<i16>) = (
                codes.iter().map(|&v| v as i8).collect(),
                codes.iter().map(|&v| v as i16).collect(),
            );
            let weights = if wide {
                Weights::I16(&w16)
            } else {
                Weights::I8(&w8)
            };
            let zp_in = if extreme {
                -128
            } else {
                rng.range(-128, 127) as i32
            };
            let n = rng.range(1, 2) as usize;
            let x: Vec<i8> = (0..n * h * w * c)
                .map(|_| {
                    if extreme {
                        127
                    } else {
                        rng.range(-128, 127) as i8
                    }
                })
                .collect();
            // Scales that spread typical accumulators over the output range: every shift
            // ≥ 33 (8-bit weights: requantized in registers), or one channel below (the
            // 64-bit path for its vector; for 16-bit weights one below 22: scalar).
            let typical = (taps as f64).sqrt() * 100.0 * qmax as f64 / 2.0;
            let n_typ = (30.5 + (typical / 64.0).log2()).round() as i64;
            let mut ms: Vec<QuantMultiplier> = (0..c)
                .map(|_| QuantMultiplier {
                    shift: rng.range(n_typ - 1, n_typ + 1).clamp(33, 62) as u32,
                    ..multiplier(&mut rng, 1)
                })
                .collect();
            if case % 4 >= 2 {
                ms[0].shift = if wide && case % 8 >= 6 { 21 } else { 32 };
            }
            let bmax = if wide && case % 6 == 1 {
                i32::MAX as i64
            } else {
                typical as i64
            };
            let mut bias: Vec<i32> = (0..c).map(|_| rng.range(-bmax, bmax) as i32).collect();
            if bmax == i32::MAX as i64 {
                bias[0] = -i32::MAX; // too large for the narrow 16w8a path
            }
            let q = clamps(&mut rng);
            let geom = ConvGeom {
                h,
                w,
                c_in: c,
                kh,
                kw,
                stride,
                dilation,
                pad: [padding[0], padding[1]],
                ho,
                wo,
            };
            let mut layer = DwLayer::new(geom.clone(), zp_in, wide, &ms, q);
            layer.pack(weights);
            layer.set_bias(Some(&bias));
            fused_seen[usize::from(layer.is_fused())] += 1;
            i64_seen += usize::from(layer.is_i64());
            let threads = 1 + case % 3;
            let mut scratch: Vec<DwScratch> = (0..threads).map(|_| DwScratch::default()).collect();
            let mut y = vec![0i8; n * ho * wo * c];
            let workers = crate::workers::Workers::new(threads).expect("worker threads");
            layer.run(tok, &x, n, &mut y, &mut scratch, &workers);
            let attrs = Conv2d {
                weight: ParamId(0),
                bias: Some(ParamId(1)),
                stride,
                padding,
                dilation,
                groups: c,
                activation: Activation::None,
            };
            let dq = DotQuant {
                multipliers: &ms,
                zp_in,
                zp_out: q.zp,
                lo: q.lo,
                hi: q.hi,
            };
            let mut want = vec![0i8; y.len()];
            let (ins, outs) = ([h, w, c], [ho, wo, c]);
            conv2d(
                &attrs,
                dq,
                &x,
                &ins,
                weights,
                &[c, kh, kw, 1],
                Some(&bias),
                &outs,
                n,
                &mut want,
            );
            assert_eq!(
                y, want,
                "{tok:?} case {case}: {geom:?} wide {wide} n {n} zp {zp_in}"
            );
        }
    }
    assert!(
        fused_seen[0] > 0 && fused_seen[1] > 0 && i64_seen > 0,
        "{fused_seen:?} {i64_seen}"
    );
}
