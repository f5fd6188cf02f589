//! Centered clipping (Karimireddy, He and Jaggi 2021, "Learning from History for Byzantine
//! Robust Optimization"; used with bucketing in their ICLR 2022 paper on non-IID data): starting
//! from a centre `v`, `iterations` times `v ← v + (1/n) Σ clip(xᵢ - v, τ)`, where `clip` scales
//! a vector to at most `τ` in norm. One member can then move the aggregate by at most `τ/n` per
//! iteration, however large its update.
//!
//! The centre is the rule's memory. In the paper workers send momentum and the server clips
//! around the previous aggregate. In federated rounds the server sees each member's multi-step
//! update, so daofl keeps the **server momentum** `m ← β·m + (1 - β)·v` of the aggregates and
//! clips the next round around `m` (β = 0 is the paper's "previous aggregate"; the first round
//! clips around zero, the paper's `v₀ = 0`). The model steps by the clipped aggregate `v`.
//! Unweighted: the example counts members report are never read.

use serde::{Deserialize, Serialize};

use super::StrategyError;
use super::norm_bounding::clip_to;
use super::robust::RobustRule;

/// `[strategy.centered_clipping]`: the clipping radius, iterations and momentum.
///
/// ```toml
/// [strategy]
/// kind = "centered_clipping"
/// [strategy.centered_clipping]
/// tau = 1.0        # radius, in the units of an update (difference from the global model)
/// iterations = 1   # L (1 to 100)
/// momentum = 0.9   # β of the clipping centre, in [0, 1)
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CenteredClippingConfig {
    /// τ > 0: the clipping radius around the centre.
    pub tau: f64,
    /// L: clipping iterations per round (1 to 100).
    #[serde(default = "one")]
    pub iterations: usize,
    /// β in `[0, 1)`: how slowly the clipping centre follows the aggregates.
    #[serde(default = "point_nine")]
    pub momentum: f64,
}

fn one() -> usize {
    1
}

fn point_nine() -> f64 {
    0.9
}

impl CenteredClippingConfig {
    /// Refuses τ not positive, L outside 1..=100, β outside `[0, 1)`.
    pub fn check(&self) -> Result<(), StrategyError> {
        let valid = self.tau.is_finite()
            && self.tau > 0.0
            && (1..=100).contains(&self.iterations)
            && (0.0..1.0).contains(&self.momentum);
        if !valid {
            return Err(StrategyError::Settings(format!(
                "[strategy.centered_clipping] needs tau > 0, 1 <= iterations <= 100 and \
                 0 <= momentum < 1 (got {self:?})"
            )));
        }
        Ok(())
    }
}

/// The centered-clipping rule and its momentum (the clipping centre).
#[derive(Debug, Clone)]
pub struct CenteredClipping {
    config: CenteredClippingConfig,
    center: Option<Vec<f32>>,
}

impl CenteredClipping {
    /// The rule with `config`'s radius, iterations and momentum, centred at zero.
    pub fn new(config: CenteredClippingConfig) -> Self {
        Self {
            config,
            center: None,
        }
    }

    /// The centre the next round clips around (none before the first round).
    pub fn center(&self) -> Option<&[f32]> {
        self.center.as_deref()
    }
}

/// `iterations` steps of centered clipping of `rows` around `start`.
pub fn centered_clip(rows: &[Vec<f32>], start: &[f32], tau: f64, iterations: usize) -> Vec<f32> {
    let n = rows.len().max(1) as f64;
    let mut v: Vec<f64> = start.iter().map(|x| f64::from(*x)).collect();
    for _ in 0..iterations {
        let mut step = vec![0f64; v.len()];
        for r in rows {
            let diff: Vec<f32> = r
                .iter()
                .zip(&v)
                .map(|(x, c)| (f64::from(*x) - c) as f32)
                .collect();
            let clipped = clip_to(&diff, tau);
            step.iter_mut()
                .zip(&clipped)
                .for_each(|(s, c)| *s += f64::from(*c));
        }
        v.iter_mut().zip(&step).for_each(|(a, s)| *a += s / n);
    }
    v.into_iter().map(|x| x as f32).collect()
}

impl RobustRule for CenteredClipping {
    fn name(&self) -> &'static str {
        "centered_clipping"
    }

    fn min_inputs(&self) -> usize {
        1
    }

    fn aggregate(&mut self, deltas: &[Vec<f32>]) -> Result<Vec<f32>, StrategyError> {
        self.config.check()?;
        let dim = deltas[0].len();
        let center = match self.center.take() {
            Some(c) if c.len() == dim => c,
            _ => vec![0.0; dim],
        };
        let v = centered_clip(deltas, &center, self.config.tau, self.config.iterations);
        let b = self.config.momentum as f32;
        self.center = Some(
            center
                .iter()
                .zip(&v)
                .map(|(m, x)| b * m + (1.0 - b) * x)
                .collect(),
        );
        Ok(v)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::strategy::robust::tests::refuses_hostile_input;

    #[test]
    fn one_iteration_by_hand_and_the_centre_moves_by_momentum() {
        let mut rule = CenteredClipping::new(CenteredClippingConfig {
            tau: 1.0,
            iterations: 1,
            momentum: 0.5,
        });
        // Around 0: (0.5, 0) stays, (30, 40) is clipped to (0.6, 0.8); the mean is (0.55, 0.4).
        let rows = vec![vec![0.5, 0.0], vec![30.0, 40.0]];
        assert_eq!(rule.aggregate(&rows).unwrap(), vec![0.55, 0.4]);
        assert_eq!(rule.center().unwrap(), &[0.275, 0.2]);
        // Next round around (0.275, 0.2): (1.275, 0.2) differs by (1, 0), within τ.
        let next = rule.aggregate(&[vec![1.275, 0.2]]).unwrap();
        assert!(
            (next[0] - 1.275).abs() < 1e-6 && (next[1] - 0.2).abs() < 1e-6,
            "{next:?}"
        );
    }

    #[test]
    fn more_iterations_approach_the_honest_cluster() {
        let mut rows = vec![vec![1.0f32]; 4];
        rows.push(vec![1000.0]);
        let one = centered_clip(&rows, &[0.0], 1.0, 1)[0];
        let many = centered_clip(&rows, &[0.0], 1.0, 20)[0];
        assert!((one - 1.0).abs() < 1e-6, "{one}"); // 4·1 + 1·1, over 5
        // The outlier pulls by at most τ/n = 0.2 per iteration; the honest pull balances it.
        assert!(many < 1.3 && many > 1.0, "{many}");
    }

    #[test]
    fn bad_settings_and_hostile_input_are_refused() {
        let ok = CenteredClippingConfig {
            tau: 1.0,
            iterations: 1,
            momentum: 0.9,
        };
        for c in [
            CenteredClippingConfig { tau: 0.0, ..ok },
            CenteredClippingConfig {
                iterations: 0,
                ..ok
            },
            CenteredClippingConfig {
                momentum: 1.0,
                ..ok
            },
        ] {
            assert!(matches!(c.check(), Err(StrategyError::Settings(_))));
        }
        refuses_hostile_input(Box::new(CenteredClipping::new(ok)));
    }
}
