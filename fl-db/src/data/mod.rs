//! The data-contribution index: batches the `DataRegistry` contract registered and their
//! records ([`BatchRecord`], [`DataRecord`]), who annotates what in an epoch, the commitments to
//! annotations and their reveals ([`CommitmentRecord`]), consensus labels ([`ConsensusRecord`])
//! and annotator quality ([`QualityRecord`]).
//!
//! It is an index, not the data: records live in a content store and their roots on chain, and
//! the index can be rebuilt from the two at any time (`fl_client::contribute`). Records are
//! named by the SHA-256 digest of their CIDv1 (raw codec), the digest the registry's Merkle root
//! is built from (`fl_core::ContentHash::from_digest` turns one back into a CID).
//!
//! Each table's calls are methods of [`Store`](crate::Store), documented in the files below.
//! Every write runs in one transaction: a call that fails changes nothing, and a row whose key
//! is stored already is refused with [`DbError::Duplicate`].

mod batches;
mod epochs;

use alloy_primitives::{Address, B256};

use crate::DbError;

pub use batches::{BatchRecord, DataRecord, RecordKind};
pub use epochs::{CommitmentRecord, ConsensusRecord, QualityRecord};

/// An annotation's four labels as class indices (outcome 0..2, category 0..5, quality 0..5 for
/// 1..=5, risk 0..3: `contrib::Labels::class`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct LabelClasses {
    /// Outcome class.
    pub outcome: u8,
    /// Category class.
    pub category: u8,
    /// Quality class (quality - 1).
    pub quality: u8,
    /// Risk class.
    pub risk: u8,
}

/// What the index holds of an annotation record beyond its contributor (the annotator).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct AnnotationIndex {
    /// The annotated proposal record.
    pub item: B256,
    /// The annotation epoch.
    pub epoch: u64,
    /// The labels.
    pub labels: LabelClasses,
}

/// The questions an annotation answers, each with its own consensus.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
#[non_exhaustive]
pub enum LabelField {
    /// The proposal's outcome.
    Outcome,
    /// Its category.
    Category,
    /// Its quality.
    Quality,
    /// Its risk.
    Risk,
}

impl LabelField {
    /// Every field, in the order queries return them.
    pub const ALL: [LabelField; 4] = [
        LabelField::Outcome,
        LabelField::Category,
        LabelField::Quality,
        LabelField::Risk,
    ];

    /// The name stored (`contrib::Field::name`).
    pub const fn name(self) -> &'static str {
        match self {
            LabelField::Outcome => "outcome",
            LabelField::Category => "category",
            LabelField::Quality => "quality",
            LabelField::Risk => "risk",
        }
    }

    fn parse(table: &'static str, s: &str) -> Result<Self, DbError> {
        LabelField::ALL
            .into_iter()
            .find(|f| f.name() == s)
            .ok_or_else(|| DbError::Corrupt {
                table,
                column: "field",
                value: s.to_owned(),
            })
    }
}

/// `epoch 3, item 0x.., annotator 0x..` for error keys.
fn slot_key(epoch: u64, item: &B256, annotator: &Address) -> String {
    format!("epoch {epoch}, item {item:#x}, annotator {annotator:#x}")
}
