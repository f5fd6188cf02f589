//! `fl-aggregator`: what a coordinator deploys. Thin argument parsing over
//! [`fl_aggregator::server::serve`], the checkpoint store, chain anchoring and the development
//! PKI.

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use clap::{Parser, Subcommand};
use fl_aggregator::anchoring::chain_anchor::alloy::primitives::Address;
use fl_aggregator::anchoring::chain_anchor::{self, BackendKind, KeySource};
use fl_aggregator::anchoring::{
    ChainSettings, ManifestAnchor, RegistryReader, RegistrySource, verify_checkpoint,
};
use fl_aggregator::checkpoint::{CheckpointStore, Manifest};
use fl_aggregator::server::{self, Bound};
use fl_aggregator::tls::{DevPkiOptions, generate_dev_pki_with};

/// The daofl aggregator: runs a federation's rounds over gRPC, checkpoints every round and
/// resumes from the newest checkpoint after a restart.
#[derive(Debug, Parser)]
#[command(name = "fl-aggregator", version, propagate_version = true)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Serve the federation described by a federation file until every round ran (SIGTERM
    /// or Ctrl-C stops it cleanly; the next start resumes from the last checkpoint).
    Run {
        /// The federation file (TOML).
        #[arg(long, short, env = "DAOFL_CONFIG")]
        config: PathBuf,
    },
    /// Make a development PKI: a CA, a server certificate for the given hosts, and a client
    /// certificate for mutual TLS. Not for production: use your own CA there.
    Certs {
        /// Directory to write ca.pem, server.pem, server.key, client.pem, client.key into.
        #[arg(long, short, default_value = "certs")]
        out: PathBuf,
        /// Host names and IP addresses the server certificate is valid for (repeatable).
        #[arg(long = "host", default_values_t = ["localhost".to_string(), "127.0.0.1".to_string(), "::1".to_string()])]
        hosts: Vec<String>,
        /// Replace existing files.
        #[arg(long)]
        force: bool,
    },
    /// List or verify the checkpoints of a federation.
    Checkpoints {
        #[command(subcommand)]
        action: CheckpointAction,
    },
    /// Privacy accounting: the epsilon of a planned run, or the noise a target needs.
    Privacy {
        #[command(subcommand)]
        action: PrivacyAction,
    },
    /// Check a checkpoint against its chain anchor: recompute the parameters' SHA-256 from the
    /// parameter file, find the round's anchor, compare the CID, participants root and epsilon,
    /// and optionally a member's inclusion. Prints a one-line verdict and details; exits 0 only
    /// when the checkpoint is valid.
    ///
    /// The registry is read from, in this order: --rpc-url, --chain-state, the federation
    /// file's [chain] (--config), or the embedded chain next to the checkpoint folder
    /// (`<checkpoints>/../chain`, the default layout).
    Verify {
        /// A manifest (`<checkpoints>/rounds/<round>.json`) or a checkpoint folder (with
        /// --round; without it, the newest round).
        checkpoint: PathBuf,
        /// The round, when CHECKPOINT is a folder.
        #[arg(long)]
        round: Option<u64>,
        /// The parameter file (default: `<checkpoints>/params/<cid>` next to the manifest).
        #[arg(long)]
        params: Option<PathBuf>,
        /// Also check that this member (0x address) took part in the round.
        #[arg(long)]
        member: Option<Address>,
        /// The federation file: its [chain] section names the registry.
        #[arg(long, short, env = "DAOFL_CONFIG")]
        config: Option<PathBuf>,
        /// An embedded chain's state folder (holding chain-anchor-state.json).
        #[arg(long, conflicts_with = "rpc_url")]
        chain_state: Option<PathBuf>,
        /// A JSON-RPC endpoint whose registry holds the anchor.
        #[arg(long)]
        rpc_url: Option<String>,
        /// The registry's address (with --rpc-url; default: the one the manifest records).
        #[arg(long, requires = "rpc_url")]
        registry: Option<Address>,
        /// The chain id the endpoint must serve.
        #[arg(long, requires = "rpc_url")]
        chain_id: Option<u64>,
    },
    /// Quality assurance: re-check the evidence of a flagged update.
    Qa {
        #[command(subcommand)]
        action: QaAction,
    },
    /// Settlement: an epoch's training rewards from its checkpoint manifests.
    Settle {
        #[command(subcommand)]
        action: SettleAction,
    },
    /// The QA validator role: recompute an epoch's rewards and verdicts from the anchored
    /// checkpoints, sign and publish them next to the checkpoints, post what a validator quorum
    /// signed alike, report validators that signed a contradicting root, execute due verdicts.
    /// With --watch, keeps doing so for each epoch in turn as the chain anchors its rounds.
    Validate {
        #[command(flatten)]
        validator: ValidatorArgs,
        /// The (first) epoch.
        #[arg(long)]
        epoch: u64,
        /// Keep watching the chain and the store: each epoch once anchored, then the next.
        #[arg(long)]
        watch: bool,
        /// With --watch: stop after this epoch.
        #[arg(long, requires = "watch")]
        until_epoch: Option<u64>,
        /// With --watch: seconds between looks at the chain and the store.
        #[arg(long, default_value_t = 30)]
        poll_secs: u64,
    },
    /// Chain anchoring: deploy the checkpoint registry.
    Anchor {
        #[command(subcommand)]
        action: AnchorAction,
    },
}

