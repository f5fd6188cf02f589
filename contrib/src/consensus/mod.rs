//! Consensus labels from several annotators' answers, and each annotator's quality.
//!
//! - [`Answers`]: who answered what class for which item (one categorical question, e.g. one
//!   [`Field`] of the annotations), by dense indices.
//! - [`dawid_skene`]: Dawid and Skene's EM over per-annotator confusion matrices (1979): it
//!   learns how each annotator errs, class by class, and weighs answers accordingly, so a
//!   reliable minority outvotes an unreliable majority, and an adversary who flips labels is
//!   read backwards instead of counted.
//! - [`majority_vote`]: one answer one vote; the fallback when there are too few items for EM
//!   to estimate confusion matrices ([`aggregate`] picks).
//! - [`annotator_quality`]: each annotator's quality from its estimated confusion matrix and
//!   from its answers on gold items (items with a known answer hidden among the others).
//!
//! Everything is deterministic: answers are processed in (item, annotator) order whatever
//! order they were added in, ties go to the lowest class index, and no randomness is drawn, so
//! anyone recomputes the same labels and scores from the same public answers.

mod dawid_skene;
mod quality;
#[cfg(test)]
mod tests;

use std::collections::{BTreeMap, HashSet};

use fl_core::{Address, ContentHash};

use crate::record::{AnnotationRecord, Field, SignedRecord};

pub use dawid_skene::{DawidSkeneConfig, dawid_skene};
pub use quality::{AnnotatorQuality, QualityConfig, annotator_quality, kappa_from_confusion};

/// Most classes a question may have.
pub const MAX_CLASSES: usize = 64;
/// Most items one set of answers may have (the corpus has 3,754).
pub const MAX_ITEMS: usize = 10_000_000;
/// Most annotators one set of answers may have.
pub const MAX_ANNOTATORS: usize = 1_000_000;

/// Why answers could not be collected or aggregated.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum ConsensusError {
    /// A question needs between 2 and [`MAX_CLASSES`] classes.
    #[error("{0} classes: a question needs between 2 and {MAX_CLASSES}")]
    BadClassCount(usize),
    /// An answer's class is not one of the question's classes.
    #[error("class {class} is out of range for {num_classes} classes")]
    ClassOutOfRange {
        /// The class given.
        class: u8,
        /// The number of classes.
        num_classes: usize,
    },
    /// An item or annotator index at or above its limit ([`MAX_ITEMS`], [`MAX_ANNOTATORS`]):
    /// the per-item and per-annotator tables would not fit in memory.
    #[error("{what} index {index} is over the limit of {limit}")]
    IndexTooLarge {
        /// `item` or `annotator`.
        what: &'static str,
        /// The index given.
        index: usize,
        /// The limit.
        limit: usize,
    },
    /// A second answer by the same annotator to the same item.
    #[error("annotator {annotator} already answered item {item}")]
    DuplicateAnswer {
        /// Item index.
        item: usize,
        /// Annotator index.
        annotator: usize,
    },
    /// A consensus computed from other answers (fewer items or annotators than these).
    #[error(
        "the consensus covers {items} items and {annotators} annotators, fewer than the answers"
    )]
    ConsensusMismatch {
        /// Items in the consensus.
        items: usize,
        /// Annotators in the consensus.
        annotators: usize,
    },
    /// Gold labels given for a different number of items than the answers have.
    #[error("gold labels for {gold} items, answers for {items}")]
    GoldLength {
        /// Gold entries given.
        gold: usize,
        /// Items in the answers.
        items: usize,
    },
}

/// One annotator's answer to one item.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Answer {
    /// Item index.
    pub item: usize,
    /// Annotator index.
    pub annotator: usize,
    /// The class answered.
    pub class: u8,
    /// The signed record the answer comes from, where there is one (the evidence).
    pub record: Option<ContentHash>,
}

/// Answers to one categorical question. Items and annotators are dense indices (`0..n`); the
/// counts grow with the largest index seen.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Answers {
    num_classes: usize,
    num_items: usize,
    num_annotators: usize,
    answers: Vec<Answer>,
    seen: HashSet<(usize, usize)>,
}

impl Answers {
    /// No answers yet, to a question of `num_classes` classes.
    pub fn new(num_classes: usize) -> Result<Self, ConsensusError> {
        if !(2..=MAX_CLASSES).contains(&num_classes) {
            return Err(ConsensusError::BadClassCount(num_classes));
        }
        Ok(Self {
            num_classes,
            num_items: 0,
            num_annotators: 0,
            answers: Vec::new(),
            seen: HashSet::new(),
        })
    }

    /// Adds `annotator`'s answer `class` to `item`.
    pub fn push(&mut self, item: usize, annotator: usize, class: u8) -> Result<(), ConsensusError> {
        self.push_answer(Answer {
            item,
            annotator,
            class,
            record: None,
        })
    }

