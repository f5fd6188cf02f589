//! chain-anchor's trees against OpenZeppelin's own `StandardMerkleTree` (JS): same roots, same
//! proofs. The fixture is written by `node scripts/merkle-fixture.mjs`.

use alloy::primitives::{Address, B256};
use chain_anchor::{CheckpointAnchor, FederationId, ParticipantsTree, RoundBatch};
use serde::Deserialize;

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct Member {
    address: Address,
    update_hash: B256,
}

#[derive(Deserialize)]
struct ParticipantsCase {
    members: Vec<Member>,
    root: B256,
    proofs: Vec<Vec<B256>>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct Leaf {
    round: u64,
    params_hash: B256,
    cid: String,
    participants_root: B256,
    epsilon_micros: u64,
}

#[derive(Deserialize)]
struct RoundsCase {
    leaves: Vec<Leaf>,
    root: B256,
    proofs: Vec<Vec<B256>>,
}

#[derive(Deserialize)]
struct Fixture {
    participants: Vec<ParticipantsCase>,
    rounds: Vec<RoundsCase>,
}

fn fixture() -> Fixture {
    serde_json::from_str(include_str!("../fixtures/standard-merkle-tree.json")).unwrap()
}

#[test]
fn participants_tree_matches_openzeppelin_standard_merkle_tree() {
    for case in fixture().participants {
        let members: Vec<(Address, [u8; 32])> = case
            .members
            .iter()
            .map(|m| (m.address, m.update_hash.0))
            .collect();
        let tree = ParticipantsTree::new(&members).unwrap();
        assert_eq!(tree.root(), case.root, "{} members", members.len());
        for (m, proof) in case.members.iter().zip(&case.proofs) {
            assert_eq!(tree.proof(m.address).as_ref(), Some(proof));
        }
    }
}

#[test]
fn round_batch_matches_openzeppelin_standard_merkle_tree() {
    let federation = FederationId::from_name("fixture");
    for case in fixture().rounds {
        let rounds: Vec<CheckpointAnchor> = case
            .leaves
            .iter()
            .map(|l| CheckpointAnchor {
                federation,
                round: l.round,
                params_hash: l.params_hash,
                cid: l.cid.clone(),
                participants_root: l.participants_root,
                epsilon_micros: l.epsilon_micros,
            })
            .collect();
        let batch = RoundBatch::new(rounds).unwrap();
        assert_eq!(batch.root(), case.root, "{} rounds", case.leaves.len());
        for (l, proof) in case.leaves.iter().zip(&case.proofs) {
            assert_eq!(batch.proof(l.round).as_ref(), Some(proof));
        }
    }
}
