//! Fee receipts: accepted once per (requester, nonce), pending until settled or rejected.

use alloy_primitives::{Address, B256, Bytes, U256};
use sqlx::any::AnyRow;

use crate::columns::{self, Columns};
use crate::{DbError, Store};

const TABLE: &str = "gateway_receipts";

/// A fee receipt a requester signed for a request: the gateway settles it on chain later.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ReceiptRecord {
    /// Who signed it and pays.
    pub requester: Address,
    /// The requester's nonce (unique per requester: a receipt is accepted once).
    pub nonce: U256,
    /// The gateway it pays.
    pub gateway: Address,
    /// The request it pays for.
    pub request_hash: B256,
    /// The fee, in wei.
    pub fee: U256,
    /// Settle before this time (unix seconds).
    pub deadline: u64,
    /// The requester's signature over the receipt.
    pub signature: Bytes,
    /// When the gateway accepted it (unix seconds).
    pub accepted_at: u64,
}

/// Where a stored receipt stands.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ReceiptStatus {
    /// Awaiting settlement.
    Pending,
    /// Settled by this transaction.
    Settled {
        /// The settlement transaction's hash.
        tx: B256,
    },
    /// Will not be settled.
    Rejected {
        /// Why, as the caller gave it.
        reason: String,
    },
}

/// A receipt and where it stands.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoredReceipt {
    /// The receipt as accepted.
    pub receipt: ReceiptRecord,
    /// Where it stands.
    pub status: ReceiptStatus,
}

/// How many receipts stand where.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ReceiptCounts {
    /// Awaiting settlement.
    pub pending: u64,
    /// Settled.
    pub settled: u64,
    /// Rejected.
    pub rejected: u64,
}

/// The columns [`ReceiptRecord::from_row`] reads, for `concat!`.
macro_rules! columns {
    () => {
        "requester, nonce, gateway, request_hash, fee, deadline, signature, accepted_at"
    };
}

impl ReceiptRecord {
    fn from_row(row: &AnyRow) -> Result<Self, DbError> {
        let c = Columns::new(row, TABLE);
        Ok(ReceiptRecord {
            requester: c.address("requester")?,
            nonce: c.u256("nonce")?,
            gateway: c.address("gateway")?,
            request_hash: c.hash("request_hash")?,
            fee: c.u256("fee")?,
            deadline: c.u64("deadline")?,
            signature: c.bytes("signature")?,
            accepted_at: c.u64("accepted_at")?,
        })
    }
}

impl StoredReceipt {
    fn from_row(row: &AnyRow) -> Result<Self, DbError> {
        let receipt = ReceiptRecord::from_row(row)?;
        let c = Columns::new(row, TABLE);
        let status = match c.text("status")?.as_str() {
            "pending" => ReceiptStatus::Pending,
            "settled" => ReceiptStatus::Settled {
                tx: c.hash("settled_tx")?,
            },
            "rejected" => ReceiptStatus::Rejected {
                reason: c.optional_text("reject_reason")?.unwrap_or_default(),
            },
            other => {
                return Err(DbError::Corrupt {
                    table: TABLE,
                    column: "status",
                    value: other.to_owned(),
                });
            }
        };
        Ok(StoredReceipt { receipt, status })
    }
}

impl Store {
    /// Stores a receipt as pending. A second receipt with the same requester and nonce is
    /// refused with [`DbError::Replayed`] and the first one is kept as it was.
    pub async fn add_receipt(&self, receipt: &ReceiptRecord) -> Result<(), DbError> {
        const OP: &str = "adding a receipt";
        let deadline = columns::int(TABLE, "deadline", receipt.deadline)?;
        let accepted_at = columns::int(TABLE, "accepted_at", receipt.accepted_at)?;
        let mut tx = self.pool.begin().await.map_err(DbError::query(OP))?;
        let inserted = sqlx::query(
            "INSERT INTO gateway_receipts (requester, nonce, gateway, request_hash, fee, \
             deadline, signature, accepted_at, status) \
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, 'pending')",
        )
        .bind(columns::address(&receipt.requester))
        .bind(receipt.nonce.to_string())
        .bind(columns::address(&receipt.gateway))
        .bind(columns::hash(&receipt.request_hash))
        .bind(receipt.fee.to_string())
        .bind(deadline)
        .bind(receipt.signature.to_string())
        .bind(accepted_at)
        .execute(&mut *tx)
        .await;
        match inserted {
            Ok(_) => tx.commit().await.map_err(DbError::query(OP)),
            Err(sqlx::Error::Database(e)) if e.is_unique_violation() => Err(DbError::Replayed {
                requester: receipt.requester,
                nonce: receipt.nonce,
            }),
            Err(e) => Err(DbError::query(OP)(e)),
        }
    }

