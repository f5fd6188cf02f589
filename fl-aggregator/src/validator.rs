//! The QA validator role: recompute an epoch's rewards and verdicts from the anchored
//! checkpoints, sign them, publish the signatures next to the checkpoints, and post on chain
//! whatever a validator quorum signed alike (`fl-aggregator validate`).
//!
//! A validator trusts neither the coordinator nor the other validators. For epoch `e` it
//!
//! 1. reads the governed rules from the DAO's Settlement (`rewardParams`: the epoch's rounds,
//!    pool and shares; `params`: challenge window, claim period, slash fraction);
//! 2. waits until the epoch's last round is anchored, then checks every round's checkpoint
//!    against the chain ([`verify_checkpoint`]: parameters hash, CID, participants root);
//! 3. recomputes the reward list from those manifests ([`epoch_rewards`], the formula of
//!    [`crate::settle`]) and its Merkle root;
//! 4. re-checks every evidence file of the epoch's rounds ([`qa::check_file`], opening sealed
//!    records with its own key, against the round's manifest) and keeps the flags that hold;
//! 5. signs the root and one verdict per holding flag (EIP-712, [`dao::settle`]) and publishes
//!    them with the list as `settlement/<epoch:010>/<validator>.json` in the checkpoint store
//!    ([`EpochSignatures`]);
//! 6. collects the published signatures: a root or verdict that a quorum of distinct current
//!    validators signed alike is posted (anyone may submit; the contract checks the quorum
//!    again); once a posted root survived its challenge window, a published signature over
//!    another root for the same epoch is reported (`reportContradiction`: a strike, and the
//!    governed slash); verdicts whose window is over are executed.
//!
//! Deadlines are derived, not chosen, so that honest validators sign identical messages: a
//! root's claim deadline is the epoch's last anchor time plus the challenge window, the
//! minimum claim period and [`POST_GRACE_SECS`]; a verdict may be posted until the last anchor
//! time plus [`POST_GRACE_SECS`].
//!
//! What stays the coordinator's word: the per-round contribution scores are computed by the
//! aggregator (recomputing them needs every member's update, which nobody else sees); the
//! anchor commits to them (the round's metrics are a leaf of its participants root, see
//! [`crate::anchoring::metrics_digest`]), so they cannot be rewritten after anchoring
//! without [`ValidatorError::Unanchored`], but a coordinator that lied when it anchored is not
//! caught here. The poisoning evidence, by contrast, is recomputed from the sealed update itself.
//!
//! ```no_run
//! # async fn run(v: fl_aggregator::validator::Validator) -> Result<(), Box<dyn std::error::Error>> {
//! let review = v.review(1).await?;               // recompute epoch 1
//! println!("root {} pays {} base units", review.root.root, review.root.total);
//! v.publish(&review).await?;                      // sign and publish
//! let report = v.settle(1).await?;                // post what a quorum signed
//! println!("{report}");
//! # Ok(()) }
//! ```

use std::collections::BTreeMap;
use std::fmt;
use std::ops::RangeInclusive;

use chain_anchor::alloy::primitives::{Address, B256, Bytes, U256};
use chain_anchor::alloy::signers::local::PrivateKeySigner;
use chain_anchor::alloy::sol_types::Eip712Domain;
use chain_anchor::{Anchor, AnchoredCheckpoint, ChainAnchor, FederationId};
use dao::settle::{
    RewardTree, RootMessage, VerdictMessage, recover_signer, sign_root, sign_verdict,
};
use dao::{Dao, RewardRules};
use fl_core::MemberKey;
use serde::{Deserialize, Serialize};

use crate::anchoring::verify_checkpoint;
use crate::checkpoint::{CheckpointStore, Manifest};
use crate::qa::{self, CheckOptions};
use crate::settle::{EpochPolicy, MemberReward, epoch_improved, epoch_rewards};

/// Seconds after an epoch's last anchor during which its root and verdicts can be posted with
/// the derived deadlines (14 days).
pub const POST_GRACE_SECS: u64 = 14 * 86_400;

/// Largest signature file read from the store.
pub const MAX_SIGNATURE_FILE_BYTES: u64 = 4 << 20;

/// Largest evidence file read from the store.
const MAX_EVIDENCE_FILE_BYTES: u64 = 256 << 20;

