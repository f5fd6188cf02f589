//! Chain anchoring of checkpoints: every checkpoint the aggregator writes is anchored on an EVM
//! chain through [`chain_anchor`], its receipt recorded in the round's manifest, and anyone
//! holding a checkpoint can check it against the chain with [`verify_checkpoint`] (what
//! `fl-aggregator verify` runs).
//!
//! # What is anchored
//! For each round, a [`CheckpointAnchor`] built from the manifest by [`checkpoint_anchor`]: the
//! federation (`keccak256` of `federation_id`), the round, the SHA-256 of the parameter bytes
//! (the digest inside `params_cid`), the CID string, the Merkle root of the participants and
//! the ε spent so far (from `privacy`; unbounded without DP). A participant's leaf is its
//! address and update hash (zero when the aggregator never saw the update, e.g. under secure
//! aggregation). Participants known by a member address (`0x…`, what `fl-aggregator run`
//! records) are leaves under that address; participants known by a client id (`client-7`, what
//! the in-process simulation records) get a **pseudo-address** derived from the id by
//! [`participant_address`] (the last 20 bytes of `keccak256("daofl participant:" + id)`): a
//! deterministic label, not an account anyone holds a key for.
//!
//! # Manifest and resume
//! Once a round is anchored, its manifest's `anchor` field holds a [`ManifestAnchor`]: the
//! receipt (transaction hash and block, or the embedded chain's block), the hashes anchored and,
//! for a round anchored in a batch, its inclusion proof (verifying a batched round needs it).
//! A manifest without `anchor` is a checkpoint written but not anchored (an endpoint outage, a
//! crash in between): [`RoundAnchorer::resume`] anchors those when the aggregator starts. A
//! round the registry already holds with the same data (a crash after the anchor but before the
//! manifest was updated) is recognised and only recorded, so a round is anchored exactly once.
//!
//! # Backends
//! `[chain]` of the federation file selects the backend ([`ChainSettings`]): the embedded EVM
//! (the default backend; **an EVM, not a network**: a verifier trusts whoever holds its state
//! file) or a registry on a chain reached over JSON-RPC. An RPC outage never stops the
//! federation: the anchor stays in the backend's durable queue, the error is logged, and the
//! round is anchored later (with a later round, or at the next start).
//!
//! ```no_run
//! use fl_aggregator::anchoring::{ChainSettings, RegistryReader, RegistrySource, RoundAnchorer, verify_checkpoint};
//! use fl_aggregator::checkpoint::CheckpointStore;
//!
//! # async fn run(manifest: fl_aggregator::checkpoint::Manifest) -> Result<(), Box<dyn std::error::Error>> {
//! let settings = ChainSettings::embedded("runs/demo".into());
//! let store = CheckpointStore::open("runs/demo/checkpoints")?;
//! let mut anchorer = RoundAnchorer::open(&settings)?;
//! anchorer.checkpoint_written(&store, &manifest).await?; // after `store.save(...)`
//!
//! let reader = RegistryReader::open(&RegistrySource::from_settings(&settings))?;
//! let params = store.params_bytes(&manifest).await?;
//! let report = verify_checkpoint(reader.chain(), &manifest, &params, None).await?;
//! println!("{report}");
//! # Ok(())
//! # }
//! ```

use std::fmt;
use std::path::{Path, PathBuf};

use chain_anchor::alloy::primitives::{Address, B256, keccak256};
use chain_anchor::{
    Anchor, AnchorReceipt, AnchoredCheckpoint, BackendKind, ChainAnchor, ChainConfig,
    CheckpointAnchor, CheckpointClaim, EMBEDDED_CHAIN_ID, EPSILON_UNBOUNDED, EmbeddedAnchor,
    FederationId, KeySource, ParticipantsTree, RoundBatch, RpcAnchor, RpcSettings, STATE_FILE,
    Verdict, epsilon_micros,
};
use fl_core::config::FederationConfig;
use serde::{Deserialize, Serialize};

use crate::checkpoint::{CheckpointError, CheckpointStore, Manifest};

pub use chain_anchor;

