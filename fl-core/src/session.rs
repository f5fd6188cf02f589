//! The client side of the protocol as a state machine without IO.
//!
//! A driver (the simulation, or the gRPC node) feeds [`ServerMessage`]s in with
//! [`ClientSession::handle_message`], takes work out with [`ClientSession::poll_event`], runs it
//! on a [`Trainer`] (see [`FitTask::run`]), hands the outcome back with
//! [`ClientSession::complete_fit`] / [`ClientSession::complete_evaluate`], and sends whatever
//! [`ClientSession::poll_transmit`] yields. The session checks every instruction before any
//! training starts: stage, round order, schema and the content hash of the parameters.

use std::collections::VecDeque;
use std::sync::Arc;

use crate::identity::{Address, MemberKey};
use crate::params::{ParamVec, SchemaHash};
use crate::protocol::{ClientMessage, SecureClientStep, ServerMessage};
use crate::round::{
    EvaluateConfig, EvaluateResult, FitConfig, FitResult, RoundConfig, Stage, UploadProtocol,
};
use crate::secure::member::MemberAction;
use crate::secure::{MemberSigner, MemberVerifier, SecureMember};
use crate::trainer::{Trainer, TrainerError};

/// Local training the session asks its driver to run.
#[derive(Debug, Clone)]
pub struct FitTask {
    /// Round of the instruction.
    pub round: u64,
    /// Verified global parameters to start from.
    pub params: Arc<ParamVec>,
    /// Local training settings.
    pub config: FitConfig,
    /// Differential privacy of the update, if the round asks for it.
    pub privacy: Option<crate::dp::UpdatePrivacy>,
}

impl FitTask {
    /// Runs the task on `trainer`: load the global parameters, train, read the new ones.
    pub fn run(&self, trainer: &mut dyn Trainer) -> Result<FitResult, TrainerError> {
        trainer.set_parameters(&self.params)?;
        let outcome = trainer.fit(&self.config)?;
        let params = trainer.get_parameters();
        match &self.privacy {
            None => Ok(FitResult {
                params,
                num_examples: outcome.num_examples,
                metrics: outcome.metrics,
            }),
            // Client-level DP: the clipped (and, for local DP, noised) update, weight 1.
            Some(settings) => {
                let (update, unclipped) =
                    crate::dp::privatize_update(&self.params, &params, settings)
                        .map_err(|e| TrainerError::Other(format!("privatizing the update: {e}")))?;
                let mut metrics = outcome.metrics;
                metrics.insert(
                    crate::dp::UNCLIPPED_METRIC.into(),
                    if unclipped { 1.0 } else { 0.0 },
                );
                Ok(FitResult {
                    params: update,
                    num_examples: 1,
                    metrics,
                })
            }
        }
    }
}

/// Evaluation the session asks its driver to run.
#[derive(Debug, Clone)]
pub struct EvaluateTask {
    /// Round of the instruction.
    pub round: u64,
    /// Verified global parameters to evaluate.
    pub params: Arc<ParamVec>,
    /// Evaluation settings.
    pub config: EvaluateConfig,
}

impl EvaluateTask {
    /// Runs the task on `trainer`: load the global parameters and evaluate them.
    pub fn run(&self, trainer: &mut dyn Trainer) -> Result<EvaluateResult, TrainerError> {
        trainer.set_parameters(&self.params)?;
        trainer.evaluate(&self.config)
    }
}

/// Work and news for the session's driver.
#[derive(Debug, Clone)]
pub enum SessionEvent {
    /// Run this training task and report with [`ClientSession::complete_fit`].
    Fit(FitTask),
    /// Run this evaluation and report with [`ClientSession::complete_evaluate`].
    Evaluate(EvaluateTask),
    /// The federation finished; the driver may close the connection.
    Finished,
}

