//! Scoring inference nodes, without IO: what validators measure, how their measurements
//! become one standing per node, and what an epoch pays.
//!
//! - A validator sends *challenges* (requests built from real proposals, with fresh nonces, sent
//!   the way a gateway sends requests, so a node cannot tell them from real traffic) and checks
//!   each signed answer against its own run of the promoted model. Per node it records a
//!   [`NodeObservation`]: challenges sent, answered right, answered provably wrong, missed,
//!   and the median latency. It signs the epoch's observations as a [`ScoreReport`]
//!   ([`SignedScoreReport`]).
//! - [`combine`] turns the validators' reports into one [`Standing`] per node: its accuracy and
//!   latency are the **stake-weighted medians** of what the validators reported (the core of
//!   Bittensor's Yuma consensus, without its bonds): validators holding less than half the
//!   reporting stake cannot move a node's standing outside the range honest validators
//!   reported, so a validator that inflates a friend or buries a rival changes nothing.
//! - [`inference_rewards`] pays each node per request it served (an answer that made a
//!   consensus, [`served`]) the base fee share, plus a bonus for accuracy over a threshold
//!   and one for latency under a threshold ([`InferenceRewardRules`], the DAO's documents:
//!   0.1 $PROPOSAL, +50% over 0.9 accuracy, +20% under 2 s), in token base units.
//!
//! ```
//! use std::collections::BTreeMap;
//! use fl_core::inference::scoring::*;
//! use fl_core::{ContentHash, MemberKey};
//!
//! let node = MemberKey::generate().address();
//! let seen = NodeObservation { node, challenges: 20, correct: 19, wrong: 0, missed: 1, latency_ms: 300 };
//! let validator = MemberKey::generate();
//! let report = ScoreReport { epoch: 1, model: ContentHash::of(b"model"), observations: vec![seen] };
//! let signed = SignedScoreReport::sign(&validator, report);
//! let stakes = BTreeMap::from([(validator.address(), 5_000.0)]);
//! let standings = combine(&[signed], &stakes, 1).unwrap();
//! assert_eq!(standings[&node].accuracy, 0.95);
//! let rewards = inference_rewards(&BTreeMap::from([(node, 10)]), &standings, &InferenceRewardRules::default());
//! // 10 requests at 0.1 token, +50% (accuracy over 0.9) +20% (latency under 2 s).
//! assert_eq!(rewards[&node], 10 * 170_000_000_000_000_000);
//! ```

use std::collections::{BTreeMap, BTreeSet};

use serde::{Deserialize, Serialize};

use super::{Consensus, ConsensusPolicy, InferenceError, address_serde, decide};
use crate::hash::ContentHash;
use crate::identity::{Address, MemberKey, MemberSignature};

const REPORT_TAG: &[u8] = b"daofl/inference-score-report/v1";

/// Most nodes one report may describe.
pub const MAX_REPORTED_NODES: usize = 4096;

/// What one validator measured of one node over an epoch's challenges.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NodeObservation {
    /// The node.
    #[serde(with = "address_serde")]
    pub node: Address,
    /// Challenges sent to it.
    pub challenges: u32,
    /// Answered, validly signed, and equal to the validator's recomputation (within the
    /// tolerance).
    pub correct: u32,
    /// Answered with a valid signature for the promoted model and differing from the
    /// recomputation: slashing evidence.
    pub wrong: u32,
    /// Not answered in time, or answered without a usable signature.
    pub missed: u32,
    /// Median latency of its answers, milliseconds (`u32::MAX` when it answered none).
    pub latency_ms: u32,
}

impl NodeObservation {
    /// Correct answers per challenge (0 without challenges).
    pub fn accuracy(&self) -> f64 {
        if self.challenges == 0 {
            0.0
        } else {
            f64::from(self.correct) / f64::from(self.challenges)
        }
    }

    fn validate(&self) -> Result<(), InferenceError> {
        let counted = u64::from(self.correct) + u64::from(self.wrong) + u64::from(self.missed);
        if counted > u64::from(self.challenges) {
            return Err(InferenceError::Field {
                field: "observations",
                reason: format!(
                    "{}: {} correct + {} wrong + {} missed exceed {} challenges",
                    self.node, self.correct, self.wrong, self.missed, self.challenges
                ),
            });
        }
        Ok(())
    }
}

