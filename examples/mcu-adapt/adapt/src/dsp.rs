//! A Cortex-M DSP-extension kernel path: conv2d and linear on `SMLAD` (two 16×16-bit
//! multiply-accumulates per instruction), plugged into cpu-ref's executor as a kernel table,
//! so every other op and the requantization stay the reference's.
//!
//! Both widths go through one path: inputs become `x − zp` (|·| ≤ 255) and weights are
//! sign-extended to 16 bits (16w8a weights already are), packed two per 32-bit word in the
//! order of the reference's dot product (OHWI taps, `C_in` innermost; padded taps are real
//! zero). `SMLAD` then adds two products per instruction to an `i32`.
//!
//! **Exactness.** A product is at most `255 · 32 767 = 8 355 585` in magnitude, so 256 of
//! them (128 words) stay below `2^31 − 1` (`128 · 2 · 8 355 585 = 2 138 941 440`): the `i32`
//! accumulator is flushed into an `i64` every 128 words and never wraps (nor sets the Q flag).
//! The sum is therefore the reference's `i64` sum exactly, and the same
//! `QuantMultiplier::requantize` finishes it. Weights are packed once per forward for
//! trainable nodes (`refresh`) and once at prepare time for frozen ones.
//!
//! On `thumbv7em-none-eabihf` `SMLAD` is inline `asm!` (the `__smlad` intrinsic is unstable on
//! Rust 1.95); elsewhere a portable function with the same semantics runs, so the host tests
//! check the packing and the blocking against the reference too.

use alloc::boxed::Box;
use alloc::vec::Vec;

use lastmile_backend_cpu_ref::exec::{ConvArgs, Executor, KernelTable, LinearArgs, NodeInfo};
use lastmile_backend_cpu_ref::kernels::DotQuant;
use lastmile_core::backend::{Backend, BackendError, Capabilities, PreparedModel};
use lastmile_core::model::{QData, QParam, QuantModel};

/// Words (two products each) summed in `i32` before flushing to `i64` (see the module docs).
pub const BLOCK_WORDS: usize = 128;

/// `acc + lo(a)·lo(b) + hi(a)·hi(b)`, halves as signed 16-bit: the `SMLAD` instruction.
#[cfg(all(target_arch = "arm", target_os = "none"))]
#[inline(always)]
#[allow(unsafe_code)]
pub fn smlad(a: u32, b: u32, acc: i32) -> i32 {
    let r: i32;
    // SAFETY: SMLAD only reads three registers and writes one (and the sticky Q flag, which
    // nothing reads); it exists on every ARMv7E-M core (the DSP extension is part of
    // thumbv7em). No memory is touched.
    unsafe {
        core::arch::asm!(
            "smlad {r}, {a}, {b}, {c}",
            r = lateout(reg) r,
            a = in(reg) a,
            b = in(reg) b,
            c = in(reg) acc,
            options(pure, nomem, nostack, preserves_flags)
        );
    }
    r
}

/// `acc + lo(a)·lo(b) + hi(a)·hi(b)`, halves as signed 16-bit: the `SMLAD` instruction.
#[cfg(not(all(target_arch = "arm", target_os = "none")))]
#[inline(always)]
pub fn smlad(a: u32, b: u32, acc: i32) -> i32 {
    let lo = |v: u32| v as u16 as i16 as i32;
    let hi = |v: u32| (v >> 16) as u16 as i16 as i32;
    acc.wrapping_add(lo(a) * lo(b)).wrapping_add(hi(a) * hi(b))
}

fn pack(lo: i32, hi: i32) -> u32 {
    (lo as i16 as u16 as u32) | ((hi as i16 as u16 as u32) << 16)
}

/// Packs `values` (each fits `i16`) two per word; an odd tail is paired with zero.
fn pack_into(values: impl Iterator<Item = i32>, out: &mut Vec<u32>) {
    let mut pending: Option<i32> = None;
    for v in values {
        match pending.take() {
            None => pending = Some(v),
            Some(lo) => out.push(pack(lo, v)),
        }
    }
    if let Some(lo) = pending {
        out.push(pack(lo, 0));
    }
}

/// Σ over packed words, exactly (see the module docs for the bound).
#[inline]
pub fn dot(x: &[u32], w: &[u32]) -> i64 {
    let mut total = 0i64;
    for (xb, wb) in x.chunks(BLOCK_WORDS).zip(w.chunks(BLOCK_WORDS)) {
        let mut acc = 0i32;
        for (&a, &b) in xb.iter().zip(wb) {
            acc = smlad(a, b, acc);
        }
        total += i64::from(acc);
    }
    total
}

