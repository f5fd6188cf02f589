//! The DAO's deployment configuration: one TOML file.

use std::path::Path;

use alloy::primitives::{Address, U256};
use serde::{Deserialize, Serialize};

use crate::{Error, Result};

/// Seconds in a day.
pub const DAY: u64 = 86_400;
/// Seconds in a (365-day) year, the unit of the vesting and release schedules.
pub const YEAR: u64 = 365 * DAY;
/// The timelock's minimum delay the issue fixes: 7 days (a configuration may only lengthen it).
pub const MIN_TIMELOCK_DELAY: u64 = 7 * DAY;
/// Team vesting: 4 years linear.
pub const TEAM_VESTING: u64 = 4 * YEAR;
/// Early-investor vesting: 2 years linear.
pub const INVESTOR_VESTING: u64 = 2 * YEAR;
/// Data-contributor pool: released linearly over 10 years.
pub const DATA_POOL_RELEASE: u64 = 10 * YEAR;

/// `n` whole tokens in base units (18 decimals).
pub fn tokens(n: u64) -> U256 {
    U256::from(n) * U256::from(10u64).pow(U256::from(18))
}

/// The whole DAO: `[token]`, `[allocation]`, `[governance]`, `[staking]`, `[model]`, `[settlement]`,
/// `[fees]`, `[annotations]`.
///
/// ```toml
/// [token]
/// name = "daofl Proposal"
/// symbol = "PROPOSAL"
///
/// [allocation]
/// team = "0x70997970C51812dc3A010C7d01b50e0d17dc79C8"
/// investors = "0x3C44CdDdB6a900fa2b585dd299e03d12FA4293BC"
///
/// [governance]
/// guardian = "0x90F79bf6EB2c4f870365E785982E1f101E93b906"
/// ```
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DaoConfig {
    /// The token's name and symbol.
    #[serde(default)]
    pub token: TokenConfig,
    /// Beneficiaries and start times of the allocation.
    pub allocation: AllocationConfig,
    /// Governor and timelock parameters.
    pub governance: GovernanceConfig,
    /// Staking minimums and delays.
    #[serde(default)]
    pub staking: StakingConfig,
    /// Model registry settings.
    #[serde(default)]
    pub model: ModelConfig,
    /// QA validators and settlement parameters (the three Settlement instances: training,
    /// inference and data).
    #[serde(default)]
    pub settlement: SettlementConfig,
    /// Inference fees: the withdrawal delay and the minimum fee per request.
    #[serde(default)]
    pub fees: FeesConfig,
    /// Annotation epochs: who opens them, commit and reveal periods, annotators per item.
    #[serde(default)]
    pub annotations: AnnotationsConfig,
}

/// `[annotations]`: the AnnotationBook's governed parameters at deployment.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct AnnotationsConfig {
    /// First holder of OPENER_ROLE, who opens annotation epochs (none by default: governance
    /// grants it).
    pub opener: Option<Address>,
    /// Seconds from an epoch's opening during which commits are accepted (default 3 days).
    pub commit_secs: u64,
    /// Seconds after the commit deadline during which reveals are accepted (default 2 days).
    pub reveal_secs: u64,
    /// Annotators each item is assigned to (default 3, at least 3, at most 32).
    pub annotators_per_item: u8,
}

impl Default for AnnotationsConfig {
    fn default() -> Self {
        Self {
            opener: None,
            commit_secs: 3 * DAY,
            reveal_secs: 2 * DAY,
            annotators_per_item: 3,
        }
    }
}

/// `[fees]`: InferenceFees' governed parameters at deployment.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct FeesConfig {
    /// Seconds between a requester's withdrawal request and its withdrawal, during which
    /// gateways can still settle its receipts (default 2 days, at most 365 days).
    pub withdraw_delay_secs: u64,
    /// Least fee per served request, in thousandths of a token (default 100: 0.1 $PROPOSAL).
    pub min_fee_millitokens: u64,
}

impl FeesConfig {
    /// The minimum fee in base units.
    pub fn min_fee(&self) -> U256 {
        U256::from(self.min_fee_millitokens) * U256::from(10u64).pow(U256::from(15))
    }
}

impl Default for FeesConfig {
    fn default() -> Self {
        Self {
            withdraw_delay_secs: 2 * DAY,
            min_fee_millitokens: 100,
        }
    }
}

