//! How a federation learns: which clients take part, with what settings, and how their
//! results become the next global model.
//!
//! The shape follows Flower's `Strategy` (configure fit, aggregate fit, configure evaluate,
//! aggregate evaluate), with typed settings instead of string dictionaries and aggregation
//! over a streaming [`WeightedSum`] instead of a list of every client's model.

use rand::seq::index;
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use serde::{Deserialize, Serialize};

use crate::aggregate::WeightedSum;
use crate::params::ParamVec;
use crate::round::{ClientId, EvaluateConfig, EvaluateResult, FitConfig, Metrics};

/// The clients asked to train in a round and the settings they train with.
#[derive(Debug, Clone, PartialEq)]
pub struct FitPlan {
    /// Selected clients, in ascending order.
    pub clients: Vec<ClientId>,
    /// Local training settings (the engine fills in each client's `shuffle_seed`).
    pub config: FitConfig,
    /// Fewest results with which the round may still aggregate once its deadline passes.
    pub min_results: usize,
}

/// The clients asked to evaluate the new global model in a round.
#[derive(Debug, Clone, PartialEq)]
pub struct EvaluatePlan {
    /// Selected clients; empty skips federated evaluation.
    pub clients: Vec<ClientId>,
    /// Evaluation settings.
    pub config: EvaluateConfig,
}

/// A federated learning algorithm.
///
/// Called by the round engine in this order each round: [`configure_fit`](Self::configure_fit),
/// then [`aggregate_fit`](Self::aggregate_fit) once results are in, then
/// [`configure_evaluate`](Self::configure_evaluate) and
/// [`aggregate_evaluate`](Self::aggregate_evaluate). `round_seed` is derived from the run seed
/// and the round number, so selection is reproducible and independent of earlier rounds.
pub trait Strategy: Send {
    /// A short name for logs and manifests, e.g. `fedavg`.
    fn name(&self) -> &str;

    /// Whether round `round` may run at all. `Err(reason)` ends the federation cleanly before
    /// the round starts: a differential-privacy strategy refuses the round that would exceed
    /// its budget. The default allows every round.
    fn authorize_round(&mut self, round: u64) -> Result<(), String> {
        let _ = round;
        Ok(())
    }

    /// Chooses the clients and settings of the fit stage from the `available` ones (ascending).
    fn configure_fit(&mut self, round: u64, available: &[ClientId], round_seed: u64) -> FitPlan;

    /// Turns the round's weighted sum of client parameters into the next global parameters.
    ///
    /// The sum is handed over by value so a strategy can free it while building the result
    /// ([`WeightedSum::into_mean`]).
    fn aggregate_fit(
        &mut self,
        round: u64,
        current: &ParamVec,
        results: WeightedSum,
    ) -> Result<ParamVec, StrategyError>;

    /// Whether [`aggregate_fit`](Self::aggregate_fit) reads the values of `current`. A strategy
    /// that does not (FedAvg: the new model is the mean of the members' models) lets an engine
    /// release the global model from memory while updates stream in; `current` then carries
    /// the right schema and zero values. The default is `true`.
    fn needs_current_params(&self) -> bool {
        true
    }

    /// Metrics of the last aggregation to report with it (e.g. the epsilon spent so far); the
    /// engine adds them to the round's training metrics. Empty by default.
    fn round_metrics(&self) -> Metrics {
        Metrics::new()
    }

    /// Chooses the clients of the evaluate stage (an empty plan skips it).
    fn configure_evaluate(
        &mut self,
        round: u64,
        available: &[ClientId],
        round_seed: u64,
    ) -> EvaluatePlan;

    /// Combines the clients' evaluation results, or `None` if there are none.
    fn aggregate_evaluate(
        &mut self,
        round: u64,
        results: &[(ClientId, EvaluateResult)],
    ) -> Option<EvaluateResult>;
}

/// Why a strategy could not produce new parameters.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum StrategyError {
    /// No result with a positive weight arrived.
    #[error("no results to aggregate")]
    NoResults,
    /// The aggregate is unusable (wrong schema, non-finite values).
    #[error("invalid aggregate: {0}")]
    Invalid(String),
}

/// Refuses an aggregate whose schema is not the global model's.
pub(crate) fn same_schema(current: &ParamVec, results: &WeightedSum) -> Result<(), StrategyError> {
    if results.schema().hash() != current.schema().hash() {
        return Err(StrategyError::Invalid(
            "aggregate schema differs from the global model's".into(),
        ));
    }
    Ok(())
}