/// Format version of [`EpochSignatures`].
pub const SIGNATURES_VERSION: u32 = 1;

/// Why a validator step failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ValidatorError {
    /// The epoch's last round is not anchored yet.
    #[error("epoch {epoch} ends at round {last}; the chain has anchored up to {anchored:?}")]
    NotReady {
        /// The epoch.
        epoch: u64,
        /// Its last round.
        last: u64,
        /// The last anchored round.
        anchored: Option<u64>,
    },
    /// Epoch 0, or an epoch past the rounds `u64` can number.
    #[error("there is no epoch {0} (epochs count from 1)")]
    NoSuchEpoch(u64),
    /// A round's checkpoint does not match its anchor.
    #[error("round {round}: the checkpoint does not match the chain: {reason}")]
    Unanchored {
        /// The round.
        round: u64,
        /// What differs.
        reason: String,
    },
    /// The rewards cannot be computed.
    #[error("epoch rewards: {0}")]
    Rewards(#[from] crate::settle::EpochError),
    /// The checkpoint store failed.
    #[error("checkpoint store: {0}")]
    Store(#[from] crate::checkpoint::CheckpointError),
    /// The chain failed or refused.
    #[error("chain: {0}")]
    Dao(#[from] dao::Error),
    /// The anchor registry could not be read.
    #[error("anchor registry: {0}")]
    Anchor(#[from] chain_anchor::Error),
    /// Anchor verification failed to run.
    #[error("anchor verification: {0}")]
    Anchoring(#[from] crate::anchoring::AnchoringError),
}

/// One validator's signature over an epoch's root, as published.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RootVote {
    /// The reward tree's root.
    pub root: B256,
    /// The sum of the leaves, base units.
    pub total: U256,
    /// The claim deadline.
    pub deadline: u64,
    /// EIP-712 signature of `Root(epoch, root, total, deadline)`.
    pub signature: Bytes,
}

/// One validator's signature over a slashing verdict, as published.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct VerdictVote {
    /// The member to slash.
    pub member: Address,
    /// The evidence's content hash.
    pub evidence: B256,
    /// The governed fraction, basis points.
    pub fraction_bps: u16,
    /// Last time the verdict may be posted.
    pub deadline: u64,
    /// The round of the evidence.
    pub round: u64,
    /// EIP-712 signature of `Verdict(member, evidence, fractionBps, deadline)`.
    pub signature: Bytes,
}

/// What a validator publishes for an epoch: `settlement/<epoch:010>/<validator>.json`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EpochSignatures {
    /// [`SIGNATURES_VERSION`].
    pub version: u32,
    /// The federation.
    pub federation_id: String,
    /// The epoch.
    pub epoch: u64,
    /// The validator's address.
    pub validator: Address,
    /// Its root signature.
    pub root: RootVote,
    /// The reward list the root commits to (what members claim with).
    pub rewards: Vec<(Address, U256)>,
    /// Its verdict signatures.
    pub verdicts: Vec<VerdictVote>,
}

impl EpochSignatures {
    /// Where the file of `validator` for `epoch` lives under the checkpoint store.
    pub fn path(epoch: u64, validator: Address) -> String {
        format!("{}/{validator}.json", Self::folder(epoch))
    }

    /// The folder of `epoch`'s signature files.
    pub fn folder(epoch: u64) -> String {
        format!("settlement/{epoch:010}")
    }

    /// The root message signed.
    pub fn root_message(&self) -> Option<RootMessage> {
        Some(RootMessage {
            epoch: self.epoch,
            root: self.root.root,
            total: u128::try_from(self.root.total).ok()?,
            deadline: self.root.deadline,
        })
    }

    /// The reward tree of the published list.
    ///
    /// # Errors
    /// [`dao::Error::InvalidInput`] for a duplicate or zero entry.
    pub fn tree(&self) -> dao::Result<RewardTree> {
        RewardTree::new(&self.rewards)
    }
}

/// A flag that holds, and the verdict a validator signs for it.
#[derive(Debug, Clone, PartialEq)]
pub struct HeldFlag {
    /// The evidence file (relative to the store).
    pub file: String,
    /// The round.
    pub round: u64,
    /// The recomputed score.
    pub score: f64,
    /// The verdict.
    pub message: VerdictMessage,
}

/// An epoch as a validator recomputed it.
#[derive(Debug, Clone)]
pub struct EpochReview {
    /// The epoch.
    pub epoch: u64,
    /// Its rounds.
    pub rounds: RangeInclusive<u64>,
    /// Each member's reward and how it was made up.
    pub rewards: Vec<MemberReward>,
    /// Whether the performance share was paid.
    pub improved: bool,
    /// The tree of the non-zero rewards.
    pub tree: RewardTree,
    /// The root message.
    pub root: RootMessage,
    /// The flags that hold.
    pub flags: Vec<HeldFlag>,
    /// Evidence files that were rejected or do not hold, and why.
    pub dismissed: Vec<(String, String)>,
}

/// What [`Validator::settle`] did.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct SettleReport {
    /// The root posted by this call.
    pub posted_root: Option<B256>,
    /// Verdict ids posted by this call.
    pub posted_verdicts: Vec<B256>,
    /// Verdict ids executed by this call.
    pub executed_verdicts: Vec<B256>,
    /// Validators reported for a contradicting root by this call.
    pub reported: Vec<Address>,
    /// Signature files ignored, and why.
    pub ignored: Vec<(String, String)>,
}

