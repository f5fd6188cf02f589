//! Annotation consensus on the real governance-proposal corpus, with simulated annotators.
//!
//! The items are the corpus's 3,040 decided proposals, each contributed as a signed
//! [`ProposalRecord`]; their real outcome (accepted/rejected) and normalised kind (five
//! classes) are the gold standard. A pool of annotators of stated reliabilities (good, noisy,
//! spammers answering at random, adversaries flipping labels) is assigned 3 per item by
//! rendezvous hashing; each signs its annotation, commits, and reveals through a
//! [`CommitBook`]. Consensus by majority vote and by Dawid-Skene (with and without a hidden 5%
//! of gold items pinned) is scored against the real labels, over several replicates.
//! Replicate 0 also gives the quality ranking, the flags and the reward table.
//!
//! `--out DIR` writes every replicate's answers (`answers_<question>_<rep>.csv`: task, worker,
//! label), the real labels (`truth_<question>.csv`: task, label, gold) and our consensus
//! labels (`ours_<question>_<rep>.csv`) for `benches/crowdkit/run.sh`, which runs crowd-kit on
//! the same answers.
//!
//! ```text
//! cargo run -p contrib --example consensus -- [--replicates 5] [--seed 2026] [--out DIR]
//!     [--smoothing 1.0]
//! ```

use std::collections::{BTreeMap, BTreeSet};
use std::error::Error;
use std::path::PathBuf;
use std::time::Instant;

use contrib::consensus::{
    AnnotatorQuality, Answers, Consensus, DawidSkeneConfig, QualityConfig, annotator_quality,
    dawid_skene, majority_vote,
};
use contrib::rewards::{AnnotatorEpoch, TOKEN, epoch_score, score_bps};
use contrib::{
    AnnotationRecord, Assignment, AssignmentSeed, Category, CommitBook, Commitment, Field, Labels,
    Outcome, ProposalQuality, ProposalRecord, RewardPolicy, Risk, Salt, SignedRecord, Source,
    annotation_reward, flag_annotators,
};
use fl_client::data::proposals;
use fl_core::{Address, ContentHash, ContentHasher, MemberKey};
use rand::{RngExt, SeedableRng};
use rand_chacha::ChaCha8Rng;

/// Annotators per item.
const PER_ITEM: usize = 3;
/// Share of items that are hidden gold.
const GOLD_SHARE: f64 = 0.05;
/// The two questions with a real answer in the corpus.
const QUESTIONS: [Field; 2] = [Field::Outcome, Field::Category];

/// How a simulated annotator answers.
#[derive(Clone, Copy, Debug)]
enum Behaviour {
    /// Right with probability p, otherwise a uniformly drawn wrong class.
    Reliable(f64),
    /// Uniformly random, ignoring the item.
    Spammer,
    /// With probability p the "next" class (the other outcome; the next kind), else right.
    Adversary(f64),
}

impl Behaviour {
    fn answer(self, rng: &mut ChaCha8Rng, truth: u8, k: u8) -> u8 {
        match self {
            Behaviour::Reliable(p) if rng.random_bool(p) => truth,
            Behaviour::Reliable(_) => (truth + rng.random_range(1..k)) % k,
            Behaviour::Spammer => rng.random_range(0..k),
            Behaviour::Adversary(p) if rng.random_bool(p) => (truth + 1) % k,
            Behaviour::Adversary(_) => truth,
        }
    }

    fn describe(self) -> String {
        match self {
            Behaviour::Reliable(p) if p >= 0.85 => format!("good ({p})"),
            Behaviour::Reliable(p) => format!("noisy ({p})"),
            Behaviour::Spammer => "spammer (random)".into(),
            Behaviour::Adversary(p) => format!("adversary (flips {p})"),
        }
    }
}

