//! The proposal-analysis federation: 13 governance communities (one member each) train the
//! DAO's proposal model (fastText-style bag of embeddings, outcome and kind heads) with FedAvg
//! over the in-process federation, no member sharing a text; the same model trained centrally
//! on the pooled texts and each community's model trained alone are the comparisons, all
//! scored on the pooled test side of the shipped split.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use fl_aggregator::{Engine, EngineConfig, EngineEvent, InProcessFederation};
use fl_client::data::proposals::{self, Corpus};
use fl_client::partition;
use fl_client::trainer::proposals::{
    CalibratedThreshold, ClassScores, EncodedProposals, OutcomeScores, ProposalModelSpec,
    ProposalTrainer, ThresholdCounts, score,
};
use fl_client::{DeviceSpec, Trainer};
use fl_core::{FitConfig, ParamVec, StrategyConfig, derive_seed};

/// Everything that defines a proposals run. Deserialisable (TOML), every field defaulting to
/// the example's value.
#[derive(Debug, Clone, PartialEq, serde::Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ProposalsConfig {
    /// Federated rounds.
    pub rounds: u64,
    /// Run seed: initialisation, selection, data order.
    pub seed: u64,
    /// The model every member trains.
    pub model: ProposalModelSpec,
    /// Where every model of the run trains and evaluates: `"cpu"` (the default), `"wgpu"`,
    /// `"wgpu:N"` or `"cuda:N"` (the GPU ones need the examples built with that feature).
    pub device: DeviceSpec,
    /// Local training settings of a round (the central and local-only models train for
    /// `rounds * local_epochs` epochs with the same batch size and learning rate).
    pub fit: FitConfig,
    /// Threads training members in parallel (0: one per core).
    pub workers: usize,
    /// Secure aggregation (SecAgg+): the aggregator learns only the sum of the updates.
    pub secure_aggregation: Option<fl_core::secure::SecureAggregationConfig>,
    /// An optimiser the aggregator applies to the round's mean update (`[server_optimizer]
    /// kind = "fedadam"` or `"fedavgm"`, as in a federation file); none: plain FedAvg.
    pub server_optimizer: Option<fl_core::strategy::ServerOptimizerConfig>,
    /// FedProx's μ (`[strategy] proximal_mu`): members add `μ/2·‖w - w_global‖²` to their local
    /// loss (0: off).
    pub proximal_mu: f64,
    /// Train the federation (off: only the comparisons, e.g. to tune the model centrally).
    pub federated: bool,
    /// Train the same model centrally on the pooled training data too.
    pub compare: bool,
    /// Train each community's model alone too.
    pub compare_local: bool,
    /// Epochs of the central and local-only models; `None`: `rounds * local_epochs`, the passes
    /// over its data each member makes in the federation. The default, 15, is where the
    /// central model's test macro-F1 stopped improving in a sweep (so it flatters the central
    /// comparison: it was read off the test split).
    pub alone_epochs: Option<u32>,
    /// The "shuffled labels" control: permute the outcome labels of each member's training
    /// proposals before training (test labels stay true); the model must fall to the
    /// community-majority baseline.
    pub shuffled_labels: bool,
    /// Contributed data: each member also trains on the proposals of its community that the
    /// DAO's annotators labelled by consensus (`[contributed]`: the index database, the
    /// content store and the annotation epochs to read).
    pub contributed: Option<ContributedData>,
    /// Calibrate the outcome head's decision threshold by federated evaluation
    /// (`[calibration]`, see [`Calibration`]); none: predict `rejected` below 0.5.
    pub calibration: Option<Calibration>,
    /// Tuning mode: score everything on the members' held-out validation proposals
    /// ([`hold_out`] with `validation_fraction`, default 0.2, training on the rest) instead of
    /// the test split, so settings are chosen without looking at the test split.
    pub tuning: Option<Calibration>,
}

