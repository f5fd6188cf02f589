//! `[strategy]`: the aggregation rule, client selection, local training settings and an
//! optional server optimiser, and the one function that builds the engine's strategy from them.

use serde::{Deserialize, Serialize};

use crate::dp::{DifferentialPrivacy, PrivacyConfig};
use crate::round::{ClientId, EvaluateConfig, FitConfig};
use crate::secure::SecureAggregationConfig;

use super::contribution::{ContributionConfig, ContributionScored};
use super::detection::DetectionConfig;
use super::{
    BucketingConfig, Bulyan, BulyanConfig, CenteredClipping, CenteredClippingConfig, EvaluatePlan,
    FedAvg, FedNova, FitPlan, GeometricMedian, GeometricMedianConfig, Krum, KrumConfig, MedianRule,
    NnmConfig, NormBounding, NormBoundingConfig, PreAggregator, RobustAggregator, RobustRule,
    Scaffold, ScaffoldConfig, ServerOptimizerConfig, Strategy, TrimmedMean, TrimmedMeanConfig,
    UpdateForm, select_clients,
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
    /// Krum or Multi-Krum (Blanchard et al. 2017), settings in `[strategy.krum]`.
    Krum,
    /// Coordinate-wise trimmed mean (Yin et al. 2018), settings in `[strategy.trimmed_mean]`.
    TrimmedMean,
    /// Bulyan (El Mhamdi et al. 2018), settings in `[strategy.bulyan]`.
    Bulyan,
    /// Geometric median by smoothed Weiszfeld (RFA, Pillutla et al. 2022), settings in
    /// `[strategy.geometric_median]`.
    GeometricMedian,
    /// Centered clipping with server momentum (Karimireddy, He and Jaggi 2021), settings in
    /// `[strategy.centered_clipping]`.
    CenteredClipping,
    /// Mean of norm-bounded updates (Sun et al. 2019), settings in `[strategy.norm_bounding]`.
    NormBounding,
    /// FedNova's normalised averaging (Wang et al. 2020): each member's update divided by its
    /// `local_steps`, for members that train for different numbers of steps. Needs every
    /// member's update and step count, so not under secure aggregation.
    Fednova,
    /// SCAFFOLD (Karimireddy et al. 2020): members correct their local steps with control
    /// variates, settings in `[strategy.scaffold]`. Needs every member's update and control
    /// variate, so not under secure aggregation or differential privacy.
    Scaffold,
    /// FLTrust (Cao et al. 2021): members trusted by the cosine of their update with the
    /// aggregator's own update on a small root data set, rescaled to its norm. Needs the root
    /// data's trainer at build time ([`StrategyConfig::build_with`]).
    Fltrust,
}

impl AggregationRule {
    /// The form in which the rule needs the round's updates.
    pub fn update_form(self) -> UpdateForm {
        match self {
            Self::Fedavg => UpdateForm::Sum,
            _ => UpdateForm::PerMember,
        }
    }

    /// The name used in the federation file.
    pub fn name(self) -> &'static str {
        match self {
            Self::Fedavg => "fedavg",
            Self::Median => "median",
            Self::Krum => "krum",
            Self::TrimmedMean => "trimmed_mean",
            Self::Bulyan => "bulyan",
            Self::GeometricMedian => "geometric_median",
            Self::CenteredClipping => "centered_clipping",
            Self::NormBounding => "norm_bounding",
            Self::Fednova => "fednova",
            Self::Scaffold => "scaffold",
            Self::Fltrust => "fltrust",
        }
    }

    /// Every rule, in the order of the federation file's documentation.
    pub const ALL: [Self; 11] = [
        Self::Fedavg,
        Self::Median,
        Self::Krum,
        Self::TrimmedMean,
        Self::Bulyan,
        Self::GeometricMedian,
        Self::CenteredClipping,
        Self::NormBounding,
        Self::Fednova,
        Self::Scaffold,
        Self::Fltrust,
    ];
}

