//! A round as a cooperative game: the value of a coalition of members is the validation utility
//! of the model their updates would have made on their own ([`UpdateGame`]), rebuilt from the
//! updates without retraining; [`Memo`] evaluates each coalition once and counts what it cost.

use std::collections::HashMap;

use crate::params::ParamVec;
use crate::validator::Validator;

use super::{CoalitionModel, ContributionError, Weighting};

/// A cooperative game over `players()` players: a value for every coalition.
pub trait CoalitionGame {
    /// The number of players.
    fn players(&self) -> usize;

    /// The value of the coalition `members`: distinct player indices below
    /// [`players`](Self::players), in any order (the empty slice is the empty coalition).
    fn value(&mut self, members: &[usize]) -> Result<f64, ContributionError>;
}

/// A game whose coalitions are each evaluated once: later asks are answered from memory.
/// [`evaluations`](Self::evaluations) counts the evaluations of the wrapped game, the cost of
/// a scoring method.
#[derive(Debug)]
pub struct Memo<G> {
    game: G,
    values: HashMap<Vec<u64>, f64>,
    evaluations: usize,
}

impl<G: CoalitionGame> Memo<G> {
    /// `game`, nothing evaluated yet.
    pub fn new(game: G) -> Self {
        Self {
            game,
            values: HashMap::new(),
            evaluations: 0,
        }
    }

    /// Evaluations of the wrapped game so far (distinct coalitions).
    pub fn evaluations(&self) -> usize {
        self.evaluations
    }

    /// The wrapped game.
    pub fn into_inner(self) -> G {
        self.game
    }
}

impl<G: CoalitionGame> CoalitionGame for Memo<G> {
    fn players(&self) -> usize {
        self.game.players()
    }

    fn value(&mut self, members: &[usize]) -> Result<f64, ContributionError> {
        let n = self.game.players();
        let mut key = vec![0u64; n.div_ceil(64)];
        for &m in members {
            if m >= n {
                return Err(ContributionError::NoSuchPlayer {
                    player: m,
                    players: n,
                });
            }
            key[m / 64] |= 1 << (m % 64);
        }
        if let Some(v) = self.values.get(&key) {
            return Ok(*v);
        }
        let v = self.game.value(members)?;
        if !v.is_finite() {
            return Err(ContributionError::NonFiniteUtility { value: v });
        }
        self.evaluations += 1;
        self.values.insert(key, v);
        Ok(v)
    }
}

/// The round's game: a coalition's value is the validator's utility of
/// `current + Σ_S wᵢ·δᵢ / W` over its members `S` (the empty coalition keeps the current model),
/// with `wᵢ` the member's example count or 1 ([`Weighting`]) and `W` the coalition's total
/// weight (the FedAvg aggregate the coalition alone would have produced) or the whole round's
/// ([`CoalitionModel`]).
///
/// A coalition's model is rebuilt from scratch in ascending member order, so its value does not
/// depend on the order in which a method asks for it.
pub struct UpdateGame<'a> {
    current: &'a ParamVec,
    deltas: &'a [Vec<f32>],
    weights: Vec<f64>,
    coalition: CoalitionModel,
    validator: &'a mut dyn Validator,
}

impl std::fmt::Debug for UpdateGame<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("UpdateGame")
            .field("players", &self.deltas.len())
            .field("weights", &self.weights)
            .finish_non_exhaustive()
    }
}

impl<'a> UpdateGame<'a> {
    /// The game of members whose updates are `deltas` (differences from `current`, each of its
    /// length) with example counts `examples`, valued by `validator`.
    pub fn new(
        current: &'a ParamVec,
        deltas: &'a [Vec<f32>],
        examples: &[u64],
        weighting: Weighting,
        coalition: CoalitionModel,
        validator: &'a mut dyn Validator,
    ) -> Result<Self, ContributionError> {
        if deltas.len() != examples.len() || deltas.iter().any(|d| d.len() != current.len()) {
            return Err(ContributionError::Shape);
        }
        let weights = examples
            .iter()
            .map(|&w| match weighting {
                Weighting::Examples => w as f64,
                Weighting::Uniform => 1.0,
            })
            .collect();
        Ok(Self {
            current,
            deltas,
            weights,
            coalition,
            validator,
        })
    }

    /// The model the coalition `members` would have produced.
    pub fn coalition_model(&self, members: &[usize]) -> Result<ParamVec, ContributionError> {
        let mut sorted = members.to_vec();
        sorted.sort_unstable();
        sorted.dedup();
        let total: f64 = match self.coalition {
            CoalitionModel::Fedavg => sorted.iter().map(|&i| self.weights[i]).sum(),
            CoalitionModel::RoundShare => self.weights.iter().sum(),
        };
        if total <= 0.0 {
            return Ok(self.current.clone());
        }
        let mut sum = vec![0f64; self.current.len()];
        for &i in &sorted {
            let w = self.weights[i];
            sum.iter_mut()
                .zip(&self.deltas[i])
                .for_each(|(s, d)| *s += w * f64::from(*d));
        }
        let values = self
            .current
            .values()
            .iter()
            .zip(&sum)
            .map(|(c, s)| (f64::from(*c) + s / total) as f32)
            .collect();
        ParamVec::new(self.current.schema().clone(), values).map_err(|_| ContributionError::Shape)
    }
}

