//! CAR v1 (content-addressable archive) files: what `ipfs dag import` reads and `ipfs dag
//! export` writes.
//!
//! A CAR v1 is `varint(len) ‖ header` then, per block, `varint(len) ‖ CID ‖ block bytes`, the
//! header being the DAG-CBOR map `{"roots": [CID...], "version": 1}` (CIDs as CBOR tag 42 over
//! `0x00 ‖ CID bytes`). The header is written and read with `ciborium` (CBOR); varints are
//! unsigned LEB128. Reading is bounded ([`CarLimits`]) and checks every block against its CID
//! (SHA-256 multihashes only: the only ones daofl writes), so a block whose bytes do not hash
//! to its CID is refused, never returned.

use std::io::Cursor;

use ciborium::value::Value;
use cid::Cid;
use fl_core::ContentHash;

/// Multihash code of SHA2-256.
const SHA2_256: u64 = 0x12;
/// CBOR tag of a CID in DAG-CBOR.
const CID_TAG: u64 = 42;

/// Bounds on what [`read`] accepts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CarLimits {
    /// Largest header, in bytes.
    pub max_header_bytes: usize,
    /// Largest block (without its CID), in bytes.
    pub max_block_bytes: usize,
    /// Most blocks.
    pub max_blocks: usize,
}

impl Default for CarLimits {
    /// 64 KiB header, blocks up to a proposal record's limit, 100,000 blocks.
    fn default() -> Self {
        CarLimits {
            max_header_bytes: 64 << 10,
            max_block_bytes: contrib::record::MAX_PROPOSAL_RECORD_BYTES,
            max_blocks: 100_000,
        }
    }
}

/// Why a CAR was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum CarError {
    /// The file ends inside a length, a CID or a block.
    #[error("CAR truncated at byte {at}")]
    Truncated {
        /// Offset where more bytes were needed.
        at: usize,
    },
    /// A length prefix is not a valid unsigned varint.
    #[error("malformed varint at byte {at}")]
    Varint {
        /// Its offset.
        at: usize,
    },
    /// The header is not `{"roots": [CID...], "version": 1}` in DAG-CBOR.
    #[error("malformed CAR header: {0}")]
    Header(String),
    /// A header or block over its limit.
    #[error("{what} of {len} bytes exceeds the limit of {limit}")]
    TooLarge {
        /// `header` or `block`.
        what: &'static str,
        /// Its length.
        len: u64,
        /// The limit.
        limit: usize,
    },
    /// More blocks than the limit.
    #[error("more than {limit} blocks")]
    TooManyBlocks {
        /// The limit.
        limit: usize,
    },
    /// A block's CID does not parse, or uses a hash this reader cannot check.
    #[error("block at byte {at}: {reason}")]
    Cid {
        /// The block's offset.
        at: usize,
        /// What was wrong.
        reason: String,
    },
    /// A block's bytes do not hash to its CID.
    #[error("block {cid} does not match its bytes (they hash to {actual})")]
    Mismatch {
        /// The CID the block claims, as text.
        cid: String,
        /// The SHA-256 of its bytes, as a raw CID.
        actual: ContentHash,
    },
}

/// A CAR read and checked: its roots and its blocks, in file order.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Car {
    /// The header's roots.
    pub roots: Vec<Cid>,
    /// Each block's CID and bytes (each checked against its CID).
    pub blocks: Vec<(Cid, Vec<u8>)>,
}

/// Writes a CAR v1 with `roots` and `blocks` (written as given: the caller gives each block's
/// CID).
pub fn write<'a>(roots: &[Cid], blocks: impl IntoIterator<Item = (Cid, &'a [u8])>) -> Vec<u8> {
    let roots = roots
        .iter()
        .map(|cid| {
            let mut bytes = vec![0u8];
            bytes.extend(cid.to_bytes());
            Value::Tag(CID_TAG, Box::new(Value::Bytes(bytes)))
        })
        .collect();
    // DAG-CBOR's key order: shorter keys first.
    let header = Value::Map(vec![
        (Value::Text("roots".into()), Value::Array(roots)),
        (Value::Text("version".into()), Value::Integer(1.into())),
    ]);
    let mut header_bytes = Vec::new();
    ciborium::ser::into_writer(&header, &mut header_bytes)
        .expect("a CBOR value always writes to a Vec");
    let mut out = Vec::new();
    put_varint(&mut out, header_bytes.len() as u64);
    out.extend(header_bytes);
    for (cid, block) in blocks {
        let cid = cid.to_bytes();
        put_varint(&mut out, (cid.len() + block.len()) as u64);
        out.extend(cid);
        out.extend_from_slice(block);
    }
    out
}

