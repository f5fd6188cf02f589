//! A whole aggregator from a federation file: checkpoint resume, the gRPC service (TLS,
//! identities, limits), the round engine, checkpoints after every round, the metrics endpoint
//! and a clean shutdown. The `fl-aggregator run` command is this function plus argument
//! parsing.
//!
//! On start the newest intact checkpoint in `[aggregator] checkpoints` is loaded and the
//! engine resumes after its round (client selection and data order derive from the run seed
//! and the round number, so a resumed run continues exactly as an uninterrupted one would).
//! After every completed round the global parameters and a manifest are written; a writer
//! task does that so the engine never waits on storage. When `shutdown` resolves (SIGTERM),
//! the round in progress is abandoned, queued checkpoints are finished and the service stops.
//!
//! With a `[chain]` section the same task anchors every checkpoint after writing it and records
//! the receipt in the round's manifest (see [`crate::anchoring`]); on start it first anchors
//! the checkpoints written but not anchored before the restart. A failing chain endpoint is
//! logged and never stops the federation: its rounds are anchored later. Without `[chain]`
//! nothing is anchored.
//!
//! With a `[fedbuff]` section the engine is FedBuff's ([`crate::file_engine`]): every server
//! step is checkpointed and anchored as a round, and a restart resumes from the last step.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use fl_core::config::FederationConfig;
use fl_core::{Address, ClientId, ParamVec};
use tokio::sync::{mpsc, watch};
use tokio_stream::wrappers::TcpListenerStream;
use tonic::transport::{Certificate, Identity, ServerTlsConfig};

use crate::anchoring::{AnchoringError, ChainSettings, RoundAnchorer};
use crate::checkpoint::{CheckpointMeta, CheckpointStore, Participant, PrivacySpent};
use crate::engine::{Engine, EngineConfig, EngineEvent};
use crate::file_engine::FileEngine;
use crate::metrics::{self, AggregatorMetrics};
use crate::service::{self, ServedEngine, ServiceConfig};
use crate::tls;

