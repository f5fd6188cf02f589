//! An epoch's training rewards, computed from its checkpoint manifests alone, so that anyone
//! holding the manifests recomputes every payout (`fl-aggregator settle rewards`, `settle
//! verify`), and the list becomes the Merkle root the DAO's `Settlement` contract pays from
//! ([`dao::settle::RewardTree`]).
//!
//! # The formula
//!
//! An epoch is a run of consecutive rounds `r = a..=b`. In round `r` member `i` has the
//! contribution score `φᵢᵣ` the aggregator wrote into the round's manifest
//! (`contribution.<client>.shapley`, `[strategy.contribution]`), and is **useful** in the round
//! when `φᵢᵣ > 0`. With the epoch's pool `P` and the shares `c` (contribution), `s` (stability),
//! `f` (performance) and `p = 1 - c - s - f` (participation), each in parts per million:
//!
//! ```text
//! wᵢ = Σᵣ ⌊max(φᵢᵣ, 0) · 10⁹⌋                      contribution weight (nano-units)
//! kᵢᵣ = examplesᵢᵣ · max(stepsᵢᵣ, 1)                reported compute
//! bᵣ = median of kᵢᵣ over the round's members       the bound
//! vᵢ = Σ_{r: φᵢᵣ > 0} ⌊10⁹ · min(kᵢᵣ, bᵣ) / bᵣ⌋     compute in useful rounds, bounded (nano)
//! uᵢ = #{ r : φᵢᵣ > 0 }                             useful rounds
//! stableᵢ = uᵢ · 100 ≥ q · R                        q: stability quorum in percent, R rounds
//! improved = utility_all(b) > utility_before(a)      the epoch's model beat the one it started from
//! rewardᵢ = ⌊P·c·wᵢ / Σw⌋ + ⌊P·p·vᵢ / Σv⌋ + ⌊P·s·stableᵢ / #stable⌋ + improved·⌊P·f·wᵢ / Σw⌋
//! ```
//!
//! The performance bonus `f` (the seed's "when the promoted model improves on the previous
//! one") is paid by contribution only when the model at the end of the epoch scores better on
//! the aggregator's held-out validation set (`contribution.utility_all` of the last round) than
//! the model the epoch started from (`contribution.utility_before` of the first round, which is
//! the previous epoch's last model); otherwise that share stays in the pool.
//!
//! The compute a member reports (`contribution.<client>.examples` and `.steps`, written next
//! to its score) cannot be checked, so it counts at most as much as the round's median member's:
//! claiming more earns nothing more, and a round where a member reported less than the median
//! pays it proportionally less. A round without compute records counts 1 per useful round.
//!
//! (each `P·x` is itself `⌊P · x_ppm / 10⁶⌋`; integer arithmetic throughout, in 256 bits). A
//! part whose denominator is zero pays nobody. What the floors leave (at most a few base units
//! per member) stays in the pool. A free rider, whose update is the global model, scores exactly
//! 0 under the default round-share game, so it is never useful and earns nothing; a member that
//! poisons typically scores below 0 in the rounds it poisons (label flippers did on digits).

//!
//! Member addresses come from each manifest's client map (`clients`: client id to participant
//! id, the member's address over gRPC); a manifest without one, or whose participant ids are not
//! addresses, is refused, since nobody could be paid.

use std::collections::BTreeMap;

use chain_anchor::alloy::primitives::{Address, U256};
use fl_core::strategy::contribution::scores_in;

use crate::checkpoint::Manifest;

/// The governable parameters of an epoch's rewards.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EpochPolicy {
    /// The epoch's training pool, in the token's base units.
    pub pool: u128,
    /// Share paid by contribution, parts per million (default 800,000).
    pub contribution_ppm: u32,
    /// Share paid to members useful in at least `stability_quorum_pct` of the rounds, parts
    /// per million (default 100,000). The rest is paid per useful round.
    pub stability_ppm: u32,
    /// Percent of the epoch's rounds a member must be useful in to earn the stability share
    /// (default 80).
    pub stability_quorum_pct: u32,
    /// Share paid by contribution when the epoch's model improved, parts per million (default
    /// 100,000).
    #[serde(default)]
    pub performance_ppm: u32,
}

