//! `[strategy]`: the aggregation rule, client selection, local training settings and an
//! optional server optimiser, and the one function that builds the engine's strategy from them.

use serde::{Deserialize, Serialize};

use crate::dp::{DifferentialPrivacy, PrivacyConfig};
use crate::round::{ClientId, EvaluateConfig, FitConfig};
use crate::secure::SecureAggregationConfig;

use super::{
    CoordinateMedian, EvaluatePlan, FedAvg, FitPlan, ServerOptimizerConfig, Strategy, UpdateForm,
    select_clients,
};

/// Which rule turns the round's updates into the next global model (`[strategy] kind`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum AggregationRule {
    /// Federated averaging over the weighted sum of updates (McMahan et al. 2017).
    #[default]
    Fedavg,
    /// Coordinate-wise median of the members' models (Yin et al. 2018): robust to a minority of
    /// arbitrary updates, but needs every member's update, so not under secure aggregation.
    Median,
}

impl AggregationRule {
    /// The form in which the rule needs the round's updates.
    pub fn update_form(self) -> UpdateForm {
        match self {
            Self::Fedavg => UpdateForm::Sum,
            Self::Median => UpdateForm::PerMember,
        }
    }

    /// The name used in the federation file.
    pub fn name(self) -> &'static str {
        match self {
            Self::Fedavg => "fedavg",
            Self::Median => "median",
        }
    }
}

/// The `[strategy]` section: the rule (`kind`), who takes part, how members train, and the
/// optional `[strategy.server_optimizer]`.
///
/// ```toml
/// [strategy]
/// kind = "fedavg"          # or "median"
/// fraction_fit = 0.5
/// fraction_evaluate = 0.2
/// [strategy.fit]
/// local_epochs = 2
/// [strategy.server_optimizer]
/// kind = "fedadam"         # or "fedavgm"
/// learning_rate = 0.1
/// ```
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct StrategyConfig {
    /// The aggregation rule.
    pub kind: AggregationRule,
    /// Fraction of available clients asked to train each round.
    pub fraction_fit: f64,
    /// At least this many clients are asked to train (if available).
    pub min_fit_clients: usize,
    /// Fewest results with which a round still aggregates after its deadline.
    pub min_fit_results: usize,
    /// Fraction of available clients asked to evaluate each round (0 disables).
    pub fraction_evaluate: f64,
    /// At least this many clients evaluate when `fraction_evaluate > 0`.
    pub min_evaluate_clients: usize,
    /// Local training settings sent with every fit instruction.
    pub fit: FitConfig,
    /// Settings sent with every evaluate instruction.
    pub evaluate: EvaluateConfig,
    /// An optimiser applied to the aggregated update; none adds it as it is (FedAvg).
    pub server_optimizer: Option<ServerOptimizerConfig>,
}

impl Default for StrategyConfig {
    fn default() -> Self {
        Self {
            kind: AggregationRule::default(),
            fraction_fit: 1.0,
            min_fit_clients: 2,
            min_fit_results: 1,
            fraction_evaluate: 0.0,
            min_evaluate_clients: 0,
            fit: FitConfig::default(),
            evaluate: EvaluateConfig::default(),
            server_optimizer: None,
        }
    }
}

/// Why a federation's strategy settings cannot work together.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[non_exhaustive]
pub enum BuildError {
    /// A per-member rule was combined with secure aggregation, which reveals only the sum.
    #[error(
        "[strategy] kind = \"{rule}\" needs every member's update, but [secure_aggregation] reveals \
         only their sum: use kind = \"fedavg\" (optionally with a [strategy.server_optimizer]), or \
         drop [secure_aggregation] to run {rule} on plain updates"
    )]
    PerMemberUnderSecureAggregation {
        /// The rule's name.
        rule: &'static str,
    },
    /// A per-member rule was combined with differential privacy, which noises the sum.
    #[error(
        "[strategy] kind = \"{rule}\" needs every member's update, but [privacy] adds its noise \
         to their sum: use kind = \"fedavg\" with [privacy], or drop [privacy]"
    )]
    PerMemberUnderPrivacy {
        /// The rule's name.
        rule: &'static str,
    },
    /// The distributed DP mechanism was asked for without secure aggregation.
    #[error(
        "[privacy] mechanism = \"distributed\" adds its noise inside secure aggregation: add a \
         [secure_aggregation] section or use mechanism = \"central\""
    )]
    DistributedWithoutSecureAggregation,
    /// A setting is out of range.
    #[error("[strategy]: {0}")]
    Strategy(#[from] super::StrategyError),
    /// The privacy settings are invalid.
    #[error("[privacy]: {0}")]
    Privacy(String),
}

impl StrategyConfig {
    /// Checks that the rule, `[privacy]` and `[secure_aggregation]` can work together, without
    /// building anything (what loading a federation file runs).
    pub fn check(
        &self,
        privacy: Option<&PrivacyConfig>,
        secure: Option<&SecureAggregationConfig>,
    ) -> Result<(), BuildError> {
        let rule = self.kind;
        if rule.update_form() == UpdateForm::PerMember {
            if secure.is_some() {
                return Err(BuildError::PerMemberUnderSecureAggregation { rule: rule.name() });
            }
            if privacy.is_some() {
                return Err(BuildError::PerMemberUnderPrivacy { rule: rule.name() });
            }
        }
        if privacy.is_some_and(|p| p.mechanism == crate::dp::Mechanism::Distributed)
            && secure.is_none()
        {
            return Err(BuildError::DistributedWithoutSecureAggregation);
        }
        if let Some(o) = &self.server_optimizer {
            o.build()?;
        }
        Ok(())
    }

