//! The only module of this crate with `unsafe` code: SIMD kernels behind a safe API.
//!
//! A [`Token`] is proof that the running CPU has the features of one SIMD tier; it can
//! only be made by [`Token::new`], which runs `is_x86_feature_detected!`. Its methods
//! take slices, check every bound the kernels rely on (cheap, once per tile / row /
//! pixel), and only then call the `#[target_feature]` functions with raw pointers. So
//! the rest of the crate is safe code that cannot cause undefined behaviour by passing
//! wrong sizes: it gets a panic instead.
//!
//! Layout:
//! * [`simd`] — intrinsic wrappers (`Simd`, `Dot`) so the tile loop is written once;
//! * [`gemm`] — the `MR × NB·LANES` GEMM tile per tier;
//! * [`amx`] — the same tile on AMX tile registers (16 rows);
//! * [`requant`] — vectorized requantization (exact, see its docs);
//! * [`dw`] — depthwise convolution: a generic run-of-pixels kernel and the register-blocked
//!   3-wide one (with in-register requantization).
#![deny(unsafe_op_in_unsafe_fn)]

mod amx;
mod dw;
mod eltwise;
mod gemm;
mod pack;
mod requant;
mod simd;
mod sums;

pub(crate) use eltwise::AddConsts;
pub(crate) use requant::Clamp;

/// The shape of a [`Token::tile_segments`] call.
#[derive(Clone, Copy, Debug)]
pub(crate) struct TileArgs<'a> {
    /// Bytes between the tile's activation rows.
    pub a_stride: usize,
    /// Byte offsets of each row's segments.
    pub segs: &'a [usize],
    /// Dword groups per segment.
    pub kg: usize,
    /// Bytes between weight panels.
    pub panel_stride: usize,
    /// Weight panels.
    pub nb: usize,
    /// Prefetch the panels ahead (weights streamed once, from L3).
    pub prefetch: bool,
}

/// The per-channel corrections of a 16w8a tile (see [`Token::requant_hilo_rows`]):
/// `c_hi = −(zp+128)·Σhi`, `c_lo = −(zp+128)·Σlo'` (both modulo 2^32), and the `i64` term.
#[derive(Clone, Copy, Debug)]
pub(crate) struct HiLoCorr<'a> {
    pub c_hi: &'a [i32],
    pub c_lo: &'a [i32],
    pub c64: &'a [i64],
    /// `c64` modulo 2^32.
    pub c64_32: &'a [i32],
    /// Largest `|hi + c_hi|` for which every accumulator of the layer provably fits
    /// `i32` (see `Corrections::h_limit`); negative: never; `i32::MAX`: always (a narrow
    /// layer, see `Corrections::narrow`).
    pub h_limit: i32,
}

/// A SIMD instruction set this crate has kernels for.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub(crate) enum Isa {
    /// AVX2 (`vpmaddwd` on `i16`).
    Avx2,
    /// AVX2 + AVX-VNNI (VEX `vpdpbusd` on 256-bit registers).
    AvxVnni,
    /// AVX-512 F/BW/VL + AVX512-VNNI (`vpdpbusd` on 512-bit registers).
    Avx512Vnni,
}

impl Isa {
    /// The CPU features this ISA needs that the running CPU lacks (empty = supported).
    pub(crate) fn missing_features(self) -> Vec<&'static str> {
        let checks: &[(&'static str, bool)] = match self {
            Isa::Avx2 => &[("avx2", is_x86_feature_detected!("avx2"))],
            Isa::AvxVnni => &[
                ("avx2", is_x86_feature_detected!("avx2")),
                ("avxvnni", is_x86_feature_detected!("avxvnni")),
            ],
            Isa::Avx512Vnni => &[
                ("avx512f", is_x86_feature_detected!("avx512f")),
                ("avx512bw", is_x86_feature_detected!("avx512bw")),
                ("avx512vl", is_x86_feature_detected!("avx512vl")),
                ("avx512vnni", is_x86_feature_detected!("avx512vnni")),
            ],
        };
        checks
            .iter()
            .filter(|(_, present)| !present)
            .map(|(name, _)| *name)
            .collect()
    }
}

/// Proof that the CPU supports an [`Isa`] (private field: only [`Token::new`] makes one).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Token {
    isa: Isa,
    /// AMX-INT8 usable too (only with `Isa::Avx512Vnni`; see [`Token::with_amx`]).
    amx: bool,
}

/// What the two operands of a tile's dot product are.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum TileOp {
    /// VNNI: activations as `u8` (code + 128), weights `s8`.
    ActU8,
    /// AVX2: pairs of `i16` (centered activations × weights).
    MaddI16,
}

impl TileOp {
    /// The dot product `isa`'s tiles use.
    pub(crate) fn default_for(isa: Isa) -> TileOp {
        match isa {
            Isa::Avx2 => TileOp::MaddI16,
            Isa::AvxVnni | Isa::Avx512Vnni => TileOp::ActU8,
        }
    }
}

impl Token {
    /// A token if the CPU has every feature of `isa`.
    pub(crate) fn new(isa: Isa) -> Option<Token> {
        isa.missing_features()
            .is_empty()
            .then_some(Token { isa, amx: false })
    }

