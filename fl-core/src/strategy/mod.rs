//! How a federation learns: which clients take part, with what settings, and how their
//! results become the next global model.
//!
//! The shape follows Flower's `Strategy` (configure fit, aggregate fit, configure evaluate,
//! aggregate evaluate), with typed settings instead of string dictionaries. A strategy declares
//! the form in which it needs the round's updates ([`UpdateForm`]): one streaming
//! [`UpdateSum`] (the only form secure aggregation can give, and all FedAvg needs) or each
//! member's [`MemberUpdate`] (robust rules, scoring, anomaly detection). Composable parts:
//!
//! - rules: [`FedAvg`] (sum), [`CoordinateMedian`], [`FedNova`] and [`Scaffold`] (per member);
//! - robust rules over per-member updates, each a [`RobustRule`] run by [`RobustAggregator`]:
//!   [`Krum`] and Multi-Krum, [`TrimmedMean`], [`Bulyan`], [`GeometricMedian`] (RFA),
//!   [`CenteredClipping`] (with server momentum), [`NormBounding`], [`MedianRule`], [`FlTrust`]
//!   (a root data set the aggregator trains on), behind
//!   optional [`PreAggregator`]s (bucketing, nearest-neighbour mixing). They never read the
//!   example counts members report;
//! - [`ServerOptimizer`]s applied to the aggregated update: [`FedAvgM`], [`FedAdam`],
//!   [`FedYogi`], [`FedAdagrad`];
//! - differential privacy as a wrapper around any sum-based strategy
//!   ([`crate::dp::DifferentialPrivacy`]);
//! - contribution scores (leave-one-out, GTG-Shapley) of every member on a validation set as a
//!   wrapper around any strategy ([`ContributionScored`], [`contribution`]).
//!
//! [`StrategyConfig`] is the `[strategy]` section of a federation file, and
//! [`StrategyConfig::build`] the one place that turns it (with `[privacy]` and
//! `[secure_aggregation]`) into the engine's strategy, for the aggregator and the examples alike.
//!
//! # Write a strategy
//!
//! A rule is one type implementing [`Strategy`]; selection and evaluation usually delegate to
//! the [`StrategyConfig`] helpers, so only [`Strategy::aggregate_fit`] is new:
//!
//! ```
//! use fl_core::strategy::{
//!     EvaluatePlan, FitPlan, RoundUpdates, Strategy, StrategyConfig, StrategyError, UpdateForm,
//! };
//! use fl_core::{ClientId, ParamVec};
//!
//! /// Keeps the update of the member that trained on the most examples.
//! struct LargestMember(StrategyConfig);
//!
//! impl Strategy for LargestMember {
//!     fn name(&self) -> &str {
//!         "largest-member"
//!     }
//!     fn update_form(&self) -> UpdateForm {
//!         UpdateForm::PerMember
//!     }
//!     fn configure_fit(&mut self, _round: u64, available: &[ClientId], seed: u64) -> FitPlan {
//!         self.0.plan_fit(available, seed)
//!     }
//!     fn aggregate_fit(
//!         &mut self,
//!         _round: u64,
//!         _current: &ParamVec,
//!         updates: RoundUpdates,
//!     ) -> Result<ParamVec, StrategyError> {
//!         let members = updates.into_members()?; // refuses a sum by name
//!         let best = members.into_iter().max_by_key(|u| u.weight);
//!         best.map(|u| u.params).ok_or(StrategyError::NoResults)
//!     }
//!     fn configure_evaluate(&mut self, _round: u64, available: &[ClientId], seed: u64) -> EvaluatePlan {
//!         self.0.plan_evaluate(available, seed)
//!     }
//! }
//! ```

use std::sync::Arc;

use rand::seq::index;
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;

use crate::params::{ParamVec, Schema};
use crate::round::{ClientId, EvaluateConfig, EvaluateResult, FitConfig, Metrics};

mod anomaly;
mod bulyan;
mod centered_clipping;
mod config;
pub mod consistency;
pub mod contribution;
pub mod detection;
mod fedavg;
mod fednova;
pub mod fltrust;
mod geometric_median;
mod krum;
mod median;
mod norm_bounding;
pub mod optimizer;
mod preagg;
mod robust;
mod scaffold;
mod trimmed_mean;
mod update;

