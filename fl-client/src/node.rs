//! A member's node: the [`ClientSession`] and a [`Trainer`] driven over gRPC.
//!
//! The node dials the aggregator (TLS when a CA is configured), proves its member key by
//! signing the server's session challenge, then serves instructions until the federation
//! finishes: parameters arrive in hash-checked chunks, training runs on a blocking thread,
//! and each update is announced with its chunk hashes and a signature bound to the session
//! and round before its chunks are streamed. Heartbeats keep the session alive meanwhile.

use std::time::Duration;

use fl_core::identity::{JoinChallenge, MemberKey, UpdateKind, UpdateStatement, random_nonce};
use fl_core::wire::{self, ParamAssembler, pb};
use fl_core::{
    ClientMessage, ClientSession, EvaluateConfig, RoundConfig, ServerMessage, SessionEvent, Stage,
    Trainer,
};
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;
use tonic::transport::{Certificate, Channel, ClientTlsConfig, Endpoint, Identity};

/// The gRPC stubs of `daofl.v1.Federation` (generated once, in `fl-node`).
pub use fl_node::grpc;

/// TLS settings of a node.
#[derive(Debug, Clone)]
pub struct NodeTls {
    /// PEM of the CA that signed the aggregator's certificate.
    pub ca_pem: Vec<u8>,
    /// Name to verify the aggregator's certificate against (e.g. `localhost`).
    pub domain: String,
    /// Client certificate and key (PEM), for aggregators that require mutual TLS.
    pub client_identity: Option<(Vec<u8>, Vec<u8>)>,
}

/// Where and how a node connects.
#[derive(Debug, Clone)]
pub struct NodeConfig {
    /// Aggregator endpoint, e.g. `https://localhost:50051`.
    pub endpoint: String,
    /// Federation to join.
    pub federation_id: String,
    /// TLS settings; `None` connects in plaintext (loopback development only).
    pub tls: Option<NodeTls>,
    /// Time to wait for the connection and the handshake.
    pub connect_timeout: Duration,
    /// Consecutive failed connection attempts before the node gives up (a session that got
    /// as far as joining resets the count).
    pub reconnect_attempts: u32,
    /// Wait before the first reconnection; it doubles per failure, up to 30 s.
    pub reconnect_delay: Duration,
    /// The federation's member list (a member's client id is its position), needed to check
    /// the other participants' signatures under secure aggregation. Without it the node
    /// refuses secure fit stages.
    pub members: Option<std::sync::Arc<Vec<fl_core::Address>>>,
    /// This member's decryption-committee role (homomorphic aggregation), if it holds a key
    /// share: it answers the aggregator's decryption requests after checking them. Clones share
    /// the share's state, so reconnections keep refusing rounds already decrypted (feature
    /// `he`).
    #[cfg(feature = "he")]
    pub committee: Option<fl_core::secure::he::CommitteeRole>,
    /// Where this member keeps its SCAFFOLD control variate between rounds, reconnections and
    /// restarts ([`crate::scaffold_state`]); read when the node starts, rewritten atomically
    /// after every SCAFFOLD fit before its answer is sent. `None`: in memory only (kept across
    /// reconnections, lost when the node stops).
    pub scaffold_state: Option<std::path::PathBuf>,
}

impl NodeConfig {
    /// The settings a member of `federation` connects with: `[client]` (the aggregator's URL,
    /// the name its certificate carries, retries), `[tls]`'s CA certificate when the URL is
    /// `https://`, and `[members]` (to check the other participants' signatures under secure
    /// aggregation). `client_identity` is the member's certificate and key (PEM) for
    /// aggregators that require mutual TLS. No committee role: a key holder of homomorphic
    /// aggregation sets [`committee`](Self::committee) from its state file.
    pub fn from_federation(
        federation: &fl_core::config::FederationConfig,
        client_identity: Option<(Vec<u8>, Vec<u8>)>,
    ) -> Result<Self, NodeError> {
        let client = &federation.client;
        let setup = |reason: String| NodeError::Setup(reason);
        let tls = match &federation.tls {
            Some(t) if client.aggregator.starts_with("https://") => {
                let ca_pem = std::fs::read(&t.ca).map_err(|e| {
                    setup(format!(
                        "cannot read the CA certificate {}: {e}",
                        t.ca.display()
                    ))
                })?;
                let domain = match &client.server_name {
                    Some(name) => name.clone(),
                    None => host_of(&client.aggregator).map_err(setup)?,
                };
                Some(NodeTls {
                    ca_pem,
                    domain,
                    client_identity,
                })
            }
            Some(_) => {
                return Err(setup(format!(
                    "the federation uses TLS but [client] aggregator = {:?} is not an https:// URL",
                    client.aggregator
                )));
            }
            None => None,
        };
        let members = federation
            .members()
            .map_err(|e| setup(format!("[members]: {e}")))?;
        Ok(Self {
            endpoint: client.aggregator.clone(),
            federation_id: federation.federation.id.clone(),
            tls,
            connect_timeout: Duration::from_secs(10),
            reconnect_attempts: client.reconnect_attempts,
            reconnect_delay: Duration::from_secs_f64(client.reconnect_delay_s),
            members: Some(std::sync::Arc::new(members)),
            #[cfg(feature = "he")]
            committee: None,
            scaffold_state: None,
        })
    }

