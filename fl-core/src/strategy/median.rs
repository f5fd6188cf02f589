//! Coordinate-wise median (Yin, Chen, Ramchandran and Bartlett 2018, "Byzantine-Robust
//! Distributed Learning: Towards Optimal Statistical Rates"): each parameter of the next model
//! is the median of the members' values, so fewer than half of the members cannot drag any
//! coordinate outside the range of the honest ones. Unweighted, like Flower's `FedMedian`.
//!
//! It needs every member's update ([`UpdateForm::PerMember`]), so it cannot run under secure
//! aggregation; a federation file asking for both is refused at load time.

use crate::params::ParamVec;
use crate::round::ClientId;

use super::fedavg::apply_optimizer;
use super::robust::RobustRule;
use super::{
    EvaluatePlan, FitPlan, MemberUpdate, RoundUpdates, ServerOptimizer, Strategy, StrategyConfig,
    StrategyError, UpdateForm, same_schema,
};

/// The coordinate-wise median of the members' models, optionally followed by a server
/// optimiser.
#[derive(Debug)]
pub struct CoordinateMedian {
    config: StrategyConfig,
    optimizer: Option<Box<dyn ServerOptimizer>>,
}

impl CoordinateMedian {
    /// The median rule with the given selection and training settings.
    pub fn new(config: StrategyConfig) -> Self {
        Self {
            config,
            optimizer: None,
        }
    }

    /// Steps along `median - current` with `optimizer` (none: the median is the next model).
    pub fn with_optimizer(mut self, optimizer: Option<Box<dyn ServerOptimizer>>) -> Self {
        self.optimizer = optimizer;
        self
    }
}

/// The coordinate-wise median of `updates`' parameters (the mean of the two middle values for
/// an even count). Refuses an empty list, another schema than `current`'s and non-finite values.
pub fn coordinate_median(
    current: &ParamVec,
    updates: &[MemberUpdate],
) -> Result<ParamVec, StrategyError> {
    if updates.is_empty() {
        return Err(StrategyError::NoResults);
    }
    for u in updates {
        same_schema(current.schema(), u.params.schema())?;
        if !u.params.all_finite() {
            return Err(StrategyError::Invalid(format!(
                "{} sent non-finite parameters",
                u.client
            )));
        }
    }
    let mut column = vec![0f32; updates.len()];
    let values = (0..current.values().len())
        .map(|i| {
            for (slot, u) in column.iter_mut().zip(updates) {
                *slot = u.params.values()[i];
            }
            column_median(&mut column)
        })
        .collect();
    ParamVec::new(current.schema().clone(), values)
        .map_err(|e| StrategyError::Invalid(e.to_string()))
}

/// The median of `column` (the mean of the two middle values for an even count; reorders
/// `column`). `column` must not be empty.
pub(crate) fn column_median(column: &mut [f32]) -> f32 {
    let n = column.len();
    let mid = n / 2;
    let (_, &mut hi, _) = column.select_nth_unstable_by(mid, f32::total_cmp);
    if n % 2 == 1 {
        hi
    } else {
        let lo = column[..mid]
            .iter()
            .copied()
            .fold(f32::NEG_INFINITY, f32::max);
        lo + (hi - lo) / 2.0
    }
}

/// The coordinate-wise median as a [`RobustRule`], so that bucketing or NNM can run in front of
/// it (`[strategy] kind = "median"` builds it inside a [`super::RobustAggregator`]).
#[derive(Debug, Clone, Copy, Default)]
pub struct MedianRule;

impl RobustRule for MedianRule {
    fn name(&self) -> &'static str {
        "median"
    }

    fn min_inputs(&self) -> usize {
        1
    }

    fn aggregate(&mut self, deltas: &[Vec<f32>]) -> Result<Vec<f32>, StrategyError> {
        let mut column = vec![0f32; deltas.len()];
        Ok((0..deltas[0].len())
            .map(|i| {
                column.iter_mut().zip(deltas).for_each(|(c, d)| *c = d[i]);
                column_median(&mut column)
            })
            .collect())
    }
}

impl Strategy for CoordinateMedian {
    fn name(&self) -> &str {
        "median"
    }