/// A validator's observations of an epoch.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ScoreReport {
    /// The settlement epoch.
    pub epoch: u64,
    /// The promoted model the validator checked answers against.
    #[serde(with = "crate::hash::cid_string")]
    pub model: ContentHash,
    /// One entry per node challenged, each node once.
    pub observations: Vec<NodeObservation>,
}

impl ScoreReport {
    /// The bytes a validator signs: a domain tag and the canonical JSON of the report.
    pub fn signing_bytes(&self) -> Vec<u8> {
        let mut out = REPORT_TAG.to_vec();
        // Serialising plain structs of numbers and strings cannot fail.
        out.extend(serde_json::to_vec(self).unwrap_or_default());
        out
    }

    /// Refuses a report naming a node twice, too many nodes, or inconsistent counts.
    pub fn validate(&self) -> Result<(), InferenceError> {
        if self.observations.len() > MAX_REPORTED_NODES {
            return Err(InferenceError::Field {
                field: "observations",
                reason: format!(
                    "{} nodes, at most {MAX_REPORTED_NODES}",
                    self.observations.len()
                ),
            });
        }
        let mut seen = BTreeSet::new();
        for o in &self.observations {
            o.validate()?;
            if !seen.insert(o.node) {
                return Err(InferenceError::Field {
                    field: "observations",
                    reason: format!("{} is reported twice", o.node),
                });
            }
        }
        Ok(())
    }
}

/// A [`ScoreReport`] signed by its validator.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SignedScoreReport {
    /// The report.
    pub report: ScoreReport,
    /// The validator.
    #[serde(with = "address_serde")]
    pub validator: Address,
    /// Its signature over [`ScoreReport::signing_bytes`].
    pub signature: MemberSignature,
}

impl SignedScoreReport {
    /// Signs `report` with `key`.
    pub fn sign(key: &MemberKey, report: ScoreReport) -> Self {
        let signature = key.sign_message(&report.signing_bytes());
        Self {
            report,
            validator: key.address(),
            signature,
        }
    }

    /// Whether the report is well formed and signed by `validator`.
    pub fn verify(&self) -> Result<(), String> {
        self.report.validate().map_err(|e| e.to_string())?;
        let signer = self
            .signature
            .recover(&self.report.signing_bytes())
            .map_err(|e| format!("unreadable signature: {e}"))?;
        if signer != self.validator {
            return Err(format!("signed by {signer}, not by {}", self.validator));
        }
        Ok(())
    }
}

/// A node's standing for an epoch, as the validators' reports agree on it.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct Standing {
    /// Stake-weighted median of the reported accuracies.
    pub accuracy: f64,
    /// Stake-weighted median of the reported median latencies, milliseconds.
    pub latency_ms: u32,
    /// Provably wrong answers, the largest any validator reported (each is evidence anyone
    /// re-checks, so one honest validator suffices).
    pub wrong: u32,
    /// Validators that challenged it.
    pub reporters: usize,
    /// Selection weight factor in `[0, 1]`: accuracy times [`latency_factor`].
    pub reputation: f64,
}

/// How latency discounts a node's selection weight: halved at every 2 s of (mean or median)
/// latency, so 10 ms costs 0.3% and 700 ms 22%; 1 for a negative or non-finite input.
pub fn latency_factor(latency_s: f64) -> f64 {
    if latency_s.is_finite() && latency_s > 0.0 {
        0.5f64.powf(latency_s / 2.0)
    } else {
        1.0
    }
}

/// The value at which the cumulative weight of `points`, sorted by value, first reaches half
/// the total (the lower weighted median). `None` without positive weight.
fn weighted_median<T: Copy + PartialOrd>(points: &mut [(T, f64)]) -> Option<T> {
    let total: f64 = points.iter().map(|(_, w)| *w).sum();
    if total.is_nan() || total <= 0.0 {
        return None;
    }
    points.sort_by(|a, b| a.0.partial_cmp(&b.0).unwrap_or(std::cmp::Ordering::Equal));
    let mut cumulative = 0.0;
    for (value, weight) in points.iter() {
        cumulative += weight;
        if cumulative * 2.0 >= total {
            return Some(*value);
        }
    }
    points.last().map(|(v, _)| *v)
}