/// Why the session refused an instruction or a completion.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum SessionError {
    /// An instruction for a round/stage at or before one already received.
    #[error(
        "instruction for round {round} ({stage:?}) arrived after round {last_round} ({last_stage:?})"
    )]
    OutOfOrder {
        /// Round of the refused instruction.
        round: u64,
        /// Stage of the refused instruction.
        stage: Stage,
        /// Latest round received.
        last_round: u64,
        /// Stage of the latest round received.
        last_stage: Stage,
    },
    /// The header's stage does not match the message kind.
    #[error("message kind and header stage disagree ({0:?})")]
    StageMismatch(Stage),
    /// The parameters are for another model than this member trains.
    #[error("schema mismatch: this member trains schema {ours}, instruction is for {theirs}")]
    WrongSchema {
        /// This member's schema hash.
        ours: SchemaHash,
        /// The schema hash that arrived.
        theirs: SchemaHash,
    },
    /// The parameters' content hash differs from the one announced in the header.
    #[error("parameters hash to {got}, header announced {announced}")]
    HashMismatch {
        /// Hash in the header.
        announced: crate::hash::ContentHash,
        /// Hash of the parameters received.
        got: crate::hash::ContentHash,
    },
    /// The federation's final model could not be loaded into the trainer.
    #[error("the final model does not load into the trainer: {0}")]
    FinalModel(String),
    /// A completion for a task that is not (or no longer) running.
    #[error("no running {stage:?} task for round {round}")]
    NoSuchTask {
        /// Round of the completion.
        round: u64,
        /// Stage of the completion.
        stage: Stage,
    },
    /// A message after the federation finished.
    #[error("the session has finished")]
    Finished,
    /// A SCAFFOLD fit instruction this member cannot follow (an upload protocol the control
    /// variates cannot travel with, a control variate of another model).
    #[error("SCAFFOLD in round {round}: {reason}")]
    Scaffold {
        /// Round of the refused instruction.
        round: u64,
        /// What went wrong.
        reason: String,
    },
    /// A secure-aggregation step failed; the member leaves the round's protocol.
    #[error("secure aggregation in round {round}: {reason}")]
    Secure {
        /// Round of the failed step.
        round: u64,
        /// What went wrong.
        reason: String,
    },
}

/// A member's identity, for the protocols that sign (secure aggregation).
#[derive(Clone)]
struct Identity {
    me: u32,
    signer: MemberSigner,
    verifier: MemberVerifier,
}

/// A secure fit stage in progress.
struct SecureFitState {
    member: SecureMember,
    params: Arc<ParamVec>,
    config: FitConfig,
    privacy: Option<crate::dp::UpdatePrivacy>,
}

/// The fit stage's upload in progress, when it is not plain.
#[derive(Debug)]
enum UploadState {
    /// SecAgg+ steps around the training task (boxed: the protocol state is large).
    SecAgg(Box<SecureFitState>),
    /// Encryption of the task's result.
    #[cfg(feature = "he")]
    Homomorphic(HeFitState),
}

/// A homomorphic fit stage in progress: the member encrypts its update once training ends.
#[cfg(feature = "he")]
#[derive(Debug)]
struct HeFitState {
    round: u64,
    fit: Arc<crate::secure::he::HeFit>,
    global: Arc<ParamVec>,
    /// The task's result is already the private difference (under DP).
    private: bool,
}

/// The training metrics a member sends in the clear beside a masked or encrypted update: all
/// but those that would give away what secure aggregation hides. The number of local steps
/// (`epochs x ceil(examples / batch)`, with epochs and batch size set by the aggregator) would
/// reveal the member's example count, the weight the protocol keeps inside the sum.
fn public_metrics(metrics: &crate::round::Metrics) -> crate::round::Metrics {
    let mut public = metrics.clone();
    public.remove(crate::round::LOCAL_STEPS_METRIC);
    public
}

/// What a member uploads from its task's result: the result itself when it is already the
/// private difference (under DP), otherwise its difference from the global model.
fn upload_values(result: &FitResult, global: &ParamVec, private: bool) -> Vec<f32> {
    if private {
        return result.params.values().to_vec();
    }
    result
        .params
        .values()
        .iter()
        .zip(global.values())
        .map(|(l, g)| l - g)
        .collect()
}

/// The client's protocol state for one federation.
#[derive(Debug)]
pub struct ClientSession {
    schema_hash: SchemaHash,
    last: Option<(u64, Stage)>,
    running: Option<(u64, Stage)>,
    finished: bool,
    /// The federation's final model, once it is over.
    final_params: Option<Arc<ParamVec>>,
    events: VecDeque<SessionEvent>,
    outbox: VecDeque<ClientMessage>,
    identity: Option<Identity>,
    /// The fit stage's upload in progress, when it is not a plain one.
    upload: Option<UploadState>,
    /// This member's committee role (homomorphic aggregation), if it holds a key share.
    #[cfg(feature = "he")]
    committee: Option<crate::secure::he::CommitteeRole>,
    /// This member's SCAFFOLD control variate `cᵢ` (`None`: zeros, before its first SCAFFOLD
    /// round), kept across rounds.
    control: Option<Arc<ParamVec>>,
    /// The SCAFFOLD fit task in progress: what option II needs once training ends.
    scaffold: Option<ScaffoldFit>,
}

