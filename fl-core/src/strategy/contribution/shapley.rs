//! The scoring methods over any [`CoalitionGame`]: leave-one-out, the exact Shapley value
//! (every coalition, `2ⁿ` values) and GTG-Shapley (Liu, Lou, Zhao and Zhang 2022, "GTG-Shapley:
//! Efficient and Accurate Participant Contribution Evaluation in Federated Learning"): guided
//! permutation sampling with between-round and within-round truncation. With both tolerances
//! at 0 it is plain Monte-Carlo permutation sampling, and with only the within-round one it is
//! truncated Monte-Carlo Shapley (Ghorbani and Zou 2019) with guided first positions.

use rand::SeedableRng;
use rand::seq::SliceRandom;
use rand_chacha::ChaCha8Rng;

use super::ContributionError;
use super::game::CoalitionGame;

/// The most players [`exact_shapley`] takes (`2¹⁶` coalitions).
pub const MAX_EXACT_PLAYERS: usize = 16;

/// Leave-one-out: `v(N) - v(N \ {i})` for every player `i` (`n + 1` evaluations).
pub fn leave_one_out(game: &mut impl CoalitionGame) -> Result<Vec<f64>, ContributionError> {
    let n = game.players();
    let all: Vec<usize> = (0..n).collect();
    let v_all = game.value(&all)?;
    (0..n)
        .map(|i| {
            let others: Vec<usize> = all.iter().copied().filter(|&j| j != i).collect();
            Ok(v_all - game.value(&others)?)
        })
        .collect()
}

/// The exact Shapley value `φᵢ = Σ_{S ⊆ N∖{i}} |S|!(n-|S|-1)!/n! · (v(S ∪ {i}) - v(S))` from the
/// values of all `2ⁿ` coalitions; refuses more than [`MAX_EXACT_PLAYERS`] players.
pub fn exact_shapley(game: &mut impl CoalitionGame) -> Result<Vec<f64>, ContributionError> {
    let n = game.players();
    if n > MAX_EXACT_PLAYERS {
        return Err(ContributionError::TooManyForExact {
            players: n,
            max: MAX_EXACT_PLAYERS,
        });
    }
    let values = (0..1usize << n)
        .map(|mask| {
            let members: Vec<usize> = (0..n).filter(|i| mask & (1 << i) != 0).collect();
            game.value(&members)
        })
        .collect::<Result<Vec<f64>, _>>()?;
    // |S|!(n-|S|-1)!/n! = 1 / (n · C(n-1, |S|)).
    let mut binom = vec![1f64; n.max(1)];
    for s in 1..n {
        binom[s] = binom[s - 1] * (n - s) as f64 / s as f64;
    }
    let mut phi = vec![0f64; n];
    for (mask, &v) in values.iter().enumerate() {
        let size = mask.count_ones() as usize;
        for (i, p) in phi.iter_mut().enumerate() {
            if mask & (1 << i) == 0 {
                *p += (values[mask | (1 << i)] - v) / (n as f64 * binom[size]);
            }
        }
    }
    Ok(phi)
}

/// Settings of [`gtg_shapley`].
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct GtgSettings {
    /// Most permutations sampled.
    pub max_permutations: usize,
    /// Within-round truncation: once a permutation's prefix is within this of `v(N)`, the
    /// remaining players' marginal gains count as 0 and are not evaluated (0: never).
    pub truncation: f64,
    /// Between-round truncation: if `|v(N) - v(∅)|` is below this, every value is 0 and
    /// nothing else is evaluated (0: never).
    pub round_truncation: f64,
    /// Stop after a full cycle of `n` permutations (every player led one) that moved the values
    /// by less than this fraction, in L1 norm, of their size (0: run every permutation).
    pub convergence: f64,
    /// Seeds the permutations.
    pub seed: u64,
}

/// What [`gtg_shapley`] computed and what it cost.
#[derive(Debug, Clone, PartialEq)]
pub struct SampledShapley {
    /// The estimated Shapley value of each player.
    pub values: Vec<f64>,
    /// Permutations sampled.
    pub permutations: usize,
    /// Marginal gains set to 0 by within-round truncation instead of evaluated.
    pub truncated: usize,
    /// Whether the game was skipped (every value 0) because `|v(N) - v(∅)|` is below the
    /// between-round tolerance, or below the within-round one (which would truncate every
    /// permutation at its first step).
    pub round_truncated: bool,
}

