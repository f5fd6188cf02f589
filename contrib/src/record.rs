//! Signed, content-addressed records: what contributors publish.
//!
//! A record is a body ([`ProposalRecord`] or [`AnnotationRecord`]) in an envelope with the
//! schema version, the record kind and the contributor's signature:
//!
//! ```text
//! {"schema":1,"kind":"annotation","body":{...},"signature":"0x..."}
//! ```
//!
//! - **Canonical bytes.** The envelope is compact JSON with fields in declaration order, as
//!   `serde_json` writes it; [`SignedRecord::decode`] re-encodes what it parsed and refuses
//!   bytes that differ ([`RecordError::NotCanonical`]), so one record has exactly one byte
//!   string and one content address.
//! - **Signature.** The contributor's member key signs (EIP-191) the domain tag
//!   `daofl/contrib/<kind>/v1`, the schema version (4 bytes big-endian) and the canonical body
//!   bytes; the address it recovers to must be the contributor the body names.
//! - **Content address.** The [`ContentHash`] (SHA-256, printed as a CIDv1 `raw`) of the
//!   envelope bytes: the bytes an IPFS node stores as one raw block.
//!
//! Holding a [`SignedRecord`] means it was checked: the only ways to get one are
//! [`SignedRecord::sign`] and the decoders, which check size, schema, kind, canonical form, field
//! limits and signature, in that order, before anything else reads the record.

mod annotation;
mod proposal;
#[cfg(test)]
mod tests;

use fl_core::{Address, ContentHash, IdentityError, MemberKey, MemberSignature};
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};

pub use annotation::{AnnotationRecord, Category, Field, Labels, Outcome, ProposalQuality, Risk};
pub use proposal::{ProposalRecord, Source};

/// The schema version this crate writes and reads.
pub const SCHEMA_VERSION: u32 = 1;
/// Largest proposal record accepted, in bytes (the corpus's longest proposal is about 385 kB).
pub const MAX_PROPOSAL_RECORD_BYTES: usize = 1 << 20;
/// Largest annotation record accepted, in bytes (a real one is about 400).
pub const MAX_ANNOTATION_RECORD_BYTES: usize = 4 << 10;

/// What sort of record an envelope holds.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum RecordKind {
    /// A [`ProposalRecord`].
    Proposal,
    /// An [`AnnotationRecord`].
    Annotation,
}

impl RecordKind {
    /// The name written in the envelope's `kind` field.
    pub const fn name(self) -> &'static str {
        match self {
            RecordKind::Proposal => "proposal",
            RecordKind::Annotation => "annotation",
        }
    }

    /// Largest envelope of this kind accepted, in bytes.
    pub const fn max_bytes(self) -> usize {
        match self {
            RecordKind::Proposal => MAX_PROPOSAL_RECORD_BYTES,
            RecordKind::Annotation => MAX_ANNOTATION_RECORD_BYTES,
        }
    }

    /// The domain tag that starts the signed bytes, so a signature over one kind of record
    /// never verifies as another kind or as any other daofl statement.
    const fn signing_tag(self) -> &'static [u8] {
        match self {
            RecordKind::Proposal => b"daofl/contrib/proposal/v1",
            RecordKind::Annotation => b"daofl/contrib/annotation/v1",
        }
    }
}

/// A record body: the part of a record its contributor signs.
///
/// Implemented by [`ProposalRecord`] and [`AnnotationRecord`] only.
pub trait RecordBody: Serialize + DeserializeOwned + sealed::Sealed {
    /// The kind written in the envelope.
    const KIND: RecordKind;

    /// The address that must have signed the record.
    fn contributor(&self) -> Address;

    /// Checks the body's own limits (field lengths, ranges).
    fn validate(&self) -> Result<(), RecordError>;
}

mod sealed {
    pub trait Sealed {}
    impl Sealed for super::ProposalRecord {}
    impl Sealed for super::AnnotationRecord {}
}

