//! Strategies plugged into the engine: a per-member rule, server optimisers, and each chosen
//! from a federation file.

use std::path::Path;
use std::time::Duration;

use fl_aggregator::{AbortReason, Engine, EngineConfig, EngineEvent, SecureSetup};
use fl_core::config::FederationConfig;
use std::sync::{Arc, Mutex};

use fl_core::strategy::{EvaluatePlan, FitPlan, StrategyError};
use fl_core::{
    ClientId, ClientMessage, ContentHash, CoordinateMedian, FitResult, MemberKey, MemberUpdate,
    Metrics, ParamVec, RoundUpdates, SignedUpdate, Strategy, StrategyConfig, UpdateForm,
    UpdateKind, UpdateStatement,
};

use crate::support::schema;

const T0: Duration = Duration::ZERO;

fn config(rounds: u64, clients: usize) -> EngineConfig {
    EngineConfig {
        num_rounds: rounds,
        min_available_clients: clients,
        fit_timeout: Duration::from_secs(10),
        evaluate_timeout: Duration::from_secs(5),
        seed: 7,
        release_params_during_fit: false,
    }
}

fn selection() -> StrategyConfig {
    StrategyConfig {
        min_fit_clients: 1,
        min_fit_results: 1,
        ..Default::default()
    }
}

fn fit_done(round: u64, values: [f32; 2], n: u64) -> ClientMessage {
    ClientMessage::FitDone {
        round,
        result: FitResult {
            params: ParamVec::new(schema(), values.to_vec()).unwrap(),
            num_examples: n,
            metrics: Metrics::new(),
        },
    }
}

fn drain(e: &mut Engine) -> Vec<EngineEvent> {
    while e.poll_transmit().is_some() {}
    std::iter::from_fn(|| e.poll_event()).collect()
}

fn connect(e: &mut Engine, n: u64) {
    for i in 0..n {
        e.handle_connect(T0, ClientId(i));
    }
}

/// A federation file with `strategy` as its `[strategy]` body and `extra` appended.
fn federation(
    strategy: &str,
    extra: &str,
) -> Result<FederationConfig, fl_core::config::ConfigError> {
    let toml = format!(
        "[federation]\nid = \"s\"\nrounds = 2\nmin_clients = 3\n[model]\nkind = \"mlp\"\n\
         [data]\ndataset = \"digits\"\n[strategy]\n{strategy}\n[members]\nallowed = [\
         \"0x00000000000000000000000000000000000000aa\", \
         \"0x00000000000000000000000000000000000000bb\", \
         \"0x00000000000000000000000000000000000000cc\"]\n{extra}"
    );
    FederationConfig::parse(&toml, Path::new("."))
}

#[test]
fn the_median_sees_every_update_whole_or_streamed_and_ignores_an_outlier() {
    let rule = CoordinateMedian::new(selection());
    let mut e = Engine::new(config(1, 4), Box::new(rule), ParamVec::zeros(schema()));
    connect(&mut e, 4);
    drain(&mut e);
    e.handle_message(T0, ClientId(0), fit_done(1, [1.0, 2.0], 10))
        .unwrap();
    // Member 1 streams its update in two chunks.
    e.handle_message(
        T0,
        ClientId(1),
        ClientMessage::FitBegin {
            round: 1,
            num_examples: 5,
            metrics: Metrics::new(),
            signed: None,
        },
    )
    .unwrap();
    for v in [3.0, 4.0] {
        e.handle_message(
            T0,
            ClientId(1),
            ClientMessage::FitChunk {
                round: 1,
                values: vec![v],
            },
        )
        .unwrap();
    }
    e.handle_message(T0, ClientId(1), ClientMessage::FitEnd { round: 1 })
        .unwrap();
    // Member 2 is a poisoner with a huge weight; member 3 breaks off mid-stream.
    e.handle_message(T0, ClientId(2), fit_done(1, [1e6, -1e6], 100_000))
        .unwrap();
    e.handle_message(
        T0,
        ClientId(3),
        ClientMessage::FitBegin {
            round: 1,
            num_examples: 5,
            metrics: Metrics::new(),
            signed: None,
        },
    )
    .unwrap();
    e.handle_message(
        T0,
        ClientId(3),
        ClientMessage::FitChunk {
            round: 1,
            values: vec![-50.0],
        },
    )
    .unwrap();
    e.handle_disconnect(T0, ClientId(3));
    let evs = drain(&mut e);
    let aggregated = evs.iter().find_map(|ev| match ev {
        EngineEvent::FitAggregated {
            params,
            num_results,
            num_partial,
            ..
        } => Some((params.values().to_vec(), *num_results, *num_partial)),
        _ => None,
    });
    // The median of (1, 3, 1e6) and (2, 4, -1e6); the broken-off update counts nowhere.
    assert_eq!(aggregated, Some((vec![3.0, 2.0], 3, 0)), "{evs:?}");
}

