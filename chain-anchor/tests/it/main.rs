//! Integration tests of chain-anchor: the shared suite on both backends, the outage test and the
//! embedded backend's persistence. Tests that need anvil find it through `DAOFL_ANVIL` or
//! chain-anchor's `node_modules` (`npm ci`); see `support::anvil_path`.

mod merkle_fixture;
mod outage;
mod suite;
mod support;

use chain_anchor::{
    Anchor, ChainAnchor, ChainConfig, EmbeddedAnchor, Error, RpcAnchor, STATE_FILE, deploy_registry,
};

use alloy::primitives::Address;
use support::{anvil_path, checkpoint, key_file, rpc_anchor, spawn_anvil, unique_federation};

#[tokio::test]
async fn suite_on_embedded_evm() {
    let dir = tempfile::tempdir().unwrap();
    let anchor = EmbeddedAnchor::open(dir.path()).unwrap();
    let outsider = anchor.acting_as(alloy::primitives::Address::repeat_byte(0x0b));
    suite::run(&anchor, &outsider).await;
}

#[tokio::test]
async fn suite_on_anvil() {
    let Some(path) = anvil_path() else { return };
    let anvil = spawn_anvil(&path, 0, None);
    let dir = tempfile::tempdir().unwrap();
    let deployment = deploy_registry(&anvil.endpoint(), &key_file(&anvil, 0, dir.path()), 1)
        .await
        .unwrap();
    assert_eq!(deployment.admin, anvil.addresses()[0]);
    assert_eq!(deployment.chain_id, anvil.chain_id());
    assert!(deployment.gas_used > 500_000);
    let anchor = rpc_anchor(&anvil, deployment.registry, 0, dir.path());
    let outsider = rpc_anchor(&anvil, deployment.registry, 1, dir.path());
    suite::run(&anchor, &outsider).await;
    // Nothing left behind: the queue is empty, the outsider's refused anchor set aside.
    assert_eq!(anchor.queued().unwrap(), 0);
    assert_eq!(outsider.queued().unwrap(), 0);
    let rejected = std::fs::read_dir(dir.path().join("queue-1/rejected"))
        .unwrap()
        .count();
    assert_eq!(rejected, 2, "the refused anchor and its reason");
}

#[tokio::test]
async fn rpc_backend_refuses_a_wrong_registry_address() {
    let Some(path) = anvil_path() else { return };
    let anvil = spawn_anvil(&path, 0, None);
    let dir = tempfile::tempdir().unwrap();
    let nowhere = alloy::primitives::Address::repeat_byte(0x42);
    let anchor = rpc_anchor(&anvil, nowhere, 0, dir.path());
    match anchor.anchor(&checkpoint(unique_federation("x"), 0)).await {
        Err(Error::NoRegistry { address, .. }) => assert_eq!(address, nowhere),
        other => panic!("expected NoRegistry, got {other:?}"),
    }
}

#[tokio::test]
async fn rpc_reanchoring_the_same_round_is_idempotent_and_a_conflict_is_an_error() {
    let Some(path) = anvil_path() else { return };
    let anvil = spawn_anvil(&path, 0, None);
    let dir = tempfile::tempdir().unwrap();
    let key = key_file(&anvil, 0, dir.path());
    let registry = deploy_registry(&anvil.endpoint(), &key, 1)
        .await
        .unwrap()
        .registry;
    let anchor: RpcAnchor = rpc_anchor(&anvil, registry, 0, dir.path());
    let fed = unique_federation("idem");
    let first = anchor.anchor(&checkpoint(fed, 0)).await.unwrap();
    let again = anchor.anchor(&checkpoint(fed, 0)).await.unwrap();
    assert!(again.already_anchored);
    assert_eq!(
        (again.tx_hash, again.gas_used),
        (first.tx_hash, first.gas_used)
    );
    let mut other = checkpoint(fed, 0);
    other.cid.push('!');
    assert!(matches!(
        anchor.anchor(&other).await,
        Err(Error::Conflict { round: 0, .. })
    ));
    assert_eq!(anchor.events(Some(fed), 0).await.unwrap().len(), 1);
}

#[tokio::test]
async fn embedded_state_survives_a_restart_and_refuses_corruption() {
    let dir = tempfile::tempdir().unwrap();
    let fed = unique_federation("persist");
    let registry = {
        let anchor = EmbeddedAnchor::open(dir.path()).unwrap();
        for round in 0..3 {
            anchor.anchor(&checkpoint(fed, round)).await.unwrap();
        }
        anchor.registry()
    };
    let reopened = EmbeddedAnchor::open(dir.path()).unwrap();
    assert_eq!(reopened.registry(), registry);
    assert_eq!(reopened.latest_round(fed).await.unwrap(), Some(2));
    assert_eq!(reopened.events(Some(fed), 0).await.unwrap().len(), 3);
    let receipt = reopened.anchor(&checkpoint(fed, 3)).await.unwrap();
    assert!(receipt.block_number > 3);

    // Through the configuration the aggregator uses.
    drop(reopened);
    let config: ChainConfig =
        toml::from_str("backend = \"embedded\"\nstate_dir = \"st\"\n").unwrap();
    let run = tempfile::tempdir().unwrap();
    let chain = ChainAnchor::open(&config, run.path()).unwrap();
    assert!(run.path().join("st").join(STATE_FILE).is_file());
    assert_eq!(chain.latest_round(fed).await.unwrap(), None);

    // A damaged state file is an error, never a panic or a silent reset.
    let state = dir.path().join(STATE_FILE);
    let text = std::fs::read_to_string(&state).unwrap();
    std::fs::write(&state, &text[..text.len() / 2]).unwrap();
    assert!(matches!(
        EmbeddedAnchor::open(dir.path()),
        Err(Error::Corrupt { .. })
    ));
    let other_code = text.replacen("\"code\": \"0x60", "\"code\": \"0x61", 1);
    std::fs::write(&state, other_code).unwrap();
    assert!(matches!(
        EmbeddedAnchor::open(dir.path()),
        Err(Error::Corrupt { .. })
    ));
}