    /// This AVX-512 VNNI token with AMX tiles enabled, if the CPU has AMX-INT8 and the
    /// OS grants the tile state.
    pub(crate) fn with_amx(self) -> Option<Token> {
        (self.isa == Isa::Avx512Vnni && amx::unusable_reason().is_none()).then_some(Token {
            isa: self.isa,
            amx: true,
        })
    }

    /// Why AMX cannot be used here (`None`: it can).
    pub(crate) fn amx_unusable_reason() -> Option<&'static str> {
        amx::unusable_reason()
    }

    /// Rows per tile for `nb` panels and `kg` dword groups per segment: 16 on AMX when
    /// `kg` is a multiple of 16, else [`Token::mr`].
    pub(crate) fn mr_for(self, nb: usize, kg: usize) -> usize {
        if self.amx && kg.is_multiple_of(16) {
            16
        } else {
            self.mr(nb)
        }
    }

    /// The instruction set.
    pub(crate) fn isa(self) -> Isa {
        self.isa
    }

    /// `i32` lanes per register: output channels per weight panel.
    pub(crate) fn lanes(self) -> usize {
        match self.isa {
            Isa::Avx512Vnni => 16,
            Isa::Avx2 | Isa::AvxVnni => 8,
        }
    }

    /// Rows per GEMM tile with `nb` weight panels (see `gemm::max_rows`).
    pub(crate) fn mr(self, nb: usize) -> usize {
        gemm::max_rows(self.tile_fn(TileOp::default_for(self.isa)), nb)
    }

    fn tile_fn(self, op: TileOp) -> gemm::TileFn {
        match (self.isa, op) {
            (Isa::Avx512Vnni, TileOp::ActU8) => gemm::TileFn::ZmmActU8,
            (Isa::AvxVnni, TileOp::ActU8) => gemm::TileFn::YmmActU8,
            (Isa::Avx2, TileOp::MaddI16) => gemm::TileFn::YmmMaddI16,
            (isa, op) => panic!("tile op {op:?} does not exist on {isa:?}"),
        }
    }

    /// Reduction elements per dword group: 4 bytes (VNNI) or 2 `i16` (AVX2).
    pub(crate) fn group(self) -> usize {
        match self.isa {
            Isa::Avx2 => 2,
            Isa::Avx512Vnni | Isa::AvxVnni => 4,
        }
    }

    /// One GEMM tile: `out[i·NR + j] = Σ_g dot(a row i group g, weight lane j group g)`
    /// for `i < rows`, `j < NR = nb·lanes`, over `kg` dword groups.
    ///
    /// `a` holds `rows` rows `a_stride` bytes apart, `w` holds `nb` panels
    /// `panel_stride` bytes apart (see `gemm` for the layout). Panics if a slice is too
    /// short, `nb ∉ 1..=4`, `rows ∉ 1..=mr(nb)`, or `op` does not belong to this ISA.
    #[allow(clippy::too_many_arguments)]
    pub(crate) fn tile(
        self,
        op: TileOp,
        a: &[u8],
        a_stride: usize,
        rows: usize,
        kg: usize,
        w: &[u8],
        panel_stride: usize,
        nb: usize,
        out: &mut [i32],
    ) {
        let t = TileArgs {
            a_stride,
            segs: &[0],
            kg,
            panel_stride,
            nb,
            prefetch: false,
        };
        self.tile_segments(op, a, rows, w, t, out)
    }

    /// [`Token::tile`] over rows made of `segs.len()` segments of `kg` dword groups each,
    /// segment `s` of row `i` at `a[i·a_stride + segs[s] ..]`; the weight panels hold the
    /// segments' groups one after another (`segs.len()·kg` groups). A direct convolution
    /// reads its kernel rows' windows in place this way instead of gathering them.
    pub(crate) fn tile_segments(
        self,
        op: TileOp,
        a: &[u8],
        rows: usize,
        w: &[u8],
        t: TileArgs<'_>,
        out: &mut [i32],
    ) {
        let TileArgs {
            a_stride,
            segs,
            kg,
            panel_stride,
            nb,
            prefetch,
        } = t;
        let lanes = self.lanes();
        let f = self.tile_fn(op);
        let on_amx = self.amx && op == TileOp::ActU8 && kg.is_multiple_of(16);
        let max_rows = if on_amx { 16 } else { gemm::max_rows(f, nb) };
        assert!((1..=4).contains(&nb), "tile panels {nb}");
        assert!((1..=max_rows).contains(&rows), "tile rows {rows}");
        let seg_max = segs.iter().copied().max().expect("tile: no segments");
        let a_need = (rows - 1)
            .checked_mul(a_stride)
            .and_then(|v| v.checked_add(seg_max)?.checked_add(kg.checked_mul(4)?));
        assert!(
            a_need.is_some_and(|n| n <= a.len()),
            "tile: activations too short"
        );
        let w_need = (nb - 1)
            .checked_mul(panel_stride)
            .and_then(|v| v.checked_add(kg.checked_mul(segs.len())?.checked_mul(lanes * 4)?));
        assert!(
            w_need.is_some_and(|n| n <= w.len()),
            "tile: weights too short"
        );
        let nr = nb * lanes;
        assert!(out.len() >= rows * nr, "tile: output too short");
        let raw = gemm::RawTile {
            kg,
            segs: segs.as_ptr(),
            nseg: segs.len(),
            a: a.as_ptr(),
            a_stride,
            w: w.as_ptr(),
            panel_stride,
            out: out.as_mut_ptr(),
            out_stride: nr,
            prefetch,
        };
        // SAFETY: the token proves the CPU has this ISA's features (`Token::new`); `f`
        // belongs to the ISA (`tile_fn`); `nb ≤ 4` and `rows ≤ max_rows(f, nb)` are the
        // shapes `gemm::run` instantiates; the asserts above establish the memory contract
        // of `gemm::tile`: `segs` is a live slice of `nseg` offsets; row `i < rows`,
        // segment `s` reads up to `(rows−1)·a_stride + max(segs) + 4·kg ≤ a.len()` bytes,
        // panels read `(nb−1)·panel_stride + nseg·kg·lanes·4 ≤ w.len()` bytes, and the
        // output writes `rows·nr ≤ out.len()` i32 with row stride `nr`. AMX: the token
        // has AMX with the tile state granted (`Token::with_amx`), `kg` is a multiple of
        // 16, `rows ≤ 16`, `nb ≤ 4`, 16 lanes (an AVX-512 token), and `amx::tile`'s memory
        // contract is the one above.
        unsafe {
            if on_amx {
                amx::tile(raw, rows, nb)
            } else {
                gemm::run(f, rows, nb, raw)
            }
        }
    }

    /// `out[c] = clamp(⌊((acc[c] + corr[c])·M_c + 2^(n_c−1)) / 2^n_c⌋ + zp, lo, hi)` for
    /// `c < out.len()` (a multiple of [`Token::lanes`]), the sum `acc + corr` wrapping
    /// in `i32`. Bit-exact with `QuantMultiplier::requantize`.
    pub(crate) fn requant32(
        self,
        acc: &[i32],
        corr: &[i32],
        mult: &[i32],
        shift: &[i32],
        q: Clamp,
        out: &mut [i8],
    ) {
        let len = out.len();
        self.requant32_rows(
            &acc[..len.min(acc.len())],
            corr,
            mult,
            shift,
            q,
            out,
            len,
            1,
        );
    }

    /// [`Token::requant32`] on `rows` rows: row `r` is `acc[r·len .. (r+1)·len]` with
    /// `len = acc.len() / rows` (a multiple of [`Token::lanes`]), written to
    /// `out[r·out_stride ..][..len]`; `corr`, `mult`, `shift` are per column.
    #[allow(clippy::too_many_arguments)]
    pub(crate) fn requant32_rows(
        self,
        acc: &[i32],
        corr: &[i32],
        mult: &[i32],
        shift: &[i32],
        q: Clamp,
        out: &mut [i8],
        out_stride: usize,
        rows: usize,
    ) {
        assert!(
            rows >= 1 && acc.len().is_multiple_of(rows),
            "requant32: ragged rows"
        );
        let len = acc.len() / rows;
        assert!(len.is_multiple_of(self.lanes()), "requant32: ragged length");
        assert!(corr.len() >= len && mult.len() >= len && shift.len() >= len);
        let need = (rows - 1)
            .checked_mul(out_stride)
            .and_then(|o| o.checked_add(len));
        assert!(
            need.is_some_and(|n| n <= out.len()),
            "requant32: output too short"
        );
        debug_assert!(shift[..len].iter().all(|s| (1..=62).contains(s)));
        let p = requant::Rows32 {
            rows,
            len,
            acc: acc.as_ptr(),
            corr: corr.as_ptr(),
            mult: mult.as_ptr(),
            shift: shift.as_ptr(),
            out: out.as_mut_ptr(),
            out_stride,
        };
        match self.isa {
            // SAFETY: the token proves avx512f/bw/vl; `len` is a multiple of 16; `acc` has
            // `rows·len` values, the per-column slices `len`, and every output row
            // `r·out_stride .. + len` is inside `out` (asserted above).
            Isa::Avx512Vnni => unsafe { requant::requant32_zmm(p, q) },
            // SAFETY: the token proves avx2; `len` is a multiple of 8; bounds as above.
            Isa::Avx2 | Isa::AvxVnni => unsafe { requant::requant32_ymm(p, q) },
        }
    }

    /// `out[c] = clamp(⌊(acc[c]·M_c + 2^(n_c−1)) / 2^n_c⌋ + zp, lo, hi)` on `i64`
    /// accumulators, `out.len()` a multiple of [`Token::lanes`]. Exact when every
    /// `n_c ≥ 22` and `|acc| < 2^41` (the caller guarantees both; see `requant`).
    pub(crate) fn requant64(
        self,
        acc: &[i64],
        mult: &[i32],
        shift: &[i32],
        q: Clamp,
        out: &mut [i8],
    ) {
        let len = out.len();
        assert!(len.is_multiple_of(self.lanes()), "requant64: ragged length");
        assert!(acc.len() >= len && mult.len() >= len && shift.len() >= len);
        debug_assert!(shift[..len].iter().all(|s| (22..=62).contains(s)));
        match self.isa {
            // SAFETY: the token proves avx512f/bw/vl; `len` is a multiple of 16 (so of 8)
            // and every slice holds at least `len` elements (asserted above).
            Isa::Avx512Vnni => unsafe {
                requant::requant64_zmm(
                    len,
                    acc.as_ptr(),
                    mult.as_ptr(),
                    shift.as_ptr(),
                    q,
                    out.as_mut_ptr(),
                )
            },
            // SAFETY: the token proves avx2; `len` is a multiple of 8 (so of 4) and every
            // slice holds at least `len` elements (asserted above).
            Isa::Avx2 | Isa::AvxVnni => unsafe {
                requant::requant64_ymm(
                    len,
                    acc.as_ptr(),
                    mult.as_ptr(),
                    shift.as_ptr(),
                    q,
                    out.as_mut_ptr(),
                )
            },
        }
    }

    /// The 16w8a VNNI epilogue of a tile `t` of `rows = row_terms.len()` rows (row `r`:
    /// `len` `hi` sums then `len` `lo'` sums, at `t[r·2·len ..]`): for channel `c`,
    /// `acc = 256·(hi + c_hi) + (lo + c_lo) + c64 + row_terms[r]` (the two `i32` sums
    /// wrapping: their true values fit `i32`), requantized into `out[r·out_stride + c]` —
    /// on `i32` lanes where `corr.h_limit` proves it exact, else like [`Token::requant64`]
    /// (same preconditions on shifts and `|acc|`). `len` is a multiple of the lanes.
    #[allow(clippy::too_many_arguments)]
    pub(crate) fn requant_hilo_rows(
        self,
        t: &[i32],
        corr: HiLoCorr<'_>,
        row_terms: &[i64],
        mult: &[i32],
        shift: &[i32],
        q: Clamp,
        out: &mut [i8],
        out_stride: usize,
    ) {
        let rows = row_terms.len();
        assert!(
            rows >= 1 && t.len().is_multiple_of(2 * rows),
            "requant_hilo_rows: ragged"
        );
        let len = t.len() / (2 * rows);
        let need = (rows - 1)
            .checked_mul(out_stride)
            .and_then(|o| o.checked_add(len));
        assert!(
            need.is_some_and(|n| n <= out.len()),
            "requant_hilo_rows: output too short"
        );
        assert!(
            len.is_multiple_of(self.lanes()),
            "requant_hilo_rows: ragged length"
        );
        let inputs = [
            corr.c_hi.len(),
            corr.c_lo.len(),
            corr.c64.len(),
            corr.c64_32.len(),
            mult.len(),
            shift.len(),
        ];
        assert!(
            inputs.iter().all(|&l| l >= len),
            "requant_hilo_rows: short input"
        );
        debug_assert!(
            shift[..len].iter().all(|s| (1..=62).contains(s))
                && (corr.h_limit == i32::MAX || shift[..len].iter().all(|&s| s >= 22))
        );
        let p = requant::HiLo {
            hi: t.as_ptr(),
            lo: t[len..].as_ptr(),
            c_hi: corr.c_hi.as_ptr(),
            c_lo: corr.c_lo.as_ptr(),
            c64: corr.c64.as_ptr(),
            mult: mult.as_ptr(),
            shift: shift.as_ptr(),
        };
        // SAFETY: the token proves avx512f/bw/vl (AVX-512 tier) or avx2 (the others);
        // `len` is a multiple of the tier's lanes (16 / 8); row `r`'s `hi`/`lo` sums are
        // `len` `i32` at `t[r·2·len ..]` and `t[r·2·len + len ..]`, inside `t`
        // (`t.len() = rows·2·len`); the per-channel inputs hold `len` values, `row_terms`
        // `rows`; every output row `r·out_stride .. + len` is inside `out` (asserted above).
        unsafe {
            let o = out.as_mut_ptr();
            let rt = row_terms.as_ptr();
            let fast = requant::HiLoFast {
                c64_32: corr.c64_32.as_ptr(),
                h_limit: corr.h_limit,
            };
            let f = match self.isa {
                Isa::Avx512Vnni => requant::requant_hilo_rows_zmm,
                Isa::Avx2 | Isa::AvxVnni => requant::requant_hilo_rows_ymm,
            };
            f(len, rows, p, fast, 2 * len, rt, q, o, out_stride)
        }
    }

    /// The residual add of `cpu-ref`'s `kernels::add`, bit-exact, on `out.len()` elements
    /// (`a` and `b` at least as long); the last `len % lanes` elements use the reference.
    pub(crate) fn add(self, a: &[i8], b: &[i8], q: AddConsts, out: &mut [i8]) {
        let len = out.len();
        assert!(a.len() >= len && b.len() >= len, "add: short input");
        for m in [q.m_a, q.m_b, q.m_o] {
            assert!((1..=62).contains(&m.1), "add: shift {}", m.1);
        }
        let main = len / self.lanes() * self.lanes();
        match self.isa {
            // SAFETY: the token proves avx512f/bw/vl; `main` is a multiple of 16 and within
            // all three slices (asserted above); shifts checked.
            Isa::Avx512Vnni => unsafe {
                eltwise::add_zmm(main, a.as_ptr(), b.as_ptr(), q, out.as_mut_ptr())
            },
            // SAFETY: the token proves avx2; `main` is a multiple of 8 and within all three
            // slices (asserted above); shifts checked.
            Isa::Avx2 | Isa::AvxVnni => unsafe {
                eltwise::add_ymm(main, a.as_ptr(), b.as_ptr(), q, out.as_mut_ptr())
            },
        }
        let m = |(multiplier, shift): (i32, u32)| lastmile_core::quant::QuantMultiplier {
            multiplier,
            shift,
        };
        lastmile_backend_cpu_ref::kernels::add(
            lastmile_backend_cpu_ref::kernels::AddQuant {
                mult_a: m(q.m_a),
                mult_b: m(q.m_b),
                mult_out: m(q.m_o),
                zp_a: q.zp_a,
                zp_b: q.zp_b,
                zp_out: q.zp_o,
                lo: q.lo,
                hi: q.hi,
            },
            &a[main..len],
            &b[main..len],
            &mut out[main..],
        );
    }

    /// Packs the whole dword groups of one full panel (`lanes()` rows of `k` weights,
    /// consecutive in `src`) into `dst` (and `dst_lo` for Vnni16) in the layout of
    /// `crate::pack`; returns how many groups it wrote (the caller packs the rest).
    pub(crate) fn pack_panel(
        self,
        scheme: crate::pack::Scheme,
        src: lastmile_backend_cpu_ref::kernels::Weights<'_>,
        k: usize,
        dst: &mut [u8],
        dst_lo: &mut [u8],
    ) -> usize {
        use crate::pack::Scheme;
        use lastmile_backend_cpu_ref::kernels::Weights;
        let lanes = self.lanes();
        let (ptr, len, elem) = match src {
            Weights::I8(w) => (w.as_ptr() as *const u8, w.len(), 1),
            Weights::I16(w) => (w.as_ptr() as *const u8, w.len(), 2),
        };
        assert!(len >= lanes * k, "pack_panel: short source");
        let row_bytes = k * elem;
        if lanes * row_bytes >= 1 << 31 {
            return 0; // gather offsets are i32: leave it to the scalar path
        }
        let groups = match scheme {
            Scheme::Vnni8 | Scheme::Vnni16 => k / 4,
            Scheme::Madd8 => k / 4 * 2,
            Scheme::Madd16 => k / 2,
        };
        let out = groups * lanes * 4;
        assert!(dst.len() >= out, "pack_panel: short panel");
        let raw = pack::RawPack {
            src: ptr,
            row_bytes,
            groups,
            dst: dst.as_mut_ptr(),
            dst_lo: dst_lo.as_mut_ptr(),
        };
        // Each arm: the token proves the ISA; the source holds `lanes` rows of `row_bytes`
        // and the kernel reads only whole groups (`groups·G ≤ k` elements) of each; `dst`
        // (and `dst_lo`, checked in the Vnni16 arms) hold `groups·lanes·4` bytes; row
        // offsets fit i32 (checked above).
        match (self.isa, scheme, src) {
            (Isa::Avx512Vnni, Scheme::Vnni8, Weights::I8(_)) => {
                // SAFETY: see above.
                unsafe { pack::vnni8_zmm(raw) }
            }
            (Isa::AvxVnni, Scheme::Vnni8, Weights::I8(_)) => {
                // SAFETY: see above.
                unsafe { pack::vnni8_ymm(raw) }
            }
            (Isa::Avx512Vnni, Scheme::Vnni16, Weights::I16(_)) => {
                assert!(dst_lo.len() >= out, "pack_panel: short lo panel");
                // SAFETY: see above.
                unsafe { pack::vnni16_zmm(raw) }
            }
            (Isa::AvxVnni, Scheme::Vnni16, Weights::I16(_)) => {
                assert!(dst_lo.len() >= out, "pack_panel: short lo panel");
                // SAFETY: see above.
                unsafe { pack::vnni16_ymm(raw) }
            }
            (Isa::Avx2, Scheme::Madd8, Weights::I8(_)) => {
                // SAFETY: see above; `groups` is even.
                unsafe { pack::madd8_ymm(raw) }
            }
            (Isa::Avx2, Scheme::Madd16, Weights::I16(_)) => {
                // SAFETY: see above.
                unsafe { pack::madd16_ymm(raw) }
            }
            _ => return 0,
        }
        groups
    }

    /// `Σ bytes` of each of the `rows` rows of `a` (`stride` apart, first `len` bytes of
    /// each), as unsigned, appended to `out`.
    pub(crate) fn row_sums(
        self,
        a: &[u8],
        stride: usize,
        rows: usize,
        len: usize,
        out: &mut Vec<u64>,
    ) {
        assert!(len <= stride || rows == 0, "row_sums: len > stride");
        assert!(
            rows == 0 || (rows - 1) * stride + len <= a.len(),
            "row_sums: short input"
        );
        let start = out.len();
        out.resize(start + rows, 0);
        let (p, o) = (a.as_ptr(), out[start..].as_mut_ptr());
        match self.isa {
            // SAFETY: the token proves avx512f/bw; rows `r < rows` are `len` readable bytes
            // at `r·stride` (asserted above) and `out[start + r]` exists (resized).
            Isa::Avx512Vnni => unsafe { sums::sum_rows_u8_zmm(p, stride, rows, len, o) },
            // SAFETY: the token proves avx2; bounds as above.
            Isa::Avx2 | Isa::AvxVnni => unsafe { sums::sum_rows_u8_ymm(p, stride, rows, len, o) },
        }
    }

    /// Depthwise accumulators of a run of `pixels` output pixels sharing one tap list:
    /// `acc[p·c_pad + ch] = Σ_t (x[base0 + p·step + x_rel[t] + ch] − zp) · w[w_off[t] + ch]`
    /// for `ch < c`, wrapping `i32` (exact for ≤ 256 taps of 16-bit weights, any count of
    /// 8-bit ones). `c_pad = ⌈c/16⌉·16`; padding lanes of `acc` get unspecified values.
    #[allow(clippy::too_many_arguments)]
    pub(crate) fn depthwise(
        self,
        x: &[i8],
        base0: usize,
        step: usize,
        pixels: usize,
        x_rel: &[usize],
        w_off: &[usize],
        w: &[i32],
        c: usize,
        zp: i32,
        acc: &mut [i32],
    ) {
        let c_pad = c.div_ceil(16) * 16;
        assert_eq!(x_rel.len(), w_off.len(), "depthwise: tap lists differ");
        assert!(
            pixels.checked_mul(c_pad).is_some_and(|n| n <= acc.len()),
            "depthwise: acc"
        );
        if pixels == 0 {
            return;
        }
        // Origins grow with `p`, so the last pixel bounds every input read.
        let last = (pixels - 1)
            .checked_mul(step)
            .and_then(|o| o.checked_add(base0))
            .expect("depthwise: offsets overflow");
        for (&xr, &wo) in x_rel.iter().zip(w_off) {
            let end = last.checked_add(xr).and_then(|o| o.checked_add(c));
            assert!(end.is_some_and(|e| e <= x.len()), "depthwise: input");
            assert!(
                wo.checked_add(c_pad).is_some_and(|e| e <= w.len()),
                "depthwise: weights"
            );
        }
        let raw = dw::RawDw {
            x: x.as_ptr(),
            base0,
            step,
            pixels,
            x_rel: x_rel.as_ptr(),
            w_off: w_off.as_ptr(),
            taps: x_rel.len(),
            w: w.as_ptr(),
            c,
            c_pad,
            zp,
            acc: acc.as_mut_ptr(),
        };
        match self.isa {
            // SAFETY: the token proves avx512f/bw/vl; for every pixel and tap the input has
            // `c` readable codes and the weight row `c_pad` readable values, `acc` has
            // `pixels·c_pad` writable values (asserted above); both tap lists have `taps`
            // entries; `c_pad` is a multiple of 16 ≥ `c`.
            Isa::Avx512Vnni => unsafe { dw::dw_zmm(raw) },
            Isa::Avx2 | Isa::AvxVnni => {
                // SAFETY: the token proves avx2; the kernel touches channels below
                // `⌊c/8⌋·8 ≤ c ≤ c_pad`, inside the ranges asserted above.
                unsafe { dw::dw_ymm(raw) };
                for p in 0..pixels {
                    let xb = base0 + p * step;
                    for ch in c / 8 * 8..c {
                        let mut s = 0i32;
                        for (&xr, &wo) in x_rel.iter().zip(w_off) {
                            let xv = x[xb + xr + ch] as i32 - zp;
                            // Packed weights hold the code in the low 16 bits.
                            s = s.wrapping_add(xv.wrapping_mul(w[wo + ch] as i16 as i32));
                        }
                        acc[p * c_pad + ch] = s;
                    }
                }
            }
        }
    }
}

