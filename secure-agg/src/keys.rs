//! Key agreement, key derivation and share encryption.

use chacha20poly1305::ChaCha20Poly1305;
use chacha20poly1305::aead::{Aead, KeyInit, Payload};
use hkdf::Hkdf;
use sha2::{Digest, Sha256};
use x25519_dalek::{PublicKey, StaticSecret};
use zeroize::Zeroizing;

use crate::error::{Error, Result};
use crate::messages::{RoundBinding, SignedAdvertisement};

/// What a derived key is for.
#[derive(Clone, Copy)]
pub(crate) enum Purpose {
    /// The pairwise mask seed `s_ij`.
    Mask,
    /// The share-encryption key between two clients.
    Share,
}

/// X25519 between our secret and `peer`'s public key; refuses non-contributory (low-order)
/// results.
pub(crate) fn agree(
    secret: &StaticSecret,
    peer_key: &[u8; 32],
    peer: u32,
) -> Result<Zeroizing<[u8; 32]>> {
    let shared = secret.diffie_hellman(&PublicKey::from(*peer_key));
    if !shared.was_contributory() {
        return Err(Error::WeakKey { client: peer });
    }
    Ok(Zeroizing::new(*shared.as_bytes()))
}

/// HKDF-SHA256 of a shared secret, salted with the session and bound to the purpose, round
/// and the unordered pair `{a, b}`.
pub(crate) fn derive(
    shared: &[u8; 32],
    binding: &RoundBinding,
    purpose: Purpose,
    a: u32,
    b: u32,
) -> Zeroizing<[u8; 32]> {
    let label: &[u8] = match purpose {
        Purpose::Mask => b"daofl/secagg/v1/mask\0",
        Purpose::Share => b"daofl/secagg/v1/share\0",
    };
    let mut info = Vec::with_capacity(label.len() + 16);
    info.extend_from_slice(label);
    info.extend_from_slice(&binding.round.to_le_bytes());
    info.extend_from_slice(&a.min(b).to_le_bytes());
    info.extend_from_slice(&a.max(b).to_le_bytes());
    let hk = Hkdf::<Sha256>::new(Some(&binding.session), shared);
    let mut out = Zeroizing::new([0_u8; 32]);
    // 32 bytes is always a valid HKDF-SHA256 output length.
    let _ = hk.expand(&info, out.as_mut());
    out
}

fn nonce_and_aad(binding: &RoundBinding, from: u32, to: u32) -> ([u8; 12], Vec<u8>) {
    let mut nonce = [0_u8; 12];
    nonce[..4].copy_from_slice(&from.to_le_bytes());
    nonce[4..8].copy_from_slice(&to.to_le_bytes());
    let mut aad = Vec::with_capacity(64);
    aad.extend_from_slice(b"daofl/secagg/v1/share-packet\0");
    aad.extend_from_slice(&binding.session);
    aad.extend_from_slice(&binding.round.to_le_bytes());
    aad.extend_from_slice(&from.to_le_bytes());
    aad.extend_from_slice(&to.to_le_bytes());
    (nonce, aad)
}

/// Encrypts a share packet from `from` to `to`. The key is used in both directions, so the
/// nonce holds the direction.
pub(crate) fn seal(
    key: &[u8; 32],
    binding: &RoundBinding,
    from: u32,
    to: u32,
    plaintext: &[u8],
) -> Vec<u8> {
    let (nonce, aad) = nonce_and_aad(binding, from, to);
    ChaCha20Poly1305::new(key.into())
        .encrypt(
            &nonce.into(),
            Payload {
                msg: plaintext,
                aad: &aad,
            },
        )
        .unwrap_or_default()
}

/// Decrypts and authenticates a packet from `from` to `to`.
pub(crate) fn open(
    key: &[u8; 32],
    binding: &RoundBinding,
    from: u32,
    to: u32,
    ciphertext: &[u8],
) -> Result<Zeroizing<Vec<u8>>> {
    let (nonce, aad) = nonce_and_aad(binding, from, to);
    ChaCha20Poly1305::new(key.into())
        .decrypt(
            &nonce.into(),
            Payload {
                msg: ciphertext,
                aad: &aad,
            },
        )
        .map(Zeroizing::new)
        .map_err(|_| Error::Decrypt { from })
}

/// The seed of the neighbour graph: SHA-256 over the binding and every advertised key pair
/// in client order (signatures left out: a server could re-randomise those).
pub(crate) fn graph_seed(binding: &RoundBinding, entries: &[SignedAdvertisement]) -> [u8; 32] {
    let mut h = Sha256::new();
    h.update(b"daofl/secagg/v1/graph\0");
    h.update(binding.session);
    h.update(binding.round.to_le_bytes());
    h.update((entries.len() as u64).to_le_bytes());
    for e in entries {
        h.update(e.client.to_le_bytes());
        h.update(e.cipher_key);
        h.update(e.mask_key);
    }
    h.finalize().into()
}

/// The public key of a secret.
pub(crate) fn public(secret: &StaticSecret) -> [u8; 32] {
    PublicKey::from(secret).to_bytes()
}
