//! Annotation epochs on one world (anvil or the embedded EVM): staked annotators join a pool,
//! the opener fixes the items and the seed is the opening block's hash; the book's assignment
//! and commitments are `contrib`'s, byte for byte; commits then reveals by the three assigned
//! annotators; hostile commits and reveals refused with typed reasons; the index rebuilt from
//! events agrees with `contrib::CommitBook`; an annotator verdict on the data Settlement slashes
//! annotator stake and jails; an annotation reward root is paid from the data pool and claimed.

use alloy::primitives::{Address, B256, Bytes, U256, keccak256};
use alloy::signers::local::PrivateKeySigner;
use alloy::sol_types::{Eip712Domain, SolCall};
use contrib::{
    AnnotationRecord, AnnotatorEpoch, Assignment, AssignmentSeed, Category, CommitBook, Commitment,
    Labels, Outcome, ProposalQuality, RewardPolicy, Risk, Salt, SignedRecord, annotation_reward,
};
use dao::data::RecordBatch;
use dao::settle::{RewardTree, RootMessage, VerdictMessage, sign_root, sign_verdict};
use dao::{
    AnnotationEvent, AnnotationRefusal, DAY, Dao, DaoDeployment, Error, Membership, Role,
    SettlementKind,
};
use fl_core::{ContentHash, MemberKey};

use crate::support::{World, assert_revert, tok};

const EPOCH: u64 = 1;

/// Gas of the book's transactions, for the report.
#[derive(Debug, Default)]
pub struct Gas {
    pub join: u64,
    pub open: u64,
    /// The first commit of the epoch (it draws the seed).
    pub first_commit: u64,
    pub commit: u64,
    pub reveal: u64,
}

#[track_caller]
fn refusal<T: std::fmt::Debug>(result: dao::Result<T>) -> AnnotationRefusal {
    match result {
        Err(e) => AnnotationRefusal::of(&e).unwrap_or_else(|| panic!("not a book refusal: {e:?}")),
        Ok(v) => panic!("expected a refusal, got {v:?}"),
    }
}

fn digest(c: &ContentHash) -> B256 {
    B256::from(*c.as_bytes())
}

fn member_key(k: &PrivateKeySigner) -> MemberKey {
    MemberKey::from_hex(&k.to_bytes().to_string()).unwrap()
}

fn annotate(
    key: &MemberKey,
    item: &ContentHash,
    outcome: Outcome,
) -> SignedRecord<AnnotationRecord> {
    SignedRecord::sign(
        AnnotationRecord {
            annotator: key.address(),
            item: *item,
            epoch: EPOCH,
            labels: Labels {
                outcome,
                category: Category::Process,
                quality: ProposalQuality::new(3).unwrap(),
                risk: Risk::Low,
            },
        },
        key,
    )
    .unwrap()
}

fn vsigs(keys: &[PrivateKeySigner], d: &Eip712Domain, m: &VerdictMessage) -> Vec<Bytes> {
    keys.iter()
        .map(|k| sign_verdict(k, d, m).unwrap())
        .collect()
}

fn rsigs(keys: &[PrivateKeySigner], d: &Eip712Domain, m: &RootMessage) -> Vec<Bytes> {
    keys.iter().map(|k| sign_root(k, d, m).unwrap()).collect()
}

