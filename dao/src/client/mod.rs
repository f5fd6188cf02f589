//! [`Dao`]: the member, proposer, guardian and slasher calls on a deployed DAO. Token and
//! vesting calls here; staking in `staking.rs`, proposals in `governance.rs`, settlement in
//! `settlement.rs`, inference fees in `fees.rs`, annotation epochs in `annotations.rs`.

mod annotations;
mod data;
mod fees;
mod governance;
mod settlement;
mod staking;

pub use annotations::{
    AnnotationCommit, AnnotationEpoch, AnnotationEvent, AnnotationParams, AnnotationRefusal,
    AnnotationReveal,
};
pub use data::RegisteredBatch;
pub use fees::{FeeAccount, SettleOutcome};
pub use settlement::{EpochState, SettlementKind, SettlementParams, VerdictState};

use alloy::primitives::{Address, B256, Bytes, U256};
use alloy::signers::SignerSync;
use alloy::signers::local::PrivateKeySigner;
use alloy::sol_types::{SolCall, SolStruct, eip712_domain};

use crate::backend::{Backend, TxReceipt};
use crate::bindings::{AllocationVesting, Permit, ProposalToken, RewardPool};
use crate::deploy::DaoDeployment;
use crate::{Error, Result};

/// A signed EIP-2612 permit, ready to submit by anyone.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SignedPermit {
    /// Token holder.
    pub owner: Address,
    /// Allowed spender.
    pub spender: Address,
    /// Allowance.
    pub value: U256,
    /// Last valid time (unix seconds).
    pub deadline: U256,
    /// Signature parity (27 or 28).
    pub v: u8,
    /// Signature r.
    pub r: B256,
    /// Signature s.
    pub s: B256,
}

/// A deployed DAO, driven by one account (the backend's sender).
///
/// Settlement calls (`post_root`, `claim_reward`, `post_verdict`, `execute_verdict`, ...) go to
/// the training Settlement; those of [`inference_settlement`](Self::inference_settlement)'s
/// handle go to the inference nodes' one, those of [`data_settlement`](Self::data_settlement)'s
/// to the annotators' one.
#[derive(Debug, Clone)]
pub struct Dao {
    backend: Backend,
    deployment: DaoDeployment,
    settlement: SettlementKind,
}

pub(super) fn decode<C: SolCall>(out: &Bytes) -> Result<C::Return> {
    C::abi_decode_returns(out)
        .map_err(|e| Error::MalformedResponse(format!("{}: {e}", C::SIGNATURE)))
}

pub(super) fn nonzero(amount: U256, what: &str) -> Result<U256> {
    if amount.is_zero() {
        return Err(Error::InvalidInput(format!("{what}: a zero amount")));
    }
    Ok(amount)
}

impl Dao {
    /// A handle on `deployment` sending with `backend`'s account.
    pub fn new(backend: Backend, deployment: DaoDeployment) -> Self {
        Self {
            backend,
            deployment,
            settlement: SettlementKind::Training,
        }
    }

    /// The same DAO, driven by another account (its settlement calls go to the same Settlement).
    pub fn with_backend(&self, backend: Backend) -> Self {
        Self {
            backend,
            ..self.clone()
        }
    }

    /// The addresses.
    pub fn deployment(&self) -> &DaoDeployment {
        &self.deployment
    }

    /// The backend.
    pub fn backend(&self) -> &Backend {
        &self.backend
    }

    /// The sending account.
    pub fn sender(&self) -> Address {
        self.backend.sender()
    }

    pub(super) async fn view<C: SolCall>(&self, to: Address, call: C) -> Result<C::Return> {
        let out = self.backend.call(to, call.abi_encode().into()).await?;
        decode::<C>(&out)
    }

    pub(super) async fn send<C: SolCall>(&self, to: Address, call: C) -> Result<TxReceipt> {
        self.backend.send(Some(to), call.abi_encode().into()).await
    }

    /// Sends raw calldata to any address (tests of hostile calls; tools).
    ///
    /// # Errors
    /// [`Error::Reverted`] with the named contract error, or an endpoint error.
    pub async fn send_raw(&self, to: Address, calldata: Bytes) -> Result<TxReceipt> {
        self.backend.send(Some(to), calldata).await
    }

    /// Moves the chain's clock forward (embedded EVM or a dev node); returns the new time.
    ///
    /// # Errors
    /// [`Error::Unsupported`] on a chain whose clock cannot move.
    pub async fn advance_time(&self, seconds: u64) -> Result<u64> {
        self.backend.advance_time(seconds).await
    }

    /// The chain's time (latest block).
    ///
    /// # Errors
    /// An endpoint error.
    pub async fn now(&self) -> Result<u64> {
        self.backend.now().await
    }

    // ----- token -----

    /// Balance of `account`.
    ///
    /// # Errors
    /// An endpoint error.
    pub async fn balance_of(&self, account: Address) -> Result<U256> {
        self.view(
            self.deployment.token,
            ProposalToken::balanceOfCall { account },
        )
        .await
    }

    /// Current total supply (falls with every burn).
    ///
    /// # Errors
    /// An endpoint error.
    pub async fn total_supply(&self) -> Result<U256> {
        self.view(self.deployment.token, ProposalToken::totalSupplyCall {})
            .await
    }

