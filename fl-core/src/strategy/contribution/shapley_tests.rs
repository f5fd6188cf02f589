//! Hand-computed games for the scoring methods.

use std::sync::Arc;

use rand::{RngExt, SeedableRng};
use rand_chacha::ChaCha8Rng;

use super::super::game::{Memo, UpdateGame};
use super::super::{CoalitionModel, Weighting};
use super::*;
use crate::params::{ParamVec, Schema, TensorSpec};
use crate::trainer::TrainerError;

/// A game given by a function of the (sorted) coalition.
struct FnGame<F>(usize, F);

impl<F: FnMut(&[usize]) -> f64> CoalitionGame for FnGame<F> {
    fn players(&self) -> usize {
        self.0
    }
    fn value(&mut self, members: &[usize]) -> Result<f64, ContributionError> {
        let mut m = members.to_vec();
        m.sort_unstable();
        Ok((self.1)(&m))
    }
}

fn close(a: &[f64], b: &[f64], tol: f64) {
    assert_eq!(a.len(), b.len());
    for (x, y) in a.iter().zip(b) {
        assert!((x - y).abs() <= tol, "{a:?} vs {b:?}");
    }
}

fn settings(max_permutations: usize, truncation: f64) -> GtgSettings {
    GtgSettings {
        max_permutations,
        truncation,
        round_truncation: 0.0,
        convergence: 0.0,
        seed: 7,
    }
}

fn pv(v: Vec<f32>) -> ParamVec {
    let schema = Arc::new(Schema::new(vec![TensorSpec::new("w", [v.len()])]).unwrap());
    ParamVec::new(schema, v).unwrap()
}

/// Utility `⟨a, p⟩`.
fn linear(a: Vec<f32>) -> impl FnMut(&ParamVec) -> Result<f64, TrainerError> + Send {
    move |p: &ParamVec| {
        Ok(p.values()
            .iter()
            .zip(&a)
            .map(|(x, y)| f64::from(*x) * f64::from(*y))
            .sum())
    }
}

#[test]
fn exact_shapley_of_additive_and_quadratic_games_is_the_closed_form() {
    let a = [1.0, -2.0, 4.5];
    // Additive: v(S) = Σ aᵢ, so φᵢ = aᵢ.
    let mut additive = FnGame(3, |s: &[usize]| s.iter().map(|&i| a[i]).sum());
    close(&exact_shapley(&mut additive).unwrap(), &a, 1e-12);
    // Quadratic: v(S) = (Σ aᵢ)², so φᵢ = aᵢ·Σⱼ aⱼ (each cross term split in half).
    let total: f64 = a.iter().sum();
    let mut square = FnGame(3, |s: &[usize]| {
        s.iter().map(|&i| a[i]).sum::<f64>().powi(2)
    });
    let want: Vec<f64> = a.iter().map(|x| x * total).collect();
    close(&exact_shapley(&mut square).unwrap(), &want, 1e-12);
    assert!(
        exact_shapley(&mut FnGame(0, |_: &[usize]| 1.0))
            .unwrap()
            .is_empty()
    );
}

#[test]
fn three_members_under_fedavg_and_a_linear_utility_by_hand() {
    // Global model 0, updates with ⟨a, δᵢ⟩ = 1, 2, 3, uniform weights: a coalition's value is
    // the mean of its members' sᵢ. v({1,2}) = 1.5, v({1,3}) = 2, v({2,3}) = 2.5, v(N) = 2.
    // φ₁ = (1 + ½(-0.5) + ½(-1) + (-0.5)) / 3 = -1/12; φ₂ = 2/3; φ₃ = 17/12.
    let current = pv(vec![0.0, 0.0]);
    let deltas = vec![vec![1.0, 0.0], vec![0.0, 2.0], vec![1.0, 2.0]];
    let mut v = linear(vec![1.0, 1.0]);
    let game = UpdateGame::new(
        &current,
        &deltas,
        &[5, 1, 9],
        Weighting::Uniform,
        CoalitionModel::Fedavg,
        &mut v,
    )
    .unwrap();
    let mut memo = Memo::new(game);
    let phi = exact_shapley(&mut memo).unwrap();
    close(&phi, &[-1.0 / 12.0, 2.0 / 3.0, 17.0 / 12.0], 1e-6);
    assert_eq!(memo.evaluations(), 8);
    // Efficiency: Σφ = v(N) - v(∅) = 2.
    assert!((phi.iter().sum::<f64>() - 2.0).abs() < 1e-6);
    // Leave-one-out: v(N) - v(N∖{i}) = 2 - 2.5, 2 - 2, 2 - 1.5; all from memory.
    close(&leave_one_out(&mut memo).unwrap(), &[-0.5, 0.0, 0.5], 1e-6);
    assert_eq!(memo.evaluations(), 8);
}