/// The `[strategy]` section: the rule (`kind`), who takes part, how members train, and the
/// optional `[strategy.server_optimizer]`.
///
/// ```toml
/// [strategy]
/// kind = "fedavg"          # or "fednova", "scaffold", "median", a robust rule
/// fraction_fit = 0.5
/// proximal_mu = 0.01       # FedProx (0: off)
/// fraction_evaluate = 0.2
/// [strategy.fit]
/// local_epochs = 2
/// [strategy.server_optimizer]
/// kind = "fedadam"         # or "fedavgm", "fedyogi", "fedadagrad"
/// learning_rate = 0.1
/// ```
///
/// A robust rule (`median`, `krum`, `trimmed_mean`, `bulyan`, `geometric_median`,
/// `centered_clipping`, `norm_bounding`) takes its settings from a sub-table named after it,
/// and optional pre-aggregators from `[strategy.nnm]` and `[strategy.bucketing]`:
///
/// ```toml
/// [strategy]
/// kind = "krum"
/// [strategy.krum]
/// byzantine = 2
/// multi = 5
/// [strategy.bucketing]
/// size = 2
/// ```
///
/// A robust rule may also flag anomalous members, keep their reputations and leave out those
/// whose reputation falls too low (`[strategy.detection]`, see [`DetectionConfig`]):
///
/// ```toml
/// [strategy.detection]
/// threshold = 3.5        # robust z-score above which a member is flagged in a round
/// reputation_rate = 0.2  # weight of the newest round in the reputation's moving average
/// exclude_below = 0.3    # members under this reputation are left out (default 0: nobody)
/// ```
///
/// Any rule may have its members scored on a validation set the aggregator holds
/// (`[strategy.contribution]`, see [`ContributionConfig`]; plain rounds only, and only where
/// the strategy is built with a validator: [`build_with_validator`](Self::build_with_validator)).
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
    /// FedProx (Li et al. 2020): members add `proximal_mu/2·‖w - w_global‖²` to their local
    /// loss, which keeps their models near the global one on skewed data. 0 (the default)
    /// leaves local training as it is; the paper tries 0.001 to 1. It is a member-side change
    /// only, so it works with every rule, secure aggregation and differential privacy.
    pub proximal_mu: f64,
    /// Local training settings sent with every fit instruction.
    pub fit: FitConfig,
    /// Settings sent with every evaluate instruction.
    pub evaluate: EvaluateConfig,
    /// An optimiser applied to the aggregated update; none adds it as it is (FedAvg).
    pub server_optimizer: Option<ServerOptimizerConfig>,
    /// `[strategy.krum]`: settings of `kind = "krum"` (required for it).
    pub krum: Option<KrumConfig>,
    /// `[strategy.trimmed_mean]`: settings of `kind = "trimmed_mean"` (β = 0.2 if absent).
    pub trimmed_mean: Option<TrimmedMeanConfig>,
    /// `[strategy.bulyan]`: settings of `kind = "bulyan"` (required for it).
    pub bulyan: Option<BulyanConfig>,
    /// `[strategy.geometric_median]`: settings of `kind = "geometric_median"` (defaults if
    /// absent).
    pub geometric_median: Option<GeometricMedianConfig>,
    /// `[strategy.centered_clipping]`: settings of `kind = "centered_clipping"` (required).
    pub centered_clipping: Option<CenteredClippingConfig>,
    /// `[strategy.norm_bounding]`: settings of `kind = "norm_bounding"` (required).
    pub norm_bounding: Option<NormBoundingConfig>,
    /// `[strategy.nnm]`: nearest-neighbour mixing in front of a robust rule.
    pub nnm: Option<NnmConfig>,
    /// `[strategy.bucketing]`: s-bucketing in front of a robust rule (after NNM if both).
    pub bucketing: Option<BucketingConfig>,
    /// `[strategy.contribution]`: leave-one-out and Shapley scores of every member of every
    /// round on the aggregator's validation set, reported as round metrics.
    pub contribution: Option<ContributionConfig>,
    /// `[strategy.scaffold]`: settings of `kind = "scaffold"` (`server_lr = 1` if absent).
    pub scaffold: Option<ScaffoldConfig>,
    /// `[strategy.detection]`: anomaly flags, reputation and exclusion under a robust rule.
    pub detection: Option<DetectionConfig>,
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
            proximal_mu: 0.0,
            fit: FitConfig::default(),
            evaluate: EvaluateConfig::default(),
            server_optimizer: None,
            krum: None,
            trimmed_mean: None,
            bulyan: None,
            geometric_median: None,
            centered_clipping: None,
            norm_bounding: None,
            nnm: None,
            bucketing: None,
            contribution: None,
            scaffold: None,
            detection: None,
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
    /// The rule needs a settings sub-table the file lacks.
    #[error(
        "[strategy] kind = \"{rule}\" needs a [strategy.{rule}] section (e.g. byzantine = ...)"
    )]
    MissingSettings {
        /// The rule's name.
        rule: &'static str,
    },
    /// A rule's settings sub-table is present, but another rule is selected.
    #[error(
        "[strategy.{section}] is set, but [strategy] kind = \"{rule}\": remove it or set kind = \"{section}\""
    )]
    SettingsForAnotherRule {
        /// The sub-table present.
        section: &'static str,
        /// The rule selected.
        rule: &'static str,
    },
    /// A pre-aggregator was asked for in front of a rule that is not robust.
    #[error("[strategy.{pre}] runs in front of a robust rule, but [strategy] kind = \"{rule}\"")]
    PreAggregatorWithoutRobustRule {
        /// The pre-aggregator's name.
        pre: &'static str,
        /// The rule selected.
        rule: &'static str,
    },
    /// The federation has fewer members per round than the rule's guarantee needs (Krum:
    /// `n > 2f + 2`, Bulyan: `n >= 4f + 3`; after bucketing, `n` counts buckets).
    #[error(
        "[strategy] kind = \"{rule}\" needs at least {needed} updates per round, but this \
         federation gives it {members}: lower byzantine, add members, or pick another rule"
    )]
    TooFewMembers {
        /// The rule (or pre-aggregator).
        rule: &'static str,
        /// Inputs the rule would get each round.
        members: usize,
        /// The fewest it works with.
        needed: usize,
    },
    /// Contribution scores were combined with secure aggregation or differential privacy,
    /// which hide the members' own updates.
    #[error(
        "[strategy.contribution] scores every member's own update, but {section} hides it: \
         drop one of the two"
    )]
    ContributionNeedsPlainUpdates {
        /// The section that hides the updates: `[secure_aggregation]` or `[privacy]`.
        section: &'static str,
    },
    /// Contribution scores were asked for, but the strategy was built without a validation
    /// set.
    #[error(
        "[strategy.contribution] needs a validation set held by the aggregator, and none was \
         given: the `fl-aggregator` binary holds one only for daofl's own models on a built-in \
         dataset (the held-out split); for another model remove [strategy.contribution], or run \
         the federation from a program that passes a Validator to \
         StrategyConfig::build_with_validator (as the `contribution` example does)"
    )]
    ContributionWithoutValidator,
    /// FLTrust was asked for, but the strategy was built without the root data's trainer.
    #[error(
        "[strategy] kind = \"fltrust\" trains on a root data set the aggregator holds, and none \
         was given: the `fl-aggregator` binary holds none yet, so pick another robust rule, or \
         run the federation from a program that passes the root data's Trainer to \
         StrategyConfig::build_with (as the robustness benchmark does)"
    )]
    FlTrustWithoutRootData,
    /// Detection was asked for without a robust rule to give it a robust centre.
    #[error(
        "[strategy.detection] scores members against a robust rule's aggregate, but [strategy] \
         kind = \"{rule}\": pick a robust rule (e.g. kind = \"trimmed_mean\" or \
         \"centered_clipping\"), or remove [strategy.detection]"
    )]
    DetectionWithoutRobustRule {
        /// The rule selected.
        rule: &'static str,
    },
    /// The detection settings are out of range.
    #[error(transparent)]
    Detection(#[from] super::detection::DetectionConfigError),
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
        if let Some(c) = &self.contribution {
            c.check()?;
            if secure.is_some() {
                return Err(BuildError::ContributionNeedsPlainUpdates {
                    section: "[secure_aggregation]",
                });
            }
            if privacy.is_some() {
                return Err(BuildError::ContributionNeedsPlainUpdates {
                    section: "[privacy]",
                });
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
        let mu = self.proximal_mu;
        if !(mu.is_finite() && mu >= 0.0) {
            return Err(super::StrategyError::Settings(format!(
                "proximal_mu = {mu} must be a finite number >= 0 (0 turns FedProx off)"
            ))
            .into());
        }
        match (self.scaffold, rule) {
            (Some(_), AggregationRule::Scaffold) | (None, _) => {}
            (Some(_), _) => {
                return Err(BuildError::SettingsForAnotherRule {
                    section: "scaffold",
                    rule: rule.name(),
                });
            }
        }
        self.scaffold.unwrap_or_default().check()?;
        let robust = self.robust_rule()?;
        if let Some(d) = &self.detection {
            if robust.is_none() && self.kind != AggregationRule::Fltrust {
                return Err(BuildError::DetectionWithoutRobustRule {
                    rule: self.kind.name(),
                });
            }
            d.validate()?;
        }
        Ok(())
    }

    /// [`check`](Self::check), and that a round of `members` selected members gives the rule
    /// the inputs its guarantee needs (what loading a federation file runs once the member
    /// list is known).
    pub fn check_members(&self, members: usize) -> Result<(), BuildError> {
        if let Some(c) = &self.contribution {
            c.check_members(members)?;
        }
        let Some(rule) = self.robust_rule()? else {
            return Ok(());
        };
        let mut n = members;
        for p in self.pre_aggregators() {
            if let PreAggregator::Nnm(c) = p
                && c.byzantine >= n
            {
                return Err(BuildError::TooFewMembers {
                    rule: "nnm",
                    members: n,
                    needed: c.byzantine + 1,
                });
            }
            n = p.outputs(n);
        }
        if n < rule.min_inputs() {
            return Err(BuildError::TooFewMembers {
                rule: rule.name(),
                members: n,
                needed: rule.min_inputs(),
            });
        }
        Ok(())
    }

    /// The configured pre-aggregators, in the order they run (NNM, then bucketing).
    pub fn pre_aggregators(&self) -> Vec<PreAggregator> {
        let mut pre = Vec::new();
        if let Some(c) = self.nnm {
            pre.push(PreAggregator::Nnm(c));
        }
        if let Some(c) = self.bucketing {
            pre.push(PreAggregator::Bucketing(c));
        }
        pre
    }

    /// The robust rule `kind` names, from its sub-table (none for FedAvg and FedNova); refuses
    /// missing, invalid or stray settings.
    pub fn robust_rule(&self) -> Result<Option<Box<dyn RobustRule>>, BuildError> {
        let kind = self.kind;
        let sections: [(&'static str, bool, AggregationRule); 6] = [
            ("krum", self.krum.is_some(), AggregationRule::Krum),
            (
                "trimmed_mean",
                self.trimmed_mean.is_some(),
                AggregationRule::TrimmedMean,
            ),
            ("bulyan", self.bulyan.is_some(), AggregationRule::Bulyan),
            (
                "geometric_median",
                self.geometric_median.is_some(),
                AggregationRule::GeometricMedian,
            ),
            (
                "centered_clipping",
                self.centered_clipping.is_some(),
                AggregationRule::CenteredClipping,
            ),
            (
                "norm_bounding",
                self.norm_bounding.is_some(),
                AggregationRule::NormBounding,
            ),
        ];
        for (section, present, rule) in sections {
            if present && rule != kind {
                return Err(BuildError::SettingsForAnotherRule {
                    section,
                    rule: kind.name(),
                });
            }
        }
        let missing = || BuildError::MissingSettings { rule: kind.name() };
        let rule: Box<dyn RobustRule> = match kind {
            AggregationRule::Fedavg | AggregationRule::Fednova | AggregationRule::Scaffold => {
                if let Some(p) = self.pre_aggregators().first() {
                    return Err(BuildError::PreAggregatorWithoutRobustRule {
                        pre: p.name(),
                        rule: kind.name(),
                    });
                }
                return Ok(None);
            }
            AggregationRule::Fltrust => {
                // Built with its root data's trainer in `build_with`.
                for p in self.pre_aggregators() {
                    p.check()?;
                }
                return Ok(None);
            }
            AggregationRule::Median => Box::new(MedianRule),
            AggregationRule::Krum => {
                let c = self.krum.ok_or_else(missing)?;
                c.check()?;
                Box::new(Krum::new(c))
            }
            AggregationRule::TrimmedMean => {
                let c = self.trimmed_mean.unwrap_or_default();
                c.check()?;
                Box::new(TrimmedMean::new(c))
            }
            AggregationRule::Bulyan => Box::new(Bulyan::new(self.bulyan.ok_or_else(missing)?)),
            AggregationRule::GeometricMedian => {
                let c = self.geometric_median.unwrap_or_default();
                c.check()?;
                Box::new(GeometricMedian::new(c))
            }
            AggregationRule::CenteredClipping => {
                let c = self.centered_clipping.ok_or_else(missing)?;
                c.check()?;
                Box::new(CenteredClipping::new(c))
            }
            AggregationRule::NormBounding => {
                let c = self.norm_bounding.ok_or_else(missing)?;
                c.check()?;
                Box::new(NormBounding::new(c))
            }
        };
        for p in self.pre_aggregators() {
            p.check()?;
        }
        Ok(Some(rule))
    }

    /// Builds the engine's strategy: the rule with its server optimiser, wrapped in
    /// differential privacy when `privacy` is set (accounted for `members` members and a model
    /// of `dim` values under `secure`). A robust rule's precondition on the member count is
    /// checked against the members a round selects out of `members` (0: unknown, not checked
    /// here; the round then aborts with [`StrategyError::TooFewMembers`](super::StrategyError::TooFewMembers)).
    ///
    /// Refuses `[strategy.contribution]` ([`BuildError::ContributionWithoutValidator`]): scores
    /// need a validation set, which [`build_with_validator`](Self::build_with_validator) takes.
    pub fn build(
        &self,
        privacy: Option<&PrivacyConfig>,
        secure: Option<&SecureAggregationConfig>,
        members: usize,
        dim: usize,
    ) -> Result<Box<dyn Strategy>, BuildError> {
        self.build_with_validator(privacy, secure, members, dim, None)
    }

    /// [`build`](Self::build), with the aggregator's validation set: when
    /// `[strategy.contribution]` is set, the rule is wrapped in a [`ContributionScored`] that
    /// scores every round on `validator` (without one it is refused); otherwise `validator` is
    /// not used.
    pub fn build_with_validator(
        &self,
        privacy: Option<&PrivacyConfig>,
        secure: Option<&SecureAggregationConfig>,
        members: usize,
        dim: usize,
        validator: Option<Box<dyn crate::Validator>>,
    ) -> Result<Box<dyn Strategy>, BuildError> {
        self.build_with(privacy, secure, members, dim, validator, None)
    }

    /// [`build_with_validator`](Self::build_with_validator), with the trainer of the
    /// aggregator's root data set that `kind = "fltrust"` trains every round (without one
    /// FLTrust is refused: [`BuildError::FlTrustWithoutRootData`]; other rules ignore it).
    pub fn build_with(
        &self,
        privacy: Option<&PrivacyConfig>,
        secure: Option<&SecureAggregationConfig>,
        members: usize,
        dim: usize,
        validator: Option<Box<dyn crate::Validator>>,
        root: Option<Box<dyn crate::Trainer>>,
    ) -> Result<Box<dyn Strategy>, BuildError> {
        self.check(privacy, secure)?;
        if members > 0 {
            self.check_members(self.expected_fit_clients(members))?;
        }
        let optimizer = self
            .server_optimizer
            .as_ref()
            .map(|o| o.build())
            .transpose()?;
        let rule: Box<dyn Strategy> = match self.robust_rule()? {
            None if self.kind == AggregationRule::Fednova => {
                Box::new(FedNova::new(self.clone()).with_optimizer(optimizer))
            }
            None if self.kind == AggregationRule::Scaffold => Box::new(
                Scaffold::new(self.clone(), self.scaffold.unwrap_or_default(), members)?
                    .with_optimizer(optimizer),
            ),
            None if self.kind == AggregationRule::Fltrust => {
                let root = root.ok_or(BuildError::FlTrustWithoutRootData)?;
                let rule = super::fltrust::FlTrust::new(root, self.fit.clone());
                Box::new(
                    RobustAggregator::new(self.clone(), Box::new(rule))
                        .with_pre_aggregators(self.pre_aggregators())
                        .with_optimizer(optimizer)
                        .with_detection(self.detection),
                )
            }
            None => Box::new(FedAvg::new(self.clone()).with_optimizer(optimizer)),
            Some(rule) => Box::new(
                RobustAggregator::new(self.clone(), rule)
                    .with_pre_aggregators(self.pre_aggregators())
                    .with_optimizer(optimizer)
                    .with_detection(self.detection),
            ),
        };
        let rule = match (self.contribution, validator) {
            (None, _) => rule,
            (Some(_), None) => return Err(BuildError::ContributionWithoutValidator),
            (Some(c), Some(v)) => Box::new(ContributionScored::new(rule, v, c)?),
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
    /// clients, drawn from `round_seed`, with [`fit`](Self::fit) and
    /// [`proximal_mu`](Self::proximal_mu) as their settings.
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
            config: FitConfig {
                proximal_mu: self.proximal_mu,
                ..self.fit.clone()
            },
            privacy: None,
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
    use super::super::StrategyError;
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
        let e = parse("kind = \"flame\"").unwrap_err().to_string();
        assert!(e.contains("flame") && e.contains("fltrust"), "{e}");
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
    fn yogi_and_adagrad_are_selected_by_kind_and_checked_at_load_time() {
        let c = parse("[server_optimizer]\nkind = \"fedyogi\"\n").unwrap();
        assert_eq!(
            c.server_optimizer,
            Some(ServerOptimizerConfig::Fedyogi(
                super::super::FedYogiConfig::default()
            ))
        );
        assert!(c.check(None, None).is_ok());
        let c =
            parse("[server_optimizer]\nkind = \"fedadagrad\"\nbeta1 = 0.0\ntau = 0.01\n").unwrap();
        assert!(matches!(
            c.server_optimizer,
            Some(ServerOptimizerConfig::Fedadagrad(ref a))
                if a.beta1 == 0.0 && a.tau == 0.01 && a.learning_rate == 0.1
        ));
        assert_eq!(
            c.server_optimizer.as_ref().unwrap().build().unwrap().name(),
            "fedadagrad"
        );
        assert_eq!(
            c.build(None, None, 4, 10).unwrap().name(),
            "fedavg",
            "an optimiser runs after the rule"
        );
        // Adagrad has no second-moment decay: a beta2 is a typo, named.
        let e = parse("[server_optimizer]\nkind = \"fedadagrad\"\nbeta2 = 0.9\n")
            .unwrap_err()
            .to_string();
        assert!(e.contains("beta2"), "{e}");
        for bad in [
            "kind = \"fedyogi\"\ntau = 0.0\n",
            "kind = \"fedyogi\"\nbeta2 = 1.0\n",
            "kind = \"fedadagrad\"\nlearning_rate = -1.0\n",
            "kind = \"fedadagrad\"\nbeta1 = 1.0\n",
        ] {
            let c = parse(&format!("[server_optimizer]\n{bad}")).unwrap();
            let e = c.check(None, None).unwrap_err();
            assert!(
                matches!(e, BuildError::Strategy(StrategyError::Settings(_))),
                "{bad}: {e}"
            );
            assert!(e.to_string().starts_with("[strategy]"), "{e}");
        }
    }

    #[test]
    fn proximal_mu_is_read_from_the_strategy_checked_and_sent_to_members() {
        let c = parse("proximal_mu = 0.01\n[fit]\nlocal_epochs = 3\n").unwrap();
        assert_eq!(c.proximal_mu, 0.01);
        assert!(c.check(None, None).is_ok());
        let secure: SecureAggregationConfig =
            toml::from_str("protocol = \"secagg+\"\nclip_norm = 1.0\n").unwrap();
        assert!(c.check(None, Some(&secure)).is_ok(), "a member-side change");
        let plan = c.plan_fit(&[ClientId(1), ClientId(2)], 5);
        assert_eq!(plan.config.proximal_mu, 0.01);
        assert_eq!(plan.config.local_epochs, 3);
        assert_eq!(
            StrategyConfig::default().plan_fit(&[ClientId(1)], 5).config,
            FitConfig::default()
        );
        // One place to set it: [strategy.fit] does not take it.
        let e = parse("[fit]\nproximal_mu = 0.01\n")
            .unwrap_err()
            .to_string();
        assert!(e.contains("proximal_mu"), "{e}");
        for mu in [-0.1, f64::NAN, f64::INFINITY] {
            let c = StrategyConfig {
                proximal_mu: mu,
                ..Default::default()
            };
            let e = c.check(None, None).unwrap_err();
            assert!(
                matches!(e, BuildError::Strategy(StrategyError::Settings(_))),
                "{e}"
            );
            assert!(e.to_string().contains("proximal_mu"), "{e}");
            assert!(c.build(None, None, 2, 4).is_err());
        }
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

    #[test]
    fn a_per_member_rule_under_homomorphic_aggregation_is_refused_too() {
        // `protocol = "he"` with its committee: a valid section (not what is refused), which
        // like SecAgg+ reveals only the sum of the members' updates.
        let he: SecureAggregationConfig = toml::from_str(
            "protocol = \"he\"\n[committee]\nmembers = 3\nthreshold = 2\nmin_contributors = 2\n",
        )
        .unwrap();
        assert_eq!(he.protocol, crate::secure::SecureProtocol::Homomorphic);
        assert_eq!(he.validate(), Ok(()));
        let median = StrategyConfig {
            kind: AggregationRule::Median,
            ..Default::default()
        };
        let e = median.check(None, Some(&he)).unwrap_err();
        assert_eq!(
            e,
            BuildError::PerMemberUnderSecureAggregation { rule: "median" }
        );
        assert!(e.to_string().contains("kind = \"fedavg\""), "{e}");
        assert!(matches!(
            median.build(None, Some(&he), 4, 10),
            Err(BuildError::PerMemberUnderSecureAggregation { rule: "median" })
        ));
        // Every per-member rule, before its own settings are even looked at; FedAvg runs.
        for rule in AggregationRule::ALL {
            let c = parse(&format!("kind = \"{}\"", rule.name())).unwrap();
            if rule == AggregationRule::Fedavg {
                assert!(c.check(None, Some(&he)).is_ok());
            } else {
                assert_eq!(
                    c.check(None, Some(&he)).unwrap_err(),
                    BuildError::PerMemberUnderSecureAggregation { rule: rule.name() }
                );
            }
        }
    }

    #[test]
    fn fednova_is_a_per_member_rule_refused_under_secure_aggregation_and_privacy() {
        let c = parse("kind = \"fednova\"\nproximal_mu = 0.01\n").unwrap();
        assert_eq!(c.kind, AggregationRule::Fednova);
        assert_eq!(c.kind.update_form(), UpdateForm::PerMember);
        assert!(c.check(None, None).is_ok());
        assert!(c.robust_rule().unwrap().is_none());
        let built = c.build(None, None, 4, 10).unwrap();
        assert_eq!(built.name(), "fednova");
        assert_eq!(built.update_form(), UpdateForm::PerMember);
        let secure: SecureAggregationConfig =
            toml::from_str("protocol = \"secagg+\"\nclip_norm = 1.0\n").unwrap();
        assert_eq!(
            c.check(None, Some(&secure)).unwrap_err(),
            BuildError::PerMemberUnderSecureAggregation { rule: "fednova" }
        );
        assert!(matches!(
            c.build(None, Some(&secure), 4, 10),
            Err(BuildError::PerMemberUnderSecureAggregation { rule: "fednova" })
        ));
        let privacy: PrivacyConfig = toml::from_str(
            "mechanism = \"central\"\nclip_norm = 1.0\nnoise_multiplier = 1.0\nepsilon = 10.0\n\
             delta = 1e-5\n",
        )
        .unwrap();
        assert_eq!(
            c.check(Some(&privacy), None).unwrap_err(),
            BuildError::PerMemberUnderPrivacy { rule: "fednova" }
        );
        let pre = parse("kind = \"fednova\"\n[bucketing]\nsize = 2\n").unwrap();
        assert_eq!(
            pre.check(None, None).unwrap_err(),
            BuildError::PreAggregatorWithoutRobustRule {
                pre: "bucketing",
                rule: "fednova"
            }
        );
        let stray = parse("kind = \"fednova\"\n[krum]\nbyzantine = 1\n").unwrap();
        assert!(matches!(
            stray.check(None, None),
            Err(BuildError::SettingsForAnotherRule {
                section: "krum",
                ..
            })
        ));
        let with_opt =
            parse("kind = \"fednova\"\n[server_optimizer]\nkind = \"fedyogi\"\n").unwrap();
        assert_eq!(with_opt.build(None, None, 4, 10).unwrap().name(), "fednova");
    }

    #[test]
    fn robust_rules_read_their_sub_tables() {
        let c = parse("kind = \"krum\"\n[krum]\nbyzantine = 2\nmulti = 5\n").unwrap();
        assert_eq!(
            c.krum,
            Some(KrumConfig {
                byzantine: 2,
                multi: 5
            })
        );
        assert!(c.check(None, None).is_ok());
        assert_eq!(c.robust_rule().unwrap().unwrap().name(), "krum");
        let c = parse("kind = \"trimmed_mean\"").unwrap();
        assert_eq!(c.robust_rule().unwrap().unwrap().name(), "trimmed_mean");
        let c = parse(
            "kind = \"centered_clipping\"\n[centered_clipping]\ntau = 0.5\n[bucketing]\nsize = 2\n\
             [nnm]\nbyzantine = 4\n",
        )
        .unwrap();
        assert_eq!(c.centered_clipping.unwrap().momentum, 0.9);
        assert_eq!(c.pre_aggregators().len(), 2);
        assert!(matches!(c.pre_aggregators()[0], PreAggregator::Nnm(_)));
        for rule in AggregationRule::ALL {
            let toml = format!("kind = \"{}\"", rule.name());
            assert_eq!(parse(&toml).unwrap().kind, rule);
        }
        let e = parse("kind = \"krum\"\n[krum]\nbyzantine = 2\nf = 1\n")
            .unwrap_err()
            .to_string();
        assert!(e.contains('f'), "{e}");
        assert!(parse("[bucketing]\nsize = 2\ns = 3\n").is_err());
    }

    #[test]
    fn robust_settings_are_refused_by_name() {
        let krum = parse("kind = \"krum\"").unwrap();
        assert_eq!(
            krum.check(None, None).unwrap_err(),
            BuildError::MissingSettings { rule: "krum" }
        );
        for kind in ["bulyan", "centered_clipping", "norm_bounding"] {
            let c = parse(&format!("kind = \"{kind}\"")).unwrap();
            assert!(matches!(
                c.check(None, None),
                Err(BuildError::MissingSettings { rule }) if rule == kind
            ));
        }
        let stray = parse("kind = \"median\"\n[bulyan]\nbyzantine = 1\n").unwrap();
        assert_eq!(
            stray.check(None, None).unwrap_err(),
            BuildError::SettingsForAnotherRule {
                section: "bulyan",
                rule: "median"
            }
        );
        let pre = parse("[bucketing]\nsize = 2\n").unwrap();
        assert_eq!(
            pre.check(None, None).unwrap_err(),
            BuildError::PreAggregatorWithoutRobustRule {
                pre: "bucketing",
                rule: "fedavg"
            }
        );
        let beta = parse("kind = \"trimmed_mean\"\n[trimmed_mean]\nbeta = 0.5\n").unwrap();
        assert!(matches!(
            beta.check(None, None),
            Err(BuildError::Strategy(StrategyError::Settings(_)))
        ));
        let secure: SecureAggregationConfig =
            toml::from_str("protocol = \"secagg+\"\nclip_norm = 1.0\n").unwrap();
        let cc = parse("kind = \"centered_clipping\"\n[centered_clipping]\ntau = 1.0\n").unwrap();
        assert_eq!(
            cc.check(None, Some(&secure)).unwrap_err(),
            BuildError::PerMemberUnderSecureAggregation {
                rule: "centered_clipping"
            }
        );
    }

    #[test]
    fn preconditions_on_the_member_count_are_checked_at_load_time() {
        let bulyan = parse("kind = \"bulyan\"\n[bulyan]\nbyzantine = 4\n").unwrap();
        // n >= 4f + 3 = 19.
        assert!(bulyan.check_members(19).is_ok());
        assert_eq!(
            bulyan.check_members(18),
            Err(BuildError::TooFewMembers {
                rule: "bulyan",
                members: 18,
                needed: 19
            })
        );
        assert!(matches!(
            bulyan.build(None, None, 18, 10),
            Err(BuildError::TooFewMembers { rule: "bulyan", .. })
        ));
        assert_eq!(bulyan.build(None, None, 20, 10).unwrap().name(), "bulyan");
        // Krum: n > 2f + 2; with buckets of 2, 20 members are 10 inputs.
        let krum =
            parse("kind = \"krum\"\n[krum]\nbyzantine = 4\n[bucketing]\nsize = 2\n").unwrap();
        assert_eq!(
            krum.check_members(20),
            Err(BuildError::TooFewMembers {
                rule: "krum",
                members: 10,
                needed: 11
            })
        );
        assert!(krum.check_members(22).is_ok());
        let nnm = parse("kind = \"median\"\n[nnm]\nbyzantine = 5\n").unwrap();
        assert!(matches!(
            nnm.check_members(5),
            Err(BuildError::TooFewMembers {
                rule: "nnm",
                members: 5,
                needed: 6
            })
        ));
        assert!(StrategyConfig::default().check_members(0).is_ok());
    }
}
