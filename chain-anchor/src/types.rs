//! What is anchored and what comes back: checkpoints, batches, receipts, records and events.

use std::fmt;

use alloy::primitives::{Address, B256, keccak256};
use alloy::sol_types::SolValue;
use serde::{Deserialize, Serialize};

use crate::Error;
use crate::merkle::{MerkleTree, standard_leaf, verify_proof};

/// Identifies a federation on chain: `keccak256` of its name (the manifest's `federation_id`).
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(transparent)]
pub struct FederationId(pub B256);

impl FederationId {
    /// The id of the federation named `name`: `keccak256(utf8(name))`.
    pub fn from_name(name: &str) -> Self {
        Self(keccak256(name.as_bytes()))
    }
}

impl fmt::Debug for FederationId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "FederationId({})", self.0)
    }
}

impl fmt::Display for FederationId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(&self.0, f)
    }
}

/// `epsilonMicros` recorded for a run without a finite privacy bound (no DP, or ε infinite).
pub const EPSILON_UNBOUNDED: u64 = u64::MAX;

/// The ε spent as recorded on chain: millionths, rounded **up** so that the record never
/// understates the privacy loss. `None` (no DP), infinity and NaN give [`EPSILON_UNBOUNDED`];
/// negative values (meaningless) give 0.
pub fn epsilon_micros(epsilon: Option<f64>) -> u64 {
    match epsilon {
        Some(e) if e.is_finite() => {
            let micros = (e * 1e6).ceil();
            if micros <= 0.0 {
                0
            } else if micros >= (EPSILON_UNBOUNDED - 1) as f64 {
                EPSILON_UNBOUNDED - 1
            } else {
                micros as u64
            }
        }
        _ => EPSILON_UNBOUNDED,
    }
}

/// One round's checkpoint, as it is anchored.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CheckpointAnchor {
    /// The federation.
    pub federation: FederationId,
    /// The completed round.
    pub round: u64,
    /// SHA-256 of the parameters' canonical little-endian bytes (the digest inside the CID).
    pub params_hash: B256,
    /// The parameters' CIDv1 as printed (`bafkrei...`).
    pub cid: String,
    /// Root of the round's [`ParticipantsTree`](crate::ParticipantsTree).
    pub participants_root: B256,
    /// ε spent up to and including this round (see [`epsilon_micros`]).
    pub epsilon_micros: u64,
}

impl CheckpointAnchor {
    /// The leaf this round contributes to a batch root (see [`crate::merkle`]).
    pub fn round_leaf(&self) -> B256 {
        standard_leaf(
            &(
                self.round,
                self.params_hash,
                keccak256(self.cid.as_bytes()),
                self.participants_root,
                self.epsilon_micros,
            )
                .abi_encode(),
        )
    }

    /// Whether this is exactly what a single-round record holds (the federation and round are
    /// the caller's to match).
    pub fn matches(&self, record: &CheckpointRecord) -> bool {
        self.params_hash == record.params_hash
            && self.cid == record.cid
            && self.participants_root == record.participants_root
            && self.epsilon_micros == record.epsilon_micros
    }
}

/// Consecutive rounds of one federation anchored under one Merkle root (one transaction, one
/// storage record), each round provable with [`RoundBatch::proof`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RoundBatch {
    rounds: Vec<CheckpointAnchor>,
    tree: MerkleTree,
}