/// Where [`Token::depthwise3`] puts its results.
#[derive(Debug)]
pub(crate) enum Dw3Dst<'a> {
    /// `pixels × c_pad` raw accumulators `Σ (x − zp)·w` (wrapping `i32`; lanes `≥ c`
    /// unspecified).
    Acc(&'a mut [i32]),
    /// Requantized: pixel `p`'s `c` codes at `y[p·c ..]`, from `bias + Σ (x − zp)·w` with
    /// per-channel `mult`/`shift` (at least `c_pad` each; shifts of channels `< c` must be
    /// in `33..=62`, see `requant`).
    Codes {
        y: &'a mut [i8],
        bias: &'a [i32],
        mult: &'a [i32],
        shift: &'a [i32],
        q: Clamp,
    },
}

/// Per used kernel row of a [`Token::depthwise3`] run: offsets of the input row (from
/// the window origin), of its tap `kx = 0` weight row in `w`, and of its `Σ_kx w` row in
/// `wsum`.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Dw3Rows<'a> {
    pub x: &'a [usize],
    pub w: &'a [usize],
    pub sum: &'a [usize],
}

impl Token {
    /// Depthwise 3-wide run: `pixels` output pixels whose three kernel columns (`kw = 3`,
    /// column dilation 1, column stride `stride ∈ {1, 2}`) are all inside the image. With
    /// `S(p, ch) = Σ_r Σ_{kx<3} (x[base0 + p·stride·c + rows.x[r] + kx·c + ch] − zp) ·
    /// w16[rows.w[r] + kx·c_pad + ch]`, where `w16` is the low 16 bits of each packed
    /// weight (the high 16 must be zero) and `wsum[rows.sum[r] + ch]` must be
    /// `Σ_kx w16[rows.w[r] + kx·c_pad + ch]`: writes `S` (wrapping `i32`) or its
    /// requantization (see [`Dw3Dst`]). `c_pad = ⌈c/16⌉·16`.
    #[allow(clippy::too_many_arguments)]
    pub(crate) fn depthwise3(
        self,
        x: &[i8],
        base0: usize,
        stride: usize,
        pixels: usize,
        rows: Dw3Rows<'_>,
        w: &[i32],
        wsum: &[i32],
        c: usize,
        zp: i32,
        dst: Dw3Dst<'_>,
    ) {
        let c_pad = c.div_ceil(16) * 16;
        assert!(stride == 1 || stride == 2, "depthwise3: stride {stride}");
        assert!(
            rows.x.len() == rows.w.len() && rows.x.len() == rows.sum.len(),
            "depthwise3: row lists differ"
        );
        let out = match dst {
            Dw3Dst::Acc(acc) => {
                assert!(
                    pixels.checked_mul(c_pad).is_some_and(|n| n <= acc.len()),
                    "depthwise3: acc"
                );
                dw::Dw3Out::Acc(acc.as_mut_ptr())
            }
            Dw3Dst::Codes {
                y,
                bias,
                mult,
                shift,
                q,
            } => {
                assert!(
                    pixels.checked_mul(c).is_some_and(|n| n <= y.len()),
                    "depthwise3: output"
                );
                assert!(
                    bias.len() >= c_pad && mult.len() >= c_pad && shift.len() >= c_pad,
                    "depthwise3: requantization tables"
                );
                assert!(
                    shift[..c].iter().all(|s| (33..=62).contains(s)),
                    "depthwise3: shift outside 33..=62"
                );
                dw::Dw3Out::Codes {
                    y: y.as_mut_ptr(),
                    bias: bias.as_ptr(),
                    mult: mult.as_ptr(),
                    shift: shift.as_ptr(),
                    q,
                }
            }
        };
        if pixels == 0 || c == 0 {
            return;
        }
        let step = stride * c;
        // Origins grow with `p`, so the last pixel bounds every input read.
        let last = (pixels - 1)
            .checked_mul(step)
            .and_then(|o| o.checked_add(base0))
            .expect("depthwise3: offsets overflow");
        for ((&ro, &wo), &so) in rows.x.iter().zip(rows.w).zip(rows.sum) {
            let end = last.checked_add(ro).and_then(|o| o.checked_add(3 * c));
            assert!(end.is_some_and(|e| e <= x.len()), "depthwise3: input");
            assert!(
                wo.checked_add(3 * c_pad).is_some_and(|e| e <= w.len()),
                "depthwise3: weights"
            );
            assert!(
                so.checked_add(c_pad).is_some_and(|e| e <= wsum.len()),
                "depthwise3: weight sums"
            );
        }
        let raw = dw::RawDw3 {
            x: x.as_ptr(),
            base0,
            step,
            pixels,
            row_off: rows.x.as_ptr(),
            w_off: rows.w.as_ptr(),
            sum_off: rows.sum.as_ptr(),
            wsum: wsum.as_ptr(),
            rows: rows.x.len(),
            w: w.as_ptr(),
            c,
            c_pad,
            zp,
            out,
        };
        // Each arm: `step == stride·c` with stride 1 or 2; for every pixel and used row
        // the input has `3·c` readable codes from the window origin, the weights `3·c_pad`
        // values from the row's offset and the sums `c_pad`; the destination holds
        // `pixels·c_pad` values (Acc) or `pixels·c` codes with `c_pad`-long tables and
        // shifts in 33..=62 for channels `< c` (Codes) (asserted above); the three tables
        // have `rows` entries; `c_pad` is a multiple of 16 ≥ `c`.
        match self.isa {
            // SAFETY: see above; the token proves avx512f/bw/vl/vnni.
            Isa::Avx512Vnni => unsafe { dw::dw3_zmm(raw, stride) },
            // SAFETY: see above; the token proves avx2 and avxvnni.
            Isa::AvxVnni => unsafe { dw::dw3_ymm_vnni(raw, stride) },
            // SAFETY: see above; the token proves avx2.
            Isa::Avx2 => unsafe { dw::dw3_ymm(raw, stride) },
        }
    }
}

