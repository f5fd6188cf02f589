//! The backend-independent suite: written once, run against anvil (RPC) and the embedded EVM.

use alloy::primitives::{Address, B256, U256, keccak256};
use alloy::sol_types::SolCall;
use chain_anchor::FederationId;
use dao::bindings::{DaoGovernor, DaoTimelock, ModelRegistry};
use dao::{DAY, Error, Membership, ProposalState, RewardSplit, Role, Support, YEAR};

use crate::support::{World, assert_revert, tok};

/// Every scenario, in order, on one deployment.
pub async fn run(w: &World) {
    allocation(w).await;
    standard_interfaces(w).await;
    vesting(w).await;
    fund_members(w).await;
    staking(w).await;
    promotion_flow(w).await;
    guardian_cancels(w).await;
    bad_promotions(w).await;
    quorum_and_threshold(w).await;
    config_and_split(w).await;
    validators_by_governance(w).await;
    crate::hostile::run(w).await;
}

/// The supply is exactly 1e9 tokens, minted into the allocation with each share right.
async fn allocation(w: &World) {
    let d = &w.deployment;
    let dao = &w.deployer;
    assert_eq!(dao.total_supply().await.unwrap(), tok(1_000_000_000));
    let shares = [
        (d.data_pool, 400_000_000),
        (d.training_pool, 300_000_000),
        (d.inference_pool, 200_000_000),
        (d.timelock, 50_000_000),
        (d.team_vesting, 30_000_000),
        (d.investor_vesting, 20_000_000),
    ];
    let mut sum = U256::ZERO;
    for (holder, n) in shares {
        let b = dao.balance_of(holder).await.unwrap();
        assert_eq!(b, tok(n), "share of {holder}");
        sum += b;
    }
    assert_eq!(sum, tok(1_000_000_000));
    // Nothing is votable before anything leaves the allocation.
    assert_eq!(dao.votable_supply().await.unwrap(), U256::ZERO);
    assert_eq!(d.deploy_gas.len(), if w.embedded { 16 } else { 17 });
}

/// What Tally and wallets read: ERC-165, COUNTING_MODE, clock, CLOCK_MODE, the timelock's roles.
async fn standard_interfaces(w: &World) {
    let d = &w.deployment;
    let b = w.deployer.backend();
    let view = |to: Address, data: Vec<u8>| async move { b.call(to, data.into()).await.unwrap() };
    let out = view(d.governor, DaoGovernor::COUNTING_MODECall {}.abi_encode()).await;
    assert_eq!(
        DaoGovernor::COUNTING_MODECall::abi_decode_returns(&out).unwrap(),
        "support=bravo&quorum=for,abstain"
    );
    for to in [d.governor, d.token] {
        let out = view(to, DaoGovernor::CLOCK_MODECall {}.abi_encode()).await;
        assert_eq!(
            DaoGovernor::CLOCK_MODECall::abi_decode_returns(&out).unwrap(),
            "mode=timestamp"
        );
        let out = view(to, DaoGovernor::clockCall {}.abi_encode()).await;
        let clock = DaoGovernor::clockCall::abi_decode_returns(&out).unwrap();
        let now = b.now().await.unwrap();
        assert!(
            u64::try_from(clock).unwrap().abs_diff(now) <= 2,
            "clock {clock} now {now}"
        );
    }
    for (id, expected) in [
        ([0x01, 0xff, 0xc9, 0xa7], true),  // ERC-165
        ([0x4e, 0x23, 0x12, 0xe0], true),  // IERC1155Receiver
        ([0xff, 0xff, 0xff, 0xff], false), // never
    ] {
        let out = view(
            d.governor,
            DaoGovernor::supportsInterfaceCall {
                interfaceId: id.into(),
            }
            .abi_encode(),
        )
        .await;
        assert_eq!(
            DaoGovernor::supportsInterfaceCall::abi_decode_returns(&out).unwrap(),
            expected
        );
    }
    // The timelock: the Governor is the only proposer, canceller and executor; nobody else,
    // and not the deployer, holds a role.
    let role = |name: &str| keccak256(name);
    let has = |r: B256, account: Address| async move {
        let out = view(
            d.timelock,
            DaoTimelock::hasRoleCall { role: r, account }.abi_encode(),
        )
        .await;
        DaoTimelock::hasRoleCall::abi_decode_returns(&out).unwrap()
    };
    for r in ["PROPOSER_ROLE", "CANCELLER_ROLE", "EXECUTOR_ROLE"] {
        assert!(has(role(r), d.governor).await, "{r}");
        for other in [d.deployer, w.guardian.sender(), Address::ZERO] {
            assert!(!has(role(r), other).await, "{r} of {other}");
        }
    }
    assert!(
        has(B256::ZERO, d.timelock).await,
        "the timelock administers itself"
    );
    assert!(
        !has(B256::ZERO, d.deployer).await,
        "the deployer keeps no admin role"
    );
}

