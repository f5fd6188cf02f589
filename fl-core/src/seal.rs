//! Encryption to members' secp256k1 keys, for what only some members may read (the evidence
//! of a flagged update goes to the validators who re-check it, never to the public).
//!
//! The construction is ECIES with standard parts: a random 256-bit content key encrypts the
//! message once with ChaCha20-Poly1305 (RFC 8439), bound to caller-chosen associated data
//! (the public half of a record, so the two cannot be mixed); for each recipient a fresh
//! ephemeral secp256k1 key agrees a secret with the recipient's public key (ECDH), HKDF-SHA256
//! (RFC 5869; salt = ephemeral ‖ recipient public key, both SEC1 compressed; info
//! `daofl/seal/v1`) derives a key-encryption key, and ChaCha20-Poly1305 under it (used once,
//! zero nonce) wraps the content key. Recipients are named by public key: the key a member
//! already holds for its address ([`MemberKey`]), published with
//! [`MemberKey::public_key_hex`].
//!
//! ```
//! use fl_core::identity::MemberKey;
//! use fl_core::seal::{RecipientKey, seal};
//!
//! let validator = MemberKey::generate();
//! let to = RecipientKey::from_hex(&validator.public_key_hex()).unwrap();
//! let sealed = seal(b"the update", b"public record", &[to]).unwrap();
//! assert_eq!(validator.open(&sealed, b"public record").unwrap(), b"the update");
//! assert!(MemberKey::generate().open(&sealed, b"public record").is_err());
//! ```

use chacha20poly1305::aead::{Aead, KeyInit, Payload};
use chacha20poly1305::{ChaCha20Poly1305, Key, Nonce};
use hkdf::Hkdf;
use k256::PublicKey;
use k256::elliptic_curve::sec1::ToEncodedPoint;
use serde::{Deserialize, Serialize};
use sha2::Sha256;

use crate::identity::{Address, MemberKey, random_nonce};

const INFO: &[u8] = b"daofl/seal/v1";

/// Why a message could not be sealed or opened.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum SealError {
    /// A public key is not a SEC1 point on secp256k1.
    #[error("not a secp256k1 public key (expected 33 or 65 bytes of SEC1 hex)")]
    MalformedKey,
    /// No recipient was named.
    #[error("a sealed message needs at least one recipient")]
    NoRecipients,
    /// The key opening it is not among the recipients.
    #[error("{0} is not a recipient of this message")]
    NotARecipient(Address),
    /// A field has the wrong length or is not hex.
    #[error("malformed sealed message: {0}")]
    Malformed(&'static str),
    /// Authentication failed: the ciphertext, the associated data or a wrapped key was
    /// changed, or the key is not the recipient's.
    #[error("the sealed message does not authenticate (changed, or another key)")]
    Forged,
}

/// A recipient's public key.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RecipientKey(PublicKey);

impl RecipientKey {
    /// Parses SEC1 hex (compressed or not, with or without `0x`).
    ///
    /// # Errors
    /// [`SealError::MalformedKey`].
    pub fn from_hex(s: &str) -> Result<Self, SealError> {
        let digits = s.strip_prefix("0x").unwrap_or(s);
        let bytes = hex::decode(digits).map_err(|_| SealError::MalformedKey)?;
        PublicKey::from_sec1_bytes(&bytes)
            .map(Self)
            .map_err(|_| SealError::MalformedKey)
    }

    /// The address of the key.
    pub fn address(&self) -> Address {
        Address::from_public_key(&k256::ecdsa::VerifyingKey::from(&self.0))
    }

    /// SEC1 compressed hex, `0x`-prefixed.
    pub fn to_hex(&self) -> String {
        format!("0x{}", hex::encode(compressed(&self.0)))
    }
}

fn compressed(key: &PublicKey) -> Vec<u8> {
    key.to_encoded_point(true).as_bytes().to_vec()
}

