//! Inference fees on one world (anvil or the embedded EVM): deposits, signed receipts settled in
//! batches (every bad receipt skipped by its reason, never reverting the others), the fee split
//! of a batch, and withdrawals that wait out the governed delay.

use alloy::primitives::{Address, B256, Bytes, U256, keccak256};
use alloy::signers::local::PrivateKeySigner;
use alloy::sol_types::{SolCall, SolValue};
use dao::bindings::{DaoGovernor, InferenceFees};
use dao::fees::{MAX_BATCH, Receipt, RejectReason, sign_receipt};
use dao::{DAY, Error};

use crate::support::{World, assert_revert, tok};

/// `n` thousandths of a token.
fn milli(n: u64) -> U256 {
    U256::from(n) * U256::from(10u64).pow(U256::from(15))
}

/// Gas of the fee calls, for benches/RESULTS.md.
#[derive(Debug, Default)]
pub struct Gas {
    pub deposit: u64,
    pub settle_three: u64,
}

pub async fn run(w: &World) -> Gas {
    let mut gas = Gas::default();
    let d = &w.deployment;
    let requester = &w.members[0];
    let key = &w.member_keys[0];
    let broke = &w.member_keys[1];
    let gateway = &w.members[3];
    let outsider = PrivateKeySigner::from_bytes(&keccak256("not the requester")).unwrap();
    let domain = gateway.fees_domain().await.unwrap();

    // Governed defaults: 0.1 $PROPOSAL per request, withdrawals wait 2 days; both are the
    // timelock's to change, and the Governor may target the contract.
    assert_eq!(gateway.fee_params().await.unwrap(), (2 * DAY, milli(100)));
    assert_revert(
        gateway
            .send_raw(
                d.inference_fees,
                InferenceFees::setMinFeeCall {
                    minFee_: U256::ZERO,
                }
                .abi_encode()
                .into(),
            )
            .await,
        "AccessControlUnauthorizedAccount",
    );
    for target in [d.inference_fees, d.inference_settlement] {
        let out = gateway
            .backend()
            .call(
                d.governor,
                DaoGovernor::targetAllowedCall { target }
                    .abi_encode()
                    .into(),
            )
            .await
            .unwrap();
        assert!(DaoGovernor::targetAllowedCall::abi_decode_returns(&out).unwrap());
    }

    // The requester gets tokens and prepays 10.
    w.team.claim_vesting(d.team_vesting).await.unwrap();
    w.team.transfer(requester.sender(), tok(100)).await.unwrap();
    assert!(matches!(
        requester.deposit_fees(U256::ZERO).await,
        Err(Error::InvalidInput(_))
    ));
    gas.deposit = requester.deposit_fees(tok(10)).await.unwrap().gas_used;
    assert_eq!(
        requester.fee_balance(requester.sender()).await.unwrap(),
        tok(10)
    );
    assert_eq!(
        requester.balance_of(requester.sender()).await.unwrap(),
        tok(90)
    );

    let now = gateway.now().await.unwrap();
    let receipt = |fee: U256, nonce: u64, who: Address| Receipt {
        requester: who,
        gateway: gateway.sender(),
        requestHash: keccak256((who, nonce).abi_encode()),
        fee,
        nonce: U256::from(nonce),
        deadline: now + DAY,
    };
    let signed = |r: Receipt, k: &PrivateKeySigner| {
        let s = sign_receipt(k, &domain, &r).unwrap();
        (r, s)
    };
    let me = requester.sender();

    // The contract hashes a receipt as the library does.
    let r0 = receipt(milli(100), 0, me);
    assert_eq!(
        gateway.receipt_digest(&r0).await.unwrap(),
        r0.digest(&domain)
    );

    // Three receipts (nonces in two bitmap words) settled in one transaction.
    let batch = vec![
        signed(r0.clone(), key),
        signed(receipt(milli(250), 1, me), key),
        signed(receipt(milli(1_300), 700, me), key),
    ];
    let total = milli(1_650);
    let supply = gateway.total_supply().await.unwrap();
    let pool = gateway.balance_of(d.inference_pool).await.unwrap();
    let out = gateway.settle_receipts(&batch).await.unwrap();
    gas.settle_three = out.tx.gas_used;
    assert_eq!((out.settled, out.rejected.clone()), (3, vec![]));
    assert_eq!(out.total, total);
    assert_eq!(out.burnt, total / U256::from(2));
    assert_eq!(out.to_pool, total - out.burnt);
    assert_eq!(gateway.total_supply().await.unwrap(), supply - out.burnt);
    assert_eq!(
        gateway.balance_of(d.inference_pool).await.unwrap(),
        pool + out.to_pool
    );
    assert_eq!(gateway.fee_balance(me).await.unwrap(), tok(10) - total);
    assert_eq!(
        gateway.balance_of(d.inference_fees).await.unwrap(),
        tok(10) - total
    );
    for nonce in [0u64, 1, 700] {
        assert!(gateway.receipt_used(me, U256::from(nonce)).await.unwrap());
    }
    assert!(!gateway.receipt_used(me, U256::from(2)).await.unwrap());

    // A batch of every bad kind around two good receipts: only the good ones are charged.
    let fresh = signed(receipt(milli(400), 2, me), key);
    let forged = signed(receipt(milli(100), 3, me), &outsider);
    let unfunded = signed(receipt(milli(100), 0, broke.address()), broke);
    let expired = signed(
        Receipt {
            deadline: now - 1,
            ..receipt(milli(100), 4, me)
        },
        key,
    );
    let cheap = signed(receipt(milli(99), 5, me), key);
    let free = signed(receipt(U256::ZERO, 6, me), key);
    let also_good = signed(receipt(milli(100), 7, me), key);
    let mixed = vec![
        batch[0].clone(), // replay of an earlier batch
        fresh.clone(),
        fresh.clone(), // replay within this batch
        forged,
        unfunded,
        expired,
        cheap,
        free,
        also_good,
    ];
    let before = gateway.fee_balance(me).await.unwrap();
    let out = gateway.settle_receipts(&mixed).await.unwrap();
    assert_eq!(out.settled, 2);
    assert_eq!(
        out.rejected,
        vec![
            (0, RejectReason::NonceUsed),
            (2, RejectReason::NonceUsed),
            (3, RejectReason::BadSignature),
            (4, RejectReason::InsufficientFunds),
            (5, RejectReason::Expired),
            (6, RejectReason::FeeBelowMinimum),
            (7, RejectReason::FeeBelowMinimum),
        ]
    );
    assert_eq!(out.total, milli(500));
    assert_eq!(gateway.fee_balance(me).await.unwrap(), before - milli(500));
    // Skipped receipts leave their nonces unused.
    for nonce in [3u64, 4, 5, 6] {
        assert!(!gateway.receipt_used(me, U256::from(nonce)).await.unwrap());
    }
    assert!(
        !gateway
            .receipt_used(broke.address(), U256::ZERO)
            .await
            .unwrap()
    );

    // A batch with nothing valid moves nothing.
    let supply = gateway.total_supply().await.unwrap();
    let out = gateway
        .settle_receipts(std::slice::from_ref(&fresh))
        .await
        .unwrap();
    assert_eq!(
        (out.settled, out.total, out.rejected),
        (0, U256::ZERO, vec![(0, RejectReason::NonceUsed)])
    );
    assert_eq!(gateway.total_supply().await.unwrap(), supply);

    // Over MAX_BATCH receipts: the library refuses, the contract reverts by name; receipts
    // and signatures of different lengths revert too.
    let oversized: Vec<(Receipt, Bytes)> = (0..=MAX_BATCH as u64)
        .map(|i| (receipt(milli(100), 10_000 + i, me), fresh.1.clone()))
        .collect();
    assert!(matches!(
        gateway.settle_receipts(&oversized).await,
        Err(Error::InvalidInput(_))
    ));
    assert_revert(
        gateway.settle_receipts_unchecked(&oversized).await,
        "BatchTooLarge",
    );
    let uneven = InferenceFees::settleCall {
        receipts: vec![InferenceFees::Receipt {
            requester: me,
            gateway: gateway.sender(),
            requestHash: B256::ZERO,
            fee: milli(100),
            nonce: U256::from(8),
            deadline: now + DAY,
        }],
        signatures: vec![],
    };
    assert_revert(
        gateway
            .send_raw(d.inference_fees, uneven.abi_encode().into())
            .await,
        "LengthMismatch",
    );

    // Withdrawal: the whole balance starts unlocking; a receipt accepted before still settles
    // against the unlocking funds; the money leaves only after the delay.
    let left = gateway.fee_balance(me).await.unwrap();
    assert_revert(
        requester.request_fee_withdrawal(left + U256::from(1)).await,
        "InsufficientBalance",
    );
    assert_revert(requester.withdraw_fees().await, "NothingUnlocking");
    requester.request_fee_withdrawal(left).await.unwrap();
    let account = requester.fee_account(me).await.unwrap();
    let requested_at = requester.now().await.unwrap();
    assert_eq!((account.balance, account.unlocking), (U256::ZERO, left));
    assert!(account.unlock_at >= requested_at + 2 * DAY);
    let late = signed(receipt(milli(500), 9, me), key);
    let out = gateway.settle_receipts(&[late]).await.unwrap();
    assert_eq!((out.settled, out.total), (1, milli(500)));
    let left = left - milli(500);
    assert_eq!(requester.fee_account(me).await.unwrap().unlocking, left);
    assert_revert(requester.withdraw_fees().await, "StillUnlocking");
    requester.advance_time(2 * DAY + 1).await.unwrap();
    let wallet = requester.balance_of(me).await.unwrap();
    requester.withdraw_fees().await.unwrap();
    assert_eq!(requester.balance_of(me).await.unwrap(), wallet + left);
    assert_eq!(
        requester.fee_account(me).await.unwrap().unlocking,
        U256::ZERO
    );
    assert_revert(requester.withdraw_fees().await, "NothingUnlocking");
    // Nothing is left to charge: a further receipt finds no funds.
    let out = gateway
        .settle_receipts(&[signed(
            Receipt {
                deadline: u64::MAX,
                ..receipt(milli(100), 11, me)
            },
            key,
        )])
        .await
        .unwrap();
    assert_eq!(out.rejected, vec![(0, RejectReason::InsufficientFunds)]);
    assert_eq!(
        gateway.balance_of(d.inference_fees).await.unwrap(),
        U256::ZERO
    );
    gas
}
