//! The engine driven by hand, one message at a time.

use std::sync::Arc;
use std::time::Duration;

use fl_aggregator::{DropReason, Engine, EngineConfig, EngineError, EngineEvent, ParamsRefused};
use fl_core::{
    ClientId, ClientMessage, EvaluateResult, FedAvg, FitResult, Metrics, ParamVec, ServerMessage,
    Stage, StrategyConfig,
};

use crate::support::schema;

const T0: Duration = Duration::ZERO;

fn engine(rounds: u64, min_available: usize, fedavg: StrategyConfig) -> Engine {
    let config = EngineConfig {
        num_rounds: rounds,
        min_available_clients: min_available,
        fit_timeout: Duration::from_secs(10),
        evaluate_timeout: Duration::from_secs(5),
        seed: 42,
        release_params_during_fit: false,
    };
    Engine::new(
        config,
        Box::new(FedAvg::new(fedavg)),
        ParamVec::zeros(schema()),
    )
}

fn fedavg(min_results: usize) -> StrategyConfig {
    StrategyConfig {
        fraction_fit: 1.0,
        min_fit_clients: 1,
        min_fit_results: min_results,
        ..Default::default()
    }
}

fn outbox(e: &mut Engine) -> Vec<(ClientId, ServerMessage)> {
    std::iter::from_fn(|| e.poll_transmit()).collect()
}

fn events(e: &mut Engine) -> Vec<EngineEvent> {
    std::iter::from_fn(|| e.poll_event()).collect()
}

fn fit_done(round: u64, value: f32, n: u64) -> ClientMessage {
    ClientMessage::FitDone {
        round,
        result: FitResult {
            params: ParamVec::new(schema(), vec![value, value]).unwrap(),
            num_examples: n,
            metrics: Metrics::new(),
        },
    }
}

#[test]
fn waits_for_enough_clients_then_sends_verified_instructions() {
    let mut e = engine(2, 3, fedavg(1));
    e.handle_connect(T0, ClientId(0));
    e.handle_connect(T0, ClientId(1));
    assert!(
        outbox(&mut e).is_empty(),
        "two of three clients: no round yet"
    );
    assert_eq!(e.round(), 0);
    e.handle_connect(T0, ClientId(2));
    let sent = outbox(&mut e);
    assert_eq!(sent.len(), 3);
    let mut seeds = Vec::new();
    for (_, msg) in &sent {
        let ServerMessage::Fit {
            header,
            params,
            config,
            ..
        } = msg
        else {
            panic!("expected fit instructions, got {msg:?}")
        };
        assert_eq!(header.round, 1);
        assert_eq!(header.stage, Stage::Fit);
        assert_eq!(header.params_hash, params.content_hash());
        seeds.push(config.shuffle_seed);
    }
    seeds.sort_unstable();
    seeds.dedup();
    assert_eq!(seeds.len(), 3, "each client shuffles differently");
    assert_eq!(e.poll_timeout(), Some(Duration::from_secs(10)));
}

#[test]
fn aggregates_by_examples_and_moves_to_the_next_round() {
    let mut e = engine(2, 2, fedavg(2));
    e.handle_connect(T0, ClientId(0));
    e.handle_connect(T0, ClientId(1));
    let _ = outbox(&mut e);
    e.handle_message(T0, ClientId(0), fit_done(1, 1.0, 1))
        .unwrap();
    e.handle_message(T0, ClientId(1), fit_done(1, 5.0, 3))
        .unwrap();
    assert_eq!(e.params().values(), &[4.0, 4.0]);
    let ev = events(&mut e);
    assert!(ev.iter().any(|e| matches!(
        e,
        EngineEvent::FitAggregated {
            round: 1,
            num_results: 2,
            num_dropped: 0,
            ..
        }
    )));
    assert!(
        ev.iter()
            .any(|e| matches!(e, EngineEvent::RoundStarted { round: 2, .. }))
    );
    assert_eq!(e.round(), 2);
}