/// How the outcome head's decision threshold is calibrated without pooling a text.
///
/// Each member holds out a stratified `validation_fraction` of its decided training
/// proposals; the federation (and, for the comparison, the central model) trains on the rest
/// with the run's settings; each member counts the global model's outcome predictions on its
/// held-out proposals at every threshold of a grid
/// ([`ThresholdCounts`]); the summed counts pick
/// the threshold with the best macro-F1. The final model is then trained on all the training
/// proposals as without calibration, and the threshold is folded into its outcome bias
/// ([`ProposalTrainer::calibrate_outcome_threshold`]), so the published checkpoint predicts
/// with it. The test split is never looked at.
#[derive(Debug, Clone, PartialEq, serde::Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Calibration {
    /// Share of each member's decided training proposals held out, per outcome class
    /// (rounded to the nearest count), in (0, 0.5].
    pub validation_fraction: f64,
}

impl Default for Calibration {
    /// A fifth held out.
    fn default() -> Self {
        Self {
            validation_fraction: 0.2,
        }
    }
}

/// Where contributed, consensus-labelled proposals are read from
/// ([`fl_client::contribute::training::labelled_proposals`]).
#[derive(Debug, Clone, PartialEq, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ContributedData {
    /// The index database (`sqlite://...` or `postgres://...`), as `fl-client contribute
    /// --db` writes it.
    pub db: String,
    /// The content store folder (`fl-client contribute --store`).
    pub store: std::path::PathBuf,
    /// The annotation epochs whose consensus labels count (the latest wins).
    pub epochs: Vec<u64>,
}

/// Reads the contributed proposals `data` names (checked through the content store).
///
/// # Errors
/// [`ProposalsRunError::Contributed`]: the database or the content store cannot be read, or a
/// labelled record is refused.
pub fn load_contributed(
    data: &ContributedData,
) -> Result<Vec<fl_client::contribute::training::LabelledProposal>, ProposalsRunError> {
    let failed = |e: &dyn std::fmt::Display| ProposalsRunError::Contributed(e.to_string());
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| failed(&e))?;
    runtime.block_on(async {
        let db = fl_db::Store::open(&data.db).await.map_err(|e| failed(&e))?;
        let content =
            fl_client::contribute::ContentStore::open(&data.store).map_err(|e| failed(&e))?;
        fl_client::contribute::training::labelled_proposals(&db, &content, &data.epochs, None)
            .await
            .map_err(|e| failed(&e))
    })
}

impl Default for ProposalsConfig {
    /// 30 rounds of 2 local epochs (Adam, learning rate 0.005, batches of 32), the default
    /// [`ProposalModelSpec`], comparisons on; the central and local-only models train 15
    /// epochs (see [`ProposalsConfig::alone_epochs`]).
    fn default() -> Self {
        Self {
            rounds: 30,
            seed: 2026,
            model: ProposalModelSpec::default(),
            device: DeviceSpec::Cpu,
            fit: FitConfig {
                local_epochs: 2,
                batch_size: 32,
                learning_rate: 0.005,
                ..Default::default()
            },
            workers: 0,
            secure_aggregation: None,
            federated: true,
            compare: true,
            compare_local: true,
            alone_epochs: Some(15),
            shuffled_labels: false,
            contributed: None,
            server_optimizer: None,
            proximal_mu: 0.0,
            calibration: None,
            tuning: None,
        }
    }
}

/// The corpus encoded once, split into members and the pooled test set.
pub struct PreparedProposals {
    /// Member names (communities), in member order.
    pub members: Vec<String>,
    /// Each member's training proposals (decided and open).
    pub member_data: Vec<EncodedProposals>,
    /// The pooled test set (decided proposals of the shipped split).
    pub test: EncodedProposals,
    /// The community of each test example.
    pub test_communities: Vec<String>,
    /// Featurisation wall time.
    pub encode_wall: Duration,
    /// The source repositories and snapshot commits of the corpus rows (`owner/name@commit`),
    /// sorted and distinct: what a model card names as the data's snapshot.
    pub sources: Vec<String>,
}

