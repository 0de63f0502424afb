//! Every way a model file can be broken gets a clear error naming the file and the field,
//! never a panic. Table-driven: each case builds a corrupted file by taking a valid one apart
//! (safetensors header JSON, metadata strings, graph JSON, tensor bytes) and putting it back.

#[path = "format_common.rs"]
mod common;

use std::collections::BTreeSet;
use std::fs;

use common::{Parts, Tensor, float_model, join_raw, quant_model, split_raw, temp_dir};
use lastmile_core::WeightBits;
use lastmile_core::format::{self, FormatError, keys};
use safetensors::tensor::Dtype;
use serde_json::{Value, json};

#[derive(Clone, Copy, Debug, PartialEq)]
enum Loader {
    Any,
    Quant,
}

struct Case {
    name: &'static str,
    bytes: Vec<u8>,
    loader: Loader,
    /// Must occur in `FormatError::field`.
    field: &'static str,
    /// Must occur in `FormatError::message`.
    message: &'static str,
}

/// Edits the taken-apart file (tensors and `__metadata__` strings); the CRC is left as it was.
fn edit(base: &[u8], f: impl FnOnce(&mut Parts)) -> Vec<u8> {
    let mut p = Parts::parse(base);
    f(&mut p);
    p.to_bytes()
}

/// Edits tensor values and then recomputes the CRC, so the *content* check is what fires.
fn edit_values(base: &[u8], f: impl FnOnce(&mut Parts)) -> Vec<u8> {
    edit(base, |p| {
        f(p);
        p.fix_crc();
    })
}

/// Edits the raw safetensors header JSON, keeping the data section as it is.
fn edit_header(base: &[u8], f: impl FnOnce(&mut Value)) -> Vec<u8> {
    let (mut h, data) = split_raw(base);
    f(&mut h);
    join_raw(&serde_json::to_string(&h).unwrap(), &data)
}

fn set_meta(base: &[u8], key: &'static str, value: Option<&'static str>) -> Vec<u8> {
    edit(base, |p| match value {
        Some(v) => {
            p.meta.insert(key.into(), v.into());
        }
        None => {
            p.meta.remove(key);
        }
    })
}

fn graph(base: &[u8], f: impl FnOnce(&mut Value)) -> Vec<u8> {
    edit(base, |p| p.edit_graph(f))
}

