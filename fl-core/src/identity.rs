//! Member identities: secp256k1 keys (Ethereum addresses) and the signed statements a member
//! makes to an aggregator.
//!
//! A federation member is a [`MemberKey`]; the rest of the world knows it by its [`Address`],
//! so a DAO's membership list (and later its staking contract) decides who may join. A member
//! signs two kinds of statement, each serialised to canonical, domain-separated bytes:
//!
//! - a [`JoinChallenge`] when it opens a session: it proves that it holds the key, bound to the
//!   server's fresh session nonce, the federation and the server endpoint it meant to reach;
//! - an [`UpdateStatement`] for every update it sends: federation, session, round, stage, the
//!   update's content hash and its example count.
//!
//! # Signature scheme
//!
//! Signatures are EIP-191 `personal_sign` signatures (what alloy's `sign_message_sync` and
//! wallets produce) over the canonical bytes: the signed digest is
//! `keccak256("\x19Ethereum Signed Message:\n" || decimal(len(msg)) || msg)`. The prefix keeps a
//! daofl signature from ever being a valid transaction signature, and any Ethereum wallet that
//! offers `personal_sign` (a hardware wallet included) can produce the same signature over the
//! same bytes. A [`MemberSignature`] is the usual 65 bytes `r || s || v` (`v` = 27 or 28).
//! Verification recovers the signer's address; the caller compares it with the allow-list
//! ([`AllowList::admit`]) or with the address the session joined as ([`verify_update_by`]).
//!
//! # Canonical bytes
//!
//! Each message is a fixed ASCII tag followed by its fields in a fixed order, every field as an
//! 8-byte big-endian length and then its bytes (integers as 8-byte big-endian, strings as
//! UTF-8):
//!
//! ```text
//! join:   "daofl/join/v1"   | federation_id | session_id (32) | client_nonce (32) | server
//! update: "daofl/update/v1" | federation_id | session_id (32) | round (u64) | kind ("fit" |
//!         "evaluate") | update_hash (32, SHA-256) | num_examples (u64)
//! ```
//!
//! The tags differ, so a join signature never verifies as an update and the other way round;
//! the length prefixes make the encoding injective, so no two different statements share bytes.
//!
//! # Replay
//!
//! A join signature is bound to the server's session nonce (fresh for every connection, from
//! [`random_nonce`]) and to the endpoint the *client* meant to reach (it must take that from its
//! own configuration, not from the server), so it cannot be replayed into a later session or
//! relayed to another aggregator. An update signature is bound to the federation, the session,
//! the round and the stage, so a captured update does not verify in any other round, session or
//! federation: recovery yields an unrelated address that the allow-list and the session's
//! member address both reject. Within one session and round the engine accepts at most one
//! update per member and stage, which closes the last replay.
//!
//! This module does no IO: key files are read and written by `fl-node` (`read_key_file`,
//! `write_key_file`), in the key's hex form ([`MemberKey::to_hex`], [`MemberKey::from_hex`]).
//!
//! ```
//! use fl_core::identity::{AllowList, JoinChallenge, MemberKey, random_nonce};
//!
//! let member = MemberKey::generate();
//! let allowed = AllowList::parse([member.address().to_string()])?;
//!
//! // The server sends a fresh session nonce; the client adds its own nonce and the endpoint
//! // it dialled, and signs.
//! let challenge = JoinChallenge {
//!     federation_id: "mnist-dao".into(),
//!     session_id: random_nonce(),
//!     client_nonce: random_nonce(),
//!     server: "https://agg.example:50051".into(),
//! };
//! let signature = member.sign_join(&challenge);
//! assert_eq!(allowed.admit(&challenge, &signature)?, member.address());
//! # Ok::<(), fl_core::identity::IdentityError>(())
//! ```

use std::collections::BTreeSet;
use std::fmt;
use std::path::PathBuf;
use std::str::FromStr;

pub use alloy_primitives::Address;
use alloy_primitives::Signature;
use k256::ecdsa::SigningKey;
use rand::TryRng as _;
use serde::{Deserialize, Deserializer, Serialize, Serializer};
use zeroize::Zeroize as _;

use crate::hash::ContentHash;
use crate::round::Stage;

/// Domain tag of [`JoinChallenge`] bytes.
const JOIN_TAG: &[u8] = b"daofl/join/v1";
/// Domain tag of [`UpdateStatement`] bytes.
const UPDATE_TAG: &[u8] = b"daofl/update/v1";
/// Key files are one line of hex; anything much longer is not a key file.
/// Largest key file read (`fl-node` reads and writes them): 1 KiB.
pub const MAX_KEY_FILE_BYTES: u64 = 1024;

