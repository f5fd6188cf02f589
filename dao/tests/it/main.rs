//! Integration tests of the DAO: the same suite on a real anvil and on the embedded EVM, and
//! property tests of the token/staking invariants on the embedded EVM. Tests that need anvil find
//! it through `DAOFL_ANVIL` or chain-anchor's `node_modules` (`npm ci` in chain-anchor).

mod annotations;
mod data;
mod fees;
mod hostile;
mod inference_settlement;
mod invariants;
mod reentrancy;
mod settlement;
mod suite;
mod support;

use support::{World, anvil_path, cast_path};

#[tokio::test]
async fn suite_on_embedded_evm() {
    let world = World::embedded().await;
    suite::run(&world).await;
}

#[tokio::test]
async fn suite_on_anvil() {
    let Some(path) = anvil_path() else { return };
    let world = World::anvil(&path).await;
    suite::run(&world).await;
}

#[tokio::test]
async fn data_registry_on_embedded_evm() {
    let world = World::embedded().await;
    data::run(&world).await;
}

#[tokio::test]
async fn data_registry_on_anvil() {
    let Some(path) = anvil_path() else { return };
    let world = World::anvil(&path).await;
    data::run(&world).await;
}

#[tokio::test]
async fn settlement_on_embedded_evm() {
    let world = World::embedded().await;
    let gas = settlement::run(&world).await;
    eprintln!(
        "settlement gas (embedded EVM): {gas:?}; deploy {:?}",
        world.deployment.deploy_gas.get("Settlement")
    );
}

#[tokio::test]
async fn settlement_on_anvil() {
    let Some(path) = anvil_path() else { return };
    let world = World::anvil(&path).await;
    let gas = settlement::run(&world).await;
    eprintln!(
        "settlement gas (anvil): {gas:?}; deploy {:?}",
        world.deployment.deploy_gas.get("Settlement")
    );
}

#[tokio::test]
async fn fees_on_embedded_evm() {
    let world = World::embedded().await;
    let gas = fees::run(&world).await;
    eprintln!(
        "inference fees gas (embedded EVM): {gas:?}; deploy {:?}",
        world.deployment.deploy_gas.get("InferenceFees")
    );
}

#[tokio::test]
async fn fees_on_anvil() {
    let Some(path) = anvil_path() else { return };
    let world = World::anvil(&path).await;
    let gas = fees::run(&world).await;
    eprintln!(
        "inference fees gas (anvil): {gas:?}; deploy {:?}",
        world.deployment.deploy_gas.get("InferenceFees")
    );
}

#[tokio::test]
async fn annotations_on_embedded_evm() {
    let world = World::embedded().await;
    let gas = annotations::run(&world).await;
    eprintln!(
        "annotation book gas (embedded EVM, pool of 5): {gas:?}; deploy {:?}",
        world.deployment.deploy_gas.get("AnnotationBook")
    );
}

/// What a commit costs as the pool grows (the rank is linear in the pool).
#[tokio::test]
async fn annotation_commit_gas_by_pool_size() {
    for n in [16, 64] {
        let world = World::embedded().await;
        let gas = annotations::commit_gas_with_pool(&world, n).await;
        eprintln!("commit gas with a pool of {n}: {gas}");
    }
}

#[tokio::test]
async fn annotations_on_anvil() {
    let Some(path) = anvil_path() else { return };
    let world = World::anvil(&path).await;
    let gas = annotations::run(&world).await;
    eprintln!(
        "annotation book gas (anvil, pool of 5): {gas:?}; deploy {:?}",
        world.deployment.deploy_gas.get("AnnotationBook")
    );
}

#[tokio::test]
async fn inference_settlement_on_embedded_evm() {
    let world = World::embedded().await;
    inference_settlement::run(&world).await;
}

#[tokio::test]
async fn inference_settlement_on_anvil() {
    let Some(path) = anvil_path() else { return };
    let world = World::anvil(&path).await;
    inference_settlement::run(&world).await;
}

