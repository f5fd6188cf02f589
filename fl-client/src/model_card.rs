//! The model card of a published proposal-analysis model: what an inference node needs to
//! rebuild and run the model, and what a voter needs to judge it.
//!
//! A [`ModelCard`] holds the architecture ([`ProposalModelSpec`]), the featuriser's settings and
//! their digest ([`HashingConfig::digest`]: a node checks that it builds the same featuriser),
//! the label sets in head order, the input limits, a description of the training data (the
//! corpus file's CID and source snapshots, the split, each community's example counts and
//! community prior), the metrics on the test split, and the schema hash and CID of the
//! parameters it describes.
//!
//! A card is stored content-addressed: its bytes are its canonical JSON
//! ([`ModelCard::to_canonical_json`]: compact, fields in declaration order, maps sorted) and
//! its CID is [`ContentHash::of`] those bytes, as parameters are named by the hash of their
//! bytes. The checkpoint store keeps it as `cards/<cid>.json` and the round's manifest names it
//! (`model_card`); the aggregator commits that CID as a leaf of the anchored participants root,
//! so a card is anchored with its model. [`ModelCard::from_verified_bytes`] refuses bytes that
//! do not hash to the expected CID, are not canonical, or describe a model this build cannot
//! run.
//!
//! The aggregator never parses a card (it stores bytes and anchors their hash), which is why
//! this type lives here, beside the model it describes.

use std::collections::BTreeMap;

use fl_core::{ContentHash, SchemaHash};
use serde::{Deserialize, Serialize};

use crate::data::proposals::ProposalKind;
#[cfg(doc)]
use crate::text::HashingConfig;
use crate::text::HashingFeaturizer;
use crate::trainer::proposals::ProposalModelSpec;

/// The card format this build writes and reads.
pub const CARD_VERSION: u32 = 1;

/// The task a proposal-analysis card describes.
pub const TASK: &str = "daofl/proposal-analysis";

/// Largest card accepted, in bytes (a card is a few kilobytes).
pub const MAX_CARD_BYTES: usize = 1 << 20;

/// Longest title a node accepts, in bytes (the corpus's longest is 149).
pub const MAX_TITLE_BYTES: usize = 4 << 10;
/// Longest body text a node accepts, in bytes (the corpus's longest is about 380 kB; only
/// the first [`HashingConfig::max_tokens`] tokens are read).
pub const MAX_TEXT_BYTES: usize = 1 << 20;
/// Longest community name or proposal id a node accepts, in bytes.
pub const MAX_NAME_BYTES: usize = 256;

/// A published proposal model's card (see the [module docs](self)).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ModelCard {
    /// Card format version ([`CARD_VERSION`]).
    pub version: u32,
    /// What the model does ([`TASK`]).
    pub task: String,
    /// The architecture and loss the parameters belong to, featuriser settings included.
    pub architecture: ProposalModelSpec,
    /// CID of the featuriser's canonical description ([`HashingConfig::digest`] of
    /// `architecture.featurizer`).
    #[serde(with = "fl_core::hash::cid_string")]
    pub featurizer_digest: ContentHash,
    /// That canonical description, for people ([`HashingConfig::canonical`]).
    pub featurizer_canonical: String,
    /// The classes of each head, in output order.
    pub labels: LabelSets,
    /// What a node truncates and what it refuses.
    pub input_limits: InputLimits,
    /// What the model was trained on, and how.
    pub training: TrainingData,
    /// Scores on the test split (`accuracy`, `macro_f1`, `kind_accuracy`, `kind_macro_f1`,
    /// pooled, and `<community>.<metric>` per community); finite values only.
    pub metrics: BTreeMap<String, f64>,
    /// Hash of the parameters' schema (hex, as the manifest writes it).
    pub schema_hash: SchemaHash,
    /// CID of the parameters this card describes.
    #[serde(with = "fl_core::hash::cid_string")]
    pub params_cid: ContentHash,
}

/// The classes of the two heads, in output order.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LabelSets {
    /// The outcome head: `accepted`, `rejected`.
    pub outcome: Vec<String>,
    /// The kind head: [`ProposalKind::ALL`]'s names.
    pub kind: Vec<String>,
}

