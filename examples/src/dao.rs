//! The quickstart governed by a DAO on the embedded EVM (`examples/quickstart-dao.toml`): a thin
//! layer over the [`dao`] library.
//!
//! Before training, [`deploy_and_stake`] deploys the whole DAO on the run's embedded chain (the
//! one the rounds are anchored on), the team claims its vested tokens and delegates them to
//! itself, and gives every member the training-node stake, which each member stakes; the
//! members the Staking contract admits (through the aggregator's
//! [`ChainMembers`]) are counted. After training,
//! [`promote`] proposes the final anchored checkpoint as the community's model, the team and
//! the members vote for it, it is queued, the chain's clock jumps over the 7-day timelock, it is
//! executed, and the model registry is read back. Every step's proposal state, chain time and
//! gas is kept in a [`ProposalLife`].
//!
//! The embedded EVM checks no signatures: every actor here is an address the example acts as.
//! On a real chain each member signs its own stake and vote (see the README's "Govern a model").

use std::path::Path;

use dao::chain_anchor::EmbeddedAnchor;
use dao::chain_anchor::alloy::primitives::{Address, keccak256};
use dao::chain_anchor::alloy::sol_types::SolCall;
use dao::{
    Backend, CurrentModel, Dao, DaoConfig, DaoDeployment, Promotion, Proposal, ProposalState, Role,
    Support, YEAR, deploy, tokens,
};
use fl_aggregator::membership::{ChainMembers, MembershipSource};

/// `[dao]` of a quickstart file: its presence runs the federation under a DAO.
#[derive(Debug, Clone, PartialEq, Eq, serde::Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct DaoQuickstart {
    /// Tokens each member stakes as a training node (default 10,000, the minimum).
    pub stake_tokens: u64,
    /// How many members vote for the promotion besides the team (default 5).
    pub voting_members: usize,
    /// The promotion proposal's description.
    pub description: String,
}

impl Default for DaoQuickstart {
    fn default() -> Self {
        Self {
            stake_tokens: 10_000,
            voting_members: 5,
            description: "Promote the quickstart's final round as the community's digits model"
                .into(),
        }
    }
}

/// The DAO of a run, deployed and staked.
#[derive(Debug, Clone)]
pub struct DaoSetup {
    /// What was deployed where (also written to `dao.json` in the run folder).
    pub deployment: DaoDeployment,
    /// The configuration deployed.
    pub config: DaoConfig,
    /// The team (the big holder that proposes and votes).
    pub team: Address,
    /// The members' addresses, by client id.
    pub members: Vec<Address>,
    /// How many members the Staking contract admits as training nodes.
    pub admitted: usize,
    /// Gas of the whole deployment.
    pub deploy_gas: u64,
}

/// One step of a proposal's life.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Step {
    /// What was done.
    pub action: &'static str,
    /// The proposal's state after it.
    pub state: ProposalState,
    /// The chain's time after it (unix seconds).
    pub at: u64,
    /// Gas of its transactions (0 for a clock jump).
    pub gas: u64,
}

/// A promotion from proposal to execution.
#[derive(Debug, Clone)]
pub struct ProposalLife {
    /// The proposal.
    pub proposal: Proposal,
    /// What it promotes.
    pub promotion: Promotion,
    /// Its steps, in order.
    pub steps: Vec<Step>,
    /// The model registry's entry after execution.
    pub current: Option<CurrentModel>,
}

fn actor(name: &str) -> Address {
    Address::from_slice(&keccak256(format!("daofl quickstart {name}"))[12..])
}

/// Deploys the DAO on the embedded chain in `chain_dir`, writes `dao_json`, and stakes
/// `settings.stake_tokens` for each of `members` members (funded by the team).
///
/// # Errors
/// Any [`dao::Error`]: the chain cannot be opened, a transaction reverts, the file cannot be
/// written.
pub async fn deploy_and_stake(
    chain_dir: &Path,
    dao_json: &Path,
    members: usize,
    settings: &DaoQuickstart,
) -> dao::Result<DaoSetup> {
    let anchor = EmbeddedAnchor::open(chain_dir)?;
    let root = Backend::embedded(&anchor, EmbeddedAnchor::default_sender());
    let [team, investors, guardian, slasher] =
        ["team", "investors", "guardian", "slasher"].map(actor);
    let now = root.now().await?;
    // Vesting started two years ago, so the team holds half its 3% to fund and vote with.
    let config = DaoConfig::from_toml_str(&format!(
        "[allocation]\nteam = \"{team}\"\ninvestors = \"{investors}\"\nvesting_start = {}\n\
         [governance]\nguardian = \"{guardian}\"\n[staking]\nslasher = \"{slasher}\"\n",
        now.saturating_sub(2 * YEAR)
    ))?;
    let deployment = deploy(&config, &root).await?;
    deployment.save(dao_json)?;
    let as_ =
        |a: Address| -> dao::Result<Dao> { Ok(Dao::new(root.acting_as(a)?, deployment.clone())) };
    let team_dao = as_(team)?;
    team_dao.claim_vesting(deployment.team_vesting).await?;
    team_dao.delegate(team).await?;
    let member_addresses: Vec<Address> = (0..members)
        .map(|i| actor(&format!("member {i}")))
        .collect();
    let stake = tokens(settings.stake_tokens);
    for &m in &member_addresses {
        team_dao.transfer(m, stake).await?;
        as_(m)?.stake(Role::Training, stake).await?;
    }
    let source = ChainMembers::new(as_(team)?, Role::Training);
    let mut admitted = 0;
    for &m in &member_addresses {
        if source.check(m).await.is_ok() {
            admitted += 1;
        }
    }
    let deploy_gas = deployment.deploy_gas.values().sum();
    Ok(DaoSetup {
        deployment,
        config,
        team,
        members: member_addresses,
        admitted,
        deploy_gas,
    })
}

