//! `fl-client`: a DAO member's node. Thin argument parsing over [`fl_client::node::run_node`]
//! and [`fl_client::federation`], plus member key management.

// Not a file of `src/bin/` itself: Cargo would take it for a binary of its own.
#[path = "cli/contribute.rs"]
mod contribute_cli;

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};
use fl_client::Trainer;
use fl_client::node::{NodeConfig, run_node};
use fl_core::MemberKey;
use fl_core::config::FederationConfig;

/// A daofl member's node: trains the federation's model on local data and sends signed
/// updates to the aggregator. The data never leaves this machine.
#[derive(Debug, Parser)]
#[command(name = "fl-client", version, propagate_version = true)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Join the federation described by a federation file and train until it finishes.
    Run {
        /// The federation file (TOML), the same one the aggregator reads.
        #[arg(long, short, env = "DAOFL_CONFIG")]
        config: PathBuf,
        /// This member's key file (see `fl-client keys new`).
        #[arg(long, short, env = "DAOFL_KEY")]
        key: PathBuf,
        /// Client certificate for aggregators that require mutual TLS.
        #[arg(long, requires = "tls_key")]
        tls_cert: Option<PathBuf>,
        /// Private key of the client certificate.
        #[arg(long, requires = "tls_cert")]
        tls_key: Option<PathBuf>,
        /// This member's decryption-committee state (homomorphic aggregation; written by
        /// `fl-client committee finish`). Required for committee holders.
        #[arg(long, env = "DAOFL_COMMITTEE_STATE")]
        committee_state: Option<PathBuf>,
        /// Where this member keeps its SCAFFOLD control variate across rounds and restarts
        /// (`[strategy] kind = "scaffold"`; written atomically after every SCAFFOLD fit).
        /// Default: the key file's path with the extension `.scaffold`.
        #[arg(long, env = "DAOFL_SCAFFOLD_STATE")]
        scaffold_state: Option<PathBuf>,
        /// Where to train: cpu, wgpu, wgpu:N, cuda or cuda:N (see `fl-client devices`);
        /// overrides the federation file's [client] device.
        #[arg(long, env = "DAOFL_DEVICE")]
        device: Option<fl_client::DeviceSpec>,
        /// DEVELOPMENT ONLY (feature `attack`): send poisoned updates to test a federation's
        /// defences: sign_flip, scaling:FACTOR, gaussian:STD, free_ride, label_flip or
        /// backdoor:TARGET.
        #[cfg(feature = "attack")]
        #[arg(long)]
        attack: Option<String>,
    },
    /// The backends this build can train on and the GPU adapters it finds (the N of
    /// `--device wgpu:N`).
    Devices,
    /// The decryption committee's key ceremony (homomorphic aggregation), run by every holder
    /// listed in [secure_aggregation.ceremony]: commit, then deal, then finish, each step once
    /// every holder has done the previous one. Messages go to the ceremony directory.
    Committee {
        #[command(subcommand)]
        step: CommitteeStep,
    },
    /// Claim this member's training reward of a settlement epoch: the reward list a validator
    /// published (`<checkpoints>/settlement/<epoch>/<validator>.json`, or a plain
    /// `[{"account", "amount"}]` list) must give the root posted on chain; the claim then pays
    /// exactly this member's leaf and delegates its votes to itself if it never delegated.
    Claim {
        /// This member's key file (it sends the claim and pays its gas).
        #[arg(long, short, env = "DAOFL_KEY")]
        key: PathBuf,
        /// The DAO deployment file (`dao.json`).
        #[arg(long)]
        dao: PathBuf,
        /// The epoch.
        #[arg(long)]
        epoch: u64,
        /// The published reward list.
        #[arg(long)]
        rewards: PathBuf,
        #[command(flatten)]
        chain: ChainArgs,
    },
    /// Analyse proposals with a published model: for each input line (JSON with at least
    /// `community`, `id`, `title`, `text`) write `community`, `id`, `label` (accepted or
    /// rejected), `p_accepted`, `kind` and `model` (the parameters' CID). The model card and
    /// the parameters are checked against the manifest's CIDs before the model is loaded.
    Predict {
        /// A checkpoint manifest (`<store>/rounds/<round>.json`), a checkpoint store, or a run
        /// folder holding `checkpoints/` (a folder gives its newest round).
        #[arg(long)]
        model: PathBuf,
        /// Proposals to analyse, JSON lines (gzip or plain).
        #[arg(long)]
        input: PathBuf,
        /// Where to write the predictions, JSON lines (replaced).
        #[arg(long)]
        output: PathBuf,
    },
    /// Serve a published model as an inference node: `POST /v1/analyse` takes a proposal
    /// (`community`, `id`, `title`, `text`, `nonce`) and returns the prediction signed with the
    /// node's key over the request hash, the model CID and the output; `GET /v1/model` names
    /// the model. With `--grpc-listen`, the same answers (the signed answer's JSON, byte for
    /// byte) over gRPC too (`daofl.v1.InferenceNode`: `Analyse`, `Model`), on the same batcher.
    /// With `--watch-secs`, a newer checkpoint at `--model` is verified and served.
    Serve {
        /// As for `predict`: a manifest, a checkpoint store or a run folder.
        #[arg(long)]
        model: PathBuf,
        /// The node's member key file.
        #[arg(long)]
        key: PathBuf,
        /// Where to listen.
        #[arg(long, default_value = "127.0.0.1:8610")]
        listen: std::net::SocketAddr,
        /// Where to serve the gRPC API as well (e.g. `127.0.0.1:8611`; none: HTTP only).
        #[arg(long)]
        grpc_listen: Option<std::net::SocketAddr>,
        /// Check `--model` for a newer checkpoint this often (0: never).
        #[arg(long, default_value_t = 0)]
        watch_secs: u64,
        /// With `--dao`: serve only the checkpoint the registry promoted (checked at start and
        /// at every watch).
        #[command(flatten)]
        dao: DaoArgs,
        /// DEVELOPMENT ONLY (feature `attack`): `wrong-label` signs the other label, `slow=MS`
        /// answers after MS milliseconds, to test gateways and validators with real nodes.
        #[cfg(feature = "attack")]
        #[arg(long)]
        misbehave: Option<fl_client::serve::Misbehaviour>,
    },
    /// Validate inference nodes: send each staked node of `--nodes` challenge requests (real
    /// proposals with fresh nonces), check every signed answer against this validator's own
    /// run of the promoted model, and write the signed score report (`report.json`, a
    /// `SignedScoreReport`) and the evidence of every provably wrong answer
    /// (`evidence/<hash>.json`, a `WrongAnswer`, its hash what a slashing verdict names) to
    /// `--out`.
    Challenge {
        /// TOML with `[[node]]` tables, as for `gateway`.
        #[arg(long)]
        nodes: PathBuf,
        /// The checkpoint store (or run folder) holding the promoted model.
        #[arg(long)]
        model: PathBuf,
        /// The validator's key file (signs the report).
        #[arg(long)]
        key: PathBuf,
        /// The settlement epoch the report is for.
        #[arg(long)]
        epoch: u64,
        /// Challenges sent to every node.
        #[arg(long, default_value_t = 20)]
        count: usize,
        /// Proposals to draw challenges from (JSON lines with `community`, `id`, `title`,
        /// `text`); default: the shipped governance-proposal corpus.
        #[arg(long)]
        proposals: Option<PathBuf>,
        /// Where to write `report.json` and `evidence/`.
        #[arg(long)]
        out: PathBuf,
        /// How long to wait for a node, in milliseconds.
        #[arg(long, default_value_t = 5000)]
        timeout_ms: u64,
        /// With `--dao`: challenge the model the registry promoted, the nodes' stakes from the
        /// staking contract. Without it: the newest checkpoint at `--model`, the listed stakes.
        #[command(flatten)]
        dao: DaoArgs,
    },
    /// Run an inference gateway: each `POST /v1/analyse` goes to `--redundancy` nodes of the
    /// list chosen from the request hash and the latest block hash (weighted by stake and
    /// reputation) and is answered by consensus, with the nodes' signed answers;
    /// `GET /v1/scores` shows each node's record.
    Gateway {
        /// TOML with `[[node]]` tables: `address`, `url` (`http://host:port`), `stake`.
        #[arg(long)]
        nodes: PathBuf,
        /// The CID of the promoted model (with `--dao`: read from the DAO's model registry).
        #[arg(long, required_unless_present = "dao")]
        model: Option<String>,
        /// The DAO's deployment (dao.json): the promoted model comes from its registry and the
        /// nodes' stakes from its staking contract (role `inference`), both refreshed every
        /// 30 s; needs `--federation` and `--rpc-url` or `--chain-state`.
        #[arg(long, requires = "federation")]
        dao: Option<PathBuf>,
        /// The federation whose promoted model is served.
        #[arg(long)]
        federation: Option<String>,
        /// An embedded chain's state folder, for `--dao` without an RPC endpoint.
        #[arg(long)]
        chain_state: Option<PathBuf>,
        /// Where to listen.
        #[arg(long, default_value = "127.0.0.1:8620")]
        listen: std::net::SocketAddr,
        /// Nodes asked per request.
        #[arg(long, default_value_t = 5)]
        redundancy: usize,
        /// Agreeing nodes required.
        #[arg(long, default_value_t = 3)]
        quorum: usize,
        /// How long to wait for a node, in milliseconds.
        #[arg(long, default_value_t = 2000)]
        timeout_ms: u64,
        /// An EVM JSON-RPC endpoint whose latest block hash seeds the selection.
        #[arg(long, conflicts_with = "block_hash")]
        rpc_url: Option<String>,
        /// A fixed block hash (hex) instead.
        #[arg(long)]
        block_hash: Option<String>,
        /// Charge fees: every request must carry a receipt signed by a requester who prepaid
        /// into the DAO's InferenceFees; receipts, the request log and node scores are kept in
        /// this database (`sqlite://gateway.db?mode=rwc` or `postgres://user@host/db`) and
        /// settled on chain in batches. Needs `--dao` and `--key`.
        #[arg(long, requires_all = ["dao", "key"])]
        db: Option<String>,
        /// The gateway's key file (its address is what receipts pay; it sends the settlement
        /// transactions).
        #[arg(long)]
        key: Option<PathBuf>,
        /// Settle the pending receipts this often, seconds.
        #[arg(long, default_value_t = 60)]
        settle_secs: u64,
        /// Re-read the promoted model and the nodes' stakes this often, seconds (with `--dao`).
        #[arg(long, default_value_t = 30)]
        refresh_secs: u64,
    },
    /// Contribute data: add proposals, join annotation epochs, see assigned items, annotate
    /// (commit), reveal, check and claim rewards.
    Contribute {
        #[command(subcommand)]
        step: contribute_cli::ContributeStep,
    },
    /// Make or show member keys (secp256k1; the address is the member's Ethereum address).
    Keys {
        #[command(subcommand)]
        action: KeyAction,
    },
}

