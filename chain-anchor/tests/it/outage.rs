//! An RPC outage delays anchors but never loses one, and none arrives twice.
//!
//! anvil runs with `--state <file>`: it loads the file at start and dumps its state when it
//! stops, so a restart resumes the same chain (as a real node would after an outage).

use std::collections::BTreeMap;
use std::time::Duration;

use chain_anchor::{Anchor, Error, RetryPolicy, RpcAnchor, deploy_registry};

use crate::support::{
    anvil_path, checkpoint, key_file, rpc_settings, spawn_anvil, stop_anvil, unique_federation,
};

#[tokio::test]
async fn every_anchor_arrives_exactly_once_across_an_outage() {
    let Some(path) = anvil_path() else { return };
    let dir = tempfile::tempdir().unwrap();
    let state = dir.path().join("anvil-state.json");
    let anvil = spawn_anvil(&path, 0, Some(&state));
    let port = anvil.port();
    let url = anvil.endpoint();
    let key = key_file(&anvil, 0, dir.path());
    let registry = deploy_registry(&url, &key, 1).await.unwrap().registry;
    let connect = |queue: &str, attempts: u32| {
        let mut s = rpc_settings(&url, registry, key.clone(), &dir.path().join(queue));
        s.retry = RetryPolicy {
            attempts,
            initial_backoff: Duration::from_millis(100),
            max_backoff: Duration::from_millis(400),
        };
        RpcAnchor::connect(s).unwrap()
    };
    let a = connect("queue-a", 2);
    let b = connect("queue-b", 2);
    let fed = unique_federation("outage");

    a.anchor(&checkpoint(fed, 0)).await.unwrap();
    a.anchor(&checkpoint(fed, 1)).await.unwrap();

    // Endpoint down: anchors fail, stay queued, in order.
    stop_anvil(anvil);
    for round in [2, 3] {
        match a.anchor(&checkpoint(fed, round)).await {
            Err(Error::Rpc { .. }) => {}
            other => panic!("round {round} during the outage: {other:?}"),
        }
    }
    assert_eq!(a.queued().unwrap(), 2);

    // Back up with its state: the next anchor delivers the queue first, then itself.
    let anvil = spawn_anvil(&path, port, Some(&state));
    let r4 = a.anchor(&checkpoint(fed, 4)).await.unwrap();
    assert_eq!(r4.first_round, 4);
    assert_eq!(a.queued().unwrap(), 0);

    // Stopped while an anchor is in flight: it keeps retrying and lands after the restart.
    stop_anvil(anvil);
    let patient = connect("queue-a", 12);
    let in_flight = tokio::spawn(async move {
        let receipt = patient.anchor(&checkpoint(fed, 5)).await;
        (patient, receipt)
    });
    tokio::time::sleep(Duration::from_millis(800)).await;
    let anvil = spawn_anvil(&path, port, Some(&state));
    let (patient, r5) = tokio::time::timeout(Duration::from_secs(60), in_flight)
        .await
        .expect("the in-flight anchor finishes")
        .unwrap();
    assert_eq!(r5.unwrap().first_round, 5);
    assert_eq!(patient.queued().unwrap(), 0);

    // Mined but the receipt lost: A queued round 6 during an outage; B (same key) anchored the
    // same data meanwhile. A's retry finds it on chain and does not send it again.
    stop_anvil(anvil);
    assert!(a.anchor(&checkpoint(fed, 6)).await.is_err());
    let anvil = spawn_anvil(&path, port, Some(&state));
    b.anchor(&checkpoint(fed, 6)).await.unwrap();
    let flushed = a.flush().await.unwrap();
    assert_eq!(flushed.len(), 1);
    assert!(flushed[0].already_anchored);
    assert_ne!(flushed[0].tx_hash, alloy::primitives::B256::ZERO);

    // A conflicting anchor for a round is an error, set aside, not a silent skip.
    stop_anvil(anvil);
    assert!(a.anchor(&checkpoint(fed, 7)).await.is_err());
    let anvil = spawn_anvil(&path, port, Some(&state));
    let mut other = checkpoint(fed, 7);
    other.cid = "bafkreiconflict".into();
    b.anchor(&other).await.unwrap();
    assert!(matches!(
        a.flush().await,
        Err(Error::Conflict { round: 7, .. })
    ));
    assert_eq!(a.queued().unwrap(), 0);
    assert!(
        dir.path()
            .join("queue-a/rejected")
            .read_dir()
            .unwrap()
            .count()
            >= 1
    );

    // Exactly once: one event per round 0..=7.
    let mut per_round = BTreeMap::new();
    for e in a.events(Some(fed), 0).await.unwrap() {
        *per_round.entry(*e.kind.rounds().start()).or_insert(0) += 1;
    }
    assert_eq!(per_round, (0..=7).map(|r| (r, 1)).collect());
    drop(anvil);
}