/// Per node: the weights packed, one row of `words` per output channel.
#[derive(Debug, Default)]
pub struct Packed {
    rows: Vec<u32>,
    words: usize,
}

impl Packed {
    fn fill(&mut self, info: &NodeInfo<'_>, params: &[QParam]) {
        let Some((w, _)) = info.dot_params() else {
            return;
        };
        let p = &params[w];
        let c_out = p.spec.shape.first().copied().unwrap_or(1).max(1);
        let k = p.data.len() / c_out;
        self.words = k.div_ceil(2);
        self.rows.clear();
        for c in 0..c_out {
            let r = c * k..(c + 1) * k;
            match &p.data {
                QData::I8(v) => pack_into(v[r].iter().map(|&x| i32::from(x)), &mut self.rows),
                QData::I16(v) => pack_into(v[r].iter().map(|&x| i32::from(x)), &mut self.rows),
                QData::I32(_) => {}
            }
        }
    }
}

/// The kernel table: conv2d (groups = 1) and linear on `SMLAD`, the rest the reference's.
#[derive(Clone, Copy, Debug, Default)]
pub struct Table;

fn finish(q: &DotQuant<'_>, bias: Option<&[i32]>, c: usize, sum: i64) -> i8 {
    let acc = bias.map_or(0, |b| i64::from(b[c])) + sum;
    q.multipliers[c].requantize(acc, q.zp_out, q.lo, q.hi)
}

impl KernelTable for Table {
    type NodeState = Packed;
    /// The packed input row (`x − zp` of one sample or one im2col patch).
    type Scratch = Vec<u32>;

    fn prepare_node(
        &self,
        info: NodeInfo<'_>,
        params: &[QParam],
        _scratch: &mut Vec<u32>,
    ) -> Result<Packed, BackendError> {
        let mut p = Packed::default();
        p.fill(&info, params);
        Ok(p)
    }

    fn refresh(
        &self,
        info: NodeInfo<'_>,
        state: &mut Packed,
        params: &[QParam],
        _scratch: &mut Vec<u32>,
    ) -> Result<(), BackendError> {
        state.fill(&info, params);
        Ok(())
    }

    fn conv2d(
        &self,
        state: &mut Packed,
        row: &mut Vec<u32>,
        a: &ConvArgs<'_>,
        y: &mut [i8],
    ) -> Result<(), BackendError> {
        if a.attrs.groups != 1 {
            a.reference(y); // grouped / depthwise: no long dot products to pair up
            return Ok(());
        }
        let (h, w, c_in) = (a.in_shape[0], a.in_shape[1], a.in_shape[2]);
        let (ho, wo, c_out) = (a.out_shape[0], a.out_shape[1], a.out_shape[2]);
        let (kh, kw) = (a.w_shape[1], a.w_shape[2]);
        let [sh, sw] = a.attrs.stride;
        let [dh, dw] = a.attrs.dilation;
        let (pt, pl) = (a.attrs.padding[0], a.attrs.padding[1]);
        let zp = a.q.zp_in;
        let tap = |o: usize, k: usize, s: usize, d: usize, p: usize, size: usize| {
            (o * s + k * d).checked_sub(p).filter(|&i| i < size)
        };
        for s in 0..a.n {
            for oy in 0..ho {
                for ox in 0..wo {
                    row.clear();
                    let taps = (0..kh).flat_map(|ky| (0..kw).map(move |kx| (ky, kx)));
                    let x = a.x;
                    pack_into(
                        taps.flat_map(|(ky, kx)| {
                            let at = tap(oy, ky, sh, dh, pt, h)
                                .zip(tap(ox, kx, sw, dw, pl, w))
                                .map(|(iy, ix)| ((s * h + iy) * w + ix) * c_in);
                            (0..c_in).map(move |ci| at.map_or(0, |b| i32::from(x[b + ci]) - zp))
                        }),
                        row,
                    );
                    let out = ((s * ho + oy) * wo + ox) * c_out;
                    for c in 0..c_out {
                        let wr = &state.rows[c * state.words..(c + 1) * state.words];
                        y[out + c] = finish(&a.q, a.bias, c, dot(row, wr));
                    }
                }
            }
        }
        Ok(())
    }

    fn linear(
        &self,
        state: &mut Packed,
        row: &mut Vec<u32>,
        a: &LinearArgs<'_>,
        y: &mut [i8],
    ) -> Result<(), BackendError> {
        let zp = a.q.zp_in;
        for s in 0..a.n {
            row.clear();
            let xs = &a.x[s * a.f..(s + 1) * a.f];
            pack_into(xs.iter().map(|&v| i32::from(v) - zp), row);
            for c in 0..a.out {
                let wr = &state.rows[c * state.words..(c + 1) * state.words];
                y[s * a.out + c] = finish(&a.q, a.bias, c, dot(row, wr));
            }
        }
        Ok(())
    }
}

