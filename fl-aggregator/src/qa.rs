//! Evidence of flagged updates that anyone holding it can re-check, and how it is kept
//! private.
//!
//! When poisoning detection ([`fl_core::strategy::detection`]) flags a member, the aggregator
//! writes one [`Evidence`] record per flagged update: the member's signed statement (so it
//! cannot deny sending the update), the update itself, the round's global model (and its CID,
//! anchored with the previous round), the robust centre (checked against the round's own
//! anchored CID: `global + centre` must hash to it when no server optimiser stepped), the
//! rule, threshold and z-score reference, the claimed score, and the member's leaf and proof
//! under the round's anchored participants root. [`verify`] recomputes everything from the
//! data (`fl-aggregator qa verify FILE`) and says whether the flag holds; a record whose
//! score, update bytes, signature, centre or proof was changed is rejected with the reason.
//! One input stays the aggregator's word: the round's z-score reference (each feature's
//! median and scale over the members), which needs every member's update to recompute; it is
//! published in the round's manifest (`qa.ref.*`), and [`check_file`] with the manifest
//! refuses a record whose reference differs.
//!
//! # Who sees what
//!
//! An update can reveal its member's training data (gradient inversion), so a record is
//! never published whole. With validators named in the federation file (`[qa] validators`,
//! their secp256k1 public keys), the aggregator writes a [`SealedEvidence`]: a
//! [`PublicRecord`] (hashes, rule, threshold, score, verdict: nothing about the data) in the
//! clear, and the full record encrypted to each validator ([`fl_core::seal`], the public
//! record as associated data so the two cannot be swapped). Without validators the record
//! stays in the coordinator's checkpoint store in the clear: the coordinator saw every update
//! anyway. A false flag reveals the flagged member's update (and, for a collusion flag, its
//! nearest neighbour's) to the coordinator's validators and to no one else; the public record
//! reveals only that the member was flagged, with which score.

use std::collections::BTreeMap;
use std::sync::Arc;

use chain_anchor::ParticipantsTree;
use chain_anchor::alloy::primitives::{Address, B256};
use chain_anchor::merkle::participant_leaf;
use fl_core::hash::ContentHash;
use fl_core::identity::{MemberKey, SignedUpdate, UpdateKind};
use fl_core::seal::{RecipientKey, SealError, Sealed, seal};
use fl_core::strategy::MemberUpdate;
use fl_core::strategy::detection::{
    AnomalyScore, DetectionConfig, Feature, MemberFeatures, QaFindings, Reference,
};
use fl_core::{ClientId, ParamVec, Schema, wire};
use serde::{Deserialize, Serialize};

use crate::anchoring::participant_address;
use crate::checkpoint::Manifest;

/// The evidence format this build writes and reads.
pub const EVIDENCE_VERSION: u32 = 1;

/// Largest evidence file read (a record holds three or four copies of the model as hex).
pub const MAX_EVIDENCE_BYTES: usize = 1 << 30;

/// A model-sized vector as hex of its little-endian `f32` bytes.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(transparent)]
pub struct HexVector(String);

impl HexVector {
    /// Encodes `values`.
    pub fn encode(values: &[f32]) -> Self {
        let bytes: Vec<u8> = values.iter().flat_map(|v| v.to_le_bytes()).collect();
        Self(hex::encode(bytes))
    }

    /// Decodes `len` values.
    fn decode(&self, what: &'static str, len: usize) -> Result<Vec<f32>, EvidenceError> {
        let bytes = hex::decode(&self.0).map_err(|_| EvidenceError::Malformed(what))?;
        if bytes.len() != len * 4 {
            return Err(EvidenceError::Malformed(what));
        }
        Ok(bytes
            .chunks_exact(4)
            .map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]]))
            .collect())
    }
}

/// A member's update as evidence: its signed statement and its parameters.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct UpdateEvidence {
    /// The participant id in the round's manifest (the member's address over gRPC).
    pub member: String,
    /// The member's signed statement of the update (absent in process, where nothing is
    /// signed: such evidence is the aggregator's word only).
    pub signed: Option<SignedUpdate>,
    /// The parameters the member sent.
    pub params: HexVector,
    /// The member's leaf proof under the round's participants root.
    pub proof: Vec<B256>,
}

