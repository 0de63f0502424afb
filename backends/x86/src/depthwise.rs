//! Depthwise convolution (`groups = C_in = C_out`), per output row run by run (columns with
//! the same valid taps): 3-wide runs through the register-blocked `Token::depthwise3`, the
//! rest (image borders, other kernel widths) through `Token::depthwise`.

use lastmile_backend_cpu_ref::kernels::Weights;

use crate::gather::ConvGeom;
use crate::gemm::Requant;
use crate::workers::Workers;
use lastmile_core::quant::QuantMultiplier;

use crate::kernels::{Clamp, Dw3Dst, Dw3Rows, Token};

/// Taps per kernel call for 16-bit weights: `256·255·32767 < 2^31`.
const WIDE_TAP_CHUNK: usize = 256;

/// A depthwise layer: weights packed tap-major as `i32` (`[tap][c_pad]`).
#[derive(Clone, Debug)]
pub(crate) struct DwLayer {
    pub geom: ConvGeom,
    pub zp_in: i32,
    /// 16-bit weights (partial sums over at most [`WIDE_TAP_CHUNK`] taps).
    pub wide: bool,
    pub c_pad: usize,
    pub w: Vec<i32>,
    /// Per kernel row `ky`: `Σ_kx w[ky][kx][ch]` (signed), `[kh][c_pad]`.
    pub wsum: Vec<i32>,
    /// Bias per channel (padding 0).
    pub bias32: Vec<i32>,
    pub requant: Requant,
    /// Runs of output columns with the same valid kernel columns: `(ox, end, lo, hi)`.
    runs: Vec<(usize, usize, usize, usize)>,
    /// Every shift ≥ 33.
    shifts_hi: bool,
    /// 8-bit weights, or 16-bit ones whose every accumulator fits `i32` (see
    /// [`DwLayer::set_bias`]): the `i32` path (exact: the true value fits).
    narrow: bool,
}

/// Per-thread scratch.
#[derive(Debug, Default)]
pub(crate) struct DwScratch {
    rows: Vec<(usize, usize)>,
    x_rel: Vec<usize>,
    w_off: Vec<usize>,
    sum_off: Vec<usize>,
    acc: Vec<i32>,
    acc64: Vec<i64>,
    out: Vec<i8>,
}

impl DwLayer {
    /// An unpacked layer (call [`DwLayer::pack`] and [`DwLayer::set_bias`]).
    pub(crate) fn new(
        geom: ConvGeom,
        zp_in: i32,
        wide: bool,
        multipliers: &[QuantMultiplier],
        clamp: Clamp,
    ) -> Self {
        let c_pad = geom.c_in.div_ceil(16) * 16;
        let mut runs = Vec::new();
        let mut ox = 0;
        while ox < geom.wo {
            let r = geom.kx_range(ox);
            let mut end = ox + 1;
            while end < geom.wo && geom.kx_range(end) == r {
                end += 1;
            }
            runs.push((ox, end, r.0, r.1));
            ox = end;
        }
        DwLayer {
            shifts_hi: multipliers.iter().all(|m| m.shift >= 33),
            narrow: !wide,
            requant: Requant::new(multipliers, c_pad, clamp),
            geom,
            zp_in,
            wide,
            c_pad,
            w: Vec::new(),
            wsum: Vec::new(),
            bias32: Vec::new(),
            runs,
        }
    }

    /// 3-wide runs requantize in registers.
    #[cfg(test)]
    pub(crate) fn is_fused(&self) -> bool {
        self.fused()
    }

    /// 16-bit weights with `i64` accumulators.
    #[cfg(test)]
    pub(crate) fn is_i64(&self) -> bool {
        !self.narrow
    }

    /// 3-wide runs requantize in registers (the `i32` path with every shift ≥ 33).
    fn fused(&self) -> bool {
        self.narrow && self.shifts_hi
    }

