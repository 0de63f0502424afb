//! Weight packing: `[C_out, K]` rows (OHWI conv weights flatten to exactly that, K in
//! `(ky, kx, c_in)` order) into the panel layout of the GEMM tile, plus the per-channel
//! sums the exactness corrections need.
//!
//! Panel `p` holds output channels `p·L .. p·L + L` (`L` = lanes of the tier) as
//! `kg` groups of `L` dwords; dword `(g, l)` holds reduction elements `g·G .. g·G + G`
//! of channel `p·L + l` (`G` = 4 bytes for VNNI, 2 `i16` for AVX2). Channels are padded
//! to a multiple of the panels a tile reads (`nb·L`), K to a multiple of `G`; padding
//! weights are zero, so they contribute nothing to any sum.
//!
//! Frozen weights are packed once at prepare; trainable ones on every forward into the
//! same buffers (no allocation), which is what `benches/` measures as the re-pack cost.

use lastmile_backend_cpu_ref::kernels::Weights;
use lastmile_core::quant::WeightBits;

use crate::kernels::{AlignedBytes, Isa, Token};

/// How a layer's dot products are computed on a tier.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Scheme {
    /// VNNI, 8-bit weights: `Σ (x−zp)·w = Σ (x+128)·w − (zp+128)·Σw`.
    Vnni8,
    /// VNNI, 16-bit weights split into two **signed** bytes, `w = 256·hi + lo' + 128`
    /// (`hi = w >> 8`, `lo' = (w & 255) − 128`), so both halves are `s8` operands of the
    /// same `u8 × s8` tile (one broadcast of `x+128` feeds both panels):
    /// `Σ (x−zp)·w = 256·(Σ (x+128)·hi − (zp+128)·Σhi) + (Σ (x+128)·lo' − (zp+128)·Σlo')
    ///  + 128·(Σ_k (x_k+128) − K·(zp+128))`; the last term uses a per-row sum.
    Vnni16,
    /// AVX2, 8-bit weights widened to `i16`: `Σ (x−zp)·w` with `vpmaddwd`.
    Madd8,
    /// AVX2, 16-bit weights: `Σ (x−zp)·w` with `vpmaddwd`, `i32` partial sums over at
    /// most 256 elements widened to `i64`.
    Madd16,
}

impl Scheme {
    pub(crate) fn of(isa: Isa, bits: WeightBits) -> Scheme {
        match (isa, bits) {
            (Isa::Avx2, WeightBits::W8) => Scheme::Madd8,
            (Isa::Avx2, WeightBits::W16) => Scheme::Madd16,
            (_, WeightBits::W8) => Scheme::Vnni8,
            (_, WeightBits::W16) => Scheme::Vnni16,
        }
    }
}

/// Packed weights of one conv/linear layer.
#[derive(Clone, Debug)]
pub(crate) struct PackedWeights {
    tok: Token,
    pub scheme: Scheme,
    /// Output channels.
    pub n: usize,
    /// Reduction length.
    pub k: usize,
    /// Dword groups along K.
    pub kg: usize,
    /// Lanes per panel.
    pub lanes: usize,
    /// Panels per tile (1 or 2; Vnni16: always 2, the `hi` and `lo'` panels).
    pub nb: usize,
    /// Output channels per tile: `nb·lanes`, or `lanes` for Vnni16.
    pub nr: usize,
    /// Channels padded to a multiple of `nr`.
    pub n_pad: usize,
    /// Bytes per panel.
    pub panel_stride: usize,
    /// The panels: `s8` (Vnni8), `hi`/`lo'` pairs (Vnni16) or `i16` (Madd*).
    pub main: AlignedBytes,
    /// Per channel: `Σ w` (Vnni8) or `Σ hi` (Vnni16); unused by Madd*.
    pub sum_main: Vec<i64>,
    /// Per channel: `Σ lo'` (Vnni16).
    pub sum_lo: Vec<i64>,
    /// Per channel: `Σ |w|` (Vnni16), which bounds the accumulator (see
    /// [`Corrections::narrow`]).
    pub sum_abs: Vec<i64>,
}

impl PackedWeights {
    /// Zeroed buffers for an `n × k` weight matrix on `tok`'s tier. `few_rows`: the layer
    /// multiplies few activation rows (a linear layer: one per sample), so tiles should be
    /// tall (8 rows) to stream the weights once rather than wide.
    pub(crate) fn new(tok: Token, bits: WeightBits, n: usize, k: usize, few_rows: bool) -> Self {
        let scheme = Scheme::of(tok.isa(), bits);
        let lanes = tok.lanes();
        let (nb, nr) = tile_panels(scheme, lanes, n, if few_rows { 2 } else { 4 });
        let n_pad = n.div_ceil(nr) * nr;
        let kg = k.div_ceil(tok.group());
        let panel_stride = kg * lanes * 4;
        let bytes = n_pad / nr * nb * panel_stride;
        PackedWeights {
            tok,
            scheme,
            n,
            k,
            kg,
            lanes,
            nb,
            nr,
            n_pad,
            panel_stride,
            main: AlignedBytes::zeroed(bytes),
            sum_main: vec![0; n_pad],
            sum_lo: vec![0; n_pad],
            sum_abs: vec![0; n_pad],
        }
    }