#[test]
fn a_per_member_update_with_a_bad_chunk_drops_only_that_member() {
    let mut e = Engine::new(
        config(1, 2),
        Box::new(CoordinateMedian::new(selection())),
        ParamVec::zeros(schema()),
    );
    connect(&mut e, 2);
    drain(&mut e);
    e.handle_message(
        T0,
        ClientId(0),
        ClientMessage::FitBegin {
            round: 1,
            num_examples: 1,
            metrics: Metrics::new(),
            signed: None,
        },
    )
    .unwrap();
    let err = e
        .handle_message(
            T0,
            ClientId(0),
            ClientMessage::FitChunk {
                round: 1,
                values: vec![1.0, 2.0, 3.0],
            },
        )
        .unwrap_err();
    assert!(
        matches!(
            err,
            fl_aggregator::EngineError::InvalidResult {
                client: ClientId(0),
                ..
            }
        ),
        "{err}"
    );
    let err = e
        .handle_message(T0, ClientId(0), ClientMessage::FitEnd { round: 1 })
        .unwrap_err();
    assert!(
        matches!(err, fl_aggregator::EngineError::Unexpected { .. }),
        "{err}"
    );
    e.handle_message(T0, ClientId(1), fit_done(1, [5.0, 6.0], 1))
        .unwrap();
    let params = e.params().values().to_vec();
    assert_eq!(params, vec![5.0, 6.0]);
}

#[test]
fn rules_and_server_optimisers_come_from_the_federation_file() {
    let dim = schema().num_values();
    let median = federation("kind = \"median\"", "").unwrap();
    assert_eq!(median.build_strategy(dim).unwrap().name(), "median");
    let adam = federation(
        "[strategy.server_optimizer]\nkind = \"fedadam\"\nlearning_rate = 0.5\ntau = 0.001",
        "",
    )
    .unwrap();
    assert_eq!(adam.build_strategy(dim).unwrap().name(), "fedavg");

    // FedAvgM from the file, through the engine: momentum 0.5, learning rate 1, so the second
    // round moves by the update plus half the first.
    let momentum = federation(
        "min_fit_clients = 1\n[strategy.server_optimizer]\nkind = \"fedavgm\"\nmomentum = 0.5",
        "",
    )
    .unwrap();
    let strategy = momentum.build_strategy(dim).unwrap();
    let mut e = Engine::new(config(2, 2), strategy, ParamVec::zeros(schema()));
    connect(&mut e, 2);
    drain(&mut e);
    e.handle_message(T0, ClientId(0), fit_done(1, [1.0, 2.0], 1))
        .unwrap();
    e.handle_message(T0, ClientId(1), fit_done(1, [3.0, 2.0], 1))
        .unwrap();
    assert_eq!(e.params().values(), &[2.0, 2.0]);
    drain(&mut e);
    // Round 2 from (2, 2): both members report (3, 3), a mean update of (1, 1).
    e.handle_message(T0, ClientId(0), fit_done(2, [3.0, 3.0], 1))
        .unwrap();
    e.handle_message(T0, ClientId(1), fit_done(2, [3.0, 3.0], 1))
        .unwrap();
    assert_eq!(e.params().values(), &[4.0, 4.0]);
}