/// Combines the validators' `reports` of `epoch` into one [`Standing`] per reported node,
/// each validator weighted by its stake in `stakes` (validators without stake do not count).
///
/// # Errors
/// [`InferenceError::Field`] naming the report that does not verify, is for another epoch,
/// or comes from a validator that already reported.
pub fn combine(
    reports: &[SignedScoreReport],
    stakes: &BTreeMap<Address, f64>,
    epoch: u64,
) -> Result<BTreeMap<Address, Standing>, InferenceError> {
    let bad = |reason: String| InferenceError::Field {
        field: "reports",
        reason,
    };
    let mut validators = BTreeSet::new();
    type Points = (Vec<(f64, f64)>, Vec<(u32, f64)>, u32);
    let mut per_node: BTreeMap<Address, Points> = BTreeMap::new();
    for r in reports {
        r.verify()
            .map_err(|e| bad(format!("{}: {e}", r.validator)))?;
        if r.report.epoch != epoch {
            return Err(bad(format!(
                "{} reported epoch {}, not {epoch}",
                r.validator, r.report.epoch
            )));
        }
        if !validators.insert(r.validator) {
            return Err(bad(format!("{} reported twice", r.validator)));
        }
        let stake = stakes.get(&r.validator).copied().unwrap_or(0.0);
        if !(stake.is_finite() && stake > 0.0) {
            continue;
        }
        for o in r.report.observations.iter().filter(|o| o.challenges > 0) {
            let entry = per_node.entry(o.node).or_default();
            entry.0.push((o.accuracy(), stake));
            entry.1.push((o.latency_ms, stake));
            entry.2 = entry.2.max(o.wrong);
        }
    }
    Ok(per_node
        .into_iter()
        .filter_map(|(node, (mut accuracy, mut latency, wrong))| {
            let reporters = accuracy.len();
            let accuracy = weighted_median(&mut accuracy)?;
            let latency_ms = weighted_median(&mut latency)?;
            Some((
                node,
                Standing {
                    accuracy,
                    latency_ms,
                    wrong,
                    reporters,
                    reputation: accuracy * latency_factor(f64::from(latency_ms) / 1000.0),
                },
            ))
        })
        .collect())
}

/// What an epoch pays an inference node, in token base units (18 decimals); governable.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct InferenceRewardRules {
    /// Paid per served request (default 0.1 $PROPOSAL).
    pub per_request: u128,
    /// Bonus in basis points of the base when the node's accuracy is over `min_accuracy`
    /// (default 5,000: +50%).
    pub accuracy_bonus_bps: u32,
    /// Accuracy the bonus needs to exceed (default 0.9).
    pub min_accuracy: f64,
    /// Bonus in basis points when the node's latency is under `max_latency_ms` (default
    /// 2,000: +20%).
    pub latency_bonus_bps: u32,
    /// Latency the bonus needs to stay under, milliseconds (default 2,000).
    pub max_latency_ms: u32,
}

impl Default for InferenceRewardRules {
    fn default() -> Self {
        Self {
            per_request: 100_000_000_000_000_000,
            accuracy_bonus_bps: 5_000,
            min_accuracy: 0.9,
            latency_bonus_bps: 2_000,
            max_latency_ms: 2_000,
        }
    }
}

/// What each node earns for an epoch: `served` requests times the base, plus the bonuses its
/// [`Standing`] earns. A node without a standing (no validator challenged it) earns the base
/// only; a node with a provably wrong answer earns nothing (it is slashed instead).
pub fn inference_rewards(
    served: &BTreeMap<Address, u64>,
    standings: &BTreeMap<Address, Standing>,
    rules: &InferenceRewardRules,
) -> BTreeMap<Address, u128> {
    served
        .iter()
        .filter(|(_, n)| **n > 0)
        .filter_map(|(node, n)| {
            let mut bps: u128 = 10_000;
            if let Some(s) = standings.get(node) {
                if s.wrong > 0 {
                    return None;
                }
                if s.accuracy > rules.min_accuracy {
                    bps += u128::from(rules.accuracy_bonus_bps);
                }
                if s.latency_ms < rules.max_latency_ms {
                    bps += u128::from(rules.latency_bonus_bps);
                }
            }
            let amount = rules
                .per_request
                .checked_mul(u128::from(*n))?
                .checked_mul(bps)?
                / 10_000;
            Some((*node, amount))
        })
        .collect()
}

