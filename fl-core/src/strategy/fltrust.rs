//! FLTrust (Cao, Fang, Liu and Gong 2021, "FLTrust: Byzantine-robust Federated Learning via
//! Trust Bootstrapping"): the aggregator trains on a small clean root data set of its own each
//! round, from the global model, and trusts each member by how well its update points the same
//! way.
//!
//! With the server's update `g₀` and member `i`'s update `δᵢ`:
//!
//! - trust `TSᵢ = ReLU(cos(δᵢ, g₀))`: an update pointing away from the root data's direction
//!   counts for nothing;
//! - each update is rescaled to the server's norm, `δ̄ᵢ = (‖g₀‖/‖δᵢ‖)·δᵢ`, so a member cannot
//!   gain weight by sending a large update;
//! - the step is `Σ TSᵢ·δ̄ᵢ / Σ TSᵢ` (zero when no member is trusted: the model stays).
//!
//! The root set is the aggregator's, so FLTrust needs a [`Trainer`] over it at build time
//! ([`StrategyConfig::build_with`](super::StrategyConfig::build_with), `root`); the paper uses
//! 100 examples drawn from the same distribution as the members' data, and trains them with
//! the members' own settings (the round's [`FitConfig`]).

use crate::round::FitConfig;
use crate::trainer::Trainer;

use super::StrategyError;
use super::robust::{RobustRule, norm};

/// The FLTrust rule over a root data set's trainer.
pub struct FlTrust {
    root: Box<dyn Trainer>,
    fit: FitConfig,
    server: Option<Vec<f32>>,
    trust: Vec<f64>,
}

impl std::fmt::Debug for FlTrust {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("FlTrust")
            .field("fit", &self.fit)
            .field("trust", &self.trust)
            .finish_non_exhaustive()
    }
}

impl FlTrust {
    /// The rule training `root` with `fit` every round.
    pub fn new(root: Box<dyn Trainer>, fit: FitConfig) -> Self {
        Self {
            root,
            fit,
            server: None,
            trust: Vec::new(),
        }
    }

    /// The trust scores of the last aggregation, in input order.
    pub fn trust(&self) -> &[f64] {
        &self.trust
    }
}

/// FLTrust's step from the server update `server` and the members' `deltas` (all of one
/// length), with each member's trust score.
pub fn fltrust_step(server: &[f32], deltas: &[Vec<f32>]) -> (Vec<f32>, Vec<f64>) {
    let s_norm = norm(server);
    let trust: Vec<f64> = deltas
        .iter()
        .map(|d| {
            let n = norm(d);
            if n == 0.0 || s_norm == 0.0 {
                return 0.0;
            }
            let dot: f64 = d
                .iter()
                .zip(server)
                .map(|(a, b)| f64::from(*a) * f64::from(*b))
                .sum();
            (dot / (n * s_norm)).max(0.0)
        })
        .collect();
    let total: f64 = trust.iter().sum();
    let mut acc = vec![0f64; server.len()];
    if total > 0.0 {
        for (d, t) in deltas.iter().zip(&trust) {
            if *t == 0.0 {
                continue;
            }
            let w = t * s_norm / norm(d) / total;
            acc.iter_mut()
                .zip(d)
                .for_each(|(a, v)| *a += w * f64::from(*v));
        }
    }
    (acc.into_iter().map(|v| v as f32).collect(), trust)
}

