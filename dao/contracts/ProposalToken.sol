// SPDX-License-Identifier: Apache-2.0 OR MIT
pragma solidity 0.8.28;

import {ERC20} from "@openzeppelin/contracts/token/ERC20/ERC20.sol";
import {ERC20Burnable} from "@openzeppelin/contracts/token/ERC20/extensions/ERC20Burnable.sol";
import {ERC20Permit} from "@openzeppelin/contracts/token/ERC20/extensions/ERC20Permit.sol";
import {ERC20Votes} from "@openzeppelin/contracts/token/ERC20/extensions/ERC20Votes.sol";
import {Nonces} from "@openzeppelin/contracts/utils/Nonces.sol";
import {Checkpoints} from "@openzeppelin/contracts/utils/structs/Checkpoints.sol";
import {Time} from "@openzeppelin/contracts/utils/types/Time.sol";

/// @title $PROPOSAL, the daofl DAO's governance and staking token
/// @notice ERC20 + ERC20Permit + ERC20Votes with a timestamp clock (ERC-6372, `mode=timestamp`), burnable.
/// The whole supply, 1,000,000,000 tokens, is minted once at deployment into the allocation:
/// 40% data-contributor pool, 30% training-node pool, 20% inference-node pool, 5% treasury (the
/// timelock), 3% team vesting wallet, 2% investor vesting wallet. Nothing can mint afterwards.
/// @dev Staking is non-custodial: the Staking contract named at deployment locks part of a holder's
/// balance instead of taking it. Locked tokens cannot be transferred or burnt by the holder, but
/// they stay in the holder's balance and so KEEP THEIR VOTING POWER. The first lock of an account
/// that never delegated delegates it to itself (voting power is zero until delegation otherwise).
/// Slashing burns locked tokens (`burnLocked`), so the total supply falls by exactly the slash.
///
/// Votable supply: the allocation contracts (the three pools, the treasury and the two vesting
/// wallets) never vote, so the Governor's quorum is a fraction of the total supply minus what they
/// hold, checkpointed on the same clock (`getPastVotableSupply`).
contract ProposalToken is ERC20, ERC20Burnable, ERC20Permit, ERC20Votes {
    using Checkpoints for Checkpoints.Trace208;

    /// @notice The fixed supply: one billion tokens of 18 decimals.
    uint256 public constant TOTAL_SUPPLY = 1_000_000_000 ether;

    /// @notice Where the supply is minted at deployment.
    struct Allocation {
        address dataPool;
        address trainingPool;
        address inferencePool;
        address treasury;
        address teamVesting;
        address investorVesting;
    }

    /// @notice The Staking contract, the only account that locks, unlocks and burns locked tokens.
    address public immutable staking;
    /// @notice The Settlement contract (pays rewards, delegating a claimer that never delegated to itself).
    address public immutable settlement;
    /// @notice The inference nodes' Settlement contract (pays their rewards the same way).
    address public immutable inferenceSettlement;
    /// @notice The annotators' Settlement contract (pays annotation rewards from the data pool).
    address public immutable dataSettlement;

    address private immutable _dataPool;
    address private immutable _trainingPool;
    address private immutable _inferencePool;
    address private immutable _treasury;
    address private immutable _teamVesting;
    address private immutable _investorVesting;

    mapping(address account => uint256) private _locked;
    Checkpoints.Trace208 private _allocationHeld;

    /// @notice Staking locked `amount` more of `account`'s balance.
    event Locked(address indexed account, uint256 amount);
    /// @notice Staking unlocked `amount` of `account`'s balance.
    event Unlocked(address indexed account, uint256 amount);
    /// @notice Staking burnt `amount` of `account`'s locked balance (a slash).
    event LockedBurnt(address indexed account, uint256 amount);
    /// @notice `amount` of `account`'s locked tokens moved to `to` (a slash's part returned to a pool).
    event LockedSeized(address indexed account, address indexed to, uint256 amount);

    /// @notice The caller is not the Staking contract.
    error OnlyStaking(address caller);
    /// @notice A call reserved to the Settlement contracts.
    error OnlySettlement(address caller);
    /// @notice An allocation or staking address is zero, or two allocation addresses are equal.
    error InvalidAllocation();
    /// @notice A lock, unlock or burn of zero tokens.
    error ZeroAmount();
    /// @notice The transfer, burn or lock would touch locked tokens.
    error InsufficientUnlockedBalance(address account, uint256 unlocked, uint256 needed);
    /// @notice An unlock or locked burn of more than is locked.
    error InsufficientLocked(address account, uint256 locked, uint256 needed);

    /// @param name_ Token name (also the EIP-712 domain name of permits).
    /// @param symbol_ Token symbol.
    /// @param allocation The six allocation holders (distinct, non-zero).
    /// @param staking_ The Staking contract.
    /// @param settlement_ The Settlement contract.
    /// @param inferenceSettlement_ The inference nodes' Settlement contract.
    /// @param dataSettlement_ The annotators' Settlement contract.
    constructor(
        string memory name_,
        string memory symbol_,
        Allocation memory allocation,
        address staking_,
        address settlement_,
        address inferenceSettlement_,
        address dataSettlement_
    )
        ERC20(name_, symbol_)
        ERC20Permit(name_)
    {
        address[6] memory holders = [
            allocation.dataPool,
            allocation.trainingPool,
            allocation.inferencePool,
            allocation.treasury,
            allocation.teamVesting,
            allocation.investorVesting
        ];
        for (uint256 i = 0; i < 6; ++i) {
            if (holders[i] == address(0) || holders[i] == staking_) revert InvalidAllocation();
            for (uint256 j = 0; j < i; ++j) {
                if (holders[i] == holders[j]) revert InvalidAllocation();
            }
        }
        if (
            staking_ == address(0) || settlement_ == address(0) || inferenceSettlement_ == address(0)
                || dataSettlement_ == address(0)
        ) {
            revert InvalidAllocation();
        }
        staking = staking_;
        settlement = settlement_;
        inferenceSettlement = inferenceSettlement_;
        dataSettlement = dataSettlement_;
        _dataPool = allocation.dataPool;
        _trainingPool = allocation.trainingPool;
        _inferencePool = allocation.inferencePool;
        _treasury = allocation.treasury;
        _teamVesting = allocation.teamVesting;
        _investorVesting = allocation.investorVesting;

        _mint(allocation.dataPool, (TOTAL_SUPPLY * 40) / 100);
        _mint(allocation.trainingPool, (TOTAL_SUPPLY * 30) / 100);
        _mint(allocation.inferencePool, (TOTAL_SUPPLY * 20) / 100);
        _mint(allocation.treasury, (TOTAL_SUPPLY * 5) / 100);
        _mint(allocation.teamVesting, (TOTAL_SUPPLY * 3) / 100);
        _mint(allocation.investorVesting, (TOTAL_SUPPLY * 2) / 100);
    }

    modifier onlyStaking() {
        if (msg.sender != staking) revert OnlyStaking(msg.sender);
        _;
    }

    // ----- ERC-6372 clock: timestamps -----

    /// @notice ERC-6372 clock: the block timestamp.
    function clock() public view override returns (uint48) {
        return Time.timestamp();
    }

    /// @notice ERC-6372 clock mode: timestamps.
    // solhint-disable-next-line func-name-mixedcase
    function CLOCK_MODE() public pure override returns (string memory) {
        return "mode=timestamp";
    }

    // ----- non-custodial staking locks -----

    /// @notice Tokens of `account` locked by staking (active and unbonding stake).
    function lockedOf(address account) external view returns (uint256) {
        return _locked[account];
    }

    /// @notice Locks `amount` of `account`'s unlocked balance; delegates the account to itself
    /// if it never delegated, so that staked tokens vote.
    function lock(address account, uint256 amount) external onlyStaking {
        if (amount == 0) revert ZeroAmount();
        uint256 locked = _locked[account];
        uint256 unlocked = balanceOf(account) - locked;
        if (amount > unlocked) revert InsufficientUnlockedBalance(account, unlocked, amount);
        _locked[account] = locked + amount;
        if (delegates(account) == address(0)) _delegate(account, account);
        emit Locked(account, amount);
    }

    /// @notice Unlocks `amount` of `account`'s locked tokens (a withdrawal after unbonding).
    function unlock(address account, uint256 amount) external onlyStaking {
        if (amount == 0) revert ZeroAmount();
        uint256 locked = _locked[account];
        if (amount > locked) revert InsufficientLocked(account, locked, amount);
        _locked[account] = locked - amount;
        emit Unlocked(account, amount);
    }

    /// @notice Pays a claimed reward (the three Settlements only): delegates `to` to itself if it never
    /// delegated, so that claimed tokens vote, then transfers `amount` from Settlement to `to`.
    /// One call per claim instead of a delegation call and a transfer.
    function deliverReward(address to, uint256 amount) external {
        if (msg.sender != settlement && msg.sender != inferenceSettlement && msg.sender != dataSettlement) {
            revert OnlySettlement(msg.sender);
        }
        if (delegates(to) == address(0)) _delegate(to, to);
        _transfer(msg.sender, to, amount);
    }

    /// @notice Burns `amount` of `account`'s locked tokens (a slash): the supply falls by exactly
    /// `amount`, and so do the votes of the account's delegate.
    function burnLocked(address account, uint256 amount) external onlyStaking {
        _takeLocked(account, amount);
        _burn(account, amount);
        emit LockedBurnt(account, amount);
    }

    /// @notice Moves `amount` of `account`'s locked tokens to `to` (the part of a slash
    /// governance returns to a pool); Staking only.
    function seizeLocked(address account, address to, uint256 amount) external onlyStaking {
        _takeLocked(account, amount);
        _transfer(account, to, amount);
        emit LockedSeized(account, to, amount);
    }

    function _takeLocked(address account, uint256 amount) private {
        if (amount == 0) revert ZeroAmount();
        uint256 locked = _locked[account];
        if (amount > locked) revert InsufficientLocked(account, locked, amount);
        _locked[account] = locked - amount;
    }

    // ----- votable supply -----

    /// @notice Whether `account` is one of the allocation holders whose tokens never vote.
    function isAllocationHolder(address account) public view returns (bool) {
        return account == _dataPool || account == _trainingPool || account == _inferencePool
            || account == _treasury || account == _teamVesting || account == _investorVesting;
    }

    /// @notice Tokens held now by the allocation holders (pools, treasury, vesting wallets).
    function allocationHeld() external view returns (uint256) {
        return _allocationHeld.latest();
    }

    /// @notice Total supply minus what the allocation holders hold, now.
    function votableSupply() external view returns (uint256) {
        return totalSupply() - _allocationHeld.latest();
    }

    /// @notice Total supply minus what the allocation holders held, at a past timepoint.
    function getPastVotableSupply(uint256 timepoint) external view returns (uint256) {
        uint48 t = _validateTimepoint(timepoint);
        return getPastTotalSupply(t) - _allocationHeld.upperLookupRecent(t);
    }

    // ----- overrides -----

    function _update(address from, address to, uint256 value) internal override(ERC20, ERC20Votes) {
        if (from != address(0)) {
            uint256 locked = _locked[from];
            if (locked != 0) {
                uint256 balance = balanceOf(from);
                uint256 unlocked = balance > locked ? balance - locked : 0;
                if (value > unlocked) revert InsufficientUnlockedBalance(from, unlocked, value);
            }
        }
        super._update(from, to, value);
        bool fromHolder = from != address(0) && isAllocationHolder(from);
        bool toHolder = to != address(0) && isAllocationHolder(to);
        if (fromHolder != toHolder) {
            uint256 held = _allocationHeld.latest();
            held = toHolder ? held + value : held - value;
            _allocationHeld.push(clock(), uint208(held));
        }
    }

    /// @inheritdoc ERC20Permit
    function nonces(address owner) public view override(ERC20Permit, Nonces) returns (uint256) {
        return super.nonces(owner);
    }
}
