//! Dawid-Skene: maximum-likelihood class priors and per-annotator confusion matrices by EM.
//!
//! The model: item `i` has a hidden true class `z_i` drawn from priors `p`; annotator `j`
//! answering it says `l` with probability `pi_j[z_i][l]`, independently of the others.
//! EM alternates
//!
//! - **M-step**: from the current posteriors `T[i][k] = P(z_i = k | answers)`, the priors
//!   `p_k` (mean posterior over answered items) and each annotator's confusion matrix
//!   `pi_j[k][l]` (expected count of "true `k`, answered `l`" over its answers, row-normalised),
//!   both with an additive smoothing (a Dirichlet pseudo-count) so no probability is zero;
//! - **E-step**: `T[i][k]` proportional to `p_k * prod_j pi_j[k][l_ij]`, in log space;
//!
//! from the majority vote's fractions as the first posteriors (deterministic, and the usual
//! start: EM then only has to find where the majority errs), until no posterior moves by more
//! than the tolerance or the iteration limit is reached.

use crate::consensus::{
    Answer, Answers, ConfusionMatrix, Consensus, ConsensusError, Method, argmax, vote_fractions,
};

/// Parameters of [`dawid_skene`].
#[derive(Debug, Clone, PartialEq)]
pub struct DawidSkeneConfig {
    /// Most EM iterations.
    pub max_iterations: usize,
    /// Stop once no posterior probability changes by more than this in one iteration.
    pub tolerance: f64,
    /// Pseudo-count added to every confusion-matrix cell and every prior before normalising
    /// (must be positive: it keeps every log-probability finite).
    pub smoothing: f64,
}

impl Default for DawidSkeneConfig {
    fn default() -> Self {
        Self {
            max_iterations: 100,
            tolerance: 1e-5,
            smoothing: 1.0,
        }
    }
}

/// Dawid-Skene consensus over `answers`.
///
/// `gold`, where given, has one entry per item (`Some(class)` for items whose answer is known).
/// Gold items' posteriors are pinned to their known class in every iteration, and EM runs
/// twice: from the majority vote and from confusion matrices estimated on the gold items
/// alone; the fit with the higher objective (log-likelihood plus the smoothing's log-prior)
/// wins. The second start is what lets a few gold items overturn a colluding majority, which
/// the majority-vote start would follow.
pub fn dawid_skene(
    answers: &Answers,
    gold: Option<&[Option<u8>]>,
    config: &DawidSkeneConfig,
) -> Result<Consensus, ConsensusError> {
    let k = answers.num_classes();
    let n = answers.num_items();
    if let Some(gold) = gold {
        check_gold(gold, n, k)?;
    }
    // A non-positive or non-finite smoothing would allow log(0); use the default's instead.
    let smoothing = if config.smoothing.is_finite() && config.smoothing > 0.0 {
        config.smoothing
    } else {
        DawidSkeneConfig::default().smoothing
    };
    let sorted = answers.sorted();
    let em = Em {
        sorted: &sorted,
        answers,
        gold,
        smoothing,
        config,
    };
    let mut start = vote_fractions(answers);
    pin_gold(&mut start, gold, k);
    let mut fit = em.run(start);
    if let Some(gold) = gold.filter(|g| g.iter().any(Option::is_some)) {
        // Only the gold items weigh in the first M-step.
        let mut t = vec![0.0; n * k];
        pin_gold(&mut t, Some(gold), k);
        let from_gold = em.run(t);
        if from_gold.objective > fit.objective {
            fit = from_gold;
        }
    }
    let Fit {
        mut t,
        iterations,
        converged,
        objective,
    } = fit;
    let (priors, confusion) = m_step(&sorted, answers, &t, smoothing);
    let mut answered = vec![false; n];
    sorted.iter().for_each(|a| answered[a.item] = true);
    // Unanswered items carry the priors, and no label.
    for (i, _) in answered.iter().enumerate().filter(|(_, a)| !**a) {
        t[i * k..(i + 1) * k].copy_from_slice(&priors);
    }
    let labels = (0..n)
        .map(|i| answered[i].then(|| argmax(&t[i * k..(i + 1) * k])))
        .collect();
    Ok(Consensus {
        method: Method::DawidSkene,
        labels,
        posteriors: t,
        priors,
        confusion,
        iterations,
        converged,
        objective,
    })
}

/// One EM run's inputs.
struct Em<'a> {
    sorted: &'a [Answer],
    answers: &'a Answers,
    gold: Option<&'a [Option<u8>]>,
    smoothing: f64,
    config: &'a DawidSkeneConfig,
}

/// One EM run's result.
struct Fit {
    t: Vec<f64>,
    iterations: usize,
    converged: bool,
    objective: f64,
}

impl Em<'_> {
    /// EM from the posteriors `t` (first step: M).
    fn run(&self, mut t: Vec<f64>) -> Fit {
        let n = self.answers.num_items();
        let mut iterations = 0;
        let mut converged = false;
        let mut objective = f64::NEG_INFINITY;
        while iterations < self.config.max_iterations {
            iterations += 1;
            let (priors, confusion) = m_step(self.sorted, self.answers, &t, self.smoothing);
            let (next, log_likelihood) = e_step(self.sorted, n, &priors, &confusion, self.gold);
            objective = log_likelihood + log_prior(&priors, &confusion, self.smoothing);
            let delta = t
                .iter()
                .zip(&next)
                .map(|(a, b)| (a - b).abs())
                .fold(0.0, f64::max);
            t = next;
            if delta <= self.config.tolerance {
                converged = true;
                break;
            }
        }
        Fit {
            t,
            iterations,
            converged,
            objective,
        }
    }
}

