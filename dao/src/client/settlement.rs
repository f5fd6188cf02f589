//! Settlement calls of [`Dao`]: post a signed reward root, claim with a proof, sweep, post and
//! execute a signed slashing verdict, cancel either during the challenge window, split a fee.
//! Each goes to the Settlement the handle targets ([`SettlementKind`]): the training one by
//! default, the inference nodes' one through [`Dao::inference_settlement`], the annotators' one
//! through [`Dao::data_settlement`].

use alloy::primitives::{Address, B256, Bytes, U256};
use alloy::sol_types::Eip712Domain;

use super::{Dao, nonzero};
use crate::backend::TxReceipt;
use crate::bindings::{ProposalToken, Settlement};
use crate::settle::{RewardRules, RewardTree, RootMessage, VerdictMessage, settlement_domain};
use crate::{Error, Result};

/// Which of the DAO's three Settlement instances a [`Dao`]'s settlement calls go to.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum SettlementKind {
    /// Training nodes: roots paid from the training pool, verdicts slash training stake.
    Training,
    /// Inference nodes: roots paid from the inference pool, verdicts slash inference stake.
    Inference,
    /// Annotators: annotation reward roots paid from the data pool, verdicts slash annotator
    /// stake.
    Data,
}

/// An epoch's root as the Settlement contract holds it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct EpochState {
    /// The reward tree's root.
    pub root: B256,
    /// Tokens pulled from the reward pool for the epoch.
    pub total: u128,
    /// Tokens claimed so far.
    pub claimed: u128,
    /// When claims open (the end of the challenge window).
    pub claimable_at: u64,
    /// When claims close.
    pub deadline: u64,
    /// 0 none, 1 pending/claimable, 2 cancelled, 3 swept.
    pub status: u8,
}

/// Settlement's governed parameters.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SettlementParams {
    /// Seconds a posted root or verdict can be cancelled.
    pub challenge_window: u64,
    /// Least seconds between the end of the window and a claim deadline.
    pub min_claim_period: u64,
    /// Fraction of the member's stake (in the Settlement's role) a verdict slashes, basis points.
    pub slash_bps: u16,
    /// Seconds a slashed member stays jailed.
    pub jail_secs: u64,
    /// Fraction of a contradicting validator's training stake slashed, basis points.
    pub validator_slash_bps: u16,
    /// Part of a member's slash returned to the reward pool, basis points (the rest is burnt).
    pub slash_to_pool_bps: u16,
    /// Training stake a validator must hold, unjailed, for its signature to count (base units).
    pub validator_min_stake: u128,
}

/// A slashing verdict as Settlement holds it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct VerdictState {
    /// The member.
    pub member: Address,
    /// The evidence's content hash.
    pub evidence: B256,
    /// The fraction, basis points.
    pub fraction_bps: u16,
    /// When it can be executed.
    pub executable_at: u64,
    /// 0 none, 1 pending, 2 cancelled, 3 executed.
    pub status: u8,
}

impl Dao {
    /// The same DAO and account, whose settlement calls go to the inference nodes' Settlement:
    /// reward roots paid from the inference pool, verdicts slashing inference stake.
    pub fn inference_settlement(&self) -> Self {
        Self {
            settlement: SettlementKind::Inference,
            ..self.clone()
        }
    }

    /// The same DAO and account, whose settlement calls go to the annotators' Settlement:
    /// annotation reward roots paid from the data pool, verdicts slashing annotator stake.
    pub fn data_settlement(&self) -> Self {
        Self {
            settlement: SettlementKind::Data,
            ..self.clone()
        }
    }

    /// The same DAO and account, whose settlement calls go to the training Settlement (what
    /// [`Dao::new`] gives).
    pub fn training_settlement(&self) -> Self {
        Self {
            settlement: SettlementKind::Training,
            ..self.clone()
        }
    }

    /// Which Settlement this handle's settlement calls go to.
    pub fn settlement_kind(&self) -> SettlementKind {
        self.settlement
    }

    /// The address of the Settlement this handle targets.
    ///
    /// # Errors
    /// [`Error::NotDeployed`] for the inference or data Settlement of a deployment made before
    /// it existed.
    pub fn settlement_address(&self) -> Result<Address> {
        let (address, contract) = match self.settlement {
            SettlementKind::Training => (self.deployment.settlement, "Settlement"),
            SettlementKind::Inference => (
                self.deployment.inference_settlement,
                "the inference Settlement",
            ),
            SettlementKind::Data => (self.deployment.data_settlement, "the data Settlement"),
        };
        if address.is_zero() {
            return Err(Error::NotDeployed(contract));
        }
        Ok(address)
    }

    /// The EIP-712 domain validators sign under for the targeted Settlement.
    ///
    /// # Errors
    /// [`Error::NotDeployed`], or an endpoint error.
    pub async fn settlement_domain(&self) -> Result<Eip712Domain> {
        Ok(settlement_domain(
            self.backend.chain_id().await?,
            self.settlement_address()?,
        ))
    }

