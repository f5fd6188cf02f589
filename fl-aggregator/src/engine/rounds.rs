//! The engine's transitions: starting a round, settling and closing the fit stage, the
//! evaluate stage, aborts, and the end of the federation.

use super::*;

impl Engine {
    /// A fit-stage message: handed to the round's collector if the stage waits on `client`.
    pub(super) fn fit_message(
        &mut self,
        client: ClientId,
        msg: ClientMessage,
    ) -> Result<(), EngineError> {
        let round = msg.round();
        let State::Fit(stage) = &mut self.state else {
            return Err(unexpected(client, round, Stage::Fit));
        };
        if stage.round != round || !stage.pending.contains(&client) {
            return Err(unexpected(client, round, Stage::Fit));
        }
        let cx = StageContext {
            round,
            params: &self.params,
            connected: &self.connected,
            min_results: stage.min_results,
            fit_timeout: self.config.fit_timeout,
        };
        let progress = stage
            .collector
            .handle(&cx, client, msg)
            .map_err(|collector::Unexpected| unexpected(client, round, Stage::Fit))?;
        match progress {
            Progress::More => Ok(()),
            Progress::Done => {
                stage.pending.remove(&client);
                stage.collector.forget(client);
                Ok(())
            }
            Progress::Invalid(reason) => {
                stage.pending.remove(&client);
                stage.collector.forget(client);
                stage.dropped += 1;
                self.events.push_back(EngineEvent::ClientDropped {
                    round,
                    stage: Stage::Fit,
                    client,
                    reason: DropReason::InvalidResult(reason.clone()),
                });
                Err(EngineError::InvalidResult { client, reason })
            }
        }
    }

    // ---- transitions ---------------------------------------------------------------------

    pub(super) fn header(&self, stage: Stage) -> RoundConfig {
        RoundConfig {
            round: self.round,
            stage,
            params_hash: self.params_hash,
            schema_hash: self.params.schema().hash(),
        }
    }

    pub(super) fn try_start_round(&mut self, now: Duration) {
        if self.connected.len() < self.config.min_available_clients.max(1) {
            self.state = State::Idle;
            return;
        }
        if let Err(reason) = self.strategy.authorize_round(self.round + 1) {
            self.events.push_back(EngineEvent::Stopped {
                round: self.round + 1,
                reason: std::sync::Arc::new(reason),
            });
            self.finish();
            return;
        }
        self.round += 1;
        let round = self.round;
        let available: Vec<ClientId> = self.connected.iter().copied().collect();
        let round_seed = derive_seed(self.config.seed, "select", round);
        let mut plan = self.strategy.configure_fit(round, &available, round_seed);
        plan.clients.retain(|c| self.connected.contains(c));
        plan.clients.sort_unstable();
        plan.clients.dedup();
        self.events.push_back(EngineEvent::RoundStarted {
            round,
            selected: plan.clients.clone(),
        });
        if plan.clients.is_empty() {
            self.abort_round(now, AbortReason::NoClientsSelected);
            return;
        }
        let form = self.strategy.update_form();
        if form == UpdateForm::PerMember && !self.protocol.per_member() {
            // Refused when the federation file is loaded; an engine assembled by hand gets
            // the same answer here rather than a sum the strategy cannot read.
            self.abort_round(now, AbortReason::PerMemberUnderSecureAggregation);
            return;
        }
        let min_results = plan.min_results.max(1);
        let cx = StageContext {
            round,
            params: &self.params,
            connected: &self.connected,
            min_results,
            fit_timeout: self.config.fit_timeout,
        };
        let started = match self.protocol.start(&cx, &plan, form) {
            Ok(started) => started,
            Err(reason) => {
                self.abort_round(now, reason);
                return;
            }
        };
        let upload = fl_core::UploadSpec {
            privacy: plan.privacy,
            protocol: started.upload,
        };
        let header = self.header(Stage::Fit);
        let shuffle_base = derive_seed(self.config.seed, "shuffle", round);
        for &client in &plan.clients {
            let mut config = plan.config.clone();
            config.shuffle_seed = derive_seed(shuffle_base, "client", client.0);
            self.outbox.push_back((
                client,
                ServerMessage::Fit {
                    header: header.clone(),
                    params: self.params.clone(),
                    config,
                    upload: upload.clone(),
                },
            ));
        }
        self.state = State::Fit(FitStage {
            round,
            pending: plan.clients.iter().copied().collect(),
            collector: started.collector,
            deltas: plan.privacy.is_some(),
            min_results,
            dropped: 0,
            deadline: now + started.timeout,
        });
        // Secure aggregation decodes the sum against the global model, so it stays.
        if self.config.release_params_during_fit
            && !self.strategy.needs_current_params()
            && !self.protocol.reads_params()
        {
            // The instructions in the outbox (and the transport sending them) keep the model
            // alive only as long as they need it. The placeholder's zero pages are never
            // touched, so they take no memory.
            let schema = self.params.schema().clone();
            let model = std::mem::replace(&mut self.params, Arc::new(ParamVec::zeros(schema)));
            self.released = Some(Arc::downgrade(&model));
        }
    }

