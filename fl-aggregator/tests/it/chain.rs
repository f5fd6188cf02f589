//! The chain the end-to-end tests run on, the embedded EVM or anvil: started with member keys
//! that can pay gas there, the test DAO deployed from its deployer, members funded by the team
//! and staked, and how this process and the binaries reach it.

use std::path::PathBuf;
use std::time::Duration;

use chain_anchor::EmbeddedAnchor;
use chain_anchor::alloy::hex;
use chain_anchor::alloy::node_bindings::{Anvil, AnvilInstance};
use chain_anchor::alloy::primitives::U256;
use chain_anchor::alloy::signers::local::PrivateKeySigner;
use dao::{Backend, Dao, DaoConfig, DaoDeployment, Role, RpcTimeouts, YEAR, deploy};
use fl_core::MemberKey;

/// The accounts an anvil of these tests funds.
const ANVIL_ACCOUNTS: usize = 16;

/// A chain signer over a member's key.
pub(crate) fn signer(key: &MemberKey) -> PrivateKeySigner {
    key.to_hex()
        .parse()
        .expect("a member key is a valid chain key")
}

/// The test DAO's configuration: `roles` are the guardian, slasher, team and investors; the
/// vesting started two years before `now`; the quorum floor is 1,000,000 tokens; `extra` is
/// appended (further sections).
pub(crate) fn dao_config(
    roles: [dao::chain_anchor::alloy::primitives::Address; 4],
    now: u64,
    extra: &str,
) -> DaoConfig {
    let [guardian, slasher, team, investors] = roles;
    DaoConfig::from_toml_str(&format!(
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
{extra}"#,
        vesting = now - 2 * YEAR
    ))
    .unwrap()
}

/// The keys' addresses as a TOML array of strings.
pub(crate) fn address_list(keys: &[MemberKey]) -> String {
    let quoted: Vec<String> = keys
        .iter()
        .map(|k| format!("\"{}\"", k.address()))
        .collect();
    format!("[{}]", quoted.join(", "))
}

/// An anvil on 127.0.0.1 (stopped by PID when dropped) and the keys of its first `keys` funded
/// accounts; `None` when anvil is missing and the test is to be skipped (see `anvil_path`).
pub(crate) fn funded_anvil(keys: usize) -> Option<(AnvilInstance, Vec<MemberKey>)> {
    let path = crate::anchor_rpc::anvil_path()?;
    let anvil = Anvil::new()
        .path(path)
        .port(0u16)
        .args(["--host", "127.0.0.1", "--accounts"])
        .arg(ANVIL_ACCOUNTS.to_string())
        .timeout(30_000)
        .try_spawn()
        .expect("anvil starts");
    let keys: Vec<MemberKey> = anvil
        .keys()
        .iter()
        .take(keys)
        .map(|k| MemberKey::from_hex(&hex::encode(k.to_bytes())).unwrap())
        .collect();
    Some((anvil, keys))
}

/// The chain: where its state is and how to reach it from this process and from the binaries.
pub(crate) struct Chain {
    /// Embedded: the state folder.
    state: Option<PathBuf>,
    /// Embedded: the chain as this process holds it, between two [`Chain::release`]s (one
    /// process at a time may hold an embedded chain: each writes its whole state).
    held: std::sync::Mutex<Option<EmbeddedAnchor>>,
    anvil: Option<AnvilInstance>,
    pub(crate) deployment: Option<DaoDeployment>,
}

impl Chain {
    /// A fresh chain and `keys` member keys that can pay gas there: an embedded EVM whose state
    /// is in `state` and generated keys, or (`embedded` false) an anvil and the keys of its
    /// funded accounts. `None` when anvil is wanted and missing (see `anvil_path`).
    pub(crate) fn start(
        embedded: bool,
        state: PathBuf,
        keys: usize,
    ) -> Option<(Chain, Vec<MemberKey>)> {
        if embedded {
            EmbeddedAnchor::open(&state).unwrap();
            let keys = (0..keys).map(|_| MemberKey::generate()).collect();
            return Some((Chain::embedded(state), keys));
        }
        let (anvil, funded) = funded_anvil(keys)?;
        assert_eq!(funded.len(), keys, "anvil funds {ANVIL_ACCOUNTS} accounts");
        Some((Chain::anvil(anvil), funded))
    }

