//! Commit-reveal of annotations: nobody sees another's answer before committing to their own.
//!
//! An epoch runs in two phases. While commits are open, each assigned annotator publishes a
//! [`Commitment`] to its annotation: `SHA-256("daofl/contrib/commit/v1" | annotator address |
//! annotation CID digest | salt)`, which hides the answer (the 32-byte salt is secret until the
//! reveal) and binds it to the annotator (the same annotation and salt commit differently for
//! anyone else). Once commits close, each reveals its signed annotation record and salt; the
//! [`CommitBook`] checks the reveal against the commitment.
//!
//! Copying is then useless: an annotator who waits for another's answer can no longer commit,
//! and a commitment copied from another annotator never matches a reveal of one's own.
//! A commitment value seen twice is refused outright ([`CommitError::CommitmentReused`]).
//!
//! The book is a state machine without IO: the caller feeds it commits (from the chain, where
//! the transaction's sender authenticates the annotator) and reveals (from the content store),
//! and closes the commit phase when the epoch's deadline passes. A refused input changes
//! nothing already stored.

use std::collections::{BTreeMap, BTreeSet};

use fl_core::identity::random_nonce;
use fl_core::{Address, ContentHash, ContentHasher};

use crate::assign::Assignment;
use crate::record::{AnnotationRecord, SignedRecord};

/// Domain tag of commitments.
const COMMIT_TAG: &[u8] = b"daofl/contrib/commit/v1";

/// The annotator's secret blinding value: 32 bytes from the OS CSPRNG, kept until the reveal.
#[derive(Clone, Copy, PartialEq, Eq)]
pub struct Salt(pub [u8; 32]);

impl Salt {
    /// A fresh salt from the operating system's CSPRNG.
    pub fn random() -> Self {
        Self(random_nonce())
    }
}

impl std::fmt::Debug for Salt {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Salt(..)")
    }
}

/// A commitment to one annotation.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Commitment(pub [u8; 32]);

impl Commitment {
    /// The commitment of `annotator` to the annotation record with content address
    /// `annotation`, blinded by `salt`.
    pub fn new(annotator: &Address, annotation: &ContentHash, salt: &Salt) -> Self {
        let mut h = ContentHasher::new();
        h.update(COMMIT_TAG);
        h.update(annotator.as_slice());
        h.update(annotation.as_bytes());
        h.update(&salt.0);
        Self(*h.finish().as_bytes())
    }

    /// The commitment to a signed annotation record by its annotator.
    pub fn to(annotation: &SignedRecord<AnnotationRecord>, salt: &Salt) -> Self {
        Self::new(&annotation.body().annotator, &annotation.cid(), salt)
    }
}

/// Why a commit or a reveal was refused. The book is unchanged when one is returned.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum CommitError {
    /// The annotator is not assigned the item (or the item is not in this epoch).
    #[error("{annotator} is not assigned item {item} in this epoch")]
    NotAssigned {
        /// The item.
        item: ContentHash,
        /// The annotator.
        annotator: Address,
    },
    /// The annotator already committed for this item; the first commitment stands.
    #[error("{annotator} already committed for item {item}")]
    DoubleCommit {
        /// The item.
        item: ContentHash,
        /// The annotator.
        annotator: Address,
    },
    /// The same commitment value was already submitted (by anyone, for any item).
    #[error("this commitment was already submitted: commitments are never reused")]
    CommitmentReused,
    /// The commit phase is over: commits come too late.
    #[error("the commit phase of epoch {epoch} is closed")]
    CommitPhaseClosed {
        /// The epoch.
        epoch: u64,
    },
    /// Reveals are accepted only once the commit phase is closed (an early reveal would show
    /// the answer to annotators who have not committed yet).
    #[error("reveals open when the commit phase of epoch {epoch} closes")]
    RevealTooEarly {
        /// The epoch.
        epoch: u64,
    },
    /// A reveal for another epoch than this book's.
    #[error("annotation is for epoch {found}, this book is epoch {expected}")]
    WrongEpoch {
        /// This book's epoch.
        expected: u64,
        /// The annotation's epoch.
        found: u64,
    },
    /// A reveal with no commitment before it.
    #[error("{annotator} reveals for item {item} without having committed")]
    NotCommitted {
        /// The item.
        item: ContentHash,
        /// The annotator.
        annotator: Address,
    },
    /// The annotation and salt do not hash to the commitment.
    #[error("reveal by {annotator} for item {item} does not match its commitment")]
    RevealMismatch {
        /// The item.
        item: ContentHash,
        /// The annotator.
        annotator: Address,
    },
    /// The annotator already revealed for this item.
    #[error("{annotator} already revealed for item {item}")]
    AlreadyRevealed {
        /// The item.
        item: ContentHash,
        /// The annotator.
        annotator: Address,
    },
}

