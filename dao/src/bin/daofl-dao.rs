//! `daofl-dao`: deploy and drive a daofl DAO from the command line. A thin wrapper over the `dao`
//! library; every subcommand is one library call.

use std::path::PathBuf;

use alloy::primitives::{Address, B256, Bytes, U256};
use anyhow::{Context, bail};
use chain_anchor::{EmbeddedAnchor, FederationId, KeySource};
use clap::{Parser, Subcommand};
use dao::settle::{self, RewardTree, RootMessage, VerdictMessage};
use dao::{Backend, Dao, DaoConfig, DaoDeployment, Promotion, RewardSplit, Role, Support, tokens};

/// Deploy and drive a daofl DAO ($PROPOSAL token, Governor + 7-day timelock, model registry,
/// staking) on an EVM JSON-RPC chain or the embedded EVM.
#[derive(Debug, Parser)]
#[command(name = "daofl-dao", version)]
struct Cli {
    /// JSON-RPC endpoint; without it the embedded EVM in --state-dir is used.
    #[arg(long, env = "DAOFL_RPC_URL")]
    rpc: Option<String>,
    /// Key file (one line, 0x + 64 hex digits, mode 0600) of the sending account (RPC).
    #[arg(long, conflicts_with = "key_env")]
    key_file: Option<PathBuf>,
    /// Environment variable holding the sending account's key (RPC).
    #[arg(long)]
    key_env: Option<String>,
    /// Folder of the embedded EVM's state (shared with chain-anchor's registry).
    #[arg(long, default_value = "chain")]
    state_dir: PathBuf,
    /// Embedded EVM only: the account to act as (default: the embedded aggregator account).
    #[arg(long = "as")]
    acting_as: Option<Address>,
    /// The deployment file.
    #[arg(long, default_value = "dao.json")]
    dao: PathBuf,
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Deploys the whole DAO from a TOML file and writes the deployment file.
    Deploy {
        /// The DAO configuration.
        #[arg(long)]
        config: PathBuf,
    },
    /// Stakes whole tokens in a role (training, inference, annotator).
    Stake {
        #[arg(long)]
        role: Role,
        #[arg(long)]
        tokens: u64,
    },
    /// Starts unbonding whole tokens of a role.
    Unstake {
        #[arg(long)]
        role: Role,
        #[arg(long)]
        tokens: u64,
    },
    /// Withdraws a role's unbonded stake.
    Withdraw {
        #[arg(long)]
        role: Role,
    },
    /// Delegates voting power (to yourself to vote directly).
    Delegate {
        #[arg(long)]
        to: Address,
    },
    /// Releases vested tokens of the team or investor wallet to its beneficiary.
    ClaimVesting {
        /// `team` or `investors`.
        #[arg(long)]
        wallet: String,
    },
    /// Prints an address's membership in a role.
    Membership {
        #[arg(long)]
        address: Address,
        #[arg(long)]
        role: Role,
    },
    /// Proposes promoting an anchored checkpoint to be the federation's current model: from
    /// its manifest (`--manifest rounds/<round>.json`) or from its fields.
    ProposePromotion {
        /// An anchored checkpoint manifest (fl-aggregator's `rounds/<round>.json`).
        #[arg(long, conflicts_with_all = ["federation", "round", "params_hash", "cid"])]
        manifest: Option<PathBuf>,
        /// Federation name (as in the federation file).
        #[arg(long, required_unless_present = "manifest")]
        federation: Option<String>,
        #[arg(long, required_unless_present = "manifest")]
        round: Option<u64>,
        /// SHA-256 of the parameters (0x + 64 hex digits), as anchored.
        #[arg(long, required_unless_present = "manifest")]
        params_hash: Option<B256>,
        /// CID of the parameters, as anchored.
        #[arg(long, required_unless_present = "manifest")]
        cid: Option<String>,
        #[arg(long, default_value = "")]
        note: String,
    },
    /// Proposes a federation's new training-configuration hash.
    ProposeConfig {
        #[arg(long)]
        federation: String,
        #[arg(long)]
        config_hash: B256,
        #[arg(long, default_value = "")]
        note: String,
    },
    /// Proposes a new reward split (basis points summing to 10000).
    ProposeSplit {
        #[arg(long)]
        data: u16,
        #[arg(long)]
        training: u16,
        #[arg(long)]
        inference: u16,
        #[arg(long, default_value = "")]
        note: String,
    },
    /// Votes on a proposal: for, against or abstain.
    Vote {
        #[arg(long)]
        id: U256,
        #[arg(long)]
        support: String,
        #[arg(long)]
        reason: Option<String>,
    },
    /// Queues a succeeded proposal in the timelock.
    Queue {
        #[arg(long)]
        id: U256,
    },
    /// Executes a queued proposal after the timelock delay.
    Execute {
        #[arg(long)]
        id: U256,
    },
    /// Cancels a proposal (the guardian; the proposer while pending).
    Cancel {
        #[arg(long)]
        id: U256,
    },
    /// Prints each proposal's state and time left (or one proposal's).
    Status {
        #[arg(long)]
        id: Option<U256>,
    },
    /// Prints a federation's current model.
    CurrentModel {
        #[arg(long)]
        federation: String,
    },
    /// Moves the clock forward (embedded EVM, or anvil).
    AdvanceTime {
        #[arg(long)]
        seconds: u64,
    },
    /// Prints an epoch's reward root, total and each member's index, amount and proof.
    RewardRoot {
        /// JSON rewards file: [{"account": "0x…", "amount": "<base units>"}].
        #[arg(long)]
        rewards: PathBuf,
    },
    /// Signs an epoch's root as a QA validator (prints the signature; sends nothing).
    SignRoot {
        #[arg(long)]
        rewards: PathBuf,
        #[arg(long)]
        epoch: u64,
        /// Claim deadline (unix seconds).
        #[arg(long)]
        deadline: u64,
        /// The validator's key file.
        #[arg(long)]
        validator_key_file: PathBuf,
    },
    /// Posts an epoch's root with a quorum of validator signatures.
    PostRoot {
        #[arg(long)]
        rewards: PathBuf,
        #[arg(long)]
        epoch: u64,
        #[arg(long)]
        deadline: u64,
        /// One validator signature (repeat for each).
        #[arg(long = "signature", required = true)]
        signatures: Vec<Bytes>,
    },
    /// Claims the sender's reward of an epoch.
    ClaimReward {
        #[arg(long)]
        rewards: PathBuf,
        #[arg(long)]
        epoch: u64,
    },
    /// Registers a batch of contributed records (staked annotators): every file of RECORDS is
    /// one record's bytes (its CID's digest is their SHA-256); prints the batch's root and index.
    RegisterBatch {
        /// A folder of record files (at most 1 MiB each).
        #[arg(long)]
        records: PathBuf,
        /// Where the records can be fetched (an `ipfs://` CAR, a content-store URL).
        #[arg(long)]
        location: String,
    },
    /// Lists the registered data batches, in order, from the registry's events.
    Batches,
    /// Returns an epoch's unclaimed rest to the training pool after its deadline.
    SweepEpoch {
        #[arg(long)]
        epoch: u64,
    },
    /// Cancels an epoch's root during its challenge window (guardian or timelock).
    CancelRoot {
        #[arg(long)]
        epoch: u64,
    },
    /// Signs a slashing verdict as a QA validator (prints the signature; sends nothing).
    SignVerdict {
        #[arg(long)]
        member: Address,
        /// Content hash of the QA evidence.
        #[arg(long)]
        evidence: B256,
        /// Fraction in basis points (must be the governed one).
        #[arg(long)]
        fraction_bps: u16,
        /// Last time the verdict may be posted (unix seconds).
        #[arg(long)]
        deadline: u64,
        #[arg(long)]
        validator_key_file: PathBuf,
    },
    /// Posts a slashing verdict with a quorum of validator signatures (prints its id).
    PostVerdict {
        #[arg(long)]
        member: Address,
        #[arg(long)]
        evidence: B256,
        #[arg(long)]
        fraction_bps: u16,
        #[arg(long)]
        deadline: u64,
        #[arg(long = "signature", required = true)]
        signatures: Vec<Bytes>,
    },
    /// Executes a verdict after its challenge window (slash, burn, jail).
    ExecuteVerdict {
        #[arg(long)]
        id: B256,
    },
    /// Cancels a verdict during its challenge window (guardian or timelock).
    CancelVerdict {
        #[arg(long)]
        id: B256,
    },
    /// Pays a fee: half burnt, half to the inference pool.
    SplitFee {
        /// Whole tokens.
        #[arg(long)]
        tokens: u64,
    },
}

