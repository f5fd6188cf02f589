//! SCAFFOLD end to end: members with heterogeneous quadratic objectives, in the simulator
//! (sessions keep `cᵢ` in memory) and over gRPC with the real aggregator and member nodes
//! (control variates chunked both ways, signed, `cᵢ` in state files, `c` in checkpoints, resumed
//! after a restart exactly as an uninterrupted run).

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use fl_aggregator::{DropReason, Engine, EngineConfig, EngineEvent, Sim, SimConfig};
use fl_client::node::{NodeConfig, NodeError, run_node};
use fl_client::scaffold_state::ScaffoldState;
use fl_core::round::LOCAL_STEPS_METRIC;
use fl_core::{
    ClientId, ClientMessage, EvaluateConfig, EvaluateResult, FitConfig, FitOutcome, FitResult,
    MemberKey, Metrics, ParamVec, Schema, Stage, StrategyConfig, TensorSpec, Trainer, TrainerError,
};

/// Member `i` minimises `½·aᵢ·‖x - bᵢ‖²` by `local_epochs` steps of gradient descent, each
/// corrected by the round's SCAFFOLD `c - cᵢ`.
struct Quadratic {
    a: f32,
    b: [f32; 2],
    x: Vec<f32>,
}

const CURVATURE: [f32; 3] = [1.0, 2.0, 5.0];
const MINIMA: [[f32; 2]; 3] = [[0.0, 0.0], [1.0, -1.0], [4.0, 2.0]];
/// `Σ aᵢbᵢ / Σ aᵢ`: the optimum of the federation's `(1/N)·Σ Fᵢ`.
const OPTIMUM: [f32; 2] = [2.75, 1.0];

fn schema() -> Arc<Schema> {
    Arc::new(Schema::new(vec![TensorSpec::new("x", [2])]).unwrap())
}

impl Quadratic {
    fn member(i: usize) -> Self {
        Self {
            a: CURVATURE[i],
            b: MINIMA[i],
            x: vec![0.0; 2],
        }
    }
}

impl Trainer for Quadratic {
    fn get_parameters(&self) -> ParamVec {
        ParamVec::new(schema(), self.x.clone()).unwrap()
    }

    fn set_parameters(&mut self, params: &ParamVec) -> Result<(), TrainerError> {
        self.get_parameters().check_same_schema(params)?;
        self.x = params.values().to_vec();
        Ok(())
    }

    fn fit(&mut self, config: &FitConfig) -> Result<FitOutcome, TrainerError> {
        let correction = match &config.scaffold {
            Some(c) => c
                .correction(schema().hash())
                .map_err(|e| TrainerError::InvalidConfig(e.to_string()))?,
            None => None,
        };
        let lr = config.learning_rate as f32;
        for _ in 0..config.local_epochs {
            for j in 0..2 {
                let shift = correction.as_ref().map_or(0.0, |c| c[j]);
                self.x[j] -= lr * (self.a * (self.x[j] - self.b[j]) + shift);
            }
        }
        Ok(FitOutcome {
            num_examples: 1,
            metrics: Metrics::from([(
                LOCAL_STEPS_METRIC.to_string(),
                f64::from(config.local_epochs),
            )]),
        })
    }

    fn evaluate(&mut self, _: &EvaluateConfig) -> Result<EvaluateResult, TrainerError> {
        Err(TrainerError::NoData("evaluate"))
    }
}

fn strategy_config() -> StrategyConfig {
    toml::from_str(
        "kind = \"scaffold\"\nmin_fit_clients = 3\nmin_fit_results = 3\n\
         [fit]\nlocal_epochs = 10\nlearning_rate = 0.05\n",
    )
    .unwrap()
}

fn dist(x: &[f32], y: [f32; 2]) -> f32 {
    ((x[0] - y[0]).powi(2) + (x[1] - y[1]).powi(2)).sqrt()
}

#[test]
fn in_the_simulator_members_keep_their_control_variates_and_reach_the_optimum() {
    let config = EngineConfig {
        num_rounds: 150,
        min_available_clients: 3,
        seed: 5,
        ..EngineConfig::default()
    };
    let strategy = strategy_config().build(None, None, 3, 2).unwrap();
    let engine = Engine::new(config, strategy, ParamVec::zeros(schema()));
    let mut sim = Sim::new(engine, SimConfig::ideal());
    for i in 0..3 {
        sim.add_client(
            ClientId(i as u64),
            Quadratic::member(i),
            Duration::from_secs(1),
        );
    }
    let mut norms = Vec::new();
    sim.drive_with(|_, e| {
        if let EngineEvent::FitAggregated { metrics, .. } = e {
            norms.push(metrics["scaffold_control_norm"]);
        }
    });
    assert!(sim.engine().is_finished());
    let x = sim.engine().params().values().to_vec();
    assert!(dist(&x, OPTIMUM) < 1e-3, "SCAFFOLD ends at {x:?}");
    // c grows from zero while the members' drifts are learnt, then vanishes at the optimum.
    assert_eq!(norms.len(), 150);
    assert!(norms[0] > 0.5, "{:?}", &norms[..3]);
    assert!(*norms.last().unwrap() < 1e-3, "{:?}", norms.last());
}