#[derive(Debug, Subcommand)]
enum KeyAction {
    /// Generate a key into a new file (mode 0600; never overwrites) and print its address.
    New {
        /// Where to write the key.
        #[arg(long, short)]
        out: PathBuf,
    },
    /// Print the address of a key file.
    Show {
        /// The key file.
        key: PathBuf,
    },
}

#[derive(Debug, clap::Args)]
struct CeremonyArgs {
    /// The federation file (TOML).
    #[arg(long, short, env = "DAOFL_CONFIG")]
    config: PathBuf,
    /// This member's key file.
    #[arg(long, short, env = "DAOFL_KEY")]
    key: PathBuf,
    /// This holder's ceremony secret (written by `commit`, mode 0600; delete it after
    /// `finish`).
    #[arg(long)]
    secret: PathBuf,
}

#[derive(Debug, Subcommand)]
enum CommitteeStep {
    /// Step 1: draw this holder's ceremony secrets and publish its signed commitment.
    Commit {
        #[command(flatten)]
        args: CeremonyArgs,
    },
    /// Step 2: publish this holder's key part and its share bundles, each encrypted to its
    /// recipient.
    Deal {
        #[command(flatten)]
        args: CeremonyArgs,
    },
    /// Step 3: check every message, decrypt this holder's shares and write its committee
    /// state; prints the joint key's SHA-256 (compare it with the other holders').
    Finish {
        #[command(flatten)]
        args: CeremonyArgs,
        /// Where to write the committee state (new file, mode 0600).
        #[arg(long)]
        state: PathBuf,
    },
}

