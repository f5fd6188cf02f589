//! Opening, migrating, and what a bad URL or an unreachable server gives.

use std::time::{Duration, Instant};

use fl_db::{DbError, Store, StoreOptions};

use crate::support::{TestDb, on_both};

on_both!(opening_twice_migrates_once);

async fn opening_twice_migrates_once(db: &TestDb) {
    let first = Store::open(&db.url).await.unwrap();
    assert_eq!(first.backend(), db.backend());
    // A second store on the same database while the first is open, then a third after both
    // are closed: the migrations are already applied and are not applied again.
    let second = Store::open(&db.url).await.unwrap();
    first.close().await;
    second.close().await;
    let third = Store::open(&db.url).await.unwrap();
    third.close().await;

    let raw = db.raw().await;
    // (`success` is read in SQL: sqlx's `Any` driver decodes no SQLite booleans.)
    let applied: Vec<(i64,)> =
        sqlx::query_as("SELECT version FROM _sqlx_migrations WHERE success ORDER BY version")
            .fetch_all(&raw)
            .await
            .unwrap();
    // Every migration file, applied exactly once.
    let mut expected: Vec<(i64,)> =
        std::fs::read_dir(concat!(env!("CARGO_MANIFEST_DIR"), "/migrations"))
            .unwrap()
            .map(|e| {
                let name = e.unwrap().file_name().to_string_lossy().into_owned();
                (name.split('_').next().unwrap().parse().unwrap(),)
            })
            .collect();
    expected.sort();
    assert!(expected.len() >= 2, "{expected:?}");
    assert_eq!(applied, expected);
}

#[tokio::test]
async fn bad_urls_are_refused_with_the_url_named() {
    let dir = tempfile::tempdir().unwrap();
    let missing = format!("sqlite://{}", dir.path().join("absent.db").display());
    let no_dir = format!(
        "sqlite://{}?mode=rwc",
        dir.path().join("no/such/dir/gw.db").display()
    );
    for url in [
        "mysql://gw:pw@localhost/daofl",
        "not a url",
        "postgres://gw:hunter2@[::1/daofl",
        missing.as_str(),
        no_dir.as_str(),
    ] {
        match Store::open(url).await {
            Err(e @ DbError::Open { .. }) => {
                let message = e.to_string();
                assert!(!message.contains("hunter2"), "{message}");
                assert!(message.starts_with("cannot open database"), "{message}");
            }
            other => panic!("{url}: {other:?}"),
        }
    }
}

#[tokio::test]
async fn an_unreachable_server_fails_within_the_timeout() {
    let options = StoreOptions {
        connect_timeout: Duration::from_secs(2),
        ..StoreOptions::default()
    };
    // Nothing listens on a port just freed; 192.0.2.1 (TEST-NET-1) is never routed.
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    for (url, why) in [
        (
            format!("postgres://gw:hunter2@127.0.0.1:{port}/daofl"),
            "refused",
        ),
        ("postgres://gw:hunter2@192.0.2.1:5432/daofl".to_owned(), ""),
    ] {
        let start = Instant::now();
        let result = Store::open_with(&url, &options).await;
        let took = start.elapsed();
        match result {
            Err(e @ DbError::Unreachable { .. }) => {
                let message = e.to_string();
                assert!(message.contains("gw:***@"), "{message}");
                assert!(message.contains("within 2s"), "{message}");
                assert!(message.contains(why), "{message}");
                assert!(!message.contains("hunter2"), "{message}");
            }
            other => panic!("{url}: {other:?}"),
        }
        // The timeout, and one last attempt of at most 1 s.
        assert!(took < Duration::from_secs(5), "{url}: took {took:?}");
    }
}

#[tokio::test]
async fn an_in_memory_store_keeps_its_data_on_one_connection() {
    let store = Store::open("sqlite::memory:").await.unwrap();
    let receipt = crate::receipts::receipt(1, 1, 1);
    store.add_receipt(&receipt).await.unwrap();
    // Many calls, each on the pool's one connection: all see the same database.
    for _ in 0..5 {
        assert_eq!(
            store.pending_receipts(10).await.unwrap(),
            vec![receipt.clone()]
        );
    }
    // Two in-memory stores are two databases.
    let other = Store::open("sqlite::memory:").await.unwrap();
    assert!(other.pending_receipts(10).await.unwrap().is_empty());
}
