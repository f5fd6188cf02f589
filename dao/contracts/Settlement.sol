// SPDX-License-Identifier: Apache-2.0 OR MIT
pragma solidity 0.8.28;

import {AccessControl} from "@openzeppelin/contracts/access/AccessControl.sol";
import {EIP712} from "@openzeppelin/contracts/utils/cryptography/EIP712.sol";
import {ECDSA} from "@openzeppelin/contracts/utils/cryptography/ECDSA.sol";
import {MerkleProof} from "@openzeppelin/contracts/utils/cryptography/MerkleProof.sol";
import {ReentrancyGuardTransient} from "@openzeppelin/contracts/utils/ReentrancyGuardTransient.sol";

/// @notice What Settlement needs from the token.
interface ISettlementToken {
    function transfer(address to, uint256 amount) external returns (bool);
    function transferFrom(address from, address to, uint256 amount) external returns (bool);
    function burn(uint256 amount) external;
    function deliverReward(address to, uint256 amount) external;
}

/// @notice What Settlement needs from the pool it pays rewards from.
interface ISettlementPool {
    function pay(address token, address to, uint256 amount) external;
}

/// @notice What Settlement needs from Staking.
interface ISettlementStaking {
    struct Position {
        uint128 staked;
        uint128 unbonding;
        uint64 unbondingEnds;
    }

    function positionOf(address account, uint8 role) external view returns (Position memory);
    function slash(address account, uint8 role, uint256 amount, bytes32 reason) external;
    function slashSplit(address account, uint8 role, uint256 amount, uint256 returned, address to, bytes32 reason)
        external;
    function jail(address account, uint64 until, bytes32 reason) external;
    function jailedUntil(address account) external view returns (uint64);
}

