//! The versioned model file format (specified in `docs/model-format.md`).
//!
//! One file (extension [`FILE_EXTENSION`], `.lmm`) holds either a [`QuantModel`] or a
//! [`FloatModel`] in a [safetensors](https://github.com/huggingface/safetensors) container, so
//! any safetensors tool can list and read the tensors:
//!
//! * every parameter is a tensor named by its [`ParamSpec::name`]: `I8` / `I16` weights and
//!   `I32` biases in a quantized model, `F32` everything in a float model;
//! * quantized weights carry their per-output-channel scales in an extra `F32` tensor
//!   `<name>.__scales` (see [`SCALES_SUFFIX`]);
//! * the safetensors `__metadata__` map holds the format name and version, the kind, the
//!   graph header (topology, weight width, activation quantization, ordered parameter specs)
//!   as JSON, the free-form metadata as JSON, and a CRC-32 of all tensor bytes (see [`keys`]).
//!
//! Reading never panics: every problem is a [`FormatError`] naming the field that is wrong
//! and what was expected, and a model is only returned after `validate()` accepted it, so
//! nothing downstream can trip over inconsistent shapes. Writing validates too: a model that
//! could not be read back is never written. With the `std` feature, [`save_quant`] and
//! [`save_float`] replace files atomically.

use alloc::collections::{BTreeMap, BTreeSet};
use alloc::format;
use alloc::string::{String, ToString};
use alloc::vec;
use alloc::vec::Vec;
use core::fmt;

use safetensors::tensor::{Dtype, SafeTensorError, SafeTensors};
use serde::ser::SerializeMap;
use serde::{Deserialize, Serialize};

use crate::graph::{GraphError, ParamRole, ParamSpec, Topology};
use crate::model::{FloatModel, FloatParam, Metadata, QData, QParam, QuantModel};
use crate::quant::{ActQuant, WeightBits};

/// The format version this build writes, and the only one it reads.
pub const FORMAT_VERSION: u32 = 1;

/// File name extension of lastmile model files, without the dot: `model.lmm`
/// ("lastmile model"). Readers do not check it; it is a convention for humans and the CLI.
pub const FILE_EXTENSION: &str = "lmm";

/// Value of the [`keys::FORMAT`] metadata entry.
pub const FORMAT_NAME: &str = "lastmile-model";

/// Suffix of the tensor holding a quantized weight's per-channel scales: `conv1.weight.__scales`.
pub const SCALES_SUFFIX: &str = ".__scales";

/// Largest safetensors JSON header accepted (the limit of the reference safetensors reader).
pub const MAX_HEADER_BYTES: usize = 100_000_000;

/// Keys of the safetensors `__metadata__` map.
pub mod keys {
    /// Always [`super::FORMAT_NAME`].
    pub const FORMAT: &str = "lastmile.format";
    /// Decimal [`super::FORMAT_VERSION`].
    pub const FORMAT_VERSION: &str = "lastmile.format_version";
    /// `"quantized"` or `"float"`.
    pub const KIND: &str = "lastmile.kind";
    /// JSON graph header: topology, weight width, activation quantization, parameter specs.
    pub const GRAPH: &str = "lastmile.graph";
    /// JSON object of the model's free-form string metadata.
    pub const METADATA: &str = "lastmile.metadata";
    /// CRC-32 (IEEE) of all tensor bytes, 8 lowercase hex digits.
    pub const CRC32: &str = "lastmile.crc32";
    /// Every key of version 1; other `lastmile.` keys are rejected.
    pub const ALL: [&str; 6] = [FORMAT, FORMAT_VERSION, KIND, GRAPH, METADATA, CRC32];
}

/// The safetensors key of the string → string metadata map.
const ST_METADATA: &str = "__metadata__";

/// What went wrong while reading or writing a model file.
///
/// Displayed as `<file>: <field>: <message>` (without `<file>: ` when there is no file).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct FormatError {
    /// The file, when the bytes came from (or were going to) disk.
    pub file: Option<String>,
    /// What is wrong, as a path into the file: `header length`, `safetensors header`,
    /// `__metadata__."lastmile.format_version"`, `tensor 'conv1.weight'.dtype`,
    /// `graph.nodes[2] 'fc'`, `crc32`, ...
    pub field: String,
    /// Expected versus found, in words.
    pub message: String,
}

impl FormatError {
    /// An error about `field` without a file name.
    pub fn new(field: impl Into<String>, message: impl Into<String>) -> Self {
        FormatError {
            file: None,
            field: field.into(),
            message: message.into(),
        }
    }

    /// The same error, attributed to `file`.
    pub fn with_file(mut self, file: impl Into<String>) -> Self {
        self.file = Some(file.into());
        self
    }

    fn from_graph(e: GraphError) -> Self {
        FormatError::new(graph_field(&e.location), e.message)
    }
}

impl fmt::Display for FormatError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if let Some(file) = &self.file {
            write!(f, "{file}: ")?;
        }
        write!(f, "{}: {}", self.field, self.message)
    }
}

impl core::error::Error for FormatError {}