/// The simulated pool: behaviour and contributor rank (order of first contribution).
fn pool() -> Vec<(Behaviour, u64)> {
    use Behaviour::*;
    let mut v = Vec::new();
    // Early good annotators, then late ones, so the table shows both bonuses.
    for i in 0..8 {
        v.push((Reliable(0.9), if i < 4 { i } else { 1_000 + i }));
    }
    for i in 0..6 {
        v.push((Reliable(0.7), 10 + i));
    }
    for i in 0..3 {
        v.push((Spammer, 1_100 + i));
    }
    for i in 0..3 {
        v.push((Adversary(0.8), 20 + i));
    }
    v
}

struct Args {
    replicates: u64,
    seed: u64,
    out: Option<PathBuf>,
    smoothing: f64,
}

fn args() -> Result<Args, Box<dyn Error>> {
    let mut a = Args {
        replicates: 5,
        seed: 2026,
        out: None,
        smoothing: DawidSkeneConfig::default().smoothing,
    };
    let mut it = std::env::args().skip(1);
    while let Some(flag) = it.next() {
        let mut value = || it.next().ok_or(format!("{flag} needs a value"));
        match flag.as_str() {
            "--replicates" => a.replicates = value()?.parse()?,
            "--seed" => a.seed = value()?.parse()?,
            "--out" => a.out = Some(value()?.into()),
            "--smoothing" => a.smoothing = value()?.parse()?,
            other => return Err(format!("unknown argument {other}").into()),
        }
    }
    Ok(a)
}

/// One item: its record's CID and its real answers.
struct Item {
    cid: ContentHash,
    truth: [u8; 2],
    gold: bool,
}

fn main() -> Result<(), Box<dyn Error>> {
    let args = args()?;
    let corpus = proposals::load_shipped()?;
    // The DAO's importer contributes the corpus as signed proposal records.
    let importer = MemberKey::from_hex(&format!("{:064x}", 0xDA0u64))?;
    let mut items = Vec::new();
    let mut refused = 0;
    for p in &corpus.proposals {
        let Some(outcome) = p.label.class() else {
            continue;
        };
        let record = ProposalRecord {
            contributor: importer.address(),
            community: p.community.clone(),
            proposal_id: p.id.clone(),
            title: p.title.clone(),
            text: p.text.clone(),
            created: p.created.clone(),
            licence: p.licence.clone(),
            source: Some(Source {
                repo: p.repo.clone(),
                commit: p.commit.clone(),
                path: p.path.clone(),
            }),
        };
        match SignedRecord::sign(record, &importer) {
            Ok(signed) => items.push(Item {
                cid: signed.cid(),
                truth: [outcome, p.kind().class()],
                gold: is_gold(&signed.cid()),
            }),
            Err(e) => {
                refused += 1;
                eprintln!("{}: refused: {e}", p.key());
            }
        }
    }
    let by_cid: BTreeMap<ContentHash, &Item> = items.iter().map(|i| (i.cid, i)).collect();
    let pool = pool();
    let keys: Vec<MemberKey> = (0..pool.len() as u64)
        .map(|j| MemberKey::from_hex(&format!("{:064x}", 0xA000 + j)))
        .collect::<Result<_, _>>()?;
    let addresses: Vec<Address> = keys.iter().map(MemberKey::address).collect();
    println!(
        "{} decided proposals as signed records ({} refused), {} hidden gold; {} annotators, {} per item; {} replicates from seed {}; Dawid-Skene smoothing {}",
        items.len(),
        refused,
        items.iter().filter(|i| i.gold).count(),
        pool.len(),
        PER_ITEM,
        args.replicates,
        args.seed,
        args.smoothing
    );
    if let Some(out) = &args.out {
        std::fs::create_dir_all(out)?;
        for (q, field) in QUESTIONS.iter().enumerate() {
            let mut w = csv::Writer::from_path(out.join(format!("truth_{}.csv", field.name())))?;
            w.write_record(["task", "label", "gold"])?;
            for i in &items {
                w.write_record([
                    i.cid.to_string(),
                    i.truth[q].to_string(),
                    u8::from(i.gold).to_string(),
                ])?;
            }
            w.flush()?;
        }
    }

    let mut rows = Vec::new();
    // Replicate 0's quality per annotator (pool index) and question, and who was flagged.
    let mut qualities: BTreeMap<usize, Vec<AnnotatorQuality>> = BTreeMap::new();
    let mut flagged = BTreeSet::new();
    for rep in 0..args.replicates {
        let epoch = Epoch::run(&args, rep, &items, &keys, &pool)?;
        for (q, field) in QUESTIONS.iter().enumerate() {
            let (answers, index) = Answers::from_annotations(*field, epoch.book.revealed())?;
            let truth: Vec<u8> = index.items.iter().map(|c| by_cid[c].truth[q]).collect();
            let gold: Vec<Option<u8>> = index
                .items
                .iter()
                .zip(&truth)
                .map(|(c, t)| by_cid[c].gold.then_some(*t))
                .collect();
            let config = DawidSkeneConfig {
                smoothing: args.smoothing,
                ..DawidSkeneConfig::default()
            };
            let mv = majority_vote(&answers, &config)?;
            let started = Instant::now();
            let ds = dawid_skene(&answers, None, &config)?;
            let ds_seconds = started.elapsed().as_secs_f64();
            let ds_gold = dawid_skene(&answers, Some(&gold), &config)?;
            rows.push(Row {
                field: *field,
                rep,
                mv: accuracy(&mv, &truth),
                ds: accuracy(&ds, &truth),
                ds_gold: accuracy(&ds_gold, &truth),
                iterations: ds.iterations,
                ds_seconds,
            });
            if let Some(out) = &args.out {
                export(out, *field, rep, &answers, &index, &[&mv, &ds, &ds_gold])?;
            }
            if rep == 0 {
                let quality =
                    annotator_quality(&answers, &ds_gold, Some(&gold), &QualityConfig::default())?;
                let flags = flag_annotators(
                    &RewardPolicy::default(),
                    &answers,
                    &ds_gold,
                    &quality,
                    Some(&gold),
                );
                let by_address: Vec<usize> = index
                    .annotators
                    .iter()
                    .map(|a| addresses.iter().position(|x| x == a).unwrap_or(usize::MAX))
                    .collect();
                epoch_report(*field, &quality, &flags, &by_address, &pool);
                for q in &quality {
                    qualities
                        .entry(by_address[q.annotator])
                        .or_default()
                        .push(q.clone());
                }
                flagged.extend(flags.iter().map(|f| by_address[f.quality.annotator]));
            }
        }
        if rep == 0 {
            rewards_table(&qualities, &flagged, &pool)?;
        }
    }
    summary(&rows);
    Ok(())
}