/// Safe code compiled with a tier's features: the gathers of `crate::gather` and the
/// weight sums of `crate::pack` (plain Rust, auto-vectorized to the tier's width). Being `#[target_feature]` functions,
/// they may only be called once the features are known present — by [`Token`].
mod autovec {
    use crate::gather::{Rows, gather_i16, gather_u8};

    macro_rules! tramp {
        ($u8:ident, $i16:ident, $f:literal) => {
            #[target_feature(enable = $f)]
            pub(super) fn $u8(
                rows: &Rows,
                x: &[i8],
                m0: usize,
                count: usize,
                zp: i32,
                stride: usize,
                dst: &mut [u8],
            ) {
                gather_u8(rows, x, m0, count, zp, stride, dst)
            }

            #[target_feature(enable = $f)]
            pub(super) fn $i16(
                rows: &Rows,
                x: &[i8],
                m0: usize,
                count: usize,
                zp: i32,
                stride: usize,
                dst: &mut [i16],
            ) {
                gather_i16(rows, x, m0, count, zp, stride, dst)
            }
        };
    }
    tramp!(gather_u8_zmm, gather_i16_zmm, "avx512f,avx512bw,avx512vl");
    tramp!(gather_u8_ymm, gather_i16_ymm, "avx2");

    macro_rules! sums {
        ($s8:ident, $s16:ident, $f:literal) => {
            #[target_feature(enable = $f)]
            pub(super) fn $s8(w: &[i8], k: usize, out: &mut [i64]) {
                crate::pack::sums_i8(w, k, out)
            }

            #[target_feature(enable = $f)]
            pub(super) fn $s16(
                w: &[i16],
                k: usize,
                hi: &mut [i64],
                lo: &mut [i64],
                abs: &mut [i64],
            ) {
                crate::pack::sums_hilo(w, k, hi, lo, abs)
            }
        };
    }
    sums!(sums_i8_zmm, sums_hilo_zmm, "avx512f,avx512bw,avx512vl");
    sums!(sums_i8_ymm, sums_hilo_ymm, "avx2");
}

