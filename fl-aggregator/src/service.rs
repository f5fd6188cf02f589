//! The aggregator's gRPC service: the round [`Engine`] behind a tonic server.
//!
//! IO only moves bytes here. Each client session is one bidirectional stream
//! (`daofl.v1.Federation/Session`) served by two tasks: a reader that authenticates the member
//! (signed, session-bound join), decodes frames, reassembles chunked updates and verifies
//! their signatures before anything reaches the engine, and a writer that turns the engine's
//! [`ServerMessage`]s into an instruction frame plus parameter chunks with backpressure. One
//! [`Coordinator`] task owns the engine and is the only place its state changes; it never
//! waits on a client.
//!
//! Who may join is a [`MembershipSource`] (the file's list
//! or the DAO's staking contract), consulted at join and, by the coordinator, for every
//! connected member before each round.
//!
//! Refusals map to gRPC statuses: `PERMISSION_DENIED` (address not allowed, or refused by the
//! staking contract with the reason: no stake, too little, jailed, unbonding),
//! `UNAUTHENTICATED` (bad signature), `ALREADY_EXISTS` (member already connected),
//! `INVALID_ARGUMENT` (malformed or off-plan frames), `FAILED_PRECONDITION` (wrong protocol
//! version, federation or schema), `RESOURCE_EXHAUSTED` (session limit),
//! `DEADLINE_EXCEEDED` (handshake or idle timeout). A refused session ends; the others go on.

use std::collections::BTreeMap;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use fl_core::identity::{
    Address, JoinChallenge, MemberSignature, UpdateKind, UpdateStatement, random_nonce,
    verify_join, verify_update_by,
};
use fl_core::secure::wire as secure_wire;
use fl_core::wire::{self, ChunkVerifier, pb};
use fl_core::{ClientId, ClientMessage, EvaluateResult, ParamVec, Schema, ServerMessage, Stage};
use tokio::sync::{mpsc, oneshot};
use tokio::time::{Instant, timeout};
use tokio_stream::Stream;
use tokio_stream::wrappers::ReceiverStream;
use tonic::{Request, Response, Status, Streaming};

use crate::engine::{Engine, EngineEvent};
use crate::membership::{MemberList, MembershipSource};
use crate::metrics::AggregatorMetrics;

/// Generated gRPC stubs of `daofl.v1.Federation` (messages live in [`fl_core::wire::pb`]).
#[allow(missing_docs, clippy::all)]
pub mod grpc {
    tonic::include_proto!("daofl.v1");
}

/// Settings of the service.
#[derive(Debug, Clone)]
pub struct ServiceConfig {
    /// Identifier of the federation, bound into every signature.
    pub federation_id: String,
    /// Members allowed to join; a member's `ClientId` is its position in this list. Ignored by
    /// [`federation_with`] unless its source is this list.
    pub members: Vec<Address>,
    /// Endpoint names clients may have dialled (bound into the join signature); empty
    /// accepts any name.
    pub server_names: Vec<String>,
    /// Most concurrent sessions, authenticated or not.
    pub max_sessions: usize,
    /// How often clients should send heartbeats.
    pub heartbeat_interval: Duration,
    /// Time a new session has to complete the handshake.
    pub handshake_timeout: Duration,
    /// A session that sends nothing (not even heartbeats) for this long is closed.
    pub idle_timeout: Duration,
    /// Largest chunk payload in either direction.
    pub max_chunk_bytes: usize,
    /// Most sessions from one IP address that have not completed the handshake.
    pub max_pending_per_ip: usize,
    /// Most frames one session may send per second (a burst of that many is allowed).
    pub max_frames_per_second: u32,
}

impl ServiceConfig {
    /// Defaults for everything but the federation and its members.
    pub fn new(federation_id: impl Into<String>, members: Vec<Address>) -> Self {
        Self {
            federation_id: federation_id.into(),
            members,
            server_names: Vec::new(),
            max_sessions: 1024,
            heartbeat_interval: Duration::from_secs(5),
            handshake_timeout: Duration::from_secs(10),
            idle_timeout: Duration::from_secs(30),
            max_chunk_bytes: wire::MAX_CHUNK_BYTES,
            max_pending_per_ip: 16,
            max_frames_per_second: 4096,
        }
    }
}