/// Settings of [`FedAvg`].
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct FedAvgConfig {
    /// Fraction of available clients asked to train each round.
    pub fraction_fit: f64,
    /// At least this many clients are asked to train (if available).
    pub min_fit_clients: usize,
    /// Fewest results with which a round still aggregates after its deadline.
    pub min_fit_results: usize,
    /// Fraction of available clients asked to evaluate each round (0 disables).
    pub fraction_evaluate: f64,
    /// At least this many clients evaluate when `fraction_evaluate > 0`.
    pub min_evaluate_clients: usize,
    /// Local training settings sent with every fit instruction.
    pub fit: FitConfig,
    /// Settings sent with every evaluate instruction.
    pub evaluate: EvaluateConfig,
}

impl Default for FedAvgConfig {
    fn default() -> Self {
        Self {
            fraction_fit: 1.0,
            min_fit_clients: 2,
            min_fit_results: 1,
            fraction_evaluate: 0.0,
            min_evaluate_clients: 0,
            fit: FitConfig::default(),
            evaluate: EvaluateConfig::default(),
        }
    }
}

/// Federated averaging (McMahan et al. 2017): the new model is the example-weighted mean of
/// the clients' models, accumulated in exact fixed point.
#[derive(Debug, Clone)]
pub struct FedAvg {
    config: FedAvgConfig,
}

impl FedAvg {
    /// FedAvg with the given settings.
    pub fn new(config: FedAvgConfig) -> Self {
        Self { config }
    }

    /// The settings.
    pub fn config(&self) -> &FedAvgConfig {
        &self.config
    }
}

impl Strategy for FedAvg {
    fn name(&self) -> &str {
        "fedavg"
    }

    fn configure_fit(&mut self, _round: u64, available: &[ClientId], round_seed: u64) -> FitPlan {
        let clients = select_clients(
            available,
            self.config.fraction_fit,
            self.config.min_fit_clients,
            round_seed,
        );
        FitPlan {
            min_results: self.config.min_fit_results.clamp(1, clients.len().max(1)),
            clients,
            config: self.config.fit.clone(),
        }
    }

    fn needs_current_params(&self) -> bool {
        false
    }

    fn aggregate_fit(
        &mut self,
        _round: u64,
        current: &ParamVec,
        results: WeightedSum,
    ) -> Result<ParamVec, StrategyError> {
        same_schema(current, &results)?;
        results.into_mean().ok_or(StrategyError::NoResults)
    }

    fn configure_evaluate(
        &mut self,
        _round: u64,
        available: &[ClientId],
        round_seed: u64,
    ) -> EvaluatePlan {
        let clients = if self.config.fraction_evaluate > 0.0 {
            select_clients(
                available,
                self.config.fraction_evaluate,
                self.config.min_evaluate_clients,
                round_seed ^ 0x5eed_e7a1,
            )
        } else {
            Vec::new()
        };
        EvaluatePlan {
            clients,
            config: self.config.evaluate.clone(),
        }
    }

    fn aggregate_evaluate(
        &mut self,
        _round: u64,
        results: &[(ClientId, EvaluateResult)],
    ) -> Option<EvaluateResult> {
        weighted_evaluation(results.iter().map(|(_, r)| r))
    }
}

/// Example-weighted mean of evaluation results (loss and every metric), `None` if no result
/// has examples.
pub fn weighted_evaluation<'a>(
    results: impl IntoIterator<Item = &'a EvaluateResult>,
) -> Option<EvaluateResult> {
    let mut total = 0u64;
    let mut loss = 0.0;
    let mut metrics = Metrics::new();
    for r in results {
        if r.num_examples == 0 || !r.loss.is_finite() {
            continue;
        }
        let w = r.num_examples as f64;
        total += r.num_examples;
        loss += w * r.loss;
        for (k, v) in &r.metrics {
            *metrics.entry(k.clone()).or_insert(0.0) += w * v;
        }
    }
    if total == 0 {
        return None;
    }
    let t = total as f64;
    metrics.values_mut().for_each(|v| *v /= t);
    Some(EvaluateResult {
        loss: loss / t,
        num_examples: total,
        metrics,
    })
}

