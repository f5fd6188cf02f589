//! Geometric median by the smoothed Weiszfeld algorithm, as in RFA (Pillutla, Kakade and
//! Harchaoui 2022, "Robust Aggregation for Federated Learning"): the point minimising the sum
//! of Euclidean distances to the members' updates, approximated by at most `max_iterations`
//! reweighted means with weights `1 / max(ν, ‖v - xᵢ‖)`. Robust to fewer than half of the
//! members being arbitrary. Unweighted: every member counts as `1/n` (RFA's αᵢ uniform),
//! whatever example count it reports.

use serde::{Deserialize, Serialize};

use super::StrategyError;
use super::robust::{RobustRule, mean_of, sq_dist};

/// `[strategy.geometric_median]`: the Weiszfeld iteration's budget and smoothing.
///
/// ```toml
/// [strategy]
/// kind = "geometric_median"
/// [strategy.geometric_median]
/// max_iterations = 10
/// smoothing = 1e-6
/// tolerance = 1e-6
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct GeometricMedianConfig {
    /// The most Weiszfeld steps per round (1 to 1000).
    pub max_iterations: usize,
    /// ν > 0: distances below it count as ν (keeps the weights finite).
    pub smoothing: f64,
    /// Stops once the objective improves by less than this fraction.
    pub tolerance: f64,
}

impl Default for GeometricMedianConfig {
    fn default() -> Self {
        Self {
            max_iterations: 10,
            smoothing: 1e-6,
            tolerance: 1e-6,
        }
    }
}

impl GeometricMedianConfig {
    /// Refuses a budget outside 1..=1000 or a smoothing or tolerance that is not positive.
    pub fn check(&self) -> Result<(), StrategyError> {
        let valid = (1..=1000).contains(&self.max_iterations)
            && self.smoothing.is_finite()
            && self.smoothing > 0.0
            && self.tolerance.is_finite()
            && self.tolerance >= 0.0;
        if !valid {
            return Err(StrategyError::Settings(format!(
                "[strategy.geometric_median] needs 1 <= max_iterations <= 1000, smoothing > 0 and \
                 tolerance >= 0 (got {self:?})"
            )));
        }
        Ok(())
    }
}

/// The geometric-median rule.
#[derive(Debug, Clone)]
pub struct GeometricMedian {
    config: GeometricMedianConfig,
}

impl GeometricMedian {
    /// The rule with `config`'s budget.
    pub fn new(config: GeometricMedianConfig) -> Self {
        Self { config }
    }
}

/// The smoothed Weiszfeld approximation of `rows`' geometric median, starting from their mean,
/// and the number of steps taken.
pub fn geometric_median(
    rows: &[Vec<f32>],
    config: &GeometricMedianConfig,
) -> Result<(Vec<f32>, usize), StrategyError> {
    config.check()?;
    if rows.is_empty() {
        return Err(StrategyError::NoResults);
    }
    let dim = rows[0].len();
    let nu = config.smoothing;
    let objective = |v: &[f32]| -> f64 {
        rows.iter()
            .map(|r| sq_dist(v, r).sqrt().max(nu))
            .sum::<f64>()
    };
    let mut v = mean_of(dim, rows.iter().map(Vec::as_slice));
    let mut obj = objective(&v);
    let mut steps = 0;
    while steps < config.max_iterations {
        steps += 1;
        let weights: Vec<f64> = rows
            .iter()
            .map(|r| 1.0 / sq_dist(&v, r).sqrt().max(nu))
            .collect();
        let total: f64 = weights.iter().sum();
        let mut next = vec![0f64; dim];
        for (r, w) in rows.iter().zip(&weights) {
            next.iter_mut()
                .zip(r)
                .for_each(|(a, x)| *a += w * f64::from(*x));
        }
        v = next.into_iter().map(|a| (a / total) as f32).collect();
        let new_obj = objective(&v);
        let improved = obj - new_obj;
        obj = new_obj;
        if improved <= config.tolerance * new_obj {
            break;
        }
    }
    Ok((v, steps))
}

