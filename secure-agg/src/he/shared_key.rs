//! Shared-key mode, for cross-silo federations that trust every client (NVFlare's model).
//!
//! Every client holds the same binary LWE secret key; the server only adds ciphertexts and
//! never holds the key. It is weaker than committee mode: any single client (or anyone who
//! obtains one client's key) can decrypt every other client's upload it sees, so the server must
//! not forward individual ciphertexts, and nothing but trust stops a client from doing so. It
//! needs no committee and no smudging, and the noise budget holds more clients.
//!
//! Holding the secret key, a client may also encrypt with *seeded* GLWE ([`SeededChunk`], tfhe's
//! `encrypt_seeded_glwe_ciphertext_list`): the masks come from a 128-bit seed, so the upload is
//! 8 bytes per value instead of 16. The aggregator regenerates the masks
//! ([`crate::he::AggregateCiphertext::add_seeded_chunk`]) and adds them into the same aggregate.

use rand::CryptoRng;
use sha2::{Digest, Sha256};
use tfhe::core_crypto::commons::generators::DeterministicSeeder;
use tfhe::core_crypto::commons::math::random::{CompressionSeed, Seed};
use tfhe::core_crypto::prelude::*;
use zeroize::Zeroize;

use super::client::{EncryptedChunk, UploadManifest};
use super::error::{Error, Result};
use super::keygen::{CompactPublicKey, common_mask};
use super::math;
use super::params::{FAILURE_LOG2_PER_VALUE, HeParams};
use super::wire::{Limits, Reader, Writer};

/// The key every client of a shared-key federation holds.
#[derive(Clone)]
pub struct SharedKey {
    params: HeParams,
    secret: Vec<u64>,
    public: CompactPublicKey,
}

impl Drop for SharedKey {
    fn drop(&mut self) {
        self.secret.zeroize();
    }
}

impl std::fmt::Debug for SharedKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SharedKey")
            .field("params", &self.params)
            .finish_non_exhaustive()
    }
}

/// Checks the noise budget for a single binary key and no smudging.
pub fn validate_shared(params: &HeParams) -> Result<()> {
    params.validate()?;
    let v = params.client_noise_variance(1) * params.max_clients as f64;
    let half_delta = 2f64.powi(params.delta_log2() as i32 - 1);
    let failure = 1.0 - half_delta * half_delta / (2.0 * v) / std::f64::consts::LN_2;
    if failure > FAILURE_LOG2_PER_VALUE {
        return Err(Error::InvalidParams(format!(
            "noise budget exceeded: failure 2^{failure:.1} per value"
        )));
    }
    Ok(())
}

impl SharedKey {
    /// Draws a fresh key (once per federation, by whoever sets it up; distributed to the
    /// clients out of band).
    pub fn generate<R: CryptoRng + ?Sized>(params: HeParams, rng: &mut R) -> Result<Self> {
        validate_shared(&params)?;
        let lwe = params.lwe;
        let secret = math::binary_secret(lwe.lwe_dimension, rng);
        let mask_seed = u128::from_le_bytes({
            let mut b = [0u8; 16];
            rng.fill_bytes(&mut b);
            b
        });
        let public = public_key_for(&params, mask_seed, &secret, rng);
        Ok(Self {
            params,
            secret,
            public,
        })
    }

    /// The public key clients encrypt under ([`crate::he::ClientEncryptor`]).
    pub fn public_key(&self) -> &CompactPublicKey {
        &self.public
    }

