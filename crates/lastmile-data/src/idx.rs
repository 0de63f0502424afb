//! Reader for the idx format used by MNIST and Fashion-MNIST, raw or gzip-compressed.
//!
//! Layout: `0x00 0x00 <type> <ndims>`, then `ndims` big-endian `u32` dimensions, then the
//! elements in row-major order. Only type `0x08` (unsigned byte) is supported.

use std::io::{self, Read};
use std::path::{Path, PathBuf};

use flate2::read::MultiGzDecoder;

use crate::error::DataError;

/// The only element type this crate reads: unsigned byte.
const TYPE_U8: u8 = 0x08;
/// idx allows up to 255 dimensions, but no real dataset uses more than 4; refusing more keeps the
/// header small and catches garbage early.
const MAX_DIMS: usize = 4;
/// Longest possible header we accept: magic, type, ndims, then 4 dims of 4 bytes.
const MAX_HEADER: usize = 4 + 4 * MAX_DIMS;
/// First two bytes of every gzip stream.
const GZIP_MAGIC: [u8; 2] = [0x1f, 0x8b];
/// Cap for up-front allocation: the header's claimed size is not trusted until the data arrives.
const MAX_PREALLOC: usize = 1 << 20;

/// The contents of one idx file: its dimensions and its raw `u8` elements (row-major).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IdxArray {
    /// Dimensions in file order, e.g. `[60000, 28, 28]` for MNIST training images.
    pub dims: Vec<usize>,
    /// The elements; `data.len()` equals the product of `dims`.
    pub data: Vec<u8>,
}

impl IdxArray {
    /// Length in bytes of the header that preceded the data (used to turn element indices into
    /// file offsets in error messages).
    pub fn header_len(&self) -> usize {
        4 + 4 * self.dims.len()
    }
}

/// Reads an idx file from disk. Files starting with the gzip magic `1f 8b` are decompressed
/// transparently (any name), everything else is parsed as raw idx.
///
/// Every problem is returned as a [`DataError`] naming `path`; this function never panics on bad
/// input and never allocates more than the file actually contains (plus a small bounded buffer).
pub fn read_idx(path: &Path) -> Result<IdxArray, DataError> {
    let bytes = std::fs::read(path).map_err(|e| {
        if e.kind() == io::ErrorKind::NotFound {
            DataError::Missing {
                path: path.to_path_buf(),
                also_tried: Vec::new(),
                hint: "check the path, or run `cargo xtask data` to fetch MNIST and Fashion-MNIST"
                    .to_owned(),
            }
        } else {
            DataError::Io {
                path: path.to_path_buf(),
                source: e,
            }
        }
    })?;
    if bytes.starts_with(&GZIP_MAGIC) {
        parse_gzip(&bytes, path)
    } else {
        parse_raw_owned(bytes, path)
    }
}

/// Parses an idx file that is already in memory (raw or gzip, detected by the magic bytes).
///
/// `source` is only used in error messages, so that they name where the bytes came from.
pub fn read_idx_bytes(bytes: &[u8], source: &Path) -> Result<IdxArray, DataError> {
    if bytes.starts_with(&GZIP_MAGIC) {
        parse_gzip(bytes, source)
    } else {
        let header = parse_header(head_of(bytes), source)?;
        check_len(&header, bytes.len() - header.len, source)?;
        Ok(IdxArray {
            dims: header.dims,
            data: bytes[header.len..].to_vec(),
        })
    }
}

/// Parsed and validated idx header.
struct Header {
    dims: Vec<usize>,
    /// Header length in bytes.
    len: usize,
    /// Number of data bytes the dims describe.
    count: usize,
}

fn head_of(bytes: &[u8]) -> &[u8] {
    &bytes[..bytes.len().min(MAX_HEADER)]
}

fn format_err(path: &Path, offset: usize, message: String) -> DataError {
    DataError::Format {
        path: path.to_path_buf(),
        offset: offset as u64,
        message,
    }
}

fn type_name(t: u8) -> &'static str {
    match t {
        0x08 => "unsigned byte",
        0x09 => "signed byte",
        0x0b => "int16",
        0x0c => "int32",
        0x0d => "float32",
        0x0e => "float64",
        _ => "unknown type",
    }
}

fn dims_text(dims: &[usize]) -> String {
    let parts: Vec<String> = dims.iter().map(|d| d.to_string()).collect();
    parts.join("×")
}

