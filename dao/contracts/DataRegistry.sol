// SPDX-License-Identifier: Apache-2.0 OR MIT
pragma solidity 0.8.28;

/// @notice What the registry reads from Staking.
interface IDataStaking {
    struct Position {
        uint128 staked;
        uint128 unbonding;
        uint64 unbondingEnds;
    }

    function positionOf(address account, uint8 role) external view returns (Position memory);
    function minStake(uint8 role) external view returns (uint256);
    function jailedUntil(address account) external view returns (uint64);
}

/// @title daofl data registry: batches of contributed records, by staked annotators
/// @notice A contributor (staked in Staking's annotator role at least the governed minimum, and
/// not jailed) registers a batch of content-addressed records (proposals, annotations) as the
/// Merkle root of their CIDs' digests, in OpenZeppelin StandardMerkleTree layout (leaf =
/// keccak256(bytes.concat(keccak256(abi.encode(bytes32 sha256Digest)))), with the number of
/// records and where the content lives (an `ipfs://` CAR, a URL of the content store).
/// `BatchRegistered` events, read in order, let anyone rebuild the registered data set from the
/// chain plus the content store; a root is registered once.
/// @dev No owner and no upgrade: the stake requirement is Staking's governed annotator minimum.
contract DataRegistry {
    /// @notice Annotator role number in Staking.
    uint8 public constant ANNOTATOR_ROLE = 2;
    /// @notice Most records one batch may announce.
    uint32 public constant MAX_RECORDS = 1_000_000;
    /// @notice Longest location string, in bytes.
    uint256 public constant MAX_LOCATION_BYTES = 512;

    /// @notice A registered batch.
    struct Batch {
        address contributor;
        uint32 records;
        uint64 registeredAt;
        uint64 index;
    }

    /// @notice Staking, whose annotator role gates registration.
    IDataStaking public immutable staking;
    /// @notice Batches registered so far.
    uint64 public batchCount;

    mapping(bytes32 root => Batch) private _batches;

    /// @notice `contributor` registered batch number `index` with Merkle root `root`.
    event BatchRegistered(
        bytes32 indexed root, address indexed contributor, uint64 index, uint32 records, string location
    );

    /// @notice A zero address.
    error ZeroAddress();
    /// @notice A zero root.
    error ZeroRoot();
    /// @notice No records, or more than `MAX_RECORDS`.
    error InvalidRecordCount(uint32 records);
    /// @notice An empty location or one longer than `MAX_LOCATION_BYTES`.
    error InvalidLocation(uint256 length);
    /// @notice The caller holds less than the annotator minimum, or is jailed.
    error NotAnnotator(address account);
    /// @notice This root is registered already.
    error BatchExists(bytes32 root);

    /// @param staking_ Staking.
    constructor(address staking_) {
        if (staking_ == address(0)) revert ZeroAddress();
        staking = IDataStaking(staking_);
    }

    /// @notice Registers a batch of `records` records whose CIDs' Merkle root is `root`, stored
    /// at `location`; returns its index.
    function registerBatch(bytes32 root, uint32 records, string calldata location) external returns (uint64 index) {
        if (root == bytes32(0)) revert ZeroRoot();
        if (records == 0 || records > MAX_RECORDS) revert InvalidRecordCount(records);
        uint256 len = bytes(location).length;
        if (len == 0 || len > MAX_LOCATION_BYTES) revert InvalidLocation(len);
        if (
            staking.positionOf(msg.sender, ANNOTATOR_ROLE).staked < staking.minStake(ANNOTATOR_ROLE)
                || staking.jailedUntil(msg.sender) > block.timestamp
        ) revert NotAnnotator(msg.sender);
        if (_batches[root].contributor != address(0)) revert BatchExists(root);
        index = batchCount;
        batchCount = index + 1;
        _batches[root] = Batch(msg.sender, records, uint64(block.timestamp), index);
        emit BatchRegistered(root, msg.sender, index, records, location);
    }

    /// @notice The batch registered under `root` (contributor zero when none).
    function batch(bytes32 root) external view returns (Batch memory) {
        return _batches[root];
    }
}