/// The backend: cpu-ref's executor with [`Table`].
#[derive(Clone, Copy, Debug, Default)]
pub struct CortexMDsp;

impl Backend for CortexMDsp {
    fn name(&self) -> &str {
        "cortex-m-dsp"
    }

    fn tier(&self) -> &str {
        if cfg!(all(target_arch = "arm", target_os = "none")) {
            "smlad"
        } else {
            "smlad-portable"
        }
    }

    fn capabilities(&self) -> Capabilities {
        lastmile_backend_cpu_ref::CpuRef.capabilities()
    }

    fn prepare(&self, model: &QuantModel) -> Result<Box<dyn PreparedModel>, BackendError> {
        Ok(Box::new(Executor::new(Table, model)?))
    }
}

/// Runs `model` on `input` (`n` samples, in chunks of `chunk`) with cpu-ref and with
/// [`CortexMDsp`]; returns the number of output codes compared, or the first mismatch.
pub fn compare_with_reference(
    model: &QuantModel,
    input: &[i8],
    n: usize,
    chunk: usize,
) -> Result<usize, alloc::string::String> {
    let mut r = lastmile_backend_cpu_ref::CpuRef
        .prepare(model)
        .map_err(|e| alloc::format!("cpu-ref: {e}"))?;
    let mut d = CortexMDsp
        .prepare(model)
        .map_err(|e| alloc::format!("cortex-m-dsp: {e}"))?;
    let sample = input.len() / n.max(1);
    let (mut yr, mut yd) = (Vec::new(), Vec::new());
    let mut compared = 0;
    let mut start = 0;
    while start < n {
        let end = (start + chunk.max(1)).min(n);
        let x = &input[start * sample..end * sample];
        r.forward(&model.params, x, end - start, &mut yr)
            .map_err(|e| alloc::format!("cpu-ref forward: {e}"))?;
        d.forward(&model.params, x, end - start, &mut yd)
            .map_err(|e| alloc::format!("cortex-m-dsp forward: {e}"))?;
        if let Some(i) = (0..yr.len()).find(|&i| yr[i] != yd[i]) {
            return Err(alloc::format!(
                "cortex-m-dsp differs from cpu-ref on samples {start}..{end}, output code {i}: \
                 {} vs {}",
                yd[i],
                yr[i]
            ));
        }
        compared += yr.len();
        start = end;
    }
    Ok(compared)
}

#[cfg(test)]
mod tests {
    use super::*;
    use alloc::vec;

    #[test]
    fn smlad_semantics_and_block_bound() {
        assert_eq!(smlad(pack(3, -4), pack(5, 6), 10), 10 + 15 - 24);
        assert_eq!(smlad(pack(-32768, 0), pack(-32768, 0), 0), 1 << 30);
        // The worst block: 128 words of 255 · (−32767), twice per word, stays exact.
        let x = vec![pack(255, 255); 3 * BLOCK_WORDS + 5];
        let w = vec![pack(-32767, -32767); 3 * BLOCK_WORDS + 5];
        assert_eq!(
            dot(&x, &w),
            -(255 * 32767) * 2 * (3 * BLOCK_WORDS as i64 + 5)
        );
    }

    /// digits-cnn (conv 3×3 pad 1 with K = 9: an odd tail; conv 3×3 stride 2; linear 256)
    /// at both widths, on pseudo-random inputs: every output code equals cpu-ref's.
    #[test]
    fn bit_exact_with_cpu_ref_on_digits_cnn() {
        use lastmile_core::quant::WeightBits;
        use lastmile_core::{ptq, zoo};
        let (t, specs) = zoo::digits_cnn(10);
        let float = zoo::init_float(t, specs, 3);
        let mut state = 0x2545_f491_4f6c_dd1du64;
        let mut next = move || {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            state
        };
        let n = 37;
        let xf: Vec<f32> = (0..n * 64)
            .map(|_| (next() % 1000) as f32 / 999.0)
            .collect();
        for bits in [WeightBits::W8, WeightBits::W16] {
            let (q, _) = ptq::quantize(&float, &xf, n, bits).unwrap();
            let x: Vec<i8> = (0..n * 64).map(|_| next() as i8).collect();
            assert_eq!(compare_with_reference(&q, &x, n, 16).unwrap(), n * 10);
        }
    }
}
