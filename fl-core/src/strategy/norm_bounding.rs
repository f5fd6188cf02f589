//! Norm bounding (Sun, Kairouz, Suresh and McMahan 2019, "Can You Really Backdoor Federated
//! Learning?"): every member's update is scaled down to at most `max_norm` in L2 norm, then
//! the clipped updates are averaged, unweighted. It bounds what one member can move the model,
//! which blunts scaling and model-replacement attacks but not many small coordinated ones.

use serde::{Deserialize, Serialize};

use super::StrategyError;
use super::robust::{RobustRule, mean_of, norm};

/// `[strategy.norm_bounding]`: the largest update norm kept as it is.
///
/// ```toml
/// [strategy]
/// kind = "norm_bounding"
/// [strategy.norm_bounding]
/// max_norm = 1.0
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NormBoundingConfig {
    /// The L2 bound on each member's update (difference from the global model); positive.
    pub max_norm: f64,
}

impl NormBoundingConfig {
    /// Refuses a bound that is not positive and finite.
    pub fn check(&self) -> Result<(), StrategyError> {
        if !(self.max_norm.is_finite() && self.max_norm > 0.0) {
            return Err(StrategyError::Settings(format!(
                "[strategy.norm_bounding] max_norm = {} must be positive",
                self.max_norm
            )));
        }
        Ok(())
    }
}

/// The norm-bounding rule.
#[derive(Debug, Clone)]
pub struct NormBounding {
    config: NormBoundingConfig,
}

impl NormBounding {
    /// The rule with `config`'s bound.
    pub fn new(config: NormBoundingConfig) -> Self {
        Self { config }
    }
}

/// `v` scaled by `min(1, bound / ‖v‖)`.
pub(crate) fn clip_to(v: &[f32], bound: f64) -> Vec<f32> {
    let n = norm(v);
    if n <= bound {
        return v.to_vec();
    }
    let s = bound / n;
    v.iter().map(|x| (f64::from(*x) * s) as f32).collect()
}

impl RobustRule for NormBounding {
    fn name(&self) -> &'static str {
        "norm_bounding"
    }

    fn min_inputs(&self) -> usize {
        1
    }

    fn aggregate(&mut self, deltas: &[Vec<f32>]) -> Result<Vec<f32>, StrategyError> {
        self.config.check()?;
        let clipped: Vec<Vec<f32>> = deltas
            .iter()
            .map(|d| clip_to(d, self.config.max_norm))
            .collect();
        Ok(mean_of(deltas[0].len(), clipped.iter().map(Vec::as_slice)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::strategy::robust::tests::refuses_hostile_input;

    #[test]
    fn long_updates_are_scaled_to_the_bound_short_ones_kept() {
        let mut rule = NormBounding::new(NormBoundingConfig { max_norm: 5.0 });
        // (30, 40) has norm 50 -> (3, 4); (1, 1) is kept.
        let out = rule.aggregate(&[vec![30.0, 40.0], vec![1.0, 1.0]]).unwrap();
        assert_eq!(out, vec![2.0, 2.5]);
        for max_norm in [0.0, -1.0, f64::INFINITY, f64::NAN] {
            assert!(matches!(
                NormBoundingConfig { max_norm }.check(),
                Err(StrategyError::Settings(_))
            ));
        }
        refuses_hostile_input(Box::new(NormBounding::new(NormBoundingConfig {
            max_norm: 1.0,
        })));
    }

    #[test]
    fn an_update_of_norm_exactly_max_norm_is_kept_bit_for_bit_and_a_zero_update_stays_zero() {
        // (3, 4) has norm 5 = max_norm and (-0.375, 0.5) norm 0.625 = max_norm (√(9/64 +
        // 16/64) = 5/8): both are returned with the same bits.
        let bits = |v: &[f32]| v.iter().map(|x| x.to_bits()).collect::<Vec<_>>();
        assert_eq!(bits(&clip_to(&[3.0, 4.0], 5.0)), bits(&[3.0, 4.0]));
        assert_eq!(bits(&clip_to(&[-0.375, 0.5], 0.625)), bits(&[-0.375, 0.5]));
        // A zero update has norm 0 <= any bound: kept, never divided by its norm (no NaN).
        assert_eq!(clip_to(&[0.0, 0.0], 1e-30), vec![0.0, 0.0]);
        let mut rule = NormBounding::new(NormBoundingConfig { max_norm: 5.0 });
        assert_eq!(
            bits(&rule.aggregate(&[vec![3.0, 4.0]]).unwrap()),
            bits(&[3.0, 4.0])
        );
        assert_eq!(rule.aggregate(&[vec![0.0, 0.0]]).unwrap(), vec![0.0, 0.0]);
        // The mean of the kept (3, 4) and a zero update: (1.5, 2).
        assert_eq!(
            rule.aggregate(&[vec![3.0, 4.0], vec![0.0, 0.0]]).unwrap(),
            vec![1.5, 2.0]
        );
    }
}