impl Token {
    /// `crate::pack::sums_i8` compiled for this tier.
    pub(crate) fn sums_i8(self, w: &[i8], k: usize, out: &mut [i64]) {
        match self.isa {
            // SAFETY: the token proves avx512f/bw/vl; the callee is safe code.
            Isa::Avx512Vnni => unsafe { autovec::sums_i8_zmm(w, k, out) },
            // SAFETY: the token proves avx2; the callee is safe code.
            Isa::Avx2 | Isa::AvxVnni => unsafe { autovec::sums_i8_ymm(w, k, out) },
        }
    }

    /// `crate::pack::sums_hilo` compiled for this tier.
    pub(crate) fn sums_hilo(
        self,
        w: &[i16],
        k: usize,
        hi: &mut [i64],
        lo: &mut [i64],
        abs: &mut [i64],
    ) {
        match self.isa {
            // SAFETY: the token proves avx512f/bw/vl; the callee is safe code.
            Isa::Avx512Vnni => unsafe { autovec::sums_hilo_zmm(w, k, hi, lo, abs) },
            // SAFETY: the token proves avx2; the callee is safe code.
            Isa::Avx2 | Isa::AvxVnni => unsafe { autovec::sums_hilo_ymm(w, k, hi, lo, abs) },
        }
    }

