//! Per-epoch annotation state: assignments, commitments and reveals, consensus labels and
//! annotator quality.

use alloy_primitives::{Address, B256};
use sqlx::any::AnyRow;

use super::{LabelField, slot_key};
use crate::columns::{self, Columns};
use crate::{DbError, Store};

const ASSIGNMENTS: &str = "data_assignments";
const COMMITMENTS: &str = "data_commitments";
const CONSENSUS: &str = "data_consensus";
const QUALITY: &str = "data_annotator_quality";

/// An annotator's commitment to its annotation of an item, and the record it revealed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CommitmentRecord {
    /// The epoch.
    pub epoch: u64,
    /// The item (proposal record digest).
    pub item: B256,
    /// The annotator.
    pub annotator: Address,
    /// The commitment (`contrib::Commitment`).
    pub commitment: B256,
    /// The annotation record it was revealed with; `None` until revealed.
    pub revealed: Option<B256>,
}

/// The consensus label of one field of one item in an epoch.
#[derive(Debug, Clone, PartialEq)]
pub struct ConsensusRecord {
    /// The epoch.
    pub epoch: u64,
    /// The question.
    pub field: LabelField,
    /// The item.
    pub item: B256,
    /// The consensus class; `None` when nobody answered.
    pub label: Option<u8>,
    /// Its posterior probability (a finite number).
    pub confidence: f64,
}

/// An annotator's quality in an epoch.
#[derive(Debug, Clone, PartialEq)]
pub struct QualityRecord {
    /// The epoch.
    pub epoch: u64,
    /// The annotator.
    pub annotator: Address,
    /// Its quality score (a finite number).
    pub score: f64,
    /// Items it answered.
    pub items: u64,
}

impl CommitmentRecord {
    fn from_row(row: &AnyRow) -> Result<Self, DbError> {
        let c = Columns::new(row, COMMITMENTS);
        Ok(CommitmentRecord {
            epoch: c.u64("epoch")?,
            item: c.hash("item")?,
            annotator: c.address("annotator")?,
            commitment: c.hash("commitment")?,
            revealed: c.optional_hash("revealed_cid")?,
        })
    }
}

impl Store {
    /// Records that each `(item, annotator)` pair is assigned in `epoch`, all or nothing; a pair
    /// stored already is refused with [`DbError::Duplicate`].
    pub async fn add_assignments(
        &self,
        epoch: u64,
        pairs: &[(B256, Address)],
    ) -> Result<(), DbError> {
        const OP: &str = "adding assignments";
        let e = columns::int(ASSIGNMENTS, "epoch", epoch)?;
        let mut tx = self.pool.begin().await.map_err(DbError::query(OP))?;
        for (item, annotator) in pairs {
            sqlx::query(
                "INSERT INTO data_assignments (epoch, item, annotator) VALUES ($1, $2, $3)",
            )
            .bind(e)
            .bind(columns::hash(item))
            .bind(columns::address(annotator))
            .execute(&mut *tx)
            .await
            .map_err(DbError::insert(OP, ASSIGNMENTS, || {
                slot_key(epoch, item, annotator)
            }))?;
        }
        tx.commit().await.map_err(DbError::query(OP))
    }

    /// The items assigned to `annotator` in `epoch`, by digest.
    pub async fn assigned_items(
        &self,
        epoch: u64,
        annotator: &Address,
    ) -> Result<Vec<B256>, DbError> {
        let rows = sqlx::query(
            "SELECT item FROM data_assignments WHERE epoch = $1 AND annotator = $2 ORDER BY item",
        )
        .bind(columns::int(ASSIGNMENTS, "epoch", epoch)?)
        .bind(columns::address(annotator))
        .fetch_all(&self.pool)
        .await
        .map_err(DbError::query("reading assigned items"))?;
        rows.iter()
            .map(|r| Columns::new(r, ASSIGNMENTS).hash("item"))
            .collect()
    }

