//! FedNova (Wang, Liu, Liang, Joshi and Poor 2020, "Tackling the Objective Inconsistency
//! Problem in Heterogeneous Federated Optimization"): normalised averaging for members that
//! take different numbers of local steps.
//!
//! FedAvg adds up how far each member moved, so a member that takes more steps (more data,
//! more epochs, a faster machine) pulls harder, and the federation converges to a stationary
//! point of `Σ pᵢτᵢFᵢ / Σ pᵢτᵢ` instead of the federation's objective `Σ pᵢFᵢ`. FedNova
//! divides each member's update by its number of steps `τᵢ` and rescales the average by the
//! effective number of steps `τ_eff = Σ pᵢτᵢ`:
//!
//! `x ← x + τ_eff · Σᵢ pᵢ·(xᵢ - x)/τᵢ`, with `pᵢ = nᵢ / Σ nⱼ` (examples trained on).
//!
//! With equal `τᵢ` it is FedAvg. `τᵢ` is the member's [`LOCAL_STEPS_METRIC`] training metric
//! (fl-client's trainers report it): for local SGD it is the paper's normaliser `‖aᵢ‖₁`
//! exactly; for local momentum, a proximal term or Adam the paper's `aᵢ` differs, and a trainer
//! that knows its `‖aᵢ‖₁` may report that instead (any value `≥ 1` is taken). A member that
//! leaves the metric out aborts the round with [`StrategyError::MissingMetric`].
//!
//! The rule reads every member's update and step count, so it is a per-member rule
//! ([`UpdateForm::PerMember`]): a federation file that combines it with secure aggregation or
//! differential privacy is refused at load time. (Members could pre-scale their updates by
//! `pᵢ/τᵢ` and send `pᵢτᵢ` alongside, so that sums carry everything FedNova needs; that
//! variant is not built.)

use crate::params::ParamVec;
use crate::round::{ClientId, LOCAL_STEPS_METRIC};

use super::fedavg::apply_optimizer;
use super::robust::member_deltas;
use super::{
    EvaluatePlan, FitPlan, MemberUpdate, RoundUpdates, ServerOptimizer, Strategy, StrategyConfig,
    StrategyError, UpdateForm,
};

/// FedNova's normalised averaging, optionally followed by a server optimiser.
#[derive(Debug)]
pub struct FedNova {
    config: StrategyConfig,
    optimizer: Option<Box<dyn ServerOptimizer>>,
}

impl FedNova {
    /// FedNova with the given selection and training settings.
    pub fn new(config: StrategyConfig) -> Self {
        Self {
            config,
            optimizer: None,
        }
    }

    /// Steps along the normalised update with `optimizer` (none: add it as it is).
    pub fn with_optimizer(mut self, optimizer: Option<Box<dyn ServerOptimizer>>) -> Self {
        self.optimizer = optimizer;
        self
    }
}

/// A member's `τᵢ`: its [`LOCAL_STEPS_METRIC`], finite and at least 1.
fn local_steps(update: &MemberUpdate) -> Result<f64, StrategyError> {
    let steps = *update
        .metrics
        .get(LOCAL_STEPS_METRIC)
        .ok_or(StrategyError::MissingMetric {
            client: update.client,
            metric: LOCAL_STEPS_METRIC,
        })?;
    if !(steps.is_finite() && steps >= 1.0) {
        return Err(StrategyError::InvalidMetric {
            client: update.client,
            metric: LOCAL_STEPS_METRIC,
            reason: format!("{steps} is not a finite number of steps >= 1"),
        });
    }
    Ok(steps)
}

/// FedNova's next model from `current` and the members' updates: `current + τ_eff · Σ pᵢΔᵢ/τᵢ`
/// (accumulated in `f64`). Refuses an empty round or one whose weights are all 0, another
/// schema, non-finite parameters, and a missing or invalid step count.
pub fn normalized_average(
    current: &ParamVec,
    updates: &[MemberUpdate],
) -> Result<ParamVec, StrategyError> {
    let steps = updates
        .iter()
        .map(local_steps)
        .collect::<Result<Vec<f64>, _>>()?;
    let deltas = member_deltas(current, updates)?;
    let total: f64 = updates.iter().map(|u| u.weight as f64).sum();
    if total <= 0.0 {
        return Err(StrategyError::NoResults);
    }
    let mut tau_eff = 0.0;
    let mut acc = vec![0f64; current.values().len()];
    for ((u, delta), tau) in updates.iter().zip(&deltas).zip(&steps) {
        let p = u.weight as f64 / total;
        tau_eff += p * tau;
        let scale = p / tau;
        for (a, d) in acc.iter_mut().zip(delta) {
            *a += scale * f64::from(*d);
        }
    }
    let values: Vec<f32> = current
        .values()
        .iter()
        .zip(&acc)
        .map(|(x, a)| (f64::from(*x) + tau_eff * a) as f32)
        .collect();
    if !values.iter().all(|v| v.is_finite()) {
        return Err(StrategyError::Invalid(
            "the normalised average is not finite".into(),
        ));
    }
    ParamVec::new(current.schema().clone(), values)
        .map_err(|e| StrategyError::Invalid(e.to_string()))
}

