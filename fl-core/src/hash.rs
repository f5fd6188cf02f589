//! Content hashes: SHA-256 digests printable as IPFS-compatible CIDv1 strings.

use std::fmt;
use std::str::FromStr;

use cid::Cid;
use cid::multihash::Multihash;
use serde::{Deserialize, Serialize};
use sha2::{Digest as _, Sha256};

/// Multicodec code of the `raw` codec (bytes addressed as they are).
const RAW_CODEC: u64 = 0x55;
/// Multihash code of SHA2-256.
const SHA2_256: u64 = 0x12;

/// A SHA-256 digest of some canonical byte string.
///
/// `Display` prints it as a CIDv1 with the `raw` codec in base32 (`bafkrei...`), the form
/// IPFS uses for a single raw block, so a checkpoint's parameter file and its hash can be
/// pinned and looked up on IPFS as they are. [`ContentHash::to_hex`] gives the bare digest.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub struct ContentHash(#[serde(with = "hex_bytes")] [u8; 32]);

impl ContentHash {
    /// Hashes `bytes` with SHA-256.
    pub fn of(bytes: &[u8]) -> Self {
        Self(Sha256::digest(bytes).into())
    }

    /// Wraps an existing SHA-256 digest.
    pub const fn from_digest(digest: [u8; 32]) -> Self {
        Self(digest)
    }

    /// The 32 digest bytes.
    pub const fn as_bytes(&self) -> &[u8; 32] {
        &self.0
    }

    /// The digest as 64 lowercase hex characters.
    pub fn to_hex(&self) -> String {
        hex::encode(self.0)
    }

    /// The digest as a CIDv1 (`raw` codec, sha2-256 multihash).
    pub fn to_cid(&self) -> Cid {
        let mh = Multihash::<64>::wrap(SHA2_256, &self.0)
            .expect("a 32-byte digest always fits a 64-byte multihash");
        Cid::new_v1(RAW_CODEC, mh)
    }

    /// Parses a CIDv1 string of the `raw` codec with a sha2-256 multihash.
    pub fn from_cid_str(s: &str) -> Result<Self, CidError> {
        let cid = Cid::from_str(s).map_err(|e| CidError::Malformed(e.to_string()))?;
        if cid.version() != cid::Version::V1 || cid.codec() != RAW_CODEC {
            return Err(CidError::Unsupported(format!(
                "expected a CIDv1 with the raw codec (0x55), got {:?} with codec {:#x}",
                cid.version(),
                cid.codec()
            )));
        }
        let mh = cid.hash();
        if mh.code() != SHA2_256 || mh.digest().len() != 32 {
            return Err(CidError::Unsupported(format!(
                "expected a sha2-256 multihash, got code {:#x} with {} digest bytes",
                mh.code(),
                mh.digest().len()
            )));
        }
        let mut d = [0u8; 32];
        d.copy_from_slice(mh.digest());
        Ok(Self(d))
    }
}

impl fmt::Display for ContentHash {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(&self.to_cid(), f)
    }
}

impl fmt::Debug for ContentHash {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "ContentHash({})", self.to_hex())
    }
}

impl FromStr for ContentHash {
    type Err = CidError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Self::from_cid_str(s)
    }
}

/// Why a string is not an accepted content identifier.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum CidError {
    /// The string is not a CID at all.
    #[error("malformed CID: {0}")]
    Malformed(String),
    /// A valid CID, but not a CIDv1 raw sha2-256 one.
    #[error("unsupported CID: {0}")]
    Unsupported(String),
}

/// An incremental SHA-256 hasher producing a [`ContentHash`].
#[derive(Default, Clone)]
pub struct ContentHasher(Sha256);

impl std::fmt::Debug for ContentHasher {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("ContentHasher")
    }
}

impl ContentHasher {
    /// A fresh hasher.
    pub fn new() -> Self {
        Self::default()
    }

    /// Feeds bytes.
    pub fn update(&mut self, bytes: &[u8]) {
        self.0.update(bytes);
    }