fn main() -> ExitCode {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_env("DAOFL_LOG")
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info")),
        )
        .with_writer(std::io::stderr)
        .init();
    match dispatch(Cli::parse().command) {
        Ok(code) => code,
        Err(e) => {
            eprintln!("error: {e}");
            ExitCode::FAILURE
        }
    }
}

type Result<T> = std::result::Result<T, Box<dyn std::error::Error + Send + Sync>>;

/// `fl-client gateway`'s settings.
struct GatewayArgs {
    nodes: PathBuf,
    model: Option<String>,
    /// The DAO's deployment, the federation and an embedded chain's state.
    dao: Option<(PathBuf, String, Option<PathBuf>)>,
    listen: std::net::SocketAddr,
    policy: fl_core::inference::ConsensusPolicy,
    timeout: std::time::Duration,
    rpc_url: Option<String>,
    block_hash: Option<String>,
    db: Option<String>,
    key: Option<PathBuf>,
    settle: std::time::Duration,
    refresh: std::time::Duration,
}

/// `fl-client challenge`'s arguments.
struct ChallengeArgs {
    nodes: PathBuf,
    model: PathBuf,
    key: PathBuf,
    epoch: u64,
    count: usize,
    proposals: Option<PathBuf>,
    out: PathBuf,
    timeout: std::time::Duration,
    view: Option<DaoView>,
}

/// Reads a `[[node]]` list (at most 1 MiB).
fn read_node_list(path: &std::path::Path) -> Result<Vec<fl_client::gateway::NodeEntry>> {
    #[derive(serde::Deserialize)]
    #[serde(deny_unknown_fields)]
    struct NodeList {
        node: Vec<fl_client::gateway::NodeEntry>,
    }
    let meta = std::fs::metadata(path).map_err(|e| format!("{}: {e}", path.display()))?;
    if meta.len() > 1 << 20 {
        return Err(format!("{}: larger than 1 MiB", path.display()).into());
    }
    let text = std::fs::read_to_string(path)?;
    let list: NodeList = toml::from_str(&text).map_err(|e| format!("{}: {e}", path.display()))?;
    Ok(list.node)
}

