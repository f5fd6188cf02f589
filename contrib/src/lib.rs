//! # contrib
//!
//! Data contribution for the DAO's labelled data: members contribute governance proposals and
//! annotate them (outcome, category, quality, risk); several annotators cross-check each item;
//! consensus labels and annotator quality come from Dawid-Skene; rewards follow quality.
//!
//! - [`record`]: [`ProposalRecord`] and [`AnnotationRecord`], schema-versioned, signed by the
//!   contributor's member key and content-addressed ([`SignedRecord`]: canonical bytes, CIDv1
//!   `raw`, bounded and checked parsing of untrusted bytes).
//! - [`assign`]: which annotators label which item, by rendezvous hashing from a public seed,
//!   at least [`MIN_ANNOTATORS_PER_ITEM`] per item.
//! - [`commit`]: commit-reveal of annotations ([`CommitBook`]), so no one copies another's
//!   answer.
//! - [`consensus`]: [`dawid_skene`] over per-annotator confusion matrices, [`majority_vote`]
//!   as the fallback for small counts, and [`annotator_quality`] from the confusion matrices and
//!   gold items.
//! - [`rewards`]: the DAO's reward formula ([`annotation_reward`], parameters in
//!   [`RewardPolicy`]) and [`flag_annotators`] with evidence.
//!
//! It does no IO, reads no clock and draws no randomness except fresh [`Salt`]s: the registry
//! contract, the database index, IPFS publishing and token settlement drive it from outside.
//!
//! ```
//! use contrib::{AnnotationRecord, Assignment, AssignmentSeed, Category, CommitBook, Commitment};
//! use contrib::{Field, Labels, Outcome, ProposalQuality, ProposalRecord, Risk, Salt, SignedRecord};
//! use contrib::consensus::{Answers, ConsensusConfig, QualityConfig, aggregate, annotator_quality};
//! use fl_core::MemberKey;
//!
//! // A member contributes a proposal: signed, addressed by its CID.
//! let author = MemberKey::generate();
//! let proposal = SignedRecord::sign(
//!     ProposalRecord {
//!         contributor: author.address(),
//!         community: "ethereum".into(),
//!         proposal_id: "EIP-1559".into(),
//!         title: "Fee market change for ETH 1.0 chain".into(),
//!         text: "A transaction pricing mechanism with a burnt base fee.".into(),
//!         created: Some("2019-04-13".into()),
//!         licence: "CC0-1.0".into(),
//!         source: None,
//!     },
//!     &author,
//! )?;
//! // Anyone holding the bytes checks them against the CID and the signature.
//! let fetched = SignedRecord::<ProposalRecord>::decode_addressed(&proposal.cid(), proposal.bytes())?;
//! assert_eq!(fetched.body().contributor, author.address());
//!
//! // Three of four staked annotators are drawn for it from a public seed (a block hash).
//! let keys: Vec<MemberKey> = (0..4).map(|_| MemberKey::generate()).collect();
//! let pool: Vec<_> = keys.iter().map(|k| k.address()).collect();
//! let assignment = Assignment::new(AssignmentSeed([7; 32]), &[proposal.cid()], &pool, 3)?;
//! let mut book = CommitBook::new(1, assignment.clone());
//!
//! // Each commits to a signed annotation, then reveals it once commits close.
//! let mut reveals = Vec::new();
//! for annotator in assignment.annotators(&proposal.cid()).unwrap() {
//!     let key = keys.iter().find(|k| k.address() == *annotator).unwrap();
//!     let labels = Labels {
//!         outcome: Outcome::Accepted,
//!         category: Category::Protocol,
//!         quality: ProposalQuality::new(4).unwrap(),
//!         risk: Risk::High,
//!     };
//!     let body = AnnotationRecord { annotator: *annotator, item: proposal.cid(), epoch: 1, labels };
//!     let record = SignedRecord::sign(body, key)?;
//!     let salt = Salt::random();
//!     book.handle_commit(*annotator, proposal.cid(), Commitment::to(&record, &salt))?;
//!     reveals.push((record, salt));
//! }
//! book.close_commits();
//! for (record, salt) in reveals {
//!     book.handle_reveal(record, &salt)?;
//! }
//!
//! // Consensus on the outcome (majority vote here: one item is too few for EM).
//! let (answers, index) = Answers::from_annotations(Field::Outcome, book.revealed())?;
//! let consensus = aggregate(&answers, None, &ConsensusConfig::default())?;
//! assert_eq!(consensus.labels, vec![Some(Outcome::Accepted as u8)]);
//! let quality = annotator_quality(&answers, &consensus, None, &QualityConfig::default())?;
//! assert_eq!(quality.len(), index.annotators.len());
//! # Ok::<(), contrib::Error>(())
//! ```

pub mod assign;
pub mod commit;
pub mod consensus;
pub mod record;
pub mod rewards;

pub use assign::{AssignError, Assignment, AssignmentSeed, MIN_ANNOTATORS_PER_ITEM};
pub use commit::{CommitBook, CommitError, Commitment, Phase, Salt};
pub use consensus::{
    Answers, Consensus, ConsensusError, annotator_quality, dawid_skene, majority_vote,
};
pub use record::{
    AnnotationRecord, Category, Field, Labels, Outcome, ProposalQuality, ProposalRecord,
    RecordError, RecordKind, Risk, SignedRecord, Source,
};
pub use rewards::{
    AnnotatorEpoch, Reward, RewardError, RewardPolicy, annotation_reward, flag_annotators,
};

/// Everything that can go wrong in this crate; each module's functions return its own detail
/// enum, which converts into this.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// A record was refused.
    #[error(transparent)]
    Record(#[from] RecordError),
    /// An assignment could not be made.
    #[error(transparent)]
    Assign(#[from] AssignError),
    /// A commit or reveal was refused.
    #[error(transparent)]
    Commit(#[from] CommitError),
    /// Answers could not be collected or aggregated.
    #[error(transparent)]
    Consensus(#[from] ConsensusError),
    /// A reward could not be computed.
    #[error(transparent)]
    Reward(#[from] RewardError),
}