/// The vesting wallets and the data pool release linearly.
async fn vesting(w: &World) {
    let d = &w.deployment;
    let dao = &w.deployer;
    let start = w.config.allocation.vesting_start.unwrap();
    for (years_x2, team, investors) in [
        (0u64, 0u64, 0u64),
        (1, 3_750_000, 5_000_000),
        (2, 7_500_000, 10_000_000),
        (4, 15_000_000, 20_000_000),
        (8, 30_000_000, 20_000_000),
        (12, 30_000_000, 20_000_000),
    ] {
        let t = start + years_x2 * YEAR / 2;
        assert_eq!(
            dao.vested_amount(d.team_vesting, t).await.unwrap(),
            tok(team),
            "team at {years_x2}/2 y"
        );
        assert_eq!(
            dao.vested_amount(d.investor_vesting, t).await.unwrap(),
            tok(investors),
            "investors at {years_x2}/2 y"
        );
    }
    assert_eq!(
        dao.vested_amount(d.team_vesting, start - 1).await.unwrap(),
        U256::ZERO
    );
    let deployed_at = {
        // The pool's release starts at the deployment's block time.
        let out = dao
            .backend()
            .call(
                d.data_pool,
                dao::bindings::RewardPool::startCall {}.abi_encode().into(),
            )
            .await
            .unwrap();
        dao::bindings::RewardPool::startCall::abi_decode_returns(&out).unwrap()
    };
    for (years, released) in [
        (0u64, 0u64),
        (1, 40_000_000),
        (5, 200_000_000),
        (10, 400_000_000),
        (20, 400_000_000),
    ] {
        assert_eq!(
            dao.data_pool_released(deployed_at + years * YEAR)
                .await
                .unwrap(),
            tok(released),
            "data pool after {years} y"
        );
    }
    // Claiming releases exactly what has vested at the claim's block.
    w.team.claim_vesting(d.team_vesting).await.unwrap();
    let at = dao.now().await.unwrap();
    let team_balance = dao.balance_of(w.team.sender()).await.unwrap();
    assert_eq!(
        team_balance,
        dao.vested_amount(d.team_vesting, at).await.unwrap()
    );
    assert!(
        team_balance >= tok(15_000_000) && team_balance < tok(15_001_000),
        "{team_balance} at {at}, start {start}"
    );
    w.investors.claim_vesting(d.investor_vesting).await.unwrap();
    assert_eq!(
        dao.balance_of(w.investors.sender()).await.unwrap(),
        tok(20_000_000)
    );
    assert_eq!(
        dao.balance_of(d.investor_vesting).await.unwrap(),
        U256::ZERO,
        "fully vested"
    );
    // What left the allocation is votable now.
    assert_eq!(
        dao.votable_supply().await.unwrap(),
        team_balance + tok(20_000_000)
    );
}