/// A SCAFFOLD fit task's inputs to option II ([`crate::scaffold::member_update`]).
#[derive(Debug)]
struct ScaffoldFit {
    round: u64,
    global: Arc<ParamVec>,
    controls: crate::scaffold::ScaffoldControls,
    learning_rate: f64,
}

impl std::fmt::Debug for SecureFitState {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        self.member.fmt(f)
    }
}

impl std::fmt::Debug for Identity {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Identity").field("me", &self.me).finish()
    }
}

impl ClientSession {
    /// A session for a member whose trainer has schema `schema_hash`.
    pub fn new(schema_hash: SchemaHash) -> Self {
        Self {
            schema_hash,
            last: None,
            running: None,
            finished: false,
            final_params: None,
            events: VecDeque::new(),
            outbox: VecDeque::new(),
            identity: None,
            upload: None,
            #[cfg(feature = "he")]
            committee: None,
            control: None,
            scaffold: None,
        }
    }

    /// This member's SCAFFOLD control variate `cᵢ` (`None` before its first SCAFFOLD round,
    /// standing for zeros). The session updates it when a SCAFFOLD fit completes, before the
    /// answer is queued: a driver that keeps it on disk writes it after
    /// [`complete_fit`](Self::complete_fit) and before sending what
    /// [`poll_transmit`](Self::poll_transmit) yields.
    pub fn member_control(&self) -> Option<&Arc<ParamVec>> {
        self.control.as_ref()
    }

    /// Restores this member's SCAFFOLD control variate (read back from where its driver kept
    /// it, e.g. after a restart or a reconnection). Refuses one of another model or with
    /// non-finite values.
    pub fn set_member_control(
        &mut self,
        control: Option<Arc<ParamVec>>,
    ) -> Result<(), crate::scaffold::ControlError> {
        if let Some(c) = &control {
            if c.schema().hash() != self.schema_hash {
                return Err(crate::scaffold::ControlError::SchemaMismatch {
                    which: "member",
                    expected: self.schema_hash,
                    got: c.schema().hash(),
                });
            }
            if !c.all_finite() {
                return Err(crate::scaffold::ControlError::NonFinite { which: "member" });
            }
        }
        self.control = control;
        Ok(())
    }

    /// Gives this member a committee role: it answers the aggregator's decryption requests
    /// (homomorphic aggregation) with partial decryptions, after checking them.
    #[cfg(feature = "he")]
    pub fn with_committee(mut self, role: crate::secure::he::CommitteeRole) -> Self {
        self.committee = Some(role);
        self
    }

    /// A session that can take part in secure aggregation: it signs as `key`, which is
    /// `members[me]` (the federation's member list, used to check the other participants'
    /// signatures).
    pub fn with_identity(
        schema_hash: SchemaHash,
        key: Arc<MemberKey>,
        members: Arc<Vec<Address>>,
        me: u32,
    ) -> Self {
        let mut this = Self::new(schema_hash);
        this.identity = Some(Identity {
            me,
            signer: MemberSigner(key),
            verifier: MemberVerifier(members),
        });
        this
    }

    /// The final global model the federation sent when it finished (checked against this
    /// member's schema), if it sent one.
    pub fn final_params(&self) -> Option<&Arc<ParamVec>> {
        self.final_params.as_ref()
    }

    /// Whether the federation has told this session it is over.
    pub fn is_finished(&self) -> bool {
        self.finished
    }

    /// The task currently running, as (round, stage).
    pub fn running(&self) -> Option<(u64, Stage)> {
        self.running
    }

