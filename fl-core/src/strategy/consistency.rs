//! Consistency over rounds in the manner of FLDetector (Zhang, Cao, Jia and Gong, KDD 2022):
//! predict each member's update of this round from its update of the last round and the
//! model's movement since, and score how far the update it sent is from the prediction.
//!
//! FLDetector's observation is that an honest member's gradient moves with the model along
//! the loss surface, `gᵢᵗ ≈ gᵢᵗ⁻¹ + H (wᵗ - wᵗ⁻¹)`, with the Hessian `H` estimated by L-BFGS
//! from the global model's and the global gradient's recent differences. A member that
//! poisons (and especially one that switches between honest and poisoned rounds) is far from
//! its own prediction. In federated rounds a member sends a multi-step update `δ`, not a
//! gradient, so daofl uses the pseudo-gradient `g = -δ` (the learning rate folds into `H`),
//! the rule's robust step `c` as the global one (`ḡ = -c`), and the global models the rounds
//! started from. Per round:
//!
//! - curvature pairs `sₖ = wᵏ - wᵏ⁻¹`, `yₖ = ḡᵏ - ḡᵏ⁻¹`, the last `window` of them, pairs
//!   with `sₖ·yₖ ≤ 0` skipped (L-BFGS's curvature condition);
//! - the prediction `ĝᵢ = gᵢᵗ⁻¹ + B (wᵗ - wᵗ⁻¹)`, `B` the compact L-BFGS matrix of the pairs
//!   (Byrd, Nocedal and Schnabel 1994; `B = σI` scaled by the newest pair, or no correction
//!   before there is a pair);
//! - the error `eᵢ = ‖ĝᵢ - gᵢᵗ‖`, divided by the round's median error (1 is typical; FLDetector
//!   divides by the sum, which depends on how many members came);
//! - the member's **consistency score**: the mean of its last `window` normalised errors.
//!
//! A member seen for the first time (or absent last round) has no prediction and no score
//! yet. The score is reported per member (`qa.<client>.consistency`) beside the four
//! one-round features; it does not flag, because a flag must be re-checkable from one round's
//! evidence and this score needs the member's history (see the README's "Detection,
//! reputation and evidence"). Memory: one update per member and `2·window + 2` model-sized
//! vectors, so it is opt-in (`[strategy.detection] consistency_window`).

use std::collections::{BTreeMap, VecDeque};

use crate::round::ClientId;

/// Curvature pairs below this `s·y` are skipped as not positive.
const MIN_CURVATURE: f64 = 1e-12;

/// The tracker of predictions, errors and scores (see the module docs).
#[derive(Debug, Clone, PartialEq)]
pub struct Consistency {
    window: usize,
    /// The global model the last round started from, and that round's global pseudo-gradient.
    last: Option<(Vec<f32>, Vec<f32>)>,
    /// `(s, y)` pairs, oldest first, at most `window`.
    pairs: VecDeque<(Vec<f64>, Vec<f64>)>,
    /// Each member's last pseudo-gradient and the round it was sent in.
    members: BTreeMap<ClientId, (u64, Vec<f32>)>,
    /// Each member's last normalised errors, oldest first.
    errors: BTreeMap<ClientId, VecDeque<f64>>,
    round: u64,
}

impl Consistency {
    /// A tracker averaging over the last `window` rounds (at least 1).
    pub fn new(window: usize) -> Self {
        Self {
            window: window.max(1),
            last: None,
            pairs: VecDeque::new(),
            members: BTreeMap::new(),
            errors: BTreeMap::new(),
            round: 0,
        }
    }

