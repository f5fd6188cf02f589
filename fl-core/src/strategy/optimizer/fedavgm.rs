//! FedAvgM: server momentum (Hsu, Qi and Brown 2019, "Measuring the Effects of Non-Identical
//! Data Distribution for Federated Visual Classification").
//!
//! `v ← β·v + Δ`, `x ← x + η·v`, with `Δ` the round's mean update. With `β = 0` and `η = 1`
//! it is FedAvg.

use serde::{Deserialize, Serialize};

use crate::params::ParamVec;
use crate::strategy::StrategyError;

use super::{ServerOptimizer, check, state_for};

/// Settings of [`FedAvgM`].
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct FedAvgMConfig {
    /// Server learning rate `η`.
    pub learning_rate: f64,
    /// Momentum `β`, in `[0, 1)`.
    pub momentum: f64,
}

impl Default for FedAvgMConfig {
    fn default() -> Self {
        Self {
            learning_rate: 1.0,
            momentum: 0.9,
        }
    }
}

/// Server momentum over the rounds' mean updates.
#[derive(Debug, Clone)]
pub struct FedAvgM {
    config: FedAvgMConfig,
    velocity: Vec<f32>,
}

impl FedAvgM {
    /// Checks the settings: `0 < η ≤ 100`, `0 ≤ β < 1`.
    pub fn new(config: FedAvgMConfig) -> Result<Self, StrategyError> {
        check(
            "fedavgm learning_rate",
            config.learning_rate,
            f64::MIN_POSITIVE,
            100.0,
            false,
        )?;
        check("fedavgm momentum", config.momentum, 0.0, 1.0, true)?;
        Ok(Self {
            config,
            velocity: Vec::new(),
        })
    }
}

impl ServerOptimizer for FedAvgM {
    fn name(&self) -> &'static str {
        "fedavgm"
    }

    fn step(&mut self, current: &ParamVec, delta: &ParamVec) -> Result<ParamVec, StrategyError> {
        state_for(&mut self.velocity, current, delta)?;
        let (beta, lr) = (
            self.config.momentum as f32,
            self.config.learning_rate as f32,
        );
        let values = self
            .velocity
            .iter_mut()
            .zip(current.values().iter().zip(delta.values()))
            .map(|(v, (x, d))| {
                *v = beta * *v + d;
                x + lr * *v
            })
            .collect();
        ParamVec::new(current.schema().clone(), values)
            .map_err(|e| StrategyError::Invalid(e.to_string()))
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use super::*;
    use crate::params::{Schema, TensorSpec};

    fn pv(v: &[f32]) -> ParamVec {
        let schema = Arc::new(Schema::new(vec![TensorSpec::new("w", [v.len()])]).unwrap());
        ParamVec::new(schema, v.to_vec()).unwrap()
    }

    #[test]
    fn momentum_accumulates_the_updates() {
        let mut opt = FedAvgM::new(FedAvgMConfig {
            learning_rate: 1.0,
            momentum: 0.5,
        })
        .unwrap();
        let x1 = opt.step(&pv(&[0.0, 0.0]), &pv(&[1.0, -2.0])).unwrap();
        assert_eq!(x1.values(), &[1.0, -2.0]);
        // v = 0.5·(1, -2) + (1, -2) = (1.5, -3)
        let x2 = opt.step(&x1, &pv(&[1.0, -2.0])).unwrap();
        assert_eq!(x2.values(), &[2.5, -5.0]);
    }

    #[test]
    fn without_momentum_it_is_fedavg() {
        let mut opt = FedAvgM::new(FedAvgMConfig {
            learning_rate: 1.0,
            momentum: 0.0,
        })
        .unwrap();
        let x = opt.step(&pv(&[1.0, 1.0]), &pv(&[0.25, -0.5])).unwrap();
        assert_eq!(x.values(), &[1.25, 0.5]);
    }

    #[test]
    fn bad_settings_and_shapes_are_refused() {
        for (lr, m) in [(0.0, 0.5), (1.0, 1.0), (f64::NAN, 0.5), (1.0, -0.1)] {
            let e = FedAvgM::new(FedAvgMConfig {
                learning_rate: lr,
                momentum: m,
            })
            .unwrap_err();
            assert!(matches!(e, StrategyError::Settings(_)), "{e}");
        }
        let mut opt = FedAvgM::new(FedAvgMConfig::default()).unwrap();
        opt.step(&pv(&[0.0, 0.0]), &pv(&[1.0, 1.0])).unwrap();
        assert_eq!(
            opt.step(&pv(&[0.0]), &pv(&[1.0])).unwrap_err(),
            StrategyError::SchemaMismatch
        );
        assert_eq!(
            opt.step(&pv(&[0.0, 0.0]), &pv(&[1.0])).unwrap_err(),
            StrategyError::SchemaMismatch
        );
    }
}
