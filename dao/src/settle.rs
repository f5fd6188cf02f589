//! Reward lists as Merkle trees, and the validator signatures over roots and verdicts.
//!
//! An epoch's rewards are a list of (address, amount) pairs. [`RewardTree`] builds the
//! OpenZeppelin `StandardMerkleTree` over the leaves `keccak256(keccak256(abi.encode(uint256
//! index, address account, uint256 amount)))` (the index numbers the accounts in address order;
//! the contract marks claims in a bitmap by it, as Uniswap's MerkleDistributor does) with chain-anchor's [`merkle`](chain_anchor::merkle) module, so `Settlement.claim`
//! (OpenZeppelin `MerkleProof`) accepts its proofs. [`sign_root`] and [`sign_verdict`] produce the
//! EIP-712 signatures a QA validator contributes.

use std::collections::BTreeMap;

use alloy::primitives::{Address, B256, Bytes, U256};
use alloy::signers::SignerSync;
use alloy::signers::local::PrivateKeySigner;
use alloy::sol_types::{Eip712Domain, SolStruct, SolValue, eip712_domain};
use chain_anchor::merkle::{MerkleTree, standard_leaf, verify_proof};

use crate::bindings::{Root, Settlement, Verdict};
use crate::{Error, Result};

/// The leaf of `(index, account, amount)`: `keccak256(keccak256(abi.encode(index, account, amount)))`.
pub fn reward_leaf(index: u64, account: Address, amount: U256) -> B256 {
    standard_leaf(&(U256::from(index), account, amount).abi_encode())
}

/// An epoch's reward list and its Merkle tree.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RewardTree {
    amounts: BTreeMap<Address, U256>,
    tree: MerkleTree,
    total: U256,
}

impl RewardTree {
    /// Builds the tree of `rewards`.
    ///
    /// # Errors
    /// [`Error::InvalidInput`] for an empty list, a zero address or amount, an address listed
    /// twice, or a total above `uint128`.
    pub fn new(rewards: &[(Address, U256)]) -> Result<Self> {
        if rewards.is_empty() {
            return Err(Error::InvalidInput("an empty reward list".into()));
        }
        let mut amounts = BTreeMap::new();
        let mut total = U256::ZERO;
        for &(account, amount) in rewards {
            if account.is_zero() || amount.is_zero() {
                return Err(Error::InvalidInput(format!(
                    "reward of {amount} to {account}: zero address or amount"
                )));
            }
            if amounts.insert(account, amount).is_some() {
                return Err(Error::InvalidInput(format!("{account} is listed twice")));
            }
            total = total
                .checked_add(amount)
                .filter(|t| *t <= U256::from(u128::MAX))
                .ok_or_else(|| Error::InvalidInput("the total exceeds uint128".into()))?;
        }
        let leaves: Vec<B256> = amounts
            .iter()
            .zip(0u64..)
            .map(|((a, v), i)| reward_leaf(i, *a, *v))
            .collect();
        Ok(Self {
            tree: MerkleTree::new(&leaves),
            amounts,
            total,
        })
    }

    /// Reads a rewards file: a JSON array of `{"account": "0x…", "amount": "<decimal base units>"}`
    /// (at most 16 MiB).
    ///
    /// # Errors
    /// [`Error::Io`], [`Error::Corrupt`] for a file that is not such a list, and as [`new`](Self::new).
    pub fn load(path: &std::path::Path) -> Result<Self> {
        #[derive(serde::Deserialize)]
        #[serde(deny_unknown_fields)]
        struct Entry {
            account: Address,
            amount: String,
        }
        let text = crate::deploy::read_bounded_text(path, 16 << 20)?;
        let corrupt = |reason: String| Error::Corrupt {
            path: path.to_path_buf(),
            reason,
        };
        let entries: Vec<Entry> =
            serde_json::from_str(&text).map_err(|e| corrupt(e.to_string()))?;
        let rewards = entries
            .into_iter()
            .map(|e| {
                U256::from_str_radix(&e.amount, 10)
                    .map(|v| (e.account, v))
                    .map_err(|_| corrupt(format!("amount {:?} is not a decimal integer", e.amount)))
            })
            .collect::<Result<Vec<_>>>()?;
        Self::new(&rewards)
    }

    /// The root validators sign.
    pub fn root(&self) -> B256 {
        self.tree.root()
    }

    /// The sum of the amounts.
    pub fn total(&self) -> U256 {
        self.total
    }

    /// The sum as the contract's `uint128`.
    pub fn total_u128(&self) -> u128 {
        // `new` bounds the total by u128::MAX.
        self.total.saturating_to()
    }