/// Which kind of model a file holds (the [`keys::KIND`] entry).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum ModelKind {
    /// A [`QuantModel`] (8w8a or 16w8a).
    Quantized,
    /// A [`FloatModel`].
    Float,
}

impl ModelKind {
    /// The value stored in the file: `"quantized"` or `"float"`.
    pub const fn as_str(self) -> &'static str {
        match self {
            ModelKind::Quantized => "quantized",
            ModelKind::Float => "float",
        }
    }

    fn parse(s: &str) -> Option<Self> {
        match s {
            "quantized" => Some(ModelKind::Quantized),
            "float" => Some(ModelKind::Float),
            _ => None,
        }
    }
}

/// Either kind of model, as read from a file of unknown kind.
#[derive(Clone, Debug, PartialEq)]
pub enum AnyModel {
    /// A quantized model.
    Quantized(QuantModel),
    /// A float model.
    Float(FloatModel),
}

impl AnyModel {
    /// Which kind this is.
    pub fn kind(&self) -> ModelKind {
        match self {
            AnyModel::Quantized(_) => ModelKind::Quantized,
            AnyModel::Float(_) => ModelKind::Float,
        }
    }

    /// The graph structure.
    pub fn topology(&self) -> &Topology {
        match self {
            AnyModel::Quantized(m) => &m.topology,
            AnyModel::Float(m) => &m.topology,
        }
    }

    /// The free-form metadata.
    pub fn metadata(&self) -> &Metadata {
        match self {
            AnyModel::Quantized(m) => &m.metadata,
            AnyModel::Float(m) => &m.metadata,
        }
    }

    /// Encodes the model (see [`quant_to_bytes`] and [`float_to_bytes`]).
    pub fn to_bytes(&self) -> Result<Vec<u8>, FormatError> {
        match self {
            AnyModel::Quantized(m) => quant_to_bytes(m),
            AnyModel::Float(m) => float_to_bytes(m),
        }
    }
}

// ---------------------------------------------------------------------------------------------
// The graph header (`lastmile.graph`)
// ---------------------------------------------------------------------------------------------

/// JSON stored under [`keys::GRAPH`].
#[derive(Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct GraphHeader {
    /// Quantized only.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    weight_bits: Option<WeightBits>,
    /// Parameter specs; their order defines [`crate::ParamId`]s.
    params: Vec<ParamSpec>,
    /// Quantized only: one entry per value (index 0 = graph input).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    act: Option<Vec<ActEntry>>,
    topology: Topology,
}

/// An [`ActQuant`] in the header. The f32 scale is written widened to f64, so the decimal
/// text denotes that f32 exactly and rounding it back to f32 restores the same bits, whatever
/// the precision of the JSON float parser.
#[derive(Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct ActEntry {
    scale: f64,
    zero_point: i32,
}

impl From<ActQuant> for ActEntry {
    fn from(q: ActQuant) -> Self {
        ActEntry {
            scale: q.scale as f64,
            zero_point: q.zero_point,
        }
    }
}

