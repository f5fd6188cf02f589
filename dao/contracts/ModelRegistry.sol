// SPDX-License-Identifier: Apache-2.0 OR MIT
pragma solidity 0.8.28;

/// @notice The part of chain-anchor's CheckpointRegistry the model registry reads.
interface ICheckpointRegistry {
    /// @notice One round anchored on its own (same layout as CheckpointRegistry.Checkpoint).
    struct Checkpoint {
        bytes32 paramsHash;
        bytes32 participantsRoot;
        uint64 epsilonMicros;
        uint64 anchoredAt;
        address aggregator;
        string cid;
    }

    function checkpointOf(bytes32 federation, uint64 round) external view returns (Checkpoint memory);
}

/// @title daofl model registry: the community's current model per federation
/// @notice Only the governance timelock writes. It promotes a checkpoint to be a federation's
/// current model, and only one the CheckpointRegistry anchored on its own with the same parameter
/// hash, CID and round. It also holds each federation's governable training configuration (a hash
/// of the federation file's training settings: model, strategy, privacy budget) and the reward
/// split between data contributors, training nodes and inference nodes (basis points summing to
/// 10,000). Each change is one proposal and emits an event.
contract ModelRegistry {
    /// @notice A promoted model.
    struct Model {
        uint64 round;
        uint64 promotedAt;
        bytes32 paramsHash;
        string cid;
    }

    /// @notice Reward split in basis points (sums to 10,000).
    struct RewardSplit {
        uint16 dataBps;
        uint16 trainingBps;
        uint16 inferenceBps;
    }

    /// @notice The governance timelock, the only writer.
    address public immutable timelock;
    /// @notice The CheckpointRegistry whose anchors promotions must match.
    ICheckpointRegistry public immutable checkpoints;

    mapping(bytes32 federation => Model) private _current;
    mapping(bytes32 federation => bytes32) private _trainingConfig;
    RewardSplit private _split;

    /// @notice `federation`'s current model is now the checkpoint of `round`.
    event ModelPromoted(bytes32 indexed federation, uint64 indexed round, bytes32 paramsHash, string cid);
    /// @notice `federation`'s training configuration hash changed.
    event TrainingConfigChanged(bytes32 indexed federation, bytes32 configHash);
    /// @notice The reward split changed.
    event RewardSplitChanged(uint16 dataBps, uint16 trainingBps, uint16 inferenceBps);

    /// @notice The caller is not the timelock.
    error OnlyTimelock(address caller);
    /// @notice A zero address given for the timelock or the checkpoint registry.
    error ZeroAddress();
    /// @notice The round is not anchored on its own in the CheckpointRegistry.
    error CheckpointNotAnchored(bytes32 federation, uint64 round);
    /// @notice The parameter hash differs from the anchored one.
    error ParamsHashMismatch(bytes32 anchored, bytes32 given);
    /// @notice The CID differs from the anchored one.
    error CidMismatch(string anchored, string given);
    /// @notice A reward split that does not sum to 10,000 basis points.
    error RewardSplitNotWhole(uint256 sumBps);
    /// @notice A zero training configuration hash.
    error ZeroConfigHash();

    /// @param timelock_ The governance timelock.
    /// @param checkpoints_ The CheckpointRegistry.
    /// @param split The initial reward split (sums to 10,000).
    constructor(address timelock_, ICheckpointRegistry checkpoints_, RewardSplit memory split) {
        if (timelock_ == address(0) || address(checkpoints_) == address(0)) revert ZeroAddress();
        timelock = timelock_;
        checkpoints = checkpoints_;
        _setRewardSplit(split);
    }

    modifier onlyTimelock() {
        if (msg.sender != timelock) revert OnlyTimelock(msg.sender);
        _;
    }

    /// @notice Promotes the checkpoint of `round` to be `federation`'s current model; reverts
    /// unless the CheckpointRegistry anchored exactly this parameter hash and CID for the round.
    function promote(bytes32 federation, uint64 round, bytes32 paramsHash, string calldata cid)
        external
        onlyTimelock
    {
        ICheckpointRegistry.Checkpoint memory c = checkpoints.checkpointOf(federation, round);
        if (c.aggregator == address(0)) revert CheckpointNotAnchored(federation, round);
        if (c.paramsHash != paramsHash) revert ParamsHashMismatch(c.paramsHash, paramsHash);
        if (keccak256(bytes(c.cid)) != keccak256(bytes(cid))) revert CidMismatch(c.cid, cid);
        _current[federation] = Model({
            round: round,
            promotedAt: uint64(block.timestamp),
            paramsHash: paramsHash,
            cid: cid
        });
        emit ModelPromoted(federation, round, paramsHash, cid);
    }

    /// @notice Sets `federation`'s training configuration hash.
    function setTrainingConfig(bytes32 federation, bytes32 configHash) external onlyTimelock {
        if (configHash == bytes32(0)) revert ZeroConfigHash();
        _trainingConfig[federation] = configHash;
        emit TrainingConfigChanged(federation, configHash);
    }

    /// @notice Sets the reward split (basis points summing to 10,000).
    function setRewardSplit(RewardSplit calldata split) external onlyTimelock {
        _setRewardSplit(split);
    }

    /// @notice `federation`'s current model; `promotedAt` is 0 when none was promoted.
    function currentModel(bytes32 federation) external view returns (Model memory) {
        return _current[federation];
    }

    /// @notice `federation`'s training configuration hash (zero when never set).
    function trainingConfig(bytes32 federation) external view returns (bytes32) {
        return _trainingConfig[federation];
    }

    /// @notice The reward split.
    function rewardSplit() external view returns (RewardSplit memory) {
        return _split;
    }

    function _setRewardSplit(RewardSplit memory split) private {
        uint256 sum = uint256(split.dataBps) + split.trainingBps + split.inferenceBps;
        if (sum != 10_000) revert RewardSplitNotWhole(sum);
        _split = split;
        emit RewardSplitChanged(split.dataBps, split.trainingBps, split.inferenceBps);
    }
}
