//! A minimal ONNX protobuf writer: just the messages and fields lastmile emits
//! (`ModelProto`, `GraphProto`, `NodeProto`, `AttributeProto`, `TensorProto`,
//! `ValueInfoProto`), hand-encoded. Field numbers are those of `onnx.proto3`
//! (onnx 1.17+); only the writer side exists, so no protobuf crate is needed.

/// ONNX `TensorProto.DataType` values used here.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum DataType {
    /// `FLOAT` (1).
    F32 = 1,
    /// `UINT8` (2).
    U8 = 2,
    /// `INT8` (3).
    I8 = 3,
    /// `INT32` (6).
    I32 = 6,
    /// `INT64` (7).
    I64 = 7,
}

/// A dimension of a graph input/output type.
#[derive(Clone, Debug)]
pub enum Dim {
    /// A fixed size.
    Value(usize),
    /// A symbolic size (the batch).
    Param(&'static str),
}

/// A node attribute.
#[derive(Clone, Debug)]
pub enum Attr {
    /// `INT` attribute.
    Int(&'static str, i64),
    /// `INTS` attribute.
    Ints(&'static str, Vec<i64>),
}

fn varint(out: &mut Vec<u8>, mut v: u64) {
    while v >= 0x80 {
        out.push((v as u8) | 0x80);
        v >>= 7;
    }
    out.push(v as u8);
}

fn key(out: &mut Vec<u8>, field: u32, wire: u8) {
    varint(out, ((field as u64) << 3) | wire as u64);
}

fn put_varint(out: &mut Vec<u8>, field: u32, v: i64) {
    key(out, field, 0);
    varint(out, v as u64);
}

fn put_bytes(out: &mut Vec<u8>, field: u32, b: &[u8]) {
    key(out, field, 2);
    varint(out, b.len() as u64);
    out.extend_from_slice(b);
}

fn put_str(out: &mut Vec<u8>, field: u32, s: &str) {
    put_bytes(out, field, s.as_bytes());
}

/// A `GraphProto` under construction.
#[derive(Debug, Default)]
pub struct Graph {
    nodes: Vec<Vec<u8>>,
    initializers: Vec<Vec<u8>>,
    inputs: Vec<Vec<u8>>,
    outputs: Vec<Vec<u8>>,
}

fn value_info(name: &str, elem: DataType, dims: &[Dim]) -> Vec<u8> {
    let mut shape = Vec::new();
    for d in dims {
        let mut dim = Vec::new();
        match d {
            Dim::Value(v) => put_varint(&mut dim, 1, *v as i64),
            Dim::Param(p) => put_str(&mut dim, 2, p),
        }
        put_bytes(&mut shape, 1, &dim);
    }
    let mut tensor = Vec::new();
    put_varint(&mut tensor, 1, elem as i64);
    put_bytes(&mut tensor, 2, &shape);
    let mut ty = Vec::new();
    put_bytes(&mut ty, 1, &tensor);
    let mut vi = Vec::new();
    put_str(&mut vi, 1, name);
    put_bytes(&mut vi, 2, &ty);
    vi
}

impl Graph {
    /// Adds a node (`domain` "" is the default ONNX domain).
    pub fn node(
        &mut self,
        op_type: &str,
        domain: &str,
        inputs: &[&str],
        outputs: &[&str],
        attrs: &[Attr],
    ) {
        let mut n = Vec::new();
        for i in inputs {
            put_str(&mut n, 1, i);
        }
        for o in outputs {
            put_str(&mut n, 2, o);
        }
        put_str(&mut n, 3, &format!("{op_type}_{}", self.nodes.len()));
        put_str(&mut n, 4, op_type);
        for a in attrs {
            let mut m = Vec::new();
            match a {
                Attr::Int(name, v) => {
                    put_str(&mut m, 1, name);
                    put_varint(&mut m, 3, *v);
                    put_varint(&mut m, 20, 2);
                }
                Attr::Ints(name, vs) => {
                    put_str(&mut m, 1, name);
                    for v in vs {
                        put_varint(&mut m, 8, *v);
                    }
                    put_varint(&mut m, 20, 7);
                }
            }
            put_bytes(&mut n, 5, &m);
        }
        if !domain.is_empty() {
            put_str(&mut n, 7, domain);
        }
        self.nodes.push(n);
    }

    /// Adds a constant tensor from little-endian raw bytes.
    pub fn initializer(&mut self, name: &str, elem: DataType, dims: &[usize], raw: &[u8]) {
        let mut t = Vec::new();
        for &d in dims {
            put_varint(&mut t, 1, d as i64);
        }
        put_varint(&mut t, 2, elem as i64);
        put_str(&mut t, 8, name);
        put_bytes(&mut t, 9, raw);
        self.initializers.push(t);
    }

    /// `f32` constant.
    pub fn init_f32(&mut self, name: &str, dims: &[usize], v: &[f32]) {
        let raw: Vec<u8> = v.iter().flat_map(|x| x.to_le_bytes()).collect();
        self.initializer(name, DataType::F32, dims, &raw);
    }

    /// `i8` constant.
    pub fn init_i8(&mut self, name: &str, dims: &[usize], v: &[i8]) {
        let raw: Vec<u8> = v.iter().map(|&x| x as u8).collect();
        self.initializer(name, DataType::I8, dims, &raw);
    }

    /// `u8` constant.
    pub fn init_u8(&mut self, name: &str, dims: &[usize], v: &[u8]) {
        self.initializer(name, DataType::U8, dims, v);
    }

    /// `i32` constant.
    pub fn init_i32(&mut self, name: &str, dims: &[usize], v: &[i32]) {
        let raw: Vec<u8> = v.iter().flat_map(|x| x.to_le_bytes()).collect();
        self.initializer(name, DataType::I32, dims, &raw);
    }

    /// `i64` constant.
    pub fn init_i64(&mut self, name: &str, dims: &[usize], v: &[i64]) {
        let raw: Vec<u8> = v.iter().flat_map(|x| x.to_le_bytes()).collect();
        self.initializer(name, DataType::I64, dims, &raw);
    }

    /// Declares a graph input.
    pub fn input(&mut self, name: &str, elem: DataType, dims: &[Dim]) {
        self.inputs.push(value_info(name, elem, dims));
    }

    /// Declares a graph output.
    pub fn output(&mut self, name: &str, elem: DataType, dims: &[Dim]) {
        self.outputs.push(value_info(name, elem, dims));
    }

    /// Encodes a `ModelProto` (IR version 10, default-domain opset 21 and, when
    /// `ms_domain` is set, `com.microsoft` opset 1).
    pub fn into_model(self, name: &str, ms_domain: bool) -> Vec<u8> {
        let mut g = Vec::new();
        for n in &self.nodes {
            put_bytes(&mut g, 1, n);
        }
        put_str(&mut g, 2, name);
        for t in &self.initializers {
            put_bytes(&mut g, 5, t);
        }
        for i in &self.inputs {
            put_bytes(&mut g, 11, i);
        }
        for o in &self.outputs {
            put_bytes(&mut g, 12, o);
        }
        let mut m = Vec::new();
        put_varint(&mut m, 1, 10);
        put_str(&mut m, 2, "lastmile");
        put_bytes(&mut m, 7, &g);
        let mut opset = Vec::new();
        put_str(&mut opset, 1, "");
        put_varint(&mut opset, 2, 21);
        put_bytes(&mut m, 8, &opset);
        if ms_domain {
            let mut opset = Vec::new();
            put_str(&mut opset, 1, "com.microsoft");
            put_varint(&mut opset, 2, 1);
            put_bytes(&mut m, 8, &opset);
        }
        m
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn varints_match_protobuf() {
        let mut v = Vec::new();
        varint(&mut v, 300);
        assert_eq!(v, [0xAC, 0x02]);
        let mut v = Vec::new();
        put_varint(&mut v, 1, -1);
        assert_eq!(
            v.len(),
            11,
            "negative int64 is a 10-byte varint after the key"
        );
        assert_eq!(v[0], 0x08);
    }
}
