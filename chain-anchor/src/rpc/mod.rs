//! The JSON-RPC backend: any EVM endpoint (anvil locally, a testnet or mainnet in production).
//!
//! Anchors go through a durable [queue](queue): written and synced before the transaction is
//! sent, removed only after its receipt is confirmed, so an endpoint outage delays anchors but
//! never loses one. Before (re)sending, the chain is asked whether the round is anchored already
//! with the same data (a transaction mined whose receipt was lost), which makes delivery
//! exactly-once; a different record for the round is an [`Error::Conflict`], never a skip.

mod endpoint;
mod key;
pub(crate) mod queue;

use std::path::PathBuf;
use std::time::Duration;

use alloy::network::{ReceiptResponse, TransactionBuilder};
use alloy::primitives::{Address, B256, Bytes, U256};
use alloy::providers::Provider;
use alloy::rpc::types::{Filter, TransactionRequest};
use alloy::sol_types::{SolCall, SolEvent};
use tokio::sync::{Mutex, OnceCell};

use self::endpoint::Endpoint;
pub use self::endpoint::{Deployment, deploy_registry};
pub use self::key::KeySource;
use self::queue::{Pending, Queue};
use crate::anchor::{
    RegistryView, check_in_batch_via, check_participant_via, decode_event, latest_round_via,
    lookup_via,
};
use crate::bindings::CheckpointRegistry as Registry;
use crate::types::{
    AnchorEvent, AnchorReceipt, AnchoredCheckpoint, BackendKind, CheckpointAnchor, FederationId,
    RoundBatch,
};
use crate::{Anchor, Error, Result};

/// How often a failing endpoint is retried before an anchor call gives up (the anchor stays
/// queued either way).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RetryPolicy {
    /// Tries per anchor and call (at least 1).
    pub attempts: u32,
    /// Wait after the first failure; doubled after each further one.
    pub initial_backoff: Duration,
    /// Longest wait between tries.
    pub max_backoff: Duration,
}

impl Default for RetryPolicy {
    fn default() -> Self {
        Self {
            attempts: 5,
            initial_backoff: Duration::from_millis(500),
            max_backoff: Duration::from_secs(8),
        }
    }
}

/// Everything the RPC backend needs.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct RpcSettings {
    /// JSON-RPC endpoint URL.
    pub url: String,
    /// Address of the registry.
    pub registry: Address,
    /// Where the aggregator's key is read from.
    pub key: KeySource,
    /// Expected chain id (checked at first contact) when set.
    pub chain_id: Option<u64>,
    /// Folder of the durable retry queue.
    pub queue_dir: PathBuf,
    /// Confirmations awaited (1 = included in a block).
    pub confirmations: u64,
    /// How long to wait for a receipt.
    pub receipt_timeout: Duration,
    /// Limit of every single JSON-RPC request.
    pub request_timeout: Duration,
    /// Interval between receipt polls.
    pub poll_interval: Duration,
    /// Retries while the endpoint fails.
    pub retry: RetryPolicy,
    /// First block searched for events (the registry's deployment block saves work on long
    /// chains).
    pub from_block: u64,
}

impl RpcSettings {
    /// Settings with defaults: 1 confirmation, 120 s receipt timeout, 30 s per request, 100 ms
    /// polls, [`RetryPolicy::default`], events from block 0.
    pub fn new(url: String, registry: Address, key: KeySource, queue_dir: PathBuf) -> Self {
        Self {
            url,
            registry,
            key,
            chain_id: None,
            queue_dir,
            confirmations: 1,
            receipt_timeout: Duration::from_secs(120),
            request_timeout: Duration::from_secs(30),
            poll_interval: Duration::from_millis(100),
            retry: RetryPolicy::default(),
            from_block: 0,
        }
    }
}

