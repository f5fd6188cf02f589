//! FedAdam (Reddi et al. 2021, "Adaptive Federated Optimization", Algorithm 2): Adam on the
//! server over the rounds' mean updates.
//!
//! `m ← β₁·m + (1 - β₁)·Δ`, `v ← β₂·v + (1 - β₂)·Δ²`, `x ← x + η·m / (√v + τ)`. As in the
//! paper there is no bias correction by default; `τ` bounds the adaptivity.
//! [`FedAdamConfig::bias_correction`] adds Adam's (Kingma and Ba 2015): the `t`-th step uses
//! `η·√(1 − β₂ᵗ)/(1 − β₁ᵗ)`. Flower's `FedAdam` (flwr 1.42) always corrects, with the exponent
//! one higher (its server round + 1), so its steps are 0.74× ours in round 1 and converge to
//! ours within a few rounds.

use serde::{Deserialize, Serialize};

use crate::params::ParamVec;
use crate::strategy::StrategyError;

use super::{ServerOptimizer, adaptive_step, check};

/// Settings of [`FedAdam`].
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct FedAdamConfig {
    /// Server learning rate `η`.
    pub learning_rate: f64,
    /// First-moment decay `β₁`, in `[0, 1)`.
    pub beta1: f64,
    /// Second-moment decay `β₂`, in `[0, 1)`.
    pub beta2: f64,
    /// Adaptivity `τ > 0`: added to `√v`.
    pub tau: f64,
    /// Adam's bias correction of the moments (off, as in the paper's Algorithm 2).
    pub bias_correction: bool,
}

impl Default for FedAdamConfig {
    /// The paper's and Flower's defaults: `η = 0.1`, `β₁ = 0.9`, `β₂ = 0.99`, `τ = 10⁻⁹`.
    fn default() -> Self {
        Self {
            learning_rate: 0.1,
            beta1: 0.9,
            beta2: 0.99,
            tau: 1e-9,
            bias_correction: false,
        }
    }
}

/// Adam on the server.
#[derive(Debug, Clone)]
pub struct FedAdam {
    config: FedAdamConfig,
    m: Vec<f32>,
    v: Vec<f32>,
    /// Steps taken.
    steps: u64,
}

impl FedAdam {
    /// Checks the settings: `0 < η ≤ 100`, `β₁, β₂ ∈ [0, 1)`, `0 < τ ≤ 1`.
    pub fn new(config: FedAdamConfig) -> Result<Self, StrategyError> {
        check(
            "fedadam learning_rate",
            config.learning_rate,
            f64::MIN_POSITIVE,
            100.0,
            false,
        )?;
        check("fedadam beta1", config.beta1, 0.0, 1.0, true)?;
        check("fedadam beta2", config.beta2, 0.0, 1.0, true)?;
        check("fedadam tau", config.tau, f64::MIN_POSITIVE, 1.0, false)?;
        Ok(Self {
            config,
            m: Vec::new(),
            v: Vec::new(),
            steps: 0,
        })
    }
}

