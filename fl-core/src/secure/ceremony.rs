//! The decryption committee's key ceremony for homomorphic aggregation: dealerless key
//! generation run by the committee members themselves, with everything they exchange signed
//! by their member keys and the secret shares encrypted to their recipients.
//!
//! Three steps, each a pure function over messages (the `fl-client committee` commands move
//! them as files through any shared directory: the files hold nothing secret in the clear):
//!
//! 1. [`commit`]: each holder draws a transport key (X25519) and a dealing seed, and publishes
//!    a signed [`CommitMessage`]: its transport public key and the SHA-256 of the public key
//!    part it will contribute. Committing first stops a holder from choosing its part after
//!    seeing the others' (which would let it cancel them and hold the whole key).
//! 2. [`deal`]: once every holder committed, each publishes a signed [`DealMessage`]: its public
//!    key part (which must match its commitment) and one [`ShareBundle`] per holder, encrypted
//!    to that holder's transport key (X25519 with a fresh ephemeral key, HKDF-SHA256,
//!    ChaCha20-Poly1305, bound to the ceremony, dealer and recipient).
//! 3. [`finish`]: each holder checks every message, decrypts the bundles addressed to it and
//!    assembles its [`CommitteeMember`] state; the joint key is the sum of the parts. The
//!    aggregator (or anyone) recomputes and checks the joint key with [`public_key`].
//!
//! What a [`CeremonySpec`] fixes (federation, holders in committee order, threshold, plaintext
//! width, key epoch) is hashed into every signed message and into the common mask seed, so
//! messages of another committee, federation or key epoch are rejected.
//!
//! Not covered: a holder that deals inconsistent shares (its bundles do not sum to the key
//! part it published) breaks decryption, not confidentiality; nothing here proves a part is
//! well formed (see `secure-agg/HE.md`).

use chacha20poly1305::aead::{Aead, KeyInit, Payload};
use chacha20poly1305::{ChaCha20Poly1305, Nonce};
use hkdf::Hkdf;
use rand::{CryptoRng, SeedableRng};
use secure_agg::he::keygen::{self, KeyShareContribution, MaskSeed, ShareBundle};
use secure_agg::he::{CommitteeMember, CommitteeParams, CompactPublicKey, Limits};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use zeroize::{Zeroize, ZeroizeOnDrop};

use crate::identity::{Address, MemberKey, MemberSignature};

/// Why a ceremony step failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum CeremonyError {
    /// The committee settings are unusable.
    #[error("committee settings: {0}")]
    Settings(String),
    /// A message is malformed, for another ceremony, or missing.
    #[error("{what}: {reason}")]
    Message {
        /// Which message.
        what: String,
        /// What is wrong with it.
        reason: String,
    },
    /// A signature does not verify against the holder's address.
    #[error("{what}: not signed by holder {holder} ({address})")]
    Signature {
        /// Which message.
        what: String,
        /// Its claimed committee index.
        holder: u32,
        /// The address the signature must recover to.
        address: Address,
    },
    /// A holder dealt a key part other than the one it committed to.
    #[error("holder {0} dealt a key part other than the one it committed to")]
    CommitmentMismatch(u32),
    /// A share bundle addressed to this holder does not decrypt (tampered or for another key).
    #[error("the share bundle from holder {0} does not decrypt")]
    Decrypt(u32),
    /// The homomorphic library refused the key material.
    #[error("key generation: {0}")]
    KeyGen(String),
}

type Result<T> = std::result::Result<T, CeremonyError>;

fn message_err(what: impl Into<String>, reason: impl Into<String>) -> CeremonyError {
    CeremonyError::Message {
        what: what.into(),
        reason: reason.into(),
    }
}

fn keygen_err(e: secure_agg::he::Error) -> CeremonyError {
    CeremonyError::KeyGen(e.to_string())
}

/// What the committee agrees on before generating its key (from the federation file).
#[derive(Debug, Clone, PartialEq)]
pub struct CeremonySpec {
    /// The federation the key serves.
    pub federation_id: String,
    /// The holders' member addresses, in committee order (holder `i` has index `i`).
    pub holders: Vec<Address>,
    /// Committee and encryption parameters (`members` equals the number of holders).
    pub params: CommitteeParams,
    /// Bumped to generate a fresh key for the same committee (key rotation).
    pub key_epoch: u64,
}

