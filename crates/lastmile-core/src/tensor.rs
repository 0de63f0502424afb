//! Batched tensors passed to and from backends.

use alloc::vec::Vec;

use crate::quant::ActQuant;

/// A batch of int8 activations: `n` samples of a per-sample shape, NHWC, contiguous.
#[derive(Clone, Debug, PartialEq)]
pub struct QTensor {
    /// Batch size.
    pub n: usize,
    /// Per-sample shape.
    pub shape: Vec<usize>,
    /// `n · Π shape` codes.
    pub data: Vec<i8>,
    /// Quantization of every element.
    pub quant: ActQuant,
}

impl QTensor {
    /// Quantizes float samples (`n · Π shape` values) with `quant`.
    pub fn quantize(n: usize, shape: &[usize], values: &[f32], quant: ActQuant) -> Self {
        debug_assert_eq!(values.len(), n * shape.iter().product::<usize>());
        QTensor {
            n,
            shape: shape.to_vec(),
            data: values.iter().map(|&v| quant.quantize(v)).collect(),
            quant,
        }
    }

    /// Elements per sample.
    pub fn sample_len(&self) -> usize {
        self.shape.iter().product()
    }

    /// Codes of sample `i`.
    pub fn sample(&self, i: usize) -> &[i8] {
        let l = self.sample_len();
        &self.data[i * l..(i + 1) * l]
    }

    /// Dequantized values.
    pub fn dequantize(&self) -> Vec<f32> {
        self.data
            .iter()
            .map(|&q| self.quant.dequantize(q))
            .collect()
    }
}