impl EpochPolicy {
    /// The default shares for a pool of `pool` base units.
    pub fn new(pool: u128) -> Self {
        Self {
            pool,
            contribution_ppm: 700_000,
            stability_ppm: 100_000,
            stability_quorum_pct: 80,
            performance_ppm: 100_000,
        }
    }

    /// The policy of the DAO's governed rules (`Settlement.rewardParams`): what validators use.
    pub fn from_rules(rules: &dao::RewardRules) -> Self {
        Self {
            pool: rules.epoch_pool,
            contribution_ppm: rules.contribution_ppm,
            stability_ppm: rules.stability_ppm,
            stability_quorum_pct: u32::from(rules.stability_quorum_pct),
            performance_ppm: rules.performance_ppm,
        }
    }
}

/// Whether the epoch of `manifests` improved the model: the last round's
/// `contribution.utility_all` above the first round's `contribution.utility_before` (both on
/// the aggregator's held-out validation set). `false` when either is missing or not finite.
pub fn epoch_improved(manifests: &[Manifest]) -> bool {
    let first = manifests.iter().min_by_key(|m| m.round);
    let last = manifests.iter().max_by_key(|m| m.round);
    let (Some(first), Some(last)) = (first, last) else {
        return false;
    };
    match (
        first.metrics.get("contribution.utility_before"),
        last.metrics.get("contribution.utility_all"),
    ) {
        (Some(&before), Some(&after)) if before.is_finite() && after.is_finite() => after > before,
        _ => false,
    }
}

/// Why an epoch's rewards cannot be computed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum EpochError {
    /// No manifest was given.
    #[error("an epoch needs at least one round")]
    Empty,
    /// The shares add up to more than the pool.
    #[error("contribution_ppm + stability_ppm + performance_ppm = {0} exceeds 1,000,000")]
    Shares(u64),
    /// The stability quorum is above 100%.
    #[error("stability_quorum_pct = {0} exceeds 100")]
    Quorum(u32),
    /// Manifests of another federation, or rounds not consecutive.
    #[error("round {round}: {reason}")]
    Sequence {
        /// The offending manifest's round.
        round: u64,
        /// What is wrong.
        reason: String,
    },
    /// A round without contribution scores.
    #[error("round {0} has no contribution scores ([strategy.contribution] was off)")]
    NoScores(u64),
    /// A scored client the manifest does not map to an address.
    #[error("round {round}: client {client} has no address in the manifest's client map")]
    Unmapped {
        /// The round.
        round: u64,
        /// The client id.
        client: u64,
    },
}

/// One member's reward and how it was made up.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MemberReward {
    /// The member.
    pub account: Address,
    /// `wᵢ`: the sum of its positive scores, in nano-units.
    pub weight: u128,
    /// `uᵢ`: rounds it was useful in.
    pub useful_rounds: u64,
    /// `vᵢ`: its bounded compute in those rounds, in nano-rounds.
    pub compute: u128,
    /// Whether it earned the stability share.
    pub stable: bool,
    /// The reward, in base units.
    pub amount: U256,
}