/// Why a record was refused. Nothing is stored or changed when one is returned.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum RecordError {
    /// More bytes than a record of this kind may have; nothing was parsed.
    #[error("{kind:?} record of {len} bytes exceeds the limit of {limit} bytes")]
    TooLarge {
        /// The kind of record expected.
        kind: RecordKind,
        /// Its length.
        len: usize,
        /// The limit for that kind.
        limit: usize,
    },
    /// Not a well-formed record envelope (bad JSON, missing or unknown field, wrong type).
    #[error("malformed record: {0}")]
    Malformed(String),
    /// A schema version this crate does not read.
    #[error(
        "record schema version {found} is not supported (this build reads version {supported})"
    )]
    UnsupportedSchema {
        /// The version in the record.
        found: u32,
        /// The version this build reads.
        supported: u32,
    },
    /// A record of another kind than the one expected.
    #[error("expected a {expected} record, got kind {found:?}")]
    WrongKind {
        /// The kind expected.
        expected: &'static str,
        /// The kind written in the envelope.
        found: String,
    },
    /// Well-formed, but not the canonical encoding of what it holds (whitespace, field order,
    /// escapes, a non-checksummed address): it would have a second content address.
    #[error("record is not in canonical form (compact JSON, fields in schema order)")]
    NotCanonical,
    /// A field longer than its limit.
    #[error("field {field} is {len} bytes, over its limit of {limit}")]
    FieldTooLong {
        /// The field.
        field: &'static str,
        /// Its length in bytes.
        len: usize,
        /// Its limit.
        limit: usize,
    },
    /// A field with a value outside its range (an empty id, a quality of 9).
    #[error("field {field}: {reason}")]
    InvalidField {
        /// The field.
        field: &'static str,
        /// What was wrong.
        reason: String,
    },
    /// The signature bytes are malformed or no signer can be recovered from them.
    #[error("record signature: {0}")]
    Signature(#[from] IdentityError),
    /// The signature is valid but recovers to another address than the record's contributor:
    /// a forged record, a record altered after signing, or a signature taken from another.
    #[error("record names contributor {claimed} but was signed by {recovered}")]
    BadSignature {
        /// The contributor the body names.
        claimed: Address,
        /// The address the signature recovers to.
        recovered: Address,
    },
    /// The bytes fetched for a content address hash to another one.
    #[error("content address mismatch: asked for {expected}, the bytes are {actual}")]
    CidMismatch {
        /// The content address asked for.
        expected: ContentHash,
        /// The content address of the bytes received.
        actual: ContentHash,
    },
}

/// A record body with its contributor's signature, its canonical bytes and its content
/// address. Only [`SignedRecord::sign`] and the decoders make one, so every value was checked.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SignedRecord<T> {
    body: T,
    signature: MemberSignature,
    bytes: Vec<u8>,
    cid: ContentHash,
}

/// The envelope as written.
#[derive(Serialize)]
struct EnvelopeRef<'a, T> {
    schema: u32,
    kind: RecordKind,
    body: &'a T,
    signature: &'a MemberSignature,
}

/// The envelope as read: every field required, no other field allowed.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Envelope<T> {
    #[allow(dead_code)] // checked through `Header` first
    schema: u32,
    #[allow(dead_code)]
    kind: String,
    body: T,
    signature: MemberSignature,
}

/// The first look at untrusted bytes: only the schema and the kind, everything else skipped,
/// so a future schema is reported as such rather than as malformed.
#[derive(Deserialize)]
struct Header {
    schema: u32,
    kind: String,
}

impl<T: RecordBody> SignedRecord<T> {
    /// Signs `body` with `key` and encodes it. The key must be the body's contributor
    /// ([`RecordError::BadSignature`] otherwise) and the body within its limits.
    pub fn sign(body: T, key: &MemberKey) -> Result<Self, RecordError> {
        body.validate()?;
        if key.address() != body.contributor() {
            return Err(RecordError::BadSignature {
                claimed: body.contributor(),
                recovered: key.address(),
            });
        }
        let signature = key.sign_message(&signing_bytes(&body)?);
        let bytes = encode(&body, &signature)?;
        if bytes.len() > T::KIND.max_bytes() {
            return Err(RecordError::TooLarge {
                kind: T::KIND,
                len: bytes.len(),
                limit: T::KIND.max_bytes(),
            });
        }
        let cid = ContentHash::of(&bytes);
        Ok(Self {
            body,
            signature,
            bytes,
            cid,
        })
    }

    /// Parses and checks untrusted bytes: size first (nothing larger than
    /// [`RecordKind::max_bytes`] is parsed), then schema version, kind, structure, field
    /// limits, canonical form and signature.
    pub fn decode(bytes: &[u8]) -> Result<Self, RecordError> {
        let limit = T::KIND.max_bytes();
        if bytes.len() > limit {
            return Err(RecordError::TooLarge {
                kind: T::KIND,
                len: bytes.len(),
                limit,
            });
        }
        let malformed = |e: serde_json::Error| RecordError::Malformed(e.to_string());
        let header: Header = serde_json::from_slice(bytes).map_err(malformed)?;
        if header.schema != SCHEMA_VERSION {
            return Err(RecordError::UnsupportedSchema {
                found: header.schema,
                supported: SCHEMA_VERSION,
            });
        }
        if header.kind != T::KIND.name() {
            return Err(RecordError::WrongKind {
                expected: T::KIND.name(),
                found: header.kind,
            });
        }
        let envelope: Envelope<T> = serde_json::from_slice(bytes).map_err(malformed)?;
        envelope.body.validate()?;
        if encode(&envelope.body, &envelope.signature)? != bytes {
            return Err(RecordError::NotCanonical);
        }
        let recovered = envelope
            .signature
            .recover(&signing_bytes(&envelope.body)?)?;
        let claimed = envelope.body.contributor();
        if recovered != claimed {
            return Err(RecordError::BadSignature { claimed, recovered });
        }
        Ok(Self {
            body: envelope.body,
            signature: envelope.signature,
            bytes: bytes.to_vec(),
            cid: ContentHash::of(bytes),
        })
    }

