// SPDX-License-Identifier: Apache-2.0 OR MIT
pragma solidity 0.8.28;

import {Governor} from "@openzeppelin/contracts/governance/Governor.sol";
import {GovernorCountingSimple} from "@openzeppelin/contracts/governance/extensions/GovernorCountingSimple.sol";
import {GovernorPreventLateQuorum} from "@openzeppelin/contracts/governance/extensions/GovernorPreventLateQuorum.sol";
import {GovernorProposalGuardian} from "@openzeppelin/contracts/governance/extensions/GovernorProposalGuardian.sol";
import {GovernorSettings} from "@openzeppelin/contracts/governance/extensions/GovernorSettings.sol";
import {GovernorTimelockControl} from "@openzeppelin/contracts/governance/extensions/GovernorTimelockControl.sol";
import {GovernorVotes} from "@openzeppelin/contracts/governance/extensions/GovernorVotes.sol";
import {GovernorVotesQuorumFraction} from
    "@openzeppelin/contracts/governance/extensions/GovernorVotesQuorumFraction.sol";
import {TimelockController} from "@openzeppelin/contracts/governance/TimelockController.sol";
import {IVotes} from "@openzeppelin/contracts/governance/utils/IVotes.sol";
import {Address} from "@openzeppelin/contracts/utils/Address.sol";
import {Math} from "@openzeppelin/contracts/utils/math/Math.sol";

/// @notice The token's votable supply (total minus what the allocation holders hold).
interface IVotableSupply {
    function getPastVotableSupply(uint256 timepoint) external view returns (uint256);
}

