//! Decentralised inference, without IO: what a requester asks, what a node signs, which nodes
//! answer a request, and how their answers become one by consensus.
//!
//! - An [`InferenceRequest`] (a proposal's community, id, title and text, plus a requester
//!   nonce) has a canonical [`hash`](InferenceRequest::hash); limits bound every field.
//! - A node answers with an [`AnswerStatement`] (request hash, the model CID it ran, label,
//!   probabilities, kind) signed with its member key ([`SignedAnswer`]): it cannot deny an
//!   answer, and since each answer is bound to the signer's address, copying another node's
//!   answer still needs the copier's own run of the model to be worth anything (a copied label
//!   that turns out wrong is provably the copier's).
//! - [`select_nodes`] picks `k` of the registered nodes for a request from the request hash
//!   and a block hash, weighted (stake times reputation): anyone recomputes the same choice,
//!   and the requester cannot pick nodes without grinding against a block hash it does not
//!   know when it signs the request (the gateway takes the first block after receiving it).
//! - [`decide`] turns the signed answers of the selected nodes into a [`Consensus`]: the label
//!   at least `quorum` of them gave, its probabilities (the median of the agreeing nodes'), and
//!   every other node recorded as disagreeing (another label, probabilities off by more than
//!   the tolerance, another model, a bad signature) or missing. The consensus carries the
//!   signed answers, so a caller re-runs [`decide`] itself.
//!
//! Determinism: the same model and input give the same label on every node, and the same
//! probabilities up to float rounding across CPUs (summation order, fused multiply-add):
//! [`DEFAULT_TOLERANCE`] bounds that difference.
//!
//! ```
//! use fl_core::inference::*;
//! use fl_core::{ContentHash, MemberKey};
//!
//! let request = InferenceRequest::new("maker", "MIP-1", "Title", "Body text");
//! let model = ContentHash::of(b"model");
//! let keys: Vec<MemberKey> = (0..3).map(|_| MemberKey::generate()).collect();
//! let answers: Vec<SignedAnswer> = keys
//!     .iter()
//!     .map(|k| SignedAnswer::sign(k, AnswerStatement::new(&request, model, "accepted", vec![0.8, 0.2], "funding")))
//!     .collect();
//! let selected: Vec<_> = keys.iter().map(|k| k.address()).collect();
//! let policy = ConsensusPolicy { redundancy: 3, quorum: 2, tolerance: DEFAULT_TOLERANCE };
//! let consensus = decide(&request.hash(), &model, &selected, &answers, &policy).unwrap();
//! assert_eq!(consensus.label, "accepted");
//! assert_eq!(consensus.agreeing.len(), 3);
//! ```

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

pub mod scoring;
use sha2::{Digest, Sha256};

use crate::hash::ContentHash;
use crate::identity::{Address, MemberKey, MemberSignature};

/// Largest community name or proposal id, in bytes.
pub const MAX_ID_BYTES: usize = 256;
/// Largest title, in bytes.
pub const MAX_TITLE_BYTES: usize = 4 << 10;
/// Largest text, in bytes (longer proposals are truncated by the requester).
pub const MAX_TEXT_BYTES: usize = 256 << 10;
/// Largest label or kind, in bytes.
pub const MAX_LABEL_BYTES: usize = 64;
/// Most probabilities in one answer.
pub const MAX_PROBABILITIES: usize = 64;
/// Probabilities of two honest nodes running the same model on the same input differ by at
/// most this much (absolute, per class): float rounding across CPUs is far below it, a
/// different model or input far above.
pub const DEFAULT_TOLERANCE: f32 = 1e-4;

/// Addresses in JSON as `0x`-hex strings (checksummed on output, any case on input), for
/// `#[serde(with = "fl_core::inference::address_serde")]`.
pub mod address_serde {
    use super::Address;
    use serde::{Deserialize, Deserializer, Serializer};

