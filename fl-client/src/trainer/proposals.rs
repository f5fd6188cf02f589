//! The proposal-analysis model: a fastText-style bag of embeddings with two linear heads, a
//! linear model (logistic regression per head) over TF-IDF features, or a small transformer
//! encoder trained from scratch ([`ModelKind::Transformer`]: the first tokens in reading order,
//! unigram bucket embeddings plus learned positions, pre-norm self-attention layers, mean
//! pooled), and [`ProposalTrainer`], a
//! [`Trainer`] over it, so that every strategy, differential-privacy and secure-aggregation mode
//! of the federation trains it unchanged.
//!
//! A proposal becomes two bags of bucket ids ([`crate::text`]): its text's word n-grams and its
//! metadata (the community). The model looks up one embedding per id (burn `Embedding`), pools
//! each bag with per-id weights (an EmbeddingBag in sum mode, padding weighted zero), adds the
//! two, optionally passes the sum through one ReLU layer, and reads two heads off it:
//!
//! - **outcome**: accepted (0) or rejected (1). `open` proposals have no outcome and are left
//!   out of this head's loss (they still train the kind head);
//! - **kind**: the normalised [`ProposalKind`] (5 classes).
//!
//! The text weights ([`TermWeighting`]) are the mean (`1 / ids`, fastText) or TF-IDF
//! (sublinear term frequency times inverse document frequency, unit L2 norm per document, as
//! the data README's linear baseline). With [`ModelKind::Linear`] the "embedding" of a bucket is
//! its row of the two heads' weights (2 + 5 columns) plus one bias per class: exactly
//! logistic regression per head over the weighted bag.
//!
//! ## Document frequencies, federated
//!
//! TF-IDF needs the fraction of training documents that contain each bucket, over the whole
//! federation. They are part of the parameters: a non-trained tensor `document_frequency`
//! (`buckets + 1` values: the fractions, then a 1 once they are known), so they are
//! content-addressed and anchored with the checkpoint, and a predictor applies the weights the
//! model was trained with. A trainer whose parameters do not know them yet (the last value is
//! 0, as in the initial model) spends its next `fit` on them instead of training: it returns
//! the global parameters with its own fractions ([`EncodedProposals::document_frequencies`])
//! and its number of examples. FedAvg's example-weighted mean of the members' fractions is
//! `Σ dfᵢ / Σ nᵢ`, the federation's fraction, so round 1 of a federation is this
//! document-frequency round, aggregated by the existing sum (in the clear, under SecAgg+ or
//! homomorphically: no member's counts are revealed beyond the sum). It assumes the mean is
//! applied as it is: a server optimiser (FedAdam) or differential privacy would step along or
//! noise it.
//!
//! The loss is the (class-weighted, see [`ProposalModelSpec::rejected_weight`]) cross-entropy
//! of the outcome over the decided examples of a batch plus
//! [`kind_weight`](ProposalModelSpec::kind_weight) times the kind cross-entropy over all of them.

mod encoded;
mod metrics;
#[cfg(test)]
mod tests;

use std::sync::Arc;

use burn::module::Param;
use burn::nn::transformer::{
    TransformerEncoder, TransformerEncoderConfig, TransformerEncoderInput,
};
use burn::nn::{Embedding, EmbeddingConfig, Initializer, Linear, LinearConfig};
use burn::optim::decay::WeightDecayConfig;
use burn::optim::{AdamConfig, AdamWConfig, GradientsParams, SgdConfig};
use burn::prelude::*;
use burn::tensor::activation::{log_softmax, relu, softmax};
use fl_core::params::{ParamError, ParamVec, Schema};
use fl_core::round::{
    EvaluateConfig, EvaluateResult, FitConfig, FitOutcome, LOCAL_STEPS_METRIC, Metrics,
};
use fl_core::trainer::{Trainer, TrainerError};
use rand::SeedableRng;
use rand::seq::SliceRandom;
use rand_chacha::ChaCha8Rng;
use serde::{Deserialize, Serialize};

use encoded::TextWeights;
pub use encoded::{EncodedProposals, SEQUENCE_CAP};
pub use metrics::{
    CalibratedThreshold, ClassScores, OutcomeScores, ThresholdCounts, score, score_at,
};

use super::proximal::Proximal;
use super::scaffold::Correction;
use super::{DeviceSpec, EpochLoss, params};
use crate::data::proposals::ProposalKind;
use crate::text::{HashingConfig, HashingFeaturizer, idf};

/// The metric a trainer reports (value 1) for a `fit` spent on the document frequencies
/// instead of training (see the module docs).
pub const DOCUMENT_FREQUENCY_METRIC: &str = "document_frequency_round";

/// Outcome classes (accepted, rejected).
pub const OUTCOME_CLASSES: usize = 2;

/// Examples per forward pass of evaluation and prediction.
pub const EVAL_BATCH: usize = 64;

