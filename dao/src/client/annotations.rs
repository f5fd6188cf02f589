//! AnnotationBook calls of [`Dao`]: join an annotation epoch's pool, open an epoch on its items,
//! draw its seed, commit and reveal annotations, read an epoch, its pool, seed, assignment and
//! commitments, and replay the book's events (what an indexer rebuilds the epoch from).
//!
//! Digests are the SHA-256 digests of the records' CIDs (`contrib`'s content addresses): the
//! item a proposal record's, the revealed annotation an annotation record's. The commitment is
//! `contrib::commit::Commitment`'s, which the contract recomputes ([`Dao::commitment_on_chain`]).

use alloy::primitives::{Address, B256, Log};
use alloy::sol_types::{SolEvent, SolInterface};

use super::Dao;
use crate::backend::TxReceipt;
use crate::bindings::AnnotationBook;
use crate::data::RecordBatch;
use crate::{Error, Result};

/// An opened annotation epoch as the AnnotationBook holds it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct AnnotationEpoch {
    /// Merkle root of the items' CID digests ([`RecordBatch::root`]).
    pub items_root: B256,
    /// Number of items.
    pub items: u32,
    /// Annotators each item is assigned to.
    pub per_item: u8,
    /// The block whose hash is the assignment seed (the opening's block, or a later one if the
    /// draw was re-armed).
    pub seed_block: u64,
    /// The seed once drawn (by the first commit or [`Dao::draw_annotation_seed`]).
    pub seed: Option<B256>,
    /// Last second commits are accepted.
    pub commit_deadline: u64,
    /// Last second reveals are accepted.
    pub reveal_deadline: u64,
}

/// The AnnotationBook's governed parameters (for epochs opened from now on).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct AnnotationParams {
    /// Seconds from an opening during which commits are accepted.
    pub commit_secs: u64,
    /// Seconds after the commit deadline during which reveals are accepted.
    pub reveal_secs: u64,
    /// Annotators each item is assigned to.
    pub annotators_per_item: u8,
}

/// One event of the AnnotationBook, in chain order.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AnnotationEvent {
    /// An annotator joined an epoch's pool.
    Joined {
        /// The epoch.
        epoch: u64,
        /// The annotator.
        annotator: Address,
        /// Its position in the pool (joining order, from 0).
        position: u32,
    },
    /// An epoch opened.
    Opened {
        /// The epoch.
        epoch: u64,
        /// Merkle root of its items' CID digests.
        items_root: B256,
        /// Number of items.
        items: u32,
        /// Size of the pool, now closed.
        pool_size: u32,
        /// Annotators per item.
        per_item: u8,
        /// The block whose hash is the seed.
        seed_block: u64,
        /// Last second of commits.
        commit_deadline: u64,
        /// Last second of reveals.
        reveal_deadline: u64,
    },
    /// An epoch's seed was drawn.
    SeedDrawn {
        /// The epoch.
        epoch: u64,
        /// The seed (`contrib::AssignmentSeed`'s bytes).
        seed: B256,
        /// The block it is the hash of.
        seed_block: u64,
    },
    /// An annotation was committed.
    Committed(AnnotationCommit),
    /// An annotation was revealed.
    Revealed(AnnotationReveal),
}

/// An accepted commitment (from its `AnnotationCommitted` event).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct AnnotationCommit {
    /// The epoch.
    pub epoch: u64,
    /// The item's CID digest.
    pub item: B256,
    /// The annotator (the transaction's sender).
    pub annotator: Address,
    /// The commitment.
    pub commitment: B256,
}

/// An accepted reveal (from its `AnnotationRevealed` event).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct AnnotationReveal {
    /// The epoch.
    pub epoch: u64,
    /// The item's CID digest.
    pub item: B256,
    /// The annotator.
    pub annotator: Address,
    /// The annotation record's CID digest (the record lives in the content store).
    pub annotation: B256,
    /// The salt the commitment was blinded with.
    pub salt: B256,
}