    /// Voting power of `account` now.
    ///
    /// # Errors
    /// An endpoint error.
    pub async fn votes(&self, account: Address) -> Result<U256> {
        self.view(
            self.deployment.token,
            ProposalToken::getVotesCall { account },
        )
        .await
    }

    /// Whom `account` delegates to (zero: nobody, no voting power yet).
    ///
    /// # Errors
    /// An endpoint error.
    pub async fn delegates(&self, account: Address) -> Result<Address> {
        self.view(
            self.deployment.token,
            ProposalToken::delegatesCall { account },
        )
        .await
    }

    /// Tokens of `account` locked by staking.
    ///
    /// # Errors
    /// An endpoint error.
    pub async fn locked_of(&self, account: Address) -> Result<U256> {
        self.view(
            self.deployment.token,
            ProposalToken::lockedOfCall { account },
        )
        .await
    }

    /// Total supply minus what the pools, treasury and vesting wallets hold.
    ///
    /// # Errors
    /// An endpoint error.
    pub async fn votable_supply(&self) -> Result<U256> {
        self.view(self.deployment.token, ProposalToken::votableSupplyCall {})
            .await
    }

    /// Transfers `amount` to `to`.
    ///
    /// # Errors
    /// [`Error::Reverted`] (`InsufficientUnlockedBalance`, `ERC20InsufficientBalance`, ...).
    pub async fn transfer(&self, to: Address, amount: U256) -> Result<TxReceipt> {
        self.send(
            self.deployment.token,
            ProposalToken::transferCall { to, value: amount },
        )
        .await
    }

    /// Delegates the sender's voting power to `delegatee` (itself to vote directly).
    ///
    /// # Errors
    /// An endpoint error.
    pub async fn delegate(&self, delegatee: Address) -> Result<TxReceipt> {
        self.send(
            self.deployment.token,
            ProposalToken::delegateCall { delegatee },
        )
        .await
    }

    /// Burns `amount` of the sender's unlocked tokens.
    ///
    /// # Errors
    /// [`Error::Reverted`].
    pub async fn burn(&self, amount: U256) -> Result<TxReceipt> {
        self.send(
            self.deployment.token,
            ProposalToken::burnCall { value: amount },
        )
        .await
    }

    /// Signs an EIP-2612 permit letting `spender` spend `value` of `owner`'s tokens until
    /// `deadline` (reads the owner's permit nonce and the chain id).
    ///
    /// # Errors
    /// An endpoint error, or a signing failure.
    pub async fn sign_permit(
        &self,
        owner: &PrivateKeySigner,
        spender: Address,
        value: U256,
        deadline: U256,
    ) -> Result<SignedPermit> {
        let nonce = self
            .view(
                self.deployment.token,
                ProposalToken::noncesCall {
                    owner: owner.address(),
                },
            )
            .await?;
        let name = self
            .view(self.deployment.token, ProposalToken::nameCall {})
            .await?;
        let domain = eip712_domain! {
            name: name,
            version: "1",
            chain_id: self.backend.chain_id().await?,
            verifying_contract: self.deployment.token,
        };
        let message = Permit {
            owner: owner.address(),
            spender,
            value,
            nonce,
            deadline,
        };
        let signature = owner
            .sign_hash_sync(&message.eip712_signing_hash(&domain))
            .map_err(|e| Error::InvalidInput(format!("signing the permit: {e}")))?;
        Ok(SignedPermit {
            owner: owner.address(),
            spender,
            value,
            deadline,
            v: 27 + u8::from(signature.v()),
            r: signature.r().into(),
            s: signature.s().into(),
        })
    }

    /// Submits a signed permit (anyone may).
    ///
    /// # Errors
    /// [`Error::Reverted`] (`ERC2612InvalidSigner` for a replay or a forgery,
    /// `ERC2612ExpiredSignature`).
    pub async fn submit_permit(&self, p: &SignedPermit) -> Result<TxReceipt> {
        self.send(
            self.deployment.token,
            ProposalToken::permitCall {
                owner: p.owner,
                spender: p.spender,
                value: p.value,
                deadline: p.deadline,
                v: p.v,
                r: p.r,
                s: p.s,
            },
        )
        .await
    }

    /// Releases what has vested in `wallet` (the team or investor vesting wallet) to its
    /// beneficiary; anyone may call it.
    ///
    /// # Errors
    /// An endpoint error.
    pub async fn claim_vesting(&self, wallet: Address) -> Result<TxReceipt> {
        self.send(
            wallet,
            AllocationVesting::release_0Call {
                token: self.deployment.token,
            },
        )
        .await
    }

    /// Tokens vested in `wallet` by `timestamp` (released or not).
    ///
    /// # Errors
    /// An endpoint error.
    pub async fn vested_amount(&self, wallet: Address, timestamp: u64) -> Result<U256> {
        self.view(
            wallet,
            AllocationVesting::vestedAmount_1Call {
                token: self.deployment.token,
                timestamp,
            },
        )
        .await
    }

    /// Tokens of the data pool released by `timestamp` (paid or not).
    ///
    /// # Errors
    /// An endpoint error.
    pub async fn data_pool_released(&self, timestamp: u64) -> Result<U256> {
        self.view(
            self.deployment.data_pool,
            RewardPool::releasedAtCall {
                token: self.deployment.token,
                timestamp,
            },
        )
        .await
    }
}