#[test]
fn a_median_under_secure_aggregation_is_refused_with_what_to_use_instead() {
    let e = federation(
        "kind = \"median\"",
        "[secure_aggregation]\nprotocol = \"secagg+\"\nclip_norm = 1.0\n",
    )
    .unwrap_err();
    let text = e.to_string();
    assert!(
        matches!(
            e,
            fl_core::config::ConfigError::Strategy(
                fl_core::strategy::BuildError::PerMemberUnderSecureAggregation { rule: "median" }
            )
        ),
        "{text}"
    );
    assert!(text.contains("use kind = \"fedavg\""), "{text}");
    let e = federation(
        "kind = \"median\"",
        "[privacy]\nmechanism = \"central\"\nclip_norm = 1.0\nnoise_multiplier = 1.0\n\
         epsilon = 10.0\ndelta = 1e-5\n",
    )
    .unwrap_err();
    assert!(
        matches!(
            e,
            fl_core::config::ConfigError::Strategy(
                fl_core::strategy::BuildError::PerMemberUnderPrivacy { rule: "median" }
            )
        ),
        "{e}"
    );
}

#[test]
fn an_engine_assembled_by_hand_aborts_a_per_member_round_under_secure_aggregation() {
    let secure: fl_core::secure::SecureAggregationConfig =
        toml::from_str("protocol = \"secagg+\"\nclip_norm = 1.0\n").unwrap();
    let members = (0..3u8)
        .map(|i| fl_core::Address::repeat_byte(i + 1))
        .collect::<Vec<_>>();
    let mut e = Engine::new(
        config(1, 3),
        Box::new(CoordinateMedian::new(selection())),
        ParamVec::zeros(schema()),
    )
    .with_secure_aggregation(SecureSetup {
        config: secure,
        members: std::sync::Arc::new(members),
        session: [0; 32],
        committee: None,
    });
    connect(&mut e, 3);
    let evs = drain(&mut e);
    assert!(
        evs.iter().any(|ev| matches!(
            ev,
            EngineEvent::RoundAborted {
                round: 1,
                reason: AbortReason::PerMemberUnderSecureAggregation
            }
        )),
        "{evs:?}"
    );
}

#[test]
fn a_robust_rule_whose_precondition_fails_is_refused_when_the_file_is_loaded() {
    // Three members: Krum with f = 1 needs 2f + 3 = 5, Bulyan with f = 1 needs 4f + 3 = 7.
    let e = federation("kind = \"krum\"\n[strategy.krum]\nbyzantine = 1", "").unwrap_err();
    assert!(
        matches!(
            e,
            fl_core::config::ConfigError::Strategy(fl_core::strategy::BuildError::TooFewMembers {
                rule: "krum",
                members: 3,
                needed: 5
            })
        ),
        "{e}"
    );
    let e = federation("kind = \"bulyan\"\n[strategy.bulyan]\nbyzantine = 1", "").unwrap_err();
    assert!(
        matches!(
            e,
            fl_core::config::ConfigError::Strategy(fl_core::strategy::BuildError::TooFewMembers {
                rule: "bulyan",
                ..
            })
        ),
        "{e}"
    );
    let e = federation("kind = \"krum\"", "").unwrap_err();
    assert!(
        matches!(
            e,
            fl_core::config::ConfigError::Strategy(
                fl_core::strategy::BuildError::MissingSettings { rule: "krum" }
            )
        ),
        "{e}"
    );
    let ok = federation("kind = \"krum\"\n[strategy.krum]\nbyzantine = 0", "").unwrap();
    assert_eq!(
        ok.build_strategy(schema().num_values()).unwrap().name(),
        "krum"
    );
}

