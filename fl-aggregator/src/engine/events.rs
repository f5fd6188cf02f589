//! What the engine reports ([`EngineEvent`]) and why it drops, aborts or refuses.

use std::sync::Arc;

use fl_core::{ClientId, EvaluateResult, Metrics, ParamVec, Stage};
use fl_core::{ContentHash, Refusal, StrategyError};

#[cfg(doc)]
use super::Engine;
#[cfg(doc)]
use fl_core::WeightedSum;

/// Why a client was dropped from a stage.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum DropReason {
    /// No answer before the deadline.
    Deadline,
    /// The client disconnected.
    Disconnected,
    /// The client reported that it failed.
    ClientFailed(String),
    /// The client's result was invalid (wrong schema, non-finite values, no examples).
    InvalidResult(String),
}

/// Progress reported by the engine, in order.
#[derive(Debug, Clone)]
pub enum EngineEvent {
    /// A round began; `selected` were asked to train.
    RoundStarted {
        /// Round number.
        round: u64,
        /// Clients asked to train.
        selected: Vec<ClientId>,
    },
    /// A client was dropped from the current stage.
    ClientDropped {
        /// Round number.
        round: u64,
        /// Stage it was dropped from.
        stage: Stage,
        /// The client.
        client: ClientId,
        /// Why.
        reason: DropReason,
    },
    /// The fit stage aggregated into new global parameters.
    FitAggregated {
        /// Round number.
        round: u64,
        /// The new global parameters.
        params: Arc<ParamVec>,
        /// Complete results aggregated.
        num_results: usize,
        /// Results that broke off mid-upload; the values they delivered are in the aggregate
        /// (see [`WeightedSum::mean`]) and they count among the dropped.
        num_partial: usize,
        /// Selected clients that were dropped.
        num_dropped: usize,
        /// Example-weighted mean of the clients' training metrics.
        metrics: Metrics,
        /// What poisoning detection found (flags and the flagged updates), when the strategy
        /// detects ([`fl_core::Strategy::take_findings`]): the driver turns it into evidence.
        findings: Option<Arc<fl_core::strategy::QaFindings>>,
        /// The strategy's model-sized state after this aggregation
        /// ([`fl_core::Strategy::strategy_state`]: SCAFFOLD's server control variate), for the
        /// driver to checkpoint with the round; `None` for strategies that keep none.
        strategy_state: Option<Arc<ParamVec>>,
    },
    /// The round could not aggregate; the global parameters are unchanged.
    RoundAborted {
        /// Round number.
        round: u64,
        /// Why.
        reason: AbortReason,
    },
    /// Federated evaluation finished.
    Evaluated {
        /// Round number.
        round: u64,
        /// Example-weighted evaluation over the clients that answered.
        result: EvaluateResult,
    },
    /// The round is over (aggregated or aborted); `params` is the global model now.
    RoundCompleted {
        /// Round number.
        round: u64,
        /// Global parameters after the round.
        params: Arc<ParamVec>,
    },
    /// The strategy refused to run `round` (e.g. its privacy budget would be exceeded); the
    /// federation ends with the parameters of the last completed round. `Finished` follows.
    Stopped {
        /// The round that was refused.
        round: u64,
        /// Why.
        reason: std::sync::Arc<Refusal>,
    },
    /// A round aborted while the global model was released: the driver must give it back
    /// with [`Engine::handle_params`] (parameters hashing to `hash`) before the federation goes
    /// on.
    ParamsNeeded {
        /// Content hash of the parameters needed.
        hash: ContentHash,
    },
    /// All rounds ran (or the federation was stopped).
    Finished {
        /// Final global parameters.
        params: Arc<ParamVec>,
    },
}

