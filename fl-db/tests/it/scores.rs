//! Node score history.

use fl_db::gateway::ScoreRecord;
use fl_db::{Address, DbError, Store};

use crate::support::{TestDb, on_both};

on_both!(score_history_is_newest_first);

fn score(node: u8, at: u64, validator: Option<u8>, agreed: u64) -> ScoreRecord {
    ScoreRecord {
        node: Address::repeat_byte(node),
        at,
        validator: validator.map(Address::repeat_byte),
        served: agreed + 3,
        agreed,
        disagreed: 2,
        missed: 1,
        challenges: 4,
        challenges_correct: 3,
        latency_p50_ms: 35,
        latency_p95_ms: 120,
        reputation: (agreed as f64 + 1.0) / (agreed as f64 + 4.5),
    }
}

async fn score_history_is_newest_first(db: &TestDb) {
    let store = Store::open(&db.url).await.unwrap();
    let node = Address::repeat_byte(1);
    let (s10, s30, s20) = (
        score(1, 10, None, 5),
        score(1, 30, None, 9),
        score(1, 20, None, 7),
    );
    let by_validator = score(1, 30, Some(0xF0), 8);
    let other_node = score(2, 15, Some(0xF0), 1);
    for s in [&s10, &s30, &s20, &by_validator, &other_node] {
        store.record_score(s).await.unwrap();
    }
    // Newest first; at the same time, the gateway's own score before a validator's.
    assert_eq!(
        store.score_history(&node, 10).await.unwrap(),
        vec![s30.clone(), by_validator.clone(), s20.clone(), s10.clone()]
    );
    assert_eq!(
        store.score_history(&node, 2).await.unwrap(),
        vec![s30.clone(), by_validator.clone()]
    );
    assert!(
        store
            .score_history(&Address::repeat_byte(9), 10)
            .await
            .unwrap()
            .is_empty()
    );

    // One row per node, its newest, by node address.
    assert_eq!(
        store.latest_scores().await.unwrap(),
        vec![s30.clone(), other_node.clone()]
    );

    // The same node, validator and time again replaces the score.
    let mut revised = s20.clone();
    revised.agreed = 70;
    revised.reputation = 0.123_456_789_012_345_67;
    store.record_score(&revised).await.unwrap();
    assert_eq!(store.score_history(&node, 10).await.unwrap()[2], revised);
    assert_eq!(store.score_history(&node, 10).await.unwrap().len(), 4);

    // A reputation that is not a number is not stored.
    let mut nan = score(3, 1, None, 1);
    nan.reputation = f64::NAN;
    assert!(matches!(
        store.record_score(&nan).await,
        Err(DbError::Unstorable {
            column: "reputation",
            ..
        })
    ));
    assert_eq!(store.latest_scores().await.unwrap().len(), 2);
}