/// Why a proposals run failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ProposalsRunError {
    /// The corpus could not be read.
    #[error(transparent)]
    Data(#[from] proposals::ProposalsError),
    /// A trainer failed.
    #[error(transparent)]
    Trainer(#[from] fl_core::TrainerError),
    /// The configuration is unusable.
    #[error("invalid configuration: {0}")]
    Config(String),
    /// The contributed data could not be read.
    #[error("contributed data: {0}")]
    Contributed(String),
}

/// Loads and encodes the shipped corpus and split.
pub fn prepare(config: &ProposalsConfig) -> Result<PreparedProposals, ProposalsRunError> {
    let corpus = proposals::load_shipped()?;
    let split = corpus.shipped_split()?;
    let contributed = match &config.contributed {
        Some(data) => load_contributed(data)?,
        None => Vec::new(),
    };
    prepare_with(config, &corpus, &split, &contributed)
}

/// Encodes `corpus` per `config.model` and splits it: one member per community holding its
/// training rows, and the pooled test rows.
pub fn prepare_from(
    config: &ProposalsConfig,
    corpus: &Corpus,
    split: &proposals::Split,
) -> Result<PreparedProposals, ProposalsRunError> {
    prepare_with(config, corpus, split, &[])
}

/// As [`prepare_from`], each member also holding the `contributed` proposals of its community
/// (with their consensus labels) next to its own; contributed proposals of a community with
/// no member are left out.
pub fn prepare_with(
    config: &ProposalsConfig,
    corpus: &Corpus,
    split: &proposals::Split,
    contributed: &[fl_client::contribute::training::LabelledProposal],
) -> Result<PreparedProposals, ProposalsRunError> {
    let featurizer = config
        .model
        .featurizer()
        .map_err(ProposalsRunError::Config)?;
    let start = Instant::now();
    let rows = |idx: &[usize]| {
        idx.iter()
            .map(|&i| &corpus.proposals[i])
            .collect::<Vec<_>>()
    };
    let train_rows = rows(&split.train);
    let test_rows = rows(&split.test);
    let communities: Vec<&str> = train_rows.iter().map(|p| p.community.as_str()).collect();
    let (members, parts) = partition::by_field(&communities);
    let mut member_data = Vec::with_capacity(parts.len());
    // Each member's community prior: the acceptance log-odds of its own training labels.
    let mut priors = std::collections::HashMap::new();
    for (m, part) in parts.iter().enumerate() {
        let mut data = EncodedProposals::encode(&featurizer, part.iter().map(|&i| train_rows[i]));
        let theirs: Vec<_> = contributed
            .iter()
            .filter(|p| p.record.community == members[m])
            .cloned()
            .collect();
        fl_client::contribute::training::encode_into(&mut data, &featurizer, &theirs);
        let data = if config.shuffled_labels {
            data.with_shuffled_outcomes(derive_seed(config.seed, "shuffle", m as u64))
        } else {
            data
        };
        let prior = data.acceptance_log_odds();
        priors.insert(members[m], prior);
        member_data.push(data.with_prior(prior));
    }
    // A test proposal carries its community's prior (what that member knows).
    let mut test = EncodedProposals::new();
    for p in &test_rows {
        let one = EncodedProposals::encode(&featurizer, [*p]);
        let prior = priors.get(p.community.as_str()).copied().unwrap_or(0.0);
        test = test.concat(&one.with_prior(prior));
    }
    Ok(PreparedProposals {
        members: members.into_iter().map(str::to_owned).collect(),
        member_data,
        test,
        test_communities: test_rows.iter().map(|p| p.community.clone()).collect(),
        encode_wall: start.elapsed(),
        sources: corpus
            .proposals
            .iter()
            .map(|p| format!("{}@{}", p.repo, p.commit))
            .collect::<std::collections::BTreeSet<_>>()
            .into_iter()
            .collect(),
    })
}

/// One federated round's pooled test scores.
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct ProposalRound {
    /// Round number.
    pub round: u64,
    /// Outcome accuracy (decided test proposals).
    pub accuracy: f64,
    /// Outcome macro-F1.
    pub macro_f1: f64,
    /// Kind accuracy.
    pub kind_accuracy: f64,
    /// Kind macro-F1.
    pub kind_macro_f1: f64,
    /// Test loss (outcome + kind cross-entropy).
    pub loss: f64,
    /// Example-weighted mean training loss reported by the members (NaN in a TF-IDF model's
    /// round 1, which computes the document frequencies and trains nothing).
    pub train_loss: f64,
    /// Wall time of the round (training, aggregation and evaluation).
    pub round_seconds: f64,
}

/// A trained model's test scores, pooled and per community.
#[derive(Debug, Clone)]
pub struct ModelScores {
    /// Pooled over all test proposals.
    pub pooled: OutcomeScores,
    /// Per community (of the test proposal).
    pub per_community: BTreeMap<String, OutcomeScores>,
}

/// Scores `trainer`'s current model on the prepared test set.
pub fn score_model(
    trainer: &ProposalTrainer,
    prepared: &PreparedProposals,
) -> Result<ModelScores, ProposalsRunError> {
    let predictions = trainer.predict(&prepared.test)?;
    let pooled = score(&prepared.test, &predictions);
    let mut per_community = BTreeMap::new();
    for name in &prepared.members {
        let idx: Vec<usize> = (0..prepared.test.len())
            .filter(|&i| &prepared.test_communities[i] == name)
            .collect();
        if idx.is_empty() {
            continue;
        }
        let preds: Vec<_> = idx.iter().map(|&i| predictions[i].clone()).collect();
        per_community.insert(name.clone(), score(&prepared.test.subset(&idx), &preds));
    }
    Ok(ModelScores {
        pooled,
        per_community,
    })
}

/// The community-majority baseline: each test proposal predicted as its community's most
/// frequent training outcome (accepted on ties); kind not predicted.
pub fn community_majority(prepared: &PreparedProposals) -> ClassScores {
    let majority: BTreeMap<&str, u8> = prepared
        .members
        .iter()
        .zip(&prepared.member_data)
        .map(|(name, data)| {
            let rejected = (0..data.len())
                .filter(|&i| data.outcome(i) == Some(1))
                .count();
            let accepted = (0..data.len())
                .filter(|&i| data.outcome(i) == Some(0))
                .count();
            (name.as_str(), u8::from(rejected > accepted))
        })
        .collect();
    let pairs: Vec<(u8, u8)> = (0..prepared.test.len())
        .filter_map(|i| {
            let y = prepared.test.outcome(i)?;
            let m = majority
                .get(prepared.test_communities[i].as_str())
                .copied()
                .unwrap_or(0);
            Some((y, m))
        })
        .collect();
    ClassScores::of(&pairs, 2)
}

/// The outcome of a federated run.
pub struct FederatedRun {
    /// One record per round.
    pub rounds: Vec<ProposalRound>,
    /// The final global parameters.
    pub params: ParamVec,
    /// An evaluator holding them.
    pub evaluator: ProposalTrainer,
    /// Wall time of all rounds.
    pub wall: Duration,
}

fn evaluator(
    config: &ProposalsConfig,
    prepared: &PreparedProposals,
) -> Result<ProposalTrainer, ProposalsRunError> {
    Ok(ProposalTrainer::new(
        &config.model,
        config.device,
        EncodedProposals::new(),
        Some(prepared.test.clone()),
        derive_seed(config.seed, "init", 0),
    )?)
}

/// Trains the federation (one member per community) with FedAvg in process, calling
/// `on_round` after each round with its pooled test scores.
pub fn run_federated(
    config: &ProposalsConfig,
    prepared: &PreparedProposals,
    mut on_round: impl FnMut(&ProposalRound),
) -> Result<FederatedRun, ProposalsRunError> {
    let init_seed = derive_seed(config.seed, "init", 0);
    let trainers = prepared
        .member_data
        .iter()
        .map(|d| ProposalTrainer::new(&config.model, config.device, d.clone(), None, init_seed))
        .collect::<Result<Vec<_>, _>>()?;
    let mut evaluator = evaluator(config, prepared)?;
    let initial = evaluator.get_parameters();
    // A TF-IDF model spends round 1 on the federation's document frequencies (see
    // `fl_client::trainer::proposals`): one round more, so `rounds` still counts training rounds.
    let document_frequency_round = u64::from(evaluator.needs_document_frequencies());
    let engine_config = EngineConfig {
        num_rounds: config.rounds + document_frequency_round,
        min_available_clients: trainers.len(),
        fit_timeout: Duration::from_secs(3600),
        evaluate_timeout: Duration::from_secs(3600),
        seed: config.seed,
        release_params_during_fit: false,
    };
    let strategy = StrategyConfig {
        fraction_fit: 1.0,
        min_fit_clients: 1,
        min_fit_results: 1,
        fit: config.fit.clone(),
        server_optimizer: config.server_optimizer.clone(),
        proximal_mu: config.proximal_mu,
        ..Default::default()
    }
    .build(
        None,
        config.secure_aggregation.as_ref(),
        trainers.len(),
        initial.values().len(),
    )
    .map_err(|e| ProposalsRunError::Config(e.to_string()))?;
    let engine = Engine::new(engine_config, strategy, initial);
    let federation = match &config.secure_aggregation {
        None => InProcessFederation::new(engine, trainers, config.workers),
        Some(secure) => InProcessFederation::with_secure_aggregation(
            engine,
            trainers,
            config.workers,
            secure.clone(),
        )
        .map_err(ProposalsRunError::Config)?,
    };
    let start = Instant::now();
    let mut round_start = Instant::now();
    let mut train_loss = f64::NAN;
    let mut rounds = Vec::new();
    let mut failure = None;
    let outcome = federation.run(|event, _| match event {
        EngineEvent::RoundStarted { .. } => round_start = Instant::now(),
        EngineEvent::FitAggregated { metrics, .. } => {
            train_loss = metrics.get("train_loss").copied().unwrap_or(f64::NAN);
        }
        EngineEvent::Stopped { round, reason } => {
            eprintln!("stopped before round {round}: {reason}");
        }
        EngineEvent::RoundCompleted { round, params } if failure.is_none() => {
            let scored = evaluator
                .set_parameters(params)
                .and_then(|()| evaluator.evaluate(&Default::default()));
            match scored {
                Ok(r) => {
                    let m = |k: &str| r.metrics.get(k).copied().unwrap_or(f64::NAN);
                    let record = ProposalRound {
                        round: *round,
                        accuracy: m("accuracy"),
                        macro_f1: m("macro_f1"),
                        kind_accuracy: m("kind_accuracy"),
                        kind_macro_f1: m("kind_macro_f1"),
                        loss: r.loss,
                        train_loss,
                        round_seconds: round_start.elapsed().as_secs_f64(),
                    };
                    on_round(&record);
                    rounds.push(record);
                }
                Err(e) => failure = Some(e),
            }
        }
        _ => {}
    });
    if let Some(e) = failure {
        return Err(e.into());
    }
    let params = (*outcome.params).clone();
    evaluator.set_parameters(&params)?;
    Ok(FederatedRun {
        rounds,
        params,
        evaluator,
        wall: start.elapsed(),
    })
}

/// Trains one model on `data` for [`ProposalsConfig::alone_epochs`] epochs from the same
/// initial parameters as the federation (the central comparison on pooled data, or one
/// community alone), calling `on_round` with the epoch and the trainer after each.
pub fn train_alone(
    config: &ProposalsConfig,
    prepared: &PreparedProposals,
    data: EncodedProposals,
    mut on_round: impl FnMut(u64, &ProposalTrainer),
) -> Result<ProposalTrainer, ProposalsRunError> {
    let mut trainer = ProposalTrainer::new(
        &config.model,
        config.device,
        data,
        Some(prepared.test.clone()),
        derive_seed(config.seed, "init", 0),
    )?;
    let epochs = config.alone_epochs.map_or(
        config.rounds * u64::from(config.fit.local_epochs),
        u64::from,
    );
    if trainer.needs_document_frequencies() {
        // The document frequencies of this trainer's own data, as the federation's round 1.
        trainer.fit(&config.fit)?;
    }
    for epoch in 1..=epochs {
        let fit = FitConfig {
            local_epochs: 1,
            shuffle_seed: derive_seed(config.seed, "central", epoch),
            ..config.fit.clone()
        };
        trainer.fit(&fit)?;
        on_round(epoch, &trainer);
    }
    Ok(trainer)
}

/// All members' training data in one set (the central comparison).
pub fn pooled_training_data(prepared: &PreparedProposals) -> EncodedProposals {
    let mut all = EncodedProposals::new();
    for d in &prepared.member_data {
        all = all.concat(d);
    }
    all
}

/// Formats one row of the comparison table.
pub fn table_row(name: &str, s: &OutcomeScores) -> String {
    format!(
        "{name:<24} {:>8.3} {:>9.3} {:>9.3} {:>10.3}",
        s.outcome.accuracy, s.outcome.macro_f1, s.kind.accuracy, s.kind.macro_f1
    )
}

/// The header of the comparison table.
pub fn table_header() -> String {
    format!(
        "{:<24} {:>8} {:>9} {:>9} {:>10}",
        "model (pooled test)", "accuracy", "macro-F1", "kind acc", "kind m-F1"
    )
}

/// Test outcome classes of a community as a label (`accepted+rejected`, or one class only).
pub fn class_note(prepared: &PreparedProposals, community: &str) -> &'static str {
    let (mut a, mut r) = (0, 0);
    for i in 0..prepared.test.len() {
        if prepared.test_communities[i] == community {
            match prepared.test.outcome(i) {
                Some(0) => a += 1,
                Some(_) => r += 1,
                None => {}
            }
        }
    }
    match (a > 0, r > 0) {
        (true, true) => "",
        (true, false) => "one class (accepted only)",
        (false, true) => "one class (rejected only)",
        (false, false) => "no decided test rows",
    }
}

