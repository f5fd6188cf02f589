//! Asynchronous buffered aggregation, FedBuff (Nguyen et al., "Federated Learning with Buffered
//! Asynchronous Aggregation", AISTATS 2022), as a state machine without IO, and a simulator
//! that drives it with real trainers on simulated time.
//!
//! Members train continuously: each gets the current global model as soon as it connects and
//! again as soon as it returned a result, so fast members never wait for slow ones. The server
//! keeps a buffer; every result for model version `v` received while the model is at version
//! `t` has staleness `τ = t - v`, contributes its delta `Δ = w_member - w_v` weighted by
//! `s(τ) = 1/√(1+τ)` (the paper's polynomial staleness scaling), and is dropped when `τ`
//! exceeds the maximum staleness. After `K` contributions the server steps:
//!
//! ```text
//! w_{t+1} = w_t + η_g · (1/K) · Σᵢ s(τᵢ) · Δᵢ
//! ```
//!
//! (the paper's Algorithm 1 with the mean pseudo-gradient and server learning rate `η_g`), and
//! the version advances. The engine keeps the `max_staleness + 1` latest versions to form the
//! deltas. On the wire each model sent is a task whose `round` is a counter that grows with every
//! send (a member's session accepts only newer instructions, and a member often gets the same
//! version twice while the buffer fills); the engine maps each task to the version it carried.
//!
//! What is done, and what is not: this module is the sans-IO core and its simulator (member
//! speeds drawn by the caller, e.g. log-normal), and [`FedBuffServer`], which the gRPC service
//! drives with the same core (results streamed in chunks, signed, reassembled). Secure
//! aggregation of each buffer (which the paper describes: a SecAgg instance per buffer of `K`)
//! is not wired in: a buffered federation's updates are seen individually by the server (the
//! paper keeps the buffer in a trusted execution environment). A federation file runs it with
//! a `[fedbuff]` section ([`crate::file_engine`]); a library user hands a [`FedBuffServer`] to
//! [`service::federation`](crate::service::federation).
//!
//! ```
//! use std::sync::Arc;
//! use fl_aggregator::fedbuff::{FedBuffConfig, FedBuffEngine};
//! use fl_core::{ParamVec, Schema, TensorSpec};
//!
//! let schema = Arc::new(Schema::new(vec![TensorSpec::new("w", [2])]).unwrap());
//! let config = FedBuffConfig::new(2, 10);
//! let engine = FedBuffEngine::new(config, ParamVec::zeros(schema)).unwrap();
//! assert_eq!(engine.version(), 0);
//! ```

use std::cmp::Reverse;
use std::collections::{BTreeMap, BinaryHeap, VecDeque};
use std::sync::Arc;
use std::time::Duration;

use fl_core::{
    ClientId, ClientMessage, ClientSession, FitConfig, FitResult, ParamVec, RoundConfig,
    ServerMessage, SessionEvent, Stage, Trainer, UploadSpec,
};

use crate::engine::EngineError;
use crate::service::ServedEngine;

/// Settings of a buffered asynchronous federation.
#[derive(Debug, Clone, PartialEq)]
pub struct FedBuffConfig {
    /// `K`: contributions per server step.
    pub buffer_size: usize,
    /// Results older than this many versions are dropped.
    pub max_staleness: u64,
    /// `η_g`: the server step applied to the mean weighted delta (1.0 in the paper's
    /// experiments with SGD on the server).
    pub server_learning_rate: f32,
    /// Server steps to run.
    pub num_updates: u64,
    /// Local training settings sent with every model.
    pub fit: FitConfig,
}

impl FedBuffConfig {
    /// `buffer_size` contributions per step, `num_updates` steps, maximum staleness 10, server
    /// learning rate 1, default local training.
    pub fn new(buffer_size: usize, num_updates: u64) -> Self {
        Self {
            buffer_size,
            max_staleness: 10,
            server_learning_rate: 1.0,
            num_updates,
            fit: FitConfig::default(),
        }
    }
}

