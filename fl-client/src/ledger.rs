//! The gateway's fee ledger: paid requests in, receipts settled on chain in batches, and the
//! gateway's state (request log, receipts awaiting settlement, node score history) in a
//! database ([`fl_db::Store`]: SQLite by default, PostgreSQL for a shared gateway).
//!
//! A requester prepays into the DAO's `InferenceFees` contract and sends each request with a
//! signed [`Receipt`] ([`PaidRequest`]). Before serving, [`FeeLedger::accept`] checks that the
//! receipt pays for this request, names this gateway, carries at least the governed fee, is
//! unexpired and signed by its requester, that its nonce was never settled, and that the
//! requester's prepaid funds cover it on top of the receipts already accepted and not settled;
//! then it stores the receipt, where a second receipt with the same requester and nonce is a
//! replay. Only then are nodes asked. A request that gets no consensus is not charged
//! ([`FeeLedger::refund`]). [`FeeLedger::settle`] sends the pending receipts in batches of at
//! most [`dao::fees::MAX_BATCH`] (one transaction each, fees split 50% burnt / 50% to the
//! inference pool by the contract) and records each receipt's fate. The receipts live in the
//! database from the moment they are accepted, so a gateway killed mid-run settles them after
//! its restart.
//!
//! ```no_run
//! # async fn demo(dao: dao::Dao, paid: fl_client::ledger::PaidRequest) -> Result<(), Box<dyn std::error::Error>> {
//! use fl_client::ledger::FeeLedger;
//! let store = fl_db::Store::open("sqlite://gateway.db?mode=rwc").await?;
//! let ledger = FeeLedger::open(store, Box::new(move || Ok(dao.clone()))).await?;
//! let accepted = ledger.accept(&paid).await?; // then ask the nodes
//! let report = ledger.settle().await?;        // from time to time
//! # Ok(()) }
//! ```

use std::time::{SystemTime, UNIX_EPOCH};

use dao::chain_anchor::alloy;
use dao::chain_anchor::alloy::primitives::{Address, B256, Bytes, U256};
use dao::fees::{Receipt, RejectReason};
use fl_core::inference::InferenceRequest;
use fl_db::gateway::{ReceiptRecord, RequestRecord};

use crate::gateway::GatewayAnswer;

/// How the ledger reaches the DAO, as the gateway's account: called for every chain access, so
/// an embedded chain's state is read fresh each time.
pub type DaoSource = Box<dyn Fn() -> dao::Result<dao::Dao> + Send + Sync>;

/// A receipt as JSON: addresses and the request hash as `0x`-hex, the fee and the nonce as
/// strings (`0x`-hex or decimal on input, base units: they are 256-bit), the deadline in unix
/// seconds.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ReceiptJson {
    /// Who pays.
    pub requester: Address,
    /// The gateway it pays.
    pub gateway: Address,
    /// The request it pays for ([`InferenceRequest::hash`]).
    pub request_hash: B256,
    /// The fee, base units.
    pub fee: U256,
    /// The requester's nonce.
    pub nonce: U256,
    /// Last second it may be settled.
    pub deadline: u64,
}

impl From<&ReceiptJson> for Receipt {
    fn from(r: &ReceiptJson) -> Self {
        Receipt {
            requester: r.requester,
            gateway: r.gateway,
            requestHash: r.request_hash,
            fee: r.fee,
            nonce: r.nonce,
            deadline: r.deadline,
        }
    }
}

impl From<&Receipt> for ReceiptJson {
    fn from(r: &Receipt) -> Self {
        Self {
            requester: r.requester,
            gateway: r.gateway,
            request_hash: r.requestHash,
            fee: r.fee,
            nonce: r.nonce,
            deadline: r.deadline,
        }
    }
}

/// What a paying requester sends a gateway with fees: the request, its receipt and the
/// requester's EIP-712 signature of the receipt.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PaidRequest {
    /// The request.
    pub request: InferenceRequest,
    /// Its receipt.
    pub receipt: ReceiptJson,
    /// The requester's signature of the receipt (65 bytes, `0x`-hex).
    pub signature: Bytes,
}

