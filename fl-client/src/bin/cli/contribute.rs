//! `fl-client contribute`: a contributor's and an annotator's steps, each a thin call into
//! [`fl_client::contribute`] and the DAO's data contracts.
//!
//! Every step takes the DAO (`--dao` with `--rpc-url` or `--chain-state`), the member key, the
//! content store (`--store`) and the index (`--db`). Annotations are committed with fresh salts
//! kept in `<store>/salts/<address>/epoch-<E>.json` (mode 0600, written before each commit is
//! sent) so `reveal` works after a restart.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use contrib::{
    AnnotationRecord, Category, Commitment, Labels, Outcome, ProposalQuality, ProposalRecord, Risk,
    Salt, SignedRecord, Source,
};
use dao::chain_anchor::alloy::primitives::B256;
use dao::{AnnotationRefusal, Dao};
use fl_client::contribute::epoch::{epoch_assignment, epoch_items};
use fl_client::contribute::{
    ContentStore, ContributedRecord, Kubo, export_batch, index_batch, rebuild_index,
};
use fl_core::{ContentHash, MemberKey};

use super::{ChainArgs, DaoView, Result};

/// Largest labels or item-list file read.
const MAX_INPUT_BYTES: u64 = 4 << 20;

/// Where a step finds the DAO, the key, the content store and the index.
#[derive(Debug, clap::Args)]
pub(crate) struct Common {
    /// The DAO deployment file (`dao.json`).
    #[arg(long)]
    dao: PathBuf,
    #[command(flatten)]
    chain: ChainArgs,
    /// This member's key file (it signs the records and sends the transactions).
    #[arg(long, short, env = "DAOFL_KEY")]
    key: PathBuf,
    /// The content store: records, batch CARs and this member's salts.
    #[arg(long)]
    store: PathBuf,
    /// The index database (`sqlite://index.db?mode=rwc` or a PostgreSQL URL).
    #[arg(long, env = "DAOFL_DB")]
    db: String,
}

/// `fl-client contribute`'s steps.
#[derive(Debug, clap::Subcommand)]
pub(crate) enum ContributeStep {
    /// Sign proposals (corpus-format JSON lines: `community`, `id`, `title`, `text`, `licence`,
    /// `repo`, `commit`, `path`, ...; gzip or plain), store them, export the batch as a CAR,
    /// register it on chain and index it.
    Add {
        #[command(flatten)]
        common: Common,
        /// The proposals.
        #[arg(long)]
        input: PathBuf,
        /// Also publish the CAR to this IPFS node (Kubo RPC API, e.g. http://127.0.0.1:5001).
        #[arg(long)]
        kubo: Option<String>,
        /// Where the batch's content lives, as registered (default `car:<root>`).
        #[arg(long)]
        location: Option<String>,
    },
    /// Rebuild the index from the chain's registered batches and the content store; with
    /// `--epoch`, also the epoch's assignments, commitments and reveals.
    Sync {
        #[command(flatten)]
        common: Common,
        /// An annotation epoch to index.
        #[arg(long)]
        epoch: Option<u64>,
    },
    /// Join an annotation epoch's pool (staked annotators, before the epoch opens).
    Join {
        #[command(flatten)]
        common: Common,
        /// The epoch.
        #[arg(long)]
        epoch: u64,
    },
    /// List the items assigned to this key in an opened epoch: CID, state and title.
    Assigned {
        #[command(flatten)]
        common: Common,
        /// The epoch.
        #[arg(long)]
        epoch: u64,
        /// The epoch's item CIDs, one a line (default: found among the indexed proposals).
        #[arg(long)]
        items: Option<PathBuf>,
    },
    /// Sign one annotation per line (`{"item": CID, "outcome", "category", "quality",
    /// "risk"}`) and commit each on chain. The whole file is checked first: nothing is sent if
    /// a line is refused.
    Annotate {
        #[command(flatten)]
        common: Common,
        /// The epoch.
        #[arg(long)]
        epoch: u64,
        /// The labels, JSON lines.
        #[arg(long)]
        input: PathBuf,
        /// The epoch's item CIDs, one a line (default: found among the indexed proposals).
        #[arg(long)]
        items: Option<PathBuf>,
    },
    /// Reveal every annotation committed from this store (after the commit deadline), store the
    /// records and register them as a batch.
    Reveal {
        #[command(flatten)]
        common: Common,
        /// The epoch.
        #[arg(long)]
        epoch: u64,
        /// Also publish the annotations' CAR to this IPFS node.
        #[arg(long)]
        kubo: Option<String>,
    },
    /// Show an epoch's data-settlement rewards; with `--claim`, claim this key's leaf.
    Rewards {
        #[command(flatten)]
        common: Common,
        /// The epoch.
        #[arg(long)]
        epoch: u64,
        /// The reward list the validators signed (`[{"account", "amount"}]`).
        #[arg(long)]
        claim: Option<PathBuf>,
    },
}