enum Input {
    Join {
        address: Address,
        outbound: mpsc::UnboundedSender<ServerMessage>,
        /// Ends the session with a status (a member refused before a round).
        kick: oneshot::Sender<Status>,
        reply: oneshot::Sender<Result<ClientId, Status>>,
    },
    Leave {
        client: ClientId,
    },
    Message {
        client: ClientId,
        msg: ClientMessage,
        /// Where the engine's verdict goes, for messages the session must not go on after a
        /// refusal of (the start of an update).
        verdict: Option<oneshot::Sender<Result<(), crate::engine::EngineError>>>,
    },
}

/// Loads the global model by its content hash when the engine asks for it back
/// ([`EngineEvent::ParamsNeeded`]).
pub type ParamsLoader = Box<
    dyn Fn(
            fl_core::ContentHash,
        ) -> Pin<Box<dyn std::future::Future<Output = Result<ParamVec, String>> + Send>>
        + Send,
>;

/// Owns the engine: joins, leaves, messages and deadlines in; instructions out.
pub struct Coordinator {
    loader: Option<ParamsLoader>,
    engine: Engine,
    rx: mpsc::Receiver<Input>,
    ids: BTreeMap<Address, ClientId>,
    sessions: BTreeMap<ClientId, mpsc::UnboundedSender<ServerMessage>>,
    kicks: BTreeMap<ClientId, oneshot::Sender<Status>>,
    membership: Arc<dyn MembershipSource>,
    /// A round completed since the connected members were last checked.
    round_completed: bool,
    epoch: Instant,
}

impl Coordinator {
    /// Runs until the engine has finished every round, every service handle is dropped, or
    /// `shutdown` resolves, handing each event to `on_event`. Returns the global parameters
    /// and whether the federation finished.
    pub async fn run(
        mut self,
        mut on_event: impl FnMut(&EngineEvent),
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

    fn flush(&mut self, on_event: &mut impl FnMut(&EngineEvent)) {
        while let Some((to, msg)) = self.engine.poll_transmit() {
            if let Some(tx) = self.sessions.get(&to) {
                // The session's writer task applies backpressure; this never blocks.
                let _ = tx.send(msg);
            }
        }
        while let Some(event) = self.engine.poll_event() {
            if matches!(event, EngineEvent::RoundCompleted { .. }) {
                self.round_completed = true;
            }
            on_event(&event);
        }
    }
}

struct Shared {
    config: ServiceConfig,
    schema: Arc<Schema>,
    coordinator: mpsc::Sender<Input>,
    sessions: AtomicUsize,
    membership: Arc<dyn MembershipSource>,
    pending_by_ip: std::sync::Mutex<BTreeMap<std::net::IpAddr, usize>>,
    metrics: Arc<AggregatorMetrics>,
}

/// Counts a session from `ip` as pending its handshake until dropped.
struct PendingGuard<'a> {
    shared: &'a Shared,
    ip: Option<std::net::IpAddr>,
}

impl Drop for PendingGuard<'_> {
    fn drop(&mut self) {
        if let Some(ip) = self.ip.take() {
            let mut map = self
                .shared
                .pending_by_ip
                .lock()
                .unwrap_or_else(|e| e.into_inner());
            if let Some(n) = map.get_mut(&ip) {
                *n -= 1;
                if *n == 0 {
                    map.remove(&ip);
                }
            }
        }
    }
}

/// The tonic service; clone it freely (it is a handle).
#[derive(Clone)]
pub struct FederationService {
    shared: Arc<Shared>,
}

/// Builds the service and the coordinator that owns `engine`, admitting `config.members`;
/// `metrics` receives session and traffic counts (the caller feeds it engine events).
pub fn federation(
    engine: Engine,
    config: ServiceConfig,
    metrics: Arc<AggregatorMetrics>,
) -> (FederationService, Coordinator) {
    let list = Arc::new(MemberList::new(config.members.clone()));
    federation_with(engine, config, metrics, list)
}