/// Why anchoring or verifying failed (a checkpoint that does not match its anchor is a
/// [`Verdict`], not an error).
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum AnchoringError {
    /// `[chain]` of the federation file, or the chain settings given, are unusable.
    #[error("[chain]: {0}")]
    Config(String),
    /// The chain backend failed (endpoint down, registry refused, state file unusable).
    #[error(transparent)]
    Chain(#[from] chain_anchor::Error),
    /// The checkpoint store failed.
    #[error(transparent)]
    Checkpoint(#[from] CheckpointError),
    /// A manifest's `anchor` field is not a [`ManifestAnchor`].
    #[error("round {round}: the manifest's `anchor` field is unreadable: {reason}")]
    MalformedAnchor {
        /// The round.
        round: u64,
        /// What serde said.
        reason: String,
    },
}

impl AnchoringError {
    /// Whether retrying later may succeed (an endpoint or store outage), as opposed to a
    /// refusal that will not change (a conflicting anchor, a revert, bad settings).
    pub fn is_transient(&self) -> bool {
        matches!(
            self,
            Self::Chain(
                chain_anchor::Error::Rpc { .. } | chain_anchor::Error::ReceiptTimeout { .. }
            ) | Self::Checkpoint(CheckpointError::Store { .. })
        )
    }
}

/// Shorthand for results of this module.
pub type Result<T, E = AnchoringError> = std::result::Result<T, E>;

/// `[chain]` as the aggregator reads it: the backend and the folder its relative paths (the
/// embedded state, the RPC queue, a key file) are resolved against.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ChainSettings {
    /// The backend.
    pub chain: ChainConfig,
    /// The run folder: `run_dir` of `[chain]`, else the parent of a local checkpoint folder.
    pub run_dir: PathBuf,
}

impl ChainSettings {
    /// The embedded backend with its state in `run_dir/chain`, one round per anchor.
    pub fn embedded(run_dir: PathBuf) -> Self {
        Self {
            chain: ChainConfig::default(),
            run_dir,
        }
    }

    /// The settings of a federation file, `None` when it has no `[chain]` (no anchoring).
    ///
    /// # Errors
    /// [`AnchoringError::Config`] naming the field at fault.
    pub fn from_federation(config: &FederationConfig) -> Result<Option<Self>> {
        config
            .chain
            .as_ref()
            .map(|table| Self::parse(table, &config.aggregator.checkpoints))
            .transpose()
    }

    /// Parses a `[chain]` table (already path-resolved by [`FederationConfig::parse`]) for a
    /// federation whose checkpoints are at `checkpoints` (a store URL or directory). A table
    /// without `backend` is the embedded backend.
    ///
    /// # Errors
    /// [`AnchoringError::Config`] naming the field at fault; also when the checkpoints are not
    /// in a local directory and `run_dir` is not given.
    pub fn parse(table: &toml::Table, checkpoints: &str) -> Result<Self> {
        let mut table = table.clone();
        let run_dir = match table.remove("run_dir") {
            Some(toml::Value::String(dir)) => PathBuf::from(dir),
            Some(_) => return Err(AnchoringError::Config("`run_dir` must be a string".into())),
            None => local_parent(checkpoints).ok_or_else(|| {
                AnchoringError::Config(format!(
                    "the checkpoints (`{checkpoints}`) are not in a local directory: set \
                     `run_dir`, the folder for the chain state and the anchor queue"
                ))
            })?,
        };
        table
            .entry("backend")
            .or_insert_with(|| toml::Value::String("embedded".into()));
        let chain: ChainConfig =
            toml::Value::Table(table)
                .try_into()
                .map_err(|e: toml::de::Error| {
                    AnchoringError::Config(e.to_string().trim().to_owned())
                })?;
        if let ChainConfig::Rpc {
            key_file, key_env, ..
        } = &chain
            && key_file.is_some() == key_env.is_some()
        {
            return Err(AnchoringError::Config(
                "set exactly one of `key_file` and `key_env` (the aggregator's signing key)".into(),
            ));
        }
        Ok(Self { chain, run_dir })
    }
}

/// The parent of a local checkpoint folder (`./checkpoints`, `/abs/dir`, `file:///abs/dir`).
fn local_parent(checkpoints: &str) -> Option<PathBuf> {
    let dir = match checkpoints.strip_prefix("file://") {
        Some(path) => path,
        None if checkpoints.contains("://") => return None,
        None => checkpoints,
    };
    let parent = Path::new(dir.trim_end_matches('/')).parent()?;
    Some(if parent.as_os_str().is_empty() {
        PathBuf::from(".")
    } else {
        parent.to_owned()
    })
}

/// The address a manifest participant is a leaf under: its own for a member address (`0x…`),
/// else a pseudo-address derived from the id (see the [module docs](self)).
pub fn participant_address(id: &str) -> Address {
    match id.parse::<Address>() {
        Ok(address) if id.starts_with("0x") => address,
        _ => {
            let digest = keccak256(format!("daofl participant:{id}"));
            Address::from_slice(&digest[12..])
        }
    }
}

/// The participants of a manifest as leaves: address and update hash (zero when unknown).
pub fn participants(manifest: &Manifest) -> Vec<(Address, [u8; 32])> {
    manifest
        .participants
        .iter()
        .map(|p| {
            (
                participant_address(&p.id),
                p.update_hash.map_or([0; 32], |h| *h.as_bytes()),
            )
        })
        .collect()
}

/// What is anchored for a manifest's round.
///
/// # Errors
/// [`AnchoringError::Chain`] when two participants map to one address.
pub fn checkpoint_anchor(manifest: &Manifest) -> Result<CheckpointAnchor> {
    let tree = ParticipantsTree::new(&participants(manifest))?;
    Ok(CheckpointAnchor {
        federation: FederationId::from_name(&manifest.federation_id),
        round: manifest.round,
        params_hash: B256::from(*manifest.params_cid.as_bytes()),
        cid: manifest.params_cid.to_string(),
        participants_root: tree.root(),
        epsilon_micros: epsilon_micros(manifest.privacy.map(|p| p.epsilon)),
    })
}

/// The manifest's `anchor` field once its round is anchored.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ManifestAnchor {
    /// The transaction that anchored the round (or its batch).
    pub receipt: AnchorReceipt,
    /// SHA-256 of the parameters, as anchored.
    pub params_hash: B256,
    /// Root of the participants tree, as anchored.
    pub participants_root: B256,
    /// ε anchored, in millionths ([`EPSILON_UNBOUNDED`] without DP).
    pub epsilon_micros: u64,
    /// The round's inclusion proof in its batch, when it was anchored in one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub batch_proof: Option<Vec<B256>>,
}

