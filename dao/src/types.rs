//! The DAO's vocabulary: roles, membership, proposals and their states.

use alloy::primitives::{Address, B256, Bytes, U256, keccak256};
use alloy::sol_types::SolValue;
use serde::{Deserialize, Serialize};

/// A staking role.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Role {
    /// A training node (10,000 tokens by default).
    Training,
    /// An inference node (5,000 tokens by default).
    Inference,
    /// An annotator (governable minimum).
    Annotator,
}

impl Role {
    /// Every role.
    pub const ALL: [Self; 3] = [Self::Training, Self::Inference, Self::Annotator];

    /// The role's number in the Staking contract.
    pub fn id(self) -> u8 {
        match self {
            Self::Training => 0,
            Self::Inference => 1,
            Self::Annotator => 2,
        }
    }
}

impl std::str::FromStr for Role {
    type Err = crate::Error;
    fn from_str(s: &str) -> crate::Result<Self> {
        match s {
            "training" => Ok(Self::Training),
            "inference" => Ok(Self::Inference),
            "annotator" => Ok(Self::Annotator),
            other => Err(crate::Error::InvalidInput(format!(
                "role {other:?}: expected training, inference or annotator"
            ))),
        }
    }
}

/// Whether an address may act in a role now, and why not: what an aggregator checks at join and
/// before every round.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "status", rename_all = "snake_case")]
pub enum Membership {
    /// At least the role's minimum is staked and the account is not jailed.
    Ok {
        /// Active stake.
        stake: U256,
    },
    /// Nothing staked in the role (and nothing unbonding).
    NoStake,
    /// Some stake, below the minimum.
    TooLittle {
        /// Active stake.
        stake: U256,
        /// The role's minimum.
        minimum: U256,
    },
    /// Jailed by the slasher until a time.
    Jailed {
        /// Unix seconds.
        until: u64,
    },
    /// Leaving: the active stake is below the minimum and some stake is unbonding.
    Unbonding {
        /// Active stake left.
        stake: U256,
        /// Stake unbonding.
        unbonding: U256,
    },
}

impl Membership {
    /// Whether the address is admitted.
    pub fn is_member(&self) -> bool {
        matches!(self, Self::Ok { .. })
    }

    /// A short reason for a refusal (`"no stake"`, `"too little"`, `"jailed"`, `"unbonding"`), `None` when admitted.
    pub fn refusal(&self) -> Option<&'static str> {
        match self {
            Self::Ok { .. } => None,
            Self::NoStake => Some("no stake"),
            Self::TooLittle { .. } => Some("too little"),
            Self::Jailed { .. } => Some("jailed"),
            Self::Unbonding { .. } => Some("unbonding"),
        }
    }
}

/// A vote.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Support {
    /// Against.
    Against,
    /// For.
    For,
    /// Abstain (counts toward quorum).
    Abstain,
}

impl Support {
    /// GovernorCountingSimple's number.
    pub fn id(self) -> u8 {
        match self {
            Self::Against => 0,
            Self::For => 1,
            Self::Abstain => 2,
        }
    }
}

/// OpenZeppelin's `IGovernor.ProposalState`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ProposalState {
    /// Waiting for the voting delay.
    Pending,
    /// Voting.
    Active,
    /// Cancelled (by the proposer before voting, or the guardian).
    Canceled,
    /// Vote over: not enough For votes or no quorum.
    Defeated,
    /// Vote passed, not queued yet.
    Succeeded,
    /// In the timelock.
    Queued,
    /// Not executed in time (unused by the timelock flow).
    Expired,
    /// Executed.
    Executed,
}

impl ProposalState {
    /// From the Governor's number.
    pub fn from_id(id: u8) -> Option<Self> {
        Some(match id {
            0 => Self::Pending,
            1 => Self::Active,
            2 => Self::Canceled,
            3 => Self::Defeated,
            4 => Self::Succeeded,
            5 => Self::Queued,
            6 => Self::Expired,
            7 => Self::Executed,
            _ => return None,
        })
    }
}

/// One call a proposal makes through the timelock.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Action {
    /// The called contract.
    pub target: Address,
    /// Wei sent.
    pub value: U256,
    /// Calldata.
    pub calldata: Bytes,
}

/// A proposal as submitted: enough to queue, execute or cancel it later.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Proposal {
    /// The Governor's id: `keccak256(abi.encode(targets, values, calldatas, descriptionHash))`.
    pub id: U256,
    /// The calls.
    pub actions: Vec<Action>,
    /// The description (its hash is part of the id).
    pub description: String,
}

impl Proposal {
    /// A proposal of `actions` with `description`, its id computed as the Governor does.
    pub fn new(actions: Vec<Action>, description: String) -> Self {
        let mut p = Self {
            id: U256::ZERO,
            actions,
            description,
        };
        p.id = U256::from_be_bytes(
            keccak256(
                (p.targets(), p.values(), p.calldatas(), p.description_hash()).abi_encode_params(),
            )
            .0,
        );
        p
    }

    /// Targets of the actions.
    pub fn targets(&self) -> Vec<Address> {
        self.actions.iter().map(|a| a.target).collect()
    }

    /// Values of the actions.
    pub fn values(&self) -> Vec<U256> {
        self.actions.iter().map(|a| a.value).collect()
    }

    /// Calldata of the actions.
    pub fn calldatas(&self) -> Vec<Bytes> {
        self.actions.iter().map(|a| a.calldata.clone()).collect()
    }

    /// `keccak256(description)`.
    pub fn description_hash(&self) -> B256 {
        keccak256(self.description.as_bytes())
    }
}