/// The proposal model's architecture and loss, as a federation's config names it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ProposalModelSpec {
    /// The architecture: `bag_of_embeddings` (the default) or `linear` (logistic regression
    /// per head over the weighted bag).
    #[serde(skip_serializing_if = "is_default")]
    pub kind: ModelKind,
    /// How the text ids of a document are weighed: `mean` (the default) or `tf_idf`.
    #[serde(skip_serializing_if = "is_default")]
    pub weighting: TermWeighting,
    /// Smoothing `s` of the inverse document frequency `ln((1 + s) / (df + s)) + 1`
    /// ([`crate::text::idf`], `df` the fraction of documents); `s = 1/N` over `N` documents is
    /// scikit-learn's smoothed idf. Read with `weighting = "tf_idf"` only.
    #[serde(skip_serializing_if = "is_default_smoothing")]
    pub idf_smoothing: f64,
    /// How text becomes bucket ids (the embedding table has one row per bucket).
    pub featurizer: HashingConfig,
    /// Embedding width (not read by the linear model, whose width is the number of classes).
    pub dim: usize,
    /// Width of a ReLU layer between the bag and the heads; 0 for linear heads (fastText).
    pub hidden: usize,
    /// Weight of the kind head's loss relative to the outcome head's.
    pub kind_weight: f64,
    /// Class weight of `rejected` in the outcome loss (`accepted` has 1): above 1 trades
    /// accuracy on the majority class for recall of the minority.
    pub rejected_weight: f64,
    /// Factor on the metadata bag's mean before it is added to the text bag's. Only the member
    /// of a community trains that community's metadata embedding, and FedAvg scales every
    /// member's update by its share of the examples (1.4% for the smallest community), so a
    /// factor above 1 lets the community prior move at a useful speed under FedAvg (a
    /// reparametrisation: the function class is the same).
    pub meta_scale: f64,
    /// Add a learned multiple of the example's community prior (its member's acceptance
    /// log-odds, [`EncodedProposals::with_prior`]) to the outcome logits.
    pub community_prior: bool,
    /// The local optimiser `fit` uses (fresh each call, so no state crosses rounds).
    pub optimizer: LocalOptimizer,
    /// Decoupled weight decay (AdamW) of the Adam optimiser, or the L2 penalty of SGD (its
    /// gradient `weight_decay · w` added to every step's); 0 for none. Bounds the
    /// parameters: without it, members whose proposals are (nearly) all of one class push
    /// their weights without limit and FedAvg's average diverges.
    pub weight_decay: f64,
    /// The transformer's shape (`kind = "transformer"`; `None`: [`TransformerSpec::default`]).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub transformer: Option<TransformerSpec>,
}

/// The default `idf_smoothing`: `1/4096`, about `1/N` for the shipped training split's 3,146
/// proposals.
pub const DEFAULT_IDF_SMOOTHING: f64 = 1.0 / 4096.0;

fn is_default<T: Default + PartialEq>(value: &T) -> bool {
    *value == T::default()
}

fn is_default_smoothing(value: &f64) -> bool {
    *value == DEFAULT_IDF_SMOOTHING
}

/// The proposal model's architecture.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ModelKind {
    /// fastText: an embedding of `dim` per bucket, the weighted bag through optional hidden
    /// layer to two linear heads.
    #[default]
    BagOfEmbeddings,
    /// Logistic regression per head: each bucket's row holds its weight for every class of
    /// both heads, plus one bias per class (and the community prior, if on).
    Linear,
    /// A small transformer encoder trained from scratch ([`TransformerSpec`]): the first
    /// `sequence_len` tokens as unigram bucket embeddings of `dim` plus a learned position
    /// embedding, `layers` pre-norm encoder layers of `heads` heads, the mean over the real
    /// positions plus the metadata bag, and the two linear heads.
    Transformer,
}

/// The transformer's shape (`[model.transformer]`; read with `kind = "transformer"` only).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct TransformerSpec {
    /// Encoder layers.
    pub layers: usize,
    /// Attention heads (they divide the model's `dim`).
    pub heads: usize,
    /// Tokens read in order (title, then text), at most [`SEQUENCE_CAP`].
    pub sequence_len: usize,
    /// Width of each layer's feed-forward block; 0 for `4 · dim`.
    pub feed_forward: usize,
}

impl Default for TransformerSpec {
    /// Two layers of two heads over the first 256 tokens, feed-forward `4 · dim`.
    fn default() -> Self {
        Self {
            layers: 2,
            heads: 2,
            sequence_len: 256,
            feed_forward: 0,
        }
    }
}

/// How a document's text ids are weighed before they are summed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum TermWeighting {
    /// Each id `1 / text ids`: the mean (fastText).
    #[default]
    Mean,
    /// Sublinear term frequency times inverse document frequency, unit L2 norm per document
    /// ([`crate::text::tf_idf`]), with the federation's document frequencies (see the
    /// [module docs](self)).
    TfIdf,
}