    /// Observes one round: `global` the model it started from, `deltas[i]` the update of
    /// `clients[i]`, `centre` the rule's robust step. Returns the consistency score of every
    /// member that has one, in input order.
    pub fn observe(
        &mut self,
        global: &[f32],
        clients: &[ClientId],
        deltas: &[Vec<f32>],
        centre: &[f32],
    ) -> Vec<(ClientId, f64)> {
        self.round += 1;
        if self
            .last
            .as_ref()
            .is_some_and(|(w, _)| w.len() != global.len())
        {
            // Another model (a changed schema): the curvature of the old one says nothing.
            self.last = None;
            self.pairs.clear();
        }
        let g_bar: Vec<f32> = centre.iter().map(|v| -v).collect();
        // The model's step since the last round, and the curvature pair it completes.
        let step: Option<Vec<f64>> = match &self.last {
            Some((w, last_g)) => {
                let s: Vec<f64> = global
                    .iter()
                    .zip(w)
                    .map(|(a, b)| f64::from(*a) - f64::from(*b))
                    .collect();
                let y: Vec<f64> = g_bar
                    .iter()
                    .zip(last_g)
                    .map(|(a, b)| f64::from(*a) - f64::from(*b))
                    .collect();
                Some((s, y))
            }
            _ => None,
        }
        .map(|(s, y)| {
            // The prediction of this round uses the pairs known before it (the newest pair
            // needs this round's global gradient, which the prediction must not see).
            let correction = lbfgs_product(&self.pairs, &s);
            if dot(&s, &y) > MIN_CURVATURE {
                self.pairs.push_back((s, y));
                while self.pairs.len() > self.window {
                    self.pairs.pop_front();
                }
            }
            correction
        });
        let errors: Vec<Option<f64>> = clients
            .iter()
            .zip(deltas)
            .map(|(c, d)| {
                let (round, previous) = self.members.get(c)?;
                if *round + 1 != self.round || previous.len() != d.len() {
                    return None;
                }
                let e2: f64 = previous
                    .iter()
                    .zip(d)
                    .enumerate()
                    .map(|(k, (p, x))| {
                        let predicted = f64::from(*p) + step.as_ref().map_or(0.0, |b| b[k]);
                        let sent = -f64::from(*x);
                        (predicted - sent).powi(2)
                    })
                    .sum();
                Some(e2.sqrt())
            })
            .collect();
        let known: Vec<f64> = errors.iter().flatten().copied().collect();
        let typical = super::detection::median(known).max(1e-12);
        let mut scores = Vec::new();
        for ((c, d), e) in clients.iter().zip(deltas).zip(&errors) {
            if let Some(e) = e {
                let history = self.errors.entry(*c).or_default();
                history.push_back(e / typical);
                while history.len() > self.window {
                    history.pop_front();
                }
                scores.push((*c, history.iter().sum::<f64>() / history.len() as f64));
            }
            self.members
                .insert(*c, (self.round, d.iter().map(|v| -v).collect()));
        }
        self.last = Some((global.to_vec(), g_bar));
        scores
    }
}

fn dot(a: &[f64], b: &[f64]) -> f64 {
    a.iter().zip(b).map(|(x, y)| x * y).sum()
}

/// `B v` for the compact L-BFGS matrix of `pairs` (Nocedal and Wright, eq. 7.24 with
/// `B₀ = σI`, `σ = yₘ·sₘ / sₘ·sₘ` of the newest pair): `σv - W M⁻¹ Wᵀ v` with
/// `W = [σS, Y]`, `M = [[σSᵀS, L], [Lᵀ, -D]]`, `D` the diagonal and `L` the strictly lower
/// triangle of `SᵀY`. No pairs: zero (no correction). A singular `M` falls back to `σv`.
pub fn lbfgs_product(pairs: &VecDeque<(Vec<f64>, Vec<f64>)>, v: &[f64]) -> Vec<f64> {
    let Some((s_m, y_m)) = pairs.back() else {
        return vec![0.0; v.len()];
    };
    let sigma = dot(y_m, s_m) / dot(s_m, s_m).max(MIN_CURVATURE);
    let m = pairs.len();
    let s: Vec<&[f64]> = pairs.iter().map(|(s, _)| s.as_slice()).collect();
    let y: Vec<&[f64]> = pairs.iter().map(|(_, y)| y.as_slice()).collect();
    let mut big = vec![vec![0.0; 2 * m]; 2 * m];
    for i in 0..m {
        for j in 0..m {
            big[i][j] = sigma * dot(s[i], s[j]);
            if i > j {
                big[i][m + j] = dot(s[i], y[j]); // L
                big[m + j][i] = dot(s[i], y[j]); // Lᵀ
            }
        }
        big[m + i][m + i] = -dot(s[i], y[i]); // -D
    }
    let mut rhs: Vec<f64> = s.iter().map(|si| sigma * dot(si, v)).collect();
    rhs.extend(y.iter().map(|yi| dot(yi, v)));
    let base: Vec<f64> = v.iter().map(|x| sigma * x).collect();
    let Some(p) = solve(big, rhs) else {
        return base;
    };
    let mut out = base;
    for i in 0..m {
        for (k, o) in out.iter_mut().enumerate() {
            *o -= sigma * s[i][k] * p[i] + y[i][k] * p[m + i];
        }
    }
    out
}