impl RobustRule for FlTrust {
    fn name(&self) -> &'static str {
        "fltrust"
    }

    fn min_inputs(&self) -> usize {
        1
    }

    fn prepare(&mut self, current: &crate::ParamVec) -> Result<(), StrategyError> {
        let fail = |e: crate::trainer::TrainerError| {
            StrategyError::Invalid(format!("fltrust: training on the root data failed: {e}"))
        };
        self.root.set_parameters(current).map_err(fail)?;
        self.root.fit(&self.fit).map_err(fail)?;
        let trained = self.root.get_parameters();
        super::same_schema(current.schema(), trained.schema())?;
        let server: Vec<f32> = trained
            .values()
            .iter()
            .zip(current.values())
            .map(|(p, c)| p - c)
            .collect();
        if !server.iter().all(|v| v.is_finite()) {
            return Err(StrategyError::Invalid(
                "fltrust: the root data's update is not finite".into(),
            ));
        }
        self.server = Some(server);
        Ok(())
    }

    fn aggregate(&mut self, deltas: &[Vec<f32>]) -> Result<Vec<f32>, StrategyError> {
        let server = self.server.take().ok_or_else(|| {
            StrategyError::Invalid("fltrust: no root update for this round".into())
        })?;
        if deltas.iter().any(|d| d.len() != server.len()) {
            return Err(StrategyError::SchemaMismatch);
        }
        let (step, trust) = fltrust_step(&server, deltas);
        self.trust = trust;
        Ok(step)
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use super::*;
    use crate::round::{EvaluateConfig, EvaluateResult, FitOutcome, Metrics};
    use crate::strategy::robust::tests::{member, schema};
    use crate::strategy::{BuildError, RoundUpdates, StrategyConfig};
    use crate::{ParamVec, Schema};

    /// A root data set whose training always moves the model by `step`.
    struct FixedStep {
        params: ParamVec,
        step: Vec<f32>,
    }

    impl Trainer for FixedStep {
        fn schema(&self) -> Arc<Schema> {
            self.params.schema().clone()
        }
        fn get_parameters(&self) -> ParamVec {
            self.params.clone()
        }
        fn set_parameters(&mut self, p: &ParamVec) -> Result<(), crate::TrainerError> {
            self.params = p.clone();
            Ok(())
        }
        fn fit(&mut self, _: &FitConfig) -> Result<FitOutcome, crate::TrainerError> {
            self.params
                .values_mut()
                .iter_mut()
                .zip(&self.step)
                .for_each(|(p, s)| *p += s);
            Ok(FitOutcome {
                num_examples: 100,
                metrics: Metrics::new(),
            })
        }
        fn evaluate(&mut self, _: &EvaluateConfig) -> Result<EvaluateResult, crate::TrainerError> {
            Err(crate::TrainerError::NoData("evaluate"))
        }
    }

    #[test]
    fn the_federation_file_rule_trains_the_root_data_from_the_global_model() {
        let config: StrategyConfig = toml::from_str("kind = \"fltrust\"").unwrap();
        assert_eq!(
            config.build(None, None, 4, 2).err(),
            Some(BuildError::FlTrustWithoutRootData)
        );
        let root = FixedStep {
            params: ParamVec::zeros(schema(2)),
            step: vec![3.0, 4.0],
        };
        let mut s = config
            .build_with(None, None, 4, 2, None, Some(Box::new(root)))
            .unwrap();
        // The global model is (10, 10): members' models are 10 + their update. The attacker
        // (member 2) sends the opposite of the root direction a thousand times over.
        let current = ParamVec::new(schema(2), vec![10.0, 10.0]).unwrap();
        let updates = vec![
            member(0, &[16.0, 18.0], 1),
            member(1, &[14.0, 13.0], 1),
            member(2, &[-2990.0, -3990.0], 1000),
        ];
        let next = s
            .aggregate_fit(1, &current, RoundUpdates::PerMember(updates))
            .unwrap();
        let t = 1.96;
        let expect = [10.0 + (3.0 + 0.96 * 4.0) / t, 10.0 + (4.0 + 0.96 * 3.0) / t];
        for (a, b) in next.values().iter().zip(expect) {
            assert!((f64::from(*a) - b).abs() < 1e-5, "{:?}", next.values());
        }
        let detection: StrategyConfig =
            toml::from_str("kind = \"fltrust\"\n[detection]\nthreshold = 3.0").unwrap();
        assert!(
            detection.check(None, None).is_ok(),
            "detection runs under FLTrust"
        );
    }

    #[test]
    fn step_by_hand() {
        // Server (3, 4), norm 5. Member 0 agrees exactly (cos 1) with norm 10: rescaled to
        // (3, 4). Member 1 at 90 degrees (cos 0): no trust. Member 2 opposite: no trust.
        // Member 3 (4, 3): cos 24/25, rescaled to (4, 3).
        let server = [3.0f32, 4.0];
        let deltas = vec![
            vec![6.0, 8.0],
            vec![-4.0, 3.0],
            vec![-3.0, -4.0],
            vec![4.0, 3.0],
        ];
        let (step, trust) = fltrust_step(&server, &deltas);
        assert_eq!(trust[1], 0.0);
        assert_eq!(trust[2], 0.0);
        assert!((trust[0] - 1.0).abs() < 1e-12);
        assert!((trust[3] - 0.96).abs() < 1e-12);
        let t = 1.96;
        let expect = [(3.0 + 0.96 * 4.0) / t, (4.0 + 0.96 * 3.0) / t];
        for (a, b) in step.iter().zip(expect) {
            assert!((f64::from(*a) - b).abs() < 1e-6, "{step:?}");
        }
        // A huge update in the server's direction counts as one of the server's norm.
        let (big, _) = fltrust_step(&server, &[vec![3000.0, 4000.0]]);
        assert_eq!(big, vec![3.0, 4.0]);
        // Nobody trusted (all opposite, or zero updates): the model stays.
        let (none, trust) = fltrust_step(&server, &[vec![-1.0, -1.0], vec![0.0, 0.0]]);
        assert_eq!(none, vec![0.0, 0.0]);
        assert_eq!(trust, vec![0.0, 0.0]);
        // A zero server update trusts nobody.
        assert_eq!(fltrust_step(&[0.0, 0.0], &deltas).0, vec![0.0, 0.0]);
    }
}
