//! Whole federations on simulated time: latency, jitter, loss, stragglers, failures.

use std::time::Duration;

use fl_aggregator::{DropReason, Engine, EngineConfig, EngineEvent, Sim, SimConfig};
use fl_core::{ClientId, FedAvg, ParamVec, Stage, StrategyConfig};

use crate::support::{Behaviour, MeanEstimator, schema};

const COMPUTE: Duration = Duration::from_secs(2);

fn engine(rounds: u64, clients: usize, min_results: usize) -> Engine {
    engine_with(rounds, clients, min_results, 0.5)
}

fn engine_with(rounds: u64, clients: usize, min_results: usize, evaluate: f64) -> Engine {
    let config = EngineConfig {
        num_rounds: rounds,
        min_available_clients: clients,
        fit_timeout: Duration::from_secs(10),
        evaluate_timeout: Duration::from_secs(10),
        seed: 7,
        release_params_during_fit: false,
    };
    let strategy = FedAvg::new(StrategyConfig {
        fraction_fit: 1.0,
        min_fit_clients: 1,
        min_fit_results: min_results,
        fraction_evaluate: evaluate,
        min_evaluate_clients: 1,
        ..Default::default()
    });
    Engine::new(config, Box::new(strategy), ParamVec::zeros(schema()))
}

fn network(seed: u64, drop_rate: f64) -> SimConfig {
    SimConfig {
        latency: Duration::from_millis(50),
        jitter: Duration::from_millis(200),
        drop_rate,
        seed,
        workers: 2,
    }
}

/// Client i holds samples [i, i, ..] (i + 1 of them).
fn trainer(i: u64) -> MeanEstimator {
    MeanEstimator::new(vec![i as f32; i as usize + 1])
}

fn run(sim: &mut Sim<MeanEstimator>) -> Vec<String> {
    let mut trace = Vec::new();
    sim.drive_with(|sim, e| trace.push(format!("{:?} {e:?}", sim.now())));
    trace
}

#[test]
fn honest_federation_reaches_the_closed_form_average() {
    let mut sim = Sim::new(engine(3, 4, 4), network(1, 0.0));
    for i in 0..4 {
        sim.add_client(ClientId(i), trainer(i), COMPUTE);
    }
    let trace = run(&mut sim);
    assert!(sim.engine().is_finished());
    // First coordinate: Σ i·(i+1) / Σ (i+1) over i = 0..4 = 20 / 10 = 2.
    assert_eq!(sim.engine().params().values()[0], 2.0);
    // Second coordinate: x ← 0.5·x + 0.5·2 each round from 0: 1, 1.5, 1.75.
    assert_eq!(sim.engine().params().values()[1], 1.75);
    assert_eq!(
        trace
            .iter()
            .filter(|l| l.contains("RoundCompleted"))
            .count(),
        3
    );
    assert!(trace.iter().any(|l| l.contains("Evaluated")));
    assert!(
        sim.now() > Duration::from_secs(6),
        "three rounds of 2 s compute"
    );
}

#[test]
fn same_seeds_give_the_same_run_event_for_event() {
    let go = || {
        let mut sim = Sim::new(engine(4, 5, 2), network(99, 0.15));
        for i in 0..5 {
            sim.add_client(
                ClientId(i),
                trainer(i),
                COMPUTE + Duration::from_millis(i * 300),
            );
        }
        let trace = run(&mut sim);
        (
            trace,
            sim.engine().params().content_hash(),
            sim.stats().clone(),
        )
    };
    let (a, ha, sa) = go();
    let (b, hb, sb) = go();
    assert_eq!(a, b);
    assert_eq!(ha, hb);
    assert_eq!(sa.lost, sb.lost);
    assert!(sa.lost > 0, "a 15% lossy network loses something");
}