/// Why the engine refused a message or a configuration.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[non_exhaustive]
pub enum FedBuffError {
    /// A buffer of zero, no steps, or a server learning rate that is not finite and positive.
    #[error("invalid FedBuff settings: {0}")]
    Config(String),
    /// A message from a client that is not connected.
    #[error("client {0} is not connected")]
    UnknownClient(ClientId),
    /// A result for a task the client was not working on.
    #[error("client {client} sent a result for task {task}, which it was not working on")]
    Unexpected {
        /// The client.
        client: ClientId,
        /// The task (the message's round) it named.
        task: u64,
    },
    /// A result that cannot be used (other schema, non-finite values, no examples).
    #[error("client {client}: {reason}")]
    Invalid {
        /// The client.
        client: ClientId,
        /// What is wrong.
        reason: String,
    },
}

/// Progress of a buffered federation.
#[derive(Debug, Clone, PartialEq)]
#[non_exhaustive]
pub enum FedBuffEvent {
    /// The server stepped: the model is now at `version`.
    Applied {
        /// The new version (1 for the first step).
        version: u64,
        /// The new global parameters.
        params: Arc<ParamVec>,
        /// The staleness of each contribution of the step.
        staleness: Vec<u64>,
        /// Who sent each contribution of the step, in the order of `staleness` (a fast
        /// member may appear more than once).
        contributors: Vec<ClientId>,
    },
    /// A result was not used.
    Dropped {
        /// The client.
        client: ClientId,
        /// The version it trained on.
        version: u64,
        /// Why.
        reason: String,
    },
    /// Every step ran.
    Finished {
        /// The last version.
        version: u64,
    },
}

/// The buffered asynchronous server as a state machine: feed it connections and messages, drain
/// [`poll_transmit`](Self::poll_transmit) and [`poll_event`](Self::poll_event).
#[derive(Debug)]
pub struct FedBuffEngine {
    config: FedBuffConfig,
    params: Arc<ParamVec>,
    version: u64,
    /// The latest `max_staleness + 1` versions, oldest first.
    history: VecDeque<(u64, Arc<ParamVec>)>,
    /// Σ s(τ)·Δ of the current buffer.
    buffer: Vec<f64>,
    staleness: Vec<u64>,
    contributors: Vec<ClientId>,
    /// The task and version each connected client trains on (`None`: idle).
    training: BTreeMap<ClientId, Option<(u64, u64)>>,
    /// The last task number sent.
    tasks: u64,
    finished: bool,
    outbox: VecDeque<(ClientId, ServerMessage)>,
    events: VecDeque<FedBuffEvent>,
}

/// Why a result was not added to the buffer.
enum Rejection {
    /// The member reported a failure.
    Failed,
    /// Too old (the client still gets the current model).
    Stale(String),
    /// Unusable (refused to the caller too).
    Invalid(String),
}

impl std::fmt::Display for Rejection {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Failed => f.write_str("the member failed"),
            Self::Stale(why) => write!(f, "stale: {why}"),
            Self::Invalid(why) => write!(f, "invalid: {why}"),
        }
    }
}

/// The paper's polynomial staleness scaling `s(τ) = 1/√(1+τ)`.
pub fn staleness_weight(staleness: u64) -> f64 {
    1.0 / (1.0 + staleness as f64).sqrt()
}

impl FedBuffEngine {
    /// An engine starting from `initial` (version 0).
    ///
    /// # Errors
    /// [`FedBuffError::Config`] for a zero buffer, zero steps or a bad learning rate.
    pub fn new(config: FedBuffConfig, initial: ParamVec) -> Result<Self, FedBuffError> {
        if config.buffer_size == 0 || config.num_updates == 0 {
            return Err(FedBuffError::Config(
                "buffer_size and num_updates must be at least 1".into(),
            ));
        }
        if !(config.server_learning_rate.is_finite() && config.server_learning_rate > 0.0) {
            return Err(FedBuffError::Config(format!(
                "server_learning_rate {} must be finite and positive",
                config.server_learning_rate
            )));
        }
        let params = Arc::new(initial);
        Ok(Self {
            buffer: vec![0.0; params.len()],
            history: VecDeque::from([(0, Arc::clone(&params))]),
            params,
            version: 0,
            staleness: Vec::new(),
            contributors: Vec::new(),
            training: BTreeMap::new(),
            tasks: 0,
            finished: false,
            outbox: VecDeque::new(),
            events: VecDeque::new(),
            config,
        })
    }

