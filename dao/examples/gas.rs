//! Gas of every DAO operation, measured on a real anvil, printed as a markdown table with the
//! ratio to OpenZeppelin 5.4 reference figures (shared/ANCHORS.md: OZ 5.4, solc 0.8.28, 200 runs,
//! cancun, anvil 1.7.1).
//!
//! ```text
//! cd chain-anchor && npm ci && cd ..
//! DAOFL_ANVIL=$PWD/chain-anchor/node_modules/@foundry-rs/anvil-linux-amd64/bin/anvil \
//!   cargo run -p dao --example gas
//! ```

use std::path::PathBuf;

use alloy::node_bindings::Anvil;
use alloy::primitives::{B256, U256, keccak256};
use alloy::signers::local::PrivateKeySigner;
use alloy::sol_types::SolCall;
use chain_anchor::FederationId;
use chain_anchor::bindings::CheckpointRegistry;
use dao::bindings::DaoGovernor;
use dao::{Action, Backend, Dao, DaoConfig, Promotion, Role, Support, YEAR, deploy, tokens};

struct Row {
    what: String,
    gas: u64,
    reference: Option<(f64, &'static str)>,
}

#[tokio::main(flavor = "current_thread")]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let anvil_path = std::env::var_os("DAOFL_ANVIL")
        .map(PathBuf::from)
        .unwrap_or_else(|| {
            PathBuf::from(env!("CARGO_MANIFEST_DIR"))
                .join("../chain-anchor/node_modules/@foundry-rs/anvil-linux-amd64/bin/anvil")
        });
    let anvil = Anvil::new()
        .path(anvil_path)
        .port(0u16)
        .args(["--host", "127.0.0.1"])
        .timeout(30_000)
        .try_spawn()?;
    let keys: Vec<PrivateKeySigner> = anvil
        .keys()
        .iter()
        .map(|k| PrivateKeySigner::from_bytes(&B256::from_slice(&k.to_bytes())))
        .collect::<Result<_, _>>()?;
    let root = Backend::rpc_with_signer(&anvil.endpoint(), keys[0].clone(), Default::default())?;
    let now = root.now().await?;
    let config = DaoConfig::from_toml_str(&format!(
        "[allocation]\nteam = \"{}\"\ninvestors = \"{}\"\nvesting_start = {}\n\
         [governance]\nguardian = \"{}\"\nquorum_floor_tokens = 1000000\n\
         [staking]\nslasher = \"{}\"\n",
        keys[3].address(),
        keys[4].address(),
        now - 2 * YEAR,
        keys[1].address(),
        keys[2].address()
    ))?;
    let deployment = deploy(&config, &root).await?;
    let actor = |i: usize| -> Result<Dao, dao::Error> {
        Ok(Dao::new(
            root.with_signer(keys[i].clone())?,
            deployment.clone(),
        ))
    };
    let (deployer, guardian, slasher, team) = (actor(0)?, actor(1)?, actor(2)?, actor(3)?);
    let (m0, m1, m2) = (actor(5)?, actor(6)?, actor(7)?);
    let mut rows = Vec::new();
    let mut row = |what: &str, gas: u64, reference: Option<(f64, &'static str)>| {
        rows.push(Row {
            what: what.to_owned(),
            gas,
            reference,
        })
    };

    for (label, reference) in [
        ("DaoGovernor", Some((4_200_000.0, "Governor 4.20M"))),
        (
            "DaoTimelock",
            Some((1_580_000.0, "TimelockController 1.58M")),
        ),
        (
            "ProposalToken",
            Some((1_800_000.0, "ERC20Votes token 1.80M")),
        ),
        ("TeamVesting", Some((600_000.0, "VestingWallet 0.60M"))),
        ("InvestorVesting", Some((600_000.0, "VestingWallet 0.60M"))),
        ("DataPool", None),
        ("TrainingPool", None),
        ("InferencePool", None),
        ("ModelRegistry", None),
        ("Staking", None),
        ("CheckpointRegistry", None),
        ("Settlement", None),
        ("InferenceSettlement", None),
        ("DataSettlement", None),
        ("DataRegistry", None),
        ("InferenceFees", None),
        ("AnnotationBook", None),
    ] {
        row(
            &format!("deploy {label}"),
            deployment.deploy_gas[label],
            reference,
        );
    }