impl CoalitionGame for UpdateGame<'_> {
    fn players(&self) -> usize {
        self.deltas.len()
    }

    fn value(&mut self, members: &[usize]) -> Result<f64, ContributionError> {
        if let Some(&m) = members.iter().find(|&&m| m >= self.deltas.len()) {
            return Err(ContributionError::NoSuchPlayer {
                player: m,
                players: self.deltas.len(),
            });
        }
        let model = self.coalition_model(members)?;
        self.validator
            .utility(&model)
            .map_err(|e| ContributionError::Validator(e.to_string()))
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use super::*;
    use crate::params::{Schema, TensorSpec};
    use crate::trainer::TrainerError;

    fn pv(v: &[f32]) -> ParamVec {
        let schema = Arc::new(Schema::new(vec![TensorSpec::new("w", [v.len()])]).unwrap());
        ParamVec::new(schema, v.to_vec()).unwrap()
    }

    #[test]
    fn a_coalition_model_is_the_fedavg_of_its_members_and_each_is_evaluated_once() {
        let current = pv(&[1.0, 1.0]);
        let deltas = vec![vec![2.0, 0.0], vec![0.0, 4.0]];
        let mut calls = 0;
        let mut first = |p: &ParamVec| -> Result<f64, TrainerError> {
            calls += 1;
            Ok(f64::from(p.values()[0]))
        };
        let game = UpdateGame::new(
            &current,
            &deltas,
            &[1, 3],
            Weighting::Examples,
            CoalitionModel::Fedavg,
            &mut first,
        )
        .unwrap();
        // (1·(2, 0) + 3·(0, 4)) / 4 = (0.5, 3).
        assert_eq!(game.coalition_model(&[1, 0]).unwrap().values(), &[1.5, 4.0]);
        assert_eq!(game.coalition_model(&[]).unwrap().values(), &[1.0, 1.0]);
        let mut memo = Memo::new(game);
        assert_eq!(memo.value(&[0, 1]).unwrap(), 1.5);
        assert_eq!(memo.value(&[1, 0]).unwrap(), 1.5);
        assert_eq!(memo.value(&[0]).unwrap(), 3.0);
        assert_eq!(memo.evaluations(), 2);
        assert!(matches!(
            memo.value(&[2]),
            Err(ContributionError::NoSuchPlayer {
                player: 2,
                players: 2
            })
        ));
        drop(memo);
        assert_eq!(calls, 2);
        let mut u = |_: &ParamVec| -> Result<f64, TrainerError> { Ok(0.0) };
        let uniform = UpdateGame::new(
            &current,
            &deltas,
            &[1, 3],
            Weighting::Uniform,
            CoalitionModel::Fedavg,
            &mut u,
        )
        .unwrap();
        assert_eq!(
            uniform.coalition_model(&[0, 1]).unwrap().values(),
            &[2.0, 3.0]
        );
    }

    #[test]
    fn bad_utilities_and_shapes_are_named() {
        let current = pv(&[0.0]);
        let deltas = vec![vec![1.0]];
        let mut nan = |_: &ParamVec| -> Result<f64, TrainerError> { Ok(f64::NAN) };
        let game = UpdateGame::new(
            &current,
            &deltas,
            &[1],
            Weighting::Examples,
            CoalitionModel::Fedavg,
            &mut nan,
        )
        .unwrap();
        assert!(matches!(
            Memo::new(game).value(&[0]),
            Err(ContributionError::NonFiniteUtility { .. })
        ));
        let mut fails =
            |_: &ParamVec| -> Result<f64, TrainerError> { Err(TrainerError::NoData("evaluate")) };
        let mut game = UpdateGame::new(
            &current,
            &deltas,
            &[1],
            Weighting::Examples,
            CoalitionModel::Fedavg,
            &mut fails,
        )
        .unwrap();
        assert!(matches!(
            game.value(&[0]),
            Err(ContributionError::Validator(e)) if e.contains("evaluate")
        ));
        let mut ok = |_: &ParamVec| -> Result<f64, TrainerError> { Ok(0.0) };
        assert!(matches!(
            UpdateGame::new(
                &current,
                &[vec![1.0, 2.0]],
                &[1],
                Weighting::Examples,
                CoalitionModel::Fedavg,
                &mut ok
            ),
            Err(ContributionError::Shape)
        ));
    }
}
