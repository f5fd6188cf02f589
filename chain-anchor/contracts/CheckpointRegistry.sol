// SPDX-License-Identifier: Apache-2.0 OR MIT
pragma solidity 0.8.28;

import {AccessControl} from "@openzeppelin/contracts/access/AccessControl.sol";
import {MerkleProof} from "@openzeppelin/contracts/utils/cryptography/MerkleProof.sol";

/// @title daofl checkpoint registry
/// @notice Records, per federation and round, what a daofl aggregator published: the hash of the
/// model parameters, their content identifier, the Merkle root of the round's participants and
/// the differential-privacy budget spent. Anyone holding a checkpoint can compare it with what
/// is recorded here.
/// @dev Only accounts holding AGGREGATOR_ROLE write; the admin (the deployer) grants the role.
/// Rounds of a federation only move forward: each anchor names a round greater than every round
/// anchored before for that federation (the first may be 0).
///
/// Participant leaves (built off-chain, checked with MerkleProof):
///   keccak256(bytes.concat(keccak256(abi.encode(address member, bytes32 updateHash))))
/// Round leaves of a batch:
///   keccak256(bytes.concat(keccak256(abi.encode(uint64 round, bytes32 paramsHash,
///       keccak256(bytes(cid)), bytes32 participantsRoot, uint64 epsilonMicros))))
/// Both follow the StandardMerkleTree of the OpenZeppelin merkle-tree library (double-hashed leaves, sorted pairs).
contract CheckpointRegistry is AccessControl {
    /// @notice Role of the accounts allowed to anchor.
    bytes32 public constant AGGREGATOR_ROLE = keccak256("AGGREGATOR_ROLE");

    /// @notice One round anchored on its own.
    struct Checkpoint {
        bytes32 paramsHash;
        bytes32 participantsRoot;
        uint64 epsilonMicros;
        uint64 anchoredAt;
        address aggregator;
        string cid;
    }

    /// @notice Several consecutive rounds anchored under one Merkle root of round leaves.
    struct Batch {
        uint64 firstRound;
        uint64 lastRound;
        uint64 anchoredAt;
        address aggregator;
        bytes32 root;
    }

    /// @notice A round was anchored on its own.
    event CheckpointAnchored(
        bytes32 indexed federation,
        uint64 indexed round,
        bytes32 paramsHash,
        string cid,
        bytes32 participantsRoot,
        uint64 epsilonMicros,
        address indexed aggregator
    );

    /// @notice The rounds firstRound..=lastRound were anchored under one batch root.
    event BatchAnchored(
        bytes32 indexed federation,
        uint64 indexed firstRound,
        uint64 lastRound,
        bytes32 batchRoot,
        address indexed aggregator
    );

    /// @notice The round given is not above the last round anchored for the federation.
    error RoundNotIncreasing(bytes32 federation, uint64 last, uint64 given);
    /// @notice A batch whose last round is below its first.
    error InvalidBatchRange(uint64 firstRound, uint64 lastRound);
    /// @notice A zero parameter hash or batch root (never a real digest).
    error ZeroHash();

    mapping(bytes32 federation => mapping(uint64 round => Checkpoint)) private _checkpoints;
    mapping(bytes32 federation => Batch[]) private _batches;
    /// @dev Last anchored round + 1, so that 0 means "nothing anchored yet".
    mapping(bytes32 federation => uint64) private _next;

    /// @param admin Account that may grant and revoke AGGREGATOR_ROLE; it also receives the role.
    constructor(address admin) {
        _grantRole(DEFAULT_ADMIN_ROLE, admin);
        _grantRole(AGGREGATOR_ROLE, admin);
    }

    /// @notice Anchors one round.
    function anchor(
        bytes32 federation,
        uint64 round,
        bytes32 paramsHash,
        string calldata cid,
        bytes32 participantsRoot,
        uint64 epsilonMicros
    ) external onlyRole(AGGREGATOR_ROLE) {
        if (paramsHash == bytes32(0)) revert ZeroHash();
        _advance(federation, round, round);
        _checkpoints[federation][round] = Checkpoint({
            paramsHash: paramsHash,
            participantsRoot: participantsRoot,
            epsilonMicros: epsilonMicros,
            anchoredAt: uint64(block.timestamp),
            aggregator: msg.sender,
            cid: cid
        });
        emit CheckpointAnchored(federation, round, paramsHash, cid, participantsRoot, epsilonMicros, msg.sender);
    }

    /// @notice Anchors the rounds firstRound..=lastRound under one Merkle root of round leaves.
    function anchorBatch(bytes32 federation, uint64 firstRound, uint64 lastRound, bytes32 batchRoot)
        external
        onlyRole(AGGREGATOR_ROLE)
    {
        if (lastRound < firstRound) revert InvalidBatchRange(firstRound, lastRound);
        if (batchRoot == bytes32(0)) revert ZeroHash();
        _advance(federation, firstRound, lastRound);
        _batches[federation].push(
            Batch({
                firstRound: firstRound,
                lastRound: lastRound,
                anchoredAt: uint64(block.timestamp),
                aggregator: msg.sender,
                root: batchRoot
            })
        );
        emit BatchAnchored(federation, firstRound, lastRound, batchRoot, msg.sender);
    }

    /// @notice The last round anchored for a federation (alone or in a batch), if any.
    function latestRound(bytes32 federation) external view returns (bool anchored, uint64 round) {
        uint64 next = _next[federation];
        if (next == 0) return (false, 0);
        return (true, next - 1);
    }

    /// @notice The round anchored on its own; `aggregator` is zero when there is none.
    function checkpointOf(bytes32 federation, uint64 round) external view returns (Checkpoint memory) {
        return _checkpoints[federation][round];
    }

    /// @notice Number of batches anchored for a federation.
    function batchCount(bytes32 federation) external view returns (uint256) {
        return _batches[federation].length;
    }

    /// @notice The batch covering a round, if any (binary search: batches are in round order).
    function findBatch(bytes32 federation, uint64 round)
        public
        view
        returns (bool found, uint256 index, Batch memory batch)
    {
        Batch[] storage batches = _batches[federation];
        uint256 lo = 0;
        uint256 hi = batches.length;
        while (lo < hi) {
            uint256 mid = (lo + hi) / 2;
            Batch storage b = batches[mid];
            if (round < b.firstRound) {
                hi = mid;
            } else if (round > b.lastRound) {
                lo = mid + 1;
            } else {
                return (true, mid, b);
            }
        }
        return (false, 0, batch);
    }

    /// @notice The leaf a round contributes to a batch root.
    function roundLeaf(
        uint64 round,
        bytes32 paramsHash,
        string calldata cid,
        bytes32 participantsRoot,
        uint64 epsilonMicros
    ) public pure returns (bytes32) {
        return keccak256(
            bytes.concat(
                keccak256(abi.encode(round, paramsHash, keccak256(bytes(cid)), participantsRoot, epsilonMicros))
            )
        );
    }

    /// @notice The leaf a participant contributes to a participants root.
    function participantLeaf(address member, bytes32 updateHash) public pure returns (bytes32) {
        return keccak256(bytes.concat(keccak256(abi.encode(member, updateHash))));
    }

    /// @notice Whether a round with these fields is included in the batch anchored for it.
    function verifyInBatch(
        bytes32 federation,
        uint64 round,
        bytes32 paramsHash,
        string calldata cid,
        bytes32 participantsRoot,
        uint64 epsilonMicros,
        bytes32[] calldata proof
    ) external view returns (bool) {
        (bool found,, Batch memory batch) = findBatch(federation, round);
        if (!found) return false;
        return MerkleProof.verifyCalldata(
            proof, batch.root, roundLeaf(round, paramsHash, cid, participantsRoot, epsilonMicros)
        );
    }

    /// @notice Whether a member with this update hash is included under a participants root.
    function verifyParticipant(bytes32 participantsRoot, address member, bytes32 updateHash, bytes32[] calldata proof)
        external
        pure
        returns (bool)
    {
        return MerkleProof.verifyCalldata(proof, participantsRoot, participantLeaf(member, updateHash));
    }

    function _advance(bytes32 federation, uint64 first, uint64 last) private {
        uint64 next = _next[federation];
        if (next != 0 && first < next) revert RoundNotIncreasing(federation, next - 1, first);
        // A round of type(uint64).max cannot be followed by another; refuse it to keep `_next` in range.
        if (last == type(uint64).max) revert RoundNotIncreasing(federation, last, last);
        _next[federation] = last + 1;
    }
}
