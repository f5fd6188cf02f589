//! Who may join: a fixed list from the federation file, or the DAO's staking contract.
//!
//! The gRPC [`service`](crate::service) consults a [`MembershipSource`] at every join and, through
//! the coordinator, for every connected member before each round; the round engine knows nothing
//! of it. "Before each round" is when the coordinator sees the previous round complete: the engine
//! may already have sent the next round's instructions, but a refused member's session ends and
//! it is dropped from that round before it can contribute. The re-check asks the source once per
//! connected member, one after the other. [`MemberList`] is the file's `[members] allowed` list; [`ChainMembers`] asks the DAO's
//! `Staking` contract ([`dao::Dao::membership`]) and admits an address only while it has at least
//! the role's stake and is neither jailed nor unbonding.
//!
//! ## Caching
//! [`ChainMembers`] caches admissions for the current round only
//! ([`MembershipSource::new_round`] forgets them), so a session's frames never reach the chain and
//! each member costs one view call per round. Refusals are not cached: an address that stakes
//! while the aggregator runs is admitted at its next join, without a restart.
//!
//! ## Client ids
//! With a list, a member's client id is its position in the list (as before). With the chain,
//! the coordinator assigns the next free id at an address's first join and keeps it for the
//! aggregator's lifetime (a reconnecting member gets its id back); ids are not persisted across
//! restarts, and the checkpoint manifests record addresses, not ids.

use std::collections::BTreeSet;
use std::future::Future;
use std::pin::Pin;
use std::sync::Mutex;

use dao::{Dao, Membership, Role};
use fl_core::identity::Address;

/// A boxed future of a membership check.
pub type CheckFuture<'a> = Pin<Box<dyn Future<Output = Result<(), Refusal>> + Send + 'a>>;

/// Why an address is not admitted: what `PERMISSION_DENIED` names (or `UNAVAILABLE`, for
/// [`Refusal::Unavailable`]).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum Refusal {
    /// Not in the federation file's `[members] allowed` list.
    #[error("{0} is not a member of this federation")]
    NotListed(Address),
    /// The staking contract refused: no stake, too little, jailed or unbonding.
    #[error("{address} is not admitted as a {} node: {}", role_name(*role), detail(membership))]
    Stake {
        /// The address.
        address: Address,
        /// The role checked.
        role: Role,
        /// What the contract said.
        membership: Membership,
    },
    /// The chain could not be asked (the member may retry).
    #[error("membership of {address} cannot be checked now: {reason}")]
    Unavailable {
        /// The address.
        address: Address,
        /// The endpoint's error.
        reason: String,
    },
}

fn role_name(role: Role) -> &'static str {
    match role {
        Role::Training => "training",
        Role::Inference => "inference",
        Role::Annotator => "annotator",
    }
}

/// The refusal's reason first (`no stake`, `too little`, `jailed`, `unbonding`), then its numbers
/// in whole tokens.
fn detail(m: &Membership) -> String {
    let whole = |v: &dao::chain_anchor::alloy::primitives::U256| *v / dao::tokens(1);
    let reason = m.refusal().unwrap_or("admitted");
    match m {
        Membership::Ok { .. } | Membership::NoStake => reason.to_owned(),
        Membership::TooLittle { stake, minimum } => format!(
            "{reason} ({} staked, the role needs {})",
            whole(stake),
            whole(minimum)
        ),
        Membership::Jailed { until } => format!("{reason} until {until} (unix seconds)"),
        Membership::Unbonding { stake, unbonding } => format!(
            "{reason} ({} unbonding, {} still staked)",
            whole(unbonding),
            whole(stake)
        ),
    }
}

impl Refusal {
    /// The gRPC status a session ends with.
    pub fn to_status(&self) -> tonic::Status {
        match self {
            Self::Unavailable { .. } => tonic::Status::unavailable(self.to_string()),
            _ => tonic::Status::permission_denied(self.to_string()),
        }
    }
}

