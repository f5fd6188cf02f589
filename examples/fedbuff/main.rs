//! FedBuff against synchronous FedAvg on simulated time, members of heterogeneous speed.
//!
//! Both federations train the same digits members (Dirichlet α = 0.5, the quickstart's MLP,
//! one local epoch per fit) from the same initial model. Each member takes a simulated compute
//! time per fit drawn log-normal (median 1 s; σ chosen so the 5th and 95th percentiles are
//! `spread` apart), plus 50 ms latency per message. Synchronous FedAvg (the round engine in the
//! simulator, every member each round) waits for the slowest member each round; FedBuff steps
//! every `k` results, for as much simulated time as the synchronous run took. Prints, per seed,
//! the simulated time until the held-out accuracy first reaches each target, and the ratio.
//!
//! `cargo run --release --example fedbuff -- [clients=20] [spread=10] [k=5] [rounds=15]
//!  [staleness=20] [seeds=3]`

use std::process::ExitCode;
use std::time::Duration;

use examples::digits::{self, DigitsConfig};
use fl_aggregator::fedbuff::{FedBuffConfig, FedBuffEngine, FedBuffEvent, FedBuffSim};
use fl_aggregator::sim::{Sim, SimConfig};
use fl_aggregator::{Engine, EngineConfig, EngineEvent};
use fl_core::{ClientId, ParamVec};
use rand::SeedableRng;
use rand_distr::Distribution;

type Error = Box<dyn std::error::Error>;

const TARGETS: [f64; 3] = [0.8, 0.9, 0.95];

fn main() -> ExitCode {
    match run() {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("fedbuff failed: {e}");
            ExitCode::FAILURE
        }
    }
}

fn arg(name: &str, default: f64) -> Result<f64, Error> {
    for a in std::env::args().skip(1) {
        if let Some(v) = a.strip_prefix(&format!("{name}=")) {
            return v.parse().map_err(|e| format!("{name}: {e}").into());
        }
    }
    Ok(default)
}

/// Per-member compute times: log-normal, median 1 s, 5th-95th percentile ratio `spread`.
fn speeds(n: usize, spread: f64, seed: u64) -> Result<Vec<Duration>, Error> {
    let sigma = spread.ln() / (2.0 * 1.644_853_6);
    let dist = rand_distr::LogNormal::new(0.0, sigma)?;
    let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(seed ^ 0x5eed);
    Ok((0..n)
        .map(|_| Duration::from_secs_f64(dist.sample(&mut rng)))
        .collect())
}

/// (simulated seconds, accuracy) after each server update.
type Curve = Vec<(f64, f64)>;

fn first_reaching(curve: &Curve, target: f64) -> Option<f64> {
    curve.iter().find(|(_, a)| *a >= target).map(|(t, _)| *t)
}

fn accuracy(evaluator: &mut fl_client::BurnTrainer, params: &ParamVec) -> Result<f64, Error> {
    let r = digits::evaluate_global(evaluator, params)?;
    Ok(r.metrics.get("accuracy").copied().unwrap_or(f64::NAN))
}

fn sync_fedavg(config: &DigitsConfig, times: &[Duration]) -> Result<Curve, Error> {
    let prepared = digits::prepare(config)?;
    let strategy =
        config
            .strategy()
            .build(None, None, prepared.trainers.len(), prepared.initial.len())?;
    let engine = Engine::new(
        EngineConfig {
            num_rounds: config.rounds,
            min_available_clients: prepared.trainers.len(),
            fit_timeout: Duration::from_secs(3600),
            evaluate_timeout: Duration::from_secs(3600),
            seed: config.seed,
            release_params_during_fit: false,
        },
        strategy,
        prepared.initial,
    );
    let mut sim = Sim::new(
        engine,
        SimConfig {
            latency: Duration::from_millis(50),
            ..SimConfig::ideal()
        },
    );
    for (i, (t, compute)) in prepared.trainers.into_iter().zip(times).enumerate() {
        sim.add_client(ClientId(i as u64), t, *compute);
    }
    let mut evaluator = prepared.evaluator;
    let mut curve = Vec::new();
    let mut failure = None;
    sim.drive_with(|sim, event| {
        if let EngineEvent::RoundCompleted { params, .. } = event {
            match accuracy(&mut evaluator, &params) {
                Ok(a) => curve.push((sim.now().as_secs_f64(), a)),
                Err(e) => failure = Some(e),
            }
        }
    });
    match failure {
        Some(e) => Err(e),
        None => Ok(curve),
    }
}