    /// Encrypts `values` (each `< 2^plaintext_bits`) with the secret key into seeded chunks:
    /// 8 bytes per value plus a 16-byte seed per chunk. Seeds and noise come from `rng`.
    pub fn encrypt_seeded<R: CryptoRng + ?Sized>(
        &self,
        values: &[u32],
        rng: &mut R,
    ) -> Result<Vec<SeededChunk>> {
        let p = &self.params;
        let k = p.plaintext_bits;
        if k < 32
            && let Some(v) = values.iter().find(|&&v| u64::from(v) >> k != 0)
        {
            return Err(Error::PlaintextRange(format!(
                "value {v} does not fit {k} bits"
            )));
        }
        let n = p.lwe.lwe_dimension;
        let key = GlweSecretKey::from_container(self.secret.as_slice(), PolynomialSize(n));
        let encoded = math::encode(p, values);
        Ok(encoded
            .chunks(p.chunk_values)
            .enumerate()
            .map(|(index, plain)| {
                let bins = p.bins(plain.len());
                let mut padded = plain.to_vec();
                padded.resize(bins * n, 0);
                let seed = math::seed_from(rng);
                let mut list = SeededGlweCiphertextList::new(
                    0u64,
                    GlweSize(2),
                    PolynomialSize(n),
                    GlweCiphertextCount(bins),
                    CompressionSeed::from(seed),
                    CiphertextModulus::new_native(),
                );
                let mut noise_seeder =
                    DeterministicSeeder::<DefaultRandomGenerator>::new(math::seed_from(rng));
                encrypt_seeded_glwe_ciphertext_list(
                    &key,
                    &mut list,
                    &PlaintextList::from_container(padded.as_slice()),
                    TUniform::<u64>::new(p.lwe.noise_bound_log2),
                    &mut noise_seeder,
                );
                let mut bodies = list.into_container();
                bodies.truncate(plain.len());
                SeededChunk {
                    index: index as u32,
                    seed: seed.0,
                    bodies,
                }
            })
            .collect())
    }

    /// The manifest to sign for seeded `chunks` in `round`.
    pub fn manifest(&self, round: u64, client: u32, chunks: &[SeededChunk]) -> UploadManifest {
        let num_values = chunks.iter().map(|c| c.bodies.len()).sum::<usize>();
        UploadManifest {
            key_digest: self.public.digest(),
            round,
            client,
            num_values: u32::try_from(num_values).unwrap_or(u32::MAX),
            chunk_digests: chunks.iter().map(SeededChunk::digest).collect(),
        }
    }

    /// Decrypts summed chunks (from [`crate::he::AggregateCiphertext::chunks`]) of a vector of
    /// `num_values` values.
    pub fn decrypt(&self, chunks: &[EncryptedChunk], num_values: usize) -> Result<Vec<u32>> {
        let p = &self.params;
        if chunks.len() != p.chunk_count(num_values) {
            return Err(Error::Mismatch("wrong number of chunks".into()));
        }
        let n = p.lwe.lwe_dimension;
        let mut out = Vec::with_capacity(num_values);
        for (i, chunk) in chunks.iter().enumerate() {
            if chunk.index as usize != i {
                return Err(Error::Mismatch("chunks out of order".into()));
            }
            chunk.check_shape(p, num_values)?;
            let mut dots = vec![0u64; chunk.bodies.len()];
            for (bin, mask) in chunk.masks.chunks_exact(n).enumerate() {
                let start = bin * n;
                let end = (start + n).min(dots.len());
                math::mask_dot_key(mask, &self.secret, &mut dots[start..end]);
            }
            out.extend(
                chunk
                    .bodies
                    .iter()
                    .zip(&dots)
                    .map(|(b, d)| math::decode(p, b.wrapping_sub(*d))),
            );
        }
        Ok(out)
    }

    /// Secret encoding (keep it secret): tag, public key, secret key.
    pub fn to_bytes(&self) -> Vec<u8> {
        let mut w = Writer::with_tag(b"DHSK");
        w.bytes(&self.public.to_bytes());
        w.words(&self.secret);
        w.finish()
    }