impl CeremonySpec {
    /// Checks the holders against the parameters.
    pub fn validate(&self) -> Result<()> {
        self.params
            .validate()
            .map_err(|e| CeremonyError::Settings(e.to_string()))?;
        if self.holders.len() != self.params.members as usize {
            return Err(CeremonyError::Settings(format!(
                "{} holders for a committee of {}",
                self.holders.len(),
                self.params.members
            )));
        }
        let mut sorted = self.holders.clone();
        sorted.sort_unstable();
        sorted.dedup();
        if sorted.len() != self.holders.len() {
            return Err(CeremonyError::Settings("a holder is listed twice".into()));
        }
        Ok(())
    }

    /// SHA-256 of everything the spec fixes: names the ceremony in every message.
    pub fn id(&self) -> [u8; 32] {
        let p = &self.params;
        let mut h = Sha256::new();
        h.update(b"daofl/he/ceremony/v1\0");
        h.update((self.federation_id.len() as u64).to_le_bytes());
        h.update(self.federation_id.as_bytes());
        h.update((self.holders.len() as u64).to_le_bytes());
        for a in &self.holders {
            h.update(a.as_slice());
        }
        for v in [
            p.members,
            p.threshold,
            p.min_contributors,
            p.he.plaintext_bits,
            p.he.max_clients,
            p.he.lwe.lwe_dimension as u32,
            p.he.lwe.noise_bound_log2,
            p.he.chunk_values as u32,
        ] {
            h.update(v.to_le_bytes());
        }
        h.update(
            p.smudging_std_log2
                .map_or(u64::MAX, f64::to_bits)
                .to_le_bytes(),
        );
        h.update(self.key_epoch.to_le_bytes());
        h.finalize().into()
    }

    /// The public common-mask seed of the joint key.
    pub fn mask_seed(&self) -> MaskSeed {
        let d: [u8; 32] = Sha256::new()
            .chain_update(b"daofl/he/mask-seed/v1\0")
            .chain_update(self.id())
            .finalize()
            .into();
        let mut seed = [0u8; 16];
        seed.copy_from_slice(&d[..16]);
        u128::from_le_bytes(seed)
    }

    /// The committee index of `address`, if it is a holder.
    pub fn holder_index(&self, address: Address) -> Option<u32> {
        self.holders
            .iter()
            .position(|a| *a == address)
            .map(|i| i as u32)
    }
}

/// The ceremony a federation file describes: `[secure_aggregation.committee]` (shape),
/// `[secure_aggregation.ceremony]` (holders, key epoch) and the member list (the noise budget
/// is sized for every member contributing).
pub fn spec_from_config(config: &crate::config::FederationConfig) -> Result<CeremonySpec> {
    let settings = |m: &str| CeremonyError::Settings(m.to_string());
    let secure = config
        .secure_aggregation
        .as_ref()
        .ok_or_else(|| settings("the federation has no [secure_aggregation]"))?;
    let committee = secure
        .committee
        .as_ref()
        .ok_or_else(|| settings("the federation has no [secure_aggregation.committee]"))?;
    let ceremony = secure
        .ceremony
        .as_ref()
        .ok_or_else(|| settings("the federation has no [secure_aggregation.ceremony]"))?;
    let members = config
        .members()
        .map_err(|e| CeremonyError::Settings(e.to_string()))?;
    let holders = ceremony
        .holders
        .iter()
        .enumerate()
        .map(|(i, h)| {
            let a: Address = h.parse().map_err(|e| {
                CeremonyError::Settings(format!(
                    "secure_aggregation.ceremony.holders[{i}] = {h:?} is not an address: {e}"
                ))
            })?;
            if !members.contains(&a) {
                return Err(CeremonyError::Settings(format!(
                    "holder {a} is not in [members] allowed"
                )));
            }
            Ok(a)
        })
        .collect::<Result<Vec<_>>>()?;
    let params = committee
        .params(secure.modulus_bits, members.len() as u32)
        .map_err(|e| CeremonyError::Settings(e.to_string()))?;
    let spec = CeremonySpec {
        federation_id: config.federation.id.clone(),
        holders,
        params,
        key_epoch: ceremony.key_epoch,
    };
    spec.validate()?;
    Ok(spec)
}

