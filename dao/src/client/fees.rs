//! Inference-fee calls of [`Dao`]: a requester deposits, requests a withdrawal and withdraws; a
//! gateway settles signed receipts in batches and reads which nonces are used.

use alloy::primitives::{Address, Bytes, U256};
use alloy::sol_types::{Eip712Domain, SolEvent};

use super::{Dao, nonzero};
use crate::backend::TxReceipt;
use crate::bindings::{InferenceFees, ProposalToken};
use crate::fees::{MAX_BATCH, Receipt, RejectReason, fees_domain};
use crate::{Error, Result};

/// A requester's funds in InferenceFees.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FeeAccount {
    /// Prepaid and chargeable.
    pub balance: U256,
    /// Leaving: still chargeable, withdrawable from `unlock_at`.
    pub unlocking: U256,
    /// When the unlocking funds may be withdrawn (unix seconds; 0: never requested).
    pub unlock_at: u64,
}

/// What one `settle` transaction did, read from its events.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SettleOutcome {
    /// Receipts charged.
    pub settled: usize,
    /// Receipts skipped: (index in the batch, reason), in batch order.
    pub rejected: Vec<(usize, RejectReason)>,
    /// The charged receipts' summed fees.
    pub total: U256,
    /// The part burnt (half of `total`, rounded down).
    pub burnt: U256,
    /// The part sent to the inference pool.
    pub to_pool: U256,
    /// The transaction.
    pub tx: TxReceipt,
}

impl SettleOutcome {
    fn from_receipt(tx: TxReceipt, fees: Address) -> Result<Self> {
        let malformed = |what: &str| Error::MalformedResponse(format!("settle: {what}"));
        let mut rejected = Vec::new();
        let mut batch = None;
        for log in tx.logs.iter().filter(|l| l.address == fees) {
            if let Ok(e) = InferenceFees::ReceiptRejected::decode_log_data(&log.data) {
                let index = usize::try_from(e.index).map_err(|_| malformed("index"))?;
                let reason = RejectReason::from_code(e.reason)
                    .ok_or_else(|| malformed(&format!("reject reason {}", e.reason)))?;
                rejected.push((index, reason));
            } else if let Ok(e) = InferenceFees::BatchSettled::decode_log_data(&log.data) {
                batch = Some(e);
            }
        }
        let batch = batch.ok_or_else(|| malformed("no BatchSettled event"))?;
        Ok(Self {
            settled: usize::try_from(batch.settled).map_err(|_| malformed("count"))?,
            rejected,
            total: batch.total,
            burnt: batch.burnt,
            to_pool: batch.toPool,
            tx,
        })
    }
}

impl Dao {
    /// The InferenceFees address.
    ///
    /// # Errors
    /// [`Error::NotDeployed`] for a deployment made before it existed.
    pub fn fees_address(&self) -> Result<Address> {
        let a = self.deployment.inference_fees;
        if a.is_zero() {
            return Err(Error::NotDeployed("InferenceFees"));
        }
        Ok(a)
    }

    /// The EIP-712 domain requesters sign receipts under.
    ///
    /// # Errors
    /// [`Error::NotDeployed`], or an endpoint error.
    pub async fn fees_domain(&self) -> Result<Eip712Domain> {
        Ok(fees_domain(
            self.backend.chain_id().await?,
            self.fees_address()?,
        ))
    }

    /// Deposits `amount` of the sender's tokens as prepaid fees (approves InferenceFees, then
    /// deposits).
    ///
    /// # Errors
    /// [`Error::InvalidInput`] for zero; [`Error::Reverted`] (`ERC20InsufficientBalance`,
    /// `InsufficientUnlockedBalance` for staked tokens).
    pub async fn deposit_fees(&self, amount: U256) -> Result<TxReceipt> {
        let amount = nonzero(amount, "deposit")?;
        let fees = self.fees_address()?;
        self.send(
            self.deployment.token,
            ProposalToken::approveCall {
                spender: fees,
                value: amount,
            },
        )
        .await?;
        self.send(fees, InferenceFees::depositCall { amount }).await
    }

    /// `requester`'s chargeable balance (without its unlocking funds).
    ///
    /// # Errors
    /// [`Error::NotDeployed`], or an endpoint error.
    pub async fn fee_balance(&self, requester: Address) -> Result<U256> {
        self.view(
            self.fees_address()?,
            InferenceFees::balanceOfCall { requester },
        )
        .await
    }