/// What every step opens.
struct Session {
    key: MemberKey,
    dao: Dao,
    content: ContentStore,
    db: fl_db::Store,
}

async fn open(common: &Common) -> Result<Session> {
    let key = fl_node::read_key_file(&common.key)?;
    let view = DaoView {
        deployment: dao::DaoDeployment::load(&common.dao)?,
        federation: String::new(),
        rpc_url: common.chain.rpc_url.clone(),
        chain_state: common.chain.chain_state.clone(),
    };
    Ok(Session {
        dao: view.open_as(&key)?,
        content: ContentStore::open(&common.store)?,
        db: fl_db::Store::open(&common.db).await?,
        key,
    })
}

pub(crate) fn contribute(step: ContributeStep) -> Result<ExitCode> {
    tokio::runtime::Runtime::new()?.block_on(async {
        match step {
            ContributeStep::Add {
                common,
                input,
                kubo,
                location,
            } => add(&open(&common).await?, &input, kubo, location).await,
            ContributeStep::Sync { common, epoch } => sync(&open(&common).await?, epoch).await,
            ContributeStep::Join { common, epoch } => {
                let s = open(&common).await?;
                let r = s
                    .dao
                    .join_annotation_epoch(epoch)
                    .await
                    .map_err(|e| refused(e, "joining"))?;
                println!(
                    "{} joined annotation epoch {epoch} (gas {})",
                    s.key.address(),
                    r.gas_used
                );
                Ok(ExitCode::SUCCESS)
            }
            ContributeStep::Assigned {
                common,
                epoch,
                items,
            } => assigned(&open(&common).await?, epoch, items.as_deref()).await,
            ContributeStep::Annotate {
                common,
                epoch,
                input,
                items,
            } => annotate(&open(&common).await?, epoch, &input, items.as_deref()).await,
            ContributeStep::Reveal {
                common,
                epoch,
                kubo,
            } => reveal(&open(&common).await?, epoch, kubo).await,
            ContributeStep::Rewards {
                common,
                epoch,
                claim,
            } => rewards(&open(&common).await?, epoch, claim.as_deref()).await,
        }
    })
}