/// Re-entries into Staking and Settlement from a token callback: none through the real token
/// (it has none), and each refused with `ReentrancyGuardReentrantCall` through a hooked one.
#[tokio::test]
async fn reentrancy_on_embedded_evm() {
    let world = World::embedded().await;
    reentrancy::run(&world).await;
}

#[tokio::test]
async fn reentrancy_on_anvil() {
    let Some(path) = anvil_path() else { return };
    let world = World::anvil(&path).await;
    reentrancy::run(&world).await;
}

/// The embedded chain persists the DAO: reopening the state folder (as every `daofl-dao`
/// command does) finds the deployment, its balances and its clock.
#[tokio::test]
async fn embedded_dao_survives_a_reopen() {
    use chain_anchor::EmbeddedAnchor;
    use dao::{Backend, Dao, DaoDeployment, Role, deploy};
    let dir = tempfile::tempdir().unwrap();
    let team = alloy::primitives::Address::repeat_byte(0x33);
    let deployment = {
        let anchor = EmbeddedAnchor::open(dir.path()).unwrap();
        let root = Backend::embedded(&anchor, EmbeddedAnchor::default_sender());
        let now = root.now().await.unwrap();
        let config = support::test_config(
            team,
            alloy::primitives::Address::repeat_byte(0x44),
            alloy::primitives::Address::repeat_byte(0x55),
            alloy::primitives::Address::repeat_byte(0x66),
            now,
        );
        let deployment = deploy(&config, &root).await.unwrap();
        let member = Dao::new(root.acting_as(team).unwrap(), deployment.clone());
        member.claim_vesting(deployment.team_vesting).await.unwrap();
        member
            .stake(Role::Training, support::tok(10_000))
            .await
            .unwrap();
        member.advance_time(3 * dao::DAY).await.unwrap();
        deployment.save(&dir.path().join("dao.json")).unwrap();
        deployment
    };
    let anchor = EmbeddedAnchor::open(dir.path()).unwrap();
    let loaded = DaoDeployment::load(&dir.path().join("dao.json")).unwrap();
    assert_eq!(loaded, deployment);
    let dao = Dao::new(Backend::embedded(&anchor, team), loaded);
    assert!(
        dao.membership(team, Role::Training)
            .await
            .unwrap()
            .is_member()
    );
    assert!(
        dao.now().await.unwrap()
            >= std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .unwrap()
                .as_secs()
                + 3 * dao::DAY
                - 5
    );
    // A configuration naming something else as the checkpoint registry is refused.
    let mut config = support::test_config(
        team,
        alloy::primitives::Address::repeat_byte(0x44),
        alloy::primitives::Address::repeat_byte(0x55),
        alloy::primitives::Address::repeat_byte(0x66),
        dao.now().await.unwrap(),
    );
    for registry in [
        deployment.token,
        alloy::primitives::Address::repeat_byte(0x77),
    ] {
        config.model.checkpoint_registry = Some(registry);
        assert!(matches!(
            deploy(&config, dao.backend()).await,
            Err(dao::Error::Deploy(_))
        ));
    }
    // A damaged dao.json is an error, never a panic.
    std::fs::write(dir.path().join("dao.json"), b"{\"chain_id\": 1").unwrap();
    assert!(matches!(
        DaoDeployment::load(&dir.path().join("dao.json")),
        Err(dao::Error::Corrupt { .. })
    ));
}

