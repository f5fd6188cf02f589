//! What the gRPC transport costs:
//!
//! - `throughput [PARAMS] [REPEATS]`: one member, one round. The aggregator sends the global
//!   parameters and receives the member's update over loopback gRPC (chunked, hash-checked,
//!   signed, aggregated into the fixed-point sum); timed from the round's start to its
//!   aggregate. Alternated in the same run with a plain TCP echo of the same bytes (`2 × 4 ×
//!   PARAMS`), and reported as a ratio.
//! - `memory [PARAMS] [CLIENTS]`: the aggregator runs in a child process; `CLIENTS` members
//!   (in this process) each send a `PARAMS`-value update in the same round. Reports the
//!   child's peak resident set (`VmHWM`) divided by the model's size (`4 × PARAMS` bytes).
//!
//! `cargo run --release -p benches --bin transport -- throughput 25000000 5`
//! `cargo run --release -p benches --bin transport -- memory 100000000 10`

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::process::{Command, ExitCode, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use fl_aggregator::metrics::AggregatorMetrics;
use fl_aggregator::service::{ServiceConfig, federation};
use fl_aggregator::{Engine, EngineConfig, EngineEvent};
use fl_client::node::{NodeConfig, run_node};
use fl_core::{
    EvaluateConfig, EvaluateResult, FedAvg, FitConfig, FitOutcome, MemberKey, Metrics, ParamVec,
    Schema, StrategyConfig, TensorSpec, Trainer, TrainerError,
};
use tokio_stream::wrappers::TcpListenerStream;

fn schema(n: usize) -> Arc<Schema> {
    Arc::new(Schema::new(vec![TensorSpec::new("w", [n])]).expect("valid schema"))
}

/// A member that trains nothing: its update is a deterministic vector, produced on demand so
/// the member holds no copy of its own.
struct Synthetic {
    schema: Arc<Schema>,
    seed: f32,
}

impl Trainer for Synthetic {
    fn schema(&self) -> Arc<Schema> {
        self.schema.clone()
    }
    fn get_parameters(&self) -> ParamVec {
        let n = self.schema.num_values();
        let values = (0..n)
            .map(|i| self.seed + (i % 1024) as f32 * 1e-3)
            .collect();
        ParamVec::new(self.schema.clone(), values).expect("matching length")
    }
    fn set_parameters(&mut self, _params: &ParamVec) -> Result<(), TrainerError> {
        Ok(())
    }
    fn fit(&mut self, _config: &FitConfig) -> Result<FitOutcome, TrainerError> {
        Ok(FitOutcome {
            num_examples: 100,
            metrics: Metrics::new(),
        })
    }
    fn evaluate(&mut self, _config: &EvaluateConfig) -> Result<EvaluateResult, TrainerError> {
        Ok(EvaluateResult::default())
    }
}

/// Serves one federation of `clients` members over `listener` until it finishes; returns the
/// time from the first round's start to its aggregate.
async fn aggregator(
    listener: tokio::net::TcpListener,
    n: usize,
    keys: Vec<fl_core::Address>,
) -> Duration {
    let clients = keys.len();
    let engine = Engine::new(
        EngineConfig {
            num_rounds: 1,
            min_available_clients: clients,
            fit_timeout: Duration::from_secs(3600),
            evaluate_timeout: Duration::from_secs(3600),
            seed: 1,
            release_params_during_fit: true,
        },
        Box::new(FedAvg::new(StrategyConfig {
            min_fit_clients: clients,
            ..Default::default()
        })),
        // Non-zero values: an all-zero vector would sit on untouched (copy-on-write zero)
        // pages and hide the global model from the resident set.
        ParamVec::new(
            schema(n),
            (0..n).map(|i| (i % 97) as f32 * 1e-2 - 0.5).collect(),
        )
        .expect("matching length"),
    );
    let (service, coordinator) = federation(
        engine,
        ServiceConfig::new("bench", keys),
        Arc::new(AggregatorMetrics::new()),
    );
    let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<()>();
    let server = tokio::spawn(
        fl_aggregator::service::transport()
            .add_service(service.into_server())
            .serve_with_incoming_shutdown(TcpListenerStream::new(listener), async {
                let _ = stop_rx.await;
            }),
    );
    let mut started = None;
    let mut took = Duration::ZERO;
    coordinator
        .run(
            |e| match e {
                EngineEvent::RoundStarted { .. } => started = Some(Instant::now()),
                EngineEvent::FitAggregated { .. } => {
                    took = started.map_or(Duration::ZERO, |t| t.elapsed());
                }
                _ => {}
            },
            std::future::pending(),
        )
        .await;
    tokio::time::sleep(Duration::from_millis(200)).await;
    let _ = stop_tx.send(());
    let _ = server.await;
    took
}

async fn members(addr: SocketAddr, keys: Vec<MemberKey>, n: usize) {
    let mut tasks = Vec::new();
    for (i, key) in keys.into_iter().enumerate() {
        let config = NodeConfig::new(format!("http://{addr}"), "bench");
        let trainer = Synthetic {
            schema: schema(n),
            seed: i as f32,
        };
        tasks.push(tokio::spawn(run_node(config, key, trainer)));
    }
    for t in tasks {
        t.await.expect("member task").expect("member finished");
    }
}

fn grpc_round(n: usize) -> Duration {
    let rt = tokio::runtime::Runtime::new().expect("runtime");
    rt.block_on(async {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        let addr = listener.local_addr().expect("addr");
        let key = MemberKey::generate();
        let agg = tokio::spawn(aggregator(listener, n, vec![key.address()]));
        members(addr, vec![key], n).await;
        agg.await.expect("aggregator")
    })
}

/// Sends `bytes` to an echo server over loopback TCP and reads them back.
fn tcp_echo(bytes: usize) -> Duration {
    let listener = TcpListener::bind("127.0.0.1:0").expect("bind");
    let addr = listener.local_addr().expect("addr");
    let server = std::thread::spawn(move || {
        let (mut s, _) = listener.accept().expect("accept");
        let mut buf = vec![0u8; bytes];
        s.read_exact(&mut buf).expect("read");
        s.write_all(&buf).expect("write");
    });
    let data: Vec<u8> = (0..bytes).map(|i| i as u8).collect();
    let mut back = vec![0u8; bytes];
    let t = Instant::now();
    let mut s = TcpStream::connect(addr).expect("connect");
    let writer = {
        let mut s = s.try_clone().expect("clone");
        std::thread::spawn(move || s.write_all(&data).expect("write"))
    };
    s.read_exact(&mut back).expect("read");
    let took = t.elapsed();
    writer.join().expect("writer");
    server.join().expect("server");
    took
}

fn throughput(n: usize, repeats: usize) {
    let bytes = 2 * 4 * n;
    println!(
        "parameters {n} ({:.1} MB each way), {repeats} pairs",
        4.0 * n as f64 / 1e6
    );
    println!("| pair | gRPC round s | gRPC MB/s | TCP echo s | TCP MB/s | ratio gRPC/TCP time |");
    println!("|---|---|---|---|---|---|");
    let mut ratios = Vec::new();
    for pair in 1..=repeats {
        let g = grpc_round(n);
        let t = tcp_echo(4 * n);
        let ratio = g.as_secs_f64() / t.as_secs_f64();
        ratios.push(ratio);
        println!(
            "| {pair} | {:.3} | {:.0} | {:.3} | {:.0} | {:.2} |",
            g.as_secs_f64(),
            bytes as f64 / 1e6 / g.as_secs_f64(),
            t.as_secs_f64(),
            bytes as f64 / 1e6 / t.as_secs_f64(),
            ratio
        );
    }
    ratios.sort_by(f64::total_cmp);
    println!(
        "median ratio gRPC/TCP: {:.2} (min {:.2}, max {:.2})",
        ratios[ratios.len() / 2],
        ratios[0],
        ratios[ratios.len() - 1]
    );
}

fn status_kb(field: &str) -> u64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with(field))
                .and_then(|l| l.split_whitespace().nth(1)?.parse().ok())
        })
        .unwrap_or(0)
}