/// A chain error in words: the AnnotationBook's refusals by name and meaning.
fn refused(e: dao::Error, doing: &str) -> Box<dyn std::error::Error + Send + Sync> {
    use AnnotationRefusal as R;
    let Some(r) = AnnotationRefusal::of(&e) else {
        return format!("{doing}: {e}").into();
    };
    let why = match r {
        R::EpochAlreadyOpen { epoch } => {
            format!("epoch {epoch} is open already: joining and opening are over")
        }
        R::EpochNotOpen { epoch } => format!("epoch {epoch} is not open"),
        R::AlreadyJoined { epoch } => format!("this key joined epoch {epoch} already"),
        R::PoolFull { epoch } => format!("the pool of epoch {epoch} is full"),
        R::PoolTooSmall { pool, per_item } => {
            format!("a pool of {pool} is too small for {per_item} annotators per item")
        }
        R::InvalidItems => "no items".into(),
        R::NotAnnotator { account } => {
            format!("{account} is not staked as an annotator (at least the minimum), or is jailed")
        }
        R::ItemNotInEpoch { item } => format!("item {} is not in the epoch", cid_of(item)),
        R::SeedNotReady { epoch } => {
            format!("the seed of epoch {epoch} is not drawn yet: wait one block")
        }
        R::NotAssigned { item, annotator } => {
            format!("item {} is not assigned to {annotator}", cid_of(item))
        }
        R::DoubleCommit { item, annotator } => format!(
            "{annotator} committed an annotation of item {} already; the first stands",
            cid_of(item)
        ),
        R::CommitmentReused => "this commitment was used already (a copied commitment)".into(),
        R::ZeroCommitment => "a zero commitment".into(),
        R::CommitPhaseClosed { deadline } => format!("commits closed at {deadline}"),
        R::RevealTooEarly { commit_deadline } => {
            format!("reveals open after the commit deadline {commit_deadline}")
        }
        R::RevealPhaseClosed { deadline } => format!("reveals closed at {deadline}"),
        R::NotCommitted { item, annotator } => {
            format!("{annotator} never committed for item {}", cid_of(item))
        }
        R::RevealMismatch { item, annotator } => format!(
            "the annotation and salt of {annotator} for item {} do not match its commitment",
            cid_of(item)
        ),
        R::AlreadyRevealed { item, annotator } => {
            format!("{annotator} revealed for item {} already", cid_of(item))
        }
        R::InvalidParams => "parameters out of range".into(),
        _ => format!("{r:?}"),
    };
    format!("{doing}: refused by the AnnotationBook: {why}").into()
}

fn digest(cid: &ContentHash) -> B256 {
    B256::from(*cid.as_bytes())
}

fn cid_of(d: B256) -> ContentHash {
    ContentHash::from_digest(d.0)
}

/// Reads a small text file, refusing one over [`MAX_INPUT_BYTES`].
fn read_small(path: &Path) -> Result<String> {
    let len = std::fs::metadata(path)
        .map_err(|e| format!("cannot read {}: {e}", path.display()))?
        .len();
    if len > MAX_INPUT_BYTES {
        return Err(format!("{} is over {MAX_INPUT_BYTES} bytes", path.display()).into());
    }
    std::fs::read_to_string(path).map_err(|e| format!("cannot read {}: {e}", path.display()).into())
}

async fn add(
    s: &Session,
    input: &Path,
    kubo: Option<String>,
    location: Option<String>,
) -> Result<ExitCode> {
    let corpus = fl_client::data::proposals::load(input)?;
    let me = s.key.address();
    let mut records = Vec::new();
    for p in corpus.proposals {
        let record = SignedRecord::sign(
            ProposalRecord {
                contributor: me,
                community: p.community,
                proposal_id: p.id.clone(),
                title: p.title,
                text: p.text,
                created: p.created,
                licence: p.licence,
                source: Some(Source {
                    repo: p.repo,
                    commit: p.commit,
                    path: p.path,
                }),
            },
            &s.key,
        )
        .map_err(|e| format!("proposal {}: {e}", p.id))?;
        records.push(ContributedRecord::from(record));
    }
    register(s, &records, kubo, location, "proposals").await
}