/// A local optimiser.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum LocalOptimizer {
    /// Adam (burn defaults: betas 0.9, 0.999).
    #[default]
    Adam,
    /// Plain stochastic gradient descent (fastText's choice; FedAvg's analysis assumes it).
    Sgd,
}

impl Default for ProposalModelSpec {
    /// 2^16 buckets of word uni- and bigrams of the first 1,024 tokens, 16 dimensions
    /// (1.05 M parameters), linear heads, kind loss weight 0.5, rejected weight 2 (about the
    /// corpus's accepted:rejected ratio), the community prior on.
    fn default() -> Self {
        Self {
            kind: ModelKind::BagOfEmbeddings,
            weighting: TermWeighting::Mean,
            idf_smoothing: DEFAULT_IDF_SMOOTHING,
            featurizer: HashingConfig {
                buckets_log2: 16,
                ..HashingConfig::default()
            },
            dim: 16,
            hidden: 0,
            kind_weight: 0.5,
            rejected_weight: 2.0,
            meta_scale: 1.0,
            community_prior: true,
            optimizer: LocalOptimizer::Adam,
            weight_decay: 0.0,
            transformer: None,
        }
    }
}

impl ProposalModelSpec {
    /// Checks every field.
    pub fn validate(&self) -> Result<(), String> {
        self.featurizer.validate()?;
        if !(1..=1024).contains(&self.dim) {
            return Err(format!("dim must be in 1..=1024, got {}", self.dim));
        }
        if self.hidden > 4096 {
            return Err(format!("hidden must be at most 4096, got {}", self.hidden));
        }
        if self.kind == ModelKind::Linear && self.hidden > 0 {
            return Err("a linear model has no hidden layer: set hidden = 0".into());
        }
        match (self.kind, &self.transformer) {
            (ModelKind::Transformer, _) => {
                let t = self.transformer_spec();
                if self.weighting != TermWeighting::Mean {
                    return Err(
                        "the transformer reads its text as a sequence: leave weighting at mean"
                            .into(),
                    );
                }
                if self.hidden > 0 {
                    return Err("the transformer has no hidden layer: set hidden = 0".into());
                }
                if !(1..=8).contains(&t.layers) {
                    return Err(format!(
                        "transformer layers must be in 1..=8, got {}",
                        t.layers
                    ));
                }
                if t.heads == 0 || !self.dim.is_multiple_of(t.heads) {
                    return Err(format!(
                        "transformer heads ({}) must divide dim ({})",
                        t.heads, self.dim
                    ));
                }
                if !(1..=SEQUENCE_CAP).contains(&t.sequence_len) {
                    return Err(format!(
                        "transformer sequence_len must be in 1..={SEQUENCE_CAP}, got {}",
                        t.sequence_len
                    ));
                }
                if t.feed_forward > 16_384 {
                    return Err(format!(
                        "transformer feed_forward must be at most 16384, got {}",
                        t.feed_forward
                    ));
                }
            }
            (_, Some(_)) => {
                return Err("[model.transformer] is read with kind = \"transformer\" only".into());
            }
            (_, None) => {}
        }
        if !(self.idf_smoothing.is_finite() && self.idf_smoothing > 0.0) {
            return Err(format!(
                "idf_smoothing must be finite and positive, got {}",
                self.idf_smoothing
            ));
        }
        for (name, w) in [
            ("kind_weight", self.kind_weight),
            ("rejected_weight", self.rejected_weight),
            ("meta_scale", self.meta_scale),
            ("weight_decay", self.weight_decay),
        ] {
            if !(w.is_finite() && w >= 0.0) {
                return Err(format!("{name} must be finite and non-negative, got {w}"));
            }
        }
        Ok(())
    }

    /// The featuriser this model reads.
    pub fn featurizer(&self) -> Result<HashingFeaturizer, String> {
        HashingFeaturizer::new(self.featurizer.clone())
    }

    /// The transformer's shape: the configured one or the default.
    pub fn transformer_spec(&self) -> TransformerSpec {
        self.transformer.unwrap_or_default()
    }

    /// Width of a bucket's row: `dim`, or the number of classes of both heads (linear).
    fn width(&self) -> usize {
        match self.kind {
            ModelKind::BagOfEmbeddings | ModelKind::Transformer => self.dim,
            ModelKind::Linear => OUTCOME_CLASSES + ProposalKind::COUNT,
        }
    }
}

/// Burn initialisers are never run: [`params::seeded_init`] replaces every parameter.
const UNUSED_INIT: Initializer = Initializer::Zeros;