    /// Writes `a` as a checksummed hex string.
    pub fn serialize<S: Serializer>(a: &Address, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(a)
    }

    /// Reads a hex address.
    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Address, D::Error> {
        let text = String::deserialize(d)?;
        text.parse().map_err(serde::de::Error::custom)
    }

    /// A list of addresses as hex strings.
    pub mod list {
        use super::Address;
        use serde::{Deserialize, Deserializer, Serializer};

        /// Writes the addresses as checksummed hex strings.
        pub fn serialize<S: Serializer>(list: &[Address], s: S) -> Result<S::Ok, S::Error> {
            s.collect_seq(list.iter().map(ToString::to_string))
        }

        /// Reads a list of hex addresses.
        pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Vec<Address>, D::Error> {
            Vec::<String>::deserialize(d)?
                .iter()
                .map(|t| t.parse().map_err(serde::de::Error::custom))
                .collect()
        }
    }
}

const REQUEST_TAG: &[u8] = b"daofl/inference-request/v1";
const ANSWER_TAG: &[u8] = b"daofl/inference-answer/v1";
const SELECT_TAG: &[u8] = b"daofl/inference-select/v1";

/// Why a request, an answer or a consensus was refused.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[non_exhaustive]
pub enum InferenceError {
    /// A field is empty or over its limit.
    #[error("{field}: {reason}")]
    Field {
        /// The field.
        field: &'static str,
        /// What is wrong.
        reason: String,
    },
    /// The policy cannot work (`quorum` above `redundancy`, no majority, ...).
    #[error("consensus policy: {0}")]
    Policy(String),
    /// Fewer than `quorum` selected nodes agree on a label.
    #[error(
        "no consensus: {agreeing} of the required {quorum} nodes agree on the best label ({answered} valid answers)"
    )]
    NoConsensus {
        /// Nodes that agree on the most common label.
        agreeing: usize,
        /// Nodes required.
        quorum: usize,
        /// Valid answers received.
        answered: usize,
    },
    /// Fewer eligible nodes than the redundancy asks for.
    #[error("{available} eligible nodes, {wanted} needed")]
    TooFewNodes {
        /// Nodes with a positive weight.
        available: usize,
        /// Nodes asked for.
        wanted: usize,
    },
}

fn field(field: &'static str, value: &str, max: usize) -> Result<(), InferenceError> {
    if value.len() > max {
        return Err(InferenceError::Field {
            field,
            reason: format!("{} bytes, at most {max}", value.len()),
        });
    }
    Ok(())
}

fn put(out: &mut Vec<u8>, bytes: &[u8]) {
    out.extend_from_slice(&(bytes.len() as u64).to_be_bytes());
    out.extend_from_slice(bytes);
}

/// What a requester asks: the proposal model's input.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct InferenceRequest {
    /// The community (DAO) the proposal belongs to.
    pub community: String,
    /// The proposal's id in its community.
    pub id: String,
    /// Its title.
    pub title: String,
    /// Its text.
    pub text: String,
    /// The requester's nonce: two requests for the same proposal are different requests.
    #[serde(default)]
    pub nonce: u64,
}

impl InferenceRequest {
    /// A request with nonce 0.
    pub fn new(
        community: impl Into<String>,
        id: impl Into<String>,
        title: impl Into<String>,
        text: impl Into<String>,
    ) -> Self {
        Self {
            community: community.into(),
            id: id.into(),
            title: title.into(),
            text: text.into(),
            nonce: 0,
        }
    }

    /// Checks every field against its limit; the title and text may not both be empty.
    pub fn validate(&self) -> Result<(), InferenceError> {
        field("community", &self.community, MAX_ID_BYTES)?;
        field("id", &self.id, MAX_ID_BYTES)?;
        field("title", &self.title, MAX_TITLE_BYTES)?;
        field("text", &self.text, MAX_TEXT_BYTES)?;
        if self.title.trim().is_empty() && self.text.trim().is_empty() {
            return Err(InferenceError::Field {
                field: "title",
                reason: "a request needs a title or a text".into(),
            });
        }
        Ok(())
    }