#[test]
fn scores_are_efficient() {
    let mut rng = ChaCha8Rng::seed_from_u64(3);
    let table: Vec<f64> = (0..1 << 6).map(|_| rng.random::<f64>()).collect();
    let value = |s: &[usize]| table[s.iter().map(|i| 1usize << i).sum::<usize>()];
    let want = table[63] - table[0];
    let phi = exact_shapley(&mut FnGame(6, value)).unwrap();
    assert!((phi.iter().sum::<f64>() - want).abs() < 1e-12);
    // Every sampled permutation telescopes to v(N) - v(∅) ...
    let sampled = gtg_shapley(&mut FnGame(6, value), &settings(13, 0.0)).unwrap();
    assert_eq!(sampled.permutations, 13);
    assert!((sampled.values.iter().sum::<f64>() - want).abs() < 1e-12);
    // ... and truncation stops within its tolerance of it.
    let truncated = gtg_shapley(&mut FnGame(6, value), &settings(13, 0.2)).unwrap();
    assert!(truncated.truncated > 0);
    assert!((truncated.values.iter().sum::<f64>() - want).abs() < 0.2);
}

#[test]
fn a_null_player_gets_zero_and_duplicates_get_equal_values() {
    // Player 3 never changes a value; players 0 and 1 are interchangeable.
    let a = [2.0, 2.0, 1.0, 0.0];
    let mut game = FnGame(4, |s: &[usize]| {
        let x: f64 = s.iter().map(|&i| a[i]).sum();
        x.sqrt()
    });
    let phi = exact_shapley(&mut game).unwrap();
    assert_eq!(phi[3], 0.0);
    assert!((phi[0] - phi[1]).abs() < 1e-12 && phi[0] > phi[2]);
    let sampled = gtg_shapley(&mut game, &settings(40, 0.0)).unwrap();
    assert_eq!(
        sampled.values[3], 0.0,
        "every marginal gain of a null player is 0"
    );

    // In a round: members 0 and 1 sent the same update, member 3 the global model back.
    let current = pv(vec![0.5, 0.5]);
    let deltas = vec![
        vec![1.0, 0.5],
        vec![1.0, 0.5],
        vec![0.5, 1.5],
        vec![0.0, 0.0],
    ];
    let mut v = linear(vec![1.0, 1.0]);
    let mut game = UpdateGame::new(
        &current,
        &deltas,
        &[3, 3, 3, 3],
        Weighting::Examples,
        CoalitionModel::Fedavg,
        &mut v,
    )
    .unwrap();
    let phi = exact_shapley(&mut game).unwrap();
    assert!((phi[0] - phi[1]).abs() < 1e-9, "{phi:?}");
    // The free rider adds nothing alone and dilutes every coalition it joins: under the
    // coalition's own FedAvg its value is negative (not 0) whenever the others help, and it
    // ranks last.
    assert!(phi[3] < 0.0 && phi.iter().all(|&p| p >= phi[3]), "{phi:?}");
    let loo = leave_one_out(&mut game).unwrap();
    assert!(loo[3] < 0.0 && loo.iter().all(|&p| p >= loo[3]), "{loo:?}");
    // With the round's shares it is a null player: exactly 0, duplicates still equal.
    let mut v = linear(vec![1.0, 1.0]);
    let mut game = UpdateGame::new(
        &current,
        &deltas,
        &[3, 3, 3, 3],
        Weighting::Examples,
        CoalitionModel::RoundShare,
        &mut v,
    )
    .unwrap();
    let phi = exact_shapley(&mut game).unwrap();
    assert!(
        (phi[0] - phi[1]).abs() < 1e-9 && phi[3].abs() < 1e-9,
        "{phi:?}"
    );
    assert!(leave_one_out(&mut game).unwrap()[3].abs() < 1e-9);
    let sampled = gtg_shapley(&mut game, &settings(20, 0.0)).unwrap();
    assert!(sampled.values[3].abs() < 1e-9, "{:?}", sampled.values);
}

