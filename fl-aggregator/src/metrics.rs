//! The aggregator's Prometheus metrics and the `/metrics` endpoint that serves them.
//!
//! | metric | kind | meaning |
//! |---|---|---|
//! | `daofl_round` | gauge | the round in progress (or last completed) |
//! | `daofl_rounds_completed_total` | counter | rounds that aggregated |
//! | `daofl_rounds_aborted_total{reason}` | counter | rounds that ended with the model unchanged, by [`AbortReason::label`] |
//! | `daofl_round_duration_seconds` | histogram | wall time of a round, start to completion |
//! | `daofl_connected_clients` | gauge | members with an authenticated session |
//! | `daofl_dropped_clients_total` | counter | members dropped from a stage (deadline, failure, disconnect, bad result) |
//! | `daofl_sessions_refused_total` | counter | sessions refused (identity, limits, protocol) |
//! | `daofl_received_bytes_total` | counter | parameter bytes received in update chunks |
//! | `daofl_sent_bytes_total` | counter | parameter bytes sent in instruction chunks |

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Instant;

use prometheus_client::encoding::text::encode;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::Registry;

use crate::engine::{AbortReason, EngineEvent};

/// The label set of `daofl_rounds_aborted_total`.
type ReasonLabel = Vec<(&'static str, &'static str)>;

/// Counters and gauges of one aggregator; cheap to update from any task.
pub struct AggregatorMetrics {
    registry: Registry,
    round: Gauge,
    rounds_completed: Counter,
    rounds_aborted: Family<ReasonLabel, Counter>,
    round_duration: Histogram,
    connected: Gauge,
    dropped: Counter,
    refused: Counter,
    received: Counter,
    sent: Counter,
    round_started: Mutex<Option<Instant>>,
}

impl std::fmt::Debug for AggregatorMetrics {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AggregatorMetrics").finish_non_exhaustive()
    }
}

impl Default for AggregatorMetrics {
    fn default() -> Self {
        Self::new()
    }
}

impl AggregatorMetrics {
    /// Fresh metrics, registered under the `daofl_` prefix.
    pub fn new() -> Self {
        let mut registry = Registry::with_prefix("daofl");
        let round = Gauge::default();
        let rounds_completed = Counter::default();
        let rounds_aborted = Family::<ReasonLabel, Counter>::default();
        // Every reason is published from the start (at 0), so a dashboard's rate() works.
        for label in AbortReason::LABELS {
            let _ = rounds_aborted.get_or_create(&vec![("reason", label)]);
        }
        let round_duration = Histogram::new(exponential_buckets(0.01, 2.0, 20));
        let connected = Gauge::default();
        let dropped = Counter::default();
        let refused = Counter::default();
        let received = Counter::default();
        let sent = Counter::default();
        registry.register("round", "The round in progress", round.clone());
        registry.register(
            "rounds_completed",
            "Rounds that aggregated",
            rounds_completed.clone(),
        );
        registry.register(
            "rounds_aborted",
            "Rounds that ended with the model unchanged",
            rounds_aborted.clone(),
        );
        registry.register(
            "round_duration_seconds",
            "Wall time of a round",
            round_duration.clone(),
        );
        registry.register(
            "connected_clients",
            "Members with an authenticated session",
            connected.clone(),
        );
        registry.register(
            "dropped_clients",
            "Members dropped from a stage",
            dropped.clone(),
        );
        registry.register("sessions_refused", "Sessions refused", refused.clone());
        registry.register(
            "received_bytes",
            "Parameter bytes received in update chunks",
            received.clone(),
        );
        registry.register(
            "sent_bytes",
            "Parameter bytes sent in instruction chunks",
            sent.clone(),
        );
        Self {
            registry,
            round,
            rounds_completed,
            rounds_aborted,
            round_duration,
            connected,
            dropped,
            refused,
            received,
            sent,
            round_started: Mutex::new(None),
        }
    }