    /// SHA-256 of `"daofl/inference-request/v1" | community | id | title | text | nonce`, each
    /// field prefixed by its length as 8 big-endian bytes.
    pub fn hash(&self) -> ContentHash {
        let mut out = Vec::with_capacity(
            REQUEST_TAG.len()
                + 5 * 8
                + self.community.len()
                + self.id.len()
                + self.title.len()
                + self.text.len()
                + 8,
        );
        out.extend_from_slice(REQUEST_TAG);
        put(&mut out, self.community.as_bytes());
        put(&mut out, self.id.as_bytes());
        put(&mut out, self.title.as_bytes());
        put(&mut out, self.text.as_bytes());
        put(&mut out, &self.nonce.to_be_bytes());
        ContentHash::of(&out)
    }
}

/// What a node states about one request: which model it ran and what it answered.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AnswerStatement {
    /// [`InferenceRequest::hash`] of the request answered.
    #[serde(with = "crate::hash::cid_string")]
    pub request_hash: ContentHash,
    /// The content hash of the parameters that produced the answer.
    #[serde(with = "crate::hash::cid_string")]
    pub model: ContentHash,
    /// The predicted label (the proposal model: `accepted` or `rejected`).
    pub label: String,
    /// Class probabilities of the label's head, in the model card's order.
    pub probabilities: Vec<f32>,
    /// The predicted kind of proposal.
    pub kind: String,
}

impl AnswerStatement {
    /// A statement for `request`.
    pub fn new(
        request: &InferenceRequest,
        model: ContentHash,
        label: impl Into<String>,
        probabilities: Vec<f32>,
        kind: impl Into<String>,
    ) -> Self {
        Self {
            request_hash: request.hash(),
            model,
            label: label.into(),
            probabilities,
            kind: kind.into(),
        }
    }

    /// Checks the label, kind and probabilities (finite, in `[0, 1]`, bounded in number).
    pub fn validate(&self) -> Result<(), InferenceError> {
        field("label", &self.label, MAX_LABEL_BYTES)?;
        field("kind", &self.kind, MAX_LABEL_BYTES)?;
        if self.label.is_empty() {
            return Err(InferenceError::Field {
                field: "label",
                reason: "empty".into(),
            });
        }
        if self.probabilities.is_empty() || self.probabilities.len() > MAX_PROBABILITIES {
            return Err(InferenceError::Field {
                field: "probabilities",
                reason: format!(
                    "{} values, 1 to {MAX_PROBABILITIES}",
                    self.probabilities.len()
                ),
            });
        }
        if let Some(p) = self
            .probabilities
            .iter()
            .find(|p| !(p.is_finite() && (0.0..=1.0).contains(*p)))
        {
            return Err(InferenceError::Field {
                field: "probabilities",
                reason: format!("{p} is not a probability"),
            });
        }
        Ok(())
    }

    /// The signed bytes: `"daofl/inference-answer/v1" | request_hash | model | label |
    /// probabilities (each f32 as 4 big-endian bytes) | kind`, length-prefixed.
    pub fn signing_bytes(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(ANSWER_TAG.len() + 5 * 8 + 64 + 4 * 16 + 64);
        out.extend_from_slice(ANSWER_TAG);
        put(&mut out, self.request_hash.as_bytes());
        put(&mut out, self.model.as_bytes());
        put(&mut out, self.label.as_bytes());
        let probs: Vec<u8> = self
            .probabilities
            .iter()
            .flat_map(|p| p.to_be_bytes())
            .collect();
        put(&mut out, &probs);
        put(&mut out, self.kind.as_bytes());
        out
    }
}