    let r = team.claim_vesting(deployment.team_vesting).await?;
    row(
        "VestingWallet release (first)",
        r.gas_used,
        Some((103_000.0, "release 86-103k (upper)")),
    );
    for (m, n) in [(&m0, 2_000_000u64), (&m1, 500_000), (&m2, 20_000)] {
        team.transfer(m.sender(), tokens(n)).await?;
    }
    let r = m0.delegate(m0.sender()).await?;
    row(
        "delegate (self, first)",
        r.gas_used,
        Some((95_500.0, "delegate 95.5k")),
    );
    m1.delegate(m1.sender()).await?;

    let r = m2.stake(Role::Training, tokens(10_000)).await?;
    row("stake (first, auto-delegates)", r.gas_used, None);
    let r = m2.stake(Role::Training, tokens(1_000)).await?;
    row("stake (again)", r.gas_used, None);
    let r = m2.unstake(Role::Training, tokens(5_000)).await?;
    row("unstake", r.gas_used, None);
    let r = slasher
        .slash(
            m2.sender(),
            Role::Training,
            tokens(1_000),
            keccak256("verdict"),
        )
        .await?;
    row("slash (burns)", r.gas_used, None);
    let r = slasher
        .jail(m2.sender(), now + 10 * YEAR, keccak256("verdict"))
        .await?;
    row("jail", r.gas_used, None);
    m2.advance_time(config.staking.unbonding_secs + 1).await?;
    let r = m2.withdraw(Role::Training).await?;
    row("withdraw after unbonding", r.gas_used, None);

    // Governance: a promotion, and a proposal whose action costs next to nothing.
    let fed = FederationId::from_name("gas");
    let promotion = Promotion {
        federation: fed,
        round: 1,
        params_hash: keccak256("params"),
        cid: "bafkreigasround0001".into(),
    };
    deployer
        .send_raw(
            deployment.checkpoint_registry,
            CheckpointRegistry::anchorCall {
                federation: fed.0,
                round: 1,
                paramsHash: promotion.params_hash,
                cid: promotion.cid.clone(),
                participantsRoot: keccak256("p"),
                epsilonMicros: 1,
            }
            .abi_encode()
            .into(),
        )
        .await?;
    m0.advance_time(10).await?;
    let noop = Action {
        target: deployment.governor,
        value: U256::ZERO,
        calldata: DaoGovernor::setQuorumFloorCall {
            floor: tokens(1_000_000),
        }
        .abi_encode()
        .into(),
    };
    let promote = m0
        .propose(
            vec![m0.promotion_action(&promotion)],
            "Promote round 1".into(),
        )
        .await?;
    // The library's propose returns the proposal, not the receipt: measure a second proposal
    // sent as a raw call.
    let probe = dao::Proposal::new(vec![noop.clone()], "Set the quorum floor".into());
    let r = m0
        .send_raw(
            deployment.governor,
            DaoGovernor::proposeCall {
                targets: probe.targets(),
                values: probe.values(),
                calldatas: probe.calldatas(),
                description: probe.description.clone(),
            }
            .abi_encode()
            .into(),
        )
        .await?;
    row(
        "propose (1 action, short description)",
        r.gas_used,
        Some((69_300.0, "propose 69.3k")),
    );
    let cancelled = dao::Proposal::new(vec![noop.clone()], "To be cancelled".into());
    m0.send_raw(
        deployment.governor,
        DaoGovernor::proposeCall {
            targets: cancelled.targets(),
            values: cancelled.values(),
            calldatas: cancelled.calldatas(),
            description: cancelled.description.clone(),
        }
        .abi_encode()
        .into(),
    )
    .await?;

