//! The content store, batch CARs and the index, with hostile input; publishing to a local
//! server that implements Kubo's `dag/import` with our CAR reader.

use contrib::{
    AnnotationRecord, Category, Labels, Outcome, ProposalQuality, ProposalRecord, RecordError,
    Risk, SignedRecord,
};
use fl_core::{ContentHash, MemberKey};

use super::*;

fn proposal(key: &MemberKey, id: &str, text_len: usize) -> ContributedRecord {
    SignedRecord::sign(
        ProposalRecord {
            contributor: key.address(),
            community: "ethereum".into(),
            proposal_id: id.into(),
            title: format!("Proposal {id}"),
            text: "a".repeat(text_len),
            created: None,
            licence: "CC0-1.0".into(),
            source: None,
        },
        key,
    )
    .unwrap()
    .into()
}

fn annotation(key: &MemberKey, item: &ContributedRecord, epoch: u64) -> ContributedRecord {
    SignedRecord::sign(
        AnnotationRecord {
            annotator: key.address(),
            item: item.cid(),
            epoch,
            labels: Labels {
                outcome: Outcome::Rejected,
                category: Category::Parameter,
                quality: ProposalQuality::new(4).unwrap(),
                risk: Risk::High,
            },
        },
        key,
    )
    .unwrap()
    .into()
}

#[test]
fn the_store_keeps_only_checked_records() {
    let dir = tempfile::tempdir().unwrap();
    let store = ContentStore::open(dir.path()).unwrap();
    let (alice, bob) = (MemberKey::generate(), MemberKey::generate());
    let p = proposal(&alice, "EIP-1", 100);
    let a = annotation(&bob, &p, 1);
    for r in [&p, &a] {
        assert_eq!(&store.put(&r.cid(), r.bytes()).unwrap(), r);
        assert_eq!(&store.get(&r.cid()).unwrap(), r);
    }
    let refused = |cid: &ContentHash, bytes: &[u8]| match store.put(cid, bytes) {
        Err(ContributeError::Record { source, .. }) => source,
        other => panic!("{other:?}"),
    };
    // Bytes that are not those of the CID.
    assert!(matches!(
        refused(&p.cid(), a.bytes()),
        RecordError::CidMismatch { .. }
    ));
    // Altered after signing (still canonical): the signature names someone else.
    let forged = String::from_utf8(p.bytes().to_vec())
        .unwrap()
        .replace("Proposal EIP-1", "Proposal EIP-2")
        .into_bytes();
    assert!(matches!(
        refused(&ContentHash::of(&forged), &forged),
        RecordError::BadSignature { .. }
    ));
    // Oversized, malformed.
    let huge = vec![b' '; contrib::record::MAX_PROPOSAL_RECORD_BYTES + 1];
    assert!(matches!(
        refused(&ContentHash::of(&huge), &huge),
        RecordError::TooLarge { .. }
    ));
    assert!(matches!(
        refused(&ContentHash::of(b"{not json"), b"{not json"),
        RecordError::Malformed(_)
    ));
    // Nothing stored was lost or changed.
    assert_eq!(store.get(&p.cid()).unwrap(), p);
    assert_eq!(store.get(&a.cid()).unwrap(), a);
    assert!(matches!(
        store.get(&ContentHash::of(&forged)),
        Err(ContributeError::MissingRecord { .. })
    ));
    // A file altered on disk is refused when read.
    let path = dir.path().join("records").join(p.cid().to_string());
    std::fs::write(&path, &forged).unwrap();
    assert!(matches!(
        store.get(&p.cid()),
        Err(ContributeError::Record {
            source: RecordError::CidMismatch { .. },
            ..
        })
    ));
}

fn registered(root: fl_db::B256, index: u64, records: u32) -> dao::RegisteredBatch {
    dao::RegisteredBatch {
        root,
        contributor: fl_core::Address::repeat_byte(0xC0),
        index,
        records,
        location: format!("ipfs://batch-{index}"),
    }
}