    /// An engine that goes on from a checkpoint: `params` at `version` (the steps already
    /// taken). Results trained on older versions are dropped as no longer kept.
    ///
    /// # Errors
    /// As [`new`](Self::new).
    pub fn resume(
        config: FedBuffConfig,
        params: ParamVec,
        version: u64,
    ) -> Result<Self, FedBuffError> {
        let mut engine = Self::new(config, params)?;
        engine.version = version;
        engine.history = VecDeque::from([(version, Arc::clone(&engine.params))]);
        engine.finished = version >= engine.config.num_updates;
        if engine.finished {
            engine.events.push_back(FedBuffEvent::Finished { version });
        }
        Ok(engine)
    }

    /// The current global parameters.
    pub fn params(&self) -> &Arc<ParamVec> {
        &self.params
    }

    /// The current version (server steps taken).
    pub fn version(&self) -> u64 {
        self.version
    }

    /// Whether every step ran.
    pub fn is_finished(&self) -> bool {
        self.finished
    }

    /// The settings.
    pub fn config(&self) -> &FedBuffConfig {
        &self.config
    }

    /// The task `client` trains on (`None`: not connected or idle).
    pub fn task_of(&self, client: ClientId) -> Option<u64> {
        self.training
            .get(&client)
            .copied()
            .flatten()
            .map(|(t, _)| t)
    }

    /// A client connected: it gets the current model to train on.
    pub fn handle_connect(&mut self, client: ClientId) {
        if self.finished {
            self.outbox.push_back((client, self.finished_message()));
            return;
        }
        self.training.insert(client, None);
        self.send_model(client);
    }

    /// A client disconnected; whatever it was training on is forgotten.
    pub fn handle_disconnect(&mut self, client: ClientId) {
        self.training.remove(&client);
    }

    /// A message from `client`: a whole fit result ([`ClientMessage::FitDone`]) or a failure.
    ///
    /// # Errors
    /// [`FedBuffError`] naming why the message was refused; the engine's state is unchanged
    /// by a refused message except that the client gets the current model again after an
    /// invalid result (it is not left idle).
    pub fn handle_message(
        &mut self,
        client: ClientId,
        msg: ClientMessage,
    ) -> Result<(), FedBuffError> {
        let Some(&slot) = self.training.get(&client) else {
            return Err(FedBuffError::UnknownClient(client));
        };
        let (task, result) = match msg {
            ClientMessage::FitDone { round, result } => (round, Some(result)),
            ClientMessage::Failed {
                round,
                stage: Stage::Fit,
                ..
            } => (round, None),
            other => {
                return Err(FedBuffError::Invalid {
                    client,
                    reason: format!("unsupported message for round {}", other.round()),
                });
            }
        };
        let Some((_, version)) = slot.filter(|(t, _)| *t == task) else {
            return Err(FedBuffError::Unexpected { client, task });
        };
        self.training.insert(client, None);
        let outcome = match result {
            None => Err(Rejection::Failed),
            Some(r) => self.contribute(client, version, &r.params, r.num_examples),
        };
        if let Err(rejection) = &outcome {
            self.events.push_back(FedBuffEvent::Dropped {
                client,
                version,
                reason: rejection.to_string(),
            });
        }
        if !self.finished {
            self.send_model(client);
        }
        match outcome {
            Err(Rejection::Invalid(reason)) => Err(FedBuffError::Invalid { client, reason }),
            _ => Ok(()),
        }
    }

