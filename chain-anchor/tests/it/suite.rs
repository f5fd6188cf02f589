//! The backend-independent suite: written once, run against anvil (RPC) and the embedded EVM.

use alloy::primitives::{Address, B256};
use chain_anchor::{
    Anchor, AnchorEventKind, AnchoredCheckpoint, CheckpointClaim, Error, ParticipantsTree, Revert,
    RoundBatch, Verdict, params_hash, verify,
};

use crate::support::{checkpoint, round_data, unique_federation};

/// Deploy (done by the caller), anchor several rounds, read them back, events, reverts for an
/// outsider and a non-increasing round, a batch, and verification (valid, and every way to fail).
pub async fn run<A: Anchor>(anchor: &A, outsider: &A) {
    let fed = unique_federation("suite");
    assert_eq!(anchor.latest_round(fed).await.unwrap(), None);

    // Anchor rounds 0..4 one by one.
    let mut last_block = 0;
    for round in 0..4 {
        let cp = checkpoint(fed, round);
        let receipt = anchor.anchor(&cp).await.unwrap();
        assert_eq!((receipt.first_round, receipt.last_round), (round, round));
        assert!(receipt.gas_used > 21_000, "gas {}", receipt.gas_used);
        assert!(receipt.block_number > last_block);
        assert!(!receipt.already_anchored);
        assert_eq!(receipt.registry, anchor.registry());
        last_block = receipt.block_number;
    }

    // Read back.
    assert_eq!(anchor.latest_round(fed).await.unwrap(), Some(3));
    for round in 0..4 {
        let Some(AnchoredCheckpoint::Single(record)) = anchor.lookup(fed, round).await.unwrap()
        else {
            panic!("round {round} not anchored alone");
        };
        assert!(checkpoint(fed, round).matches(&record));
        assert_eq!(record.aggregator, anchor.sender());
        assert!(record.anchored_at > 0);
    }
    assert_eq!(anchor.lookup(fed, 4).await.unwrap(), None);

    // Events, in order, one per round.
    let events = anchor.events(Some(fed), 0).await.unwrap();
    let rounds: Vec<u64> = events.iter().map(|e| *e.kind.rounds().start()).collect();
    assert_eq!(rounds, [0, 1, 2, 3]);
    for e in &events {
        let AnchorEventKind::Checkpoint {
            checkpoint: cp,
            aggregator,
        } = &e.kind
        else {
            panic!("unexpected event {e:?}");
        };
        assert_eq!(*cp, checkpoint(fed, cp.round));
        assert_eq!(*aggregator, anchor.sender());
    }

    // Rounds only move forward: 5, then 4 is refused.
    anchor.anchor(&checkpoint(fed, 5)).await.unwrap();
    match anchor.anchor(&checkpoint(fed, 4)).await {
        Err(Error::Reverted(Revert::RoundNotIncreasing { last: 5, given: 4 })) => {}
        other => panic!("expected RoundNotIncreasing, got {other:?}"),
    }

    // An account without AGGREGATOR_ROLE is refused.
    match outsider.anchor(&checkpoint(fed, 6)).await {
        Err(Error::Reverted(Revert::Unauthorized { account })) => {
            assert_eq!(account, outsider.sender());
        }
        other => panic!("expected Unauthorized, got {other:?}"),
    }
    assert_eq!(anchor.latest_round(fed).await.unwrap(), Some(5));

    // A batch of rounds 6..=9.
    let batch = RoundBatch::new((6..10).map(|r| checkpoint(fed, r)).collect()).unwrap();
    let receipt = anchor.anchor_batch(&batch).await.unwrap();
    assert_eq!((receipt.first_round, receipt.last_round), (6, 9));
    assert_eq!(receipt.batch_root, Some(batch.root()));
    assert_eq!(anchor.latest_round(fed).await.unwrap(), Some(9));
    for round in 6..10 {
        let Some(AnchoredCheckpoint::Batched(b)) = anchor.lookup(fed, round).await.unwrap() else {
            panic!("round {round} not in a batch");
        };
        assert_eq!((b.first_round, b.last_round, b.root), (6, 9, batch.root()));
        // Rust proofs are accepted by the contract's MerkleProof.
        let proof = batch.proof(round).unwrap();
        assert!(
            anchor
                .check_in_batch_on_chain(&checkpoint(fed, round), &proof)
                .await
                .unwrap()
        );
        let mut other = checkpoint(fed, round);
        other.epsilon_micros += 1;
        assert!(
            !anchor
                .check_in_batch_on_chain(&other, &proof)
                .await
                .unwrap()
        );
    }
    let batch_events = anchor.events(Some(fed), 0).await.unwrap();
    assert!(matches!(
        batch_events.last().map(|e| &e.kind),
        Some(AnchorEventKind::Batch { first_round: 6, last_round: 9, root, .. }) if *root == batch.root()
    ));

    // Participants trees: Rust root and proofs == Solidity MerkleProof.verify, 1..=7 members.
    for n in 1..=7u8 {
        let members: Vec<(Address, [u8; 32])> = (1..=n)
            .map(|i| (Address::repeat_byte(i), [i ^ 0x5a; 32]))
            .collect();
        let tree = ParticipantsTree::new(&members).unwrap();
        for (m, h) in &members {
            let proof = tree.proof(*m).unwrap();
            let ok = anchor
                .check_participant_on_chain(tree.root(), *m, B256::from(*h), &proof)
                .await
                .unwrap();
            assert!(ok, "member {m} of {n}");
            let bad = anchor
                .check_participant_on_chain(tree.root(), *m, B256::repeat_byte(0xff), &proof)
                .await
                .unwrap();
            assert!(!bad);
        }
    }

    verification(anchor, fed, &batch).await;
}