/// Decides whether an address may take part now.
pub trait MembershipSource: Send + Sync + 'static {
    /// `Ok(())` when `address` may join or stay for the current round.
    fn check(&self, address: Address) -> CheckFuture<'_>;

    /// A new round begins: forget what was cached for the last one.
    fn new_round(&self) {}

    /// The fixed list, when client ids are positions in it; `None` when ids are assigned at
    /// first join.
    fn fixed(&self) -> Option<&[Address]> {
        None
    }
}

/// The federation file's `[members] allowed` list.
#[derive(Debug, Clone)]
pub struct MemberList(Vec<Address>);

impl MemberList {
    /// The list, in file order (a member's client id is its position).
    pub fn new(members: Vec<Address>) -> Self {
        Self(members)
    }
}

impl MembershipSource for MemberList {
    fn check(&self, address: Address) -> CheckFuture<'_> {
        let listed = self.0.contains(&address);
        Box::pin(async move {
            if listed {
                Ok(())
            } else {
                Err(Refusal::NotListed(address))
            }
        })
    }

    fn fixed(&self) -> Option<&[Address]> {
        Some(&self.0)
    }
}

/// The DAO's staking contract: admitted while staked in `role` and neither jailed nor unbonding.
pub struct ChainMembers {
    dao: Dao,
    role: Role,
    admitted: Mutex<BTreeSet<Address>>,
}

impl ChainMembers {
    /// Checks membership in `role` through `dao` (any sender: only views are called).
    pub fn new(dao: Dao, role: Role) -> Self {
        Self {
            dao,
            role,
            admitted: Mutex::new(BTreeSet::new()),
        }
    }

    /// The source a federation file with `[members] source = "chain"` describes: the
    /// deployment in `members.dao`, the role `members.role`, on the `[chain]` backend
    /// (`chain`, already opened for anchoring, so that an embedded EVM is shared, not opened
    /// twice).
    ///
    /// # Errors
    /// [`dao::Error`] for an unreadable deployment, an unknown role, an RPC key that cannot be
    /// loaded or a malformed endpoint; [`dao::Error::Config`] when `[members]` is not a chain
    /// source.
    pub fn from_federation(
        config: &fl_core::config::FederationConfig,
        chain: &chain_anchor::ChainAnchor,
        run_dir: &std::path::Path,
        chain_config: &chain_anchor::ChainConfig,
    ) -> dao::Result<Self> {
        let Some(path) = config.members.dao.as_deref() else {
            return Err(dao::Error::Config(
                "[members] source = \"chain\" needs dao = \"dao.json\"".into(),
            ));
        };
        let deployment = dao::DaoDeployment::load(path)?;
        let role: Role = config.members.role.parse()?;
        let backend = match chain {
            chain_anchor::ChainAnchor::Embedded(anchor) => {
                dao::Backend::embedded(anchor, chain_anchor::EmbeddedAnchor::default_sender())
            }
            chain_anchor::ChainAnchor::Rpc(_) => {
                let settings = chain_config.rpc_settings(run_dir)?;
                dao::Backend::rpc(&settings.url, &settings.key)?
            }
        };
        Ok(Self::new(Dao::new(backend, deployment), role))
    }

    /// The role members must hold.
    pub fn role(&self) -> Role {
        self.role
    }
}

impl std::fmt::Debug for ChainMembers {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ChainMembers")
            .field("staking", &self.dao.deployment().staking)
            .field("role", &self.role)
            .finish()
    }
}

impl MembershipSource for ChainMembers {
    fn check(&self, address: Address) -> CheckFuture<'_> {
        Box::pin(async move {
            let cached = self
                .admitted
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .contains(&address);
            if cached {
                return Ok(());
            }
            let membership = self.dao.membership(address, self.role).await.map_err(|e| {
                Refusal::Unavailable {
                    address,
                    reason: e.to_string(),
                }
            })?;
            if membership.is_member() {
                self.admitted
                    .lock()
                    .unwrap_or_else(|e| e.into_inner())
                    .insert(address);
                Ok(())
            } else {
                Err(Refusal::Stake {
                    address,
                    role: self.role,
                    membership,
                })
            }
        })
    }

    fn new_round(&self) {
        self.admitted
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clear();
    }
}