#[test]
fn deadline_drops_stragglers_and_refuses_their_late_answers() {
    let mut e = engine(1, 3, fedavg(2));
    for i in 0..3 {
        e.handle_connect(T0, ClientId(i));
    }
    let _ = outbox(&mut e);
    e.handle_message(Duration::from_secs(1), ClientId(0), fit_done(1, 2.0, 1))
        .unwrap();
    e.handle_message(Duration::from_secs(2), ClientId(1), fit_done(1, 4.0, 1))
        .unwrap();
    // Not yet: a timeout before the deadline changes nothing.
    e.handle_timeout(Duration::from_secs(9));
    assert!(!e.is_finished());
    e.handle_timeout(Duration::from_secs(10));
    assert!(e.is_finished());
    assert_eq!(e.params().values(), &[3.0, 3.0]);
    let ev = events(&mut e);
    assert!(ev.iter().any(|e| matches!(
        e,
        EngineEvent::ClientDropped {
            client: ClientId(2),
            reason: DropReason::Deadline,
            ..
        }
    )));
    assert_eq!(
        e.handle_message(Duration::from_secs(11), ClientId(2), fit_done(1, 9.0, 1)),
        Err(EngineError::Unexpected {
            client: ClientId(2),
            round: 1,
            stage: Stage::Fit
        })
    );
    assert_eq!(
        e.params().values(),
        &[3.0, 3.0],
        "late answer changed nothing"
    );
    // Everyone is told the federation is over.
    let finished = outbox(&mut e);
    assert_eq!(finished.len(), 3);
    assert!(finished.iter().all(
        |(_, m)| matches!(m, ServerMessage::Finished { params: Some(p), .. } if p == e.params())
    ));
}

#[test]
fn too_few_results_abort_the_round_and_keep_the_model() {
    let mut e = engine(2, 2, fedavg(2));
    e.handle_connect(T0, ClientId(0));
    e.handle_connect(T0, ClientId(1));
    let before = e.params().content_hash();
    e.handle_message(T0, ClientId(0), fit_done(1, 2.0, 1))
        .unwrap();
    e.handle_message(
        T0,
        ClientId(1),
        ClientMessage::Failed {
            round: 1,
            stage: Stage::Fit,
            reason: "out of memory".into(),
        },
    )
    .unwrap();
    let ev = events(&mut e);
    assert!(
        ev.iter()
            .any(|e| matches!(e, EngineEvent::RoundAborted { round: 1, .. }))
    );
    assert!(ev.iter().any(|e| matches!(
        e,
        EngineEvent::ClientDropped {
            reason: DropReason::ClientFailed(_),
            ..
        }
    )));
    assert_eq!(e.params().content_hash(), before);
    assert_eq!(e.round(), 2, "the next round runs");
}

#[test]
fn duplicates_strangers_wrong_rounds_and_bad_results_are_refused() {
    let mut e = engine(3, 2, fedavg(1));
    e.handle_connect(T0, ClientId(0));
    e.handle_connect(T0, ClientId(1));
    assert_eq!(
        e.handle_message(T0, ClientId(9), fit_done(1, 1.0, 1)),
        Err(EngineError::UnknownClient(ClientId(9)))
    );
    assert!(matches!(
        e.handle_message(T0, ClientId(0), fit_done(2, 1.0, 1)),
        Err(EngineError::Unexpected { round: 2, .. })
    ));
    assert!(matches!(
        e.handle_message(
            T0,
            ClientId(0),
            ClientMessage::EvaluateDone {
                round: 1,
                result: EvaluateResult::default()
            }
        ),
        Err(EngineError::Unexpected {
            stage: Stage::Evaluate,
            ..
        })
    ));
    // NaN parameters: refused, and the client is dropped from the round.
    assert!(matches!(
        e.handle_message(T0, ClientId(0), fit_done(1, f32::NAN, 1)),
        Err(EngineError::InvalidResult { .. })
    ));
    assert!(matches!(
        e.handle_message(T0, ClientId(0), fit_done(1, 1.0, 1)),
        Err(EngineError::Unexpected { .. })
    ));
    // A result for another model.
    let other =
        Arc::new(fl_core::Schema::new(vec![fl_core::TensorSpec::new("other", [2])]).unwrap());
    let wrong = ClientMessage::FitDone {
        round: 1,
        result: FitResult {
            params: ParamVec::zeros(other),
            num_examples: 1,
            metrics: Metrics::new(),
        },
    };
    assert!(matches!(
        e.handle_message(T0, ClientId(1), wrong),
        Err(EngineError::InvalidResult { .. })
    ));
    let ev = events(&mut e);
    assert!(
        ev.iter()
            .any(|e| matches!(e, EngineEvent::RoundAborted { round: 1, .. }))
    );
    assert_eq!(e.params().values(), &[0.0, 0.0]);
}

