//! Krum and Multi-Krum (Blanchard, El Mhamdi, Guerraoui and Stainer 2017, "Machine Learning
//! with Adversaries: Byzantine Tolerant Gradient Descent"). Each update is scored by the sum of
//! its squared distances to its `n - f - 2` nearest other updates; Krum keeps the update with
//! the lowest score, Multi-Krum the mean of the `m` lowest. The guarantee needs `n > 2f + 2`.
//!
//! Unlike Flower's `MultiKrum`, the mean of the kept updates is **unweighted**: the example
//! counts members report are never read.

use serde::{Deserialize, Serialize};

use super::StrategyError;
use super::robust::{RobustRule, mean_of, pairwise_sq_dists};

/// `[strategy.krum]`: how many members may be Byzantine and how many updates to keep.
///
/// ```toml
/// [strategy]
/// kind = "krum"
/// [strategy.krum]
/// byzantine = 2   # f: Byzantine members tolerated (needs n > 2f + 2)
/// multi = 5       # m: updates averaged (1 = Krum, more = Multi-Krum; at most n - f)
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct KrumConfig {
    /// `f`: how many members may be Byzantine.
    pub byzantine: usize,
    /// `m`: how many of the best-scored updates are averaged (1: Krum).
    #[serde(default = "one")]
    pub multi: usize,
}

fn one() -> usize {
    1
}

impl KrumConfig {
    /// Refuses `multi = 0`.
    pub fn check(&self) -> Result<(), StrategyError> {
        if self.multi == 0 {
            return Err(StrategyError::Settings(
                "[strategy.krum] multi must be at least 1".into(),
            ));
        }
        Ok(())
    }

    /// The fewest members Krum works with: `2f + 3`, and `m + f` for Multi-Krum.
    pub fn min_members(&self) -> usize {
        (2 * self.byzantine + 3).max(self.multi + self.byzantine)
    }
}

/// Krum (`multi = 1`) or Multi-Krum.
#[derive(Debug, Clone)]
pub struct Krum {
    config: KrumConfig,
}

impl Krum {
    /// The rule with `config`'s `f` and `m`.
    pub fn new(config: KrumConfig) -> Self {
        Self { config }
    }
}

/// The Krum scores of `rows`: for each, the sum of squared distances to its `n - f - 2`
/// nearest other rows. Refuses `n <= 2f + 2`.
pub fn krum_scores(rows: &[Vec<f32>], byzantine: usize) -> Result<Vec<f64>, StrategyError> {
    let n = rows.len();
    if n < 2 * byzantine + 3 {
        return Err(StrategyError::TooFewMembers {
            rule: "krum",
            members: n,
            needed: 2 * byzantine + 3,
        });
    }
    Ok(scores_with(&pairwise_sq_dists(rows), n - byzantine - 2))
}

/// Scores over a distance matrix, each the sum of the `k` smallest off-diagonal entries.
pub(crate) fn scores_with(dists: &[Vec<f64>], k: usize) -> Vec<f64> {
    dists
        .iter()
        .enumerate()
        .map(|(i, row)| {
            let mut others: Vec<f64> = row
                .iter()
                .enumerate()
                .filter(|&(j, _)| j != i)
                .map(|(_, d)| *d)
                .collect();
            others.sort_unstable_by(f64::total_cmp);
            others.iter().take(k).sum()
        })
        .collect()
}

/// The indices of the `m` best-scored rows, best first (ties: the lower index).
pub fn krum_select(
    rows: &[Vec<f32>],
    byzantine: usize,
    m: usize,
) -> Result<Vec<usize>, StrategyError> {
    let scores = krum_scores(rows, byzantine)?;
    if m == 0 || m + byzantine > rows.len() {
        return Err(StrategyError::TooFewMembers {
            rule: "krum",
            members: rows.len(),
            needed: m.max(1) + byzantine,
        });
    }
    let mut order: Vec<usize> = (0..rows.len()).collect();
    order.sort_by(|&a, &b| scores[a].total_cmp(&scores[b]).then(a.cmp(&b)));
    order.truncate(m);
    Ok(order)
}

