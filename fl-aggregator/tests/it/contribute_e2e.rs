//! The data index rebuilt from chain plus content store, on the embedded EVM and on anvil: two
//! staked annotators register two batches of signed records (proposals, annotations) whose CARs
//! are in the content store; a third batch is registered whose stored CAR does not hash to its
//! root. A fresh content store holding only the batches' CARs and fresh SQLite and PostgreSQL
//! databases are rebuilt from the `BatchRegistered` events: the good batches' rows equal the
//! index the contributors wrote as they registered, every record's bytes read back identical,
//! and the bad batch is refused by name with nothing of it indexed.

use contrib::{
    AnnotationRecord, Category, Labels, Outcome, ProposalQuality, ProposalRecord, Risk,
    SignedRecord,
};
use dao::{Role, tokens};
use fl_client::contribute::{
    ContentStore, ContributeError, ContributedRecord, export_batch, index_batch, rebuild_index,
};
use fl_core::MemberKey;
use fl_db::testing::TestDb;
use fl_db::{Backend as DbBackend, Store};

use crate::chain::Chain;

fn proposal(key: &MemberKey, id: &str) -> ContributedRecord {
    SignedRecord::sign(
        ProposalRecord {
            contributor: key.address(),
            community: "ethereum".into(),
            proposal_id: id.into(),
            title: format!("Proposal {id}"),
            text: format!("The text of {id}."),
            created: Some("2024-01-01".into()),
            licence: "CC0-1.0".into(),
            source: None,
        },
        key,
    )
    .unwrap()
    .into()
}

fn annotation(key: &MemberKey, item: &ContributedRecord, outcome: Outcome) -> ContributedRecord {
    SignedRecord::sign(
        AnnotationRecord {
            annotator: key.address(),
            item: item.cid(),
            epoch: 1,
            labels: Labels {
                outcome,
                category: Category::Process,
                quality: ProposalQuality::new(3).unwrap(),
                risk: Risk::Low,
            },
        },
        key,
    )
    .unwrap()
    .into()
}

/// Every indexed batch and its records.
async fn dump(db: &Store) -> Vec<(fl_db::data::BatchRecord, Vec<fl_db::data::DataRecord>)> {
    let mut out = Vec::new();
    for batch in db.batches().await.unwrap() {
        let records = db.batch_records(&batch.root).await.unwrap();
        out.push((batch, records));
    }
    out
}

async fn rebuilt_from_chain_and_content(embedded: bool) {
    let dir = tempfile::tempdir().unwrap();
    // Keys: 0 deployer, 1 guardian, 2 slasher, 3 team, 4 investors, 5 and 6 annotators.
    let Some((mut chain, keys)) = Chain::start(embedded, dir.path().join("chain"), 7) else {
        return;
    };
    let (_, config) = chain.deploy_dao(&keys, "").await;
    let team = chain.dao(&keys[3]);
    let min = tokens(config.staking.annotator_min_tokens);
    let (alice, bob) = (&keys[5], &keys[6]);
    for k in [alice, bob] {
        chain.fund_and_stake(&team, k, Role::Annotator, min).await;
    }

    // Two good batches, registered; each contributor indexes its batch as it registers it.
    let content = ContentStore::open(dir.path().join("content")).unwrap();
    let original_db = TestDb::new(DbBackend::Sqlite).await;
    let original = Store::open(&original_db.url).await.unwrap();
    let p1 = proposal(alice, "EIP-1");
    let p2 = proposal(alice, "EIP-2");
    let first = vec![p1.clone(), p2.clone()];
    let second = vec![
        annotation(bob, &p1, Outcome::Accepted),
        annotation(bob, &p2, Outcome::Rejected),
        proposal(bob, "BIP-9"),
    ];
    for (key, records, location) in [
        (alice, &first, "ipfs://alice-batch"),
        (bob, &second, "ipfs://bob-batch"),
    ] {
        let (batch, car) = export_batch(records).unwrap();
        for r in records {
            content.put(&r.cid(), r.bytes()).unwrap();
        }
        content.put_batch_car(&batch.root(), &car).unwrap();
        chain
            .dao(key)
            .register_batch(&batch, location)
            .await
            .unwrap();
        let registered = chain.dao(key).registered_batches().await.unwrap();
        let on_chain = registered.iter().find(|b| b.root == batch.root()).unwrap();
        index_batch(&original, on_chain, records).await.unwrap();
    }
    // A third batch registered whose stored CAR holds other records than its root names.
    let (bad_batch, _) = export_batch(&[proposal(alice, "EIP-3")]).unwrap();
    let (_, other_car) = export_batch(&[proposal(alice, "EIP-4")]).unwrap();
    content
        .put_batch_car(&bad_batch.root(), &other_car)
        .unwrap();
    chain
        .dao(alice)
        .register_batch(&bad_batch, "ipfs://bad")
        .await
        .unwrap();

    // A fresh content store with only the batches' CARs, fresh databases of both kinds.
    let fresh = ContentStore::open(dir.path().join("fresh")).unwrap();
    for batch in [&first, &second] {
        let (b, _) = export_batch(batch).unwrap();
        fresh
            .put_batch_car(&b.root(), &content.batch_car(&b.root()).unwrap().unwrap())
            .unwrap();
    }
    fresh.put_batch_car(&bad_batch.root(), &other_car).unwrap();
    let reader = chain.dao(&keys[0]);
    for backend in [DbBackend::Sqlite, DbBackend::Postgres] {
        let db = TestDb::new(backend).await;
        let store = Store::open(&db.url).await.unwrap();
        let report = rebuild_index(&reader, &fresh, &store).await.unwrap();
        assert_eq!(report.indexed.len(), 2, "{backend:?}");
        assert_eq!(report.refused.len(), 1);
        assert!(
            matches!(
                &report.refused[0],
                (root, ContributeError::RootMismatch { .. }) if *root == bad_batch.root()
            ),
            "{:?}",
            report.refused
        );
        assert_eq!(dump(&store).await, dump(&original).await, "{backend:?}");
        assert_eq!(store.batch(&bad_batch.root()).await.unwrap(), None);
        // Rebuilding again changes nothing.
        let again = rebuild_index(&reader, &fresh, &store).await.unwrap();
        assert_eq!(again.already.len(), 2);
        assert_eq!(dump(&store).await, dump(&original).await);
    }
    // Every record's bytes, read back from the rebuilt content store, byte for byte.
    for r in first.iter().chain(&second) {
        assert_eq!(fresh.raw(&r.cid()).unwrap().as_deref(), Some(r.bytes()));
        assert_eq!(&fresh.get(&r.cid()).unwrap(), r);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_index_is_rebuilt_from_chain_and_content_on_the_embedded_evm() {
    rebuilt_from_chain_and_content(true).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_index_is_rebuilt_from_chain_and_content_on_anvil() {
    rebuilt_from_chain_and_content(false).await;
}
