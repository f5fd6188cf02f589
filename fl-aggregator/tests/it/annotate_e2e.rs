//! An annotation epoch end to end with the contributor command line, on the embedded EVM and on
//! anvil: five staked annotators; two of them submit ten proposals of the shipped corpus with
//! `fl-client contribute add`; all join, the epoch opens on the proposals, each runs `assigned`,
//! `annotate` and `reveal` (four answer the real labels, one adversary flips every label);
//! `settle_epoch` gives the consensus (the real labels), flags the adversary and prices the
//! others by the DAO's formula; the validators' verdict over the flag's evidence slashes and
//! jails the adversary through the data Settlement; the validators' reward root is posted and
//! claimed with `fl-client contribute rewards --claim`, balances rising by exactly the leaves.
//! Hostile input through the command line: an annotation of an unassigned item, a second
//! submission, a reveal before the deadline and a reveal whose salts file was altered are
//! refused with clear errors and nothing stored is lost. Finally a fresh content store holding
//! only the registered CARs and fresh SQLite and PostgreSQL indexes are rebuilt from the chain:
//! equal to the index the command line and the coordinator wrote, records byte for byte.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::Command;

use chain_anchor::alloy::primitives::{Address, U256};
use contrib::rewards::{TOKEN, score_bps};
use contrib::{AnnotatorEpoch, Field, RewardPolicy, annotation_reward};
use dao::data::RecordBatch;
use dao::settle::{RewardTree, RootMessage, VerdictMessage, sign_root, sign_verdict};
use dao::{DAY, Membership, Role, tokens};
use fl_client::contribute::epoch::{epoch_items, settle_epoch};
use fl_client::contribute::{ContentStore, EpochSettings, GoldLabel, rebuild_index};
use fl_client::data::proposals::{self, Outcome, Proposal};
use fl_core::{ContentHash, MemberKey};
use fl_db::testing::TestDb;
use fl_db::{Backend as DbBackend, Store};

use crate::chain::{Chain, address_list, signer};
use crate::e2e::bin;

const EPOCH: u64 = 1;
const ANNOTATORS: usize = 5;
const ADVERSARY: usize = 4;
const PROPOSALS_EACH: usize = 5;

/// The labels a careful annotator gives a proposal: the corpus's outcome and kind, and a
/// quality and risk fixed by the proposal (the simulated ground truth).
fn truth(p: &Proposal) -> (u8, u8, u8, u8) {
    let outcome = p.label.class().expect("decided");
    let category = p.kind().class();
    let quality = 1 + (p.title.len() % 5) as u8;
    let risk = (p.text.len() % 3) as u8;
    (outcome, category, quality, risk)
}

fn label_line(item: &ContentHash, (o, c, q, r): (u8, u8, u8, u8)) -> String {
    const OUTCOMES: [&str; 2] = ["accepted", "rejected"];
    const CATEGORIES: [&str; 5] = ["protocol", "standard", "process", "parameter", "operations"];
    const RISKS: [&str; 3] = ["low", "medium", "high"];
    format!(
        r#"{{"item":"{item}","outcome":"{}","category":"{}","quality":{q},"risk":"{}"}}"#,
        OUTCOMES[usize::from(o)],
        CATEGORIES[usize::from(c)],
        RISKS[usize::from(r)]
    )
}

/// The adversary's answer: every label flipped.
fn flipped((o, c, q, r): (u8, u8, u8, u8)) -> (u8, u8, u8, u8) {
    (1 - o, (c + 1) % 5, 6 - q, (r + 1) % 3)
}

struct Cli<'a> {
    chain: &'a Chain,
    dao_json: PathBuf,
    store: PathBuf,
    db: String,
}

