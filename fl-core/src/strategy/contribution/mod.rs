//! Contribution scores: how much each member's update of a round was worth, measured on a
//! validation set the aggregator holds, so that a DAO can pay members by it.
//!
//! A round is a cooperative game ([`UpdateGame`]): the value of a coalition of members is the
//! validation utility ([`Validator`]) of the round's FedAvg aggregate rebuilt from their updates
//! alone, without retraining: by default with the members outside the coalition counted as
//! having sent the global model back ([`CoalitionModel::RoundShare`]), or as the coalition's own
//! FedAvg ([`CoalitionModel::Fedavg`], GTG-Shapley's reconstruction). The empty coalition keeps
//! the current global model. Over that game, per member and round:
//!
//! - **leave-one-out** ([`leave_one_out`]): `v(N) - v(N ∖ {i})`, `n + 1` evaluations; cheap,
//!   but a member whose update others duplicate scores near 0;
//! - **the Shapley value**: sampled by GTG-Shapley ([`gtg_shapley`], Liu et al. 2022: guided
//!   permutations, within-round and between-round truncation), at most
//!   `permutations · (n - 1)` evaluations and usually far fewer; or exact ([`exact_shapley`],
//!   `2ⁿ` evaluations, up to 16 members) for small rounds and tests.
//!
//! [`ContributionScored`] wraps any strategy and reports the scores of every round as round
//! metrics (`contribution.<client>.loo`, `contribution.<client>.shapley`, the evaluations spent),
//! which the aggregator writes into the round's checkpoint manifest ([`scores_in`] reads them
//! back): rewards can be computed from the manifests, and anyone holding the validation set and
//! the round's updates can recompute them (the permutations are seeded from the round seed).
//! The on-chain anchor commits to the metrics too (their digest is a leaf of the anchored
//! participants root, see `fl_aggregator::anchoring`), so a score changed after anchoring no
//! longer matches the chain.
//!
//! A free rider (who sends the global model back) is a null player of the default game and
//! scores exactly 0; a member whose update hurts the validation utility (label flipping) scores
//! below 0. Under the coalition's own FedAvg a free rider instead shrinks every coalition's
//! step, which a validation loss can reward: see [`CoalitionModel`].
//!
//! It needs every member's update in the clear, so it cannot run under secure aggregation or
//! differential privacy, and it needs a validation set: `[strategy.contribution]` in a
//! federation file is refused by [`StrategyConfig::build`](super::StrategyConfig::build), and
//! accepted by [`StrategyConfig::build_with_validator`](super::StrategyConfig::build_with_validator).

use serde::{Deserialize, Serialize};

use crate::params::ParamVec;
use crate::round::{ClientId, Metrics};
use crate::validator::Validator;

use super::{MemberUpdate, StrategyError, member_deltas};

mod game;
mod scored;
mod shapley;

pub use game::{CoalitionGame, Memo, UpdateGame};
pub use scored::ContributionScored;
pub use shapley::{
    GtgSettings, MAX_EXACT_PLAYERS, SampledShapley, exact_shapley, gtg_shapley, leave_one_out,
    ranks, spearman,
};

/// How the Shapley value of a round is computed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ShapleyMethod {
    /// GTG-Shapley: sampled permutations with truncation.
    #[default]
    Gtg,
    /// Every coalition (`2ⁿ` evaluations); rounds of at most [`MAX_EXACT_PLAYERS`] members.
    Exact,
}

/// How a coalition's model averages its members' updates.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Weighting {
    /// By the example counts members report, as FedAvg does.
    #[default]
    Examples,
    /// Every member alike, as the robust rules do (a liar gains nothing by claiming examples).
    Uniform,
}

/// Which model a coalition of members stands for.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum CoalitionModel {
    /// The round's FedAvg with the members outside the coalition counted as having sent the
    /// global model back, `Σ_S wᵢδᵢ / Σ_N wᵢ`: a free rider is a null player and scores exactly
    /// 0, and a member whose update hurts scores below it.
    #[default]
    RoundShare,
    /// The FedAvg of the coalition's own updates, `Σ_S wᵢδᵢ / Σ_S wᵢ` (GTG-Shapley's
    /// reconstruction): the round as if only the coalition had taken part. A free rider then
    /// shrinks every coalition's step; on non-IID members, whose small coalitions overshoot,
    /// the validation utility rewards that (measured on digits: free riders ranked among the
    /// most valuable by validation loss).
    Fedavg,
}

