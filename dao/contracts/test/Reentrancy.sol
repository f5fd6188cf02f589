// SPDX-License-Identifier: Apache-2.0 OR MIT
pragma solidity 0.8.28;

// TEST ONLY: compiled into tests/artifacts/, never into artifacts/, never deployed by `deploy`.

/// @notice The callback a hooked token makes into the accounts it touches.
interface ITokenHook {
    function tokenHook() external;
}

/// @title A hostile token for reentrancy tests of Staking and Settlement
/// @notice Implements what Staking (lock, unlock, burnLocked), Settlement (transfer,
/// transferFrom, burn, deliverReward) and Settlement's training pool (pay) call, and, unlike
/// ProposalToken, calls back every registered account it touches (an ERC-777-style hook), after
/// its own bookkeeping. A Staking or Settlement deployed with this token gives an attacker the
/// callback the real token never gives.
contract HookedToken {
    mapping(address account => uint256) public balanceOf;
    mapping(address account => uint256) public lockedOf;
    mapping(address account => bool) public hooked;

    /// @notice The caller wants `tokenHook()` calls (the ERC-1820 registration of ERC-777, reduced).
    function registerHook() external {
        hooked[msg.sender] = true;
    }

    /// @notice Test faucet.
    function mint(address to, uint256 amount) external {
        balanceOf[to] += amount;
        _hook(to);
    }

    function lock(address account, uint256 amount) external {
        require(balanceOf[account] - lockedOf[account] >= amount, "unlocked balance");
        lockedOf[account] += amount;
        _hook(account);
    }

    function unlock(address account, uint256 amount) external {
        lockedOf[account] -= amount;
        _hook(account);
    }

    function burnLocked(address account, uint256 amount) external {
        lockedOf[account] -= amount;
        balanceOf[account] -= amount;
        _hook(account);
    }

    function transfer(address to, uint256 amount) external returns (bool) {
        balanceOf[msg.sender] -= amount;
        balanceOf[to] += amount;
        _hook(msg.sender);
        _hook(to);
        return true;
    }

    function transferFrom(address from, address to, uint256 amount) external returns (bool) {
        balanceOf[from] -= amount;
        balanceOf[to] += amount;
        _hook(from);
        _hook(to);
        return true;
    }

    function burn(uint256 amount) external {
        balanceOf[msg.sender] -= amount;
        _hook(msg.sender);
    }

    /// @notice As ProposalToken's: the caller pays `to`; here with a hook before the transfer's
    /// own (where the real token delegates) and after it.
    function deliverReward(address to, uint256 amount) external {
        _hook(to);
        balanceOf[msg.sender] -= amount;
        balanceOf[to] += amount;
        _hook(to);
    }

    /// @notice Settlement's training pool: mints `amount` to `to` (this token is its own pool).
    function pay(address, address to, uint256 amount) external {
        balanceOf[to] += amount;
        _hook(to);
    }

    function _hook(address account) private {
        if (hooked[account]) ITokenHook(account).tokenHook();
    }
}

/// @title A contract account that tries to re-enter whatever called its token hook
/// @notice `arm(target, reentry)` stores a call; the next `tokenHook()` (from any token, during
/// any call) sends it to `target` once and bubbles its revert, so the outer transaction fails
/// with the error of the re-entered call. `attack(target, call)` makes the account itself call
/// `target` (stake, unstake, withdraw, claim as this contract) and bubbles that revert too.
/// `hooks` counts the callbacks received, armed or not.
contract ReentrantAttacker is ITokenHook {
    address public target;
    bytes public reentry;
    bool public armed;
    uint256 public hooks;

    /// @param hookedToken A HookedToken to register with, or zero (the real token has no hooks).
    constructor(address hookedToken) {
        if (hookedToken != address(0)) HookedToken(hookedToken).registerHook();
    }

    /// @notice Re-enter `target_` with `reentry_` on the next hook (an empty `reentry_` disarms).
    function arm(address target_, bytes calldata reentry_) external {
        target = target_;
        reentry = reentry_;
        armed = reentry_.length > 0;
    }

    /// @notice Calls `target_` with `data` as this contract.
    function attack(address target_, bytes calldata data) external returns (bytes memory) {
        return _call(target_, data);
    }

    function tokenHook() external {
        hooks += 1;
        if (!armed) return;
        // Once: without a guard the nested call then runs to its end instead of recursing
        // until out of gas, so what the test sees is the contract's own answer.
        armed = false;
        _call(target, reentry);
    }

    function _call(address to, bytes memory data) private returns (bytes memory ret) {
        bool ok;
        (ok, ret) = to.call(data);
        if (!ok) {
            assembly ("memory-safe") {
                revert(add(ret, 32), mload(ret))
            }
        }
    }
}
