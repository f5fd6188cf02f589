//! FedYogi (Reddi et al. 2021, "Adaptive Federated Optimization", Algorithm 2): Yogi on the
//! server over the rounds' mean updates.
//!
//! `m ← β₁·m + (1 - β₁)·Δ`, `v ← v - (1 - β₂)·Δ²·sign(v - Δ²)`, `x ← x + η·m / (√v + τ)`.
//! Unlike Adam's, whose `v` decays by the factor `β₂` every round, Yogi's second moment moves
//! additively, by `(1 - β₂)·Δ²` towards `Δ²`: when the updates turn small after large ones, `v`
//! falls slowly and the effective step `η/(√v + τ)` grows gently instead of jumping back up
//! (Zaheer et al. 2018). `m` and `v` start at zero (as in Flower's `FedYogi`; the paper allows any
//! `v ≥ τ²`, which with the default τ differs by 10⁻⁶), so the first step is FedAdam's.
//! No bias correction, as in the paper.

use serde::{Deserialize, Serialize};

use crate::params::ParamVec;
use crate::strategy::StrategyError;

use super::{ServerOptimizer, adaptive_step, check};

/// Settings of [`FedYogi`].
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct FedYogiConfig {
    /// Server learning rate `η`.
    pub learning_rate: f64,
    /// First-moment decay `β₁`, in `[0, 1)`.
    pub beta1: f64,
    /// Second-moment rate `β₂`, in `[0, 1)`.
    pub beta2: f64,
    /// Adaptivity `τ > 0`: added to `√v`.
    pub tau: f64,
}

impl Default for FedYogiConfig {
    /// The paper's `β₁ = 0.9`, `β₂ = 0.99`, and Flower's `η = 0.01`, `τ = 10⁻³` (the paper
    /// tunes `η` and `τ` per task; these are in its grid).
    fn default() -> Self {
        Self {
            learning_rate: 0.01,
            beta1: 0.9,
            beta2: 0.99,
            tau: 1e-3,
        }
    }
}

/// Yogi on the server.
#[derive(Debug, Clone)]
pub struct FedYogi {
    config: FedYogiConfig,
    m: Vec<f32>,
    v: Vec<f32>,
}

impl FedYogi {
    /// Checks the settings: `0 < η ≤ 100`, `β₁, β₂ ∈ [0, 1)`, `0 < τ ≤ 1`.
    pub fn new(config: FedYogiConfig) -> Result<Self, StrategyError> {
        check(
            "fedyogi learning_rate",
            config.learning_rate,
            f64::MIN_POSITIVE,
            100.0,
            false,
        )?;
        check("fedyogi beta1", config.beta1, 0.0, 1.0, true)?;
        check("fedyogi beta2", config.beta2, 0.0, 1.0, true)?;
        check("fedyogi tau", config.tau, f64::MIN_POSITIVE, 1.0, false)?;
        Ok(Self {
            config,
            m: Vec::new(),
            v: Vec::new(),
        })
    }
}