/// `[strategy.contribution]`: score every member of every round.
///
/// ```toml
/// [strategy.contribution]
/// shapley = "gtg"          # or "exact" (2^n evaluations, at most 16 members a round)
/// permutations = 100       # GTG: most permutations a round
/// truncation = 0.005       # GTG: stop a permutation within this of v(N) (0: never)
/// round_truncation = 0.001 # GTG: all 0 when |v(N) - v(before)| is below this (0: never)
/// convergence = 0.05       # GTG: stop when a cycle of n permutations moves the values less
/// weighting = "examples"   # or "uniform"
/// coalition = "round_share" # or "fedavg" (GTG-Shapley's own reconstruction)
/// exact_up_to = 0          # also the exact value in rounds of at most this many members
/// ```
///
/// Tolerances are in the validator's utility units (accuracy: 0.005 is half a point).
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ContributionConfig {
    /// How the Shapley value is computed.
    pub shapley: ShapleyMethod,
    /// GTG: most permutations sampled a round.
    pub permutations: usize,
    /// GTG within-round truncation: once a permutation's coalition is within this of the
    /// whole round's utility, the remaining members' gains count as 0 unevaluated (0: never).
    pub truncation: f64,
    /// GTG between-round truncation: a round that moved the utility by less than this (or
    /// than `truncation`) gives every member 0 after two evaluations (0: never).
    pub round_truncation: f64,
    /// GTG: stop once a cycle of `n` permutations (every member leading once) moved the values
    /// by less than this fraction of their L1 norm (0: run every permutation).
    pub convergence: f64,
    /// How coalitions average their members' updates.
    pub weighting: Weighting,
    /// Which model a coalition stands for.
    pub coalition: CoalitionModel,
    /// Also compute the exact Shapley value (`contribution.<client>.exact`) in rounds of at
    /// most this many members (0: never; at most [`MAX_EXACT_PLAYERS`]).
    pub exact_up_to: usize,
}

impl Default for ContributionConfig {
    fn default() -> Self {
        Self {
            shapley: ShapleyMethod::Gtg,
            permutations: 100,
            truncation: 0.005,
            round_truncation: 0.001,
            convergence: 0.05,
            weighting: Weighting::Examples,
            coalition: CoalitionModel::RoundShare,
            exact_up_to: 0,
        }
    }
}

impl ContributionConfig {
    /// Refuses no permutations, negative or non-finite tolerances and an `exact_up_to` above
    /// [`MAX_EXACT_PLAYERS`].
    pub fn check(&self) -> Result<(), StrategyError> {
        let bad = |m: String| {
            Err(StrategyError::Settings(format!(
                "[strategy.contribution] {m}"
            )))
        };
        if self.permutations == 0 {
            return bad("permutations must be at least 1".into());
        }
        for (name, v) in [
            ("truncation", self.truncation),
            ("round_truncation", self.round_truncation),
            ("convergence", self.convergence),
        ] {
            if !(v.is_finite() && v >= 0.0) {
                return bad(format!(
                    "{name} = {v} must be a finite number >= 0 (0: off)"
                ));
            }
        }
        if self.exact_up_to > MAX_EXACT_PLAYERS {
            return bad(format!(
                "exact_up_to = {} is above {MAX_EXACT_PLAYERS}: the exact value evaluates 2^n \
                 coalitions",
                self.exact_up_to
            ));
        }
        Ok(())
    }

    /// [`check`](Self::check), and that `shapley = "exact"` gets rounds of at most
    /// [`MAX_EXACT_PLAYERS`] members (`members` selected per round).
    pub fn check_members(&self, members: usize) -> Result<(), StrategyError> {
        self.check()?;
        if self.shapley == ShapleyMethod::Exact && members > MAX_EXACT_PLAYERS {
            return Err(StrategyError::Settings(format!(
                "[strategy.contribution] shapley = \"exact\" evaluates 2^n coalitions and takes \
                 at most {MAX_EXACT_PLAYERS} members a round, this federation selects {members}: \
                 use shapley = \"gtg\""
            )));
        }
        Ok(())
    }

    /// The GTG settings of a round seeded by `seed`.
    pub fn gtg(&self, seed: u64) -> GtgSettings {
        GtgSettings {
            max_permutations: self.permutations,
            truncation: self.truncation,
            round_truncation: self.round_truncation,
            convergence: self.convergence,
            seed,
        }
    }
}