/// Why the AnnotationBook refused a call: its named errors, decoded.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum AnnotationRefusal {
    /// The epoch is open already (joining and opening are over).
    EpochAlreadyOpen {
        /// The epoch.
        epoch: u64,
    },
    /// The epoch is not open.
    EpochNotOpen {
        /// The epoch.
        epoch: u64,
    },
    /// The account joined this epoch already.
    AlreadyJoined {
        /// The epoch.
        epoch: u64,
    },
    /// The pool is full (`MAX_POOL`).
    PoolFull {
        /// The epoch.
        epoch: u64,
    },
    /// The pool is smaller than the annotators each item needs.
    PoolTooSmall {
        /// Pool size.
        pool: u64,
        /// Annotators per item.
        per_item: u8,
    },
    /// A zero items root or no items.
    InvalidItems,
    /// The account is not staked as an annotator (at least the minimum), or is jailed.
    NotAnnotator {
        /// The account.
        account: Address,
    },
    /// The item is not in the epoch (or the proof is wrong).
    ItemNotInEpoch {
        /// The item.
        item: B256,
    },
    /// The seed cannot be drawn yet.
    SeedNotReady {
        /// The epoch.
        epoch: u64,
    },
    /// The annotator is not assigned the item.
    NotAssigned {
        /// The item.
        item: B256,
        /// The annotator.
        annotator: Address,
    },
    /// The annotator committed for this item already; the first commitment stands.
    DoubleCommit {
        /// The item.
        item: B256,
        /// The annotator.
        annotator: Address,
    },
    /// The commitment value was used already.
    CommitmentReused,
    /// A zero commitment.
    ZeroCommitment,
    /// Commits closed at `deadline`.
    CommitPhaseClosed {
        /// The commit deadline.
        deadline: u64,
    },
    /// Reveals open after `commit_deadline`.
    RevealTooEarly {
        /// The commit deadline.
        commit_deadline: u64,
    },
    /// Reveals closed at `deadline`.
    RevealPhaseClosed {
        /// The reveal deadline.
        deadline: u64,
    },
    /// A reveal without a commitment.
    NotCommitted {
        /// The item.
        item: B256,
        /// The annotator.
        annotator: Address,
    },
    /// The annotation and salt do not hash to the commitment.
    RevealMismatch {
        /// The item.
        item: B256,
        /// The annotator.
        annotator: Address,
    },
    /// The annotator revealed for this item already.
    AlreadyRevealed {
        /// The item.
        item: B256,
        /// The annotator.
        annotator: Address,
    },
    /// Parameters out of range.
    InvalidParams,
}

impl AnnotationRefusal {
    /// The AnnotationBook refusal `error` carries, if it is one.
    pub fn of(error: &Error) -> Option<Self> {
        use AnnotationBook::AnnotationBookErrors as E;
        let Error::Reverted(revert) = error else {
            return None;
        };
        Some(match E::abi_decode(&revert.data).ok()? {
            E::EpochAlreadyOpen(e) => Self::EpochAlreadyOpen { epoch: e.epoch },
            E::EpochNotOpen(e) => Self::EpochNotOpen { epoch: e.epoch },
            E::AlreadyJoined(e) => Self::AlreadyJoined { epoch: e.epoch },
            E::PoolFull(e) => Self::PoolFull { epoch: e.epoch },
            E::PoolTooSmall(e) => Self::PoolTooSmall {
                pool: u64::try_from(e.pool).unwrap_or(u64::MAX),
                per_item: e.perItem,
            },
            E::InvalidItems(_) => Self::InvalidItems,
            E::NotAnnotator(e) => Self::NotAnnotator { account: e.account },
            E::ItemNotInEpoch(e) => Self::ItemNotInEpoch { item: e.item },
            E::SeedNotReady(e) => Self::SeedNotReady { epoch: e.epoch },
            E::NotAssigned(e) => Self::NotAssigned {
                item: e.item,
                annotator: e.annotator,
            },
            E::DoubleCommit(e) => Self::DoubleCommit {
                item: e.item,
                annotator: e.annotator,
            },
            E::CommitmentReused(_) => Self::CommitmentReused,
            E::ZeroCommitment(_) => Self::ZeroCommitment,
            E::CommitPhaseClosed(e) => Self::CommitPhaseClosed {
                deadline: e.deadline,
            },
            E::RevealTooEarly(e) => Self::RevealTooEarly {
                commit_deadline: e.commitDeadline,
            },
            E::RevealPhaseClosed(e) => Self::RevealPhaseClosed {
                deadline: e.deadline,
            },
            E::NotCommitted(e) => Self::NotCommitted {
                item: e.item,
                annotator: e.annotator,
            },
            E::RevealMismatch(e) => Self::RevealMismatch {
                item: e.item,
                annotator: e.annotator,
            },
            E::AlreadyRevealed(e) => Self::AlreadyRevealed {
                item: e.item,
                annotator: e.annotator,
            },
            E::InvalidParams(_) => Self::InvalidParams,
            _ => return None,
        })
    }
}