/// Members get tokens from the team: 2,000,000 / 1,000,000 / 20,000 / 20,000 / 5,000.
async fn fund_members(w: &World) {
    for (m, n) in w
        .members
        .iter()
        .zip([2_000_000u64, 1_000_000, 20_000, 20_000, 5_000])
    {
        w.team.transfer(m.sender(), tok(n)).await.unwrap();
        assert_eq!(m.balance_of(m.sender()).await.unwrap(), tok(n));
    }
}

/// Stake gates membership; unbonding stake can be slashed; slashes burn exactly.
async fn staking(w: &World) {
    let [_, _, m2, m3, m4] = &w.members[..] else {
        panic!("five members")
    };
    let a2 = m2.sender();
    assert_eq!(
        m2.membership(a2, Role::Training).await.unwrap(),
        Membership::NoStake
    );
    assert_eq!(m2.delegates(a2).await.unwrap(), Address::ZERO);

    // 10,000 for training: a member; votes kept and auto-delegated.
    m2.stake(Role::Training, tok(10_000)).await.unwrap();
    assert_eq!(
        m2.membership(a2, Role::Training).await.unwrap(),
        Membership::Ok { stake: tok(10_000) }
    );
    assert_eq!(
        m2.delegates(a2).await.unwrap(),
        a2,
        "first stake self-delegates"
    );
    assert_eq!(
        m2.votes(a2).await.unwrap(),
        tok(20_000),
        "staked tokens keep their votes"
    );
    assert_eq!(m2.locked_of(a2).await.unwrap(), tok(10_000));
    // Locked tokens do not move.
    assert_revert(
        m2.transfer(m4.sender(), tok(10_001)).await,
        "InsufficientUnlockedBalance",
    );
    m2.transfer(m4.sender(), tok(1)).await.unwrap();
    m4.transfer(a2, tok(1)).await.unwrap();

    // 5,000 is too little for training, enough for inference; per-role minimums.
    let a3 = m3.sender();
    m3.stake(Role::Training, tok(5_000)).await.unwrap();
    assert_eq!(
        m3.membership(a3, Role::Training).await.unwrap(),
        Membership::TooLittle {
            stake: tok(5_000),
            minimum: tok(10_000)
        }
    );
    m3.stake(Role::Inference, tok(5_000)).await.unwrap();
    assert!(
        m3.membership(a3, Role::Inference)
            .await
            .unwrap()
            .is_member()
    );

    // Jailing suspends membership until its time.
    let now = w.slasher.now().await.unwrap();
    w.slasher.jail(a3, now + DAY, B256::ZERO).await.unwrap();
    assert_eq!(
        m3.membership(a3, Role::Inference).await.unwrap(),
        Membership::Jailed { until: now + DAY }
    );
    w.slasher.jail(a3, 0, B256::ZERO).await.unwrap();
    assert!(
        m3.membership(a3, Role::Inference)
            .await
            .unwrap()
            .is_member()
    );

    // Unbonding: not withdrawable early, still slashable; the slash burns exactly.
    m2.unstake(Role::Training, tok(10_000)).await.unwrap();
    assert_eq!(
        m2.membership(a2, Role::Training).await.unwrap(),
        Membership::Unbonding {
            stake: U256::ZERO,
            unbonding: tok(10_000)
        }
    );
    assert_revert(m2.withdraw(Role::Training).await, "StillUnbonding");
    let supply = m2.total_supply().await.unwrap();
    let votes = m2.votes(a2).await.unwrap();
    w.slasher
        .slash(a2, Role::Training, tok(4_000), keccak256("bad update"))
        .await
        .unwrap();
    assert_eq!(
        m2.total_supply().await.unwrap(),
        supply - tok(4_000),
        "burnt exactly"
    );
    assert_eq!(m2.votes(a2).await.unwrap(), votes - tok(4_000));
    assert_eq!(m2.balance_of(a2).await.unwrap(), tok(16_000));
    assert_eq!(m2.locked_of(a2).await.unwrap(), tok(6_000));
    m2.advance_time(w.config.staking.challenge_window_secs + 1)
        .await
        .unwrap();
    assert_revert(m2.withdraw(Role::Training).await, "StillUnbonding");
    m2.advance_time(w.config.staking.unbonding_secs - w.config.staking.challenge_window_secs)
        .await
        .unwrap();
    m2.withdraw(Role::Training).await.unwrap();
    assert_eq!(m2.locked_of(a2).await.unwrap(), U256::ZERO);
    assert_revert(m2.withdraw(Role::Training).await, "NothingToWithdraw");
    assert_eq!(
        m2.membership(a2, Role::Training).await.unwrap(),
        Membership::NoStake
    );
    // Staked again for the rest of the suite.
    m2.stake(Role::Training, tok(10_000)).await.unwrap();
}

