//! The [`Anchor`] trait, the reads both backends share, and [`ChainAnchor`], the backend a
//! [`ChainConfig`] selects.

use std::future::Future;
use std::path::Path;

use alloy::primitives::{Address, B256, Bytes, Log};
use alloy::sol_types::{SolCall, SolEvent};

use crate::bindings::CheckpointRegistry as Registry;
use crate::config::ChainConfig;
use crate::types::{
    AnchorEvent, AnchorEventKind, AnchorReceipt, AnchoredCheckpoint, BackendKind, BatchRecord,
    CheckpointAnchor, CheckpointRecord, FederationId, RoundBatch,
};
use crate::{EmbeddedAnchor, Error, Result, RpcAnchor};

/// Writes checkpoint anchors to a registry and reads them back.
///
/// Implemented by [`EmbeddedAnchor`] (in-process EVM), [`RpcAnchor`] (any EVM JSON-RPC
/// endpoint) and [`ChainAnchor`] (either, chosen by configuration). The futures are `Send`, so
/// a tokio task can hold them.
pub trait Anchor: Send + Sync {
    /// Which backend this is.
    fn backend(&self) -> BackendKind;

    /// Address of the registry contract.
    fn registry(&self) -> Address;

    /// Account that sends the anchors (must hold `AGGREGATOR_ROLE`).
    fn sender(&self) -> Address;

    /// Anchors one round and returns its receipt once it is included.
    ///
    /// # Errors
    /// [`Error::Reverted`] when the registry refuses (unauthorised sender, round not above the
    /// last one), [`Error::Conflict`] when the round is anchored already with other data,
    /// [`Error::Rpc`] / [`Error::ReceiptTimeout`] when the endpoint fails (the anchor stays
    /// queued and is sent later).
    fn anchor(
        &self,
        checkpoint: &CheckpointAnchor,
    ) -> impl Future<Output = Result<AnchorReceipt>> + Send;

    /// Anchors several consecutive rounds under one Merkle root (one transaction).
    ///
    /// # Errors
    /// As [`Anchor::anchor`].
    fn anchor_batch(
        &self,
        batch: &RoundBatch,
    ) -> impl Future<Output = Result<AnchorReceipt>> + Send;

    /// What the registry holds for `round`, if it is anchored (alone or in a batch).
    fn lookup(
        &self,
        federation: FederationId,
        round: u64,
    ) -> impl Future<Output = Result<Option<AnchoredCheckpoint>>> + Send;

    /// The last round anchored for `federation`, if any.
    fn latest_round(
        &self,
        federation: FederationId,
    ) -> impl Future<Output = Result<Option<u64>>> + Send;

    /// The registry's events from block `from_block` on, oldest first; only those of
    /// `federation` when given.
    fn events(
        &self,
        federation: Option<FederationId>,
        from_block: u64,
    ) -> impl Future<Output = Result<Vec<AnchorEvent>>> + Send;

    /// Asks the registry's own `MerkleProof` (`verifyParticipant`) whether `proof` shows
    /// `member` with `update_hash` under `participants_root`: the on-chain twin of
    /// [`ParticipantsTree::verify`](crate::ParticipantsTree::verify).
    fn check_participant_on_chain(
        &self,
        participants_root: B256,
        member: Address,
        update_hash: B256,
        proof: &[B256],
    ) -> impl Future<Output = Result<bool>> + Send;

    /// Asks the registry (`verifyInBatch`) whether `checkpoint` is included, with `proof`, in
    /// the batch anchored for its round: the on-chain twin of [`RoundBatch::verify`].
    fn check_in_batch_on_chain(
        &self,
        checkpoint: &CheckpointAnchor,
        proof: &[B256],
    ) -> impl Future<Output = Result<bool>> + Send;
}

/// Read-only calls to the registry, the one thing the shared reads need from a backend.
pub(crate) trait RegistryView: Send + Sync {
    /// Executes a view call with ABI-encoded `calldata` and returns the raw output.
    fn view(&self, calldata: Vec<u8>) -> impl Future<Output = Result<Bytes>> + Send;
}

fn decode_returns<C: SolCall>(out: &[u8]) -> Result<C::Return> {
    C::abi_decode_returns(out).map_err(|e| {
        Error::MalformedResponse(format!("{} returned undecodable data: {e}", C::SIGNATURE))
    })
}

pub(crate) async fn lookup_via<V: RegistryView>(
    v: &V,
    federation: FederationId,
    round: u64,
) -> Result<Option<AnchoredCheckpoint>> {
    let call = Registry::checkpointOfCall {
        federation: federation.0,
        round,
    };
    let cp = decode_returns::<Registry::checkpointOfCall>(&v.view(call.abi_encode()).await?)?;
    if cp.aggregator != Address::ZERO {
        return Ok(Some(AnchoredCheckpoint::Single(CheckpointRecord {
            params_hash: cp.paramsHash,
            cid: cp.cid,
            participants_root: cp.participantsRoot,
            epsilon_micros: cp.epsilonMicros,
            aggregator: cp.aggregator,
            anchored_at: cp.anchoredAt,
        })));
    }
    let call = Registry::findBatchCall {
        federation: federation.0,
        round,
    };
    let found = decode_returns::<Registry::findBatchCall>(&v.view(call.abi_encode()).await?)?;
    Ok(found.found.then_some({
        AnchoredCheckpoint::Batched(BatchRecord {
            first_round: found.batch.firstRound,
            last_round: found.batch.lastRound,
            root: found.batch.root,
            aggregator: found.batch.aggregator,
            anchored_at: found.batch.anchoredAt,
        })
    }))
}