/// Stores `records`, exports their CAR, registers the batch (unless it is registered already)
/// and indexes it (unless indexed already).
async fn register(
    s: &Session,
    records: &[ContributedRecord],
    kubo: Option<String>,
    location: Option<String>,
    what: &str,
) -> Result<ExitCode> {
    for r in records {
        s.content.put_record(r)?;
    }
    let (batch, car) = export_batch(records)?;
    let root = batch.root();
    s.content.put_batch_car(&root, &car)?;
    if let Some(api) = kubo {
        let roots = Kubo::new(&api).dag_import(&car).await?;
        eprintln!("published {} blocks to {api}", roots.len());
    }
    if s.dao.data_batch(root).await?.is_none() {
        let location = location.unwrap_or_else(|| format!("car:{root:#x}"));
        s.dao
            .register_batch(&batch, &location)
            .await
            .map_err(|e| format!("registering the batch: {e}"))?;
    } else {
        eprintln!("batch {root:#x} is registered already");
    }
    let on_chain = s
        .dao
        .registered_batches()
        .await?
        .into_iter()
        .find(|b| b.root == root)
        .ok_or("the registered batch is not among the registry's events")?;
    if s.db.batch(&root).await?.is_none() {
        index_batch(&s.db, &on_chain, records).await?;
    }
    println!(
        "batch {root:#x} (index {}): {} {what} registered and indexed",
        on_chain.index,
        batch.len()
    );
    for r in records {
        println!("{}", r.cid());
    }
    Ok(ExitCode::SUCCESS)
}

async fn sync(s: &Session, epoch: Option<u64>) -> Result<ExitCode> {
    let report = rebuild_index(&s.dao, &s.content, &s.db).await?;
    println!(
        "{} batches indexed, {} already, {} refused",
        report.indexed.len(),
        report.already.len(),
        report.refused.len()
    );
    for (root, why) in &report.refused {
        eprintln!("batch {root:#x} refused: {why}");
    }
    if let Some(epoch) = epoch {
        let items = epoch_items(&s.dao, &s.db, epoch).await?;
        fl_client::contribute::epoch::index_epoch(&s.dao, &s.db, epoch, &items).await?;
        println!("epoch {epoch}: {} items indexed", items.len());
    }
    Ok(ExitCode::SUCCESS)
}

/// The epoch's items: the file given (one CID a line) or those found in the index.
async fn items_of(s: &Session, epoch: u64, file: Option<&Path>) -> Result<Vec<ContentHash>> {
    match file {
        None => Ok(epoch_items(&s.dao, &s.db, epoch).await?),
        Some(path) => {
            let text = read_small(path)?;
            let items = text
                .lines()
                .map(str::trim)
                .filter(|l| !l.is_empty())
                .map(|l| {
                    ContentHash::from_cid_str(l)
                        .map_err(|e| format!("{}: {l:?} is not a CID: {e}", path.display()))
                })
                .collect::<std::result::Result<Vec<_>, _>>()?;
            fl_client::contribute::epoch::check_items(&s.dao, epoch, &items).await?;
            Ok(items)
        }
    }
}

/// The items assigned to this key, by contrib's assignment, each confirmed on chain.
async fn my_items(s: &Session, epoch: u64, items: &[ContentHash]) -> Result<Vec<ContentHash>> {
    let me = s.key.address();
    let assignment = epoch_assignment(&s.dao, epoch, items).await?;
    let mine = assignment.items_of(&me);
    for item in &mine {
        if !s.dao.is_assigned_on_chain(epoch, digest(item), me).await? {
            return Err(format!(
                "item {item}: the assignment computed here and the AnnotationBook's disagree"
            )
            .into());
        }
    }
    Ok(mine)
}

async fn assigned(s: &Session, epoch: u64, items: Option<&Path>) -> Result<ExitCode> {
    let items = items_of(s, epoch, items).await?;
    let me = s.key.address();
    let mine = my_items(s, epoch, &items).await?;
    for item in &mine {
        let state = match s.dao.annotation_commitment(epoch, digest(item), me).await? {
            None => "open",
            Some((_, false)) => "committed",
            Some((_, true)) => "revealed",
        };
        let title = match s.content.get(item) {
            Ok(ContributedRecord::Proposal(p)) => {
                format!(
                    "{}:{} {}",
                    p.body().community,
                    p.body().proposal_id,
                    p.body().title
                )
            }
            Ok(_) => "(not a proposal record)".into(),
            Err(e) => format!("({e})"),
        };
        println!("{item}\t{state}\t{title}");
    }
    eprintln!(
        "{} of {} items of epoch {epoch} assigned to {me}",
        mine.len(),
        items.len()
    );
    Ok(ExitCode::SUCCESS)
}