impl fmt::Display for SettleReport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.posted_root {
            Some(r) => writeln!(f, "root posted: {r}")?,
            None => writeln!(f, "root posted: none by this call")?,
        }
        for id in &self.posted_verdicts {
            writeln!(f, "verdict posted: {id}")?;
        }
        for id in &self.executed_verdicts {
            writeln!(f, "verdict executed: {id}")?;
        }
        for v in &self.reported {
            writeln!(f, "contradiction reported: validator {v}")?;
        }
        for (file, why) in &self.ignored {
            writeln!(f, "ignored {file}: {why}")?;
        }
        Ok(())
    }
}

/// A QA validator over one federation's checkpoint store and the DAO's chain.
pub struct Validator {
    dao: Dao,
    signer: PrivateKeySigner,
    key: MemberKey,
    store: CheckpointStore,
    anchor: ChainAnchor,
    federation_id: String,
}

impl fmt::Debug for Validator {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Validator")
            .field("address", &self.signer.address())
            .field("federation_id", &self.federation_id)
            .field("store", &self.store.url())
            .finish_non_exhaustive()
    }
}

impl Validator {
    /// A validator signing with `key` (also the key its sealed evidence is opened with), reading
    /// `store` and the anchors of `federation_id` through `anchor`, sending through `dao`.
    ///
    /// # Errors
    /// [`dao::Error::InvalidInput`] if `key` is not a usable chain key.
    pub fn new(
        dao: Dao,
        key: MemberKey,
        store: CheckpointStore,
        anchor: ChainAnchor,
        federation_id: impl Into<String>,
    ) -> dao::Result<Self> {
        let signer: PrivateKeySigner = key
            .to_hex()
            .parse()
            .map_err(|e| dao::Error::InvalidInput(format!("validator key: {e}")))?;
        Ok(Self {
            dao,
            signer,
            key,
            store,
            anchor,
            federation_id: federation_id.into(),
        })
    }

    /// The validator's address.
    pub fn address(&self) -> Address {
        self.signer.address()
    }

    /// The DAO handle it sends through.
    pub fn dao(&self) -> &Dao {
        &self.dao
    }