#[test]
fn disconnect_drops_a_client_without_failing_the_round() {
    let mut e = engine(1, 2, fedavg(1));
    e.handle_connect(T0, ClientId(0));
    e.handle_connect(T0, ClientId(1));
    e.handle_message(T0, ClientId(0), fit_done(1, 6.0, 2))
        .unwrap();
    e.handle_disconnect(T0, ClientId(1));
    assert!(e.is_finished());
    assert_eq!(e.params().values(), &[6.0, 6.0]);
    assert!(events(&mut e).iter().any(|e| matches!(
        e,
        EngineEvent::ClientDropped {
            client: ClientId(1),
            reason: DropReason::Disconnected,
            ..
        }
    )));
}

#[test]
fn federated_evaluation_is_aggregated_by_examples() {
    let cfg = StrategyConfig {
        fraction_evaluate: 1.0,
        min_evaluate_clients: 1,
        ..fedavg(1)
    };
    let mut e = engine(1, 2, cfg);
    e.handle_connect(T0, ClientId(0));
    e.handle_connect(T0, ClientId(1));
    let _ = outbox(&mut e);
    e.handle_message(T0, ClientId(0), fit_done(1, 1.0, 1))
        .unwrap();
    e.handle_message(T0, ClientId(1), fit_done(1, 1.0, 1))
        .unwrap();
    let sent = outbox(&mut e);
    assert_eq!(sent.len(), 2);
    assert!(sent
        .iter()
        .all(|(_, m)| matches!(m, ServerMessage::Evaluate { header, .. } if header.stage == Stage::Evaluate)));
    let eval = |loss, n| ClientMessage::EvaluateDone {
        round: 1,
        result: EvaluateResult {
            loss,
            num_examples: n,
            metrics: Metrics::new(),
        },
    };
    e.handle_message(T0, ClientId(0), eval(1.0, 1)).unwrap();
    e.handle_message(T0, ClientId(1), eval(3.0, 3)).unwrap();
    let ev = events(&mut e);
    let loss = ev.iter().find_map(|e| match e {
        EngineEvent::Evaluated { result, .. } => Some(result.loss),
        _ => None,
    });
    assert_eq!(loss, Some(2.5));
    assert!(e.is_finished());
}

#[test]
fn resume_continues_after_the_completed_rounds() {
    let config = EngineConfig {
        num_rounds: 5,
        min_available_clients: 1,
        ..Default::default()
    };
    let params = ParamVec::new(schema(), vec![7.0, 7.0]).unwrap();
    let mut e = Engine::resume(
        config.clone(),
        Box::new(FedAvg::new(fedavg(1))),
        params.clone(),
        3,
    );
    e.handle_connect(T0, ClientId(0));
    assert_eq!(e.round(), 4);
    let done = Engine::resume(config, Box::new(FedAvg::new(fedavg(1))), params, 5);
    assert!(done.is_finished());
}

/// FedAvg that refuses to start round `limit` and later ones, as a budgeted strategy does.
struct Budgeted {
    inner: FedAvg,
    limit: u64,
}

impl fl_core::Strategy for Budgeted {
    fn name(&self) -> &str {
        "budgeted"
    }
    fn authorize_round(&mut self, round: u64) -> Result<(), fl_core::Refusal> {
        if round >= self.limit {
            Err(fl_core::Refusal::Declined(format!(
                "round {round} would exceed the budget"
            )))
        } else {
            Ok(())
        }
    }
    fn configure_fit(&mut self, round: u64, available: &[ClientId], seed: u64) -> fl_core::FitPlan {
        self.inner.configure_fit(round, available, seed)
    }
    fn aggregate_fit(
        &mut self,
        round: u64,
        current: &ParamVec,
        results: fl_core::RoundUpdates,
    ) -> Result<ParamVec, fl_core::StrategyError> {
        self.inner.aggregate_fit(round, current, results)
    }
    fn configure_evaluate(
        &mut self,
        round: u64,
        available: &[ClientId],
        seed: u64,
    ) -> fl_core::EvaluatePlan {
        self.inner.configure_evaluate(round, available, seed)
    }
    fn aggregate_evaluate(
        &mut self,
        round: u64,
        results: &[(ClientId, EvaluateResult)],
    ) -> Option<EvaluateResult> {
        self.inner.aggregate_evaluate(round, results)
    }
}