/// What went wrong with a key, a signature or an address.
///
/// No variant ever contains private key material.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum IdentityError {
    /// A private key was not 32 bytes of hex (optionally `0x`-prefixed) encoding a valid
    /// secp256k1 scalar. The key itself is never echoed.
    #[error("malformed private key: {reason}")]
    MalformedKey {
        /// What was wrong.
        reason: &'static str,
    },
    /// Signature bytes were not a well-formed 65-byte `r || s || v` signature.
    #[error("malformed signature: {reason}")]
    MalformedSignature {
        /// What was wrong.
        reason: String,
    },
    /// No public key could be recovered from a well-formed signature.
    #[error("could not recover the signer from the signature: {reason}")]
    RecoveryFailed {
        /// Why recovery failed.
        reason: String,
    },
    /// A member address (in an allow-list or config) was not a valid Ethereum address.
    #[error(
        "malformed member address {entry:?}: {reason} (expected 0x followed by 40 hex digits, \
         lowercase or EIP-55 checksummed)"
    )]
    MalformedAddress {
        /// The offending entry, as given.
        entry: String,
        /// What was wrong with it.
        reason: &'static str,
    },
    /// A join signature recovered to an address that is not on the allow-list (a non-member,
    /// or a signature over a different challenge).
    #[error("member {address} is not on the allow-list")]
    NotAllowed {
        /// The recovered address.
        address: Address,
    },
    /// An update signature recovered to an address other than the session's member (a forged
    /// update, or one replayed from another round, session or federation).
    #[error("update signed by {recovered}, expected the session's member {expected}")]
    UnexpectedSigner {
        /// The address the session joined as.
        expected: Address,
        /// The address recovered from the signature.
        recovered: Address,
    },
    /// A key file could not be read or written.
    #[error("key file {}: {source}", path.display())]
    KeyFileIo {
        /// The key file.
        path: PathBuf,
        /// The underlying error.
        #[source]
        source: std::io::Error,
    },
    /// A key file exists but does not hold a key.
    #[error("key file {}: {reason}", path.display())]
    MalformedKeyFile {
        /// The key file.
        path: PathBuf,
        /// What was wrong (never the file's content).
        reason: &'static str,
    },
}

/// 32 bytes from the operating system's CSPRNG: session ids and client nonces.
pub fn random_nonce() -> [u8; 32] {
    let mut nonce = [0u8; 32];
    rand::rngs::SysRng
        .try_fill_bytes(&mut nonce)
        .expect("the operating system's random number generator is available");
    nonce
}

/// A member's secp256k1 private key.
///
/// `Debug` prints only the address. The secret leaves the value only through
/// [`MemberKey::to_hex`] (for key files and chain signers). The key signs with k256 directly:
/// no transaction stack is compiled into a member.
#[derive(Clone)]
pub struct MemberKey {
    key: SigningKey,
    address: Address,
}

impl MemberKey {
    /// A fresh key from the operating system's CSPRNG.
    pub fn generate() -> Self {
        loop {
            // A uniformly random 32-byte string is a valid scalar except with probability
            // about 2^-128 (zero, or not below the curve order): draw again then.
            let secret = zeroize::Zeroizing::new(random_nonce());
            if let Ok(key) = SigningKey::from_slice(secret.as_slice()) {
                return Self::from_signing_key(key);
            }
        }
    }

    /// The signing key (for [`crate::seal`]).
    pub(crate) fn signing_key(&self) -> &SigningKey {
        &self.key
    }

    /// The public key (for [`crate::seal`]).
    pub(crate) fn verifying_key(&self) -> &k256::ecdsa::VerifyingKey {
        self.key.verifying_key()
    }

    fn from_signing_key(key: SigningKey) -> Self {
        let address = Address::from_private_key(&key);
        Self { key, address }
    }

    /// Parses 64 hex digits, with or without a `0x` prefix. Errors never contain the input.
    pub fn from_hex(hex_key: &str) -> Result<Self, IdentityError> {
        let digits = hex_key
            .strip_prefix("0x")
            .or_else(|| hex_key.strip_prefix("0X"))
            .unwrap_or(hex_key);
        if digits.len() != 64 {
            return Err(IdentityError::MalformedKey {
                reason: "expected 64 hex digits (32 bytes), optionally prefixed by 0x",
            });
        }
        let mut bytes = [0u8; 32];
        // The hex crate's error would name the offending character: do not pass it on.
        hex::decode_to_slice(digits, &mut bytes).map_err(|_| IdentityError::MalformedKey {
            reason: "contains a character that is not a hex digit",
        })?;
        let key = SigningKey::from_slice(&bytes);
        bytes.zeroize();
        let key = key.map_err(|_| IdentityError::MalformedKey {
            reason: "not a valid secp256k1 private key (zero or not below the curve order)",
        })?;
        Ok(Self::from_signing_key(key))
    }

