//! Attacks on our own federations, for the simulator: malicious members' updates as transforms
//! of what they trained and, for the omniscient attacks, of the honest members' updates of the
//! same round (colluding attackers see them, as the papers assume).
//!
//! [`Adversary`] wraps any [`Strategy`] and, each round, replaces the updates of the members it
//! controls by the [`Attack`]'s output before the wrapped rule sees them: the one place in a
//! simulation where every update of the round is at hand, so ALIE and IPM need no side channel.
//! Label flipping is an attack on the data (the attacker trains on flipped labels) and passes
//! its trained update through unchanged here.
//!
//! None of this can be named in a federation file: an [`Adversary`] is only built by code (the
//! robustness benchmark, tests). The real `fl-client` binary has no attack mode yet.
//!
//! Updates are differences from the global model: `δ = xᵢ - x`.

use std::collections::BTreeSet;

use fl_core::strategy::{EvaluatePlan, FitPlan, MemberUpdate, RoundUpdates, UpdateSum};
use fl_core::{
    ClientId, EvaluateResult, Metrics, ParamVec, Strategy, StrategyError, UpdateForm, WeightedSum,
};
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;

/// What malicious members send.
#[derive(Debug, Clone, Copy, PartialEq, serde::Serialize, serde::Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case", deny_unknown_fields)]
pub enum Attack {
    /// `-δ`: the attacker's own update, reversed.
    SignFlip,
    /// `λ·δ`: the attacker's own update scaled (model replacement with `λ ≈ n`).
    Scaling {
        /// λ.
        factor: f32,
    },
    /// A draw of `N(0, σ²·I)` in place of an update (Fang et al. 2020's Gaussian attack).
    Gaussian {
        /// σ.
        std: f32,
    },
    /// Training on flipped labels (`y → C - 1 - y`): the data is poisoned, the update is sent as
    /// trained (see the benchmark's data setup).
    LabelFlip,
    /// "A little is enough" (Baruch, Baruch and Goldberg 2019): per coordinate `μⱼ - τ·σⱼ` over
    /// the honest updates, every attacker sending the same vector. τ is fixed, not derived from
    /// `n` and `f` (that formula gives τ = 0.157 at n = 20, f = 4, and 0 at n = 10, f = 2).
    Alie {
        /// τ, e.g. 1.5.
        tau: f32,
    },
    /// Inner-product manipulation (Xie, Koyejo and Gupta 2020, "Fall of Empires"):
    /// `-ε · mean(honest)`, every attacker sending the same vector.
    Ipm {
        /// ε: small (0.1) hides among honest updates, large (100) overwhelms the mean.
        epsilon: f32,
    },
    /// Min-max (Shejwalkar and Houmansadr 2021, "Manipulating the Byzantine"): `μ - γ·σ` with
    /// the largest γ whose distance to every honest update stays within the largest distance
    /// between two honest updates.
    MinMax,
    /// Min-sum (same paper): `μ - γ·σ` with the largest γ whose sum of squared distances to
    /// the honest updates stays within the largest such sum of an honest update.
    MinSum,
    /// Free riding: the global model sent back unchanged (a zero update) with the member's
    /// example count, to be paid without training. Harmless to the model; what contribution
    /// scores must catch.
    FreeRide,
}

/// Why an attack could not be computed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum AttackError {
    /// An omniscient attack had no honest update to work from.
    #[error("{0} needs at least one honest update in the round")]
    NoHonestUpdates(&'static str),
    /// A vector has another length than the attacker's own update.
    #[error("updates of different lengths")]
    LengthMismatch,
}

impl Attack {
    /// A short name for tables, e.g. `ipm(0.1)`.
    pub fn label(&self) -> String {
        match self {
            Self::SignFlip => "sign_flip".into(),
            Self::Scaling { factor } => format!("scaling({factor})"),
            Self::Gaussian { std } => format!("gaussian({std})"),
            Self::LabelFlip => "label_flip".into(),
            Self::Alie { tau } => format!("alie({tau})"),
            Self::Ipm { epsilon } => format!("ipm({epsilon})"),
            Self::MinMax => "min_max".into(),
            Self::MinSum => "min_sum".into(),
            Self::FreeRide => "free_ride".into(),
        }
    }

    /// Whether the attack reads the honest updates of the round.
    pub fn is_omniscient(&self) -> bool {
        matches!(
            self,
            Self::Alie { .. } | Self::Ipm { .. } | Self::MinMax | Self::MinSum
        )
    }