/// Delegation of the two large holders, then a little time so it is in the past.
async fn delegate_voters(w: &World) {
    for m in &w.members[..2] {
        if m.delegates(m.sender()).await.unwrap() == Address::ZERO {
            m.delegate(m.sender()).await.unwrap();
        }
    }
    w.deployer.advance_time(10).await.unwrap();
}

async fn pass_vote(w: &World, id: U256) {
    w.deployer
        .advance_time(w.config.governance.voting_delay_secs + 1)
        .await
        .unwrap();
    assert_eq!(
        w.deployer.status(id).await.unwrap().state,
        ProposalState::Active
    );
    w.members[0].vote(id, Support::For).await.unwrap();
    w.deployer
        .advance_time(w.config.governance.voting_period_secs + 1)
        .await
        .unwrap();
    assert_eq!(
        w.deployer.status(id).await.unwrap().state,
        ProposalState::Succeeded
    );
}

/// Propose, vote, queue, execute a promotion; too early and twice revert with named errors.
async fn promotion_flow(w: &World) {
    delegate_voters(w).await;
    let fed = FederationId::from_name("suite");
    let promotion = w.anchor(fed, 1).await;
    let m0 = &w.members[0];
    assert_eq!(m0.current_model(fed).await.unwrap(), None);
    let p = m0.propose_promotion(&promotion, "round 1").await.unwrap();
    let status = m0.status(p.id).await.unwrap();
    assert_eq!(status.state, ProposalState::Pending);
    assert!(status.time_left().unwrap() > 0);
    pass_vote(w, p.id).await;
    m0.queue(&p).await.unwrap();
    let status = m0.status(p.id).await.unwrap();
    assert_eq!(status.state, ProposalState::Queued);
    assert!(status.eta >= status.now + 7 * DAY - 5, "{status}");
    // Before 7 days: the timelock refuses.
    m0.advance_time(7 * DAY - 60).await.unwrap();
    assert_revert(m0.execute(&p).await, "TimelockUnexpectedOperationState");
    m0.advance_time(61).await.unwrap();
    m0.execute(&p).await.unwrap();
    assert_eq!(
        m0.status(p.id).await.unwrap().state,
        ProposalState::Executed
    );
    let current = m0.current_model(fed).await.unwrap().expect("promoted");
    assert_eq!(
        (current.round, current.params_hash, current.cid.as_str()),
        (1, promotion.params_hash, promotion.cid.as_str())
    );
    // Twice: the Governor refuses.
    assert_revert(m0.execute(&p).await, "GovernorUnexpectedProposalState");
    // The proposal can be rebuilt from the chain by its id alone.
    assert_eq!(w.guardian.proposal(p.id).await.unwrap(), p);
    assert!(matches!(
        w.guardian.proposal(U256::from(7)).await,
        Err(Error::InvalidInput(_))
    ));
}

/// The guardian cancels a queued proposal during the delay; others cannot.
async fn guardian_cancels(w: &World) {
    let fed = FederationId::from_name("suite");
    let promotion = w.anchor(fed, 2).await;
    let m0 = &w.members[0];
    let p = m0.propose_promotion(&promotion, "round 2").await.unwrap();
    pass_vote(w, p.id).await;
    m0.queue(&p).await.unwrap();
    m0.advance_time(DAY).await.unwrap();
    assert_revert(w.members[1].cancel(&p).await, "GovernorUnableToCancel");
    w.guardian.cancel(&p).await.unwrap();
    assert_eq!(
        m0.status(p.id).await.unwrap().state,
        ProposalState::Canceled
    );
    m0.advance_time(7 * DAY).await.unwrap();
    assert_revert(m0.execute(&p).await, "GovernorUnexpectedProposalState");
    assert_eq!(m0.current_model(fed).await.unwrap().unwrap().round, 1);
}

