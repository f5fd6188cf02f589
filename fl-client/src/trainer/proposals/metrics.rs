//! Scores of proposal predictions: accuracy and macro-F1 of both heads.

use fl_core::round::Metrics;

use super::{EncodedProposals, ProposalPrediction};
use crate::data::proposals::ProposalKind;

/// Accuracy and macro-F1 of one classification head.
#[derive(Debug, Clone, Copy, PartialEq, Default)]
pub struct ClassScores {
    /// Examples scored.
    pub n: usize,
    /// Share predicted right (0 when `n` is 0).
    pub accuracy: f64,
    /// Mean F1 over the classes that occur among the true or the predicted labels (as
    /// scikit-learn's `f1_score(average="macro")`, a class without true positives scoring 0).
    pub macro_f1: f64,
}

impl ClassScores {
    /// Scores `(true, predicted)` class pairs of `classes` classes.
    pub fn of(pairs: &[(u8, u8)], classes: usize) -> Self {
        let n = pairs.len();
        if n == 0 {
            return Self::default();
        }
        let mut tp = vec![0usize; classes];
        let mut true_n = vec![0usize; classes];
        let mut pred_n = vec![0usize; classes];
        for &(t, p) in pairs {
            let (t, p) = (usize::from(t), usize::from(p));
            if t < classes {
                true_n[t] += 1;
            }
            if p < classes {
                pred_n[p] += 1;
            }
            if t == p && t < classes {
                tp[t] += 1;
            }
        }
        let present: Vec<usize> = (0..classes)
            .filter(|&c| true_n[c] + pred_n[c] > 0)
            .collect();
        let f1 = |c: usize| 2.0 * tp[c] as f64 / (true_n[c] + pred_n[c]) as f64;
        Self {
            n,
            accuracy: tp.iter().sum::<usize>() as f64 / n as f64,
            macro_f1: present.iter().map(|&c| f1(c)).sum::<f64>() / present.len().max(1) as f64,
        }
    }
}

/// Scores of both heads on a set of proposals.
#[derive(Debug, Clone, Copy, PartialEq, Default)]
pub struct OutcomeScores {
    /// The outcome head on the decided examples (threshold 0.5 on `p_accepted`).
    pub outcome: ClassScores,
    /// The kind head on all examples.
    pub kind: ClassScores,
}

impl OutcomeScores {
    /// As metrics: `accuracy` and `macro_f1` (outcome), `kind_accuracy`, `kind_macro_f1`,
    /// `decided` (examples with an outcome).
    pub fn to_metrics(&self) -> Metrics {
        let mut m = Metrics::new();
        m.insert("accuracy".into(), self.outcome.accuracy);
        m.insert("macro_f1".into(), self.outcome.macro_f1);
        m.insert("kind_accuracy".into(), self.kind.accuracy);
        m.insert("kind_macro_f1".into(), self.kind.macro_f1);
        m.insert("decided".into(), self.outcome.n as f64);
        m
    }
}

/// Scores `predictions` (one per example of `data`, in order) against `data`'s labels.
pub fn score(data: &EncodedProposals, predictions: &[ProposalPrediction]) -> OutcomeScores {
    score_at(data, predictions, 0.5)
}

/// As [`score`], a proposal predicted `rejected` when its `p_accepted` is below `threshold`
/// (0.5 in [`score`]).
pub fn score_at(
    data: &EncodedProposals,
    predictions: &[ProposalPrediction],
    threshold: f64,
) -> OutcomeScores {
    let mut outcome = Vec::new();
    let mut kind = Vec::new();
    for (i, p) in predictions.iter().enumerate().take(data.len()) {
        if let Some(y) = data.outcome(i) {
            outcome.push((y, u8::from(f64::from(p.p_accepted) < threshold)));
        }
        kind.push((data.kind(i), p.kind.class()));
    }
    OutcomeScores {
        outcome: ClassScores::of(&outcome, super::OUTCOME_CLASSES),
        kind: ClassScores::of(&kind, ProposalKind::COUNT),
    }
}