impl From<&ActEntry> for ActQuant {
    fn from(e: &ActEntry) -> Self {
        // Nearest f32 (ties to even); out-of-range values become ±inf, which validate() rejects.
        ActQuant {
            scale: e.scale as f32,
            zero_point: e.zero_point,
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Writing
// ---------------------------------------------------------------------------------------------

/// One tensor to write.
struct OutTensor {
    name: String,
    dtype: Dtype,
    shape: Vec<usize>,
    data: Vec<u8>,
}

/// Encodes a quantized model. Fails (naming the problem) if the model does not validate, so a
/// file that cannot be read back is never produced.
pub fn quant_to_bytes(m: &QuantModel) -> Result<Vec<u8>, FormatError> {
    m.validate().map_err(FormatError::from_graph)?;
    let specs = m.specs();
    check_names(&specs, ModelKind::Quantized)?;
    let mut tensors: Vec<OutTensor> = Vec::with_capacity(2 * m.params.len());
    for p in &m.params {
        let (dtype, data) = match &p.data {
            QData::I8(v) => (Dtype::I8, v.iter().map(|&x| x as u8).collect()),
            QData::I16(v) => (Dtype::I16, v.iter().flat_map(|x| x.to_le_bytes()).collect()),
            QData::I32(v) => (Dtype::I32, v.iter().flat_map(|x| x.to_le_bytes()).collect()),
        };
        tensors.push(OutTensor {
            name: p.spec.name.clone(),
            dtype,
            shape: p.spec.shape.clone(),
            data,
        });
    }
    for p in m.params.iter().filter(|p| p.spec.role == ParamRole::Weight) {
        tensors.push(OutTensor {
            name: scales_name(&p.spec.name),
            dtype: Dtype::F32,
            shape: vec![p.scales.len()],
            data: f32_bytes(&p.scales),
        });
    }
    let header = GraphHeader {
        weight_bits: Some(m.weight_bits),
        params: specs,
        act: Some(m.act.iter().map(|&q| q.into()).collect()),
        topology: m.topology.clone(),
    };
    write_container(ModelKind::Quantized, &header, &m.metadata, tensors)
}

/// Encodes a float model. Fails (naming the problem) if the model does not validate.
pub fn float_to_bytes(m: &FloatModel) -> Result<Vec<u8>, FormatError> {
    m.validate().map_err(FormatError::from_graph)?;
    let specs = m.specs();
    check_names(&specs, ModelKind::Float)?;
    let tensors = m
        .params
        .iter()
        .map(|p| OutTensor {
            name: p.spec.name.clone(),
            dtype: Dtype::F32,
            shape: p.spec.shape.clone(),
            data: f32_bytes(&p.data),
        })
        .collect();
    let header = GraphHeader {
        weight_bits: None,
        params: specs,
        act: None,
        topology: m.topology.clone(),
    };
    write_container(ModelKind::Float, &header, &m.metadata, tensors)
}

fn f32_bytes(v: &[f32]) -> Vec<u8> {
    v.iter().flat_map(|x| x.to_bits().to_le_bytes()).collect()
}

fn scales_name(weight: &str) -> String {
    format!("{weight}{SCALES_SUFFIX}")
}

/// Writes the safetensors container.
///
/// The layout is the one `safetensors::serialize` produces (8-byte little-endian header
/// length, JSON header padded with spaces to a multiple of 8, tensors sorted by descending
/// dtype alignment then name, so every tensor is aligned to its element size), but every map
/// is emitted in a fixed order: encoding the same model always gives the same bytes.
/// `tensors` must be in CRC order: parameters in spec order, then scales in spec order.
fn write_container(
    kind: ModelKind,
    header: &GraphHeader,
    metadata: &Metadata,
    mut tensors: Vec<OutTensor>,
) -> Result<Vec<u8>, FormatError> {
    let json = |what: &str, r: Result<String, serde_json::Error>| {
        r.map_err(|e| FormatError::new(what, format!("cannot be encoded as JSON: {e}")))
    };
    let graph = json(keys::GRAPH, serde_json::to_string(header))?;
    let meta_json = json(keys::METADATA, serde_json::to_string(metadata))?;

    let mut crc = crc32fast::Hasher::new();
    for t in &tensors {
        crc.update(&t.data);
    }
    let mut meta: BTreeMap<&str, String> = BTreeMap::new();
    meta.insert(keys::FORMAT, FORMAT_NAME.into());
    meta.insert(keys::FORMAT_VERSION, FORMAT_VERSION.to_string());
    meta.insert(keys::KIND, kind.as_str().into());
    meta.insert(keys::GRAPH, graph);
    meta.insert(keys::METADATA, meta_json);
    meta.insert(keys::CRC32, format!("{:08x}", crc.finalize()));

    tensors.sort_by(|a, b| b.dtype.cmp(&a.dtype).then_with(|| a.name.cmp(&b.name)));
    let mut offsets = Vec::with_capacity(tensors.len());
    let mut end = 0usize;
    for t in &tensors {
        offsets.push((end, end + t.data.len()));
        end += t.data.len();
    }
    let mut head = json(
        "safetensors header",
        serde_json::to_string(&StHeader {
            meta: &meta,
            tensors: &tensors,
            offsets: &offsets,
        }),
    )?
    .into_bytes();
    head.resize(head.len().next_multiple_of(8), b' ');
    if head.len() > MAX_HEADER_BYTES {
        return Err(FormatError::new(
            "safetensors header",
            format!(
                "would be {} bytes, more than the safetensors limit of {MAX_HEADER_BYTES}",
                head.len()
            ),
        ));
    }
    let mut out = Vec::with_capacity(8 + head.len() + end);
    out.extend_from_slice(&(head.len() as u64).to_le_bytes());
    out.extend_from_slice(&head);
    for t in &tensors {
        out.extend_from_slice(&t.data);
    }
    Ok(out)
}

/// The safetensors JSON header: `__metadata__` first, then tensors in data order.
struct StHeader<'a> {
    meta: &'a BTreeMap<&'a str, String>,
    tensors: &'a [OutTensor],
    offsets: &'a [(usize, usize)],
}

#[derive(Serialize)]
struct StInfo<'a> {
    dtype: Dtype,
    shape: &'a [usize],
    data_offsets: (usize, usize),
}

impl Serialize for StHeader<'_> {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let mut map = s.serialize_map(Some(self.tensors.len() + 1))?;
        map.serialize_entry(ST_METADATA, self.meta)?;
        for (t, &data_offsets) in self.tensors.iter().zip(self.offsets) {
            map.serialize_entry(
                &t.name,
                &StInfo {
                    dtype: t.dtype,
                    shape: &t.shape,
                    data_offsets,
                },
            )?;
        }
        map.end()
    }
}

