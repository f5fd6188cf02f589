//! Canonical bounded binary encoding shared by every HE message.
//!
//! Little-endian fixed-width integers, length-prefixed sequences. Decoding checks every length
//! against [`Limits`] before allocating, rejects trailing bytes and never panics.

use super::error::{Error, Result};

/// Upper bounds applied while decoding peer messages.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    /// Most `u64` words (mask or body coefficients) one message may carry.
    pub max_words: usize,
    /// Most contributors (signed manifests) one message may carry.
    pub max_contributors: usize,
    /// Most chunks one upload may have.
    pub max_chunks: usize,
    /// Most bytes in one signature.
    pub max_signature_bytes: usize,
}

impl Default for Limits {
    /// Enough for 2^24 values in chunks of 2^15 and 100,000 clients.
    fn default() -> Self {
        Self {
            max_words: 1 << 25,
            max_contributors: 100_000,
            max_chunks: 1 << 12,
            max_signature_bytes: 256,
        }
    }
}

/// Appends canonical little-endian fields to a buffer.
#[derive(Debug, Default)]
pub(crate) struct Writer {
    pub(crate) buf: Vec<u8>,
}

impl Writer {
    pub(crate) fn with_tag(tag: &[u8; 4]) -> Self {
        let mut w = Self::default();
        w.buf.extend_from_slice(tag);
        w
    }
    pub(crate) fn u32(&mut self, v: u32) {
        self.buf.extend_from_slice(&v.to_le_bytes());
    }
    pub(crate) fn u64(&mut self, v: u64) {
        self.buf.extend_from_slice(&v.to_le_bytes());
    }
    pub(crate) fn len(&mut self, v: usize) {
        // Lengths are bounded by `Limits` (all far below 2^32) when read back.
        self.u32(u32::try_from(v).unwrap_or(u32::MAX));
    }
    pub(crate) fn bytes(&mut self, v: &[u8]) {
        self.len(v.len());
        self.buf.extend_from_slice(v);
    }
    pub(crate) fn words(&mut self, v: &[u64]) {
        self.len(v.len());
        self.buf.reserve(v.len() * 8);
        for w in v {
            self.buf.extend_from_slice(&w.to_le_bytes());
        }
    }
    pub(crate) fn u32s(&mut self, v: &[u32]) {
        self.len(v.len());
        for w in v {
            self.u32(*w);
        }
    }
    pub(crate) fn finish(self) -> Vec<u8> {
        self.buf
    }
}

/// Reads canonical fields back, checking lengths before allocating.
#[derive(Debug)]
pub(crate) struct Reader<'a> {
    rest: &'a [u8],
    what: &'static str,
}

impl<'a> Reader<'a> {
    pub(crate) fn with_tag(bytes: &'a [u8], tag: &[u8; 4], what: &'static str) -> Result<Self> {
        let mut r = Self { rest: bytes, what };
        let got = r.take(4)?;
        if got != tag {
            return Err(Error::Malformed(format!("{what}: wrong message tag")));
        }
        Ok(r)
    }
    fn err(&self, msg: &str) -> Error {
        Error::Malformed(format!("{}: {msg}", self.what))
    }
    pub(crate) fn take(&mut self, n: usize) -> Result<&'a [u8]> {
        if self.rest.len() < n {
            return Err(self.err("truncated"));
        }
        let (head, tail) = self.rest.split_at(n);
        self.rest = tail;
        Ok(head)
    }
    pub(crate) fn u32(&mut self) -> Result<u32> {
        let b = self.take(4)?;
        Ok(u32::from_le_bytes([b[0], b[1], b[2], b[3]]))
    }
    pub(crate) fn u64(&mut self) -> Result<u64> {
        let b = self.take(8)?;
        let mut a = [0u8; 8];
        a.copy_from_slice(b);
        Ok(u64::from_le_bytes(a))
    }
    /// A length prefix, checked against `max` and against the bytes left (`elem` bytes each).
    pub(crate) fn len(&mut self, max: usize, elem: usize) -> Result<usize> {
        let n = self.u32()? as usize;
        if n > max {
            return Err(self.err(&format!("length {n} over the limit {max}")));
        }
        if n.saturating_mul(elem) > self.rest.len() {
            return Err(self.err("truncated"));
        }
        Ok(n)
    }
    pub(crate) fn bytes(&mut self, max: usize) -> Result<&'a [u8]> {
        let n = self.len(max, 1)?;
        self.take(n)
    }
    pub(crate) fn array32(&mut self) -> Result<[u8; 32]> {
        let mut a = [0u8; 32];
        a.copy_from_slice(self.take(32)?);
        Ok(a)
    }
    pub(crate) fn words(&mut self, max: usize) -> Result<Vec<u64>> {
        let n = self.len(max, 8)?;
        let raw = self.take(n * 8)?;
        Ok(raw
            .chunks_exact(8)
            .map(|c| {
                let mut a = [0u8; 8];
                a.copy_from_slice(c);
                u64::from_le_bytes(a)
            })
            .collect())
    }
    pub(crate) fn u32s(&mut self, max: usize) -> Result<Vec<u32>> {
        let n = self.len(max, 4)?;
        (0..n).map(|_| self.u32()).collect()
    }
    pub(crate) fn finish(self) -> Result<()> {
        if self.rest.is_empty() {
            Ok(())
        } else {
            Err(self.err("trailing bytes"))
        }
    }
}