fn backend(cli: &Cli) -> anyhow::Result<Backend> {
    match &cli.rpc {
        Some(url) => {
            let key = match (&cli.key_file, &cli.key_env) {
                (Some(p), None) => KeySource::File(p.clone()),
                (None, Some(v)) => KeySource::Env(v.clone()),
                _ => bail!("an RPC chain needs --key-file or --key-env"),
            };
            if cli.acting_as.is_some() {
                bail!("--as works on the embedded EVM only; on an RPC chain the key decides");
            }
            Ok(Backend::rpc(url, &key)?)
        }
        None => {
            let anchor = EmbeddedAnchor::open(&cli.state_dir)?;
            let sender = cli.acting_as.unwrap_or_else(EmbeddedAnchor::default_sender);
            Ok(Backend::embedded(&anchor, sender))
        }
    }
}

#[tokio::main(flavor = "current_thread")]
async fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    let backend = backend(&cli)?;
    if let Command::Deploy { config } = &cli.command {
        let config = DaoConfig::load(config)?;
        let deployment = dao::deploy(&config, &backend).await?;
        deployment.save(&cli.dao)?;
        println!("{}", serde_json::to_string_pretty(&deployment)?);
        return Ok(());
    }
    let deployment = DaoDeployment::load(&cli.dao).with_context(|| {
        format!(
            "reading {} (run `daofl-dao deploy` first)",
            cli.dao.display()
        )
    })?;
    let dao = Dao::new(backend, deployment);
    let done = |r: dao::TxReceipt| {
        println!(
            "ok: tx {} in block {}, {} gas",
            r.tx_hash, r.block_number, r.gas_used
        )
    };
    match cli.command {
        Command::Deploy { .. } => unreachable!("handled above"),
        Command::Stake { role, tokens: n } => done(dao.stake(role, tokens(n)).await?),
        Command::Unstake { role, tokens: n } => done(dao.unstake(role, tokens(n)).await?),
        Command::Withdraw { role } => done(dao.withdraw(role).await?),
        Command::Delegate { to } => done(dao.delegate(to).await?),
        Command::ClaimVesting { wallet } => {
            let d = dao.deployment();
            let address = match wallet.as_str() {
                "team" => d.team_vesting,
                "investors" => d.investor_vesting,
                other => bail!("--wallet {other:?}: expected team or investors"),
            };
            done(dao.claim_vesting(address).await?);
        }
        Command::Membership { address, role } => {
            let m = dao.membership(address, role).await?;
            println!("{}", serde_json::to_string(&m)?);
        }
        Command::ProposePromotion {
            manifest,
            federation,
            round,
            params_hash,
            cid,
            note,
        } => {
            let p = match (manifest, federation, round, params_hash, cid) {
                (Some(path), ..) => {
                    // Manifests are far below 64 MiB (fl-aggregator's own limit).
                    use std::io::Read;
                    let mut bytes = Vec::new();
                    std::fs::File::open(&path)
                        .and_then(|f| f.take(64 << 20).read_to_end(&mut bytes))
                        .with_context(|| format!("reading {}", path.display()))?;
                    Promotion::from_manifest_json(&bytes)?
                }
                (None, Some(federation), Some(round), Some(params_hash), Some(cid)) => Promotion {
                    federation: FederationId::from_name(&federation),
                    round,
                    params_hash,
                    cid,
                },
                _ => bail!("give --manifest, or --federation, --round, --params-hash and --cid"),
            };
            let proposal = dao.propose_promotion(&p, &note).await?;
            println!("proposal {:#x}", proposal.id);
        }
        Command::ProposeConfig {
            federation,
            config_hash,
            note,
        } => {
            let proposal = dao
                .propose_training_config(FederationId::from_name(&federation), config_hash, &note)
                .await?;
            println!("proposal {:#x}", proposal.id);
        }
        Command::ProposeSplit {
            data,
            training,
            inference,
            note,
        } => {
            let proposal = dao
                .propose_reward_split(
                    RewardSplit {
                        data,
                        training,
                        inference,
                    },
                    &note,
                )
                .await?;
            println!("proposal {:#x}", proposal.id);
        }
        Command::Vote {
            id,
            support,
            reason,
        } => {
            let support = match support.as_str() {
                "for" => Support::For,
                "against" => Support::Against,
                "abstain" => Support::Abstain,
                other => bail!("--support {other:?}: expected for, against or abstain"),
            };
            let r = match reason {
                Some(reason) => dao.vote_with_reason(id, support, &reason).await?,
                None => dao.vote(id, support).await?,
            };
            done(r);
        }
        Command::Queue { id } => done(dao.queue(&dao.proposal(id).await?).await?),
        Command::Execute { id } => done(dao.execute(&dao.proposal(id).await?).await?),
        Command::Cancel { id } => done(dao.cancel(&dao.proposal(id).await?).await?),
        Command::Status { id } => {
            let ids = match id {
                Some(id) => vec![id],
                None => dao.proposals().await?.into_iter().map(|p| p.id).collect(),
            };
            for id in ids {
                println!("{}", dao.status(id).await?);
            }
        }
        Command::CurrentModel { federation } => {
            match dao
                .current_model(FederationId::from_name(&federation))
                .await?
            {
                Some(m) => println!("{}", serde_json::to_string_pretty(&m)?),
                None => println!("no model promoted for {federation}"),
            }
        }
        Command::AdvanceTime { seconds } => {
            println!("chain time {}", dao.advance_time(seconds).await?)
        }
        Command::RewardRoot { rewards } => {
            let tree = RewardTree::load(&rewards)?;
            println!("root {}\ntotal {}", tree.root(), tree.total());
            for (account, _) in tree.rewards() {
                if let Some((index, amount, proof)) = tree.proof(account) {
                    println!(
                        "{index} {account} {amount} {}",
                        serde_json::to_string(&proof)?
                    );
                }
            }
        }
        Command::SignRoot {
            rewards,
            epoch,
            deadline,
            validator_key_file,
        } => {
            let tree = RewardTree::load(&rewards)?;
            let key = KeySource::File(validator_key_file).load()?;
            let msg = RootMessage::of(epoch, &tree, deadline);
            let domain = dao.settlement_domain().await?;
            println!("{}", settle::sign_root(&key, &domain, &msg)?);
        }
        Command::PostRoot {
            rewards,
            epoch,
            deadline,
            signatures,
        } => {
            let tree = RewardTree::load(&rewards)?;
            let msg = RootMessage::of(epoch, &tree, deadline);
            done(dao.post_root(&msg, &signatures).await?);
        }
        Command::ClaimReward { rewards, epoch } => {
            let tree = RewardTree::load(&rewards)?;
            done(dao.claim_reward(epoch, &tree).await?);
        }
        Command::RegisterBatch { records, location } => {
            let batch = record_batch(&records)?;
            let (receipt, index) = dao.register_batch(&batch, &location).await?;
            println!(
                "batch {index}: {} records, root {}",
                batch.len(),
                batch.root()
            );
            done(receipt);
        }
        Command::Batches => {
            for b in dao.registered_batches().await? {
                println!(
                    "{} {} by {}: {} records at {}",
                    b.index, b.root, b.contributor, b.records, b.location
                );
            }
        }
        Command::SweepEpoch { epoch } => done(dao.sweep_epoch(epoch).await?),
        Command::CancelRoot { epoch } => done(dao.cancel_root(epoch).await?),
        Command::SignVerdict {
            member,
            evidence,
            fraction_bps,
            deadline,
            validator_key_file,
        } => {
            let key = KeySource::File(validator_key_file).load()?;
            let msg = VerdictMessage {
                member,
                evidence,
                fraction_bps,
                deadline,
            };
            let domain = dao.settlement_domain().await?;
            println!("{}", settle::sign_verdict(&key, &domain, &msg)?);
        }
        Command::PostVerdict {
            member,
            evidence,
            fraction_bps,
            deadline,
            signatures,
        } => {
            let msg = VerdictMessage {
                member,
                evidence,
                fraction_bps,
                deadline,
            };
            let (r, id) = dao.post_verdict(&msg, &signatures).await?;
            println!("verdict {id}");
            done(r);
        }
        Command::ExecuteVerdict { id } => done(dao.execute_verdict(id).await?),
        Command::CancelVerdict { id } => done(dao.cancel_verdict(id).await?),
        Command::SplitFee { tokens: n } => done(dao.split_fee(tokens(n)).await?),
    }
    Ok(())
}

/// Largest record file read by `register-batch`.
const MAX_RECORD_BYTES: u64 = 1 << 20;

/// The batch of the record files in `dir` (each file one record; digest = SHA-256 of its bytes).
fn record_batch(dir: &std::path::Path) -> anyhow::Result<dao::data::RecordBatch> {
    use std::io::Read as _;
    let mut digests = Vec::new();
    let entries = std::fs::read_dir(dir)
        .map_err(|e| anyhow::anyhow!("cannot read {}: {e}", dir.display()))?;
    for entry in entries {
        let path = entry?.path();
        if !path.is_file() {
            continue;
        }
        let mut bytes = Vec::new();
        std::fs::File::open(&path)?
            .take(MAX_RECORD_BYTES + 1)
            .read_to_end(&mut bytes)?;
        if bytes.len() as u64 > MAX_RECORD_BYTES {
            anyhow::bail!("{} is larger than {MAX_RECORD_BYTES} bytes", path.display());
        }
        digests.push(dao::chain_anchor::params_hash(&bytes));
    }
    Ok(dao::data::RecordBatch::new(&digests)?)
}