impl RobustRule for Krum {
    fn name(&self) -> &'static str {
        "krum"
    }

    fn min_inputs(&self) -> usize {
        self.config.min_members()
    }

    fn aggregate(&mut self, deltas: &[Vec<f32>]) -> Result<Vec<f32>, StrategyError> {
        self.config.check()?;
        let kept = krum_select(deltas, self.config.byzantine, self.config.multi)?;
        Ok(mean_of(
            deltas[0].len(),
            kept.iter().map(|&i| deltas[i].as_slice()),
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::params::ParamVec;
    use crate::strategy::robust::tests::{member, refuses_hostile_input, schema};
    use crate::strategy::{RobustAggregator, RoundUpdates, Strategy, StrategyConfig};

    fn rows(v: &[[f32; 2]]) -> Vec<Vec<f32>> {
        v.iter().map(|r| r.to_vec()).collect()
    }

    #[test]
    fn scores_by_hand() {
        // n = 5, f = 1: each row's 2 nearest others.
        let r = rows(&[[0.0, 0.0], [1.0, 0.0], [0.0, 1.0], [1.0, 1.0], [10.0, 10.0]]);
        let s = krum_scores(&r, 1).unwrap();
        // (0,0): 1 + 1; (1,0): 1 + 1; (0,1): 1 + 1; (1,1): 1 + 1; (10,10): 162 + 181.
        assert_eq!(s, vec![2.0, 2.0, 2.0, 2.0, 162.0 + 181.0]);
        // Ties go to the lower index.
        assert_eq!(krum_select(&r, 1, 1).unwrap(), vec![0]);
        assert_eq!(krum_select(&r, 1, 4).unwrap(), vec![0, 1, 2, 3]);
    }

    #[test]
    fn multi_krum_averages_unweighted_and_drops_the_outlier() {
        let mut rule = RobustAggregator::new(
            StrategyConfig::default(),
            Box::new(Krum::new(KrumConfig {
                byzantine: 1,
                multi: 4,
            })),
        );
        let updates = vec![
            member(0, &[0.0, 0.0], 1),
            member(1, &[1.0, 0.0], 1),
            member(2, &[0.0, 1.0], 1),
            member(3, &[1.0, 1.0], 1),
            member(4, &[-100.0, 50.0], 1_000_000),
        ];
        let next = rule
            .aggregate_fit(
                1,
                &ParamVec::zeros(schema(2)),
                RoundUpdates::PerMember(updates),
            )
            .unwrap();
        assert_eq!(next.values(), &[0.5, 0.5]);
    }

    #[test]
    fn the_n_equals_2f_plus_3_edge_works_and_one_fewer_is_refused() {
        // f = 2: 7 members work (k = 3 neighbours), 6 are refused. Rows 1..=5 all score
        // 1 + 1 + 4 = 6, rows 0 and 6 score 14: the tie goes to the lower index.
        let r: Vec<Vec<f32>> = (0..7).map(|i| vec![i as f32]).collect();
        assert_eq!(
            krum_scores(&r, 2).unwrap(),
            vec![14.0, 6.0, 6.0, 6.0, 6.0, 6.0, 14.0]
        );
        assert_eq!(krum_select(&r, 2, 1).unwrap(), vec![1]);
        assert!(matches!(
            krum_select(&r[..6], 2, 1),
            Err(StrategyError::TooFewMembers {
                rule: "krum",
                members: 6,
                needed: 7
            })
        ));
        assert!(matches!(
            krum_select(&r, 2, 6),
            Err(StrategyError::TooFewMembers { needed: 8, .. })
        ));
        assert_eq!(
            KrumConfig {
                byzantine: 0,
                multi: 0
            }
            .check(),
            Err(StrategyError::Settings(
                "[strategy.krum] multi must be at least 1".into()
            ))
        );
    }

    #[test]
    fn hostile_input_is_refused() {
        refuses_hostile_input(Box::new(Krum::new(KrumConfig {
            byzantine: 1,
            multi: 2,
        })));
    }
}
