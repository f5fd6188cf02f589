//! Members from the chain: a live aggregator on loopback whose members are decided by the DAO's
//! Staking contract on the embedded EVM. A non-staked address is refused with
//! PERMISSION_DENIED naming "no stake", a jailed one "jailed", and an address that stakes while
//! the aggregator runs is admitted without restarting it.

use std::sync::Arc;
use std::time::Duration;

use chain_anchor::EmbeddedAnchor;
use chain_anchor::alloy::node_bindings::AnvilInstance;
use dao::{Backend, Dao, Membership, Role, RpcTimeouts, deploy, tokens};
use fl_aggregator::membership::{ChainMembers, MembershipSource, Refusal};
use fl_aggregator::metrics::AggregatorMetrics;
use fl_aggregator::service::{ServiceConfig, federation_with};
use fl_aggregator::{Engine, EngineConfig};
use fl_core::wire::pb;
use fl_core::{FedAvg, MemberKey, ParamVec, StrategyConfig};
use tokio::sync::oneshot;
use tokio_stream::wrappers::TcpListenerStream;
use tonic::Code;

use crate::chain::{dao_config, funded_anvil, signer};
use crate::grpc::Raw;

/// A DAO on a fresh chain (embedded EVM or anvil), the team's vesting claimed (the team funds
/// members), and keys for members that can pay gas there.
struct Chain {
    root: Backend,
    team: Dao,
    slasher: Dao,
    deployment: dao::DaoDeployment,
    /// Member keys not used yet.
    keys: std::sync::Mutex<Vec<MemberKey>>,
    _anvil: Option<AnvilInstance>,
    _dir: tempfile::TempDir,
}

impl Chain {
    /// A fresh embedded EVM.
    async fn embedded() -> Chain {
        Self::embedded_in(tempfile::tempdir().unwrap(), "").await
    }

    /// A fresh embedded EVM with its state in `dir/sub`.
    async fn embedded_in(dir: tempfile::TempDir, sub: &str) -> Chain {
        let anchor = EmbeddedAnchor::open(&dir.path().join(sub)).unwrap();
        let root = Backend::embedded(&anchor, EmbeddedAnchor::default_sender());
        let keys = (0..10).map(|_| MemberKey::generate()).collect();
        Self::build(root, keys, None, dir).await
    }

    /// A fresh anvil on 127.0.0.1 (stopped by PID when dropped); `None` when skipped.
    async fn anvil() -> Option<Chain> {
        let (anvil, keys) = funded_anvil(10)?;
        let timeouts = RpcTimeouts {
            request: Duration::from_secs(10),
            receipt: Duration::from_secs(20),
            poll: Duration::from_millis(10),
        };
        let root = Backend::rpc_with_signer(&anvil.endpoint(), signer(&keys[0]), timeouts).unwrap();
        let dir = tempfile::tempdir().unwrap();
        Some(Self::build(root, keys, Some(anvil), dir).await)
    }

    /// Deploys with keys 1 to 4 as guardian, slasher, team and investors; 5 to 9 are members.
    async fn build(
        root: Backend,
        mut keys: Vec<MemberKey>,
        anvil: Option<AnvilInstance>,
        dir: tempfile::TempDir,
    ) -> Chain {
        let roles = [1, 2, 3, 4].map(|i| keys[i].address());
        let config = dao_config(roles, root.now().await.unwrap(), "");
        let deployment = deploy(&config, &root).await.expect("deploys");
        let dao =
            |k: &MemberKey| Dao::new(root.with_signer(signer(k)).unwrap(), deployment.clone());
        let team = dao(&keys[3]);
        team.claim_vesting(deployment.team_vesting).await.unwrap();
        let slasher = dao(&keys[2]);
        let members = keys.split_off(5);
        Chain {
            team,
            slasher,
            root,
            deployment,
            keys: std::sync::Mutex::new(members),
            _anvil: anvil,
            _dir: dir,
        }
    }

    /// A member key that can pay gas on this chain.
    fn key(&self) -> MemberKey {
        self.keys.lock().unwrap().pop().expect("a member key left")
    }

    /// `key`'s account on the chain.
    fn member(&self, key: &MemberKey) -> Dao {
        Dao::new(
            self.root.with_signer(signer(key)).unwrap(),
            self.deployment.clone(),
        )
    }

