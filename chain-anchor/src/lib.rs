//! # chain-anchor
//!
//! Anchors daofl checkpoints on an EVM chain so that anyone holding a checkpoint can check it
//! against the chain: which parameters a federation published for a round, from which
//! participants, at which privacy cost, and who published them.
//!
//! ## What it does
//! - **Registry contract** (`contracts/CheckpointRegistry.sol`, Solidity 0.8.28, OpenZeppelin 5):
//!   per federation and round it records the parameter hash (SHA-256 of the canonical parameter
//!   bytes), their CID, the Merkle root of the participants (address and update hash of each),
//!   the ε spent and the aggregator. Only accounts with `AGGREGATOR_ROLE` write, rounds only move
//!   forward, every anchor emits an event. The compiled artifact is committed
//!   (`artifacts/CheckpointRegistry.json`, rebuilt by `node scripts/compile.mjs`), so building this
//!   crate needs no Solidity compiler; [`bindings`] are generated from it.
//! - **[`Anchor`] trait**, two backends:
//!   - [`RpcAnchor`]: any EVM JSON-RPC endpoint (anvil, a testnet, mainnet). The key comes from a
//!     key file or an environment variable ([`KeySource`]), never the command line. Receipts are
//!     awaited with a timeout and report gas; a durable retry queue makes an endpoint outage
//!     delay anchors without losing any, exactly once.
//!   - [`EmbeddedAnchor`]: the same bytecode executed in-process by revm, its state a file in the
//!     run folder: zero setup. **It is an EVM, not a network**: no consensus, no other node; a
//!     verifier must trust whoever holds the state file. Use it for quickstarts, simulations and
//!     tests, and a real chain for anchors third parties rely on.
//!   - [`ChainAnchor`] is either, chosen by a [`ChainConfig`] (`[chain]` of the federation TOML).
//! - **Batching**: [`RoundBatch`] anchors one Merkle root for several consecutive rounds (one
//!   storage record instead of one per round); each round keeps an inclusion proof.
//! - **Merkle trees** in OpenZeppelin's `StandardMerkleTree` convention ([`merkle`],
//!   [`ParticipantsTree`]), accepted by the contract's `MerkleProof` checks.
//! - **Verification**: [`verify`] recomputes a checkpoint's hashes, finds its anchor and returns a
//!   [`Verdict`] (valid, or why not: tampered parameters, wrong round, missing anchor, participant
//!   not included, ...).
//! - **Deployment**: [`deploy_registry`] deploys the registry through an endpoint.
//!
//! ## What it does not do
//! It knows nothing of rounds, models or manifests: the aggregator turns a manifest into a
//! [`CheckpointAnchor`] / [`CheckpointClaim`]. It does not run a node, pay for gas on anyone's
//! behalf, manage nonces across several processes sharing one key, or make an embedded anchor
//! trustworthy to third parties.
//!
//! ## Feature flags
//! - `rpc-tls`: `https://` endpoints (rustls). Plain `http://` (anvil, a local node) needs nothing.
//!
//! ## Example
//! ```no_run
//! use chain_anchor::{
//!     Anchor, CheckpointAnchor, CheckpointClaim, EmbeddedAnchor, FederationId, ParticipantsTree,
//!     epsilon_micros, params_hash, verify,
//! };
//! use alloy::primitives::Address;
//!
//! # async fn run() -> chain_anchor::Result<()> {
//! let anchor = EmbeddedAnchor::open(std::path::Path::new("runs/demo/chain"))?;
//! let params = vec![0u8; 4 * 1000]; // the checkpoint's canonical parameter bytes
//! let members = [(Address::repeat_byte(1), [7u8; 32])];
//! let participants = ParticipantsTree::new(&members)?;
//! let checkpoint = CheckpointAnchor {
//!     federation: FederationId::from_name("demo"),
//!     round: 1,
//!     params_hash: params_hash(&params),
//!     cid: "bafkrei...".into(),
//!     participants_root: participants.root(),
//!     epsilon_micros: epsilon_micros(Some(1.2)),
//! };
//! let receipt = anchor.anchor(&checkpoint).await?;
//! println!("anchored in block {} for {} gas", receipt.block_number, receipt.gas_used);
//!
//! let verdict = verify(&anchor, &CheckpointClaim {
//!     federation: checkpoint.federation,
//!     round: 1,
//!     params: &params,
//!     cid: &checkpoint.cid,
//!     participants: &members,
//!     epsilon_micros: checkpoint.epsilon_micros,
//!     member: Some(members[0]),
//!     batch_proof: None,
//!     from_block: 0,
//! })
//! .await?;
//! assert!(verdict.is_valid());
//! # Ok(())
//! # }
//! ```

mod anchor;
pub mod bindings;
mod config;
mod embedded;
mod error;
mod fsutil;
pub mod merkle;
mod rpc;
mod types;
mod verify;

pub use anchor::{Anchor, ChainAnchor};
pub use config::ChainConfig;
pub use embedded::{
    EMBEDDED_CHAIN_ID, EmbeddedAnchor, EmbeddedEvm, EvmOutcome, STATE_FILE, embedded_aggregator_key,
};
pub use error::{Error, Result, Revert};
pub use merkle::ParticipantsTree;
pub use rpc::{Deployment, KeySource, RetryPolicy, RpcAnchor, RpcSettings, deploy_registry};
pub use types::{
    AnchorEvent, AnchorEventKind, AnchorReceipt, AnchoredCheckpoint, BackendKind, BatchRecord,
    CheckpointAnchor, CheckpointRecord, EPSILON_UNBOUNDED, FederationId, RoundBatch,
    epsilon_micros,
};
pub use verify::{CheckpointClaim, Verdict, params_hash, verify, verify_member};

/// The alloy version this crate's types come from (addresses, hashes), re-exported so callers
/// need not pin it themselves.
pub use alloy;