/// Whether an item is one of the hidden gold items (by a hash of its address: about 5%).
fn is_gold(cid: &ContentHash) -> bool {
    let mut h = ContentHasher::new();
    h.update(b"daofl/example/gold");
    h.update(cid.as_bytes());
    let d = h.finish();
    f64::from(u16::from_be_bytes([d.as_bytes()[0], d.as_bytes()[1]])) < GOLD_SHARE * 65_536.0
}

/// One replicate: an epoch's assignment, signed annotations, commits and reveals.
struct Epoch {
    book: CommitBook,
}

impl Epoch {
    fn run(
        args: &Args,
        rep: u64,
        items: &[Item],
        keys: &[MemberKey],
        pool: &[(Behaviour, u64)],
    ) -> Result<Self, Box<dyn Error>> {
        // The epoch's public seed stands in for a block hash.
        let seed = AssignmentSeed(
            *ContentHash::of(&[args.seed.to_be_bytes(), rep.to_be_bytes()].concat()).as_bytes(),
        );
        let cids: Vec<ContentHash> = items.iter().map(|i| i.cid).collect();
        let addresses: Vec<Address> = keys.iter().map(MemberKey::address).collect();
        let assignment = Assignment::new(seed, &cids, &addresses, PER_ITEM)?;
        let mut book = CommitBook::new(rep, assignment.clone());
        let mut rng = ChaCha8Rng::seed_from_u64(args.seed ^ (rep << 32));
        let mut reveals = Vec::new();
        for item in items {
            for annotator in assignment.annotators(&item.cid).unwrap_or_default() {
                let j = addresses
                    .iter()
                    .position(|a| a == annotator)
                    .ok_or("unknown annotator")?;
                let behaviour = pool[j].0;
                let outcome = behaviour.answer(&mut rng, item.truth[0], 2);
                let category = behaviour.answer(&mut rng, item.truth[1], 5);
                // Quality and risk have no ground truth in the corpus: filled at random, not
                // scored.
                let labels = Labels {
                    outcome: if outcome == 0 {
                        Outcome::Accepted
                    } else {
                        Outcome::Rejected
                    },
                    category: Category::ALL[usize::from(category)],
                    quality: ProposalQuality::new(rng.random_range(1..=5)).ok_or("quality")?,
                    risk: [Risk::Low, Risk::Medium, Risk::High][rng.random_range(0..3)],
                };
                let body = AnnotationRecord {
                    annotator: *annotator,
                    item: item.cid,
                    epoch: rep,
                    labels,
                };
                let record = SignedRecord::sign(body, &keys[j])?;
                let salt = Salt::random();
                book.handle_commit(*annotator, item.cid, Commitment::to(&record, &salt))?;
                reveals.push((record.cid(), record.bytes().to_vec(), salt));
            }
        }
        book.close_commits();
        // Reveals come back from the content store as bytes: checked against their CID and
        // signature before the book takes them.
        for (cid, bytes, salt) in reveals {
            book.handle_reveal(SignedRecord::decode_addressed(&cid, &bytes)?, &salt)?;
        }
        Ok(Self { book })
    }
}

