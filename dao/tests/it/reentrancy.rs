//! Reentrancy, on both backends: an attacker contract tries to re-enter Staking (stake, unstake,
//! withdraw, and from a slash) and Settlement (claim, sweep, splitFee) from a token callback.
//!
//! The real $PROPOSAL token gives no callback at all: Staking and Settlement call only it (and
//! the pool and Staking, which do not call back either), so against the real deployment the
//! attacker's hook never runs. To reach the guards anyway, a second Staking and Settlement are
//! deployed with `HookedToken` (`dao/contracts/test/`, never part of `deploy`), which calls back
//! every account it touches; every re-entry then reverts with OpenZeppelin's
//! `ReentrancyGuardReentrantCall`, and leaves the books as they were.

use alloy::primitives::{Address, B256, Bytes, U256};
use alloy::sol_types::{SolCall, SolConstructor};
use dao::bindings::{Settlement, Staking};
use dao::settle::{RewardTree, RootMessage, settlement_domain, sign_root};
use dao::{DAY, Dao, DaoDeployment};

use crate::support::{World, assert_revert, tok};

alloy::sol!(
    #[derive(Debug, PartialEq, Eq)]
    HookedToken,
    "tests/artifacts/HookedToken.json"
);
alloy::sol!(
    #[derive(Debug, PartialEq, Eq)]
    ReentrantAttacker,
    "tests/artifacts/ReentrantAttacker.json"
);

const GUARD: &str = "ReentrancyGuardReentrantCall";

fn creation_code(artifact: &str) -> Vec<u8> {
    let json: serde_json::Value = serde_json::from_str(artifact).expect("artifact JSON");
    let hex = json["bytecode"].as_str().expect("bytecode");
    alloy::hex::decode(hex).expect("hex bytecode")
}

/// Deploys `code` + `args` from `from`; returns the new contract's address.
async fn deploy(from: &Dao, mut code: Vec<u8>, args: Vec<u8>) -> Address {
    code.extend(args);
    let r = from.backend().send(None, Bytes::from(code)).await.unwrap();
    r.contract_address.expect("a contract")
}

async fn view<C: SolCall>(from: &Dao, to: Address, call: C) -> C::Return {
    let out = from
        .backend()
        .call(to, call.abi_encode().into())
        .await
        .unwrap();
    C::abi_decode_returns(&out).unwrap()
}

/// The attacker contract, driven by the account that deployed it.
struct Attacker<'a> {
    address: Address,
    owner: &'a Dao,
}

impl Attacker<'_> {
    async fn new<'a>(owner: &'a Dao, hooked_token: Address) -> Attacker<'a> {
        let code = creation_code(include_str!("../artifacts/ReentrantAttacker.json"));
        let args = ReentrantAttacker::constructorCall {
            hookedToken: hooked_token,
        }
        .abi_encode();
        Attacker {
            address: deploy(owner, code, args).await,
            owner,
        }
    }

    /// Re-enter `target` with `reentry` on the next hook (an empty `reentry` disarms).
    async fn arm(&self, target: Address, reentry: Vec<u8>) {
        let call = ReentrantAttacker::armCall {
            target_: target,
            reentry_: reentry.into(),
        };
        self.owner
            .send_raw(self.address, call.abi_encode().into())
            .await
            .unwrap();
    }

    /// The attacker contract calls `target` with `data`.
    async fn attack(&self, target: Address, data: Vec<u8>) -> dao::Result<dao::TxReceipt> {
        let call = ReentrantAttacker::attackCall {
            target_: target,
            data: data.into(),
        };
        self.owner
            .send_raw(self.address, call.abi_encode().into())
            .await
    }

    async fn hooks(&self) -> U256 {
        view(self.owner, self.address, ReentrantAttacker::hooksCall {}).await
    }

    async fn armed(&self) -> bool {
        view(self.owner, self.address, ReentrantAttacker::armedCall {}).await
    }
}

fn stake(amount: U256) -> Vec<u8> {
    Staking::stakeCall { role: 0, amount }.abi_encode()
}

fn unstake(amount: U256) -> Vec<u8> {
    Staking::unstakeCall { role: 0, amount }.abi_encode()
}