/// `[settlement]`: the QA validator set and quorum that sign reward roots and slashing verdicts,
/// and the settlement parameters (the challenge window is `staking.challenge_window_secs`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct SettlementConfig {
    /// The validators (empty: none yet; governance sets them, nothing can be posted meanwhile).
    pub validators: Vec<Address>,
    /// Signatures needed: a strict majority of the validators (3 of 5, 5 of 7); 0 with no validators.
    pub quorum: u8,
    /// Least time between the end of a root's challenge window and its claim deadline (default 30 days).
    pub min_claim_period_secs: u64,
    /// Fraction of the training stake a verdict slashes, in basis points (default 1,000 = 10%).
    pub slash_bps: u16,
    /// How long a slashed member is jailed (default 30 days).
    pub jail_secs: u64,
    /// Fraction of a validator's training stake slashed when it is proven to have signed a root
    /// the posted one contradicts, in basis points (default 0: a strike on its record only).
    pub validator_slash_bps: u16,
    /// Part of a member's slash returned to the training pool instead of burnt, in basis points
    /// (default 0: all burnt).
    pub slash_to_pool_bps: u16,
    /// Training stake a validator must hold, unjailed, for its signature to count, whole tokens
    /// (default 10,000, the training minimum; 0 does not check).
    pub validator_min_stake_tokens: u64,
    /// Rounds per settlement epoch (default 10): epoch `e` covers rounds `(e-1)·n+1 ..= e·n`.
    pub epoch_rounds: u32,
    /// Tokens an epoch pays at most, whole tokens (default 100,000).
    pub epoch_pool_tokens: u64,
    /// Share of the epoch pool paid by contribution, parts per million (default 700,000).
    pub contribution_ppm: u32,
    /// Share paid to members useful in most rounds, parts per million (default 100,000).
    pub stability_ppm: u32,
    /// Share paid by contribution when the epoch's model improved on the previous epoch's,
    /// parts per million (default 100,000). What the three shares leave is paid per useful
    /// round by bounded compute.
    pub performance_ppm: u32,
    /// Percent of an epoch's rounds a member must be useful in for the stability share (default 80).
    pub stability_quorum_pct: u8,
}

impl SettlementConfig {
    /// The reward rules deployment writes into Settlement.
    pub fn reward_rules(&self) -> crate::settle::RewardRules {
        crate::settle::RewardRules {
            epoch_rounds: self.epoch_rounds,
            epoch_pool: u128::try_from(tokens(self.epoch_pool_tokens)).unwrap_or(u128::MAX),
            contribution_ppm: self.contribution_ppm,
            stability_ppm: self.stability_ppm,
            performance_ppm: self.performance_ppm,
            stability_quorum_pct: self.stability_quorum_pct,
        }
    }
}

impl Default for SettlementConfig {
    fn default() -> Self {
        Self {
            validators: Vec::new(),
            quorum: 0,
            min_claim_period_secs: 30 * DAY,
            slash_bps: 1_000,
            jail_secs: 30 * DAY,
            validator_slash_bps: 0,
            slash_to_pool_bps: 0,
            validator_min_stake_tokens: 10_000,
            epoch_rounds: 10,
            epoch_pool_tokens: 100_000,
            contribution_ppm: 700_000,
            stability_ppm: 100_000,
            performance_ppm: 100_000,
            stability_quorum_pct: 80,
        }
    }
}

/// `[token]`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct TokenConfig {
    /// Token name (also the EIP-712 domain name of permits).
    pub name: String,
    /// Token symbol.
    pub symbol: String,
}

impl Default for TokenConfig {
    fn default() -> Self {
        Self {
            name: "daofl Proposal".into(),
            symbol: "PROPOSAL".into(),
        }
    }
}

/// `[allocation]`: who receives the vesting shares and when schedules start.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AllocationConfig {
    /// Beneficiary of the team vesting wallet (3%, 4 years linear): a multisig in production.
    pub team: Address,
    /// Beneficiary of the early-investor vesting wallet (2%, 2 years linear).
    pub investors: Address,
    /// Start of both vesting schedules (unix seconds); default: the deployment's block time.
    #[serde(default)]
    pub vesting_start: Option<u64>,
    /// Start of the data pool's 10-year release (unix seconds); default: the deployment's block time.
    #[serde(default)]
    pub pools_start: Option<u64>,
}