/// [`federation`] with members decided by `membership` (at join and before every round);
/// `config.members` is ignored unless `membership` is a fixed list.
pub fn federation_with(
    engine: Engine,
    config: ServiceConfig,
    metrics: Arc<AggregatorMetrics>,
    membership: Arc<dyn MembershipSource>,
) -> (FederationService, Coordinator) {
    // Small: a message may carry a 4 MiB chunk, and a full channel pushes back on the
    // sessions (and through HTTP/2 flow control on the clients) instead of buffering.
    let (tx, rx) = mpsc::channel(8);
    let ids = membership
        .fixed()
        .unwrap_or_default()
        .iter()
        .enumerate()
        .map(|(i, a)| (*a, ClientId(i as u64)))
        .collect();
    let schema = engine.params().schema().clone();
    let coordinator = Coordinator {
        loader: None,
        engine,
        rx,
        ids,
        sessions: BTreeMap::new(),
        kicks: BTreeMap::new(),
        membership: membership.clone(),
        round_completed: false,
        epoch: Instant::now(),
    };
    let service = FederationService {
        shared: Arc::new(Shared {
            config,
            schema,
            coordinator: tx,
            sessions: AtomicUsize::new(0),
            membership,
            pending_by_ip: std::sync::Mutex::new(BTreeMap::new()),
            metrics,
        }),
    };
    (service, coordinator)
}

impl FederationService {
    /// The tonic server wrapper, with message size limits set just above one chunk.
    pub fn into_server(self) -> grpc::federation_server::FederationServer<Self> {
        let limit = self.shared.config.max_chunk_bytes + 64 * 1024;
        grpc::federation_server::FederationServer::new(self)
            .max_decoding_message_size(limit)
            .max_encoding_message_size(limit)
    }
}

/// A tonic server configured for this protocol: HTTP/2 flow-control windows of one chunk
/// per stream (the 64 KiB default caps loopback throughput at a fraction of the link) and 8
/// MiB per connection, TCP_NODELAY, and keep-alive pings that detect dead peers.
pub fn transport() -> tonic::transport::Server {
    tonic::transport::Server::builder()
        .initial_stream_window_size(Some(wire::MAX_FRAME_BYTES as u32))
        .initial_connection_window_size(Some(2 * wire::MAX_FRAME_BYTES as u32))
        .tcp_nodelay(true)
        .http2_keepalive_interval(Some(Duration::from_secs(10)))
        .http2_keepalive_timeout(Some(Duration::from_secs(20)))
}

type FrameStream = Pin<Box<dyn Stream<Item = Result<pb::ServerFrame, Status>> + Send>>;

#[tonic::async_trait]
impl grpc::federation_server::Federation for FederationService {
    type SessionStream = FrameStream;

    async fn session(
        &self,
        request: Request<Streaming<pb::ClientFrame>>,
    ) -> Result<Response<Self::SessionStream>, Status> {
        let shared = self.shared.clone();
        if shared.sessions.fetch_add(1, Ordering::SeqCst) >= shared.config.max_sessions {
            shared.sessions.fetch_sub(1, Ordering::SeqCst);
            shared.metrics.session_refused();
            return Err(Status::resource_exhausted(
                "the aggregator is at its session limit; retry later",
            ));
        }
        let ip = request.remote_addr().map(|a| a.ip());
        if let Some(ip) = ip {
            let mut map = shared
                .pending_by_ip
                .lock()
                .unwrap_or_else(|e| e.into_inner());
            let n = map.entry(ip).or_insert(0);
            if *n >= shared.config.max_pending_per_ip {
                drop(map);
                shared.sessions.fetch_sub(1, Ordering::SeqCst);
                shared.metrics.session_refused();
                return Err(Status::resource_exhausted(format!(
                    "too many unauthenticated sessions from {ip}; finish a handshake first"
                )));
            }
            *n += 1;
        }
        // Two frames of look-ahead per session: up to 8 MiB of encoded chunks waiting on a
        // slow member, not a copy of the model.
        let (out_tx, out_rx) = mpsc::channel(2);
        let inbound = request.into_inner();
        tokio::spawn(async move {
            let pending = PendingGuard {
                shared: &shared,
                ip,
            };
            let result = run_session(&shared, inbound, out_tx.clone(), pending).await;
            if let Err(status) = result {
                tracing::info!("session ended: {:?}: {}", status.code(), status.message());
                if !matches!(status.code(), tonic::Code::Cancelled) {
                    shared.metrics.session_refused();
                }
                let _ = out_tx.send(Err(status)).await;
            }
            shared.sessions.fetch_sub(1, Ordering::SeqCst);
        });
        Ok(Response::new(Box::pin(ReceiverStream::new(out_rx))))
    }
}

type Outbound = mpsc::Sender<Result<pb::ServerFrame, Status>>;

