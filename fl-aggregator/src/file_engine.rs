//! The engine a federation file asks for: synchronous rounds ([`Engine`]) or, with `[fedbuff]`,
//! buffered asynchronous aggregation ([`FedBuffServer`]) whose steps are reported as rounds, so
//! that [`crate::server`] checkpoints, anchors and meters both the same way.
//!
//! Each FedBuff step `v` becomes `RoundStarted { round: v, selected: its contributors }`,
//! `FitAggregated { round: v, .. }` (metrics `fedbuff_results`, `fedbuff_staleness_mean` and
//! `fedbuff_staleness_max`) and `RoundCompleted { round: v, .. }`; a dropped result becomes
//! `ClientDropped` of the next step, and the end `Finished`.

use std::collections::VecDeque;
use std::sync::Arc;
use std::time::Duration;

use fl_core::{ClientId, ClientMessage, Metrics, ParamVec, ServerMessage, Stage};

use crate::engine::{DropReason, Engine, EngineError, EngineEvent};
use crate::fedbuff::{FedBuffConfig, FedBuffEngine, FedBuffError, FedBuffEvent, FedBuffServer};
use crate::service::ServedEngine;

/// Synchronous rounds or FedBuff, as the federation file says.
pub enum FileEngine {
    /// The round engine.
    Rounds(Engine),
    /// FedBuff, with its events translated into rounds.
    Buffered {
        /// The buffered server.
        server: FedBuffServer,
        /// Translated events not yet polled.
        events: VecDeque<EngineEvent>,
    },
}

impl FileEngine {
    /// FedBuff from `[fedbuff]` and the strategy's local training settings, starting from
    /// `params` at `version` (0 for a new federation, a checkpoint's round on resume).
    pub fn buffered(
        config: &fl_core::config::FederationConfig,
        params: ParamVec,
        version: u64,
    ) -> Result<Self, FedBuffError> {
        let section = config.fedbuff.as_ref().ok_or_else(|| {
            FedBuffError::Config("the federation file has no [fedbuff] section".into())
        })?;
        let mut fit = config.strategy.fit.clone();
        fit.proximal_mu = config.strategy.proximal_mu;
        let fedbuff = FedBuffConfig {
            buffer_size: section.buffer_size,
            max_staleness: section.max_staleness,
            server_learning_rate: section.server_learning_rate,
            num_updates: config.federation.rounds,
            fit,
        };
        let engine = FedBuffEngine::resume(fedbuff, params, version)?;
        Ok(Self::Buffered {
            server: FedBuffServer::new(engine),
            events: VecDeque::new(),
        })
    }
}

/// The distinct members of `contributors`, in first-contribution order.
fn distinct(contributors: &[ClientId]) -> Vec<ClientId> {
    let mut out: Vec<ClientId> = Vec::with_capacity(contributors.len());
    for c in contributors {
        if !out.contains(c) {
            out.push(*c);
        }
    }
    out
}

/// `event` told as rounds.
fn as_rounds(event: FedBuffEvent, next_version: u64, params: &Arc<ParamVec>) -> Vec<EngineEvent> {
    match event {
        FedBuffEvent::Applied {
            version,
            params,
            staleness,
            contributors,
        } => {
            let max = staleness.iter().copied().max().unwrap_or(0);
            let mean = staleness.iter().sum::<u64>() as f64 / staleness.len().max(1) as f64;
            let metrics = Metrics::from([
                ("fedbuff_results".to_string(), staleness.len() as f64),
                ("fedbuff_staleness_mean".to_string(), mean),
                ("fedbuff_staleness_max".to_string(), max as f64),
            ]);
            vec![
                EngineEvent::RoundStarted {
                    round: version,
                    selected: distinct(&contributors),
                },
                EngineEvent::FitAggregated {
                    round: version,
                    params: Arc::clone(&params),
                    num_results: staleness.len(),
                    num_partial: 0,
                    num_dropped: 0,
                    metrics,
                    findings: None,
                    strategy_state: None,
                },
                EngineEvent::RoundCompleted {
                    round: version,
                    params,
                },
            ]
        }
        FedBuffEvent::Dropped { client, reason, .. } => vec![EngineEvent::ClientDropped {
            round: next_version,
            stage: Stage::Fit,
            client,
            reason: DropReason::InvalidResult(reason),
        }],
        FedBuffEvent::Finished { .. } => vec![EngineEvent::Finished {
            params: Arc::clone(params),
        }],
    }
}

impl ServedEngine for FileEngine {
    type Event = EngineEvent;