fn cases() -> Vec<Case> {
    let q8 = format::quant_to_bytes(&quant_model(WeightBits::W8)).unwrap();
    let q16 = format::quant_to_bytes(&quant_model(WeightBits::W16)).unwrap();
    let fl = format::float_to_bytes(&float_model()).unwrap();
    let header_len = u64::from_le_bytes(q8[..8].try_into().unwrap()) as usize;
    let mut out = Vec::new();
    let mut case = |name, bytes, field, message| {
        out.push(Case {
            name,
            bytes,
            loader: Loader::Any,
            field,
            message,
        })
    };

    // --- the container ---
    case("empty file", vec![], "header length", "empty");
    case(
        "seven bytes",
        q8[..7].to_vec(),
        "header length",
        "too short",
    );
    case(
        "header length u64::MAX",
        [&u64::MAX.to_le_bytes()[..], &q8[8..]].concat(),
        "header length",
        "only",
    );
    case(
        "header length past the end",
        [&((q8.len() - 7) as u64).to_le_bytes()[..], &q8[8..]].concat(),
        "header length",
        "only",
    );
    case(
        "header cut in the middle",
        q8[..8 + header_len / 2].to_vec(),
        "header length",
        "truncated",
    );
    case(
        "header not JSON",
        join_raw("this is not json", &q8[8 + header_len..]),
        "safetensors header",
        "JSON",
    );
    case(
        "header JSON is an array",
        join_raw("[1, 2, 3]", &[]),
        "safetensors header",
        "JSON object",
    );
    case(
        "header not UTF-8",
        {
            let mut b = q8.clone();
            b[8 + 1] = 0xFF;
            b
        },
        "safetensors header",
        "UTF-8",
    );
    case(
        "truncated in the middle of tensor data",
        q8[..q8.len() - 20].to_vec(),
        "tensor '",
        "truncated",
    );
    case(
        "trailing garbage",
        [&q8[..], &[0u8; 16][..]].concat(),
        "safetensors header",
        "trailing",
    );
    case(
        "tensor data_offsets far past the end",
        edit_header(&q8, |h| {
            h["conv1.bias"]["data_offsets"] = json!([0u64, u64::MAX]);
        }),
        "tensor 'conv1.bias'",
        "truncated",
    );
    case(
        "tensor data_offsets overlap",
        edit_header(&q8, |h| {
            let (s, e) = (
                h["fc.bias"]["data_offsets"][0].as_u64().unwrap(),
                h["fc.bias"]["data_offsets"][1].as_u64().unwrap(),
            );
            h["fc.bias"]["data_offsets"] = json!([s - 4, e - 4]);
        }),
        "data_offsets",
        "contiguous",
    );
    case(
        "tensor dtype unknown to safetensors",
        edit_header(&q8, |h| {
            h["fc.bias"]["dtype"] = json!("Q4");
        }),
        "safetensors header",
        "unknown variant",
    );
    case(
        "flipped byte in tensor data",
        {
            let mut b = q8.clone();
            let last = b.len() - 1;
            b[last] ^= 0x01;
            b
        },
        "crc32",
        "corrupted",
    );
    case(
        "flipped bit in scales data",
        {
            let mut b = q8.clone();
            b[8 + header_len] ^= 0x80; // the F32 scales come first in data order
            b
        },
        "crc32",
        "checksum",
    );
    case(
        "crc32 not hex",
        set_meta(&q8, keys::CRC32, Some("xyz")),
        "\"lastmile.crc32\"",
        "8 hex digits",
    );
    case(
        "crc32 missing",
        set_meta(&q8, keys::CRC32, None),
        "\"lastmile.crc32\"",
        "missing",
    );

    // --- identity, version, kind ---
    case(
        "plain safetensors without __metadata__",
        edit(&q8, |p| p.meta.clear()),
        "__metadata__",
        "not a lastmile model",
    );
    case(
        "lastmile.format missing",
        set_meta(&q8, keys::FORMAT, None),
        "\"lastmile.format\"",
        "missing",
    );
    case(
        "wrong format string",
        set_meta(&q8, keys::FORMAT, Some("onnx")),
        "\"lastmile.format\"",
        "expected \"lastmile-model\", found \"onnx\"",
    );
    case(
        "version 2",
        set_meta(&q8, keys::FORMAT_VERSION, Some("2")),
        "\"lastmile.format_version\"",
        "format version 2; this build reads version 1 — upgrade lastmile",
    );
    case(
        "version 0",
        set_meta(&q8, keys::FORMAT_VERSION, Some("0")),
        "\"lastmile.format_version\"",
        "reads version 1",
    );
    case(
        "version abc",
        set_meta(&q8, keys::FORMAT_VERSION, Some("abc")),
        "\"lastmile.format_version\"",
        "decimal integer",
    );
    case(
        "version missing",
        set_meta(&q8, keys::FORMAT_VERSION, None),
        "\"lastmile.format_version\"",
        "missing",
    );
    case(
        "unknown lastmile key",
        set_meta(&q8, "lastmile.colour", Some("blue")),
        "\"lastmile.colour\"",
        "not a key of format version 1",
    );
    case(
        "kind banana",
        set_meta(&q8, keys::KIND, Some("banana")),
        "\"lastmile.kind\"",
        "found \"banana\"",
    );

    // --- the graph header ---
    case(
        "graph JSON invalid",
        set_meta(&q8, keys::GRAPH, Some("{\"topology\": ")),
        "\"lastmile.graph\"",
        "not a valid graph header",
    );
    case(
        "graph JSON with an unknown field",
        graph(&q8, |g| g["colour"] = json!("blue")),
        "\"lastmile.graph\"",
        "unknown field",
    );
    case(
        "graph with an unknown op",
        graph(&q8, |g| {
            g["topology"]["nodes"][1]["op"]["type"] = json!("conv3d")
        }),
        "\"lastmile.graph\"",
        "conv3d",
    );
    case(
        "weight_bits missing in a quantized file",
        graph(&q8, |g| {
            g.as_object_mut().unwrap().remove("weight_bits");
        }),
        "graph.weight_bits",
        "missing",
    );
    case(
        "act present in a float file",
        graph(&fl, |g| g["act"] = json!([])),
        "graph.act",
        "float model",
    );
    case(
        "conv stride edited: fc weight no longer matches",
        graph(&q8, |g| {
            g["topology"]["nodes"][0]["op"]["stride"] = json!([2, 2]);
        }),
        "graph.nodes[3] 'fc'",
        "expected [10, 16]",
    );
    case(
        "fc weight shape edited in spec and tensor",
        edit_values(&q8, |p| {
            p.edit_graph(|g| g["params"][2]["shape"] = json!([10, 63]));
            let w = p.tensors.get_mut("fc.weight").unwrap();
            w.shape = vec![10, 63];
            w.data.truncate(630);
        }),
        "graph.nodes[3] 'fc'",
        "expected [10, 64]",
    );
    case(
        "node reads a later value",
        graph(&q8, |g| g["topology"]["nodes"][1]["inputs"] = json!([4])),
        "graph.nodes[1] 'pool'",
        "reads value 4",
    );
    case(
        "duplicate node names",
        graph(&q8, |g| g["topology"]["nodes"][3]["name"] = json!("conv1")),
        "graph.nodes[3] 'conv1'",
        "earlier node",
    );
    case(
        "duplicate parameter names",
        graph(&q8, |g| g["params"][3]["name"] = json!("fc.weight")),
        "graph.params[3] 'fc.weight'",
        "unique",
    );
    case(
        "param spec refers to a missing tensor",
        graph(&q8, |g| {
            g["params"]
                .as_array_mut()
                .unwrap()
                .push(json!({"name": "ghost", "shape": [10], "role": "bias", "trainable": false}));
        }),
        "tensor 'ghost'",
        "missing",
    );
    case(
        "weight_bits says w16 but tensors are i8",
        graph(&q8, |g| g["weight_bits"] = json!("w16")),
        "tensor 'conv1.weight'.dtype",
        "expected I16",
    );
    case(
        "act zero_point 300",
        graph(&q8, |g| g["act"][1]["zero_point"] = json!(300)),
        "graph.act[1]",
        "zero point",
    );
    case(
        "act scale 0",
        graph(&q8, |g| g["act"][0]["scale"] = json!(0.0)),
        "graph.act[0]",
        "scale",
    );
    case(
        "act scale NaN (null in JSON)",
        graph(&q8, |g| g["act"][0]["scale"] = Value::Null),
        "\"lastmile.graph\"",
        "null",
    );
    case(
        "act scale overflows f32",
        graph(&q8, |g| g["act"][4]["scale"] = json!(1e300)),
        "graph.act[4]",
        "finite",
    );
    case(
        "act has one entry too few",
        graph(&q8, |g| {
            g["act"].as_array_mut().unwrap().pop();
        }),
        "graph.act",
        "one per value",
    );
    case(
        "pooling changes quantization",
        graph(&q8, |g| g["act"][2]["zero_point"] = json!(5)),
        "graph.nodes[1] 'pool'",
        "does not requantize",
    );
    case(
        "metadata JSON invalid",
        set_meta(&q8, keys::METADATA, Some("{\"name\": ")),
        "\"lastmile.metadata\"",
        "JSON",
    );
    case(
        "metadata JSON with a number value",
        set_meta(&q8, keys::METADATA, Some("{\"epochs\": 3}")),
        "\"lastmile.metadata\"",
        "JSON object of strings",
    );

    // --- tensors ---
    case(
        "missing tensor",
        edit(&q8, |p| {
            p.tensors.remove("fc.bias");
        }),
        "tensor 'fc.bias'",
        "missing",
    );
    case(
        "missing scales tensor",
        edit(&q8, |p| {
            p.tensors.remove("conv1.weight.__scales");
        }),
        "tensor 'conv1.weight.__scales'",
        "missing",
    );
    case(
        "extra unexpected tensor",
        edit(&q8, |p| {
            p.tensors.insert(
                "extra".into(),
                Tensor {
                    dtype: Dtype::I8,
                    shape: vec![2],
                    data: vec![1, 2],
                },
            );
        }),
        "tensor 'extra'",
        "unexpected",
    );
    case(
        "bias stored as F32",
        edit_header(&q8, |h| h["fc.bias"]["dtype"] = json!("F32")),
        "tensor 'fc.bias'.dtype",
        "expected I32",
    );
    case(
        "i16 weights in an 8w8a file",
        edit(&q8, |p| {
            let w = p.tensors.get_mut("conv1.weight").unwrap();
            w.dtype = Dtype::I16;
            w.data = w
                .data
                .iter()
                .flat_map(|&b| (b as i8 as i16).to_le_bytes())
                .collect();
        }),
        "tensor 'conv1.weight'.dtype",
        "expected I8",
    );
    case(
        "tensor shape differs from its spec",
        edit(&q8, |p| {
            p.tensors.get_mut("conv1.bias").unwrap().shape = vec![2, 2]
        }),
        "tensor 'conv1.bias'.shape",
        "expected [4]",
    );
    case(
        "scales length wrong",
        edit(&q8, |p| {
            let s = p.tensors.get_mut("conv1.weight.__scales").unwrap();
            s.shape = vec![3];
            s.data.truncate(12);
        }),
        "tensor 'conv1.weight.__scales'.shape",
        "one scale per output channel",
    );
    case(
        "scale zero",
        edit_values(&q8, |p| {
            p.tensors.get_mut("fc.weight.__scales").unwrap().data[..4]
                .copy_from_slice(&0f32.to_le_bytes())
        }),
        "tensor 'fc.weight'",
        "scale #0",
    );
    case(
        "bias out of bound for 8w8a",
        edit_values(&q8, |p| {
            p.tensors.get_mut("conv1.bias").unwrap().data[..4]
                .copy_from_slice(&((1 << 24) + 1i32).to_le_bytes());
        }),
        "tensor 'conv1.bias'",
        "bound",
    );
    case(
        "weight code -128 in 8w8a",
        edit_values(&q8, |p| {
            p.tensors.get_mut("conv1.weight").unwrap().data[0] = 0x80
        }),
        "tensor 'conv1.weight'",
        "symmetric range",
    );
    case(
        "weight code -32768 in 16w8a",
        edit_values(&q16, |p| {
            p.tensors.get_mut("fc.weight").unwrap().data[..2]
                .copy_from_slice(&i16::MIN.to_le_bytes());
        }),
        "tensor 'fc.weight'",
        "symmetric range",
    );
    case(
        "NaN in a float model",
        edit_values(&fl, |p| {
            p.tensors.get_mut("fc.weight").unwrap().data[..4]
                .copy_from_slice(&f32::NAN.to_le_bytes());
        }),
        "tensor 'fc.weight'",
        "not finite",
    );
    out.push(Case {
        name: "float file read as quantized",
        bytes: fl.clone(),
        loader: Loader::Quant,
        field: "\"lastmile.kind\"",
        message: "holds a float model",
    });
    out
}

