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

    // What an inference gateway and node read: the promoted model, and which nodes are
    // staked as inference nodes (two staked, one not).
    let anchor_state = dao::chain_anchor::EmbeddedAnchor::open(&chain).unwrap();
    let root = dao::Backend::embedded(
        &anchor_state,
        dao::chain_anchor::EmbeddedAnchor::default_sender(),
    );
    let team = dao::Dao::new(
        root.acting_as(setup.team).unwrap(),
        setup.deployment.clone(),
    );
    let nodes: Vec<dao::chain_anchor::alloy::primitives::Address> = (0..3)
        .map(|i| {
            fl_core::MemberKey::from_hex(&format!("{:064x}", 77 + i))
                .unwrap()
                .address()
        })
        .collect();
    runtime.block_on(async {
        assert_eq!(
            fl_client::registry::promoted_model(&team, "dao-test")
                .await
                .unwrap(),
            Some(anchor.cid)
        );
        assert_eq!(
            fl_client::registry::promoted_model(&team, "another")
                .await
                .unwrap(),
            None
        );
        for &node in &nodes[..2] {
            team.transfer(node, dao::tokens(5_000)).await.unwrap();
            let as_node = dao::Dao::new(root.acting_as(node).unwrap(), setup.deployment.clone());
            as_node
                .stake(dao::Role::Inference, dao::tokens(5_000))
                .await
                .unwrap();
        }
        let stakes = fl_client::registry::inference_stakes(&team, &nodes)
            .await
            .unwrap();
        assert_eq!(stakes[&nodes[0]], 5_000.0);
        assert_eq!(stakes[&nodes[1]], 5_000.0);
        assert_eq!(stakes[&nodes[2]], 0.0, "not staked: never selected");
    });
}