/// `fl-client challenge`: one validator's round over the listed nodes.
fn challenge(args: ChallengeArgs) -> Result<ExitCode> {
    use fl_client::gateway::{Gateway, challenge_requests};
    use fl_client::predict::{Predictor, ProposalInput};
    use fl_core::inference::scoring::{ScoreReport, SignedScoreReport};
    let key = fl_node::read_key_file(&args.key)?;
    let entries = read_node_list(&args.nodes)?;
    let runtime = tokio::runtime::Runtime::new()?;
    runtime.block_on(async {
        let gateway = Gateway::new(
            entries,
            fl_core::inference::ConsensusPolicy::default(),
            args.timeout,
        )?;
        let predictor = match &args.view {
            Some(view) => {
                let promoted = view.promoted_with_stakes(&gateway).await?;
                Predictor::with_params(&args.model, &promoted)?
            }
            None => Predictor::from_manifest(&args.model)?,
        };
        let pool: Vec<ProposalInput> = match &args.proposals {
            Some(path) => fl_client::predict::read_inputs(path, &predictor.card().input_limits)?,
            None => fl_client::data::proposals::load_shipped()?
                .proposals
                .iter()
                .map(|p| ProposalInput {
                    community: p.community.clone(),
                    id: p.id.clone(),
                    title: p.title.clone(),
                    text: p.text.clone(),
                })
                .collect(),
        };
        if pool.is_empty() {
            return Err("no proposals to draw challenges from".into());
        }
        let mut rng = rand::rng();
        let drawn: Vec<ProposalInput> = (0..args.count)
            .map(|_| pool[rand::RngExt::random_range(&mut rng, 0..pool.len())].clone())
            .collect();
        let challenges = challenge_requests(&drawn, &mut rng);
        let outcome = gateway
            .challenge(
                &predictor,
                &challenges,
                fl_core::inference::DEFAULT_TOLERANCE,
            )
            .await;
        let report = SignedScoreReport::sign(
            &key,
            ScoreReport {
                epoch: args.epoch,
                model: predictor.card().params_cid,
                observations: outcome.observations.clone(),
            },
        );
        let evidence_dir = args.out.join("evidence");
        std::fs::create_dir_all(&evidence_dir)?;
        for e in &outcome.evidence {
            std::fs::write(
                evidence_dir.join(format!("{}.json", e.evidence_hash())),
                serde_json::to_vec_pretty(e)?,
            )?;
        }
        std::fs::write(
            args.out.join("report.json"),
            serde_json::to_vec_pretty(&report)?,
        )?;
        println!(
            "{:<44} {:>10} {:>8} {:>6} {:>7} {:>11}",
            "node", "challenges", "correct", "wrong", "missed", "median ms"
        );
        for o in &outcome.observations {
            let latency = if o.latency_ms == u32::MAX {
                "-".to_string()
            } else {
                o.latency_ms.to_string()
            };
            println!(
                "{:<44} {:>10} {:>8} {:>6} {:>7} {:>11}",
                o.node.to_string(),
                o.challenges,
                o.correct,
                o.wrong,
                o.missed,
                latency
            );
        }
        println!(
            "report {} (epoch {}, model {}), {} evidence file(s)",
            args.out.join("report.json").display(),
            args.epoch,
            predictor.card().params_cid,
            outcome.evidence.len()
        );
        Result::Ok(())
    })?;
    Ok(ExitCode::SUCCESS)
}

/// `fl-client gateway`: the consensus gateway until Ctrl-C.
fn gateway(args: GatewayArgs) -> Result<ExitCode> {
    use fl_client::gateway::{BlockSource, Gateway, GatewayService};
    let nodes = read_node_list(&args.nodes)?;
    let given: Option<fl_core::ContentHash> = args
        .model
        .as_deref()
        .map(|m| m.parse().map_err(|e| format!("--model {m}: {e}")))
        .transpose()?;
    let chain = match &args.dao {
        Some((deployment, federation, chain_state)) => Some(DaoView {
            deployment: dao::DaoDeployment::load(deployment)?,
            federation: federation.clone(),
            rpc_url: args.rpc_url.clone(),
            chain_state: chain_state.clone(),
        }),
        None => None,
    };
    let blocks = match (args.rpc_url.clone(), args.block_hash) {
        (Some(url), _) => BlockSource::Rpc(url),
        (None, Some(hex_hash)) => {
            let raw = hex::decode(hex_hash.trim_start_matches("0x"))
                .map_err(|e| format!("--block-hash: {e}"))?;
            BlockSource::Fixed(
                raw.try_into()
                    .map_err(|_| "--block-hash: 32 bytes expected".to_string())?,
            )
        }
        (None, None) => return Err("give --rpc-url (a chain) or --block-hash".into()),
    };
    let gateway = Gateway::new(nodes, args.policy, args.timeout)?;
    let runtime = tokio::runtime::Runtime::new()?;
    runtime.block_on(async {
        let model = match &chain {
            Some(view) => {
                let promoted = view.promoted_with_stakes(&gateway).await?;
                if let Some(m) = given
                    && m != promoted
                {
                    return Err(format!("--model {m} is not the promoted model {promoted}").into());
                }
                promoted
            }
            None => given.ok_or("--model or --dao")?,
        };
        let mut service = GatewayService::new(gateway, model, blocks);
        if let (Some(url), Some(view), Some(key)) = (&args.db, &chain, &args.key) {
            let key = fl_node::read_key_file(key)?;
            let store = fl_db::Store::open(url).await?;
            let view = std::sync::Arc::new(view.clone());
            let source: fl_client::ledger::DaoSource = Box::new(move || {
                view.open_as(&key)
                    .map_err(|e| dao::Error::InvalidInput(e.to_string()))
            });
            let ledger = fl_client::ledger::FeeLedger::open(store, source).await?;
            let restored = ledger.restore_scores(&service.gateway).await?;
            let pending = ledger.store().count_by_status().await?.pending;
            tracing::info!(
                gateway = %ledger.gateway(),
                db = ledger.store().url(),
                pending,
                restored,
                "charging fees"
            );
            service = service.with_ledger(ledger);
        }
        let service = std::sync::Arc::new(service);
        if service.ledger.is_some() {
            let service = std::sync::Arc::clone(&service);
            let every = args.settle;
            tokio::spawn(async move {
                let mut tick = tokio::time::interval(every);
                loop {
                    tick.tick().await;
                    let Some(ledger) = &service.ledger else { break };
                    match ledger.settle().await {
                        Ok(r) if r.batches > 0 => tracing::info!(
                            batches = r.batches,
                            settled = r.settled,
                            rejected = r.rejected.len(),
                            total = %r.total,
                            "settled receipts"
                        ),
                        Ok(_) => {}
                        Err(e) => tracing::warn!("settling receipts failed: {e}"),
                    }
                }
            });
        }
        if let Some(view) = chain {
            let service = std::sync::Arc::clone(&service);
            let every = args.refresh;
            tokio::spawn(async move {
                let mut tick = tokio::time::interval(every);
                tick.tick().await;
                loop {
                    tick.tick().await;
                    if let Err(e) = refresh(&view, &service).await {
                        tracing::warn!("cannot refresh from the DAO: {e}");
                    }
                    if let Some(ledger) = &service.ledger {
                        let at = fl_client::ledger::unix_now();
                        if let Err(e) = ledger.record_scores(&service.gateway, at).await {
                            tracing::warn!("recording node scores failed: {e}");
                        }
                    }
                }
            });
        }
        let listener = tokio::net::TcpListener::bind(args.listen).await?;
        tracing::info!(listen = %listener.local_addr()?, %model, "gateway serving");
        axum::serve(listener, fl_client::gateway::router(service))
            .with_graceful_shutdown(async {
                let _ = tokio::signal::ctrl_c().await;
            })
            .await?;
        Result::Ok(())
    })?;
    Ok(ExitCode::SUCCESS)
}

