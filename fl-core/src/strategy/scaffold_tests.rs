use std::sync::Arc;

use super::*;
use crate::aggregate::WeightedSum;
use crate::params::{Schema, TensorSpec};
use crate::round::LOCAL_STEPS_METRIC;
use crate::scaffold::member_update;
use crate::strategy::{MemberUpdate, UpdateSum};

fn schema() -> Arc<Schema> {
    Arc::new(Schema::new(vec![TensorSpec::new("w", [2])]).unwrap())
}

fn pv(v: [f64; 2]) -> ParamVec {
    ParamVec::new(schema(), v.iter().map(|x| *x as f32).collect()).unwrap()
}

fn values(p: &ParamVec) -> [f64; 2] {
    [f64::from(p.values()[0]), f64::from(p.values()[1])]
}

fn dist(a: [f64; 2], b: [f64; 2]) -> f64 {
    ((a[0] - b[0]).powi(2) + (a[1] - b[1]).powi(2)).sqrt()
}

fn member(c: u64, y: [f64; 2], dc: Option<[f64; 2]>) -> MemberUpdate {
    let metrics = Metrics::from([(LOCAL_STEPS_METRIC.to_string(), 1.0)]);
    MemberUpdate::new(ClientId(c), pv(y), 1, metrics).with_control_delta(dc.map(pv))
}

fn scaffold(members: usize, server_lr: f64) -> Scaffold {
    Scaffold::new(
        StrategyConfig::default(),
        ScaffoldConfig { server_lr },
        members,
    )
    .unwrap()
}

#[test]
fn one_server_step_by_hand() {
    // N = 4, |S| = 2, η_g = 0.5, x = (1, 1), c = 0:
    // Δy = (1, 0), (3, -2): x ← (1, 1) + 0.5·(2, -1) = (2, 0.5);
    // Δc = (0.4, 0), (0, -0.8): c ← 0 + (2/4)·(0.2, -0.4) = (0.1, -0.2).
    let mut s = scaffold(4, 0.5);
    let plan = s.configure_fit(1, &[ClientId(0), ClientId(1)], 7);
    assert_eq!(plan.config.scaffold, Some(ScaffoldControls::new(None)));
    let updates = vec![
        member(0, [2.0, 1.0], Some([0.4, 0.0])),
        member(1, [4.0, -1.0], Some([0.0, -0.8])),
    ];
    let next = s
        .aggregate_fit(1, &pv([1.0, 1.0]), RoundUpdates::PerMember(updates))
        .unwrap();
    assert!(dist(values(&next), [2.0, 0.5]) < 1e-6);
    let c = values(s.control().unwrap());
    assert!(dist(c, [0.1, -0.2]) < 1e-6, "{c:?}");
    assert_eq!(s.strategy_state().as_deref(), s.control().map(|c| &**c));
    let norm = s.round_metrics()[CONTROL_NORM_METRIC];
    assert!((norm - 0.05f64.sqrt()).abs() < 1e-6, "{norm}");
    // The next round sends c with the instruction; a second step adds to it:
    // Δc = (0.2, 0.2) from one member: c ← (0.1, -0.2) + (1/4)·(0.2, 0.2).
    let plan = s.configure_fit(2, &[ClientId(0), ClientId(1)], 7);
    let sent = plan.config.scaffold.unwrap().server.unwrap();
    assert!(dist(values(&sent), [0.1, -0.2]) < 1e-6);
    s.aggregate_fit(
        2,
        &pv([2.0, 0.5]),
        RoundUpdates::PerMember(vec![member(0, [2.0, 0.5], Some([0.2, 0.2]))]),
    )
    .unwrap();
    assert!(dist(values(s.control().unwrap()), [0.15, -0.15]) < 1e-6);
    // Unknown N: the members available at selection (here 5) stand for it.
    let mut s = scaffold(0, 1.0);
    let avail: Vec<ClientId> = (0..5).map(ClientId).collect();
    s.configure_fit(1, &avail, 1);
    s.aggregate_fit(
        1,
        &pv([0.0, 0.0]),
        RoundUpdates::PerMember(vec![member(0, [1.0, 1.0], Some([1.0, 0.5]))]),
    )
    .unwrap();
    assert!(dist(values(s.control().unwrap()), [0.2, 0.1]) < 1e-6);
}

