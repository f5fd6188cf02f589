//! Federations under secure aggregation (SecAgg+) on simulated time: the engine only ever
//! holds masked inputs and the unmasked sum, members drop out at every step, and the result
//! matches plain FedAvg over the members whose updates made it into the sum.

use std::sync::Arc;
use std::time::Duration;

use fl_aggregator::{AbortReason, Engine, EngineConfig, EngineEvent, SecureSetup, Sim, SimConfig};
use fl_core::dp::{Mechanism, PrivacyConfig};
use fl_core::secure::SecureAggregationConfig;
use fl_core::{Address, ClientId, FedAvg, MemberKey, ParamVec, StrategyConfig};

use crate::support::{MeanEstimator, schema};

const COMPUTE: Duration = Duration::from_secs(2);
const LATENCY: Duration = Duration::from_millis(50);

fn engine_config(rounds: u64, clients: usize) -> EngineConfig {
    EngineConfig {
        num_rounds: rounds,
        min_available_clients: clients,
        fit_timeout: Duration::from_secs(10),
        evaluate_timeout: Duration::from_secs(10),
        seed: 7,
        release_params_during_fit: false,
    }
}

fn fedavg(min_results: usize) -> StrategyConfig {
    StrategyConfig {
        fraction_fit: 1.0,
        min_fit_clients: 1,
        min_fit_results: min_results,
        fraction_evaluate: 0.0,
        ..Default::default()
    }
}

fn secure_config() -> SecureAggregationConfig {
    SecureAggregationConfig {
        dropout_rate: 0.3,
        step_timeout_s: 5.0,
        ..Default::default()
    }
}

/// Client i holds i + 1 samples of value i.
fn trainer(i: u64) -> MeanEstimator {
    MeanEstimator::new(vec![i as f32; i as usize + 1])
}

/// A simulation of `n` members with fresh keys, on a network with fixed latency.
fn secure_sim(
    engine: Engine,
    n: u64,
    secure: SecureAggregationConfig,
) -> (Sim<MeanEstimator>, Vec<Arc<MemberKey>>) {
    let keys: Vec<Arc<MemberKey>> = (0..n).map(|_| Arc::new(MemberKey::generate())).collect();
    let members: Arc<Vec<Address>> = Arc::new(keys.iter().map(|k| k.address()).collect());
    let engine = engine.with_secure_aggregation(SecureSetup {
        config: secure,
        members: members.clone(),
        session: [7; 32],
        committee: None,
    });
    let mut sim = Sim::new(
        engine,
        SimConfig {
            latency: LATENCY,
            jitter: Duration::ZERO,
            drop_rate: 0.0,
            seed: 1,
            workers: 2,
        },
    );
    for i in 0..n {
        sim.add_member(
            ClientId(i),
            trainer(i),
            COMPUTE,
            keys[i as usize].clone(),
            members.clone(),
        );
    }
    (sim, keys)
}

/// FedAvg's first coordinate over members `included`: Σ wᵢ·i / Σ wᵢ with wᵢ = i + 1.
fn expected_mean(included: impl Iterator<Item = u64>) -> f32 {
    let (num, den) = included.fold((0.0, 0.0), |(n, d), i| {
        (n + (i * (i + 1)) as f64, d + (i + 1) as f64)
    });
    (num / den) as f32
}

fn events(sim: &mut Sim<MeanEstimator>) -> Vec<EngineEvent> {
    let mut out = Vec::new();
    sim.drive_with(|_, e| out.push(e));
    out
}

#[test]
fn secure_rounds_match_plain_fedavg() {
    let n = 6;
    let plain = {
        let engine = Engine::new(
            engine_config(3, n as usize),
            Box::new(FedAvg::new(fedavg(n as usize))),
            ParamVec::zeros(schema()),
        );
        let mut sim = Sim::new(engine, SimConfig::ideal());
        for i in 0..n {
            sim.add_client(ClientId(i), trainer(i), COMPUTE);
        }
        sim.drive();
        sim.engine().params().clone()
    };
    let engine = Engine::new(
        engine_config(3, n as usize),
        Box::new(FedAvg::new(fedavg(n as usize))),
        ParamVec::zeros(schema()),
    );
    let (mut sim, _) = secure_sim(engine, n, secure_config());
    let trace = events(&mut sim);
    assert!(sim.engine().is_finished());
    assert_eq!(
        trace
            .iter()
            .filter(|e| matches!(e, EngineEvent::FitAggregated { num_results: 6, .. }))
            .count(),
        3,
        "{trace:?}"
    );
    let secure = sim.engine().params();
    for (a, b) in secure.values().iter().zip(plain.values()) {
        assert!((a - b).abs() < 1e-3, "secure {a} vs plain {b}");
    }
    assert!((secure.values()[0] - expected_mean(0..n)).abs() < 1e-3);
}

