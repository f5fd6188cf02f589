//! Homomorphic aggregation over real gRPC on loopback: four library nodes, three of which hold
//! the decryption committee's key shares (threshold 2) from a key ceremony run with the
//! ceremony's own messages. One committee member never shows up; the others upload encrypted
//! updates, two committee members decrypt the sum in several request slices, and the result is
//! the FedAvg of the three. The committee state is saved after every partial decryption.

use std::sync::Arc;
use std::time::Duration;

use fl_aggregator::{Engine, EngineConfig, HeCommittee, SecureSetup};
use fl_client::node::{NodeConfig, run_node};
use fl_core::secure::ceremony::{self, CeremonySpec};
use fl_core::secure::he::{CommitteeMember, CommitteeParams, CommitteeRole};
use fl_core::secure::{CommitteeConfig, MemberVerifier, SecureAggregationConfig, SecureProtocol};
use fl_core::{
    ClientId, EvaluateConfig, EvaluateResult, FedAvg, FitConfig, FitOutcome, MemberKey, Metrics,
    ParamVec, Schema, StrategyConfig, TensorSpec, Trainer, TrainerError,
};
use rand::SeedableRng;

use crate::support::{Served, serve};

const DIM: usize = 10_000;

fn schema() -> Arc<Schema> {
    Arc::new(Schema::new(vec![TensorSpec::new("w", [DIM])]).unwrap())
}

/// Moves every coordinate by `step` per fit, over `examples` examples.
struct Shift {
    schema: Arc<Schema>,
    values: Vec<f32>,
    step: f32,
    examples: u64,
}