#[derive(Debug, Subcommand)]
enum QaAction {
    /// Recompute a flagged update's score from the evidence's data (global model, centre,
    /// update, signature, participants proof) and say whether the flag holds. Exits 0 when it
    /// holds, 1 when the record is valid but the score is within the threshold, 2 when the
    /// record is rejected (tampered, malformed, or not the member's).
    Verify {
        /// The evidence file (`<checkpoints>/evidence/<round>/<member>.json`).
        evidence: PathBuf,
        /// A validator's key file, to open sealed evidence.
        #[arg(long)]
        key_file: Option<PathBuf>,
        /// The round's manifest (`<checkpoints>/rounds/<round>.json`): the record's checkpoint
        /// CID and participants root must be the manifest's (check the manifest against the
        /// chain with `fl-aggregator verify`).
        #[arg(long)]
        manifest: Option<PathBuf>,
        /// Accept updates without a signed statement (in-process runs).
        #[arg(long)]
        allow_unsigned: bool,
    },
}

/// Who validates, and where: the federation file (checkpoint store, [chain], the DAO's
/// deployment in [members] dao) and the validator's key.
#[derive(Debug, clap::Args)]
struct ValidatorArgs {
    /// The federation file (its checkpoint store, [chain] and `[members] dao`).
    #[arg(long, short, env = "DAOFL_CONFIG")]
    config: PathBuf,
    /// The validator's key file (secp256k1; signs, and opens evidence sealed to it).
    #[arg(long)]
    key_file: PathBuf,
    /// The DAO deployment file (default: the federation file's `[members] dao`).
    #[arg(long)]
    dao: Option<PathBuf>,
}

/// The epoch and the governable shares (see `fl_aggregator::settle`).
#[derive(Debug, clap::Args)]
struct EpochArgs {
    /// The checkpoint store (a local folder or URL).
    #[arg(long)]
    checkpoints: String,
    /// First round of the epoch.
    #[arg(long)]
    from: u64,
    /// Last round of the epoch.
    #[arg(long)]
    to: u64,
    /// The epoch's training pool, in the token's base units.
    #[arg(long)]
    pool: u128,
    /// Share paid by contribution, parts per million.
    #[arg(long, default_value_t = 700_000)]
    contribution_ppm: u32,
    /// Share paid by contribution when the epoch improved the model, parts per million.
    #[arg(long, default_value_t = 100_000)]
    performance_ppm: u32,
    /// Share paid for stability, parts per million.
    #[arg(long, default_value_t = 100_000)]
    stability_ppm: u32,
    /// Percent of the rounds a member must be useful in for the stability share.
    #[arg(long, default_value_t = 80)]
    stability_quorum_pct: u32,
}

#[derive(Debug, Subcommand)]
enum SettleAction {
    /// Compute the epoch's rewards from the manifests of its rounds; print each member's
    /// weight, useful rounds and amount, and the Merkle root; write the reward list (the
    /// file `dao sign-root` and `dao post-root` read) with --out.
    Rewards {
        #[command(flatten)]
        epoch: EpochArgs,
        /// Where to write the reward list (JSON).
        #[arg(long)]
        out: Option<PathBuf>,
    },
    /// Recompute epoch EPOCH from the anchored checkpoints under the rules on chain and
    /// compare it with the root posted there; exits 0 only when they match (1: mismatch).
    Verify {
        /// The epoch.
        epoch: u64,
        #[command(flatten)]
        validator: ValidatorArgs,
    },
    /// Recompute the rounds' reward root and compare it with a given one; exits 0 only when
    /// they match.
    CheckRoot {
        #[command(flatten)]
        epoch: EpochArgs,
        /// The root to check (0x + 64 hex digits).
        #[arg(long)]
        root: String,
    },
}

