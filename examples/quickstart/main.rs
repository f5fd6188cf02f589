//! daofl quickstart: 20 members learn to read handwritten digits without pooling their data.
//!
//! Each member holds a label-skewed share (Dirichlet α = 0.5) of the UCI optical digits and
//! trains an MLP locally with burn; the round engine averages their models (FedAvg) over the
//! in-process federation; the global model is scored on held-out digits after every round.
//! Outputs land in `runs/quickstart/`: `metrics.csv`, `metrics.svg`, `summary.txt`, and every
//! round's checkpoint (`checkpoints/`) anchored on the embedded EVM (`chain/`; a `[chain]`
//! section with `backend = "rpc"` anchors on a real chain instead). The final model's anchor is
//! printed, with the command that verifies it.
//!
//! Run with `cargo run --release --example quickstart`. With a TOML file of
//! [`DigitsConfig`] fields the defaults change: `cargo run --release --example quickstart --
//! examples/quickstart-dp.toml` runs the same federation with client-level differential
//! privacy under a budget (outputs in `runs/quickstart-dp/`); `examples/quickstart-dao.toml`
//! runs it under a DAO on the embedded EVM: members stake, and the final checkpoint is proposed,
//! voted, queued, waits out the 7-day timelock (the chain's clock jumps) and is executed.

use std::path::Path;
use std::process::ExitCode;
use std::time::{SystemTime, UNIX_EPOCH};

use examples::digits::{self, DigitsConfig};
use examples::progress::RoundProgress;
use examples::report::RunFolder;
use fl_aggregator::anchoring::chain_anchor::{BackendKind, ChainConfig};

fn main() -> ExitCode {
    match run() {
        Ok(true) => ExitCode::SUCCESS,
        Ok(false) => ExitCode::FAILURE,
        Err(e) => {
            eprintln!("quickstart failed: {e}");
            ExitCode::FAILURE
        }
    }
}

