//! FedBuff in the simulator with real (closed-form) trainers: a fast and a slow member, the
//! slow one's results applied with their staleness scaling, at the simulated times they arrive.

use std::time::Duration;

use fl_aggregator::fedbuff::{
    FedBuffConfig, FedBuffEngine, FedBuffEvent, FedBuffSim, staleness_weight,
};
use fl_core::{ClientId, ParamVec};

use crate::support::{MeanEstimator, schema};

#[test]
fn a_slow_member_counts_with_its_staleness_and_nobody_waits() {
    // K = 1: every result steps. A (samples mean 2) takes 1 s per fit, B (mean 10) 5 s.
    let config = FedBuffConfig {
        max_staleness: 10,
        ..FedBuffConfig::new(1, 1_000)
    };
    let engine = FedBuffEngine::new(config, ParamVec::zeros(schema())).unwrap();
    let mut sim = FedBuffSim::new(engine, Duration::ZERO);
    sim.add_member(
        ClientId(0),
        MeanEstimator::new(vec![1.0, 3.0]),
        Duration::from_secs(1),
    );
    sim.add_member(
        ClientId(1),
        MeanEstimator::new(vec![10.0]),
        Duration::from_secs(5),
    );
    let mut steps = Vec::new();
    sim.drive_until(Duration::from_millis(5_500), |now, event| {
        if let FedBuffEvent::Applied {
            version,
            params,
            staleness,
            ..
        } = event
        {
            steps.push((now, version, staleness, params.values()[0]));
        }
    });
    // A steps at 1, 2, 3, 4 s; at 5 s B's result (trained on version 0, 4 behind) and A's
    // (trained on version 4, 1 behind) both arrive.
    let times: Vec<u64> = steps.iter().map(|s| s.0.as_secs()).collect();
    assert_eq!(times, vec![1, 2, 3, 4, 5, 5]);
    let staleness: Vec<Vec<u64>> = steps.iter().map(|s| s.2.clone()).collect();
    assert_eq!(
        staleness,
        vec![vec![0], vec![0], vec![0], vec![0], vec![4], vec![1]]
    );
    // First coordinate: A moves it to its mean, 2; B's delta against version 0 (0 to 10) counts
    // with weight 1/sqrt(5); A's next result (its mean again, from the new model) moves it back
    // by its staleness-1 weight.
    assert_eq!(steps[3].3, 2.0);
    let after_b = 2.0 + staleness_weight(4) * 10.0;
    assert!((f64::from(steps[4].3) - after_b).abs() < 1e-5, "{steps:?}");
    // A trained on version 4 (first coordinate 2) and returns 2: Δ = 0.
    assert!((f64::from(steps[5].3) - after_b).abs() < 1e-5);
    assert_eq!(sim.refused(), 0);
    assert_eq!(sim.engine().version(), 6);
}

/// A [`MeanEstimator`] that takes `pace` per fit and counts its fits.
struct Paced {
    inner: MeanEstimator,
    pace: Duration,
    fits: std::sync::Arc<std::sync::atomic::AtomicUsize>,
}

impl fl_core::Trainer for Paced {
    fn schema(&self) -> std::sync::Arc<fl_core::Schema> {
        self.inner.schema()
    }
    fn get_parameters(&self) -> ParamVec {
        self.inner.get_parameters()
    }
    fn set_parameters(&mut self, params: &ParamVec) -> Result<(), fl_core::TrainerError> {
        self.inner.set_parameters(params)
    }
    fn fit(
        &mut self,
        config: &fl_core::FitConfig,
    ) -> Result<fl_core::FitOutcome, fl_core::TrainerError> {
        std::thread::sleep(self.pace);
        self.fits.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
        self.inner.fit(config)
    }
    fn evaluate(
        &mut self,
        config: &fl_core::EvaluateConfig,
    ) -> Result<fl_core::EvaluateResult, fl_core::TrainerError> {
        self.inner.evaluate(config)
    }
}