/// One recipient's wrapped content key.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Recipient {
    /// The recipient's address (from its public key), checksummed hex.
    pub address: String,
    /// The recipient's public key, SEC1 compressed hex.
    pub public_key: String,
    /// The ephemeral public key, SEC1 compressed hex.
    pub ephemeral: String,
    /// The content key encrypted under the derived key (hex, 48 bytes).
    pub wrapped_key: String,
}

/// A message encrypted to some members' keys.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Sealed {
    /// Who can open it.
    pub recipients: Vec<Recipient>,
    /// The content nonce (hex, 12 bytes).
    pub nonce: String,
    /// The ciphertext with its tag (hex).
    pub ciphertext: String,
}

/// Derives the key-encryption key of `ephemeral` and `recipient` from their shared secret.
fn kek(shared: &[u8], ephemeral: &[u8], recipient: &[u8]) -> Key {
    let salt = [ephemeral, recipient].concat();
    let mut out = [0u8; 32];
    Hkdf::<Sha256>::new(Some(&salt), shared)
        .expand(INFO, &mut out)
        .expect("32 bytes is a valid HKDF-SHA256 output length");
    out.into()
}

fn secret_from(bytes: [u8; 32]) -> Option<k256::SecretKey> {
    k256::SecretKey::from_slice(&bytes).ok()
}

/// Encrypts `message` (bound to `aad`) so that each of `recipients` can open it.
///
/// # Errors
/// [`SealError::NoRecipients`].
pub fn seal(message: &[u8], aad: &[u8], recipients: &[RecipientKey]) -> Result<Sealed, SealError> {
    if recipients.is_empty() {
        return Err(SealError::NoRecipients);
    }
    let content_key = zeroize::Zeroizing::new(random_nonce());
    let nonce_bytes: [u8; 12] = random_nonce()[..12].try_into().expect("12 of 32 bytes");
    let ciphertext = ChaCha20Poly1305::new(Key::from_slice(content_key.as_slice()))
        .encrypt(
            Nonce::from_slice(&nonce_bytes),
            Payload { msg: message, aad },
        )
        .map_err(|_| SealError::Malformed("message too long"))?;
    let recipients = recipients
        .iter()
        .map(|r| {
            let ephemeral = loop {
                if let Some(k) = secret_from(random_nonce()) {
                    break k;
                }
            };
            let shared = k256::ecdh::diffie_hellman(ephemeral.to_nonzero_scalar(), r.0.as_affine());
            let e_pub = compressed(&ephemeral.public_key());
            let r_pub = compressed(&r.0);
            let key = kek(shared.raw_secret_bytes(), &e_pub, &r_pub);
            let wrapped = ChaCha20Poly1305::new(&key)
                .encrypt(&Nonce::default(), content_key.as_slice())
                .map_err(|_| SealError::Malformed("key wrap"))?;
            Ok(Recipient {
                address: r.address().to_string(),
                public_key: format!("0x{}", hex::encode(&r_pub)),
                ephemeral: format!("0x{}", hex::encode(&e_pub)),
                wrapped_key: hex::encode(wrapped),
            })
        })
        .collect::<Result<_, SealError>>()?;
    Ok(Sealed {
        recipients,
        nonce: hex::encode(nonce_bytes),
        ciphertext: hex::encode(ciphertext),
    })
}

fn unhex(s: &str, what: &'static str) -> Result<Vec<u8>, SealError> {
    hex::decode(s.strip_prefix("0x").unwrap_or(s)).map_err(|_| SealError::Malformed(what))
}

impl MemberKey {
    /// The key's public half, SEC1 compressed hex (`0x`-prefixed): what others seal to.
    pub fn public_key_hex(&self) -> String {
        let public = PublicKey::from(self.verifying_key());
        format!("0x{}", hex::encode(compressed(&public)))
    }