    /// The embedded chain whose state is in `state`.
    fn embedded(state: PathBuf) -> Self {
        Self {
            state: Some(state),
            held: Default::default(),
            anvil: None,
            deployment: None,
        }
    }

    /// A running anvil.
    fn anvil(anvil: AnvilInstance) -> Self {
        Self {
            state: None,
            held: Default::default(),
            anvil: Some(anvil),
            deployment: None,
        }
    }

    /// The anvil's endpoint (`None` on the embedded chain).
    pub(crate) fn rpc_url(&self) -> Option<String> {
        self.anvil.as_ref().map(AnvilInstance::endpoint)
    }

    /// The key that deploys the DAO: the embedded aggregator's on the embedded chain (the
    /// checkpoint registry's admin there), `keys[0]` on anvil.
    pub(crate) fn deployer(&self, keys: &[MemberKey]) -> MemberKey {
        if self.state.is_some() {
            MemberKey::from_hex(&hex::encode(chain_anchor::embedded_aggregator_key())).unwrap()
        } else {
            keys[0].clone()
        }
    }

    pub(crate) fn backend(&self, key: &MemberKey) -> Backend {
        match (&self.state, &self.anvil) {
            (Some(dir), _) => {
                let mut held = self.held.lock().unwrap();
                let anchor = held.get_or_insert_with(|| EmbeddedAnchor::open(dir).unwrap());
                Backend::embedded(anchor, signer(key).address())
            }
            (None, Some(anvil)) => {
                let timeouts = RpcTimeouts {
                    request: Duration::from_secs(10),
                    receipt: Duration::from_secs(30),
                    poll: Duration::from_millis(10),
                };
                Backend::rpc_with_signer(&anvil.endpoint(), signer(key), timeouts).unwrap()
            }
            _ => unreachable!(),
        }
    }

    /// Deploys the test DAO from the [`Chain::deployer`]: [`dao_config`] with `keys` 1 to 4 as
    /// guardian, slasher, team and investors and `extra` appended; the team claims its vested
    /// tokens (it funds the members).
    pub(crate) async fn deploy_dao(
        &mut self,
        keys: &[MemberKey],
        extra: &str,
    ) -> (DaoDeployment, DaoConfig) {
        let root = self.backend(&self.deployer(keys));
        let now = root.now().await.unwrap();
        let config = dao_config([1, 2, 3, 4].map(|i| keys[i].address()), now, extra);
        let deployment = deploy(&config, &root).await.expect("deploys");
        self.deployment = Some(deployment.clone());
        self.dao(&keys[3])
            .claim_vesting(deployment.team_vesting)
            .await
            .unwrap();
        (deployment, config)
    }

    /// `team` sends `key` `amount`, which `key` stakes as `role`.
    pub(crate) async fn fund_and_stake(
        &self,
        team: &Dao,
        key: &MemberKey,
        role: Role,
        amount: U256,
    ) {
        team.transfer(key.address(), amount).await.unwrap();
        self.dao(key).stake(role, amount).await.unwrap();
    }

    /// Lets go of the embedded chain before a process uses it (handles made before must not
    /// be used after); reopened on the next look.
    pub(crate) fn release(&self) {
        self.held.lock().unwrap().take();
    }

    pub(crate) fn dao(&self, key: &MemberKey) -> Dao {
        Dao::new(self.backend(key), self.deployment.clone().unwrap())
    }

    /// `fl-client claim`'s chain arguments.
    pub(crate) fn claim_args(&self) -> Vec<String> {
        match (&self.state, &self.anvil) {
            (Some(dir), _) => vec!["--chain-state".into(), dir.display().to_string()],
            (None, Some(anvil)) => vec!["--rpc-url".into(), anvil.endpoint()],
            _ => unreachable!(),
        }
    }
}