fn run() -> Result<bool, Box<dyn std::error::Error>> {
    // An optional TOML file overrides the defaults (e.g. examples/quickstart-dp.toml adds
    // differential privacy); its name names the run folder.
    let (config, name) = match std::env::args().nth(1) {
        None => (DigitsConfig::default(), "quickstart".to_string()),
        Some(path) => {
            let text =
                std::fs::read_to_string(&path).map_err(|e| format!("cannot read {path}: {e}"))?;
            let config: DigitsConfig = toml::from_str(&text).map_err(|e| format!("{path}: {e}"))?;
            let name = Path::new(&path)
                .file_stem()
                .map_or("quickstart".into(), |s| s.to_string_lossy().into_owned());
            (config, name)
        }
    };
    let prepared = digits::prepare(&config)?;
    println!(
        "{} members, Dirichlet alpha {} over {} training digits (smallest share {}, largest {}), {:?}, {}",
        config.clients,
        config.alpha,
        prepared.sizes.iter().sum::<usize>(),
        prepared.sizes.iter().min().unwrap_or(&0),
        prepared.sizes.iter().max().unwrap_or(&0),
        config.model,
        config.aggregation.name(),
    );
    let run = RunFolder::create(Path::new("runs"), &name)?;
    // A fresh checkpoint store and, on the embedded backend, a fresh chain for every run. On a
    // real chain rounds only move forward, so each run anchors under its own federation id.
    let mut chain_dir = None;
    let federation_id = match &config.chain {
        ChainConfig::Embedded { state_dir, .. } => {
            let state = run
                .path()
                .join(state_dir.as_deref().unwrap_or(Path::new("chain")));
            remove_dir(&state)?;
            chain_dir = Some(state);
            name.clone()
        }
        _ => {
            let secs = SystemTime::now()
                .duration_since(UNIX_EPOCH)
                .map_or(0, |d| d.as_secs());
            format!("{name}-{secs}")
        }
    };
    remove_dir(&run.path().join("checkpoints"))?;

    // With `[dao]`: the DAO is deployed on the run's embedded chain and every member stakes.
    let governed = match (&config.dao, &chain_dir) {
        (None, _) => None,
        (Some(_), None) => {
            return Err("[dao] runs on the embedded chain only (no [chain] rpc)".into());
        }
        (Some(settings), Some(chain)) => {
            let runtime = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()?;
            let setup = runtime.block_on(examples::dao::deploy_and_stake(
                chain,
                &run.path().join("dao.json"),
                config.clients,
                settings,
            ))?;
            println!(
                "DAO deployed on the embedded EVM ({} gas; governor {}, staking {}): {} of {} members staked {} $PROPOSAL and are admitted as training nodes",
                setup.deploy_gas,
                setup.deployment.governor,
                setup.deployment.staking,
                setup.admitted,
                setup.members.len(),
                settings.stake_tokens
            );
            Some((runtime, setup, settings, chain))
        }
    };

    let progress = RoundProgress::new(config.rounds);
    let (result, anchor) =
        digits::run_federated_anchored(&config, prepared, run.path(), &federation_id, |record| {
            progress.round(record)
        })?;
    progress.finish();

    run.write_metrics(&result.records)?;
    let title = match &config.privacy {
        None => format!(
            "daofl {name}: {} members, digits, {}",
            config.clients,
            config.aggregation.name()
        ),
        Some(p) => format!(
            "daofl {name}: {} members, digits, DP-FedAvg ({:?}, z = {}, C = {})",
            config.clients, p.mechanism, p.noise_multiplier, p.clip_norm
        ),
    };
    run.write_plot(&title, &result.records)?;
    let target = config.target_accuracy;
    let reached = result.first_round_reaching(target);
    let mut summary = examples::progress::summary(&result, target);
    if let (Some(p), Some(last)) = (&config.privacy, result.records.last()) {
        summary.push_str(&format!(
            "\nprivacy: epsilon {:.4} spent of {} at delta {} ({:?} DP, {} rounds)",
            last.epsilon,
            p.epsilon,
            p.delta,
            p.mechanism,
            result.records.len()
        ));
    }
    match &anchor {
        Some(a) => {
            let r = &a.receipt;
            let backend = match r.backend {
                BackendKind::Embedded => "the embedded EVM (not a network)".to_string(),
                BackendKind::Rpc => format!("chain {}", r.chain_id),
            };
            summary.push_str(&format!(
                "\nanchor: round {} of `{}`, model {}, block {} of {backend}, tx {}, registry {}, {} gas\nverify: cargo run --release -p fl-aggregator -- verify {}",
                a.round,
                a.federation_id,
                a.cid,
                r.block_number,
                r.tx_hash,
                r.registry,
                r.gas_used,
                a.manifest.display()
            ));
        }
        None => {
            summary.push_str("\nanchor: the final round is not anchored (see the errors above)")
        }
    }
    if let Some((runtime, setup, settings, chain)) = &governed {
        match &anchor {
            Some(a) => {
                let life = runtime.block_on(examples::dao::promote(
                    chain,
                    setup,
                    &a.manifest,
                    settings,
                ))?;
                summary.push_str(&format!(
                    "\ndao: {} of {} members admitted by stake; {life}",
                    setup.admitted,
                    setup.members.len()
                ));
            }
            None => summary.push_str("\ndao: nothing to promote (the final round is not anchored)"),
        }
    }
    run.write_summary(&format!("{summary}\n"))?;
    println!("{summary}");
    println!("run folder: {}", run.path().display());
    Ok(reached.is_some())
}

/// Removes a folder of an earlier run, if any.
fn remove_dir(path: &Path) -> Result<(), Box<dyn std::error::Error>> {
    match std::fs::remove_dir_all(path) {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
        Err(e) => Err(format!("cannot clear {}: {e}", path.display()).into()),
    }
}