/// Over real gRPC on loopback: three members of very different speeds train continuously, the
/// server steps every K = 2 results with the staleness of each, the fast member is never held
/// up by the slow one, and a session that sends a result for a task it was not given is ended
/// while the others go on.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn over_grpc_members_of_different_speeds_train_continuously_and_the_server_steps_every_k() {
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::sync::{Arc, Mutex};

    use fl_aggregator::fedbuff::FedBuffServer;
    use fl_aggregator::metrics::AggregatorMetrics;
    use fl_aggregator::service::{ServiceConfig, federation};
    use fl_core::MemberKey;
    use tokio_stream::wrappers::TcpListenerStream;

    use crate::grpc::{Raw, chunk, header, le};

    const K: usize = 2;
    const STEPS: u64 = 12;
    let keys: Vec<MemberKey> = (0..4).map(|_| MemberKey::generate()).collect();
    let config = FedBuffConfig {
        max_staleness: 8,
        ..FedBuffConfig::new(K, STEPS)
    };
    let engine = FedBuffEngine::new(config, ParamVec::zeros(schema())).unwrap();
    let mut service =
        ServiceConfig::new("bad-input", keys.iter().map(MemberKey::address).collect());
    service.max_chunk_bytes = 8;
    let (service, coordinator) = federation(
        FedBuffServer::new(engine),
        service,
        Arc::new(AggregatorMetrics::new()),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let server = tokio::spawn(
        fl_aggregator::service::transport()
            .add_service(service.into_server())
            .serve_with_incoming(TcpListenerStream::new(listener)),
    );
    let applied = Arc::new(Mutex::new(Vec::<(u64, Vec<u64>)>::new()));
    let seen = applied.clone();
    let done = tokio::spawn(coordinator.run(
        move |event| {
            if let FedBuffEvent::Applied {
                version, staleness, ..
            } = event
            {
                seen.lock().unwrap().push((*version, staleness.clone()));
            }
        },
        std::future::pending(),
    ));

    // A hostile session first: it answers task 999, which it was never given.
    let (mut raw, session) = Raw::join(addr, &keys[3], &keys[3], &schema()).await;
    let task = raw.until_fit().await;
    assert_ne!(task, 999);
    let forged = ParamVec::new(schema(), vec![1e3, 1e3]).unwrap();
    raw.send(fl_core::wire::pb::client_frame::Kind::Update(header(
        &keys[3], session, 999, &forged, 5,
    )))
    .await;
    raw.send(chunk(999, 0, 0, le(forged.values()))).await;
    let status = raw.refusal().await;
    assert_eq!(status.code(), tonic::Code::Aborted, "{status:?}");
    assert!(status.message().contains("round 999"), "{status:?}");

    // Three honest members: 10 ms, 40 ms and 300 ms per fit.
    let paces = [10u64, 40, 300];
    let samples = [vec![1.0f32, 3.0], vec![4.0], vec![10.0]];
    let fits: Vec<Arc<AtomicUsize>> = (0..3).map(|_| Arc::new(AtomicUsize::new(0))).collect();
    let mut nodes = Vec::new();
    for i in 0..3 {
        let node = fl_client::node::NodeConfig::new(format!("http://{addr}"), "bad-input");
        let trainer = Paced {
            inner: MeanEstimator::new(samples[i].clone()),
            pace: Duration::from_millis(paces[i]),
            fits: fits[i].clone(),
        };
        nodes.push(tokio::spawn(fl_client::node::run_node(
            node,
            keys[i].clone(),
            trainer,
        )));
    }
    let (params, finished) = tokio::time::timeout(Duration::from_secs(60), done)
        .await
        .expect("the buffered federation finishes within 60 s")
        .unwrap();
    for node in nodes {
        let _ = tokio::time::timeout(Duration::from_secs(10), node).await;
    }
    server.abort();

    assert!(finished);
    let applied = applied.lock().unwrap().clone();
    assert_eq!(
        applied.iter().map(|(v, _)| *v).collect::<Vec<_>>(),
        (1..=STEPS).collect::<Vec<_>>(),
        "one step per version, in order"
    );
    assert!(
        applied.iter().all(|(_, s)| s.len() == K),
        "every step takes exactly K results: {applied:?}"
    );
    let fits: Vec<usize> = fits.iter().map(|f| f.load(Ordering::SeqCst)).collect();
    // 24 results at about 100 results/s from the fast member: the slow one (300 ms) can
    // have finished only a handful, and the fast one was never held up waiting for it.
    assert!(fits[0] >= 3 * fits[2].max(1), "fits per member {fits:?}");
    assert!(
        applied.iter().flat_map(|(_, s)| s).any(|&s| s > 0),
        "with members of different speeds some results are stale: {applied:?}"
    );
    // Every member's first coordinate estimate lies in [2, 10]; the buffered steps move the
    // model from 0 into that range.
    let x = params.values()[0];
    assert!((1.0..=10.0).contains(&x), "final model {x}");
}