    /// Plaintext settings for `endpoint` with default timeouts and retries.
    pub fn new(endpoint: impl Into<String>, federation_id: impl Into<String>) -> Self {
        Self {
            endpoint: endpoint.into(),
            federation_id: federation_id.into(),
            tls: None,
            connect_timeout: Duration::from_secs(10),
            reconnect_attempts: 30,
            reconnect_delay: Duration::from_millis(500),
            members: None,
            #[cfg(feature = "he")]
            committee: None,
            scaffold_state: None,
        }
    }
}

/// Why a node stopped.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum NodeError {
    /// The endpoint or TLS settings are unusable.
    #[error("cannot connect to {endpoint}: {reason}")]
    Connect {
        /// The endpoint.
        endpoint: String,
        /// What failed.
        reason: String,
    },
    /// The federation file or a file it names is unusable for this member.
    #[error("{0}")]
    Setup(String),
    /// The aggregator refused or ended the session.
    #[error("the aggregator ended the session: {0}")]
    Refused(#[from] tonic::Status),
    /// This member's model is not the federation's: reconnecting cannot help.
    #[error("this member's model (schema {member}) is not the federation's: {difference}")]
    SchemaMismatch {
        /// The federation's schema hash, when the aggregator described its schema.
        federation: Option<fl_core::SchemaHash>,
        /// This member's schema hash.
        member: fl_core::SchemaHash,
        /// The tensors that differ, by name and shape (or why they could not be named).
        difference: String,
    },
    /// The aggregator broke the protocol (unexpected frame, bad chunk).
    #[error("protocol violation by the aggregator: {0}")]
    Protocol(String),
    /// The connection closed before the federation finished.
    #[error("the connection closed before the federation finished")]
    Closed,
    /// Training or evaluation panicked; the trainer is gone.
    #[error("the trainer panicked: {0}")]
    TrainerPanicked(String),
}

impl NodeError {
    /// Whether reconnecting cannot help: the aggregator refused this member's identity,
    /// federation, protocol version or model for good (`FAILED_PRECONDITION` means exactly
    /// that), or the trainer is gone.
    pub fn is_permanent(&self) -> bool {
        match self {
            NodeError::Refused(status) => matches!(
                status.code(),
                tonic::Code::PermissionDenied
                    | tonic::Code::Unauthenticated
                    | tonic::Code::InvalidArgument
                    | tonic::Code::FailedPrecondition
                    | tonic::Code::Unimplemented
            ),
            NodeError::Setup(_)
            | NodeError::SchemaMismatch { .. }
            | NodeError::TrainerPanicked(_) => true,
            NodeError::Connect { reason, .. } => reason.contains("invalid"),
            NodeError::Protocol(_) | NodeError::Closed => false,
        }
    }
}

/// Turns the aggregator's schema-mismatch refusal into [`NodeError::SchemaMismatch`], naming
/// the tensors that differ from the federation's schema the refusal carries (JSON in the status
/// details).
fn name_schema_mismatch(e: NodeError, ours: Option<&std::sync::Arc<fl_core::Schema>>) -> NodeError {
    let (NodeError::Refused(status), Some(ours)) = (&e, ours) else {
        return e;
    };
    if status.code() != tonic::Code::FailedPrecondition
        || !status.message().starts_with("schema mismatch")
    {
        return e;
    }
    match serde_json::from_slice::<fl_core::Schema>(status.details()) {
        Ok(theirs) => NodeError::SchemaMismatch {
            federation: Some(theirs.hash()),
            member: ours.hash(),
            difference: theirs
                .difference(ours)
                .describe("the federation's model", "this member's"),
        },
        Err(_) => NodeError::SchemaMismatch {
            federation: None,
            member: ours.hash(),
            difference: format!(
                "{} (the aggregator did not describe its tensors)",
                status.message()
            ),
        },
    }
}