/// `prepared` with a stratified `fraction` of each member's decided training proposals held
/// out: the members' remaining training data (open proposals all stay, and each member's
/// community prior is recomputed from what remains) and, per member, its held-out validation
/// proposals. The test side is unchanged. Seeded per member from `seed`.
///
/// # Errors
/// [`ProposalsRunError::Config`]: `fraction` not in (0, 0.5].
pub fn hold_out(
    prepared: &PreparedProposals,
    fraction: f64,
    seed: u64,
) -> Result<(PreparedProposals, Vec<EncodedProposals>), ProposalsRunError> {
    use rand::SeedableRng;
    use rand::seq::SliceRandom;
    if !(fraction > 0.0 && fraction <= 0.5) {
        return Err(ProposalsRunError::Config(format!(
            "calibration.validation_fraction must be in (0, 0.5], got {fraction}"
        )));
    }
    let mut member_data = Vec::with_capacity(prepared.member_data.len());
    let mut validation = Vec::with_capacity(prepared.member_data.len());
    for (m, data) in prepared.member_data.iter().enumerate() {
        let mut rng =
            rand_chacha::ChaCha8Rng::seed_from_u64(derive_seed(seed, "validation", m as u64));
        let mut held = Vec::new();
        for class in [0u8, 1] {
            let mut rows: Vec<usize> = (0..data.len())
                .filter(|&i| data.outcome(i) == Some(class))
                .collect();
            rows.shuffle(&mut rng);
            let take = (rows.len() as f64 * fraction).round() as usize;
            held.extend_from_slice(&rows[..take]);
        }
        held.sort_unstable();
        let kept: Vec<usize> = (0..data.len())
            .filter(|i| held.binary_search(i).is_err())
            .collect();
        let train = data.subset(&kept);
        let prior = train.acceptance_log_odds();
        member_data.push(train.with_prior(prior));
        validation.push(data.subset(&held).with_prior(prior));
    }
    Ok((
        PreparedProposals {
            members: prepared.members.clone(),
            member_data,
            test: prepared.test.clone(),
            test_communities: prepared.test_communities.clone(),
            encode_wall: prepared.encode_wall,
            sources: prepared.sources.clone(),
        },
        validation,
    ))
}