    /// The secret as `0x` followed by 64 lowercase hex digits: for key files, and for a chain
    /// signer over the same key (alloy's `PrivateKeySigner` parses it).
    pub fn to_hex(&self) -> String {
        format!("0x{}", hex::encode(self.key.to_bytes()))
    }

    /// The member's Ethereum address.
    pub fn address(&self) -> Address {
        self.address
    }

    /// Signs a join challenge (EIP-191 over [`JoinChallenge::signing_bytes`]).
    pub fn sign_join(&self, challenge: &JoinChallenge) -> MemberSignature {
        self.sign(&challenge.signing_bytes())
    }

    /// Signs an update statement (EIP-191 over [`UpdateStatement::signing_bytes`]).
    pub fn sign_update(&self, statement: &UpdateStatement) -> MemberSignature {
        self.sign(&statement.signing_bytes())
    }

    /// Signs arbitrary protocol bytes (EIP-191). Callers domain-separate `message` themselves
    /// (secure aggregation prefixes its own tag), so a signature for one purpose never
    /// verifies for another.
    pub fn sign_message(&self, message: &[u8]) -> MemberSignature {
        self.sign(message)
    }

    fn sign(&self, message: &[u8]) -> MemberSignature {
        // RFC 6979 signing with a valid key over a 32-byte digest fails only if the derived
        // nonce gives r = 0 or s = 0, which happens with probability about 2^-256.
        let digest = alloy_primitives::eip191_hash_message(message);
        let (signature, recovery) = self
            .key
            .sign_prehash_recoverable(digest.as_slice())
            .expect("secp256k1 signing with a valid key does not fail");
        let signature = Signature::from_signature_and_parity(signature, recovery.is_y_odd());
        MemberSignature(signature.normalized_s())
    }
}

impl fmt::Debug for MemberKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("MemberKey")
            .field("address", &format_args!("{}", self.address()))
            .finish_non_exhaustive()
    }
}

/// A 65-byte recoverable secp256k1 signature `r || s || v` (`v` = 27 or 28), low-`s`.
///
/// Serialised (serde, `Display`, `FromStr`) as `0x` and 130 hex digits.
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
pub struct MemberSignature(Signature);

impl MemberSignature {
    /// Length of the byte form.
    pub const LEN: usize = 65;

    /// The 65 bytes `r || s || v`, `v` = 27 or 28.
    pub fn to_bytes(&self) -> [u8; 65] {
        self.0.as_bytes()
    }

    /// Parses `r || s || v` with `v` in {0, 1, 27, 28}. Rejects any other length or `v`, a zero
    /// `r` or `s`, and high-`s` signatures (so each statement has one valid signature per key).
    pub fn from_bytes(bytes: &[u8]) -> Result<Self, IdentityError> {
        let malformed = |reason: String| IdentityError::MalformedSignature { reason };
        let bytes: &[u8; 65] = bytes
            .try_into()
            .map_err(|_| malformed(format!("expected 65 bytes, got {}", bytes.len())))?;
        if !matches!(bytes[64], 0 | 1 | 27 | 28) {
            return Err(malformed(format!(
                "recovery byte v = {} is not 0, 1, 27 or 28",
                bytes[64]
            )));
        }
        let signature = Signature::from_raw_array(bytes).map_err(|e| malformed(e.to_string()))?;
        if signature.r().is_zero() || signature.s().is_zero() {
            return Err(malformed("r or s is zero".into()));
        }
        if signature.normalize_s().is_some() {
            return Err(malformed(
                "s is in the upper half of the curve order (non-canonical)".into(),
            ));
        }
        Ok(Self(signature))
    }

    /// The address that signed `message` (EIP-191). Any well-formed signature recovers *some*
    /// address: compare it with the one expected.
    pub fn recover(&self, message: &[u8]) -> Result<Address, IdentityError> {
        self.0
            .recover_address_from_msg(message)
            .map_err(|e| IdentityError::RecoveryFailed {
                reason: e.to_string(),
            })
    }
}

impl fmt::Display for MemberSignature {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "0x{}", hex::encode(self.to_bytes()))
    }
}

impl fmt::Debug for MemberSignature {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "MemberSignature({self})")
    }
}

impl FromStr for MemberSignature {
    type Err = IdentityError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let digits = s.strip_prefix("0x").unwrap_or(s);
        let bytes = hex::decode(digits).map_err(|e| IdentityError::MalformedSignature {
            reason: format!("not hex: {e}"),
        })?;
        Self::from_bytes(&bytes)
    }
}

impl Serialize for MemberSignature {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for MemberSignature {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let s = <std::borrow::Cow<'de, str>>::deserialize(deserializer)?;
        s.parse().map_err(serde::de::Error::custom)
    }
}

/// Appends one length-prefixed field: 8-byte big-endian length, then the bytes.
fn put_field(out: &mut Vec<u8>, bytes: &[u8]) {
    out.extend_from_slice(&(bytes.len() as u64).to_be_bytes());
    out.extend_from_slice(bytes);
}

