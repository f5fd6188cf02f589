//! Inference fees: the receipt a requester signs per request, and its checks.
//!
//! A requester prepays into `InferenceFees` ([`Dao::deposit_fees`](crate::Dao::deposit_fees))
//! and signs one [`Receipt`] per request it sends a gateway: EIP-712
//! `Receipt(address requester, address gateway, bytes32 requestHash, uint256 fee, uint256 nonce,
//! uint64 deadline)` under [`fees_domain`]. The gateway checks it ([`Receipt::check`], which adds
//! the one check the chain leaves to the gateway: that the receipt names it) before serving, then
//! settles the receipts it collected in batches
//! ([`Dao::settle_receipts`](crate::Dao::settle_receipts)). On chain, a receipt that fails a
//! check is skipped with a [`RejectReason`], never reverting the batch.

use alloy::primitives::{Address, B256, Bytes, U256};
use alloy::signers::local::PrivateKeySigner;
use alloy::sol_types::{Eip712Domain, SolStruct, eip712_domain};

use crate::Result;
use crate::bindings::InferenceFees;
use crate::settle::{recover_signer, sign};

/// Most receipts one `settle` call takes (the contract's `MAX_BATCH`).
pub const MAX_BATCH: usize = 256;

mod message {
    alloy::sol! {
        /// A requester's signed promise to pay `fee` for the request whose hash is
        /// `requestHash`, served through `gateway`, valid until `deadline` (unix seconds).
        /// `nonce` is any number the requester never used in a settled receipt.
        #[derive(Debug, PartialEq, Eq, Hash)]
        struct Receipt {
            address requester;
            address gateway;
            bytes32 requestHash;
            uint256 fee;
            uint256 nonce;
            uint64 deadline;
        }
    }
}
pub use message::Receipt;

/// The EIP-712 domain of the InferenceFees contract at `fees` on `chain_id`.
pub fn fees_domain(chain_id: u64, fees: Address) -> Eip712Domain {
    eip712_domain! {
        name: "daofl InferenceFees",
        version: "1",
        chain_id: chain_id,
        verifying_contract: fees,
    }
}

/// Why a receipt is refused: by the chain (`ReceiptRejected`'s reason code), or by a gateway's
/// [`Receipt::check`] before it serves.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum RejectReason {
    /// The signature is malformed or recovers to someone other than the requester.
    BadSignature,
    /// The requester's nonce was already used by a settled receipt (a replay).
    NonceUsed,
    /// The deadline has passed.
    Expired,
    /// The fee is zero or below the governed minimum.
    FeeBelowMinimum,
    /// The requester's balance and unlocking funds do not cover the fee.
    InsufficientFunds,
    /// The receipt names another gateway (off chain only: the chain does not check it).
    WrongGateway,
}

impl RejectReason {
    /// The reason of the contract's code (`InferenceFees.RejectReason`), `None` for 0 (not
    /// rejected) and unknown codes.
    pub fn from_code(code: u8) -> Option<Self> {
        Some(match code {
            1 => Self::BadSignature,
            2 => Self::NonceUsed,
            3 => Self::Expired,
            4 => Self::FeeBelowMinimum,
            5 => Self::InsufficientFunds,
            _ => return None,
        })
    }

    /// A short stable name (a metrics label).
    pub fn as_str(self) -> &'static str {
        match self {
            Self::BadSignature => "bad_signature",
            Self::NonceUsed => "nonce_used",
            Self::Expired => "expired",
            Self::FeeBelowMinimum => "fee_below_minimum",
            Self::InsufficientFunds => "insufficient_funds",
            Self::WrongGateway => "wrong_gateway",
        }
    }
}

impl std::fmt::Display for RejectReason {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

impl Receipt {
    /// The EIP-712 digest under `domain` (the contract's `receiptDigest`).
    pub fn digest(&self, domain: &Eip712Domain) -> B256 {
        self.eip712_signing_hash(domain)
    }

    /// The address whose `signature` signed this receipt under `domain`, if well-formed.
    pub fn signer(&self, domain: &Eip712Domain, signature: &[u8]) -> Option<Address> {
        recover_signer(&self.digest(domain), signature)
    }