/// Parameter names must be unique, non-empty, and must not collide with scales tensors or
/// the safetensors metadata key. Checked on write and on read.
fn check_names(specs: &[ParamSpec], kind: ModelKind) -> Result<(), FormatError> {
    let mut seen: BTreeSet<&str> = BTreeSet::new();
    for (i, s) in specs.iter().enumerate() {
        let field = || format!("graph.params[{i}] '{}'", s.name);
        if s.name.is_empty() {
            return Err(FormatError::new(
                field(),
                "has an empty name; every parameter needs a unique tensor name",
            ));
        }
        if s.name == ST_METADATA {
            return Err(FormatError::new(
                field(),
                "is named like the safetensors metadata key; choose another name",
            ));
        }
        if kind == ModelKind::Quantized && s.name.ends_with(SCALES_SUFFIX) {
            return Err(FormatError::new(
                field(),
                format!("ends with '{SCALES_SUFFIX}', which is reserved for weight scales tensors"),
            ));
        }
        if !seen.insert(&s.name) {
            return Err(FormatError::new(
                field(),
                "has the same name as an earlier parameter; tensor names must be unique",
            ));
        }
    }
    Ok(())
}

// ---------------------------------------------------------------------------------------------
// Reading
// ---------------------------------------------------------------------------------------------

/// One tensor as found in the file.
struct RawTensor<'a> {
    dtype: Dtype,
    shape: Vec<usize>,
    data: &'a [u8],
}

/// The parsed container: metadata (`None` if the header has no `__metadata__`) and tensors.
struct Container<'a> {
    meta: Option<BTreeMap<String, String>>,
    /// In data order.
    tensors: Vec<(String, RawTensor<'a>)>,
}

/// Decodes a model file of either kind.
pub fn from_bytes(bytes: &[u8]) -> Result<AnyModel, FormatError> {
    decode(bytes, None)
}

/// Decodes a quantized model; a float model file is an error that says so.
pub fn quant_from_bytes(bytes: &[u8]) -> Result<QuantModel, FormatError> {
    match decode(bytes, Some(ModelKind::Quantized))? {
        AnyModel::Quantized(m) => Ok(m),
        AnyModel::Float(_) => Err(kind_mismatch(ModelKind::Quantized, ModelKind::Float)),
    }
}

/// Decodes a float model; a quantized model file is an error that says so.
pub fn float_from_bytes(bytes: &[u8]) -> Result<FloatModel, FormatError> {
    match decode(bytes, Some(ModelKind::Float))? {
        AnyModel::Float(m) => Ok(m),
        AnyModel::Quantized(_) => Err(kind_mismatch(ModelKind::Float, ModelKind::Quantized)),
    }
}

fn kind_mismatch(want: ModelKind, found: ModelKind) -> FormatError {
    let hint = match want {
        ModelKind::Quantized => "quantize it first (post-training quantization)",
        ModelKind::Float => "load it as a quantized model instead",
    };
    FormatError::new(
        meta_field(keys::KIND),
        format!(
            "expected a {} model, but this file holds a {} model — {hint}",
            want.as_str(),
            found.as_str()
        ),
    )
}

fn meta_field(key: &str) -> String {
    format!("{ST_METADATA}.\"{key}\"")
}

