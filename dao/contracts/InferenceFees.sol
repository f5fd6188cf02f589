// SPDX-License-Identifier: Apache-2.0 OR MIT
pragma solidity 0.8.28;

import {AccessControl} from "@openzeppelin/contracts/access/AccessControl.sol";
import {IERC20} from "@openzeppelin/contracts/token/ERC20/IERC20.sol";
import {SafeERC20} from "@openzeppelin/contracts/token/ERC20/utils/SafeERC20.sol";
import {EIP712} from "@openzeppelin/contracts/utils/cryptography/EIP712.sol";
import {ECDSA} from "@openzeppelin/contracts/utils/cryptography/ECDSA.sol";
import {ReentrancyGuardTransient} from "@openzeppelin/contracts/utils/ReentrancyGuardTransient.sol";

/// @notice What InferenceFees needs from the inference Settlement.
interface IFeeSplitter {
    function splitFee(uint256 amount) external returns (uint256 burnt, uint256 toPool);
}

/// @title daofl inference fees: prepaid balances, signed per-request receipts, batch settlement
/// @notice A requester deposits $PROPOSAL here, then signs one EIP-712
/// Receipt(requester, gateway, requestHash, fee, nonce, deadline) per request it sends to a
/// gateway. The gateway (or anyone) settles receipts in batches of at most MAX_BATCH: each
/// receipt whose signature recovers to its requester, whose (requester, nonce) was never used,
/// whose deadline has not passed, whose fee is at least the governed `minFee` and which the
/// requester's balance (then its unlocking funds) covers is charged and its nonce marked used;
/// any other is skipped with `ReceiptRejected` naming the reason, never reverting the batch. The
/// batch's summed fees go through the inference Settlement's `splitFee` in one call: half burnt,
/// the rest to the inference pool.
///
/// Withdrawals wait: `requestWithdrawal` moves funds out of the balance into an unlocking amount
/// that `withdraw` pays out only `withdrawDelay` seconds later, and receipts may still be charged
/// against unlocking funds meanwhile, so a gateway that accepted a receipt has that long to
/// settle it before the money can leave.
///
/// Receipts name their gateway; whether the gateway submitting a receipt is the one named is
/// the gateway's own off-chain check (the fee never goes to the submitter, so submitting another
/// gateway's receipt gains nothing).
/// @dev DEFAULT_ADMIN_ROLE (the timelock) sets `withdrawDelay` and `minFee`. Nonces are marked in
/// a bitmap per requester (256 per storage word), so a requester may use them in any order. The
/// only external calls are to the token and the Settlement; every entry point that moves tokens
/// is `nonReentrant` (EIP-1153 transient guard) and state changes precede the calls.
contract InferenceFees is AccessControl, EIP712, ReentrancyGuardTransient {
    using SafeERC20 for IERC20;

    /// @notice EIP-712 type of a request's receipt.
    bytes32 public constant RECEIPT_TYPEHASH = keccak256(
        "Receipt(address requester,address gateway,bytes32 requestHash,uint256 fee,uint256 nonce,uint64 deadline)"
    );
    /// @notice Most receipts one `settle` call takes.
    uint256 public constant MAX_BATCH = 256;
    /// @notice Longest withdrawal delay governance may set: 1 year.
    uint64 public constant MAX_WITHDRAW_DELAY = 365 days;

    /// @notice Why a receipt was skipped (the `reason` of `ReceiptRejected`).
    enum RejectReason {
        /// Not rejected (never emitted).
        None,
        /// The signature is malformed or recovers to someone other than the requester.
        BadSignature,
        /// The requester's nonce was already used (a replay).
        NonceUsed,
        /// The receipt's deadline has passed.
        Expired,
        /// The fee is below the governed minimum (or zero).
        FeeBelowMinimum,
        /// The requester's balance and unlocking funds do not cover the fee.
        InsufficientFunds
    }

    /// @notice A requester's signed promise to pay `fee` for the request `requestHash` served
    /// through `gateway`, valid until `deadline`.
    struct Receipt {
        address requester;
        address gateway;
        bytes32 requestHash;
        uint256 fee;
        uint256 nonce;
        uint64 deadline;
    }

    /// @notice A requester's funds.
    struct Account {
        /// Prepaid and chargeable.
        uint128 balance;
        /// Leaving: chargeable still, withdrawable from `unlockAt`.
        uint128 unlocking;
        /// When the unlocking funds may be withdrawn.
        uint64 unlockAt;
    }

    /// @notice The $PROPOSAL token.
    IERC20 public immutable token;
    /// @notice The inference Settlement whose `splitFee` takes settled fees.
    IFeeSplitter public immutable settlement;

    /// @notice Seconds between a withdrawal request and the withdrawal (governable).
    uint64 public withdrawDelay;
    /// @notice Least fee a receipt may carry, base units (governable; 0.1 $PROPOSAL by default).
    uint256 public minFee;

    mapping(address requester => Account) private _accounts;
    mapping(address requester => mapping(uint256 word => uint256)) private _usedNonces;

    /// @notice `requester` deposited `amount`.
    event Deposited(address indexed requester, uint256 amount);
    /// @notice `requester` moved `amount` to unlocking (now `unlocking` in all), withdrawable from `unlockAt`.
    event WithdrawalRequested(address indexed requester, uint256 amount, uint256 unlocking, uint64 unlockAt);
    /// @notice `requester` withdrew `amount`.
    event Withdrawn(address indexed requester, uint256 amount);
    /// @notice A receipt was charged: `fee` of `requester`'s funds for the request `requestHash`.
    event ReceiptSettled(address indexed requester, uint256 indexed nonce, bytes32 requestHash, uint256 fee);
    /// @notice Receipt `index` of a batch was skipped for `reason` (a `RejectReason`).
    event ReceiptRejected(uint256 index, address indexed requester, uint256 indexed nonce, uint8 reason);
    /// @notice A batch settled `settled` receipts worth `total`: `burnt` burnt, `toPool` to the inference pool.
    event BatchSettled(address indexed by, uint256 settled, uint256 total, uint256 burnt, uint256 toPool);
    /// @notice The withdrawal delay changed.
    event WithdrawDelayChanged(uint64 withdrawDelay);
    /// @notice The minimum fee changed.
    event MinFeeChanged(uint256 minFee);

    /// @notice An address that must not be zero is.
    error ZeroAddress();
    /// @notice A zero amount.
    error ZeroAmount();
    /// @notice A withdrawal request above the balance.
    error InsufficientBalance(uint256 balance, uint256 requested);
    /// @notice A deposit that would take a balance above 2^128 - 1.
    error BalanceOverflow();
    /// @notice Nothing is unlocking.
    error NothingUnlocking();
    /// @notice The unlocking funds are withdrawable only from `unlockAt`.
    error StillUnlocking(uint64 unlockAt);
    /// @notice More receipts than MAX_BATCH.
    error BatchTooLarge(uint256 receipts, uint256 max);
    /// @notice Not one signature per receipt.
    error LengthMismatch(uint256 receipts, uint256 signatures);
    /// @notice A withdrawal delay above MAX_WITHDRAW_DELAY.
    error WithdrawDelayTooLong(uint64 withdrawDelay, uint64 max);

    /// @param token_ The $PROPOSAL token.
    /// @param settlement_ The inference Settlement (its `splitFee` takes settled fees).
    /// @param admin DEFAULT_ADMIN_ROLE (the timelock).
    /// @param withdrawDelay_ Seconds between a withdrawal request and the withdrawal.
    /// @param minFee_ Least fee per receipt, base units.
    constructor(address token_, address settlement_, address admin, uint64 withdrawDelay_, uint256 minFee_)
        EIP712("daofl InferenceFees", "1")
    {
        if (token_ == address(0) || settlement_ == address(0) || admin == address(0)) revert ZeroAddress();
        token = IERC20(token_);
        settlement = IFeeSplitter(settlement_);
        _grantRole(DEFAULT_ADMIN_ROLE, admin);
        _setWithdrawDelay(withdrawDelay_);
        _setMinFee(minFee_);
    }

    // ----- governance -----

    /// @notice Sets the withdrawal delay (governance); applies to withdrawals requested from now on.
    function setWithdrawDelay(uint64 withdrawDelay_) external onlyRole(DEFAULT_ADMIN_ROLE) {
        _setWithdrawDelay(withdrawDelay_);
    }

    /// @notice Sets the minimum fee per receipt (governance); applies to batches settled from now on.
    function setMinFee(uint256 minFee_) external onlyRole(DEFAULT_ADMIN_ROLE) {
        _setMinFee(minFee_);
    }

    function _setWithdrawDelay(uint64 d) private {
        if (d > MAX_WITHDRAW_DELAY) revert WithdrawDelayTooLong(d, MAX_WITHDRAW_DELAY);
        withdrawDelay = d;
        emit WithdrawDelayChanged(d);
    }

    function _setMinFee(uint256 f) private {
        minFee = f;
        emit MinFeeChanged(f);
    }

    // ----- views -----

    /// @notice `requester`'s chargeable balance (not counting unlocking funds).
    function balanceOf(address requester) external view returns (uint256) {
        return _accounts[requester].balance;
    }

    /// @notice `requester`'s funds: balance, unlocking amount and when it unlocks.
    function account(address requester) external view returns (Account memory) {
        return _accounts[requester];
    }

    /// @notice Whether `requester`'s `nonce` was used by a settled receipt.
    function isUsed(address requester, uint256 nonce) public view returns (bool) {
        return (_usedNonces[requester][nonce >> 8] >> (nonce & 0xff)) & 1 == 1;
    }

    /// @notice The EIP-712 digest a requester signs for a receipt.
    function receiptDigest(Receipt calldata r) public view returns (bytes32) {
        return _hashTypedDataV4(
            keccak256(abi.encode(RECEIPT_TYPEHASH, r.requester, r.gateway, r.requestHash, r.fee, r.nonce, r.deadline))
        );
    }

    // ----- requesters -----

    /// @notice Deposits `amount` of the caller's tokens (approved beforehand) into its balance.
    function deposit(uint256 amount) external nonReentrant {
        if (amount == 0) revert ZeroAmount();
        Account storage a = _accounts[msg.sender];
        uint256 balance = uint256(a.balance) + amount;
        if (balance > type(uint128).max) revert BalanceOverflow();
        a.balance = uint128(balance);
        token.safeTransferFrom(msg.sender, address(this), amount);
        emit Deposited(msg.sender, amount);
    }

    /// @notice Moves `amount` of the caller's balance to its unlocking funds, withdrawable
    /// `withdrawDelay` seconds from now (a new request postpones what is already unlocking).
    function requestWithdrawal(uint256 amount) external {
        if (amount == 0) revert ZeroAmount();
        Account storage a = _accounts[msg.sender];
        uint256 balance = a.balance;
        if (amount > balance) revert InsufficientBalance(balance, amount);
        uint64 unlockAt = uint64(block.timestamp) + withdrawDelay;
        // unlocking + amount <= the deposits, which fit uint128.
        uint128 unlocking = a.unlocking + uint128(amount);
        a.balance = uint128(balance - amount);
        a.unlocking = unlocking;
        a.unlockAt = unlockAt;
        emit WithdrawalRequested(msg.sender, amount, unlocking, unlockAt);
    }

    /// @notice Pays the caller's unlocking funds out once their delay has passed; returns the amount.
    function withdraw() external nonReentrant returns (uint256 amount) {
        Account storage a = _accounts[msg.sender];
        amount = a.unlocking;
        if (amount == 0) revert NothingUnlocking();
        if (block.timestamp < a.unlockAt) revert StillUnlocking(a.unlockAt);
        a.unlocking = 0;
        token.safeTransfer(msg.sender, amount);
        emit Withdrawn(msg.sender, amount);
    }

    // ----- gateways -----

    /// @notice Charges every valid receipt of the batch (`signatures[i]` is the requester's
    /// signature of `receipts[i]`) and skips the others with `ReceiptRejected`; the summed fees
    /// go through the inference Settlement's `splitFee` in one call. Anyone may call.
    /// @return settled The number of receipts charged.
    /// @return total Their summed fees.
    function settle(Receipt[] calldata receipts, bytes[] calldata signatures)
        external
        nonReentrant
        returns (uint256 settled, uint256 total)
    {
        uint256 n = receipts.length;
        if (n > MAX_BATCH) revert BatchTooLarge(n, MAX_BATCH);
        if (signatures.length != n) revert LengthMismatch(n, signatures.length);
        uint256 floor = minFee;
        for (uint256 i = 0; i < n; ++i) {
            Receipt calldata r = receipts[i];
            RejectReason reason = _charge(r, signatures[i], floor);
            if (reason != RejectReason.None) {
                emit ReceiptRejected(i, r.requester, r.nonce, uint8(reason));
                continue;
            }
            settled += 1;
            total += r.fee;
            emit ReceiptSettled(r.requester, r.nonce, r.requestHash, r.fee);
        }
        uint256 burnt;
        uint256 toPool;
        if (total > 0) {
            token.forceApprove(address(settlement), total);
            (burnt, toPool) = settlement.splitFee(total);
        }
        emit BatchSettled(msg.sender, settled, total, burnt, toPool);
    }

    /// @dev Checks `r` and, if it passes, charges its fee to the requester (balance first, then
    /// unlocking funds) and marks its nonce used, returning `None`; returns why it does not pass
    /// otherwise.
    function _charge(Receipt calldata r, bytes calldata signature, uint256 floor) private returns (RejectReason) {
        uint256 fee = r.fee;
        if (fee == 0 || fee < floor) return RejectReason.FeeBelowMinimum;
        if (block.timestamp > r.deadline) return RejectReason.Expired;
        if (isUsed(r.requester, r.nonce)) return RejectReason.NonceUsed;
        (address signer, ECDSA.RecoverError err,) = ECDSA.tryRecover(receiptDigest(r), signature);
        if (err != ECDSA.RecoverError.NoError || signer != r.requester) return RejectReason.BadSignature;
        if (!_debit(r.requester, fee)) return RejectReason.InsufficientFunds;
        _usedNonces[r.requester][r.nonce >> 8] |= 1 << (r.nonce & 0xff);
        return RejectReason.None;
    }

    /// @dev Takes `fee` from `requester`'s balance, then from its unlocking funds; false (and
    /// nothing taken) if they do not cover it.
    function _debit(address requester, uint256 fee) private returns (bool) {
        Account storage a = _accounts[requester];
        uint256 balance = a.balance;
        uint256 unlocking = a.unlocking;
        if (fee > balance + unlocking) return false;
        if (fee <= balance) {
            a.balance = uint128(balance - fee);
        } else {
            a.balance = 0;
            a.unlocking = uint128(unlocking - (fee - balance));
        }
        return true;
    }
}