impl Dao {
    fn annotation_book(&self) -> Result<Address> {
        let address = self.deployment.annotation_book;
        if address.is_zero() {
            return Err(Error::NotDeployed("the AnnotationBook"));
        }
        Ok(address)
    }

    /// Joins `epoch`'s pool (the sender must be staked as an annotator, unjailed, and the epoch
    /// not opened yet).
    ///
    /// # Errors
    /// [`Error::NotDeployed`]; [`Error::Reverted`] ([`AnnotationRefusal`]): `NotAnnotator`,
    /// `AlreadyJoined`, `EpochAlreadyOpen`, `PoolFull`.
    pub async fn join_annotation_epoch(&self, epoch: u64) -> Result<TxReceipt> {
        self.send(
            self.annotation_book()?,
            AnnotationBook::joinCall { epoch_: epoch },
        )
        .await
    }

    /// Opens `epoch` on `items` (the sender holds OPENER_ROLE): closes the pool, sets the
    /// deadlines; the seed is the hash of the block this transaction lands in.
    ///
    /// # Errors
    /// [`Error::InvalidInput`] for more than `u32::MAX` items; [`Error::Reverted`]:
    /// `AccessControlUnauthorizedAccount`, `EpochAlreadyOpen`, `PoolTooSmall`, `InvalidItems`.
    pub async fn open_annotation_epoch(
        &self,
        epoch: u64,
        items: &RecordBatch,
    ) -> Result<TxReceipt> {
        let count = u32::try_from(items.len())
            .map_err(|_| Error::InvalidInput(format!("{} items in one epoch", items.len())))?;
        self.send(
            self.annotation_book()?,
            AnnotationBook::openEpochCall {
                epoch_: epoch,
                itemsRoot: items.root(),
                items: count,
            },
        )
        .await
    }

    /// Draws `epoch`'s seed (anyone; the first commit does it too). A no-op once drawn; re-arms
    /// the draw on the current block if the seed block is more than 256 blocks old.
    ///
    /// # Errors
    /// [`Error::Reverted`]: `EpochNotOpen`, `SeedNotReady` (in the opening's own block).
    pub async fn draw_annotation_seed(&self, epoch: u64) -> Result<TxReceipt> {
        self.send(
            self.annotation_book()?,
            AnnotationBook::drawSeedCall { epoch_: epoch },
        )
        .await
    }

    /// Commits `commitment` (`contrib::Commitment::to(record, salt)`'s bytes) to an annotation
    /// of `item`, one of the epoch's `items`, whose inclusion proof is sent along.
    ///
    /// # Errors
    /// [`Error::InvalidInput`] when `item` is not in `items`; [`Error::Reverted`]
    /// ([`AnnotationRefusal`]): `NotAssigned`, `DoubleCommit`, `CommitmentReused`,
    /// `CommitPhaseClosed`, `NotAnnotator`, `ItemNotInEpoch`, `EpochNotOpen`, `SeedNotReady`,
    /// `ZeroCommitment`.
    pub async fn commit_annotation(
        &self,
        epoch: u64,
        items: &RecordBatch,
        item: B256,
        commitment: B256,
    ) -> Result<TxReceipt> {
        let proof = items.proof(item).ok_or_else(|| {
            Error::InvalidInput(format!("item {item} is not in the epoch's items"))
        })?;
        self.commit_annotation_with_proof(epoch, item, proof, commitment)
            .await
    }

    /// [`commit_annotation`](Self::commit_annotation) with an inclusion proof given as is.
    ///
    /// # Errors
    /// As [`commit_annotation`](Self::commit_annotation).
    pub async fn commit_annotation_with_proof(
        &self,
        epoch: u64,
        item: B256,
        proof: Vec<B256>,
        commitment: B256,
    ) -> Result<TxReceipt> {
        self.send(
            self.annotation_book()?,
            AnnotationBook::commitCall {
                epoch_: epoch,
                item,
                proof,
                commitment,
            },
        )
        .await
    }

