//! Shared helpers for the `format_*` tests: a small model, and a way to take a model file
//! apart and put it back together (so corruptions are precise, not just random byte flips).
//!
//! Included by the other `format_*.rs` tests with `#[path = "format_common.rs"] mod common;`
//! (compiled on its own, as cargo does with every file in `tests/`, it has no tests).
#![allow(dead_code)]

use std::borrow::Cow;
use std::collections::BTreeMap;
use std::path::PathBuf;

use lastmile_core::format::{self, keys};
use lastmile_core::graph::{Pool2d, TopologyBuilder};
use lastmile_core::model::{FloatModel, FloatParam, Metadata};
use lastmile_core::{Activation, Op, QuantModel, ValueId, WeightBits, ptq};
use safetensors::tensor::{Dtype, View};
use serde_json::Value;

/// A deterministic 64-bit LCG (the same sequence on every target).
#[derive(Debug)]
pub struct Lcg(pub u64);

impl Lcg {
    pub fn next_u64(&mut self) -> u64 {
        self.0 = self
            .0
            .wrapping_mul(6_364_136_223_846_793_005)
            .wrapping_add(1_442_695_040_888_963_407);
        self.0 >> 11
    }
    pub fn unit(&mut self) -> f32 {
        (self.next_u64() >> 29) as f32 / (1u64 << 24) as f32
    }
    pub fn signed(&mut self) -> f32 {
        2.0 * self.unit() - 1.0
    }
    pub fn below(&mut self, n: usize) -> usize {
        (self.next_u64() % n as u64) as usize
    }
}

/// input [8,8,1] → conv 3x3 pad 1 relu (4 ch) → maxpool 2 → flatten → linear 64→10.
/// The fc layer is trainable, the conv frozen.
pub fn float_model() -> FloatModel {
    let mut b = TopologyBuilder::new(&[8, 8, 1]);
    let c1 = b.conv2d(
        "conv1",
        ValueId::INPUT,
        1,
        4,
        [3, 3],
        [1, 1],
        [1, 1, 1, 1],
        1,
        Activation::Relu,
    );
    let p = b.node(
        "pool",
        Op::MaxPool(Pool2d {
            kernel: [2, 2],
            stride: [2, 2],
            padding: [0; 4],
        }),
        &[c1],
    );
    let f = b.node("flatten", Op::Flatten, &[p]);
    b.linear("fc", f, 64, 10, Activation::None);
    let (topology, specs) = b.finish();
    let mut rng = Lcg(42);
    let params = specs
        .into_iter()
        .map(|mut spec| {
            spec.trainable = spec.name.starts_with("fc");
            let scale = if spec.name.ends_with("bias") {
                0.1
            } else {
                0.5
            };
            let data = (0..spec.numel()).map(|_| scale * rng.signed()).collect();
            FloatParam { spec, data }
        })
        .collect();
    let mut metadata = Metadata::new();
    metadata.insert("name".into(), "tiny-cnn".into());
    metadata.insert("classes".into(), "0,1,2,3,4,5,6,7,8,9".into());
    metadata.insert("note".into(), "unicode ✓ and \"quotes\"\n".into());
    FloatModel {
        topology,
        params,
        metadata,
    }
}

/// `float_model()` quantized with PTQ on 16 LCG samples; fc trainable.
pub fn quant_model(bits: WeightBits) -> QuantModel {
    let fm = float_model();
    let mut rng = Lcg(7);
    let n = 16;
    let calib: Vec<f32> = (0..n * 64).map(|_| rng.unit()).collect();
    let (mut q, _report) = ptq::quantize(&fm, &calib, n, bits).expect("ptq");
    q.set_trainable(|s| s.name.starts_with("fc"));
    q
}

