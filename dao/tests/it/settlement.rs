//! Settlement on one world (anvil or the embedded EVM): validator-signed reward roots, claims,
//! sweeps, quorum slashing, the fee split, and every hostile case refused by its named error.

use alloy::primitives::{Address, B256, Bytes, U256, keccak256};
use alloy::signers::local::PrivateKeySigner;
use dao::bindings::Settlement;
use dao::settle::{RewardTree, RootMessage, VerdictMessage, sign_root, sign_verdict};
use dao::{DAY, Role};

use crate::support::{World, assert_revert, tok};

/// Gas of the settlement calls, for benches/RESULTS.md.
#[derive(Debug, Default)]
pub struct Gas {
    pub post_root: u64,
    pub claims: Vec<u64>,
    pub steady_claims: Vec<u64>,
    pub post_verdict: u64,
    pub execute_verdict: u64,
    pub split_fee: u64,
    pub report_contradiction: u64,
}

fn sigs(
    keys: &[&PrivateKeySigner],
    d: &alloy::sol_types::Eip712Domain,
    m: &RootMessage,
) -> Vec<Bytes> {
    keys.iter().map(|k| sign_root(k, d, m).unwrap()).collect()
}

fn vsigs(
    keys: &[&PrivateKeySigner],
    d: &alloy::sol_types::Eip712Domain,
    m: &VerdictMessage,
) -> Vec<Bytes> {
    keys.iter()
        .map(|k| sign_verdict(k, d, m).unwrap())
        .collect()
}