fn frame(kind: pb::server_frame::Kind) -> pb::ServerFrame {
    pb::ServerFrame { kind: Some(kind) }
}

async fn next_frame(
    inbound: &mut Streaming<pb::ClientFrame>,
    wait: Duration,
    what: &str,
) -> Result<Option<pb::client_frame::Kind>, Status> {
    match timeout(wait, inbound.message()).await {
        Err(_) => Err(Status::deadline_exceeded(format!(
            "no {what} within {wait:?}"
        ))),
        Ok(Err(status)) => Err(Status::invalid_argument(format!(
            "unreadable frame: {}",
            status.message()
        ))),
        Ok(Ok(None)) => Ok(None),
        Ok(Ok(Some(f))) => f
            .kind
            .map(Some)
            .ok_or_else(|| Status::invalid_argument("empty frame")),
    }
}

/// Largest schema description sent with a schema-mismatch refusal (it travels in a trailer).
const MAX_SCHEMA_DETAILS: usize = 8 << 10;

fn invalid(e: impl std::fmt::Display) -> Status {
    Status::invalid_argument(e.to_string())
}

/// Handshake, then frames until the client leaves or breaks the protocol.
async fn run_session(
    shared: &Shared,
    mut inbound: Streaming<pb::ClientFrame>,
    out: Outbound,
    pending: PendingGuard<'_>,
) -> Result<(), Status> {
    let cfg = &shared.config;
    let Some(pb::client_frame::Kind::Hello(hello)) =
        next_frame(&mut inbound, cfg.handshake_timeout, "hello").await?
    else {
        return Err(Status::invalid_argument("the first frame must be Hello"));
    };
    if hello.protocol_version != wire::PROTOCOL_VERSION {
        return Err(Status::failed_precondition(format!(
            "protocol version {} is not supported (this aggregator speaks {})",
            hello.protocol_version,
            wire::PROTOCOL_VERSION
        )));
    }
    if hello.federation_id != cfg.federation_id {
        return Err(Status::failed_precondition(format!(
            "this aggregator serves federation `{}`, not `{}`",
            cfg.federation_id, hello.federation_id
        )));
    }
    let schema_hash = wire::hash_from_bytes("schema_hash", &hello.schema_hash).map_err(invalid)?;
    if schema_hash != shared.schema.hash() {
        // The federation's schema travels in the status details (JSON, when small enough for
        // a trailer), so the member can name the tensors that differ.
        let message = format!(
            "schema mismatch: the federation trains schema {}, the client {}",
            shared.schema.hash(),
            schema_hash
        );
        let details = serde_json::to_vec(shared.schema.as_ref())
            .ok()
            .filter(|d| d.len() <= MAX_SCHEMA_DETAILS);
        return Err(match details {
            Some(d) => Status::with_details(tonic::Code::FailedPrecondition, message, d.into()),
            None => Status::failed_precondition(message),
        });
    }
    if !cfg.server_names.is_empty() && !cfg.server_names.contains(&hello.server) {
        return Err(Status::failed_precondition(format!(
            "`{}` is not a name of this aggregator",
            hello.server
        )));
    }
    let address: [u8; 20] = hello.address.as_slice().try_into().map_err(|_| {
        Status::invalid_argument(format!(
            "an address is 20 bytes, got {}",
            hello.address.len()
        ))
    })?;
    let address = Address::from(address);
    // A fixed list is checked before the challenge; the chain only for a proven signer (below),
    // so unauthenticated peers cannot make the aggregator query it.
    let fixed = shared.membership.fixed().is_some();
    if fixed {
        shared
            .membership
            .check(address)
            .await
            .map_err(|r| r.to_status())?;
    }
    let client_nonce: [u8; 32] = hello
        .client_nonce
        .as_slice()
        .try_into()
        .map_err(|_| Status::invalid_argument("the client nonce must be 32 bytes"))?;

    let session_id = random_nonce();
    let challenge = JoinChallenge {
        federation_id: cfg.federation_id.clone(),
        session_id,
        client_nonce,
        server: hello.server.clone(),
    };
    out.send(Ok(frame(pb::server_frame::Kind::Challenge(
        pb::Challenge {
            session_id: session_id.to_vec(),
        },
    ))))
    .await
    .map_err(|_| Status::cancelled("client went away"))?;

    let Some(pb::client_frame::Kind::Join(join)) =
        next_frame(&mut inbound, cfg.handshake_timeout, "join").await?
    else {
        return Err(Status::invalid_argument("expected Join after Challenge"));
    };
    let signature = MemberSignature::from_bytes(&join.signature)
        .map_err(|e| Status::unauthenticated(e.to_string()))?;
    let signer =
        verify_join(&challenge, &signature).map_err(|e| Status::unauthenticated(e.to_string()))?;
    if signer != address {
        return Err(Status::unauthenticated(format!(
            "the join signature is by {signer}, not {address}"
        )));
    }
    if !fixed {
        shared
            .membership
            .check(address)
            .await
            .map_err(|r| r.to_status())?;
    }

    let (msg_tx, msg_rx) = mpsc::unbounded_channel();
    let (reply_tx, reply_rx) = oneshot::channel();
    let (kick_tx, kick_rx) = oneshot::channel();
    shared
        .coordinator
        .send(Input::Join {
            address,
            outbound: msg_tx,
            kick: kick_tx,
            reply: reply_tx,
        })
        .await
        .map_err(|_| Status::unavailable("the federation is shutting down"))?;
    let client = reply_rx
        .await
        .map_err(|_| Status::unavailable("the federation is shutting down"))??;
    tracing::info!(%client, %address, "member joined");
    drop(pending);
    shared.metrics.session_delta(1);
    out.send(Ok(frame(pb::server_frame::Kind::Welcome(pb::Welcome {
        client_id: client.0,
        heartbeat_interval_ms: cfg.heartbeat_interval.as_millis() as u32,
        max_chunk_bytes: cfg.max_chunk_bytes as u64,
    }))))
    .await
    .map_err(|_| Status::cancelled("client went away"))?;

    let writer = tokio::spawn(write_instructions(
        msg_rx,
        out.clone(),
        cfg.max_chunk_bytes,
        shared.metrics.clone(),
    ));
    let ctx = SessionCtx {
        shared,
        client,
        address,
        session_id,
    };
    let result = tokio::select! {
        result = ctx.read_loop(&mut inbound) => result,
        Ok(status) = kick_rx => Err(status),
    };
    writer.abort();
    let _ = shared.coordinator.send(Input::Leave { client }).await;
    shared.metrics.session_delta(-1);
    tracing::info!(%client, "member left");
    result
}