/// Solves `a x = b` by Gaussian elimination with partial pivoting; `None` when singular.
fn solve(mut a: Vec<Vec<f64>>, mut b: Vec<f64>) -> Option<Vec<f64>> {
    let n = b.len();
    for col in 0..n {
        let pivot = (col..n).max_by(|&i, &j| a[i][col].abs().total_cmp(&a[j][col].abs()))?;
        if a[pivot][col].abs() < 1e-300 || !a[pivot][col].is_finite() {
            return None;
        }
        a.swap(col, pivot);
        b.swap(col, pivot);
        let (top, rest) = a.split_at_mut(col + 1);
        let pivot_row = &top[col];
        for (offset, row) in rest.iter_mut().enumerate() {
            let f = row[col] / pivot_row[col];
            row.iter_mut()
                .zip(pivot_row)
                .skip(col)
                .for_each(|(x, p)| *x -= f * p);
            b[col + 1 + offset] -= f * b[col];
        }
    }
    let mut x = vec![0.0; n];
    for row in (0..n).rev() {
        let tail: f64 = (row + 1..n).map(|k| a[row][k] * x[k]).sum();
        x[row] = (b[row] - tail) / a[row][row];
    }
    x.iter().all(|v| v.is_finite()).then_some(x)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pairs(list: &[(&[f64], &[f64])]) -> VecDeque<(Vec<f64>, Vec<f64>)> {
        list.iter().map(|(s, y)| (s.to_vec(), y.to_vec())).collect()
    }

    #[test]
    fn one_pair_is_the_bfgs_update_of_sigma_by_hand() {
        // s = (1, 0), y = (2, 1): σ = y·s / s·s = 2, B = σI - σ ssᵀ/sᵀs + yyᵀ/yᵀs
        // = [[2, 0], [0, 2]] - [[2, 0], [0, 0]] + [[4, 2], [2, 1]] / 2 = [[2, 1], [1, 2.5]].
        let p = pairs(&[(&[1.0, 0.0], &[2.0, 1.0])]);
        let bv = lbfgs_product(&p, &[1.0, 1.0]);
        assert!(
            (bv[0] - 3.0).abs() < 1e-12 && (bv[1] - 3.5).abs() < 1e-12,
            "{bv:?}"
        );
        // B satisfies the secant equation B s = y.
        let bs = lbfgs_product(&p, &[1.0, 0.0]);
        assert!(
            (bs[0] - 2.0).abs() < 1e-12 && (bs[1] - 1.0).abs() < 1e-12,
            "{bs:?}"
        );
        assert_eq!(lbfgs_product(&VecDeque::new(), &[1.0, 2.0]), vec![0.0, 0.0]);
    }

    #[test]
    fn the_newest_pair_holds_exactly_and_an_isotropic_hessian_is_recovered() {
        // g(w) = A w with A = diag(1, 3): B keeps the newest secant equation B s₂ = y₂ (the
        // older one only approximately: BFGS updates preserve the last pair alone).
        let a = |w: &[f64]| vec![w[0], 3.0 * w[1]];
        let s1 = [1.0, 0.5];
        let s2 = [-0.5, 1.0];
        let p = pairs(&[(&s1, &a(&s1)), (&s2, &a(&s2))]);
        let bs = lbfgs_product(&p, &s2);
        let y2 = a(&s2);
        assert!(
            (bs[0] - y2[0]).abs() < 1e-9 && (bs[1] - y2[1]).abs() < 1e-9,
            "{bs:?} against {y2:?}"
        );
        // B is symmetric: u·Bv = v·Bu.
        let (u, v) = ([1.0, 2.0], [-3.0, 0.5]);
        let (bu, bv) = (lbfgs_product(&p, &u), lbfgs_product(&p, &v));
        assert!((dot(&u, &bv) - dot(&v, &bu)).abs() < 1e-9);
        // With A = 2I every pair says "2", and B is 2I exactly.
        let iso = pairs(&[(&s1, &[2.0, 1.0]), (&s2, &[-1.0, 2.0])]);
        for v in [[1.0, 0.0], [0.0, 1.0], [2.0, -3.0]] {
            let got = lbfgs_product(&iso, &v);
            assert!(
                (got[0] - 2.0 * v[0]).abs() < 1e-9 && (got[1] - 2.0 * v[1]).abs() < 1e-9,
                "{v:?}: {got:?}"
            );
        }
    }

    /// A federation on the quadratic `fᵢ(w) = ½ wᵀAw - bᵢ·w`: member `i` sends one gradient
    /// step `δ = -η (A w - bᵢ)`; the global model steps by the mean. Honest members follow
    /// their predictions exactly once a pair exists; a member that sends a flipped update
    /// every other round does not.
    #[test]
    fn honest_members_follow_their_prediction_and_a_switching_attacker_does_not() {
        let eta = 0.1f32;
        let a = [1.0f32, 3.0];
        let b: Vec<[f32; 2]> = (0..6)
            .map(|i| [i as f32 * 0.3, 1.0 - 0.2 * i as f32])
            .collect();
        let clients: Vec<ClientId> = (0..6).map(ClientId).collect();
        let mut tracker = Consistency::new(3);
        let mut w = [5.0f32, -4.0];
        let mut last = Vec::new();
        for round in 0..8 {
            let mut deltas: Vec<Vec<f32>> = b
                .iter()
                .map(|bi| (0..2).map(|k| -eta * (a[k] * w[k] - bi[k])).collect())
                .collect();
            if round % 2 == 1 {
                deltas[5] = deltas[5].iter().map(|v| -v).collect();
            }
            let centre: Vec<f32> = (0..2)
                .map(|k| deltas[..5].iter().map(|d| d[k]).sum::<f32>() / 5.0)
                .collect();
            last = tracker.observe(&w, &clients, &deltas, &centre);
            w = [w[0] + centre[0], w[1] + centre[1]];
        }
        assert_eq!(last.len(), 6);
        let score = |c: u64| last.iter().find(|(id, _)| id.0 == c).unwrap().1;
        // The honest members all miss their prediction by about the same small amount (the
        // L-BFGS curvature is not exact), so each scores about 1, the round's median; the
        // attacker's error, about twice its update, is a hundred times that.
        for c in 0..5 {
            assert!((0.9..1.1).contains(&score(c)), "member {c}: {last:?}");
        }
        assert!(score(5) > 50.0, "the switching attacker: {last:?}");
    }

    #[test]
    fn a_newcomer_or_a_member_back_from_a_gap_has_no_score_yet() {
        let mut t = Consistency::new(2);
        let one = [ClientId(1)];
        assert!(t.observe(&[0.0], &one, &[vec![1.0]], &[1.0]).is_empty());
        assert_eq!(t.observe(&[1.0], &one, &[vec![1.0]], &[1.0]).len(), 1);
        // Round 3 without member 1, round 4 with it again: no prediction across the gap.
        let two = [ClientId(2)];
        t.observe(&[2.0], &two, &[vec![1.0]], &[1.0]);
        assert!(t.observe(&[3.0], &one, &[vec![1.0]], &[1.0]).is_empty());
        // A model of another size (a changed schema) predicts nothing either.
        assert!(
            t.observe(&[4.0, 0.0], &one, &[vec![1.0, 0.0]], &[1.0, 0.0])
                .is_empty()
        );
    }

    #[test]
    fn curvature_pairs_of_an_old_schema_are_dropped_not_indexed() {
        let mut t = Consistency::new(3);
        let one = [ClientId(1)];
        // Steps s = 8, 4, 2 while the global pseudo-gradient -c goes -8, -4, -2, -1 (y = 4, 2,
        // 1): three pairs of positive curvature, then the model changes shape.
        for (w, c) in [(0.0f32, 8.0f32), (8.0, 4.0), (12.0, 2.0), (14.0, 1.0)] {
            t.observe(&[w], &one, &[vec![c]], &[c]);
        }
        assert!(!t.pairs.is_empty());
        for w in [0.0f32, 1.0, 2.0] {
            let s = t.observe(&[w, w], &one, &[vec![1.0, 1.0]], &[1.0, 1.0]);
            assert!(s.iter().all(|(_, v)| v.is_finite()), "{s:?}");
        }
        assert!(t.pairs.iter().all(|(s, y)| s.len() == 2 && y.len() == 2));
    }
}
