//! daofl proposal analysis: 13 governance communities train the DAO's proposal model together
//! without pooling a single proposal.
//!
//! Each community (MakerDAO, Synthetix, Ethereum, Python, ...) is one member holding only its
//! own proposals of the shipped training split; each trains the bag-of-embeddings model
//! (outcome and kind heads) locally with burn, and the round engine averages the models
//! (FedAvg) over the in-process federation. After every round the global model is scored on
//! the pooled test split (608 decided proposals). Then the same model is trained centrally on
//! the pooled training texts and by each community alone, and a table compares them.
//!
//! Run with `cargo run --release --example proposals` (or `-p examples` in the dev profile,
//! whose dependencies are optimised too). A TOML file of [`ProposalsConfig`] fields changes
//! the defaults, e.g. `shuffled_labels = true` for the control run; its file name names the
//! run folder. Outputs land in `runs/<name>/`: `metrics.csv` (per round), `comparison.csv`,
//! `metrics.svg`, `summary.txt`, and the federated model published: `checkpoints/` (its
//! parameters and model card, named by the round's manifest) anchored on the embedded EVM in
//! `chain/`; the run prints the `fl-aggregator verify` and `fl-client predict` commands.

use std::fmt::Write as _;
use std::path::Path;
use std::process::ExitCode;
use std::time::Instant;

use examples::proposals::{
    self, ProposalsConfig, class_note, community_majority, outcome_counts, score_model,
    table_header, table_row,
};
use examples::publish;
use examples::report::{RoundRecord, RunFolder};
use fl_client::Trainer as _;
use fl_client::trainer::proposals::{CalibratedThreshold, OutcomeScores, ProposalTrainer};

fn main() -> ExitCode {
    match run() {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("proposals failed: {e}");
            ExitCode::FAILURE
        }
    }
}

