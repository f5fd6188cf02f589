//! The robustness benchmark: the digits federation (20 members, Dirichlet α = 0.5) with a
//! fifth of its members attacking, for each robust rule and each attack of
//! [`fl_aggregator::attack`]. `cargo run -p benches --bin robust` prints the table recorded in
//! `benches/RESULTS.md`.
//!
//! Attackers are members `0..f`; label flippers train on flipped labels (`y → 9 - y`), every
//! other attack replaces the attackers' updates through an
//! [`Adversary`] around the rule.

use fl_aggregator::EngineEvent;
use fl_aggregator::attack::{Adversary, Attack};
use fl_client::Dataset;
use fl_core::strategy::{
    BucketingConfig, BulyanConfig, CenteredClippingConfig, GeometricMedianConfig, KrumConfig,
    NnmConfig, NormBoundingConfig, TrimmedMeanConfig,
};
use fl_core::{AggregationRule, ClientId, StrategyConfig};

use crate::digits::{self, DigitsConfig, RunError, RunResult};

/// A rule under test: a label for the table and the `[strategy]` settings that select it.
#[derive(Debug, Clone)]
pub struct RuleUnderTest {
    /// e.g. `median+bucketing(2)`.
    pub label: String,
    /// The rule, its sub-table and pre-aggregators (selection and training come from the run).
    pub strategy: StrategyConfig,
}

/// The rules of the benchmark for `n` members of whom `f` may be Byzantine: FedAvg (the
/// control), median with and without bucketing, trimmed mean (β = f/n) with and without NNM,
/// Multi-Krum (m = n - f), Krum, Bulyan, geometric median, centered clipping (τ, momentum 0.9,
/// with bucketing), norm bounding (`max_norm`).
pub fn rules(n: usize, f: usize, tau: f64, max_norm: f64) -> Vec<RuleUnderTest> {
    let beta = f as f64 / n as f64;
    let rule = |kind| StrategyConfig {
        kind,
        ..Default::default()
    };
    let bucketing = Some(BucketingConfig { size: 2 });
    let cc = CenteredClippingConfig {
        tau,
        iterations: 1,
        momentum: 0.9,
    };
    let t = |label: &str, strategy: StrategyConfig| RuleUnderTest {
        label: label.into(),
        strategy,
    };
    vec![
        t("fedavg", rule(AggregationRule::Fedavg)),
        t("median", rule(AggregationRule::Median)),
        t(
            "median+bucketing(2)",
            StrategyConfig {
                bucketing,
                ..rule(AggregationRule::Median)
            },
        ),
        t(
            "trimmed_mean",
            StrategyConfig {
                trimmed_mean: Some(TrimmedMeanConfig { beta }),
                ..rule(AggregationRule::TrimmedMean)
            },
        ),
        t(
            "nnm+trimmed_mean",
            StrategyConfig {
                trimmed_mean: Some(TrimmedMeanConfig { beta }),
                nnm: Some(NnmConfig { byzantine: f }),
                ..rule(AggregationRule::TrimmedMean)
            },
        ),
        t(
            "krum",
            StrategyConfig {
                krum: Some(KrumConfig {
                    byzantine: f,
                    multi: 1,
                }),
                ..rule(AggregationRule::Krum)
            },
        ),
        t(
            "multi_krum",
            StrategyConfig {
                krum: Some(KrumConfig {
                    byzantine: f,
                    multi: n - f,
                }),
                ..rule(AggregationRule::Krum)
            },
        ),
        t(
            "bulyan",
            StrategyConfig {
                bulyan: Some(BulyanConfig { byzantine: f }),
                ..rule(AggregationRule::Bulyan)
            },
        ),
        t(
            "geometric_median",
            StrategyConfig {
                geometric_median: Some(GeometricMedianConfig::default()),
                ..rule(AggregationRule::GeometricMedian)
            },
        ),
        t(
            "centered_clipping",
            StrategyConfig {
                centered_clipping: Some(cc),
                ..rule(AggregationRule::CenteredClipping)
            },
        ),
        t(
            "centered_clipping+bucketing(2)",
            StrategyConfig {
                centered_clipping: Some(cc),
                bucketing,
                ..rule(AggregationRule::CenteredClipping)
            },
        ),
        t(
            "norm_bounding",
            StrategyConfig {
                norm_bounding: Some(NormBoundingConfig { max_norm }),
                ..rule(AggregationRule::NormBounding)
            },
        ),
    ]
}

