//! Coordinate-wise trimmed mean (Yin, Chen, Ramchandran and Bartlett 2018): for each parameter,
//! drop the `⌊β·n⌋` largest and `⌊β·n⌋` smallest values and average the rest. Unweighted, as
//! Flower's `FedTrimmedAvg` (its default β is 0.2).

use serde::{Deserialize, Serialize};

use super::StrategyError;
use super::robust::RobustRule;

/// `[strategy.trimmed_mean]`: the fraction trimmed from each end.
///
/// ```toml
/// [strategy]
/// kind = "trimmed_mean"
/// [strategy.trimmed_mean]
/// beta = 0.2   # drops ⌊0.2·n⌋ values at each end of every coordinate
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TrimmedMeanConfig {
    /// β in `[0, 0.5)`: the fraction of values dropped at each end.
    pub beta: f64,
}

impl Default for TrimmedMeanConfig {
    fn default() -> Self {
        Self { beta: 0.2 }
    }
}

impl TrimmedMeanConfig {
    /// Refuses β outside `[0, 0.5)`.
    pub fn check(&self) -> Result<(), StrategyError> {
        if !(0.0..0.5).contains(&self.beta) {
            return Err(StrategyError::Settings(format!(
                "[strategy.trimmed_mean] beta = {} is outside [0, 0.5)",
                self.beta
            )));
        }
        Ok(())
    }
}

/// The trimmed-mean rule.
#[derive(Debug, Clone)]
pub struct TrimmedMean {
    config: TrimmedMeanConfig,
}

impl TrimmedMean {
    /// The rule with `config`'s β.
    pub fn new(config: TrimmedMeanConfig) -> Self {
        Self { config }
    }
}

/// Per coordinate, the mean of `rows`' values after dropping the `trim` smallest and `trim`
/// largest. Needs `2·trim < rows.len()`.
pub fn trimmed_mean(rows: &[Vec<f32>], trim: usize) -> Result<Vec<f32>, StrategyError> {
    let n = rows.len();
    if n == 0 {
        return Err(StrategyError::NoResults);
    }
    if 2 * trim >= n {
        return Err(StrategyError::TooFewMembers {
            rule: "trimmed_mean",
            members: n,
            needed: 2 * trim + 1,
        });
    }
    let mut column = vec![0f32; n];
    let kept = (n - 2 * trim) as f64;
    Ok((0..rows[0].len())
        .map(|i| {
            column.iter_mut().zip(rows).for_each(|(c, r)| *c = r[i]);
            column.sort_unstable_by(f32::total_cmp);
            let s: f64 = column[trim..n - trim].iter().map(|v| f64::from(*v)).sum();
            (s / kept) as f32
        })
        .collect())
}

impl RobustRule for TrimmedMean {
    fn name(&self) -> &'static str {
        "trimmed_mean"
    }

    fn min_inputs(&self) -> usize {
        1
    }

    fn aggregate(&mut self, deltas: &[Vec<f32>]) -> Result<Vec<f32>, StrategyError> {
        self.config.check()?;
        let trim = (self.config.beta * deltas.len() as f64).floor() as usize;
        trimmed_mean(deltas, trim)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::strategy::robust::tests::refuses_hostile_input;

    #[test]
    fn trims_each_end_by_hand() {
        let rows: Vec<Vec<f32>> = [
            [1.0, -5.0],
            [2.0, 0.0],
            [3.0, 1.0],
            [4.0, 2.0],
            [100.0, 3.0],
        ]
        .iter()
        .map(|r| r.to_vec())
        .collect();
        // β = 0.2, n = 5: one value off each end.
        let mut rule = TrimmedMean::new(TrimmedMeanConfig { beta: 0.2 });
        assert_eq!(rule.aggregate(&rows).unwrap(), vec![3.0, 1.0]);
        // β = 0.1: ⌊0.5⌋ = 0, the plain mean.
        let mut rule = TrimmedMean::new(TrimmedMeanConfig { beta: 0.1 });
        assert_eq!(rule.aggregate(&rows).unwrap(), vec![22.0, 0.2]);
        // n = 2f + 1 with f = 2 trimmed at each end: only the middle value is left (the median).
        assert_eq!(trimmed_mean(&rows, 2).unwrap(), vec![3.0, 1.0]);
        let mut rule = TrimmedMean::new(TrimmedMeanConfig { beta: 0.4 });
        assert_eq!(rule.aggregate(&rows).unwrap(), vec![3.0, 1.0]);
        // Ties: equal values are kept or dropped alike.
        let same = vec![vec![7.0f32]; 4];
        assert_eq!(trimmed_mean(&same, 1).unwrap(), vec![7.0]);
    }

    #[test]
    fn out_of_range_settings_and_too_much_trimming_are_refused() {
        for beta in [-0.1, 0.5, f64::NAN] {
            assert!(matches!(
                TrimmedMeanConfig { beta }.check(),
                Err(StrategyError::Settings(_))
            ));
        }
        let rows = vec![vec![1.0f32]; 4];
        assert_eq!(
            trimmed_mean(&rows, 2),
            Err(StrategyError::TooFewMembers {
                rule: "trimmed_mean",
                members: 4,
                needed: 5
            })
        );
        refuses_hostile_input(Box::new(TrimmedMean::new(TrimmedMeanConfig::default())));
    }
}