pub(crate) async fn latest_round_via<V: RegistryView>(
    v: &V,
    federation: FederationId,
) -> Result<Option<u64>> {
    let call = Registry::latestRoundCall {
        federation: federation.0,
    };
    let r = decode_returns::<Registry::latestRoundCall>(&v.view(call.abi_encode()).await?)?;
    Ok(r.anchored.then_some(r.round))
}

pub(crate) async fn check_participant_via<V: RegistryView>(
    v: &V,
    participants_root: B256,
    member: Address,
    update_hash: B256,
    proof: &[B256],
) -> Result<bool> {
    let call = Registry::verifyParticipantCall {
        participantsRoot: participants_root,
        member,
        updateHash: update_hash,
        proof: proof.to_vec(),
    };
    decode_returns::<Registry::verifyParticipantCall>(&v.view(call.abi_encode()).await?)
}

pub(crate) async fn check_in_batch_via<V: RegistryView>(
    v: &V,
    c: &CheckpointAnchor,
    proof: &[B256],
) -> Result<bool> {
    let call = Registry::verifyInBatchCall {
        federation: c.federation.0,
        round: c.round,
        paramsHash: c.params_hash,
        cid: c.cid.clone(),
        participantsRoot: c.participants_root,
        epsilonMicros: c.epsilon_micros,
        proof: proof.to_vec(),
    };
    decode_returns::<Registry::verifyInBatchCall>(&v.view(call.abi_encode()).await?)
}

/// Decodes one registry log; `None` for a log that is not an anchor event (e.g. role grants).
pub(crate) fn decode_event(log: &Log) -> Option<AnchorEventKind> {
    let topic0 = *log.data.topics().first()?;
    if topic0 == Registry::CheckpointAnchored::SIGNATURE_HASH {
        let e = Registry::CheckpointAnchored::decode_log_data(&log.data).ok()?;
        Some(AnchorEventKind::Checkpoint {
            checkpoint: CheckpointAnchor {
                federation: FederationId(e.federation),
                round: e.round,
                params_hash: e.paramsHash,
                cid: e.cid,
                participants_root: e.participantsRoot,
                epsilon_micros: e.epsilonMicros,
            },
            aggregator: e.aggregator,
        })
    } else if topic0 == Registry::BatchAnchored::SIGNATURE_HASH {
        let e = Registry::BatchAnchored::decode_log_data(&log.data).ok()?;
        Some(AnchorEventKind::Batch {
            federation: FederationId(e.federation),
            first_round: e.firstRound,
            last_round: e.lastRound,
            root: e.batchRoot,
            aggregator: e.aggregator,
        })
    } else {
        None
    }
}

/// Either backend, as a [`ChainConfig`] selects it: what the aggregator holds.
#[derive(Debug)]
pub enum ChainAnchor {
    /// In-process EVM with its state in the run folder.
    Embedded(EmbeddedAnchor),
    /// An EVM JSON-RPC endpoint.
    Rpc(Box<RpcAnchor>),
}

impl ChainAnchor {
    /// Opens the backend `config` describes; relative paths (and the embedded default state
    /// folder, `chain/`) are resolved against `run_dir`.
    ///
    /// Needs no network: the RPC backend contacts its endpoint at the first anchor or read.
    ///
    /// # Errors
    /// [`Error::Config`], [`Error::Key`], or the embedded backend's state errors.
    pub fn open(config: &ChainConfig, run_dir: &Path) -> Result<Self> {
        match config {
            ChainConfig::Embedded { state_dir, .. } => {
                let dir = run_dir.join(state_dir.as_deref().unwrap_or(Path::new("chain")));
                Ok(Self::Embedded(EmbeddedAnchor::open(&dir)?))
            }
            ChainConfig::Rpc { .. } => {
                let rpc = RpcAnchor::connect(config.rpc_settings(run_dir)?)?;
                Ok(Self::Rpc(Box::new(rpc)))
            }
        }
    }
}

macro_rules! delegate {
    ($self:ident, $a:ident => $e:expr) => {
        match $self {
            ChainAnchor::Embedded($a) => $e,
            ChainAnchor::Rpc($a) => $e,
        }
    };
}

impl Anchor for ChainAnchor {
    fn backend(&self) -> BackendKind {
        delegate!(self, a => a.backend())
    }

    fn registry(&self) -> Address {
        delegate!(self, a => a.registry())
    }

    fn sender(&self) -> Address {
        delegate!(self, a => a.sender())
    }

    async fn anchor(&self, checkpoint: &CheckpointAnchor) -> Result<AnchorReceipt> {
        delegate!(self, a => a.anchor(checkpoint).await)
    }

    async fn anchor_batch(&self, batch: &RoundBatch) -> Result<AnchorReceipt> {
        delegate!(self, a => a.anchor_batch(batch).await)
    }

    async fn lookup(
        &self,
        federation: FederationId,
        round: u64,
    ) -> Result<Option<AnchoredCheckpoint>> {
        delegate!(self, a => a.lookup(federation, round).await)
    }

    async fn latest_round(&self, federation: FederationId) -> Result<Option<u64>> {
        delegate!(self, a => a.latest_round(federation).await)
    }

    async fn events(
        &self,
        federation: Option<FederationId>,
        from_block: u64,
    ) -> Result<Vec<AnchorEvent>> {
        delegate!(self, a => a.events(federation, from_block).await)
    }

    async fn check_participant_on_chain(
        &self,
        participants_root: B256,
        member: Address,
        update_hash: B256,
        proof: &[B256],
    ) -> Result<bool> {
        delegate!(self, a => a.check_participant_on_chain(participants_root, member, update_hash, proof).await)
    }

    async fn check_in_batch_on_chain(
        &self,
        checkpoint: &CheckpointAnchor,
        proof: &[B256],
    ) -> Result<bool> {
        delegate!(self, a => a.check_in_batch_on_chain(checkpoint, proof).await)
    }
}