    /// Recomputes `epoch` from the anchored checkpoints (steps 1 to 4 of the module docs).
    ///
    /// # Errors
    /// [`ValidatorError::NotReady`] before the epoch's last round is anchored,
    /// [`ValidatorError::Unanchored`] for a checkpoint that does not match its anchor, and the
    /// store's, chain's and formula's errors.
    pub async fn review(&self, epoch: u64) -> Result<EpochReview, ValidatorError> {
        let rules: RewardRules = self.dao.reward_rules().await?;
        let rounds = rules
            .rounds(epoch)
            .ok_or(ValidatorError::NoSuchEpoch(epoch))?;
        let federation = FederationId::from_name(&self.federation_id);
        let anchored = self.anchor.latest_round(federation).await?;
        if anchored.is_none_or(|a| a < *rounds.end()) {
            return Err(ValidatorError::NotReady {
                epoch,
                last: *rounds.end(),
                anchored,
            });
        }
        let mut manifests = Vec::new();
        for round in rounds.clone() {
            let manifest = self.store.manifest(round).await?;
            let params = self.store.params_bytes(&manifest).await?;
            let check = verify_checkpoint(&self.anchor, &manifest, &params, None).await?;
            if !check.is_valid() || manifest.federation_id != self.federation_id {
                return Err(ValidatorError::Unanchored {
                    round,
                    reason: check.to_string(),
                });
            }
            manifests.push(manifest);
        }
        let rewards = epoch_rewards(&manifests, &EpochPolicy::from_rules(&rules))?;
        let improved = epoch_improved(&manifests);
        let paid: Vec<(Address, U256)> = rewards
            .iter()
            .filter(|r| !r.amount.is_zero())
            .map(|r| (r.account, r.amount))
            .collect();
        let tree = RewardTree::new(&paid)?;
        let params = self.dao.settlement_params().await?;
        let last_anchor = match self.anchor.lookup(federation, *rounds.end()).await? {
            Some(AnchoredCheckpoint::Single(r)) => r.anchored_at,
            Some(AnchoredCheckpoint::Batched(b)) => b.anchored_at,
            None => {
                return Err(ValidatorError::Unanchored {
                    round: *rounds.end(),
                    reason: "no anchor".into(),
                });
            }
        };
        let deadline = last_anchor
            .saturating_add(params.challenge_window)
            .saturating_add(params.min_claim_period)
            .saturating_add(POST_GRACE_SECS);
        let root = RootMessage::of(epoch, &tree, deadline);
        let (flags, dismissed) = self
            .held_flags(&manifests, params.slash_bps, last_anchor + POST_GRACE_SECS)
            .await?;
        Ok(EpochReview {
            epoch,
            rounds,
            rewards,
            improved,
            tree,
            root,
            flags,
            dismissed,
        })
    }

    /// Every evidence file of the rounds of `manifests`, re-checked: the flags that hold, and
    /// the files dismissed with the reason.
    async fn held_flags(
        &self,
        manifests: &[Manifest],
        fraction_bps: u16,
        deadline: u64,
    ) -> Result<(Vec<HeldFlag>, Vec<(String, String)>), ValidatorError> {
        let mut flags = Vec::new();
        let mut dismissed = Vec::new();
        for manifest in manifests {
            let folder = format!("evidence/{:010}", manifest.round);
            for name in self.store.list_files(&folder).await? {
                let file = format!("{folder}/{name}");
                let bytes = match self.store.get_file(&file, MAX_EVIDENCE_FILE_BYTES).await {
                    Ok(Some(b)) => b,
                    Ok(None) => continue,
                    Err(e) => {
                        dismissed.push((file, e.to_string()));
                        continue;
                    }
                };
                let options = CheckOptions {
                    key: Some(&self.key),
                    manifest: Some(manifest),
                    allow_unsigned: false,
                };
                let (evidence, verdict) = match qa::check_file(&bytes, &options) {
                    Ok(x) => x,
                    Err(e) => {
                        dismissed.push((file, format!("rejected: {e}")));
                        continue;
                    }
                };
                if !verdict.holds {
                    dismissed.push((
                        file,
                        format!("within the threshold (score {:.3})", verdict.score),
                    ));
                    continue;
                }
                let Ok(member) = evidence.update.member.parse::<Address>() else {
                    dismissed.push((file, "the member is not an address".into()));
                    continue;
                };
                let hash = evidence.public_record().evidence_hash;
                flags.push(HeldFlag {
                    file,
                    round: manifest.round,
                    score: verdict.score,
                    message: VerdictMessage {
                        member,
                        evidence: B256::from(*hash.as_bytes()),
                        fraction_bps,
                        deadline,
                    },
                });
            }
        }
        Ok((flags, dismissed))
    }

