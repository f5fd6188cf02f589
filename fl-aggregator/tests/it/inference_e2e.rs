//! Decentralised inference end to end, on the embedded EVM and on anvil, with real node
//! processes: a DAO is deployed, five inference nodes stake, two checkpoints of a proposal model
//! are anchored and the first is promoted through vote, queue and the 7-day timelock. Five
//! `fl-client serve --dao` processes load the promoted model by its content address; one signs
//! wrong labels, one is slow, one is killed mid-run. A 3-of-5 gateway answers every request
//! with the label a local recomputation gives; the second checkpoint is promoted mid-run, the
//! nodes switch within a bound and no answer mixes models. Three validators challenge the nodes,
//! their signed reports combine into standings (the wrong node at accuracy 0, the slow one
//! slow), the wrong node is slashed on its inference stake with evidence anyone re-checks and is
//! never selected again, and the honest nodes are paid from the inference pool by a root the
//! validators sign, claimed for exactly their leaves.
//!
//! Every process is bound to 127.0.0.1 and killed by PID when the test ends (also on failure).

use std::collections::BTreeMap;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use chain_anchor::alloy::primitives::{Address, B256, U256};
use dao::settle::{RewardTree, RootMessage, VerdictMessage, sign_root, sign_verdict};
use dao::{Dao, Promotion, Role, Support, tokens};
use fl_aggregator::anchoring::{ChainSettings, RoundAnchorer};
use fl_aggregator::checkpoint::{CheckpointMeta, CheckpointStore, Manifest, Participant};
use fl_client::DeviceSpec;
use fl_client::gateway::{Gateway, GatewayAnswer, NodeEntry, challenge_requests};
use fl_client::ledger::PaidRequest;
use fl_client::model_card::{ModelCard, TrainingData};
use fl_client::predict::{Predictor, ProposalInput};
use fl_client::text::HashingConfig;
use fl_client::trainer::proposals::{EncodedProposals, ProposalModelSpec, ProposalTrainer};
use fl_core::inference::scoring::{
    InferenceRewardRules, SignedScoreReport, combine, inference_rewards, served,
};
use fl_core::inference::{ConsensusPolicy, DEFAULT_TOLERANCE, InferenceRequest};
use fl_core::{ContentHash, MemberKey, ParamVec, Trainer};
use rand::{RngExt, SeedableRng};

use crate::chain::{Chain, address_list, signer};
use crate::e2e::{Procs, bin};
use crate::settle_e2e::{free_port, run_ok};

const FEDERATION: &str = "inference-e2e";
/// Five nodes of the scenario and a spare, so that 3-of-5 is a choice among the nodes
/// (the slow node's falling weight matters) and the killed node's requests have somewhere to go.
const NODES: usize = 6;
const WRONG: usize = 1;
const SLOW: usize = 2;
const KILLED: usize = 4;
const VALIDATORS: usize = 3;
const NODE_STAKE: u64 = 5_000;
/// The slow node's delay: within the gateway's per-node timeout, so it still counts.
const SLOW_MS: u64 = 700;
const TIMEOUT_MS: u64 = 2_000;

/// A small proposal model: the architecture's initial parameters moved by seeded noise, so two
/// seeds are two models with different answers.
fn model(seed: u64) -> (ModelCard, ParamVec) {
    let spec = ProposalModelSpec {
        featurizer: HashingConfig {
            buckets_log2: 9,
            max_tokens: 128,
            ..Default::default()
        },
        dim: 4,
        ..Default::default()
    };
    let trainer =
        ProposalTrainer::new(&spec, DeviceSpec::Cpu, EncodedProposals::new(), None, 1).unwrap();
    let initial = trainer.get_parameters();
    let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(seed);
    let values = initial
        .values()
        .iter()
        .map(|v| v + rng.random_range(-0.5f32..0.5))
        .collect();
    let params = ParamVec::new(initial.schema().clone(), values).unwrap();
    let training = TrainingData {
        corpus: "none".into(),
        corpus_cid: ContentHash::of(b"corpus"),
        sources: Vec::new(),
        split: "none".into(),
        split_cid: ContentHash::of(b"split"),
        communities: BTreeMap::new(),
        procedure: format!("initial parameters plus seeded noise ({seed})"),
    };
    let card = ModelCard::new(
        spec,
        training,
        BTreeMap::from([("accuracy".to_string(), 0.5)]),
        params.schema().hash(),
        params.content_hash(),
    );
    (card, params)
}

/// Saves `round` of the federation with its card.
async fn publish(store: &CheckpointStore, round: u64, seed: u64) -> (Manifest, ContentHash) {
    let (card, params) = model(seed);
    let card_cid = store
        .put_card(card.to_canonical_json().unwrap())
        .await
        .unwrap();
    let meta = CheckpointMeta::new(FEDERATION, round, ContentHash::of(b"config"))
        .with_participants([Participant::new("client-0")])
        .with_model_card(card_cid);
    (
        store.save(meta, &params).await.unwrap(),
        params.content_hash(),
    )
}