    /// The annotators of `item` in `epoch`, by address.
    pub async fn item_annotators(&self, epoch: u64, item: &B256) -> Result<Vec<Address>, DbError> {
        let rows = sqlx::query(
            "SELECT annotator FROM data_assignments WHERE epoch = $1 AND item = $2 \
             ORDER BY annotator",
        )
        .bind(columns::int(ASSIGNMENTS, "epoch", epoch)?)
        .bind(columns::hash(item))
        .fetch_all(&self.pool)
        .await
        .map_err(DbError::query("reading an item's annotators"))?;
        rows.iter()
            .map(|r| Columns::new(r, ASSIGNMENTS).address("annotator"))
            .collect()
    }

    /// Stores a commitment (its `revealed` is ignored: a new commitment is unrevealed). A
    /// second commitment of the same annotator to the same item in the epoch is refused with
    /// [`DbError::Duplicate`] and the first kept.
    pub async fn add_commitment(&self, commitment: &CommitmentRecord) -> Result<(), DbError> {
        const OP: &str = "adding a commitment";
        let c = commitment;
        let mut tx = self.pool.begin().await.map_err(DbError::query(OP))?;
        sqlx::query(
            "INSERT INTO data_commitments (epoch, item, annotator, commitment) \
             VALUES ($1, $2, $3, $4)",
        )
        .bind(columns::int(COMMITMENTS, "epoch", c.epoch)?)
        .bind(columns::hash(&c.item))
        .bind(columns::address(&c.annotator))
        .bind(columns::hash(&c.commitment))
        .execute(&mut *tx)
        .await
        .map_err(DbError::insert(OP, COMMITMENTS, || {
            slot_key(c.epoch, &c.item, &c.annotator)
        }))?;
        tx.commit().await.map_err(DbError::query(OP))
    }

    /// Records that the commitment of `annotator` to `item` in `epoch` was revealed with the
    /// annotation record `record` (the caller checked the reveal against the commitment).
    /// [`DbError::NotFound`] when there is no such commitment or it is revealed already.
    pub async fn record_reveal(
        &self,
        epoch: u64,
        item: &B256,
        annotator: &Address,
        record: &B256,
    ) -> Result<(), DbError> {
        const OP: &str = "recording a reveal";
        let mut tx = self.pool.begin().await.map_err(DbError::query(OP))?;
        let done = sqlx::query(
            "UPDATE data_commitments SET revealed_cid = $1 \
             WHERE epoch = $2 AND item = $3 AND annotator = $4 AND revealed_cid IS NULL",
        )
        .bind(columns::hash(record))
        .bind(columns::int(COMMITMENTS, "epoch", epoch)?)
        .bind(columns::hash(item))
        .bind(columns::address(annotator))
        .execute(&mut *tx)
        .await
        .map_err(DbError::query(OP))?;
        if done.rows_affected() != 1 {
            return Err(DbError::NotFound {
                table: COMMITMENTS,
                key: format!(
                    "unrevealed commitment of {}",
                    slot_key(epoch, item, annotator)
                ),
            });
        }
        tx.commit().await.map_err(DbError::query(OP))
    }

    /// The commitments of `epoch`, by item then annotator.
    pub async fn commitments(&self, epoch: u64) -> Result<Vec<CommitmentRecord>, DbError> {
        self.commitments_where(epoch, "").await
    }

    /// The commitments of `epoch` not revealed yet, by item then annotator.
    pub async fn unrevealed_commitments(
        &self,
        epoch: u64,
    ) -> Result<Vec<CommitmentRecord>, DbError> {
        self.commitments_where(epoch, " AND revealed_cid IS NULL")
            .await
    }

    async fn commitments_where(
        &self,
        epoch: u64,
        condition: &'static str,
    ) -> Result<Vec<CommitmentRecord>, DbError> {
        let sql = format!(
            "SELECT epoch, item, annotator, commitment, revealed_cid FROM data_commitments \
             WHERE epoch = $1{condition} ORDER BY item, annotator"
        );
        sqlx::query(sqlx::AssertSqlSafe(sql))
            .bind(columns::int(COMMITMENTS, "epoch", epoch)?)
            .fetch_all(&self.pool)
            .await
            .map_err(DbError::query("reading commitments"))?
            .iter()
            .map(CommitmentRecord::from_row)
            .collect()
    }

