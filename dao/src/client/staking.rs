//! Staking calls of [`Dao`]: stake, unstake, withdraw, slash, jail, membership.

use alloy::primitives::{Address, B256, U256};

use super::{Dao, nonzero};
use crate::backend::TxReceipt;
use crate::bindings::Staking;
use crate::types::{Membership, Role};
use crate::{Error, Result};

impl Dao {
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
}