struct Row {
    field: Field,
    rep: u64,
    mv: f64,
    ds: f64,
    ds_gold: f64,
    iterations: usize,
    ds_seconds: f64,
}

fn accuracy(c: &Consensus, truth: &[u8]) -> f64 {
    let right = truth
        .iter()
        .zip(&c.labels)
        .filter(|(t, l)| Some(**t) == **l)
        .count();
    right as f64 / truth.len() as f64
}

fn export(
    out: &std::path::Path,
    field: Field,
    rep: u64,
    answers: &Answers,
    index: &contrib::consensus::AnswerIndex,
    ours: &[&Consensus; 3],
) -> Result<(), Box<dyn Error>> {
    let mut w = csv::Writer::from_path(out.join(format!("answers_{}_{rep}.csv", field.name())))?;
    w.write_record(["task", "worker", "label"])?;
    for a in answers.answers() {
        w.write_record([
            index.items[a.item].to_string(),
            index.annotators[a.annotator].to_string(),
            a.class.to_string(),
        ])?;
    }
    w.flush()?;
    let mut w = csv::Writer::from_path(out.join(format!("ours_{}_{rep}.csv", field.name())))?;
    w.write_record(["task", "mv", "ds", "ds_gold"])?;
    let label = |c: &Consensus, i: usize| c.labels[i].map_or(String::new(), |l| l.to_string());
    for (i, cid) in index.items.iter().enumerate() {
        w.write_record([
            cid.to_string(),
            label(ours[0], i),
            label(ours[1], i),
            label(ours[2], i),
        ])?;
    }
    w.flush()?;
    Ok(())
}

fn epoch_report(
    field: Field,
    quality: &[AnnotatorQuality],
    flags: &[contrib::rewards::Flag],
    pool_index: &[usize],
    pool: &[(Behaviour, u64)],
) {
    println!(
        "\n### Replicate 0, question `{}`: annotators by quality (Dawid-Skene with gold)\n",
        field.name()
    );
    println!(
        "| rank | annotator | behaviour | answers | agreement | gold right | kappa (model) | kappa (gold) | score | flagged (evidence) |"
    );
    println!("|---|---|---|---|---|---|---|---|---|---|");
    let mut order: Vec<&AnnotatorQuality> = quality.iter().collect();
    order.sort_by(|a, b| b.score.total_cmp(&a.score));
    for (rank, q) in order.iter().enumerate() {
        let j = pool_index[q.annotator];
        let flag = flags
            .iter()
            .find(|f| f.quality.annotator == q.annotator)
            .map_or("".to_string(), |f| {
                format!("yes ({} signed answers)", f.evidence.len())
            });
        println!(
            "| {} | a{j:02} | {} | {} | {:.3} | {}/{} | {:.3} | {} | {:.3} | {flag} |",
            rank + 1,
            pool[j].0.describe(),
            q.answers,
            q.agreement,
            q.gold_correct,
            q.gold_answers,
            q.kappa,
            q.gold_kappa.map_or("-".into(), |k| format!("{k:.3}")),
            q.score,
        );
    }
}

