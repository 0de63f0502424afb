//! Depthwise convolution (`groups = C_in = C_out`): per output pixel, the valid taps
//! are listed once and the kernel reduces them for all channels at once.

use lastmile_backend_cpu_ref::kernels::Weights;

use crate::gather::ConvGeom;
use crate::gemm::Requant;
use crate::kernels::Token;

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
    /// Bias per channel (padding 0).
    pub bias32: Vec<i32>,
    pub requant: Requant,
}

/// Per-thread scratch.
#[derive(Debug, Default)]
pub(crate) struct DwScratch {
    rows: Vec<(usize, usize)>,
    x_rel: Vec<usize>,
    w_off: Vec<usize>,
    acc: Vec<i32>,
    acc64: Vec<i64>,
    out: Vec<i8>,
}

impl DwLayer {
    /// Packs `w` (`[C, KH, KW, 1]`) tap-major.
    pub(crate) fn pack(&mut self, w: Weights<'_>) {
        let taps = self.geom.kh * self.geom.kw;
        let c = self.geom.c_in;
        self.w.clear();
        self.w.resize(taps * self.c_pad, 0);
        for ch in 0..c {
            for t in 0..taps {
                self.w[t * self.c_pad + ch] = match w {
                    Weights::I8(w) => w[ch * taps + t] as i32,
                    Weights::I16(w) => w[ch * taps + t] as i32,
                };
            }
        }
    }

    /// Sets the bias (`None` = zero).
    pub(crate) fn set_bias(&mut self, bias: Option<&[i32]>) {
        self.bias32.clear();
        self.bias32.resize(self.c_pad, 0);
        if let Some(b) = bias {
            self.bias32[..b.len()].copy_from_slice(b);
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
        std::thread::scope(|s| {
            for ((i, ys), sc) in y
                .chunks_mut(per * row_len)
                .enumerate()
                .zip(scratch.iter_mut())
            {
                s.spawn(move || self.run_rows(tok, x, i * per, ys, sc));
            }
        });
    }

    /// Output rows `r0 ..` (`(sample, oy)` in order) into `y`.
    fn run_rows(&self, tok: Token, x: &[i8], r0: usize, y: &mut [i8], sc: &mut DwScratch) {
        let g = &self.geom;
        let c = g.c_in;
        let c_pad = self.c_pad;
        let rq = &self.requant;
        sc.out.resize(c_pad, 0);
        for (i, yrow) in y.chunks_exact_mut(g.wo * c).enumerate() {
            let (s, oy) = ((r0 + i) / g.ho, (r0 + i) % g.ho);
            sc.rows.clear();
            sc.rows
                .extend((0..g.kh).filter_map(|ky| g.iy(oy, ky).map(|iy| (ky, iy))));
            let mut ox = 0;
            while ox < g.wo {
                // A run of output columns whose windows have the same valid taps.
                let (lo, hi) = g.kx_range(ox);
                let mut end = ox + 1;
                while end < g.wo && g.kx_range(end) == (lo, hi) {
                    end += 1;
                }
                let pixels = end - ox;
                sc.x_rel.clear();
                sc.w_off.clear();
                for &(ky, iy) in &sc.rows {
                    for kx in lo..hi {
                        sc.x_rel.push((iy * g.w + (kx - lo) * g.dilation[1]) * c);
                        sc.w_off.push((ky * g.kw + kx) * c_pad);
                    }
                }
                // Window origin: input column of tap `lo` (valid, so ≥ 0) in row 0 of sample s.
                let (base0, step) = if lo < hi {
                    (
                        (s * g.h * g.w + ox * g.stride[1] + lo * g.dilation[1] - g.pad[1]) * c,
                        g.stride[1] * c,
                    )
                } else {
                    (0, 0)
                };
                sc.acc.resize(pixels * c_pad, 0);
                if !self.wide {
                    tok.depthwise(
                        x,
                        base0,
                        step,
                        pixels,
                        &sc.x_rel,
                        &sc.w_off,
                        &self.w,
                        c,
                        self.zp_in,
                        &mut sc.acc,
                    );
                    for p in 0..pixels {
                        let acc = &sc.acc[p * c_pad..(p + 1) * c_pad];
                        let yo = (ox + p) * c;
                        let f = |out: &mut [i8]| {
                            tok.requant32(acc, &self.bias32, &rq.mult, &rq.shift, rq.clamp, out)
                        };
                        if c == c_pad {
                            f(&mut yrow[yo..yo + c]);
                        } else {
                            f(&mut sc.out);
                            yrow[yo..yo + c].copy_from_slice(&sc.out[..c]);
                        }
                    }
                } else {
                    sc.acc64.clear();
                    for _ in 0..pixels {
                        sc.acc64.extend(self.bias32.iter().map(|&b| b as i64));
                    }
                    let chunks = sc
                        .x_rel
                        .chunks(WIDE_TAP_CHUNK)
                        .zip(sc.w_off.chunks(WIDE_TAP_CHUNK));
                    for (xr, wo) in chunks {
                        tok.depthwise(
                            x,
                            base0,
                            step,
                            pixels,
                            xr,
                            wo,
                            &self.w,
                            c,
                            self.zp_in,
                            &mut sc.acc,
                        );
                        for (a, &s) in sc.acc64.iter_mut().zip(&sc.acc) {
                            *a += s as i64;
                        }
                    }
                    for p in 0..pixels {
                        let acc = &sc.acc64[p * c_pad..(p + 1) * c_pad];
                        rq.row64(tok, acc, 0, c, &mut sc.out);
                        let yo = (ox + p) * c;
                        yrow[yo..yo + c].copy_from_slice(&sc.out[..c]);
                    }
                }
                ox = end;
            }
        }
    }
}
