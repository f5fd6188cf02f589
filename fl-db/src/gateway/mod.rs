//! The inference gateway's tables: its request log ([`RequestRecord`]), the fee receipts
//! awaiting settlement ([`ReceiptRecord`]) and each node's score history ([`ScoreRecord`]).
//!
//! Each table's calls are methods of [`Store`](crate::Store), documented in the files below.
//! Every write runs in a transaction: a failed call changes nothing.

mod receipts;
mod requests;
mod scores;

pub use receipts::{ReceiptCounts, ReceiptRecord, ReceiptStatus, StoredReceipt};
pub use requests::RequestRecord;
pub use scores::ScoreRecord;
