//! Differential privacy in the round: clipped updates, noised and normalised sums, epsilon in
//! the round's metrics, and a budget that stops the federation before it is exceeded, also
//! when rounds abort.

use std::sync::Arc;
use std::time::Duration;

use fl_aggregator::{Engine, EngineConfig, EngineEvent};
use fl_core::dp::{DifferentialPrivacy, Mechanism, PrivacyConfig, UpdatePrivacy, privatize_update};
use fl_core::{
    ClientId, ClientMessage, FitResult, Metrics, ParamVec, Schema, ServerMessage, StrategyConfig,
    TensorSpec,
};

const T0: Duration = Duration::ZERO;

fn schema() -> Arc<Schema> {
    Arc::new(Schema::new(vec![TensorSpec::new("w", [2])]).unwrap())
}

fn config(z: f64, epsilon: f64) -> PrivacyConfig {
    PrivacyConfig {
        mechanism: Mechanism::Central,
        clip_norm: 1.0,
        noise_multiplier: z,
        epsilon,
        delta: 1e-5,
        accountant: privacy::AccountantKind::Rdp,
        adaptive: None,
    }
}

fn engine(z: f64, epsilon: f64, rounds: u64) -> Engine {
    let fedavg = StrategyConfig {
        fraction_fit: 1.0,
        min_fit_clients: 2,
        min_fit_results: 2,
        ..Default::default()
    };
    Engine::new(
        EngineConfig {
            num_rounds: rounds,
            min_available_clients: 2,
            fit_timeout: Duration::from_secs(10),
            evaluate_timeout: Duration::from_secs(10),
            seed: 3,
            release_params_during_fit: false,
        },
        Box::new(DifferentialPrivacy::fedavg(fedavg, config(z, epsilon), 2).unwrap()),
        ParamVec::zeros(schema()),
    )
}

fn update(values: [f32; 2]) -> ClientMessage {
    ClientMessage::FitDone {
        round: 0,
        result: FitResult {
            params: ParamVec::new(schema(), values.to_vec()).unwrap(),
            num_examples: 1,
            metrics: Metrics::new(),
        },
    }
}

fn with_round(msg: ClientMessage, r: u64) -> ClientMessage {
    match msg {
        ClientMessage::FitDone { result, .. } => ClientMessage::FitDone { round: r, result },
        other => other,
    }
}

/// Drains instructions; the fit settings every selected client got.
fn fit_settings(e: &mut Engine) -> Vec<Option<UpdatePrivacy>> {
    std::iter::from_fn(|| e.poll_transmit())
        .filter_map(|(_, m)| match m {
            ServerMessage::Fit { upload, .. } => Some(upload.privacy),
            _ => None,
        })
        .collect()
}

#[test]
fn clients_send_clipped_differences() {
    let global = ParamVec::new(schema(), vec![1.0, 1.0]).unwrap();
    let local = ParamVec::new(schema(), vec![4.0, 5.0]).unwrap();
    let settings = UpdatePrivacy {
        clip_norm: 1.0,
        local_noise_multiplier: 0.0,
        ..Default::default()
    };
    // (3, 4) has norm 5: clipped to (0.6, 0.8).
    let (d, unclipped) = privatize_update(&global, &local, &settings).unwrap();
    assert!(!unclipped);
    assert!((d.values()[0] - 0.6).abs() < 1e-6 && (d.values()[1] - 0.8).abs() < 1e-6);
    let norm = d
        .values()
        .iter()
        .map(|v| f64::from(*v).powi(2))
        .sum::<f64>()
        .sqrt();
    assert!(norm <= 1.0);
    // Local DP noises the update: it is no longer the clipped difference.
    let (noisy, _) = privatize_update(
        &global,
        &local,
        &UpdatePrivacy {
            clip_norm: 1.0,
            local_noise_multiplier: 1.0,
            ..Default::default()
        },
    )
    .unwrap();
    assert_ne!(noisy.values(), d.values());
    // A bad clip norm is an error, not a panic.
    assert!(
        privatize_update(
            &global,
            &local,
            &UpdatePrivacy {
                clip_norm: f64::NAN,
                local_noise_multiplier: 0.0,
                ..Default::default()
            }
        )
        .is_err()
    );
}

#[test]
fn central_dp_noises_and_normalises_the_sum_and_reports_epsilon() {
    // Tiny noise: the result is the clipped mean over the expected 2 clients.
    let mut e = engine(1e-4, 1e9, 1);
    e.handle_connect(T0, ClientId(0));
    e.handle_connect(T0, ClientId(1));
    let settings = fit_settings(&mut e);
    assert_eq!(settings.len(), 2);
    assert!(
        settings
            .iter()
            .all(|s| s.is_some_and(|p| p.clip_norm == 1.0 && p.local_noise_multiplier == 0.0))
    );
    e.handle_message(T0, ClientId(0), with_round(update([0.6, 0.8]), 1))
        .unwrap();
    e.handle_message(T0, ClientId(1), with_round(update([0.2, 0.0]), 1))
        .unwrap();
    let events: Vec<EngineEvent> = std::iter::from_fn(|| e.poll_event()).collect();
    let (params, metrics) = events
        .iter()
        .find_map(|ev| match ev {
            EngineEvent::FitAggregated {
                params, metrics, ..
            } => Some((params.clone(), metrics.clone())),
            _ => None,
        })
        .expect("aggregated");
    let v = params.values();
    assert!(
        (v[0] - 0.4).abs() < 1e-2 && (v[1] - 0.4).abs() < 1e-2,
        "{v:?}"
    );
    let eps = metrics["epsilon"];
    assert!(eps > 0.0 && eps.is_finite(), "{metrics:?}");
    assert_eq!(metrics["delta"], 1e-5);
    assert_eq!(metrics["dp_rounds"], 1.0);
}