#[tokio::test]
async fn rpc_backend_from_a_chain_config_and_authorising_a_second_aggregator() {
    let Some(path) = anvil_path() else { return };
    let anvil = spawn_anvil(&path, 0, None);
    let dir = tempfile::tempdir().unwrap();
    let key = key_file(&anvil, 0, dir.path());
    let registry = deploy_registry(&anvil.endpoint(), &key, 1)
        .await
        .unwrap()
        .registry;
    let config: ChainConfig = toml::from_str(&format!(
        "backend = \"rpc\"\nurl = \"{}\"\nregistry = \"{registry}\"\nkey_file = \"key-0\"\n\
         queue_dir = \"queue\"\nchain_id = {}\n",
        anvil.endpoint(),
        anvil.chain_id()
    ))
    .unwrap();
    let chain = ChainAnchor::open(&config, dir.path()).unwrap();
    assert_eq!(chain.sender(), anvil.addresses()[0]);
    let fed = unique_federation("config");
    chain.anchor(&checkpoint(fed, 0)).await.unwrap();
    assert!(chain.lookup(fed, 0).await.unwrap().is_some());

    // The admin grants AGGREGATOR_ROLE; the second account may then anchor.
    let second = rpc_anchor(&anvil, registry, 1, dir.path());
    let ChainAnchor::Rpc(admin) = &chain else {
        panic!("an RPC backend")
    };
    admin.authorize(second.sender()).await.unwrap();
    second.anchor(&checkpoint(fed, 1)).await.unwrap();
    assert_eq!(second.latest_round(fed).await.unwrap(), Some(1));

    // A configuration naming another chain is refused before anything is sent.
    let wrong: ChainConfig = toml::from_str(&format!(
        "backend = \"rpc\"\nurl = \"{}\"\nregistry = \"{registry}\"\nkey_file = \"key-0\"\n\
         queue_dir = \"queue-wrong\"\nchain_id = 1\n",
        anvil.endpoint()
    ))
    .unwrap();
    let wrong = ChainAnchor::open(&wrong, dir.path()).unwrap();
    assert!(matches!(
        wrong.anchor(&checkpoint(fed, 2)).await,
        Err(Error::Config(_))
    ));
}

#[tokio::test]
async fn embedded_admin_authorises_a_second_aggregator() {
    let dir = tempfile::tempdir().unwrap();
    let admin = EmbeddedAnchor::open(dir.path()).unwrap();
    let second = admin.acting_as(alloy::primitives::Address::repeat_byte(0x22));
    let fed = unique_federation("grant");
    assert!(second.anchor(&checkpoint(fed, 0)).await.is_err());
    assert!(
        second.authorize(second.sender()).is_err(),
        "only the admin grants"
    );
    admin.authorize(second.sender()).unwrap();
    second.anchor(&checkpoint(fed, 0)).await.unwrap();
}

#[tokio::test]
async fn embedded_evm_calls_any_contract_and_its_clock_advances() {
    use alloy::sol_types::SolCall;
    use chain_anchor::bindings::CheckpointRegistry;
    let dir = tempfile::tempdir().unwrap();
    let anchor = EmbeddedAnchor::open(dir.path()).unwrap();
    let evm = anchor.evm();
    let registry = anchor.registry();
    // A view through the generic handle sees what the anchor wrote.
    let fed = unique_federation("evm");
    anchor.anchor(&checkpoint(fed, 0)).await.unwrap();
    let out = evm
        .call(
            Address::ZERO,
            registry,
            CheckpointRegistry::latestRoundCall { federation: fed.0 }
                .abi_encode()
                .into(),
        )
        .unwrap();
    assert!(out.success);
    let latest = CheckpointRegistry::latestRoundCall::abi_decode_returns(&out.output).unwrap();
    assert!(latest.anchored && latest.round == 0);
    // A reverting transaction is an outcome with the revert data, not an error.
    let outsider = Address::repeat_byte(0x0c);
    let call = CheckpointRegistry::anchorCall {
        federation: fed.0,
        round: 1,
        paramsHash: [1u8; 32].into(),
        cid: "x".into(),
        participantsRoot: [0u8; 32].into(),
        epsilonMicros: 0,
    };
    let nonce = evm.nonce(outsider).unwrap();
    let out = evm
        .transact(outsider, Some(registry), call.abi_encode().into())
        .unwrap();
    assert!(!out.success && out.output.len() >= 4);
    assert_eq!(
        evm.nonce(outsider).unwrap(),
        nonce + 1,
        "a revert spends the nonce"
    );
    // The clock moves forward, persists, and later blocks stay after it.
    let before = evm.timestamp().unwrap();
    let moved = evm.advance_time(7 * 86_400).unwrap();
    assert!(moved >= before + 7 * 86_400);
    drop((evm, anchor));
    let reopened = EmbeddedAnchor::open(dir.path()).unwrap();
    assert_eq!(reopened.evm().timestamp().unwrap(), moved);
    let receipt = reopened.anchor(&checkpoint(fed, 1)).await.unwrap();
    assert!(receipt.block_number > 0);
    assert!(reopened.evm().timestamp().unwrap() > moved);
    assert!(reopened.evm().advance_time(u64::MAX).is_err());
}
