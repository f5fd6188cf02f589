//! [`ContributionScored`]: any strategy, with every round's members scored on a validation set.

use crate::params::ParamVec;
use crate::round::{ClientId, EvaluateResult, Metrics};
use crate::validator::Validator;

use super::super::{
    EvaluatePlan, FitPlan, Refusal, ResumeState, RoundUpdates, Strategy, StrategyError, UpdateForm,
    derive_seed,
};
use super::{ContributionConfig, ContributionError, RoundScores, score_round};

/// A strategy whose rounds are scored: before the wrapped strategy aggregates, every member's
/// leave-one-out and Shapley value ([`score_round`]) are computed on the `validator`, and
/// [`round_metrics`](Strategy::round_metrics) reports them with the wrapped strategy's own
/// metrics, so the engine writes them into the round's checkpoint manifest.
///
/// It asks the engine for per-member updates whatever the wrapped strategy needs and hands a
/// sum-based one (FedAvg) their weighted sum, so it runs on plain rounds only. Scoring never
/// changes the model: a round whose scoring fails (the validator errs) still aggregates, reports
/// `contribution.failed = 1` and no scores, and keeps the reason in
/// [`last_failure`](Self::last_failure). GTG's permutations are seeded from the round seed.
pub struct ContributionScored {
    inner: Box<dyn Strategy>,
    validator: Box<dyn Validator>,
    config: ContributionConfig,
    round_seed: u64,
    scores: Option<RoundScores>,
    failure: Option<ContributionError>,
    /// Each member's reported examples and local steps in the last round (its compute).
    compute: Vec<(ClientId, u64, Option<f64>)>,
}

impl std::fmt::Debug for ContributionScored {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ContributionScored")
            .field("inner", &self.inner.name())
            .field("config", &self.config)
            .field("scores", &self.scores)
            .field("failure", &self.failure)
            .finish_non_exhaustive()
    }
}

impl ContributionScored {
    /// `inner`, its rounds scored on `validator` as `config` says; refuses invalid settings.
    pub fn new(
        inner: Box<dyn Strategy>,
        validator: Box<dyn Validator>,
        config: ContributionConfig,
    ) -> Result<Self, StrategyError> {
        config.check()?;
        Ok(Self {
            inner,
            validator,
            config,
            round_seed: 0,
            scores: None,
            failure: None,
            compute: Vec::new(),
        })
    }

    /// The scores of the last aggregated round (`None` before the first, or when it failed).
    pub fn last_scores(&self) -> Option<&RoundScores> {
        self.scores.as_ref()
    }

    /// Why the last round's scoring failed, if it did.
    pub fn last_failure(&self) -> Option<&ContributionError> {
        self.failure.as_ref()
    }
}

impl Strategy for ContributionScored {
    fn name(&self) -> &str {
        self.inner.name()
    }

    fn update_form(&self) -> UpdateForm {
        UpdateForm::PerMember
    }

    fn authorize_round(&mut self, round: u64) -> Result<(), Refusal> {
        self.inner.authorize_round(round)
    }

    fn resume(&mut self, state: &ResumeState) -> Result<(), Refusal> {
        self.inner.resume(state)
    }

    fn strategy_state(&self) -> Option<std::sync::Arc<ParamVec>> {
        self.inner.strategy_state()
    }

    fn take_findings(&mut self) -> Option<super::super::QaFindings> {
        self.inner.take_findings()
    }

    fn configure_fit(&mut self, round: u64, available: &[ClientId], round_seed: u64) -> FitPlan {
        self.round_seed = round_seed;
        self.inner.configure_fit(round, available, round_seed)
    }

    fn aggregate_fit(
        &mut self,
        round: u64,
        current: &ParamVec,
        updates: RoundUpdates,
    ) -> Result<ParamVec, StrategyError> {
        let members = updates.into_members()?;
        self.compute = members
            .iter()
            .map(|u| {
                let steps = u.metrics.get(crate::round::LOCAL_STEPS_METRIC).copied();
                (u.client, u.weight, steps)
            })
            .collect();
        let seed = derive_seed(self.round_seed, "contribution", round);
        match score_round(
            &self.config,
            current,
            &members,
            self.validator.as_mut(),
            seed,
        ) {
            Ok(s) => {
                self.scores = Some(s);
                self.failure = None;
            }
            Err(e) => {
                self.scores = None;
                self.failure = Some(e);
            }
        }
        let updates =
            RoundUpdates::from_members(members, self.inner.update_form(), current.schema())?;
        self.inner.aggregate_fit(round, current, updates)
    }

    fn round_metrics(&self) -> Metrics {
        let mut m = self.inner.round_metrics();
        // What each member reported it computed, next to its score, for rewards that pay
        // compute (`contribution.<client>.examples`, `.steps`; steps only where reported).
        for (c, examples, steps) in &self.compute {
            m.insert(format!("contribution.{}.examples", c.0), *examples as f64);
            if let Some(s) = steps {
                m.insert(format!("contribution.{}.steps", c.0), *s);
            }
        }
        match (&self.scores, &self.failure) {
            (Some(s), _) => m.extend(s.metrics()),
            (None, Some(_)) => {
                m.insert("contribution.failed".into(), 1.0);
            }
            (None, None) => {}
        }
        m
    }

    fn configure_evaluate(
        &mut self,
        round: u64,
        available: &[ClientId],
        round_seed: u64,
    ) -> EvaluatePlan {
        self.inner.configure_evaluate(round, available, round_seed)
    }