/// [`hold_out`] with the validation proposals as the test side: what [`ProposalsConfig::tuning`]
/// scores on.
pub fn tuning_split(
    prepared: &PreparedProposals,
    fraction: f64,
    seed: u64,
) -> Result<PreparedProposals, ProposalsRunError> {
    let (mut held, validation) = hold_out(prepared, fraction, seed)?;
    let mut test = EncodedProposals::new();
    let mut communities = Vec::new();
    for (name, data) in held.members.iter().zip(&validation) {
        test = test.concat(data);
        communities.extend(std::iter::repeat_n(name.clone(), data.len()));
    }
    held.test = test;
    held.test_communities = communities;
    Ok(held)
}

/// The decision threshold the members' validation proposals pick for `trainer`'s model: each
/// member's [`ThresholdCounts`] of its own
/// proposals, summed (what a federated evaluation reveals). `None` when no member holds a
/// decided validation proposal.
pub fn federated_threshold(
    trainer: &ProposalTrainer,
    validation: &[EncodedProposals],
) -> Result<Option<CalibratedThreshold>, ProposalsRunError> {
    let mut counts = ThresholdCounts::default();
    for data in validation {
        counts.add(&ThresholdCounts::of(data, &trainer.predict(data)?));
    }
    Ok(counts.best())
}

