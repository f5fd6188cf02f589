//! Test harness: one DAO world on anvil or on the embedded EVM, with named actors.

use std::path::{Path, PathBuf};

use alloy::node_bindings::{Anvil, AnvilInstance};
use alloy::primitives::{Address, B256, U256, keccak256};
use alloy::signers::local::PrivateKeySigner;
use alloy::sol_types::SolCall;
use chain_anchor::bindings::CheckpointRegistry;
use chain_anchor::{EmbeddedAnchor, FederationId};
use dao::{Backend, Dao, DaoConfig, DaoDeployment, Error, Promotion, RpcTimeouts, YEAR, deploy};

/// The anvil binary: `$DAOFL_ANVIL`, else the one `npm ci` installs in chain-anchor. `None`
/// (with a notice) only when `DAOFL_SKIP_ANVIL=1`; otherwise a missing anvil fails the test.
pub fn anvil_path() -> Option<PathBuf> {
    let path = match std::env::var_os("DAOFL_ANVIL") {
        Some(p) => PathBuf::from(p),
        None => Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("../chain-anchor/node_modules/@foundry-rs/anvil-linux-amd64/bin/anvil"),
    };
    if path.is_file() {
        return Some(path);
    }
    if std::env::var("DAOFL_SKIP_ANVIL").as_deref() == Ok("1") {
        eprintln!(
            "NOTICE: DAOFL_SKIP_ANVIL=1 and no anvil at {}: test skipped",
            path.display()
        );
        return None;
    }
    panic!(
        "anvil not found at {}: run `npm ci` in chain-anchor, or set DAOFL_ANVIL; \
         DAOFL_SKIP_ANVIL=1 skips the anvil tests",
        path.display()
    );
}

/// The cast binary (npm `@foundry-rs/cast`, installed by `npm ci` in chain-anchor), or
/// `$DAOFL_CAST`. Same rules as [`anvil_path`]: missing fails unless `DAOFL_SKIP_ANVIL=1`.
pub fn cast_path() -> Option<PathBuf> {
    let path = match std::env::var_os("DAOFL_CAST") {
        Some(p) => PathBuf::from(p),
        None => Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("../chain-anchor/node_modules/@foundry-rs/cast-linux-amd64/bin/cast"),
    };
    if path.is_file() {
        return Some(path);
    }
    if std::env::var("DAOFL_SKIP_ANVIL").as_deref() == Ok("1") {
        eprintln!(
            "NOTICE: DAOFL_SKIP_ANVIL=1 and no cast at {}: test skipped",
            path.display()
        );
        return None;
    }
    panic!(
        "cast not found at {}: run `npm ci` in chain-anchor, or set DAOFL_CAST",
        path.display()
    );
}

/// Starts anvil on 127.0.0.1 on a free port; the instance kills it (by PID) when dropped,
/// also when a test fails. alloy bounds the wait for its start (30 s).
pub fn spawn_anvil(path: &Path) -> AnvilInstance {
    Anvil::new()
        .path(path)
        .port(0u16)
        .args(["--host", "127.0.0.1"])
        .timeout(30_000)
        .try_spawn()
        .expect("anvil starts")
}

/// A deployed DAO and its actors, on one backend.
pub struct World {
    pub config: DaoConfig,
    pub deployer: Dao,
    pub guardian: Dao,
    pub slasher: Dao,
    pub team: Dao,
    pub investors: Dao,
    /// Members; their keys in `member_keys`.
    pub members: Vec<Dao>,
    pub member_keys: Vec<PrivateKeySigner>,
    /// The QA validators (signing keys only: they never send a transaction).
    pub validator_keys: Vec<PrivateKeySigner>,
    pub deployment: DaoDeployment,
    pub embedded: bool,
    _anvil: Option<AnvilInstance>,
    _dir: tempfile::TempDir,
}

/// The test configuration: defaults of the issue, vesting started two years ago, quorum floor
/// of 1,000,000 tokens.
pub fn test_config(
    team: Address,
    investors: Address,
    guardian: Address,
    slasher: Address,
    now: u64,
) -> DaoConfig {
    let text = format!(
        r#"
[allocation]
team = "{team}"
investors = "{investors}"
vesting_start = {vesting}
[governance]
guardian = "{guardian}"
quorum_floor_tokens = 1000000
[staking]
slasher = "{slasher}"
[settlement]
# The test validators sign only (no stake); the staked check is tested end to end.
validator_min_stake_tokens = 0
"#,
        vesting = now - 2 * YEAR
    );
    DaoConfig::from_toml_str(&text).expect("test config")
}