fn fedbuff(
    config: &DigitsConfig,
    times: &[Duration],
    k: usize,
    staleness: u64,
    budget: Duration,
) -> Result<Curve, Error> {
    let prepared = digits::prepare(config)?;
    let updates = u64::MAX;
    let engine = FedBuffEngine::new(
        FedBuffConfig {
            max_staleness: staleness,
            fit: config.fit.clone(),
            ..FedBuffConfig::new(k, updates)
        },
        prepared.initial,
    )?;
    let mut sim = FedBuffSim::new(engine, Duration::from_millis(50));
    for (i, (t, compute)) in prepared.trainers.into_iter().zip(times).enumerate() {
        sim.add_member(ClientId(i as u64), t, *compute);
    }
    let mut evaluator = prepared.evaluator;
    let mut curve = Vec::new();
    let mut failure = None;
    sim.drive_until(budget, |now, event| {
        if let FedBuffEvent::Applied { params, .. } = event {
            match accuracy(&mut evaluator, &params) {
                Ok(a) => curve.push((now.as_secs_f64(), a)),
                Err(e) => failure = Some(e),
            }
        }
    });
    match failure {
        Some(e) => Err(e),
        None => Ok(curve),
    }
}

fn run() -> Result<(), Error> {
    let clients = arg("clients", 20.0)? as usize;
    let spread = arg("spread", 10.0)?;
    let k = arg("k", 5.0)? as usize;
    let rounds = arg("rounds", 15.0)? as u64;
    let staleness = arg("staleness", 20.0)? as u64;
    let seeds = arg("seeds", 3.0)? as u64;
    println!(
        "{clients} members, compute time log-normal (median 1 s, p95/p5 = {spread}), 50 ms latency; \
         sync FedAvg {rounds} rounds of every member; FedBuff K = {k}, max staleness {staleness}, \
         for the same simulated time"
    );
    println!(
        "\n| seed | slowest / fastest | target | sync FedAvg (sim s) | FedBuff (sim s) | speed-up |"
    );
    println!("|---|---:|---:|---:|---:|---:|");
    let mut finals = Vec::new();
    for seed in 2026..2026 + seeds {
        let config = DigitsConfig {
            clients,
            rounds,
            seed,
            fit: fl_core::FitConfig {
                local_epochs: 1,
                ..DigitsConfig::default().fit
            },
            ..DigitsConfig::default()
        };
        let times = speeds(clients, spread, seed)?;
        let (slow, fast) = times
            .iter()
            .fold((Duration::ZERO, Duration::MAX), |(s, f), t| {
                (s.max(*t), f.min(*t))
            });
        let sync = sync_fedavg(&config, &times)?;
        let budget = Duration::from_secs_f64(sync.last().map_or(0.0, |x| x.0));
        let buffered = fedbuff(&config, &times, k, staleness, budget)?;
        for target in TARGETS {
            let (a, b) = (
                first_reaching(&sync, target),
                first_reaching(&buffered, target),
            );
            let show = |x: Option<f64>| x.map_or("not reached".to_owned(), |t| format!("{t:.1}"));
            let ratio = match (a, b) {
                (Some(a), Some(b)) => format!("{:.2}x", a / b),
                _ => "-".into(),
            };
            println!(
                "| {seed} | {:.1} | {:.0}% | {} | {} | {ratio} |",
                slow.as_secs_f64() / fast.as_secs_f64(),
                100.0 * target,
                show(a),
                show(b)
            );
        }
        let last = |c: &Curve| c.last().map_or((f64::NAN, f64::NAN), |x| *x);
        finals.push((seed, last(&sync), last(&buffered), buffered.len()));
    }
    println!(
        "\n| seed | sync FedAvg: end (sim s), accuracy, rounds | FedBuff: last step (sim s), accuracy, steps |"
    );
    println!("|---|---:|---:|");
    for (seed, s, b, steps) in finals {
        println!(
            "| {seed} | {:.1} s, {:.2}%, {rounds} | {:.1} s, {:.2}%, {steps} |",
            s.0,
            100.0 * s.1,
            b.0,
            100.0 * b.1
        );
    }
    Ok(())
}
