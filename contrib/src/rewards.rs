//! Annotation rewards and the flagging of bad annotators.
//!
//! The DAO's formula, per annotator and epoch: 10 $PROPOSAL per annotation; +50% of that when
//! the annotator's quality score exceeds 0.8; +100% for the first 1,000 contributors. The
//! bonuses add (an early contributor above the bar earns 10 + 5 + 10 = 25 per annotation).
//! Every number is a governable field of [`RewardPolicy`]; amounts are integers in the token's
//! base units (18 decimals) and quality scores are compared in basis points
//! ([`score_bps`]), so the same inputs give the same payout on every machine.
//!
//! An annotator whose score falls below [`RewardPolicy::quality_floor_bps`] over at least
//! [`RewardPolicy::min_items_for_flag`] answers is flagged ([`flag_annotators`]), with the
//! evidence: each of its signed annotations (content address) that disagrees with the
//! consensus or with a gold item. A flagged annotator earns nothing for the epoch; slashing it
//! is the settlement path's job.

use fl_core::ContentHash;

use crate::consensus::{AnnotatorQuality, Answers, Consensus};

/// Base units per whole $PROPOSAL (18 decimals).
pub const TOKEN: u128 = 1_000_000_000_000_000_000;
/// Basis points in one (100%).
pub const BPS: u32 = 10_000;

/// The governable parameters of annotation rewards and flags.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RewardPolicy {
    /// Reward per annotation, in base units (default 10 $PROPOSAL).
    pub per_annotation: u128,
    /// Bonus for quality above the bar, in basis points of the base (default 5,000: +50%).
    pub quality_bonus_bps: u32,
    /// The bar: the bonus is paid when the score in basis points is strictly above it
    /// (default 8,000: a score above 0.8).
    pub quality_threshold_bps: i32,
    /// Bonus for early contributors, in basis points of the base (default 10,000: +100%).
    pub early_bonus_bps: u32,
    /// How many contributors count as early (default 1,000: ranks 0 to 999).
    pub early_contributors: u64,
    /// Annotators scoring below this, in basis points, are flagged (default 2,000: 0.2).
    pub quality_floor_bps: i32,
    /// Fewest answers in the epoch before an annotator may be flagged (default 30).
    pub min_items_for_flag: usize,
}

impl Default for RewardPolicy {
    fn default() -> Self {
        Self {
            per_annotation: 10 * TOKEN,
            quality_bonus_bps: 5_000,
            quality_threshold_bps: 8_000,
            early_bonus_bps: 10_000,
            early_contributors: 1_000,
            quality_floor_bps: 2_000,
            min_items_for_flag: 30,
        }
    }
}

/// What an annotator did in an epoch, as the reward formula needs it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct AnnotatorEpoch {
    /// Annotations revealed and counted (assigned, committed, matching their commitment).
    pub annotations: u64,
    /// Quality score in basis points ([`score_bps`]).
    pub quality_bps: i32,
    /// Order of the annotator's first contribution, from 0 (the registry's event order).
    pub contributor_rank: u64,
    /// Whether the annotator was flagged this epoch.
    pub flagged: bool,
}

/// An epoch's reward, itemised, in base units.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Reward {
    /// Annotations times the per-annotation reward.
    pub base: u128,
    /// The quality bonus.
    pub quality_bonus: u128,
    /// The early-contributor bonus.
    pub early_bonus: u128,
    /// The sum.
    pub total: u128,
}

/// Why a reward could not be computed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum RewardError {
    /// The amount does not fit in 128 bits (absurd parameters or counts).
    #[error("reward overflows: {annotations} annotations at {per_annotation} base units each")]
    Overflow {
        /// Annotations.
        annotations: u64,
        /// Reward per annotation.
        per_annotation: u128,
    },
}

/// A quality score as basis points, rounded to nearest and clamped to
/// `[-10 * BPS, BPS]`; a NaN (no score) is the lowest value.
pub fn score_bps(score: f64) -> i32 {
    let bps = f64::from(BPS);
    if score.is_nan() {
        return -10 * BPS as i32;
    }
    // The clamp keeps the product in i32's range, so the cast is exact.
    (score.clamp(-10.0, 1.0) * bps).round() as i32
}

/// One score for an annotator over several questions: the mean of its per-question scores
/// weighted by its answers to each. `None` when it answered nothing.
pub fn epoch_score(per_question: &[&AnnotatorQuality]) -> Option<f64> {
    let answers: usize = per_question.iter().map(|q| q.answers).sum();
    (answers > 0).then(|| {
        per_question
            .iter()
            .map(|q| q.score * q.answers as f64)
            .sum::<f64>()
            / answers as f64
    })
}