impl LabelSets {
    /// The label sets of this build's proposal model.
    pub fn current() -> Self {
        Self {
            outcome: vec!["accepted".into(), "rejected".into()],
            kind: ProposalKind::ALL
                .iter()
                .map(|k| k.name().to_owned())
                .collect(),
        }
    }
}

/// What a node does with long input.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct InputLimits {
    /// Tokens read per proposal, title first, then body: the rest is ignored (truncation).
    pub max_tokens: usize,
    /// Longest title accepted, in bytes; longer input is refused.
    pub max_title_bytes: usize,
    /// Longest body text accepted, in bytes; longer input is refused.
    pub max_text_bytes: usize,
    /// Longest community name or proposal id accepted, in bytes.
    pub max_name_bytes: usize,
}

impl InputLimits {
    /// This build's limits for a featuriser keeping `max_tokens` tokens.
    pub fn for_tokens(max_tokens: usize) -> Self {
        Self {
            max_tokens,
            max_title_bytes: MAX_TITLE_BYTES,
            max_text_bytes: MAX_TEXT_BYTES,
            max_name_bytes: MAX_NAME_BYTES,
        }
    }
}

/// What a model was trained on.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TrainingData {
    /// The corpus, in words (e.g. `daofl governance proposals, fl-client/data/proposals`).
    pub corpus: String,
    /// CID of the corpus file's bytes (the snapshot trained on).
    #[serde(with = "fl_core::hash::cid_string")]
    pub corpus_cid: ContentHash,
    /// The source repositories and snapshot commits of its rows (`owner/name@commit`), sorted.
    pub sources: Vec<String>,
    /// The split, in words (e.g. `shipped test_ids.json: stratified 80/20 of decided rows`).
    pub split: String,
    /// CID of the split file's bytes (`test_ids.json`).
    #[serde(with = "fl_core::hash::cid_string")]
    pub split_cid: ContentHash,
    /// Each member's share, by community name.
    pub communities: BTreeMap<String, CommunityShare>,
    /// How it was trained (strategy, rounds, local epochs, optimiser, seed), in words.
    pub procedure: String,
}

/// One community's part of the training and test data.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CommunityShare {
    /// Training proposals accepted.
    pub accepted: usize,
    /// Training proposals rejected.
    pub rejected: usize,
    /// Training proposals still open (they train the kind head only).
    pub open: usize,
    /// Test proposals.
    pub test: usize,
    /// The community prior the model adds for this community's proposals (its member's
    /// acceptance log-odds, see
    /// [`EncodedProposals::with_prior`](crate::trainer::proposals::EncodedProposals::with_prior));
    /// a community not listed gets 0.
    pub prior: f32,
}

impl ModelCard {
    /// The card of the parameters `params_cid` (schema `schema_hash`) of `architecture`, trained
    /// as `training` says and scoring `metrics` on the test split: this build's version, task,
    /// labels and input limits, the featuriser's digest.
    pub fn new(
        architecture: ProposalModelSpec,
        training: TrainingData,
        metrics: BTreeMap<String, f64>,
        schema_hash: SchemaHash,
        params_cid: ContentHash,
    ) -> Self {
        Self {
            version: CARD_VERSION,
            task: TASK.into(),
            featurizer_digest: architecture.featurizer.digest(),
            featurizer_canonical: architecture.featurizer.canonical(),
            labels: LabelSets::current(),
            input_limits: InputLimits::for_tokens(architecture.featurizer.max_tokens),
            training,
            metrics,
            schema_hash,
            params_cid,
            architecture,
        }
    }

    /// The card's bytes: compact JSON, fields in declaration order, maps sorted by key. The
    /// card's CID is [`ContentHash::of`] them.
    ///
    /// # Errors
    /// [`CardError::Invalid`] when a metric or prior is not finite (JSON has no such numbers).
    pub fn to_canonical_json(&self) -> Result<Vec<u8>, CardError> {
        if let Some((k, v)) = self.metrics.iter().find(|(_, v)| !v.is_finite()) {
            return Err(CardError::Invalid(format!("metric `{k}` is {v}")));
        }
        if let Some((k, c)) = self
            .training
            .communities
            .iter()
            .find(|(_, c)| !c.prior.is_finite())
        {
            return Err(CardError::Invalid(format!(
                "the prior of `{k}` is {}",
                c.prior
            )));
        }
        serde_json::to_vec(self).map_err(|e| CardError::Invalid(e.to_string()))
    }

