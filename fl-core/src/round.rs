//! What a round asks of a client and what a client answers.

use std::collections::BTreeMap;
use std::fmt;

use serde::{Deserialize, Serialize};

use crate::hash::ContentHash;
use crate::params::{ParamVec, SchemaHash};

/// A federation member as the aggregator knows it.
///
/// Opaque and cheap to copy; the deployment layer maps member identities (keys, addresses)
/// to these.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub struct ClientId(pub u64);

impl fmt::Display for ClientId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "client-{}", self.0)
    }
}

/// Local training settings for one round, chosen by the strategy.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct FitConfig {
    /// Passes over the local data.
    pub local_epochs: u32,
    /// Examples per optimiser step.
    pub batch_size: u32,
    /// Optimiser learning rate.
    pub learning_rate: f64,
    /// Seed for the local data order (derived from the run seed, round and client by the
    /// engine; a value in a federation file is ignored).
    pub shuffle_seed: u64,
    /// FedProx's proximal coefficient `μ ≥ 0` (Li et al. 2020): the trainer adds
    /// `μ/2·‖w - w_global‖²` to its local loss, `w_global` being the parameters it started the
    /// round from. 0 (the default) trains exactly as without the term. Chosen by the strategy
    /// (`[strategy] proximal_mu`), so it is not read from `[strategy.fit]`.
    #[serde(skip)]
    pub proximal_mu: f64,
    /// SCAFFOLD's control variates (Karimireddy et al. 2020): when present the trainer adds
    /// [`ScaffoldControls::correction`](crate::scaffold::ScaffoldControls::correction)
    /// `= c - cᵢ` to every local gradient and steps with plain SGD. Set by the strategy
    /// (`[strategy] kind = "scaffold"`, the server's `c`) and the member's session (its own
    /// `cᵢ`), never read from a federation file. `None`: an ordinary round.
    #[serde(skip)]
    pub scaffold: Option<crate::scaffold::ScaffoldControls>,
}

/// How a member uploads its update in a round: chosen by the aggregator (the privacy wrapper
/// and the engine), the same for every member of the round; never read from a federation file
/// and never seen by the trainer, which only gets the [`FitConfig`].
#[derive(Debug, Clone, PartialEq, Default)]
pub struct UploadSpec {
    /// Client-level differential privacy of the update: when present the member sends its
    /// clipped, possibly noised difference from the global parameters with weight 1 instead
    /// of its parameters.
    pub privacy: Option<crate::dp::UpdatePrivacy>,
    /// The upload protocol.
    pub protocol: UploadProtocol,
}

/// The protocol a member uploads its update with.
#[derive(Debug, Clone, PartialEq, Default)]
pub enum UploadProtocol {
    /// The update in the clear, in hash-checked chunks.
    #[default]
    Plain,
    /// SecAgg+: the member runs the protocol's steps and sends its update masked.
    SecAgg(std::sync::Arc<crate::secure::SecureFit>),
    /// Homomorphic aggregation: the member encrypts its update under the committee's key
    /// (feature `he`).
    #[cfg(feature = "he")]
    Homomorphic(std::sync::Arc<crate::secure::he::HeFit>),
}

impl Default for FitConfig {
    fn default() -> Self {
        Self {
            local_epochs: 1,
            batch_size: 32,
            learning_rate: 1e-3,
            shuffle_seed: 0,
            proximal_mu: 0.0,
            scaffold: None,
        }
    }
}

/// Settings for one federated evaluation.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EvaluateConfig {
    /// Examples per forward pass (0 lets the trainer choose).
    pub batch_size: u32,
}

/// Which half of a round an instruction belongs to.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum Stage {
    /// Local training and upload of the result.
    Fit,
    /// Evaluation of the global model on local data.
    Evaluate,
}

/// The header of every instruction a client receives: which round and stage, and what
/// parameters it is about (by hash), so a client can check what it downloads.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RoundConfig {
    /// Round number, starting at 1.
    pub round: u64,
    /// Stage of the round.
    pub stage: Stage,
    /// Content hash of the global parameters the client must start from.
    pub params_hash: ContentHash,
    /// Schema hash of those parameters.
    pub schema_hash: SchemaHash,
}

/// Named scalar metrics (accuracy, loss, ...), ordered by name for stable output.
pub type Metrics = BTreeMap<String, f64>;

/// The training metric in which a trainer reports how many optimiser steps a fit took (an
/// integer as `f64`). FedNova normalises each member's update by it; fl-client's trainers
/// report it.
pub const LOCAL_STEPS_METRIC: &str = "local_steps";

/// What [`Trainer::fit`](crate::Trainer::fit) reports besides the new parameters.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
pub struct FitOutcome {
    /// Examples the local training used (the FedAvg weight).
    pub num_examples: u64,
    /// Training metrics, e.g. mean training loss.
    pub metrics: Metrics,
}

/// A client's answer to a fit instruction.
#[derive(Debug, Clone, PartialEq)]
pub struct FitResult {
    /// Parameters after local training.
    pub params: ParamVec,
    /// Examples used (the FedAvg weight).
    pub num_examples: u64,
    /// Training metrics.
    pub metrics: Metrics,
}

/// A client's (or a central evaluator's) answer to an evaluate instruction.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
pub struct EvaluateResult {
    /// Mean loss over the evaluated examples.
    pub loss: f64,
    /// Examples evaluated.
    pub num_examples: u64,
    /// Further metrics, e.g. `accuracy`.
    pub metrics: Metrics,
}

impl EvaluateResult {
    /// The `accuracy` metric, if reported.
    pub fn accuracy(&self) -> Option<f64> {
        self.metrics.get("accuracy").copied()
    }
}
