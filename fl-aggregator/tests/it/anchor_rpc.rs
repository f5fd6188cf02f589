//! Anchoring on a real EVM node (anvil on loopback): a registry deployed through the library's
//! `deploy`, rounds anchored from a `[chain] backend = "rpc"` table, a node outage that leaves
//! a round unanchored without failing anything, and a restart that anchors it exactly once.
//!
//! anvil comes from chain-anchor's `npm ci` (`@foundry-rs/anvil`) or `$DAOFL_ANVIL`;
//! `DAOFL_SKIP_ANVIL=1` skips the test when neither is there.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use fl_aggregator::anchoring::chain_anchor::alloy::hex;
use fl_aggregator::anchoring::chain_anchor::alloy::node_bindings::{Anvil, AnvilInstance};
use fl_aggregator::anchoring::chain_anchor::{
    Anchor, BackendKind, FederationId, KeySource, deploy_registry,
};
use fl_aggregator::anchoring::{
    ChainSettings, ManifestAnchor, RegistryReader, RegistrySource, RoundAnchorer, verify_checkpoint,
};
use fl_aggregator::checkpoint::{CheckpointMeta, CheckpointStore, Manifest, Participant};
use fl_core::{ContentHash, ParamVec, Schema, TensorSpec};

pub(crate) fn anvil_path() -> Option<PathBuf> {
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
        "anvil not found at {}: run `npm ci` in chain-anchor, set DAOFL_ANVIL, or set \
         DAOFL_SKIP_ANVIL=1 to skip",
        path.display()
    );
}

fn spawn_anvil(path: &Path, port: u16, state: &Path) -> AnvilInstance {
    Anvil::new()
        .path(path)
        .port(port)
        .args(["--host", "127.0.0.1"])
        .arg("--state")
        .arg(state)
        .timeout(30_000)
        .try_spawn()
        .expect("anvil starts")
}

/// Stops anvil by its PID and waits until it exited (so its state file is written).
fn stop_anvil(mut anvil: AnvilInstance) {
    let pid = anvil.child().id();
    let status = std::process::Command::new("kill")
        .args(["-TERM", &pid.to_string()])
        .status()
        .unwrap();
    assert!(status.success());
    let start = Instant::now();
    while anvil.child_mut().try_wait().unwrap().is_none() {
        assert!(
            start.elapsed() < Duration::from_secs(20),
            "anvil {pid} did not stop"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

async fn save(store: &CheckpointStore, round: u64) -> Manifest {
    let schema = Arc::new(Schema::new(vec![TensorSpec::new("w", [2])]).unwrap());
    let params = ParamVec::new(schema, vec![round as f32, 1.0]).unwrap();
    let meta = CheckpointMeta::new("rpc-test", round, ContentHash::of(b"federation"))
        .with_participants([Participant::new(
            "0x00000000000000000000000000000000000000bB",
        )]);
    store.save(meta, &params).await.unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rpc_anchors_survive_an_outage_and_land_exactly_once() {
    let Some(path) = anvil_path() else { return };
    let dir = tempfile::tempdir().unwrap();
    let state = dir.path().join("anvil-state.json");
    let anvil = spawn_anvil(&path, 0, &state);
    let port = anvil.port();
    let url = anvil.endpoint();

    // The aggregator's key: anvil's first development account, in a mode-0600 file.
    let key_path = dir.path().join("aggregator.key");
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create_new(true);
    #[cfg(unix)]
    std::os::unix::fs::OpenOptionsExt::mode(&mut options, 0o600);
    std::io::Write::write_all(
        &mut options.open(&key_path).unwrap(),
        format!("0x{}\n", hex::encode(anvil.keys()[0].to_bytes())).as_bytes(),
    )
    .unwrap();
    let deployment = deploy_registry(&url, &KeySource::File(key_path), 1)
        .await
        .unwrap();
    assert!(deployment.gas_used > 1_000_000);

    let table: toml::Table = toml::from_str(&format!(
        "backend = \"rpc\"\nurl = \"{url}\"\nregistry = \"{}\"\nkey_file = \"aggregator.key\"\n\
         chain_id = 31337\nqueue_dir = \"anchor-queue\"\nreceipt_timeout_secs = 20\n",
        deployment.registry
    ))
    .unwrap();
    let checkpoints = dir.path().join("checkpoints");
    let settings = ChainSettings::parse(&table, &checkpoints.to_string_lossy()).unwrap();
    assert_eq!(settings.run_dir, dir.path());
    let store = CheckpointStore::open(&checkpoints.to_string_lossy()).unwrap();

    let mut anchorer = RoundAnchorer::open(&settings).unwrap();
    for round in 1..=2 {
        let m = save(&store, round).await;
        assert_eq!(
            anchorer.checkpoint_written(&store, &m).await.unwrap(),
            vec![round]
        );
    }
    let a2 = ManifestAnchor::of(&store.manifest(2).await.unwrap())
        .unwrap()
        .unwrap();
    assert_eq!(a2.receipt.backend, BackendKind::Rpc);
    assert_eq!(a2.receipt.chain_id, 31337);

    // The node goes down: round 3 is written, its anchor fails without an error escaping the
    // anchorer's caller's control, and it stays waiting (and in the durable queue).
    stop_anvil(anvil);
    let m3 = save(&store, 3).await;
    let err = anchorer.checkpoint_written(&store, &m3).await.unwrap_err();
    assert!(err.is_transient(), "{err}");
    assert_eq!(anchorer.waiting(), vec![3]);
    assert!(store.manifest(3).await.unwrap().anchor.is_none());
    drop(anchorer);

    // The node is back; the aggregator restarts and anchors round 3, once.
    let anvil = spawn_anvil(&path, port, &state);
    let mut anchorer = RoundAnchorer::open(&settings).unwrap();
    assert_eq!(anchorer.resume(&store).await.unwrap(), vec![3]);
    let events = anchorer
        .chain()
        .events(Some(FederationId::from_name("rpc-test")), 0)
        .await
        .unwrap();
    assert_eq!(events.len(), 3, "{events:?}");
    assert!(anchorer.resume(&store).await.unwrap().is_empty());

    let reader = RegistryReader::open(&RegistrySource::from_settings(&settings)).unwrap();
    for round in 1..=3 {
        let m = store.manifest(round).await.unwrap();
        let bytes = store.params_bytes(&m).await.unwrap();
        let report = verify_checkpoint(reader.chain(), &m, &bytes, None)
            .await
            .unwrap();
        assert!(report.is_valid(), "{report}");
    }
    stop_anvil(anvil);
}