/// Why a round's contribution scores could not be computed.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[non_exhaustive]
pub enum ContributionError {
    /// A coalition named a player the game does not have.
    #[error("player {player} is not one of the game's {players}")]
    NoSuchPlayer {
        /// The index asked for.
        player: usize,
        /// Players in the game.
        players: usize,
    },
    /// The validator returned NaN or an infinity.
    #[error("the validator returned the utility {value}; utilities must be finite")]
    NonFiniteUtility {
        /// What it returned.
        value: f64,
    },
    /// The validator failed.
    #[error("validation failed: {0}")]
    Validator(String),
    /// The updates and the global model (or the example counts) differ in length.
    #[error("the updates do not match the global model")]
    Shape,
    /// The exact Shapley value was asked for too many players.
    #[error("the exact Shapley value takes at most {max} members, the round has {players}")]
    TooManyForExact {
        /// Players in the game.
        players: usize,
        /// The most [`exact_shapley`] takes.
        max: usize,
    },
    /// A member's update is unusable (another schema, non-finite values).
    #[error(transparent)]
    Update(#[from] StrategyError),
}

/// One member's scores in one round.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct MemberContribution {
    /// The member.
    pub client: ClientId,
    /// Leave-one-out: `v(N) - v(N ∖ {i})`.
    pub loo: f64,
    /// The Shapley value (sampled or exact, per [`ContributionConfig::shapley`]).
    pub shapley: f64,
    /// The exact Shapley value, when [`ContributionConfig::exact_up_to`] asked for it.
    pub exact: Option<f64>,
}

/// A round's contribution scores and their cost.
#[derive(Debug, Clone, PartialEq)]
pub struct RoundScores {
    /// Per member, in the order of the round's updates (ascending client id).
    pub members: Vec<MemberContribution>,
    /// `v(∅)`: the utility of the global model the round started from.
    pub utility_before: f64,
    /// `v(N)`: the utility of the FedAvg aggregate of every update of the round.
    pub utility_all: f64,
    /// Validator calls for leave-one-out (with `v(∅)` and `v(N)` under GTG).
    pub loo_evaluations: usize,
    /// Further validator calls for the Shapley value (coalitions already valued are reused;
    /// with `v(∅)` and `v(N)` under the exact method, which runs first).
    pub shapley_evaluations: usize,
    /// Further validator calls for the exact value asked for by `exact_up_to`.
    pub exact_evaluations: usize,
    /// GTG permutations sampled (0 for the exact method).
    pub permutations: usize,
    /// Marginal gains GTG set to 0 by within-round truncation.
    pub truncated: usize,
    /// Whether truncation gave every member 0 (the round moved the utility by less than a
    /// tolerance).
    pub round_truncated: bool,
}

impl RoundScores {
    /// Validator calls in all.
    pub fn evaluations(&self) -> usize {
        self.loo_evaluations + self.shapley_evaluations + self.exact_evaluations
    }

    /// The scores as round metrics: `contribution.<client>.{loo,shapley,exact}`,
    /// `contribution.utility_before`, `contribution.utility_all`, `contribution.evaluations`
    /// (and per method `.evaluations_loo`, `_shapley`, `_exact`), `contribution.permutations`,
    /// `contribution.truncated`, `contribution.round_truncated` (0 or 1).
    pub fn metrics(&self) -> Metrics {
        let mut m = Metrics::new();
        for s in &self.members {
            let c = s.client.0;
            m.insert(format!("contribution.{c}.loo"), s.loo);
            m.insert(format!("contribution.{c}.shapley"), s.shapley);
            if let Some(e) = s.exact {
                m.insert(format!("contribution.{c}.exact"), e);
            }
        }
        let mut put = |k: &str, v: f64| m.insert(format!("contribution.{k}"), v);
        put("utility_before", self.utility_before);
        put("utility_all", self.utility_all);
        put("evaluations", self.evaluations() as f64);
        put("evaluations_loo", self.loo_evaluations as f64);
        put("evaluations_shapley", self.shapley_evaluations as f64);
        if self.members.iter().any(|s| s.exact.is_some()) {
            put("evaluations_exact", self.exact_evaluations as f64);
        }
        put("permutations", self.permutations as f64);
        put("truncated", self.truncated as f64);
        put("round_truncated", f64::from(u8::from(self.round_truncated)));
        m
    }
}

