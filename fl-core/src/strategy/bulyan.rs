//! Bulyan (El Mhamdi, Guerraoui and Rouault 2018, "The Hidden Vulnerability of Distributed
//! Learning in Byzantium"): Krum picks `θ = n - 2f` updates one at a time (each pick removed
//! before the next), then each coordinate is the mean of the `β = θ - 2f` picked values closest
//! to their median. Needs `n >= 4f + 3`; where Flower's `Bulyan` then skips the round, daofl
//! refuses the configuration at load time, or aborts the round with
//! [`StrategyError::TooFewMembers`] when members drop out.
//!
//! Unweighted: the example counts members report are never read.

use serde::{Deserialize, Serialize};

use super::StrategyError;
use super::krum::scores_with;
use super::median::column_median;
use super::robust::{RobustRule, pairwise_sq_dists};

/// `[strategy.bulyan]`: how many members may be Byzantine.
///
/// ```toml
/// [strategy]
/// kind = "bulyan"
/// [strategy.bulyan]
/// byzantine = 2   # f: needs n >= 4f + 3 members
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BulyanConfig {
    /// `f`: how many members may be Byzantine.
    pub byzantine: usize,
}

impl BulyanConfig {
    /// The fewest members Bulyan works with: `4f + 3`.
    pub fn min_members(&self) -> usize {
        4 * self.byzantine + 3
    }
}

/// The Bulyan rule.
#[derive(Debug, Clone)]
pub struct Bulyan {
    config: BulyanConfig,
}

impl Bulyan {
    /// The rule with `config`'s `f`.
    pub fn new(config: BulyanConfig) -> Self {
        Self { config }
    }
}

/// Bulyan over `rows` tolerating `f` Byzantine rows. Refuses `n < 4f + 3`.
pub fn bulyan(rows: &[Vec<f32>], f: usize) -> Result<Vec<f32>, StrategyError> {
    let n = rows.len();
    if n < 4 * f + 3 {
        return Err(StrategyError::TooFewMembers {
            rule: "bulyan",
            members: n,
            needed: 4 * f + 3,
        });
    }
    let theta = n - 2 * f;
    let beta = theta - 2 * f;
    let dists = pairwise_sq_dists(rows);
    let mut remaining: Vec<usize> = (0..n).collect();
    let mut picked = Vec::with_capacity(theta);
    while picked.len() < theta {
        let r = remaining.len();
        // Krum's n - f - 2 neighbours within what remains (at least one while two remain).
        let k = r.saturating_sub(f + 2).clamp(1, r.saturating_sub(1).max(1));
        let sub: Vec<Vec<f64>> = remaining
            .iter()
            .map(|&i| remaining.iter().map(|&j| dists[i][j]).collect())
            .collect();
        let scores = scores_with(&sub, k);
        let best = (0..r)
            .min_by(|&a, &b| scores[a].total_cmp(&scores[b]).then(a.cmp(&b)))
            .unwrap_or(0);
        picked.push(remaining.remove(best));
    }
    let mut column = vec![0f32; theta];
    Ok((0..rows[0].len())
        .map(|c| {
            column
                .iter_mut()
                .zip(&picked)
                .for_each(|(v, &i)| *v = rows[i][c]);
            let med = column_median(&mut column);
            column.sort_unstable_by(|a, b| {
                (a - med)
                    .abs()
                    .total_cmp(&(b - med).abs())
                    .then(a.total_cmp(b))
            });
            let s: f64 = column[..beta].iter().map(|v| f64::from(*v)).sum();
            (s / beta as f64) as f32
        })
        .collect())
}

impl RobustRule for Bulyan {
    fn name(&self) -> &'static str {
        "bulyan"
    }

    fn min_inputs(&self) -> usize {
        self.config.min_members()
    }

    fn aggregate(&mut self, deltas: &[Vec<f32>]) -> Result<Vec<f32>, StrategyError> {
        bulyan(deltas, self.config.byzantine)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::strategy::robust::tests::refuses_hostile_input;

    #[test]
    fn by_hand_at_the_n_equals_4f_plus_3_edge() {
        // n = 7, f = 1: θ = 5, β = 3. Krum picks 2, 1, 3, 0, 4 in turn (the two ±100 never),
        // their median is 2 and the three closest to it are 1, 2, 3.
        let rows: Vec<Vec<f32>> = [0.0, 1.0, 2.0, 3.0, 4.0, 100.0, -100.0]
            .iter()
            .map(|v| vec![*v, 2.0 * v])
            .collect();
        assert_eq!(bulyan(&rows, 1).unwrap(), vec![2.0, 4.0]);
        assert_eq!(
            bulyan(&rows[..6], 1),
            Err(StrategyError::TooFewMembers {
                rule: "bulyan",
                members: 6,
                needed: 7
            })
        );
        // f = 0 is the mean of the values around the median: all of them.
        assert_eq!(bulyan(&rows[..3], 0).unwrap(), vec![1.0, 2.0]);
    }

    #[test]
    fn ties_go_to_the_lower_index_in_krum_and_to_the_smaller_value_around_the_median() {
        // n = 7, f = 1: θ = 5, β = 3. Rows are (x, -x/2), so every squared distance is
        // 1.25·Δx² and the picks follow x alone: 0 -> 100, 1 -> -100 (the outliers, first),
        // 2 -> 2, 3 -> 2 (a duplicate), 4 -> 0, 5 -> 4, 6 -> 6. Krum scores in units of 1.25:
        // - 7 left, 4 neighbours: 2 and 3 score 0 + 4 + 4 + 16 = 24 (5: 28, 4: 60, 6: 72),
        //   the tie goes to 2;
        // - 6 left, 3 neighbours: 3 (4 + 4 + 16) and 5 (4 + 4 + 16) tie at 24 (4 and 6: 56),
        //   3 is picked;
        // - 5 left, 2 neighbours: 5 scores 4 + 16 = 20 (6: 40, 4: 52), picked;
        // - 4 left, 1 neighbour: 4 and 6 are each other's nearest (36), 4 is picked;
        // - 3 left (0, 1, 6), 1 neighbour: 6 and 100 are each other's nearest (94² = 8836),
        //   -100's nearest is 106² away: the tie goes to row 0, the outlier 100.
        // Picked x: [2, 2, 4, 0, 100], median 2; at distance 0: 2, 2; at distance 2: 0 and 4,
        // the tie broken towards the smaller value 0. Mean of 2, 2, 0 = 4/3: the outlier
        // picked by the tie is trimmed. Picked y: [-1, -1, -2, 0, -50], median -1, then -2
        // and 0 tie at 1, the smaller -2 is kept: (-1 - 1 - 2)/3 = -4/3 (row 5's value, where
        // x kept row 4's).
        let rows: Vec<Vec<f32>> = [100.0f32, -100.0, 2.0, 2.0, 0.0, 4.0, 6.0]
            .iter()
            .map(|x| vec![*x, -x / 2.0])
            .collect();
        let out = bulyan(&rows, 1).unwrap();
        let expected = [4.0f32 / 3.0, -4.0 / 3.0];
        assert_eq!(out.len(), 2);
        assert!(
            out.iter().zip(expected).all(|(v, e)| (v - e).abs() < 1e-6),
            "{out:?}"
        );
    }

    #[test]
    fn hostile_input_is_refused() {
        refuses_hostile_input(Box::new(Bulyan::new(BulyanConfig { byzantine: 1 })));
    }
}