/// @title daofl settlement: rewards by Merkle root and slashing, both signed by a validator quorum
/// @notice Rewards: an epoch's (address, amount) list in OpenZeppelin StandardMerkleTree layout
/// (leaf = keccak256(bytes.concat(keccak256(abi.encode(index, account, amount)))), the index
/// numbering the leaves 0..n-1 so that claims are marked in a bitmap, as in Uniswap's
/// MerkleDistributor) is posted with the
/// EIP-712 signatures of at least `quorum` distinct QA validators over
/// Root(epoch, root, total, deadline). Posting pulls `total` from the reward pool into this
/// contract; the root becomes claimable `challengeWindow` seconds later, until then governance
/// (the timelock) or the guardian can cancel it, which returns `total` to the pool for good (the
/// epoch can never be posted again). Each account claims its own leaf once, before `deadline`;
/// a claim delegates the claimer to itself if it never delegated. After the deadline anyone
/// sweeps the unclaimed rest back to the pool.
///
/// Slashing: a Verdict(member, evidence, fractionBps, deadline) signed by a validator quorum,
/// whose fraction is the governed `slashBps`, waits out the same challenge window (the member's
/// appeal: governance or the guardian cancels it), then anyone executes it: `slashBps` of the
/// member's stake in `memberRole` (active and unbonding) is slashed through Staking (burnt), the member
/// is jailed for `jailDuration`, and `MemberSlashed` names the evidence's content hash.
///
/// Validators answer for what they sign: once an epoch's root has survived its challenge window,
/// anyone may `reportContradiction` with a validator's signature over another (root, total) for
/// that epoch; the validator earns a strike (its on-chain reputation) and, if governance set
/// `validatorSlashBps`, loses that fraction of its training stake (burnt).
///
/// Validators answer with stake too: when governance sets `validatorMinStake`, a signature
/// counts only if its validator holds at least that much training stake and is not jailed.
///
/// Reward parameters (`rewardParams`: the epoch length in rounds, the epoch's pool, the shares
/// by contribution, stability and performance) are governed here, so that every validator
/// computes an epoch's list under the same rules; a root may not pay more than the epoch's pool.
///
/// Fees: `splitFee` burns half of a fee and sends the rest to the inference pool.
///
/// Three instances serve the DAO: the training one (`memberRole` 0, paying from the training
/// pool), the inference one (`memberRole` 1, paying from the inference pool, its verdicts slashing
/// inference nodes' stake) and the data one (`memberRole` 2, paying annotation rewards from the
/// data pool, its verdicts slashing annotators' stake). All take their validators' stake in the
/// training role: the QA validators are one set.
/// @dev DEFAULT_ADMIN_ROLE (the timelock) sets the validators, quorum and parameters;
/// GUARDIAN_ROLE may cancel pending roots and verdicts. Every refusal is a named error.
/// External calls go only to the token, the reward pool and Staking, none of which calls back;
/// still, every entry point that moves tokens (postRoot, cancelRoot, claim, sweep, executeVerdict,
/// splitFee) is `nonReentrant` (EIP-1153 transient guard), so a re-entry from any callback
/// refuses with `ReentrancyGuardReentrantCall`, and state changes precede the external calls.
contract Settlement is AccessControl, EIP712, ReentrancyGuardTransient {
    /// @notice Role that may cancel a pending root or verdict besides governance.
    bytes32 public constant GUARDIAN_ROLE = keccak256("GUARDIAN_ROLE");
    /// @notice EIP-712 type of a reward root.
    bytes32 public constant ROOT_TYPEHASH =
        keccak256("Root(uint64 epoch,bytes32 root,uint256 total,uint64 deadline)");
    /// @notice EIP-712 type of a slashing verdict.
    bytes32 public constant VERDICT_TYPEHASH =
        keccak256("Verdict(address member,bytes32 evidence,uint16 fractionBps,uint64 deadline)");
    /// @notice Largest validator set.
    uint256 public constant MAX_VALIDATORS = 16;
    /// @notice Training role number in Staking (the role validators' stake is checked and slashed in).
    uint8 public constant TRAINING_ROLE = 0;
    /// @notice Number of Staking roles (0 training, 1 inference, 2 annotator).
    uint8 public constant ROLE_COUNT = 3;
    /// @notice Longest challenge window, claim period or jail duration governance may set: 5 years.
    uint64 public constant MAX_DURATION = 5 * 365 days;

    /// @notice Lifecycle of an epoch root or a verdict.
    enum Status {
        None,
        Pending,
        Cancelled,
        Done
    }

    /// @notice A posted epoch root, as `epoch()` returns it.
    struct Epoch {
        bytes32 root;
        uint128 total;
        uint128 claimed;
        uint64 claimableAt;
        uint64 deadline;
        Status status;
    }

    /// @dev An epoch in storage: everything a claim checks and updates besides the root sits in
    /// one slot (`unclaimed` = total - claimed), so a claim reads two slots of it and writes one.
    struct EpochSlots {
        bytes32 root;
        uint128 unclaimed;
        uint48 claimableAt;
        uint64 deadline;
        Status status;
        uint128 total;
    }

    /// @notice A posted slashing verdict.
    struct Verdict {
        address member;
        uint16 fractionBps;
        uint64 executableAt;
        Status status;
        bytes32 evidence;
    }

    /// @notice Governable parameters.
    struct Params {
        uint64 challengeWindow;
        uint64 minClaimPeriod;
        uint16 slashBps;
        uint64 jailDuration;
        /// Fraction of a contradicting validator's training stake slashed, basis points (0: a
        /// strike only).
        uint16 validatorSlashBps;
        /// Part of a member's slash returned to the reward pool instead of burnt, basis points.
        uint16 slashToPoolBps;
        /// Training stake a validator must hold, unjailed, for its signature to count (0: none).
        uint128 validatorMinStake;
    }

    /// @notice The pools an instance pays from and sends fees to.
    struct Pools {
        /// Where rewards come from and slashes partly return to: the training pool, the
        /// inference pool for the inference instance, the data pool for the data instance.
        address rewardPool;
        /// Where the unburnt half of fees goes: the inference pool.
        address inferencePool;
    }

    /// @notice Governable reward rules every validator computes an epoch's list under (the
    /// formula is `fl_aggregator::settle`'s); shares in parts per million of `epochPool`.
    struct RewardParams {
        /// Rounds per settlement epoch: epoch e (from 1) covers rounds (e-1)*epochRounds+1 ..= e*epochRounds.
        uint32 epochRounds;
        /// Share paid by contribution (positive Shapley scores).
        uint32 contributionPpm;
        /// Share paid to members useful in at least `stabilityQuorumPct` of the epoch's rounds.
        uint32 stabilityPpm;
        /// Share paid by contribution only when the epoch's model improved on the previous one.
        uint32 performancePpm;
        /// Percent of the rounds that earns the stability share.
        uint8 stabilityQuorumPct;
        /// Tokens an epoch may pay at most (a root's total is at most this).
        uint128 epochPool;
    }

    /// @notice The $PROPOSAL token.
    ISettlementToken public immutable token;
    /// @notice Staking (this contract holds its SLASHER_ROLE).
    ISettlementStaking public immutable staking;
    /// @notice The pool rewards are paid from, and slashes partly returned to: the training pool,
    /// the inference pool for the inference instance, the data pool for the data instance (this
    /// contract holds its DISTRIBUTOR_ROLE).
    ISettlementPool public immutable rewardPool;
    /// @notice The inference pool that receives the unburnt half of fees.
    address public immutable inferencePool;
    /// @notice The Staking role whose stake this instance's verdicts slash (0 training, 1 inference,
    /// 2 annotator).
    uint8 public immutable memberRole;

    /// @notice Governable parameters.
    Params public params;
    /// @notice Governable reward rules.
    RewardParams public rewardParams;
    /// @notice Contradictions proven against each validator (its on-chain reputation: lower is better).
    mapping(address validator => uint32) public strikes;
    /// @notice Signatures needed to accept a root or verdict.
    uint8 public quorum;
    address[] private _validators;
    mapping(address => bool) public isValidator;

    mapping(uint64 epoch => EpochSlots) private _epochs;
    mapping(uint64 epoch => mapping(uint256 word => uint256)) private _claimedBitMap;
    mapping(bytes32 id => Verdict) private _verdicts;
    mapping(bytes32 memberEvidence => bool) private _evidenceUsed;
    mapping(uint64 epoch => mapping(address validator => bool)) private _contradicted;

    /// @notice The validator set and quorum changed.
    event ValidatorsChanged(address[] validators, uint8 quorum);
    /// @notice Parameters changed.
    event ParamsChanged(Params params);
    /// @notice The reward rules changed.
    event RewardParamsChanged(RewardParams rewardParams);
    /// @notice `validator` signed `signedRoot` for `epoch`, whose posted root is `postedRoot`.
    event ValidatorContradicted(
        uint64 indexed epoch, address indexed validator, bytes32 signedRoot, bytes32 postedRoot, uint256 slashed
    );
    /// @notice An epoch root was accepted; claimable from `claimableAt` until `deadline`.
    event RootPosted(uint64 indexed epoch, bytes32 root, uint256 total, uint64 claimableAt, uint64 deadline);
    /// @notice A pending epoch root was cancelled by `by`; its total went back to the pool.
    event RootCancelled(uint64 indexed epoch, address by);
    /// @notice `account` claimed `amount` of `epoch` (leaf `index`).
    event Claimed(uint64 indexed epoch, uint256 index, address indexed account, uint256 amount);
    /// @notice The unclaimed `amount` of `epoch` went back to the pool.
    event Swept(uint64 indexed epoch, uint256 amount);
    /// @notice A slashing verdict was accepted; executable from `executableAt`.
    event VerdictPosted(bytes32 indexed id, address indexed member, bytes32 evidence, uint16 fractionBps, uint64 executableAt);
    /// @notice A pending verdict was cancelled (an appeal upheld) by `by`.
    event VerdictCancelled(bytes32 indexed id, address by);
    /// @notice `member` lost `amount` of its `memberRole` stake (burnt, but for `returnedToPool`
    /// of it, which went back to the reward pool) and is jailed until `jailedUntil`, on the evidence
    /// whose content hash is `evidence`.
    event MemberSlashed(
        bytes32 indexed id,
        address indexed member,
        bytes32 indexed evidence,
        uint256 amount,
        uint256 returnedToPool,
        uint64 jailedUntil
    );
    /// @notice A fee of `burnt + toPool` paid by `payer`: `burnt` burnt, `toPool` to the inference pool.
    event FeeSplit(address indexed payer, uint256 burnt, uint256 toPool);

    /// @notice An address that must not be zero is.
    error ZeroAddress();
    /// @notice A zero amount or total.
    error ZeroAmount();
    /// @notice A validator set that is empty, too large, has duplicates or zero addresses, or a
    /// quorum that is not a strict majority of it.
    error InvalidValidatorSet(uint256 size, uint8 quorum);
    /// @notice A parameter out of range.
    error InvalidParams();
    /// @notice A signature that does not recover to an address.
    error InvalidSignature(uint256 index);
    /// @notice A signature of an account that is not a validator.
    error NotValidator(address signer);
    /// @notice Two signatures of the same validator.
    error DuplicateSigner(address signer);
    /// @notice Fewer valid signatures than the quorum.
    error QuorumNotReached(uint256 signatures, uint8 quorum);
    /// @notice The epoch already has a root.
    error EpochAlreadyPosted(uint64 epoch);
    /// @notice The epoch's root was cancelled; it can never be posted or claimed again.
    error EpochCancelled(uint64 epoch);
    /// @notice The epoch has no root.
    error UnknownEpoch(uint64 epoch);
    /// @notice The signed deadline leaves less than the challenge window plus the minimum claim period.
    error DeadlineTooSoon(uint64 deadline, uint64 earliest);
    /// @notice The signed verdict expired.
    error VerdictExpired(uint64 deadline);
    /// @notice The challenge window is still open.
    error ChallengeWindowOpen(uint64 endsAt);
    /// @notice The challenge window is over: too late to cancel.
    error ChallengeWindowOver(uint64 endedAt);
    /// @notice The claim deadline has passed.
    error ClaimDeadlinePassed(uint64 deadline);
    /// @notice The claim deadline has not passed yet: nothing to sweep.
    error ClaimPeriodOpen(uint64 deadline);
    /// @notice The epoch was already swept.
    error AlreadySwept(uint64 epoch);
    /// @notice Leaf `index` of `epoch` was already claimed.
    error AlreadyClaimed(uint64 epoch, uint256 index);
    /// @notice A claim for an account other than the caller.
    error NotClaimant(address account, address caller);
    /// @notice The proof does not lead from (index, account, amount) to the epoch's root.
    error InvalidProof();
    /// @notice A claim that would pay more than the epoch's signed total (a root whose leaves
    /// sum above it).
    error ExceedsTotal(uint256 claimed, uint256 total);
    /// @notice The caller may not cancel (neither governance nor the guardian).
    error NotCanceller(address caller);
    /// @notice The verdict's fraction is not the governed one.
    error FractionNotGoverned(uint16 signed, uint16 governed);
    /// @notice A verdict on this member and evidence was already posted (executed, pending or
    /// cancelled on appeal): one piece of evidence slashes at most once.
    error EvidenceAlreadyUsed(address member, bytes32 evidence);
    /// @notice No such verdict.
    error UnknownVerdict(bytes32 id);
    /// @notice The verdict was cancelled or already executed.
    error VerdictNotPending(bytes32 id);
    /// @notice The member has no stake left to slash in `memberRole`.
    error NothingToSlash(address member);
    /// @notice Reward rules out of range (no rounds, shares above the pool, a quorum above 100%, an empty pool).
    error InvalidRewardParams();
    /// @notice A root's total above the governed epoch pool.
    error ExceedsEpochPool(uint256 total, uint256 epochPool);
    /// @notice The signed (root, total) is the epoch's posted one.
    error NotContradicting(uint64 epoch);
    /// @notice This validator's contradiction of this epoch was already reported.
    error AlreadyReported(uint64 epoch, address validator);
    /// @notice A validator's signature does not count: it holds less than `validatorMinStake` in
    /// training stake, or is jailed.
    error ValidatorNotStaked(address validator);
    /// @notice A role number outside 0..ROLE_COUNT.
    error UnknownRole(uint8 role);

    /// @param token_ The $PROPOSAL token.
    /// @param staking_ Staking.
    /// @param pools The reward pool (training or inference) and the inference pool.
    /// @param memberRole_ The Staking role verdicts slash (0 training, 1 inference, 2 annotator).
    /// @param admin DEFAULT_ADMIN_ROLE (the timelock).
    /// @param guardian GUARDIAN_ROLE, or zero for none.
    /// @param validators_ The QA validator set.
    /// @param quorum_ Signatures needed (a strict majority of the set).
    /// @param params_ The parameters.
    /// @param rewardParams_ The reward rules.
    constructor(
        address token_,
        address staking_,
        Pools memory pools,
        uint8 memberRole_,
        address admin,
        address guardian,
        address[] memory validators_,
        uint8 quorum_,
        Params memory params_,
        RewardParams memory rewardParams_
    ) EIP712("daofl Settlement", "1") {
        if (
            token_ == address(0) || staking_ == address(0) || pools.rewardPool == address(0)
                || pools.inferencePool == address(0) || admin == address(0)
        ) revert ZeroAddress();
        if (memberRole_ >= ROLE_COUNT) revert UnknownRole(memberRole_);
        token = ISettlementToken(token_);
        staking = ISettlementStaking(staking_);
        rewardPool = ISettlementPool(pools.rewardPool);
        inferencePool = pools.inferencePool;
        memberRole = memberRole_;
        _grantRole(DEFAULT_ADMIN_ROLE, admin);
        if (guardian != address(0)) _grantRole(GUARDIAN_ROLE, guardian);
        _setValidators(validators_, quorum_);
        _setParams(params_);
        _setRewardParams(rewardParams_);
    }

    // ----- governance -----

    /// @notice Replaces the validator set and quorum (governance).
    function setValidators(address[] calldata validators_, uint8 quorum_) external onlyRole(DEFAULT_ADMIN_ROLE) {
        _setValidators(validators_, quorum_);
    }

    /// @notice Sets the parameters (governance).
    function setParams(Params calldata params_) external onlyRole(DEFAULT_ADMIN_ROLE) {
        _setParams(params_);
    }

    /// @notice Sets the reward rules (governance); they apply to roots posted from now on.
    function setRewardParams(RewardParams calldata rewardParams_) external onlyRole(DEFAULT_ADMIN_ROLE) {
        _setRewardParams(rewardParams_);
    }

    function _setValidators(address[] memory set, uint8 quorum_) private {
        uint256 n = set.length;
        // An empty set with quorum 0 is allowed (nothing can be posted until governance sets one).
        if (n > MAX_VALIDATORS || quorum_ > n || (n > 0 && uint256(quorum_) * 2 <= n) || (n == 0 && quorum_ != 0)) {
            revert InvalidValidatorSet(n, quorum_);
        }
        for (uint256 i = 0; i < _validators.length; ++i) {
            isValidator[_validators[i]] = false;
        }
        for (uint256 i = 0; i < n; ++i) {
            address v = set[i];
            if (v == address(0) || isValidator[v]) revert InvalidValidatorSet(n, quorum_);
            isValidator[v] = true;
        }
        _validators = set;
        quorum = quorum_;
        emit ValidatorsChanged(set, quorum_);
    }

    function _setParams(Params memory p) private {
        if (
            p.challengeWindow == 0 || p.challengeWindow > MAX_DURATION || p.minClaimPeriod > MAX_DURATION
                || p.jailDuration > MAX_DURATION || p.slashBps == 0 || p.slashBps > 10_000
                || p.validatorSlashBps > 10_000 || p.slashToPoolBps > 10_000
        ) revert InvalidParams();
        params = p;
        emit ParamsChanged(p);
    }

    function _setRewardParams(RewardParams memory r) private {
        if (
            r.epochRounds == 0 || uint256(r.contributionPpm) + r.stabilityPpm + r.performancePpm > 1_000_000
                || r.stabilityQuorumPct > 100 || r.epochPool == 0
        ) revert InvalidRewardParams();
        rewardParams = r;
        emit RewardParamsChanged(r);
    }

    // ----- views -----

    /// @notice The validator set.
    function validators() external view returns (address[] memory) {
        return _validators;
    }

    /// @notice An epoch's root and state.
    function epoch(uint64 epoch_) external view returns (Epoch memory) {
        EpochSlots storage e = _epochs[epoch_];
        return Epoch(e.root, e.total, e.total - e.unclaimed, e.claimableAt, e.deadline, e.status);
    }

    /// @notice Whether leaf `index` of `epoch_` was claimed.
    function isClaimed(uint64 epoch_, uint256 index) public view returns (bool) {
        return (_claimedBitMap[epoch_][index >> 8] >> (index & 0xff)) & 1 == 1;
    }

    /// @notice A verdict by id.
    function verdict(bytes32 id) external view returns (Verdict memory) {
        return _verdicts[id];
    }

    /// @notice The EIP-712 digest validators sign for a root.
    function rootDigest(uint64 epoch_, bytes32 root, uint256 total, uint64 deadline) public view returns (bytes32) {
        return _hashTypedDataV4(keccak256(abi.encode(ROOT_TYPEHASH, epoch_, root, total, deadline)));
    }

    /// @notice The EIP-712 digest validators sign for a verdict; also the verdict's id.
    function verdictDigest(address member, bytes32 evidence, uint16 fractionBps, uint64 deadline)
        public
        view
        returns (bytes32)
    {
        return _hashTypedDataV4(keccak256(abi.encode(VERDICT_TYPEHASH, member, evidence, fractionBps, deadline)));
    }

    // ----- rewards -----

    /// @notice Accepts `epoch_`'s root with a validator quorum's signatures and pulls `total` from
    /// the reward pool; claimable after the challenge window, until `deadline`.
    function postRoot(uint64 epoch_, bytes32 root, uint128 total, uint64 deadline, bytes[] calldata signatures)
        external
        nonReentrant
    {
        EpochSlots storage e = _epochs[epoch_];
        if (e.status == Status.Cancelled) revert EpochCancelled(epoch_);
        if (e.status != Status.None) revert EpochAlreadyPosted(epoch_);
        if (total == 0) revert ZeroAmount();
        uint128 pool = rewardParams.epochPool;
        if (total > pool) revert ExceedsEpochPool(total, pool);
        Params memory p = params;
        // Fits the 48 bits stored (OpenZeppelin's timestamp width): the window is at most 5 years.
        uint64 claimableAt = uint64(block.timestamp) + p.challengeWindow;
        uint64 earliest = claimableAt + p.minClaimPeriod;
        if (deadline < earliest) revert DeadlineTooSoon(deadline, earliest);
        _checkQuorum(rootDigest(epoch_, root, total, deadline), signatures);
        e.root = root;
        e.total = total;
        e.unclaimed = total;
        e.claimableAt = uint48(claimableAt);
        e.deadline = deadline;
        e.status = Status.Pending;
        rewardPool.pay(address(token), address(this), total);
        emit RootPosted(epoch_, root, total, claimableAt, deadline);
    }

    /// @notice Cancels `epoch_`'s root during its challenge window (governance or the guardian);
    /// its total returns to the reward pool and the epoch can never be posted again.
    function cancelRoot(uint64 epoch_) external nonReentrant {
        _checkCanceller();
        EpochSlots storage e = _epochs[epoch_];
        if (e.status == Status.None) revert UnknownEpoch(epoch_);
        if (e.status == Status.Cancelled) revert EpochCancelled(epoch_);
        if (block.timestamp >= e.claimableAt) revert ChallengeWindowOver(e.claimableAt);
        e.status = Status.Cancelled;
        _send(address(rewardPool), e.total);
        emit RootCancelled(epoch_, msg.sender);
    }

    /// @notice Claims leaf `index`, `amount` of `epoch_` for `account` (the caller) with a Merkle
    /// `proof`; delegates the caller to itself if it never delegated.
    function claim(uint64 epoch_, uint256 index, address account, uint256 amount, bytes32[] calldata proof)
        external
        nonReentrant
    {
        if (account != msg.sender) revert NotClaimant(account, msg.sender);
        EpochSlots storage e = _epochs[epoch_];
        uint256 unclaimed = _claimable(e, epoch_);
        mapping(uint256 word => uint256) storage bitmap = _claimedBitMap[epoch_];
        uint256 word = bitmap[index >> 8];
        uint256 bit = 1 << (index & 0xff);
        if (word & bit != 0) revert AlreadyClaimed(epoch_, index);
        if (!MerkleProof.verifyCalldata(proof, e.root, _leaf(index, account, amount))) revert InvalidProof();
        bitmap[index >> 8] = word | bit;
        // The leaves sum to `total` when the validators checked the list; never pay beyond it.
        if (amount > unclaimed) revert ExceedsTotal(e.total - unclaimed + amount, e.total);
        e.unclaimed = uint128(unclaimed - amount);
        // Delegates the claimer to itself if it never delegated, and transfers (one call).
        token.deliverReward(account, amount);
        emit Claimed(epoch_, index, account, amount);
    }

    /// @notice After `epoch_`'s deadline, returns what was not claimed to the reward pool.
    function sweep(uint64 epoch_) external nonReentrant {
        EpochSlots storage e = _epochs[epoch_];
        if (e.status == Status.None) revert UnknownEpoch(epoch_);
        if (e.status == Status.Cancelled) revert EpochCancelled(epoch_);
        if (e.status == Status.Done) revert AlreadySwept(epoch_);
        if (block.timestamp <= e.deadline) revert ClaimPeriodOpen(e.deadline);
        e.status = Status.Done;
        uint256 rest = e.unclaimed;
        if (rest > 0) _send(address(rewardPool), rest);
        emit Swept(epoch_, rest);
    }

    /// @notice Proves that a validator signed another (root, total) for `epoch_` than the one
    /// posted, once the posted root survived its challenge window: the signer earns a strike and,
    /// if governed so, loses `validatorSlashBps` of its training stake (burnt). Once per epoch
    /// and validator; returns the validator.
    function reportContradiction(uint64 epoch_, bytes32 root, uint128 total, uint64 deadline, bytes calldata signature)
        external
        nonReentrant
        returns (address validator)
    {
        bytes32 posted = _epochs[epoch_].root;
        validator = _contradictor(epoch_, root, total, deadline, signature);
        _contradicted[epoch_][validator] = true;
        strikes[validator] += 1;
        uint256 amount = _slashValidator(validator, keccak256(abi.encode(epoch_, root, total)));
        emit ValidatorContradicted(epoch_, validator, root, posted, amount);
    }

    /// @dev The validator whose `signature` over (epoch_, root, total, deadline) contradicts the
    /// epoch's root that survived its challenge window; reverts otherwise.
    function _contradictor(uint64 epoch_, bytes32 root, uint128 total, uint64 deadline, bytes calldata signature)
        private
        view
        returns (address validator)
    {
        EpochSlots storage e = _epochs[epoch_];
        Status status = e.status;
        if (status == Status.None) revert UnknownEpoch(epoch_);
        if (status == Status.Cancelled) revert EpochCancelled(epoch_);
        if (block.timestamp < e.claimableAt) revert ChallengeWindowOpen(e.claimableAt);
        if (root == e.root && total == e.total) revert NotContradicting(epoch_);
        ECDSA.RecoverError err;
        (validator, err,) = ECDSA.tryRecover(rootDigest(epoch_, root, total, deadline), signature);
        if (err != ECDSA.RecoverError.NoError) revert InvalidSignature(0);
        if (!isValidator[validator]) revert NotValidator(validator);
        if (_contradicted[epoch_][validator]) revert AlreadyReported(epoch_, validator);
    }

    /// @dev Slashes the governed `validatorSlashBps` of `validator`'s training stake; returns the amount.
    function _slashValidator(address validator, bytes32 reason) private returns (uint256 amount) {
        uint16 bps = params.validatorSlashBps;
        if (bps == 0) return 0;
        ISettlementStaking.Position memory pos = staking.positionOf(validator, TRAINING_ROLE);
        amount = ((uint256(pos.staked) + pos.unbonding) * bps) / 10_000;
        if (amount > 0) staking.slash(validator, TRAINING_ROLE, amount, reason);
    }

    // ----- slashing -----

    /// @notice Accepts a slashing verdict with a validator quorum's signatures; executable after
    /// the challenge window. Returns the verdict's id (its EIP-712 digest).
    function postVerdict(
        address member,
        bytes32 evidence,
        uint16 fractionBps,
        uint64 deadline,
        bytes[] calldata signatures
    ) external returns (bytes32 id) {
        if (member == address(0)) revert ZeroAddress();
        if (block.timestamp > deadline) revert VerdictExpired(deadline);
        Params memory p = params;
        if (fractionBps != p.slashBps) revert FractionNotGoverned(fractionBps, p.slashBps);
        id = verdictDigest(member, evidence, fractionBps, deadline);
        bytes32 key = keccak256(abi.encode(member, evidence));
        if (_evidenceUsed[key]) revert EvidenceAlreadyUsed(member, evidence);
        _checkQuorum(id, signatures);
        _evidenceUsed[key] = true;
        uint64 executableAt = uint64(block.timestamp) + p.challengeWindow;
        _verdicts[id] = Verdict(member, fractionBps, executableAt, Status.Pending, evidence);
        emit VerdictPosted(id, member, evidence, fractionBps, executableAt);
    }

    /// @notice Cancels a pending verdict during its challenge window (an appeal upheld by
    /// governance, or the guardian).
    function cancelVerdict(bytes32 id) external {
        _checkCanceller();
        Verdict storage v = _verdicts[id];
        if (v.status == Status.None) revert UnknownVerdict(id);
        if (v.status != Status.Pending) revert VerdictNotPending(id);
        if (block.timestamp >= v.executableAt) revert ChallengeWindowOver(v.executableAt);
        v.status = Status.Cancelled;
        emit VerdictCancelled(id, msg.sender);
    }

    /// @notice Executes a verdict after its challenge window: slashes its fraction of the
    /// member's `memberRole` stake (burnt, but for the governed part returned to the reward pool)
    /// and jails the member.
    function executeVerdict(bytes32 id) external nonReentrant {
        Verdict storage v = _verdicts[id];
        if (v.status == Status.None) revert UnknownVerdict(id);
        if (v.status != Status.Pending) revert VerdictNotPending(id);
        if (block.timestamp < v.executableAt) revert ChallengeWindowOpen(v.executableAt);
        v.status = Status.Done;
        address member = v.member;
        uint8 role = memberRole;
        ISettlementStaking.Position memory pos = staking.positionOf(member, role);
        uint256 amount = ((uint256(pos.staked) + pos.unbonding) * v.fractionBps) / 10_000;
        if (amount == 0) revert NothingToSlash(member);
        Params memory p = params;
        uint64 until = uint64(block.timestamp) + p.jailDuration;
        uint256 returned = (amount * p.slashToPoolBps) / 10_000;
        if (returned == 0) {
            staking.slash(member, role, amount, v.evidence);
        } else {
            staking.slashSplit(member, role, amount, returned, address(rewardPool), v.evidence);
        }
        staking.jail(member, until, v.evidence);
        emit MemberSlashed(id, member, v.evidence, amount, returned, until);
    }

    // ----- fees -----

    /// @notice Takes a fee of `amount` from the caller (approved beforehand): half (rounded
    /// down) is burnt, the rest goes to the inference pool.
    function splitFee(uint256 amount) external nonReentrant returns (uint256 burnt, uint256 toPool) {
        if (amount == 0) revert ZeroAmount();
        burnt = amount / 2;
        toPool = amount - burnt;
        token.transferFrom(msg.sender, address(this), amount);
        if (burnt > 0) token.burn(burnt);
        _send(inferencePool, toPool);
        emit FeeSplit(msg.sender, burnt, toPool);
    }

    // ----- internals -----

    function _checkCanceller() private view {
        if (!hasRole(DEFAULT_ADMIN_ROLE, msg.sender) && !hasRole(GUARDIAN_ROLE, msg.sender)) {
            revert NotCanceller(msg.sender);
        }
    }

    /// @dev Every signature must recover to a distinct validator, and there must be `quorum` of them.
    function _checkQuorum(bytes32 digest, bytes[] calldata signatures) private view {
        uint256 n = signatures.length;
        uint256 minStake = params.validatorMinStake;
        address[] memory seen = new address[](n);
        for (uint256 i = 0; i < n; ++i) {
            (address signer, ECDSA.RecoverError err,) = ECDSA.tryRecover(digest, signatures[i]);
            if (err != ECDSA.RecoverError.NoError) revert InvalidSignature(i);
            if (!isValidator[signer]) revert NotValidator(signer);
            if (minStake > 0) _checkStaked(signer, minStake);
            for (uint256 j = 0; j < i; ++j) {
                if (seen[j] == signer) revert DuplicateSigner(signer);
            }
            seen[i] = signer;
        }
        uint8 q = quorum;
        if (q == 0 || n < q) revert QuorumNotReached(n, q);
    }

    /// @dev Reverts unless `validator` holds `minStake` of training stake and is not jailed.
    function _checkStaked(address validator, uint256 minStake) private view {
        if (
            staking.positionOf(validator, TRAINING_ROLE).staked < minStake
                || staking.jailedUntil(validator) > block.timestamp
        ) revert ValidatorNotStaked(validator);
    }

    /// @dev Reverts unless `e` is claimable now; returns its unclaimed amount. The fields read
    /// share one storage slot.
    function _claimable(EpochSlots storage e, uint64 epoch_) private view returns (uint256 unclaimed) {
        Status status = e.status;
        uint64 claimableAt = e.claimableAt;
        uint64 deadline = e.deadline;
        unclaimed = e.unclaimed;
        if (status == Status.None) revert UnknownEpoch(epoch_);
        if (status == Status.Cancelled) revert EpochCancelled(epoch_);
        if (block.timestamp < claimableAt) revert ChallengeWindowOpen(claimableAt);
        if (status == Status.Done || block.timestamp > deadline) revert ClaimDeadlinePassed(deadline);
    }

    /// @dev The StandardMerkleTree leaf of (index, account, amount):
    /// keccak256(bytes.concat(keccak256(abi.encode(index, account, amount)))), hashed in scratch
    /// memory instead of two allocated byte arrays.
    function _leaf(uint256 index, address account, uint256 amount) private pure returns (bytes32 leaf) {
        assembly ("memory-safe") {
            let ptr := mload(0x40)
            mstore(ptr, index)
            mstore(add(ptr, 0x20), account)
            mstore(add(ptr, 0x40), amount)
            mstore(0x00, keccak256(ptr, 0x60))
            leaf := keccak256(0x00, 0x20)
        }
    }

    function _send(address to, uint256 amount) private {
        token.transfer(to, amount);
    }
}