#[test]
fn a_free_rider_beside_one_honest_member_by_hand() {
    // v(∅) = 0, v({h}) = 1, v({f}) = 0, v({h, f}) = ½: φ_h = (1 + ½)/2 = ¾, φ_f = (0 - ½)/2 = -¼.
    let current = pv(vec![0.0]);
    let deltas = vec![vec![1.0], vec![0.0]];
    let mut v = linear(vec![1.0]);
    let mut game = UpdateGame::new(
        &current,
        &deltas,
        &[1, 1],
        Weighting::Examples,
        CoalitionModel::Fedavg,
        &mut v,
    )
    .unwrap();
    close(&exact_shapley(&mut game).unwrap(), &[0.75, -0.25], 1e-12);
    close(&leave_one_out(&mut game).unwrap(), &[0.5, -0.5], 1e-12);
    // Round shares: v({h}) = v(N) = ½, v({f}) = 0, so φ = (½, 0) and leave-one-out (½, 0).
    let mut v = linear(vec![1.0]);
    let mut game = UpdateGame::new(
        &current,
        &deltas,
        &[1, 1],
        Weighting::Examples,
        CoalitionModel::RoundShare,
        &mut v,
    )
    .unwrap();
    close(&exact_shapley(&mut game).unwrap(), &[0.5, 0.0], 1e-12);
    close(&leave_one_out(&mut game).unwrap(), &[0.5, 0.0], 1e-12);
}

/// A round of `n` members with random updates (some large, some small, some opposed), valued
/// by minus the squared distance to an optimum: not additive, not symmetric.
fn random_round(n: usize, seed: u64) -> (ParamVec, Vec<Vec<f32>>, Vec<u64>, Vec<f32>) {
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    let dim = 6;
    let target: Vec<f32> = (0..dim).map(|_| rng.random_range(-1.0..1.0)).collect();
    let deltas = (0..n)
        .map(|i| {
            let skill = 1.0 - i as f32 / n as f32;
            target
                .iter()
                .map(|t| skill * t + rng.random_range(-0.6..0.6))
                .collect()
        })
        .collect();
    let weights = (0..n).map(|_| rng.random_range(10..100)).collect();
    (pv(vec![0.0; dim]), deltas, weights, target)
}

fn distance_utility(target: Vec<f32>) -> impl FnMut(&ParamVec) -> Result<f64, TrainerError> + Send {
    move |p: &ParamVec| {
        Ok(-p
            .values()
            .iter()
            .zip(&target)
            .map(|(x, t)| f64::from(x - t).powi(2))
            .sum::<f64>())
    }
}

#[test]
fn sampled_shapley_converges_to_the_exact_value_for_8_members() {
    // 200 permutations (25 per member leading) against 2⁸ = 256 coalitions, both games.
    for (seed, coalition) in
        (0..5).flat_map(|s| [CoalitionModel::Fedavg, CoalitionModel::RoundShare].map(|c| (s, c)))
    {
        let (current, deltas, weights, target) = random_round(8, seed);
        let mut v = distance_utility(target);
        let game = UpdateGame::new(
            &current,
            &deltas,
            &weights,
            Weighting::Examples,
            coalition,
            &mut v,
        )
        .unwrap();
        let mut memo = Memo::new(game);
        let exact = exact_shapley(&mut memo).unwrap();
        let sampled = gtg_shapley(&mut memo, &settings(200, 0.0)).unwrap();
        let rho = spearman(&exact, &sampled.values).unwrap();
        assert!(
            rho >= 0.9,
            "seed {seed} {coalition:?}: ρ = {rho}, {exact:?} vs {:?}",
            sampled.values
        );
        let scale = exact.iter().map(|x| x.abs()).fold(0.0, f64::max);
        close(&sampled.values, &exact, 0.15 * scale);
    }
}

