//! SCAFFOLD's control variates on the member's side (Karimireddy, Kale, Mohri, Reddi, Stich
//! and Suresh 2020, "SCAFFOLD: Stochastic Controlled Averaging for Federated Learning").
//!
//! The aggregator keeps a server control variate `c` and every member its own `cᵢ`, both
//! model-sized and zero at the start. A member corrects each of its `K` local steps,
//!
//! `y ← y - η·(gᵢ(y) - cᵢ + c)`,
//!
//! so that it follows an estimate of the federation's gradient rather than its own; then it
//! updates its control variate by the paper's option II,
//!
//! `cᵢ⁺ = cᵢ - c + (x - yᵢ)/(K·η)`,
//!
//! and sends back its model `yᵢ` (as every member does) and `Δcᵢ = cᵢ⁺ - cᵢ`. The server side is
//! [`Scaffold`](crate::strategy::Scaffold).
//!
//! What travels where:
//! - [`ScaffoldControls`] rides in [`FitConfig::scaffold`](crate::round::FitConfig::scaffold):
//!   the aggregator fills in `c`, the member's [`ClientSession`](crate::session::ClientSession)
//!   its own `cᵢ` before the trainer runs, and the trainer adds
//!   [`correction`](ScaffoldControls::correction)` = c - cᵢ` to every gradient;
//! - [`member_update`] computes `cᵢ⁺` and `Δcᵢ` from the round's start `x`, the trained `yᵢ`,
//!   the trainer's [`LOCAL_STEPS_METRIC`](crate::round::LOCAL_STEPS_METRIC) `K` and the
//!   learning rate `η`; the session keeps `cᵢ⁺` across rounds and sends `Δcᵢ` with the update.
//!
//! Option II reads `(x - yᵢ)/(K·η)` as the mean corrected gradient, which holds for plain SGD
//! at learning rate `η`; fl-client's trainers therefore step with SGD (no momentum, no weight
//! decay) in a SCAFFOLD round.
//!
//! A member moves to `cᵢ⁺` as soon as it sends `Δcᵢ`, as in the paper. If the aggregator then
//! leaves the update out (it arrived after the deadline, or the round aborted), `c` no longer
//! equals the mean of the members' `cᵢ` until those members train again; both stay finite and
//! SCAFFOLD still converges (`c` is an estimate under partial participation anyway), but the
//! drift is not corrected. A restart does not add to it: `c` is in the checkpoint and `cᵢ` in
//! the member's state.

use std::sync::Arc;

use crate::params::{ParamVec, SchemaHash};

/// The control variates a SCAFFOLD round corrects a member's local steps with.
///
/// `None` stands for a vector of zeros (the server's `c` before its first aggregation, a
/// member's `cᵢ` before its first SCAFFOLD round), so the first round sends no control at all.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct ScaffoldControls {
    /// The server control variate `c`, from the fit instruction.
    pub server: Option<Arc<ParamVec>>,
    /// The member's own control variate `cᵢ`, filled in by the member's session before the
    /// trainer runs (never sent by the aggregator).
    pub member: Option<Arc<ParamVec>>,
}

/// Why SCAFFOLD's control variates cannot be used or updated.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[non_exhaustive]
pub enum ControlError {
    /// A control variate is for another model than the one trained.
    #[error("the {which} control variate is for schema {got}, the model is {expected}")]
    SchemaMismatch {
        /// `server`, `member` or `local model`.
        which: &'static str,
        /// The model's schema hash.
        expected: SchemaHash,
        /// The control variate's.
        got: SchemaHash,
    },
    /// A control variate (or the difference computed from it) holds NaN or an infinity.
    #[error("the {which} control variate is not finite")]
    NonFinite {
        /// `server`, `member` or `new member`.
        which: &'static str,
    },
    /// The trainer reported no usable number of local steps `K` (option II divides by it).
    #[error("SCAFFOLD needs the trainer's `local_steps` metric (a finite number >= 1), got {0:?}")]
    LocalSteps(Option<f64>),
    /// The learning rate is not a positive finite number (option II divides by it).
    #[error("SCAFFOLD needs a positive finite learning rate, got {0}")]
    LearningRate(f64),
}