/// The registry on a chain reached over JSON-RPC (anvil, a testnet, mainnet).
///
/// Every anchor is first written, synced, to the queue folder; it leaves the queue only once
/// its receipt has the configured confirmations, or once the chain is found to hold it already
/// (a transaction mined whose receipt was lost). So an endpoint outage delays anchors without
/// losing any, and none is written twice. Anchors are delivered one at a time in round order:
/// an anchor call first delivers what earlier calls left queued. A different record for the
/// same round is an [`Error::Conflict`]; an anchor the registry refuses for good is moved to the
/// queue's `rejected/` folder with the reason.
///
/// One process per key: nonces are asked from the node for each transaction, so two processes
/// sending with one key at the same moment may collide.
#[derive(Debug)]
pub struct RpcAnchor {
    endpoint: Endpoint,
    registry: Address,
    expected_chain_id: Option<u64>,
    chain_id: OnceCell<u64>,
    queue: Queue,
    retry: RetryPolicy,
    from_block: u64,
    /// One delivery at a time: anchors leave in round order.
    sending: Mutex<()>,
}

impl RpcAnchor {
    /// Loads the key and opens the queue; contacts no endpoint (that happens at the first anchor
    /// or read, so an aggregator starts while its endpoint is down).
    ///
    /// # Errors
    /// [`Error::Key`], [`Error::Config`] for a malformed URL, [`Error::Io`] for the queue folder.
    pub fn connect(settings: RpcSettings) -> Result<Self> {
        let mut endpoint = Endpoint::new(&settings.url, &settings.key)?;
        endpoint.confirmations = settings.confirmations.max(1);
        endpoint.receipt_timeout = settings.receipt_timeout;
        endpoint.request_timeout = settings.request_timeout;
        endpoint.poll_interval = settings.poll_interval;
        Ok(Self {
            endpoint,
            registry: settings.registry,
            expected_chain_id: settings.chain_id,
            chain_id: OnceCell::new(),
            queue: Queue::open(&settings.queue_dir)?,
            retry: RetryPolicy {
                attempts: settings.retry.attempts.max(1),
                ..settings.retry
            },
            from_block: settings.from_block,
            sending: Mutex::new(()),
        })
    }

    /// The endpoint's chain id (asked once), checked against the configured one, and the
    /// registry's code checked to be there.
    async fn chain_id(&self) -> Result<u64> {
        self.chain_id
            .get_or_try_init(|| async {
                let e = &self.endpoint;
                let id = e
                    .request("reading the chain id", e.provider.get_chain_id())
                    .await?;
                if let Some(expected) = self.expected_chain_id
                    && expected != id
                {
                    return Err(Error::Config(format!(
                        "{} serves chain {id}, the configuration expects chain {expected}",
                        e.url
                    )));
                }
                let code = e
                    .request(
                        "reading the registry's code",
                        e.provider.get_code_at(self.registry),
                    )
                    .await?;
                if code != Registry::DEPLOYED_BYTECODE {
                    return Err(Error::NoRegistry {
                        address: self.registry,
                        reason: if code.is_empty() {
                            "no contract code".into()
                        } else {
                            "code differs from this build's CheckpointRegistry".into()
                        },
                    });
                }
                Ok(id)
            })
            .await
            .copied()
    }

    /// Anchors still waiting in the queue.
    ///
    /// # Errors
    /// [`Error::Io`] / [`Error::Corrupt`] for an unreadable queue.
    pub fn queued(&self) -> Result<usize> {
        self.queue.len()
    }

    /// Sends every queued anchor, oldest first, and returns their receipts.
    ///
    /// # Errors
    /// The first failure; what is not delivered stays queued (or is moved to `rejected/` when
    /// the registry refuses it for good).
    pub async fn flush(&self) -> Result<Vec<AnchorReceipt>> {
        let _one = self.sending.lock().await;
        let mut receipts = Vec::new();
        for (path, pending) in self.queue.entries()? {
            receipts.push(self.deliver_with_retry(&path, &pending).await?);
        }
        Ok(receipts)
    }

    /// Grants `AGGREGATOR_ROLE` to `account` (the sender must be the admin); returns the
    /// transaction hash.
    ///
    /// # Errors
    /// [`Error::Reverted`] when the sender is not the admin, or an endpoint error.
    pub async fn authorize(&self, account: Address) -> Result<B256> {
        self.chain_id().await?;
        let call = Registry::grantRoleCall {
            role: alloy::primitives::keccak256(b"AGGREGATOR_ROLE"),
            account,
        };
        let tx = TransactionRequest::default()
            .with_to(self.registry)
            .with_input(call.abi_encode());
        Ok(self.endpoint.send_and_wait(tx).await?.tx_hash)
    }