    fn aggregate_evaluate(
        &mut self,
        round: u64,
        results: &[(ClientId, EvaluateResult)],
    ) -> Option<EvaluateResult> {
        self.inner.aggregate_evaluate(round, results)
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use super::super::{ShapleyMethod, Weighting};
    use super::*;
    use crate::WeightedSum;
    use crate::params::{Schema, TensorSpec};
    use crate::strategy::UpdateSum;
    use crate::strategy::{FedAvg, MedianRule, MemberUpdate, RobustAggregator, StrategyConfig};
    use crate::trainer::TrainerError;

    fn schema() -> Arc<Schema> {
        Arc::new(Schema::new(vec![TensorSpec::new("w", [1])]).unwrap())
    }

    fn member(c: u64, v: f32) -> MemberUpdate {
        MemberUpdate::new(
            ClientId(c),
            ParamVec::new(schema(), vec![v]).unwrap(),
            1,
            Metrics::new(),
        )
    }

    /// Utility: the parameter itself (higher is better), counted.
    fn identity() -> Box<dyn Validator> {
        Box::new(|p: &ParamVec| -> Result<f64, TrainerError> { Ok(f64::from(p.values()[0])) })
    }

    #[test]
    fn scores_of_a_fedavg_round_are_reported_and_the_model_is_fedavgs() {
        let exact = ContributionConfig {
            shapley: ShapleyMethod::Exact,
            ..Default::default()
        };
        let mut s = ContributionScored::new(
            Box::new(FedAvg::new(StrategyConfig::default())),
            identity(),
            exact,
        )
        .unwrap();
        assert_eq!(s.update_form(), UpdateForm::PerMember);
        s.configure_fit(1, &[ClientId(3), ClientId(8)], 42);
        // Member 3 moves the model to 1, member 8 (a free rider) leaves it at 0.
        let current = ParamVec::zeros(schema());
        let next = s
            .aggregate_fit(
                1,
                &current,
                RoundUpdates::PerMember(vec![member(3, 1.0), member(8, 0.0)]),
            )
            .unwrap();
        assert_eq!(next.values(), &[0.5]);
        let m = s.round_metrics();
        // Round shares: v({3}) = v(N) = ½, v({8}) = 0; the free rider is a null player.
        assert_eq!(m["contribution.3.shapley"], 0.5);
        assert_eq!(m["contribution.8.shapley"], 0.0);
        assert_eq!(m["contribution.3.loo"], 0.5);
        assert_eq!(m["contribution.8.loo"], 0.0);
        assert_eq!(m["contribution.utility_all"], 0.5);
        assert_eq!(m["contribution.evaluations"], 4.0);
        assert!(s.last_failure().is_none());
        assert_eq!(s.last_scores().unwrap().members[1].client, ClientId(8));
    }

    #[test]
    fn a_robust_rule_keeps_its_metrics_and_scoring_is_reproducible() {
        let run = || {
            let rule = RobustAggregator::new(StrategyConfig::default(), Box::new(MedianRule));
            let mut s = ContributionScored::new(
                Box::new(rule),
                identity(),
                ContributionConfig {
                    weighting: Weighting::Uniform,
                    truncation: 0.0,
                    exact_up_to: 5,
                    ..Default::default()
                },
            )
            .unwrap();
            s.configure_fit(2, &[], 9);
            let members = (0..5).map(|c| member(c, c as f32 * 0.5 - 0.5)).collect();
            let next = s
                .aggregate_fit(
                    2,
                    &ParamVec::zeros(schema()),
                    RoundUpdates::PerMember(members),
                )
                .unwrap();
            (next, s.round_metrics())
        };
        let (next, m) = run();
        assert_eq!(next.values(), &[0.5], "the median, not the mean");
        assert!(m.contains_key("qa.0.norm") && m.contains_key("robust_inputs"));
        assert!(m.contains_key("contribution.4.exact"));
        // Member 0 pulls the mean down, member 4 up.
        assert!(m["contribution.0.shapley"] < 0.0 && m["contribution.4.shapley"] > 0.0);
        assert_eq!(run().1, m, "the same round scores the same");
    }

    #[test]
    fn a_failing_validator_does_not_stop_the_round() {
        let failing: Box<dyn Validator> = Box::new(|_: &ParamVec| -> Result<f64, TrainerError> {
            Err(TrainerError::NoData("evaluate"))
        });
        let mut s = ContributionScored::new(
            Box::new(FedAvg::new(StrategyConfig::default())),
            failing,
            ContributionConfig::default(),
        )
        .unwrap();
        let next = s
            .aggregate_fit(
                1,
                &ParamVec::zeros(schema()),
                RoundUpdates::PerMember(vec![member(0, 2.0)]),
            )
            .unwrap();
        assert_eq!(next.values(), &[2.0]);
        assert_eq!(s.round_metrics()["contribution.failed"], 1.0);
        assert!(matches!(
            s.last_failure(),
            Some(ContributionError::Validator(_))
        ));
        let sum = UpdateSum::of_models(WeightedSum::new(schema()));
        assert_eq!(
            s.aggregate_fit(1, &ParamVec::zeros(schema()), RoundUpdates::Sum(sum)),
            Err(StrategyError::WrongForm {
                needed: UpdateForm::PerMember
            })
        );
        assert!(matches!(
            ContributionScored::new(
                Box::new(FedAvg::new(StrategyConfig::default())),
                identity(),
                ContributionConfig {
                    permutations: 0,
                    ..Default::default()
                },
            ),
            Err(StrategyError::Settings(_))
        ));
    }
}
