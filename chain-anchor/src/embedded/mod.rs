//! The embedded backend: the committed registry bytecode executed in-process by revm.
//!
//! **It is an EVM, not a network.** There is no consensus and no other node: the "chain" is a
//! state file in the run folder that whoever holds it can rewrite. It runs the very bytecode a
//! real chain runs (same checks, same events, same gas), so it is the zero-setup default for
//! quickstarts, simulations and tests; an anchor that third parties should trust belongs on a
//! real chain ([`RpcAnchor`](crate::RpcAnchor)).

mod evm;
mod state;

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, MutexGuard};

use alloy::primitives::{Address, B256, Bytes, keccak256};
use alloy::signers::local::PrivateKeySigner;
use alloy::sol_types::{SolCall, SolConstructor};
use revm::context::result::{ExecutionResult, Output};
use revm::primitives::TxKind;

pub use self::evm::{EmbeddedEvm, EvmOutcome};
pub use self::state::EMBEDDED_CHAIN_ID;
use self::state::{Chain, Executed};
use crate::anchor::{
    RegistryView, check_in_batch_via, check_participant_via, decode_event, latest_round_via,
    lookup_via,
};
use crate::bindings::CheckpointRegistry as Registry;
use crate::error::Revert;
use crate::types::{
    AnchorEvent, AnchorReceipt, AnchoredCheckpoint, BackendKind, CheckpointAnchor, FederationId,
    RoundBatch,
};
use crate::{Anchor, Error, Result};

/// Name of the state file inside the state folder.
pub const STATE_FILE: &str = "chain-anchor-state.json";

/// The well-known key of the embedded aggregator: `keccak256("daofl embedded aggregator")`.
///
/// It is public on purpose (an embedded chain has no secrets); never fund its address on a
/// real chain.
pub fn embedded_aggregator_key() -> B256 {
    keccak256(b"daofl embedded aggregator")
}

/// The registry in an in-process EVM whose state persists in a folder.
///
/// **An EVM, not a network**: no consensus, no other node, no signatures checked. It runs the
/// same registry bytecode as a real chain (same checks, events and gas), but a verifier must
/// trust whoever holds the state file, who can rewrite it at will. Use it for quickstarts,
/// simulations and tests; anchors that third parties rely on belong on a real chain
/// ([`RpcAnchor`](crate::RpcAnchor)).
///
/// Every successful anchor rewrites the state file atomically before it returns, so a crash
/// never loses an anchor that was reported done. One process at a time may open a folder.
/// Clones share the chain.
#[derive(Debug, Clone)]
pub struct EmbeddedAnchor {
    chain: Arc<Mutex<Chain>>,
    path: PathBuf,
    sender: Address,
}

impl EmbeddedAnchor {
    /// Opens the chain in `state_dir`, creating the folder, the chain and the registry (admin and
    /// aggregator: [`embedded_aggregator_key`]'s address) on first use.
    ///
    /// # Errors
    /// [`Error::Io`] if the folder cannot be used, [`Error::Corrupt`] if the state file is not
    /// one this crate wrote or holds no registry.
    pub fn open(state_dir: &Path) -> Result<Self> {
        std::fs::create_dir_all(state_dir).map_err(crate::fsutil::io_err(state_dir))?;
        let path = state_dir.join(STATE_FILE);
        let sender = Self::default_sender();
        let chain = if path.exists() {
            let chain = Chain::load(&path)?;
            if chain.code(chain.registry) != Registry::DEPLOYED_BYTECODE {
                return Err(Error::Corrupt {
                    path,
                    reason: format!("no checkpoint registry of this build at {}", chain.registry),
                });
            }
            chain
        } else {
            let mut chain = Chain::new();
            let mut code = Registry::BYTECODE.to_vec();
            code.extend(Registry::constructorCall { admin: sender }.abi_encode());
            let executed = chain.transact(sender, TxKind::Create, code.into())?;
            match executed.result {
                ExecutionResult::Success {
                    output: Output::Create(_, Some(address)),
                    ..
                } => chain.registry = address,
                other => return Err(Error::Evm(format!("deploying the registry: {other:?}"))),
            }
            chain.save(&path)?;
            chain
        };
        Ok(Self {
            chain: Arc::new(Mutex::new(chain)),
            path,
            sender,
        })
    }

    /// The embedded aggregator's address (the registry's admin).
    pub fn default_sender() -> Address {
        PrivateKeySigner::from_bytes(&embedded_aggregator_key())
            .map(|s| s.address())
            .unwrap_or(Address::ZERO)
    }

    /// A handle on the same chain that sends as `account` (the embedded EVM checks no
    /// signatures: any account can be acted as, which is why it proves nothing to a third party).
    pub fn acting_as(&self, account: Address) -> Self {
        Self {
            sender: account,
            ..self.clone()
        }
    }

    /// A generic handle on the same chain (same state and file): deploy and call any contract,
    /// advance the clock. The DAO layer lives beside the registry through it.
    pub fn evm(&self) -> EmbeddedEvm {
        EmbeddedEvm {
            chain: Arc::clone(&self.chain),
            path: self.path.clone(),
        }
    }