/// `[secure_aggregation.ceremony] dir` of a federation file.
pub fn dir_from_config(config: &crate::config::FederationConfig) -> Result<std::path::PathBuf> {
    config
        .secure_aggregation
        .as_ref()
        .and_then(|s| s.ceremony.as_ref())
        .map(|c| c.dir.clone())
        .ok_or_else(|| {
            CeremonyError::Settings("the federation has no [secure_aggregation.ceremony]".into())
        })
}

/// A holder's ceremony secrets: its transport key and dealing seed. Keep it like a private key
/// until [`finish`] has run; it is useless afterwards.
#[derive(Clone, Zeroize, ZeroizeOnDrop)]
pub struct CeremonySecret {
    ceremony: [u8; 32],
    holder: u32,
    transport: [u8; 32],
    seed: [u8; 32],
}

impl std::fmt::Debug for CeremonySecret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CeremonySecret")
            .field("holder", &self.holder)
            .finish_non_exhaustive()
    }
}

impl CeremonySecret {
    /// The holder's committee index.
    pub fn holder(&self) -> u32 {
        self.holder
    }

    /// 104 bytes: tag, ceremony id, holder, transport secret, dealing seed.
    pub fn to_bytes(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(104);
        out.extend_from_slice(b"DHCS");
        out.extend_from_slice(&self.ceremony);
        out.extend_from_slice(&self.holder.to_le_bytes());
        out.extend_from_slice(&self.transport);
        out.extend_from_slice(&self.seed);
        out
    }

    /// Reads [`to_bytes`](Self::to_bytes) back.
    pub fn from_bytes(bytes: &[u8]) -> Result<Self> {
        if bytes.len() != 104 || &bytes[..4] != b"DHCS" {
            return Err(message_err(
                "ceremony secret",
                "not a ceremony secret (expected 104 bytes starting with DHCS)",
            ));
        }
        let arr = |r: std::ops::Range<usize>| {
            let mut a = [0u8; 32];
            a.copy_from_slice(&bytes[r]);
            a
        };
        Ok(Self {
            ceremony: arr(4..36),
            holder: u32::from_le_bytes([bytes[36], bytes[37], bytes[38], bytes[39]]),
            transport: arr(40..72),
            seed: arr(72..104),
        })
    }

    fn check(&self, spec: &CeremonySpec) -> Result<()> {
        if self.holder as usize >= spec.holders.len() {
            return Err(message_err(
                "ceremony secret",
                format!("holder {} is not in the committee", self.holder),
            ));
        }
        if self.ceremony != spec.id() {
            return Err(message_err(
                "ceremony secret",
                "belongs to another ceremony (federation, committee or key epoch changed)",
            ));
        }
        Ok(())
    }

    fn transport_public(&self) -> [u8; 32] {
        x25519_dalek::PublicKey::from(&x25519_dalek::StaticSecret::from(self.transport)).to_bytes()
    }

    /// The deterministic dealing: the same seed always deals the same part and shares.
    fn dealing(&self, spec: &CeremonySpec) -> Result<(KeyShareContribution, Vec<ShareBundle>)> {
        let mut rng = rand_chacha::ChaCha20Rng::from_seed(self.seed);
        keygen::deal(&spec.params, spec.mask_seed(), self.holder, &mut rng).map_err(keygen_err)
    }
}

/// Step 1: a holder's signed transport key and commitment to its key part.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CommitMessage {
    /// Ceremony id (hex).
    pub ceremony: String,
    /// Committee index of the holder.
    pub holder: u32,
    /// X25519 public key the holder's share bundles are encrypted to (hex).
    pub transport_key: String,
    /// SHA-256 of the holder's key part (hex), revealed in its [`DealMessage`].
    pub part_digest: String,
    /// The holder's signature over all of the above.
    pub signature: MemberSignature,
}

/// One share bundle encrypted to its recipient.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SealedBundle {
    /// Committee index of the recipient.
    pub recipient: u32,
    /// The ephemeral X25519 public key (hex).
    pub ephemeral: String,
    /// ChaCha20-Poly1305 ciphertext of the bundle's encoding (hex).
    pub ciphertext: String,
}

/// Step 2: a holder's key part and its encrypted share bundles.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DealMessage {
    /// Ceremony id (hex).
    pub ceremony: String,
    /// Committee index of the dealer.
    pub holder: u32,
    /// The key part (hex of secure-agg's encoding).
    pub part: String,
    /// One bundle per holder, in committee order.
    pub bundles: Vec<SealedBundle>,
    /// The dealer's signature over all of the above.
    pub signature: MemberSignature,
}

