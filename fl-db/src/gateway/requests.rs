//! The request log: one row per request the gateway answered.

use alloy_primitives::{Address, B256};
use sqlx::any::AnyRow;

use crate::columns::{self, Columns};
use crate::{DbError, Store};

const TABLE: &str = "gateway_requests";

/// A request the gateway answered: who asked, which model, the consensus label, and what the
/// consensus made of the nodes it asked.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RequestRecord {
    /// The request's hash (the log's key).
    pub request_hash: B256,
    /// Who asked.
    pub requester: Address,
    /// The content identifier of the model that answered.
    pub model_cid: String,
    /// The consensus label.
    pub label: String,
    /// The nodes asked, in the order they were selected.
    pub selected: Vec<Address>,
    /// The nodes whose answers counted with the consensus.
    pub agreeing: Vec<Address>,
    /// The nodes that answered otherwise or not at all.
    pub disagreeing: Vec<Address>,
    /// How long the gateway took to answer, in milliseconds.
    pub latency_ms: u64,
    /// When the request arrived, in unix seconds.
    pub created_at: u64,
}

/// The columns [`RequestRecord::from_row`] reads, for `concat!`.
macro_rules! columns {
    () => {
        "request_hash, requester, model_cid, label, selected, agreeing, disagreeing, \
         latency_ms, created_at"
    };
}

impl RequestRecord {
    fn from_row(row: &AnyRow) -> Result<Self, DbError> {
        let c = Columns::new(row, TABLE);
        Ok(RequestRecord {
            request_hash: c.hash("request_hash")?,
            requester: c.address("requester")?,
            model_cid: c.text("model_cid")?,
            label: c.text("label")?,
            selected: c.addresses("selected")?,
            agreeing: c.addresses("agreeing")?,
            disagreeing: c.addresses("disagreeing")?,
            latency_ms: c.u64("latency_ms")?,
            created_at: c.u64("created_at")?,
        })
    }
}

impl Store {
    /// Logs a request. Returns `false`, and keeps the logged one, if a request with this hash
    /// is already in the log.
    pub async fn log_request(&self, record: &RequestRecord) -> Result<bool, DbError> {
        const OP: &str = "logging a request";
        let latency_ms = columns::int(TABLE, "latency_ms", record.latency_ms)?;
        let created_at = columns::int(TABLE, "created_at", record.created_at)?;
        let mut tx = self.pool.begin().await.map_err(DbError::query(OP))?;
        let done = sqlx::query(
            "INSERT INTO gateway_requests (request_hash, requester, model_cid, label, selected, \
             agreeing, disagreeing, latency_ms, created_at) \
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9) \
             ON CONFLICT (request_hash) DO NOTHING",
        )
        .bind(columns::hash(&record.request_hash))
        .bind(columns::address(&record.requester))
        .bind(record.model_cid.as_str())
        .bind(record.label.as_str())
        .bind(columns::addresses(&record.selected))
        .bind(columns::addresses(&record.agreeing))
        .bind(columns::addresses(&record.disagreeing))
        .bind(latency_ms)
        .bind(created_at)
        .execute(&mut *tx)
        .await
        .map_err(DbError::query(OP))?;
        tx.commit().await.map_err(DbError::query(OP))?;
        Ok(done.rows_affected() == 1)
    }

    /// The logged request with this hash, if any.
    pub async fn request(&self, request_hash: &B256) -> Result<Option<RequestRecord>, DbError> {
        sqlx::query(concat!(
            "SELECT ",
            columns!(),
            " FROM gateway_requests WHERE request_hash = $1"
        ))
        .bind(columns::hash(request_hash))
        .fetch_optional(&self.pool)
        .await
        .map_err(DbError::query("reading a request"))?
        .map(|row| RequestRecord::from_row(&row))
        .transpose()
    }

    /// Up to `limit` requests that arrived at or after `since` (unix seconds), oldest first.
    pub async fn requests_since(
        &self,
        since: u64,
        limit: u32,
    ) -> Result<Vec<RequestRecord>, DbError> {
        sqlx::query(concat!(
            "SELECT ",
            columns!(),
            " FROM gateway_requests WHERE created_at >= $1 \
             ORDER BY created_at, request_hash LIMIT $2"
        ))
        .bind(i64::try_from(since).unwrap_or(i64::MAX))
        .bind(i64::from(limit))
        .fetch_all(&self.pool)
        .await
        .map_err(DbError::query("reading requests"))?
        .iter()
        .map(RequestRecord::from_row)
        .collect()
    }
}