    /// The amount of `account`, if listed.
    pub fn amount(&self, account: Address) -> Option<U256> {
        self.amounts.get(&account).copied()
    }

    /// The listed accounts and amounts, by address.
    pub fn rewards(&self) -> impl Iterator<Item = (Address, U256)> + '_ {
        self.amounts.iter().map(|(a, v)| (*a, *v))
    }

    /// The leaf index of `account` (its rank by address), if listed.
    pub fn index(&self, account: Address) -> Option<u64> {
        let rank = self.amounts.range(..account).count();
        self.amounts
            .contains_key(&account)
            .then(|| u64::try_from(rank).ok())
            .flatten()
    }

    /// The leaf index, amount and proof of `account`, if listed.
    pub fn proof(&self, account: Address) -> Option<(u64, U256, Vec<B256>)> {
        let amount = self.amount(account)?;
        let index = self.index(account)?;
        let proof = self.tree.proof(reward_leaf(index, account, amount))?;
        Some((index, amount, proof))
    }

    /// Whether `proof` leads from `(index, account, amount)` to `root`.
    pub fn verify(root: B256, index: u64, account: Address, amount: U256, proof: &[B256]) -> bool {
        verify_proof(root, reward_leaf(index, account, amount), proof)
    }
}

/// The EIP-712 domain of the Settlement contract at `settlement` on `chain_id`.
pub fn settlement_domain(chain_id: u64, settlement: Address) -> Eip712Domain {
    eip712_domain! {
        name: "daofl Settlement",
        version: "1",
        chain_id: chain_id,
        verifying_contract: settlement,
    }
}

/// What a validator signs for an epoch's root: the epoch, the root, the total and the claim deadline.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RootMessage {
    /// Epoch number.
    pub epoch: u64,
    /// The reward tree's root.
    pub root: B256,
    /// The sum of the leaves.
    pub total: u128,
    /// Claim deadline (unix seconds); unclaimed amounts return to the pool after it.
    pub deadline: u64,
}

impl RootMessage {
    /// The message of `tree` for `epoch` with `deadline`.
    pub fn of(epoch: u64, tree: &RewardTree, deadline: u64) -> Self {
        Self {
            epoch,
            root: tree.root(),
            total: tree.total_u128(),
            deadline,
        }
    }

    /// The EIP-712 digest under `domain`.
    pub fn digest(&self, domain: &Eip712Domain) -> B256 {
        Root {
            epoch: self.epoch,
            root: self.root,
            total: U256::from(self.total),
            deadline: self.deadline,
        }
        .eip712_signing_hash(domain)
    }
}

/// What a validator signs for a slash: the member, the evidence's content hash, the fraction
/// (basis points, the governed one) and the last time the verdict may be posted.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct VerdictMessage {
    /// The member to slash.
    pub member: Address,
    /// Content hash of the QA evidence.
    pub evidence: B256,
    /// Fraction of the training stake in basis points.
    pub fraction_bps: u16,
    /// Last time the verdict may be posted (unix seconds).
    pub deadline: u64,
}

impl VerdictMessage {
    /// The EIP-712 digest under `domain`; also the verdict's id on chain.
    pub fn digest(&self, domain: &Eip712Domain) -> B256 {
        Verdict {
            member: self.member,
            evidence: self.evidence,
            fractionBps: self.fraction_bps,
            deadline: self.deadline,
        }
        .eip712_signing_hash(domain)
    }
}

/// The governed reward rules every validator computes an epoch's list under (Settlement's
/// `rewardParams`, set at deployment from `[settlement]` and by governance afterwards).
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RewardRules {
    /// Rounds per epoch: epoch `e` (from 1) covers rounds `(e-1)·n+1 ..= e·n`.
    pub epoch_rounds: u32,
    /// The most an epoch pays, in base units.
    pub epoch_pool: u128,
    /// Share paid by contribution, parts per million.
    pub contribution_ppm: u32,
    /// Share paid to members useful in at least `stability_quorum_pct` of the rounds, ppm.
    pub stability_ppm: u32,
    /// Share paid by contribution when the epoch's model improved on the previous one, ppm.
    pub performance_ppm: u32,
    /// Percent of the rounds that earns the stability share.
    pub stability_quorum_pct: u8,
}

impl RewardRules {
    /// The rounds of `epoch` (from 1), or `None` for epoch 0 or past `u64`.
    pub fn rounds(&self, epoch: u64) -> Option<std::ops::RangeInclusive<u64>> {
        let n = u64::from(self.epoch_rounds);
        let last = epoch.checked_mul(n)?;
        (epoch > 0 && n > 0).then(|| last - n + 1..=last)
    }