fn decode(bytes: &[u8], want: Option<ModelKind>) -> Result<AnyModel, FormatError> {
    let container = read_container(bytes)?;
    let Some(meta) = &container.meta else {
        return Err(FormatError::new(
            ST_METADATA,
            format!(
                "is missing: this is a safetensors file but not a lastmile model (expected \"{}\" = \"{FORMAT_NAME}\")",
                keys::FORMAT
            ),
        ));
    };
    let get = |key: &str| {
        meta.get(key).ok_or_else(|| {
            FormatError::new(
                meta_field(key),
                "is missing; every lastmile model file has it",
            )
        })
    };

    // Identity and version first: a newer file may differ in everything that follows.
    let format = meta.get(keys::FORMAT).ok_or_else(|| {
        FormatError::new(
            meta_field(keys::FORMAT),
            format!("is missing: this is a safetensors file but not a lastmile model (expected \"{FORMAT_NAME}\")"),
        )
    })?;
    if format != FORMAT_NAME {
        return Err(FormatError::new(
            meta_field(keys::FORMAT),
            format!(
                "expected \"{FORMAT_NAME}\", found \"{}\" — not a lastmile model file",
                truncate(format)
            ),
        ));
    }
    check_version(get(keys::FORMAT_VERSION)?)?;
    if let Some(k) = meta
        .keys()
        .find(|k| k.starts_with("lastmile.") && !keys::ALL.contains(&k.as_str()))
    {
        return Err(FormatError::new(
            meta_field(k),
            format!(
                "is not a key of format version {FORMAT_VERSION} (known keys: {})",
                keys::ALL.join(", ")
            ),
        ));
    }
    let kind_str = get(keys::KIND)?;
    let kind = ModelKind::parse(kind_str).ok_or_else(|| {
        FormatError::new(
            meta_field(keys::KIND),
            format!(
                "expected \"quantized\" or \"float\", found \"{}\"",
                truncate(kind_str)
            ),
        )
    })?;
    if let Some(want) = want
        && want != kind
    {
        return Err(kind_mismatch(want, kind));
    }

    let header: GraphHeader = serde_json::from_str(get(keys::GRAPH)?).map_err(|e| {
        FormatError::new(
            meta_field(keys::GRAPH),
            format!("is not a valid graph header: {e}"),
        )
    })?;
    let metadata: Metadata = serde_json::from_str(get(keys::METADATA)?).map_err(|e| {
        FormatError::new(
            meta_field(keys::METADATA),
            format!("is not a JSON object of strings: {e}"),
        )
    })?;
    let crc_expected = parse_crc(get(keys::CRC32)?)?;

    match kind {
        ModelKind::Quantized => {
            if header.weight_bits.is_none() {
                return Err(FormatError::new(
                    "graph.weight_bits",
                    "is missing; a quantized model must say \"w8\" or \"w16\"",
                ));
            }
            if header.act.is_none() {
                return Err(FormatError::new(
                    "graph.act",
                    "is missing; a quantized model needs one activation quantization per value",
                ));
            }
        }
        ModelKind::Float => {
            if header.weight_bits.is_some() {
                return Err(FormatError::new(
                    "graph.weight_bits",
                    "is set, but a float model has no weight width",
                ));
            }
            if header.act.is_some() {
                return Err(FormatError::new(
                    "graph.act",
                    "is set, but a float model has no activation quantization",
                ));
            }
        }
    }
    check_names(&header.params, kind)?;

    // Which tensors must exist, with which dtype and shape.
    let mut expected: BTreeMap<String, Expect> = BTreeMap::new();
    for (i, spec) in header.params.iter().enumerate() {
        let dtype = match (kind, spec.role, header.weight_bits) {
            (ModelKind::Float, _, _) => Dtype::F32,
            (ModelKind::Quantized, ParamRole::Bias, _) => Dtype::I32,
            (ModelKind::Quantized, ParamRole::Weight, Some(WeightBits::W16)) => Dtype::I16,
            (ModelKind::Quantized, ParamRole::Weight, _) => Dtype::I8,
        };
        expected.insert(
            spec.name.clone(),
            Expect {
                spec: i,
                dtype,
                shape: spec.shape.clone(),
                scales_of: None,
            },
        );
        if kind == ModelKind::Quantized && spec.role == ParamRole::Weight {
            let Some(&c_out) = spec.shape.first() else {
                return Err(FormatError::new(
                    format!("graph.params[{i}] '{}'", spec.name),
                    "is a weight with an empty shape; expected [C_out, ...]",
                ));
            };
            expected.insert(
                scales_name(&spec.name),
                Expect {
                    spec: i,
                    dtype: Dtype::F32,
                    shape: vec![c_out],
                    scales_of: Some(i),
                },
            );
        }
    }
    for (name, _) in &container.tensors {
        if !expected.contains_key(name) {
            return Err(FormatError::new(
                format!("tensor '{}'", truncate(name)),
                format!(
                    "is not declared in \"{}\" params (unexpected tensor)",
                    keys::GRAPH
                ),
            ));
        }
    }
    let found: BTreeMap<&str, &RawTensor<'_>> = container
        .tensors
        .iter()
        .map(|(n, t)| (n.as_str(), t))
        .collect();
    for (name, e) in &expected {
        let field = format!("tensor '{name}'");
        let spec = &header.params[e.spec];
        let Some(t) = found.get(name.as_str()) else {
            return Err(FormatError::new(
                field,
                format!(
                    "is missing (declared by graph.params[{}] '{}')",
                    e.spec, spec.name
                ),
            ));
        };
        if t.dtype != e.dtype {
            let what = match (kind, e.scales_of, spec.role) {
                (ModelKind::Float, _, _) => "float model parameters".to_string(),
                (_, Some(_), _) => "weight scales".to_string(),
                (_, None, ParamRole::Bias) => "quantized biases".to_string(),
                (_, None, ParamRole::Weight) => format!(
                    "{} weights",
                    header.weight_bits.map_or("quantized", WeightBits::scheme)
                ),
            };
            return Err(FormatError::new(
                format!("{field}.dtype"),
                format!("expected {:?} ({what}), found {:?}", e.dtype, t.dtype),
            ));
        }
        if t.shape != e.shape {
            let message = match e.scales_of {
                Some(_) => format!(
                    "has shape {:?}, expected {:?}: one scale per output channel of '{}' (shape {:?})",
                    t.shape, e.shape, spec.name, spec.shape
                ),
                None => format!(
                    "expected {:?} (from graph.params[{}]), found {:?}",
                    e.shape, e.spec, t.shape
                ),
            };
            return Err(FormatError::new(format!("{field}.shape"), message));
        }
    }

    // Checksum over all tensor bytes: parameters in spec order, then scales in spec order.
    let mut crc = crc32fast::Hasher::new();
    for spec in &header.params {
        crc.update(found[spec.name.as_str()].data);
    }
    if kind == ModelKind::Quantized {
        for spec in header.params.iter().filter(|s| s.role == ParamRole::Weight) {
            crc.update(found[scales_name(&spec.name).as_str()].data);
        }
    }
    let crc_found = crc.finalize();
    if crc_found != crc_expected {
        return Err(FormatError::new(
            "crc32",
            format!(
                "the tensor data has checksum {crc_found:08x} but the file says {crc_expected:08x}: the file is corrupted"
            ),
        ));
    }

    let model = match kind {
        ModelKind::Quantized => {
            let params = header
                .params
                .iter()
                .map(|spec| {
                    let t = found[spec.name.as_str()];
                    let data = match t.dtype {
                        Dtype::I8 => QData::I8(t.data.iter().map(|&b| b as i8).collect()),
                        Dtype::I16 => QData::I16(
                            t.data
                                .chunks_exact(2)
                                .map(|c| i16::from_le_bytes([c[0], c[1]]))
                                .collect(),
                        ),
                        _ => QData::I32(
                            t.data
                                .chunks_exact(4)
                                .map(|c| i32::from_le_bytes([c[0], c[1], c[2], c[3]]))
                                .collect(),
                        ),
                    };
                    let scales = match spec.role {
                        ParamRole::Weight => {
                            f32_values(found[scales_name(&spec.name).as_str()].data)
                        }
                        ParamRole::Bias => Vec::new(),
                    };
                    QParam {
                        spec: spec.clone(),
                        data,
                        scales,
                    }
                })
                .collect();
            let m = QuantModel {
                topology: header.topology,
                weight_bits: header.weight_bits.unwrap_or(WeightBits::W8),
                params,
                act: header
                    .act
                    .unwrap_or_default()
                    .iter()
                    .map(ActQuant::from)
                    .collect(),
                metadata,
            };
            m.validate().map_err(FormatError::from_graph)?;
            AnyModel::Quantized(m)
        }
        ModelKind::Float => {
            let params = header
                .params
                .iter()
                .map(|spec| FloatParam {
                    spec: spec.clone(),
                    data: f32_values(found[spec.name.as_str()].data),
                })
                .collect();
            let m = FloatModel {
                topology: header.topology,
                params,
                metadata,
            };
            m.validate().map_err(FormatError::from_graph)?;
            AnyModel::Float(m)
        }
    };
    Ok(model)
}

