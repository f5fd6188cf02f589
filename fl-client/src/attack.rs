//! A development attack mode, to attack our own federations with the real member binary
//! (feature `attack`, off by default; never read from a federation file).
//!
//! [`Attacking`] wraps any [`Trainer`]: it trains as usual, then sends what the attack makes
//! of its own update ([`fl_core::attack::Attack::malicious_delta`]): sign flip, scaling (model
//! replacement), Gaussian noise, free riding. Label flipping poisons the data instead
//! ([`flip_labels`] on the member's training set, then train as usual). The omniscient attacks
//! (ALIE, IPM, min-max, min-sum) need the round's honest updates, which a member never sees:
//! they run in the simulator only (`fl_aggregator::attack::Adversary`) and are refused here.
//!
//! The `fl-client` binary built with `--features attack` takes `--attack sign_flip`,
//! `--attack scaling:20`, `--attack gaussian:1.0`, `--attack free_ride` or
//! `--attack label_flip`, and says so loudly in its log.
//!
//! ```
//! use fl_client::attack::{Attacking, parse_attack};
//! # use fl_core::{FitConfig, FitOutcome, Metrics, ParamVec, Schema, TensorSpec, Trainer};
//! # use std::sync::Arc;
//! # struct Step(ParamVec);
//! # impl Trainer for Step {
//! #     fn get_parameters(&self) -> ParamVec { self.0.clone() }
//! #     fn set_parameters(&mut self, p: &ParamVec) -> Result<(), fl_core::TrainerError> { self.0 = p.clone(); Ok(()) }
//! #     fn fit(&mut self, _: &FitConfig) -> Result<FitOutcome, fl_core::TrainerError> {
//! #         self.0.values_mut().iter_mut().for_each(|v| *v += 1.0);
//! #         Ok(FitOutcome { num_examples: 1, metrics: Metrics::new() })
//! #     }
//! #     fn evaluate(&mut self, _: &fl_core::EvaluateConfig) -> Result<fl_core::EvaluateResult, fl_core::TrainerError> { unimplemented!() }
//! # }
//! # let schema = Arc::new(Schema::new(vec![TensorSpec::new("w", [2])]).unwrap());
//! let honest = Step(ParamVec::zeros(schema.clone()));
//! let mut t = Attacking::new(honest, parse_attack("sign_flip").unwrap(), 7).unwrap();
//! t.set_parameters(&ParamVec::new(schema, vec![10.0, 10.0]).unwrap()).unwrap();
//! t.fit(&FitConfig::default()).unwrap();
//! assert_eq!(t.get_parameters().values(), &[9.0, 9.0]); // trained +1, sent -1
//! ```

use fl_core::attack::Attack;
use fl_core::{
    EvaluateConfig, EvaluateResult, FitConfig, FitOutcome, ParamVec, Trainer, TrainerError,
};
use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;

use crate::Dataset;

/// Why an attack cannot run in a member.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[non_exhaustive]
pub enum AttackModeError {
    /// The attack needs the round's honest updates.
    #[error(
        "{0} needs the other members' updates of the round, which a member never sees: run it \
         in the simulator (fl_aggregator::attack::Adversary)"
    )]
    Omniscient(String),
    /// Label flipping is applied to the data, not to a trainer.
    #[error("label_flip poisons the training data: apply flip_labels to the member's data")]
    DataPoisoning,
    /// The attack could not be parsed.
    #[error(
        "unknown attack `{0}`: sign_flip, scaling:FACTOR, gaussian:STD, free_ride or label_flip"
    )]
    Unknown(String),
}

/// Parses `sign_flip`, `scaling:F`, `gaussian:S`, `free_ride`, `label_flip` (and the
/// omniscient ones, which [`Attacking::new`] then refuses).
///
/// # Errors
/// [`AttackModeError::Unknown`].
pub fn parse_attack(s: &str) -> Result<Attack, AttackModeError> {
    let unknown = || AttackModeError::Unknown(s.to_string());
    let (name, arg) = match s.split_once(':') {
        Some((n, a)) => (n, Some(a)),
        None => (s, None),
    };
    let number = || -> Result<f32, AttackModeError> {
        arg.and_then(|a| a.parse::<f32>().ok())
            .filter(|v| v.is_finite())
            .ok_or_else(unknown)
    };
    Ok(match (name, arg) {
        ("sign_flip", None) => Attack::SignFlip,
        ("scaling", Some(_)) => Attack::Scaling { factor: number()? },
        ("gaussian", Some(_)) => Attack::Gaussian { std: number()? },
        ("free_ride", None) => Attack::FreeRide,
        ("label_flip", None) => Attack::LabelFlip,
        ("alie", Some(_)) => Attack::Alie { tau: number()? },
        ("ipm", Some(_)) => Attack::Ipm { epsilon: number()? },
        ("min_max", None) => Attack::MinMax,
        ("min_sum", None) => Attack::MinSum,
        _ => return Err(unknown()),
    })
}

/// `data` with every label `y` replaced by `C - 1 - y`.
///
/// # Errors
/// Never for a valid dataset; the error type is [`Dataset::new`]'s.
pub fn flip_labels(data: Dataset) -> Result<Dataset, crate::DataError> {
    let c = data.num_classes();
    let labels = data
        .labels()
        .iter()
        .map(|&y| (c - 1 - usize::from(y)) as u8)
        .collect();
    Dataset::new(
        data.features().to_vec(),
        data.feature_shape().to_vec(),
        labels,
        c,
    )
}

/// A trainer that sends what `attack` makes of its real update.
pub struct Attacking<T> {
    inner: T,
    attack: Attack,
    global: Option<ParamVec>,
    rng: ChaCha8Rng,
}