pub use anomaly::{MemberScore, score_members, score_metrics};
pub use bulyan::{Bulyan, BulyanConfig, bulyan};
pub use centered_clipping::{CenteredClipping, CenteredClippingConfig, centered_clip};
pub use config::{AggregationRule, BuildError, StrategyConfig};
pub use contribution::{ContributionConfig, ContributionScored};
pub use detection::{DetectionConfig, Detector, QaFindings};
pub use fedavg::FedAvg;
pub use fednova::{FedNova, normalized_average};
pub use fltrust::{FlTrust, fltrust_step};
pub use geometric_median::{GeometricMedian, GeometricMedianConfig, geometric_median};
pub use krum::{Krum, KrumConfig, krum_scores, krum_select};
pub use median::{CoordinateMedian, MedianRule, coordinate_median};
pub use norm_bounding::{NormBounding, NormBoundingConfig};
pub use optimizer::{
    FedAdagrad, FedAdagradConfig, FedAdam, FedAdamConfig, FedAvgM, FedAvgMConfig, FedYogi,
    FedYogiConfig, ServerOptimizer, ServerOptimizerConfig,
};
pub use preagg::{BucketingConfig, NnmConfig, PreAggregator};
pub use robust::{RobustAggregator, RobustRule, member_deltas};
pub use scaffold::{CONTROL_NORM_METRIC, Scaffold, ScaffoldConfig};
pub use trimmed_mean::{TrimmedMean, TrimmedMeanConfig, trimmed_mean};
pub use update::{MemberUpdate, RoundUpdates, UpdateForm, UpdateSum};

/// The clients asked to train in a round and the settings they train with.
#[derive(Debug, Clone, PartialEq)]
pub struct FitPlan {
    /// Selected clients, in ascending order.
    pub clients: Vec<ClientId>,
    /// Local training settings (the engine fills in each client's `shuffle_seed`).
    pub config: FitConfig,
    /// Fewest results with which the round may still aggregate once its deadline passes.
    pub min_results: usize,
    /// Differential privacy of every selected member's update (set by the privacy wrapper):
    /// members then send clipped, possibly noised differences with weight 1.
    pub privacy: Option<crate::dp::UpdatePrivacy>,
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
/// Called by the round engine in this order each round: [`authorize_round`](Self::authorize_round),
/// [`configure_fit`](Self::configure_fit), then [`aggregate_fit`](Self::aggregate_fit) once
/// results are in, then [`configure_evaluate`](Self::configure_evaluate) and
/// [`aggregate_evaluate`](Self::aggregate_evaluate). `round_seed` is derived from the run seed
/// and the round number, so selection is reproducible and independent of earlier rounds.
pub trait Strategy: Send {
    /// A short name for logs and manifests, e.g. `fedavg`.
    fn name(&self) -> &str;

    /// The form in which [`aggregate_fit`](Self::aggregate_fit) needs the round's updates. The
    /// default is [`UpdateForm::Sum`], which every update protocol can deliver.
    fn update_form(&self) -> UpdateForm {
        UpdateForm::Sum
    }

    /// Whether round `round` may run at all. A [`Refusal`] ends the federation cleanly before
    /// the round starts: a differential-privacy strategy refuses the round that would exceed
    /// its budget. The default allows every round.
    fn authorize_round(&mut self, round: u64) -> Result<(), Refusal> {
        let _ = round;
        Ok(())
    }

    /// Restores what the strategy had accounted before a restart, as recorded in the last
    /// checkpoint (a privacy wrapper replays the committed rounds into its ledger and refuses
    /// to go on if they exceed the budget). The default keeps nothing.
    fn resume(&mut self, state: &ResumeState) -> Result<(), Refusal> {
        let _ = state;
        Ok(())
    }

    /// Model-sized state the strategy carries from round to round and a checkpoint must keep,
    /// so that a restarted aggregator continues exactly (SCAFFOLD's server control variate);
    /// it comes back through [`ResumeState::strategy_state`]. `None` (the default): nothing.
    fn strategy_state(&self) -> Option<Arc<ParamVec>> {
        None
    }