impl ManifestAnchor {
    /// The anchor recorded in `manifest`, `None` if the round is not anchored yet.
    ///
    /// # Errors
    /// [`AnchoringError::MalformedAnchor`] when the field is not one this build wrote.
    pub fn of(manifest: &Manifest) -> Result<Option<Self>> {
        manifest
            .anchor
            .as_ref()
            .map(|v| {
                serde_json::from_value(v.clone()).map_err(|e| AnchoringError::MalformedAnchor {
                    round: manifest.round,
                    reason: e.to_string(),
                })
            })
            .transpose()
    }
}

/// Anchors a federation's checkpoints as they are written, one round per transaction or
/// `batch_rounds` rounds per batch, and records each receipt in its manifest.
///
/// Rounds wait here until they are anchored: a round whose anchor failed for a transient reason
/// (endpoint down) is retried with the next round and, after a restart, by
/// [`RoundAnchorer::resume`].
#[derive(Debug)]
pub struct RoundAnchorer {
    chain: ChainAnchor,
    batch_rounds: usize,
    waiting: Vec<CheckpointAnchor>,
    last: Option<(u64, AnchorReceipt)>,
}

impl RoundAnchorer {
    /// Opens the backend `settings` describe (contacts no endpoint yet).
    ///
    /// # Errors
    /// [`AnchoringError::Chain`] for an unusable state folder, queue folder or key.
    pub fn open(settings: &ChainSettings) -> Result<Self> {
        let chain = ChainAnchor::open(&settings.chain, &settings.run_dir)?;
        Ok(Self::new(chain, settings.chain.batch_rounds()))
    }

    /// An anchorer over an open backend.
    pub fn new(chain: ChainAnchor, batch_rounds: u32) -> Self {
        Self {
            chain,
            batch_rounds: batch_rounds.max(1) as usize,
            waiting: Vec::new(),
            last: None,
        }
    }

    /// The backend.
    pub fn chain(&self) -> &ChainAnchor {
        &self.chain
    }

    /// Rounds written but not anchored yet, ascending.
    pub fn waiting(&self) -> Vec<u64> {
        self.waiting.iter().map(|c| c.round).collect()
    }

