//! FedBuff in the simulator with real (closed-form) trainers: a fast and a slow member, the
//! slow one's results applied with their staleness scaling, at the simulated times they arrive.

use std::time::Duration;

use fl_aggregator::fedbuff::{
    FedBuffConfig, FedBuffEngine, FedBuffEvent, FedBuffSim, staleness_weight,
};
use fl_core::{ClientId, ParamVec};

use crate::support::{MeanEstimator, schema};

#[test]
fn a_slow_member_counts_with_its_staleness_and_nobody_waits() {
    // K = 1: every result steps. A (samples mean 2) takes 1 s per fit, B (mean 10) 5 s.
    let config = FedBuffConfig {
        max_staleness: 10,
        ..FedBuffConfig::new(1, 1_000)
    };
    let engine = FedBuffEngine::new(config, ParamVec::zeros(schema())).unwrap();
    let mut sim = FedBuffSim::new(engine, Duration::ZERO);
    sim.add_member(
        ClientId(0),
        MeanEstimator::new(vec![1.0, 3.0]),
        Duration::from_secs(1),
    );
    sim.add_member(
        ClientId(1),
        MeanEstimator::new(vec![10.0]),
        Duration::from_secs(5),
    );
    let mut steps = Vec::new();
    sim.drive_until(Duration::from_millis(5_500), |now, event| {
        if let FedBuffEvent::Applied {
            version,
            params,
            staleness,
        } = event
        {
            steps.push((now, version, staleness, params.values()[0]));
        }
    });
    // A steps at 1, 2, 3, 4 s; at 5 s B's result (trained on version 0, 4 behind) and A's
    // (trained on version 4, 1 behind) both arrive.
    let times: Vec<u64> = steps.iter().map(|s| s.0.as_secs()).collect();
    assert_eq!(times, vec![1, 2, 3, 4, 5, 5]);
    let staleness: Vec<Vec<u64>> = steps.iter().map(|s| s.2.clone()).collect();
    assert_eq!(
        staleness,
        vec![vec![0], vec![0], vec![0], vec![0], vec![4], vec![1]]
    );
    // First coordinate: A moves it to its mean, 2; B's delta against version 0 (0 to 10) counts
    // with weight 1/sqrt(5); A's next result (its mean again, from the new model) moves it back
    // by its staleness-1 weight.
    assert_eq!(steps[3].3, 2.0);
    let after_b = 2.0 + staleness_weight(4) * 10.0;
    assert!((f64::from(steps[4].3) - after_b).abs() < 1e-5, "{steps:?}");
    // A trained on version 4 (first coordinate 2) and returns 2: Δ = 0.
    assert!((f64::from(steps[5].3) - after_b).abs() < 1e-5);
    assert_eq!(sim.refused(), 0);
    assert_eq!(sim.engine().version(), 6);
}