impl CommitMessage {
    fn signing_bytes(&self) -> Vec<u8> {
        commit_statement(
            &self.ceremony,
            self.holder,
            &self.transport_key,
            &self.part_digest,
        )
    }
}

fn commit_statement(
    ceremony: &str,
    holder: u32,
    transport_key: &str,
    part_digest: &str,
) -> Vec<u8> {
    let mut m = b"daofl/he/ceremony/commit/v1\0".to_vec();
    for field in [ceremony, transport_key, part_digest] {
        m.extend_from_slice(&(field.len() as u64).to_le_bytes());
        m.extend_from_slice(field.as_bytes());
    }
    m.extend_from_slice(&holder.to_le_bytes());
    m
}

impl DealMessage {
    fn signing_bytes(&self) -> Vec<u8> {
        deal_statement(&self.ceremony, self.holder, &self.part, &self.bundles)
    }
}

fn deal_statement(ceremony: &str, holder: u32, part: &str, bundles: &[SealedBundle]) -> Vec<u8> {
    let mut h = Sha256::new();
    h.update(b"daofl/he/ceremony/deal/v1\0");
    h.update((ceremony.len() as u64).to_le_bytes());
    h.update(ceremony.as_bytes());
    h.update(holder.to_le_bytes());
    h.update((part.len() as u64).to_le_bytes());
    h.update(part.as_bytes());
    h.update((bundles.len() as u64).to_le_bytes());
    for b in bundles {
        h.update(b.recipient.to_le_bytes());
        h.update((b.ephemeral.len() as u64).to_le_bytes());
        h.update(b.ephemeral.as_bytes());
        h.update((b.ciphertext.len() as u64).to_le_bytes());
        h.update(b.ciphertext.as_bytes());
    }
    let digest: [u8; 32] = h.finalize().into();
    digest.to_vec()
}

fn check_signature(
    spec: &CeremonySpec,
    what: &str,
    holder: u32,
    message: &[u8],
    signature: &MemberSignature,
) -> Result<()> {
    let Some(&address) = spec.holders.get(holder as usize) else {
        return Err(message_err(
            what,
            format!("holder {holder} is not in the committee"),
        ));
    };
    match signature.recover(message) {
        Ok(a) if a == address => Ok(()),
        _ => Err(CeremonyError::Signature {
            what: what.into(),
            holder,
            address,
        }),
    }
}

fn hex32(what: &str, field: &str, text: &str) -> Result<[u8; 32]> {
    let bytes = hex::decode(text).map_err(|e| message_err(what, format!("{field}: {e}")))?;
    bytes
        .try_into()
        .map_err(|_| message_err(what, format!("{field} is not 32 bytes")))
}

fn part_digest(part: &KeyShareContribution) -> [u8; 32] {
    Sha256::digest(part.to_bytes()).into()
}

/// The holders' commitments in committee order: exactly one per holder, each for this
/// ceremony and signed by its holder.
fn check_commits<'a>(
    spec: &CeremonySpec,
    commits: &'a [CommitMessage],
) -> Result<Vec<&'a CommitMessage>> {
    let id = hex::encode(spec.id());
    let mut ordered: Vec<Option<&CommitMessage>> = vec![None; spec.holders.len()];
    for c in commits {
        let what = format!("commitment of holder {}", c.holder);
        if c.ceremony != id {
            return Err(message_err(what, "for another ceremony"));
        }
        let slot = ordered
            .get_mut(c.holder as usize)
            .ok_or_else(|| message_err(&what, "no such holder"))?;
        if slot.is_some() {
            return Err(message_err(what, "a second commitment"));
        }
        hex32(&what, "transport_key", &c.transport_key)?;
        hex32(&what, "part_digest", &c.part_digest)?;
        check_signature(spec, &what, c.holder, &c.signing_bytes(), &c.signature)?;
        *slot = Some(c);
    }
    ordered
        .into_iter()
        .enumerate()
        .map(|(i, c)| c.ok_or_else(|| message_err(format!("commitment of holder {i}"), "missing")))
        .collect()
}