    /// Adds a result trained on `version` to the buffer; steps when it is full.
    fn contribute(
        &mut self,
        client: ClientId,
        version: u64,
        params: &ParamVec,
        examples: u64,
    ) -> Result<(), Rejection> {
        let staleness = self.version - version.min(self.version);
        if staleness > self.config.max_staleness {
            return Err(Rejection::Stale(format!(
                "trained on version {version}, the model is at {} (at most {} behind)",
                self.version, self.config.max_staleness
            )));
        }
        let Some((_, base)) = self.history.iter().find(|(v, _)| *v == version) else {
            return Err(Rejection::Stale(format!(
                "version {version} is no longer kept"
            )));
        };
        if params.schema().hash() != base.schema().hash() {
            return Err(Rejection::Invalid(
                "the result's schema is not the model's".into(),
            ));
        }
        if examples == 0 {
            return Err(Rejection::Invalid("a result over zero examples".into()));
        }
        if params.values().iter().any(|v| !v.is_finite()) {
            return Err(Rejection::Invalid("non-finite parameters".into()));
        }
        let s = staleness_weight(staleness);
        for ((acc, new), old) in self
            .buffer
            .iter_mut()
            .zip(params.values())
            .zip(base.values())
        {
            *acc += s * (f64::from(*new) - f64::from(*old));
        }
        self.staleness.push(staleness);
        self.contributors.push(client);
        if self.staleness.len() >= self.config.buffer_size {
            self.step();
        }
        Ok(())
    }

    fn step(&mut self) {
        let k = self.staleness.len() as f64;
        let eta = f64::from(self.config.server_learning_rate);
        let mut next = (*self.params).clone();
        for (w, acc) in next.values_mut().iter_mut().zip(&self.buffer) {
            *w = (f64::from(*w) + eta * acc / k) as f32;
        }
        self.buffer.iter_mut().for_each(|a| *a = 0.0);
        self.version += 1;
        self.params = Arc::new(next);
        self.history
            .push_back((self.version, Arc::clone(&self.params)));
        while self.history.len() as u64 > self.config.max_staleness + 1 {
            self.history.pop_front();
        }
        self.events.push_back(FedBuffEvent::Applied {
            version: self.version,
            params: Arc::clone(&self.params),
            staleness: std::mem::take(&mut self.staleness),
            contributors: std::mem::take(&mut self.contributors),
        });
        if self.version >= self.config.num_updates {
            self.finished = true;
            self.events.push_back(FedBuffEvent::Finished {
                version: self.version,
            });
            let clients: Vec<ClientId> = self.training.keys().copied().collect();
            for c in clients {
                self.outbox.push_back((c, self.finished_message()));
            }
        }
    }

    fn send_model(&mut self, client: ClientId) {
        self.tasks += 1;
        self.training
            .insert(client, Some((self.tasks, self.version)));
        let header = RoundConfig {
            round: self.tasks,
            stage: Stage::Fit,
            params_hash: self.params.content_hash(),
            schema_hash: self.params.schema().hash(),
        };
        self.outbox.push_back((
            client,
            ServerMessage::Fit {
                header,
                params: Arc::clone(&self.params),
                config: self.config.fit.clone(),
                upload: UploadSpec::default(),
            },
        ));
    }

    fn finished_message(&self) -> ServerMessage {
        ServerMessage::Finished {
            round: self.version,
            params: Some(Arc::clone(&self.params)),
        }
    }

    /// The next message to send, with its recipient.
    #[must_use]
    pub fn poll_transmit(&mut self) -> Option<(ClientId, ServerMessage)> {
        self.outbox.pop_front()
    }

    /// The next progress event.
    #[must_use]
    pub fn poll_event(&mut self) -> Option<FedBuffEvent> {
        self.events.pop_front()
    }
}

/// [`FedBuffEngine`] for the gRPC service
/// ([`service::federation`](crate::service::federation) takes it in place of the round
/// [`Engine`](crate::Engine)): the transport streams each result as
/// [`ClientMessage::FitBegin`], [`FitChunk`](ClientMessage::FitChunk)s and
/// [`FitEnd`](ClientMessage::FitEnd), after checking the member's signature over its chunk
/// hashes; this reassembles them into the whole result the engine takes. At most one result
/// per member is in flight, so reassembly holds at most one model per connected member.
/// SCAFFOLD control variates are refused (FedBuff has none).
#[derive(Debug)]
pub struct FedBuffServer {
    engine: FedBuffEngine,
    /// Results being reassembled by member.
    incoming: BTreeMap<ClientId, Incoming>,
}

/// A streamed result being reassembled.
#[derive(Debug)]
struct Incoming {
    task: u64,
    num_examples: u64,
    metrics: fl_core::Metrics,
    values: Vec<f32>,
}

impl FedBuffServer {
    /// Serves `engine`.
    pub fn new(engine: FedBuffEngine) -> Self {
        Self {
            engine,
            incoming: BTreeMap::new(),
        }
    }

