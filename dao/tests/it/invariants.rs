//! Property tests on the embedded EVM: random sequences of stake, unstake, withdraw, slash,
//! transfer, delegate, vote and clock moves keep the token's books straight.
//!
//! After every step: minted = total supply + burnt (the sum of successful slashes), and the
//! balances of every holder sum to the total supply; each member's locked tokens equal its active
//! plus unbonding stake and never exceed its balance; a withdrawal only ever succeeds at or after
//! the end of its unbonding; every member's votes equal the balances delegated to it (so never
//! more than its balance plus delegations); a member's vote counts once, and a proposal's tally
//! never exceeds the votes delegated at its snapshot.

use alloy::primitives::{Address, B256, U256};
use alloy::sol_types::SolCall;
use dao::bindings::ProposalToken;
use dao::{Dao, Error, Role};
use proptest::prelude::*;

use crate::support::{World, tok};

#[derive(Debug, Clone)]
enum Op {
    Stake { m: usize, role: usize, amount: u64 },
    Unstake { m: usize, role: usize, amount: u64 },
    Withdraw { m: usize, role: usize },
    Slash { m: usize, role: usize, amount: u64 },
    Transfer { from: usize, to: usize, amount: u64 },
    Delegate { m: usize, to: usize },
    Advance { secs: u64 },
    Vote { m: usize, support: usize },
}

fn op() -> impl Strategy<Value = Op> {
    let m = 0..5usize;
    let role = 0..3usize;
    let amount = 0..40_000u64;
    prop_oneof![
        3 => (m.clone(), role.clone(), amount.clone()).prop_map(|(m, role, amount)| Op::Stake { m, role, amount }),
        2 => (m.clone(), role.clone(), amount.clone()).prop_map(|(m, role, amount)| Op::Unstake { m, role, amount }),
        2 => (m.clone(), role.clone()).prop_map(|(m, role)| Op::Withdraw { m, role }),
        2 => (m.clone(), role, amount.clone()).prop_map(|(m, role, amount)| Op::Slash { m, role, amount }),
        2 => (m.clone(), m.clone(), amount).prop_map(|(from, to, amount)| Op::Transfer { from, to, amount }),
        1 => (m.clone(), m).prop_map(|(m, to)| Op::Delegate { m, to }),
        1 => (0..20 * dao::DAY).prop_map(|secs| Op::Advance { secs }),
        2 => (0..5usize, 0..3usize).prop_map(|(m, support)| Op::Vote { m, support }),
    ]
}

/// Whether an error is a contract revert (an expected refusal), not a failure of the harness.
fn refused(e: &Error) -> bool {
    matches!(e, Error::Reverted(r) if r.name().is_some()) || matches!(e, Error::InvalidInput(_))
}

async fn check(w: &World, burnt: U256, proposal: U256) {
    let d = &w.deployment;
    let dao = &w.deployer;
    let supply = dao.total_supply().await.unwrap();
    assert_eq!(
        supply + burnt,
        tok(1_000_000_000),
        "minted = supply + burnt"
    );
    let mut holders = vec![
        d.data_pool,
        d.training_pool,
        d.inference_pool,
        d.timelock,
        d.team_vesting,
        d.investor_vesting,
        w.team.sender(),
        w.investors.sender(),
    ];
    holders.extend(w.members.iter().map(Dao::sender));
    let mut sum = U256::ZERO;
    let mut balances = Vec::new();
    for h in &holders {
        let b = dao.balance_of(*h).await.unwrap();
        sum += b;
        balances.push(b);
    }
    assert_eq!(sum, supply, "balances sum to the supply");
    let mut delegated: std::collections::HashMap<Address, U256> = Default::default();
    for (h, b) in holders.iter().zip(&balances) {
        let to = dao.delegates(*h).await.unwrap();
        if !to.is_zero() {
            *delegated.entry(to).or_default() += *b;
        }
    }
    for m in &w.members {
        let a = m.sender();
        let mut staked = U256::ZERO;
        for role in Role::ALL {
            let (active, unbonding, _) = dao.position(a, role).await.unwrap();
            staked += active + unbonding;
        }
        let locked = dao.locked_of(a).await.unwrap();
        assert_eq!(locked, staked, "locked = active + unbonding stake of {a}");
        assert!(
            locked <= dao.balance_of(a).await.unwrap(),
            "locked <= balance"
        );
        let votes = dao.votes(a).await.unwrap();
        assert_eq!(
            votes,
            delegated.get(&a).copied().unwrap_or_default(),
            "votes of {a}"
        );
    }
    // The tally never exceeds the votes delegated at the snapshot.
    let status = dao.status(proposal).await.unwrap();
    let counted = status.for_votes + status.against + status.abstain;
    let mut at_snapshot = U256::ZERO;
    if status.snapshot < status.now {
        for m in &w.members {
            let call = ProposalToken::getPastVotesCall {
                account: m.sender(),
                timepoint: U256::from(status.snapshot),
            };
            let out = dao
                .backend()
                .call(d.token, call.abi_encode().into())
                .await
                .unwrap();
            at_snapshot += ProposalToken::getPastVotesCall::abi_decode_returns(&out).unwrap();
        }
    }
    assert!(
        counted <= at_snapshot,
        "tally {counted} above the snapshot's votes {at_snapshot}"
    );
}