pub async fn run(w: &World) -> Gas {
    let d = &w.deployment;
    let mut gas = Gas::default();
    let opener = &w.slasher;
    let annotators = &w.members;
    let keys: Vec<MemberKey> = w.member_keys.iter().map(member_key).collect();
    let dao_of = |a: &Address| annotators.iter().find(|m| m.sender() == *a).unwrap();
    let key_of = |a: &Address| keys.iter().find(|k| k.address() == *a).unwrap();

    // Five annotators stake the annotator minimum.
    w.team.claim_vesting(d.team_vesting).await.unwrap();
    let min = tok(w.config.staking.annotator_min_tokens);
    for a in annotators {
        w.team.transfer(a.sender(), min).await.unwrap();
        a.stake(Role::Annotator, min).await.unwrap();
    }

    // Parameters are the configuration's; only the timelock changes them.
    let params = w.deployer.annotation_params().await.unwrap();
    assert_eq!(params.commit_secs, w.config.annotations.commit_secs);
    assert_eq!(params.reveal_secs, w.config.annotations.reveal_secs);
    assert_eq!(params.annotators_per_item, 3);
    let set = dao::bindings::AnnotationBook::setParamsCall {
        params_: dao::bindings::AnnotationBook::Params {
            commitPeriod: 60,
            revealPeriod: 60,
            annotatorsPerItem: 3,
        },
    };
    assert_revert(
        opener
            .send_raw(d.annotation_book, set.abi_encode().into())
            .await,
        "AccessControlUnauthorizedAccount",
    );

    // Registration: staked annotators join; nobody joins twice; the unstaked cannot.
    for a in annotators {
        gas.join = a.join_annotation_epoch(EPOCH).await.unwrap().gas_used;
    }
    let pool: Vec<Address> = annotators.iter().map(Dao::sender).collect();
    assert_eq!(w.deployer.annotation_pool(EPOCH).await.unwrap(), pool);
    assert_eq!(
        refusal(annotators[0].join_annotation_epoch(EPOCH).await),
        AnnotationRefusal::AlreadyJoined { epoch: EPOCH }
    );
    assert!(matches!(
        refusal(w.investors.join_annotation_epoch(EPOCH).await),
        AnnotationRefusal::NotAnnotator { .. }
    ));

    // Opening: only the opener; it fixes the items and the seed block.
    let item_hashes: Vec<ContentHash> = (0..4)
        .map(|i| ContentHash::of(format!("proposal record {i}").as_bytes()))
        .collect();
    let items = RecordBatch::new(&item_hashes.iter().map(digest).collect::<Vec<_>>()).unwrap();
    assert_revert(
        annotators[0].open_annotation_epoch(EPOCH, &items).await,
        "AccessControlUnauthorizedAccount",
    );
    let opened = opener.open_annotation_epoch(EPOCH, &items).await.unwrap();
    gas.open = opened.gas_used;
    assert_eq!(
        refusal(opener.open_annotation_epoch(EPOCH, &items).await),
        AnnotationRefusal::EpochAlreadyOpen { epoch: EPOCH }
    );
    assert_eq!(
        refusal(annotators[0].join_annotation_epoch(EPOCH).await),
        AnnotationRefusal::EpochAlreadyOpen { epoch: EPOCH }
    );
    let epoch = w.deployer.annotation_epoch(EPOCH).await.unwrap().unwrap();
    assert_eq!(epoch.seed_block, opened.block_number);
    assert_eq!(epoch.items_root, items.root());
    assert_eq!((epoch.items, epoch.per_item), (4, 3));
    assert_eq!(epoch.seed, None);
    assert_eq!(
        epoch.reveal_deadline - epoch.commit_deadline,
        w.config.annotations.reveal_secs
    );
    assert_eq!(w.deployer.annotation_epoch(99).await.unwrap(), None);

    // The seed is the opening block's hash, the same whenever and by whomever it is drawn.
    w.deployer.draw_annotation_seed(EPOCH).await.unwrap();
    let seed = w.deployer.annotation_seed(EPOCH).await.unwrap();
    assert!(!seed.is_zero());
    w.deployer.advance_time(60).await.unwrap();
    annotators[4].draw_annotation_seed(EPOCH).await.unwrap();
    assert_eq!(w.deployer.annotation_seed(EPOCH).await.unwrap(), seed);
    assert_eq!(
        w.deployer
            .annotation_epoch(EPOCH)
            .await
            .unwrap()
            .unwrap()
            .seed,
        Some(seed)
    );

    // The book's assignment is contrib's rendezvous assignment from the same seed and pool.
    let assignment = Assignment::new(AssignmentSeed(seed.0), &item_hashes, &pool, 3).unwrap();
    for item in &item_hashes {
        let mut on_chain = Vec::new();
        for a in &pool {
            if w.deployer
                .is_assigned_on_chain(EPOCH, digest(item), *a)
                .await
                .unwrap()
            {
                on_chain.push(*a);
            }
        }
        let mut expected = assignment.annotators(item).unwrap().to_vec();
        expected.sort();
        assert_eq!(on_chain.len(), 3);
        on_chain.sort();
        assert_eq!(on_chain, expected, "item {item}");
    }
    assert_eq!(
        w.deployer
            .assignment_score_on_chain(seed, digest(&item_hashes[0]), pool[0])
            .await
            .unwrap()
            .0,
        contrib::assign::score(&AssignmentSeed(seed.0), &item_hashes[0], &pool[0])
    );

    // The three annotators of item 0 commit; contrib's commitment is the contract's.
    let item = item_hashes[0];
    let chosen = assignment.annotators(&item).unwrap().to_vec();
    let outsider = *pool.iter().find(|a| !chosen.contains(a)).unwrap();
    let mut reveals = Vec::new();
    for (n, a) in chosen.iter().enumerate() {
        let outcome = if n == 2 {
            Outcome::Rejected
        } else {
            Outcome::Accepted
        };
        let record = annotate(key_of(a), &item, outcome);
        let salt = Salt::random();
        let commitment = Commitment::to(&record, &salt);
        assert_eq!(
            dao_of(a)
                .commitment_on_chain(*a, digest(&record.cid()), B256::from(salt.0))
                .await
                .unwrap()
                .0,
            commitment.0
        );
        if n == 1 {
            // A copier replays the first annotator's commitment: refused.
            let copied = B256::from(
                reveals
                    .first()
                    .map(|(_, _, c): &(_, _, Commitment)| c.0)
                    .unwrap(),
            );
            assert_eq!(
                refusal(
                    dao_of(a)
                        .commit_annotation(EPOCH, &items, digest(&item), copied)
                        .await
                ),
                AnnotationRefusal::CommitmentReused
            );
        }
        let r = dao_of(a)
            .commit_annotation(EPOCH, &items, digest(&item), B256::from(commitment.0))
            .await
            .unwrap();
        gas.commit = gas.commit.max(r.gas_used);
        reveals.push((record, salt, commitment));
    }
    // The first commit drew nothing (the seed was drawn already): measure one that draws it on a
    // second epoch below.
    assert_eq!(
        w.deployer
            .annotation_commitment(EPOCH, digest(&item), chosen[0])
            .await
            .unwrap(),
        Some((B256::from(reveals[0].2.0), false))
    );

    // Hostile commits: a second commitment, an unassigned annotator, an item outside the epoch,
    // a reveal before the commit deadline.
    let again = Commitment::to(
        &annotate(key_of(&chosen[0]), &item, Outcome::Rejected),
        &Salt::random(),
    );
    assert_eq!(
        refusal(
            dao_of(&chosen[0])
                .commit_annotation(EPOCH, &items, digest(&item), B256::from(again.0))
                .await
        ),
        AnnotationRefusal::DoubleCommit {
            item: digest(&item),
            annotator: chosen[0]
        }
    );
    let outsider_commitment = Commitment::to(
        &annotate(key_of(&outsider), &item, Outcome::Accepted),
        &Salt::random(),
    );
    assert_eq!(
        refusal(
            dao_of(&outsider)
                .commit_annotation(
                    EPOCH,
                    &items,
                    digest(&item),
                    B256::from(outsider_commitment.0)
                )
                .await
        ),
        AnnotationRefusal::NotAssigned {
            item: digest(&item),
            annotator: outsider
        }
    );
    let stranger = ContentHash::of(b"not in this epoch");
    assert_eq!(
        refusal(
            dao_of(&outsider)
                .commit_annotation_with_proof(
                    EPOCH,
                    digest(&stranger),
                    items.proof(digest(&item)).unwrap(),
                    B256::from(outsider_commitment.0)
                )
                .await
        ),
        AnnotationRefusal::ItemNotInEpoch {
            item: digest(&stranger)
        }
    );
    let (first, salt, _) = &reveals[0];
    assert!(matches!(
        refusal(
            dao_of(&chosen[0])
                .reveal_annotation(
                    EPOCH,
                    digest(&item),
                    digest(&first.cid()),
                    B256::from(salt.0)
                )
                .await
        ),
        AnnotationRefusal::RevealTooEarly { .. }
    ));

    // One annotator of item 1 commits and will never reveal in time.
    let item1 = item_hashes[1];
    let chosen1 = assignment.annotators(&item1).unwrap().to_vec();
    let sleeper = chosen1[0];
    let sleeper_record = annotate(key_of(&sleeper), &item1, Outcome::Accepted);
    let sleeper_salt = Salt::random();
    dao_of(&sleeper)
        .commit_annotation(
            EPOCH,
            &items,
            digest(&item1),
            B256::from(Commitment::to(&sleeper_record, &sleeper_salt).0),
        )
        .await
        .unwrap();

    // Commits close: a late commit is refused.
    w.deployer
        .advance_time(w.config.annotations.commit_secs + 1)
        .await
        .unwrap();
    let late = annotate(key_of(&chosen1[1]), &item1, Outcome::Accepted);
    assert!(matches!(
        refusal(
            dao_of(&chosen1[1])
                .commit_annotation(
                    EPOCH,
                    &items,
                    digest(&item1),
                    B256::from(Commitment::to(&late, &Salt::random()).0)
                )
                .await
        ),
        AnnotationRefusal::CommitPhaseClosed { .. }
    ));

    // Reveals: another answer or another salt does not match; the right ones do, once.
    let a0 = dao_of(&chosen[0]);
    let other = annotate(key_of(&chosen[0]), &item, Outcome::Rejected);
    assert_eq!(
        refusal(
            a0.reveal_annotation(
                EPOCH,
                digest(&item),
                digest(&other.cid()),
                B256::from(salt.0)
            )
            .await
        ),
        AnnotationRefusal::RevealMismatch {
            item: digest(&item),
            annotator: chosen[0]
        }
    );
    assert!(matches!(
        refusal(
            a0.reveal_annotation(
                EPOCH,
                digest(&item),
                digest(&first.cid()),
                B256::repeat_byte(7)
            )
            .await
        ),
        AnnotationRefusal::RevealMismatch { .. }
    ));
    assert!(matches!(
        refusal(
            dao_of(&outsider)
                .reveal_annotation(
                    EPOCH,
                    digest(&item),
                    digest(&first.cid()),
                    B256::from(salt.0)
                )
                .await
        ),
        AnnotationRefusal::NotCommitted { .. }
    ));
    for (record, salt, _) in &reveals {
        let a = record.body().annotator;
        let r = dao_of(&a)
            .reveal_annotation(
                EPOCH,
                digest(&item),
                digest(&record.cid()),
                B256::from(salt.0),
            )
            .await
            .unwrap();
        gas.reveal = gas.reveal.max(r.gas_used);
    }
    assert!(matches!(
        refusal(
            a0.reveal_annotation(
                EPOCH,
                digest(&item),
                digest(&first.cid()),
                B256::from(salt.0)
            )
            .await
        ),
        AnnotationRefusal::AlreadyRevealed { .. }
    ));
    assert_eq!(
        w.deployer
            .annotation_commitment(EPOCH, digest(&item), chosen[0])
            .await
            .unwrap(),
        Some((B256::from(reveals[0].2.0), true))
    );

    // Reveals close: the sleeper is too late.
    w.deployer
        .advance_time(w.config.annotations.reveal_secs)
        .await
        .unwrap();
    assert!(matches!(
        refusal(
            dao_of(&sleeper)
                .reveal_annotation(
                    EPOCH,
                    digest(&item1),
                    digest(&sleeper_record.cid()),
                    B256::from(sleeper_salt.0)
                )
                .await
        ),
        AnnotationRefusal::RevealPhaseClosed { .. }
    ));

    // The index rebuilt from the chain's events: contrib's CommitBook accepts every commit and
    // reveal the book accepted, with the records from the "content store".
    let events = w.deployer.annotation_events().await.unwrap();
    assert!(events.contains(&AnnotationEvent::SeedDrawn {
        epoch: EPOCH,
        seed,
        seed_block: opened.block_number
    }));
    let joined = events
        .iter()
        .filter(|e| matches!(e, AnnotationEvent::Joined { epoch: EPOCH, .. }))
        .count();
    assert_eq!(joined, 5);
    let mut book = CommitBook::new(EPOCH, assignment.clone());
    let commits = w.deployer.annotation_commits(EPOCH).await.unwrap();
    assert_eq!(commits.len(), 4);
    for c in &commits {
        book.handle_commit(
            c.annotator,
            ContentHash::from_digest(c.item.0),
            Commitment(c.commitment.0),
        )
        .unwrap();
    }
    book.close_commits();
    let revealed = w.deployer.annotation_reveals(EPOCH).await.unwrap();
    assert_eq!(revealed.len(), 3);
    for r in &revealed {
        let (record, salt, _) = reveals
            .iter()
            .find(|(rec, _, _)| digest(&rec.cid()) == r.annotation)
            .expect("a revealed CID names a stored record");
        assert_eq!(r.salt, B256::from(salt.0));
        book.handle_reveal(record.clone(), salt).unwrap();
    }
    assert_eq!(book.unrevealed(), vec![(item1, sleeper)]);

    // A second epoch: the first commit draws the seed itself.
    let pool2 = &annotators[..4];
    for a in pool2 {
        a.join_annotation_epoch(EPOCH + 1).await.unwrap();
    }
    opener
        .open_annotation_epoch(EPOCH + 1, &items)
        .await
        .unwrap();
    w.deployer.advance_time(1).await.unwrap();
    let seed2 = w.deployer.annotation_seed(EPOCH + 1).await.unwrap();
    assert_ne!(seed2, seed);
    let pool2_addresses: Vec<Address> = pool2.iter().map(Dao::sender).collect();
    let a2 = contrib::assign::annotators_for(
        &AssignmentSeed(seed2.0),
        &item_hashes[2],
        &pool2_addresses,
        3,
    )
    .unwrap();
    let r = dao_of(&a2[0])
        .commit_annotation(
            EPOCH + 1,
            &items,
            digest(&item_hashes[2]),
            B256::repeat_byte(9),
        )
        .await
        .unwrap();
    gas.first_commit = r.gas_used;
    assert_eq!(
        w.deployer
            .annotation_epoch(EPOCH + 1)
            .await
            .unwrap()
            .unwrap()
            .seed,
        Some(seed2)
    );

    // The copier (chosen[2], who answered against the others) is found out off chain; a verdict on
    // the data Settlement slashes its annotator stake and jails it.
    let quorum = &w.validator_keys[..3];
    let data = w.deployer.data_settlement();
    assert_eq!(data.settlement_kind(), SettlementKind::Data);
    assert_eq!(data.settlement_address().unwrap(), d.data_settlement);
    let domain = data.settlement_domain().await.unwrap();
    assert_ne!(domain, w.deployer.settlement_domain().await.unwrap());
    let adversary = dao_of(&chosen[2]);
    let now = w.deployer.now().await.unwrap();
    let verdict = VerdictMessage {
        member: adversary.sender(),
        evidence: keccak256("flag: signed annotations against consensus and gold"),
        fraction_bps: w.config.settlement.slash_bps,
        deadline: now + DAY,
    };
    let (_, id) = data
        .post_verdict(&verdict, &vsigs(quorum, &domain, &verdict))
        .await
        .unwrap();
    w.deployer.advance_time(7 * DAY + 1).await.unwrap();
    let supply = w.deployer.total_supply().await.unwrap();
    let data_pool_before = w.deployer.balance_of(d.data_pool).await.unwrap();
    w.members[0]
        .data_settlement()
        .execute_verdict(id)
        .await
        .unwrap();
    let slashed = min * U256::from(verdict.fraction_bps) / U256::from(10_000u64);
    let (stake, _, _) = adversary
        .position(adversary.sender(), Role::Annotator)
        .await
        .unwrap();
    assert_eq!(stake, min - slashed);
    let returned =
        slashed * U256::from(w.config.settlement.slash_to_pool_bps) / U256::from(10_000u64);
    assert_eq!(
        w.deployer.total_supply().await.unwrap(),
        supply - (slashed - returned)
    );
    assert_eq!(
        w.deployer.balance_of(d.data_pool).await.unwrap(),
        data_pool_before + returned
    );
    assert!(matches!(
        adversary
            .membership(adversary.sender(), Role::Annotator)
            .await
            .unwrap(),
        Membership::Jailed { .. }
    ));
    // Jailed: it can neither join nor commit.
    assert!(matches!(
        refusal(adversary.join_annotation_epoch(EPOCH + 2).await),
        AnnotationRefusal::NotAnnotator { .. }
    ));

    // Annotation rewards by the DAO's formula, as a root on the data Settlement, paid from the
    // data pool and claimed.
    let policy = RewardPolicy::default();
    let honest = [chosen[0], chosen[1]];
    let leaves: Vec<(Address, U256)> = honest
        .iter()
        .enumerate()
        .map(|(rank, a)| {
            let reward = annotation_reward(
                &policy,
                &AnnotatorEpoch {
                    annotations: 1,
                    quality_bps: 9_000,
                    contributor_rank: rank as u64,
                    flagged: false,
                },
            )
            .unwrap();
            // 10 + 50% quality + 100% early contributor.
            assert_eq!(reward.total, 25 * 10u128.pow(18));
            (*a, U256::from(reward.total))
        })
        .collect();
    let tree = RewardTree::new(&leaves).unwrap();
    let now = w.deployer.now().await.unwrap();
    let msg = RootMessage::of(EPOCH, &tree, now + 7 * DAY + 31 * DAY);
    let data_pool = w.deployer.balance_of(d.data_pool).await.unwrap();
    let training_pool = w.deployer.balance_of(d.training_pool).await.unwrap();
    data.post_root(&msg, &rsigs(quorum, &domain, &msg))
        .await
        .unwrap();
    assert_eq!(
        w.deployer.balance_of(d.data_pool).await.unwrap(),
        data_pool - tree.total()
    );
    assert_eq!(
        w.deployer.balance_of(d.training_pool).await.unwrap(),
        training_pool
    );
    w.deployer.advance_time(7 * DAY + 1).await.unwrap();
    let earner = dao_of(&honest[0]);
    let before = earner.balance_of(earner.sender()).await.unwrap();
    assert_revert(earner.claim_reward(EPOCH, &tree).await, "UnknownEpoch");
    earner
        .data_settlement()
        .claim_reward(EPOCH, &tree)
        .await
        .unwrap();
    assert_eq!(
        earner.balance_of(earner.sender()).await.unwrap(),
        before + tok(25)
    );

    // A dao.json from before the data contracts loads; calls that need them say so.
    let mut json = serde_json::to_value(d).unwrap();
    let fields = json.as_object_mut().unwrap();
    fields.remove("data_settlement");
    fields.remove("annotation_book");
    let old: DaoDeployment = serde_json::from_value(json).unwrap();
    let dao = Dao::new(w.deployer.backend().clone(), old);
    assert!(matches!(
        dao.data_settlement().epoch(EPOCH).await,
        Err(Error::NotDeployed(_))
    ));
    assert!(matches!(
        dao.annotation_epoch(EPOCH).await,
        Err(Error::NotDeployed(_))
    ));
    gas
}