    /// Packs `w` (`[C, KH, KW, 1]`) tap-major, each code in the low 16 bits of its lane
    /// (high 16 zero: the kernels multiply with `vpmaddwd`/`vpdpwssd`, see `kernels::dw`),
    /// and the per-row weight sums.
    pub(crate) fn pack(&mut self, w: Weights<'_>) {
        let (kh, kw) = (self.geom.kh, self.geom.kw);
        let taps = kh * kw;
        let c = self.geom.c_in;
        let c_pad = self.c_pad;
        self.w.clear();
        self.w.resize(taps * c_pad, 0);
        self.wsum.clear();
        self.wsum.resize(kh * c_pad, 0);
        for ch in 0..c {
            for t in 0..taps {
                let code = match w {
                    Weights::I8(w) => w[ch * taps + t] as i16,
                    Weights::I16(w) => w[ch * taps + t],
                };
                self.w[t * c_pad + ch] = code as u16 as i32;
                self.wsum[t / kw * c_pad + ch] += code as i32;
            }
        }
    }

    /// Sets the bias (`None` = zero), and for 16-bit weights whether every accumulator
    /// fits `i32`: `|bias| + taps·255·32767 ≤ 2^31 − 1` (3×3: any bias up to ~2.07e9).
    pub(crate) fn set_bias(&mut self, bias: Option<&[i32]>) {
        self.bias32.clear();
        self.bias32.resize(self.c_pad, 0);
        if let Some(b) = bias {
            self.bias32[..b.len()].copy_from_slice(b);
        }
        if self.wide {
            let taps = (self.geom.kh * self.geom.kw) as i64;
            let max_bias = self.bias32.iter().map(|&b| (b as i64).abs()).max();
            self.narrow = max_bias.unwrap_or(0) + taps * 255 * 32_767 <= i32::MAX as i64;
        }
    }

    /// Runs `n` samples; `y` is `[n, ho, wo, c]`. Threads take disjoint output rows.
    pub(crate) fn run(
        &self,
        tok: Token,
        x: &[i8],
        n: usize,
        y: &mut [i8],
        scratch: &mut [DwScratch],
        workers: &Workers,
    ) {
        let g = &self.geom;
        let row_len = g.wo * g.c_in;
        let rows = n * g.ho;
        assert_eq!(y.len(), rows * row_len);
        let threads = scratch.len().max(1).min(rows.max(1));
        if threads <= 1 {
            self.run_rows(tok, x, 0, y, &mut scratch[0]);
            return;
        }
        let per = rows.div_ceil(threads);
        workers.scope(|s| {
            for ((i, ys), sc) in y
                .chunks_mut(per * row_len)
                .enumerate()
                .zip(scratch.iter_mut())
            {
                s.spawn(move |_| self.run_rows(tok, x, i * per, ys, sc));
            }
        });
    }

    /// The register-blocked 3-wide kernel (`Token::depthwise3`) applies to runs whose
    /// three kernel columns are all valid: `kw = 3`, column dilation 1, column stride 1
    /// or 2, and (16-bit weights) at most [`WIDE_TAP_CHUNK`] taps in all.
    fn fast3(&self) -> bool {
        let g = &self.geom;
        g.kw == 3
            && g.dilation[1] == 1
            && (g.stride[1] == 1 || g.stride[1] == 2)
            && (!self.wide || g.kh * g.kw <= WIDE_TAP_CHUNK)
    }

