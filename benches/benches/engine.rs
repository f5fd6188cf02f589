//! Pure-function costs of the aggregator side: folding a result into the weighted sum,
//! hashing parameters, and one whole engine round with precomputed client results.
//!
//! `cargo bench -p benches --bench engine`

// criterion's macros generate undocumented functions.
#![allow(missing_docs)]

use std::sync::Arc;
use std::time::Duration;

use criterion::{BenchmarkId, Criterion, Throughput, criterion_group, criterion_main};
use fl_aggregator::{Engine, EngineConfig};
use fl_core::{
    ClientId, ClientMessage, FedAvg, FitResult, Metrics, ParamVec, Schema, StrategyConfig,
    TensorSpec, WeightedSum,
};

fn params(d: usize, v: f32) -> ParamVec {
    let schema = Arc::new(Schema::new(vec![TensorSpec::new("w", [d])]).unwrap());
    ParamVec::new(schema, (0..d).map(|i| v + i as f32 * 1e-6).collect()).unwrap()
}

fn weighted_sum(c: &mut Criterion) {
    let mut g = c.benchmark_group("weighted_sum_add");
    for d in [4_810usize, 1_000_000] {
        let p = params(d, 0.5);
        g.throughput(Throughput::Elements(d as u64));
        g.bench_with_input(BenchmarkId::from_parameter(d), &p, |b, p| {
            let mut sum = WeightedSum::new(p.schema().clone());
            b.iter(|| sum.add(p, 70, &Metrics::new()).unwrap());
        });
    }
    g.finish();
}

fn content_hash(c: &mut Criterion) {
    let mut g = c.benchmark_group("content_hash");
    for d in [4_810usize, 1_000_000] {
        let p = params(d, 0.5);
        g.throughput(Throughput::Bytes(4 * d as u64));
        // The hash is cached on a ParamVec, so each sample hashes a fresh copy (the clone is
        // setup, not measured).
        g.bench_with_input(BenchmarkId::from_parameter(d), &p, |b, p| {
            b.iter_batched(
                || ParamVec::new(p.schema().clone(), p.values().to_vec()).unwrap(),
                |fresh| fresh.content_hash(),
                criterion::BatchSize::LargeInput,
            );
        });
    }
    g.finish();
}

/// One round of the engine with `n` clients whose results are ready: selection, instruction
/// fan-out, validation and aggregation of every result, round completion.
fn engine_round(c: &mut Criterion) {
    let mut g = c.benchmark_group("engine_round");
    g.sample_size(20);
    for (n, d) in [(20usize, 4_810usize), (100, 4_810), (20, 100_000)] {
        let results: Vec<ClientMessage> = (0..n)
            .map(|i| ClientMessage::FitDone {
                round: 1,
                result: FitResult {
                    params: params(d, i as f32),
                    num_examples: 70,
                    metrics: Metrics::new(),
                },
            })
            .collect();
        g.bench_function(format!("{n}_clients_{d}_params"), |b| {
            b.iter_batched(
                || {
                    let config = EngineConfig {
                        num_rounds: 1,
                        min_available_clients: n,
                        ..Default::default()
                    };
                    let mut e = Engine::new(
                        config,
                        Box::new(FedAvg::new(StrategyConfig::default())),
                        params(d, 0.0),
                    );
                    for i in 0..n {
                        e.handle_connect(Duration::ZERO, ClientId(i as u64));
                    }
                    (e, results.clone())
                },
                |(mut e, results)| {
                    while e.poll_transmit().is_some() {}
                    for (i, msg) in results.into_iter().enumerate() {
                        e.handle_message(Duration::ZERO, ClientId(i as u64), msg)
                            .unwrap();
                    }
                    assert!(e.is_finished());
                    e
                },
                criterion::BatchSize::LargeInput,
            );
        });
    }
    g.finish();
}

criterion_group!(benches, weighted_sum, content_hash, engine_round);
criterion_main!(benches);