/// A fresh, empty directory under cargo's per-target temp dir.
pub fn temp_dir(tag: &str) -> PathBuf {
    let d = PathBuf::from(env!("CARGO_TARGET_TMPDIR"))
        .join(format!("lastmile-format-{tag}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&d);
    std::fs::create_dir_all(&d).unwrap();
    d
}

/// One tensor of a taken-apart file.
#[derive(Clone, Debug, PartialEq)]
pub struct Tensor {
    pub dtype: Dtype,
    pub shape: Vec<usize>,
    pub data: Vec<u8>,
}

impl View for &Tensor {
    fn dtype(&self) -> Dtype {
        self.dtype
    }
    fn shape(&self) -> &[usize] {
        &self.shape
    }
    fn data(&self) -> Cow<'_, [u8]> {
        Cow::Borrowed(&self.data)
    }
    fn data_len(&self) -> usize {
        self.data.len()
    }
}

/// A model file taken apart: the `__metadata__` map and the tensors by name.
#[derive(Clone, Debug)]
pub struct Parts {
    pub meta: BTreeMap<String, String>,
    pub tensors: BTreeMap<String, Tensor>,
}

impl Parts {
    /// Splits a valid file using our own parse of the 8-byte length and the JSON header.
    pub fn parse(bytes: &[u8]) -> Parts {
        let (header, data) = split_raw(bytes);
        let mut meta = BTreeMap::new();
        let mut tensors = BTreeMap::new();
        for (k, v) in header.as_object().unwrap() {
            if k == "__metadata__" {
                for (mk, mv) in v.as_object().unwrap() {
                    meta.insert(mk.clone(), mv.as_str().unwrap().to_string());
                }
                continue;
            }
            let dtype: Dtype = serde_json::from_value(v["dtype"].clone()).unwrap();
            let shape: Vec<usize> = serde_json::from_value(v["shape"].clone()).unwrap();
            let s = v["data_offsets"][0].as_u64().unwrap() as usize;
            let e = v["data_offsets"][1].as_u64().unwrap() as usize;
            tensors.insert(
                k.clone(),
                Tensor {
                    dtype,
                    shape,
                    data: data[s..e].to_vec(),
                },
            );
        }
        Parts { meta, tensors }
    }

    /// Re-serializes with the reference `safetensors::serialize` (no `__metadata__` at all if
    /// `meta` is empty).
    pub fn to_bytes(&self) -> Vec<u8> {
        let meta = (!self.meta.is_empty()).then(|| self.meta.clone().into_iter().collect());
        safetensors::serialize(self.tensors.iter().map(|(k, v)| (k.clone(), v)), meta).unwrap()
    }

    /// The graph header as JSON.
    pub fn graph(&self) -> Value {
        serde_json::from_str(&self.meta[keys::GRAPH]).unwrap()
    }

    pub fn set_graph(&mut self, g: &Value) {
        self.meta
            .insert(keys::GRAPH.into(), serde_json::to_string(g).unwrap());
    }

    /// Edits the graph header JSON in place.
    pub fn edit_graph(&mut self, f: impl FnOnce(&mut Value)) {
        let mut g = self.graph();
        f(&mut g);
        self.set_graph(&g);
    }

    /// Recomputes `lastmile.crc32` the documented way: parameters in spec order, then the
    /// scales of the weights in spec order. Missing tensors are skipped.
    pub fn fix_crc(&mut self) {
        let g = self.graph();
        let mut h = crc32fast::Hasher::new();
        let params = g["params"].as_array().unwrap();
        for p in params {
            if let Some(t) = self.tensors.get(p["name"].as_str().unwrap()) {
                h.update(&t.data);
            }
        }
        if self.meta[keys::KIND] == "quantized" {
            for p in params.iter().filter(|p| p["role"] == "weight") {
                if let Some(t) = self.tensors.get(&format!(
                    "{}{}",
                    p["name"].as_str().unwrap(),
                    format::SCALES_SUFFIX
                )) {
                    h.update(&t.data);
                }
            }
        }
        self.meta
            .insert(keys::CRC32.into(), format!("{:08x}", h.finalize()));
    }
}

/// The JSON header and the data section of a safetensors file.
pub fn split_raw(bytes: &[u8]) -> (Value, Vec<u8>) {
    let n = u64::from_le_bytes(bytes[..8].try_into().unwrap()) as usize;
    let header: Value = serde_json::from_slice(&bytes[8..8 + n]).unwrap();
    (header, bytes[8 + n..].to_vec())
}

/// Builds a file from a raw header string and data (the header is padded to 8 bytes).
pub fn join_raw(header: &str, data: &[u8]) -> Vec<u8> {
    let mut h = header.as_bytes().to_vec();
    h.resize(h.len().next_multiple_of(8), b' ');
    let mut out = (h.len() as u64).to_le_bytes().to_vec();
    out.extend_from_slice(&h);
    out.extend_from_slice(data);
    out
}