    /// Signs `review`'s root and verdicts and publishes them (step 5); returns the file's path.
    ///
    /// # Errors
    /// Signing, chain (the EIP-712 domain) or store errors.
    pub async fn publish(&self, review: &EpochReview) -> Result<String, ValidatorError> {
        let domain = self.dao.settlement_domain().await?;
        let root_sig = sign_root(&self.signer, &domain, &review.root)?;
        let mut verdicts = Vec::new();
        for flag in &review.flags {
            verdicts.push(VerdictVote {
                member: flag.message.member,
                evidence: flag.message.evidence,
                fraction_bps: flag.message.fraction_bps,
                deadline: flag.message.deadline,
                round: flag.round,
                signature: sign_verdict(&self.signer, &domain, &flag.message)?,
            });
        }
        let file = EpochSignatures {
            version: SIGNATURES_VERSION,
            federation_id: self.federation_id.clone(),
            epoch: review.epoch,
            validator: self.address(),
            root: RootVote {
                root: review.root.root,
                total: U256::from(review.root.total),
                deadline: review.root.deadline,
                signature: root_sig,
            },
            rewards: review.tree.rewards().collect(),
            verdicts,
        };
        let path = EpochSignatures::path(review.epoch, self.address());
        let bytes = serde_json::to_vec_pretty(&file).expect("signatures serialise");
        self.store.put_file(&path, bytes).await?;
        Ok(path)
    }

    /// Reads every published signature file of `epoch` whose signatures are a current
    /// validator's own; the others are returned as ignored with the reason.
    ///
    /// # Errors
    /// Store or chain errors.
    pub async fn published(
        &self,
        epoch: u64,
    ) -> Result<(Vec<EpochSignatures>, Vec<(String, String)>), ValidatorError> {
        let (validators, _) = self.dao.validators().await?;
        let domain = self.dao.settlement_domain().await?;
        self.published_under(epoch, &validators, &domain).await
    }

    /// [`published`](Self::published) with the validator set and EIP-712 domain already read.
    async fn published_under(
        &self,
        epoch: u64,
        validators: &[Address],
        domain: &Eip712Domain,
    ) -> Result<(Vec<EpochSignatures>, Vec<(String, String)>), ValidatorError> {
        let folder = EpochSignatures::folder(epoch);
        let mut files = Vec::new();
        let mut ignored = Vec::new();
        for name in self.store.list_files(&folder).await? {
            let path = format!("{folder}/{name}");
            let parsed = match self.store.get_file(&path, MAX_SIGNATURE_FILE_BYTES).await {
                Ok(Some(b)) => serde_json::from_slice::<EpochSignatures>(&b)
                    .map_err(|e| format!("malformed: {e}")),
                Ok(None) => continue,
                Err(e) => Err(e.to_string()),
            };
            let checked = parsed.and_then(|f| {
                if f.version != SIGNATURES_VERSION
                    || f.epoch != epoch
                    || f.federation_id != self.federation_id
                {
                    return Err("another version, epoch or federation".into());
                }
                if !validators.contains(&f.validator) {
                    return Err(format!("{} is not a validator", f.validator));
                }
                let message = f.root_message().ok_or("total out of range")?;
                if recover_signer(&message.digest(domain), &f.root.signature) != Some(f.validator) {
                    return Err("the root signature is not the validator's".into());
                }
                Ok(f)
            });
            match checked {
                Ok(f) => files.push(f),
                Err(why) => ignored.push((path, why)),
            }
        }
        Ok((files, ignored))
    }