impl ServerOptimizer for FedAdam {
    fn name(&self) -> &'static str {
        "fedadam"
    }

    fn step(&mut self, current: &ParamVec, delta: &ParamVec) -> Result<ParamVec, StrategyError> {
        let c = &self.config;
        let b2 = c.beta2 as f32;
        let t = self.steps.saturating_add(1);
        let exponent = i32::try_from(t).unwrap_or(i32::MAX);
        let learning_rate = if c.bias_correction {
            c.learning_rate * (1.0 - c.beta2.powi(exponent)).sqrt() / (1.0 - c.beta1.powi(exponent))
        } else {
            c.learning_rate
        };
        let next = adaptive_step(
            (&mut self.m, &mut self.v),
            current,
            delta,
            (c.beta1, learning_rate, c.tau),
            |v, d| b2 * v + (1.0 - b2) * d * d,
        )?;
        self.steps = t;
        Ok(next)
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
    fn first_step_matches_the_formula() {
        let mut opt = FedAdam::new(FedAdamConfig {
            learning_rate: 0.1,
            beta1: 0.9,
            beta2: 0.99,
            tau: 1e-3,
            bias_correction: false,
        })
        .unwrap();
        let x = opt
            .step(&pv(&[1.0, 1.0, 1.0]), &pv(&[0.5, -0.5, 0.0]))
            .unwrap();
        // m = 0.1·Δ, v = 0.01·Δ², so m/√v = sign(Δ)·0.1·|Δ|/(0.1·|Δ| + τ).
        let want = |d: f32| 1.0 + 0.1 * (0.1 * d) / ((0.01f32 * d * d).sqrt() + 1e-3);
        let got = x.values();
        assert!((got[0] - want(0.5)).abs() < 1e-6, "{got:?}");
        assert!((got[1] - want(-0.5)).abs() < 1e-6, "{got:?}");
        assert_eq!(got[2], 1.0, "no update, no step");
    }

    #[test]
    fn bias_correction_scales_the_second_step_as_adam_does() {
        let config = |bias_correction| FedAdamConfig {
            learning_rate: 0.1,
            beta1: 0.9,
            beta2: 0.99,
            tau: 1e-3,
            bias_correction,
        };
        let (d1, d2) = (0.5f64, -0.2f64);
        let mut plain = FedAdam::new(config(false)).unwrap();
        let mut corrected = FedAdam::new(config(true)).unwrap();
        // Step 1: √(1 − β₂)/(1 − β₁) = 0.1/0.1 = 1, so both agree.
        let p1 = plain.step(&pv(&[0.0]), &pv(&[d1 as f32])).unwrap();
        let c1 = corrected.step(&pv(&[0.0]), &pv(&[d1 as f32])).unwrap();
        assert!((p1.values()[0] - c1.values()[0]).abs() < 1e-7);
        // Step 2 by hand, from the same point.
        let m = 0.9 * (0.1 * d1) + 0.1 * d2;
        let v = 0.99 * (0.01 * d1 * d1) + 0.01 * d2 * d2;
        let direction = m / (v.sqrt() + 1e-3);
        let scale = (1.0f64 - 0.99f64.powi(2)).sqrt() / (1.0 - 0.9f64.powi(2));
        let p2 = plain.step(&pv(&[0.0]), &pv(&[d2 as f32])).unwrap();
        let c2 = corrected.step(&pv(&[0.0]), &pv(&[d2 as f32])).unwrap();
        assert!(
            (f64::from(p2.values()[0]) - 0.1 * direction).abs() < 1e-6,
            "{p2:?}"
        );
        assert!(
            (f64::from(c2.values()[0]) - 0.1 * scale * direction).abs() < 1e-6,
            "{c2:?}"
        );
        assert!(
            (scale - 0.7424).abs() < 1e-3,
            "Adam's factor at t = 2: {scale}"
        );
    }

    #[test]
    fn steps_are_bounded_by_the_learning_rate_and_follow_the_sign() {
        let mut opt = FedAdam::new(FedAdamConfig::default()).unwrap();
        let mut x = pv(&[0.0, 0.0]);
        for _ in 0..20 {
            let next = opt.step(&x, &pv(&[100.0, -1e-4])).unwrap();
            let step: Vec<f32> = next
                .values()
                .iter()
                .zip(x.values())
                .map(|(a, b)| a - b)
                .collect();
            assert!(
                step[0] > 0.0 && step[0] <= 0.1 * 1.0001 / (1.0f32 - 0.99).sqrt(),
                "{step:?}"
            );
            assert!(step[1] < 0.0, "{step:?}");
            x = next;
        }
    }

    #[test]
    fn bad_settings_are_refused() {
        for c in [
            FedAdamConfig {
                learning_rate: -1.0,
                ..Default::default()
            },
            FedAdamConfig {
                beta1: 1.0,
                ..Default::default()
            },
            FedAdamConfig {
                beta2: f64::INFINITY,
                ..Default::default()
            },
            FedAdamConfig {
                tau: 0.0,
                ..Default::default()
            },
        ] {
            assert!(matches!(FedAdam::new(c), Err(StrategyError::Settings(_))));
        }
    }
}
