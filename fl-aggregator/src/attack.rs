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

use fl_core::strategy::{EvaluatePlan, FitPlan, MemberUpdate, RoundUpdates};
use fl_core::{ClientId, EvaluateResult, Metrics, ParamVec, Strategy, StrategyError, UpdateForm};
use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;

pub use fl_core::attack::{Attack, AttackError, alie, gaussian, ipm, min_max};

/// A [`Strategy`] whose members in `attackers` send what `attack` computes; everything else is
/// the wrapped strategy's. It asks the engine for per-member updates whatever the wrapped rule
/// needs, and hands a sum-based rule (FedAvg) their weighted sum.
pub struct Adversary {
    inner: Box<dyn Strategy>,
    attackers: BTreeSet<ClientId>,
    attack: Attack,
    round_seed: u64,
    attacked: usize,
    sybils: bool,
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
            sybils: false,
        }
    }

    /// With `sybils`, every attacker sends the malicious update of the first attacker of the
    /// round (by client id): one adversary behind several identical members.
    pub fn with_sybils(mut self, sybils: bool) -> Self {
        self.sybils = sybils;
        self
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
        let mut first: Option<Vec<f32>> = None;
        let mut order: Vec<usize> = (0..updates.len()).collect();
        order.sort_by_key(|&i| updates[i].client);
        let lead = order
            .into_iter()
            .find(|&i| self.attackers.contains(&updates[i].client));
        if let (true, Some(i)) = (self.sybils, lead) {
            let own = updates[i].delta(current)?;
            first = Some(
                self.attack
                    .malicious_delta(&own, &honest, &mut rng)
                    .map_err(|e| StrategyError::Invalid(format!("attack: {e}")))?,
            );
        }
        updates
            .into_iter()
            .map(|u| {
                if !self.attackers.contains(&u.client) {
                    return Ok(u);
                }
                let bad = match &first {
                    Some(bad) => bad.clone(),
                    None => {
                        let own = u.delta(current)?;
                        self.attack
                            .malicious_delta(&own, &honest, &mut rng)
                            .map_err(|e| StrategyError::Invalid(format!("attack: {e}")))?
                    }
                };
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
        let members = updates.into_members()?;
        let members = self.poison(current, members, self.round_seed)?;
        self.attacked = members
            .iter()
            .filter(|u| self.attackers.contains(&u.client))
            .count();
        let updates =
            RoundUpdates::from_members(members, self.inner.update_form(), current.schema())?;
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
            .aggregate_fit(1, &current, RoundUpdates::PerMember(updates.clone()))
            .unwrap();
        assert_eq!(next.values(), &[5.0 / 3.0, 4.0 / 3.0]);
        assert_eq!(adv.round_metrics()["attackers"], 1.0);

        // Sybils: members 1 and 2 both send member 1's sign-flipped update, -(3, 2).
        let sybils = Adversary::new(
            Box::new(FedAvg::new(StrategyConfig::default())),
            [ClientId(2), ClientId(1)],
            Attack::SignFlip,
        )
        .with_sybils(true);
        let poisoned = sybils.poison(&current, updates.clone(), 0).unwrap();
        assert_eq!(poisoned[0], updates[0]);
        assert_eq!(poisoned[1].params.values(), &[-2.0, -1.0]);
        assert_eq!(poisoned[2].params, poisoned[1].params);
        // Without: each flips its own.
        let apart = Adversary::new(
            Box::new(FedAvg::new(StrategyConfig::default())),
            [ClientId(2), ClientId(1)],
            Attack::SignFlip,
        );
        let poisoned = apart.poison(&current, updates, 0).unwrap();
        assert_eq!(poisoned[2].params.values(), &[-4.0, -4.0]);
    }
}