/// The dealers' messages in committee order, checked against the commitments: one per holder,
/// signed, for this ceremony, revealing the committed key part, with one bundle per holder.
fn check_deals<'a>(
    spec: &CeremonySpec,
    commits: &[&CommitMessage],
    deals: &'a [DealMessage],
) -> Result<Vec<(&'a DealMessage, KeyShareContribution)>> {
    let id = hex::encode(spec.id());
    let lwe = spec.params.he.lwe;
    let mut ordered: Vec<Option<(&DealMessage, KeyShareContribution)>> =
        (0..spec.holders.len()).map(|_| None).collect();
    for d in deals {
        let what = format!("dealing of holder {}", d.holder);
        if d.ceremony != id {
            return Err(message_err(what, "for another ceremony"));
        }
        let slot = ordered
            .get_mut(d.holder as usize)
            .ok_or_else(|| message_err(&what, "no such holder"))?;
        if slot.is_some() {
            return Err(message_err(what, "a second dealing"));
        }
        check_signature(spec, &what, d.holder, &d.signing_bytes(), &d.signature)?;
        let bytes = hex::decode(&d.part).map_err(|e| message_err(&what, format!("part: {e}")))?;
        let part = KeyShareContribution::from_bytes(&bytes, lwe)
            .map_err(|e| message_err(&what, e.to_string()))?;
        if part.member != d.holder {
            return Err(message_err(
                what,
                format!("a part of holder {}", part.member),
            ));
        }
        let committed = hex32(
            &what,
            "part_digest",
            &commits[d.holder as usize].part_digest,
        )?;
        if part_digest(&part) != committed {
            return Err(CeremonyError::CommitmentMismatch(d.holder));
        }
        let recipients: Vec<u32> = d.bundles.iter().map(|b| b.recipient).collect();
        if recipients != (0..spec.holders.len() as u32).collect::<Vec<_>>() {
            return Err(message_err(
                what,
                "needs one bundle per holder, in committee order",
            ));
        }
        *slot = Some((d, part));
    }
    ordered
        .into_iter()
        .enumerate()
        .map(|(i, d)| d.ok_or_else(|| message_err(format!("dealing of holder {i}"), "missing")))
        .collect()
}

fn bundle_key(
    spec_id: &[u8; 32],
    dealer: u32,
    recipient: u32,
    ephemeral: &[u8; 32],
    recipient_key: &[u8; 32],
    shared: &[u8; 32],
) -> chacha20poly1305::Key {
    let mut info = b"daofl/he/ceremony/bundle/v1\0".to_vec();
    info.extend_from_slice(&dealer.to_le_bytes());
    info.extend_from_slice(&recipient.to_le_bytes());
    info.extend_from_slice(ephemeral);
    info.extend_from_slice(recipient_key);
    let mut key = [0u8; 32];
    Hkdf::<Sha256>::new(Some(spec_id), shared)
        .expand(&info, &mut key)
        .expect("32 bytes is a valid HKDF-SHA256 output length");
    let k = chacha20poly1305::Key::from(key);
    key.zeroize();
    k
}

fn bundle_aad(spec_id: &[u8; 32], dealer: u32, recipient: u32) -> Vec<u8> {
    let mut aad = spec_id.to_vec();
    aad.extend_from_slice(&dealer.to_le_bytes());
    aad.extend_from_slice(&recipient.to_le_bytes());
    aad
}

/// Step 1 for holder `key`: its secrets (keep them) and its commitment (publish it).
pub fn commit<R: CryptoRng + ?Sized>(
    spec: &CeremonySpec,
    key: &MemberKey,
    rng: &mut R,
) -> Result<(CeremonySecret, CommitMessage)> {
    spec.validate()?;
    let holder = spec.holder_index(key.address()).ok_or_else(|| {
        CeremonyError::Settings(format!("{} is not a committee holder", key.address()))
    })?;
    let mut transport = [0u8; 32];
    let mut seed = [0u8; 32];
    rng.fill_bytes(&mut transport);
    rng.fill_bytes(&mut seed);
    let secret = CeremonySecret {
        ceremony: spec.id(),
        holder,
        transport,
        seed,
    };
    transport.zeroize();
    seed.zeroize();
    let (part, _bundles) = secret.dealing(spec)?;
    let ceremony = hex::encode(spec.id());
    let transport_key = hex::encode(secret.transport_public());
    let part_digest = hex::encode(part_digest(&part));
    let signature = key.sign_message(&commit_statement(
        &ceremony,
        holder,
        &transport_key,
        &part_digest,
    ));
    let message = CommitMessage {
        ceremony,
        holder,
        transport_key,
        part_digest,
        signature,
    };
    Ok((secret, message))
}