/// Validates the header found at the start of `head` (which holds the first
/// `min(len, MAX_HEADER)` bytes of the stream; fewer bytes means the stream ended).
fn parse_header(head: &[u8], path: &Path) -> Result<Header, DataError> {
    let truncated = |need: usize, what: &str| {
        format_err(
            path,
            head.len(),
            format!(
                "file ends inside the idx header: {what} need {need} bytes, found {}",
                head.len()
            ),
        )
    };
    // Magic: check byte by byte so the offset points at the first wrong byte.
    for (offset, &b) in head.iter().enumerate().take(2) {
        if b != 0 {
            let found: Vec<String> = head.iter().take(4).map(|b| format!("0x{b:02x}")).collect();
            return Err(format_err(
                path,
                offset,
                format!(
                    "bad idx magic: expected 0x00 0x00 <type> <ndims>, found {}",
                    found.join(" ")
                ),
            ));
        }
    }
    if head.len() < 4 {
        return Err(truncated(4, "magic, type and ndims"));
    }
    let data_type = head[2];
    if data_type != TYPE_U8 {
        return Err(format_err(
            path,
            2,
            format!(
                "idx data type 0x{data_type:02x} ({}) is not supported, expected 0x08 (unsigned byte)",
                type_name(data_type)
            ),
        ));
    }
    let ndims = usize::from(head[3]);
    if !(1..=MAX_DIMS).contains(&ndims) {
        return Err(format_err(
            path,
            3,
            format!("idx ndims {ndims} is not supported, expected 1..={MAX_DIMS}"),
        ));
    }
    let len = 4 + 4 * ndims;
    if head.len() < len {
        return Err(truncated(len, &format!("{ndims} dimensions")));
    }
    let mut dims = Vec::with_capacity(ndims);
    let mut count: usize = 1;
    for i in 0..ndims {
        let off = 4 + 4 * i;
        let d = u32::from_be_bytes([head[off], head[off + 1], head[off + 2], head[off + 3]]);
        // u32 -> usize can only fail on 16-bit targets, but stay checked anyway.
        let d = usize::try_from(d).map_err(|_| {
            format_err(
                path,
                off,
                format!("dimension {i} = {d} does not fit in usize"),
            )
        })?;
        dims.push(d);
        count = count.checked_mul(d).ok_or_else(|| {
            format_err(
                path,
                off,
                format!(
                    "idx dims {} overflow: the element count does not fit in usize ({} bits)",
                    dims_text(&dims),
                    usize::BITS
                ),
            )
        })?;
    }
    // header + data must be addressable too (matters on 32-bit targets).
    if count.checked_add(len).is_none() {
        return Err(format_err(
            path,
            4,
            format!(
                "idx dims {} overflow: header plus data does not fit in usize",
                dims_text(&dims)
            ),
        ));
    }
    Ok(Header { dims, len, count })
}

/// Compares the number of data bytes present with the number the header describes.
fn check_len(header: &Header, have: usize, path: &Path) -> Result<(), DataError> {
    if have < header.count {
        return Err(format_err(
            path,
            header.len + have,
            format!(
                "data truncated: dims {} need {} data bytes after the {}-byte header, found {have}",
                dims_text(&header.dims),
                header.count,
                header.len
            ),
        ));
    }
    if have > header.count {
        return Err(trailing(header, (have - header.count) as u64, path));
    }
    Ok(())
}

fn trailing(header: &Header, extra: u64, path: &Path) -> DataError {
    format_err(
        path,
        header.len + header.count,
        format!(
            "{extra} trailing bytes after the {} data bytes that dims {} describe",
            header.count,
            dims_text(&header.dims)
        ),
    )
}

/// Raw file already read into an owned buffer: validate, then strip the header in place
/// (saves copying ~47 MB for MNIST's training images).
fn parse_raw_owned(mut bytes: Vec<u8>, path: &Path) -> Result<IdxArray, DataError> {
    let header = parse_header(head_of(&bytes), path)?;
    check_len(&header, bytes.len() - header.len, path)?;
    bytes.drain(..header.len);
    Ok(IdxArray {
        dims: header.dims,
        data: bytes,
    })
}

/// Counts how many bytes have passed through, so gzip errors can report a position.
struct Counting<R> {
    inner: R,
    pos: u64,
}

impl<R: Read> Read for Counting<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = self.inner.read(buf)?;
        self.pos += n as u64;
        Ok(n)
    }
}

/// Reads until `buf` is full or the stream ends; returns how many bytes were read.
fn read_full(r: &mut impl Read, buf: &mut [u8]) -> io::Result<usize> {
    let mut filled = 0;
    while filled < buf.len() {
        match r.read(&mut buf[filled..]) {
            Ok(0) => break,
            Ok(n) => filled += n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(filled)
}

/// Decompresses and parses a gzip'd idx stream without trusting the header's size claim:
/// memory grows only as real data arrives, and the trailing check streams to a sink.
fn parse_gzip(bytes: &[u8], path: &Path) -> Result<IdxArray, DataError> {
    // MultiGzDecoder: concatenated members are legal gzip; garbage after a member is then
    // reported as an invalid header instead of being silently ignored.
    let mut dec = Counting {
        inner: MultiGzDecoder::new(bytes),
        pos: 0,
    };
    let gz_err = |pos: u64, source: io::Error| DataError::Gzip {
        path: PathBuf::from(path),
        offset: pos,
        source,
    };

    let mut head = [0u8; MAX_HEADER];
    let n = read_full(&mut dec, &mut head).map_err(|e| gz_err(dec.pos, e))?;
    let header = parse_header(&head[..n], path)?;

    let already = &head[header.len..n];
    let mut data = Vec::with_capacity(header.count.min(MAX_PREALLOC));
    let mut extra: u64 = 0;
    if already.len() > header.count {
        // Tiny arrays: the header read already went past the end of the data.
        data.extend_from_slice(&already[..header.count]);
        extra = (already.len() - header.count) as u64;
    } else {
        data.extend_from_slice(already);
        let want = (header.count - data.len()) as u64;
        (&mut dec)
            .take(want)
            .read_to_end(&mut data)
            .map_err(|e| gz_err(dec.pos, e))?;
    }
    // Drain the rest: this also makes the decoder verify the CRC and length trailer.
    extra += io::copy(&mut dec, &mut io::sink()).map_err(|e| gz_err(dec.pos, e))?;

    check_len(&header, data.len(), path)?;
    if extra > 0 {
        return Err(trailing(&header, extra, path));
    }
    Ok(IdxArray {
        dims: header.dims,
        data,
    })
}