    /// The newest round anchored by this anchorer and its receipt.
    pub fn last_anchor(&self) -> Option<&(u64, AnchorReceipt)> {
        self.last.as_ref()
    }

    /// After a start: queues every manifest without an anchor (the newest rounds, back to the
    /// newest anchored one) and anchors what is ready; returns the rounds anchored.
    ///
    /// # Errors
    /// The first failure; what is not anchored keeps waiting (see [`AnchoringError::is_transient`]).
    pub async fn resume(&mut self, store: &CheckpointStore) -> Result<Vec<u64>> {
        let mut unanchored = Vec::new();
        for round in store.rounds().await?.into_iter().rev() {
            match store.manifest(round).await {
                Ok(m) if m.anchor.is_some() => break,
                Ok(m) => unanchored.push(m),
                Err(e @ CheckpointError::Store { .. }) => return Err(e.into()),
                Err(e) => tracing::warn!(round, "not anchoring an unreadable manifest: {e}"),
            }
        }
        for m in unanchored.iter().rev() {
            self.enqueue(m)?;
        }
        self.anchor_ready(store, false).await
    }

    /// After `manifest` was written: anchors its round, or keeps it until its batch is full;
    /// returns the rounds anchored (earlier ones that waited included).
    ///
    /// # Errors
    /// As [`RoundAnchorer::resume`].
    pub async fn checkpoint_written(
        &mut self,
        store: &CheckpointStore,
        manifest: &Manifest,
    ) -> Result<Vec<u64>> {
        self.enqueue(manifest)?;
        self.anchor_ready(store, false).await
    }

    /// At the end of a run: anchors every waiting round, a partial batch included.
    ///
    /// # Errors
    /// As [`RoundAnchorer::resume`].
    pub async fn finish(&mut self, store: &CheckpointStore) -> Result<Vec<u64>> {
        self.anchor_ready(store, true).await
    }

    fn enqueue(&mut self, manifest: &Manifest) -> Result<()> {
        let anchor = checkpoint_anchor(manifest)?;
        if self.waiting.iter().all(|w| w.round < anchor.round) {
            self.waiting.push(anchor);
        }
        Ok(())
    }

    async fn anchor_ready(&mut self, store: &CheckpointStore, all: bool) -> Result<Vec<u64>> {
        let mut done = Vec::new();
        while !self.waiting.is_empty() {
            // Consecutive rounds of one federation, at most one batch.
            let mut take = 1;
            while take < self.waiting.len().min(self.batch_rounds)
                && self.waiting[take].round == self.waiting[take - 1].round + 1
                && self.waiting[take].federation == self.waiting[0].federation
            {
                take += 1;
            }
            let gap = take < self.waiting.len();
            if take < self.batch_rounds && !gap && !all {
                break; // the batch is not full yet
            }
            let group: Vec<CheckpointAnchor> = self.waiting[..take].to_vec();
            match self.anchor_group(store, group).await {
                Ok(covered) => {
                    let top = covered.last().copied().unwrap_or(0);
                    self.waiting.retain(|w| w.round > top);
                    done.extend(covered);
                }
                Err(e) if e.is_transient() => return Err(e),
                Err(e) => {
                    // Refused for good: the manifests stay without anchor, the next rounds go on.
                    self.waiting.drain(..take);
                    return Err(e);
                }
            }
        }
        Ok(done)
    }

    /// Anchors `group` (one round, or one batch), or recognises it on chain, and records the
    /// receipts in the manifests; returns the rounds recorded.
    async fn anchor_group(
        &mut self,
        store: &CheckpointStore,
        group: Vec<CheckpointAnchor>,
    ) -> Result<Vec<u64>> {
        let batched = self.batch_rounds > 1;
        if self.chain.backend() == BackendKind::Embedded
            && let Some(found) = self.found_on_chain(store, &group, batched).await?
        {
            return self.record(store, found).await;
        }
        let done = if batched {
            let batch = RoundBatch::new(group)?;
            Anchored {
                receipt: self.chain.anchor_batch(&batch).await?,
                rounds: batch.rounds().to_vec(),
                batch: Some(batch),
            }
        } else {
            Anchored {
                receipt: self.chain.anchor(&group[0]).await?,
                rounds: group,
                batch: None,
            }
        };
        self.record(store, done).await
    }