/// An [`AnswerStatement`] signed by the node that made it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SignedAnswer {
    /// What the node answered.
    pub statement: AnswerStatement,
    /// The node's address.
    #[serde(with = "address_serde")]
    pub node: Address,
    /// Its signature over [`AnswerStatement::signing_bytes`].
    pub signature: MemberSignature,
}

impl SignedAnswer {
    /// Signs `statement` with `key`.
    pub fn sign(key: &MemberKey, statement: AnswerStatement) -> Self {
        let signature = key.sign_message(&statement.signing_bytes());
        Self {
            statement,
            node: key.address(),
            signature,
        }
    }

    /// Whether the signature recovers to `node` and the statement is well formed.
    pub fn verify(&self) -> Result<(), String> {
        self.statement.validate().map_err(|e| e.to_string())?;
        let signer = self
            .signature
            .recover(&self.statement.signing_bytes())
            .map_err(|e| format!("unreadable signature: {e}"))?;
        if signer != self.node {
            return Err(format!("signed by {signer}, not by {}", self.node));
        }
        Ok(())
    }
}

/// A node that may be selected, with its selection weight (e.g. stake times reputation).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Candidate {
    /// The node.
    pub node: Address,
    /// Its weight; zero, negative or non-finite weights are never selected.
    pub weight: f64,
}

/// Picks `k` distinct nodes for `request_hash` at `block_hash`, weighted, by weighted sampling
/// without replacement (Efraimidis and Spirakis 2006): each node draws `u` uniform in `(0, 1]`
/// from `SHA-256(tag | request_hash | block_hash | node)` and the `k` largest `ln(u)/weight`
/// win. Deterministic: anyone with the request, the block hash and the weights gets the same
/// nodes, in the same order. The order of `candidates` does not matter.
pub fn select_nodes(
    request_hash: &ContentHash,
    block_hash: &[u8; 32],
    candidates: &[Candidate],
    k: usize,
) -> Result<Vec<Address>, InferenceError> {
    let mut keyed: BTreeMap<Address, f64> = BTreeMap::new();
    for c in candidates {
        if !(c.weight.is_finite() && c.weight > 0.0) {
            continue;
        }
        let mut h = Sha256::new();
        h.update(SELECT_TAG);
        h.update(request_hash.as_bytes());
        h.update(block_hash);
        h.update(c.node.as_slice());
        let digest: [u8; 32] = h.finalize().into();
        let mut top = [0u8; 8];
        top.copy_from_slice(&digest[..8]);
        // 53 random bits, shifted into (0, 1].
        let u = ((u64::from_be_bytes(top) >> 11) as f64 + 1.0) / (1u64 << 53) as f64;
        keyed.insert(c.node, u.ln() / c.weight);
    }
    if keyed.len() < k {
        return Err(InferenceError::TooFewNodes {
            available: keyed.len(),
            wanted: k,
        });
    }
    let mut ranked: Vec<(Address, f64)> = keyed.into_iter().collect();
    ranked.sort_by(|a, b| b.1.total_cmp(&a.1).then(a.0.cmp(&b.0)));
    Ok(ranked.into_iter().take(k).map(|(a, _)| a).collect())
}

/// How many nodes answer a request and how many must agree.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ConsensusPolicy {
    /// Nodes asked (`k`).
    pub redundancy: usize,
    /// Agreeing nodes required: more than half of `redundancy` (3 of 5, 5 of 7).
    pub quorum: usize,
    /// Largest per-class probability difference from the agreeing nodes' median.
    pub tolerance: f32,
}

impl Default for ConsensusPolicy {
    /// 3 of 5 within [`DEFAULT_TOLERANCE`].
    fn default() -> Self {
        Self {
            redundancy: 5,
            quorum: 3,
            tolerance: DEFAULT_TOLERANCE,
        }
    }
}

