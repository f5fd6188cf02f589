//! Chain anchoring of checkpoints on the embedded backend: manifests carry their anchors, a
//! restart anchors what was written but not anchored exactly once, batches keep their proofs,
//! verification tells a valid checkpoint from a tampered one, and a whole aggregator served on
//! loopback anchors every round and `fl-aggregator verify` checks its output.

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use fl_aggregator::anchoring::chain_anchor::alloy::primitives::Address;
use fl_aggregator::anchoring::chain_anchor::{Anchor, AnchorEvent, FederationId, Verdict};
use fl_aggregator::anchoring::{
    ChainSettings, ManifestAnchor, RegistryReader, RegistrySource, RoundAnchorer,
    checkpoint_anchor, verify_checkpoint,
};
use fl_aggregator::checkpoint::{
    CheckpointMeta, CheckpointStore, Manifest, Participant, PrivacySpent,
};
use fl_core::{
    ContentHash, EvaluateConfig, EvaluateResult, FitConfig, FitOutcome, Metrics, ParamVec, Schema,
    TensorSpec, Trainer, TrainerError,
};

const MEMBER: &str = "0x00000000000000000000000000000000000000aA";

fn schema() -> Arc<Schema> {
    Arc::new(Schema::new(vec![TensorSpec::new("w", [3])]).unwrap())
}

fn params(round: u64) -> ParamVec {
    let r = round as f32;
    ParamVec::new(schema(), vec![r, -r, 0.5 * r]).unwrap()
}

async fn save(store: &CheckpointStore, round: u64) -> Manifest {
    let meta = CheckpointMeta::new("anchor-test", round, ContentHash::of(b"federation"))
        .with_participants([
            Participant::new(MEMBER).with_update_hash(ContentHash::of(&round.to_le_bytes())),
            Participant::new("client-1"),
        ])
        .with_privacy(PrivacySpent {
            epsilon: 0.25 * round as f64,
            delta: 1e-5,
            rounds: round,
        });
    store.save(meta, &params(round)).await.unwrap()
}

async fn events(anchorer: &RoundAnchorer) -> Vec<AnchorEvent> {
    anchorer
        .chain()
        .events(Some(FederationId::from_name("anchor-test")), 0)
        .await
        .unwrap()
}

async fn verify(
    reader: &RegistryReader,
    store: &CheckpointStore,
    round: u64,
    member: Option<Address>,
) -> Verdict {
    let m = store.manifest(round).await.unwrap();
    let bytes = store.params_bytes(&m).await.unwrap();
    verify_checkpoint(reader.chain(), &m, &bytes, member)
        .await
        .unwrap()
        .verdict
}

fn flip_a_byte(path: &Path) {
    let mut bytes = std::fs::read(path).unwrap();
    bytes[5] ^= 0x01;
    std::fs::write(path, bytes).unwrap();
}

#[tokio::test]
async fn manifests_carry_anchors_and_verify_catches_tampering() {
    let dir = tempfile::tempdir().unwrap();
    let store = CheckpointStore::open(&dir.path().join("checkpoints").to_string_lossy()).unwrap();
    let settings = ChainSettings::embedded(dir.path().to_owned());
    let mut anchorer = RoundAnchorer::open(&settings).unwrap();
    for round in 1..=3 {
        let m = save(&store, round).await;
        assert_eq!(
            anchorer.checkpoint_written(&store, &m).await.unwrap(),
            vec![round]
        );
        let m = store.manifest(round).await.unwrap();
        let a = ManifestAnchor::of(&m).unwrap().expect("anchored");
        assert_eq!(a.receipt.first_round, round);
        assert_eq!(a.params_hash.0, *m.params_cid.as_bytes());
        assert!(a.batch_proof.is_none());
        assert!(a.receipt.gas_used > 100_000, "{}", a.receipt.gas_used);
        // The store still verifies the checkpoint with its anchor recorded.
        assert!(store.verify(round).await.unwrap().is_ok());
    }
    assert_eq!(events(&anchorer).await.len(), 3);
    drop(anchorer);

    let reader = RegistryReader::open(&RegistrySource::from_settings(&settings)).unwrap();
    let member: Address = MEMBER.parse().unwrap();
    for round in 1..=3 {
        let v = verify(&reader, &store, round, Some(member)).await;
        assert!(v.is_valid(), "round {round}: {v:?}");
    }
    let stranger = Address::repeat_byte(7);
    assert!(matches!(
        verify(&reader, &store, 2, Some(stranger)).await,
        Verdict::ParticipantNotIncluded { .. }
    ));

    // The parameters of round 1 presented as round 2's: a wrong round.
    let m2 = store.manifest(2).await.unwrap();
    let m1 = store.manifest(1).await.unwrap();
    let p1 = store.params_bytes(&m1).await.unwrap();
    let wrong = verify_checkpoint(reader.chain(), &m2, &p1, None)
        .await
        .unwrap();
    assert!(
        matches!(
            wrong.verdict,
            Verdict::WrongRound {
                claimed: 2,
                anchored_round: 1
            }
        ),
        "{wrong}"
    );

    // A round written but never anchored.
    save(&store, 4).await;
    assert!(matches!(
        verify(&reader, &store, 4, None).await,
        Verdict::MissingAnchor {
            latest_round: Some(3)
        }
    ));

    // One flipped bit in the parameter file.
    flip_a_byte(
        &dir.path()
            .join(format!("checkpoints/params/{}", m2.params_cid)),
    );
    let report = verify_checkpoint(
        reader.chain(),
        &m2,
        &store.params_bytes(&m2).await.unwrap(),
        None,
    )
    .await
    .unwrap();
    assert!(
        matches!(report.verdict, Verdict::TamperedParameters { .. }),
        "{report}"
    );
    assert!(
        report
            .to_string()
            .starts_with("INVALID (tampered parameters)"),
        "{report}"
    );
}