/// `[governance]`: Governor settings (seconds: the clock is timestamps) and the timelock delay.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct GovernanceConfig {
    /// Proposal guardian: cancels any proposal before execution (a multisig in production).
    pub guardian: Address,
    /// Delay between proposing and the start of voting (default 1 day).
    #[serde(default = "default_voting_delay")]
    pub voting_delay_secs: u64,
    /// Length of the vote (default 5 days).
    #[serde(default = "default_voting_period")]
    pub voting_period_secs: u64,
    /// Votes needed to propose, in whole tokens (default 100,000 = 0.01% of supply).
    #[serde(default = "default_threshold")]
    pub proposal_threshold_tokens: u64,
    /// Quorum as a percentage of the votable supply (default 4).
    #[serde(default = "default_quorum_percent")]
    pub quorum_percent: u64,
    /// Fewest votes any quorum needs, in whole tokens (default 10,000,000 = 1% of supply).
    #[serde(default = "default_quorum_floor")]
    pub quorum_floor_tokens: u64,
    /// How long voting is extended when quorum is reached late (default 2 days).
    #[serde(default = "default_late_quorum")]
    pub late_quorum_extension_secs: u64,
    /// Minimum delay of the timelock (default and minimum: 7 days).
    #[serde(default = "default_timelock_delay")]
    pub timelock_delay_secs: u64,
}

fn default_voting_delay() -> u64 {
    DAY
}
fn default_voting_period() -> u64 {
    5 * DAY
}
fn default_threshold() -> u64 {
    100_000
}
fn default_quorum_percent() -> u64 {
    4
}
fn default_quorum_floor() -> u64 {
    10_000_000
}
fn default_late_quorum() -> u64 {
    2 * DAY
}
fn default_timelock_delay() -> u64 {
    MIN_TIMELOCK_DELAY
}

/// `[staking]`: minimum stake per role (whole tokens), unbonding and challenge window.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct StakingConfig {
    /// Training node minimum (default 10,000).
    pub training_min_tokens: u64,
    /// Inference node minimum (default 5,000).
    pub inference_min_tokens: u64,
    /// Annotator minimum (default 1,000).
    pub annotator_min_tokens: u64,
    /// Delay between unstake and withdraw (default 14 days); must exceed the challenge window.
    pub unbonding_secs: u64,
    /// Longest challenge window of a slash verdict (default 7 days).
    pub challenge_window_secs: u64,
    /// First holder of SLASHER_ROLE (the QA settlement later; none by default).
    pub slasher: Option<Address>,
}

impl Default for StakingConfig {
    fn default() -> Self {
        Self {
            training_min_tokens: 10_000,
            inference_min_tokens: 5_000,
            annotator_min_tokens: 1_000,
            unbonding_secs: 14 * DAY,
            challenge_window_secs: 7 * DAY,
            slasher: None,
        }
    }
}

/// `[model]`: the checkpoint registry promotions are checked against, and the reward split.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ModelConfig {
    /// chain-anchor's CheckpointRegistry. Default: on the embedded EVM, the one of its state
    /// folder; on an RPC chain, a new one deployed with the DAO (the deployer its admin).
    pub checkpoint_registry: Option<Address>,
    /// Reward split in basis points (sums to 10,000).
    pub reward_split_bps: RewardSplit,
}

impl Default for ModelConfig {
    fn default() -> Self {
        Self {
            checkpoint_registry: None,
            reward_split_bps: RewardSplit {
                data: 4_000,
                training: 4_000,
                inference: 2_000,
            },
        }
    }
}

/// Reward split between data contributors, training nodes and inference nodes, in basis points.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RewardSplit {
    /// Data contributors.
    pub data: u16,
    /// Training nodes.
    pub training: u16,
    /// Inference nodes.
    pub inference: u16,
}

impl RewardSplit {
    /// Whether the three parts sum to exactly 10,000 basis points.
    pub fn is_whole(&self) -> bool {
        u32::from(self.data) + u32::from(self.training) + u32::from(self.inference) == 10_000
    }
}

/// Largest configuration file read.
const MAX_CONFIG_BYTES: u64 = 1 << 20;

impl DaoConfig {
    /// Parses and validates a TOML text.
    ///
    /// # Errors
    /// [`Error::Config`] naming the offending field.
    pub fn from_toml_str(text: &str) -> Result<Self> {
        let config: Self = toml::from_str(text).map_err(|e| Error::Config(e.to_string()))?;
        config.validate()?;
        Ok(config)
    }