    m0.advance_time(config.governance.voting_delay_secs + 1)
        .await?;
    let r = m1.vote(promote.id, Support::For).await?;
    row(
        "first For vote (no quorum yet)",
        r.gas_used,
        Some((99_300.0, "first For vote 99.3k")),
    );
    let r = m0.vote(promote.id, Support::For).await?;
    row(
        "vote reaching quorum",
        r.gas_used,
        Some((106_100.0, "vote reaching quorum 106.1k")),
    );
    let r = m2
        .vote_with_reason(promote.id, Support::For, "agreed")
        .await?;
    row(
        "later vote with reason",
        r.gas_used,
        Some((69_900.0, "later vote with reason 69.9k")),
    );
    for p in [&probe, &cancelled] {
        m0.vote(p.id, Support::For).await?;
    }
    m0.advance_time(config.governance.voting_period_secs + 1)
        .await?;
    let r = m0.queue(&promote).await?;
    row(
        "queue (promotion)",
        r.gas_used,
        Some((147_800.0, "queue 147.8k")),
    );
    let r = m0.queue(&probe).await?;
    row(
        "queue (quorum-floor action)",
        r.gas_used,
        Some((147_800.0, "queue 147.8k")),
    );
    m0.queue(&cancelled).await?;
    let r = guardian.cancel(&cancelled).await?;
    row(
        "guardian cancel while queued",
        r.gas_used,
        Some((76_500.0, "guardian cancel 76.5k")),
    );
    m0.advance_time(config.governance.timelock_delay_secs + 1)
        .await?;
    let r = m0.execute(&probe).await?;
    row(
        "execute (action: setQuorumFloor to the same value)",
        r.gas_used,
        Some((118_400.0, "execute 118.4k + action")),
    );
    let r = m0.execute(&promote).await?;
    row("execute (action: promote a checkpoint)", r.gas_used, None);

    // Inference fees: a requester prepays, signs receipts; a gateway settles them in batches.
    let requester = actor(8)?;
    team.transfer(requester.sender(), tokens(100)).await?;
    let r = requester.deposit_fees(tokens(10)).await?;
    row("deposit fees (approve + deposit, first)", r.gas_used, None);
    let domain = requester.fees_domain().await?;
    let (_, fee) = requester.fee_params().await?;
    let deadline = requester.now().await? + 86_400;
    let receipt =
        |nonce: u64| -> Result<(dao::fees::Receipt, alloy::primitives::Bytes), dao::Error> {
            let receipt = dao::fees::Receipt {
                requester: keys[8].address(),
                gateway: keys[9].address(),
                requestHash: keccak256(nonce.to_be_bytes()),
                fee,
                nonce: U256::from(nonce),
                deadline,
            };
            let signature = dao::fees::sign_receipt(&keys[8], &domain, &receipt)?;
            Ok((receipt, signature))
        };
    let gateway = actor(9)?;
    for (n, first) in [(1u64, 0u64), (3, 1), (32, 4)] {
        let batch: Vec<_> = (first..first + n).map(receipt).collect::<Result<_, _>>()?;
        let outcome = gateway.settle_receipts(&batch).await?;
        assert_eq!(outcome.settled, n as usize);
        row(
            &format!(
                "settle {n} receipt(s) in one batch ({} per receipt)",
                outcome.tx.gas_used / n
            ),
            outcome.tx.gas_used,
            None,
        );
    }

    println!("| operation | gas | OZ reference (ANCHORS.md) | ratio |");
    println!("|---|---:|---|---:|");
    for r in rows {
        let (reference, ratio) = match r.reference {
            Some((gas, text)) => (text.to_owned(), format!("{:.3}", r.gas as f64 / gas)),
            None => ("-".to_owned(), "-".to_owned()),
        };
        println!("| {} | {} | {} | {} |", r.what, r.gas, reference, ratio);
    }
    Ok(())
}
