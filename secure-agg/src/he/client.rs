//! The client side: encryption in independent chunks and the signed upload manifest.

use rand::CryptoRng;
use sha2::{Digest, Sha256};
use tfhe::core_crypto::algorithms::re_randomization::rerand_encrypt_lwe_compact_ciphertext_list_with_compact_public_key;
use tfhe::core_crypto::commons::generators::NoiseRandomGenerator;
use tfhe::core_crypto::prelude::*;

use super::error::{Error, Result};
use super::keygen::CompactPublicKey;
use super::math;
use super::params::HeParams;
use super::wire::{Limits, Reader, Writer};
use crate::sign::{MessageSigner, SignatureVerifier};

/// One chunk of a client's ciphertext: a tfhe compact ciphertext list of up to
/// [`HeParams::chunk_values`] values (one mask of `n` coefficients per `n` values, one body per
/// value). A sum of chunks has the same shape.
#[derive(Clone, PartialEq, Eq)]
pub struct EncryptedChunk {
    /// Position of the chunk in the vector (values `index·chunk_values ..`).
    pub index: u32,
    /// One mask of `n` coefficients per bin of `n` values.
    pub masks: Vec<u64>,
    /// One body per value.
    pub bodies: Vec<u64>,
}

impl std::fmt::Debug for EncryptedChunk {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("EncryptedChunk")
            .field("index", &self.index)
            .field("masks", &self.masks.len())
            .field("bodies", &self.bodies.len())
            .finish()
    }
}

impl EncryptedChunk {
    /// Canonical encoding (tag, index, masks, bodies): `8·(n·bins + len) + 16` bytes.
    pub fn to_bytes(&self) -> Vec<u8> {
        let mut w = Writer::with_tag(b"DHEX");
        w.u32(self.index);
        w.words(&self.masks);
        w.words(&self.bodies);
        w.finish()
    }

    /// Decodes a chunk; at most `limits.max_words` words in all. The shape is checked against
    /// the round by [`crate::he::AggregateCiphertext::add_chunk`].
    pub fn from_bytes(bytes: &[u8], limits: &Limits) -> Result<Self> {
        let mut r = Reader::with_tag(bytes, b"DHEX", "ciphertext chunk")?;
        let index = r.u32()?;
        let masks = r.words(limits.max_words)?;
        let bodies = r.words(limits.max_words.saturating_sub(masks.len()))?;
        r.finish()?;
        Ok(Self {
            index,
            masks,
            bodies,
        })
    }

    /// SHA-256 of the canonical encoding: what the client signs in its manifest.
    pub fn digest(&self) -> [u8; 32] {
        Sha256::digest(self.to_bytes()).into()
    }

    /// Checks the chunk's shape for a vector of `num_values` values.
    pub(crate) fn check_shape(&self, params: &HeParams, num_values: usize) -> Result<()> {
        let index = self.index as usize;
        if index >= params.chunk_count(num_values) {
            return Err(Error::Mismatch(format!("chunk index {index} out of range")));
        }
        let len = params.chunk_len(num_values, index);
        if self.bodies.len() != len
            || self.masks.len() != params.bins(len) * params.lwe.lwe_dimension
        {
            return Err(Error::Mismatch(format!(
                "chunk {index} has the wrong length"
            )));
        }
        Ok(())
    }
}

/// Encrypts a client's vector under the joint (or shared) compact public key.
#[derive(Debug, Clone)]
pub struct ClientEncryptor {
    params: HeParams,
    key: CompactPublicKey,
}

impl ClientEncryptor {
    /// An encryptor for `params` under `key`.
    pub fn new(params: HeParams, key: CompactPublicKey) -> Result<Self> {
        params.validate()?;
        if key.lwe != params.lwe {
            return Err(Error::Mismatch(
                "public key has other LWE parameters".into(),
            ));
        }
        Ok(Self { params, key })
    }

    /// The parameters.
    pub fn params(&self) -> &HeParams {
        &self.params
    }

    /// The manifest to sign for `chunks` (from [`encrypt`](Self::encrypt)) in `round`.
    pub fn manifest(&self, round: u64, client: u32, chunks: &[EncryptedChunk]) -> UploadManifest {
        let num_values = chunks.iter().map(|c| c.bodies.len()).sum();
        UploadManifest::for_chunks(self.key.digest(), round, client, num_values, chunks)
    }

    /// Encrypts `values` (each `< 2^plaintext_bits`) into independent chunks of at most
    /// `chunk_values` values. Randomness: `r`, `e1`, `e2` come from tfhe's AES-CTR generator
    /// seeded from `rng`.
    pub fn encrypt<R: CryptoRng + ?Sized>(
        &self,
        values: &[u32],
        rng: &mut R,
    ) -> Result<Vec<EncryptedChunk>> {
        let k = self.params.plaintext_bits;
        if k < 32
            && let Some(v) = values.iter().find(|&&v| u64::from(v) >> k != 0)
        {
            return Err(Error::PlaintextRange(format!(
                "value {v} does not fit {k} bits"
            )));
        }
        let n = self.params.lwe.lwe_dimension;
        let noise = TUniform::<u64>::new(self.params.lwe.noise_bound_log2);
        let mut generator =
            NoiseRandomGenerator::<DefaultRandomGenerator>::new_from_seed(math::seed_from(rng));
        let encoded = math::encode(&self.params, values);
        Ok(encoded
            .chunks(self.params.chunk_values)
            .enumerate()
            .map(|(index, plain)| {
                let mut list = LweCompactCiphertextList::new(
                    0u64,
                    LweSize(n + 1),
                    LweCiphertextCount(plain.len()),
                    CiphertextModulus::new_native(),
                );
                // The optimised (NTT) variant of compact public-key encryption: identical maths
                // to `encrypt_lwe_compact_ciphertext_list_with_compact_public_key`, with the
                // binary `r` convolved by tfhe's exact 64-bit NTT.
                rerand_encrypt_lwe_compact_ciphertext_list_with_compact_public_key(
                    &self.key.key,
                    &mut list,
                    &PlaintextList::from_container(plain),
                    noise,
                    noise,
                    &mut generator,
                );
                let (masks, bodies) = list.get_mask_and_body_list();
                EncryptedChunk {
                    index: index as u32,
                    masks: masks.as_ref().to_vec(),
                    bodies: bodies.as_ref().to_vec(),
                }
            })
            .collect())
    }
}