/// Outcome confusion counts of one set of proposals at each decision threshold of a fixed
/// grid ([`ThresholdCounts::threshold`]): what a member reports of the global model on its own
/// validation proposals when the federation calibrates the outcome head's decision threshold.
///
/// The counts are all a member reveals (four integers per threshold, no text, no
/// per-proposal score), and the federation's counts are their **sum** ([`add`](Self::add)), so
/// they can be aggregated like any update, under secure aggregation too. The threshold that
/// maximises the summed counts' macro-F1 ([`best`](Self::best)) is the one a central
/// evaluation on the pooled validation sets would pick.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ThresholdCounts {
    /// Per grid threshold: `[true accepted, accepted predicted rejected, true rejected,
    /// rejected predicted accepted]`.
    counts: Vec<[u64; 4]>,
}

/// A decision threshold and the macro-F1 it reaches on the counts it was chosen from.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct CalibratedThreshold {
    /// Predict `rejected` when `p_accepted` is below this.
    pub threshold: f64,
    /// Outcome macro-F1 of the counts at `threshold`.
    pub macro_f1: f64,
    /// The same counts' macro-F1 at the uncalibrated threshold 0.5.
    pub macro_f1_at_half: f64,
    /// Decided proposals counted.
    pub n: u64,
}

impl Default for ThresholdCounts {
    fn default() -> Self {
        Self {
            counts: vec![[0; 4]; Self::GRID],
        }
    }
}

impl ThresholdCounts {
    /// Thresholds in the grid: 0.20, 0.21, ..., 0.80.
    pub const GRID: usize = 61;

    /// The `i`-th threshold of the grid (`0.2 + i / 100`).
    pub fn threshold(i: usize) -> f64 {
        (20 + i) as f64 / 100.0
    }

    /// Counts `predictions` (one per example of `data`, in order) against `data`'s decided
    /// outcome labels; open proposals are not counted.
    pub fn of(data: &EncodedProposals, predictions: &[ProposalPrediction]) -> Self {
        let mut counts = Self::default();
        for (i, p) in predictions.iter().enumerate().take(data.len()) {
            let Some(y) = data.outcome(i) else { continue };
            let p = f64::from(p.p_accepted);
            for (t, c) in counts.counts.iter_mut().enumerate() {
                let rejected = p < Self::threshold(t);
                let slot = match (y, rejected) {
                    (0, false) => 0,
                    (0, true) => 1,
                    (_, true) => 2,
                    (_, false) => 3,
                };
                c[slot] += 1;
            }
        }
        counts
    }

    /// Adds another member's counts (saturating, so hostile counts cannot overflow).
    pub fn add(&mut self, other: &Self) {
        for (a, b) in self.counts.iter_mut().zip(&other.counts) {
            for (x, y) in a.iter_mut().zip(b) {
                *x = x.saturating_add(*y);
            }
        }
    }

    /// Decided proposals counted.
    pub fn n(&self) -> u64 {
        self.counts[0].iter().sum()
    }

    /// Outcome macro-F1 at grid threshold `i` (scikit-learn's convention, as [`ClassScores`]).
    pub fn macro_f1(&self, i: usize) -> f64 {
        let [aa, ar, rr, ra] = self.counts[i].map(|c| c as f64);
        // Class "accepted": true positives aa, predicted accepted aa + ra, true aa + ar.
        let f1 = |tp: f64, pred: f64, truth: f64| {
            (pred + truth > 0.0).then(|| 2.0 * tp / (pred + truth))
        };
        let scores: Vec<f64> = [f1(aa, aa + ra, aa + ar), f1(rr, rr + ar, rr + ra)]
            .into_iter()
            .flatten()
            .collect();
        scores.iter().sum::<f64>() / scores.len().max(1) as f64
    }

    /// The grid threshold with the highest macro-F1; of equals, the one closest to 0.5.
    /// `None` when nothing was counted.
    pub fn best(&self) -> Option<CalibratedThreshold> {
        if self.n() == 0 {
            return None;
        }
        let half = Self::GRID / 2; // threshold 0.5
        let best = (0..Self::GRID).max_by(|&a, &b| {
            self.macro_f1(a).total_cmp(&self.macro_f1(b)).then_with(|| {
                let d = |i: usize| (Self::threshold(i) - 0.5).abs();
                d(b).total_cmp(&d(a))
            })
        })?;
        Some(CalibratedThreshold {
            threshold: Self::threshold(best),
            macro_f1: self.macro_f1(best),
            macro_f1_at_half: self.macro_f1(half),
            n: self.n(),
        })
    }
}