impl PaidRequest {
    /// Signs a receipt for `request` paying `fee` to `gateway` under `domain` (the DAO's
    /// `InferenceFees`, [`dao::Dao::fees_domain`]).
    ///
    /// # Errors
    /// A signing failure.
    pub fn sign(
        requester: &alloy::signers::local::PrivateKeySigner,
        domain: &alloy::sol_types::Eip712Domain,
        request: InferenceRequest,
        gateway: Address,
        fee: U256,
        nonce: U256,
        deadline: u64,
    ) -> dao::Result<Self> {
        let receipt = Receipt {
            requester: requester.address(),
            gateway,
            requestHash: request_hash(&request),
            fee,
            nonce,
            deadline,
        };
        let signature = dao::fees::sign_receipt(requester, domain, &receipt)?;
        Ok(Self {
            request,
            receipt: ReceiptJson::from(&receipt),
            signature,
        })
    }
}

/// A request's hash as the receipt's `requestHash`.
pub fn request_hash(request: &InferenceRequest) -> B256 {
    B256::from(*request.hash().as_bytes())
}

/// Why a paid request is refused (nothing is charged).
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum FeeError {
    /// The receipt is for another request.
    #[error("the receipt pays for request {receipt}, this request is {request}")]
    OtherRequest {
        /// The receipt's request hash.
        receipt: B256,
        /// The request's hash.
        request: B256,
    },
    /// The receipt fails a check (bad signature, another gateway, expired, below the fee).
    #[error("receipt refused ({0}): {why}", why = explain(*.0))]
    Receipt(RejectReason),
    /// The requester's nonce was already used: settled on chain or accepted here before.
    #[error("receipt replayed: nonce {nonce} of {requester} was already used")]
    Replayed {
        /// The requester.
        requester: Address,
        /// The nonce.
        nonce: U256,
    },
    /// The requester's prepaid funds do not cover this receipt and those awaiting settlement.
    #[error(
        "no prepaid balance for this request: {requester} has {available} in InferenceFees, \
         {pending} is owed by receipts awaiting settlement, the fee is {fee}"
    )]
    NoBalance {
        /// The requester.
        requester: Address,
        /// Its chargeable funds on chain.
        available: U256,
        /// Its receipts accepted and not settled.
        pending: U256,
        /// This receipt's fee.
        fee: U256,
    },
    /// The chain could not be read or written.
    #[error("chain: {0}")]
    Chain(#[from] dao::Error),
    /// The database failed.
    #[error("database: {0}")]
    Db(#[from] fl_db::DbError),
}

/// What a refused receipt's reason means, for the requester.
fn explain(reason: RejectReason) -> &'static str {
    match reason {
        RejectReason::BadSignature => "the signature does not recover to the receipt's requester",
        RejectReason::WrongGateway => "the receipt pays another gateway",
        RejectReason::FeeBelowMinimum => "the fee is below the governed minimum",
        RejectReason::Expired => "the receipt's deadline has passed",
        RejectReason::NonceUsed => "the nonce was already settled",
        RejectReason::InsufficientFunds => "the prepaid funds do not cover it",
        _ => "refused",
    }
}

/// A receipt the ledger accepted: stored, awaiting settlement.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Accepted {
    /// The requester.
    pub requester: Address,
    /// The receipt's nonce.
    pub nonce: U256,
}

/// What one [`FeeLedger::settle`] call did.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct SettleReport {
    /// Transactions sent (one per batch).
    pub batches: usize,
    /// Receipts charged.
    pub settled: usize,
    /// Receipts the chain refused, with the reason.
    pub rejected: Vec<(Address, U256, RejectReason)>,
    /// Fees charged in all.
    pub total: U256,
    /// Of which burnt.
    pub burnt: U256,
}

/// The gateway's fees and state (see the module docs).
pub struct FeeLedger {
    store: fl_db::Store,
    dao: DaoSource,
    gateway: Address,
    domain: alloy::sol_types::Eip712Domain,
    min_fee: U256,
    /// Serialises the balance check and the insert, so two receipts of one requester accepted
    /// at once cannot overdraw it.
    accepting: tokio::sync::Mutex<()>,
}

impl std::fmt::Debug for FeeLedger {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("FeeLedger")
            .field("store", &self.store.url())
            .field("gateway", &self.gateway)
            .field("min_fee", &self.min_fee)
            .finish_non_exhaustive()
    }
}