/// Picks `max(ceil(fraction · n), min)` clients (capped at `n`) uniformly without replacement,
/// reproducibly from `seed`. Returns them in ascending order.
pub fn select_clients(
    available: &[ClientId],
    fraction: f64,
    min: usize,
    seed: u64,
) -> Vec<ClientId> {
    let n = available.len();
    let fraction = if fraction.is_finite() {
        fraction.clamp(0.0, 1.0)
    } else {
        1.0
    };
    let wanted = ((fraction * n as f64).ceil() as usize).max(min).min(n);
    let mut sorted = available.to_vec();
    sorted.sort_unstable();
    if wanted == n {
        return sorted;
    }
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    let mut picked: Vec<ClientId> = index::sample(&mut rng, n, wanted)
        .into_iter()
        .map(|i| sorted[i])
        .collect();
    picked.sort_unstable();
    picked
}

/// Derives the seed of one round (or any other sub-stream) from a run seed, so that each round's
/// randomness does not depend on how many draws earlier rounds made.
pub fn derive_seed(run_seed: u64, stream: &str, index: u64) -> u64 {
    let mut h = crate::hash::ContentHasher::new();
    h.update(&run_seed.to_le_bytes());
    h.update(stream.as_bytes());
    h.update(&index.to_le_bytes());
    let d = h.finish();
    let mut rng = ChaCha8Rng::from_seed(*d.as_bytes());
    rng.next_u64()
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use super::*;
    use crate::params::{Schema, TensorSpec};

    fn ids(n: u64) -> Vec<ClientId> {
        (0..n).map(ClientId).collect()
    }

    #[test]
    fn selection_respects_fraction_minimum_and_seed() {
        let all = ids(20);
        assert_eq!(select_clients(&all, 0.25, 2, 7).len(), 5);
        assert_eq!(select_clients(&all, 0.01, 3, 7).len(), 3);
        assert_eq!(select_clients(&all, 1.0, 0, 7), all);
        assert_eq!(select_clients(&ids(2), 0.5, 10, 7).len(), 2);
        assert_eq!(
            select_clients(&all, 0.3, 1, 7),
            select_clients(&all, 0.3, 1, 7)
        );
        assert_ne!(
            select_clients(&all, 0.3, 1, 7),
            select_clients(&all, 0.3, 1, 8)
        );
        let s = select_clients(&all, 0.5, 1, 9);
        assert!(s.windows(2).all(|w| w[0] < w[1]), "ascending, no repeats");
        assert!(select_clients(&all, f64::NAN, 0, 1).len() == 20);
    }

    #[test]
    fn fedavg_weights_by_examples() {
        let schema = Arc::new(Schema::new(vec![TensorSpec::new("w", [2])]).unwrap());
        let current = ParamVec::zeros(schema.clone());
        let mut sum = WeightedSum::new(schema.clone());
        let a = ParamVec::new(schema.clone(), vec![0.0, 10.0]).unwrap();
        let b = ParamVec::new(schema.clone(), vec![4.0, 2.0]).unwrap();
        sum.add(&a, 1, &Metrics::new()).unwrap();
        sum.add(&b, 3, &Metrics::new()).unwrap();
        let mut fedavg = FedAvg::new(FedAvgConfig::default());
        let next = fedavg.aggregate_fit(1, &current, sum).unwrap();
        assert_eq!(next.values(), &[3.0, 4.0]);
        let empty = WeightedSum::new(schema);
        assert_eq!(
            fedavg.aggregate_fit(1, &current, empty),
            Err(StrategyError::NoResults)
        );
    }

    #[test]
    fn evaluation_is_example_weighted() {
        let r = |loss, n, acc| EvaluateResult {
            loss,
            num_examples: n,
            metrics: Metrics::from([("accuracy".to_string(), acc)]),
        };
        let agg = weighted_evaluation(&[r(1.0, 10, 0.5), r(3.0, 30, 0.9), r(9.0, 0, 0.0)]).unwrap();
        assert_eq!(agg.loss, 2.5);
        assert_eq!(agg.num_examples, 40);
        assert!((agg.accuracy().unwrap() - 0.8).abs() < 1e-12);
        assert!(weighted_evaluation(&[]).is_none());
    }

    #[test]
    fn derived_seeds_differ_by_stream_and_index() {
        assert_eq!(derive_seed(1, "round", 3), derive_seed(1, "round", 3));
        assert_ne!(derive_seed(1, "round", 3), derive_seed(1, "round", 4));
        assert_ne!(derive_seed(1, "round", 3), derive_seed(1, "shuffle", 3));
        assert_ne!(derive_seed(1, "round", 3), derive_seed(2, "round", 3));
    }
}
