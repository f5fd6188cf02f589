//! One annotation epoch off chain: which items it covers, who is assigned what, the index of its
//! commitments and reveals, and its settlement (consensus, annotator quality, rewards, flags).
//!
//! The chain holds an epoch's items as a Merkle root only; [`epoch_items`] finds the item list
//! among the proposal records of the index (all of them, or one registered batch) whose root is
//! the epoch's. [`epoch_assignment`] recomputes the assignment from the chain's seed and pool
//! (`contrib::assign`, which the AnnotationBook checks on every commit). [`index_epoch`] brings
//! the index up to date with the book's events (idempotent: what is indexed stays).
//! [`settle_epoch`] is the coordinator's and the validators' computation once reveals close:
//! every revealed record is read from the content store and checked against its reveal,
//! Dawid-Skene (or majority vote for small counts) gives the consensus of each question,
//! `annotator_quality` scores each annotator against it and the gold items, the DAO's reward
//! formula prices each annotator's epoch and annotators below the quality floor are flagged with
//! their signed answers as evidence. Everyone who runs it on the same chain and records gets the
//! same outcome: the validators sign its reward root and its verdicts.

use std::collections::{BTreeMap, BTreeSet, HashMap};

use contrib::consensus::{
    AnnotatorQuality, ConsensusConfig, QualityConfig, aggregate, annotator_quality,
};
use contrib::rewards::{epoch_score, score_bps};
use contrib::{
    AnnotationRecord, Answers, AssignError, Assignment, AssignmentSeed, Consensus, ConsensusError,
    Field, RewardError, RewardPolicy, SignedRecord, annotation_reward, flag_annotators,
};
use dao::data::RecordBatch;
use dao::{AnnotationEpoch, Dao};
use fl_core::{Address, ContentHash};
use fl_db::B256;
use fl_db::data::{CommitmentRecord, ConsensusRecord, LabelField, QualityRecord, RecordKind};

use super::{ContentStore, ContributeError, ContributedRecord};

/// Why an epoch could not be read, indexed or settled.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum EpochError {
    /// The epoch never opened.
    #[error("annotation epoch {epoch} is not open")]
    NotOpen {
        /// The epoch.
        epoch: u64,
    },
    /// No list of proposal records known here has the epoch's items root.
    #[error(
        "epoch {epoch}: no set of indexed proposal records has its items root {root:#x} \
         ({items} items); index the proposal batches it was opened on, or pass the item list"
    )]
    ItemsUnknown {
        /// The epoch.
        epoch: u64,
        /// Its items root on chain.
        root: B256,
        /// Its number of items on chain.
        items: u32,
    },
    /// An item list whose Merkle root is not the epoch's.
    #[error("epoch {epoch}: the items given hash to {computed:#x}, the chain holds {root:#x}")]
    ItemsMismatch {
        /// The epoch.
        epoch: u64,
        /// The items root on chain.
        root: B256,
        /// The root of the items given.
        computed: B256,
    },
    /// The assignment could not be made from the chain's pool.
    #[error("assignment: {0}")]
    Assign(#[from] AssignError),
    /// Answers could not be aggregated.
    #[error("consensus: {0}")]
    Consensus(#[from] ConsensusError),
    /// A reward could not be computed.
    #[error("reward: {0}")]
    Reward(#[from] RewardError),
}

/// What [`settle_epoch`] runs with: the governed reward parameters, EM's and the quality blend's.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct EpochSettings {
    /// Rewards and the flagging floor.
    pub policy: RewardPolicy,
    /// When Dawid-Skene is trusted over majority vote.
    pub consensus: ConsensusConfig,
    /// How gold and model estimates of quality combine.
    pub quality: QualityConfig,
}

/// A known answer hidden among an epoch's items.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct GoldLabel {
    /// The proposal record.
    pub item: ContentHash,
    /// The question.
    pub field: Field,
    /// The known class.
    pub class: u8,
}