    /// Queues `pending`, then delivers the queue in order up to and including it.
    async fn submit(&self, pending: Pending) -> Result<AnchorReceipt> {
        let _one = self.sending.lock().await;
        let own = self.queue.push(&pending)?;
        for (path, entry) in self.queue.entries()? {
            let delivered = self.deliver_with_retry(&path, &entry).await;
            if path == own {
                return delivered;
            }
            match delivered {
                Ok(_) => {}
                // Refused for good and moved aside: it no longer holds later anchors back.
                Err(e @ (Error::Reverted(_) | Error::Conflict { .. })) => {
                    tracing::error!(entry = %path.display(), error = %e, "queued anchor rejected");
                }
                Err(e) => return Err(e),
            }
        }
        Err(Error::Corrupt {
            path: own,
            reason: "the anchor vanished from the queue before it was sent".into(),
        })
    }

    async fn deliver_with_retry(
        &self,
        path: &std::path::Path,
        pending: &Pending,
    ) -> Result<AnchorReceipt> {
        let mut backoff = self.retry.initial_backoff;
        let mut attempt = 1;
        loop {
            match self.deliver(pending).await {
                Ok(receipt) => {
                    self.queue.remove(path)?;
                    return Ok(receipt);
                }
                Err(e @ (Error::Rpc { .. } | Error::ReceiptTimeout { .. })) => {
                    if attempt >= self.retry.attempts {
                        return Err(e);
                    }
                    tracing::warn!(attempt, error = %e, "anchor not delivered yet; retrying");
                    tokio::time::sleep(backoff).await;
                    backoff = backoff.saturating_mul(2).min(self.retry.max_backoff);
                    attempt += 1;
                }
                Err(e @ (Error::Reverted(_) | Error::Conflict { .. })) => {
                    self.queue.reject(path, &e)?;
                    return Err(e);
                }
                Err(e) => return Err(e),
            }
        }
    }

    /// One delivery attempt: check the chain first, send only what it lacks.
    async fn deliver(&self, pending: &Pending) -> Result<AnchorReceipt> {
        let chain_id = self.chain_id().await?;
        if let Some(receipt) = self.found_on_chain(pending, chain_id).await? {
            return Ok(receipt);
        }
        let (first_round, last_round) = pending.rounds()?;
        let (calldata, batch_root) = pending.calldata()?;
        let tx = TransactionRequest::default()
            .with_to(self.registry)
            .with_input(calldata);
        match self.endpoint.send_and_wait(tx).await {
            Ok(m) => Ok(AnchorReceipt {
                backend: BackendKind::Rpc,
                chain_id,
                registry: self.registry,
                tx_hash: m.tx_hash,
                block_number: m.block_number,
                gas_used: m.gas_used,
                effective_gas_price: m.effective_gas_price,
                first_round,
                last_round,
                batch_root,
                already_anchored: false,
            }),
            // An earlier attempt may have landed meanwhile: then this is a success.
            Err(e @ Error::Reverted(_)) => match self.found_on_chain(pending, chain_id).await? {
                Some(receipt) => Ok(receipt),
                None => Err(e),
            },
            Err(e) => Err(e),
        }
    }