/// The attacks of the benchmark: none, sign flip, scaling ×20, Gaussian σ = 1 and 10, label flip,
/// ALIE τ = 1.5, IPM ε = 0.1 and 100, min-max, min-sum.
pub fn attacks() -> Vec<Option<Attack>> {
    vec![
        None,
        Some(Attack::SignFlip),
        Some(Attack::Scaling { factor: 20.0 }),
        Some(Attack::Gaussian { std: 1.0 }),
        Some(Attack::Gaussian { std: 10.0 }),
        Some(Attack::LabelFlip),
        Some(Attack::Alie { tau: 1.5 }),
        Some(Attack::Ipm { epsilon: 0.1 }),
        Some(Attack::Ipm { epsilon: 100.0 }),
        Some(Attack::MinMax),
        Some(Attack::MinSum),
    ]
}

/// `data` with every label `y` replaced by `C - 1 - y`.
pub fn flip_labels(data: Dataset) -> Result<Dataset, fl_client::Error> {
    let c = data.num_classes();
    let labels = data
        .labels()
        .iter()
        .map(|&y| (c - 1 - usize::from(y)) as u8)
        .collect();
    Ok(Dataset::new(
        data.features().to_vec(),
        data.feature_shape().to_vec(),
        labels,
        c,
    )?)
}

/// One cell of the table.
#[derive(Debug, Clone)]
pub struct CellResult {
    /// The run.
    pub run: RunResult,
    /// Rounds the engine aborted (a rule's typed refusal, e.g. non-finite updates).
    pub aborted: usize,
    /// Per round, the median norm of the members' updates (`qa.median_norm`; robust rules
    /// only), to calibrate clipping radii.
    pub median_norms: Vec<f64>,
}

/// Runs `base` under `rule` with members `0..attackers` running `attack` (none: all honest).
pub fn run_cell(
    base: &DigitsConfig,
    rule: &RuleUnderTest,
    attack: Option<Attack>,
    attackers: usize,
) -> Result<CellResult, RunError> {
    let flip = matches!(attack, Some(Attack::LabelFlip));
    let prepared = digits::prepare_with(base, |i, data| {
        if flip && i < attackers {
            flip_labels(data)
        } else {
            Ok(data)
        }
    })?;
    let strategy = StrategyConfig {
        kind: rule.strategy.kind,
        krum: rule.strategy.krum,
        trimmed_mean: rule.strategy.trimmed_mean,
        bulyan: rule.strategy.bulyan,
        geometric_median: rule.strategy.geometric_median,
        centered_clipping: rule.strategy.centered_clipping,
        norm_bounding: rule.strategy.norm_bounding,
        nnm: rule.strategy.nnm,
        bucketing: rule.strategy.bucketing,
        ..base.strategy()
    }
    .build(
        None,
        None,
        prepared.trainers.len(),
        prepared.initial.values().len(),
    )?;
    let strategy: Box<dyn fl_core::Strategy> = match attack {
        Some(a) if !a.poisons_data() => Box::new(Adversary::new(
            strategy,
            (0..attackers as u64).map(ClientId),
            a,
        )),
        _ => strategy,
    };
    let mut aborted = 0;
    let mut median_norms = Vec::new();
    let run = digits::run_with_strategy(
        base,
        prepared,
        strategy,
        |_| {},
        |e| match e {
            EngineEvent::RoundAborted { .. } => aborted += 1,
            EngineEvent::FitAggregated { metrics, .. } => {
                if let Some(n) = metrics.get("qa.median_norm") {
                    median_norms.push(*n);
                }
            }
            _ => {}
        },
    )?;
    Ok(CellResult {
        run,
        aborted,
        median_norms,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_rule_of_the_benchmark_builds_for_20_members_and_4_attackers() {
        for r in rules(20, 4, 1.0, 1.0) {
            let s = StrategyConfig {
                min_fit_clients: 1,
                ..r.strategy.clone()
            };
            assert!(s.check_members(20).is_ok(), "{}", r.label);
        }
    }

    #[test]
    fn label_flipping_maps_y_to_c_minus_1_minus_y() {
        let d = Dataset::new(vec![0.0; 3], vec![1], vec![0, 3, 9], 10).unwrap();
        assert_eq!(flip_labels(d).unwrap().labels(), &[9, 6, 0]);
    }
}