/// Proposes promoting `manifest`'s checkpoint, votes for it with the team, queues it, waits
/// out the timelock and executes it.
async fn promote(team: &Dao, manifest: &Manifest, config: &dao::DaoConfig) {
    let promotion = Promotion::from_manifest_json(&serde_json::to_vec(manifest).unwrap()).unwrap();
    let g = &config.governance;
    let proposal = team
        .propose_promotion(&promotion, &format!("round {}", manifest.round))
        .await
        .unwrap();
    team.advance_time(g.voting_delay_secs + 1).await.unwrap();
    team.vote(proposal.id, Support::For).await.unwrap();
    team.advance_time(g.voting_period_secs + 1).await.unwrap();
    team.queue(&proposal).await.unwrap();
    team.advance_time(g.timelock_delay_secs + 1).await.unwrap();
    team.execute(&proposal).await.unwrap();
}

/// `GET /v1/model` of the node at `port`: the CID it serves, `None` when it does not answer.
fn served_model(port: u16) -> Option<String> {
    use std::io::{Read, Write};
    let mut s = std::net::TcpStream::connect(("127.0.0.1", port)).ok()?;
    s.set_read_timeout(Some(Duration::from_secs(2))).ok()?;
    write!(
        s,
        "GET /v1/model HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n"
    )
    .ok()?;
    let mut text = String::new();
    s.read_to_string(&mut text).ok()?;
    let body = text.split("\r\n\r\n").nth(1)?;
    let v: serde_json::Value = serde_json::from_str(body).ok()?;
    v["model"].as_str().map(str::to_owned)
}

/// Waits (at most `within`) until every node of `ports` serves `cid`; returns how long it took.
fn wait_serving(ports: &[u16], cid: &ContentHash, within: Duration) -> Duration {
    let start = Instant::now();
    let want = cid.to_string();
    loop {
        let now: Vec<Option<String>> = ports.iter().map(|p| served_model(*p)).collect();
        if now.iter().all(|m| m.as_deref() == Some(want.as_str())) {
            return start.elapsed();
        }
        assert!(
            start.elapsed() < within,
            "nodes serve {now:?}, not {want} after {within:?}"
        );
        std::thread::sleep(Duration::from_millis(200));
    }
}

/// Real proposals of the shipped corpus as requests, each with a fresh nonce.
fn requests(from: usize, n: usize) -> Vec<InferenceRequest> {
    let corpus = fl_client::data::proposals::load_shipped().unwrap();
    let inputs: Vec<ProposalInput> = corpus.proposals[from..from + n]
        .iter()
        .map(|p| ProposalInput {
            community: p.community.clone(),
            id: p.id.clone(),
            title: p.title.clone(),
            text: p.text.chars().take(4_000).collect(),
        })
        .collect();
    challenge_requests(
        &inputs,
        &mut rand_chacha::ChaCha8Rng::seed_from_u64(from as u64),
    )
}

/// The label `predictor` gives `request`.
fn expected(predictor: &Predictor, request: &InferenceRequest) -> String {
    predictor
        .predict(&[ProposalInput {
            community: request.community.clone(),
            id: request.id.clone(),
            title: request.title.clone(),
            text: request.text.clone(),
        }])
        .unwrap()
        .remove(0)
        .label
}

/// A deployed DAO with staked inference nodes, two anchored checkpoints of the proposal model
/// and the first promoted.
struct World {
    dir: tempfile::TempDir,
    chain: Chain,
    /// 0 deployer, 1 guardian, 2 slasher, 3 team, 4 investors, then the nodes, the validators
    /// and `extra` more keys (on anvil all funded).
    keys: Vec<MemberKey>,
    nodes: std::ops::Range<usize>,
    validators: std::ops::Range<usize>,
    config: dao::DaoConfig,
    dao_json: std::path::PathBuf,
    checkpoints: std::path::PathBuf,
    manifests: [Manifest; 2],
    models: [ContentHash; 2],
}

