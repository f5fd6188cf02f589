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
//! answered or the deadline passed. How updates arrive (in the clear, or under SecAgg+ or
//! homomorphic aggregation, whose steps the engine relays) is an update protocol's business
//! (`collector.rs`): the engine hands it the stage's messages and closes its steps without
//! knowing which protocol runs. Clients that fail, disconnect or miss the deadline are dropped
//! from the round; the round still aggregates if at least the plan's `min_results` arrived, and is
//! aborted (parameters unchanged) otherwise. An optional federated evaluation stage follows.
//! Time is a [`Duration`] since an epoch the driver chooses.

use std::collections::{BTreeSet, VecDeque};
use std::sync::Arc;
use std::time::Duration;

#[cfg(doc)]
use fl_core::WeightedSum;
use fl_core::{
    ClientId, ClientMessage, ContentHash, EvaluateResult, ParamVec, RoundConfig, ServerMessage,
    Stage, Strategy, UpdateForm, derive_seed,
};

mod collect;
mod collector;
mod events;
mod he;
mod rounds;
mod secure;

pub use events::{AbortReason, DropReason, EngineError, EngineEvent, ParamsRefused};

use collect::Collected;
use collector::{Collector, Next, Progress, StageContext, UpdateProtocol};

pub use he::{HeCommittee, MAX_REQUEST_BYTES};
pub use secure::SecureSetup;

/// Settings of the round engine. Not read from a file itself: a federation file's settings
/// become one through [`EngineConfig::from_federation`], in one place.
#[derive(Debug, Clone, PartialEq)]
pub struct EngineConfig {
    /// Rounds to run.
    pub num_rounds: u64,
    /// A round starts only once at least this many clients are connected.
    pub min_available_clients: usize,
    /// Time clients have to return a fit result, from the moment the round starts.
    pub fit_timeout: Duration,
    /// Time clients have to return an evaluation, from the moment the stage starts.
    pub evaluate_timeout: Duration,
    /// Run seed: client selection and local data order derive from it.
    pub seed: u64,
    /// Release the global model from memory once a fit stage's instructions are out, when the
    /// strategy does not read it ([`Strategy::needs_current_params`]). If the round then aborts
    /// and no one else still holds the model, the engine asks for it back
    /// ([`EngineEvent::ParamsNeeded`], [`Engine::handle_params`]); a deployment reloads it from
    /// its checkpoint store. Saves one model's worth of memory while updates stream in.
    pub release_params_during_fit: bool,
}

impl EngineConfig {
    /// The engine settings of a federation file: `[federation]`'s rounds, quorum and seed, and
    /// `[aggregator]`'s deadlines. The model stays in memory during a fit stage
    /// (`release_params_during_fit` is the deployment's choice, not the file's).
    pub fn from_federation(config: &fl_core::config::FederationConfig) -> Self {
        Self {
            num_rounds: config.federation.rounds,
            min_available_clients: config.federation.min_clients,
            fit_timeout: config.fit_timeout(),
            evaluate_timeout: config.evaluate_timeout(),
            seed: config.federation.seed,
            release_params_during_fit: false,
        }
    }
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

struct FitStage {
    round: u64,
    /// The clients owing the collector's current step.
    pending: BTreeSet<ClientId>,
    /// The update protocol's state for this round: it takes the messages and closes the steps.
    collector: Box<dyn Collector>,
    /// Members send differences from the global model (under differential privacy), not
    /// their models.
    deltas: bool,
    min_results: usize,
    dropped: usize,
    deadline: Duration,
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
    /// How members upload (plain unless secure aggregation is set up).
    protocol: Box<dyn UpdateProtocol>,
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
            protocol: Box::new(collector::Plain),
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
            ClientMessage::FitDone { .. }
            | ClientMessage::FitBegin { .. }
            | ClientMessage::FitChunk { .. }
            | ClientMessage::ControlChunk { .. }
            | ClientMessage::FitEnd { .. }
            | ClientMessage::Secure { .. }
            | ClientMessage::MaskedInput { .. }
            | ClientMessage::Encrypted { .. } => self.fit_message(client, msg),
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
                        s.collector.forget(client);
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
}

fn unexpected(client: ClientId, round: u64, stage: Stage) -> EngineError {
    EngineError::Unexpected {
        client,
        round,
        stage,
    }
}
