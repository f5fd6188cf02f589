// SPDX-License-Identifier: Apache-2.0 OR MIT
pragma solidity 0.8.28;

import {AccessControl} from "@openzeppelin/contracts/access/AccessControl.sol";
import {IERC20} from "@openzeppelin/contracts/token/ERC20/IERC20.sol";
import {SafeERC20} from "@openzeppelin/contracts/token/ERC20/utils/SafeERC20.sol";
import {TimelockController} from "@openzeppelin/contracts/governance/TimelockController.sol";
import {VestingWallet} from "@openzeppelin/contracts/finance/VestingWallet.sol";

/// @title A reward pool of the allocation (data contributors, training nodes, inference nodes)
/// @notice Holds its share of $PROPOSAL and releases it linearly from `start` over `duration`
/// seconds (0: all at once). Released tokens leave only through DISTRIBUTOR_ROLE, which the
/// reward mechanism of a later issue receives from governance (DEFAULT_ADMIN_ROLE: the timelock);
/// until then the pool holds.
contract RewardPool is AccessControl {
    using SafeERC20 for IERC20;

    /// @notice Role of the accounts allowed to pay out released tokens.
    bytes32 public constant DISTRIBUTOR_ROLE = keccak256("DISTRIBUTOR_ROLE");

    /// @notice Start of the linear release.
    uint64 public immutable start;
    /// @notice Length of the linear release in seconds.
    uint64 public immutable duration;

    mapping(address token => uint256) private _paid;

    /// @notice `amount` of `token` was paid to `to`.
    event Paid(address indexed token, address indexed to, uint256 amount);

    /// @notice Paying more than is released and unpaid.
    error ExceedsReleased(uint256 available, uint256 requested);
    /// @notice A zero amount or recipient.
    error InvalidPayment();

    /// @param admin Holder of DEFAULT_ADMIN_ROLE (the timelock).
    /// @param start_ Release start (unix seconds).
    /// @param duration_ Release length in seconds.
    /// @param distributor First holder of DISTRIBUTOR_ROLE (the Settlement contract), or zero.
    constructor(address admin, uint64 start_, uint64 duration_, address distributor) {
        _grantRole(DEFAULT_ADMIN_ROLE, admin);
        if (distributor != address(0)) _grantRole(DISTRIBUTOR_ROLE, distributor);
        start = start_;
        duration = duration_;
    }

    /// @notice Tokens of `token` paid so far.
    function paid(address token) external view returns (uint256) {
        return _paid[token];
    }

    /// @notice Tokens of `token` released by `timestamp` (paid or not).
    function releasedAt(address token, uint64 timestamp) public view returns (uint256) {
        uint256 total = IERC20(token).balanceOf(address(this)) + _paid[token];
        if (timestamp < start) return 0;
        if (duration == 0 || uint256(timestamp) >= uint256(start) + duration) return total;
        return (total * (timestamp - start)) / duration;
    }

    /// @notice Released tokens not paid yet.
    function available(address token) public view returns (uint256) {
        return releasedAt(token, uint64(block.timestamp)) - _paid[token];
    }

    /// @notice Pays `amount` of released `token` to `to`.
    function pay(address token, address to, uint256 amount) external onlyRole(DISTRIBUTOR_ROLE) {
        if (amount == 0 || to == address(0)) revert InvalidPayment();
        uint256 free = available(token);
        if (amount > free) revert ExceedsReleased(free, amount);
        _paid[token] += amount;
        IERC20(token).safeTransfer(to, amount);
        emit Paid(token, to, amount);
    }
}

/// @title A linear vesting wallet of the allocation (team: 4 years, early investors: 2 years)
/// @notice OpenZeppelin's VestingWallet unchanged: `release(token)` sends what has vested to the beneficiary.
contract AllocationVesting is VestingWallet {
    /// @param beneficiary Receives the vested tokens (and owns the wallet).
    /// @param startTimestamp Vesting start (unix seconds).
    /// @param durationSeconds Vesting length.
    constructor(address beneficiary, uint64 startTimestamp, uint64 durationSeconds)
        VestingWallet(beneficiary, startTimestamp, durationSeconds)
    {}
}

/// @title The DAO's timelock: OpenZeppelin's TimelockController unchanged
/// @notice Deployed with the Governor as its only proposer, canceller and executor, and no admin
/// besides itself (see DaoGovernor).
contract DaoTimelock is TimelockController {
    /// @param minDelay Minimum delay of an operation (7 days for the DAO).
    /// @param proposers Proposers and cancellers (the Governor only).
    /// @param executors Executors (the Governor only).
    /// @param admin Optional extra admin (zero for the DAO).
    constructor(uint256 minDelay, address[] memory proposers, address[] memory executors, address admin)
        TimelockController(minDelay, proposers, executors, admin)
    {}
}
