//! Where transactions go: an EVM JSON-RPC endpoint (anvil, a testnet, mainnet) or the embedded
//! EVM of chain-anchor. Each backend value sends as one account.

use std::future::IntoFuture;
use std::time::Duration;

use alloy::network::{EthereumWallet, ReceiptResponse, TransactionBuilder};
use alloy::primitives::{Address, B256, Bytes, Log, U256};
use alloy::providers::{DynProvider, Provider, ProviderBuilder};
use alloy::rpc::types::TransactionRequest;
use alloy::signers::local::PrivateKeySigner;
use alloy::transports::http::reqwest::Url;
use chain_anchor::{EMBEDDED_CHAIN_ID, EmbeddedAnchor, EmbeddedEvm, KeySource};

use crate::{Error, Result, Revert};

/// Gas added to every estimate on an RPC chain, besides a quarter of it (see `RpcBackend::send`):
/// six new storage slots (about 20k each). A slash that returns part of the stake to a pool
/// moves the total supply, the votable supply and a delegate's votes, each a checkpoint that
/// costs a new slot in a new second but an in-place update in the estimate's; unused gas is not
/// charged.
const GAS_MARGIN: u64 = 120_000;

/// What a mined transaction did.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct TxReceipt {
    /// Transaction hash.
    pub tx_hash: B256,
    /// Block it was included in.
    pub block_number: u64,
    /// Gas used.
    pub gas_used: u64,
    /// The contract a deployment created.
    pub contract_address: Option<Address>,
    /// Logs emitted.
    pub logs: Vec<Log>,
}

/// Timeouts of the JSON-RPC backend.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RpcTimeouts {
    /// Limit of every single request.
    pub request: Duration,
    /// How long a receipt is awaited.
    pub receipt: Duration,
    /// Interval between receipt polls.
    pub poll: Duration,
}

impl Default for RpcTimeouts {
    fn default() -> Self {
        Self {
            request: Duration::from_secs(30),
            receipt: Duration::from_secs(120),
            poll: Duration::from_millis(100),
        }
    }
}

/// A signing connection to a JSON-RPC endpoint.
#[derive(Debug, Clone)]
pub struct RpcBackend {
    provider: DynProvider,
    url: String,
    signer: PrivateKeySigner,
    timeouts: RpcTimeouts,
}

/// An account on the embedded EVM (no signature is checked there: any address can send).
#[derive(Debug, Clone)]
pub struct EmbeddedBackend {
    anchor: EmbeddedAnchor,
    evm: EmbeddedEvm,
    sender: Address,
}

/// A chain and the account that sends on it.
#[derive(Debug, Clone)]
#[non_exhaustive]
pub enum Backend {
    /// An EVM JSON-RPC endpoint.
    Rpc(RpcBackend),
    /// chain-anchor's embedded EVM (same state file as its checkpoint registry).
    Embedded(EmbeddedBackend),
}

impl Backend {
    /// Connects to `url`, signing with the key from `key` (a file or an environment variable,
    /// never the command line). Contacts nothing yet.
    ///
    /// # Errors
    /// [`Error::Anchor`] with a key error, [`Error::Config`] for a malformed URL.
    pub fn rpc(url: &str, key: &KeySource) -> Result<Self> {
        Self::rpc_with_signer(url, key.load()?, RpcTimeouts::default())
    }

    /// Connects to `url` with an already loaded signer.
    ///
    /// # Errors
    /// [`Error::Config`] for a malformed URL.
    pub fn rpc_with_signer(
        url: &str,
        signer: PrivateKeySigner,
        timeouts: RpcTimeouts,
    ) -> Result<Self> {
        let parsed: Url = url
            .parse()
            .map_err(|e| Error::Config(format!("endpoint URL {url:?}: {e}")))?;
        // The nonce is asked from the node for every transaction (no cache): a transaction that
        // fails in its gas estimate must not leave a nonce gap.
        let provider = ProviderBuilder::new()
            .disable_recommended_fillers()
            .with_gas_estimation()
            .with_simple_nonce_management()
            .fetch_chain_id()
            .wallet(EthereumWallet::from(signer.clone()))
            .connect_http(parsed)
            .erased();
        Ok(Self::Rpc(RpcBackend {
            provider,
            url: url.to_owned(),
            signer,
            timeouts,
        }))
    }