/// Where an epoch's commit-reveal stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Phase {
    /// Commitments accepted, reveals refused.
    Committing,
    /// Reveals accepted, commitments refused.
    Revealing,
}

#[derive(Debug, Clone)]
struct Slot {
    commitment: Commitment,
    revealed: Option<SignedRecord<AnnotationRecord>>,
}

/// One epoch's commitments and reveals, checked against its [`Assignment`].
#[derive(Debug, Clone)]
pub struct CommitBook {
    epoch: u64,
    assignment: Assignment,
    phase: Phase,
    slots: BTreeMap<(ContentHash, Address), Slot>,
    commitments: BTreeSet<Commitment>,
}

impl CommitBook {
    /// An empty book for `epoch`, accepting commits from the annotators `assignment` names.
    pub fn new(epoch: u64, assignment: Assignment) -> Self {
        Self {
            epoch,
            assignment,
            phase: Phase::Committing,
            slots: BTreeMap::new(),
            commitments: BTreeSet::new(),
        }
    }

    /// The epoch.
    pub fn epoch(&self) -> u64 {
        self.epoch
    }

    /// The phase.
    pub fn phase(&self) -> Phase {
        self.phase
    }

    /// The assignment commits are checked against.
    pub fn assignment(&self) -> &Assignment {
        &self.assignment
    }

    /// Records `annotator`'s commitment for `item`. The caller has authenticated `annotator`
    /// (the sender of the commit transaction).
    pub fn handle_commit(
        &mut self,
        annotator: Address,
        item: ContentHash,
        commitment: Commitment,
    ) -> Result<(), CommitError> {
        if self.phase != Phase::Committing {
            return Err(CommitError::CommitPhaseClosed { epoch: self.epoch });
        }
        if !self.assignment.is_assigned(&item, &annotator) {
            return Err(CommitError::NotAssigned { item, annotator });
        }
        if self.slots.contains_key(&(item, annotator)) {
            return Err(CommitError::DoubleCommit { item, annotator });
        }
        if !self.commitments.insert(commitment) {
            return Err(CommitError::CommitmentReused);
        }
        self.slots.insert(
            (item, annotator),
            Slot {
                commitment,
                revealed: None,
            },
        );
        Ok(())
    }

    /// Ends the commit phase and opens reveals (at the epoch's commit deadline).
    pub fn close_commits(&mut self) {
        self.phase = Phase::Revealing;
    }

    /// Checks a revealed annotation against its annotator's commitment and keeps it.
    pub fn handle_reveal(
        &mut self,
        annotation: SignedRecord<AnnotationRecord>,
        salt: &Salt,
    ) -> Result<(), CommitError> {
        if self.phase != Phase::Revealing {
            return Err(CommitError::RevealTooEarly { epoch: self.epoch });
        }
        let body = annotation.body();
        let (item, annotator) = (body.item, body.annotator);
        if body.epoch != self.epoch {
            return Err(CommitError::WrongEpoch {
                expected: self.epoch,
                found: body.epoch,
            });
        }
        let Some(slot) = self.slots.get_mut(&(item, annotator)) else {
            return Err(CommitError::NotCommitted { item, annotator });
        };
        if slot.revealed.is_some() {
            return Err(CommitError::AlreadyRevealed { item, annotator });
        }
        if Commitment::to(&annotation, salt) != slot.commitment {
            return Err(CommitError::RevealMismatch { item, annotator });
        }
        slot.revealed = Some(annotation);
        Ok(())
    }