    /// The receipt of `pending` if the registry holds it already; a conflict if it holds
    /// something else for its round.
    async fn found_on_chain(
        &self,
        pending: &Pending,
        chain_id: u64,
    ) -> Result<Option<AnchorReceipt>> {
        let federation = pending.federation()?;
        let (first_round, last_round) = pending.rounds()?;
        let Some(anchored) = self.lookup(federation, first_round).await? else {
            return Ok(None);
        };
        let (same, batch_root) = match (pending, &anchored) {
            (Pending::Single { checkpoint }, AnchoredCheckpoint::Single(record)) => {
                (checkpoint.matches(record), None)
            }
            (Pending::Batch { rounds }, AnchoredCheckpoint::Batched(b)) => {
                let root = RoundBatch::new(rounds.clone())?.root();
                (
                    b.first_round == first_round && b.last_round == last_round && b.root == root,
                    Some(root),
                )
            }
            _ => (false, None),
        };
        if !same {
            return Err(Error::Conflict {
                federation,
                round: first_round,
                anchored: Box::new(anchored),
            });
        }
        let signature = if batch_root.is_some() {
            Registry::BatchAnchored::SIGNATURE_HASH
        } else {
            Registry::CheckpointAnchored::SIGNATURE_HASH
        };
        let filter = Filter::new()
            .address(self.registry)
            .from_block(self.from_block)
            .event_signature(signature)
            .topic1(federation.0)
            .topic2(B256::from(U256::from(first_round)));
        let e = &self.endpoint;
        let logs = e
            .request("searching the anchor's event", e.provider.get_logs(&filter))
            .await?;
        let mut receipt = AnchorReceipt {
            backend: BackendKind::Rpc,
            chain_id,
            registry: self.registry,
            tx_hash: B256::ZERO,
            block_number: 0,
            gas_used: 0,
            effective_gas_price: 0,
            first_round,
            last_round,
            batch_root,
            already_anchored: true,
        };
        if let Some(tx_hash) = logs.first().and_then(|l| l.transaction_hash) {
            let r = e
                .request(
                    "fetching the anchor's receipt",
                    e.provider.get_transaction_receipt(tx_hash),
                )
                .await?;
            if let Some(r) = r {
                receipt.tx_hash = tx_hash;
                receipt.block_number = r.block_number().unwrap_or_default();
                receipt.gas_used = r.gas_used();
                receipt.effective_gas_price = r.effective_gas_price();
            }
        }
        Ok(Some(receipt))
    }
}

impl RegistryView for RpcAnchor {
    async fn view(&self, calldata: Vec<u8>) -> Result<Bytes> {
        self.chain_id().await?;
        let e = &self.endpoint;
        let tx = TransactionRequest::default()
            .with_to(self.registry)
            .with_input(calldata);
        e.request("calling the registry", e.provider.call(tx)).await
    }
}

impl Anchor for RpcAnchor {
    fn backend(&self) -> BackendKind {
        BackendKind::Rpc
    }

    fn registry(&self) -> Address {
        self.registry
    }

    fn sender(&self) -> Address {
        self.endpoint.sender
    }

    async fn anchor(&self, checkpoint: &CheckpointAnchor) -> Result<AnchorReceipt> {
        self.submit(Pending::Single {
            checkpoint: checkpoint.clone(),
        })
        .await
    }

    async fn anchor_batch(&self, batch: &RoundBatch) -> Result<AnchorReceipt> {
        self.submit(Pending::Batch {
            rounds: batch.rounds().to_vec(),
        })
        .await
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
        self.chain_id().await?;
        let mut filter = Filter::new()
            .address(self.registry)
            .from_block(from_block.max(self.from_block))
            .event_signature(vec![
                Registry::CheckpointAnchored::SIGNATURE_HASH,
                Registry::BatchAnchored::SIGNATURE_HASH,
            ]);
        if let Some(f) = federation {
            filter = filter.topic1(f.0);
        }
        let e = &self.endpoint;
        let logs = e
            .request("reading events", e.provider.get_logs(&filter))
            .await?;
        logs.into_iter()
            .filter(|l| l.inner.address == self.registry)
            .map(|l| {
                let kind = decode_event(&l.inner).ok_or_else(|| {
                    Error::MalformedResponse("a registry log that does not decode".into())
                })?;
                Ok(AnchorEvent {
                    block_number: l.block_number.ok_or_else(|| {
                        Error::MalformedResponse("a log without a block number".into())
                    })?,
                    tx_hash: l.transaction_hash.ok_or_else(|| {
                        Error::MalformedResponse("a log without a transaction hash".into())
                    })?,
                    kind,
                })
            })
            .collect()
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