fn run() -> Result<(), Box<dyn std::error::Error>> {
    let (config, name) = match std::env::args().nth(1) {
        None => (ProposalsConfig::default(), "proposals".to_string()),
        Some(path) => {
            let text =
                std::fs::read_to_string(&path).map_err(|e| format!("cannot read {path}: {e}"))?;
            let config: ProposalsConfig =
                toml::from_str(&text).map_err(|e| format!("{path}: {e}"))?;
            let name = Path::new(&path)
                .file_stem()
                .map_or("proposals".into(), |s| s.to_string_lossy().into_owned());
            (config, name)
        }
    };
    let mut prepared = proposals::prepare(&config)?;
    if let Some(tuning) = &config.tuning {
        // A different seed than calibration's, so a tuned-and-calibrated run does not pick its
        // threshold on the proposals it was tuned on.
        prepared = proposals::tuning_split(
            &prepared,
            tuning.validation_fraction,
            fl_core::derive_seed(config.seed, "tuning", 0),
        )?;
        println!(
            "TUNING: scores are on {} held-out training proposals, not the test split",
            prepared.test.len()
        );
    }
    let mut summary = String::new();
    writeln!(
        summary,
        "{} members (one per community), {} test proposals; featuriser {} ({}); encoded in {:.1} s",
        prepared.members.len(),
        prepared.test.len(),
        config.model.featurizer.digest(),
        config.model.featurizer.canonical(),
        prepared.encode_wall.as_secs_f64()
    )?;
    for (name, data) in prepared.members.iter().zip(&prepared.member_data) {
        let (a, r) = outcome_counts(data);
        writeln!(
            summary,
            "  {name:<10} {:>4} training proposals ({a} accepted, {r} rejected, {} open)",
            data.len(),
            data.len() - a - r
        )?;
    }
    writeln!(
        summary,
        "model {:?}; {}, {} rounds of {:?} local epochs, batch {}, learning rate {}, seed {}{}{}",
        config.model,
        strategy_name(&config),
        config.rounds,
        config.fit.local_epochs,
        config.fit.batch_size,
        config.fit.learning_rate,
        config.seed,
        if config.secure_aggregation.is_some() {
            ", SecAgg+"
        } else {
            ""
        },
        if config.shuffled_labels {
            ", SHUFFLED TRAINING LABELS (control)"
        } else {
            ""
        },
    )?;
    print!("{summary}");

    let run = RunFolder::create(Path::new("runs"), &name)?;
    let mut table = Vec::new();
    let mut comparison = String::new();
    let mut fed_scores = None;
    let mut published = None;
    if config.federated {
        let threshold = calibrate(&config, &prepared, "federated", |held| {
            Ok(proposals::run_federated(&config, held, |_| {})?.evaluator)
        })?;
        println!("round  accuracy  macro-F1  kind-acc  kind-mF1   loss  train_loss  seconds");
        let mut federated = proposals::run_federated(&config, &prepared, |r| {
            println!(
                "{:>5}  {:>8.3}  {:>8.3}  {:>8.3}  {:>8.3}  {:>5.3}  {:>10.3}  {:>7.1}",
                r.round,
                r.accuracy,
                r.macro_f1,
                r.kind_accuracy,
                r.kind_macro_f1,
                r.loss,
                r.train_loss,
                r.round_seconds
            )
        })?;
        write_rounds(&run, &federated.rounds)?;
        let records: Vec<RoundRecord> = federated
            .rounds
            .iter()
            .map(|r| RoundRecord {
                round: r.round,
                accuracy: r.macro_f1,
                loss: r.loss,
                train_loss: r.train_loss,
                participants: prepared.members.len(),
                dropped: 0,
                round_seconds: r.round_seconds,
                train_seconds: 0.0,
                aggregate_seconds: 0.0,
                eval_seconds: 0.0,
                epsilon: f64::NAN,
            })
            .collect();
        run.write_plot(
            &format!(
                "daofl {name}: 13 communities, outcome macro-F1 (pooled test), {}",
                strategy_name(&config)
            ),
            &records,
        )?;
        let label = {
            let name = format!("federated ({})", strategy_name(&config));
            apply_threshold(
                &mut table,
                &mut federated.evaluator,
                &prepared,
                threshold,
                &name,
                &name,
            )?
        };
        if threshold.is_some() {
            federated.params = federated.evaluator.get_parameters();
        }
        let scores = score_model(&federated.evaluator, &prepared)?;
        table.push((label, scores.pooled));
        writeln!(
            comparison,
            "\nfederated: {} rounds in {:.1} s, final model {}",
            federated.rounds.len(),
            federated.wall.as_secs_f64(),
            federated.params.content_hash()
        )?;
        let round = federated.rounds.last().map_or(0, |r| r.round);
        let mut card = publish::model_card(&config, &prepared, &federated.params, &scores, round)?;
        if let (Some(t), Some(c)) = (threshold, &config.calibration) {
            card.training.procedure.push_str(&format!(
                "; outcome decision threshold {:.2} (p_accepted) folded into the outcome bias, \
                 chosen by the members' summed confusion counts on {} held-out training \
                 proposals ({} of each member's decided ones) of a federation trained on the rest",
                t.threshold, t.n, c.validation_fraction
            ));
        }
        let config_hash = fl_core::ContentHash::of(format!("{config:?}").as_bytes());
        published = Some(publish::publish(
            run.path(),
            &name,
            round,
            &prepared.members,
            config_hash,
            &card,
            &federated.params,
        )?);
        fed_scores = Some(scores);
    }
    if config.compare {
        let t = Instant::now();
        let threshold = calibrate(&config, &prepared, "centralized", |held| {
            proposals::train_alone(
                &config,
                held,
                proposals::pooled_training_data(held),
                |_, _| {},
            )
        })?;
        let mut central = proposals::train_alone(
            &config,
            &prepared,
            proposals::pooled_training_data(&prepared),
            |round, trainer| {
                if let Ok(s) = score_model(trainer, &prepared) {
                    println!(
                        "{}",
                        table_row(&format!("centralized, epoch {round}"), &s.pooled)
                    );
                }
            },
        )?;
        let label = apply_threshold(
            &mut table,
            &mut central,
            &prepared,
            threshold,
            "centralized",
            "centralized (pooled)",
        )?;
        table.push((label, score_model(&central, &prepared)?.pooled));
        writeln!(
            comparison,
            "centralized trained in {:.1} s",
            t.elapsed().as_secs_f64()
        )?;
    }
    if config.compare_local {
        for (member, data) in prepared.members.iter().zip(&prepared.member_data) {
            let alone = proposals::train_alone(&config, &prepared, data.clone(), |_, _| {})?;
            table.push((
                format!("{member} alone"),
                score_model(&alone, &prepared)?.pooled,
            ));
        }
    }
    let majority = community_majority(&prepared);

    let mut out = comparison;
    writeln!(out, "\n{}", table_header())?;
    for (name, s) in &table {
        writeln!(out, "{}", table_row(name, s))?;
    }
    writeln!(
        out,
        "{:<24} {:>8.3} {:>9.3} {:>9} {:>10}",
        "community majority", majority.accuracy, majority.macro_f1, "-", "-"
    )?;
    writeln!(
        out,
        "\nfederated model per community (test proposals of that community):\n{:<10} {:>5} {:>8} {:>9} {:>9} {:>10}  note",
        "community", "n", "accuracy", "macro-F1", "kind acc", "kind m-F1"
    )?;
    for (community, s) in fed_scores.iter().flat_map(|f| &f.per_community) {
        writeln!(
            out,
            "{community:<10} {:>5} {:>8.3} {:>9.3} {:>9.3} {:>10.3}  {}",
            s.outcome.n,
            s.outcome.accuracy,
            s.outcome.macro_f1,
            s.kind.accuracy,
            s.kind.macro_f1,
            class_note(&prepared, community)
        )?;
    }
    if let Some(p) = &published {
        write_published(&mut out, p)?;
    }
    print!("{out}");
    summary.push_str(&out);
    write_comparison(&run, &table, &majority)?;
    run.write_summary(&summary)?;
    println!("run folder: {}", run.path().display());
    Ok(())
}