/// The chain a command reaches the DAO on: an RPC endpoint or an embedded chain's state.
#[derive(Debug, Clone, clap::Args)]
pub(crate) struct ChainArgs {
    /// A JSON-RPC endpoint of the DAO's chain.
    #[arg(
        long,
        required_unless_present = "chain_state",
        conflicts_with = "chain_state"
    )]
    pub(crate) rpc_url: Option<String>,
    /// An embedded chain's state folder (holding chain-anchor-state.json).
    #[arg(long)]
    pub(crate) chain_state: Option<PathBuf>,
}

/// An optional DAO: its deployment, the federation whose promoted model counts, and its chain.
#[derive(Debug, Clone, clap::Args)]
struct DaoArgs {
    /// The DAO's deployment (dao.json): the model its registry promoted for `--federation`,
    /// read through `--rpc-url` or `--chain-state`.
    #[arg(long, requires = "federation")]
    dao: Option<PathBuf>,
    /// The federation whose promoted model counts.
    #[arg(long)]
    federation: Option<String>,
    /// An EVM JSON-RPC endpoint, for `--dao`.
    #[arg(long)]
    rpc_url: Option<String>,
    /// An embedded chain's state folder, for `--dao`.
    #[arg(long)]
    chain_state: Option<PathBuf>,
}

impl DaoArgs {
    /// The DAO to read, `None` without `--dao`.
    fn view(self) -> Result<Option<DaoView>> {
        self.dao
            .map(|d| -> Result<DaoView> {
                Ok(DaoView {
                    deployment: dao::DaoDeployment::load(&d)?,
                    federation: self.federation.unwrap_or_default(),
                    rpc_url: self.rpc_url,
                    chain_state: self.chain_state,
                })
            })
            .transpose()
    }
}

/// Where the DAO is read from.
#[derive(Clone)]
struct DaoView {
    deployment: dao::DaoDeployment,
    federation: String,
    rpc_url: Option<String>,
    chain_state: Option<PathBuf>,
}

impl DaoView {
    /// A read-only client (an RPC endpoint, or the embedded chain's state as it is now), acting
    /// as a throwaway account.
    fn open(&self) -> Result<dao::Dao> {
        self.open_as(&MemberKey::generate())
    }

    /// A client acting as `key`'s account (an RPC endpoint signing with it, or the embedded
    /// chain's state as it is now, sending as its address).
    fn open_as(&self, key: &MemberKey) -> Result<dao::Dao> {
        let backend = match (&self.rpc_url, &self.chain_state) {
            (Some(url), _) => {
                let signer: dao::chain_anchor::alloy::signers::local::PrivateKeySigner =
                    key.to_hex().parse().map_err(|e| format!("the key: {e}"))?;
                dao::Backend::rpc_with_signer(url, signer, dao::RpcTimeouts::default())?
            }
            (None, Some(dir)) => {
                let anchor = dao::chain_anchor::EmbeddedAnchor::open(dir)?;
                dao::Backend::embedded(&anchor, key.address())
            }
            (None, None) => return Err("--dao needs --rpc-url or --chain-state".into()),
        };
        Ok(dao::Dao::new(backend, self.deployment.clone()))
    }

    /// The promoted model's CID (an error naming the federation when governance promoted
    /// none yet), after setting `gateway`'s node stakes from the staking contract.
    async fn promoted_with_stakes(
        &self,
        gateway: &fl_client::gateway::Gateway,
    ) -> Result<fl_core::ContentHash> {
        let dao = self.open()?;
        let promoted = fl_client::registry::promoted_model(&dao, &self.federation)
            .await?
            .ok_or_else(|| format!("federation {} has no promoted model yet", self.federation))?;
        gateway.set_stakes(fl_client::registry::inference_stakes(&dao, &gateway.nodes()).await?);
        Ok(promoted)
    }

    /// The promoted model's CID now.
    async fn promoted(&self) -> Result<Option<fl_core::ContentHash>> {
        Ok(fl_client::registry::promoted_model(&self.open()?, &self.federation).await?)
    }
}

/// Re-reads the promoted model and the nodes' stakes into the gateway.
async fn refresh(view: &DaoView, service: &fl_client::gateway::GatewayService) -> Result<()> {
    let dao = view.open()?;
    let stakes = fl_client::registry::inference_stakes(&dao, &service.gateway.nodes()).await?;
    service.gateway.set_stakes(stakes);
    if let Some(promoted) = fl_client::registry::promoted_model(&dao, &view.federation).await? {
        let mut model = service
            .model
            .write()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        if *model != promoted {
            tracing::info!(model = %promoted, "governance promoted another model");
            *model = promoted;
        }
    }
    Ok(())
}