    /// The revealed annotations, by item then annotator.
    pub fn revealed(&self) -> impl Iterator<Item = &SignedRecord<AnnotationRecord>> {
        self.slots.values().filter_map(|s| s.revealed.as_ref())
    }

    /// `(item, annotator)` pairs committed but not (yet) revealed.
    pub fn unrevealed(&self) -> Vec<(ContentHash, Address)> {
        self.slots
            .iter()
            .filter(|(_, s)| s.revealed.is_none())
            .map(|(k, _)| *k)
            .collect()
    }

    /// `(item, annotator)` pairs assigned but never committed.
    pub fn missing_commits(&self) -> Vec<(ContentHash, Address)> {
        self.assignment
            .iter()
            .flat_map(|(item, annotators)| annotators.iter().map(move |a| (*item, *a)))
            .filter(|k| !self.slots.contains_key(k))
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use fl_core::MemberKey;

    use super::*;
    use crate::assign::AssignmentSeed;
    use crate::record::{Category, Labels, Outcome, ProposalQuality, Risk};

    struct Epoch {
        keys: Vec<MemberKey>,
        item: ContentHash,
        book: CommitBook,
    }

    /// Five annotators, two items, three annotators per item.
    fn epoch() -> Epoch {
        let keys: Vec<_> = (1..=5u64)
            .map(|n| MemberKey::from_hex(&format!("{n:064x}")).unwrap())
            .collect();
        let pool: Vec<_> = keys.iter().map(MemberKey::address).collect();
        let items = [ContentHash::of(b"a"), ContentHash::of(b"b")];
        let assignment = Assignment::new(AssignmentSeed([4; 32]), &items, &pool, 3).unwrap();
        Epoch {
            keys,
            item: items[0],
            book: CommitBook::new(3, assignment),
        }
    }

    impl Epoch {
        fn key_of(&self, address: &Address) -> &MemberKey {
            self.keys.iter().find(|k| k.address() == *address).unwrap()
        }

        fn assigned(&self) -> Vec<Address> {
            self.book
                .assignment()
                .annotators(&self.item)
                .unwrap()
                .to_vec()
        }

        fn unassigned(&self) -> Address {
            let assigned = self.assigned();
            self.keys
                .iter()
                .map(MemberKey::address)
                .find(|a| !assigned.contains(a))
                .unwrap()
        }

        fn annotate(&self, who: &Address, outcome: Outcome) -> SignedRecord<AnnotationRecord> {
            let body = AnnotationRecord {
                annotator: *who,
                item: self.item,
                epoch: self.book.epoch(),
                labels: Labels {
                    outcome,
                    category: Category::Process,
                    quality: ProposalQuality::new(3).unwrap(),
                    risk: Risk::Low,
                },
            };
            SignedRecord::sign(body, self.key_of(who)).unwrap()
        }
    }

    #[test]
    fn commit_then_reveal() {
        let mut e = epoch();
        let who = e.assigned();
        let mut reveals = Vec::new();
        for a in &who {
            let record = e.annotate(a, Outcome::Accepted);
            let salt = Salt::random();
            e.book
                .handle_commit(*a, e.item, Commitment::to(&record, &salt))
                .unwrap();
            reveals.push((record, salt));
        }
        assert_eq!(e.book.unrevealed().len(), 3);
        // The other item's three annotators never committed.
        assert_eq!(e.book.missing_commits().len(), 3);
        e.book.close_commits();
        for (record, salt) in reveals {
            e.book.handle_reveal(record, &salt).unwrap();
        }
        assert_eq!(e.book.revealed().count(), 3);
        assert!(e.book.unrevealed().is_empty());
    }

    #[test]
    fn reveal_that_does_not_match_is_refused() {
        let mut e = epoch();
        let a = e.assigned()[0];
        let committed = e.annotate(&a, Outcome::Accepted);
        let salt = Salt([1; 32]);
        e.book
            .handle_commit(a, e.item, Commitment::to(&committed, &salt))
            .unwrap();
        e.book.close_commits();
        // Another answer than the one committed to.
        let changed = e.annotate(&a, Outcome::Rejected);
        assert!(matches!(
            e.book.handle_reveal(changed, &salt),
            Err(CommitError::RevealMismatch { .. })
        ));
        // The right answer with the wrong salt.
        assert!(matches!(
            e.book.handle_reveal(committed.clone(), &Salt([2; 32])),
            Err(CommitError::RevealMismatch { .. })
        ));
        // Nothing was lost: the right reveal still goes through, once.
        e.book.handle_reveal(committed.clone(), &salt).unwrap();
        assert!(matches!(
            e.book.handle_reveal(committed, &salt),
            Err(CommitError::AlreadyRevealed { .. })
        ));
    }

    #[test]
    fn reveal_before_commit_is_refused() {
        let mut e = epoch();
        let who = e.assigned();
        let record = e.annotate(&who[0], Outcome::Accepted);
        let salt = Salt([1; 32]);
        // While commits are open, even a committed annotation may not be revealed.
        e.book
            .handle_commit(who[0], e.item, Commitment::to(&record, &salt))
            .unwrap();
        assert_eq!(
            e.book.handle_reveal(record, &salt),
            Err(CommitError::RevealTooEarly { epoch: 3 })
        );
        e.book.close_commits();
        // An annotator who never committed cannot reveal.
        let late = e.annotate(&who[1], Outcome::Accepted);
        assert!(matches!(
            e.book.handle_reveal(late, &salt),
            Err(CommitError::NotCommitted { .. })
        ));
    }

    #[test]
    fn double_commit_is_refused_and_the_first_stands() {
        let mut e = epoch();
        let a = e.assigned()[0];
        let first = e.annotate(&a, Outcome::Accepted);
        let second = e.annotate(&a, Outcome::Rejected);
        let salt = Salt([1; 32]);
        e.book
            .handle_commit(a, e.item, Commitment::to(&first, &salt))
            .unwrap();
        assert!(matches!(
            e.book
                .handle_commit(a, e.item, Commitment::to(&second, &salt)),
            Err(CommitError::DoubleCommit { .. })
        ));
        e.book.close_commits();
        assert!(e.book.handle_reveal(second, &salt).is_err());
        e.book.handle_reveal(first, &salt).unwrap();
    }

    #[test]
    fn copied_commitment_is_refused_and_cannot_be_revealed() {
        let mut e = epoch();
        let who = e.assigned();
        let honest = e.annotate(&who[0], Outcome::Accepted);
        let salt = Salt([1; 32]);
        let c = Commitment::to(&honest, &salt);
        e.book.handle_commit(who[0], e.item, c).unwrap();
        // A copier replays the honest commitment.
        assert_eq!(
            e.book.handle_commit(who[1], e.item, c),
            Err(CommitError::CommitmentReused)
        );
        // The same answer and salt commit differently for another annotator.
        let copy = e.annotate(&who[1], Outcome::Accepted);
        assert_ne!(Commitment::to(&copy, &salt), c);
    }

    #[test]
    fn unassigned_and_late_commits_are_refused() {
        let mut e = epoch();
        let outsider = e.unassigned();
        let record = e.annotate(&outsider, Outcome::Accepted);
        let c = Commitment::to(&record, &Salt([1; 32]));
        assert!(matches!(
            e.book.handle_commit(outsider, e.item, c),
            Err(CommitError::NotAssigned { .. })
        ));
        assert!(matches!(
            e.book
                .handle_commit(outsider, ContentHash::of(b"not in epoch"), c),
            Err(CommitError::NotAssigned { .. })
        ));
        e.book.close_commits();
        let a = e.assigned()[0];
        assert_eq!(
            e.book.handle_commit(a, e.item, c),
            Err(CommitError::CommitPhaseClosed { epoch: 3 })
        );
    }

    #[test]
    fn reveal_for_another_epoch_is_refused() {
        let mut e = epoch();
        let a = e.assigned()[0];
        let mut body = e.annotate(&a, Outcome::Accepted).into_body();
        body.epoch = 4;
        let record = SignedRecord::sign(body, e.key_of(&a)).unwrap();
        let salt = Salt([1; 32]);
        e.book
            .handle_commit(a, e.item, Commitment::to(&record, &salt))
            .unwrap();
        e.book.close_commits();
        assert_eq!(
            e.book.handle_reveal(record, &salt),
            Err(CommitError::WrongEpoch {
                expected: 3,
                found: 4
            })
        );
    }
}