#[tokio::test]
async fn a_restart_anchors_unanchored_manifests_exactly_once() {
    let dir = tempfile::tempdir().unwrap();
    let store = CheckpointStore::open(&dir.path().join("checkpoints").to_string_lossy()).unwrap();
    let settings = ChainSettings::embedded(dir.path().to_owned());
    {
        let mut anchorer = RoundAnchorer::open(&settings).unwrap();
        for round in 1..=2 {
            let m = save(&store, round).await;
            anchorer.checkpoint_written(&store, &m).await.unwrap();
        }
        // Round 3: anchored on chain, then a crash before its manifest was updated.
        let m3 = save(&store, 3).await;
        anchorer
            .chain()
            .anchor(&checkpoint_anchor(&m3).unwrap())
            .await
            .unwrap();
        // Round 4: written, then a crash before it was anchored.
        save(&store, 4).await;
        assert_eq!(events(&anchorer).await.len(), 3);
    }

    let mut anchorer = RoundAnchorer::open(&settings).unwrap();
    assert_eq!(anchorer.resume(&store).await.unwrap(), vec![3, 4]);
    assert_eq!(
        events(&anchorer).await.len(),
        4,
        "one anchor per round, no more"
    );
    let a3 = ManifestAnchor::of(&store.manifest(3).await.unwrap())
        .unwrap()
        .unwrap();
    assert!(a3.receipt.already_anchored);
    let a4 = ManifestAnchor::of(&store.manifest(4).await.unwrap())
        .unwrap()
        .unwrap();
    assert!(!a4.receipt.already_anchored);
    assert!(a4.receipt.block_number > a3.receipt.block_number);

    // Nothing is left: another start anchors nothing.
    drop(anchorer);
    let mut again = RoundAnchorer::open(&settings).unwrap();
    assert!(again.resume(&store).await.unwrap().is_empty());
    assert_eq!(events(&again).await.len(), 4);
    drop(again);
    let reader = RegistryReader::open(&RegistrySource::from_settings(&settings)).unwrap();
    for round in 1..=4 {
        assert!(verify(&reader, &store, round, None).await.is_valid());
    }
}

#[tokio::test]
async fn batched_rounds_keep_their_proofs() {
    let dir = tempfile::tempdir().unwrap();
    let store = CheckpointStore::open(&dir.path().join("checkpoints").to_string_lossy()).unwrap();
    let table: toml::Table = toml::from_str("backend = \"embedded\"\nbatch_rounds = 3").unwrap();
    let settings =
        ChainSettings::parse(&table, &dir.path().join("checkpoints").to_string_lossy()).unwrap();
    let mut anchorer = RoundAnchorer::open(&settings).unwrap();
    let mut anchored = Vec::new();
    for round in 1..=5 {
        let m = save(&store, round).await;
        anchored.extend(anchorer.checkpoint_written(&store, &m).await.unwrap());
    }
    assert_eq!(anchored, vec![1, 2, 3]);
    assert_eq!(anchorer.waiting(), vec![4, 5]);
    assert_eq!(anchorer.finish(&store).await.unwrap(), vec![4, 5]);
    assert_eq!(events(&anchorer).await.len(), 2, "two batches");
    drop(anchorer);

    let reader = RegistryReader::open(&RegistrySource::from_settings(&settings)).unwrap();
    for round in 1..=5 {
        let v = verify(&reader, &store, round, Some(MEMBER.parse().unwrap())).await;
        assert!(v.is_valid(), "round {round}: {v:?}");
    }
    // Without its proof a batched round cannot be verified.
    let mut m2 = store.manifest(2).await.unwrap();
    let mut a = ManifestAnchor::of(&m2).unwrap().unwrap();
    assert!(a.receipt.batch_root.is_some());
    a.batch_proof = None;
    m2.anchor = Some(serde_json::to_value(&a).unwrap());
    let bytes = store.params_bytes(&m2).await.unwrap();
    let v = verify_checkpoint(reader.chain(), &m2, &bytes, None)
        .await
        .unwrap()
        .verdict;
    assert!(
        matches!(
            v,
            Verdict::BatchProofMissing {
                first_round: 1,
                last_round: 3
            }
        ),
        "{v:?}"
    );
}

