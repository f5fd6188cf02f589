//! Homomorphic secure aggregation in the round (`protocol = "he"`): members encrypt their
//! encoded update once under the committee's joint LWE public key (tfhe `core_crypto` compact
//! lists, `secure_agg::he`), the aggregator adds ciphertexts as they arrive, and `t` committee
//! members decrypt only the sum. A member needs no other member, so dropouts cost nothing.

use std::sync::Arc;

use secure_agg::he::{
    self, ClientEncryptor, DecryptionRequest, EncryptedChunk, PartialDecryption, SignedManifest,
    UploadManifest,
};
/// The homomorphic backend's types a federation's parties hold.
pub use secure_agg::he::{CommitteeMember, CommitteeParams, CompactPublicKey};

use super::{MemberSigner, MemberVerifier, SecureError, Weighting, encode_vector};

/// What the aggregator tells each selected member about a homomorphic fit stage.
#[derive(Debug, Clone)]
pub struct HeFit {
    /// Committee, encryption and chunking parameters.
    pub params: CommitteeParams,
    /// The committee's joint public key.
    pub public_key: CompactPublicKey,
    /// The fixed-point codec every member encodes with.
    pub codec: secure_agg::CodecConfig,
    /// How members weigh.
    pub weighting: Weighting,
    /// Values in the encrypted vector (the encoded update and the weight).
    pub num_values: usize,
}

impl PartialEq for HeFit {
    fn eq(&self, other: &Self) -> bool {
        self.params == other.params
            && self.public_key.digest() == other.public_key.digest()
            && self.codec == other.codec
            && self.weighting == other.weighting
            && self.num_values == other.num_values
    }
}

impl HeFit {
    /// Decoding bounds for this stage's messages.
    pub fn limits(&self) -> he::Limits {
        he::Limits {
            max_words: (self.num_values + 2 * self.params.he.chunk_values).max(1 << 16),
            max_contributors: 1 << 16,
            max_chunks: self.params.he.chunk_count(self.num_values).max(1),
            max_signature_bytes: 65,
        }
    }
}

/// A member's encrypted update: its signed manifest and the ciphertext chunks, each in
/// `secure-agg`'s bounded encoding.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EncryptedUpdate {
    /// The signed manifest (round, member, length, chunk digests).
    pub manifest: Vec<u8>,
    /// The chunks, in order.
    pub chunks: Vec<Vec<u8>>,
}

/// Encodes `update` (`local - global`) with weight `num_examples` and encrypts it for
/// `round` as member `me`.
pub fn encrypt_update(
    fit: &HeFit,
    round: u64,
    me: u32,
    update: &[f32],
    num_examples: u64,
    signer: &MemberSigner,
) -> Result<EncryptedUpdate, SecureError> {
    let mut rng = privacy::noise::os_rng()
        .map_err(|e| SecureError::Settings(format!("no randomness: {e}")))?;
    let values = encode_vector(&fit.codec, fit.weighting, update, num_examples, &mut rng)?;
    if values.len() != fit.num_values {
        return Err(SecureError::Settings(format!(
            "the encoded update has {} values, the round expects {}",
            values.len(),
            fit.num_values
        )));
    }
    let encryptor = ClientEncryptor::new(fit.params.he, fit.public_key.clone()).map_err(he_err)?;
    let chunks = encryptor.encrypt(&values, &mut rng).map_err(he_err)?;
    let manifest =
        UploadManifest::for_chunks(fit.public_key.digest(), round, me, values.len(), &chunks)
            .sign(signer);
    Ok(EncryptedUpdate {
        manifest: manifest.to_bytes(),
        chunks: chunks.iter().map(EncryptedChunk::to_bytes).collect(),
    })
}

/// Decodes a member's encrypted update: all of it or nothing.
pub fn decode_update(
    fit: &HeFit,
    update: &EncryptedUpdate,
) -> Result<(SignedManifest, Vec<EncryptedChunk>), SecureError> {
    let limits = fit.limits();
    let manifest = SignedManifest::from_bytes(&update.manifest, &limits).map_err(he_err)?;
    let chunks = update
        .chunks
        .iter()
        .map(|c| EncryptedChunk::from_bytes(c, &limits))
        .collect::<Result<Vec<_>, _>>()
        .map_err(he_err)?;
    Ok((manifest, chunks))
}

/// Saves a committee member's state (its [`CommitteeMember::to_bytes`]) durably; an error
/// withholds the partial decryption it was saved for.
pub type PersistState = Box<dyn FnMut(&[u8]) -> Result<(), String> + Send>;