fn withdraw() -> Vec<u8> {
    Staking::withdrawCall { role: 0 }.abi_encode()
}

fn claim(epoch: u64, tree: &RewardTree, account: Address) -> Vec<u8> {
    let (index, amount, proof) = tree.proof(account).expect("a leaf");
    Settlement::claimCall {
        epoch_: epoch,
        index: U256::from(index),
        account,
        amount,
        proof,
    }
    .abi_encode()
}

/// Training stake of `account` in `staking`: (active, unbonding).
async fn position(from: &Dao, staking: Address, account: Address) -> (u128, u128) {
    let p = view(from, staking, Staking::positionOfCall { account, role: 0 }).await;
    (p.staked, p.unbonding)
}

fn signed(w: &World, domain: &alloy::sol_types::Eip712Domain, msg: &RootMessage) -> Vec<Bytes> {
    w.validator_keys[..3]
        .iter()
        .map(|k| sign_root(k, domain, msg).unwrap())
        .collect()
}

pub async fn run(w: &World) {
    the_real_token_never_calls_back(w).await;
    let (token, staking) = staking_refuses_reentry(w).await;
    settlement_refuses_reentry(w, token, staking).await;
}

/// Against the real deployment the attacker, armed throughout, stakes, unstakes, withdraws and
/// claims a reward: every call succeeds and its hook never runs, because Staking and Settlement
/// call only the token, the pool and Staking, none of which calls the account back.
async fn the_real_token_never_calls_back(w: &World) {
    let d = &w.deployment;
    let owner = &w.members[0];
    let attacker = Attacker::new(owner, Address::ZERO).await;
    let a = attacker.address;
    w.team.claim_vesting(d.team_vesting).await.unwrap();
    w.team.transfer(a, tok(20_000)).await.unwrap();

    attacker.arm(d.staking, unstake(tok(1))).await;
    attacker
        .attack(d.staking, stake(tok(10_000)))
        .await
        .unwrap();
    attacker
        .attack(d.staking, unstake(tok(4_000)))
        .await
        .unwrap();
    owner
        .advance_time(w.config.staking.unbonding_secs + 1)
        .await
        .unwrap();
    attacker.attack(d.staking, withdraw()).await.unwrap();
    assert_eq!(
        position(owner, d.staking, a).await,
        (tok(6_000).to::<u128>(), 0)
    );
    assert_eq!(owner.locked_of(a).await.unwrap(), tok(6_000));

    // A reward claim through the real Settlement, with the claim itself as the armed re-entry.
    let tree = RewardTree::new(&[(a, tok(5)), (w.members[1].sender(), tok(6))]).unwrap();
    let now = owner.now().await.unwrap();
    let msg = RootMessage::of(1, &tree, now + 7 * DAY + 31 * DAY);
    let domain = owner.settlement_domain().await.unwrap();
    owner
        .post_root(&msg, &signed(w, &domain, &msg))
        .await
        .unwrap();
    owner.advance_time(7 * DAY + 1).await.unwrap();
    attacker.arm(d.settlement, claim(1, &tree, a)).await;
    attacker
        .attack(d.settlement, claim(1, &tree, a))
        .await
        .unwrap();
    assert_eq!(owner.balance_of(a).await.unwrap(), tok(20_000 + 5));
    assert_eq!(owner.delegates(a).await.unwrap(), a);

    assert_eq!(
        attacker.hooks().await,
        U256::ZERO,
        "the real token called back"
    );
    assert!(attacker.armed().await);
    // The claim stays claimed once.
    assert_revert(
        attacker.attack(d.settlement, claim(1, &tree, a)).await,
        "AlreadyClaimed",
    );
}

