//! Checkpoints: each completed round's parameters and a JSON manifest in an object store, content
//! addressed, so an aggregator resumes from the newest complete round after a crash.
//!
//! # Layout
//!
//! Under the store's prefix:
//!
//! ```text
//! params/<cid>                 canonical little-endian f32 bytes of the parameters; <cid> is the
//!                              CIDv1 (raw, sha2-256) of exactly these bytes, as IPFS names them
//!                              (also a strategy's model-sized state, e.g. SCAFFOLD's server
//!                              control variate, named by the manifest's `strategy_state`)
//! rounds/<round:010>.json      the round's Manifest (pretty JSON), naming params/<cid>
//! cards/<cid>.json             a model card (JSON; <cid> is the CIDv1 of exactly these bytes),
//!                              named by the manifest's `model_card` (published models only)
//! ```
//!
//! Parameters are written before the manifest, so a manifest never names parameters that were
//! not yet written; a crash between the two writes leaves an unreferenced parameter object and
//! the previous round as the latest. Two rounds with the same parameters share one object.
//! Nothing is overwritten except a damaged object (one that fails verification), which is
//! replaced, and a manifest whose `anchor` field [`CheckpointStore::set_anchor`] fills in once
//! the round is anchored on chain (see [`crate::anchoring`]).
//!
//! # Atomicity
//!
//! Every write is one [`ObjectStore::put_opts`], which the `object_store` contract makes atomic
//! (all of the object or nothing is visible). On the local file system (object_store 0.13,
//! `local.rs`) `put_opts` writes the bytes to a staging file `<name>#<n>` next to the target
//! and then, for [`PutMode::Create`] (what this module uses), hard-links it to the target
//! (failing with `AlreadyExists` if the target exists) and removes the staging file, or, for
//! [`PutMode::Overwrite`], renames it over the target. Readers thus see either no object or a
//! whole one, and a process killed mid-write leaves only a staging file, which listings skip.
//! `object_store` does not `fsync`, so after a power loss (not a process crash) a just-written
//! object may be empty or short: [`CheckpointStore::latest`] then finds that its bytes do not
//! hash to its name and falls back to the previous round. In-memory stores and the cloud stores
//! (S3, GCS, Azure) put objects atomically by construction.
//!
//! # Store URLs
//!
//! A local directory (`./checkpoints`, `/var/lib/daofl`, `file:///var/lib/daofl`), created if
//! missing; `memory://` for tests (`memory://fed/one` puts objects under `fed/one/`: a memory
//! store has no bucket, so all of its path is the prefix); `s3://bucket/prefix`, `gs://bucket/prefix` and
//! `az://container/prefix` with the cargo features `s3`, `gcs` and `azure` of this crate
//! (credentials and region come from the usual environment variables, `AWS_*`,
//! `GOOGLE_*`, `AZURE_*`).
//!
//! ```
//! use std::sync::Arc;
//! use fl_aggregator::checkpoint::{CheckpointMeta, CheckpointStore, Participant};
//! use fl_core::{ClientId, ContentHash, ParamVec, Schema, TensorSpec};
//!
//! # tokio::runtime::Runtime::new()?.block_on(async {
//! let store = CheckpointStore::open("memory://")?;
//! let schema = Arc::new(Schema::new(vec![TensorSpec::new("w", [2])])?);
//! let params = ParamVec::new(schema, vec![0.5, -1.0])?;
//! let meta = CheckpointMeta::new("my-dao", 1, ContentHash::of(b"federation.toml bytes"))
//!     .with_participants([Participant::from(ClientId(3))]);
//! let manifest = store.save(meta, &params).await?;
//!
//! // After a restart: resume the engine with `completed_rounds = manifest.round`.
//! let (latest, restored) = store.latest().await?.expect("one checkpoint");
//! assert_eq!(latest.round, 1);
//! assert_eq!(restored, params);
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! # })?;
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```

mod error;
mod location;
mod manifest;

use std::sync::Arc;

use fl_core::{ContentHash, ParamVec};
use object_store::path::Path;
use object_store::{GetOptions, ObjectStore, PutMode, PutOptions, PutPayload};

pub use error::{CheckpointError, Problem, VerifyReport};
pub use manifest::{
    CheckpointMeta, MANIFEST_VERSION, Manifest, Participant, PrivacySpent, rfc3339_utc,
};

use manifest::MAX_MANIFEST_BYTES;

/// Largest model card stored or read, in bytes (a card is a few kilobytes).
pub const MAX_CARD_BYTES: u64 = 1 << 20;

/// Shorthand for results of this module.
pub type Result<T, E = CheckpointError> = std::result::Result<T, E>;

/// Checkpoints of one federation in an object store (see the [module docs](self) for the layout
/// and the atomicity guarantees).
///
/// All methods take `&self` and return `Send` futures; nothing panics on a damaged store.
#[derive(Debug, Clone)]
pub struct CheckpointStore {
    store: Arc<dyn ObjectStore>,
    prefix: Path,
    url: String,
}

/// A checkpoint read back: its manifest and its verified parameters.
pub type Checkpoint = (Manifest, ParamVec);

/// What was read for one round: the report, and the checkpoint when it is intact.
struct Inspection {
    report: VerifyReport,
    checkpoint: Option<Checkpoint>,
}

impl CheckpointStore {
    /// Opens the store a URL names (see the [module docs](self#store-urls)); a local directory is
    /// created if missing.
    ///
    /// # Errors
    /// [`CheckpointError::InvalidUrl`] for an unknown scheme or malformed URL,
    /// [`CheckpointError::FeatureDisabled`] for a cloud URL whose feature is off,
    /// [`CheckpointError::CreateDir`] if the directory cannot be created.
    pub fn open(url: &str) -> Result<Self> {
        let (store, prefix) = location::open_url(url)?;
        Ok(Self {
            store,
            prefix,
            url: url.to_owned(),
        })
    }

    /// A store over an existing object store, with objects under `prefix`.
    pub fn new(store: Arc<dyn ObjectStore>, prefix: Path) -> Self {
        let url = format!("{store}/{prefix}");
        Self { store, prefix, url }
    }

    /// The underlying object store.
    pub fn object_store(&self) -> &Arc<dyn ObjectStore> {
        &self.store
    }

    /// Where the store is (the URL it was opened with).
    pub fn url(&self) -> &str {
        &self.url
    }

    /// The object holding the parameters with content hash `cid`: `params/<cid>`.
    pub fn params_path(&self, cid: &ContentHash) -> Path {
        self.prefix.clone().join("params").join(cid.to_string())
    }

    /// The object holding the model card with content hash `cid`: `cards/<cid>.json`.
    pub fn card_path(&self, cid: &ContentHash) -> Path {
        self.prefix
            .clone()
            .join("cards")
            .join(format!("{cid}.json"))
    }

    /// Stores a model card's bytes (its canonical JSON, see `fl_client::model_card`) as
    /// `cards/<cid>.json`, where `<cid>` is the CIDv1 of exactly these bytes, and returns the
    /// CID to name in [`CheckpointMeta::with_model_card`]. An intact card with that CID is kept,
    /// a damaged one replaced.
    ///
    /// # Errors
    /// [`CheckpointError::TooLarge`] above [`MAX_CARD_BYTES`], [`CheckpointError::Store`].
    pub async fn put_card(&self, bytes: Vec<u8>) -> Result<ContentHash> {
        let cid = ContentHash::of(&bytes);
        let path = self.card_path(&cid);
        if bytes.len() as u64 > MAX_CARD_BYTES {
            return Err(CheckpointError::TooLarge {
                path: path.to_string(),
                size: bytes.len() as u64,
                limit: MAX_CARD_BYTES,
            });
        }
        self.put_content(&path, &cid, bytes).await?;
        Ok(cid)
    }

    /// The bytes of the model card `cid`, checked to hash to it.
    ///
    /// # Errors
    /// [`CheckpointError::CardUnavailable`] when it is missing, larger than
    /// [`MAX_CARD_BYTES`] or does not hash to `cid`; [`CheckpointError::Store`].
    pub async fn card_bytes(&self, cid: &ContentHash) -> Result<Vec<u8>> {
        let path = self.card_path(cid);
        self.read_card(&path, cid)
            .await?
            .map_err(|problem| CheckpointError::CardUnavailable {
                cid: *cid,
                reason: problem.to_string(),
            })
    }

    /// Reads and checks the card at `path`: its bytes, or the problem with it.
    async fn read_card(
        &self,
        path: &Path,
        cid: &ContentHash,
    ) -> Result<std::result::Result<Vec<u8>, Problem>> {
        let damaged = |reason: String| Problem::CardDamaged {
            path: path.to_string(),
            reason,
        };
        Ok(match self.read(path, MAX_CARD_BYTES).await? {
            Read::Missing => Err(Problem::CardMissing {
                path: path.to_string(),
            }),
            Read::TooBig(size) => Err(damaged(format!(
                "{size} bytes, more than a card can be ({MAX_CARD_BYTES})"
            ))),
            Read::Bytes(b) => match ContentHash::of(&b) {
                computed if computed == *cid => Ok(b),
                computed => Err(damaged(format!(
                    "hashes to {computed}, not to {cid}: its bytes are damaged"
                ))),
            },
        })
    }

    /// The object holding the manifest of `round`: `rounds/<round:010>.json`.
    pub fn manifest_path(&self, round: u64) -> Path {
        self.prefix
            .clone()
            .join("rounds")
            .join(format!("{round:010}.json"))
    }

    /// Writes a checkpoint of `params` as round `meta.round`: the parameters first (skipped when
    /// an intact object with their CID exists), then the manifest, which it returns.
    ///
    /// # Errors
    /// [`CheckpointError::RoundExists`] when an intact checkpoint of that round exists (a damaged
    /// one is replaced), [`CheckpointError::Store`] when the store fails.
    pub async fn save(&self, meta: CheckpointMeta, params: &ParamVec) -> Result<Manifest> {
        let state = meta.strategy_state.clone();
        let manifest = Manifest::new(meta, params);
        self.put_params(&manifest.params_cid, params.to_le_bytes())
            .await?;
        if let Some(state) = state {
            self.put_params(&state.content_hash(), state.to_le_bytes())
                .await?;
        }

        let round = manifest.round;
        let json = serde_json::to_vec_pretty(&manifest)
            .map_err(|source| CheckpointError::Encode { round, source })?;
        let path = self.manifest_path(round);
        if !self.put_create(&path, json.clone()).await? {
            match self.inspect(round).await {
                Ok(Inspection {
                    checkpoint: Some(_),
                    ..
                }) => {
                    return Err(CheckpointError::RoundExists {
                        round,
                        path: path.to_string(),
                    });
                }
                Ok(Inspection { report, .. }) => {
                    tracing::warn!(round, %report, "replacing a damaged checkpoint manifest");
                    self.put_overwrite(&path, json).await?;
                }
                Err(CheckpointError::RoundNotFound { .. }) => {
                    self.put_overwrite(&path, json).await?
                }
                Err(e) => return Err(e),
            }
        }
        tracing::info!(round, params = %manifest.params_cid, store = %self.url, "checkpoint saved");
        Ok(manifest)
    }

    /// The newest complete and intact checkpoint, or `None` if the store holds none.
    ///
    /// Rounds are tried from the highest down; a damaged round (any problem that
    /// [`CheckpointStore::verify`] reports: a manifest that does not parse, records another
    /// round or a schema that does not match its hash, a parameter object that is missing, of
    /// the wrong length or does not hash to its CID, a model card missing or damaged) is
    /// skipped with a warning.
    ///
    /// # Errors
    /// Only [`CheckpointError::Store`]: when the store cannot be read this does not guess.
    pub async fn latest(&self) -> Result<Option<Checkpoint>> {
        for round in self.rounds().await?.into_iter().rev() {
            match self.inspect(round).await {
                Ok(Inspection {
                    checkpoint: Some(c),
                    ..
                }) => return Ok(Some(c)),
                Ok(Inspection { report, .. }) => {
                    tracing::warn!(round, %report, "skipping damaged checkpoint");
                }
                Err(CheckpointError::RoundNotFound { .. }) => {} // deleted while we looked
                Err(e) => return Err(e),
            }
        }
        Ok(None)
    }

    /// The checkpoint of `round`, verified.
    ///
    /// # Errors
    /// [`CheckpointError::RoundNotFound`], [`CheckpointError::Corrupt`] (with every problem
    /// found), [`CheckpointError::Store`].
    pub async fn load(&self, round: u64) -> Result<Checkpoint> {
        let Inspection { report, checkpoint } = self.inspect(round).await?;
        checkpoint.ok_or(CheckpointError::Corrupt {
            round,
            problems: report.problems,
        })
    }

    /// Checks the checkpoint of `round`: that its manifest parses and names its round, that the
    /// schema hash matches the schema, that the parameter object exists, has the schema's
    /// length and hashes to its CID, and that the model card it names (if any) exists and
    /// hashes to its CID.
    ///
    /// # Errors
    /// [`CheckpointError::RoundNotFound`] and [`CheckpointError::Store`]; damage is reported in
    /// the [`VerifyReport`], not as an error.
    pub async fn verify(&self, round: u64) -> Result<VerifyReport> {
        Ok(self.inspect(round).await?.report)
    }

    /// The rounds that have a manifest object, ascending (intact or not).
    ///
    /// # Errors
    /// [`CheckpointError::Store`].
    pub async fn rounds(&self) -> Result<Vec<u64>> {
        let mut rounds: Vec<u64> = self
            .list_files("rounds")
            .await?
            .iter()
            .filter_map(|name| parse_manifest_name(name))
            .collect();
        rounds.sort_unstable();
        rounds.dedup();
        Ok(rounds)
    }

    /// The manifests that parse, by ascending round (parameters are not read; use
    /// [`CheckpointStore::verify`] for that). Unreadable manifests, and manifests that record
    /// another round than their object name, are skipped with a warning.
    ///
    /// # Errors
    /// [`CheckpointError::Store`].
    pub async fn list(&self) -> Result<Vec<Manifest>> {
        let mut out = Vec::new();
        for round in self.rounds().await? {
            let path = self.manifest_path(round);
            match self.read_manifest(&path).await? {
                Some(Ok(m)) if m.round == round => out.push(m),
                Some(Ok(m)) => {
                    let problem = Problem::RoundMismatch {
                        named: round,
                        recorded: m.round,
                    };
                    tracing::warn!(round, path = %path, %problem, "skipping manifest");
                }
                Some(Err(problem)) => tracing::warn!(round, %problem, "skipping manifest"),
                None => {}
            }
        }
        Ok(out)
    }

    /// The manifest of `round` as stored, parsed but without reading its parameters (what
    /// chain verification starts from: [`crate::anchoring::verify_checkpoint`] recomputes the
    /// parameters' hash itself, see [`CheckpointStore::params_bytes`]).
    ///
    /// # Errors
    /// [`CheckpointError::RoundNotFound`], [`CheckpointError::Corrupt`] for a manifest that
    /// does not parse or records another round, [`CheckpointError::Store`].
    pub async fn manifest(&self, round: u64) -> Result<Manifest> {
        let path = self.manifest_path(round);
        match self.read_manifest(&path).await? {
            None => Err(CheckpointError::RoundNotFound {
                round,
                path: path.to_string(),
            }),
            Some(Err(problem)) => Err(CheckpointError::Corrupt {
                round,
                problems: vec![problem],
            }),
            Some(Ok(m)) if m.round != round => Err(CheckpointError::Corrupt {
                round,
                problems: vec![Problem::RoundMismatch {
                    named: round,
                    recorded: m.round,
                }],
            }),
            Some(Ok(m)) => Ok(m),
        }
    }

    /// The bytes of the parameter object `manifest` names, as stored and **unchecked** (a
    /// verifier recomputes their hash). At most one byte more than the schema needs is read, so
    /// an oversized object is returned short of its full size but still longer than expected.
    ///
    /// # Errors
    /// [`CheckpointError::ParamsUnavailable`] when the object does not exist,
    /// [`CheckpointError::Store`] when the store fails.
    pub async fn params_bytes(&self, manifest: &Manifest) -> Result<Vec<u8>> {
        let path = self.params_path(&manifest.params_cid);
        let expected = manifest.params_len();
        match self.read(&path, expected).await? {
            Read::Bytes(b) => Ok(b),
            Read::TooBig(found) => Err(CheckpointError::ParamsUnavailable {
                cid: manifest.params_cid,
                reason: format!("`{path}` has {found} bytes, the schema needs {expected}"),
            }),
            Read::Missing => Err(CheckpointError::ParamsUnavailable {
                cid: manifest.params_cid,
                reason: format!("`{path}` does not exist"),
            }),
        }
    }

    /// Records `anchor` (the chain receipt of the round, see [`crate::anchoring`]) in the
    /// manifest of `round` and returns the updated manifest.
    ///
    /// The manifest is read, changed and written back as one object
    /// ([`PutMode::Overwrite`]: readers see the old manifest or the new one, never a mix). Only
    /// the `anchor` field changes. One writer per store is assumed (the aggregator's checkpoint
    /// task); the store offers no compare-and-swap on local files.
    ///
    /// # Errors
    /// As [`CheckpointStore::manifest`], and [`CheckpointError::Encode`].
    pub async fn set_anchor(&self, round: u64, anchor: serde_json::Value) -> Result<Manifest> {
        let mut manifest = self.manifest(round).await?;
        manifest.anchor = Some(anchor);
        let json = serde_json::to_vec_pretty(&manifest)
            .map_err(|source| CheckpointError::Encode { round, source })?;
        self.put_overwrite(&self.manifest_path(round), json).await?;
        Ok(manifest)
    }

    /// Reads and checks one round.
    async fn inspect(&self, round: u64) -> Result<Inspection> {
        let path = self.manifest_path(round);
        let mut report = VerifyReport {
            round,
            manifest_path: path.to_string(),
            manifest: None,
            problems: Vec::new(),
        };
        let manifest = match self.read_manifest(&path).await? {
            None => {
                return Err(CheckpointError::RoundNotFound {
                    round,
                    path: path.to_string(),
                });
            }
            Some(Err(problem)) => {
                report.problems.push(problem);
                return Ok(Inspection {
                    report,
                    checkpoint: None,
                });
            }
            Some(Ok(m)) => m,
        };
        if manifest.round != round {
            report.problems.push(Problem::RoundMismatch {
                named: round,
                recorded: manifest.round,
            });
        }
        let computed = manifest.schema.hash();
        if computed != manifest.schema_hash {
            report.problems.push(Problem::SchemaHashMismatch {
                recorded: manifest.schema_hash,
                computed,
            });
        }
        let params_path = self.params_path(&manifest.params_cid);
        let expected = manifest.params_len();
        let params = match self.read(&params_path, expected).await? {
            Read::Missing => {
                report.problems.push(Problem::ParamsMissing {
                    path: params_path.to_string(),
                });
                None
            }
            // Longer than the schema needs: damaged, and not read into memory.
            Read::TooBig(found) => {
                report.problems.push(Problem::ParamsLength {
                    path: params_path.to_string(),
                    expected,
                    found,
                });
                None
            }
            Read::Bytes(bytes) => {
                check_params(&manifest, &params_path, &bytes, &mut report.problems)
            }
        };
        if let Some(cid) = manifest.strategy_state {
            // The strategy's state is part of the round: a damaged one makes it unusable.
            let path = self.params_path(&cid);
            match self.read(&path, expected).await? {
                Read::Missing => report.problems.push(Problem::ParamsMissing {
                    path: path.to_string(),
                }),
                Read::TooBig(found) => report.problems.push(Problem::ParamsLength {
                    path: path.to_string(),
                    expected,
                    found,
                }),
                Read::Bytes(bytes) => {
                    let computed = ContentHash::of(&bytes);
                    if bytes.len() as u64 != expected {
                        report.problems.push(Problem::ParamsLength {
                            path: path.to_string(),
                            expected,
                            found: bytes.len() as u64,
                        });
                    } else if computed != cid {
                        report.problems.push(Problem::ParamsHashMismatch {
                            path: path.to_string(),
                            expected: cid,
                            computed,
                        });
                    }
                }
            }
        }
        if let Some(cid) = manifest.model_card {
            // A published model's card is part of its checkpoint: without it a node cannot
            // rebuild the model's input side.
            if let Err(problem) = self.read_card(&self.card_path(&cid), &cid).await? {
                report.problems.push(problem);
            }
        }
        report.manifest = Some(manifest.clone());
        let checkpoint = match params {
            Some(p) if report.problems.is_empty() => Some((manifest, p)),
            _ => None,
        };
        Ok(Inspection { report, checkpoint })
    }

    /// `None` if there is no manifest at `path`, `Some(Err)` if it does not parse.
    async fn read_manifest(
        &self,
        path: &Path,
    ) -> Result<Option<std::result::Result<Manifest, Problem>>> {
        let too_big = |size: u64| Problem::ManifestUnreadable {
            path: path.to_string(),
            reason: format!("{size} bytes, more than a manifest can be ({MAX_MANIFEST_BYTES})"),
        };
        Ok(match self.read(path, MAX_MANIFEST_BYTES).await? {
            Read::Missing => None,
            Read::Bytes(bytes) => Some(Manifest::parse(path.as_ref(), &bytes)),
            Read::TooBig(size) => Some(Err(too_big(size))),
        })
    }

    /// Reads a whole object unless it is missing or larger than `limit` bytes.
    async fn read(&self, path: &Path, limit: u64) -> Result<Read> {
        let store_err = |source| CheckpointError::Store {
            op: "read",
            path: path.to_string(),
            source,
        };
        let got = match self.store.get_opts(path, GetOptions::default()).await {
            Ok(g) => g,
            Err(object_store::Error::NotFound { .. }) => return Ok(Read::Missing),
            Err(e) => return Err(store_err(e)),
        };
        if got.meta.size > limit {
            return Ok(Read::TooBig(got.meta.size));
        }
        match got.bytes().await {
            // The object grew after its metadata was read.
            Ok(b) if b.len() as u64 > limit => Ok(Read::TooBig(b.len() as u64)),
            Ok(b) => Ok(Read::Bytes(b.to_vec())),
            // Deleted between the metadata and the body.
            Err(object_store::Error::NotFound { .. }) => Ok(Read::Missing),
            Err(e) => Err(store_err(e)),
        }
    }

    /// Writes the parameter object unless an intact one exists; replaces a damaged one.
    /// Stores `params` as `params/<cid>` (no manifest; e.g. the initial model, so that it can be
    /// reloaded by its CID) and returns the CID.
    ///
    /// # Errors
    /// [`CheckpointError::Store`].
    pub async fn save_params(&self, params: &ParamVec) -> Result<ContentHash> {
        let cid = params.content_hash();
        self.put_params(&cid, params.to_le_bytes()).await?;
        Ok(cid)
    }

    /// The strategy state a manifest names ([`Manifest::strategy_state`], e.g. SCAFFOLD's
    /// server control variate), verified like the parameters; `None` if it names none.
    ///
    /// # Errors
    /// [`CheckpointError::ParamsUnavailable`] when the object is missing, of the wrong length
    /// or damaged, [`CheckpointError::Store`] when the store fails.
    pub async fn load_strategy_state(&self, manifest: &Manifest) -> Result<Option<ParamVec>> {
        match &manifest.strategy_state {
            None => Ok(None),
            Some(cid) => self
                .load_params(cid, Arc::new(manifest.schema.clone()))
                .await
                .map(Some),
        }
    }

    /// Reads the parameters named `cid` for `schema`, checking their length and hash.
    ///
    /// # Errors
    /// [`CheckpointError::ParamsUnavailable`] if the object is missing, of the wrong length or
    /// damaged; [`CheckpointError::Store`] if the store fails.
    pub async fn load_params(
        &self,
        cid: &ContentHash,
        schema: Arc<fl_core::Schema>,
    ) -> Result<ParamVec> {
        let path = self.params_path(cid);
        let len = schema.num_values() as u64 * 4;
        let unusable = |reason: String| CheckpointError::ParamsUnavailable { cid: *cid, reason };
        match self.read(&path, len).await? {
            Read::Missing => Err(unusable(format!("`{path}` does not exist"))),
            Read::TooBig(n) => Err(unusable(format!(
                "`{path}` has {n} bytes, the schema needs {len}"
            ))),
            Read::Bytes(b) if b.len() as u64 != len => Err(unusable(format!(
                "`{path}` has {} bytes, the schema needs {len}",
                b.len()
            ))),
            Read::Bytes(b) if ContentHash::of(&b) != *cid => {
                Err(unusable(format!("`{path}` does not hash to its name")))
            }
            Read::Bytes(b) => {
                ParamVec::from_le_bytes(schema, &b).map_err(|e| unusable(e.to_string()))
            }
        }
    }

    async fn put_params(&self, cid: &ContentHash, bytes: Vec<u8>) -> Result<()> {
        self.put_content(&self.params_path(cid), cid, bytes).await
    }

    /// Writes the content-addressed object `bytes` (hashing to `cid`) at `path` unless an
    /// intact one exists; replaces a damaged one.
    async fn put_content(&self, path: &Path, cid: &ContentHash, bytes: Vec<u8>) -> Result<()> {
        if self.put_create(path, bytes.clone()).await? {
            return Ok(());
        }
        // Same CID, so the same bytes, unless the stored object was damaged after it was written.
        match self.read(path, bytes.len() as u64).await? {
            Read::Bytes(stored)
                if stored.len() == bytes.len() && ContentHash::of(&stored) == *cid =>
            {
                tracing::debug!(%cid, "object already stored");
                Ok(())
            }
            _ => {
                tracing::warn!(path = %path, "replacing a damaged object");
                self.put_overwrite(path, bytes).await
            }
        }
    }

    /// The object at `relative` (`/`-separated, under the store's prefix).
    fn relative(&self, relative: &str) -> Path {
        relative
            .split('/')
            .filter(|p| !p.is_empty())
            .fold(self.prefix.clone(), |path, part| path.join(part))
    }

    /// Writes (or replaces) the object at `relative` under the store's prefix: the files other
    /// parties publish next to the checkpoints (evidence, validators' settlement signatures).
    ///
    /// # Errors
    /// [`CheckpointError::Store`].
    pub async fn put_file(&self, relative: &str, bytes: Vec<u8>) -> Result<Path> {
        let path = self.relative(relative);
        self.put_overwrite(&path, bytes).await?;
        Ok(path)
    }

    /// Reads the object at `relative`; `None` when it is missing.
    ///
    /// # Errors
    /// [`CheckpointError::Store`], or [`CheckpointError::TooLarge`] when it is larger than
    /// `limit` bytes.
    pub async fn get_file(&self, relative: &str, limit: u64) -> Result<Option<Vec<u8>>> {
        let path = self.relative(relative);
        match self.read(&path, limit).await? {
            Read::Missing => Ok(None),
            Read::Bytes(b) => Ok(Some(b)),
            Read::TooBig(size) => Err(CheckpointError::TooLarge {
                path: path.to_string(),
                size,
                limit,
            }),
        }
    }

    /// The names of the objects directly in folder `relative` (sorted; empty when none).
    ///
    /// # Errors
    /// [`CheckpointError::Store`].
    pub async fn list_files(&self, relative: &str) -> Result<Vec<String>> {
        let dir = self.relative(relative);
        let listing = match self.store.list_with_delimiter(Some(&dir)).await {
            Ok(l) => l.objects,
            Err(object_store::Error::NotFound { .. }) => Vec::new(),
            Err(source) => {
                return Err(CheckpointError::Store {
                    op: "list",
                    path: dir.to_string(),
                    source,
                });
            }
        };
        let mut names: Vec<String> = listing
            .iter()
            .filter_map(|o| o.location.filename().map(str::to_owned))
            .collect();
        names.sort_unstable();
        Ok(names)
    }

    /// Writes an evidence file of `round` for `member`
    /// (`evidence/<round:010>/<member>.json` under the store's prefix, see
    /// [`crate::qa::EvidenceFile::path`]), replacing one written before (a round re-run after
    /// a crash re-derives the same record).
    ///
    /// # Errors
    /// [`CheckpointError::Store`].
    pub async fn put_evidence(&self, round: u64, member: &str, bytes: Vec<u8>) -> Result<Path> {
        let mut path = self.prefix.clone();
        for part in crate::qa::EvidenceFile::path(round, member).split('/') {
            path = path.join(part);
        }
        self.put_overwrite(&path, bytes).await?;
        Ok(path)
    }

    /// Creates an object; `Ok(false)` if one already exists at `path`.
    async fn put_create(&self, path: &Path, bytes: Vec<u8>) -> Result<bool> {
        let opts = PutOptions::from(PutMode::Create);
        match self
            .store
            .put_opts(path, PutPayload::from(bytes), opts)
            .await
        {
            Ok(_) => Ok(true),
            Err(object_store::Error::AlreadyExists { .. }) => Ok(false),
            Err(source) => Err(CheckpointError::Store {
                op: "write",
                path: path.to_string(),
                source,
            }),
        }
    }

    async fn put_overwrite(&self, path: &Path, bytes: Vec<u8>) -> Result<()> {
        let opts = PutOptions::from(PutMode::Overwrite);
        self.store
            .put_opts(path, PutPayload::from(bytes), opts)
            .await
            .map(|_| ())
            .map_err(|source| CheckpointError::Store {
                op: "write",
                path: path.to_string(),
                source,
            })
    }
}

/// Checks parameter bytes against their manifest; the parameters when all is well.
fn check_params(
    manifest: &Manifest,
    path: &Path,
    bytes: &[u8],
    problems: &mut Vec<Problem>,
) -> Option<ParamVec> {
    let mut ok = true;
    let expected = manifest.params_len();
    if bytes.len() as u64 != expected {
        problems.push(Problem::ParamsLength {
            path: path.to_string(),
            expected,
            found: bytes.len() as u64,
        });
        ok = false;
    }
    let computed = ContentHash::of(bytes);
    if computed != manifest.params_cid {
        problems.push(Problem::ParamsHashMismatch {
            path: path.to_string(),
            expected: manifest.params_cid,
            computed,
        });
        ok = false;
    }
    if !ok {
        return None;
    }
    // The length was checked, so this cannot fail; stay total anyway.
    ParamVec::from_le_bytes(Arc::new(manifest.schema.clone()), bytes).ok()
}

/// `0000000007.json` -> 7; other names (staging files, strays) -> `None`.
fn parse_manifest_name(name: &str) -> Option<u64> {
    let digits = name.strip_suffix(".json")?;
    if digits.len() < 10 || !digits.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    digits.parse().ok()
}

/// What [`CheckpointStore::read`] found.
enum Read {
    Missing,
    TooBig(u64),
    Bytes(Vec<u8>),
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn manifest_names() {
        assert_eq!(parse_manifest_name("0000000007.json"), Some(7));
        assert_eq!(
            parse_manifest_name("12345678901.json"),
            Some(12_345_678_901)
        );
        assert_eq!(parse_manifest_name("7.json"), None);
        assert_eq!(parse_manifest_name("0000000007.json#1"), None);
        assert_eq!(parse_manifest_name("000000000x.json"), None);
    }

    #[test]
    fn rfc3339() {
        use std::time::Duration;
        assert_eq!(rfc3339_utc(UNIX_EPOCH), "1970-01-01T00:00:00Z");
        let t = UNIX_EPOCH + Duration::from_secs(1_709_210_096); // leap-year February
        assert_eq!(rfc3339_utc(t), "2024-02-29T12:34:56Z");
        let t = UNIX_EPOCH + Duration::from_secs(951_782_400); // 2000-02-29
        assert_eq!(rfc3339_utc(t), "2000-02-29T00:00:00Z");
    }

    use std::time::UNIX_EPOCH;
}
