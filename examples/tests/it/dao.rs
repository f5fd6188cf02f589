//! The DAO quickstart's library side: deploy and stake on the run's embedded chain, train and
//! anchor, then promote the final checkpoint through vote, queue, the 7-day timelock and
//! execution.

use examples::dao::{DaoQuickstart, deploy_and_stake, promote};
use examples::digits::{self, DigitsConfig};
use fl_aggregator::anchoring::chain_anchor::FederationId;

#[test]
fn the_final_checkpoint_is_promoted_after_vote_and_timelock() {
    let dir = tempfile::tempdir().unwrap();
    let settings = DaoQuickstart::default();
    let config = DigitsConfig {
        clients: 4,
        rounds: 2,
        workers: 2,
        dao: Some(settings.clone()),
        ..DigitsConfig::default()
    };
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let chain = dir.path().join("chain");
    let setup = runtime
        .block_on(deploy_and_stake(
            &chain,
            &dir.path().join("dao.json"),
            config.clients,
            &settings,
        ))
        .unwrap();
    assert_eq!(setup.admitted, 4, "every member staked the minimum");
    assert_eq!(
        dao::DaoDeployment::load(&dir.path().join("dao.json")).unwrap(),
        setup.deployment
    );

    let prepared = digits::prepare(&config).unwrap();
    let (_, anchor) =
        digits::run_federated_anchored(&config, prepared, dir.path(), "dao-test", |_| {}).unwrap();
    let anchor = anchor.expect("the final round is anchored");
    assert_eq!(anchor.round, 2);

    let life = runtime
        .block_on(promote(&chain, &setup, &anchor.manifest, &settings))
        .unwrap();
    use dao::ProposalState::*;
    assert_eq!(
        life.steps.iter().map(|s| s.state).collect::<Vec<_>>(),
        [Pending, Active, Active, Succeeded, Queued, Queued, Executed]
    );
    let queued = &life.steps[4];
    let executed = &life.steps[6];
    assert!(
        executed.at - queued.at > 7 * 86_400,
        "executed only after the 7-day timelock"
    );
    let current = life.current.expect("a community model");
    assert_eq!(current.round, 2);
    assert_eq!(current.cid, anchor.cid.to_string());
    assert_eq!(
        life.promotion.federation,
        FederationId::from_name("dao-test")
    );
}