    /// Takes one message from the aggregator.
    ///
    /// A refused instruction also queues a [`ClientMessage::Failed`] so the aggregator learns
    /// at once instead of waiting for its deadline. A newer instruction replaces a running task:
    /// the aggregator has moved on, and the old task's completion will be refused.
    pub fn handle_message(&mut self, msg: ServerMessage) -> Result<(), SessionError> {
        if self.finished {
            return Err(SessionError::Finished);
        }
        match msg {
            ServerMessage::Fit {
                header,
                params,
                mut config,
                upload,
            } => {
                self.accept(&header, Stage::Fit, &params)?;
                self.scaffold = None;
                if let Some(controls) = config.scaffold.as_mut() {
                    if !matches!(upload.protocol, UploadProtocol::Plain) || upload.privacy.is_some()
                    {
                        return Err(self.fail_fit(
                            header.round,
                            "SCAFFOLD needs plain updates: its control variates cannot travel \
                             under secure aggregation or differential privacy"
                                .into(),
                        ));
                    }
                    if let Some(c) = controls.server.as_ref().filter(|c| {
                        c.schema().hash() != self.schema_hash || c.len() != params.len()
                    }) {
                        let reason = format!(
                            "the server's SCAFFOLD control variate is for schema {}, this member \
                             trains {}",
                            c.schema().hash(),
                            self.schema_hash
                        );
                        return Err(self.fail_fit(header.round, reason));
                    }
                    controls.member = self.control.clone();
                    self.scaffold = Some(ScaffoldFit {
                        round: header.round,
                        global: params.clone(),
                        controls: controls.clone(),
                        learning_rate: config.learning_rate,
                    });
                }
                self.upload = match &upload.protocol {
                    #[cfg(feature = "he")]
                    UploadProtocol::Homomorphic(fit) => {
                        Some(UploadState::Homomorphic(HeFitState {
                            round: header.round,
                            fit: fit.clone(),
                            global: params.clone(),
                            private: upload.privacy.is_some(),
                        }))
                    }
                    UploadProtocol::Plain | UploadProtocol::SecAgg(_) => None,
                };
                if self.upload.is_some() && self.identity.is_none() {
                    return Err(self.fail_secure(
                        header.round,
                        "this member has no identity key to sign with".into(),
                    ));
                }
                let privacy = upload.privacy;
                match upload.protocol {
                    UploadProtocol::Plain => self.events.push_back(SessionEvent::Fit(FitTask {
                        round: header.round,
                        params,
                        config,
                        privacy,
                    })),
                    #[cfg(feature = "he")]
                    UploadProtocol::Homomorphic(_) => {
                        self.events.push_back(SessionEvent::Fit(FitTask {
                            round: header.round,
                            params,
                            config,
                            privacy,
                        }))
                    }
                    UploadProtocol::SecAgg(fit) => {
                        // Training waits until the keys are shared; the stage is "running"
                        // from now on.
                        let round = header.round;
                        let started = match &self.identity {
                            None => Err("this member has no identity key to sign with".into()),
                            Some(id) => SecureMember::start(
                                round,
                                (*fit).clone(),
                                id.me,
                                id.signer.clone(),
                                id.verifier.clone(),
                            )
                            .map_err(|e| e.to_string()),
                        };
                        match started {
                            Ok((member, advertisement)) => {
                                self.upload = Some(UploadState::SecAgg(Box::new(SecureFitState {
                                    member,
                                    params,
                                    config,
                                    privacy,
                                })));
                                self.outbox.push_back(ClientMessage::Secure {
                                    round,
                                    step: SecureClientStep::Advertisement,
                                    payload: advertisement,
                                });
                            }
                            Err(reason) => return Err(self.fail_secure(round, reason)),
                        }
                    }
                }
            }
            #[cfg(feature = "he")]
            ServerMessage::Secure {
                round,
                step: crate::protocol::SecureServerStep::Decrypt,
                payload,
            } => {
                let Some(role) = self.committee.as_mut() else {
                    return Err(SessionError::Secure {
                        round,
                        reason: "a decryption request to a member outside the committee".into(),
                    });
                };
                // A refused request gets no partial decryption; the aggregator learns why.
                match role.partial_decrypt(&payload) {
                    Ok(partial) => self.outbox.push_back(ClientMessage::Secure {
                        round,
                        step: SecureClientStep::PartialDecryption,
                        payload: partial,
                    }),
                    Err(e) => {
                        return Err(SessionError::Secure {
                            round,
                            reason: e.to_string(),
                        });
                    }
                }
            }
            ServerMessage::Secure {
                round,
                step,
                payload,
            } => {
                let Some(UploadState::SecAgg(state)) = self
                    .upload
                    .as_mut()
                    .filter(|u| matches!(u, UploadState::SecAgg(s) if s.member.round() == round))
                else {
                    // Not (or no longer) in this round's protocol: no answer.
                    return Err(SessionError::Secure {
                        round,
                        reason: format!("no secure stage running for {step:?}"),
                    });
                };
                match state.member.handle(step, &payload) {
                    Ok(MemberAction::Reply(step, payload)) => {
                        self.outbox.push_back(ClientMessage::Secure {
                            round,
                            step,
                            payload,
                        });
                    }
                    Ok(MemberAction::Train) => {
                        self.events.push_back(SessionEvent::Fit(FitTask {
                            round,
                            params: state.params.clone(),
                            config: state.config.clone(),
                            privacy: state.privacy,
                        }));
                    }
                    Err(e) => return Err(self.fail_secure(round, e.to_string())),
                }
            }
            ServerMessage::Evaluate {
                header,
                params,
                config,
            } => {
                self.accept(&header, Stage::Evaluate, &params)?;
                self.events.push_back(SessionEvent::Evaluate(EvaluateTask {
                    round: header.round,
                    params,
                    config,
                }));
            }
            ServerMessage::Finished { params, .. } => {
                self.final_params = params.filter(|p| p.schema().hash() == self.schema_hash);
                self.finished = true;
                self.running = None;
                self.events.push_back(SessionEvent::Finished);
            }
        }
        Ok(())
    }

