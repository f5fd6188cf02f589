//! Contributed data on the IO side: the content store of signed records ([`ContentStore`]),
//! batches as CAR v1 files ([`car`]), publishing a CAR to an IPFS node through the Kubo RPC API
//! ([`Kubo`]), and the database index ([`fl_db::data`]) rebuilt from the chain's
//! `DataRegistry` events plus the content store ([`rebuild_index`]).
//!
//! The records themselves, their signatures and the consensus are `contrib`'s (no IO); the
//! batch Merkle tree and the registry calls are `dao`'s. Every byte that comes from outside (a
//! file, a CAR, an IPFS node) is checked against its CID and as a signed record before it is
//! stored or indexed, and a batch is accepted whole or not at all.
//!
//! ```no_run
//! # async fn demo(dao: &dao::Dao, records: &[fl_client::contribute::ContributedRecord])
//! # -> Result<(), fl_client::contribute::ContributeError> {
//! use fl_client::contribute::{ContentStore, export_batch, rebuild_index};
//! let content = ContentStore::open("data/content")?;
//! let (batch, car) = export_batch(records)?;
//! content.put_batch_car(&batch.root(), &car)?;
//! dao.register_batch(&batch, "ipfs://...").await?;
//! // Any time later, anywhere: the index from the chain plus the content store.
//! let db = fl_db::Store::open("sqlite://index.db?mode=rwc").await?;
//! let report = rebuild_index(dao, &content, &db).await?;
//! assert!(report.refused.is_empty());
//! # Ok(()) }
//! ```

pub mod car;
pub mod epoch;
mod kubo;
mod rebuild;
mod store;
#[cfg(feature = "burn")]
pub mod training;

use std::path::PathBuf;

use contrib::{AnnotationRecord, Field, ProposalRecord, RecordError, SignedRecord};
use fl_core::{Address, ContentHash};

pub use car::{Car, CarError, CarLimits};
pub use epoch::{EpochError, EpochOutcome, EpochSettings, GoldLabel, settle_epoch};
pub use kubo::Kubo;
pub use rebuild::{RebuildReport, export_batch, index_batch, rebuild_index, verify_batch};
pub use store::ContentStore;