    /// The receipt of `requester` with `nonce`, and where it stands.
    pub async fn receipt(
        &self,
        requester: &Address,
        nonce: &U256,
    ) -> Result<Option<StoredReceipt>, DbError> {
        sqlx::query(concat!(
            "SELECT ",
            columns!(),
            ", status, settled_tx, reject_reason FROM gateway_receipts \
             WHERE requester = $1 AND nonce = $2"
        ))
        .bind(columns::address(requester))
        .bind(nonce.to_string())
        .fetch_optional(&self.pool)
        .await
        .map_err(DbError::query("reading a receipt"))?
        .map(|row| StoredReceipt::from_row(&row))
        .transpose()
    }

    /// Up to `limit` pending receipts, the oldest accepted first.
    pub async fn pending_receipts(&self, limit: u32) -> Result<Vec<ReceiptRecord>, DbError> {
        sqlx::query(concat!(
            "SELECT ",
            columns!(),
            " FROM gateway_receipts WHERE status = 'pending' \
             ORDER BY accepted_at, requester, nonce LIMIT $1"
        ))
        .bind(i64::from(limit))
        .fetch_all(&self.pool)
        .await
        .map_err(DbError::query("reading pending receipts"))?
        .iter()
        .map(ReceiptRecord::from_row)
        .collect()
    }

    /// The sum of `requester`'s pending fees, in wei (summed here: uint256 sums do not fit SQL
    /// integers; saturates at 2^256 - 1).
    pub async fn pending_fees(&self, requester: &Address) -> Result<U256, DbError> {
        let rows = sqlx::query(
            "SELECT fee FROM gateway_receipts WHERE requester = $1 AND status = 'pending'",
        )
        .bind(columns::address(requester))
        .fetch_all(&self.pool)
        .await
        .map_err(DbError::query("reading pending fees"))?;
        rows.iter().try_fold(U256::ZERO, |sum, row| {
            Ok(sum.saturating_add(Columns::new(row, TABLE).u256("fee")?))
        })
    }

    /// Marks these pending receipts settled by transaction `tx`, all or none: if one is unknown
    /// or not pending, nothing changes and the error names it ([`DbError::NotPending`]).
    pub async fn mark_settled(
        &self,
        receipts: &[(Address, U256)],
        tx: &B256,
    ) -> Result<(), DbError> {
        const OP: &str = "marking receipts settled";
        let tx_hash = columns::hash(tx);
        let mut db = self.pool.begin().await.map_err(DbError::query(OP))?;
        for (requester, nonce) in receipts {
            close_pending(&mut db, SETTLE, &tx_hash, requester, nonce, OP).await?;
        }
        db.commit().await.map_err(DbError::query(OP))
    }

    /// Marks a pending receipt rejected (it will not be settled) for `reason`.
    /// [`DbError::NotPending`] if it is unknown or not pending.
    pub async fn mark_rejected(
        &self,
        requester: &Address,
        nonce: &U256,
        reason: &str,
    ) -> Result<(), DbError> {
        const OP: &str = "marking a receipt rejected";
        let mut db = self.pool.begin().await.map_err(DbError::query(OP))?;
        close_pending(&mut db, REJECT, reason, requester, nonce, OP).await?;
        db.commit().await.map_err(DbError::query(OP))
    }

    /// How many receipts are pending, settled and rejected.
    pub async fn count_by_status(&self) -> Result<ReceiptCounts, DbError> {
        let rows =
            sqlx::query("SELECT status, COUNT(*) AS n FROM gateway_receipts GROUP BY status")
                .fetch_all(&self.pool)
                .await
                .map_err(DbError::query("counting receipts"))?;
        let mut counts = ReceiptCounts::default();
        for row in &rows {
            let c = Columns::new(row, TABLE);
            let n = c.u64("n")?;
            match c.text("status")?.as_str() {
                "pending" => counts.pending = n,
                "settled" => counts.settled = n,
                "rejected" => counts.rejected = n,
                other => {
                    return Err(DbError::Corrupt {
                        table: TABLE,
                        column: "status",
                        value: other.to_owned(),
                    });
                }
            }
        }
        Ok(counts)
    }
}

/// Settles a pending receipt: `$1` the transaction.
const SETTLE: &str = "UPDATE gateway_receipts SET status = 'settled', settled_tx = $1 \
                      WHERE requester = $2 AND nonce = $3 AND status = 'pending'";
/// Rejects a pending receipt: `$1` the reason.
const REJECT: &str = "UPDATE gateway_receipts SET status = 'rejected', reject_reason = $1 \
                      WHERE requester = $2 AND nonce = $3 AND status = 'pending'";

/// Runs `update` (`SETTLE` or `REJECT`) on one receipt within `db`;
/// [`DbError::NotPending`] when it is unknown or no longer pending.
async fn close_pending(
    db: &mut sqlx::AnyConnection,
    update: &'static str,
    value: &str,
    requester: &Address,
    nonce: &U256,
    op: &'static str,
) -> Result<(), DbError> {
    let done = sqlx::query(update)
        .bind(value)
        .bind(columns::address(requester))
        .bind(nonce.to_string())
        .execute(&mut *db)
        .await
        .map_err(DbError::query(op))?;
    if done.rows_affected() != 1 {
        return Err(DbError::NotPending {
            requester: *requester,
            nonce: *nonce,
        });
    }
    Ok(())
}