    /// Reads, parses and validates a TOML file.
    ///
    /// # Errors
    /// [`Error::Io`], [`Error::Corrupt`] for a file too large, [`Error::Config`].
    pub fn load(path: &Path) -> Result<Self> {
        let text = crate::deploy::read_bounded_text(path, MAX_CONFIG_BYTES)?;
        Self::from_toml_str(&text).map_err(|e| Error::Config(format!("{}: {e}", path.display())))
    }

    /// Checks every constraint the contracts would otherwise refuse at deployment, naming the field.
    ///
    /// # Errors
    /// [`Error::Config`].
    pub fn validate(&self) -> Result<()> {
        let bad = |m: String| Err(Error::Config(m));
        for (field, text) in [
            ("token.name", &self.token.name),
            ("token.symbol", &self.token.symbol),
        ] {
            if text.trim().is_empty() || text.len() > 64 {
                return bad(format!("{field} must be 1 to 64 bytes"));
            }
        }
        for (field, a) in [
            ("allocation.team", self.allocation.team),
            ("allocation.investors", self.allocation.investors),
            ("governance.guardian", self.governance.guardian),
        ] {
            if a.is_zero() {
                return bad(format!("{field} must not be the zero address"));
            }
        }
        if self.allocation.team == self.allocation.investors {
            return bad(
                "allocation.team and allocation.investors must differ (one vesting wallet each)"
                    .into(),
            );
        }
        let g = &self.governance;
        if g.voting_delay_secs >= 1 << 48 {
            return bad("governance.voting_delay_secs is too large".into());
        }
        if g.voting_period_secs == 0 || g.voting_period_secs > u64::from(u32::MAX) {
            return bad("governance.voting_period_secs must be 1 to 4294967295".into());
        }
        if g.late_quorum_extension_secs >= 1 << 48 {
            return bad("governance.late_quorum_extension_secs is too large".into());
        }
        if !(1..=100).contains(&g.quorum_percent) {
            return bad("governance.quorum_percent must be 1 to 100".into());
        }
        if g.timelock_delay_secs < MIN_TIMELOCK_DELAY {
            return bad(format!(
                "governance.timelock_delay_secs must be at least {MIN_TIMELOCK_DELAY} (7 days)"
            ));
        }
        let s = &self.staking;
        if s.unbonding_secs > 5 * YEAR {
            return bad("staking.unbonding_secs must be at most 5 years".into());
        }
        if s.unbonding_secs <= s.challenge_window_secs {
            return bad("staking.unbonding_secs must exceed staking.challenge_window_secs, so a slash reaches a leaving member".into());
        }
        let t = &self.settlement;
        let n = t.validators.len();
        let distinct: std::collections::BTreeSet<_> = t.validators.iter().collect();
        if n > 16
            || distinct.len() != n
            || t.validators.iter().any(|v| v.is_zero())
            || usize::from(t.quorum) > n
            || (n > 0 && usize::from(t.quorum) * 2 <= n)
            || (n == 0 && t.quorum != 0)
        {
            return bad("settlement: at most 16 distinct non-zero validators and a quorum that is a strict majority of them (0 with none)".into());
        }
        if t.slash_bps == 0 || t.slash_bps > 10_000 {
            return bad("settlement.slash_bps must be 1 to 10000".into());
        }
        if t.validator_slash_bps > 10_000 || t.slash_to_pool_bps > 10_000 {
            return bad(
                "settlement.validator_slash_bps and slash_to_pool_bps must be 0 to 10000".into(),
            );
        }
        if t.epoch_rounds == 0
            || t.epoch_pool_tokens == 0
            || u64::from(t.contribution_ppm)
                + u64::from(t.stability_ppm)
                + u64::from(t.performance_ppm)
                > 1_000_000
            || t.stability_quorum_pct > 100
        {
            return bad("settlement: epoch_rounds and epoch_pool_tokens must be non-zero, contribution_ppm + stability_ppm + performance_ppm at most 1000000, stability_quorum_pct at most 100".into());
        }
        if t.min_claim_period_secs > 5 * YEAR
            || t.jail_secs > 5 * YEAR
            || s.challenge_window_secs == 0
        {
            return bad(
                "settlement periods must be at most 5 years and the challenge window non-zero"
                    .into(),
            );
        }
        if self.fees.withdraw_delay_secs > 365 * DAY {
            return bad("fees.withdraw_delay_secs must be at most 365 days".into());
        }
        let a = &self.annotations;
        if !(1..=365 * DAY).contains(&a.commit_secs) || !(1..=365 * DAY).contains(&a.reveal_secs) {
            return bad(
                "annotations.commit_secs and annotations.reveal_secs must be 1 to 365 days".into(),
            );
        }
        if !(3..=32).contains(&a.annotators_per_item) {
            return bad("annotations.annotators_per_item must be 3 to 32".into());
        }
        if !self.model.reward_split_bps.is_whole() {
            return bad("model.reward_split_bps must sum to 10000".into());
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MINIMAL: &str = r#"
[allocation]
team = "0x70997970C51812dc3A010C7d01b50e0d17dc79C8"
investors = "0x3C44CdDdB6a900fa2b585dd299e03d12FA4293BC"
[governance]
guardian = "0x90F79bf6EB2c4f870365E785982E1f101E93b906"
"#;

    #[test]
    fn annotation_parameters_are_checked() {
        let mut c = DaoConfig::from_toml_str(MINIMAL).unwrap();
        assert_eq!(c.annotations, AnnotationsConfig::default());
        c.annotations.annotators_per_item = 2;
        assert!(matches!(c.validate(), Err(Error::Config(m)) if m.contains("annotators_per_item")));
        c.annotations.annotators_per_item = 3;
        c.annotations.reveal_secs = 0;
        assert!(matches!(c.validate(), Err(Error::Config(m)) if m.contains("reveal_secs")));
    }

    #[test]
    fn minimal_config_gets_the_issue_defaults() {
        let c = DaoConfig::from_toml_str(MINIMAL).unwrap();
        assert_eq!(c.token.symbol, "PROPOSAL");
        assert_eq!(c.governance.timelock_delay_secs, 7 * DAY);
        assert_eq!(c.staking.training_min_tokens, 10_000);
        assert_eq!(c.staking.inference_min_tokens, 5_000);
        assert!(c.model.reward_split_bps.is_whole());
    }

    #[test]
    fn settlement_quorum_must_be_a_strict_majority() {
        let base = DaoConfig::from_toml_str(
            "[allocation]\nteam = \"0x70997970C51812dc3A010C7d01b50e0d17dc79C8\"\n\
             investors = \"0x3C44CdDdB6a900fa2b585dd299e03d12FA4293BC\"\n\
             [governance]\nguardian = \"0x90F79bf6EB2c4f870365E785982E1f101E93b906\"\n",
        )
        .unwrap();
        let five: Vec<Address> = (1..=5u8).map(Address::repeat_byte).collect();
        for (validators, quorum, ok) in [
            (Vec::new(), 0, true),
            (Vec::new(), 1, false),
            (five.clone(), 3, true),
            (five.clone(), 2, false),
            (five.clone(), 6, false),
            (vec![five[0], five[0], five[1]], 2, false),
        ] {
            let mut c = base.clone();
            c.settlement.validators = validators;
            c.settlement.quorum = quorum;
            assert_eq!(
                c.validate().is_ok(),
                ok,
                "{:?} {quorum}",
                c.settlement.validators
            );
        }
    }

    #[test]
    fn bad_configs_name_the_field() {
        let cases = [
            (
                format!("{MINIMAL}timelock_delay_secs = 60\n"),
                "timelock_delay_secs",
            ),
            (format!("{MINIMAL}quorum_percent = 0\n"), "quorum_percent"),
            (format!("{MINIMAL}surprise = 1\n"), "surprise"),
            (
                format!("{MINIMAL}[staking]\nunbonding_secs = 10\nchallenge_window_secs = 10\n"),
                "unbonding_secs",
            ),
            (
                format!(
                    "{MINIMAL}[model.reward_split_bps]\ndata = 1\ntraining = 2\ninference = 3\n"
                ),
                "reward_split_bps",
            ),
            (
                MINIMAL.replace(
                    "0x3C44CdDdB6a900fa2b585dd299e03d12FA4293BC",
                    "0x70997970C51812dc3A010C7d01b50e0d17dc79C8",
                ),
                "must differ",
            ),
            (
                MINIMAL.replace("0x90F79bf6EB2c4f870365E785982E1f101E93b906", "0xnothex"),
                "guardian",
            ),
            ("[allocation]\n".to_owned(), "team"),
        ];
        for (text, needle) in cases {
            let err = DaoConfig::from_toml_str(&text).unwrap_err().to_string();
            assert!(err.contains(needle), "{needle}: {err}");
        }
    }
}