/// When (in simulated time) a member is at each step of round 1, with 50 ms latency and 2 s
/// of training: advertise ~0.1 s, share keys ~0.2 s, train 0.25–2.25 s, unmask ~2.35 s.
const STEPS: [(&str, Duration, bool); 4] = [
    // (step, when the member disconnects, whether its update is in the sum)
    ("advertise", Duration::from_millis(60), false),
    ("share keys", Duration::from_millis(160), false),
    (
        "masked input (training)",
        Duration::from_millis(1000),
        false,
    ),
    ("unmask", Duration::from_millis(2320), true),
];

#[test]
fn a_member_dropping_at_any_step_leaves_the_sum_of_the_others() {
    let n = 8;
    let gone = 3;
    for (step, at, included) in STEPS {
        let engine = Engine::new(
            engine_config(1, n as usize),
            Box::new(FedAvg::new(fedavg(1))),
            ParamVec::zeros(schema()),
        );
        let (mut sim, _) = secure_sim(engine, n, secure_config());
        while sim.now() < at {
            assert!(sim.step(), "the round ended before the {step} step");
        }
        sim.disconnect(ClientId(gone));
        let trace = events(&mut sim);
        let aggregated = trace
            .iter()
            .find_map(|e| match e {
                EngineEvent::FitAggregated {
                    params,
                    num_results,
                    ..
                } => Some((params.clone(), *num_results)),
                _ => None,
            })
            .unwrap_or_else(|| panic!("no aggregate after a drop at {step}: {trace:?}"));
        let members = (0..n).filter(|&i| included || i != gone);
        let expected = expected_mean(members.clone());
        assert_eq!(aggregated.1, members.count(), "drop at {step}");
        assert!(
            (aggregated.0.values()[0] - expected).abs() < 1e-3,
            "drop at {step}: {} vs {expected}",
            aggregated.0.values()[0]
        );
    }
}

#[test]
fn too_many_dropouts_abort_the_round_and_the_next_round_runs() {
    let n = 6;
    let engine = Engine::new(
        engine_config(2, n as usize - 1),
        Box::new(FedAvg::new(fedavg(1))),
        ParamVec::zeros(schema()),
    );
    // Up to 30% of 6 may drop: one. Three stragglers miss the training deadline in round 1.
    let (mut sim, _) = secure_sim(engine, n, secure_config());
    for i in 0..3 {
        sim.set_compute_time(ClientId(i), Duration::from_secs(60));
    }
    let mut trace = Vec::new();
    sim.drive_with(|sim, e| {
        if let EngineEvent::RoundAborted { round: 1, .. } = e {
            for i in 0..3 {
                sim.set_compute_time(ClientId(i), COMPUTE);
            }
        }
        trace.push(e);
    });
    let aborted = trace.iter().find_map(|e| match e {
        EngineEvent::RoundAborted { round: 1, reason } => Some(reason.clone()),
        _ => None,
    });
    let reason = aborted.unwrap_or_else(|| panic!("round 1 did not abort: {trace:?}"));
    assert!(
        matches!(&reason, AbortReason::SecureAggregation(r) if r.contains("masked inputs")),
        "{reason}"
    );
    assert!(
        trace
            .iter()
            .any(|e| matches!(e, EngineEvent::FitAggregated { round: 2, .. })),
        "round 2 aggregates: {trace:?}"
    );
    assert!(sim.engine().is_finished());
}

#[test]
fn distributed_dp_runs_under_secure_aggregation_and_is_accounted() {
    let n = 8;
    let privacy = PrivacyConfig {
        mechanism: Mechanism::Distributed,
        clip_norm: 4.0,
        noise_multiplier: 0.5,
        epsilon: 100.0,
        delta: 1e-5,
        accountant: Default::default(),
        adaptive: None,
    };
    let secure = secure_config();
    let dp = fl_core::dp::DifferentialPrivacy::fedavg(fedavg(1), privacy, n as usize)
        .unwrap()
        .with_secure_aggregation(&secure, schema().num_values())
        .unwrap();
    let engine = Engine::new(
        engine_config(3, n as usize),
        Box::new(dp),
        ParamVec::zeros(schema()),
    );
    let (mut sim, _) = secure_sim(engine, n, secure);
    let trace = events(&mut sim);
    let epsilons: Vec<f64> = trace
        .iter()
        .filter_map(|e| match e {
            EngineEvent::FitAggregated { metrics, .. } => metrics.get("epsilon").copied(),
            _ => None,
        })
        .collect();
    assert_eq!(epsilons.len(), 3, "{trace:?}");
    assert!(epsilons.windows(2).all(|w| w[1] > w[0]), "{epsilons:?}");
    let p = sim.engine().params();
    assert!(p.all_finite());
    // Noise of multiplier 0.5 on updates of norm <= 4 averaged over 8: the estimate moves
    // toward the members' mean (3.5 unweighted) and stays in a sane range.
    assert!(
        p.values()[0] > 0.5 && p.values()[0] < 7.0,
        "{:?}",
        p.values()
    );
}

