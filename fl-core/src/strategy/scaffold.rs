//! SCAFFOLD (Karimireddy, Kale, Mohri, Reddi, Stich and Suresh 2020, "SCAFFOLD: Stochastic
//! Controlled Averaging for Federated Learning"), with the paper's option II control variates.
//!
//! On heterogeneous data each member's local steps drift towards its own optimum, and FedAvg
//! with several local steps settles where the members' drifts balance, not at the federation's
//! optimum. SCAFFOLD keeps a server control variate `c` (zeros at the start) and every member its
//! own `cᵢ`, and members correct each local gradient by `c - cᵢ`, an estimate of the difference
//! between the federation's gradient and their own (member side: [`crate::scaffold`]).
//! Each round, with `S` the members that answered and `N` the members of the federation:
//!
//! `x ← x + η_g · (1/|S|) Σ_{i∈S} (yᵢ - x)`, `c ← c + (|S|/N) · (1/|S|) Σ_{i∈S} Δcᵢ`,
//!
//! `η_g` being `[strategy.scaffold] server_lr` (1 by default). Both means are unweighted, as in
//! the paper: every member counts once, whatever its example count (the invariant
//! `c = (1/N) Σ cᵢ` needs it for `c`; the model step follows, so SCAFFOLD's fixed point is the
//! optimum of `(1/N) Σ Fᵢ`). With `c = cᵢ = 0` and one member it is FedAvg.
//!
//! `c` travels with every fit instruction ([`FitConfig::scaffold`](crate::round::FitConfig)),
//! chunked like the parameters on the wire, and each member's `Δcᵢ` comes back with its update
//! ([`MemberUpdate::control_delta`]); [`Strategy::strategy_state`] hands `c` to the checkpoint
//! and [`ResumeState::strategy_state`] gives it back after a restart.
//!
//! # Composition
//!
//! The rule reads every member's update and `Δcᵢ`, so it is a per-member rule: a federation file
//! that combines it with `[secure_aggregation]` (SecAgg+ or homomorphic) or `[privacy]` is refused
//! at load time ([`BuildError::PerMemberUnderSecureAggregation`](super::BuildError),
//! [`BuildError::PerMemberUnderPrivacy`](super::BuildError)). Both means are sums, so a
//! sum-based variant could in principle run under secure aggregation (masking `Δcᵢ` alongside
//! the model); under differential privacy the control variates would need their own clipping
//! and noise and their own privacy accounting, since `Δcᵢ` is a scaled copy of the member's
//! update. Neither variant is built. FedProx's `proximal_mu` and a
//! `[strategy.server_optimizer]` (applied to the model step above) compose.

use std::sync::Arc;

use serde::{Deserialize, Serialize};

use crate::params::ParamVec;
use crate::round::{ClientId, Metrics};
use crate::scaffold::ScaffoldControls;

use super::fedavg::apply_optimizer;
use super::robust::member_deltas;
use super::{
    EvaluatePlan, FitPlan, Refusal, ResumeState, RoundUpdates, ServerOptimizer, Strategy,
    StrategyConfig, StrategyError, UpdateForm,
};

/// `[strategy.scaffold]`: SCAFFOLD's settings.
///
/// ```toml
/// [strategy]
/// kind = "scaffold"
/// [strategy.fit]
/// learning_rate = 0.05   # members step with plain SGD at this rate
/// [strategy.scaffold]
/// server_lr = 1.0        # η_g
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ScaffoldConfig {
    /// The global step size `η_g` the mean update is taken with (the paper's default 1).
    pub server_lr: f64,
}

impl Default for ScaffoldConfig {
    fn default() -> Self {
        Self { server_lr: 1.0 }
    }
}

impl ScaffoldConfig {
    /// Refuses a server learning rate that is not a positive finite number.
    pub fn check(&self) -> Result<(), StrategyError> {
        let lr = self.server_lr;
        if !(lr.is_finite() && lr > 0.0) {
            return Err(StrategyError::Settings(format!(
                "[strategy.scaffold] server_lr = {lr} must be a positive finite number (1 is the \
                 paper's default)"
            )));
        }
        Ok(())
    }
}

/// The round metric in which [`Scaffold`] reports the Euclidean norm of its control variate.
pub const CONTROL_NORM_METRIC: &str = "scaffold_control_norm";

/// SCAFFOLD's server: the model step and the server control variate `c`.
#[derive(Debug)]
pub struct Scaffold {
    config: StrategyConfig,
    settings: ScaffoldConfig,
    /// `N`; 0: not known when built, the members available at the last selection instead.
    members: usize,
    available: usize,
    /// `c`; `None` stands for zeros (before the first aggregation).
    control: Option<Arc<ParamVec>>,
    optimizer: Option<Box<dyn ServerOptimizer>>,
}

impl Scaffold {
    /// SCAFFOLD over a federation of `members` members (`N`; 0 if unknown: the number of
    /// members available when a round selects is taken instead), with the given selection and
    /// training settings.
    pub fn new(
        config: StrategyConfig,
        settings: ScaffoldConfig,
        members: usize,
    ) -> Result<Self, StrategyError> {
        settings.check()?;
        Ok(Self {
            config,
            settings,
            members,
            available: 0,
            control: None,
            optimizer: None,
        })
    }

