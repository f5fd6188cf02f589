//! # dao
//!
//! The on-chain half of a daofl DAO: who may train (those who staked) and which checkpoint is
//! the community's model (a vote, then a 7-day timelock during which the guardian can still
//! cancel). Solidity contracts with committed artifacts, alloy bindings, deployment of the whole
//! DAO from one TOML file, and the calls members, proposers, the guardian and the slasher make,
//! on an EVM JSON-RPC chain or chain-anchor's embedded EVM.
//!
//! ## Contracts (`contracts/*.sol`, Solidity 0.8.28, OpenZeppelin 5.4)
//! - **ProposalToken** ($PROPOSAL): ERC20 + ERC20Permit + ERC20Votes with an ERC-6372 timestamp
//!   clock, burnable; 1,000,000,000 minted once at deployment: 40% data-contributor pool (released
//!   linearly over 10 years), 30% training-node pool, 20% inference-node pool, 5% treasury (the
//!   timelock), 3% team (VestingWallet, 4 years linear), 2% early investors (VestingWallet, 2 years).
//!   The pools pay out only through DISTRIBUTOR_ROLE: the training pool's is Settlement's, the
//!   inference pool's the inference Settlement's, the data pool's the data Settlement's.
//! - **DaoGovernor**: OpenZeppelin Governor + Settings + CountingSimple + Votes + QuorumFraction +
//!   PreventLateQuorum + TimelockControl + ProposalGuardian. Proposals (and `relay`) may only
//!   call the DAO's own contracts: model registry, staking, token, pools, the three Settlements,
//!   InferenceFees, the AnnotationBook and the Governor
//!   (`TargetNotAllowed` otherwise). The timelock is not a default target, so no proposal can
//!   shorten the 7-day delay or grant timelock roles unless an earlier proposal allowed it.
//! - **DaoTimelock**: OpenZeppelin's TimelockController, 7-day minimum delay. **Its only
//!   proposer, canceller and executor is the Governor, and it administers itself**: an extra
//!   proposer or canceller could execute as the timelock or block proposals. The guardian holds no
//!   timelock role; it cancels through the Governor (`GovernorProposalGuardian`), which cancels the
//!   timelock operation. The community's cancel path is the guardian, whom governance appoints and
//!   replaces; a second vote cannot cancel a queued proposal in time (it waits the same 7 days).
//! - **ModelRegistry**: the current model per federation, the training-configuration hash and the
//!   reward split (basis points summing to 10,000). Only the timelock writes, and it promotes only
//!   a checkpoint chain-anchor's CheckpointRegistry anchored with the same parameter hash, CID
//!   and round (`CheckpointNotAnchored`, `ParamsHashMismatch`, `CidMismatch`).
//! - **Staking**: stake per [`Role`] (training 10,000, inference 5,000, annotator configurable),
//!   unbonding longer than the challenge window (unbonding stake can still be slashed), slashing by
//!   SLASHER_ROLE that **burns** (the supply falls by exactly the slash), jailing, and the
//!   [`Membership`] view an aggregator checks.
//! - **Settlement** ([`settle`], `Dao::post_root` and friends): an epoch's (index, address,
//!   amount) list in OpenZeppelin StandardMerkleTree layout ([`RewardTree`]) is accepted only with
//!   EIP-712 signatures of a quorum of the QA validator set over (epoch, root, total, deadline)
//!   (`[settlement]`: 3-of-5, 5-of-7, any strict majority of at most 16; the timelock changes the
//!   set), pulls the total from the training pool, and becomes claimable after the challenge
//!   window (`staking.challenge_window_secs`), during which the timelock or the guardian can
//!   cancel it for good. Each member claims its own leaf once (a claim self-delegates an account
//!   that never delegated); after the signed deadline anyone sweeps the rest back to the pool.
//!   A slashing verdict (member, evidence content hash, governed fraction) signed by a quorum
//!   waits out the same window (the member's appeal), then slashes that fraction of the
//!   training stake through Staking (burnt, but for the governed `slash_to_pool_bps` part, which
//!   returns to the training pool), jails the member and emits `MemberSlashed` naming
//!   the evidence hash. `splitFee` burns half of a fee and sends the rest to the inference pool.
//!   A second instance serves inference nodes (`Dao::inference_settlement` targets it; same
//!   validators, quorum and parameters, its own EIP-712 domain): its roots are paid from the
//!   inference pool and its verdicts (immutable `memberRole` 1) slash and jail inference stake,
//!   never training stake. A third serves annotators (`Dao::data_settlement`, `memberRole` 2):
//!   annotation reward roots paid from the data pool, verdicts slashing and jailing annotator
//!   stake. Validators' own stake is checked and slashed in the training role at all three.
//!   Refusals: `QuorumNotReached`, `NotValidator`, `DuplicateSigner`, `InvalidSignature`,
//!   `EpochAlreadyPosted`, `EpochCancelled`, `DeadlineTooSoon`, `ChallengeWindowOpen`,
//!   `ChallengeWindowOver`, `NotCanceller`, `InvalidProof`, `NotClaimant`, `AlreadyClaimed`,
//!   `ClaimDeadlinePassed`, `ClaimPeriodOpen`, `AlreadySwept`, `FractionNotGoverned`,
//!   `VerdictExpired`, `EvidenceAlreadyUsed`, `VerdictNotPending`, `NothingToSlash`,
//!   `ExceedsEpochPool`, `NotContradicting`, `AlreadyReported`.
//!   Validators answer for their signatures: after a root's challenge window anyone may
//!   `report_contradiction` with a validator's signature over another (root, total) for the
//!   epoch, which records a strike and, if governed (`validator_slash_bps`), slashes it. The
//!   reward rules (epoch length, epoch pool, shares) are governed on chain (`reward_rules`).
//! - **InferenceFees** ([`fees`], `Dao::deposit_fees` and friends): requesters prepay
//!   (`deposit`) and sign one EIP-712 `Receipt(requester, gateway, requestHash, fee, nonce,
//!   deadline)` per request ([`fees::sign_receipt`]); anyone (a gateway) `settle`s up to 256 in
//!   one transaction. A receipt with a bad signature, a used nonce, a passed deadline, a fee under
//!   the governed minimum (0.1 $PROPOSAL by default) or too little behind it is skipped with
//!   `ReceiptRejected(index, requester, nonce, reason)` ([`fees::RejectReason`]) and never reverts
//!   the others; the batch's fees go through the inference Settlement's `splitFee` in one call
//!   (half burnt, half to the inference pool). Withdrawals wait the governed `withdrawDelay`
//!   (2 days by default) during which receipts can still be charged, so a gateway can settle
//!   what it accepted before the money leaves. Refusals: `BatchTooLarge`, `LengthMismatch`,
//!   `InsufficientBalance`, `NothingUnlocking`, `StillUnlocking`.
//! - **AnnotationBook** (`Dao::join_annotation_epoch`, `open_annotation_epoch`,
//!   `commit_annotation`, `reveal_annotation`, [`AnnotationEvent`]): per annotation epoch,
//!   staked unjailed annotators join a pool (at most 256); the opener (OPENER_ROLE,
//!   `[annotations] opener`) fixes the items as the Merkle root of their CID digests
//!   ([`data::RecordBatch`]); the seed is the hash of the opening's block, which nobody knows when
//!   sending it. Commits (until the commit deadline) are checked on chain: the item is in the
//!   epoch, the annotator is among its `annotators_per_item` highest `contrib::assign` rendezvous
//!   scores in the pool, no second commit, no reused commitment value; reveals (until the reveal
//!   deadline) must hash to the commitment exactly as `contrib::commit::Commitment` does
//!   (SHA-256 of tag, annotator, annotation CID digest, salt). Periods and annotators per item are
//!   governed by the timelock. Refusals decode into [`AnnotationRefusal`].
//!
//! ### Decisions
//! - **Staked tokens keep their voting power.** Staking is non-custodial: the token locks the
//!   staked amount inside the staker's own balance (not transferable, burnable only by a slash),
//!   so votes are untouched, and the first stake of an account that never delegated delegates it
//!   to itself (voting power is zero until delegation otherwise).
//! - **Quorum over votable supply.** `quorum_percent` of the total supply minus what the pools,
//!   treasury and vesting wallets hold (checkpointed by the token), and never below
//!   `quorum_floor_tokens`, so locked allocations do not make quorum unreachable and a small early
//!   circulating supply cannot pass proposals with a handful of votes.
//! - **Rewards wait in Settlement, not in the pool.** Posting a root moves its total out of the
//!   training pool into Settlement (cancel and sweep move it back), so claims are plain transfers.
//!   Settlement is not an allocation holder: escrowed tokens count in the votable supply while
//!   they wait (no one's votes; the quorum is at most one epoch's total higher), which keeps the
//!   votable-supply checkpoint out of every claim.
//! - **One toolchain pin.** The contracts compile with chain-anchor's pinned solc-js and
//!   OpenZeppelin (`npm ci` in chain-anchor, then `node dao/scripts/compile.mjs`; `--check` in CI).
//!
//! ## What it does not do
//! Settlement does not compute the epochs' rewards or verdicts (the validator role that
//! recomputes them from anchored checkpoints, and `settle verify`, are not built); the inference
//! network itself (nodes, gateways, their scoring) lives in `fl-client`: this crate holds its
//! payments and slashing only; no indexing (Tally
//! needs an RPC chain with an explorer; anvil and the embedded EVM cannot be indexed). The
//! embedded EVM proves nothing to third parties: it checks no signatures and its state file can be
//! rewritten. Membership checks inside the aggregator are wired elsewhere, through [`Dao::membership`].
//!
//! ## Feature flags
//! - `cli`: the `daofl-dao` binary.
//!
//! ## Example
//! ```no_run
//! use dao::{Backend, Dao, DaoConfig, Promotion, Role, Support, deploy, tokens};
//! use chain_anchor::{EmbeddedAnchor, FederationId};
//!
//! # async fn run() -> dao::Result<()> {
//! let anchor = EmbeddedAnchor::open(std::path::Path::new("runs/demo/chain"))?;
//! let deployer = Backend::embedded(&anchor, EmbeddedAnchor::default_sender());
//! let config = DaoConfig::load(std::path::Path::new("dao.toml"))?;
//! let deployment = deploy(&config, &deployer).await?;
//! deployment.save(std::path::Path::new("dao.json"))?;
//!
//! let member = Dao::new(deployer.acting_as(config.allocation.team)?, deployment);
//! member.claim_vesting(member.deployment().team_vesting).await?;
//! member.stake(Role::Training, tokens(10_000)).await?;
//! assert!(member.membership(member.sender(), Role::Training).await?.is_member());
//!
//! let promotion = Promotion {
//!     federation: FederationId::from_name("demo"),
//!     round: 7,
//!     params_hash: [1u8; 32].into(),
//!     cid: "bafkrei...".into(),
//! };
//! let proposal = member.propose_promotion(&promotion, "round 7 beats round 6").await?;
//! member.advance_time(config.governance.voting_delay_secs + 1).await?;
//! member.vote(proposal.id, Support::For).await?;
//! member.advance_time(config.governance.voting_period_secs + 1).await?;
//! member.queue(&proposal).await?;
//! member.advance_time(config.governance.timelock_delay_secs + 1).await?;
//! member.execute(&proposal).await?;
//! println!("{:?}", member.current_model(promotion.federation).await?);
//! # Ok(())
//! # }
//! ```