    /// The registry's record of `group`'s first round when it holds one with the same data
    /// (for a batch: every round of the batch as the manifests give it).
    ///
    /// The RPC backend does this check itself before each send; the embedded one does not.
    async fn found_on_chain(
        &self,
        store: &CheckpointStore,
        group: &[CheckpointAnchor],
        batched: bool,
    ) -> Result<Option<Anchored>> {
        let first = &group[0];
        let Some(anchored) = self.chain.lookup(first.federation, first.round).await? else {
            return Ok(None);
        };
        let conflict = |anchored| chain_anchor::Error::Conflict {
            federation: first.federation,
            round: first.round,
            anchored: Box::new(anchored),
        };
        let (rounds, batch) = match &anchored {
            AnchoredCheckpoint::Single(record) if !batched && first.matches(record) => {
                (vec![first.clone()], None)
            }
            AnchoredCheckpoint::Batched(b) if batched => {
                let mut rounds = Vec::new();
                for round in b.first_round..=b.last_round {
                    rounds.push(checkpoint_anchor(&store.manifest(round).await?)?);
                }
                let batch = RoundBatch::new(rounds)?;
                if batch.root() != b.root {
                    return Err(conflict(anchored.clone()).into());
                }
                (batch.rounds().to_vec(), Some(batch))
            }
            _ => return Err(conflict(anchored.clone()).into()),
        };
        let last_round = rounds[rounds.len() - 1].round;
        let event = self
            .chain
            .events(Some(first.federation), 0)
            .await?
            .into_iter()
            .find(|e| *e.kind.rounds().start() == rounds[0].round);
        let receipt = AnchorReceipt {
            backend: self.chain.backend(),
            chain_id: EMBEDDED_CHAIN_ID,
            registry: self.chain.registry(),
            tx_hash: event.as_ref().map_or(B256::ZERO, |e| e.tx_hash),
            block_number: event.as_ref().map_or(0, |e| e.block_number),
            gas_used: 0,
            effective_gas_price: 0,
            first_round: rounds[0].round,
            last_round,
            batch_root: batch.as_ref().map(RoundBatch::root),
            already_anchored: true,
        };
        tracing::info!(
            round = first.round,
            "round already anchored on chain; recording it in the manifest"
        );
        Ok(Some(Anchored {
            rounds,
            receipt,
            batch,
        }))
    }

    /// Writes the receipt (and batch proofs) into the manifests of `rounds`.
    async fn record(&mut self, store: &CheckpointStore, done: Anchored) -> Result<Vec<u64>> {
        let Anchored {
            rounds,
            receipt,
            batch,
        } = done;
        let mut recorded = Vec::new();
        for c in &rounds {
            // Found on chain: a round whose manifest already holds its receipt keeps it.
            if receipt.already_anchored && store.manifest(c.round).await?.anchor.is_some() {
                recorded.push(c.round);
                continue;
            }
            let entry = ManifestAnchor {
                receipt: receipt.clone(),
                params_hash: c.params_hash,
                participants_root: c.participants_root,
                epsilon_micros: c.epsilon_micros,
                batch_proof: batch.as_ref().and_then(|b| b.proof(c.round)),
            };
            let value =
                serde_json::to_value(&entry).map_err(|e| AnchoringError::MalformedAnchor {
                    round: c.round,
                    reason: e.to_string(),
                })?;
            store.set_anchor(c.round, value).await?;
            recorded.push(c.round);
        }
        if let Some(&round) = recorded.last() {
            tracing::info!(
                first_round = receipt.first_round,
                last_round = receipt.last_round,
                block = receipt.block_number,
                tx = %receipt.tx_hash,
                gas = receipt.gas_used,
                "checkpoint anchored"
            );
            self.last = Some((round, receipt));
        }
        Ok(recorded)
    }
}

/// Rounds anchored by one transaction, with its receipt and, for a batch, the batch.
struct Anchored {
    rounds: Vec<CheckpointAnchor>,
    receipt: AnchorReceipt,
    batch: Option<RoundBatch>,
}

/// Where a verifier reads the registry.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RegistrySource {
    /// An embedded chain's state folder (it must exist: a verifier never creates a chain).
    Embedded {
        /// The folder holding the state file.
        state_dir: PathBuf,
    },
    /// A registry on a chain reached over JSON-RPC.
    Rpc {
        /// The endpoint.
        url: String,
        /// The registry's address.
        registry: Address,
        /// The chain id the endpoint must serve, when known.
        chain_id: Option<u64>,
    },
}