#[derive(Debug, Subcommand)]
enum AnchorAction {
    /// Deploy a CheckpointRegistry through a JSON-RPC endpoint; the deploying key becomes its
    /// admin and first aggregator. Prints the registry address, gas, and a [chain] section.
    Deploy {
        /// The JSON-RPC endpoint (e.g. http://127.0.0.1:8545 for anvil).
        #[arg(long)]
        rpc_url: String,
        /// File holding the deploying key (0x + 64 hex digits, mode 0600).
        #[arg(long, required_unless_present = "key_env", conflicts_with = "key_env")]
        key_file: Option<PathBuf>,
        /// Environment variable holding the deploying key.
        #[arg(long)]
        key_env: Option<String>,
        /// Blocks the deployment must be buried under.
        #[arg(long, default_value_t = 1)]
        confirmations: u64,
    },
}

#[derive(Debug, Subcommand)]
enum PrivacyAction {
    /// Epsilon of T rounds of the Poisson-subsampled Gaussian (add/remove-one adjacency).
    /// Prints the epsilon as a plain number on the last line. With --noise-for-epsilon E,
    /// prints instead the smallest noise multiplier whose epsilon is at most E.
    Epsilon {
        /// Probability q that a member takes part in a round.
        #[arg(long)]
        sampling_rate: f64,
        /// Noise multiplier z (noise standard deviation over the clip norm).
        #[arg(long, required_unless_present = "noise_for_epsilon")]
        noise_multiplier: Option<f64>,
        /// Rounds T.
        #[arg(long)]
        rounds: u64,
        /// The delta of the (epsilon, delta) guarantee.
        #[arg(long, default_value_t = 1e-5)]
        delta: f64,
        /// rdp (Renyi DP with the CKS20 conversion) or pld (privacy loss distributions).
        #[arg(long, default_value = "rdp")]
        accountant: String,
        /// Find the smallest noise multiplier meeting this epsilon instead.
        #[arg(long, conflicts_with = "noise_multiplier")]
        noise_for_epsilon: Option<f64>,
    },
}

