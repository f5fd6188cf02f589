//! The annotation record: one annotator's labels for one proposal record in one epoch.

use fl_core::{Address, ContentHash};
use serde::{Deserialize, Serialize};

use super::{RecordBody, RecordError, RecordKind};

/// One annotator's judgement of one proposal: its outcome, category, quality and risk.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AnnotationRecord {
    /// The annotator (who signs the record).
    #[serde(with = "super::address_str")]
    pub annotator: Address,
    /// The content address of the [`ProposalRecord`](super::ProposalRecord) annotated.
    #[serde(with = "super::cid_str")]
    pub item: ContentHash,
    /// The annotation epoch (the assignment and commit-reveal round it answers).
    pub epoch: u64,
    /// The labels.
    pub labels: Labels,
}

impl RecordBody for AnnotationRecord {
    const KIND: RecordKind = RecordKind::Annotation;

    fn contributor(&self) -> Address {
        self.annotator
    }

    fn validate(&self) -> Result<(), RecordError> {
        let q = self.labels.quality.get();
        if !(ProposalQuality::MIN..=ProposalQuality::MAX).contains(&q) {
            return Err(RecordError::InvalidField {
                field: "labels.quality",
                reason: format!(
                    "{q} is outside {}..={}",
                    ProposalQuality::MIN,
                    ProposalQuality::MAX
                ),
            });
        }
        Ok(())
    }
}

/// The four labels of an annotation. Each is one categorical question; consensus is reached
/// per question ([`Field`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Labels {
    /// The outcome the proposal had (or, still open, the outcome the annotator expects).
    pub outcome: Outcome,
    /// What sort of change it asks for.
    pub category: Category,
    /// How well it is written and argued, 1 (poor) to 5 (excellent).
    pub quality: ProposalQuality,
    /// How risky it is to the community if enacted.
    pub risk: Risk,
}

impl Labels {
    /// The class index of the answer to `field`.
    pub fn class(&self, field: Field) -> u8 {
        match field {
            Field::Outcome => self.outcome as u8,
            Field::Category => self.category as u8,
            // Validated records hold 1..=5: classes 0..=4 (saturating for unchecked values).
            Field::Quality => self.quality.get().saturating_sub(1),
            Field::Risk => self.risk as u8,
        }
    }
}

/// The questions of an annotation, each a categorical label.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Field {
    /// [`Outcome`]: 2 classes.
    Outcome,
    /// [`Category`]: 5 classes.
    Category,
    /// [`ProposalQuality`]: 5 classes (1 to 5).
    Quality,
    /// [`Risk`]: 3 classes.
    Risk,
}

impl Field {
    /// Every field.
    pub const ALL: [Field; 4] = [Field::Outcome, Field::Category, Field::Quality, Field::Risk];

    /// Number of classes of the field.
    pub const fn num_classes(self) -> usize {
        match self {
            Field::Outcome => 2,
            Field::Category => Category::ALL.len(),
            Field::Quality => (ProposalQuality::MAX - ProposalQuality::MIN + 1) as usize,
            Field::Risk => 3,
        }
    }

    /// The field's name as serialised.
    pub const fn name(self) -> &'static str {
        match self {
            Field::Outcome => "outcome",
            Field::Category => "category",
            Field::Quality => "quality",
            Field::Risk => "risk",
        }
    }
}

/// The outcome of a proposal (class indices as `fl_client`'s corpus: accepted 0, rejected 1).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Outcome {
    /// Accepted, final, implemented, deployed.
    Accepted = 0,
    /// Rejected, withdrawn, stagnant, abandoned.
    Rejected = 1,
}

/// What sort of change a proposal asks for: the five kinds of the proposal-analysis model
/// (`fl_client`'s `ProposalKind`, same class indices).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Category {
    /// Changes the system's own rules or implementation.
    Protocol = 0,
    /// An interface or application standard built on the system.
    Standard = 1,
    /// How the community works: meta, process, informational.
    Process = 2,
    /// A change of a live system's configuration parameters.
    Parameter = 3,
    /// Operations: budgets, funding, treasury, appointments, onboarding.
    Operations = 4,
}

impl Category {
    /// Every category, in class-index order.
    pub const ALL: [Category; 5] = [
        Category::Protocol,
        Category::Standard,
        Category::Process,
        Category::Parameter,
        Category::Operations,
    ];
}

/// The risk an enacted proposal carries for its community.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Risk {
    /// Little can go wrong.
    Low = 0,
    /// Recoverable harm is possible.
    Medium = 1,
    /// Funds, security or the community's continuity are at stake.
    High = 2,
}

/// A proposal's writing quality, 1 to 5. Out-of-range values deserialise, and are then refused
/// by record validation with a field error.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(transparent)]
pub struct ProposalQuality(u8);

impl ProposalQuality {
    /// Lowest score.
    pub const MIN: u8 = 1;
    /// Highest score.
    pub const MAX: u8 = 5;

    /// A score in `1..=5`, or `None`.
    pub const fn new(score: u8) -> Option<Self> {
        if score >= Self::MIN && score <= Self::MAX {
            Some(Self(score))
        } else {
            None
        }
    }

    /// The score.
    pub const fn get(self) -> u8 {
        self.0
    }
}