impl RegistrySource {
    /// The registry the aggregator with `settings` anchors to.
    pub fn from_settings(settings: &ChainSettings) -> Self {
        match &settings.chain {
            ChainConfig::Rpc {
                url,
                registry,
                chain_id,
                ..
            } => Self::Rpc {
                url: url.clone(),
                registry: *registry,
                chain_id: *chain_id,
            },
            ChainConfig::Embedded { state_dir, .. } => Self::Embedded {
                state_dir: settings
                    .run_dir
                    .join(state_dir.as_deref().unwrap_or(Path::new("chain"))),
            },
            _ => Self::Embedded {
                state_dir: settings.run_dir.join("chain"),
            },
        }
    }
}

/// A read-only handle on a registry for verification: it never sends a transaction.
///
/// The RPC backend needs a key to exist, so a throwaway one (written, mode 0600, with an empty
/// queue, to a temporary folder removed on drop) stands in; nothing is ever signed with it.
#[derive(Debug)]
pub struct RegistryReader {
    chain: ChainAnchor,
    _scratch: Option<tempfile::TempDir>,
}

impl RegistryReader {
    /// Opens the registry `source` names.
    ///
    /// # Errors
    /// [`AnchoringError::Config`] when an embedded state folder holds no chain,
    /// [`AnchoringError::Chain`] for a malformed URL or an unusable state file.
    pub fn open(source: &RegistrySource) -> Result<Self> {
        match source {
            RegistrySource::Embedded { state_dir } => {
                if !state_dir.join(STATE_FILE).is_file() {
                    return Err(AnchoringError::Config(format!(
                        "no embedded chain at {} (no {STATE_FILE}): give the run folder's chain \
                         state (--chain-state) or the federation file (--config)",
                        state_dir.display()
                    )));
                }
                Ok(Self {
                    chain: ChainAnchor::Embedded(EmbeddedAnchor::open(state_dir)?),
                    _scratch: None,
                })
            }
            RegistrySource::Rpc {
                url,
                registry,
                chain_id,
            } => {
                let scratch = tempfile::tempdir().map_err(|e| {
                    AnchoringError::Config(format!("cannot create a temporary folder: {e}"))
                })?;
                let key_path = scratch.path().join("read-only.key");
                write_private(
                    &key_path,
                    &format!("{}\n", keccak256(b"daofl read-only verifier")),
                )
                .map_err(|e| AnchoringError::Config(format!("temporary key file: {e}")))?;
                let mut settings = RpcSettings::new(
                    url.clone(),
                    *registry,
                    KeySource::File(key_path),
                    scratch.path().join("queue"),
                );
                settings.chain_id = *chain_id;
                settings.retry.attempts = 2;
                Ok(Self {
                    chain: ChainAnchor::Rpc(Box::new(RpcAnchor::connect(settings)?)),
                    _scratch: Some(scratch),
                })
            }
        }
    }

    /// The registry, for [`verify_checkpoint`].
    pub fn chain(&self) -> &ChainAnchor {
        &self.chain
    }
}

/// Writes `text` to a new file readable by its owner only.
fn write_private(path: &Path, text: &str) -> std::io::Result<()> {
    use std::io::Write;
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create_new(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        options.mode(0o600);
    }
    options.open(path)?.write_all(text.as_bytes())
}

/// What [`verify_checkpoint`] found; `Display` prints a one-line verdict and the details.
#[derive(Debug, Clone)]
pub struct CheckpointVerification {
    /// The federation the manifest names.
    pub federation_id: String,
    /// The round the manifest names.
    pub round: u64,
    /// The CID the manifest names.
    pub cid: String,
    /// SHA-256 of the parameter bytes, recomputed.
    pub computed_hash: B256,
    /// Participants the manifest lists.
    pub participants: usize,
    /// ε the manifest records, in millionths.
    pub epsilon_micros: u64,
    /// The member whose inclusion was checked.
    pub member: Option<Address>,
    /// The anchor recorded in the manifest (where to look on chain).
    pub recorded: Option<ManifestAnchor>,
    /// The registry read.
    pub registry: Address,
    /// The verdict.
    pub verdict: Verdict,
}