async fn verification<A: Anchor>(anchor: &A, fed: chain_anchor::FederationId, batch: &RoundBatch) {
    let d = round_data(1);
    let cp = checkpoint(fed, 1);
    let claim = CheckpointClaim {
        federation: fed,
        round: 1,
        params: &d.params,
        cid: &d.cid,
        participants: &d.members,
        epsilon_micros: cp.epsilon_micros,
        member: Some(d.members[2]),
        batch_proof: None,
        from_block: 0,
    };
    assert!(verify(anchor, &claim).await.unwrap().is_valid());

    // One flipped byte in the parameters.
    let mut flipped = d.params.clone();
    flipped[1234] ^= 0x01;
    let v = verify(
        anchor,
        &CheckpointClaim {
            params: &flipped,
            ..claim.clone()
        },
    )
    .await
    .unwrap();
    assert_eq!(
        v,
        Verdict::TamperedParameters {
            computed: params_hash(&flipped),
            anchored: cp.params_hash
        }
    );

    // Round 1's parameters presented as round 2's.
    let v = verify(
        anchor,
        &CheckpointClaim {
            round: 2,
            ..claim.clone()
        },
    )
    .await
    .unwrap();
    assert_eq!(
        v,
        Verdict::WrongRound {
            claimed: 2,
            anchored_round: 1
        }
    );

    // A round never anchored.
    let v = verify(
        anchor,
        &CheckpointClaim {
            round: 4,
            params: b"x",
            ..claim.clone()
        },
    )
    .await
    .unwrap();
    assert_eq!(
        v,
        Verdict::MissingAnchor {
            latest_round: Some(9)
        }
    );

    // Another CID, another participant list, another epsilon, an outsider.
    let v = verify(
        anchor,
        &CheckpointClaim {
            cid: "bafkother",
            ..claim.clone()
        },
    )
    .await
    .unwrap();
    assert!(matches!(v, Verdict::CidMismatch { .. }), "{v:?}");
    let fewer = &d.members[1..];
    let v = verify(
        anchor,
        &CheckpointClaim {
            participants: fewer,
            member: None,
            ..claim.clone()
        },
    )
    .await
    .unwrap();
    assert!(matches!(v, Verdict::ParticipantsMismatch { .. }), "{v:?}");
    let v = verify(
        anchor,
        &CheckpointClaim {
            epsilon_micros: 1,
            ..claim.clone()
        },
    )
    .await
    .unwrap();
    assert_eq!(
        v,
        Verdict::EpsilonMismatch {
            claimed: 1,
            anchored: cp.epsilon_micros
        }
    );
    let stranger = (Address::repeat_byte(0xaa), [0; 32]);
    let v = verify(
        anchor,
        &CheckpointClaim {
            member: Some(stranger),
            ..claim.clone()
        },
    )
    .await
    .unwrap();
    assert_eq!(v, Verdict::ParticipantNotIncluded { member: stranger.0 });

    // A batched round: valid with its proof, refused without, refused with a flipped byte.
    let d7 = round_data(7);
    let proof = batch.proof(7).unwrap();
    let claim7 = CheckpointClaim {
        federation: fed,
        round: 7,
        params: &d7.params,
        cid: &d7.cid,
        participants: &d7.members,
        epsilon_micros: checkpoint(fed, 7).epsilon_micros,
        member: Some(d7.members[0]),
        batch_proof: Some(&proof),
        from_block: 0,
    };
    assert!(verify(anchor, &claim7).await.unwrap().is_valid());
    let v = verify(
        anchor,
        &CheckpointClaim {
            batch_proof: None,
            ..claim7.clone()
        },
    )
    .await
    .unwrap();
    assert_eq!(
        v,
        Verdict::BatchProofMissing {
            first_round: 6,
            last_round: 9
        }
    );
    let mut flipped7 = d7.params.clone();
    flipped7[0] ^= 0x80;
    let v = verify(
        anchor,
        &CheckpointClaim {
            params: &flipped7,
            ..claim7.clone()
        },
    )
    .await
    .unwrap();
    assert_eq!(
        v,
        Verdict::NotInBatch {
            first_round: 6,
            last_round: 9
        }
    );
}
