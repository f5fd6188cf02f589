//! Federated averaging (McMahan et al. 2017), optionally followed by a server optimiser.

use crate::params::ParamVec;
use crate::round::ClientId;

use super::{
    EvaluatePlan, FitPlan, RoundUpdates, ServerOptimizer, Strategy, StrategyConfig, StrategyError,
    UpdateForm,
};

/// Federated averaging: the new model is the example-weighted mean of the members' models,
/// accumulated in exact fixed point; with a [`ServerOptimizer`] the mean update is a
/// pseudo-gradient the optimiser steps along instead (FedAvgM, FedAdam).
#[derive(Debug)]
pub struct FedAvg {
    config: StrategyConfig,
    optimizer: Option<Box<dyn ServerOptimizer>>,
}

impl FedAvg {
    /// FedAvg with the given selection and training settings (the config's `kind` and
    /// `server_optimizer` are not read: see [`with_optimizer`](Self::with_optimizer) and
    /// [`StrategyConfig::build`]).
    pub fn new(config: StrategyConfig) -> Self {
        Self {
            config,
            optimizer: None,
        }
    }

    /// Steps along the mean update with `optimizer` (none: add it as it is).
    pub fn with_optimizer(mut self, optimizer: Option<Box<dyn ServerOptimizer>>) -> Self {
        self.optimizer = optimizer;
        self
    }

    /// The settings.
    pub fn config(&self) -> &StrategyConfig {
        &self.config
    }
}

/// The next model from a rule's `proposal` (a new model): as it is without an optimiser, else
/// the optimiser's step along `proposal - current`.
pub(super) fn apply_optimizer(
    optimizer: Option<&mut Box<dyn ServerOptimizer>>,
    current: &ParamVec,
    proposal: ParamVec,
) -> Result<ParamVec, StrategyError> {
    let Some(opt) = optimizer else {
        return Ok(proposal);
    };
    let delta: Vec<f32> = proposal
        .values()
        .iter()
        .zip(current.values())
        .map(|(p, c)| p - c)
        .collect();
    let delta = ParamVec::new(current.schema().clone(), delta)
        .map_err(|e| StrategyError::Invalid(e.to_string()))?;
    opt.step(current, &delta)
}

impl Strategy for FedAvg {
    fn name(&self) -> &str {
        "fedavg"
    }

    fn configure_fit(&mut self, _round: u64, available: &[ClientId], round_seed: u64) -> FitPlan {
        self.config.plan_fit(available, round_seed)
    }

    fn needs_current_params(&self) -> bool {
        self.optimizer.is_some()
    }

    fn aggregate_fit(
        &mut self,
        _round: u64,
        current: &ParamVec,
        updates: RoundUpdates,
    ) -> Result<ParamVec, StrategyError> {
        let RoundUpdates::Sum(sum) = updates else {
            return Err(StrategyError::WrongForm {
                needed: UpdateForm::Sum,
            });
        };
        match &mut self.optimizer {
            None => sum.into_mean_model(current),
            Some(opt) => {
                let delta = sum.into_mean_delta(current)?;
                opt.step(current, &delta)
            }
        }
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
    use crate::strategy::{FedAvgM, FedAvgMConfig, UpdateSum};

    fn schema() -> Arc<Schema> {
        Arc::new(Schema::new(vec![TensorSpec::new("w", [2])]).unwrap())
    }

    fn two_members() -> WeightedSum {
        let mut sum = WeightedSum::new(schema());
        let a = ParamVec::new(schema(), vec![0.0, 10.0]).unwrap();
        let b = ParamVec::new(schema(), vec![4.0, 2.0]).unwrap();
        sum.add(&a, 1, &Metrics::new()).unwrap();
        sum.add(&b, 3, &Metrics::new()).unwrap();
        sum
    }

    #[test]
    fn fedavg_weights_by_examples() {
        let current = ParamVec::zeros(schema());
        let mut fedavg = FedAvg::new(StrategyConfig::default());
        assert!(!fedavg.needs_current_params());
        let next = fedavg
            .aggregate_fit(
                1,
                &current,
                RoundUpdates::Sum(UpdateSum::of_models(two_members())),
            )
            .unwrap();
        assert_eq!(next.values(), &[3.0, 4.0]);
        let empty = RoundUpdates::Sum(UpdateSum::of_models(WeightedSum::new(schema())));
        assert_eq!(
            fedavg.aggregate_fit(1, &current, empty),
            Err(StrategyError::NoResults)
        );
        assert_eq!(
            fedavg.aggregate_fit(1, &current, RoundUpdates::PerMember(Vec::new())),
            Err(StrategyError::WrongForm {
                needed: UpdateForm::Sum
            })
        );
    }

    #[test]
    fn a_server_optimiser_steps_along_the_mean_update() {
        let current = ParamVec::new(schema(), vec![1.0, 1.0]).unwrap();
        let momentum = FedAvgM::new(FedAvgMConfig {
            learning_rate: 0.5,
            momentum: 0.0,
        })
        .unwrap();
        let mut fedavg =
            FedAvg::new(StrategyConfig::default()).with_optimizer(Some(Box::new(momentum)));
        assert!(fedavg.needs_current_params());
        // Mean model (3, 4): mean update (2, 3), half a step of it.
        let next = fedavg
            .aggregate_fit(
                1,
                &current,
                RoundUpdates::Sum(UpdateSum::of_models(two_members())),
            )
            .unwrap();
        assert_eq!(next.values(), &[2.0, 2.5]);
    }
}