    /// [`SignedRecord::decode`] of bytes fetched by content address: refuses bytes that do not
    /// hash to `cid` before parsing anything.
    pub fn decode_addressed(cid: &ContentHash, bytes: &[u8]) -> Result<Self, RecordError> {
        if bytes.len() > T::KIND.max_bytes() {
            return Err(RecordError::TooLarge {
                kind: T::KIND,
                len: bytes.len(),
                limit: T::KIND.max_bytes(),
            });
        }
        let actual = ContentHash::of(bytes);
        if actual != *cid {
            return Err(RecordError::CidMismatch {
                expected: *cid,
                actual,
            });
        }
        Self::decode(bytes)
    }
}

impl<T> SignedRecord<T> {
    /// The record body.
    pub fn body(&self) -> &T {
        &self.body
    }

    /// The contributor's signature.
    pub fn signature(&self) -> &MemberSignature {
        &self.signature
    }

    /// The canonical envelope bytes (what is stored and addressed).
    pub fn bytes(&self) -> &[u8] {
        &self.bytes
    }

    /// The content address of [`SignedRecord::bytes`].
    pub fn cid(&self) -> ContentHash {
        self.cid
    }

    /// The record body, dropping the signature and bytes.
    pub fn into_body(self) -> T {
        self.body
    }
}

/// `tag | schema (4 bytes big-endian) | canonical body JSON`.
fn signing_bytes<T: RecordBody>(body: &T) -> Result<Vec<u8>, RecordError> {
    let body = serde_json::to_vec(body).map_err(|e| RecordError::Malformed(e.to_string()))?;
    let tag = T::KIND.signing_tag();
    let mut out = Vec::with_capacity(tag.len() + 4 + body.len());
    out.extend_from_slice(tag);
    out.extend_from_slice(&SCHEMA_VERSION.to_be_bytes());
    out.extend_from_slice(&body);
    Ok(out)
}

fn encode<T: RecordBody>(body: &T, signature: &MemberSignature) -> Result<Vec<u8>, RecordError> {
    serde_json::to_vec(&EnvelopeRef {
        schema: SCHEMA_VERSION,
        kind: T::KIND,
        body,
        signature,
    })
    .map_err(|e| RecordError::Malformed(e.to_string()))
}

/// Checks a string field's length in bytes, and that a required one is not empty.
fn check_len(field: &'static str, value: &str, limit: usize) -> Result<(), RecordError> {
    if value.len() > limit {
        return Err(RecordError::FieldTooLong {
            field,
            len: value.len(),
            limit,
        });
    }
    Ok(())
}

fn check_nonempty(field: &'static str, value: &str, limit: usize) -> Result<(), RecordError> {
    if value.trim().is_empty() {
        return Err(RecordError::InvalidField {
            field,
            reason: "must not be empty".into(),
        });
    }
    check_len(field, value, limit)
}

/// Addresses as EIP-55 checksummed strings (the canonical form; other spellings parse but are
/// then refused as not canonical).
pub(crate) mod address_str {
    use std::str::FromStr;

    use fl_core::Address;
    use serde::{Deserialize, Deserializer, Serializer};

    pub fn serialize<S: Serializer>(address: &Address, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(&address.to_checksum(None))
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Address, D::Error> {
        let s = <std::borrow::Cow<'de, str>>::deserialize(d)?;
        Address::from_str(&s).map_err(serde::de::Error::custom)
    }
}

/// Content hashes as CIDv1 strings (`bafkrei...`).
pub(crate) mod cid_str {
    use fl_core::ContentHash;
    use serde::{Deserialize, Deserializer, Serializer};

    pub fn serialize<S: Serializer>(cid: &ContentHash, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(cid)
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<ContentHash, D::Error> {
        let s = <std::borrow::Cow<'de, str>>::deserialize(d)?;
        ContentHash::from_cid_str(&s).map_err(serde::de::Error::custom)
    }
}