    fn accept(
        &mut self,
        header: &RoundConfig,
        stage: Stage,
        params: &ParamVec,
    ) -> Result<(), SessionError> {
        let result = self.check(header, stage, params);
        if let Err(e) = &result {
            // Only answer instructions that are newer than what we hold; a replayed old
            // instruction gets no answer at all.
            if !matches!(e, SessionError::OutOfOrder { .. }) {
                self.outbox.push_back(ClientMessage::Failed {
                    round: header.round,
                    stage,
                    reason: e.to_string(),
                });
                self.last = Some((header.round, stage));
            }
        } else {
            self.last = Some((header.round, stage));
            self.running = Some((header.round, stage));
            // A superseded task's work item may still be queued: drop it.
            self.events.retain(|e| matches!(e, SessionEvent::Finished));
        }
        result
    }

    fn check(
        &self,
        header: &RoundConfig,
        stage: Stage,
        params: &ParamVec,
    ) -> Result<(), SessionError> {
        let key = (header.round, stage_rank(header.stage));
        if let Some((last_round, last_stage)) = self.last
            && key <= (last_round, stage_rank(last_stage))
        {
            return Err(SessionError::OutOfOrder {
                round: header.round,
                stage: header.stage,
                last_round,
                last_stage,
            });
        }
        if header.stage != stage {
            return Err(SessionError::StageMismatch(header.stage));
        }
        if header.schema_hash != self.schema_hash || params.schema().hash() != self.schema_hash {
            return Err(SessionError::WrongSchema {
                ours: self.schema_hash,
                theirs: params.schema().hash(),
            });
        }
        let got = params.content_hash();
        if got != header.params_hash {
            return Err(SessionError::HashMismatch {
                announced: header.params_hash,
                got,
            });
        }
        Ok(())
    }

    /// Refuses the fit stage of `round` before training: tells the aggregator and returns the
    /// error.
    fn fail_fit(&mut self, round: u64, reason: String) -> SessionError {
        if self.running == Some((round, Stage::Fit)) {
            self.running = None;
        }
        self.outbox.push_back(ClientMessage::Failed {
            round,
            stage: Stage::Fit,
            reason: reason.clone(),
        });
        SessionError::Scaffold { round, reason }
    }

    /// Leaves the secure stage of `round`: tells the aggregator and returns the error.
    fn fail_secure(&mut self, round: u64, reason: String) -> SessionError {
        self.upload = None;
        if self.running == Some((round, Stage::Fit)) {
            self.running = None;
        }
        self.outbox.push_back(ClientMessage::Failed {
            round,
            stage: Stage::Fit,
            reason: reason.clone(),
        });
        SessionError::Secure { round, reason }
    }

