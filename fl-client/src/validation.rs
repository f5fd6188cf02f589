//! The aggregator's held-out validation set as a [`Validator`]: what contribution scores
//! (`fl_core::strategy::contribution`) value each coalition's model by.

use fl_core::{EvaluateConfig, ParamVec, Trainer, TrainerError, Validator};

/// Which number of a held-out evaluation is the utility.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Utility {
    /// The share of held-out examples classified right (in `[0, 1]`; coarse on a small set:
    /// one example of 359 is 0.0028).
    #[default]
    Accuracy,
    /// Minus the mean held-out loss (finer grained; unbounded below).
    NegativeLoss,
}

/// A [`Validator`] over any [`Trainer`]'s evaluation on its own held-out data (a `BurnTrainer`
/// built with the validation set as its evaluation data, such as the one
/// `federation::evaluator` returns).
///
/// ```no_run
/// # fn demo(federation: &fl_core::config::FederationConfig) -> Result<(), Box<dyn std::error::Error>> {
/// use fl_client::{HeldOutValidator, Utility};
/// let evaluator = fl_client::federation::evaluator(federation)?;
/// let validator = HeldOutValidator::new(evaluator, Utility::Accuracy);
/// let _strategy =
///     federation
///         .strategy
///         .build_with_validator(None, None, 20, 19_210, Some(Box::new(validator)))?;
/// # Ok(())
/// # }
/// ```
#[derive(Debug)]
pub struct HeldOutValidator<T> {
    trainer: T,
    utility: Utility,
    config: EvaluateConfig,
}

impl<T: Trainer> HeldOutValidator<T> {
    /// `trainer`'s held-out evaluation, read as `utility`.
    pub fn new(trainer: T, utility: Utility) -> Self {
        Self {
            trainer,
            utility,
            config: EvaluateConfig::default(),
        }
    }

    /// The trainer back.
    pub fn into_inner(self) -> T {
        self.trainer
    }
}

impl<T: Trainer> Validator for HeldOutValidator<T> {
    fn utility(&mut self, params: &ParamVec) -> Result<f64, TrainerError> {
        self.trainer.set_parameters(params)?;
        let result = self.trainer.evaluate(&self.config)?;
        match self.utility {
            Utility::Accuracy => result.accuracy().ok_or_else(|| {
                TrainerError::Other("the evaluation reported no `accuracy` metric".into())
            }),
            Utility::NegativeLoss => Ok(-result.loss),
        }
    }
}

#[cfg(all(test, feature = "burn"))]
mod tests {
    use super::*;
    use crate::{BurnTrainer, Dataset, DeviceSpec, ModelSpec};

    #[test]
    fn the_utility_is_the_held_out_accuracy_or_minus_the_loss() {
        let trainer = || {
            let data = Dataset::new(vec![0.0, 1.0, 1.0, 0.0], vec![2], vec![0, 1], 2).unwrap();
            BurnTrainer::new(
                &ModelSpec::Mlp { hidden: 4 },
                DeviceSpec::Cpu,
                data.clone(),
                Some(data),
                1,
            )
            .unwrap()
        };
        let mut eval = trainer();
        let params = eval.get_parameters();
        let want = eval.evaluate(&EvaluateConfig::default()).unwrap();
        let mut acc = HeldOutValidator::new(trainer(), Utility::Accuracy);
        assert_eq!(acc.utility(&params).unwrap(), want.accuracy().unwrap());
        let mut loss = HeldOutValidator::new(trainer(), Utility::NegativeLoss);
        assert_eq!(loss.utility(&params).unwrap(), -want.loss);
        let other = std::sync::Arc::new(
            fl_core::Schema::new(vec![fl_core::TensorSpec::new("w", [1])]).unwrap(),
        );
        assert!(loss.utility(&ParamVec::zeros(other)).is_err());
    }
}
