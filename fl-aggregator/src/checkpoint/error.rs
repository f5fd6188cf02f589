//! What can go wrong with a checkpoint store, and what a verification finds.

use std::fmt;
use std::path::PathBuf;

use fl_core::{ContentHash, SchemaHash};

use super::manifest::Manifest;

/// Why a checkpoint operation failed.
///
/// A damaged checkpoint is not an error for [`CheckpointStore::latest`](super::CheckpointStore::latest)
/// (it skips it) nor for [`CheckpointStore::verify`](super::CheckpointStore::verify) (it reports
/// it); it is one for [`CheckpointStore::load`](super::CheckpointStore::load), which asks for
/// that round and no other.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum CheckpointError {
    /// The store URL could not be understood.
    #[error(
        "checkpoint store URL `{url}`: {reason}; use a local directory, `file:///abs/dir`, \
         `memory://`, `s3://bucket/prefix`, `gs://bucket/prefix` or `az://container/prefix`"
    )]
    InvalidUrl {
        /// The URL as given.
        url: String,
        /// What is wrong with it.
        reason: String,
    },
    /// The URL names a cloud store whose support was not compiled into this build.
    #[error(
        "checkpoint store URL `{url}` needs cloud support that this build lacks; rebuild \
         fl-aggregator with `--features {feature}`, or use a local directory"
    )]
    FeatureDisabled {
        /// The URL as given.
        url: String,
        /// The cargo feature of `fl-aggregator` that adds this store (`s3`, `gcs`, `azure`).
        feature: &'static str,
    },
    /// The local checkpoint directory could not be created.
    #[error("cannot create checkpoint directory {}: {source}; check the path and its permissions", .path.display())]
    CreateDir {
        /// The directory.
        path: PathBuf,
        /// What the file system said.
        source: std::io::Error,
    },
    /// The object store failed (IO, network, permissions, credentials).
    #[error("checkpoint store: {op} `{path}` failed: {source}; {}", store_hint(.source))]
    Store {
        /// What was being done (`open`, `read`, `write`, `list`).
        op: &'static str,
        /// The object or prefix concerned.
        path: String,
        /// What the store said.
        #[source]
        source: object_store::Error,
    },
    /// The store has no manifest for this round.
    #[error(
        "no checkpoint for round {round} (nothing at `{path}`); `CheckpointStore::rounds` \
         lists the rounds the store holds"
    )]
    RoundNotFound {
        /// The round asked for.
        round: u64,
        /// Where its manifest would be.
        path: String,
    },
    /// A valid checkpoint of this round already exists; checkpoints are never overwritten.
    #[error(
        "round {round} is already checkpointed at `{path}`; resume from the latest checkpoint \
         instead of re-running the round, or use a fresh store"
    )]
    RoundExists {
        /// The round.
        round: u64,
        /// Its manifest.
        path: String,
    },
    /// The checkpoint of this round exists but is damaged.
    #[error(
        "checkpoint of round {round} is damaged: {}; `CheckpointStore::latest` falls back to \
         the newest intact round, and saving a round replaces the damaged objects it rewrites",
        ProblemList(.problems)
    )]
    Corrupt {
        /// The round.
        round: u64,
        /// Everything found wrong with it.
        problems: Vec<Problem>,
    },
    /// An object read with a size limit is larger.
    #[error("{path} has {size} bytes, more than the {limit} allowed")]
    TooLarge {
        /// The object.
        path: String,
        /// Its size.
        size: u64,
        /// The limit.
        limit: u64,
    },
    /// A parameter object asked for by its CID is missing, of the wrong length or damaged.
    #[error("parameters {cid} are not usable from the store: {reason}")]
    ParamsUnavailable {
        /// The CID asked for.
        cid: ContentHash,
        /// What is wrong.
        reason: String,
    },
    /// A model card asked for by its CID is missing, too large or damaged.
    #[error("model card {cid} is not usable from the store: {reason}")]
    CardUnavailable {
        /// The CID asked for.
        cid: ContentHash,
        /// What is wrong.
        reason: String,
    },
    /// A manifest could not be encoded as JSON (a bug: please report it).
    #[error("cannot encode the manifest of round {round}: {source}")]
    Encode {
        /// The round.
        round: u64,
        /// What serde_json said.
        source: serde_json::Error,
    },
}

/// What to do about a store failure.
fn store_hint(source: &object_store::Error) -> &'static str {
    use object_store::Error as E;
    match source {
        E::InvalidPath { .. } => {
            "an object there has a name the store cannot represent (on a local directory: a file \
             name that is not UTF-8 or holds a reserved character); move that file out of the \
             checkpoint store"
        }
        E::PermissionDenied { .. } | E::Unauthenticated { .. } => {
            "check the store's credentials and that they allow this operation"
        }
        _ => "check that the store is reachable and has space, then retry",
    }
}

