//! The data registry on one world (anvil or the embedded EVM): staked annotators register record
//! batches, every refusal is named, and the batches are rebuilt from the chain's events.

use alloy::primitives::{B256, keccak256};
use dao::data::RecordBatch;
use dao::{DAY, Role};

use crate::support::{World, assert_revert, tok};

fn digests(tag: &str, n: u8) -> Vec<B256> {
    (0..n)
        .map(|i| keccak256(format!("{tag} record {i}")))
        .collect()
}

pub async fn run(w: &World) {
    let (alice, bob) = (&w.members[0], &w.members[1]);
    let first = RecordBatch::new(&digests("alice", 5)).unwrap();
    let second = RecordBatch::new(&digests("bob", 3)).unwrap();
    let min = tok(w.config.staking.annotator_min_tokens);

    // Not staked as an annotator: refused.
    assert_revert(
        alice.register_batch(&first, "ipfs://bafy-alice").await,
        "NotAnnotator",
    );
    w.team
        .claim_vesting(w.deployment.team_vesting)
        .await
        .unwrap();
    for m in [alice, bob] {
        w.team.transfer(m.sender(), min).await.unwrap();
        m.stake(Role::Annotator, min).await.unwrap();
    }
    // Malformed batches and locations are refused by name.
    assert_revert(alice.register_batch(&first, "").await, "InvalidLocation");
    let long = "x".repeat(513);
    assert_revert(alice.register_batch(&first, &long).await, "InvalidLocation");

    let (receipt, i0) = alice
        .register_batch(&first, "ipfs://bafy-alice")
        .await
        .unwrap();
    assert_eq!(i0, 0);
    eprintln!(
        "data registry gas: register batch {}, deploy {:?}",
        receipt.gas_used,
        w.deployment.deploy_gas.get("DataRegistry")
    );
    assert_revert(
        bob.register_batch(&first, "https://store/alice").await,
        "BatchExists",
    );
    let (_, i1) = bob
        .register_batch(&second, "https://store/bob.car")
        .await
        .unwrap();
    assert_eq!(i1, 1);
    assert_eq!(
        alice.data_batch(first.root()).await.unwrap(),
        Some((alice.sender(), 5, 0))
    );
    assert_eq!(alice.data_batch(B256::repeat_byte(7)).await.unwrap(), None);

    // A jailed annotator can no longer register.
    let now = w.slasher.now().await.unwrap();
    w.slasher
        .jail(bob.sender(), now + DAY, B256::ZERO)
        .await
        .unwrap();
    let third = RecordBatch::new(&digests("bob late", 2)).unwrap();
    assert_revert(
        bob.register_batch(&third, "https://store/late.car").await,
        "NotAnnotator",
    );

    // Anyone rebuilds the registered set from the events, in order, with the locations.
    let rebuilt = w.deployer.registered_batches().await.unwrap();
    assert_eq!(rebuilt.len(), 2);
    assert_eq!(
        (rebuilt[0].root, rebuilt[0].contributor, rebuilt[0].records),
        (first.root(), alice.sender(), 5)
    );
    assert_eq!(rebuilt[0].location, "ipfs://bafy-alice");
    assert_eq!(
        (
            rebuilt[1].root,
            rebuilt[1].index,
            rebuilt[1].location.as_str()
        ),
        (second.root(), 1, "https://store/bob.car")
    );
    // A record's inclusion is proven against the registered root.
    let d = digests("alice", 5)[2];
    let proof = first.proof(d).unwrap();
    assert!(RecordBatch::verify(rebuilt[0].root, d, &proof));
    assert!(!RecordBatch::verify(rebuilt[1].root, d, &proof));
}
