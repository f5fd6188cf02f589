// SPDX-License-Identifier: Apache-2.0 OR MIT
pragma solidity 0.8.28;

import {AccessControl} from "@openzeppelin/contracts/access/AccessControl.sol";
import {ReentrancyGuardTransient} from "@openzeppelin/contracts/utils/ReentrancyGuardTransient.sol";

/// @notice What Staking needs from the token: non-custodial locks.
interface IStakeLocks {
    function lock(address account, uint256 amount) external;
    function unlock(address account, uint256 amount) external;
    function burnLocked(address account, uint256 amount) external;
    function seizeLocked(address account, address to, uint256 amount) external;
}

/// @title daofl staking: per-role stake that gates membership
/// @notice Members stake $PROPOSAL per role: 0 = training node (10,000 by default), 1 = inference node
/// (5,000), 2 = annotator (set at deployment). Minimums are governable (DEFAULT_ADMIN_ROLE, held by the
/// timelock). Unstaking starts an unbonding delay that is always longer than the challenge window,
/// so a slash decided during the window still reaches a leaving member; unbonding stake can be slashed.
/// Accounts with SLASHER_ROLE (the QA settlement of a later issue) slash, which burns the tokens,
/// and jail, which suspends membership until a time.
/// @dev Non-custodial: the token locks the staked amount inside the staker's own balance (see
/// ProposalToken). Staked tokens therefore keep their voting power, and the first stake of an
/// account that never delegated delegates it to itself. The only external calls are to the token,
/// which has no hooks, so nothing can reenter through it; still, stake, unstake, withdraw and slash
/// are `nonReentrant` (EIP-1153 transient guard, about 300 gas each), so that a re-entry from any
/// callback refuses with `ReentrancyGuardReentrantCall` (dao/tests/it/reentrancy.rs drives one
/// through a hooked test token), and every state change precedes the token call.
contract Staking is AccessControl, ReentrancyGuardTransient {
    /// @notice Role of the accounts allowed to slash and jail.
    bytes32 public constant SLASHER_ROLE = keccak256("SLASHER_ROLE");
    /// @notice Number of roles (0 training, 1 inference, 2 annotator).
    uint8 public constant ROLE_COUNT = 3;
    /// @notice Longest unbonding delay governance may set: 5 years (keeps every end time in range).
    uint64 public constant MAX_UNBONDING_DELAY = 5 * 365 days;

    /// @notice Membership of an account in a role, as the aggregator sees it.
    enum Status {
        Ok,
        NoStake,
        TooLittle,
        Jailed,
        Unbonding
    }

    /// @notice Stake of one account in one role.
    struct Position {
        uint128 staked;
        uint128 unbonding;
        uint64 unbondingEnds;
    }

    /// @notice The token whose balances are locked.
    IStakeLocks public immutable token;

    /// @notice Minimum active stake per role.
    mapping(uint8 role => uint256) public minStake;
    /// @notice Delay between unstaking and withdrawing, in seconds.
    uint64 public unbondingDelay;
    /// @notice Longest challenge window of any slash verdict, in seconds (the unbonding delay stays above it).
    uint64 public challengeWindow;
    /// @notice Until when an account is jailed (0: never jailed).
    mapping(address account => uint64) public jailedUntil;

    mapping(address account => mapping(uint8 role => Position)) private _positions;

    /// @notice `account` staked `amount` more in `role`.
    event Staked(address indexed account, uint8 indexed role, uint256 amount);
    /// @notice `account` started unbonding `amount` of `role`, withdrawable from `unbondingEnds`.
    event Unstaked(address indexed account, uint8 indexed role, uint256 amount, uint64 unbondingEnds);
    /// @notice `account` withdrew (unlocked) `amount` of `role` after unbonding.
    event Withdrawn(address indexed account, uint8 indexed role, uint256 amount);
    /// @notice `amount` of `account`'s stake in `role` was slashed and burnt.
    event Slashed(address indexed account, uint8 indexed role, uint256 amount, bytes32 reason, address slasher);
    /// @notice `account` is jailed until `until` (0: released).
    event Jailed(address indexed account, uint64 until, bytes32 reason);
    /// @notice The minimum stake of `role` changed.
    event MinStakeChanged(uint8 indexed role, uint256 amount);
    /// @notice The unbonding delay or challenge window changed.
    event DelaysChanged(uint64 unbondingDelay, uint64 challengeWindow);

    /// @notice A role number outside 0..ROLE_COUNT.
    error UnknownRole(uint8 role);
    /// @notice A zero amount.
    error ZeroAmount();
    /// @notice An address that must not be zero is.
    error ZeroAddress();
    /// @notice Unstaking more than the active stake.
    error InsufficientStake(uint256 staked, uint256 requested);
    /// @notice Nothing is unbonding.
    error NothingToWithdraw();
    /// @notice The unbonding delay has not passed.
    error StillUnbonding(uint64 unbondingEnds);
    /// @notice Slashing more than the active plus unbonding stake.
    error SlashExceedsStake(uint256 stake, uint256 requested);
    /// @notice The unbonding delay must exceed the challenge window.
    error UnbondingNotLongerThanChallenge(uint64 unbondingDelay, uint64 challengeWindow);
    /// @notice An unbonding delay above MAX_UNBONDING_DELAY.
    error UnbondingTooLong(uint64 unbondingDelay, uint64 maximum);

    /// @param token_ The $PROPOSAL token.
    /// @param admin Holder of DEFAULT_ADMIN_ROLE (the timelock).
    /// @param slashers First holders of SLASHER_ROLE (zero entries are skipped).
    /// @param minStakes Minimum stake of roles 0, 1 and 2.
    /// @param unbondingDelay_ Seconds between unstake and withdraw.
    /// @param challengeWindow_ Seconds of the longest challenge window (below the unbonding delay).
    constructor(
        address token_,
        address admin,
        address[] memory slashers,
        uint256[3] memory minStakes,
        uint64 unbondingDelay_,
        uint64 challengeWindow_
    ) {
        if (token_ == address(0) || admin == address(0)) revert ZeroAddress();
        token = IStakeLocks(token_);
        _grantRole(DEFAULT_ADMIN_ROLE, admin);
        for (uint256 i = 0; i < slashers.length; ++i) {
            if (slashers[i] != address(0)) _grantRole(SLASHER_ROLE, slashers[i]);
        }
        for (uint8 r = 0; r < ROLE_COUNT; ++r) {
            minStake[r] = minStakes[r];
            emit MinStakeChanged(r, minStakes[r]);
        }
        _setDelays(unbondingDelay_, challengeWindow_);
    }

    modifier knownRole(uint8 role) {
        if (role >= ROLE_COUNT) revert UnknownRole(role);
        _;
    }

    // ----- members -----

    /// @notice Stakes `amount` of the caller's unlocked tokens in `role`.
    function stake(uint8 role, uint256 amount) external nonReentrant knownRole(role) {
        if (amount == 0) revert ZeroAmount();
        Position storage p = _positions[msg.sender][role];
        p.staked += uint128(amount);
        // The token refuses more than the unlocked balance (reverting the line above), so the
        // sum stays below the supply and the cast never truncates a stake that stands.
        token.lock(msg.sender, amount);
        emit Staked(msg.sender, role, amount);
    }

    /// @notice Starts unbonding `amount` of the caller's active stake in `role`; the whole
    /// unbonding amount becomes withdrawable `unbondingDelay` seconds from now.
    function unstake(uint8 role, uint256 amount) external nonReentrant knownRole(role) {
        if (amount == 0) revert ZeroAmount();
        Position storage p = _positions[msg.sender][role];
        if (amount > p.staked) revert InsufficientStake(p.staked, amount);
        p.staked -= uint128(amount);
        p.unbonding += uint128(amount);
        uint64 ends = uint64(block.timestamp) + unbondingDelay;
        p.unbondingEnds = ends;
        emit Unstaked(msg.sender, role, amount, ends);
    }

    /// @notice Unlocks the caller's unbonded stake in `role` once the unbonding delay has passed.
    function withdraw(uint8 role) external nonReentrant knownRole(role) {
        Position storage p = _positions[msg.sender][role];
        uint256 amount = p.unbonding;
        if (amount == 0) revert NothingToWithdraw();
        if (block.timestamp < p.unbondingEnds) revert StillUnbonding(p.unbondingEnds);
        p.unbonding = 0;
        p.unbondingEnds = 0;
        token.unlock(msg.sender, amount);
        emit Withdrawn(msg.sender, role, amount);
    }

    // ----- slasher -----

    /// @notice Slashes `amount` of `account`'s stake in `role` (active first, then unbonding) and burns it.
    function slash(address account, uint8 role, uint256 amount, bytes32 reason)
        external
        nonReentrant
        onlyRole(SLASHER_ROLE)
        knownRole(role)
    {
        _slash(account, role, amount, reason);
        token.burnLocked(account, amount);
    }

    /// @notice Slashes `amount` of `account`'s stake in `role`: `returned` of it goes to `to` (a
    /// pool, as governance decided), the rest is burnt.
    function slashSplit(address account, uint8 role, uint256 amount, uint256 returned, address to, bytes32 reason)
        external
        nonReentrant
        onlyRole(SLASHER_ROLE)
        knownRole(role)
    {
        if (returned > amount) revert SlashExceedsStake(amount, returned);
        if (returned > 0 && to == address(0)) revert ZeroAddress();
        _slash(account, role, amount, reason);
        if (amount > returned) token.burnLocked(account, amount - returned);
        if (returned > 0) token.seizeLocked(account, to, returned);
    }

    function _slash(address account, uint8 role, uint256 amount, bytes32 reason) private {
        if (amount == 0) revert ZeroAmount();
        Position storage p = _positions[account][role];
        uint256 staked = p.staked;
        uint256 total = staked + p.unbonding;
        if (amount > total) revert SlashExceedsStake(total, amount);
        if (amount <= staked) {
            p.staked = uint128(staked - amount);
        } else {
            p.staked = 0;
            p.unbonding = uint128(total - amount);
        }
        emit Slashed(account, role, amount, reason, msg.sender);
    }

    /// @notice Jails `account` until `until` (a timestamp; 0 or a past time releases it).
    function jail(address account, uint64 until, bytes32 reason) external onlyRole(SLASHER_ROLE) {
        if (account == address(0)) revert ZeroAddress();
        jailedUntil[account] = until;
        emit Jailed(account, until, reason);
    }

    // ----- governance -----

    /// @notice Sets the minimum stake of `role` (governance).
    function setMinStake(uint8 role, uint256 amount) external onlyRole(DEFAULT_ADMIN_ROLE) knownRole(role) {
        minStake[role] = amount;
        emit MinStakeChanged(role, amount);
    }

    /// @notice Sets the unbonding delay and the challenge window (governance); the delay must exceed the window.
    function setDelays(uint64 unbondingDelay_, uint64 challengeWindow_) external onlyRole(DEFAULT_ADMIN_ROLE) {
        _setDelays(unbondingDelay_, challengeWindow_);
    }

    function _setDelays(uint64 unbondingDelay_, uint64 challengeWindow_) private {
        if (unbondingDelay_ > MAX_UNBONDING_DELAY) revert UnbondingTooLong(unbondingDelay_, MAX_UNBONDING_DELAY);
        if (unbondingDelay_ <= challengeWindow_) {
            revert UnbondingNotLongerThanChallenge(unbondingDelay_, challengeWindow_);
        }
        unbondingDelay = unbondingDelay_;
        challengeWindow = challengeWindow_;
        emit DelaysChanged(unbondingDelay_, challengeWindow_);
    }

    // ----- views -----

    /// @notice The stake of `account` in `role`.
    function positionOf(address account, uint8 role) external view knownRole(role) returns (Position memory) {
        return _positions[account][role];
    }

    /// @notice Whether `account` may act in `role` now, and why not: jailed first, then enough
    /// active stake (Ok), then unbonding (active stake below the minimum while some unbonds),
    /// then no stake at all, else too little.
    function membership(address account, uint8 role)
        external
        view
        knownRole(role)
        returns (Status status, uint256 staked, uint256 minimum, uint256 unbonding, uint64 jailed)
    {
        Position memory p = _positions[account][role];
        staked = p.staked;
        unbonding = p.unbonding;
        minimum = minStake[role];
        jailed = jailedUntil[account];
        if (jailed > block.timestamp) {
            status = Status.Jailed;
        } else if (staked >= minimum && staked > 0) {
            status = Status.Ok;
        } else if (unbonding > 0) {
            status = Status.Unbonding;
        } else if (staked == 0) {
            status = Status.NoStake;
        } else {
            status = Status.TooLittle;
        }
    }
}