/// A Staking deployed with the hooked token: every re-entry from the lock, unlock and burn hooks
/// reverts with the named guard error and changes nothing; unarmed, the same calls go through
/// (the hook runs, so the revert is the guard's). Returns (hooked token, this Staking).
async fn staking_refuses_reentry(w: &World) -> (Address, Address) {
    let owner = &w.members[1];
    let token = deploy(
        owner,
        creation_code(include_str!("../artifacts/HookedToken.json")),
        Vec::new(),
    )
    .await;
    let s = &w.config.staking;
    let staking = deploy(
        owner,
        dao::bindings::Artifact::named("Staking")
            .unwrap()
            .bytecode()
            .unwrap()
            .to_vec(),
        Staking::constructorCall {
            token_: token,
            admin: owner.sender(),
            slashers: vec![w.slasher.sender()],
            minStakes: [tok(10_000), tok(5_000), tok(1)],
            unbondingDelay_: s.unbonding_secs,
            challengeWindow_: s.challenge_window_secs,
        }
        .abi_encode(),
    )
    .await;
    let attacker = Attacker::new(owner, token).await;
    let a = attacker.address;
    owner
        .send_raw(
            token,
            HookedToken::mintCall {
                to: a,
                amount: tok(1_000),
            }
            .abi_encode()
            .into(),
        )
        .await
        .unwrap();
    assert_eq!(attacker.hooks().await, U256::from(1), "mint calls back");

    // Unarmed: stake and unstake go through; the lock hook runs.
    attacker.attack(staking, stake(tok(100))).await.unwrap();
    attacker.attack(staking, unstake(tok(40))).await.unwrap();
    assert_eq!(attacker.hooks().await, U256::from(2));
    owner.advance_time(s.unbonding_secs + 1).await.unwrap();
    let books = |t: Address| async move {
        let (staked, unbonding) = position(owner, staking, a).await;
        let locked = view(owner, t, HookedToken::lockedOfCall { account: a }).await;
        (staked, unbonding, locked)
    };
    let before = books(token).await;
    assert_eq!(
        before,
        (tok(60).to::<u128>(), tok(40).to::<u128>(), tok(100))
    );

    // Armed: the attacker's own stake and withdraw, re-entered from the lock/unlock hooks.
    let one = tok(1);
    let cases: [(&str, Vec<u8>, Vec<u8>); 6] = [
        ("stake <- stake", stake(one), stake(one)),
        ("stake <- unstake", stake(one), unstake(one)),
        ("stake <- withdraw", stake(one), withdraw()),
        ("withdraw <- withdraw", withdraw(), withdraw()),
        ("withdraw <- stake", withdraw(), stake(one)),
        ("withdraw <- unstake", withdraw(), unstake(one)),
    ];
    for (what, outer, reentry) in cases {
        attacker.arm(staking, reentry).await;
        let result = attacker.attack(staking, outer).await;
        match &result {
            Err(dao::Error::Reverted(r)) if r.is(GUARD) => {}
            other => panic!("{what}: expected {GUARD}, got {other:?}"),
        }
        assert_eq!(books(token).await, before, "{what}");
    }
    // A slash (sent by the slasher) whose burn hook re-enters as the slashed account.
    for (what, reentry) in [
        ("slash <- unstake", unstake(one)),
        ("slash <- withdraw", withdraw()),
        ("slash <- stake", stake(one)),
    ] {
        attacker.arm(staking, reentry).await;
        let call = Staking::slashCall {
            account: a,
            role: 0,
            amount: tok(10),
            reason: B256::ZERO,
        };
        let result = w.slasher.send_raw(staking, call.abi_encode().into()).await;
        match &result {
            Err(dao::Error::Reverted(r)) if r.is(GUARD) => {}
            other => panic!("{what}: expected {GUARD}, got {other:?}"),
        }
        assert_eq!(books(token).await, before, "{what}");
    }
    // The reverted transactions left the attacker armed; disarmed, the same calls go through.
    assert!(attacker.armed().await);
    attacker.arm(Address::ZERO, Vec::new()).await;
    assert!(!attacker.armed().await);
    let hooks = attacker.hooks().await;
    attacker.attack(staking, withdraw()).await.unwrap();
    attacker.attack(staking, stake(one)).await.unwrap();
    assert_eq!(attacker.hooks().await, hooks + U256::from(2));
    assert_eq!(books(token).await, (tok(61).to::<u128>(), 0, tok(61)));
    (token, staking)
}