/// Requests each node served: for every decided request, re-runs [`decide`] on its signed
/// answers (with the nodes asked) and counts the nodes that agreed. A consensus that does not
/// re-decide to itself counts for nobody, so a gateway cannot credit a node it did not hear.
pub fn served<'a>(
    decided: impl IntoIterator<Item = (&'a Consensus, &'a [Address])>,
    policy: &ConsensusPolicy,
) -> BTreeMap<Address, u64> {
    let mut out: BTreeMap<Address, u64> = BTreeMap::new();
    for (consensus, asked) in decided {
        let Ok(again) = decide(
            &consensus.request_hash,
            &consensus.model,
            asked,
            &consensus.answers,
            policy,
        ) else {
            continue;
        };
        if again.label != consensus.label || again.agreeing != consensus.agreeing {
            continue;
        }
        for node in again.agreeing {
            *out.entry(node).or_default() += 1;
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::super::{AnswerStatement, InferenceRequest, SignedAnswer};
    use super::*;

    fn key(i: u64) -> MemberKey {
        MemberKey::from_hex(&format!("{:064x}", i + 1)).unwrap()
    }

    fn seen(node: Address, correct: u32, latency_ms: u32) -> NodeObservation {
        NodeObservation {
            node,
            challenges: 10,
            correct,
            wrong: 0,
            missed: 10 - correct,
            latency_ms,
        }
    }

    fn report(
        validator: &MemberKey,
        epoch: u64,
        observations: Vec<NodeObservation>,
    ) -> SignedScoreReport {
        SignedScoreReport::sign(
            validator,
            ScoreReport {
                epoch,
                model: ContentHash::of(b"m"),
                observations,
            },
        )
    }

    /// Three honest validators (stake 3 of 5) see the node at 0.9 and 300 ms; two colluding
    /// ones (stake 2) claim 0.0 and a minute. The median stays in the honest range; with the
    /// colluders holding the majority it would not.
    #[test]
    fn a_stake_minority_cannot_move_a_standing() {
        let node = key(100).address();
        let validators: Vec<MemberKey> = (0..5).map(key).collect();
        let reports: Vec<SignedScoreReport> = validators
            .iter()
            .enumerate()
            .map(|(i, v)| {
                let o = if i < 3 {
                    seen(node, 9, 300 + i as u32)
                } else {
                    seen(node, 0, 60_000)
                };
                report(v, 4, vec![o])
            })
            .collect();
        let stakes: BTreeMap<Address, f64> =
            validators.iter().map(|v| (v.address(), 1.0)).collect();
        let s = combine(&reports, &stakes, 4).unwrap()[&node];
        assert_eq!(s.accuracy, 0.9);
        assert!((300..=302).contains(&s.latency_ms));
        assert_eq!(s.reporters, 5);
        assert!((s.reputation - 0.9 * latency_factor(s.latency_ms as f64 / 1000.0)).abs() < 1e-12);
        assert!(s.reputation < 0.9 && s.reputation > 0.8);

        // The same reports with the two colluders holding most of the stake.
        let mut heavy = stakes.clone();
        heavy.insert(validators[3].address(), 10.0);
        let s = combine(&reports, &heavy, 4).unwrap()[&node];
        assert_eq!(s.accuracy, 0.0);

        // A validator without stake does not count at all.
        let mut unstaked = stakes;
        unstaked.insert(validators[3].address(), 0.0);
        unstaked.insert(validators[4].address(), 0.0);
        assert_eq!(combine(&reports, &unstaked, 4).unwrap()[&node].reporters, 3);
    }

    #[test]
    fn forged_duplicate_and_stale_reports_are_refused() {
        let node = key(100).address();
        let v = key(1);
        let stakes = BTreeMap::from([(v.address(), 1.0)]);
        let good = report(&v, 2, vec![seen(node, 10, 100)]);

        let mut forged = good.clone();
        forged.report.observations[0].correct = 0;
        let err = combine(&[forged], &stakes, 2).unwrap_err();
        assert!(err.to_string().contains("signed by"), "{err}");

        let err = combine(&[good.clone(), good.clone()], &stakes, 2).unwrap_err();
        assert!(err.to_string().contains("twice"), "{err}");

        let err = combine(std::slice::from_ref(&good), &stakes, 3).unwrap_err();
        assert!(err.to_string().contains("epoch 2, not 3"), "{err}");

        let twice = report(&v, 2, vec![seen(node, 1, 1), seen(node, 1, 1)]);
        assert!(combine(&[twice], &stakes, 2).is_err());

        let mut overcount = seen(node, 10, 1);
        overcount.missed = 5;
        assert!(combine(&[report(&v, 2, vec![overcount])], &stakes, 2).is_err());
    }

    #[test]
    fn rewards_follow_the_documents_rules() {
        let [a, b, c, d] = [10, 11, 12, 13].map(|i| key(i).address());
        let standing = |accuracy, latency_ms, wrong| Standing {
            accuracy,
            latency_ms,
            wrong,
            reporters: 1,
            reputation: accuracy,
        };
        let standings = BTreeMap::from([
            (a, standing(0.95, 500, 0)),
            (b, standing(0.9, 500, 0)),
            (c, standing(0.99, 2_000, 0)),
            (d, standing(1.0, 100, 1)),
        ]);
        let served = BTreeMap::from([(a, 10), (b, 10), (c, 10), (d, 10)]);
        let rules = InferenceRewardRules::default();
        let r = inference_rewards(&served, &standings, &rules);
        let tenth = 100_000_000_000_000_000u128;
        assert_eq!(r[&a], 10 * tenth * 17 / 10, "both bonuses");
        assert_eq!(r[&b], 10 * tenth * 12 / 10, "0.9 is not over 0.9");
        assert_eq!(r[&c], 10 * tenth * 15 / 10, "2 s is not under 2 s");
        assert!(!r.contains_key(&d), "a provably wrong node earns nothing");

        let unknown = key(14).address();
        let r = inference_rewards(&BTreeMap::from([(unknown, 3)]), &standings, &rules);
        assert_eq!(r[&unknown], 3 * tenth, "no standing: the base only");

        let huge = InferenceRewardRules {
            per_request: u128::MAX,
            ..rules
        };
        assert!(inference_rewards(&served, &standings, &huge).is_empty());
    }

    #[test]
    fn served_counts_only_consensuses_that_re_decide() {
        let nodes: Vec<MemberKey> = (20..23).map(key).collect();
        let asked: Vec<Address> = nodes.iter().map(MemberKey::address).collect();
        let request = InferenceRequest::new("c", "1", "t", "x");
        let model = ContentHash::of(b"m");
        let answers: Vec<SignedAnswer> = nodes
            .iter()
            .enumerate()
            .map(|(i, k)| {
                let label = if i == 2 { "rejected" } else { "accepted" };
                SignedAnswer::sign(
                    k,
                    AnswerStatement::new(&request, model, label, vec![0.7, 0.3], "funding"),
                )
            })
            .collect();
        let policy = ConsensusPolicy {
            redundancy: 3,
            quorum: 2,
            tolerance: super::super::DEFAULT_TOLERANCE,
        };
        let consensus = decide(&request.hash(), &model, &asked, &answers, &policy).unwrap();
        let count = served([(&consensus, asked.as_slice())], &policy);
        assert_eq!(count.get(&asked[0]), Some(&1));
        assert_eq!(
            count.get(&asked[2]),
            None,
            "the disagreeing node served nothing"
        );

        // A gateway crediting the disagreeing node: the consensus no longer re-decides.
        let mut padded = consensus.clone();
        padded.agreeing.push(asked[2]);
        assert!(served([(&padded, asked.as_slice())], &policy).is_empty());
    }
}
