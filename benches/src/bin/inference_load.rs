//! Load on the consensus inference network (issue 19): five inference nodes
//! (`fl_client::serve`, each its own HTTP server on loopback, answers signed) behind the
//! gateway (`fl_client::gateway`, in process), the published proposal model, the test
//! proposals of the shipped split as requests. For redundancy 1 (one node, no consensus), 3
//! (2 of 3) and 5 (3 of 5) and several concurrencies, every request goes through selection,
//! the nodes, signature checks and the decision; prints requests per second and p50, p95 and
//! p99 latency, and the redundancy overhead against one node measured in the same run.
//!
//! `cargo run --release -p benches --bin inference_load -- [MODEL] [REQUESTS]` (defaults:
//! `runs/proposals`, the folder `cargo run --release --example proposals` publishes into, and
//! 200 requests per cell).

use std::sync::Arc;
use std::time::{Duration, Instant};

use fl_client::data::proposals;
use fl_client::gateway::{Gateway, NodeEntry};
use fl_client::predict::Predictor;
use fl_client::serve::{Batcher, InferenceNode, serve};
use fl_core::MemberKey;
use fl_core::inference::{ConsensusPolicy, DEFAULT_TOLERANCE, InferenceRequest};

fn percentile(sorted: &[f64], p: f64) -> f64 {
    let i = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[i.min(sorted.len() - 1)]
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let mut args = std::env::args().skip(1);
    let model = args.next().unwrap_or_else(|| "runs/proposals".into());
    let per_cell: usize = args.next().map_or(Ok(200), |a| a.parse())?;
    let corpus = proposals::load_shipped()?;
    let split = corpus.shipped_split()?;
    let requests: Vec<InferenceRequest> = split
        .test
        .iter()
        .map(|&i| {
            let p = &corpus.proposals[i];
            let mut text = p.text.clone();
            if text.len() > fl_core::inference::MAX_TEXT_BYTES {
                let mut cut = fl_core::inference::MAX_TEXT_BYTES;
                while !text.is_char_boundary(cut) {
                    cut -= 1;
                }
                text.truncate(cut);
            }
            InferenceRequest::new(p.community.clone(), p.id.clone(), p.title.clone(), text)
        })
        .collect();
    let runtime = tokio::runtime::Runtime::new()?;
    runtime.block_on(async move {
        let mut entries = Vec::new();
        let mut promoted = None;
        for _ in 0..5 {
            let predictor = Predictor::from_manifest(model.as_ref()).map_err(|e| {
                format!("{e} (publish a model first: cargo run --release --example proposals)")
            })?;
            promoted = Some(predictor.card().params_cid);
            let key = MemberKey::generate();
            let node = Arc::new(InferenceNode::new(key.clone(), predictor));
            let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
            entries.push(NodeEntry {
                address: key.address().to_string(),
                url: format!("http://{}", listener.local_addr()?),
                stake: 1000.0,
            });
            tokio::spawn(serve(listener, Batcher::spawn(node), std::future::pending()));
        }
        let model = promoted.ok_or("no node")?;
        println!(
            "{} requests per cell (test proposals of the shipped split, median {} bytes of text), \
             5 nodes on loopback, nproc {}",
            per_cell,
            {
                let mut l: Vec<usize> = requests.iter().map(|r| r.text.len()).collect();
                l.sort_unstable();
                l[l.len() / 2]
            },
            std::thread::available_parallelism().map_or(0, |n| n.get())
        );
        println!();
        println!("| redundancy | concurrency | requests/s | p50 ms | p95 ms | p99 ms | p95 vs one node |");
        println!("|---|---|---|---|---|---|---|");
        let mut single_p95: std::collections::BTreeMap<usize, f64> = Default::default();
        for (redundancy, quorum) in [(1usize, 1usize), (3, 2), (5, 3)] {
            let policy = ConsensusPolicy {
                redundancy,
                quorum,
                tolerance: DEFAULT_TOLERANCE,
            };
            let gateway = Arc::new(Gateway::new(entries.clone(), policy, Duration::from_secs(5))?);
            for concurrency in [1usize, 4, 16] {
                let next = Arc::new(std::sync::atomic::AtomicUsize::new(0));
                let start = Instant::now();
                let mut workers = Vec::new();
                for w in 0..concurrency {
                    let gateway = Arc::clone(&gateway);
                    let next = Arc::clone(&next);
                    let requests = requests.clone();
                    workers.push(tokio::spawn(async move {
                        let mut latencies = Vec::new();
                        loop {
                            let i = next.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
                            if i >= per_cell {
                                break;
                            }
                            let mut request = requests[i % requests.len()].clone();
                            request.nonce = (redundancy * 1_000_000 + concurrency * 1_000 + i) as u64;
                            let block = [w as u8; 32];
                            let t = Instant::now();
                            let answer = gateway.analyse(&request, &model, &block).await;
                            let took = t.elapsed().as_secs_f64();
                            answer.map_err(|e| e.to_string())?;
                            latencies.push(took);
                        }
                        Ok::<_, String>(latencies)
                    }));
                }
                let mut latencies = Vec::new();
                for w in workers {
                    latencies.extend(w.await.map_err(|e| e.to_string())??);
                }
                let wall = start.elapsed().as_secs_f64();
                latencies.sort_by(f64::total_cmp);
                let p95 = percentile(&latencies, 0.95);
                if redundancy == 1 {
                    single_p95.insert(concurrency, p95);
                }
                println!(
                    "| {redundancy} of which {quorum} agree | {concurrency} | {:.0} | {:.1} | {:.1} | {:.1} | {:.2}x |",
                    latencies.len() as f64 / wall,
                    1e3 * percentile(&latencies, 0.5),
                    1e3 * p95,
                    1e3 * percentile(&latencies, 0.99),
                    p95 / single_p95.get(&concurrency).copied().unwrap_or(p95)
                );
            }
        }
        Ok::<_, Box<dyn std::error::Error>>(())
    })?;
    Ok(())
}
