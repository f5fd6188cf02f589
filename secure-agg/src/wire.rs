//! Canonical, bounded binary encoding: a writer and a reader that never panics.

use crate::error::{Error, Result};

/// Upper bounds the decoder enforces before allocating anything.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    /// Most entries in a list of clients (directory entries, packets, shares, survivors).
    pub max_clients: usize,
    /// Longest signature accepted, in bytes.
    pub max_signature_len: usize,
    /// Longest masked vector accepted, in values.
    pub max_vector_len: usize,
}

impl Default for Limits {
    /// 1,000,000 clients, 512-byte signatures, 2^31 values.
    fn default() -> Self {
        Self {
            max_clients: 1_000_000,
            max_signature_len: 512,
            max_vector_len: 1 << 31,
        }
    }
}

pub(crate) struct Writer(pub(crate) Vec<u8>);

impl Writer {
    pub(crate) fn new(tag: u8) -> Self {
        Writer(vec![tag])
    }
    pub(crate) fn u8(&mut self, v: u8) {
        self.0.push(v);
    }
    pub(crate) fn u16(&mut self, v: u16) {
        self.0.extend_from_slice(&v.to_le_bytes());
    }
    pub(crate) fn u32(&mut self, v: u32) {
        self.0.extend_from_slice(&v.to_le_bytes());
    }
    pub(crate) fn u64(&mut self, v: u64) {
        self.0.extend_from_slice(&v.to_le_bytes());
    }
    pub(crate) fn bytes(&mut self, v: &[u8]) {
        self.0.extend_from_slice(v);
    }
    /// A `u16` length and the bytes (signatures).
    pub(crate) fn short_bytes(&mut self, v: &[u8]) {
        self.u16(u16::try_from(v.len()).unwrap_or(u16::MAX));
        self.bytes(&v[..v.len().min(usize::from(u16::MAX))]);
    }
}

pub(crate) struct Reader<'a> {
    buf: &'a [u8],
    at: usize,
    message: &'static str,
}

impl<'a> Reader<'a> {
    /// A reader that first checks the leading tag byte.
    pub(crate) fn new(buf: &'a [u8], tag: u8, message: &'static str) -> Result<Self> {
        let mut r = Reader {
            buf,
            at: 0,
            message,
        };
        let got = r.u8()?;
        if got != tag {
            return Err(Error::malformed(
                message,
                format!("tag {got:#04x}, expected {tag:#04x}"),
            ));
        }
        Ok(r)
    }

    pub(crate) fn take(&mut self, n: usize) -> Result<&'a [u8]> {
        let end = self.at.checked_add(n).filter(|&e| e <= self.buf.len());
        match end {
            Some(end) => {
                let s = &self.buf[self.at..end];
                self.at = end;
                Ok(s)
            }
            None => Err(Error::malformed(
                self.message,
                format!(
                    "truncated: needs {n} more bytes at offset {}, has {}",
                    self.at,
                    self.buf.len() - self.at
                ),
            )),
        }
    }

    pub(crate) fn array<const N: usize>(&mut self) -> Result<[u8; N]> {
        let mut out = [0_u8; N];
        out.copy_from_slice(self.take(N)?);
        Ok(out)
    }
    pub(crate) fn u8(&mut self) -> Result<u8> {
        Ok(self.array::<1>()?[0])
    }
    pub(crate) fn u16(&mut self) -> Result<u16> {
        Ok(u16::from_le_bytes(self.array()?))
    }
    pub(crate) fn u32(&mut self) -> Result<u32> {
        Ok(u32::from_le_bytes(self.array()?))
    }
    pub(crate) fn u64(&mut self) -> Result<u64> {
        Ok(u64::from_le_bytes(self.array()?))
    }

    /// A `u32` count, at most `max` and at most what the remaining bytes can hold at
    /// `min_item` bytes per item.
    pub(crate) fn count(&mut self, max: usize, min_item: usize) -> Result<usize> {
        let n = self.u32()? as usize;
        let room = (self.buf.len() - self.at) / min_item.max(1);
        if n > max || n > room {
            return Err(Error::malformed(
                self.message,
                format!("count {n} over the limit {max} or the {room} items the bytes can hold"),
            ));
        }
        Ok(n)
    }

    pub(crate) fn signature(&mut self, limits: &Limits) -> Result<Vec<u8>> {
        let n = usize::from(self.u16()?);
        if n > limits.max_signature_len {
            return Err(Error::malformed(
                self.message,
                format!("signature of {n} bytes, limit {}", limits.max_signature_len),
            ));
        }
        Ok(self.take(n)?.to_vec())
    }

    /// Errors unless every byte was read.
    pub(crate) fn finish(self) -> Result<()> {
        if self.at != self.buf.len() {
            return Err(Error::malformed(
                self.message,
                format!("{} trailing bytes", self.buf.len() - self.at),
            ));
        }
        Ok(())
    }

    pub(crate) fn malformed(&self, reason: impl Into<String>) -> Error {
        Error::malformed(self.message, reason)
    }
}