impl World {
    /// `None` when anvil is wanted and missing (see `anvil_path`).
    async fn new(embedded: bool, nodes: usize, validators: usize, extra: usize) -> Option<World> {
        let dir = tempfile::tempdir().unwrap();
        let run = dir.path().join("run");
        std::fs::create_dir_all(&run).unwrap();
        let wanted = 5 + nodes + validators + extra;
        let (mut chain, keys) = Chain::start(embedded, run.join("chain"), wanted)?;
        let node_range = 5..5 + nodes;
        let validator_range = node_range.end..node_range.end + validators;

        // The DAO: the validators, quorum 2, for both settlements.
        let settlement = if validators > 0 {
            format!(
                "[settlement]\nvalidators = {}\nquorum = 2\nepoch_pool_tokens = 1000\n",
                address_list(&keys[validator_range.clone()])
            )
        } else {
            String::new()
        };
        let (deployment, config) = chain.deploy_dao(&keys, &settlement).await;
        let dao_json = dir.path().join("dao.json");
        deployment.save(&dao_json).unwrap();
        let team = chain.dao(&keys[3]);
        team.delegate(keys[3].address()).await.unwrap();
        // Votes count from the next timestamp (the token's clock): anvil mines many blocks a
        // second.
        team.advance_time(2).await.unwrap();
        for k in &keys[node_range.clone()] {
            chain
                .fund_and_stake(&team, k, Role::Inference, tokens(NODE_STAKE))
                .await;
        }
        // A validator's signature counts while it holds the training minimum, unjailed.
        for k in &keys[validator_range.clone()] {
            chain
                .fund_and_stake(&team, k, Role::Training, tokens(10_000))
                .await;
        }
        drop(team);
        chain.release();

        // Two checkpoints of the proposal model, anchored on the same chain.
        let checkpoints = run.join("checkpoints");
        let store = CheckpointStore::open(&checkpoints.to_string_lossy()).unwrap();
        let (manifest_a, model_a) = publish(&store, 1, 1).await;
        let (manifest_b, model_b) = publish(&store, 2, 2).await;
        let settings = if embedded {
            ChainSettings::embedded(run.clone())
        } else {
            let key_file = run.join("aggregator.key");
            fl_node::write_key_file(&keys[0], &key_file).unwrap();
            let table: toml::Table = toml::from_str(&format!(
                "backend = \"rpc\"\nurl = \"{}\"\nregistry = \"{}\"\nkey_file = \"{}\"\n\
                 chain_id = 31337\nqueue_dir = \"{}\"\nreceipt_timeout_secs = 20\n",
                chain.rpc_url().unwrap(),
                deployment.checkpoint_registry,
                key_file.display(),
                run.join("anchor-queue").display(),
            ))
            .unwrap();
            ChainSettings::parse(&table, &checkpoints.to_string_lossy()).unwrap()
        };
        {
            let mut anchorer = RoundAnchorer::open(&settings).unwrap();
            for m in [&manifest_a, &manifest_b] {
                anchorer.checkpoint_written(&store, m).await.unwrap();
            }
        }
        // The anchorer recorded each anchor in its manifest.
        let manifests = [
            store.manifest(1).await.unwrap(),
            store.manifest(2).await.unwrap(),
        ];
        promote(&chain.dao(&keys[3]), &manifests[0], &config).await;
        chain.release();
        Some(World {
            dir,
            chain,
            keys,
            nodes: node_range,
            validators: validator_range,
            config,
            dao_json,
            checkpoints,
            manifests,
            models: [model_a, model_b],
        })
    }

    fn nodes(&self) -> &[MemberKey] {
        &self.keys[self.nodes.clone()]
    }

    fn validators(&self) -> &[MemberKey] {
        &self.keys[self.validators.clone()]
    }

    fn team(&self) -> Dao {
        self.chain.dao(&self.keys[3])
    }

    /// Starts node `i` as an `fl-client serve --dao` process (`misbehave`: the development
    /// option); returns it and its port.
    fn start_node(&self, i: usize, misbehave: Option<&str>) -> (std::process::Child, u16) {
        let key_file = self.dir.path().join(format!("node-{i}.key"));
        fl_node::write_key_file(&self.nodes()[i], &key_file).unwrap();
        let port = free_port();
        let mut cmd = Command::new(bin("fl-client"));
        cmd.args(["serve", "--model"])
            .arg(&self.checkpoints)
            .arg("--key")
            .arg(&key_file)
            .args([
                "--listen",
                &format!("127.0.0.1:{port}"),
                "--watch-secs",
                "1",
            ])
            .arg("--dao")
            .arg(&self.dao_json)
            .args(["--federation", FEDERATION])
            .args(self.chain.claim_args())
            .stdout(Stdio::null())
            .stderr(Stdio::null());
        if let Some(m) = misbehave {
            cmd.args(["--misbehave", m]);
        }
        (cmd.spawn().unwrap(), port)
    }
}