    pub(crate) fn to_sol(self) -> Settlement::RewardParams {
        Settlement::RewardParams {
            epochRounds: self.epoch_rounds,
            contributionPpm: self.contribution_ppm,
            stabilityPpm: self.stability_ppm,
            performancePpm: self.performance_ppm,
            stabilityQuorumPct: self.stability_quorum_pct,
            epochPool: self.epoch_pool,
        }
    }

    pub(crate) fn from_sol(p: &Settlement::rewardParamsReturn) -> Self {
        Self {
            epoch_rounds: p.epochRounds,
            epoch_pool: p.epochPool,
            contribution_ppm: p.contributionPpm,
            stability_ppm: p.stabilityPpm,
            performance_ppm: p.performancePpm,
            stability_quorum_pct: p.stabilityQuorumPct,
        }
    }
}

/// The address whose 65-byte `signature` signed `digest`, if it is a well-formed signature.
pub fn recover_signer(digest: &B256, signature: &[u8]) -> Option<Address> {
    alloy::primitives::Signature::from_raw(signature)
        .ok()?
        .recover_address_from_prehash(digest)
        .ok()
}

pub(crate) fn sign(signer: &PrivateKeySigner, digest: &B256) -> Result<Bytes> {
    let signature = signer
        .sign_hash_sync(digest)
        .map_err(|e| Error::InvalidInput(format!("signing: {e}")))?;
    Ok(Bytes::from(signature.as_bytes().to_vec()))
}

/// A validator's 65-byte signature of `message`.
///
/// # Errors
/// [`Error::InvalidInput`] if signing fails.
pub fn sign_root(
    signer: &PrivateKeySigner,
    domain: &Eip712Domain,
    message: &RootMessage,
) -> Result<Bytes> {
    sign(signer, &message.digest(domain))
}

/// A validator's 65-byte signature of `message`.
///
/// # Errors
/// [`Error::InvalidInput`] if signing fails.
pub fn sign_verdict(
    signer: &PrivateKeySigner,
    domain: &Eip712Domain,
    message: &VerdictMessage,
) -> Result<Bytes> {
    sign(signer, &message.digest(domain))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn proofs_verify_and_bad_lists_are_refused() {
        let a = Address::repeat_byte(1);
        let b = Address::repeat_byte(2);
        let c = Address::repeat_byte(3);
        let t =
            RewardTree::new(&[(a, U256::from(5)), (b, U256::from(7)), (c, U256::from(1))]).unwrap();
        assert_eq!(t.total(), U256::from(13));
        for (acct, amt) in t.rewards() {
            let (index, amount, proof) = t.proof(acct).unwrap();
            assert_eq!(amount, amt);
            assert!(RewardTree::verify(t.root(), index, acct, amount, &proof));
            assert!(!RewardTree::verify(
                t.root(),
                index,
                acct,
                amount + U256::from(1),
                &proof
            ));
            assert!(!RewardTree::verify(
                t.root(),
                index + 1,
                acct,
                amount,
                &proof
            ));
        }
        assert!(t.proof(Address::repeat_byte(9)).is_none());
        assert!(RewardTree::new(&[]).is_err());
        assert!(RewardTree::new(&[(a, U256::ZERO)]).is_err());
        assert!(RewardTree::new(&[(a, U256::from(1)), (a, U256::from(2))]).is_err());
        assert!(RewardTree::new(&[(a, U256::from(u128::MAX)), (b, U256::from(1))]).is_err());
    }

    #[test]
    fn rewards_files_are_checked_never_trusted() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("rewards.json");
        let good = r#"[{"account": "0x0101010101010101010101010101010101010101", "amount": "12"}]"#;
        std::fs::write(&path, good).unwrap();
        let t = RewardTree::load(&path).unwrap();
        assert_eq!(t.total(), U256::from(12));
        for bad in [
            "",
            "{",
            "[{\"account\": \"0x01\", \"amount\": \"1\"}]",
            r#"[{"account": "0x0101010101010101010101010101010101010101", "amount": "-1"}]"#,
            r#"[{"account": "0x0101010101010101010101010101010101010101", "amount": "0x10"}]"#,
            r#"[{"account": "0x0101010101010101010101010101010101010101", "amount": "1", "x": 1}]"#,
            "[]",
        ] {
            std::fs::write(&path, bad).unwrap();
            assert!(
                matches!(
                    RewardTree::load(&path),
                    Err(Error::Corrupt { .. } | Error::InvalidInput(_))
                ),
                "{bad}"
            );
        }
        assert!(matches!(
            RewardTree::load(&dir.path().join("missing.json")),
            Err(Error::Io { .. })
        ));
    }
}