impl ServerOptimizer for FedYogi {
    fn name(&self) -> &'static str {
        "fedyogi"
    }

    fn step(&mut self, current: &ParamVec, delta: &ParamVec) -> Result<ParamVec, StrategyError> {
        let c = &self.config;
        let b2 = c.beta2 as f32;
        adaptive_step(
            (&mut self.m, &mut self.v),
            current,
            delta,
            (c.beta1, c.learning_rate, c.tau),
            |v, d| {
                let d2 = d * d;
                // sign(0) = 0: no change when v already equals Δ².
                let sign = match (v - d2).partial_cmp(&0.0) {
                    Some(std::cmp::Ordering::Greater) => 1.0,
                    Some(std::cmp::Ordering::Less) => -1.0,
                    _ => 0.0,
                };
                v - (1.0 - b2) * d2 * sign
            },
        )
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use super::*;
    use crate::params::{Schema, TensorSpec};
    use crate::strategy::{FedAdam, FedAdamConfig};

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
        let mut opt = FedYogi::new(FedYogiConfig {
            learning_rate: 0.1,
            beta1: 0.9,
            beta2: 0.99,
            tau: 1e-3,
        })
        .unwrap();
        // Round 1, Δ = (0.5, -0.5, 0): m = 0.1·Δ = (0.05, -0.05, 0);
        // v = 0 - 0.01·Δ²·sign(0 - Δ²) = 0.01·Δ² = (0.0025, 0.0025, 0), √v = (0.05, 0.05, 0);
        // x = 1 + 0.1·m/(√v + τ) = 1 ± 0.1·0.05/0.051 = 1 ± 0.0980392...
        let x1 = opt
            .step(&pv(&[1.0, 1.0, 1.0]), &pv(&[0.5, -0.5, 0.0]))
            .unwrap();
        close(x1.values(), &[1.098_039_2, 0.901_960_8, 1.0]);
        // Round 2, Δ = (0.1, 2.0, 0): m = 0.9·m + 0.1·Δ = (0.055, 0.155, 0);
        // coordinate 0: v = 0.0025 > Δ² = 0.01? no: 0.0025 < 0.01, so v += 0.01·0.01 = 0.0026;
        // coordinate 1: v = 0.0025 < 4, so v += 0.01·4 = 0.0425.
        // x₀ = 1.0980392 + 0.1·0.055/(√0.0026 + 0.001) = 1.0980392 + 0.1058...
        // x₁ = 0.9019608 + 0.1·0.155/(√0.0425 + 0.001)
        let x2 = opt.step(&x1, &pv(&[0.1, 2.0, 0.0])).unwrap();
        let want0 = 1.098_039_2 + 0.1 * 0.055 / (0.0026f64.sqrt() + 1e-3);
        let want1 = 0.901_960_8 + 0.1 * 0.155 / (0.0425f64.sqrt() + 1e-3);
        close(x2.values(), &[want0, want1, 1.0]);
        // Round 3, Δ = (0.01, 0, 0): Δ² = 1e-4 < v = 0.0026, so v shrinks by 0.01·1e-4 only,
        // where Adam's v would fall to 0.99·0.0026 + 0.01·1e-4.
        let x3 = opt.step(&x2, &pv(&[0.01, 0.0, 0.0])).unwrap();
        let m0 = 0.9 * 0.055 + 0.1 * 0.01;
        let v0: f64 = 0.0026 - 0.01 * 1e-4;
        let want0 = want0 + 0.1 * m0 / (v0.sqrt() + 1e-3);
        let m1 = 0.9 * 0.155;
        let want1 = want1 + 0.1 * m1 / (0.0425f64.sqrt() + 1e-3);
        close(x3.values(), &[want0, want1, 1.0]);
    }

    #[test]
    fn from_zero_state_the_first_step_is_fedadam_s() {
        let (lr, b1, b2, tau) = (0.05, 0.8, 0.95, 1e-2);
        let mut yogi = FedYogi::new(FedYogiConfig {
            learning_rate: lr,
            beta1: b1,
            beta2: b2,
            tau,
        })
        .unwrap();
        let mut adam = FedAdam::new(FedAdamConfig {
            learning_rate: lr,
            beta1: b1,
            beta2: b2,
            tau,
            bias_correction: false,
        })
        .unwrap();
        let (x, d) = (pv(&[0.3, -2.0, 7.0]), pv(&[1.5, -0.25, 1e-3]));
        assert_eq!(
            yogi.step(&x, &d).unwrap().values(),
            adam.step(&x, &d).unwrap().values()
        );
    }

    #[test]
    fn bad_settings_and_shapes_are_refused() {
        for c in [
            FedYogiConfig {
                learning_rate: 0.0,
                ..Default::default()
            },
            FedYogiConfig {
                learning_rate: f64::NAN,
                ..Default::default()
            },
            FedYogiConfig {
                beta1: 1.0,
                ..Default::default()
            },
            FedYogiConfig {
                beta2: -0.1,
                ..Default::default()
            },
            FedYogiConfig {
                tau: 0.0,
                ..Default::default()
            },
            FedYogiConfig {
                tau: 2.0,
                ..Default::default()
            },
        ] {
            let e = FedYogi::new(c).unwrap_err();
            assert!(matches!(e, StrategyError::Settings(_)), "{e}");
        }
        let e = FedYogi::new(FedYogiConfig {
            beta2: 1.5,
            ..Default::default()
        })
        .unwrap_err();
        assert!(e.to_string().contains("fedyogi beta2"), "{e}");
        let mut opt = FedYogi::new(FedYogiConfig::default()).unwrap();
        opt.step(&pv(&[0.0, 0.0]), &pv(&[1.0, 1.0])).unwrap();
        assert_eq!(
            opt.step(&pv(&[0.0]), &pv(&[1.0])).unwrap_err(),
            StrategyError::SchemaMismatch
        );
    }
}