    /// Reports the outcome of the fit task of `round`.
    pub fn complete_fit(
        &mut self,
        round: u64,
        outcome: Result<FitResult, TrainerError>,
    ) -> Result<(), SessionError> {
        self.complete(round, Stage::Fit)?;
        #[cfg(feature = "he")]
        let he = match self.upload.take() {
            Some(UploadState::Homomorphic(he)) => Some(he),
            other => {
                self.upload = other;
                None
            }
        };
        #[cfg(feature = "he")]
        if let (Some(he), Ok(result)) = (he, &outcome)
            && he.round == round
        {
            let update = upload_values(result, &he.global, he.private);
            let fit = he.fit;
            let id = self
                .identity
                .as_ref()
                .expect("checked when the stage began");
            return match crate::secure::he::encrypt_update(
                &fit,
                round,
                id.me,
                &update,
                result.num_examples,
                &id.signer,
            ) {
                Ok(update) => {
                    self.outbox.push_back(ClientMessage::Encrypted {
                        round,
                        update,
                        metrics: public_metrics(&result.metrics),
                    });
                    Ok(())
                }
                Err(e) => Err(self.fail_secure(round, e.to_string())),
            };
        }
        if let (Some(UploadState::SecAgg(state)), Ok(result)) = (
            self.upload
                .as_mut()
                .filter(|u| matches!(u, UploadState::SecAgg(s) if s.member.round() == round)),
            &outcome,
        ) {
            // With privacy the task already produced the clipped difference; otherwise the
            // member masks its difference from the global model.
            let update = upload_values(result, &state.params, state.privacy.is_some());
            return match state.member.masked_input(&update, result.num_examples) {
                Ok((header, values)) => {
                    self.outbox.push_back(ClientMessage::MaskedInput {
                        round,
                        header,
                        values,
                        metrics: public_metrics(&result.metrics),
                        bits: state.member.modulus_bits(),
                    });
                    Ok(())
                }
                Err(e) => Err(self.fail_secure(round, e.to_string())),
            };
        }
        let scaffold = self.scaffold.take().filter(|s| s.round == round);
        if let (Some(task), Ok(result)) = (scaffold, &outcome) {
            let steps = result
                .metrics
                .get(crate::round::LOCAL_STEPS_METRIC)
                .copied();
            match crate::scaffold::member_update(
                &task.global,
                &result.params,
                &task.controls,
                steps,
                task.learning_rate,
            ) {
                Ok(update) => {
                    self.control = Some(Arc::new(update.control));
                    self.outbox.push_back(ClientMessage::ControlChunk {
                        round,
                        values: update.delta.into_values(),
                    });
                }
                Err(e) => {
                    self.outbox.push_back(ClientMessage::Failed {
                        round,
                        stage: Stage::Fit,
                        reason: format!("SCAFFOLD control variate: {e}"),
                    });
                    return Ok(());
                }
            }
        }
        self.outbox.push_back(match outcome {
            Ok(result) => ClientMessage::FitDone { round, result },
            Err(e) => ClientMessage::Failed {
                round,
                stage: Stage::Fit,
                reason: e.to_string(),
            },
        });
        Ok(())
    }

    /// Reports the outcome of the evaluate task of `round`.
    pub fn complete_evaluate(
        &mut self,
        round: u64,
        outcome: Result<EvaluateResult, TrainerError>,
    ) -> Result<(), SessionError> {
        self.complete(round, Stage::Evaluate)?;
        self.outbox.push_back(match outcome {
            Ok(result) => ClientMessage::EvaluateDone { round, result },
            Err(e) => ClientMessage::Failed {
                round,
                stage: Stage::Evaluate,
                reason: e.to_string(),
            },
        });
        Ok(())
    }

    fn complete(&mut self, round: u64, stage: Stage) -> Result<(), SessionError> {
        if self.running != Some((round, stage)) {
            return Err(SessionError::NoSuchTask { round, stage });
        }
        self.running = None;
        Ok(())
    }

    /// Runs every pending task on `trainer` and reports each outcome, so a driver never pairs
    /// rounds with results by hand; when the federation is over, loads its final model into
    /// `trainer`. Returns whether the federation is over. Answers wait in
    /// [`poll_transmit`](Self::poll_transmit).
    ///
    /// Runs the trainer on the calling thread: an async driver that must not block calls
    /// [`poll_event`](Self::poll_event) and runs the tasks elsewhere instead (as `fl-client`'s
    /// node does).
    pub fn run_pending(&mut self, trainer: &mut dyn Trainer) -> Result<bool, SessionError> {
        let mut finished = false;
        while let Some(event) = self.poll_event() {
            match event {
                SessionEvent::Fit(task) => {
                    let result = task.run(trainer);
                    self.complete_fit(task.round, result)?;
                }
                SessionEvent::Evaluate(task) => {
                    let result = task.run(trainer);
                    self.complete_evaluate(task.round, result)?;
                }
                SessionEvent::Finished => finished = true,
            }
        }
        if finished && let Some(params) = &self.final_params {
            trainer
                .set_parameters(params)
                .map_err(|e| SessionError::FinalModel(e.to_string()))?;
        }
        Ok(finished)
    }