    /// Opens a message sealed to this key (with the `aad` it was sealed with).
    ///
    /// # Errors
    /// [`SealError::NotARecipient`], [`SealError::Malformed`] or [`SealError::Forged`].
    pub fn open(&self, sealed: &Sealed, aad: &[u8]) -> Result<Vec<u8>, SealError> {
        let me = self.address();
        let r = sealed
            .recipients
            .iter()
            .find(|r| r.address.parse::<Address>().is_ok_and(|a| a == me))
            .ok_or(SealError::NotARecipient(me))?;
        let e_pub = unhex(&r.ephemeral, "ephemeral key")?;
        let ephemeral = PublicKey::from_sec1_bytes(&e_pub).map_err(|_| SealError::MalformedKey)?;
        let secret = k256::SecretKey::from(self.signing_key());
        let shared = k256::ecdh::diffie_hellman(secret.to_nonzero_scalar(), ephemeral.as_affine());
        let r_pub = compressed(&PublicKey::from(self.verifying_key()));
        let key = kek(shared.raw_secret_bytes(), &compressed(&ephemeral), &r_pub);
        let wrapped = unhex(&r.wrapped_key, "wrapped key")?;
        let content_key = zeroize::Zeroizing::new(
            ChaCha20Poly1305::new(&key)
                .decrypt(&Nonce::default(), wrapped.as_slice())
                .map_err(|_| SealError::Forged)?,
        );
        if content_key.len() != 32 {
            return Err(SealError::Forged);
        }
        let nonce = unhex(&sealed.nonce, "nonce")?;
        if nonce.len() != 12 {
            return Err(SealError::Malformed("nonce"));
        }
        let ciphertext = unhex(&sealed.ciphertext, "ciphertext")?;
        ChaCha20Poly1305::new(Key::from_slice(&content_key))
            .decrypt(
                Nonce::from_slice(&nonce),
                Payload {
                    msg: &ciphertext,
                    aad,
                },
            )
            .map_err(|_| SealError::Forged)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_recipient_opens_and_nothing_else_does() {
        let a = MemberKey::generate();
        let b = MemberKey::generate();
        let keys = [
            RecipientKey::from_hex(&a.public_key_hex()).unwrap(),
            RecipientKey::from_hex(&b.public_key_hex()).unwrap(),
        ];
        assert_eq!(keys[0].address(), a.address());
        assert_eq!(keys[1].to_hex(), b.public_key_hex());
        let sealed = seal(b"evidence", b"aad", &keys).unwrap();
        assert_eq!(a.open(&sealed, b"aad").unwrap(), b"evidence");
        assert_eq!(b.open(&sealed, b"aad").unwrap(), b"evidence");
        let c = MemberKey::generate();
        assert_eq!(
            c.open(&sealed, b"aad"),
            Err(SealError::NotARecipient(c.address()))
        );
        assert_eq!(a.open(&sealed, b"other aad"), Err(SealError::Forged));
        let mut tampered = sealed.clone();
        let mut ct = hex::decode(&tampered.ciphertext).unwrap();
        ct[0] ^= 1;
        tampered.ciphertext = hex::encode(ct);
        assert_eq!(a.open(&tampered, b"aad"), Err(SealError::Forged));
        let mut swapped = sealed.clone();
        swapped.recipients[0].wrapped_key = sealed.recipients[1].wrapped_key.clone();
        assert_eq!(a.open(&swapped, b"aad"), Err(SealError::Forged));
        let mut broken = sealed;
        broken.nonce = "zz".into();
        assert_eq!(a.open(&broken, b"aad"), Err(SealError::Malformed("nonce")));
    }

    #[test]
    fn bad_keys_and_no_recipients_are_refused() {
        assert_eq!(seal(b"x", b"", &[]), Err(SealError::NoRecipients));
        for bad in ["", "0x02", "zz", &"00".repeat(33)] {
            assert_eq!(
                RecipientKey::from_hex(bad),
                Err(SealError::MalformedKey),
                "{bad}"
            );
        }
    }
}