async fn run_ops(ops: Vec<Op>) {
    let w = World::embedded().await;
    w.team
        .claim_vesting(w.deployment.team_vesting)
        .await
        .unwrap();
    for m in &w.members {
        w.team.transfer(m.sender(), tok(50_000)).await.unwrap();
    }
    // One open proposal the members vote on; m0 holds enough to propose.
    w.team
        .transfer(w.members[0].sender(), tok(100_000))
        .await
        .unwrap();
    w.members[0].delegate(w.members[0].sender()).await.unwrap();
    w.deployer.advance_time(2).await.unwrap();
    let action = dao::Action {
        target: w.deployment.governor,
        value: U256::ZERO,
        calldata: alloy::sol_types::SolCall::abi_encode(
            &dao::bindings::DaoGovernor::setQuorumFloorCall { floor: tok(1) },
        )
        .into(),
    };
    let proposal = w.members[0]
        .propose(vec![action], "floor".into())
        .await
        .unwrap()
        .id;
    w.deployer
        .advance_time(w.config.governance.voting_delay_secs + 1)
        .await
        .unwrap();
    let mut burnt = U256::ZERO;
    let mut voted = std::collections::HashSet::new();
    check(&w, burnt, proposal).await;
    for op in ops {
        let result = match op.clone() {
            Op::Stake { m, role, amount } => w.members[m]
                .stake(Role::ALL[role], tok(amount))
                .await
                .map(drop),
            Op::Unstake { m, role, amount } => w.members[m]
                .unstake(Role::ALL[role], tok(amount))
                .await
                .map(drop),
            Op::Withdraw { m, role } => {
                let member = &w.members[m];
                let (_, _, ends) = member
                    .position(member.sender(), Role::ALL[role])
                    .await
                    .unwrap();
                let r = member.withdraw(Role::ALL[role]).await.map(drop);
                if r.is_ok() {
                    let at = member.now().await.unwrap();
                    assert!(
                        at >= ends,
                        "withdrawn at {at} before the unbonding end {ends}"
                    );
                }
                r
            }
            Op::Slash { m, role, amount } => {
                let r = w
                    .slasher
                    .slash(
                        w.members[m].sender(),
                        Role::ALL[role],
                        tok(amount),
                        B256::ZERO,
                    )
                    .await
                    .map(drop);
                if r.is_ok() {
                    burnt += tok(amount);
                }
                r
            }
            Op::Transfer { from, to, amount } => w.members[from]
                .transfer(w.members[to].sender(), tok(amount))
                .await
                .map(drop),
            Op::Delegate { m, to } => w.members[m]
                .delegate(w.members[to].sender())
                .await
                .map(drop),
            Op::Advance { secs } => w.deployer.advance_time(secs).await.map(drop),
            Op::Vote { m, support } => {
                let support = [
                    dao::Support::Against,
                    dao::Support::For,
                    dao::Support::Abstain,
                ][support];
                let r = w.members[m].vote(proposal, support).await.map(drop);
                if r.is_ok() {
                    assert!(voted.insert(m), "member {m} voted twice");
                }
                r
            }
        };
        if let Err(e) = &result {
            assert!(refused(e), "{op:?}: {e}");
        }
        check(&w, burnt, proposal).await;
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 24, max_shrink_iters: 64, ..ProptestConfig::default() })]

    #[test]
    fn token_and_staking_books_balance(ops in prop::collection::vec(op(), 1..24)) {
        let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
        rt.block_on(run_ops(ops));
    }
}