fn derived_key(i: usize) -> PrivateKeySigner {
    PrivateKeySigner::from_bytes(&keccak256(format!("daofl dao test key {i}"))).expect("key")
}

impl World {
    /// A DAO on a fresh embedded EVM.
    pub async fn embedded() -> Self {
        let dir = tempfile::tempdir().unwrap();
        let anchor = EmbeddedAnchor::open(dir.path()).unwrap();
        // The registry's admin and aggregator deploys the DAO, so it can anchor in tests too.
        let root = Backend::embedded(&anchor, EmbeddedAnchor::default_sender());
        let keys: Vec<PrivateKeySigner> = (0..10).map(derived_key).collect();
        Self::build(root, keys, None, dir).await
    }

    /// A DAO on a fresh anvil.
    pub async fn anvil(path: &Path) -> Self {
        let anvil = spawn_anvil(path);
        let dir = tempfile::tempdir().unwrap();
        let keys: Vec<PrivateKeySigner> = anvil
            .keys()
            .iter()
            .take(10)
            .map(|k| PrivateKeySigner::from_bytes(&B256::from_slice(&k.to_bytes())).unwrap())
            .collect();
        let timeouts = RpcTimeouts {
            request: std::time::Duration::from_secs(10),
            receipt: std::time::Duration::from_secs(20),
            poll: std::time::Duration::from_millis(10),
        };
        let root = Backend::rpc_with_signer(&anvil.endpoint(), keys[0].clone(), timeouts).unwrap();
        Self::build(root, keys, Some(anvil), dir).await
    }

    async fn build(
        root: Backend,
        keys: Vec<PrivateKeySigner>,
        anvil: Option<AnvilInstance>,
        dir: tempfile::TempDir,
    ) -> Self {
        let embedded = anvil.is_none();
        let as_key = |k: &PrivateKeySigner| root.with_signer(k.clone()).unwrap();
        let now = root.now().await.unwrap();
        let mut config = test_config(
            keys[3].address(),
            keys[4].address(),
            keys[1].address(),
            keys[2].address(),
            now,
        );
        let validator_keys: Vec<PrivateKeySigner> = (100..105).map(derived_key).collect();
        config.settlement.validators = validator_keys.iter().map(|k| k.address()).collect();
        config.settlement.quorum = 3;
        // The slasher account also opens annotation epochs (OPENER_ROLE).
        config.annotations.opener = Some(keys[2].address());
        let deployment = deploy(&config, &root).await.expect("deploys");
        let path = dir.path().join("dao.json");
        deployment.save(&path).unwrap();
        assert_eq!(DaoDeployment::load(&path).unwrap(), deployment);
        let dao = |b: Backend| Dao::new(b, deployment.clone());
        let member_keys: Vec<PrivateKeySigner> = keys[5..10].to_vec();
        World {
            deployer: dao(root.clone()),
            guardian: dao(as_key(&keys[1])),
            slasher: dao(as_key(&keys[2])),
            team: dao(as_key(&keys[3])),
            investors: dao(as_key(&keys[4])),
            members: member_keys.iter().map(|k| dao(as_key(k))).collect(),
            member_keys,
            validator_keys,
            config,
            deployment,
            embedded,
            _anvil: anvil,
            _dir: dir,
        }
    }

    /// The anvil endpoint (`None` on the embedded EVM).
    pub fn endpoint(&self) -> Option<String> {
        self._anvil.as_ref().map(AnvilInstance::endpoint)
    }

    /// Anchors a checkpoint (the deployer is the registry's aggregator) and returns its promotion.
    pub async fn anchor(&self, federation: FederationId, round: u64) -> Promotion {
        let p = Promotion {
            federation,
            round,
            params_hash: keccak256(format!("params of round {round}")),
            cid: format!("bafkreitestround{round:04}"),
        };
        let call = CheckpointRegistry::anchorCall {
            federation: federation.0,
            round,
            paramsHash: p.params_hash,
            cid: p.cid.clone(),
            participantsRoot: keccak256("participants"),
            epsilonMicros: 1_000_000,
        };
        self.deployer
            .send_raw(
                self.deployment.checkpoint_registry,
                call.abi_encode().into(),
            )
            .await
            .expect("anchors");
        p
    }
}

/// Asserts that `result` is a revert with the contract error `name`.
#[track_caller]
pub fn assert_revert<T: std::fmt::Debug>(result: dao::Result<T>, name: &str) {
    match result {
        Err(Error::Reverted(r)) if r.is(name) => {}
        other => panic!("expected a {name} revert, got {other:?}"),
    }
}

/// `n` whole tokens.
pub fn tok(n: u64) -> U256 {
    dao::tokens(n)
}