    /// Funds `key` with `n` tokens and stakes them as a training node.
    async fn stake(&self, key: &MemberKey, n: u64) {
        self.team.transfer(key.address(), tokens(n)).await.unwrap();
        self.member(key)
            .stake(Role::Training, tokens(n))
            .await
            .unwrap();
    }

    fn source(&self) -> ChainMembers {
        ChainMembers::new(
            Dao::new(self.root.clone(), self.deployment.clone()),
            Role::Training,
        )
    }
}

/// A live aggregator on 127.0.0.1 whose members come from `chain`; stopped when dropped.
struct Live {
    addr: std::net::SocketAddr,
    _stop: oneshot::Sender<()>,
}

async fn start(chain: &Chain) -> Live {
    start_with_source(Arc::new(chain.source())).await
}

async fn start_with_source(source: Arc<dyn MembershipSource>) -> Live {
    let schema = crate::support::schema();
    let engine = Engine::new(
        EngineConfig {
            num_rounds: 3,
            min_available_clients: 1,
            fit_timeout: Duration::from_secs(20),
            // A member that does not answer an evaluation holds the round this long.
            evaluate_timeout: Duration::from_secs(1),
            seed: 1,
            release_params_during_fit: false,
        },
        Box::new(FedAvg::new(StrategyConfig {
            min_fit_clients: 1,
            ..Default::default()
        })),
        ParamVec::zeros(schema),
    );
    let mut config = ServiceConfig::new("bad-input", Vec::new());
    config.max_chunk_bytes = 8;
    config.handshake_timeout = Duration::from_secs(5);
    let (service, coordinator) =
        federation_with(engine, config, Arc::new(AggregatorMetrics::new()), source);
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let (stop_tx, stop_rx) = oneshot::channel::<()>();
    tokio::spawn(
        fl_aggregator::service::transport()
            .add_service(service.into_server())
            .serve_with_incoming(TcpListenerStream::new(listener)),
    );
    tokio::spawn(coordinator.run(|_| {}, async {
        let _ = stop_rx.await;
    }));
    Live {
        addr,
        _stop: stop_tx,
    }
}

async fn refused(live: &Live, key: &MemberKey) -> tonic::Status {
    let schema = crate::support::schema();
    let (mut raw, _) = Raw::join(live.addr, key, key, &schema).await;
    raw.refusal().await
}