/// The smoothing's Dirichlet log-prior (up to a constant): what EM with pseudo-counts
/// maximises together with the log-likelihood.
fn log_prior(priors: &[f64], confusion: &[ConfusionMatrix], smoothing: f64) -> f64 {
    let cells: f64 = confusion
        .iter()
        .flat_map(|c| c.values.iter())
        .map(|v| v.ln())
        .sum();
    smoothing * (cells + priors.iter().map(|p| p.ln()).sum::<f64>())
}

fn check_gold(gold: &[Option<u8>], n: usize, k: usize) -> Result<(), ConsensusError> {
    if gold.len() != n {
        return Err(ConsensusError::GoldLength {
            gold: gold.len(),
            items: n,
        });
    }
    if let Some(class) = gold.iter().flatten().find(|c| usize::from(**c) >= k) {
        return Err(ConsensusError::ClassOutOfRange {
            class: *class,
            num_classes: k,
        });
    }
    Ok(())
}

fn pin_gold(t: &mut [f64], gold: Option<&[Option<u8>]>, k: usize) {
    for (i, g) in gold.into_iter().flatten().enumerate() {
        if let Some(c) = g {
            let row = &mut t[i * k..(i + 1) * k];
            row.iter_mut().for_each(|v| *v = 0.0);
            row[usize::from(*c)] = 1.0;
        }
    }
}

/// Priors and confusion matrices from posteriors `t` (`n * k`, row-major), smoothed.
pub(crate) fn m_step(
    sorted: &[Answer],
    answers: &Answers,
    t: &[f64],
    smoothing: f64,
) -> (Vec<f64>, Vec<ConfusionMatrix>) {
    let k = answers.num_classes();
    let m = answers.num_annotators();
    let mut prior_mass = vec![smoothing; k];
    let mut last_item = None;
    for a in sorted {
        if last_item != Some(a.item) {
            last_item = Some(a.item);
            for (p, v) in prior_mass.iter_mut().zip(&t[a.item * k..(a.item + 1) * k]) {
                *p += v;
            }
        }
    }
    let total: f64 = prior_mass.iter().sum();
    let priors = prior_mass.iter().map(|p| p / total).collect();
    // counts[j][truth][answered]
    let mut counts = vec![smoothing; m * k * k];
    for a in sorted {
        let base = a.annotator * k * k;
        let l = usize::from(a.class);
        for truth in 0..k {
            counts[base + truth * k + l] += t[a.item * k + truth];
        }
    }
    let confusion = counts
        .chunks(k * k)
        .map(|cells| {
            let mut values = cells.to_vec();
            for row in values.chunks_mut(k) {
                let s: f64 = row.iter().sum();
                row.iter_mut().for_each(|v| *v /= s);
            }
            ConfusionMatrix { k, values }
        })
        .collect();
    (priors, confusion)
}

/// Posteriors from priors and confusion matrices, in log space, and the log-likelihood of the
/// answers (gold items: of their answers and their known class). Unanswered items get the
/// priors and add nothing.
fn e_step(
    sorted: &[Answer],
    n: usize,
    priors: &[f64],
    confusion: &[ConfusionMatrix],
    gold: Option<&[Option<u8>]>,
) -> (Vec<f64>, f64) {
    let k = priors.len();
    let log_priors: Vec<f64> = priors.iter().map(|p| p.ln()).collect();
    let log_confusion: Vec<Vec<f64>> = confusion
        .iter()
        .map(|c| c.values.iter().map(|v| v.ln()).collect())
        .collect();
    let mut log_t: Vec<f64> = (0..n).flat_map(|_| log_priors.iter().copied()).collect();
    let mut answered = vec![false; n];
    for a in sorted {
        answered[a.item] = true;
        let lc = &log_confusion[a.annotator];
        let l = usize::from(a.class);
        for truth in 0..k {
            log_t[a.item * k + truth] += lc[truth * k + l];
        }
    }
    let mut log_likelihood = 0.0;
    for (i, row) in log_t.chunks_mut(k).enumerate() {
        let known = gold.and_then(|g| g[i]).map(usize::from);
        if answered[i] {
            let max = row.iter().copied().fold(f64::NEG_INFINITY, f64::max);
            let sum: f64 = row.iter().map(|v| (v - max).exp()).sum();
            log_likelihood += match known {
                Some(c) => row[c],
                None => max + sum.ln(),
            };
        }
        match known {
            Some(c) => {
                row.iter_mut().for_each(|v| *v = 0.0);
                row[c] = 1.0;
            }
            None => {
                let max = row.iter().copied().fold(f64::NEG_INFINITY, f64::max);
                let mut sum = 0.0;
                for v in row.iter_mut() {
                    *v = (*v - max).exp();
                    sum += *v;
                }
                row.iter_mut().for_each(|v| *v /= sum);
            }
        }
    }
    (log_t, log_likelihood)
}
