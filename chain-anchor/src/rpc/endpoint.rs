//! A signing connection to an endpoint: sending, awaiting receipts, deploying the registry.

use std::future::IntoFuture;
use std::time::Duration;

use alloy::network::{EthereumWallet, ReceiptResponse, TransactionBuilder};
use alloy::primitives::{Address, B256, Bytes};
use alloy::providers::{DynProvider, Provider, ProviderBuilder};
use alloy::rpc::types::TransactionRequest;
use alloy::signers::local::PrivateKeySigner;
use alloy::sol_types::SolConstructor;
use alloy::transports::http::reqwest::Url;

use super::KeySource;
use crate::bindings::CheckpointRegistry as Registry;
use crate::error::Revert;
use crate::{Error, Result};

/// A signing connection to an endpoint, shared by deployment and anchoring.
#[derive(Debug, Clone)]
pub(super) struct Endpoint {
    pub(super) provider: DynProvider,
    pub(super) url: String,
    pub(super) sender: Address,
    pub(super) request_timeout: Duration,
    pub(super) poll_interval: Duration,
    pub(super) confirmations: u64,
    pub(super) receipt_timeout: Duration,
}

/// A receipt reduced to what the crate reports.
pub(super) struct Mined {
    pub(super) tx_hash: B256,
    pub(super) block_number: u64,
    pub(super) gas_used: u64,
    pub(super) effective_gas_price: u128,
    pub(super) contract_address: Option<Address>,
}

impl Endpoint {
    pub(super) fn new(url: &str, key: &KeySource) -> Result<Self> {
        let signer: PrivateKeySigner = key.load()?;
        let parsed: Url = url
            .parse()
            .map_err(|e| Error::Config(format!("endpoint URL {url:?}: {e}")))?;
        let sender = signer.address();
        // The nonce is asked from the node for every transaction (no cache): a transaction that
        // fails before it is sent (a revert in the gas estimate) must not leave a nonce gap.
        let provider = ProviderBuilder::new()
            .disable_recommended_fillers()
            .with_gas_estimation()
            .with_simple_nonce_management()
            .fetch_chain_id()
            .wallet(EthereumWallet::from(signer))
            .connect_http(parsed)
            .erased();
        Ok(Self {
            provider,
            url: url.to_owned(),
            sender,
            request_timeout: Duration::from_secs(30),
            poll_interval: Duration::from_millis(100),
            confirmations: 1,
            receipt_timeout: Duration::from_secs(120),
        })
    }

    fn rpc_error(&self, during: &'static str, message: impl ToString) -> Error {
        Error::Rpc {
            url: self.url.clone(),
            during,
            message: message.to_string(),
        }
    }

    /// Runs one request under the request timeout.
    pub(super) async fn request<T, E: std::fmt::Display>(
        &self,
        during: &'static str,
        fut: impl IntoFuture<Output = std::result::Result<T, E>>,
    ) -> Result<T> {
        match tokio::time::timeout(self.request_timeout, fut.into_future()).await {
            Ok(Ok(v)) => Ok(v),
            Ok(Err(e)) => Err(self.rpc_error(during, e)),
            Err(_) => Err(self.rpc_error(during, "request timed out")),
        }
    }

    /// Sends a transaction and waits for its confirmed receipt.
    pub(super) async fn send_and_wait(&self, tx: TransactionRequest) -> Result<Mined> {
        let sent = tokio::time::timeout(self.request_timeout, self.provider.send_transaction(tx));
        let pending = match sent.await {
            Err(_) => return Err(self.rpc_error("sending a transaction", "request timed out")),
            Ok(Err(e)) => {
                // A revert shows up here: the gas estimate executes the call first.
                if let Some(data) = e.as_error_resp().and_then(|r| r.as_revert_data()) {
                    return Err(Error::Reverted(Revert::decode(&data)));
                }
                return Err(self.rpc_error("sending a transaction", e));
            }
            Ok(Ok(p)) => p,
        };
        self.await_receipt(*pending.tx_hash()).await
    }

    /// Polls for the receipt of `tx_hash` until it has the required confirmations.
    async fn await_receipt(&self, tx_hash: B256) -> Result<Mined> {
        let deadline = tokio::time::Instant::now() + self.receipt_timeout;
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
                let head = self
                    .request("reading the block number", self.provider.get_block_number())
                    .await?;
                if head.saturating_add(1) >= block_number.saturating_add(self.confirmations) {
                    if !r.status() {
                        return Err(Error::Reverted(Revert::Other(Bytes::new())));
                    }
                    return Ok(Mined {
                        tx_hash,
                        block_number,
                        gas_used: r.gas_used(),
                        effective_gas_price: r.effective_gas_price(),
                        contract_address: r.contract_address(),
                    });
                }
            }
            if tokio::time::Instant::now() >= deadline {
                return Err(Error::ReceiptTimeout {
                    tx_hash,
                    waited: self.receipt_timeout,
                });
            }
            tokio::time::sleep(self.poll_interval).await;
        }
    }
}

/// Where and by whom a registry was deployed.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Deployment {
    /// Address of the new registry.
    pub registry: Address,
    /// Its admin and first aggregator (the deploying account).
    pub admin: Address,
    /// Chain id of the endpoint.
    pub chain_id: u64,
    /// Deployment transaction.
    pub tx_hash: B256,
    /// Block of the deployment (a good `from_block` for event searches).
    pub block_number: u64,
    /// Gas used by the deployment.
    pub gas_used: u64,
}

/// Deploys a new registry through `url`, signed with the key from `key`, which becomes the
/// registry's admin and first aggregator. What `fl-aggregator anchor deploy` calls.
///
/// # Errors
/// [`Error::Key`], [`Error::Rpc`], [`Error::ReceiptTimeout`], or [`Error::Reverted`].
pub async fn deploy_registry(url: &str, key: &KeySource, confirmations: u64) -> Result<Deployment> {
    let mut endpoint = Endpoint::new(url, key)?;
    endpoint.confirmations = confirmations.max(1);
    let chain_id = endpoint
        .request("reading the chain id", endpoint.provider.get_chain_id())
        .await?;
    let mut code = Registry::BYTECODE.to_vec();
    code.extend(
        Registry::constructorCall {
            admin: endpoint.sender,
        }
        .abi_encode(),
    );
    let tx = TransactionRequest::default().with_deploy_code(code);
    let mined = endpoint.send_and_wait(tx).await?;
    let registry = mined.contract_address.ok_or_else(|| {
        Error::MalformedResponse("deployment receipt without a contract address".into())
    })?;
    Ok(Deployment {
        registry,
        admin: endpoint.sender,
        chain_id,
        tx_hash: mined.tx_hash,
        block_number: mined.block_number,
        gas_used: mined.gas_used,
    })
}