#[derive(Debug, Subcommand)]
enum CheckpointAction {
    /// One line per checkpoint: round, parameter CID, participants, anchor block, metrics.
    List {
        /// The federation file (its `[aggregator] checkpoints` store is read).
        #[arg(long, short, env = "DAOFL_CONFIG", conflicts_with = "store")]
        config: Option<PathBuf>,
        /// A store URL or directory instead of a federation file.
        #[arg(long)]
        store: Option<String>,
    },
    /// Re-hash every checkpoint's parameters and check its manifest; exits 1 if any is damaged.
    Verify {
        /// The federation file (its `[aggregator] checkpoints` store is read).
        #[arg(long, short, env = "DAOFL_CONFIG", conflicts_with = "store")]
        config: Option<PathBuf>,
        /// A store URL or directory instead of a federation file.
        #[arg(long)]
        store: Option<String>,
        /// Only this round.
        #[arg(long)]
        round: Option<u64>,
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
    let cli = Cli::parse();
    let runtime = match tokio::runtime::Runtime::new() {
        Ok(r) => r,
        Err(e) => {
            eprintln!("error: cannot start the async runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    match runtime.block_on(dispatch(cli.command)) {
        Ok(code) => code,
        Err(e) => {
            eprintln!("error: {e}");
            ExitCode::FAILURE
        }
    }
}

type Result<T> = std::result::Result<T, Box<dyn std::error::Error + Send + Sync>>;

async fn dispatch(command: Command) -> Result<ExitCode> {
    match command {
        Command::Run { config } => run(config).await,
        Command::Certs { out, hosts, force } => {
            let pki = generate_dev_pki_with(
                &out,
                &DevPkiOptions {
                    hosts,
                    overwrite: force,
                    ..DevPkiOptions::default()
                },
            )?;
            println!("CA certificate:     {}", pki.ca_cert.display());
            println!("server certificate: {}", pki.server_cert.display());
            println!("server key:         {}", pki.server_key.display());
            println!("client certificate: {}", pki.client_cert.display());
            println!("client key:         {}", pki.client_key.display());
            Ok(ExitCode::SUCCESS)
        }
        Command::Checkpoints { action } => checkpoints(action).await,
        Command::Settle { action } => settle(action).await,
        Command::Validate {
            validator,
            epoch,
            watch,
            until_epoch,
            poll_secs,
        } => validate(&validator, epoch, watch, until_epoch, poll_secs).await,
        Command::Qa {
            action:
                QaAction::Verify {
                    evidence,
                    key_file,
                    manifest,
                    allow_unsigned,
                },
        } => qa_verify(&evidence, key_file, manifest, allow_unsigned),
        Command::Verify {
            checkpoint,
            round,
            params,
            member,
            config,
            chain_state,
            rpc_url,
            registry,
            chain_id,
        } => {
            let (manifest, bytes, store_dir) = read_checkpoint(&checkpoint, round, params).await?;
            let recorded = ManifestAnchor::of(&manifest)?;
            let source = match (rpc_url, chain_state, config) {
                (Some(url), _, _) => {
                    let registry = match (registry, &recorded) {
                        (Some(r), _) => r,
                        (None, Some(a)) => {
                            eprintln!(
                                "note: registry {} taken from the manifest; pass --registry to \
                                 pin the one you trust",
                                a.receipt.registry
                            );
                            a.receipt.registry
                        }
                        (None, None) => return Err("give --registry".into()),
                    };
                    RegistrySource::Rpc {
                        url,
                        registry,
                        chain_id,
                    }
                }
                (None, Some(state_dir), _) => RegistrySource::Embedded { state_dir },
                (None, None, Some(path)) => {
                    let config = fl_node::load_federation(&path)?;
                    let settings = ChainSettings::from_federation(&config)?
                        .ok_or_else(|| format!("{} has no [chain] section", path.display()))?;
                    RegistrySource::from_settings(&settings)
                }
                (None, None, None) => match recorded.as_ref().map(|a| a.receipt.backend) {
                    Some(BackendKind::Rpc) => {
                        return Err(format!(
                            "round {} was anchored on chain {} (registry {}): give --rpc-url",
                            manifest.round,
                            recorded.as_ref().map_or(0, |a| a.receipt.chain_id),
                            recorded
                                .as_ref()
                                .map_or(Address::ZERO, |a| a.receipt.registry),
                        )
                        .into());
                    }
                    _ => RegistrySource::Embedded {
                        state_dir: store_dir
                            .as_deref()
                            .and_then(Path::parent)
                            .unwrap_or(Path::new("."))
                            .join("chain"),
                    },
                },
            };
            let reader = RegistryReader::open(&source)?;
            let report = verify_checkpoint(reader.chain(), &manifest, &bytes, member).await?;
            println!("{report}");
            let card_ok = match (&manifest.model_card, &store_dir) {
                (Some(cid), Some(dir)) => {
                    let store = CheckpointStore::open(&dir.to_string_lossy())?;
                    match store.card_bytes(cid).await {
                        Ok(bytes) => {
                            println!("  card file     intact ({} bytes)", bytes.len());
                            true
                        }
                        Err(e) => {
                            println!("  card file     UNUSABLE: {e}");
                            false
                        }
                    }
                }
                _ => true,
            };
            Ok(if report.is_valid() && card_ok {
                ExitCode::SUCCESS
            } else {
                ExitCode::FAILURE
            })
        }
        Command::Anchor {
            action:
                AnchorAction::Deploy {
                    rpc_url,
                    key_file,
                    key_env,
                    confirmations,
                },
        } => {
            let key = match (key_file, key_env) {
                (Some(f), None) => KeySource::File(f),
                (None, Some(v)) => KeySource::Env(v),
                _ => return Err("give exactly one of --key-file and --key-env".into()),
            };
            let d = chain_anchor::deploy_registry(&rpc_url, &key, confirmations).await?;
            println!("registry  {}", d.registry);
            println!("admin     {}", d.admin);
            println!("chain id  {}", d.chain_id);
            println!("tx        {} (block {})", d.tx_hash, d.block_number);
            println!("gas used  {}", d.gas_used);
            println!();
            println!("# for the federation file:");
            println!("[chain]");
            println!("backend = \"rpc\"");
            println!("url = \"{rpc_url}\"");
            println!("registry = \"{}\"", d.registry);
            println!("chain_id = {}", d.chain_id);
            match &key {
                KeySource::File(f) => println!("key_file = \"{}\"", f.display()),
                KeySource::Env(v) => println!("key_env = \"{v}\""),
            }
            println!("queue_dir = \"anchor-queue\"");
            Ok(ExitCode::SUCCESS)
        }
        Command::Privacy {
            action:
                PrivacyAction::Epsilon {
                    sampling_rate,
                    noise_multiplier,
                    rounds,
                    delta,
                    accountant,
                    noise_for_epsilon,
                },
        } => {
            let kind: privacy::AccountantKind = accountant.parse()?;
            match (noise_multiplier, noise_for_epsilon) {
                (_, Some(target)) => {
                    let z = privacy::accounting::noise_for_epsilon(
                        sampling_rate,
                        rounds,
                        delta,
                        target,
                        kind,
                    )?;
                    println!(
                        "smallest noise multiplier for epsilon <= {target} (q={sampling_rate}, T={rounds}, delta={delta}, {accountant}):"
                    );
                    println!("{z}");
                }
                (Some(z), None) => {
                    let eps =
                        privacy::accounting::epsilon_for(sampling_rate, z, rounds, delta, kind)?;
                    println!(
                        "epsilon of q={sampling_rate}, z={z}, T={rounds}, delta={delta} ({accountant}):"
                    );
                    println!("{eps}");
                }
                (None, None) => return Err("give --noise-multiplier or --noise-for-epsilon".into()),
            }
            Ok(ExitCode::SUCCESS)
        }
    }
}

async fn run(path: PathBuf) -> Result<ExitCode> {
    let config = fl_node::load_federation(&path)?;
    // `[model] kind = "file"`: the model the members embed, from its files; otherwise one of
    // fl-client's models, seeded exactly as every member builds it.
    let own_model = fl_aggregator::model_file::load(&config)?;
    // `[strategy.contribution]` scores members on a validation set the aggregator holds: for
    // fl-client's models, the held-out split of the federation's built-in dataset.
    let validator: Option<Box<dyn fl_core::Validator>> =
        match (&config.strategy.contribution, &own_model) {
            (Some(_), None) => Some(Box::new(fl_client::HeldOutValidator::new(
                fl_client::federation::evaluator(&config)?,
                fl_client::Utility::Accuracy,
            ))),
            _ => None,
        };
    let initial = match own_model {
        Some(params) => params,
        None => fl_client::federation::initial_params(&config)?,
    };
    // The handlers are installed here, before `serve` binds and announces "listening": a
    // signal that arrives right after that line must stop the service cleanly, not take the
    // default action (an async block would only install them when first polled).
    use tokio::signal::unix::{SignalKind, signal};
    let mut term = signal(SignalKind::terminate())?;
    let mut interrupt = signal(SignalKind::interrupt())?;
    let shutdown = async move {
        tokio::select! {
            _ = term.recv() => tracing::info!("SIGTERM received"),
            _ = interrupt.recv() => tracing::info!("interrupt received"),
        }
    };
    let outcome = server::serve_with(&config, initial, validator, shutdown, |bound: Bound| {
        // One machine-readable line for scripts and tests.
        println!(
            "listening grpc={} metrics={}",
            bound.grpc,
            bound
                .metrics
                .map(|a| a.to_string())
                .unwrap_or_else(|| "off".into())
        );
    })
    .await?;
    if let Some((round, r)) = &outcome.last_anchor {
        println!(
            "anchored round={round} backend={:?} chain_id={} registry={} block={} tx={}",
            r.backend, r.chain_id, r.registry, r.block_number, r.tx_hash
        );
    }
    println!(
        "{} params={} last_checkpoint={}",
        if outcome.finished {
            "finished"
        } else {
            "stopped"
        },
        outcome.params.content_hash(),
        outcome
            .last_checkpoint
            .map(|r| r.to_string())
            .unwrap_or_else(|| "none".into())
    );
    Ok(ExitCode::SUCCESS)
}

/// The manifest, the parameter bytes (unchecked) and the checkpoint folder, when known.
async fn read_checkpoint(
    checkpoint: &Path,
    round: Option<u64>,
    params: Option<PathBuf>,
) -> Result<(Manifest, Vec<u8>, Option<PathBuf>)> {
    let (manifest, store_dir) = if checkpoint.is_dir() {
        let store = CheckpointStore::open(&checkpoint.to_string_lossy())?;
        let round = match round {
            Some(r) => r,
            None => *store
                .rounds()
                .await?
                .last()
                .ok_or_else(|| format!("no checkpoints in {}", checkpoint.display()))?,
        };
        (store.manifest(round).await?, Some(checkpoint.to_owned()))
    } else {
        let bytes = read_limited(checkpoint, 64 << 20)?;
        let manifest = Manifest::from_json(&checkpoint.to_string_lossy(), &bytes)
            .map_err(|p| p.to_string())?;
        let store_dir = checkpoint
            .parent()
            .filter(|p| p.file_name().is_some_and(|n| n == "rounds"))
            .and_then(Path::parent)
            .map(|p| {
                if p.as_os_str().is_empty() {
                    Path::new(".")
                } else {
                    p
                }
            })
            .map(Path::to_owned);
        (manifest, store_dir)
    };
    let bytes = match (params, &store_dir) {
        (Some(path), _) => read_limited(&path, manifest.params_len() + 1)?,
        (None, Some(dir)) => {
            let path = dir.join("params").join(manifest.params_cid.to_string());
            read_limited(&path, manifest.params_len() + 1)?
        }
        (None, None) => return Err("give the parameter file with --params".into()),
    };
    Ok((manifest, bytes, store_dir))
}

/// Reads at most `limit` bytes of a file.
fn read_limited(path: &Path, limit: u64) -> Result<Vec<u8>> {
    use std::io::Read;
    let file = std::fs::File::open(path).map_err(|e| format!("{}: {e}", path.display()))?;
    let mut bytes = Vec::new();
    file.take(limit)
        .read_to_end(&mut bytes)
        .map_err(|e| format!("{}: {e}", path.display()))?;
    Ok(bytes)
}

fn open_store(config: Option<PathBuf>, store: Option<String>) -> Result<CheckpointStore> {
    let url = match (config, store) {
        (_, Some(url)) => url,
        (Some(path), None) => fl_node::load_federation(&path)?.aggregator.checkpoints,
        (None, None) => return Err("give --config FILE or --store URL".into()),
    };
    Ok(CheckpointStore::open(&url)?)
}

async fn checkpoints(action: CheckpointAction) -> Result<ExitCode> {
    match action {
        CheckpointAction::List { config, store } => {
            let store = open_store(config, store)?;
            let manifests = store.list().await?;
            if manifests.is_empty() {
                println!("no checkpoints in {}", store.url());
            }
            for m in manifests {
                let metrics: Vec<String> = m
                    .metrics
                    .iter()
                    .map(|(k, v)| format!("{k}={v:.4}"))
                    .collect();
                let anchor = match ManifestAnchor::of(&m) {
                    Ok(Some(a)) => format!("anchored block {}", a.receipt.block_number),
                    Ok(None) => "not anchored".into(),
                    Err(_) => "anchor unreadable".into(),
                };
                println!(
                    "round {:>5}  {}  {} participants  {anchor}  {}",
                    m.round,
                    m.params_cid,
                    m.participants.len(),
                    metrics.join(" ")
                );
            }
            Ok(ExitCode::SUCCESS)
        }
        CheckpointAction::Verify {
            config,
            store,
            round,
        } => {
            let store = open_store(config, store)?;
            let rounds = match round {
                Some(r) => vec![r],
                None => store.rounds().await?,
            };
            let mut damaged = 0;
            for r in &rounds {
                let report = store.verify(*r).await?;
                if !report.is_ok() {
                    damaged += 1;
                }
                println!("{report}");
            }
            println!("{} checkpoints verified, {} damaged", rounds.len(), damaged);
            Ok(if damaged == 0 {
                ExitCode::SUCCESS
            } else {
                ExitCode::FAILURE
            })
        }
    }
}

fn qa_verify(
    path: &Path,
    key_file: Option<PathBuf>,
    manifest: Option<PathBuf>,
    allow_unsigned: bool,
) -> Result<ExitCode> {
    use fl_aggregator::qa::{CheckOptions, MAX_EVIDENCE_BYTES, check_file};
    let bytes = read_limited(path, MAX_EVIDENCE_BYTES as u64)?;
    let key = key_file.map(|k| fl_node::read_key_file(&k)).transpose()?;
    let manifest = match manifest {
        Some(p) => {
            let bytes = read_limited(&p, 64 << 20)?;
            Some(Manifest::from_json(&p.display().to_string(), &bytes).map_err(|e| e.to_string())?)
        }
        None => None,
    };
    let options = CheckOptions {
        key: key.as_ref(),
        manifest: manifest.as_ref(),
        allow_unsigned,
    };
    match check_file(&bytes, &options) {
        Ok((e, v)) => {
            let verdict = if v.holds { "HOLDS" } else { "DOES NOT HOLD" };
            println!(
                "flag {verdict}: {} in round {} of {}: {} score {:.3} (threshold {}) under {}",
                e.update.member,
                e.round,
                e.federation_id,
                v.reason.name(),
                v.score,
                e.detection.threshold,
                e.rule
            );
            match v.signer {
                Some(a) => {
                    println!("  signed by:         {a} (the update hashes to the signed digest)")
                }
                None => println!("  signed by:         nobody (unsigned: the member can deny it)"),
            }
            println!("  global model:      {} (recomputed)", e.global_cid);
            if v.centre_checked {
                println!(
                    "  round checkpoint:  {} = global + centre (recomputed)",
                    e.next_cid
                );
            } else {
                println!(
                    "  round checkpoint:  {} (a server optimiser stepped: centre as reported)",
                    e.next_cid
                );
            }
            println!(
                "  participants root: {} (member's leaf proven)",
                e.participants_root
            );
            let hash = e.public_record().evidence_hash.to_hex();
            println!(
                "  evidence hash:     0x{hash} (what a slashing verdict names: dao sign-verdict \
                 --member {} --evidence 0x{hash})",
                e.update.member
            );
            if manifest.is_none() {
                println!(
                    "  note: pass --manifest to check the root and checkpoint against the round's manifest"
                );
            }
            Ok(if v.holds {
                ExitCode::SUCCESS
            } else {
                ExitCode::from(1)
            })
        }
        Err(e) => {
            println!("evidence REJECTED: {e}");
            Ok(ExitCode::from(2))
        }
    }
}

/// The validator of `args`: the federation file's store and chain, the DAO deployment, the key.
fn open_validator(args: &ValidatorArgs) -> Result<fl_aggregator::validator::Validator> {
    use fl_aggregator::anchoring::chain_anchor::ChainAnchor;
    let config = fl_node::load_federation(&args.config)?;
    let settings = ChainSettings::from_federation(&config)?
        .ok_or("the federation file has no [chain] section: nothing is anchored to validate")?;
    let anchor = ChainAnchor::open(&settings.chain, &settings.run_dir)?;
    let dao_path = args
        .dao
        .clone()
        .or_else(|| config.members.dao.clone())
        .ok_or("no DAO deployment: pass --dao or set `[members] dao` in the federation file")?;
    let deployment = dao::DaoDeployment::load(&dao_path)?;
    let key = fl_node::read_key_file(&args.key_file)?;
    let signer: chain_anchor::alloy::signers::local::PrivateKeySigner = key
        .to_hex()
        .parse()
        .map_err(|e| format!("validator key: {e}"))?;
    let backend = match &anchor {
        ChainAnchor::Embedded(a) => dao::Backend::embedded(a, signer.address()),
        ChainAnchor::Rpc(_) => {
            let rpc = settings.chain.rpc_settings(&settings.run_dir)?;
            dao::Backend::rpc_with_signer(&rpc.url, signer, dao::RpcTimeouts::default())?
        }
    };
    let store = CheckpointStore::open(&config.aggregator.checkpoints)?;
    Ok(fl_aggregator::validator::Validator::new(
        dao::Dao::new(backend, deployment),
        key,
        store,
        anchor,
        config.federation.id.clone(),
    )?)
}

fn print_review(review: &fl_aggregator::validator::EpochReview) {
    println!(
        "epoch {} (rounds {}..={}), performance share {}",
        review.epoch,
        review.rounds.start(),
        review.rounds.end(),
        if review.improved {
            "paid (the model improved)"
        } else {
            "not paid"
        }
    );
    println!("| member | weight (nano) | useful rounds | stable | amount |");
    println!("|---|---|---|---|---|");
    for r in &review.rewards {
        println!(
            "| {} | {} | {} | {} | {} |",
            r.account, r.weight, r.useful_rounds, r.stable, r.amount
        );
    }
    println!(
        "root {} total {} deadline {}",
        review.root.root, review.root.total, review.root.deadline
    );
    for f in &review.flags {
        println!(
            "flag holds: {} in round {} (score {:.2}), evidence {}",
            f.message.member, f.round, f.score, f.message.evidence
        );
    }
    for (file, why) in &review.dismissed {
        println!("dismissed {file}: {why}");
    }
}

async fn validate(
    args: &ValidatorArgs,
    first: u64,
    watch: bool,
    until: Option<u64>,
    poll_secs: u64,
) -> Result<ExitCode> {
    use fl_aggregator::validator::ValidatorError;
    let v = open_validator(args)?;
    println!("validator {} for epochs from {first}", v.address());
    let mut epoch = first;
    loop {
        let step = async {
            let review = v.review(epoch).await?;
            print_review(&review);
            let path = v.publish(&review).await?;
            println!("published {path}");
            let report = v.settle(epoch).await?;
            print!("{report}");
            Ok::<_, ValidatorError>(())
        };
        match step.await {
            Ok(()) => {}
            Err(e @ ValidatorError::NotReady { .. }) if watch => {
                tracing::info!("{e}; waiting");
                // Meanwhile, the earlier epochs' windows end: report and execute what is due.
                for earlier in first..epoch {
                    match v.settle(earlier).await {
                        Ok(report) => print!("{report}"),
                        Err(e) => tracing::warn!(epoch = earlier, "{e}"),
                    }
                }
                tokio::time::sleep(std::time::Duration::from_secs(poll_secs)).await;
                continue;
            }
            Err(e) => return Err(e.into()),
        }
        if !watch || until.is_some_and(|u| epoch >= u) {
            return Ok(ExitCode::SUCCESS);
        }
        epoch += 1;
    }
}

async fn settle(action: SettleAction) -> Result<ExitCode> {
    use fl_aggregator::anchoring::chain_anchor::alloy::primitives::U256;
    use fl_aggregator::settle::{EpochPolicy, epoch_rewards};
    let (epoch, out, root) = match action {
        SettleAction::Rewards { epoch, out } => (epoch, out, None),
        SettleAction::CheckRoot { epoch, root } => (epoch, None, Some(root)),
        SettleAction::Verify { epoch, validator } => {
            let v = open_validator(&validator)?;
            let (matches, posted, review) = v.verify_posted(epoch).await?;
            print_review(&review);
            // Each recomputed verdict against the chain (its id is its EIP-712 digest).
            let domain = v.dao().settlement_domain().await?;
            for flag in &review.flags {
                let id = flag.message.digest(&domain);
                let status = match v.dao().verdict(id).await?.status {
                    0 => "not posted",
                    1 => "posted, pending",
                    2 => "cancelled",
                    _ => "executed",
                };
                println!(
                    "verdict on {} (evidence {}): {status} on chain",
                    flag.message.member, flag.message.evidence
                );
            }
            return Ok(if matches {
                println!(
                    "MATCH: epoch {epoch}'s posted root {} is the recomputed one",
                    posted.root
                );
                ExitCode::SUCCESS
            } else {
                println!(
                    "MISMATCH: epoch {epoch} recomputes to {} (total {}), the chain holds {} (total {})",
                    review.root.root, review.root.total, posted.root, posted.total
                );
                ExitCode::from(1)
            });
        }
    };
    if epoch.to < epoch.from {
        return Err(format!("--to {} is before --from {}", epoch.to, epoch.from).into());
    }
    let store = CheckpointStore::open(&epoch.checkpoints)?;
    let mut manifests = Vec::new();
    for round in epoch.from..=epoch.to {
        manifests.push(store.manifest(round).await?);
    }
    let policy = EpochPolicy {
        pool: epoch.pool,
        contribution_ppm: epoch.contribution_ppm,
        stability_ppm: epoch.stability_ppm,
        stability_quorum_pct: epoch.stability_quorum_pct,
        performance_ppm: epoch.performance_ppm,
    };
    let rewards = epoch_rewards(&manifests, &policy)?;
    let paid: Vec<(Address, U256)> = rewards
        .iter()
        .filter(|r| !r.amount.is_zero())
        .map(|r| (r.account, r.amount))
        .collect();
    let tree = dao::settle::RewardTree::new(&paid)?;
    match root {
        None => {
            println!("| member | weight (nano) | useful rounds | stable | amount |");
            println!("|---|---|---|---|---|");
            for r in &rewards {
                println!(
                    "| {} | {} | {} | {} | {} |",
                    r.account, r.weight, r.useful_rounds, r.stable, r.amount
                );
            }
            println!(
                "rounds {}..={}: {} of {} base units to {} members; root {}",
                epoch.from,
                epoch.to,
                tree.total(),
                epoch.pool,
                paid.len(),
                tree.root()
            );
            if let Some(path) = out {
                let list: Vec<serde_json::Value> = paid
                    .iter()
                    .map(|(a, v)| serde_json::json!({"account": a.to_string(), "amount": v.to_string()}))
                    .collect();
                std::fs::write(&path, serde_json::to_vec_pretty(&list)?)
                    .map_err(|e| format!("cannot write {}: {e}", path.display()))?;
                println!("reward list written to {}", path.display());
            }
            Ok(ExitCode::SUCCESS)
        }
        Some(root) => {
            let claimed: fl_aggregator::anchoring::chain_anchor::alloy::primitives::B256 =
                root.parse().map_err(|e| format!("--root: {e}"))?;
            if claimed == tree.root() {
                println!(
                    "MATCH: rounds {}..={} give root {claimed}",
                    epoch.from, epoch.to
                );
                Ok(ExitCode::SUCCESS)
            } else {
                println!(
                    "MISMATCH: rounds {}..={} give root {}, not {claimed}",
                    epoch.from,
                    epoch.to,
                    tree.root()
                );
                Ok(ExitCode::from(1))
            }
        }
    }
}