fn rewards_table(
    qualities: &BTreeMap<usize, Vec<AnnotatorQuality>>,
    flagged: &BTreeSet<usize>,
    pool: &[(Behaviour, u64)],
) -> Result<(), Box<dyn Error>> {
    let policy = RewardPolicy::default();
    println!(
        "\n### Replicate 0: rewards (default policy: 10 $PROPOSAL per annotation, +50% above 0.8, +100% for ranks below 1,000; flagged: nothing)\n"
    );
    println!(
        "| annotator | behaviour | rank | annotations | epoch score | flagged | base | quality bonus | early bonus | total $PROPOSAL |"
    );
    println!("|---|---|---|---|---|---|---|---|---|---|");
    for (j, per_question) in qualities {
        let refs: Vec<&AnnotatorQuality> = per_question.iter().collect();
        let score = epoch_score(&refs).unwrap_or(f64::NAN);
        let annotations = per_question.first().map_or(0, |q| q.answers) as u64;
        let flagged = flagged.contains(j);
        let e = AnnotatorEpoch {
            annotations,
            quality_bps: score_bps(score),
            contributor_rank: pool[*j].1,
            flagged,
        };
        let r = annotation_reward(&policy, &e)?;
        let t = |v: u128| format!("{:.1}", v as f64 / TOKEN as f64);
        println!(
            "| a{j:02} | {} | {} | {annotations} | {score:.3} | {} | {} | {} | {} | {} |",
            pool[*j].0.describe(),
            pool[*j].1,
            if flagged { "yes" } else { "no" },
            t(r.base),
            t(r.quality_bonus),
            t(r.early_bonus),
            t(r.total)
        );
    }
    Ok(())
}

fn summary(rows: &[Row]) {
    println!("\n### Accuracy against the real labels, every replicate\n");
    println!(
        "| question | replicate | majority vote | Dawid-Skene | Dawid-Skene + 5% gold | EM iterations | DS seconds |"
    );
    println!("|---|---|---|---|---|---|---|");
    for r in rows {
        println!(
            "| {} | {} | {:.4} | {:.4} | {:.4} | {} | {:.3} |",
            r.field.name(),
            r.rep,
            r.mv,
            r.ds,
            r.ds_gold,
            r.iterations,
            r.ds_seconds
        );
    }
    println!("\n### Mean ± sd over replicates\n");
    println!("| question | majority vote | Dawid-Skene | Dawid-Skene + 5% gold | DS - MV |");
    println!("|---|---|---|---|---|");
    for field in QUESTIONS {
        let of = |f: fn(&Row) -> f64| {
            let v: Vec<f64> = rows.iter().filter(|r| r.field == field).map(f).collect();
            mean_sd(&v)
        };
        let ((mv, mv_sd), (ds, ds_sd), (dg, dg_sd), (d, d_sd)) = (
            of(|r| r.mv),
            of(|r| r.ds),
            of(|r| r.ds_gold),
            of(|r| r.ds - r.mv),
        );
        println!(
            "| {} | {mv:.4} ± {mv_sd:.4} | {ds:.4} ± {ds_sd:.4} | {dg:.4} ± {dg_sd:.4} | {d:+.4} ± {d_sd:.4} |",
            field.name()
        );
    }
}

fn mean_sd(v: &[f64]) -> (f64, f64) {
    let n = v.len() as f64;
    let mean = v.iter().sum::<f64>() / n;
    let var = v.iter().map(|x| (x - mean).powi(2)).sum::<f64>() / (n - 1.0).max(1.0);
    (mean, var.sqrt())
}
