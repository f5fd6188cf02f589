//! Node score history: what the gateway, or a validator, made of a node at a time.

use alloy_primitives::Address;
use sqlx::any::AnyRow;

use crate::columns::{self, Columns};
use crate::{DbError, Store};

const TABLE: &str = "gateway_node_scores";

/// A node's score at one time, as the gateway or a validator saw it.
#[derive(Debug, Clone, PartialEq)]
pub struct ScoreRecord {
    /// The inference node.
    pub node: Address,
    /// When (unix seconds).
    pub at: u64,
    /// The validator that scored it; `None` for the gateway's own score.
    pub validator: Option<Address>,
    /// Requests it was asked.
    pub served: u64,
    /// Answers that counted with the consensus.
    pub agreed: u64,
    /// Answers that did not.
    pub disagreed: u64,
    /// Requests it did not answer in time.
    pub missed: u64,
    /// Audit challenges it was given.
    pub challenges: u64,
    /// Challenges it answered correctly.
    pub challenges_correct: u64,
    /// Median answer latency, in milliseconds.
    pub latency_p50_ms: u64,
    /// 95th-percentile answer latency, in milliseconds.
    pub latency_p95_ms: u64,
    /// Its reputation (selection weight factor), a finite number.
    pub reputation: f64,
}

/// The columns [`ScoreRecord::from_row`] reads, for `concat!`.
macro_rules! columns {
    () => {
        "node, at, validator, served, agreed, disagreed, missed, challenges, \
         challenges_correct, latency_p50_ms, latency_p95_ms, reputation"
    };
}

impl ScoreRecord {
    fn from_row(row: &AnyRow) -> Result<Self, DbError> {
        let c = Columns::new(row, TABLE);
        Ok(ScoreRecord {
            node: c.address("node")?,
            at: c.u64("at")?,
            validator: c.optional_address("validator")?,
            served: c.u64("served")?,
            agreed: c.u64("agreed")?,
            disagreed: c.u64("disagreed")?,
            missed: c.u64("missed")?,
            challenges: c.u64("challenges")?,
            challenges_correct: c.u64("challenges_correct")?,
            latency_p50_ms: c.u64("latency_p50_ms")?,
            latency_p95_ms: c.u64("latency_p95_ms")?,
            reputation: c.f64("reputation")?,
        })
    }
}

impl Store {
    /// Records a score. A score for the same node, validator and time replaces the stored one.
    pub async fn record_score(&self, score: &ScoreRecord) -> Result<(), DbError> {
        const OP: &str = "recording a score";
        let int = |column, value| columns::int(TABLE, column, value);
        let values = [
            int("at", score.at)?,
            int("served", score.served)?,
            int("agreed", score.agreed)?,
            int("disagreed", score.disagreed)?,
            int("missed", score.missed)?,
            int("challenges", score.challenges)?,
            int("challenges_correct", score.challenges_correct)?,
            int("latency_p50_ms", score.latency_p50_ms)?,
            int("latency_p95_ms", score.latency_p95_ms)?,
        ];
        let reputation = columns::real(TABLE, "reputation", score.reputation)?;
        let validator = score
            .validator
            .as_ref()
            .map(columns::address)
            .unwrap_or_default();
        let mut query = sqlx::query(
            "INSERT INTO gateway_node_scores (node, validator, at, served, agreed, disagreed, \
             missed, challenges, challenges_correct, latency_p50_ms, latency_p95_ms, reputation) \
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12) \
             ON CONFLICT (node, validator, at) DO UPDATE SET \
             served = excluded.served, agreed = excluded.agreed, \
             disagreed = excluded.disagreed, missed = excluded.missed, \
             challenges = excluded.challenges, challenges_correct = excluded.challenges_correct, \
             latency_p50_ms = excluded.latency_p50_ms, latency_p95_ms = excluded.latency_p95_ms, \
             reputation = excluded.reputation",
        )
        .bind(columns::address(&score.node))
        .bind(validator);
        for value in values {
            query = query.bind(value);
        }
        let mut tx = self.pool.begin().await.map_err(DbError::query(OP))?;
        query
            .bind(reputation)
            .execute(&mut *tx)
            .await
            .map_err(DbError::query(OP))?;
        tx.commit().await.map_err(DbError::query(OP))
    }

    /// Up to `limit` scores of `node`, newest first (ties: the gateway's own, then by
    /// validator).
    pub async fn score_history(
        &self,
        node: &Address,
        limit: u32,
    ) -> Result<Vec<ScoreRecord>, DbError> {
        sqlx::query(concat!(
            "SELECT ",
            columns!(),
            " FROM gateway_node_scores WHERE node = $1 ORDER BY at DESC, validator LIMIT $2"
        ))
        .bind(columns::address(node))
        .bind(i64::from(limit))
        .fetch_all(&self.pool)
        .await
        .map_err(DbError::query("reading score history"))?
        .iter()
        .map(ScoreRecord::from_row)
        .collect()
    }

    /// Each node's newest score (ties as in [`Store::score_history`]), by node address.
    pub async fn latest_scores(&self) -> Result<Vec<ScoreRecord>, DbError> {
        sqlx::query(concat!(
            "SELECT ",
            columns!(),
            " FROM gateway_node_scores s WHERE NOT EXISTS (\
             SELECT 1 FROM gateway_node_scores t WHERE t.node = s.node AND \
             (t.at > s.at OR (t.at = s.at AND t.validator < s.validator))) \
             ORDER BY node"
        ))
        .fetch_all(&self.pool)
        .await
        .map_err(DbError::query("reading latest scores"))?
        .iter()
        .map(ScoreRecord::from_row)
        .collect()
    }
}