#[tokio::test]
async fn chain_membership_refuses_and_admits_on_the_embedded_evm() {
    refuses_no_stake_jailed_too_little_and_admits_a_new_staker(Chain::embedded().await).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn chain_membership_refuses_and_admits_on_anvil() {
    let Some(chain) = Chain::anvil().await else {
        return;
    };
    refuses_no_stake_jailed_too_little_and_admits_a_new_staker(chain).await;
}

async fn refuses_no_stake_jailed_too_little_and_admits_a_new_staker(chain: Chain) {
    let live = start(&chain).await;

    // Never staked: no stake.
    let stranger = MemberKey::generate();
    let status = refused(&live, &stranger).await;
    assert_eq!(status.code(), Code::PermissionDenied, "{status:?}");
    assert!(
        status.message().contains("no stake"),
        "{}",
        status.message()
    );

    // Staked, then jailed by the slasher: jailed.
    let jailed = chain.key();
    chain.stake(&jailed, 10_000).await;
    let now = chain.root.now().await.unwrap();
    chain
        .slasher
        .jail(jailed.address(), now + 86_400, Default::default())
        .await
        .unwrap();
    let status = refused(&live, &jailed).await;
    assert_eq!(status.code(), Code::PermissionDenied, "{status:?}");
    assert!(status.message().contains("jailed"), "{}", status.message());

    // Too little: 5,000 of 10,000.
    let small = chain.key();
    chain.stake(&small, 5_000).await;
    let status = refused(&live, &small).await;
    assert_eq!(status.code(), Code::PermissionDenied, "{status:?}");
    assert!(
        status.message().contains("too little"),
        "{}",
        status.message()
    );

    // Refused first, then stakes while the aggregator runs: admitted, and trains.
    let newcomer = chain.key();
    let status = refused(&live, &newcomer).await;
    assert!(
        status.message().contains("no stake"),
        "{}",
        status.message()
    );
    chain.stake(&newcomer, 10_000).await;
    let schema = crate::support::schema();
    let (mut raw, _) = Raw::join(live.addr, &newcomer, &newcomer, &schema).await;
    assert_eq!(raw.until_fit().await, 1, "admitted and asked to train");
}

/// Checked before every round: a member admitted and training is jailed during round 1; when
/// the round completes its session ends with PERMISSION_DENIED naming "jailed".
#[tokio::test]
async fn a_member_jailed_during_a_round_is_refused_before_the_next_on_the_embedded_evm() {
    jailed_during_a_round_is_refused_before_the_next(Chain::embedded().await).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_member_jailed_during_a_round_is_refused_before_the_next_on_anvil() {
    let Some(chain) = Chain::anvil().await else {
        return;
    };
    jailed_during_a_round_is_refused_before_the_next(chain).await;
}

async fn jailed_during_a_round_is_refused_before_the_next(chain: Chain) {
    let live = start(&chain).await;
    let member = chain.key();
    chain.stake(&member, 10_000).await;
    let schema = crate::support::schema();
    let (mut raw, session_id) = Raw::join(live.addr, &member, &member, &schema).await;
    let round = raw.until_fit().await;
    assert_eq!(round, 1);

    let now = chain.root.now().await.unwrap();
    chain
        .slasher
        .jail(member.address(), now + 86_400, Default::default())
        .await
        .unwrap();
    // The admission is cached for this round: the update is still taken.
    let params = ParamVec::new(schema.clone(), vec![1.0, 2.0]).unwrap();
    raw.send(pb::client_frame::Kind::Update(crate::grpc::header(
        &member, session_id, round, &params, 4,
    )))
    .await;
    raw.send(crate::grpc::chunk(
        round,
        0,
        0,
        crate::grpc::le(&[1.0, 2.0]),
    ))
    .await;
    let status = raw.refusal().await;
    assert_eq!(status.code(), Code::PermissionDenied, "{status:?}");
    assert!(status.message().contains("jailed"), "{}", status.message());
}

/// Admits every address once, then cannot reach its chain.
struct FlakyChain(std::sync::Mutex<std::collections::BTreeSet<fl_core::Address>>);

impl MembershipSource for FlakyChain {
    fn check(&self, address: fl_core::Address) -> fl_aggregator::membership::CheckFuture<'_> {
        let first = self.0.lock().unwrap().insert(address);
        Box::pin(async move {
            if first {
                Ok(())
            } else {
                Err(Refusal::Unavailable {
                    address,
                    reason: "connection refused".into(),
                })
            }
        })
    }
}

/// An endpoint outage between rounds does not eject a member admitted before it: it is asked to
/// train the next round.
#[tokio::test]
async fn an_unreachable_chain_between_rounds_keeps_admitted_members() {
    let schema = crate::support::schema();
    let member = MemberKey::generate();
    let live = start_with_source(Arc::new(FlakyChain(Default::default()))).await;
    let (mut raw, session_id) = Raw::join(live.addr, &member, &member, &schema).await;
    assert_eq!(raw.until_fit().await, 1);
    let params = ParamVec::new(schema.clone(), vec![1.0, 2.0]).unwrap();
    raw.send(pb::client_frame::Kind::Update(crate::grpc::header(
        &member, session_id, 1, &params, 4,
    )))
    .await;
    raw.send(crate::grpc::chunk(1, 0, 0, crate::grpc::le(&[1.0, 2.0])))
        .await;
    // Round 2's fit instruction comes (after an evaluation the member leaves unanswered).
    let round = loop {
        match raw.next().await {
            Ok(pb::server_frame::Kind::Instruction(ins)) if ins.round == 2 => break ins.round,
            Ok(_) => continue,
            Err(status) => panic!("ejected: {status:?}"),
        }
    };
    assert_eq!(round, 2);
}

/// The source's typed refusals, variant by variant, and the per-round cache.
#[tokio::test]
async fn chain_source_gives_typed_refusals_and_caches_admissions_per_round() {
    let chain = Chain::embedded().await;
    let source = chain.source();
    let key = chain.key();
    assert!(matches!(
        source.check(key.address()).await,
        Err(Refusal::Stake {
            membership: Membership::NoStake,
            role: Role::Training,
            ..
        })
    ));
    let small = chain.key();
    chain.stake(&small, 5_000).await;
    let refusal = source.check(small.address()).await.unwrap_err();
    assert!(
        matches!(
            refusal,
            Refusal::Stake {
                membership: Membership::TooLittle { stake, minimum },
                ..
            } if stake == tokens(5_000) && minimum == tokens(10_000)
        ),
        "{refusal:?}"
    );
    assert_eq!(refusal.to_status().code(), Code::PermissionDenied);
    assert!(
        refusal
            .to_string()
            .ends_with("training node: too little (5000 staked, the role needs 10000)"),
        "{refusal}"
    );
    let jailed = chain.key();
    chain.stake(&jailed, 10_000).await;
    chain
        .slasher
        .jail(jailed.address(), 4_000_000_000, Default::default())
        .await
        .unwrap();
    assert!(matches!(
        source.check(jailed.address()).await,
        Err(Refusal::Stake {
            membership: Membership::Jailed {
                until: 4_000_000_000
            },
            ..
        })
    ));

    chain.stake(&key, 10_000).await;
    assert_eq!(source.check(key.address()).await, Ok(()));
    // Unstaking starts unbonding; the admission stays cached until the next round.
    chain
        .member(&key)
        .unstake(Role::Training, tokens(10_000))
        .await
        .unwrap();
    assert_eq!(
        source.check(key.address()).await,
        Ok(()),
        "cached this round"
    );
    source.new_round();
    assert!(matches!(
        source.check(key.address()).await,
        Err(Refusal::Stake {
            membership: Membership::Unbonding { .. },
            ..
        })
    ));
}

/// The federation file's `[members] source = "chain"`: a whole aggregator served from a file
/// (`server::serve`) over the DAO deployed on its embedded chain; two staked members train
/// every round over gRPC, a member without stake is refused for good naming "no stake".
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_federation_file_with_members_from_the_chain_serves_stakers_only() {
    let chain = Chain::embedded_in(tempfile::tempdir().unwrap(), "chain").await;
    let dir = chain._dir.path().to_owned();
    chain.deployment.save(&dir.join("dao.json")).unwrap();
    let stakers = [chain.key(), chain.key()];
    for k in &stakers {
        chain.stake(k, 10_000).await;
    }
    let stranger = MemberKey::generate();
    let port = {
        let probe = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        probe.local_addr().unwrap().port()
    };
    let toml = format!(
        r#"[federation]
id = "staked"
rounds = 2
min_clients = 2
fit_timeout_s = 30
evaluate_timeout_s = 30

[model]
kind = "test"

[data]
dataset = "test"

[strategy]
min_fit_clients = 2

[aggregator]
listen = "127.0.0.1:{port}"
checkpoints = "checkpoints"

[chain]
backend = "embedded"

[members]
source = "chain"
dao = "dao.json"
role = "training"
"#
    );
    let config = fl_core::config::FederationConfig::parse(&toml, &dir).unwrap();
    let node = |key: &MemberKey, samples: Vec<f32>| {
        let mut node =
            fl_client::node::NodeConfig::new(format!("http://127.0.0.1:{port}"), "staked");
        node.reconnect_attempts = 40;
        tokio::spawn(fl_client::node::run_node(
            node,
            key.clone(),
            crate::support::MeanEstimator::new(samples),
        ))
    };
    let members: Vec<_> = stakers
        .iter()
        .zip([vec![1.0, 3.0], vec![5.0, 7.0]])
        .map(|(k, s)| node(k, s))
        .collect();
    let refused = node(&stranger, vec![100.0]);
    let serve = fl_aggregator::server::serve(
        &config,
        ParamVec::zeros(crate::support::schema()),
        std::future::pending(),
        |_| {},
    );
    let outcome = tokio::time::timeout(Duration::from_secs(120), serve)
        .await
        .expect("the federation finishes")
        .unwrap();
    assert!(outcome.finished);
    for m in members {
        let _ = tokio::time::timeout(Duration::from_secs(30), m).await;
    }
    let err = tokio::time::timeout(Duration::from_secs(30), refused)
        .await
        .expect("the stranger gave up")
        .unwrap()
        .err()
        .expect("the stranger was refused");
    assert!(err.is_permanent(), "{err}");
    let fl_client::node::NodeError::Refused(status) = &err else {
        panic!("not a refusal: {err}");
    };
    assert_eq!(status.code(), Code::PermissionDenied, "{status:?}");
    assert!(
        status.message().contains("no stake"),
        "{}",
        status.message()
    );
    let store = fl_aggregator::checkpoint::CheckpointStore::open(
        &dir.join("checkpoints").to_string_lossy(),
    )
    .unwrap();
    let m = store.manifest(2).await.unwrap();
    assert_eq!(m.participants.len(), 2, "only the stakers trained");
}