impl CheckpointVerification {
    /// Whether the checkpoint verified.
    pub fn is_valid(&self) -> bool {
        self.verdict.is_valid()
    }
}

impl fmt::Display for CheckpointVerification {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let what = format!("round {} of `{}`", self.round, self.federation_id);
        match &self.verdict {
            Verdict::Valid { anchored } => {
                let how = match anchored {
                    AnchoredCheckpoint::Single(r) => {
                        format!("anchored by {} at time {}", r.aggregator, r.anchored_at)
                    }
                    AnchoredCheckpoint::Batched(b) => format!(
                        "anchored in the batch of rounds {}..={} by {}",
                        b.first_round, b.last_round, b.aggregator
                    ),
                };
                writeln!(f, "VALID: {what} matches its anchor ({how})")?;
            }
            Verdict::MissingAnchor { latest_round } => writeln!(
                f,
                "INVALID (missing anchor): nothing is anchored for {what}; latest anchored round: {}",
                latest_round.map_or("none".into(), |r| r.to_string())
            )?,
            Verdict::TamperedParameters { computed, anchored } => writeln!(
                f,
                "INVALID (tampered parameters): the parameters hash to {computed}, the registry \
                 anchored {anchored} for {what}"
            )?,
            Verdict::WrongRound {
                claimed,
                anchored_round,
            } => writeln!(
                f,
                "INVALID (wrong round): these parameters are anchored for round {anchored_round}, \
                 the manifest claims round {claimed}"
            )?,
            Verdict::CidMismatch { claimed, anchored } => writeln!(
                f,
                "INVALID (CID mismatch): the manifest names {claimed}, the registry anchored \
                 {anchored} for {what}"
            )?,
            Verdict::ParticipantsMismatch { computed, anchored } => writeln!(
                f,
                "INVALID (participants mismatch): the manifest's participants give root \
                 {computed}, the registry anchored {anchored} for {what}"
            )?,
            Verdict::EpsilonMismatch { claimed, anchored } => writeln!(
                f,
                "INVALID (epsilon mismatch): the manifest records {}, the registry anchored {} \
                 for {what}",
                epsilon_text(*claimed),
                epsilon_text(*anchored)
            )?,
            Verdict::ParticipantNotIncluded { member } => writeln!(
                f,
                "INVALID (participant not included): {member} is not among the participants \
                 anchored for {what}"
            )?,
            Verdict::BatchProofMissing {
                first_round,
                last_round,
            } => writeln!(
                f,
                "INVALID (batch proof missing): {what} is anchored in the batch of rounds \
                 {first_round}..={last_round}, but the manifest holds no inclusion proof"
            )?,
            Verdict::NotInBatch {
                first_round,
                last_round,
            } => writeln!(
                f,
                "INVALID (not in batch): {what} with its proof does not lead to the root of the \
                 batch of rounds {first_round}..={last_round}: something was altered"
            )?,
            other => writeln!(f, "INVALID: {other:?}")?,
        }
        writeln!(
            f,
            "  parameters    {} (sha256 {})",
            self.cid, self.computed_hash
        )?;
        writeln!(f, "  participants  {}", self.participants)?;
        writeln!(f, "  epsilon       {}", epsilon_text(self.epsilon_micros))?;
        if let Some(member) = self.member {
            let included = !matches!(self.verdict, Verdict::ParticipantNotIncluded { .. });
            let state = if !self.is_valid() && included {
                "not checked"
            } else if included {
                "included"
            } else {
                "NOT included"
            };
            writeln!(f, "  member        {member}: {state}")?;
        }
        write!(f, "  registry      {}", self.registry)?;
        if let Some(a) = &self.recorded {
            let r = &a.receipt;
            let backend = match r.backend {
                BackendKind::Embedded => {
                    "embedded EVM (not a network: trust rests with the state file's holder)"
                }
                BackendKind::Rpc => "JSON-RPC chain",
            };
            write!(
                f,
                "\n  recorded      block {} tx {} on chain {}: {backend}",
                r.block_number, r.tx_hash, r.chain_id
            )?;
            if r.first_round != r.last_round {
                write!(f, ", batch of rounds {}..={}", r.first_round, r.last_round)?;
            }
        }
        Ok(())
    }
}