impl Trainer for Shift {
    fn schema(&self) -> Arc<Schema> {
        self.schema.clone()
    }
    fn get_parameters(&self) -> ParamVec {
        ParamVec::new(self.schema.clone(), self.values.clone()).unwrap()
    }
    fn set_parameters(&mut self, params: &ParamVec) -> Result<(), TrainerError> {
        self.values = params.values().to_vec();
        Ok(())
    }
    fn fit(&mut self, _config: &FitConfig) -> Result<FitOutcome, TrainerError> {
        for v in &mut self.values {
            *v += self.step;
        }
        Ok(FitOutcome {
            num_examples: self.examples,
            metrics: Metrics::new(),
        })
    }
    fn evaluate(&mut self, _config: &EvaluateConfig) -> Result<EvaluateResult, TrainerError> {
        Ok(EvaluateResult {
            loss: 0.0,
            num_examples: 1,
            metrics: Metrics::new(),
        })
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn encrypted_updates_over_grpc_decrypt_to_fedavg_with_a_committee_member_absent() {
    let n = 4;
    let keys: Vec<MemberKey> = (0..n).map(|_| MemberKey::generate()).collect();
    let members: Vec<fl_core::Address> = keys.iter().map(|k| k.address()).collect();

    // The committee: members 0, 1, 2, any 2 decrypt. Small chunks (one LWE mask each) so the
    // aggregate is decrypted in several request slices below.
    let mut params = CommitteeParams::new(3, 2, 2, 20, n as u32).unwrap();
    params.he.chunk_values = params.he.lwe.lwe_dimension;
    let spec = CeremonySpec {
        federation_id: "he".into(),
        holders: members[..3].to_vec(),
        params,
        key_epoch: 0,
    };
    let mut rng = rand_chacha::ChaCha20Rng::seed_from_u64(11);
    let (secrets, commits): (Vec<_>, Vec<_>) = keys[..3]
        .iter()
        .map(|k| ceremony::commit(&spec, k, &mut rng).unwrap())
        .unzip();
    let deals: Vec<_> = keys[..3]
        .iter()
        .zip(&secrets)
        .map(|(k, s)| ceremony::deal(&spec, k, s, &commits, &mut rng).unwrap())
        .collect();
    let public_key = ceremony::public_key(&spec, &commits, &deals).unwrap();
    let verifier = MemberVerifier(Arc::new(members.clone()));
    let state_dir = tempfile::tempdir().unwrap();
    let roles: Vec<CommitteeRole> = secrets
        .iter()
        .map(|s| {
            let (key, member) = ceremony::finish(&spec, s, &commits, &deals).unwrap();
            assert_eq!(key, public_key);
            let path = state_dir.path().join(format!("state-{}", member.member()));
            CommitteeRole::new(member, verifier.clone()).with_persistence(Box::new(
                move |bytes: &[u8]| {
                    fl_client::committee::replace_private(&path, bytes).map_err(|e| e.to_string())
                },
            ))
        })
        .collect();

    let engine = Engine::new(
        EngineConfig {
            num_rounds: 1,
            min_available_clients: 3,
            fit_timeout: Duration::from_secs(60),
            evaluate_timeout: Duration::from_secs(30),
            seed: 1,
            release_params_during_fit: false,
        },
        Box::new(FedAvg::new(StrategyConfig {
            fraction_fit: 1.0,
            min_fit_clients: 3,
            fraction_evaluate: 0.0,
            ..Default::default()
        })),
        ParamVec::zeros(schema()),
    )
    .with_secure_aggregation(SecureSetup {
        config: SecureAggregationConfig {
            protocol: SecureProtocol::Homomorphic,
            modulus_bits: 20,
            clip_norm: 5.0,
            max_weight: 8,
            step_timeout_s: 30.0,
            committee: Some(CommitteeConfig {
                members: 3,
                threshold: 2,
                min_contributors: 2,
            }),
            ..Default::default()
        },
        members: Arc::new(members.clone()),
        session: fl_core::identity::random_nonce(),
        committee: Some(HeCommittee {
            params,
            public_key,
            members: (0..3).map(ClientId).collect(),
            // About two chunks' masks per request: the 5-chunk aggregate goes in 3 slices.
            max_request_bytes: 40 << 10,
        }),
    });
    let Served {
        addr,
        server,
        done,
        events: events_rx,
        stop: stop_tx,
    } = serve(engine, "he", &members).await;

    // Member 2 (a committee holder) never connects.
    let mut nodes = Vec::new();
    for i in [0usize, 1, 3] {
        let mut c = NodeConfig::new(format!("http://{addr}"), "he");
        c.members = Some(Arc::new(members.clone()));
        c.reconnect_attempts = 2;
        c.committee = roles.get(i).cloned();
        let trainer = Shift {
            schema: schema(),
            values: vec![0.0; DIM],
            step: 0.01 * (i + 1) as f32,
            examples: i as u64 + 1,
        };
        nodes.push(tokio::spawn(run_node(c, keys[i].clone(), trainer)));
    }
    for node in nodes {
        let (report, _) = tokio::time::timeout(Duration::from_secs(240), node)
            .await
            .expect("members finish within 240 s")
            .unwrap()
            .expect("members are served");
        assert_eq!(report.fits, 1);
        assert_eq!(report.refused, 0);
    }
    let (params_out, finished) = tokio::time::timeout(Duration::from_secs(30), done)
        .await
        .expect("the coordinator finished")
        .unwrap();
    let trace: Vec<String> = events_rx.try_iter().collect();
    assert!(finished, "{trace:#?}");
    assert!(
        trace
            .iter()
            .any(|e| e.contains("FitAggregated") && e.contains("num_results: 3")),
        "{trace:#?}"
    );
    // FedAvg of members 0, 1, 3: (1·0.01 + 2·0.02 + 4·0.04) / 7 = 0.03 in every coordinate.
    let values = params_out.values();
    assert_eq!(values.len(), DIM);
    for (i, v) in values.iter().enumerate() {
        assert!((v - 0.03).abs() < 1e-3, "coordinate {i}: {v} vs 0.03");
    }
    // The two decrypting members saved their state: round 1 is decrypted and stays refused
    // after a restart. The absent member has decrypted nothing.
    for m in 0..2 {
        let bytes = std::fs::read(state_dir.path().join(format!("state-{m}"))).unwrap();
        let restored = CommitteeMember::from_bytes(&bytes).unwrap();
        assert_eq!(restored.last_round(), Some(1), "member {m}");
    }
    assert!(!state_dir.path().join("state-2").exists());
    drop(stop_tx);
    server.abort();
}

/// The aggregator's side of a deployment's ceremony: it recomputes the joint key from the
/// holders' messages (the same key every holder reports), maps holders to client ids, and
/// refuses to start on an incomplete ceremony.
#[test]
fn the_aggregator_takes_the_committee_from_the_ceremony_directory() {
    use fl_client::committee::{commit_step, deal_step, finish_step};
    let dir = tempfile::tempdir().unwrap();
    let keys: Vec<MemberKey> = (0..4).map(|_| MemberKey::generate()).collect();
    let quoted = |keys: &[MemberKey]| {
        keys.iter()
            .map(|k| format!("\"{}\"", k.address()))
            .collect::<Vec<_>>()
            .join(", ")
    };
    // Holders are members 3, 1 and 0, in that committee order.
    let holders = [keys[3].clone(), keys[1].clone(), keys[0].clone()];
    let text = format!(
        "[federation]\nid = \"he-dao\"\nrounds = 1\nmin_clients = 3\n\
         [model]\nkind = \"mlp\"\n[data]\ndataset = \"digits\"\n\
         [secure_aggregation]\nprotocol = \"he\"\nmodulus_bits = 20\n\
         [secure_aggregation.committee]\nmembers = 3\nthreshold = 2\nmin_contributors = 2\n\
         [secure_aggregation.ceremony]\nholders = [{}]\ndir = \"ceremony\"\n\
         [members]\nallowed = [{}]\n",
        quoted(&holders),
        quoted(&keys)
    );
    let config = fl_core::config::FederationConfig::parse(&text, dir.path()).unwrap();
    let members = config.members().unwrap();
    let secret = |i: usize| dir.path().join(format!("secret-{i}"));
    for (i, k) in holders.iter().enumerate() {
        commit_step(&config, k, &secret(i)).unwrap();
    }
    // Dealing needs every commitment; the aggregator needs every dealing.
    let err = fl_aggregator::server::he_committee(&config, &members).unwrap_err();
    assert!(err.to_string().contains("fl-client committee"), "{err}");
    for (i, k) in holders.iter().enumerate() {
        deal_step(&config, k, &secret(i)).unwrap();
    }
    let digests: Vec<[u8; 32]> = holders
        .iter()
        .enumerate()
        .map(|(i, k)| {
            finish_step(
                &config,
                k,
                &secret(i),
                &dir.path().join(format!("state-{i}")),
            )
            .unwrap()
        })
        .collect();
    let committee = fl_aggregator::server::he_committee(&config, &members)
        .unwrap()
        .expect("a homomorphic federation has a committee");
    assert_eq!(committee.public_key.digest(), digests[0]);
    assert!(digests.iter().all(|d| *d == digests[0]));
    assert_eq!(
        committee.members,
        vec![ClientId(3), ClientId(1), ClientId(0)]
    );
    assert_eq!(committee.params.threshold, 2);
    // Each holder's node loads its role; a non-holder has none.
    for (i, k) in holders.iter().enumerate() {
        let state = dir.path().join(format!("state-{i}"));
        let role = fl_client::committee::load_role(&config, k, Some(&state))
            .unwrap()
            .expect("a holder has a role");
        assert_eq!(role.index(), i as u32);
    }
    assert!(
        fl_client::committee::load_role(&config, &keys[2], None)
            .unwrap()
            .is_none()
    );
    // A tampered dealing stops the aggregator with the holder named.
    let deal = dir.path().join("ceremony/deal-02.json");
    let text = std::fs::read_to_string(&deal).unwrap();
    std::fs::write(&deal, text.replacen("\"holder\": 2", "\"holder\": 1", 1)).unwrap();
    let err = fl_aggregator::server::he_committee(&config, &members).unwrap_err();
    assert!(err.to_string().contains("holder"), "{err}");
}
