//! What a strategy receives at the end of a fit stage: the round's updates, either as one
//! streaming sum (all that secure aggregation can reveal) or member by member (what robust
//! rules, contribution scores and anomaly detection need).

use std::sync::Arc;

use crate::aggregate::{FRACTION_BITS, WeightedSum};
use crate::hash::ContentHash;
use crate::params::{ParamVec, Schema};
use crate::round::{ClientId, Metrics};

use super::StrategyError;

/// The form in which a strategy needs the round's updates.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum UpdateForm {
    /// One weighted sum: works with every update protocol, secure aggregation included.
    Sum,
    /// Every member's update on its own: plain (non-secure) rounds only, since secure
    /// aggregation never reveals one member's update.
    PerMember,
}

/// The round's updates as the engine hands them to [`Strategy::aggregate_fit`](super::Strategy::aggregate_fit).
#[derive(Debug)]
pub enum RoundUpdates {
    /// The weighted sum of the updates ([`UpdateForm::Sum`]).
    Sum(UpdateSum),
    /// Each member's update, in ascending client order ([`UpdateForm::PerMember`]).
    PerMember(Vec<MemberUpdate>),
}

impl RoundUpdates {
    /// The members' updates, refusing a sum ([`StrategyError::WrongForm`]): what a
    /// [`UpdateForm::PerMember`] strategy's `aggregate_fit` starts with.
    pub fn into_members(self) -> Result<Vec<MemberUpdate>, StrategyError> {
        match self {
            Self::PerMember(m) => Ok(m),
            Self::Sum(_) => Err(StrategyError::WrongForm {
                needed: UpdateForm::PerMember,
            }),
        }
    }

    /// `members` in the `form` a wrapped strategy asks for: as they are, or summed as models
    /// of `schema` (what a wrapper that reads every update hands a sum-based rule such as
    /// FedAvg).
    pub fn from_members(
        members: Vec<MemberUpdate>,
        form: UpdateForm,
        schema: &Arc<Schema>,
    ) -> Result<Self, StrategyError> {
        match form {
            UpdateForm::PerMember => Ok(Self::PerMember(members)),
            UpdateForm::Sum => {
                let mut sum = WeightedSum::new(schema.clone());
                for u in &members {
                    sum.add(&u.params, u.weight, &u.metrics)
                        .map_err(|e| StrategyError::Invalid(e.to_string()))?;
                }
                Ok(Self::Sum(UpdateSum::of_models(sum)))
            }
        }
    }

    /// Number of complete updates.
    pub fn count(&self) -> usize {
        match self {
            Self::Sum(s) => s.count(),
            Self::PerMember(m) => m.len(),
        }
    }

    /// The example-weighted mean of the members' training metrics.
    pub fn mean_metrics(&self) -> Metrics {
        match self {
            Self::Sum(s) => s.mean_metrics(),
            Self::PerMember(m) => {
                let total: u64 = m.iter().map(|u| u.weight).sum();
                let mut sums = Metrics::new();
                if total == 0 {
                    return sums;
                }
                for u in m {
                    for (k, v) in &u.metrics {
                        *sums.entry(k.clone()).or_insert(0.0) += u.weight as f64 * v;
                    }
                }
                sums.values_mut().for_each(|v| *v /= total as f64);
                sums
            }
        }
    }
}

/// One member's update in a plain round, kept whole for a [`UpdateForm::PerMember`] strategy.
#[derive(Debug, Clone, PartialEq)]
pub struct MemberUpdate {
    /// The member.
    pub client: ClientId,
    /// The parameters it trained (its local model, not the difference from the global one).
    pub params: ParamVec,
    /// Its weight (examples used).
    pub weight: u64,
    /// Its training metrics.
    pub metrics: Metrics,
    /// Content hash of `params`: what anyone holding the update can recompute, so a rule that
    /// rejects this update can cite it as evidence.
    pub digest: ContentHash,
    /// The member's signed statement of this update, when it came over a signed transport
    /// (the gRPC service checks it): the evidence that the member, not the aggregator, sent
    /// it. `None` in process, where there is no one to prove it to.
    pub signed: Option<crate::identity::SignedUpdate>,
    /// SCAFFOLD's control-variate difference `Δcᵢ = cᵢ⁺ - cᵢ` the member sent with the update
    /// (`None` outside SCAFFOLD rounds). Over gRPC the member's signature covers it too.
    pub control_delta: Option<ParamVec>,
}

impl MemberUpdate {
    /// A member's update; computes its digest.
    pub fn new(client: ClientId, params: ParamVec, weight: u64, metrics: Metrics) -> Self {
        let digest = params.content_hash();
        Self {
            client,
            params,
            weight,
            metrics,
            digest,
            signed: None,
            control_delta: None,
        }
    }

    /// The same update with the member's signed statement of it.
    #[must_use]
    pub fn with_signed(mut self, signed: Option<crate::identity::SignedUpdate>) -> Self {
        self.signed = signed;
        self
    }