/// Bag of embeddings with an outcome head and a kind head (both absent in the linear model,
/// whose rows are the heads' weights).
#[derive(Module, Debug)]
pub(crate) struct BagOfEmbeddings {
    embedding: Embedding,
    hidden: Option<Linear>,
    outcome: Option<Linear>,
    kind: Option<Linear>,
    /// The linear model's bias per class (`[2 + kinds]`).
    bias: Option<Param<Tensor<1>>>,
    /// The community prior's weight per outcome class (`[1, 2]`, no bias).
    prior: Option<Linear>,
    /// The transformer's position embedding (`[sequence_len, dim]`).
    position: Option<Embedding>,
    /// The transformer's encoder layers.
    encoder: Option<TransformerEncoder>,
    /// TF-IDF's document frequencies (`[buckets + 1]`, not trained; see the module docs). The
    /// last field, so its values are the last of the flattened parameters.
    document_frequency: Option<Param<Tensor<1>>>,
}

impl BagOfEmbeddings {
    fn new(spec: &ProposalModelSpec, device: &Device) -> Self {
        let linear = |i, o| {
            LinearConfig::new(i, o)
                .with_initializer(UNUSED_INIT)
                .init(device)
        };
        let features = if spec.hidden == 0 {
            spec.dim
        } else {
            spec.hidden
        };
        let heads = spec.kind != ModelKind::Linear;
        let transformer = (spec.kind == ModelKind::Transformer).then(|| spec.transformer_spec());
        let width = spec.width();
        Self {
            embedding: EmbeddingConfig::new(spec.featurizer.buckets(), width)
                .with_initializer(UNUSED_INIT)
                .init(device),
            hidden: (heads && spec.hidden > 0).then(|| linear(spec.dim, spec.hidden)),
            outcome: heads.then(|| linear(features, OUTCOME_CLASSES)),
            kind: heads.then(|| linear(features, ProposalKind::COUNT)),
            bias: (!heads).then(|| Param::from_tensor(Tensor::zeros([width], device))),
            prior: spec.community_prior.then(|| {
                LinearConfig::new(1, OUTCOME_CLASSES)
                    .with_bias(false)
                    .with_initializer(UNUSED_INIT)
                    .init(device)
            }),
            position: transformer.map(|t| {
                EmbeddingConfig::new(t.sequence_len, spec.dim)
                    .with_initializer(UNUSED_INIT)
                    .init(device)
            }),
            encoder: transformer.map(|t| {
                let ff = if t.feed_forward == 0 {
                    4 * spec.dim
                } else {
                    t.feed_forward
                };
                TransformerEncoderConfig::new(spec.dim, ff, t.heads, t.layers)
                    .with_dropout(0.0)
                    .with_norm_first(true)
                    .with_initializer(UNUSED_INIT)
                    .init(device)
            }),
            document_frequency: (spec.weighting == TermWeighting::TfIdf)
                .then(|| Self::unknown_frequencies(spec, device)),
        }
    }

    /// The document frequencies of a model that does not know them yet: all 0, not trained.
    fn unknown_frequencies(spec: &ProposalModelSpec, device: &Device) -> Param<Tensor<1>> {
        Param::from_tensor(Tensor::zeros([spec.featurizer.buckets() + 1], device))
            .set_require_grad(false)
    }

    /// `(outcome logits [batch, 2], kind logits [batch, kinds])` of a padded batch of ids
    /// `[batch, len]` with per-position weights `[batch, len]` (0 for padding) and community
    /// priors `[batch, 1]`; the transformer also reads `sequence`
    /// ([`EncodedProposals::sequence_batch`]: ids, padding mask, pooling weights).
    fn forward(
        &self,
        ids: Tensor<2, Int>,
        weights: Tensor<2>,
        prior: Tensor<2>,
        sequence: Option<(Tensor<2, Int>, Tensor<2, Bool>, Tensor<2>)>,
    ) -> (Tensor<2>, Tensor<2>) {
        let [batch, _] = ids.dims();
        let embedded = self.embedding.forward(ids); // [batch, len, dim]
        let pooled = (embedded * weights.unsqueeze_dim::<3>(2)).sum_dim(1); // [batch, 1, dim]
        let [_, _, dim] = pooled.dims();
        let mut x = pooled.reshape([batch, dim]);
        if let (Some(encoder), Some(position), Some((seq, padding, pool))) =
            (&self.encoder, &self.position, sequence)
        {
            let [_, len] = seq.dims();
            let device = seq.device();
            let positions = Tensor::<1, Int>::arange(0..len as i64, &device)
                .unsqueeze_dim::<2>(0)
                .repeat_dim(0, batch);
            let tokens = self.embedding.forward(seq) + position.forward(positions);
            let encoded = encoder.forward(TransformerEncoderInput::new(tokens).mask_pad(padding));
            let mean = (encoded * pool.unsqueeze_dim::<3>(2)).sum_dim(1);
            x = x + mean.reshape([batch, dim]);
        }
        if let Some(hidden) = &self.hidden {
            x = relu(hidden.forward(x));
        }
        let (mut outcome, kind) = match (&self.outcome, &self.kind, &self.bias) {
            (Some(outcome), Some(kind), _) => (outcome.forward(x.clone()), kind.forward(x)),
            (_, _, Some(bias)) => {
                let logits = x + bias.val().unsqueeze_dim::<2>(0);
                (
                    logits.clone().narrow(1, 0, OUTCOME_CLASSES),
                    logits.narrow(1, OUTCOME_CLASSES, ProposalKind::COUNT),
                )
            }
            _ => unreachable!("a model has its heads or a linear bias (see `new`)"),
        };
        if let Some(p) = &self.prior {
            outcome = outcome + p.forward(prior);
        }
        (outcome, kind)
    }
}

