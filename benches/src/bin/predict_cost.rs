//! Inference cost of the published proposal model (issue 18): what `fl-client predict` and an
//! inference node pay per proposal. Loads a checkpoint with its model card
//! ([`Predictor::from_manifest`]: card and parameters checked against the manifest), then, on
//! the test proposals of the shipped split (title and body as a node receives them,
//! featurisation included):
//!
//! - **batch**: all of them through `predict` in batches of 64, repeated; proposals per second;
//! - **one at a time**: each alone through `predict`, repeated; p50, p95, p99 and max latency
//!   and proposals per second, and the batch-to-single throughput ratio of the same run.
//!
//! `cargo run --release -p benches --bin predict_cost -- [MODEL] [PASSES]` (defaults:
//! `runs/proposals`, the folder `cargo run --release --example proposals` publishes into, and
//! 5 passes).

use std::time::{Duration, Instant};

use fl_client::data::proposals;
use fl_client::predict::{Predictor, ProposalInput};

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let mut args = std::env::args().skip(1);
    let model = args.next().unwrap_or_else(|| "runs/proposals".into());
    let passes: usize = args.next().map_or(Ok(5), |a| a.parse())?;
    let start = Instant::now();
    let predictor = Predictor::from_manifest(model.as_ref()).map_err(|e| {
        format!("{e} (publish a model first: cargo run --release --example proposals)")
    })?;
    let load = start.elapsed();
    let corpus = proposals::load_shipped()?;
    let split = corpus.shipped_split()?;
    let inputs: Vec<ProposalInput> = split
        .test
        .iter()
        .map(|&i| ProposalInput::from(&corpus.proposals[i]))
        .collect();
    let bytes: usize = inputs.iter().map(|p| p.title.len() + p.text.len()).sum();
    println!(
        "model {} (card: {} buckets x {} dims, first {} tokens); loaded and verified in {:.1} ms",
        predictor.model(),
        predictor.card().architecture.featurizer.buckets(),
        predictor.card().architecture.dim,
        predictor.card().input_limits.max_tokens,
        load.as_secs_f64() * 1e3
    );
    println!(
        "{} test proposals ({:.1} kB of title and body on average), {passes} passes",
        inputs.len(),
        bytes as f64 / inputs.len() as f64 / 1e3
    );

    // Warm-up, and the reference output the timed passes must reproduce.
    let reference = predictor.predict(&inputs)?;

    let mut batch_wall = Duration::ZERO;
    for _ in 0..passes {
        let t = Instant::now();
        for chunk in inputs.chunks(64) {
            std::hint::black_box(predictor.predict(chunk)?);
        }
        batch_wall += t.elapsed();
    }
    let batch_rate = (passes * inputs.len()) as f64 / batch_wall.as_secs_f64();

    let mut latencies = Vec::with_capacity(passes * inputs.len());
    for _ in 0..passes {
        for (input, expected) in inputs.iter().zip(&reference) {
            let t = Instant::now();
            let got = predictor.predict(std::slice::from_ref(input))?;
            latencies.push(t.elapsed());
            if got.first() != Some(expected) {
                return Err(format!("{}: one at a time differs from batched", input.id).into());
            }
        }
    }
    let single_wall: Duration = latencies.iter().sum();
    let single_rate = latencies.len() as f64 / single_wall.as_secs_f64();
    latencies.sort_unstable();
    let at = |q: f64| {
        let i = ((latencies.len() as f64 * q).ceil() as usize).clamp(1, latencies.len()) - 1;
        latencies[i].as_secs_f64() * 1e3
    };
    println!("batch of 64:      {batch_rate:>8.0} proposals/s");
    println!(
        "one at a time:    {single_rate:>8.0} proposals/s; latency p50 {:.2} ms, p95 {:.2} ms, p99 {:.2} ms, max {:.2} ms",
        at(0.50),
        at(0.95),
        at(0.99),
        at(1.0)
    );
    println!(
        "batching gains {:.1}x throughput (same run, same proposals)",
        batch_rate / single_rate
    );
    Ok(())
}