    /// `crate::gather::gather_u8` compiled for this tier.
    #[allow(clippy::too_many_arguments)]
    pub(crate) fn gather_u8(
        self,
        rows: &crate::gather::Rows,
        x: &[i8],
        m0: usize,
        count: usize,
        zp: i32,
        stride: usize,
        dst: &mut [u8],
    ) {
        match self.isa {
            // SAFETY: the token proves avx512f/bw/vl; the callee is safe code.
            Isa::Avx512Vnni => unsafe {
                autovec::gather_u8_zmm(rows, x, m0, count, zp, stride, dst)
            },
            // SAFETY: the token proves avx2; the callee is safe code.
            Isa::Avx2 | Isa::AvxVnni => unsafe {
                autovec::gather_u8_ymm(rows, x, m0, count, zp, stride, dst)
            },
        }
    }

    /// `crate::gather::gather_i16` compiled for this tier.
    #[allow(clippy::too_many_arguments)]
    pub(crate) fn gather_i16(
        self,
        rows: &crate::gather::Rows,
        x: &[i8],
        m0: usize,
        count: usize,
        zp: i32,
        stride: usize,
        dst: &mut [i16],
    ) {
        match self.isa {
            // SAFETY: the token proves avx512f/bw/vl; the callee is safe code.
            Isa::Avx512Vnni => unsafe {
                autovec::gather_i16_zmm(rows, x, m0, count, zp, stride, dst)
            },
            // SAFETY: the token proves avx2; the callee is safe code.
            Isa::Avx2 | Isa::AvxVnni => unsafe {
                autovec::gather_i16_ymm(rows, x, m0, count, zp, stride, dst)
            },
        }
    }
}