    /// Number of stored (unpadded) weights.
    pub(crate) fn weights(&self) -> usize {
        self.n * self.k
    }

    /// Bytes of the panels one tile reads.
    pub(crate) fn group_bytes(&self) -> usize {
        self.nb * self.panel_stride
    }

    /// Byte offset of dword group `g` of channel `ch`. Panels are consecutive; for Vnni16
    /// a tile of `nl = nb/2` logical panels is laid out `[hi_0 .. hi_nl, lo_0 .. lo_nl]`, so
    /// its output row is `nr` `hi` sums then `nr` `lo'` sums; this is the `hi` offset and
    /// the `lo'` one is [`PackedWeights::lo_delta`] further.
    #[cfg(test)]
    pub(crate) fn offset(&self, ch: usize, g: usize) -> usize {
        let panel = match self.scheme {
            Scheme::Vnni16 => (ch / self.nr) * self.nb + (ch % self.nr) / self.lanes,
            _ => ch / self.lanes,
        };
        panel * self.panel_stride + (g * self.lanes + ch % self.lanes) * 4
    }

    /// Vnni16: bytes from a `hi` dword to its `lo'` twin.
    pub(crate) fn lo_delta(&self) -> usize {
        self.nb / 2 * self.panel_stride
    }

    /// Packs `w` (`n·k` codes, row-major `[n, k]`). Panics on a width or length mismatch
    /// (the forward checked both against the prepared model).
    ///
    /// Destination-major: each panel is written dword by dword in memory order from up
    /// to `lanes` row streams; padding channels are never written (zero since
    /// allocation). Per-channel sums are separate, vectorizable passes.
    pub(crate) fn pack(&mut self, w: Weights<'_>) {
        let (n, k) = (self.n, self.k);
        match (self.scheme, w) {
            (Scheme::Vnni8, Weights::I8(w)) => {
                assert_eq!(w.len(), n * k);
                self.tok.sums_i8(w, k, &mut self.sum_main[..n]);
                self.traverse(w, Weights::I8, |row, g, d, _| {
                    d.copy_from_slice(&group::<4, _>(row, g).map(|v| v as u8));
                });
            }
            (Scheme::Vnni16, Weights::I16(w)) => {
                assert_eq!(w.len(), n * k);
                let (hi, lo) = (&mut self.sum_main[..n], &mut self.sum_lo[..n]);
                self.tok.sums_hilo(w, k, hi, lo, &mut self.sum_abs[..n]);
                self.traverse(w, Weights::I16, |row, g, hi, lo| {
                    let q = group::<4, _>(row, g);
                    for j in 0..4 {
                        // K padding is not a weight: 0 in both panels (not hi/lo' of 0).
                        let real = g * 4 + j < row.len();
                        hi[j] = if real { (q[j] >> 8) as u8 } else { 0 };
                        lo[j] = if real { ((q[j] & 0xff) - 128) as u8 } else { 0 };
                    }
                });
            }
            (Scheme::Madd8, Weights::I8(w)) => {
                assert_eq!(w.len(), n * k);
                self.traverse(w, Weights::I8, |row, g, d, _| {
                    let [a, b] = group::<2, _>(row, g).map(|v| (v as i16).to_ne_bytes());
                    d.copy_from_slice(&[a[0], a[1], b[0], b[1]]);
                });
            }
            (Scheme::Madd16, Weights::I16(w)) => {
                assert_eq!(w.len(), n * k);
                self.traverse(w, Weights::I16, |row, g, d, _| {
                    let [a, b] = group::<2, _>(row, g).map(i16::to_ne_bytes);
                    d.copy_from_slice(&[a[0], a[1], b[0], b[1]]);
                });
            }
            (s, w) => panic!("{s:?} cannot pack {} weights", weights_dtype(w)),
        }
    }

