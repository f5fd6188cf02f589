//! Messages between the aggregator and a client, as typed values.
//!
//! The transports (the in-process simulation, and gRPC through [`crate::wire`]'s protobuf
//! messages) only move these between the round engine and the
//! [`ClientSession`](crate::session::ClientSession).
//! Parameters travel as `Arc`s so a broadcast to many in-process clients copies nothing.

use std::sync::Arc;

use crate::params::ParamVec;
use crate::round::{EvaluateConfig, EvaluateResult, FitConfig, RoundConfig, Stage, UploadSpec};

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
        /// How to upload the update (privacy, protocol).
        upload: UploadSpec,
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
    /// A step of secure aggregation in the fit stage of `round` (see [`crate::secure`]).
    Secure {
        /// Round of the fit stage.
        round: u64,
        /// Which step the payload belongs to.
        step: SecureServerStep,
        /// The protocol message in `secure-agg`'s bounded binary encoding; one allocation
        /// shared by every recipient of a broadcast.
        payload: Arc<[u8]>,
    },
    /// The federation is over; the session may close. Carries the final global model (after
    /// round `round`), so every member ends with the model the federation produced, not its
    /// own last local one.
    Finished {
        /// The last round that ran.
        round: u64,
        /// The final global parameters (none from a transport that did not deliver them).
        params: Option<Arc<ParamVec>>,
    },
}

/// The aggregator's steps of secure aggregation, in order.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum SecureServerStep {
    /// Every participant's signed public keys: answer with share packets.
    KeyDirectory,
    /// The encrypted key shares addressed to this member: train, then send the masked input.
    Shares,
    /// Who survived and who dropped: answer with the shares that remove their masks.
    Unmask,
    /// (Homomorphic, to a committee member) the aggregate to partially decrypt.
    Decrypt,
}

/// A member's steps of secure aggregation, in order (the masked input is
/// [`ClientMessage::MaskedInput`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum SecureClientStep {
    /// The member's signed public keys for the round.
    Advertisement,
    /// Its key shares, encrypted to each neighbour.
    SharePackets,
    /// The shares the aggregator asked for to unmask the sum.
    UnmaskResponse,
    /// (Homomorphic, from a committee member) its partial decryption of the aggregate.
    PartialDecryption,
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
        /// The member's signed statement of the update (its content hash, round and weight),
        /// checked by the transport; kept with a per-member update as evidence.
        signed: Option<Box<crate::identity::SignedUpdate>>,
    },
    /// The next values of a streamed fit result, continuing where the previous piece ended.
    FitChunk {
        /// Round the result belongs to.
        round: u64,
        /// The values, in schema order.
        values: Vec<f32>,
    },
    /// SCAFFOLD: the next values of the member's control-variate difference `Δcᵢ` (schema
    /// order, continuing where the previous piece ended). A session sends it whole just before
    /// its [`FitDone`](Self::FitDone); the gRPC transport streams it after the update's
    /// [`FitChunk`](Self::FitChunk)s and before [`FitEnd`](Self::FitEnd).
    ControlChunk {
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
    /// A secure-aggregation step of the fit stage of `round`.
    Secure {
        /// Round of the fit stage.
        round: u64,
        /// Which step.
        step: SecureClientStep,
        /// The protocol message in `secure-agg`'s bounded binary encoding.
        payload: Vec<u8>,
    },
    /// The member's masked update (secure aggregation): its weighted, quantised update plus
    /// masks, modulo `2^modulus_bits`. Alone it looks uniformly random.
    MaskedInput {
        /// Round of the fit stage.
        round: u64,
        /// The signed header (length and digest of `values`, bound to the round).
        header: Vec<u8>,
        /// The masked values.
        values: Vec<u32>,
        /// Bits per value (the modulus width), for packing on the wire.
        bits: u32,
        /// Training metrics (sent in the clear, like Flower's).
        metrics: crate::round::Metrics,
    },
    /// The member's update encrypted under the committee's key (homomorphic aggregation,
    /// feature `he`).
    #[cfg(feature = "he")]
    Encrypted {
        /// Round of the fit stage.
        round: u64,
        /// Signed manifest and ciphertext chunks.
        update: crate::secure::he::EncryptedUpdate,
        /// Training metrics (sent in the clear).
        metrics: crate::round::Metrics,
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
            | Self::ControlChunk { round, .. }
            | Self::FitEnd { round }
            | Self::Secure { round, .. }
            | Self::MaskedInput { round, .. }
            | Self::EvaluateDone { round, .. }
            | Self::Failed { round, .. } => *round,
            #[cfg(feature = "he")]
            Self::Encrypted { round, .. } => *round,
        }
    }
}