/// The child: the aggregator alone in its process.
fn memory_server(n: usize, addresses: Vec<fl_core::Address>) {
    let rt = tokio::runtime::Runtime::new().expect("runtime");
    rt.block_on(async {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        println!("baseline_kb {}", status_kb("VmRSS:"));
        println!("listening {}", listener.local_addr().expect("addr"));
        let took = aggregator(listener, n, addresses).await;
        println!("round_s {:.3}", took.as_secs_f64());
    });
    println!("peak_kb {}", status_kb("VmHWM:"));
}

fn memory(n: usize, clients: usize) -> Result<(), String> {
    let keys: Vec<MemberKey> = (0..clients).map(|_| MemberKey::generate()).collect();
    let addresses: Vec<String> = keys.iter().map(|k| k.address().to_string()).collect();
    let mut child = Command::new(std::env::current_exe().map_err(|e| e.to_string())?)
        .args(["memory-server", &n.to_string()])
        .args(&addresses)
        .stdout(Stdio::piped())
        .spawn()
        .map_err(|e| e.to_string())?;
    let stdout = child.stdout.take().ok_or("no stdout")?;
    let mut lines = BufReader::new(stdout).lines();
    let mut read = |prefix: &str| -> Result<String, String> {
        for line in lines.by_ref() {
            let line = line.map_err(|e| e.to_string())?;
            if let Some(v) = line.strip_prefix(prefix) {
                return Ok(v.trim().to_string());
            }
        }
        Err(format!("the aggregator exited before printing {prefix}"))
    };
    let baseline: f64 = read("baseline_kb")?.parse().map_err(|_| "baseline")?;
    let addr: SocketAddr = read("listening")?.parse().map_err(|_| "address")?;
    let rt = tokio::runtime::Runtime::new().map_err(|e| e.to_string())?;
    let t = Instant::now();
    rt.block_on(members(addr, keys, n));
    let round: f64 = read("round_s")?.parse().map_err(|_| "round")?;
    let peak: f64 = read("peak_kb")?.parse().map_err(|_| "peak")?;
    let _ = child.wait();
    let model = 4.0 * n as f64;
    println!(
        "| parameters | members | model MB | aggregator baseline RSS MB | aggregator peak RSS MB | peak / model | (peak - baseline) / model | round s |"
    );
    println!("|---|---|---|---|---|---|---|---|");
    println!(
        "| {n} | {clients} | {:.0} | {:.0} | {:.0} | {:.2} | {:.2} | {:.1} |",
        model / 1e6,
        baseline * 1024.0 / 1e6,
        peak * 1024.0 / 1e6,
        peak * 1024.0 / model,
        (peak - baseline) * 1024.0 / model,
        round
    );
    println!("(members' wall time {:.1} s)", t.elapsed().as_secs_f64());
    Ok(())
}

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let num =
        |i: usize, default: usize| args.get(i).and_then(|a| a.parse().ok()).unwrap_or(default);
    match args.first().map(String::as_str) {
        Some("throughput") => throughput(num(1, 25_000_000), num(2, 5)),
        Some("memory") => {
            if let Err(e) = memory(num(1, 100_000_000), num(2, 10)) {
                eprintln!("error: {e}");
                return ExitCode::FAILURE;
            }
        }
        Some("memory-server") => {
            let addresses = args[2..]
                .iter()
                .map(|a| a.parse().expect("addresses from the parent"))
                .collect();
            memory_server(num(1, 0), addresses);
        }
        _ => {
            eprintln!("usage: transport throughput [PARAMS] [REPEATS] | memory [PARAMS] [CLIENTS]");
            return ExitCode::FAILURE;
        }
    }
    ExitCode::SUCCESS
}