/// The consensus of one question over the epoch's answered items.
#[derive(Debug, Clone, PartialEq)]
pub struct FieldConsensus {
    /// The question.
    pub field: Field,
    /// Item index -> proposal record.
    pub items: Vec<ContentHash>,
    /// Labels, posteriors and confusion matrices (annotators as [`EpochOutcome::annotators`]).
    pub consensus: Consensus,
}

impl FieldConsensus {
    /// The consensus class of `item`, if it was answered.
    pub fn label(&self, item: &ContentHash) -> Option<u8> {
        let i = self.items.iter().position(|x| x == item)?;
        self.consensus.labels.get(i).copied().flatten()
    }
}

/// One annotator's epoch.
#[derive(Debug, Clone, PartialEq)]
pub struct AnnotatorScore {
    /// The annotator.
    pub annotator: Address,
    /// Annotations counted (revealed, assigned, their record available and consistent).
    pub annotations: u64,
    /// Its quality per question.
    pub per_field: Vec<(Field, AnnotatorQuality)>,
    /// The epoch score: per-question scores weighted by answers (`contrib::rewards::epoch_score`).
    pub score: f64,
    /// Order of its first registered batch among contributors, from 0.
    pub contributor_rank: u64,
}

/// One signed answer held against a flagged annotator.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct EvidenceAnswer {
    /// The question.
    pub field: Field,
    /// The proposal record (CID).
    pub item: String,
    /// The signed annotation record (CID).
    pub record: Option<String>,
    /// The class answered.
    pub answered: u8,
    /// The consensus class.
    pub consensus: Option<u8>,
    /// The known class of a gold item.
    pub gold: Option<u8>,
}

/// An annotator flagged in an epoch, with the evidence a verdict is signed over.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct FlaggedAnnotator {
    /// The epoch.
    pub epoch: u64,
    /// The annotator.
    pub annotator: Address,
    /// Its epoch score in basis points (below the floor).
    pub score_bps: i32,
    /// Its answers that disagree with the consensus or with gold, question by question.
    pub evidence: Vec<EvidenceAnswer>,
}

impl FlaggedAnnotator {
    /// The evidence document (compact JSON): what validators re-check and publish.
    pub fn evidence_json(&self) -> Vec<u8> {
        serde_json::to_vec(self).unwrap_or_default()
    }

    /// The SHA-256 of [`evidence_json`](Self::evidence_json): the `evidence` a slashing verdict
    /// names.
    pub fn evidence_hash(&self) -> B256 {
        B256::from(*ContentHash::of(&self.evidence_json()).as_bytes())
    }
}

/// What an epoch settles to.
#[derive(Debug, Clone, PartialEq)]
pub struct EpochOutcome {
    /// The epoch.
    pub epoch: u64,
    /// Annotator index -> address (the consensus's confusion matrices use these indices).
    pub annotators: Vec<Address>,
    /// Per question.
    pub consensus: Vec<FieldConsensus>,
    /// Per annotator, by address.
    pub quality: Vec<AnnotatorScore>,
    /// Per annotator, by address: the reward by the DAO's formula (zero when flagged).
    pub rewards: Vec<(Address, contrib::Reward)>,
    /// Annotators flagged, lowest score first.
    pub flags: Vec<FlaggedAnnotator>,
    /// Reveals left out: the record is not in the content store or does not match its reveal.
    pub unavailable: Vec<(Address, B256)>,
}

impl EpochOutcome {
    /// The consensus of `field`.
    pub fn field(&self, field: Field) -> Option<&FieldConsensus> {
        self.consensus.iter().find(|c| c.field == field)
    }

    /// The non-zero rewards as `(account, base units)`, what the reward tree is built from.
    pub fn reward_leaves(&self) -> Vec<(Address, dao::chain_anchor::alloy::primitives::U256)> {
        self.rewards
            .iter()
            .filter(|(_, r)| r.total > 0)
            .map(|(a, r)| {
                (
                    *a,
                    dao::chain_anchor::alloy::primitives::U256::from(r.total),
                )
            })
            .collect()
    }

