//! Gas per anchored round (alone and batched) and anchoring latency, on anvil and on the
//! embedded EVM; prints a markdown table.
//!
//! ```text
//! cargo run --release -p chain-anchor --example anchor_bench -- [ROUNDS] [BATCH]
//! ```
//! anvil is taken from `$DAOFL_ANVIL` or chain-anchor's `node_modules` (`npm ci` in
//! chain-anchor). ROUNDS (default 50) rounds are anchored one per transaction, then as many in
//! batches of BATCH (default 10).

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use alloy::node_bindings::Anvil;
use alloy::primitives::{Address, B256};
use chain_anchor::{
    Anchor, CheckpointAnchor, EmbeddedAnchor, FederationId, KeySource, ParticipantsTree,
    RoundBatch, RpcAnchor, RpcSettings, deploy_registry, epsilon_micros,
};

fn checkpoint(federation: FederationId, round: u64) -> CheckpointAnchor {
    let members: Vec<(Address, [u8; 32])> = (0..10u8)
        .map(|i| (Address::repeat_byte(i + 1), [i ^ round as u8; 32]))
        .collect();
    CheckpointAnchor {
        federation,
        round,
        params_hash: B256::from(alloy::primitives::keccak256(round.to_le_bytes())),
        // A CIDv1 (raw, sha2-256, base32) is 59 characters.
        cid: format!("bafkrei{:052}", round),
        participants_root: ParticipantsTree::new(&members).expect("members").root(),
        epsilon_micros: epsilon_micros(Some(0.1 * (round + 1) as f64)),
    }
}

struct Row {
    backend: &'static str,
    mode: String,
    rounds: u64,
    txs: u64,
    gas: u64,
    latencies: Vec<Duration>,
}

impl Row {
    fn print(&self) {
        let mut l = self.latencies.clone();
        l.sort();
        let pct = |p: f64| l[((l.len() - 1) as f64 * p).round() as usize].as_secs_f64() * 1e3;
        println!(
            "| {} | {} | {} | {} | {} | {:.2} | {:.2} |",
            self.backend,
            self.mode,
            self.rounds,
            self.gas / self.txs,
            self.gas / self.rounds,
            pct(0.5),
            pct(0.95)
        );
    }
}

async fn measure<A: Anchor>(
    anchor: &A,
    backend: &'static str,
    rounds: u64,
    batch: u64,
) -> chain_anchor::Result<Vec<Row>> {
    let fed = FederationId::from_name(&format!("bench-{backend}"));
    let mut single = Row {
        backend,
        mode: "one round per tx".into(),
        rounds,
        txs: rounds,
        gas: 0,
        latencies: Vec::new(),
    };
    for round in 0..rounds {
        let cp = checkpoint(fed, round);
        let start = Instant::now();
        let receipt = anchor.anchor(&cp).await?;
        single.latencies.push(start.elapsed());
        single.gas += receipt.gas_used;
    }
    let mut batched = Row {
        backend,
        mode: format!("batches of {batch}"),
        rounds: 0,
        txs: 0,
        gas: 0,
        latencies: Vec::new(),
    };
    let mut first = rounds;
    while first < 2 * rounds {
        let last = (first + batch).min(2 * rounds);
        let b = RoundBatch::new((first..last).map(|r| checkpoint(fed, r)).collect())?;
        let start = Instant::now();
        let receipt = anchor.anchor_batch(&b).await?;
        batched.latencies.push(start.elapsed());
        batched.gas += receipt.gas_used;
        batched.txs += 1;
        batched.rounds += last - first;
        first = last;
    }
    Ok(vec![single, batched])
}

fn anvil_path() -> PathBuf {
    std::env::var_os("DAOFL_ANVIL").map_or_else(
        || {
            Path::new(env!("CARGO_MANIFEST_DIR"))
                .join("node_modules/@foundry-rs/anvil-linux-amd64/bin/anvil")
        },
        PathBuf::from,
    )
}

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let mut args = std::env::args().skip(1);
    let rounds: u64 = args.next().map_or(Ok(50), |a| a.parse())?;
    let batch: u64 = args.next().map_or(Ok(10), |a| a.parse())?;
    if rounds == 0 || batch == 0 {
        return Err("ROUNDS and BATCH must be positive".into());
    }
    let path = anvil_path();
    if !path.is_file() {
        return Err(format!(
            "no anvil at {}: run `npm ci` in chain-anchor or set DAOFL_ANVIL",
            path.display()
        )
        .into());
    }

    let dir = tempfile::tempdir()?;
    let anvil = Anvil::new()
        .path(&path)
        .port(0u16)
        .args(["--host", "127.0.0.1"])
        .try_spawn()?;
    let key_path = dir.path().join("key");
    {
        use std::io::Write;
        let mut options = std::fs::OpenOptions::new();
        options.write(true).create_new(true);
        #[cfg(unix)]
        std::os::unix::fs::OpenOptionsExt::mode(&mut options, 0o600);
        let mut f = options.open(&key_path)?;
        writeln!(f, "0x{}", alloy::hex::encode(anvil.keys()[0].to_bytes()))?;
    }
    let key = KeySource::File(key_path);
    let deployment = deploy_registry(&anvil.endpoint(), &key, 1).await?;
    let mut settings = RpcSettings::new(
        anvil.endpoint(),
        deployment.registry,
        key,
        dir.path().join("queue"),
    );
    settings.poll_interval = Duration::from_millis(5);
    let rpc = RpcAnchor::connect(settings)?;
    let embedded = EmbeddedAnchor::open(&dir.path().join("embedded"))?;

    let mut rows = measure(&rpc, "anvil (JSON-RPC)", rounds, batch).await?;
    rows.extend(measure(&embedded, "embedded (revm)", rounds, batch).await?);

    println!("registry deployment: {} gas\n", deployment.gas_used);
    println!(
        "| backend | mode | rounds | gas per tx | gas per round | latency p50 (ms) | latency p95 (ms) |"
    );
    println!("|---|---|---|---|---|---|---|");
    for row in &rows {
        row.print();
    }
    println!(
        "\nlatency: from the anchor call to its confirmed receipt (anvil automines; receipt polled \
         every 5 ms); the embedded backend includes writing its state file."
    );
    Ok(())
}