/// Seconds since the Unix epoch, by this machine's clock.
pub fn unix_now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

impl FeeLedger {
    /// A ledger over `store` for the gateway whose account `dao` acts as; reads the fee
    /// contract's domain and minimum fee.
    ///
    /// # Errors
    /// [`FeeError::Chain`]: no `InferenceFees` in the deployment, an endpoint error.
    pub async fn open(store: fl_db::Store, dao: DaoSource) -> Result<Self, FeeError> {
        let d = dao()?;
        let domain = d.fees_domain().await?;
        let (_, min_fee) = d.fee_params().await?;
        Ok(Self {
            store,
            gateway: d.sender(),
            dao,
            domain,
            min_fee,
            accepting: tokio::sync::Mutex::new(()),
        })
    }

    /// The gateway's address (what receipts must name).
    pub fn gateway(&self) -> Address {
        self.gateway
    }

    /// The least fee a receipt may carry.
    pub fn min_fee(&self) -> U256 {
        self.min_fee
    }

    /// The EIP-712 domain receipts are signed under.
    pub fn domain(&self) -> &alloy::sol_types::Eip712Domain {
        &self.domain
    }

    /// The database.
    pub fn store(&self) -> &fl_db::Store {
        &self.store
    }

    /// Checks `paid` (see the module docs) and stores its receipt; the request may then be
    /// served. Nothing is stored when a check fails.
    ///
    /// # Errors
    /// [`FeeError::OtherRequest`], [`FeeError::Receipt`], [`FeeError::Replayed`],
    /// [`FeeError::NoBalance`], or a chain or database failure.
    pub async fn accept(&self, paid: &PaidRequest) -> Result<Accepted, FeeError> {
        let receipt = Receipt::from(&paid.receipt);
        let hash = request_hash(&paid.request);
        if receipt.requestHash != hash {
            return Err(FeeError::OtherRequest {
                receipt: receipt.requestHash,
                request: hash,
            });
        }
        let dao = (self.dao)()?;
        let now = dao.now().await?;
        receipt
            .check(
                &self.domain,
                &paid.signature,
                self.gateway,
                now,
                self.min_fee,
            )
            .map_err(FeeError::Receipt)?;
        let replayed = || FeeError::Replayed {
            requester: receipt.requester,
            nonce: receipt.nonce,
        };
        if dao.receipt_used(receipt.requester, receipt.nonce).await? {
            return Err(replayed());
        }
        let _serial = self.accepting.lock().await;
        let account = dao.fee_account(receipt.requester).await?;
        let available = account.balance.saturating_add(account.unlocking);
        let pending = self.store.pending_fees(&receipt.requester).await?;
        if pending.saturating_add(receipt.fee) > available {
            return Err(FeeError::NoBalance {
                requester: receipt.requester,
                available,
                pending,
                fee: receipt.fee,
            });
        }
        let record = ReceiptRecord {
            requester: receipt.requester,
            nonce: receipt.nonce,
            gateway: receipt.gateway,
            request_hash: hash,
            fee: receipt.fee,
            deadline: receipt.deadline,
            signature: paid.signature.clone(),
            accepted_at: unix_now(),
        };
        match self.store.add_receipt(&record).await {
            Ok(()) => Ok(Accepted {
                requester: receipt.requester,
                nonce: receipt.nonce,
            }),
            Err(fl_db::DbError::Replayed { .. }) => Err(replayed()),
            Err(e) => Err(e.into()),
        }
    }

    /// Takes back an accepted receipt whose request was not served (no consensus): it is
    /// marked rejected and never settled.
    ///
    /// # Errors
    /// A database failure.
    pub async fn refund(&self, accepted: &Accepted, why: &str) -> Result<(), FeeError> {
        self.store
            .mark_rejected(&accepted.requester, &accepted.nonce, why)
            .await?;
        Ok(())
    }