    /// Stores consensus labels, all or nothing; a label stored already for the same epoch,
    /// field and item is refused with [`DbError::Duplicate`].
    pub async fn add_consensus(&self, labels: &[ConsensusRecord]) -> Result<(), DbError> {
        const OP: &str = "adding consensus labels";
        let mut tx = self.pool.begin().await.map_err(DbError::query(OP))?;
        for l in labels {
            sqlx::query(
                "INSERT INTO data_consensus (epoch, field, item, label, confidence) \
                 VALUES ($1, $2, $3, $4, $5)",
            )
            .bind(columns::int(CONSENSUS, "epoch", l.epoch)?)
            .bind(l.field.name())
            .bind(columns::hash(&l.item))
            .bind(l.label.map(i64::from))
            .bind(columns::real(CONSENSUS, "confidence", l.confidence)?)
            .execute(&mut *tx)
            .await
            .map_err(DbError::insert(OP, CONSENSUS, || {
                format!(
                    "epoch {}, field {}, item {:#x}",
                    l.epoch,
                    l.field.name(),
                    l.item
                )
            }))?;
        }
        tx.commit().await.map_err(DbError::query(OP))
    }

    /// The consensus labels of `epoch`, by field (as [`LabelField::ALL`]) then item.
    pub async fn consensus(&self, epoch: u64) -> Result<Vec<ConsensusRecord>, DbError> {
        let rows = sqlx::query(
            "SELECT epoch, field, item, label, confidence FROM data_consensus WHERE epoch = $1",
        )
        .bind(columns::int(CONSENSUS, "epoch", epoch)?)
        .fetch_all(&self.pool)
        .await
        .map_err(DbError::query("reading consensus labels"))?;
        let mut out = rows
            .iter()
            .map(|row| {
                let c = Columns::new(row, CONSENSUS);
                Ok(ConsensusRecord {
                    epoch: c.u64("epoch")?,
                    field: LabelField::parse(CONSENSUS, &c.text("field")?)?,
                    item: c.hash("item")?,
                    label: c.optional_u8("label")?,
                    confidence: c.f64("confidence")?,
                })
            })
            .collect::<Result<Vec<_>, DbError>>()?;
        out.sort_by_key(|a| (a.field, a.item));
        Ok(out)
    }

    /// Stores annotator quality scores, all or nothing; a score stored already for the same
    /// epoch and annotator is refused with [`DbError::Duplicate`].
    pub async fn add_annotator_quality(&self, scores: &[QualityRecord]) -> Result<(), DbError> {
        const OP: &str = "adding annotator quality";
        let mut tx = self.pool.begin().await.map_err(DbError::query(OP))?;
        for q in scores {
            sqlx::query(
                "INSERT INTO data_annotator_quality (epoch, annotator, score, items) \
                 VALUES ($1, $2, $3, $4)",
            )
            .bind(columns::int(QUALITY, "epoch", q.epoch)?)
            .bind(columns::address(&q.annotator))
            .bind(columns::real(QUALITY, "score", q.score)?)
            .bind(columns::int(QUALITY, "items", q.items)?)
            .execute(&mut *tx)
            .await
            .map_err(DbError::insert(OP, QUALITY, || {
                format!("epoch {}, annotator {:#x}", q.epoch, q.annotator)
            }))?;
        }
        tx.commit().await.map_err(DbError::query(OP))
    }

    /// The annotator quality scores of `epoch`, lowest score first (ties by address).
    pub async fn annotator_quality(&self, epoch: u64) -> Result<Vec<QualityRecord>, DbError> {
        sqlx::query(
            "SELECT epoch, annotator, score, items FROM data_annotator_quality \
             WHERE epoch = $1 ORDER BY score, annotator",
        )
        .bind(columns::int(QUALITY, "epoch", epoch)?)
        .fetch_all(&self.pool)
        .await
        .map_err(DbError::query("reading annotator quality"))?
        .iter()
        .map(|row| {
            let c = Columns::new(row, QUALITY);
            Ok(QualityRecord {
                epoch: c.u64("epoch")?,
                annotator: c.address("annotator")?,
                score: c.f64("score")?,
                items: c.u64("items")?,
            })
        })
        .collect()
    }
}