impl RobustRule for GeometricMedian {
    fn name(&self) -> &'static str {
        "geometric_median"
    }

    fn min_inputs(&self) -> usize {
        1
    }

    fn aggregate(&mut self, deltas: &[Vec<f32>]) -> Result<Vec<f32>, StrategyError> {
        geometric_median(deltas, &self.config).map(|(v, _)| v)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::strategy::robust::tests::refuses_hostile_input;

    #[test]
    fn on_a_line_it_is_the_median_and_the_budget_bounds_the_steps() {
        let rows = vec![vec![0.0f32], vec![1.0], vec![10.0]];
        let long = GeometricMedianConfig {
            max_iterations: 200,
            tolerance: 0.0,
            ..Default::default()
        };
        let (v, _) = geometric_median(&rows, &long).unwrap();
        assert!((v[0] - 1.0).abs() < 1e-3, "{v:?}");
        let short = GeometricMedianConfig {
            max_iterations: 2,
            tolerance: 0.0,
            ..Default::default()
        };
        assert_eq!(geometric_median(&rows, &short).unwrap().1, 2);
        // Symmetric points: the mean is already the median, one step suffices.
        let sym = vec![
            vec![-1.0f32, 0.0],
            vec![1.0, 0.0],
            vec![0.0, 1.0],
            vec![0.0, -1.0],
        ];
        let (v, steps) = geometric_median(&sym, &GeometricMedianConfig::default()).unwrap();
        assert_eq!((v, steps), (vec![0.0, 0.0], 1));
    }

    #[test]
    fn a_minority_of_far_points_moves_it_little() {
        let mut rows: Vec<Vec<f32>> = (0..6).map(|i| vec![i as f32 * 0.1, 0.0]).collect();
        rows.push(vec![1e6, -1e6]);
        rows.push(vec![1e6, 1e6]);
        let (v, _) = geometric_median(
            &rows,
            &GeometricMedianConfig {
                max_iterations: 100,
                ..Default::default()
            },
        )
        .unwrap();
        assert!(v[0].abs() < 1.0 && v[1].abs() < 1.0, "{v:?}");
    }

    #[test]
    fn the_corners_of_a_square_with_duplicates_give_its_centre() {
        // The square (1, 2), (3, 2), (1, 4), (3, 4), opposite corners (1, 2) and (3, 4) three
        // times each: symmetric about (2, 3). The mean is ((3·1 + 3·3 + 3 + 1)/8,
        // (3·2 + 3·4 + 2 + 4)/8) = (2, 3); every corner is √2 from it, so the weights are
        // equal and the Weiszfeld step stays there: one step, no improvement.
        let mut rows = vec![vec![1.0f32, 2.0]; 3];
        rows.extend(vec![vec![3.0f32, 4.0]; 3]);
        rows.push(vec![3.0, 2.0]);
        rows.push(vec![1.0, 4.0]);
        let (v, steps) = geometric_median(&rows, &GeometricMedianConfig::default()).unwrap();
        assert!(
            (v[0] - 2.0).abs() < 1e-6 && (v[1] - 3.0).abs() < 1e-6,
            "{v:?}"
        );
        assert_eq!(steps, 1);
    }

    #[test]
    fn a_majority_of_identical_points_is_the_geometric_median() {
        // (1, 1) three times, (5, 1) and (1, 4): the unit vectors from (1, 1) to the other two
        // sum to (1, 0) + (0, 1), of norm √2 < 3 copies, so (1, 1) itself is the median. The
        // start, the mean (9/5, 8/5), is not: the first step weighs the copies by 1/1, (5, 1)
        // by 1/√10.6 and (1, 4) by 1/√6.4, to about (1.33183, 1.32029), and each later step
        // shrinks the distance by about √2/3. Near (1, 1) the smoothing ν = 1e-6 caps the
        // copies' weight at 1/ν, leaving ((4, 0)/4 + (0, 3)/3)/(3/ν) ≈ 3.3e-7 per coordinate.
        let mut rows = vec![vec![1.0f32, 1.0]; 3];
        rows.push(vec![5.0, 1.0]);
        rows.push(vec![1.0, 4.0]);
        let one = GeometricMedianConfig {
            max_iterations: 1,
            tolerance: 0.0,
            ..Default::default()
        };
        let (v, _) = geometric_median(&rows, &one).unwrap();
        let (a, b) = (1.0 / 10.6f64.sqrt(), 1.0 / 6.4f64.sqrt());
        let total = 3.0 + a + b;
        let first = [(3.0 + 5.0 * a + b) / total, (3.0 + a + 4.0 * b) / total];
        assert!(
            (f64::from(v[0]) - first[0]).abs() < 1e-6 && (f64::from(v[1]) - first[1]).abs() < 1e-6,
            "{v:?} after one step, by hand {first:?}"
        );
        let long = GeometricMedianConfig {
            max_iterations: 100,
            tolerance: 0.0,
            ..Default::default()
        };
        let (v, _) = geometric_median(&rows, &long).unwrap();
        assert!(
            (v[0] - 1.0).abs() < 1e-6 && (v[1] - 1.0).abs() < 1e-6,
            "{v:?}"
        );
    }

    #[test]
    fn two_equally_heavy_points_leave_it_at_their_midpoint() {
        // (0, 0) and (4, 2) twice each: every point of the segment between them is a
        // geometric median (a tie). The start, the mean (2, 1), is √5 from all four, so the
        // weights are equal and the step stays at (2, 1) exactly, in one step.
        let rows = vec![
            vec![0.0f32, 0.0],
            vec![4.0, 2.0],
            vec![0.0, 0.0],
            vec![4.0, 2.0],
        ];
        let (v, steps) = geometric_median(&rows, &GeometricMedianConfig::default()).unwrap();
        assert_eq!((v, steps), (vec![2.0, 1.0], 1));
    }

    #[test]
    fn bad_settings_and_hostile_input_are_refused() {
        for c in [
            GeometricMedianConfig {
                max_iterations: 0,
                ..Default::default()
            },
            GeometricMedianConfig {
                smoothing: 0.0,
                ..Default::default()
            },
            GeometricMedianConfig {
                tolerance: f64::NAN,
                ..Default::default()
            },
        ] {
            assert!(matches!(c.check(), Err(StrategyError::Settings(_))));
        }
        refuses_hostile_input(Box::new(GeometricMedian::new(Default::default())));
    }
}