    /// The engine.
    pub fn engine(&self) -> &FedBuffEngine {
        &self.engine
    }

    fn unexpected(client: ClientId, round: u64) -> EngineError {
        EngineError::Unexpected {
            client,
            round,
            stage: Stage::Fit,
        }
    }

    fn invalid(client: ClientId, reason: impl Into<String>) -> EngineError {
        EngineError::InvalidResult {
            client,
            reason: reason.into(),
        }
    }

    /// The result `client` is streaming for task `round`, refusing another task.
    fn incoming(&mut self, client: ClientId, round: u64) -> Result<&mut Incoming, EngineError> {
        match self.incoming.get_mut(&client) {
            Some(i) if i.task == round => Ok(i),
            _ => Err(Self::unexpected(client, round)),
        }
    }
}

impl From<FedBuffError> for EngineError {
    fn from(e: FedBuffError) -> Self {
        match e {
            FedBuffError::UnknownClient(c) => Self::UnknownClient(c),
            FedBuffError::Unexpected { client, task } => Self::Unexpected {
                client,
                round: task,
                stage: Stage::Fit,
            },
            FedBuffError::Invalid { client, reason } => Self::InvalidResult { client, reason },
            // Settings are checked when the engine is built, never per message.
            FedBuffError::Config(reason) => Self::InvalidResult {
                client: ClientId(u64::MAX),
                reason,
            },
        }
    }
}

impl ServedEngine for FedBuffServer {
    type Event = FedBuffEvent;

    fn params(&self) -> &Arc<ParamVec> {
        self.engine.params()
    }
    fn round(&self) -> u64 {
        self.engine.version()
    }
    fn is_finished(&self) -> bool {
        self.engine.is_finished()
    }
    fn handle_connect(&mut self, _now: Duration, client: ClientId) {
        self.engine.handle_connect(client);
    }
    fn handle_disconnect(&mut self, _now: Duration, client: ClientId) {
        self.incoming.remove(&client);
        self.engine.handle_disconnect(client);
    }
    fn handle_message(
        &mut self,
        _now: Duration,
        client: ClientId,
        msg: ClientMessage,
    ) -> Result<(), EngineError> {
        match msg {
            ClientMessage::FitBegin {
                round,
                num_examples,
                metrics,
                ..
            } => {
                if self.engine.task_of(client) != Some(round) || self.incoming.contains_key(&client)
                {
                    return Err(Self::unexpected(client, round));
                }
                let values = Vec::with_capacity(self.engine.params().len());
                self.incoming.insert(
                    client,
                    Incoming {
                        task: round,
                        num_examples,
                        metrics,
                        values,
                    },
                );
                Ok(())
            }
            ClientMessage::FitChunk { round, values } => {
                let limit = self.engine.params().len();
                let incoming = self.incoming(client, round)?;
                if incoming.values.len() + values.len() > limit {
                    self.incoming.remove(&client);
                    return Err(Self::invalid(
                        client,
                        format!("more than the model's {limit} values"),
                    ));
                }
                incoming.values.extend_from_slice(&values);
                Ok(())
            }
            ClientMessage::ControlChunk { .. } => {
                self.incoming.remove(&client);
                Err(Self::invalid(
                    client,
                    "control variates in a FedBuff federation (SCAFFOLD is synchronous only)",
                ))
            }
            ClientMessage::FitEnd { round } => {
                self.incoming(client, round)?;
                let Some(done) = self.incoming.remove(&client) else {
                    return Err(Self::unexpected(client, round));
                };
                let schema = self.engine.params().schema().clone();
                let params = ParamVec::new(schema, done.values)
                    .map_err(|e| Self::invalid(client, e.to_string()))?;
                let result = FitResult {
                    params,
                    num_examples: done.num_examples,
                    metrics: done.metrics,
                };
                self.engine
                    .handle_message(client, ClientMessage::FitDone { round, result })
                    .map_err(Into::into)
            }
            other @ (ClientMessage::FitDone { .. } | ClientMessage::Failed { .. }) => {
                self.incoming.remove(&client);
                self.engine
                    .handle_message(client, other)
                    .map_err(Into::into)
            }
            other => Err(Self::invalid(
                client,
                format!(
                    "a FedBuff federation takes plain fit results, not this message for round {}",
                    other.round()
                ),
            )),
        }
    }
    fn poll_timeout(&self) -> Option<Duration> {
        None
    }
    fn handle_timeout(&mut self, _now: Duration) {}
    fn poll_transmit(&mut self) -> Option<(ClientId, ServerMessage)> {
        self.engine.poll_transmit()
    }
    fn poll_event(&mut self) -> Option<FedBuffEvent> {
        self.engine.poll_event()
    }
    fn ends_round(event: &FedBuffEvent) -> bool {
        matches!(event, FedBuffEvent::Applied { .. })
    }
}