impl Strategy for FedNova {
    fn name(&self) -> &str {
        "fednova"
    }

    fn update_form(&self) -> UpdateForm {
        UpdateForm::PerMember
    }

    fn configure_fit(&mut self, _round: u64, available: &[ClientId], round_seed: u64) -> FitPlan {
        self.config.plan_fit(available, round_seed)
    }

    fn aggregate_fit(
        &mut self,
        _round: u64,
        current: &ParamVec,
        updates: RoundUpdates,
    ) -> Result<ParamVec, StrategyError> {
        let members = updates.into_members()?;
        let next = normalized_average(current, &members)?;
        apply_optimizer(self.optimizer.as_mut(), current, next)
    }

    fn configure_evaluate(
        &mut self,
        _round: u64,
        available: &[ClientId],
        round_seed: u64,
    ) -> EvaluatePlan {
        self.config.plan_evaluate(available, round_seed)
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use super::*;
    use crate::aggregate::WeightedSum;
    use crate::params::{Schema, TensorSpec};
    use crate::round::Metrics;
    use crate::strategy::UpdateSum;

    fn schema(n: usize) -> Arc<Schema> {
        Arc::new(Schema::new(vec![TensorSpec::new("w", [n])]).unwrap())
    }

    fn pv(v: &[f64]) -> ParamVec {
        ParamVec::new(schema(v.len()), v.iter().map(|x| *x as f32).collect()).unwrap()
    }

    fn member(c: u64, params: &[f64], weight: u64, steps: f64) -> MemberUpdate {
        let metrics = Metrics::from([(LOCAL_STEPS_METRIC.to_string(), steps)]);
        MemberUpdate::new(ClientId(c), pv(params), weight, metrics)
    }

    fn close(got: &[f32], want: &[f64], tol: f64) {
        for (g, w) in got.iter().zip(want) {
            assert!((f64::from(*g) - w).abs() < tol, "{got:?} vs {want:?}");
        }
    }

    #[test]
    fn one_round_matches_the_formula() {
        // p = (1/4, 3/4), τ = (2, 6): τ_eff = 0.5 + 4.5 = 5;
        // Σ pΔ/τ = (1, 2)/8 + 3·(3, -1)/24 = (0.5, 0.125); next = 5·(0.5, 0.125).
        let updates = vec![
            member(0, &[1.0, 2.0], 1, 2.0),
            member(1, &[3.0, -1.0], 3, 6.0),
        ];
        let next = normalized_average(&pv(&[0.0, 0.0]), &updates).unwrap();
        close(next.values(), &[2.5, 0.625], 1e-6);
        // FedAvg would give (2.5, -0.25): the second member's larger τ no longer counts twice.
        let mut rule = FedNova::new(StrategyConfig::default());
        let next = rule
            .aggregate_fit(1, &pv(&[1.0, 1.0]), RoundUpdates::PerMember(updates))
            .unwrap();
        // From (1, 1): Δ = (0, 1), (2, -2): Σ pΔ/τ = (0, 1)/8 + 3·(2, -2)/24 = (0.25, -0.125).
        close(next.values(), &[2.25, 0.375], 1e-6);
    }

    #[test]
    fn with_equal_steps_it_is_fedavg() {
        let updates = vec![
            member(0, &[1.0, -3.0, 0.5], 10, 7.0),
            member(1, &[2.0, 1.0, 0.5], 30, 7.0),
            member(2, &[-4.0, 0.0, 0.5], 60, 7.0),
        ];
        let next = normalized_average(&pv(&[0.25, 0.5, 0.5]), &updates).unwrap();
        // 0.1·x₀ + 0.3·x₁ + 0.6·x₂
        close(next.values(), &[-1.7, 0.0, 0.5], 1e-6);
    }

    /// Member `i` minimises `Fᵢ(x) = ½(x - cᵢ)²` by `τᵢ` steps of gradient descent with
    /// learning rate `η` from `x`, ending at `cᵢ + (1 - η)^τᵢ·(x - cᵢ)`.
    fn local_gd(x: f64, c: f64, tau: u32, eta: f64) -> f64 {
        c + (1.0 - eta).powi(tau as i32) * (x - c)
    }

    #[test]
    fn on_a_quadratic_fednova_finds_the_federation_s_optimum_where_fedavg_is_biased() {
        // Three members, weights p = (1/4, 1/2, 1/4), optima c = (0, 1, 4), steps τ = (1, 4, 20).
        let weights = [1u64, 2, 1];
        let c = [0.0, 1.0, 4.0];
        let tau = [1u32, 4, 20];
        let p: Vec<f64> = weights.iter().map(|w| *w as f64 / 4.0).collect();
        // The federation's objective Σ pᵢFᵢ is minimised at Σ pᵢcᵢ = 1.5.
        let optimum: f64 = p.iter().zip(&c).map(|(p, c)| p * c).sum();
        assert_eq!(optimum, 1.5);
        for eta in [0.01f64, 0.001] {
            // One round moves member i by wᵢ(cᵢ - x), wᵢ = 1 - (1 - η)^τᵢ. FedAvg's fixed point
            // solves Σ pᵢwᵢ(cᵢ - x) = 0, FedNova's Σ pᵢ(wᵢ/τᵢ)(cᵢ - x) = 0: both by hand.
            let w: Vec<f64> = tau
                .iter()
                .map(|t| 1.0 - (1.0 - eta).powi(*t as i32))
                .collect();
            let fixed = |k: &dyn Fn(usize) -> f64| {
                let num: f64 = (0..3).map(|i| p[i] * k(i) * c[i]).sum();
                let den: f64 = (0..3).map(|i| p[i] * k(i)).sum();
                num / den
            };
            let fedavg_fixed = fixed(&|i| w[i]);
            let fednova_fixed = fixed(&|i| w[i] / f64::from(tau[i]));
            // Run both rules to their fixed points.
            let (mut avg, mut nova) = (0.0f64, 0.0f64);
            let mut rule = FedNova::new(StrategyConfig::default());
            let rounds = if eta > 0.005 { 600 } else { 6_000 };
            for round in 0..rounds {
                avg = (0..3)
                    .map(|i| p[i] * local_gd(avg, c[i], tau[i], eta))
                    .sum();
                let updates = (0..3)
                    .map(|i| {
                        let local = local_gd(nova, c[i], tau[i], eta);
                        member(i as u64, &[local], weights[i], f64::from(tau[i]))
                    })
                    .collect();
                let next = rule
                    .aggregate_fit(round, &pv(&[nova]), RoundUpdates::PerMember(updates))
                    .unwrap();
                nova = f64::from(next.values()[0]);
            }
            assert!((avg - fedavg_fixed).abs() < 1e-6, "{avg} {fedavg_fixed}");
            assert!(
                (nova - fednova_fixed).abs() < 1e-4,
                "{nova} {fednova_fixed}"
            );
            // FedAvg lands near the τ-weighted optimum Σ pᵢτᵢcᵢ / Σ pᵢτᵢ = 22/7.25 ≈ 3.03,
            // far from 1.5; FedNova's bias is O(ητ) and vanishes with η.
            assert!(
                fedavg_fixed - optimum > 1.0,
                "η = {eta}: FedAvg at {fedavg_fixed}"
            );
            let bias = (fednova_fixed - optimum).abs();
            assert!(bias < 20.0 * eta, "η = {eta}: FedNova at {fednova_fixed}");
            assert!((nova - optimum).abs() < 20.0 * eta + 1e-4, "{nova}");
        }
    }

    #[test]
    fn missing_or_bad_step_counts_are_named() {
        let current = pv(&[0.0]);
        let mut silent = member(3, &[1.0], 1, 1.0);
        silent.metrics.clear();
        let updates = vec![member(0, &[1.0], 1, 2.0), silent];
        assert_eq!(
            normalized_average(&current, &updates),
            Err(StrategyError::MissingMetric {
                client: ClientId(3),
                metric: LOCAL_STEPS_METRIC
            })
        );
        let e = normalized_average(&current, &updates)
            .unwrap_err()
            .to_string();
        assert!(e.contains("client-3") && e.contains("local_steps"), "{e}");
        for steps in [0.0, 0.5, -1.0, f64::NAN, f64::INFINITY] {
            let updates = vec![member(0, &[1.0], 1, 2.0), member(5, &[1.0], 1, steps)];
            assert!(
                matches!(
                    normalized_average(&current, &updates),
                    Err(StrategyError::InvalidMetric { client: ClientId(5), metric, .. })
                        if metric == LOCAL_STEPS_METRIC
                ),
                "{steps}"
            );
        }
    }

    #[test]
    fn bad_rounds_are_refused() {
        let current = pv(&[0.0, 0.0]);
        let mut rule = FedNova::new(StrategyConfig::default());
        assert_eq!(
            rule.aggregate_fit(1, &current, RoundUpdates::PerMember(Vec::new())),
            Err(StrategyError::NoResults)
        );
        let sum = UpdateSum::of_models(WeightedSum::new(schema(2)));
        assert_eq!(
            rule.aggregate_fit(1, &current, RoundUpdates::Sum(sum)),
            Err(StrategyError::WrongForm {
                needed: UpdateForm::PerMember
            })
        );
        assert_eq!(
            normalized_average(&current, &[member(0, &[1.0, 1.0], 0, 1.0)]),
            Err(StrategyError::NoResults),
            "no weight"
        );
        assert_eq!(
            normalized_average(&current, &[member(0, &[1.0], 1, 1.0)]),
            Err(StrategyError::SchemaMismatch)
        );
        assert_eq!(
            normalized_average(&current, &[member(4, &[f64::NAN, 1.0], 1, 1.0)]),
            Err(StrategyError::NonFinite {
                client: ClientId(4)
            })
        );
        // Finite updates whose normalised sum overflows f32 are refused, not returned.
        let huge = [
            member(0, &[3e38, 0.0], 1, 1.0),
            member(1, &[0.0, 0.0], 1, 1e9),
        ];
        assert!(matches!(
            normalized_average(&current, &huge),
            Err(StrategyError::Invalid(_))
        ));
    }
}