/// Computes the rewards of the epoch formed by `manifests` (any order; consecutive rounds of
/// one federation) under `policy`, in address order; members whose reward is zero are
/// included with amount 0 (drop them before building a tree).
///
/// # Errors
/// [`EpochError`] naming the first problem.
pub fn epoch_rewards(
    manifests: &[Manifest],
    policy: &EpochPolicy,
) -> Result<Vec<MemberReward>, EpochError> {
    let shares = u64::from(policy.contribution_ppm)
        + u64::from(policy.stability_ppm)
        + u64::from(policy.performance_ppm);
    if shares > 1_000_000 {
        return Err(EpochError::Shares(shares));
    }
    if policy.stability_quorum_pct > 100 {
        return Err(EpochError::Quorum(policy.stability_quorum_pct));
    }
    let mut rounds: Vec<&Manifest> = manifests.iter().collect();
    rounds.sort_by_key(|m| m.round);
    let first = rounds.first().ok_or(EpochError::Empty)?;
    for w in rounds.windows(2) {
        if w[1].federation_id != first.federation_id {
            return Err(EpochError::Sequence {
                round: w[1].round,
                reason: format!(
                    "of federation `{}`, not `{}`",
                    w[1].federation_id, first.federation_id
                ),
            });
        }
        if w[1].round != w[0].round + 1 {
            return Err(EpochError::Sequence {
                round: w[1].round,
                reason: format!("follows round {}: rounds must be consecutive", w[0].round),
            });
        }
    }
    let mut weight: BTreeMap<Address, u128> = BTreeMap::new();
    let mut useful: BTreeMap<Address, u64> = BTreeMap::new();
    let mut compute: BTreeMap<Address, u128> = BTreeMap::new();
    for m in &rounds {
        let scores = scores_in(&m.metrics);
        if scores.is_empty() {
            return Err(EpochError::NoScores(m.round));
        }
        let reported = |c: u64| -> Option<f64> {
            let examples = m.metrics.get(&format!("contribution.{c}.examples"))?;
            let steps = m
                .metrics
                .get(&format!("contribution.{c}.steps"))
                .copied()
                .unwrap_or(1.0);
            let k = examples * steps.max(1.0);
            (k.is_finite() && k >= 0.0).then_some(k)
        };
        let mut ks: Vec<f64> = scores.iter().filter_map(|s| reported(s.client.0)).collect();
        ks.sort_unstable_by(f64::total_cmp);
        let bound = match ks.len() {
            0 => None,
            n if n % 2 == 1 => Some(ks[n / 2]),
            n => Some((ks[n / 2 - 1] + ks[n / 2]) / 2.0),
        };
        for s in scores {
            // ⌊10⁹ · min(k, b)/b⌋; 10⁹ (a whole round) without compute records.
            let bounded = match (bound, reported(s.client.0)) {
                (Some(b), Some(k)) if b > 0.0 => (1e9 * k.min(b) / b).floor() as u128,
                (Some(_), _) => 0,
                (None, _) => 1_000_000_000,
            };
            let account = m
                .clients
                .get(&s.client.0.to_string())
                .and_then(|id| id.parse::<Address>().ok())
                .ok_or(EpochError::Unmapped {
                    round: m.round,
                    client: s.client.0,
                })?;
            let phi = if s.shapley.is_finite() {
                s.shapley
            } else {
                0.0
            };
            // ⌊max(φ, 0)·10⁹⌋, saturating far above any utility a validator reports.
            let nano = (phi.max(0.0) * 1e9).floor().min(1e30) as u128;
            let w = weight.entry(account).or_default();
            *w = w.saturating_add(nano);
            let u = useful.entry(account).or_default();
            let v = compute.entry(account).or_default();
            if phi > 0.0 {
                *u += 1;
                *v += bounded;
            }
        }
    }
    let total_rounds = rounds.len() as u64;
    let quorum = u64::from(policy.stability_quorum_pct);
    let stable = |u: u64| u > 0 && u * 100 >= quorum * total_rounds;
    let part = |ppm: u64| U256::from(policy.pool) * U256::from(ppm) / U256::from(1_000_000u64);
    let contribution = part(u64::from(policy.contribution_ppm));
    let stability = part(u64::from(policy.stability_ppm));
    let participation = part(1_000_000 - shares);
    let performance = if epoch_improved(manifests) {
        part(u64::from(policy.performance_ppm))
    } else {
        U256::ZERO
    };
    let sum_w: U256 = weight.values().map(|w| U256::from(*w)).sum();
    let sum_v: U256 = compute.values().map(|v| U256::from(*v)).sum();
    let n_stable = U256::from(useful.values().filter(|u| stable(**u)).count());
    let share = |pool: U256, x: U256, of: U256| {
        if of.is_zero() {
            U256::ZERO
        } else {
            pool * x / of
        }
    };
    Ok(weight
        .iter()
        .map(|(&account, &w)| {
            let u = useful.get(&account).copied().unwrap_or(0);
            let v = compute.get(&account).copied().unwrap_or(0);
            let is_stable = stable(u);
            let amount = share(contribution, U256::from(w), sum_w)
                + share(performance, U256::from(w), sum_w)
                + share(participation, U256::from(v), sum_v)
                + share(stability, U256::from(u8::from(is_stable)), n_stable);
            MemberReward {
                account,
                weight: w,
                useful_rounds: u,
                compute: v,
                stable: is_stable,
                amount,
            }
        })
        .collect())
}

#[cfg(test)]
mod tests {
    use fl_core::{ContentHash, Metrics, ParamVec, Schema, TensorSpec};

    use super::*;
    use crate::checkpoint::CheckpointMeta;