/// The host of `https://host:port/...` (IPv6 literals without brackets).
fn host_of(url: &str) -> Result<String, String> {
    let rest = url
        .split_once("://")
        .map(|(_, r)| r)
        .ok_or_else(|| format!("{url:?} is not a URL"))?;
    let authority = rest.split('/').next().unwrap_or(rest);
    let host = match authority.strip_prefix('[') {
        Some(v6) => v6.split(']').next().unwrap_or(v6),
        None => authority.rsplit_once(':').map_or(authority, |(h, _)| h),
    };
    if host.is_empty() {
        return Err(format!("{url:?} names no host"));
    }
    Ok(host.to_string())
}

/// What a node did.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct NodeReport {
    /// Training tasks completed.
    pub fits: u64,
    /// Evaluations completed.
    pub evaluations: u64,
    /// Instructions the session refused.
    pub refused: u64,
    /// Sessions that completed the handshake (1 without reconnections).
    pub sessions: u64,
    /// Content hash of the final global model the federation sent when it finished; the
    /// returned trainer holds it.
    pub final_params: Option<fl_core::ContentHash>,
}

async fn connect(config: &NodeConfig) -> Result<Channel, NodeError> {
    let err = |reason: String| NodeError::Connect {
        endpoint: config.endpoint.clone(),
        reason,
    };
    let mut endpoint = Endpoint::from_shared(config.endpoint.clone())
        .map_err(|e| err(e.to_string()))?
        .connect_timeout(config.connect_timeout)
        .tcp_nodelay(true)
        // One chunk in flight per stream; the 64 KiB default throttles large transfers.
        .initial_stream_window_size(Some(wire::MAX_FRAME_BYTES as u32))
        .initial_connection_window_size(Some(2 * wire::MAX_FRAME_BYTES as u32))
        .http2_keep_alive_interval(Duration::from_secs(10))
        .keep_alive_timeout(Duration::from_secs(20));
    if let Some(tls) = &config.tls {
        let mut tls_config = ClientTlsConfig::new()
            .ca_certificate(Certificate::from_pem(&tls.ca_pem))
            .domain_name(tls.domain.clone());
        if let Some((cert, key)) = &tls.client_identity {
            tls_config = tls_config.identity(Identity::from_pem(cert, key));
        }
        endpoint = endpoint
            .tls_config(tls_config)
            .map_err(|e| err(e.to_string()))?;
    }
    endpoint.connect().await.map_err(|e| err(format!("{e:?}")))
}

fn client_frame(kind: pb::client_frame::Kind) -> pb::ClientFrame {
    pb::ClientFrame { kind: Some(kind) }
}

/// Joins the federation and serves it until it finishes, reconnecting (with exponential
/// backoff) when the connection drops or the aggregator restarts: a member that rejoins takes
/// part from the next round it is selected for. Returns the report and the trainer.
///
/// Gives up on a [permanent](NodeError::is_permanent) refusal (not a member, bad signature)
/// or after `reconnect_attempts` consecutive failures.
pub async fn run_node<T: Trainer + 'static>(
    config: NodeConfig,
    key: MemberKey,
    trainer: T,
) -> Result<(NodeReport, T), NodeError> {
    let state = config
        .scaffold_state
        .as_ref()
        .map(|p| crate::scaffold_state::ScaffoldState::new(p, config.federation_id.clone()));
    let mut control = match &state {
        Some(state) => state
            .load(&trainer.schema())
            .map_err(|e| NodeError::Setup(e.to_string()))?
            .map(std::sync::Arc::new),
        None => None,
    };
    let mut members_control = MemberControl {
        state,
        control: &mut control,
    };
    let mut slot = Some(trainer);
    let mut report = NodeReport::default();
    let mut failures = 0u32;
    let mut delay = config.reconnect_delay;
    loop {
        let sessions_before = report.sessions;
        let outcome =
            run_session(&config, &key, &mut slot, &mut report, &mut members_control).await;
        let outcome = outcome
            .map_err(|e| name_schema_mismatch(e, slot.as_ref().map(|t| t.schema()).as_ref()));
        match outcome {
            Ok(()) => break,
            Err(e) if e.is_permanent() => return Err(e),
            Err(e) => {
                if report.sessions > sessions_before {
                    failures = 0;
                    delay = config.reconnect_delay;
                }
                failures += 1;
                if failures > config.reconnect_attempts {
                    return Err(e);
                }
                tracing::warn!(
                    "session ended: {e}; reconnecting in {delay:?} (attempt {failures} of {})",
                    config.reconnect_attempts
                );
                tokio::time::sleep(delay).await;
                delay = (delay * 2).min(Duration::from_secs(30));
            }
        }
    }
    let trainer = slot.ok_or_else(|| NodeError::TrainerPanicked("trainer lost".into()))?;
    Ok((report, trainer))
}