    /// Adds an answer with the record it comes from.
    pub fn push_answer(&mut self, answer: Answer) -> Result<(), ConsensusError> {
        if usize::from(answer.class) >= self.num_classes {
            return Err(ConsensusError::ClassOutOfRange {
                class: answer.class,
                num_classes: self.num_classes,
            });
        }
        check_index("item", answer.item, MAX_ITEMS)?;
        check_index("annotator", answer.annotator, MAX_ANNOTATORS)?;
        if !self.seen.insert((answer.item, answer.annotator)) {
            return Err(ConsensusError::DuplicateAnswer {
                item: answer.item,
                annotator: answer.annotator,
            });
        }
        self.num_items = self.num_items.max(answer.item + 1);
        self.num_annotators = self.num_annotators.max(answer.annotator + 1);
        self.answers.push(answer);
        Ok(())
    }

    /// Declares at least `n` items (items nobody answered still get a consensus entry).
    pub fn reserve_items(&mut self, n: usize) -> Result<(), ConsensusError> {
        if n > MAX_ITEMS {
            return Err(ConsensusError::IndexTooLarge {
                what: "item",
                index: n - 1,
                limit: MAX_ITEMS,
            });
        }
        self.num_items = self.num_items.max(n);
        Ok(())
    }

    /// Number of classes.
    pub fn num_classes(&self) -> usize {
        self.num_classes
    }

    /// Number of items (largest item index + 1).
    pub fn num_items(&self) -> usize {
        self.num_items
    }

    /// Number of annotators (largest annotator index + 1).
    pub fn num_annotators(&self) -> usize {
        self.num_annotators
    }

    /// The answers, in the order added.
    pub fn answers(&self) -> &[Answer] {
        &self.answers
    }

    /// Number of answers.
    pub fn len(&self) -> usize {
        self.answers.len()
    }

    /// Whether there are no answers.
    pub fn is_empty(&self) -> bool {
        self.answers.is_empty()
    }

    /// The answers in canonical (item, annotator) order: what every computation iterates, so
    /// results do not depend on the order answers arrived in.
    pub(crate) fn sorted(&self) -> Vec<Answer> {
        let mut v = self.answers.clone();
        v.sort_unstable_by_key(|a| (a.item, a.annotator));
        v
    }

    /// The answers to `field` of revealed annotation records, with the item and annotator
    /// each index stands for (items and annotators in content-address and address order).
    pub fn from_annotations<'a>(
        field: Field,
        records: impl IntoIterator<Item = &'a SignedRecord<AnnotationRecord>>,
    ) -> Result<(Self, AnswerIndex), ConsensusError> {
        let records: Vec<_> = records.into_iter().collect();
        let mut items = BTreeMap::new();
        let mut annotators = BTreeMap::new();
        for r in &records {
            items.insert(r.body().item, 0);
            annotators.insert(r.body().annotator, 0);
        }
        for (i, v) in items.values_mut().enumerate() {
            *v = i;
        }
        for (i, v) in annotators.values_mut().enumerate() {
            *v = i;
        }
        let mut answers = Self::new(field.num_classes())?;
        answers.reserve_items(items.len())?;
        for r in &records {
            answers.push_answer(Answer {
                item: items[&r.body().item],
                annotator: annotators[&r.body().annotator],
                class: r.body().labels.class(field),
                record: Some(r.cid()),
            })?;
        }
        let index = AnswerIndex {
            items: items.into_keys().collect(),
            annotators: annotators.into_keys().collect(),
        };
        Ok((answers, index))
    }
}

fn check_index(what: &'static str, index: usize, limit: usize) -> Result<(), ConsensusError> {
    if index >= limit {
        return Err(ConsensusError::IndexTooLarge { what, index, limit });
    }
    Ok(())
}

/// What the dense indices of [`Answers::from_annotations`] stand for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AnswerIndex {
    /// Item index -> the proposal record's content address.
    pub items: Vec<ContentHash>,
    /// Annotator index -> the annotator's address.
    pub annotators: Vec<Address>,
}

/// How a consensus was reached.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Method {
    /// Dawid-Skene EM.
    DawidSkene,
    /// Majority vote.
    MajorityVote,
}

/// An annotator's confusion matrix: `get(t, a)` is the probability of answering class `a` when
/// the true class is `t`. Each row sums to one.
#[derive(Debug, Clone, PartialEq)]
pub struct ConfusionMatrix {
    k: usize,
    values: Vec<f64>,
}

impl ConfusionMatrix {
    /// A `k` x `k` matrix from row-major values (rows: true class).
    pub fn from_rows(k: usize, values: Vec<f64>) -> Option<Self> {
        (values.len() == k * k).then_some(Self { k, values })
    }

    /// Number of classes.
    pub fn num_classes(&self) -> usize {
        self.k
    }

    /// P(answer `answered` | true class `truth`).
    pub fn get(&self, truth: usize, answered: usize) -> f64 {
        self.values[truth * self.k + answered]
    }

    /// Row `truth`: the distribution of answers when the true class is `truth`.
    pub fn row(&self, truth: usize) -> &[f64] {
        &self.values[truth * self.k..(truth + 1) * self.k]
    }
}