#[test]
fn bad_control_differences_are_refused_and_leave_c_unchanged() {
    let mut s = scaffold(2, 1.0);
    let current = pv([0.0, 0.0]);
    s.aggregate_fit(
        1,
        &current,
        RoundUpdates::PerMember(vec![member(0, [1.0, 1.0], Some([1.0, 1.0]))]),
    )
    .unwrap();
    let before = s.control().cloned();
    let round =
        |s: &mut Scaffold, updates| s.aggregate_fit(2, &current, RoundUpdates::PerMember(updates));
    assert_eq!(
        round(
            &mut s,
            vec![
                member(0, [1.0, 1.0], Some([0.0, 0.0])),
                member(3, [1.0, 1.0], None)
            ]
        ),
        Err(StrategyError::MissingControl {
            client: ClientId(3)
        })
    );
    let e = round(&mut s, vec![member(3, [1.0, 1.0], None)])
        .unwrap_err()
        .to_string();
    assert!(e.contains("client-3") && e.contains("scaffold"), "{e}");
    let other = Arc::new(Schema::new(vec![TensorSpec::new("w", [3])]).unwrap());
    let long = MemberUpdate::new(ClientId(5), pv([1.0, 1.0]), 1, Metrics::new())
        .with_control_delta(Some(ParamVec::zeros(other)));
    assert!(matches!(
        round(&mut s, vec![long]),
        Err(StrategyError::InvalidControl {
            client: ClientId(5),
            ..
        })
    ));
    for bad in [f64::NAN, f64::INFINITY] {
        assert!(matches!(
            round(&mut s, vec![member(6, [1.0, 1.0], Some([bad, 0.0]))]),
            Err(StrategyError::InvalidControl {
                client: ClientId(6),
                ..
            })
        ));
    }
    assert_eq!(
        round(&mut s, vec![member(7, [f64::NAN, 1.0], Some([0.0, 0.0]))]),
        Err(StrategyError::NonFinite {
            client: ClientId(7)
        })
    );
    // Finite values whose new c overflows f32 are refused, not stored.
    let mut big = scaffold(1, 1.0);
    let huge = Arc::new(pv([3e38, 0.0]));
    big.resume(&ResumeState::new(1, 0).with_strategy_state(Some(huge.clone())))
        .unwrap();
    assert!(matches!(
        big.aggregate_fit(
            2,
            &current,
            RoundUpdates::PerMember(vec![member(0, [0.0, 0.0], Some([3e38, 0.0]))])
        ),
        Err(StrategyError::Invalid(_))
    ));
    assert_eq!(big.control(), Some(&huge));
    // A server optimiser whose step overflows leaves c where it was (the round aborts).
    let optimizer = crate::strategy::FedAvgM::new(crate::strategy::FedAvgMConfig {
        learning_rate: 100.0,
        momentum: 0.0,
    })
    .unwrap();
    let mut boosted = scaffold(1, 1.0).with_optimizer(Some(Box::new(optimizer)));
    assert!(matches!(
        boosted.aggregate_fit(
            1,
            &current,
            RoundUpdates::PerMember(vec![member(0, [3e37, 0.0], Some([1.0, 0.0]))])
        ),
        Err(StrategyError::Invalid(_))
    ));
    assert_eq!(boosted.control(), None, "c did not move");
    assert_eq!(round(&mut s, Vec::new()), Err(StrategyError::NoResults));
    let sum = UpdateSum::of_models(WeightedSum::new(schema()));
    assert_eq!(
        round_sum(&mut s, &current, sum),
        Err(StrategyError::WrongForm {
            needed: UpdateForm::PerMember
        })
    );
    assert_eq!(s.control().cloned(), before, "no failed round moved c");
    // A global model of another schema than c is refused.
    let three = ParamVec::zeros(Arc::new(
        Schema::new(vec![TensorSpec::new("w", [3])]).unwrap(),
    ));
    let upd = MemberUpdate::new(ClientId(0), three.clone(), 1, Metrics::new())
        .with_control_delta(Some(three.clone()));
    assert_eq!(
        s.aggregate_fit(3, &three, RoundUpdates::PerMember(vec![upd])),
        Err(StrategyError::SchemaMismatch)
    );
    assert!(matches!(
        Scaffold::new(
            StrategyConfig::default(),
            ScaffoldConfig { server_lr: 0.0 },
            2
        ),
        Err(StrategyError::Settings(_))
    ));
}

fn round_sum(
    s: &mut Scaffold,
    current: &ParamVec,
    sum: UpdateSum,
) -> Result<ParamVec, StrategyError> {
    s.aggregate_fit(2, current, RoundUpdates::Sum(sum))
}