impl ConsensusPolicy {
    /// Refuses a quorum that is not a strict majority of at least one node, or a tolerance
    /// that is not a small positive number.
    pub fn validate(&self) -> Result<(), InferenceError> {
        if self.redundancy == 0
            || self.quorum * 2 <= self.redundancy
            || self.quorum > self.redundancy
        {
            return Err(InferenceError::Policy(format!(
                "quorum {} of redundancy {} is not a strict majority",
                self.quorum, self.redundancy
            )));
        }
        if !(self.tolerance.is_finite() && self.tolerance > 0.0 && self.tolerance < 0.5) {
            return Err(InferenceError::Policy(format!(
                "tolerance {} must be in (0, 0.5)",
                self.tolerance
            )));
        }
        Ok(())
    }
}

/// Why a selected node's answer did not count with the consensus.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case", tag = "reason", content = "detail")]
pub enum Disagreement {
    /// It answered another label.
    Label(String),
    /// The right label, with probabilities further than the tolerance from the consensus.
    Probabilities(f32),
    /// It answered for another model.
    Model(#[serde(with = "crate::hash::cid_string")] ContentHash),
    /// It answered another request.
    Request(#[serde(with = "crate::hash::cid_string")] ContentHash),
    /// Its answer does not verify.
    Invalid(String),
    /// It did not answer (late, down, or refused).
    Missing,
}

/// A selected node whose answer did not count, and why.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct NodeDisagreement {
    /// The node.
    #[serde(with = "address_serde")]
    pub node: Address,
    /// Why its answer did not count.
    pub why: Disagreement,
}

/// The answer the consensus gives, with everything needed to check it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Consensus {
    /// The request answered.
    #[serde(with = "crate::hash::cid_string")]
    pub request_hash: ContentHash,
    /// The model every counted answer ran.
    #[serde(with = "crate::hash::cid_string")]
    pub model: ContentHash,
    /// The label at least `quorum` selected nodes gave.
    pub label: String,
    /// The per-class median of the agreeing nodes' probabilities.
    pub probabilities: Vec<f32>,
    /// The kind most agreeing nodes gave.
    pub kind: String,
    /// The nodes whose answers make the consensus.
    #[serde(with = "address_serde::list")]
    pub agreeing: Vec<Address>,
    /// Every other selected node, and why.
    pub disagreeing: Vec<NodeDisagreement>,
    /// The signed answers received from selected nodes (first per node), so the caller can
    /// re-run [`decide`].
    pub answers: Vec<SignedAnswer>,
}

fn median(mut values: Vec<f32>) -> f32 {
    values.sort_by(f32::total_cmp);
    let n = values.len();
    if n % 2 == 1 {
        values[n / 2]
    } else {
        (values[n / 2 - 1] + values[n / 2]) / 2.0
    }
}