    /// Reveals the annotation committed for `item`: the annotation record's CID digest and the
    /// salt (after the commit deadline, until the reveal deadline).
    ///
    /// # Errors
    /// [`Error::Reverted`] ([`AnnotationRefusal`]): `RevealMismatch`, `NotCommitted`,
    /// `AlreadyRevealed`, `RevealTooEarly`, `RevealPhaseClosed`, `EpochNotOpen`.
    pub async fn reveal_annotation(
        &self,
        epoch: u64,
        item: B256,
        annotation: B256,
        salt: B256,
    ) -> Result<TxReceipt> {
        self.send(
            self.annotation_book()?,
            AnnotationBook::revealCall {
                epoch_: epoch,
                item,
                annotation,
                salt,
            },
        )
        .await
    }

    /// `epoch` as the book holds it; `None` when it never opened.
    ///
    /// # Errors
    /// [`Error::NotDeployed`], or an endpoint error.
    pub async fn annotation_epoch(&self, epoch: u64) -> Result<Option<AnnotationEpoch>> {
        let e = self
            .view(
                self.annotation_book()?,
                AnnotationBook::epochCall { epoch_: epoch },
            )
            .await?;
        Ok(e.opened.then_some(AnnotationEpoch {
            items_root: e.itemsRoot,
            items: e.items,
            per_item: e.perItem,
            seed_block: e.seedBlock,
            seed: (!e.seed.is_zero()).then_some(e.seed),
            commit_deadline: e.commitDeadline,
            reveal_deadline: e.revealDeadline,
        }))
    }

    /// `epoch`'s assignment seed, drawn or readable from its block's hash.
    ///
    /// # Errors
    /// [`Error::Reverted`]: `EpochNotOpen`, `SeedNotReady`.
    pub async fn annotation_seed(&self, epoch: u64) -> Result<B256> {
        self.view(
            self.annotation_book()?,
            AnnotationBook::seedOfCall { epoch_: epoch },
        )
        .await
    }

    /// `epoch`'s pool, in joining order.
    ///
    /// # Errors
    /// [`Error::NotDeployed`], or an endpoint error.
    pub async fn annotation_pool(&self, epoch: u64) -> Result<Vec<Address>> {
        self.view(
            self.annotation_book()?,
            AnnotationBook::poolCall { epoch_: epoch },
        )
        .await
    }

    /// Whether the book assigns `item` to `annotator` in `epoch` (its rendezvous rank among the
    /// pool; the item's membership in the epoch is not checked).
    ///
    /// # Errors
    /// [`Error::Reverted`]: `EpochNotOpen`, `SeedNotReady`.
    pub async fn is_assigned_on_chain(
        &self,
        epoch: u64,
        item: B256,
        annotator: Address,
    ) -> Result<bool> {
        self.view(
            self.annotation_book()?,
            AnnotationBook::isAssignedCall {
                epoch_: epoch,
                item,
                annotator,
            },
        )
        .await
    }

    /// `annotator`'s commitment for `item` in `epoch` and whether it was revealed; `None` when
    /// it never committed.
    ///
    /// # Errors
    /// [`Error::NotDeployed`], or an endpoint error.
    pub async fn annotation_commitment(
        &self,
        epoch: u64,
        item: B256,
        annotator: Address,
    ) -> Result<Option<(B256, bool)>> {
        let r = self
            .view(
                self.annotation_book()?,
                AnnotationBook::commitmentOfCall {
                    epoch_: epoch,
                    item,
                    annotator,
                },
            )
            .await?;
        Ok((!r.commitment.is_zero()).then_some((r.commitment, r.revealed)))
    }

    /// The commitment the contract computes for `annotator`, annotation CID digest `annotation`
    /// and `salt` (equal to `contrib::Commitment::new`'s).
    ///
    /// # Errors
    /// [`Error::NotDeployed`], or an endpoint error.
    pub async fn commitment_on_chain(
        &self,
        annotator: Address,
        annotation: B256,
        salt: B256,
    ) -> Result<B256> {
        self.view(
            self.annotation_book()?,
            AnnotationBook::commitmentForCall {
                annotator,
                annotation,
                salt,
            },
        )
        .await
    }

