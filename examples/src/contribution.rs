//! The contribution benchmark: the digits federation with label-flipping and free-riding
//! members, every round scored on the aggregator's held-out digits
//! ([`ContributionScored`](fl_core::strategy::ContributionScored) around FedAvg, the
//! [`HeldOutValidator`] over a burn evaluator). `cargo run --release -p examples --example
//! contribution` prints the tables recorded in `benches/RESULTS.md`.
//!
//! Label flippers are members `0..flippers` (they train on `y → 9 - y`); free riders are the
//! next `free_riders` members (they send the global model back, through an
//! [`Adversary`] with [`Attack::FreeRide`]).

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use fl_aggregator::EngineEvent;
use fl_aggregator::attack::{Adversary, Attack};
use fl_client::{DeviceSpec, HeldOutValidator, Utility};
use fl_core::strategy::contribution::{ContributionConfig, ranks, scores_in};
use fl_core::{ClientId, ParamVec, StrategyConfig, TrainerError, Validator, derive_seed};

use crate::digits::{self, DigitsConfig, RunError};
use crate::robust::flip_labels;

/// Who attacks in a run.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Attackers {
    /// Members `0..flippers` train on flipped labels.
    pub flippers: usize,
    /// The next `free_riders` members send the global model back.
    pub free_riders: usize,
}

impl Attackers {
    /// The role of member `i`: `"label_flip"`, `"free_ride"` or `"honest"`.
    pub fn role(&self, i: usize) -> &'static str {
        if i < self.flippers {
            "label_flip"
        } else if i < self.flippers + self.free_riders {
            "free_ride"
        } else {
            "honest"
        }
    }

    /// How many members attack.
    pub fn count(&self) -> usize {
        self.flippers + self.free_riders
    }
}

/// One round's scores and costs, as the strategy reported them.
#[derive(Debug, Clone, Default)]
pub struct RoundContribution {
    /// Per member (by client id): leave-one-out.
    pub loo: Vec<f64>,
    /// Per member: the Shapley value of the configured method.
    pub shapley: Vec<f64>,
    /// Per member: the exact Shapley value, where `exact_up_to` asked for it.
    pub exact: Option<Vec<f64>>,
    /// Validator calls in all.
    pub evaluations: f64,
    /// Of which for the exact value.
    pub exact_evaluations: f64,
    /// GTG permutations.
    pub permutations: f64,
    /// Whether the whole round was truncated (no utility change).
    pub round_truncated: bool,
    /// Seconds inside the validator.
    pub validator_seconds: f64,
    /// Seconds inside the round engine (aggregation with scoring).
    pub engine_seconds: f64,
    /// Seconds of local training.
    pub train_seconds: f64,
}

/// A scored run.
#[derive(Debug, Clone)]
pub struct ContributionRun {
    /// Members.
    pub clients: usize,
    /// Every round.
    pub rounds: Vec<RoundContribution>,
    /// Held-out accuracy of the final model.
    pub final_accuracy: f64,
}

impl ContributionRun {
    /// Per member, the sum over rounds of `pick(round)`.
    pub fn total(&self, pick: impl Fn(&RoundContribution) -> Option<&Vec<f64>>) -> Vec<f64> {
        let mut sum = vec![0.0; self.clients];
        for r in &self.rounds {
            if let Some(v) = pick(r) {
                sum.iter_mut().zip(v).for_each(|(s, x)| *s += x);
            }
        }
        sum
    }
}

/// Each member's rank by `values`: 1 for the highest, `n` for the lowest (ties share the mean).
pub fn descending_ranks(values: &[f64]) -> Vec<f64> {
    let n = values.len() as f64;
    ranks(values).into_iter().map(|r| n + 1.0 - r).collect()
}

/// A validator that adds the time it spends to a shared clock.
struct Timed<V> {
    inner: V,
    spent: Arc<Mutex<Duration>>,
}

impl<V: Validator> Validator for Timed<V> {
    fn utility(&mut self, params: &ParamVec) -> Result<f64, TrainerError> {
        let t = Instant::now();
        let u = self.inner.utility(params);
        if let Ok(mut s) = self.spent.lock() {
            *s += t.elapsed();
        }
        u
    }
}