impl ScaffoldControls {
    /// The controls of a round whose server control variate is `server` (`None`: zeros).
    pub fn new(server: Option<Arc<ParamVec>>) -> Self {
        Self {
            server,
            member: None,
        }
    }

    /// `c - cᵢ`, the constant every local gradient is corrected by, for a model of schema
    /// `schema`; `None` when both are zero (the correction is then nothing and the trainer
    /// need not build it). Refuses a control of another schema or with non-finite values.
    pub fn correction(&self, schema: SchemaHash) -> Result<Option<Vec<f32>>, ControlError> {
        let server = checked(self.server.as_deref(), schema, "server")?;
        let member = checked(self.member.as_deref(), schema, "member")?;
        Ok(match (server, member) {
            (None, None) => None,
            (Some(c), None) => Some(c.values().to_vec()),
            (None, Some(ci)) => Some(ci.values().iter().map(|v| -v).collect()),
            (Some(c), Some(ci)) => Some(
                c.values()
                    .iter()
                    .zip(ci.values())
                    .map(|(c, ci)| c - ci)
                    .collect(),
            ),
        })
    }
}

fn checked<'a>(
    control: Option<&'a ParamVec>,
    schema: SchemaHash,
    which: &'static str,
) -> Result<Option<&'a ParamVec>, ControlError> {
    let Some(c) = control else {
        return Ok(None);
    };
    if c.schema().hash() != schema {
        return Err(ControlError::SchemaMismatch {
            which,
            expected: schema,
            got: c.schema().hash(),
        });
    }
    if !c.all_finite() {
        return Err(ControlError::NonFinite { which });
    }
    Ok(Some(c))
}

/// A member's control variate after a round, and the difference it sends.
#[derive(Debug, Clone, PartialEq)]
pub struct ControlUpdate {
    /// `cᵢ⁺`, kept by the member for its next round.
    pub control: ParamVec,
    /// `Δcᵢ = cᵢ⁺ - cᵢ = (x - yᵢ)/(K·η) - c`, sent to the aggregator with the update.
    pub delta: ParamVec,
}