/// The reward of one annotator for one epoch under `policy`.
pub fn annotation_reward(
    policy: &RewardPolicy,
    epoch: &AnnotatorEpoch,
) -> Result<Reward, RewardError> {
    if epoch.flagged {
        return Ok(Reward::default());
    }
    let overflow = || RewardError::Overflow {
        annotations: epoch.annotations,
        per_annotation: policy.per_annotation,
    };
    let base = policy
        .per_annotation
        .checked_mul(u128::from(epoch.annotations))
        .ok_or_else(overflow)?;
    let share = |bps: u32| {
        base.checked_mul(u128::from(bps))
            .map(|v| v / u128::from(BPS))
            .ok_or_else(overflow)
    };
    let quality_bonus = if epoch.quality_bps > policy.quality_threshold_bps {
        share(policy.quality_bonus_bps)?
    } else {
        0
    };
    let early_bonus = if epoch.contributor_rank < policy.early_contributors {
        share(policy.early_bonus_bps)?
    } else {
        0
    };
    let total = base
        .checked_add(quality_bonus)
        .and_then(|v| v.checked_add(early_bonus))
        .ok_or_else(overflow)?;
    Ok(Reward {
        base,
        quality_bonus,
        early_bonus,
        total,
    })
}

/// One signed answer held against a flagged annotator.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Evidence {
    /// Item index.
    pub item: usize,
    /// The class the annotator answered.
    pub answered: u8,
    /// The consensus class.
    pub consensus: Option<u8>,
    /// The known class, for a gold item.
    pub gold: Option<u8>,
    /// The signed annotation record the answer comes from.
    pub record: Option<ContentHash>,
}

/// An annotator flagged for low quality, with the evidence.
#[derive(Debug, Clone, PartialEq)]
pub struct Flag {
    /// Its quality (score, gold agreement, answers).
    pub quality: AnnotatorQuality,
    /// Its score in basis points, below the floor.
    pub score_bps: i32,
    /// Its answers that disagree with the consensus or with gold, by item.
    pub evidence: Vec<Evidence>,
}