/// Reads a CAR v1 within `limits`, checking every block against its CID.
pub fn read(bytes: &[u8], limits: &CarLimits) -> Result<Car, CarError> {
    let mut at = 0;
    let header_len = take_varint(bytes, &mut at)?;
    if header_len > limits.max_header_bytes as u64 {
        return Err(CarError::TooLarge {
            what: "header",
            len: header_len,
            limit: limits.max_header_bytes,
        });
    }
    let header = take(bytes, &mut at, header_len as usize)?;
    let roots = parse_header(header)?;
    let mut blocks = Vec::new();
    while at < bytes.len() {
        if blocks.len() == limits.max_blocks {
            return Err(CarError::TooManyBlocks {
                limit: limits.max_blocks,
            });
        }
        let start = at;
        let len = take_varint(bytes, &mut at)?;
        // A CID of a SHA-256 multihash is at most a few dozen bytes.
        if len > (limits.max_block_bytes + 64) as u64 {
            return Err(CarError::TooLarge {
                what: "block",
                len,
                limit: limits.max_block_bytes,
            });
        }
        let section = take(bytes, &mut at, len as usize)?;
        let mut cursor = Cursor::new(section);
        let cid = Cid::read_bytes(&mut cursor).map_err(|e| CarError::Cid {
            at: start,
            reason: e.to_string(),
        })?;
        let data = &section[cursor.position() as usize..];
        if data.len() > limits.max_block_bytes {
            return Err(CarError::TooLarge {
                what: "block",
                len: data.len() as u64,
                limit: limits.max_block_bytes,
            });
        }
        let mh = cid.hash();
        if mh.code() != SHA2_256 || mh.digest().len() != 32 {
            return Err(CarError::Cid {
                at: start,
                reason: format!("multihash {:#x} is not sha2-256", mh.code()),
            });
        }
        let actual = ContentHash::of(data);
        if actual.as_bytes()[..] != *mh.digest() {
            return Err(CarError::Mismatch {
                cid: cid.to_string(),
                actual,
            });
        }
        blocks.push((cid, data.to_vec()));
    }
    Ok(Car { roots, blocks })
}

fn parse_header(header: &[u8]) -> Result<Vec<Cid>, CarError> {
    let bad = |why: &str| CarError::Header(why.to_owned());
    let value: Value =
        ciborium::de::from_reader(header).map_err(|e| CarError::Header(e.to_string()))?;
    let Value::Map(entries) = value else {
        return Err(bad("not a map"));
    };
    let field = |name: &str| {
        entries
            .iter()
            .find(|(k, _)| k.as_text() == Some(name))
            .map(|(_, v)| v)
    };
    match field("version") {
        Some(Value::Integer(v)) if i128::from(*v) == 1 => {}
        _ => return Err(bad("version is not 1")),
    }
    let Some(Value::Array(roots)) = field("roots") else {
        return Err(bad("no roots array"));
    };
    roots
        .iter()
        .map(|root| match root {
            Value::Tag(CID_TAG, inner) => match inner.as_ref() {
                Value::Bytes(b) if b.first() == Some(&0) => {
                    Cid::try_from(&b[1..]).map_err(|e| CarError::Header(e.to_string()))
                }
                _ => Err(bad("a root is not 0x00-prefixed CID bytes")),
            },
            _ => Err(bad("a root is not a CID (tag 42)")),
        })
        .collect()
}

fn take<'a>(bytes: &'a [u8], at: &mut usize, len: usize) -> Result<&'a [u8], CarError> {
    let end = at
        .checked_add(len)
        .filter(|&end| end <= bytes.len())
        .ok_or(CarError::Truncated { at: *at })?;
    let out = &bytes[*at..end];
    *at = end;
    Ok(out)
}

fn put_varint(out: &mut Vec<u8>, mut value: u64) {
    while value >= 0x80 {
        out.push((value as u8) | 0x80);
        value >>= 7;
    }
    out.push(value as u8);
}