    /// Whether the attack poisons the attacker's training data instead of its update.
    pub fn poisons_data(&self) -> bool {
        matches!(self, Self::LabelFlip)
    }

    /// The update an attacker sends, from its own trained update `own` and the round's
    /// `honest` updates (all differences from the global model).
    pub fn malicious_delta(
        &self,
        own: &[f32],
        honest: &[Vec<f32>],
        rng: &mut impl Rng,
    ) -> Result<Vec<f32>, AttackError> {
        if honest.iter().any(|h| h.len() != own.len()) {
            return Err(AttackError::LengthMismatch);
        }
        Ok(match *self {
            Self::SignFlip => own.iter().map(|v| -v).collect(),
            Self::Scaling { factor } => own.iter().map(|v| factor * v).collect(),
            Self::Gaussian { std } => gaussian(own.len(), std, rng),
            Self::LabelFlip => own.to_vec(),
            Self::Alie { tau } => alie(honest, tau)?,
            Self::Ipm { epsilon } => ipm(honest, epsilon)?,
            Self::MinMax => min_max(honest, false)?,
            Self::MinSum => min_max(honest, true)?,
            Self::FreeRide => vec![0.0; own.len()],
        })
    }
}

/// `dim` independent draws of `N(0, std²)` (Box-Muller over the injected RNG).
pub fn gaussian(dim: usize, std: f32, rng: &mut impl Rng) -> Vec<f32> {
    let unit = |rng: &mut dyn FnMut() -> u64| ((rng() >> 11) as f64 + 0.5) / (1u64 << 53) as f64;
    let mut next = || rng.next_u64();
    (0..dim)
        .map(|_| {
            let u1 = unit(&mut next);
            let u2 = unit(&mut next);
            let z = (-2.0 * u1.ln()).sqrt() * (std::f64::consts::TAU * u2).cos();
            (z * f64::from(std)) as f32
        })
        .collect()
}

/// Coordinate-wise mean and standard deviation (unbiased, `n - 1`; 0 for one update) of `rows`.
fn mean_and_std(rows: &[Vec<f32>]) -> (Vec<f64>, Vec<f64>) {
    let n = rows.len() as f64;
    let dim = rows.first().map_or(0, Vec::len);
    let mut mean = vec![0f64; dim];
    for r in rows {
        mean.iter_mut()
            .zip(r)
            .for_each(|(m, v)| *m += f64::from(*v) / n);
    }
    let mut var = vec![0f64; dim];
    for r in rows {
        var.iter_mut()
            .zip(r)
            .zip(&mean)
            .for_each(|((s, v), m)| *s += (f64::from(*v) - m).powi(2));
    }
    let denom = (n - 1.0).max(1.0);
    (mean, var.into_iter().map(|s| (s / denom).sqrt()).collect())
}

/// ALIE: `μ - τ·σ` per coordinate over `honest`.
pub fn alie(honest: &[Vec<f32>], tau: f32) -> Result<Vec<f32>, AttackError> {
    if honest.is_empty() {
        return Err(AttackError::NoHonestUpdates("alie"));
    }
    let (mean, std) = mean_and_std(honest);
    Ok(mean
        .iter()
        .zip(&std)
        .map(|(m, s)| (m - f64::from(tau) * s) as f32)
        .collect())
}

/// IPM: `-ε · mean(honest)`.
pub fn ipm(honest: &[Vec<f32>], epsilon: f32) -> Result<Vec<f32>, AttackError> {
    if honest.is_empty() {
        return Err(AttackError::NoHonestUpdates("ipm"));
    }
    let (mean, _) = mean_and_std(honest);
    Ok(mean
        .iter()
        .map(|m| (-f64::from(epsilon) * m) as f32)
        .collect())
}