/// @title The daofl DAO's Governor
/// @notice OpenZeppelin Governor with GovernorSettings (voting delay, period, proposal threshold),
/// GovernorCountingSimple, GovernorVotes over $PROPOSAL (ERC-6372 timestamp clock), a quorum
/// fraction, GovernorPreventLateQuorum, GovernorTimelockControl over a TimelockController (7-day
/// minimum delay) and GovernorProposalGuardian.
/// @dev Roles on the timelock: the Governor is its only proposer, canceller and executor and the
/// timelock administers itself; no other account holds a timelock role (an extra proposer or
/// canceller could execute as the timelock or block proposals). The guardian holds no timelock
/// role either: it cancels through this Governor (`cancel`, allowed for the guardian in every
/// non-final state), which cancels the queued timelock operation with the Governor's canceller
/// role. The community's cancel path is the guardian, whom governance appoints and replaces
/// (`setProposalGuardian`); a second vote cannot cancel in time, because it waits the same 7 days.
///
/// Quorum: `quorumNumerator`% of the token's votable supply at the snapshot (total supply minus
/// the pools, treasury and vesting wallets, which never vote), and never less than `quorumFloor`
/// votes, so that a small circulating supply early in the DAO's life cannot pass proposals with a
/// handful of votes.
///
/// Targets: every action of a proposal must call one of the DAO's own contracts (the allowlist
/// set at deployment: model registry, staking, token, pools, the three settlements (training,
/// inference, data), inference fees, the annotation book, and this Governor), and so must a
/// `relay`; governance extends the list with `setTargetAllowed`. The timelock itself is not a
/// target by default, so no proposal can shorten its 7-day delay or grant timelock roles unless
/// an earlier proposal (itself 7 days in the timelock) allowed it. The treasury's tokens move by a
/// call to the token.
contract DaoGovernor is
    Governor,
    GovernorSettings,
    GovernorCountingSimple,
    GovernorVotes,
    GovernorVotesQuorumFraction,
    GovernorPreventLateQuorum,
    GovernorTimelockControl,
    GovernorProposalGuardian
{
    /// @notice Governance parameters (times in seconds: the clock is timestamps).
    struct Params {
        uint48 votingDelay;
        uint32 votingPeriod;
        uint256 proposalThreshold;
        uint256 quorumPercent;
        uint256 quorumFloor;
        uint48 lateQuorumExtension;
        address guardian;
    }

    /// @notice The DAO's own contracts, always allowed as proposal targets.
    struct Targets {
        address modelRegistry;
        address staking;
        address token;
        address dataPool;
        address trainingPool;
        address inferencePool;
        address settlement;
        address inferenceSettlement;
        address inferenceFees;
        address dataSettlement;
        address annotationBook;
    }

    /// @notice Fewest votes a quorum ever needs.
    uint256 public quorumFloor;

    // The fixed targets are immutables (no storage read per action); governance adds more.
    address private immutable _modelRegistry;
    address private immutable _staking;
    address private immutable _token;
    address private immutable _dataPool;
    address private immutable _trainingPool;
    address private immutable _inferencePool;
    address private immutable _settlement;
    address private immutable _inferenceSettlement;
    address private immutable _inferenceFees;
    address private immutable _dataSettlement;
    address private immutable _annotationBook;
    mapping(address target => bool) private _extraTargets;

    /// @notice `target` was allowed or disallowed as a proposal target.
    event TargetAllowed(address indexed target, bool allowed);
    /// @notice The quorum floor changed.
    event QuorumFloorChanged(uint256 quorumFloor);

    /// @notice A proposal action calls a contract outside the allowlist.
    error TargetNotAllowed(address target);

    /// @param token_ The $PROPOSAL token.
    /// @param timelock_ The TimelockController (this Governor its only proposer and executor).
    /// @param params Governance parameters.
    /// @param targets The DAO's contracts proposals may call (this Governor is always allowed).
    constructor(IVotes token_, TimelockController timelock_, Params memory params, Targets memory targets)
        Governor("daofl DAO Governor")
        GovernorSettings(params.votingDelay, params.votingPeriod, params.proposalThreshold)
        GovernorVotes(token_)
        GovernorVotesQuorumFraction(params.quorumPercent)
        GovernorPreventLateQuorum(params.lateQuorumExtension)
        GovernorTimelockControl(timelock_)
    {
        _setProposalGuardian(params.guardian);
        quorumFloor = params.quorumFloor;
        emit QuorumFloorChanged(params.quorumFloor);
        _modelRegistry = targets.modelRegistry;
        _staking = targets.staking;
        _token = targets.token;
        _dataPool = targets.dataPool;
        _trainingPool = targets.trainingPool;
        _inferencePool = targets.inferencePool;
        _settlement = targets.settlement;
        _inferenceSettlement = targets.inferenceSettlement;
        _inferenceFees = targets.inferenceFees;
        _dataSettlement = targets.dataSettlement;
        _annotationBook = targets.annotationBook;
    }

    /// @notice Allows or disallows an extra proposal target (governance); the DAO's own
    /// contracts and this Governor are always allowed.
    function setTargetAllowed(address target, bool allowed) external onlyGovernance {
        _extraTargets[target] = allowed;
        emit TargetAllowed(target, allowed);
    }

    /// @notice Whether proposal actions may call `target`.
    function targetAllowed(address target) public view returns (bool) {
        return target == _modelRegistry || target == _staking || target == _token || target == _dataPool || target == _trainingPool || target == _inferencePool || target == _settlement
            || target == _inferenceSettlement || target == _inferenceFees || target == _dataSettlement
            || target == _annotationBook || target == address(this) || _extraTargets[target];
    }

    /// @notice Sets the quorum floor (governance).
    function setQuorumFloor(uint256 floor) external onlyGovernance {
        quorumFloor = floor;
        emit QuorumFloorChanged(floor);
    }

    /// @notice Quorum at `timepoint`: the quorum fraction of the votable supply, at least `quorumFloor`.
    function quorum(uint256 timepoint) public view override(Governor, GovernorVotesQuorumFraction) returns (uint256) {
        uint256 votable = IVotableSupply(address(token())).getPastVotableSupply(timepoint);
        return Math.max(Math.mulDiv(votable, quorumNumerator(timepoint), quorumDenominator()), quorumFloor);
    }

    /// @notice Relays a call from the timelock (governance only), to an allowed target only.
    function relay(address target, uint256 value, bytes calldata data) external payable override onlyGovernance {
        if (!targetAllowed(target)) revert TargetNotAllowed(target);
        (bool success, bytes memory returndata) = target.call{value: value}(data);
        Address.verifyCallResult(success, returndata);
    }

    function _propose(
        address[] memory targets,
        uint256[] memory values,
        bytes[] memory calldatas,
        string memory description,
        address proposer
    ) internal override returns (uint256) {
        for (uint256 i = 0; i < targets.length; ++i) {
            if (!targetAllowed(targets[i])) revert TargetNotAllowed(targets[i]);
        }
        return super._propose(targets, values, calldatas, description, proposer);
    }

    // ----- overrides required by Solidity -----

    function votingDelay() public view override(Governor, GovernorSettings) returns (uint256) {
        return super.votingDelay();
    }

    function votingPeriod() public view override(Governor, GovernorSettings) returns (uint256) {
        return super.votingPeriod();
    }

    function proposalThreshold() public view override(Governor, GovernorSettings) returns (uint256) {
        return super.proposalThreshold();
    }

    function state(uint256 proposalId)
        public
        view
        override(Governor, GovernorTimelockControl)
        returns (ProposalState)
    {
        return super.state(proposalId);
    }

    function proposalDeadline(uint256 proposalId)
        public
        view
        override(Governor, GovernorPreventLateQuorum)
        returns (uint256)
    {
        return super.proposalDeadline(proposalId);
    }

    function proposalNeedsQueuing(uint256 proposalId)
        public
        view
        override(Governor, GovernorTimelockControl)
        returns (bool)
    {
        return super.proposalNeedsQueuing(proposalId);
    }

    function _tallyUpdated(uint256 proposalId) internal override(Governor, GovernorPreventLateQuorum) {
        super._tallyUpdated(proposalId);
    }

    function _queueOperations(
        uint256 proposalId,
        address[] memory targets,
        uint256[] memory values,
        bytes[] memory calldatas,
        bytes32 descriptionHash
    ) internal override(Governor, GovernorTimelockControl) returns (uint48) {
        return super._queueOperations(proposalId, targets, values, calldatas, descriptionHash);
    }

    function _executeOperations(
        uint256 proposalId,
        address[] memory targets,
        uint256[] memory values,
        bytes[] memory calldatas,
        bytes32 descriptionHash
    ) internal override(Governor, GovernorTimelockControl) {
        super._executeOperations(proposalId, targets, values, calldatas, descriptionHash);
    }

    function _cancel(
        address[] memory targets,
        uint256[] memory values,
        bytes[] memory calldatas,
        bytes32 descriptionHash
    ) internal override(Governor, GovernorTimelockControl) returns (uint256) {
        return super._cancel(targets, values, calldatas, descriptionHash);
    }

    function _executor() internal view override(Governor, GovernorTimelockControl) returns (address) {
        return super._executor();
    }

    function _validateCancel(uint256 proposalId, address caller)
        internal
        view
        override(Governor, GovernorProposalGuardian)
        returns (bool)
    {
        return super._validateCancel(proposalId, caller);
    }
}