    /// Decodes a key for `params`.
    pub fn from_bytes(bytes: &[u8], params: HeParams) -> Result<Self> {
        validate_shared(&params)?;
        let n = params.lwe.lwe_dimension;
        let mut r = Reader::with_tag(bytes, b"DHSK", "shared key")?;
        let public = CompactPublicKey::from_bytes(r.bytes(16 * n + 64)?, params.lwe)?;
        let secret = r.words(n)?;
        r.finish()?;
        if secret.len() != n || secret.iter().any(|&s| s > 1) {
            return Err(Error::Malformed(
                "shared key: not a binary key of the right length".into(),
            ));
        }
        Ok(Self {
            params,
            secret,
            public,
        })
    }
}

fn public_key_for<R: CryptoRng + ?Sized>(
    params: &HeParams,
    mask_seed: u128,
    secret: &[u64],
    rng: &mut R,
) -> CompactPublicKey {
    let lwe = params.lwe;
    let mask = common_mask(lwe, mask_seed);
    let mut body = vec![0u64; lwe.lwe_dimension];
    // b = a ⊛ s + e, computed as tfhe's generator does (checked by the round-trip tests).
    super::keygen::public_body(lwe, mask_seed, secret, math::seed_from(rng), &mut body);
    CompactPublicKey::from_parts(lwe, &mask, &body)
}

/// A chunk encrypted with seeded GLWE under the shared secret key: the masks are regenerated from
/// `seed` by tfhe's AES-CTR generator, only the bodies travel.
#[derive(Clone, PartialEq, Eq)]
pub struct SeededChunk {
    /// Position of the chunk in the vector.
    pub index: u32,
    /// The compression seed of the masks.
    pub seed: u128,
    /// One body per value.
    pub bodies: Vec<u64>,
}

impl std::fmt::Debug for SeededChunk {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SeededChunk")
            .field("index", &self.index)
            .field("bodies", &self.bodies.len())
            .finish_non_exhaustive()
    }
}

impl SeededChunk {
    /// Canonical encoding (tag, index, seed, bodies): `8·len + 28` bytes.
    pub fn to_bytes(&self) -> Vec<u8> {
        let mut w = Writer::with_tag(b"DHSX");
        w.u32(self.index);
        w.buf.extend_from_slice(&self.seed.to_le_bytes());
        w.words(&self.bodies);
        w.finish()
    }

    /// Decodes a seeded chunk; at most `limits.max_words` bodies.
    pub fn from_bytes(bytes: &[u8], limits: &Limits) -> Result<Self> {
        let mut r = Reader::with_tag(bytes, b"DHSX", "seeded chunk")?;
        let index = r.u32()?;
        let lo = r.u64()?;
        let hi = r.u64()?;
        let bodies = r.words(limits.max_words)?;
        r.finish()?;
        Ok(Self {
            index,
            seed: u128::from(lo) | (u128::from(hi) << 64),
            bodies,
        })
    }

    /// SHA-256 of the canonical encoding: what the client signs in its manifest.
    pub fn digest(&self) -> [u8; 32] {
        Sha256::digest(self.to_bytes()).into()
    }

    /// The chunk in compact-list form (masks regenerated from the seed, each GLWE mask turned
    /// into a compact mask by `X → X^-1`), ready to add. The shape must have been checked.
    pub(crate) fn expand(&self, params: &HeParams) -> EncryptedChunk {
        let n = params.lwe.lwe_dimension;
        let bins = params.bins(self.bodies.len());
        let mut bodies = self.bodies.clone();
        bodies.resize(bins * n, 0);
        let seeded = SeededGlweCiphertextList::from_container(
            bodies,
            GlweSize(2),
            PolynomialSize(n),
            CompressionSeed::from(Seed(self.seed)),
            CiphertextModulus::new_native(),
        );
        let list = seeded.decompress_into_glwe_ciphertext_list();
        let mut masks = Vec::with_capacity(bins * n);
        for glwe in list.iter() {
            masks.extend(math::reverse_mask(glwe.get_mask().as_ref()));
        }
        EncryptedChunk {
            index: self.index,
            masks,
            bodies: self.bodies.clone(),
        }
    }
}