    /// Chooses the clients and settings of the fit stage from the `available` ones (ascending).
    fn configure_fit(&mut self, round: u64, available: &[ClientId], round_seed: u64) -> FitPlan;

    /// Turns the round's updates, in the form [`update_form`](Self::update_form) asked for,
    /// into the next global parameters.
    ///
    /// The updates are handed over by value so a strategy can free them while building the
    /// result.
    fn aggregate_fit(
        &mut self,
        round: u64,
        current: &ParamVec,
        updates: RoundUpdates,
    ) -> Result<ParamVec, StrategyError>;

    /// Whether [`aggregate_fit`](Self::aggregate_fit) reads the values of `current`. A strategy
    /// that does not (FedAvg over a sum of models: the new model is the mean of the members'
    /// models) lets an engine release the global model from memory while updates stream in;
    /// `current` then carries the right schema and zero values. The default is `true`.
    fn needs_current_params(&self) -> bool {
        true
    }

    /// Metrics of the last aggregation to report with it (e.g. the epsilon spent so far); the
    /// engine adds them to the round's training metrics. Empty by default.
    fn round_metrics(&self) -> Metrics {
        Metrics::new()
    }

    /// What poisoning detection found in the last aggregation (flags, scores, the flagged
    /// updates), handed over once for the aggregator to turn into evidence. `None` by
    /// default and for strategies without [`detection`].
    fn take_findings(&mut self) -> Option<QaFindings> {
        None
    }

    /// Chooses the clients of the evaluate stage (an empty plan skips it).
    fn configure_evaluate(
        &mut self,
        round: u64,
        available: &[ClientId],
        round_seed: u64,
    ) -> EvaluatePlan;

    /// Combines the clients' evaluation results, or `None` if there are none. The default is
    /// the example-weighted mean ([`weighted_evaluation`]).
    fn aggregate_evaluate(
        &mut self,
        round: u64,
        results: &[(ClientId, EvaluateResult)],
    ) -> Option<EvaluateResult> {
        let _ = round;
        weighted_evaluation(results.iter().map(|(_, r)| r))
    }
}

/// What a strategy accounted before a restart, read from the last checkpoint's manifest.
#[derive(Debug, Clone, Default, PartialEq)]
#[non_exhaustive]
pub struct ResumeState {
    /// Rounds completed (aggregated or aborted) before the restart.
    pub completed_rounds: u64,
    /// Rounds whose privacy cost was committed (the manifest's `privacy.rounds`).
    pub privacy_rounds: u64,
    /// Members' reputations under [`detection`] (the manifest's `qa.<client>.reputation`
    /// metrics, see [`detection::reputation_in`]); empty without detection.
    pub reputation: std::collections::BTreeMap<ClientId, f64>,
    /// The strategy's model-sized state saved with the checkpoint
    /// ([`Strategy::strategy_state`]: SCAFFOLD's server control variate); `None` if it saved
    /// none.
    pub strategy_state: Option<Arc<ParamVec>>,
}

impl ResumeState {
    /// The state after `completed_rounds` rounds, `privacy_rounds` of them accounted.
    pub fn new(completed_rounds: u64, privacy_rounds: u64) -> Self {
        Self {
            completed_rounds,
            privacy_rounds,
            reputation: std::collections::BTreeMap::new(),
            strategy_state: None,
        }
    }

    /// The same state with the strategy's saved state ([`Strategy::strategy_state`]) restored.
    #[must_use]
    pub fn with_strategy_state(mut self, state: Option<Arc<ParamVec>>) -> Self {
        self.strategy_state = state;
        self
    }