    /// Posts an epoch's root with the validators' signatures (anyone may submit them); pulls the
    /// total from the reward pool (training, inference or data).
    ///
    /// # Errors
    /// [`Error::Reverted`]: `QuorumNotReached`, `NotValidator`, `DuplicateSigner`,
    /// `InvalidSignature`, `EpochAlreadyPosted`, `EpochCancelled`, `DeadlineTooSoon`,
    /// `ExceedsReleased` (the pool), or an endpoint error.
    pub async fn post_root(
        &self,
        message: &RootMessage,
        signatures: &[Bytes],
    ) -> Result<TxReceipt> {
        self.send(
            self.settlement_address()?,
            Settlement::postRootCall {
                epoch_: message.epoch,
                root: message.root,
                total: message.total,
                deadline: message.deadline,
                signatures: signatures.to_vec(),
            },
        )
        .await
    }

    /// Claims the sender's reward of `epoch` from `tree` (the list the validators signed).
    ///
    /// # Errors
    /// [`Error::InvalidInput`] if the sender is not in `tree`; [`Error::Reverted`]:
    /// `InvalidProof`, `AlreadyClaimed`, `ChallengeWindowOpen`, `ClaimDeadlinePassed`,
    /// `EpochCancelled`, `UnknownEpoch`.
    pub async fn claim_reward(&self, epoch: u64, tree: &RewardTree) -> Result<TxReceipt> {
        let (index, amount, proof) = tree.proof(self.sender()).ok_or_else(|| {
            Error::InvalidInput(format!("{} has no reward in this tree", self.sender()))
        })?;
        self.claim_reward_with(epoch, index, self.sender(), amount, proof)
            .await
    }

    /// Claims leaf `index`, `amount` of `epoch` for `account` with an explicit `proof` (the
    /// contract accepts only `account` = the sender).
    ///
    /// # Errors
    /// [`Error::Reverted`]: `NotClaimant`, `InvalidProof`, `AlreadyClaimed`, and as
    /// [`claim_reward`](Self::claim_reward).
    pub async fn claim_reward_with(
        &self,
        epoch: u64,
        index: u64,
        account: Address,
        amount: U256,
        proof: Vec<B256>,
    ) -> Result<TxReceipt> {
        self.send(
            self.settlement_address()?,
            Settlement::claimCall {
                epoch_: epoch,
                index: U256::from(index),
                account,
                amount,
                proof,
            },
        )
        .await
    }

    /// Returns `epoch`'s unclaimed rest to the reward pool after its deadline (anyone).
    ///
    /// # Errors
    /// [`Error::Reverted`]: `ClaimPeriodOpen`, `AlreadySwept`, `EpochCancelled`, `UnknownEpoch`.
    pub async fn sweep_epoch(&self, epoch: u64) -> Result<TxReceipt> {
        self.send(
            self.settlement_address()?,
            Settlement::sweepCall { epoch_: epoch },
        )
        .await
    }

    /// Cancels `epoch`'s root during its challenge window (sender: the guardian or the timelock).
    ///
    /// # Errors
    /// [`Error::Reverted`]: `NotCanceller`, `ChallengeWindowOver`, `EpochCancelled`, `UnknownEpoch`.
    pub async fn cancel_root(&self, epoch: u64) -> Result<TxReceipt> {
        self.send(
            self.settlement_address()?,
            Settlement::cancelRootCall { epoch_: epoch },
        )
        .await
    }

    /// An epoch's state.
    ///
    /// # Errors
    /// An endpoint error.
    pub async fn epoch(&self, epoch: u64) -> Result<EpochState> {
        let e = self
            .view(
                self.settlement_address()?,
                Settlement::epochCall { epoch_: epoch },
            )
            .await?;
        Ok(EpochState {
            root: e.root,
            total: e.total,
            claimed: e.claimed,
            claimable_at: e.claimableAt,
            deadline: e.deadline,
            status: e.status,
        })
    }

    /// Posts a slashing verdict with the validators' signatures (anyone may submit them); returns
    /// the receipt and the verdict's id.
    ///
    /// # Errors
    /// [`Error::Reverted`]: `QuorumNotReached`, `NotValidator`, `DuplicateSigner`,
    /// `FractionNotGoverned`, `VerdictExpired`, `EvidenceAlreadyUsed`.
    pub async fn post_verdict(
        &self,
        message: &VerdictMessage,
        signatures: &[Bytes],
    ) -> Result<(TxReceipt, B256)> {
        let id = message.digest(&self.settlement_domain().await?);
        let receipt = self
            .send(
                self.settlement_address()?,
                Settlement::postVerdictCall {
                    member: message.member,
                    evidence: message.evidence,
                    fractionBps: message.fraction_bps,
                    deadline: message.deadline,
                    signatures: signatures.to_vec(),
                },
            )
            .await?;
        Ok((receipt, id))
    }