    /// The reward list as `dao::RewardTree::load` and `fl-client contribute rewards --claim`
    /// read it: `[{"account": "0x…", "amount": "<decimal base units>"}]`.
    pub fn reward_list_json(&self) -> Vec<u8> {
        let list: Vec<serde_json::Value> = self
            .reward_leaves()
            .into_iter()
            .map(|(a, v)| serde_json::json!({ "account": a.to_checksum(None), "amount": v.to_string() }))
            .collect();
        serde_json::to_vec_pretty(&list).unwrap_or_default()
    }
}

fn digest(cid: &ContentHash) -> B256 {
    B256::from(*cid.as_bytes())
}

fn label_field(field: Field) -> LabelField {
    match field {
        Field::Outcome => LabelField::Outcome,
        Field::Category => LabelField::Category,
        Field::Quality => LabelField::Quality,
        Field::Risk => LabelField::Risk,
    }
}

async fn opened(dao: &Dao, epoch: u64) -> Result<AnnotationEpoch, ContributeError> {
    dao.annotation_epoch(epoch)
        .await?
        .ok_or_else(|| EpochError::NotOpen { epoch }.into())
}

/// Checks that `items` are the epoch's (their Merkle root is the one on chain).
pub async fn check_items(
    dao: &Dao,
    epoch: u64,
    items: &[ContentHash],
) -> Result<RecordBatch, ContributeError> {
    let e = opened(dao, epoch).await?;
    let batch = RecordBatch::new(&items.iter().map(digest).collect::<Vec<_>>())
        .map_err(|_| ContributeError::EmptyBatch)?;
    if batch.root() != e.items_root {
        return Err(EpochError::ItemsMismatch {
            epoch,
            root: e.items_root,
            computed: batch.root(),
        }
        .into());
    }
    Ok(batch)
}

/// The epoch's items, found among the proposal records of the index: all of them, or those of
/// one registered batch, whichever has the epoch's items root.
pub async fn epoch_items(
    dao: &Dao,
    db: &fl_db::Store,
    epoch: u64,
) -> Result<Vec<ContentHash>, ContributeError> {
    let e = opened(dao, epoch).await?;
    let mut all = BTreeSet::new();
    let mut candidates = Vec::new();
    for batch in db.batches().await? {
        let proposals: Vec<B256> = db
            .batch_records(&batch.root)
            .await?
            .into_iter()
            .filter(|r| matches!(r.kind, RecordKind::Proposal))
            .map(|r| r.cid)
            .collect();
        all.extend(proposals.iter().copied());
        candidates.push(proposals);
    }
    candidates.push(all.into_iter().collect());
    for digests in candidates {
        if digests.len() != e.items as usize {
            continue;
        }
        if let Ok(batch) = RecordBatch::new(&digests)
            && batch.root() == e.items_root
        {
            return Ok(batch
                .digests()
                .iter()
                .map(|d| ContentHash::from_digest(d.0))
                .collect());
        }
    }
    Err(EpochError::ItemsUnknown {
        epoch,
        root: e.items_root,
        items: e.items,
    }
    .into())
}

/// The epoch's assignment recomputed from the chain's seed and pool (what the AnnotationBook
/// checks every commit against).
pub async fn epoch_assignment(
    dao: &Dao,
    epoch: u64,
    items: &[ContentHash],
) -> Result<Assignment, ContributeError> {
    let e = opened(dao, epoch).await?;
    check_items(dao, epoch, items).await?;
    let seed = dao.annotation_seed(epoch).await?;
    let pool = dao.annotation_pool(epoch).await?;
    Assignment::new(
        AssignmentSeed(seed.0),
        items,
        &pool,
        usize::from(e.per_item),
    )
    .map_err(|e| EpochError::Assign(e).into())
}