/// Runs `task` on a blocking thread with the trainer from `slot`, putting it back after.
async fn on_trainer<T: Trainer + 'static, R: Send + 'static>(
    slot: &mut Option<T>,
    task: impl FnOnce(&mut T) -> R + Send + 'static,
) -> Result<R, NodeError> {
    let mut trainer = slot
        .take()
        .ok_or_else(|| NodeError::TrainerPanicked("trainer lost".into()))?;
    let (trainer, result) = tokio::task::spawn_blocking(move || {
        let r = task(&mut trainer);
        (trainer, r)
    })
    .await
    .map_err(|e| NodeError::TrainerPanicked(e.to_string()))?;
    *slot = Some(trainer);
    Ok(result)
}

/// The member's SCAFFOLD control variate, kept across sessions (and on disk with a state
/// file).
struct MemberControl<'a> {
    state: Option<crate::scaffold_state::ScaffoldState>,
    control: &'a mut Option<std::sync::Arc<fl_core::ParamVec>>,
}

impl MemberControl<'_> {
    /// Keeps the session's control variate if a fit changed it: on disk first, when a state
    /// file is configured, so an update is never sent with a control variate that is not
    /// saved.
    fn keep(&mut self, session: &ClientSession) -> Result<(), NodeError> {
        let Some(now) = session.member_control() else {
            return Ok(());
        };
        if self
            .control
            .as_ref()
            .is_some_and(|old| std::sync::Arc::ptr_eq(old, now))
        {
            return Ok(());
        }
        if let Some(state) = &self.state {
            state
                .save(now)
                .map_err(|e| NodeError::Setup(e.to_string()))?;
        }
        *self.control = Some(now.clone());
        Ok(())
    }
}