/// GTG-Shapley: permutations whose first player cycles through all players (guided
/// sampling, so every player leads equally often) and whose rest is shuffled from `seed`;
/// each player's value is the mean of its marginal gains over the permutations, with the two
/// truncations of [`GtgSettings`]. Deterministic for a given game and settings.
///
/// Without truncation the values of every permutation sum to `v(N) - v(∅)`, so the estimate
/// is efficient; within-round truncation moves the sum by less than its tolerance.
pub fn gtg_shapley(
    game: &mut impl CoalitionGame,
    settings: &GtgSettings,
) -> Result<SampledShapley, ContributionError> {
    let n = game.players();
    let mut out = SampledShapley {
        values: vec![0.0; n],
        permutations: 0,
        truncated: 0,
        round_truncated: false,
    };
    if n == 0 {
        return Ok(out);
    }
    let all: Vec<usize> = (0..n).collect();
    let v_empty = game.value(&[])?;
    let v_all = game.value(&all)?;
    // A round that moved the utility by less than a tolerance: between-round truncation, or
    // within-round truncation at every permutation's first step (the same zeros, unsampled).
    let gain = (v_all - v_empty).abs();
    let below = |tolerance: f64| tolerance > 0.0 && gain < tolerance;
    if below(settings.round_truncation) || below(settings.truncation) {
        out.round_truncated = true;
        return Ok(out);
    }
    let mut rng = ChaCha8Rng::seed_from_u64(settings.seed);
    let mut last_cycle = out.values.clone();
    let mut prefix = Vec::with_capacity(n);
    for k in 1..=settings.max_permutations {
        let lead = (k - 1) % n;
        let mut rest: Vec<usize> = all.iter().copied().filter(|&i| i != lead).collect();
        rest.shuffle(&mut rng);
        prefix.clear();
        let mut v_prev = v_empty;
        for (j, player) in std::iter::once(lead).chain(rest).enumerate() {
            prefix.push(player);
            let v = if settings.truncation > 0.0 && (v_all - v_prev).abs() < settings.truncation {
                out.truncated += 1;
                v_prev
            } else if j + 1 == n {
                v_all
            } else {
                game.value(&prefix)?
            };
            out.values[player] += (v - v_prev - out.values[player]) / k as f64;
            v_prev = v;
        }
        out.permutations = k;
        if settings.convergence > 0.0 && k % n == 0 {
            let size: f64 = out.values.iter().map(|v| v.abs()).sum();
            let moved: f64 = out
                .values
                .iter()
                .zip(&last_cycle)
                .map(|(a, b)| (a - b).abs())
                .sum();
            if k > n && moved <= settings.convergence * size {
                break;
            }
            last_cycle.clone_from(&out.values);
        }
    }
    Ok(out)
}

/// Spearman's rank correlation of `a` and `b` (ties get their mean rank), or `None` when the
/// lengths differ, there are fewer than two values, or either has no spread.
pub fn spearman(a: &[f64], b: &[f64]) -> Option<f64> {
    if a.len() != b.len() || a.len() < 2 {
        return None;
    }
    let (ra, rb) = (ranks(a), ranks(b));
    let n = a.len() as f64;
    let mean = (n + 1.0) / 2.0;
    let (mut cov, mut va, mut vb) = (0.0, 0.0, 0.0);
    for (x, y) in ra.iter().zip(&rb) {
        cov += (x - mean) * (y - mean);
        va += (x - mean).powi(2);
        vb += (y - mean).powi(2);
    }
    (va > 0.0 && vb > 0.0).then(|| cov / (va * vb).sqrt())
}

/// 1-based ranks of `v` in ascending order, ties sharing their mean rank.
pub fn ranks(v: &[f64]) -> Vec<f64> {
    let mut order: Vec<usize> = (0..v.len()).collect();
    order.sort_by(|&i, &j| v[i].total_cmp(&v[j]));
    let mut r = vec![0.0; v.len()];
    let mut start = 0;
    while start < order.len() {
        let mut end = start + 1;
        while end < order.len() && v[order[end]] == v[order[start]] {
            end += 1;
        }
        let mean = (start + end + 1) as f64 / 2.0;
        order[start..end].iter().for_each(|&i| r[i] = mean);
        start = end;
    }
    r
}

#[cfg(test)]
#[path = "shapley_tests.rs"]
mod tests;
