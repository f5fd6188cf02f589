//! Receipts: replay refused, pending → settled / rejected, surviving a restart, concurrency.

use fl_db::gateway::{ReceiptCounts, ReceiptRecord, ReceiptStatus};
use fl_db::{Address, B256, Bytes, DbError, Store, U256};

use crate::support::{TestDb, on_both};

on_both!(
    a_replayed_receipt_is_refused_and_the_first_kept,
    pending_receipts_settle_or_are_rejected,
    pending_receipts_survive_a_restart,
    concurrent_receipts_are_all_kept_once,
    a_corrupt_fee_is_an_error,
);

/// Receipt `nonce` of requester `requester` (a byte), accepted at `accepted_at`.
pub(crate) fn receipt(requester: u8, nonce: u64, accepted_at: u64) -> ReceiptRecord {
    ReceiptRecord {
        requester: Address::repeat_byte(requester),
        nonce: U256::from(nonce),
        gateway: Address::repeat_byte(0x6A),
        request_hash: B256::repeat_byte(nonce as u8),
        fee: U256::from(1_000_000_000_000_000u64) * U256::from(nonce + 1),
        deadline: accepted_at + 3_600,
        signature: Bytes::from(vec![requester; 65]),
        accepted_at,
    }
}

fn key(r: &ReceiptRecord) -> (Address, U256) {
    (r.requester, r.nonce)
}

async fn a_replayed_receipt_is_refused_and_the_first_kept(db: &TestDb) {
    let store = Store::open(&db.url).await.unwrap();
    let first = receipt(1, 7, 100);
    store.add_receipt(&first).await.unwrap();

    let mut replay = receipt(1, 7, 200);
    replay.fee = U256::MAX;
    match store.add_receipt(&replay).await {
        Err(DbError::Replayed { requester, nonce }) => {
            assert_eq!((requester, nonce), key(&first));
        }
        other => panic!("{other:?}"),
    }
    let stored = store
        .receipt(&first.requester, &first.nonce)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(stored.receipt, first);
    assert_eq!(stored.status, ReceiptStatus::Pending);
    assert_eq!(
        store.pending_fees(&first.requester).await.unwrap(),
        first.fee
    );

    // A replay after settlement is still a replay.
    store
        .mark_settled(&[key(&first)], &B256::repeat_byte(0x77))
        .await
        .unwrap();
    assert!(matches!(
        store.add_receipt(&first).await,
        Err(DbError::Replayed { .. })
    ));

    // The same nonce from another requester, and the next nonce, are new receipts; so is a
    // nonce beyond 64 bits.
    store.add_receipt(&receipt(2, 7, 100)).await.unwrap();
    store.add_receipt(&receipt(1, 8, 100)).await.unwrap();
    let mut big = receipt(1, 9, 100);
    big.nonce = U256::MAX;
    store.add_receipt(&big).await.unwrap();
    assert!(matches!(
        store.add_receipt(&big).await,
        Err(DbError::Replayed { .. })
    ));
    assert_eq!(
        store
            .receipt(&big.requester, &U256::MAX)
            .await
            .unwrap()
            .unwrap()
            .receipt,
        big
    );
    assert_eq!(
        store.count_by_status().await.unwrap(),
        ReceiptCounts {
            pending: 3,
            settled: 1,
            rejected: 0
        }
    );
}

async fn pending_receipts_settle_or_are_rejected(db: &TestDb) {
    let store = Store::open(&db.url).await.unwrap();
    assert_eq!(
        store.count_by_status().await.unwrap(),
        ReceiptCounts::default()
    );
    let (a, b, c, d) = (
        receipt(1, 1, 40),
        receipt(1, 2, 10),
        receipt(2, 1, 30),
        receipt(1, 3, 20),
    );
    for r in [&a, &b, &c, &d] {
        store.add_receipt(r).await.unwrap();
    }
    // Oldest accepted first.
    assert_eq!(
        store.pending_receipts(10).await.unwrap(),
        vec![b.clone(), d.clone(), c.clone(), a.clone()]
    );
    assert_eq!(
        store.pending_receipts(2).await.unwrap(),
        vec![b.clone(), d.clone()]
    );
    assert_eq!(
        store.pending_fees(&a.requester).await.unwrap(),
        a.fee + b.fee + d.fee
    );

    let tx = B256::repeat_byte(0x5E);
    store.mark_settled(&[key(&a), key(&b)], &tx).await.unwrap();
    assert_eq!(
        store
            .receipt(&a.requester, &a.nonce)
            .await
            .unwrap()
            .unwrap()
            .status,
        ReceiptStatus::Settled { tx }
    );
    assert_eq!(store.pending_fees(&a.requester).await.unwrap(), d.fee);

    // All or none: `a` is no longer pending, so `c` stays pending too.
    match store.mark_settled(&[key(&c), key(&a)], &tx).await {
        Err(DbError::NotPending { requester, nonce }) => assert_eq!((requester, nonce), key(&a)),
        other => panic!("{other:?}"),
    }
    let unknown = (Address::repeat_byte(9), U256::from(1));
    assert!(matches!(
        store.mark_settled(&[unknown], &tx).await,
        Err(DbError::NotPending { .. })
    ));
    assert_eq!(
        store.pending_receipts(10).await.unwrap(),
        vec![d.clone(), c.clone()]
    );

    store
        .mark_rejected(&c.requester, &c.nonce, "deadline passed")
        .await
        .unwrap();
    assert_eq!(
        store
            .receipt(&c.requester, &c.nonce)
            .await
            .unwrap()
            .unwrap()
            .status,
        ReceiptStatus::Rejected {
            reason: "deadline passed".into()
        }
    );
    assert!(matches!(
        store.mark_rejected(&c.requester, &c.nonce, "again").await,
        Err(DbError::NotPending { .. })
    ));
    assert!(matches!(
        store
            .mark_rejected(&a.requester, &a.nonce, "settled already")
            .await,
        Err(DbError::NotPending { .. })
    ));
    assert_eq!(store.pending_fees(&c.requester).await.unwrap(), U256::ZERO);
    assert_eq!(
        store.count_by_status().await.unwrap(),
        ReceiptCounts {
            pending: 1,
            settled: 2,
            rejected: 1
        }
    );

    // Fees summed beyond what any SQL integer holds, saturating at 2^256 - 1.
    let mut large = receipt(3, 1, 50);
    large.fee = U256::MAX / U256::from(2) + U256::from(1);
    let mut larger = receipt(3, 2, 50);
    larger.fee = large.fee;
    store.add_receipt(&large).await.unwrap();
    assert_eq!(
        store.pending_fees(&large.requester).await.unwrap(),
        large.fee
    );
    store.add_receipt(&larger).await.unwrap();
    assert_eq!(
        store.pending_fees(&large.requester).await.unwrap(),
        U256::MAX
    );
}

