//! The joint compact public key and dealerless committee key generation.
//!
//! Every member `i` draws a binary key `s_i` and publishes `b_i = a ⊛ s_i + e_i` under the common
//! mask `a` that tfhe derives from the public `mask_seed`; the joint key is `(a, Σ b_i)` for the
//! secret `s = Σ s_i`. Member `i` also splits `s_i` by replicated secret sharing (a `{0,1}`-linear
//! secret sharing, Boneh et al. 2018): `s_i = Σ_A R_{i,A}` over all `(t−1)`-subsets `A` of the
//! committee, `R_{i,A}` uniform mod 2^64, and sends `R_{i,A}` to every member not in `A`. Any `t`
//! members hold every `R_A = Σ_i R_{i,A}`; any `t − 1` miss at least one.

use rand::CryptoRng;
use tfhe::core_crypto::commons::generators::DeterministicSeeder;
use tfhe::core_crypto::commons::math::random::Seed;
use tfhe::core_crypto::prelude::*;
use zeroize::Zeroize;

use super::error::{Error, Result};
use super::math;
use super::params::{CommitteeParams, LweParams};
use super::wire::{Limits, Reader, Writer};

/// The joint compact public key `(a, b)` clients encrypt under.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CompactPublicKey {
    pub(crate) lwe: LweParams,
    pub(crate) key: LweCompactPublicKeyOwned<u64>,
}

impl CompactPublicKey {
    pub(crate) fn from_parts(lwe: LweParams, mask: &[u64], body: &[u64]) -> Self {
        let mut data = Vec::with_capacity(2 * mask.len());
        data.extend_from_slice(mask);
        data.extend_from_slice(body);
        Self {
            lwe,
            key: LweCompactPublicKey::from_container(data, CiphertextModulus::new_native()),
        }
    }

    /// The LWE parameters of the key.
    pub fn lwe_params(&self) -> LweParams {
        self.lwe
    }

    /// SHA-256 of the canonical encoding: manifests name the key they encrypt under.
    pub fn digest(&self) -> [u8; 32] {
        use sha2::{Digest, Sha256};
        Sha256::digest(self.to_bytes()).into()
    }

    /// Canonical encoding: tag, dimension, noise bound, mask, body.
    pub fn to_bytes(&self) -> Vec<u8> {
        let mut w = Writer::with_tag(b"DHEK");
        w.u32(self.lwe.lwe_dimension as u32);
        w.u32(self.lwe.noise_bound_log2);
        let (mask, body) = self.key.get_mask_and_body();
        w.words(mask.as_ref());
        w.words(body.as_ref());
        w.finish()
    }

    /// Decodes a key, expecting the given LWE parameters.
    pub fn from_bytes(bytes: &[u8], lwe: LweParams) -> Result<Self> {
        let mut r = Reader::with_tag(bytes, b"DHEK", "public key")?;
        let n = r.u32()? as usize;
        let noise = r.u32()?;
        if n != lwe.lwe_dimension || noise != lwe.noise_bound_log2 {
            return Err(Error::Mismatch(
                "public key has other LWE parameters".into(),
            ));
        }
        let mask = r.words(n)?;
        let body = r.words(n)?;
        r.finish()?;
        if mask.len() != n || body.len() != n {
            return Err(Error::Malformed("public key: wrong length".into()));
        }
        Ok(Self::from_parts(lwe, &mask, &body))
    }
}

/// Member `i`'s public key part `b_i = a ⊛ s_i + e_i` (its mask `a` is common, from the seed).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KeyShareContribution {
    /// Committee index of the member (0-based).
    pub member: u32,
    /// `b_i`, `n` coefficients.
    pub body: Vec<u64>,
}

/// The replicated shares member `dealer` sends to member `recipient` (over an authenticated,
/// confidential channel: the transport encrypts it point to point).
#[derive(Clone, PartialEq, Eq)]
pub struct ShareBundle {
    /// Who dealt the shares.
    pub dealer: u32,
    /// Who may read them.
    pub recipient: u32,
    /// `(set index, R_{dealer,A})` for every `(t−1)`-set `A` not containing `recipient`, in
    /// increasing set index.
    pub shares: Vec<(u32, Vec<u64>)>,
}

impl Drop for ShareBundle {
    fn drop(&mut self) {
        for (_, share) in &mut self.shares {
            share.zeroize();
        }
    }
}

impl std::fmt::Debug for ShareBundle {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ShareBundle")
            .field("dealer", &self.dealer)
            .field("recipient", &self.recipient)
            .field("shares", &self.shares.len())
            .finish_non_exhaustive()
    }
}

/// The common mask seed, a public value all members agree on (e.g. from the DAO's beacon).
pub type MaskSeed = u128;

fn generate_part(
    lwe: LweParams,
    mask_seed: MaskSeed,
    secret: &[u64],
    noise_seed: Seed,
) -> LweCompactPublicKeyOwned<u64> {
    let mut seeder = DeterministicSeeder::<DefaultRandomGenerator>::new(noise_seed);
    let mut generator =
        EncryptionRandomGenerator::<DefaultRandomGenerator>::new(Seed(mask_seed), &mut seeder);
    let mut pk = LweCompactPublicKeyOwned::new(
        0u64,
        LweDimension(lwe.lwe_dimension),
        CiphertextModulus::new_native(),
    );
    generate_lwe_compact_public_key(
        &LweSecretKey::from_container(secret),
        &mut pk,
        TUniform::<u64>::new(lwe.noise_bound_log2),
        &mut generator,
    );
    pk
}

