//! The coordinator: the one task that owns the round engine and the checkpoint reload, fed by
//! every session.

use super::*;

/// Loads the global model by its content hash when the engine asks for it back
/// ([`EngineEvent::ParamsNeeded`]).
pub type ParamsLoader = Box<
    dyn Fn(
            fl_core::ContentHash,
        ) -> Pin<Box<dyn std::future::Future<Output = Result<ParamVec, String>> + Send>>
        + Send,
>;

/// What the coordinator drives: a sans-IO federation engine fed joins, leaves, messages and
/// deadlines, drained of instructions and events. The synchronous round [`Engine`] and the
/// asynchronous [`FedBuffServer`](crate::fedbuff::FedBuffServer) both are.
pub trait ServedEngine: Send + 'static {
    /// What the engine reports as the federation progresses.
    type Event: Send;

    /// The current global parameters.
    fn params(&self) -> &Arc<ParamVec>;
    /// The current round (or model version).
    fn round(&self) -> u64;
    /// Whether the federation is over.
    fn is_finished(&self) -> bool;
    /// A member's session opened.
    fn handle_connect(&mut self, now: Duration, client: ClientId);
    /// A member's session closed.
    fn handle_disconnect(&mut self, now: Duration, client: ClientId);
    /// A message from a member; a refusal leaves the engine's state as it was.
    fn handle_message(
        &mut self,
        now: Duration,
        client: ClientId,
        msg: ClientMessage,
    ) -> Result<(), crate::engine::EngineError>;
    /// The earliest deadline the engine waits for, if any.
    fn poll_timeout(&self) -> Option<Duration>;
    /// A deadline passed.
    fn handle_timeout(&mut self, now: Duration);
    /// The next instruction to send, with its recipient.
    fn poll_transmit(&mut self) -> Option<(ClientId, ServerMessage)>;
    /// The next progress event.
    fn poll_event(&mut self) -> Option<Self::Event>;
    /// Whether `event` ends a round, after which connected members are checked again.
    fn ends_round(event: &Self::Event) -> bool;
    /// The global model the engine released and needs back (by content hash), if any.
    fn params_needed(&self) -> Option<fl_core::ContentHash> {
        None
    }
    /// The global model the engine asked for.
    fn handle_params(&mut self, now: Duration, params: ParamVec) -> Result<(), String> {
        let _ = (now, params);
        Err("this engine never releases its model".into())
    }
}

impl ServedEngine for Engine {
    type Event = EngineEvent;

    fn params(&self) -> &Arc<ParamVec> {
        Engine::params(self)
    }
    fn round(&self) -> u64 {
        Engine::round(self)
    }
    fn is_finished(&self) -> bool {
        Engine::is_finished(self)
    }
    fn handle_connect(&mut self, now: Duration, client: ClientId) {
        Engine::handle_connect(self, now, client);
    }
    fn handle_disconnect(&mut self, now: Duration, client: ClientId) {
        Engine::handle_disconnect(self, now, client);
    }
    fn handle_message(
        &mut self,
        now: Duration,
        client: ClientId,
        msg: ClientMessage,
    ) -> Result<(), crate::engine::EngineError> {
        Engine::handle_message(self, now, client, msg)
    }
    fn poll_timeout(&self) -> Option<Duration> {
        Engine::poll_timeout(self)
    }
    fn handle_timeout(&mut self, now: Duration) {
        Engine::handle_timeout(self, now);
    }
    fn poll_transmit(&mut self) -> Option<(ClientId, ServerMessage)> {
        Engine::poll_transmit(self)
    }
    fn poll_event(&mut self) -> Option<EngineEvent> {
        Engine::poll_event(self)
    }
    fn ends_round(event: &EngineEvent) -> bool {
        matches!(event, EngineEvent::RoundCompleted { .. })
    }
    fn params_needed(&self) -> Option<fl_core::ContentHash> {
        Engine::params_needed(self)
    }
    fn handle_params(&mut self, now: Duration, params: ParamVec) -> Result<(), String> {
        Engine::handle_params(self, now, params).map_err(|e| e.to_string())
    }
}

/// Owns the engine: joins, leaves, messages and deadlines in; instructions out.
pub struct Coordinator<E: ServedEngine = Engine> {
    pub(super) loader: Option<ParamsLoader>,
    pub(super) engine: E,
    pub(super) rx: mpsc::Receiver<Input>,
    pub(super) ids: BTreeMap<Address, ClientId>,
    /// `ids` the other way round, shared with whoever records rounds (see
    /// [`Coordinator::directory`]).
    pub(super) directory: MemberDirectory,
    pub(super) sessions: BTreeMap<ClientId, mpsc::UnboundedSender<ServerMessage>>,
    pub(super) kicks: BTreeMap<ClientId, oneshot::Sender<Status>>,
    pub(super) membership: Arc<dyn MembershipSource>,
    /// A round completed since the connected members were last checked.
    pub(super) round_completed: bool,
    pub(super) epoch: Instant,
}

/// Client ids and addresses of a federation's members, shared with the coordinator.
pub type MemberDirectory = Arc<std::sync::Mutex<BTreeMap<ClientId, Address>>>;