/// A checkpoint to promote: what chain-anchor's registry anchored for a round.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Promotion {
    /// The federation.
    pub federation: chain_anchor::FederationId,
    /// The round.
    pub round: u64,
    /// SHA-256 of the canonical parameter bytes.
    pub params_hash: B256,
    /// Content identifier of the parameters.
    pub cid: String,
}

impl Promotion {
    /// The promotion of the round a checkpoint manifest describes (fl-aggregator's
    /// `rounds/<round>.json`): its `federation_id`, `round`, `params_cid`, and the parameter hash
    /// its `anchor` recorded. Only the fields read here are checked; the manifest must be anchored.
    ///
    /// # Errors
    /// [`Error::InvalidInput`](crate::Error::InvalidInput) naming the missing or malformed field.
    pub fn from_manifest_json(bytes: &[u8]) -> crate::Result<Self> {
        let bad = |what: &str| crate::Error::InvalidInput(format!("checkpoint manifest: {what}"));
        let v: serde_json::Value =
            serde_json::from_slice(bytes).map_err(|e| bad(&format!("not JSON: {e}")))?;
        let federation = v["federation_id"]
            .as_str()
            .ok_or_else(|| bad("no federation_id string"))?;
        let round = v["round"].as_u64().ok_or_else(|| bad("no round number"))?;
        let cid = v["params_cid"]
            .as_str()
            .ok_or_else(|| bad("no params_cid string"))?;
        let params_hash = v["anchor"]["params_hash"]
            .as_str()
            .ok_or_else(|| bad("not anchored (no anchor.params_hash): anchor the round first"))?
            .parse::<B256>()
            .map_err(|_| bad("anchor.params_hash is not 32 hex bytes"))?;
        Ok(Self {
            federation: chain_anchor::FederationId::from_name(federation),
            round,
            params_hash,
            cid: cid.to_owned(),
        })
    }
}

/// A federation's current model in the registry.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CurrentModel {
    /// Round of the promoted checkpoint.
    pub round: u64,
    /// Its parameter hash.
    pub params_hash: B256,
    /// Its CID.
    pub cid: String,
    /// When it was promoted (unix seconds).
    pub promoted_at: u64,
}

/// A proposal's state and clock.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ProposalStatus {
    /// The proposal.
    pub id: U256,
    /// Its state now.
    pub state: ProposalState,
    /// Voting starts after this time (the snapshot of voting power).
    pub snapshot: u64,
    /// Voting ends at this time.
    pub deadline: u64,
    /// When a queued proposal becomes executable (0 when not queued).
    pub eta: u64,
    /// Votes against.
    pub against: U256,
    /// Votes for.
    pub for_votes: U256,
    /// Abstentions.
    pub abstain: U256,
    /// The quorum it needs (at its snapshot; the current quorum while pending).
    pub quorum: U256,
    /// The chain's time when read.
    pub now: u64,
}

impl ProposalStatus {
    /// Seconds until the next step: voting starts (pending), ends (active), execution opens
    /// (queued); `None` when nothing waits on time.
    pub fn time_left(&self) -> Option<u64> {
        match self.state {
            ProposalState::Pending => Some(self.snapshot.saturating_sub(self.now) + 1),
            ProposalState::Active => Some(self.deadline.saturating_sub(self.now) + 1),
            ProposalState::Queued => Some(self.eta.saturating_sub(self.now)),
            _ => None,
        }
    }
}

impl std::fmt::Display for ProposalStatus {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "proposal {:#x}: {:?}; for {} against {} abstain {} (quorum {})",
            self.id, self.state, self.for_votes, self.against, self.abstain, self.quorum
        )?;
        if let Some(t) = self.time_left() {
            write!(f, "; next step in {t} s")?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn promotion_from_a_manifest() {
        let hash = format!("0x{}", "ab".repeat(32));
        let json = format!(
            r#"{{"version":1,"federation_id":"quickstart","round":30,"params_cid":"bafkreiabc",
               "anchor":{{"params_hash":"{hash}","epsilon_micros":1}}}}"#
        );
        let p = Promotion::from_manifest_json(json.as_bytes()).unwrap();
        assert_eq!(p.round, 30);
        assert_eq!(p.cid, "bafkreiabc");
        assert_eq!(p.params_hash, B256::repeat_byte(0xab));
        assert_eq!(
            p.federation,
            chain_anchor::FederationId::from_name("quickstart")
        );
        for bad in [
            "not json",
            "[]",
            r#"{"federation_id":"f","round":-1,"params_cid":"c"}"#,
            r#"{"federation_id":"f","round":1,"params_cid":"c"}"#,
            r#"{"federation_id":"f","round":1,"params_cid":"c","anchor":{"params_hash":"0x12"}}"#,
        ] {
            assert!(
                matches!(
                    Promotion::from_manifest_json(bad.as_bytes()),
                    Err(crate::Error::InvalidInput(_))
                ),
                "{bad}"
            );
        }
    }

    #[test]
    fn role_and_state_numbers() {
        assert_eq!(
            Role::ALL.map(Role::id),
            [0, 1, 2],
            "the Staking contract's numbering"
        );
        assert_eq!("annotator".parse::<Role>().unwrap(), Role::Annotator);
        assert!("admin".parse::<Role>().is_err());
        assert_eq!(ProposalState::from_id(7), Some(ProposalState::Executed));
        assert_eq!(ProposalState::from_id(8), None);
        assert_eq!(Membership::NoStake.refusal(), Some("no stake"));
        assert!(
            Membership::Ok {
                stake: U256::from(1)
            }
            .is_member()
        );
    }
}