/// An unsigned LEB128 of at most 9 bytes (63 bits), minimal.
fn take_varint(bytes: &[u8], at: &mut usize) -> Result<u64, CarError> {
    let start = *at;
    let mut value = 0u64;
    for i in 0..9 {
        let byte = *bytes.get(*at).ok_or(CarError::Truncated { at: *at })?;
        *at += 1;
        value |= u64::from(byte & 0x7f) << (7 * i);
        if byte & 0x80 == 0 {
            if byte == 0 && i > 0 {
                return Err(CarError::Varint { at: start });
            }
            return Ok(value);
        }
    }
    Err(CarError::Varint { at: start })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn block(text: &str) -> (Cid, Vec<u8>) {
        let bytes = text.as_bytes().to_vec();
        (ContentHash::of(&bytes).to_cid(), bytes)
    }

    #[test]
    fn written_cars_read_back() {
        let blocks = [block("one"), block("two"), block(&"x".repeat(300))];
        let roots = [blocks[0].0, blocks[1].0];
        let car = write(&roots, blocks.iter().map(|(c, b)| (*c, b.as_slice())));
        let back = read(&car, &CarLimits::default()).unwrap();
        assert_eq!(back.roots, roots);
        assert_eq!(back.blocks, blocks.to_vec());
    }

    /// A CAR v1 as go-car/Kubo write it (header bytes from the CAR v1 specification's layout:
    /// `a2 65 roots 81 d8 2a 58 25 00 <cid> 67 version 01`), read by ours.
    #[test]
    fn the_header_is_dag_cbor() {
        let (cid, _) = block("one");
        let car = write(&[cid], []);
        let mut expected = vec![0xa2, 0x65];
        expected.extend(b"roots");
        expected.extend([0x81, 0xd8, 0x2a, 0x58, 0x25, 0x00]);
        expected.extend(cid.to_bytes());
        expected.push(0x67);
        expected.extend(b"version");
        expected.push(0x01);
        assert_eq!(car[0] as usize, expected.len());
        assert_eq!(&car[1..], &expected[..]);
    }

    #[test]
    fn hostile_cars_are_refused() {
        let limits = CarLimits::default();
        let (cid, bytes) = block("one");
        let good = write(&[cid], [(cid, bytes.as_slice())]);
        // A block whose bytes do not hash to its CID.
        let mut tampered = good.clone();
        *tampered.last_mut().unwrap() ^= 1;
        assert!(matches!(
            read(&tampered, &limits),
            Err(CarError::Mismatch { .. })
        ));
        // Cut anywhere but right after the header (a valid CAR of no block): truncated or a
        // bad header, never a panic.
        let header_end = 1 + good[0] as usize;
        for cut in (0..good.len()).filter(|&cut| cut != header_end) {
            assert!(read(&good[..cut], &limits).is_err(), "cut at {cut}");
        }
        // Oversized header and block lengths are refused before reading them.
        let mut huge = Vec::new();
        put_varint(&mut huge, 1 << 40);
        assert!(matches!(
            read(&huge, &limits),
            Err(CarError::TooLarge { what: "header", .. })
        ));
        let mut big_block = write(&[cid], []);
        put_varint(&mut big_block, (limits.max_block_bytes + 1_000) as u64);
        assert!(matches!(
            read(&big_block, &limits),
            Err(CarError::TooLarge { what: "block", .. })
        ));
        // Not CBOR, wrong version.
        assert!(matches!(
            read(&[2, 0xff, 0xff], &limits),
            Err(CarError::Header(_))
        ));
        let mut v2 = good.clone();
        let version_at = v2.iter().position(|&b| b == 0x67).unwrap() + 8;
        v2[version_at] = 0x02;
        assert!(matches!(read(&v2, &limits), Err(CarError::Header(_))));
        // Too many blocks.
        let many = write(&[], (0..3).map(|_| (cid, bytes.as_slice())));
        let few = CarLimits {
            max_blocks: 2,
            ..limits
        };
        assert!(matches!(
            read(&many, &few),
            Err(CarError::TooManyBlocks { limit: 2 })
        ));
        // A non-minimal varint.
        assert!(matches!(
            read(&[0x80, 0x00], &limits),
            Err(CarError::Varint { .. })
        ));
    }
}
