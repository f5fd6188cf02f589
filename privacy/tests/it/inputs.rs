//! Hostile input: every public entry point answers NaN, infinities, negative or out-of-range
//! parameters and garbage files with an error (or, for extreme but valid values, a number
//! that is not NaN), never a panic.

use privacy::accounting::{
    AccountantKind, DpEvent, PldAccountant, RdpAccountant, epsilon_for, noise_for_epsilon,
};
use privacy::adaptive::{AdaptiveClip, AdaptiveClipConfig};
use privacy::clip::clip_l2;
use privacy::mechanism::{
    CentralGaussian, CentralGaussianConfig, DistributedDiscreteGaussian,
    DistributedDiscreteGaussianConfig, LocalGaussian, LocalGaussianConfig,
};
use privacy::noise::{DiscreteGaussian, GaussianNoise};
use privacy::{Error, PrivacyLedger};
use rand::SeedableRng;
use rand_chacha::ChaCha20Rng;

const BAD: [f64; 5] = [f64::NAN, f64::INFINITY, f64::NEG_INFINITY, -1.0, 0.0];
const BAD_PROBABILITY: [f64; 4] = [f64::NAN, -0.1, 1.5, f64::INFINITY];

fn rng() -> ChaCha20Rng {
    ChaCha20Rng::seed_from_u64(9)
}

#[test]
fn clipping_and_noise_refuse_bad_parameters_and_values() {
    for bad in BAD {
        assert!(clip_l2(&mut [1.0], bad).is_err(), "{bad}");
        assert!(GaussianNoise::new(bad).is_err(), "{bad}");
        assert!(
            GaussianNoise::for_sensitivity(bad, 1.0, 10).is_err(),
            "{bad}"
        );
        assert!(
            GaussianNoise::for_sensitivity(1.0, bad, 10).is_err(),
            "{bad}"
        );
        assert!(DiscreteGaussian::from_sigma(bad).is_err(), "{bad}");
    }
    for v in [f32::NAN, f32::INFINITY, f32::NEG_INFINITY] {
        let mut values = [0.5, v];
        assert!(clip_l2(&mut values, 1.0).is_err());
        assert!(
            GaussianNoise::new(1.0)
                .unwrap()
                .add_to(&mut values, &mut rng())
                .is_err()
        );
        assert_eq!(values[0], 0.5);
    }
    assert!(DiscreteGaussian::new(0, 1).is_err() && DiscreteGaussian::new(1, 0).is_err());
    // Empty updates are fine.
    assert_eq!(clip_l2(&mut [], 1.0).unwrap().original_norm, 0.0);
    GaussianNoise::new(1.0)
        .unwrap()
        .add_to(&mut [], &mut rng())
        .unwrap();
}

#[test]
fn mechanisms_refuse_bad_configs() {
    let central = CentralGaussianConfig {
        clip_norm: 1.0,
        noise_multiplier: 1.0,
        sampling_rate: 0.1,
        expected_clients: 10.0,
    };
    let local = LocalGaussianConfig {
        clip_norm: 1.0,
        noise_multiplier: 1.0,
    };
    let ddg = DistributedDiscreteGaussianConfig {
        clip_norm: 1.0,
        noise_multiplier: 1.0,
        min_surviving_clients: 5,
        scale: 256.0,
        expected_clients: 10.0,
    };
    for bad in BAD {
        for cfg in [
            CentralGaussianConfig {
                clip_norm: bad,
                ..central
            },
            CentralGaussianConfig {
                noise_multiplier: bad,
                ..central
            },
            CentralGaussianConfig {
                sampling_rate: bad,
                ..central
            },
            CentralGaussianConfig {
                expected_clients: bad,
                ..central
            },
        ] {
            assert!(CentralGaussian::new(cfg).is_err(), "{cfg:?}");
        }
        for cfg in [
            LocalGaussianConfig {
                clip_norm: bad,
                ..local
            },
            LocalGaussianConfig {
                noise_multiplier: bad,
                ..local
            },
        ] {
            assert!(LocalGaussian::new(cfg).is_err(), "{cfg:?}");
        }
        for cfg in [
            DistributedDiscreteGaussianConfig {
                clip_norm: bad,
                ..ddg
            },
            DistributedDiscreteGaussianConfig {
                noise_multiplier: bad,
                ..ddg
            },
            DistributedDiscreteGaussianConfig { scale: bad, ..ddg },
            DistributedDiscreteGaussianConfig {
                expected_clients: bad,
                ..ddg
            },
        ] {
            assert!(DistributedDiscreteGaussian::new(cfg).is_err(), "{cfg:?}");
        }
        let adaptive = AdaptiveClipConfig {
            initial_clip: 0.1,
            target_unclipped_quantile: 0.5,
            learning_rate: 0.2,
            count_stddev: 1.0,
        };
        for cfg in [
            AdaptiveClipConfig {
                initial_clip: bad,
                ..adaptive
            },
            AdaptiveClipConfig {
                learning_rate: bad,
                ..adaptive
            },
        ] {
            assert!(AdaptiveClip::new(cfg).is_err(), "{cfg:?}");
        }
        let mut clip = AdaptiveClip::new(adaptive).unwrap();
        assert!(clip.update(1, 2, bad, &mut rng()).is_err());
        assert!(
            clip.central_round(&CentralGaussianConfig {
                noise_multiplier: bad,
                ..central
            })
            .is_err()
        );
    }
    let mut out = [0.0_f32; 2];
    let mech = DistributedDiscreteGaussian::new(ddg).unwrap();
    assert!(mech.decode_sum(&[1, 2, 3], &mut out).is_err());
    assert!(mech.encode_update(&[f32::NAN], &mut rng()).is_err());
}