    /// `requester`'s funds: balance, unlocking amount and when it unlocks.
    ///
    /// # Errors
    /// [`Error::NotDeployed`], or an endpoint error.
    pub async fn fee_account(&self, requester: Address) -> Result<FeeAccount> {
        let a = self
            .view(
                self.fees_address()?,
                InferenceFees::accountCall { requester },
            )
            .await?;
        Ok(FeeAccount {
            balance: U256::from(a.balance),
            unlocking: U256::from(a.unlocking),
            unlock_at: a.unlockAt,
        })
    }

    /// Moves `amount` of the sender's balance to unlocking funds, withdrawable after the
    /// governed delay (gateways may still charge them meanwhile).
    ///
    /// # Errors
    /// [`Error::InvalidInput`] for zero; [`Error::Reverted`] (`InsufficientBalance`).
    pub async fn request_fee_withdrawal(&self, amount: U256) -> Result<TxReceipt> {
        let amount = nonzero(amount, "withdrawal")?;
        self.send(
            self.fees_address()?,
            InferenceFees::requestWithdrawalCall { amount },
        )
        .await
    }

    /// Withdraws the sender's unlocking funds once the delay has passed.
    ///
    /// # Errors
    /// [`Error::Reverted`] (`StillUnlocking`, `NothingUnlocking`).
    pub async fn withdraw_fees(&self) -> Result<TxReceipt> {
        self.send(self.fees_address()?, InferenceFees::withdrawCall {})
            .await
    }

    /// Settles a batch of signed receipts (anyone may; a gateway does): each valid one is
    /// charged, each other skipped with its reason, and the summed fees are split (half burnt,
    /// the rest to the inference pool) in the same transaction.
    ///
    /// # Errors
    /// [`Error::InvalidInput`] for more than [`MAX_BATCH`] receipts (the contract would revert
    /// with `BatchTooLarge`; [`settle_receipts_unchecked`](Self::settle_receipts_unchecked)
    /// sends them anyway); [`Error::Reverted`] (`ERC20InsufficientBalance` only if the contract's
    /// books were wrong), [`Error::MalformedResponse`] if the events cannot be read.
    pub async fn settle_receipts(&self, batch: &[(Receipt, Bytes)]) -> Result<SettleOutcome> {
        if batch.len() > MAX_BATCH {
            return Err(Error::InvalidInput(format!(
                "{} receipts in one batch, at most {MAX_BATCH}",
                batch.len()
            )));
        }
        self.settle_receipts_unchecked(batch).await
    }

    /// [`settle_receipts`](Self::settle_receipts) without the batch-size check (tests of the
    /// contract's refusal, tools).
    ///
    /// # Errors
    /// As `settle_receipts`, and [`Error::Reverted`] (`BatchTooLarge`).
    pub async fn settle_receipts_unchecked(
        &self,
        batch: &[(Receipt, Bytes)],
    ) -> Result<SettleOutcome> {
        let fees = self.fees_address()?;
        let (receipts, signatures) = batch.iter().map(|(r, s)| (r.to_sol(), s.clone())).unzip();
        let tx = self
            .send(
                fees,
                InferenceFees::settleCall {
                    receipts,
                    signatures,
                },
            )
            .await?;
        SettleOutcome::from_receipt(tx, fees)
    }

    /// Whether `requester`'s `nonce` was used by a settled receipt.
    ///
    /// # Errors
    /// [`Error::NotDeployed`], or an endpoint error.
    pub async fn receipt_used(&self, requester: Address, nonce: U256) -> Result<bool> {
        self.view(
            self.fees_address()?,
            InferenceFees::isUsedCall { requester, nonce },
        )
        .await
    }

    /// The governed withdrawal delay (seconds) and minimum fee per receipt (base units).
    ///
    /// # Errors
    /// [`Error::NotDeployed`], or an endpoint error.
    pub async fn fee_params(&self) -> Result<(u64, U256)> {
        let fees = self.fees_address()?;
        let delay = self.view(fees, InferenceFees::withdrawDelayCall {}).await?;
        let min_fee = self.view(fees, InferenceFees::minFeeCall {}).await?;
        Ok((delay, min_fee))
    }

    /// The contract's own digest of `receipt` (what `fees::Receipt::digest` computes locally).
    ///
    /// # Errors
    /// [`Error::NotDeployed`], or an endpoint error.
    pub async fn receipt_digest(&self, receipt: &Receipt) -> Result<alloy::primitives::B256> {
        self.view(
            self.fees_address()?,
            InferenceFees::receiptDigestCall {
                r: receipt.to_sol(),
            },
        )
        .await
    }
}