/// Turns engine messages into frames: an instruction, then the parameters in chunks.
async fn write_instructions(
    mut rx: mpsc::UnboundedReceiver<ServerMessage>,
    out: Outbound,
    max_chunk_bytes: usize,
    metrics: Arc<AggregatorMetrics>,
) {
    while let Some(msg) = rx.recv().await {
        let (header, params, settings) = match msg {
            ServerMessage::Fit {
                header,
                params,
                config,
                upload,
            } => (
                header,
                params,
                pb::instruction::Settings::Fit(pb::FitSettings {
                    local_epochs: config.local_epochs,
                    batch_size: config.batch_size,
                    learning_rate: config.learning_rate,
                    shuffle_seed: config.shuffle_seed,
                    privacy: upload.privacy.map(|p| pb::UpdatePrivacy {
                        clip_norm: p.clip_norm,
                        local_noise_multiplier: p.local_noise_multiplier,
                        distributed_noise_multiplier: p.distributed_noise_multiplier,
                        distributed_min_survivors: p.distributed_min_survivors,
                    }),
                    secure: match &upload.protocol {
                        fl_core::UploadProtocol::SecAgg(fit) => Some(secure_wire::fit_to_pb(fit)),
                        _ => None,
                    },
                    he: match &upload.protocol {
                        fl_core::UploadProtocol::Homomorphic(fit) => {
                            Some(secure_wire::he_fit_to_pb(fit))
                        }
                        _ => None,
                    },
                }),
            ),
            ServerMessage::Evaluate {
                header,
                params,
                config,
            } => (
                header,
                params,
                pb::instruction::Settings::Evaluate(pb::EvaluateSettings {
                    batch_size: config.batch_size,
                }),
            ),
            ServerMessage::Secure {
                round,
                step,
                payload,
            } => {
                metrics.sent(payload.len());
                let msg = pb::SecureMessage {
                    round,
                    step: secure_wire::server_step_to_pb(step) as i32,
                    payload: payload.to_vec(),
                };
                if out
                    .send(Ok(frame(pb::server_frame::Kind::Secure(msg))))
                    .await
                    .is_err()
                {
                    return;
                }
                continue;
            }
            ServerMessage::Finished { round, params } => {
                let Some(params) = params else {
                    let _ = out
                        .send(Ok(frame(pb::server_frame::Kind::Finished(
                            pb::Finished::default(),
                        ))))
                        .await;
                    continue;
                };
                // The final model follows in chunks, like an instruction's parameters.
                let num_chunks = wire::ChunkPlan::new(params.schema(), max_chunk_bytes).len();
                let finished = pb::Finished {
                    final_params_hash: params.content_hash().as_bytes().to_vec(),
                    num_chunks: num_chunks as u32,
                    round,
                };
                if out
                    .send(Ok(frame(pb::server_frame::Kind::Finished(finished))))
                    .await
                    .is_err()
                {
                    return;
                }
                for chunk in wire::encode_chunks(&params, round, max_chunk_bytes) {
                    metrics.sent(chunk.data.len());
                    if out
                        .send(Ok(frame(pb::server_frame::Kind::Chunk(chunk))))
                        .await
                        .is_err()
                    {
                        return;
                    }
                }
                continue;
            }
        };
        let num_chunks = wire::ChunkPlan::new(params.schema(), max_chunk_bytes).len() as u32;
        let instruction = pb::Instruction {
            round: header.round,
            stage: match header.stage {
                Stage::Fit => pb::Stage::Fit,
                Stage::Evaluate => pb::Stage::Evaluate,
            } as i32,
            params_hash: header.params_hash.as_bytes().to_vec(),
            schema_hash: header.schema_hash.as_bytes().to_vec(),
            num_chunks,
            settings: Some(settings),
        };
        if out
            .send(Ok(frame(pb::server_frame::Kind::Instruction(instruction))))
            .await
            .is_err()
        {
            return;
        }
        for chunk in wire::encode_chunks(&params, header.round, max_chunk_bytes) {
            metrics.sent(chunk.data.len());
            if out
                .send(Ok(frame(pb::server_frame::Kind::Chunk(chunk))))
                .await
                .is_err()
            {
                return;
            }
        }
    }
}