/// What a tensor must look like.
struct Expect {
    /// Index of the parameter spec it belongs to.
    spec: usize,
    dtype: Dtype,
    shape: Vec<usize>,
    /// `Some(spec)` for a scales tensor.
    scales_of: Option<usize>,
}

fn f32_values(bytes: &[u8]) -> Vec<f32> {
    bytes
        .chunks_exact(4)
        .map(|c| f32::from_bits(u32::from_le_bytes([c[0], c[1], c[2], c[3]])))
        .collect()
}

/// At most 64 characters of untrusted text, for messages.
fn truncate(s: &str) -> String {
    match s.char_indices().nth(64) {
        Some((i, _)) => format!("{}…", &s[..i]),
        None => s.to_string(),
    }
}

fn check_version(s: &str) -> Result<(), FormatError> {
    let field = || meta_field(keys::FORMAT_VERSION);
    if s.is_empty() || !s.bytes().all(|b| b.is_ascii_digit()) {
        return Err(FormatError::new(
            field(),
            format!(
                "expected a decimal integer such as \"{FORMAT_VERSION}\", found \"{}\"",
                truncate(s)
            ),
        ));
    }
    match s.parse::<u32>() {
        Ok(FORMAT_VERSION) => Ok(()),
        Ok(0) => Err(FormatError::new(
            field(),
            format!(
                "is 0, which no lastmile release writes; this build reads version {FORMAT_VERSION}"
            ),
        )),
        Ok(v) if v < FORMAT_VERSION => Err(FormatError::new(
            field(),
            format!(
                "this file is format version {v}; this build reads version {FORMAT_VERSION} only — convert it with an older lastmile"
            ),
        )),
        _ => Err(FormatError::new(
            field(),
            format!(
                "this file is format version {}; this build reads version {FORMAT_VERSION} — upgrade lastmile",
                truncate(s)
            ),
        )),
    }
}

fn parse_crc(s: &str) -> Result<u32, FormatError> {
    if s.len() == 8
        && s.bytes().all(|b| b.is_ascii_hexdigit())
        && let Ok(v) = u32::from_str_radix(s, 16)
    {
        return Ok(v);
    }
    Err(FormatError::new(
        meta_field(keys::CRC32),
        format!("expected 8 hex digits, found \"{}\"", truncate(s)),
    ))
}