/// One proposal's prediction.
#[derive(Debug, Clone, PartialEq)]
pub struct ProposalPrediction {
    /// Probability that it is accepted.
    pub p_accepted: f32,
    /// The most likely kind.
    pub kind: ProposalKind,
    /// Probability of each kind, in [`ProposalKind::ALL`] order.
    pub kind_probs: Vec<f32>,
}

/// A [`Trainer`] over the proposal model and a member's encoded proposals.
///
/// `fit` trains with the spec's [`LocalOptimizer`] (a fresh one per call) on minibatches in an
/// order shuffled by `ChaCha8Rng::seed_from_u64(shuffle_seed)`, plus FedProx's
/// `μ/2·‖w - w_global‖²` when [`FitConfig::proximal_mu`] is positive, and reports
/// `num_examples` (its training examples, open ones included), `train_loss` (without the
/// proximal term) and `local_steps` (optimiser steps taken). In a SCAFFOLD round
/// ([`FitConfig::scaffold`]) it steps with plain SGD, whatever [`ProposalModelSpec::optimizer`]
/// says, each gradient corrected by the round's `c - cᵢ`. `evaluate` reports the mean loss and the metrics
/// `accuracy` and `macro_f1` (outcome, decided examples only), `kind_accuracy` and
/// `kind_macro_f1` (all examples).
pub struct ProposalTrainer {
    spec: ProposalModelSpec,
    network: BagOfEmbeddings,
    /// The inverse document frequencies of the parameters' `document_frequency` (TF-IDF,
    /// once known).
    idf: Option<Vec<f32>>,
    schema: Arc<Schema>,
    train: EncodedProposals,
    eval: Option<EncodedProposals>,
    device: Device,
}

impl std::fmt::Debug for ProposalTrainer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ProposalTrainer")
            .field("spec", &self.spec)
            .field("schema", &self.schema.hash())
            .field("train", &self.train.len())
            .field("eval", &self.eval.as_ref().map(EncodedProposals::len))
            .finish_non_exhaustive()
    }
}

impl ProposalTrainer {
    /// Builds the model for `spec`, initialised from `init_seed` (the same seed gives the same
    /// parameters). `train` may be empty (an evaluation-only trainer). The data must have
    /// been encoded with `spec`'s featuriser (ids below its number of buckets).
    pub fn new(
        spec: &ProposalModelSpec,
        device: DeviceSpec,
        train: EncodedProposals,
        eval: Option<EncodedProposals>,
        init_seed: u64,
    ) -> Result<Self, TrainerError> {
        spec.validate().map_err(TrainerError::InvalidConfig)?;
        let buckets = spec.featurizer.buckets();
        for data in std::iter::once(&train).chain(eval.as_ref()) {
            data.check_ids(buckets)
                .map_err(TrainerError::InvalidConfig)?;
        }
        let device = device
            .device()
            .map_err(|e| TrainerError::InvalidConfig(e.to_string()))?;
        let network = BagOfEmbeddings::new(spec, &device.clone().autodiff());
        let schema = Arc::new(params::schema_of(&network)?);
        let mut network = params::seeded_init(network, init_seed);
        if network.encoder.is_some() {
            network = Self::unit_layer_norms(network, &schema);
        }
        if network.document_frequency.is_some() {
            let autodiff = device.clone().autodiff();
            network.document_frequency =
                Some(BagOfEmbeddings::unknown_frequencies(spec, &autodiff));
        }
        Ok(Self {
            spec: spec.clone(),
            network,
            idf: None,
            schema,
            train,
            eval,
            device,
        })
    }

    /// `network` with every layer norm's scale 1 and shift 0 (the seeded initialisation
    /// draws every tensor uniformly, which would start a norm's output near 0).
    fn unit_layer_norms(network: BagOfEmbeddings, schema: &Arc<Schema>) -> BagOfEmbeddings {
        let Ok(values) = params::flatten(&network, schema.num_values()) else {
            return network;
        };
        let Ok(mut params) = ParamVec::new(Arc::clone(schema), values) else {
            return network;
        };
        for t in schema.tensors().iter().filter(|t| t.name.contains(".norm")) {
            let value = match t.name.rsplit('.').next() {
                Some("gamma") => 1.0,
                Some("beta") => 0.0,
                _ => continue,
            };
            if let Some(tensor) = params.tensor_mut(&t.name) {
                tensor.fill(value);
            }
        }
        params::unflatten(network, params.values())
    }