fn epsilon_text(micros: u64) -> String {
    if micros == EPSILON_UNBOUNDED {
        "unbounded (no differential privacy)".into()
    } else {
        format!("{:.6}", micros as f64 / 1e6)
    }
}

/// Checks a checkpoint against the registry behind `anchor`: recomputes the SHA-256 of
/// `params` (the parameter object's bytes as stored), the participants root from the
/// manifest, finds the round's anchor (alone, or in a batch with the proof kept in the
/// manifest) and compares every field; with `member`, checks that member's inclusion too.
///
/// # Errors
/// Only when the registry cannot be read or the manifest's anchor field is unreadable; a
/// checkpoint that does not match is a [`Verdict`] in the result.
pub async fn verify_checkpoint<A: Anchor>(
    anchor: &A,
    manifest: &Manifest,
    params: &[u8],
    member: Option<Address>,
) -> Result<CheckpointVerification> {
    let recorded = ManifestAnchor::of(manifest)?;
    let leaves = participants(manifest);
    let cid = manifest.params_cid.to_string();
    let epsilon = epsilon_micros(manifest.privacy.map(|p| p.epsilon));
    let member_leaf = member.map(|m| {
        let hash = leaves
            .iter()
            .find(|(a, _)| *a == m)
            .map_or([0; 32], |(_, h)| *h);
        (m, hash)
    });
    let claim = CheckpointClaim {
        federation: FederationId::from_name(&manifest.federation_id),
        round: manifest.round,
        params,
        cid: &cid,
        participants: &leaves,
        epsilon_micros: epsilon,
        member: member_leaf,
        batch_proof: recorded.as_ref().and_then(|r| r.batch_proof.as_deref()),
        from_block: 0,
    };
    let verdict = chain_anchor::verify(anchor, &claim).await?;
    Ok(CheckpointVerification {
        federation_id: manifest.federation_id.clone(),
        round: manifest.round,
        computed_hash: chain_anchor::params_hash(params),
        cid,
        participants: leaves.len(),
        epsilon_micros: epsilon,
        member,
        recorded,
        registry: anchor.registry(),
        verdict,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn participant_addresses() {
        let a = "0x00000000000000000000000000000000000000aA";
        assert_eq!(participant_address(a), a.parse::<Address>().unwrap());
        let c = participant_address("client-3");
        assert_eq!(c, participant_address("client-3"));
        assert_ne!(c, participant_address("client-4"));
    }

    #[test]
    fn chain_table_parses_with_clear_errors() {
        let t: toml::Table = toml::from_str("").unwrap();
        let s = ChainSettings::parse(&t, "/srv/fed/checkpoints").unwrap();
        assert_eq!(s.chain, ChainConfig::default());
        assert_eq!(s.run_dir, Path::new("/srv/fed"));
        let s = ChainSettings::parse(&t, "file:///srv/fed/ckpt/").unwrap();
        assert_eq!(s.run_dir, Path::new("/srv/fed"));
        let e = ChainSettings::parse(&t, "s3://bucket/fed").unwrap_err();
        assert!(e.to_string().contains("run_dir"), "{e}");
        let t: toml::Table = toml::from_str("run_dir = \"/r\"\nbatch_rounds = 4").unwrap();
        let s = ChainSettings::parse(&t, "s3://bucket/fed").unwrap();
        assert_eq!(
            (s.run_dir.as_path(), s.chain.batch_rounds()),
            (Path::new("/r"), 4)
        );
        let t: toml::Table = toml::from_str("backend = \"embedded\"\nbatch_round = 4").unwrap();
        let e = ChainSettings::parse(&t, "c").unwrap_err();
        assert!(e.to_string().contains("batch_round"), "{e}");
        let t: toml::Table = toml::from_str(
            "backend = \"rpc\"\nurl = \"http://127.0.0.1:8545\"\nqueue_dir = \"q\"\n\
             registry = \"0x5FbDB2315678afecb367f032d93F642f64180aa3\"",
        )
        .unwrap();
        let e = ChainSettings::parse(&t, "c").unwrap_err();
        assert!(e.to_string().contains("key_file"), "{e}");
        let t: toml::Table = toml::from_str("backend = \"rpc\"\nurl = \"x\"").unwrap();
        let e = ChainSettings::parse(&t, "c").unwrap_err();
        assert!(e.to_string().contains("registry"), "{e}");
    }
}