/// Parses the safetensors container without trusting anything in it.
fn read_container(bytes: &[u8]) -> Result<Container<'_>, FormatError> {
    const N_LEN: usize = 8;
    let Some((len_bytes, rest)) = bytes.split_first_chunk::<N_LEN>() else {
        let message = if bytes.is_empty() {
            "the file is empty; a model file starts with an 8-byte header length".to_string()
        } else {
            format!(
                "the file is only {} bytes, too short for the 8-byte header length (truncated?)",
                bytes.len()
            )
        };
        return Err(FormatError::new("header length", message));
    };
    let n = u64::from_le_bytes(*len_bytes);
    if n > rest.len() as u64 {
        return Err(FormatError::new(
            "header length",
            format!(
                "says the JSON header is {n} bytes, but only {} bytes follow (truncated, or not a model file)",
                rest.len()
            ),
        ));
    }
    let n = n as usize;
    if n > MAX_HEADER_BYTES {
        return Err(FormatError::new(
            "header length",
            format!("{n} bytes is more than the safetensors limit of {MAX_HEADER_BYTES}"),
        ));
    }
    let (head, data) = rest.split_at(n);
    let text = core::str::from_utf8(head)
        .map_err(|e| FormatError::new("safetensors header", format!("is not UTF-8 text: {e}")))?;
    let raw: BTreeMap<String, serde_json::Value> = serde_json::from_str(text).map_err(|e| {
        FormatError::new("safetensors header", format!("is not a JSON object: {e}"))
    })?;
    // The reference reader adds offsets unchecked; make sure every tensor ends inside the data
    // first (this also gives a better message for a truncated file).
    for (name, v) in &raw {
        if name == ST_METADATA {
            continue;
        }
        if let Some(end) = v
            .get("data_offsets")
            .and_then(|o| o.get(1))
            .and_then(serde_json::Value::as_u64)
            && end > data.len() as u64
        {
            return Err(FormatError::new(
                format!("tensor '{}'", truncate(name)),
                format!(
                    "its data ends at byte {end} of the data section, but the file holds only {} bytes of tensor data (truncated file?)",
                    data.len()
                ),
            ));
        }
    }
    let (_, md) = SafeTensors::read_metadata(bytes).map_err(container_error)?;
    let meta = md
        .metadata()
        .as_ref()
        .map(|m| m.iter().map(|(k, v)| (k.clone(), v.clone())).collect());
    let mut tensors = Vec::new();
    for name in md.offset_keys() {
        let field = || format!("tensor '{}'", truncate(&name));
        let info = md
            .info(&name)
            .ok_or_else(|| FormatError::new(field(), "is listed but has no description"))?;
        let (s, e) = info.data_offsets;
        let slice = data.get(s..e).ok_or_else(|| {
            FormatError::new(
                format!("{}.data_offsets", field()),
                "point outside the file",
            )
        })?;
        tensors.push((
            name.clone(),
            RawTensor {
                dtype: info.dtype,
                shape: info.shape.clone(),
                data: slice,
            },
        ));
    }
    Ok(Container { meta, tensors })
}

fn container_error(e: SafeTensorError) -> FormatError {
    match e {
        SafeTensorError::InvalidOffset(name) => FormatError::new(
            format!("tensor '{}'.data_offsets", truncate(&name)),
            "do not start where the previous tensor ends (tensors must be contiguous and not overlap)",
        ),
        SafeTensorError::TensorInvalidInfo => FormatError::new(
            "safetensors header",
            "a tensor's data_offsets span does not match its dtype and shape",
        ),
        SafeTensorError::MetadataIncompleteBuffer => FormatError::new(
            "safetensors header",
            "the tensors do not exactly cover the bytes after the header (truncated file or trailing bytes)",
        ),
        SafeTensorError::InvalidHeaderDeserialization(e) => FormatError::new(
            "safetensors header",
            format!("is not a valid safetensors header: {e}"),
        ),
        other => FormatError::new("safetensors header", format!("{other}")),
    }
}

/// Turns a [`GraphError`] location into a field of the file: `node 2 'fc'` → `graph.nodes[2] 'fc'`,
/// `parameter 'x'` → `tensor 'x'`, `activation quantization of value 3` → `graph.act[3]`.
fn graph_field(location: &str) -> String {
    if let Some(rest) = location.strip_prefix("node ")
        && let Some((idx, name)) = rest.split_once(' ')
        && !idx.is_empty()
        && idx.bytes().all(|b| b.is_ascii_digit())
    {
        return format!("graph.nodes[{idx}] {name}");
    }
    if let Some(name) = location.strip_prefix("parameter ") {
        return format!("tensor {name}");
    }
    if let Some(v) = location.strip_prefix("activation quantization of value ") {
        return format!("graph.act[{v}]");
    }
    match location {
        "activation quantization" => "graph.act".into(),
        "graph input" => "graph.topology.input_shape".into(),
        "graph" => "graph.topology.nodes".into(),
        other => format!("graph: {other}"),
    }
}

// ---------------------------------------------------------------------------------------------
// Files (std)
// ---------------------------------------------------------------------------------------------

#[cfg(feature = "std")]
pub use files::{load, load_float, load_quant, save_float, save_quant};

#[cfg(feature = "std")]
mod files {
    use super::*;
    use std::fs;
    use std::io::Write;
    use std::path::{Path, PathBuf};

    fn name(path: &Path) -> String {
        path.display().to_string()
    }

    fn read(path: &Path) -> Result<Vec<u8>, FormatError> {
        fs::read(path).map_err(|e| {
            FormatError::new("file", format!("cannot read: {e}")).with_file(name(path))
        })
    }

    /// Reads a model file of either kind. Errors name `path`.
    pub fn load(path: &Path) -> Result<AnyModel, FormatError> {
        from_bytes(&read(path)?).map_err(|e| e.with_file(name(path)))
    }

