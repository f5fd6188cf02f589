//! Governance calls of [`Dao`]: propose (a promotion, a configuration, a reward split), vote,
//! queue, execute, cancel, and the proposals' status.

use alloy::primitives::{B256, U256};
use alloy::sol_types::SolCall;

use super::Dao;
use crate::backend::TxReceipt;
use crate::bindings::{DaoGovernor, ModelRegistry, Staking};
use crate::config::RewardSplit;
use crate::types::{
    Action, CurrentModel, Promotion, Proposal, ProposalState, ProposalStatus, Role, Support,
};
use crate::{Error, Result};

impl Dao {
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

    /// Proposes a new minimum stake for a role (the annotator's is governable; so are the others).
    ///
    /// # Errors
    /// As [`Dao::propose`].
    pub async fn propose_min_stake(
        &self,
        role: Role,
        amount: U256,
        note: &str,
    ) -> Result<Proposal> {
        let action = Action {
            target: self.deployment.staking,
            value: U256::ZERO,
            calldata: Staking::setMinStakeCall {
                role: role.id(),
                amount,
            }
            .abi_encode()
            .into(),
        };
        let description = format!("# Minimum stake of {role:?} -> {amount}\n\n{note}");
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