    /// Executes a verdict after its challenge window (anyone): slashes the member's stake in the
    /// targeted Settlement's role (training, inference or annotator) and jails it.
    ///
    /// # Errors
    /// [`Error::Reverted`]: `ChallengeWindowOpen`, `VerdictNotPending`, `UnknownVerdict`,
    /// `NothingToSlash`.
    pub async fn execute_verdict(&self, id: B256) -> Result<TxReceipt> {
        self.send(
            self.settlement_address()?,
            Settlement::executeVerdictCall { id },
        )
        .await
    }

    /// Cancels a pending verdict (an appeal upheld; sender: the guardian or the timelock).
    ///
    /// # Errors
    /// [`Error::Reverted`]: `NotCanceller`, `ChallengeWindowOver`, `VerdictNotPending`.
    pub async fn cancel_verdict(&self, id: B256) -> Result<TxReceipt> {
        self.send(
            self.settlement_address()?,
            Settlement::cancelVerdictCall { id },
        )
        .await
    }

    /// The governed reward rules (epoch length, epoch pool, shares) validators compute under.
    ///
    /// # Errors
    /// An endpoint error.
    pub async fn reward_rules(&self) -> Result<RewardRules> {
        let p = self
            .view(self.settlement_address()?, Settlement::rewardParamsCall {})
            .await?;
        Ok(RewardRules::from_sol(&p))
    }

    /// The governed settlement parameters (what validators sign under).
    ///
    /// # Errors
    /// An endpoint error.
    pub async fn settlement_params(&self) -> Result<SettlementParams> {
        let p = self
            .view(self.settlement_address()?, Settlement::paramsCall {})
            .await?;
        Ok(SettlementParams {
            challenge_window: p.challengeWindow,
            min_claim_period: p.minClaimPeriod,
            slash_bps: p.slashBps,
            jail_secs: p.jailDuration,
            validator_slash_bps: p.validatorSlashBps,
            slash_to_pool_bps: p.slashToPoolBps,
            validator_min_stake: p.validatorMinStake,
        })
    }

    /// A verdict by id (status 0 when unknown).
    ///
    /// # Errors
    /// An endpoint error.
    pub async fn verdict(&self, id: B256) -> Result<VerdictState> {
        let v = self
            .view(self.settlement_address()?, Settlement::verdictCall { id })
            .await?;
        Ok(VerdictState {
            member: v.member,
            evidence: v.evidence,
            fraction_bps: v.fractionBps,
            executable_at: v.executableAt,
            status: v.status,
        })
    }

    /// The validator set and the quorum.
    ///
    /// # Errors
    /// An endpoint error.
    pub async fn validators(&self) -> Result<(Vec<Address>, u8)> {
        let set = self
            .view(self.settlement_address()?, Settlement::validatorsCall {})
            .await?;
        let quorum = self
            .view(self.settlement_address()?, Settlement::quorumCall {})
            .await?;
        Ok((set, quorum))
    }

    /// Contradictions proven against `validator` (its on-chain reputation; lower is better).
    ///
    /// # Errors
    /// An endpoint error.
    pub async fn strikes(&self, validator: Address) -> Result<u32> {
        self.view(
            self.settlement_address()?,
            Settlement::strikesCall { validator },
        )
        .await
    }

    /// Proves that a validator signed `message` for an epoch whose posted root (after its
    /// challenge window) differs: the validator earns a strike and, if governed so, is slashed.
    /// Anyone may report.
    ///
    /// # Errors
    /// [`Error::Reverted`]: `NotContradicting`, `AlreadyReported`, `NotValidator`,
    /// `InvalidSignature`, `ChallengeWindowOpen`, `EpochCancelled`, `UnknownEpoch`.
    pub async fn report_contradiction(
        &self,
        message: &RootMessage,
        signature: &Bytes,
    ) -> Result<TxReceipt> {
        self.send(
            self.settlement_address()?,
            Settlement::reportContradictionCall {
                epoch_: message.epoch,
                root: message.root,
                total: message.total,
                deadline: message.deadline,
                signature: signature.clone(),
            },
        )
        .await
    }

    /// Pays a fee of `amount` from the sender: approves the Settlement, then half is burnt and
    /// the rest goes to the inference pool. The call the inference network makes.
    ///
    /// # Errors
    /// [`Error::InvalidInput`] for zero; [`Error::Reverted`] (`ERC20InsufficientBalance`).
    pub async fn split_fee(&self, amount: U256) -> Result<TxReceipt> {
        let amount = nonzero(amount, "fee")?;
        self.send(
            self.deployment.token,
            ProposalToken::approveCall {
                spender: self.settlement_address()?,
                value: amount,
            },
        )
        .await?;
        self.send(
            self.settlement_address()?,
            Settlement::splitFeeCall { amount },
        )
        .await
    }
}
