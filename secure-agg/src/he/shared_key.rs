//! Shared-key mode, for cross-silo federations that trust every client (NVFlare's model).
//!
//! Every client holds the same binary LWE secret key; the server only adds ciphertexts and
//! never holds the key. It is weaker than committee mode: any single client (or anyone who
//! obtains one client's key) can decrypt every other client's upload it sees, so the server must
//! not forward individual ciphertexts, and nothing but trust stops a client from doing so. It
//! needs no committee and no smudging, and the noise budget holds more clients.

use rand::CryptoRng;
use zeroize::Zeroize;

use super::client::EncryptedChunk;
use super::error::{Error, Result};
use super::keygen::{CompactPublicKey, common_mask};
use super::math;
use super::params::{FAILURE_LOG2_PER_VALUE, HeParams};
use super::wire::{Reader, Writer};

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