/// One thing wrong with a stored checkpoint.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum Problem {
    /// The manifest is not valid JSON of the expected shape (garbage, truncated, unknown fields).
    ManifestUnreadable {
        /// The manifest object.
        path: String,
        /// What the parser said.
        reason: String,
    },
    /// The manifest was written by a newer daofl with a format this build does not know.
    UnsupportedVersion {
        /// The manifest object.
        path: String,
        /// Its `version` field.
        found: u64,
    },
    /// The manifest's `round` differs from the round in its object name.
    RoundMismatch {
        /// The round in the object name.
        named: u64,
        /// The round inside the manifest.
        recorded: u64,
    },
    /// The recorded schema hash does not match the recorded schema.
    SchemaHashMismatch {
        /// The `schema_hash` field.
        recorded: SchemaHash,
        /// The hash of the `schema` field.
        computed: SchemaHash,
    },
    /// The parameter object named by the manifest does not exist (a crash between the two
    /// writes cannot cause this, as parameters are written first: something deleted it).
    ParamsMissing {
        /// Where it should be.
        path: String,
    },
    /// The parameter object's length is not 4 bytes per value of the schema.
    ParamsLength {
        /// The parameter object.
        path: String,
        /// Bytes the schema needs.
        expected: u64,
        /// Bytes stored.
        found: u64,
    },
    /// The parameter object's bytes do not hash to the CID it is stored under.
    ParamsHashMismatch {
        /// The parameter object.
        path: String,
        /// The CID the manifest names.
        expected: ContentHash,
        /// The hash of the stored bytes.
        computed: ContentHash,
    },
    /// The model card the manifest names (`cards/<cid>.json`) does not exist.
    CardMissing {
        /// Where it should be.
        path: String,
    },
    /// The model card's bytes do not hash to the CID the manifest names (or it is larger
    /// than a card can be).
    CardDamaged {
        /// The card object.
        path: String,
        /// What is wrong with it.
        reason: String,
    },
}

impl fmt::Display for Problem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::ManifestUnreadable { path, reason } => {
                write!(f, "manifest `{path}` is unreadable: {reason}")
            }
            Self::UnsupportedVersion { path, found } => write!(
                f,
                "manifest `{path}` has format version {found}, newer than this build reads ({}); upgrade daofl",
                super::manifest::MANIFEST_VERSION
            ),
            Self::RoundMismatch { named, recorded } => write!(
                f,
                "manifest named for round {named} records round {recorded}"
            ),
            Self::SchemaHashMismatch { recorded, computed } => write!(
                f,
                "recorded schema hash {} does not match the recorded schema (hash {})",
                recorded.to_hex(),
                computed.to_hex()
            ),
            Self::ParamsMissing { path } => write!(f, "parameter object `{path}` is missing"),
            Self::ParamsLength {
                path,
                expected,
                found,
            } => write!(
                f,
                "parameter object `{path}` has {found} bytes, the schema needs {expected}"
            ),
            Self::ParamsHashMismatch {
                path,
                expected,
                computed,
            } => write!(
                f,
                "parameter object `{path}` hashes to {computed}, not to {expected}: its bytes are damaged"
            ),
            Self::CardMissing { path } => write!(f, "model card `{path}` is missing"),
            Self::CardDamaged { path, reason } => write!(f, "model card `{path}`: {reason}"),
        }
    }
}

/// Formats problems separated by `; `.
struct ProblemList<'a>(&'a [Problem]);

impl fmt::Display for ProblemList<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, p) in self.0.iter().enumerate() {
            if i > 0 {
                f.write_str("; ")?;
            }
            fmt::Display::fmt(p, f)?;
        }
        Ok(())
    }
}

/// What [`CheckpointStore::verify`](super::CheckpointStore::verify) found about one round.
#[derive(Debug, Clone, PartialEq)]
#[non_exhaustive]
pub struct VerifyReport {
    /// The round checked.
    pub round: u64,
    /// Its manifest object.
    pub manifest_path: String,
    /// The manifest, when it could be parsed.
    pub manifest: Option<Manifest>,
    /// Everything wrong; empty when the checkpoint is complete and intact.
    pub problems: Vec<Problem>,
}

impl VerifyReport {
    /// Whether the checkpoint is complete and intact (it can be resumed from).
    pub fn is_ok(&self) -> bool {
        self.problems.is_empty()
    }
}

impl fmt::Display for VerifyReport {
    /// One line: `round 7 ok (params bafkrei...)` or `round 7 DAMAGED: ...`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match (&self.manifest, self.is_ok()) {
            (Some(m), true) => write!(f, "round {} ok (params {})", self.round, m.params_cid),
            _ => write!(
                f,
                "round {} DAMAGED: {}",
                self.round,
                ProblemList(&self.problems)
            ),
        }
    }
}