/// One line of a labels file.
#[derive(Debug, serde::Deserialize)]
#[serde(deny_unknown_fields)]
struct LabelLine {
    item: String,
    outcome: Outcome,
    category: Category,
    quality: u8,
    risk: Risk,
}

/// One committed annotation, as the salts file keeps it.
#[derive(Debug, Clone, serde::Serialize, serde::Deserialize)]
#[serde(deny_unknown_fields)]
struct Committed {
    /// The item's CID.
    item: String,
    /// The signed annotation record (its canonical JSON).
    record: String,
    /// The salt, hex.
    salt: String,
}

/// `<store>/salts/<address>/epoch-<E>.json`.
fn salts_path(s: &Session, epoch: u64) -> PathBuf {
    s.content
        .dir()
        .join("salts")
        .join(format!("{:#x}", s.key.address()))
        .join(format!("epoch-{epoch}.json"))
}

fn load_salts(path: &Path) -> Result<Vec<Committed>> {
    if !path.exists() {
        return Ok(Vec::new());
    }
    let text = read_small(path)?;
    serde_json::from_str(&text)
        .map_err(|e| format!("{} is not a salts file: {e}", path.display()).into())
}

/// Writes the salts file atomically, mode 0600 (its folder 0700).
fn save_salts(path: &Path, entries: &[Committed]) -> Result<()> {
    use std::io::Write as _;
    let dir = path.parent().ok_or("salts file without a folder")?;
    std::fs::create_dir_all(dir)?;
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt as _;
        std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o700))?;
    }
    let mut tmp = tempfile::NamedTempFile::new_in(dir)?;
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt as _;
        tmp.as_file()
            .set_permissions(std::fs::Permissions::from_mode(0o600))?;
    }
    tmp.write_all(&serde_json::to_vec_pretty(entries)?)?;
    tmp.as_file().sync_all()?;
    tmp.persist(path).map_err(|e| e.error)?;
    Ok(())
}