#[test]
fn resume_restores_c_and_refuses_non_finite_state() {
    let mut s = scaffold(2, 1.0);
    let c = Arc::new(pv([0.5, -0.5]));
    s.resume(&ResumeState::new(3, 0).with_strategy_state(Some(c.clone())))
        .unwrap();
    assert_eq!(s.control(), Some(&c));
    let plan = s.configure_fit(4, &[ClientId(0), ClientId(1)], 1);
    assert_eq!(plan.config.scaffold.unwrap().server, Some(c));
    let mut fresh = scaffold(2, 1.0);
    fresh.resume(&ResumeState::new(3, 0)).unwrap();
    assert_eq!(fresh.control(), None, "no saved state: c = 0");
    let bad = Arc::new(pv([f64::NAN, 0.0]));
    assert!(matches!(
        fresh.resume(&ResumeState::new(3, 0).with_strategy_state(Some(bad))),
        Err(Refusal::Declined(_))
    ));
}

/// Member `i` minimises `Fᵢ(x) = ½·aᵢ·‖x - bᵢ‖²`. Its trainer: `K` steps of gradient descent at
/// learning rate `η` on `Fᵢ`, each gradient corrected by the round's `c - cᵢ`.
struct Quadratic {
    a: f64,
    b: [f64; 2],
}

impl Quadratic {
    fn train(&self, x: [f64; 2], correction: Option<&[f32]>, k: u32, eta: f64) -> [f64; 2] {
        let corr = |j: usize| correction.map_or(0.0, |c| f64::from(c[j]));
        let mut y = x;
        for _ in 0..k {
            for (j, yj) in y.iter_mut().enumerate() {
                *yj -= eta * (self.a * (*yj - self.b[j]) + corr(j));
            }
        }
        y
    }
}

/// Runs `rounds` SCAFFOLD rounds through the strategy: each selected member takes `c` from the
/// plan, adds its own `cᵢ`, trains, updates `cᵢ` by option II and sends `Δcᵢ`. Returns the
/// final model, `c` and every `cᵢ`.
fn run_scaffold(
    members: &[Quadratic],
    config: StrategyConfig,
    rounds: u64,
    k: u32,
    eta: f64,
) -> ([f64; 2], [f64; 2], Vec<[f64; 2]>) {
    let mut server = Scaffold::new(config, ScaffoldConfig::default(), members.len()).unwrap();
    let ids: Vec<ClientId> = (0..members.len() as u64).map(ClientId).collect();
    let mut own: Vec<Option<Arc<ParamVec>>> = vec![None; members.len()];
    let mut x = pv([0.0, 0.0]);
    for round in 1..=rounds {
        let plan = server.configure_fit(round, &ids, crate::derive_seed(9, "round", round));
        let mut updates = Vec::new();
        for id in &plan.clients {
            let i = id.0 as usize;
            let mut controls = plan.config.scaffold.clone().unwrap();
            controls.member = own[i].clone();
            let corr = controls.correction(schema().hash()).unwrap();
            let y = pv(members[i].train(values(&x), corr.as_deref(), k, eta));
            let u = member_update(&x, &y, &controls, Some(f64::from(k)), eta).unwrap();
            own[i] = Some(Arc::new(u.control));
            updates.push(
                MemberUpdate::new(*id, y, 1, Metrics::new()).with_control_delta(Some(u.delta)),
            );
        }
        x = server
            .aggregate_fit(round, &x, RoundUpdates::PerMember(updates))
            .unwrap();
    }
    let c = server.control().map_or([0.0; 2], |c| values(c));
    let own = own
        .iter()
        .map(|c| c.as_deref().map_or([0.0; 2], values))
        .collect();
    (values(&x), c, own)
}

