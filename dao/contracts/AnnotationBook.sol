// SPDX-License-Identifier: Apache-2.0 OR MIT
pragma solidity 0.8.28;

import {AccessControl} from "@openzeppelin/contracts/access/AccessControl.sol";
import {MerkleProof} from "@openzeppelin/contracts/utils/cryptography/MerkleProof.sol";

/// @notice What the annotation book reads from Staking.
interface IAnnotationStaking {
    struct Position {
        uint128 staked;
        uint128 unbonding;
        uint64 unbondingEnds;
    }

    function positionOf(address account, uint8 role) external view returns (Position memory);
    function minStake(uint8 role) external view returns (uint256);
    function jailedUntil(address account) external view returns (uint64);
}

/// @title daofl annotation book: per-epoch assignment and commit-reveal of annotations
/// @notice One epoch of annotation runs in four steps, each checked here so that the chain alone
/// decides who may annotate what and which answers count:
///
/// 1. Registration: annotators staked in Staking's annotator role (at least the governed
///    minimum, not jailed) `join` the epoch's pool, at most `MAX_POOL` of them.
/// 2. Opening: the opener (OPENER_ROLE, granted by governance) fixes the epoch's items as the
///    Merkle root of their CID digests (OpenZeppelin StandardMerkleTree layout, as in the data
///    registry: leaf = keccak256(bytes.concat(keccak256(abi.encode(bytes32 digest))))) and their
///    count. The pool and the items are then final. The epoch's assignment seed is the hash of
///    the block that contains the opening: nobody knows it when the opening is sent, so nobody
///    (not the opener, not a contributor, not an annotator) chooses who labels what; only the
///    producer of that block could grind it. The seed is drawn by the first commit (or by
///    `drawSeed`, anyone) from the next block on; if nobody drew it within 256 blocks, the
///    block hash is gone and `drawSeed` re-arms the draw on the current block.
/// 3. Commits, until `commitDeadline`: each annotator assigned an item commits to its signed
///    annotation record. Assignment is `contrib::assign`'s rendezvous hashing, recomputed here:
///    the item goes to the `perItem` pool members with the highest score
///    sha256("daofl/contrib/assign/v1" | seed | item digest | annotator address) (ties, a
///    SHA-256 collision, by the higher address). The commitment is `contrib::commit`'s:
///    sha256("daofl/contrib/commit/v1" | annotator address | annotation CID digest | salt).
///    A second commit for the same item, a commitment value already used (by anyone), an item
///    outside the epoch's root, an unassigned or unstaked annotator and a late commit are refused.
/// 4. Reveals, after `commitDeadline` and until `revealDeadline`: the annotator reveals its
///    annotation's CID digest and the salt; the book checks them against the commitment.
///
/// The events (`AnnotatorJoined`, `EpochOpened`, `SeedDrawn`, `AnnotationCommitted`,
/// `AnnotationRevealed`) let anyone rebuild the epoch's pool, seed, assignment, commitments and
/// reveals from the chain; the annotation records themselves live in the content store under
/// the revealed CIDs.
/// @dev DEFAULT_ADMIN_ROLE (the timelock) sets the periods and annotators per item, each epoch
/// keeping those in force when it opened, and grants OPENER_ROLE. A commit costs one SHA-256 per
/// pool member (the rank of the annotator among them); the pool is bounded by `MAX_POOL`.
contract AnnotationBook is AccessControl {
    /// @notice Role allowed to open epochs.
    bytes32 public constant OPENER_ROLE = keccak256("OPENER_ROLE");
    /// @notice Annotator role number in Staking.
    uint8 public constant ANNOTATOR_ROLE = 2;
    /// @notice Largest pool of one epoch.
    uint256 public constant MAX_POOL = 256;
    /// @notice Fewest annotators per item (`contrib::assign::MIN_ANNOTATORS_PER_ITEM`).
    uint8 public constant MIN_PER_ITEM = 3;
    /// @notice Most annotators per item.
    uint8 public constant MAX_PER_ITEM = 32;
    /// @notice Longest commit or reveal period governance may set.
    uint64 public constant MAX_PERIOD = 365 days;

    /// Domain tags of `contrib::commit` and `contrib::assign`.
    bytes private constant COMMIT_TAG = "daofl/contrib/commit/v1";
    bytes private constant ASSIGN_TAG = "daofl/contrib/assign/v1";

    uint8 private constant COMMITTED = 1;
    uint8 private constant REVEALED = 2;

    /// @notice Governable parameters; an epoch keeps those in force when it opened.
    struct Params {
        /// Seconds from the opening during which commits are accepted.
        uint64 commitPeriod;
        /// Seconds after the commit deadline during which reveals are accepted.
        uint64 revealPeriod;
        /// Annotators each item is assigned to (MIN_PER_ITEM..MAX_PER_ITEM).
        uint8 annotatorsPerItem;
    }

    /// @notice An opened epoch.
    struct Epoch {
        /// Merkle root of the items' CID digests.
        bytes32 itemsRoot;
        /// The assignment seed (zero until drawn).
        bytes32 seed;
        /// The block whose hash is the seed.
        uint64 seedBlock;
        /// Last second commits are accepted.
        uint64 commitDeadline;
        /// Last second reveals are accepted.
        uint64 revealDeadline;
        /// Number of items.
        uint32 items;
        /// Annotators per item.
        uint8 perItem;
        /// Whether the epoch was opened.
        bool opened;
    }

    /// @notice Staking, whose annotator role gates joining and committing.
    IAnnotationStaking public immutable staking;
    /// @notice Parameters for epochs opened from now on.
    Params public params;

    mapping(uint64 epoch => Epoch) private _epochs;
    mapping(uint64 epoch => address[]) private _pools;
    mapping(uint64 epoch => mapping(address annotator => bool)) private _joined;
    mapping(bytes32 slot => bytes32 commitment) private _commitments;
    mapping(bytes32 commitment => uint8 state) private _states;

    /// @notice `annotator` joined `epoch`'s pool, at position `position`.
    event AnnotatorJoined(uint64 indexed epoch, address indexed annotator, uint32 position);
    /// @notice `epoch` opened with its items, pool size, annotators per item, the block whose hash
    /// is its seed, and its deadlines.
    event EpochOpened(
        uint64 indexed epoch,
        bytes32 itemsRoot,
        uint32 items,
        uint32 poolSize,
        uint8 perItem,
        uint64 seedBlock,
        uint64 commitDeadline,
        uint64 revealDeadline
    );
    /// @notice `epoch`'s seed was drawn: the hash of block `seedBlock`.
    event SeedDrawn(uint64 indexed epoch, bytes32 seed, uint64 seedBlock);
    /// @notice Nobody drew `epoch`'s seed within 256 blocks: it is drawn from block `seedBlock` instead.
    event SeedRearmed(uint64 indexed epoch, uint64 seedBlock);
    /// @notice `annotator` committed `commitment` for `item` in `epoch`.
    event AnnotationCommitted(
        uint64 indexed epoch, bytes32 indexed item, address indexed annotator, bytes32 commitment
    );
    /// @notice `annotator` revealed the annotation record with CID digest `annotation` for `item`
    /// in `epoch`, with its salt.
    event AnnotationRevealed(
        uint64 indexed epoch, bytes32 indexed item, address indexed annotator, bytes32 annotation, bytes32 salt
    );
    /// @notice The parameters changed.
    event ParamsChanged(uint64 commitPeriod, uint64 revealPeriod, uint8 annotatorsPerItem);

    /// @notice A zero address.
    error ZeroAddress();
    /// @notice Parameters out of range (a zero or over-long period, annotators per item outside
    /// MIN_PER_ITEM..MAX_PER_ITEM).
    error InvalidParams();
    /// @notice The epoch is open already (joining and opening are over).
    error EpochAlreadyOpen(uint64 epoch);
    /// @notice The epoch is not open.
    error EpochNotOpen(uint64 epoch);
    /// @notice The account joined this epoch already.
    error AlreadyJoined(uint64 epoch, address account);
    /// @notice The epoch's pool holds MAX_POOL annotators.
    error PoolFull(uint64 epoch);
    /// @notice The pool is smaller than the annotators each item needs.
    error PoolTooSmall(uint256 pool, uint8 perItem);
    /// @notice A zero items root or no items.
    error InvalidItems();
    /// @notice The caller holds less than the annotator minimum, or is jailed.
    error NotAnnotator(address account);
    /// @notice The item is not in the epoch's items root (or the proof is wrong).
    error ItemNotInEpoch(uint64 epoch, bytes32 item);
    /// @notice The seed is not drawn yet: the opening block is the latest, or the draw was re-armed.
    error SeedNotReady(uint64 epoch);
    /// @notice The annotator is not assigned the item in this epoch.
    error NotAssigned(uint64 epoch, bytes32 item, address annotator);
    /// @notice The annotator committed for this item already; the first commitment stands.
    error DoubleCommit(uint64 epoch, bytes32 item, address annotator);
    /// @notice This commitment value was submitted already (by anyone, for any item).
    error CommitmentReused(bytes32 commitment);
    /// @notice A zero commitment.
    error ZeroCommitment();
    /// @notice Commits closed at `deadline`.
    error CommitPhaseClosed(uint64 epoch, uint64 deadline);
    /// @notice Reveals open after the commit deadline `commitDeadline`.
    error RevealTooEarly(uint64 epoch, uint64 commitDeadline);
    /// @notice Reveals closed at `deadline`.
    error RevealPhaseClosed(uint64 epoch, uint64 deadline);
    /// @notice A reveal without a commitment before it.
    error NotCommitted(uint64 epoch, bytes32 item, address annotator);
    /// @notice The annotation and salt do not hash to the commitment.
    error RevealMismatch(uint64 epoch, bytes32 item, address annotator);
    /// @notice The annotator revealed for this item already.
    error AlreadyRevealed(uint64 epoch, bytes32 item, address annotator);

    /// @param staking_ Staking.
    /// @param admin DEFAULT_ADMIN_ROLE (the timelock).
    /// @param opener First holder of OPENER_ROLE, or zero for none.
    /// @param params_ Initial parameters.
    constructor(address staking_, address admin, address opener, Params memory params_) {
        if (staking_ == address(0) || admin == address(0)) revert ZeroAddress();
        staking = IAnnotationStaking(staking_);
        _grantRole(DEFAULT_ADMIN_ROLE, admin);
        if (opener != address(0)) _grantRole(OPENER_ROLE, opener);
        _setParams(params_);
    }

    /// @notice Sets the parameters of epochs opened from now on (governance).
    function setParams(Params calldata params_) external onlyRole(DEFAULT_ADMIN_ROLE) {
        _setParams(params_);
    }

    /// @notice Joins `epoch_`'s pool (a staked, unjailed annotator, before the epoch opens).
    function join(uint64 epoch_) external {
        if (_epochs[epoch_].opened) revert EpochAlreadyOpen(epoch_);
        _checkAnnotator(msg.sender);
        if (_joined[epoch_][msg.sender]) revert AlreadyJoined(epoch_, msg.sender);
        address[] storage members = _pools[epoch_];
        uint256 position = members.length;
        if (position >= MAX_POOL) revert PoolFull(epoch_);
        _joined[epoch_][msg.sender] = true;
        members.push(msg.sender);
        emit AnnotatorJoined(epoch_, msg.sender, uint32(position));
    }

    /// @notice Opens `epoch_` on `items` items whose CID digests' Merkle root is `itemsRoot`
    /// (OPENER_ROLE): the pool is closed, the deadlines set, the seed is this block's hash.
    function openEpoch(uint64 epoch_, bytes32 itemsRoot, uint32 items) external onlyRole(OPENER_ROLE) {
        Epoch storage e = _epochs[epoch_];
        if (e.opened) revert EpochAlreadyOpen(epoch_);
        if (itemsRoot == bytes32(0) || items == 0) revert InvalidItems();
        Params memory p = params;
        uint256 poolSize = _pools[epoch_].length;
        if (poolSize < p.annotatorsPerItem) revert PoolTooSmall(poolSize, p.annotatorsPerItem);
        uint64 commitDeadline = uint64(block.timestamp) + p.commitPeriod;
        uint64 revealDeadline = commitDeadline + p.revealPeriod;
        e.itemsRoot = itemsRoot;
        e.seedBlock = uint64(block.number);
        e.commitDeadline = commitDeadline;
        e.revealDeadline = revealDeadline;
        e.items = items;
        e.perItem = p.annotatorsPerItem;
        e.opened = true;
        emit EpochOpened(
            epoch_,
            itemsRoot,
            items,
            uint32(poolSize),
            p.annotatorsPerItem,
            uint64(block.number),
            commitDeadline,
            revealDeadline
        );
    }

    /// @notice Draws `epoch_`'s seed (anyone; the first commit does it too) and returns it; zero
    /// when the draw was re-armed because the seed block is older than 256 blocks.
    function drawSeed(uint64 epoch_) public returns (bytes32 seed) {
        Epoch storage e = _epochs[epoch_];
        if (!e.opened) revert EpochNotOpen(epoch_);
        seed = e.seed;
        if (seed != bytes32(0)) return seed;
        uint64 seedBlock = e.seedBlock;
        if (block.number <= seedBlock) revert SeedNotReady(epoch_);
        seed = blockhash(seedBlock);
        if (seed == bytes32(0)) {
            e.seedBlock = uint64(block.number);
            emit SeedRearmed(epoch_, uint64(block.number));
            return bytes32(0);
        }
        e.seed = seed;
        emit SeedDrawn(epoch_, seed, seedBlock);
    }

    /// @notice Commits to an annotation of `item` in `epoch_` (an assigned, staked, unjailed
    /// annotator, before the commit deadline); `proof` shows the item is in the epoch.
    function commit(uint64 epoch_, bytes32 item, bytes32[] calldata proof, bytes32 commitment) external {
        Epoch storage e = _epochs[epoch_];
        if (!e.opened) revert EpochNotOpen(epoch_);
        if (block.timestamp > e.commitDeadline) revert CommitPhaseClosed(epoch_, e.commitDeadline);
        if (commitment == bytes32(0)) revert ZeroCommitment();
        _checkAnnotator(msg.sender);
        if (!MerkleProof.verifyCalldata(proof, e.itemsRoot, _leaf(item))) revert ItemNotInEpoch(epoch_, item);
        bytes32 slot = _slot(epoch_, item, msg.sender);
        if (_commitments[slot] != bytes32(0)) revert DoubleCommit(epoch_, item, msg.sender);
        if (_states[commitment] != 0) revert CommitmentReused(commitment);
        if (!_joined[epoch_][msg.sender]) revert NotAssigned(epoch_, item, msg.sender);
        bytes32 seed = drawSeed(epoch_);
        if (seed == bytes32(0)) revert SeedNotReady(epoch_);
        if (!_ranksWithin(epoch_, seed, item, msg.sender, e.perItem)) revert NotAssigned(epoch_, item, msg.sender);
        _commitments[slot] = commitment;
        _states[commitment] = COMMITTED;
        emit AnnotationCommitted(epoch_, item, msg.sender, commitment);
    }

    /// @notice Reveals the annotation committed for `item` in `epoch_`: the record's CID digest
    /// `annotation` and the `salt` (after the commit deadline, until the reveal deadline).
    function reveal(uint64 epoch_, bytes32 item, bytes32 annotation, bytes32 salt) external {
        Epoch storage e = _epochs[epoch_];
        if (!e.opened) revert EpochNotOpen(epoch_);
        if (block.timestamp <= e.commitDeadline) revert RevealTooEarly(epoch_, e.commitDeadline);
        if (block.timestamp > e.revealDeadline) revert RevealPhaseClosed(epoch_, e.revealDeadline);
        bytes32 committed = _commitments[_slot(epoch_, item, msg.sender)];
        if (committed == bytes32(0)) revert NotCommitted(epoch_, item, msg.sender);
        if (_states[committed] == REVEALED) revert AlreadyRevealed(epoch_, item, msg.sender);
        if (commitmentFor(msg.sender, annotation, salt) != committed) {
            revert RevealMismatch(epoch_, item, msg.sender);
        }
        _states[committed] = REVEALED;
        emit AnnotationRevealed(epoch_, item, msg.sender, annotation, salt);
    }

    /// @notice `contrib::commit::Commitment::new`: the commitment of `annotator` to the
    /// annotation record with CID digest `annotation`, blinded by `salt`.
    function commitmentFor(address annotator, bytes32 annotation, bytes32 salt) public pure returns (bytes32) {
        return sha256(abi.encodePacked(COMMIT_TAG, annotator, annotation, salt));
    }

    /// @notice `contrib::assign::score`: the rendezvous score of `annotator` for `item` under `seed`.
    function score(bytes32 seed, bytes32 item, address annotator) public pure returns (bytes32) {
        return sha256(abi.encodePacked(ASSIGN_TAG, seed, item, annotator));
    }

    /// @notice Whether `annotator` is assigned `item` in `epoch_` (the item's membership in the
    /// epoch is not checked here; reverts `SeedNotReady` before the seed can be drawn).
    function isAssigned(uint64 epoch_, bytes32 item, address annotator) external view returns (bool) {
        if (!_joined[epoch_][annotator]) return false;
        return _ranksWithin(epoch_, seedOf(epoch_), item, annotator, _epochs[epoch_].perItem);
    }

    /// @notice `epoch_`'s seed, drawn or drawable (reverts `EpochNotOpen`, or `SeedNotReady`
    /// while it cannot be read).
    function seedOf(uint64 epoch_) public view returns (bytes32 seed) {
        Epoch storage e = _epochs[epoch_];
        if (!e.opened) revert EpochNotOpen(epoch_);
        seed = e.seed;
        if (seed != bytes32(0)) return seed;
        if (block.number <= e.seedBlock) revert SeedNotReady(epoch_);
        seed = blockhash(e.seedBlock);
        if (seed == bytes32(0)) revert SeedNotReady(epoch_);
    }

    /// @notice The epoch (`opened` false when it never opened).
    function epoch(uint64 epoch_) external view returns (Epoch memory) {
        return _epochs[epoch_];
    }

    /// @notice `epoch_`'s pool, in joining order.
    function pool(uint64 epoch_) external view returns (address[] memory) {
        return _pools[epoch_];
    }

    /// @notice Whether `annotator` joined `epoch_`'s pool.
    function joined(uint64 epoch_, address annotator) external view returns (bool) {
        return _joined[epoch_][annotator];
    }

    /// @notice `annotator`'s commitment for `item` in `epoch_` (zero when none) and whether it
    /// was revealed.
    function commitmentOf(uint64 epoch_, bytes32 item, address annotator)
        external
        view
        returns (bytes32 commitment, bool revealed)
    {
        commitment = _commitments[_slot(epoch_, item, annotator)];
        revealed = commitment != bytes32(0) && _states[commitment] == REVEALED;
    }

    function _setParams(Params memory p) private {
        if (
            p.commitPeriod == 0 || p.commitPeriod > MAX_PERIOD || p.revealPeriod == 0 || p.revealPeriod > MAX_PERIOD
                || p.annotatorsPerItem < MIN_PER_ITEM || p.annotatorsPerItem > MAX_PER_ITEM
        ) revert InvalidParams();
        params = p;
        emit ParamsChanged(p.commitPeriod, p.revealPeriod, p.annotatorsPerItem);
    }

    function _checkAnnotator(address account) private view {
        if (
            staking.positionOf(account, ANNOTATOR_ROLE).staked < staking.minStake(ANNOTATOR_ROLE)
                || staking.jailedUntil(account) > block.timestamp
        ) revert NotAnnotator(account);
    }

    /// Whether fewer than `perItem` other pool members outrank `annotator` for `item`.
    function _ranksWithin(uint64 epoch_, bytes32 seed, bytes32 item, address annotator, uint8 perItem)
        private
        view
        returns (bool)
    {
        bytes32 mine = score(seed, item, annotator);
        address[] storage members = _pools[epoch_];
        uint256 n = members.length;
        uint256 above;
        for (uint256 i; i < n; ++i) {
            address other = members[i];
            if (other == annotator) continue;
            bytes32 theirs = score(seed, item, other);
            if (theirs > mine || (theirs == mine && other > annotator)) {
                if (++above >= perItem) return false;
            }
        }
        return true;
    }

    function _leaf(bytes32 item) private pure returns (bytes32) {
        return keccak256(bytes.concat(keccak256(abi.encode(item))));
    }

    function _slot(uint64 epoch_, bytes32 item, address annotator) private pure returns (bytes32) {
        return keccak256(abi.encode(epoch_, item, annotator));
    }
}
