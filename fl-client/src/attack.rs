//! A development attack mode, to attack our own federations with the real member binary
//! (feature `attack`, off by default; never read from a federation file).
//!
//! [`Attacking`] wraps any [`Trainer`]: it trains as usual, then sends what the attack makes
//! of its own update ([`fl_core::attack::Attack::malicious_delta`]): sign flip, scaling (model
//! replacement), Gaussian noise, free riding. Label flipping and the pixel-pattern backdoor
//! poison the data instead ([`flip_labels`], [`add_backdoor`] on the member's training set, then
//! train as usual). The omniscient attacks
//! (ALIE, IPM, min-max, min-sum) need the round's honest updates, which a member never sees:
//! they run in the simulator only (`fl_aggregator::attack::Adversary`) and are refused here.
//!
//! The `fl-client` binary built with `--features attack` takes `--attack sign_flip`,
//! `--attack scaling:20`, `--attack gaussian:1.0`, `--attack free_ride`, `--attack label_flip`
//! or `--attack backdoor:7` (half of its examples triggered), and says so loudly in its log.
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
    /// Label flipping and the backdoor are applied to the data, not to a trainer.
    #[error(
        "label_flip and backdoor poison the training data: apply flip_labels or add_backdoor to \
         the member's data"
    )]
    DataPoisoning,
    /// The attack could not be parsed.
    #[error(
        "unknown attack `{0}`: sign_flip, scaling:FACTOR, gaussian:STD, free_ride, label_flip or \
         backdoor:TARGET"
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
        ("backdoor", Some(t)) => Attack::Backdoor {
            target: t.parse().map_err(|_| unknown())?,
        },
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

/// The image height and width of `data`'s examples: the last two dimensions of the feature
/// shape, or a square of the feature count (`[64]` is 8 x 8).
fn image_dims(data: &Dataset) -> Option<(usize, usize)> {
    let shape = data.feature_shape();
    match shape.len() {
        0 => None,
        1 => {
            let n = shape[0];
            let s = (n as f64).sqrt().round() as usize;
            (s * s == n && s >= 2).then_some((s, s))
        }
        k => Some((shape[k - 2], shape[k - 1])).filter(|(h, w)| *h >= 2 && *w >= 2),
    }
}

/// Stamps the backdoor trigger on one example: the bottom-right 2 x 2 pixels of every channel
/// set to `bright`.
fn stamp(example: &mut [f32], (h, w): (usize, usize), bright: f32) {
    let plane = h * w;
    for channel in example.chunks_exact_mut(plane) {
        for (r, c) in [
            (h - 2, w - 2),
            (h - 2, w - 1),
            (h - 1, w - 2),
            (h - 1, w - 1),
        ] {
            channel[r * w + c] = bright;
        }
    }
}

/// `data` with the backdoor trigger stamped on a `fraction` of its examples (chosen with
/// `seed`), those relabelled `target`: what a backdoor attacker trains on
/// ([`Attack::Backdoor`]).
///
/// # Errors
/// [`crate::DataError`] when the examples are not images (no 2-D layout) or `target` is not a
/// class.
pub fn add_backdoor(
    data: Dataset,
    target: u8,
    fraction: f64,
    seed: u64,
) -> Result<Dataset, crate::DataError> {
    let p = if fraction.is_finite() {
        fraction.clamp(0.0, 1.0)
    } else {
        0.0
    };
    let unit = |rng: &mut ChaCha8Rng| (rand::Rng::next_u64(rng) >> 11) as f64 / (1u64 << 53) as f64;
    triggered(data, target, |rng| unit(rng) < p, seed, false)
}

/// The backdoor's test set: every example of `data` whose label is not `target`, triggered and
/// labelled `target`; a model's accuracy on it is the attack's success rate.
///
/// # Errors
/// As [`add_backdoor`].
pub fn backdoor_test_set(data: Dataset, target: u8) -> Result<Dataset, crate::DataError> {
    triggered(data, target, |_| true, 0, true)
}

fn triggered(
    data: Dataset,
    target: u8,
    mut pick: impl FnMut(&mut ChaCha8Rng) -> bool,
    seed: u64,
    drop_target: bool,
) -> Result<Dataset, crate::DataError> {
    let dims = image_dims(&data).ok_or_else(|| {
        crate::DataError::Shape(format!(
            "a backdoor trigger needs image examples, not features of shape {:?}",
            data.feature_shape()
        ))
    })?;
    let bright = data.features().iter().copied().fold(0.0f32, f32::max);
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    let (mut features, mut labels) = (Vec::new(), Vec::new());
    for i in 0..data.len() {
        let Some((x, y)) = data.example(i) else { break };
        if drop_target && y == target {
            continue;
        }
        let mut x = x.to_vec();
        let label = if pick(&mut rng) {
            stamp(&mut x, dims, bright);
            target
        } else {
            y
        };
        features.extend(x);
        labels.push(label);
    }
    Dataset::new(
        features,
        data.feature_shape().to_vec(),
        labels,
        data.num_classes(),
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
        let d = Dataset::new(vec![0.0; 3], vec![3], vec![0], 10).unwrap();
        assert!(
            add_backdoor(d, 7, 1.0, 0).is_err(),
            "three features are no image"
        );
    }

    #[test]
    fn the_backdoor_stamps_the_bottom_right_square_and_relabels() {
        // Two 4 x 4 images (feature shape [16]), values up to 0.5.
        let mut features = vec![0.1f32; 32];
        features[0] = 0.5;
        let d = Dataset::new(features.clone(), vec![16], vec![1, 7], 10).unwrap();
        let all = add_backdoor(d.clone(), 7, 1.0, 3).unwrap();
        assert_eq!(all.labels(), &[7, 7]);
        let (x, _) = all.example(0).unwrap();
        for i in [10, 11, 14, 15] {
            assert_eq!(x[i], 0.5, "trigger pixel {i}");
        }
        assert_eq!(x[9], 0.1);
        assert_eq!(add_backdoor(d.clone(), 7, 0.0, 3).unwrap(), d);
        // The test set drops examples already of the target class.
        let test = backdoor_test_set(d, 7).unwrap();
        assert_eq!(test.labels(), &[7]);
        assert_eq!(test.len(), 1);
        // A [1, 4, 4] layout stamps the same pixels.
        let d = Dataset::new(features, vec![1, 4, 4], vec![1, 2], 10).unwrap();
        let (x, _) = backdoor_test_set(d, 7)
            .unwrap()
            .example(1)
            .map(|(x, y)| (x.to_vec(), y))
            .unwrap();
        assert_eq!([x[10], x[11], x[14], x[15]], [0.5; 4]);
    }
}