/// `fl-client serve`: the inference node until Ctrl-C.
///
/// Without `--dao` it serves the newest checkpoint at `model` (and, with `watch_secs`, a newer
/// one when it appears). With `--dao` it serves only the checkpoint the registry promoted:
/// loaded from the store at `model` by the promoted parameters' content address and verified
/// against it, and at every watch the registry is read again and a new promotion loaded and
/// swapped in atomically (answers carry the CID of the model that computed them).
fn serve(
    model: &std::path::Path,
    key: &std::path::Path,
    listen: std::net::SocketAddr,
    grpc_listen: Option<std::net::SocketAddr>,
    watch_secs: u64,
    view: Option<DaoView>,
    misbehave: Option<fl_client::serve::Misbehaviour>,
) -> Result<ExitCode> {
    use fl_client::predict::Predictor;
    use fl_client::serve::{Batcher, InferenceNode};
    let key = fl_node::read_key_file(key)?;
    let runtime = tokio::runtime::Runtime::new()?;
    let predictor = match &view {
        Some(view) => {
            let promoted = runtime.block_on(view.promoted())?.ok_or_else(|| {
                format!(
                    "the DAO promoted no model for {} yet: nothing to serve",
                    view.federation
                )
            })?;
            Predictor::with_params(model, &promoted).map_err(|e| {
                format!(
                    "the DAO promoted {promoted} for {}; loading it from {}: {e}",
                    view.federation,
                    model.display()
                )
            })?
        }
        None => Predictor::from_manifest(model)?,
    };
    let node = InferenceNode::new(key, predictor).misbehaving(misbehave.unwrap_or_default());
    let node = std::sync::Arc::new(node);
    let view = view.map(std::sync::Arc::new);
    runtime.block_on(async {
        let listener = tokio::net::TcpListener::bind(listen).await?;
        tracing::info!(
            listen = %listener.local_addr()?,
            node = %node.address(),
            model = %node.model(),
            "serving"
        );
        if watch_secs > 0 {
            let node = std::sync::Arc::clone(&node);
            let path = model.to_path_buf();
            let view = view.clone();
            tokio::spawn(async move {
                let mut tick = tokio::time::interval(std::time::Duration::from_secs(watch_secs));
                loop {
                    tick.tick().await;
                    let wanted = match &view {
                        Some(v) => match v.promoted().await {
                            Ok(Some(p)) if p == node.model() => continue,
                            Ok(Some(p)) => Some(p),
                            Ok(None) => continue,
                            Err(e) => {
                                tracing::warn!("cannot read the promoted model: {e}");
                                continue;
                            }
                        },
                        None => None,
                    };
                    let path = path.clone();
                    let loaded = tokio::task::spawn_blocking(move || match wanted {
                        Some(cid) => Predictor::with_params(&path, &cid),
                        None => Predictor::from_manifest(&path),
                    })
                    .await;
                    match loaded {
                        Ok(Ok(p)) if p.card().params_cid != node.model() => {
                            let cid = node.promote(p);
                            tracing::info!(model = %cid, "serving a newer checkpoint");
                        }
                        Ok(Ok(_)) => {}
                        Ok(Err(e)) => {
                            tracing::warn!("the checkpoint to serve is not servable: {e}")
                        }
                        Err(e) => tracing::warn!("loading the checkpoint failed: {e}"),
                    }
                }
            });
        }
        let grpc_listener = match grpc_listen {
            Some(addr) => Some(tokio::net::TcpListener::bind(addr).await?),
            None => None,
        };
        let batcher = Batcher::spawn(node);
        let http = fl_client::serve::serve(listener, batcher.clone(), async {
            let _ = tokio::signal::ctrl_c().await;
        });
        match grpc_listener {
            Some(grpc_listener) => {
                tracing::info!(grpc_listen = %grpc_listener.local_addr()?, "serving gRPC");
                let grpc = async {
                    fl_client::serve::grpc::serve_grpc(grpc_listener, batcher, async {
                        let _ = tokio::signal::ctrl_c().await;
                    })
                    .await
                    .map_err(std::io::Error::other)
                };
                tokio::try_join!(http, grpc).map(|_| ())
            }
            None => http.await,
        }
    })?;
    Ok(ExitCode::SUCCESS)
}

