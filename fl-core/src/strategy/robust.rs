//! The frame every robust rule runs in: [`RobustAggregator`] turns the round's per-member
//! updates into differences from the global model, refuses empty rounds, foreign schemas and
//! non-finite values with named errors, runs the configured [`PreAggregator`]s (bucketing,
//! nearest-neighbour mixing), checks the rule's precondition on the member count, and steps
//! the global model along the rule's output (through a server optimiser if one is set).
//!
//! Robust rules are **unweighted**: the example counts members report about themselves are
//! never read, since a malicious member would simply claim many examples (Flower's `MultiKrum`
//! weights by them; daofl's rules do not).

use std::fmt;

use crate::params::ParamVec;
use crate::round::{ClientId, Metrics};

use super::anomaly::{MemberScore, score_members, score_metrics};
use super::consistency::Consistency;
use super::detection::{DetectionConfig, Detector, FlaggedUpdate, QaFindings};
use super::fedavg::apply_optimizer;
use super::preagg::PreAggregator;
use super::{
    EvaluatePlan, FitPlan, MemberUpdate, Refusal, ResumeState, RoundUpdates, ServerOptimizer,
    Strategy, StrategyConfig, StrategyError, UpdateForm,
};

/// A robust aggregation rule over the members' updates, as differences from the global model
/// (one `Vec<f32>` per member, all of the model's length, all finite, at least
/// [`min_inputs`](Self::min_inputs) of them).
pub trait RobustRule: Send + fmt::Debug {
    /// The rule's name, as in the federation file (`krum`, `bulyan`, ...).
    fn name(&self) -> &'static str;

    /// The fewest inputs the rule's guarantee holds for (Krum: `2f + 3`, Bulyan: `4f + 3`).
    fn min_inputs(&self) -> usize;

    /// Reads the round's global model before [`aggregate`](Self::aggregate) (FLTrust trains
    /// its root data from it). The default does nothing.
    fn prepare(&mut self, current: &ParamVec) -> Result<(), StrategyError> {
        let _ = current;
        Ok(())
    }

    /// The aggregated difference.
    fn aggregate(&mut self, deltas: &[Vec<f32>]) -> Result<Vec<f32>, StrategyError>;
}

/// A [`RobustRule`] behind optional pre-aggregators and a server optimiser, as a [`Strategy`].
#[derive(Debug)]
pub struct RobustAggregator {
    config: StrategyConfig,
    pre: Vec<PreAggregator>,
    rule: Box<dyn RobustRule>,
    optimizer: Option<Box<dyn ServerOptimizer>>,
    round_seed: u64,
    metrics: Metrics,
    scores: Vec<MemberScore>,
    detector: Option<Detector>,
    consistency: Option<Consistency>,
    findings: Option<QaFindings>,
}

impl RobustAggregator {
    /// `rule` with the given selection and training settings, no pre-aggregator and no server
    /// optimiser.
    pub fn new(config: StrategyConfig, rule: Box<dyn RobustRule>) -> Self {
        Self {
            config,
            pre: Vec::new(),
            rule,
            optimizer: None,
            round_seed: 0,
            metrics: Metrics::new(),
            scores: Vec::new(),
            detector: None,
            consistency: None,
            findings: None,
        }
    }

    /// Flags anomalous members each round, keeps their reputations and leaves out those whose
    /// reputation fell below the bound (see [`detection`](super::detection)).
    pub fn with_detection(mut self, config: Option<DetectionConfig>) -> Self {
        self.consistency = config
            .filter(|c| c.consistency_window > 0)
            .map(|c| Consistency::new(c.consistency_window));
        self.detector = config.map(Detector::new);
        self
    }

    /// The detector, when detection is on.
    pub fn detector(&self) -> Option<&Detector> {
        self.detector.as_ref()
    }

    /// Runs `pre` in order in front of the rule (bucketing is seeded from the round seed).
    pub fn with_pre_aggregators(mut self, pre: Vec<PreAggregator>) -> Self {
        self.pre = pre;
        self
    }

    /// Steps along the rule's output with `optimizer` (none: add it as it is).
    pub fn with_optimizer(mut self, optimizer: Option<Box<dyn ServerOptimizer>>) -> Self {
        self.optimizer = optimizer;
        self
    }

    /// Every member's anomaly scores in the last aggregated round (also in
    /// [`round_metrics`](Strategy::round_metrics) as `qa.<client>.*`).
    pub fn member_scores(&self) -> &[MemberScore] {
        &self.scores
    }

