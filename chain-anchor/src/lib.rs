//! # chain-anchor
//!
//! Anchoring of daofl checkpoints on an EVM chain. This crate will hold, once its issue lands:
//! the Solidity checkpoint registry (compiled artifacts committed), alloy bindings, an `Anchor`
//! trait with a JSON-RPC backend and an embedded revm backend for zero-setup runs, Merkle roots
//! of round participants with inclusion proofs, and checkpoint verification.
//!
//! Nothing is implemented yet; no daofl crate depends on it so far.