    /// Reads a quantized model file. Errors name `path`.
    pub fn load_quant(path: &Path) -> Result<QuantModel, FormatError> {
        quant_from_bytes(&read(path)?).map_err(|e| e.with_file(name(path)))
    }

    /// Reads a float model file. Errors name `path`.
    pub fn load_float(path: &Path) -> Result<FloatModel, FormatError> {
        float_from_bytes(&read(path)?).map_err(|e| e.with_file(name(path)))
    }

    /// Writes a quantized model atomically (see [`save_float`]).
    pub fn save_quant(path: &Path, model: &QuantModel) -> Result<(), FormatError> {
        let bytes = quant_to_bytes(model).map_err(|e| e.with_file(name(path)))?;
        write_atomic(path, &bytes)
    }

    /// Writes a float model atomically: the bytes go to `<name>.tmp-<pid>` in the same
    /// directory, are flushed to disk (`sync_all`), then renamed over `path`. A failed save
    /// leaves any existing file at `path` as it was, and removes its temporary file.
    pub fn save_float(path: &Path, model: &FloatModel) -> Result<(), FormatError> {
        let bytes = float_to_bytes(model).map_err(|e| e.with_file(name(path)))?;
        write_atomic(path, &bytes)
    }

    fn write_atomic(path: &Path, bytes: &[u8]) -> Result<(), FormatError> {
        let err = |what: &str, e: std::io::Error| {
            FormatError::new("file", format!("{what}: {e}")).with_file(name(path))
        };
        let Some(file_name) = path.file_name() else {
            return Err(
                FormatError::new("file", "the path does not name a file").with_file(name(path))
            );
        };
        let mut tmp_name = file_name.to_os_string();
        tmp_name.push(format!(".tmp-{}", std::process::id()));
        let tmp: PathBuf = path.with_file_name(tmp_name);
        let write = || -> Result<(), FormatError> {
            let mut f = fs::File::create(&tmp).map_err(|e| {
                err(
                    &format!("cannot create temporary file {}", tmp.display()),
                    e,
                )
            })?;
            f.write_all(bytes).map_err(|e| err("cannot write", e))?;
            f.sync_all().map_err(|e| err("cannot flush to disk", e))?;
            drop(f);
            fs::rename(&tmp, path)
                .map_err(|e| err(&format!("cannot rename {} over it", tmp.display()), e))
        };
        if let Err(e) = write() {
            let _ = fs::remove_file(&tmp);
            return Err(e);
        }
        // Make the rename itself durable where directories can be synced (best effort).
        #[cfg(unix)]
        if let Some(dir) = path.parent() {
            let dir = if dir.as_os_str().is_empty() {
                Path::new(".")
            } else {
                dir
            };
            if let Ok(d) = fs::File::open(dir) {
                let _ = d.sync_all();
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn graph_locations_map_to_fields() {
        assert_eq!(graph_field("node 2 'fc'"), "graph.nodes[2] 'fc'");
        assert_eq!(graph_field("node 12 'a b'"), "graph.nodes[12] 'a b'");
        assert_eq!(graph_field("parameter 'fc.bias'"), "tensor 'fc.bias'");
        assert_eq!(
            graph_field("activation quantization of value 3"),
            "graph.act[3]"
        );
        assert_eq!(graph_field("activation quantization"), "graph.act");
        assert_eq!(graph_field("graph input"), "graph.topology.input_shape");
        assert_eq!(graph_field("somewhere"), "graph: somewhere");
    }

    #[test]
    fn versions() {
        assert!(check_version("1").is_ok());
        assert!(
            check_version("2")
                .unwrap_err()
                .message
                .contains("upgrade lastmile")
        );
        assert!(
            check_version("99999999999999999999")
                .unwrap_err()
                .message
                .contains("upgrade lastmile")
        );
        assert!(check_version("0").is_err());
        assert!(check_version("+1").is_err());
        assert!(check_version("").is_err());
        assert!(check_version("1.0").is_err());
    }

    #[test]
    fn crc_strings() {
        assert_eq!(parse_crc("0000abcd").unwrap(), 0xabcd);
        assert_eq!(parse_crc("DEADBEEF").unwrap(), 0xdead_beef);
        assert!(parse_crc("+000abcd").is_err());
        assert!(parse_crc("abcd").is_err());
        assert!(parse_crc("0000abcdе").is_err());
    }

    #[test]
    fn error_display() {
        let e = FormatError::new("crc32", "bad");
        assert_eq!(e.to_string(), "crc32: bad");
        assert_eq!(e.with_file("m.lmm").to_string(), "m.lmm: crc32: bad");
    }

    #[test]
    fn short_inputs_are_errors() {
        assert_eq!(from_bytes(&[]).unwrap_err().field, "header length");
        assert_eq!(from_bytes(&[1, 2, 3]).unwrap_err().field, "header length");
        assert_eq!(
            from_bytes(&u64::MAX.to_le_bytes()).unwrap_err().field,
            "header length"
        );
        let mut b = 2u64.to_le_bytes().to_vec();
        b.extend_from_slice(b"{}");
        assert_eq!(from_bytes(&b).unwrap_err().field, "__metadata__");
    }
}