mod backend;
pub mod bindings;
mod client;
mod config;
pub mod data;
mod deploy;
mod error;
pub mod fees;
pub mod settle;
mod types;

pub use backend::{Backend, EmbeddedBackend, RpcBackend, RpcTimeouts, TxReceipt};
pub use client::{
    AnnotationCommit, AnnotationEpoch, AnnotationEvent, AnnotationParams, AnnotationRefusal,
    AnnotationReveal, Dao, EpochState, FeeAccount, RegisteredBatch, SettleOutcome, SettlementKind,
    SettlementParams, SignedPermit, VerdictState,
};
pub use config::{
    AllocationConfig, AnnotationsConfig, DATA_POOL_RELEASE, DAY, DaoConfig, FeesConfig,
    GovernanceConfig, INVESTOR_VESTING, MIN_TIMELOCK_DELAY, ModelConfig, RewardSplit,
    SettlementConfig, StakingConfig, TEAM_VESTING, TokenConfig, YEAR, tokens,
};
pub use deploy::{DaoDeployment, deploy};
pub use error::{Error, Result, Revert};
pub use settle::{RewardRules, RewardTree, RootMessage, VerdictMessage};
pub use types::{
    Action, CurrentModel, Membership, Promotion, Proposal, ProposalState, ProposalStatus, Role,
    Support,
};

pub use chain_anchor;
