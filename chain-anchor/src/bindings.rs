//! Rust bindings of the committed registry artifact (`artifacts/CheckpointRegistry.json`).
//!
//! Generated at build time by alloy's `sol!` from the ABI and bytecode that
//! `scripts/compile.mjs` wrote, so building this crate needs no Solidity compiler. The same
//! creation and runtime bytecode are what the embedded backend executes.

#![allow(missing_docs)] // generated items; the contract's NatSpec documents them
#![allow(clippy::too_many_arguments)] // `anchor` and `verifyInBatch` take 6 and 7 parameters

alloy::sol!(
    #[sol(rpc)]
    #[derive(Debug, PartialEq, Eq)]
    CheckpointRegistry,
    "artifacts/CheckpointRegistry.json"
);