struct SessionCtx<'a> {
    shared: &'a Shared,
    client: ClientId,
    address: Address,
    session_id: [u8; 32],
}

/// An update whose chunks are arriving: each verified chunk goes straight into the engine's
/// running sum, so the service never holds a whole update.
struct PendingUpdate {
    round: u64,
    verifier: ChunkVerifier,
}

/// The one update a session may have in flight, by protocol.
enum Upload {
    /// A plain update, verified chunk by chunk and streamed into the engine.
    Plain(PendingUpdate),
    /// A masked update (SecAgg+), buffered whole.
    Masked(PendingMasked),
    /// An encrypted update (homomorphic aggregation), buffered whole.
    Encrypted(secure_wire::EncryptedAssembler),
}

impl Upload {
    fn describe(&self) -> &'static str {
        match self {
            Self::Plain(_) => "an update",
            Self::Masked(_) => "a masked update",
            Self::Encrypted(_) => "an encrypted update",
        }
    }
}

/// The one exclusivity rule of uploads: a new one may begin only when none is in flight.
fn no_upload_in_progress(upload: &Option<Upload>, new: &str) -> Result<(), Status> {
    match upload {
        None => Ok(()),
        Some(u) => Err(invalid(format!(
            "{new} began before {} ended",
            u.describe()
        ))),
    }
}

/// A masked update (secure aggregation) whose chunks are arriving. Unlike a plain update it is
/// buffered whole: masks only cancel in the sum of complete inputs, so a member that breaks
/// off mid-way must leave nothing in it.
struct PendingMasked {
    round: u64,
    bits: u32,
    header: Vec<u8>,
    metrics: fl_core::Metrics,
    assembler: secure_wire::MaskedAssembler,
}

