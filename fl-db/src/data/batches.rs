//! Registered batches and their records, indexed together: a batch is indexed once, with all
//! of its records, or not at all.

use alloy_primitives::{Address, B256};
use sqlx::any::AnyRow;

use super::{AnnotationIndex, LabelClasses};
use crate::columns::{self, Columns};
use crate::{DbError, Store};

const BATCHES: &str = "data_batches";
const RECORDS: &str = "data_records";

/// A batch as the registry's `BatchRegistered` event gives it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BatchRecord {
    /// Merkle root of its records' digests (`dao::data::RecordBatch::root`).
    pub root: B256,
    /// Its number on chain, in registration order.
    pub index: u64,
    /// Who registered it.
    pub contributor: Address,
    /// Records it announced.
    pub records: u64,
    /// Where its content lives (an `ipfs://` CAR, a content-store URL).
    pub location: String,
    /// The block that included the registration, when known.
    pub block: Option<u64>,
    /// The registering transaction, when known.
    pub tx: Option<B256>,
}

/// The kind of a record.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum RecordKind {
    /// A proposal record.
    Proposal,
    /// An annotation record.
    Annotation(AnnotationIndex),
}

/// A record of a registered batch, as indexed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DataRecord {
    /// SHA-256 digest of the record's bytes (its CIDv1 raw).
    pub cid: B256,
    /// Its contributor (an annotation's annotator), who signed it.
    pub contributor: Address,
    /// Length of its bytes.
    pub bytes_len: u64,
    /// What it is.
    pub kind: RecordKind,
}

macro_rules! batch_columns {
    () => {
        "root, batch_index, contributor, records, location, block, tx"
    };
}

macro_rules! record_columns {
    () => {
        "cid, kind, contributor, bytes_len, item, epoch, outcome, category, quality, risk"
    };
}

impl BatchRecord {
    fn from_row(row: &AnyRow) -> Result<Self, DbError> {
        let c = Columns::new(row, BATCHES);
        Ok(BatchRecord {
            root: c.hash("root")?,
            index: c.u64("batch_index")?,
            contributor: c.address("contributor")?,
            records: c.u64("records")?,
            location: c.text("location")?,
            block: c.optional_u64("block")?,
            tx: c.optional_hash("tx")?,
        })
    }
}

impl DataRecord {
    fn from_row(row: &AnyRow) -> Result<Self, DbError> {
        let c = Columns::new(row, RECORDS);
        let kind = match c.text("kind")?.as_str() {
            "proposal" => RecordKind::Proposal,
            "annotation" => RecordKind::Annotation(AnnotationIndex {
                item: c.hash("item")?,
                epoch: c.u64("epoch")?,
                labels: LabelClasses {
                    outcome: c.u8("outcome")?,
                    category: c.u8("category")?,
                    quality: c.u8("quality")?,
                    risk: c.u8("risk")?,
                },
            }),
            other => {
                return Err(DbError::Corrupt {
                    table: RECORDS,
                    column: "kind",
                    value: other.to_owned(),
                });
            }
        };
        Ok(DataRecord {
            cid: c.hash("cid")?,
            contributor: c.address("contributor")?,
            bytes_len: c.u64("bytes_len")?,
            kind,
        })
    }
}