/// A self-contained record of one flagged update.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Evidence {
    /// [`EVIDENCE_VERSION`].
    pub version: u32,
    /// The federation.
    pub federation_id: String,
    /// The round.
    pub round: u64,
    /// The robust rule of the round.
    pub rule: String,
    /// The detection settings (the threshold above all).
    pub detection: DetectionConfig,
    /// The round's z-score reference (also in the round's manifest metrics, `qa.ref.*`).
    pub reference: Reference,
    /// What the aggregator computed: features, score, and the feature that flagged.
    pub claimed: AnomalyScore,
    /// The model's schema.
    pub schema: Schema,
    /// Chunk size the signed digest was computed with (the service's `max_chunk_bytes`).
    pub max_chunk_bytes: u64,
    /// CID of the round's global model (the previous round's checkpoint).
    pub global_cid: ContentHash,
    /// The global model.
    pub global: HexVector,
    /// The robust centre (the rule's step).
    pub centre: HexVector,
    /// CID of the round's resulting model (its checkpoint).
    pub next_cid: ContentHash,
    /// Whether a server optimiser stepped from the centre (then `global + centre` is not the
    /// next model and the centre cannot be checked against it).
    pub server_optimizer: bool,
    /// The round's participants root, as anchored.
    pub participants_root: B256,
    /// The flagged update.
    pub update: UpdateEvidence,
    /// For a collusion flag (`neighbour`), the nearest other member's update.
    pub neighbour: Option<UpdateEvidence>,
}

/// The public half of a sealed record: hashes and the verdict, nothing about the data.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PublicRecord {
    /// The federation.
    pub federation_id: String,
    /// The round.
    pub round: u64,
    /// The member flagged.
    pub member: String,
    /// The update digest the member signed (zero when unsigned).
    pub update_hash: B256,
    /// The round's global model.
    pub global_cid: ContentHash,
    /// The round's resulting model.
    pub next_cid: ContentHash,
    /// The anchored participants root.
    pub participants_root: B256,
    /// The rule.
    pub rule: String,
    /// The threshold.
    pub threshold: f64,
    /// The score.
    pub score: f64,
    /// The feature that flagged.
    pub reason: Feature,
    /// SHA-256 of the full record's JSON.
    pub evidence_hash: ContentHash,
}

/// An evidence file: the record in the clear, or sealed to validators.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case", deny_unknown_fields)]
pub enum EvidenceFile {
    /// The full record (kept by the coordinator only).
    Plain {
        /// The record.
        evidence: Box<Evidence>,
    },
    /// The public record and the full one encrypted to validators.
    Sealed(Box<SealedEvidence>),
}

/// The public record and the full one, encrypted to validators.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SealedEvidence {
    /// What anyone may read.
    pub public: PublicRecord,
    /// The record, sealed with `public`'s JSON as associated data.
    pub sealed: Sealed,
}