    /// The model this trainer trains.
    pub fn spec(&self) -> &ProposalModelSpec {
        &self.spec
    }

    /// The local training data.
    pub fn train_data(&self) -> &EncodedProposals {
        &self.train
    }

    /// Whether the model weighs text by TF-IDF and its parameters do not hold the document
    /// frequencies yet: the next [`fit`](Trainer::fit) computes them (see the module docs).
    pub fn needs_document_frequencies(&self) -> bool {
        self.spec.weighting == TermWeighting::TfIdf && self.idf.is_none()
    }

    /// The inverse document frequency of every bucket, once known (TF-IDF only).
    pub fn idf(&self) -> Option<&[f32]> {
        self.idf.as_deref()
    }

    fn text_weights(&self) -> TextWeights<'_> {
        if self.spec.kind == ModelKind::Transformer {
            return TextWeights::Off;
        }
        match self.spec.weighting {
            TermWeighting::Mean => TextWeights::Mean,
            TermWeighting::TfIdf => TextWeights::TfIdf(self.idf.as_deref()),
        }
    }

    /// Recomputes [`idf`](Self::idf) from the flattened parameters `values`: their last
    /// `buckets + 1` values are the document frequencies and the "known" flag.
    fn refresh_idf(&mut self, values: &[f32]) {
        self.idf = None;
        if self.spec.weighting != TermWeighting::TfIdf {
            return;
        }
        let buckets = self.spec.featurizer.buckets();
        let Some((&known, df)) = values[values.len() - buckets - 1..].split_last() else {
            return;
        };
        if known > 0.5 {
            let s = self.spec.idf_smoothing as f32;
            self.idf = Some(df.iter().map(|&f| idf(f, s)).collect());
        }
    }

    /// The document-frequency round: the current parameters with this member's fractions in
    /// `document_frequency` (and its flag set), weighted by its number of examples.
    fn document_frequency_round(&mut self) -> Result<FitOutcome, TrainerError> {
        let buckets = self.spec.featurizer.buckets();
        let mut values = params::flatten(&self.network, self.schema.num_values())
            .map_err(TrainerError::Other)?;
        let start = values.len() - buckets - 1;
        values[start..start + buckets].copy_from_slice(&self.train.document_frequencies(buckets));
        values[start + buckets] = 1.0;
        self.network = params::unflatten(self.network.clone(), &values);
        self.refresh_idf(&values);
        let mut metrics = Metrics::new();
        metrics.insert(LOCAL_STEPS_METRIC.into(), 0.0);
        metrics.insert(DOCUMENT_FREQUENCY_METRIC.into(), 1.0);
        Ok(FitOutcome {
            num_examples: self.train.len() as u64,
            metrics,
        })
    }

    /// Folds a calibrated decision threshold into the outcome head: afterwards a proposal is
    /// predicted `rejected` (`p_accepted < 0.5`) exactly when it was below `threshold` before.
    ///
    /// `p_accepted = σ(a - r)` of the outcome logits, so "below `threshold`" is
    /// `a - r < logit(threshold)`, and subtracting `logit(threshold)` from the bias of the
    /// `accepted` logit moves the decision boundary to 0.5 without touching anything else:
    /// the kind head, the text weights and the document frequencies stay as they were. The
    /// probabilities a predictor reports are then the calibrated ones. A threshold of 0.5
    /// changes nothing.
    ///
    /// # Errors
    /// [`TrainerError::InvalidConfig`]: `threshold` not strictly between 0 and 1.
    pub fn calibrate_outcome_threshold(&mut self, threshold: f64) -> Result<(), TrainerError> {
        if !(threshold > 0.0 && threshold < 1.0) {
            return Err(TrainerError::InvalidConfig(format!(
                "a decision threshold must be in (0, 1), got {threshold}"
            )));
        }
        // The linear model's per-class bias starts with the outcome classes; the bag of
        // embeddings' outcome head has its own bias.
        let name = match self.spec.kind {
            ModelKind::Linear => "bias",
            ModelKind::BagOfEmbeddings | ModelKind::Transformer => "outcome.bias",
        };
        let mut params = self.get_parameters();
        let bias = params
            .tensor_mut(name)
            .ok_or_else(|| TrainerError::Other(format!("the model has no `{name}` parameter")))?;
        bias[0] -= (threshold / (1.0 - threshold)).ln() as f32;
        self.network = params::unflatten(self.network.clone(), params.values());
        Ok(())
    }

    /// Predicts every example of `data` with the current parameters.
    pub fn predict(
        &self,
        data: &EncodedProposals,
    ) -> Result<Vec<ProposalPrediction>, TrainerError> {
        data.check_ids(self.spec.featurizer.buckets())
            .map_err(TrainerError::InvalidConfig)?;
        let model = self.network.valid();
        let mut out = Vec::with_capacity(data.len());
        let indices: Vec<usize> = (0..data.len()).collect();
        for chunk in indices.chunks(EVAL_BATCH) {
            let (ids, weights, prior) = data.batch(
                chunk,
                self.spec.meta_scale as f32,
                self.text_weights(),
                &self.device,
            );
            let sequence = self.sequence_batch(data, chunk, &self.device);
            let (outcome, kind) = model.forward(ids, weights, prior, sequence);
            let p_outcome = to_vec(softmax(outcome, 1))?;
            let p_kind = to_vec(softmax(kind, 1))?;
            for (o, k) in p_outcome
                .chunks(OUTCOME_CLASSES)
                .zip(p_kind.chunks(ProposalKind::COUNT))
            {
                let best = (0..k.len())
                    .max_by(|&a, &b| k[a].total_cmp(&k[b]))
                    .unwrap_or(0);
                out.push(ProposalPrediction {
                    p_accepted: o[0],
                    kind: ProposalKind::ALL[best],
                    kind_probs: k.to_vec(),
                });
            }
        }
        Ok(out)
    }

    /// Evaluates the current parameters on `data`: mean loss (outcome over decided examples
    /// plus kind over all, as in training but unweighted), outcome `accuracy` and `macro_f1`,
    /// `kind_accuracy` and `kind_macro_f1`.
    pub fn evaluate_on(&self, data: &EncodedProposals) -> Result<EvaluateResult, TrainerError> {
        if data.is_empty() {
            return Err(TrainerError::NoData("evaluate"));
        }
        let predictions = self.predict(data)?;
        let scores = score(data, &predictions);
        let nll = |p: f32| -f64::from(p).max(1e-7).ln();
        let (mut outcome_sum, mut decided, mut kind_sum) = (0.0, 0usize, 0.0);
        for (i, p) in predictions.iter().enumerate() {
            if let Some(y) = data.outcome(i) {
                outcome_sum += nll(if y == 0 {
                    p.p_accepted
                } else {
                    1.0 - p.p_accepted
                });
                decided += 1;
            }
            kind_sum += nll(p.kind_probs[usize::from(data.kind(i))]);
        }
        let loss = outcome_sum / decided.max(1) as f64 + kind_sum / data.len() as f64;
        if !loss.is_finite() {
            return Err(TrainerError::Diverged(format!("evaluation loss is {loss}")));
        }
        Ok(EvaluateResult {
            loss,
            num_examples: data.len() as u64,
            metrics: scores.to_metrics(),
        })
    }

    /// The transformer's sequence batch of `chunk` (none for the other models).
    #[allow(clippy::type_complexity)]
    fn sequence_batch(
        &self,
        data: &EncodedProposals,
        chunk: &[usize],
        device: &Device,
    ) -> Option<(Tensor<2, Int>, Tensor<2, Bool>, Tensor<2>)> {
        (self.spec.kind == ModelKind::Transformer)
            .then(|| data.sequence_batch(chunk, self.spec.transformer_spec().sequence_len, device))
    }

    fn batch_loss(&self, model: &BagOfEmbeddings, chunk: &[usize], device: &Device) -> Tensor<1> {
        let data = &self.train;
        let (ids, weights, prior) = data.batch(
            chunk,
            self.spec.meta_scale as f32,
            self.text_weights(),
            device,
        );
        let sequence = self.sequence_batch(data, chunk, device);
        let (outcome_logits, kind_logits) = model.forward(ids, weights, prior, sequence);
        let b = chunk.len();
        let mut targets = Vec::with_capacity(b);
        let mut outcome_weights = Vec::with_capacity(b);
        let mut kinds = Vec::with_capacity(b);
        let mut decided = 0usize;
        for &i in chunk {
            match data.outcome(i) {
                Some(y) => {
                    targets.push(i64::from(y));
                    outcome_weights.push(if y == 1 {
                        self.spec.rejected_weight as f32
                    } else {
                        1.0
                    });
                    decided += 1;
                }
                None => {
                    targets.push(0);
                    outcome_weights.push(0.0);
                }
            }
            kinds.push(i64::from(data.kind(i)));
        }
        let targets = Tensor::<1, Int>::from_data(TensorData::new(targets, [b]), device);
        let kinds = Tensor::<1, Int>::from_data(TensorData::new(kinds, [b]), device);
        let outcome_weights = Tensor::<1>::from_data(TensorData::new(outcome_weights, [b]), device);
        let outcome_nll = nll(outcome_logits, targets); // [b]
        let outcome_loss = (outcome_nll * outcome_weights)
            .sum()
            .div_scalar(decided.max(1) as f32);
        let kind_loss = nll(kind_logits, kinds).mean();
        outcome_loss + kind_loss.mul_scalar(self.spec.kind_weight as f32)
    }
}

