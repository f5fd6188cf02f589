//! A generic handle on the embedded chain: any contract, any caller, and a clock that can be
//! advanced. The DAO layer deploys and drives its contracts through it, on the same chain (and
//! state file) as the checkpoint registry.

use std::path::PathBuf;
use std::sync::{Arc, Mutex, MutexGuard};

use alloy::primitives::{Address, B256, Bytes, Log};
use revm::context::result::{ExecutionResult, Output};
use revm::primitives::TxKind;

use super::state::{Chain, Executed};
use crate::{Error, Result};

/// What one embedded transaction or call did.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct EvmOutcome {
    /// Whether it succeeded (`false`: it reverted; `output` is the revert data).
    pub success: bool,
    /// Return data, or revert data when `success` is false.
    pub output: Bytes,
    /// Gas used (including the 21,000 base and calldata, as a chain reports).
    pub gas_used: u64,
    /// The created contract of a successful deployment.
    pub created: Option<Address>,
    /// Logs of a successful transaction.
    pub logs: Vec<Log>,
    /// Transaction hash (a deterministic digest; no signature exists); zero for a call.
    pub tx_hash: B256,
    /// Block of the transaction (of the last block for a call).
    pub block_number: u64,
}

/// A handle on an embedded chain for arbitrary contracts, shared with the
/// [`EmbeddedAnchor`](crate::EmbeddedAnchor) it came from (same state, same file).
///
/// **An EVM, not a network**: it checks no signatures, any account can send (gas is free), and
/// whoever holds the state file can rewrite it. Every transaction and clock move is persisted
/// before it returns.
#[derive(Debug, Clone)]
pub struct EmbeddedEvm {
    pub(super) chain: Arc<Mutex<Chain>>,
    pub(super) path: PathBuf,
}

impl EmbeddedEvm {
    fn lock(&self) -> Result<MutexGuard<'_, Chain>> {
        self.chain
            .lock()
            .map_err(|_| Error::Evm("a thread panicked while holding the chain".into()))
    }

    /// Sends a transaction from `caller` in a new block: a call of `to`, or a deployment when
    /// `to` is `None` (`data` is then the creation code with its constructor arguments). A revert
    /// is an outcome with `success: false` (the nonce is spent, as on a chain).
    ///
    /// # Errors
    /// [`Error::Evm`] for a halt (out of gas, invalid opcode) or an internal failure,
    /// [`Error::Io`] when the state cannot be persisted.
    pub fn transact(
        &self,
        caller: Address,
        to: Option<Address>,
        data: Bytes,
    ) -> Result<EvmOutcome> {
        let mut chain = self.lock()?;
        let kind = to.map_or(TxKind::Create, TxKind::Call);
        let Executed {
            result,
            tx_hash,
            block_number,
        } = chain.transact(caller, kind, data)?;
        chain.save(&self.path)?;
        outcome(result, tx_hash, block_number)
    }

    /// A read-only call of `to` from `caller` against the latest state (nothing is committed).
    ///
    /// # Errors
    /// [`Error::Evm`] for a halt or an internal failure.
    pub fn call(&self, caller: Address, to: Address, data: Bytes) -> Result<EvmOutcome> {
        let mut chain = self.lock()?;
        let block_number = chain.block_number;
        let result = chain.call_as(caller, to, data)?;
        outcome(result, B256::ZERO, block_number)
    }

    /// Moves the clock forward by `seconds` (from the later of the last block's time and the
    /// wall clock) and mines an empty block; returns the new block timestamp. Lets a quickstart
    /// or a test run a 7-day timelock in seconds.
    ///
    /// # Errors
    /// [`Error::InvalidInput`] on overflow, [`Error::Io`] when the state cannot be persisted.
    pub fn advance_time(&self, seconds: u64) -> Result<u64> {
        let mut chain = self.lock()?;
        let t = chain.advance_time(seconds)?;
        chain.save(&self.path)?;
        Ok(t)
    }

    /// Timestamp of the last block (what a view call sees as `block.timestamp`).
    ///
    /// # Errors
    /// [`Error::Evm`] if the chain's lock is poisoned.
    pub fn timestamp(&self) -> Result<u64> {
        Ok(self.lock()?.timestamp())
    }

    /// Number of the last block.
    ///
    /// # Errors
    /// [`Error::Evm`] if the chain's lock is poisoned.
    pub fn block_number(&self) -> Result<u64> {
        Ok(self.lock()?.block_number)
    }

    /// Next nonce of `account` (the address its next deployment gets is derived from it).
    ///
    /// # Errors
    /// [`Error::Evm`] if the chain's lock is poisoned.
    pub fn nonce(&self, account: Address) -> Result<u64> {
        Ok(self.lock()?.nonce(account))
    }

    /// Runtime code at `address` (empty when none).
    ///
    /// # Errors
    /// [`Error::Evm`] if the chain's lock is poisoned.
    pub fn code(&self, address: Address) -> Result<Bytes> {
        Ok(self.lock()?.code(address))
    }

    /// Logs emitted by `address` from block `from_block` on, with their block numbers.
    ///
    /// # Errors
    /// [`Error::Evm`] if the chain's lock is poisoned.
    pub fn logs(&self, address: Address, from_block: u64) -> Result<Vec<(u64, Log)>> {
        let chain = self.lock()?;
        Ok(chain
            .logs
            .iter()
            .filter(|l| l.address == address && l.block_number >= from_block)
            .filter_map(|l| Some((l.block_number, l.to_log()?)))
            .collect())
    }
}

fn outcome(result: ExecutionResult, tx_hash: B256, block_number: u64) -> Result<EvmOutcome> {
    match result {
        ExecutionResult::Success {
            output, gas, logs, ..
        } => {
            let created = match &output {
                Output::Create(_, address) => *address,
                Output::Call(_) => None,
            };
            Ok(EvmOutcome {
                success: true,
                output: output.into_data(),
                gas_used: gas.tx_gas_used(),
                created,
                logs,
                tx_hash,
                block_number,
            })
        }
        ExecutionResult::Revert { output, gas, .. } => Ok(EvmOutcome {
            success: false,
            output,
            gas_used: gas.tx_gas_used(),
            created: None,
            logs: Vec::new(),
            tx_hash,
            block_number,
        }),
        ExecutionResult::Halt { reason, .. } => Err(Error::Evm(format!("halted: {reason:?}"))),
    }
}