    /// The embedded EVM of `anchor`, sending as `sender`.
    pub fn embedded(anchor: &EmbeddedAnchor, sender: Address) -> Self {
        Self::Embedded(EmbeddedBackend {
            anchor: anchor.clone(),
            evm: anchor.evm(),
            sender,
        })
    }

    /// The same chain, sending as another account: on the embedded EVM any address; on an RPC
    /// chain the signer's address (use [`Backend::with_signer`] there).
    ///
    /// # Errors
    /// [`Error::Unsupported`] on an RPC chain (a signer is needed).
    pub fn acting_as(&self, sender: Address) -> Result<Self> {
        match self {
            Self::Embedded(e) => Ok(Self::Embedded(EmbeddedBackend {
                sender,
                ..e.clone()
            })),
            Self::Rpc(_) => Err(Error::Unsupported(
                "acting as an address on an RPC chain needs its key: use with_signer".into(),
            )),
        }
    }

    /// The same chain, sending with `signer` (on the embedded EVM: as its address).
    ///
    /// # Errors
    /// [`Error::Config`] if the RPC URL no longer parses (never for a backend built by this crate).
    pub fn with_signer(&self, signer: PrivateKeySigner) -> Result<Self> {
        match self {
            Self::Embedded(e) => Ok(Self::Embedded(EmbeddedBackend {
                sender: signer.address(),
                ..e.clone()
            })),
            Self::Rpc(r) => Self::rpc_with_signer(&r.url, signer, r.timeouts),
        }
    }

    /// The sending account.
    pub fn sender(&self) -> Address {
        match self {
            Self::Rpc(r) => r.signer.address(),
            Self::Embedded(e) => e.sender,
        }
    }

    /// The embedded anchor when this is the embedded EVM.
    pub fn embedded_anchor(&self) -> Option<&EmbeddedAnchor> {
        match self {
            Self::Embedded(e) => Some(&e.anchor),
            Self::Rpc(_) => None,
        }
    }

    /// The chain id.
    ///
    /// # Errors
    /// [`Error::Rpc`] when the endpoint fails.
    pub async fn chain_id(&self) -> Result<u64> {
        match self {
            Self::Rpc(r) => {
                r.request("reading the chain id", r.provider.get_chain_id())
                    .await
            }
            Self::Embedded(_) => Ok(EMBEDDED_CHAIN_ID),
        }
    }

    /// The next nonce of `account`.
    ///
    /// # Errors
    /// [`Error::Rpc`] when the endpoint fails.
    pub async fn nonce(&self, account: Address) -> Result<u64> {
        match self {
            Self::Rpc(r) => {
                r.request(
                    "reading a nonce",
                    r.provider.get_transaction_count(account).pending(),
                )
                .await
            }
            Self::Embedded(e) => Ok(e.evm.nonce(account)?),
        }
    }

    /// Runtime code at `address`.
    ///
    /// # Errors
    /// [`Error::Rpc`] when the endpoint fails.
    pub async fn code(&self, address: Address) -> Result<Bytes> {
        match self {
            Self::Rpc(r) => {
                r.request("reading code", r.provider.get_code_at(address))
                    .await
            }
            Self::Embedded(e) => Ok(e.evm.code(address)?),
        }
    }

    /// Timestamp of the latest block (what a view call sees).
    ///
    /// # Errors
    /// [`Error::Rpc`] when the endpoint fails.
    pub async fn now(&self) -> Result<u64> {
        match self {
            Self::Rpc(r) => {
                let block = r
                    .request(
                        "reading the latest block",
                        r.provider.get_block_by_number(Default::default()),
                    )
                    .await?
                    .ok_or_else(|| Error::MalformedResponse("no latest block".into()))?;
                Ok(block.header.timestamp)
            }
            Self::Embedded(e) => Ok(e.evm.timestamp()?),
        }
    }

