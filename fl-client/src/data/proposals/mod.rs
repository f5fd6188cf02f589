//! Governance proposals with their outcomes: 3,754 from 13 communities (5 DAOs, 7 blockchain
//! protocols and Python), shipped in `data/proposals/` with a NOTICE naming every source,
//! snapshot commit and licence.
//!
//! Each line of `proposals.jsonl.gz` is one JSON object, a [`Proposal`]: the community, its id,
//! title and body text (front matter and every statement of the outcome removed), the outcome
//! [`Outcome`] (`accepted`, `rejected` or `open`), the community's own category (`type_raw`,
//! normalised by [`ProposalKind::of`]) and provenance (repository, commit, path, licence).
//! `test_ids.json` lists the test rows (`community:id`) of the shipped split: a stratified
//! (community x label) 80/20 split of the decided rows: 608 test rows and 2,432 decided
//! training rows (the data README says 2,428; the file gives 3,040 - 608), plus the 714 open rows.
//!
//! Each community is a natural federation member; [`partition::by_field`](crate::partition::by_field)
//! over [`Proposal::community`] gives each member exactly its community's proposals.
//!
//! Reads are bounded: at most [`MAX_FILE_BYTES`] of (compressed) input, [`MAX_TEXT_BYTES`]
//! once decompressed, [`MAX_LINE_BYTES`] per line and [`MAX_ROWS`] rows. Nothing in a file
//! makes the loader panic: every problem is a [`ProposalsError`] that names the line.
//!
//! ```no_run
//! use fl_client::data::proposals;
//!
//! let corpus = proposals::load_shipped()?;
//! let split = corpus.shipped_split()?;
//! println!("{} train, {} test", split.train.len(), split.test.len());
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```

mod kind;
#[cfg(test)]
mod tests;

use std::collections::{BTreeMap, HashMap, HashSet};
use std::io::{BufRead, BufReader, Read};
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

pub use kind::ProposalKind;

/// Rows in the shipped file.
pub const NUM_PROPOSALS: usize = 3754;
/// Largest input file accepted (compressed size for gzip), in bytes.
pub const MAX_FILE_BYTES: u64 = 64 << 20;
/// Largest decompressed input accepted, in bytes (the shipped file is about 44 MB).
pub const MAX_TEXT_BYTES: u64 = 256 << 20;
/// Longest line accepted, in bytes (the shipped file's longest is about 385 kB).
pub const MAX_LINE_BYTES: usize = 4 << 20;
/// Most rows accepted.
pub const MAX_ROWS: usize = 1_000_000;
/// Largest `test_ids.json` accepted, in bytes.
pub const MAX_SPLIT_BYTES: u64 = 4 << 20;

/// Path of the shipped corpus in this crate's source tree.
pub fn shipped_path() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("data/proposals/proposals.jsonl.gz")
}

/// Path of the shipped split's test ids in this crate's source tree.
pub fn shipped_test_ids_path() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("data/proposals/test_ids.json")
}

/// The outcome of a proposal.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Outcome {
    /// Final, Living, Active, Accepted, Approved, Implemented, Deployed (or retired after one).
    Accepted,
    /// Rejected, Withdrawn, Stagnant, Deferred, Abandoned (or retired, never accepted).
    Rejected,
    /// Undecided (Draft, Review, Last Call, Proposed, ...): no outcome label.
    Open,
}

impl Outcome {
    /// The class index of a decided outcome (accepted 0, rejected 1); `None` for open.
    pub fn class(self) -> Option<u8> {
        match self {
            Outcome::Accepted => Some(0),
            Outcome::Rejected => Some(1),
            Outcome::Open => None,
        }
    }

    /// The name of an outcome class index (0 accepted, 1 rejected).
    pub fn class_name(class: u8) -> &'static str {
        if class == 0 { "accepted" } else { "rejected" }
    }
}

/// What sort of community a proposal comes from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum CommunityKind {
    /// A DAO (MakerDAO, Synthetix, Aragon, Yearn, Lido).
    Dao,
    /// A blockchain protocol (Ethereum, Bitcoin, Cardano, Filecoin, Algorand, Celo, NEAR).
    Protocol,
    /// An open-source project (Python).
    Oss,
}

/// One row of the corpus.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Proposal {
    /// The community (federation member) it belongs to, e.g. `ethereum`.
    pub community: String,
    /// What sort of community that is.
    #[serde(rename = "kind")]
    pub community_kind: CommunityKind,
    /// Its id within the community, e.g. `EIP-1559`.
    pub id: String,
    /// The community's document kind, e.g. `EIP`, `ERC`, `SCCP`.
    pub doc_kind: String,
    /// Title.
    pub title: String,
    /// The status as written in the source (for reference only: it states the outcome).
    #[serde(default)]
    pub status_raw: Option<String>,
    /// The outcome.
    pub label: Outcome,
    /// The outcome when explicitly decided (null for stagnant, deferred, abandoned, ...).
    #[serde(default)]
    pub label_strict: Option<Outcome>,
    /// The community's own category or type, not normalised (see [`ProposalKind::of`]).
    pub type_raw: String,
    /// Creation date (`YYYY-MM-DD`), from the header or the first commit.
    #[serde(default)]
    pub created: Option<String>,
    /// Number of authors.
    #[serde(default)]
    pub authors_n: Option<u32>,
    /// The body in markdown or reStructuredText, outcome statements removed.
    pub text: String,
    /// SPDX-like licence of this row (e.g. `CC0-1.0`, `MIT`, `PD`).
    pub licence: String,
    /// Source repository (`owner/name`).
    pub repo: String,
    /// Snapshot commit of that repository.
    pub commit: String,
    /// Path of the file in that repository.
    pub path: String,
}

impl Proposal {
    /// `community:id`, the key `test_ids.json` uses.
    pub fn key(&self) -> String {
        format!("{}:{}", self.community, self.id)
    }

    /// The normalised kind of this proposal (from `community`, `doc_kind`, `type_raw`).
    pub fn kind(&self) -> ProposalKind {
        ProposalKind::of(&self.community, &self.doc_kind, &self.type_raw)
    }
}

/// All rows of a corpus file, in file order.
#[derive(Debug, Clone, PartialEq)]
pub struct Corpus {
    /// The rows.
    pub proposals: Vec<Proposal>,
}

/// A train/test split of a corpus by row index.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Split {
    /// Rows not in the test list: decided and open (open rows carry no outcome label).
    pub train: Vec<usize>,
    /// Rows in the test list (all decided in the shipped split).
    pub test: Vec<usize>,
}

impl Corpus {
    /// Number of rows.
    pub fn len(&self) -> usize {
        self.proposals.len()
    }

    /// Whether there are no rows.
    pub fn is_empty(&self) -> bool {
        self.proposals.is_empty()
    }

    /// Rows per community, in community name order.
    pub fn community_counts(&self) -> BTreeMap<&str, usize> {
        let mut counts = BTreeMap::new();
        for p in &self.proposals {
            *counts.entry(p.community.as_str()).or_insert(0) += 1;
        }
        counts
    }

    /// Splits by a list of `community:id` test keys: rows whose key is listed go to the test
    /// side, all others to the training side. Every listed key must name a row.
    pub fn split(&self, test_keys: &[String]) -> Result<Split, ProposalsError> {
        let index: HashMap<String, usize> = self
            .proposals
            .iter()
            .enumerate()
            .map(|(i, p)| (p.key(), i))
            .collect();
        let mut in_test = HashSet::new();
        for key in test_keys {
            let &i = index
                .get(key)
                .ok_or_else(|| ProposalsError::UnknownTestId(key.clone()))?;
            in_test.insert(i);
        }
        let (test, train): (Vec<usize>, Vec<usize>) =
            (0..self.len()).partition(|i| in_test.contains(i));
        Ok(Split { train, test })
    }

    /// The split shipped with the data (`data/proposals/test_ids.json`).
    pub fn shipped_split(&self) -> Result<Split, ProposalsError> {
        self.split(&load_test_ids(shipped_test_ids_path())?)
    }
}

/// Reads the corpus shipped with this crate ([`shipped_path`]).
pub fn load_shipped() -> Result<Corpus, ProposalsError> {
    load(shipped_path())
}

/// Reads a corpus file: JSON lines, gzip-compressed (detected by its magic bytes) or plain.
pub fn load(path: impl AsRef<Path>) -> Result<Corpus, ProposalsError> {
    let path = path.as_ref();
    let what = path.display().to_string();
    let file = std::fs::File::open(path).map_err(|source| ProposalsError::Io {
        what: what.clone(),
        source,
    })?;
    from_reader(file, &what)
}

/// Reads corpus JSON lines from any reader, gzip-compressed or plain. `what` names the source
/// in error messages. Blank lines are skipped.
pub fn from_reader(reader: impl Read, what: &str) -> Result<Corpus, ProposalsError> {
    let mut proposals = Vec::new();
    for_each_line(reader, what, |line, text| {
        if proposals.len() >= MAX_ROWS {
            return Err(ProposalsError::TooManyRows { limit: MAX_ROWS });
        }
        let p: Proposal = serde_json::from_str(text).map_err(|e| ProposalsError::Malformed {
            line,
            message: e.to_string(),
        })?;
        check_row(&p, line)?;
        proposals.push(p);
        Ok(())
    })?;
    if proposals.is_empty() {
        return Err(ProposalsError::Empty { what: what.into() });
    }
    Ok(Corpus { proposals })
}

/// Calls `f(line_number, line)` for every non-blank line of a gzip or plain JSON-lines input,
/// with the limits of this module: the file size, the decompressed size and the line length.
/// Lines must be UTF-8.
pub(crate) fn for_each_line(
    reader: impl Read,
    what: &str,
    mut f: impl FnMut(u64, &str) -> Result<(), ProposalsError>,
) -> Result<(), ProposalsError> {
    let bounded = LimitedRead {
        inner: reader,
        left: MAX_FILE_BYTES,
        what: "input file",
        limit: MAX_FILE_BYTES,
    };
    let (reader, gzip) =
        crate::data::idx::maybe_gunzip(bounded, what).map_err(|e| ProposalsError::Io {
            what: what.into(),
            source: std::io::Error::other(e.to_string()),
        })?;
    let mut reader = BufReader::new(LimitedRead {
        inner: reader,
        left: MAX_TEXT_BYTES,
        what: "decompressed input",
        limit: MAX_TEXT_BYTES,
    });
    let mut buf = Vec::new();
    let mut line = 0u64;
    loop {
        line += 1;
        buf.clear();
        let n = (&mut reader)
            .take(MAX_LINE_BYTES as u64 + 1)
            .read_until(b'\n', &mut buf)
            .map_err(|source| read_error(source, what, gzip))?;
        if n == 0 {
            return Ok(());
        }
        if buf.last() == Some(&b'\n') {
            buf.pop();
        } else if buf.len() > MAX_LINE_BYTES {
            return Err(ProposalsError::LineTooLong {
                line,
                limit: MAX_LINE_BYTES,
            });
        }
        if buf.len() > MAX_LINE_BYTES {
            return Err(ProposalsError::LineTooLong {
                line,
                limit: MAX_LINE_BYTES,
            });
        }
        let text = std::str::from_utf8(&buf).map_err(|e| ProposalsError::Malformed {
            line,
            message: format!("not UTF-8: {e}"),
        })?;
        if text.trim().is_empty() {
            continue;
        }
        f(line, text)?;
    }
}

fn read_error(source: std::io::Error, what: &str, gzip: bool) -> ProposalsError {
    if let Some(limit) = source.get_ref().and_then(|e| e.downcast_ref::<TooLarge>()) {
        return ProposalsError::TooLarge {
            what: format!("{what} ({})", limit.what),
            limit: limit.limit,
        };
    }
    if gzip {
        ProposalsError::Gzip {
            what: what.into(),
            source,
        }
    } else {
        ProposalsError::Io {
            what: what.into(),
            source,
        }
    }
}

/// Semantic checks of a parsed row.
fn check_row(p: &Proposal, line: u64) -> Result<(), ProposalsError> {
    let missing = |field: &str| ProposalsError::Malformed {
        line,
        message: format!("`{field}` is empty"),
    };
    if p.community.trim().is_empty() {
        return Err(missing("community"));
    }
    if p.id.trim().is_empty() {
        return Err(missing("id"));
    }
    if p.label_strict.is_some_and(|s| s != p.label) {
        return Err(ProposalsError::Malformed {
            line,
            message: format!(
                "label_strict {:?} contradicts label {:?}",
                p.label_strict, p.label
            ),
        });
    }
    Ok(())
}

/// Reads a split's test keys: a JSON array of `community:id` strings, at most
/// [`MAX_SPLIT_BYTES`].
pub fn load_test_ids(path: impl AsRef<Path>) -> Result<Vec<String>, ProposalsError> {
    let path = path.as_ref();
    let what = path.display().to_string();
    let io = |source| ProposalsError::Io {
        what: what.clone(),
        source,
    };
    let file = std::fs::File::open(path).map_err(io)?;
    let mut text = String::new();
    file.take(MAX_SPLIT_BYTES + 1)
        .read_to_string(&mut text)
        .map_err(io)?;
    if text.len() as u64 > MAX_SPLIT_BYTES {
        return Err(ProposalsError::TooLarge {
            what,
            limit: MAX_SPLIT_BYTES,
        });
    }
    let keys: Vec<String> = serde_json::from_str(&text).map_err(|e| ProposalsError::Malformed {
        line: e.line() as u64,
        message: format!("{what}: {e}"),
    })?;
    Ok(keys)
}

/// A reader that fails once more than `limit` bytes have come through.
struct LimitedRead<R> {
    inner: R,
    left: u64,
    what: &'static str,
    limit: u64,
}

#[derive(Debug)]
struct TooLarge {
    what: &'static str,
    limit: u64,
}

impl std::fmt::Display for TooLarge {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{} exceeds {} bytes", self.what, self.limit)
    }
}

impl std::error::Error for TooLarge {}

impl<R: Read> Read for LimitedRead<R> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        let n = self.inner.read(buf)?;
        if n as u64 > self.left {
            return Err(std::io::Error::other(TooLarge {
                what: self.what,
                limit: self.limit,
            }));
        }
        self.left -= n as u64;
        Ok(n)
    }
}

/// Why a proposals file could not be read.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ProposalsError {
    /// Reading a file or stream failed.
    #[error("cannot read {what}: {source}")]
    Io {
        /// What was being read.
        what: String,
        /// The underlying error.
        #[source]
        source: std::io::Error,
    },
    /// A gzip input could not be decompressed.
    #[error("{what} is not valid gzip: {source}")]
    Gzip {
        /// What was being read.
        what: String,
        /// The decompressor's error.
        #[source]
        source: std::io::Error,
    },
    /// The input is larger than this loader accepts.
    #[error("{what} is larger than the limit of {limit} bytes")]
    TooLarge {
        /// What was being read.
        what: String,
        /// The limit.
        limit: u64,
    },
    /// A line is longer than [`MAX_LINE_BYTES`].
    #[error("line {line} is longer than the limit of {limit} bytes")]
    LineTooLong {
        /// 1-based line number.
        line: u64,
        /// The limit.
        limit: usize,
    },
    /// A line is not a valid proposal object.
    #[error("line {line}: {message}")]
    Malformed {
        /// 1-based line number.
        line: u64,
        /// What is wrong with it.
        message: String,
    },
    /// More rows than [`MAX_ROWS`].
    #[error("more than {limit} rows")]
    TooManyRows {
        /// The limit.
        limit: usize,
    },
    /// The input holds no rows.
    #[error("{what} holds no proposals")]
    Empty {
        /// What was read.
        what: String,
    },
    /// A test key names no row of the corpus.
    #[error("test id `{0}` names no proposal of the corpus")]
    UnknownTestId(String),
}