/// Brings the index up to date with the epoch's events: every assignment, every commitment and
/// every reveal the chain holds that the index does not yet. Rows already indexed stay.
pub async fn index_epoch(
    dao: &Dao,
    db: &fl_db::Store,
    epoch: u64,
    items: &[ContentHash],
) -> Result<(), ContributeError> {
    let assignment = epoch_assignment(dao, epoch, items).await?;
    for item in items {
        let d = digest(item);
        let have: BTreeSet<Address> = db.item_annotators(epoch, &d).await?.into_iter().collect();
        let missing: Vec<(B256, Address)> = assignment
            .annotators(item)
            .unwrap_or_default()
            .iter()
            .filter(|a| !have.contains(*a))
            .map(|a| (d, *a))
            .collect();
        if !missing.is_empty() {
            db.add_assignments(epoch, &missing).await?;
        }
    }
    let indexed: HashMap<(B256, Address), CommitmentRecord> = db
        .commitments(epoch)
        .await?
        .into_iter()
        .map(|c| ((c.item, c.annotator), c))
        .collect();
    for c in dao.annotation_commits(epoch).await? {
        if !indexed.contains_key(&(c.item, c.annotator)) {
            db.add_commitment(&CommitmentRecord {
                epoch,
                item: c.item,
                annotator: c.annotator,
                commitment: c.commitment,
                revealed: None,
            })
            .await?;
        }
    }
    for r in dao.annotation_reveals(epoch).await? {
        let done = indexed
            .get(&(r.item, r.annotator))
            .is_some_and(|c| c.revealed.is_some());
        if !done {
            db.record_reveal(epoch, &r.item, &r.annotator, &r.annotation)
                .await?;
        }
    }
    Ok(())
}

