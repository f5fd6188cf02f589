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
//! The round's metrics and client map (the contribution scores, reported compute, QA
//! references and client-to-address map that rewards are computed from) are committed too: when
//! the manifest has any, one more leaf, under the pseudo-address [`metrics_leaf_address`], holds
//! [`metrics_digest`] of them. A manifest whose scores were rewritten after anchoring no longer
//! matches its anchor. A published model's card ([`Manifest::model_card`]) is one more leaf,
//! under [`model_card_leaf_address`], holding the SHA-256 inside the card's CID: governance
//! votes on a model whose card is anchored with it, and a card swapped after anchoring no
//! longer matches.
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

mod anchorer;
mod settings;
mod verify;

pub use anchorer::*;
pub use settings::*;
pub use verify::*;

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

/// The pseudo-address of the leaf committing a round's metrics and client map: the last 20
/// bytes of `keccak256("daofl round metrics")`.
pub fn metrics_leaf_address() -> Address {
    Address::from_slice(&keccak256("daofl round metrics")[12..])
}

/// The pseudo-address of the leaf committing a published model's card: the last 20 bytes of
/// `keccak256("daofl model card")`.
pub fn model_card_leaf_address() -> Address {
    Address::from_slice(&keccak256("daofl model card")[12..])
}

/// SHA-256 of a round's metrics and client map, `None` when both are empty: for each metric in
/// key order the key's bytes, a zero byte and the value's IEEE-754 bits (big-endian), then a
/// zero byte, then for each client in key order its id, a zero byte, its participant id and a
/// zero byte. Exact (bits, not decimal text) and independent of the JSON encoding.
pub fn metrics_digest(
    metrics: &fl_core::Metrics,
    clients: &std::collections::BTreeMap<String, String>,
) -> Option<[u8; 32]> {
    if metrics.is_empty() && clients.is_empty() {
        return None;
    }
    let mut bytes = Vec::new();
    for (k, v) in metrics {
        bytes.extend_from_slice(k.as_bytes());
        bytes.push(0);
        bytes.extend_from_slice(&v.to_bits().to_be_bytes());
    }
    bytes.push(0);
    for (c, id) in clients {
        bytes.extend_from_slice(c.as_bytes());
        bytes.push(0);
        bytes.extend_from_slice(id.as_bytes());
        bytes.push(0);
    }
    Some(*fl_core::ContentHash::of(&bytes).as_bytes())
}

/// The participants of a manifest as leaves: address and update hash (zero when unknown), the
/// leaf of its metrics ([`metrics_digest`]) when it has any, and the leaf of its model card
/// when it names one.
pub fn participants(manifest: &Manifest) -> Vec<(Address, [u8; 32])> {
    leaves(
        manifest
            .participants
            .iter()
            .map(|p| (p.id.as_str(), p.update_hash)),
        metrics_digest(&manifest.metrics, &manifest.clients),
        manifest.model_card,
    )
}

/// The leaves of `participants` (id, update hash), a round's metrics digest and its model
/// card's CID.
pub(crate) fn leaves<'a>(
    participants: impl Iterator<Item = (&'a str, Option<fl_core::ContentHash>)>,
    metrics: Option<[u8; 32]>,
    model_card: Option<fl_core::ContentHash>,
) -> Vec<(Address, [u8; 32])> {
    let mut leaves: Vec<(Address, [u8; 32])> = participants
        .map(|(id, hash)| {
            (
                participant_address(id),
                hash.map_or([0; 32], |h| *h.as_bytes()),
            )
        })
        .collect();
    leaves.extend(metrics.map(|d| (metrics_leaf_address(), d)));
    leaves.extend(model_card.map(|c| (model_card_leaf_address(), *c.as_bytes())));
    leaves
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