    /// The card's content identifier: [`ContentHash::of`] its canonical JSON.
    ///
    /// # Errors
    /// As [`ModelCard::to_canonical_json`].
    pub fn cid(&self) -> Result<ContentHash, CardError> {
        Ok(ContentHash::of(&self.to_canonical_json()?))
    }

    /// Reads a stored card whose CID should be `expected`: the bytes must hash to it, parse,
    /// be canonical (so one card has one CID) and pass [`ModelCard::check`].
    ///
    /// # Errors
    /// [`CardError::TooLarge`], [`CardError::CidMismatch`], [`CardError::Malformed`],
    /// [`CardError::UnsupportedVersion`], [`CardError::Invalid`].
    pub fn from_verified_bytes(bytes: &[u8], expected: &ContentHash) -> Result<Self, CardError> {
        if bytes.len() > MAX_CARD_BYTES {
            return Err(CardError::TooLarge {
                size: bytes.len(),
                limit: MAX_CARD_BYTES,
            });
        }
        let computed = ContentHash::of(bytes);
        if computed != *expected {
            return Err(CardError::CidMismatch {
                expected: *expected,
                computed,
            });
        }
        let value: serde_json::Value =
            serde_json::from_slice(bytes).map_err(|e| CardError::Malformed(e.to_string()))?;
        match value.get("version").and_then(serde_json::Value::as_u64) {
            Some(v) if v == u64::from(CARD_VERSION) => {}
            Some(v) => return Err(CardError::UnsupportedVersion(v)),
            None => return Err(CardError::Malformed("no numeric `version` field".into())),
        }
        let card: Self =
            serde_json::from_value(value).map_err(|e| CardError::Malformed(e.to_string()))?;
        if card.to_canonical_json()? != bytes {
            return Err(CardError::Invalid(
                "the bytes are not the card's canonical JSON".into(),
            ));
        }
        card.check()?;
        Ok(card)
    }

    /// Checks that this build can run the model the card describes: the task and labels are
    /// this model's, the architecture is valid, the featuriser's digest matches its settings,
    /// and the token limit is the featuriser's.
    ///
    /// # Errors
    /// [`CardError::Invalid`] naming the first mismatch.
    pub fn check(&self) -> Result<(), CardError> {
        let invalid = |m: String| Err(CardError::Invalid(m));
        if self.task != TASK {
            return invalid(format!("task `{}`, this build runs `{TASK}`", self.task));
        }
        self.architecture.validate().map_err(CardError::Invalid)?;
        let digest = self.architecture.featurizer.digest();
        if digest != self.featurizer_digest {
            return invalid(format!(
                "the featuriser settings hash to {digest}, the card says {}: this build would \
                 not compute the ids the model was trained on",
                self.featurizer_digest
            ));
        }
        if self.labels != LabelSets::current() {
            return invalid(format!(
                "labels {:?}, this build's heads are {:?}",
                self.labels,
                LabelSets::current()
            ));
        }
        if self.input_limits.max_tokens != self.architecture.featurizer.max_tokens {
            return invalid(format!(
                "input limit of {} tokens, the featuriser keeps {}",
                self.input_limits.max_tokens, self.architecture.featurizer.max_tokens
            ));
        }
        Ok(())
    }

    /// The featuriser the card describes.
    ///
    /// # Errors
    /// [`CardError::Invalid`] for invalid settings.
    pub fn featurizer(&self) -> Result<HashingFeaturizer, CardError> {
        HashingFeaturizer::new(self.architecture.featurizer.clone()).map_err(CardError::Invalid)
    }

    /// The community prior of `community`'s proposals: its recorded prior when the model
    /// uses one, else 0.
    pub fn prior(&self, community: &str) -> f32 {
        if !self.architecture.community_prior {
            return 0.0;
        }
        self.training
            .communities
            .get(community)
            .map_or(0.0, |c| c.prior)
    }
}