fn load(case: &Case, path: &std::path::Path) -> Result<(), FormatError> {
    match case.loader {
        Loader::Any => format::load(path).map(|_| ()),
        Loader::Quant => format::load_quant(path).map(|_| ()),
    }
}

#[test]
fn every_corruption_is_a_clear_error() {
    let cases = cases();
    let names: BTreeSet<_> = cases.iter().map(|c| c.name).collect();
    assert_eq!(names.len(), cases.len(), "case names must be distinct");
    assert!(cases.len() >= 20, "only {} corruptions", cases.len());
    let distinct_files: BTreeSet<_> = cases.iter().map(|c| c.bytes.clone()).collect();
    assert_eq!(
        distinct_files.len(),
        cases.len(),
        "every case must be a different file"
    );

    let dir = temp_dir("corruption");
    let mut failures = Vec::new();
    for (i, case) in cases.iter().enumerate() {
        let file_name = format!("case{i:02}.lmm");
        let path = dir.join(&file_name);
        fs::write(&path, &case.bytes).unwrap();
        let Err(e) = load(case, &path) else {
            failures.push(format!("{}: loaded without error", case.name));
            continue;
        };
        let shown = e.to_string();
        let ok = e.file.as_deref() == Some(path.display().to_string().as_str())
            && shown.starts_with(&format!("{}: ", path.display()))
            && shown.contains(&file_name)
            && e.field.contains(case.field)
            && e.message.contains(case.message);
        if !ok {
            failures.push(format!(
                "{}: expected field ~ {:?}, message ~ {:?}; got: {shown}",
                case.name, case.field, case.message
            ));
        }
        // The in-memory reader reports the same problem, without a file name.
        let from_mem = match case.loader {
            Loader::Any => format::from_bytes(&case.bytes).map(|_| ()),
            Loader::Quant => format::quant_from_bytes(&case.bytes).map(|_| ()),
        };
        assert_eq!(
            from_mem.unwrap_err(),
            FormatError { file: None, ..e },
            "{}",
            case.name
        );
    }
    fs::remove_dir_all(&dir).unwrap();
    assert!(
        failures.is_empty(),
        "{} of {} cases failed:\n{}",
        failures.len(),
        cases.len(),
        failures.join("\n")
    );
}

#[test]
fn the_originals_are_valid() {
    // Guards the table: every corruption starts from a file that loads.
    for bytes in [
        format::quant_to_bytes(&quant_model(WeightBits::W8)).unwrap(),
        format::quant_to_bytes(&quant_model(WeightBits::W16)).unwrap(),
        format::float_to_bytes(&float_model()).unwrap(),
    ] {
        format::from_bytes(&bytes).unwrap();
        // ...and survives being taken apart and put back by the test helpers unchanged.
        format::from_bytes(&edit(&bytes, |_| {})).unwrap();
        format::from_bytes(&edit_header(&bytes, |_| {})).unwrap();
        format::from_bytes(&graph(&bytes, |_| {})).unwrap();
    }
}