/// Why evidence was rejected or could not be built.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[non_exhaustive]
pub enum EvidenceError {
    /// The file is not an evidence record.
    #[error("not an evidence file: {0}")]
    Parse(String),
    /// Another format version.
    #[error("evidence version {0} is not supported (this build reads {EVIDENCE_VERSION})")]
    Version(u32),
    /// A field is malformed (wrong length, not hex).
    #[error("malformed evidence: {0}")]
    Malformed(&'static str),
    /// The global model does not hash to the CID the record names.
    #[error("the global model does not hash to {0}")]
    GlobalMismatch(ContentHash),
    /// `global + centre` does not hash to the round's checkpoint.
    #[error("the centre does not lead from the global model to the round's checkpoint {0}")]
    CentreMismatch(ContentHash),
    /// No signed statement (the member can deny the update).
    #[error("the update of {0} is not signed: the member can deny sending it")]
    Unsigned(String),
    /// The signed statement is for another federation, round or stage.
    #[error("the signed statement is for {0}, not this record's round")]
    StatementMismatch(String),
    /// The update's bytes do not hash to the digest the member signed.
    #[error("the update of {0} does not hash to the digest it signed")]
    DigestMismatch(String),
    /// The signature does not recover the member's address.
    #[error("the signature on the update of {member} is not the member's (recovers {recovered})")]
    WrongSigner {
        /// The member named.
        member: String,
        /// Who signed.
        recovered: String,
    },
    /// The signature does not parse or recover.
    #[error("bad signature: {0}")]
    Signature(String),
    /// The member's leaf is not under the participants root.
    #[error("{0} with this update is not a participant under the anchored participants root")]
    NotAParticipant(String),
    /// A collusion flag without the neighbour's update, or a neighbour that is the member.
    #[error("the neighbour feature flagged, but {0}")]
    Neighbour(&'static str),
    /// The record's z-score reference differs from the one the round's manifest published.
    #[error("the record's reference differs from the manifest's ({0})")]
    ReferenceMismatch(String),
    /// The recomputed features differ from the claimed ones.
    #[error("claimed {feature} = {claimed}, recomputed {recomputed}")]
    ScoreMismatch {
        /// Which value.
        feature: &'static str,
        /// What the record claims.
        claimed: f64,
        /// What the data gives.
        recomputed: f64,
    },
    /// Sealing or opening failed.
    #[error(transparent)]
    Seal(#[from] SealError),
    /// The public record does not match the sealed one.
    #[error("the public record does not match the sealed evidence ({0})")]
    PublicMismatch(&'static str),
    /// The flagged member's update is not among the round's.
    #[error("no update of client {0} in the findings")]
    MissingUpdate(ClientId),
}

/// What re-checking a record found.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Verdict {
    /// Whether the recomputed score exceeds the threshold.
    pub holds: bool,
    /// The recomputed score.
    pub score: f64,
    /// The feature it came from.
    pub reason: Feature,
    /// Who signed the update (`None`: verified with unsigned updates allowed).
    pub signer: Option<Address>,
    /// Whether the centre was checked against the round's checkpoint (not possible under a
    /// server optimiser).
    pub centre_checked: bool,
}

/// The round's record, as the manifest gives it: what evidence is checked against.
#[derive(Debug, Clone, PartialEq)]
pub struct RoundRecord {
    /// The federation.
    pub federation_id: String,
    /// The round.
    pub round: u64,
    /// CID of the round's checkpoint.
    pub next_cid: ContentHash,
    /// The participants (manifest id, signed digest) the root was built from.
    pub participants: Vec<(String, Option<ContentHash>)>,
    /// The round's metrics digest, also a leaf of the root
    /// ([`crate::anchoring::metrics_digest`]).
    pub metrics: Option<[u8; 32]>,
    /// The round's model card, also a leaf of the root when present
    /// ([`crate::anchoring::model_card_leaf_address`]).
    pub model_card: Option<ContentHash>,
}

impl From<&Manifest> for RoundRecord {
    fn from(m: &Manifest) -> Self {
        Self {
            federation_id: m.federation_id.clone(),
            round: m.round,
            next_cid: m.params_cid,
            participants: m
                .participants
                .iter()
                .map(|p| (p.id.clone(), p.update_hash))
                .collect(),
            metrics: crate::anchoring::metrics_digest(&m.metrics, &m.clients),
            model_card: m.model_card,
        }
    }
}

impl RoundRecord {
    fn tree(&self) -> Result<ParticipantsTree, EvidenceError> {
        let leaves = crate::anchoring::leaves(
            self.participants.iter().map(|(id, h)| (id.as_str(), *h)),
            self.metrics,
            self.model_card,
        );
        ParticipantsTree::new(&leaves).map_err(|_| EvidenceError::Malformed("participants"))
    }
}

/// Builds the evidence of every flagged update of `findings`: `global` is the round's global
/// model, `round` its checkpoint's record, `ids` the participant id of each client.
///
/// # Errors
/// [`EvidenceError::MissingUpdate`] or a participant list that cannot form a tree.
pub fn build_evidence(
    findings: &QaFindings,
    global: &ParamVec,
    round: &RoundRecord,
    ids: &BTreeMap<ClientId, String>,
    max_chunk_bytes: usize,
) -> Result<Vec<Evidence>, EvidenceError> {
    let tree = round.tree()?;
    let id_of = |c: ClientId| ids.get(&c).cloned().unwrap_or_else(|| c.to_string());
    let part = |u: &MemberUpdate| {
        let member = id_of(u.client);
        UpdateEvidence {
            proof: tree.proof(participant_address(&member)).unwrap_or_default(),
            member,
            signed: u.signed.clone(),
            params: HexVector::encode(u.params.values()),
        }
    };
    Ok(findings
        .flagged
        .iter()
        .map(|f| Evidence {
            version: EVIDENCE_VERSION,
            federation_id: round.federation_id.clone(),
            round: round.round,
            rule: findings.rule.clone(),
            detection: findings.config,
            reference: findings.reference,
            claimed: f.score,
            schema: global.schema().as_ref().clone(),
            max_chunk_bytes: max_chunk_bytes as u64,
            global_cid: global.content_hash(),
            global: HexVector::encode(global.values()),
            centre: HexVector::encode(&findings.centre),
            next_cid: round.next_cid,
            server_optimizer: findings.server_optimizer,
            participants_root: tree.root(),
            update: part(&f.update),
            neighbour: f.neighbour.as_ref().map(part),
        })
        .collect())
}

/// Checks one update of a record: signature, digest, statement, leaf; returns the delta.
fn check_update(
    e: &Evidence,
    u: &UpdateEvidence,
    schema: &Arc<Schema>,
    global: &[f32],
    allow_unsigned: bool,
) -> Result<(Vec<f32>, Option<Address>), EvidenceError> {
    let n = schema.num_values();
    let values = u.params.decode("update parameters", n)?;
    let params = ParamVec::new(schema.clone(), values)
        .map_err(|_| EvidenceError::Malformed("update parameters"))?;
    let (signer, update_hash) = match &u.signed {
        Some(s) => {
            let st = &s.statement;
            if st.federation_id != e.federation_id
                || st.round != e.round
                || st.kind != UpdateKind::Fit
            {
                return Err(EvidenceError::StatementMismatch(format!(
                    "federation {}, round {}, {:?}",
                    st.federation_id, st.round, st.kind
                )));
            }
            let chunk = usize::try_from(e.max_chunk_bytes)
                .ok()
                .filter(|c| *c >= 4)
                .ok_or(EvidenceError::Malformed("max_chunk_bytes"))?;
            let digest = wire::update_digest(&wire::chunk_hashes(&params, chunk));
            if digest != st.update_hash {
                return Err(EvidenceError::DigestMismatch(u.member.clone()));
            }
            let recovered = s
                .signer()
                .map_err(|err| EvidenceError::Signature(err.to_string()))?;
            if recovered != participant_address(&u.member) {
                return Err(EvidenceError::WrongSigner {
                    member: u.member.clone(),
                    recovered: recovered.to_string(),
                });
            }
            (Some(recovered), B256::from(*st.update_hash.as_bytes()))
        }
        None if allow_unsigned => (None, B256::ZERO),
        None => return Err(EvidenceError::Unsigned(u.member.clone())),
    };
    let leaf = participant_leaf(participant_address(&u.member), update_hash);
    if !ParticipantsTree::verify(e.participants_root, leaf, &u.proof) {
        return Err(EvidenceError::NotAParticipant(u.member.clone()));
    }
    let delta = params
        .values()
        .iter()
        .zip(global)
        .map(|(p, c)| p - c)
        .collect();
    Ok((delta, signer))
}

fn same(feature: &'static str, claimed: f64, recomputed: f64) -> Result<(), EvidenceError> {
    let close = (claimed - recomputed).abs() <= 1e-9 * claimed.abs().max(1.0);
    if close || (claimed.is_nan() && recomputed.is_nan()) {
        Ok(())
    } else {
        Err(EvidenceError::ScoreMismatch {
            feature,
            claimed,
            recomputed,
        })
    }
}

/// Re-checks `e` from its data: the global model against its CID, the centre against the
/// round's checkpoint, the signature and digest of the update (and of the neighbour's, for a
/// collusion flag), their leaves under the participants root, then recomputes the features
/// and the score. `allow_unsigned` accepts updates without a signed statement (in-process
/// runs; such evidence binds only the aggregator).
///
/// # Errors
/// The first check that fails: a tampered record is rejected, not judged.
pub fn verify(e: &Evidence, allow_unsigned: bool) -> Result<Verdict, EvidenceError> {
    if e.version != EVIDENCE_VERSION {
        return Err(EvidenceError::Version(e.version));
    }
    let schema = Arc::new(
        Schema::new(e.schema.tensors().to_vec()).map_err(|_| EvidenceError::Malformed("schema"))?,
    );
    let n = schema.num_values();
    let global = ParamVec::new(schema.clone(), e.global.decode("global model", n)?)
        .map_err(|_| EvidenceError::Malformed("global model"))?;
    if global.content_hash() != e.global_cid {
        return Err(EvidenceError::GlobalMismatch(e.global_cid));
    }
    let centre = e.centre.decode("centre", n)?;
    let centre_checked = !e.server_optimizer;
    if centre_checked {
        let next: Vec<f32> = global
            .values()
            .iter()
            .zip(&centre)
            .map(|(c, d)| c + d)
            .collect();
        let next =
            ParamVec::new(schema.clone(), next).map_err(|_| EvidenceError::Malformed("centre"))?;
        if next.content_hash() != e.next_cid {
            return Err(EvidenceError::CentreMismatch(e.next_cid));
        }
    }
    let (delta, signer) = check_update(e, &e.update, &schema, global.values(), allow_unsigned)?;
    let neighbour = match (&e.neighbour, e.claimed.reason) {
        (Some(nb), _) => {
            if nb.member == e.update.member {
                return Err(EvidenceError::Neighbour(
                    "the neighbour is the member itself",
                ));
            }
            Some(check_update(e, nb, &schema, global.values(), allow_unsigned)?.0)
        }
        (None, Feature::Neighbour) => {
            return Err(EvidenceError::Neighbour(
                "the record lacks the neighbour's update",
            ));
        }
        (None, _) => None,
    };
    let features = MemberFeatures::of(&delta, &centre, neighbour.as_deref());
    let claimed = &e.claimed.features;
    same("distance", claimed.distance, features.distance)?;
    same("norm", claimed.norm, features.norm)?;
    same("direction", claimed.direction, features.direction)?;
    if let (Some(c), Some(r)) = (claimed.neighbour, features.neighbour) {
        same("neighbour", c, r)?;
    }
    // The claimed score must follow from the claimed features (the neighbour distance taken as
    // claimed when the record carries no neighbour update)...
    let as_claimed = MemberFeatures {
        neighbour: features.neighbour.or(claimed.neighbour),
        ..features
    };
    same("score", e.claimed.score, e.reference.score(&as_claimed).0)?;
    // ...but the verdict rests only on what was recomputed from the data: an unverified
    // neighbour distance can never make a flag hold.
    let (score, reason) = e.reference.score(&features);
    Ok(Verdict {
        holds: score > e.detection.threshold,
        score,
        reason,
        signer,
        centre_checked,
    })
}

impl Evidence {
    /// The public half of this record.
    pub fn public_record(&self) -> PublicRecord {
        let json = serde_json::to_vec(self).expect("evidence serialises");
        PublicRecord {
            federation_id: self.federation_id.clone(),
            round: self.round,
            member: self.update.member.clone(),
            update_hash: self.update.signed.as_ref().map_or(B256::ZERO, |s| {
                B256::from(*s.statement.update_hash.as_bytes())
            }),
            global_cid: self.global_cid,
            next_cid: self.next_cid,
            participants_root: self.participants_root,
            rule: self.rule.clone(),
            threshold: self.detection.threshold,
            score: self.claimed.score,
            reason: self.claimed.reason,
            evidence_hash: ContentHash::of(&json),
        }
    }

    /// Seals the record to `validators`.
    ///
    /// # Errors
    /// [`SealError::NoRecipients`].
    pub fn seal(&self, validators: &[RecipientKey]) -> Result<SealedEvidence, EvidenceError> {
        let public = self.public_record();
        let aad = serde_json::to_vec(&public).expect("public record serialises");
        let json = serde_json::to_vec(self).expect("evidence serialises");
        Ok(SealedEvidence {
            sealed: seal(&json, &aad, validators)?,
            public,
        })
    }
}

impl SealedEvidence {
    /// Opens the record with a validator's key and checks it matches the public record.
    ///
    /// # Errors
    /// [`EvidenceError::Seal`] (not a recipient, changed), [`EvidenceError::Parse`], or
    /// [`EvidenceError::PublicMismatch`].
    pub fn open(&self, key: &MemberKey) -> Result<Evidence, EvidenceError> {
        let aad = serde_json::to_vec(&self.public).expect("public record serialises");
        let json = key.open(&self.sealed, &aad)?;
        let evidence: Evidence =
            serde_json::from_slice(&json).map_err(|e| EvidenceError::Parse(e.to_string()))?;
        if evidence.public_record() != self.public {
            return Err(EvidenceError::PublicMismatch("fields or hash differ"));
        }
        Ok(evidence)
    }
}

impl EvidenceFile {
    /// Parses an evidence file, never panicking on hostile input.
    ///
    /// # Errors
    /// [`EvidenceError::Parse`].
    pub fn from_json(bytes: &[u8]) -> Result<Self, EvidenceError> {
        if bytes.len() > MAX_EVIDENCE_BYTES {
            return Err(EvidenceError::Parse(format!(
                "{} bytes, more than the {MAX_EVIDENCE_BYTES} an evidence file may have",
                bytes.len()
            )));
        }
        serde_json::from_slice(bytes).map_err(|e| EvidenceError::Parse(e.to_string()))
    }

    /// The file for `evidence`: sealed to `validators`, or plain when there are none.
    ///
    /// # Errors
    /// As [`Evidence::seal`].
    pub fn new(evidence: Evidence, validators: &[RecipientKey]) -> Result<Self, EvidenceError> {
        if validators.is_empty() {
            Ok(Self::Plain {
                evidence: Box::new(evidence),
            })
        } else {
            Ok(Self::Sealed(Box::new(evidence.seal(validators)?)))
        }
    }

    /// Where the aggregator stores it, under the checkpoint store's prefix:
    /// `evidence/<round:010>/<member>.json`.
    pub fn path(round: u64, member: &str) -> String {
        format!("evidence/{round:010}/{member}.json")
    }
}

/// What `fl-aggregator qa verify` checks a file against besides its own data.
#[derive(Debug, Clone, Default)]
pub struct CheckOptions<'a> {
    /// A validator's key, to open a sealed file.
    pub key: Option<&'a MemberKey>,
    /// The round's manifest: its checkpoint CID and participants root must be the record's.
    pub manifest: Option<&'a Manifest>,
    /// Accept updates without a signed statement.
    pub allow_unsigned: bool,
}

/// Re-checks an evidence file: opens it if sealed (the public record must match the sealed
/// one), checks it against the round's manifest if given, then [`verify`]s it.
///
/// # Errors
/// Why the file is rejected (a sealed file without a key included).
pub fn check_file(
    bytes: &[u8],
    options: &CheckOptions<'_>,
) -> Result<(Evidence, Verdict), EvidenceError> {
    let evidence = match EvidenceFile::from_json(bytes)? {
        EvidenceFile::Plain { evidence } => *evidence,
        EvidenceFile::Sealed(sealed) => match options.key {
            Some(key) => sealed.open(key)?,
            None => {
                return Err(EvidenceError::PublicMismatch(
                    "a validator's key is needed to open it",
                ));
            }
        },
    };
    if let Some(m) = options.manifest {
        let record = RoundRecord::from(m);
        if record.federation_id != evidence.federation_id || record.round != evidence.round {
            return Err(EvidenceError::StatementMismatch(format!(
                "the manifest is of federation {}, round {}",
                record.federation_id, record.round
            )));
        }
        if record.next_cid != evidence.next_cid {
            return Err(EvidenceError::CentreMismatch(record.next_cid));
        }
        // The round's medians and scales cannot be recomputed without every member's update:
        // they are the aggregator's word, published in the manifest (`qa.ref.*`), and the
        // record must use exactly those.
        for (key, value) in evidence.reference.metrics() {
            match m.metrics.get(&key) {
                Some(v) if v.to_bits() == value.to_bits() => {}
                Some(v) => {
                    return Err(EvidenceError::ReferenceMismatch(format!(
                        "{key}: {value} in the record, {v} in the manifest"
                    )));
                }
                None => {
                    return Err(EvidenceError::ReferenceMismatch(format!(
                        "{key} is not in the manifest"
                    )));
                }
            }
        }
        if record.tree()?.root() != evidence.participants_root {
            return Err(EvidenceError::NotAParticipant(
                "the record's participants root differs from the manifest's; nobody".into(),
            ));
        }
    }
    let verdict = verify(&evidence, options.allow_unsigned)?;
    Ok((evidence, verdict))
}