async fn annotate(s: &Session, epoch: u64, input: &Path, items: Option<&Path>) -> Result<ExitCode> {
    let me = s.key.address();
    let items = items_of(s, epoch, items).await?;
    let batch = fl_client::contribute::epoch::check_items(&s.dao, epoch, &items).await?;
    let mine: BTreeSet<ContentHash> = my_items(s, epoch, &items).await?.into_iter().collect();
    let path = salts_path(s, epoch);
    let mut committed = load_salts(&path)?;
    let done: BTreeSet<String> = committed.iter().map(|c| c.item.clone()).collect();

    // Every line checked before anything is sent.
    let text = read_small(input)?;
    let mut problems = Vec::new();
    let mut planned: Vec<AnnotationRecord> = Vec::new();
    let mut seen = BTreeSet::new();
    for (n, line) in text
        .lines()
        .enumerate()
        .filter(|(_, l)| !l.trim().is_empty())
    {
        let at = format!("{} line {}", input.display(), n + 1);
        let l: LabelLine = match serde_json::from_str(line) {
            Ok(l) => l,
            Err(e) => {
                problems.push(format!("{at}: {e}"));
                continue;
            }
        };
        let Ok(item) = ContentHash::from_cid_str(&l.item) else {
            problems.push(format!("{at}: {:?} is not a CID", l.item));
            continue;
        };
        let Some(quality) = ProposalQuality::new(l.quality) else {
            problems.push(format!("{at}: quality {} is not 1 to 5", l.quality));
            continue;
        };
        if !items.contains(&item) {
            problems.push(format!("{at}: item {item} is not in epoch {epoch}"));
        } else if !mine.contains(&item) {
            problems.push(format!(
                "{at}: item {item} is not assigned to {me} in epoch {epoch}"
            ));
        } else if !seen.insert(item) {
            problems.push(format!("{at}: item {item} appears twice in the file"));
        } else if done.contains(&item.to_string())
            || s.dao
                .annotation_commitment(epoch, digest(&item), me)
                .await?
                .is_some()
        {
            problems.push(format!(
                "{at}: {me} committed an annotation of item {item} already; the first stands"
            ));
        } else {
            planned.push(AnnotationRecord {
                annotator: me,
                item,
                epoch,
                labels: Labels {
                    outcome: l.outcome,
                    category: l.category,
                    quality,
                    risk: l.risk,
                },
            });
        }
    }
    if !problems.is_empty() {
        return Err(format!(
            "nothing committed; {} refused:\n  {}",
            if problems.len() == 1 {
                "a line was"
            } else {
                "lines were"
            },
            problems.join("\n  ")
        )
        .into());
    }
    let e = s
        .dao
        .annotation_epoch(epoch)
        .await?
        .ok_or("epoch not open")?;
    let now = s.dao.now().await?;
    if now > e.commit_deadline {
        return Err(format!("commits of epoch {epoch} closed at {}", e.commit_deadline).into());
    }

    for body in planned {
        let item = body.item;
        let record = SignedRecord::sign(body, &s.key)?;
        let salt = Salt::random();
        let commitment = Commitment::to(&record, &salt);
        // The salt is on disk before the commitment is on chain.
        committed.push(Committed {
            item: item.to_string(),
            record: String::from_utf8(record.bytes().to_vec())?,
            salt: B256::from(salt.0).to_string(),
        });
        save_salts(&path, &committed)?;
        if let Err(e) = s
            .dao
            .commit_annotation(epoch, &batch, digest(&item), B256::from(commitment.0))
            .await
        {
            committed.pop();
            save_salts(&path, &committed)?;
            return Err(refused(e, &format!("committing the annotation of {item}")));
        }
        s.db.add_commitment(&fl_db::data::CommitmentRecord {
            epoch,
            item: digest(&item),
            annotator: me,
            commitment: B256::from(commitment.0),
            revealed: None,
        })
        .await?;
        println!("committed {item}");
    }
    eprintln!("salts kept in {}", path.display());
    Ok(ExitCode::SUCCESS)
}