/// The annotators whose score is below the policy's floor over enough answers, lowest score
/// first, each with its disagreeing answers as evidence. `quality` comes from
/// [`annotator_quality`](crate::consensus::annotator_quality) over the same answers,
/// consensus and gold.
pub fn flag_annotators(
    policy: &RewardPolicy,
    answers: &Answers,
    consensus: &Consensus,
    quality: &[AnnotatorQuality],
    gold: Option<&[Option<u8>]>,
) -> Vec<Flag> {
    let mut flags: Vec<Flag> = quality
        .iter()
        .filter(|q| {
            q.answers >= policy.min_items_for_flag && score_bps(q.score) < policy.quality_floor_bps
        })
        .map(|q| Flag {
            quality: q.clone(),
            score_bps: score_bps(q.score),
            evidence: Vec::new(),
        })
        .collect();
    for a in answers.sorted() {
        let Some(flag) = flags
            .iter_mut()
            .find(|f| f.quality.annotator == a.annotator)
        else {
            continue;
        };
        let agreed = consensus.labels.get(a.item).copied().flatten();
        let gold = gold.and_then(|g| g.get(a.item).copied().flatten());
        if agreed != Some(a.class) || gold.is_some_and(|g| g != a.class) {
            flag.evidence.push(Evidence {
                item: a.item,
                answered: a.class,
                consensus: agreed,
                gold,
                record: a.record,
            });
        }
    }
    flags.sort_by(|x, y| {
        x.score_bps
            .cmp(&y.score_bps)
            .then(x.quality.annotator.cmp(&y.quality.annotator))
    });
    flags
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::consensus::{DawidSkeneConfig, QualityConfig, annotator_quality, dawid_skene};

    fn epoch(annotations: u64, quality: f64, rank: u64) -> AnnotatorEpoch {
        AnnotatorEpoch {
            annotations,
            quality_bps: score_bps(quality),
            contributor_rank: rank,
            flagged: false,
        }
    }

    #[test]
    fn the_formula_as_the_dao_wrote_it() {
        let p = RewardPolicy::default();
        // Plain: 10 per annotation.
        let r = annotation_reward(&p, &epoch(100, 0.5, 5_000)).unwrap();
        assert_eq!(r.total, 1_000 * TOKEN);
        assert_eq!((r.quality_bonus, r.early_bonus), (0, 0));
        // Quality above 0.8: +50%.
        let r = annotation_reward(&p, &epoch(100, 0.85, 5_000)).unwrap();
        assert_eq!(r.total, 1_500 * TOKEN);
        // Early contributor: +100%.
        let r = annotation_reward(&p, &epoch(100, 0.5, 999)).unwrap();
        assert_eq!(r.total, 2_000 * TOKEN);
        // Both: 10 + 5 + 10 = 25 per annotation.
        let r = annotation_reward(&p, &epoch(100, 0.9, 0)).unwrap();
        assert_eq!(
            (r.base, r.quality_bonus, r.early_bonus),
            (1_000 * TOKEN, 500 * TOKEN, 1_000 * TOKEN)
        );
        assert_eq!(r.total, 2_500 * TOKEN);
    }

    #[test]
    fn the_thresholds_are_strict_where_the_text_says_so() {
        let p = RewardPolicy::default();
        // "exceeds 0.8": exactly 0.8 earns no bonus; 0.80005 rounds to 8,001 bps and does.
        assert_eq!(
            annotation_reward(&p, &epoch(1, 0.8, 5_000))
                .unwrap()
                .quality_bonus,
            0
        );
        assert_eq!(
            annotation_reward(&p, &epoch(1, 0.80005, 5_000))
                .unwrap()
                .quality_bonus,
            5 * TOKEN
        );
        // "first 1,000": ranks 0..=999.
        assert_eq!(
            annotation_reward(&p, &epoch(1, 0.0, 1_000))
                .unwrap()
                .early_bonus,
            0
        );
        assert_eq!(
            annotation_reward(&p, &epoch(1, 0.0, 999))
                .unwrap()
                .early_bonus,
            10 * TOKEN
        );
    }

    #[test]
    fn parameters_are_governable_and_flagged_annotators_earn_nothing() {
        let p = RewardPolicy {
            per_annotation: 3 * TOKEN,
            quality_bonus_bps: 2_500,
            early_contributors: 10,
            ..RewardPolicy::default()
        };
        let r = annotation_reward(&p, &epoch(4, 0.95, 10)).unwrap();
        assert_eq!(r.total, 15 * TOKEN);
        let mut e = epoch(4, 0.95, 0);
        e.flagged = true;
        assert_eq!(annotation_reward(&p, &e).unwrap(), Reward::default());
        let huge = RewardPolicy {
            per_annotation: u128::MAX / 2,
            ..RewardPolicy::default()
        };
        assert!(matches!(
            annotation_reward(&huge, &epoch(3, 0.0, 5_000)),
            Err(RewardError::Overflow { .. })
        ));
    }

    #[test]
    fn scores_convert_to_basis_points() {
        assert_eq!(score_bps(0.8), 8_000);
        assert_eq!(score_bps(1.7), 10_000);
        assert_eq!(score_bps(-0.25), -2_500);
        assert_eq!(score_bps(f64::NEG_INFINITY), -100_000);
        assert_eq!(score_bps(f64::NAN), -100_000);
    }

    #[test]
    fn flags_need_a_low_score_over_enough_items_and_carry_evidence() {
        // Items 0..40; annotators 0-2 always right, 3 always wrong, 4 always wrong but on
        // only 10 items (too few to flag).
        let mut answers = Answers::new(2).unwrap();
        let truth = |i: usize| u8::from(i.is_multiple_of(3));
        for i in 0..40 {
            for j in 0..3 {
                answers.push(i, j, truth(i)).unwrap();
            }
            answers.push(i, 3, 1 - truth(i)).unwrap();
            if i < 10 {
                answers.push(i, 4, 1 - truth(i)).unwrap();
            }
        }
        let gold: Vec<Option<u8>> = (0..40usize)
            .map(|i| i.is_multiple_of(8).then(|| truth(i)))
            .collect();
        let c = dawid_skene(&answers, Some(&gold), &DawidSkeneConfig::default()).unwrap();
        let q = annotator_quality(&answers, &c, Some(&gold), &QualityConfig::default()).unwrap();
        let flags = flag_annotators(&RewardPolicy::default(), &answers, &c, &q, Some(&gold));
        assert_eq!(flags.len(), 1, "{flags:?}");
        let f = &flags[0];
        assert_eq!(f.quality.annotator, 3);
        assert_eq!(f.evidence.len(), 40);
        assert!(
            f.evidence
                .iter()
                .all(|e| e.consensus == Some(truth(e.item)))
        );
        assert_eq!(f.evidence.iter().filter(|e| e.gold.is_some()).count(), 5);
    }
}
