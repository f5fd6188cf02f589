//! Secure aggregation over real gRPC on loopback: five library nodes, one of which is killed
//! while it trains (after the key exchange, before its masked input). The round recovers the
//! dropped member's pairwise masks and aggregates the other four exactly as FedAvg would.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, mpsc as std_mpsc};
use std::time::Duration;

use fl_aggregator::{Engine, EngineConfig, SecureSetup};
use fl_client::node::{NodeConfig, run_node};
use fl_core::secure::SecureAggregationConfig;
use fl_core::{
    EvaluateConfig, EvaluateResult, FedAvg, FitConfig, FitOutcome, MemberKey, ParamVec, Schema,
    StrategyConfig, Trainer, TrainerError,
};

use crate::support::{MeanEstimator, Served, schema, serve};

/// A trainer that reports when it starts training and then hangs until released (or 30 s).
struct Hangs {
    inner: MeanEstimator,
    started: std_mpsc::Sender<()>,
    release: Arc<AtomicBool>,
}

impl Trainer for Hangs {
    fn schema(&self) -> Arc<Schema> {
        self.inner.schema()
    }
    fn get_parameters(&self) -> ParamVec {
        self.inner.get_parameters()
    }
    fn set_parameters(&mut self, params: &ParamVec) -> Result<(), TrainerError> {
        self.inner.set_parameters(params)
    }
    fn fit(&mut self, config: &FitConfig) -> Result<FitOutcome, TrainerError> {
        let _ = self.started.send(());
        for _ in 0..3000 {
            if self.release.load(Ordering::Relaxed) {
                break;
            }
            std::thread::sleep(Duration::from_millis(10));
        }
        self.inner.fit(config)
    }
    fn evaluate(&mut self, config: &EvaluateConfig) -> Result<EvaluateResult, TrainerError> {
        self.inner.evaluate(config)
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_member_killed_mid_protocol_leaves_the_sum_of_the_others() {
    let n = 5;
    let keys: Vec<MemberKey> = (0..n).map(|_| MemberKey::generate()).collect();
    let members: Vec<fl_core::Address> = keys.iter().map(|k| k.address()).collect();
    let engine = Engine::new(
        EngineConfig {
            num_rounds: 1,
            min_available_clients: n,
            fit_timeout: Duration::from_secs(30),
            evaluate_timeout: Duration::from_secs(30),
            seed: 1,
            release_params_during_fit: false,
        },
        Box::new(FedAvg::new(StrategyConfig {
            fraction_fit: 1.0,
            min_fit_clients: 1,
            fraction_evaluate: 0.0,
            ..Default::default()
        })),
        ParamVec::zeros(schema()),
    )
    .with_secure_aggregation(SecureSetup {
        config: SecureAggregationConfig {
            // One of five may drop; with no tolerated corruption the threshold is 3 of 5.
            dropout_rate: 0.2,
            corruption_rate: 0.0,
            step_timeout_s: 20.0,
            ..Default::default()
        },
        members: Arc::new(members.clone()),
        session: fl_core::identity::random_nonce(),
        committee: None,
    });
    let Served {
        addr,
        server,
        done,
        events: events_rx,
        stop: stop_tx,
    } = serve(engine, "secagg", &members).await;

    let node_config = || {
        let mut c = NodeConfig::new(format!("http://{addr}"), "secagg");
        c.members = Some(Arc::new(members.clone()));
        c.reconnect_attempts = 2;
        c
    };
    // Members 0..4 are honest; member 4 hangs in training and is killed there.
    let mut honest = Vec::new();
    for (i, key) in keys.iter().enumerate().take(4) {
        let trainer = MeanEstimator::new(vec![i as f32; i + 1]);
        honest.push(tokio::spawn(run_node(node_config(), key.clone(), trainer)));
    }
    let (started_tx, started_rx) = std_mpsc::channel();
    let release = Arc::new(AtomicBool::new(false));
    let victim = tokio::spawn(run_node(
        node_config(),
        keys[4].clone(),
        Hangs {
            inner: MeanEstimator::new(vec![4.0; 5]),
            started: started_tx,
            release: release.clone(),
        },
    ));
    // Wait (bounded) until the victim is training: it has advertised and shared its keys.
    let started = tokio::task::spawn_blocking(move || {
        started_rx.recv_timeout(Duration::from_secs(60)).is_ok()
    })
    .await
    .unwrap();
    if !started {
        let trace: Vec<String> = events_rx.try_iter().collect();
        panic!("the victim never started training: {trace:#?}");
    }
    victim.abort();
    release.store(true, Ordering::Relaxed);

    for node in honest {
        let (report, _) = tokio::time::timeout(Duration::from_secs(60), node)
            .await
            .expect("honest members finish within 60 s")
            .unwrap()
            .expect("honest members are served");
        assert_eq!(report.fits, 1);
    }
    let (params, finished) = tokio::time::timeout(Duration::from_secs(30), done)
        .await
        .expect("the coordinator finished")
        .unwrap();
    assert!(finished);
    let trace: Vec<String> = events_rx.try_iter().collect();
    assert!(
        trace
            .iter()
            .any(|e| e.contains("FitAggregated") && e.contains("num_results: 4")),
        "{trace:#?}"
    );
    // FedAvg over members 0..4: Σ i(i+1) / Σ (i+1) = 20 / 10.
    let expected = 2.0;
    assert!(
        (params.values()[0] - expected).abs() < 1e-3,
        "{} vs {expected}",
        params.values()[0]
    );
    drop(stop_tx);
    server.abort();
}