fn dispatch(command: Command) -> Result<ExitCode> {
    match command {
        Command::Keys {
            action: KeyAction::New { out },
        } => {
            let key = MemberKey::generate();
            fl_node::write_key_file(&key, &out)?;
            println!("{}", key.address());
            eprintln!("key written to {} (keep it secret)", out.display());
            Ok(ExitCode::SUCCESS)
        }
        Command::Predict {
            model,
            input,
            output,
        } => {
            let predictor = fl_client::predict::Predictor::from_manifest(&model)?;
            let start = std::time::Instant::now();
            let n = fl_client::predict::predict_file(&predictor, &input, &output)?;
            eprintln!(
                "{n} predictions by model {} (card task {}) written to {} in {:.2} s",
                predictor.model(),
                predictor.card().task,
                output.display(),
                start.elapsed().as_secs_f64()
            );
            Ok(ExitCode::SUCCESS)
        }
        Command::Serve {
            model,
            key,
            listen,
            grpc_listen,
            watch_secs,
            dao,
            #[cfg(feature = "attack")]
            misbehave,
        } => {
            #[cfg(not(feature = "attack"))]
            let misbehave = None;
            let view = dao.view()?;
            serve(
                &model,
                &key,
                listen,
                grpc_listen,
                watch_secs,
                view,
                misbehave,
            )
        }
        Command::Challenge {
            nodes,
            model,
            key,
            epoch,
            count,
            proposals,
            out,
            timeout_ms,
            dao,
        } => {
            let view = dao.view()?;
            challenge(ChallengeArgs {
                nodes,
                model,
                key,
                epoch,
                count,
                proposals,
                out,
                timeout: std::time::Duration::from_millis(timeout_ms),
                view,
            })
        }
        Command::Gateway {
            nodes,
            model,
            listen,
            redundancy,
            quorum,
            timeout_ms,
            rpc_url,
            block_hash,
            dao,
            federation,
            chain_state,
            db,
            key,
            settle_secs,
            refresh_secs,
        } => gateway(GatewayArgs {
            nodes,
            model,
            dao: dao.map(|d| (d, federation.unwrap_or_default(), chain_state)),
            listen,
            policy: fl_core::inference::ConsensusPolicy {
                redundancy,
                quorum,
                tolerance: fl_core::inference::DEFAULT_TOLERANCE,
            },
            timeout: std::time::Duration::from_millis(timeout_ms),
            rpc_url,
            block_hash,
            db,
            key,
            settle: std::time::Duration::from_secs(settle_secs.max(1)),
            refresh: std::time::Duration::from_secs(refresh_secs.max(1)),
        }),
        Command::Keys {
            action: KeyAction::Show { key },
        } => {
            println!("{}", fl_node::read_key_file(&key)?.address());
            Ok(ExitCode::SUCCESS)
        }
        Command::Run {
            config,
            key,
            tls_cert,
            tls_key,
            committee_state,
            scaffold_state,
            device,
            #[cfg(feature = "attack")]
            attack,
        } => {
            let scaffold_state = scaffold_state.unwrap_or_else(|| key.with_extension("scaffold"));
            #[cfg(not(feature = "attack"))]
            let attack = None;
            run(
                config,
                key,
                tls_cert.zip(tls_key),
                committee_state,
                scaffold_state,
                device,
                attack,
            )
        }
        Command::Devices => {
            println!(
                "backends in this build: {}",
                fl_client::DeviceSpec::compiled().join(", ")
            );
            for (spec, name) in fl_client::DeviceSpec::adapters() {
                println!("{spec}\t{name}");
            }
            Ok(ExitCode::SUCCESS)
        }
        Command::Committee { step } => committee(step),
        Command::Contribute { step } => contribute_cli::contribute(step),
        Command::Claim {
            key,
            dao,
            epoch,
            rewards,
            chain,
        } => claim(&key, &dao, epoch, &rewards, chain),
    }
}

/// Largest reward list read.
const MAX_REWARDS_BYTES: u64 = 64 << 20;

/// The (account, amount) list of a validator's signature file (`rewards`: pairs) or of a plain
/// `[{"account", "amount"}]` list.
fn reward_list(path: &std::path::Path) -> Result<dao::RewardTree> {
    use dao::chain_anchor::alloy::primitives::{Address, U256};
    use std::io::Read as _;
    let mut bytes = Vec::new();
    std::fs::File::open(path)
        .and_then(|f| f.take(MAX_REWARDS_BYTES + 1).read_to_end(&mut bytes))
        .map_err(|e| format!("cannot read {}: {e}", path.display()))?;
    if bytes.len() as u64 > MAX_REWARDS_BYTES {
        return Err(format!(
            "{} is larger than {MAX_REWARDS_BYTES} bytes",
            path.display()
        )
        .into());
    }
    let value: serde_json::Value = serde_json::from_slice(&bytes)
        .map_err(|e| format!("{} is not JSON: {e}", path.display()))?;
    let bad = || format!("{}: not a reward list", path.display());
    let pairs: Vec<(Address, U256)> = match value.get("rewards") {
        Some(list) => {
            serde_json::from_value(list.clone()).map_err(|e| format!("{}: {e}", bad()))?
        }
        None => {
            #[derive(serde::Deserialize)]
            #[serde(deny_unknown_fields)]
            struct Entry {
                account: Address,
                amount: U256,
            }
            let entries: Vec<Entry> =
                serde_json::from_value(value).map_err(|e| format!("{}: {e}", bad()))?;
            entries.into_iter().map(|e| (e.account, e.amount)).collect()
        }
    };
    Ok(dao::RewardTree::new(&pairs)?)
}

fn claim(
    key: &std::path::Path,
    deployment: &std::path::Path,
    epoch: u64,
    rewards: &std::path::Path,
    chain: ChainArgs,
) -> Result<ExitCode> {
    let key = fl_node::read_key_file(key)?;
    let me = key.address();
    let view = DaoView {
        deployment: dao::DaoDeployment::load(deployment)?,
        federation: String::new(),
        rpc_url: chain.rpc_url,
        chain_state: chain.chain_state,
    };
    let tree = reward_list(rewards)?;
    let runtime = tokio::runtime::Runtime::new()?;
    runtime.block_on(async {
        let member = view.open_as(&key)?;
        let posted = member.epoch(epoch).await?;
        if posted.status == 0 {
            return Err(format!("epoch {epoch} has no posted root").into());
        }
        if posted.root != tree.root() {
            return Err(format!(
                "the reward list gives root {}, the chain holds {} for epoch {epoch}: not the list the validators signed",
                tree.root(),
                posted.root
            )
            .into());
        }
        let Some(amount) = tree.amount(me) else {
            println!("{me} has no reward in epoch {epoch}");
            return Ok(ExitCode::from(1));
        };
        let before = member.balance_of(me).await?;
        let receipt = member.claim_reward(epoch, &tree).await?;
        let after = member.balance_of(me).await?;
        println!(
            "claimed {amount} base units of epoch {epoch} for {me} (balance {before} -> {after}, gas {})",
            receipt.gas_used
        );
        Ok::<_, Box<dyn std::error::Error + Send + Sync>>(ExitCode::SUCCESS)
    })
}