#[test]
fn batches_round_trip_as_cars_and_bad_ones_store_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let store = ContentStore::open(dir.path()).unwrap();
    let (alice, bob) = (MemberKey::generate(), MemberKey::generate());
    let p = proposal(&alice, "EIP-1", 10);
    let q = proposal(&alice, "EIP-2", 20);
    let records = vec![p.clone(), q.clone(), annotation(&bob, &p, 1)];
    let (batch, car_bytes) = export_batch(&records).unwrap();
    let on_chain = registered(batch.root(), 0, 3);
    let mut verified = verify_batch(&on_chain, &car_bytes).unwrap();
    let mut expected = records.clone();
    expected.sort_by_key(|r| r.cid());
    verified.sort_by_key(|r| r.cid());
    assert_eq!(verified, expected);
    let car = car::read(&car_bytes, &CarLimits::default()).unwrap();
    assert_eq!(car.roots.len(), 3);

    // Another root on chain, another count: refused.
    let (other, _) = export_batch(&records[..2]).unwrap();
    assert!(matches!(
        verify_batch(&registered(other.root(), 0, 3), &car_bytes),
        Err(ContributeError::RootMismatch { .. })
    ));
    assert!(matches!(
        verify_batch(&registered(batch.root(), 0, 4), &car_bytes),
        Err(ContributeError::CountMismatch { found: 3, .. })
    ));

    // A CAR with one forged (but correctly addressed) record stores nothing of it.
    let forged = String::from_utf8(q.bytes().to_vec())
        .unwrap()
        .replace("Proposal EIP-2", "Proposal EIP-9")
        .into_bytes();
    let blocks = [
        (p.cid().to_cid(), p.bytes().to_vec()),
        (ContentHash::of(&forged).to_cid(), forged),
    ];
    let bad = car::write(&[], blocks.iter().map(|(c, b)| (*c, b.as_slice())));
    assert!(matches!(
        store.import_car(&bad),
        Err(ContributeError::Record {
            source: RecordError::BadSignature { .. },
            ..
        })
    ));
    assert_eq!(
        store.raw(&p.cid()).unwrap(),
        None,
        "nothing of a bad CAR is stored"
    );
    // The good one imports, byte for byte.
    assert_eq!(store.import_car(&car_bytes).unwrap().len(), 3);
    for r in &records {
        assert_eq!(store.raw(&r.cid()).unwrap().as_deref(), Some(r.bytes()));
    }
}

#[tokio::test]
async fn indexed_batches_read_back() {
    let dir = tempfile::tempdir().unwrap();
    let url = format!(
        "sqlite://{}?mode=rwc",
        dir.path().join("index.db").display()
    );
    let db = fl_db::Store::open(&url).await.unwrap();
    let (alice, bob) = (MemberKey::generate(), MemberKey::generate());
    let p = proposal(&alice, "EIP-1", 10);
    let a = annotation(&bob, &p, 7);
    let (batch, _) = export_batch(&[p.clone(), a.clone()]).unwrap();
    let on_chain = registered(batch.root(), 0, 2);
    index_batch(&db, &on_chain, &[p.clone(), a.clone()])
        .await
        .unwrap();
    let rows = db.batch_records(&batch.root()).await.unwrap();
    assert_eq!(rows.len(), 2);
    assert!(rows.contains(&p.index_row()) && rows.contains(&a.index_row()));
    let item = fl_db::B256::from(*p.cid().as_bytes());
    assert_eq!(
        db.annotations_of_item(7, &item).await.unwrap(),
        vec![a.index_row()]
    );
    assert!(matches!(
        index_batch(&db, &on_chain, &[p]).await,
        Err(ContributeError::Db(fl_db::DbError::Duplicate { .. }))
    ));
}

/// Kubo's `dag/import` as a test server: the multipart body's file is read with our CAR reader
/// (every block checked), its roots answered as Kubo answers them; a bad CAR is a 500 with
/// Kubo's error JSON. (No Kubo installs from the package registries here: Debian has no
/// `kubo`/`ipfs` package, npm's `kubo` downloads its binary from GitHub at install time.)
#[cfg(feature = "serve")]
#[tokio::test]
async fn cars_publish_through_the_kubo_rpc_api() {
    use axum::http::{HeaderMap, StatusCode};
    async fn dag_import(headers: HeaderMap, body: axum::body::Bytes) -> (StatusCode, String) {
        let ct = headers["content-type"].to_str().unwrap();
        let boundary = ct.split("boundary=").nth(1).unwrap();
        let start = body.windows(4).position(|w| w == b"\r\n\r\n").unwrap() + 4;
        let end_marker = format!("\r\n--{boundary}--");
        let end = body
            .windows(end_marker.len())
            .rposition(|w| w == end_marker.as_bytes())
            .unwrap();
        match car::read(&body[start..end], &CarLimits::default()) {
            Ok(car) => (
                StatusCode::OK,
                car.roots
                    .iter()
                    .map(|r| {
                        format!("{{\"Root\":{{\"Cid\":{{\"/\":\"{r}\"}},\"PinErrorMsg\":\"\"}}}}\n")
                    })
                    .collect(),
            ),
            Err(e) => (
                StatusCode::INTERNAL_SERVER_ERROR,
                serde_json::json!({"Message": e.to_string(), "Code": 0, "Type": "error"})
                    .to_string(),
            ),
        }
    }
    let app = axum::Router::new().route("/api/v0/dag/import", axum::routing::post(dag_import));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });

    let alice = MemberKey::generate();
    let records = vec![
        proposal(&alice, "EIP-1", 10),
        proposal(&alice, "EIP-2", 5_000),
    ];
    let (_, car_bytes) = export_batch(&records).unwrap();
    let kubo = Kubo::new(&format!("http://{addr}/"));
    let mut roots = kubo.dag_import(&car_bytes).await.unwrap();
    roots.sort();
    let mut expected: Vec<_> = records.iter().map(|r| r.cid().to_cid()).collect();
    expected.sort();
    assert_eq!(roots, expected);

    let mut tampered = car_bytes.clone();
    *tampered.last_mut().unwrap() ^= 1;
    match kubo.dag_import(&tampered).await {
        Err(ContributeError::Kubo { reason, .. }) => {
            assert!(reason.contains("does not match its bytes"), "{reason}")
        }
        other => panic!("{other:?}"),
    }
}