/// Checks that ids are strictly increasing (canonical order, no duplicates).
pub(crate) fn strictly_increasing(
    ids: impl Iterator<Item = u32>,
    r: &Reader<'_>,
    what: &str,
) -> Result<()> {
    let mut last: Option<u32> = None;
    for id in ids {
        if last.is_some_and(|l| l >= id) {
            return Err(r.malformed(format!("{what} not in strictly increasing order at {id}")));
        }
        last = Some(id);
    }
    Ok(())
}

/// Bit-packs values `< 2^bits` little-endian, least significant bit first:
/// `ceil(len * bits / 8)` bytes.
pub fn pack_values(values: &[u32], bits: u32) -> Vec<u8> {
    let bits = bits.clamp(1, 32);
    // The whole-byte widths write into a zeroed buffer with plain loops (they vectorise;
    // `flat_map` + `collect` does not).
    if bits == 32 {
        let mut out = vec![0_u8; 4 * values.len()];
        for (o, v) in out.chunks_exact_mut(4).zip(values) {
            o.copy_from_slice(&v.to_le_bytes());
        }
        return out;
    }
    if bits == 16 {
        let mut out = vec![0_u8; 2 * values.len()];
        for (o, &v) in out.chunks_exact_mut(2).zip(values) {
            o.copy_from_slice(&(v as u16).to_le_bytes());
        }
        return out;
    }
    if bits == 8 {
        return values.iter().map(|&v| v as u8).collect();
    }
    let mask = (1_u64 << bits) - 1;
    let mut out = Vec::with_capacity((values.len() * bits as usize).div_ceil(8));
    let mut acc = 0_u64;
    let mut have = 0_u32;
    for &v in values {
        acc |= (u64::from(v) & mask) << have;
        have += bits;
        while have >= 8 {
            out.push(acc as u8);
            acc >>= 8;
            have -= 8;
        }
    }
    if have > 0 {
        out.push(acc as u8);
    }
    out
}

/// Inverts [`pack_values`] for `len` values.
///
/// # Errors
/// [`Error::Malformed`] if `bytes` is not exactly `ceil(len * bits / 8)` long or the padding
/// bits of the last byte are not zero.
pub fn unpack_values(bytes: &[u8], bits: u32, len: usize) -> Result<Vec<u32>> {
    let bits = bits.clamp(1, 32);
    let expected = len
        .checked_mul(bits as usize)
        .map(|b| b.div_ceil(8))
        .ok_or_else(|| Error::malformed("masked vector", "length overflows"))?;
    if bytes.len() != expected {
        return Err(Error::malformed(
            "masked vector",
            format!(
                "{} bytes, {len} values of {bits} bits need {expected}",
                bytes.len()
            ),
        ));
    }
    match bits {
        32 => {
            let mut out = vec![0_u32; len];
            for (o, c) in out.iter_mut().zip(bytes.chunks_exact(4)) {
                *o = u32::from_le_bytes([c[0], c[1], c[2], c[3]]);
            }
            return Ok(out);
        }
        16 => {
            let mut out = vec![0_u32; len];
            for (o, c) in out.iter_mut().zip(bytes.chunks_exact(2)) {
                *o = u32::from(u16::from_le_bytes([c[0], c[1]]));
            }
            return Ok(out);
        }
        8 => return Ok(bytes.iter().map(|&b| u32::from(b)).collect()),
        _ => {}
    }
    let mask = (1_u64 << bits) - 1;
    let mut out = Vec::with_capacity(len);
    let mut acc = 0_u64;
    let mut have = 0_u32;
    let mut it = bytes.iter();
    for _ in 0..len {
        while have < bits {
            acc |= u64::from(*it.next().unwrap_or(&0)) << have;
            have += 8;
        }
        out.push((acc & mask) as u32);
        acc >>= bits;
        have -= bits;
    }
    if acc != 0 {
        return Err(Error::malformed("masked vector", "non-zero padding bits"));
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn packing_round_trips_every_width() {
        for bits in 1..=32_u32 {
            let mask = if bits == 32 {
                u32::MAX
            } else {
                (1 << bits) - 1
            };
            for len in [0, 1, 7, 8, 9, 100] {
                let v: Vec<u32> = (0..len as u32)
                    .map(|i| i.wrapping_mul(2_654_435_761) & mask)
                    .collect();
                let p = pack_values(&v, bits);
                assert_eq!(p.len(), (len * bits as usize).div_ceil(8));
                assert_eq!(unpack_values(&p, bits, len).unwrap(), v, "{bits} {len}");
                if !p.is_empty() {
                    let res = unpack_values(&p[1..], bits, len);
                    assert!(
                        matches!(
                            &res,
                            Err(Error::Malformed { message: "masked vector", reason })
                                if reason.starts_with(&format!("{} bytes, {len} values", p.len() - 1))
                        ),
                        "{res:?}"
                    );
                }
            }
        }
        let res = unpack_values(&[0xff], 3, 2);
        assert!(
            matches!(
                &res,
                Err(Error::Malformed { message: "masked vector", reason })
                    if reason == "non-zero padding bits"
            ),
            "{res:?}"
        );
    }
}
