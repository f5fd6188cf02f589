//! The round engine: federated rounds as a state machine without IO.
//!
//! The engine never touches a socket, a clock or a thread. A driver tells it what happened
//! (`handle_*`, with the current time passed in) and asks what to do next (`poll_*`):
//!
//! 1. `handle_connect` / `handle_disconnect` as clients come and go,
//!    `handle_message` for each [`ClientMessage`], `handle_timeout` once
//!    [`poll_timeout`](Engine::poll_timeout)'s instant has passed;
//! 2. then drain [`poll_transmit`](Engine::poll_transmit) (messages to send) and
//!    [`poll_event`](Engine::poll_event) (progress for logs, metrics and checkpoints).
//!
//! Each round: wait until enough clients are connected, let the [`Strategy`] select the fit
//! clients (seeded), send them the global parameters, collect every valid result as it arrives
//! in the form the strategy asked for (folded into a streaming [`WeightedSum`], or kept per
//! member for a rule that reads each update), and close the stage when all selected clients
//! answered or the deadline passed. Clients that fail, disconnect or miss the deadline are dropped from the
//! round; the round still aggregates if at least the plan's `min_results` arrived, and is
//! aborted (parameters unchanged) otherwise. An optional federated evaluation stage follows.
//! Time is a [`Duration`] since an epoch the driver chooses.

use std::collections::{BTreeSet, VecDeque};
use std::sync::Arc;
use std::time::Duration;

#[cfg(doc)]
use fl_core::WeightedSum;
use fl_core::{
    ClientId, ClientMessage, ContentHash, EvaluateResult, Metrics, ParamVec, Refusal, RoundConfig,
    ServerMessage, Stage, Strategy, StrategyError, UpdateForm, derive_seed,
};
use serde::{Deserialize, Serialize};

mod collect;
mod he;
mod secure;

use collect::Collected;

pub use he::{HeCommittee, MAX_REQUEST_BYTES};
pub use secure::SecureSetup;

/// Settings of the round engine.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct EngineConfig {
    /// Rounds to run.
    pub num_rounds: u64,
    /// A round starts only once at least this many clients are connected.
    pub min_available_clients: usize,
    /// Time clients have to return a fit result, from the moment the round starts.
    #[serde(with = "duration_secs")]
    pub fit_timeout: Duration,
    /// Time clients have to return an evaluation, from the moment the stage starts.
    #[serde(with = "duration_secs")]
    pub evaluate_timeout: Duration,
    /// Run seed: client selection and local data order derive from it.
    pub seed: u64,
    /// Release the global model from memory once a fit stage's instructions are out, when the
    /// strategy does not read it ([`Strategy::needs_current_params`]). If the round then aborts
    /// and no one else still holds the model, the engine asks for it back
    /// ([`EngineEvent::ParamsNeeded`], [`Engine::handle_params`]); a deployment reloads it from
    /// its checkpoint store. Saves one model's worth of memory while updates stream in.
    #[serde(default)]
    pub release_params_during_fit: bool,
}

impl Default for EngineConfig {
    fn default() -> Self {
        Self {
            num_rounds: 10,
            min_available_clients: 2,
            fit_timeout: Duration::from_secs(600),
            evaluate_timeout: Duration::from_secs(300),
            seed: 0,
            release_params_during_fit: false,
        }
    }
}

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

struct FitStage {
    round: u64,
    pending: BTreeSet<ClientId>,
    /// The updates received so far, in the strategy's form.
    updates: Collected,
    /// Members send differences from the global model (under differential privacy), not
    /// their models.
    deltas: bool,
    min_results: usize,
    dropped: usize,
    deadline: Duration,
    /// The secure-aggregation protocol of this stage, when the federation runs one:
    /// `pending` then holds the clients owing its current step.
    secure: Option<Box<secure::SecureStage>>,
    /// The homomorphic aggregation of this stage, when the federation runs one.
    he: Option<Box<he::HeStage>>,
}

struct EvaluateStage {
    round: u64,
    pending: BTreeSet<ClientId>,
    results: Vec<(ClientId, EvaluateResult)>,
    deadline: Duration,
}

enum State {
    /// Waiting for enough clients to start round `round + 1`.
    Idle,
    /// A round aborted while the global model was released; waiting for it.
    WaitingForParams,
    Fit(FitStage),
    Evaluate(EvaluateStage),
    Finished,
}