    fn params(&self) -> &Arc<ParamVec> {
        match self {
            Self::Rounds(e) => e.params(),
            Self::Buffered { server, .. } => server.params(),
        }
    }
    fn round(&self) -> u64 {
        match self {
            Self::Rounds(e) => e.round(),
            Self::Buffered { server, .. } => server.round(),
        }
    }
    fn is_finished(&self) -> bool {
        match self {
            Self::Rounds(e) => e.is_finished(),
            // Not before its last steps' events are out.
            Self::Buffered { server, events } => server.is_finished() && events.is_empty(),
        }
    }
    fn handle_connect(&mut self, now: Duration, client: ClientId) {
        match self {
            Self::Rounds(e) => e.handle_connect(now, client),
            Self::Buffered { server, .. } => server.handle_connect(now, client),
        }
    }
    fn handle_disconnect(&mut self, now: Duration, client: ClientId) {
        match self {
            Self::Rounds(e) => e.handle_disconnect(now, client),
            Self::Buffered { server, .. } => server.handle_disconnect(now, client),
        }
    }
    fn handle_message(
        &mut self,
        now: Duration,
        client: ClientId,
        msg: ClientMessage,
    ) -> Result<(), EngineError> {
        match self {
            Self::Rounds(e) => e.handle_message(now, client, msg),
            Self::Buffered { server, .. } => server.handle_message(now, client, msg),
        }
    }
    fn poll_timeout(&self) -> Option<Duration> {
        match self {
            Self::Rounds(e) => e.poll_timeout(),
            Self::Buffered { .. } => None,
        }
    }
    fn handle_timeout(&mut self, now: Duration) {
        if let Self::Rounds(e) = self {
            e.handle_timeout(now);
        }
    }
    fn poll_transmit(&mut self) -> Option<(ClientId, ServerMessage)> {
        match self {
            Self::Rounds(e) => e.poll_transmit(),
            Self::Buffered { server, .. } => server.poll_transmit(),
        }
    }
    fn poll_event(&mut self) -> Option<EngineEvent> {
        match self {
            Self::Rounds(e) => e.poll_event(),
            Self::Buffered { server, events } => {
                while events.is_empty() {
                    let event = server.poll_event()?;
                    let next = server.round() + 1;
                    let params = Arc::clone(server.params());
                    events.extend(as_rounds(event, next, &params));
                }
                events.pop_front()
            }
        }
    }
    fn ends_round(event: &EngineEvent) -> bool {
        Engine::ends_round(event)
    }
    fn params_needed(&self) -> Option<fl_core::ContentHash> {
        match self {
            Self::Rounds(e) => ServedEngine::params_needed(e),
            Self::Buffered { .. } => None,
        }
    }
    fn handle_params(&mut self, now: Duration, params: ParamVec) -> Result<(), String> {
        match self {
            Self::Rounds(e) => ServedEngine::handle_params(e, now, params),
            Self::Buffered { server, .. } => server.handle_params(now, params),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_step_is_told_as_a_round_with_its_distinct_contributors() {
        let schema =
            Arc::new(fl_core::Schema::new(vec![fl_core::TensorSpec::new("w", [1])]).unwrap());
        let params = Arc::new(ParamVec::zeros(schema));
        let events = as_rounds(
            FedBuffEvent::Applied {
                version: 3,
                params: Arc::clone(&params),
                staleness: vec![0, 2, 1],
                contributors: vec![ClientId(4), ClientId(1), ClientId(4)],
            },
            4,
            &params,
        );
        assert!(matches!(
            &events[0],
            EngineEvent::RoundStarted { round: 3, selected } if selected == &[ClientId(4), ClientId(1)]
        ));
        let EngineEvent::FitAggregated {
            round: 3,
            num_results: 3,
            metrics,
            ..
        } = &events[1]
        else {
            panic!("{events:?}")
        };
        assert_eq!(metrics["fedbuff_staleness_mean"], 1.0);
        assert_eq!(metrics["fedbuff_staleness_max"], 2.0);
        assert!(matches!(
            events[2],
            EngineEvent::RoundCompleted { round: 3, .. }
        ));
        let dropped = as_rounds(
            FedBuffEvent::Dropped {
                client: ClientId(2),
                version: 1,
                reason: "stale: too old".into(),
            },
            4,
            &params,
        );
        assert!(matches!(
            &dropped[0],
            EngineEvent::ClientDropped { round: 4, client: ClientId(2), reason: DropReason::InvalidResult(r), .. } if r.contains("stale")
        ));
    }
}