impl Cli<'_> {
    fn cmd(&self, key: &Path, step: &str, args: &[&str]) -> Command {
        // One process at a time holds an embedded chain.
        self.chain.release();
        let mut c = Command::new(bin("fl-client"));
        c.args(["contribute", step, "--dao"])
            .arg(&self.dao_json)
            .args(self.chain.claim_args())
            .arg("--key")
            .arg(key)
            .arg("--store")
            .arg(&self.store)
            .args(["--db", &self.db])
            .args(args)
            .env("DAOFL_LOG", "warn");
        c
    }

    fn ok(&self, key: &Path, step: &str, args: &[&str]) -> String {
        crate::settle_e2e::run_ok(&mut self.cmd(key, step, args))
    }

    /// Runs a step that must fail; returns what it printed.
    fn refused(&self, key: &Path, step: &str, args: &[&str]) -> String {
        let out = self.cmd(key, step, args).output().unwrap();
        let text = format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        assert!(!out.status.success(), "{step} should fail:\n{text}");
        text
    }
}

/// Everything the index holds of the epoch, in query order.
async fn dump(db: &Store, items: &[ContentHash]) -> String {
    let mut out = String::new();
    for batch in db.batches().await.unwrap() {
        let records = db.batch_records(&batch.root).await.unwrap();
        out += &format!("{batch:?}\n{records:?}\n");
    }
    for item in items {
        let d = fl_db::B256::from(*item.as_bytes());
        out += &format!("{:?}\n", db.item_annotators(EPOCH, &d).await.unwrap());
    }
    out += &format!("{:?}\n", db.commitments(EPOCH).await.unwrap());
    out += &format!("{:?}\n", db.consensus(EPOCH).await.unwrap());
    out += &format!("{:?}\n", db.annotator_quality(EPOCH).await.unwrap());
    out
}