/// One session: connect, handshake, serve until finished or the connection ends.
async fn run_session<T: Trainer + 'static>(
    config: &NodeConfig,
    key: &MemberKey,
    slot: &mut Option<T>,
    report: &mut NodeReport,
    member_control: &mut MemberControl<'_>,
) -> Result<(), NodeError> {
    let schema = slot
        .as_ref()
        .ok_or_else(|| NodeError::TrainerPanicked("trainer lost".into()))?
        .schema();
    let channel = connect(config).await?;
    let limit = wire::MAX_FRAME_BYTES;
    let mut client = grpc::federation_client::FederationClient::new(channel)
        .max_decoding_message_size(limit)
        .max_encoding_message_size(limit);

    let (tx, rx) = mpsc::channel(8);
    let client_nonce = random_nonce();
    tx.send(client_frame(pb::client_frame::Kind::Hello(pb::Hello {
        protocol_version: wire::PROTOCOL_VERSION,
        federation_id: config.federation_id.clone(),
        address: key.address().to_vec(),
        client_nonce: client_nonce.to_vec(),
        schema_hash: schema.hash().as_bytes().to_vec(),
        server: config.endpoint.clone(),
    })))
    .await
    .map_err(|_| NodeError::Closed)?;
    let mut inbound = client.session(ReceiverStream::new(rx)).await?.into_inner();

    let next = |f: Option<pb::ServerFrame>| -> Result<pb::server_frame::Kind, NodeError> {
        f.ok_or(NodeError::Closed)?
            .kind
            .ok_or_else(|| NodeError::Protocol("empty frame".into()))
    };
    let pb::server_frame::Kind::Challenge(challenge) = next(inbound.message().await?)? else {
        return Err(NodeError::Protocol("expected a challenge".into()));
    };
    let session_id: [u8; 32] = challenge
        .session_id
        .as_slice()
        .try_into()
        .map_err(|_| NodeError::Protocol("the session id must be 32 bytes".into()))?;
    let signature = key.sign_join(&JoinChallenge {
        federation_id: config.federation_id.clone(),
        session_id,
        client_nonce,
        server: config.endpoint.clone(),
    });
    tx.send(client_frame(pb::client_frame::Kind::Join(pb::Join {
        signature: signature.to_bytes().to_vec(),
    })))
    .await
    .map_err(|_| NodeError::Closed)?;
    let pb::server_frame::Kind::Welcome(welcome) = next(inbound.message().await?)? else {
        return Err(NodeError::Protocol("expected a welcome".into()));
    };
    tracing::info!(
        client = welcome.client_id,
        "joined {}",
        config.federation_id
    );
    report.sessions += 1;
    let max_chunk = (welcome.max_chunk_bytes as usize).clamp(4, wire::MAX_CHUNK_BYTES);

    // Stops with the session, however it ends.
    let heartbeat = AbortOnDrop({
        let tx = tx.clone();
        let every = Duration::from_millis(u64::from(welcome.heartbeat_interval_ms).max(100));
        tokio::spawn(async move {
            let mut seq = 0u64;
            let mut tick = tokio::time::interval(every);
            loop {
                tick.tick().await;
                seq += 1;
                let beat = client_frame(pb::client_frame::Kind::Heartbeat(pb::Heartbeat {
                    sequence: seq,
                }));
                if tx.send(beat).await.is_err() {
                    return;
                }
            }
        })
    });

    let mut session = match &config.members {
        Some(members) => ClientSession::with_identity(
            schema.hash(),
            std::sync::Arc::new(key.clone()),
            members.clone(),
            u32::try_from(welcome.client_id).map_err(|_| {
                NodeError::Protocol(format!("client id {} exceeds 2^32", welcome.client_id))
            })?,
        ),
        None => ClientSession::new(schema.hash()),
    };
    #[cfg(feature = "he")]
    if let Some(role) = &config.committee {
        session = session.with_committee(role.clone());
    }
    session
        .set_member_control(member_control.control.clone())
        .map_err(|e| NodeError::Setup(format!("the SCAFFOLD state: {e}")))?;
    // A control-variate difference waits for the update it goes with.
    let mut control_delta: Option<Vec<f32>> = None;
    let outcome = loop {
        let kind = match inbound.message().await {
            Ok(Some(frame)) => match frame.kind {
                Some(kind) => kind,
                None => break Err(NodeError::Protocol("empty frame".into())),
            },
            Ok(None) => break Err(NodeError::Closed),
            Err(status) => break Err(NodeError::Refused(status)),
        };
        let msg = match kind {
            pb::server_frame::Kind::Finished(f) => {
                match receive_final_model(&mut inbound, &schema, f, max_chunk).await {
                    Ok(msg) => msg,
                    Err(e) => break Err(e),
                }
            }
            pb::server_frame::Kind::Heartbeat(_) => continue,
            pb::server_frame::Kind::Secure(m) => {
                match fl_core::secure::wire::server_step_from_pb(m.step) {
                    Ok(step) => ServerMessage::Secure {
                        round: m.round,
                        step,
                        payload: m.payload.into(),
                    },
                    Err(e) => break Err(NodeError::Protocol(e.to_string())),
                }
            }
            pb::server_frame::Kind::Instruction(ins) => {
                match receive_instruction(&mut inbound, &schema, ins, max_chunk).await {
                    Ok(msg) => msg,
                    Err(e) => break Err(e),
                }
            }
            other => {
                break Err(NodeError::Protocol(format!("unexpected frame {other:?}")));
            }
        };
        if session.handle_message(msg).is_err() {
            report.refused += 1;
        }
        let mut finished = false;
        while let Some(event) = session.poll_event() {
            match event {
                SessionEvent::Fit(task) => {
                    let round = task.round;
                    let result = on_trainer(slot, move |t| task.run(t)).await?;
                    report.fits += 1;
                    let _ = session.complete_fit(round, result);
                    member_control.keep(&session)?;
                }
                SessionEvent::Evaluate(task) => {
                    let round = task.round;
                    let result = on_trainer(slot, move |t| task.run(t)).await?;
                    report.evaluations += 1;
                    let _ = session.complete_evaluate(round, result);
                }
                SessionEvent::Finished => finished = true,
            }
        }
        while let Some(answer) = session.poll_transmit() {
            let answer = match answer {
                ClientMessage::ControlChunk { values, .. } => {
                    control_delta = Some(values);
                    continue;
                }
                ClientMessage::FitDone { round, result } => Answer::Fit {
                    round,
                    result,
                    control: control_delta.take(),
                },
                other => Answer::Other(other),
            };
            if send_answer(
                &tx,
                key,
                &config.federation_id,
                session_id,
                answer,
                max_chunk,
            )
            .await
            .is_err()
            {
                return Err(NodeError::Closed);
            }
        }
        if finished {
            // End with the model the federation produced, not this member's last local one.
            if let Some(params) = session.final_params().cloned() {
                on_trainer(slot, move |t| t.set_parameters(&params))
                    .await?
                    .map_err(|e| {
                        NodeError::Protocol(format!("the final model does not load: {e}"))
                    })?;
                report.final_params = session.final_params().map(|p| p.content_hash());
            }
            break Ok(());
        }
    };
    if outcome.is_ok() {
        // Leave politely: end this side of the stream (heartbeats too) and let the aggregator
        // close its side, so it sees a member that left, not a broken connection.
        drop(heartbeat);
        drop(tx);
        let _ = tokio::time::timeout(Duration::from_secs(2), async {
            while let Ok(Some(_)) = inbound.message().await {}
        })
        .await;
    }
    outcome
}

