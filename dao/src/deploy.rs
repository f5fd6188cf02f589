//! Deploying the whole DAO from a [`DaoConfig`], and `dao.json`.

use std::collections::BTreeMap;
use std::path::Path;

use alloy::primitives::aliases::U48;
use alloy::primitives::{Address, Bytes, U256};
use alloy::sol_types::SolConstructor;
use serde::{Deserialize, Serialize};

use crate::backend::Backend;
use crate::bindings::{
    AllocationVesting, AnnotationBook, Artifact, DaoGovernor, DaoTimelock, DataRegistry,
    InferenceFees, ModelRegistry, ProposalToken, RewardPool, Settlement, Staking,
};
use crate::config::{DATA_POOL_RELEASE, DaoConfig, INVESTOR_VESTING, TEAM_VESTING, tokens};
use crate::{Error, Result, Role};

/// Every address of a deployed DAO, the chain, and the gas each deployment used: the content of
/// `dao.json`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DaoDeployment {
    /// Chain id.
    pub chain_id: u64,
    /// The deploying account (no role remains with it).
    pub deployer: Address,
    /// Block of the last deployment transaction.
    pub block_number: u64,
    /// $PROPOSAL.
    pub token: Address,
    /// The Governor.
    pub governor: Address,
    /// The TimelockController (also the treasury).
    pub timelock: Address,
    /// The model registry.
    pub model_registry: Address,
    /// Staking.
    pub staking: Address,
    /// chain-anchor's CheckpointRegistry the model registry reads.
    pub checkpoint_registry: Address,
    /// Data-contributor pool (40%, 10-year linear release).
    pub data_pool: Address,
    /// Training-node pool (30%).
    pub training_pool: Address,
    /// Inference-node pool (20%).
    pub inference_pool: Address,
    /// Team vesting wallet (3%, 4 years).
    pub team_vesting: Address,
    /// Early-investor vesting wallet (2%, 2 years).
    pub investor_vesting: Address,
    /// Settlement: validator-signed reward roots and slashing verdicts, the fee split.
    pub settlement: Address,
    /// The data registry: record batches of staked annotators (zero in deployments made before
    /// it existed).
    #[serde(default)]
    pub data_registry: Address,
    /// The inference nodes' Settlement: reward roots paid from the inference pool, verdicts
    /// slashing inference stake (zero in deployments made before it existed).
    #[serde(default)]
    pub inference_settlement: Address,
    /// InferenceFees: requesters' prepaid balances and batch settlement of their signed
    /// receipts (zero in deployments made before it existed).
    #[serde(default)]
    pub inference_fees: Address,
    /// The annotators' Settlement: annotation reward roots paid from the data pool, verdicts
    /// slashing annotator stake (zero in deployments made before it existed).
    #[serde(default)]
    pub data_settlement: Address,
    /// The AnnotationBook: annotation epochs' pools, seeds, assignment and commit-reveal (zero in
    /// deployments made before it existed).
    #[serde(default)]
    pub annotation_book: Address,
    /// Gas used by each deployment transaction, by contract.
    pub deploy_gas: BTreeMap<String, u64>,
}

/// Largest `dao.json` read.
const MAX_DEPLOYMENT_BYTES: u64 = 1 << 20;

impl DaoDeployment {
    /// Writes the deployment as pretty JSON (`dao.json`), atomically.
    ///
    /// # Errors
    /// [`Error::Io`].
    pub fn save(&self, path: &Path) -> Result<()> {
        let json = serde_json::to_vec_pretty(self)
            .map_err(|e| Error::InvalidInput(format!("serialising the deployment: {e}")))?;
        let tmp = path.with_extension("json.tmp");
        let io = |p: &Path| {
            let p = p.to_path_buf();
            move |source| Error::Io { path: p, source }
        };
        std::fs::write(&tmp, json).map_err(io(&tmp))?;
        std::fs::rename(&tmp, path).map_err(io(path))
    }

    /// Reads a `dao.json`.
    ///
    /// # Errors
    /// [`Error::Io`], [`Error::Corrupt`] when it is not a deployment this crate wrote.
    pub fn load(path: &Path) -> Result<Self> {
        let text = read_bounded_text(path, MAX_DEPLOYMENT_BYTES)?;
        serde_json::from_str(&text).map_err(|e| Error::Corrupt {
            path: path.to_path_buf(),
            reason: e.to_string(),
        })
    }
}