    /// The same update with the member's SCAFFOLD control-variate difference.
    #[must_use]
    pub fn with_control_delta(mut self, control_delta: Option<ParamVec>) -> Self {
        self.control_delta = control_delta;
        self
    }

    /// `params - current`: the member's update as a difference from the global model.
    pub fn delta(&self, current: &ParamVec) -> Result<Vec<f32>, StrategyError> {
        super::same_schema(current.schema(), self.params.schema())?;
        Ok(self
            .params
            .values()
            .iter()
            .zip(current.values())
            .map(|(p, c)| p - c)
            .collect())
    }
}

/// The round's aggregate update, whatever the update protocol delivered.
///
/// It always stands for the same thing: the example-weighted mean of what the members
/// trained. Plain and SecAgg+ rounds deliver it as a sum of models, rounds under differential
/// privacy as a sum of (clipped) differences from the global model, and a privacy wrapper hands
/// its inner strategy an already noised mean difference; the accessors hide which, so a rule
/// or server optimiser works alike on all of them.
#[derive(Debug)]
pub struct UpdateSum {
    repr: Repr,
    count: usize,
    partial: usize,
    total_weight: u64,
    metrics: Metrics,
}

#[derive(Debug)]
enum Repr {
    /// `Σ wᵢ·xᵢ` over the members' models `xᵢ`.
    Models(WeightedSum),
    /// `Σ wᵢ·δᵢ` over the members' differences `δᵢ = xᵢ - global`.
    Deltas(WeightedSum),
    /// The mean difference, already averaged (and noised, under central DP).
    MeanDelta(ParamVec),
}

impl UpdateSum {
    /// A sum of the members' weighted models.
    pub fn of_models(sum: WeightedSum) -> Self {
        Self::of(sum, Repr::Models)
    }

    /// A sum of the members' weighted differences from the global model.
    pub fn of_deltas(sum: WeightedSum) -> Self {
        Self::of(sum, Repr::Deltas)
    }

    fn of(sum: WeightedSum, repr: fn(WeightedSum) -> Repr) -> Self {
        Self {
            count: sum.count(),
            partial: sum.partial(),
            total_weight: sum.total_weight(),
            metrics: sum.mean_metrics(),
            repr: repr(sum),
        }
    }

    /// An already averaged difference from the global model over `count` members (what a
    /// privacy wrapper hands on after noising the sum).
    pub fn from_mean_delta(delta: ParamVec, count: usize, metrics: Metrics) -> Self {
        Self {
            repr: Repr::MeanDelta(delta),
            count,
            partial: 0,
            total_weight: count as u64,
            metrics,
        }
    }

    /// Number of complete updates in the sum.
    pub fn count(&self) -> usize {
        self.count
    }

    /// Updates that broke off mid-upload; the values they delivered are in the sum.
    pub fn partial(&self) -> usize {
        self.partial
    }

    /// Sum of the complete updates' weights.
    pub fn total_weight(&self) -> u64 {
        self.total_weight
    }

    /// The example-weighted mean of the members' training metrics.
    pub fn mean_metrics(&self) -> Metrics {
        self.metrics.clone()
    }

    /// The schema of the summed parameters.
    pub fn schema(&self) -> &Arc<Schema> {
        match &self.repr {
            Repr::Models(s) | Repr::Deltas(s) => s.schema(),
            Repr::MeanDelta(d) => d.schema(),
        }
    }

    /// Whether turning the sum into a mean model reads the global model's values (a sum of
    /// models does not, so an engine may release the global model while updates stream in).
    pub fn needs_current(&self) -> bool {
        !matches!(self.repr, Repr::Models(_))
    }

    /// The weighted mean model: the FedAvg aggregate.
    pub fn into_mean_model(self, current: &ParamVec) -> Result<ParamVec, StrategyError> {
        super::same_schema(current.schema(), self.schema())?;
        match self.repr {
            Repr::Models(sum) => sum.into_mean().ok_or(StrategyError::NoResults),
            Repr::Deltas(sum) => add(current, &sum.into_mean().ok_or(StrategyError::NoResults)?),
            Repr::MeanDelta(delta) => add(current, &delta),
        }
    }

    /// The weighted mean difference from the global model (what a server optimiser steps
    /// along).
    pub fn into_mean_delta(self, current: &ParamVec) -> Result<ParamVec, StrategyError> {
        super::same_schema(current.schema(), self.schema())?;
        match self.repr {
            Repr::Models(sum) => {
                let mean = sum.into_mean().ok_or(StrategyError::NoResults)?;
                let values = mean
                    .values()
                    .iter()
                    .zip(current.values())
                    .map(|(m, c)| m - c)
                    .collect();
                ParamVec::new(current.schema().clone(), values).map_err(invalid)
            }
            Repr::Deltas(sum) => sum.into_mean().ok_or(StrategyError::NoResults),
            Repr::MeanDelta(delta) => Ok(delta),
        }
    }