/// A deployment on anvil answers a standard tool (foundry's `cast`, from npm) as well as our
/// library: the Governor's standard interface, the token's clock, a member's membership, and a
/// transaction sent by cast that the library then sees.
#[tokio::test]
async fn cast_drives_the_dao_on_anvil() {
    let (Some(anvil), Some(cast)) = (anvil_path(), cast_path()) else {
        return;
    };
    let w = World::anvil(&anvil).await;
    let url = w.endpoint().unwrap();
    let run = |args: &[&str]| {
        let out = std::process::Command::new(&cast)
            .args(args)
            .args(["--rpc-url", &url])
            .output()
            .expect("cast runs");
        assert!(
            out.status.success(),
            "cast {args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8(out.stdout).unwrap().trim().to_owned()
    };
    let d = &w.deployment;
    let governor = d.governor.to_string();
    let token = d.token.to_string();
    assert_eq!(
        run(&["call", &governor, "COUNTING_MODE()(string)"]),
        "\"support=bravo&quorum=for,abstain\""
    );
    assert_eq!(
        run(&["call", &token, "CLOCK_MODE()(string)"]),
        "\"mode=timestamp\""
    );
    assert_eq!(
        run(&["call", &governor, "CLOCK_MODE()(string)"]),
        "\"mode=timestamp\""
    );
    assert_eq!(
        run(&[
            "call",
            &governor,
            "supportsInterface(bytes4)(bool)",
            "0x01ffc9a7"
        ]),
        "true"
    );
    assert_eq!(
        run(&["call", &governor, "timelock()(address)"]),
        d.timelock.to_string()
    );
    assert!(
        run(&["call", &token, "totalSupply()(uint256)"])
            .starts_with("1000000000000000000000000000")
    );
    // cast sends a delegation; the library sees it.
    let member = &w.members[0];
    let key = format!("0x{}", alloy::hex::encode(w.member_keys[0].to_bytes()));
    let me = member.sender().to_string();
    run(&[
        "send",
        "--private-key",
        &key,
        &token,
        "delegate(address)",
        &me,
    ]);
    assert_eq!(
        member.delegates(member.sender()).await.unwrap(),
        member.sender()
    );
    // And reads the membership view the aggregator uses: (status, staked, minimum, unbonding, jailed).
    let m = run(&[
        "call",
        &d.staking.to_string(),
        "membership(address,uint8)(uint8,uint256,uint256,uint256,uint64)",
        &me,
        "0",
    ]);
    assert!(m.starts_with('1'), "NoStake is status 1: {m}");
}

/// `dao::RewardTree` against OpenZeppelin's own `StandardMerkleTree` (JS) over (index, account,
/// amount) leaves: same roots, same indices, same proofs. The fixture is written by
/// `node dao/scripts/reward-fixture.mjs`.
#[test]
fn reward_tree_matches_openzeppelin_standard_merkle_tree() {
    use alloy::primitives::{Address, B256, U256};
    #[derive(serde::Deserialize)]
    struct Reward {
        account: Address,
        amount: String,
    }
    #[derive(serde::Deserialize)]
    struct Claim {
        index: u64,
        account: Address,
        amount: String,
        proof: Vec<B256>,
    }
    #[derive(serde::Deserialize)]
    struct Case {
        rewards: Vec<Reward>,
        root: B256,
        claims: Vec<Claim>,
    }
    #[derive(serde::Deserialize)]
    struct Fixture {
        cases: Vec<Case>,
    }
    let dec = |s: &str| U256::from_str_radix(s, 10).unwrap();
    let fixture: Fixture =
        serde_json::from_str(include_str!("../fixtures/reward-tree.json")).unwrap();
    assert_eq!(fixture.cases.len(), 5);
    for case in fixture.cases {
        let rewards: Vec<(Address, U256)> = case
            .rewards
            .iter()
            .map(|r| (r.account, dec(&r.amount)))
            .collect();
        let tree = dao::RewardTree::new(&rewards).unwrap();
        assert_eq!(tree.root(), case.root, "{} rewards", rewards.len());
        for c in &case.claims {
            let (index, amount, proof) = tree.proof(c.account).unwrap();
            assert_eq!((index, amount), (c.index, dec(&c.amount)));
            assert_eq!(proof, c.proof);
        }
    }
}