/// What a client signs to join: proof of its key, bound to one session with one server.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct JoinChallenge {
    /// The federation the client means to join.
    pub federation_id: String,
    /// The server's fresh nonce for this session (from [`random_nonce`]).
    pub session_id: [u8; 32],
    /// The client's own fresh nonce, so the server never chooses all of the signed bytes.
    pub client_nonce: [u8; 32],
    /// The endpoint the client dialled, from the client's configuration (for example
    /// `https://agg.example:50051`); the server checks it is its own.
    pub server: String,
}

impl JoinChallenge {
    /// The canonical bytes that are signed:
    /// `"daofl/join/v1" | federation_id | session_id | client_nonce | server`, each field
    /// prefixed by its length as 8 big-endian bytes.
    pub fn signing_bytes(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(
            JOIN_TAG.len() + 4 * 8 + self.federation_id.len() + 64 + self.server.len(),
        );
        out.extend_from_slice(JOIN_TAG);
        put_field(&mut out, self.federation_id.as_bytes());
        put_field(&mut out, &self.session_id);
        put_field(&mut out, &self.client_nonce);
        put_field(&mut out, self.server.as_bytes());
        out
    }
}

/// The kind of result an [`UpdateStatement`] vouches for.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[non_exhaustive]
pub enum UpdateKind {
    /// A training update (the result of the fit stage).
    Fit,
    /// An evaluation result.
    Evaluate,
}

impl UpdateKind {
    /// The tag written into the signed bytes.
    pub const fn tag(self) -> &'static str {
        match self {
            Self::Fit => "fit",
            Self::Evaluate => "evaluate",
        }
    }
}

impl From<Stage> for UpdateKind {
    fn from(stage: Stage) -> Self {
        match stage {
            Stage::Fit => Self::Fit,
            Stage::Evaluate => Self::Evaluate,
        }
    }
}

/// What a client signs with every update: which update, for which round of which session.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct UpdateStatement {
    /// The federation.
    pub federation_id: String,
    /// The session nonce the client joined with.
    pub session_id: [u8; 32],
    /// The round the update belongs to.
    pub round: u64,
    /// Which stage's result it is.
    pub kind: UpdateKind,
    /// Content hash of the update's canonical bytes.
    pub update_hash: ContentHash,
    /// Number of local examples the update claims (its aggregation weight).
    pub num_examples: u64,
}

impl UpdateStatement {
    /// The canonical bytes that are signed: `"daofl/update/v1" | federation_id | session_id |
    /// round | kind | update_hash | num_examples`, each field prefixed by its length as 8
    /// big-endian bytes, integers as 8 big-endian bytes.
    pub fn signing_bytes(&self) -> Vec<u8> {
        let kind = self.kind.tag().as_bytes();
        let mut out = Vec::with_capacity(
            UPDATE_TAG.len() + 6 * 8 + self.federation_id.len() + 32 + 8 + kind.len() + 32 + 8,
        );
        out.extend_from_slice(UPDATE_TAG);
        put_field(&mut out, self.federation_id.as_bytes());
        put_field(&mut out, &self.session_id);
        put_field(&mut out, &self.round.to_be_bytes());
        put_field(&mut out, kind);
        put_field(&mut out, self.update_hash.as_bytes());
        put_field(&mut out, &self.num_examples.to_be_bytes());
        out
    }
}

/// Recovers the address that signed `challenge`. Any well-formed signature recovers *some*
/// address: compare it with the allow-list ([`AllowList::admit`] does both).
pub fn verify_join(
    challenge: &JoinChallenge,
    signature: &MemberSignature,
) -> Result<Address, IdentityError> {
    signature.recover(&challenge.signing_bytes())
}

/// Recovers the address that signed `statement`. Any well-formed signature recovers *some*
/// address: compare it with the session's member ([`verify_update_by`] does both).
pub fn verify_update(
    statement: &UpdateStatement,
    signature: &MemberSignature,
) -> Result<Address, IdentityError> {
    signature.recover(&statement.signing_bytes())
}

/// A member's signed [`UpdateStatement`], kept with the update it vouches for: anyone holding
/// both recovers the signer ([`SignedUpdate::signer`]) and recomputes the statement's
/// `update_hash` from the update, so a detected bad update becomes evidence against the member
/// who sent it, not the aggregator's word.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct SignedUpdate {
    /// What the member signed.
    pub statement: UpdateStatement,
    /// Its signature.
    pub signature: MemberSignature,
}

impl SignedUpdate {
    /// The address that signed the statement.
    pub fn signer(&self) -> Result<Address, IdentityError> {
        verify_update(&self.statement, &self.signature)
    }
}