    /// Output rows `r0 ..` (`(sample, oy)` in order) into `y`, run by run: 3-wide runs
    /// through `Token::depthwise3` (requantized in registers when fused), the others
    /// (image borders, other kernels) through `Token::depthwise`.
    fn run_rows(&self, tok: Token, x: &[i8], r0: usize, y: &mut [i8], sc: &mut DwScratch) {
        let g = &self.geom;
        let c = g.c_in;
        let c_pad = self.c_pad;
        let rq = &self.requant;
        let fast3 = self.fast3();
        // `wide`: `i64` accumulators (bias + chunks of ≤ WIDE_TAP_CHUNK taps).
        let (wide, fused) = (!self.narrow, self.fused());
        sc.out.resize(c_pad, 0);
        sc.acc.resize(g.wo * c_pad, 0);
        for (i, yrow) in y.chunks_exact_mut(g.wo * c).enumerate() {
            let (s, oy) = ((r0 + i) / g.ho, (r0 + i) % g.ho);
            sc.rows.clear();
            sc.rows
                .extend((0..g.kh).filter_map(|ky| g.iy(oy, ky).map(|iy| (ky, iy))));
            for &(ox, end, lo, hi) in &self.runs {
                let pixels = end - ox;
                // Window origin: input column of tap `lo` (valid, so ≥ 0) in row 0 of sample s.
                let (base0, step) = if lo < hi {
                    (
                        (s * g.h * g.w + ox * g.stride[1] + lo * g.dilation[1] - g.pad[1]) * c,
                        g.stride[1] * c,
                    )
                } else {
                    (0, 0)
                };
                let acc = &mut sc.acc[..pixels * c_pad];
                if wide {
                    sc.acc64.clear();
                    for _ in 0..pixels {
                        sc.acc64.extend(self.bias32.iter().map(|&b| b as i64));
                    }
                }
                sc.x_rel.clear();
                sc.w_off.clear();
                sc.sum_off.clear();
                if fast3 && (lo, hi) == (0, 3) {
                    for &(ky, iy) in &sc.rows {
                        sc.x_rel.push(iy * g.w * c);
                        sc.w_off.push(ky * 3 * c_pad);
                        sc.sum_off.push(ky * c_pad);
                    }
                    let rows = Dw3Rows {
                        x: &sc.x_rel,
                        w: &sc.w_off,
                        sum: &sc.sum_off,
                    };
                    let (w, wsum, zp) = (&self.w, &self.wsum, self.zp_in);
                    if fused {
                        let dst = Dw3Dst::Codes {
                            y: &mut yrow[ox * c..end * c],
                            bias: &self.bias32,
                            mult: &rq.mult,
                            shift: &rq.shift,
                            q: rq.clamp,
                        };
                        tok.depthwise3(x, base0, g.stride[1], pixels, rows, w, wsum, c, zp, dst);
                        continue;
                    }
                    let dst = Dw3Dst::Acc(acc);
                    tok.depthwise3(x, base0, g.stride[1], pixels, rows, w, wsum, c, zp, dst);
                    if wide {
                        for (a, &s) in sc.acc64.iter_mut().zip(sc.acc.iter()) {
                            *a += s as i64;
                        }
                    }
                } else {
                    for &(ky, iy) in &sc.rows {
                        for kx in lo..hi {
                            sc.x_rel.push((iy * g.w + (kx - lo) * g.dilation[1]) * c);
                            sc.w_off.push((ky * g.kw + kx) * c_pad);
                        }
                    }
                    if sc.x_rel.is_empty() {
                        // No valid tap (possible with large padding): the sum is 0.
                        acc.fill(0);
                    }
                    // 16-bit weights: chunks of at most WIDE_TAP_CHUNK taps, widened.
                    let chunk = if wide { WIDE_TAP_CHUNK } else { usize::MAX };
                    let chunks = sc.x_rel.chunks(chunk).zip(sc.w_off.chunks(chunk));
                    for (xr, wo) in chunks {
                        let acc = &mut sc.acc[..pixels * c_pad];
                        tok.depthwise(x, base0, step, pixels, xr, wo, &self.w, c, self.zp_in, acc);
                        if wide {
                            for (a, &s) in sc.acc64.iter_mut().zip(acc.iter()) {
                                *a += s as i64;
                            }
                        }
                    }
                }
                let ys = &mut yrow[ox * c..end * c];
                if !wide && c == c_pad {
                    let acc = &sc.acc[..pixels * c_pad];
                    tok.requant32_rows(
                        acc,
                        &self.bias32,
                        &rq.mult,
                        &rq.shift,
                        rq.clamp,
                        ys,
                        c,
                        pixels,
                    );
                    continue;
                }
                for p in 0..pixels {
                    if wide {
                        let acc = &sc.acc64[p * c_pad..(p + 1) * c_pad];
                        rq.row64(tok, acc, 0, c, &mut sc.out);
                    } else {
                        let acc = &sc.acc[p * c_pad..(p + 1) * c_pad];
                        tok.requant32(
                            acc,
                            &self.bias32,
                            &rq.mult,
                            &rq.shift,
                            rq.clamp,
                            &mut sc.out,
                        );
                    }
                    ys[p * c..(p + 1) * c].copy_from_slice(&sc.out[..c]);
                }
            }
        }
    }
}