#[test]
fn distributed_dp_without_secure_aggregation_refuses_to_run() {
    let privacy = PrivacyConfig {
        mechanism: Mechanism::Distributed,
        clip_norm: 4.0,
        noise_multiplier: 0.5,
        epsilon: 100.0,
        delta: 1e-5,
        accountant: Default::default(),
        adaptive: None,
    };
    // Without the secure-aggregation setup the strategy has no round event: it stops the
    // federation before any member could send an un-noised update.
    let dp = fl_core::dp::DifferentialPrivacy::fedavg(fedavg(1), privacy, 4).unwrap();
    let engine = Engine::new(engine_config(2, 4), Box::new(dp), ParamVec::zeros(schema()));
    let mut sim = Sim::new(engine, SimConfig::ideal());
    for i in 0..4 {
        sim.add_client(ClientId(i), trainer(i), COMPUTE);
    }
    let trace = events(&mut sim);
    assert!(
        trace.iter().any(|e| matches!(
            e,
            EngineEvent::Stopped { reason, .. }
                if matches!(
                    reason.as_ref(),
                    fl_core::Refusal::Privacy(privacy::Error::InvalidParameter { name: "mechanism", .. })
                )
        )),
        "{trace:?}"
    );
    assert!(
        !trace
            .iter()
            .any(|e| matches!(e, EngineEvent::RoundStarted { .. })),
        "no round may start: {trace:?}"
    );
}

/// A homomorphic federation of `n` members whose first `c` hold committee key shares.
fn he_sim(
    rounds: u64,
    n: u64,
    c: u32,
    t: u32,
) -> fl_aggregator::InProcessFederation<MeanEstimator> {
    let engine = Engine::new(
        engine_config(rounds, n as usize),
        Box::new(FedAvg::new(fedavg(1))),
        ParamVec::zeros(schema()),
    );
    let secure = SecureAggregationConfig {
        protocol: fl_core::secure::SecureProtocol::Homomorphic,
        // Committee decryption keeps its smudging margin up to about 20 bits.
        modulus_bits: 20,
        max_weight: 8,
        committee: Some(fl_core::secure::CommitteeConfig {
            members: c,
            threshold: t,
            min_contributors: 2,
        }),
        ..secure_config()
    };
    fl_aggregator::InProcessFederation::with_secure_aggregation(
        engine,
        (0..n).map(trainer).collect(),
        2,
        secure,
    )
    .unwrap()
}

#[test]
fn homomorphic_rounds_match_plain_fedavg() {
    let n = 5;
    let mut trace = Vec::new();
    let outcome = he_sim(2, n, 3, 2).run(|e, _| trace.push(format!("{e:?}")));
    assert_eq!(outcome.rounds, 2, "{trace:#?}");
    assert_eq!(
        trace
            .iter()
            .filter(|e| e.contains("FitAggregated") && e.contains("num_results: 5"))
            .count(),
        2,
        "{trace:#?}"
    );
    let p = outcome.params.values();
    assert!((p[0] - expected_mean(0..n)).abs() < 1e-3, "{p:?}");
}

#[test]
fn committee_members_may_be_absent_up_to_c_minus_t_and_beyond_that_the_round_aborts() {
    // c = 3, t = 2: one committee member may be away.
    let n = 6;
    let fed = he_sim(1, n, 3, 2);
    let mut sim = fed.into_sim();
    sim.disconnect(ClientId(0));
    let trace = events(&mut sim);
    assert!(
        trace
            .iter()
            .any(|e| matches!(e, EngineEvent::FitAggregated { num_results: 5, .. })),
        "{trace:#?}"
    );
    let p = sim.engine().params().values()[0];
    assert!((p - expected_mean(1..n)).abs() < 1e-3, "{p}");

    // Two of three away: nobody can decrypt; the round aborts and reveals nothing.
    let mut sim = he_sim(1, n, 3, 2).into_sim();
    sim.disconnect(ClientId(0));
    sim.disconnect(ClientId(1));
    let trace = events(&mut sim);
    let reason = trace
        .iter()
        .find_map(|e| match e {
            EngineEvent::RoundAborted { reason, .. } => Some(reason.clone()),
            _ => None,
        })
        .unwrap_or_else(|| panic!("no abort: {trace:#?}"));
    assert_eq!(
        reason,
        AbortReason::CommitteeUnavailable {
            connected: 1,
            needed: 2
        },
        "{reason}"
    );
    assert!(
        !trace
            .iter()
            .any(|e| matches!(e, EngineEvent::FitAggregated { .. }))
    );
}