/// Unanchored and tampered promotions pass the vote but revert at execution with the registry's
/// named error.
async fn bad_promotions(w: &World) {
    let fed = FederationId::from_name("suite");
    let good = w.anchor(fed, 3).await;
    let mut unanchored = good.clone();
    unanchored.round = 99;
    let mut tampered_params = good.clone();
    tampered_params.params_hash = keccak256("tampered");
    let mut tampered_cid = good.clone();
    tampered_cid.cid.push('x');
    let m0 = &w.members[0];
    let mut proposals = Vec::new();
    for (promotion, error) in [
        (unanchored, "CheckpointNotAnchored"),
        (tampered_params, "ParamsHashMismatch"),
        (tampered_cid, "CidMismatch"),
    ] {
        proposals.push((
            m0.propose_promotion(&promotion, error).await.unwrap(),
            error,
        ));
    }
    w.deployer
        .advance_time(w.config.governance.voting_delay_secs + 1)
        .await
        .unwrap();
    for (p, _) in &proposals {
        m0.vote(p.id, Support::For).await.unwrap();
    }
    w.deployer
        .advance_time(w.config.governance.voting_period_secs + 1)
        .await
        .unwrap();
    for (p, _) in &proposals {
        m0.queue(p).await.unwrap();
    }
    m0.advance_time(7 * DAY + 1).await.unwrap();
    for (p, error) in &proposals {
        assert_revert(m0.execute(p).await, error);
    }
    // Direct calls are refused whatever the checkpoint.
    let direct = ModelRegistry::promoteCall {
        federation: fed.0,
        round: 3,
        paramsHash: good.params_hash,
        cid: good.cid.clone(),
    };
    assert_revert(
        m0.send_raw(w.deployment.model_registry, direct.abi_encode().into())
            .await,
        "OnlyTimelock",
    );
    assert_eq!(m0.current_model(fed).await.unwrap().unwrap().round, 1);
}

/// Quorum (4% of the votable supply) and the proposal threshold (100,000) are enforced.
async fn quorum_and_threshold(w: &World) {
    let fed = FederationId::from_name("suite");
    let promotion = w.anchor(fed, 4).await;
    let [m0, m1, _, m3, _] = &w.members[..] else {
        panic!("five members")
    };
    // m3 holds 20,000 votes: below the threshold.
    assert_revert(
        m3.propose_promotion(&promotion, "too small").await,
        "GovernorInsufficientProposerVotes",
    );
    // m1's 1,000,000 votes alone do not reach 4% of ~35,000,000 votable tokens.
    let p = m1.propose_promotion(&promotion, "quorum").await.unwrap();
    w.deployer
        .advance_time(w.config.governance.voting_delay_secs + 1)
        .await
        .unwrap();
    m1.vote(p.id, Support::For).await.unwrap();
    let status = m1.status(p.id).await.unwrap();
    assert!(
        status.quorum > tok(1_000_000) && status.quorum < tok(1_500_000),
        "{status}"
    );
    assert_revert(m1.vote(p.id, Support::For).await, "GovernorAlreadyCastVote");
    w.deployer
        .advance_time(w.config.governance.voting_period_secs + 1)
        .await
        .unwrap();
    assert_eq!(
        m1.status(p.id).await.unwrap().state,
        ProposalState::Defeated
    );
    assert_revert(m1.queue(&p).await, "GovernorUnexpectedProposalState");
    // A vote after the end is refused.
    assert_revert(
        m0.vote(p.id, Support::For).await,
        "GovernorUnexpectedProposalState",
    );
}