impl<E: ServedEngine> Coordinator<E> {
    /// Runs until the engine has finished every round, every service handle is dropped, or
    /// `shutdown` resolves, handing each event to `on_event`. Returns the global parameters
    /// and whether the federation finished.
    pub async fn run(
        mut self,
        mut on_event: impl FnMut(&E::Event),
        shutdown: impl std::future::Future<Output = ()>,
    ) -> (Arc<ParamVec>, bool) {
        tokio::pin!(shutdown);
        loop {
            self.flush(&mut on_event);
            if self.engine.is_finished() {
                break;
            }
            if std::mem::take(&mut self.round_completed) {
                self.recheck_members().await;
                continue;
            }
            if let Some(hash) = self.engine.params_needed() {
                let Some(loader) = &self.loader else {
                    tracing::error!(%hash, "the engine needs the global model back and no loader is set");
                    break;
                };
                match loader(hash).await {
                    Ok(params) => {
                        let now = self.now();
                        if let Err(e) = self.engine.handle_params(now, params) {
                            tracing::error!(%hash, "cannot restore the global model: {e}");
                            break;
                        }
                        tracing::info!(%hash, "global model reloaded after an aborted round");
                        continue;
                    }
                    Err(e) => {
                        tracing::error!(%hash, "cannot reload the global model: {e}");
                        break;
                    }
                }
            }
            let deadline = self
                .engine
                .poll_timeout()
                .map(|t| self.epoch + t)
                .unwrap_or_else(|| Instant::now() + Duration::from_secs(3600));
            let input = tokio::select! {
                input = self.rx.recv() => input,
                () = tokio::time::sleep_until(deadline) => {
                    let now = self.now();
                    self.engine.handle_timeout(now);
                    continue;
                }
                () = &mut shutdown => {
                    tracing::info!(round = self.engine.round(), "shutting down; the round in progress is abandoned and resumes from the last checkpoint");
                    break;
                }
            };
            let Some(input) = input else { break };
            self.handle(input);
        }
        self.flush(&mut on_event);
        (self.engine.params().clone(), self.engine.is_finished())
    }

    /// Sets how the global model is reloaded when the engine released it and a round aborted.
    pub fn set_params_loader(&mut self, loader: ParamsLoader) {
        self.loader = Some(loader);
    }

    /// Sessions' addresses by client id, for manifests and logs.
    pub fn members(&self) -> BTreeMap<ClientId, Address> {
        self.ids.iter().map(|(a, c)| (*c, *a)).collect()
    }

    /// A live view of [`members`](Self::members) that follows members from the chain as they
    /// join (they get their id at their first join), for recording rounds while the
    /// coordinator runs.
    pub fn directory(&self) -> MemberDirectory {
        self.directory.clone()
    }

    fn now(&self) -> Duration {
        self.epoch.elapsed()
    }

    /// Before the next round: forgets the membership cache and ends the session of every
    /// connected member the source no longer admits (its status names the reason). A member
    /// whose check fails only because the chain cannot be reached stays.
    async fn recheck_members(&mut self) {
        self.membership.new_round();
        let connected: Vec<(Address, ClientId)> = self
            .ids
            .iter()
            .filter(|(_, c)| self.sessions.contains_key(c))
            .map(|(a, c)| (*a, *c))
            .collect();
        for (address, client) in connected {
            match self.membership.check(address).await {
                Ok(()) => {}
                // An endpoint outage does not eject members admitted before it.
                Err(refusal @ crate::membership::Refusal::Unavailable { .. }) => {
                    tracing::warn!(%client, %address, "kept without a fresh check: {refusal}");
                }
                Err(refusal) => {
                    tracing::info!(%client, %address, "member refused before the round: {refusal}");
                    self.sessions.remove(&client);
                    if let Some(kick) = self.kicks.remove(&client) {
                        let _ = kick.send(refusal.to_status());
                    }
                    let now = self.now();
                    self.engine.handle_disconnect(now, client);
                }
            }
        }
    }

    fn handle(&mut self, input: Input) {
        let now = self.now();
        match input {
            Input::Join {
                address,
                outbound,
                kick,
                reply,
            } => {
                let client = match self.ids.get(&address) {
                    Some(&client) => client,
                    // Members from the chain get the next id at their first join.
                    None if self.membership.fixed().is_none() => {
                        let client = ClientId(self.ids.len() as u64);
                        self.ids.insert(address, client);
                        self.directory
                            .lock()
                            .unwrap_or_else(std::sync::PoisonError::into_inner)
                            .insert(client, address);
                        client
                    }
                    None => {
                        let _ = reply.send(Err(Status::permission_denied(format!(
                            "{address} is not a member of this federation"
                        ))));
                        return;
                    }
                };
                if self.sessions.contains_key(&client) {
                    let _ = reply.send(Err(Status::already_exists(format!(
                        "{address} is already connected; close the other session first"
                    ))));
                    return;
                }
                if reply.send(Ok(client)).is_ok() {
                    self.sessions.insert(client, outbound);
                    self.kicks.insert(client, kick);
                    self.engine.handle_connect(now, client);
                }
            }
            Input::Leave { client } => {
                self.kicks.remove(&client);
                if self.sessions.remove(&client).is_some() {
                    self.engine.handle_disconnect(now, client);
                }
            }
            Input::Message {
                client,
                msg,
                verdict,
            } => {
                let result = self.engine.handle_message(now, client, msg);
                if let Err(e) = &result {
                    tracing::warn!(%client, "refused: {e}");
                }
                if let Some(verdict) = verdict {
                    let _ = verdict.send(result);
                }
            }
        }
    }

    fn flush(&mut self, on_event: &mut impl FnMut(&E::Event)) {
        while let Some((to, msg)) = self.engine.poll_transmit() {
            if let Some(tx) = self.sessions.get(&to) {
                // The session's writer task applies backpressure; this never blocks.
                let _ = tx.send(msg);
            }
        }
        while let Some(event) = self.engine.poll_event() {
            if E::ends_round(&event) {
                self.round_completed = true;
            }
            on_event(&event);
        }
    }
}
