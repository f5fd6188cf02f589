//! How a fit stage collects the round's updates, behind two small traits the engine drives
//! without knowing which protocol runs (the connection/crypto-session split of quinn-proto):
//!
//! - an [`UpdateProtocol`], one per engine (plain, SecAgg+ in [`secure`](super::secure),
//!   homomorphic in [`he`](super::he)), starts a round's [`Collector`] and says what members
//!   are told ([`UploadProtocol`]);
//! - the [`Collector`] takes the stage's messages from the clients the stage waits on, and when
//!   every one answered or the deadline passed, closes its step: it sends the next step's
//!   messages, or hands over the round's updates ([`Collected`]), or a typed abort reason.
//!
//! The engine keeps the bookkeeping every protocol shares: who is still owed an answer, who
//! dropped out and why, deadlines, and the events operators see.

use std::collections::BTreeSet;
use std::sync::Arc;
use std::time::Duration;

use fl_core::{
    ClientId, ClientMessage, FitPlan, ParamVec, ServerMessage, UpdateForm, UploadProtocol,
};

use super::AbortReason;
use super::collect::Collected;

/// What a protocol may read of the engine while it runs a stage.
pub(super) struct StageContext<'a> {
    /// The round.
    pub round: u64,
    /// The global model the round started from.
    pub params: &'a Arc<ParamVec>,
    /// Clients connected now.
    pub connected: &'a BTreeSet<ClientId>,
    /// Fewer complete updates than this abort the round.
    pub min_results: usize,
    /// Time members have to train and upload.
    pub fit_timeout: Duration,
}

/// A started fit stage: its collector, what members are told, and the first step's deadline.
pub(super) struct Started {
    pub collector: Box<dyn Collector>,
    pub upload: UploadProtocol,
    pub timeout: Duration,
}

/// How the members of a federation upload their updates; starts one [`Collector`] per round.
pub(super) trait UpdateProtocol: Send {
    /// Whether the protocol can hand each member's update to the strategy (plain uploads), or
    /// only their sum (secure aggregation).
    fn per_member(&self) -> bool;

    /// Whether closing a stage reads the global model (a secure sum is decoded against it): the
    /// engine then keeps the model in memory while updates arrive.
    fn reads_params(&self) -> bool;

    /// Starts the fit stage of `cx.round` for the plan's clients, in the strategy's `form`.
    fn start(
        &self,
        cx: &StageContext<'_>,
        plan: &FitPlan,
        form: UpdateForm,
    ) -> Result<Started, AbortReason>;
}

/// Where a client stands after a message.
#[derive(Debug, PartialEq)]
pub(super) enum Progress {
    /// More messages are due from it in this step.
    More,
    /// It completed its part of the current step.
    Done,
    /// Its message was invalid: it is dropped from the round, for this reason.
    Invalid(String),
}

/// A message that does not belong to the current step: refused, the round untouched.
#[derive(Debug, PartialEq)]
pub(super) struct Unexpected;

/// What closing a step leads to.
pub(super) enum Next {
    /// Another step: send `messages`, wait on `pending` for `timeout`.
    Step {
        collector: Box<dyn Collector>,
        messages: Vec<(ClientId, ServerMessage)>,
        pending: BTreeSet<ClientId>,
        timeout: Duration,
    },
    /// The round's updates, for the strategy.
    Done(Collected),
    /// The round cannot aggregate.
    Abort(AbortReason),
}

/// One fit stage's side of an update protocol.
pub(super) trait Collector: Send {
    /// Takes `msg` from `client`, whom the current step waits on.
    fn handle(
        &mut self,
        cx: &StageContext<'_>,
        client: ClientId,
        msg: ClientMessage,
    ) -> Result<Progress, Unexpected>;

    /// `client` left the round (dropped, failed or late): forget what it left unfinished.
    fn forget(&mut self, client: ClientId);

    /// Every client of the step answered or its deadline passed.
    fn close_step(self: Box<Self>, cx: &StageContext<'_>) -> Next;
}

/// Updates in the clear, each checked and folded in as it arrives (whole or in chunks).
pub(super) struct Plain;

impl UpdateProtocol for Plain {
    fn per_member(&self) -> bool {
        true
    }

    fn reads_params(&self) -> bool {
        false
    }

    fn start(
        &self,
        cx: &StageContext<'_>,
        plan: &FitPlan,
        form: UpdateForm,
    ) -> Result<Started, AbortReason> {
        if plan
            .privacy
            .is_some_and(|p| p.distributed_noise_multiplier > 0.0)
        {
            // The distributed mechanism's noise is added inside secure aggregation: without it
            // members would send un-noised updates.
            return Err(AbortReason::DistributedDpWithoutSecureAggregation);
        }
        Ok(Started {
            collector: Box::new(PlainCollector(
                Collected::new(cx.params.schema().clone(), form)
                    .requiring_control(plan.config.scaffold.is_some()),
            )),
            upload: UploadProtocol::Plain,
            timeout: cx.fit_timeout,
        })
    }
}

struct PlainCollector(Collected);

impl Collector for PlainCollector {
    fn handle(
        &mut self,
        _cx: &StageContext<'_>,
        client: ClientId,
        msg: ClientMessage,
    ) -> Result<Progress, Unexpected> {
        let updates = &mut self.0;
        let outcome = match msg {
            ClientMessage::FitDone { result, .. } if !updates.is_streaming(client) => {
                updates.add(client, &result.params, result.num_examples, &result.metrics)
            }
            ClientMessage::FitBegin {
                num_examples,
                metrics,
                signed,
                ..
            } if !updates.is_streaming(client) => {
                return Ok(match updates.begin(client, num_examples, metrics, signed) {
                    Ok(()) => Progress::More,
                    Err(e) => Progress::Invalid(e.to_string()),
                });
            }
            ClientMessage::FitChunk { values, .. } => {
                return match updates.extend(client, &values).ok_or(Unexpected)? {
                    Ok(()) => Ok(Progress::More),
                    Err(e) => Ok(Progress::Invalid(e.to_string())),
                };
            }
            ClientMessage::ControlChunk { values, .. } => {
                return Ok(match updates.extend_control(client, &values) {
                    Ok(()) => Progress::More,
                    Err(e) => Progress::Invalid(e.to_string()),
                });
            }
            ClientMessage::FitEnd { .. } => updates.complete(client).ok_or(Unexpected)?,
            _ => return Err(Unexpected),
        };
        Ok(match outcome {
            Ok(()) => Progress::Done,
            Err(e) => Progress::Invalid(e.to_string()),
        })
    }

    fn forget(&mut self, client: ClientId) {
        self.0.forget(client);
    }

    fn close_step(self: Box<Self>, _cx: &StageContext<'_>) -> Next {
        Next::Done(self.0)
    }
}