/// The members' scores recorded in a round's metrics (a checkpoint manifest's `metrics`), as
/// [`RoundScores::metrics`] wrote them, in ascending client order: what a reward computation
/// reads back. Keys that are not a member's `loo`, `shapley` or `exact` are ignored; a member
/// without both `loo` and `shapley` is left out.
pub fn scores_in(metrics: &Metrics) -> Vec<MemberContribution> {
    let mut found: std::collections::BTreeMap<u64, [Option<f64>; 3]> = Default::default();
    for (key, &value) in metrics {
        let Some(rest) = key.strip_prefix("contribution.") else {
            continue;
        };
        let Some((client, what)) = rest.split_once('.') else {
            continue;
        };
        let (Ok(client), Some(slot)) = (
            client.parse::<u64>(),
            ["loo", "shapley", "exact"].iter().position(|w| *w == what),
        ) else {
            continue;
        };
        found.entry(client).or_default()[slot] = Some(value);
    }
    found
        .into_iter()
        .filter_map(|(c, [loo, shapley, exact])| {
            Some(MemberContribution {
                client: ClientId(c),
                loo: loo?,
                shapley: shapley?,
                exact,
            })
        })
        .collect()
}

/// Scores every member of a round: the members' `updates` to `current`, valued by
/// `validator`, GTG permutations seeded by `seed`. Each coalition is evaluated once for all the
/// methods together.
pub fn score_round(
    config: &ContributionConfig,
    current: &ParamVec,
    updates: &[MemberUpdate],
    validator: &mut dyn Validator,
    seed: u64,
) -> Result<RoundScores, ContributionError> {
    config.check()?;
    let deltas = member_deltas(current, updates)?;
    let examples: Vec<u64> = updates.iter().map(|u| u.weight).collect();
    let n = updates.len();
    let game = UpdateGame::new(
        current,
        &deltas,
        &examples,
        config.weighting,
        config.coalition,
        validator,
    )?;
    let mut game = Memo::new(game);
    let utility_before = game.value(&[])?;
    let utility_all = game.value(&(0..n).collect::<Vec<_>>())?;
    // The first method computed is charged v(∅) and v(N) as well.
    let (shapley, sampled, shapley_evaluations, loo, loo_evaluations);
    match config.shapley {
        ShapleyMethod::Gtg => {
            loo = leave_one_out(&mut game)?;
            loo_evaluations = game.evaluations();
            sampled = gtg_shapley(&mut game, &config.gtg(seed))?;
            shapley = sampled.values.clone();
            shapley_evaluations = game.evaluations() - loo_evaluations;
        }
        ShapleyMethod::Exact => {
            shapley = exact_shapley(&mut game)?;
            shapley_evaluations = game.evaluations();
            loo = leave_one_out(&mut game)?;
            loo_evaluations = game.evaluations() - shapley_evaluations;
            sampled = SampledShapley {
                values: Vec::new(),
                permutations: 0,
                truncated: 0,
                round_truncated: false,
            };
        }
    }
    let so_far = game.evaluations();
    let exact = if config.shapley == ShapleyMethod::Gtg && n <= config.exact_up_to {
        Some(exact_shapley(&mut game)?)
    } else {
        None
    };
    let exact_evaluations = game.evaluations() - so_far;
    let members = updates
        .iter()
        .enumerate()
        .map(|(i, u)| MemberContribution {
            client: u.client,
            loo: loo[i],
            shapley: shapley[i],
            exact: exact.as_ref().map(|e| e[i]),
        })
        .collect();
    Ok(RoundScores {
        members,
        utility_before,
        utility_all,
        loo_evaluations,
        shapley_evaluations,
        exact_evaluations,
        permutations: sampled.permutations,
        truncated: sampled.truncated,
        round_truncated: sampled.round_truncated,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::dp::PrivacyConfig;
    use crate::secure::SecureAggregationConfig;
    use crate::strategy::{BuildError, StrategyConfig};
    use crate::trainer::TrainerError;

    fn validator() -> Box<dyn Validator> {
        Box::new(|_: &ParamVec| -> Result<f64, TrainerError> { Ok(0.0) })
    }

    #[test]
    fn the_section_parses_with_defaults_and_typos_are_named() {
        let c: StrategyConfig = toml::from_str(
            "kind = \"trimmed_mean\"\n[contribution]\npermutations = 40\nweighting = \"uniform\"\n",
        )
        .unwrap();
        let contribution = c.contribution.unwrap();
        assert_eq!(contribution.permutations, 40);
        assert_eq!(contribution.weighting, Weighting::Uniform);
        assert_eq!(contribution.shapley, ShapleyMethod::Gtg);
        assert_eq!(contribution.truncation, 0.005);
        assert_eq!(contribution.coalition, CoalitionModel::RoundShare);
        let c: StrategyConfig = toml::from_str("[contribution]\ncoalition = \"fedavg\"\n").unwrap();
        assert_eq!(c.contribution.unwrap().coalition, CoalitionModel::Fedavg);
        assert!(c.check(None, None).is_ok());
        for typo in [
            "permutation = 4",
            "shapley = \"tmc\"",
            "weighting = \"stake\"",
            "coalition = \"mean\"",
        ] {
            let e = toml::from_str::<StrategyConfig>(&format!("[contribution]\n{typo}\n"))
                .unwrap_err()
                .to_string();
            let word = typo.split([' ', '"']).find(|w| !w.is_empty()).unwrap();
            assert!(e.contains(word) || e.contains("variant"), "{typo}: {e}");
        }
    }

    #[test]
    fn scores_read_back_from_round_metrics() {
        let members = vec![
            MemberContribution {
                client: ClientId(2),
                loo: -0.5,
                shapley: 0.25,
                exact: Some(0.3),
            },
            MemberContribution {
                client: ClientId(10),
                loo: 0.0,
                shapley: -1.0,
                exact: None,
            },
        ];
        let scores = RoundScores {
            members: members.clone(),
            utility_before: 0.1,
            utility_all: 0.2,
            loo_evaluations: 3,
            shapley_evaluations: 4,
            exact_evaluations: 0,
            permutations: 2,
            truncated: 1,
            round_truncated: false,
        };
        let mut m = scores.metrics();
        assert_eq!(m["contribution.evaluations"], 7.0);
        assert_eq!(m["contribution.10.shapley"], -1.0);
        m.insert("contribution.x.loo".into(), 1.0);
        m.insert("contribution.7.loo".into(), 1.0);
        m.insert("qa.2.norm".into(), 1.0);
        assert_eq!(scores_in(&m), members);
    }

    #[test]
    fn bad_settings_and_hidden_updates_are_refused_with_typed_errors() {
        for bad in [
            "permutations = 0",
            "truncation = -0.1",
            "convergence = nan",
            "round_truncation = inf",
            "exact_up_to = 17",
        ] {
            let c: StrategyConfig = toml::from_str(&format!("[contribution]\n{bad}\n")).unwrap();
            let e = c.check(None, None).unwrap_err();
            assert!(
                matches!(e, BuildError::Strategy(StrategyError::Settings(_))),
                "{bad}: {e}"
            );
            assert!(e.to_string().contains("[strategy.contribution]"), "{e}");
        }
        let c: StrategyConfig = toml::from_str("[contribution]\n").unwrap();
        let secure: SecureAggregationConfig =
            toml::from_str("protocol = \"secagg+\"\nclip_norm = 1.0\n").unwrap();
        assert_eq!(
            c.check(None, Some(&secure)).unwrap_err(),
            BuildError::ContributionNeedsPlainUpdates {
                section: "[secure_aggregation]"
            }
        );
        let privacy: PrivacyConfig = toml::from_str(
            "mechanism = \"central\"\nclip_norm = 1.0\nnoise_multiplier = 1.0\nepsilon = 10.0\n\
             delta = 1e-5\n",
        )
        .unwrap();
        assert_eq!(
            c.check(Some(&privacy), None).unwrap_err(),
            BuildError::ContributionNeedsPlainUpdates {
                section: "[privacy]"
            }
        );
        let exact: StrategyConfig =
            toml::from_str("[contribution]\nshapley = \"exact\"\n").unwrap();
        assert!(exact.check_members(16).is_ok());
        assert!(matches!(
            exact.check_members(17),
            Err(BuildError::Strategy(StrategyError::Settings(e))) if e.contains("gtg")
        ));
    }

    #[test]
    fn building_needs_a_validator_only_when_scores_are_asked_for() {
        let c: StrategyConfig = toml::from_str("kind = \"median\"\n[contribution]\n").unwrap();
        let Err(e) = c.build(None, None, 4, 10) else {
            panic!("built without a validator");
        };
        assert_eq!(e, BuildError::ContributionWithoutValidator);
        assert!(e.to_string().contains("build_with_validator"), "{e}");
        let built = c
            .build_with_validator(None, None, 4, 10, Some(validator()))
            .unwrap();
        assert_eq!(built.name(), "median");
        assert_eq!(built.update_form(), crate::UpdateForm::PerMember);
        let fedavg = StrategyConfig::default()
            .build_with_validator(None, None, 4, 10, Some(validator()))
            .unwrap();
        assert_eq!(fedavg.update_form(), crate::UpdateForm::Sum, "not wrapped");
    }
}
