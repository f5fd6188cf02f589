//! Messages between the aggregator and a client, as typed values.
//!
//! The transports (the in-process simulation now, gRPC with prost encoding later) only move
//! these between the round engine and the [`ClientSession`](crate::session::ClientSession).
//! Parameters travel as `Arc`s so a broadcast to many in-process clients copies nothing.

use std::sync::Arc;

use crate::params::ParamVec;
use crate::round::{EvaluateConfig, EvaluateResult, FitConfig, RoundConfig, Stage};

/// What the aggregator sends to a client.
#[derive(Debug, Clone, PartialEq)]
pub enum ServerMessage {
    /// Train from `params` and send back the result.
    Fit {
        /// Round, stage and the hashes `params` must have.
        header: RoundConfig,
        /// Global parameters to start from.
        params: Arc<ParamVec>,
        /// Local training settings.
        config: FitConfig,
    },
    /// Evaluate `params` on local data.
    Evaluate {
        /// Round, stage and the hashes `params` must have.
        header: RoundConfig,
        /// Global parameters to evaluate.
        params: Arc<ParamVec>,
        /// Evaluation settings.
        config: EvaluateConfig,
    },
    /// The federation is over; the session may close.
    Finished,
}

/// What a client sends to the aggregator.
#[derive(Debug, Clone, PartialEq)]
pub enum ClientMessage {
    /// Result of local training in `round`.
    FitDone {
        /// Round the result belongs to.
        round: u64,
        /// New local parameters, example count and metrics.
        result: crate::round::FitResult,
    },
    /// The start of a fit result that arrives in pieces (the gRPC transport streams updates):
    /// its weight and metrics. [`FitChunk`](Self::FitChunk)s follow, then
    /// [`FitEnd`](Self::FitEnd).
    FitBegin {
        /// Round the result belongs to.
        round: u64,
        /// Examples trained on (the result's weight).
        num_examples: u64,
        /// Training metrics.
        metrics: crate::round::Metrics,
    },
    /// The next values of a streamed fit result, continuing where the previous piece ended.
    FitChunk {
        /// Round the result belongs to.
        round: u64,
        /// The values, in schema order.
        values: Vec<f32>,
    },
    /// A streamed fit result is complete (the transport checked its content hash).
    FitEnd {
        /// Round the result belongs to.
        round: u64,
    },
    /// Result of evaluation in `round`.
    EvaluateDone {
        /// Round the result belongs to.
        round: u64,
        /// Loss, example count and metrics.
        result: EvaluateResult,
    },
    /// The client could not do what `round`/`stage` asked; it stays in the federation.
    Failed {
        /// Round of the instruction that failed.
        round: u64,
        /// Stage of the instruction that failed.
        stage: Stage,
        /// Human-readable cause, for the aggregator's logs.
        reason: String,
    },
}

impl ClientMessage {
    /// The round this message answers.
    pub fn round(&self) -> u64 {
        match self {
            Self::FitDone { round, .. }
            | Self::FitBegin { round, .. }
            | Self::FitChunk { round, .. }
            | Self::FitEnd { round }
            | Self::EvaluateDone { round, .. }
            | Self::Failed { round, .. } => *round,
        }
    }
}