#[test]
fn an_update_without_its_control_difference_is_dropped_with_the_reason() {
    let config = EngineConfig {
        num_rounds: 1,
        min_available_clients: 3,
        ..EngineConfig::default()
    };
    let strategy = strategy_config().build(None, None, 3, 2).unwrap();
    let mut engine = Engine::new(config, strategy, ParamVec::zeros(schema()));
    let t0 = Duration::ZERO;
    for i in 0..3 {
        engine.handle_connect(t0, ClientId(i));
    }
    while engine.poll_transmit().is_some() {}
    let done = |round| ClientMessage::FitDone {
        round,
        result: FitResult {
            params: ParamVec::new(schema(), vec![1.0, 1.0]).unwrap(),
            num_examples: 1,
            metrics: Metrics::new(),
        },
    };
    // Member 0 sends no Δc, member 1 a Δc one value short, member 2 a non-finite one.
    let _ = engine.handle_message(t0, ClientId(0), done(1));
    let control = |values| ClientMessage::ControlChunk { round: 1, values };
    let _ = engine.handle_message(t0, ClientId(1), control(vec![0.5]));
    let _ = engine.handle_message(t0, ClientId(1), done(1));
    let _ = engine.handle_message(t0, ClientId(2), control(vec![0.5, f32::NAN]));
    let _ = engine.handle_message(t0, ClientId(2), done(1));
    let events: Vec<EngineEvent> = std::iter::from_fn(|| engine.poll_event()).collect();
    let reasons: Vec<(ClientId, String)> = events
        .iter()
        .filter_map(|e| match e {
            EngineEvent::ClientDropped {
                client,
                stage: Stage::Fit,
                reason: DropReason::InvalidResult(r),
                ..
            } => Some((*client, r.clone())),
            _ => None,
        })
        .collect();
    assert_eq!(reasons.len(), 3, "{events:?}");
    for (client, reason) in &reasons {
        assert!(reason.contains("control-variate"), "{client}: {reason}");
    }
    assert!(reasons[0].1.contains("0 of the model's 2"), "{reasons:?}");
    assert!(reasons[1].1.contains("1 of the model's 2"), "{reasons:?}");
    assert_eq!(reasons[2].0, ClientId(2));
    assert!(reasons[2].1.contains("NaN"), "{reasons:?}");
    assert!(
        events
            .iter()
            .any(|e| matches!(e, EngineEvent::RoundAborted { .. })),
        "no update left to aggregate: {events:?}"
    );
}

const MEMBERS: usize = 3;

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// A SCAFFOLD federation of three members in `dir`: its file (with `rounds`) and the members'
/// keys and state files.
struct Federation {
    dir: PathBuf,
    keys: Vec<MemberKey>,
}

impl Federation {
    fn new(dir: &Path) -> Self {
        let keys = (0..MEMBERS).map(|_| MemberKey::generate()).collect();
        Self {
            dir: dir.to_path_buf(),
            keys,
        }
    }

    fn config(&self, rounds: u64, port: u16) -> fl_core::config::FederationConfig {
        let allowed: Vec<String> = self
            .keys
            .iter()
            .map(|k| format!("\"{}\"", k.address()))
            .collect();
        let toml = format!(
            r#"[federation]
id = "scaffold-grpc"
seed = 11
rounds = {rounds}
min_clients = {MEMBERS}
fit_timeout_s = 60

[model]
kind = "mlp"

[data]
dataset = "digits"

[strategy]
kind = "scaffold"
min_fit_clients = {MEMBERS}
min_fit_results = {MEMBERS}

[strategy.fit]
local_epochs = 10
learning_rate = 0.05

[strategy.scaffold]
server_lr = 1.0

[aggregator]
listen = "127.0.0.1:{port}"
checkpoints = "{}"
heartbeat_interval_s = 1
idle_timeout_s = 20

[client]
aggregator = "http://127.0.0.1:{port}"
reconnect_attempts = 100
reconnect_delay_s = 0.05

[members]
allowed = [{}]
"#,
            self.dir.join("checkpoints").display(),
            allowed.join(", ")
        );
        let path = self.dir.join("federation.toml");
        std::fs::write(&path, toml).unwrap();
        fl_node::load_federation(&path).unwrap()
    }

    fn state(&self, i: usize) -> PathBuf {
        self.dir.join(format!("member-{i}.scaffold"))
    }