async fn pending_receipts_survive_a_restart(db: &TestDb) {
    let accepted: Vec<ReceiptRecord> = (0..20)
        .map(|n| receipt(1 + (n % 3) as u8, n, 1000 + n))
        .collect();
    {
        let store = Store::open(&db.url).await.unwrap();
        for r in &accepted {
            store.add_receipt(r).await.unwrap();
        }
        store
            .mark_settled(&[key(&accepted[0])], &B256::repeat_byte(1))
            .await
            .unwrap();
        store
            .mark_rejected(&accepted[1].requester, &accepted[1].nonce, "bad")
            .await
            .unwrap();
        // The gateway stops: every connection closes.
        store.close().await;
    }
    let store = Store::open(&db.url).await.unwrap();
    assert_eq!(
        store.pending_receipts(100).await.unwrap(),
        accepted[2..].to_vec()
    );
    assert_eq!(
        store.count_by_status().await.unwrap(),
        ReceiptCounts {
            pending: 18,
            settled: 1,
            rejected: 1
        }
    );
    // A replay of a receipt accepted before the restart is still refused.
    assert!(matches!(
        store.add_receipt(&accepted[5]).await,
        Err(DbError::Replayed { .. })
    ));
}

async fn concurrent_receipts_are_all_kept_once(db: &TestDb) {
    const TASKS: u8 = 8;
    const EACH: u64 = 25;
    let store = Store::open(&db.url).await.unwrap();
    let contested = receipt(0xCC, 1, 1);
    let mut tasks = tokio::task::JoinSet::new();
    for t in 0..TASKS {
        let store = store.clone();
        let contested = contested.clone();
        tasks.spawn(async move {
            let mut replays = 0;
            for n in 0..EACH {
                store.add_receipt(&receipt(t + 1, n, n)).await.unwrap();
                if n == EACH / 2 {
                    match store.add_receipt(&contested).await {
                        Ok(()) => {}
                        Err(DbError::Replayed { .. }) => replays += 1,
                        Err(e) => panic!("{e}"),
                    }
                }
            }
            replays
        });
    }
    let replays: u32 = tasks.join_all().await.into_iter().sum();
    assert_eq!(
        replays,
        u32::from(TASKS) - 1,
        "one task's contested receipt is accepted"
    );
    let counts = store.count_by_status().await.unwrap();
    assert_eq!(counts.pending, u64::from(TASKS) * EACH + 1);
    assert_eq!(
        store.pending_receipts(1000).await.unwrap().len() as u64,
        counts.pending
    );
}

async fn a_corrupt_fee_is_an_error(db: &TestDb) {
    let store = Store::open(&db.url).await.unwrap();
    let r = receipt(1, 1, 1);
    store.add_receipt(&r).await.unwrap();
    let raw = db.raw().await;
    sqlx::query("UPDATE gateway_receipts SET fee = '12abc'")
        .execute(&raw)
        .await
        .unwrap();
    for result in [
        store.pending_fees(&r.requester).await.map(|_| ()),
        store.pending_receipts(10).await.map(|_| ()),
        store.receipt(&r.requester, &r.nonce).await.map(|_| ()),
    ] {
        match result {
            Err(
                e @ DbError::Corrupt {
                    table: "gateway_receipts",
                    column: "fee",
                    ..
                },
            ) => {
                assert_eq!(
                    e.to_string(),
                    "corrupt value in gateway_receipts.fee: \"12abc\""
                );
            }
            other => panic!("{other:?}"),
        }
    }
}