/// The aggregator's round state machine.
pub struct Engine {
    config: EngineConfig,
    strategy: Box<dyn Strategy>,
    params: Arc<ParamVec>,
    params_hash: ContentHash,
    round: u64,
    connected: BTreeSet<ClientId>,
    state: State,
    outbox: VecDeque<(ClientId, ServerMessage)>,
    events: VecDeque<EngineEvent>,
    /// The global model while it is released (`params` is then a zero placeholder).
    released: Option<std::sync::Weak<ParamVec>>,
    /// Secure aggregation of every fit stage, if configured.
    secure: Option<SecureSetup>,
}

impl Engine {
    /// An engine that will run `config.num_rounds` rounds of `strategy` from `initial`.
    pub fn new(config: EngineConfig, strategy: Box<dyn Strategy>, initial: ParamVec) -> Self {
        Self::resume(config, strategy, initial, 0)
    }

    /// An engine that continues after `completed_rounds` rounds with parameters `params`,
    /// as when restarting from a checkpoint.
    pub fn resume(
        config: EngineConfig,
        strategy: Box<dyn Strategy>,
        params: ParamVec,
        completed_rounds: u64,
    ) -> Self {
        let params_hash = params.content_hash();
        let mut engine = Self {
            config,
            strategy,
            params: Arc::new(params),
            params_hash,
            round: completed_rounds,
            connected: BTreeSet::new(),
            state: State::Idle,
            outbox: VecDeque::new(),
            events: VecDeque::new(),
            released: None,
            secure: None,
        };
        if engine.round >= engine.config.num_rounds {
            engine.finish();
        }
        engine
    }

    // ---- getters -------------------------------------------------------------------------

    /// The current global parameters.
    pub fn params(&self) -> &Arc<ParamVec> {
        &self.params
    }

    /// The latest round started (0 before the first).
    pub fn round(&self) -> u64 {
        self.round
    }

    /// Whether every round has run.
    pub fn is_finished(&self) -> bool {
        matches!(self.state, State::Finished)
    }