    /// Collects the published signatures of `epoch` and acts on them (step 6): posts a root or
    /// verdicts a quorum signed alike, reports validators whose signed root contradicts the
    /// posted one after its challenge window, and executes verdicts whose window is over.
    ///
    /// # Errors
    /// Store or chain errors other than the races a concurrent validator causes (a root or
    /// verdict posted, a contradiction reported or a verdict executed by another first).
    pub async fn settle(&self, epoch: u64) -> Result<SettleReport, ValidatorError> {
        let (validators, quorum) = self.dao.validators().await?;
        let quorum = usize::from(quorum).max(1);
        let domain = self.dao.settlement_domain().await?;
        let (files, ignored) = self.published_under(epoch, &validators, &domain).await?;
        let mut report = SettleReport {
            ignored,
            ..SettleReport::default()
        };

        // Roots: the message a quorum signed alike.
        let mut state = self.dao.epoch(epoch).await?;
        if state.status == 0 {
            let mut by_message: BTreeMap<(B256, U256, u64), Vec<Bytes>> = BTreeMap::new();
            for f in &files {
                by_message
                    .entry((f.root.root, f.root.total, f.root.deadline))
                    .or_default()
                    .push(f.root.signature.clone());
            }
            if let Some(((root, total, deadline), sigs)) =
                by_message.into_iter().find(|(_, s)| s.len() >= quorum)
            {
                let message = RootMessage {
                    epoch,
                    root,
                    total: u128::try_from(total).unwrap_or(u128::MAX),
                    deadline,
                };
                match self.dao.post_root(&message, &sigs[..quorum]).await {
                    Ok(_) => report.posted_root = Some(root),
                    Err(dao::Error::Reverted(r)) if r.is("EpochAlreadyPosted") => {}
                    Err(e) => return Err(e.into()),
                }
                state = self.dao.epoch(epoch).await?;
            }
        }

        // Contradictions: once the posted root survived its window.
        let now = self.dao.now().await?;
        if state.status != 0 && state.status != 2 && now >= state.claimable_at {
            for f in &files {
                let Some(message) = f.root_message() else {
                    continue;
                };
                if message.root == state.root && message.total == state.total {
                    continue;
                }
                match self
                    .dao
                    .report_contradiction(&message, &f.root.signature)
                    .await
                {
                    Ok(_) => report.reported.push(f.validator),
                    Err(dao::Error::Reverted(r)) if r.is("AlreadyReported") => {}
                    Err(e) => return Err(e.into()),
                }
            }
        }

        // Verdicts: post those a quorum signed alike, execute those due.
        let mut by_verdict: BTreeMap<(Address, B256, u16, u64), Vec<Bytes>> = BTreeMap::new();
        for f in &files {
            for v in &f.verdicts {
                let message = VerdictMessage {
                    member: v.member,
                    evidence: v.evidence,
                    fraction_bps: v.fraction_bps,
                    deadline: v.deadline,
                };
                if recover_signer(&message.digest(&domain), &v.signature) != Some(f.validator) {
                    report.ignored.push((
                        EpochSignatures::path(epoch, f.validator),
                        format!("a verdict signature on {} is not the validator's", v.member),
                    ));
                    continue;
                }
                by_verdict
                    .entry((v.member, v.evidence, v.fraction_bps, v.deadline))
                    .or_default()
                    .push(v.signature.clone());
            }
        }
        for ((member, evidence, fraction_bps, deadline), sigs) in by_verdict {
            if sigs.len() < quorum {
                continue;
            }
            let message = VerdictMessage {
                member,
                evidence,
                fraction_bps,
                deadline,
            };
            let id = message.digest(&domain);
            let mut verdict = self.dao.verdict(id).await?;
            if verdict.status == 0 {
                match self.dao.post_verdict(&message, &sigs[..quorum]).await {
                    Ok(_) => report.posted_verdicts.push(id),
                    Err(dao::Error::Reverted(r)) if r.is("EvidenceAlreadyUsed") => {}
                    Err(e) => return Err(e.into()),
                }
                verdict = self.dao.verdict(id).await?;
            }
            if verdict.status == 1 && now >= verdict.executable_at {
                match self.dao.execute_verdict(id).await {
                    Ok(_) => report.executed_verdicts.push(id),
                    Err(dao::Error::Reverted(r)) if r.is("VerdictNotPending") => {}
                    Err(e) => return Err(e.into()),
                }
            }
        }
        Ok(report)
    }

    /// Recomputes `epoch` and compares it with the chain: whether the posted root is the
    /// recomputed one, the posted state and the review (`fl-aggregator settle verify`).
    ///
    /// # Errors
    /// As [`review`](Self::review); [`dao::Error::InvalidInput`] when nothing is posted.
    pub async fn verify_posted(
        &self,
        epoch: u64,
    ) -> Result<(bool, dao::EpochState, EpochReview), ValidatorError> {
        let review = self.review(epoch).await?;
        let state = self.dao.epoch(epoch).await?;
        if state.status == 0 {
            return Err(
                dao::Error::InvalidInput(format!("epoch {epoch} has no posted root")).into(),
            );
        }
        let matches = state.root == review.root.root && state.total == review.root.total;
        Ok((matches, state, review))
    }
}
