//! `fl-aggregator`: what a coordinator deploys. Thin argument parsing over
//! [`fl_aggregator::server::serve`], the checkpoint store and the development PKI.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};
use fl_aggregator::checkpoint::CheckpointStore;
use fl_aggregator::server::{self, Bound};
use fl_aggregator::tls::{DevPkiOptions, generate_dev_pki_with};
use fl_core::config::FederationConfig;

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
    /// One line per checkpoint: round, parameter CID, participants, metrics.
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
    let config = FederationConfig::load(&path)?;
    // The seeded initial model, built exactly as every member builds it.
    let initial = fl_client::federation::initial_params(&config)?;
    let shutdown = async {
        let mut term =
            match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
                Ok(s) => s,
                Err(e) => {
                    tracing::error!("cannot watch SIGTERM: {e}");
                    std::future::pending::<()>().await;
                    unreachable!()
                }
            };
        tokio::select! {
            _ = term.recv() => tracing::info!("SIGTERM received"),
            _ = tokio::signal::ctrl_c() => tracing::info!("interrupt received"),
        }
    };
    let outcome = server::serve(&config, initial, shutdown, |bound: Bound| {
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

fn open_store(config: Option<PathBuf>, store: Option<String>) -> Result<CheckpointStore> {
    let url = match (config, store) {
        (_, Some(url)) => url,
        (Some(path), None) => FederationConfig::load(&path)?.aggregator.checkpoints,
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
                println!(
                    "round {:>5}  {}  {} participants  {}",
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