    /// What a gateway checks before serving the request this receipt pays for: that it names
    /// `gateway`, carries at least `min_fee` (and not zero), is still valid at `now`, and is
    /// signed by its requester. Whether its nonce is unused and the requester's funds cover it
    /// are the chain's to say (`Dao::receipt_used`, `Dao::fee_account`).
    ///
    /// # Errors
    /// The first [`RejectReason`] that applies.
    pub fn check(
        &self,
        domain: &Eip712Domain,
        signature: &[u8],
        gateway: Address,
        now: u64,
        min_fee: U256,
    ) -> Result<(), RejectReason> {
        if self.gateway != gateway {
            return Err(RejectReason::WrongGateway);
        }
        if self.fee.is_zero() || self.fee < min_fee {
            return Err(RejectReason::FeeBelowMinimum);
        }
        if now > self.deadline {
            return Err(RejectReason::Expired);
        }
        if self.signer(domain, signature) != Some(self.requester) {
            return Err(RejectReason::BadSignature);
        }
        Ok(())
    }

    pub(crate) fn to_sol(&self) -> InferenceFees::Receipt {
        InferenceFees::Receipt {
            requester: self.requester,
            gateway: self.gateway,
            requestHash: self.requestHash,
            fee: self.fee,
            nonce: self.nonce,
            deadline: self.deadline,
        }
    }
}

/// A requester's 65-byte signature of `receipt` under `domain`.
///
/// # Errors
/// [`Error::InvalidInput`](crate::Error::InvalidInput) if signing fails.
pub fn sign_receipt(
    signer: &PrivateKeySigner,
    domain: &Eip712Domain,
    receipt: &Receipt,
) -> Result<Bytes> {
    sign(signer, &receipt.digest(domain))
}

#[cfg(test)]
mod tests {
    use super::*;
    use alloy::primitives::keccak256;

    fn receipt(requester: Address, gateway: Address) -> Receipt {
        Receipt {
            requester,
            gateway,
            requestHash: keccak256("request"),
            fee: U256::from(100),
            nonce: U256::from(7),
            deadline: 1_000,
        }
    }

    #[test]
    fn a_gateway_checks_what_the_chain_would_and_its_own_name() {
        let key = PrivateKeySigner::from_bytes(&keccak256("requester")).unwrap();
        let other = PrivateKeySigner::from_bytes(&keccak256("someone else")).unwrap();
        let gateway = Address::repeat_byte(9);
        let domain = fees_domain(31337, Address::repeat_byte(1));
        let r = receipt(key.address(), gateway);
        let sig = sign_receipt(&key, &domain, &r).unwrap();
        let min = U256::from(100);
        assert_eq!(r.signer(&domain, &sig), Some(key.address()));
        assert_eq!(r.check(&domain, &sig, gateway, 1_000, min), Ok(()));
        let check =
            |r: &Receipt, sig: &[u8], gateway, now| r.check(&domain, sig, gateway, now, min);
        assert_eq!(
            check(&r, &sig, Address::repeat_byte(8), 0),
            Err(RejectReason::WrongGateway)
        );
        assert_eq!(check(&r, &sig, gateway, 1_001), Err(RejectReason::Expired));
        let cheap = Receipt {
            fee: U256::from(99),
            ..r.clone()
        };
        assert_eq!(
            check(&cheap, &sig, gateway, 0),
            Err(RejectReason::FeeBelowMinimum)
        );
        let forged = sign_receipt(&other, &domain, &r).unwrap();
        assert_eq!(
            check(&r, &forged, gateway, 0),
            Err(RejectReason::BadSignature)
        );
        assert_eq!(
            check(&r, &[0u8; 65], gateway, 0),
            Err(RejectReason::BadSignature)
        );
        // Another contract's domain: the signature does not carry over.
        let elsewhere = fees_domain(31337, Address::repeat_byte(2));
        assert_ne!(r.signer(&elsewhere, &sig), Some(key.address()));
    }

    #[test]
    fn reason_codes_follow_the_contract() {
        assert_eq!(RejectReason::from_code(0), None);
        assert_eq!(RejectReason::from_code(1), Some(RejectReason::BadSignature));
        assert_eq!(
            RejectReason::from_code(5),
            Some(RejectReason::InsufficientFunds)
        );
        assert_eq!(RejectReason::from_code(6), None);
    }
}