/// What a client signs for one round: the key it encrypted under, the round, its id, the vector
/// length and each chunk's digest.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UploadManifest {
    /// [`CompactPublicKey::digest`] of the key the chunks are encrypted under.
    pub key_digest: [u8; 32],
    /// The round the ciphertext is for.
    pub round: u64,
    /// The client's registered id.
    pub client: u32,
    /// Values in the vector.
    pub num_values: u32,
    /// SHA-256 of each chunk's canonical encoding, in index order.
    pub chunk_digests: Vec<[u8; 32]>,
}

impl UploadManifest {
    /// The manifest of `chunks` (as returned by [`ClientEncryptor::encrypt`]) under the key
    /// of digest `key_digest`.
    pub fn for_chunks(
        key_digest: [u8; 32],
        round: u64,
        client: u32,
        num_values: usize,
        chunks: &[EncryptedChunk],
    ) -> Self {
        Self {
            key_digest,
            round,
            client,
            num_values: u32::try_from(num_values).unwrap_or(u32::MAX),
            chunk_digests: chunks.iter().map(EncryptedChunk::digest).collect(),
        }
    }

    /// The canonical, domain-separated bytes that are signed.
    pub fn to_bytes(&self) -> Vec<u8> {
        let mut w = Writer::with_tag(b"DHEM");
        w.buf.extend_from_slice(&self.key_digest);
        w.u64(self.round);
        w.u32(self.client);
        w.u32(self.num_values);
        w.len(self.chunk_digests.len());
        for d in &self.chunk_digests {
            w.buf.extend_from_slice(d);
        }
        w.finish()
    }

    fn read(r: &mut Reader<'_>, limits: &Limits) -> Result<Self> {
        let key_digest = r.array32()?;
        let round = r.u64()?;
        let client = r.u32()?;
        let num_values = r.u32()?;
        let count = r.len(limits.max_chunks, 32)?;
        let chunk_digests = (0..count).map(|_| r.array32()).collect::<Result<_>>()?;
        Ok(Self {
            key_digest,
            round,
            client,
            num_values,
            chunk_digests,
        })
    }

    /// Decodes a manifest.
    pub fn from_bytes(bytes: &[u8], limits: &Limits) -> Result<Self> {
        let mut r = Reader::with_tag(bytes, b"DHEM", "upload manifest")?;
        let m = Self::read(&mut r, limits)?;
        r.finish()?;
        Ok(m)
    }

    /// Signs the manifest.
    pub fn sign(self, signer: &dyn MessageSigner) -> SignedManifest {
        let signature = signer.sign(&self.to_bytes());
        SignedManifest {
            manifest: self,
            signature,
        }
    }
}

/// A manifest with the client's signature: sent before the chunks, forwarded to the committee.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SignedManifest {
    /// What was signed.
    pub manifest: UploadManifest,
    /// The client's signature over [`UploadManifest::to_bytes`].
    pub signature: Vec<u8>,
}

impl SignedManifest {
    /// Whether the signature verifies for the manifest's client.
    pub fn verify(&self, verifier: &dyn SignatureVerifier) -> Result<()> {
        if verifier.verify(
            self.manifest.client,
            &self.manifest.to_bytes(),
            &self.signature,
        ) {
            Ok(())
        } else {
            Err(Error::BadSignature {
                client: self.manifest.client,
            })
        }
    }

    pub(crate) fn write(&self, w: &mut Writer) {
        w.bytes(&self.manifest.to_bytes());
        w.bytes(&self.signature);
    }

    pub(crate) fn read(r: &mut Reader<'_>, limits: &Limits) -> Result<Self> {
        let manifest = r.bytes(4 + 32 + 8 + 4 + 4 + 4 + 32 * limits.max_chunks)?;
        let manifest = UploadManifest::from_bytes(manifest, limits)?;
        let signature = r.bytes(limits.max_signature_bytes)?.to_vec();
        Ok(Self {
            manifest,
            signature,
        })
    }

    /// Canonical encoding.
    pub fn to_bytes(&self) -> Vec<u8> {
        let mut w = Writer::with_tag(b"DHSM");
        self.write(&mut w);
        w.finish()
    }

    /// Decodes a signed manifest.
    pub fn from_bytes(bytes: &[u8], limits: &Limits) -> Result<Self> {
        let mut r = Reader::with_tag(bytes, b"DHSM", "signed manifest")?;
        let m = Self::read(&mut r, limits)?;
        r.finish()?;
        Ok(m)
    }
}