impl RoundBatch {
    /// The batch of `rounds`: one federation, consecutive increasing rounds, at least one.
    ///
    /// # Errors
    /// [`Error::InvalidInput`] when the list is empty, mixes federations or has a gap.
    pub fn new(rounds: Vec<CheckpointAnchor>) -> Result<Self, Error> {
        let first = rounds
            .first()
            .ok_or_else(|| Error::InvalidInput("a batch needs at least one round".into()))?;
        for (i, r) in rounds.iter().enumerate() {
            if r.federation != first.federation {
                return Err(Error::InvalidInput(
                    "a batch holds rounds of one federation".into(),
                ));
            }
            if Some(r.round) != first.round.checked_add(i as u64) {
                return Err(Error::InvalidInput(format!(
                    "batch rounds must be consecutive: round {} follows {}",
                    r.round,
                    first.round.saturating_add(i as u64).saturating_sub(1)
                )));
            }
        }
        let leaves: Vec<B256> = rounds.iter().map(CheckpointAnchor::round_leaf).collect();
        Ok(Self {
            tree: MerkleTree::new(&leaves),
            rounds,
        })
    }

    /// The federation.
    pub fn federation(&self) -> FederationId {
        self.rounds[0].federation
    }

    /// First round of the batch.
    pub fn first_round(&self) -> u64 {
        self.rounds[0].round
    }

    /// Last round of the batch.
    pub fn last_round(&self) -> u64 {
        self.rounds[self.rounds.len() - 1].round
    }

    /// The rounds.
    pub fn rounds(&self) -> &[CheckpointAnchor] {
        &self.rounds
    }

    /// The root anchored for the batch.
    pub fn root(&self) -> B256 {
        self.tree.root()
    }

    /// The inclusion proof of `round` (keep it with the checkpoint: verifying a batched round
    /// needs it), or `None` if the batch does not hold that round.
    pub fn proof(&self, round: u64) -> Option<Vec<B256>> {
        let r = self.rounds.iter().find(|r| r.round == round)?;
        self.tree.proof(r.round_leaf())
    }

    /// Whether `proof` shows `checkpoint` under a batch `root`.
    pub fn verify(root: B256, checkpoint: &CheckpointAnchor, proof: &[B256]) -> bool {
        verify_proof(root, checkpoint.round_leaf(), proof)
    }
}

/// Which backend produced a receipt.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum BackendKind {
    /// In-process revm (no network, no consensus).
    Embedded,
    /// An EVM JSON-RPC endpoint.
    Rpc,
}

/// The confirmation of an anchor (one round or one batch); it serialises to JSON for the
/// checkpoint manifest's `anchor` field.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AnchorReceipt {
    /// Backend that anchored.
    pub backend: BackendKind,
    /// Chain id (the embedded EVM uses [`EMBEDDED_CHAIN_ID`](crate::EMBEDDED_CHAIN_ID)).
    pub chain_id: u64,
    /// Registry contract.
    pub registry: Address,
    /// Hash of the transaction that anchored (for the embedded backend, a hash of the call).
    pub tx_hash: B256,
    /// Block it was included in.
    pub block_number: u64,
    /// Gas the transaction used.
    pub gas_used: u64,
    /// Price paid per gas in wei (0 on the embedded backend).
    pub effective_gas_price: u128,
    /// First round anchored by the transaction.
    pub first_round: u64,
    /// Last round anchored by the transaction (= `first_round` unless batched).
    pub last_round: u64,
    /// Batch root, when the rounds were anchored as a batch.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub batch_root: Option<B256>,
    /// The anchor was found on chain already (a retry after the receipt was lost): the fields
    /// above describe the transaction that wrote it.
    #[serde(default)]
    pub already_anchored: bool,
}

/// A round anchored on its own, as the registry stores it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CheckpointRecord {
    /// SHA-256 of the parameters.
    pub params_hash: B256,
    /// CIDv1 of the parameters.
    pub cid: String,
    /// Root of the participants tree.
    pub participants_root: B256,
    /// ε spent, in millionths.
    pub epsilon_micros: u64,
    /// Account that anchored.
    pub aggregator: Address,
    /// Block timestamp of the anchor (seconds).
    pub anchored_at: u64,
}

/// A batch, as the registry stores it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct BatchRecord {
    /// First round of the batch.
    pub first_round: u64,
    /// Last round of the batch.
    pub last_round: u64,
    /// Merkle root of the round leaves.
    pub root: B256,
    /// Account that anchored.
    pub aggregator: Address,
    /// Block timestamp of the anchor (seconds).
    pub anchored_at: u64,
}