    /// Moves the chain's clock forward by `seconds` and mines a block; returns the new time.
    /// On the embedded EVM through its clock; on an RPC chain with anvil's (or hardhat's)
    /// `evm_increaseTime` + `evm_mine`.
    ///
    /// # Errors
    /// [`Error::Unsupported`] when the endpoint is not a dev node.
    pub async fn advance_time(&self, seconds: u64) -> Result<u64> {
        match self {
            Self::Rpc(r) => {
                let client = r.provider.client();
                r.request::<serde_json::Value, _>(
                    "evm_increaseTime",
                    client.request("evm_increaseTime", (U256::from(seconds),)),
                )
                .await
                .map_err(|e| Error::Unsupported(format!("moving the clock: {e}")))?;
                r.request::<serde_json::Value, _>("evm_mine", client.request("evm_mine", ()))
                    .await?;
                self.now().await
            }
            Self::Embedded(e) => Ok(e.evm.advance_time(seconds)?),
        }
    }

    /// Logs emitted by `address` from block `from_block` on.
    ///
    /// # Errors
    /// [`Error::Rpc`] when the endpoint fails.
    pub async fn logs(&self, address: Address, from_block: u64) -> Result<Vec<Log>> {
        match self {
            Self::Rpc(r) => {
                let filter = alloy::rpc::types::Filter::new()
                    .address(address)
                    .from_block(from_block);
                let logs = r
                    .request("reading logs", r.provider.get_logs(&filter))
                    .await?;
                Ok(logs.into_iter().map(|l| l.inner).collect())
            }
            Self::Embedded(e) => Ok(e
                .evm
                .logs(address, from_block)?
                .into_iter()
                .map(|(_, log)| log)
                .collect()),
        }
    }

    /// A read-only call of `to` from the sender.
    ///
    /// # Errors
    /// [`Error::Reverted`] with the decoded revert, [`Error::Rpc`] when the endpoint fails.
    pub async fn call(&self, to: Address, data: Bytes) -> Result<Bytes> {
        match self {
            Self::Rpc(r) => {
                let tx = TransactionRequest::default()
                    .with_from(r.signer.address())
                    .with_to(to)
                    .with_input(data);
                match tokio::time::timeout(r.timeouts.request, r.provider.call(tx)).await {
                    Err(_) => Err(r.rpc_error("a view call", "request timed out")),
                    Ok(Ok(out)) => Ok(out),
                    Ok(Err(e)) => match e.as_error_resp().and_then(|x| x.as_revert_data()) {
                        Some(data) => Err(Error::Reverted(Revert::new(data))),
                        None => Err(r.rpc_error("a view call", e)),
                    },
                }
            }
            Self::Embedded(e) => {
                let out = e.evm.call(e.sender, to, data)?;
                if out.success {
                    Ok(out.output)
                } else {
                    Err(Error::Reverted(Revert::new(out.output)))
                }
            }
        }
    }

    /// Sends a transaction (a call of `to`, or a deployment when `to` is `None`) and waits for
    /// its receipt.
    ///
    /// # Errors
    /// [`Error::Reverted`] with the decoded revert, [`Error::Rpc`], [`Error::ReceiptTimeout`].
    pub async fn send(&self, to: Option<Address>, data: Bytes) -> Result<TxReceipt> {
        match self {
            Self::Rpc(r) => r.send(to, data).await,
            Self::Embedded(e) => {
                let out = e.evm.transact(e.sender, to, data)?;
                if !out.success {
                    return Err(Error::Reverted(Revert::new(out.output)));
                }
                Ok(TxReceipt {
                    tx_hash: out.tx_hash,
                    block_number: out.block_number,
                    gas_used: out.gas_used,
                    contract_address: out.created,
                    logs: out.logs,
                })
            }
        }
    }
}

impl RpcBackend {
    fn rpc_error(&self, during: &'static str, message: impl ToString) -> Error {
        Error::Rpc {
            url: self.url.clone(),
            during,
            message: message.to_string(),
        }
    }

    async fn request<T, E: std::fmt::Display>(
        &self,
        during: &'static str,
        fut: impl IntoFuture<Output = std::result::Result<T, E>>,
    ) -> Result<T> {
        match tokio::time::timeout(self.timeouts.request, fut.into_future()).await {
            Ok(Ok(v)) => Ok(v),
            Ok(Err(e)) => Err(self.rpc_error(during, e)),
            Err(_) => Err(self.rpc_error(during, "request timed out")),
        }
    }