/// Checks that `statement` was signed by `expected` (the address the session joined as).
pub fn verify_update_by(
    statement: &UpdateStatement,
    signature: &MemberSignature,
    expected: Address,
) -> Result<(), IdentityError> {
    let recovered = verify_update(statement, signature)?;
    if recovered == expected {
        Ok(())
    } else {
        Err(IdentityError::UnexpectedSigner {
            expected,
            recovered,
        })
    }
}

/// The addresses allowed to join a federation.
///
/// Serde reads and writes it as a list of address strings, so it sits in the federation
/// config as `allowed_members = ["0x...", ...]`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(try_from = "Vec<String>", into = "Vec<String>")]
pub struct AllowList {
    members: BTreeSet<Address>,
}

impl AllowList {
    /// Parses addresses given as `0x` and 40 hex digits, all lowercase, all uppercase or
    /// EIP-55 checksummed (a mixed-case entry with a wrong checksum is a typo and is rejected).
    /// Surrounding whitespace is ignored; duplicates are merged.
    pub fn parse<I, S>(entries: I) -> Result<Self, IdentityError>
    where
        I: IntoIterator<Item = S>,
        S: AsRef<str>,
    {
        entries
            .into_iter()
            .map(|entry| parse_address(entry.as_ref()))
            .collect::<Result<BTreeSet<_>, _>>()
            .map(|members| Self { members })
    }

    /// Whether `address` may join.
    pub fn contains(&self, address: &Address) -> bool {
        self.members.contains(address)
    }

    /// Verifies a join signature and checks its signer is allowed; returns the member.
    pub fn admit(
        &self,
        challenge: &JoinChallenge,
        signature: &MemberSignature,
    ) -> Result<Address, IdentityError> {
        let address = verify_join(challenge, signature)?;
        if self.contains(&address) {
            Ok(address)
        } else {
            Err(IdentityError::NotAllowed { address })
        }
    }

    /// Number of allowed members.
    pub fn len(&self) -> usize {
        self.members.len()
    }

    /// Whether no one is allowed.
    pub fn is_empty(&self) -> bool {
        self.members.is_empty()
    }

    /// The allowed addresses, in ascending order.
    pub fn iter(&self) -> impl Iterator<Item = &Address> {
        self.members.iter()
    }
}

impl FromIterator<Address> for AllowList {
    fn from_iter<T: IntoIterator<Item = Address>>(iter: T) -> Self {
        Self {
            members: iter.into_iter().collect(),
        }
    }
}

impl TryFrom<Vec<String>> for AllowList {
    type Error = IdentityError;

    fn try_from(entries: Vec<String>) -> Result<Self, Self::Error> {
        Self::parse(entries)
    }
}

impl From<AllowList> for Vec<String> {
    fn from(list: AllowList) -> Self {
        list.members.iter().map(Address::to_string).collect()
    }
}

