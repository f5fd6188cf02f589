//! Checking a checkpoint against its anchor: what `fl-aggregator verify` calls.

use alloy::primitives::{Address, B256};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use crate::merkle::{ParticipantsTree, participant_leaf, verify_proof};
use crate::types::{
    AnchorEventKind, AnchoredCheckpoint, CheckpointAnchor, FederationId, RoundBatch,
};
use crate::{Anchor, Result};

/// What a checkpoint holder claims, taken from the checkpoint's parameter bytes and manifest.
#[derive(Debug, Clone)]
pub struct CheckpointClaim<'a> {
    /// The federation (see [`FederationId::from_name`]).
    pub federation: FederationId,
    /// The round the manifest names.
    pub round: u64,
    /// The parameter object's bytes; their SHA-256 is recomputed.
    pub params: &'a [u8],
    /// The CID the manifest names.
    pub cid: &'a str,
    /// The participants the manifest lists, with their update hashes (zero when unknown).
    pub participants: &'a [(Address, [u8; 32])],
    /// ε spent per the manifest, in millionths (see [`epsilon_micros`](crate::epsilon_micros)).
    pub epsilon_micros: u64,
    /// A member whose inclusion is checked as well: its address and update hash.
    pub member: Option<(Address, [u8; 32])>,
    /// The round's proof in its batch, when it was anchored in one (kept with the checkpoint).
    pub batch_proof: Option<&'a [B256]>,
    /// First block searched for events (to tell a wrong round from tampered parameters).
    pub from_block: u64,
}

/// The outcome of [`verify`]: valid, or the first thing that does not match.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "verdict", rename_all = "snake_case")]
#[non_exhaustive]
pub enum Verdict {
    /// Parameters, CID, participants and ε are exactly what was anchored for this round.
    Valid {
        /// What the registry holds.
        anchored: AnchoredCheckpoint,
    },
    /// Nothing is anchored for the round.
    MissingAnchor {
        /// The last round anchored for the federation, if any.
        latest_round: Option<u64>,
    },
    /// The parameters' hash differs from the anchored one: they were altered.
    TamperedParameters {
        /// SHA-256 of the bytes given.
        computed: B256,
        /// The anchored hash.
        anchored: B256,
    },
    /// These parameters are anchored, but for another round than the one claimed.
    WrongRound {
        /// The round claimed.
        claimed: u64,
        /// The round they were anchored for.
        anchored_round: u64,
    },
    /// The CID differs from the anchored one.
    CidMismatch {
        /// The CID given.
        claimed: String,
        /// The anchored CID.
        anchored: String,
    },
    /// The participants listed do not give the anchored root.
    ParticipantsMismatch {
        /// Root of the participants given.
        computed: B256,
        /// The anchored root.
        anchored: B256,
    },
    /// The ε spent differs from the anchored one.
    EpsilonMismatch {
        /// ε claimed, in millionths.
        claimed: u64,
        /// ε anchored, in millionths.
        anchored: u64,
    },
    /// The member is not among the round's participants (or with another update hash).
    ParticipantNotIncluded {
        /// The member.
        member: Address,
    },
    /// The round is anchored in a batch, but no batch proof was given.
    BatchProofMissing {
        /// First round of the batch.
        first_round: u64,
        /// Last round of the batch.
        last_round: u64,
    },
    /// The round's fields (parameters, CID, participants, ε) with the given proof do not lead
    /// to the batch root: something was altered, or the proof belongs elsewhere.
    NotInBatch {
        /// First round of the batch.
        first_round: u64,
        /// Last round of the batch.
        last_round: u64,
    },
}

impl Verdict {
    /// Whether the checkpoint verified.
    pub fn is_valid(&self) -> bool {
        matches!(self, Self::Valid { .. })
    }
}

/// SHA-256 of a checkpoint's parameter bytes: the `paramsHash` anchored (and the digest in its
/// CID).
pub fn params_hash(params: &[u8]) -> B256 {
    B256::from_slice(&Sha256::digest(params))
}

