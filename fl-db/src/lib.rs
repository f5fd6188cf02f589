//! The database layer of a daofl gateway (its request log, the fee receipts awaiting
//! settlement and each inference node's score history) and of the data-contribution index
//! (registered batches of records, assignments, commit-reveal, consensus labels, annotator
//! quality: [`data`]), in SQLite (embedded, the default) or
//! PostgreSQL (a gateway shared by several processes), with the same code and the same
//! migrations for both.
//!
//! A [`Store`] is a bounded connection pool on a schema it migrates when opened
//! ([`Store::open`]); the gateway's calls are its methods, grouped by table in [`gateway`], and
//! the data-contribution index's in [`data`].
//! Every write is one transaction, committed before the call returns, so a gateway that
//! restarts finds every receipt it accepted and did not settle
//! ([`Store::pending_receipts`]). A receipt is accepted once per requester and nonce
//! ([`DbError::Replayed`]). Values are typed (addresses, hashes, uint256 amounts); a stored
//! value that does not parse is a [`DbError::Corrupt`] naming its table and column, never a
//! panic.
//!
//! It does not decide anything: verifying receipt signatures, choosing what to settle and
//! sending the settlement transaction are the gateway's.
//!
//! # Databases
//!
//! Through sqlx's `Any` driver: SQLite is compiled in (no system library), PostgreSQL is
//! reached over plain TCP or a Unix socket (no TLS). The SQL is portable (`TEXT`, `BIGINT`,
//! `DOUBLE PRECISION`, `$n` placeholders, `ON CONFLICT`); addresses, hashes and signatures are
//! stored as lowercase `0x` hex text, uint256 values as decimal text. The migrations are the
//! files of `fl-db/migrations/`, embedded in the binary and recorded in sqlx's
//! `_sqlx_migrations` table.
//!
//! # Example
//!
//! ```
//! use fl_db::gateway::ReceiptRecord;
//! use fl_db::{Address, B256, Bytes, DbError, Store, U256};
//!
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() -> Result<(), DbError> {
//! // A file would be `sqlite://gateway.db?mode=rwc`, a server `postgres://user:pw@host/db`.
//! let store = Store::open("sqlite::memory:").await?;
//! let receipt = ReceiptRecord {
//!     requester: Address::repeat_byte(1),
//!     nonce: U256::from(7),
//!     gateway: Address::repeat_byte(2),
//!     request_hash: B256::repeat_byte(3),
//!     fee: U256::from(10).pow(U256::from(15)),
//!     deadline: 1_800_000_000,
//!     signature: Bytes::from(vec![0x1b; 65]),
//!     accepted_at: 1_700_000_000,
//! };
//! store.add_receipt(&receipt).await?;
//! // The same requester and nonce again is a replay.
//! assert!(matches!(store.add_receipt(&receipt).await, Err(DbError::Replayed { .. })));
//! assert_eq!(store.pending_receipts(100).await?, vec![receipt.clone()]);
//! assert_eq!(store.pending_fees(&receipt.requester).await?, receipt.fee);
//!
//! store.mark_settled(&[(receipt.requester, receipt.nonce)], &B256::repeat_byte(9)).await?;
//! assert_eq!(store.count_by_status().await?.settled, 1);
//! # Ok(())
//! # }
//! ```

#![forbid(unsafe_code)]
#![warn(missing_docs)]

mod columns;
pub mod data;
mod error;
pub mod gateway;
mod migrations;
mod store;
pub mod testing;

pub use alloy_primitives::{Address, B256, Bytes, U256};
pub use error::DbError;
pub use store::{Backend, Store, StoreOptions};