async fn reveal(s: &Session, epoch: u64, kubo: Option<String>) -> Result<ExitCode> {
    let me = s.key.address();
    let path = salts_path(s, epoch);
    let committed = load_salts(&path)?;
    if committed.is_empty() {
        return Err(format!("no annotation of epoch {epoch} was committed from this store").into());
    }
    let e = s
        .dao
        .annotation_epoch(epoch)
        .await?
        .ok_or("epoch not open")?;
    let now = s.dao.now().await?;
    if now <= e.commit_deadline {
        return Err(format!(
            "reveals of epoch {epoch} open after the commit deadline {} (now {now})",
            e.commit_deadline
        )
        .into());
    }
    let mut revealed = Vec::new();
    let mut problems = Vec::new();
    for c in &committed {
        let checked = (|| -> Result<(SignedRecord<AnnotationRecord>, Salt)> {
            let record = SignedRecord::<AnnotationRecord>::decode(c.record.as_bytes())?;
            let salt: B256 = c.salt.parse().map_err(|e| format!("salt: {e}"))?;
            if record.body().annotator != me || record.body().epoch != epoch {
                return Err("the record is not this key's annotation of this epoch".into());
            }
            Ok((record, Salt(salt.0)))
        })();
        let (record, salt) = match checked {
            Ok(v) => v,
            Err(why) => {
                problems.push(format!(
                    "item {}: {} is damaged: {why}",
                    c.item,
                    path.display()
                ));
                continue;
            }
        };
        let item = digest(&record.body().item);
        let commitment = Commitment::to(&record, &salt);
        match s.dao.annotation_commitment(epoch, item, me).await? {
            None => problems.push(format!(
                "item {}: no commitment on chain (the commit was never accepted)",
                c.item
            )),
            Some((on_chain, _)) if on_chain.0 != commitment.0 => problems.push(format!(
                "item {}: the record and salt in {} do not match the commitment on chain \
                 (the file was altered); not revealed",
                c.item,
                path.display()
            )),
            Some((_, true)) => revealed.push(record),
            Some((_, false)) => {
                if now > e.reveal_deadline {
                    problems.push(format!(
                        "item {}: reveals closed at {}",
                        c.item, e.reveal_deadline
                    ));
                    continue;
                }
                match s
                    .dao
                    .reveal_annotation(epoch, item, digest(&record.cid()), B256::from(salt.0))
                    .await
                {
                    Ok(_) => {
                        if let Err(e) =
                            s.db.record_reveal(epoch, &item, &me, &digest(&record.cid()))
                                .await
                        {
                            eprintln!("index: {e} (run `contribute sync --epoch {epoch}`)");
                        }
                        println!("revealed {}", c.item);
                        revealed.push(record);
                    }
                    Err(e) => problems.push(refused(e, &format!("item {}", c.item)).to_string()),
                }
            }
        }
    }
    // The revealed records not registered yet, as one batch.
    let mut fresh = Vec::new();
    for r in revealed {
        if s.db.data_record(&digest(&r.cid())).await?.is_none() {
            fresh.push(ContributedRecord::from(r));
        }
    }
    if !fresh.is_empty() {
        register(s, &fresh, kubo, None, "annotations").await?;
    }
    if !problems.is_empty() {
        return Err(format!(
            "{} not revealed:\n  {}",
            problems.len(),
            problems.join("\n  ")
        )
        .into());
    }
    Ok(ExitCode::SUCCESS)
}

async fn rewards(s: &Session, epoch: u64, claim: Option<&Path>) -> Result<ExitCode> {
    let me = s.key.address();
    let data = s.dao.data_settlement();
    let state = data.epoch(epoch).await?;
    if let Some(q) =
        s.db.annotator_quality(epoch)
            .await?
            .into_iter()
            .find(|q| q.annotator == me)
    {
        println!(
            "quality of {me} in epoch {epoch}: {:.3} over {} annotations",
            q.score, q.items
        );
    }
    if state.status == 0 {
        println!("epoch {epoch}: no reward root posted on the data settlement");
        return Ok(if claim.is_some() {
            ExitCode::FAILURE
        } else {
            ExitCode::SUCCESS
        });
    }
    println!(
        "epoch {epoch}: root {:#x}, {} base units ({} claimed), claimable from {} until {}, status {}",
        state.root, state.total, state.claimed, state.claimable_at, state.deadline, state.status
    );
    let Some(file) = claim else {
        return Ok(ExitCode::SUCCESS);
    };
    let tree = dao::RewardTree::load(file)?;
    if tree.root() != state.root {
        return Err(format!(
            "{} gives root {:#x}, the data settlement holds {:#x} for epoch {epoch}: not the list the validators signed",
            file.display(),
            tree.root(),
            state.root
        )
        .into());
    }
    let Some(amount) = tree.amount(me) else {
        println!("{me} has no reward in epoch {epoch}");
        return Ok(ExitCode::from(1));
    };
    let before = s.dao.balance_of(me).await?;
    let receipt = data
        .claim_reward(epoch, &tree)
        .await
        .map_err(|e| format!("claiming: {e}"))?;
    let after = s.dao.balance_of(me).await?;
    println!(
        "claimed {amount} base units of data epoch {epoch} for {me} (balance {before} -> {after}, gas {})",
        receipt.gas_used
    );
    Ok(ExitCode::SUCCESS)
}