/// Runs `base` under FedAvg with `attackers`, every round scored as `contribution` says on the
/// held-out digits read as `utility`.
pub fn run(
    base: &DigitsConfig,
    attackers: Attackers,
    contribution: ContributionConfig,
    utility: Utility,
) -> Result<ContributionRun, RunError> {
    let prepared = digits::prepare_with(base, |i, data| {
        if i < attackers.flippers {
            flip_labels(data)
        } else {
            Ok(data)
        }
    })?;
    let held_out = prepared
        .evaluator
        .eval_data()
        .cloned()
        .ok_or(RunError::Client(fl_client::Error::Config(
            "the evaluator has no held-out data".into(),
        )))?;
    let validator = fl_client::BurnTrainer::new(
        &base.model,
        DeviceSpec::Cpu,
        held_out.clone(),
        Some(held_out),
        derive_seed(base.seed, "init", 0),
    )
    .map_err(fl_client::Error::from)?;
    let spent = Arc::new(Mutex::new(Duration::ZERO));
    let validator = Timed {
        inner: HeldOutValidator::new(validator, utility),
        spent: spent.clone(),
    };
    let clients = prepared.trainers.len();
    let strategy = StrategyConfig {
        contribution: Some(contribution),
        ..base.strategy()
    }
    .build_with_validator(
        None,
        None,
        clients,
        prepared.initial.values().len(),
        Some(Box::new(validator)),
    )?;
    let free_riders = (attackers.flippers..attackers.count()).map(|c| ClientId(c as u64));
    let strategy: Box<dyn fl_core::Strategy> =
        Box::new(Adversary::new(strategy, free_riders, Attack::FreeRide));
    let mut rounds: Vec<RoundContribution> = Vec::new();
    let mut times = Vec::new();
    let mut validator_before = Duration::ZERO;
    let result = digits::run_with_strategy(
        base,
        prepared,
        strategy,
        |record| times.push((record.aggregate_seconds, record.train_seconds)),
        |event| {
            if let EngineEvent::FitAggregated { metrics, .. } = event {
                let spent = spent.lock().map(|s| *s).unwrap_or_default();
                let get = |k: &str| metrics.get(&format!("contribution.{k}")).copied();
                // Read back as a reward computation would read a manifest.
                let scores = scores_in(metrics);
                let mut loo = vec![f64::NAN; clients];
                let mut shapley = vec![f64::NAN; clients];
                let mut exact = vec![f64::NAN; clients];
                for s in &scores {
                    let c = s.client.0 as usize;
                    if c < clients {
                        loo[c] = s.loo;
                        shapley[c] = s.shapley;
                        exact[c] = s.exact.unwrap_or(f64::NAN);
                    }
                }
                let has_exact = !scores.is_empty() && scores.iter().all(|s| s.exact.is_some());
                rounds.push(RoundContribution {
                    loo,
                    shapley,
                    exact: has_exact.then_some(exact),
                    evaluations: get("evaluations").unwrap_or(f64::NAN),
                    exact_evaluations: get("evaluations_exact").unwrap_or(0.0),
                    permutations: get("permutations").unwrap_or(f64::NAN),
                    round_truncated: get("round_truncated") == Some(1.0),
                    validator_seconds: (spent - validator_before).as_secs_f64(),
                    ..Default::default()
                });
                validator_before = spent;
            }
        },
    )?;
    for (r, (engine, train)) in rounds.iter_mut().zip(times) {
        r.engine_seconds = engine;
        r.train_seconds = train;
    }
    Ok(ContributionRun {
        clients,
        rounds,
        final_accuracy: result.final_accuracy,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ranks_count_from_the_most_valuable_and_roles_follow_the_member_order() {
        assert_eq!(descending_ranks(&[0.5, -1.0, 2.0]), vec![2.0, 3.0, 1.0]);
        let a = Attackers {
            flippers: 2,
            free_riders: 1,
        };
        assert_eq!(
            (0..4).map(|i| a.role(i)).collect::<Vec<_>>(),
            ["label_flip", "label_flip", "free_ride", "honest"]
        );
        assert_eq!(a.count(), 3);
    }
}