    /// The same state with the members' reputations restored.
    #[must_use]
    pub fn with_reputation(
        mut self,
        reputation: std::collections::BTreeMap<ClientId, f64>,
    ) -> Self {
        self.reputation = reputation;
        self
    }
}

/// Why a strategy could not produce new parameters.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum StrategyError {
    /// No result with a positive weight arrived.
    #[error("no results to aggregate")]
    NoResults,
    /// The updates are for another model than the global one.
    #[error("the updates' schema differs from the global model's")]
    SchemaMismatch,
    /// The engine delivered the updates in another form than the strategy asked for.
    #[error("the strategy needs the updates as {needed:?}")]
    WrongForm {
        /// The form the strategy declared.
        needed: UpdateForm,
    },
    /// A member's update holds NaN or an infinity; the round is aborted rather than the
    /// value silently dropped.
    #[error("{client} sent non-finite parameters")]
    NonFinite {
        /// The member.
        client: ClientId,
    },
    /// Fewer updates than a robust rule's guarantee needs (Krum: `2f + 3`, Bulyan: `4f + 3`),
    /// e.g. after members dropped out of the round.
    #[error("{rule} needs at least {needed} updates, the round has {members}")]
    TooFewMembers {
        /// The rule (or pre-aggregator).
        rule: &'static str,
        /// Updates (or, after bucketing, buckets) the rule got.
        members: usize,
        /// The fewest it works with.
        needed: usize,
    },
    /// A member's update lacks a training metric the rule reads (FedNova: `local_steps`).
    #[error(
        "{client} did not report the training metric `{metric}` this rule needs: its trainer \
         must report it with every fit (fl-client's trainers do)"
    )]
    MissingMetric {
        /// The member.
        client: ClientId,
        /// The metric's name.
        metric: &'static str,
    },
    /// A member reported a training metric the rule reads with a value it cannot use.
    #[error("{client} reported the training metric `{metric}` as {reason}")]
    InvalidMetric {
        /// The member.
        client: ClientId,
        /// The metric's name.
        metric: &'static str,
        /// What is wrong with the value.
        reason: String,
    },
    /// A member's update lacks the SCAFFOLD control-variate difference `Δcᵢ` the rule needs.
    #[error(
        "{client} sent no SCAFFOLD control-variate difference with its update: its member \
         software must support [strategy] kind = \"scaffold\" (fl-client's session does)"
    )]
    MissingControl {
        /// The member.
        client: ClientId,
    },
    /// A member's SCAFFOLD control-variate difference is unusable (another schema or length,
    /// non-finite values).
    #[error("{client}'s SCAFFOLD control-variate difference is invalid: {reason}")]
    InvalidControl {
        /// The member.
        client: ClientId,
        /// What is wrong with it.
        reason: String,
    },
    /// A setting is out of range.
    #[error("invalid strategy setting: {0}")]
    Settings(String),
    /// The aggregate is unusable (non-finite values, a failed noise draw, ...).
    #[error("invalid aggregate: {0}")]
    Invalid(String),
}

/// Why a strategy refused to run a round; the federation then stops cleanly.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Refusal {
    /// The round would take the privacy budget past its limit.
    #[error(transparent)]
    BudgetExhausted(privacy::BudgetExceeded),
    /// The privacy mechanism cannot account this round (invalid or unsupported settings).
    #[error("privacy accounting: {0}")]
    Privacy(privacy::Error),
    /// A strategy's own reason (a custom strategy's schedule, quota, ...).
    #[error("{0}")]
    Declined(String),
}

impl Refusal {
    /// A short stable name, e.g. for a metrics label: `budget_exhausted`, `privacy`,
    /// `declined`.
    pub fn label(&self) -> &'static str {
        match self {
            Self::BudgetExhausted(_) => "budget_exhausted",
            Self::Privacy(_) => "privacy",
            Self::Declined(_) => "declined",
        }
    }
}

impl From<privacy::Error> for Refusal {
    fn from(e: privacy::Error) -> Self {
        match e {
            privacy::Error::BudgetExceeded(b) => Self::BudgetExhausted(b),
            other => Self::Privacy(other),
        }
    }
}

/// Refuses updates whose schema is not the global model's.
pub(crate) fn same_schema(
    current: &Arc<Schema>,
    update: &Arc<Schema>,
) -> Result<(), StrategyError> {
    if current.hash() != update.hash() {
        return Err(StrategyError::SchemaMismatch);
    }
    Ok(())
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
    use super::*;

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