/// Step 2 for holder `key`, once every holder committed: its key part and its share bundles,
/// each encrypted to its recipient's transport key.
pub fn deal<R: CryptoRng + ?Sized>(
    spec: &CeremonySpec,
    key: &MemberKey,
    secret: &CeremonySecret,
    commits: &[CommitMessage],
    rng: &mut R,
) -> Result<DealMessage> {
    spec.validate()?;
    secret.check(spec)?;
    if spec.holders.get(secret.holder as usize) != Some(&key.address()) {
        return Err(CeremonyError::Settings(
            "the ceremony secret belongs to another holder".into(),
        ));
    }
    let commits = check_commits(spec, commits)?;
    let (part, bundles) = secret.dealing(spec)?;
    let own = &commits[secret.holder as usize];
    if own.transport_key != hex::encode(secret.transport_public())
        || own.part_digest != hex::encode(part_digest(&part))
    {
        return Err(message_err(
            format!("commitment of holder {}", secret.holder),
            "is not this holder's (another run of `commit`?)",
        ));
    }
    let id = spec.id();
    let sealed = bundles
        .iter()
        .zip(&commits)
        .map(|(bundle, c)| {
            let recipient_key = hex32("commitment", "transport_key", &c.transport_key)?;
            let mut eph_bytes = [0u8; 32];
            rng.fill_bytes(&mut eph_bytes);
            let eph = x25519_dalek::StaticSecret::from(eph_bytes);
            eph_bytes.zeroize();
            let eph_pub = x25519_dalek::PublicKey::from(&eph).to_bytes();
            let shared = eph.diffie_hellman(&x25519_dalek::PublicKey::from(recipient_key));
            let k = bundle_key(
                &id,
                secret.holder,
                c.holder,
                &eph_pub,
                &recipient_key,
                shared.as_bytes(),
            );
            // The key is fresh (ephemeral DH) for every bundle: a zero nonce is never reused.
            let mut plain = bundle.to_bytes();
            let ciphertext = ChaCha20Poly1305::new(&k)
                .encrypt(
                    &Nonce::default(),
                    Payload {
                        msg: &plain,
                        aad: &bundle_aad(&id, secret.holder, c.holder),
                    },
                )
                .map_err(|_| CeremonyError::KeyGen("bundle encryption failed".into()))?;
            plain.zeroize();
            Ok(SealedBundle {
                recipient: c.holder,
                ephemeral: hex::encode(eph_pub),
                ciphertext: hex::encode(ciphertext),
            })
        })
        .collect::<Result<Vec<_>>>()?;
    let ceremony = hex::encode(id);
    let part = hex::encode(part.to_bytes());
    let signature = key.sign_message(&deal_statement(&ceremony, secret.holder, &part, &sealed));
    Ok(DealMessage {
        ceremony,
        holder: secret.holder,
        part,
        bundles: sealed,
        signature,
    })
}

/// The joint public key from every holder's checked commitment and dealing (what the
/// aggregator and auditors run).
pub fn public_key(
    spec: &CeremonySpec,
    commits: &[CommitMessage],
    deals: &[DealMessage],
) -> Result<CompactPublicKey> {
    spec.validate()?;
    let commits = check_commits(spec, commits)?;
    let deals = check_deals(spec, &commits, deals)?;
    let parts: Vec<KeyShareContribution> = deals.into_iter().map(|(_, p)| p).collect();
    keygen::combine_public_key(&spec.params, spec.mask_seed(), &parts).map_err(keygen_err)
}