    /// Calls `f(row, g, dword, lo_dword)` for dword group `g` of every real channel, in
    /// destination order; `row` is the channel's `k` source codes, `lo_dword` the Vnni16
    /// `lo'` twin of `dword` (for other schemes an unused scratch dword).
    ///
    /// Full panels go through the tier's gather kernel (`Token::pack_panel`; `wrap`
    /// re-tags the source slice) for their whole groups; `f` packs the rest.
    fn traverse<'w, T>(
        &mut self,
        src: &'w [T],
        wrap: fn(&'w [T]) -> Weights<'w>,
        mut f: impl FnMut(&[T], usize, &mut [u8], &mut [u8]),
    ) {
        let (n, k, lanes, kg, ps) = (self.n, self.k, self.lanes, self.kg, self.panel_stride);
        let (nb, nr) = (self.nb, self.nr);
        // (physical panel, first channel) of every panel written directly: for Vnni16
        // the `hi` panels (their `lo'` twins are `lo_delta` further).
        let panels: Vec<(usize, usize)> = match self.scheme {
            Scheme::Vnni16 => (0..self.n_pad / self.nr)
                .flat_map(|q| (0..nb / 2).map(move |j| (q * nb + j, q * nr + j * lanes)))
                .collect(),
            _ => (0..self.n_pad / lanes).map(|p| (p, p * lanes)).collect(),
        };
        let delta = if self.scheme == Scheme::Vnni16 {
            self.lo_delta()
        } else {
            0
        };
        let main = self.main.as_mut_slice();
        let mut spare = [0u8; 4];
        for (panel, ch0) in panels {
            if ch0 >= n {
                continue;
            }
            let live = lanes.min(n - ch0);
            let rows: Vec<&[T]> = (ch0..ch0 + live)
                .map(|ch| &src[ch * k..(ch + 1) * k])
                .collect();
            let base = panel * ps;
            let mut done = 0;
            if live == lanes {
                let block = wrap(&src[ch0 * k..(ch0 + lanes) * k]);
                let (a, b) = main.split_at_mut(base + ps);
                let lo: &mut [u8] = if delta == 0 {
                    &mut []
                } else {
                    &mut b[delta - ps..delta]
                };
                done = self
                    .tok
                    .pack_panel(self.scheme, block, k, &mut a[base..], lo);
            }
            for g in done..kg {
                for (l, row) in rows.iter().enumerate() {
                    let o = base + (g * lanes + l) * 4;
                    if delta == 0 {
                        f(row, g, &mut main[o..o + 4], &mut spare);
                    } else {
                        let (a, b) = main.split_at_mut(o + delta);
                        f(row, g, &mut a[o..o + 4], &mut b[..4]);
                    }
                }
            }
        }
    }
}

/// Elements `g·G .. g·G + G` of `row`, zero past its end.
#[inline(always)]
fn group<const G: usize, T: Copy + Default>(row: &[T], g: usize) -> [T; G] {
    match row.get(g * G..g * G + G) {
        Some(q) => core::array::from_fn(|j| q[j]),
        None => core::array::from_fn(|j| row.get(g * G + j).copied().unwrap_or_default()),
    }
}