/// Checks `claim` against the registry behind `anchor`: recomputes the parameter hash and the
/// participants root, finds the round's anchor (alone or in a batch), compares every field and
/// checks the member's inclusion.
///
/// # Errors
/// Only when the registry cannot be read (endpoint down, corrupt state) or the claim's
/// participants list an address twice; a checkpoint that does not match is a [`Verdict`], not
/// an error.
pub async fn verify<A: Anchor>(anchor: &A, claim: &CheckpointClaim<'_>) -> Result<Verdict> {
    let computed = params_hash(claim.params);
    let tree = ParticipantsTree::new(claim.participants)?;
    let Some(anchored) = anchor.lookup(claim.federation, claim.round).await? else {
        if let Some(round) = anchored_round_of(anchor, claim, computed).await? {
            return Ok(Verdict::WrongRound {
                claimed: claim.round,
                anchored_round: round,
            });
        }
        return Ok(Verdict::MissingAnchor {
            latest_round: anchor.latest_round(claim.federation).await?,
        });
    };
    match &anchored {
        AnchoredCheckpoint::Single(record) => {
            if record.params_hash != computed {
                if let Some(round) = anchored_round_of(anchor, claim, computed).await? {
                    return Ok(Verdict::WrongRound {
                        claimed: claim.round,
                        anchored_round: round,
                    });
                }
                return Ok(Verdict::TamperedParameters {
                    computed,
                    anchored: record.params_hash,
                });
            }
            if record.cid != claim.cid {
                return Ok(Verdict::CidMismatch {
                    claimed: claim.cid.to_owned(),
                    anchored: record.cid.clone(),
                });
            }
            if record.participants_root != tree.root() {
                return Ok(Verdict::ParticipantsMismatch {
                    computed: tree.root(),
                    anchored: record.participants_root,
                });
            }
            if record.epsilon_micros != claim.epsilon_micros {
                return Ok(Verdict::EpsilonMismatch {
                    claimed: claim.epsilon_micros,
                    anchored: record.epsilon_micros,
                });
            }
        }
        AnchoredCheckpoint::Batched(batch) => {
            let Some(proof) = claim.batch_proof else {
                return Ok(Verdict::BatchProofMissing {
                    first_round: batch.first_round,
                    last_round: batch.last_round,
                });
            };
            let leaf = CheckpointAnchor {
                federation: claim.federation,
                round: claim.round,
                params_hash: computed,
                cid: claim.cid.to_owned(),
                participants_root: tree.root(),
                epsilon_micros: claim.epsilon_micros,
            };
            if !RoundBatch::verify(batch.root, &leaf, proof) {
                return Ok(Verdict::NotInBatch {
                    first_round: batch.first_round,
                    last_round: batch.last_round,
                });
            }
        }
    }
    if let Some((member, update_hash)) = claim.member {
        let included = tree.proof(member).is_some_and(|proof| {
            verify_proof(
                tree.root(),
                participant_leaf(member, B256::from(update_hash)),
                &proof,
            )
        });
        if !included {
            return Ok(Verdict::ParticipantNotIncluded { member });
        }
    }
    Ok(Verdict::Valid { anchored })
}

/// Checks that `member` with `update_hash` is under the participants root anchored for a round,
/// for a member who holds only its proof (not the whole participant list). For a batched round,
/// pass the root from the checkpoint's manifest as `participants_root` after verifying the
/// checkpoint with [`verify`].
pub fn verify_member(
    participants_root: B256,
    member: Address,
    update_hash: [u8; 32],
    proof: &[B256],
) -> bool {
    ParticipantsTree::verify(
        participants_root,
        participant_leaf(member, B256::from(update_hash)),
        proof,
    )
}

/// The round a single-round anchor of this federation records `params_hash` for, if any.
async fn anchored_round_of<A: Anchor>(
    anchor: &A,
    claim: &CheckpointClaim<'_>,
    params_hash: B256,
) -> Result<Option<u64>> {
    let events = anchor
        .events(Some(claim.federation), claim.from_block)
        .await?;
    Ok(events.into_iter().find_map(|e| match e.kind {
        AnchorEventKind::Checkpoint { checkpoint, .. } if checkpoint.params_hash == params_hash => {
            Some(checkpoint.round)
        }
        _ => None,
    }))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn params_hash_is_sha256() {
        assert_eq!(
            params_hash(b"abc").to_string(),
            "0xba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
        );
    }
}