impl<T: Trainer> Attacking<T> {
    /// `inner` attacking with `attack` (Gaussian draws seeded from `seed`).
    ///
    /// # Errors
    /// [`AttackModeError::Omniscient`] and [`AttackModeError::DataPoisoning`].
    pub fn new(inner: T, attack: Attack, seed: u64) -> Result<Self, AttackModeError> {
        if attack.is_omniscient() {
            return Err(AttackModeError::Omniscient(attack.label()));
        }
        if attack.poisons_data() {
            return Err(AttackModeError::DataPoisoning);
        }
        Ok(Self {
            inner,
            attack,
            global: None,
            rng: ChaCha8Rng::seed_from_u64(seed),
        })
    }

    /// The wrapped trainer.
    pub fn into_inner(self) -> T {
        self.inner
    }
}

impl<T: Trainer> Trainer for Attacking<T> {
    fn schema(&self) -> std::sync::Arc<fl_core::Schema> {
        self.inner.schema()
    }

    fn get_parameters(&self) -> ParamVec {
        self.inner.get_parameters()
    }

    fn set_parameters(&mut self, params: &ParamVec) -> Result<(), TrainerError> {
        self.global = Some(params.clone());
        self.inner.set_parameters(params)
    }

    fn fit(&mut self, config: &FitConfig) -> Result<FitOutcome, TrainerError> {
        let global = self
            .global
            .clone()
            .unwrap_or_else(|| self.inner.get_parameters());
        let outcome = self.inner.fit(config)?;
        let trained = self.inner.get_parameters();
        let own: Vec<f32> = trained
            .values()
            .iter()
            .zip(global.values())
            .map(|(p, g)| p - g)
            .collect();
        let delta = self
            .attack
            .malicious_delta(&own, &[], &mut self.rng)
            .map_err(|e| TrainerError::Other(e.to_string()))?;
        let sent = global
            .values()
            .iter()
            .zip(&delta)
            .map(|(g, d)| g + d)
            .collect();
        let sent = ParamVec::new(global.schema().clone(), sent)?;
        self.inner.set_parameters(&sent)?;
        Ok(outcome)
    }

    fn evaluate(&mut self, config: &EvaluateConfig) -> Result<EvaluateResult, TrainerError> {
        self.inner.evaluate(config)
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use fl_core::{Metrics, Schema, TensorSpec};

    use super::*;

    /// Training moves every value by +1.
    struct Step(ParamVec);

    impl Trainer for Step {
        fn get_parameters(&self) -> ParamVec {
            self.0.clone()
        }
        fn set_parameters(&mut self, p: &ParamVec) -> Result<(), TrainerError> {
            self.0 = p.clone();
            Ok(())
        }
        fn fit(&mut self, _: &FitConfig) -> Result<FitOutcome, TrainerError> {
            self.0.values_mut().iter_mut().for_each(|v| *v += 1.0);
            Ok(FitOutcome {
                num_examples: 3,
                metrics: Metrics::new(),
            })
        }
        fn evaluate(&mut self, _: &EvaluateConfig) -> Result<EvaluateResult, TrainerError> {
            Err(TrainerError::NoData("evaluate"))
        }
    }

    fn sent(attack: &str) -> Vec<f32> {
        let schema = Arc::new(Schema::new(vec![TensorSpec::new("w", [3])]).unwrap());
        let mut t = Attacking::new(
            Step(ParamVec::zeros(schema.clone())),
            parse_attack(attack).unwrap(),
            1,
        )
        .unwrap();
        t.set_parameters(&ParamVec::new(schema, vec![10.0, 20.0, 30.0]).unwrap())
            .unwrap();
        assert_eq!(t.fit(&FitConfig::default()).unwrap().num_examples, 3);
        t.get_parameters().values().to_vec()
    }

    #[test]
    fn each_attack_sends_its_definition() {
        assert_eq!(sent("sign_flip"), vec![9.0, 19.0, 29.0]);
        assert_eq!(sent("scaling:20"), vec![30.0, 40.0, 50.0]);
        assert_eq!(sent("free_ride"), vec![10.0, 20.0, 30.0]);
        let g = sent("gaussian:1.0");
        assert_ne!(g, vec![11.0, 21.0, 31.0]);
        assert_eq!(g, sent("gaussian:1.0"), "seeded");
        assert_eq!(sent("gaussian:0"), vec![10.0, 20.0, 30.0]);
    }

    #[test]
    fn what_a_member_cannot_do_is_refused_by_name() {
        let schema = Arc::new(Schema::new(vec![TensorSpec::new("w", [1])]).unwrap());
        let t = || Step(ParamVec::zeros(schema.clone()));
        for (a, omniscient) in [("alie:1.5", true), ("ipm:0.1", true), ("min_max", true)] {
            let e = Attacking::new(t(), parse_attack(a).unwrap(), 0)
                .err()
                .unwrap();
            assert_eq!(matches!(e, AttackModeError::Omniscient(_)), omniscient);
        }
        assert_eq!(
            Attacking::new(t(), parse_attack("label_flip").unwrap(), 0).err(),
            Some(AttackModeError::DataPoisoning)
        );
        for bad in [
            "",
            "scaling",
            "scaling:x",
            "gaussian:inf",
            "sign_flip:2",
            "nuke",
        ] {
            assert!(
                matches!(parse_attack(bad), Err(AttackModeError::Unknown(_))),
                "{bad}"
            );
        }
        let d = Dataset::new(vec![0.0; 3], vec![1], vec![0, 3, 9], 10).unwrap();
        assert_eq!(flip_labels(d).unwrap().labels(), &[9, 6, 0]);
    }
}