/// Why a model card is unusable.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum CardError {
    /// The card is larger than [`MAX_CARD_BYTES`].
    #[error("the model card has {size} bytes, more than the limit of {limit}")]
    TooLarge {
        /// Its size.
        size: usize,
        /// The limit.
        limit: usize,
    },
    /// The card's bytes do not hash to the CID that names it.
    #[error("the model card hashes to {computed}, not to {expected}: it was altered")]
    CidMismatch {
        /// The CID the manifest names.
        expected: ContentHash,
        /// The hash of the bytes read.
        computed: ContentHash,
    },
    /// The bytes are not a card's JSON.
    #[error("the model card is malformed: {0}")]
    Malformed(String),
    /// The card was written by a newer daofl.
    #[error("model card version {0}, this build reads version {CARD_VERSION}; upgrade daofl")]
    UnsupportedVersion(u64),
    /// The card describes a model this build cannot run, or holds values JSON cannot.
    #[error("invalid model card: {0}")]
    Invalid(String),
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A card for the default model with made-up hashes.
    fn card() -> ModelCard {
        let training = TrainingData {
            corpus: "test".into(),
            corpus_cid: ContentHash::of(b"corpus"),
            sources: vec!["ethereum/EIPs@abc".into()],
            split: "test".into(),
            split_cid: ContentHash::of(b"split"),
            communities: BTreeMap::from([(
                "ethereum".into(),
                CommunityShare {
                    accepted: 3,
                    rejected: 1,
                    open: 2,
                    test: 1,
                    prior: 0.69,
                },
            )]),
            procedure: "none".into(),
        };
        ModelCard::new(
            ProposalModelSpec::default(),
            training,
            BTreeMap::from([("accuracy".into(), 0.75)]),
            ContentHash::of(b"schema"),
            ContentHash::of(b"params"),
        )
    }

    #[test]
    fn a_card_round_trips_through_its_cid() {
        let card = card();
        let bytes = card.to_canonical_json().unwrap();
        let cid = card.cid().unwrap();
        assert_eq!(ModelCard::from_verified_bytes(&bytes, &cid).unwrap(), card);
        assert_eq!(card.prior("ethereum"), 0.69);
        assert_eq!(card.prior("unknown"), 0.0);
    }

    #[test]
    fn altered_or_foreign_cards_are_refused() {
        let card = card();
        let bytes = card.to_canonical_json().unwrap();
        let cid = card.cid().unwrap();
        let tampered = String::from_utf8(bytes.clone())
            .unwrap()
            .replace("0.75", "0.95");
        let err = ModelCard::from_verified_bytes(tampered.as_bytes(), &cid).unwrap_err();
        assert!(matches!(err, CardError::CidMismatch { .. }), "{err}");

        // Pretty-printed: the same card, not its canonical bytes, so another CID.
        let pretty = serde_json::to_vec_pretty(&card).unwrap();
        let err = ModelCard::from_verified_bytes(&pretty, &ContentHash::of(&pretty)).unwrap_err();
        assert!(err.to_string().contains("canonical"), "{err}");

        // A featuriser whose digest does not match its settings.
        let mut other = card.clone();
        other.architecture.featurizer.max_tokens = 7;
        let bytes = other.to_canonical_json().unwrap();
        let err = ModelCard::from_verified_bytes(&bytes, &ContentHash::of(&bytes)).unwrap_err();
        assert!(err.to_string().contains("featuriser"), "{err}");

        let mut newer = serde_json::to_value(&card).unwrap();
        newer["version"] = 2.into();
        let bytes = serde_json::to_vec(&newer).unwrap();
        let err = ModelCard::from_verified_bytes(&bytes, &ContentHash::of(&bytes)).unwrap_err();
        assert!(matches!(err, CardError::UnsupportedVersion(2)), "{err}");

        for garbage in [&b"not json"[..], b"[]", b"{\"version\": 1}"] {
            let err =
                ModelCard::from_verified_bytes(garbage, &ContentHash::of(garbage)).unwrap_err();
            assert!(matches!(err, CardError::Malformed(_)), "{err}");
        }

        let mut nan = card;
        nan.metrics.insert("loss".into(), f64::NAN);
        assert!(matches!(nan.cid(), Err(CardError::Invalid(_))));
    }
}