/// Why the aggregator could not start or stopped abnormally.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ServerError {
    /// The federation file is unusable.
    #[error(transparent)]
    Config(#[from] fl_core::config::ConfigError),
    /// TLS files are missing or invalid.
    #[error(transparent)]
    Tls(#[from] tls::TlsError),
    /// The checkpoint store failed.
    #[error(transparent)]
    Checkpoint(#[from] crate::checkpoint::CheckpointError),
    /// The newest checkpoint belongs to another federation or model.
    #[error("checkpoint of round {round} does not fit this federation: {reason}")]
    CheckpointMismatch {
        /// Round of the checkpoint.
        round: u64,
        /// What differs.
        reason: String,
    },
    /// Binding or serving failed.
    #[error("{what}: {source}")]
    Io {
        /// What was attempted.
        what: String,
        /// The cause.
        source: std::io::Error,
    },
    /// The gRPC transport failed.
    #[error("gRPC transport: {0}")]
    Transport(#[from] tonic::transport::Error),
    /// `[chain]` is unusable or its backend cannot be opened.
    #[error(transparent)]
    Anchoring(#[from] AnchoringError),
    /// `[members] source = "chain"`: the DAO deployment, role or endpoint is unusable.
    #[error("members from the chain: {0}")]
    Membership(#[from] dao::Error),
    /// The strategy cannot go on from the newest checkpoint (e.g. the privacy budget it
    /// records is already spent under this file's settings).
    #[error("cannot resume from the newest checkpoint: {0}")]
    Resume(Arc<fl_core::Refusal>),
}

/// How a run ended.
#[derive(Debug, Clone)]
pub struct ServeOutcome {
    /// The global parameters at the end.
    pub params: Arc<ParamVec>,
    /// Whether every round ran (false: stopped by `shutdown`).
    pub finished: bool,
    /// The last round that completed and was checkpointed.
    pub last_checkpoint: Option<u64>,
    /// The newest round this run anchored, and its receipt (none without `[chain]`).
    pub last_anchor: Option<(u64, chain_anchor::AnchorReceipt)>,
}

/// Addresses the aggregator actually bound (useful with port 0).
#[derive(Debug, Clone, Copy)]
pub struct Bound {
    /// The gRPC service.
    pub grpc: SocketAddr,
    /// The metrics endpoint, if enabled.
    pub metrics: Option<SocketAddr>,
}

/// Runs the aggregator of `config` starting from `initial` (or the newest checkpoint) until
/// every round ran or `shutdown` resolves. `on_bound` is told the bound addresses once the
/// listeners are up.
pub async fn serve(
    config: &FederationConfig,
    initial: ParamVec,
    shutdown: impl std::future::Future<Output = ()> + Send + 'static,
    on_bound: impl FnOnce(Bound),
) -> Result<ServeOutcome, ServerError> {
    serve_with(config, initial, None, shutdown, on_bound).await
}

/// [`serve`], with the aggregator's validation set for `[strategy.contribution]` (the
/// `fl-aggregator` binary passes the held-out split of its built-in datasets).
pub async fn serve_with(
    config: &FederationConfig,
    initial: ParamVec,
    validator: Option<Box<dyn fl_core::Validator>>,
    shutdown: impl std::future::Future<Output = ()> + Send + 'static,
    on_bound: impl FnOnce(Bound),
) -> Result<ServeOutcome, ServerError> {
    let members = config.members()?;
    let store = CheckpointStore::open(&config.aggregator.checkpoints)?;
    let mut membership: Arc<dyn crate::membership::MembershipSource> =
        Arc::new(crate::membership::MemberList::new(members.clone()));
    let anchorer = match ChainSettings::from_federation(config)? {
        Some(settings) => {
            let anchorer = RoundAnchorer::open(&settings)?;
            if config.members.source == fl_core::config::MembersSource::Chain {
                let chain = crate::membership::ChainMembers::from_federation(
                    config,
                    anchorer.chain(),
                    &settings.run_dir,
                    &settings.chain,
                )?;
                tracing::info!(role = ?chain.role(), "members from the DAO's staking contract");
                membership = Arc::new(chain);
            }
            tracing::info!(
                backend = ?chain_anchor::Anchor::backend(anchorer.chain()),
                registry = %chain_anchor::Anchor::registry(anchorer.chain()),
                run_dir = %settings.run_dir.display(),
                "anchoring every checkpoint"
            );
            Some(anchorer)
        }
        None => None,
    };
    let engine_config = EngineConfig {
        // The model is in the store (saved below, and after every round): free its memory
        // while updates stream in and reload it if a round aborts.
        release_params_during_fit: true,
        ..EngineConfig::from_federation(config)
    };
    let latest = store.latest().await?;
    let resumed_privacy = latest.as_ref().and_then(|(m, _)| m.privacy);
    // The strategy's state (SCAFFOLD's server control variate), verified against its CID.
    let resumed_state = match &latest {
        Some((manifest, _)) => store.load_strategy_state(manifest).await?.map(Arc::new),
        None => None,
    };
    let mut strategy = config
        .build_strategy_with(initial.values().len(), validator)
        .map_err(fl_core::config::ConfigError::from)?;
    if let Some((manifest, _)) = &latest {
        // What the strategy accounted before the restart (the privacy budget already spent).
        // Manifests written before `privacy.rounds` existed kept the count as a metric only.
        let legacy = manifest.metrics.get("dp_rounds").map_or(0, |r| *r as u64);
        let privacy_rounds = manifest.privacy.map_or(0, |p| p.rounds).max(legacy);
        let mut state = fl_core::ResumeState::new(manifest.round, privacy_rounds);
        let reputation = fl_core::strategy::detection::reputation_in(&manifest.metrics);
        if !reputation.is_empty() {
            if config.members.source == fl_core::config::MembersSource::Chain {
                // Client ids of chain members are assigned at join and not kept across
                // restarts: a reputation recorded under an id may belong to another address now.
                tracing::warn!(
                    "reputations are not restored with members from the chain (ids are not \
                     persisted); every member starts at 1"
                );
            } else {
                tracing::info!(members = reputation.len(), "reputations restored");
                state = state.with_reputation(reputation);
            }
        }
        state = state.with_strategy_state(resumed_state.clone());
        strategy
            .resume(&state)
            .map_err(|e| ServerError::Resume(Arc::new(e)))?;
        if let Some(p) = manifest.privacy {
            tracing::info!(
                epsilon = p.epsilon,
                rounds = p.rounds,
                "privacy ledger restored"
            );
        }
    }
    let schema_hash = initial.schema().hash();
    let schema = initial.schema().clone();
    let (engine, resumed) = match latest {
        Some((manifest, params)) => {
            if manifest.federation_id != config.federation.id {
                return Err(ServerError::CheckpointMismatch {
                    round: manifest.round,
                    reason: format!(
                        "it is of federation `{}`, this file describes `{}`",
                        manifest.federation_id, config.federation.id
                    ),
                });
            }
            if params.schema().hash() != schema_hash {
                return Err(ServerError::CheckpointMismatch {
                    round: manifest.round,
                    reason: "its model schema differs from the configured model's".into(),
                });
            }
            if manifest.config_hash != config.config_hash() {
                tracing::warn!(
                    round = manifest.round,
                    "the federation file changed since this checkpoint was written"
                );
            }
            tracing::info!(
                round = manifest.round,
                params = %manifest.params_cid,
                "resuming from checkpoint"
            );
            (Some(params), Some(manifest.round))
        }
        None => {
            tracing::info!(params = %initial.content_hash(), "starting from the initial model");
            (None, None)
        }
    };
    let engine = match (&config.fedbuff, engine) {
        (Some(_), params) => {
            tracing::info!("asynchronous buffered aggregation (FedBuff)");
            FileEngine::buffered(config, params.unwrap_or(initial), resumed.unwrap_or(0))
                .map_err(|e| fl_core::config::ConfigError::Invalid(e.to_string()))?
        }
        (None, params) => {
            let engine = match params {
                Some(params) => {
                    Engine::resume(engine_config, strategy, params, resumed.unwrap_or(0))
                }
                None => Engine::new(engine_config, strategy, initial),
            };
            let committee = he_committee(config, &members)?;
            FileEngine::Rounds(match &config.secure_aggregation {
                None => engine,
                Some(secure) => engine.with_secure_aggregation(crate::engine::SecureSetup {
                    config: secure.clone(),
                    members: Arc::new(members.clone()),
                    session: fl_core::identity::random_nonce(),
                    committee,
                }),
            })
        }
    };
    let engine_params = engine.params().clone();
    let agg = &config.aggregator;
    let mut service_config = ServiceConfig::new(config.federation.id.clone(), members.clone());
    service_config.max_sessions = agg.max_sessions;
    service_config.max_pending_per_ip = agg.max_pending_per_ip;
    service_config.max_frames_per_second = agg.max_frames_per_second;
    service_config.heartbeat_interval = Duration::from_secs_f64(agg.heartbeat_interval_s);
    service_config.handshake_timeout = Duration::from_secs_f64(agg.handshake_timeout_s);
    service_config.idle_timeout = Duration::from_secs_f64(agg.idle_timeout_s);

    let metrics = Arc::new(AggregatorMetrics::new());
    // The current model is in the store before any round can release it.
    store.save_params(engine.params()).await?;
    let (service, mut coordinator) =
        service::federation_with(engine, service_config, metrics.clone(), membership);
    {
        let store = store.clone();
        let schema = schema.clone();
        coordinator.set_params_loader(Box::new(move |hash| {
            let store = store.clone();
            let schema = schema.clone();
            Box::pin(async move {
                store
                    .load_params(&hash, schema)
                    .await
                    .map_err(|e| e.to_string())
            })
        }));
    }

    let mut builder = service::transport();
    if let Some(t) = &config.tls {
        let identity = tls::load_identity(&t.server_cert, &t.server_key)?;
        let mut tls_config = ServerTlsConfig::new()
            .identity(Identity::from_pem(identity.certs.pem(), identity.key.pem()));
        if t.require_client_cert {
            let ca = tls::load_ca(&t.ca)?;
            tls_config = tls_config.client_ca_root(Certificate::from_pem(ca.pem()));
        }
        builder = builder.tls_config(tls_config)?;
    } else if !agg.listen.ip().is_loopback() {
        tracing::warn!(
            "serving without TLS on {}: add a [tls] section outside development",
            agg.listen
        );
    }
    let listener = tokio::net::TcpListener::bind(agg.listen)
        .await
        .map_err(|source| ServerError::Io {
            what: format!("cannot listen on {}", agg.listen),
            source,
        })?;
    let grpc_addr = listener.local_addr().map_err(|source| ServerError::Io {
        what: "local address".into(),
        source,
    })?;

    let (stop_tx, stop_rx) = watch::channel(false);
    let wait_stop = |mut rx: watch::Receiver<bool>| async move {
        let _ = rx.wait_for(|v| *v).await;
    };
    let metrics_addr = match agg.metrics_listen {
        Some(addr) => {
            let probe = std::net::TcpListener::bind(addr).map_err(|source| ServerError::Io {
                what: format!("cannot listen on {addr} for metrics"),
                source,
            })?;
            let bound = probe.local_addr().map_err(|source| ServerError::Io {
                what: "local address".into(),
                source,
            })?;
            drop(probe);
            let m = metrics.clone();
            let stop = wait_stop(stop_rx.clone());
            tokio::spawn(async move {
                if let Err(e) = metrics::serve(bound, m, stop).await {
                    tracing::error!("metrics endpoint failed: {e}");
                }
            });
            Some(bound)
        }
        None => None,
    };
    tracing::info!(%grpc_addr, tls = config.tls.is_some(), federation = %config.federation.id, "aggregator listening");
    on_bound(Bound {
        grpc: grpc_addr,
        metrics: metrics_addr,
    });

    let server = {
        let stop = wait_stop(stop_rx.clone());
        tokio::spawn(
            builder
                .add_service(service.into_server())
                .serve_with_incoming_shutdown(TcpListenerStream::new(listener), stop),
        )
    };

    // Checkpoints are written by their own task, in order, and anchored after each write.
    let (ckpt_tx, mut ckpt_rx) =
        mpsc::unbounded_channel::<(CheckpointMeta, Arc<ParamVec>, Option<EvidenceJob>)>();
    let validators = config.qa.validator_keys()?;
    let max_chunk_bytes = fl_core::wire::MAX_CHUNK_BYTES;
    let writer = {
        let store = store.clone();
        let mut anchorer = anchorer;
        tokio::spawn(async move {
            if let Some(a) = anchorer.as_mut() {
                log_anchoring(
                    "anchoring checkpoints left unanchored",
                    a.resume(&store).await,
                );
            }
            let mut last = None;
            while let Some((meta, params, job)) = ckpt_rx.recv().await {
                let round = meta.round;
                match store.save(meta, &params).await {
                    Ok(m) => {
                        tracing::info!(round, params = %m.params_cid, "checkpoint written");
                        last = Some(round);
                        if let Some(job) = job {
                            write_evidence(&store, &m, job, &validators, max_chunk_bytes).await;
                        }
                        if let Some(a) = anchorer.as_mut() {
                            log_anchoring("anchoring", a.checkpoint_written(&store, &m).await);
                        }
                    }
                    Err(e) => tracing::error!(round, "checkpoint failed: {e}"),
                }
            }
            if let Some(a) = anchorer.as_mut() {
                log_anchoring("anchoring the last rounds", a.finish(&store).await);
                let waiting = a.waiting();
                if !waiting.is_empty() {
                    tracing::warn!(
                        rounds = ?waiting,
                        "checkpoints not anchored yet; the next start anchors them"
                    );
                }
            }
            (last, anchorer.and_then(|a| a.last_anchor().cloned()))
        })
    };

    // Live: members from the chain get their id when they first join.
    let directory = coordinator.directory();
    let federation_id = config.federation.id.clone();
    let config_hash = config.config_hash();
    let mut selected: Vec<ClientId> = Vec::new();
    let mut metrics_of_round = fl_core::Metrics::new();
    // Privacy spent so far, carried into every manifest (also of rounds that aborted).
    let mut privacy_so_far: Option<PrivacySpent> = resumed_privacy;
    // The strategy's state as of the last aggregation, carried into every manifest.
    let mut strategy_state: Option<Arc<ParamVec>> = resumed_state;
    // Under detection: the round's global model and findings, for the evidence of its flags.
    let detecting = config.strategy.detection.is_some();
    let mut global_of_round: Option<Arc<ParamVec>> = detecting.then(|| engine_params.clone());
    let mut findings_of_round: Option<Arc<fl_core::strategy::QaFindings>> = None;
    let on_event = |event: &EngineEvent| {
        metrics.observe(event);
        if let EngineEvent::FitAggregated {
            strategy_state: Some(s),
            ..
        } = event
        {
            strategy_state = Some(s.clone());
        }
        match event {
            EngineEvent::RoundStarted { round, selected: s } => {
                tracing::info!(round, selected = s.len(), "round started");
                selected = s.clone();
                metrics_of_round.clear();
            }
            EngineEvent::ClientDropped {
                round,
                stage,
                client,
                reason,
            } => {
                tracing::warn!(round, ?stage, %client, ?reason, "member dropped");
                if matches!(stage, fl_core::Stage::Fit) {
                    selected.retain(|c| c != client);
                }
            }
            EngineEvent::FitAggregated {
                round,
                num_results,
                num_partial,
                metrics: m,
                params,
                findings,
                ..
            } => {
                tracing::info!(round, num_results, num_partial, params = %params.content_hash(), "aggregated");
                metrics_of_round = m.clone();
                findings_of_round = findings.clone();
                if let (Some(&epsilon), Some(&delta), Some(&rounds)) =
                    (m.get("epsilon"), m.get("delta"), m.get("dp_rounds"))
                {
                    tracing::info!(round, epsilon, delta, "privacy spent");
                    privacy_so_far = Some(PrivacySpent {
                        epsilon,
                        delta,
                        rounds: rounds as u64,
                    });
                }
            }
            EngineEvent::RoundAborted { round, reason } => {
                tracing::warn!(round, reason = reason.label(), "round aborted: {reason}");
                selected.clear();
            }
            EngineEvent::Evaluated { round, result } => {
                tracing::info!(round, loss = result.loss, "federated evaluation");
                metrics_of_round.insert("eval_loss".into(), result.loss);
                for (k, v) in &result.metrics {
                    metrics_of_round.insert(format!("eval_{k}"), *v);
                }
            }
            EngineEvent::RoundCompleted { round, params } => {
                let addresses: BTreeMap<ClientId, Address> = directory
                    .lock()
                    .unwrap_or_else(std::sync::PoisonError::into_inner)
                    .clone();
                let findings = findings_of_round.take();
                let digests = findings.as_ref().map(|f| &f.signed_digests);
                let participants = selected.iter().map(|c| {
                    let p = match addresses.get(c) {
                        Some(a) => Participant::new(a.to_string()),
                        None => Participant::from(*c),
                    };
                    // Under detection the root commits to each member's signed update digest,
                    // so evidence can prove which update a member sent.
                    match digests.and_then(|d| d.get(c)) {
                        Some(h) => p.with_update_hash(*h),
                        None => p,
                    }
                });
                let clients = addresses
                    .iter()
                    .filter(|(c, _)| selected.contains(c))
                    .map(|(c, a)| (c.0.to_string(), a.to_string()))
                    .collect();
                let mut meta = CheckpointMeta::new(federation_id.clone(), *round, config_hash)
                    .with_participants(participants)
                    .with_clients(clients)
                    .with_metrics(metrics_of_round.clone());
                if let Some(spent) = privacy_so_far {
                    meta = meta.with_privacy(spent);
                }
                if let Some(s) = &strategy_state {
                    meta = meta.with_strategy_state(s.clone());
                }
                let job = match (findings, global_of_round.replace(params.clone())) {
                    (Some(findings), Some(global)) if !findings.flagged.is_empty() => {
                        let ids = selected
                            .iter()
                            .map(|c| {
                                let id = addresses
                                    .get(c)
                                    .map_or_else(|| c.to_string(), ToString::to_string);
                                (*c, id)
                            })
                            .collect();
                        Some(EvidenceJob {
                            findings,
                            global,
                            ids,
                        })
                    }
                    _ => None,
                };
                let _ = ckpt_tx.send((meta, params.clone(), job));
            }
            EngineEvent::ParamsNeeded { hash } => {
                tracing::info!(%hash, "reloading the global model from the checkpoint store");
            }
            EngineEvent::Stopped { round, reason } => {
                tracing::warn!(round, "federation stopped before round {round}: {reason}");
            }
            EngineEvent::Finished { params } => {
                tracing::info!(params = %params.content_hash(), "federation finished");
            }
        }
    };
    if let Some(round) = resumed {
        tracing::info!(next_round = round + 1, "waiting for members");
    }
    let (params, finished) = coordinator.run(on_event, shutdown).await;
    drop(ckpt_tx);
    let (written, last_anchor) = writer.await.unwrap_or_default();
    let last_checkpoint = written.or(resumed);
    if finished {
        // Let members read their `Finished` frame before the service goes away.
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    let _ = stop_tx.send(true);
    match tokio::time::timeout(Duration::from_secs(5), server).await {
        Ok(Ok(Err(e))) => return Err(e.into()),
        Ok(_) => {}
        Err(_) => tracing::warn!("gRPC sessions did not close within 5 s; stopping anyway"),
    }
    Ok(ServeOutcome {
        params,
        finished,
        last_checkpoint,
        last_anchor,
    })
}

/// What the checkpoint writer needs to write a round's evidence once its manifest exists.
struct EvidenceJob {
    findings: Arc<fl_core::strategy::QaFindings>,
    global: Arc<ParamVec>,
    ids: BTreeMap<ClientId, String>,
}

/// Writes the evidence of every flagged update of a checkpointed round (sealed to the
/// validators when there are any); failures are logged, never raised.
async fn write_evidence(
    store: &CheckpointStore,
    manifest: &crate::checkpoint::Manifest,
    job: EvidenceJob,
    validators: &[fl_core::seal::RecipientKey],
    max_chunk_bytes: usize,
) {
    let record = crate::qa::RoundRecord::from(manifest);
    let evidence = match crate::qa::build_evidence(
        &job.findings,
        &job.global,
        &record,
        &job.ids,
        max_chunk_bytes,
    ) {
        Ok(e) => e,
        Err(e) => {
            tracing::error!(round = manifest.round, "evidence not built: {e}");
            return;
        }
    };
    for e in evidence {
        let member = e.update.member.clone();
        let score = e.claimed.score;
        let file = match crate::qa::EvidenceFile::new(e, validators) {
            Ok(f) => f,
            Err(err) => {
                tracing::error!(round = manifest.round, %member, "evidence not sealed: {err}");
                continue;
            }
        };
        let bytes = serde_json::to_vec_pretty(&file).expect("evidence serialises");
        match store.put_evidence(manifest.round, &member, bytes).await {
            Ok(path) => {
                tracing::warn!(round = manifest.round, %member, score, %path, "member flagged; evidence written")
            }
            Err(err) => {
                tracing::error!(round = manifest.round, %member, "evidence not written: {err}")
            }
        }
    }
}

/// Logs what an anchoring step did; a failure is logged, never raised: the federation goes on
/// and the rounds concerned are anchored later.
fn log_anchoring(what: &str, outcome: Result<Vec<u64>, AnchoringError>) {
    match outcome {
        Ok(rounds) if !rounds.is_empty() => tracing::debug!(?rounds, "{what}: done"),
        Ok(_) => {}
        Err(e) if e.is_transient() => {
            tracing::warn!("{what}: {e}; the rounds stay queued and are anchored later")
        }
        Err(e) => tracing::error!("{what}: {e}"),
    }
}

/// Under `protocol = "he"`: the committee from the federation file and its key ceremony, with
/// the joint public key recomputed from the holders' signed messages (`None` for other
/// federations). `members` is the federation's member list.
///
/// # Errors
/// A missing or unusable `[secure_aggregation.ceremony]`, a missing, unsigned or tampered
/// ceremony message, or a holder that is not a member.
pub fn he_committee(
    config: &FederationConfig,
    members: &[fl_core::Address],
) -> Result<Option<crate::engine::HeCommittee>, ServerError> {
    use fl_core::secure::ceremony;
    let Some(secure) = &config.secure_aggregation else {
        return Ok(None);
    };
    if secure.protocol != fl_core::secure::SecureProtocol::Homomorphic {
        return Ok(None);
    }
    let invalid = |e: String| -> ServerError {
        fl_core::config::ConfigError::Invalid(format!("homomorphic aggregation: {e}")).into()
    };
    let (spec, public_key) = fl_node::ceremony::joint_key_from_config(config).map_err(|e| {
        let dir = ceremony::dir_from_config(config).unwrap_or_default();
        invalid(format!(
            "ceremony in {}: {e} (every holder runs `fl-client committee commit`, then `deal`, \
             then `finish`)",
            dir.display()
        ))
    })?;
    let holders = spec
        .holders
        .iter()
        .map(|a| {
            members
                .iter()
                .position(|m| m == a)
                .map(|i| ClientId(i as u64))
                .ok_or_else(|| invalid(format!("holder {a} is not a member")))
        })
        .collect::<Result<Vec<_>, _>>()?;
    tracing::info!(
        key = %public_key.digest().iter().map(|b| format!("{b:02x}")).collect::<String>(),
        holders = holders.len(),
        threshold = spec.params.threshold,
        "committee key checked against the ceremony"
    );
    Ok(Some(crate::engine::HeCommittee {
        params: spec.params,
        public_key,
        members: holders,
        max_request_bytes: crate::engine::MAX_REQUEST_BYTES,
    }))
}