    /// The digest of everything fed so far.
    pub fn finish(self) -> ContentHash {
        ContentHash(self.0.finalize().into())
    }
}

/// Serde helpers that write a [`ContentHash`] as its CID string (`bafk…`, as IPFS prints it)
/// rather than as hex: `#[serde(with = "fl_core::hash::cid_string")]`.
pub mod cid_string {
    use super::ContentHash;
    use serde::{Deserialize, Deserializer, Serializer};

    /// Writes `h` as its CID string.
    pub fn serialize<S: Serializer>(h: &ContentHash, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(h)
    }

    /// Reads a CID string (CIDv1, `raw` or any codec, sha2-256).
    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<ContentHash, D::Error> {
        let s = String::deserialize(d)?;
        ContentHash::from_cid_str(&s).map_err(serde::de::Error::custom)
    }

    /// [`cid_string`](super::cid_string) for an optional hash (`None` as `null`); pair it with
    /// `#[serde(default, skip_serializing_if = "Option::is_none")]` for an optional field.
    pub mod option {
        use super::ContentHash;
        use serde::{Deserialize, Deserializer, Serializer};

        /// Writes `Some(h)` as its CID string, `None` as `null`.
        pub fn serialize<S: Serializer>(h: &Option<ContentHash>, s: S) -> Result<S::Ok, S::Error> {
            match h {
                Some(h) => super::serialize(h, s),
                None => s.serialize_none(),
            }
        }

        /// Reads a CID string or `null`.
        pub fn deserialize<'de, D: Deserializer<'de>>(
            d: D,
        ) -> Result<Option<ContentHash>, D::Error> {
            Option::<String>::deserialize(d)?
                .map(|s| ContentHash::from_cid_str(&s).map_err(serde::de::Error::custom))
                .transpose()
        }
    }
}

mod hex_bytes {
    use serde::{Deserialize, Deserializer, Serializer};

    pub fn serialize<S: Serializer>(bytes: &[u8; 32], s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&hex::encode(bytes))
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<[u8; 32], D::Error> {
        let s = String::deserialize(d)?;
        let mut out = [0u8; 32];
        hex::decode_to_slice(&s, &mut out).map_err(serde::de::Error::custom)?;
        Ok(out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn empty_input_matches_the_known_ipfs_cid() {
        // `ipfs add --cid-version 1 --raw-leaves` of an empty file.
        let h = ContentHash::of(b"");
        assert_eq!(
            h.to_hex(),
            "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"
        );
        assert_eq!(
            h.to_string(),
            "bafkreihdwdcefgh4dqkjv67uzcmw7ojee6xedzdetojuzjevtenxquvyku"
        );
    }

    #[test]
    fn cid_round_trips_and_rejects_garbage() {
        let h = ContentHash::of(b"daofl");
        let parsed: ContentHash = h.to_string().parse().unwrap();
        assert_eq!(parsed, h);
        assert!(matches!(
            "not-a-cid".parse::<ContentHash>(),
            Err(CidError::Malformed(_))
        ));
        // A CIDv0 (dag-pb) is well formed but not ours.
        let v0 = "QmYwAPJzv5CZsnA625s3Xf2nemtYgPpHdWEz79ojWnPbdG";
        assert!(matches!(
            v0.parse::<ContentHash>(),
            Err(CidError::Unsupported(_))
        ));
    }

    #[test]
    fn serde_uses_hex() {
        let h = ContentHash::of(b"x");
        let json = serde_json::to_string(&h).unwrap();
        assert_eq!(json, format!("\"{}\"", h.to_hex()));
        assert_eq!(serde_json::from_str::<ContentHash>(&json).unwrap(), h);
        // serde_json's error is opaque: it is a data error carrying hex's message.
        let err = serde_json::from_str::<ContentHash>("\"zz\"").unwrap_err();
        assert!(
            err.is_data()
                && err
                    .to_string()
                    .starts_with(&hex::FromHexError::InvalidStringLength.to_string()),
            "{err}"
        );
    }
}