/// With `[calibration]`: trains a model with `train` on the training proposals less each
/// member's held-out validation share, and returns the decision threshold the members'
/// summed validation counts pick (printed with what it does on them). `None` without
/// `[calibration]`.
fn calibrate(
    config: &ProposalsConfig,
    prepared: &proposals::PreparedProposals,
    what: &str,
    train: impl FnOnce(
        &proposals::PreparedProposals,
    ) -> Result<ProposalTrainer, proposals::ProposalsRunError>,
) -> Result<Option<CalibratedThreshold>, Box<dyn std::error::Error>> {
    let Some(calibration) = &config.calibration else {
        return Ok(None);
    };
    let t = Instant::now();
    let (held, validation) =
        proposals::hold_out(prepared, calibration.validation_fraction, config.seed)?;
    let trainer = train(&held)?;
    let threshold = proposals::federated_threshold(&trainer, &validation)?;
    match &threshold {
        Some(c) => println!(
            "{what} calibration: threshold {:.2} on {} held-out proposals (macro-F1 {:.3}, {:.3} at 0.5), {:.1} s",
            c.threshold,
            c.n,
            c.macro_f1,
            c.macro_f1_at_half,
            t.elapsed().as_secs_f64()
        ),
        None => println!("{what} calibration: no decided held-out proposal, threshold 0.5"),
    }
    Ok(threshold)
}