    fn node(&self, config: &fl_core::config::FederationConfig, i: usize) -> NodeConfig {
        let mut node = NodeConfig::from_federation(config, None).unwrap();
        node.scaffold_state = Some(self.state(i));
        node
    }

    /// Runs the aggregator and the members until the federation of `rounds` finishes.
    async fn run(&self, rounds: u64) -> fl_aggregator::server::ServeOutcome {
        let config = self.config(rounds, free_port());
        let server = {
            let config = config.clone();
            tokio::spawn(async move {
                fl_aggregator::server::serve(
                    &config,
                    ParamVec::zeros(schema()),
                    std::future::pending(),
                    |_| {},
                )
                .await
            })
        };
        let members: Vec<_> = (0..MEMBERS)
            .map(|i| {
                let node = self.node(&config, i);
                let key = self.keys[i].clone();
                tokio::spawn(async move { run_node(node, key, Quadratic::member(i)).await })
            })
            .collect();
        for m in members {
            let (report, _) = m.await.unwrap().expect("the member finished");
            assert!(report.fits > 0);
        }
        server.await.unwrap().expect("the aggregator finished")
    }
}

fn manifest(dir: &Path, round: u64) -> serde_json::Value {
    let path = dir.join(format!("checkpoints/rounds/{round:010}.json"));
    serde_json::from_slice(&std::fs::read(path).unwrap()).unwrap()
}

#[test]
fn over_grpc_a_restarted_federation_continues_exactly() {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let whole = tempfile::tempdir().unwrap();
    let split = tempfile::tempdir().unwrap();
    let (uninterrupted, interrupted, resumed) = runtime.block_on(async {
        let one = Federation::new(whole.path());
        let uninterrupted = one.run(6).await;
        // The same members (same keys) in another directory: 3 rounds, stop, then 3 more.
        let mut two = Federation::new(split.path());
        two.keys = one.keys.clone();
        let interrupted = two.run(3).await;
        let resumed = two.run(6).await;
        (uninterrupted, interrupted, resumed)
    });
    assert!(uninterrupted.finished && interrupted.finished && resumed.finished);
    assert_eq!(interrupted.last_checkpoint, Some(3));
    assert_eq!(resumed.last_checkpoint, Some(6));
    // Bit for bit the uninterrupted run's model: c came back from the checkpoint and every
    // cᵢ from its member's state file.
    assert_eq!(resumed.params, uninterrupted.params);
    assert_ne!(interrupted.params, uninterrupted.params);
    assert!(
        dist(uninterrupted.params.values(), OPTIMUM) < 0.2,
        "{:?}",
        uninterrupted.params.values()
    );
    // Every manifest names the server's control variate; both runs wrote the same ones.
    for round in 1..=6 {
        let (a, b) = (manifest(whole.path(), round), manifest(split.path(), round));
        let cid = a["strategy_state"].as_str().expect("a control variate");
        assert_eq!(b["strategy_state"].as_str(), Some(cid), "round {round}");
        assert!(whole.path().join("checkpoints/params").join(cid).exists());
    }
    // The members' state files agree too, and hold nonzero control variates.
    for i in 0..MEMBERS {
        let read = |dir: &Path| {
            ScaffoldState::new(dir.join(format!("member-{i}.scaffold")), "scaffold-grpc")
                .load(&schema())
                .unwrap()
                .expect("a state file")
        };
        let c = read(whole.path());
        assert_eq!(c, read(split.path()), "member {i}");
        assert!(c.values().iter().any(|v| *v != 0.0));
    }
}

#[test]
fn a_malformed_state_file_stops_the_node_with_a_clear_error() {
    let dir = tempfile::tempdir().unwrap();
    let f = Federation::new(dir.path());
    let config = f.config(1, free_port());
    std::fs::write(f.state(0), b"not a state file at all, not even close to it").unwrap();
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let out = runtime.block_on(run_node(
        f.node(&config, 0),
        f.keys[0].clone(),
        Quadratic::member(0),
    ));
    let Err(NodeError::Setup(reason)) = out else {
        panic!("expected a setup error");
    };
    assert!(
        reason.contains("member-0.scaffold") && reason.contains("malformed"),
        "{reason}"
    );
}