    /// Connected clients, ascending.
    pub fn connected(&self) -> impl Iterator<Item = ClientId> + '_ {
        self.connected.iter().copied()
    }

    /// The settings.
    pub fn config(&self) -> &EngineConfig {
        &self.config
    }

    // ---- inputs --------------------------------------------------------------------------

    /// A client connected (idempotent). May start a round.
    pub fn handle_connect(&mut self, now: Duration, client: ClientId) {
        self.connected.insert(client);
        match self.state {
            State::Idle => self.try_start_round(now),
            State::Finished => self.outbox.push_back((client, self.finished_message())),
            _ => {}
        }
    }

    /// A client disconnected; if the current stage waits on it, it is dropped.
    pub fn handle_disconnect(&mut self, now: Duration, client: ClientId) {
        if !self.connected.remove(&client) {
            return;
        }
        self.drop_pending(client, DropReason::Disconnected);
        self.maybe_close_stage(now);
    }

    /// A message from `client`.
    pub fn handle_message(
        &mut self,
        now: Duration,
        client: ClientId,
        msg: ClientMessage,
    ) -> Result<(), EngineError> {
        if !self.connected.contains(&client) {
            return Err(EngineError::UnknownClient(client));
        }
        let result = match msg {
            ClientMessage::FitDone { round, result } => {
                let stage = self.fit_stage_owing(client, round)?;
                if stage.updates.is_streaming(client) {
                    return Err(unexpected(client, round, Stage::Fit));
                }
                let added =
                    stage
                        .updates
                        .add(client, &result.params, result.num_examples, &result.metrics);
                self.settle_fit(client, round, added)
            }
            ClientMessage::FitBegin {
                round,
                num_examples,
                metrics,
            } => {
                let stage = self.fit_stage_owing(client, round)?;
                if stage.updates.is_streaming(client) {
                    return Err(unexpected(client, round, Stage::Fit));
                }
                match stage.updates.begin(client, num_examples, metrics) {
                    Ok(()) => Ok(()),
                    Err(e) => self.settle_fit(client, round, Err(e)),
                }
            }
            ClientMessage::FitChunk { round, values } => {
                let stage = self.fit_stage_owing(client, round)?;
                match stage.updates.extend(client, &values) {
                    None => return Err(unexpected(client, round, Stage::Fit)),
                    Some(Ok(())) => Ok(()),
                    Some(Err(e)) => self.settle_fit(client, round, Err(e)),
                }
            }
            ClientMessage::FitEnd { round } => {
                let stage = self.fit_stage_owing(client, round)?;
                let Some(done) = stage.updates.complete(client) else {
                    return Err(unexpected(client, round, Stage::Fit));
                };
                self.settle_fit(client, round, done)
            }
            ClientMessage::Secure {
                round,
                step: fl_core::protocol::SecureClientStep::PartialDecryption,
                payload,
            } => {
                match self.partial_decryption(client, round, &payload)? {
                    // More slices to come from this member.
                    Ok(false) => Ok(()),
                    Ok(true) => self.settle_secure(client, round, Ok(())),
                    Err(e) => self.settle_secure(client, round, Err(e)),
                }
            }
            ClientMessage::Secure {
                round,
                step,
                payload,
            } => {
                let outcome = self.secure_step(client, round, step, &payload)?;
                self.settle_secure(client, round, outcome)
            }
            ClientMessage::Encrypted {
                round,
                update,
                metrics,
            } => {
                let outcome = self.encrypted_update(client, round, &update, metrics)?;
                self.settle_secure(client, round, outcome)
            }
            ClientMessage::MaskedInput {
                round,
                header,
                values,
                metrics,
                ..
            } => {
                let outcome = self.masked_input(client, round, &header, &values, metrics)?;
                self.settle_secure(client, round, outcome)
            }
            ClientMessage::EvaluateDone { round, result } => {
                let State::Evaluate(stage) = &mut self.state else {
                    return Err(unexpected(client, round, Stage::Evaluate));
                };
                if stage.round != round || !stage.pending.remove(&client) {
                    return Err(unexpected(client, round, Stage::Evaluate));
                }
                if result.loss.is_finite() && result.num_examples > 0 {
                    stage.results.push((client, result));
                    Ok(())
                } else {
                    let reason = format!(
                        "evaluation with loss {} over {} examples",
                        result.loss, result.num_examples
                    );
                    self.events.push_back(EngineEvent::ClientDropped {
                        round,
                        stage: Stage::Evaluate,
                        client,
                        reason: DropReason::InvalidResult(reason.clone()),
                    });
                    Err(EngineError::InvalidResult { client, reason })
                }
            }
            ClientMessage::Failed {
                round,
                stage,
                reason,
            } => {
                let owed = match &mut self.state {
                    State::Fit(s) if stage == Stage::Fit && s.round == round => {
                        let owed = s.pending.remove(&client);
                        s.updates.forget(client);
                        if owed {
                            s.dropped += 1;
                        }
                        owed
                    }
                    State::Evaluate(s) if stage == Stage::Evaluate && s.round == round => {
                        s.pending.remove(&client)
                    }
                    _ => false,
                };
                if !owed {
                    return Err(unexpected(client, round, stage));
                }
                self.events.push_back(EngineEvent::ClientDropped {
                    round,
                    stage,
                    client,
                    reason: DropReason::ClientFailed(reason),
                });
                Ok(())
            }
        };
        self.maybe_close_stage(now);
        result
    }

    /// The fit stage, if it is round `round` and still waits on `client`.
    fn fit_stage_owing(
        &mut self,
        client: ClientId,
        round: u64,
    ) -> Result<&mut FitStage, EngineError> {
        match &mut self.state {
            State::Fit(stage) if stage.round == round && stage.pending.contains(&client) => {
                Ok(stage)
            }
            _ => Err(unexpected(client, round, Stage::Fit)),
        }
    }

    /// Ends `client`'s part in the fit stage when its result was added (`Ok`) or refused.
    fn settle_fit(
        &mut self,
        client: ClientId,
        round: u64,
        outcome: Result<(), fl_core::AggregateError>,
    ) -> Result<(), EngineError> {
        let State::Fit(stage) = &mut self.state else {
            return Err(unexpected(client, round, Stage::Fit));
        };
        stage.pending.remove(&client);
        stage.updates.forget(client);
        match outcome {
            Ok(()) => Ok(()),
            Err(e) => {
                stage.dropped += 1;
                let reason = e.to_string();
                self.events.push_back(EngineEvent::ClientDropped {
                    round,
                    stage: Stage::Fit,
                    client,
                    reason: DropReason::InvalidResult(reason.clone()),
                });
                Err(EngineError::InvalidResult { client, reason })
            }
        }
    }

    /// Time passed; closes the current stage if its deadline is reached.
    pub fn handle_timeout(&mut self, now: Duration) {
        let expired = match &self.state {
            State::Fit(s) => now >= s.deadline,
            State::Evaluate(s) => now >= s.deadline,
            _ => false,
        };
        if !expired {
            return;
        }
        let late: Vec<ClientId> = match &self.state {
            State::Fit(s) => s.pending.iter().copied().collect(),
            State::Evaluate(s) => s.pending.iter().copied().collect(),
            _ => Vec::new(),
        };
        for client in late {
            self.drop_pending(client, DropReason::Deadline);
        }
        self.maybe_close_stage(now);
    }

    // ---- outputs -------------------------------------------------------------------------

    /// The next message to send, with its recipient.
    #[must_use]
    pub fn poll_transmit(&mut self) -> Option<(ClientId, ServerMessage)> {
        self.outbox.pop_front()
    }

    /// When [`handle_timeout`](Self::handle_timeout) must be called next, if ever.
    #[must_use]
    pub fn poll_timeout(&self) -> Option<Duration> {
        match &self.state {
            State::Fit(s) => Some(s.deadline),
            State::Evaluate(s) => Some(s.deadline),
            _ => None,
        }
    }

    /// The next progress event.
    #[must_use]
    pub fn poll_event(&mut self) -> Option<EngineEvent> {
        self.events.pop_front()
    }

    // ---- transitions ---------------------------------------------------------------------

    fn header(&self, stage: Stage) -> RoundConfig {
        RoundConfig {
            round: self.round,
            stage,
            params_hash: self.params_hash,
            schema_hash: self.params.schema().hash(),
        }
    }

    fn try_start_round(&mut self, now: Duration) {
        if self.connected.len() < self.config.min_available_clients.max(1) {
            self.state = State::Idle;
            return;
        }
        if let Err(reason) = self.strategy.authorize_round(self.round + 1) {
            self.events.push_back(EngineEvent::Stopped {
                round: self.round + 1,
                reason: std::sync::Arc::new(reason),
            });
            self.finish();
            return;
        }
        self.round += 1;
        let round = self.round;
        let available: Vec<ClientId> = self.connected.iter().copied().collect();
        let round_seed = derive_seed(self.config.seed, "select", round);
        let mut plan = self.strategy.configure_fit(round, &available, round_seed);
        plan.clients.retain(|c| self.connected.contains(c));
        plan.clients.sort_unstable();
        plan.clients.dedup();
        self.events.push_back(EngineEvent::RoundStarted {
            round,
            selected: plan.clients.clone(),
        });
        if plan.clients.is_empty() {
            self.abort_round(now, AbortReason::NoClientsSelected);
            return;
        }
        let form = self.strategy.update_form();
        if form == UpdateForm::PerMember && self.secure.is_some() {
            // Refused when the federation file is loaded; an engine assembled by hand gets
            // the same answer here rather than a sum the strategy cannot read.
            self.abort_round(now, AbortReason::PerMemberUnderSecureAggregation);
            return;
        }
        let homomorphic = self
            .secure
            .as_ref()
            .is_some_and(|s| s.config.protocol == fl_core::secure::SecureProtocol::Homomorphic);
        let mut he_stage = None;
        if homomorphic {
            let setup = self.secure.as_ref().expect("checked");
            match setup.start_he_stage(round, &plan, &self.params) {
                Ok(stage) => {
                    plan.config.he = Some(stage.fit().clone());
                    he_stage = Some(stage);
                }
                Err(reason) => {
                    self.abort_round(now, AbortReason::Homomorphic(reason));
                    return;
                }
            }
        }
        let secure = match &self.secure {
            _ if homomorphic => None,
            None if plan
                .config
                .privacy
                .is_some_and(|p| p.distributed_noise_multiplier > 0.0) =>
            {
                // The distributed mechanism's noise is added inside secure aggregation:
                // without it members would send un-noised updates.
                self.abort_round(now, AbortReason::DistributedDpWithoutSecureAggregation);
                return;
            }
            None => None,
            Some(setup) => match setup.start_stage(round, &plan, &self.params) {
                Ok(stage) => Some(stage),
                Err(reason) => {
                    self.abort_round(now, AbortReason::SecureAggregation(reason));
                    return;
                }
            },
        };
        if let Some(stage) = &secure {
            plan.config.secure = Some(std::sync::Arc::new(stage.fit().clone()));
        }
        let deltas = plan.config.privacy.is_some();
        let header = self.header(Stage::Fit);
        let shuffle_base = derive_seed(self.config.seed, "shuffle", round);
        for &client in &plan.clients {
            let mut config = plan.config.clone();
            config.shuffle_seed = derive_seed(shuffle_base, "client", client.0);
            self.outbox.push_back((
                client,
                ServerMessage::Fit {
                    header: header.clone(),
                    params: self.params.clone(),
                    config,
                },
            ));
        }
        self.state = State::Fit(FitStage {
            round,
            pending: plan.clients.iter().copied().collect(),
            updates: Collected::new(self.params.schema().clone(), form),
            deltas,
            min_results: plan.min_results.max(1),
            dropped: 0,
            deadline: now
                + match (&secure, &self.secure) {
                    (Some(_), Some(setup)) => setup.config.step_timeout(),
                    _ => self.config.fit_timeout,
                },
            secure,
            he: he_stage,
        });
        // Secure aggregation decodes the sum against the global model, so it stays.
        if self.config.release_params_during_fit
            && !self.strategy.needs_current_params()
            && self.secure.is_none()
        {
            // The instructions in the outbox (and the transport sending them) keep the model
            // alive only as long as they need it. The placeholder's zero pages are never
            // touched, so they take no memory.
            let schema = self.params.schema().clone();
            let model = std::mem::replace(&mut self.params, Arc::new(ParamVec::zeros(schema)));
            self.released = Some(Arc::downgrade(&model));
        }
    }

    fn drop_pending(&mut self, client: ClientId, reason: DropReason) {
        let (round, stage) = match &mut self.state {
            State::Fit(s) => {
                if !s.pending.remove(&client) {
                    return;
                }
                s.updates.forget(client);
                s.dropped += 1;
                (s.round, Stage::Fit)
            }
            State::Evaluate(s) => {
                if !s.pending.remove(&client) {
                    return;
                }
                (s.round, Stage::Evaluate)
            }
            _ => return,
        };
        self.events.push_back(EngineEvent::ClientDropped {
            round,
            stage,
            client,
            reason,
        });
    }

    fn maybe_close_stage(&mut self, now: Duration) {
        let done = match &self.state {
            State::Fit(s) => s.pending.is_empty(),
            State::Evaluate(s) => s.pending.is_empty(),
            _ => false,
        };
        if !done {
            return;
        }
        match std::mem::replace(&mut self.state, State::Idle) {
            State::Fit(stage) if stage.secure.is_some() => self.advance_secure(now, stage),
            State::Fit(stage) if stage.he.is_some() => self.advance_he(now, stage),
            State::Fit(stage) => self.close_fit(now, stage),
            State::Evaluate(stage) => self.close_evaluate(now, stage),
            other => self.state = other,
        }
    }

    fn close_fit(&mut self, now: Duration, stage: FitStage) {
        let round = stage.round;
        if stage.updates.count() < stage.min_results {
            let reason = AbortReason::TooFewResults {
                arrived: stage.updates.count(),
                required: stage.min_results,
            };
            self.abort_round(now, reason);
            return;
        }
        let num_results = stage.updates.count();
        let num_partial = stage.updates.partial();
        let updates = stage.updates.into_updates(stage.deltas);
        let mut metrics = updates.mean_metrics();
        match self.strategy.aggregate_fit(round, &self.params, updates) {
            Ok(next)
                if next.all_finite() && next.schema().hash() == self.params.schema().hash() =>
            {
                metrics.extend(self.strategy.round_metrics());
                self.params_hash = next.content_hash();
                self.params = Arc::new(next);
                self.released = None;
                self.events.push_back(EngineEvent::FitAggregated {
                    round,
                    params: self.params.clone(),
                    num_results,
                    num_partial,
                    num_dropped: stage.dropped,
                    metrics,
                });
            }
            Ok(_) => {
                self.abort_round(now, AbortReason::InvalidModel);
                return;
            }
            Err(e) => {
                self.abort_round(now, AbortReason::Aggregation(e));
                return;
            }
        }
        let available: Vec<ClientId> = self.connected.iter().copied().collect();
        let round_seed = derive_seed(self.config.seed, "evaluate", round);
        let mut plan = self
            .strategy
            .configure_evaluate(round, &available, round_seed);
        plan.clients.retain(|c| self.connected.contains(c));
        plan.clients.sort_unstable();
        plan.clients.dedup();
        if plan.clients.is_empty() {
            self.complete_round(now);
            return;
        }
        let header = self.header(Stage::Evaluate);
        for &client in &plan.clients {
            self.outbox.push_back((
                client,
                ServerMessage::Evaluate {
                    header: header.clone(),
                    params: self.params.clone(),
                    config: plan.config.clone(),
                },
            ));
        }
        self.state = State::Evaluate(EvaluateStage {
            round,
            pending: plan.clients.into_iter().collect(),
            results: Vec::new(),
            deadline: now + self.config.evaluate_timeout,
        });
    }

    fn close_evaluate(&mut self, now: Duration, stage: EvaluateStage) {
        if let Some(result) = self
            .strategy
            .aggregate_evaluate(stage.round, &stage.results)
        {
            self.events.push_back(EngineEvent::Evaluated {
                round: stage.round,
                result,
            });
        }
        self.complete_round(now);
    }

    fn abort_round(&mut self, now: Duration, reason: AbortReason) {
        self.events.push_back(EngineEvent::RoundAborted {
            round: self.round,
            reason,
        });
        if let Some(weak) = self.released.take() {
            match weak.upgrade() {
                Some(params) => self.params = params,
                None => {
                    self.state = State::WaitingForParams;
                    self.events.push_back(EngineEvent::ParamsNeeded {
                        hash: self.params_hash,
                    });
                    return;
                }
            }
        }
        self.complete_round(now);
    }

    /// Gives back the global model after [`EngineEvent::ParamsNeeded`]; the federation goes on.
    /// Refuses parameters with another content hash, or when none are needed.
    pub fn handle_params(&mut self, now: Duration, params: ParamVec) -> Result<(), String> {
        if !matches!(self.state, State::WaitingForParams) {
            return Err("the engine is not waiting for parameters".into());
        }
        let hash = params.content_hash();
        if hash != self.params_hash {
            return Err(format!(
                "parameters hash to {hash}, the global model is {}",
                self.params_hash
            ));
        }
        self.params = Arc::new(params);
        self.state = State::Idle;
        self.complete_round(now);
        Ok(())
    }

    /// The hash of the global model the engine waits for, if it does.
    pub fn params_needed(&self) -> Option<ContentHash> {
        matches!(self.state, State::WaitingForParams).then_some(self.params_hash)
    }

    fn complete_round(&mut self, now: Duration) {
        self.events.push_back(EngineEvent::RoundCompleted {
            round: self.round,
            params: self.params.clone(),
        });
        if self.round >= self.config.num_rounds {
            self.finish();
        } else {
            self.try_start_round(now);
        }
    }

    /// What a member hears when the federation is over: the final model with it.
    fn finished_message(&self) -> ServerMessage {
        ServerMessage::Finished {
            round: self.round,
            params: Some(self.params.clone()),
        }
    }

    fn finish(&mut self) {
        self.state = State::Finished;
        for &client in &self.connected {
            self.outbox.push_back((client, self.finished_message()));
        }
        self.events.push_back(EngineEvent::Finished {
            params: self.params.clone(),
        });
    }
}

fn unexpected(client: ClientId, round: u64, stage: Stage) -> EngineError {
    EngineError::Unexpected {
        client,
        round,
        stage,
    }
}

mod duration_secs {
    use std::time::Duration;

    use serde::{Deserialize, Deserializer, Serializer};

    pub fn serialize<S: Serializer>(d: &Duration, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_f64(d.as_secs_f64())
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Duration, D::Error> {
        let secs = f64::deserialize(d)?;
        Duration::try_from_secs_f64(secs).map_err(serde::de::Error::custom)
    }
}