/// Aborts a background task when dropped.
struct AbortOnDrop(tokio::task::JoinHandle<()>);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.0.abort();
    }
}

/// The final model after a `Finished` frame (none if the aggregator sent no chunks).
async fn receive_final_model(
    inbound: &mut tonic::Streaming<pb::ServerFrame>,
    schema: &std::sync::Arc<fl_core::Schema>,
    finished: pb::Finished,
    max_chunk: usize,
) -> Result<ServerMessage, NodeError> {
    if finished.num_chunks == 0 {
        return Ok(ServerMessage::Finished {
            round: finished.round,
            params: None,
        });
    }
    let protocol = |e: wire::WireError| NodeError::Protocol(e.to_string());
    let hash = wire::hash_from_bytes("final_params_hash", &finished.final_params_hash)
        .map_err(protocol)?;
    let mut asm = ParamAssembler::new(schema.clone(), finished.round, hash, max_chunk, None)
        .map_err(protocol)?;
    if finished.num_chunks as usize != asm.remaining() {
        return Err(NodeError::Protocol(format!(
            "the final model announces {} chunks, the schema needs {}",
            finished.num_chunks,
            asm.remaining()
        )));
    }
    while !asm.is_complete() {
        match inbound.message().await? {
            Some(pb::ServerFrame {
                kind: Some(pb::server_frame::Kind::Chunk(c)),
            }) => asm.push(&c).map_err(protocol)?,
            Some(pb::ServerFrame {
                kind: Some(pb::server_frame::Kind::Heartbeat(_)),
            }) => {}
            Some(_) => {
                return Err(NodeError::Protocol(
                    "expected a chunk of the final model".into(),
                ));
            }
            None => return Err(NodeError::Closed),
        }
    }
    Ok(ServerMessage::Finished {
        round: finished.round,
        params: Some(std::sync::Arc::new(asm.finish().map_err(protocol)?)),
    })
}

/// Takes chunks into `asm` until it is complete (heartbeats may come between them).
async fn receive_chunks(
    inbound: &mut tonic::Streaming<pb::ServerFrame>,
    asm: &mut ParamAssembler,
) -> Result<(), NodeError> {
    while !asm.is_complete() {
        match inbound.message().await? {
            Some(pb::ServerFrame {
                kind: Some(pb::server_frame::Kind::Chunk(c)),
            }) => asm
                .push(&c)
                .map_err(|e| NodeError::Protocol(e.to_string()))?,
            Some(pb::ServerFrame {
                kind: Some(pb::server_frame::Kind::Heartbeat(_)),
            }) => {}
            Some(_) => return Err(NodeError::Protocol("expected a parameter chunk".into())),
            None => return Err(NodeError::Closed),
        }
    }
    Ok(())
}

/// SCAFFOLD's server control variate after a fit instruction's parameters: its announced
/// chunks, checked against its hash (none: zeros).
async fn receive_control(
    inbound: &mut tonic::Streaming<pb::ServerFrame>,
    schema: &std::sync::Arc<fl_core::Schema>,
    round: u64,
    settings: &pb::ScaffoldSettings,
    max_chunk: usize,
) -> Result<Option<std::sync::Arc<fl_core::ParamVec>>, NodeError> {
    let protocol = |e: wire::WireError| NodeError::Protocol(format!("SCAFFOLD control: {e}"));
    if settings.num_chunks == 0 && settings.control_hash.is_empty() {
        return Ok(None);
    }
    let hash = wire::hash_from_bytes("control_hash", &settings.control_hash).map_err(protocol)?;
    let mut asm =
        ParamAssembler::new(schema.clone(), round, hash, max_chunk, None).map_err(protocol)?;
    if settings.num_chunks as usize != asm.remaining() {
        return Err(NodeError::Protocol(format!(
            "the SCAFFOLD control variate announces {} chunks, the schema needs {}",
            settings.num_chunks,
            asm.remaining()
        )));
    }
    receive_chunks(inbound, &mut asm).await?;
    Ok(Some(std::sync::Arc::new(asm.finish().map_err(protocol)?)))
}