/// What the registry holds for a round.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum AnchoredCheckpoint {
    /// The round was anchored on its own.
    Single(CheckpointRecord),
    /// The round is covered by a batch (its fields are proven with a batch proof).
    Batched(BatchRecord),
}

/// An event of the registry, with where it was emitted.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AnchorEvent {
    /// Block of the transaction.
    pub block_number: u64,
    /// Transaction that emitted it.
    pub tx_hash: B256,
    /// What was anchored.
    pub kind: AnchorEventKind,
}

/// What an [`AnchorEvent`] reports.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "event", rename_all = "snake_case")]
pub enum AnchorEventKind {
    /// `CheckpointAnchored`: one round.
    Checkpoint {
        /// The checkpoint as anchored.
        checkpoint: CheckpointAnchor,
        /// Who anchored.
        aggregator: Address,
    },
    /// `BatchAnchored`: several rounds under one root.
    Batch {
        /// The federation.
        federation: FederationId,
        /// First round.
        first_round: u64,
        /// Last round.
        last_round: u64,
        /// Merkle root of the round leaves.
        root: B256,
        /// Who anchored.
        aggregator: Address,
    },
}

impl AnchorEventKind {
    /// The federation the event is about.
    pub fn federation(&self) -> FederationId {
        match self {
            Self::Checkpoint { checkpoint, .. } => checkpoint.federation,
            Self::Batch { federation, .. } => *federation,
        }
    }

    /// The rounds the event anchors.
    pub fn rounds(&self) -> std::ops::RangeInclusive<u64> {
        match self {
            Self::Checkpoint { checkpoint, .. } => checkpoint.round..=checkpoint.round,
            Self::Batch {
                first_round,
                last_round,
                ..
            } => *first_round..=*last_round,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cp(round: u64) -> CheckpointAnchor {
        CheckpointAnchor {
            federation: FederationId::from_name("f"),
            round,
            params_hash: B256::repeat_byte(round as u8 + 1),
            cid: format!("bafk{round}"),
            participants_root: B256::repeat_byte(9),
            epsilon_micros: 1_500_000,
        }
    }

    #[test]
    fn epsilon_rounds_up_and_saturates() {
        assert_eq!(epsilon_micros(Some(1.5)), 1_500_000);
        assert_eq!(epsilon_micros(Some(0.000_000_1)), 1);
        assert_eq!(epsilon_micros(Some(-3.0)), 0);
        assert_eq!(epsilon_micros(None), EPSILON_UNBOUNDED);
        assert_eq!(epsilon_micros(Some(f64::INFINITY)), EPSILON_UNBOUNDED);
        assert_eq!(epsilon_micros(Some(f64::NAN)), EPSILON_UNBOUNDED);
        assert_eq!(epsilon_micros(Some(1e300)), EPSILON_UNBOUNDED - 1);
    }

    #[test]
    fn batch_proofs() {
        let batch = RoundBatch::new((3..8).map(cp).collect()).unwrap();
        assert_eq!((batch.first_round(), batch.last_round()), (3, 7));
        for r in 3..8 {
            let proof = batch.proof(r).unwrap();
            assert!(RoundBatch::verify(batch.root(), &cp(r), &proof));
            let mut tampered = cp(r);
            tampered.cid.push('x');
            assert!(!RoundBatch::verify(batch.root(), &tampered, &proof));
        }
        assert!(batch.proof(8).is_none());
    }

    #[test]
    fn batch_rejects_gaps_and_mixed_federations() {
        assert!(RoundBatch::new(vec![]).is_err());
        assert!(RoundBatch::new(vec![cp(1), cp(3)]).is_err());
        let mut other = cp(2);
        other.federation = FederationId::from_name("g");
        assert!(RoundBatch::new(vec![cp(1), other]).is_err());
    }
}