/// A training-configuration change and a reward-split change are one proposal each.
async fn config_and_split(w: &World) {
    let fed = FederationId::from_name("suite");
    let m0 = &w.members[0];
    let config_hash = keccak256("model = mlp; strategy = fedavg; epsilon = 3");
    let split = RewardSplit {
        data: 5_000,
        training: 3_000,
        inference: 2_000,
    };
    let a = m0
        .propose_training_config(fed, config_hash, "")
        .await
        .unwrap();
    let b = m0.propose_reward_split(split, "").await.unwrap();
    let c = m0
        .propose_min_stake(Role::Annotator, tok(2_500), "")
        .await
        .unwrap();
    assert!(matches!(
        m0.propose_reward_split(
            RewardSplit {
                data: 1,
                training: 1,
                inference: 1
            },
            ""
        )
        .await,
        Err(Error::InvalidInput(_))
    ));
    w.deployer
        .advance_time(w.config.governance.voting_delay_secs + 1)
        .await
        .unwrap();
    for p in [&a, &b, &c] {
        m0.vote_with_reason(p.id, Support::For, "yes")
            .await
            .unwrap();
    }
    w.deployer
        .advance_time(w.config.governance.voting_period_secs + 1)
        .await
        .unwrap();
    for p in [&a, &b, &c] {
        m0.queue(p).await.unwrap();
    }
    m0.advance_time(7 * DAY + 1).await.unwrap();
    for p in [&a, &b, &c] {
        m0.execute(p).await.unwrap();
    }
    assert_eq!(m0.training_config(fed).await.unwrap(), config_hash);
    assert_eq!(m0.reward_split().await.unwrap(), split);
    // The annotator minimum is governable: 1,000 staked is now too little.
    let annotator = &w.members[4];
    annotator.stake(Role::Annotator, tok(1_000)).await.unwrap();
    assert_eq!(
        annotator
            .membership(annotator.sender(), Role::Annotator)
            .await
            .unwrap(),
        Membership::TooLittle {
            stake: tok(1_000),
            minimum: tok(2_500)
        }
    );
}

/// The timelock (a vote, then 7 days) moves the QA committee from 3 of 5 to 5 of 7; nobody else can.
async fn validators_by_governance(w: &World) {
    use dao::Action;
    use dao::bindings::Settlement;
    let d = &w.deployment;
    let m0 = &w.members[0];
    let seven: Vec<Address> = (0..7u8).map(|i| Address::repeat_byte(0xa0 + i)).collect();
    let call = Settlement::setValidatorsCall {
        validators_: seven.clone(),
        quorum_: 5,
    };
    assert_revert(
        m0.send_raw(d.settlement, call.abi_encode().into()).await,
        "AccessControlUnauthorizedAccount",
    );
    let action = |c: Vec<u8>| Action {
        target: d.settlement,
        value: U256::ZERO,
        calldata: c.into(),
    };
    let p = m0
        .propose(
            vec![action(call.abi_encode())],
            "QA committee: 5 of 7".into(),
        )
        .await
        .unwrap();
    w.deployer
        .advance_time(w.config.governance.voting_delay_secs + 1)
        .await
        .unwrap();
    m0.vote(p.id, Support::For).await.unwrap();
    w.deployer
        .advance_time(w.config.governance.voting_period_secs + 1)
        .await
        .unwrap();
    m0.queue(&p).await.unwrap();
    m0.advance_time(7 * DAY + 1).await.unwrap();
    m0.execute(&p).await.unwrap();
    let b = w.deployer.backend();
    let out = b
        .call(d.settlement, Settlement::quorumCall {}.abi_encode().into())
        .await
        .unwrap();
    assert_eq!(Settlement::quorumCall::abi_decode_returns(&out).unwrap(), 5);
    let out = b
        .call(
            d.settlement,
            Settlement::validatorsCall {}.abi_encode().into(),
        )
        .await
        .unwrap();
    assert_eq!(
        Settlement::validatorsCall::abi_decode_returns(&out).unwrap(),
        seven
    );
}