    async fn send(&self, to: Option<Address>, data: Bytes) -> Result<TxReceipt> {
        let tx = match to {
            Some(to) => TransactionRequest::default()
                .with_to(to)
                .with_input(data.clone()),
            None => TransactionRequest::default().with_deploy_code(data.clone()),
        };
        let replay = tx.clone().with_from(self.signer.address());
        // The node estimates in a pending block whose timestamp may differ from the block that
        // includes the transaction, and ERC20Votes checkpoints cost a new storage slot (about
        // 20k gas) in a new second but an in-place update in the same one: without a margin
        // such a transaction can run out of gas. Unused gas is not charged.
        let estimate = tokio::time::timeout(
            self.timeouts.request,
            self.provider.estimate_gas(replay.clone()),
        );
        let gas = match estimate.await {
            Err(_) => return Err(self.rpc_error("estimating gas", "request timed out")),
            Ok(Err(e)) => {
                // A revert shows up here: the estimate executes the call first.
                if let Some(data) = e.as_error_resp().and_then(|r| r.as_revert_data()) {
                    return Err(Error::Reverted(Revert::new(data)));
                }
                return Err(self.rpc_error("estimating gas", e));
            }
            Ok(Ok(g)) => g,
        };
        let gas_limit = gas.saturating_add(gas / 4).saturating_add(GAS_MARGIN);
        let tx = tx.with_gas_limit(gas_limit);
        let sent = tokio::time::timeout(self.timeouts.request, self.provider.send_transaction(tx));
        let pending = match sent.await {
            Err(_) => return Err(self.rpc_error("sending a transaction", "request timed out")),
            Ok(Err(e)) => {
                // A revert shows up here: the gas estimate executes the call first.
                if let Some(data) = e.as_error_resp().and_then(|r| r.as_revert_data()) {
                    return Err(Error::Reverted(Revert::new(data)));
                }
                return Err(self.rpc_error("sending a transaction", e));
            }
            Ok(Ok(p)) => p,
        };
        let tx_hash = *pending.tx_hash();
        let deadline = tokio::time::Instant::now() + self.timeouts.receipt;
        loop {
            let receipt = self
                .request(
                    "fetching a receipt",
                    self.provider.get_transaction_receipt(tx_hash),
                )
                .await?;
            if let Some(r) = receipt {
                let block_number = r.block_number().ok_or_else(|| {
                    Error::MalformedResponse(format!("receipt of {tx_hash} has no block number"))
                })?;
                if !r.status() {
                    if r.gas_used() >= gas_limit {
                        return Err(self.rpc_error(
                            "executing a transaction",
                            format!("{tx_hash} ran out of gas (limit {gas_limit})"),
                        ));
                    }
                    // Mined but reverted (the state changed between estimate and inclusion):
                    // replay it as a call for the revert data, on the state before its block,
                    // else on the state after it (a transaction earlier in the same block,
                    // such as a competing validator's post, is what made it revert).
                    let mut data = Bytes::new();
                    for at in [block_number.saturating_sub(1), block_number] {
                        let call = self.provider.call(replay.clone()).block(at.into());
                        if let Ok(Err(e)) = tokio::time::timeout(self.timeouts.request, call).await
                            && let Some(d) = e.as_error_resp().and_then(|x| x.as_revert_data())
                        {
                            data = d;
                            break;
                        }
                    }
                    return Err(Error::Reverted(Revert::new(data)));
                }
                return Ok(TxReceipt {
                    tx_hash,
                    block_number,
                    gas_used: r.gas_used(),
                    contract_address: r.contract_address(),
                    logs: r.inner.logs().iter().map(|l| l.inner.clone()).collect(),
                });
            }
            if tokio::time::Instant::now() >= deadline {
                return Err(Error::ReceiptTimeout {
                    tx_hash,
                    waited: self.timeouts.receipt,
                });
            }
            tokio::time::sleep(self.timeouts.poll).await;
        }
    }
}