#[test]
fn accountants_refuse_bad_events_and_queries() {
    let kinds = [AccountantKind::Rdp, AccountantKind::Pld];
    for kind in kinds {
        let mut acc = kind.new_accountant();
        for q in BAD_PROBABILITY {
            assert!(
                acc.compose(&DpEvent::poisson_gaussian(q, 1.0)).is_err(),
                "{kind} q={q}"
            );
        }
        for z in [f64::NAN, -1.0, f64::NEG_INFINITY] {
            assert!(
                acc.compose(&DpEvent::poisson_gaussian(0.1, z)).is_err(),
                "{kind} z={z}"
            );
            assert!(
                acc.compose(&DpEvent::Gaussian {
                    noise_multiplier: z
                })
                .is_err(),
                "{kind}"
            );
        }
        for rho in [f64::NAN, -1.0] {
            assert!(
                acc.compose(&DpEvent::ZCdp { rho }).is_err(),
                "{kind} rho={rho}"
            );
        }
        let nested = DpEvent::self_composed(DpEvent::self_composed(DpEvent::NoOp, u64::MAX), 2);
        assert!(acc.compose(&nested).is_err(), "{kind}: count overflow");
        for delta in [f64::NAN, 0.0, 1.0, -1e-5, 2.0, f64::INFINITY] {
            assert!(acc.epsilon(delta).is_err(), "{kind} delta={delta}");
        }
        for eps in [f64::NAN, -1.0, f64::INFINITY] {
            assert!(acc.delta(eps).is_err(), "{kind} eps={eps}");
        }
        // Nothing was added by the refused events.
        assert_eq!(acc.epsilon(1e-5).unwrap(), 0.0, "{kind}");
        for bad in BAD {
            assert!(epsilon_for(0.1, 1.0, 10, bad, kind).is_err(), "{kind}");
            assert!(
                noise_for_epsilon(0.1, 10, 1e-5, bad, kind).is_err(),
                "{kind}"
            );
            assert!(
                noise_for_epsilon(bad, 10, 1e-5, 1.0, kind).is_err(),
                "{kind}"
            );
        }
    }
    assert!(RdpAccountant::with_orders(vec![]).is_err());
    assert!(RdpAccountant::with_orders(vec![2.0, f64::NAN]).is_err());
    assert!(RdpAccountant::with_orders(vec![0.5]).is_err());
    for bad in BAD {
        assert!(PldAccountant::with_discretization(bad).is_err());
    }
    assert!("".parse::<AccountantKind>().is_err());
    assert!(serde_json::from_str::<DpEvent>("{\"Gaussian\":{}}").is_err());
    assert!(serde_json::from_str::<DpEvent>("[1,2]").is_err());
}

#[test]
fn extreme_but_valid_events_give_numbers_not_nan() {
    for kind in [AccountantKind::Rdp, AccountantKind::Pld] {
        for (q, z) in [
            (1e-300, 1.0),
            (1e-12, 0.7),
            (1.0 - 1e-12, 1.0),
            (0.5, 1e5),
            (0.5, 1e-300),
        ] {
            let mut acc = kind.new_accountant();
            match acc.compose(&DpEvent::poisson_gaussian(q, z)) {
                Ok(()) => {
                    let eps = acc.epsilon(1e-5).unwrap();
                    assert!(!eps.is_nan() && eps >= 0.0, "{kind} q={q} z={z}: {eps}");
                    let delta = acc.delta(1.0).unwrap();
                    assert!((0.0..=1.0).contains(&delta), "{kind} q={q} z={z}: {delta}");
                }
                Err(e) => assert!(
                    matches!(e, Error::TooLarge { .. }),
                    "{kind} q={q} z={z}: {e}"
                ),
            }
        }
    }
}

#[test]
fn ledgers_refuse_bad_budgets_and_garbage_files() {
    for bad in BAD {
        assert!(PrivacyLedger::new(bad, 1e-5, AccountantKind::Rdp).is_err());
        assert!(PrivacyLedger::new(1.0, bad, AccountantKind::Rdp).is_err());
    }
    for bad in BAD_PROBABILITY {
        assert!(PrivacyLedger::new(1.0, bad, AccountantKind::Rdp).is_err());
    }
    for garbage in [
        "",
        "null",
        "[]",
        "{\"total_epsilon\":1.0}",
        "\u{0}\u{1}",
        "{\"a\":1}",
    ] {
        assert!(
            serde_json::from_str::<PrivacyLedger>(garbage).is_err(),
            "{garbage:?}"
        );
        assert!(
            serde_json::from_str::<AdaptiveClip>(garbage).is_err(),
            "{garbage:?}"
        );
    }
    let ledger = PrivacyLedger::new(1.0, 1e-5, AccountantKind::Rdp).unwrap();
    assert!(
        ledger
            .authorize(&DpEvent::poisson_gaussian(f64::NAN, 1.0))
            .is_err()
    );
    assert!(matches!(
        ledger.authorize(&DpEvent::NonPrivate),
        Err(Error::BudgetExceeded(_))
    ));
}