#[test]
fn a_refused_round_stops_the_federation_cleanly() {
    let config = EngineConfig {
        num_rounds: 10,
        min_available_clients: 1,
        ..Default::default()
    };
    let strategy = Budgeted {
        inner: FedAvg::new(fedavg(1)),
        limit: 3,
    };
    let mut e = Engine::new(config, Box::new(strategy), ParamVec::zeros(schema()));
    e.handle_connect(T0, ClientId(0));
    for round in 1..=2 {
        outbox(&mut e);
        e.handle_message(T0, ClientId(0), fit_done(round, round as f32, 1))
            .unwrap();
    }
    assert!(e.is_finished());
    assert_eq!(e.round(), 2);
    assert_eq!(e.params().values(), &[2.0, 2.0]);
    let evs = events(&mut e);
    let stopped = evs
        .iter()
        .position(|ev| matches!(ev, EngineEvent::Stopped { round: 3, reason } if matches!(reason.as_ref(), fl_core::Refusal::Declined(r) if r == "round 3 would exceed the budget")))
        .expect("a Stopped event for round 3");
    assert!(matches!(evs[stopped + 1], EngineEvent::Finished { .. }));
    assert!(matches!(
        outbox(&mut e).as_slice(),
        [(
            ClientId(0),
            ServerMessage::Finished {
                round: 2,
                params: Some(_)
            }
        )]
    ));
}

fn releasing_engine() -> Engine {
    let config = EngineConfig {
        num_rounds: 3,
        min_available_clients: 1,
        release_params_during_fit: true,
        ..Default::default()
    };
    let initial = ParamVec::new(schema(), vec![1.0, 2.0]).unwrap();
    Engine::new(config, Box::new(FedAvg::new(fedavg(1))), initial)
}

fn fail(round: u64) -> ClientMessage {
    ClientMessage::Failed {
        round,
        stage: Stage::Fit,
        reason: "out of memory".into(),
    }
}

#[test]
fn a_released_model_is_asked_back_after_an_aborted_round() {
    let mut e = releasing_engine();
    let hash = e.params().content_hash();
    e.handle_connect(T0, ClientId(0));
    // The instructions are sent and dropped: nothing holds the model any more.
    drop(outbox(&mut e));
    assert!(
        e.params().values().iter().all(|v| *v == 0.0),
        "placeholder while released"
    );
    e.handle_message(T0, ClientId(0), fail(1)).unwrap();
    assert_eq!(e.params_needed(), Some(hash));
    assert!(
        events(&mut e)
            .iter()
            .any(|ev| matches!(ev, EngineEvent::ParamsNeeded { hash: h } if *h == hash))
    );
    // Messages wait; wrong parameters are refused; the right ones resume the federation.
    assert!(e.poll_transmit().is_none());
    let wrong = ParamVec::new(schema(), vec![1.0, 2.5]).unwrap();
    let wrong_hash = wrong.content_hash();
    assert_eq!(
        e.handle_params(T0, wrong),
        Err(ParamsRefused::WrongHash {
            expected: hash,
            got: wrong_hash
        })
    );
    assert_eq!(e.params_needed(), Some(hash), "a refusal changes nothing");
    let right = ParamVec::new(schema(), vec![1.0, 2.0]).unwrap();
    e.handle_params(T0, right).unwrap();
    assert_eq!(e.params_needed(), None);
    let sent = outbox(&mut e);
    let [(ClientId(0), ServerMessage::Fit { header, params, .. })] = sent.as_slice() else {
        panic!("expected round 2's instruction, got {sent:?}")
    };
    assert_eq!(header.round, 2);
    assert_eq!(params.values(), &[1.0, 2.0]);
    assert_eq!(
        e.handle_params(T0, ParamVec::zeros(schema())),
        Err(ParamsRefused::NotWaiting)
    );
}

#[test]
fn a_model_still_held_elsewhere_needs_no_reload() {
    let mut e = releasing_engine();
    e.handle_connect(T0, ClientId(0));
    // The transport still holds the instruction (and so the model) when the round aborts.
    let held = outbox(&mut e);
    e.handle_message(T0, ClientId(0), fail(1)).unwrap();
    assert_eq!(e.params_needed(), None);
    drop(held);
    // Round 2 went out at once, with the model recovered from the transport's copy.
    let sent = outbox(&mut e);
    let [(ClientId(0), ServerMessage::Fit { header, params, .. })] = sent.as_slice() else {
        panic!("expected round 2's instruction, got {sent:?}")
    };
    assert_eq!((header.round, params.values()), (2, &[1.0f32, 2.0][..]));
    drop(sent);
    // A completed round replaces the model; nothing is asked back.
    e.handle_message(T0, ClientId(0), fit_done(2, 4.0, 1))
        .unwrap();
    assert_eq!(e.params_needed(), None);
    let sent = outbox(&mut e);
    let [(ClientId(0), ServerMessage::Fit { header, params, .. })] = sent.as_slice() else {
        panic!("expected round 3's instruction, got {sent:?}")
    };
    assert_eq!((header.round, params.values()), (3, &[4.0f32, 4.0][..]));
}