fn weights_dtype(w: Weights<'_>) -> &'static str {
    match w {
        Weights::I8(_) => "i8",
        Weights::I16(_) => "i16",
    }
}

/// Panels per tile `nb` and output channels per tile `nr` for `n` channels: wider tiles
/// need fewer broadcasts per multiply (`zmm`: up to 4 panels of 16, 6 rows; `ymm`: up to
/// 2 panels of 8, 6 rows; at most `max_nb`), but pad `n` further; pick the cheapest by a simple cost model
/// (relative cost per computed panel: 1.3, 1.1, 1.03, 1.0 for 1–4 panels).
fn tile_panels(scheme: Scheme, lanes: usize, n: usize, max_nb: usize) -> (usize, usize) {
    const COST: [f64; 4] = [1.3, 1.1, 1.03, 1.0];
    let max_nb = if lanes == 16 { max_nb } else { 2 };
    // Vnni16 tiles hold `nb/2` logical panels (a `hi` and a `lo'` panel each).
    let per_logical = if scheme == Scheme::Vnni16 { 2 } else { 1 };
    let mut best = (f64::INFINITY, 0, 0);
    for nb in (per_logical..=max_nb).step_by(per_logical) {
        let nr = nb / per_logical * lanes;
        let panels = n.div_ceil(nr) * nb;
        let cost = panels as f64 * COST[nb - 1];
        if cost <= best.0 {
            best = (cost, nb, nr);
        }
    }
    (best.1, best.2)
}

/// Per-channel constants added to a tile's raw sums (see [`Scheme`]); padding channels 0.
#[derive(Clone, Debug, Default)]
pub(crate) struct Corrections {
    /// Vnni8: `bias − (zp+128)·Σw`; Vnni16: `−(zp+128)·Σhi`; Madd8: `bias`. Stored
    /// modulo 2^32: the tile sums they are added to wrap the same way, and the true
    /// total fits `i32` (the spec's bound), so the wrapping sum is exact.
    pub c32: Vec<i32>,
    /// Vnni16: `−(zp+128)·Σlo'` (modulo 2^32, as `c32`).
    pub c32_lo: Vec<i32>,
    /// Vnni16: `bias − 128·K·(zp+128)`; Madd16: `bias`.
    pub c64: Vec<i64>,
    /// Vnni16: `c64` modulo 2^32, for the epilogue's `i32` path.
    pub c64_32: Vec<i32>,
    /// Vnni16: the largest `|H'| = |Σ (x−zp)·hi|` for which an accumulator provably fits
    /// `i32`; the epilogue checks `|H'|` per vector and takes an `i32` path when it holds.
    /// * **narrow** layers — `|bias_c| + 255·Σ_k |w_ck| ≤ 2^31 − 1` for every channel,
    ///   checked on the actual weights whenever they are packed — have every accumulator in
    ///   `i32` (`|Σ (x−zp)·w| ≤ 255·Σ|w|`): `i32::MAX`, every vector qualifies. Typical
    ///   trained 16-bit 3×3 convs over 64 channels are narrow; with every code ±32767 only
    ///   `K ≤ 257` is.
    /// * otherwise `acc = 256·H' + L' + E` with `|L'| ≤ 255·128·K` and
    ///   `|E| = |bias + 128·Σ (x−zp)| ≤ max|bias| + 128·255·K`, so
    ///   `⌊(2^31 − 1 − max|bias| − 2·255·128·K) / 256⌋` (−1 if that is negative).
    pub h_limit: i32,
}

impl Corrections {
    /// Recomputes the corrections for `packed` with input zero point `zp` and `bias`.
    pub(crate) fn update(&mut self, packed: &PackedWeights, zp: i32, bias: Option<&[i32]>) {
        let n_pad = packed.n_pad;
        for v in [&mut self.c32, &mut self.c32_lo] {
            v.clear();
            v.resize(n_pad, 0);
        }
        self.c64.clear();
        self.c64.resize(n_pad, 0);
        self.c64_32.clear();
        self.c64_32.resize(n_pad, 0);
        let bias_abs = |c: usize| bias.map_or(0, |b| (b[c] as i64).abs());
        let narrow = packed.scheme == Scheme::Vnni16
            && (0..packed.n).all(|c| bias_abs(c) + 255 * packed.sum_abs[c] <= i32::MAX as i64);
        let max_bias = (0..packed.n).map(bias_abs).max().unwrap_or(0);
        let rest = max_bias + 2 * 255 * 128 * packed.k as i64;
        self.h_limit = if narrow {
            i32::MAX
        } else if rest <= i32::MAX as i64 {
            ((i32::MAX as i64 - rest) / 256) as i32
        } else {
            -1
        };
        let zp = zp as i64;
        let k = packed.k as i64;
        for c in 0..packed.n {
            let b = bias.map_or(0, |b| b[c] as i64);
            match packed.scheme {
                Scheme::Vnni8 => self.c32[c] = (b - (zp + 128) * packed.sum_main[c]) as i32,
                Scheme::Vnni16 => {
                    self.c32[c] = (-(zp + 128) * packed.sum_main[c]) as i32;
                    self.c32_lo[c] = (-(zp + 128) * packed.sum_lo[c]) as i32;
                    self.c64[c] = b - 128 * k * (zp + 128);
                    self.c64_32[c] = self.c64[c] as i32;
                }
                Scheme::Madd8 => self.c32[c] = b as i32,
                Scheme::Madd16 => self.c64[c] = b,
            }
        }
    }
}

/// `out[c] = Σ_k w[c·k + k]` for every row (`|Σ| ≤ 127·MAX_K` fits `i32` exactly).
/// Call through `Token::sums_i8` to compile it with the tier's features.
#[inline(always)]
pub(crate) fn sums_i8(w: &[i8], k: usize, out: &mut [i64]) {
    for (o, row) in out.iter_mut().zip(w.chunks_exact(k.max(1))) {
        *o = row.iter().map(|&v| v as i32).sum::<i32>() as i64;
    }
}

/// Per row: `Σ hi` and `Σ lo'` of the Vnni16 split (`hi = w >> 8`, `lo' = (w & 255) − 128`),
/// each `|Σ| ≤ 255·MAX_K` fits `i32` exactly, and `Σ |w|` (`≤ 32768·MAX_K = 2^31` fits
/// `u32`). Call through `Token::sums_hilo`.
#[inline(always)]
pub(crate) fn sums_hilo(w: &[i16], k: usize, hi: &mut [i64], lo: &mut [i64], abs: &mut [i64]) {
    let rows = w.chunks_exact(k.max(1));
    for (((h, l), a), row) in hi.iter_mut().zip(lo.iter_mut()).zip(abs).zip(rows) {
        *h = row.iter().map(|&v| (v >> 8) as i32).sum::<i32>() as i64;
        *l = row.iter().map(|&v| (v & 0xff) as i32).sum::<i32>() as i64 - 128 * k as i64;
        *a = row.iter().map(|&v| v.unsigned_abs() as u32).sum::<u32>() as i64;
    }
}