/// A buffered federation on simulated time: each member takes its own compute time per fit
/// (plus a fixed one-way latency per message); local training runs for real, in event order,
/// so a run is reproducible exactly.
pub struct FedBuffSim<T: Trainer> {
    engine: FedBuffEngine,
    members: BTreeMap<ClientId, SimMember<T>>,
    latency: Duration,
    now: Duration,
    seq: u64,
    /// (time, seq) of every message in flight or result being computed.
    queue: BinaryHeap<Reverse<(Duration, u64)>>,
    in_flight: BTreeMap<u64, Delivery>,
    refused: u64,
}

struct SimMember<T> {
    session: ClientSession,
    trainer: T,
    compute_time: Duration,
}

enum Delivery {
    ToMember(ClientId, ServerMessage),
    ToServer(ClientId, ClientMessage),
}

impl<T: Trainer> FedBuffSim<T> {
    /// A simulation of `engine` with `latency` per message.
    pub fn new(engine: FedBuffEngine, latency: Duration) -> Self {
        Self {
            engine,
            members: BTreeMap::new(),
            latency,
            now: Duration::ZERO,
            seq: 0,
            queue: BinaryHeap::new(),
            in_flight: BTreeMap::new(),
            refused: 0,
        }
    }

    /// Adds a member that takes `compute_time` per fit, and connects it now.
    pub fn add_member(&mut self, id: ClientId, trainer: T, compute_time: Duration) {
        let session = ClientSession::new(self.engine.params().schema().hash());
        self.members.insert(
            id,
            SimMember {
                session,
                trainer,
                compute_time,
            },
        );
        self.engine.handle_connect(id);
        self.pump();
    }

    /// Simulated time now.
    pub fn now(&self) -> Duration {
        self.now
    }

    /// The engine.
    pub fn engine(&self) -> &FedBuffEngine {
        &self.engine
    }

    /// Messages refused by the engine or a session.
    pub fn refused(&self) -> u64 {
        self.refused
    }

    /// Runs until the engine finished or nothing is left, calling `on_event` with the simulated
    /// time of each event.
    pub fn drive_with(&mut self, on_event: impl FnMut(Duration, FedBuffEvent)) {
        self.drive_until(Duration::MAX, on_event);
    }

    /// [`drive_with`](Self::drive_with), stopping before the first event after `limit`
    /// (simulated time), e.g. to give a run the same time budget as another.
    pub fn drive_until(
        &mut self,
        limit: Duration,
        mut on_event: impl FnMut(Duration, FedBuffEvent),
    ) {
        while let Some(&Reverse((at, _))) = self.queue.peek() {
            if at > limit {
                return;
            }
            let Some(Reverse((at, seq))) = self.queue.pop() else {
                return;
            };
            self.now = at;
            let Some(delivery) = self.in_flight.remove(&seq) else {
                continue;
            };
            match delivery {
                Delivery::ToServer(id, msg) => {
                    if self.engine.handle_message(id, msg).is_err() {
                        self.refused += 1;
                    }
                }
                Delivery::ToMember(id, msg) => {
                    if let Some(m) = self.members.get_mut(&id)
                        && m.session.handle_message(msg).is_err()
                    {
                        self.refused += 1;
                    }
                }
            }
            self.pump();
            while let Some(e) = self.engine.poll_event() {
                on_event(self.now, e);
            }
            if self.engine.is_finished() {
                return;
            }
        }
    }

    fn schedule(&mut self, at: Duration, delivery: Delivery) {
        self.seq += 1;
        self.in_flight.insert(self.seq, delivery);
        self.queue.push(Reverse((at, self.seq)));
    }

