//! The inference nodes' Settlement on one world (anvil or the embedded EVM): its verdicts slash
//! inference stake (never training stake) and jail; its reward roots are paid from the
//! inference pool; signatures for one Settlement do not count at the other; a `dao.json` from
//! before it existed loads and names what is missing.

use alloy::primitives::{Bytes, U256, keccak256};
use alloy::signers::local::PrivateKeySigner;
use alloy::sol_types::Eip712Domain;
use dao::settle::{RewardTree, RootMessage, VerdictMessage, sign_root, sign_verdict};
use dao::{DAY, Dao, DaoDeployment, Error, Membership, Role, SettlementKind};

use crate::support::{World, assert_revert, tok};

fn vsigs(keys: &[PrivateKeySigner], d: &Eip712Domain, m: &VerdictMessage) -> Vec<Bytes> {
    keys.iter()
        .map(|k| sign_verdict(k, d, m).unwrap())
        .collect()
}

fn rsigs(keys: &[PrivateKeySigner], d: &Eip712Domain, m: &RootMessage) -> Vec<Bytes> {
    keys.iter().map(|k| sign_root(k, d, m).unwrap()).collect()
}

pub async fn run(w: &World) {
    let d = &w.deployment;
    let quorum = &w.validator_keys[..3];
    let inference = w.deployer.inference_settlement();
    assert_eq!(inference.settlement_kind(), SettlementKind::Inference);
    assert_eq!(
        inference.settlement_address().unwrap(),
        d.inference_settlement
    );
    assert_eq!(
        inference
            .training_settlement()
            .settlement_address()
            .unwrap(),
        d.settlement
    );
    let domain = inference.settlement_domain().await.unwrap();
    let training_domain = w.deployer.settlement_domain().await.unwrap();
    assert_ne!(domain, training_domain);
    // Same validators, quorum and parameters as the training Settlement.
    assert_eq!(
        inference.validators().await.unwrap(),
        w.deployer.validators().await.unwrap()
    );
    assert_eq!(
        inference.settlement_params().await.unwrap(),
        w.deployer.settlement_params().await.unwrap()
    );

    // A node staked in both roles.
    let node = &w.members[2];
    w.team.claim_vesting(d.team_vesting).await.unwrap();
    w.team.transfer(node.sender(), tok(16_000)).await.unwrap();
    node.stake(Role::Training, tok(10_000)).await.unwrap();
    node.stake(Role::Inference, tok(6_000)).await.unwrap();

    // A verdict for wrong answers: signatures under the training Settlement's domain do not
    // count at the inference one.
    let now = w.deployer.now().await.unwrap();
    let verdict = VerdictMessage {
        member: node.sender(),
        evidence: keccak256("WrongAnswer evidence: request 42"),
        fraction_bps: w.config.settlement.slash_bps,
        deadline: now + DAY,
    };
    assert_revert(
        inference
            .post_verdict(&verdict, &vsigs(quorum, &training_domain, &verdict))
            .await,
        "NotValidator",
    );
    let (_, id) = inference
        .post_verdict(&verdict, &vsigs(quorum, &domain, &verdict))
        .await
        .unwrap();
    assert_eq!(inference.verdict(id).await.unwrap().status, 1);
    assert_eq!(w.deployer.verdict(id).await.unwrap().status, 0);
    assert_revert(inference.execute_verdict(id).await, "ChallengeWindowOpen");
    w.deployer.advance_time(7 * DAY + 1).await.unwrap();
    let supply = w.deployer.total_supply().await.unwrap();
    w.members[0]
        .inference_settlement()
        .execute_verdict(id)
        .await
        .unwrap();
    let slashed = tok(6_000) * U256::from(verdict.fraction_bps) / U256::from(10_000u64);
    let (inference_stake, _, _) = node.position(node.sender(), Role::Inference).await.unwrap();
    let (training_stake, _, _) = node.position(node.sender(), Role::Training).await.unwrap();
    assert_eq!(inference_stake, tok(6_000) - slashed);
    assert_eq!(training_stake, tok(10_000));
    assert_eq!(w.deployer.total_supply().await.unwrap(), supply - slashed);
    assert!(matches!(
        node.membership(node.sender(), Role::Inference)
            .await
            .unwrap(),
        Membership::Jailed { .. }
    ));
    assert_revert(inference.execute_verdict(id).await, "VerdictNotPending");

    // A reward root paid from the inference pool (the training pool untouched), claimed.
    let earner = &w.members[0];
    let tree = RewardTree::new(&[
        (earner.sender(), tok(120)),
        (w.members[1].sender(), tok(30)),
    ])
    .unwrap();
    let now = w.deployer.now().await.unwrap();
    let msg = RootMessage::of(1, &tree, now + 7 * DAY + 31 * DAY);
    let inference_pool = w.deployer.balance_of(d.inference_pool).await.unwrap();
    let training_pool = w.deployer.balance_of(d.training_pool).await.unwrap();
    assert_revert(
        inference
            .post_root(&msg, &rsigs(quorum, &training_domain, &msg))
            .await,
        "NotValidator",
    );
    inference
        .post_root(&msg, &rsigs(quorum, &domain, &msg))
        .await
        .unwrap();
    assert_eq!(
        w.deployer.balance_of(d.inference_pool).await.unwrap(),
        inference_pool - tree.total()
    );
    assert_eq!(
        w.deployer.balance_of(d.training_pool).await.unwrap(),
        training_pool
    );
    assert_eq!(w.deployer.epoch(1).await.unwrap().status, 0);
    w.deployer.advance_time(7 * DAY + 1).await.unwrap();
    let before = earner.balance_of(earner.sender()).await.unwrap();
    // The training Settlement knows no such epoch; the inference one pays.
    assert_revert(earner.claim_reward(1, &tree).await, "UnknownEpoch");
    earner
        .inference_settlement()
        .claim_reward(1, &tree)
        .await
        .unwrap();
    assert_eq!(
        earner.balance_of(earner.sender()).await.unwrap(),
        before + tok(120)
    );
    assert_eq!(
        earner.delegates(earner.sender()).await.unwrap(),
        earner.sender()
    );
    let e = inference.epoch(1).await.unwrap();
    assert_eq!(U256::from(e.claimed), tok(120));

    // A dao.json written before the inference contracts existed loads; calls that need them
    // say so.
    let mut json = serde_json::to_value(d).unwrap();
    let fields = json.as_object_mut().unwrap();
    fields.remove("inference_settlement");
    fields.remove("inference_fees");
    let old: DaoDeployment = serde_json::from_value(json).unwrap();
    assert!(old.inference_settlement.is_zero() && old.inference_fees.is_zero());
    let dao = Dao::new(w.deployer.backend().clone(), old);
    assert!(matches!(
        dao.inference_settlement().epoch(1).await,
        Err(Error::NotDeployed(_))
    ));
    assert!(matches!(
        dao.fee_balance(earner.sender()).await,
        Err(Error::NotDeployed(_))
    ));
    assert_eq!(dao.epoch(1).await.unwrap().status, 0);
}