#[test]
fn failing_and_panicking_clients_are_dropped_and_the_round_completes() {
    let mut sim = Sim::new(engine(2, 4, 2), network(3, 0.0));
    sim.add_client(ClientId(0), trainer(0), COMPUTE);
    sim.add_client(ClientId(1), trainer(1), COMPUTE);
    sim.add_client(ClientId(2), trainer(2).with(Behaviour::Errors), COMPUTE);
    sim.add_client(ClientId(3), trainer(3).with(Behaviour::Panics), COMPUTE);
    let mut dropped = Vec::new();
    let mut aggregated = 0;
    sim.drive_with(|_, e| match e {
        EngineEvent::ClientDropped {
            client,
            reason: DropReason::ClientFailed(why),
            ..
        } => dropped.push((client, why)),
        EngineEvent::FitAggregated { num_results, .. } => {
            assert_eq!(num_results, 2);
            aggregated += 1;
        }
        _ => {}
    });
    assert_eq!(aggregated, 2);
    assert!(
        dropped
            .iter()
            .any(|(c, why)| *c == ClientId(2) && why.contains("disk full"))
    );
    assert!(
        dropped
            .iter()
            .any(|(c, why)| *c == ClientId(3) && why.contains("panicked"))
    );
    // Σ i·(i+1) / Σ (i+1) over the two honest clients {0, 1}: 2 / 3.
    assert_eq!(sim.engine().params().values()[0], 2.0 / 3.0);
}

#[test]
fn a_straggler_misses_the_deadline_and_its_stale_work_is_discarded() {
    // No evaluation stage, so nothing supersedes the straggler's training task.
    let mut sim = Sim::new(engine_with(1, 3, 2, 0.0), network(4, 0.0));
    sim.add_client(ClientId(0), trainer(0), COMPUTE);
    sim.add_client(ClientId(1), trainer(1), COMPUTE);
    sim.add_client(ClientId(2), trainer(2), Duration::from_secs(30));
    let mut late = Vec::new();
    sim.drive_with(|_, e| {
        if let EngineEvent::ClientDropped {
            client,
            stage,
            reason: DropReason::Deadline,
            ..
        } = e
        {
            late.push((client, stage));
        }
    });
    assert_eq!(late, vec![(ClientId(2), Stage::Fit)]);
    assert!(sim.engine().is_finished());
    assert_eq!(sim.engine().params().values()[0], 2.0 / 3.0);
    // The federation finished before the straggler did: its session refuses the stale
    // completion instead of sending it (the engine's refusal of late answers is tested in
    // engine.rs).
    assert_eq!(sim.stats().refused_by_clients, 1);
}

#[test]
fn nan_results_are_dropped_not_averaged() {
    let mut sim = Sim::new(engine(1, 3, 1), network(5, 0.0));
    sim.add_client(ClientId(0), trainer(1), COMPUTE);
    sim.add_client(ClientId(1), trainer(1), COMPUTE);
    sim.add_client(ClientId(2), trainer(2).with(Behaviour::ReturnsNan), COMPUTE);
    sim.drive();
    assert!(sim.engine().params().all_finite());
    assert_eq!(sim.engine().params().values()[0], 1.0);
}

#[test]
fn a_client_that_disconnects_mid_round_is_dropped() {
    let mut sim = Sim::new(engine(2, 3, 2), network(6, 0.0));
    for i in 0..3 {
        sim.add_client(ClientId(i), trainer(i), COMPUTE);
    }
    // Run until the first instructions are out, then pull the plug on client 2.
    while sim.now() < Duration::from_millis(300) && sim.step() {}
    sim.disconnect(ClientId(2));
    let mut dropped = Vec::new();
    sim.drive_with(|_, e| {
        if let EngineEvent::ClientDropped { client, reason, .. } = e {
            dropped.push((client, reason));
        }
    });
    assert!(dropped.contains(&(ClientId(2), DropReason::Disconnected)));
    // Round 2 cannot start: only two of the three required clients remain.
    assert_eq!(sim.engine().round(), 1);
    assert!(!sim.engine().is_finished());
}

#[test]
fn a_total_blackout_aborts_rounds_but_never_hangs() {
    let mut sim = Sim::new(engine(3, 2, 1), network(8, 1.0));
    sim.add_client(ClientId(0), trainer(0), COMPUTE);
    sim.add_client(ClientId(1), trainer(1), COMPUTE);
    let mut aborted = 0;
    sim.drive_with(|_, e| {
        if matches!(e, EngineEvent::RoundAborted { .. }) {
            aborted += 1;
        }
    });
    assert_eq!(aborted, 3);
    assert!(sim.engine().is_finished());
    assert_eq!(sim.engine().params().values(), &[0.0, 0.0]);
    assert_eq!(sim.now(), Duration::from_secs(30), "three 10 s deadlines");
}