    /// Records an engine event.
    pub fn observe(&self, event: &EngineEvent) {
        match event {
            EngineEvent::RoundStarted { round, .. } => {
                self.round.set(*round as i64);
                *self.round_started.lock().unwrap_or_else(|e| e.into_inner()) =
                    Some(Instant::now());
            }
            EngineEvent::ClientDropped { .. } => {
                self.dropped.inc();
            }
            EngineEvent::FitAggregated { .. } => {
                self.rounds_completed.inc();
            }
            EngineEvent::RoundAborted { reason, .. } => {
                self.rounds_aborted
                    .get_or_create(&vec![("reason", reason.label())])
                    .inc();
            }
            EngineEvent::RoundCompleted { .. } => {
                if let Some(t) = self
                    .round_started
                    .lock()
                    .unwrap_or_else(|e| e.into_inner())
                    .take()
                {
                    self.round_duration.observe(t.elapsed().as_secs_f64());
                }
            }
            EngineEvent::Evaluated { .. }
            | EngineEvent::ParamsNeeded { .. }
            | EngineEvent::Stopped { .. }
            | EngineEvent::Finished { .. } => {}
        }
    }

    /// A member's session was authenticated (`+1`) or ended (`-1`).
    pub fn session_delta(&self, delta: i64) {
        self.connected.inc_by(delta);
    }

    /// A session was refused.
    pub fn session_refused(&self) {
        self.refused.inc();
    }

    /// Parameter bytes received.
    pub fn received(&self, bytes: usize) {
        self.received.inc_by(bytes as u64);
    }

    /// Parameter bytes sent.
    pub fn sent(&self, bytes: usize) {
        self.sent.inc_by(bytes as u64);
    }

    /// The current values of one counter or gauge by its exposition name, for tests and logs.
    pub fn value(&self, name: &str) -> Option<f64> {
        let text = self.encode();
        text.lines().filter(|l| !l.starts_with('#')).find_map(|l| {
            let (k, v) = l.split_once(' ')?;
            (k == name).then(|| v.parse().ok()).flatten()
        })
    }

    /// The Prometheus text exposition of every metric.
    pub fn encode(&self) -> String {
        let mut out = String::new();
        // Writing into a String cannot fail.
        let _ = encode(&mut out, &self.registry);
        out
    }
}

/// Serves `GET /metrics` on `addr` until `shutdown` resolves.
pub async fn serve(
    addr: SocketAddr,
    metrics: Arc<AggregatorMetrics>,
    shutdown: impl std::future::Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    use axum::http::header::CONTENT_TYPE;
    use axum::routing::get;
    let app = axum::Router::new().route(
        "/metrics",
        get(move || {
            let metrics = metrics.clone();
            async move {
                (
                    [(
                        CONTENT_TYPE,
                        "application/openmetrics-text; version=1.0.0; charset=utf-8",
                    )],
                    metrics.encode(),
                )
            }
        }),
    );
    let listener = tokio::net::TcpListener::bind(addr).await?;
    tracing::info!("metrics on http://{}/metrics", listener.local_addr()?);
    axum::serve(listener, app)
        .with_graceful_shutdown(shutdown)
        .await
}

#[cfg(test)]
mod tests {
    use super::*;
    use fl_core::{ClientId, Stage};

    #[test]
    fn events_move_the_counters() {
        let m = AggregatorMetrics::new();
        m.observe(&EngineEvent::RoundStarted {
            round: 3,
            selected: vec![ClientId(0)],
        });
        m.observe(&EngineEvent::ClientDropped {
            round: 3,
            stage: Stage::Fit,
            client: ClientId(0),
            reason: crate::engine::DropReason::Deadline,
        });
        m.observe(&EngineEvent::RoundAborted {
            round: 3,
            reason: AbortReason::TooFewResults {
                arrived: 1,
                required: 2,
            },
        });
        m.session_delta(2);
        m.session_delta(-1);
        m.received(100);
        m.sent(40);
        m.session_refused();
        assert_eq!(m.value("daofl_round"), Some(3.0));
        assert_eq!(m.value("daofl_dropped_clients_total"), Some(1.0));
        assert_eq!(
            m.value("daofl_rounds_aborted_total{reason=\"too_few_results\"}"),
            Some(1.0)
        );
        assert_eq!(
            m.value("daofl_rounds_aborted_total{reason=\"secure_aggregation\"}"),
            Some(0.0)
        );
        assert_eq!(m.value("daofl_connected_clients"), Some(1.0));
        assert_eq!(m.value("daofl_received_bytes_total"), Some(100.0));
        assert_eq!(m.value("daofl_sent_bytes_total"), Some(40.0));
        assert_eq!(m.value("daofl_sessions_refused_total"), Some(1.0));
        assert!(m.encode().contains("# HELP daofl_round_duration_seconds"));
    }
}
