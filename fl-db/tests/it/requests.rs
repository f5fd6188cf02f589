//! The request log.

use fl_db::gateway::RequestRecord;
use fl_db::{Address, B256, DbError, Store};

use crate::support::{TestDb, on_both};

on_both!(requests_round_trip, a_corrupt_request_row_is_an_error);

fn request(n: u8, created_at: u64) -> RequestRecord {
    RequestRecord {
        request_hash: B256::repeat_byte(n),
        requester: Address::repeat_byte(0xA0 + n),
        model_cid: format!("bafybeigdyrzt{n}"),
        label: if n.is_multiple_of(2) {
            "approve"
        } else {
            "reject"
        }
        .to_owned(),
        selected: (1..=5).map(Address::repeat_byte).collect(),
        agreeing: (1..=3).map(Address::repeat_byte).collect(),
        disagreeing: vec![Address::repeat_byte(4), Address::repeat_byte(5)],
        latency_ms: 40 + u64::from(n),
        created_at,
    }
}

async fn requests_round_trip(db: &TestDb) {
    let store = Store::open(&db.url).await.unwrap();
    let logged = [
        request(1, 100),
        request(2, 300),
        request(3, 200),
        request(4, 200),
    ];
    for r in &logged {
        assert!(store.log_request(r).await.unwrap());
    }
    assert_eq!(
        store
            .request(&logged[0].request_hash)
            .await
            .unwrap()
            .as_ref(),
        Some(&logged[0])
    );
    assert_eq!(store.request(&B256::repeat_byte(0xEE)).await.unwrap(), None);

    // The same hash again is not logged twice; the first record stays.
    let mut again = request(1, 999);
    again.label = "something else".into();
    assert!(!store.log_request(&again).await.unwrap());
    assert_eq!(
        store
            .request(&logged[0].request_hash)
            .await
            .unwrap()
            .as_ref(),
        Some(&logged[0])
    );

    // Oldest first, ties by hash, from `since` on, at most `limit`.
    let since = store.requests_since(200, 10).await.unwrap();
    assert_eq!(
        since,
        vec![logged[2].clone(), logged[3].clone(), logged[1].clone()]
    );
    assert_eq!(
        store.requests_since(0, 2).await.unwrap(),
        vec![logged[0].clone(), logged[2].clone()]
    );
    assert!(store.requests_since(301, 10).await.unwrap().is_empty());
    assert_eq!(store.requests_since(u64::MAX, 10).await.unwrap(), vec![]);

    // Too large for a BIGINT: refused, nothing written.
    let mut huge = request(9, 1);
    huge.latency_ms = u64::MAX;
    assert!(matches!(
        store.log_request(&huge).await,
        Err(DbError::Unstorable {
            column: "latency_ms",
            ..
        })
    ));
    assert_eq!(store.request(&huge.request_hash).await.unwrap(), None);
}

async fn a_corrupt_request_row_is_an_error(db: &TestDb) {
    let store = Store::open(&db.url).await.unwrap();
    store.log_request(&request(1, 100)).await.unwrap();
    store.log_request(&request(2, 100)).await.unwrap();
    let raw = db.raw().await;
    let cases = [
        ("requester", "'0xnot-an-address'"),
        ("selected", "'[\"0x01\"]'"),
        ("agreeing", "'not json'"),
        ("latency_ms", "-5"),
    ];
    for (column, value) in cases {
        let hash = format!("{:#x}", B256::repeat_byte(1));
        sqlx::query(sqlx::AssertSqlSafe(format!(
            "UPDATE gateway_requests SET {column} = {value} WHERE request_hash = '{hash}'"
        )))
        .execute(&raw)
        .await
        .unwrap();
        match store.request(&B256::repeat_byte(1)).await {
            Err(DbError::Corrupt {
                table: "gateway_requests",
                column: c,
                ..
            }) if c == column => {}
            other => panic!("{column}: {other:?}"),
        }
        // A list that holds the row fails too, naming the same column.
        assert!(matches!(
            store.requests_since(0, 10).await,
            Err(DbError::Corrupt { column: c, .. }) if c == column
        ));
        // Put it back for the next case.
        sqlx::query("DELETE FROM gateway_requests WHERE request_hash = $1")
            .bind(hash)
            .execute(&raw)
            .await
            .unwrap();
        store.log_request(&request(1, 100)).await.unwrap();
    }
    // The other row was never affected.
    assert_eq!(
        store.request(&B256::repeat_byte(2)).await.unwrap(),
        Some(request(2, 100))
    );
}
