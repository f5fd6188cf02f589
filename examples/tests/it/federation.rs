//! The digits federation end to end with real burn training.

use examples::digits::{self, DigitsConfig};
use fl_client::Trainer;
use fl_core::{FitConfig, derive_seed};

fn small(seed: u64) -> DigitsConfig {
    DigitsConfig {
        clients: 4,
        rounds: 2,
        seed,
        workers: 2,
        ..DigitsConfig::default()
    }
}

#[test]
fn one_seed_gives_one_final_model() {
    let run = |seed| {
        let config = small(seed);
        let prepared = digits::prepare(&config).unwrap();
        digits::run_federated(&config, prepared, |_| {}).unwrap()
    };
    let a = run(11);
    let b = run(11);
    assert_eq!(a.final_hash, b.final_hash);
    assert_eq!(a.records.len(), 2);
    assert_eq!(
        a.records.iter().map(|r| r.accuracy).collect::<Vec<_>>(),
        b.records.iter().map(|r| r.accuracy).collect::<Vec<_>>()
    );
    assert_ne!(
        run(12).final_hash,
        a.final_hash,
        "another seed, another model"
    );
}

#[test]
fn fedavg_with_one_client_equals_local_training() {
    let config = DigitsConfig {
        clients: 1,
        rounds: 1,
        seed: 5,
        workers: 1,
        ..DigitsConfig::default()
    };
    let federated = {
        let prepared = digits::prepare(&config).unwrap();
        digits::run_federated(&config, prepared, |_| {}).unwrap()
    };

    // The same member trains alone, from the same start, on the same data order.
    let mut prepared = digits::prepare(&config).unwrap();
    let mut alone = prepared.trainers.remove(0);
    alone.set_parameters(&prepared.initial).unwrap();
    let shuffle_seed = derive_seed(derive_seed(config.seed, "shuffle", 1), "client", 0);
    alone
        .fit(&FitConfig {
            shuffle_seed,
            ..config.fit.clone()
        })
        .unwrap();
    assert_eq!(alone.get_parameters().content_hash(), federated.final_hash);
}

#[test]
fn federated_training_learns() {
    let config = DigitsConfig {
        clients: 5,
        rounds: 5,
        workers: 2,
        ..DigitsConfig::default()
    };
    let prepared = digits::prepare(&config).unwrap();
    let mut seen = Vec::new();
    let result = digits::run_federated(&config, prepared, |r| seen.push(r.round)).unwrap();
    assert_eq!(seen, vec![1, 2, 3, 4, 5]);
    assert!(
        result.final_accuracy > 0.8,
        "5 rounds should get well past chance, got {}",
        result.final_accuracy
    );
    assert!(
        result
            .records
            .iter()
            .all(|r| r.participants == 5 && r.dropped == 0)
    );
}