/// A Settlement deployed with the hooked token as token and training pool: a claim whose
/// delegation or transfer hook re-enters claim, sweep or splitFee reverts with the guard error
/// and pays nothing; unarmed, the claim pays once.
async fn settlement_refuses_reentry(w: &World, token: Address, staking: Address) {
    let owner = &w.members[2];
    let sc = &w.config.settlement;
    let settlement = deploy(
        owner,
        dao::bindings::Artifact::named("Settlement")
            .unwrap()
            .bytecode()
            .unwrap()
            .to_vec(),
        Settlement::constructorCall {
            token_: token,
            staking_: staking,
            pools: Settlement::Pools {
                rewardPool: token,
                inferencePool: owner.sender(),
            },
            memberRole_: 0,
            admin: owner.sender(),
            guardian: Address::ZERO,
            validators_: w.validator_keys.iter().map(|k| k.address()).collect(),
            quorum_: 3,
            params_: Settlement::Params {
                challengeWindow: w.config.staking.challenge_window_secs,
                minClaimPeriod: sc.min_claim_period_secs,
                slashBps: sc.slash_bps,
                jailDuration: sc.jail_secs,
                validatorSlashBps: sc.validator_slash_bps,
                slashToPoolBps: sc.slash_to_pool_bps,
                validatorMinStake: 0,
            },
            rewardParams_: Settlement::RewardParams {
                epochRounds: sc.epoch_rounds,
                contributionPpm: sc.contribution_ppm,
                stabilityPpm: sc.stability_ppm,
                performancePpm: sc.performance_ppm,
                stabilityQuorumPct: sc.stability_quorum_pct,
                epochPool: sc.reward_rules().epoch_pool,
            },
        }
        .abi_encode(),
    )
    .await;
    // The library's calls, pointed at this Settlement and token.
    let hostile = Dao::new(
        owner.backend().clone(),
        DaoDeployment {
            token,
            staking,
            settlement,
            training_pool: token,
            ..w.deployment.clone()
        },
    );
    let attacker = Attacker::new(owner, token).await;
    let a = attacker.address;
    let balance = |account: Address| async move {
        view(owner, token, HookedToken::balanceOfCall { account }).await
    };

    let tree = RewardTree::new(&[(a, tok(5)), (w.members[3].sender(), tok(6))]).unwrap();
    let now = owner.now().await.unwrap();
    let msg = RootMessage::of(7, &tree, now + 7 * DAY + 31 * DAY);
    let domain = settlement_domain(owner.backend().chain_id().await.unwrap(), settlement);
    assert_eq!(domain, hostile.settlement_domain().await.unwrap());
    hostile
        .post_root(&msg, &signed(w, &domain, &msg))
        .await
        .unwrap();
    assert_eq!(balance(settlement).await, tree.total());
    owner
        .advance_time(w.config.staking.challenge_window_secs + 1)
        .await
        .unwrap();

    let cases: [(&str, Vec<u8>); 3] = [
        ("claim <- claim", claim(7, &tree, a)),
        (
            "claim <- sweep",
            Settlement::sweepCall { epoch_: 7 }.abi_encode(),
        ),
        (
            "claim <- splitFee",
            Settlement::splitFeeCall { amount: tok(1) }.abi_encode(),
        ),
    ];
    for (what, reentry) in cases {
        attacker.arm(settlement, reentry).await;
        let result = attacker.attack(settlement, claim(7, &tree, a)).await;
        match &result {
            Err(dao::Error::Reverted(r)) if r.is(GUARD) => {}
            other => panic!("{what}: expected {GUARD}, got {other:?}"),
        }
        assert_eq!(balance(a).await, U256::ZERO, "{what}");
        assert_eq!(balance(settlement).await, tree.total(), "{what}");
        assert_eq!(hostile.epoch(7).await.unwrap().claimed, 0, "{what}");
    }

    // Unarmed, the claim pays once; both hooks (delegation, transfer) ran.
    attacker.arm(Address::ZERO, Vec::new()).await;
    let hooks = attacker.hooks().await;
    attacker
        .attack(settlement, claim(7, &tree, a))
        .await
        .unwrap();
    assert_eq!(attacker.hooks().await, hooks + U256::from(2));
    assert_eq!(balance(a).await, tok(5));
    assert_revert(
        attacker.attack(settlement, claim(7, &tree, a)).await,
        "AlreadyClaimed",
    );
}