    const A: &str = "0x00000000000000000000000000000000000000aA";
    const B: &str = "0x00000000000000000000000000000000000000bB";
    const F: &str = "0x00000000000000000000000000000000000000fF";

    /// A manifest of `round` where clients 0, 1, 2 (addresses A, B, F) scored `phi`.
    fn manifest(round: u64, phi: [f64; 3]) -> Manifest {
        let mut metrics = Metrics::new();
        for (c, p) in phi.iter().enumerate() {
            metrics.insert(format!("contribution.{c}.shapley"), *p);
            metrics.insert(format!("contribution.{c}.loo"), *p);
        }
        let clients = [A, B, F]
            .iter()
            .enumerate()
            .map(|(c, a)| (c.to_string(), a.to_string()))
            .collect();
        let meta = CheckpointMeta::new("fed", round, ContentHash::of(b"c"))
            .with_metrics(metrics)
            .with_clients(clients);
        let schema = std::sync::Arc::new(Schema::new(vec![TensorSpec::new("w", [1])]).unwrap());
        Manifest::new(meta, &ParamVec::zeros(schema))
    }

    /// 80% by contribution, 10% stability, 10% participation, no performance share.
    fn policy(pool: u128) -> EpochPolicy {
        EpochPolicy {
            contribution_ppm: 800_000,
            performance_ppm: 0,
            ..EpochPolicy::new(pool)
        }
    }

    #[test]
    fn the_performance_bonus_is_paid_by_contribution_only_when_the_epoch_improved() {
        // 70% contribution, 10% stability, 10% performance, 10% participation.
        // w = (0.3, 0.1, 0): contribution 525,000 / 175,000; performance 75,000 / 25,000;
        // participation (useful 1 round each, no compute records) 50,000 / 50,000;
        // stability 50,000 / 50,000.
        let mut m = manifest(1, [0.3, 0.1, 0.0]);
        m.metrics.insert("contribution.utility_before".into(), 0.5);
        m.metrics.insert("contribution.utility_all".into(), 0.8);
        let p = EpochPolicy::new(1_000_000);
        assert!(epoch_improved(std::slice::from_ref(&m)));
        let r = epoch_rewards(std::slice::from_ref(&m), &p).unwrap();
        assert_eq!(
            amounts(&r),
            vec![
                525_000 + 75_000 + 50_000 + 50_000,
                175_000 + 25_000 + 50_000 + 50_000,
                0
            ]
        );
        // Worse (or unknown) at the end: the performance share stays in the pool.
        m.metrics.insert("contribution.utility_all".into(), 0.4);
        assert!(!epoch_improved(std::slice::from_ref(&m)));
        let r = epoch_rewards(std::slice::from_ref(&m), &p).unwrap();
        assert_eq!(amounts(&r), vec![625_000, 275_000, 0]);
        m.metrics
            .insert("contribution.utility_all".into(), f64::NAN);
        assert!(!epoch_improved(&[m]));
        // Over two rounds: the first round's `before` against the last round's `all`.
        let mut a = manifest(1, [0.1; 3]);
        let mut b = manifest(2, [0.1; 3]);
        a.metrics.insert("contribution.utility_before".into(), 0.5);
        a.metrics.insert("contribution.utility_all".into(), 0.4);
        b.metrics.insert("contribution.utility_before".into(), 0.4);
        b.metrics.insert("contribution.utility_all".into(), 0.45);
        assert!(!epoch_improved(&[b.clone(), a.clone()]));
        b.metrics.insert("contribution.utility_all".into(), 0.55);
        assert!(epoch_improved(&[b, a]));
        // Shares above the whole pool are refused.
        let over = EpochPolicy {
            performance_ppm: 300_000,
            ..EpochPolicy::new(1)
        };
        assert_eq!(
            epoch_rewards(&[manifest(1, [0.1; 3])], &over),
            Err(EpochError::Shares(1_100_000))
        );
    }

    fn amounts(r: &[MemberReward]) -> Vec<u64> {
        r.iter().map(|m| m.amount.to::<u64>()).collect()
    }