pub(crate) fn read_bounded_text(path: &Path, max: u64) -> Result<String> {
    use std::io::Read;
    let io = |source| Error::Io {
        path: path.to_path_buf(),
        source,
    };
    let mut bytes = Vec::new();
    std::fs::File::open(path)
        .map_err(io)?
        .take(max + 1)
        .read_to_end(&mut bytes)
        .map_err(io)?;
    if bytes.len() as u64 > max {
        return Err(Error::Corrupt {
            path: path.to_path_buf(),
            reason: format!("larger than {max} bytes"),
        });
    }
    String::from_utf8(bytes).map_err(|_| Error::Corrupt {
        path: path.to_path_buf(),
        reason: "not UTF-8".into(),
    })
}

/// Deploys the whole DAO with `backend`'s account, which keeps no role afterwards.
///
/// Sixteen contracts, in this order, each at the address derived from the deployer's nonce (the
/// token and staking name each other, so their addresses are computed before either exists):
/// timelock, data / training / inference pools, team and investor vesting wallets, token, model
/// registry, staking, governor, settlement, data registry, inference settlement, inference fees,
/// data settlement, annotation book; the three settlements share the validator set and
/// parameters, the inference one pays from the inference pool and slashes inference stake, the
/// data one pays from the data pool and slashes annotator stake. On an RPC chain without a configured checkpoint registry, one
/// is deployed first. The timelock's only proposer, canceller and executor is the Governor and
/// it has no admin but itself. The deployer must send nothing else meanwhile.
///
/// # Errors
/// [`Error::Config`] for an invalid configuration, [`Error::Reverted`] if a constructor refuses,
/// [`Error::Deploy`] if a contract does not land where predicted, or an endpoint error.
pub async fn deploy(config: &DaoConfig, backend: &Backend) -> Result<DaoDeployment> {
    config.validate()?;
    let chain_id = backend.chain_id().await?;
    let deployer = backend.sender();
    let now = backend.now().await?;
    let mut gas = BTreeMap::new();

    let checkpoint_registry = match (config.model.checkpoint_registry, backend.embedded_anchor()) {
        (Some(a), _) => a,
        (None, Some(anchor)) => chain_anchor::Anchor::registry(anchor),
        (None, None) => {
            let mut code = chain_anchor::bindings::CheckpointRegistry::BYTECODE.to_vec();
            code.extend(
                chain_anchor::bindings::CheckpointRegistry::constructorCall { admin: deployer }
                    .abi_encode(),
            );
            let r = backend.send(None, code.into()).await?;
            gas.insert("CheckpointRegistry".to_owned(), r.gas_used);
            r.contract_address.ok_or_else(|| {
                Error::Deploy("the checkpoint registry's receipt has no address".into())
            })?
        }
    };
    let code = backend.code(checkpoint_registry).await?;
    if code != chain_anchor::bindings::CheckpointRegistry::DEPLOYED_BYTECODE {
        return Err(Error::Deploy(format!(
            "no checkpoint registry of this build at {checkpoint_registry} ({})",
            if code.is_empty() {
                "no code"
            } else {
                "other code"
            }
        )));
    }

    let n = backend.nonce(deployer).await?;
    let at = |i: u64| deployer.create(n + i);
    let (timelock, data_pool, training_pool, inference_pool) = (at(0), at(1), at(2), at(3));
    let (team_vesting, investor_vesting, token) = (at(4), at(5), at(6));
    let (model_registry, staking, governor, settlement) = (at(7), at(8), at(9), at(10));
    let (data_registry, inference_settlement, inference_fees) = (at(11), at(12), at(13));
    let (data_settlement, annotation_book) = (at(14), at(15));

    let vesting_start = config.allocation.vesting_start.unwrap_or(now);
    let pools_start = config.allocation.pools_start.unwrap_or(now);
    let g = &config.governance;
    let s = &config.staking;
    let split = config.model.reward_split_bps;
    // The three settlements: the same validators, quorum and parameters; they differ in the pool
    // they pay from and the stake their verdicts slash.
    let settlement_args = |reward_pool: Address, member_role: Role| {
        Settlement::constructorCall {
            token_: token,
            staking_: staking,
            pools: Settlement::Pools {
                rewardPool: reward_pool,
                inferencePool: inference_pool,
            },
            memberRole_: member_role.id(),
            admin: timelock,
            guardian: g.guardian,
            validators_: config.settlement.validators.clone(),
            quorum_: config.settlement.quorum,
            params_: Settlement::Params {
                challengeWindow: s.challenge_window_secs,
                minClaimPeriod: config.settlement.min_claim_period_secs,
                slashBps: config.settlement.slash_bps,
                jailDuration: config.settlement.jail_secs,
                validatorSlashBps: config.settlement.validator_slash_bps,
                slashToPoolBps: config.settlement.slash_to_pool_bps,
                validatorMinStake: u128::try_from(tokens(
                    config.settlement.validator_min_stake_tokens,
                ))
                .unwrap_or(u128::MAX),
            },
            rewardParams_: config.settlement.reward_rules().to_sol(),
        }
        .abi_encode()
    };

    let steps: Vec<(&str, &str, Vec<u8>, Address)> = vec![
        (
            "DaoTimelock",
            "DaoTimelock",
            DaoTimelock::constructorCall {
                minDelay: U256::from(g.timelock_delay_secs),
                proposers: vec![governor],
                executors: vec![governor],
                admin: Address::ZERO,
            }
            .abi_encode(),
            timelock,
        ),
        (
            "RewardPool",
            "DataPool",
            RewardPool::constructorCall {
                admin: timelock,
                start_: pools_start,
                duration_: DATA_POOL_RELEASE,
                distributor: data_settlement,
            }
            .abi_encode(),
            data_pool,
        ),
        (
            "RewardPool",
            "TrainingPool",
            RewardPool::constructorCall {
                admin: timelock,
                start_: pools_start,
                duration_: 0,
                distributor: settlement,
            }
            .abi_encode(),
            training_pool,
        ),
        (
            "RewardPool",
            "InferencePool",
            RewardPool::constructorCall {
                admin: timelock,
                start_: pools_start,
                duration_: 0,
                distributor: inference_settlement,
            }
            .abi_encode(),
            inference_pool,
        ),
        (
            "AllocationVesting",
            "TeamVesting",
            AllocationVesting::constructorCall {
                beneficiary: config.allocation.team,
                startTimestamp: vesting_start,
                durationSeconds: TEAM_VESTING,
            }
            .abi_encode(),
            team_vesting,
        ),
        (
            "AllocationVesting",
            "InvestorVesting",
            AllocationVesting::constructorCall {
                beneficiary: config.allocation.investors,
                startTimestamp: vesting_start,
                durationSeconds: INVESTOR_VESTING,
            }
            .abi_encode(),
            investor_vesting,
        ),
        (
            "ProposalToken",
            "ProposalToken",
            ProposalToken::constructorCall {
                name_: config.token.name.clone(),
                symbol_: config.token.symbol.clone(),
                allocation: ProposalToken::Allocation {
                    dataPool: data_pool,
                    trainingPool: training_pool,
                    inferencePool: inference_pool,
                    treasury: timelock,
                    teamVesting: team_vesting,
                    investorVesting: investor_vesting,
                },
                staking_: staking,
                settlement_: settlement,
                inferenceSettlement_: inference_settlement,
                dataSettlement_: data_settlement,
            }
            .abi_encode(),
            token,
        ),
        (
            "ModelRegistry",
            "ModelRegistry",
            ModelRegistry::constructorCall {
                timelock_: timelock,
                checkpoints_: checkpoint_registry,
                split: ModelRegistry::RewardSplit {
                    dataBps: split.data,
                    trainingBps: split.training,
                    inferenceBps: split.inference,
                },
            }
            .abi_encode(),
            model_registry,
        ),
        (
            "Staking",
            "Staking",
            Staking::constructorCall {
                token_: token,
                admin: timelock,
                slashers: vec![
                    s.slasher.unwrap_or(Address::ZERO),
                    settlement,
                    inference_settlement,
                    data_settlement,
                ],
                minStakes: [
                    tokens(s.training_min_tokens),
                    tokens(s.inference_min_tokens),
                    tokens(s.annotator_min_tokens),
                ],
                unbondingDelay_: s.unbonding_secs,
                challengeWindow_: s.challenge_window_secs,
            }
            .abi_encode(),
            staking,
        ),
        (
            "DaoGovernor",
            "DaoGovernor",
            DaoGovernor::constructorCall {
                token_: token,
                timelock_: timelock,
                params: DaoGovernor::Params {
                    votingDelay: U48::from(g.voting_delay_secs),
                    votingPeriod: u32::try_from(g.voting_period_secs)
                        .map_err(|_| Error::Config("voting period too long".into()))?,
                    proposalThreshold: tokens(g.proposal_threshold_tokens),
                    quorumPercent: U256::from(g.quorum_percent),
                    quorumFloor: tokens(g.quorum_floor_tokens),
                    lateQuorumExtension: U48::from(g.late_quorum_extension_secs),
                    guardian: g.guardian,
                },
                targets: DaoGovernor::Targets {
                    modelRegistry: model_registry,
                    staking,
                    token,
                    dataPool: data_pool,
                    trainingPool: training_pool,
                    inferencePool: inference_pool,
                    settlement,
                    inferenceSettlement: inference_settlement,
                    inferenceFees: inference_fees,
                    dataSettlement: data_settlement,
                    annotationBook: annotation_book,
                },
            }
            .abi_encode(),
            governor,
        ),
        (
            "Settlement",
            "Settlement",
            settlement_args(training_pool, Role::Training),
            settlement,
        ),
        (
            "DataRegistry",
            "DataRegistry",
            DataRegistry::constructorCall { staking_: staking }.abi_encode(),
            data_registry,
        ),
        (
            "Settlement",
            "InferenceSettlement",
            settlement_args(inference_pool, Role::Inference),
            inference_settlement,
        ),
        (
            "InferenceFees",
            "InferenceFees",
            InferenceFees::constructorCall {
                token_: token,
                settlement_: inference_settlement,
                admin: timelock,
                withdrawDelay_: config.fees.withdraw_delay_secs,
                minFee_: config.fees.min_fee(),
            }
            .abi_encode(),
            inference_fees,
        ),
        (
            "Settlement",
            "DataSettlement",
            settlement_args(data_pool, Role::Annotator),
            data_settlement,
        ),
        (
            "AnnotationBook",
            "AnnotationBook",
            AnnotationBook::constructorCall {
                staking_: staking,
                admin: timelock,
                opener: config.annotations.opener.unwrap_or(Address::ZERO),
                params_: AnnotationBook::Params {
                    commitPeriod: config.annotations.commit_secs,
                    revealPeriod: config.annotations.reveal_secs,
                    annotatorsPerItem: config.annotations.annotators_per_item,
                },
            }
            .abi_encode(),
            annotation_book,
        ),
    ];

    let mut block_number = 0;
    for (artifact, label, args, expected) in steps {
        let artifact = Artifact::named(artifact)
            .ok_or_else(|| Error::Artifact(format!("{artifact} is not compiled")))?;
        let mut code = artifact.bytecode()?.to_vec();
        code.extend(args);
        let receipt = backend.send(None, Bytes::from(code)).await?;
        if receipt.contract_address != Some(expected) {
            return Err(Error::Deploy(format!(
                "{label} landed at {:?}, expected {expected}: did {deployer} send another \
                 transaction during the deployment?",
                receipt.contract_address
            )));
        }
        gas.insert(label.to_owned(), receipt.gas_used);
        block_number = receipt.block_number;
    }

    Ok(DaoDeployment {
        chain_id,
        deployer,
        block_number,
        token,
        governor,
        timelock,
        model_registry,
        staking,
        checkpoint_registry,
        data_pool,
        training_pool,
        inference_pool,
        team_vesting,
        investor_vesting,
        settlement,
        data_registry,
        inference_settlement,
        inference_fees,
        data_settlement,
        annotation_book,
        deploy_gas: gas,
    })
}