/// Option II of the paper: from the round's global model `global` (`x`), the trained model
/// `local` (`yᵢ`), the round's `controls` (`c` and the member's `cᵢ`), the number of local
/// steps `steps` (`K`) and the learning rate (`η`), the member's new control variate and its
/// difference, computed in `f64`. Refuses other schemas, non-finite inputs or results, a
/// missing or invalid `K` and an invalid `η`.
pub fn member_update(
    global: &ParamVec,
    local: &ParamVec,
    controls: &ScaffoldControls,
    steps: Option<f64>,
    learning_rate: f64,
) -> Result<ControlUpdate, ControlError> {
    let schema = global.schema().hash();
    if local.schema().hash() != schema {
        return Err(ControlError::SchemaMismatch {
            which: "local model",
            expected: schema,
            got: local.schema().hash(),
        });
    }
    let k = match steps {
        Some(k) if k.is_finite() && k >= 1.0 => k,
        other => return Err(ControlError::LocalSteps(other)),
    };
    if !(learning_rate.is_finite() && learning_rate > 0.0) {
        return Err(ControlError::LearningRate(learning_rate));
    }
    let server = checked(controls.server.as_deref(), schema, "server")?;
    let member = checked(controls.member.as_deref(), schema, "member")?;
    let scale = 1.0 / (k * learning_rate);
    let n = global.len();
    let mut delta = Vec::with_capacity(n);
    let mut control = Vec::with_capacity(n);
    for j in 0..n {
        let x = f64::from(global.values()[j]);
        let y = f64::from(local.values()[j]);
        let c = server.map_or(0.0, |c| f64::from(c.values()[j]));
        let ci = member.map_or(0.0, |ci| f64::from(ci.values()[j]));
        let d = (x - y) * scale - c;
        delta.push(d as f32);
        control.push((ci + d) as f32);
    }
    if !delta.iter().chain(&control).all(|v| v.is_finite()) {
        return Err(ControlError::NonFinite {
            which: "new member",
        });
    }
    let make =
        |v| ParamVec::new(global.schema().clone(), v).expect("one value per value of the schema");
    Ok(ControlUpdate {
        control: make(control),
        delta: make(delta),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::params::{Schema, TensorSpec};

    fn schema() -> Arc<Schema> {
        Arc::new(Schema::new(vec![TensorSpec::new("w", [2])]).unwrap())
    }

    fn pv(v: [f32; 2]) -> ParamVec {
        ParamVec::new(schema(), v.to_vec()).unwrap()
    }

    #[test]
    fn option_two_by_hand() {
        // x = (1, 2), y = (0, 3), K = 4, η = 0.5: (x - y)/(Kη) = (0.5, -0.5);
        // c = (0.1, 0.2), cᵢ = (1, -1): Δcᵢ = (0.4, -0.7), cᵢ⁺ = (1.4, -1.7).
        let controls = ScaffoldControls {
            server: Some(Arc::new(pv([0.1, 0.2]))),
            member: Some(Arc::new(pv([1.0, -1.0]))),
        };
        let u = member_update(&pv([1.0, 2.0]), &pv([0.0, 3.0]), &controls, Some(4.0), 0.5).unwrap();
        let close = |a: &[f32], b: [f32; 2]| {
            assert!(
                a.iter().zip(b).all(|(a, b)| (a - b).abs() < 1e-6),
                "{a:?} vs {b:?}"
            )
        };
        close(u.delta.values(), [0.4, -0.7]);
        close(u.control.values(), [1.4, -1.7]);
        // c - cᵢ = (-0.9, 1.2) corrects every gradient.
        let corr = controls.correction(schema().hash()).unwrap().unwrap();
        close(&corr, [-0.9, 1.2]);
        // Zeros (both absent) need no correction; the first round's Δcᵢ is (x - y)/(Kη).
        let zero = ScaffoldControls::default();
        assert_eq!(zero.correction(schema().hash()), Ok(None));
        let u = member_update(&pv([1.0, 2.0]), &pv([0.0, 3.0]), &zero, Some(4.0), 0.5).unwrap();
        close(u.delta.values(), [0.5, -0.5]);
        assert_eq!(u.delta, u.control);
    }

    #[test]
    fn bad_inputs_are_named() {
        let x = pv([1.0, 2.0]);
        let zero = ScaffoldControls::default();
        for k in [
            None,
            Some(0.0),
            Some(0.5),
            Some(f64::NAN),
            Some(f64::INFINITY),
        ] {
            assert!(matches!(
                member_update(&x, &x, &zero, k, 0.1),
                Err(ControlError::LocalSteps(_))
            ));
        }
        for lr in [0.0, -1.0, f64::NAN] {
            assert!(matches!(
                member_update(&x, &x, &zero, Some(1.0), lr),
                Err(ControlError::LearningRate(_))
            ));
        }
        let other = Arc::new(Schema::new(vec![TensorSpec::new("v", [2])]).unwrap());
        let foreign = ScaffoldControls::new(Some(Arc::new(ParamVec::zeros(other.clone()))));
        assert!(matches!(
            member_update(&x, &x, &foreign, Some(1.0), 0.1),
            Err(ControlError::SchemaMismatch {
                which: "server",
                ..
            })
        ));
        assert!(matches!(
            foreign.correction(schema().hash()),
            Err(ControlError::SchemaMismatch {
                which: "server",
                ..
            })
        ));
        let nan = ScaffoldControls {
            server: None,
            member: Some(Arc::new(pv([f32::NAN, 0.0]))),
        };
        assert_eq!(
            member_update(&x, &x, &nan, Some(1.0), 0.1),
            Err(ControlError::NonFinite { which: "member" })
        );
        // Finite inputs whose difference overflows f32 are refused, not returned.
        let far = pv([3e38, 0.0]);
        assert_eq!(
            member_update(&far, &pv([-3e38, 0.0]), &zero, Some(1.0), 1e-3),
            Err(ControlError::NonFinite {
                which: "new member"
            })
        );
        assert!(matches!(
            member_update(&x, &ParamVec::zeros(other), &zero, Some(1.0), 0.1),
            Err(ControlError::SchemaMismatch {
                which: "local model",
                ..
            })
        ));
    }

    #[test]
    fn the_signed_digest_of_a_scaffold_update_pins_both_lists() {
        use crate::wire::{scaffold_update_digest, update_digest};
        let (a, b, c) = ([1u8; 32], [2u8; 32], [3u8; 32]);
        let d = scaffold_update_digest(&[a, b], &[c]);
        // Not the plain digest of the same hashes, and no hash may move between the lists.
        assert_ne!(d, update_digest(&[a, b, c]));
        assert_ne!(d, scaffold_update_digest(&[a], &[b, c]));
        assert_ne!(d, scaffold_update_digest(&[a, b], &[]));
        assert_ne!(d, scaffold_update_digest(&[a, b], &[b]));
        assert_eq!(d, scaffold_update_digest(&[a, b], &[c]));
    }

    /// A trainer whose `fit` takes one plain gradient step on `½‖w - target‖²` plus the
    /// round's SCAFFOLD correction, and reports `local_steps = 1`.
    struct OneStep {
        w: ParamVec,
        target: [f32; 2],
    }

    impl crate::trainer::Trainer for OneStep {
        fn get_parameters(&self) -> ParamVec {
            self.w.clone()
        }
        fn set_parameters(&mut self, p: &ParamVec) -> Result<(), crate::trainer::TrainerError> {
            self.w = p.clone();
            Ok(())
        }
        fn fit(
            &mut self,
            config: &crate::round::FitConfig,
        ) -> Result<crate::round::FitOutcome, crate::trainer::TrainerError> {
            let corr = match &config.scaffold {
                Some(c) => c
                    .correction(self.w.schema().hash())
                    .map_err(|e| crate::trainer::TrainerError::Other(e.to_string()))?,
                None => None,
            };
            let lr = config.learning_rate as f32;
            let next: Vec<f32> = (0..2)
                .map(|j| {
                    let g =
                        self.w.values()[j] - self.target[j] + corr.as_ref().map_or(0.0, |c| c[j]);
                    self.w.values()[j] - lr * g
                })
                .collect();
            self.w = ParamVec::new(self.w.schema().clone(), next).unwrap();
            Ok(crate::round::FitOutcome {
                num_examples: 1,
                metrics: crate::round::Metrics::from([(
                    crate::round::LOCAL_STEPS_METRIC.to_string(),
                    1.0,
                )]),
            })
        }
        fn evaluate(
            &mut self,
            _: &crate::round::EvaluateConfig,
        ) -> Result<crate::round::EvaluateResult, crate::trainer::TrainerError> {
            Err(crate::trainer::TrainerError::NoData("evaluate"))
        }
    }

    fn instruction(
        round: u64,
        x: &Arc<ParamVec>,
        server: Option<Arc<ParamVec>>,
        upload: crate::round::UploadSpec,
    ) -> crate::protocol::ServerMessage {
        crate::protocol::ServerMessage::Fit {
            header: crate::round::RoundConfig {
                round,
                stage: crate::round::Stage::Fit,
                params_hash: x.content_hash(),
                schema_hash: x.schema().hash(),
            },
            params: x.clone(),
            config: crate::round::FitConfig {
                learning_rate: 0.5,
                scaffold: Some(ScaffoldControls::new(server)),
                ..Default::default()
            },
            upload,
        }
    }

    #[test]
    fn the_session_keeps_c_i_across_rounds_and_sends_delta_c_before_the_update() {
        use crate::protocol::ClientMessage;
        let mut session = crate::session::ClientSession::new(schema().hash());
        let mut trainer = OneStep {
            w: pv([0.0, 0.0]),
            target: [2.0, -2.0],
        };
        // Round 1, c = cᵢ = 0: y = x - 0.5·(x - t) = (1, -1); Δcᵢ = cᵢ⁺ = (x - y)/(1·0.5).
        let x = Arc::new(pv([0.0, 0.0]));
        session
            .handle_message(instruction(1, &x, None, Default::default()))
            .unwrap();
        session.run_pending(&mut trainer).unwrap();
        let Some(ClientMessage::ControlChunk { round: 1, values }) = session.poll_transmit() else {
            panic!("Δcᵢ first");
        };
        assert_eq!(values, vec![-2.0, 2.0]);
        assert!(matches!(
            session.poll_transmit(),
            Some(ClientMessage::FitDone { round: 1, .. })
        ));
        assert_eq!(session.member_control().unwrap().values(), &[-2.0, 2.0]);
        // Round 2 from x = (1, -1) with c = (-1, 1): the correction c - cᵢ = (1, -1) turns the
        // gradient (x - t) = (-1, 1) into 0: y = x; Δcᵢ = 0 - c = (1, -1), cᵢ⁺ = (-1, 1).
        let x = Arc::new(pv([1.0, -1.0]));
        let c = Arc::new(pv([-1.0, 1.0]));
        session
            .handle_message(instruction(2, &x, Some(c.clone()), Default::default()))
            .unwrap();
        session.run_pending(&mut trainer).unwrap();
        let Some(ClientMessage::ControlChunk { round: 2, values }) = session.poll_transmit() else {
            panic!("Δcᵢ first");
        };
        assert_eq!(values, vec![1.0, -1.0]);
        assert!(matches!(
            session.poll_transmit(),
            Some(ClientMessage::FitDone { round: 2, result }) if result.params == *x
        ));
        assert_eq!(session.member_control().unwrap().values(), &[-1.0, 1.0]);
        // A control restored from elsewhere is checked.
        let other = Arc::new(Schema::new(vec![TensorSpec::new("v", [2])]).unwrap());
        assert!(matches!(
            session.set_member_control(Some(Arc::new(ParamVec::zeros(other.clone())))),
            Err(ControlError::SchemaMismatch {
                which: "member",
                ..
            })
        ));
        assert_eq!(
            session.set_member_control(Some(Arc::new(pv([f32::NAN, 0.0])))),
            Err(ControlError::NonFinite { which: "member" })
        );
        assert_eq!(session.member_control().unwrap().values(), &[-1.0, 1.0]);
        // Refused before training: a server control of another model, and SCAFFOLD under DP.
        let foreign = Arc::new(ParamVec::zeros(other));
        assert!(matches!(
            session.handle_message(instruction(3, &x, Some(foreign), Default::default())),
            Err(crate::session::SessionError::Scaffold { round: 3, .. })
        ));
        assert!(matches!(
            session.poll_transmit(),
            Some(ClientMessage::Failed { round: 3, .. })
        ));
        let private = crate::round::UploadSpec {
            privacy: Some(crate::dp::UpdatePrivacy {
                clip_norm: 1.0,
                local_noise_multiplier: 0.0,
                distributed_noise_multiplier: 0.0,
                distributed_min_survivors: 0,
            }),
            ..Default::default()
        };
        assert!(matches!(
            session.handle_message(instruction(4, &x, None, private)),
            Err(crate::session::SessionError::Scaffold { round: 4, .. })
        ));
        assert!(session.poll_event().is_none(), "no training was started");
        assert_eq!(session.member_control().unwrap().values(), &[-1.0, 1.0]);
    }
}