async fn receive_instruction(
    inbound: &mut tonic::Streaming<pb::ServerFrame>,
    schema: &std::sync::Arc<fl_core::Schema>,
    ins: pb::Instruction,
    max_chunk: usize,
) -> Result<ServerMessage, NodeError> {
    let protocol = |e: wire::WireError| NodeError::Protocol(e.to_string());
    let params_hash = wire::hash_from_bytes("params_hash", &ins.params_hash).map_err(protocol)?;
    let schema_hash = wire::hash_from_bytes("schema_hash", &ins.schema_hash).map_err(protocol)?;
    let mut asm = ParamAssembler::new(schema.clone(), ins.round, params_hash, max_chunk, None)
        .map_err(protocol)?;
    if ins.num_chunks as usize != asm.remaining() {
        return Err(NodeError::Protocol(format!(
            "instruction announces {} chunks, the schema needs {}",
            ins.num_chunks,
            asm.remaining()
        )));
    }
    receive_chunks(inbound, &mut asm).await?;
    let params = std::sync::Arc::new(asm.finish().map_err(protocol)?);
    let (stage, msg, upload) = match ins.settings {
        Some(pb::instruction::Settings::Fit(f)) => {
            let mut config = wire::fit_settings_from_pb(&f).map_err(protocol)?;
            if let Some(s) = &f.scaffold {
                config.scaffold = Some(fl_core::scaffold::ScaffoldControls::new(
                    receive_control(inbound, schema, ins.round, s, max_chunk).await?,
                ));
            }
            let privacy = match f.privacy {
                None => None,
                Some(p)
                    if p.clip_norm.is_finite()
                        && p.clip_norm > 0.0
                        && p.local_noise_multiplier.is_finite()
                        && p.local_noise_multiplier >= 0.0
                        && p.distributed_noise_multiplier.is_finite()
                        && p.distributed_noise_multiplier >= 0.0 =>
                {
                    Some(fl_core::dp::UpdatePrivacy {
                        clip_norm: p.clip_norm,
                        local_noise_multiplier: p.local_noise_multiplier,
                        distributed_noise_multiplier: p.distributed_noise_multiplier,
                        distributed_min_survivors: p.distributed_min_survivors,
                    })
                }
                Some(p) => {
                    return Err(NodeError::Protocol(format!(
                        "invalid privacy settings: clip norm {}, local noise multiplier {}",
                        p.clip_norm, p.local_noise_multiplier
                    )));
                }
            };
            let protocol = match (&f.secure, &f.he) {
                (None, None) => fl_core::UploadProtocol::Plain,
                (Some(secure), None) => fl_core::UploadProtocol::SecAgg(std::sync::Arc::new(
                    fl_core::secure::wire::fit_from_pb(secure).map_err(protocol)?,
                )),
                // The encoding pads to at most twice the model (rotation) plus the weight.
                #[cfg(feature = "he")]
                (None, Some(he)) => fl_core::UploadProtocol::Homomorphic(std::sync::Arc::new(
                    fl_core::secure::wire::he_fit_from_pb(he, 2 * schema.num_values() + 2)
                        .map_err(protocol)?,
                )),
                #[cfg(not(feature = "he"))]
                (None, Some(_)) => {
                    return Err(NodeError::Setup(
                        "the federation aggregates homomorphically and this member was built \
                         without fl-client's `he` feature: enable it to join"
                            .into(),
                    ));
                }
                (Some(_), Some(_)) => {
                    return Err(NodeError::Protocol(
                        "an instruction names both SecAgg+ and homomorphic aggregation".into(),
                    ));
                }
            };
            (
                Stage::Fit,
                config,
                fl_core::UploadSpec { privacy, protocol },
            )
        }
        Some(pb::instruction::Settings::Evaluate(e)) => {
            let header = RoundConfig {
                round: ins.round,
                stage: Stage::Evaluate,
                params_hash,
                schema_hash,
            };
            return Ok(ServerMessage::Evaluate {
                header,
                params,
                config: EvaluateConfig {
                    batch_size: e.batch_size,
                },
            });
        }
        None => return Err(NodeError::Protocol("an instruction needs settings".into())),
    };
    Ok(ServerMessage::Fit {
        header: RoundConfig {
            round: ins.round,
            stage,
            params_hash,
            schema_hash,
        },
        params,
        config: msg,
        upload,
    })
}

/// What the node sends: a fit result with its SCAFFOLD control-variate difference, if any, or
/// any other message.
enum Answer {
    Fit {
        round: u64,
        result: fl_core::FitResult,
        control: Option<Vec<f32>>,
    },
    Other(ClientMessage),
}

