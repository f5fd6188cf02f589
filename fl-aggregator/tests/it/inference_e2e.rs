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

use chain_anchor::EmbeddedAnchor;
use chain_anchor::alloy::hex;
use chain_anchor::alloy::node_bindings::Anvil;
use chain_anchor::alloy::primitives::{Address, B256, U256};
use dao::settle::{RewardTree, RootMessage, VerdictMessage, sign_root, sign_verdict};
use dao::{Dao, Promotion, Role, Support, deploy, tokens};
use fl_aggregator::anchoring::{ChainSettings, RoundAnchorer};
use fl_aggregator::checkpoint::{CheckpointMeta, CheckpointStore, Manifest, Participant};
use fl_client::DeviceSpec;
use fl_client::gateway::{Gateway, GatewayAnswer, NodeEntry, challenge_requests};
use fl_client::model_card::{ModelCard, TrainingData};
use fl_client::predict::{Predictor, ProposalInput};
use fl_client::text::HashingConfig;
use fl_client::trainer::proposals::{EncodedProposals, ProposalModelSpec, ProposalTrainer};
use fl_core::inference::scoring::{
    InferenceRewardRules, ScoreReport, SignedScoreReport, combine, inference_rewards, served,
};
use fl_core::inference::{ConsensusPolicy, DEFAULT_TOLERANCE, InferenceRequest};
use fl_core::{ContentHash, MemberKey, ParamVec, Trainer};
use rand::{RngExt, SeedableRng};

use crate::e2e::{Procs, bin};
use crate::settle_e2e::{Chain, free_port, signer};

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

async fn staked_inference(embedded: bool) {
    let dir = tempfile::tempdir().unwrap();
    let run = dir.path().join("run");
    std::fs::create_dir_all(&run).unwrap();
    // Keys: 0 deployer, 1 guardian, 2 slasher, 3 team, 4 investors, then nodes, then validators.
    let wanted = 5 + NODES + VALIDATORS;
    let (mut chain, keys) = if embedded {
        let state = run.join("chain");
        EmbeddedAnchor::open(&state).unwrap();
        let keys: Vec<MemberKey> = (0..wanted).map(|_| MemberKey::generate()).collect();
        (Chain::embedded(state), keys)
    } else {
        let Some(path) = crate::anchor_rpc::anvil_path() else {
            return;
        };
        let anvil = Anvil::new()
            .path(path)
            .port(0u16)
            .args(["--host", "127.0.0.1", "--accounts", "16"])
            .timeout(30_000)
            .try_spawn()
            .expect("anvil starts");
        let keys: Vec<MemberKey> = anvil
            .keys()
            .iter()
            .take(wanted)
            .map(|k| MemberKey::from_hex(&hex::encode(k.to_bytes())).unwrap())
            .collect();
        (Chain::anvil(anvil), keys)
    };
    let nodes = &keys[5..5 + NODES];
    let validators = &keys[5 + NODES..];
    let deployer_key = if embedded {
        MemberKey::from_hex(&hex::encode(chain_anchor::embedded_aggregator_key())).unwrap()
    } else {
        keys[0].clone()
    };

    // The DAO: 3 validators, quorum 2, for both settlements.
    let root = chain.backend(&deployer_key);
    let now = root.now().await.unwrap();
    let validator_list: Vec<String> = validators
        .iter()
        .map(|k| format!("\"{}\"", k.address()))
        .collect();
    let config = crate::membership::dao_config(
        [1, 2, 3, 4].map(|i| keys[i].address()),
        now,
        &format!(
            "[settlement]\nvalidators = [{}]\nquorum = 2\nepoch_pool_tokens = 1000\n",
            validator_list.join(", ")
        ),
    );
    let deployment = deploy(&config, &root).await.expect("deploys");
    let dao_json = dir.path().join("dao.json");
    deployment.save(&dao_json).unwrap();
    chain.deployment = Some(deployment.clone());
    let team = chain.dao(&keys[3]);
    team.claim_vesting(deployment.team_vesting).await.unwrap();
    team.delegate(keys[3].address()).await.unwrap();
    // Votes count from the next timestamp (the token's clock): anvil mines many blocks a second.
    team.advance_time(2).await.unwrap();
    for k in nodes {
        team.transfer(k.address(), tokens(NODE_STAKE))
            .await
            .unwrap();
        chain
            .dao(k)
            .stake(Role::Inference, tokens(NODE_STAKE))
            .await
            .unwrap();
    }
    // A validator's signature counts while it holds the training minimum, unjailed.
    for k in validators {
        team.transfer(k.address(), tokens(10_000)).await.unwrap();
        chain
            .dao(k)
            .stake(Role::Training, tokens(10_000))
            .await
            .unwrap();
    }
    drop(root);
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
    let manifest_a = store.manifest(1).await.unwrap();
    let manifest_b = store.manifest(2).await.unwrap();
    promote(&chain.dao(&keys[3]), &manifest_a, &config).await;
    chain.release();

    // Five node processes; one signs wrong labels, one is slow.
    let mut ports = Vec::new();
    let mut procs = Procs(Vec::new());
    for (i, k) in nodes.iter().enumerate() {
        let key_file = dir.path().join(format!("node-{i}.key"));
        fl_node::write_key_file(k, &key_file).unwrap();
        let port = free_port();
        ports.push(port);
        let mut cmd = Command::new(bin("fl-client"));
        cmd.args(["serve", "--model"])
            .arg(&checkpoints)
            .arg("--key")
            .arg(&key_file)
            .args([
                "--listen",
                &format!("127.0.0.1:{port}"),
                "--watch-secs",
                "1",
            ])
            .arg("--dao")
            .arg(&dao_json)
            .args(["--federation", FEDERATION])
            .args(chain.claim_args())
            .stdout(Stdio::null())
            .stderr(Stdio::null());
        match i {
            WRONG => {
                cmd.args(["--misbehave", "wrong-label"]);
            }
            SLOW => {
                cmd.args(["--misbehave", &format!("slow={SLOW_MS}")]);
            }
            _ => {}
        }
        procs.0.push(cmd.spawn().unwrap());
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
    let stakes = fl_client::registry::inference_stakes(&chain.dao(&keys[3]), &node_addresses)
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
    let predictor_a = Predictor::with_params(&checkpoints, &model_a).unwrap();
    let predictor_b = Predictor::with_params(&checkpoints, &model_b).unwrap();

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
    promote(&chain.dao(&keys[3]), &manifest_b, &config).await;
    let promoted = fl_client::registry::promoted_model(&chain.dao(&keys[3]), FEDERATION)
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

    // Three validators challenge every staked node with real proposals and sign their reports.
    let mut reports = Vec::new();
    let mut evidence = Vec::new();
    for (v, key) in validators.iter().enumerate() {
        let own = Gateway::new(entries.clone(), policy, Duration::from_secs(5)).unwrap();
        own.set_stakes(stakes.clone());
        let challenges = requests(100 + 4 * v, 4);
        let outcome = own
            .challenge(&predictor_b, &challenges, DEFAULT_TOLERANCE)
            .await;
        evidence.extend(outcome.evidence);
        reports.push(SignedScoreReport::sign(
            key,
            ScoreReport {
                epoch: 1,
                model: model_b,
                observations: outcome.observations,
            },
        ));
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
