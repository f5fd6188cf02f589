//! Proposal analysis with a published model: load a checkpoint and its model card, check both,
//! and predict the outcome and kind of proposals (what `fl-client predict` runs, and what an
//! inference node will serve).
//!
//! [`Predictor::from_manifest`] takes a checkpoint manifest (`<store>/rounds/<round>.json`) or a
//! folder (a checkpoint store, or a run folder holding `checkpoints/`: then its newest round),
//! reads the model card the manifest names and checks its bytes against the card's CID, checks
//! that the card describes the manifest's parameters, rebuilds the featuriser and the model
//! from the card, and reads the parameters, checking their length and CID **before** loading
//! them. It reads the checkpoint store's local layout (`rounds/`, `params/<cid>`,
//! `cards/<cid>.json`, as `fl_aggregator::checkpoint` writes it) and only the manifest fields
//! it needs, so it does not depend on the aggregator.
//!
//! Input is JSON lines with at least `community`, `id`, `title` and `text` (the corpus format,
//! so corpus rows work as they are; other fields are ignored), read with the corpus loader's
//! bounds ([`MAX_LINE_BYTES`](crate::data::proposals::MAX_LINE_BYTES) per line,
//! [`MAX_FILE_BYTES`](crate::data::proposals::MAX_FILE_BYTES) per file) and the card's
//! [`InputLimits`]. Text is featurised as in training, term counts included, and weighed as
//! the card's architecture says; a TF-IDF model's inverse document frequencies come from its
//! parameters (their `document_frequency` tensor, checked against the manifest's CID with the
//! rest), so a node applies exactly the weights the model was trained with. Each output line is a [`Prediction`]: `community`, `id`, `label`
//! (`accepted` or `rejected`), `p_accepted`, `kind` and `model` (the parameters' CID).
//!
//! ```no_run
//! use fl_client::predict::{Predictor, ProposalInput};
//!
//! let predictor = Predictor::from_manifest("runs/proposals".as_ref())?;
//! let input = ProposalInput {
//!     community: "ethereum".into(),
//!     id: "EIP-9999".into(),
//!     title: "Increase the gas limit".into(),
//!     text: "This EIP raises the block gas limit to ...".into(),
//! };
//! for p in predictor.predict(&[input])? {
//!     println!("{} {}: {} ({:.2}), {}", p.community, p.id, p.label, p.p_accepted, p.kind);
//! }
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```

use std::io::{Read, Write};
use std::path::{Path, PathBuf};

use fl_core::{ContentHash, ParamVec, SchemaHash, Trainer, TrainerError};
use serde::{Deserialize, Serialize};

use crate::data::proposals::{self, ProposalKind, ProposalsError};
use crate::model_card::{CardError, InputLimits, MAX_CARD_BYTES, ModelCard};
use crate::text::HashingFeaturizer;
use crate::trainer::DeviceSpec;
use crate::trainer::proposals::{EncodedProposals, ProposalTrainer};

/// The manifest format versions this reader understands.
const MANIFEST_VERSION: u64 = 1;
/// Largest manifest read, in bytes (as the aggregator's checkpoint store).
const MAX_MANIFEST_BYTES: u64 = 64 << 20;

/// One proposal to analyse: the fields of a corpus row the model reads.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ProposalInput {
    /// The community it belongs to (e.g. `ethereum`): selects the community prior.
    pub community: String,
    /// Its id within the community (echoed in the output).
    pub id: String,
    /// Title.
    pub title: String,
    /// Body text.
    pub text: String,
}

impl From<&proposals::Proposal> for ProposalInput {
    /// The fields of a corpus row the model reads.
    fn from(p: &proposals::Proposal) -> Self {
        Self {
            community: p.community.clone(),
            id: p.id.clone(),
            title: p.title.clone(),
            text: p.text.clone(),
        }
    }
}

/// One proposal's analysis, as `fl-client predict` writes it (one JSON object a line).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Prediction {
    /// The input's community.
    pub community: String,
    /// The input's id.
    pub id: String,
    /// `accepted` when `p_accepted >= 0.5`, else `rejected`.
    pub label: String,
    /// Probability that the proposal is accepted.
    pub p_accepted: f32,
    /// The most likely kind of proposal.
    pub kind: ProposalKind,
    /// CID of the parameters that made the prediction.
    pub model: String,
}

/// A published proposal model, checked against its manifest and card, ready to predict.
#[derive(Debug)]
pub struct Predictor {
    card: ModelCard,
    featurizer: HashingFeaturizer,
    trainer: ProposalTrainer,
    model: String,
}

impl Predictor {
    /// Loads the checkpoint `path` names: a manifest file inside a checkpoint store's
    /// `rounds/`, a checkpoint store folder, or a run folder holding `checkpoints/` (a folder
    /// gives its newest round). See the [module docs](self) for what is checked.
    ///
    /// # Errors
    /// [`PredictError::Io`], [`PredictError::NoCheckpoint`], [`PredictError::Manifest`],
    /// [`PredictError::NoCard`], [`PredictError::Card`], [`PredictError::Params`],
    /// [`PredictError::Mismatch`], [`PredictError::Model`].
    pub fn from_manifest(path: &Path) -> Result<Self, PredictError> {
        let (store, manifest_path) = locate(path)?;
        let bytes = read_bounded(&manifest_path, MAX_MANIFEST_BYTES)?;
        let manifest = ManifestView::parse(&manifest_path, &bytes)?;
        Self::load(&store, &manifest_path, manifest)
    }

    /// Loads the checkpoint whose parameters have content address `params_cid` (e.g. the
    /// model the DAO's registry promoted) from the store `path` names (a checkpoint store or a
    /// run folder): the newest round whose manifest names `params_cid`, checked as
    /// [`from_manifest`](Self::from_manifest) checks, so the bytes loaded hash to `params_cid`.
    ///
    /// # Errors
    /// As [`from_manifest`](Self::from_manifest); [`PredictError::NoCheckpoint`] when no
    /// manifest of the store names `params_cid`.
    pub fn with_params(path: &Path, params_cid: &ContentHash) -> Result<Self, PredictError> {
        let (store, _) = locate(path)?;
        let mut rounds = round_manifests(&store.join("rounds"))?;
        rounds.sort_by_key(|(round, _)| std::cmp::Reverse(*round));
        for (_, manifest_path) in rounds {
            let Ok(bytes) = read_bounded(&manifest_path, MAX_MANIFEST_BYTES) else {
                continue;
            };
            let Ok(manifest) = ManifestView::parse(&manifest_path, &bytes) else {
                continue;
            };
            if manifest.params_cid == *params_cid {
                return Self::load(&store, &manifest_path, manifest);
            }
        }
        Err(PredictError::NoCheckpoint {
            path: path.to_owned(),
            reason: format!("no manifest of the store names parameters {params_cid}"),
        })
    }

    fn load(
        store: &Path,
        manifest_path: &Path,
        manifest: ManifestView,
    ) -> Result<Self, PredictError> {
        let manifest_path = manifest_path.to_owned();
        let card_cid = manifest.model_card.ok_or_else(|| PredictError::NoCard {
            path: manifest_path.clone(),
        })?;
        let card_path = store.join("cards").join(format!("{card_cid}.json"));
        let card_bytes = read_bounded(&card_path, MAX_CARD_BYTES as u64)?;
        let card = ModelCard::from_verified_bytes(&card_bytes, &card_cid).map_err(|source| {
            PredictError::Card {
                path: card_path,
                source,
            }
        })?;
        if card.params_cid != manifest.params_cid || card.schema_hash != manifest.schema_hash {
            return Err(PredictError::Mismatch(format!(
                "the card describes parameters {} (schema {}), the manifest names {} (schema {})",
                card.params_cid,
                card.schema_hash.to_hex(),
                manifest.params_cid,
                manifest.schema_hash.to_hex()
            )));
        }
        let trainer = empty_trainer(&card)?;
        let schema = trainer.schema();
        if schema.hash() != manifest.schema_hash {
            return Err(PredictError::Mismatch(format!(
                "the card's architecture has schema {}, the manifest records {}",
                schema.hash().to_hex(),
                manifest.schema_hash.to_hex()
            )));
        }
        let params_path = store.join("params").join(manifest.params_cid.to_string());
        let expected = schema.num_values() as u64 * 4;
        let bytes = read_bounded(&params_path, expected)?;
        let bad = |reason: String| PredictError::Params {
            path: params_path.clone(),
            reason,
        };
        if bytes.len() as u64 != expected {
            return Err(bad(format!(
                "{} bytes, the model needs {expected}",
                bytes.len()
            )));
        }
        let computed = ContentHash::of(&bytes);
        if computed != manifest.params_cid {
            return Err(bad(format!(
                "the bytes hash to {computed}, the manifest names {}: they were altered",
                manifest.params_cid
            )));
        }
        let params = ParamVec::from_le_bytes(schema, &bytes).map_err(|e| bad(e.to_string()))?;
        Self::with_trainer(card, trainer, &params)
    }

    /// A predictor for `params` described by `card` (already verified, e.g. in memory).
    ///
    /// # Errors
    /// [`PredictError::Card`] for a card this build cannot run, [`PredictError::Mismatch`]
    /// when `params` are not the card's, [`PredictError::Model`].
    pub fn new(card: ModelCard, params: &ParamVec) -> Result<Self, PredictError> {
        card.check().map_err(|source| PredictError::Card {
            path: PathBuf::new(),
            source,
        })?;
        let trainer = empty_trainer(&card)?;
        Self::with_trainer(card, trainer, params)
    }

    fn with_trainer(
        card: ModelCard,
        mut trainer: ProposalTrainer,
        params: &ParamVec,
    ) -> Result<Self, PredictError> {
        if params.content_hash() != card.params_cid {
            return Err(PredictError::Mismatch(format!(
                "the parameters hash to {}, the card describes {}",
                params.content_hash(),
                card.params_cid
            )));
        }
        trainer.set_parameters(params)?;
        if trainer.needs_document_frequencies() {
            return Err(PredictError::Mismatch(
                "the card's model weighs text by TF-IDF, and the parameters hold no document \
                 frequencies (a model before its first round)"
                    .into(),
            ));
        }
        let featurizer = card.featurizer().map_err(|source| PredictError::Card {
            path: PathBuf::new(),
            source,
        })?;
        Ok(Self {
            model: card.params_cid.to_string(),
            card,
            featurizer,
            trainer,
        })
    }

    /// The model card.
    pub fn card(&self) -> &ModelCard {
        &self.card
    }

    /// CID of the parameters (the `model` field of every prediction).
    pub fn model(&self) -> &str {
        &self.model
    }

    /// Analyses `inputs`, one [`Prediction`] each, in order. Deterministic: the same inputs and
    /// model give the same bits.
    ///
    /// # Errors
    /// [`PredictError::Input`] (naming the input's index) for an input beyond the card's
    /// [`InputLimits`], [`PredictError::Model`].
    pub fn predict(&self, inputs: &[ProposalInput]) -> Result<Vec<Prediction>, PredictError> {
        let mut text_ids = Vec::with_capacity(inputs.len());
        for (i, input) in inputs.iter().enumerate() {
            check_input(input, &self.card.input_limits).map_err(|message| PredictError::Input {
                what: format!("input {i}"),
                message,
            })?;
            // With counts, as training encoded them (TF-IDF weighs by them).
            text_ids.push(self.featurizer.id_counts(&input.title, &input.text));
        }
        // The model pads a batch to its longest bag: batches of similar lengths waste less.
        let mut order: Vec<usize> = (0..inputs.len()).collect();
        order.sort_by_key(|&i| text_ids[i].len());
        let mut encoded = EncodedProposals::new();
        for (row, &i) in order.iter().enumerate() {
            let community = &inputs[i].community;
            let meta = self.featurizer.meta_ids(&[("community", community)]);
            encoded.push_counted(&text_ids[i], &meta, None, 0);
            encoded.set_prior(row, self.card.prior(community));
        }
        let mut sorted = self.trainer.predict(&encoded)?.into_iter();
        let mut predictions = vec![None; inputs.len()];
        for &i in &order {
            predictions[i] = sorted.next();
        }
        Ok(inputs
            .iter()
            .zip(predictions.into_iter().flatten())
            .map(|(input, p)| Prediction {
                community: input.community.clone(),
                id: input.id.clone(),
                label: if p.p_accepted >= 0.5 {
                    "accepted"
                } else {
                    "rejected"
                }
                .into(),
                p_accepted: p.p_accepted,
                kind: p.kind,
                model: self.model.clone(),
            })
            .collect())
    }
}

/// Reads proposals to analyse from a JSON-lines file (gzip or plain), checking each line
/// against `limits`; blank lines are skipped.
///
/// # Errors
/// [`PredictError::Io`], [`PredictError::Lines`] (a line too long, the file too large, a line
/// not UTF-8), [`PredictError::Input`] naming the line of a malformed object, a missing field
/// or a field beyond `limits`.
pub fn read_inputs(path: &Path, limits: &InputLimits) -> Result<Vec<ProposalInput>, PredictError> {
    let file = std::fs::File::open(path).map_err(|source| PredictError::Io {
        path: path.to_owned(),
        source,
    })?;
    let what = path.display().to_string();
    let mut inputs = Vec::new();
    let result = proposals::for_each_line(file, &what, |line, text| {
        let bad = |message: String| ProposalsError::Malformed { line, message };
        if inputs.len() >= proposals::MAX_ROWS {
            return Err(ProposalsError::TooManyRows {
                limit: proposals::MAX_ROWS,
            });
        }
        let input: ProposalInput = serde_json::from_str(text).map_err(|e| bad(e.to_string()))?;
        check_input(&input, limits).map_err(bad)?;
        inputs.push(input);
        Ok(())
    });
    match result {
        Ok(()) => Ok(inputs),
        Err(ProposalsError::Malformed { line, message }) => Err(PredictError::Input {
            what: format!("{what}, line {line}"),
            message,
        }),
        Err(source) => Err(PredictError::Lines(source)),
    }
}

/// Analyses every proposal of `input` (see [`read_inputs`]) and writes one [`Prediction`] a
/// line to `output`; returns how many. Nothing is written when the input is refused.
///
/// # Errors
/// As [`read_inputs`] and [`Predictor::predict`], and [`PredictError::Io`] when `output`
/// cannot be written.
pub fn predict_file(
    predictor: &Predictor,
    input: &Path,
    output: &Path,
) -> Result<usize, PredictError> {
    let inputs = read_inputs(input, &predictor.card().input_limits)?;
    let predictions = predictor.predict(&inputs)?;
    let io = |source| PredictError::Io {
        path: output.to_owned(),
        source,
    };
    let file = std::fs::File::create(output).map_err(io)?;
    let mut w = std::io::BufWriter::new(file);
    for p in &predictions {
        serde_json::to_writer(&mut w, p).map_err(|e| io(e.into()))?;
        w.write_all(b"\n").map_err(io)?;
    }
    w.flush().map_err(io)?;
    Ok(predictions.len())
}

/// The checks of one input against `limits`.
fn check_input(input: &ProposalInput, limits: &InputLimits) -> Result<(), String> {
    for (field, value) in [("community", &input.community), ("id", &input.id)] {
        if value.trim().is_empty() {
            return Err(format!("`{field}` is empty"));
        }
        if value.len() > limits.max_name_bytes {
            return Err(format!(
                "`{field}` has {} bytes, the model accepts at most {}",
                value.len(),
                limits.max_name_bytes
            ));
        }
    }
    for (field, value, limit) in [
        ("title", &input.title, limits.max_title_bytes),
        ("text", &input.text, limits.max_text_bytes),
    ] {
        if value.len() > limit {
            return Err(format!(
                "`{field}` has {} bytes, the model accepts at most {limit}",
                value.len()
            ));
        }
    }
    Ok(())
}

/// An evaluation-only trainer of the card's architecture (its parameters are replaced).
fn empty_trainer(card: &ModelCard) -> Result<ProposalTrainer, PredictError> {
    Ok(ProposalTrainer::new(
        &card.architecture,
        DeviceSpec::Cpu,
        EncodedProposals::new(),
        None,
        0,
    )?)
}

/// The checkpoint store and the manifest `path` names.
fn locate(path: &Path) -> Result<(PathBuf, PathBuf), PredictError> {
    if path.is_file() {
        let store = path
            .parent()
            .filter(|p| p.file_name().is_some_and(|n| n == "rounds"))
            .and_then(Path::parent)
            .ok_or_else(|| PredictError::NoCheckpoint {
                path: path.to_owned(),
                reason: "a manifest must sit in a checkpoint store's `rounds/` folder".into(),
            })?;
        let store = if store.as_os_str().is_empty() {
            Path::new(".")
        } else {
            store
        };
        return Ok((store.to_owned(), path.to_owned()));
    }
    let store = if path.join("rounds").is_dir() {
        path.to_owned()
    } else if path.join("checkpoints").join("rounds").is_dir() {
        path.join("checkpoints")
    } else {
        return Err(PredictError::NoCheckpoint {
            path: path.to_owned(),
            reason: "neither a manifest nor a folder with `rounds/` or `checkpoints/rounds/`"
                .into(),
        });
    };
    let rounds = store.join("rounds");
    let newest = round_manifests(&rounds)?
        .into_iter()
        .max_by_key(|(round, _)| *round)
        .ok_or_else(|| PredictError::NoCheckpoint {
            path: path.to_owned(),
            reason: format!("`{}` holds no manifest", rounds.display()),
        })?;
    Ok((store, newest.1))
}

/// The round manifests (`<round, 10+ digits>.json`) of a store's `rounds/` folder.
fn round_manifests(rounds: &Path) -> Result<Vec<(u64, PathBuf)>, PredictError> {
    let entries = std::fs::read_dir(rounds).map_err(|source| PredictError::Io {
        path: rounds.to_owned(),
        source,
    })?;
    Ok(entries
        .filter_map(|e| e.ok())
        .filter_map(|e| {
            let name = e.file_name().to_str()?.to_owned();
            let digits = name.strip_suffix(".json")?;
            (digits.len() >= 10 && digits.bytes().all(|b| b.is_ascii_digit()))
                .then(|| digits.parse::<u64>().ok())
                .flatten()
                .map(|round| (round, e.path()))
        })
        .collect())
}

/// Reads a file of at most `limit` bytes (one more is read to tell a larger one).
fn read_bounded(path: &Path, limit: u64) -> Result<Vec<u8>, PredictError> {
    let io = |source| PredictError::Io {
        path: path.to_owned(),
        source,
    };
    let file = std::fs::File::open(path).map_err(io)?;
    let mut bytes = Vec::new();
    file.take(limit + 1).read_to_end(&mut bytes).map_err(io)?;
    if bytes.len() as u64 > limit {
        return Err(PredictError::TooLarge {
            path: path.to_owned(),
            limit,
        });
    }
    Ok(bytes)
}

/// The fields of a checkpoint manifest a predictor reads (the aggregator's `Manifest` has
/// more; unknown fields are ignored here, the aggregator checks them).
#[derive(Deserialize)]
struct ManifestView {
    version: u64,
    #[serde(with = "fl_core::hash::cid_string")]
    params_cid: ContentHash,
    schema_hash: SchemaHash,
    #[serde(default, with = "fl_core::hash::cid_string::option")]
    model_card: Option<ContentHash>,
}

impl ManifestView {
    fn parse(path: &Path, bytes: &[u8]) -> Result<Self, PredictError> {
        let bad = |reason: String| PredictError::Manifest {
            path: path.to_owned(),
            reason,
        };
        let view: Self = serde_json::from_slice(bytes).map_err(|e| bad(e.to_string()))?;
        if view.version == 0 || view.version > MANIFEST_VERSION {
            return Err(bad(format!(
                "format version {}, this build reads {MANIFEST_VERSION}",
                view.version
            )));
        }
        Ok(view)
    }
}

/// Why a model could not be loaded or a prediction made.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum PredictError {
    /// A file could not be read or written.
    #[error("{}: {source}", path.display())]
    Io {
        /// The file.
        path: PathBuf,
        /// The underlying error.
        #[source]
        source: std::io::Error,
    },
    /// A file is larger than it can be.
    #[error("{} is larger than the limit of {limit} bytes", path.display())]
    TooLarge {
        /// The file.
        path: PathBuf,
        /// The limit.
        limit: u64,
    },
    /// The path names no checkpoint.
    #[error("{}: no checkpoint: {reason}", path.display())]
    NoCheckpoint {
        /// The path given.
        path: PathBuf,
        /// Why.
        reason: String,
    },
    /// The manifest is unreadable.
    #[error("manifest {}: {reason}", path.display())]
    Manifest {
        /// The manifest.
        path: PathBuf,
        /// What is wrong.
        reason: String,
    },
    /// The manifest names no model card (a training round, not a published model).
    #[error(
        "manifest {} names no model card: only a published model (with its card) can predict",
        path.display()
    )]
    NoCard {
        /// The manifest.
        path: PathBuf,
    },
    /// The model card is missing its CID, unreadable, or describes a model this build cannot
    /// run.
    #[error("{}: {source}", path.display())]
    Card {
        /// The card file (empty for a card given in memory).
        path: PathBuf,
        /// What is wrong.
        #[source]
        source: CardError,
    },
    /// The parameter object is missing its CID or of the wrong length.
    #[error("parameters {}: {reason}", path.display())]
    Params {
        /// The parameter object.
        path: PathBuf,
        /// What is wrong.
        reason: String,
    },
    /// The card, the manifest and the parameters do not describe the same model.
    #[error("the checkpoint does not hold together: {0}")]
    Mismatch(String),
    /// An input line could not be read (too long, not UTF-8, the file too large).
    #[error(transparent)]
    Lines(ProposalsError),
    /// An input is malformed, lacks a field, or exceeds the model's input limits.
    #[error("{what}: {message}")]
    Input {
        /// Which input: `FILE, line N` or `input I`.
        what: String,
        /// What is wrong with it.
        message: String,
    },
    /// The model failed.
    #[error(transparent)]
    Model(#[from] TrainerError),
}

#[cfg(test)]
pub(crate) mod tests;