/// `b = a ⊛ s + e` for the common mask of `mask_seed`, noise seeded by `noise_seed`.
pub(crate) fn public_body(
    lwe: LweParams,
    mask_seed: MaskSeed,
    secret: &[u64],
    noise_seed: Seed,
    out: &mut [u64],
) {
    let pk = generate_part(lwe, mask_seed, secret, noise_seed);
    out.copy_from_slice(pk.get_body().as_ref());
}

/// The common mask `a` derived from the seed by tfhe's mask generator.
pub(crate) fn common_mask(lwe: LweParams, mask_seed: MaskSeed) -> Vec<u64> {
    let zero = vec![0u64; lwe.lwe_dimension];
    let pk = generate_part(lwe, mask_seed, &zero, Seed(0));
    pk.get_mask().as_ref().to_vec()
}

/// Member `member` draws its key part and deals its replicated shares.
///
/// Returns the public contribution (broadcast) and one [`ShareBundle`] per member, itself
/// included (each sent privately). The secret `s_i` is dropped here.
pub fn deal<R: CryptoRng + ?Sized>(
    params: &CommitteeParams,
    mask_seed: MaskSeed,
    member: u32,
    rng: &mut R,
) -> Result<(KeyShareContribution, Vec<ShareBundle>)> {
    params.validate()?;
    if member >= params.members {
        return Err(Error::InvalidParams(format!(
            "member {member} is not in the committee"
        )));
    }
    let lwe = params.he.lwe;
    let n = lwe.lwe_dimension;
    let secret = math::binary_secret(n, rng);
    // `secret` becomes the last share below and is wiped with the others.
    let pk = generate_part(lwe, mask_seed, &secret, math::seed_from(rng));
    let body = pk.get_body().as_ref().to_vec();

    let sets = params.share_sets();
    let mut generator = math::generator_from(rng);
    let mut parts: Vec<Vec<u64>> = Vec::with_capacity(sets.len());
    let mut last = secret;
    for _ in 1..sets.len() {
        let r = math::uniform_words(n, &mut generator);
        math::sub_assign(&mut last, &r);
        parts.push(r);
    }
    parts.push(last);

    let bundles = (0..params.members)
        .map(|recipient| ShareBundle {
            dealer: member,
            recipient,
            shares: params
                .held_sets(recipient)
                .into_iter()
                .map(|i| (i, parts[i as usize].clone()))
                .collect(),
        })
        .collect();
    for part in &mut parts {
        part.zeroize();
    }
    Ok((KeyShareContribution { member, body }, bundles))
}

/// Sums the members' contributions into the joint public key. Needs one from every member.
pub fn combine_public_key(
    params: &CommitteeParams,
    mask_seed: MaskSeed,
    contributions: &[KeyShareContribution],
) -> Result<CompactPublicKey> {
    params.validate()?;
    let lwe = params.he.lwe;
    let mut seen = vec![false; params.members as usize];
    let mut body = vec![0u64; lwe.lwe_dimension];
    for c in contributions {
        let slot = seen.get_mut(c.member as usize).ok_or_else(|| {
            Error::Mismatch(format!("contribution from unknown member {}", c.member))
        })?;
        if *slot {
            return Err(Error::Duplicate(format!(
                "two contributions from member {}",
                c.member
            )));
        }
        if c.body.len() != lwe.lwe_dimension {
            return Err(Error::Mismatch(
                "contribution has the wrong dimension".into(),
            ));
        }
        *slot = true;
        math::add_assign(&mut body, &c.body);
    }
    if let Some(missing) = seen.iter().position(|s| !s) {
        return Err(Error::Mismatch(format!(
            "no contribution from member {missing}: key generation needs every member"
        )));
    }
    Ok(CompactPublicKey::from_parts(
        lwe,
        &common_mask(lwe, mask_seed),
        &body,
    ))
}

impl KeyShareContribution {
    /// Canonical encoding.
    pub fn to_bytes(&self) -> Vec<u8> {
        let mut w = Writer::with_tag(b"DHEC");
        w.u32(self.member);
        w.words(&self.body);
        w.finish()
    }

    /// Decodes a contribution of dimension `lwe.lwe_dimension`.
    pub fn from_bytes(bytes: &[u8], lwe: LweParams) -> Result<Self> {
        let mut r = Reader::with_tag(bytes, b"DHEC", "key contribution")?;
        let member = r.u32()?;
        let body = r.words(lwe.lwe_dimension)?;
        r.finish()?;
        if body.len() != lwe.lwe_dimension {
            return Err(Error::Malformed("key contribution: wrong length".into()));
        }
        Ok(Self { member, body })
    }
}

impl ShareBundle {
    /// Canonical encoding.
    pub fn to_bytes(&self) -> Vec<u8> {
        let mut w = Writer::with_tag(b"DHES");
        w.u32(self.dealer);
        w.u32(self.recipient);
        w.len(self.shares.len());
        for (i, s) in &self.shares {
            w.u32(*i);
            w.words(s);
        }
        w.finish()
    }

    /// Decodes a bundle; lengths are bounded by `limits.max_words`.
    pub fn from_bytes(bytes: &[u8], limits: &Limits) -> Result<Self> {
        let mut r = Reader::with_tag(bytes, b"DHES", "share bundle")?;
        let dealer = r.u32()?;
        let recipient = r.u32()?;
        let count = r.len(1 << 16, 8)?;
        let mut shares = Vec::with_capacity(count);
        let mut words = 0usize;
        for _ in 0..count {
            let i = r.u32()?;
            let s = r.words(limits.max_words.saturating_sub(words))?;
            words += s.len();
            shares.push((i, s));
        }
        r.finish()?;
        Ok(Self {
            dealer,
            recipient,
            shares,
        })
    }
}