/// Over the wire the member's signature covers its control-variate difference: a header that
/// signs only the update, or a control chunk other than the signed one, is refused.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_signature_covers_the_control_difference() {
    use crate::grpc::{Raw, chunk, header, le, start_with};
    use fl_core::wire::{self, pb};
    use fl_core::{UpdateKind, UpdateStatement};
    use tonic::Code;

    let strategy = strategy_config().build(None, None, 3, 2).unwrap();
    let agg = start_with(100, strategy, None).await;
    let schema = crate::support::schema();
    let update = ParamVec::new(schema.clone(), vec![1.0, 2.0]).unwrap();
    let delta = ParamVec::new(schema.clone(), vec![0.5, -0.5]).unwrap();
    // Chunks of 2 values: one chunk each.
    let hashes = wire::chunk_hashes(&update, 8);
    let control_hashes = wire::chunk_hashes(&delta, 8);
    let refusal = |mut raw: Raw, code: Code, needle: &'static str| async move {
        let status = raw.refusal().await;
        assert_eq!(status.code(), code, "{status:?}");
        assert!(status.message().contains(needle), "{status:?}");
    };

    // Signed over the update's chunks only, but announcing a control variate.
    let key = &agg.members[0];
    let (mut raw, session) = Raw::join(agg.addr, key, key, &schema).await;
    let round = raw.until_fit().await;
    let mut h = header(key, session, round, &update, 1);
    h.control_chunk_hashes = control_hashes.iter().map(|h| h.to_vec()).collect();
    raw.send(pb::client_frame::Kind::Update(h)).await;
    refusal(raw, Code::Unauthenticated, "update signature").await;

    // Signed over both, then a control chunk that is not the signed one.
    let key = &agg.members[1];
    let (mut raw, session) = Raw::join(agg.addr, key, key, &schema).await;
    let round = raw.until_fit().await;
    let statement = UpdateStatement {
        federation_id: "bad-input".into(),
        session_id: session,
        round,
        kind: UpdateKind::Fit,
        update_hash: wire::scaffold_update_digest(&hashes, &control_hashes),
        num_examples: 1,
    };
    let mut h = header(key, session, round, &update, 1);
    h.control_chunk_hashes = control_hashes.iter().map(|h| h.to_vec()).collect();
    h.signature = key.sign_update(&statement).to_bytes().to_vec();
    raw.send(pb::client_frame::Kind::Update(h)).await;
    raw.send(chunk(round, 0, 0, le(update.values()))).await;
    raw.send(chunk(round, 0, 0, le(&[0.5, 0.5]))).await;
    refusal(
        raw,
        Code::InvalidArgument,
        "does not match its announced hash",
    )
    .await;
    let _ = agg.stop;
}

/// The server's control variate is part of its round: stored and read back verified, and a
/// damaged one makes the round unusable, so a restart falls back to the previous round.
#[test]
fn a_checkpoint_keeps_c_and_a_damaged_c_is_never_resumed_from() {
    use fl_aggregator::checkpoint::{CheckpointMeta, CheckpointStore, Problem};
    use fl_core::ContentHash;

    let dir = tempfile::tempdir().unwrap();
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    runtime.block_on(async {
        let store = CheckpointStore::open(dir.path().to_str().unwrap()).unwrap();
        let params = ParamVec::new(schema(), vec![1.0, 2.0]).unwrap();
        let mut saved = Vec::new();
        for round in 1..=2u64 {
            let c = Arc::new(ParamVec::new(schema(), vec![0.25 * round as f32, -1.0]).unwrap());
            let meta = CheckpointMeta::new("fed", round, ContentHash::of(b"config"))
                .with_strategy_state(c.clone());
            let manifest = store.save(meta, &params).await.unwrap();
            assert_eq!(manifest.strategy_state, Some(c.content_hash()));
            let back = store.load_strategy_state(&manifest).await.unwrap();
            assert_eq!(back.as_ref(), Some(&*c));
            saved.push(c);
        }
        // A checkpoint without a strategy state names none (and reads back none).
        let other = CheckpointStore::open("memory://").unwrap();
        let plain = other
            .save(CheckpointMeta::new("fed", 1, ContentHash::of(b"config")), &params)
            .await
            .unwrap();
        assert_eq!(plain.strategy_state, None);
        assert_eq!(other.load_strategy_state(&plain).await.unwrap(), None);
        // Damage round 2's control variate: its round is refused, round 1 is the latest.
        let path = dir
            .path()
            .join("params")
            .join(saved[1].content_hash().to_string());
        std::fs::write(&path, [0u8; 8]).unwrap();
        let report = store.verify(2).await.unwrap();
        assert!(
            report.problems.iter().any(|p| matches!(
                p,
                Problem::ParamsHashMismatch { path, .. } if path.contains(&saved[1].content_hash().to_string())
            )),
            "{report}"
        );
        let (latest, _) = store.latest().await.unwrap().unwrap();
        assert_eq!(latest.round, 1);
        let c = store.load_strategy_state(&latest).await.unwrap();
        assert_eq!(c.as_ref(), Some(&*saved[0]));
        // Loading the damaged one directly names the object.
        let two = report.manifest.unwrap();
        let e = store.load_strategy_state(&two).await.unwrap_err().to_string();
        assert!(e.contains("does not hash to its name"), "{e}");
    });
}