/// With a calibrated `threshold`: records `trainer`'s scores at 0.5 as `"{prefix}, t=0.5"`,
/// folds the threshold into its outcome head, and returns the label of the calibrated row,
/// `"{prefix}, t=…"`. Without one: changes nothing and returns `plain`.
fn apply_threshold(
    table: &mut Vec<(String, OutcomeScores)>,
    trainer: &mut ProposalTrainer,
    prepared: &proposals::PreparedProposals,
    threshold: Option<CalibratedThreshold>,
    prefix: &str,
    plain: &str,
) -> Result<String, Box<dyn std::error::Error>> {
    let Some(t) = threshold else {
        return Ok(plain.to_string());
    };
    table.push((
        format!("{prefix}, t=0.5"),
        score_model(trainer, prepared)?.pooled,
    ));
    trainer.calibrate_outcome_threshold(t.threshold)?;
    Ok(format!("{prefix}, t={:.2}", t.threshold))
}

/// The published model's lines: its card, checkpoint and anchor, and the commands that verify
/// it and predict with it.
fn write_published(out: &mut String, p: &publish::PublishedModel) -> std::fmt::Result {
    let manifest = p.manifest_path.display();
    writeln!(
        out,
        "\nmodel {} with card {}: checkpoint {manifest}",
        p.manifest.params_cid, p.card
    )?;
    match &p.anchor {
        Some(r) => writeln!(
            out,
            "anchor: round {} of `{}`, block {} of the embedded EVM (not a network), tx {}, {} gas\n\
             verify: cargo run --release -p fl-aggregator -- verify {manifest}",
            p.manifest.round, p.manifest.federation_id, r.block_number, r.tx_hash, r.gas_used
        )?,
        None => writeln!(out, "anchor: not anchored (see the error above)")?,
    }
    writeln!(
        out,
        "predict: cargo run --release -p fl-client -- predict --model {manifest} \
         --input fl-client/data/proposals/proposals.jsonl.gz --output predictions.jsonl"
    )
}

fn write_rounds(
    run: &RunFolder,
    rounds: &[proposals::ProposalRound],
) -> Result<(), Box<dyn std::error::Error>> {
    let mut w = csv::Writer::from_path(run.path().join("metrics.csv"))?;
    for r in rounds {
        w.serialize(r)?;
    }
    w.flush()?;
    Ok(())
}

fn write_comparison(
    run: &RunFolder,
    table: &[(String, fl_client::trainer::proposals::OutcomeScores)],
    majority: &fl_client::trainer::proposals::ClassScores,
) -> Result<(), Box<dyn std::error::Error>> {
    let mut w = csv::Writer::from_path(run.path().join("comparison.csv"))?;
    w.write_record([
        "model",
        "accuracy",
        "macro_f1",
        "kind_accuracy",
        "kind_macro_f1",
    ])?;
    for (name, s) in table {
        w.write_record([
            name.clone(),
            format!("{:.4}", s.outcome.accuracy),
            format!("{:.4}", s.outcome.macro_f1),
            format!("{:.4}", s.kind.accuracy),
            format!("{:.4}", s.kind.macro_f1),
        ])?;
    }
    w.write_record([
        "community majority".to_string(),
        format!("{:.4}", majority.accuracy),
        format!("{:.4}", majority.macro_f1),
        String::new(),
        String::new(),
    ])?;
    w.flush()?;
    Ok(())
}

/// The federation's strategy as the tables name it: FedAvg, or FedAvg with its server optimiser.
fn strategy_name(config: &ProposalsConfig) -> &'static str {
    use fl_core::strategy::ServerOptimizerConfig;
    match config.server_optimizer {
        None => "FedAvg",
        Some(ServerOptimizerConfig::Fedavgm(_)) => "FedAvgM",
        Some(ServerOptimizerConfig::Fedadam(_)) => "FedAdam",
        Some(ServerOptimizerConfig::Fedyogi(_)) => "FedYogi",
        Some(ServerOptimizerConfig::Fedadagrad(_)) => "FedAdagrad",
    }
}