    fn update_form(&self) -> UpdateForm {
        UpdateForm::PerMember
    }

    fn needs_current_params(&self) -> bool {
        self.optimizer.is_some()
    }

    fn configure_fit(&mut self, _round: u64, available: &[ClientId], round_seed: u64) -> FitPlan {
        self.config.plan_fit(available, round_seed)
    }

    fn aggregate_fit(
        &mut self,
        _round: u64,
        current: &ParamVec,
        updates: RoundUpdates,
    ) -> Result<ParamVec, StrategyError> {
        let members = updates.into_members()?;
        let median = coordinate_median(current, &members)?;
        apply_optimizer(self.optimizer.as_mut(), current, median)
    }

    fn configure_evaluate(
        &mut self,
        _round: u64,
        available: &[ClientId],
        round_seed: u64,
    ) -> EvaluatePlan {
        self.config.plan_evaluate(available, round_seed)
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use super::*;
    use crate::aggregate::WeightedSum;
    use crate::params::{Schema, TensorSpec};
    use crate::round::Metrics;
    use crate::strategy::UpdateSum;

    fn schema() -> Arc<Schema> {
        Arc::new(Schema::new(vec![TensorSpec::new("w", [3])]).unwrap())
    }

    fn member(c: u64, v: [f32; 3], weight: u64) -> MemberUpdate {
        MemberUpdate::new(
            ClientId(c),
            ParamVec::new(schema(), v.to_vec()).unwrap(),
            weight,
            Metrics::new(),
        )
    }

    #[test]
    fn median_ignores_a_minority_of_outliers_and_weights() {
        let current = ParamVec::zeros(schema());
        let updates = vec![
            member(0, [1.0, 2.0, 3.0], 1),
            member(1, [1.5, 2.5, 2.0], 1),
            member(2, [1e9, -1e9, 1e9], 1000),
        ];
        let mut rule = CoordinateMedian::new(StrategyConfig::default());
        let next = rule
            .aggregate_fit(1, &current, RoundUpdates::PerMember(updates))
            .unwrap();
        assert_eq!(next.values(), &[1.5, 2.0, 3.0]);
    }

    #[test]
    fn even_counts_take_the_middle_of_the_two_central_values() {
        let current = ParamVec::zeros(schema());
        let updates = vec![
            member(0, [1.0, 0.0, -4.0], 1),
            member(1, [3.0, 0.0, 4.0], 1),
            member(2, [2.0, 8.0, 0.0], 1),
            member(3, [100.0, 2.0, 1.0], 1),
        ];
        let next = coordinate_median(&current, &updates).unwrap();
        assert_eq!(next.values(), &[2.5, 1.0, 0.5]);
    }

    #[test]
    fn bad_input_is_refused() {
        let current = ParamVec::zeros(schema());
        let mut rule = CoordinateMedian::new(StrategyConfig::default());
        assert_eq!(
            rule.aggregate_fit(1, &current, RoundUpdates::PerMember(Vec::new())),
            Err(StrategyError::NoResults)
        );
        let sum = UpdateSum::of_models(WeightedSum::new(schema()));
        assert_eq!(
            rule.aggregate_fit(1, &current, RoundUpdates::Sum(sum)),
            Err(StrategyError::WrongForm {
                needed: UpdateForm::PerMember
            })
        );
        let other = Arc::new(Schema::new(vec![TensorSpec::new("v", [3])]).unwrap());
        let stranger = MemberUpdate::new(ClientId(9), ParamVec::zeros(other), 1, Metrics::new());
        assert_eq!(
            coordinate_median(&current, &[member(0, [0.0; 3], 1), stranger]),
            Err(StrategyError::SchemaMismatch)
        );
        let nan = member(1, [f32::NAN, 0.0, 0.0], 1);
        assert!(matches!(
            coordinate_median(&current, &[nan]),
            Err(StrategyError::Invalid(_))
        ));
        crate::strategy::robust::tests::refuses_hostile_input(Box::new(MedianRule));
    }

    #[test]
    fn tied_values_give_the_shared_value_for_odd_and_even_counts() {
        let current = ParamVec::zeros(schema());
        // Odd n = 5, per coordinate sorted: [-1, 2, 2, 2, 7] -> 2; [0, 4, 4, 9, 9] -> 4
        // (the tie sits on the middle); all five equal to 3 -> 3.
        let odd = vec![
            member(0, [2.0, 4.0, 3.0], 1),
            member(1, [2.0, 9.0, 3.0], 1),
            member(2, [7.0, 0.0, 3.0], 1),
            member(3, [-1.0, 9.0, 3.0], 1),
            member(4, [2.0, 4.0, 3.0], 1),
        ];
        assert_eq!(
            coordinate_median(&current, &odd).unwrap().values(),
            &[2.0, 4.0, 3.0]
        );
        // Even n = 4, sorted: [1, 5, 5, 5] -> (5 + 5)/2 = 5; [2, 2, 8, 8] -> (2 + 8)/2 = 5, a
        // value no member sent; all four equal to -1 -> -1.
        let even = vec![
            member(0, [5.0, 8.0, -1.0], 1),
            member(1, [1.0, 2.0, -1.0], 1),
            member(2, [5.0, 8.0, -1.0], 1),
            member(3, [5.0, 2.0, -1.0], 1),
        ];
        assert_eq!(
            coordinate_median(&current, &even).unwrap().values(),
            &[5.0, 5.0, -1.0]
        );
        let deltas = crate::strategy::robust::member_deltas(&current, &even).unwrap();
        assert_eq!(MedianRule.aggregate(&deltas).unwrap(), vec![5.0, 5.0, -1.0]);
    }

    #[test]
    fn at_n_equals_2f_plus_1_the_median_stays_within_the_honest_values() {
        let current = ParamVec::zeros(schema());
        // n = 3, f = 1: one arbitrary outlier. Sorted: [-1e9, 1, 3] -> 1, the lower honest
        // value; [-2, -1, 1e9] -> -1, the upper one; [0.25, 0.375, 0.5] -> 0.375, the
        // outlier's own value, but between the honest 0.25 and 0.5.
        let three = vec![
            member(0, [1.0, -2.0, 0.5], 1),
            member(1, [3.0, -1.0, 0.25], 1),
            member(2, [-1e9, 1e9, 0.375], 1_000_000),
        ];
        let next = coordinate_median(&current, &three).unwrap();
        assert_eq!(next.values(), &[1.0, -1.0, 0.375]);
        // n = 5, f = 2, both outliers above in the first coordinate and below in the second:
        // [1, 2, 3, 100, 200] -> 3, the largest honest value; [-60, -50, 4, 5, 6] -> 4, the
        // smallest. One on each side in the third: [-9, 0, 1, 2, 9] -> 1, the honest median.
        let five = vec![
            member(0, [1.0, 4.0, 0.0], 1),
            member(1, [2.0, 5.0, 1.0], 1),
            member(2, [3.0, 6.0, 2.0], 1),
            member(3, [100.0, -50.0, -9.0], 1),
            member(4, [200.0, -60.0, 9.0], 1),
        ];
        let next = coordinate_median(&current, &five).unwrap();
        assert_eq!(next.values(), &[3.0, 4.0, 1.0]);
        for (i, v) in next.values().iter().enumerate() {
            let honest = five[..3].iter().map(|u| u.params.values()[i]);
            let (lo, hi) = honest.fold((f32::INFINITY, f32::NEG_INFINITY), |(lo, hi), x| {
                (lo.min(x), hi.max(x))
            });
            assert!(
                (lo..=hi).contains(v),
                "coordinate {i}: {v} outside [{lo}, {hi}]"
            );
        }
    }

    #[test]
    fn the_median_rule_matches_the_median_of_models() {
        let current = ParamVec::zeros(schema());
        let updates = vec![
            member(0, [1.0, 0.0, -4.0], 1),
            member(1, [3.0, 0.0, 4.0], 1),
            member(2, [2.0, 8.0, 0.0], 1),
            member(3, [100.0, 2.0, 1.0], 1),
        ];
        let deltas = crate::strategy::robust::member_deltas(&current, &updates).unwrap();
        assert_eq!(MedianRule.aggregate(&deltas).unwrap(), vec![2.5, 1.0, 0.5]);
    }
}