    /// Steps along the SCAFFOLD model step with `optimizer` (none: take it as it is).
    pub fn with_optimizer(mut self, optimizer: Option<Box<dyn ServerOptimizer>>) -> Self {
        self.optimizer = optimizer;
        self
    }

    /// The server control variate `c` (`None` before the first aggregation: zeros).
    pub fn control(&self) -> Option<&Arc<ParamVec>> {
        self.control.as_ref()
    }

    /// `N` for a round of `answered` members.
    fn federation_size(&self, answered: usize) -> usize {
        let n = if self.members > 0 {
            self.members
        } else {
            self.available
        };
        n.max(answered)
    }
}

impl Strategy for Scaffold {
    fn name(&self) -> &str {
        "scaffold"
    }

    fn update_form(&self) -> UpdateForm {
        UpdateForm::PerMember
    }

    fn resume(&mut self, state: &ResumeState) -> Result<(), Refusal> {
        if let Some(c) = &state.strategy_state {
            if !c.all_finite() {
                return Err(Refusal::Declined(
                    "the checkpoint's SCAFFOLD control variate holds non-finite values".into(),
                ));
            }
            self.control = Some(c.clone());
        }
        Ok(())
    }

    fn strategy_state(&self) -> Option<Arc<ParamVec>> {
        self.control.clone()
    }

    fn configure_fit(&mut self, _round: u64, available: &[ClientId], round_seed: u64) -> FitPlan {
        self.available = available.len();
        let mut plan = self.config.plan_fit(available, round_seed);
        plan.config.scaffold = Some(ScaffoldControls::new(self.control.clone()));
        plan
    }

    fn aggregate_fit(
        &mut self,
        _round: u64,
        current: &ParamVec,
        updates: RoundUpdates,
    ) -> Result<ParamVec, StrategyError> {
        let members = updates.into_members()?;
        let deltas = member_deltas(current, &members)?;
        let schema = current.schema();
        if let Some(c) = &self.control {
            super::same_schema(schema, c.schema())?;
        }
        let s = members.len();
        let n = self.federation_size(s);
        let dim = current.len();
        let mut model_step = vec![0f64; dim];
        let mut control_step = vec![0f64; dim];
        for (u, delta) in members.iter().zip(&deltas) {
            let dc = u
                .control_delta
                .as_ref()
                .ok_or(StrategyError::MissingControl { client: u.client })?;
            if dc.schema().hash() != schema.hash() || dc.len() != dim {
                return Err(StrategyError::InvalidControl {
                    client: u.client,
                    reason: format!(
                        "{} values of schema {}, the model has {dim} of schema {}",
                        dc.len(),
                        dc.schema().hash(),
                        schema.hash()
                    ),
                });
            }
            if !dc.all_finite() {
                return Err(StrategyError::InvalidControl {
                    client: u.client,
                    reason: "it holds NaN or infinite values".into(),
                });
            }
            for (a, d) in model_step.iter_mut().zip(delta) {
                *a += f64::from(*d);
            }
            for (a, d) in control_step.iter_mut().zip(dc.values()) {
                *a += f64::from(*d);
            }
        }
        let eta = self.settings.server_lr / s as f64;
        let next: Vec<f32> = current
            .values()
            .iter()
            .zip(&model_step)
            .map(|(x, d)| (f64::from(*x) + eta * d) as f32)
            .collect();
        // c + (|S|/N)·mean(Δcᵢ) = c + Σ Δcᵢ / N.
        let control: Vec<f32> = (0..dim)
            .map(|j| {
                let c = self.control.as_ref().map_or(0.0, |c| c.values()[j]);
                (f64::from(c) + control_step[j] / n as f64) as f32
            })
            .collect();
        if !next.iter().chain(&control).all(|v| v.is_finite()) {
            return Err(StrategyError::Invalid(
                "the SCAFFOLD step is not finite".into(),
            ));
        }
        let invalid = |e: crate::params::ParamError| StrategyError::Invalid(e.to_string());
        let next = ParamVec::new(schema.clone(), next).map_err(invalid)?;
        let control = ParamVec::new(schema.clone(), control).map_err(invalid)?;
        let next = apply_optimizer(self.optimizer.as_mut(), current, next)?;
        if !next.all_finite() {
            // The engine would abort the round; c must not move either.
            return Err(StrategyError::Invalid(
                "the server optimiser's SCAFFOLD step is not finite".into(),
            ));
        }
        // Committed only once the whole step succeeded.
        self.control = Some(Arc::new(control));
        Ok(next)
    }

    fn round_metrics(&self) -> Metrics {
        let norm = self.control.as_ref().map_or(0.0, |c| {
            c.values()
                .iter()
                .map(|v| f64::from(*v) * f64::from(*v))
                .sum::<f64>()
                .sqrt()
        });
        Metrics::from([(CONTROL_NORM_METRIC.to_string(), norm)])
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
#[path = "scaffold_tests.rs"]
mod tests;
