//! The crate's error type.

use alloy_primitives::{Address, U256};

/// What went wrong in a [`Store`](crate::Store) call.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum DbError {
    /// The database URL is not usable, or the database refused the connection (no such file,
    /// authentication failed, no such database).
    #[error("cannot open database {url}: {source}")]
    Open {
        /// The URL, with any password replaced by `***`.
        url: String,
        /// What sqlx reported.
        #[source]
        source: sqlx::Error,
    },
    /// No connection to the database server within the connect timeout (it is down, starting,
    /// or not reachable from here).
    #[error("cannot reach database {url} within {waited:?}: {last}")]
    Unreachable {
        /// The URL, with any password replaced by `***`.
        url: String,
        /// How long connecting was retried.
        waited: std::time::Duration,
        /// What one more attempt at the end gave (e.g. `connection refused`).
        last: String,
    },
    /// Applying the schema migrations failed (or the database holds migrations this build does
    /// not know, or ones whose SQL changed).
    #[error("migrating database {url}: {source}")]
    Migrate {
        /// The URL, with any password replaced by `***`.
        url: String,
        /// What sqlx reported.
        #[source]
        source: sqlx::migrate::MigrateError,
    },
    /// A receipt with this requester and nonce is already stored; the stored one is kept.
    #[error("receipt replayed: requester {requester} already has a receipt with nonce {nonce}")]
    Replayed {
        /// The receipt's requester.
        requester: Address,
        /// The receipt's nonce.
        nonce: U256,
    },
    /// A receipt to settle or reject is unknown or no longer pending; nothing was changed.
    #[error("receipt of requester {requester} with nonce {nonce} is not pending")]
    NotPending {
        /// The receipt's requester.
        requester: Address,
        /// The receipt's nonce.
        nonce: U256,
    },
    /// A row with this key is already stored (a record indexed twice, a second commitment);
    /// the stored one is kept and nothing of the call was written.
    #[error("{table}: {key} is already stored")]
    Duplicate {
        /// The table.
        table: &'static str,
        /// The key, as text (e.g. `epoch 3, item 0x.., annotator 0x..`).
        key: String,
    },
    /// The row a call updates is not there, or not in the state the call needs (a reveal
    /// without an open commitment); nothing was written.
    #[error("{table}: no {key}")]
    NotFound {
        /// The table.
        table: &'static str,
        /// What was looked for, as text.
        key: String,
    },
    /// A value cannot be stored in its column: an integer above 2^63 - 1 (SQL integers are
    /// signed 64-bit) or a real that is not finite. Nothing was written.
    #[error("{table}.{column}: {value} cannot be stored (integers up to 2^63 - 1, finite reals)")]
    Unstorable {
        /// The table.
        table: &'static str,
        /// The column.
        column: &'static str,
        /// The value given.
        value: String,
    },
    /// A query failed (connection lost, pool timeout, constraint, ...).
    #[error("{operation}: {source}")]
    Query {
        /// What the store was doing, e.g. `adding a receipt`.
        operation: &'static str,
        /// What sqlx reported.
        #[source]
        source: sqlx::Error,
    },
    /// A stored value does not parse as what its column holds.
    #[error("corrupt value in {table}.{column}: {value:?}")]
    Corrupt {
        /// The table.
        table: &'static str,
        /// The column.
        column: &'static str,
        /// The stored value, as text.
        value: String,
    },
}

impl DbError {
    /// Maps a unique-key violation to [`DbError::Duplicate`] of `table` and `key`, anything
    /// else to [`DbError::Query`] for `operation`.
    pub(crate) fn insert(
        operation: &'static str,
        table: &'static str,
        key: impl FnOnce() -> String,
    ) -> impl FnOnce(sqlx::Error) -> DbError {
        move |e| match e {
            sqlx::Error::Database(d) if d.is_unique_violation() => {
                DbError::Duplicate { table, key: key() }
            }
            source => DbError::Query { operation, source },
        }
    }

    /// A closure that wraps a sqlx error as [`DbError::Query`] for `operation`.
    pub(crate) fn query(operation: &'static str) -> impl FnOnce(sqlx::Error) -> DbError {
        move |source| DbError::Query { operation, source }
    }
}