/// Outcome class counts of the decided proposals of `data`: `(accepted, rejected)`.
pub fn outcome_counts(data: &EncodedProposals) -> (usize, usize) {
    let a = (0..data.len())
        .filter(|&i| data.outcome(i) == Some(0))
        .count();
    (a, data.decided() - a)
}

#[cfg(test)]
mod tests {
    use super::*;

    use fl_client::trainer::proposals::{ModelKind, TermWeighting};

    #[test]
    fn shipped_configs_parse_and_typos_are_refused() {
        let shuffled: ProposalsConfig =
            toml::from_str(include_str!("../proposals-shuffled.toml")).unwrap();
        assert!(shuffled.shuffled_labels && !shuffled.compare_local);
        assert_eq!(shuffled.rounds, ProposalsConfig::default().rounds);
        let secagg: ProposalsConfig =
            toml::from_str(include_str!("../proposals-secagg.toml")).unwrap();
        assert!(secagg.secure_aggregation.is_some());
        assert_eq!(secagg.model, ProposalModelSpec::default());
        let tfidf: ProposalsConfig =
            toml::from_str(include_str!("../proposals-tfidf.toml")).unwrap();
        assert_eq!(
            (tfidf.model.kind, tfidf.model.weighting),
            (ModelKind::Linear, TermWeighting::TfIdf)
        );
        let tfidf_secagg: ProposalsConfig =
            toml::from_str(include_str!("../proposals-tfidf-secagg.toml")).unwrap();
        assert_eq!(tfidf_secagg.model, tfidf.model);
        assert!(tfidf_secagg.secure_aggregation.is_some());
        assert!(toml::from_str::<ProposalsConfig>("rounds = 3\nshufled_labels = true").is_err());
        assert!(toml::from_str::<ProposalsConfig>("[model]\ndimm = 3").is_err());
        // The device, at the top level; a misspelt one is refused when read, not when used.
        assert_eq!(tfidf.device, DeviceSpec::Cpu);
        let gpu: ProposalsConfig = toml::from_str("device = \"wgpu:1\"").unwrap();
        assert_eq!(gpu.device, DeviceSpec::Wgpu { adapter: Some(1) });
        let e = toml::from_str::<ProposalsConfig>("device = \"gpu\"").unwrap_err();
        assert!(e.to_string().contains("unknown device"), "{e}");
    }