    /// The robust aggregate of `updates` as a difference from `current`, after the
    /// pre-aggregators (`seed` seeds bucketing).
    pub fn aggregate_deltas(
        &mut self,
        current: &ParamVec,
        updates: &[MemberUpdate],
        seed: u64,
    ) -> Result<Vec<f32>, StrategyError> {
        let originals = member_deltas(current, updates)?;
        let mut deltas = originals.clone();
        for p in &self.pre {
            deltas = p.apply(deltas, seed)?;
        }
        let needed = self.rule.min_inputs();
        if deltas.len() < needed {
            return Err(StrategyError::TooFewMembers {
                rule: self.rule.name(),
                members: deltas.len(),
                needed,
            });
        }
        let inputs = deltas.len();
        self.rule.prepare(current)?;
        let agg = self.rule.aggregate(&deltas)?;
        if agg.len() != current.len() || !agg.iter().all(|v| v.is_finite()) {
            return Err(StrategyError::Invalid(format!(
                "{} produced a non-finite or misshapen aggregate",
                self.rule.name()
            )));
        }
        let clients: Vec<ClientId> = updates.iter().map(|u| u.client).collect();
        self.scores = score_members(&clients, &originals, &agg);
        self.metrics = score_metrics(&self.scores);
        self.findings = None;
        if let Some(consistency) = self.consistency.as_mut() {
            for (c, score) in consistency.observe(current.values(), &clients, &originals, &agg) {
                self.metrics
                    .insert(format!("qa.{}.consistency", c.0), score);
            }
        }
        if let Some(detector) = self.detector.as_mut() {
            let (reference, scores) = detector.observe(&clients, &originals, &agg);
            self.metrics.extend(detector.metrics(&reference, &scores));
            let by_client = |c: ClientId| updates.iter().find(|u| u.client == c).cloned();
            let flagged = scores
                .iter()
                .filter(|s| s.flagged)
                .filter_map(|s| {
                    let neighbour = match s.reason {
                        super::detection::Feature::Neighbour => s.nearest.and_then(by_client),
                        _ => None,
                    };
                    Some(FlaggedUpdate {
                        score: *s,
                        update: by_client(s.client)?,
                        neighbour,
                    })
                })
                .collect();
            self.findings = Some(QaFindings {
                round: 0,
                rule: self.rule.name().to_string(),
                config: *detector.config(),
                centre: std::sync::Arc::new(agg.clone()),
                server_optimizer: self.optimizer.is_some(),
                reference,
                scores,
                flagged,
                signed_digests: updates
                    .iter()
                    .filter_map(|u| Some((u.client, u.signed.as_ref()?.statement.update_hash)))
                    .collect(),
                reputation: detector.reputation().clone(),
            });
        }
        self.metrics
            .insert("robust_inputs".to_string(), inputs as f64);
        self.metrics
            .insert("robust_update_norm".to_string(), norm(&agg));
        Ok(agg)
    }
}

/// Each member's `params - current`, refusing an empty round, another schema and non-finite
/// values ([`StrategyError::NonFinite`] names the member).
pub fn member_deltas(
    current: &ParamVec,
    updates: &[MemberUpdate],
) -> Result<Vec<Vec<f32>>, StrategyError> {
    if updates.is_empty() {
        return Err(StrategyError::NoResults);
    }
    updates
        .iter()
        .map(|u| {
            let d = u.delta(current)?;
            if !d.iter().all(|v| v.is_finite()) {
                return Err(StrategyError::NonFinite { client: u.client });
            }
            Ok(d)
        })
        .collect()
}

/// Squared Euclidean distance, accumulated in `f64`.
pub(crate) fn sq_dist(a: &[f32], b: &[f32]) -> f64 {
    a.iter()
        .zip(b)
        .map(|(x, y)| {
            let d = f64::from(*x) - f64::from(*y);
            d * d
        })
        .sum()
}

/// Euclidean norm, accumulated in `f64`.
pub(crate) fn norm(a: &[f32]) -> f64 {
    a.iter()
        .map(|x| f64::from(*x) * f64::from(*x))
        .sum::<f64>()
        .sqrt()
}

/// The unweighted mean of `rows` (all of length `dim`; `rows` non-empty).
pub(crate) fn mean_of<'a>(dim: usize, rows: impl IntoIterator<Item = &'a [f32]>) -> Vec<f32> {
    let mut acc = vec![0f64; dim];
    let mut n = 0usize;
    for r in rows {
        n += 1;
        acc.iter_mut().zip(r).for_each(|(a, v)| *a += f64::from(*v));
    }
    let n = n.max(1) as f64;
    acc.into_iter().map(|a| (a / n) as f32).collect()
}