async fn send_answer(
    tx: &mpsc::Sender<pb::ClientFrame>,
    key: &MemberKey,
    federation_id: &str,
    session_id: [u8; 32],
    answer: Answer,
    max_chunk: usize,
) -> Result<(), mpsc::error::SendError<pb::ClientFrame>> {
    let answer = match answer {
        Answer::Other(ClientMessage::FitDone { round, result }) => Answer::Fit {
            round,
            result,
            control: None,
        },
        a => a,
    };
    let answer = match answer {
        Answer::Fit {
            round,
            result,
            control,
        } => {
            // The session built the difference for this model: it fits the schema.
            let control = control
                .and_then(|v| fl_core::ParamVec::new(result.params.schema().clone(), v).ok());
            let hashes = wire::chunk_hashes(&result.params, max_chunk);
            let control_hashes = control
                .as_ref()
                .map(|c| wire::chunk_hashes(c, max_chunk))
                .unwrap_or_default();
            // A SCAFFOLD update's signature covers its control variate's chunks too.
            let update_hash = match &control {
                None => wire::update_digest(&hashes),
                Some(_) => wire::scaffold_update_digest(&hashes, &control_hashes),
            };
            let statement = UpdateStatement {
                federation_id: federation_id.to_string(),
                session_id,
                round,
                kind: UpdateKind::Fit,
                update_hash,
                num_examples: result.num_examples,
            };
            let signature = key.sign_update(&statement);
            let header = pb::UpdateHeader {
                round,
                num_examples: result.num_examples,
                metrics: wire::metrics_to_pb(&result.metrics),
                chunk_hashes: hashes.iter().map(|h| h.to_vec()).collect(),
                params_hash: result.params.content_hash().as_bytes().to_vec(),
                signature: signature.to_bytes().to_vec(),
                control_chunk_hashes: control_hashes.iter().map(|h| h.to_vec()).collect(),
            };
            tx.send(client_frame(pb::client_frame::Kind::Update(header)))
                .await?;
            let chunks = wire::encode_chunks(&result.params, round, max_chunk).chain(
                control
                    .iter()
                    .flat_map(|c| wire::encode_chunks(c, round, max_chunk)),
            );
            for chunk in chunks {
                tx.send(client_frame(pb::client_frame::Kind::Chunk(chunk)))
                    .await?;
            }
            return Ok(());
        }
        Answer::Other(other) => other,
    };
    match answer {
        // Sent as an `Answer::Fit` above.
        ClientMessage::FitDone { .. } => {}
        ClientMessage::EvaluateDone { round, result } => {
            tx.send(client_frame(pb::client_frame::Kind::Evaluate(
                pb::EvaluateReport {
                    round,
                    loss: result.loss,
                    num_examples: result.num_examples,
                    metrics: wire::metrics_to_pb(&result.metrics),
                },
            )))
            .await?;
        }
        ClientMessage::Failed {
            round,
            stage,
            reason,
        } => {
            tx.send(client_frame(pb::client_frame::Kind::Failure(pb::Failure {
                round,
                stage: match stage {
                    Stage::Fit => pb::Stage::Fit,
                    Stage::Evaluate => pb::Stage::Evaluate,
                } as i32,
                reason,
            })))
            .await?;
        }
        ClientMessage::Secure {
            round,
            step,
            payload,
        } => {
            tx.send(client_frame(pb::client_frame::Kind::Secure(
                pb::SecureMessage {
                    round,
                    step: fl_core::secure::wire::client_step_to_pb(step) as i32,
                    payload,
                },
            )))
            .await?;
        }
        ClientMessage::MaskedInput {
            round,
            header,
            values,
            metrics,
            bits,
        } => {
            // The signed header binds the values' digest to the round; the chunks need no
            // signature of their own.
            tx.send(client_frame(pb::client_frame::Kind::Masked(
                pb::MaskedHeader {
                    round,
                    header,
                    len: values.len() as u64,
                    metrics: wire::metrics_to_pb(&metrics),
                    bits,
                },
            )))
            .await?;
            for chunk in fl_core::secure::wire::masked_chunks(round, &values, bits, max_chunk) {
                tx.send(client_frame(pb::client_frame::Kind::MaskedChunk(chunk)))
                    .await?;
            }
        }
        #[cfg(feature = "he")]
        ClientMessage::Encrypted {
            round,
            update,
            metrics,
        } => {
            // The signed manifest names every chunk's digest; the chunks need no signature of
            // their own.
            let (header, chunks) =
                fl_core::secure::wire::encrypted_frames(round, &update, &metrics);
            tx.send(client_frame(pb::client_frame::Kind::Encrypted(header)))
                .await?;
            for chunk in chunks {
                tx.send(client_frame(pb::client_frame::Kind::CipherChunk(chunk)))
                    .await?;
            }
        }
        // The session only produces whole results; streaming is the transport's business.
        // (A control-variate difference travels with its update, in `Answer::Fit`.)
        ClientMessage::FitBegin { .. }
        | ClientMessage::FitChunk { .. }
        | ClientMessage::ControlChunk { .. }
        | ClientMessage::FitEnd { .. } => {}
    }
    Ok(())
}