#[test]
fn truncation_saves_evaluations() {
    // 12 members, 48 permutations: without truncation each permutation values up to 10 new
    // coalitions (v(∅) and v(N) are shared). The tolerance is 5% of the round's gain.
    let (current, deltas, weights, target) = random_round(12, 11);
    let count = |truncation: f64| {
        let mut v = distance_utility(target.clone());
        let game = UpdateGame::new(
            &current,
            &deltas,
            &weights,
            Weighting::Examples,
            CoalitionModel::Fedavg,
            &mut v,
        )
        .unwrap();
        let mut memo = Memo::new(game);
        let gain = memo.value(&(0..12).collect::<Vec<_>>()).unwrap() - memo.value(&[]).unwrap();
        let s = gtg_shapley(&mut memo, &settings(48, truncation * gain.abs())).unwrap();
        (memo.evaluations(), s)
    };
    let (full, plain) = count(0.0);
    let (fewer, truncated) = count(0.05);
    assert_eq!(plain.truncated, 0);
    assert!(full > 400, "{full}");
    assert!(truncated.truncated > 0);
    // Measured: 179 evaluations instead of 423, ρ = 0.97 against the untruncated values.
    assert!(
        3 * fewer < 2 * full,
        "{fewer} evaluations with truncation, {full} without"
    );
    let rho = spearman(&plain.values, &truncated.values).unwrap();
    assert!(rho >= 0.9, "ρ = {rho}");
}

#[test]
fn round_truncation_and_convergence_stop_early_and_runs_repeat() {
    let mut flat = Memo::new(FnGame(5, |s: &[usize]| 1.0 + 1e-6 * s.len() as f64));
    let s = gtg_shapley(
        &mut flat,
        &GtgSettings {
            round_truncation: 1e-3,
            ..settings(100, 0.0)
        },
    )
    .unwrap();
    assert!(s.round_truncated && s.values == vec![0.0; 5] && s.permutations == 0);
    assert_eq!(flat.evaluations(), 2, "v(∅) and v(N) only");
    // A gain below the within-round tolerance would truncate every permutation at once.
    let s = gtg_shapley(&mut flat, &settings(100, 1e-3)).unwrap();
    assert!(s.round_truncated && s.values == vec![0.0; 5]);
    assert_eq!(flat.evaluations(), 2);

    let (current, deltas, weights, target) = random_round(6, 5);
    let run = |convergence: f64, seed: u64| {
        let mut v = distance_utility(target.clone());
        let mut game = UpdateGame::new(
            &current,
            &deltas,
            &weights,
            Weighting::Examples,
            CoalitionModel::Fedavg,
            &mut v,
        )
        .unwrap();
        let set = GtgSettings {
            convergence,
            seed,
            ..settings(600, 0.0)
        };
        gtg_shapley(&mut game, &set).unwrap()
    };
    let converged = run(0.02, 1);
    assert!(converged.permutations < 600 && converged.permutations % 6 == 0);
    assert_eq!(run(0.02, 1), converged, "deterministic for a seed");
    assert_ne!(run(0.0, 1).values, run(0.0, 2).values);
}

#[test]
fn exact_refuses_too_many_players_and_ranks_handle_ties() {
    assert!(matches!(
        exact_shapley(&mut FnGame(17, |_: &[usize]| 0.0)),
        Err(ContributionError::TooManyForExact {
            players: 17,
            max: 16
        })
    ));
    assert_eq!(ranks(&[3.0, 1.0, 3.0, 2.0]), vec![3.5, 1.0, 3.5, 2.0]);
    assert_eq!(spearman(&[1.0, 2.0, 3.0], &[10.0, 20.0, 30.0]), Some(1.0));
    assert_eq!(spearman(&[1.0, 2.0, 3.0], &[3.0, 2.0, 1.0]), Some(-1.0));
    assert_eq!(spearman(&[1.0, 1.0], &[1.0, 2.0]), None);
    assert_eq!(spearman(&[1.0], &[1.0]), None);
    // d = (0, 1, -1): ρ = 1 - 6·2 / (3·8) = 0.5.
    assert!((spearman(&[1.0, 2.0, 3.0], &[1.0, 3.0, 2.0]).unwrap() - 0.5).abs() < 1e-12);
}