/// All pairwise squared distances (symmetric, zero diagonal).
pub(crate) fn pairwise_sq_dists(rows: &[Vec<f32>]) -> Vec<Vec<f64>> {
    let n = rows.len();
    let mut d = vec![vec![0f64; n]; n];
    for i in 0..n {
        for j in i + 1..n {
            let v = sq_dist(&rows[i], &rows[j]);
            d[i][j] = v;
            d[j][i] = v;
        }
    }
    d
}

impl Strategy for RobustAggregator {
    fn name(&self) -> &str {
        self.rule.name()
    }

    fn update_form(&self) -> UpdateForm {
        UpdateForm::PerMember
    }

    fn configure_fit(&mut self, _round: u64, available: &[ClientId], round_seed: u64) -> FitPlan {
        self.round_seed = round_seed;
        match &self.detector {
            Some(d) => self.config.plan_fit(&d.admit(available), round_seed),
            None => self.config.plan_fit(available, round_seed),
        }
    }

    fn resume(&mut self, state: &ResumeState) -> Result<(), Refusal> {
        if let Some(d) = self.detector.as_mut() {
            d.restore(&state.reputation);
        }
        Ok(())
    }

    fn take_findings(&mut self) -> Option<QaFindings> {
        self.findings.take()
    }

    fn aggregate_fit(
        &mut self,
        round: u64,
        current: &ParamVec,
        updates: RoundUpdates,
    ) -> Result<ParamVec, StrategyError> {
        let members = updates.into_members()?;
        let agg = self.aggregate_deltas(current, &members, self.round_seed)?;
        if let Some(f) = self.findings.as_mut() {
            f.round = round;
        }
        drop(members);
        let next: Vec<f32> = current
            .values()
            .iter()
            .zip(&agg)
            .map(|(c, d)| c + d)
            .collect();
        let next = ParamVec::new(current.schema().clone(), next)
            .map_err(|e| StrategyError::Invalid(e.to_string()))?;
        apply_optimizer(self.optimizer.as_mut(), current, next)
    }

