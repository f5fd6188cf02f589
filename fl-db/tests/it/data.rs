//! The data-contribution index: batches with their records, assignments, commit-reveal,
//! consensus and quality; duplicates refused with nothing lost.

use fl_db::data::{
    AnnotationIndex, BatchRecord, CommitmentRecord, ConsensusRecord, DataRecord, LabelClasses,
    LabelField, QualityRecord, RecordKind,
};
use fl_db::{Address, B256, DbError, Store};

use crate::support::{TestDb, on_both};

on_both!(
    batches_index_with_their_records_once,
    assignments_and_commit_reveal,
    consensus_and_quality_per_epoch,
);

fn d(i: u8) -> B256 {
    B256::repeat_byte(i)
}

fn batch(root: u8, index: u64, records: u64) -> BatchRecord {
    BatchRecord {
        root: d(root),
        index,
        contributor: Address::repeat_byte(0xC0),
        records,
        location: format!("ipfs://batch-{index}.car"),
        block: (index == 0).then_some(17),
        tx: (index == 0).then_some(d(0xEE)),
    }
}

fn proposal(cid: u8) -> DataRecord {
    DataRecord {
        cid: d(cid),
        contributor: Address::repeat_byte(0xC0),
        bytes_len: 1_000 + u64::from(cid),
        kind: RecordKind::Proposal,
    }
}

fn annotation(cid: u8, annotator: u8, item: u8, epoch: u64) -> DataRecord {
    DataRecord {
        cid: d(cid),
        contributor: Address::repeat_byte(annotator),
        bytes_len: 400,
        kind: RecordKind::Annotation(AnnotationIndex {
            item: d(item),
            epoch,
            labels: LabelClasses {
                outcome: 1,
                category: 4,
                quality: annotator % 5,
                risk: 2,
            },
        }),
    }
}

async fn batches_index_with_their_records_once(db: &TestDb) {
    let store = Store::open(&db.url).await.unwrap();
    let first = batch(0xB0, 0, 2);
    let first_records = vec![proposal(2), proposal(1)];
    store.index_batch(&first, &first_records).await.unwrap();
    let second = batch(0xB1, 1, 3);
    let second_records = vec![
        annotation(0x21, 0xA1, 1, 5),
        annotation(0x22, 0xA2, 1, 5),
        annotation(0x23, 0xA3, 2, 5),
    ];
    store.index_batch(&second, &second_records).await.unwrap();

    assert_eq!(
        store.batches().await.unwrap(),
        vec![first.clone(), second.clone()]
    );
    assert_eq!(store.batch(&first.root).await.unwrap(), Some(first.clone()));
    assert_eq!(store.batch(&d(9)).await.unwrap(), None);
    assert_eq!(
        store.batch_records(&first.root).await.unwrap(),
        vec![proposal(1), proposal(2)],
        "by digest"
    );
    assert_eq!(
        store.batch_records(&second.root).await.unwrap(),
        second_records
    );
    assert_eq!(
        store.data_record(&d(0x22)).await.unwrap(),
        Some((annotation(0x22, 0xA2, 1, 5), second.root))
    );
    assert_eq!(
        store.annotations_of_item(5, &d(1)).await.unwrap(),
        vec![annotation(0x21, 0xA1, 1, 5), annotation(0x22, 0xA2, 1, 5)]
    );
    assert!(
        store
            .annotations_of_item(6, &d(1))
            .await
            .unwrap()
            .is_empty()
    );

    // The same root again: refused, nothing of the call written.
    let again = store.index_batch(&first, &[proposal(3)]).await;
    assert!(
        matches!(
            &again,
            Err(DbError::Duplicate {
                table: "data_batches",
                ..
            })
        ),
        "{again:?}"
    );
    // A new batch holding a record already indexed: refused as a whole.
    let third = batch(0xB2, 2, 2);
    let dup = store.index_batch(&third, &[proposal(4), proposal(1)]).await;
    match &dup {
        Err(DbError::Duplicate { table, key }) => {
            assert_eq!(*table, "data_records");
            assert!(key.contains(&format!("{:#x}", d(1))), "{key}");
        }
        other => panic!("{other:?}"),
    }
    assert_eq!(store.batch(&third.root).await.unwrap(), None);
    assert_eq!(store.data_record(&d(4)).await.unwrap(), None);
    assert_eq!(store.batches().await.unwrap().len(), 2);
    assert_eq!(store.batch_records(&first.root).await.unwrap().len(), 2);
}

