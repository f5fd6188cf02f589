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
    use crate::strategy::robust::norm;
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
    fn a_difference_of_norm_exactly_tau_is_kept_and_one_just_above_is_scaled_to_tau() {
        // Around (1, 1) with τ = 5: (4, 5) differs by (3, 4), of norm 5 = τ, and is kept;
        // (-5, -7) differs by (-6, -8), of norm 10, and is scaled by 5/10 to (-3, -4). The
        // step is ((3, 4) + (-3, -4))/2 = 0: the two cancel only if (3, 4) is kept whole and
        // (-6, -8) is brought to exactly τ.
        let start = [1.0f32, 1.0];
        assert_eq!(
            centered_clip(&[vec![4.0, 5.0]], &start, 5.0, 1),
            vec![4.0, 5.0]
        );
        assert_eq!(
            centered_clip(&[vec![4.0, 5.0], vec![-5.0, -7.0]], &start, 5.0, 1),
            vec![1.0, 1.0]
        );
        // τ = 4.99, 0.01 below the norm of (3, 4) around 0: scaled by 4.99/5 = 0.998 to
        // (2.994, 3.992), of norm τ.
        let v = centered_clip(&[vec![3.0, 4.0]], &[0.0, 0.0], 4.99, 1);
        assert!(
            (v[0] - 2.994).abs() < 1e-6 && (v[1] - 3.992).abs() < 1e-6,
            "{v:?}"
        );
        assert!((norm(&v) - 4.99).abs() < 1e-6, "{v:?}");
    }

    #[test]
    fn identical_members_are_reached_tau_at_a_time_and_then_returned() {
        // Three copies of (3, 4) around 0 with τ = 2: every member's difference is the same,
        // so each iteration moves by it clipped to 2. (3, 4) is 5 away: to (1.2, 1.6), then
        // (1.8, 2.4) is 3 away: to (2.4, 3.2), then (0.6, 0.8) is 1 <= τ away: onto (3, 4).
        let rows = vec![vec![3.0f32, 4.0]; 3];
        let close =
            |v: &[f32], e: [f32; 2]| (v[0] - e[0]).abs() < 1e-6 && (v[1] - e[1]).abs() < 1e-6;
        let one = centered_clip(&rows, &[0.0, 0.0], 2.0, 1);
        assert!(close(&one, [1.2, 1.6]), "{one:?}");
        let two = centered_clip(&rows, &[0.0, 0.0], 2.0, 2);
        assert!(close(&two, [2.4, 3.2]), "{two:?}");
        let three = centered_clip(&rows, &[0.0, 0.0], 2.0, 3);
        assert!(close(&three, [3.0, 4.0]), "{three:?}");
        // Within τ of the centre (0 in the first round), identical members come back as they
        // are, and with β = 0 the centre becomes them: the next round's differences are 0.
        let mut rule = CenteredClipping::new(CenteredClippingConfig {
            tau: 1.0,
            iterations: 1,
            momentum: 0.0,
        });
        // (0.5, -0.25) is √0.3125 ≈ 0.56 from 0.
        let same = vec![vec![0.5f32, -0.25]; 4];
        assert_eq!(rule.aggregate(&same).unwrap(), vec![0.5, -0.25]);
        assert_eq!(rule.center().unwrap(), &[0.5, -0.25]);
        assert_eq!(rule.aggregate(&same).unwrap(), vec![0.5, -0.25]);
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
