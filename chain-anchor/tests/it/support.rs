//! Test harness: locating and spawning anvil, key files, checkpoints.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use alloy::node_bindings::{Anvil, AnvilInstance};
use alloy::primitives::Address;
use chain_anchor::{
    CheckpointAnchor, FederationId, KeySource, ParticipantsTree, RetryPolicy, RpcAnchor,
    RpcSettings, params_hash,
};

/// The anvil binary: `$DAOFL_ANVIL`, else the one `npm ci` installs in chain-anchor. `None`
/// (with a notice) only when `DAOFL_SKIP_ANVIL=1`; otherwise a missing anvil fails the test.
pub fn anvil_path() -> Option<PathBuf> {
    let path = match std::env::var_os("DAOFL_ANVIL") {
        Some(p) => PathBuf::from(p),
        None => Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("node_modules/@foundry-rs/anvil-linux-amd64/bin/anvil"),
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
        "anvil not found at {}: run `npm ci` in chain-anchor (installs @foundry-rs/anvil), or set \
         DAOFL_ANVIL to an anvil binary; DAOFL_SKIP_ANVIL=1 skips the anvil tests",
        path.display()
    );
}

/// Starts anvil on 127.0.0.1 (`port` 0: a free one), optionally with a state file it loads at
/// start and dumps at exit. The returned instance stops anvil (by PID) when dropped.
pub fn spawn_anvil(path: &Path, port: u16, state: Option<&Path>) -> AnvilInstance {
    let mut anvil = Anvil::new()
        .path(path)
        .port(port)
        .args(["--host", "127.0.0.1"])
        .timeout(30_000);
    if let Some(state) = state {
        anvil = anvil.arg("--state").arg(state);
    }
    anvil.try_spawn().expect("anvil starts")
}

/// Stops anvil and waits (at most 20 s) until it has exited, so its state file is written.
pub fn stop_anvil(mut anvil: AnvilInstance) {
    let pid = anvil.child().id();
    let status = std::process::Command::new("kill")
        .args(["-TERM", &pid.to_string()])
        .status()
        .expect("kill runs");
    assert!(status.success(), "kill -TERM {pid}");
    let start = Instant::now();
    while anvil
        .child_mut()
        .try_wait()
        .expect("wait on anvil")
        .is_none()
    {
        assert!(
            start.elapsed() < Duration::from_secs(20),
            "anvil {pid} did not stop"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    // Dropping now only reaps an exited process.
}

/// Writes anvil's `index`-th dev key to a mode-0600 key file.
pub fn key_file(anvil: &AnvilInstance, index: usize, dir: &Path) -> KeySource {
    let key = anvil.keys()[index].to_bytes();
    let path = dir.join(format!("key-{index}"));
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create(true).truncate(true);
    #[cfg(unix)]
    std::os::unix::fs::OpenOptionsExt::mode(&mut options, 0o600);
    use std::io::Write;
    let mut f = options.open(&path).expect("key file");
    writeln!(f, "0x{}", alloy::hex::encode(key)).expect("write key");
    KeySource::File(path)
}

/// RPC settings for tests: short timeouts and backoffs so failures show quickly.
pub fn rpc_settings(url: &str, registry: Address, key: KeySource, queue: &Path) -> RpcSettings {
    let mut s = RpcSettings::new(url.to_owned(), registry, key, queue.to_path_buf());
    s.receipt_timeout = Duration::from_secs(20);
    s.request_timeout = Duration::from_secs(5);
    s.poll_interval = Duration::from_millis(20);
    s.retry = RetryPolicy {
        attempts: 2,
        initial_backoff: Duration::from_millis(50),
        max_backoff: Duration::from_millis(200),
    };
    s
}

/// An RPC anchor on `anvil` with its `index`-th key.
pub fn rpc_anchor(anvil: &AnvilInstance, registry: Address, index: usize, dir: &Path) -> RpcAnchor {
    let key = key_file(anvil, index, dir);
    let queue = dir.join(format!("queue-{index}"));
    RpcAnchor::connect(rpc_settings(&anvil.endpoint(), registry, key, &queue)).expect("connect")
}

/// Deterministic checkpoint contents of a round: its parameter bytes and members.
pub struct RoundData {
    pub params: Vec<u8>,
    pub members: Vec<(Address, [u8; 32])>,
    pub cid: String,
}

pub fn round_data(round: u64) -> RoundData {
    let params: Vec<u8> = (0..4096u32)
        .flat_map(|i| ((i as f32) * 0.001 + round as f32).to_le_bytes())
        .collect();
    let members = (1..=5u8)
        .map(|i| {
            (
                Address::repeat_byte(i),
                [i.wrapping_mul(round as u8 + 3); 32],
            )
        })
        .collect();
    RoundData {
        params,
        members,
        cid: format!("bafkreitestround{round:04}"),
    }
}

pub fn checkpoint(federation: FederationId, round: u64) -> CheckpointAnchor {
    let d = round_data(round);
    CheckpointAnchor {
        federation,
        round,
        params_hash: params_hash(&d.params),
        cid: d.cid,
        participants_root: ParticipantsTree::new(&d.members).unwrap().root(),
        epsilon_micros: 250_000 * (round + 1),
    }
}

pub fn unique_federation(name: &str) -> FederationId {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_nanos();
    FederationId::from_name(&format!("{name}-{nanos}"))
}