impl SessionCtx<'_> {
    async fn read_loop(&self, inbound: &mut Streaming<pb::ClientFrame>) -> Result<(), Status> {
        let cfg = &self.shared.config;
        // At most one update arrives at a time, whatever its protocol.
        let mut upload: Option<Upload> = None;
        let rate = f64::from(cfg.max_frames_per_second);
        let mut tokens = rate;
        let mut last = Instant::now();
        loop {
            let Some(kind) =
                next_frame(inbound, cfg.idle_timeout, "frame (not even a heartbeat)").await?
            else {
                return Ok(());
            };
            let now = Instant::now();
            tokens = (tokens + rate * (now - last).as_secs_f64()).min(rate);
            last = now;
            if tokens < 1.0 {
                return Err(Status::resource_exhausted(format!(
                    "more than {} frames per second; slow down",
                    cfg.max_frames_per_second
                )));
            }
            tokens -= 1.0;
            match kind {
                pb::client_frame::Kind::Heartbeat(_) => {}
                pb::client_frame::Kind::Update(header) => {
                    no_upload_in_progress(&upload, "an update")?;
                    let (update, begin) = self.begin_update(header)?;
                    let round = update.round;
                    self.forward_checked(begin).await?.map_err(|e| {
                        // ABORTED, not FAILED_PRECONDITION: the member may reconnect and take
                        // part in the next round.
                        Status::aborted(format!(
                            "update for round {round} refused: {e} (too late, a duplicate, or a round this member was not asked to train)"
                        ))
                    })?;
                    upload = Some(Upload::Plain(update));
                }
                pb::client_frame::Kind::Chunk(chunk) => {
                    let Some(Upload::Plain(p)) = upload.as_mut() else {
                        return Err(invalid("a chunk arrived outside an update"));
                    };
                    let values = p.verifier.push(&chunk).map_err(invalid)?;
                    self.shared.metrics.received(chunk.data.len());
                    let round = p.round;
                    self.forward(ClientMessage::FitChunk { round, values })
                        .await?;
                    if p.verifier.is_complete() {
                        let Some(Upload::Plain(p)) = upload.take() else {
                            unreachable!("checked above")
                        };
                        p.verifier.finish().map_err(invalid)?;
                        self.forward(ClientMessage::FitEnd { round }).await?;
                    }
                }
                pb::client_frame::Kind::Secure(m) => {
                    let step = secure_wire::client_step_from_pb(m.step).map_err(invalid)?;
                    self.shared.metrics.received(m.payload.len());
                    self.forward(ClientMessage::Secure {
                        round: m.round,
                        step,
                        payload: m.payload,
                    })
                    .await?;
                }
                pb::client_frame::Kind::Masked(header) => {
                    no_upload_in_progress(&upload, "a masked update")?;
                    // Encoded length: padding (rotation) at most doubles the model, plus the
                    // weight.
                    let max_len = 2 * self.shared.schema.num_values() + 2;
                    let assembler = secure_wire::MaskedAssembler::new(
                        header.round,
                        header.len,
                        header.bits,
                        max_len,
                        cfg.max_chunk_bytes,
                    )
                    .map_err(invalid)?;
                    upload = Some(Upload::Masked(PendingMasked {
                        round: header.round,
                        bits: header.bits,
                        header: header.header,
                        metrics: wire::metrics_from_pb(&header.metrics).map_err(invalid)?,
                        assembler,
                    }));
                }
                pb::client_frame::Kind::MaskedChunk(chunk) => {
                    let Some(Upload::Masked(m)) = upload.as_mut() else {
                        return Err(invalid("a masked chunk arrived outside a masked update"));
                    };
                    m.assembler.push(&chunk).map_err(invalid)?;
                    self.shared.metrics.received(chunk.data.len());
                    if m.assembler.is_complete() {
                        let Some(Upload::Masked(m)) = upload.take() else {
                            unreachable!("checked above")
                        };
                        let values = m.assembler.finish().map_err(invalid)?;
                        self.forward(ClientMessage::MaskedInput {
                            round: m.round,
                            header: m.header,
                            values,
                            metrics: m.metrics,
                            bits: m.bits,
                        })
                        .await?;
                    }
                }
                pb::client_frame::Kind::Encrypted(header) => {
                    no_upload_in_progress(&upload, "an encrypted update")?;
                    // Encoded length: padding (rotation) at most doubles the model, plus the
                    // weight; a ciphertext takes at most 16 bytes per value plus its masks.
                    let max_len = 2 * self.shared.schema.num_values() + 2;
                    let max_total = 32 * max_len + (1 << 20);
                    let assembler = secure_wire::EncryptedAssembler::new(
                        header,
                        secure_agg::he::Limits::default().max_chunks,
                        cfg.max_chunk_bytes,
                        max_total,
                    )
                    .map_err(invalid)?;
                    upload = Some(Upload::Encrypted(assembler));
                }
                pb::client_frame::Kind::CipherChunk(chunk) => {
                    let Some(Upload::Encrypted(e)) = upload.as_mut() else {
                        return Err(invalid(
                            "a ciphertext chunk arrived outside an encrypted update",
                        ));
                    };
                    self.shared.metrics.received(chunk.data.len());
                    e.push(chunk).map_err(invalid)?;
                    if e.is_complete() {
                        let Some(Upload::Encrypted(e)) = upload.take() else {
                            unreachable!("checked above")
                        };
                        let (round, update, metrics) = e.finish().map_err(invalid)?;
                        self.forward(ClientMessage::Encrypted {
                            round,
                            update,
                            metrics,
                        })
                        .await?;
                    }
                }
                pb::client_frame::Kind::Evaluate(report) => {
                    let metrics = wire::metrics_from_pb(&report.metrics).map_err(invalid)?;
                    self.forward(ClientMessage::EvaluateDone {
                        round: report.round,
                        result: EvaluateResult {
                            loss: report.loss,
                            num_examples: report.num_examples,
                            metrics,
                        },
                    })
                    .await?;
                }
                pb::client_frame::Kind::Failure(f) => {
                    let stage = match pb::Stage::try_from(f.stage) {
                        Ok(pb::Stage::Fit) => Stage::Fit,
                        Ok(pb::Stage::Evaluate) => Stage::Evaluate,
                        _ => return Err(invalid("a failure must name its stage")),
                    };
                    let mut reason = f.reason;
                    reason.truncate(1024);
                    self.forward(ClientMessage::Failed {
                        round: f.round,
                        stage,
                        reason,
                    })
                    .await?;
                }
                pb::client_frame::Kind::Hello(_) | pb::client_frame::Kind::Join(_) => {
                    return Err(invalid("the handshake is over"));
                }
            }
        }
    }

    /// Checks an update header (signature over its chunk hashes, round and weight) and prepares
    /// to verify its chunks.
    fn begin_update(
        &self,
        header: pb::UpdateHeader,
    ) -> Result<(PendingUpdate, ClientMessage), Status> {
        let cfg = &self.shared.config;
        let hashes = wire::chunk_hashes_from_bytes(&header.chunk_hashes).map_err(invalid)?;
        // Checked for form only: the signed chunk hashes pin every byte of the update.
        wire::hash_from_bytes("params_hash", &header.params_hash).map_err(invalid)?;
        let statement = UpdateStatement {
            federation_id: cfg.federation_id.clone(),
            session_id: self.session_id,
            round: header.round,
            kind: UpdateKind::Fit,
            update_hash: wire::update_digest(&hashes),
            num_examples: header.num_examples,
        };
        let signature = MemberSignature::from_bytes(&header.signature)
            .map_err(|e| Status::unauthenticated(e.to_string()))?;
        verify_update_by(&statement, &signature, self.address)
            .map_err(|e| Status::unauthenticated(format!("update signature: {e}")))?;
        let metrics = wire::metrics_from_pb(&header.metrics).map_err(invalid)?;
        let verifier = ChunkVerifier::new(
            &self.shared.schema,
            header.round,
            None,
            cfg.max_chunk_bytes,
            Some(hashes),
        )
        .map_err(invalid)?;
        let begin = ClientMessage::FitBegin {
            round: header.round,
            num_examples: header.num_examples,
            metrics,
        };
        Ok((
            PendingUpdate {
                round: header.round,
                verifier,
            },
            begin,
        ))
    }

    async fn forward(&self, msg: ClientMessage) -> Result<(), Status> {
        self.shared
            .coordinator
            .send(Input::Message {
                client: self.client,
                msg,
                verdict: None,
            })
            .await
            .map_err(|_| Status::unavailable("the federation is shutting down"))
    }

    /// Forwards `msg` and waits for the engine's verdict on it.
    async fn forward_checked(
        &self,
        msg: ClientMessage,
    ) -> Result<Result<(), crate::engine::EngineError>, Status> {
        let (tx, rx) = oneshot::channel();
        self.shared
            .coordinator
            .send(Input::Message {
                client: self.client,
                msg,
                verdict: Some(tx),
            })
            .await
            .map_err(|_| Status::unavailable("the federation is shutting down"))?;
        rx.await
            .map_err(|_| Status::unavailable("the federation is shutting down"))
    }
}