    /// Contributed, consensus-labelled proposals join their community's member (and only
    /// that member), with their consensus outcome; `[contributed]` parses.
    #[test]
    fn contributed_proposals_join_their_communitys_member() {
        use fl_client::contribute::training::LabelledProposal;
        let corpus = proposals::load_shipped().unwrap();
        let split = corpus.shipped_split().unwrap();
        let config = ProposalsConfig::default();
        let key = fl_core::MemberKey::generate();
        let labelled = |community: &str, id: &str, outcome| LabelledProposal {
            record: contrib::ProposalRecord {
                contributor: key.address(),
                community: community.into(),
                proposal_id: id.into(),
                title: format!("contributed {id}"),
                text: "a contributed proposal".into(),
                created: None,
                licence: "CC0-1.0".into(),
                source: None,
            },
            cid: fl_core::ContentHash::of(id.as_bytes()),
            outcome,
            category: 4,
            epoch: 1,
        };
        let contributed = [
            labelled("makerdao", "MIP-900", Some(1)),
            labelled("makerdao", "MIP-901", None),
            labelled("nowhere", "X-1", Some(0)),
        ];
        let plain = prepare_from(&config, &corpus, &split).unwrap();
        let with = prepare_with(&config, &corpus, &split, &contributed).unwrap();
        assert_eq!(plain.members, with.members);
        for (m, name) in with.members.iter().enumerate() {
            let added = with.member_data[m].len() - plain.member_data[m].len();
            assert_eq!(added, if name == "makerdao" { 2 } else { 0 }, "{name}");
        }
        assert_eq!(
            plain.test.len(),
            with.test.len(),
            "the test split is untouched"
        );

        let parsed: ProposalsConfig = toml::from_str(
            "[contributed]\ndb = \"sqlite://index.db\"\nstore = \"contrib-store\"\nepochs = [1, 2]\n",
        )
        .unwrap();
        assert_eq!(parsed.contributed.unwrap().epochs, vec![1, 2]);
        // An index database that does not exist is an error naming it, not an empty set.
        let dir = tempfile::tempdir().unwrap();
        let missing = ContributedData {
            db: format!("sqlite://{}/no-such-folder/index.db", dir.path().display()),
            store: dir.path().join("store"),
            epochs: vec![1],
        };
        let err = load_contributed(&missing).unwrap_err().to_string();
        assert!(err.contains("no-such-folder"), "{err}");
    }