/// Parses one allow-list entry (see [`AllowList::parse`]).
fn parse_address(entry: &str) -> Result<Address, IdentityError> {
    let malformed = |reason| IdentityError::MalformedAddress {
        entry: entry.to_owned(),
        reason,
    };
    let trimmed = entry.trim();
    let digits = trimmed
        .strip_prefix("0x")
        .ok_or_else(|| malformed("missing the 0x prefix"))?;
    if digits.len() != 40 {
        return Err(malformed("not 40 hex digits"));
    }
    if !digits.bytes().all(|b| b.is_ascii_hexdigit()) {
        return Err(malformed("contains a character that is not a hex digit"));
    }
    let address = Address::from_str(digits).map_err(|_| malformed("not an address"))?;
    let has_lower = digits.bytes().any(|b| b.is_ascii_lowercase());
    let has_upper = digits.bytes().any(|b| b.is_ascii_uppercase());
    if has_lower && has_upper && address.to_checksum(None) != trimmed {
        return Err(malformed(
            "mixed case but the EIP-55 checksum does not match",
        ));
    }
    Ok(address)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// anvil / hardhat account 0: a well-known test key, never to hold value.
    const ANVIL_KEY: &str = "0xac0974bec39a17e36ba4a6b4d238ff944bacb478cbed5efcae784d7bf4f2ff80";
    const ANVIL_ADDRESS: &str = "0xf39Fd6e51aad88F6F4ce6aB8827279cffFb92266";

    fn challenge() -> JoinChallenge {
        JoinChallenge {
            federation_id: "digits-dao".into(),
            session_id: [7; 32],
            client_nonce: [9; 32],
            server: "https://127.0.0.1:50051".into(),
        }
    }

    fn statement() -> UpdateStatement {
        UpdateStatement {
            federation_id: "digits-dao".into(),
            session_id: [7; 32],
            round: 3,
            kind: UpdateKind::Fit,
            update_hash: ContentHash::of(b"an update"),
            num_examples: 120,
        }
    }

    #[test]
    fn anvil_key_has_its_well_known_address() {
        let key = MemberKey::from_hex(ANVIL_KEY).unwrap();
        assert_eq!(key.address().to_checksum(None), ANVIL_ADDRESS);
        assert_eq!(key.address().to_string(), ANVIL_ADDRESS);
        assert_eq!(key.to_hex(), ANVIL_KEY);
        // Without the prefix, too.
        let bare = MemberKey::from_hex(&ANVIL_KEY[2..]).unwrap();
        assert_eq!(bare.address(), key.address());
    }

    #[test]
    fn signatures_are_deterministic_and_interoperable_with_personal_sign() {
        let key = MemberKey::from_hex(ANVIL_KEY).unwrap();
        let sig = key.sign_join(&challenge());
        assert_eq!(
            sig,
            key.sign_join(&challenge()),
            "RFC 6979: same bytes, same signature"
        );
        // Any EIP-191 verifier recovers the member from the canonical bytes.
        let alloy_sig = Signature::from_raw(&sig.to_bytes()).unwrap();
        let recovered = alloy_sig
            .recover_address_from_msg(challenge().signing_bytes())
            .unwrap();
        assert_eq!(recovered, key.address());
        assert!(matches!(sig.to_bytes()[64], 27 | 28));
    }

    #[test]
    fn join_and_update_round_trip() {
        let key = MemberKey::generate();
        assert_ne!(key.address(), MemberKey::generate().address());
        let sig = key.sign_join(&challenge());
        assert_eq!(verify_join(&challenge(), &sig).unwrap(), key.address());
        let sig = key.sign_update(&statement());
        assert_eq!(verify_update(&statement(), &sig).unwrap(), key.address());
        verify_update_by(&statement(), &sig, key.address()).unwrap();
    }

    #[test]
    fn canonical_bytes_are_tagged_and_length_prefixed() {
        let mut expected = b"daofl/join/v1".to_vec();
        expected.extend_from_slice(&10u64.to_be_bytes());
        expected.extend_from_slice(b"digits-dao");
        expected.extend_from_slice(&32u64.to_be_bytes());
        expected.extend_from_slice(&[7; 32]);
        expected.extend_from_slice(&32u64.to_be_bytes());
        expected.extend_from_slice(&[9; 32]);
        expected.extend_from_slice(&23u64.to_be_bytes());
        expected.extend_from_slice(b"https://127.0.0.1:50051");
        assert_eq!(challenge().signing_bytes(), expected);

        let mut expected = b"daofl/update/v1".to_vec();
        expected.extend_from_slice(&10u64.to_be_bytes());
        expected.extend_from_slice(b"digits-dao");
        expected.extend_from_slice(&32u64.to_be_bytes());
        expected.extend_from_slice(&[7; 32]);
        expected.extend_from_slice(&8u64.to_be_bytes());
        expected.extend_from_slice(&3u64.to_be_bytes());
        expected.extend_from_slice(&3u64.to_be_bytes());
        expected.extend_from_slice(b"fit");
        expected.extend_from_slice(&32u64.to_be_bytes());
        expected.extend_from_slice(ContentHash::of(b"an update").as_bytes());
        expected.extend_from_slice(&8u64.to_be_bytes());
        expected.extend_from_slice(&120u64.to_be_bytes());
        assert_eq!(statement().signing_bytes(), expected);
    }

    #[test]
    fn length_prefixes_keep_field_boundaries() {
        // Moving a byte from one string field to the next changes the signed bytes.
        let a = JoinChallenge {
            federation_id: "ab".into(),
            server: "c".into(),
            ..challenge()
        };
        let b = JoinChallenge {
            federation_id: "a".into(),
            server: "bc".into(),
            ..challenge()
        };
        assert_ne!(a.signing_bytes(), b.signing_bytes());
    }

    #[test]
    fn update_signature_does_not_verify_in_another_context() {
        let key = MemberKey::generate();
        let allowed = AllowList::from_iter([key.address()]);
        let signed = statement();
        let sig = key.sign_update(&signed);

        let replays = [
            UpdateStatement {
                round: 4,
                ..signed.clone()
            },
            UpdateStatement {
                session_id: [8; 32],
                ..signed.clone()
            },
            UpdateStatement {
                federation_id: "other-dao".into(),
                ..signed.clone()
            },
            UpdateStatement {
                update_hash: ContentHash::of(b"a forged update"),
                ..signed.clone()
            },
            UpdateStatement {
                num_examples: 1_000_000,
                ..signed.clone()
            },
            UpdateStatement {
                kind: UpdateKind::Evaluate,
                ..signed.clone()
            },
        ];
        for replay in &replays {
            let recovered = verify_update(replay, &sig).unwrap();
            assert_ne!(recovered, key.address(), "{replay:?}");
            assert!(!allowed.contains(&recovered));
            let err = verify_update_by(replay, &sig, key.address()).unwrap_err();
            assert!(
                matches!(err, IdentityError::UnexpectedSigner { expected, .. } if expected == key.address())
            );
        }
    }

    #[test]
    fn join_signature_is_bound_to_session_server_and_federation() {
        let key = MemberKey::generate();
        let allowed = AllowList::from_iter([key.address()]);
        let sig = key.sign_join(&challenge());
        assert_eq!(allowed.admit(&challenge(), &sig).unwrap(), key.address());

        let others = [
            JoinChallenge {
                session_id: [1; 32],
                ..challenge()
            },
            JoinChallenge {
                client_nonce: [1; 32],
                ..challenge()
            },
            JoinChallenge {
                server: "https://evil.example:50051".into(),
                ..challenge()
            },
            JoinChallenge {
                federation_id: "other-dao".into(),
                ..challenge()
            },
        ];
        for other in &others {
            let err = allowed.admit(other, &sig).unwrap_err();
            assert!(matches!(err, IdentityError::NotAllowed { .. }), "{err}");
        }
    }

    #[test]
    fn join_and_update_signatures_are_not_interchangeable() {
        let key = MemberKey::generate();
        let sig = key.sign_join(&challenge());
        assert_ne!(verify_update(&statement(), &sig).unwrap(), key.address());
        assert!(
            !statement()
                .signing_bytes()
                .starts_with(&challenge().signing_bytes()[..JOIN_TAG.len()])
        );
    }

    #[test]
    fn strangers_are_not_admitted() {
        let member = MemberKey::generate();
        let stranger = MemberKey::generate();
        let allowed = AllowList::parse([member.address().to_string()]).unwrap();
        let err = allowed
            .admit(&challenge(), &stranger.sign_join(&challenge()))
            .unwrap_err();
        assert!(
            matches!(err, IdentityError::NotAllowed { address } if address == stranger.address()),
            "{err:?}"
        );
        assert!(err.to_string().contains(&stranger.address().to_string()));
    }

    #[test]
    fn malformed_signatures_are_errors() {
        /// Asserts a `MalformedSignature` error whose reason is `why`.
        #[track_caller]
        fn malformed(res: Result<MemberSignature, IdentityError>, why: &str) {
            assert!(
                matches!(&res, Err(IdentityError::MalformedSignature { reason }) if reason == why),
                "{res:?}"
            );
        }
        let good = MemberKey::generate().sign_join(&challenge()).to_bytes();
        for len in [0, 1, 64, 66, 130] {
            malformed(
                MemberSignature::from_bytes(&vec![1u8; len]),
                &format!("expected 65 bytes, got {len}"),
            );
        }
        let mut bad_v = good;
        bad_v[64] = 29;
        malformed(
            MemberSignature::from_bytes(&bad_v),
            "recovery byte v = 29 is not 0, 1, 27 or 28",
        );
        let mut zero_r = good;
        zero_r[..32].fill(0);
        malformed(MemberSignature::from_bytes(&zero_r), "r or s is zero");
        // High s: the malleated twin of a valid signature is refused.
        let twin = Signature::from_raw(&good).unwrap();
        let n_minus_s = alloy_primitives::U256::from_be_slice(
            &hex::decode("fffffffffffffffffffffffffffffffebaaedce6af48a03bbfd25e8cd0364141")
                .unwrap(),
        ) - twin.s();
        let mut high_s = good;
        high_s[32..64].copy_from_slice(&n_minus_s.to_be_bytes::<32>());
        // The twin recovers with the other parity: v 27 <-> 28.
        high_s[64] = if good[64] == 27 { 28 } else { 27 };
        malformed(
            MemberSignature::from_bytes(&high_s),
            "s is in the upper half of the curve order (non-canonical)",
        );

        // Garbage of the right shape either fails recovery or recovers a stranger.
        let garbage = [0x5au8; 64].into_iter().chain([27]).collect::<Vec<_>>();
        let garbage_is_error_or_stranger = match MemberSignature::from_bytes(&garbage) {
            Err(IdentityError::MalformedSignature { .. }) => true,
            Err(_) => false,
            Ok(sig) => match verify_join(&challenge(), &sig) {
                Err(IdentityError::RecoveryFailed { .. }) => true,
                Err(_) => false,
                Ok(address) => !AllowList::default().contains(&address),
            },
        };
        assert!(garbage_is_error_or_stranger);
        // r at or above the curve order cannot be recovered from.
        let mut big_r = good;
        big_r[..32].fill(0xff);
        match MemberSignature::from_bytes(&big_r) {
            Err(e) => assert!(
                matches!(e, IdentityError::MalformedSignature { .. }),
                "{e:?}"
            ),
            Ok(sig) => assert!(matches!(
                verify_join(&challenge(), &sig),
                Err(IdentityError::RecoveryFailed { .. })
            )),
        }
    }

    #[test]
    fn signature_text_and_serde_forms() {
        let sig = MemberKey::generate().sign_update(&statement());
        let text = sig.to_string();
        assert!(text.starts_with("0x") && text.len() == 2 + 130);
        assert_eq!(text.parse::<MemberSignature>().unwrap(), sig);
        assert_eq!(MemberSignature::from_bytes(&sig.to_bytes()).unwrap(), sig);
        let json = serde_json::to_string(&sig).unwrap();
        assert_eq!(json, format!("\"{text}\""));
        assert_eq!(serde_json::from_str::<MemberSignature>(&json).unwrap(), sig);
        // serde_json's error is opaque: it is a data error carrying our message.
        let err = serde_json::from_str::<MemberSignature>("\"0x1234\"").unwrap_err();
        let ours = IdentityError::MalformedSignature {
            reason: "expected 65 bytes, got 2".into(),
        };
        assert!(
            err.is_data() && err.to_string().starts_with(&ours.to_string()),
            "{err}"
        );
        let res = "0xzz".parse::<MemberSignature>();
        assert!(
            matches!(&res, Err(IdentityError::MalformedSignature { reason })
                if reason.starts_with("not hex: ")),
            "{res:?}"
        );
    }

    #[test]
    fn from_hex_rejects_bad_keys_without_echoing_them() {
        let bad = [
            "",
            "0x",
            "0x1234",
            &ANVIL_KEY[..65],
            "0xac0974bec39a17e36ba4a6b4d238ff944bacb478cbed5efcae784d7bf4f2ff8g",
            "0x0000000000000000000000000000000000000000000000000000000000000000",
            // The curve order n itself.
            "0xfffffffffffffffffffffffffffffffebaaedce6af48a03bbfd25e8cd0364141",
            " 0xac0974bec39a17e36ba4a6b4d238ff944bacb478cbed5efcae784d7bf4f2ff80",
        ];
        for input in bad {
            let err = MemberKey::from_hex(input).unwrap_err();
            assert!(matches!(err, IdentityError::MalformedKey { .. }));
            let shown = format!("{err} {err:?}");
            assert!(!shown.contains("ac0974bec39a"), "{shown}");
            assert!(!shown.contains("ff8g"), "{shown}");
        }
    }

    #[test]
    fn debug_hides_the_secret() {
        let key = MemberKey::from_hex(ANVIL_KEY).unwrap();
        let shown = format!("{key:?} {key:#?}");
        assert!(!shown.contains("ac0974bec39a"), "{shown}");
        assert!(shown.contains(ANVIL_ADDRESS), "{shown}");
    }

    #[test]
    fn allow_list_parses_lowercase_and_checksummed_and_names_bad_entries() {
        let list = AllowList::parse([
            ANVIL_ADDRESS,
            " 0x70997970c51812dc3a010c7d01b50e0d17dc79c8 ",
            "0xf39fd6e51aad88f6f4ce6ab8827279cfffb92266",
        ])
        .unwrap();
        assert_eq!(list.len(), 2, "duplicates merge");
        let anvil = MemberKey::from_hex(ANVIL_KEY).unwrap().address();
        assert!(list.contains(&anvil));
        assert!(!list.contains(&MemberKey::generate().address()));

        let bad_checksum = "0xF39Fd6e51aad88F6F4ce6aB8827279cffFb92266";
        for entry in [
            bad_checksum,
            "f39fd6e51aad88f6f4ce6ab8827279cfffb92266",
            "0xf39fd6e51aad88f6f4ce6ab8827279cfffb9226",
            "0xg39fd6e51aad88f6f4ce6ab8827279cfffb92266",
            "",
        ] {
            let err = AllowList::parse([ANVIL_ADDRESS, entry]).unwrap_err();
            assert!(
                matches!(&err, IdentityError::MalformedAddress { entry: e, .. } if e == entry),
                "{err}"
            );
            assert!(err.to_string().contains(&format!("{entry:?}")), "{err}");
        }
    }

    #[test]
    fn allow_list_serde_is_a_list_of_strings() {
        let list: AllowList = serde_json::from_str(&format!("[\"{ANVIL_ADDRESS}\"]")).unwrap();
        assert_eq!(
            serde_json::to_string(&list).unwrap(),
            format!("[\"{ANVIL_ADDRESS}\"]")
        );
        // serde_json's error is opaque: it is a data error carrying our message.
        let err = serde_json::from_str::<AllowList>("[\"0x12\"]").unwrap_err();
        let ours = IdentityError::MalformedAddress {
            entry: "0x12".into(),
            reason: "not 40 hex digits",
        };
        assert!(
            err.is_data() && err.to_string().starts_with(&ours.to_string()),
            "{err}"
        );
    }
}
