//! [`Dao`]: the member, proposer, guardian and slasher calls on a deployed DAO.

use alloy::primitives::{Address, B256, Bytes, U256};
use alloy::signers::SignerSync;
use alloy::signers::local::PrivateKeySigner;
use alloy::sol_types::{SolCall, SolStruct, eip712_domain};

use crate::backend::{Backend, TxReceipt};
use crate::bindings::{
    AllocationVesting, DaoGovernor, ModelRegistry, Permit, ProposalToken, RewardPool, Staking,
};
use crate::config::RewardSplit;
use crate::deploy::DaoDeployment;
use crate::types::{
    Action, CurrentModel, Membership, Promotion, Proposal, ProposalState, ProposalStatus, Role,
    Support,
};
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
#[derive(Debug, Clone)]
pub struct Dao {
    backend: Backend,
    deployment: DaoDeployment,
}

fn decode<C: SolCall>(out: &Bytes) -> Result<C::Return> {
    C::abi_decode_returns(out)
        .map_err(|e| Error::MalformedResponse(format!("{}: {e}", C::SIGNATURE)))
}

fn nonzero(amount: U256, what: &str) -> Result<U256> {
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
        }
    }

    /// The same DAO, driven by another account.
    pub fn with_backend(&self, backend: Backend) -> Self {
        Self::new(backend, self.deployment.clone())
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

    async fn view<C: SolCall>(&self, to: Address, call: C) -> Result<C::Return> {
        let out = self.backend.call(to, call.abi_encode().into()).await?;
        decode::<C>(&out)
    }

    async fn send<C: SolCall>(&self, to: Address, call: C) -> Result<TxReceipt> {
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

    // ----- staking -----

    /// Stakes `amount` of the sender's tokens in `role` (locked in place: they keep voting; the
    /// first stake delegates an undelegated account to itself).
    ///
    /// # Errors
    /// [`Error::InvalidInput`] for zero; [`Error::Reverted`] (`InsufficientUnlockedBalance`).
    pub async fn stake(&self, role: Role, amount: U256) -> Result<TxReceipt> {
        let amount = nonzero(amount, "stake")?;
        self.send(
            self.deployment.staking,
            Staking::stakeCall {
                role: role.id(),
                amount,
            },
        )
        .await
    }

    /// Starts unbonding `amount` of the sender's stake in `role`.
    ///
    /// # Errors
    /// [`Error::InvalidInput`] for zero; [`Error::Reverted`] (`InsufficientStake`).
    pub async fn unstake(&self, role: Role, amount: U256) -> Result<TxReceipt> {
        let amount = nonzero(amount, "unstake")?;
        self.send(
            self.deployment.staking,
            Staking::unstakeCall {
                role: role.id(),
                amount,
            },
        )
        .await
    }

    /// Withdraws (unlocks) the sender's unbonded stake in `role`.
    ///
    /// # Errors
    /// [`Error::Reverted`] (`StillUnbonding`, `NothingToWithdraw`).
    pub async fn withdraw(&self, role: Role) -> Result<TxReceipt> {
        self.send(
            self.deployment.staking,
            Staking::withdrawCall { role: role.id() },
        )
        .await
    }

    /// Slashes and burns `amount` of `account`'s stake in `role` (sender: a SLASHER_ROLE holder).
    ///
    /// # Errors
    /// [`Error::Reverted`] (`AccessControlUnauthorizedAccount`, `SlashExceedsStake`).
    pub async fn slash(
        &self,
        account: Address,
        role: Role,
        amount: U256,
        reason: B256,
    ) -> Result<TxReceipt> {
        self.send(
            self.deployment.staking,
            Staking::slashCall {
                account,
                role: role.id(),
                amount,
                reason,
            },
        )
        .await
    }

    /// Jails `account` until `until` (sender: a SLASHER_ROLE holder).
    ///
    /// # Errors
    /// [`Error::Reverted`].
    pub async fn jail(&self, account: Address, until: u64, reason: B256) -> Result<TxReceipt> {
        self.send(
            self.deployment.staking,
            Staking::jailCall {
                account,
                until,
                reason,
            },
        )
        .await
    }

    /// Whether `account` may act in `role` now, and why not.
    ///
    /// # Errors
    /// An endpoint error, [`Error::MalformedResponse`] for an unknown status.
    pub async fn membership(&self, account: Address, role: Role) -> Result<Membership> {
        let m = self
            .view(
                self.deployment.staking,
                Staking::membershipCall {
                    account,
                    role: role.id(),
                },
            )
            .await?;
        Ok(match m.status {
            0 => Membership::Ok { stake: m.staked },
            1 => Membership::NoStake,
            2 => Membership::TooLittle {
                stake: m.staked,
                minimum: m.minimum,
            },
            3 => Membership::Jailed { until: m.jailed },
            4 => Membership::Unbonding {
                stake: m.staked,
                unbonding: m.unbonding,
            },
            other => {
                return Err(Error::MalformedResponse(format!(
                    "membership status {other}"
                )));
            }
        })
    }

    /// Active stake, unbonding stake and the unbonding end of `account` in `role`.
    ///
    /// # Errors
    /// An endpoint error.
    pub async fn position(&self, account: Address, role: Role) -> Result<(U256, U256, u64)> {
        let p = self
            .view(
                self.deployment.staking,
                Staking::positionOfCall {
                    account,
                    role: role.id(),
                },
            )
            .await?;
        Ok((
            U256::from(p.staked),
            U256::from(p.unbonding),
            p.unbondingEnds,
        ))
    }

    // ----- proposals -----

    /// Proposes `actions` (each must target one of the DAO's contracts).
    ///
    /// # Errors
    /// [`Error::Reverted`] (`TargetNotAllowed`, `GovernorInsufficientProposerVotes`, ...).
    pub async fn propose(&self, actions: Vec<Action>, description: String) -> Result<Proposal> {
        if actions.is_empty() {
            return Err(Error::InvalidInput(
                "a proposal needs at least one action".into(),
            ));
        }
        let proposal = Proposal::new(actions, description);
        self.send(
            self.deployment.governor,
            DaoGovernor::proposeCall {
                targets: proposal.targets(),
                values: proposal.values(),
                calldatas: proposal.calldatas(),
                description: proposal.description.clone(),
            },
        )
        .await?;
        Ok(proposal)
    }

    /// The action promoting a checkpoint in the model registry.
    pub fn promotion_action(&self, p: &Promotion) -> Action {
        Action {
            target: self.deployment.model_registry,
            value: U256::ZERO,
            calldata: ModelRegistry::promoteCall {
                federation: p.federation.0,
                round: p.round,
                paramsHash: p.params_hash,
                cid: p.cid.clone(),
            }
            .abi_encode()
            .into(),
        }
    }

    /// Proposes promoting an anchored checkpoint to be its federation's current model.
    ///
    /// # Errors
    /// As [`Dao::propose`].
    pub async fn propose_promotion(&self, p: &Promotion, note: &str) -> Result<Proposal> {
        let description = format!(
            "# Promote round {} of federation {}\n\nparams {} cid {}\n\n{note}",
            p.round, p.federation.0, p.params_hash, p.cid
        );
        self.propose(vec![self.promotion_action(p)], description)
            .await
    }

    /// Proposes a new training-configuration hash for a federation.
    ///
    /// # Errors
    /// As [`Dao::propose`].
    pub async fn propose_training_config(
        &self,
        federation: chain_anchor::FederationId,
        config_hash: B256,
        note: &str,
    ) -> Result<Proposal> {
        let action = Action {
            target: self.deployment.model_registry,
            value: U256::ZERO,
            calldata: ModelRegistry::setTrainingConfigCall {
                federation: federation.0,
                configHash: config_hash,
            }
            .abi_encode()
            .into(),
        };
        let description = format!(
            "# Training configuration of {} -> {config_hash}\n\n{note}",
            federation.0
        );
        self.propose(vec![action], description).await
    }

    /// Proposes a new reward split (must sum to 10,000 basis points).
    ///
    /// # Errors
    /// [`Error::InvalidInput`] for a split that does not sum to 10,000; as [`Dao::propose`].
    pub async fn propose_reward_split(&self, split: RewardSplit, note: &str) -> Result<Proposal> {
        if !split.is_whole() {
            return Err(Error::InvalidInput(
                "the reward split must sum to 10000 basis points".into(),
            ));
        }
        let action = Action {
            target: self.deployment.model_registry,
            value: U256::ZERO,
            calldata: ModelRegistry::setRewardSplitCall {
                split: ModelRegistry::RewardSplit {
                    dataBps: split.data,
                    trainingBps: split.training,
                    inferenceBps: split.inference,
                },
            }
            .abi_encode()
            .into(),
        };
        let description = format!(
            "# Reward split data {} / training {} / inference {} bps\n\n{note}",
            split.data, split.training, split.inference
        );
        self.propose(vec![action], description).await
    }

    /// Votes on a proposal.
    ///
    /// # Errors
    /// [`Error::Reverted`] (`GovernorUnexpectedProposalState`, `GovernorAlreadyCastVote`).
    pub async fn vote(&self, proposal: U256, support: Support) -> Result<TxReceipt> {
        self.send(
            self.deployment.governor,
            DaoGovernor::castVoteCall {
                proposalId: proposal,
                support: support.id(),
            },
        )
        .await
    }

    /// Votes with a reason (recorded in the event).
    ///
    /// # Errors
    /// As [`Dao::vote`].
    pub async fn vote_with_reason(
        &self,
        proposal: U256,
        support: Support,
        reason: &str,
    ) -> Result<TxReceipt> {
        self.send(
            self.deployment.governor,
            DaoGovernor::castVoteWithReasonCall {
                proposalId: proposal,
                support: support.id(),
                reason: reason.to_owned(),
            },
        )
        .await
    }

    /// Queues a succeeded proposal in the timelock.
    ///
    /// # Errors
    /// [`Error::Reverted`] (`GovernorUnexpectedProposalState`).
    pub async fn queue(&self, p: &Proposal) -> Result<TxReceipt> {
        self.send(
            self.deployment.governor,
            DaoGovernor::queueCall {
                targets: p.targets(),
                values: p.values(),
                calldatas: p.calldatas(),
                descriptionHash: p.description_hash(),
            },
        )
        .await
    }

    /// Executes a queued proposal once the timelock delay has passed.
    ///
    /// # Errors
    /// [`Error::Reverted`] (`TimelockUnexpectedOperationState` before the delay,
    /// `GovernorUnexpectedProposalState` a second time, or the action's own error).
    pub async fn execute(&self, p: &Proposal) -> Result<TxReceipt> {
        self.send(
            self.deployment.governor,
            DaoGovernor::executeCall {
                targets: p.targets(),
                values: p.values(),
                calldatas: p.calldatas(),
                descriptionHash: p.description_hash(),
            },
        )
        .await
    }

    /// Cancels a proposal (the guardian at any stage before execution; the proposer while pending).
    ///
    /// # Errors
    /// [`Error::Reverted`] (`GovernorUnableToCancel`, `GovernorUnexpectedProposalState`).
    pub async fn cancel(&self, p: &Proposal) -> Result<TxReceipt> {
        self.send(
            self.deployment.governor,
            DaoGovernor::cancelCall {
                targets: p.targets(),
                values: p.values(),
                calldatas: p.calldatas(),
                descriptionHash: p.description_hash(),
            },
        )
        .await
    }

    /// Every proposal submitted to the Governor, oldest first, rebuilt from its
    /// `ProposalCreated` events (so a proposal can be queued, executed or cancelled by id).
    ///
    /// # Errors
    /// An endpoint error.
    pub async fn proposals(&self) -> Result<Vec<Proposal>> {
        use alloy::sol_types::SolEvent;
        let logs = self
            .backend
            .logs(self.deployment.governor, self.deployment.block_number)
            .await?;
        let mut proposals = Vec::new();
        for log in logs {
            if log.topics().first() != Some(&DaoGovernor::ProposalCreated::SIGNATURE_HASH) {
                continue;
            }
            let Ok(e) = DaoGovernor::ProposalCreated::decode_log_data(&log.data) else {
                continue;
            };
            if e.targets.len() != e.values.len() || e.targets.len() != e.calldatas.len() {
                continue;
            }
            let actions = e
                .targets
                .iter()
                .zip(&e.values)
                .zip(&e.calldatas)
                .map(|((t, v), c)| Action {
                    target: *t,
                    value: *v,
                    calldata: c.clone(),
                })
                .collect();
            let proposal = Proposal::new(actions, e.description);
            if proposal.id == e.proposalId {
                proposals.push(proposal);
            }
        }
        Ok(proposals)
    }

    /// The proposal with this id, from the Governor's events.
    ///
    /// # Errors
    /// [`Error::InvalidInput`] when no such proposal was submitted; an endpoint error.
    pub async fn proposal(&self, id: U256) -> Result<Proposal> {
        self.proposals()
            .await?
            .into_iter()
            .find(|p| p.id == id)
            .ok_or_else(|| Error::InvalidInput(format!("no proposal {id:#x} on this Governor")))
    }

    /// A proposal's state, votes, quorum and times.
    ///
    /// # Errors
    /// [`Error::Reverted`] (`GovernorNonexistentProposal`), an endpoint error.
    pub async fn status(&self, id: U256) -> Result<ProposalStatus> {
        let g = self.deployment.governor;
        let state = self
            .view(g, DaoGovernor::stateCall { proposalId: id })
            .await?;
        let state = ProposalState::from_id(state)
            .ok_or_else(|| Error::MalformedResponse(format!("proposal state {state}")))?;
        let snapshot = self
            .view(g, DaoGovernor::proposalSnapshotCall { proposalId: id })
            .await?;
        let deadline = self
            .view(g, DaoGovernor::proposalDeadlineCall { proposalId: id })
            .await?;
        let eta = self
            .view(g, DaoGovernor::proposalEtaCall { proposalId: id })
            .await?;
        let votes = self
            .view(g, DaoGovernor::proposalVotesCall { proposalId: id })
            .await?;
        let now = self.backend.now().await?;
        let at = if snapshot < U256::from(now) {
            snapshot
        } else {
            U256::from(now.saturating_sub(1))
        };
        let quorum = self
            .view(g, DaoGovernor::quorumCall { timepoint: at })
            .await?;
        let secs = |v: U256| u64::try_from(v).unwrap_or(u64::MAX);
        Ok(ProposalStatus {
            id,
            state,
            snapshot: secs(snapshot),
            deadline: secs(deadline),
            eta: secs(eta),
            against: votes.againstVotes,
            for_votes: votes.forVotes,
            abstain: votes.abstainVotes,
            quorum,
            now,
        })
    }

    /// A federation's current model, `None` before any promotion.
    ///
    /// # Errors
    /// An endpoint error.
    pub async fn current_model(
        &self,
        federation: chain_anchor::FederationId,
    ) -> Result<Option<CurrentModel>> {
        let m = self
            .view(
                self.deployment.model_registry,
                ModelRegistry::currentModelCall {
                    federation: federation.0,
                },
            )
            .await?;
        Ok((m.promotedAt != 0).then_some(CurrentModel {
            round: m.round,
            params_hash: m.paramsHash,
            cid: m.cid,
            promoted_at: m.promotedAt,
        }))
    }

    /// The reward split in the registry.
    ///
    /// # Errors
    /// An endpoint error.
    pub async fn reward_split(&self) -> Result<RewardSplit> {
        let s = self
            .view(
                self.deployment.model_registry,
                ModelRegistry::rewardSplitCall {},
            )
            .await?;
        Ok(RewardSplit {
            data: s.dataBps,
            training: s.trainingBps,
            inference: s.inferenceBps,
        })
    }

    /// A federation's training-configuration hash (zero when never set).
    ///
    /// # Errors
    /// An endpoint error.
    pub async fn training_config(&self, federation: chain_anchor::FederationId) -> Result<B256> {
        self.view(
            self.deployment.model_registry,
            ModelRegistry::trainingConfigCall {
                federation: federation.0,
            },
        )
        .await
    }
}
