//! Hostile input, on both backends: each refusal is asserted by the contract error's name.

use alloy::primitives::{Address, B256, Bytes, U256};
use alloy::sol_types::SolCall;
use dao::bindings::{DaoGovernor, DaoTimelock, ModelRegistry, ProposalToken, Staking};
use dao::{Action, DAY, Error, Role, Support};

use crate::support::{World, assert_revert, tok};

/// Wrong roles, zero and overflow amounts, replayed permits, foreign proposal targets: each
/// reverts with its named error.
pub async fn run(w: &World) {
    let d = &w.deployment;
    let [m0, _, m2, _, m4] = &w.members[..] else {
        panic!("five members")
    };
    let a4 = m4.sender();
    let raw = |to: Address, data: Vec<u8>| m4.send_raw(to, Bytes::from(data));

    // Wrong roles.
    assert_revert(
        m4.slash(m2.sender(), Role::Training, tok(1), B256::ZERO)
            .await,
        "AccessControlUnauthorizedAccount",
    );
    assert_revert(
        m4.jail(m2.sender(), u64::MAX, B256::ZERO).await,
        "AccessControlUnauthorizedAccount",
    );
    assert_revert(
        raw(
            d.token,
            ProposalToken::burnLockedCall {
                account: m2.sender(),
                amount: tok(1),
            }
            .abi_encode(),
        )
        .await,
        "OnlyStaking",
    );
    assert_revert(
        raw(
            d.token,
            ProposalToken::lockCall {
                account: a4,
                amount: tok(1),
            }
            .abi_encode(),
        )
        .await,
        "OnlyStaking",
    );
    // Only Settlement pays rewards (and so delegates the claimer).
    assert_revert(
        raw(
            d.token,
            ProposalToken::deliverRewardCall {
                to: m2.sender(),
                amount: tok(1),
            }
            .abi_encode(),
        )
        .await,
        "OnlySettlement",
    );
    assert_revert(
        raw(
            d.staking,
            Staking::setMinStakeCall {
                role: 0,
                amount: U256::ZERO,
            }
            .abi_encode(),
        )
        .await,
        "AccessControlUnauthorizedAccount",
    );
    assert_revert(
        raw(
            d.timelock,
            DaoTimelock::scheduleCall {
                target: d.model_registry,
                value: U256::ZERO,
                data: Bytes::new(),
                predecessor: B256::ZERO,
                salt: B256::ZERO,
                delay: U256::from(7 * DAY),
            }
            .abi_encode(),
        )
        .await,
        "AccessControlUnauthorizedAccount",
    );
    assert_revert(
        raw(
            d.governor,
            DaoGovernor::setProposalGuardianCall {
                newProposalGuardian: a4,
            }
            .abi_encode(),
        )
        .await,
        "GovernorOnlyExecutor",
    );
    assert_revert(
        raw(
            d.model_registry,
            ModelRegistry::setRewardSplitCall {
                split: ModelRegistry::RewardSplit {
                    dataBps: 10_000,
                    trainingBps: 0,
                    inferenceBps: 0,
                },
            }
            .abi_encode(),
        )
        .await,
        "OnlyTimelock",
    );

    // Zero and overflow amounts (raw calls bypass the library's own checks).
    assert!(matches!(
        m4.stake(Role::Training, U256::ZERO).await,
        Err(Error::InvalidInput(_))
    ));
    assert_revert(
        raw(
            d.staking,
            Staking::stakeCall {
                role: 0,
                amount: U256::ZERO,
            }
            .abi_encode(),
        )
        .await,
        "ZeroAmount",
    );
    assert_revert(
        raw(
            d.staking,
            Staking::unstakeCall {
                role: 0,
                amount: U256::ZERO,
            }
            .abi_encode(),
        )
        .await,
        "ZeroAmount",
    );
    assert_revert(
        m4.stake(Role::Training, U256::MAX).await,
        "InsufficientUnlockedBalance",
    );
    assert_revert(
        m4.stake(Role::Training, tok(5_001)).await,
        "InsufficientUnlockedBalance",
    );
    assert_revert(
        m4.unstake(Role::Training, U256::MAX).await,
        "InsufficientStake",
    );
    assert_revert(
        w.slasher
            .slash(m2.sender(), Role::Training, U256::MAX, B256::ZERO)
            .await,
        "SlashExceedsStake",
    );
    assert_revert(
        w.slasher
            .slash(m2.sender(), Role::Training, U256::ZERO, B256::ZERO)
            .await,
        "ZeroAmount",
    );
    assert_revert(
        raw(
            d.staking,
            Staking::stakeCall {
                role: 7,
                amount: tok(1),
            }
            .abi_encode(),
        )
        .await,
        "UnknownRole",
    );
    // m4 staked as an annotator: its lock is checked first; m0 staked nothing.
    assert_revert(
        m4.transfer(m0.sender(), U256::MAX).await,
        "InsufficientUnlockedBalance",
    );
    assert_revert(m4.burn(U256::MAX).await, "InsufficientUnlockedBalance");
    assert_revert(
        m0.transfer(m4.sender(), U256::MAX).await,
        "ERC20InsufficientBalance",
    );
    assert_revert(m0.burn(U256::MAX).await, "ERC20InsufficientBalance");

    // A permit works once; its replay and an expired one are refused.
    let owner = &w.member_keys[4];
    let spender = m0.sender();
    let deadline = U256::from(m4.now().await.unwrap() + DAY);
    let permit = m4
        .sign_permit(owner, spender, tok(100), deadline)
        .await
        .unwrap();
    m0.submit_permit(&permit).await.unwrap();
    assert_revert(m0.submit_permit(&permit).await, "ERC2612InvalidSigner");
    let expired = m4
        .sign_permit(owner, spender, tok(100), U256::from(1))
        .await
        .unwrap();
    assert_revert(m0.submit_permit(&expired).await, "ERC2612ExpiredSignature");
    let mut forged = m4
        .sign_permit(owner, spender, tok(100), deadline)
        .await
        .unwrap();
    forged.value = tok(1_000_000);
    assert_revert(m0.submit_permit(&forged).await, "ERC2612InvalidSigner");

    // Proposals may only call the DAO's contracts.
    for target in [d.checkpoint_registry, d.timelock, a4, Address::ZERO] {
        let action = Action {
            target,
            value: U256::ZERO,
            calldata: Bytes::from(vec![0xde, 0xad]),
        };
        assert_revert(
            m0.propose(vec![action], format!("call {target}")).await,
            "TargetNotAllowed",
        );
    }
    // Nor through the Governor's relay.
    let relay = Action {
        target: d.governor,
        value: U256::ZERO,
        calldata: DaoGovernor::relayCall {
            target: d.timelock,
            value: U256::ZERO,
            data: DaoTimelock::updateDelayCall {
                newDelay: U256::from(60),
            }
            .abi_encode()
            .into(),
        }
        .abi_encode()
        .into(),
    };
    let p = m0
        .propose(vec![relay], "shorten the timelock".into())
        .await
        .unwrap();
    w.deployer
        .advance_time(w.config.governance.voting_delay_secs + 1)
        .await
        .unwrap();
    m0.vote(p.id, Support::For).await.unwrap();
    w.deployer
        .advance_time(w.config.governance.voting_period_secs + 1)
        .await
        .unwrap();
    m0.queue(&p).await.unwrap();
    m0.advance_time(7 * DAY + 1).await.unwrap();
    assert_revert(m0.execute(&p).await, "TargetNotAllowed");
    // A proposal without actions never reaches the chain.
    assert!(matches!(
        m0.propose(Vec::new(), "nothing".into()).await,
        Err(Error::InvalidInput(_))
    ));
    // An unknown proposal has no status.
    assert_revert(
        m0.status(U256::from(12345)).await,
        "GovernorNonexistentProposal",
    );
}
