//! FedAdagrad (Reddi et al. 2021, "Adaptive Federated Optimization", Algorithm 2): Adagrad on
//! the server over the rounds' mean updates.
//!
//! `m ← β₁·m + (1 - β₁)·Δ`, `v ← v + Δ²`, `x ← x + η·m / (√v + τ)`. The accumulated `v`
//! never shrinks, so each coordinate's steps get smaller the more it has moved: suited to
//! sparse updates (a large embedding table of which each round touches a few rows), too
//! cautious for long runs of dense ones. `m` and `v` start at zero, as in Flower's
//! `FedAdagrad` (the paper allows any `v ≥ τ²`).

use serde::{Deserialize, Serialize};

use crate::params::ParamVec;
use crate::strategy::StrategyError;

use super::{ServerOptimizer, adaptive_step, check};

/// Settings of [`FedAdagrad`].
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct FedAdagradConfig {
    /// Server learning rate `η`.
    pub learning_rate: f64,
    /// Momentum `β₁`, in `[0, 1)`; 0 is Adagrad without momentum (Flower's `FedAdagrad`).
    pub beta1: f64,
    /// Adaptivity `τ > 0`: added to `√v`.
    pub tau: f64,
}

impl Default for FedAdagradConfig {
    /// The paper's momentum `β₁ = 0.9` (Algorithm 2), and Flower's `η = 0.1`, `τ = 10⁻³` (the
    /// paper tunes `η` and `τ` per task; these are in its grid).
    fn default() -> Self {
        Self {
            learning_rate: 0.1,
            beta1: 0.9,
            tau: 1e-3,
        }
    }
}

/// Adagrad on the server.
#[derive(Debug, Clone)]
pub struct FedAdagrad {
    config: FedAdagradConfig,
    m: Vec<f32>,
    v: Vec<f32>,
}

impl FedAdagrad {
    /// Checks the settings: `0 < η ≤ 100`, `β₁ ∈ [0, 1)`, `0 < τ ≤ 1`.
    pub fn new(config: FedAdagradConfig) -> Result<Self, StrategyError> {
        check(
            "fedadagrad learning_rate",
            config.learning_rate,
            f64::MIN_POSITIVE,
            100.0,
            false,
        )?;
        check("fedadagrad beta1", config.beta1, 0.0, 1.0, true)?;
        check("fedadagrad tau", config.tau, f64::MIN_POSITIVE, 1.0, false)?;
        Ok(Self {
            config,
            m: Vec::new(),
            v: Vec::new(),
        })
    }
}

impl ServerOptimizer for FedAdagrad {
    fn name(&self) -> &'static str {
        "fedadagrad"
    }

    fn step(&mut self, current: &ParamVec, delta: &ParamVec) -> Result<ParamVec, StrategyError> {
        let c = &self.config;
        adaptive_step(
            (&mut self.m, &mut self.v),
            current,
            delta,
            (c.beta1, c.learning_rate, c.tau),
            |v, d| v + d * d,
        )
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

    fn close(got: &[f32], want: &[f64]) {
        for (g, w) in got.iter().zip(want) {
            assert!((f64::from(*g) - w).abs() < 1e-5, "{got:?} vs {want:?}");
        }
    }

    #[test]
    fn first_two_steps_match_the_formula() {
        let mut opt = FedAdagrad::new(FedAdagradConfig {
            learning_rate: 0.1,
            beta1: 0.9,
            tau: 1e-3,
        })
        .unwrap();
        // Round 1, Δ = (0.5, -2, 0): m = 0.1·Δ = (0.05, -0.2, 0), v = Δ² = (0.25, 4, 0);
        // x = 1 + 0.1·m/(√v + τ) = (1 + 0.005/0.501, 1 - 0.02/2.001, 1).
        let x1 = opt
            .step(&pv(&[1.0, 1.0, 1.0]), &pv(&[0.5, -2.0, 0.0]))
            .unwrap();
        let w1 = [1.0 + 0.005 / 0.501, 1.0 - 0.02 / 2.001, 1.0];
        close(x1.values(), &w1);
        // Round 2, Δ = (0.5, 2, 0): m = 0.9·m + 0.1·Δ = (0.095, 0.02, 0);
        // v = (0.5, 8, 0).
        let x2 = opt.step(&x1, &pv(&[0.5, 2.0, 0.0])).unwrap();
        let w2 = [
            w1[0] + 0.1 * 0.095 / (0.5f64.sqrt() + 1e-3),
            w1[1] + 0.1 * 0.02 / (8f64.sqrt() + 1e-3),
            1.0,
        ];
        close(x2.values(), &w2);
    }

    #[test]
    fn without_momentum_steps_shrink_as_updates_accumulate() {
        let mut opt = FedAdagrad::new(FedAdagradConfig {
            learning_rate: 1.0,
            beta1: 0.0,
            tau: 1e-3,
        })
        .unwrap();
        // Δ = 1 every round: after k rounds v = k, the step is 1/(√k + τ).
        let mut x = pv(&[0.0]);
        for k in 1..=4u32 {
            let next = opt.step(&x, &pv(&[1.0])).unwrap();
            let step = f64::from(next.values()[0] - x.values()[0]);
            let want = 1.0 / (f64::from(k).sqrt() + 1e-3);
            assert!((step - want).abs() < 1e-5, "round {k}: {step} vs {want}");
            x = next;
        }
    }

    #[test]
    fn bad_settings_and_shapes_are_refused() {
        for c in [
            FedAdagradConfig {
                learning_rate: -0.1,
                ..Default::default()
            },
            FedAdagradConfig {
                learning_rate: f64::INFINITY,
                ..Default::default()
            },
            FedAdagradConfig {
                beta1: 1.0,
                ..Default::default()
            },
            FedAdagradConfig {
                tau: 0.0,
                ..Default::default()
            },
            FedAdagradConfig {
                tau: f64::NAN,
                ..Default::default()
            },
        ] {
            let e = FedAdagrad::new(c).unwrap_err();
            assert!(matches!(e, StrategyError::Settings(_)), "{e}");
        }
        let mut opt = FedAdagrad::new(FedAdagradConfig::default()).unwrap();
        opt.step(&pv(&[0.0, 0.0]), &pv(&[1.0, 1.0])).unwrap();
        assert_eq!(
            opt.step(&pv(&[0.0, 0.0, 0.0]), &pv(&[1.0, 1.0, 1.0]))
                .unwrap_err(),
            StrategyError::SchemaMismatch
        );
    }
}