/// Step 3 for the holder of `secret`: checks every message, decrypts the bundles addressed to
/// it and returns the joint public key and its committee member state.
pub fn finish(
    spec: &CeremonySpec,
    secret: &CeremonySecret,
    commits: &[CommitMessage],
    deals: &[DealMessage],
) -> Result<(CompactPublicKey, CommitteeMember)> {
    spec.validate()?;
    secret.check(spec)?;
    let commits = check_commits(spec, commits)?;
    let checked = check_deals(spec, &commits, deals)?;
    let me = secret.holder;
    if commits[me as usize].transport_key != hex::encode(secret.transport_public()) {
        return Err(message_err(
            format!("commitment of holder {me}"),
            "does not carry this secret's transport key",
        ));
    }
    let id = spec.id();
    let transport = x25519_dalek::StaticSecret::from(secret.transport);
    let my_pub = secret.transport_public();
    let limits = Limits::default();
    let mut bundles = Vec::with_capacity(checked.len());
    for (d, _) in &checked {
        let sealed = &d.bundles[me as usize];
        let what = format!("bundle from holder {} to holder {me}", d.holder);
        let eph = hex32(&what, "ephemeral", &sealed.ephemeral)?;
        let ciphertext =
            hex::decode(&sealed.ciphertext).map_err(|e| message_err(&what, e.to_string()))?;
        let shared = transport.diffie_hellman(&x25519_dalek::PublicKey::from(eph));
        let k = bundle_key(&id, d.holder, me, &eph, &my_pub, shared.as_bytes());
        let mut plain = ChaCha20Poly1305::new(&k)
            .decrypt(
                &Nonce::default(),
                Payload {
                    msg: &ciphertext,
                    aad: &bundle_aad(&id, d.holder, me),
                },
            )
            .map_err(|_| CeremonyError::Decrypt(d.holder))?;
        let bundle = ShareBundle::from_bytes(&plain, &limits);
        plain.zeroize();
        let bundle = bundle.map_err(|e| message_err(&what, e.to_string()))?;
        if bundle.dealer != d.holder || bundle.recipient != me {
            return Err(message_err(what, "names another dealer or recipient"));
        }
        bundles.push(bundle);
    }
    let parts: Vec<KeyShareContribution> = checked.into_iter().map(|(_, p)| p).collect();
    let key =
        keygen::combine_public_key(&spec.params, spec.mask_seed(), &parts).map_err(keygen_err)?;
    let member =
        CommitteeMember::from_bundles(spec.params, &key, me, &bundles).map_err(keygen_err)?;
    Ok((key, member))
}