#[test]
fn a_trimmed_mean_from_the_file_ignores_an_outlier_and_the_example_counts() {
    let fed = federation(
        "min_fit_clients = 3\nkind = \"trimmed_mean\"\n[strategy.trimmed_mean]\nbeta = 0.34",
        "",
    )
    .unwrap();
    let strategy = fed.build_strategy(schema().num_values()).unwrap();
    assert_eq!(strategy.name(), "trimmed_mean");
    let mut e = Engine::new(config(1, 3), strategy, ParamVec::zeros(schema()));
    connect(&mut e, 3);
    drain(&mut e);
    e.handle_message(T0, ClientId(0), fit_done(1, [1.0, 2.0], 1))
        .unwrap();
    e.handle_message(T0, ClientId(1), fit_done(1, [3.0, 4.0], 1))
        .unwrap();
    // Claims a million examples: a weighted rule would follow it.
    e.handle_message(T0, ClientId(2), fit_done(1, [1e6, -1e6], 1_000_000))
        .unwrap();
    // ⌊0.34·3⌋ = 1 value dropped at each end: the middle one is kept.
    assert_eq!(e.params().values(), &[3.0, 2.0]);
    // Every member's anomaly scores come with the round's metrics (and so its manifest):
    // member 0 at (1, 2) is 2 from the centre (3, 2); the outlier (1e6, -1e6) is far, at a
    // cosine of (3 - 2)/(√2·√13).
    let evs = drain(&mut e);
    let metrics = evs
        .iter()
        .find_map(|ev| match ev {
            EngineEvent::FitAggregated { metrics, .. } => Some(metrics.clone()),
            _ => None,
        })
        .expect("the round aggregated");
    assert_eq!(metrics["qa.0.distance"], 2.0);
    assert!(metrics["qa.2.distance"] > 1e6);
    let cosine = 1.0 / (2f64.sqrt() * 13f64.sqrt());
    assert!((metrics["qa.2.cosine"] - cosine).abs() < 1e-9);
    assert_eq!(metrics["robust_inputs"], 3.0);
}

#[test]
fn a_robust_round_left_with_too_few_updates_aborts_with_the_rule_named() {
    // Krum with f = 0 needs 3 updates; one member never answers and the deadline passes.
    let krum = StrategyConfig {
        kind: fl_core::AggregationRule::Krum,
        krum: Some(fl_core::strategy::KrumConfig {
            byzantine: 0,
            multi: 1,
        }),
        ..selection()
    };
    let strategy = krum.build(None, None, 3, schema().num_values()).unwrap();
    let mut e = Engine::new(config(1, 3), strategy, ParamVec::zeros(schema()));
    connect(&mut e, 3);
    drain(&mut e);
    e.handle_message(T0, ClientId(0), fit_done(1, [1.0, 2.0], 1))
        .unwrap();
    e.handle_message(T0, ClientId(1), fit_done(1, [3.0, 4.0], 1))
        .unwrap();
    e.handle_timeout(Duration::from_secs(10));
    let evs = drain(&mut e);
    assert!(
        evs.iter().any(|ev| matches!(
            ev,
            EngineEvent::RoundAborted {
                round: 1,
                reason: AbortReason::Aggregation(fl_core::StrategyError::TooFewMembers {
                    rule: "krum",
                    members: 2,
                    needed: 3
                })
            }
        )),
        "{evs:?}"
    );
    assert_eq!(e.params().values(), &[0.0, 0.0], "the model is unchanged");
}

/// The median, keeping a copy of every member update it is handed.
struct Recording {
    inner: CoordinateMedian,
    seen: Arc<Mutex<Vec<MemberUpdate>>>,
}

impl Strategy for Recording {
    fn name(&self) -> &str {
        "recording median"
    }
    fn update_form(&self) -> UpdateForm {
        UpdateForm::PerMember
    }
    fn configure_fit(&mut self, round: u64, available: &[ClientId], seed: u64) -> FitPlan {
        self.inner.configure_fit(round, available, seed)
    }
    fn aggregate_fit(
        &mut self,
        round: u64,
        current: &ParamVec,
        updates: RoundUpdates,
    ) -> Result<ParamVec, StrategyError> {
        if let RoundUpdates::PerMember(members) = &updates {
            self.seen.lock().unwrap().extend(members.iter().cloned());
        }
        self.inner.aggregate_fit(round, current, updates)
    }
    fn configure_evaluate(
        &mut self,
        round: u64,
        available: &[ClientId],
        seed: u64,
    ) -> EvaluatePlan {
        self.inner.configure_evaluate(round, available, seed)
    }
}

