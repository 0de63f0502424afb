//! A labelled set in flash: adaptation samples and held-out test samples, already
//! quantized to the model's input codes (the host does the float → int8 step, so the MCU
//! never touches pixels).
//!
//! Layout, little-endian:
//!
//! ```text
//! magic      8 bytes  "LMADSET1"
//! name_len   u32      then name_len bytes of UTF-8 (e.g. "digits-test+contrast@4")
//! sample_len u32      codes per sample
//! classes    u32
//! n_train    u32
//! n_test     u32
//! train      n_train × sample_len i8 codes, then n_train u8 labels
//! test       n_test  × sample_len i8 codes, then n_test  u8 labels
//! ```

use alloc::format;
use alloc::string::String;
use alloc::vec::Vec;
use core::ops::Range;

/// First bytes of a set file.
pub const MAGIC: &[u8; 8] = b"LMADSET1";

/// A parsed set, borrowing the file's bytes.
#[derive(Clone, Copy, Debug)]
pub struct LabelledSet<'a> {
    name: &'a str,
    sample_len: usize,
    classes: usize,
    train_x: &'a [u8],
    train_y: &'a [u8],
    test_x: &'a [u8],
    test_y: &'a [u8],
}

struct Reader<'a> {
    bytes: &'a [u8],
    at: usize,
}

impl<'a> Reader<'a> {
    fn take(&mut self, n: usize, what: &str) -> Result<&'a [u8], String> {
        let end = self.at.checked_add(n).filter(|&e| e <= self.bytes.len());
        let Some(end) = end else {
            return Err(format!(
                "the embedded set file is truncated: {what} needs {n} bytes at offset {}, the file has {}",
                self.at,
                self.bytes.len()
            ));
        };
        let s = &self.bytes[self.at..end];
        self.at = end;
        Ok(s)
    }

    fn u32(&mut self, what: &str) -> Result<usize, String> {
        let b = self.take(4, what)?;
        Ok(u32::from_le_bytes([b[0], b[1], b[2], b[3]]) as usize)
    }
}

impl<'a> LabelledSet<'a> {
    /// Parses and checks a set file (sizes, labels below `classes`).
    pub fn parse(bytes: &'a [u8]) -> Result<Self, String> {
        let mut r = Reader { bytes, at: 0 };
        if r.take(8, "the magic")? != MAGIC {
            return Err("the embedded set file does not start with \"LMADSET1\"".into());
        }
        let name_len = r.u32("the name length")?;
        let name = core::str::from_utf8(r.take(name_len, "the name")?)
            .map_err(|_| String::from("the embedded set file's name is not UTF-8"))?;
        let sample_len = r.u32("sample_len")?;
        let classes = r.u32("classes")?;
        let n_train = r.u32("n_train")?;
        let n_test = r.u32("n_test")?;
        let size = |n: usize| {
            n.checked_mul(sample_len)
                .ok_or_else(|| String::from("the embedded set file's sizes overflow"))
        };
        let set = LabelledSet {
            name,
            sample_len,
            classes,
            train_x: r.take(size(n_train)?, "the adaptation samples")?,
            train_y: r.take(n_train, "the adaptation labels")?,
            test_x: r.take(size(n_test)?, "the test samples")?,
            test_y: r.take(n_test, "the test labels")?,
        };
        if r.at != bytes.len() {
            return Err(format!(
                "the embedded set file has {} trailing bytes",
                bytes.len() - r.at
            ));
        }
        if let Some(&y) = set
            .train_y
            .iter()
            .chain(set.test_y)
            .find(|&&y| y as usize >= classes)
        {
            return Err(format!(
                "the embedded set file has label {y}, but only {classes} classes"
            ));
        }
        Ok(set)
    }

    /// Writes a set file (used by the host to build the firmware's data).
    pub fn encode(
        name: &str,
        sample_len: usize,
        classes: usize,
        train: (&[i8], &[u8]),
        test: (&[i8], &[u8]),
    ) -> Result<Vec<u8>, String> {
        for (what, (x, y)) in [("adaptation", train), ("test", test)] {
            if x.len() != y.len() * sample_len {
                return Err(format!(
                    "{what} part: {} codes for {} labels of {sample_len}-code samples",
                    x.len(),
                    y.len()
                ));
            }
        }
        let u32le = |n: usize| -> Result<[u8; 4], String> {
            u32::try_from(n)
                .map(u32::to_le_bytes)
                .map_err(|_| format!("{n} does not fit the set format's u32"))
        };
        let mut out = Vec::new();
        out.extend_from_slice(MAGIC);
        out.extend_from_slice(&u32le(name.len())?);
        out.extend_from_slice(name.as_bytes());
        for n in [sample_len, classes, train.1.len(), test.1.len()] {
            out.extend_from_slice(&u32le(n)?);
        }
        for (x, y) in [train, test] {
            out.extend(x.iter().map(|&c| c as u8));
            out.extend_from_slice(y);
        }
        Ok(out)
    }

    /// The set's name.
    pub fn name(&self) -> &'a str {
        self.name
    }
    /// Codes per sample.
    pub fn sample_len(&self) -> usize {
        self.sample_len
    }
    /// Number of classes.
    pub fn classes(&self) -> usize {
        self.classes
    }
    /// Adaptation samples.
    pub fn train_len(&self) -> usize {
        self.train_y.len()
    }
    /// Held-out test samples.
    pub fn test_len(&self) -> usize {
        self.test_y.len()
    }

    fn codes(x: &[u8], sample_len: usize, r: Range<usize>, out: &mut Vec<i8>) {
        out.clear();
        out.extend(
            x[r.start * sample_len..r.end * sample_len]
                .iter()
                .map(|&b| b as i8),
        );
    }

    /// Input codes of adaptation samples `r`, into `out`.
    pub fn train_codes(&self, r: Range<usize>, out: &mut Vec<i8>) {
        Self::codes(self.train_x, self.sample_len, r, out);
    }
    /// Labels of adaptation samples `r`.
    pub fn train_labels(&self, r: Range<usize>) -> &'a [u8] {
        &self.train_y[r]
    }
    /// Input codes of test samples `r`, into `out`.
    pub fn test_codes(&self, r: Range<usize>, out: &mut Vec<i8>) {
        Self::codes(self.test_x, self.sample_len, r, out);
    }
    /// Labels of test samples `r`.
    pub fn test_labels(&self, r: Range<usize>) -> &'a [u8] {
        &self.test_y[r]
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip_and_errors() {
        let x = [1i8, -2, 3, -4];
        let bytes = LabelledSet::encode("t", 2, 3, (&x, &[0, 2]), (&x[..2], &[1])).unwrap();
        let s = LabelledSet::parse(&bytes).unwrap();
        assert_eq!((s.name(), s.train_len(), s.test_len()), ("t", 2, 1));
        let mut v = Vec::new();
        s.train_codes(1..2, &mut v);
        assert_eq!(v, [3, -4]);
        assert!(LabelledSet::parse(&bytes[..bytes.len() - 1]).is_err());
        let mut bad = bytes.clone();
        *bad.last_mut().unwrap() = 7; // label 7 of 3 classes
        assert!(LabelledSet::parse(&bad).unwrap_err().contains("label 7"));
    }
}