/// Min-max (`sum = false`) or min-sum (`sum = true`): `μ - γ·σ` (σ the coordinate-wise
/// standard deviation, the paper's "inverse std" perturbation) with γ found by the paper's
/// halving search from γ = 10 (60 halvings).
pub fn min_max(honest: &[Vec<f32>], sum: bool) -> Result<Vec<f32>, AttackError> {
    let name = if sum { "min_sum" } else { "min_max" };
    if honest.is_empty() {
        return Err(AttackError::NoHonestUpdates(name));
    }
    let (mean, std) = mean_and_std(honest);
    let d2 = |a: &[f64], b: &[f32]| -> f64 {
        a.iter()
            .zip(b)
            .map(|(x, y)| (x - f64::from(*y)).powi(2))
            .sum()
    };
    let combine = |ds: &mut dyn Iterator<Item = f64>| -> f64 {
        if sum {
            ds.sum()
        } else {
            ds.fold(0.0, f64::max).sqrt()
        }
    };
    // The honest bound: the largest (max distance | sum of squared distances) of an update.
    let bound = honest
        .iter()
        .map(|h| {
            let hv: Vec<f64> = h.iter().map(|v| f64::from(*v)).collect();
            combine(&mut honest.iter().map(|o| d2(&hv, o)))
        })
        .fold(0.0, f64::max);
    let candidate =
        |g: f64| -> Vec<f64> { mean.iter().zip(&std).map(|(m, s)| m - g * s).collect() };
    let fits = |g: f64| {
        let m = candidate(g);
        combine(&mut honest.iter().map(|o| d2(&m, o))) <= bound
    };
    let (mut gamma, mut step, mut best) = (10.0f64, 5.0f64, 0.0f64);
    for _ in 0..60 {
        if fits(gamma) {
            best = best.max(gamma);
            gamma += step;
        } else {
            gamma -= step;
        }
        step /= 2.0;
    }
    Ok(candidate(best).into_iter().map(|v| v as f32).collect())
}

/// A [`Strategy`] whose members in `attackers` send what `attack` computes; everything else is
/// the wrapped strategy's. It asks the engine for per-member updates whatever the wrapped rule
/// needs, and hands a sum-based rule (FedAvg) their weighted sum.
pub struct Adversary {
    inner: Box<dyn Strategy>,
    attackers: BTreeSet<ClientId>,
    attack: Attack,
    round_seed: u64,
    attacked: usize,
}

impl std::fmt::Debug for Adversary {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Adversary")
            .field("inner", &self.inner.name())
            .field("attackers", &self.attackers)
            .field("attack", &self.attack)
            .finish()
    }
}

impl Adversary {
    /// `inner` under `attack` by the members `attackers`.
    pub fn new(
        inner: Box<dyn Strategy>,
        attackers: impl IntoIterator<Item = ClientId>,
        attack: Attack,
    ) -> Self {
        Self {
            inner,
            attackers: attackers.into_iter().collect(),
            attack,
            round_seed: 0,
            attacked: 0,
        }
    }

    /// `updates` with every attacker's replaced by its malicious update (randomness from
    /// `seed`).
    pub fn poison(
        &self,
        current: &ParamVec,
        updates: Vec<MemberUpdate>,
        seed: u64,
    ) -> Result<Vec<MemberUpdate>, StrategyError> {
        let honest: Vec<Vec<f32>> = updates
            .iter()
            .filter(|u| !self.attackers.contains(&u.client))
            .map(|u| u.delta(current))
            .collect::<Result<_, _>>()?;
        let mut rng = ChaCha8Rng::seed_from_u64(seed ^ 0xa77a_c4ed);
        updates
            .into_iter()
            .map(|u| {
                if !self.attackers.contains(&u.client) {
                    return Ok(u);
                }
                let own = u.delta(current)?;
                let bad = self
                    .attack
                    .malicious_delta(&own, &honest, &mut rng)
                    .map_err(|e| StrategyError::Invalid(format!("attack: {e}")))?;
                let params: Vec<f32> = current
                    .values()
                    .iter()
                    .zip(&bad)
                    .map(|(c, d)| c + d)
                    .collect();
                let params = ParamVec::new(current.schema().clone(), params)
                    .map_err(|e| StrategyError::Invalid(e.to_string()))?;
                Ok(MemberUpdate::new(u.client, params, u.weight, u.metrics))
            })
            .collect()
    }
}

impl Strategy for Adversary {
    fn name(&self) -> &str {
        self.inner.name()
    }

    fn update_form(&self) -> UpdateForm {
        UpdateForm::PerMember
    }

    fn configure_fit(&mut self, round: u64, available: &[ClientId], round_seed: u64) -> FitPlan {
        self.round_seed = round_seed;
        self.inner.configure_fit(round, available, round_seed)
    }