    pub(super) fn drop_pending(&mut self, client: ClientId, reason: DropReason) {
        let (round, stage) = match &mut self.state {
            State::Fit(s) => {
                if !s.pending.remove(&client) {
                    return;
                }
                s.collector.forget(client);
                s.dropped += 1;
                (s.round, Stage::Fit)
            }
            State::Evaluate(s) => {
                if !s.pending.remove(&client) {
                    return;
                }
                (s.round, Stage::Evaluate)
            }
            _ => return,
        };
        self.events.push_back(EngineEvent::ClientDropped {
            round,
            stage,
            client,
            reason,
        });
    }

    pub(super) fn maybe_close_stage(&mut self, now: Duration) {
        let done = match &self.state {
            State::Fit(s) => s.pending.is_empty(),
            State::Evaluate(s) => s.pending.is_empty(),
            _ => false,
        };
        if !done {
            return;
        }
        match std::mem::replace(&mut self.state, State::Idle) {
            State::Fit(stage) => self.close_step(now, stage),
            State::Evaluate(stage) => self.close_evaluate(now, stage),
            other => self.state = other,
        }
    }

    /// The fit stage's current step is over: the collector sends the next step's messages,
    /// hands over the round's updates, or aborts the round.
    fn close_step(&mut self, now: Duration, mut stage: FitStage) {
        let cx = StageContext {
            round: stage.round,
            params: &self.params,
            connected: &self.connected,
            min_results: stage.min_results,
            fit_timeout: self.config.fit_timeout,
        };
        match stage.collector.close_step(&cx) {
            Next::Step {
                collector,
                messages,
                pending,
                timeout,
            } => {
                self.outbox.extend(messages);
                stage.collector = collector;
                stage.pending = pending;
                stage.deadline = now + timeout;
                self.state = State::Fit(stage);
                // Nobody left to wait for (e.g. every member dropped): close at once.
                self.maybe_close_stage(now);
            }
            Next::Done(updates) => {
                let closed = ClosedFit {
                    round: stage.round,
                    min_results: stage.min_results,
                    dropped: stage.dropped,
                    deltas: stage.deltas,
                };
                self.close_fit(now, closed, updates);
            }
            Next::Abort(reason) => self.abort_round(now, reason),
        }
    }