/// A committee member's role in the federation: it answers decryption requests.
///
/// Cheap to clone: clones share the key share and its state, so a node that reconnects keeps
/// refusing rounds it already decrypted.
#[derive(Clone)]
pub struct CommitteeRole {
    inner: Arc<std::sync::Mutex<RoleInner>>,
    index: u32,
}

struct RoleInner {
    member: CommitteeMember,
    verifier: MemberVerifier,
    limits: he::Limits,
    persist: Option<PersistState>,
}

impl std::fmt::Debug for CommitteeRole {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CommitteeRole")
            .field("member", &self.index)
            .finish_non_exhaustive()
    }
}

impl CommitteeRole {
    /// Committee member `member` (holding its assembled key share), checking contributors'
    /// manifest signatures against the federation's members.
    pub fn new(member: CommitteeMember, verifier: MemberVerifier) -> Self {
        let index = member.member();
        Self {
            inner: Arc::new(std::sync::Mutex::new(RoleInner {
                member,
                verifier,
                limits: he::Limits::default(),
                persist: None,
            })),
            index,
        }
    }

    /// Saves the member's state with `persist` after every partial decryption, before the
    /// answer leaves: a member restarted from the saved state still refuses the rounds it
    /// decrypted.
    pub fn with_persistence(self, persist: PersistState) -> Self {
        self.lock().persist = Some(persist);
        self
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, RoleInner> {
        // A panic while holding the lock cannot leave the member half-updated in a way that
        // weakens a refusal (its state changes in one assignment), so a poisoned lock is used.
        self.inner.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Its index in the committee.
    pub fn index(&self) -> u32 {
        self.index
    }

    /// Checks a decryption request (an aggregate of enough signed members, a round not
    /// decrypted before, this member among the decrypting ones) and returns the encoded
    /// partial decryption.
    pub fn partial_decrypt(&mut self, request: &[u8]) -> Result<Vec<u8>, SecureError> {
        let mut inner = self.lock();
        let inner = &mut *inner;
        let request = DecryptionRequest::from_bytes(request, &inner.limits).map_err(he_err)?;
        let mut rng = privacy::noise::os_rng()
            .map_err(|e| SecureError::Settings(format!("no randomness: {e}")))?;
        let partial = inner
            .member
            .partial_decrypt(&request, &inner.verifier, &mut rng)
            .map_err(he_err)?;
        if let Some(persist) = inner.persist.as_mut() {
            persist(&inner.member.to_bytes()).map_err(|e| {
                SecureError::Settings(format!(
                    "cannot save the committee state, withholding the partial decryption: {e}"
                ))
            })?;
        }
        Ok(partial.to_bytes())
    }
}

/// Decodes a committee member's partial decryption.
pub fn decode_partial(fit: &HeFit, bytes: &[u8]) -> Result<PartialDecryption, SecureError> {
    PartialDecryption::from_bytes(bytes, &fit.limits()).map_err(he_err)
}

/// The committee key material an in-process federation generates by running every member's
/// dealing locally (no dealer holds the whole key, but one process sees every share: for
/// simulations and tests only; a deployment runs [`he::keygen::deal`] on each member's machine).
pub fn local_committee(
    params: CommitteeParams,
    mask_seed: he::keygen::MaskSeed,
) -> Result<(CompactPublicKey, Vec<CommitteeMember>), SecureError> {
    let mut rng = privacy::noise::os_rng()
        .map_err(|e| SecureError::Settings(format!("no randomness: {e}")))?;
    let dealt = (0..params.members)
        .map(|m| he::keygen::deal(&params, mask_seed, m, &mut rng))
        .collect::<Result<Vec<_>, _>>()
        .map_err(he_err)?;
    let contributions: Vec<_> = dealt.iter().map(|(c, _)| c.clone()).collect();
    let key = he::keygen::combine_public_key(&params, mask_seed, &contributions).map_err(he_err)?;
    let members = (0..params.members)
        .map(|m| {
            let bundles: Vec<_> = dealt.iter().map(|(_, b)| b[m as usize].clone()).collect();
            CommitteeMember::from_bundles(params, &key, m, &bundles)
        })
        .collect::<Result<Vec<_>, _>>()
        .map_err(he_err)?;
    Ok((key, members))
}

/// The HE error as this module's.
pub fn he_err(e: he::Error) -> SecureError {
    SecureError::Homomorphic(e.to_string())
}

/// Shared, cheap to clone.
pub type SharedHeFit = Arc<HeFit>;
