//! Server optimisers (Reddi et al. 2021, "Adaptive Federated Optimization"): the aggregator
//! treats the round's mean update as a pseudo-gradient and steps along it with its own
//! optimiser, after any aggregation rule.
//!
//! A new optimiser is one file here and one arm of [`ServerOptimizerConfig`].

use serde::{Deserialize, Serialize};

use crate::params::ParamVec;

use super::StrategyError;

mod fedadagrad;
mod fedadam;
mod fedavgm;
mod fedyogi;

pub use fedadagrad::{FedAdagrad, FedAdagradConfig};
pub use fedadam::{FedAdam, FedAdamConfig};
pub use fedavgm::{FedAvgM, FedAvgMConfig};
pub use fedyogi::{FedYogi, FedYogiConfig};

/// An optimiser the aggregator applies to the round's aggregated update.
pub trait ServerOptimizer: Send + std::fmt::Debug {
    /// A short name for logs and manifests, e.g. `fedadam`.
    fn name(&self) -> &'static str;

    /// The next global parameters from the `current` ones and the round's aggregated update
    /// `delta` (the mean of the members' `local - global`, or whatever the rule made of them).
    fn step(&mut self, current: &ParamVec, delta: &ParamVec) -> Result<ParamVec, StrategyError>;
}

/// `[strategy.server_optimizer]`: which optimiser and its settings.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "lowercase")]
pub enum ServerOptimizerConfig {
    /// Server momentum (Hsu, Qi and Brown 2019).
    Fedavgm(FedAvgMConfig),
    /// Adam on the server (Reddi et al. 2021).
    Fedadam(FedAdamConfig),
    /// Yogi on the server (Reddi et al. 2021).
    Fedyogi(FedYogiConfig),
    /// Adagrad on the server (Reddi et al. 2021).
    Fedadagrad(FedAdagradConfig),
}

impl ServerOptimizerConfig {
    /// Checks the settings and builds the optimiser.
    pub fn build(&self) -> Result<Box<dyn ServerOptimizer>, StrategyError> {
        Ok(match self {
            Self::Fedavgm(c) => Box::new(FedAvgM::new(c.clone())?),
            Self::Fedadam(c) => Box::new(FedAdam::new(c.clone())?),
            Self::Fedyogi(c) => Box::new(FedYogi::new(c.clone())?),
            Self::Fedadagrad(c) => Box::new(FedAdagrad::new(c.clone())?),
        })
    }
}

/// Refuses a setting outside `range` (exclusive at `hi` when `hi_open`).
pub(crate) fn check(
    name: &str,
    value: f64,
    lo: f64,
    hi: f64,
    hi_open: bool,
) -> Result<(), StrategyError> {
    let ok = value.is_finite() && value >= lo && if hi_open { value < hi } else { value <= hi };
    if ok {
        Ok(())
    } else {
        let close = if hi_open { ')' } else { ']' };
        Err(StrategyError::Settings(format!(
            "{name} = {value} is outside [{lo}, {hi}{close}"
        )))
    }
}

/// Lazily created optimiser state shaped like the model; refuses a model of another size.
pub(crate) fn state_for(
    state: &mut Vec<f32>,
    current: &ParamVec,
    delta: &ParamVec,
) -> Result<(), StrategyError> {
    super::same_schema(current.schema(), delta.schema())?;
    let n = current.values().len();
    if state.is_empty() {
        state.resize(n, 0.0);
    } else if state.len() != n {
        return Err(StrategyError::SchemaMismatch);
    }
    Ok(())
}

/// One step of the adaptive server optimisers of Reddi et al. (FedAdam, FedYogi, FedAdagrad):
/// the first moment `m ← β₁·m + (1 − β₁)·Δ`, the second moment by the optimiser's own rule
/// `second(v, Δ)`, then `x + η·m / (√v + τ)`. The moments are created on the first step.
pub(crate) fn adaptive_step(
    (m, v): (&mut Vec<f32>, &mut Vec<f32>),
    current: &ParamVec,
    delta: &ParamVec,
    (beta1, learning_rate, tau): (f64, f64, f64),
    second: impl Fn(f32, f32) -> f32,
) -> Result<ParamVec, StrategyError> {
    state_for(m, current, delta)?;
    state_for(v, current, delta)?;
    let (b1, lr, tau) = (beta1 as f32, learning_rate as f32, tau as f32);
    let values = m
        .iter_mut()
        .zip(v.iter_mut())
        .zip(current.values().iter().zip(delta.values()))
        .map(|((m, v), (x, d))| {
            *m = b1 * *m + (1.0 - b1) * d;
            *v = second(*v, *d);
            x + lr * *m / (v.sqrt() + tau)
        })
        .collect();
    ParamVec::new(current.schema().clone(), values)
        .map_err(|e| StrategyError::Invalid(e.to_string()))
}