    fn close_fit(&mut self, now: Duration, stage: ClosedFit, updates: Collected) {
        let round = stage.round;
        if updates.count() < stage.min_results {
            let reason = AbortReason::TooFewResults {
                arrived: updates.count(),
                required: stage.min_results,
            };
            self.abort_round(now, reason);
            return;
        }
        let num_results = updates.count();
        let num_partial = updates.partial();
        let updates = updates.into_updates(stage.deltas);
        let mut metrics = updates.mean_metrics();
        match self.strategy.aggregate_fit(round, &self.params, updates) {
            Ok(next)
                if next.all_finite() && next.schema().hash() == self.params.schema().hash() =>
            {
                metrics.extend(self.strategy.round_metrics());
                let findings = self.strategy.take_findings().map(Arc::new);
                self.params_hash = next.content_hash();
                self.params = Arc::new(next);
                self.released = None;
                self.events.push_back(EngineEvent::FitAggregated {
                    round,
                    params: self.params.clone(),
                    num_results,
                    num_partial,
                    num_dropped: stage.dropped,
                    metrics,
                    findings,
                    strategy_state: self.strategy.strategy_state(),
                });
            }
            Ok(_) => {
                self.abort_round(now, AbortReason::InvalidModel);
                return;
            }
            Err(e) => {
                self.abort_round(now, AbortReason::Aggregation(e));
                return;
            }
        }
        let available: Vec<ClientId> = self.connected.iter().copied().collect();
        let round_seed = derive_seed(self.config.seed, "evaluate", round);
        let mut plan = self
            .strategy
            .configure_evaluate(round, &available, round_seed);
        plan.clients.retain(|c| self.connected.contains(c));
        plan.clients.sort_unstable();
        plan.clients.dedup();
        if plan.clients.is_empty() {
            self.complete_round(now);
            return;
        }
        let header = self.header(Stage::Evaluate);
        for &client in &plan.clients {
            self.outbox.push_back((
                client,
                ServerMessage::Evaluate {
                    header: header.clone(),
                    params: self.params.clone(),
                    config: plan.config.clone(),
                },
            ));
        }
        self.state = State::Evaluate(EvaluateStage {
            round,
            pending: plan.clients.into_iter().collect(),
            results: Vec::new(),
            deadline: now + self.config.evaluate_timeout,
        });
    }

    pub(super) fn close_evaluate(&mut self, now: Duration, stage: EvaluateStage) {
        if let Some(result) = self
            .strategy
            .aggregate_evaluate(stage.round, &stage.results)
        {
            self.events.push_back(EngineEvent::Evaluated {
                round: stage.round,
                result,
            });
        }
        self.complete_round(now);
    }

    pub(super) fn abort_round(&mut self, now: Duration, reason: AbortReason) {
        self.events.push_back(EngineEvent::RoundAborted {
            round: self.round,
            reason,
        });
        if let Some(weak) = self.released.take() {
            match weak.upgrade() {
                Some(params) => self.params = params,
                None => {
                    self.state = State::WaitingForParams;
                    self.events.push_back(EngineEvent::ParamsNeeded {
                        hash: self.params_hash,
                    });
                    return;
                }
            }
        }
        self.complete_round(now);
    }

    /// Gives back the global model after [`EngineEvent::ParamsNeeded`]; the federation goes on.
    ///
    /// # Errors
    /// [`ParamsRefused::NotWaiting`] when no parameters are needed,
    /// [`ParamsRefused::WrongHash`] for parameters with another content hash. Either way the
    /// engine is unchanged.
    pub fn handle_params(&mut self, now: Duration, params: ParamVec) -> Result<(), ParamsRefused> {
        if !matches!(self.state, State::WaitingForParams) {
            return Err(ParamsRefused::NotWaiting);
        }
        let got = params.content_hash();
        if got != self.params_hash {
            return Err(ParamsRefused::WrongHash {
                expected: self.params_hash,
                got,
            });
        }
        self.params = Arc::new(params);
        self.state = State::Idle;
        self.complete_round(now);
        Ok(())
    }

    /// The hash of the global model the engine waits for, if it does.
    pub fn params_needed(&self) -> Option<ContentHash> {
        matches!(self.state, State::WaitingForParams).then_some(self.params_hash)
    }

    pub(super) fn complete_round(&mut self, now: Duration) {
        self.events.push_back(EngineEvent::RoundCompleted {
            round: self.round,
            params: self.params.clone(),
        });
        if self.round >= self.config.num_rounds {
            self.finish();
        } else {
            self.try_start_round(now);
        }
    }

    /// What a member hears when the federation is over: the final model with it.
    pub(super) fn finished_message(&self) -> ServerMessage {
        ServerMessage::Finished {
            round: self.round,
            params: Some(self.params.clone()),
        }
    }

    pub(super) fn finish(&mut self) {
        self.state = State::Finished;
        for &client in &self.connected {
            self.outbox.push_back((client, self.finished_message()));
        }
        self.events.push_back(EngineEvent::Finished {
            params: self.params.clone(),
        });
    }
}

/// What aggregating a closed fit stage needs of it.
struct ClosedFit {
    round: u64,
    min_results: usize,
    dropped: usize,
    deltas: bool,
}