#[test]
fn on_quadratics_scaffold_finds_the_federation_s_optimum_where_fedavg_drifts() {
    // Three members with different curvatures and minima (heterogeneous data).
    let members = [
        Quadratic {
            a: 1.0,
            b: [0.0, 0.0],
        },
        Quadratic {
            a: 2.0,
            b: [1.0, -1.0],
        },
        Quadratic {
            a: 5.0,
            b: [4.0, 2.0],
        },
    ];
    // (1/N)·Σ Fᵢ is minimised at Σ aᵢbᵢ / Σ aᵢ = (22, 8)/8.
    let optimum = [2.75, 1.0];
    let (k, eta) = (10u32, 0.05f64);
    // FedAvg (equal weights): one round moves member i to bᵢ + (1 - ηaᵢ)^K·(x - bᵢ), so its
    // fixed point is Σ wᵢbᵢ / Σ wᵢ with wᵢ = 1 - (1 - ηaᵢ)^K: by hand, then run.
    let w: Vec<f64> = members
        .iter()
        .map(|m| 1.0 - (1.0 - eta * m.a).powi(k as i32))
        .collect();
    let fixed = |j: usize| {
        members.iter().zip(&w).map(|(m, w)| w * m.b[j]).sum::<f64>() / w.iter().sum::<f64>()
    };
    let fedavg_fixed = [fixed(0), fixed(1)];
    let mut avg = [0.0f64; 2];
    for _ in 0..500 {
        let locals: Vec<[f64; 2]> = members.iter().map(|m| m.train(avg, None, k, eta)).collect();
        avg = [0, 1].map(|j| locals.iter().map(|l| l[j]).sum::<f64>() / 3.0);
    }
    assert!(dist(avg, fedavg_fixed) < 1e-9, "{avg:?} {fedavg_fixed:?}");
    assert!(
        dist(fedavg_fixed, optimum) > 0.5,
        "FedAvg drifts to {fedavg_fixed:?}, away from {optimum:?}"
    );

    // SCAFFOLD, every member every round: at the optimum, with c = 0 and cᵢ = ∇Fᵢ(x*).
    let (x, c, own) = run_scaffold(&members, StrategyConfig::default(), 200, k, eta);
    assert!(dist(x, optimum) < 1e-4, "SCAFFOLD at {x:?}");
    assert!(dist(c, [0.0, 0.0]) < 1e-4, "c = {c:?}");
    for (m, ci) in members.iter().zip(&own) {
        let grad = [m.a * (optimum[0] - m.b[0]), m.a * (optimum[1] - m.b[1])];
        assert!(dist(*ci, grad) < 1e-3, "cᵢ = {ci:?}, ∇Fᵢ(x*) = {grad:?}");
    }
    // Two of the three members per round (seeded selection): still the optimum.
    let partial = StrategyConfig {
        fraction_fit: 0.5,
        min_fit_clients: 2,
        ..StrategyConfig::default()
    };
    let (x, _, _) = run_scaffold(&members, partial, 600, k, eta);
    assert!(dist(x, optimum) < 1e-3, "SCAFFOLD (partial) at {x:?}");
}

#[test]
fn the_federation_file_builds_scaffold_and_refuses_what_does_not_compose() {
    use crate::dp::PrivacyConfig;
    use crate::secure::SecureAggregationConfig;
    use crate::strategy::{AggregationRule, BuildError};
    let c: StrategyConfig =
        toml::from_str("kind = \"scaffold\"\n[scaffold]\nserver_lr = 0.5\n").unwrap();
    assert_eq!(c.kind, AggregationRule::Scaffold);
    assert_eq!(c.scaffold, Some(ScaffoldConfig { server_lr: 0.5 }));
    let built = c.build(None, None, 4, 2).unwrap();
    assert_eq!(built.name(), "scaffold");
    assert_eq!(built.update_form(), UpdateForm::PerMember);
    // The section is optional (server_lr = 1) and its keys are checked.
    let plain: StrategyConfig = toml::from_str("kind = \"scaffold\"\n").unwrap();
    assert!(plain.build(None, None, 4, 2).is_ok());
    let typo =
        toml::from_str::<StrategyConfig>("kind = \"scaffold\"\n[scaffold]\nserver_rate = 1.0\n")
            .unwrap_err()
            .to_string();
    assert!(typo.contains("server_rate"), "{typo}");
    for lr in ["0.0", "-1.0", "nan", "inf"] {
        let c: StrategyConfig = toml::from_str(&format!(
            "kind = \"scaffold\"\n[scaffold]\nserver_lr = {lr}\n"
        ))
        .unwrap();
        assert!(
            matches!(
                c.check(None, None),
                Err(BuildError::Strategy(StrategyError::Settings(_)))
            ),
            "{lr}"
        );
    }
    let stray: StrategyConfig = toml::from_str("kind = \"fedavg\"\n[scaffold]\n").unwrap();
    assert_eq!(
        stray.check(None, None),
        Err(BuildError::SettingsForAnotherRule {
            section: "scaffold",
            rule: "fedavg"
        })
    );
    // Secure aggregation (SecAgg+ and homomorphic) and DP hide or noise what it reads.
    for protocol in ["secagg+", "he"] {
        let secure: SecureAggregationConfig =
            toml::from_str(&format!("protocol = \"{protocol}\"\nclip_norm = 1.0\n")).unwrap();
        assert_eq!(
            c.check(None, Some(&secure)),
            Err(BuildError::PerMemberUnderSecureAggregation { rule: "scaffold" })
        );
        assert!(matches!(
            c.build(None, Some(&secure), 4, 2),
            Err(BuildError::PerMemberUnderSecureAggregation { rule: "scaffold" })
        ));
    }
    let privacy: PrivacyConfig = toml::from_str(
        "mechanism = \"central\"\nclip_norm = 1.0\nnoise_multiplier = 1.0\nepsilon = 10.0\n\
         delta = 1e-5\n",
    )
    .unwrap();
    assert!(matches!(
        c.build(Some(&privacy), None, 4, 2),
        Err(BuildError::PerMemberUnderPrivacy { rule: "scaffold" })
    ));
}