/// Why a contribution step failed. Nothing stored or indexed is lost or changed when one is
/// returned.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ContributeError {
    /// A record was refused (its bytes do not match its CID, a bad signature, oversized,
    /// malformed).
    #[error("record {cid}: {source}")]
    Record {
        /// The CID it was given under.
        cid: ContentHash,
        /// Why.
        #[source]
        source: RecordError,
    },
    /// A CAR was refused.
    #[error("CAR: {0}")]
    Car(#[from] CarError),
    /// A CAR block's CID is not a raw SHA-256 CID (daofl's records are raw blocks).
    #[error("CAR block {0} is not a raw sha2-256 CID")]
    NotARecordCid(String),
    /// A labelled item is an annotation, not a proposal.
    #[error("record {cid} is not a proposal record")]
    NotAProposal {
        /// Its CID.
        cid: ContentHash,
    },
    /// A record is not in the content store.
    #[error("record {cid} is not in the content store")]
    MissingRecord {
        /// Its CID.
        cid: ContentHash,
    },
    /// The content of a registered batch is not in the content store.
    #[error("batch {root:#x} has no CAR in the content store")]
    MissingBatch {
        /// Its root.
        root: fl_db::B256,
    },
    /// A batch's records do not hash to the root registered on chain.
    #[error("batch {root:#x}: its records' Merkle root is {computed:#x}")]
    RootMismatch {
        /// The root on chain.
        root: fl_db::B256,
        /// The root of the records found.
        computed: fl_db::B256,
    },
    /// A batch holds another number of records than it announced on chain.
    #[error("batch {root:#x} announced {announced} records, its content has {found}")]
    CountMismatch {
        /// Its root.
        root: fl_db::B256,
        /// Records announced on chain.
        announced: u64,
        /// Records in its content.
        found: u64,
    },
    /// An empty batch.
    #[error("a batch needs at least one record")]
    EmptyBatch,
    /// A file over its limit.
    #[error("{path}: {len} bytes exceeds the limit of {limit}")]
    TooLarge {
        /// The file.
        path: PathBuf,
        /// Its length.
        len: u64,
        /// The limit.
        limit: usize,
    },
    /// Reading or writing a file failed.
    #[error("{path}: {source}")]
    Io {
        /// The file.
        path: PathBuf,
        /// What the OS said.
        #[source]
        source: std::io::Error,
    },
    /// The chain call failed.
    #[error("chain: {0}")]
    Chain(#[from] dao::Error),
    /// The index database failed or refused a row.
    #[error("index: {0}")]
    Db(#[from] fl_db::DbError),
    /// An annotation epoch could not be read, indexed or settled.
    #[error("{0}")]
    Epoch(#[from] epoch::EpochError),
    /// The IPFS node could not be reached or answered something unexpected.
    #[error("IPFS node {api}: {reason}")]
    Kubo {
        /// The RPC API address.
        api: String,
        /// What went wrong (the node's message for a refusal).
        reason: String,
    },
}

/// A checked record of either kind.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ContributedRecord {
    /// A proposal.
    Proposal(SignedRecord<ProposalRecord>),
    /// An annotation.
    Annotation(SignedRecord<AnnotationRecord>),
}

impl ContributedRecord {
    /// Checks untrusted `bytes` fetched as `cid`: CID first, then as a proposal or an
    /// annotation record, whichever kind its envelope names (size, schema, canonical form,
    /// signature).
    pub fn decode_addressed(cid: &ContentHash, bytes: &[u8]) -> Result<Self, ContributeError> {
        let refused = |source| ContributeError::Record { cid: *cid, source };
        match SignedRecord::<ProposalRecord>::decode_addressed(cid, bytes) {
            Ok(r) => Ok(ContributedRecord::Proposal(r)),
            Err(RecordError::WrongKind { .. }) => {
                SignedRecord::<AnnotationRecord>::decode_addressed(cid, bytes)
                    .map(ContributedRecord::Annotation)
                    .map_err(refused)
            }
            Err(e) => Err(refused(e)),
        }
    }

    /// Its content address.
    pub fn cid(&self) -> ContentHash {
        match self {
            ContributedRecord::Proposal(r) => r.cid(),
            ContributedRecord::Annotation(r) => r.cid(),
        }
    }

    /// Its canonical bytes.
    pub fn bytes(&self) -> &[u8] {
        match self {
            ContributedRecord::Proposal(r) => r.bytes(),
            ContributedRecord::Annotation(r) => r.bytes(),
        }
    }

    /// Who signed it.
    pub fn contributor(&self) -> Address {
        match self {
            ContributedRecord::Proposal(r) => r.body().contributor,
            ContributedRecord::Annotation(r) => r.body().annotator,
        }
    }

    /// The row the index keeps of it.
    pub fn index_row(&self) -> fl_db::data::DataRecord {
        use fl_db::data::{AnnotationIndex, DataRecord, LabelClasses, RecordKind};
        let kind = match self {
            ContributedRecord::Proposal(_) => RecordKind::Proposal,
            ContributedRecord::Annotation(r) => {
                let a = r.body();
                RecordKind::Annotation(AnnotationIndex {
                    item: fl_db::B256::from(*a.item.as_bytes()),
                    epoch: a.epoch,
                    labels: LabelClasses {
                        outcome: a.labels.class(Field::Outcome),
                        category: a.labels.class(Field::Category),
                        quality: a.labels.class(Field::Quality),
                        risk: a.labels.class(Field::Risk),
                    },
                })
            }
        };
        DataRecord {
            cid: fl_db::B256::from(*self.cid().as_bytes()),
            contributor: self.contributor(),
            bytes_len: self.bytes().len() as u64,
            kind,
        }
    }
}

impl From<SignedRecord<ProposalRecord>> for ContributedRecord {
    fn from(r: SignedRecord<ProposalRecord>) -> Self {
        ContributedRecord::Proposal(r)
    }
}

impl From<SignedRecord<AnnotationRecord>> for ContributedRecord {
    fn from(r: SignedRecord<AnnotationRecord>) -> Self {
        ContributedRecord::Annotation(r)
    }
}

/// The records of a CAR read with [`car::read`] (blocks already checked against their CIDs),
/// each checked as a signed record; the first refused one is the error.
pub(crate) fn records_of_car(car: &Car) -> Result<Vec<ContributedRecord>, ContributeError> {
    car.blocks
        .iter()
        .map(|(cid, bytes)| {
            let hash = ContentHash::from_cid_str(&cid.to_string())
                .map_err(|_| ContributeError::NotARecordCid(cid.to_string()))?;
            ContributedRecord::decode_addressed(&hash, bytes)
        })
        .collect()
}

#[cfg(test)]
mod tests;