/// Proposes the checkpoint of `manifest` (anchored on the chain in `chain_dir`) for
/// promotion, votes for it (team and `settings.voting_members` members), queues it, advances
/// the clock over the timelock, executes it and reads the registry.
///
/// # Errors
/// Any [`dao::Error`]: an unreadable or unanchored manifest, a revert.
pub async fn promote(
    chain_dir: &Path,
    setup: &DaoSetup,
    manifest: &Path,
    settings: &DaoQuickstart,
) -> dao::Result<ProposalLife> {
    let bytes = std::fs::read(manifest).map_err(|e| {
        dao::Error::InvalidInput(format!("checkpoint manifest {}: {e}", manifest.display()))
    })?;
    let promotion = Promotion::from_manifest_json(&bytes)?;
    let anchor = EmbeddedAnchor::open(chain_dir)?;
    let root = Backend::embedded(&anchor, EmbeddedAnchor::default_sender());
    let team = Dao::new(root.acting_as(setup.team)?, setup.deployment.clone());
    let g = &setup.config.governance;
    let mut steps = Vec::new();

    // Proposed through the raw call, so that its gas is known.
    let proposal = Proposal::new(
        vec![team.promotion_action(&promotion)],
        settings.description.clone(),
    );
    let call = dao::bindings::DaoGovernor::proposeCall {
        targets: proposal.targets(),
        values: proposal.values(),
        calldatas: proposal.calldatas(),
        description: proposal.description.clone(),
    };
    let r = team
        .send_raw(setup.deployment.governor, call.abi_encode().into())
        .await?;
    let mut step = async |action, gas| -> dao::Result<()> {
        let status = team.status(proposal.id).await?;
        steps.push(Step {
            action,
            state: status.state,
            at: status.now,
            gas,
        });
        Ok(())
    };
    step("proposed", r.gas_used).await?;
    team.advance_time(g.voting_delay_secs + 1).await?;
    step("voting delay over (+1 day)", 0).await?;
    let mut gas = team.vote(proposal.id, Support::For).await?.gas_used;
    for &m in setup.members.iter().take(settings.voting_members) {
        let member = Dao::new(root.acting_as(m)?, setup.deployment.clone());
        gas += member.vote(proposal.id, Support::For).await?.gas_used;
    }
    step("voted for (team and members)", gas).await?;
    team.advance_time(g.voting_period_secs + 1).await?;
    step("voting period over (+5 days)", 0).await?;
    let gas = team.queue(&proposal).await?.gas_used;
    step("queued in the timelock", gas).await?;
    team.advance_time(g.timelock_delay_secs + 1).await?;
    step("timelock delay over (+7 days)", 0).await?;
    let gas = team.execute(&proposal).await?.gas_used;
    step("executed", gas).await?;
    let current = team.current_model(promotion.federation).await?;
    Ok(ProposalLife {
        proposal,
        promotion,
        steps,
        current,
    })
}

impl std::fmt::Display for ProposalLife {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        writeln!(
            f,
            "proposal {:#x}: promote round {} of federation {} (params {}, {})",
            self.proposal.id,
            self.promotion.round,
            self.promotion.federation.0,
            self.promotion.params_hash,
            self.promotion.cid
        )?;
        let start = self.steps.first().map_or(0, |s| s.at);
        for s in &self.steps {
            let elapsed = s.at.saturating_sub(start);
            writeln!(
                f,
                "  {:<32} {:<10} t+{}d {:02}h{:02}m  {:>9} gas",
                s.action,
                format!("{:?}", s.state),
                elapsed / 86_400,
                elapsed % 86_400 / 3_600,
                elapsed % 3_600 / 60,
                s.gas
            )?;
        }
        match &self.current {
            Some(m) => write!(
                f,
                "community model: round {}, {} (params {}), promoted at {}",
                m.round, m.cid, m.params_hash, m.promoted_at
            ),
            None => write!(f, "community model: none (the promotion did not land)"),
        }
    }
}
