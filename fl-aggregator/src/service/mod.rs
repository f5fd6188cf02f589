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
    Address, JoinChallenge, MemberSignature, SignedUpdate, UpdateKind, UpdateStatement,
    random_nonce, verify_join, verify_update_by,
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
mod coordinator;
mod handshake;
mod reader;
mod writer;

pub use coordinator::*;
use handshake::*;
use reader::*;
use writer::*;

/// The gRPC stubs of `daofl.v1.Federation` (generated once, in `fl-node`; messages live in
/// [`fl_core::wire::pb`]).
pub use fl_node::grpc;

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
pub fn federation<E: ServedEngine>(
    engine: E,
    config: ServiceConfig,
    metrics: Arc<AggregatorMetrics>,
) -> (FederationService, Coordinator<E>) {
    let list = Arc::new(MemberList::new(config.members.clone()));
    federation_with(engine, config, metrics, list)
}

/// [`federation`] with members decided by `membership` (at join and before every round);
/// `config.members` is ignored unless `membership` is a fixed list.
pub fn federation_with<E: ServedEngine>(
    engine: E,
    config: ServiceConfig,
    metrics: Arc<AggregatorMetrics>,
    membership: Arc<dyn MembershipSource>,
) -> (FederationService, Coordinator<E>) {
    // Small: a message may carry a 4 MiB chunk, and a full channel pushes back on the
    // sessions (and through HTTP/2 flow control on the clients) instead of buffering.
    let (tx, rx) = mpsc::channel(8);
    let ids: BTreeMap<fl_core::Address, ClientId> = membership
        .fixed()
        .unwrap_or_default()
        .iter()
        .enumerate()
        .map(|(i, a)| (*a, ClientId(i as u64)))
        .collect();
    let schema = engine.params().schema().clone();
    let directory = Arc::new(std::sync::Mutex::new(
        ids.iter().map(|(a, c)| (*c, *a)).collect(),
    ));
    let coordinator = Coordinator {
        loader: None,
        engine,
        rx,
        ids,
        directory,
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