/// Settles `epoch` once its reveals closed: indexes its events ([`index_epoch`]), reads every
/// revealed record from `content` (a record missing or not matching its reveal is left out and
/// listed in [`EpochOutcome::unavailable`]), runs the consensus of each question with `gold`
/// pinned, scores the annotators, prices their epoch, flags those below the floor, and indexes
/// the consensus labels and quality scores (once per epoch: a second run is refused by the
/// index as a duplicate).
pub async fn settle_epoch(
    dao: &Dao,
    content: &ContentStore,
    db: &fl_db::Store,
    epoch: u64,
    items: &[ContentHash],
    gold: &[GoldLabel],
    settings: &EpochSettings,
) -> Result<EpochOutcome, ContributeError> {
    index_epoch(dao, db, epoch, items).await?;
    let mut records: Vec<SignedRecord<AnnotationRecord>> = Vec::new();
    let mut unavailable = Vec::new();
    for r in dao.annotation_reveals(epoch).await? {
        let cid = ContentHash::from_digest(r.annotation.0);
        let record = match content.get(&cid) {
            Ok(ContributedRecord::Annotation(a))
                if a.body().annotator == r.annotator
                    && digest(&a.body().item) == r.item
                    && a.body().epoch == epoch =>
            {
                a
            }
            Ok(_) | Err(ContributeError::MissingRecord { .. } | ContributeError::Record { .. }) => {
                unavailable.push((r.annotator, r.annotation));
                continue;
            }
            Err(e) => return Err(e),
        };
        records.push(record);
    }

    let mut consensus = Vec::new();
    let mut per_field: BTreeMap<Address, Vec<(Field, AnnotatorQuality)>> = BTreeMap::new();
    let mut evidence: BTreeMap<Address, Vec<EvidenceAnswer>> = BTreeMap::new();
    let everyone = RewardPolicy {
        quality_floor_bps: i32::MAX,
        min_items_for_flag: 0,
        ..settings.policy.clone()
    };
    let mut annotators = Vec::new();
    let mut rows = Vec::new();
    for field in Field::ALL {
        let (answers, index) =
            Answers::from_annotations(field, &records).map_err(EpochError::from)?;
        let gold_of: Vec<Option<u8>> = index
            .items
            .iter()
            .map(|item| {
                gold.iter()
                    .find(|g| g.field == field && g.item == *item)
                    .map(|g| g.class)
            })
            .collect();
        let gold_of = gold_of.iter().any(Option::is_some).then_some(gold_of);
        let c = aggregate(&answers, gold_of.as_deref(), &settings.consensus)
            .map_err(EpochError::from)?;
        let q = annotator_quality(&answers, &c, gold_of.as_deref(), &settings.quality)
            .map_err(EpochError::from)?;
        // Every annotator's disagreements with the consensus or gold: the evidence, should its
        // epoch score fall below the floor.
        for f in flag_annotators(&everyone, &answers, &c, &q, gold_of.as_deref()) {
            let annotator = index.annotators[f.quality.annotator];
            evidence
                .entry(annotator)
                .or_default()
                .extend(f.evidence.iter().map(|e| EvidenceAnswer {
                    field,
                    item: index.items[e.item].to_string(),
                    record: e.record.map(|r| r.to_string()),
                    answered: e.answered,
                    consensus: e.consensus,
                    gold: e.gold,
                }));
        }
        for quality in q {
            per_field
                .entry(index.annotators[quality.annotator])
                .or_default()
                .push((field, quality));
        }
        for (i, item) in index.items.iter().enumerate() {
            let label = c.labels.get(i).copied().flatten();
            rows.push(ConsensusRecord {
                epoch,
                field: label_field(field),
                item: digest(item),
                label,
                confidence: label.map_or(0.0, |l| c.posterior(i)[usize::from(l)]),
            });
        }
        annotators = index.annotators.clone();
        consensus.push(FieldConsensus {
            field,
            items: index.items,
            consensus: c,
        });
    }

    // Contributor ranks: the order of first registrations on chain.
    let mut ranks: HashMap<Address, u64> = HashMap::new();
    for b in dao.registered_batches().await? {
        let next = ranks.len() as u64;
        ranks.entry(b.contributor).or_insert(next);
    }
    let counted: HashMap<Address, u64> = records.iter().fold(HashMap::new(), |mut m, r| {
        *m.entry(r.body().annotator).or_insert(0) += 1;
        m
    });
    let mut quality = Vec::new();
    let mut rewards = Vec::new();
    let mut flags = Vec::new();
    for (annotator, fields) in per_field {
        let refs: Vec<&AnnotatorQuality> = fields.iter().map(|(_, q)| q).collect();
        let score = epoch_score(&refs).unwrap_or(f64::NAN);
        let annotations = counted.get(&annotator).copied().unwrap_or(0);
        let contributor_rank = ranks.get(&annotator).copied().unwrap_or(ranks.len() as u64);
        let against = evidence.remove(&annotator).unwrap_or_default();
        // Below the floor over enough annotations, and with answers to hold against it (with
        // few items a question's chance-corrected score says little: an annotator who never
        // disagreed is not flagged).
        let flagged = annotations >= settings.policy.min_items_for_flag as u64
            && score_bps(score) < settings.policy.quality_floor_bps
            && !against.is_empty();
        if flagged {
            flags.push(FlaggedAnnotator {
                epoch,
                annotator,
                score_bps: score_bps(score),
                evidence: against,
            });
        }
        let reward = annotation_reward(
            &settings.policy,
            &contrib::AnnotatorEpoch {
                annotations,
                quality_bps: score_bps(score),
                contributor_rank,
                flagged,
            },
        )
        .map_err(EpochError::from)?;
        rewards.push((annotator, reward));
        quality.push(AnnotatorScore {
            annotator,
            annotations,
            per_field: fields,
            score,
            contributor_rank,
        });
    }
    flags.sort_by_key(|f| (f.score_bps, f.annotator));

    db.add_consensus(&rows).await?;
    let scores: Vec<QualityRecord> = quality
        .iter()
        .map(|q| QualityRecord {
            epoch,
            annotator: q.annotator,
            // The index keeps finite scores only; an annotator without one scores the lowest.
            score: if q.score.is_finite() { q.score } else { -10.0 },
            items: q.annotations,
        })
        .collect();
    db.add_annotator_quality(&scores).await?;
    Ok(EpochOutcome {
        epoch,
        annotators,
        consensus,
        quality,
        rewards,
        flags,
        unavailable,
    })
}