/// Estimates the mean of its samples.
struct MeanEstimator {
    schema: Arc<Schema>,
    estimate: Vec<f32>,
    samples: Vec<f32>,
}

impl Trainer for MeanEstimator {
    fn schema(&self) -> Arc<Schema> {
        self.schema.clone()
    }

    fn get_parameters(&self) -> ParamVec {
        ParamVec::new(self.schema.clone(), self.estimate.clone()).unwrap()
    }

    fn set_parameters(&mut self, params: &ParamVec) -> Result<(), TrainerError> {
        self.estimate = params.values().to_vec();
        Ok(())
    }

    fn fit(&mut self, _config: &FitConfig) -> Result<FitOutcome, TrainerError> {
        let mean = self.samples.iter().sum::<f32>() / self.samples.len() as f32;
        self.estimate = vec![mean, 0.5 * self.estimate[1] + 0.5 * mean, 1.0];
        Ok(FitOutcome {
            num_examples: self.samples.len() as u64,
            metrics: Metrics::new(),
        })
    }

    fn evaluate(&mut self, _config: &EvaluateConfig) -> Result<EvaluateResult, TrainerError> {
        Ok(EvaluateResult {
            loss: 0.0,
            num_examples: self.samples.len() as u64,
            metrics: Metrics::new(),
        })
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_served_federation_anchors_every_round_and_the_cli_verifies_it() {
    let dir = tempfile::tempdir().unwrap();
    let keys: Vec<fl_core::MemberKey> = (0..2).map(|_| fl_core::MemberKey::generate()).collect();
    let allowed: Vec<String> = keys
        .iter()
        .map(|k| format!("\"{}\"", k.address()))
        .collect();
    let port = {
        let probe = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        probe.local_addr().unwrap().port()
    };
    let toml = format!(
        r#"[federation]
id = "anchored"
rounds = 3
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
allowed = [{}]
"#,
        allowed.join(", ")
    );
    let config = fl_core::config::FederationConfig::parse(&toml, dir.path()).unwrap();
    // Members first: they retry until the aggregator listens.
    let mut nodes = Vec::new();
    for (i, key) in keys.iter().enumerate() {
        let node = fl_client::node::NodeConfig::new(format!("http://127.0.0.1:{port}"), "anchored");
        let trainer = MeanEstimator {
            schema: schema(),
            estimate: vec![0.0; 3],
            samples: vec![i as f32, 2.0 * i as f32 + 1.0],
        };
        nodes.push(tokio::spawn(fl_client::node::run_node(
            node,
            key.clone(),
            trainer,
        )));
    }
    let serve = fl_aggregator::server::serve(
        &config,
        ParamVec::zeros(schema()),
        std::future::pending(),
        |_| {},
    );
    let outcome = tokio::time::timeout(Duration::from_secs(120), serve)
        .await
        .expect("the federation finishes")
        .unwrap();
    for node in nodes {
        let _ = tokio::time::timeout(Duration::from_secs(30), node).await;
    }
    assert!(outcome.finished);
    let (round, receipt) = outcome.last_anchor.expect("anchored");
    assert_eq!(round, 3);
    assert_eq!(receipt.last_round, 3);

    let store = CheckpointStore::open(&dir.path().join("checkpoints").to_string_lossy()).unwrap();
    for round in 1..=3 {
        let m = store.manifest(round).await.unwrap();
        assert!(ManifestAnchor::of(&m).unwrap().is_some(), "round {round}");
        assert_eq!(m.participants.len(), 2);
    }

    // `fl-aggregator verify <manifest>`: the chain is found next to the checkpoint folder.
    let manifest = dir.path().join("checkpoints/rounds/0000000003.json");
    let member = keys[0].address().to_string();
    let cli = |extra: &[&str]| {
        std::process::Command::new(env!("CARGO_BIN_EXE_fl-aggregator"))
            .arg("verify")
            .arg(&manifest)
            .args(extra)
            .env("DAOFL_LOG", "warn")
            .output()
            .unwrap()
    };
    let out = cli(&["--member", &member]);
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{stdout}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        stdout.starts_with("VALID: round 3 of `anchored`"),
        "{stdout}"
    );
    assert!(stdout.contains("included"), "{stdout}");

    let m3 = store.manifest(3).await.unwrap();
    flip_a_byte(
        &dir.path()
            .join(format!("checkpoints/params/{}", m3.params_cid)),
    );
    let out = cli(&[]);
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(!out.status.success(), "{stdout}");
    assert!(
        stdout.starts_with("INVALID (tampered parameters)"),
        "{stdout}"
    );
}