    fn aggregate_fit(
        &mut self,
        round: u64,
        current: &ParamVec,
        updates: RoundUpdates,
    ) -> Result<ParamVec, StrategyError> {
        let RoundUpdates::PerMember(members) = updates else {
            return Err(StrategyError::WrongForm {
                needed: UpdateForm::PerMember,
            });
        };
        let members = self.poison(current, members, self.round_seed)?;
        self.attacked = members
            .iter()
            .filter(|u| self.attackers.contains(&u.client))
            .count();
        let updates = match self.inner.update_form() {
            UpdateForm::PerMember => RoundUpdates::PerMember(members),
            UpdateForm::Sum => {
                let mut sum = WeightedSum::new(current.schema().clone());
                for u in &members {
                    sum.add(&u.params, u.weight, &u.metrics)
                        .map_err(|e| StrategyError::Invalid(e.to_string()))?;
                }
                RoundUpdates::Sum(UpdateSum::of_models(sum))
            }
        };
        self.inner.aggregate_fit(round, current, updates)
    }

    fn round_metrics(&self) -> Metrics {
        let mut m = self.inner.round_metrics();
        m.insert("attackers".into(), self.attacked as f64);
        m
    }

    fn take_findings(&mut self) -> Option<fl_core::strategy::QaFindings> {
        self.inner.take_findings()
    }

    fn resume(&mut self, state: &fl_core::ResumeState) -> Result<(), fl_core::Refusal> {
        self.inner.resume(state)
    }

    fn configure_evaluate(
        &mut self,
        round: u64,
        available: &[ClientId],
        round_seed: u64,
    ) -> EvaluatePlan {
        self.inner.configure_evaluate(round, available, round_seed)
    }