fn committee(step: CommitteeStep) -> Result<ExitCode> {
    use fl_client::committee::{commit_step, deal_step, finish_step};
    let load = |args: &CeremonyArgs| -> Result<(FederationConfig, MemberKey)> {
        Ok((
            fl_node::load_federation(&args.config)?,
            fl_node::read_key_file(&args.key)?,
        ))
    };
    match step {
        CommitteeStep::Commit { args } => {
            let (config, key) = load(&args)?;
            let path = commit_step(&config, &key, &args.secret)?;
            println!("{}", path.display());
            eprintln!(
                "commitment written; ceremony secret in {} (keep it until `finish`)",
                args.secret.display()
            );
        }
        CommitteeStep::Deal { args } => {
            let (config, key) = load(&args)?;
            println!("{}", deal_step(&config, &key, &args.secret)?.display());
        }
        CommitteeStep::Finish { args, state } => {
            let (config, key) = load(&args)?;
            let digest = finish_step(&config, &key, &args.secret, &state)?;
            println!("{}", hex_digest(&digest));
            eprintln!(
                "committee state written to {} (keep it secret); the ceremony secret {} is no \
                 longer needed",
                state.display(),
                args.secret.display()
            );
        }
    }
    Ok(ExitCode::SUCCESS)
}

fn hex_digest(d: &[u8; 32]) -> String {
    d.iter().map(|b| format!("{b:02x}")).collect()
}

fn run(
    path: PathBuf,
    key: PathBuf,
    client_cert: Option<(PathBuf, PathBuf)>,
    committee_state: Option<PathBuf>,
    scaffold_state: PathBuf,
    device: Option<fl_client::DeviceSpec>,
    attack: Option<String>,
) -> Result<ExitCode> {
    let mut config = fl_node::load_federation(&path)?;
    if let Some(device) = device {
        config.client.device = Some(device.to_string());
    }
    let key = fl_node::read_key_file(&key)?;
    let address = key.address();
    let index = config.member_index(address).ok_or_else(|| {
        if config.members.source == fl_core::config::MembersSource::Chain {
            format!(
                "{} takes its members from the chain; the built-in datasets split data by a \
                 member's position in [members] allowed, so embed the client with your own data \
                 (fl_client::run, see the README's \"Embedding the client\")",
                path.display()
            )
        } else {
            format!(
                "{address} is not in [members] allowed of {}; ask the federation to add it",
                path.display()
            )
        }
    })?;
    let attack = attack
        .map(|a| fl_client::attack::parse_attack(&a))
        .transpose()?;
    let trainer = match attack {
        Some(a) if a.poisons_data() => {
            let (train, test) = fl_client::federation::member_data(&config, index)?;
            let train = match a {
                fl_core::attack::Attack::Backdoor { target } => fl_client::attack::add_backdoor(
                    train,
                    target,
                    0.5,
                    fl_client::federation::init_seed(&config) ^ index as u64,
                )?,
                _ => fl_client::attack::flip_labels(train)?,
            };
            fl_client::BurnTrainer::new(
                &fl_client::federation::model_spec(&config)?,
                fl_client::federation::device_spec(&config)?,
                train,
                test,
                fl_client::federation::init_seed(&config),
            )?
        }
        _ => fl_client::federation::member_trainer(&config, index)?,
    };
    tracing::info!(%address, member = index, params = trainer.get_parameters().schema().num_values(), "member ready");

    let client_identity = match client_cert {
        Some((cert, key)) => Some((
            std::fs::read(&cert).map_err(|e| format!("cannot read {}: {e}", cert.display()))?,
            std::fs::read(&key).map_err(|e| format!("cannot read {}: {e}", key.display()))?,
        )),
        None => None,
    };
    let mut node = NodeConfig::from_federation(&config, client_identity)?;
    node.committee = fl_client::committee::load_role(&config, &key, committee_state.as_deref())?;
    node.scaffold_state = Some(scaffold_state);
    let runtime = tokio::runtime::Runtime::new()?;
    if let Some(a) = attack {
        tracing::warn!(
            attack = a.label(),
            "ATTACK MODE: this member sends poisoned updates (a development build)"
        );
    }
    let report = match attack {
        Some(a) if !a.poisons_data() => {
            let seed = fl_client::federation::init_seed(&config) ^ index as u64;
            let trainer = fl_client::attack::Attacking::new(trainer, a, seed)?;
            runtime.block_on(run_node(node, key, trainer))?.0
        }
        // No attack, or data poisoning (the trainer above holds the poisoned data).
        _ => runtime.block_on(run_node(node, key, trainer))?.0,
    };
    println!(
        "finished fits={} evaluations={} sessions={}",
        report.fits, report.evaluations, report.sessions
    );
    Ok(ExitCode::SUCCESS)
}