    /// The sum of differences `Σ wᵢ·δᵢ / divisor` in `f32`, for a mechanism that noises the
    /// sum and divides it by a fixed count (central and distributed DP). Only a sum of
    /// differences has one: members under differential privacy send differences.
    pub fn into_delta_sum(self, divisor: f64) -> Result<Vec<f32>, StrategyError> {
        match self.repr {
            Repr::Deltas(sum) => {
                let scale = (1u64 << FRACTION_BITS) as f64 * divisor;
                Ok(sum.into_raw().map(|s| (s as f64 / scale) as f32).collect())
            }
            Repr::Models(_) | Repr::MeanDelta(_) => Err(StrategyError::Invalid(
                "the round's updates are not differences from the global model (were the \
                 members told to send private updates?)"
                    .into(),
            )),
        }
    }
}

fn invalid(e: impl std::fmt::Display) -> StrategyError {
    StrategyError::Invalid(e.to_string())
}

/// `current + delta`, element by element in `f32`.
pub(crate) fn add(current: &ParamVec, delta: &ParamVec) -> Result<ParamVec, StrategyError> {
    super::same_schema(current.schema(), delta.schema())?;
    let values = current
        .values()
        .iter()
        .zip(delta.values())
        .map(|(c, d)| c + d)
        .collect();
    ParamVec::new(current.schema().clone(), values).map_err(invalid)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::params::TensorSpec;

    fn schema() -> Arc<Schema> {
        Arc::new(Schema::new(vec![TensorSpec::new("w", [2])]).unwrap())
    }

    fn pv(v: [f32; 2]) -> ParamVec {
        ParamVec::new(schema(), v.to_vec()).unwrap()
    }

    #[test]
    fn every_representation_means_the_same_update() {
        let current = pv([1.0, 1.0]);
        let mut models = WeightedSum::new(schema());
        models.add(&pv([2.0, 0.0]), 1, &Metrics::new()).unwrap();
        models.add(&pv([4.0, 4.0]), 3, &Metrics::new()).unwrap();
        let mut deltas = WeightedSum::new(schema());
        deltas.add(&pv([1.0, -1.0]), 1, &Metrics::new()).unwrap();
        deltas.add(&pv([3.0, 3.0]), 3, &Metrics::new()).unwrap();
        let want_model = [3.5, 3.0];
        let want_delta = [2.5, 2.0];
        let m = UpdateSum::of_models(models.clone());
        assert!(!m.needs_current());
        assert_eq!(m.into_mean_model(&current).unwrap().values(), want_model);
        let d = UpdateSum::of_deltas(deltas.clone());
        assert!(d.needs_current());
        assert_eq!(d.into_mean_model(&current).unwrap().values(), want_model);
        assert_eq!(
            UpdateSum::of_models(models)
                .into_mean_delta(&current)
                .unwrap()
                .values(),
            want_delta
        );
        assert_eq!(
            UpdateSum::of_deltas(deltas.clone())
                .into_mean_delta(&current)
                .unwrap()
                .values(),
            want_delta
        );
        let mean = UpdateSum::from_mean_delta(pv(want_delta), 2, Metrics::new());
        assert_eq!(mean.into_mean_model(&current).unwrap().values(), want_model);
        assert_eq!(
            UpdateSum::of_deltas(deltas).into_delta_sum(2.0).unwrap(),
            vec![5.0, 4.0]
        );
    }

    #[test]
    fn a_sum_of_models_has_no_delta_sum_and_schemas_must_match() {
        let mut models = WeightedSum::new(schema());
        models.add(&pv([2.0, 0.0]), 1, &Metrics::new()).unwrap();
        assert!(matches!(
            UpdateSum::of_models(models.clone()).into_delta_sum(1.0),
            Err(StrategyError::Invalid(_))
        ));
        let other = Arc::new(Schema::new(vec![TensorSpec::new("v", [2])]).unwrap());
        let current = ParamVec::zeros(other);
        assert!(matches!(
            UpdateSum::of_models(models).into_mean_model(&current),
            Err(StrategyError::SchemaMismatch)
        ));
        let empty = UpdateSum::of_models(WeightedSum::new(schema()));
        assert_eq!(
            empty.into_mean_model(&pv([0.0, 0.0])),
            Err(StrategyError::NoResults)
        );
    }

    #[test]
    fn per_member_metrics_are_example_weighted() {
        let m = |c, w, loss| {
            MemberUpdate::new(
                ClientId(c),
                pv([0.0, 0.0]),
                w,
                Metrics::from([("loss".to_string(), loss)]),
            )
        };
        let updates = RoundUpdates::PerMember(vec![m(0, 1, 1.0), m(1, 3, 3.0)]);
        assert_eq!(updates.count(), 2);
        assert_eq!(updates.mean_metrics()["loss"], 2.5);
        let u = m(0, 1, 1.0);
        assert_eq!(u.digest, pv([0.0, 0.0]).content_hash());
        assert_eq!(u.delta(&pv([1.0, -1.0])).unwrap(), vec![-1.0, 1.0]);
    }
}