/// Gas of a commit by an assigned annotator with a pool of `n` (the embedded EVM: any address
/// sends). The rank costs one SHA-256 and one storage read per pool member.
pub async fn commit_gas_with_pool(w: &World, n: usize) -> u64 {
    let d = &w.deployment;
    w.team.claim_vesting(d.team_vesting).await.unwrap();
    let min = tok(w.config.staking.annotator_min_tokens);
    let mut pool = Vec::new();
    for i in 0..n {
        let address = Address::from_word(keccak256(format!("pool member {i}")));
        let a = w
            .deployer
            .with_backend(w.deployer.backend().acting_as(address).unwrap());
        w.team.transfer(address, min).await.unwrap();
        a.stake(Role::Annotator, min).await.unwrap();
        a.join_annotation_epoch(EPOCH).await.unwrap();
        pool.push(a);
    }
    let items = RecordBatch::new(&[B256::repeat_byte(1), B256::repeat_byte(2)]).unwrap();
    w.slasher
        .open_annotation_epoch(EPOCH, &items)
        .await
        .unwrap();
    w.deployer.draw_annotation_seed(EPOCH).await.unwrap();
    let seed = w.deployer.annotation_seed(EPOCH).await.unwrap();
    let addresses: Vec<Address> = pool.iter().map(Dao::sender).collect();
    let item = B256::repeat_byte(1);
    let chosen = contrib::assign::annotators_for(
        &AssignmentSeed(seed.0),
        &ContentHash::from_digest(item.0),
        &addresses,
        3,
    )
    .unwrap();
    let a = pool.iter().find(|a| a.sender() == chosen[0]).unwrap();
    a.commit_annotation(EPOCH, &items, item, B256::repeat_byte(3))
        .await
        .unwrap()
        .gas_used
}