/// Decides `request_hash` on `model` from the `answers` of the `selected` nodes: answers of
/// other nodes are ignored, and only a node's first answer counts. The label that at least
/// `policy.quorum` valid answers give wins; among those, an answer whose probabilities differ
/// from the per-class median by more than the tolerance is a disagreement, and if that leaves
/// fewer than the quorum there is no consensus.
pub fn decide(
    request_hash: &ContentHash,
    model: &ContentHash,
    selected: &[Address],
    answers: &[SignedAnswer],
    policy: &ConsensusPolicy,
) -> Result<Consensus, InferenceError> {
    policy.validate()?;
    let mut first: BTreeMap<Address, &SignedAnswer> = BTreeMap::new();
    for a in answers {
        if selected.contains(&a.node) {
            first.entry(a.node).or_insert(a);
        }
    }
    let mut disagreeing: Vec<NodeDisagreement> = Vec::new();
    let mut record = |node: Address, why: Disagreement| {
        disagreeing.push(NodeDisagreement { node, why });
    };
    let mut valid: Vec<&SignedAnswer> = Vec::new();
    for node in selected {
        let Some(a) = first.get(node) else {
            record(*node, Disagreement::Missing);
            continue;
        };
        if let Err(e) = a.verify() {
            record(*node, Disagreement::Invalid(e));
        } else if a.statement.request_hash != *request_hash {
            record(*node, Disagreement::Request(a.statement.request_hash));
        } else if a.statement.model != *model {
            record(*node, Disagreement::Model(a.statement.model));
        } else {
            valid.push(a);
        }
    }
    let mut votes: BTreeMap<&str, usize> = BTreeMap::new();
    for a in &valid {
        *votes.entry(a.statement.label.as_str()).or_default() += 1;
    }
    let (label, count) = votes
        .iter()
        .max_by(|a, b| a.1.cmp(b.1).then(b.0.cmp(a.0)))
        .map(|(l, c)| ((*l).to_string(), *c))
        .unwrap_or_default();
    let no_consensus = |agreeing| InferenceError::NoConsensus {
        agreeing,
        quorum: policy.quorum,
        answered: valid.len(),
    };
    if count < policy.quorum {
        return Err(no_consensus(count));
    }
    let same_label: Vec<&SignedAnswer> = valid
        .iter()
        .copied()
        .filter(|a| a.statement.label == label)
        .collect();
    let width = same_label[0].statement.probabilities.len();
    let consistent: Vec<&SignedAnswer> = same_label
        .iter()
        .copied()
        .filter(|a| a.statement.probabilities.len() == width)
        .collect();
    let center: Vec<f32> = (0..width)
        .map(|i| {
            median(
                consistent
                    .iter()
                    .map(|a| a.statement.probabilities[i])
                    .collect(),
            )
        })
        .collect();
    let mut agreeing: Vec<&SignedAnswer> = Vec::new();
    for a in &valid {
        if a.statement.label != label {
            record(a.node, Disagreement::Label(a.statement.label.clone()));
            continue;
        }
        let off = if a.statement.probabilities.len() == width {
            a.statement
                .probabilities
                .iter()
                .zip(&center)
                .map(|(p, c)| (p - c).abs())
                .fold(0.0f32, f32::max)
        } else {
            f32::INFINITY
        };
        if off > policy.tolerance {
            record(a.node, Disagreement::Probabilities(off));
        } else {
            agreeing.push(a);
        }
    }
    if agreeing.len() < policy.quorum {
        return Err(no_consensus(agreeing.len()));
    }
    let mut kinds: BTreeMap<&str, usize> = BTreeMap::new();
    for a in &agreeing {
        *kinds.entry(a.statement.kind.as_str()).or_default() += 1;
    }
    let kind = kinds
        .iter()
        .max_by(|a, b| a.1.cmp(b.1).then(b.0.cmp(a.0)))
        .map(|(k, _)| (*k).to_string())
        .unwrap_or_default();
    Ok(Consensus {
        request_hash: *request_hash,
        model: *model,
        label,
        probabilities: center,
        kind,
        agreeing: agreeing.iter().map(|a| a.node).collect(),
        disagreeing,
        answers: selected
            .iter()
            .filter_map(|n| first.get(n).map(|a| (*a).clone()))
            .collect(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn request() -> InferenceRequest {
        InferenceRequest::new("makerdao", "MIP-42", "Raise the debt ceiling", "Body")
    }

    fn answer(key: &MemberKey, model: ContentHash, label: &str, p: f32) -> SignedAnswer {
        SignedAnswer::sign(
            key,
            AnswerStatement::new(&request(), model, label, vec![p, 1.0 - p], "parameter"),
        )
    }

    fn five() -> Vec<MemberKey> {
        (0..5).map(|_| MemberKey::generate()).collect()
    }

    fn addresses(keys: &[MemberKey]) -> Vec<Address> {
        keys.iter().map(MemberKey::address).collect()
    }

    #[test]
    fn the_request_hash_covers_every_field() {
        let base = request();
        let mut variants = vec![base.clone(); 5];
        variants[0].community.push('x');
        variants[1].id.push('x');
        variants[2].title.push('x');
        variants[3].text.push('x');
        variants[4].nonce = 1;
        for v in variants {
            assert_ne!(v.hash(), base.hash(), "{v:?}");
        }
        // Length prefixes: moving a byte between fields changes the hash.
        let a = InferenceRequest::new("ab", "c", "t", "x");
        let b = InferenceRequest::new("a", "bc", "t", "x");
        assert_ne!(a.hash(), b.hash());
    }

    #[test]
    fn oversized_or_empty_requests_are_refused() {
        let mut r = request();
        r.text = "x".repeat(MAX_TEXT_BYTES + 1);
        assert!(matches!(
            r.validate(),
            Err(InferenceError::Field { field: "text", .. })
        ));
        let mut r = request();
        r.community = "c".repeat(MAX_ID_BYTES + 1);
        assert!(r.validate().is_err());
        let r = InferenceRequest::new("c", "1", " ", "");
        assert!(r.validate().is_err());
        assert!(request().validate().is_ok());
    }

    #[test]
    fn selection_is_deterministic_weighted_and_ignores_order_and_zero_weights() {
        let keys: Vec<MemberKey> = (0..10).map(|_| MemberKey::generate()).collect();
        let mut candidates: Vec<Candidate> = keys
            .iter()
            .enumerate()
            .map(|(i, k)| Candidate {
                node: k.address(),
                weight: if i == 0 { 20.0 } else { 1.0 },
            })
            .collect();
        candidates[9].weight = 0.0;
        let block = [7u8; 32];
        let pick = select_nodes(&request().hash(), &block, &candidates, 3).unwrap();
        assert_eq!(pick.len(), 3);
        candidates.reverse();
        assert_eq!(
            select_nodes(&request().hash(), &block, &candidates, 3).unwrap(),
            pick
        );
        // Over many requests the heavy node is picked far more often and the zero-weight never.
        let (mut heavy, mut zero) = (0, 0);
        for nonce in 0..300 {
            let mut r = request();
            r.nonce = nonce;
            let pick = select_nodes(&r.hash(), &block, &candidates, 3).unwrap();
            heavy += usize::from(pick.contains(&keys[0].address()));
            zero += usize::from(pick.contains(&keys[9].address()));
        }
        assert_eq!(zero, 0);
        assert!(
            heavy > 250,
            "a node of weight 20 among 8 of weight 1: {heavy}/300"
        );
        // Another block, another choice (for some request).
        let other = (0..50u64).any(|nonce| {
            let mut r = request();
            r.nonce = nonce;
            select_nodes(&r.hash(), &block, &candidates, 3).unwrap()
                != select_nodes(&r.hash(), &[8u8; 32], &candidates, 3).unwrap()
        });
        assert!(other);
        assert_eq!(
            select_nodes(&request().hash(), &block, &candidates[..3], 3),
            Err(InferenceError::TooFewNodes {
                available: 2,
                wanted: 3
            })
        );
    }

    #[test]
    fn three_of_five_outvote_a_wrong_node_and_record_every_other_failure() {
        let keys = five();
        let model = ContentHash::of(b"promoted");
        let stranger = MemberKey::generate();
        let mut forged = answer(&keys[4], model, "accepted", 0.9);
        forged.statement.label = "rejected".into(); // changed after signing
        let answers = vec![
            answer(&keys[0], model, "accepted", 0.9),
            answer(&keys[1], model, "accepted", 0.90003),
            answer(&keys[2], model, "accepted", 0.89998),
            answer(&keys[3], model, "rejected", 0.2),
            forged,
            answer(&keys[0], model, "rejected", 0.1), // a second answer: ignored
            answer(&stranger, model, "rejected", 0.1), // not selected: ignored
        ];
        let policy = ConsensusPolicy::default();
        let c = decide(
            &request().hash(),
            &model,
            &addresses(&keys),
            &answers,
            &policy,
        )
        .unwrap();
        assert_eq!(c.label, "accepted");
        assert_eq!(c.agreeing, addresses(&keys[..3]));
        assert!((c.probabilities[0] - 0.9).abs() < 1e-6);
        assert_eq!(c.kind, "parameter");
        assert_eq!(c.disagreeing.len(), 2);
        let why = |k: &MemberKey| {
            c.disagreeing
                .iter()
                .find(|d| d.node == k.address())
                .map(|d| d.why.clone())
        };
        assert_eq!(why(&keys[3]), Some(Disagreement::Label("rejected".into())));
        assert!(matches!(why(&keys[4]), Some(Disagreement::Invalid(e)) if e.contains("signed by")));
        assert_eq!(c.answers.len(), 5);
        // The caller re-runs the decision from the carried answers and gets the same.
        assert_eq!(
            decide(
                &c.request_hash,
                &c.model,
                &addresses(&keys),
                &c.answers,
                &policy
            )
            .unwrap(),
            c
        );
    }

    #[test]
    fn another_model_a_drifting_node_and_missing_nodes_count_against_the_quorum() {
        let keys = five();
        let model = ContentHash::of(b"promoted");
        let old = ContentHash::of(b"old");
        let answers = vec![
            answer(&keys[0], model, "accepted", 0.7),
            answer(&keys[1], model, "accepted", 0.7),
            answer(&keys[2], model, "accepted", 0.75), // same label, off by 0.05
            answer(&keys[3], old, "accepted", 0.7),
        ];
        let err = decide(
            &request().hash(),
            &model,
            &addresses(&keys),
            &answers,
            &ConsensusPolicy::default(),
        )
        .unwrap_err();
        assert_eq!(
            err,
            InferenceError::NoConsensus {
                agreeing: 2,
                quorum: 3,
                answered: 3
            }
        );
        // With a looser tolerance the drifting node counts; the old model and the silent node
        // are recorded.
        let loose = ConsensusPolicy {
            tolerance: 0.1,
            ..ConsensusPolicy::default()
        };
        let c = decide(
            &request().hash(),
            &model,
            &addresses(&keys),
            &answers,
            &loose,
        )
        .unwrap();
        assert_eq!(c.agreeing.len(), 3);
        let why = |k: &MemberKey| {
            c.disagreeing
                .iter()
                .find(|d| d.node == k.address())
                .map(|d| d.why.clone())
        };
        assert_eq!(why(&keys[3]), Some(Disagreement::Model(old)));
        assert_eq!(why(&keys[4]), Some(Disagreement::Missing));
        let json = serde_json::to_string(&c).unwrap();
        assert_eq!(serde_json::from_str::<Consensus>(&json).unwrap(), c);
    }

    #[test]
    fn a_policy_without_a_strict_majority_is_refused() {
        for (redundancy, quorum) in [(5, 2), (4, 2), (3, 4), (0, 0)] {
            let p = ConsensusPolicy {
                redundancy,
                quorum,
                tolerance: DEFAULT_TOLERANCE,
            };
            assert!(p.validate().is_err(), "{redundancy}/{quorum}");
        }
        assert!(
            ConsensusPolicy {
                redundancy: 7,
                quorum: 5,
                tolerance: 1e-4
            }
            .validate()
            .is_ok()
        );
    }

    #[test]
    fn answers_with_impossible_probabilities_do_not_verify() {
        let key = MemberKey::generate();
        let model = ContentHash::of(b"m");
        for probs in [
            vec![],
            vec![f32::NAN],
            vec![1.5],
            vec![0.5; MAX_PROBABILITIES + 1],
        ] {
            let a = SignedAnswer::sign(
                &key,
                AnswerStatement::new(&request(), model, "accepted", probs, "k"),
            );
            assert!(a.verify().is_err());
        }
        let json = serde_json::to_string(&answer(&key, model, "accepted", 0.5)).unwrap();
        let back: SignedAnswer = serde_json::from_str(&json).unwrap();
        assert!(back.verify().is_ok());
    }
}
