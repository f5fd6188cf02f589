//! Publishing the proposal federation's final model: its [`ModelCard`], a checkpoint holding
//! the parameters and the card (content-addressed, the card named by the manifest), anchored on
//! the run's embedded EVM as the quickstart anchors its rounds. What `fl-client predict` loads.

use std::path::{Path, PathBuf};

use fl_aggregator::anchoring::chain_anchor::AnchorReceipt;
use fl_aggregator::anchoring::{AnchoringError, ChainSettings, RoundAnchorer};
use fl_aggregator::checkpoint::{
    CheckpointError, CheckpointMeta, CheckpointStore, Manifest, Participant,
};
use fl_client::data::proposals;
use fl_client::model_card::{CardError, CommunityShare, ModelCard, TrainingData};
use fl_core::{ContentHash, ParamVec};

use crate::proposals::{ModelScores, PreparedProposals, ProposalsConfig, outcome_counts};

/// A published model: where its manifest is and how it was anchored.
#[derive(Debug, Clone)]
pub struct PublishedModel {
    /// The round's manifest (what `fl-client predict --model` and `fl-aggregator verify`
    /// take).
    pub manifest_path: PathBuf,
    /// The manifest as written (before the anchor was recorded in it).
    pub manifest: Manifest,
    /// The card's CID.
    pub card: ContentHash,
    /// The anchor's receipt; `None` when anchoring failed (the error is printed).
    pub anchor: Option<AnchorReceipt>,
}