impl Store {
    /// Indexes a registered batch with its records, all or nothing. A batch whose root or index
    /// is stored already, or a record stored already (in this batch or another), is refused
    /// with [`DbError::Duplicate`] and nothing of the call is written.
    pub async fn index_batch(
        &self,
        batch: &BatchRecord,
        records: &[DataRecord],
    ) -> Result<(), DbError> {
        const OP: &str = "indexing a batch";
        let index = columns::int(BATCHES, "batch_index", batch.index)?;
        let count = columns::int(BATCHES, "records", batch.records)?;
        let block = batch
            .block
            .map(|b| columns::int(BATCHES, "block", b))
            .transpose()?;
        let root = columns::hash(&batch.root);
        let mut tx = self.pool.begin().await.map_err(DbError::query(OP))?;
        sqlx::query(
            "INSERT INTO data_batches (root, batch_index, contributor, records, location, block, tx) \
             VALUES ($1, $2, $3, $4, $5, $6, $7)",
        )
        .bind(root.as_str())
        .bind(index)
        .bind(columns::address(&batch.contributor))
        .bind(count)
        .bind(batch.location.as_str())
        .bind(block)
        .bind(batch.tx.as_ref().map(columns::hash))
        .execute(&mut *tx)
        .await
        .map_err(DbError::insert(OP, BATCHES, || {
            format!("batch {root} (index {})", batch.index)
        }))?;
        for record in records {
            let bytes_len = columns::int(RECORDS, "bytes_len", record.bytes_len)?;
            let (kind, item, epoch, labels) = match &record.kind {
                RecordKind::Proposal => ("proposal", None, None, None),
                RecordKind::Annotation(a) => (
                    "annotation",
                    Some(columns::hash(&a.item)),
                    Some(columns::int(RECORDS, "epoch", a.epoch)?),
                    Some(a.labels),
                ),
            };
            let class = |f: fn(&LabelClasses) -> u8| labels.as_ref().map(|l| i64::from(f(l)));
            sqlx::query(
                "INSERT INTO data_records (cid, kind, contributor, batch_root, bytes_len, item, \
                 epoch, outcome, category, quality, risk) \
                 VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11)",
            )
            .bind(columns::hash(&record.cid))
            .bind(kind)
            .bind(columns::address(&record.contributor))
            .bind(root.as_str())
            .bind(bytes_len)
            .bind(item)
            .bind(epoch)
            .bind(class(|l| l.outcome))
            .bind(class(|l| l.category))
            .bind(class(|l| l.quality))
            .bind(class(|l| l.risk))
            .execute(&mut *tx)
            .await
            .map_err(DbError::insert(OP, RECORDS, || {
                format!("record {:#x}", record.cid)
            }))?;
        }
        tx.commit().await.map_err(DbError::query(OP))
    }

    /// The batch registered under `root`, if indexed.
    pub async fn batch(&self, root: &B256) -> Result<Option<BatchRecord>, DbError> {
        sqlx::query(concat!(
            "SELECT ",
            batch_columns!(),
            " FROM data_batches WHERE root = $1"
        ))
        .bind(columns::hash(root))
        .fetch_optional(&self.pool)
        .await
        .map_err(DbError::query("reading a batch"))?
        .map(|row| BatchRecord::from_row(&row))
        .transpose()
    }

    /// Every indexed batch, by index on chain.
    pub async fn batches(&self) -> Result<Vec<BatchRecord>, DbError> {
        sqlx::query(concat!(
            "SELECT ",
            batch_columns!(),
            " FROM data_batches ORDER BY batch_index"
        ))
        .fetch_all(&self.pool)
        .await
        .map_err(DbError::query("reading batches"))?
        .iter()
        .map(BatchRecord::from_row)
        .collect()
    }

    /// The records of the batch `root`, by digest (empty for an unknown batch).
    pub async fn batch_records(&self, root: &B256) -> Result<Vec<DataRecord>, DbError> {
        sqlx::query(concat!(
            "SELECT ",
            record_columns!(),
            " FROM data_records WHERE batch_root = $1 ORDER BY cid"
        ))
        .bind(columns::hash(root))
        .fetch_all(&self.pool)
        .await
        .map_err(DbError::query("reading a batch's records"))?
        .iter()
        .map(DataRecord::from_row)
        .collect()
    }

    /// The record `cid` and the batch it was registered in, if indexed.
    pub async fn data_record(&self, cid: &B256) -> Result<Option<(DataRecord, B256)>, DbError> {
        let Some(row) = sqlx::query(concat!(
            "SELECT ",
            record_columns!(),
            ", batch_root FROM data_records WHERE cid = $1"
        ))
        .bind(columns::hash(cid))
        .fetch_optional(&self.pool)
        .await
        .map_err(DbError::query("reading a record"))?
        else {
            return Ok(None);
        };
        let root = Columns::new(&row, RECORDS).hash("batch_root")?;
        Ok(Some((DataRecord::from_row(&row)?, root)))
    }

    /// The annotation records of `epoch` for `item`, by digest.
    pub async fn annotations_of_item(
        &self,
        epoch: u64,
        item: &B256,
    ) -> Result<Vec<DataRecord>, DbError> {
        sqlx::query(concat!(
            "SELECT ",
            record_columns!(),
            " FROM data_records WHERE kind = 'annotation' AND epoch = $1 AND item = $2 \
             ORDER BY cid"
        ))
        .bind(columns::int(RECORDS, "epoch", epoch)?)
        .bind(columns::hash(item))
        .fetch_all(&self.pool)
        .await
        .map_err(DbError::query("reading an item's annotations"))?
        .iter()
        .map(DataRecord::from_row)
        .collect()
    }
}
