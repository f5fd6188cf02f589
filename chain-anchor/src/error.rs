//! The crate's error type.

use std::path::PathBuf;
use std::time::Duration;

use alloy::primitives::{Address, B256, Bytes};

use crate::bindings::CheckpointRegistry::CheckpointRegistryErrors;
use crate::types::{AnchoredCheckpoint, FederationId};

/// Everything that can go wrong while anchoring, reading or verifying.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// The JSON-RPC endpoint failed or could not be reached; queued anchors stay queued and are
    /// sent by the next [`anchor`](crate::Anchor::anchor) or [`RpcAnchor::flush`](crate::RpcAnchor::flush).
    #[error("JSON-RPC endpoint {url}: {during}: {message}")]
    Rpc {
        /// The endpoint.
        url: String,
        /// What was being done.
        during: &'static str,
        /// The transport's message.
        message: String,
    },
    /// A transaction was sent but no receipt came within the timeout; it stays queued and is
    /// checked on chain before any resend.
    #[error("no receipt for transaction {tx_hash} after {waited:?}; the anchor stays queued")]
    ReceiptTimeout {
        /// The transaction.
        tx_hash: B256,
        /// How long the receipt was awaited.
        waited: Duration,
    },
    /// The registry refused the anchor (the decoded contract error).
    #[error("the registry reverted: {0}")]
    Reverted(Revert),
    /// The round is already anchored with different data: a second, conflicting checkpoint for
    /// the same round (the queued anchor is moved to the queue's `rejected/` folder).
    #[error("round {round} of federation {federation} is already anchored with different data")]
    Conflict {
        /// The federation.
        federation: FederationId,
        /// The round.
        round: u64,
        /// What the registry holds.
        anchored: Box<AnchoredCheckpoint>,
    },
    /// No registry contract at the configured address (no code, or not a checkpoint registry).
    #[error("no checkpoint registry at {address}: {reason}")]
    NoRegistry {
        /// The address.
        address: Address,
        /// What was found instead.
        reason: String,
    },
    /// The signing key could not be loaded.
    #[error("signing key from {source_name}: {reason}")]
    Key {
        /// Where it was read from (a file path or `env:NAME`; never the key).
        source_name: String,
        /// Why it was refused.
        reason: String,
    },
    /// A file or folder of the retry queue or of the embedded state could not be used.
    #[error("{}: {source}", path.display())]
    Io {
        /// The file or folder.
        path: PathBuf,
        /// The OS error.
        source: std::io::Error,
    },
    /// A file exists but its content is not what this crate wrote (a queue entry or the
    /// embedded state); it is left untouched.
    #[error("{}: {reason}", path.display())]
    Corrupt {
        /// The file.
        path: PathBuf,
        /// What is wrong with it.
        reason: String,
    },
    /// The embedded EVM failed to execute a call (not a revert: an internal failure).
    #[error("embedded EVM: {0}")]
    Evm(String),
    /// The endpoint answered with something that does not decode as expected.
    #[error("malformed answer from the chain: {0}")]
    MalformedResponse(String),
    /// The caller passed something unusable (a duplicated participant, an empty batch, ...).
    #[error("invalid input: {0}")]
    InvalidInput(String),
    /// The configuration is incomplete or contradictory.
    #[error("chain configuration: {0}")]
    Config(String),
}

/// A registry revert, decoded.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum Revert {
    /// The sender does not hold `AGGREGATOR_ROLE` (or the admin role for grants).
    #[error("{account} is not an authorised aggregator")]
    Unauthorized {
        /// The sender.
        account: Address,
    },
    /// The round is not above the last anchored round of the federation.
    #[error("round {given} is not above the last anchored round {last}")]
    RoundNotIncreasing {
        /// The last anchored round.
        last: u64,
        /// The round given.
        given: u64,
    },
    /// A batch whose last round is below its first.
    #[error("invalid batch range {first}..={last}")]
    InvalidBatchRange {
        /// First round.
        first: u64,
        /// Last round.
        last: u64,
    },
    /// A zero parameter hash or batch root.
    #[error("zero hash")]
    ZeroHash,
    /// A revert this crate does not know (raw revert data; empty for an out-of-gas or a halt).
    #[error("revert data {0}")]
    Other(Bytes),
}

impl Revert {
    /// Decodes revert data returned by the registry.
    pub fn decode(data: &[u8]) -> Self {
        use alloy::sol_types::SolInterface;
        match CheckpointRegistryErrors::abi_decode(data) {
            Ok(CheckpointRegistryErrors::AccessControlUnauthorizedAccount(e)) => {
                Self::Unauthorized { account: e.account }
            }
            Ok(CheckpointRegistryErrors::RoundNotIncreasing(e)) => Self::RoundNotIncreasing {
                last: e.last,
                given: e.given,
            },
            Ok(CheckpointRegistryErrors::InvalidBatchRange(e)) => Self::InvalidBatchRange {
                first: e.firstRound,
                last: e.lastRound,
            },
            Ok(CheckpointRegistryErrors::ZeroHash(_)) => Self::ZeroHash,
            _ => Self::Other(Bytes::copy_from_slice(data)),
        }
    }
}

/// The crate's result type.
pub type Result<T, E = Error> = std::result::Result<T, E>;