    /// The state file.
    pub fn state_file(&self) -> &Path {
        &self.path
    }

    /// Grants `AGGREGATOR_ROLE` to `account` (the sender must be the admin).
    ///
    /// # Errors
    /// [`Error::Reverted`] when the sender is not the admin.
    pub fn authorize(&self, account: Address) -> Result<()> {
        let call = Registry::grantRoleCall {
            role: keccak256(b"AGGREGATOR_ROLE"),
            account,
        };
        self.send(call.abi_encode(), 0, 0, None).map(drop)
    }

    fn lock(&self) -> Result<MutexGuard<'_, Chain>> {
        self.chain
            .lock()
            .map_err(|_| Error::Evm("a thread panicked while holding the chain".into()))
    }

    /// Executes a registry transaction, persists the state and builds the receipt.
    fn send(
        &self,
        calldata: Vec<u8>,
        first_round: u64,
        last_round: u64,
        batch_root: Option<B256>,
    ) -> Result<AnchorReceipt> {
        let mut chain = self.lock()?;
        let registry = chain.registry;
        let Executed {
            result,
            tx_hash,
            block_number,
        } = chain.transact(self.sender, TxKind::Call(registry), calldata.into())?;
        // The nonce and block advance even for a revert, as on a chain: persist either way.
        chain.save(&self.path)?;
        match result {
            ExecutionResult::Success { gas, .. } => Ok(AnchorReceipt {
                backend: BackendKind::Embedded,
                chain_id: EMBEDDED_CHAIN_ID,
                registry,
                tx_hash,
                block_number,
                gas_used: gas.tx_gas_used(),
                effective_gas_price: 0,
                first_round,
                last_round,
                batch_root,
                already_anchored: false,
            }),
            ExecutionResult::Revert { output, .. } => Err(Error::Reverted(Revert::decode(&output))),
            ExecutionResult::Halt { reason, .. } => Err(Error::Evm(format!("halted: {reason:?}"))),
        }
    }
}

impl RegistryView for EmbeddedAnchor {
    async fn view(&self, calldata: Vec<u8>) -> Result<Bytes> {
        let mut chain = self.lock()?;
        let registry = chain.registry;
        match chain.call(registry, calldata.into())? {
            ExecutionResult::Success { output, .. } => Ok(output.into_data()),
            other => Err(Error::Evm(format!("view call failed: {other:?}"))),
        }
    }
}

impl Anchor for EmbeddedAnchor {
    fn backend(&self) -> BackendKind {
        BackendKind::Embedded
    }

    fn registry(&self) -> Address {
        self.lock().map_or(Address::ZERO, |c| c.registry)
    }

    fn sender(&self) -> Address {
        self.sender
    }

    async fn anchor(&self, c: &CheckpointAnchor) -> Result<AnchorReceipt> {
        let call = Registry::anchorCall {
            federation: c.federation.0,
            round: c.round,
            paramsHash: c.params_hash,
            cid: c.cid.clone(),
            participantsRoot: c.participants_root,
            epsilonMicros: c.epsilon_micros,
        };
        self.send(call.abi_encode(), c.round, c.round, None)
    }

    async fn anchor_batch(&self, batch: &RoundBatch) -> Result<AnchorReceipt> {
        let call = Registry::anchorBatchCall {
            federation: batch.federation().0,
            firstRound: batch.first_round(),
            lastRound: batch.last_round(),
            batchRoot: batch.root(),
        };
        self.send(
            call.abi_encode(),
            batch.first_round(),
            batch.last_round(),
            Some(batch.root()),
        )
    }

    async fn lookup(
        &self,
        federation: FederationId,
        round: u64,
    ) -> Result<Option<AnchoredCheckpoint>> {
        lookup_via(self, federation, round).await
    }

    async fn latest_round(&self, federation: FederationId) -> Result<Option<u64>> {
        latest_round_via(self, federation).await
    }

    async fn events(
        &self,
        federation: Option<FederationId>,
        from_block: u64,
    ) -> Result<Vec<AnchorEvent>> {
        let chain = self.lock()?;
        Ok(chain
            .logs
            .iter()
            .filter(|l| l.block_number >= from_block && l.address == chain.registry)
            .filter_map(|l| {
                let kind = decode_event(&l.to_log()?)?;
                (federation.is_none() || federation == Some(kind.federation())).then_some({
                    AnchorEvent {
                        block_number: l.block_number,
                        tx_hash: l.tx_hash,
                        kind,
                    }
                })
            })
            .collect())
    }

    async fn check_participant_on_chain(
        &self,
        participants_root: B256,
        member: Address,
        update_hash: B256,
        proof: &[B256],
    ) -> Result<bool> {
        check_participant_via(self, participants_root, member, update_hash, proof).await
    }

    async fn check_in_batch_on_chain(
        &self,
        checkpoint: &CheckpointAnchor,
        proof: &[B256],
    ) -> Result<bool> {
        check_in_batch_via(self, checkpoint, proof).await
    }
}