    #[test]
    fn rewards_by_hand() {
        // Round 1: A 0.3, B 0.1, F 0 (free rider). Round 2: A 0.1, B 0.1, F 0.
        // w = (0.4e9, 0.2e9, 0), u = (2, 2, 0), both A and B stable (2 of 2 rounds).
        // Pool 1,000,000: contribution 800,000 -> 533,333 and 266,666; participation
        // 100,000 -> 50,000 each; stability 100,000 -> 50,000 each. F: nothing.
        let epoch = [manifest(2, [0.1, 0.1, 0.0]), manifest(1, [0.3, 0.1, 0.0])];
        let r = epoch_rewards(&epoch, &policy(1_000_000)).unwrap();
        assert_eq!(r[0].account, A.parse::<Address>().unwrap());
        assert_eq!(amounts(&r), vec![633_333, 366_666, 0]);
        assert_eq!(
            (r[0].weight, r[0].useful_rounds, r[0].stable),
            (400_000_000, 2, true)
        );
        assert!(!r[2].stable);
        // A harmful round counts as nothing (not negative), and breaks B's stability.
        let epoch = [manifest(1, [0.3, 0.1, 0.0]), manifest(2, [0.1, -0.5, 0.0])];
        let r = epoch_rewards(&epoch, &policy(1_000_000)).unwrap();
        // w = (0.4, 0.1): 640,000 and 160,000; u = (2, 1): 66,666 and 33,333; stability:
        // A alone (B useful in 1 of 2 < 80%): 100,000.
        assert_eq!(amounts(&r), vec![806_666, 193_333, 0]);
        let total: U256 = r.iter().map(|m| m.amount).sum();
        assert!(
            total <= U256::from(1_000_000u64),
            "never more than the pool"
        );
    }

    #[test]
    fn reported_compute_counts_up_to_the_round_median() {
        // One round, all useful (φ = 0.1 each). Examples x steps: A 100 x 10 = 1000, B claims
        // 100,000 x 10, F 50 x 10 = 500. Median 1000: A 1, B 1 (bounded), F 0.5 of a round.
        // Participation 100,000: 40,000, 40,000, 20,000. Contribution 800,000 in thirds.
        // Stability 100,000 in thirds.
        let mut m = manifest(1, [0.1, 0.1, 0.1]);
        for (c, examples) in [(0, 100.0), (1, 100_000.0), (2, 50.0)] {
            m.metrics
                .insert(format!("contribution.{c}.examples"), examples);
            m.metrics.insert(format!("contribution.{c}.steps"), 10.0);
        }
        let r = epoch_rewards(&[m], &policy(1_000_000)).unwrap();
        assert_eq!(
            r.iter().map(|x| x.compute).collect::<Vec<_>>(),
            vec![1_000_000_000, 1_000_000_000, 500_000_000]
        );
        assert_eq!(
            amounts(&r),
            vec![
                266_666 + 40_000 + 33_333,
                266_666 + 40_000 + 33_333,
                266_666 + 20_000 + 33_333
            ]
        );
    }

    #[test]
    fn bad_epochs_are_refused_by_name() {
        let p = EpochPolicy::new(1000);
        assert_eq!(epoch_rewards(&[], &p), Err(EpochError::Empty));
        let gap = [manifest(1, [0.1; 3]), manifest(3, [0.1; 3])];
        assert!(matches!(
            epoch_rewards(&gap, &p),
            Err(EpochError::Sequence { round: 3, .. })
        ));
        let mut other = manifest(2, [0.1; 3]);
        other.federation_id = "other".into();
        assert!(matches!(
            epoch_rewards(&[manifest(1, [0.1; 3]), other], &p),
            Err(EpochError::Sequence { round: 2, .. })
        ));
        let mut unscored = manifest(1, [0.1; 3]);
        unscored.metrics.clear();
        assert_eq!(epoch_rewards(&[unscored], &p), Err(EpochError::NoScores(1)));
        let mut unmapped = manifest(1, [0.1; 3]);
        unmapped.clients.remove("1");
        assert_eq!(
            epoch_rewards(&[unmapped], &p),
            Err(EpochError::Unmapped {
                round: 1,
                client: 1
            })
        );
        let greedy = EpochPolicy {
            stability_ppm: 300_000,
            ..p
        };
        assert_eq!(
            epoch_rewards(&[manifest(1, [0.1; 3])], &greedy),
            Err(EpochError::Shares(1_100_000))
        );
        // A NaN score pays nothing rather than poisoning the sums.
        let r = epoch_rewards(&[manifest(1, [f64::NAN, 0.1, 0.0])], &p).unwrap();
        assert_eq!(r[0].amount, U256::ZERO);
    }
}
