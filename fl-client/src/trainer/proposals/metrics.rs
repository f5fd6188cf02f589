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
    let mut outcome = Vec::new();
    let mut kind = Vec::new();
    for (i, p) in predictions.iter().enumerate().take(data.len()) {
        if let Some(y) = data.outcome(i) {
            outcome.push((y, u8::from(p.p_accepted < 0.5)));
        }
        kind.push((data.kind(i), p.kind.class()));
    }
    OutcomeScores {
        outcome: ClassScores::of(&outcome, super::OUTCOME_CLASSES),
        kind: ClassScores::of(&kind, ProposalKind::COUNT),
    }
}