async fn assignments_and_commit_reveal(db: &TestDb) {
    let store = Store::open(&db.url).await.unwrap();
    let (a, b) = (Address::repeat_byte(0xA1), Address::repeat_byte(0xA2));
    store
        .add_assignments(3, &[(d(2), a), (d(1), a), (d(1), b)])
        .await
        .unwrap();
    assert_eq!(store.assigned_items(3, &a).await.unwrap(), vec![d(1), d(2)]);
    assert_eq!(store.assigned_items(3, &b).await.unwrap(), vec![d(1)]);
    assert!(store.assigned_items(4, &a).await.unwrap().is_empty());
    assert_eq!(store.item_annotators(3, &d(1)).await.unwrap(), vec![a, b]);
    // A pair already assigned: the whole call refused.
    let dup = store.add_assignments(3, &[(d(3), b), (d(2), a)]).await;
    assert!(matches!(
        dup,
        Err(DbError::Duplicate {
            table: "data_assignments",
            ..
        })
    ));
    assert_eq!(store.assigned_items(3, &b).await.unwrap(), vec![d(1)]);

    let commit = |item: u8, annotator: Address, c: u8| CommitmentRecord {
        epoch: 3,
        item: d(item),
        annotator,
        commitment: d(c),
        revealed: None,
    };
    store.add_commitment(&commit(1, a, 0x51)).await.unwrap();
    store.add_commitment(&commit(1, b, 0x52)).await.unwrap();
    store.add_commitment(&commit(2, a, 0x53)).await.unwrap();
    // A second commitment to the same slot is refused, the first kept.
    assert!(matches!(
        store.add_commitment(&commit(1, a, 0x99)).await,
        Err(DbError::Duplicate {
            table: "data_commitments",
            ..
        })
    ));
    assert_eq!(store.unrevealed_commitments(3).await.unwrap().len(), 3);

    store.record_reveal(3, &d(1), &a, &d(0x61)).await.unwrap();
    // Revealing twice, or without a commitment, is refused.
    assert!(matches!(
        store.record_reveal(3, &d(1), &a, &d(0x62)).await,
        Err(DbError::NotFound {
            table: "data_commitments",
            ..
        })
    ));
    assert!(matches!(
        store.record_reveal(3, &d(7), &a, &d(0x62)).await,
        Err(DbError::NotFound { .. })
    ));
    assert_eq!(
        store.unrevealed_commitments(3).await.unwrap(),
        vec![commit(1, b, 0x52), commit(2, a, 0x53)]
    );
    let mut revealed = commit(1, a, 0x51);
    revealed.revealed = Some(d(0x61));
    assert_eq!(
        store.commitments(3).await.unwrap(),
        vec![revealed, commit(1, b, 0x52), commit(2, a, 0x53)]
    );
}

async fn consensus_and_quality_per_epoch(db: &TestDb) {
    let store = Store::open(&db.url).await.unwrap();
    let label = |field, item: u8, label: Option<u8>, confidence| ConsensusRecord {
        epoch: 4,
        field,
        item: d(item),
        label,
        confidence,
    };
    let labels = vec![
        label(LabelField::Risk, 1, Some(2), 0.75),
        label(LabelField::Outcome, 2, None, 0.0),
        label(LabelField::Outcome, 1, Some(1), 0.987_654_321_012_345_6),
    ];
    store.add_consensus(&labels).await.unwrap();
    assert_eq!(
        store.consensus(4).await.unwrap(),
        vec![labels[2].clone(), labels[1].clone(), labels[0].clone()]
    );
    assert!(store.consensus(5).await.unwrap().is_empty());
    assert!(matches!(
        store
            .add_consensus(&[
                label(LabelField::Quality, 1, Some(3), 0.5),
                labels[0].clone()
            ])
            .await,
        Err(DbError::Duplicate {
            table: "data_consensus",
            ..
        })
    ));
    assert!(matches!(
        store
            .add_consensus(&[label(LabelField::Quality, 1, Some(3), f64::NAN)])
            .await,
        Err(DbError::Unstorable {
            column: "confidence",
            ..
        })
    ));
    assert_eq!(store.consensus(4).await.unwrap().len(), 3);

    let q = |annotator: u8, score, items| QualityRecord {
        epoch: 4,
        annotator: Address::repeat_byte(annotator),
        score,
        items,
    };
    store
        .add_annotator_quality(&[q(1, 0.9, 30), q(2, 0.1, 28), q(3, 0.55, 31)])
        .await
        .unwrap();
    assert_eq!(
        store.annotator_quality(4).await.unwrap(),
        vec![q(2, 0.1, 28), q(3, 0.55, 31), q(1, 0.9, 30)],
        "lowest first"
    );
    assert!(matches!(
        store.add_annotator_quality(&[q(1, 0.2, 1)]).await,
        Err(DbError::Duplicate {
            table: "data_annotator_quality",
            ..
        })
    ));
}