    /// The next piece of work or news for the driver.
    #[must_use]
    pub fn poll_event(&mut self) -> Option<SessionEvent> {
        self.events.pop_front()
    }

    /// The next message to send to the aggregator.
    #[must_use]
    pub fn poll_transmit(&mut self) -> Option<ClientMessage> {
        self.outbox.pop_front()
    }
}

fn stage_rank(stage: Stage) -> u8 {
    match stage {
        Stage::Fit => 0,
        Stage::Evaluate => 1,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::params::{Schema, TensorSpec};
    use crate::round::Metrics;

    fn params(v: f32) -> Arc<ParamVec> {
        let schema = Arc::new(Schema::new(vec![TensorSpec::new("w", [2])]).unwrap());
        Arc::new(ParamVec::new(schema, vec![v, v]).unwrap())
    }

    fn fit(round: u64, p: &Arc<ParamVec>) -> ServerMessage {
        ServerMessage::Fit {
            header: RoundConfig {
                round,
                stage: Stage::Fit,
                params_hash: p.content_hash(),
                schema_hash: p.schema().hash(),
            },
            params: p.clone(),
            config: FitConfig::default(),
            upload: Default::default(),
        }
    }

    fn result(p: &ParamVec) -> FitResult {
        FitResult {
            params: p.clone(),
            num_examples: 3,
            metrics: Metrics::new(),
        }
    }

    #[test]
    fn fit_instruction_becomes_a_task_and_an_answer() {
        let p = params(1.0);
        let mut s = ClientSession::new(p.schema().hash());
        s.handle_message(fit(1, &p)).unwrap();
        let Some(SessionEvent::Fit(task)) = s.poll_event() else {
            panic!("expected a fit task")
        };
        assert_eq!(task.round, 1);
        s.complete_fit(1, Ok(result(&p))).unwrap();
        assert!(matches!(
            s.poll_transmit(),
            Some(ClientMessage::FitDone { round: 1, .. })
        ));
        assert!(s.poll_transmit().is_none());
    }

    /// Adds one to every parameter per fit; counts evaluations.
    struct PlusOne {
        params: ParamVec,
        evaluations: u64,
    }

    impl Trainer for PlusOne {
        fn schema(&self) -> Arc<Schema> {
            self.params.schema().clone()
        }
        fn get_parameters(&self) -> ParamVec {
            self.params.clone()
        }
        fn set_parameters(&mut self, p: &ParamVec) -> Result<(), TrainerError> {
            self.params = p.clone();
            Ok(())
        }
        fn fit(&mut self, _: &FitConfig) -> Result<crate::FitOutcome, TrainerError> {
            self.params.values_mut().iter_mut().for_each(|v| *v += 1.0);
            Ok(crate::FitOutcome {
                num_examples: 2,
                metrics: Metrics::new(),
            })
        }
        fn evaluate(&mut self, _: &EvaluateConfig) -> Result<EvaluateResult, TrainerError> {
            self.evaluations += 1;
            Ok(EvaluateResult {
                loss: 0.5,
                num_examples: 2,
                metrics: Metrics::new(),
            })
        }
    }

    #[test]
    fn run_pending_trains_answers_and_ends_on_the_final_model() {
        let p = params(1.0);
        let mut trainer = PlusOne {
            params: (*params(0.0)).clone(),
            evaluations: 0,
        };
        let mut s = ClientSession::new(p.schema().hash());
        s.handle_message(fit(1, &p)).unwrap();
        assert!(!s.run_pending(&mut trainer).unwrap());
        match s.poll_transmit() {
            Some(ClientMessage::FitDone { round: 1, result }) => {
                assert_eq!(result.params.values(), &[2.0, 2.0]);
                assert_eq!(result.num_examples, 2);
            }
            other => panic!("{other:?}"),
        }
        let final_model = params(7.0);
        s.handle_message(ServerMessage::Finished {
            round: 1,
            params: Some(final_model.clone()),
        })
        .unwrap();
        assert!(s.run_pending(&mut trainer).unwrap());
        assert_eq!(trainer.params, *final_model);
        // A final model of another schema is not kept (nor loaded).
        let mut s = ClientSession::new(p.schema().hash());
        let other = Arc::new(Schema::new(vec![TensorSpec::new("v", [1])]).unwrap());
        let stranger = Arc::new(ParamVec::new(other, vec![3.0]).unwrap());
        s.handle_message(ServerMessage::Finished {
            round: 1,
            params: Some(stranger),
        })
        .unwrap();
        assert!(s.final_params().is_none());
        assert!(s.run_pending(&mut trainer).unwrap());
        assert_eq!(trainer.params, *final_model);
    }

    #[test]
    fn tampered_parameters_are_refused_with_a_failure_message() {
        let p = params(1.0);
        let mut s = ClientSession::new(p.schema().hash());
        let ServerMessage::Fit {
            header,
            config,
            upload,
            ..
        } = fit(1, &p)
        else {
            unreachable!()
        };
        let tampered = ServerMessage::Fit {
            header,
            params: params(2.0),
            config,
            upload,
        };
        assert!(matches!(
            s.handle_message(tampered),
            Err(SessionError::HashMismatch { .. })
        ));
        assert!(s.poll_event().is_none());
        assert!(matches!(
            s.poll_transmit(),
            Some(ClientMessage::Failed { round: 1, .. })
        ));
    }

    #[test]
    fn wrong_schema_stale_rounds_and_stray_completions_are_refused() {
        let p = params(1.0);
        let other = Arc::new(Schema::new(vec![TensorSpec::new("v", [2])]).unwrap());
        let mut s = ClientSession::new(other.hash());
        assert!(matches!(
            s.handle_message(fit(1, &p)),
            Err(SessionError::WrongSchema { .. })
        ));

        let mut s = ClientSession::new(p.schema().hash());
        s.handle_message(fit(3, &p)).unwrap();
        assert!(matches!(
            s.handle_message(fit(2, &p)),
            Err(SessionError::OutOfOrder { round: 2, .. })
        ));
        assert!(matches!(
            s.handle_message(fit(3, &p)),
            Err(SessionError::OutOfOrder { round: 3, .. })
        ));
        assert_eq!(
            s.complete_fit(2, Ok(result(&p))),
            Err(SessionError::NoSuchTask {
                round: 2,
                stage: Stage::Fit
            })
        );
        s.handle_message(ServerMessage::Finished {
            round: 3,
            params: Some(p.clone()),
        })
        .unwrap();
        assert_eq!(s.final_params(), Some(&p));
        assert_eq!(s.handle_message(fit(4, &p)), Err(SessionError::Finished));
    }

    #[test]
    fn a_newer_instruction_supersedes_the_running_task() {
        let p = params(1.0);
        let mut s = ClientSession::new(p.schema().hash());
        s.handle_message(fit(1, &p)).unwrap();
        s.handle_message(fit(2, &p)).unwrap();
        let Some(SessionEvent::Fit(task)) = s.poll_event() else {
            panic!()
        };
        assert_eq!(task.round, 2);
        assert!(s.poll_event().is_none());
        assert!(s.complete_fit(1, Ok(result(&p))).is_err());
        s.complete_fit(2, Ok(result(&p))).unwrap();
    }

    #[test]
    fn trainer_errors_become_failure_messages() {
        let p = params(1.0);
        let mut s = ClientSession::new(p.schema().hash());
        s.handle_message(fit(1, &p)).unwrap();
        let _ = s.poll_event();
        s.complete_fit(1, Err(TrainerError::NoData("train")))
            .unwrap();
        assert!(matches!(
            s.poll_transmit(),
            Some(ClientMessage::Failed {
                round: 1,
                stage: Stage::Fit,
                ..
            })
        ));
    }

    #[test]
    fn secure_uploads_keep_the_step_count_to_themselves() {
        let metrics = crate::round::Metrics::from([
            ("train_loss".to_string(), 0.5),
            (crate::round::LOCAL_STEPS_METRIC.to_string(), 40.0),
        ]);
        let public = public_metrics(&metrics);
        assert_eq!(
            public,
            crate::round::Metrics::from([("train_loss".to_string(), 0.5)])
        );
    }
}