    /// The rendezvous score the contract computes (equal to `contrib::assign::score`'s).
    ///
    /// # Errors
    /// [`Error::NotDeployed`], or an endpoint error.
    pub async fn assignment_score_on_chain(
        &self,
        seed: B256,
        item: B256,
        annotator: Address,
    ) -> Result<B256> {
        self.view(
            self.annotation_book()?,
            AnnotationBook::scoreCall {
                seed,
                item,
                annotator,
            },
        )
        .await
    }

    /// The parameters epochs opened from now on get.
    ///
    /// # Errors
    /// [`Error::NotDeployed`], or an endpoint error.
    pub async fn annotation_params(&self) -> Result<AnnotationParams> {
        let p = self
            .view(self.annotation_book()?, AnnotationBook::paramsCall {})
            .await?;
        Ok(AnnotationParams {
            commit_secs: p.commitPeriod,
            reveal_secs: p.revealPeriod,
            annotators_per_item: p.annotatorsPerItem,
        })
    }

    /// Every AnnotationBook event since the deployment, in chain order: what an indexer replays
    /// to rebuild pools, seeds, commitments and reveals (the records come from the content store).
    ///
    /// # Errors
    /// [`Error::NotDeployed`], or an endpoint error.
    pub async fn annotation_events(&self) -> Result<Vec<AnnotationEvent>> {
        let logs = self
            .backend
            .logs(self.annotation_book()?, self.deployment.block_number)
            .await?;
        Ok(logs.iter().filter_map(annotation_event).collect())
    }

    /// The accepted commitments of `epoch`, in chain order.
    ///
    /// # Errors
    /// As [`annotation_events`](Self::annotation_events).
    pub async fn annotation_commits(&self, epoch: u64) -> Result<Vec<AnnotationCommit>> {
        Ok(self
            .annotation_events()
            .await?
            .into_iter()
            .filter_map(|e| match e {
                AnnotationEvent::Committed(c) if c.epoch == epoch => Some(c),
                _ => None,
            })
            .collect())
    }

    /// The accepted reveals of `epoch`, in chain order.
    ///
    /// # Errors
    /// As [`annotation_events`](Self::annotation_events).
    pub async fn annotation_reveals(&self, epoch: u64) -> Result<Vec<AnnotationReveal>> {
        Ok(self
            .annotation_events()
            .await?
            .into_iter()
            .filter_map(|e| match e {
                AnnotationEvent::Revealed(r) if r.epoch == epoch => Some(r),
                _ => None,
            })
            .collect())
    }
}

fn annotation_event(log: &Log) -> Option<AnnotationEvent> {
    use AnnotationBook as B;
    let topic = *log.topics().first()?;
    Some(if topic == B::AnnotatorJoined::SIGNATURE_HASH {
        let e = B::AnnotatorJoined::decode_log(log).ok()?;
        AnnotationEvent::Joined {
            epoch: e.epoch,
            annotator: e.annotator,
            position: e.position,
        }
    } else if topic == B::EpochOpened::SIGNATURE_HASH {
        let e = B::EpochOpened::decode_log(log).ok()?;
        AnnotationEvent::Opened {
            epoch: e.epoch,
            items_root: e.itemsRoot,
            items: e.items,
            pool_size: e.poolSize,
            per_item: e.perItem,
            seed_block: e.seedBlock,
            commit_deadline: e.commitDeadline,
            reveal_deadline: e.revealDeadline,
        }
    } else if topic == B::SeedDrawn::SIGNATURE_HASH {
        let e = B::SeedDrawn::decode_log(log).ok()?;
        AnnotationEvent::SeedDrawn {
            epoch: e.epoch,
            seed: e.seed,
            seed_block: e.seedBlock,
        }
    } else if topic == B::AnnotationCommitted::SIGNATURE_HASH {
        let e = B::AnnotationCommitted::decode_log(log).ok()?;
        AnnotationEvent::Committed(AnnotationCommit {
            epoch: e.epoch,
            item: e.item,
            annotator: e.annotator,
            commitment: e.commitment,
        })
    } else if topic == B::AnnotationRevealed::SIGNATURE_HASH {
        let e = B::AnnotationRevealed::decode_log(log).ok()?;
        AnnotationEvent::Revealed(AnnotationReveal {
            epoch: e.epoch,
            item: e.item,
            annotator: e.annotator,
            annotation: e.annotation,
            salt: e.salt,
        })
    } else {
        return None;
    })
}