/// The federation file's `[fedbuff]`: `fl_aggregator::server::serve` runs the buffered engine,
/// checkpoints and anchors every server step like a round (its contributors as participants,
/// the staleness in the metrics), and restarts from the last step.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_federation_file_with_fedbuff_checkpoints_and_anchors_every_step_and_resumes() {
    use std::sync::Arc;
    use std::sync::atomic::AtomicUsize;

    use fl_aggregator::checkpoint::CheckpointStore;

    let dir = tempfile::tempdir().unwrap();
    let keys: Vec<fl_core::MemberKey> = (0..3).map(|_| fl_core::MemberKey::generate()).collect();
    let allowed: Vec<String> = keys
        .iter()
        .map(|k| format!("\"{}\"", k.address()))
        .collect();
    let port = {
        let probe = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        probe.local_addr().unwrap().port()
    };
    let file = |rounds: u64| {
        format!(
            r#"[federation]
id = "buffered"
rounds = {rounds}
min_clients = 1

[model]
kind = "test"

[data]
dataset = "test"

[fedbuff]
buffer_size = 2
max_staleness = 4

[aggregator]
listen = "127.0.0.1:{port}"
checkpoints = "checkpoints"

[chain]
backend = "embedded"

[members]
allowed = [{}]
"#,
            allowed.join(", ")
        )
    };
    let run = |rounds: u64| {
        let config = fl_core::config::FederationConfig::parse(&file(rounds), dir.path()).unwrap();
        let keys = keys.clone();
        async move {
            let mut nodes = Vec::new();
            for (i, key) in keys.iter().enumerate() {
                let node = fl_client::node::NodeConfig::new(
                    format!("http://127.0.0.1:{port}"),
                    "buffered",
                );
                let trainer = Paced {
                    inner: MeanEstimator::new(vec![i as f32, 2.0 * i as f32 + 1.0]),
                    pace: Duration::from_millis([5, 20, 80][i]),
                    fits: Arc::new(AtomicUsize::new(0)),
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
            let outcome = tokio::time::timeout(Duration::from_secs(60), serve)
                .await
                .expect("the buffered federation finishes")
                .unwrap();
            for node in nodes {
                let _ = tokio::time::timeout(Duration::from_secs(10), node).await;
            }
            outcome
        }
    };

    let outcome = run(4).await;
    assert!(outcome.finished);
    assert_eq!(outcome.last_checkpoint, Some(4));
    assert_eq!(outcome.last_anchor.as_ref().map(|(r, _)| *r), Some(4));
    let store = CheckpointStore::open(&dir.path().join("checkpoints").to_string_lossy()).unwrap();
    let addresses: Vec<String> = keys.iter().map(|k| k.address().to_string()).collect();
    for step in 1..=4 {
        let m = store.manifest(step).await.unwrap();
        assert_eq!(m.metrics["fedbuff_results"], 2.0, "step {step}");
        assert!(m.metrics.contains_key("fedbuff_staleness_max"));
        assert!(
            (1..=2).contains(&m.participants.len()),
            "two results from one or two members: {:?}",
            m.participants
        );
        assert!(
            m.participants.iter().all(|p| addresses.contains(&p.id)),
            "participants are members' addresses: {:?}",
            m.participants
        );
        assert!(m.anchor.is_some(), "step {step} anchored");
    }

    // Two more steps from the checkpoint of step 4.
    let outcome = run(6).await;
    assert!(outcome.finished);
    assert_eq!(outcome.last_checkpoint, Some(6));
    assert_eq!(store.rounds().await.unwrap(), (1..=6).collect::<Vec<_>>());
}

#[test]
fn a_federation_file_refuses_fedbuff_with_what_it_cannot_do() {
    let base = r#"[federation]
id = "buffered"
rounds = 3
min_clients = 1

[model]
kind = "test"

[data]
dataset = "test"

[members]
allowed = ["0x1111111111111111111111111111111111111111"]
"#;
    let parse = |extra: &str| {
        fl_core::config::FederationConfig::parse(
            &format!("{base}\n{extra}"),
            std::path::Path::new("."),
        )
    };
    assert!(parse("[fedbuff]\nbuffer_size = 2\n").is_ok());
    for (extra, needle) in [
        (
            "[fedbuff]\nbuffer_size = 0\n",
            "buffer_size must be at least 1",
        ),
        (
            "[fedbuff]\nbuffer_size = 2\nserver_learning_rate = -1.0\n",
            "server_learning_rate",
        ),
        (
            "[strategy]\nkind = \"scaffold\"\n[fedbuff]\nbuffer_size = 2\n",
            "kind must be",
        ),
        (
            "[strategy.server_optimizer]\nkind = \"fedadam\"\n[fedbuff]\nbuffer_size = 2\n",
            "server_optimizer",
        ),
        (
            "[fedbuff]\nbuffer_size = 2\n[secure_aggregation]\n",
            "[secure_aggregation]",
        ),
        ("[fedbuff]\nbuffer_size = 2\nbuffer = 3\n", "unknown field"),
    ] {
        let err = parse(extra).unwrap_err().to_string();
        assert!(err.contains(needle), "{extra}: {err}");
    }
}