/// Why a round aborted (the global parameters stay as they were and the next round runs).
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[non_exhaustive]
pub enum AbortReason {
    /// The strategy selected no client.
    #[error("the strategy selected no clients")]
    NoClientsSelected,
    /// Too few results arrived before the deadline.
    #[error("only {arrived} of the {required} required results arrived")]
    TooFewResults {
        /// Complete results.
        arrived: usize,
        /// The plan's `min_results`.
        required: usize,
    },
    /// The strategy could not aggregate the results.
    #[error("aggregation failed: {0}")]
    Aggregation(StrategyError),
    /// The strategy produced non-finite parameters or another schema.
    #[error("aggregation produced an invalid model")]
    InvalidModel,
    /// The distributed DP mechanism ran without secure aggregation, which adds its noise.
    #[error("distributed DP needs secure aggregation ([secure_aggregation])")]
    DistributedDpWithoutSecureAggregation,
    /// The strategy needs each member's update, which secure aggregation never reveals.
    #[error("the strategy needs each member's update, which secure aggregation does not reveal")]
    PerMemberUnderSecureAggregation,
    /// SecAgg+ could not complete (too few participants or survivors, bad settings, ...).
    #[error("secure aggregation: {0}")]
    SecureAggregation(String),
    /// Fewer committee members than the threshold are connected to decrypt the aggregate.
    #[error(
        "homomorphic aggregation: only {connected} of the {needed} committee members needed to \
         decrypt are connected"
    )]
    CommitteeUnavailable {
        /// Committee members connected.
        connected: usize,
        /// The decryption threshold.
        needed: usize,
    },
    /// Fewer partial decryptions than the threshold arrived before the deadline.
    #[error("homomorphic aggregation: {arrived} of the {needed} partial decryptions arrived")]
    TooFewDecryptions {
        /// Partial decryptions received (for the slice that got the fewest).
        arrived: usize,
        /// The decryption threshold.
        needed: usize,
    },
    /// Homomorphic aggregation could not complete (bad settings, a failed decryption, ...).
    #[error("homomorphic aggregation: {0}")]
    Homomorphic(String),
}

impl AbortReason {
    /// A short stable name for metrics labels (`daofl_rounds_aborted_total{reason=...}`).
    pub fn label(&self) -> &'static str {
        match self {
            Self::NoClientsSelected => "no_clients_selected",
            Self::TooFewResults { .. } => "too_few_results",
            Self::Aggregation(_) => "aggregation_failed",
            Self::InvalidModel => "invalid_model",
            Self::DistributedDpWithoutSecureAggregation => {
                "distributed_dp_without_secure_aggregation"
            }
            Self::PerMemberUnderSecureAggregation => "per_member_under_secure_aggregation",
            Self::SecureAggregation(_) => "secure_aggregation",
            Self::CommitteeUnavailable { .. } => "committee_unavailable",
            Self::TooFewDecryptions { .. } => "too_few_decryptions",
            Self::Homomorphic(_) => "homomorphic",
        }
    }

    /// Every label [`label`](Self::label) can return, so a metrics exporter can publish each
    /// series from the start.
    pub const LABELS: [&'static str; 10] = [
        "no_clients_selected",
        "too_few_results",
        "aggregation_failed",
        "invalid_model",
        "distributed_dp_without_secure_aggregation",
        "per_member_under_secure_aggregation",
        "secure_aggregation",
        "committee_unavailable",
        "too_few_decryptions",
        "homomorphic",
    ];
}

/// Why [`Engine::handle_params`] refused the global model it was given back. The engine's
/// state is unchanged by a refusal.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum ParamsRefused {
    /// The engine holds its global model: no [`EngineEvent::ParamsNeeded`] is outstanding.
    #[error("the engine is not waiting for parameters")]
    NotWaiting,
    /// The parameters are not the global model the engine released.
    #[error("parameters hash to {got}, the global model is {expected}")]
    WrongHash {
        /// The content hash of the global model the engine waits for.
        expected: ContentHash,
        /// The content hash of the parameters given.
        got: ContentHash,
    },
}

/// Why the engine refused a client message. The engine's state is unchanged by a refusal.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum EngineError {
    /// The sender is not connected.
    #[error("{0} is not connected")]
    UnknownClient(ClientId),
    /// The message answers an instruction this client does not (or no longer) owe: a late
    /// answer after its deadline, a duplicate, or one for another round or stage.
    #[error("unexpected {stage:?} message for round {round} from {client}")]
    Unexpected {
        /// Sender.
        client: ClientId,
        /// Round the message names.
        round: u64,
        /// Stage the message answers.
        stage: Stage,
    },
    /// The result was expected but invalid; the client is dropped from the round.
    #[error("invalid result from {client}: {reason}")]
    InvalidResult {
        /// Sender.
        client: ClientId,
        /// What was wrong.
        reason: String,
    },
}