/// The file name of holder `holder`'s message of kind `prefix` (`commit` or `deal`).
pub fn message_file(prefix: &str, holder: u32) -> String {
    format!("{prefix}-{holder:02}.json")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec(keys: &[MemberKey], threshold: u32) -> CeremonySpec {
        CeremonySpec {
            federation_id: "fed".into(),
            holders: keys.iter().map(|k| k.address()).collect(),
            params: CommitteeParams::new(keys.len() as u32, threshold, 2, 16, 10).unwrap(),
            key_epoch: 0,
        }
    }

    fn rng() -> rand_chacha::ChaCha20Rng {
        rand_chacha::ChaCha20Rng::seed_from_u64(7)
    }

    struct Run {
        secrets: Vec<CeremonySecret>,
        commits: Vec<CommitMessage>,
        deals: Vec<DealMessage>,
    }

    fn run(spec: &CeremonySpec, keys: &[MemberKey]) -> Run {
        let mut rng = rng();
        let (secrets, commits): (Vec<_>, Vec<_>) = keys
            .iter()
            .map(|k| commit(spec, k, &mut rng).unwrap())
            .unzip();
        let deals = keys
            .iter()
            .zip(&secrets)
            .map(|(k, s)| deal(spec, k, s, &commits, &mut rng).unwrap())
            .collect();
        Run {
            secrets,
            commits,
            deals,
        }
    }

    #[test]
    fn every_holder_gets_a_working_share_and_the_same_key() {
        let keys: Vec<MemberKey> = (0..3).map(|_| MemberKey::generate()).collect();
        let spec = spec(&keys, 2);
        let r = run(&spec, &keys);
        let key = public_key(&spec, &r.commits, &r.deals).unwrap();
        let members: Vec<CommitteeMember> = r
            .secrets
            .iter()
            .map(|s| {
                let (k, m) = finish(&spec, s, &r.commits, &r.deals).unwrap();
                assert_eq!(k, key);
                m
            })
            .collect();
        // The state survives a round trip, and the shares decrypt an aggregate.
        let restored: Vec<CommitteeMember> = members
            .iter()
            .map(|m| CommitteeMember::from_bytes(&m.to_bytes()).unwrap())
            .collect();
        assert_eq!(restored[1].to_bytes(), members[1].to_bytes());
        // JSON round trip of the messages.
        let json = serde_json::to_string(&r.deals[0]).unwrap();
        assert_eq!(
            serde_json::from_str::<DealMessage>(&json).unwrap(),
            r.deals[0]
        );
    }

    #[test]
    fn tampered_missing_or_foreign_messages_are_refused() {
        let keys: Vec<MemberKey> = (0..3).map(|_| MemberKey::generate()).collect();
        let spec = spec(&keys, 2);
        let r = run(&spec, &keys);

        // A flipped ciphertext byte: that holder's bundle does not decrypt (the signature
        // still covers the dealing, so re-sign as the dealer to reach the AEAD check).
        let mut deals = r.deals.clone();
        let mut bytes = hex::decode(&deals[0].bundles[1].ciphertext).unwrap();
        bytes[5] ^= 1;
        deals[0].bundles[1].ciphertext = hex::encode(bytes);
        assert!(matches!(
            public_key(&spec, &r.commits, &deals),
            Err(CeremonyError::Signature { holder: 0, .. })
        ));
        deals[0].signature = keys[0].sign_message(&deals[0].signing_bytes());
        assert!(matches!(
            finish(&spec, &r.secrets[1], &r.commits, &deals),
            Err(CeremonyError::Decrypt(0))
        ));

        // A dealing signed by someone else.
        let mut deals = r.deals.clone();
        deals[2].signature = keys[0].sign_message(&deals[2].signing_bytes());
        assert!(matches!(
            public_key(&spec, &r.commits, &deals),
            Err(CeremonyError::Signature { holder: 2, .. })
        ));

        // A holder revealing a part other than its commitment (the rogue-key attack), even
        // correctly signed.
        let mut deals = r.deals.clone();
        deals[1].part = r.deals[2].part.clone();
        deals[1].signature = keys[1].sign_message(&deals[1].signing_bytes());
        assert!(matches!(
            public_key(&spec, &r.commits, &deals),
            Err(CeremonyError::Message { what, reason })
                if what == "dealing of holder 1" && reason == "a part of holder 2"
        ));
        // ... or its own part altered after it committed (the last holder choosing its part
        // once it has seen the others'): the commitment catches it.
        let mut deals = r.deals.clone();
        let mut part = hex::decode(&deals[1].part).unwrap();
        let last = part.len() - 1;
        part[last] ^= 1;
        deals[1].part = hex::encode(part);
        deals[1].signature = keys[1].sign_message(&deals[1].signing_bytes());
        assert!(matches!(
            public_key(&spec, &r.commits, &deals),
            Err(CeremonyError::CommitmentMismatch(1))
        ));

        // Missing and duplicated messages.
        let refused = |r: Result<CompactPublicKey>, w: &str, why: &str| {
            assert!(
                matches!(&r, Err(CeremonyError::Message { what, reason })
                    if what == w && reason == why),
                "{r:?}"
            );
        };
        refused(
            public_key(&spec, &r.commits, &r.deals[..2]),
            "dealing of holder 2",
            "missing",
        );
        refused(
            public_key(&spec, &r.commits[..2], &r.deals),
            "commitment of holder 2",
            "missing",
        );
        let mut twice = r.deals.clone();
        twice.push(r.deals[0].clone());
        refused(
            public_key(&spec, &r.commits, &twice),
            "dealing of holder 0",
            "a second dealing",
        );

        // Another key epoch: every message is for another ceremony.
        let mut other = spec.clone();
        other.key_epoch = 1;
        refused(
            public_key(&other, &r.commits, &r.deals),
            "commitment of holder 0",
            "for another ceremony",
        );
        assert!(matches!(
            finish(&other, &r.secrets[0], &r.commits, &r.deals),
            Err(CeremonyError::Message { what, reason })
                if what == "ceremony secret"
                    && reason.starts_with("belongs to another ceremony")
        ));

        // A secret read back from bytes still works; garbage does not parse.
        let s = CeremonySecret::from_bytes(&r.secrets[2].to_bytes()).unwrap();
        assert!(finish(&spec, &s, &r.commits, &r.deals).is_ok());
        assert!(matches!(
            CeremonySecret::from_bytes(b"DHCS short"),
            Err(CeremonyError::Message { what, reason })
                if what == "ceremony secret"
                    && reason.starts_with("not a ceremony secret")
        ));

        // A non-holder cannot commit.
        let stranger = MemberKey::generate();
        assert!(matches!(
            commit(&spec, &stranger, &mut rng()),
            Err(CeremonyError::Settings(s))
                if s == format!("{} is not a committee holder", stranger.address())
        ));
    }
}
