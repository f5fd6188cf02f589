//! Annotator quality: chance-corrected agreement with the truth, estimated two ways.
//!
//! Raw accuracy rewards guessing the common class: on a question whose answer is "rejected"
//! 60% of the time, an annotator who always says "rejected" is 60% accurate and knows nothing.
//! The score here is Cohen's kappa between the annotator and the true class,
//! `(P_o - P_e) / (1 - P_e)`, with `P_o` the probability of a right answer and `P_e` the
//! probability of agreeing by chance (true class and answer drawn independently from their
//! marginals). It is 1 for a perfect annotator, about 0 for any spammer whose answers ignore
//! the item (uniform, constant or otherwise), and negative for an adversary.
//!
//! - From the **confusion matrix** ([`kappa_from_confusion`]): `P_o = sum_k p_k pi[k][k]`,
//!   `P_e = sum_l p_l q_l` with `q_l = sum_k p_k pi[k][l]` the annotator's answer marginal.
//! - From **gold items**: `P_o` the share of gold items answered right, `P_e` from the
//!   consensus priors and the annotator's answer marginal over all its answers.
//!
//! The score blends them as `(g * kappa_gold + w * kappa_model) / (g + w)` for `g` gold
//! answers and a weight `w` ([`QualityConfig::gold_weight`]): with no gold it is the model's
//! estimate; with many gold items, the gold estimate, which a colluding majority cannot bend.

use crate::consensus::{Answers, ConfusionMatrix, Consensus, ConsensusError};

/// How gold and model estimates combine.
#[derive(Debug, Clone, PartialEq)]
pub struct QualityConfig {
    /// Weight of the confusion-matrix estimate, in gold answers: with this many gold answers
    /// the two estimates count equally.
    pub gold_weight: f64,
}

impl Default for QualityConfig {
    fn default() -> Self {
        Self { gold_weight: 10.0 }
    }
}

/// One annotator's quality on one question.
#[derive(Debug, Clone, PartialEq)]
pub struct AnnotatorQuality {
    /// Annotator index.
    pub annotator: usize,
    /// Answers given.
    pub answers: usize,
    /// Share of its answers equal to the consensus label.
    pub agreement: f64,
    /// Expected accuracy from the confusion matrix and priors, `sum_k p_k pi[k][k]`.
    pub accuracy: f64,
    /// Kappa from the confusion matrix and priors.
    pub kappa: f64,
    /// Gold items it answered.
    pub gold_answers: usize,
    /// Gold items it answered right.
    pub gold_correct: usize,
    /// Kappa on gold items, where it answered any.
    pub gold_kappa: Option<f64>,
    /// The blended score (see the module docs): what rewards and flags use.
    pub score: f64,
}

/// Cohen's kappa between the true class (distributed as `priors`) and an annotator with
/// confusion matrix `confusion`; 0 when agreement by chance is certain.
pub fn kappa_from_confusion(priors: &[f64], confusion: &ConfusionMatrix) -> f64 {
    let k = priors.len();
    let p_o: f64 = (0..k).map(|c| priors[c] * confusion.get(c, c)).sum();
    let p_e: f64 = (0..k)
        .map(|l| {
            let q_l: f64 = (0..k).map(|c| priors[c] * confusion.get(c, l)).sum();
            priors[l] * q_l
        })
        .sum();
    kappa(p_o, p_e)
}

fn kappa(p_o: f64, p_e: f64) -> f64 {
    if 1.0 - p_e <= 1e-12 {
        0.0
    } else {
        (p_o - p_e) / (1.0 - p_e)
    }
}

/// Every annotator's quality on the question `answers` answer, from `consensus` (which
/// must have been computed from the same answers) and, where given, `gold` (one entry per
/// item, `Some(class)` for gold items).
pub fn annotator_quality(
    answers: &Answers,
    consensus: &Consensus,
    gold: Option<&[Option<u8>]>,
    config: &QualityConfig,
) -> Result<Vec<AnnotatorQuality>, ConsensusError> {
    let k = answers.num_classes();
    let m = answers.num_annotators();
    if consensus.confusion.len() < m
        || consensus.labels.len() < answers.num_items()
        || consensus.priors.len() != k
        || consensus.confusion.iter().any(|c| c.num_classes() != k)
    {
        return Err(ConsensusError::ConsensusMismatch {
            items: consensus.labels.len(),
            annotators: consensus.confusion.len(),
        });
    }
    if let Some(g) = gold
        && g.len() != answers.num_items()
    {
        return Err(ConsensusError::GoldLength {
            gold: g.len(),
            items: answers.num_items(),
        });
    }
    let mut given = vec![0usize; m];
    let mut agreed = vec![0usize; m];
    let mut marginal = vec![vec![0.0f64; k]; m];
    let mut gold_answers = vec![0usize; m];
    let mut gold_correct = vec![0usize; m];
    for a in answers.sorted() {
        given[a.annotator] += 1;
        marginal[a.annotator][usize::from(a.class)] += 1.0;
        if consensus.labels.get(a.item).copied().flatten() == Some(a.class) {
            agreed[a.annotator] += 1;
        }
        if consensus.confusion.len() < m
            || consensus.labels.len() < answers.num_items()
            || consensus.priors.len() != k
            || consensus.confusion.iter().any(|c| c.num_classes() != k)
        {
            return Err(ConsensusError::ConsensusMismatch {
                items: consensus.labels.len(),
                annotators: consensus.confusion.len(),
            });
        }
        if let Some(g) = gold.and_then(|g| g[a.item]) {
            gold_answers[a.annotator] += 1;
            if g == a.class {
                gold_correct[a.annotator] += 1;
            }
        }
    }
    let w = config.gold_weight.max(0.0);
    Ok((0..m)
        .map(|j| {
            let confusion = &consensus.confusion[j];
            let accuracy = (0..k)
                .map(|c| consensus.priors[c] * confusion.get(c, c))
                .sum();
            let model_kappa = kappa_from_confusion(&consensus.priors, confusion);
            let gold_kappa = (gold_answers[j] > 0).then(|| {
                let p_o = gold_correct[j] as f64 / gold_answers[j] as f64;
                let total = given[j] as f64;
                let p_e = (0..k)
                    .map(|l| consensus.priors[l] * marginal[j][l] / total)
                    .sum();
                kappa(p_o, p_e)
            });
            let score = match gold_kappa {
                Some(gk) => {
                    let g = gold_answers[j] as f64;
                    (g * gk + w * model_kappa) / (g + w)
                }
                None => model_kappa,
            };
            AnnotatorQuality {
                annotator: j,
                answers: given[j],
                agreement: if given[j] == 0 {
                    0.0
                } else {
                    agreed[j] as f64 / given[j] as f64
                },
                accuracy,
                kappa: model_kappa,
                gold_answers: gold_answers[j],
                gold_correct: gold_correct[j],
                gold_kappa,
                score,
            }
        })
        .collect())
}