async fn epoch_end_to_end(embedded: bool) {
    let dir = tempfile::tempdir().unwrap();
    let t0 = std::time::Instant::now();
    // Keys: 0 deployer, 1 guardian, 2 slasher and opener, 3 team, 4 investors, 5-9 annotators.
    let Some((mut chain, keys)) = Chain::start(embedded, dir.path().join("chain"), 10) else {
        return;
    };
    let validators: Vec<MemberKey> = (0..5).map(|_| MemberKey::generate()).collect();
    let (deployment, config) = chain
        .deploy_dao(
            &keys,
            &format!(
                "[settlement]\nvalidators = {}\nquorum = 3\nvalidator_min_stake_tokens = 0\n\
                 [annotations]\nopener = \"{}\"\n",
                address_list(&validators),
                keys[2].address()
            ),
        )
        .await;
    let dao_json = dir.path().join("dao.json");
    deployment.save(&dao_json).unwrap();

    // Five annotators stake the annotator minimum; each has a key file.
    let team = chain.dao(&keys[3]);
    let min = tokens(config.staking.annotator_min_tokens);
    let annotators: Vec<MemberKey> = keys[5..10].to_vec();
    let mut key_files = Vec::new();
    for (i, k) in annotators.iter().enumerate() {
        chain.fund_and_stake(&team, k, Role::Annotator, min).await;
        let path = dir.path().join(format!("annotator-{i}.key"));
        fl_node::write_key_file(k, &path).unwrap();
        key_files.push(path);
    }

    let store = dir.path().join("content");
    let cli = Cli {
        chain: &chain,
        dao_json,
        store: store.clone(),
        db: format!(
            "sqlite://{}?mode=rwc",
            dir.path().join("index.db").display()
        ),
    };

    // Two contributors submit five decided proposals of the shipped corpus each.
    let corpus = proposals::load_shipped().unwrap();
    let picked: Vec<Proposal> = corpus
        .proposals
        .iter()
        .filter(|p| p.label != Outcome::Open && p.text.len() < 8_000)
        .step_by(97)
        .take(2 * PROPOSALS_EACH)
        .cloned()
        .collect();
    let mut truth_of: BTreeMap<ContentHash, (u8, u8, u8, u8)> = BTreeMap::new();
    for (c, chunk) in picked.chunks(PROPOSALS_EACH).enumerate() {
        let file = dir.path().join(format!("proposals-{c}.jsonl"));
        let lines: Vec<String> = chunk
            .iter()
            .map(|p| serde_json::to_string(p).unwrap())
            .collect();
        std::fs::write(&file, lines.join("\n")).unwrap();
        let out = cli.ok(&key_files[c], "add", &["--input", file.to_str().unwrap()]);
        let cids: Vec<ContentHash> = out
            .lines()
            .filter_map(|l| ContentHash::from_cid_str(l.trim()).ok())
            .collect();
        assert_eq!(cids.len(), PROPOSALS_EACH, "{out}");
        // The CIDs are printed in digest order; match them to proposals by the stored records.
        let content = ContentStore::open(&store).unwrap();
        for cid in cids {
            let fl_client::contribute::ContributedRecord::Proposal(r) = content.get(&cid).unwrap()
            else {
                panic!("not a proposal")
            };
            let p = chunk
                .iter()
                .find(|p| p.id == r.body().proposal_id && p.community == r.body().community)
                .unwrap();
            truth_of.insert(cid, truth(p));
        }
    }
    let items: Vec<ContentHash> = truth_of.keys().copied().collect();

    // Every annotator joins; the opener opens the epoch on the ten proposals.
    for k in &key_files {
        cli.ok(k, "join", &["--epoch", "1"]);
    }
    let again = cli.refused(&key_files[0], "join", &["--epoch", "1"]);
    assert!(again.contains("joined epoch 1 already"), "{again}");
    let batch = RecordBatch::new(
        &items
            .iter()
            .map(|c| fl_db::B256::from(*c.as_bytes()))
            .collect::<Vec<_>>(),
    )
    .unwrap();
    let opener = chain.dao(&keys[2]);
    opener.open_annotation_epoch(EPOCH, &batch).await.unwrap();
    opener.advance_time(1).await.unwrap();
    opener.draw_annotation_seed(EPOCH).await.unwrap();
    // Handles on an embedded chain are made afresh after every process.
    let reader = || chain.dao(&keys[0]);
    let seed = reader().annotation_seed(EPOCH).await.unwrap();
    let pool: Vec<Address> = annotators.iter().map(MemberKey::address).collect();
    let assignment =
        contrib::Assignment::new(contrib::AssignmentSeed(seed.0), &items, &pool, 3).unwrap();

    // Each annotator lists its items: contrib's assignment, as the chain confirms it.
    let mut assigned: Vec<Vec<ContentHash>> = Vec::new();
    for (i, k) in key_files.iter().enumerate() {
        let out = cli.ok(k, "assigned", &["--epoch", "1"]);
        let listed: Vec<ContentHash> = out
            .lines()
            .filter_map(|l| ContentHash::from_cid_str(l.split('\t').next()?).ok())
            .collect();
        assert_eq!(listed, assignment.items_of(&pool[i]), "{out}");
        assert!(
            out.lines()
                .filter(|l| l.contains('\t'))
                .all(|l| l.contains("\topen\t"))
        );
        assigned.push(listed);
    }
    assert!(assigned[ADVERSARY].len() >= 2, "{assigned:?}");

    // Hostile: an annotation of an item not assigned to this annotator refuses the whole file.
    let (victim, stranger) = (0..ANNOTATORS)
        .find_map(|i| {
            items
                .iter()
                .find(|c| !assigned[i].contains(c))
                .map(|c| (i, *c))
        })
        .unwrap();
    let labels_of = |i: usize, extra: Option<ContentHash>| {
        let lines: Vec<String> = assigned[i]
            .iter()
            .chain(extra.as_ref())
            .map(|c| {
                let t = truth_of[c];
                label_line(c, if i == ADVERSARY { flipped(t) } else { t })
            })
            .collect();
        let file = dir.path().join(format!("labels-{i}.jsonl"));
        std::fs::write(&file, lines.join("\n")).unwrap();
        file
    };
    let bad = labels_of(victim, Some(stranger));
    let text = cli.refused(
        &key_files[victim],
        "annotate",
        &["--epoch", "1", "--input", bad.to_str().unwrap()],
    );
    assert!(
        text.contains("nothing committed") && text.contains("is not assigned to"),
        "{text}"
    );
    for item in &assigned[victim] {
        let d = fl_db::B256::from(*item.as_bytes());
        assert_eq!(
            reader()
                .annotation_commitment(EPOCH, d, pool[victim])
                .await
                .unwrap(),
            None
        );
    }

    // Everyone annotates its items: four answer the truth, the adversary flips every label.
    let mut label_files = Vec::new();
    for (i, k) in key_files.iter().enumerate() {
        let file = labels_of(i, None);
        if !assigned[i].is_empty() {
            cli.ok(
                k,
                "annotate",
                &["--epoch", "1", "--input", file.to_str().unwrap()],
            );
        }
        label_files.push(file);
    }
    let salts = |i: usize| {
        store
            .join("salts")
            .join(format!("{:#x}", pool[i]))
            .join("epoch-1.json")
    };
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt as _;
        let mode = std::fs::metadata(salts(0)).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o600);
    }
    // Hostile: a second submission is refused and the salts kept as they were.
    let kept = std::fs::read(salts(0)).unwrap();
    let text = cli.refused(
        &key_files[0],
        "annotate",
        &["--epoch", "1", "--input", label_files[0].to_str().unwrap()],
    );
    assert!(text.contains("already; the first stands"), "{text}");
    assert_eq!(std::fs::read(salts(0)).unwrap(), kept);
    // Hostile: a reveal before the commit deadline.
    let text = cli.refused(&key_files[0], "reveal", &["--epoch", "1"]);
    assert!(text.contains("open after the commit deadline"), "{text}");

    reader()
        .advance_time(config.annotations.commit_secs + 1)
        .await
        .unwrap();

    // Hostile: a salts file altered on disk: that reveal is refused, the others go through;
    // with the file restored, a second run reveals the rest.
    let tampered = (0..ANNOTATORS)
        .find(|&i| i != ADVERSARY && assigned[i].len() >= 2)
        .unwrap();
    let original = std::fs::read(salts(tampered)).unwrap();
    let mut entries: Vec<serde_json::Value> = serde_json::from_slice(&original).unwrap();
    entries[0]["salt"] = serde_json::Value::String(format!("0x{}", "ab".repeat(32)));
    std::fs::write(salts(tampered), serde_json::to_vec(&entries).unwrap()).unwrap();
    let text = cli.refused(&key_files[tampered], "reveal", &["--epoch", "1"]);
    assert!(
        text.contains("do not match the commitment on chain"),
        "{text}"
    );
    let first_item = fl_db::B256::from(
        *ContentHash::from_cid_str(entries[0]["item"].as_str().unwrap())
            .unwrap()
            .as_bytes(),
    );
    assert_eq!(
        reader()
            .annotation_commitment(EPOCH, first_item, pool[tampered])
            .await
            .unwrap()
            .map(|(_, revealed)| revealed),
        Some(false)
    );
    std::fs::write(salts(tampered), &original).unwrap();
    for (i, k) in key_files.iter().enumerate() {
        if !assigned[i].is_empty() {
            cli.ok(k, "reveal", &["--epoch", "1"]);
        }
    }
    let reveals = reader().annotation_reveals(EPOCH).await.unwrap();
    assert_eq!(reveals.len(), 3 * items.len());

    // The coordinator settles the epoch: two outcomes are gold.
    let content = ContentStore::open(&store).unwrap();
    let db = Store::open(&cli.db).await.unwrap();
    let gold: Vec<GoldLabel> = items
        .iter()
        .take(2)
        .map(|c| GoldLabel {
            item: *c,
            field: Field::Outcome,
            class: truth_of[c].0,
        })
        .collect();
    let settings = EpochSettings {
        policy: RewardPolicy {
            min_items_for_flag: 2,
            ..RewardPolicy::default()
        },
        ..EpochSettings::default()
    };
    let found = epoch_items(&reader(), &db, EPOCH).await.unwrap();
    assert_eq!(found, items);
    let outcome = settle_epoch(&reader(), &content, &db, EPOCH, &items, &gold, &settings)
        .await
        .unwrap();
    assert!(outcome.unavailable.is_empty());
    for c in &items {
        let (o, cat, q, r) = truth_of[c];
        let labels = [o, cat, q - 1, r];
        for (field, want) in Field::ALL.into_iter().zip(labels) {
            assert_eq!(
                outcome.field(field).unwrap().label(c),
                Some(want),
                "{field:?}"
            );
        }
    }
    assert_eq!(outcome.flags.len(), 1, "{:?}", outcome.flags);
    let flag = &outcome.flags[0];
    assert_eq!(flag.annotator, pool[ADVERSARY]);
    // Every outcome it gave is held against it (it flipped them all).
    let outcomes = flag
        .evidence
        .iter()
        .filter(|e| e.field == Field::Outcome)
        .count();
    assert_eq!(outcomes, assigned[ADVERSARY].len());
    println!("annotator | annotations | score | base | quality bonus | early bonus | total");
    for (q, (a, r)) in outcome.quality.iter().zip(&outcome.rewards) {
        assert_eq!(q.annotator, *a);
        let i = pool.iter().position(|p| p == a).unwrap();
        assert_eq!(q.annotations as usize, assigned[i].len());
        println!(
            "{a} | {} | {:.3} | {} | {} | {} | {}",
            q.annotations,
            q.score,
            r.base / TOKEN,
            r.quality_bonus / TOKEN,
            r.early_bonus / TOKEN,
            r.total / TOKEN
        );
        let expected = annotation_reward(
            &settings.policy,
            &AnnotatorEpoch {
                annotations: q.annotations,
                quality_bps: score_bps(q.score),
                contributor_rank: q.contributor_rank,
                flagged: i == ADVERSARY,
            },
        )
        .unwrap();
        assert_eq!(*r, expected);
        if i == ADVERSARY {
            assert_eq!(r.total, 0);
            assert!(q.score < 0.0);
        } else {
            // 10 per annotation, +50% above 0.8, +100% for the first 1,000 contributors.
            let per = if score_bps(q.score) > 8_000 { 25 } else { 20 };
            assert_eq!(r.total, per * TOKEN * u128::from(q.annotations), "{q:?}");
        }
    }

    // The validators sign a verdict over the flag's evidence; after the challenge window the
    // adversary's annotator stake falls by the governed fraction and it is jailed.
    let data = reader().data_settlement();
    let domain = data.settlement_domain().await.unwrap();
    let window = data.settlement_params().await.unwrap().challenge_window;
    let now = reader().now().await.unwrap();
    let verdict = VerdictMessage {
        member: pool[ADVERSARY],
        evidence: flag.evidence_hash(),
        fraction_bps: config.settlement.slash_bps,
        deadline: now + DAY,
    };
    let sigs: Vec<_> = validators[..3]
        .iter()
        .map(|k| sign_verdict(&signer(k), &domain, &verdict).unwrap())
        .collect();
    let (_, id) = data.post_verdict(&verdict, &sigs).await.unwrap();
    reader().advance_time(window + 1).await.unwrap();
    data.execute_verdict(id).await.unwrap();
    let (stake, _, _) = reader()
        .position(pool[ADVERSARY], Role::Annotator)
        .await
        .unwrap();
    let slashed = min * U256::from(config.settlement.slash_bps) / U256::from(10_000u64);
    assert_eq!(stake, min - slashed);
    assert!(matches!(
        reader()
            .membership(pool[ADVERSARY], Role::Annotator)
            .await
            .unwrap(),
        Membership::Jailed { .. }
    ));

    // The validators sign the reward root; it is posted on the data settlement and claimed from
    // the command line.
    let tree = RewardTree::new(&outcome.reward_leaves()).unwrap();
    let now = reader().now().await.unwrap();
    let msg = RootMessage::of(EPOCH, &tree, now + window + 31 * DAY);
    let sigs: Vec<_> = validators[..3]
        .iter()
        .map(|k| sign_root(&signer(k), &domain, &msg).unwrap())
        .collect();
    data.post_root(&msg, &sigs).await.unwrap();
    reader().advance_time(window + 1).await.unwrap();
    let list = dir.path().join("rewards-1.json");
    std::fs::write(&list, outcome.reward_list_json()).unwrap();
    let list_arg = list.to_str().unwrap();
    drop(db);
    for (i, k) in key_files.iter().enumerate() {
        if i == ADVERSARY {
            let text = cli.refused(k, "rewards", &["--epoch", "1", "--claim", list_arg]);
            assert!(text.contains("has no reward in epoch 1"), "{text}");
            continue;
        }
        let before = reader().balance_of(pool[i]).await.unwrap();
        let out = cli.ok(k, "rewards", &["--epoch", "1", "--claim", list_arg]);
        assert!(out.contains("quality of"), "{out}");
        assert_eq!(
            reader().balance_of(pool[i]).await.unwrap(),
            before + tree.amount(pool[i]).unwrap()
        );
    }
    let shown = cli.ok(&key_files[0], "rewards", &["--epoch", "1"]);
    assert!(shown.contains("claimable from"), "{shown}");

    // A fresh content store holding only the registered CARs, fresh indexes: rebuilt from the
    // chain, equal to what the command line and the coordinator wrote.
    let db = Store::open(&cli.db).await.unwrap();
    let original = dump(&db, &items).await;
    let fresh_dir = dir.path().join("fresh");
    let fresh = ContentStore::open(&fresh_dir).unwrap();
    for b in reader().registered_batches().await.unwrap() {
        let car = content.batch_car(&b.root).unwrap().unwrap();
        fresh.put_batch_car(&b.root, &car).unwrap();
    }
    for backend in [DbBackend::Sqlite, DbBackend::Postgres] {
        let test_db = TestDb::new(backend).await;
        let rebuilt = Store::open(&test_db.url).await.unwrap();
        let report = rebuild_index(&reader(), &fresh, &rebuilt).await.unwrap();
        assert!(report.refused.is_empty(), "{:?}", report.refused);
        let found = epoch_items(&reader(), &rebuilt, EPOCH).await.unwrap();
        let again = settle_epoch(&reader(), &fresh, &rebuilt, EPOCH, &found, &gold, &settings)
            .await
            .unwrap();
        assert_eq!(again.rewards, outcome.rewards);
        assert_eq!(again.flags, outcome.flags);
        assert_eq!(dump(&rebuilt, &items).await, original, "{backend:?}");
    }
    for batch in db.batches().await.unwrap() {
        for r in db.batch_records(&batch.root).await.unwrap() {
            let cid = ContentHash::from_digest(r.cid.0);
            let bytes = content.raw(&cid).unwrap().unwrap();
            assert_eq!(fresh.raw(&cid).unwrap().unwrap(), bytes);
        }
    }
    eprintln!(
        "annotation epoch end to end ({}) in {:.1} s",
        if embedded { "embedded EVM" } else { "anvil" },
        t0.elapsed().as_secs_f64()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn contribute_an_annotation_epoch_end_to_end_on_the_embedded_evm() {
    epoch_end_to_end(true).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn contribute_an_annotation_epoch_end_to_end_on_anvil() {
    epoch_end_to_end(false).await;
}