    /// Builds the engine's strategy: the rule with its server optimiser, wrapped in
    /// differential privacy when `privacy` is set (accounted for `members` members and a model
    /// of `dim` values under `secure`).
    pub fn build(
        &self,
        privacy: Option<&PrivacyConfig>,
        secure: Option<&SecureAggregationConfig>,
        members: usize,
        dim: usize,
    ) -> Result<Box<dyn Strategy>, BuildError> {
        self.check(privacy, secure)?;
        let optimizer = self
            .server_optimizer
            .as_ref()
            .map(|o| o.build())
            .transpose()?;
        let rule: Box<dyn Strategy> = match self.kind {
            AggregationRule::Fedavg => {
                Box::new(FedAvg::new(self.clone()).with_optimizer(optimizer))
            }
            AggregationRule::Median => {
                Box::new(CoordinateMedian::new(self.clone()).with_optimizer(optimizer))
            }
        };
        let Some(p) = privacy else {
            return Ok(rule);
        };
        let invalid = |e: privacy::Error| BuildError::Privacy(e.to_string());
        let mut dp = DifferentialPrivacy::new(rule, self, p.clone(), members).map_err(invalid)?;
        if let Some(secure) = secure {
            dp = dp.with_secure_aggregation(secure, dim).map_err(invalid)?;
        }
        Ok(Box::new(dp))
    }

    /// The fit plan of a round: `max(⌈fraction_fit · n⌉, min_fit_clients)` of the `available`
    /// clients, drawn from `round_seed`, with [`fit`](Self::fit) as their settings.
    pub fn plan_fit(&self, available: &[ClientId], round_seed: u64) -> FitPlan {
        let clients = select_clients(
            available,
            self.fraction_fit,
            self.min_fit_clients,
            round_seed,
        );
        FitPlan {
            min_results: self.min_fit_results.clamp(1, clients.len().max(1)),
            clients,
            config: self.fit.clone(),
        }
    }

    /// The evaluation plan of a round (empty when `fraction_evaluate` is 0).
    pub fn plan_evaluate(&self, available: &[ClientId], round_seed: u64) -> EvaluatePlan {
        let clients = if self.fraction_evaluate > 0.0 {
            select_clients(
                available,
                self.fraction_evaluate,
                self.min_evaluate_clients,
                round_seed ^ 0x5eed_e7a1,
            )
        } else {
            Vec::new()
        };
        EvaluatePlan {
            clients,
            config: self.evaluate.clone(),
        }
    }

    /// How many clients a round selects out of `members` (what privacy accounting assumes).
    pub fn expected_fit_clients(&self, members: usize) -> usize {
        let members = members.max(1);
        ((self.fraction_fit * members as f64).ceil() as usize)
            .max(self.min_fit_clients)
            .clamp(1, members)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(toml: &str) -> Result<StrategyConfig, toml::de::Error> {
        toml::from_str(toml)
    }

    #[test]
    fn kind_defaults_to_fedavg_and_optimisers_are_tagged() {
        let c = parse("fraction_fit = 0.5").unwrap();
        assert_eq!(c.kind, AggregationRule::Fedavg);
        assert!(c.server_optimizer.is_none());
        let c = parse(
            "kind = \"median\"\n[server_optimizer]\nkind = \"fedadam\"\nlearning_rate = 0.05\n",
        )
        .unwrap();
        assert_eq!(c.kind, AggregationRule::Median);
        assert!(matches!(
            c.server_optimizer,
            Some(ServerOptimizerConfig::Fedadam(ref a)) if a.learning_rate == 0.05 && a.beta1 == 0.9
        ));
        let c = parse("[server_optimizer]\nkind = \"fedavgm\"\nmomentum = 0.5\n").unwrap();
        assert!(matches!(
            c.server_optimizer,
            Some(ServerOptimizerConfig::Fedavgm(ref m)) if m.momentum == 0.5 && m.learning_rate == 1.0
        ));
    }

    #[test]
    fn unknown_rules_optimisers_and_fields_are_named() {
        let e = parse("kind = \"krum\"").unwrap_err().to_string();
        assert!(e.contains("krum") && e.contains("median"), "{e}");
        let e = parse("[server_optimizer]\nkind = \"sgd\"\n")
            .unwrap_err()
            .to_string();
        assert!(e.contains("sgd"), "{e}");
        let e = parse("[server_optimizer]\nkind = \"fedadam\"\nbeta = 0.9\n")
            .unwrap_err()
            .to_string();
        assert!(e.contains("beta"), "{e}");
    }

    #[test]
    fn a_per_member_rule_under_secure_aggregation_is_refused() {
        let median = StrategyConfig {
            kind: AggregationRule::Median,
            ..Default::default()
        };
        let secure: SecureAggregationConfig =
            toml::from_str("protocol = \"secagg+\"\nclip_norm = 1.0\n").unwrap();
        let e = median.check(None, Some(&secure)).unwrap_err();
        assert_eq!(
            e,
            BuildError::PerMemberUnderSecureAggregation { rule: "median" }
        );
        assert!(e.to_string().contains("kind = \"fedavg\""), "{e}");
        assert!(StrategyConfig::default().check(None, Some(&secure)).is_ok());
        assert!(median.check(None, None).is_ok());
        let bad = StrategyConfig {
            server_optimizer: Some(ServerOptimizerConfig::Fedavgm(
                super::super::FedAvgMConfig {
                    learning_rate: 1.0,
                    momentum: 2.0,
                },
            )),
            ..Default::default()
        };
        assert!(matches!(
            bad.check(None, None),
            Err(BuildError::Strategy(super::super::StrategyError::Settings(
                _
            )))
        ));
    }
}