/// Consensus labels and what was learnt on the way.
#[derive(Debug, Clone, PartialEq)]
pub struct Consensus {
    /// How it was reached.
    pub method: Method,
    /// Per item: the consensus class; `None` for an item nobody answered.
    pub labels: Vec<Option<u8>>,
    /// Per item: the posterior probability of each class (row-major, `num_classes` per item).
    pub posteriors: Vec<f64>,
    /// Estimated class priors.
    pub priors: Vec<f64>,
    /// Per annotator: the estimated confusion matrix.
    pub confusion: Vec<ConfusionMatrix>,
    /// EM iterations run (0 for majority vote).
    pub iterations: usize,
    /// Whether EM met its tolerance before the iteration limit (true for majority vote).
    pub converged: bool,
    /// What EM maximised at the end: the log-likelihood of the answers plus the smoothing's
    /// log-prior (NaN for majority vote).
    pub objective: f64,
}

impl Consensus {
    /// Number of classes.
    pub fn num_classes(&self) -> usize {
        self.priors.len()
    }

    /// The posterior distribution of `item`.
    pub fn posterior(&self, item: usize) -> &[f64] {
        let k = self.num_classes();
        &self.posteriors[item * k..(item + 1) * k]
    }
}

/// When [`aggregate`] trusts EM, and how EM runs.
#[derive(Debug, Clone, PartialEq)]
pub struct ConsensusConfig {
    /// Dawid-Skene's parameters.
    pub dawid_skene: DawidSkeneConfig,
    /// Fewest answered items for Dawid-Skene; below, majority vote.
    pub min_items: usize,
    /// Fewest answers per annotator, on average, for Dawid-Skene; below, majority vote (a
    /// confusion matrix of K x K cells needs several answers per true class).
    pub min_answers_per_annotator: usize,
}

impl Default for ConsensusConfig {
    fn default() -> Self {
        Self {
            dawid_skene: DawidSkeneConfig::default(),
            min_items: 20,
            min_answers_per_annotator: 10,
        }
    }
}

/// Dawid-Skene where there are enough answers to estimate confusion matrices, majority vote
/// otherwise. `gold`, where given, has one entry per item (`Some(class)` for gold items) and
/// pins those items' labels during EM.
pub fn aggregate(
    answers: &Answers,
    gold: Option<&[Option<u8>]>,
    config: &ConsensusConfig,
) -> Result<Consensus, ConsensusError> {
    let answered: HashSet<usize> = answers.answers.iter().map(|a| a.item).collect();
    let per_annotator = answers.len() / answers.num_annotators().max(1);
    if answered.len() < config.min_items || per_annotator < config.min_answers_per_annotator {
        majority_vote(answers, &config.dawid_skene)
    } else {
        dawid_skene(answers, gold, &config.dawid_skene)
    }
}

/// One answer one vote. Ties go to the lowest class index. Confusion matrices and priors are
/// estimated against the majority labels (with the same smoothing as EM), so annotator
/// quality is defined for this method too.
pub fn majority_vote(
    answers: &Answers,
    config: &DawidSkeneConfig,
) -> Result<Consensus, ConsensusError> {
    let k = answers.num_classes();
    let n = answers.num_items();
    let votes = vote_fractions(answers);
    let labels = (0..n)
        .map(|i| {
            let row = &votes[i * k..(i + 1) * k];
            row.iter().any(|&v| v > 0.0).then(|| argmax(row))
        })
        .collect::<Vec<_>>();
    // One-hot posteriors of the majority labels, for the M-step estimates.
    let mut hard = vec![0.0; n * k];
    for (i, l) in labels.iter().enumerate() {
        if let Some(l) = l {
            hard[i * k + usize::from(*l)] = 1.0;
        }
    }
    let sorted = answers.sorted();
    let (priors, confusion) = dawid_skene::m_step(&sorted, answers, &hard, config.smoothing);
    Ok(Consensus {
        method: Method::MajorityVote,
        labels,
        posteriors: votes,
        priors,
        confusion,
        iterations: 0,
        converged: true,
        objective: f64::NAN,
    })
}

/// Per item, the fraction of its answers for each class (all zero for an unanswered item).
pub(crate) fn vote_fractions(answers: &Answers) -> Vec<f64> {
    let k = answers.num_classes();
    let mut counts = vec![0.0; answers.num_items() * k];
    for a in answers.sorted() {
        counts[a.item * k + usize::from(a.class)] += 1.0;
    }
    for row in counts.chunks_mut(k) {
        let total: f64 = row.iter().sum();
        if total > 0.0 {
            row.iter_mut().for_each(|v| *v /= total);
        }
    }
    counts
}

/// Index of the largest value; the lowest index among equals.
pub(crate) fn argmax(row: &[f64]) -> u8 {
    let mut best = 0;
    for (i, &v) in row.iter().enumerate() {
        if v > row[best] {
            best = i;
        }
    }
    // Rows have at most MAX_CLASSES (64) entries.
    best as u8
}