/// Why the model could not be published.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum PublishError {
    /// The card could not be built or encoded.
    #[error(transparent)]
    Card(#[from] CardError),
    /// The shipped corpus or split could not be read to name them.
    #[error("cannot hash {path}: {source}")]
    Io {
        /// The file.
        path: PathBuf,
        /// The underlying error.
        source: std::io::Error,
    },
    /// The checkpoint could not be written.
    #[error(transparent)]
    Checkpoint(#[from] CheckpointError),
    /// The chain backend could not be opened.
    #[error(transparent)]
    Anchoring(#[from] AnchoringError),
}

/// The card of `params`, the federation's model trained per `config` on `prepared` (the
/// shipped corpus and split) over `rounds` rounds, scoring `scores` on the test split.
///
/// # Errors
/// [`PublishError::Io`] when the shipped corpus or split cannot be read to hash them.
pub fn model_card(
    config: &ProposalsConfig,
    prepared: &PreparedProposals,
    params: &ParamVec,
    scores: &ModelScores,
    rounds: u64,
) -> Result<ModelCard, PublishError> {
    let cid_of = |path: PathBuf| match std::fs::read(&path) {
        Ok(bytes) => Ok(ContentHash::of(&bytes)),
        Err(source) => Err(PublishError::Io { path, source }),
    };
    let mut communities = std::collections::BTreeMap::new();
    for (name, data) in prepared.members.iter().zip(&prepared.member_data) {
        let (accepted, rejected) = outcome_counts(data);
        let share = CommunityShare {
            accepted,
            rejected,
            open: data.len() - accepted - rejected,
            test: prepared
                .test_communities
                .iter()
                .filter(|c| *c == name)
                .count(),
            prior: if data.is_empty() { 0.0 } else { data.prior(0) },
        };
        communities.insert(name.clone(), share);
    }
    let mut metrics = scores.pooled.to_metrics();
    for (community, s) in &scores.per_community {
        for (k, v) in s.to_metrics() {
            metrics.insert(format!("{community}.{k}"), v);
        }
    }
    metrics.retain(|_, v| v.is_finite());
    let training = TrainingData {
        corpus: "daofl governance proposals (fl-client/data/proposals/proposals.jsonl.gz, \
                 outcome statements stripped)"
            .into(),
        corpus_cid: cid_of(proposals::shipped_path())?,
        sources: prepared.sources.clone(),
        split: "shipped test_ids.json: stratified (community x label) 80/20 of the decided \
                rows; open rows train the kind head only"
            .into(),
        split_cid: cid_of(proposals::shipped_test_ids_path())?,
        communities,
        procedure: procedure(config, prepared.members.len(), rounds),
    };
    Ok(ModelCard::new(
        config.model.clone(),
        training,
        metrics,
        params.schema().hash(),
        params.content_hash(),
    ))
}

/// How the federation trained, in words.
fn procedure(config: &ProposalsConfig, members: usize, rounds: u64) -> String {
    let mut text = format!(
        "federated, {members} members (one per community, no text pooled), {rounds} rounds of \
         {} local epochs ({:?}), batch {}, learning rate {}, seed {}",
        config.fit.local_epochs,
        config.model.optimizer,
        config.fit.batch_size,
        config.fit.learning_rate,
        config.seed
    );
    if let Some(opt) = &config.server_optimizer {
        text.push_str(&format!(", server optimiser {opt:?}"));
    }
    if config.proximal_mu > 0.0 {
        text.push_str(&format!(", FedProx mu {}", config.proximal_mu));
    }
    if config.secure_aggregation.is_some() {
        text.push_str(", SecAgg+");
    }
    if config.shuffled_labels {
        text.push_str(", SHUFFLED TRAINING LABELS (control run)");
    }
    text
}

/// Writes `card` and `params` as round `round` of `federation_id`, contributed by `members`
/// (recorded by name: each a leaf under a pseudo-address), into a fresh checkpoint store
/// `run_dir/checkpoints` (one left by an earlier run is removed, and so is the embedded chain
/// `run_dir/chain`) and anchors it on a new embedded EVM there. A chain failure is printed and
/// leaves the checkpoint unanchored.
///
/// # Errors
/// [`PublishError::Card`], [`PublishError::Checkpoint`], [`PublishError::Anchoring`] when the
/// chain backend cannot be opened, [`PublishError::Io`] when an old folder cannot be removed.
pub fn publish(
    run_dir: &Path,
    federation_id: &str,
    round: u64,
    members: &[String],
    config_hash: ContentHash,
    card: &ModelCard,
    params: &ParamVec,
) -> Result<PublishedModel, PublishError> {
    let checkpoints = run_dir.join("checkpoints");
    for dir in [checkpoints.clone(), run_dir.join("chain")] {
        match std::fs::remove_dir_all(&dir) {
            Err(e) if e.kind() != std::io::ErrorKind::NotFound => {
                return Err(PublishError::Io {
                    path: dir,
                    source: e,
                });
            }
            _ => {}
        }
    }
    let store = CheckpointStore::open(&checkpoints.to_string_lossy())?;
    let mut anchorer = RoundAnchorer::open(&ChainSettings::embedded(run_dir.to_owned()))?;
    let bytes = card.to_canonical_json()?;
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|source| PublishError::Io {
            path: run_dir.to_owned(),
            source,
        })?;
    runtime.block_on(async {
        let cid = store.put_card(bytes).await?;
        let meta = CheckpointMeta::new(federation_id, round, config_hash)
            .with_participants(members.iter().map(Participant::new))
            .with_metrics(card.metrics.clone())
            .with_model_card(cid);
        let manifest = store.save(meta, params).await?;
        let anchored = match anchorer.checkpoint_written(&store, &manifest).await {
            Ok(_) => anchorer.finish(&store).await.map(|_| ()),
            Err(e) => Err(e),
        };
        if let Err(e) = anchored {
            eprintln!("anchoring: {e} (the checkpoint stays unanchored)");
        }
        Ok(PublishedModel {
            manifest_path: checkpoints.join("rounds").join(format!("{round:010}.json")),
            card: cid,
            anchor: anchorer
                .last_anchor()
                .filter(|(r, _)| *r == round)
                .map(|(_, receipt)| receipt.clone()),
            manifest,
        })
    })
}
