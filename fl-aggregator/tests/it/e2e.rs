//! End to end with real processes on loopback: the `fl-aggregator` and `fl-client` binaries,
//! TLS, signed joins and updates, checkpoints, and a `kill -9` of the aggregator mid-run.
//!
//! Every process is started by this test, bound to 127.0.0.1, waited on with a deadline and
//! killed by PID when the test ends (also when it fails).

use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use fl_aggregator::{Engine, EngineConfig, InProcessFederation};
use fl_core::config::FederationConfig;
use fl_core::{FedAvg, MemberKey, Trainer};

pub(crate) const MEMBERS: usize = 4;

/// Children killed (SIGKILL, by PID) when dropped.
pub(crate) struct Procs(pub(crate) Vec<Child>);

impl Drop for Procs {
    fn drop(&mut self) {
        for c in &mut self.0 {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

pub(crate) fn bin(name: &str) -> PathBuf {
    let aggregator = PathBuf::from(env!("CARGO_BIN_EXE_fl-aggregator"));
    if name == "fl-aggregator" {
        return aggregator;
    }
    // Cargo builds only this package's binaries for its tests. `cargo test --workspace`
    // builds the member's binary too; when it is missing or older than its sources (a run of
    // this package's tests alone), build it so the test never runs a stale one.
    let member = aggregator.with_file_name(name);
    static BUILT: std::sync::Once = std::sync::Once::new();
    BUILT.call_once(|| {
        if !stale(&member) {
            return;
        }
        let release = aggregator.components().any(|c| c.as_os_str() == "release");
        let mut cargo = Command::new(env!("CARGO"));
        // With the development attack mode, as the workspace's test build has it (the
        // fl-aggregator tests' dev-dependency turns the feature on).
        cargo.args([
            "build",
            "--quiet",
            "-p",
            "fl-client",
            "--bin",
            "fl-client",
            "--features",
            "attack",
        ]);
        if release {
            cargo.arg("--release");
        }
        let status = cargo.status().expect("cargo runs");
        assert!(status.success(), "building fl-client failed");
    });
    aggregator.with_file_name(name)
}

/// Whether `binary` is missing or older than a source file of the crates it is built from.
fn stale(binary: &Path) -> bool {
    let Ok(built) = std::fs::metadata(binary).and_then(|m| m.modified()) else {
        return true;
    };
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
    let mut dirs: Vec<PathBuf> = [
        "fl-client/src",
        "fl-client/Cargo.toml",
        "fl-core/src",
        "fl-core/proto",
        "fl-node/src",
        // `fl-client claim` reads the DAO through these.
        "dao/src",
        "dao/artifacts",
        "chain-anchor/src",
        "Cargo.lock",
    ]
    .iter()
    .map(|d| root.join(d))
    .collect();
    while let Some(path) = dirs.pop() {
        let Ok(meta) = std::fs::metadata(&path) else {
            continue;
        };
        if meta.is_dir() {
            if let Ok(entries) = std::fs::read_dir(&path) {
                dirs.extend(entries.filter_map(|e| e.ok().map(|e| e.path())));
            }
        } else if meta.modified().is_ok_and(|m| m > built) {
            return true;
        }
    }
    false
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

pub(crate) struct Federation {
    pub(crate) dir: tempfile::TempDir,
    pub(crate) config_path: PathBuf,
    pub(crate) keys: Vec<PathBuf>,
    metrics_port: u16,
}

pub(crate) fn federation(rounds: u64, tls: bool) -> Federation {
    let dir = tempfile::tempdir().unwrap();
    let mut addresses = Vec::new();
    let mut keys = Vec::new();
    for i in 0..MEMBERS {
        let key = MemberKey::generate();
        let path = dir.path().join(format!("member-{i}.key"));
        fl_node::write_key_file(&key, &path).unwrap();
        addresses.push(format!("\"{}\"", key.address()));
        keys.push(path);
    }
    if tls {
        let out = Command::new(bin("fl-aggregator"))
            .args(["certs", "--out"])
            .arg(dir.path().join("certs"))
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    let port = free_port();
    let metrics_port = free_port();
    let (scheme, tls_section) = if tls {
        (
            "https",
            "[tls]\nca = \"certs/ca.pem\"\nserver_cert = \"certs/server.pem\"\nserver_key = \"certs/server.key\"\n",
        )
    } else {
        ("http", "")
    };
    let toml = format!(
        r#"[federation]
id = "e2e-digits"
seed = 2026
rounds = {rounds}
min_clients = {MEMBERS}
fit_timeout_s = 120
evaluate_timeout_s = 60

[model]
kind = "mlp"
hidden = 256

[data]
dataset = "digits"
partition = "dirichlet"
alpha = 0.5
test_fraction = 0.2

[strategy]
fraction_fit = 1.0
min_fit_clients = 1
min_fit_results = 1

[strategy.fit]
local_epochs = 5
batch_size = 32
learning_rate = 0.02

[aggregator]
listen = "127.0.0.1:{port}"
metrics_listen = "127.0.0.1:{metrics_port}"
checkpoints = "checkpoints"
heartbeat_interval_s = 1
idle_timeout_s = 20

{tls_section}
[client]
aggregator = "{scheme}://localhost:{port}"
reconnect_attempts = 200
reconnect_delay_s = 0.1

[members]
allowed = [{}]
"#,
        addresses.join(", ")
    );
    let config_path = dir.path().join("federation.toml");
    std::fs::write(&config_path, toml).unwrap();
    Federation {
        dir,
        config_path,
        keys,
        metrics_port,
    }
}

/// Starts the aggregator and returns it with a channel of its stdout lines.
pub(crate) fn start_aggregator(f: &Federation) -> (Child, mpsc::Receiver<String>) {
    start_aggregator_with(&f.config_path)
}

/// Starts the aggregator on the federation file at `config_path`.
pub(crate) fn start_aggregator_with(config_path: &Path) -> (Child, mpsc::Receiver<String>) {
    let mut child = Command::new(bin("fl-aggregator"))
        .arg("run")
        .arg("--config")
        .arg(config_path)
        .env("DAOFL_LOG", "info")
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .unwrap();
    let stdout = child.stdout.take().unwrap();
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines().map_while(Result::ok) {
            let _ = tx.send(line);
        }
    });
    (child, rx)
}

pub(crate) fn wait_line(rx: &mpsc::Receiver<String>, prefix: &str, within: Duration) -> String {
    let deadline = Instant::now() + within;
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        match rx.recv_timeout(left) {
            Ok(line) if line.starts_with(prefix) => return line,
            Ok(_) => {}
            Err(e) => panic!("no line starting with {prefix:?} within {within:?}: {e}"),
        }
    }
}

fn start_clients(f: &Federation) -> Vec<Child> {
    start_clients_with(f, |_| Vec::new())
}

/// Starts every member with `extra(i)` appended to member `i`'s arguments.
fn start_clients_with(f: &Federation, extra: impl Fn(usize) -> Vec<PathBuf>) -> Vec<Child> {
    f.keys
        .iter()
        .enumerate()
        .map(|(i, key)| {
            Command::new(bin("fl-client"))
                .arg("run")
                .arg("--config")
                .arg(&f.config_path)
                .arg("--key")
                .arg(key)
                .args(extra(i))
                .env("DAOFL_LOG", "warn")
                .stdout(Stdio::null())
                .stderr(Stdio::inherit())
                .spawn()
                .unwrap()
        })
        .collect()
}

pub(crate) fn wait_exit(child: &mut Child, within: Duration) -> std::process::ExitStatus {
    let deadline = Instant::now() + within;
    loop {
        if let Some(status) = child.try_wait().unwrap() {
            return status;
        }
        assert!(
            Instant::now() < deadline,
            "process {} still running after {within:?}",
            child.id()
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

fn http_get(port: u16, path: &str) -> String {
    let mut s = TcpStream::connect(("127.0.0.1", port)).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    write!(
        s,
        "GET {path} HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n"
    )
    .unwrap();
    let mut body = String::new();
    let _ = s.read_to_string(&mut body);
    body
}

/// The same federation in process: same seed, same members' data, same engine and strategy.
fn in_process(config_path: &Path) -> (String, f64) {
    let config = fl_node::load_federation(config_path).unwrap();
    let trainers = (0..MEMBERS)
        .map(|i| fl_client::federation::member_trainer(&config, i).unwrap())
        .collect();
    let initial = fl_client::federation::initial_params(&config).unwrap();
    let engine = Engine::new(
        EngineConfig {
            num_rounds: config.federation.rounds,
            min_available_clients: config.federation.min_clients,
            fit_timeout: config.fit_timeout(),
            evaluate_timeout: config.evaluate_timeout(),
            seed: config.federation.seed,
            release_params_during_fit: false,
        },
        Box::new(FedAvg::new(config.strategy.clone())),
        initial,
    );
    let outcome = InProcessFederation::new(engine, trainers, 2).run(|_, _| {});
    (
        outcome.params.content_hash().to_string(),
        accuracy(&config, &outcome.params),
    )
}

fn accuracy(config: &FederationConfig, params: &fl_core::ParamVec) -> f64 {
    let mut evaluator = fl_client::federation::evaluator(config).unwrap();
    evaluator.set_parameters(params).unwrap();
    evaluator
        .evaluate(&fl_core::EvaluateConfig::default())
        .unwrap()
        .accuracy()
        .unwrap()
}

fn field<'a>(line: &'a str, key: &str) -> &'a str {
    line.split_whitespace()
        .find_map(|w| w.strip_prefix(key))
        .unwrap_or_else(|| panic!("no {key} in {line:?}"))
}

#[test]
fn four_members_over_tls_match_the_in_process_run() {
    let f = federation(3, true);
    let (aggregator, lines) = start_aggregator(&f);
    let mut procs = Procs(vec![aggregator]);
    wait_line(&lines, "listening", Duration::from_secs(60));
    procs.0.extend(start_clients(&f));

    // Metrics are served while the federation runs.
    let metrics = http_get(f.metrics_port, "/metrics");
    assert!(metrics.contains("200 OK"), "{metrics}");
    assert!(metrics.contains("daofl_connected_clients"), "{metrics}");

    let done = wait_line(&lines, "finished", Duration::from_secs(300));
    let status = wait_exit(&mut procs.0[0], Duration::from_secs(30));
    assert!(status.success());
    for c in &mut procs.0[1..] {
        assert!(wait_exit(c, Duration::from_secs(30)).success());
    }
    let grpc_hash = field(&done, "params=").to_string();
    assert_eq!(field(&done, "last_checkpoint="), "3");

    let (local_hash, local_accuracy) = in_process(&f.config_path);
    assert_eq!(
        grpc_hash, local_hash,
        "gRPC and in-process runs with the same seed end on different models"
    );
    let config = fl_node::load_federation(&f.config_path).unwrap();
    let store =
        fl_aggregator::checkpoint::CheckpointStore::open(&config.aggregator.checkpoints).unwrap();
    let rt = tokio::runtime::Runtime::new().unwrap();
    let (manifest, params) = rt.block_on(store.latest()).unwrap().unwrap();
    assert_eq!(manifest.round, 3);
    assert_eq!(manifest.participants.len(), MEMBERS);
    assert_eq!(params.content_hash().to_string(), grpc_hash);
    let grpc_accuracy = accuracy(&config, &params);
    assert_eq!(grpc_accuracy, local_accuracy);
    assert!(
        grpc_accuracy > 0.8,
        "accuracy {grpc_accuracy} after 3 rounds"
    );

    let verify = Command::new(bin("fl-aggregator"))
        .args(["checkpoints", "verify", "--config"])
        .arg(&f.config_path)
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&verify.stdout);
    assert!(verify.status.success(), "{text}");
    assert!(text.contains("3 checkpoints verified, 0 damaged"), "{text}");
    drop(f.dir);
}

#[test]
fn killed_aggregator_resumes_and_ends_on_the_uninterrupted_model() {
    let f = federation(5, false);
    let (aggregator, lines) = start_aggregator(&f);
    let mut procs = Procs(vec![aggregator]);
    wait_line(&lines, "listening", Duration::from_secs(60));
    procs.0.extend(start_clients(&f));

    // Wait until round 2 is checkpointed, then kill -9 the aggregator in round 3.
    let manifest = f.dir.path().join("checkpoints/rounds/0000000002.json");
    let deadline = Instant::now() + Duration::from_secs(300);
    while !manifest.exists() {
        assert!(Instant::now() < deadline, "round 2 never checkpointed");
        std::thread::sleep(Duration::from_millis(20));
    }
    procs.0[0].kill().unwrap(); // SIGKILL
    procs.0[0].wait().unwrap();
    let final_manifest = f.dir.path().join("checkpoints/rounds/0000000005.json");
    assert!(!final_manifest.exists());

    let (aggregator, lines) = start_aggregator(&f);
    procs.0[0] = aggregator;
    let done = wait_line(&lines, "finished", Duration::from_secs(300));
    assert!(wait_exit(&mut procs.0[0], Duration::from_secs(30)).success());
    for c in &mut procs.0[1..] {
        assert!(wait_exit(c, Duration::from_secs(60)).success());
    }
    let (uninterrupted, _) = in_process(&f.config_path);
    assert_eq!(field(&done, "params="), uninterrupted);
}

#[test]
fn sigterm_stops_the_aggregator_cleanly() {
    // The signal goes out the moment the "listening" line is read, several times: the
    // handlers are installed before that line is printed, so no start leaves a window in which
    // SIGTERM would kill the process without the clean stop (what once failed 1 run in 28).
    let f = federation(3, false);
    for attempt in 0..3 {
        let (aggregator, lines) = start_aggregator(&f);
        let mut procs = Procs(vec![aggregator]);
        wait_line(&lines, "listening", Duration::from_secs(60));
        let pid = procs.0[0].id().to_string();
        let status = Command::new("kill").args(["-TERM", &pid]).status().unwrap();
        assert!(status.success());
        let line = wait_line(&lines, "stopped", Duration::from_secs(30));
        assert!(
            line.contains("last_checkpoint=none"),
            "attempt {attempt}: {line}"
        );
        assert!(wait_exit(&mut procs.0[0], Duration::from_secs(30)).success());
    }
}

/// Homomorphic aggregation with real processes: three of the four members run the key
/// ceremony with `fl-client committee`, the aggregator takes the joint key from the ceremony's
/// messages, every member uploads encrypted updates and two holders decrypt each round's sum.
#[test]
fn homomorphic_federation_with_a_committee_of_member_processes() {
    let rounds = 2;
    let f = federation(rounds, false);
    let addresses: Vec<String> = f
        .keys
        .iter()
        .map(|k| fl_node::read_key_file(k).unwrap().address().to_string())
        .collect();
    let holders: Vec<String> = addresses[..3].iter().map(|a| format!("\"{a}\"")).collect();
    let plain_toml = std::fs::read_to_string(&f.config_path).unwrap();
    let mut toml = plain_toml.clone();
    toml.push_str(&format!(
        "\n[secure_aggregation]\nprotocol = \"he\"\nmodulus_bits = 20\nclip_norm = 5.0\n\
         max_weight = 256\n\
         [secure_aggregation.committee]\nmembers = 3\nthreshold = 2\nmin_contributors = 2\n\
         [secure_aggregation.ceremony]\nholders = [{}]\ndir = \"ceremony\"\n",
        holders.join(", ")
    ));
    std::fs::write(&f.config_path, toml).unwrap();
    let secret = |i: usize| f.dir.path().join(format!("member-{i}.ceremony"));
    let state = |i: usize| f.dir.path().join(format!("member-{i}.committee"));
    let mut digests = Vec::new();
    for step in ["commit", "deal", "finish"] {
        for i in 0..3 {
            let mut cmd = Command::new(bin("fl-client"));
            cmd.args(["committee", step, "--config"])
                .arg(&f.config_path)
                .arg("--key")
                .arg(&f.keys[i])
                .arg("--secret")
                .arg(secret(i));
            if step == "finish" {
                cmd.arg("--state").arg(state(i));
            }
            let out = cmd.output().unwrap();
            assert!(
                out.status.success(),
                "{step} {i}: {}",
                String::from_utf8_lossy(&out.stderr)
            );
            if step == "finish" {
                digests.push(String::from_utf8(out.stdout).unwrap());
            }
        }
    }
    assert!(digests.iter().all(|d| *d == digests[0]), "{digests:?}");

    let (aggregator, lines) = start_aggregator(&f);
    let mut procs = Procs(vec![aggregator]);
    wait_line(&lines, "listening", Duration::from_secs(60));
    procs.0.extend(start_clients_with(&f, |i| {
        if i < 3 {
            vec!["--committee-state".into(), state(i)]
        } else {
            Vec::new()
        }
    }));
    let done = wait_line(&lines, "finished", Duration::from_secs(300));
    assert!(wait_exit(&mut procs.0[0], Duration::from_secs(30)).success());
    for c in &mut procs.0[1..] {
        assert!(wait_exit(c, Duration::from_secs(30)).success());
    }
    assert_eq!(field(&done, "last_checkpoint="), rounds.to_string());

    // The model learned, close to the plain in-process run: not bit for bit, since updates are
    // clipped to norm 5, quantised to 20 bits and weighted by at most 256 examples (after two
    // rounds here about 0.77 against 0.82; over the quickstart's 30 rounds within a point, see
    // benches/RESULTS.md).
    let config = fl_node::load_federation(&f.config_path).unwrap();
    let store =
        fl_aggregator::checkpoint::CheckpointStore::open(&config.aggregator.checkpoints).unwrap();
    let rt = tokio::runtime::Runtime::new().unwrap();
    let (manifest, params) = rt.block_on(store.latest()).unwrap().unwrap();
    assert_eq!(manifest.round, rounds);
    assert_eq!(manifest.participants.len(), MEMBERS);
    let he_accuracy = accuracy(&config, &params);
    let plain_path = f.dir.path().join("plain.toml");
    std::fs::write(&plain_path, plain_toml).unwrap();
    let (_, plain_accuracy) = in_process(&plain_path);
    assert!(
        he_accuracy > 0.6 && he_accuracy > plain_accuracy - 0.1,
        "homomorphic {he_accuracy} vs plain {plain_accuracy}"
    );
    // The first two holders decrypted both rounds and saved that before answering.
    for i in 0..2 {
        let bytes = std::fs::read(state(i)).unwrap();
        let member = fl_core::secure::he::CommitteeMember::from_bytes(&bytes).unwrap();
        assert_eq!(member.last_round(), Some(rounds), "holder {i}");
    }
}

#[test]
fn an_epoch_is_settled_from_the_checkpoints_and_a_free_rider_earns_nothing() {
    let f = federation(3, false);
    let mut toml = std::fs::read_to_string(&f.config_path).unwrap();
    toml.push_str("\n[strategy.contribution]\nshapley = \"exact\"\n");
    std::fs::write(&f.config_path, toml).unwrap();
    let (aggregator, lines) = start_aggregator(&f);
    let mut procs = Procs(vec![aggregator]);
    wait_line(&lines, "listening", Duration::from_secs(60));
    // Member 3 sends the global model back every round (the fl-client attack mode).
    procs.0.extend(start_clients_with(&f, |i| {
        if i == 3 {
            vec!["--attack".into(), "free_ride".into()]
        } else {
            Vec::new()
        }
    }));
    wait_line(&lines, "finished", Duration::from_secs(300));
    assert!(wait_exit(&mut procs.0[0], Duration::from_secs(30)).success());
    let config = fl_node::load_federation(&f.config_path).unwrap();
    let checkpoints = config.aggregator.checkpoints.clone();
    let rewards = f.dir.path().join("rewards.json");
    let out = Command::new(bin("fl-aggregator"))
        .args(["settle", "rewards", "--checkpoints", &checkpoints])
        .args(["--from", "1", "--to", "3", "--pool", "1000000", "--out"])
        .arg(&rewards)
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout).to_string();
    assert!(
        out.status.success(),
        "{text}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let free_rider = config.members.allowed[3].clone();
    let row = text
        .lines()
        .find(|l| l.contains(&free_rider))
        .unwrap_or_else(|| panic!("no row for the free rider: {text}"));
    assert!(
        row.ends_with("| 0 | 0 | false | 0 |"),
        "the free rider earns nothing: {row}"
    );
    let tree = dao::settle::RewardTree::load(&rewards).unwrap();
    assert_eq!(tree.amount(free_rider.parse().unwrap()), None);
    assert!(
        tree.rewards().count() >= 2,
        "honest members are paid: {text}"
    );
    assert!(
        tree.total()
            <= fl_aggregator::anchoring::chain_anchor::alloy::primitives::U256::from(1_000_000u64)
    );
    let root = tree.root().to_string();
    assert!(text.contains(&format!("root {root}")), "{text}");
    // Anyone holding the checkpoints recomputes the same root; another root is refused.
    let verify = |root: &str| {
        Command::new(bin("fl-aggregator"))
            .args(["settle", "check-root", "--checkpoints", &checkpoints])
            .args([
                "--from", "1", "--to", "3", "--pool", "1000000", "--root", root,
            ])
            .output()
            .unwrap()
    };
    let ok = verify(&root);
    assert!(
        ok.status.success(),
        "{}",
        String::from_utf8_lossy(&ok.stdout)
    );
    let wrong = format!("0x{}", "11".repeat(32));
    assert_eq!(verify(&wrong).status.code(), Some(1));
    // Another split of the same pool gives another root.
    assert_eq!(
        Command::new(bin("fl-aggregator"))
            .args(["settle", "check-root", "--checkpoints", &checkpoints])
            .args([
                "--from", "1", "--to", "3", "--pool", "2000000", "--root", &root
            ])
            .output()
            .unwrap()
            .status
            .code(),
        Some(1)
    );
}