    /// Moves the engine's messages into the network and runs members' new fit tasks: the
    /// result is computed now and delivered after the member's compute time plus latency.
    fn pump(&mut self) {
        while let Some((to, msg)) = self.engine.poll_transmit() {
            self.schedule(self.now + self.latency, Delivery::ToMember(to, msg));
        }
        let ids: Vec<ClientId> = self.members.keys().copied().collect();
        for id in ids {
            let m = self.members.get_mut(&id).expect("listed");
            let mut done = Vec::new();
            while let Some(event) = m.session.poll_event() {
                if let SessionEvent::Fit(task) = event {
                    let outcome = task.run(&mut m.trainer);
                    if m.session.complete_fit(task.round, outcome).is_err() {
                        self.refused += 1;
                    }
                }
            }
            while let Some(msg) = m.session.poll_transmit() {
                done.push(msg);
            }
            let at = self.now + m.compute_time + self.latency;
            for msg in done {
                self.schedule(at, Delivery::ToServer(id, msg));
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeSet;

    use fl_core::{FitResult, Metrics, Schema, TensorSpec};

    use super::*;

    fn schema() -> Arc<Schema> {
        Arc::new(Schema::new(vec![TensorSpec::new("w", [2])]).unwrap())
    }

    fn params(v: [f32; 2]) -> ParamVec {
        let mut p = ParamVec::zeros(schema());
        p.values_mut().copy_from_slice(&v);
        p
    }

    /// The result of task `task` (the wire's round).
    fn done(task: u64, v: [f32; 2]) -> ClientMessage {
        ClientMessage::FitDone {
            round: task,
            result: FitResult {
                params: params(v),
                num_examples: 10,
                metrics: Metrics::new(),
            },
        }
    }

    fn engine(k: usize, max_staleness: u64, steps: u64) -> FedBuffEngine {
        let config = FedBuffConfig {
            max_staleness,
            server_learning_rate: 0.5,
            ..FedBuffConfig::new(k, steps)
        };
        FedBuffEngine::new(config, params([1.0, 2.0])).unwrap()
    }

    fn drain(e: &mut FedBuffEngine) -> (Vec<(ClientId, ServerMessage)>, Vec<FedBuffEvent>) {
        let mut out = Vec::new();
        while let Some(m) = e.poll_transmit() {
            out.push(m);
        }
        let mut ev = Vec::new();
        while let Some(x) = e.poll_event() {
            ev.push(x);
        }
        (out, ev)
    }

    #[test]
    fn a_full_buffer_steps_by_the_mean_weighted_delta() {
        // K = 2, η = 0.5, from (1, 2). Two fresh results: Δ = (1, 0) and (3, -2).
        // Step: (1, 2) + 0.5 · ((1, 0) + (3, -2)) / 2 = (2, 1.5).
        let mut e = engine(2, 5, 3);
        let (a, b) = (ClientId(1), ClientId(2));
        e.handle_connect(a);
        e.handle_connect(b);
        let (out, _) = drain(&mut e);
        assert_eq!(out.len(), 2, "each connected member gets the model");
        e.handle_message(a, done(1, [2.0, 2.0])).unwrap();
        assert_eq!(e.version(), 0, "half a buffer does not step");
        e.handle_message(b, done(2, [4.0, 0.0])).unwrap();
        assert_eq!(e.version(), 1);
        assert_eq!(e.params().values(), &[2.0, 1.5]);
        let (out, ev) = drain(&mut e);
        assert!(
            matches!(&ev[0], FedBuffEvent::Applied { version: 1, staleness, .. } if staleness == &vec![0, 0])
        );
        // Both got the next model straight after their result (no waiting for the other).
        assert_eq!(out.len(), 2);
    }

    #[test]
    fn stale_results_are_scaled_and_too_stale_ones_dropped() {
        // K = 1: every result steps. b trains on version 0 while a steps twice.
        let mut e = engine(1, 1, 10);
        let (a, b) = (ClientId(1), ClientId(2));
        e.handle_connect(a);
        e.handle_connect(b);
        e.handle_message(a, done(1, [3.0, 2.0])).unwrap(); // v1 = (1,2) + 0.5·(2,0) = (2,2); a: task 3
        assert_eq!(e.params().values(), &[2.0, 2.0]);
        // b's result on version 0 at version 1: staleness 1, weight 1/√2, Δ against v0.
        e.handle_message(b, done(2, [1.0, 4.0])).unwrap(); // b: task 4
        let w = staleness_weight(1);
        let expected = [2.0, (2.0 + 0.5 * w * 2.0) as f32];
        assert_eq!(e.params().values(), &expected);
        let _ = drain(&mut e);
        // a now trains on v1; two more steps by b make a's result 2 behind: dropped.
        e.handle_message(b, done(4, [2.0, 2.0])).unwrap(); // v3; b: task 5
        e.handle_message(b, done(5, [2.0, 2.0])).unwrap(); // v4; b: task 6
        let before = e.params().clone();
        e.handle_message(a, done(3, [9.0, 9.0])).unwrap(); // trained on v1: 3 behind
        assert_eq!(e.params(), &before, "a too-stale result changes nothing");
        let (out, ev) = drain(&mut e);
        assert!(ev.iter().any(|x| matches!(x, FedBuffEvent::Dropped { version: 1, reason, .. } if reason.starts_with("stale"))));
        assert!(
            out.iter().any(|(c, m)| *c == a
                && matches!(m, ServerMessage::Fit { header, .. } if header.round == 7))
        );
    }

    #[test]
    fn bad_input_is_refused_by_name_and_changes_nothing() {
        let mut e = engine(2, 3, 5);
        let a = ClientId(1);
        assert_eq!(
            e.handle_message(a, done(1, [0.0, 0.0])),
            Err(FedBuffError::UnknownClient(a))
        );
        e.handle_connect(a);
        assert_eq!(
            e.handle_message(a, done(7, [0.0, 0.0])),
            Err(FedBuffError::Unexpected { client: a, task: 7 })
        );
        let mut nan = done(1, [0.0, 0.0]);
        if let ClientMessage::FitDone { result, .. } = &mut nan {
            result.params.values_mut()[0] = f32::NAN;
        }
        assert!(matches!(
            e.handle_message(a, nan),
            Err(FedBuffError::Invalid { .. })
        ));
        let other = Arc::new(Schema::new(vec![TensorSpec::new("v", [2])]).unwrap());
        let wrong = ClientMessage::FitDone {
            round: 2,
            result: FitResult {
                params: ParamVec::zeros(other),
                num_examples: 1,
                metrics: Metrics::new(),
            },
        };
        assert!(matches!(
            e.handle_message(a, wrong),
            Err(FedBuffError::Invalid { .. })
        ));
        assert_eq!(e.version(), 0);
        assert_eq!(e.params().values(), &[1.0, 2.0]);
        assert!(FedBuffEngine::new(FedBuffConfig::new(0, 1), params([0.0; 2])).is_err());
        let bad_lr = FedBuffConfig {
            server_learning_rate: f32::NAN,
            ..FedBuffConfig::new(1, 1)
        };
        assert!(FedBuffEngine::new(bad_lr, params([0.0; 2])).is_err());
    }

    #[test]
    fn it_finishes_after_the_last_step_and_tells_everyone() {
        let mut e = engine(1, 3, 2);
        let (a, b) = (ClientId(1), ClientId(2));
        e.handle_connect(a);
        e.handle_connect(b);
        e.handle_message(a, done(1, [1.0, 2.0])).unwrap();
        e.handle_message(b, done(2, [1.0, 2.0])).unwrap();
        assert!(e.is_finished());
        let (out, ev) = drain(&mut e);
        assert!(matches!(
            ev.last(),
            Some(FedBuffEvent::Finished { version: 2 })
        ));
        let finished: BTreeSet<ClientId> = out
            .iter()
            .filter(|(_, m)| matches!(m, ServerMessage::Finished { .. }))
            .map(|(c, _)| *c)
            .collect();
        assert_eq!(finished, BTreeSet::from([a, b]));
        e.handle_connect(ClientId(3));
        assert!(matches!(
            e.poll_transmit(),
            Some((_, ServerMessage::Finished { .. }))
        ));
    }
}