    fn aggregate_evaluate(
        &mut self,
        round: u64,
        results: &[(ClientId, EvaluateResult)],
    ) -> Option<EvaluateResult> {
        self.inner.aggregate_evaluate(round, results)
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use fl_core::{FedAvg, Schema, StrategyConfig, TensorSpec};

    use super::*;

    fn rng() -> ChaCha8Rng {
        ChaCha8Rng::seed_from_u64(1)
    }

    #[test]
    fn own_update_attacks_by_hand() {
        let own = [1.0, -2.0];
        let none: [Vec<f32>; 0] = [];
        assert_eq!(
            Attack::SignFlip.malicious_delta(&own, &none, &mut rng()),
            Ok(vec![-1.0, 2.0])
        );
        assert_eq!(
            Attack::Scaling { factor: 20.0 }.malicious_delta(&own, &none, &mut rng()),
            Ok(vec![20.0, -40.0])
        );
        assert_eq!(
            Attack::LabelFlip.malicious_delta(&own, &none, &mut rng()),
            Ok(own.to_vec())
        );
        assert_eq!(
            Attack::FreeRide.malicious_delta(&own, &none, &mut rng()),
            Ok(vec![0.0, 0.0]),
            "the global model, unchanged"
        );
        let a: Attack = toml::from_str("kind = \"free_ride\"\n").unwrap();
        assert_eq!((a, a.label()), (Attack::FreeRide, "free_ride".to_string()));
    }

    #[test]
    fn gaussian_draws_have_the_stated_spread_and_follow_the_seed() {
        let v = gaussian(20_000, 3.0, &mut rng());
        let n = v.len() as f64;
        let mean = v.iter().map(|x| f64::from(*x)).sum::<f64>() / n;
        let var = v
            .iter()
            .map(|x| (f64::from(*x) - mean).powi(2))
            .sum::<f64>()
            / n;
        assert!(mean.abs() < 0.1, "{mean}");
        assert!((var.sqrt() - 3.0).abs() < 0.1, "{}", var.sqrt());
        assert_eq!(gaussian(4, 1.0, &mut rng()), gaussian(4, 1.0, &mut rng()));
    }

    #[test]
    fn alie_is_mean_minus_tau_std_and_ipm_is_minus_epsilon_mean() {
        // Coordinate 0: values 1, 3 -> μ = 2, σ = √2 (unbiased); coordinate 1: 4, 4 -> σ = 0.
        let honest = vec![vec![1.0, 4.0], vec![3.0, 4.0]];
        let a = alie(&honest, 1.5).unwrap();
        assert!((a[0] - (2.0 - 1.5 * 2f32.sqrt())).abs() < 1e-6, "{a:?}");
        assert_eq!(a[1], 4.0);
        assert_eq!(ipm(&honest, 0.1).unwrap(), vec![-0.2, -0.4]);
        assert_eq!(ipm(&honest, 100.0).unwrap(), vec![-200.0, -400.0]);
        assert_eq!(alie(&[], 1.5), Err(AttackError::NoHonestUpdates("alie")));
        assert_eq!(
            Attack::Ipm { epsilon: 1.0 }.malicious_delta(&[0.0], &honest, &mut rng()),
            Err(AttackError::LengthMismatch)
        );
        assert!(Attack::Alie { tau: 1.5 }.is_omniscient());
        assert!(!Attack::SignFlip.is_omniscient());
    }

    #[test]
    fn min_max_and_min_sum_go_as_far_as_the_honest_spread_allows() {
        // Honest 1-D updates 0 and 2: μ = 1, σ = √2. Min-max: the largest distance between
        // honest updates is 2, so |1 - γ√2 - 0| and |1 - γ√2 - 2| ≤ 2 give γ = 1/√2 (value 0).
        let honest = vec![vec![0.0f32], vec![2.0]];
        let m = min_max(&honest, false).unwrap();
        assert!(m[0].abs() < 1e-5, "{m:?}");
        // Min-sum: an honest update's sum of squared distances is 4; (1 - γ√2)² + (1 + γ√2)²
        // = 2 + 4γ² ≤ 4 gives γ = 1/√2 again.
        let s = min_max(&honest, true).unwrap();
        assert!(s[0].abs() < 1e-5, "{s:?}");
        // In 2-D: the min-max vector is no farther from any honest update than the two
        // farthest honest updates are from each other, and it sits on that bound.
        let honest = vec![
            vec![0.0, 0.0],
            vec![1.0, 0.0],
            vec![0.0, 1.0],
            vec![4.0, 4.0],
        ];
        let mm = min_max(&honest, false).unwrap();
        let far = |v: &[f32]| {
            honest
                .iter()
                .map(|h| {
                    h.iter()
                        .zip(v)
                        .map(|(a, b)| f64::from(a - b).powi(2))
                        .sum::<f64>()
                        .sqrt()
                })
                .fold(0.0, f64::max)
        };
        let bound = 32f64.sqrt();
        assert!((far(&mm) - bound).abs() < 1e-4, "{mm:?} {}", far(&mm));
        assert_eq!(
            min_max(&[], true),
            Err(AttackError::NoHonestUpdates("min_sum"))
        );
    }

    #[test]
    fn attack_settings_parse_as_tagged_tables() {
        let a: Attack = toml::from_str("kind = \"alie\"\ntau = 1.5\n").unwrap();
        assert_eq!(a, Attack::Alie { tau: 1.5 });
        assert!(toml::from_str::<Attack>("kind = \"ipm\"\neps = 1.0\n").is_err());
    }

    #[test]
    fn an_adversary_replaces_only_its_members_updates_before_the_rule_sees_them() {
        let schema = Arc::new(Schema::new(vec![TensorSpec::new("w", [2])]).unwrap());
        let current = ParamVec::new(schema.clone(), vec![1.0, 1.0]).unwrap();
        let member = |c: u64, v: [f32; 2]| {
            MemberUpdate::new(
                ClientId(c),
                ParamVec::new(schema.clone(), v.to_vec()).unwrap(),
                1,
                Metrics::new(),
            )
        };
        // Honest deltas (1, 0) and (3, 2); the attacker's own delta (5, 5) is replaced by
        // IPM with ε = 1: -(2, 1).
        let updates = vec![
            member(0, [2.0, 1.0]),
            member(1, [4.0, 3.0]),
            member(2, [6.0, 6.0]),
        ];
        let mut adv = Adversary::new(
            Box::new(FedAvg::new(StrategyConfig::default())),
            [ClientId(2)],
            Attack::Ipm { epsilon: 1.0 },
        );
        let poisoned = adv.poison(&current, updates.clone(), 0).unwrap();
        assert_eq!(poisoned[0], updates[0]);
        assert_eq!(poisoned[2].params.values(), &[-1.0, 0.0]);
        // FedAvg (a sum-based rule) gets the sum: the mean of (2, 1), (4, 3), (-1, 0).
        assert_eq!(adv.update_form(), UpdateForm::PerMember);
        let next = adv
            .aggregate_fit(1, &current, RoundUpdates::PerMember(updates))
            .unwrap();
        assert_eq!(next.values(), &[5.0 / 3.0, 4.0 / 3.0]);
        assert_eq!(adv.round_metrics()["attackers"], 1.0);
    }
}