    /// Logs a served request.
    ///
    /// # Errors
    /// A database failure.
    pub async fn log(
        &self,
        requester: Address,
        answer: &GatewayAnswer,
        latency: std::time::Duration,
    ) -> Result<(), FeeError> {
        let c = &answer.consensus;
        self.store
            .log_request(&RequestRecord {
                request_hash: B256::from(*c.request_hash.as_bytes()),
                requester,
                model_cid: c.model.to_string(),
                label: c.label.clone(),
                selected: answer.asked.clone(),
                agreeing: c.agreeing.clone(),
                disagreeing: c.disagreeing.iter().map(|d| d.node).collect(),
                latency_ms: u64::try_from(latency.as_millis()).unwrap_or(u64::MAX),
                created_at: unix_now(),
            })
            .await?;
        Ok(())
    }

    /// Records every node's score as the gateway sees it now (one history row per node, at
    /// `at` unix seconds; served = agreed).
    ///
    /// # Errors
    /// A database failure.
    pub async fn record_scores(
        &self,
        gateway: &crate::gateway::Gateway,
        at: u64,
    ) -> Result<(), FeeError> {
        for node in gateway.nodes() {
            let s = gateway.scores().score(&node);
            let latency_ms = (s.latency_s * 1000.0).round() as u64;
            self.store
                .record_score(&fl_db::gateway::ScoreRecord {
                    node,
                    at,
                    validator: None,
                    served: s.agreed,
                    agreed: s.agreed,
                    disagreed: s.disagreed,
                    missed: s.missing,
                    challenges: 0,
                    challenges_correct: 0,
                    latency_p50_ms: latency_ms,
                    latency_p95_ms: latency_ms,
                    reputation: s.reputation(),
                })
                .await?;
        }
        Ok(())
    }

    /// Loads each listed node's latest recorded score into `gateway` (a restarted gateway
    /// goes on from its history instead of trusting every node afresh); returns how many.
    ///
    /// # Errors
    /// A database failure.
    pub async fn restore_scores(
        &self,
        gateway: &crate::gateway::Gateway,
    ) -> Result<usize, FeeError> {
        let listed = gateway.nodes();
        let mut restored = 0;
        for r in self.store.latest_scores().await? {
            if r.validator.is_some() || !listed.contains(&r.node) {
                continue;
            }
            gateway.scores().restore(
                r.node,
                crate::gateway::NodeScore {
                    agreed: r.agreed,
                    disagreed: r.disagreed,
                    missing: r.missed,
                    latency_s: r.latency_p50_ms as f64 / 1000.0,
                },
            );
            restored += 1;
        }
        Ok(restored)
    }

    /// Settles every pending receipt, in batches of at most [`dao::fees::MAX_BATCH`], oldest
    /// first; records which were charged (with the transaction) and which the chain refused.
    ///
    /// # Errors
    /// A chain or database failure; batches settled before it stay recorded.
    pub async fn settle(&self) -> Result<SettleReport, FeeError> {
        let mut report = SettleReport::default();
        loop {
            let pending = self
                .store
                .pending_receipts(dao::fees::MAX_BATCH as u32)
                .await?;
            if pending.is_empty() {
                return Ok(report);
            }
            let batch: Vec<(Receipt, Bytes)> = pending
                .iter()
                .map(|r| {
                    let receipt = Receipt {
                        requester: r.requester,
                        gateway: r.gateway,
                        requestHash: r.request_hash,
                        fee: r.fee,
                        nonce: r.nonce,
                        deadline: r.deadline,
                    };
                    (receipt, r.signature.clone())
                })
                .collect();
            let outcome = (self.dao)()?.settle_receipts(&batch).await?;
            let refused: std::collections::BTreeMap<usize, RejectReason> =
                outcome.rejected.iter().copied().collect();
            let charged: Vec<(Address, U256)> = pending
                .iter()
                .enumerate()
                .filter(|(i, _)| !refused.contains_key(i))
                .map(|(_, r)| (r.requester, r.nonce))
                .collect();
            if !charged.is_empty() {
                self.store
                    .mark_settled(&charged, &outcome.tx.tx_hash)
                    .await?;
            }
            for (i, reason) in &refused {
                let r = &pending[*i];
                self.store
                    .mark_rejected(&r.requester, &r.nonce, reason.as_str())
                    .await?;
                report.rejected.push((r.requester, r.nonce, *reason));
            }
            report.batches += 1;
            report.settled += outcome.settled;
            report.total += outcome.total;
            report.burnt += outcome.burnt;
        }
    }
}