    fn round_metrics(&self) -> Metrics {
        self.metrics.clone()
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
pub(crate) mod tests {
    use std::sync::Arc;

    use super::*;
    use crate::aggregate::WeightedSum;
    use crate::params::{Schema, TensorSpec};
    use crate::strategy::UpdateSum;

    pub(crate) fn schema(dim: usize) -> Arc<Schema> {
        Arc::new(Schema::new(vec![TensorSpec::new("w", [dim])]).unwrap())
    }

    /// A member whose model is `v` (a difference of `v` from a zero global model), claiming
    /// `weight` examples.
    pub(crate) fn member(c: u64, v: &[f32], weight: u64) -> MemberUpdate {
        MemberUpdate::new(
            ClientId(c),
            ParamVec::new(schema(v.len()), v.to_vec()).unwrap(),
            weight,
            Metrics::new(),
        )
    }

    /// Checks the refusals every robust rule shares through [`RobustAggregator`]: an empty
    /// round, a sum, another schema, a NaN (named), too few members.
    pub(crate) fn refuses_hostile_input(rule: Box<dyn RobustRule>) {
        let needed = rule.min_inputs();
        let name = rule.name();
        let mut agg = RobustAggregator::new(StrategyConfig::default(), rule);
        let current = ParamVec::zeros(schema(2));
        assert_eq!(
            agg.aggregate_fit(1, &current, RoundUpdates::PerMember(Vec::new())),
            Err(StrategyError::NoResults)
        );
        let sum = UpdateSum::of_models(WeightedSum::new(schema(2)));
        assert_eq!(
            agg.aggregate_fit(1, &current, RoundUpdates::Sum(sum)),
            Err(StrategyError::WrongForm {
                needed: UpdateForm::PerMember
            })
        );
        let mut honest: Vec<_> = (0..needed as u64)
            .map(|c| member(c, &[c as f32, 1.0], 1))
            .collect();
        let other = Arc::new(Schema::new(vec![TensorSpec::new("v", [2])]).unwrap());
        let mut stranger = honest.clone();
        stranger[0] = MemberUpdate::new(ClientId(0), ParamVec::zeros(other), 1, Metrics::new());
        assert_eq!(
            agg.aggregate_fit(1, &current, RoundUpdates::PerMember(stranger)),
            Err(StrategyError::SchemaMismatch)
        );
        let mut nan = honest.clone();
        nan[needed - 1] = member(77, &[f32::NAN, 0.0], 1);
        assert!(matches!(
            agg.aggregate_fit(1, &current, RoundUpdates::PerMember(nan)),
            Err(StrategyError::NonFinite {
                client: ClientId(77)
            })
        ));
        let mut inf = honest.clone();
        inf[0] = member(78, &[0.0, f32::INFINITY], 1);
        assert!(matches!(
            agg.aggregate_fit(1, &current, RoundUpdates::PerMember(inf)),
            Err(StrategyError::NonFinite {
                client: ClientId(78)
            })
        ));
        if needed > 1 {
            honest.pop();
            assert!(matches!(
                agg.aggregate_fit(1, &current, RoundUpdates::PerMember(honest)),
                Err(StrategyError::TooFewMembers { rule, members, needed: n })
                    if rule == name && members == needed - 1 && n == needed
            ));
        }
    }

    #[test]
    fn the_step_is_taken_from_the_current_model_and_weights_are_ignored() {
        #[derive(Debug)]
        struct Mean;
        impl RobustRule for Mean {
            fn name(&self) -> &'static str {
                "mean"
            }
            fn min_inputs(&self) -> usize {
                1
            }
            fn aggregate(&mut self, d: &[Vec<f32>]) -> Result<Vec<f32>, StrategyError> {
                Ok(mean_of(d[0].len(), d.iter().map(Vec::as_slice)))
            }
        }
        let mut agg = RobustAggregator::new(StrategyConfig::default(), Box::new(Mean));
        let current = ParamVec::new(schema(2), vec![10.0, 10.0]).unwrap();
        let updates = vec![member(0, &[11.0, 10.0], 1), member(1, &[13.0, 12.0], 1000)];
        let next = agg
            .aggregate_fit(1, &current, RoundUpdates::PerMember(updates))
            .unwrap();
        assert_eq!(next.values(), &[12.0, 11.0]);
        assert_eq!(agg.round_metrics()["robust_inputs"], 2.0);
        // The centre is the step (2, 1); member 1's update (3, 2) is √2 from it.
        assert_eq!(agg.member_scores()[1].client, ClientId(1));
        assert!((agg.round_metrics()["qa.1.distance"] - 2f64.sqrt()).abs() < 1e-12);
        refuses_hostile_input(Box::new(Mean));
    }

    /// The strategy-level path of exclusion and resume: a flagged member is left out of the
    /// next round's plan, its reputation reaches the round metrics (what the manifest keeps),
    /// and an aggregator resumed from those metrics leaves it out too, where a fresh one
    /// would admit it.
    #[test]
    fn a_flagged_member_is_left_out_of_later_rounds_and_stays_out_after_a_resume() {
        use crate::strategy::detection::reputation_in;
        use crate::strategy::median::MedianRule;
        let detection = DetectionConfig {
            threshold: 3.5,
            reputation_rate: 1.0, // one flag drops the reputation to 0
            exclude_below: 0.5,
            consistency_window: 0,
        };
        let robust = || {
            RobustAggregator::new(StrategyConfig::default(), Box::new(MedianRule))
                .with_detection(Some(detection))
        };
        let all: Vec<ClientId> = (0..7).map(ClientId).collect();
        let mut agg = robust();
        assert_eq!(agg.configure_fit(1, &all, 1).clients, all);
        // Six members near (1, 1), member 6 a hundred times farther out.
        let mut updates: Vec<_> = (0..6)
            .map(|c| member(c, &[1.0 + 0.01 * c as f32, 1.0 - 0.01 * c as f32], 1))
            .collect();
        updates.push(member(6, &[100.0, -100.0], 1));
        let current = ParamVec::zeros(schema(2));
        agg.aggregate_fit(1, &current, RoundUpdates::PerMember(updates))
            .unwrap();
        let metrics = agg.round_metrics();
        assert_eq!(metrics["qa.6.flagged"], 1.0);
        assert_eq!(metrics["qa.6.reputation"], 0.0);
        assert_eq!(metrics["qa.0.reputation"], 1.0);
        assert_eq!(metrics["qa.excluded"], 1.0);
        let honest: Vec<ClientId> = (0..6).map(ClientId).collect();
        assert_eq!(agg.configure_fit(2, &all, 2).clients, honest);

        // A restart: the reputations come back from the manifest's metrics.
        let state = ResumeState::new(1, 0).with_reputation(reputation_in(&metrics));
        let mut resumed = robust();
        resumed.resume(&state).unwrap();
        assert_eq!(resumed.configure_fit(2, &all, 2).clients, honest);
        assert_eq!(robust().configure_fit(2, &all, 2).clients, all);
        // Without detection nobody is left out, whatever the manifest says.
        let mut plain = RobustAggregator::new(StrategyConfig::default(), Box::new(MedianRule));
        plain.resume(&state).unwrap();
        assert_eq!(plain.configure_fit(2, &all, 2).clients, all);
    }
}