    #[test]
    fn majority_baseline_and_class_notes_on_a_tiny_federation() {
        let f = ProposalModelSpec::default().featurizer().unwrap();
        let mut a = EncodedProposals::new();
        for outcome in [Some(0), Some(0), Some(1), None] {
            a.push(&f.ids("t", "x y"), &[], outcome, 0);
        }
        let mut b = EncodedProposals::new();
        for outcome in [Some(1), Some(1), Some(0)] {
            b.push(&f.ids("t", "x y"), &[], outcome, 0);
        }
        let mut test = EncodedProposals::new();
        for outcome in [Some(0), Some(1), Some(1)] {
            test.push(&f.ids("t", "z"), &[], outcome, 0);
        }
        let prepared = PreparedProposals {
            members: vec!["a".into(), "b".into()],
            member_data: vec![a, b],
            test,
            test_communities: vec!["a".into(), "a".into(), "b".into()],
            encode_wall: Duration::ZERO,
            sources: Vec::new(),
        };
        // a's majority is accepted, b's rejected: right on test rows 0 and 2.
        let s = community_majority(&prepared);
        assert_eq!(s.n, 3);
        assert!((s.accuracy - 2.0 / 3.0).abs() < 1e-12);
        assert_eq!(class_note(&prepared, "a"), "");
        assert_eq!(class_note(&prepared, "b"), "one class (rejected only)");
        assert_eq!(pooled_training_data(&prepared).len(), 7);
        assert_eq!(outcome_counts(&prepared.member_data[0]), (2, 1));
    }

    /// Each member holds out a stratified share of its decided proposals (open ones all stay
    /// in training), disjointly, reproducibly per seed; its prior is recomputed from what it
    /// keeps; bad fractions are refused; the tuning split scores on exactly the held-out rows.
    #[test]
    fn hold_out_is_stratified_disjoint_and_seeded() {
        let f = ProposalModelSpec::default().featurizer().unwrap();
        let mut a = EncodedProposals::new();
        for i in 0..20 {
            let outcome = match i % 4 {
                0 => None,
                1 => Some(1),
                _ => Some(0),
            };
            a.push(&f.ids("t", &format!("text {i}")), &[], outcome, 0);
        }
        let prepared = PreparedProposals {
            members: vec!["a".into()],
            member_data: vec![a.clone()],
            test: a.subset(&[1, 2]),
            test_communities: vec!["a".into(); 2],
            encode_wall: Duration::ZERO,
            sources: Vec::new(),
        };
        let (held, validation) = hold_out(&prepared, 0.2, 7).unwrap();
        // 10 accepted, 5 rejected, 5 open: 2 accepted and 1 rejected held out.
        assert_eq!(outcome_counts(&validation[0]), (2, 1));
        assert_eq!(validation[0].len(), 3);
        assert_eq!(outcome_counts(&held.member_data[0]), (8, 4));
        assert_eq!(held.member_data[0].len(), 17);
        assert_eq!(held.test.len(), 2, "the test side is unchanged");
        let prior = held.member_data[0].acceptance_log_odds();
        assert!((prior - (9.0f32 / 5.0).ln()).abs() < 1e-6, "{prior}");
        let (_, again) = hold_out(&prepared, 0.2, 7).unwrap();
        assert_eq!(again[0], validation[0]);
        let tuning = tuning_split(&prepared, 0.2, 7).unwrap();
        assert_eq!(tuning.test, validation[0]);
        assert_eq!(tuning.test_communities, vec!["a".to_string(); 3]);
        for bad in [0.0, 0.6, -0.1, f64::NAN] {
            assert!(matches!(
                hold_out(&prepared, bad, 7),
                Err(ProposalsRunError::Config(_))
            ));
        }
        let calibrated: ProposalsConfig =
            toml::from_str(include_str!("../proposals-tfidf-calibrated.toml")).unwrap();
        assert_eq!(calibrated.calibration, Some(Calibration::default()));
    }
}