#[test]
fn a_per_member_rule_gets_each_members_signed_statement_as_evidence() {
    let seen = Arc::new(Mutex::new(Vec::new()));
    let rule = Recording {
        inner: CoordinateMedian::new(selection()),
        seen: seen.clone(),
    };
    let mut e = Engine::new(config(1, 2), Box::new(rule), ParamVec::zeros(schema()));
    connect(&mut e, 2);
    drain(&mut e);
    let key = MemberKey::generate();
    let statement = UpdateStatement {
        federation_id: "s".into(),
        session_id: [7; 32],
        round: 1,
        kind: UpdateKind::Fit,
        update_hash: ContentHash::of(b"the update's chunk hashes"),
        num_examples: 4,
    };
    let signed = SignedUpdate {
        signature: key.sign_update(&statement),
        statement,
    };
    e.handle_message(
        T0,
        ClientId(0),
        ClientMessage::FitBegin {
            round: 1,
            num_examples: 4,
            metrics: Metrics::new(),
            signed: Some(Box::new(signed.clone())),
        },
    )
    .unwrap();
    e.handle_message(
        T0,
        ClientId(0),
        ClientMessage::FitChunk {
            round: 1,
            values: vec![1.0, 2.0],
        },
    )
    .unwrap();
    e.handle_message(T0, ClientId(0), ClientMessage::FitEnd { round: 1 })
        .unwrap();
    // A member in process (no transport signature) has none.
    e.handle_message(T0, ClientId(1), fit_done(1, [3.0, 4.0], 1))
        .unwrap();
    let seen = seen.lock().unwrap();
    assert_eq!(seen.len(), 2);
    let streamed = seen.iter().find(|u| u.client == ClientId(0)).unwrap();
    assert_eq!(streamed.signed.as_ref(), Some(&signed));
    assert_eq!(
        streamed.signed.as_ref().unwrap().signer().unwrap(),
        key.address()
    );
    assert_eq!(streamed.digest, streamed.params.content_hash());
    assert!(
        seen.iter()
            .find(|u| u.client == ClientId(1))
            .unwrap()
            .signed
            .is_none()
    );
}

#[test]
fn contribution_scores_from_the_file_need_a_validation_set_and_reach_the_round_metrics() {
    // The file loads (members read it too), but the stock aggregator holds no validation set.
    let fed = federation(
        "min_fit_clients = 3\nkind = \"median\"\n[strategy.contribution]\nshapley = \"exact\"",
        "",
    )
    .unwrap();
    let Err(e) = fed.build_strategy(schema().num_values()) else {
        panic!("built contribution scores without a validation set");
    };
    assert_eq!(
        e,
        fl_core::strategy::BuildError::ContributionWithoutValidator
    );
    assert!(e.to_string().contains("build_with_validator"), "{e}");

    // A program holding one (here: utility = the first parameter) passes it in; the scores
    // arrive with the round's metrics, which the aggregator writes into the manifest.
    let validator =
        |p: &ParamVec| -> Result<f64, fl_core::TrainerError> { Ok(f64::from(p.values()[0])) };
    let strategy = fed
        .strategy
        .build_with_validator(
            None,
            None,
            3,
            schema().num_values(),
            Some(Box::new(validator)),
        )
        .unwrap();
    assert_eq!(strategy.update_form(), UpdateForm::PerMember);
    let mut e = Engine::new(config(1, 3), strategy, ParamVec::zeros(schema()));
    connect(&mut e, 3);
    drain(&mut e);
    // Member 2 is a free rider: it sends the global model back.
    for (c, v) in [(0, [3.0, 0.0]), (1, [1.0, 0.0]), (2, [0.0, 0.0])] {
        e.handle_message(T0, ClientId(c), fit_done(1, v, 1))
            .unwrap();
    }
    let metrics = drain(&mut e)
        .into_iter()
        .find_map(|ev| match ev {
            EngineEvent::FitAggregated { metrics, .. } => Some(metrics),
            _ => None,
        })
        .expect("the round aggregated");
    assert_eq!(e.params().values(), &[1.0, 0.0], "the median");
    // With the round's shares v(S) = Σ_S sᵢ / 3 over the members' first values s = (3, 1, 0):
    // an additive game, so φᵢ = sᵢ / 3, and the free rider scores exactly 0.
    for (c, want) in [(0, 1.0), (1, 1.0 / 3.0), (2, 0.0)] {
        let got = metrics[&format!("contribution.{c}.shapley")];
        assert!((got - want).abs() < 1e-6, "member {c}: {got} vs {want}");
    }
    assert_eq!(metrics["contribution.evaluations"], 8.0);
    assert!(
        metrics.contains_key("qa.2.norm"),
        "the rule's own metrics stay"
    );
}