#[test]
fn the_budget_stops_the_run_and_aborted_rounds_spend_nothing() {
    // z = 1 with every member in every round: epsilon for one round at delta 1e-5 is ~ 4.4,
    // two ~ 6.5 (RDP); a budget of 7 allows two rounds and refuses the third.
    let one =
        privacy::accounting::epsilon_for(1.0, 1.0, 1, 1e-5, privacy::AccountantKind::Rdp).unwrap();
    let two =
        privacy::accounting::epsilon_for(1.0, 1.0, 2, 1e-5, privacy::AccountantKind::Rdp).unwrap();
    let three =
        privacy::accounting::epsilon_for(1.0, 1.0, 3, 1e-5, privacy::AccountantKind::Rdp).unwrap();
    let budget = (two + three) / 2.0;
    let mut e = engine(1.0, budget, 10);
    e.handle_connect(T0, ClientId(0));
    e.handle_connect(T0, ClientId(1));
    let mut spent = Vec::new();
    let mut round = 1;
    // Round 1 aborts: one client fails, the other disconnects; nothing is spent.
    fit_settings(&mut e);
    e.handle_message(
        T0,
        ClientId(0),
        ClientMessage::Failed {
            round,
            stage: fl_core::Stage::Fit,
            reason: "out of memory".into(),
        },
    )
    .unwrap();
    e.handle_disconnect(T0, ClientId(1));
    e.handle_connect(T0, ClientId(1));
    round += 1;
    while !e.is_finished() {
        fit_settings(&mut e);
        e.handle_message(T0, ClientId(0), with_round(update([0.1, 0.1]), round))
            .unwrap();
        e.handle_message(T0, ClientId(1), with_round(update([0.1, 0.1]), round))
            .unwrap();
        round += 1;
        assert!(round < 20, "the budget never stopped the run");
    }
    let mut stopped = None;
    let mut aborted = 0;
    for ev in std::iter::from_fn(|| e.poll_event()) {
        match ev {
            EngineEvent::FitAggregated { metrics, .. } => spent.push(metrics["epsilon"]),
            EngineEvent::RoundAborted { .. } => aborted += 1,
            EngineEvent::Stopped { round, reason } => stopped = Some((round, reason)),
            _ => {}
        }
    }
    assert_eq!(aborted, 1);
    assert_eq!(spent.len(), 2, "{spent:?}");
    assert!(
        (spent[0] - one).abs() < 1e-9 && (spent[1] - two).abs() < 1e-9,
        "{spent:?}"
    );
    assert!(spent.iter().all(|&s| s <= budget));
    let (round, reason) = stopped.expect("stopped by the budget");
    assert_eq!(round, 4);
    assert!(
        matches!(
            reason.as_ref(),
            fl_core::Refusal::BudgetExhausted(b) if b.total == budget && b.would_be > budget
                && (b.spent - spent[1]).abs() < 1e-9
        ),
        "{reason}"
    );
}

#[test]
fn adaptive_clipping_follows_the_unclipped_fraction_through_the_engine() {
    // Noise-free replay of Andrew et al.'s update: C0 = 0.1, every update norm 1.0 (so always
    // clipped), target quantile 0.5, learning rate 0.2: after 20 rounds C = 0.1 e^2.
    let mut privacy = config(1e-3, 1e12);
    privacy.adaptive = Some(privacy::adaptive::AdaptiveClipConfig {
        initial_clip: 0.1,
        target_unclipped_quantile: 0.5,
        learning_rate: 0.2,
        count_stddev: 0.0,
    });
    let fedavg = StrategyConfig {
        fraction_fit: 1.0,
        min_fit_clients: 2,
        min_fit_results: 2,
        ..Default::default()
    };
    let mut e = Engine::new(
        EngineConfig {
            num_rounds: 21,
            min_available_clients: 2,
            ..Default::default()
        },
        Box::new(DifferentialPrivacy::fedavg(fedavg, privacy, 2).unwrap()),
        ParamVec::zeros(schema()),
    );
    e.handle_connect(T0, ClientId(0));
    e.handle_connect(T0, ClientId(1));
    let mut clips = Vec::new();
    for round in 1..=21 {
        let settings = fit_settings(&mut e);
        let c = settings[0].unwrap().clip_norm;
        clips.push(c);
        for client in 0..2 {
            // A norm-1.0 difference, clipped to C as the client session would.
            let u = (c / 2f64.sqrt()) as f32;
            let msg = ClientMessage::FitDone {
                round,
                result: FitResult {
                    params: ParamVec::new(schema(), vec![u, u]).unwrap(),
                    num_examples: 1,
                    metrics: Metrics::from([(fl_core::dp::UNCLIPPED_METRIC.to_string(), 0.0)]),
                },
            };
            e.handle_message(T0, ClientId(client), msg).unwrap();
        }
    }
    assert!((clips[0] - 0.1).abs() < 1e-12);
    let expected = 0.1 * 2f64.exp();
    assert!(
        (clips[20] - expected).abs() < 1e-9,
        "{} vs {expected}",
        clips[20]
    );
    assert!((clips[20] - 0.7389).abs() < 1e-4);
}