pub async fn run(w: &World) -> Gas {
    let mut gas = Gas::default();
    let d = &w.deployment;
    let v = &w.validator_keys;
    let outsider = PrivateKeySigner::from_bytes(&keccak256("not a validator")).unwrap();
    let domain = w.deployer.settlement_domain().await.unwrap();
    let supply0 = w.deployer.total_supply().await.unwrap();
    let pool0 = w.deployer.balance_of(d.training_pool).await.unwrap();

    // Epoch 1: three members, amounts that differ.
    let members: Vec<Address> = w.members.iter().map(|m| m.sender()).collect();
    let rewards = vec![
        (members[0], tok(1_000)),
        (members[1], tok(2_500) + U256::from(7)),
        (members[2], tok(10)),
    ];
    let tree = RewardTree::new(&rewards).unwrap();
    let now = w.deployer.now().await.unwrap();
    let deadline = now + 7 * DAY + 31 * DAY;
    let msg = RootMessage::of(1, &tree, deadline);

    // Hostile posts: fewer than the quorum, a non-validator, one validator twice.
    assert_revert(
        w.deployer
            .post_root(&msg, &sigs(&[&v[0], &v[1]], &domain, &msg))
            .await,
        "QuorumNotReached",
    );
    assert_revert(
        w.deployer
            .post_root(&msg, &sigs(&[&v[0], &v[1], &outsider], &domain, &msg))
            .await,
        "NotValidator",
    );
    assert_revert(
        w.deployer
            .post_root(&msg, &sigs(&[&v[0], &v[1], &v[1]], &domain, &msg))
            .await,
        "DuplicateSigner",
    );
    // Signatures over another total do not authorise this one.
    let forged = RootMessage {
        total: msg.total + 1,
        ..msg
    };
    assert_revert(
        w.deployer
            .post_root(&forged, &sigs(&[&v[0], &v[1], &v[2]], &domain, &msg))
            .await,
        "NotValidator",
    );
    // A malformed signature, and a deadline that leaves no claim period.
    let mut junk = sigs(&[&v[0], &v[1]], &domain, &msg);
    junk.push(Bytes::from(vec![0u8; 65]));
    assert_revert(w.deployer.post_root(&msg, &junk).await, "InvalidSignature");
    let hasty = RootMessage {
        deadline: now + 7 * DAY,
        ..msg
    };
    assert_revert(
        w.deployer
            .post_root(&hasty, &sigs(&[&v[0], &v[1], &v[2]], &domain, &hasty))
            .await,
        "DeadlineTooSoon",
    );
    assert_eq!(w.deployer.balance_of(d.training_pool).await.unwrap(), pool0);

    // An honest post with 3 of 5 (anyone may submit).
    let r = w.members[4]
        .post_root(&msg, &sigs(&[&v[0], &v[2], &v[4]], &domain, &msg))
        .await
        .unwrap();
    gas.post_root = r.gas_used;
    assert_eq!(
        w.deployer.balance_of(d.training_pool).await.unwrap(),
        pool0 - tree.total()
    );
    assert_revert(
        w.deployer
            .post_root(&msg, &sigs(&[&v[0], &v[1], &v[2]], &domain, &msg))
            .await,
        "EpochAlreadyPosted",
    );
    // Claims wait for the challenge window; only governance or the guardian cancel.
    assert_revert(
        w.members[0].claim_reward(1, &tree).await,
        "ChallengeWindowOpen",
    );
    assert_revert(w.members[0].cancel_root(1).await, "NotCanceller");
    w.deployer.advance_time(7 * DAY + 1).await.unwrap();
    assert_revert(w.guardian.cancel_root(1).await, "ChallengeWindowOver");

    // Hostile claims: wrong proof (another amount), another address, then a double claim.
    let (index0, amount0, proof0) = tree.proof(members[0]).unwrap();
    assert_revert(
        w.members[0]
            .claim_reward_with(
                1,
                index0,
                members[0],
                amount0 + U256::from(1),
                proof0.clone(),
            )
            .await,
        "InvalidProof",
    );
    let (index1, amount1, proof1) = tree.proof(members[1]).unwrap();
    assert_revert(
        w.members[0]
            .claim_reward_with(1, index1, members[1], amount1, proof1.clone())
            .await,
        "NotClaimant",
    );
    // Another member's leaf claimed as one's own does not verify.
    assert_revert(
        w.members[0]
            .claim_reward_with(1, index1, members[0], amount1, proof1)
            .await,
        "InvalidProof",
    );

    // Honest claims: balances rise by exactly the leaf amounts; claiming delegates.
    for (i, m) in w.members.iter().take(3).enumerate() {
        let before = m.balance_of(m.sender()).await.unwrap();
        let votes_before = m.votes(m.sender()).await.unwrap();
        assert_eq!(m.delegates(m.sender()).await.unwrap(), Address::ZERO);
        let r = m.claim_reward(1, &tree).await.unwrap();
        gas.claims.push(r.gas_used);
        let amount = tree.amount(m.sender()).unwrap();
        assert_eq!(
            m.balance_of(m.sender()).await.unwrap(),
            before + amount,
            "member {i}"
        );
        assert_eq!(m.delegates(m.sender()).await.unwrap(), m.sender());
        assert_eq!(
            m.votes(m.sender()).await.unwrap(),
            votes_before + before + amount
        );
    }
    assert_revert(w.members[0].claim_reward(1, &tree).await, "AlreadyClaimed");
    // A second claim by someone already delegated (measured without the delegation cost).
    let e1 = w.deployer.epoch(1).await.unwrap();
    assert_eq!(U256::from(e1.claimed), tree.total());

    // Epoch 2: posted, then cancelled by the guardian; posting it again is refused.
    let tree2 = RewardTree::new(&[(members[3], tok(5)), (members[0], tok(6))]).unwrap();
    let now = w.deployer.now().await.unwrap();
    let msg2 = RootMessage::of(2, &tree2, now + 40 * DAY);
    let s2 = sigs(&[&v[1], &v[2], &v[3]], &domain, &msg2);
    w.deployer.post_root(&msg2, &s2).await.unwrap();
    w.guardian.cancel_root(2).await.unwrap();
    assert_revert(w.deployer.post_root(&msg2, &s2).await, "EpochCancelled");
    assert_revert(w.members[3].claim_reward(2, &tree2).await, "EpochCancelled");
    assert_eq!(
        w.deployer.balance_of(d.training_pool).await.unwrap(),
        pool0 - tree.total()
    );

    // Epoch 3: one member claims (already delegated: the plain claim cost), the rest is swept.
    let tree3 = RewardTree::new(&[(members[0], tok(3)), (members[3], tok(4))]).unwrap();
    let now = w.deployer.now().await.unwrap();
    let msg3 = RootMessage::of(3, &tree3, now + 7 * DAY + 30 * DAY + 60);
    w.deployer
        .post_root(&msg3, &sigs(&[&v[0], &v[1], &v[3]], &domain, &msg3))
        .await
        .unwrap();
    w.deployer.advance_time(7 * DAY + 1).await.unwrap();
    let r = w.members[0].claim_reward(3, &tree3).await.unwrap();
    gas.claims.push(r.gas_used);
    assert_revert(w.deployer.sweep_epoch(3).await, "ClaimPeriodOpen");
    w.deployer.advance_time(31 * DAY).await.unwrap();
    assert_revert(
        w.members[3].claim_reward(3, &tree3).await,
        "ClaimDeadlinePassed",
    );
    w.deployer.sweep_epoch(3).await.unwrap();
    assert_revert(w.deployer.sweep_epoch(3).await, "AlreadySwept");
    assert_eq!(
        w.deployer.balance_of(d.training_pool).await.unwrap(),
        pool0 - tree.total() - tok(3)
    );
    assert_eq!(
        w.deployer.balance_of(d.settlement).await.unwrap(),
        U256::ZERO
    );

    // Epoch 4: the steady state: claimers already delegated and holding tokens, leaves in one
    // bitmap word (the second claim writes no new storage slot for the bitmap).
    let tree4 = RewardTree::new(&[
        (members[0], tok(11)),
        (members[1], tok(12)),
        (members[2], tok(13)),
    ])
    .unwrap();
    let now = w.deployer.now().await.unwrap();
    let msg4 = RootMessage::of(4, &tree4, now + 7 * DAY + 30 * DAY + 60);
    w.deployer
        .post_root(&msg4, &sigs(&[&v[2], &v[3], &v[4]], &domain, &msg4))
        .await
        .unwrap();
    w.deployer.advance_time(7 * DAY + 1).await.unwrap();
    for m in w.members.iter().take(3) {
        let before = m.balance_of(m.sender()).await.unwrap();
        let r = m.claim_reward(4, &tree4).await.unwrap();
        gas.steady_claims.push(r.gas_used);
        assert_eq!(
            m.balance_of(m.sender()).await.unwrap(),
            before + tree4.amount(m.sender()).unwrap()
        );
    }
    let claimed_total = tree.total() + tok(3) + tree4.total();
    assert_eq!(
        w.deployer.balance_of(d.training_pool).await.unwrap(),
        pool0 - claimed_total
    );

    // Slashing: member 4 stakes, a verdict signed by a quorum slashes the governed fraction.
    let bad = &w.members[4];
    w.team.claim_vesting(d.team_vesting).await.unwrap();
    w.team.transfer(bad.sender(), tok(20_000)).await.unwrap();
    bad.stake(Role::Training, tok(20_000)).await.unwrap();
    let evidence = keccak256("QA evidence: poisoned update, round 12");
    let now = w.deployer.now().await.unwrap();
    let bps = w.config.settlement.slash_bps;
    let verdict = VerdictMessage {
        member: bad.sender(),
        evidence,
        fraction_bps: bps,
        deadline: now + DAY,
    };
    assert_revert(
        w.deployer
            .post_verdict(&verdict, &vsigs(&[&v[0], &v[1]], &domain, &verdict))
            .await,
        "QuorumNotReached",
    );
    assert_revert(
        w.deployer
            .post_verdict(
                &verdict,
                &vsigs(&[&v[0], &v[1], &outsider], &domain, &verdict),
            )
            .await,
        "NotValidator",
    );
    let greedy = VerdictMessage {
        fraction_bps: 10_000,
        ..verdict
    };
    assert_revert(
        w.deployer
            .post_verdict(&greedy, &vsigs(&[&v[0], &v[1], &v[2]], &domain, &greedy))
            .await,
        "FractionNotGoverned",
    );
    let (r, id) = w
        .deployer
        .post_verdict(&verdict, &vsigs(&[&v[0], &v[1], &v[2]], &domain, &verdict))
        .await
        .unwrap();
    gas.post_verdict = r.gas_used;
    assert_revert(
        w.deployer
            .post_verdict(&verdict, &vsigs(&[&v[2], &v[3], &v[4]], &domain, &verdict))
            .await,
        "EvidenceAlreadyUsed",
    );
    // Re-signed with another deadline, the same evidence still slashes only once.
    let again = VerdictMessage {
        deadline: now + 2 * DAY,
        ..verdict
    };
    assert_revert(
        w.deployer
            .post_verdict(&again, &vsigs(&[&v[0], &v[1], &v[2]], &domain, &again))
            .await,
        "EvidenceAlreadyUsed",
    );
    let stale = VerdictMessage {
        deadline: now - 1,
        ..verdict
    };
    assert_revert(
        w.deployer
            .post_verdict(&stale, &vsigs(&[&v[0], &v[1], &v[2]], &domain, &stale))
            .await,
        "VerdictExpired",
    );
    assert_revert(w.members[0].cancel_verdict(id).await, "NotCanceller");
    assert_revert(w.deployer.execute_verdict(id).await, "ChallengeWindowOpen");
    w.deployer.advance_time(7 * DAY + 1).await.unwrap();
    let supply_before = w.deployer.total_supply().await.unwrap();
    let r = w.members[0].execute_verdict(id).await.unwrap();
    gas.execute_verdict = r.gas_used;
    let slashed = tok(20_000) * U256::from(bps) / U256::from(10_000u64);
    let (staked, _, _) = bad.position(bad.sender(), Role::Training).await.unwrap();
    assert_eq!(staked, tok(20_000) - slashed);
    assert_eq!(
        w.deployer.total_supply().await.unwrap(),
        supply_before - slashed
    );
    assert!(matches!(
        bad.membership(bad.sender(), Role::Training).await.unwrap(),
        dao::Membership::Jailed { .. }
    ));
    assert_revert(w.deployer.execute_verdict(id).await, "VerdictNotPending");

    // An appeal: a second verdict cancelled by the guardian in its window cannot execute.
    let now = w.deployer.now().await.unwrap();
    let appeal = VerdictMessage {
        evidence: keccak256("disputed evidence"),
        deadline: now + DAY,
        ..verdict
    };
    let (_, id2) = w
        .deployer
        .post_verdict(&appeal, &vsigs(&[&v[2], &v[3], &v[4]], &domain, &appeal))
        .await
        .unwrap();
    w.guardian.cancel_verdict(id2).await.unwrap();
    w.deployer.advance_time(7 * DAY + 1).await.unwrap();
    assert_revert(w.deployer.execute_verdict(id2).await, "VerdictNotPending");
    let (staked_after, _, _) = bad.position(bad.sender(), Role::Training).await.unwrap();
    assert_eq!(staked_after, staked);

    // Fee split: half burnt, half to the inference pool.
    let payer = &w.members[1];
    let inference0 = w.deployer.balance_of(d.inference_pool).await.unwrap();
    let supply_before = w.deployer.total_supply().await.unwrap();
    let fee = tok(100) + U256::from(1);
    let r = payer.split_fee(fee).await.unwrap();
    gas.split_fee = r.gas_used;
    let burnt = fee / U256::from(2);
    assert_eq!(
        w.deployer.total_supply().await.unwrap(),
        supply_before - burnt
    );
    assert_eq!(
        w.deployer.balance_of(d.inference_pool).await.unwrap(),
        inference0 + fee - burnt
    );

    // Epoch 5: a root whose signed total is below the sum of its leaves (validators that signed
    // a wrong list) pays at most the total: the claim that would exceed it is refused, and the
    // epoch's books (claimed, the unclaimed rest swept) stay within the total.
    let tree5 = RewardTree::new(&[(members[0], tok(10)), (members[1], tok(20))]).unwrap();
    let now = w.deployer.now().await.unwrap();
    let short = RootMessage {
        total: tok(25).to::<u128>(),
        ..RootMessage::of(5, &tree5, now + 7 * DAY + 30 * DAY + 60)
    };
    w.deployer
        .post_root(&short, &sigs(&[&v[0], &v[1], &v[2]], &domain, &short))
        .await
        .unwrap();
    w.deployer.advance_time(7 * DAY + 1).await.unwrap();
    w.members[1].claim_reward(5, &tree5).await.unwrap();
    let over = w.members[0].claim_reward(5, &tree5).await;
    assert_revert(w.members[0].claim_reward(5, &tree5).await, "ExceedsTotal");
    match over {
        Err(dao::Error::Reverted(r)) => assert_eq!(
            r.decode::<Settlement::SettlementErrors>(),
            Some(Settlement::SettlementErrors::ExceedsTotal(
                Settlement::ExceedsTotal {
                    claimed: tok(30),
                    total: tok(25),
                }
            ))
        ),
        other => panic!("expected ExceedsTotal, got {other:?}"),
    }
    let e5 = w.deployer.epoch(5).await.unwrap();
    assert_eq!(
        (e5.total, e5.claimed),
        (tok(25).to::<u128>(), tok(20).to::<u128>())
    );
    let pool5 = w.deployer.balance_of(d.training_pool).await.unwrap();
    w.deployer.advance_time(31 * DAY).await.unwrap();
    w.deployer.sweep_epoch(5).await.unwrap();
    assert_eq!(
        w.deployer.balance_of(d.training_pool).await.unwrap(),
        pool5 + tok(5)
    );
    assert_eq!(
        w.deployer.balance_of(d.settlement).await.unwrap(),
        U256::ZERO
    );
    assert_eq!(w.deployer.epoch(5).await.unwrap().status, 3);

    // Reward rules are on chain, and no root pays more than the governed epoch pool.
    let rules = w.deployer.reward_rules().await.unwrap();
    assert_eq!(rules, w.config.settlement.reward_rules());
    assert_eq!(rules.rounds(2), Some(11..=20));
    assert_eq!(rules.rounds(0), None);
    let whale = RewardTree::new(&[(members[0], U256::from(rules.epoch_pool + 1))]).unwrap();
    let now = w.deployer.now().await.unwrap();
    let greedy = RootMessage::of(6, &whale, now + 7 * DAY + 30 * DAY + 60);
    assert_revert(
        w.deployer
            .post_root(&greedy, &sigs(&[&v[0], &v[1], &v[2]], &domain, &greedy))
            .await,
        "ExceedsEpochPool",
    );

    // A validator that signed another root for epoch 1 (posted, its window long over) is
    // reported with its own signature: one strike (no stake slashed: validator_slash_bps is 0
    // here), once per epoch; the posted root's own message, a non-validator's signature, an
    // epoch still in its window and a cancelled one are refused by name.
    let other = RewardTree::new(&[(members[0], tok(3_510))]).unwrap();
    let lie = RootMessage::of(1, &other, deadline);
    let lie_sig = sign_root(&v[3], &domain, &lie).unwrap();
    assert_eq!(w.deployer.strikes(v[3].address()).await.unwrap(), 0);
    assert_revert(
        w.members[2]
            .report_contradiction(&msg, &sign_root(&v[0], &domain, &msg).unwrap())
            .await,
        "NotContradicting",
    );
    assert_revert(
        w.members[2]
            .report_contradiction(&lie, &sign_root(&outsider, &domain, &lie).unwrap())
            .await,
        "NotValidator",
    );
    let supply_report = w.deployer.total_supply().await.unwrap();
    gas.report_contradiction = w.members[2]
        .report_contradiction(&lie, &lie_sig)
        .await
        .unwrap()
        .gas_used;
    assert_eq!(w.deployer.strikes(v[3].address()).await.unwrap(), 1);
    assert_eq!(w.deployer.total_supply().await.unwrap(), supply_report);
    assert_revert(
        w.members[2].report_contradiction(&lie, &lie_sig).await,
        "AlreadyReported",
    );
    assert_revert(
        w.members[2]
            .report_contradiction(&RootMessage { epoch: 99, ..lie }, &lie_sig)
            .await,
        "UnknownEpoch",
    );
    let fresh = RewardTree::new(&[(members[1], tok(1))]).unwrap();
    let now = w.deployer.now().await.unwrap();
    let m7 = RootMessage::of(7, &fresh, now + 7 * DAY + 30 * DAY + 60);
    w.deployer
        .post_root(&m7, &sigs(&[&v[0], &v[1], &v[2]], &domain, &m7))
        .await
        .unwrap();
    let lie7 = RootMessage::of(7, &other, m7.deadline);
    assert_revert(
        w.members[2]
            .report_contradiction(&lie7, &sign_root(&v[4], &domain, &lie7).unwrap())
            .await,
        "ChallengeWindowOpen",
    );
    w.guardian.cancel_root(7).await.unwrap();
    assert_revert(
        w.members[2]
            .report_contradiction(&lie7, &sign_root(&v[4], &domain, &lie7).unwrap())
            .await,
        "EpochCancelled",
    );

    // Conservation: the supply fell by exactly the slash and the burnt half of the fee.
    assert_eq!(
        w.deployer.total_supply().await.unwrap(),
        supply0 - slashed - burnt
    );
    let _ = B256::ZERO;
    gas
}