/// A zero-initialised byte buffer aligned to 64 bytes (one cache line, one `zmm`), so
/// packed weight panels and activation rows start on a line.
#[derive(Clone, Debug, Default)]
pub(crate) struct AlignedBytes {
    blocks: Vec<Block>,
    len: usize,
}

#[repr(C, align(64))]
#[derive(Clone, Copy, Debug)]
struct Block([u8; 64]);

impl AlignedBytes {
    /// `len` zero bytes.
    pub(crate) fn zeroed(len: usize) -> Self {
        AlignedBytes {
            blocks: vec![Block([0; 64]); len.div_ceil(64)],
            len,
        }
    }

    /// Makes the buffer at least `len` bytes long (contents unspecified but initialized).
    pub(crate) fn ensure(&mut self, len: usize) {
        if self.len < len {
            *self = AlignedBytes::zeroed(len);
        }
    }

    /// The bytes.
    pub(crate) fn as_slice(&self) -> &[u8] {
        // SAFETY: `blocks` owns `64·blocks.len() ≥ len` initialized bytes (every `Block` is
        // a `[u8; 64]`, `#[repr(C)]` without padding), contiguous in the `Vec`; `u8` has
        // alignment 1; the borrow of `self` keeps them alive and unaliased by writers.
        unsafe { core::slice::from_raw_parts(self.blocks.as_ptr() as *const u8, self.len) }
    }

    /// The bytes, mutably.
    pub(crate) fn as_mut_slice(&mut self) -> &mut [u8] {
        // SAFETY: as in `as_slice`; the `&mut self` borrow makes this the only reference.
        unsafe { core::slice::from_raw_parts_mut(self.blocks.as_mut_ptr() as *mut u8, self.len) }
    }

    /// The first `2·⌊len/2⌋` bytes as `i16` (native endianness).
    pub(crate) fn as_mut_i16(&mut self) -> &mut [i16] {
        // SAFETY: the storage is 64-byte aligned (≥ align of i16), holds `len` initialized
        // bytes, and every bit pattern is a valid `i16`; `&mut self` makes it unique.
        unsafe {
            core::slice::from_raw_parts_mut(self.blocks.as_mut_ptr() as *mut i16, self.len / 2)
        }
    }
}