async fn staked_inference(embedded: bool) {
    let Some(world) = World::new(embedded, NODES, VALIDATORS, 0).await else {
        return;
    };
    let chain = &world.chain;
    let nodes = world.nodes();
    let validators = world.validators();
    let config = &world.config;
    let checkpoints = &world.checkpoints;
    let [_, manifest_b] = &world.manifests;
    let [model_a, model_b] = world.models;

    // Six node processes; one signs wrong labels, one is slow.
    let mut ports = Vec::new();
    let mut procs = Procs(Vec::new());
    for i in 0..NODES {
        let slow = format!("slow={SLOW_MS}");
        let misbehave = match i {
            WRONG => Some("wrong-label"),
            SLOW => Some(slow.as_str()),
            _ => None,
        };
        let (child, port) = world.start_node(i, misbehave);
        procs.0.push(child);
        ports.push(port);
    }
    wait_serving(&ports, &model_a, Duration::from_secs(120));

    // The gateway: the nodes' stakes from the staking contract, 3 of 5.
    let entries: Vec<NodeEntry> = nodes
        .iter()
        .zip(&ports)
        .map(|(k, p)| NodeEntry {
            address: k.address().to_string(),
            url: format!("http://127.0.0.1:{p}"),
            stake: 0.0,
        })
        .collect();
    let node_addresses: Vec<Address> = nodes.iter().map(MemberKey::address).collect();
    let stakes = fl_client::registry::inference_stakes(&world.team(), &node_addresses)
        .await
        .unwrap();
    chain.release();
    assert!(
        stakes.values().all(|s| *s == NODE_STAKE as f64),
        "{stakes:?}"
    );
    let policy = ConsensusPolicy::default();
    let gateway = Gateway::new(entries.clone(), policy, Duration::from_millis(TIMEOUT_MS)).unwrap();
    gateway.set_stakes(stakes.clone());
    let predictor_a = Predictor::with_params(checkpoints, &model_a).unwrap();
    let predictor_b = Predictor::with_params(checkpoints, &model_b).unwrap();

    let mut decided: Vec<GatewayAnswer> = Vec::new();
    let mut replaced = 0;
    let block = [7u8; 32];
    for (i, request) in requests(0, 12).iter().enumerate() {
        if i == 6 {
            let victim = &mut procs.0[KILLED];
            victim.kill().unwrap();
            victim.wait().unwrap();
        }
        let answer = gateway.analyse(request, &model_a, &block).await.unwrap();
        let c = &answer.consensus;
        assert_eq!(c.label, expected(&predictor_a, request), "request {i}");
        assert_eq!(c.model, model_a);
        assert!(!c.agreeing.contains(&nodes[WRONG].address()));
        if i >= 6 && answer.asked.contains(&nodes[KILLED].address()) {
            assert!(
                answer.asked.len() > policy.redundancy,
                "re-sent past the killed node"
            );
            replaced += 1;
        }
        decided.push(answer);
    }
    let scores = gateway.scores();
    let honest = scores.score(&nodes[0].address());
    let wrong = scores.score(&nodes[WRONG].address());
    let slow = scores.score(&nodes[SLOW].address());
    assert_eq!(wrong.agreed, 0);
    assert!(wrong.disagreed > 0);
    assert!(
        slow.agreed > 0 && slow.latency_s >= SLOW_MS as f64 / 1000.0,
        "the slow node answers right, late: {slow:?}"
    );
    assert!(scores.score(&nodes[KILLED].address()).missing > 0);
    assert!(wrong.reputation() < honest.reputation());
    assert!(
        slow.reputation() < honest.reputation(),
        "the slow node loses weight"
    );
    let weights: BTreeMap<Address, f64> = gateway
        .candidates()
        .into_iter()
        .map(|c| (c.node, c.weight))
        .collect();
    assert!(weights[&nodes[SLOW].address()] < weights[&nodes[0].address()]);
    assert!(replaced > 0, "the killed node was selected after it died");

    // Governance promotes the second checkpoint mid-run: the live nodes switch within a bound.
    promote(&world.team(), manifest_b, config).await;
    let promoted = fl_client::registry::promoted_model(&world.team(), FEDERATION)
        .await
        .unwrap();
    chain.release();
    assert_eq!(promoted, Some(model_b));
    let live: Vec<u16> = (0..NODES)
        .filter(|i| *i != KILLED)
        .map(|i| ports[i])
        .collect();
    let switched = wait_serving(&live, &model_b, Duration::from_secs(60));
    eprintln!("nodes switched to the promoted model in {switched:?}");
    for (i, request) in requests(12, 8).iter().enumerate() {
        let answer = gateway.analyse(request, &model_b, &block).await.unwrap();
        let c = &answer.consensus;
        assert_eq!(c.model, model_b);
        assert_eq!(c.label, expected(&predictor_b, request), "request {i}");
        for a in &c.answers {
            if c.agreeing.contains(&a.node) {
                assert_eq!(a.statement.model, model_b, "no answer mixes models");
            }
        }
        decided.push(answer);
    }

    // Three validators, each an `fl-client challenge` process, challenge every staked node with
    // real proposals, sign their reports and write the evidence of wrong answers.
    let nodes_toml = world.dir.path().join("nodes.toml");
    let list: String = entries
        .iter()
        .map(|e| {
            format!(
                "[[node]]\naddress = \"{}\"\nurl = \"{}\"\nstake = 1.0\n",
                e.address, e.url
            )
        })
        .collect();
    std::fs::write(&nodes_toml, list).unwrap();
    let mut reports = Vec::new();
    let mut evidence = Vec::new();
    for (v, key) in validators.iter().enumerate() {
        let key_file = world.dir.path().join(format!("validator-{v}.key"));
        fl_node::write_key_file(key, &key_file).unwrap();
        let out = world.dir.path().join(format!("validator-{v}"));
        let printed = run_ok(
            Command::new(bin("fl-client"))
                .args(["challenge", "--nodes"])
                .arg(&nodes_toml)
                .arg("--model")
                .arg(checkpoints)
                .arg("--key")
                .arg(&key_file)
                .args([
                    "--epoch",
                    "1",
                    "--count",
                    "4",
                    "--timeout-ms",
                    "5000",
                    "--out",
                ])
                .arg(&out)
                .arg("--dao")
                .arg(&world.dao_json)
                .args(["--federation", FEDERATION])
                .args(chain.claim_args()),
        );
        assert!(printed.contains("evidence file(s)"), "{printed}");
        let report: SignedScoreReport =
            serde_json::from_slice(&std::fs::read(out.join("report.json")).unwrap()).unwrap();
        assert_eq!(report.validator, key.address());
        assert_eq!(report.report.model, model_b);
        reports.push(report);
        for file in std::fs::read_dir(out.join("evidence")).unwrap() {
            let path = file.unwrap().path();
            let e: fl_client::gateway::WrongAnswer =
                serde_json::from_slice(&std::fs::read(&path).unwrap()).unwrap();
            assert_eq!(
                path.file_stem().unwrap().to_string_lossy(),
                e.evidence_hash().to_string(),
                "evidence files are named by their hash"
            );
            evidence.push(e);
        }
    }
    let validator_stakes: BTreeMap<_, _> = validators.iter().map(|k| (k.address(), 1.0)).collect();
    let standings = combine(&reports, &validator_stakes, 1).unwrap();
    let wrong_standing = standings[&nodes[WRONG].address()];
    assert_eq!(wrong_standing.accuracy, 0.0);
    assert!(wrong_standing.wrong > 0);
    assert!(standings[&nodes[SLOW].address()].latency_ms >= SLOW_MS as u32);
    assert!(
        standings[&nodes[SLOW].address()].reputation < standings[&nodes[0].address()].reputation
    );
    assert_eq!(standings[&nodes[KILLED].address()].accuracy, 0.0);
    assert_eq!(standings[&nodes[0].address()].accuracy, 1.0);
    // The standings drive selection: a node the validators caught lying (or found dead) has
    // no weight left.
    let ranked = Gateway::new(entries.clone(), policy, Duration::from_secs(1)).unwrap();
    ranked.set_stakes(stakes.clone());
    ranked.set_standings(standings.clone());
    let weights: BTreeMap<Address, f64> = ranked
        .candidates()
        .into_iter()
        .map(|c| (c.node, c.weight))
        .collect();
    assert_eq!(weights[&nodes[WRONG].address()], 0.0);
    assert_eq!(weights[&nodes[KILLED].address()], 0.0);
    assert!(weights[&nodes[0].address()] > weights[&nodes[SLOW].address()]);

    // The wrong node is slashed on its inference stake with evidence anyone re-checks.
    let case = evidence
        .iter()
        .find(|e| e.answer.node == nodes[WRONG].address())
        .expect("evidence against the wrong node")
        .clone();
    assert!(
        evidence
            .iter()
            .all(|e| e.answer.node == nodes[WRONG].address())
    );
    assert!(case.recheck(&predictor_b, DEFAULT_TOLERANCE));
    let poster = chain.dao(&validators[0]).inference_settlement();
    let params = poster.settlement_params().await.unwrap();
    let now = poster.now().await.unwrap();
    let verdict = VerdictMessage {
        member: nodes[WRONG].address(),
        evidence: B256::from(*case.evidence_hash().as_bytes()),
        fraction_bps: params.slash_bps,
        deadline: now + 3_600,
    };
    let domain = poster.settlement_domain().await.unwrap();
    let signatures: Vec<_> = validators[..2]
        .iter()
        .map(|k| sign_verdict(&signer(k), &domain, &verdict).unwrap())
        .collect();
    let (_, id) = poster.post_verdict(&verdict, &signatures).await.unwrap();
    poster
        .advance_time(params.challenge_window + 1)
        .await
        .unwrap();
    let (before, _, _) = poster
        .position(nodes[WRONG].address(), Role::Inference)
        .await
        .unwrap();
    let (training_before, _, _) = poster
        .position(nodes[WRONG].address(), Role::Training)
        .await
        .unwrap();
    poster.execute_verdict(id).await.unwrap();
    let (after, _, _) = poster
        .position(nodes[WRONG].address(), Role::Inference)
        .await
        .unwrap();
    assert_eq!(
        before - after,
        before * U256::from(params.slash_bps) / U256::from(10_000u32),
        "the governed fraction of the inference stake"
    );
    let (training_after, _, _) = poster
        .position(nodes[WRONG].address(), Role::Training)
        .await
        .unwrap();
    assert_eq!(training_after, training_before, "training stake untouched");
    let stakes_now = fl_client::registry::inference_stakes(&poster, &node_addresses)
        .await
        .unwrap();
    assert_eq!(stakes_now[&nodes[WRONG].address()], 0.0, "jailed");
    chain.release();
    gateway.set_stakes(stakes_now);
    for request in requests(40, 4) {
        let answer = gateway.analyse(&request, &model_b, &block).await.unwrap();
        assert!(!answer.asked.contains(&nodes[WRONG].address()));
        decided.push(answer);
    }

    // Rewards from the inference pool: served requests re-decided, the documents' rules.
    let count = served(
        decided.iter().map(|a| (&a.consensus, a.asked.as_slice())),
        &policy,
    );
    assert!(!count.contains_key(&nodes[WRONG].address()));
    let rewards = inference_rewards(&count, &standings, &InferenceRewardRules::default());
    let list: Vec<(Address, U256)> = rewards.iter().map(|(a, r)| (*a, U256::from(*r))).collect();
    let tree = RewardTree::new(&list).unwrap();
    let poster = chain.dao(&validators[1]).inference_settlement();
    let now = poster.now().await.unwrap();
    let message = RootMessage::of(
        1,
        &tree,
        now + params.challenge_window + params.min_claim_period + 86_400,
    );
    let domain = poster.settlement_domain().await.unwrap();
    let signatures: Vec<_> = validators[1..]
        .iter()
        .map(|k| sign_root(&signer(k), &domain, &message).unwrap())
        .collect();
    poster.post_root(&message, &signatures).await.unwrap();
    poster
        .advance_time(params.challenge_window + 1)
        .await
        .unwrap();
    for (node, amount) in tree.rewards() {
        let key = nodes.iter().find(|k| k.address() == node).unwrap();
        let claimer = chain.dao(key).inference_settlement();
        let before = claimer.balance_of(node).await.unwrap();
        claimer.claim_reward(1, &tree).await.unwrap();
        assert_eq!(claimer.balance_of(node).await.unwrap() - before, amount);
    }
    let honest_reward = rewards[&nodes[0].address()];
    assert_eq!(
        honest_reward,
        u128::from(count[&nodes[0].address()]) * 170_000_000_000_000_000,
        "accurate and fast: both bonuses"
    );
    chain.release();
    drop(procs);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn staked_nodes_answer_by_consensus_on_the_embedded_evm() {
    staked_inference(true).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn staked_nodes_answer_by_consensus_on_anvil() {
    staked_inference(false).await;
}

/// `GET path` of 127.0.0.1:`port`: the body.
fn get(port: u16, path: &str) -> String {
    use std::io::{Read, Write};
    let mut s = std::net::TcpStream::connect(("127.0.0.1", port)).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    write!(
        s,
        "GET {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n"
    )
    .unwrap();
    let mut text = String::new();
    s.read_to_string(&mut text).unwrap();
    text.split("\r\n\r\n").nth(1).unwrap_or("").to_owned()
}

/// `POST path` with `body` to 127.0.0.1:`port`: the status and the body (`0` when the
/// connection fails).
fn post(port: u16, path: &str, body: &[u8]) -> (u16, String) {
    use std::io::{Read, Write};
    let Ok(mut s) = std::net::TcpStream::connect(("127.0.0.1", port)) else {
        return (0, String::new());
    };
    s.set_read_timeout(Some(Duration::from_secs(30))).unwrap();
    let head = format!(
        "POST {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n\
         Content-Length: {}\r\nConnection: close\r\n\r\n",
        body.len()
    );
    // A server may answer (413) and close before reading a large body.
    let _ = s
        .write_all(head.as_bytes())
        .and_then(|()| s.write_all(body));
    let mut text = String::new();
    let _ = s.read_to_string(&mut text);
    let status = text
        .split_whitespace()
        .nth(1)
        .and_then(|c| c.parse().ok())
        .unwrap_or(0);
    (
        status,
        text.split("\r\n\r\n").nth(1).unwrap_or("").to_owned(),
    )
}

/// Starts `fl-client gateway` over `nodes_toml`, charging fees into `db`, settling every
/// `settle_secs`; waits (bounded) until it answers.
fn start_gateway(
    world: &World,
    nodes_toml: &std::path::Path,
    db: &str,
    key_file: &std::path::Path,
    settle_secs: u64,
    port: u16,
) -> std::process::Child {
    let mut cmd = Command::new(bin("fl-client"));
    cmd.args(["gateway", "--nodes"])
        .arg(nodes_toml)
        .arg("--dao")
        .arg(&world.dao_json)
        .args(["--federation", FEDERATION, "--db", db, "--key"])
        .arg(key_file)
        .args([
            "--settle-secs",
            &settle_secs.to_string(),
            "--refresh-secs",
            "1",
        ])
        .args(["--listen", &format!("127.0.0.1:{port}")])
        .args(["--redundancy", "3", "--quorum", "2"])
        .stdout(Stdio::null())
        .stderr(Stdio::null());
    match world.chain.rpc_url() {
        Some(url) => cmd.args(["--rpc-url", &url]),
        None => cmd
            .args(world.chain.claim_args())
            .args(["--block-hash", &format!("0x{}", "07".repeat(32))]),
    };
    let child = cmd.spawn().unwrap();
    let start = Instant::now();
    while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
        assert!(
            start.elapsed() < Duration::from_secs(60),
            "the gateway did not start"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    child
}

/// Fees end to end: a requester prepays, sends paid requests to an `fl-client gateway`
/// process that keeps its receipts in `backend`; hostile receipts are refused with their
/// status and the gateway keeps serving; the gateway is killed (SIGKILL) before settling and
/// restarted on the same database, which settles every accepted receipt in one batch: the
/// requester pays exactly those fees, half of them burnt.
async fn paid_requests(embedded: bool, backend: fl_db::Backend) {
    let Some(world) = World::new(embedded, 3, 0, 3).await else {
        return;
    };
    let db = fl_db::testing::TestDb::new(backend).await;
    let extra = &world.keys[world.validators.end..];
    let (requester, poor, gateway_key) = (&extra[0], &extra[1], &extra[2]);
    let team = world.team();
    team.transfer(requester.address(), tokens(100))
        .await
        .unwrap();
    let payer = world.chain.dao(requester);
    payer.deposit_fees(tokens(10)).await.unwrap();
    let domain = payer.fees_domain().await.unwrap();
    let (_, fee) = payer.fee_params().await.unwrap();
    let now = payer.now().await.unwrap();
    let supply0 = payer.total_supply().await.unwrap();
    world.chain.release();

    let mut procs = Procs(Vec::new());
    let mut entries = String::new();
    let mut ports = Vec::new();
    for i in 0..3 {
        let (child, port) = world.start_node(i, None);
        procs.0.push(child);
        ports.push(port);
        entries += &format!(
            "[[node]]\naddress = \"{}\"\nurl = \"http://127.0.0.1:{port}\"\nstake = 1.0\n",
            world.nodes()[i].address()
        );
    }
    wait_serving(&ports, &world.models[0], Duration::from_secs(120));
    let nodes_toml = world.dir.path().join("nodes.toml");
    std::fs::write(&nodes_toml, entries).unwrap();
    let key_file = world.dir.path().join("gateway.key");
    fl_node::write_key_file(gateway_key, &key_file).unwrap();
    let port = free_port();
    procs.0.push(start_gateway(
        &world,
        &nodes_toml,
        &db.url,
        &key_file,
        3_600,
        port,
    ));

    let predictor = Predictor::with_params(&world.checkpoints, &world.models[0]).unwrap();
    let gateway = gateway_key.address();
    let paid = |who: &MemberKey, request: &InferenceRequest, to, fee, nonce: u64, deadline| {
        let body = PaidRequest::sign(
            &signer(who),
            &domain,
            request.clone(),
            to,
            fee,
            U256::from(nonce),
            deadline,
        )
        .unwrap();
        serde_json::to_vec(&body).unwrap()
    };
    let good = requests(0, 8);
    let deadline = now + 30 * 86_400;
    for (i, request) in good[..6].iter().enumerate() {
        let (status, body) = post(
            port,
            "/v1/analyse",
            &paid(requester, request, gateway, fee, i as u64, deadline),
        );
        assert_eq!(status, 200, "request {i}: {body}");
        let answer: GatewayAnswer = serde_json::from_str(&body).unwrap();
        assert_eq!(answer.consensus.label, expected(&predictor, request));
    }

    // Hostile receipts: each refused with its status, nothing charged, serving goes on.
    let r = &good[6];
    let mut forged: PaidRequest =
        serde_json::from_slice(&paid(requester, r, gateway, fee, 50, deadline)).unwrap();
    forged.signature = PaidRequest::sign(
        &signer(poor),
        &domain,
        r.clone(),
        gateway,
        fee,
        U256::from(50),
        deadline,
    )
    .unwrap()
    .signature;
    let cases: Vec<(&str, Vec<u8>, u16, &str)> = vec![
        (
            "bad signature",
            serde_json::to_vec(&forged).unwrap(),
            403,
            "does not recover to the receipt's requester",
        ),
        (
            "no prepaid balance",
            paid(poor, r, gateway, fee, 1, deadline),
            402,
            "no prepaid balance",
        ),
        (
            "replayed nonce",
            paid(requester, r, gateway, fee, 0, deadline),
            409,
            "replayed",
        ),
        (
            "another gateway",
            paid(requester, r, poor.address(), fee, 51, deadline),
            403,
            "gateway",
        ),
        (
            "below the fee",
            paid(requester, r, gateway, fee - U256::from(1), 52, deadline),
            402,
            "fee",
        ),
        (
            "expired",
            paid(requester, r, gateway, fee, 53, now - 1),
            402,
            "expired",
        ),
        ("malformed", b"{\"request\": 3}".to_vec(), 400, "malformed"),
        (
            "oversized",
            vec![b' '; fl_client::serve::MAX_BODY_BYTES + 1],
            413,
            "",
        ),
    ];
    // A receipt for one request sent with another.
    let mut other: PaidRequest =
        serde_json::from_slice(&paid(requester, &good[7], gateway, fee, 54, deadline)).unwrap();
    other.request = r.clone();
    let other = serde_json::to_vec(&other).unwrap();
    let cases =
        cases
            .into_iter()
            .chain([("another request's receipt", other, 400, "pays for request")]);
    for (what, body, status, says) in cases {
        let (got, text) = post(port, "/v1/analyse", &body);
        assert_eq!(got, status, "{what}: {text}");
        assert!(text.contains(says), "{what}: {text}");
    }
    let (status, body) = post(
        port,
        "/v1/analyse",
        &paid(requester, r, gateway, fee, 6, deadline),
    );
    assert_eq!(status, 200, "serving goes on: {body}");

    // The gateway records the nodes' scores every refresh (1 s here).
    let scores_before =
        serde_json::from_str::<serde_json::Value>(&get(port, "/v1/scores")).unwrap();
    let node0 = world.nodes()[0].address().to_string();
    let agreed = scores_before[&node0]["agreed"].as_u64().unwrap();
    assert!(agreed >= 1, "{scores_before}");
    tokio::time::sleep(Duration::from_millis(2_500)).await;

    // Killed before settling: the seven receipts are in the database, none on chain.
    let victim = procs.0.last_mut().unwrap();
    victim.kill().unwrap();
    victim.wait().unwrap();
    let store = fl_db::Store::open(&db.url).await.unwrap();
    let counts = store.count_by_status().await.unwrap();
    assert_eq!((counts.pending, counts.settled, counts.rejected), (7, 0, 0));
    assert_eq!(
        store.pending_fees(&requester.address()).await.unwrap(),
        fee * U256::from(7)
    );
    let payer = world.chain.dao(requester);
    assert!(
        !payer
            .receipt_used(requester.address(), U256::ZERO)
            .await
            .unwrap()
    );
    world.chain.release();

    // Restarted on the same database: everything accepted is settled, in one transaction.
    procs.0.push(start_gateway(
        &world,
        &nodes_toml,
        &db.url,
        &key_file,
        1,
        port,
    ));
    let start = Instant::now();
    loop {
        let c = store.count_by_status().await.unwrap();
        if c.pending == 0 {
            assert_eq!((c.settled, c.rejected), (7, 0));
            break;
        }
        assert!(
            start.elapsed() < Duration::from_secs(60),
            "not settled: {c:?}"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    // Its node scores came back from the database.
    let scores_after = serde_json::from_str::<serde_json::Value>(&get(port, "/v1/scores")).unwrap();
    assert_eq!(
        scores_after[&node0]["agreed"].as_u64(),
        Some(agreed),
        "{scores_after}"
    );
    assert!(
        !store
            .score_history(&world.nodes()[0].address(), 10)
            .await
            .unwrap()
            .is_empty()
    );
    let payer = world.chain.dao(requester);
    for nonce in 0..7u64 {
        assert!(
            payer
                .receipt_used(requester.address(), U256::from(nonce))
                .await
                .unwrap()
        );
    }
    assert!(
        !payer
            .receipt_used(requester.address(), U256::from(50))
            .await
            .unwrap()
    );
    let charged = fee * U256::from(7);
    assert_eq!(
        payer.fee_balance(requester.address()).await.unwrap(),
        tokens(10) - charged
    );
    assert_eq!(
        supply0 - payer.total_supply().await.unwrap(),
        charged / U256::from(2),
        "half of the fees burnt"
    );
    world.chain.release();
    // A settled nonce stays spent.
    let (status, text) = post(
        port,
        "/v1/analyse",
        &paid(requester, &good[7], gateway, fee, 3, deadline),
    );
    assert_eq!(status, 409, "{text}");
    drop(procs);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn paid_requests_survive_a_gateway_kill_on_sqlite_and_the_embedded_evm() {
    paid_requests(true, fl_db::Backend::Sqlite).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn paid_requests_survive_a_gateway_kill_on_postgres_and_anvil() {
    paid_requests(false, fl_db::Backend::Postgres).await;
}