impl Trainer for ProposalTrainer {
    fn schema(&self) -> Arc<Schema> {
        self.schema.clone()
    }

    fn get_parameters(&self) -> ParamVec {
        let values = params::flatten(&self.network, self.schema.num_values())
            .expect("every backend we build keeps float parameters as f32");
        ParamVec::new(self.schema.clone(), values)
            .expect("the visitor reads exactly the schema's values")
    }

    fn set_parameters(&mut self, params: &ParamVec) -> Result<(), TrainerError> {
        if params.schema().hash() != self.schema.hash() {
            return Err(ParamError::SchemaMismatch {
                expected: self.schema.hash(),
                got: params.schema().hash(),
            }
            .into());
        }
        if params.len() != self.schema.num_values() {
            return Err(ParamError::LengthMismatch {
                expected: self.schema.num_values(),
                got: params.len(),
            }
            .into());
        }
        self.network = params::unflatten(self.network.clone(), params.values());
        self.refresh_idf(params.values());
        Ok(())
    }

    fn fit(&mut self, config: &FitConfig) -> Result<FitOutcome, TrainerError> {
        super::check_fit_config(config)?;
        if self.train.is_empty() {
            return Err(TrainerError::NoData("fit"));
        }
        if self.needs_document_frequencies() {
            return self.document_frequency_round();
        }
        let autodiff = self.device.clone().autodiff();
        // SCAFFOLD's option II assumes plain SGD (see `trainer::scaffold`).
        let mut optim = match self.spec.optimizer {
            _ if config.scaffold.is_some() => SgdConfig::new().init(),
            LocalOptimizer::Adam if self.spec.weight_decay > 0.0 => AdamWConfig::new()
                .with_weight_decay(self.spec.weight_decay as f32)
                .init(),
            LocalOptimizer::Adam => AdamConfig::new().init(),
            LocalOptimizer::Sgd if self.spec.weight_decay > 0.0 => SgdConfig::new()
                .with_weight_decay(Some(WeightDecayConfig::new(self.spec.weight_decay as f32)))
                .init(),
            LocalOptimizer::Sgd => SgdConfig::new().init(),
        };
        let mut rng = ChaCha8Rng::seed_from_u64(config.shuffle_seed);
        let mut order: Vec<usize> = (0..self.train.len()).collect();
        let mut model = self.network.clone();
        let proximal = Proximal::new(&model, config.proximal_mu);
        let correction = Correction::new(&model, self.schema.hash(), config)?;
        let mut epoch_loss = 0.0;
        let mut steps = 0u64;
        for epoch in 0..config.local_epochs {
            order.shuffle(&mut rng);
            let mut loss_sum = EpochLoss::default();
            for chunk in order.chunks(config.batch_size as usize) {
                let mut loss = self.batch_loss(&model, chunk, &autodiff);
                loss_sum.add(&loss, chunk.len());
                if let Some(term) = proximal.as_ref().and_then(|p| p.term(&model)) {
                    loss = loss + term;
                }
                if let Some(term) = correction.as_ref().and_then(|c| c.term(&model)) {
                    loss = loss + term;
                }
                let grads = GradientsParams::from_grads(loss.backward(), &model);
                model = optim.step(config.learning_rate, model, grads);
                steps += 1;
            }
            epoch_loss = loss_sum.mean(self.train.len(), epoch, config)?;
        }
        let values =
            params::flatten(&model, self.schema.num_values()).map_err(TrainerError::Other)?;
        if let Some(i) = values.iter().position(|v| !v.is_finite()) {
            return Err(TrainerError::Diverged(format!(
                "parameter {i} is {} after training",
                values[i]
            )));
        }
        self.network = model;
        let mut metrics = Metrics::new();
        metrics.insert("train_loss".into(), epoch_loss);
        metrics.insert(LOCAL_STEPS_METRIC.into(), steps as f64);
        Ok(FitOutcome {
            num_examples: self.train.len() as u64,
            metrics,
        })
    }

    fn evaluate(&mut self, _config: &EvaluateConfig) -> Result<EvaluateResult, TrainerError> {
        let eval = self.eval.as_ref().ok_or(TrainerError::NoData("evaluate"))?;
        self.evaluate_on(eval)
    }
}

/// Per-example negative log-likelihood `[batch]` of `logits` `[batch, classes]` at `targets`.
fn nll(logits: Tensor<2>, targets: Tensor<1, Int>) -> Tensor<1> {
    let [batch] = targets.dims();
    log_softmax(logits, 1)
        .gather(1, targets.reshape([batch, 1]))
        .reshape([batch])
        .neg()
}

fn to_vec(t: Tensor<2>) -> Result<Vec<f32>, TrainerError> {
    t.into_data()
        .try_to_vec::<f32>()
        .map_err(|e| TrainerError::Other(format!("cannot read predictions: {e:?}")))
}
